//! `shopctl chaos` at a small size, run in-process: orders under every fault, then the
//! `Report` must show every invariant kept, every fault injected, and the system live.
//!
//! The run with a database restart among its faults restarts a Postgres server, so it lives
//! in its own test target, `chaos_postgres`, which `cargo test` leaves out and
//! `scripts/test.sh` runs alone at the end.

mod support;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_chaos_run_on_sqlite_keeps_every_invariant_and_stays_live() {
    let report = shopctl::chaos::run(support::small_run(&[]))
        .await
        .expect("the run completes");
    support::assert_sound(&report, support::FAULTS);
}
