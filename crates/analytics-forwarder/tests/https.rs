//! The forwarder delivers to an `https://` data platform whose certificate a CA of the test's
//! own signed (made with `rcgen`, trusted through `DATA_PLATFORM_CA_FILE`), and it never
//! follows a redirect: a 307 is refused and dead-lettered, and nothing reaches where it points.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use contract::{OrderCreated, OrderLine, topics};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use testkit::{Broker, eventually, fresh_database, produce_raw, read_topic};
use tokio::net::TcpListener;
use tower::ServiceExt;

/// What a data platform of the test received: each delivery's `Idempotency-Key`.
type Received = Arc<Mutex<Vec<String>>>;

async fn keep(State(received): State<Received>, headers: HeaderMap, _body: Bytes) -> StatusCode {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    received.lock().unwrap().push(key);
    StatusCode::CREATED
}

/// A CA, and a certificate for `localhost` it signed: (CA PEM, certificate PEM, key PEM).
fn certificates() -> (String, String, String) {
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "saga test CA");
    let ca_key = rcgen::KeyPair::generate().expect("a CA key");
    let ca_cert = ca.self_signed(&ca_key).expect("the CA");
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
    let key = rcgen::KeyPair::generate().expect("a key");
    let cert = leaf.signed_by(&key, &ca_cert, &ca_key).expect("signed");
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}

/// Serves `router` over TLS with `cert` and `key` on a free port; returns the port.
async fn serve_tls(router: Router, cert: &str, key: &str) -> u16 {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert.as_bytes())
        .collect::<Result<_, _>>()
        .expect("certificate PEM");
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key PEM");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocols")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("address").port();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, router) = (acceptor.clone(), router.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let service = hyper::service::service_fn(
                    move |request: hyper::Request<hyper::body::Incoming>| {
                        router.clone().oneshot(request.map(axum::body::Body::new))
                    },
                );
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                .await;
            });
        }
    });
    port
}

/// A forwarder delivering to `url`, with `ca_file` trusted.
async fn forwarder(
    broker: &Broker,
    url: String,
    ca_file: Option<std::path::PathBuf>,
) -> kit::RunningApp {
    let db = fresh_database("forwarder-https").await.expect("a database");
    let mut delivery = analytics_forwarder::deliver::DeliverySettings::new(url);
    delivery.ca_file = ca_file;
    delivery.max_backoff = Duration::from_millis(500);
    analytics_forwarder::build(analytics_forwarder::Config::new(
        "127.0.0.1:0".parse().expect("address"),
        delivery,
        eventing::CommonSettings::new(db, &broker.brokers),
    ))
    .await
    .expect("the forwarder starts")
    .spawn()
}

/// Publishes an `OrderCreated`, as the order service would; returns its event id.
async fn publish_order(broker: &Broker) -> String {
    let order_id = uuid::Uuid::now_v7();
    let envelope = contract::Envelope::new(
        "order-service",
        OrderCreated {
            order_id,
            user_id: 1,
            items: vec![OrderLine {
                product_id: 1,
                quantity: 2,
                unit_price: 1500,
            }],
            total_amount: 3000,
            coupon_id: None,
            created_at: chrono::Utc::now(),
        },
        None,
    );
    produce_raw(
        &broker.brokers,
        topics::ORDER_EVENTS,
        &order_id.to_string(),
        envelope.to_json().as_bytes(),
        &[(topics::HEADER_EVENT_TYPE, "OrderCreated")],
    )
    .await
    .expect("produce");
    envelope.event_id.to_string()
}

#[tokio::test]
async fn a_delivery_goes_over_https_to_a_platform_whose_ca_is_configured() {
    let (ca, cert, key) = certificates();
    let received = Received::default();
    let router = Router::new()
        .route("/v1/orders", post(keep))
        .with_state(received.clone());
    let port = serve_tls(router, &cert, &key).await;
    let ca_file = std::env::temp_dir().join(format!("saga-ca-{}.pem", uuid::Uuid::new_v4()));
    std::fs::write(&ca_file, ca).expect("writing the CA");

    let broker = Broker::start().await.expect("a broker");
    let app = forwarder(
        &broker,
        format!("https://localhost:{port}"),
        Some(ca_file.clone()),
    )
    .await;
    let event_id = publish_order(&broker).await;
    eventually(
        "the delivery over https",
        Duration::from_secs(30),
        || async { received.lock().unwrap().contains(&event_id).then_some(()) },
    )
    .await;
    app.stop().await;
    let _ = std::fs::remove_file(ca_file);
}

#[tokio::test]
async fn a_redirect_is_refused_and_nothing_reaches_where_it_points() {
    // Where the redirect points: it must never be called.
    let elsewhere = Received::default();
    let target = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let target_url = format!("http://{}/v1/orders", target.local_addr().unwrap());
    let router = Router::new()
        .route("/v1/orders", post(keep))
        .with_state(elsewhere.clone());
    tokio::spawn(async move { axum::serve(target, router).await });
    // The configured platform answers every delivery with a 307 to there.
    let redirecting = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let platform = format!("http://{}", redirecting.local_addr().unwrap());
    let router = Router::new().route(
        "/v1/orders",
        post(move || {
            let to = target_url.clone();
            async move { (StatusCode::TEMPORARY_REDIRECT, [("location", to)]) }
        }),
    );
    tokio::spawn(async move { axum::serve(redirecting, router).await });

    let broker = Broker::start().await.expect("a broker");
    let app = forwarder(&broker, platform, None).await;
    let event_id = publish_order(&broker).await;
    let letters = read_topic(
        &broker.brokers,
        &topics::dlq_topic("analytics-forwarder"),
        Duration::from_secs(30),
        |r| !r.is_empty(),
    )
    .await
    .expect("read");
    let letter = letters
        .first()
        .expect("the refused delivery is dead-lettered");
    assert_eq!(letter.header("dlq.stage"), Some("deliver"));
    let reason = letter.header("dlq.error").unwrap_or_default();
    assert!(
        reason.contains("307") && reason.contains("redirects are not followed"),
        "{reason}"
    );
    assert_eq!(
        letter.envelope.as_ref().map(|e| e.event_id.to_string()),
        Some(event_id)
    );
    assert!(
        elsewhere.lock().unwrap().is_empty(),
        "the redirect was followed"
    );
    app.stop().await;
}
