//! Orchestration of one scenario from the parent process: size the run, start workers,
//! connect, read server memory, drive publishing steps (fixed rate or `--find-max`),
//! read the server's and Redis's CPU time around each step, and assemble the [`Report`].
//!
//! With several node addresses, user `i` connects to node `i % nodes` and publish requests
//! go round-robin over the nodes (or over `--publish-addr`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::adapter::{Stream, TagFilter, Target, TargetSpec};
use super::cli::{Common, LoadArgs, Scenario};
use super::ipc::{user_name, Command, ConnectReport, Event, WorkerSpec};
use super::net::{auto_processes, auto_source_ips, conns_per_process, ensure_loopback, fd_limit};
use super::payload::now_micros;
use super::pool::Pool;
use super::publisher::{self, PublishOutcome, PublishPlan};
use super::ramp::{judge, Limits, RateSearch, StepFigures};
use super::report::{
    ConnectFigures, CpuFigures, FindMaxFigures, LoadFigures, MemoryFigures, ProcessCpu,
    PublishFigures, Report,
};
use super::stats::{tally_error, LatencyHist, RunTotals};
use super::{cpu, rss};

/// Ephemeral ports one source address offers (Linux default range 32768–60999).
const PORTS_PER_SOURCE_IP: usize = 28_000;
/// How often the parent polls delivery progress while draining.
const PROGRESS_POLL: Duration = Duration::from_millis(100);
/// Shortest `--settle` over which the idle CPU use of the watched processes is measured.
const MIN_IDLE_WINDOW: Duration = Duration::from_secs(1);
/// Smallest acceptable achieved/target publish ratio in `--find-max`.
const MIN_PUBLISH_RATIO: f64 = 0.95;

/// Runs `scenario` and returns its figures.
pub async fn run(common: &Common, scenario: &Scenario) -> Result<Report> {
    let ws_addrs = loopback_list(&common.addr)?;
    let publish_addrs = if common.publish_addr.is_empty() {
        ws_addrs.clone()
    } else {
        loopback_list(&common.publish_addr)?
    };
    let (ws_addr, publish_addr) = (ws_addrs[0], publish_addrs[0]);
    let (stream, load) = match scenario {
        Scenario::Connect | Scenario::Idle => (Stream::Broadcast, None),
        Scenario::Broadcast(l) => (Stream::Broadcast, Some(l)),
        Scenario::Personal(l) => (Stream::Personal, Some(l)),
        Scenario::Worker => bail!("the worker scenario is internal"),
        Scenario::Compare(_) => bail!("compare runs through bench::compare"),
    };
    let n = common.connections;
    if n == 0 {
        bail!("--connections must be at least 1");
    }
    if matches!(scenario, Scenario::Idle) && common.server_pid.is_empty() {
        bail!("idle measures server memory: pass --server-pid");
    }
    if load.is_some() && common.api_key.is_none() {
        bail!("publishing needs --api-key (or HERALD_API_KEY)");
    }
    let tag_filter_every = load.map_or(0, |l| l.filter_every);
    if tag_filter_every > 0
        && (stream != Stream::Broadcast || common.target != crate::adapter::TargetKind::Herald)
    {
        bail!("--filter-every applies to the Herald broadcast only");
    }
    let spec = TargetSpec {
        kind: common.target,
        ws_addr,
        publish_addr,
        jwt_secret: common.jwt_secret.clone().unwrap_or_default(),
        api_key: common.api_key.clone().unwrap_or_default(),
        token_ttl_secs: common.timeout.as_secs() + 3600,
        tag_filter_every,
    };
    let target = spec.build()?;

    let limit = fd_limit();
    let processes = common
        .processes
        .unwrap_or_else(|| auto_processes(n, limit))
        .clamp(1, n);
    if n.div_ceil(processes) > conns_per_process(limit) {
        bail!(
            "{} connections per process exceed the open-file limit {limit}: use --processes {} or more",
            n.div_ceil(processes),
            auto_processes(n, limit)
        );
    }
    let source_ips = common.source_ips.unwrap_or_else(|| auto_source_ips(n));
    if n.div_ceil(usize::from(source_ips)) > PORTS_PER_SOURCE_IP {
        eprintln!("warning: more than {PORTS_PER_SOURCE_IP} connections per source IP; raise --source-ips");
    }
    let specs = split(n, processes)
        .into_iter()
        .enumerate()
        .map(|(index, (first_user, users))| WorkerSpec {
            index,
            target: spec.clone(),
            ws_addrs: ws_addrs.clone(),
            stream,
            first_user,
            users,
            user_prefix: common.user_prefix.clone(),
            source_ips,
            concurrency: common.concurrency.div_ceil(processes).max(1),
            connect_timeout_ms: millis(common.connect_timeout),
            deadline_ms: millis(common.timeout + Duration::from_secs(30)),
        })
        .collect();

    let server_pids = &common.server_pid;
    let baseline = if server_pids.is_empty() {
        None
    } else {
        Some(rss::sum_of(server_pids)?)
    };
    let mut watch = CpuWatch {
        server_pids: server_pids.clone(),
        redis_pids: common.redis_pids.clone(),
        ..CpuWatch::default()
    };
    // Fail before connecting when a pid cannot be read.
    watch.read()?;
    eprintln!(
        "herald-bench: connecting {n} clients to {} node(s) ({processes} process(es), {source_ips} source IP(s))",
        ws_addrs.len()
    );
    let mut pool = Pool::spawn(specs).await?;
    watch.bench_pids = std::iter::once(std::process::id())
        .chain(pool.pids())
        .collect();
    let started = Instant::now();
    let events = pool.ask(&Command::Connect).await?;
    let (connect, users) = connect_figures(events, started.elapsed())?;
    eprintln!(
        "herald-bench: {} connected, {} failed in {:.2} s",
        connect.ok, connect.failed, connect.elapsed_s
    );
    if connect.ok == 0 {
        bail!("no client connected: {:?}", connect.errors);
    }
    let settle_start = watch.read()?;
    tokio::time::sleep(common.settle).await;
    if let (Some(from), Some(to)) = (settle_start, watch.read()?) {
        watch.set_idle(&from, &to);
    }
    let memory = match baseline {
        Some(base) => Some(memory_figures(
            server_pids,
            base,
            rss::sum_of(server_pids)?,
            connect.ok,
        )),
        None => None,
    };

    let mut report = Report {
        scenario: scenario.name(),
        target: target.name(),
        addr: ws_addrs
            .iter()
            .map(SocketAddr::to_string)
            .collect::<Vec<_>>()
            .join(","),
        nodes: ws_addrs.len(),
        connections: n as u64,
        processes,
        source_ips,
        connect,
        memory,
        load: None,
        find_max: None,
    };
    if let Some(args) = load {
        let recipients = match stream {
            Stream::Personal => users
                .iter()
                .map(|&i| user_name(&common.user_prefix, i as usize))
                .collect(),
            Stream::Broadcast => Vec::new(),
        };
        let mut ctx = LoadRunner {
            pool: &mut pool,
            target,
            publish_addrs,
            stream,
            args,
            watch,
            recipients: Arc::new(recipients),
            connections: n,
            next_run: 1,
        };
        let rate = args.rate.unwrap_or(match stream {
            Stream::Broadcast => 10.0,
            Stream::Personal => 1000.0,
        });
        if !(rate.is_finite() && rate > 0.0) {
            bail!("--rate must be positive");
        }
        if args.find_max {
            report.find_max = Some(find_max(&mut ctx, rate).await?);
        } else {
            report.load = Some(ctx.step(rate).await?);
        }
    }
    pool.shutdown().await;
    Ok(report)
}

/// Checks that every address is loopback and that there is at least one.
fn loopback_list(addrs: &[SocketAddr]) -> Result<Vec<SocketAddr>> {
    if addrs.is_empty() {
        bail!("no server address given");
    }
    addrs.iter().map(|&a| ensure_loopback(a)).collect()
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Splits `n` users over `parts` workers as `(first, count)` ranges differing by at most one.
pub fn split(n: usize, parts: usize) -> Vec<(usize, usize)> {
    let parts = parts.max(1);
    let (base, extra) = (n / parts, n % parts);
    let mut first = 0;
    (0..parts)
        .map(|i| {
            let count = base + usize::from(i < extra);
            let range = (first, count);
            first += count;
            range
        })
        .collect()
}

/// Merges the workers' connection reports; also returns the connected users' indices.
fn connect_figures(events: Vec<Event>, elapsed: Duration) -> Result<(ConnectFigures, Vec<u64>)> {
    let mut figures = ConnectFigures::default();
    let mut times = LatencyHist::new();
    let mut ready_times = LatencyHist::new();
    let mut users = Vec::new();
    let mut client_rss = 0u64;
    for event in events {
        let Event::Connected(ConnectReport {
            ok,
            failed,
            errors,
            connect_time,
            ready_time,
            users: mut worker_users,
            rss_bytes,
            ..
        }) = event
        else {
            bail!("unexpected worker answer to connect: {event:?}");
        };
        figures.ok += ok;
        figures.failed += failed;
        for (message, count) in errors {
            tally_error(&mut figures.errors, message, count);
        }
        times.merge(&LatencyHist::from_data(&connect_time));
        ready_times.merge(&LatencyHist::from_data(&ready_time));
        users.append(&mut worker_users);
        client_rss += rss_bytes.unwrap_or(0);
    }
    figures.elapsed_s = elapsed.as_secs_f64();
    figures.rate_per_s = per_second(figures.ok, elapsed);
    figures.time = times.summary();
    figures.ready_time = ready_times.summary();
    figures.client_rss_per_conn_bytes =
        (figures.ok > 0).then(|| client_rss as f64 / figures.ok as f64);
    users.sort_unstable();
    Ok((figures, users))
}

fn per_second(count: u64, over: Duration) -> f64 {
    let secs = over.as_secs_f64();
    if secs > 0.0 {
        count as f64 / secs
    } else {
        0.0
    }
}

/// Memory per connection from two RSS readings (each summed over `pids`).
pub fn memory_figures(pids: &[u32], baseline: u64, after: u64, connections: u64) -> MemoryFigures {
    let per_conn = (after as f64 - baseline as f64) / connections.max(1) as f64;
    MemoryFigures {
        server_pid: pids.first().copied().unwrap_or_default(),
        server_pids: pids.to_vec(),
        baseline_bytes: baseline,
        after_bytes: after,
        per_conn_bytes: per_conn,
        per_conn_kib: per_conn / 1024.0,
    }
}

/// CPU seconds used so far by the watched process groups, at one instant.
#[derive(Debug, Clone, Copy)]
struct CpuReading {
    at: Instant,
    server_s: f64,
    redis_s: f64,
    bench_s: f64,
}

/// The processes whose CPU time each load step measures, and their idle use.
#[derive(Debug, Clone, Default)]
struct CpuWatch {
    server_pids: Vec<u32>,
    redis_pids: Vec<u32>,
    /// This process and its workers (the load generator).
    bench_pids: Vec<u32>,
    /// Cores busy during `--settle` (no load): server, Redis.
    idle: Option<(f64, f64)>,
}

impl CpuWatch {
    /// Reads every watched process; `None` when nothing is watched.
    fn read(&self) -> Result<Option<CpuReading>> {
        if self.server_pids.is_empty() && self.redis_pids.is_empty() && self.bench_pids.is_empty() {
            return Ok(None);
        }
        Ok(Some(CpuReading {
            at: Instant::now(),
            server_s: cpu::seconds_of(&self.server_pids).context("server CPU time")?,
            redis_s: cpu::seconds_of(&self.redis_pids).context("Redis CPU time")?,
            bench_s: cpu::seconds_of(&self.bench_pids).context("bench CPU time")?,
        }))
    }

    /// Records the use between two readings taken while no load ran (ignored when they are
    /// less than a second apart: `/proc` counts in clock ticks, usually 10 ms).
    fn set_idle(&mut self, from: &CpuReading, to: &CpuReading) {
        let secs = to.at.duration_since(from.at).as_secs_f64();
        if secs >= MIN_IDLE_WINDOW.as_secs_f64() {
            self.idle = Some((
                (to.server_s - from.server_s) / secs,
                (to.redis_s - from.redis_s) / secs,
            ));
        }
    }

    /// Figures for a step between two readings.
    fn figures(
        &self,
        from: &CpuReading,
        to: &CpuReading,
        published: u64,
        delivered: u64,
    ) -> CpuFigures {
        let window_s = to.at.duration_since(from.at).as_secs_f64();
        let group = |pids: &[u32], used: f64, idle: Option<f64>| {
            (!pids.is_empty())
                .then(|| ProcessCpu::new(pids.to_vec(), used, window_s, idle, published, delivered))
        };
        CpuFigures {
            window_s,
            server: group(
                &self.server_pids,
                to.server_s - from.server_s,
                self.idle.map(|i| i.0),
            ),
            redis: group(
                &self.redis_pids,
                to.redis_s - from.redis_s,
                self.idle.map(|i| i.1),
            ),
            bench: group(&self.bench_pids, to.bench_s - from.bench_s, None),
        }
    }
}

/// Drives publishing steps against the connected workers.
struct LoadRunner<'a> {
    pool: &'a mut Pool,
    target: Arc<dyn Target>,
    publish_addrs: Vec<SocketAddr>,
    stream: Stream,
    args: &'a LoadArgs,
    watch: CpuWatch,
    recipients: Arc<Vec<String>>,
    /// Clients started (`-n`), for the tag-filtered expectation.
    connections: usize,
    next_run: u32,
}

impl LoadRunner<'_> {
    /// Publishes at `rate` for the configured duration and measures the deliveries.
    async fn step(&mut self, rate: f64) -> Result<LoadFigures> {
        let run = self.next_run;
        self.next_run += 1;
        let mut clients = 0;
        for event in self.pool.ask(&Command::Start { run }).await? {
            match event {
                Event::Started { alive } => clients += alive,
                other => bail!("unexpected worker answer to start: {other:?}"),
            }
        }
        let plan = PublishPlan {
            run,
            stream: self.stream,
            rate,
            duration: self.args.duration,
            batch: self.args.batch,
            connections: self.args.publish_conns,
            recipients: self.recipients.clone(),
        };
        eprintln!(
            "herald-bench: run {run}: {} publishes at {rate:.1}/s to {clients} clients",
            plan.total()
        );
        let cpu_before = self.watch.read()?;
        let publish_start = now_micros();
        let outcome = publisher::publish(self.target.clone(), &self.publish_addrs, &plan).await?;
        let expected = match (self.stream, TagFilter::from_every(self.args.filter_every)) {
            (Stream::Broadcast, None) => outcome.accepted * clients,
            (Stream::Broadcast, Some(filter)) => {
                filter.expected(outcome.accepted, clients, self.connections)
            }
            (Stream::Personal, _) => outcome.accepted,
        };
        self.drain(expected).await?;
        let cpu_after = self.watch.read()?;
        let mut totals = RunTotals::default();
        for event in self.pool.ask(&Command::Collect).await? {
            match event {
                Event::Results { sample, .. } => totals.merge(&sample),
                other => bail!("unexpected worker answer to collect: {other:?}"),
            }
        }
        let mut figures = load_figures(&plan, &outcome, clients, expected, &totals, publish_start);
        if let (Some(from), Some(to)) = (cpu_before, cpu_after) {
            figures.cpu = Some(
                self.watch
                    .figures(&from, &to, outcome.accepted, figures.received),
            );
        }
        Ok(figures)
    }

    /// Waits until every expected delivery arrived or none arrived for `--drain`.
    async fn drain(&mut self, expected: u64) -> Result<()> {
        let mut last = None;
        let mut since = Instant::now();
        loop {
            let mut received = 0;
            for event in self.pool.ask(&Command::Progress).await? {
                if let Event::Progress { received: r, .. } = event {
                    received += r;
                }
            }
            if received >= expected {
                return Ok(());
            }
            if last != Some(received) {
                last = Some(received);
                since = Instant::now();
            } else if since.elapsed() >= self.args.drain {
                return Ok(());
            }
            tokio::time::sleep(PROGRESS_POLL).await;
        }
    }
}

fn load_figures(
    plan: &PublishPlan,
    outcome: &PublishOutcome,
    clients: u64,
    expected: u64,
    totals: &RunTotals,
    publish_start_us: u64,
) -> LoadFigures {
    let c = totals.counts;
    let window_s = totals
        .last_us
        .map_or(0.0, |last| {
            last.saturating_sub(publish_start_us) as f64 / 1e6
        })
        .max(plan.duration.as_secs_f64());
    LoadFigures {
        run: plan.run,
        stream: plan.stream,
        target_rate: plan.rate,
        duration_s: plan.duration.as_secs_f64(),
        publish: PublishFigures {
            attempted: outcome.attempted,
            accepted: outcome.accepted,
            requests: outcome.requests,
            failed_requests: outcome.failed_requests,
            errors: outcome.errors.clone(),
            achieved_rate: outcome.achieved_rate(plan.duration),
            request_time: outcome.request_latency.summary(),
        },
        clients,
        expected,
        received: c.received,
        lost: expected.saturating_sub(c.received),
        duplicates: c.duplicates,
        out_of_order: c.out_of_order,
        misdelivered: c.misdelivered,
        stale: c.stale,
        disconnects: c.disconnects,
        deliveries_per_s: if window_s > 0.0 {
            c.received as f64 / window_s
        } else {
            0.0
        },
        latency: totals.latency.summary(),
        cpu: None,
        failure: None,
    }
}

/// What [`judge`] needs from a step.
fn step_figures(l: &LoadFigures) -> StepFigures {
    StepFigures {
        target_rate: l.target_rate,
        achieved_rate: l.publish.achieved_rate,
        expected: l.expected,
        lost: l.lost,
        wrong: l.duplicates + l.misdelivered,
        p99_ms: l.latency.p99_ms,
        disconnects: l.disconnects,
    }
}

async fn find_max(ctx: &mut LoadRunner<'_>, start: f64) -> Result<FindMaxFigures> {
    let args = ctx.args;
    let limits = Limits {
        max_p99_ms: args.max_p99.as_secs_f64() * 1000.0,
        max_loss_ratio: args.max_loss_pct / 100.0,
        min_publish_ratio: MIN_PUBLISH_RATIO,
    };
    let mut search = RateSearch::new(
        start,
        args.step_factor,
        args.refine,
        args.max_steps,
        args.max_rate,
    );
    let mut steps: Vec<LoadFigures> = Vec::new();
    while let Some(rate) = search.next_rate() {
        let mut step = ctx.step(rate).await?;
        let verdict = judge(&step_figures(&step), &limits);
        eprintln!(
            "herald-bench: {rate:.1}/s -> {:.0} deliveries/s, p99 {:.2} ms, lost {}: {}",
            step.deliveries_per_s,
            step.latency.p99_ms,
            step.lost,
            verdict.as_ref().err().map_or("ok", String::as_str)
        );
        search.record(rate, verdict.is_ok());
        step.failure = verdict.err();
        let none_left = step.disconnects >= step.clients;
        steps.push(step);
        if none_left {
            eprintln!("herald-bench: every client disconnected; stopping the search");
            break;
        }
        // Let the server work off any backlog before the next step.
        tokio::time::sleep(args.drain).await;
    }
    let best = search.best();
    let max_deliveries_per_s = steps
        .iter()
        .filter(|s| s.failure.is_none())
        .map(|s| s.deliveries_per_s)
        .reduce(f64::max);
    let at_half = match best {
        Some(rate) => Some(
            ctx.step(rate / 2.0)
                .await
                .context("run at 50% of the maximum")?,
        ),
        None => None,
    };
    Ok(FindMaxFigures {
        steps,
        max_rate: best,
        max_deliveries_per_s,
        at_half,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{Counts, RunSample};

    #[test]
    fn splits_evenly() {
        assert_eq!(split(10, 3), vec![(0, 4), (4, 3), (7, 3)]);
        assert_eq!(split(2, 1), vec![(0, 2)]);
        assert_eq!(split(5, 0), vec![(0, 5)]);
        assert_eq!(
            split(100_000, 6).iter().map(|r| r.1).sum::<usize>(),
            100_000
        );
    }

    #[test]
    fn memory_per_connection() {
        let m = memory_figures(&[7], 10 << 20, 30 << 20, 1024);
        assert_eq!(m.per_conn_bytes, 20.0 * 1024.0);
        assert_eq!(m.per_conn_kib, 20.0);
        assert_eq!((m.server_pid, m.server_pids.as_slice()), (7, &[7][..]));
        assert!(memory_figures(&[7], 100, 50, 10).per_conn_bytes < 0.0);
        let m = memory_figures(&[7, 8, 9], 3 << 20, 6 << 20, 3);
        assert_eq!((m.server_pid, m.server_pids.len()), (7, 3));
        assert_eq!(m.per_conn_bytes, 1024.0 * 1024.0);
    }

    #[test]
    fn addresses_must_be_loopback() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.2:2".parse().unwrap();
        assert_eq!(loopback_list(&[a, b]).unwrap(), [a, b]);
        assert!(loopback_list(&[]).is_err());
        assert!(loopback_list(&[a, "10.0.0.1:1".parse().unwrap()]).is_err());
    }

    #[test]
    fn cpu_figures_from_readings() {
        let mut watch = CpuWatch {
            server_pids: vec![1, 2, 3],
            redis_pids: vec![4, 5],
            bench_pids: vec![6],
            idle: None,
        };
        let t0 = Instant::now();
        let at = |secs: u64, server_s, redis_s| CpuReading {
            at: t0 + Duration::from_secs(secs),
            server_s,
            redis_s,
            bench_s: server_s / 2.0,
        };
        watch.set_idle(&at(0, 1.0, 2.0), &at(2, 1.2, 2.1));
        let (idle_server, idle_redis) = watch.idle.unwrap();
        let mut short = CpuWatch::default();
        short.set_idle(&at(0, 1.0, 2.0), &at(0, 1.2, 2.1));
        assert!(short.idle.is_none());
        assert!((idle_server - 0.1).abs() < 1e-9 && (idle_redis - 0.05).abs() < 1e-9);
        let f = watch.figures(&at(10, 5.0, 3.0), &at(20, 8.0, 3.6), 1000, 3_000_000);
        assert_eq!(f.window_s, 10.0);
        let server = f.server.unwrap();
        assert_eq!(server.pids, [1, 2, 3]);
        assert!((server.cpu_s_per_million_deliveries - 1.0).abs() < 1e-9);
        let redis = f.redis.unwrap();
        assert!((redis.us_per_publish - 600.0).abs() < 1e-9);
        assert!((redis.net_us_per_publish.unwrap() - 100.0).abs() < 1e-9);
        let bench = f.bench.unwrap();
        assert_eq!(bench.pids, [6]);
        assert!((bench.cpu_s_per_million_deliveries - 0.5).abs() < 1e-9);
        watch.server_pids.clear();
        assert!(watch
            .figures(&at(0, 0.0, 0.0), &at(1, 0.0, 0.0), 1, 1)
            .server
            .is_none());
        assert!(CpuWatch::default().read().unwrap().is_none());
    }

    #[test]
    fn merges_connect_reports() {
        let mut h = LatencyHist::new();
        h.record(1000);
        let report = |ok, users: Vec<u64>| {
            Event::Connected(ConnectReport {
                ok,
                failed: 1,
                errors: [("refused".to_string(), 1)].into(),
                connect_time: h.to_data(),
                users,
                rss_bytes: Some(4096),
                ..ConnectReport::default()
            })
        };
        let (f, users) = connect_figures(
            vec![report(2, vec![2, 3]), report(2, vec![0, 1])],
            Duration::from_secs(2),
        )
        .unwrap();
        assert_eq!((f.ok, f.failed, f.errors["refused"]), (4, 2, 2));
        assert_eq!(f.rate_per_s, 2.0);
        assert_eq!(f.time.count, 2);
        assert_eq!(f.client_rss_per_conn_bytes, Some(2048.0));
        assert_eq!(users, vec![0, 1, 2, 3]);
        assert!(connect_figures(vec![Event::Hello], Duration::ZERO).is_err());
    }

    #[test]
    fn load_figures_count_loss_and_rate() {
        let plan = PublishPlan {
            run: 1,
            stream: Stream::Broadcast,
            rate: 10.0,
            duration: Duration::from_secs(2),
            batch: 1,
            connections: 1,
            recipients: Arc::default(),
        };
        let outcome = PublishOutcome {
            attempted: 20,
            accepted: 20,
            ..PublishOutcome::default()
        };
        let mut totals = RunTotals::default();
        totals.merge(&RunSample {
            counts: Counts {
                received: 195,
                duplicates: 1,
                ..Counts::default()
            },
            first_us: Some(1_000_000),
            last_us: Some(5_000_000),
            ..RunSample::default()
        });
        let f = load_figures(&plan, &outcome, 10, 200, &totals, 1_000_000);
        assert_eq!(f.lost, 5);
        assert_eq!(f.deliveries_per_s, 195.0 / 4.0);
        assert_eq!(f.publish.achieved_rate, 10.0);
        let s = step_figures(&f);
        assert_eq!((s.lost, s.wrong, s.expected), (5, 1, 200));
    }
}
