//! One module per consumed topic.

pub mod order_events;
