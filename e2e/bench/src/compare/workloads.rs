//! The workloads of a comparison: starting each server (one node or three on Redis Cluster),
//! running idle, churn, rate searches, equal load and the 3-node steps against it through
//! [`run`], and recording the figures in the comparison's results.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Result};

use super::super::adapter::{TargetKind, TargetSpec};
use super::super::cli::{Common, LoadArgs, Scenario};
use super::super::peers::centrifugo::{CentrifugoOptions, CentrifugoPeer, Engine};
use super::super::peers::legacy::{LegacyOptions, LegacyPeer};
use super::super::report::{LoadFigures, Report};
use super::super::run;
use super::{median, Comparison, Metric, Server, HERALD_API_KEY, HERALD_SECRET};
use herald_testkit::node::TestNode;
use herald_testkit::redis::RedisCluster;

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

impl Comparison<'_> {
    /// idle and churn, `--runs` times, servers interleaved.
    pub(super) async fn fixed_workloads(&mut self) {
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
    pub(super) async fn searches(&mut self) {
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
    pub(super) async fn equal_load(&mut self) {
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
    pub(super) async fn cluster(&mut self) {
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
            filter_every: 0,
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
                tag_filter_every: 0,
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
