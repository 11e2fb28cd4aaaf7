//! The orders the console shows, as the saga topics tell them: a reader of its own follows the
//! order, stock and coupon topics from their beginning and keeps the most recent orders, each
//! with every event of its saga (what `shopctl trace` prints for one order).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use contract::{Event, OrderStatus as Status};
use eventing::kafka::KafkaSettings;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::BorrowedMessage;
use tokio::sync::watch;

use crate::trace::{SAGA_TOPICS, Step};

/// How many orders the console keeps; older ones drop off the page.
pub const KEPT_ORDERS: usize = 100;

/// How long the reader rests between fetches while events keep coming: as long as the page
/// waits between its updates.
const FEED_REST: Duration = Duration::from_millis(250);

/// One order and its saga so far.
#[derive(Debug, Clone)]
pub struct Order {
    pub order_id: String,
    pub status: Status,
    pub user_id: Option<i64>,
    pub total_amount: Option<i64>,
    pub final_amount: Option<i64>,
    /// Why it was cancelled: the reason and its detail.
    pub cancelled: Option<String>,
    /// When its first event happened.
    pub started_at: DateTime<Utc>,
    /// Its events, oldest first.
    pub steps: Vec<Step>,
}

impl Order {
    fn new(order_id: String, at: DateTime<Utc>) -> Self {
        Order {
            order_id,
            status: Status::Pending,
            user_id: None,
            total_amount: None,
            final_amount: None,
            cancelled: None,
            started_at: at,
            steps: Vec::new(),
        }
    }

    fn apply(&mut self, step: Step) {
        // Redelivered events (a replay, a producer retry) appear once.
        if self
            .steps
            .iter()
            .any(|s| s.envelope.event_id == step.envelope.event_id)
        {
            return;
        }
        match &step.envelope.event {
            Event::OrderCreated(e) => {
                self.user_id = Some(e.user_id);
                self.total_amount = Some(e.total_amount);
            }
            Event::OrderConfirmed(e) => {
                self.status = Status::Confirmed;
                self.final_amount = Some(e.final_amount);
            }
            Event::OrderCancelled(e) => {
                self.status = Status::Cancelled;
                self.cancelled = Some(format!("{}: {}", e.reason.as_str(), e.detail));
            }
            _ => {}
        }
        self.started_at = self.started_at.min(step.envelope.occurred_at);
        self.steps.push(step);
        self.steps
            .sort_by_key(|s| (s.envelope.occurred_at, s.envelope.event_id));
    }
}

#[derive(Debug, Default)]
struct Orders {
    /// Order ids, the most recently first seen last.
    arrival: VecDeque<String>,
    by_id: HashMap<String, Order>,
}

/// The orders the reader has seen, shared with the pages.
#[derive(Clone)]
pub struct Feed {
    orders: Arc<Mutex<Orders>>,
    changed: watch::Sender<u64>,
    stop: Arc<AtomicBool>,
    caught_up: Arc<AtomicBool>,
}

impl Feed {
    /// Starts following the saga topics on a thread of its own.
    pub fn start(settings: &KafkaSettings) -> anyhow::Result<Feed> {
        let consumer: BaseConsumer = settings
            .client_config()
            .set("group.id", format!("console-{}", uuid::Uuid::new_v4()))
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            // Both brokers answer a fetch as soon as an event lands, so the services' wait
            // costs the page no latency, and an idle page costs the broker little.
            .set(
                "fetch.wait.max.ms",
                settings.fetch_wait_max.as_millis().to_string(),
            )
            .create()?;
        consumer.subscribe(&SAGA_TOPICS)?;
        let feed = Feed {
            orders: Arc::default(),
            changed: watch::Sender::new(0),
            stop: Arc::default(),
            caught_up: Arc::default(),
        };
        let reader = feed.clone();
        std::thread::Builder::new()
            .name("console-feed".into())
            .spawn(move || reader.follow(consumer))?;
        Ok(feed)
    }

    fn follow(&self, consumer: BaseConsumer) {
        while !self.stop.load(Ordering::Relaxed) {
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(message)) => {
                    self.read(&message);
                    // What the last fetch brought is in hand: take it all, then rest.
                    self.drain(&consumer);
                    self.rest(&consumer);
                }
                Some(Err(error)) => {
                    tracing::warn!(%error, "reading the saga topics");
                    std::thread::sleep(Duration::from_millis(500));
                }
                // Nothing more to read, once the group has given this reader its partitions.
                None => {
                    if consumer.assignment().is_ok_and(|a| a.count() > 0) {
                        self.caught_up.store(true, Ordering::Relaxed);
                    }
                }
            }
        }
    }

    fn read(&self, message: &BorrowedMessage<'_>) {
        if let (Some(key), Some(step)) = (message.key(), Step::of(message)) {
            self.record(String::from_utf8_lossy(key).into_owned(), step);
        }
    }

    /// Reads the events already fetched, without waiting for more.
    fn drain(&self, consumer: &BaseConsumer) {
        while let Some(Ok(message)) = consumer.poll(Duration::ZERO) {
            self.read(&message);
        }
    }

    /// Stops fetching for [`FEED_REST`], then goes on from where it stopped.
    ///
    /// Followed without a rest, every event of a busy saga would be a fetch of its own,
    /// answered by the broker as soon as the event lands: about three per order, beside the
    /// services' seven. The page shows news at most a few times a second anyway, so the
    /// reader asks as often: one fetch then brings everything since the last.
    fn rest(&self, consumer: &BaseConsumer) {
        let Ok(assignment) = consumer.assignment() else {
            return;
        };
        if assignment.count() == 0 || consumer.pause(&assignment).is_err() {
            return;
        }
        let until = std::time::Instant::now() + FEED_REST;
        while !self.stop.load(Ordering::Relaxed) && std::time::Instant::now() < until {
            // Paused partitions fetch nothing; polling serves the group's heartbeats (and an
            // event fetched before the pause, should one still come, is read, not lost).
            if let Some(Ok(message)) = consumer.poll(FEED_REST / 5) {
                self.read(&message);
            }
        }
        if let Err(error) = consumer.resume(&assignment) {
            tracing::warn!(%error, "resuming the saga topics");
        }
    }

    /// Adds one event of the order `order_id`.
    pub fn record(&self, order_id: String, step: Step) {
        let mut orders = self.orders.lock().unwrap_or_else(|e| e.into_inner());
        let Orders { arrival, by_id } = &mut *orders;
        let order = by_id.entry(order_id.clone()).or_insert_with(|| {
            arrival.push_back(order_id.clone());
            Order::new(order_id, step.envelope.occurred_at)
        });
        order.apply(step);
        while arrival.len() > KEPT_ORDERS {
            if let Some(oldest) = arrival.pop_front() {
                by_id.remove(&oldest);
            }
        }
        drop(orders);
        self.changed.send_modify(|n| *n += 1);
    }

    /// The kept orders, the most recent first.
    pub fn recent(&self) -> Vec<Order> {
        let orders = self.orders.lock().unwrap_or_else(|e| e.into_inner());
        let mut list: Vec<Order> = orders.by_id.values().cloned().collect();
        list.sort_by_key(|o| std::cmp::Reverse(o.started_at));
        list
    }

    /// One kept order.
    pub fn order(&self, order_id: &str) -> Option<Order> {
        let orders = self.orders.lock().unwrap_or_else(|e| e.into_inner());
        orders.by_id.get(order_id).cloned()
    }

    /// Changes whenever an event arrives.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Whether the reader has read everything there was when it last looked.
    pub fn caught_up(&self) -> bool {
        self.caught_up.load(Ordering::Relaxed)
    }

    /// Stops the reader thread.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
