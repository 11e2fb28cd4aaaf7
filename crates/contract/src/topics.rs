//! Topic names, partition counts and header names of the contract.
//!
//! Every saga topic is keyed by order id so that one order's events stay in order within a
//! topic; `product.catalog` is keyed by product id and compacted, so that a new replica can
//! rebuild the whole catalog from the topic alone.

/// Order lifecycle events, produced by the order service. Key: order id.
pub const ORDER_EVENTS: &str = "order.events";
/// Stock reservation outcomes, produced by the product service. Key: order id.
pub const STOCK_EVENTS: &str = "stock.events";
/// Coupon outcomes, produced by the coupon service. Key: order id.
pub const COUPON_EVENTS: &str = "coupon.events";
/// The product catalog (name and price), produced by the product service. Key: product id.
pub const PRODUCT_CATALOG: &str = "product.catalog";

/// Header carrying the event type, so that a consumer can skip events without parsing them.
pub const HEADER_EVENT_TYPE: &str = "event_type";
/// Header carrying the media type of the value: always `application/json`.
pub const HEADER_CONTENT_TYPE: &str = "content-type";
/// Header carrying the W3C trace context of the request that caused the event.
pub const HEADER_TRACEPARENT: &str = "traceparent";
/// The media type of every value on every topic.
pub const CONTENT_TYPE_JSON: &str = "application/json";

/// A topic of the contract and how it is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicSpec {
    /// The topic's name.
    pub name: &'static str,
    /// How many partitions it is created with; this bounds how many replicas of a consuming
    /// service can share the work.
    pub partitions: i32,
    /// Whether the topic is compacted (`cleanup.policy=compact`) rather than deleted by age.
    pub compacted: bool,
}

/// Partitions of each saga topic: three replicas of a consumer can each own one.
pub const SAGA_PARTITIONS: i32 = 3;

/// Every topic the services produce to or consume from, except the dead-letter topics
/// (see [`dlq_topics`]).
pub const TOPICS: &[TopicSpec] = &[
    TopicSpec {
        name: ORDER_EVENTS,
        partitions: SAGA_PARTITIONS,
        compacted: false,
    },
    TopicSpec {
        name: STOCK_EVENTS,
        partitions: SAGA_PARTITIONS,
        compacted: false,
    },
    TopicSpec {
        name: COUPON_EVENTS,
        partitions: SAGA_PARTITIONS,
        compacted: false,
    },
    TopicSpec {
        name: PRODUCT_CATALOG,
        partitions: SAGA_PARTITIONS,
        compacted: true,
    },
];

/// A service of the saga: its name (of its consumer group, its Kafka user, its envelopes'
/// `producer`), its [`Flow`] and its dead-letter topic. Every service consumes, and so has a
/// dead-letter topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Service {
    OrderService,
    ProductService,
    CouponService,
    AnalyticsForwarder,
}

impl Service {
    /// Every service of the contract, in the order of [`FLOWS`].
    pub const ALL: [Service; 4] = [
        Service::OrderService,
        Service::ProductService,
        Service::CouponService,
        Service::AnalyticsForwarder,
    ];

    /// The service's name: `order-service`, `product-service`, `coupon-service`,
    /// `analytics-forwarder`.
    pub const fn name(self) -> &'static str {
        match self {
            Service::OrderService => "order-service",
            Service::ProductService => "product-service",
            Service::CouponService => "coupon-service",
            Service::AnalyticsForwarder => "analytics-forwarder",
        }
    }

    /// The service of that name; `None` for a name the contract does not know.
    pub fn parse(name: &str) -> Option<Service> {
        Service::ALL.into_iter().find(|s| s.name() == name)
    }

    /// What it publishes and subscribes to.
    pub fn flow(self) -> &'static Flow {
        // FLOWS lists every service once, in the order of ALL (a unit test says so).
        &FLOWS[self as usize]
    }

    /// The topics it consumes, in the consumer group named after it.
    pub fn consumes(self) -> &'static [&'static str] {
        self.flow().consumes
    }

    /// Its dead-letter topic: `<name>.dlq`.
    pub fn dlq_topic(self) -> String {
        dlq_topic(self.name())
    }
}

impl std::fmt::Display for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What one service publishes and subscribes to: the services subscribe from here, and the
/// compose stack's Kafka ACLs are checked against it (each service may write only what it
/// produces, and read only what it consumes, in its own group).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    pub service: Service,
    /// The topics it publishes events to (besides its own dead-letter topic).
    pub produces: &'static [&'static str],
    /// The topics it consumes, in the consumer group named after it.
    pub consumes: &'static [&'static str],
}

/// Every service's [`Flow`].
pub const FLOWS: &[Flow] = &[
    Flow {
        service: Service::OrderService,
        produces: &[ORDER_EVENTS],
        consumes: &[STOCK_EVENTS, COUPON_EVENTS, PRODUCT_CATALOG],
    },
    Flow {
        service: Service::ProductService,
        produces: &[STOCK_EVENTS, PRODUCT_CATALOG],
        consumes: &[ORDER_EVENTS],
    },
    Flow {
        service: Service::CouponService,
        produces: &[COUPON_EVENTS],
        consumes: &[ORDER_EVENTS],
    },
    Flow {
        service: Service::AnalyticsForwarder,
        produces: &[],
        consumes: &[ORDER_EVENTS],
    },
];

/// The one service that produces `topic`; `None` for a topic that is not the contract's.
pub fn producer_of(topic: &str) -> Option<Service> {
    FLOWS
        .iter()
        .find(|f| f.produces.contains(&topic))
        .map(|f| f.service)
}

/// The dead-letter topic of a consumer named `name`: `<name>.dlq` ([`Service::dlq_topic`] for
/// the contract's services).
pub fn dlq_topic(name: &str) -> String {
    format!("{name}.dlq")
}

/// The dead-letter topics of every service, one partition each.
pub fn dlq_topics() -> Vec<(String, i32)> {
    Service::ALL
        .iter()
        .map(|service| (service.dlq_topic(), 1))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Event;

    #[test]
    fn each_topic_has_one_producer_and_every_consumer_a_flow() {
        for topic in TOPICS {
            let producers: Vec<Service> = FLOWS
                .iter()
                .filter(|f| f.produces.contains(&topic.name))
                .map(|f| f.service)
                .collect();
            assert_eq!(producers.len(), 1, "{}: {producers:?}", topic.name);
        }
        // Every service has one flow, in the order of Service::ALL, and consumes something.
        let flows: Vec<Service> = FLOWS
            .iter()
            .filter(|f| !f.consumes.is_empty())
            .map(|f| f.service)
            .collect();
        assert_eq!(flows, Service::ALL);
        for service in Service::ALL {
            assert_eq!(service.flow().service, service);
            assert_eq!(Service::parse(service.name()), Some(service));
        }
        assert_eq!(Service::parse("order-servic"), None);
        // Every event type goes to a topic its producer's flow names.
        for event_type in Event::TYPES {
            let topic = Event::topic_of(event_type).expect("a topic");
            assert!(
                FLOWS.iter().any(|f| f.produces.contains(&topic)),
                "{event_type}"
            );
        }
    }
}
