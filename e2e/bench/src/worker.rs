//! The worker process: owns a slice of the client connections.
//!
//! The parent re-executes the bench binary as `herald-bench worker`; the worker reads its
//! [`WorkerSpec`] from stdin, then obeys [`Command`]s one line at a time and answers each
//! with one [`Event`]. It exits on `quit`, when stdin closes, or at its own deadline, so a
//! crashed parent never leaves load running.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines, Stdin, Stdout};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::client::{self, small_ws_config, ClientConfig};
use super::ipc::{user_name, Command, ConnectReport, Event, WorkerSpec};
use super::net::source_ip;
use super::recorder::{ClientState, Recorder};
use super::rss;
use super::stats::{tally_error, LatencyHist};

/// Entry point of `herald-bench worker`; never returns.
pub fn main() -> ! {
    let code = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(serve()))
    {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("herald-bench worker: {e:#}");
            1
        }
    };
    // Exit at once: the runtime would otherwise wait for the blocking stdin reader.
    std::process::exit(code)
}

async fn serve() -> Result<()> {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut out = tokio::io::stdout();
    let first = lines
        .next_line()
        .await?
        .context("no worker spec on stdin")?;
    let spec: WorkerSpec = serde_json::from_str(&first).context("parsing worker spec")?;
    let deadline = Duration::from_millis(spec.deadline_ms);
    let index = spec.index;
    let result = tokio::select! {
        r = session(spec, &mut lines, &mut out) => r,
        () = tokio::time::sleep(deadline) => {
            eprintln!("herald-bench worker {index}: deadline reached, exiting");
            Ok(())
        }
    };
    if let Err(e) = &result {
        let _ = send(
            &mut out,
            &Event::Failed {
                error: format!("{e:#}"),
            },
        )
        .await;
    }
    result
}

async fn send(out: &mut Stdout, event: &Event) -> Result<()> {
    let mut line = serde_json::to_vec(event)?;
    line.push(b'\n');
    out.write_all(&line).await?;
    out.flush().await?;
    Ok(())
}

async fn session(
    spec: WorkerSpec,
    lines: &mut Lines<BufReader<Stdin>>,
    out: &mut Stdout,
) -> Result<()> {
    let cfgs = client_configs(&spec)?;
    let recorder = Arc::new(Recorder::default());
    send(out, &Event::Hello).await?;

    while let Some(line) = lines.next_line().await? {
        let command: Command =
            serde_json::from_str(&line).with_context(|| format!("bad command {line:?}"))?;
        let event = match command {
            Command::Connect => Event::Connected(connect_all(&spec, &cfgs, &recorder).await),
            Command::Start { run } => {
                recorder.start(run);
                Event::Started {
                    alive: recorder.alive(),
                }
            }
            Command::Progress => Event::Progress {
                received: recorder.received(),
                alive: recorder.alive(),
            },
            Command::Collect => Event::Results {
                sample: recorder.sample(),
                alive: recorder.alive(),
            },
            Command::Quit => return Ok(()),
        };
        send(out, &event).await?;
    }
    Ok(())
}

/// One client configuration per node address (at least one).
fn client_configs(spec: &WorkerSpec) -> Result<Vec<ClientConfig>> {
    let addrs = if spec.ws_addrs.is_empty() {
        vec![spec.target.ws_addr]
    } else {
        spec.ws_addrs.clone()
    };
    addrs
        .into_iter()
        .map(|ws_addr| {
            let mut target = spec.target.clone();
            target.ws_addr = ws_addr;
            Ok(ClientConfig {
                target: target.build()?,
                ws_addr,
                stream: spec.stream,
                ws_config: small_ws_config(),
            })
        })
        .collect()
}

/// Opens this worker's connections with bounded concurrency; each live one gets a reader task.
/// User `i` (global index) connects to node `i % cfgs.len()`.
async fn connect_all(
    spec: &WorkerSpec,
    cfgs: &[ClientConfig],
    recorder: &Arc<Recorder>,
) -> ConnectReport {
    let started = Instant::now();
    let timeout = Duration::from_millis(spec.connect_timeout_ms);
    let permits = Arc::new(Semaphore::new(spec.concurrency.max(1)));
    let mut attempts = JoinSet::new();
    let mut report = ConnectReport::default();
    let mut times = LatencyHist::new();
    let mut ready_times = LatencyHist::new();
    let mut errors = BTreeMap::new();

    let mut settle = |result: Result<(usize, Duration, Duration), String>| match result {
        Ok((index, took, ready)) => {
            report.ok += 1;
            report.users.push(index as u64);
            times.record(took.as_micros() as u64);
            ready_times.record(ready.as_micros() as u64);
        }
        Err(e) => {
            report.failed += 1;
            tally_error(&mut errors, e, 1);
        }
    };

    for global in spec.first_user..spec.first_user + spec.users {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let cfg = cfgs[global % cfgs.len()].clone();
        let recorder = recorder.clone();
        let user = user_name(&spec.user_prefix, global);
        let source = source_ip(global, spec.source_ips);
        attempts.spawn(async move {
            let _permit = permit;
            let begun = Instant::now();
            match tokio::time::timeout(timeout, client::open(&cfg, global, &user, source)).await {
                Ok(Ok((ws, took))) => {
                    let ready = begun.elapsed();
                    recorder.connected();
                    tokio::spawn(client::read_loop(
                        ws,
                        cfg.target.clone(),
                        recorder,
                        ClientState::new(user),
                    ));
                    Ok((global, took, ready))
                }
                Ok(Err(e)) => Err(format!("{e:#}")),
                Err(_) => Err(format!("connect+subscribe timed out after {timeout:?}")),
            }
        });
        while let Some(done) = attempts.try_join_next() {
            settle(done.unwrap_or_else(|e| Err(format!("task: {e}"))));
        }
    }
    while let Some(done) = attempts.join_next().await {
        settle(done.unwrap_or_else(|e| Err(format!("task: {e}"))));
    }

    report.users.sort_unstable();
    report.connect_time = times.to_data();
    report.ready_time = ready_times.to_data();
    report.errors = errors;
    report.elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    report.rss_bytes = rss::of_self().ok();
    report
}
