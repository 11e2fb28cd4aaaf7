//! `shopctl up` run as a person runs it, in a temporary folder on free ports: it brings the
//! system up, keeps everything across a restart, and `shopctl trace` shows an order's saga.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shopctl::stack::WORKER_THREADS;

const SHOPCTL: &str = env!("CARGO_BIN_EXE_shopctl");

/// `shopctl up` running; stopped with SIGTERM (or killed, if the test fails first).
struct Up {
    child: Child,
    base: u16,
    /// What `shopctl up` prints, line by line.
    lines: mpsc::Receiver<String>,
}

impl Up {
    /// Starts `shopctl up` and waits until it says the system is up. The first start builds
    /// the service binaries, so it may take minutes.
    fn start(dir: &Path, broker_port: u16, base: u16) -> Up {
        let mut child = Command::new(SHOPCTL)
            .args(["up", "--seed-demo", "--data-dir"])
            .arg(dir)
            .args(["--broker-port", &broker_port.to_string()])
            .args(["--http-port-base", &base.to_string()])
            // As a person runs it: the stack's own choice of runtime threads applies.
            .env_remove(WORKER_THREADS)
            .stdout(Stdio::piped())
            .spawn()
            .expect("shopctl up starts");
        let stdout = child.stdout.take().expect("stdout");
        let (lines, received) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                println!("shopctl up: {line}");
                let _ = lines.send(line);
            }
        });
        let up = Up {
            child,
            base,
            lines: received,
        };
        up.wait_for_line("the system is up", Duration::from_secs(900));
        up
    }

    /// Waits until `shopctl up` prints a line containing `text`, and returns it.
    fn wait_for_line(&self, text: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let line = self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| panic!("shopctl up prints {text:?} within {within:?}"));
            if line.contains(text) {
                return line;
            }
        }
    }

    fn url(&self, offset: u16, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.base + offset)
    }

    /// SIGTERM, as Ctrl-C would; waits for a clean exit.
    fn stop(mut self) {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        let status = kit::poll::until_blocking(
            "shopctl up stopping",
            Duration::from_secs(60),
            Duration::from_millis(100),
            || self.child.try_wait().expect("wait"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(status.success(), "shopctl up exits cleanly: {status}");
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
            let _ = self.child.wait();
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// GET, blocking: this test drives processes, not futures.
fn get(url: &str) -> Value {
    runtime().block_on(async {
        reqwest::get(url)
            .await
            .expect("GET")
            .json()
            .await
            .expect("json")
    })
}

/// POST, blocking.
fn post(url: &str, body: Value) -> (u16, Value) {
    runtime().block_on(async {
        let response = reqwest::Client::new()
            .post(url)
            .json(&body)
            .send()
            .await
            .expect("POST");
        (
            response.status().as_u16(),
            response.json().await.expect("json"),
        )
    })
}

fn place(up: &Up, body: Value) -> String {
    let (status, order) = post(&up.url(0, "/orders"), body);
    assert_eq!(status, 202, "{order}");
    order["order_id"].as_str().expect("id").to_owned()
}

/// Waits until the forwarder has measured its lag on every partition of `order.events` since
/// it started, and found nothing left to read on any.
fn forwarder_caught_up(up: &Up) {
    let partitions = contract::topics::SAGA_PARTITIONS;
    kit::poll::until_blocking(
        "the forwarder reading to the end of order.events",
        Duration::from_secs(60),
        Duration::from_millis(100),
        || {
            let lags: Vec<f64> = metrics(&up.url(3, "/metrics"))
                .lines()
                .filter(|line| {
                    line.starts_with("consumer_lag{") && line.contains("topic=\"order.events\"")
                })
                .filter_map(|line| line.rsplit(' ').next()?.parse().ok())
                .collect();
            (lags.len() == partitions as usize && lags.iter().all(|lag| *lag == 0.0)).then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
}

/// A `/metrics` exposition, blocking.
fn metrics(url: &str) -> String {
    runtime().block_on(async {
        reqwest::get(url)
            .await
            .expect("GET")
            .text()
            .await
            .expect("text")
    })
}

fn settled(up: &Up, id: &str) -> Value {
    kit::poll::until_blocking(
        &format!("order {id} settling"),
        Duration::from_secs(30),
        Duration::from_millis(50),
        || {
            let order = get(&up.url(0, &format!("/orders/{id}")));
            (order["status"] != "PENDING").then_some(order)
        },
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn shopctl_up_runs_the_system_and_keeps_its_state_across_a_restart() {
    let dir = std::env::temp_dir().join(format!("shopctl-up-{}", uuid::Uuid::new_v4()));
    let broker_port = testkit::free_port();
    let base = testkit::free_port_run(11);

    let up = Up::start(&dir, broker_port, base);
    for offset in [0, 1, 2, 3, 8, 10] {
        assert_eq!(
            environment_of(pid_serving(base + offset), WORKER_THREADS).as_deref(),
            Some("1"),
            "each process of the local stack runs one runtime thread"
        );
    }
    let confirmed = place(
        &up,
        json!({ "user_id": 1, "items": [{ "product_id": 1, "quantity": 2 }] }),
    );
    assert_eq!(settled(&up, &confirmed)["status"], "CONFIRMED");
    // Coupon 3 of the demo data belongs to user 2: user 1's order is refused after its stock
    // was reserved, so the stock is released again.
    let cancelled = place(
        &up,
        json!({ "user_id": 1, "items": [{ "product_id": 2, "quantity": 1 }], "coupon_id": 3 }),
    );
    assert_eq!(settled(&up, &cancelled)["cancel_reason"], "COUPON_REJECTED");
    kit::poll::until_blocking(
        "the cancelled order's stock coming back",
        Duration::from_secs(30),
        Duration::from_millis(50),
        || (get(&up.url(1, "/products/2"))["reserved"] == 0).then_some(()),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    // Both orders' two events reach the data platform before the stop, so that anything it
    // gets after the restart would be a redelivery.
    kit::poll::until_blocking(
        "four deliveries to the data platform",
        Duration::from_secs(30),
        Duration::from_millis(50),
        || (get(&up.url(10, "/v1/orders"))["received"] == 4).then_some(()),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let before = get(&up.url(0, &format!("/orders/{confirmed}")));
    up.stop();

    let up = Up::start(&dir, broker_port, base);
    let after = get(&up.url(0, &format!("/orders/{confirmed}")));
    assert_eq!(after, before, "the order is kept as it was");
    let mug = get(&up.url(1, "/products/1"));
    assert_eq!(
        (mug["available"].as_i64(), mug["reserved"].as_i64()),
        (Some(98), Some(2)),
        "{mug}"
    );
    // The data-platform mock starts empty; if the forwarder re-handled old events, or sent
    // again what it had sent, the mock would get them. Rather than give it a while to
    // misbehave, wait until the forwarder has read to the end of every partition (so any old
    // event it would re-handle has been handled), then send a marker order: the forwarder
    // sends what is due oldest first, one round after another, so once the marker's events
    // arrive, anything older would have arrived before them.
    forwarder_caught_up(&up);
    let marker = place(
        &up,
        json!({ "user_id": 1, "items": [{ "product_id": 1, "quantity": 1 }] }),
    );
    assert_eq!(settled(&up, &marker)["status"], "CONFIRMED");
    let kept = kit::poll::until_blocking(
        "the marker order's two events reaching the data platform",
        Duration::from_secs(30),
        Duration::from_millis(50),
        || {
            let listing = get(&up.url(10, "/v1/orders"));
            let orders = listing["orders"].as_array().cloned().unwrap_or_default();
            let of_marker = orders
                .iter()
                .filter(|kept| kept["body"].to_string().contains(&marker))
                .count();
            (of_marker == 2).then_some(orders)
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        kept.len(),
        2,
        "nothing was redelivered in effect, only the marker's events arrived: {kept:?}"
    );

    let trace = Command::new(SHOPCTL)
        .args([
            "trace",
            &cancelled,
            "--brokers",
            &format!("127.0.0.1:{broker_port}"),
        ])
        .output()
        .expect("shopctl trace runs");
    assert!(
        trace.status.success(),
        "{}",
        String::from_utf8_lossy(&trace.stderr)
    );
    let printed = String::from_utf8_lossy(&trace.stdout);
    println!("{printed}");
    let order: Vec<&str> = [
        "OrderCreated",
        "StockReserved",
        "CouponApplyFailed",
        "OrderCancelled",
        "StockReleased",
    ]
    .into_iter()
    .filter(|event| printed.contains(event))
    .collect();
    assert_eq!(
        order.len(),
        5,
        "every step and compensation is traced:\n{printed}"
    );
    assert!(printed.contains("COUPON_REJECTED"), "{printed}");
    assert!(
        printed.contains("product-service") && printed.contains("coupon-service"),
        "{printed}"
    );
    let dlq = Command::new(SHOPCTL)
        .args([
            "dlq",
            "list",
            "order-service",
            "--brokers",
            &format!("127.0.0.1:{broker_port}"),
        ])
        .output()
        .expect("shopctl dlq list runs");
    assert!(
        dlq.status.success(),
        "{}",
        String::from_utf8_lossy(&dlq.stderr)
    );
    assert!(
        String::from_utf8_lossy(&dlq.stdout).contains("0 dead letter(s) in order-service.dlq"),
        "{}",
        String::from_utf8_lossy(&dlq.stdout)
    );

    // A letter forged on the forwarder's dead-letter topic, which its credential may write,
    // that would reprice the catalog if replayed where it says it came from.
    let brokers = format!("127.0.0.1:{broker_port}");
    let free = contract::Envelope::new(
        "product-service",
        contract::ProductUpserted {
            product_id: 1,
            name: "Mug".into(),
            price: 0,
        },
        None,
    );
    runtime()
        .block_on(testkit::produce_raw(
            &brokers,
            "analytics-forwarder.dlq",
            "1",
            free.to_json().as_bytes(),
            &[
                ("dlq.stage", "consume"),
                ("dlq.error", "forged"),
                ("dlq.source.topic", "product.catalog"),
                ("dlq.source.partition", "0"),
                ("dlq.source.offset", "0"),
            ],
        ))
        .expect("produce");
    let replay = Command::new(SHOPCTL)
        .args([
            "dlq",
            "replay",
            "analytics-forwarder",
            "--all",
            "--brokers",
            &brokers,
        ])
        .output()
        .expect("shopctl dlq replay runs");
    let said = String::from_utf8_lossy(&replay.stdout);
    assert!(!replay.status.success(), "{said}");
    assert!(
        said.contains("refused the dead letter at offset 0")
            && said.contains("analytics-forwarder does not consume \"product.catalog\""),
        "{said}"
    );
    let price = get(&up.url(0, "/catalog/1"))["price"].clone();
    assert_ne!(price, 0, "the catalog keeps its price");
    up.stop();
    let _ = std::fs::remove_dir_all(dir);
}

/// The process serving `port` among those `shopctl up` started: the one whose environment
/// says `HTTP_ADDR=127.0.0.1:<port>`.
fn pid_serving(port: u16) -> u32 {
    let wanted = format!("127.0.0.1:{port}");
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| environment_of(*pid, "HTTP_ADDR").as_deref() == Some(wanted.as_str()))
        .unwrap_or_else(|| panic!("a process serves port {port}"))
}

/// The value of the variable `name` in the environment process `pid` was started with;
/// `None` too when that environment cannot be read (a process of another user, or gone).
fn environment_of(pid: u32, name: &str) -> Option<String> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let prefix = format!("{name}=");
    environ.split(|b| *b == 0).find_map(|var| {
        var.strip_prefix(prefix.as_bytes())
            .map(|value| String::from_utf8_lossy(value).into_owned())
    })
}

fn ready(up: &Up, offset: u16) -> bool {
    runtime().block_on(async {
        reqwest::get(up.url(offset, "/health/ready"))
            .await
            .is_ok_and(|r| r.status().is_success())
    })
}

/// The process whose command line holds `needle`.
fn pid_running(needle: &str) -> u32 {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
                String::from_utf8_lossy(&cmdline)
                    .replace('\0', " ")
                    .contains(needle)
            })
        })
        .unwrap_or_else(|| panic!("a process runs with {needle:?}"))
}

fn kill_9(pid: u32) {
    Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("kill");
}

fn wait_until_ready(up: &Up, offset: u16, what: &str) {
    kit::poll::until_blocking(
        what,
        Duration::from_secs(60),
        Duration::from_millis(200),
        || ready(up, offset).then_some(()),
    )
    .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn shopctl_up_starts_a_service_or_a_broker_that_died_again_and_says_so() {
    let dir = std::env::temp_dir().join(format!("shopctl-up-{}", uuid::Uuid::new_v4()));
    let broker_port = testkit::free_port();
    let up = Up::start(&dir, broker_port, testkit::free_port_run(11));
    let product_service = pid_serving(up.base + 1);
    kill_9(product_service);
    let said = up.wait_for_line("product-service exited", Duration::from_secs(10));
    assert!(said.contains("starting it again"), "{said}");
    wait_until_ready(&up, 1, "the product service ready again");
    assert_ne!(pid_serving(up.base + 1), product_service, "a new process");
    let order = place(
        &up,
        json!({ "user_id": 1, "items": [{ "product_id": 1, "quantity": 1 }] }),
    );
    assert_eq!(settled(&up, &order)["status"], "CONFIRMED");

    // The broker dies: it is started again, and every service with it.
    kill_9(pid_running(&format!("tcp://127.0.0.1:{broker_port}")));
    up.wait_for_line("the broker exited", Duration::from_secs(10));
    up.wait_for_line(
        "the broker and every service are back",
        Duration::from_secs(120),
    );
    wait_until_ready(&up, 0, "the order service ready again");
    let order = place(
        &up,
        json!({ "user_id": 1, "items": [{ "product_id": 1, "quantity": 1 }] }),
    );
    assert_eq!(settled(&up, &order)["status"], "CONFIRMED");
    up.stop();
    let _ = std::fs::remove_dir_all(dir);
}
