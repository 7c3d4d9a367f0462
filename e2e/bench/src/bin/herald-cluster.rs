//! `herald-cluster`: a local Herald cluster on loopback, for development and for
//! `herald-bench`'s multi-node mode.
//!
//! Starts a Redis Cluster (real `redis-server` processes, through the e2e fixture) and N
//! `herald-node` processes on it, prints where everything is, then runs until Ctrl-C,
//! SIGTERM or `--for` and tears everything down. Standard output, one item per line:
//!
//! ```text
//! node node-0 127.0.0.1:41811 pid 4242
//! ...
//! redis-url redis-cluster://127.0.0.1:P1?node=127.0.0.1:P2&node=127.0.0.1:P3
//! redis-pids 4230,4231,4232,4233,4234,4235
//! server-pids 4242,4243,4244
//! export HERALD_ADDR=127.0.0.1:41811,... HERALD_JWT_SECRET=... HERALD_API_KEY=...
//! ```

use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use herald_testkit::node::{binary, TestNode};
use herald_testkit::redis::RedisCluster;
use tokio::signal::unix::{signal, SignalKind};

/// Runs a Redis Cluster and several herald-node processes on loopback until interrupted.
#[derive(Debug, Parser)]
#[command(name = "herald-cluster", version)]
struct Args {
    /// herald-node processes.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Redis Cluster masters (Redis needs at least 3).
    #[arg(long, default_value_t = 3)]
    masters: usize,
    /// Replicas per Redis master.
    #[arg(long, default_value_t = 1)]
    replicas: usize,
    /// The herald-node binary [default: $HERALD_NODE_BIN, else next to this executable].
    #[arg(long)]
    node_bin: Option<PathBuf>,
    /// HS256 secret the nodes verify client tokens with [default: generated].
    #[arg(long, env = "HERALD_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// Publish API key of the nodes [default: generated].
    #[arg(long, env = "HERALD_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Stop after this long [default: run until Ctrl-C or SIGTERM].
    #[arg(long = "for", value_parser = humantime::parse_duration)]
    run_for: Option<Duration>,
    /// RUST_LOG for the nodes (their logs go to this process's stderr).
    #[arg(long, default_value = "warn")]
    log: String,
    /// Further herald-node flags, after `--` (e.g. `-- --channels channels.json`).
    #[arg(last = true)]
    node_args: Vec<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("herald-cluster: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("herald-cluster: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<()> {
    if args.nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    let bin = args.node_bin.clone().unwrap_or_else(binary);
    if !bin.exists() {
        bail!("{} not found", bin.display());
    }
    let jwt_secret = match args.jwt_secret.clone() {
        Some(secret) => secret,
        None => random_hex(24)?,
    };
    let api_key = match args.api_key.clone() {
        Some(key) => key,
        None => random_hex(24)?,
    };
    // Stop signals are caught from here on, so a Ctrl-C during start-up still tears down.
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;

    eprintln!(
        "herald-cluster: starting a Redis Cluster ({} masters, {} replica(s) each)",
        args.masters, args.replicas
    );
    let redis = RedisCluster::start(args.masters, args.replicas)
        .await
        .context("starting the Redis Cluster")?;
    let url = redis.url();
    let redis_pids: Vec<u32> = redis.nodes().iter().filter_map(|n| n.pid).collect();

    let mut nodes = Vec::with_capacity(args.nodes);
    for i in 0..args.nodes {
        let id = format!("node-{i}");
        let mut command = Command::new(&bin);
        // Only the flags below configure the node, not this shell's HERALD_* variables.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("HERALD_") {
                command.env_remove(key);
            }
        }
        command
            .args([
                "--listen",
                "127.0.0.1:0",
                "--redis-url",
                &url,
                "--node-id",
                &id,
            ])
            .args(["--jwt-secret", &jwt_secret, "--api-key", &api_key])
            .args(&args.node_args)
            .env("RUST_LOG", &args.log)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        // Waits (up to 20 s) for the node to print its address; killed on drop.
        let node = TestNode::spawn(command);
        println!("node {id} {} pid {}", node.addr, node.pid());
        nodes.push(node);
    }

    let join = |items: Vec<String>| items.join(",");
    let addrs = join(nodes.iter().map(|n| n.addr.to_string()).collect());
    println!("redis-url {url}");
    println!(
        "redis-pids {}",
        join(redis_pids.iter().map(u32::to_string).collect())
    );
    println!(
        "server-pids {}",
        join(nodes.iter().map(|n| n.pid().to_string()).collect())
    );
    println!("export HERALD_ADDR={addrs} HERALD_JWT_SECRET={jwt_secret} HERALD_API_KEY={api_key}");
    eprintln!(
        "herald-cluster: ready; {}",
        match args.run_for {
            Some(d) => format!("stopping in {}", humantime::format_duration(d)),
            None => "Ctrl-C or SIGTERM stops it".to_owned(),
        }
    );

    let deadline = async {
        match args.run_for {
            Some(limit) => tokio::time::sleep(limit).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    let mut check = tokio::time::interval(Duration::from_secs(1));
    let outcome = loop {
        tokio::select! {
            _ = interrupt.recv() => break Ok(()),
            _ = terminate.recv() => break Ok(()),
            () = &mut deadline => break Ok(()),
            _ = check.tick() => {
                if let Some((i, status)) = nodes
                    .iter_mut()
                    .enumerate()
                    .find_map(|(i, n)| n.wait_exit(Duration::ZERO).map(|s| (i, s)))
                {
                    break Err(anyhow::anyhow!("node-{i} exited ({status})"));
                }
            }
        }
    };
    eprintln!("herald-cluster: stopping");
    drop(nodes);
    drop(redis);
    outcome
}

/// `bytes` random bytes from the kernel, hex-encoded.
fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut buf))
        .context("reading /dev/urandom")?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}
