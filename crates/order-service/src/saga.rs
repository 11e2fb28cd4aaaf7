//! The two ways an order leaves PENDING, shared by the event handlers, the HTTP API and the
//! deadline sweeper, and how a handler records a step of the saga. Each runs inside the
//! caller's transaction, with the order's row locked, and writes the resulting event to the
//! outbox.

use chrono::DateTime;
use contract::{CancelReason, OrderCancelled, OrderConfirmed};
use eventing::{HandleError, Inbound};
use kit::metrics::{Histograms, histograms};
use kit::{Conn, Metrics, TraceContext, now_ms};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use uuid::Uuid;

use crate::SERVICE;
use crate::domain::{Status, cancellable_from};
use crate::store::{self, Order};

/// The labels of `saga_duration_seconds`: how the order ended.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// The order service's own families. Cheap to clone; clones share the figures.
#[derive(Debug, Clone)]
pub struct SagaMetrics {
    /// `saga_duration_seconds`: how long orders take from creation to their end.
    duration: Histograms<OutcomeLabels>,
    /// `orders_timed_out_total`.
    pub timed_out: Counter,
}

impl SagaMetrics {
    /// Registers the families in `metrics`, every series at zero.
    pub fn register(metrics: &Metrics) -> Self {
        let families = SagaMetrics {
            duration: metrics.register(
                "saga_duration_seconds",
                "Time from an order's creation to its end (confirmed or cancelled, for any reason)",
                histograms(),
            ),
            timed_out: metrics.register(
                "orders_timed_out",
                "Orders cancelled because stock and coupon did not both answer in time",
                Counter::default(),
            ),
        };
        for outcome in [CONFIRMED, CANCELLED] {
            drop(families.duration.get_or_create(&OutcomeLabels { outcome }));
        }
        families
    }
}

/// The outcomes of `saga_duration_seconds`.
const CONFIRMED: &str = "confirmed";
const CANCELLED: &str = "cancelled";

/// An order that reached its end in a transaction: what `saga_duration_seconds` records once the
/// transaction commits, and only then, so that an attempt rolled back and applied again
/// counts once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ended {
    pub outcome: &'static str,
    pub seconds: f64,
}

impl Ended {
    fn new(outcome: &'static str, order: &Order, ended_at_ms: i64) -> Self {
        let ms = ended_at_ms.saturating_sub(order.created_at).max(0);
        Ended {
            outcome,
            seconds: ms as f64 / 1000.0,
        }
    }

    /// A cancelled order, as [`cancel`] returns it.
    pub fn cancelled(order: &Order) -> Self {
        Ended::new(CANCELLED, order, order.updated_at)
    }

    /// Records the order's saga duration. Call it once the transaction has committed.
    pub fn observe(self, metrics: &SagaMetrics) {
        let labels = OutcomeLabels {
            outcome: self.outcome,
        };
        metrics
            .duration
            .get_or_create(&labels)
            .observe(self.seconds);
    }
}

fn at(ms: i64) -> chrono::DateTime<chrono::Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

async fn emit(
    conn: &mut Conn,
    event: impl Into<contract::Event>,
    cause: Option<Uuid>,
    trace: &TraceContext,
) -> Result<(), sqlx::Error> {
    let envelope = contract::Envelope::new(SERVICE, event, cause);
    eventing::outbox::enqueue(conn, &envelope, trace).await
}

/// Confirms `order` (as just read with its row locked) if every step it needs succeeded, and
/// publishes `OrderConfirmed`. `None` if it is not ready or no longer PENDING.
pub async fn confirm_if_ready(
    conn: &mut Conn,
    order: &Order,
    cause: Option<Uuid>,
    trace: &TraceContext,
) -> Result<Option<Ended>, sqlx::Error> {
    if !order.progress().ready_to_confirm() {
        return Ok(None);
    }
    let now = now_ms();
    let id = order.id.to_string();
    if !store::confirm(conn, &id, now).await? {
        return Ok(None);
    }
    store::add_timeline(conn, &id, "OrderConfirmed", None).await?;
    let event = OrderConfirmed {
        order_id: order.id,
        user_id: order.user_id,
        total_amount: order.total_amount,
        discount_amount: order.discount_amount,
        final_amount: order.total_amount - order.discount_amount,
        confirmed_at: at(now),
    };
    emit(conn, event, cause, trace).await?;
    tracing::info!(order_id = %order.id, "order confirmed");
    Ok(Some(Ended::new(CONFIRMED, order, now)))
}

/// What became of a request to cancel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cancel {
    /// It is cancelled now, and `OrderCancelled` is in the outbox.
    Cancelled(Order),
    /// Its status does not allow cancelling for that reason.
    NotCancellable(Status),
    /// There is no such order.
    NotFound,
}

/// Cancels an order for `reason` if its status allows, and publishes `OrderCancelled`; every
/// service that did something for the order undoes it when that event reaches it.
pub async fn cancel(
    conn: &mut Conn,
    order_id: Uuid,
    reason: CancelReason,
    detail: &str,
    cause: Option<Uuid>,
    trace: &TraceContext,
) -> Result<Cancel, sqlx::Error> {
    let id = order_id.to_string();
    let Some(order) = store::lock_order(conn, &id).await? else {
        return Ok(Cancel::NotFound);
    };
    let now = now_ms();
    if !store::cancel(conn, &id, cancellable_from(reason), reason, detail, now).await? {
        return Ok(Cancel::NotCancellable(order.status));
    }
    store::add_timeline(
        conn,
        &id,
        "OrderCancelled",
        Some(&format!("{}: {detail}", reason.as_str())),
    )
    .await?;
    let event = OrderCancelled {
        order_id,
        user_id: order.user_id,
        reason,
        detail: detail.to_owned(),
        cancelled_at: at(now),
    };
    emit(conn, event, cause, trace).await?;
    tracing::info!(%order_id, reason = reason.as_str(), %detail, "order cancelled");
    let cancelled = store::find_order(conn, &id).await?.unwrap_or(order);
    Ok(Cancel::Cancelled(cancelled))
}

/// An event about an order this service never had can never be applied: it goes to the
/// dead-letter topic.
fn unknown_order(order_id: Uuid) -> HandleError {
    HandleError::Permanent(format!(
        "order {order_id} does not exist in the order service"
    ))
}

/// Adds the inbound event to its order's timeline.
pub async fn note(
    conn: &mut Conn,
    inbound: &Inbound,
    order_id: Uuid,
    detail: Option<&str>,
) -> Result<(), HandleError> {
    let id = order_id.to_string();
    if store::lock_order(conn, &id).await?.is_none() {
        return Err(unknown_order(order_id));
    }
    store::add_timeline(conn, &id, inbound.envelope.event_type(), detail).await?;
    Ok(())
}

/// A step of `order_id` succeeded and `marked` is the order after recording it (`None`: no
/// such order): note it, and confirm the order if that was its last missing step. Returns
/// the order's end if it came now.
pub async fn step_succeeded(
    conn: &mut Conn,
    inbound: &Inbound,
    order_id: Uuid,
    marked: Option<Order>,
    detail: Option<&str>,
) -> Result<Option<Ended>, HandleError> {
    let Some(order) = marked else {
        return Err(unknown_order(order_id));
    };
    store::add_timeline(
        conn,
        &order.id.to_string(),
        inbound.envelope.event_type(),
        detail,
    )
    .await?;
    let ended = confirm_if_ready(
        conn,
        &order,
        Some(inbound.envelope.event_id),
        &inbound.trace,
    )
    .await?;
    Ok(ended)
}

/// A step failed: note it, and cancel the order for `reason` if it is still PENDING.
/// Returns the order's end if it came now.
pub async fn step_failed(
    conn: &mut Conn,
    inbound: &Inbound,
    order_id: Uuid,
    reason: CancelReason,
    detail: &str,
) -> Result<Option<Ended>, HandleError> {
    note(conn, inbound, order_id, Some(detail)).await?;
    let cause = Some(inbound.envelope.event_id);
    match cancel(conn, order_id, reason, detail, cause, &inbound.trace).await? {
        Cancel::Cancelled(order) => Ok(Some(Ended::cancelled(&order))),
        Cancel::NotCancellable(_) | Cancel::NotFound => Ok(None),
    }
}
