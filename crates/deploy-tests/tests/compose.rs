//! `docker-compose.yml` and `deploy/` checked against the code they run.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use clap::CommandFactory;
use yaml_serde::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// The compose file with its `<<` merge keys applied, as Docker Compose reads it.
fn compose() -> Value {
    let mut value: Value = yaml_serde::from_str(&read("docker-compose.yml")).expect("valid YAML");
    value.apply_merge().expect("merge keys apply");
    value
}

fn services() -> BTreeMap<String, Value> {
    let compose = compose();
    let services = compose["services"].as_mapping().expect("services");
    services
        .iter()
        .map(|(name, service)| {
            let mut service = service.clone();
            service.apply_merge().expect("merge keys apply");
            (name.as_str().expect("name").to_owned(), service)
        })
        .collect()
}

/// What the code says about each binary compose runs from our image.
struct Binary {
    name: &'static str,
    command: clap::Command,
}

fn binaries() -> Vec<Binary> {
    vec![
        Binary {
            name: "order-service",
            command: order_service::Config::command(),
        },
        Binary {
            name: "product-service",
            command: product_service::Config::command(),
        },
        Binary {
            name: "coupon-service",
            command: coupon_service::Config::command(),
        },
        Binary {
            name: "analytics-forwarder",
            command: analytics_forwarder::Config::command(),
        },
        Binary {
            name: "data-platform-mock",
            command: data_platform_mock::Config::command(),
        },
    ]
}

/// Variables every binary reads through `tracing` setup rather than its settings.
const LOGGING: &[&str] = &["RUST_LOG", "LOG_FORMAT"];

fn env_of(service: &Value) -> BTreeMap<String, String> {
    deploy_tests::environment(service)
}

fn command_of(service: &Value) -> Option<String> {
    service["command"]
        .as_sequence()?
        .first()?
        .as_str()
        .map(str::to_owned)
}

fn default_port(command: &clap::Command) -> u16 {
    let arg = command
        .get_arguments()
        .find(|a| a.get_id() == "http_addr")
        .expect("an http_addr setting");
    let default = arg
        .get_default_values()
        .first()
        .expect("a default")
        .to_str()
        .expect("text");
    default
        .rsplit(':')
        .next()
        .expect("a port")
        .parse()
        .expect("a port number")
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {addr}"))
}

#[test]
fn docker_compose_accepts_the_file() {
    // With .env.example's placeholders: without an .env the stack refuses to start.
    let output = std::process::Command::new("docker-compose")
        .arg("--env-file")
        .arg(root().join(".env.example"))
        .arg("-f")
        .arg(root().join("docker-compose.yml"))
        .args(["config", "-q"])
        .output()
        .expect("docker-compose (Debian's package) is installed; scripts/test.sh installs it");
    assert!(
        output.status.success(),
        "docker-compose config: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_initializer_creates_exactly_the_contracts_topics() {
    let script = read("deploy/create-topics.sh");
    let created: BTreeSet<(String, i32, bool)> = script
        .lines()
        .filter_map(|line| line.trim().strip_prefix("create "))
        .map(|args| {
            let words: Vec<&str> = args.split_whitespace().collect();
            let compacted = args.contains("cleanup.policy=compact");
            (
                words[0].to_owned(),
                words[1].parse().expect("partitions"),
                compacted,
            )
        })
        .collect();
    let expected: BTreeSet<(String, i32, bool)> =
        ops::topics::contract_topics().into_iter().collect();
    assert_eq!(created, expected);
    let init = &services()["kafka-init"];
    assert!(
        init["entrypoint"]
            .as_sequence()
            .expect("entrypoint")
            .iter()
            .any(|w| w.as_str() == Some("/deploy/kafka-init.sh")),
        "kafka-init runs its script"
    );
    let script = read("deploy/kafka-init.sh");
    assert!(
        script.contains(r#"bash "$here/create-topics.sh""#)
            && script.contains(r#"bash "$here/kafka-security.sh""#),
        "kafka-init creates the topics, then the users and ACLs"
    );
}

#[test]
fn every_variable_a_service_is_given_is_one_it_reads() {
    let services = services();
    for binary in binaries() {
        let service = &services[binary.name];
        assert_eq!(
            command_of(service).as_deref(),
            Some(binary.name),
            "{} runs its own binary",
            binary.name
        );
        let understood: BTreeSet<String> = binary
            .command
            .get_arguments()
            .filter_map(|a| a.get_env().and_then(|e| e.to_str()).map(str::to_owned))
            .chain(LOGGING.iter().map(|v| (*v).to_owned()))
            .collect();
        let given = env_of(service);
        for name in given.keys() {
            assert!(
                understood.contains(name),
                "{} is given {name}, which it does not read",
                binary.name
            );
        }
        for arg in binary
            .command
            .get_arguments()
            .filter(|a| a.is_required_set())
        {
            let env = arg
                .get_env()
                .and_then(|e| e.to_str())
                .expect("required settings come from the environment");
            assert!(given.contains_key(env), "{} needs {env}", binary.name);
        }
        if understood.contains("DATABASE_URL") {
            let url = given
                .get("DATABASE_URL")
                .unwrap_or_else(|| panic!("{} is given a DATABASE_URL", binary.name));
            assert!(
                url.starts_with("postgres://"),
                "{} runs on Postgres in containers: {url}",
                binary.name
            );
        }
        if understood.contains("KAFKA_BROKERS") {
            assert_eq!(
                given.get("KAFKA_BROKERS").map(String::as_str),
                Some("kafka:9092"),
                "{}",
                binary.name
            );
        }
    }
}

#[test]
fn every_value_a_service_is_given_is_one_it_takes() {
    // The names alone are not enough: `sasl_plaintext`, librdkafka's spelling, was refused by
    // the setting's parser until the compose rehearsal ran the services.
    let services = services();
    for binary in binaries() {
        let given = env_of(&services[binary.name]);
        let mut argv = vec![binary.name.to_owned()];
        for arg in binary.command.get_arguments() {
            let (Some(env), Some(long)) = (arg.get_env().and_then(|e| e.to_str()), arg.get_long())
            else {
                continue;
            };
            if let Some(value) = given.get(env) {
                argv.push(format!("--{long}={value}"));
            }
        }
        if let Err(error) = binary.command.clone().try_get_matches_from(&argv) {
            panic!("{} refuses what compose gives it: {error}", binary.name);
        }
    }
}

#[test]
fn ports_and_health_checks_match_the_services_defaults() {
    let services = services();
    for binary in binaries() {
        let service = &services[binary.name];
        let port = default_port(&binary.command);
        let given = env_of(service);
        let addr = given
            .get("HTTP_ADDR")
            .unwrap_or_else(|| panic!("{} sets HTTP_ADDR", binary.name));
        assert_eq!(
            port_of(addr),
            port,
            "{} listens on its default port",
            binary.name
        );
        assert!(
            addr.starts_with("0.0.0.0:"),
            "{} listens on every interface of its container",
            binary.name
        );
        let published: Vec<String> = service["ports"]
            .as_sequence()
            .map(|ports| {
                ports
                    .iter()
                    .filter_map(|p| p.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            published.iter().any(|p| port_of(p) == port),
            "{} publishes its port {port}: {published:?}",
            binary.name
        );
        let check: Vec<&str> = service["healthcheck"]["test"]
            .as_sequence()
            .expect("a health check")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let url = format!("http://127.0.0.1:{port}/health/ready");
        assert!(
            check.contains(&url.as_str()),
            "{} checks {url}: {check:?}",
            binary.name
        );
    }
}

#[test]
fn consumers_can_be_scaled_without_fixed_host_ports_or_names() {
    let services = services();
    for name in ["product-service", "coupon-service", "analytics-forwarder"] {
        let service = &services[name];
        assert!(
            service.get("container_name").is_none(),
            "{name} has no fixed container name"
        );
        for port in service["ports"].as_sequence().into_iter().flatten() {
            let port = port.as_str().expect("short syntax");
            assert!(
                port.starts_with("127.0.0.1::"),
                "{name} publishes {port} on a fixed host port, or beyond the loopback"
            );
        }
    }
    assert!(services.values().all(|s| s.get("container_name").is_none()));
}

#[test]
fn services_start_after_what_they_need_is_healthy() {
    let services = services();
    for binary in binaries().iter().filter(|b| b.name != "data-platform-mock") {
        let depends = &services[binary.name]["depends_on"];
        assert_eq!(
            depends["postgres"]["condition"].as_str(),
            Some("service_healthy"),
            "{}",
            binary.name
        );
        assert_eq!(
            depends["kafka-init"]["condition"].as_str(),
            Some("service_completed_successfully"),
            "{}",
            binary.name
        );
        assert!(
            services[binary.name]["restart"].as_str().is_some(),
            "{} has a restart policy",
            binary.name
        );
    }
    assert!(
        services["kafka"]["healthcheck"].is_mapping()
            && services["postgres"]["healthcheck"].is_mapping()
    );
}

#[test]
fn every_database_url_names_a_role_and_database_the_init_script_creates() {
    let init = read("deploy/postgres-init.sh");
    let postgres = env_of(&services()["postgres"]);
    for (name, service) in services() {
        let Some(url) = env_of(&service).get("DATABASE_URL").cloned() else {
            continue;
        };
        let rest = url.strip_prefix("postgres://").expect("postgres URL");
        let (credentials, location) = rest.split_once('@').expect("credentials");
        let (user, password) = credentials.split_once(':').expect("user:password");
        let database = location.rsplit('/').next().expect("database");
        // The password is a variable of .env, which the init script is given too.
        let variable = password
            .strip_prefix("${")
            .and_then(|p| p.strip_suffix('}'))
            .unwrap_or_else(|| panic!("{name}: the password is written into the file"));
        assert!(
            postgres.contains_key(variable),
            "{name}: postgres is given {variable}"
        );
        assert!(
            init.contains(&format!("service {user} {database} \"${variable}\"")),
            "{name}: the init script creates {user} and {database} with {variable}"
        );
    }
    // Service roles get what their migrations need, and PUBLIC nothing.
    for rule in [
        "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE",
        "REVOKE ALL ON DATABASE :\"database\" FROM PUBLIC;",
        "GRANT CONNECT ON DATABASE :\"database\" TO :\"role\";",
        "REVOKE ALL ON SCHEMA public FROM PUBLIC;",
        "GRANT USAGE, CREATE ON SCHEMA public TO :\"role\";",
    ] {
        assert!(init.contains(rule), "the init script has {rule}");
    }
    assert!(
        !init.contains(" OWNER "),
        "no service role owns its database"
    );
}

#[test]
fn no_secret_is_written_into_the_compose_file() {
    let text = read("docker-compose.yml");
    let services = services();
    for (name, service) in &services {
        for (variable, value) in env_of(service) {
            let secret = ["PASSWORD", "TOKEN"].iter().any(|s| variable.contains(s));
            if secret {
                assert!(
                    value.starts_with("${") && value.ends_with('}'),
                    "{name}: {variable} comes from .env, not the file: {value}"
                );
            }
        }
    }
    // Every variable the file takes from .env is one .env.example lists.
    let example = read(".env.example");
    for piece in text.split("${").skip(1) {
        let variable = piece.split(['}', ':']).next().expect("a name");
        assert!(
            example
                .lines()
                .any(|l| l.starts_with(&format!("{variable}="))),
            ".env.example lists {variable}"
        );
    }
}

#[test]
fn secrets_stay_out_of_the_image_and_off_command_lines_and_go_only_where_used() {
    // `COPY . .` in the Dockerfile takes what .dockerignore does not exclude.
    let ignored = read(".dockerignore");
    assert!(ignored.lines().any(|l| l.trim() == ".env"), "{ignored}");
    // The admin token goes only to the services with operator endpoints.
    let services = services();
    let with_token: BTreeSet<&str> = services
        .iter()
        .filter(|(_, service)| env_of(service).contains_key("ADMIN_TOKEN"))
        .map(|(name, _)| name.as_str())
        .collect();
    assert_eq!(
        with_token,
        BTreeSet::from([
            "analytics-forwarder",
            "console",
            "coupon-service",
            "data-platform-mock",
            "product-service"
        ])
    );
    // Grafana's admin password comes from .env, not its default.
    let grafana = env_of(&services["grafana"]);
    assert!(
        grafana["GF_SECURITY_ADMIN_PASSWORD"].starts_with("${GRAFANA_ADMIN_PASSWORD"),
        "{grafana:?}"
    );
    // SCRAM passwords reach kafka-configs.sh in a file, never in its arguments.
    let security = read("deploy/kafka-security.sh");
    assert!(!security.contains("--add-config \""), "{security}");
    assert!(security.contains("--add-config-file"), "{security}");
}

#[test]
fn only_the_order_service_is_published_beyond_the_loopback() {
    for (name, service) in services() {
        for port in service["ports"].as_sequence().into_iter().flatten() {
            let port = port.as_str().expect("short syntax");
            if name == "order-service" {
                assert_eq!(port, "8080:8080", "the storefront's entry");
            } else {
                assert!(
                    port.starts_with("127.0.0.1:"),
                    "{name} publishes {port} beyond the host's loopback"
                );
            }
        }
    }
}

#[test]
fn the_dockerfile_builds_and_ships_every_binary_compose_runs() {
    let dockerfile = read("deploy/Dockerfile");
    let services = services();
    let from_image: Vec<String> = services
        .values()
        .filter(|s| s["image"].as_str() == Some("order-saga:local"))
        .filter_map(command_of)
        .collect();
    // The services' binaries, and shopctl for the console.
    assert_eq!(from_image.len(), binaries().len() + 1);
    assert!(from_image.iter().any(|b| b == "shopctl"));
    for binary in from_image {
        assert!(
            root()
                .join(format!("crates/{binary}/src/main.rs"))
                .is_file(),
            "{binary} is a binary of the workspace"
        );
        assert!(
            dockerfile.contains(&format!("--bin {binary}")),
            "the Dockerfile builds {binary}"
        );
        assert!(
            dockerfile.contains(&format!("/app/target/release/{binary}")),
            "the Dockerfile ships {binary}"
        );
    }
    for stage in [
        "cargo chef prepare",
        "cargo chef cook",
        "FROM debian:bookworm-slim",
        "USER saga",
    ] {
        assert!(dockerfile.contains(stage), "the Dockerfile has `{stage}`");
    }
}

#[test]
fn kcat_is_a_tool_pointed_at_the_broker() {
    let kcat = &services()["kcat"];
    assert_eq!(kcat["profiles"][0].as_str(), Some("tools"));
    let entrypoint: Vec<&str> = kcat["entrypoint"]
        .as_sequence()
        .expect("entrypoint")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(entrypoint[..3], ["kcat", "-b", "kafka:9092"]);
    // As the read-only kcat user.
    assert!(entrypoint.contains(&"sasl.username=kcat"), "{entrypoint:?}");
    assert!(
        entrypoint.contains(&"security.protocol=SASL_PLAINTEXT"),
        "{entrypoint:?}"
    );
}

#[test]
fn prometheus_scrapes_every_replica_of_every_service_on_its_port() {
    let config: Value = yaml_serde::from_str(&read("deploy/prometheus.yml")).expect("valid YAML");
    let jobs = config["scrape_configs"].as_sequence().expect("scrape jobs");
    for binary in binaries() {
        let port = default_port(&binary.command);
        let job = jobs
            .iter()
            .find(|job| job["job_name"].as_str() == Some(binary.name))
            .unwrap_or_else(|| panic!("a scrape job for {}", binary.name));
        // DNS discovery finds every container of the service, so scaled replicas are scraped.
        let discovery = &job["dns_sd_configs"][0];
        let names: Vec<&str> = discovery["names"]
            .as_sequence()
            .expect("names")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(
            names,
            [binary.name],
            "{} is found by its service name",
            binary.name
        );
        assert_eq!(discovery["type"].as_str(), Some("A"));
        assert_eq!(
            discovery["port"].as_u64(),
            Some(u64::from(port)),
            "{}",
            binary.name
        );
    }
    let services = services();
    let mounted = |service: &str, what: &str| {
        services[service]["volumes"]
            .as_sequence()
            .expect("volumes")
            .iter()
            .filter_map(Value::as_str)
            .any(|v| v.starts_with(what))
    };
    assert!(mounted("prometheus", "./deploy/prometheus.yml:"));
    assert!(mounted("grafana", "./deploy/grafana/provisioning:"));
    assert!(mounted("grafana", "./deploy/grafana/dashboards:"));
}

#[test]
fn the_saga_dashboard_is_valid_and_queries_the_provisioned_prometheus() {
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/dashboards/saga.json")).expect("valid JSON");
    let datasource: Value = yaml_serde::from_str(&read(
        "deploy/grafana/provisioning/datasources/prometheus.yml",
    ))
    .expect("valid YAML");
    let uid = datasource["datasources"][0]["uid"].as_str().expect("a uid");
    let titles: Vec<&str> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .map(|p| p["title"].as_str().expect("a title"))
        .collect();
    for wanted in [
        "Orders per second by outcome",
        "Saga duration p50 and p99",
        "Consumer lag",
        "Outbox backlog",
        "Dead letters",
        "Data platform breaker",
    ] {
        assert!(titles.contains(&wanted), "a panel {wanted}: {titles:?}");
    }
    for panel in dashboard["panels"].as_array().expect("panels") {
        assert_eq!(
            panel["datasource"]["uid"].as_str(),
            Some(uid),
            "{}",
            panel["title"]
        );
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{} queries something", panel["title"]);
        for target in targets {
            assert!(target["expr"].as_str().is_some_and(|e| !e.is_empty()));
        }
    }
}

#[test]
fn every_service_sends_its_spans_to_the_compose_jaeger() {
    let services = services();
    let jaeger = &services["jaeger"];
    assert_eq!(
        env_of(jaeger)
            .get("COLLECTOR_OTLP_ENABLED")
            .map(String::as_str),
        Some("true")
    );
    for binary in binaries() {
        assert_eq!(
            env_of(&services[binary.name])
                .get("OTEL_EXPORTER_OTLP_ENDPOINT")
                .map(String::as_str),
            Some("http://jaeger:4318"),
            "{} exports its spans",
            binary.name
        );
    }
}

#[test]
fn the_console_watches_the_services_compose_runs_and_listens_on_loopback_only() {
    let services = services();
    let console = &services["console"];
    let command: Vec<&str> = console["command"]
        .as_sequence()
        .expect("a command")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(command, ["shopctl", "console"]);
    // Every variable it is given is one `shopctl console` reads.
    let cli = <shopctl::Cli as clap::CommandFactory>::command();
    let subcommand = cli.find_subcommand("console").expect("shopctl console");
    let understood: BTreeSet<String> = cli
        .get_arguments()
        .chain(subcommand.get_arguments())
        .filter_map(|a| a.get_env().and_then(|e| e.to_str()).map(str::to_owned))
        .chain(LOGGING.iter().map(|v| (*v).to_owned()))
        .collect();
    let given = env_of(console);
    for name in given.keys() {
        assert!(
            understood.contains(name),
            "the console is given {name}, which it does not read"
        );
    }
    // It finds each service at the name and port compose gives it.
    for (variable, service) in [
        ("ORDER_SERVICE_URL", "order-service"),
        ("PRODUCT_SERVICE_URL", "product-service"),
        ("COUPON_SERVICE_URL", "coupon-service"),
        ("ANALYTICS_FORWARDER_URL", "analytics-forwarder"),
    ] {
        let port = port_of(&env_of(&services[service])["HTTP_ADDR"]);
        assert_eq!(
            given.get(variable).map(String::as_str),
            Some(format!("http://{service}:{port}").as_str()),
            "the console reaches {service}"
        );
    }
    assert_eq!(
        given.get("KAFKA_BROKERS").map(String::as_str),
        Some("kafka:9092")
    );
    assert_eq!(
        given.get("HTTP_ADDR").map(String::as_str),
        Some("0.0.0.0:8088")
    );
    let published: Vec<&str> = console["ports"]
        .as_sequence()
        .expect("ports")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        published,
        ["127.0.0.1:8088:8088"],
        "the console is on the host's loopback only"
    );
    let check: Vec<&str> = console["healthcheck"]["test"]
        .as_sequence()
        .expect("a health check")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        check.contains(&"http://127.0.0.1:8088/health/ready"),
        "{check:?}"
    );
}

/// `allow <principal> <operation> <type> <name> [prefixed]` lines of deploy/kafka-security.sh.
fn acls() -> BTreeSet<(String, String, String, String)> {
    read("deploy/kafka-security.sh")
        .lines()
        .filter_map(|line| line.strip_prefix("allow "))
        .map(|rest| {
            let words: Vec<String> = rest
                .split_whitespace()
                .map(|w| w.trim_matches('\'').to_owned())
                .collect();
            assert!(words.len() >= 4, "allow {rest}");
            (
                words[0].clone(),
                words[1].clone(),
                words[2].clone(),
                words[3].clone(),
            )
        })
        .collect()
}

#[test]
fn each_service_may_write_only_what_it_produces_and_read_only_what_it_consumes() {
    let acls = acls();
    for flow in contract::topics::FLOWS {
        let service = flow.service.name();
        let mut writes: BTreeSet<String> = flow.produces.iter().map(|t| t.to_string()).collect();
        writes.insert(contract::topics::dlq_topic(service));
        let reads: BTreeSet<String> = flow.consumes.iter().map(|t| t.to_string()).collect();
        let granted = |operation: &str, kind: &str| -> BTreeSet<String> {
            acls.iter()
                .filter(|(p, o, t, _)| p == service && o == operation && t == kind)
                .map(|(_, _, _, name)| name.clone())
                .collect()
        };
        assert_eq!(granted("Write", "topic"), writes, "{service} writes");
        assert_eq!(granted("Read", "topic"), reads, "{service} reads");
        assert_eq!(
            granted("Read", "group"),
            BTreeSet::from([service.to_owned()]),
            "{service}'s own group"
        );
        let others: Vec<_> = acls
            .iter()
            .filter(|(p, o, _, _)| {
                p == service && !["Write", "Read", "IdempotentWrite"].contains(&o.as_str())
            })
            .collect();
        assert!(others.is_empty(), "{service} is granted more: {others:?}");
        // The service is that user in compose, and the broker's password for it is its own.
        let env = env_of(&services()[service]);
        assert_eq!(
            env.get("KAFKA_SASL_USERNAME").map(String::as_str),
            Some(service)
        );
        assert_eq!(
            env.get("KAFKA_SECURITY_PROTOCOL").map(String::as_str),
            Some("sasl_plaintext")
        );
        let password = env.get("KAFKA_SASL_PASSWORD").expect("a password");
        let variable = format!(
            "{}_KAFKA_PASSWORD",
            service.to_uppercase().replace('-', "_")
        );
        assert_eq!(password, &format!("${{{variable}}}"));
        assert!(
            read("deploy/kafka-security.sh").contains(&format!("user {service} \"${variable}\"")),
            "kafka-security.sh creates {service} with {variable}"
        );
    }
    // kcat reads, and nothing else.
    let kcat: Vec<_> = acls.iter().filter(|(p, _, _, _)| p == "kcat").collect();
    assert!(
        !kcat.is_empty() && kcat.iter().all(|(_, o, _, _)| o == "Read"),
        "{kcat:?}"
    );
    assert!(
        kcat.iter()
            .all(|(_, _, t, n)| t == "topic" || n.starts_with("kcat-")),
        "kcat reads only in groups of its own: {kcat:?}"
    );
}

#[test]
fn kafka_allows_nothing_an_acl_does_not_and_listens_on_the_loopback_for_the_host() {
    let services = services();
    let kafka = env_of(&services["kafka"]);
    assert_eq!(
        kafka.get("KAFKA_AUTHORIZER_CLASS_NAME").map(String::as_str),
        Some("org.apache.kafka.metadata.authorizer.StandardAuthorizer")
    );
    assert_eq!(
        kafka
            .get("KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND")
            .map(String::as_str),
        Some("false")
    );
    let map = &kafka["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"];
    assert!(
        map.contains("INTERNAL:SASL_PLAINTEXT") && map.contains("EXTERNAL:SASL_PLAINTEXT"),
        "{map}"
    );
    // The PLAINTEXT listeners bind to the container's loopback only.
    for listener in kafka["KAFKA_LISTENERS"].split(',') {
        let (name, _) = listener.split_once("://").expect("NAME://host:port");
        if map.contains(&format!("{name}:PLAINTEXT")) {
            assert!(
                listener.contains("://127.0.0.1:"),
                "{listener} is PLAINTEXT beyond the loopback"
            );
        }
    }
    assert_eq!(
        services["kafka-init"]["network_mode"].as_str(),
        Some("service:kafka"),
        "kafka-init reaches the loopback listener from the broker's network"
    );
}

#[test]
fn the_kafka_node_registers_with_its_controller_where_the_controller_listens() {
    // In KRaft combined mode the broker half reaches its controller at the voter's address:
    // a voter naming an address the controller does not listen on stops the broker at start
    // ("unable to register with the controller quorum").
    let kafka = env_of(&services()["kafka"]);
    let voters = &kafka["KAFKA_CONTROLLER_QUORUM_VOTERS"];
    let (_, voter) = voters.split_once('@').expect("id@host:port");
    let (voter_host, voter_port) = voter.rsplit_once(':').expect("host:port");
    let controller = kafka["KAFKA_LISTENERS"]
        .split(',')
        .find_map(|l| l.strip_prefix("CONTROLLER://"))
        .expect("a CONTROLLER listener");
    let (bind_host, bind_port) = controller.rsplit_once(':').expect("host:port");
    assert_eq!(voter_port, bind_port, "{voters} vs {controller}");
    let loopback = |host: &str| host == "127.0.0.1" || host == "localhost";
    if loopback(bind_host) {
        assert!(
            loopback(voter_host),
            "the controller listens on the loopback, but the voter is {voter}"
        );
    }
}

#[test]
fn the_kafka_the_tests_run_is_the_version_compose_deploys() {
    let version = kafka_node::compose_version();
    let services = services();
    for name in ["kafka", "kafka-init"] {
        assert_eq!(
            services[name]["image"].as_str(),
            Some(format!("apache/kafka:{version}").as_str())
        );
    }
    let install = kafka_node::Install::find(&root())
        .expect("Apache Kafka installed by scripts/install-kafka.sh (scripts/test.sh runs it)");
    let jar = install.home.join(format!("libs/kafka_2.13-{version}.jar"));
    assert!(jar.is_file(), "{} is the broker's jar", jar.display());
    let script = read("scripts/install-kafka.sh");
    assert!(
        script.contains("docker-compose.yml") && script.contains("image: apache/kafka"),
        "install-kafka.sh takes its version from the compose file"
    );
}
