//! The figures a run produces, rendered as a human table or one JSON line.
//!
//! Every figure is in the JSON so that scripts can build comparison tables across servers;
//! the table shows the ones people look at first.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::adapter::Stream;
use super::stats::LatencySummary;

/// Everything a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: &'static str,
    /// Protocol adapter name.
    pub target: &'static str,
    /// Server address(es), comma-separated.
    pub addr: String,
    /// Server nodes the clients were spread over.
    pub nodes: usize,
    /// Connections requested.
    pub connections: u64,
    /// Worker processes used.
    pub processes: usize,
    /// Source addresses used.
    pub source_ips: u8,
    /// Connection phase.
    pub connect: ConnectFigures,
    /// Server memory (summed over every --server-pid), when given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryFigures>,
    /// Fixed-rate load (broadcast / personal without --find-max).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load: Option<LoadFigures>,
    /// Rate search (--find-max).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub find_max: Option<FindMaxFigures>,
}

/// Connection phase figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ConnectFigures {
    /// Connected and subscribed.
    pub ok: u64,
    /// Failed or timed out.
    pub failed: u64,
    /// Failure messages and counts.
    pub errors: BTreeMap<String, u64>,
    /// Wall time of the phase, seconds.
    pub elapsed_s: f64,
    /// Successful connections per second.
    pub rate_per_s: f64,
    /// TCP connect to `101` times.
    pub time: LatencySummary,
    /// TCP connect to subscribed times (upgrade plus the adapter's handshake: for
    /// Centrifugo that includes its `connect` command, where it checks the token).
    pub ready_time: LatencySummary,
    /// The bench's own worker memory per connection, bytes.
    pub client_rss_per_conn_bytes: Option<f64>,
}

/// Server memory figures.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryFigures {
    /// First server process id.
    pub server_pid: u32,
    /// Every server process id whose memory is summed.
    pub server_pids: Vec<u32>,
    /// VmRSS before connecting, bytes (sum over the processes).
    pub baseline_bytes: u64,
    /// VmRSS after connecting and settling, bytes (sum over the processes).
    pub after_bytes: u64,
    /// (after − baseline) / connected clients, bytes.
    pub per_conn_bytes: f64,
    /// Same, KiB.
    pub per_conn_kib: f64,
}

/// Publisher figures of one load step.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PublishFigures {
    /// Publications sent.
    pub attempted: u64,
    /// Publications accepted by the server.
    pub accepted: u64,
    /// HTTP requests.
    pub requests: u64,
    /// Requests that failed.
    pub failed_requests: u64,
    /// Failure messages and counts.
    pub errors: BTreeMap<String, u64>,
    /// Accepted publications per second.
    pub achieved_rate: f64,
    /// Publish request round trips.
    pub request_time: LatencySummary,
}

/// Delivery figures of one load step.
#[derive(Debug, Clone, Serialize)]
pub struct LoadFigures {
    /// Run id.
    pub run: u32,
    /// Broadcast or personal.
    pub stream: Stream,
    /// Requested publications per second.
    pub target_rate: f64,
    /// Planned publishing time, seconds.
    pub duration_s: f64,
    /// Publisher side.
    pub publish: PublishFigures,
    /// Clients connected when the step started.
    pub clients: u64,
    /// Deliveries expected (accepted × clients for broadcast, accepted for personal).
    pub expected: u64,
    /// Unique, correctly addressed deliveries.
    pub received: u64,
    /// expected − received (0 if more arrived).
    pub lost: u64,
    /// Deliveries of an already received sequence number.
    pub duplicates: u64,
    /// Unique deliveries that arrived after a later one.
    pub out_of_order: u64,
    /// Personal deliveries to the wrong user.
    pub misdelivered: u64,
    /// Deliveries from an earlier step.
    pub stale: u64,
    /// Clients that disconnected during the step.
    pub disconnects: u64,
    /// received / (last delivery − first publish).
    pub deliveries_per_s: f64,
    /// Publish-to-deliver latency.
    pub latency: LatencySummary,
    /// CPU used by the server and Redis processes during the step, when their pids were given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuFigures>,
    /// `--find-max`: why the step failed, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

/// CPU time used during one load step, from `/proc/<pid>/stat` read right before publishing
/// and again once the deliveries have drained.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CpuFigures {
    /// Wall time between the two readings, seconds.
    pub window_s: f64,
    /// The server nodes (--server-pid).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<ProcessCpu>,
    /// Redis (--redis-pids).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<ProcessCpu>,
    /// The load generator itself: this process (publisher) and its worker processes
    /// (clients), so its cost can be told apart from the server's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bench: Option<ProcessCpu>,
}

/// CPU used by a group of processes during one load step.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProcessCpu {
    /// The processes, whose CPU time is summed.
    pub pids: Vec<u32>,
    /// User + system CPU seconds used during the window.
    pub cpu_s: f64,
    /// `cpu_s / window_s`: cores kept busy on average.
    pub cores: f64,
    /// Cores kept busy while no load ran (measured over `--settle` after connecting).
    pub idle_cores: Option<f64>,
    /// CPU µs per accepted publication.
    pub us_per_publish: f64,
    /// Same, minus the idle use over the window.
    pub net_us_per_publish: Option<f64>,
    /// CPU µs per delivery (= CPU seconds per million deliveries).
    pub us_per_delivery: f64,
    /// CPU seconds per million deliveries.
    pub cpu_s_per_million_deliveries: f64,
}

impl ProcessCpu {
    /// Figures for `cpu_s` CPU seconds used over `window_s` for `published` accepted
    /// publications and `delivered` deliveries.
    pub fn new(
        pids: Vec<u32>,
        cpu_s: f64,
        window_s: f64,
        idle_cores: Option<f64>,
        published: u64,
        delivered: u64,
    ) -> Self {
        let per = |cpu: f64, count: u64| {
            if count > 0 {
                cpu * 1e6 / count as f64
            } else {
                0.0
            }
        };
        let per_delivery = per(cpu_s, delivered);
        Self {
            pids,
            cpu_s,
            cores: if window_s > 0.0 {
                cpu_s / window_s
            } else {
                0.0
            },
            idle_cores,
            us_per_publish: per(cpu_s, published),
            net_us_per_publish: idle_cores
                .map(|idle| per((cpu_s - idle * window_s).max(0.0), published)),
            us_per_delivery: per_delivery,
            cpu_s_per_million_deliveries: per_delivery,
        }
    }
}

/// `--find-max` outcome.
#[derive(Debug, Clone, Serialize)]
pub struct FindMaxFigures {
    /// Every step tried, in order.
    pub steps: Vec<LoadFigures>,
    /// Highest publish rate that passed.
    pub max_rate: Option<f64>,
    /// Deliveries per second at that rate.
    pub max_deliveries_per_s: Option<f64>,
    /// A run at half the maximum publish rate.
    pub at_half: Option<LoadFigures>,
}

fn ms(s: &LatencySummary) -> String {
    format!(
        "p50 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms",
        s.p50_ms, s.p99_ms, s.p999_ms, s.max_ms
    )
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn errors_line(out: &mut String, errors: &BTreeMap<String, u64>) {
    for (message, count) in errors {
        let _ = writeln!(out, "  {:<12}{count} × {message}", "");
    }
}

fn load_lines(out: &mut String, l: &LoadFigures) {
    let p = &l.publish;
    let _ = writeln!(
        out,
        "  {:<12}{:.1}/s target, {:.1}/s achieved, {} accepted of {}, {} failed requests, request {}",
        "publish", l.target_rate, p.achieved_rate, p.accepted, p.attempted, p.failed_requests,
        ms(&p.request_time)
    );
    errors_line(out, &p.errors);
    let _ = writeln!(
        out,
        "  {:<12}{} clients, {} expected, {} received, {} lost, {} duplicate, {} out of order, {} misdelivered, {} stale, {} disconnects",
        "delivery", l.clients, l.expected, l.received, l.lost, l.duplicates, l.out_of_order, l.misdelivered, l.stale, l.disconnects
    );
    let _ = writeln!(
        out,
        "  {:<12}{:.0} deliveries/s",
        "throughput", l.deliveries_per_s
    );
    let _ = writeln!(out, "  {:<12}{}", "latency", ms(&l.latency));
    if let Some(cpu) = &l.cpu {
        cpu_lines(out, cpu);
    }
}

fn idle(p: &ProcessCpu) -> String {
    p.idle_cores
        .map_or_else(String::new, |i| format!(" (idle {i:.3})"))
}

fn cpu_lines(out: &mut String, cpu: &CpuFigures) {
    if let Some(s) = &cpu.server {
        let _ = writeln!(
            out,
            "  {:<12}{} pid(s): {:.2} CPU-s over {:.1} s = {:.2} cores{}; {:.2} CPU-s per million deliveries",
            "server cpu",
            s.pids.len(),
            s.cpu_s,
            cpu.window_s,
            s.cores,
            idle(s),
            s.cpu_s_per_million_deliveries
        );
    }
    if let Some(r) = &cpu.redis {
        let net = r
            .net_us_per_publish
            .map_or_else(String::new, |n| format!(" ({n:.2} net of idle)"));
        let _ = writeln!(
            out,
            "  {:<12}{} pid(s): {:.2} CPU-s over {:.1} s = {:.2} cores{}; {:.2} µs per published message{net}, {:.4} µs per delivery",
            "redis cpu",
            r.pids.len(),
            r.cpu_s,
            cpu.window_s,
            r.cores,
            idle(r),
            r.us_per_publish,
            r.us_per_delivery
        );
    }
    if let Some(b) = &cpu.bench {
        let _ = writeln!(
            out,
            "  {:<12}{} pid(s): {:.2} CPU-s over {:.1} s = {:.2} cores; {:.2} CPU-s per million deliveries",
            "bench cpu",
            b.pids.len(),
            b.cpu_s,
            cpu.window_s,
            b.cores,
            b.cpu_s_per_million_deliveries
        );
    }
}

/// Short CPU columns for a find-max step row.
fn cpu_cells(cpu: Option<&CpuFigures>) -> String {
    let mut cells = String::new();
    if let Some(s) = cpu.and_then(|c| c.server.as_ref()) {
        let _ = write!(
            cells,
            "  srv {:>7.2} CPU-s/M",
            s.cpu_s_per_million_deliveries
        );
    }
    if let Some(r) = cpu.and_then(|c| c.redis.as_ref()) {
        let _ = write!(cells, "  redis {:>7.2} µs/pub", r.us_per_publish);
    }
    cells
}

impl Report {
    /// The human-readable summary.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let c = &self.connect;
        let _ = writeln!(
            out,
            "herald-bench {} — target {} at {} — {} connections, {} process(es), {} source IP(s)",
            self.scenario,
            self.target,
            self.addr,
            self.connections,
            self.processes,
            self.source_ips
        );
        let _ = writeln!(
            out,
            "  {:<12}{} ok, {} failed in {:.2} s = {:.0} conn/s; connect time {}",
            "connect",
            c.ok,
            c.failed,
            c.elapsed_s,
            c.rate_per_s,
            ms(&c.time)
        );
        let _ = writeln!(
            out,
            "  {:<12}connect to subscribed {}",
            "",
            ms(&c.ready_time)
        );
        errors_line(&mut out, &c.errors);
        if let Some(b) = c.client_rss_per_conn_bytes {
            let _ = writeln!(
                out,
                "  {:<12}{:.1} KiB/conn (bench workers)",
                "client mem",
                b / 1024.0
            );
        }
        if let Some(m) = &self.memory {
            let _ = writeln!(
                out,
                "  {:<12}server pid {} RSS {} -> {} = {:.2} KiB/conn ({:.0} B)",
                "memory",
                m.server_pids
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join("+"),
                mib(m.baseline_bytes),
                mib(m.after_bytes),
                m.per_conn_kib,
                m.per_conn_bytes
            );
        }
        if let Some(l) = &self.load {
            load_lines(&mut out, l);
        }
        if let Some(f) = &self.find_max {
            let _ = writeln!(out, "  find-max steps:");
            for s in &f.steps {
                let _ = writeln!(
                    out,
                    "    {:>10.1}/s  {:>12.0} deliv/s  p50 {:>8.2} ms  p99 {:>8.2} ms  lost {:>8}{}  {}",
                    s.target_rate,
                    s.deliveries_per_s,
                    s.latency.p50_ms,
                    s.latency.p99_ms,
                    s.lost,
                    cpu_cells(s.cpu.as_ref()),
                    s.failure.as_deref().unwrap_or("ok")
                );
            }
            match (f.max_rate, f.max_deliveries_per_s) {
                (Some(r), Some(d)) => {
                    let _ = writeln!(
                        out,
                        "  {:<12}{r:.1} publishes/s = {d:.0} deliveries/s sustained",
                        "max"
                    );
                }
                _ => {
                    let _ = writeln!(out, "  {:<12}no step passed", "max");
                }
            }
            if let Some(h) = &f.at_half {
                let _ = writeln!(out, "  at 50% of max:");
                load_lines(&mut out, h);
            }
        }
        out
    }

    /// Why the run should count as failed: publishing was requested but nothing was accepted.
    pub fn failure(&self) -> Option<String> {
        let steps: Vec<&LoadFigures> = self
            .load
            .iter()
            .chain(self.find_max.iter().flat_map(|f| f.steps.iter()))
            .collect();
        let accepted: u64 = steps.iter().map(|l| l.publish.accepted).sum();
        (!steps.is_empty() && accepted == 0).then(|| "the server accepted no publish".to_owned())
    }

    /// The one-line JSON form.
    pub fn json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(rate: f64, failure: Option<&str>) -> LoadFigures {
        LoadFigures {
            run: 1,
            stream: Stream::Broadcast,
            target_rate: rate,
            duration_s: 1.0,
            publish: PublishFigures::default(),
            clients: 10,
            expected: 100,
            received: 100,
            lost: 0,
            duplicates: 0,
            out_of_order: 0,
            misdelivered: 0,
            stale: 0,
            disconnects: 0,
            deliveries_per_s: rate * 10.0,
            latency: LatencySummary {
                count: 100,
                p99_ms: 1.5,
                ..LatencySummary::default()
            },
            cpu: None,
            failure: failure.map(Into::into),
        }
    }

    #[test]
    fn renders_table_and_json() {
        let report = Report {
            scenario: "broadcast",
            target: "herald",
            addr: "127.0.0.1:1".into(),
            nodes: 1,
            connections: 10,
            processes: 1,
            source_ips: 1,
            connect: ConnectFigures {
                ok: 10,
                rate_per_s: 500.0,
                ..ConnectFigures::default()
            },
            memory: Some(MemoryFigures {
                server_pid: 1,
                server_pids: vec![1],
                baseline_bytes: 1 << 20,
                after_bytes: 2 << 20,
                per_conn_bytes: 104_857.6,
                per_conn_kib: 102.4,
            }),
            load: None,
            find_max: Some(FindMaxFigures {
                steps: vec![load(10.0, None), load(20.0, Some("p99 too high"))],
                max_rate: Some(10.0),
                max_deliveries_per_s: Some(100.0),
                at_half: Some(load(5.0, None)),
            }),
        };
        let table = report.table();
        assert!(table.contains("500 conn/s"), "{table}");
        assert!(table.contains("102.40 KiB/conn"), "{table}");
        assert!(table.contains("p99 too high"), "{table}");
        assert!(table.contains("100 deliveries/s sustained"), "{table}");

        let json = report.json();
        assert!(!json.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["connect"]["ok"], 10);
        assert_eq!(v["find_max"]["steps"][1]["failure"], "p99 too high");
        assert_eq!(v["find_max"]["at_half"]["stream"], "broadcast");
        assert!(v.get("load").is_none());
        assert!(
            report.failure().is_some(),
            "no step had an accepted publish"
        );
    }

    #[test]
    fn cpu_per_publish_and_delivery() {
        // 2 CPU-s over 10 s for 1000 publications delivered 100,000 times, 0.05 cores idle.
        let p = ProcessCpu::new(vec![1, 2], 2.0, 10.0, Some(0.05), 1000, 100_000);
        assert!((p.cores - 0.2).abs() < 1e-9);
        assert!((p.us_per_publish - 2000.0).abs() < 1e-9);
        assert!((p.net_us_per_publish.unwrap() - 1500.0).abs() < 1e-9);
        assert!((p.us_per_delivery - 20.0).abs() < 1e-9);
        assert_eq!(p.cpu_s_per_million_deliveries, p.us_per_delivery);
        let none = ProcessCpu::new(vec![1], 1.0, 0.0, None, 0, 0);
        assert_eq!((none.cores, none.us_per_publish), (0.0, 0.0));
        assert_eq!(none.net_us_per_publish, None);
        // Idle larger than the measured use never goes negative.
        let quiet = ProcessCpu::new(vec![1], 0.1, 10.0, Some(1.0), 10, 10);
        assert_eq!(quiet.net_us_per_publish, Some(0.0));

        let mut l = load(10.0, None);
        l.cpu = Some(CpuFigures {
            window_s: 10.0,
            server: Some(ProcessCpu::new(
                vec![1, 2, 3],
                3.0,
                10.0,
                None,
                1000,
                1_000_000,
            )),
            redis: Some(p),
            bench: None,
        });
        let mut table = String::new();
        load_lines(&mut table, &l);
        assert!(
            table.contains("3.00 CPU-s per million deliveries"),
            "{table}"
        );
        assert!(
            table.contains("2000.00 µs per published message"),
            "{table}"
        );
        assert!(cpu_cells(l.cpu.as_ref()).contains("µs/pub"));
        let v: serde_json::Value = serde_json::to_value(&l).unwrap();
        assert_eq!(v["cpu"]["redis"]["pids"][1], 2);
        assert_eq!(v["cpu"]["server"]["cpu_s_per_million_deliveries"], 3.0);
    }

    #[test]
    fn accepted_publishes_mean_success() {
        let mut l = load(10.0, None);
        l.publish.accepted = 1;
        let report = Report {
            scenario: "broadcast",
            target: "herald",
            addr: String::new(),
            nodes: 1,
            connections: 1,
            processes: 1,
            source_ips: 1,
            connect: ConnectFigures::default(),
            memory: None,
            load: Some(l),
            find_max: None,
        };
        assert_eq!(report.failure(), None);
    }
}
