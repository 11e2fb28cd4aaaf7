//! What SQLite calls back into: counting the transactions each file commits, for
//! `sqlite_commits_total`, and waiting for a lock in short steps.
//!
//! Services reach SQLite through sqlx's `Any` driver, which never hands out the SQLite
//! connection underneath, so both are set up in SQLite itself: an automatic extension, which
//! SQLite runs for every connection the process opens, gives each new connection
//!
//! - a commit hook that adds one to the counter of the connection's file. Postgres counts
//!   what every database commits (`pg_stat_database.xact_commit`); SQLite counts nothing.
//!   Every committed write transaction is counted, an explicit one or a single statement's;
//!   a transaction that wrote nothing is not (SQLite calls the hook for writes only). The
//!   counters are kept per file (by its canonical path), not per process, so that tests
//!   that run several services in one process count each service's database apart.
//! - a function, [`WAIT_IN_STEPS`], that the pool runs last when it sets a connection up, and
//!   that replaces the connection's busy handler. A service's connections (two pools of them)
//!   take turns at the one write lock of its file. SQLite's own handler (`busy_timeout`)
//!   sleeps 1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50 and then 100 ms between attempts, so a
//!   writer that finds the lock taken sleeps on long after it was freed: at 100 orders/s the
//!   order service's connections slept about 2.7 s a second in it, in 8.5 ms naps. Ours tries
//!   again after 50 µs, then 100, 150, … up to a millisecond, and gives up after about ten
//!   seconds as `busy_timeout` did. It has to be installed after sqlx's and the pool's own
//!   `busy_timeout`, each of which replaces the handler, hence the function.

// SQLite's hooks are C callbacks: registering them and reading their arguments is unsafe code,
// kept to this module, each block with why it is sound.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::ffi::{CStr, c_char, c_int, c_void};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{LazyLock, Mutex, Once};
use std::time::Duration;

use libsqlite3_sys::{
    SQLITE_OK, SQLITE_UTF8, sqlite3, sqlite3_api_routines, sqlite3_auto_extension,
    sqlite3_busy_handler, sqlite3_commit_hook, sqlite3_context, sqlite3_context_db_handle,
    sqlite3_create_function_v2, sqlite3_db_filename, sqlite3_result_int, sqlite3_value,
};

use crate::metrics::Counter;

/// Each SQLite file's counter, by canonical path. A counter lives as long as the process: the
/// commit hooks of its connections point at it.
static COUNTERS: LazyLock<Mutex<HashMap<PathBuf, &'static Counter>>> =
    LazyLock::new(Mutex::default);

static INSTALL: Once = Once::new();
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// The statement that gives a connection the busy handler of this module, to run once the
/// connection's `busy_timeout` is set (which replaces any handler).
pub const WAIT_IN_STEPS: &str = "SELECT kit_wait_in_steps()";

/// Has SQLite give every connection opened from now on a commit hook counting its file's
/// commits, and the function [`WAIT_IN_STEPS`] calls. Call it before the first connection is
/// opened; later calls do nothing. `false` if SQLite refused: commits then go uncounted, and
/// connections keep SQLite's own busy handler.
pub fn install() -> bool {
    INSTALL.call_once(|| {
        // SAFETY: `on_open` has the signature SQLite calls an automatic extension with, and
        // it stays valid for the whole process (it is a function, not a closure).
        let rc = unsafe { sqlite3_auto_extension(Some(on_open)) };
        if rc == SQLITE_OK {
            INSTALLED.store(true, Ordering::SeqCst);
        } else {
            tracing::warn!(code = rc, "SQLite refused our hooks; commits go uncounted");
        }
    });
    INSTALLED.load(Ordering::SeqCst)
}

/// The commit counter of the SQLite file at `path`, which must exist (its connections are
/// opened by then). The same counter for every path that names the same file.
pub fn counter(path: &Path) -> std::io::Result<Counter> {
    Ok(counter_of(std::fs::canonicalize(path)?).clone())
}

fn counter_of(file: PathBuf) -> &'static Counter {
    let mut counters = COUNTERS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    counters
        .entry(file)
        .or_insert_with(|| Box::leak(Box::new(Counter::default())))
}

/// SQLite's automatic extension: gives the new connection `db` the function [`WAIT_IN_STEPS`]
/// calls and a commit hook with its file's counter. Connections to no file (temporary or
/// in-memory databases) get no commit hook.
unsafe extern "C" fn on_open(
    db: *mut sqlite3,
    _error: *mut *mut c_char,
    _api: *const sqlite3_api_routines,
) -> c_int {
    // SAFETY: `db` is the connection being opened; the name is NUL-terminated and
    // `wait_in_steps` has the signature of a scalar function of no arguments.
    let rc = unsafe {
        sqlite3_create_function_v2(
            db,
            c"kit_wait_in_steps".as_ptr(),
            0,
            SQLITE_UTF8,
            std::ptr::null_mut(),
            Some(wait_in_steps),
            None,
            None,
            None,
        )
    };
    if rc != SQLITE_OK {
        return rc;
    }
    // SAFETY: `db` is the connection being opened; SQLite returns its main database's file
    // name, a string it owns for the connection's life, or null or "" when there is no file.
    let name = unsafe { sqlite3_db_filename(db, c"main".as_ptr()) };
    if name.is_null() {
        return SQLITE_OK;
    }
    // SAFETY: not null, and NUL-terminated by SQLite.
    let name = unsafe { CStr::from_ptr(name) };
    let Some(file) = name
        .to_str()
        .ok()
        .and_then(|name| std::fs::canonicalize(name).ok())
    else {
        return SQLITE_OK;
    };
    let counter: *const Counter = counter_of(file);
    // SAFETY: the counter is leaked, so it outlives the connection, and `on_commit` only
    // reads it through a shared reference (the counter is atomic).
    unsafe { sqlite3_commit_hook(db, Some(on_commit), counter.cast_mut().cast::<c_void>()) };
    SQLITE_OK
}

/// The function [`WAIT_IN_STEPS`] calls: replaces its connection's busy handler with
/// [`on_busy`], and returns 1.
unsafe extern "C" fn wait_in_steps(
    context: *mut sqlite3_context,
    _argc: c_int,
    _argv: *mut *mut sqlite3_value,
) {
    // SAFETY: SQLite calls this with the context of a running statement, whose connection
    // `sqlite3_context_db_handle` returns; the statement runs on that connection's thread,
    // which holds its lock, so setting its handler here is setting it as `busy_timeout` does.
    unsafe {
        let db = sqlite3_context_db_handle(context);
        sqlite3_busy_handler(db, Some(on_busy), std::ptr::null_mut());
        sqlite3_result_int(context, 1);
    }
}

/// The longest nap between two attempts at a lock.
const LONGEST_NAP: Duration = Duration::from_millis(1);
/// The first nap; each next one is longer by as much, up to [`LONGEST_NAP`].
const FIRST_NAP: Duration = Duration::from_micros(50);
/// Attempts after which a connection gives the lock up (`SQLITE_BUSY`): about ten seconds of
/// naps, as the `busy_timeout` the pool sets.
const MOST_ATTEMPTS: c_int = 10_000;

/// SQLite's busy handler: naps [`nap`] long and tries again, or gives up after
/// [`MOST_ATTEMPTS`] (by returning 0).
unsafe extern "C" fn on_busy(_arg: *mut c_void, attempts: c_int) -> c_int {
    if attempts >= MOST_ATTEMPTS {
        return 0;
    }
    std::thread::sleep(nap(attempts));
    1
}

/// How long to nap before the attempt after `attempts` failed ones.
fn nap(attempts: c_int) -> Duration {
    let steps = u32::try_from(attempts).unwrap_or(0).saturating_add(1);
    FIRST_NAP.saturating_mul(steps).min(LONGEST_NAP)
}

/// SQLite's commit hook: counts the commit and lets it go ahead (by returning 0).
unsafe extern "C" fn on_commit(counter: *mut c_void) -> c_int {
    // SAFETY: `on_open` registered a pointer to a leaked `Counter`.
    let counter = unsafe { &*counter.cast_const().cast::<Counter>() };
    counter.inc();
    0
}

#[cfg(test)]
mod tests {
    use super::super::{DatabaseSettings, begin, connect_and_migrate, sqlite_commits};
    use super::*;

    /// A pool on a new SQLite file in a folder of its own, and that file's commit counter.
    async fn database() -> (crate::db::Db, crate::metrics::Counter, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("kit-commits-{}", uuid::Uuid::new_v4()));
        let settings = DatabaseSettings::new(format!("sqlite://{}/shop.db", dir.display()));
        let db = connect_and_migrate("commits-test", &settings, &[])
            .await
            .expect("connect");
        let counter = sqlite_commits("commits-test", &settings)
            .expect("counter")
            .expect("a SQLite file has one");
        (db, counter, dir)
    }

    #[tokio::test]
    async fn every_committed_write_is_counted_once_and_reads_and_rollbacks_not_at_all() {
        let (db, commits, dir) = database().await;
        let (other, other_commits, other_dir) = database().await;
        let start = commits.get();

        sqlx::query("CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT)")
            .execute(&db)
            .await
            .unwrap();
        sqlx::query("INSERT INTO item (name) VALUES ('mug')")
            .execute(&db)
            .await
            .unwrap();
        assert_eq!(commits.get() - start, 2, "two single statements");

        let _: Vec<(i64,)> = sqlx::query_as("SELECT id FROM item")
            .fetch_all(&db)
            .await
            .unwrap();
        assert_eq!(commits.get() - start, 2, "a read commits nothing");

        let mut tx = begin(&db).await.unwrap();
        for name in ["tea", "lamp"] {
            sqlx::query("INSERT INTO item (name) VALUES ($1)")
                .bind(name)
                .execute(&mut *tx)
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
        assert_eq!(commits.get() - start, 3, "one transaction of two writes");

        let mut tx = begin(&db).await.unwrap();
        sqlx::query("INSERT INTO item (name) VALUES ('cup')")
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.rollback().await.unwrap();
        assert_eq!(commits.get() - start, 3, "a rollback");

        let other_start = other_commits.get();
        sqlx::query("CREATE TABLE elsewhere (id INTEGER)")
            .execute(&other)
            .await
            .unwrap();
        assert_eq!(other_commits.get() - other_start, 1, "the other file's own");
        assert_eq!(
            commits.get() - start,
            3,
            "another file's commit is not this one's"
        );

        db.close().await;
        other.close().await;
        let _ = std::fs::remove_dir_all(dir);
        let _ = std::fs::remove_dir_all(other_dir);
    }

    #[test]
    fn naps_start_short_and_grow_to_a_millisecond() {
        assert_eq!(nap(0), Duration::from_micros(50));
        assert_eq!(nap(1), Duration::from_micros(100));
        assert_eq!(nap(19), LONGEST_NAP);
        assert_eq!(nap(5_000), LONGEST_NAP);
        let most: Duration = (0..MOST_ATTEMPTS).map(nap).sum();
        assert!(
            (Duration::from_secs(9)..Duration::from_secs(11)).contains(&most),
            "gives up after about ten seconds of naps: {most:?}"
        );
    }

    #[tokio::test]
    async fn a_writer_waits_for_anothers_lock_with_our_handler_and_then_gets_it() {
        let (db, _, dir) = database().await;
        sqlx::query("CREATE TABLE item (name TEXT)")
            .execute(&db)
            .await
            .unwrap();

        let mut first = begin(&db).await.unwrap();
        // SQLite reports the busy timeout as 0 once a handler of one's own replaced it.
        let (timeout,): (i64,) = sqlx::query_as("PRAGMA busy_timeout")
            .fetch_one(&mut *first)
            .await
            .unwrap();
        assert_eq!(timeout, 0, "the connection waits with our handler");
        sqlx::query("INSERT INTO item (name) VALUES ('first')")
            .execute(&mut *first)
            .await
            .unwrap();

        let second = tokio::spawn({
            let db = db.clone();
            async move {
                let mut tx = begin(&db).await?;
                sqlx::query("INSERT INTO item (name) VALUES ('second')")
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await
            }
        });
        first.commit().await.unwrap();
        second
            .await
            .unwrap()
            .expect("the second writer got the lock");

        let names: Vec<(String,)> = sqlx::query_as("SELECT name FROM item ORDER BY name")
            .fetch_all(&db)
            .await
            .unwrap();
        assert_eq!(names, [("first".into(),), ("second".into(),)]);
        db.close().await;
        let _ = std::fs::remove_dir_all(dir);
    }
}
