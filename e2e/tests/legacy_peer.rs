//! The legacy Django Channels service, run for real (daphne + channels_redis + Redis), behaves
//! as the legacy documents describe when driven through the bench's legacy adapter, client
//! and publisher: so the comparison measures the real legacy stack, speaking its protocol.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use herald_bench::adapter::legacy::{group_of, Legacy};
use herald_bench::adapter::{HttpCall, Inbound, Stream, Target};
use herald_bench::client::{self, small_ws_config, ClientConfig, Ws};
use herald_bench::payload::{now_micros, Payload};
use herald_bench::peers::legacy::{LegacyOptions, LegacyPeer};
use herald_bench::publisher::{publish, PublishPlan};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const WAIT: Duration = Duration::from_secs(10);

fn client_config(peer: &LegacyPeer, target: Arc<dyn Target>) -> ClientConfig {
    ClientConfig {
        target,
        ws_addr: peer.addr(),
        stream: Stream::Personal,
        ws_config: small_ws_config(),
    }
}

/// Connects `users` through the bench client (upgrade + subscribe handshake).
async fn connect_all(cfg: &ClientConfig, users: &[String]) -> Result<Vec<Ws>> {
    let mut sockets = Vec::new();
    for user in users {
        let (ws, _) = client::open(cfg, 0, user, LOOPBACK)
            .await
            .with_context(|| format!("connecting {user}"))?;
        sockets.push(ws);
    }
    Ok(sockets)
}

/// The next text frame, as JSON.
async fn next_json(ws: &mut Ws) -> Result<Value> {
    loop {
        match timeout(WAIT, ws.next()).await.context("no frame")? {
            Some(Ok(Message::Text(text))) => return Ok(serde_json::from_str(text.as_str())?),
            Some(Ok(Message::Close(frame))) => bail!("closed: {frame:?}"),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
            None => bail!("connection ended"),
        }
    }
}

/// Every push `ws` receives up to and including the next alert, as (type, payload) pairs,
/// classified by the adapter. Pushes to one consumer arrive in publish order, so what came
/// before the alert is everything else that was addressed to this client.
async fn pushes_until_alert(target: &dyn Target, ws: &mut Ws) -> Result<Vec<(String, Value)>> {
    let mut seen = Vec::new();
    loop {
        let frame = next_json(ws).await?;
        let text = frame.to_string();
        let Inbound::Delivery(payload) = target.classify(&text) else {
            bail!("expected a push, got {frame}");
        };
        let kind = frame["type"].as_str().unwrap_or_default().to_owned();
        seen.push((kind.clone(), serde_json::to_value(&payload)?));
        if kind == "alert" {
            return Ok(seen);
        }
    }
}

/// Publishes through the bench publisher: `total` publications of `stream`.
async fn bench_publish(
    peer: &LegacyPeer,
    target: &Arc<dyn Target>,
    stream: Stream,
    recipients: Vec<String>,
    run: u32,
) -> Result<u64> {
    let plan = PublishPlan {
        run,
        stream,
        rate: 10.0,
        duration: Duration::from_millis(100),
        batch: 1,
        connections: 1,
        recipients: Arc::new(recipients),
    };
    let outcome = publish(target.clone(), &[peer.addr()], &plan).await?;
    if outcome.failed_requests > 0 {
        bail!("publishing failed: {:?}", outcome.errors);
    }
    Ok(outcome.accepted)
}

/// Sends one adapter-built request to the peer and returns its status and body.
async fn post(addr: SocketAddr, call: HttpCall) -> Result<(u16, Bytes)> {
    let tcp = TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    let mut request = hyper::Request::builder()
        .method(call.method)
        .uri(call.path)
        .header(hyper::header::HOST, addr.to_string());
    for (name, value) in &call.headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let response = sender
        .send_request(request.body(Full::new(call.body))?)
        .await?;
    let status = response.status().as_u16();
    Ok((status, response.into_body().collect().await?.to_bytes()))
}

#[tokio::test]
async fn each_user_gets_only_their_notifications_their_groups_pushes_and_every_alert() -> Result<()>
{
    let peer = LegacyPeer::start(LegacyOptions::default()).await?;
    let target = peer.target_spec(3600).build()?;
    let legacy = Legacy::new(&peer.target_spec(3600))?;
    let cfg = client_config(&peer, target.clone());

    // Twelve browsers: bench-0..bench-9 form group 0, bench-10 and bench-11 group 1.
    let users: Vec<String> = (0..12).map(|i| format!("bench-{i}")).collect();
    assert_eq!(group_of("bench-9"), Some(0));
    assert_eq!(group_of("bench-10"), Some(1));
    let mut sockets = connect_all(&cfg, &users).await?;

    // The backend notifies bench-3 personally, then pushes an order update to group 0, then
    // raises an alert, each through channel_layer.group_send behind the peer's endpoint.
    let accepted =
        bench_publish(&peer, &target, Stream::Personal, vec!["bench-3".into()], 1).await?;
    assert_eq!(accepted, 1);
    let order = Payload {
        run: 1,
        seq: 100,
        ts: now_micros(),
        user: None,
    };
    let (status, body) = post(peer.addr(), legacy.group_call(0, &[order])?).await?;
    assert_eq!((status, legacy.accepted(status, &body, 1)?), (200, 1));
    let accepted = bench_publish(&peer, &target, Stream::Broadcast, Vec::new(), 1).await?;
    assert_eq!(accepted, 1);

    for (user, ws) in users.iter().zip(&mut sockets) {
        let seen = pushes_until_alert(&*target, ws).await?;
        let kinds: Vec<&str> = seen.iter().map(|(k, _)| k.as_str()).collect();
        let expected: &[&str] = match (user.as_str(), group_of(user)) {
            ("bench-3", _) => &["notification", "order_update", "alert"],
            (_, Some(0)) => &["order_update", "alert"],
            _ => &["alert"],
        };
        assert_eq!(kinds, expected, "{user} received {seen:?}");
        if user == "bench-3" {
            assert_eq!(seen[0].1["user"], "bench-3");
        }
        assert_eq!(seen.last().unwrap().1["seq"], 0);
    }
    assert_eq!(peer.dropped(), 0, "no drops at this load:\n{}", peer.log());
    Ok(())
}

#[tokio::test]
async fn the_legacy_protocol_answers_pings_and_subscriptions_and_refuses_bad_credentials(
) -> Result<()> {
    let mut peer = LegacyPeer::start(LegacyOptions::default()).await?;
    let target = peer.target_spec(3600).build()?;
    let cfg = client_config(&peer, target.clone());

    // The bench client's handshake is a subscribe answered with subscription_success.
    let mut ws = connect_all(&cfg, &["alice".to_owned()]).await?.remove(0);

    // ping → pong with a timestamp, as the front end's keep-alive expects.
    ws.send(Message::text(r#"{"type":"ping"}"#)).await?;
    let pong = next_json(&mut ws).await?;
    assert_eq!(pong["type"], "pong");
    assert!(
        pong["timestamp"].as_str().is_some_and(|t| !t.is_empty()),
        "{pong}"
    );

    // subscribe echoes the channels; unknown types and bad JSON get error frames and the
    // connection stays open.
    ws.send(Message::text(
        r#"{"type":"subscribe","channels":["notifications","alerts","orders"]}"#,
    ))
    .await?;
    let ok = next_json(&mut ws).await?;
    assert_eq!(ok["type"], "subscription_success");
    assert_eq!(
        ok["channels"],
        serde_json::json!(["notifications", "alerts", "orders"])
    );
    for bad in [r#"{"type":"shout"}"#, "not json"] {
        ws.send(Message::text(bad)).await?;
        let text = next_json(&mut ws).await?.to_string();
        assert!(
            matches!(target.classify(&text), Inbound::Error(_)),
            "{bad} → {text}"
        );
    }
    ws.send(Message::text(r#"{"type":"ping"}"#)).await?;
    assert_eq!(next_json(&mut ws).await?["type"], "pong");

    // A token signed with another secret is refused at the handshake (daphne answers 403).
    let mut forged = peer.target_spec(3600);
    forged.jwt_secret = "not-the-peer-secret".into();
    let forged_cfg = client_config(&peer, forged.build()?);
    let refused = client::open(&forged_cfg, 0, "mallory", LOOPBACK)
        .await
        .err()
        .context("a forged token was accepted")?;
    assert!(format!("{refused:#}").contains("403"), "{refused:#}");

    // A publisher with the wrong API key is refused and nothing is pushed.
    let mut wrong_key = peer.target_spec(3600);
    wrong_key.api_key = "wrong".into();
    let plan = PublishPlan {
        run: 1,
        stream: Stream::Broadcast,
        rate: 10.0,
        duration: Duration::from_millis(100),
        batch: 1,
        connections: 1,
        recipients: Arc::default(),
    };
    let outcome = publish(wrong_key.build()?, &[peer.addr()], &plan).await?;
    assert_eq!((outcome.accepted, outcome.failed_requests), (0, 1));
    assert!(
        outcome.errors.keys().any(|e| e.contains("401")),
        "{:?}",
        outcome.errors
    );
    ws.send(Message::text(r#"{"type":"ping"}"#)).await?;
    assert_eq!(
        next_json(&mut ws).await?["type"],
        "pong",
        "no alert went out"
    );

    // Stopping ends daphne and Redis.
    let pids = [peer.server_pids(), peer.redis_pids()].concat();
    assert_eq!(pids.len(), 2);
    peer.stop();
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "{pid} still runs"
        );
    }
    Ok(())
}
