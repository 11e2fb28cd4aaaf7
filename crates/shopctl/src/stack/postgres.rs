//! Each service's database on a Postgres server, for stacks not on SQLite files.

use anyhow::Context;

use super::Service;

/// One database per service that talks to the broker, `<prefix>_<service>` on the Postgres
/// server `admin` names (a role that may create databases), created when missing; their URLs.
pub async fn postgres_databases(
    admin: &str,
    prefix: &str,
) -> anyhow::Result<Vec<(Service, String)>> {
    sqlx::any::install_default_drivers();
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(admin)
        .await
        .with_context(|| format!("connecting to {admin}"))?;
    let base = admin
        .rsplit_once('/')
        .map(|(b, _)| b)
        .context("no database in the URL")?;
    let mut urls = Vec::new();
    for service in Service::CLIENTS {
        let name = format!("{prefix}_{}", service.name().replace('-', "_"));
        let exists = sqlx::query("SELECT 1 FROM pg_database WHERE datname = $1")
            .bind(&name)
            .fetch_optional(&mut conn)
            .await?
            .is_some();
        if !exists {
            sqlx::query(&format!("CREATE DATABASE \"{name}\""))
                .execute(&mut conn)
                .await
                .with_context(|| format!("creating the database {name}"))?;
        }
        urls.push((service, format!("{base}/{name}")));
    }
    Ok(urls)
}
