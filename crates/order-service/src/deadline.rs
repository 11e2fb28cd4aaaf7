//! The saga deadline: a PENDING order past its deadline is cancelled with reason TIMEOUT,
//! and the usual compensations follow from `OrderCancelled`.
//!
//! Deadlines live in the database, so an order whose deadline passed while the service was
//! down is cancelled at the first sweep after it starts. Several replicas may sweep at once:
//! the conditional update lets exactly one of them cancel each order.

use std::time::Duration;

use contract::CancelReason;
use eventing::Outbox;
use kit::{Db, TraceContext, now_ms};

use crate::saga::SagaMetrics;
use tokio_util::sync::CancellationToken;

use crate::saga::{self, Cancel};
use crate::store;

/// Most orders cancelled per sweep transaction batch.
const BATCH: i64 = 100;

/// Sweeps for overdue orders every `interval` until `shutdown`.
pub async fn run(
    db: Db,
    outbox: Outbox,
    metrics: SagaMetrics,
    timeout: Duration,
    interval: Duration,
    shutdown: CancellationToken,
) {
    kit::app::every(interval, shutdown, || async {
        match sweep(&db, &outbox, &metrics, timeout).await {
            Ok(cancelled) => {
                metrics.timed_out.inc_by(cancelled as u64);
            }
            Err(error) => tracing::warn!(%error, "deadline sweep failed; will try again"),
        }
    })
    .await;
}

/// Cancels every overdue order, recording each one's saga duration; returns how many it
/// cancelled.
pub async fn sweep(
    db: &Db,
    outbox: &Outbox,
    metrics: &SagaMetrics,
    timeout: Duration,
) -> Result<usize, sqlx::Error> {
    let mut cancelled = 0;
    loop {
        let overdue = {
            let mut conn = db.acquire().await?;
            store::overdue_orders(&mut conn, now_ms(), BATCH).await?
        };
        if overdue.is_empty() {
            return Ok(cancelled);
        }
        for id in &overdue {
            let Ok(order_id) = uuid::Uuid::parse_str(id) else {
                continue;
            };
            let mut tx = kit::db::begin(db).await?;
            let trace = match store::find_order(&mut tx, id).await? {
                Some(order) => {
                    let span = tracing::info_span!(parent: None, "deadline", order_id = %id);
                    kit::trace::continue_in(&span, TraceContext::parse(&order.traceparent))
                }
                None => continue,
            };
            let detail = format!(
                "stock and coupon did not both answer within {} ms",
                timeout.as_millis()
            );
            let outcome = saga::cancel(
                &mut tx,
                order_id,
                CancelReason::Timeout,
                &detail,
                None,
                &trace,
            )
            .await?;
            tx.commit().await?;
            if let Cancel::Cancelled(order) = outcome {
                saga::Ended::cancelled(&order).observe(metrics);
                cancelled += 1;
            }
        }
        outbox.wake();
        if (overdue.len() as i64) < BATCH {
            return Ok(cancelled);
        }
    }
}
