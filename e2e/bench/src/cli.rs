//! Command-line surface of `herald-bench`: one subcommand per scenario, shared options
//! (target, scale, credentials, limits) usable before or after the subcommand.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use super::adapter::TargetKind;
use super::compare::CompareArgs;

/// Load tool for Herald-protocol push servers (loopback targets only).
#[derive(Debug, Parser)]
#[command(name = "herald-bench", version)]
pub struct Cli {
    /// Options shared by every scenario.
    #[command(flatten)]
    pub common: Common,
    /// What to measure.
    #[command(subcommand)]
    pub scenario: Scenario,
}

/// The measurements.
#[derive(Debug, Subcommand)]
pub enum Scenario {
    /// Open N connections as fast as allowed; report connect rate and connect times.
    Connect,
    /// Connect N subscribed clients, let the server settle, report its RSS per connection
    /// (needs --server-pid).
    Idle,
    /// Publish to the broadcast channel at a rate; report fan-out rate, latency and loss.
    Broadcast(LoadArgs),
    /// Publish personal messages round-robin over all users; report rate, latency, loss
    /// and misdeliveries.
    Personal(LoadArgs),
    /// Start Herald, Centrifugo and the legacy stack in turn, run the same workloads against
    /// each, print a table of ratios and draw a PNG chart (the connection options above are
    /// ignored: every server is started here).
    Compare(CompareArgs),
    /// Internal: a worker process driven by the parent over stdin/stdout.
    #[command(hide = true)]
    Worker,
}

impl Scenario {
    /// Scenario name for reports.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Idle => "idle",
            Self::Broadcast(_) => "broadcast",
            Self::Personal(_) => "personal",
            Self::Compare(_) => "compare",
            Self::Worker => "worker",
        }
    }
}

/// Options shared by every scenario.
#[derive(Debug, Args)]
#[command(next_help_heading = "Common options")]
pub struct Common {
    /// Server protocol.
    #[arg(long, value_enum, default_value_t = TargetKind::Herald, global = true)]
    pub target: TargetKind,
    /// Server address(es) clients connect to (loopback only). Several comma-separated node
    /// addresses spread the clients round-robin over the nodes.
    #[arg(
        long,
        env = "HERALD_ADDR",
        default_value = "127.0.0.1:8080",
        value_delimiter = ',',
        global = true
    )]
    pub addr: Vec<SocketAddr>,
    /// Publish API address(es), if they differ from --addr (loopback only). Publish requests
    /// are spread round-robin over them.
    #[arg(
        long,
        env = "HERALD_PUBLISH_ADDR",
        value_delimiter = ',',
        global = true
    )]
    pub publish_addr: Vec<SocketAddr>,
    /// Shared secret used to sign client JWTs (HS256).
    #[arg(long, env = "HERALD_JWT_SECRET", hide_env_values = true, global = true)]
    pub jwt_secret: Option<String>,
    /// Publish API key (sent as a bearer token).
    #[arg(long, env = "HERALD_API_KEY", hide_env_values = true, global = true)]
    pub api_key: Option<String>,
    /// Number of client connections (one user each).
    #[arg(short = 'n', long, default_value_t = 1000, global = true)]
    pub connections: usize,
    /// Connection attempts in flight at once (over all processes).
    #[arg(long, default_value_t = 256, global = true)]
    pub concurrency: usize,
    /// Spread client sockets over source addresses 127.0.0.1..=127.0.0.K [default: one per 25k connections].
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=254), global = true)]
    pub source_ips: Option<u8>,
    /// Worker processes owning the connections [default: as few as the open-file limit allows].
    #[arg(long, global = true)]
    pub processes: Option<usize>,
    /// User ids are this prefix followed by the connection index.
    #[arg(long, default_value = "bench-", global = true)]
    pub user_prefix: String,
    /// Limit for one connection's TCP connect, upgrade and subscribe.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s", global = true)]
    pub connect_timeout: Duration,
    /// The whole run is aborted after this long.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10m", global = true)]
    pub timeout: Duration,
    /// Server process id(s), comma-separated: their memory (VmRSS) before and after
    /// connecting and their CPU time during each publishing step are summed.
    #[arg(long, value_delimiter = ',', global = true)]
    pub server_pid: Vec<u32>,
    /// Redis process ids, comma-separated: their CPU time during each publishing step is
    /// reported per published message and per delivery.
    #[arg(long, value_delimiter = ',', global = true)]
    pub redis_pids: Vec<u32>,
    /// Pause after connecting before reading memory and starting load; the CPU the
    /// --server-pid and --redis-pids processes use meanwhile is reported as their idle use.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2s", global = true)]
    pub settle: Duration,
    /// Print one JSON object with every figure on stdout (the table goes to stderr).
    #[arg(long, global = true)]
    pub json: bool,
}

/// Options of the publishing scenarios.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Load options")]
pub struct LoadArgs {
    /// Publications per second (total) [default: 10 for broadcast, 1000 for personal].
    #[arg(long)]
    pub rate: Option<f64>,
    /// How long to publish (per step with --find-max).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub duration: Duration,
    /// Most publications per request; due publications are batched up to this.
    #[arg(long, default_value_t = 20)]
    pub batch: usize,
    /// Concurrent publish connections per node (more than 1 in all lets the server
    /// legitimately reorder).
    #[arg(long, default_value_t = 1)]
    pub publish_conns: usize,
    /// After publishing, stop waiting for deliveries once none arrived for this long.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2s")]
    pub drain: Duration,
    /// Step the rate up until loss appears or p99 exceeds --max-p99; report the maximum
    /// sustained deliveries/s and the latency at half of it.
    #[arg(long)]
    pub find_max: bool,
    /// --find-max: largest acceptable p99 latency.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "100ms")]
    pub max_p99: Duration,
    /// --find-max: largest acceptable loss, in percent of expected deliveries.
    #[arg(long, default_value_t = 0.0)]
    pub max_loss_pct: f64,
    /// --find-max: rate multiplier between steps.
    #[arg(long, default_value_t = 2.0)]
    pub step_factor: f64,
    /// --find-max: bisection steps once a failing rate is found.
    #[arg(long, default_value_t = 3)]
    pub refine: u32,
    /// --find-max: most steps.
    #[arg(long, default_value_t = 12)]
    pub max_steps: u32,
    /// --find-max: highest rate tried.
    #[arg(long, default_value_t = 1_000_000.0)]
    pub max_rate: f64,
    /// Broadcast, Herald only: tag every message `{"half":"even"|"odd"}` and subscribe
    /// every K-th client (0, K, 2K…) through the tag filter `{"half":{"eq":"even"}}`, so
    /// those receive half the messages [default: 0, untagged and unfiltered].
    #[arg(long, value_name = "K", default_value_t = 0)]
    pub filter_every: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_options_on_either_side() {
        let cli = Cli::try_parse_from([
            "herald-bench",
            "-n",
            "50",
            "broadcast",
            "--rate",
            "5",
            "--addr",
            "127.0.0.1:9",
            "--duration",
            "3s",
            "--json",
        ])
        .unwrap();
        assert_eq!(cli.common.connections, 50);
        assert_eq!(cli.common.addr.len(), 1);
        assert_eq!(cli.common.addr[0].port(), 9);
        assert!(cli.common.server_pid.is_empty() && cli.common.redis_pids.is_empty());
        assert!(cli.common.json);
        match cli.scenario {
            Scenario::Broadcast(l) => {
                assert_eq!(l.rate, Some(5.0));
                assert_eq!(l.duration, Duration::from_secs(3));
                assert!(!l.find_max);
            }
            other => panic!("{other:?}"),
        }
        assert!(Cli::try_parse_from(["herald-bench", "idle", "--source-ips", "0"]).is_err());
    }

    #[test]
    fn parses_lists() {
        let cli = Cli::try_parse_from([
            "herald-bench",
            "--addr",
            "127.0.0.1:1,127.0.0.1:2,127.0.0.1:3",
            "--server-pid",
            "10,11,12",
            "personal",
            "--redis-pids",
            "20,21",
        ])
        .unwrap();
        let ports: Vec<u16> = cli.common.addr.iter().map(SocketAddr::port).collect();
        assert_eq!(ports, [1, 2, 3]);
        assert!(cli.common.publish_addr.is_empty());
        assert_eq!(cli.common.server_pid, [10, 11, 12]);
        assert_eq!(cli.common.redis_pids, [20, 21]);
        let cli = Cli::try_parse_from(["herald-bench", "--server-pid", "7", "idle"]).unwrap();
        assert_eq!(cli.common.server_pid, [7]);
        assert_eq!(cli.common.addr, ["127.0.0.1:8080".parse().unwrap()]);
        assert!(Cli::try_parse_from(["herald-bench", "--addr", "127.0.0.1:1,x", "idle"]).is_err());
    }
}
