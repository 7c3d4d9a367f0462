//! CPU time of processes, read from `/proc/<pid>/stat` (utime + stime, all threads).
//!
//! The bench reads the server nodes' and the Redis processes' CPU time before and after a
//! publishing step, so it can report CPU cost per delivery and per published message.

use std::sync::OnceLock;

use anyhow::{anyhow, Context, Result};

/// utime + stime of `pid` in clock ticks.
pub fn ticks_of(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_stat_ticks(&stat).ok_or_else(|| anyhow!("{path}: unexpected format"))
}

/// User + system CPU seconds used so far by all of `pids` together.
pub fn seconds_of(pids: &[u32]) -> Result<f64> {
    let mut ticks = 0;
    for &pid in pids {
        ticks += ticks_of(pid)?;
    }
    Ok(ticks as f64 / clock_ticks_per_second())
}

/// Extracts utime + stime (fields 14 and 15) from a `/proc/<pid>/stat` line.
pub fn parse_stat_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) may contain spaces and parentheses; everything after its
    // last ')' is space-separated, starting with field 3 (state).
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks per second in `/proc` (`getconf CLK_TCK`), 100 if it cannot be asked.
pub fn clock_ticks_per_second() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse::<f64>().ok())
            .filter(|&ticks| ticks > 0.0)
            .unwrap_or(100.0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat() {
        let stat = "4242 (redis-server (x) 1) S 1 4242 4242 0 -1 4194560 1219 0 0 0 250 37 0 0 20 0 5 0 123 0 0";
        assert_eq!(parse_stat_ticks(stat), Some(287));
        assert_eq!(parse_stat_ticks("4242 (x) S 1 2"), None);
        assert_eq!(parse_stat_ticks("no parenthesis"), None);
    }

    #[test]
    fn reads_own_cpu() {
        let me = std::process::id();
        assert!(ticks_of(me).is_ok());
        assert!(seconds_of(&[me, me]).unwrap() >= 0.0);
        assert!(seconds_of(&[]).unwrap() == 0.0);
        assert!(clock_ticks_per_second() > 0.0);
    }
}
