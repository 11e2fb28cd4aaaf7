//! `order.events`: reserve stock for new orders, release it for cancelled ones.
//!
//! Both decisions hang on the order's `reservation` row, which the first event of an order
//! creates. `OrderCreated` reserves only if it creates that row; `OrderCancelled` releases
//! only a RESERVED row, or creates a VOIDED one so that an `OrderCreated` seen later (after a
//! replay, say) reserves nothing for an order that is already cancelled. Compensation thus
//! happens only for a reservation that happened, and only once.

use std::collections::{BTreeMap, BTreeSet};

use contract::{
    Envelope, Event, OrderCancelled, OrderCreated, OrderLine, StockFailureReason, StockLine,
    StockReleased, StockReservationFailed, StockReserved,
};
use eventing::{HandleError, Handler, Inbound};
use kit::Conn;
use sqlx::Connection;

use crate::{SERVICE, store};

/// The handler of `order.events`.
#[derive(Debug, Clone, Copy)]
pub struct OrderEvents;

impl Handler for OrderEvents {
    /// A confirmed order keeps its reservation; nothing else concerns stock.
    fn concerns(&self, event: &Envelope) -> bool {
        matches!(
            event.event,
            Event::OrderCreated(_) | Event::OrderCancelled(_)
        )
    }

    async fn handle(&self, conn: &mut Conn, inbound: &Inbound) -> Result<(), HandleError> {
        match &inbound.envelope.event {
            Event::OrderCreated(order) => reserve(conn, inbound, order).await,
            Event::OrderCancelled(order) => release(conn, inbound, order).await,
            // A confirmed order keeps its reservation; nothing else concerns stock.
            _ => Ok(()),
        }
    }

    /// Every product the batch reserves or releases, locked in id order before any of it.
    async fn lock_batch(&self, conn: &mut Conn, events: &[Inbound]) -> Result<(), HandleError> {
        let mut products = BTreeSet::new();
        let mut cancelled = Vec::new();
        for inbound in events {
            match &inbound.envelope.event {
                Event::OrderCreated(order) => {
                    products.extend(order.items.iter().map(|line| line.product_id));
                }
                Event::OrderCancelled(order) => cancelled.push(order.order_id.to_string()),
                _ => {}
            }
        }
        products.extend(store::reserved_products(conn, &cancelled).await?);
        store::lock_products(conn, &products).await?;
        Ok(())
    }
}

/// Why a reservation could not be made.
struct Shortage {
    reason: StockFailureReason,
    detail: String,
}

async fn reserve(
    conn: &mut Conn,
    inbound: &Inbound,
    order: &OrderCreated,
) -> Result<(), HandleError> {
    let order_id = order.order_id.to_string();
    // The slot is claimed as RESERVED, what most orders get; a shortage turns it FAILED below.
    // Both happen in this transaction, so nobody ever sees the claim without the decision.
    if !store::claim_reservation(conn, &order_id, "RESERVED").await? {
        tracing::info!("this order was decided (or cancelled) before; reserving nothing");
        return Ok(());
    }
    let lines = merge_lines(&order.items).map_err(HandleError::Permanent)?;
    match take_all_or_none(conn, &lines).await? {
        Ok(()) => {
            store::insert_reservation_lines(conn, &order_id, &lines).await?;
            tracing::info!(lines = lines.len(), "stock reserved");
            inbound
                .emit(
                    conn,
                    SERVICE,
                    StockReserved {
                        order_id: order.order_id,
                        items: lines,
                    },
                )
                .await?;
        }
        Err(shortage) => {
            store::set_reservation_status(conn, &order_id, "FAILED").await?;
            tracing::info!(detail = %shortage.detail, "stock reservation failed");
            inbound
                .emit(
                    conn,
                    SERVICE,
                    StockReservationFailed {
                        order_id: order.order_id,
                        reason: shortage.reason,
                        detail: shortage.detail,
                    },
                )
                .await?;
        }
    }
    Ok(())
}

/// Reserves every line, or none: lines are taken inside a savepoint, rolled back at the first
/// line that cannot be served. Lines are taken in product id order, so that two orders never
/// wait on each other's rows in opposite orders.
async fn take_all_or_none(
    conn: &mut Conn,
    lines: &[StockLine],
) -> Result<Result<(), Shortage>, sqlx::Error> {
    // A single line is one statement that takes its stock or changes nothing, so it has
    // nothing to undo; the savepoint would only cost two statements more.
    if let [line] = lines {
        return take(conn, line).await;
    }
    let mut savepoint = conn.begin().await?;
    for line in lines {
        if let Err(shortage) = take(&mut savepoint, line).await? {
            savepoint.rollback().await?;
            return Ok(Err(shortage));
        }
    }
    savepoint.commit().await?;
    Ok(Ok(()))
}

/// Takes one line's stock, or says why it cannot be taken, changing nothing.
async fn take(conn: &mut Conn, line: &StockLine) -> Result<Result<(), Shortage>, sqlx::Error> {
    if store::take_stock(conn, line.product_id, line.quantity).await? {
        return Ok(Ok(()));
    }
    let shortage = match store::find_product(conn, line.product_id).await? {
        None => Shortage {
            reason: StockFailureReason::UnknownProduct,
            detail: format!("product {} does not exist", line.product_id),
        },
        Some(product) => Shortage {
            reason: StockFailureReason::OutOfStock,
            detail: format!(
                "product {} ({}) has {} available, {} requested",
                product.product_id, product.name, product.available, line.quantity
            ),
        },
    };
    Ok(Err(shortage))
}

/// One line per product, quantities summed, in product id order. The contract already refuses
/// a product on two lines; the sum is checked all the same, since a quantity summed past
/// `i64::MAX` would wrap in a release build and reserve a negative amount.
fn merge_lines(items: &[OrderLine]) -> Result<Vec<StockLine>, String> {
    let mut merged = BTreeMap::<i64, i64>::new();
    for item in items {
        let quantity = merged.entry(item.product_id).or_default();
        *quantity = quantity.checked_add(item.quantity).ok_or_else(|| {
            format!(
                "the quantities of product {} add up to more than can be counted",
                item.product_id
            )
        })?;
    }
    Ok(merged
        .into_iter()
        .map(|(product_id, quantity)| StockLine {
            product_id,
            quantity,
        })
        .collect())
}

async fn release(
    conn: &mut Conn,
    inbound: &Inbound,
    order: &OrderCancelled,
) -> Result<(), HandleError> {
    let order_id = order.order_id.to_string();
    if store::claim_reservation(conn, &order_id, "VOIDED").await? {
        tracing::info!("cancelled before its creation was seen; it will never reserve");
        return Ok(());
    }
    let Some(lines) = store::release_reservation(conn, &order_id).await? else {
        tracing::info!("the order holds no stock; nothing to release");
        return Ok(());
    };
    for line in &lines {
        store::give_back_stock(conn, line.product_id, line.quantity).await?;
    }
    tracing::info!(lines = lines.len(), "stock released");
    inbound
        .emit(
            conn,
            SERVICE,
            StockReleased {
                order_id: order.order_id,
                items: lines,
            },
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_of_one_product_are_merged_and_sorted() {
        let line = |product_id, quantity| OrderLine {
            product_id,
            quantity,
            unit_price: 1,
        };
        let merged = merge_lines(&[line(3, 1), line(1, 2), line(3, 4)]).expect("merged");
        assert_eq!(
            merged,
            vec![
                StockLine {
                    product_id: 1,
                    quantity: 2
                },
                StockLine {
                    product_id: 3,
                    quantity: 5
                },
            ]
        );
    }

    #[test]
    fn quantities_that_would_overflow_are_refused_not_wrapped() {
        let line = |quantity| OrderLine {
            product_id: 1,
            quantity,
            unit_price: 0,
        };
        assert!(merge_lines(&[line(i64::MAX), line(i64::MAX)]).is_err());
    }
}
