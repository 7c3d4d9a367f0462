//! W3C trace context (`traceparent`, `tracestate`) out of and into spans, so a trace
//! continues in another process: a backend's HTTP request into a node, a message
//! crossing Redis to the nodes that deliver it.
//!
//! Both directions are free when tracing is off: nothing is formatted for a span
//! that is disabled or not sampled, and nothing is parsed into a disabled span.

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";

/// A span's W3C trace context, as carried in headers and messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// `00-<trace id>-<span id>-<flags>`.
    pub traceparent: Box<str>,
    /// Vendor entries, when the trace has any.
    pub tracestate: Option<Box<str>>,
}

impl TraceContext {
    /// The context of `span`, or `None` when the span is disabled or not sampled
    /// (then no string is built at all).
    pub fn of(span: &Span) -> Option<Self> {
        if span.is_disabled() {
            return None;
        }
        let cx = span.context();
        if !cx.span().span_context().is_sampled() {
            return None;
        }
        let mut carrier = Carrier::default();
        TraceContextPropagator::new().inject_context(&cx, &mut carrier);
        Some(Self {
            traceparent: carrier.traceparent?.into(),
            tracestate: carrier.tracestate.filter(|s| !s.is_empty()).map(Into::into),
        })
    }

    /// The context of the current span; see [`TraceContext::of`].
    pub fn current() -> Option<Self> {
        Self::of(&Span::current())
    }

    /// Makes this context the parent of `span`; see [`set_remote_parent`].
    pub fn set_as_parent_of(&self, span: &Span) {
        set_remote_parent(span, &self.traceparent, self.tracestate.as_deref());
    }
}

/// Makes the context in `traceparent`/`tracestate` the parent of `span`, which must
/// not have been entered yet. Does nothing for a disabled span or a malformed
/// `traceparent` (the span then keeps its local parent, if any).
pub fn set_remote_parent(span: &Span, traceparent: &str, tracestate: Option<&str>) {
    if span.is_disabled() {
        return;
    }
    let cx = TraceContextPropagator::new().extract(&Fields {
        traceparent,
        tracestate,
    });
    if cx.span().span_context().is_valid() {
        // Fails only without an OpenTelemetry layer or for an entered span: the
        // span then simply stays where it is in its local trace.
        let _ = span.set_parent(cx);
    }
}

#[derive(Default)]
struct Carrier {
    traceparent: Option<String>,
    tracestate: Option<String>,
}

impl Injector for Carrier {
    fn set(&mut self, key: &str, value: String) {
        match key {
            TRACEPARENT => self.traceparent = Some(value),
            TRACESTATE => self.tracestate = Some(value),
            _ => {}
        }
    }
}

struct Fields<'a> {
    traceparent: &'a str,
    tracestate: Option<&'a str>,
}

impl Extractor for Fields<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            TRACEPARENT => Some(self.traceparent),
            TRACESTATE => self.tracestate,
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT, TRACESTATE]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
    use tracing_subscriber::layer::SubscriberExt;

    fn traced(sampler: Sampler, test: impl FnOnce()) {
        let _turn = crate::ONE_SUBSCRIBER_AT_A_TIME.lock();
        let provider = SdkTracerProvider::builder().with_sampler(sampler).build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, test);
    }

    #[test]
    fn a_span_continues_the_trace_of_a_remote_parent() {
        traced(Sampler::AlwaysOn, || {
            let publish = tracing::info_span!("publish");
            let sent = TraceContext::of(&publish).expect("a sampled span has a context");
            let trace_id = publish.context().span().span_context().trace_id();
            assert!(sent.traceparent.starts_with("00-"));
            assert!(sent.traceparent.contains(&trace_id.to_string()));

            let deliver = tracing::info_span!(parent: None, "deliver");
            sent.set_as_parent_of(&deliver);
            let received = TraceContext::of(&deliver).unwrap();
            assert_eq!(
                deliver.context().span().span_context().trace_id(),
                trace_id,
                "the delivery joins the publisher's trace"
            );
            assert_ne!(received.traceparent, sent.traceparent, "as a new span");
        });
    }

    #[test]
    fn tracestate_travels_with_the_trace() {
        traced(Sampler::AlwaysOn, || {
            let span = tracing::info_span!("http");
            set_remote_parent(
                &span,
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                Some("vendor=opaque"),
            );
            let context = TraceContext::of(&span).unwrap();
            assert!(context
                .traceparent
                .starts_with("00-0af7651916cd43dd8448eb211c80319c-"));
            assert_eq!(context.tracestate.as_deref(), Some("vendor=opaque"));
        });
    }

    #[test]
    fn a_malformed_traceparent_starts_no_foreign_trace() {
        traced(Sampler::AlwaysOn, || {
            let span = tracing::info_span!("http");
            set_remote_parent(&span, "not-a-traceparent", None);
            let context = TraceContext::of(&span).unwrap();
            assert!(!context.traceparent.contains("not-a"));
        });
    }

    #[test]
    fn unsampled_and_disabled_spans_carry_nothing() {
        traced(Sampler::AlwaysOff, || {
            assert_eq!(TraceContext::of(&tracing::info_span!("publish")), None);
        });
        assert_eq!(TraceContext::of(&Span::none()), None);
    }
}
