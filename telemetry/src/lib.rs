//! Logs and traces for Herald's processes: `tracing` to stderr, plus OpenTelemetry
//! OTLP/HTTP export when an endpoint is configured, so SREs can follow a publish
//! across nodes and see what the operator reconciled.
//!
//! herald-node and herald-operator share this one set-up (same flags, same resource
//! attributes, same filters); [`propagation`] carries W3C trace context across
//! process boundaries.

pub mod propagation;

use std::io::IsTerminal;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing::Subscriber;
use tracing_subscriber::filter::{Directive, LevelFilter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Target of spans that exist only for distributed traces (the HTTP request, the
/// Redis hop, each node's delivery). Logs skip them, and without an OTLP endpoint
/// they are disabled at their call site, so they cost nothing when tracing is off.
pub const TRACE_TARGET: &str = "herald::trace";

/// Telemetry set-up failures.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The OTLP exporter could not be built.
    #[error("cannot set up OTLP export to {endpoint}: {message}")]
    Exporter {
        /// The configured endpoint.
        endpoint: String,
        /// What went wrong.
        message: String,
    },
    /// A global subscriber was already installed.
    #[error("tracing is already initialised: {0}")]
    AlreadyInitialised(String),
}

/// Keeps the trace pipeline alive; flushes pending spans when dropped.
#[derive(Debug)]
pub struct Guard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            if let Err(e) = provider.shutdown() {
                eprintln!("flushing traces failed: {e}");
            }
        }
    }
}

/// Settings for [`init`].
#[derive(Debug, Clone)]
pub struct Settings<'a> {
    /// `service.name` of exported spans.
    pub service: &'static str,
    /// Instance id (`service.instance.id`).
    pub instance: &'a str,
    /// `text` or `json`.
    pub log_format: &'a str,
    /// OTLP/HTTP endpoint, e.g. `http://127.0.0.1:4318`.
    pub otlp_endpoint: Option<&'a str>,
    /// Fraction of root spans sampled.
    pub sample_ratio: f64,
}

/// Installs the global subscriber. `RUST_LOG` (default `info`) picks what is logged;
/// spans at `info` and above are exported whatever it says, so quiet logs do not
/// mean missing traces.
pub fn init(settings: &Settings<'_>) -> Result<Guard, TelemetryError> {
    let provider = match settings.otlp_endpoint {
        None => None,
        Some(endpoint) => Some(provider(settings, endpoint)?),
    };
    let tracer = provider.as_ref().map(|provider| {
        opentelemetry::global::set_tracer_provider(provider.clone());
        provider.tracer(settings.service)
    });
    subscriber(settings.log_format, tracer)
        .try_init()
        .map_err(|e| TelemetryError::AlreadyInitialised(e.to_string()))?;
    Ok(Guard { provider })
}

/// A batch-exporting tracer provider for `endpoint`, with the service's resource.
fn provider(settings: &Settings<'_>, endpoint: &str) -> Result<SdkTracerProvider, TelemetryError> {
    let url = if endpoint.ends_with("/v1/traces") {
        endpoint.to_owned()
    } else {
        format!("{}/v1/traces", endpoint.trim_end_matches('/'))
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(url)
        .build()
        .map_err(|e| TelemetryError::Exporter {
            endpoint: endpoint.to_owned(),
            message: e.to_string(),
        })?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            settings.sample_ratio,
        ))))
        .with_resource(
            Resource::builder()
                .with_service_name(settings.service)
                .with_attribute(opentelemetry::KeyValue::new(
                    "service.instance.id",
                    settings.instance.to_owned(),
                ))
                .build(),
        )
        .build())
}

/// Logs to stderr and, given a tracer, spans to OpenTelemetry. Each output has its
/// own filter: logs follow `RUST_LOG` but leave out [`TRACE_TARGET`] spans, which
/// only traces need; traces take every span at `info` and above.
fn subscriber(log_format: &str, tracer: Option<SdkTracer>) -> impl Subscriber + Send + Sync {
    let logs = if log_format == "json" {
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .boxed()
    } else {
        // Colour codes only for a person at a terminal, never in files or log pipelines.
        tracing_subscriber::fmt::layer()
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .boxed()
    };
    let not_traces: Directive = format!("{TRACE_TARGET}=off")
        .parse()
        .expect("a valid static directive");
    let mut layers = vec![logs
        .with_filter(env_filter().add_directive(not_traces))
        .boxed()];
    // Left out rather than `None`: an absent layer must not make spans look wanted.
    if let Some(tracer) = tracer {
        layers.push(
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(LevelFilter::INFO)
                .boxed(),
        );
    }
    tracing_subscriber::registry().with(layers)
}

fn env_filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Tests install their own subscribers; callsite interest is cached process-wide
/// from every live one, so tests that install one take turns.
#[cfg(test)]
pub(crate) static ONE_SUBSCRIBER_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_only_spans_are_disabled_without_an_exporter() {
        let _turn = ONE_SUBSCRIBER_AT_A_TIME.lock();
        let subscriber = subscriber("text", None);
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(target: TRACE_TARGET, "broker.publish");
            assert!(span.is_disabled());
            assert_eq!(
                propagation::TraceContext::of(&span),
                None,
                "no traceparent built"
            );
            let logged = tracing::info_span!("publish");
            assert!(!logged.is_disabled(), "ordinary spans still reach the logs");
        });
    }

    #[test]
    fn trace_only_spans_are_recorded_with_an_exporter() {
        let _turn = ONE_SUBSCRIBER_AT_A_TIME.lock();
        let provider = SdkTracerProvider::builder().build();
        let subscriber = subscriber("text", Some(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(target: TRACE_TARGET, "deliver");
            assert!(!span.is_disabled());
        });
    }
}
