//! The HTTP limits every program on the kit serves with (`kit::serve`, `http::shed_load`): a client
//! that never finishes its headers is cut off, a connection over the cap is refused with 503,
//! and a request over the concurrency cap is refused at once with 503 and `Retry-After`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use kit::Metrics;
use kit::health::{Health, Observed};
use kit::http::HttpSettings;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn serve(router: Router, settings: HttpSettings) -> kit::RunningApp {
    let listener = kit::App::bind("127.0.0.1:0".parse().expect("address"))
        .await
        .expect("bind");
    let observed = Observed::new(Metrics::new(), Health::new());
    kit::App::new("limits-test", listener, router, observed, &settings).spawn()
}

/// Reads what the server sends until it closes the connection, or `within` passes.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> Option<String> {
    let mut seen = Vec::new();
    let mut buffer = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(String::from_utf8_lossy(&seen).into_owned()),
            Ok(Ok(n)) => seen.extend_from_slice(&buffer[..n]),
        }
    }
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_cut_off_after_the_header_timeout() {
    let settings = HttpSettings {
        header_read_timeout: Duration::from_millis(500),
        ..HttpSettings::default()
    };
    let app = serve(Router::new().route("/", get(|| async { "ok" })), settings).await;
    let mut stream = TcpStream::connect(app.addr).await.expect("connect");
    let started = Instant::now();
    // Slowloris: a request line and one header, then a byte now and then, never the end.
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    let trickle = tokio::spawn({
        let mut writer = TcpStream::connect(app.addr).await.expect("connect");
        async move {
            let _ = writer.write_all(b"GET / HTTP/1.1\r\n").await;
            for _ in 0..20 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if writer.write_all(b"X-Slow: 1\r\n").await.is_err() {
                    return Some(());
                }
            }
            None
        }
    });
    let closed = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(closed.is_some(), "the connection is still open after 5 s");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "closed after {:?}",
        started.elapsed()
    );
    assert_eq!(
        trickle.await.expect("the trickling client"),
        Some(()),
        "a client trickling headers is cut off too"
    );
    // A proper client is still served.
    let answer = reqwest::get(app.url("/")).await.expect("an answer");
    assert_eq!(answer.text().await.expect("text"), "ok");
    app.stop().await;
}

#[tokio::test]
async fn a_connection_over_the_cap_is_answered_503_and_closed() {
    let settings = HttpSettings {
        max_connections: 2,
        ..HttpSettings::default()
    };
    let app = serve(Router::new().route("/", get(|| async { "ok" })), settings).await;
    // Two connections held open (kept alive after a request each).
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(app.addr).await.expect("connect");
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let mut buffer = [0u8; 512];
        let n = stream.read(&mut buffer).await.expect("read");
        assert!(String::from_utf8_lossy(&buffer[..n]).starts_with("HTTP/1.1 200"));
        held.push(stream);
    }
    let mut third = TcpStream::connect(app.addr).await.expect("connect");
    let answer = read_until_closed(&mut third, Duration::from_secs(5))
        .await
        .expect("answered and closed");
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("retry-after: 1"), "{answer}");
    assert!(answer.contains(r#""code":"overloaded""#), "{answer}");
    // Once one closes, a new connection is served again (as soon as the server has seen the
    // close).
    held.pop();
    kit::poll::until(
        "a new connection served",
        Duration::from_secs(10),
        Duration::from_millis(20),
        || async {
            let answer = reqwest::get(app.url("/")).await.ok()?;
            (answer.status() == 200).then_some(())
        },
    )
    .await
    .expect("served again");
    app.stop().await;
}

#[tokio::test]
async fn a_request_over_the_concurrency_cap_is_refused_at_once_with_retry_after() {
    // The first request holds the only permit until the test lets it go, which it does only
    // once the second has its answer: the second cannot have waited for the first.
    let entered = Arc::new(tokio::sync::Notify::new());
    let release = Arc::new(tokio::sync::Notify::new());
    let router = Router::new().route(
        "/held",
        get({
            let (entered, release) = (entered.clone(), release.clone());
            move || async move {
                entered.notify_one();
                release.notified().await;
                "done"
            }
        }),
    );
    let settings = HttpSettings {
        max_concurrent_requests: 1,
        ..HttpSettings::default()
    };
    let app = serve(router, settings).await;
    let http = reqwest::Client::new();
    let first = tokio::spawn(http.get(app.url("/held")).send());
    entered.notified().await;
    let second = http.get(app.url("/held")).send().await.expect("an answer");
    assert_eq!(second.status(), 503);
    release.notify_one();
    assert_eq!(second.headers()["retry-after"], "1");
    let body: serde_json::Value = second.json().await.expect("JSON");
    assert_eq!(body["error"]["code"], "overloaded");
    let first = first.await.expect("task").expect("an answer");
    assert_eq!(first.text().await.expect("text"), "done");
    app.stop().await;
}
