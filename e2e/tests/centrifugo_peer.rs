//! Centrifugo, run for real (built by `e2e/peers/centrifugo/build.sh`), talks to the bench's
//! Centrifugo adapter, client, recorder and publisher: so the comparison measures real
//! Centrifugo deliveries, counted the same way as Herald's.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use herald_bench::adapter::centrifugo::Centrifugo;
use herald_bench::adapter::{HttpCall, Publication, Stream, Target};
use herald_bench::client::{self, small_ws_config, ClientConfig, Ws};
use herald_bench::payload::{now_micros, Payload};
use herald_bench::peers::centrifugo::{CentrifugoOptions, CentrifugoPeer, Engine};
use herald_bench::publisher::{publish, PublishPlan};
use herald_bench::recorder::{ClientState, Recorder};
use herald_testkit::redis::RedisCluster;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::{sleep, timeout, Instant};
use tokio_tungstenite::tungstenite::Message;

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const WAIT: Duration = Duration::from_secs(10);

fn client_config(addr: SocketAddr, target: Arc<dyn Target>, stream: Stream) -> ClientConfig {
    ClientConfig {
        target,
        ws_addr: addr,
        stream,
        ws_config: small_ws_config(),
    }
}

/// Connects `users` through the bench client (connect + subscribe handshake), each read by
/// the bench's read loop into `recorder`.
async fn connect_recorded(
    cfg: &ClientConfig,
    users: &[String],
    recorder: &Arc<Recorder>,
) -> Result<()> {
    for user in users {
        let (ws, _) = client::open(cfg, 0, user, LOOPBACK)
            .await
            .with_context(|| format!("connecting {user}"))?;
        recorder.connected();
        tokio::spawn(client::read_loop(
            ws,
            cfg.target.clone(),
            recorder.clone(),
            ClientState::new(user.clone()),
        ));
    }
    Ok(())
}

/// Waits until `recorder` has `count` deliveries, then a little longer to catch extras.
async fn wait_received(recorder: &Recorder, count: u64) -> Result<()> {
    let deadline = Instant::now() + WAIT;
    while recorder.received() < count {
        if Instant::now() > deadline {
            bail!("received {} of {count}", recorder.received());
        }
        sleep(Duration::from_millis(20)).await;
    }
    sleep(Duration::from_millis(300)).await;
    Ok(())
}

/// Publishes through the bench publisher: `total` publications of `stream` in batches.
async fn bench_publish(
    addr: SocketAddr,
    target: &Arc<dyn Target>,
    stream: Stream,
    recipients: Vec<String>,
    total: u64,
    batch: usize,
) -> Result<u64> {
    let plan = PublishPlan {
        run: 1,
        stream,
        rate: total as f64 * 10.0,
        duration: Duration::from_millis(100),
        batch,
        connections: 1,
        recipients: Arc::new(recipients),
    };
    let outcome = publish(target.clone(), &[addr], &plan).await?;
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

/// The next text frame's messages, classified by the adapter, rendered for assertions.
async fn next_messages(target: &dyn Target, ws: &mut Ws) -> Result<Vec<String>> {
    loop {
        match timeout(WAIT, ws.next()).await.context("no frame")? {
            Some(Ok(Message::Text(text))) => {
                let mut seen = Vec::new();
                target.each_message(text.as_str(), &mut |m| seen.push(format!("{m:?}")));
                return Ok(seen);
            }
            Some(Ok(Message::Close(frame))) => bail!("closed: {frame:?}"),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
            None => bail!("connection ended"),
        }
    }
}

#[tokio::test]
async fn personal_group_and_broadcast_messages_reach_exactly_their_recipients() -> Result<()> {
    let peer = CentrifugoPeer::start(CentrifugoOptions::default()).await?;
    let target = peer.target_spec(3600).build()?;
    let centrifugo = Centrifugo::new(&peer.target_spec(3600))?;

    // Twelve personal clients (bench-0..9 form group 0, bench-10 and bench-11 group 1),
    // each subscribed to its own user-limited channel and its group; five broadcast clients
    // subscribed to `alerts`.
    let personal_users: Vec<String> = (0..12).map(|i| format!("bench-{i}")).collect();
    let broadcast_users: Vec<String> = (100..105).map(|i| format!("bench-{i}")).collect();
    let personal = Arc::new(Recorder::default());
    let broadcast = Arc::new(Recorder::default());
    personal.start(1);
    broadcast.start(1);
    let personal_cfg = client_config(peer.addr(), target.clone(), Stream::Personal);
    let broadcast_cfg = client_config(peer.addr(), target.clone(), Stream::Broadcast);
    connect_recorded(&personal_cfg, &personal_users, &personal).await?;
    connect_recorded(&broadcast_cfg, &broadcast_users, &broadcast).await?;
    assert_eq!((personal.alive(), broadcast.alive()), (12, 5));

    // 24 personal messages, two per user, in batches of 5 (so through /api/batch).
    let accepted = bench_publish(
        peer.addr(),
        &target,
        Stream::Personal,
        personal_users.clone(),
        24,
        5,
    )
    .await?;
    assert_eq!(accepted, 24);
    wait_received(&personal, 24).await?;
    // Three broadcasts, one request each (so through /api/publish).
    let accepted = bench_publish(peer.addr(), &target, Stream::Broadcast, Vec::new(), 3, 1).await?;
    assert_eq!(accepted, 3);
    wait_received(&broadcast, 15).await?;
    // One push to group 0 reaches its ten members.
    let order = Payload {
        run: 1,
        seq: 100,
        ts: now_micros(),
        user: None,
    };
    let (status, body) = post(peer.addr(), centrifugo.group_call(0, &[order])?).await?;
    assert_eq!((status, centrifugo.accepted(status, &body, 1)?), (200, 1));
    wait_received(&personal, 34).await?;

    let p = personal.sample().counts;
    assert_eq!(
        (p.received, p.misdelivered, p.duplicates, p.out_of_order),
        (34, 0, 0, 0),
        "personal clients: {p:?}"
    );
    let b = broadcast.sample().counts;
    assert_eq!(
        (b.received, b.misdelivered, b.duplicates, b.out_of_order),
        (15, 0, 0, 0),
        "broadcast clients: {b:?}"
    );
    assert_eq!((personal.alive(), broadcast.alive()), (12, 5));
    Ok(())
}

#[tokio::test]
async fn centrifugo_refuses_foreign_channels_forged_tokens_and_wrong_keys() -> Result<()> {
    let mut peer = CentrifugoPeer::start(CentrifugoOptions::default()).await?;
    let target = peer.target_spec(3600).build()?;
    let centrifugo = Centrifugo::new(&peer.target_spec(3600))?;
    let cfg = client_config(peer.addr(), target.clone(), Stream::Broadcast);
    let (mut ws, _) = client::open(&cfg, 0, "mallory", LOOPBACK).await?;

    // Another user's personal channel is refused (permission denied), the connection stays.
    ws.send(Message::text(
        r#"{"id":7,"subscribe":{"channel":"personal:#bench-1"}}"#,
    ))
    .await?;
    let refused = next_messages(&*target, &mut ws).await?;
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(
        refused[0].starts_with("Error(") && refused[0].contains("103"),
        "{refused:?}"
    );
    // Own personal channel is fine.
    ws.send(Message::text(
        r#"{"id":8,"subscribe":{"channel":"personal:#mallory"}}"#,
    ))
    .await?;
    assert_eq!(next_messages(&*target, &mut ws).await?, ["Ack"]);

    // A token signed with another secret fails the connect handshake.
    let mut forged = peer.target_spec(3600);
    forged.jwt_secret = "not-the-peer-secret".into();
    let forged_cfg = client_config(peer.addr(), forged.build()?, Stream::Broadcast);
    assert!(client::open(&forged_cfg, 0, "eve", LOOPBACK).await.is_err());

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
    // The next thing mallory sees is the alert published with the right key.
    let alert = Payload {
        run: 1,
        seq: 0,
        ts: now_micros(),
        user: None,
    };
    let call = target.publish_call(&[Publication {
        stream: Stream::Broadcast,
        user: None,
        payload: alert,
    }])?;
    let (status, body) = post(peer.addr(), call).await?;
    assert_eq!(centrifugo.accepted(status, &body, 1)?, 1);
    let seen = next_messages(&*target, &mut ws).await?;
    assert!(
        seen.len() == 1 && seen[0].starts_with("Delivery("),
        "{seen:?}"
    );

    // Stopping ends the process.
    let pid = peer.pid().context("no pid")?;
    peer.stop();
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "{pid} still runs"
    );
    Ok(())
}

#[tokio::test]
async fn two_centrifugo_nodes_on_a_redis_cluster_deliver_each_others_publications() -> Result<()> {
    let redis = RedisCluster::start(3, 0).await?;
    let seeds: Vec<String> = redis.masters().iter().map(|n| n.addr()).collect();
    let mut nodes = Vec::new();
    for i in 0..2 {
        nodes.push(
            CentrifugoPeer::start(CentrifugoOptions {
                engine: Engine::RedisCluster(seeds.clone()),
                node_name: Some(format!("c-{i}")),
                ..CentrifugoOptions::default()
            })
            .await?,
        );
    }
    let target = nodes[0].target_spec(3600).build()?;
    // Clients on node 1; publications through node 0.
    let recorder = Arc::new(Recorder::default());
    recorder.start(1);
    let users: Vec<String> = (0..4).map(|i| format!("bench-{i}")).collect();
    let cfg = client_config(nodes[1].addr(), target.clone(), Stream::Personal);
    connect_recorded(&cfg, &users, &recorder).await?;
    let accepted = bench_publish(nodes[0].addr(), &target, Stream::Personal, users, 8, 4).await?;
    assert_eq!(accepted, 8);
    wait_received(&recorder, 8).await?;
    let c = recorder.sample().counts;
    assert_eq!(
        (c.received, c.misdelivered, c.duplicates),
        (8, 0, 0),
        "{c:?}"
    );
    Ok(())
}
