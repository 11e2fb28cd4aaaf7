//! Counting the transactions each SQLite file commits, for `sqlite_commits_total`.
//!
//! Postgres counts what every database commits (`pg_stat_database.xact_commit`); SQLite counts
//! nothing, so the process counts for it. Services reach SQLite through sqlx's `Any` driver,
//! which never hands out the SQLite connection underneath, so the counting is set up in SQLite
//! itself: an automatic extension, which SQLite runs for every connection the process opens,
//! gives each new connection a commit hook that adds one to the counter of the connection's
//! file. Every committed write transaction is counted, an explicit one or a single statement's;
//! a transaction that wrote nothing is not (SQLite calls the hook for writes only).
//!
//! The counters are kept per file (by its canonical path), not per process, so that tests
//! that run several services in one process count each service's database apart.

// SQLite's hooks are C callbacks: registering them and reading their arguments is unsafe code,
// kept to this module, each block with why it is sound.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::ffi::{CStr, c_char, c_int, c_void};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, Once};

use libsqlite3_sys::{
    SQLITE_OK, sqlite3, sqlite3_api_routines, sqlite3_auto_extension, sqlite3_commit_hook,
    sqlite3_db_filename,
};

use crate::metrics::Counter;

/// Each SQLite file's counter, by canonical path. A counter lives as long as the process: the
/// commit hooks of its connections point at it.
static COUNTERS: Mutex<Option<HashMap<PathBuf, &'static Counter>>> = Mutex::new(None);

static INSTALL: Once = Once::new();

/// Has SQLite give every connection opened from now on a commit hook counting its file's
/// commits. Call it before the first connection is opened; later calls do nothing.
pub fn install() {
    INSTALL.call_once(|| {
        // SAFETY: `on_open` has the signature SQLite calls an automatic extension with, and
        // it stays valid for the whole process (it is a function, not a closure).
        let rc = unsafe { sqlite3_auto_extension(Some(on_open)) };
        if rc != SQLITE_OK {
            tracing::warn!(
                code = rc,
                "SQLite refused the commit counter; commits go uncounted"
            );
        }
    });
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
        .get_or_insert_with(HashMap::new)
        .entry(file)
        .or_insert_with(|| Box::leak(Box::new(Counter::default())))
}

/// SQLite's automatic extension: gives the new connection `db` a commit hook with its file's
/// counter. Connections to no file (temporary or in-memory databases) are left alone.
unsafe extern "C" fn on_open(
    db: *mut sqlite3,
    _error: *mut *mut c_char,
    _api: *const sqlite3_api_routines,
) -> c_int {
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
}
