//! Addressing and sizing: the bench only ever talks to loopback, spreads client sockets
//! over several 127.0.0.x source addresses (each has ~28k ephemeral ports) and splits
//! connections over processes so no process exceeds its open-file limit.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use anyhow::{bail, Result};

/// Connections placed on one source address before another is needed.
pub const CONNS_PER_SOURCE_IP: usize = 25_000;
/// File descriptors a worker keeps for itself besides its client sockets.
pub const FD_RESERVE: usize = 200;
/// Open-file limit assumed when `/proc/self/limits` cannot be read.
const DEFAULT_FD_LIMIT: usize = 20_000;

/// Refuses anything that is not a loopback address.
pub fn ensure_loopback(addr: SocketAddr) -> Result<SocketAddr> {
    if !addr.ip().is_loopback() {
        bail!("{addr}: herald-bench only targets loopback addresses (127.0.0.0/8, ::1)");
    }
    Ok(addr)
}

/// Source address for connection `index` when spreading over `count` addresses (1..=254).
pub fn source_ip(index: usize, count: u8) -> IpAddr {
    let count = usize::from(count.max(1));
    // index % count < 254, so the last octet stays within 1..=254.
    let octet = u8::try_from(1 + index % count).unwrap_or(1);
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, octet))
}

/// Source addresses needed for `connections` (at least 1, at most 254).
pub fn auto_source_ips(connections: usize) -> u8 {
    u8::try_from(connections.div_ceil(CONNS_PER_SOURCE_IP).clamp(1, 254)).unwrap_or(254)
}

/// Client sockets one process may hold given an open-file `limit`.
pub fn conns_per_process(limit: usize) -> usize {
    limit.saturating_sub(FD_RESERVE).max(1)
}

/// Worker processes needed for `connections` given an open-file `limit`.
pub fn auto_processes(connections: usize, limit: usize) -> usize {
    connections.div_ceil(conns_per_process(limit)).max(1)
}

/// This process's soft open-file limit, from `/proc/self/limits`.
pub fn fd_limit() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|s| parse_fd_limit(&s))
        .unwrap_or(DEFAULT_FD_LIMIT)
}

fn parse_fd_limit(limits: &str) -> Option<usize> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_only() {
        assert!(ensure_loopback("127.0.0.1:80".parse().unwrap()).is_ok());
        assert!(ensure_loopback("127.9.0.1:80".parse().unwrap()).is_ok());
        assert!(ensure_loopback("[::1]:80".parse().unwrap()).is_ok());
        assert!(ensure_loopback("10.0.0.1:80".parse().unwrap()).is_err());
        assert!(ensure_loopback("0.0.0.0:80".parse().unwrap()).is_err());
    }

    #[test]
    fn spreads_sources() {
        assert_eq!(source_ip(0, 3).to_string(), "127.0.0.1");
        assert_eq!(source_ip(4, 3).to_string(), "127.0.0.2");
        assert_eq!(source_ip(253, 254).to_string(), "127.0.0.254");
        assert_eq!(source_ip(7, 0).to_string(), "127.0.0.1");
        assert_eq!(auto_source_ips(1), 1);
        assert_eq!(auto_source_ips(25_001), 2);
        assert_eq!(auto_source_ips(100_000_000), 254);
    }

    #[test]
    fn sizes_processes() {
        assert_eq!(auto_processes(10, 20_000), 1);
        assert_eq!(auto_processes(19_800, 20_000), 1);
        assert_eq!(auto_processes(19_801, 20_000), 2);
        assert_eq!(auto_processes(100_000, 20_000), 6);
    }

    #[test]
    fn parses_limits() {
        let s = "Limit                     Soft Limit           Hard Limit           Units     \n\
                 Max processes             94587                94587                processes \n\
                 Max open files            1024                 20000                files     \n";
        assert_eq!(parse_fd_limit(s), Some(1024));
        assert_eq!(parse_fd_limit("nothing"), None);
    }
}
