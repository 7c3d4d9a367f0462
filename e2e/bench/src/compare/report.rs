//! The report of a comparison: the Markdown table (medians, ranges, Herald's ratios) and the
//! chart's panels.

use std::fmt::Write as _;

use super::super::chart::{Bar, Panel};
use super::{ratio, CompareArgs, Metric, Results, Server};

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
pub(super) fn panels(results: &Results, servers: &[Server]) -> Vec<Panel> {
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
