//! The compose deployment, rehearsed for real without Docker.
//!
//! `docker-compose config` reads `docker-compose.yml` with an `.env` that `deploy/make-env.sh`
//! writes, and every container it describes becomes a process on a host of its own (a network
//! namespace, [`netns`]), where compose's service names mean what they mean in compose: the
//! Kafka the image would run, configured from its variables, kafka-init in Kafka's namespace,
//! Postgres initialised by `deploy/postgres-init.sh`, every service of ours with its compose
//! command and environment ([`containers`]). Containers start in `depends_on` order, each
//! condition met as compose meets it (a health check run inside the container's namespace,
//! or an exit with status 0). Then, from a storefront host of its own, the test places an
//! order and checks what users rely on: it confirms, kcat tails it, and the broker refuses
//! what each credential may not do.
//!
//! It needs root (`ip netns`), Apache Kafka (`scripts/install-kafka.sh`), Postgres's server
//! binaries, Debian's `kcat` and `docker-compose`: `scripts/test.sh` installs them and runs it
//! with `cargo test --workspace --test rehearsal` (a plain `cargo test` leaves it out).
//! What it cannot rehearse is in docs/containers.md.

mod containers;
mod netns;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::Duration;

use containers::{Container, Kind, Run, tail};
use serde_json::Value as Json;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the workspace")
}

/// How long a container may take to become healthy, or to finish (kafka-init).
const START_WITHIN: Duration = Duration::from_secs(180);
/// How often a health check runs while a container starts.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// The host the checks run from: a storefront, a person's machine, another container.
const STOREFRONT: &str = "storefront";

/// The rehearsal's processes and network; everything is killed and removed when it ends.
struct Rehearsal {
    run: Run,
    containers: BTreeMap<String, Container>,
    started: Vec<(String, Child)>,
}

impl Drop for Rehearsal {
    fn drop(&mut self) {
        for (_, child) in &mut self.started {
            // Each container's main process leads a process group: Kafka's JVM, Postgres and
            // its workers go with it.
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .stderr(std::process::Stdio::null())
                .status();
            let _ = child.wait();
        }
        // A failed run keeps its folder (logs, volumes) to be read; a passing one leaves
        // nothing behind.
        if std::thread::panicking() {
            println!(
                "the rehearsal's logs: {}",
                self.run.dir.join("logs").display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.run.dir);
        }
    }
}

/// `docker-compose config` of the repository's file with `env_file`: compose's own reading,
/// merge keys applied and every `${…}` filled in.
fn compose_config(env_file: &Path) -> yaml_serde::Value {
    let output = Command::new("docker-compose")
        .arg("--env-file")
        .arg(env_file)
        .arg("-f")
        .arg(root().join("docker-compose.yml"))
        .arg("config")
        .output()
        .expect("docker-compose (Debian's package) runs; scripts/test.sh installs it");
    assert!(
        output.status.success(),
        "docker-compose config: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    yaml_serde::from_slice(&output.stdout).expect("docker-compose config prints YAML")
}

/// Builds every binary of the workspace, as the image's build does; returns their folder.
fn build_binaries() -> PathBuf {
    let status = shopctl::stack::cargo(&root())
        .args(["build", "--bins"])
        .status()
        .expect("cargo runs");
    assert!(status.success(), "cargo build --bins");
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root().join("target"), PathBuf::from)
        .join("debug")
}

fn postgres_bin() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("Postgres's binaries (scripts/install-postgres.sh)")
        .flatten()
        .map(|entry| entry.path().join("bin"))
        .filter(|bin| bin.join("postgres").is_file())
        .collect();
    versions.sort_by_key(|bin| {
        bin.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
    });
    versions
        .pop()
        .expect("a Postgres server in /usr/lib/postgresql")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

impl Rehearsal {
    /// Reads compose's configuration and lays out one host per container, plus the
    /// storefront.
    fn prepare() -> Rehearsal {
        assert_eq!(
            effective_uid(),
            0,
            "the rehearsal makes network namespaces: run it as root (scripts/test.sh does)"
        );
        let dir = std::env::temp_dir().join(format!(
            "compose-rehearsal-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(dir.join("logs")).expect("the run's folder");
        let env_file = dir.join(".env");
        let status = Command::new("bash")
            .arg(root().join("deploy/make-env.sh"))
            .env("ENV_FILE", &env_file)
            .status()
            .expect("bash runs");
        assert!(status.success(), "deploy/make-env.sh");
        let config = compose_config(&env_file);
        let containers: BTreeMap<String, Container> = config["services"]
            .as_mapping()
            .expect("services")
            .iter()
            .map(|(name, spec)| {
                let name = name.as_str().expect("a name");
                (name.to_owned(), Container::new(name, spec))
            })
            .collect();
        let mut network = netns::Network::new();
        for container in containers.values() {
            if container.host() == container.name {
                network.add_host(&container.name);
            }
        }
        network.add_host(STOREFRONT);
        network.write_hosts_files();
        let run = Run {
            dir,
            network,
            bin_dir: build_binaries(),
            kafka: kafka_node::Install::find(&root()).expect("Apache Kafka is installed"),
            pg_bin: postgres_bin(),
        };
        Rehearsal {
            run,
            containers,
            started: Vec::new(),
        }
    }

    fn container(&self, name: &str) -> &Container {
        &self.containers[name]
    }

    /// Runs a container's health check once, inside its namespace.
    fn healthy(&self, container: &Container) -> bool {
        let check = container.healthcheck().expect("a health check");
        // The Kafka image's tools are ours here.
        let check: Vec<String> = check
            .iter()
            .map(|arg| arg.replace("/opt/kafka/bin", &self.run.kafka_bin()))
            .collect();
        self.run
            .command(container, &check[0])
            .args(&check[1..])
            .output()
            .is_ok_and(|out| out.status.success())
    }

    fn child(&mut self, name: &str) -> &mut Child {
        &mut self
            .started
            .iter_mut()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("{name} was not started"))
            .1
    }

    /// Waits until `name` meets `condition`, as compose waits before starting what depends
    /// on it; fails with the end of its log if it exits or runs out of time.
    fn wait_for(&mut self, name: &str, condition: &str) {
        let log = self.run.log(name);
        let container = self.container(name).clone();
        let outcome = kit::poll::until_blocking(
            &format!("{name}: {condition}"),
            START_WITHIN,
            CHECK_EVERY,
            || match condition {
                "service_completed_successfully" => {
                    self.child(name).try_wait().ok().flatten().map(|status| {
                        if status.success() {
                            Ok(())
                        } else {
                            Err(format!("exited with {status}"))
                        }
                    })
                }
                "service_healthy" => {
                    if let Some(status) = self.child(name).try_wait().ok().flatten() {
                        return Some(Err(format!("exited with {status}")));
                    }
                    self.healthy(&container).then_some(Ok(()))
                }
                _ => Some(Ok(())),
            },
        );
        match outcome {
            Ok(Ok(())) => println!("==> {name}: {condition}"),
            Ok(Err(why)) => panic!("{name} {why}; its log:\n{}", tail(&log)),
            Err(timed_out) => panic!("{timed_out}; {name}'s log:\n{}", tail(&log)),
        }
    }

    /// Starts every container the rehearsal can run, in `depends_on` order; waits for each
    /// condition compose would wait for, and for every health check at the end.
    fn start_all(&mut self) {
        let runnable: Vec<String> = self
            .containers
            .values()
            .filter(|c| !matches!(c.kind, Kind::Kcat | Kind::NotRehearsed))
            .map(|c| c.name.clone())
            .collect();
        let mut done: BTreeSet<String> = BTreeSet::new();
        while done.len() < runnable.len() {
            let next = runnable
                .iter()
                .find(|name| {
                    !done.contains(*name)
                        && self.container(name).depends_on().iter().all(|(dep, _)| {
                            done.contains(dep)
                                || matches!(self.container(dep).kind, Kind::NotRehearsed)
                        })
                })
                .cloned()
                .expect("depends_on has no cycle");
            for (dep, condition) in self.container(&next).depends_on() {
                if !matches!(self.container(&dep).kind, Kind::NotRehearsed) {
                    self.wait_for(&dep, &condition);
                }
            }
            println!("==> starting {next}");
            let child = self.run.start(self.container(&next));
            self.started.push((next.clone(), child));
            done.insert(next);
        }
        for name in runnable {
            if self.container(&name).healthcheck().is_some() {
                self.wait_for(&name, "service_healthy");
            }
        }
    }

    /// A command run on the storefront host.
    fn storefront(&self, program: &str) -> Command {
        self.run.network.command(STOREFRONT, program)
    }

    /// An HTTP request from the storefront, by compose name; its status and JSON body.
    fn http(&self, method: &str, url: &str, body: Option<&Json>, headers: &[&str]) -> (u16, Json) {
        let mut curl = self.storefront("curl");
        curl.args(["-sS", "-m", "10", "-X", method, "-w", "\n%{http_code}", url]);
        for header in headers {
            curl.args(["-H", header]);
        }
        if let Some(body) = body {
            curl.args([
                "-H",
                "content-type: application/json",
                "-d",
                &body.to_string(),
            ]);
        }
        let output = curl.output().expect("curl runs");
        let printed = String::from_utf8_lossy(&output.stdout).into_owned();
        let (body, status) = printed.rsplit_once('\n').unwrap_or(("", "0"));
        (
            status.trim().parse().unwrap_or(0),
            serde_json::from_str(body).unwrap_or(Json::Null),
        )
    }

    /// kcat in `host`'s network with `args`, given at most 30 s.
    fn kcat(&self, host: &str, args: &[String], input: Option<&str>) -> Output {
        let mut command = self.run.network.command(host, "timeout");
        command.arg("30").arg("kcat").args(args);
        match input {
            Some(input) => {
                use std::io::Write;
                let mut child = command
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .expect("kcat runs");
                child
                    .stdin
                    .take()
                    .expect("stdin")
                    .write_all(input.as_bytes())
                    .expect("writing to kcat");
                child.wait_with_output().expect("kcat ends")
            }
            None => command.output().expect("kcat runs"),
        }
    }

    /// kcat's command line for a service's own credentials (from its compose environment).
    fn kcat_as(&self, service: &str) -> Vec<String> {
        let env = self.container(service).env();
        [
            "-b",
            &env["KAFKA_BROKERS"],
            "-X",
            "security.protocol=SASL_PLAINTEXT",
            "-X",
            &format!("sasl.mechanisms={}", env["KAFKA_SASL_MECHANISM"]),
            "-X",
            &format!("sasl.username={}", env["KAFKA_SASL_USERNAME"]),
            "-X",
            &format!("sasl.password={}", env["KAFKA_SASL_PASSWORD"]),
        ]
        .map(str::to_owned)
        .to_vec()
    }
}

/// The effective user id (`id -u`).
fn effective_uid() -> u32 {
    let output = Command::new("id").arg("-u").output().expect("id runs");
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .expect("a number")
}

fn refused_for_authorisation(output: &Output) -> bool {
    text(output).to_lowercase().contains("authorization failed")
}

/// Whether a TCP connection from the storefront to `host:port` is accepted.
fn reachable(rehearsal: &Rehearsal, host: &str, port: u16) -> bool {
    rehearsal
        .storefront("timeout")
        .args([
            "5",
            "bash",
            "-c",
            &format!("exec 3<>/dev/tcp/{host}/{port}"),
        ])
        .output()
        .is_ok_and(|out| out.status.success())
}

#[test]
fn the_compose_topology_runs_an_order_end_to_end_and_refuses_what_no_credential_allows() {
    let mut rehearsal = Rehearsal::prepare();
    rehearsal.start_all();

    // Every service answers from another host by its compose name, and so does the console.
    for (service, port) in [
        ("order-service", 8080),
        ("product-service", 8081),
        ("coupon-service", 8082),
        ("analytics-forwarder", 8083),
        ("data-platform-mock", 8090),
        ("console", 8088),
    ] {
        let (status, _) = rehearsal.http(
            "GET",
            &format!("http://{service}:{port}/health/ready"),
            None,
            &[],
        );
        assert_eq!(status, 200, "{service} is ready, seen from the storefront");
    }

    // A product and a coupon, as the operator creates them (with the admin token compose
    // gives the product and coupon services), and an order for both, as a storefront posts it.
    let operator = format!(
        "Authorization: Bearer {}",
        rehearsal.container("product-service").env()["ADMIN_TOKEN"]
    );
    let (status, refused) = rehearsal.http(
        "POST",
        "http://product-service:8081/products",
        Some(&serde_json::json!({ "name": "Free mug", "price": 0, "stock": 1_000_000 })),
        &[],
    );
    assert_eq!(
        status, 401,
        "creating a product takes the admin token: {refused}"
    );
    let (status, product) = rehearsal.http(
        "POST",
        "http://product-service:8081/products",
        Some(&serde_json::json!({ "name": "Rehearsal mug", "price": 1500, "stock": 10 })),
        &[&operator],
    );
    assert_eq!(status, 201, "{product}");
    let product_id = product["product_id"].as_i64().expect("a product id");
    let (status, coupon) = rehearsal.http(
        "POST",
        "http://coupon-service:8082/coupons",
        Some(&serde_json::json!({ "user_id": 7, "kind": "FIXED", "value": 500 })),
        &[&operator],
    );
    assert_eq!(status, 201, "{coupon}");
    let coupon_id = coupon["coupon_id"].as_i64().expect("a coupon id");
    kit::poll::until_blocking(
        "the product in the order service's catalog",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || {
            (rehearsal
                .http(
                    "GET",
                    &format!("http://order-service:8080/catalog/{product_id}"),
                    None,
                    &[],
                )
                .0
                == 200)
                .then_some(())
        },
    )
    .expect("the catalog reaches the order service over Kafka");
    let (status, placed) = rehearsal.http(
        "POST",
        "http://order-service:8080/orders",
        Some(&serde_json::json!({
            "user_id": 7,
            "items": [{ "product_id": product_id, "quantity": 2 }],
            "coupon_id": coupon_id,
        })),
        &["Idempotency-Key: rehearsal-1"],
    );
    assert!(status == 201 || status == 202, "{status}: {placed}");
    let order_id = placed["order_id"].as_str().expect("an order id").to_owned();
    let order = kit::poll::until_blocking(
        "the order to end",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || {
            let (_, order) = rehearsal.http(
                "GET",
                &format!("http://order-service:8080/orders/{order_id}"),
                None,
                &[],
            );
            (order["status"] != "PENDING" && order["status"].is_string()).then_some(order)
        },
    )
    .expect("the order ends");
    assert_eq!(order["status"], "CONFIRMED", "{order}");
    assert_eq!(order["final_amount"], 2500, "{order}");
    kit::poll::until_blocking(
        "the data platform to receive the order",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || {
            let (_, received) =
                rehearsal.http("GET", "http://data-platform-mock:8090/v1/orders", None, &[]);
            received.to_string().contains(&order_id).then_some(())
        },
    )
    .expect("the forwarder delivers the order");

    // kcat, as the README runs it: the `kcat` user, compose's entrypoint, `-C -t order.events
    // -K:` (and -e, to stop at the end of the topic).
    let kcat = rehearsal.container("kcat").entrypoint()[1..].to_vec();
    let mut tail = kcat.clone();
    tail.extend(["-C", "-t", "order.events", "-K:", "-e"].map(str::to_owned));
    let tailed = rehearsal.kcat("kcat", &tail, None);
    let printed = text(&tailed);
    assert!(
        tailed.status.success()
            && printed.contains(&format!("{order_id}:"))
            && printed.contains("OrderCreated")
            && printed.contains("OrderConfirmed"),
        "kcat tails the order's events: {printed}"
    );

    // kcat may only read.
    let mut produce = kcat.clone();
    produce.extend(["-P", "-t", "order.events", "-K:"].map(str::to_owned));
    let forged = rehearsal.kcat("kcat", &produce, Some(&format!("{order_id}:{{}}\n")));
    assert!(
        refused_for_authorisation(&forged),
        "the broker refuses kcat's produce: {}",
        text(&forged)
    );

    // A service's credentials write only what it produces and read only what it consumes.
    let coupon = rehearsal.kcat_as("coupon-service");
    let mut metadata = coupon.clone();
    metadata.push("-L".into());
    let listed = rehearsal.kcat("coupon-service", &metadata, None);
    assert!(
        listed.status.success(),
        "the coupon service's user logs in: {}",
        text(&listed)
    );
    let mut write = coupon.clone();
    write.extend(["-P", "-t", "stock.events", "-K:"].map(str::to_owned));
    let written = rehearsal.kcat(
        "coupon-service",
        &write,
        Some(&format!("{order_id}:{{}}\n")),
    );
    assert!(
        refused_for_authorisation(&written),
        "the coupon service's user may not write stock.events: {}",
        text(&written)
    );
    let mut read = coupon;
    read.extend(["-C", "-t", "stock.events", "-e"].map(str::to_owned));
    let read = rehearsal.kcat("coupon-service", &read, None);
    assert!(
        refused_for_authorisation(&read),
        "the coupon service's user may not read stock.events: {}",
        text(&read)
    );

    // Kafka's PLAINTEXT listeners (the broker's own and the controller's) are on its
    // loopback: another host reaches only the SASL listener.
    assert!(
        reachable(&rehearsal, "kafka", 9092),
        "kafka:9092 (SASL) is reachable"
    );
    for port in [19092, 9093] {
        assert!(
            !reachable(&rehearsal, "kafka", port),
            "kafka:{port} (PLAINTEXT) is not reachable from another host"
        );
    }
}
