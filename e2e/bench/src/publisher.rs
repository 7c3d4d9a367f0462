//! Paced publishing: sends `rate` publications per second for `duration` over a few
//! keep-alive HTTP/1 connections, batching whatever is due when the server allows it.
//!
//! Each publication's `ts` is stamped just before its request is written, so measured
//! latency covers the publish request, the server's fan-out and the client read. When the
//! server answers slower than the schedule, requests queue and later ones carry bigger
//! batches; the achieved rate shows whether the publisher kept up.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::adapter::{Publication, Stream, Target};
use super::payload::{now_micros, Payload};
use super::stats::{tally_error, LatencyHist};

/// What to publish.
#[derive(Debug, Clone)]
pub struct PublishPlan {
    /// Run id stamped into every payload.
    pub run: u32,
    /// Broadcast or personal.
    pub stream: Stream,
    /// Publications per second.
    pub rate: f64,
    /// How long to publish.
    pub duration: Duration,
    /// Largest batch per request (capped by the adapter).
    pub batch: usize,
    /// Concurrent HTTP connections per node.
    pub connections: usize,
    /// Personal recipients, served round-robin; ignored for broadcast.
    pub recipients: Arc<Vec<String>>,
}

impl PublishPlan {
    /// Number of publications the plan sends.
    pub fn total(&self) -> u64 {
        ((self.rate * self.duration.as_secs_f64()).round() as u64).max(1)
    }
}

/// What publishing achieved.
#[derive(Debug, Clone, Default)]
pub struct PublishOutcome {
    /// Publications sent.
    pub attempted: u64,
    /// Publications the server accepted.
    pub accepted: u64,
    /// HTTP requests made.
    pub requests: u64,
    /// Requests that failed or were rejected.
    pub failed_requests: u64,
    /// Failure messages and their counts.
    pub errors: BTreeMap<String, u64>,
    /// Time from the first request to the last response.
    pub elapsed: Duration,
    /// Request round-trip times, µs.
    pub request_latency: LatencyHist,
}

impl PublishOutcome {
    fn merge(&mut self, other: Self) {
        self.attempted += other.attempted;
        self.accepted += other.accepted;
        self.requests += other.requests;
        self.failed_requests += other.failed_requests;
        for (k, v) in other.errors {
            tally_error(&mut self.errors, k, v);
        }
        self.request_latency.merge(&other.request_latency);
    }

    /// Accepted publications per second over at least the planned duration.
    pub fn achieved_rate(&self, planned: Duration) -> f64 {
        let secs = self.elapsed.max(planned).as_secs_f64();
        if secs > 0.0 {
            self.accepted as f64 / secs
        } else {
            0.0
        }
    }
}

/// A run of consecutive sequence numbers to publish in one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Batch {
    first: u64,
    count: u64,
}

/// Splits the publications due at `elapsed` into batches of at most `max`, advancing `next`.
fn due_batches(rate: f64, elapsed: Duration, total: u64, next: &mut u64, max: u64) -> Vec<Batch> {
    let due = ((elapsed.as_secs_f64() * rate).floor() as u64 + 1).min(total);
    let mut out = Vec::new();
    while *next < due {
        let count = (due - *next).min(max.max(1));
        out.push(Batch {
            first: *next,
            count,
        });
        *next += count;
    }
    out
}

/// The address each publish connection talks to: `per_node` connections to every node,
/// interleaved so that consecutive requests go to different nodes.
fn connection_addrs(addrs: &[SocketAddr], per_node: usize) -> Vec<SocketAddr> {
    (0..per_node.max(1))
        .flat_map(|_| addrs.iter().copied())
        .collect()
}

/// Publishes according to `plan` to the server node(s) at `addrs`: `plan.connections`
/// connections per node, requests spread round-robin over all of them.
pub async fn publish(
    target: Arc<dyn Target>,
    addrs: &[SocketAddr],
    plan: &PublishPlan,
) -> Result<PublishOutcome> {
    let total = plan.total();
    let max_batch = plan.batch.clamp(1, target.max_batch()) as u64;
    let conn_addrs = connection_addrs(addrs, plan.connections);
    if conn_addrs.is_empty() {
        anyhow::bail!("no publish address");
    }
    let conns = conn_addrs.len();

    let mut senders = Vec::with_capacity(conns);
    let mut tasks = Vec::with_capacity(conns);
    for addr in conn_addrs {
        let (tx, rx) = mpsc::channel::<Batch>(2);
        senders.push(tx);
        tasks.push(tokio::spawn(send_loop(
            target.clone(),
            addr,
            plan.clone(),
            rx,
        )));
    }

    let started = Instant::now();
    let mut next = 0u64;
    let mut turn = 0usize;
    while next < total {
        let at = started + Duration::from_secs_f64(next as f64 / plan.rate);
        tokio::time::sleep_until(at).await;
        for batch in due_batches(plan.rate, started.elapsed(), total, &mut next, max_batch) {
            // Back-pressure: waits when this connection still has requests queued.
            let _ = senders[turn % conns].send(batch).await;
            turn += 1;
        }
    }
    drop(senders);

    let mut outcome = PublishOutcome::default();
    for task in tasks {
        outcome.merge(task.await.context("publisher task")?);
    }
    outcome.elapsed = started.elapsed();
    Ok(outcome)
}

/// One HTTP connection's share of the publishing.
async fn send_loop(
    target: Arc<dyn Target>,
    addr: SocketAddr,
    plan: PublishPlan,
    mut rx: mpsc::Receiver<Batch>,
) -> PublishOutcome {
    let mut out = PublishOutcome::default();
    let mut conn: Option<SendRequest<Full<Bytes>>> = None;
    while let Some(batch) = rx.recv().await {
        out.attempted += batch.count;
        out.requests += 1;
        let sent = Instant::now();
        match send_batch(&*target, addr, &plan, batch, &mut conn).await {
            Ok(accepted) => {
                out.accepted += accepted as u64;
                out.request_latency
                    .record(sent.elapsed().as_micros() as u64);
            }
            Err(e) => {
                conn = None;
                out.failed_requests += 1;
                tally_error(&mut out.errors, format!("{e:#}"), 1);
            }
        }
    }
    out
}

async fn send_batch(
    target: &dyn Target,
    addr: SocketAddr,
    plan: &PublishPlan,
    batch: Batch,
    conn: &mut Option<SendRequest<Full<Bytes>>>,
) -> Result<usize> {
    let ts = now_micros();
    let recipients = plan.recipients.as_slice();
    let publications: Vec<Publication<'_>> = (batch.first..batch.first + batch.count)
        .map(|n| {
            let (user, seq) = match (plan.stream, recipients.len() as u64) {
                (Stream::Personal, len) if len > 0 => {
                    (Some(recipients[(n % len) as usize].as_str()), n / len)
                }
                _ => (None, n),
            };
            Publication {
                stream: plan.stream,
                user,
                payload: Payload {
                    run: plan.run,
                    seq,
                    ts,
                    user: user.map(Into::into),
                },
            }
        })
        .collect();
    let call = target.publish_call(&publications)?;

    let mut request = hyper::Request::builder()
        .method(call.method)
        .uri(call.path)
        .header(hyper::header::HOST, addr.to_string());
    for (name, value) in &call.headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let request = request.body(Full::new(call.body))?;

    let sender = match conn {
        Some(s) if !s.is_closed() => s,
        _ => conn.insert(open(addr).await?),
    };
    sender.ready().await.context("publish connection")?;
    let response = sender
        .send_request(request)
        .await
        .context("publish request")?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .context("publish response")?
        .to_bytes();
    target.accepted(status, &body, publications.len())
}

async fn open(addr: SocketAddr) -> Result<SendRequest<Full<Bytes>>> {
    let tcp = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect {addr}"))?;
    tcp.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_what_is_due() {
        let mut next = 0;
        // 1000/s: at t=0 one publication is due.
        assert_eq!(
            due_batches(1000.0, Duration::ZERO, 100, &mut next, 10),
            vec![Batch { first: 0, count: 1 }]
        );
        // At 25 ms, 26 are due in total: 25 more, in batches of 10.
        let b = due_batches(1000.0, Duration::from_millis(25), 100, &mut next, 10);
        assert_eq!(
            b.iter().map(|b| b.count).collect::<Vec<_>>(),
            vec![10, 10, 5]
        );
        assert_eq!(b[0].first, 1);
        assert_eq!(next, 26);
        // Never past the total.
        let b = due_batches(1000.0, Duration::from_secs(9), 100, &mut next, 1000);
        assert_eq!(
            b,
            vec![Batch {
                first: 26,
                count: 74
            }]
        );
        assert!(due_batches(1000.0, Duration::from_secs(10), 100, &mut next, 10).is_empty());
    }

    #[test]
    fn spreads_connections_over_nodes() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        assert_eq!(connection_addrs(&[a], 1), [a]);
        assert_eq!(connection_addrs(&[a], 0), [a]);
        assert_eq!(connection_addrs(&[a, b], 2), [a, b, a, b]);
        assert!(connection_addrs(&[], 2).is_empty());
    }

    #[test]
    fn plan_totals_and_rates() {
        let plan = PublishPlan {
            run: 1,
            stream: Stream::Broadcast,
            rate: 2.5,
            duration: Duration::from_secs(4),
            batch: 1,
            connections: 1,
            recipients: Arc::default(),
        };
        assert_eq!(plan.total(), 10);
        let o = PublishOutcome {
            accepted: 10,
            elapsed: Duration::from_secs(2),
            ..PublishOutcome::default()
        };
        assert!((o.achieved_rate(Duration::from_secs(4)) - 2.5).abs() < 1e-9);
    }
}
