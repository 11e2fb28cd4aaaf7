//! W3C trace context (`traceparent`), carried from `POST /orders` through every event.
//!
//! A request starts or continues a trace; each event the request causes carries the trace id
//! with a new span id, and each consumer continues the trace of the event it handles. Logs put
//! the trace id on every span, so `grep` on one id shows an order's whole flow.
//!
//! [`continue_in`] ties a `tracing` span to that flow: the span becomes the work that the
//! incoming context caused, and the context it returns is the span's own, to pass on. When
//! spans are exported ([`crate::telemetry`]), that context is the exported span's, so every
//! hop's parent link points at a span the trace has; when they are not, it is a fresh span id
//! in the same trace, and the ids still correlate logs.

use std::fmt;

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use rand::Rng;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Gives an exported span its remote parent, without reading its context yet.
pub fn set_parent(span: &tracing::Span, parent: Option<TraceContext>) {
    if let Some(parent) = parent {
        // Fails only when the span is not exported or already started; the span then keeps
        // the parent it has, and [`continue_in`]'s fallback carries the trace on.
        let _ = span.set_parent(
            opentelemetry::Context::new().with_remote_span_context(parent.span_context()),
        );
    }
}

/// Makes `span` the work that `parent` (a header, a message, a stored row) caused, and returns
/// the context to pass on from it: the span's own when spans are exported, else a child of
/// `parent` (a new trace without one). Call it before the span is entered.
pub fn continue_in(span: &tracing::Span, parent: Option<TraceContext>) -> TraceContext {
    set_parent(span, parent);
    let exported = span.context();
    let own = exported.span().span_context().clone();
    TraceContext::from_span_context(&own)
        .unwrap_or_else(|| parent.map_or_else(TraceContext::new_root, |p| p.child()))
}

/// A W3C trace context: `00-<trace id>-<parent span id>-<flags>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    sampled: bool,
}

impl TraceContext {
    /// Starts a new trace.
    pub fn new_root() -> Self {
        let mut rng = rand::rng();
        TraceContext {
            trace_id: nonzero(|| rng.random()),
            span_id: nonzero(|| rng.random()),
            sampled: true,
        }
    }

    /// The same trace, with a new span: what an event caused by this context carries.
    pub fn child(&self) -> Self {
        let mut rng = rand::rng();
        TraceContext {
            span_id: nonzero(|| rng.random()),
            ..*self
        }
    }

    /// Parses a `traceparent` header; `None` if it is not a valid version-00 value.
    pub fn parse(header: &str) -> Option<Self> {
        let mut parts = header.trim().split('-');
        let version = parts.next()?;
        let trace = parts.next()?;
        let span = parts.next()?;
        let flags = parts.next()?;
        if version != "00" || parts.next().is_some() {
            return None;
        }
        let mut trace_id = [0u8; 16];
        let mut span_id = [0u8; 8];
        let mut flag = [0u8; 1];
        hex::decode_to_slice(trace, &mut trace_id).ok()?;
        hex::decode_to_slice(span, &mut span_id).ok()?;
        hex::decode_to_slice(flags, &mut flag).ok()?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(TraceContext {
            trace_id,
            span_id,
            sampled: flag[0] & 1 == 1,
        })
    }

    /// Continues the trace of a `traceparent` header if it is valid, else starts a new one.
    pub fn continue_or_new(header: Option<&str>) -> Self {
        header
            .and_then(Self::parse)
            .map(|parent| parent.child())
            .unwrap_or_else(Self::new_root)
    }

    /// The trace id as 32 lowercase hex digits.
    pub fn trace_id(&self) -> String {
        hex::encode(self.trace_id)
    }

    /// The `traceparent` header value.
    pub fn header(&self) -> String {
        self.to_string()
    }

    /// As OpenTelemetry's remote span context, the parent of the work this context causes.
    fn span_context(&self) -> SpanContext {
        let flags = if self.sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        SpanContext::new(
            TraceId::from_bytes(self.trace_id),
            SpanId::from_bytes(self.span_id),
            flags,
            true,
            TraceState::default(),
        )
    }

    /// An exported span's context; `None` when it is not valid (no span is exported).
    fn from_span_context(context: &SpanContext) -> Option<Self> {
        context.is_valid().then(|| TraceContext {
            trace_id: context.trace_id().to_bytes(),
            span_id: context.span_id().to_bytes(),
            sampled: context.is_sampled(),
        })
    }
}

impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            hex::encode(self.trace_id),
            hex::encode(self.span_id),
            u8::from(self.sampled)
        )
    }
}

/// Draws until the value is not all zeroes, which W3C reserves as invalid.
fn nonzero<const N: usize>(mut draw: impl FnMut() -> [u8; N]) -> [u8; N] {
    loop {
        let value = draw();
        if value != [0; N] {
            return value;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_round_trips() {
        let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parsed = TraceContext::parse(header).expect("valid");
        assert_eq!(parsed.header(), header);
        assert_eq!(parsed.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
    }

    #[test]
    fn a_child_keeps_the_trace_and_changes_the_span() {
        let root = TraceContext::new_root();
        let child = root.child();
        assert_eq!(root.trace_id(), child.trace_id());
        assert_ne!(root.header(), child.header());
    }

    #[test]
    fn without_exported_spans_a_span_continues_the_trace_with_a_new_span_id() {
        let parent = TraceContext::new_root();
        let span = tracing::info_span!("work");
        let passed_on = continue_in(&span, Some(parent));
        assert_eq!(passed_on.trace_id(), parent.trace_id());
        assert_ne!(passed_on, parent);
        assert_eq!(continue_in(&span, None).trace_id().len(), 32);
    }

    #[test]
    fn a_context_survives_the_trip_through_opentelemetry() {
        let context = TraceContext::new_root();
        let back = TraceContext::from_span_context(&context.span_context());
        assert_eq!(back, Some(context));
    }

    #[test]
    fn invalid_headers_start_a_new_trace() {
        for bad in [
            "",
            "garbage",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-xyz-00f067aa0ba902b7-01",
        ] {
            assert!(TraceContext::parse(bad).is_none(), "{bad}");
        }
        let fresh = TraceContext::continue_or_new(Some("garbage"));
        assert_eq!(fresh.trace_id().len(), 32);
    }
}
