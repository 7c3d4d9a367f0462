//! Resident memory of a process, read from `/proc/<pid>/status` (`VmRSS`).
//!
//! Used for the server (memory per idle connection) and for the bench's own workers.

use anyhow::{anyhow, Context, Result};

/// Resident set size of `pid` in bytes.
pub fn of_pid(pid: u32) -> Result<u64> {
    read(&format!("/proc/{pid}/status"))
}

/// Resident set sizes of all of `pids` added up, in bytes.
pub fn sum_of(pids: &[u32]) -> Result<u64> {
    let mut total = 0;
    for &pid in pids {
        total += of_pid(pid)?;
    }
    Ok(total)
}

/// Resident set size of the calling process in bytes.
pub fn of_self() -> Result<u64> {
    read("/proc/self/status")
}

fn read(path: &str) -> Result<u64> {
    let status = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    parse_vm_rss(&status).ok_or_else(|| anyhow!("{path}: no VmRSS line"))
}

/// Extracts `VmRSS` (reported in kB) from a status file, in bytes.
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut parts = line["VmRSS:".len()..].split_whitespace();
    let value: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") | None => Some(value * 1024),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status() {
        let s = "Name:\therald-node\nVmPeak:\t  999 kB\nVmRSS:\t   12345 kB\nThreads:\t4\n";
        assert_eq!(parse_vm_rss(s), Some(12345 * 1024));
        assert_eq!(parse_vm_rss("Name: x\n"), None);
        assert_eq!(parse_vm_rss("VmRSS: 10 MB\n"), None);
    }

    #[test]
    fn reads_own_rss() {
        assert!(of_self().unwrap() > 0);
        let me = std::process::id();
        assert!(of_pid(me).unwrap() > 0);
        assert!(sum_of(&[me, me]).unwrap() >= of_pid(me).unwrap());
    }
}
