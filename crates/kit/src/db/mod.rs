//! The database: connecting, migrating, and the few helpers every store uses.
//!
//! Services talk to their database through sqlx's `Any` driver, so that one set of queries
//! serves Postgres and SQLite alike. That keeps the SQL plain: integer and text columns,
//! `$1` placeholders, `ON CONFLICT … DO NOTHING`, `RETURNING`, and times as milliseconds since
//! the Unix epoch passed in from Rust. What must differ between the two lives here and in the
//! migrations, one folder per backend:
//!
//! - SQLite files are opened in WAL mode (readers never wait for the writer) with a busy
//!   timeout, and their folder is created if missing.
//! - [`begin`] starts SQLite transactions with `BEGIN IMMEDIATE`, taking the write lock up
//!   front: a transaction that reads and then writes can then never fail on a lock upgrade.
//!   On Postgres it is a plain `BEGIN`, and row locks order concurrent writers.
//! - SQLite counts no commits, so [`sqlite`] counts them for it ([`sqlite_commits`]);
//!   Postgres counts its own. It also has each connection wait for the file's write lock in
//!   short steps rather than SQLite's long naps.

use std::borrow::Cow;
use std::future::Future;
use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::migrate::{Migration, Migrator};

mod sqlite;

/// A pool of connections to a service's own database.
pub type Db = sqlx::AnyPool;
/// A transaction on a service's own database.
pub type Tx = sqlx::Transaction<'static, sqlx::Any>;
/// One connection, as handed to code that runs inside a caller's transaction.
pub type Conn = sqlx::AnyConnection;

/// Where a service's database is and how many connections it may hold.
#[derive(Debug, Clone, clap::Args)]
pub struct DatabaseSettings {
    /// `postgres://user:password@host:port/db`, or `sqlite://path/to/file.db` (created, with
    /// its folder, if missing). Default: `sqlite://data/<service>.db`.
    #[arg(long = "database-url", env = "DATABASE_URL")]
    pub url: Option<String>,
    /// Most connections the background workers (consumers, relay, timers) open to the
    /// database.
    #[arg(
        long = "database-max-connections",
        env = "DATABASE_MAX_CONNECTIONS",
        default_value_t = 10
    )]
    pub max_connections: u32,
    /// Most connections the HTTP handlers open to the database, in a pool of their own so
    /// that a flood of requests cannot starve the saga's consumers, nor a consumer backlog
    /// the requests.
    #[arg(
        long = "database-http-max-connections",
        env = "DATABASE_HTTP_MAX_CONNECTIONS",
        default_value_t = 8
    )]
    pub http_max_connections: u32,
    /// Longest one statement may run on Postgres (`statement_timeout`), and, twice over,
    /// longest a transaction may sit idle (`idle_in_transaction_session_timeout`), in
    /// milliseconds. Every unit of database work (an event's transaction, a relay round, a
    /// sweep) is also given up by the client after this plus [`CLIENT_GRACE`]: a connection
    /// whose server vanished without closing it can hang no worker forever.
    #[arg(
        long = "database-statement-timeout-ms",
        env = "DATABASE_STATEMENT_TIMEOUT_MS",
        default_value_t = 30_000,
        value_parser = clap::value_parser!(u64).range(100..)
    )]
    pub statement_timeout_ms: u64,
    /// When a SQLite commit reaches the disk (`PRAGMA synchronous`): `full` syncs the
    /// write-ahead log at every commit; `normal` only at checkpoints.
    #[arg(
        long = "database-sqlite-synchronous",
        env = "DATABASE_SQLITE_SYNCHRONOUS",
        value_enum,
        default_value_t = SqliteSynchronous::Full
    )]
    pub sqlite_synchronous: SqliteSynchronous,
}

/// SQLite's `synchronous` setting in WAL mode: what a commit waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SqliteSynchronous {
    /// Every commit waits until the log is on the disk: nothing committed is lost, not even to
    /// a power cut.
    Full,
    /// A commit waits for the operating system only; the log reaches the disk at each
    /// checkpoint. Nothing committed is lost when a process is killed; a power cut or an
    /// operating system crash can take back the last commits.
    Normal,
}

impl SqliteSynchronous {
    fn pragma(self) -> &'static str {
        match self {
            SqliteSynchronous::Full => "PRAGMA synchronous = FULL",
            SqliteSynchronous::Normal => "PRAGMA synchronous = NORMAL",
        }
    }
}

/// How much longer than the statement timeout the client waits for a unit of database work
/// before it gives the work up (and its connection with it).
pub const CLIENT_GRACE: Duration = Duration::from_secs(5);

/// TCP keepalive of a Postgres connection, server side (`tcp_keepalives_idle`, `_interval`,
/// `_count`): a client that vanished is found out in about a minute. (sqlx 0.8 sets no
/// keepalive on its own side of the socket; the client's side is the time bound on each unit
/// of work, [`DatabaseSettings::work_timeout`].)
const KEEPALIVE: [(&str, u32); 3] = [
    ("tcp_keepalives_idle", 30),
    ("tcp_keepalives_interval", 10),
    ("tcp_keepalives_count", 3),
];

/// The bound on one unit of database work in this process, set by the first pool opened.
static WORK_TIMEOUT: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();

/// Longest the client waits for one unit of database work (an event's transaction, a sweep):
/// the statement timeout of the first pool this process opened, plus [`CLIENT_GRACE`]. Work
/// that takes longer is given up as a transient failure and tried again, so that a connection
/// whose server vanished without closing it hangs no worker forever.
pub fn work_timeout() -> Duration {
    *WORK_TIMEOUT.get_or_init(|| crate::defaults::defaults::<DatabaseSettings>().work_timeout())
}

/// Runs `work` within [`work_timeout`]; `None` if it took longer (it is then dropped, and the
/// connection it held with it).
pub async fn bounded<T>(work: impl Future<Output = T>) -> Option<T> {
    tokio::time::timeout(work_timeout(), work).await.ok()
}

impl DatabaseSettings {
    /// Longest the client waits for one unit of database work.
    pub fn work_timeout(&self) -> Duration {
        Duration::from_millis(self.statement_timeout_ms) + CLIENT_GRACE
    }

    /// Settings for a database URL with the default pool size.
    pub fn new(url: impl Into<String>) -> Self {
        DatabaseSettings {
            url: Some(url.into()),
            ..crate::defaults::defaults()
        }
    }
}

/// Which database engine a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

impl Backend {
    /// The engine a connection talks to, for code that runs inside a caller's transaction.
    pub fn of_conn(conn: &Conn) -> Self {
        if conn.backend_name() == "SQLite" {
            Backend::Sqlite
        } else {
            Backend::Postgres
        }
    }

    /// The backend a database URL names, from its scheme.
    pub fn of_url(url: &str) -> Result<Self, DbError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else {
            Err(DbError::UnsupportedUrl)
        }
    }
}

/// What can go wrong setting up a database.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("the database URL must start with postgres:// or sqlite:")]
    UnsupportedUrl,
    #[error("could not connect to the database")]
    Connect(#[source] sqlx::Error),
    #[error("an in-memory SQLite database cannot be shared by a pool; give it a file path")]
    MemorySqlite,
    #[error("could not create the folder of the SQLite file")]
    Folder(#[source] std::io::Error),
    #[error("could not find the SQLite file to count its commits")]
    SqliteFile(#[source] std::io::Error),
    #[error("could not migrate the database")]
    Migrate(#[source] sqlx::migrate::MigrateError),
}

/// The migrations of one service, one migrator per backend: see [`crate::migrations!`].
#[derive(Debug)]
pub struct Migrations {
    pub postgres: Migrator,
    pub sqlite: Migrator,
}

/// Connects to the database (`sqlite://data/<service>.db` when no URL is set), then applies
/// every set of `migrations` (a runtime's own tables and the service's, say) in version order.
pub async fn connect_and_migrate(
    service_name: &str,
    settings: &DatabaseSettings,
    migrations: &[&Migrations],
) -> Result<Db, DbError> {
    let (url, backend) = resolve_url(service_name, settings)?;
    let pool = open_pool(&url, backend, settings.max_connections, settings).await?;
    migrate(&pool, backend, migrations).await?;
    Ok(pool)
}

/// A second pool on the same database, for the HTTP handlers, of
/// [`DatabaseSettings::http_max_connections`] connections. The database must already be
/// migrated by [`connect_and_migrate`], which also names the default SQLite file.
pub async fn connect_http_pool(
    service_name: &str,
    settings: &DatabaseSettings,
) -> Result<Db, DbError> {
    let (url, backend) = resolve_url(service_name, settings)?;
    open_pool(&url, backend, settings.http_max_connections, settings).await
}

/// The URL to connect to and its engine: the default SQLite file when none is set, with the
/// folder of a SQLite file created.
fn resolve_url(
    service_name: &str,
    settings: &DatabaseSettings,
) -> Result<(String, Backend), DbError> {
    let url = configured_url(service_name, settings);
    let backend = Backend::of_url(&url)?;
    sqlx::any::install_default_drivers();
    let url = match backend {
        Backend::Postgres => url,
        Backend::Sqlite => prepare_sqlite(&url)?,
    };
    Ok((url, backend))
}

/// The database URL as configured: `DATABASE_URL`, or the service's default SQLite file.
fn configured_url(service_name: &str, settings: &DatabaseSettings) -> String {
    settings
        .url
        .clone()
        .unwrap_or_else(|| format!("sqlite://data/{service_name}.db"))
}

/// A pool of at most `max_connections`, each connection set up for the engine: on Postgres
/// with the statement and idle-in-transaction timeouts and TCP keepalive.
async fn open_pool(
    url: &str,
    backend: Backend,
    max_connections: u32,
    settings: &DatabaseSettings,
) -> Result<Db, DbError> {
    let statement_ms = settings.statement_timeout_ms;
    let synchronous = settings.sqlite_synchronous;
    let _ = WORK_TIMEOUT.set(settings.work_timeout());
    let hooked = backend == Backend::Sqlite && sqlite::install();
    AnyPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        // sqlx pings a connection before handing it out, by default, to find a server that
        // went away. A SQLite connection has no server: it is a thread of this process with a
        // file open, and each ping is a round trip to that thread, one per unit of work (every
        // request, every batch of events, every relay round). A Postgres connection keeps the
        // ping, so that one dropped while idle is replaced rather than failing a request.
        .test_before_acquire(backend == Backend::Postgres)
        .after_connect(move |conn, _meta| {
            Box::pin(async move {
                if backend == Backend::Sqlite {
                    sqlx::query("PRAGMA journal_mode = WAL")
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query("PRAGMA busy_timeout = 10000")
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query("PRAGMA foreign_keys = ON")
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query(synchronous.pragma())
                        .execute(&mut *conn)
                        .await?;
                    // Last: `busy_timeout` above replaced any busy handler.
                    if hooked {
                        sqlx::query(sqlite::WAIT_IN_STEPS)
                            .execute(&mut *conn)
                            .await?;
                    }
                } else {
                    let idle_ms = statement_ms.saturating_mul(2);
                    let mut set = vec![
                        format!("SET statement_timeout = {statement_ms}"),
                        format!("SET idle_in_transaction_session_timeout = {idle_ms}"),
                    ];
                    set.extend(
                        KEEPALIVE
                            .iter()
                            .map(|(name, value)| format!("SET {name} = {value}")),
                    );
                    for statement in set {
                        sqlx::query(&statement).execute(&mut *conn).await?;
                    }
                }
                Ok(())
            })
        })
        .connect(url)
        .await
        .map_err(DbError::Connect)
}

/// The file path and the query of a SQLite URL.
fn sqlite_file(url: &str) -> (&str, &str) {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    rest.split_once('?').unwrap_or((rest, ""))
}

/// The counter of the transactions the service's SQLite file commits, once the database is
/// connected ([`connect_and_migrate`]), for the service's `sqlite_commits_total`; `None` on
/// Postgres, which counts its own commits (`pg_stat_database.xact_commit`).
pub fn sqlite_commits(
    service_name: &str,
    settings: &DatabaseSettings,
) -> Result<Option<crate::metrics::Counter>, DbError> {
    // Only the file's path: `connect_and_migrate` already made its folder and the file.
    let url = configured_url(service_name, settings);
    if Backend::of_url(&url)? != Backend::Sqlite {
        return Ok(None);
    }
    let (path, _) = sqlite_file(&url);
    sqlite::counter(std::path::Path::new(path))
        .map(Some)
        .map_err(DbError::SqliteFile)
}

/// Creates the folder of a SQLite file and asks for the file to be created if missing.
fn prepare_sqlite(url: &str) -> Result<String, DbError> {
    let (path, query) = sqlite_file(url);
    if path.is_empty() || path.starts_with(":memory:") {
        return Err(DbError::MemorySqlite);
    }
    if let Some(folder) = std::path::Path::new(path).parent()
        && !folder.as_os_str().is_empty()
    {
        std::fs::create_dir_all(folder).map_err(DbError::Folder)?;
    }
    let query = if query.split('&').any(|p| p.starts_with("mode=")) {
        query.to_owned()
    } else if query.is_empty() {
        "mode=rwc".to_owned()
    } else {
        format!("{query}&mode=rwc")
    };
    Ok(format!("sqlite://{path}?{query}"))
}

/// Starts a transaction: `BEGIN IMMEDIATE` on SQLite, so that the write lock is taken before
/// the first read, and `BEGIN` on Postgres.
pub async fn begin(db: &Db) -> Result<Tx, sqlx::Error> {
    if backend(db) == Backend::Sqlite {
        db.begin_with("BEGIN IMMEDIATE").await
    } else {
        db.begin().await
    }
}

/// How long a batch transaction waits for a row lock on Postgres before it gives up.
pub const BATCH_LOCK_TIMEOUT: &str = "50ms";

/// Starts the transaction of a batch of consumed events ([`begin`], and on Postgres a
/// `lock_timeout` of [`BATCH_LOCK_TIMEOUT`]). Batches of different partitions may take the
/// same rows in different orders; rather than wait for Postgres's deadlock check (one second
/// by default), a batch that waits for a lock fails fast, and the consumer handles its events
/// one at a time. SQLite has one writer and no row locks, so nothing changes there.
pub async fn begin_batch(db: &Db) -> Result<Tx, sqlx::Error> {
    let mut tx = begin(db).await?;
    if backend(db) == Backend::Postgres {
        sqlx::query(&format!("SET LOCAL lock_timeout = '{BATCH_LOCK_TIMEOUT}'"))
            .execute(&mut *tx)
            .await?;
    }
    Ok(tx)
}

/// The engine behind a pool.
pub fn backend(db: &Db) -> Backend {
    if db.connect_options().database_url.scheme() == "sqlite" {
        Backend::Sqlite
    } else {
        Backend::Postgres
    }
}

async fn migrate(pool: &Db, backend: Backend, sets: &[&Migrations]) -> Result<(), DbError> {
    let migrators: Vec<&Migrator> = sets
        .iter()
        .map(|set| match backend {
            Backend::Postgres => &set.postgres,
            Backend::Sqlite => &set.sqlite,
        })
        .collect();
    let mut all: Vec<Migration> = migrators
        .iter()
        .flat_map(|m| m.migrations.iter().cloned())
        .collect();
    all.sort_by_key(|m| m.version);
    let mut migrator = Migrator {
        migrations: Cow::Owned(all),
        ..Migrator::DEFAULT
    };
    // A database made by an earlier version may hold migrations of a set this program no
    // longer applies (the synchronous baseline once carried the runtime's tables): they stay,
    // unused, rather than stop the program.
    migrator.set_ignore_missing(true);
    migrator.run(pool).await.map_err(DbError::Migrate)
}

/// Milliseconds since the Unix epoch: how every table stores time.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Whether an error is a unique-constraint violation, on either backend.
pub fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if e.is_unique_violation())
}

/// Whether a database error will happen again however often the same statement is retried:
/// the data is wrong, not the moment. On Postgres that is SQLSTATE class 22 (data exception,
/// such as a NUL byte in a text value or a number out of range) and class 23 (integrity
/// constraint violation); on SQLite a constraint violation, a datatype mismatch or a value
/// too big. Everything else (connection lost, pool timeout, serialization failure, deadlock,
/// lock timeout, server shutting down) may succeed later and is transient.
pub fn is_permanent(error: &sqlx::Error) -> bool {
    let sqlx::Error::Database(error) = error else {
        return false;
    };
    use sqlx::error::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::UniqueViolation
            | ErrorKind::ForeignKeyViolation
            | ErrorKind::NotNullViolation
            | ErrorKind::CheckViolation
    ) {
        return true;
    }
    let Some(code) = error.code() else {
        return false;
    };
    let backend = if error
        .try_downcast_ref::<sqlx::sqlite::SqliteError>()
        .is_some()
    {
        Backend::Sqlite
    } else {
        Backend::Postgres
    };
    permanent_code(backend, &code)
}

/// [`is_permanent`] on the error code alone: a Postgres SQLSTATE, or a SQLite (extended)
/// result code in decimal.
fn permanent_code(backend: Backend, code: &str) -> bool {
    match backend {
        Backend::Postgres => code.starts_with("22") || code.starts_with("23"),
        Backend::Sqlite => {
            // SQLite's extended codes keep the primary code in their low byte.
            const TOOBIG: i32 = 18;
            const CONSTRAINT: i32 = 19;
            const MISMATCH: i32 = 20;
            code.parse::<i32>()
                .is_ok_and(|code| matches!(code & 0xff, TOOBIG | CONSTRAINT | MISMATCH))
        }
    }
}

/// `$first, $first+1, …` for `count` values: the placeholders of an `IN (…)` list that both
/// backends understand.
pub fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|n| format!("${n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The [`Migrations`] of the calling crate, embedded from its `migrations/postgres` and
/// `migrations/sqlite` folders (the crate must depend on `sqlx`).
#[macro_export]
macro_rules! migrations {
    () => {
        $crate::db::Migrations {
            postgres: ::sqlx::migrate!("migrations/postgres"),
            sqlite: ::sqlx::migrate!("migrations/sqlite"),
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_and_constraint_errors_are_permanent_and_the_rest_transient() {
        for permanent in ["22021", "22003", "23505", "23514"] {
            assert!(permanent_code(Backend::Postgres, permanent), "{permanent}");
        }
        for transient in [
            "40001", "40P01", "08006", "57P01", "55P03", "53300", "42P01",
        ] {
            assert!(!permanent_code(Backend::Postgres, transient), "{transient}");
        }
        for permanent in ["2067", "275", "1299", "787", "19", "20", "18"] {
            assert!(permanent_code(Backend::Sqlite, permanent), "{permanent}");
        }
        for transient in ["5", "517", "6", "10", "3338", "13"] {
            assert!(!permanent_code(Backend::Sqlite, transient), "{transient}");
        }
        assert!(!is_permanent(&sqlx::Error::PoolTimedOut));
    }

    #[tokio::test]
    async fn a_sqlite_connection_syncs_its_commits_as_the_setting_says() {
        let dir = std::env::temp_dir().join(format!("kit-sync-{}", uuid::Uuid::new_v4()));
        for (setting, pragma) in [(SqliteSynchronous::Full, 2), (SqliteSynchronous::Normal, 1)] {
            let settings = DatabaseSettings {
                sqlite_synchronous: setting,
                ..DatabaseSettings::new(format!("sqlite://{}/{pragma}.db", dir.display()))
            };
            let db = connect_and_migrate("sync-test", &settings, &[])
                .await
                .expect("connect");
            let (synchronous,): (i64,) = sqlx::query_as("PRAGMA synchronous")
                .fetch_one(&db)
                .await
                .unwrap();
            assert_eq!(synchronous, pragma, "{setting:?}");
            db.close().await;
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn placeholders_number_from_the_first() {
        assert_eq!(placeholders(2, 3), "$2, $3, $4");
        assert_eq!(placeholders(1, 0), "");
    }

    #[test]
    fn a_sqlite_url_gets_its_file_created() {
        let dir = std::env::temp_dir().join(format!("kit-{}", uuid::Uuid::new_v4()));
        let url = format!("sqlite://{}/sub/x.db", dir.display());
        let prepared = prepare_sqlite(&url).expect("prepared");
        assert!(prepared.ends_with("/sub/x.db?mode=rwc"), "{prepared}");
        assert!(dir.join("sub").is_dir());
        assert!(prepare_sqlite("sqlite::memory:").is_err());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_backend_comes_from_the_scheme() {
        assert_eq!(
            Backend::of_url("postgres://x").ok(),
            Some(Backend::Postgres)
        );
        assert_eq!(Backend::of_url("sqlite://a.db").ok(), Some(Backend::Sqlite));
        assert!(Backend::of_url("mysql://x").is_err());
    }
}
