//! `herald-operator`: elects a leader, then reconciles PushCluster and Channel
//! resources until SIGTERM (or until it loses the lease).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use clap::Parser;
use herald_operator::controller::{self, Context};
use herald_operator::crd::PushCluster;
use herald_operator::leader::{Elector, LeaseConfig};
use herald_operator::metrics::Metrics;
use herald_telemetry as telemetry;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use kube::api::{Api, ListParams};
use kube::Client;
use tokio::signal::unix::{signal, SignalKind};

/// Command-line flags, each with an environment fallback.
#[derive(Debug, Parser)]
#[command(
    name = "herald-operator",
    version,
    about = "Reconciles Herald PushCluster and Channel resources"
)]
struct Args {
    /// Address of the /metrics, /healthz and /readyz endpoints.
    #[arg(long, env = "HERALD_OPERATOR_METRICS", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Namespace of the leader-election Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// Name of the leader-election Lease.
    #[arg(long, env = "HERALD_OPERATOR_LEASE", default_value = "herald-operator")]
    lease_name: String,
    /// This replica's identity in the Lease (the pod name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// How long the lease lasts without renewal; the leader stops reconciling after
    /// two thirds of it without one.
    #[arg(long, env = "HERALD_OPERATOR_LEASE_DURATION", default_value = "15s", value_parser = humantime::parse_duration)]
    lease_duration: Duration,
    /// How often every PushCluster is re-read for scaling.
    #[arg(long, env = "HERALD_OPERATOR_RESYNC", default_value = "15s", value_parser = humantime::parse_duration)]
    resync: Duration,
    /// OTLP/HTTP endpoint for traces (e.g. http://127.0.0.1:4318); off when unset.
    #[arg(long, env = "HERALD_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    /// Fraction of reconciles traced when OTLP export is on.
    #[arg(long, env = "HERALD_TRACE_SAMPLE_RATIO", default_value_t = 1.0)]
    trace_sample_ratio: f64,
    /// Log format: `text` or `json`.
    #[arg(long, env = "HERALD_LOG_FORMAT", default_value = "text")]
    log_format: String,
}

impl Args {
    /// This replica's identity: the pod name, or one made from the process id.
    fn identity(&self) -> String {
        self.identity
            .clone()
            .unwrap_or_else(|| format!("herald-operator-{}", std::process::id()))
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let identity = args.identity();
    // Lives until the runtime is done, so the last reconcile spans are flushed.
    let _telemetry = match telemetry::init(&telemetry::Settings {
        service: "herald-operator",
        instance: &identity,
        log_format: &args.log_format,
        otlp_endpoint: args.otlp_endpoint.as_deref(),
        sample_ratio: args.trace_sample_ratio,
    }) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("herald-operator: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("herald-operator: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(args, identity)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("herald-operator: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: Args, identity: String) -> anyhow::Result<ExitCode> {
    let client = Client::try_default()
        .await
        .context("no Kubernetes configuration (in-cluster or KUBECONFIG)")?;
    if let Err(e) = Api::<PushCluster>::all(client.clone())
        .list(&ListParams::default().limit(1))
        .await
    {
        if matches!(&e, kube::Error::Api(status) if status.code == 404) {
            anyhow::bail!(
                "the Herald CRDs are not installed: run `kubectl apply -f crds/` (or install the Helm chart) and start the operator again"
            );
        }
        return Err(e).context("cannot list PushClusters");
    }
    let metrics = Arc::new(Metrics::new());
    let listener = tokio::net::TcpListener::bind(args.metrics_addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.metrics_addr))?;
    println!("herald-operator metrics on {}", listener.local_addr()?);
    tokio::spawn(serve_metrics(listener, metrics.clone()));

    let elector = Elector::new(
        client.clone(),
        LeaseConfig {
            name: args.lease_name.clone(),
            namespace: args.lease_namespace.clone(),
            identity: identity.clone(),
            duration: args.lease_duration,
        },
    );
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    // The controllers' requests pass the fence: none leaves once the lease may be lost.
    let ctx = Arc::new(Context::new(
        elector.fence().client(client),
        metrics.clone(),
        Some(identity.clone()),
        args.resync,
    ));
    loop {
        tracing::info!(%identity, "waiting for leadership");
        let acquired = tokio::select! {
            acquired = elector.acquire() => acquired,
            _ = terminate.recv() => return Ok(ExitCode::SUCCESS),
            _ = interrupt.recv() => return Ok(ExitCode::SUCCESS),
        };
        metrics.leader.set(1);
        tracing::info!(%identity, "leading: reconciling");
        println!("herald-operator leading as {identity}");

        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = move || {
            let mut rx = stop_rx.clone();
            async move {
                let _ = rx.wait_for(|stop| *stop).await;
            }
        };
        let mut controllers = tokio::spawn(futures_util::future::join(
            controller::cluster::run(ctx.clone(), stopped()),
            controller::channel::run(ctx.clone(), stopped()),
        ));
        let hold = elector.hold(acquired);
        tokio::pin!(hold);
        let signalled = tokio::select! {
            lost = &mut hold => Err(lost),
            _ = terminate.recv() => Ok(()),
            _ = interrupt.recv() => Ok(()),
        };
        let mut finished = false;
        if signalled.is_ok() {
            // Shutting down: let running reconciles finish while the lease is still
            // renewed, but no longer than it is held.
            let _ = stop_tx.send(true);
            finished = tokio::select! {
                _ = &mut controllers => true,
                _ = &mut hold => false,
                _ = tokio::time::sleep(Duration::from_secs(10)) => false,
            };
        }
        if !finished {
            // The lease may be gone: no graceful drain, nothing more may be written.
            controllers.abort();
            let _ = controllers.await;
        }
        metrics.leader.set(0);
        match signalled {
            Ok(()) => {
                // Only clears the lease if this replica still holds it.
                match elector.release().await {
                    Ok(()) => println!("herald-operator released the lease"),
                    Err(e) => tracing::warn!(error = %e, "could not release the leader lease"),
                }
                return Ok(ExitCode::SUCCESS);
            }
            // Another replica may lead now; compete again.
            Err(lost) => {
                tracing::warn!(?lost, "lost the leader lease: stopped reconciling");
                println!("herald-operator stopped leading ({lost:?})");
            }
        }
    }
}

async fn serve_metrics(listener: tokio::net::TcpListener, metrics: Arc<Metrics>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let metrics = metrics.clone();
                async move {
                    let (status, body) = match req.uri().path() {
                        "/metrics" => (200, metrics.render()),
                        "/healthz" | "/readyz" => (200, "ok".to_owned()),
                        _ => (404, "not found".to_owned()),
                    };
                    Ok::<_, std::convert::Infallible>(
                        hyper::Response::builder()
                            .status(status)
                            .body(Full::new(Bytes::from(body)))
                            .expect("valid response"),
                    )
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
