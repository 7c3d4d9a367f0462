//! `herald-node`: parses configuration, wires the parts together, serves until SIGTERM.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use herald_node::auth::Authenticator;
use herald_node::background::Background;
use herald_node::broker::memory::MemoryBroker;
use herald_node::broker::redis::{RedisBroker, RedisSettings};
use herald_node::broker::Broker;
use herald_node::channels::Registry;
use herald_node::coalesce;
use herald_node::config::Args;
use herald_node::dev::{self, DevSecrets};
use herald_node::hub::Hub;
use herald_node::metrics::Metrics;
use herald_node::node::{Node, Parts};
use herald_node::presence::{self, Presence};
use herald_node::{server, telemetry};
use tokio::net::{TcpListener, TcpSocket};
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    match start() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("herald-node: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn start() -> anyhow::Result<()> {
    let mut args = Args::parse();
    let dev_secrets = args.dev.then(|| {
        let secrets = DevSecrets::generate();
        args.jwt_secret
            .get_or_insert_with(|| secrets.jwt_secret.clone());
        args.api_key.get_or_insert_with(|| secrets.api_key.clone());
        DevSecrets {
            jwt_secret: args.jwt_secret.clone().unwrap_or_default(),
            api_key: args.api_key.clone().unwrap_or_default(),
        }
    });
    args.validate()?;
    let secrets = args.secrets()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run(args, secrets, dev_secrets))
}

async fn run(
    args: Args,
    secrets: herald_node::config::Secrets,
    dev_secrets: Option<DevSecrets>,
) -> anyhow::Result<()> {
    let node_id = args.node_id();
    let _telemetry = telemetry::init(&telemetry::Settings {
        service: "herald-node",
        instance: &node_id,
        log_format: &args.log_format,
        otlp_endpoint: args.otlp_endpoint.as_deref(),
        sample_ratio: args.trace_sample_ratio,
    })?;
    let auth = Authenticator::new(&secrets.auth)?;
    let channels = Arc::new(Registry::load(args.channels.as_deref())?);
    let metrics = Arc::new(Metrics::new());
    let hub = Arc::new(Hub::new(
        metrics.clone(),
        args.outbound_queue,
        args.max_connections_per_user,
    ));
    let listener =
        listen(args.listen).with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let advertised = args
        .advertise_addr
        .clone()
        .unwrap_or_else(|| addr.to_string());
    let background = Background::new();
    let (broker, presence): (Arc<dyn Broker>, Option<Arc<Presence>>) = match &args.redis_url {
        None => (Arc::new(MemoryBroker::new(hub.clone())), None),
        Some(url) => {
            let settings = RedisSettings {
                url: url.clone(),
                node_id: node_id.clone(),
                min_replicas: args
                    .redis_min_replicas
                    .unwrap_or(u32::from(url.starts_with("redis-cluster://"))),
                buffer: args.redis_buffer,
            };
            let broker = RedisBroker::connect(
                settings,
                hub.clone(),
                channels.clone(),
                metrics.clone(),
                &background,
            )
            .await
            .context("connecting to Redis")?;
            let presence = Presence::new(
                broker.client(),
                &node_id,
                &advertised,
                args.heartbeat_interval * 3,
            );
            (Arc::new(broker), Some(Arc::new(presence)))
        }
    };
    let node = Arc::new(Node::new(Parts {
        config: args,
        auth,
        api_key: secrets.api_key,
        channels,
        hub,
        broker,
        metrics,
        presence,
    }));
    tracing::info!(%addr, node = %node.id, broker = node.broker.name(), "herald-node started");
    // Harnesses and humans look for this line to find the port.
    println!("herald-node listening on {addr}");
    if let Some(dev_secrets) = &dev_secrets {
        println!("{}", dev::banner(dev_secrets, addr, &node.config.ws_path));
    }
    background.spawn(
        "channel reload",
        watch_channels(node.clone(), background.token()),
    );
    background.spawn_until_stopped("coalescing recovery", coalesce::recover(node.clone()));
    if let Some(presence) = &node.presence {
        let draining = {
            let node = node.clone();
            move || node.is_draining()
        };
        background.spawn(
            "presence heartbeat",
            presence::run(
                presence.clone(),
                node.hub.clone(),
                draining,
                node.config.heartbeat_interval,
                background.token(),
            ),
        );
    }
    let stop_http = CancellationToken::new();
    let server = tokio::spawn(server::serve(node.clone(), listener, stop_http.clone()));

    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM received"),
        _ = interrupt.recv() => tracing::info!("SIGINT received"),
    }
    shutdown(&node, &background, stop_http, server).await;
    Ok(())
}

/// Stops the node in order: WebSocket clients leave over the drain window while the
/// API keeps serving; then the HTTP server closes; then background tasks (channel
/// reloads, presence heartbeats, the Redis broker's loops) stop and are waited for;
/// last, the presence records go, so no heartbeat can write them back.
async fn shutdown(
    node: &Node,
    background: &Background,
    stop_http: CancellationToken,
    server: tokio::task::JoinHandle<()>,
) {
    // 1. Not ready and refusing new WebSockets; move clients elsewhere over the window.
    node.start_draining();
    // Held coalesced messages go out now, while their subscribers are still here.
    coalesce::flush_opened(node).await;
    let window = node.config.drain_window;
    tracing::info!(
        connections = node.hub.connection_count(),
        window = ?window,
        "draining"
    );
    node.hub.drain(window).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while node.hub.connection_count() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tracing::info!(left = node.hub.connection_count(), "drained");
    // 2. No more HTTP: requests in flight finish, then connections close.
    stop_http.cancel();
    match tokio::time::timeout(Duration::from_secs(2), server).await {
        Ok(_) => tracing::info!("HTTP server stopped"),
        Err(_) => tracing::warn!("HTTP requests still running after 2s; leaving them"),
    }
    // Windows opened by publishes during the drain.
    coalesce::flush_opened(node).await;
    // 3. Background tasks finish their current step and return.
    if background.stop(Duration::from_secs(5)).await {
        tracing::info!("background tasks stopped");
    } else {
        tracing::warn!("background tasks still running after 5s; leaving them");
    }
    // Closed connections' last writes (uncounting their users) land before step 4.
    if !node.finish_cleanups(Duration::from_secs(2)).await {
        tracing::warn!("connection cleanups still running after 2s; leaving them");
    }
    // 4. Nothing writes presence any more: remove it.
    if let Some(presence) = &node.presence {
        if let Err(e) = presence.leave().await {
            tracing::warn!(error = %e, "could not remove presence records");
        }
    }
    tracing::info!("herald-node stopped");
}

/// Binds with a deep accept backlog: connection storms (a node restart moving
/// thousands of clients at once) must queue, not have their SYNs dropped.
fn listen(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// Applies channel file changes until `stop` is cancelled.
async fn watch_channels(node: Arc<Node>, stop: CancellationToken) {
    let Some(path) = node.channels.source().map(|p| p.to_path_buf()) else {
        return;
    };
    let mut tick = tokio::time::interval(node.config.channels_reload);
    while stop.run_until_cancelled(tick.tick()).await.is_some() {
        match node.channels.reload() {
            Ok(true) => tracing::info!(path = %path.display(), "channels reloaded"),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, "channel file not applied; keeping the previous channels")
            }
        }
    }
}
