//! The database: connecting, migrating, and the few helpers every store uses.
//!
//! Services talk to their database through sqlx's `Any` driver, so that one set of queries
//! serves Postgres and SQLite alike. That keeps the SQL plain: integer and text columns,
//! `$1` placeholders, `ON CONFLICT … DO NOTHING`, `RETURNING`, and times as milliseconds since
//! the Unix epoch passed in from Rust. What must differ between the two lives in the
//! migrations, one folder per backend.

use std::borrow::Cow;
use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::migrate::{Migration, Migrator};

/// A pool of connections to a service's own database.
pub type Db = sqlx::AnyPool;
/// A transaction on a service's own database.
pub type Tx = sqlx::Transaction<'static, sqlx::Any>;
/// One connection, as handed to code that runs inside a caller's transaction.
pub type Conn = sqlx::AnyConnection;

/// Where a service's database is and how many connections it may hold.
#[derive(Debug, Clone, clap::Args)]
pub struct DatabaseSettings {
    /// `postgres://user:password@host:port/db`.
    #[arg(long = "database-url", env = "DATABASE_URL")]
    pub url: String,
    /// Most connections the service opens to its database.
    #[arg(
        long = "database-max-connections",
        env = "DATABASE_MAX_CONNECTIONS",
        default_value_t = 10
    )]
    pub max_connections: u32,
}

impl DatabaseSettings {
    /// Settings for a database URL with the default pool size.
    pub fn new(url: impl Into<String>) -> Self {
        DatabaseSettings {
            url: url.into(),
            max_connections: 10,
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
    #[error("could not migrate the database")]
    Migrate(#[source] sqlx::migrate::MigrateError),
}

/// The migrations of one service, one migrator per backend: see [`crate::migrations!`].
#[derive(Debug)]
pub struct Migrations {
    pub postgres: Migrator,
    pub sqlite: Migrator,
}

/// Connects to the database, then applies this crate's migrations (outbox and processed
/// events) and the service's own, in version order.
pub async fn connect_and_migrate(
    settings: &DatabaseSettings,
    service: &Migrations,
) -> Result<Db, DbError> {
    let backend = Backend::of_url(&settings.url)?;
    sqlx::any::install_default_drivers();
    let pool = AnyPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect(&settings.url)
        .await
        .map_err(DbError::Connect)?;
    migrate(&pool, backend, service).await?;
    Ok(pool)
}

async fn migrate(pool: &Db, backend: Backend, service: &Migrations) -> Result<(), DbError> {
    let (own, theirs) = match backend {
        Backend::Postgres => (sqlx::migrate!("migrations/postgres"), &service.postgres),
        Backend::Sqlite => (sqlx::migrate!("migrations/sqlite"), &service.sqlite),
    };
    let mut all: Vec<Migration> = own
        .migrations
        .iter()
        .chain(theirs.migrations.iter())
        .cloned()
        .collect();
    all.sort_by_key(|m| m.version);
    let migrator = Migrator {
        migrations: Cow::Owned(all),
        ..own
    };
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
    fn placeholders_number_from_the_first() {
        assert_eq!(placeholders(2, 3), "$2, $3, $4");
        assert_eq!(placeholders(1, 0), "");
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
