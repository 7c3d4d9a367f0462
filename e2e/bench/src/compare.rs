//! `herald-bench compare`: the same workloads against Herald, Centrifugo and the legacy
//! Django Channels stack in one command, reported as ratios (a Markdown table and a PNG).
//!
//! Absolute figures from a shared 2-core VM say little on their own; measured the same way,
//! on the same machine, within the same minutes, the ratios between servers do. Every server
//! is started here (fresh per workload and run, on loopback), driven through its
//! [`adapter`](super::adapter) by the same [`run`] code, and stopped again. Workloads:
//!
//! 1. **idle**: N subscribed clients; server RSS growth per connection.
//! 2. **churn**: connect + subscribe as fast as allowed; rate and p99 time to subscribed.
//! 3. **broadcast**: `--find-max` (zero loss, p99 ≤ `--max-p99`): maximum deliveries/s and
//!    p99 at 50 % of each server's own maximum; then every server at the *same* offered
//!    load, 50 % of Herald's maximum, for p50/p99 and CPU per delivery.
//! 4. **personal**: `--find-max` over per-user messages: maximum deliveries/s, p99 at half.
//! 5. **3 nodes on Redis Cluster** (Herald and Centrifugo): fixed-rate broadcast and
//!    personal; server and Redis CPU per message.
//!
//! Fixed-rate workloads run `--runs` times and the broadcast search `--search-runs` times,
//! reported as medians; the personal search runs `--personal-search-runs` times (once by
//! default: it mostly finds the ceiling of one publish connection).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, ValueEnum};
use plotters::style::RGBColor;
use serde::Serialize;

use super::adapter::{TargetKind, TargetSpec};
use super::chart::{self, Bar, Panel};
use super::cli::{Common, LoadArgs, Scenario};
use super::peers::centrifugo::{self, CentrifugoOptions, CentrifugoPeer, Engine};
use super::peers::legacy::{LegacyOptions, LegacyPeer};
use super::report::{LoadFigures, Report};
use super::run;
use herald_testkit::node::TestNode;
use herald_testkit::redis::RedisCluster;

/// Secret and key the Herald nodes are started with (loopback only, per run).
const HERALD_SECRET: &str = "compare-herald-jwt-secret";
const HERALD_API_KEY: &str = "compare-herald-api-key";

/// A server under comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Server {
    /// `herald-node` (embedded broker; Redis Cluster for 3 nodes).
    Herald,
    /// Centrifugo (memory engine; Redis Cluster for 3 nodes).
    Centrifugo,
    /// The legacy Django Channels + channels_redis + daphne service (one node only).
    Legacy,
}

impl Server {
    /// Name in tables.
    pub fn name(self) -> &'static str {
        match self {
            Self::Herald => "Herald",
            Self::Centrifugo => "Centrifugo",
            Self::Legacy => "legacy",
        }
    }

    fn color(self) -> RGBColor {
        match self {
            Self::Herald => RGBColor(31, 119, 180),
            Self::Centrifugo => RGBColor(255, 127, 14),
            Self::Legacy => RGBColor(127, 127, 127),
        }
    }
}

/// Options of `herald-bench compare`.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Compare options")]
pub struct CompareArgs {
    /// Servers to compare, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "herald,centrifugo,legacy"
    )]
    pub servers: Vec<Server>,
    /// Runs of each fixed-rate workload (idle, churn, equal load, cluster); medians reported.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Runs of the broadcast rate search (`--find-max`); medians reported.
    #[arg(long, default_value_t = 3)]
    pub search_runs: usize,
    /// Runs of the personal rate search (it mostly finds the ceiling of one publish
    /// connection, so one run is the default).
    #[arg(long, default_value_t = 1)]
    pub personal_search_runs: usize,
    /// Clients of the idle workload.
    #[arg(long, default_value_t = 10_000)]
    pub idle_clients: usize,
    /// Clients of the idle workload against the legacy stack (it connects about 50× slower
    /// than the others, so fewer keep the whole comparison short; per-connection memory is
    /// what is compared).
    #[arg(long, default_value_t = 3_000)]
    pub legacy_idle_clients: usize,
    /// Clients of the churn workload.
    #[arg(long, default_value_t = 2_000)]
    pub churn_clients: usize,
    /// Clients of the broadcast and personal workloads.
    #[arg(long, default_value_t = 2_000)]
    pub load_clients: usize,
    /// Length of one rate-search step.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2s")]
    pub step: Duration,
    /// Length of one fixed-rate run (equal load, cluster).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    pub fixed: Duration,
    /// Largest acceptable p99 in the rate searches.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "100ms")]
    pub max_p99: Duration,
    /// First broadcast rate tried, publishes/s.
    #[arg(long, default_value_t = 5.0)]
    pub broadcast_start: f64,
    /// First personal rate tried, messages/s.
    #[arg(long, default_value_t = 500.0)]
    pub personal_start: f64,
    /// Skip the 3-node Redis Cluster workloads.
    #[arg(long)]
    pub no_cluster: bool,
    /// Clients of the 3-node workloads.
    #[arg(long, default_value_t = 2_000)]
    pub cluster_clients: usize,
    /// Broadcast rate of the 3-node workload, publishes/s.
    #[arg(long, default_value_t = 10.0)]
    pub cluster_broadcast_rate: f64,
    /// Personal rate of the 3-node workload, messages/s.
    #[arg(long, default_value_t = 2_000.0)]
    pub cluster_personal_rate: f64,
    /// Client sockets are spread over 127.0.0.1..=127.0.0.K (many, so that runs in quick
    /// succession do not exhaust one address's ports with TIME_WAIT sockets).
    #[arg(long, default_value_t = 32)]
    pub spread_ips: u8,
    /// Where to write the chart.
    #[arg(long, default_value = "docs/benchmarks-compare.png")]
    pub chart: PathBuf,
    /// Where to write the Markdown table (also printed on stdout).
    #[arg(long)]
    pub markdown: Option<PathBuf>,
    /// Where to write every sample as JSON.
    #[arg(long)]
    pub json_out: Option<PathBuf>,
    /// The herald-node binary [default: $HERALD_NODE_BIN, else next to this executable].
    #[arg(long)]
    pub node_bin: Option<PathBuf>,
}

/// A compared figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    IdleRss,
    ChurnRate,
    ChurnP99,
    BroadcastMax,
    BroadcastMaxLossless,
    BroadcastOwnHalfP99,
    BroadcastEqualP50,
    BroadcastEqualP99,
    BroadcastEqualLoss,
    BroadcastServerCpu,
    BroadcastBenchCpu,
    PersonalMax,
    PersonalMaxLossless,
    PersonalHalfP99,
    PersonalServerCpu,
    ClusterBroadcastRate,
    ClusterBroadcastP99,
    ClusterBroadcastServerCpu,
    ClusterPersonalRate,
    ClusterPersonalP99,
    ClusterPersonalServerCpu,
    ClusterRedisUsPerPublish,
    ClusterRedisNetUsPerPublish,
}

impl Metric {
    /// Every metric, in table order.
    pub const ALL: [Self; 23] = [
        Self::IdleRss,
        Self::ChurnRate,
        Self::ChurnP99,
        Self::BroadcastMax,
        Self::BroadcastMaxLossless,
        Self::BroadcastOwnHalfP99,
        Self::BroadcastEqualP50,
        Self::BroadcastEqualP99,
        Self::BroadcastEqualLoss,
        Self::BroadcastServerCpu,
        Self::BroadcastBenchCpu,
        Self::PersonalMax,
        Self::PersonalMaxLossless,
        Self::PersonalHalfP99,
        Self::PersonalServerCpu,
        Self::ClusterBroadcastRate,
        Self::ClusterBroadcastP99,
        Self::ClusterBroadcastServerCpu,
        Self::ClusterPersonalRate,
        Self::ClusterPersonalP99,
        Self::ClusterPersonalServerCpu,
        Self::ClusterRedisUsPerPublish,
        Self::ClusterRedisNetUsPerPublish,
    ];

    /// Workload and figure, for the table.
    pub fn label(self) -> &'static str {
        match self {
            Self::IdleRss => "idle: server RSS per subscribed connection (B)",
            Self::ChurnRate => "churn: connect+subscribe rate (conn/s)",
            Self::ChurnP99 => "churn: p99 TCP connect → subscribed (ms)",
            Self::BroadcastMax => "broadcast: max deliveries/s (0 loss, p99 ≤ limit)",
            Self::BroadcastMaxLossless => {
                "broadcast: max deliveries/s of any search step with 0 loss, any latency"
            }
            Self::BroadcastOwnHalfP99 => "broadcast: p99 at 50% of own max (ms)",
            Self::BroadcastEqualP50 => "broadcast, equal load (50% of Herald's max): p50 (ms)",
            Self::BroadcastEqualP99 => "broadcast, equal load: p99 (ms)",
            Self::BroadcastEqualLoss => "broadcast, equal load: lost (% of expected)",
            Self::BroadcastServerCpu => "broadcast, equal load: server CPU-s per 1M deliveries",
            Self::BroadcastBenchCpu => {
                "broadcast, equal load: load generator CPU-s per 1M deliveries"
            }
            Self::PersonalMax => "personal: max deliveries/s (0 loss, p99 ≤ limit)",
            Self::PersonalMaxLossless => {
                "personal: max deliveries/s of any search step with 0 loss, any latency"
            }
            Self::PersonalHalfP99 => "personal: p99 at 50% of own max (ms)",
            Self::PersonalServerCpu => "personal, 50% of own max: server CPU-s per 1M deliveries",
            Self::ClusterBroadcastRate => "3 nodes + Redis Cluster, broadcast: deliveries/s",
            Self::ClusterBroadcastP99 => "3 nodes, broadcast: p99 (ms)",
            Self::ClusterBroadcastServerCpu => "3 nodes, broadcast: server CPU-s per 1M deliveries",
            Self::ClusterPersonalRate => "3 nodes, personal: deliveries/s",
            Self::ClusterPersonalP99 => "3 nodes, personal: p99 (ms)",
            Self::ClusterPersonalServerCpu => "3 nodes, personal: server CPU-s per 1M deliveries",
            Self::ClusterRedisUsPerPublish => {
                "3 nodes, personal: Redis CPU µs per published message"
            }
            Self::ClusterRedisNetUsPerPublish => "3 nodes, personal: same, net of Redis's idle use",
        }
    }

    /// Whether a smaller figure is the better one.
    pub fn lower_is_better(self) -> bool {
        !matches!(
            self,
            Self::ChurnRate
                | Self::BroadcastMax
                | Self::BroadcastMaxLossless
                | Self::PersonalMax
                | Self::PersonalMaxLossless
                | Self::ClusterBroadcastRate
                | Self::ClusterPersonalRate
        )
    }
}

/// Every sample of one comparison.
#[derive(Debug, Default, Serialize)]
pub struct Results {
    /// Samples per metric and server, in run order.
    pub samples: BTreeMap<Metric, BTreeMap<Server, Vec<f64>>>,
    /// What went wrong or needs saying (failed runs, searches with no passing rate).
    pub notes: Vec<String>,
    /// Offered broadcast load of the equal-load runs, publishes/s.
    pub equal_rate: Option<f64>,
    /// Wall time of the whole comparison, seconds.
    pub elapsed_s: f64,
    /// Per phase: wall seconds and the cores other processes kept busy meanwhile (machine
    /// busy time minus this process and its children, read at phase ends when they are
    /// reaped).
    pub contention: Vec<(String, f64, f64)>,
}

impl Results {
    fn add(&mut self, metric: Metric, server: Server, value: f64) {
        if value.is_finite() {
            self.samples
                .entry(metric)
                .or_default()
                .entry(server)
                .or_default()
                .push(value);
        }
    }

    fn note(&mut self, note: String) {
        eprintln!("herald-bench compare: {note}");
        self.notes.push(note);
    }

    /// Median of `metric` for `server`, if measured.
    pub fn median(&self, metric: Metric, server: Server) -> Option<f64> {
        self.samples
            .get(&metric)
            .and_then(|m| m.get(&server))
            .and_then(|v| median(v))
    }

    fn range(&self, metric: Metric, server: Server) -> Option<(f64, f64, usize)> {
        let v = self.samples.get(&metric)?.get(&server)?;
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (!v.is_empty()).then_some((lo, hi, v.len()))
    }
}

/// The median of `values` (mean of the middle two for an even count).
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 0 {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    })
}

/// `a / b`, when both exist and `b` is not zero.
pub fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b != 0.0 => Some(a / b),
        _ => None,
    }
}

/// A started server (one or three nodes), stopped when dropped.
struct Running {
    spec: TargetSpec,
    addrs: Vec<SocketAddr>,
    server_pids: Vec<u32>,
    redis_pids: Vec<u32>,
    _guard: Guard,
}

/// Owns the processes of a [`Running`] server; dropping it stops them (nodes first).
#[allow(dead_code)]
enum Guard {
    Herald(Vec<TestNode>, Option<RedisCluster>),
    Centrifugo(Vec<CentrifugoPeer>, Option<RedisCluster>),
    Legacy(Box<LegacyPeer>),
}

impl Drop for Guard {
    fn drop(&mut self) {
        match self {
            Self::Herald(nodes, _) => nodes.clear(),
            Self::Centrifugo(nodes, _) => nodes.iter_mut().for_each(CentrifugoPeer::stop),
            Self::Legacy(peer) => peer.stop(),
        }
    }
}

struct Comparison<'a> {
    args: &'a CompareArgs,
    node_bin: PathBuf,
    results: Results,
    /// Highest passing broadcast publish rate of each search.
    broadcast_rates: Vec<(Server, f64)>,
}

/// Runs the whole comparison and returns its samples (the table and chart are written too).
pub async fn compare(args: &CompareArgs) -> Result<Results> {
    if args.servers.is_empty() || args.runs == 0 {
        bail!("nothing to compare: give --servers and --runs ≥ 1");
    }
    let started = Instant::now();
    let node_bin = args
        .node_bin
        .clone()
        .unwrap_or_else(herald_testkit::node::binary);
    if args.servers.contains(&Server::Herald) && !node_bin.exists() {
        bail!(
            "{} not found: cargo build --release -p herald-node (or pass --node-bin)",
            node_bin.display()
        );
    }
    install(&args.servers).await?;
    let mut cmp = Comparison {
        args,
        node_bin,
        results: Results::default(),
        broadcast_rates: Vec::new(),
    };
    let mut mark = CpuMark::now();
    cmp.fixed_workloads().await;
    mark = cmp.phase_done("idle + churn", mark);
    cmp.searches().await;
    mark = cmp.phase_done("rate searches", mark);
    cmp.equal_load().await;
    mark = cmp.phase_done("equal load", mark);
    if !args.no_cluster {
        cmp.cluster().await;
        cmp.phase_done("3 nodes", mark);
    }
    cmp.results.elapsed_s = started.elapsed().as_secs_f64();
    let results = cmp.results;

    let table = markdown(&results, &args.servers, args);
    print!("{table}");
    if let Some(path) = &args.markdown {
        std::fs::write(path, &table).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.json_out {
        std::fs::write(path, serde_json::to_string_pretty(&results)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    chart::draw(
        &args.chart,
        "Herald vs Centrifugo vs legacy Django Channels (medians; log scale)",
        &panels(&results, &args.servers),
    )?;
    eprintln!(
        "herald-bench compare: chart in {}, {:.0} s in all",
        args.chart.display(),
        results.elapsed_s
    );
    Ok(results)
}

/// Builds Centrifugo and installs the legacy stack before anything is timed.
async fn install(servers: &[Server]) -> Result<()> {
    if servers.contains(&Server::Centrifugo) {
        centrifugo::install().await.context("building Centrifugo")?;
    }
    if servers.contains(&Server::Legacy) {
        let app = super::peers::legacy::app_dir();
        super::peers::legacy::setup(&app)
            .await
            .context("installing the legacy stack")?;
    }
    Ok(())
}

/// Machine-wide and own CPU time at one instant.
#[derive(Debug, Clone, Copy)]
struct CpuMark {
    at: Instant,
    machine_s: Option<f64>,
    own_s: Option<f64>,
}

impl CpuMark {
    fn now() -> Self {
        Self {
            at: Instant::now(),
            machine_s: machine_busy_s(),
            own_s: own_tree_s(),
        }
    }
}

/// Seconds the machine's CPUs were busy since boot (`/proc/stat`: user, nice, system, irq,
/// softirq, steal).
fn machine_busy_s() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let f: Vec<u64> = line
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let busy = [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|&i| f.get(i))
        .sum::<u64>();
    Some(busy as f64 / super::cpu::clock_ticks_per_second())
}

/// CPU seconds of this process plus its reaped children (`/proc/self/stat` fields 14–17).
fn own_tree_s() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let ticks: u64 = rest
        .split_whitespace()
        .skip(11)
        .take(4)
        .map(|x| x.parse::<u64>().unwrap_or(0))
        .sum();
    Some(ticks as f64 / super::cpu::clock_ticks_per_second())
}

impl Comparison<'_> {
    /// Records how busy other processes kept the machine since `from`; returns a new mark.
    fn phase_done(&mut self, phase: &str, from: CpuMark) -> CpuMark {
        let to = CpuMark::now();
        let wall = to.at.duration_since(from.at).as_secs_f64();
        if let (Some(m0), Some(m1), Some(o0), Some(o1)) =
            (from.machine_s, to.machine_s, from.own_s, to.own_s)
        {
            let other = ((m1 - m0) - (o1 - o0)).max(0.0);
            let cores = if wall > 0.0 { other / wall } else { 0.0 };
            eprintln!(
                "herald-bench compare: {phase}: {wall:.0} s, other processes {cores:.2} cores"
            );
            self.results
                .contention
                .push((phase.to_owned(), wall, cores));
        }
        to
    }

    /// idle and churn, `--runs` times, servers interleaved.
    async fn fixed_workloads(&mut self) {
        for run in 0..self.args.runs {
            for &server in &self.args.servers.clone() {
                eprintln!(
                    "herald-bench compare: idle, {} run {}",
                    server.name(),
                    run + 1
                );
                match self
                    .scenario(server, 1, self.args.idle_clients, Scenario::Idle)
                    .await
                {
                    Ok(r) => {
                        if let Some(m) = &r.memory {
                            self.results.add(Metric::IdleRss, server, m.per_conn_bytes);
                        }
                        self.check_connected(server, "idle", &r);
                    }
                    Err(e) => self
                        .results
                        .note(format!("{} idle failed: {e:#}", server.name())),
                }
                eprintln!(
                    "herald-bench compare: churn, {} run {}",
                    server.name(),
                    run + 1
                );
                match self
                    .scenario(server, 1, self.args.churn_clients, Scenario::Connect)
                    .await
                {
                    Ok(r) => {
                        self.results
                            .add(Metric::ChurnRate, server, r.connect.rate_per_s);
                        self.results
                            .add(Metric::ChurnP99, server, r.connect.ready_time.p99_ms);
                        self.check_connected(server, "churn", &r);
                    }
                    Err(e) => self
                        .results
                        .note(format!("{} churn failed: {e:#}", server.name())),
                }
            }
        }
    }

    /// Broadcast and personal rate searches.
    async fn searches(&mut self) {
        let runs = self.args.search_runs.max(self.args.personal_search_runs);
        for run in 0..runs {
            for &server in &self.args.servers.clone() {
                for (personal, start, wanted) in [
                    (false, self.args.broadcast_start, self.args.search_runs),
                    (
                        true,
                        self.args.personal_start,
                        self.args.personal_search_runs,
                    ),
                ] {
                    if run >= wanted {
                        continue;
                    }
                    let what = if personal { "personal" } else { "broadcast" };
                    eprintln!(
                        "herald-bench compare: {what} rate search, {} run {}",
                        server.name(),
                        run + 1
                    );
                    let load = self.load_args(Some(start), self.args.step, true, personal);
                    let scenario = if personal {
                        Scenario::Personal(load)
                    } else {
                        Scenario::Broadcast(load)
                    };
                    match self
                        .scenario(server, 1, self.args.load_clients, scenario)
                        .await
                    {
                        Ok(r) => self.record_search(server, personal, &r),
                        Err(e) => self
                            .results
                            .note(format!("{} {what} search failed: {e:#}", server.name())),
                    }
                }
            }
        }
    }

    fn record_search(&mut self, server: Server, personal: bool, r: &Report) {
        let Some(f) = &r.find_max else { return };
        let (max, lossless, half_p99, cpu) = if personal {
            (
                Metric::PersonalMax,
                Metric::PersonalMaxLossless,
                Metric::PersonalHalfP99,
                Some(Metric::PersonalServerCpu),
            )
        } else {
            (
                Metric::BroadcastMax,
                Metric::BroadcastMaxLossless,
                Metric::BroadcastOwnHalfP99,
                None,
            )
        };
        // Without the latency limit: the best step that lost, duplicated, misdelivered
        // nothing and kept every client.
        if let Some(best) = f
            .steps
            .iter()
            .filter(|s| {
                s.lost == 0
                    && s.duplicates + s.misdelivered == 0
                    && s.disconnects == 0
                    && s.received > 0
            })
            .map(|s| s.deliveries_per_s)
            .reduce(f64::max)
        {
            self.results.add(lossless, server, best);
        }
        match (f.max_rate, f.max_deliveries_per_s) {
            (Some(rate), Some(dps)) => {
                self.results.add(max, server, dps);
                if !personal {
                    self.broadcast_rates.push((server, rate));
                }
            }
            _ => {
                let lowest = f
                    .steps
                    .iter()
                    .map(|s| s.target_rate)
                    .fold(f64::INFINITY, f64::min);
                let why = f
                    .steps
                    .iter()
                    .find(|s| s.target_rate == lowest)
                    .and_then(|s| s.failure.clone())
                    .unwrap_or_default();
                self.results.note(format!(
                    "{} {}: no rate passed (lowest tried {lowest:.2}/s: {why})",
                    server.name(),
                    if personal { "personal" } else { "broadcast" }
                ));
            }
        }
        if let Some(half) = &f.at_half {
            self.results.add(half_p99, server, half.latency.p99_ms);
            if let (Some(metric), Some(c)) = (cpu, server_cpu(half)) {
                self.results.add(metric, server, c);
            }
        }
    }

    /// Every server at 50 % of Herald's median maximum broadcast rate.
    async fn equal_load(&mut self) {
        let herald: Vec<f64> = self
            .broadcast_rates
            .iter()
            .filter(|(s, _)| *s == Server::Herald)
            .map(|(_, r)| *r)
            .collect();
        let Some(rate) = median(&herald)
            .or_else(|| {
                median(
                    &self
                        .broadcast_rates
                        .iter()
                        .map(|(_, r)| *r)
                        .collect::<Vec<_>>(),
                )
            })
            .map(|r| r / 2.0)
        else {
            self.results
                .note("equal-load broadcast skipped: no maximum rate was found".into());
            return;
        };
        self.results.equal_rate = Some(rate);
        // A server whose best lossless step delivered under a quarter of the offered load
        // would only measure its backlog (and take minutes to work it off): skipped.
        let offered = rate * self.args.load_clients as f64;
        let mut servers = Vec::new();
        for &server in &self.args.servers {
            match self.results.median(Metric::BroadcastMaxLossless, server) {
                Some(best) if best < offered / 4.0 => self.results.note(format!(
                    "{} not run at equal load: its best lossless broadcast step delivered {:.0}/s, {:.1}% of the {offered:.0}/s offered",
                    server.name(),
                    best,
                    100.0 * best / offered
                )),
                _ => servers.push(server),
            }
        }
        for run in 0..self.args.runs {
            for &server in &servers {
                eprintln!(
                    "herald-bench compare: broadcast at {rate:.1}/s, {} run {}",
                    server.name(),
                    run + 1
                );
                let load = self.load_args(Some(rate), self.args.fixed, false, false);
                match self
                    .scenario(server, 1, self.args.load_clients, Scenario::Broadcast(load))
                    .await
                {
                    Ok(r) => {
                        let Some(l) = &r.load else { continue };
                        self.results
                            .add(Metric::BroadcastEqualP50, server, l.latency.p50_ms);
                        self.results
                            .add(Metric::BroadcastEqualP99, server, l.latency.p99_ms);
                        self.results.add(
                            Metric::BroadcastEqualLoss,
                            server,
                            100.0 * l.lost as f64 / l.expected.max(1) as f64,
                        );
                        if let Some(c) = server_cpu(l) {
                            self.results.add(Metric::BroadcastServerCpu, server, c);
                        }
                        if let Some(b) = l.cpu.as_ref().and_then(|c| c.bench.as_ref()) {
                            self.results.add(
                                Metric::BroadcastBenchCpu,
                                server,
                                b.cpu_s_per_million_deliveries,
                            );
                        }
                    }
                    Err(e) => self.results.note(format!(
                        "{} equal-load broadcast failed: {e:#}",
                        server.name()
                    )),
                }
            }
        }
    }

    /// Herald and Centrifugo on 3 nodes sharing a fresh 3 + 3 Redis Cluster per run.
    async fn cluster(&mut self) {
        let servers: Vec<Server> = self
            .args
            .servers
            .iter()
            .copied()
            .filter(|s| *s != Server::Legacy)
            .collect();
        for run in 0..self.args.runs {
            for &server in &servers {
                eprintln!(
                    "herald-bench compare: 3 nodes, {} run {}",
                    server.name(),
                    run + 1
                );
                let running = match self.start(server, 3).await {
                    Ok(r) => r,
                    Err(e) => {
                        self.results
                            .note(format!("{} 3-node start failed: {e:#}", server.name()));
                        continue;
                    }
                };
                let broadcast = self.load_args(
                    Some(self.args.cluster_broadcast_rate),
                    self.args.fixed,
                    false,
                    false,
                );
                let personal = self.load_args(
                    Some(self.args.cluster_personal_rate),
                    self.args.fixed,
                    false,
                    true,
                );
                for scenario in [Scenario::Broadcast(broadcast), Scenario::Personal(personal)] {
                    let is_personal = matches!(scenario, Scenario::Personal(_));
                    let common = self.common(&running, self.args.cluster_clients);
                    match run::run(&common, &scenario).await {
                        Ok(r) => {
                            let Some(l) = &r.load else { continue };
                            self.record_cluster(server, is_personal, l);
                        }
                        Err(e) => self.results.note(format!(
                            "{} 3-node {} failed: {e:#}",
                            server.name(),
                            scenario.name()
                        )),
                    }
                }
                drop(running);
            }
        }
    }

    fn record_cluster(&mut self, server: Server, personal: bool, l: &LoadFigures) {
        let (rate, p99, cpu) = if personal {
            (
                Metric::ClusterPersonalRate,
                Metric::ClusterPersonalP99,
                Metric::ClusterPersonalServerCpu,
            )
        } else {
            (
                Metric::ClusterBroadcastRate,
                Metric::ClusterBroadcastP99,
                Metric::ClusterBroadcastServerCpu,
            )
        };
        self.results.add(rate, server, l.deliveries_per_s);
        self.results.add(p99, server, l.latency.p99_ms);
        if let Some(c) = server_cpu(l) {
            self.results.add(cpu, server, c);
        }
        if l.lost > 0 {
            self.results.note(format!(
                "{} 3-node {}: lost {} of {}",
                server.name(),
                if personal { "personal" } else { "broadcast" },
                l.lost,
                l.expected
            ));
        }
        if personal {
            if let Some(r) = l.cpu.as_ref().and_then(|c| c.redis.as_ref()) {
                self.results
                    .add(Metric::ClusterRedisUsPerPublish, server, r.us_per_publish);
                if let Some(net) = r.net_us_per_publish {
                    self.results
                        .add(Metric::ClusterRedisNetUsPerPublish, server, net);
                }
            }
        }
    }

    fn check_connected(&mut self, server: Server, what: &str, r: &Report) {
        if r.connect.failed > 0 {
            self.results.note(format!(
                "{} {what}: {} of {} connections failed: {:?}",
                server.name(),
                r.connect.failed,
                r.connections,
                r.connect.errors
            ));
        }
    }

    fn load_args(
        &self,
        rate: Option<f64>,
        duration: Duration,
        find_max: bool,
        personal: bool,
    ) -> LoadArgs {
        LoadArgs {
            rate,
            duration,
            batch: if personal { 100 } else { 20 },
            publish_conns: 1,
            drain: Duration::from_millis(1500),
            find_max,
            max_p99: self.args.max_p99,
            max_loss_pct: 0.0,
            step_factor: 2.0,
            refine: 2,
            max_steps: 12,
            max_rate: 1_000_000.0,
        }
    }

    /// Shared options for one run against `running` with `clients` clients.
    fn common(&self, running: &Running, clients: usize) -> Common {
        Common {
            target: running.spec.kind,
            addr: running.addrs.clone(),
            publish_addr: Vec::new(),
            jwt_secret: Some(running.spec.jwt_secret.clone()),
            api_key: Some(running.spec.api_key.clone()),
            connections: clients,
            concurrency: 100,
            source_ips: Some(self.args.spread_ips),
            processes: None,
            user_prefix: "bench-".into(),
            connect_timeout: Duration::from_secs(15),
            timeout: Duration::from_secs(300),
            server_pid: running.server_pids.clone(),
            redis_pids: running.redis_pids.clone(),
            settle: Duration::from_secs(2),
            json: false,
        }
    }

    /// Starts `server` fresh, runs `scenario` against it with `clients` clients, stops it.
    async fn scenario(
        &mut self,
        server: Server,
        nodes: usize,
        clients: usize,
        scenario: Scenario,
    ) -> Result<Report> {
        let running = self.start(server, nodes).await?;
        let common = self.common(&running, clients);
        let outcome = tokio::time::timeout(common.timeout, run::run(&common, &scenario))
            .await
            .map_err(|_| anyhow!("{} timed out", scenario.name()))?;
        drop(running);
        outcome
    }

    async fn start(&self, server: Server, nodes: usize) -> Result<Running> {
        match server {
            Server::Herald => self.start_herald(nodes).await,
            Server::Centrifugo => start_centrifugo(nodes).await,
            Server::Legacy => {
                if nodes != 1 {
                    bail!("the legacy stack runs as one daphne process only");
                }
                let peer = LegacyPeer::start(LegacyOptions::default()).await?;
                Ok(Running {
                    spec: peer.target_spec(3600),
                    addrs: vec![peer.addr()],
                    server_pids: peer.server_pids(),
                    redis_pids: peer.redis_pids(),
                    _guard: Guard::Legacy(Box::new(peer)),
                })
            }
        }
    }

    async fn start_herald(&self, nodes: usize) -> Result<Running> {
        let redis = if nodes > 1 {
            Some(RedisCluster::start(3, 1).await?)
        } else {
            None
        };
        let url = redis.as_ref().map(RedisCluster::url);
        let mut started = Vec::with_capacity(nodes);
        for i in 0..nodes {
            let mut command = Command::new(&self.node_bin);
            for (key, _) in std::env::vars_os() {
                if key.to_string_lossy().starts_with("HERALD_") {
                    command.env_remove(key);
                }
            }
            command
                .args(["--listen", "127.0.0.1:0"])
                .args(["--jwt-secret", HERALD_SECRET, "--api-key", HERALD_API_KEY])
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit());
            if let Some(url) = &url {
                command.args(["--redis-url", url, "--node-id", &format!("node-{i}")]);
            }
            let node = tokio::task::spawn_blocking(move || TestNode::spawn(command))
                .await
                .map_err(|_| anyhow!("herald-node did not start (see its stderr above)"))?;
            started.push(node);
        }
        let addrs: Vec<SocketAddr> = started.iter().map(|n| n.addr).collect();
        Ok(Running {
            spec: TargetSpec {
                kind: TargetKind::Herald,
                ws_addr: addrs[0],
                publish_addr: addrs[0],
                jwt_secret: HERALD_SECRET.into(),
                api_key: HERALD_API_KEY.into(),
                token_ttl_secs: 3600,
            },
            server_pids: started.iter().map(TestNode::pid).collect(),
            redis_pids: redis
                .as_ref()
                .map(|r| r.nodes().iter().filter_map(|n| n.pid).collect())
                .unwrap_or_default(),
            addrs,
            _guard: Guard::Herald(started, redis),
        })
    }
}

async fn start_centrifugo(nodes: usize) -> Result<Running> {
    let redis = if nodes > 1 {
        Some(RedisCluster::start(3, 1).await?)
    } else {
        None
    };
    let engine = match &redis {
        Some(r) => Engine::RedisCluster(r.masters().iter().map(|n| n.addr()).collect()),
        None => Engine::Memory,
    };
    let mut started = Vec::with_capacity(nodes);
    for i in 0..nodes {
        started.push(
            CentrifugoPeer::start(CentrifugoOptions {
                engine: engine.clone(),
                node_name: (nodes > 1).then(|| format!("centrifugo-{i}")),
                ..CentrifugoOptions::default()
            })
            .await?,
        );
    }
    Ok(Running {
        spec: started[0].target_spec(3600),
        addrs: started.iter().map(CentrifugoPeer::addr).collect(),
        server_pids: started.iter().filter_map(CentrifugoPeer::pid).collect(),
        redis_pids: redis
            .as_ref()
            .map(|r| r.nodes().iter().filter_map(|n| n.pid).collect())
            .unwrap_or_default(),
        _guard: Guard::Centrifugo(started, redis),
    })
}

/// Server CPU-s per million deliveries of a step, when measured.
fn server_cpu(l: &LoadFigures) -> Option<f64> {
    l.cpu
        .as_ref()
        .and_then(|c| c.server.as_ref())
        .map(|s| s.cpu_s_per_million_deliveries)
        .filter(|_| l.received > 0)
}

fn cell(results: &Results, metric: Metric, server: Server) -> String {
    match (
        results.median(metric, server),
        results.range(metric, server),
    ) {
        (Some(m), Some((lo, hi, n))) if n > 1 => {
            format!("{} [{}–{}]", fmt(m), fmt(lo), fmt(hi))
        }
        (Some(m), _) => fmt(m),
        _ => "–".into(),
    }
}

fn fmt(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 {
        format!("{:.0}", v)
            .as_bytes()
            .rchunks(3)
            .rev()
            .map(|c| std::str::from_utf8(c).unwrap_or_default())
            .collect::<Vec<_>>()
            .join(",")
            .replace("-,", "-")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn fmt_ratio(r: Option<f64>) -> String {
    match r {
        Some(r) if r >= 100.0 => format!("{r:.0}×"),
        Some(r) if r >= 10.0 => format!("{r:.1}×"),
        Some(r) => format!("{r:.2}×"),
        None => "–".into(),
    }
}

/// The results as a Markdown table (medians, [min–max] over runs) with Herald's ratios.
pub fn markdown(results: &Results, servers: &[Server], args: &CompareArgs) -> String {
    let mut out = String::new();
    let _ = write!(out, "| workload: figure |");
    for s in servers {
        let _ = write!(out, " {} |", s.name());
    }
    let others: Vec<Server> = servers
        .iter()
        .copied()
        .filter(|s| *s != Server::Herald)
        .collect();
    let with_herald = servers.contains(&Server::Herald);
    if with_herald {
        for o in &others {
            let _ = write!(out, " Herald ÷ {} |", o.name());
        }
    }
    let _ = writeln!(out);
    let _ = write!(out, "|---|");
    for _ in servers {
        let _ = write!(out, "---|");
    }
    if with_herald {
        for _ in &others {
            let _ = write!(out, "---|");
        }
    }
    let _ = writeln!(out);
    for metric in Metric::ALL {
        if !results.samples.contains_key(&metric) {
            continue;
        }
        let arrow = if metric.lower_is_better() {
            "↓"
        } else {
            "↑"
        };
        let _ = write!(out, "| {} {arrow} |", metric.label());
        for &s in servers {
            let _ = write!(out, " {} |", cell(results, metric, s));
        }
        if with_herald {
            for &o in &others {
                let r = ratio(
                    results.median(metric, Server::Herald),
                    results.median(metric, o),
                );
                let _ = write!(out, " {} |", fmt_ratio(r));
            }
        }
        let _ = writeln!(out);
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "↑ higher is better, ↓ lower is better. Medians of {} run(s) of the fixed workloads, {} of the broadcast rate search and {} of the personal one; [min–max] where more than one. Idle: {} clients ({} for legacy); churn: {}; broadcast/personal: {}; 3 nodes: {} clients, broadcast {}/s, personal {}/s; search steps {}, fixed runs {}, p99 limit {}.",
        args.runs,
        args.search_runs,
        args.personal_search_runs,
        args.idle_clients,
        args.legacy_idle_clients,
        args.churn_clients,
        args.load_clients,
        args.cluster_clients,
        args.cluster_broadcast_rate,
        args.cluster_personal_rate,
        humantime::format_duration(args.step),
        humantime::format_duration(args.fixed),
        humantime::format_duration(args.max_p99),
    );
    if let Some(rate) = results.equal_rate {
        let _ = writeln!(
            out,
            "Equal offered load: {rate:.1} broadcast publishes/s × {} clients.",
            args.load_clients
        );
    }
    let _ = writeln!(out, "Whole comparison: {:.0} s.", results.elapsed_s);
    if !results.contention.is_empty() {
        let phases: Vec<String> = results
            .contention
            .iter()
            .map(|(phase, wall, cores)| format!("{phase} {wall:.0} s: {cores:.2}"))
            .collect();
        let _ = writeln!(
            out,
            "Cores kept busy by other processes on the machine, per phase: {}.",
            phases.join("; ")
        );
    }
    for note in &results.notes {
        let _ = writeln!(out, "- {note}");
    }
    out
}

/// The chart's panels: the headline figures.
fn panels(results: &Results, servers: &[Server]) -> Vec<Panel> {
    let scale = |metric: Metric| {
        if metric == Metric::IdleRss {
            1.0 / 1024.0
        } else {
            1.0
        }
    };
    [
        (Metric::IdleRss, "idle RSS per connection, KiB"),
        (
            Metric::BroadcastMax,
            "max broadcast deliveries/s, p99 ≤ limit",
        ),
        (
            Metric::BroadcastMaxLossless,
            "max lossless broadcast deliveries/s",
        ),
        (Metric::BroadcastEqualP99, "broadcast p99 at equal load, ms"),
        (
            Metric::PersonalMax,
            "max personal deliveries/s, p99 ≤ limit",
        ),
        (Metric::ChurnRate, "connect+subscribe per second"),
        (
            Metric::BroadcastServerCpu,
            "server CPU-s per 1M broadcast deliveries",
        ),
        (
            Metric::ClusterPersonalP99,
            "3 nodes + Redis: personal p99, ms",
        ),
        (
            Metric::ClusterRedisUsPerPublish,
            "3 nodes: Redis CPU µs per message",
        ),
    ]
    .into_iter()
    .filter(|(m, _)| results.samples.contains_key(m))
    .map(|(metric, title)| Panel {
        title: title.into(),
        lower_is_better: metric.lower_is_better(),
        bars: servers
            .iter()
            .map(|&s| Bar {
                label: s.name().into(),
                value: results
                    .median(metric, s)
                    .map_or(f64::NAN, |v| v * scale(metric)),
                color: s.color(),
            })
            .collect(),
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_ratios() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[f64::NAN, 5.0]), Some(5.0));
        assert_eq!(median(&[]), None);
        assert_eq!(ratio(Some(3.0), Some(1.5)), Some(2.0));
        assert_eq!(ratio(Some(3.0), Some(0.0)), None);
        assert_eq!(ratio(None, Some(1.0)), None);
    }

    #[test]
    fn formats_figures() {
        assert_eq!(fmt(931_094.4), "931,094");
        assert_eq!(fmt(1_234.0), "1,234");
        assert_eq!(fmt(123.4), "123");
        assert_eq!(fmt(42.25), "42.2");
        assert_eq!(fmt(0.5), "0.50");
        assert_eq!(fmt_ratio(Some(0.456)), "0.46×");
        assert_eq!(fmt_ratio(Some(152.0)), "152×");
        assert_eq!(fmt_ratio(None), "–");
    }

    #[test]
    fn table_has_medians_ranges_and_herald_ratios() {
        let mut r = Results::default();
        for v in [9000.0, 9600.0, 9700.0] {
            r.add(Metric::IdleRss, Server::Herald, v);
        }
        r.add(Metric::IdleRss, Server::Centrifugo, 19_200.0);
        r.add(Metric::BroadcastMax, Server::Herald, 800_000.0);
        r.add(Metric::BroadcastMax, Server::Legacy, 8_000.0);
        r.add(Metric::BroadcastMax, Server::Legacy, f64::NAN);
        r.notes.push("legacy personal: no rate passed".into());
        let args = CompareArgs::try_parse_from(["x"]).unwrap();
        let servers = [Server::Herald, Server::Centrifugo, Server::Legacy];
        let table = markdown(&r, &servers, &args);
        let row = table.lines().find(|l| l.contains("idle:")).unwrap();
        assert!(row.contains("9,600 [9,000–9,700]"), "{row}");
        assert!(row.contains("| 0.50× |"), "{row}");
        assert!(row.ends_with("| – |"), "{row}");
        let row = table
            .lines()
            .find(|l| l.contains("max deliveries"))
            .unwrap();
        assert!(row.contains("| 100× |"), "{row}");
        assert!(row.contains(" ↑ |"), "{row}");
        assert!(!table.contains("personal: max"));
        assert!(table.contains("- legacy personal: no rate passed"));

        let p = panels(&r, &servers);
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].bars[0].value, 9600.0 / 1024.0);
        assert!(p[0].bars[2].value.is_nan());
    }

    /// `CompareArgs` parsed on its own (for defaults).
    #[derive(Debug, clap::Parser)]
    struct Only {
        #[command(flatten)]
        args: CompareArgs,
    }

    impl CompareArgs {
        fn try_parse_from(argv: [&str; 1]) -> Result<Self, clap::Error> {
            <Only as clap::Parser>::try_parse_from(argv).map(|o| o.args)
        }
    }
}
