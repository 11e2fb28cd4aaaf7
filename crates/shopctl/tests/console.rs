//! The saga console in a real browser: headless Chromium opens the page of a running local
//! stack, an order is then placed over HTTP, and the page, updated by its event stream, shows
//! the order CONFIRMED with its timeline across the services. The browser is driven over the
//! DevTools protocol; the test leaves a screenshot in `target/console.png`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use shopctl::stack::Service;
use tokio_tungstenite::tungstenite::Message;

mod local;

/// Headless Chromium with its DevTools endpoint on a free port; killed when dropped.
struct Browser {
    child: Child,
    devtools: String,
    _profile: tempfile_dir::Dir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A throwaway folder for the browser's profile.
mod tempfile_dir {
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn chromium() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| "chromium".into())
}

/// Starts the browser on `url` and reads where its DevTools endpoint listens.
fn open(url: &str) -> Browser {
    let profile = std::env::temp_dir().join(format!("console-chromium-{}", uuid::Uuid::new_v4()));
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--window-size=1400,1000",
            "--remote-debugging-port=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("chromium starts (scripts/install-test-tools.sh installs it)");
    let stderr = child.stderr.take().expect("its stderr");
    let mut lines = BufReader::new(stderr).lines();
    let devtools = loop {
        let line = lines
            .next()
            .expect("chromium printed where DevTools listens")
            .expect("its output");
        if let Some(ws) = line.strip_prefix("DevTools listening on ") {
            // ws://127.0.0.1:PORT/devtools/browser/… → http://127.0.0.1:PORT
            let authority = ws
                .trim_start_matches("ws://")
                .split('/')
                .next()
                .expect("an address");
            break format!("http://{authority}");
        }
    };
    // Keep reading its output so that it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Browser {
        child,
        devtools,
        _profile: tempfile_dir::Dir(profile),
    }
}

/// One DevTools session with the browser's page.
struct Page {
    socket: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    next_id: u64,
}

impl Page {
    async fn attach(browser: &Browser, url: &str) -> Page {
        let targets: Vec<Value> =
            testkit::eventually("the page target", Duration::from_secs(30), || async {
                let targets: Vec<Value> = reqwest::get(format!("{}/json/list", browser.devtools))
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()?;
                targets
                    .iter()
                    .any(|t| {
                        t["type"] == "page" && t["url"].as_str().is_some_and(|u| u.starts_with(url))
                    })
                    .then_some(targets)
            })
            .await;
        let ws = targets
            .iter()
            .find(|t| t["type"] == "page")
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .expect("the page's DevTools address");
        let (socket, _) = tokio_tungstenite::connect_async(ws)
            .await
            .expect("connecting to the page");
        Page { socket, next_id: 1 }
    }

    /// Sends one command and returns its result.
    async fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let command = json!({ "id": id, "method": method, "params": params });
        self.socket
            .send(Message::Text(command.to_string().into()))
            .await
            .expect("sending to the browser");
        while let Some(message) = self.socket.next().await {
            if let Ok(Message::Text(text)) = message {
                let answer: Value = serde_json::from_str(&text).expect("DevTools JSON");
                if answer["id"] == id {
                    assert!(answer.get("error").is_none(), "{method}: {answer}");
                    return answer["result"].clone();
                }
            }
        }
        panic!("the browser closed the DevTools connection");
    }

    /// Evaluates `expression` in the page and returns its value.
    async fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true }),
            )
            .await;
        result["result"]["value"].clone()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_order_placed_while_the_console_is_open_appears_confirmed_with_its_timeline() {
    let stack = local::start_stack("console").await;
    shopctl::up::seed_demo(&|service| stack.url(service), stack.admin_token())
        .await
        .expect("the demo products and coupons");
    let console = format!("{}/", stack.url(Service::Console));
    let browser = open(&console);
    let mut page = Page::attach(&browser, &console).await;
    // The page is up and its event stream connected before the order exists.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while page
        .eval("document.readyState === 'complete' && !!document.getElementById('orders')")
        .await
        != json!(true)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the page did not load in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // User 1 orders two mugs with their 10 % coupon, over the order service's API.
    let order: Value = reqwest::Client::new()
        .post(format!("{}/orders", stack.url(Service::OrderService)))
        .json(
            &json!({ "user_id": 1, "items": [{ "product_id": 1, "quantity": 2 }], "coupon_id": 1 }),
        )
        .send()
        .await
        .expect("the order service answers")
        .json()
        .await
        .expect("JSON");
    let id = order["order_id"].as_str().expect("an order id").to_owned();

    let status_of = format!(
        "document.querySelector('[data-order=\"{id}\"] [data-status]')?.dataset.status ?? null"
    );
    let events_of = format!(
        "[...document.querySelectorAll('[data-order=\"{id}\"] [data-event]')].map((row) => row.dataset.event + '@' + row.children[1].textContent)"
    );
    let timeline: Vec<String> = eventually_in_page(&mut page, &status_of, &events_of).await;
    for expected in [
        "OrderCreated@order-service",
        "StockReserved@product-service",
        "CouponApplied@coupon-service",
        "OrderConfirmed@order-service",
    ] {
        assert!(
            timeline.iter().any(|e| e == expected),
            "the timeline shows {expected}: {timeline:?}"
        );
    }
    // The services' panel shows every service ready.
    let ready = page
        .eval("[...document.querySelectorAll('#services [data-service] .up')].length")
        .await;
    assert!(
        ready.as_u64().unwrap_or(0) >= 4,
        "every service shows ready: {ready}"
    );

    // A picture of it, with the order's timeline open.
    page.eval(&format!(
        "document.getElementById('order-{id}').open = true"
    ))
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let shot = page
        .call(
            "Page.captureScreenshot",
            json!({ "format": "png", "captureBeyondViewport": true }),
        )
        .await;
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot["data"].as_str().expect("image data"))
        .expect("base64");
    let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/console.png");
    std::fs::write(&target, png).expect("writing the screenshot");
    println!("screenshot: {}", target.display());

    // The demo form places an order through the order service and says which.
    let answer = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(format!("{console}orders"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("user_id=2&product_id=2&quantity=1&coupon_id=")
        .send()
        .await
        .expect("the console answers");
    assert_eq!(answer.status(), reqwest::StatusCode::SEE_OTHER);
    let location = answer.headers()["location"].to_str().unwrap().to_owned();
    let placed = location
        .strip_prefix("./?placed=")
        .unwrap_or_else(|| panic!("the form placed an order: {location}"));
    let order: Value = reqwest::get(format!(
        "{}/orders/{placed}",
        stack.url(Service::OrderService)
    ))
    .await
    .expect("the order service answers")
    .json()
    .await
    .expect("JSON");
    assert_eq!(order["user_id"], 2, "{order}");

    // Replaying dead letters is an operator's act: without the admin token, 401.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for body in ["offset=0", "token=not-the-admin-token-at-all&offset=0"] {
        let refused = http
            .post(format!("{console}dead-letters/order-service/replay"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .expect("the console answers");
        assert_eq!(
            refused.status(),
            reqwest::StatusCode::UNAUTHORIZED,
            "{body:?}"
        );
        let error: Value = refused.json().await.expect("a JSON error");
        assert_eq!(error["error"]["code"], "unauthorized");
    }
    // A form posted from another site's page, and a page asked for under another site's
    // name (DNS rebinding), are refused.
    let forged = http
        .post(format!("{console}orders"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("origin", "http://evil.example")
        .body("user_id=2&product_id=2&quantity=1&coupon_id=")
        .send()
        .await
        .expect("the console answers");
    assert_eq!(forged.status(), reqwest::StatusCode::FORBIDDEN);
    let rebound = http
        .get(console.as_str())
        .header("host", "evil.example:8088")
        .send()
        .await
        .expect("the console answers");
    assert_eq!(rebound.status(), reqwest::StatusCode::MISDIRECTED_REQUEST);

    // A replay names one letter; one that is not there is said so.
    let replayed = http
        .post(format!("{console}dead-letters/order-service/replay"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={}&offset=999999", stack.admin_token()))
        .send()
        .await
        .expect("the console answers");
    assert!(replayed.status().is_redirection(), "{}", replayed.status());
    let location = replayed.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        location.starts_with("./?error=") && location.contains("offset%20999999"),
        "{location}"
    );
}

/// Waits until the page shows the order CONFIRMED with four events or more; returns them.
async fn eventually_in_page(page: &mut Page, status_of: &str, events_of: &str) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let status = page.eval(status_of).await;
        let events: Vec<String> =
            serde_json::from_value(page.eval(events_of).await).unwrap_or_default();
        if status == json!("CONFIRMED") && events.len() >= 4 {
            return events;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the page shows the order {status} with {events:?} after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
