//! The chaos run on Postgres with a database restart among its faults. It restarts the
//! Postgres server `CHAOS_DB_RESTART_COMMAND` names, so `cargo test` leaves this target out
//! (`test = false` in Cargo.toml) and `scripts/test.sh` runs it alone, last:
//! `cargo test --workspace --test chaos_postgres` with `CHAOS_POSTGRES_URL` and
//! `CHAOS_DB_RESTART_COMMAND` set.

mod support;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_chaos_run_on_postgres_survives_a_database_restart() {
    let postgres = std::env::var("CHAOS_POSTGRES_URL").expect("CHAOS_POSTGRES_URL is set");
    let restart =
        std::env::var("CHAOS_DB_RESTART_COMMAND").expect("CHAOS_DB_RESTART_COMMAND is set");
    let args = support::small_run(&["--postgres", &postgres, "--db-restart-command", &restart]);
    let report = shopctl::chaos::run(args).await.expect("the run completes");
    let mut faults = support::FAULTS.to_vec();
    faults.push("restart database");
    support::assert_sound(&report, &faults);
}
