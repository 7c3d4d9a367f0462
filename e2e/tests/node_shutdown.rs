//! A node on real Redis stopping by SIGTERM: its background tasks (presence heartbeats,
//! broker loops) stop before it removes its presence records, so no heartbeat writes
//! them back and the cluster stops counting it at once, not a heartbeat TTL later.

use std::time::Duration;

use herald_testkit::node::TestNode;
use herald_testkit::redis::RedisServer;

/// Whether `key` exists.
async fn exists(redis: &RedisServer, key: &str) -> bool {
    let out = redis.cli(&["EXISTS", key]).await.expect("redis-cli EXISTS");
    out.trim() == "1"
}

#[tokio::test]
async fn a_stopped_node_leaves_no_presence_behind_and_nothing_writes_it_back() {
    let redis = RedisServer::start_standalone().await.expect("Redis starts");
    let url = redis.url();
    let id = "node-CORP.alice-🦀";
    let node_key = format!("herald:node:{id}");
    let sessions_key = format!("herald:{{node:{id}}}:sessions");
    let mut node = TestNode::start(&[
        "--redis-url",
        &url,
        "--node-id",
        id,
        // Heartbeats as often as they come, so one is likely in flight at shutdown.
        "--heartbeat-interval",
        "20ms",
        "--drain-window",
        "300ms",
    ]);
    let mut client = node.connect("CORP\\alice \"quoted\" 🦀").await;
    client.assert_alive().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !(exists(&redis, &node_key).await && exists(&redis, &sessions_key).await) {
        assert!(
            std::time::Instant::now() < deadline,
            "the node never heartbeat into Redis"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let members = redis
        .cli(&["ZRANGE", "herald:nodes", "0", "-1"])
        .await
        .unwrap();
    assert!(members.lines().any(|m| m == id), "{members:?}");

    node.terminate();
    let status = node
        .wait_exit(Duration::from_secs(10))
        .expect("the node exits after draining");
    assert!(status.success(), "{status:?}");
    drop(client);

    // Gone at once: a heartbeat landing after the removal would have written the
    // records back with a TTL of three intervals.
    assert!(!exists(&redis, &node_key).await, "{node_key} written back");
    assert!(!exists(&redis, &sessions_key).await, "{sessions_key} kept");
    let members = redis
        .cli(&["ZRANGE", "herald:nodes", "0", "-1"])
        .await
        .unwrap();
    assert!(!members.lines().any(|m| m == id), "{members:?}");
}
