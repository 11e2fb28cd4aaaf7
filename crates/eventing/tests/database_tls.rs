//! sqlx is built with rustls: a `DATABASE_URL` with `sslmode=require` connects over TLS (the
//! test run's own Postgres has TLS on; `TEST_DATABASE_TLS=1` says so), and against a server
//! without TLS it fails clearly instead of falling back to plain text.

use sqlx::Connection;

#[tokio::test]
async fn a_database_url_with_sslmode_require_connects_over_tls() {
    let base = std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://shop:shop@127.0.0.1:5432/postgres".into());
    let separator = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{separator}sslmode=require");
    let tls_on = std::env::var("TEST_DATABASE_TLS").as_deref() == Ok("1");
    match sqlx::PgConnection::connect(&url).await {
        Ok(mut conn) => {
            let (ssl,): (bool,) =
                sqlx::query_as("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
                    .fetch_one(&mut conn)
                    .await
                    .expect("the connection's TLS state");
            assert!(ssl, "sslmode=require connected without TLS");
        }
        Err(error) => {
            assert!(
                !tls_on,
                "the server has TLS, yet sslmode=require failed: {error}"
            );
            let text = error.to_string().to_lowercase();
            assert!(text.contains("tls") || text.contains("ssl"), "{error}");
        }
    }
}
