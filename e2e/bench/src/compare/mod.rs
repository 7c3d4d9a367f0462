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
//!
//! The module is split by job: this file holds the options, the servers and the order of the
//! phases; `workloads` starts servers and runs each workload against them; `results`
//! holds the samples and their medians; `report` turns them into the table and chart.

mod report;
mod results;
mod workloads;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use plotters::style::RGBColor;
use serde::Serialize;

use super::chart;
use super::peers::centrifugo;

pub use report::markdown;
use report::panels;
pub use results::{median, ratio, Metric, Results};

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

    pub(super) fn color(self) -> RGBColor {
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
}
