//! Several Herald nodes on a real Redis Cluster (3 masters + 3 replicas) act as one:
//! every story here runs real `redis-server` and `herald-node` processes on loopback.

use std::collections::BTreeSet;
use std::time::Duration;

use herald_testkit::node::{Client, TestNode};
use herald_testkit::redis::RedisCluster;
use serde_json::{json, Value};

/// The stories share two cores with six Redis servers and several nodes each: run
/// them one at a time so timing faults (failover) are not drowned in load.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn start_nodes(cluster: &RedisCluster, count: usize, extra: &[&str]) -> Vec<TestNode> {
    let url = cluster.url();
    (0..count)
        .map(|i| {
            let id = format!("node-{i}");
            let mut args = vec!["--redis-url", url.as_str(), "--node-id", id.as_str()];
            args.extend_from_slice(extra);
            TestNode::start(&args)
        })
        .collect()
}

/// Reads until `want` messages of `kind` arrived (failing after 10 s of silence).
async fn collect(client: &mut Client, kind: &str, want: usize) -> Vec<Value> {
    let mut got = Vec::new();
    while got.len() < want {
        let message = client
            .recv_within(Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("only {} of {want} {kind} messages arrived", got.len()));
        if message["type"] == kind {
            got.push(message);
        }
    }
    got
}

/// Reads `want` messages on `channel`, failing on any of another type than `kind`
/// (a filter leak) or after 10 s of silence.
async fn collect_only(client: &mut Client, channel: &str, kind: &str, want: usize) -> Vec<Value> {
    let mut got = Vec::new();
    while got.len() < want {
        let message = client
            .recv_within(Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("only {} of {want} {kind} messages arrived", got.len()));
        if message["channel"] == channel {
            assert_eq!(
                message["type"], kind,
                "a {kind} filter let through {message}"
            );
            got.push(message);
        }
    }
    got
}

/// A channel file in a fresh directory of its own, removed when the story ends.
struct ChannelFile {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
}

/// Writes a channel file for `story`.
fn channel_file(story: &str, channels: Value) -> ChannelFile {
    let dir = tempfile::Builder::new()
        .prefix(&format!("herald-e2e-{story}-"))
        .tempdir()
        .unwrap();
    let path = dir.path().join("channels.json");
    std::fs::write(&path, json!({"channels": channels}).to_string()).unwrap();
    ChannelFile { _dir: dir, path }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_on_different_nodes_get_broadcasts_and_their_own_messages_exactly_once() {
    let _serial = SERIAL.lock().await;
    const USERS: usize = 12;
    const ALERTS: u64 = 20;
    const PERSONAL: u64 = 10;
    let cluster = RedisCluster::start(3, 1)
        .await
        .expect("Redis Cluster starts");
    let nodes = start_nodes(&cluster, 3, &[]);
    let mut clients = Vec::new();
    for u in 0..USERS {
        // Each user is connected to a different node than its neighbour.
        let mut client = nodes[u % 3].connect(&format!("user-{u}")).await;
        client.assert_alive().await;
        clients.push((u, client));
    }
    // Publishers race through all three nodes.
    let mut publishes = Vec::new();
    for seq in 0..ALERTS {
        publishes.push((
            seq as usize % 3,
            json!({"channel": "alerts", "type": "alert", "data": {"seq": seq}}),
        ));
    }
    for u in 0..USERS {
        for seq in 0..PERSONAL {
            publishes.push((
                (u + seq as usize) % 3,
                json!({"channel": "notifications", "type": "notification",
                       "users": [format!("user-{u}")], "data": {"user": format!("user-{u}"), "seq": seq}}),
            ));
        }
    }
    let mut tasks = Vec::new();
    let nodes = std::sync::Arc::new(nodes);
    for chunk in publishes.chunks(24) {
        let chunk = chunk.to_vec();
        let nodes = nodes.clone();
        tasks.push(tokio::spawn(async move {
            for (via, body) in chunk {
                let (status, reply) = nodes[via].publish(&body).await;
                assert_eq!(status, 200, "{reply}");
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    for (u, client) in &mut clients {
        let mut alerts = BTreeSet::new();
        let mut mine = BTreeSet::new();
        while alerts.len() < ALERTS as usize || mine.len() < PERSONAL as usize {
            let message = client
                .recv_within(Duration::from_secs(10))
                .await
                .unwrap_or_else(|| {
                    panic!("user-{u}: {} alerts, {} personal", alerts.len(), mine.len())
                });
            let seq = message["data"]["seq"].as_u64().unwrap();
            match message["type"].as_str().unwrap() {
                "alert" => assert!(alerts.insert(seq), "user-{u}: alert {seq} twice"),
                "notification" => {
                    assert_eq!(message["data"]["user"], format!("user-{u}"), "misdelivery");
                    assert!(mine.insert(seq), "user-{u}: notification {seq} twice");
                }
                other => panic!("unexpected {other}"),
            }
        }
        client.expect_silence(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_reconnecting_to_another_node_recovers_exactly_what_it_missed() {
    let _serial = SERIAL.lock().await;
    let cluster = RedisCluster::start(3, 1)
        .await
        .expect("Redis Cluster starts");
    let nodes = start_nodes(&cluster, 3, &[]);
    let mut client = nodes[0].connect("ann").await;
    let (status, first) = nodes[1]
        .publish(&json!({"channel": "alerts", "type": "alert", "data": {"n": 0}}))
        .await;
    assert_eq!(status, 200, "{first}");
    let seen = client.recv().await;
    assert_eq!(seen["data"]["n"], 0);
    let since = seen["offset"].as_str().unwrap().to_owned();
    drop(client);
    for n in 1..=5 {
        nodes[n % 3]
            .publish(&json!({"channel": "alerts", "type": "alert", "data": {"n": n}}))
            .await;
    }
    // Reconnect elsewhere, leave the auto-subscription and recover from the offset.
    let mut client = nodes[2].connect("ann").await;
    client
        .send_json(json!({"type": "unsubscribe", "channels": ["alerts"]}))
        .await;
    client.recv_type("unsubscription_success").await;
    client
        .send_json(json!({"type": "subscribe", "channels": ["alerts"], "since": {"alerts": since}}))
        .await;
    let reply = client.recv_type("subscription_success").await;
    assert_eq!(reply["recovered"]["alerts"], true, "{reply}");
    let replayed: Vec<u64> = collect(&mut client, "alert", 5)
        .await
        .iter()
        .map(|m| m["data"]["n"].as_u64().unwrap())
        .collect();
    assert_eq!(replayed, [1, 2, 3, 4, 5]);
    nodes[0]
        .publish(&json!({"channel": "alerts", "type": "alert", "data": {"n": 6}}))
        .await;
    assert_eq!(collect(&mut client, "alert", 1).await[0]["data"]["n"], 6);
    client.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_whose_gap_was_trimmed_away_is_told_so_and_gets_what_is_kept() {
    let _serial = SERIAL.lock().await;
    let channels = channel_file(
        "trim",
        json!([
            {"name": "ticks", "access": "authenticated", "history": true, "capacity": 3}
        ]),
    );
    let cluster = RedisCluster::start(3, 1)
        .await
        .expect("Redis Cluster starts");
    let nodes = start_nodes(
        &cluster,
        2,
        &["--channels", channels.path.to_str().unwrap()],
    );
    // Five ticks into a history of three: ticks 1 and 2 are trimmed away.
    let mut offsets = Vec::new();
    for n in 1..=5 {
        let (status, reply) = nodes[n % 2]
            .publish(&json!({"channel": "ticks", "type": "tick", "data": {"n": n}}))
            .await;
        assert_eq!(status, 200, "{reply}");
        offsets.push(reply["offsets"][0].as_str().unwrap().to_owned());
    }
    let recover = |since: String| {
        let node = &nodes[0];
        async move {
            let mut client = node.connect("tess").await;
            client
                .send_json(json!({"type": "subscribe", "channels": ["ticks"],
                                  "since": {"ticks": since}}))
                .await;
            let reply = client.recv_type("subscription_success").await;
            let mut replayed = Vec::new();
            while let Some(message) = client.recv_within(Duration::from_millis(500)).await {
                if message["type"] == "tick" {
                    replayed.push(message["data"]["n"].as_u64().unwrap());
                }
            }
            (reply["recovered"]["ticks"].clone(), replayed)
        }
    };
    // Tick 1 seen: tick 2 is gone, so the client must refetch; what is kept still comes.
    assert_eq!(
        recover(offsets[0].clone()).await,
        (json!(false), vec![3, 4, 5])
    );
    // Tick 2 seen: nothing after it was lost.
    assert_eq!(
        recover(offsets[1].clone()).await,
        (json!(true), vec![3, 4, 5])
    );
    assert_eq!(recover(offsets[3].clone()).await, (json!(true), vec![5]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_users_get_queued_messages_and_unacked_ones_come_back_on_any_node() {
    let _serial = SERIAL.lock().await;
    let channels = channel_file(
        "acks",
        json!([
            {"name": "orders", "access": "user", "auto_subscribe": true, "history": true},
            {"name": "tasks", "access": "user", "auto_subscribe": true, "history": true, "ack_required": true}
        ]),
    );
    let cluster = RedisCluster::start(3, 1)
        .await
        .expect("Redis Cluster starts");
    let nodes = start_nodes(
        &cluster,
        2,
        &["--channels", channels.path.to_str().unwrap()],
    );
    for n in 1..=3 {
        let (status, _) = nodes[0]
            .publish(&json!({"channel": "orders", "type": "order_update", "users": ["bob"], "data": {"n": n}}))
            .await;
        assert_eq!(status, 200);
    }
    let mut offsets = Vec::new();
    for n in 1..=2 {
        let (_, reply) = nodes[0]
            .publish(
                &json!({"channel": "tasks", "type": "task", "users": ["bob"], "data": {"n": n}}),
            )
            .await;
        offsets.push(reply["offsets"][0].as_str().unwrap().to_owned());
    }
    // Bob was offline; he connects to the other node and gets everything, once.
    let mut bob = nodes[1].connect("bob").await;
    let mut orders = Vec::new();
    let mut tasks = Vec::new();
    while orders.len() + tasks.len() < 5 {
        let message = bob.recv().await;
        match message["type"].as_str() {
            Some("order_update") => orders.push(message),
            Some("task") => tasks.push(message),
            _ => panic!("unexpected {message}"),
        }
    }
    assert_eq!(
        orders
            .iter()
            .map(|m| m["data"]["n"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_eq!(tasks.len(), 2);
    bob.send_json(json!({"type": "ack", "channel": "tasks", "offset": offsets[0]}))
        .await;
    bob.assert_alive().await;
    drop(bob);
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Back on the first node: orders were delivered (not repeated), task 2 was never acked.
    let mut bob = nodes[0].connect("bob").await;
    let again = collect(&mut bob, "task", 1).await;
    assert_eq!(again[0]["data"]["n"], 2);
    bob.expect_silence(Duration::from_millis(500)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_redis_master_loses_no_acknowledged_publish() {
    let _serial = SERIAL.lock().await;
    let channels = channel_file(
        "failover",
        json!([{"name": "alerts", "access": "authenticated", "auto_subscribe": true,
                "history": true, "capacity": 10000}]),
    );
    let mut cluster = RedisCluster::start(3, 1)
        .await
        .expect("Redis Cluster starts");
    let nodes = std::sync::Arc::new(start_nodes(
        &cluster,
        2,
        &["--channels", channels.path.to_str().unwrap()],
    ));
    let mut watcher = nodes[1].connect("watcher").await;
    watcher.assert_alive().await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let accepted_count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let publisher = {
        let nodes = nodes.clone();
        let stop = stop.clone();
        let accepted_count = accepted_count.clone();
        tokio::spawn(async move {
            let mut accepted_seqs = Vec::new();
            let mut refused = 0u32;
            let mut seq = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (status, _) = nodes[0]
                    .publish(&json!({"channel": "alerts", "type": "alert", "data": {"seq": seq}}))
                    .await;
                match status {
                    200 => {
                        accepted_seqs.push(seq);
                        accepted_count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    503 => refused += 1,
                    other => panic!("unexpected status {other}"),
                }
                seq += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (accepted_seqs, refused)
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Kill the master that owns the alerts stream's slot, so the fault is on the path.
    let slot = cluster
        .cli(&["CLUSTER", "KEYSLOT", "herald:{c:alerts}:log"])
        .await
        .unwrap()
        .trim()
        .parse::<u16>()
        .unwrap();
    let index = cluster
        .masters()
        .iter()
        .position(|m| m.serves_slot(slot))
        .expect("a master serves the slot");
    cluster.kill_master(index).unwrap();
    // While the cluster is down the node says so.
    let mut saw_unready = false;
    for _ in 0..50 {
        let (status, _) = nodes[0].http("GET", "/readyz", None, String::new()).await;
        if status == 503 {
            saw_unready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(saw_unready, "/readyz reported the outage");
    cluster
        .wait_for_failover(Duration::from_secs(20))
        .await
        .expect("failover completes");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (status, _) = nodes[0].http("GET", "/readyz", None, String::new()).await;
        if status == 200 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node did not recover"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Publishing resumes after the failover.
    let before = accepted_count.load(std::sync::atomic::Ordering::Relaxed);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while accepted_count.load(std::sync::atomic::Ordering::Relaxed) < before + 10 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "publishing did not resume"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (accepted, refused) = publisher.await.unwrap();
    // Live fan-out across nodes works again: the subscription moved to the new master.
    let (status, _) = nodes[0]
        .publish(
            &json!({"channel": "alerts", "type": "alert", "data": {"marker": "after-failover"}}),
        )
        .await;
    assert_eq!(status, 200);
    // Every acknowledged publish reached the live watcher or is in history.
    let mut received = BTreeSet::new();
    let mut saw_marker = false;
    while let Some(message) = watcher.recv_within(Duration::from_secs(3)).await {
        if message["data"]["marker"] == "after-failover" {
            saw_marker = true;
        } else if message["type"] == "alert" {
            received.insert(message["data"]["seq"].as_u64().unwrap());
        }
    }
    assert!(
        saw_marker,
        "live delivery to the other node resumed after failover"
    );
    let mut late = nodes[1].connect("late").await;
    late.send_json(json!({"type": "unsubscribe", "channels": ["alerts"]}))
        .await;
    late.recv_type("unsubscription_success").await;
    late.send_json(
        json!({"type": "subscribe", "channels": ["alerts"], "since": {"alerts": "0-0"}}),
    )
    .await;
    late.recv_type("subscription_success").await;
    let mut history = BTreeSet::new();
    while let Some(message) = late.recv_within(Duration::from_secs(2)).await {
        if message["type"] == "alert" && message["data"]["seq"].is_u64() {
            history.insert(message["data"]["seq"].as_u64().unwrap());
        }
    }
    let lost: Vec<u64> = accepted
        .iter()
        .filter(|seq| !received.contains(seq) && !history.contains(seq))
        .copied()
        .collect();
    assert!(
        lost.is_empty(),
        "acknowledged but lost: {lost:?} (refused during outage: {refused})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_see_nodes_sessions_and_messages_across_the_cluster() {
    let _serial = SERIAL.lock().await;
    let cluster = RedisCluster::start(3, 1)
        .await
        .expect("Redis Cluster starts");
    let nodes = start_nodes(
        &cluster,
        2,
        &[
            "--heartbeat-interval",
            "200ms",
            "--max-connections-per-user",
            "2",
        ],
    );
    let key = herald_testkit::node::API_KEY;
    let mut ann = nodes[0].connect("ann").await;
    let _bob = nodes[1].connect("bob").await;
    ann.assert_alive().await;
    let (status, _) = nodes[1]
        .publish(&json!({"channel": "notifications", "type": "notification", "users": ["ann"], "data": {"title": "for ann"}}))
        .await;
    assert_eq!(status, 200);
    nodes[0]
        .publish(&json!({"channel": "alerts", "type": "alert", "data": {"title": "everyone"}}))
        .await;
    tokio::time::sleep(Duration::from_millis(800)).await;

    let (status, view) = nodes[1]
        .http("GET", "/api/v1/nodes", Some(key), String::new())
        .await;
    assert_eq!(status, 200, "{view}");
    let ids: BTreeSet<&str> = view["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, BTreeSet::from(["node-0", "node-1"]));
    assert_eq!(view["connections"], 2);

    let (_, sessions) = nodes[1]
        .http(
            "GET",
            "/api/developer/websocket-sessions/?user=ann",
            Some(key),
            String::new(),
        )
        .await;
    assert_eq!(sessions["count"], 1, "{sessions}");
    assert_eq!(sessions["results"][0]["node"], "node-0");
    let (_, subscribed) = nodes[0]
        .http(
            "GET",
            "/api/developer/websocket-sessions/?channel=alerts&page_size=1",
            Some(key),
            String::new(),
        )
        .await;
    assert_eq!(
        (
            subscribed["count"].as_u64(),
            subscribed["results"].as_array().unwrap().len()
        ),
        (Some(2), 1)
    );

    let (_, mine) = nodes[0]
        .http(
            "GET",
            "/api/developer/websocket-messages/?channel=notifications&user=ann",
            Some(key),
            String::new(),
        )
        .await;
    assert_eq!(mine["count"], 1, "{mine}");
    assert_eq!(mine["results"][0]["data"]["title"], "for ann");
    let (status, refusal) = nodes[0]
        .http(
            "GET",
            "/api/developer/websocket-messages/?channel=notifications",
            Some(key),
            String::new(),
        )
        .await;
    assert_eq!(
        (status, refusal["error"]["code"].as_str()),
        (400, Some("user_required"))
    );
    let (_, everyone) = nodes[0]
        .http(
            "GET",
            "/api/developer/websocket-messages/?channel=alerts",
            Some(key),
            String::new(),
        )
        .await;
    assert_eq!(everyone["results"][0]["data"]["title"], "everyone");

    // The per-user cap holds across nodes: ann has one connection on node-0.
    let _second = nodes[1].connect("ann").await;
    let (status, body) = nodes[1]
        .refused(&nodes[1].ws_url(&herald_testkit::node::token("ann")))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (429, Some("too_many_connections"))
    );
    // Closing a connection frees a place.
    drop(ann);
    tokio::time::sleep(Duration::from_millis(300)).await;
    nodes[1].connect("ann").await.assert_alive().await;
}

/// Sum of every `herald_decode_failures_total` series a node reports, and whether it
/// reports them at all (they start at zero, so absence would prove nothing).
async fn decode_failures(node: &TestNode) -> (bool, f64) {
    let (_, text) = node.http_raw("GET", "/metrics", None, String::new()).await;
    let text = String::from_utf8_lossy(&text);
    let series: Vec<f64> = text
        .lines()
        .filter(|line| line.starts_with("herald_decode_failures_total{"))
        .map(|line| line.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    (!series.is_empty(), series.iter().sum())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_and_types_json_must_escape_get_their_messages_on_every_node_and_only_theirs() {
    let _serial = SERIAL.lock().await;
    // Ids from a Windows domain, an Irish surname, emoji, and a very long one.
    let long = format!("{}\\\"🦀", "x".repeat(300));
    let users = [r"CORP\alice", r#"o"brien"#, "🦊 fox ✓", long.as_str()];
    let kind = r#"memo "urgent" C:\inbox"#;
    let channels = channel_file(
        "escapes",
        json!([
            {"name": "inbox", "access": "user", "auto_subscribe": true, "history": true,
             "allowed_types": [kind]}
        ]),
    );
    let cluster = RedisCluster::start(3, 1)
        .await
        .expect("Redis Cluster starts");
    let nodes = start_nodes(
        &cluster,
        2,
        &["--channels", channels.path.to_str().unwrap()],
    );
    let (a, b) = (&nodes[0], &nodes[1]);
    let publish = |user: &str, n: u64| {
        let body = json!({"channel": "inbox", "type": kind, "users": [user],
                          "data": {"for": user, "n": n}});
        async move {
            let (status, reply) = a.publish(&body).await;
            assert_eq!(status, 200, "{reply}");
            reply["offsets"][0].as_str().unwrap().to_owned()
        }
    };

    // While they are offline, node A accepts one message for each of them.
    let mut first = Vec::new();
    for user in users {
        first.push(publish(user, 1).await);
    }
    // They connect to node B and get it from history; Bob, also on B, gets nothing.
    let mut bob = b.connect("bob").await;
    let mut clients = Vec::new();
    for (user, offset) in users.iter().zip(&first) {
        let mut client = b.connect(user).await;
        let got = client.recv_type(kind).await;
        assert_eq!(
            (&got["data"]["for"], &got["data"]["n"], &got["offset"]),
            (&json!(user), &json!(1), &json!(offset)),
            "offline delivery to {user:?}"
        );
        clients.push(client);
    }
    // Live: node A publishes, each of them receives exactly their own on node B.
    for user in users {
        publish(user, 2).await;
    }
    for (user, client) in users.iter().zip(&mut clients) {
        let got = client.recv_type(kind).await;
        assert_eq!(
            (&got["type"], &got["data"]["for"], &got["data"]["n"]),
            (&json!(kind), &json!(user), &json!(2)),
            "live delivery to {user:?}"
        );
        client.expect_silence(Duration::from_millis(200)).await;
    }
    bob.expect_silence(Duration::from_millis(300)).await;
    // A resume on a new connection to node B, from the first offset, brings the second
    // message exactly once (by offline delivery or by the replay, whichever comes first:
    // a connection never gets an offset twice).
    drop(clients);
    for (user, since) in users.iter().zip(&first) {
        let mut client = b.connect(user).await;
        client
            .send_json(json!({"type": "subscribe", "channels": ["inbox"],
                              "since": {"inbox": since}}))
            .await;
        let mut seen = Vec::new();
        let mut recovered = None;
        while recovered.is_none() || seen.is_empty() {
            let frame = client.recv().await;
            if frame["type"] == "subscription_success" {
                recovered = Some(frame["recovered"]["inbox"].clone());
            } else if frame["type"] == kind {
                seen.push(frame);
            }
        }
        assert_eq!(recovered, Some(json!(true)), "{user:?}");
        assert_eq!(
            (&seen[0]["data"]["for"], &seen[0]["data"]["n"]),
            (&json!(user), &json!(2)),
            "resume of {user:?}"
        );
        client.expect_silence(Duration::from_millis(300)).await;
    }
    for node in [a, b] {
        assert_eq!(decode_failures(node).await, (true, 0.0));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resuming_user_gets_each_offset_once_and_unacked_tasks_back_on_the_other_node() {
    let _serial = SERIAL.lock().await;
    let channels = channel_file(
        "resume",
        json!([
            {"name": "orders", "access": "user", "auto_subscribe": true, "history": true},
            {"name": "tasks", "access": "user", "history": true, "ack_required": true}
        ]),
    );
    let cluster = RedisCluster::start(3, 1)
        .await
        .expect("Redis Cluster starts");
    let nodes = start_nodes(
        &cluster,
        2,
        &["--channels", channels.path.to_str().unwrap()],
    );
    let alice = "alice's 🦀 desk";
    let order = |n: u64| json!({"channel": "orders", "type": "order_update", "users": [alice], "data": {"n": n}});
    let task =
        |n: u64| json!({"channel": "tasks", "type": "task", "users": [alice], "data": {"n": n}});

    // On node 0: one order seen, tasks joined by subscribe, three tasks, the second acked.
    let mut client = nodes[0].connect(alice).await;
    client
        .send_json(json!({"type": "subscribe", "channels": ["tasks"]}))
        .await;
    let reply = client.recv_type("subscription_success").await;
    assert_eq!(reply["channels"], json!(["tasks"]));
    assert_eq!(nodes[1].publish(&order(0)).await.0, 200);
    let seen = collect(&mut client, "order_update", 1).await.remove(0);
    assert_eq!(seen["data"]["n"], 0);
    let since = seen["offset"].as_str().unwrap().to_owned();
    let mut task_offsets = Vec::new();
    for n in 1..=3 {
        let (status, reply) = nodes[1].publish(&task(n)).await;
        assert_eq!(status, 200, "{reply}");
        task_offsets.push(reply["offsets"][0].as_str().unwrap().to_owned());
    }
    let tasks = collect(&mut client, "task", 3).await;
    assert_eq!(
        tasks
            .iter()
            .map(|t| t["data"]["n"].clone())
            .collect::<Vec<_>>(),
        [1, 2, 3]
    );
    client
        .send_json(json!({"type": "ack", "channel": "tasks", "offset": task_offsets[1]}))
        .await;
    client.assert_alive().await;
    drop(client);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Offline, three more orders.
    let mut order_offsets = Vec::new();
    for n in 1..=3 {
        let (status, reply) = nodes[0].publish(&order(n)).await;
        assert_eq!(status, 200, "{reply}");
        order_offsets.push(reply["offsets"][0].as_str().unwrap().to_owned());
    }

    // Back on node 1, a resume-aware client at once subscribes with its offset and
    // joins tasks; offline delivery has already sent the orders it missed.
    let mut client = nodes[1].connect(alice).await;
    client
        .send_json(json!({"type": "subscribe", "channels": ["orders", "tasks"],
                          "since": {"orders": since}}))
        .await;
    let mut orders = Vec::new();
    let mut tasks = Vec::new();
    let mut reply = None;
    while let Some(message) = client.recv_within(Duration::from_secs(1)).await {
        match message["type"].as_str() {
            Some("order_update") => orders.push(message),
            Some("task") => tasks.push(message),
            Some("subscription_success") => reply = Some(message),
            _ => panic!("unexpected {message}"),
        }
    }
    let reply = reply.expect("subscription_success");
    assert_eq!(reply["channels"], json!(["orders", "tasks"]), "{reply}");
    assert_eq!(reply["recovered"]["orders"], true, "{reply}");
    let offsets: Vec<&str> = orders
        .iter()
        .map(|m| m["offset"].as_str().unwrap())
        .collect();
    assert_eq!(offsets, order_offsets, "each missed order once, in order");
    assert_eq!(tasks.len(), 1, "only the unacknowledged task: {tasks:?}");
    assert_eq!(tasks[0]["data"]["n"], 3);
    assert_eq!(tasks[0]["offset"], task_offsets[2].as_str());

    // Live traffic from either node still arrives once.
    assert_eq!(nodes[0].publish(&order(4)).await.0, 200);
    let live = collect(&mut client, "order_update", 1).await;
    assert_eq!(live[0]["data"]["n"], 4);
    client.expect_silence(Duration::from_millis(500)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_retrying_through_any_node_with_one_idempotency_key_delivers_once() {
    let _serial = SERIAL.lock().await;
    const KEYS: usize = 12;
    let user = "CORP\\alice \"🦀\"";
    let cluster = RedisCluster::start(3, 1)
        .await
        .expect("Redis Cluster starts");
    let nodes = std::sync::Arc::new(start_nodes(&cluster, 3, &[]));
    // The user authenticates by first frame on node 2; publishes go to nodes 0 and 1.
    let mut client = nodes[2]
        .connect_url(&format!(
            "ws://{}/ws/notifications/?auth=message",
            nodes[2].addr
        ))
        .await;
    client
        .send_json(json!({"type": "auth", "token": herald_testkit::node::token(user)}))
        .await;
    assert_eq!(client.recv().await["type"], "auth_success");
    let order = |n: usize| {
        json!({"channel": "orders", "type": "order_update", "users": [user],
               "data": {"order": n}, "idempotency_key": format!("order-{n}-\"CORP\\\\x\"")})
    };
    // Every key is sent to two nodes at once, then retried on the third.
    let mut first_ids = Vec::new();
    for n in 0..KEYS {
        let body = order(n);
        let (a, b) = tokio::join!(nodes[0].publish(&body), nodes[1].publish(&body));
        assert_eq!((a.0, b.0), (200, 200), "{a:?} {b:?}");
        assert_eq!(a.1["id"], b.1["id"], "both answers name one message");
        let duplicates = [&a.1, &b.1]
            .iter()
            .filter(|r| r["duplicate"] == true)
            .count();
        assert_eq!(duplicates, 1, "exactly one of {a:?} {b:?} published");
        let (status, retry) = nodes[2].publish(&order(n)).await;
        assert_eq!((status, &retry["duplicate"]), (200, &json!(true)));
        assert_eq!(retry["id"], a.1["id"]);
        first_ids.push(a.1["id"].clone());
    }
    let got = collect(&mut client, "order_update", KEYS).await;
    let ids: Vec<Value> = got.iter().map(|m| m["id"].clone()).collect();
    assert_eq!(ids, first_ids, "each key delivered once, in order");
    client.expect_silence(Duration::from_millis(500)).await;
    // The same key with another body is refused on every node.
    let mut changed = order(0);
    changed["data"] = json!({"order": "changed"});
    for node in nodes.iter() {
        let (status, body) = node.publish(&changed).await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(body["error"]["code"], "idempotency_key_reused");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filtered_dashboards_on_every_node_get_only_their_types_and_resume_through_the_filter() {
    let _serial = SERIAL.lock().await;
    let cluster = RedisCluster::start(3, 1)
        .await
        .expect("Redis Cluster starts");
    let file = channel_file(
        "filters",
        json!([{"name": "stocks", "access": "authenticated", "history": true, "capacity": 500}]),
    );
    let path = file.path.to_str().unwrap();
    let nodes = start_nodes(&cluster, 3, &["--channels", path]);
    let kinds = ["price", "volume", "CORP\\\"news\" 🦀"];
    let subscribe = |filter: Value, since: Value| json!({"type": "subscribe", "channels": ["stocks"], "filter": filter, "since": since});
    // One dashboard per type on each node, and one unfiltered client.
    let mut dashboards = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        for kind in kinds {
            let mut client = node.connect(&format!("viewer-{i}-{kind}")).await;
            client
                .send_json(subscribe(json!({"types": [kind]}), Value::Null))
                .await;
            client.recv_type("subscription_success").await;
            dashboards.push((i, kind, client));
        }
    }
    let mut everything = nodes[0].connect("auditor").await;
    everything
        .send_json(subscribe(Value::Null, Value::Null))
        .await;
    everything.recv_type("subscription_success").await;
    // Publishers race through all three nodes.
    const ROUNDS: usize = 30;
    let nodes = std::sync::Arc::new(nodes);
    let mut tasks = Vec::new();
    for p in 0..3 {
        let nodes = nodes.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..ROUNDS {
                let kind = ["price", "volume", "CORP\\\"news\" 🦀"][(n + p) % 3];
                let (status, body) = nodes[p]
                    .publish(&json!({"channel": "stocks", "type": kind,
                                     "data": {"publisher": p, "n": n}}))
                    .await;
                assert_eq!(status, 200, "{body}");
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let total = 3 * ROUNDS;
    let mut unfiltered = 0;
    while unfiltered < total {
        let frame = everything
            .recv_within(Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("the unfiltered client got only {unfiltered} of {total}"));
        if frame["channel"] == "stocks" {
            unfiltered += 1;
        }
    }
    let mut seen_total = 0;
    let mut last_offsets = Vec::new();
    for (_, kind, client) in dashboards.iter_mut() {
        let got = collect_only(client, "stocks", kind, ROUNDS).await;
        client.expect_silence(Duration::from_millis(300)).await;
        seen_total += got.len();
        last_offsets.push(got[ROUNDS / 2]["offset"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        seen_total,
        3 * total,
        "each of 3 nodes saw every message once, by type"
    );
    // A dashboard reconnects to another node and resumes from the middle through its
    // filter: exactly the rest of its type, nothing of the others.
    let (i, kind, client) = dashboards.remove(0);
    drop(client);
    let mut resumed = nodes[(i + 1) % 3].connect("viewer-again").await;
    resumed
        .send_json(subscribe(
            json!({"types": [kind]}),
            json!({"stocks": last_offsets[0]}),
        ))
        .await;
    let reply = resumed.recv_type("subscription_success").await;
    assert_eq!(reply["recovered"]["stocks"], true);
    collect_only(&mut resumed, "stocks", kind, ROUNDS - ROUNDS / 2 - 1).await;
    resumed.expect_silence(Duration::from_millis(500)).await;
}

/// Every department's dashboard sees its own department's updates and nothing else,
/// whichever node it sits on and whichever node the backend publishes through, with
/// features together: auto-subscribe from the token's `dept` claim, acks with
/// offline delivery on another node, and a resume with `since` through a type filter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn departments_get_only_their_own_updates_from_any_node_and_catch_up_on_another() {
    use herald_testkit::node::{now, token_with};

    let _serial = SERIAL.lock().await;
    let cluster = RedisCluster::start(3, 1)
        .await
        .expect("Redis Cluster starts");
    let file = channel_file(
        "departments",
        json!([{"name": "dept:{dept}", "access": "authenticated", "auto_subscribe": true,
                "bind": {"dept": "dept"}, "history": true, "capacity": 1000,
                "ack_required": true}]),
    );
    let path = file.path.to_str().unwrap();
    let nodes = start_nodes(&cluster, 3, &["--channels", path]);
    let depts = ["5", "7", "sales-eu", "R.and.D@hq"];
    async fn connect(node: &TestNode, user: &str, dept: Value) -> Client {
        let token = token_with(json!({"user_id": user, "dept": dept, "exp": now() + 600}));
        node.connect_url(&node.ws_url(&token)).await
    }
    // One dashboard per department and node, users with hostile ids; plus a manager
    // of two departments. None of them sends `subscribe`.
    let mut dashboards = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        for dept in depts {
            let user = format!("CORP\\{dept}-\"{i}\" 🦀");
            dashboards.push((vec![dept], connect(node, &user, json!(dept)).await));
        }
    }
    let mut manager = connect(&nodes[1], "manager", json!(["5", 7])).await;
    // Sent before any subscribe frame could be: let the auto-joins settle.
    tokio::time::sleep(Duration::from_millis(300)).await;

    const ROUNDS: usize = 24;
    let nodes = std::sync::Arc::new(nodes);
    let mut tasks = Vec::new();
    for p in 0..3 {
        let nodes = nodes.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..ROUNDS {
                let dept = ["5", "7", "sales-eu", "R.and.D@hq"][(n + p) % 4];
                let kind = if n % 3 == 0 { "alert" } else { "stock" };
                let (status, body) = nodes[(n + p) % 3]
                    .publish(&json!({"channel": format!("dept:{dept}"), "type": kind,
                                     "data": {"dept": dept, "publisher": p, "n": n}}))
                    .await;
                assert_eq!(status, 200, "{body}");
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let sent_to = |dept: &str| {
        (0..3)
            .flat_map(|p| (0..ROUNDS).map(move |n| (p, n)))
            .filter(|(p, n)| ["5", "7", "sales-eu", "R.and.D@hq"][(n + p) % 4] == dept)
            .count()
    };
    // Reads `want` updates, checks each is for one of `mine` and in publish order per
    // publisher, and acks the last one per channel.
    async fn read(client: &mut Client, mine: &[&str], want: usize) -> Vec<Value> {
        let mut got: Vec<Value> = Vec::new();
        while got.len() < want {
            let frame = client
                .recv_within(Duration::from_secs(10))
                .await
                .unwrap_or_else(|| panic!("{mine:?}: only {} of {want}", got.len()));
            if frame["type"] == "alert" || frame["type"] == "stock" {
                let dept = frame["data"]["dept"].as_str().unwrap();
                assert!(mine.contains(&dept), "{mine:?} got {frame}");
                assert_eq!(frame["channel"], format!("dept:{dept}"), "{frame}");
                got.push(frame);
            }
        }
        // In publish order per channel and publisher.
        for dept in mine {
            for p in 0..3 {
                let ns: Vec<u64> = got
                    .iter()
                    .filter(|f| f["data"]["publisher"] == p && f["data"]["dept"] == *dept)
                    .map(|f| f["data"]["n"].as_u64().unwrap())
                    .collect();
                assert!(ns.windows(2).all(|w| w[0] < w[1]), "{dept}: {ns:?}");
            }
        }
        got
    }
    for (mine, client) in dashboards.iter_mut() {
        let want = mine.iter().map(|d| sent_to(d)).sum();
        read(client, mine, want).await;
        client.expect_silence(Duration::from_millis(200)).await;
    }
    let want = sent_to("5") + sent_to("7");
    let got = read(&mut manager, &["5", "7"], want).await;
    manager.expect_silence(Duration::from_millis(200)).await;

    // The manager acks dept:5 up to its middle message and nothing on dept:7, goes
    // offline, and comes back on another node: the rest of dept:5 and all of dept:7
    // again, plus what was published meanwhile.
    let five: Vec<&Value> = got.iter().filter(|f| f["channel"] == "dept:5").collect();
    let middle = five[five.len() / 2];
    manager
        .send_json(json!({"type": "ack", "channel": "dept:5", "offset": middle["offset"]}))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(manager);
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (i, dept) in ["5", "7", "sales-eu"].iter().enumerate() {
        let (status, body) = nodes[i]
            .publish(&json!({"channel": format!("dept:{dept}"), "type": "stock",
                             "data": {"dept": dept, "publisher": 9, "n": 1000}}))
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let mut back = connect(&nodes[2], "manager", json!(["5", 7])).await;
    let again = read(
        &mut back,
        &["5", "7"],
        (five.len() - five.len() / 2 - 1) + sent_to("7") + 2,
    )
    .await;
    back.expect_silence(Duration::from_millis(300)).await;
    let offsets: BTreeSet<(&str, &str)> = again
        .iter()
        .map(|f| {
            (
                f["channel"].as_str().unwrap(),
                f["offset"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(offsets.len(), again.len(), "each offset once");
    assert!(!offsets.contains(&("dept:5", middle["offset"].as_str().unwrap())));

    // A stock-only dashboard for dept:7 reads and acks everything at connect on one
    // node, then resumes on another from the first dept:7 message through a type
    // filter: every later dept:7 stock, nothing else.
    let first_seven = got.iter().find(|f| f["channel"] == "dept:7").unwrap();
    let mut stocks = connect(&nodes[1], "stock-watch", json!(7)).await;
    let all_seven = read(&mut stocks, &["7"], sent_to("7") + 1).await;
    stocks
        .send_json(json!({"type": "ack", "channel": "dept:7",
                          "offset": all_seven.last().unwrap()["offset"]}))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(stocks);
    let mut stocks = connect(&nodes[0], "stock-watch", json!(7)).await;
    stocks.expect_silence(Duration::from_millis(300)).await;
    stocks
        .send_json(json!({"type": "subscribe", "channels": ["dept:7"],
                          "filter": {"types": ["stock"]},
                          "since": {"dept:7": first_seven["offset"]}}))
        .await;
    let reply = stocks.recv_type("subscription_success").await;
    assert_eq!(reply["recovered"]["dept:7"], true, "{reply}");
    let later_stocks = got
        .iter()
        .filter(|f| f["channel"] == "dept:7" && f["type"] == "stock")
        .filter(|f| f["offset"].as_str() > first_seven["offset"].as_str())
        .count()
        + 1;
    let resumed = read(&mut stocks, &["7"], later_stocks).await;
    assert!(resumed.iter().all(|f| f["type"] == "stock"), "{resumed:?}");
    // Another department's channel stays closed to it.
    stocks
        .send_json(json!({"type": "subscribe", "channels": ["dept:5"]}))
        .await;
    assert_eq!(stocks.recv_type("error").await["code"], "forbidden");
}

/// Backends publishing to one channel through every node at once: each node delivers
/// the channel's messages in offset order, its own publishes included, so a client
/// that resumes after the last offset it saw can never skip one that came late.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_delivers_a_channel_in_offset_order_under_publishers_on_all_nodes() {
    let _serial = SERIAL.lock().await;
    let cluster = RedisCluster::start(3, 1)
        .await
        .expect("Redis Cluster starts");
    let file = channel_file(
        "order",
        json!([{"name": "ticks", "access": "authenticated", "history": true,
                "capacity": 5000}]),
    );
    let nodes = start_nodes(&cluster, 3, &["--channels", file.path.to_str().unwrap()]);
    let mut clients = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let mut client = node.connect(&format!("CORP\\watcher-{i}")).await;
        client
            .send_json(json!({"type": "subscribe", "channels": ["ticks"]}))
            .await;
        client.recv_type("subscription_success").await;
        clients.push(client);
    }
    const EACH: usize = 150;
    let nodes = std::sync::Arc::new(nodes);
    let mut tasks = Vec::new();
    for p in 0..6 {
        let nodes = nodes.clone();
        tasks.push(tokio::spawn(async move {
            let mut local = 0;
            for n in 0..EACH {
                let (status, body) = nodes[p % 3]
                    .publish(&json!({"channel": "ticks", "type": "tick",
                                     "data": {"publisher": p, "n": n}}))
                    .await;
                assert_eq!(status, 200, "{body}");
                local += body["delivered_locally"].as_u64().unwrap();
            }
            local
        }));
    }
    let mut delivered_locally = 0;
    for task in tasks {
        delivered_locally += task.await.unwrap();
    }
    for (i, client) in clients.iter_mut().enumerate() {
        let got = collect(client, "tick", 6 * EACH).await;
        client.expect_silence(Duration::from_millis(200)).await;
        let offsets: Vec<&str> = got.iter().map(|m| m["offset"].as_str().unwrap()).collect();
        let parsed: Vec<(u64, u64)> = offsets
            .iter()
            .map(|o| {
                let (ms, seq) = o.split_once('-').unwrap();
                (ms.parse().unwrap(), seq.parse().unwrap())
            })
            .collect();
        assert!(
            parsed.windows(2).all(|w| w[0] < w[1]),
            "node {i} delivered out of offset order: {offsets:?}"
        );
    }
    // Each publish reached the one local watcher on its node, as the answers say.
    assert_eq!(delivered_locally, (6 * EACH) as u64);
}

/// Every `stocks` frame until `want` have arrived (a leak of any kind is kept, so the
/// caller sees it).
async fn collect_all(client: &mut Client, what: &str, want: usize) -> Vec<Value> {
    let mut got = Vec::new();
    while got.len() < want {
        let frame = client
            .recv_within(Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("{what}: only {} of {want} messages arrived", got.len()));
        if frame["channel"] == "stocks" {
            got.push(frame);
        }
    }
    got
}

/// A coalesced stock channel for the coalescing stories.
fn coalesced_stock(story: &str, window_ms: u64) -> ChannelFile {
    channel_file(
        story,
        json!([{"name": "stock", "access": "authenticated", "history": true, "capacity": 2000,
                "coalesce": {"window_ms": window_ms, "key": "type", "edge": "trailing"}}]),
    )
}

async fn watch_stock(node: &TestNode, user: &str) -> Client {
    let mut client = node.connect(user).await;
    client
        .send_json(json!({"type": "subscribe", "channels": ["stock"]}))
        .await;
    client.recv_type("subscription_success").await;
    client
}

fn stock_update(n: u64) -> Value {
    json!({"channel": "stock", "type": "stock_update", "data": {"sku": "A-1", "n": n}})
}

/// `n` of every stock update until `quiet` passes without one.
async fn stock_frames(client: &mut Client, quiet: Duration) -> Vec<u64> {
    let mut got = Vec::new();
    while let Some(frame) = client.recv_within(quiet).await {
        if frame["type"] == "stock_update" {
            got.push(frame["data"]["n"].as_u64().unwrap());
        }
    }
    got
}

#[tokio::test]
async fn tag_filtered_dashboards_on_every_node_get_only_their_tags_and_resume_through_the_filter() {
    let _serial = SERIAL.lock().await;
    let cluster = RedisCluster::start(3, 1)
        .await
        .expect("Redis Cluster starts");
    let file = channel_file(
        "tag-filters",
        json!([{"name": "stocks", "access": "authenticated", "history": true, "capacity": 500}]),
    );
    let path = file.path.to_str().unwrap();
    let nodes = start_nodes(&cluster, 3, &["--channels", path]);
    const REGIONS: [&str; 3] = ["eu", "us", "CORP\\apac \"🦀\""];
    const SKUS: [&str; 2] = ["A-1", "B-2"];
    const ROUNDS: usize = 30;
    // What publisher `p` sends as its `n`th message: every fifth is untagged.
    let tags_of = |p: usize, n: usize| {
        (n % 5 != 4).then(|| json!({"region": REGIONS[(n + p) % 3], "sku": SKUS[n % 2]}))
    };
    let kind_of = |n: usize| if n % 3 == 0 { "volume" } else { "price" };
    let subscribe = |filter: Value, since: Value| json!({"type": "subscribe", "channels": ["stocks"], "filter": filter, "since": since});
    // Who wants what: one dashboard per region on each node, and one on each node
    // that wants prices of sku B-2 in two regions.
    let region_filter = |region: &str| json!({"tags": {"region": {"eq": region}}});
    let b2_filter = json!({"types": ["price"], "tags": {"sku": {"eq": "B-2"}, "region": {"in": [REGIONS[0], REGIONS[2]]}}});
    let admits = |filter: &Value, kind: &str, tags: &Option<Value>| {
        let Some(tags) = tags else { return false };
        let types_ok = filter
            .get("types")
            .is_none_or(|t| t.as_array().unwrap().iter().any(|t| t == kind));
        types_ok
            && filter["tags"]
                .as_object()
                .unwrap()
                .iter()
                .all(|(key, cond)| {
                    let value = &tags[key];
                    cond.get("eq") == Some(value)
                        || cond
                            .get("in")
                            .is_some_and(|vs| vs.as_array().unwrap().contains(value))
                })
    };
    let mut dashboards = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let filters = REGIONS
            .iter()
            .map(|r| region_filter(r))
            .chain([b2_filter.clone()]);
        for (d, filter) in filters.enumerate() {
            let mut client = node.connect(&format!("viewer-{i}-{d}")).await;
            client
                .send_json(subscribe(filter.clone(), Value::Null))
                .await;
            client.recv_type("subscription_success").await;
            dashboards.push((i, filter, client));
        }
    }
    // Publishers race through all three nodes.
    let nodes = std::sync::Arc::new(nodes);
    let mut tasks = Vec::new();
    for p in 0..3 {
        let nodes = nodes.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..ROUNDS {
                let mut body = json!({"channel": "stocks", "type": kind_of(n),
                                      "data": {"publisher": p, "n": n}});
                if let Some(tags) = tags_of(p, n) {
                    body["tags"] = tags;
                }
                let (status, answer) = nodes[p].publish(&body).await;
                assert_eq!(status, 200, "{answer}");
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let key = |frame: &Value| {
        (
            frame["data"]["publisher"].as_u64().unwrap() as usize,
            frame["data"]["n"].as_u64().unwrap() as usize,
        )
    };
    let mut resume_from = None;
    for (i, filter, client) in dashboards.iter_mut() {
        let mut wanted: Vec<(usize, usize)> = (0..3)
            .flat_map(|p| (0..ROUNDS).map(move |n| (p, n)))
            .filter(|&(p, n)| admits(filter, kind_of(n), &tags_of(p, n)))
            .collect();
        assert!(!wanted.is_empty());
        let got = collect_all(client, &filter.to_string(), wanted.len()).await;
        client.expect_silence(Duration::from_millis(300)).await;
        for frame in &got {
            let (p, n) = key(frame);
            assert_eq!(
                frame["tags"],
                tags_of(p, n).unwrap(),
                "{filter} on node {i}"
            );
        }
        let mut seen: Vec<(usize, usize)> = got.iter().map(key).collect();
        seen.sort_unstable();
        wanted.sort_unstable();
        assert_eq!(seen, wanted, "{filter} on node {i}: exactly what it admits");
        if *i == 0 && filter == &region_filter(REGIONS[2]) {
            // In history order, which replay follows.
            let offset = |frame: &Value| {
                let text = frame["offset"].as_str().unwrap();
                let (ms, seq) = text.split_once('-').unwrap();
                (ms.parse::<u64>().unwrap(), seq.parse::<u64>().unwrap())
            };
            let mut ordered: Vec<&Value> = got.iter().collect();
            ordered.sort_by_key(|frame| offset(frame));
            let middle = ordered.len() / 2;
            let rest: Vec<(usize, usize)> = ordered[middle + 1..].iter().map(|f| key(f)).collect();
            resume_from = Some((ordered[middle]["offset"].as_str().unwrap().to_owned(), rest));
        }
    }
    // The hostile-region dashboard of node 0 reconnects to node 2 and resumes from the
    // middle through its filter: exactly the rest of its region, in order.
    let (offset, rest) = resume_from.expect("the hostile-region dashboard ran");
    let mut resumed = nodes[2].connect("viewer-again").await;
    resumed
        .send_json(subscribe(
            region_filter(REGIONS[2]),
            json!({"stocks": offset}),
        ))
        .await;
    let reply = resumed.recv_type("subscription_success").await;
    assert_eq!(reply["recovered"]["stocks"], true);
    let replayed = collect_all(&mut resumed, "resume", rest.len()).await;
    resumed.expect_silence(Duration::from_millis(500)).await;
    assert_eq!(replayed.iter().map(key).collect::<Vec<_>>(), rest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_published_through_every_node_reaches_a_dashboard_as_one_frame_per_window() {
    let _serial = SERIAL.lock().await;
    const WINDOW_MS: u64 = 100;
    let cluster = RedisCluster::start(3, 1)
        .await
        .expect("Redis Cluster starts");
    let file = coalesced_stock("coalesce-burst", WINDOW_MS);
    let nodes = start_nodes(&cluster, 3, &["--channels", file.path.to_str().unwrap()]);
    let mut dashboard = watch_stock(&nodes[2], "CORP\\dashboard \"🦀\"").await;
    // 1,000 updates in one second, round-robin across the nodes: one publisher per
    // node sends every third update on schedule; the last one goes out after all
    // others were answered, so it is the last update.
    let nodes = std::sync::Arc::new(nodes);
    let start = tokio::time::Instant::now();
    let publishers: Vec<_> = (0..3)
        .map(|p| {
            let nodes = nodes.clone();
            tokio::spawn(async move {
                for n in (p..999u64).step_by(3) {
                    tokio::time::sleep_until(start + Duration::from_millis(n)).await;
                    let (status, answer) = nodes[p as usize].publish(&stock_update(n)).await;
                    assert_eq!(
                        (status, &answer["coalesced"]),
                        (200, &json!("pending")),
                        "{answer}"
                    );
                }
            })
        })
        .collect();
    for publisher in publishers {
        publisher.await.unwrap();
    }
    let (status, last) = nodes[0].publish(&stock_update(999)).await;
    assert_eq!(
        (status, &last["coalesced"]),
        (200, &json!("pending")),
        "{last}"
    );
    let burst_ms = start.elapsed().as_millis() as u64;
    let frames = stock_frames(&mut dashboard, Duration::from_secs(2)).await;
    let bound = burst_ms / WINDOW_MS + 1;
    eprintln!(
        "{} frames for a {burst_ms} ms burst (bound {bound})",
        frames.len()
    );
    assert!(
        (burst_ms / (2 * WINDOW_MS)..=bound).contains(&(frames.len() as u64)),
        "{} frames for a {burst_ms} ms burst (bound {bound}): {frames:?}",
        frames.len()
    );
    assert_eq!(
        frames.last(),
        Some(&999),
        "the last frame carries the last update"
    );
    // Three publishers race, so a window's latest may be an update numbered below the
    // previous window's (accepted later): no order by number, but no repeat either.
    let distinct: BTreeSet<u64> = frames.iter().copied().collect();
    assert_eq!(distinct.len(), frames.len(), "{frames:?}");
    // Superseded updates are counted where they were published; all add up.
    let mut superseded = 0.0;
    for node in nodes.iter() {
        superseded += node
            .metric(r#"herald_coalesced_messages_total{channel="stock",edge="trailing"}"#)
            .await;
    }
    assert_eq!(superseded as usize, 1000 - frames.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_held_by_a_killed_node_is_delivered_by_another_within_the_documented_delay() {
    let _serial = SERIAL.lock().await;
    const WINDOW_MS: u64 = 1000;
    let cluster = RedisCluster::start(3, 1)
        .await
        .expect("Redis Cluster starts");
    let file = coalesced_stock("coalesce-kill", WINDOW_MS);
    let nodes = start_nodes(&cluster, 3, &["--channels", file.path.to_str().unwrap()]);
    let mut dashboard = watch_stock(&nodes[2], "dashboard").await;
    // Node 0 opens the window; node 1 holds the latest update in it.
    let opened = tokio::time::Instant::now();
    let (_, first) = nodes[0].publish(&stock_update(1)).await;
    let (_, latest) = nodes[1].publish(&stock_update(2)).await;
    assert_eq!(
        (&first["coalesced"], &latest["coalesced"]),
        (&json!("pending"), &json!("pending"))
    );
    herald_testkit::process::send_signal("KILL", &nodes[0].pid().to_string()).unwrap();
    let frame = dashboard.recv_type("stock_update").await;
    let delay = opened.elapsed();
    assert_eq!(frame["data"]["n"], 2, "{frame}");
    assert_eq!(frame["id"], latest["id"]);
    // Window end + grace (500 ms) + one recovery check (500 ms), plus slack for a
    // loaded machine.
    assert!(
        delay < Duration::from_millis(WINDOW_MS + 1000 + 1000),
        "delivered {delay:?} after the window opened"
    );
    eprintln!("delivered {delay:?} after a {WINDOW_MS} ms window opened by a killed node");
    assert_eq!(
        stock_frames(&mut dashboard, Duration::from_secs(2)).await,
        Vec::<u64>::new()
    );
}
