//! Database commits per order, on a stack whose services keep their databases on one Postgres
//! server. Postgres counts every transaction each database commits
//! (`pg_stat_database.xact_commit`), explicit or a single statement's, so the difference
//! over a run divided by the orders it confirmed is what each service's database pays for an
//! order.
//!
//! A backend reports its counts when it goes idle, at most once a second, and an idle one
//! up to ten seconds later: the sample after a run is taken once [`SETTLE`] has passed, when
//! every transaction of the run has been counted. What the idle services commit meanwhile
//! (a relay's look at its outbox, say) is counted too; it is part of what they cost.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use sqlx::Connection;

/// How long after a run its last transactions take to be counted: Postgres reports an idle
/// backend's counts within ten seconds (`PGSTAT_IDLE_INTERVAL`).
pub const SETTLE: Duration = Duration::from_secs(11);

/// Each database's committed transactions at one moment.
#[derive(Debug)]
pub struct Sample {
    /// The database the sample was read from, whose count the reading itself raises.
    own: String,
    commits: BTreeMap<String, i64>,
}

/// Reads every database's count of committed transactions on the server `url` names.
pub async fn sample(url: &str) -> anyhow::Result<Sample> {
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(url)
        .await
        .with_context(|| format!("connecting to {url} for its commit counts"))?;
    let (own,): (String,) = sqlx::query_as("SELECT current_database()::text")
        .fetch_one(&mut conn)
        .await?;
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT datname::text, xact_commit FROM pg_stat_database WHERE datname IS NOT NULL",
    )
    .fetch_all(&mut conn)
    .await
    .context("reading pg_stat_database")?;
    conn.close().await?;
    Ok(Sample {
        own,
        commits: rows.into_iter().collect(),
    })
}

/// What each database committed between two samples, per confirmed order. Databases that
/// committed nothing are left out, and so is the one the samples were read from.
pub fn per_order(before: &Sample, after: &Sample, confirmed: usize) -> BTreeMap<String, f64> {
    after
        .commits
        .iter()
        .filter(|(name, _)| **name != after.own)
        .filter_map(|(name, &count)| {
            let committed = count - before.commits.get(name).copied().unwrap_or(0);
            (committed > 0).then(|| (name.clone(), committed as f64 / confirmed.max(1) as f64))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(own: &str, commits: &[(&str, i64)]) -> Sample {
        Sample {
            own: own.to_owned(),
            commits: commits.iter().map(|(n, c)| ((*n).to_owned(), *c)).collect(),
        }
    }

    #[test]
    fn commits_per_order_leave_out_the_reading_database_and_the_quiet_ones() {
        let before = sample("postgres", &[("postgres", 10), ("shop_order", 100)]);
        let after = sample(
            "postgres",
            &[
                ("postgres", 14),
                ("shop_order", 400),
                ("shop_coupon", 50),
                ("quiet", 0),
            ],
        );
        let per_order = per_order(&before, &after, 100);
        assert_eq!(per_order.len(), 2, "{per_order:?}");
        assert_eq!(per_order["shop_order"], 3.0);
        assert_eq!(per_order["shop_coupon"], 0.5, "a database new since before");
    }
}
