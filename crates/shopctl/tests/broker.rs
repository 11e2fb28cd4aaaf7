//! The local broker's storage (broker/PATCHES.md): a fetch must not get slower as the topics
//! grow. What made it slower was the plan SQLite chose: every header lookup scanned the whole
//! `header` table, and every fetch read the whole backlog. So this checks the plans SQLite
//! chooses for Tansu's own fetch statements, on the database a running broker created, and
//! that the fetch reads a bounded number of records: a plan, unlike a timing, does not depend
//! on how busy the machine is. BENCHMARKS.md has the timings.

use sqlx::{Connection, Row};

mod local;

/// The statements as the broker runs them, from the vendored sources it is built from.
const HEADER_FETCH: &str =
    include_str!("../../../broker/vendor/tansu-storage/src/sql/header_fetch.sql");
const RECORD_FETCH: &str =
    include_str!("../../../broker/vendor/tansu-storage/src/sql/record_fetch.sql");

/// SQLite's plan for `sql`, one step per line, with every parameter NULL.
async fn plan(conn: &mut sqlx::SqliteConnection, sql: &str, parameters: usize) -> Vec<String> {
    let statement: String = sql
        .lines()
        .filter(|line| !line.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    let text = format!(
        "EXPLAIN QUERY PLAN {}",
        statement.trim().trim_end_matches(';')
    );
    let mut query = sqlx::query(&text);
    for _ in 0..parameters {
        query = query.bind(Option::<i64>::None);
    }
    query
        .fetch_all(&mut *conn)
        .await
        .expect("a plan")
        .iter()
        .map(|row| row.get::<String, _>("detail"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fetch_searches_indexes_and_reads_a_bounded_number_of_records() {
    let stack = local::start_stack("broker-plan").await;
    let db = stack.data_dir().join("tansu/tansu.db");
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=ro", db.display()))
        .await
        .expect("the broker's database");

    let headers = plan(&mut conn, HEADER_FETCH, 4).await;
    assert!(
        headers
            .iter()
            .any(|step| step.starts_with("SEARCH h USING INDEX header_topition_offset")),
        "a record's headers are found through the index: {headers:#?}"
    );
    let records = plan(&mut conn, RECORD_FETCH, 6).await;
    for steps in [&headers, &records] {
        assert!(
            !steps
                .iter()
                .any(|step| ["SCAN h", "SCAN r", "SCAN header", "SCAN record"]
                    .iter()
                    .any(|scan| step == scan || step.starts_with(&format!("{scan} ")))),
            "no fetch scans a whole table of records or headers: {steps:#?}"
        );
    }
    assert!(
        records
            .iter()
            .any(|step| step.starts_with("SEARCH r USING") && step.contains("offset_id>")),
        "records are read from the fetch offset on, through the primary key: {records:#?}"
    );
    let candidates = RECORD_FETCH
        .to_lowercase()
        .split("with candidates as")
        .nth(1)
        .and_then(|rest| rest.split("),").next().map(str::to_owned))
        .expect("the candidates of a fetch");
    assert!(
        candidates.contains("order by r.offset_id") && candidates.contains("limit 2048"),
        "a fetch reads at most 2,048 records, whatever the backlog"
    );
}
