//! Backends publish over HTTP; users receive exactly what is addressed to them.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use common::{TestNode, API_KEY};
use serde_json::{json, Value};

#[tokio::test]
async fn publish_errors_are_clear_json() {
    let node = TestNode::start(&["--max-publish-bytes", "2048"]);
    let cases: Vec<(Value, u16, &str)> = vec![
        (
            json!({"channel": "nope", "type": "x", "data": {}}),
            404,
            "unknown_channel",
        ),
        (
            json!({"channel": "alerts", "type": "order_update", "data": {}}),
            422,
            "type_not_allowed",
        ),
        (
            json!({"channel": "alerts", "type": "alert", "data": [1]}),
            422,
            "data_not_object",
        ),
        (
            json!({"channel": "alerts", "type": "alert", "data": "x"}),
            422,
            "data_not_object",
        ),
        (
            json!({"channel": "notifications", "type": "notification", "data": {}}),
            422,
            "users_required",
        ),
        (
            json!({"channel": "notifications", "type": "notification", "data": {}, "users": []}),
            422,
            "users_required",
        ),
        (
            json!({"channel": "notifications", "type": "notification", "data": {}, "users": [1.5]}),
            422,
            "invalid_user",
        ),
        (json!({"channel": "alerts", "data": {}}), 400, "bad_request"),
        (
            json!({"channel": "alerts", "type": "alert", "data": {}, "extra": 1}),
            400,
            "bad_request",
        ),
    ];
    for (body, status, code) in cases {
        let (got, reply) = node.publish(&body).await;
        assert_eq!(got, status, "{body} -> {reply}");
        assert_eq!(reply["error"]["code"], code, "{body} -> {reply}");
    }
    let (status, reply) = node
        .http("POST", "/api/v1/publish", Some(API_KEY), "{not json".into())
        .await;
    assert_eq!(
        (status, reply["error"]["code"].as_str()),
        (400, Some("bad_request"))
    );
    let big = json!({"channel": "alerts", "type": "alert", "data": {"pad": "x".repeat(4096)}});
    let (status, reply) = node.publish(&big).await;
    assert_eq!(
        (status, reply["error"]["code"].as_str()),
        (413, Some("payload_too_large"))
    );
    for key in [None, Some("wrong-key-wrong-key")] {
        let (status, reply) = node
            .http(
                "POST",
                "/api/v1/publish",
                key,
                json!({"channel": "alerts", "type": "alert", "data": {}}).to_string(),
            )
            .await;
        assert_eq!(
            (status, reply["error"]["code"].as_str()),
            (401, Some("unauthorized"))
        );
    }
    let (status, _) = node
        .http("GET", "/api/v1/publish", Some(API_KEY), String::new())
        .await;
    assert_eq!(status, 405);
}

#[tokio::test]
async fn a_batch_publishes_each_item_and_reports_each_result() {
    let node = TestNode::start(&[]);
    let mut alice = node.connect("alice").await;
    // Past her offline catch-up: a publish racing it would be replayed from history
    // ahead of earlier live messages on other channels.
    alice.assert_alive().await;
    let (status, reply) = node
        .publish(&json!([
            {"channel": "alerts", "type": "alert", "data": {"n": 1}},
            {"channel": "nope", "type": "alert", "data": {}},
            {"channel": "notifications", "type": "notification", "data": {"n": 2}, "users": ["alice", "bob"]},
        ]))
        .await;
    assert_eq!(status, 200, "{reply}");
    let results = reply["results"].as_array().unwrap();
    assert_eq!(results[0]["delivered_locally"], 1);
    assert_eq!(results[1]["error"]["code"], "unknown_channel");
    assert_eq!(results[1]["status"], 404);
    assert_eq!(results[2]["delivered_locally"], 1);
    assert_eq!(alice.recv().await["data"]["n"], 1);
    assert_eq!(alice.recv().await["data"]["n"], 2);
    alice.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn many_users_concurrent_personal_messages_zero_misdeliveries() {
    const USERS: usize = 40;
    const CONNECTIONS_PER_USER: usize = 2;
    const MESSAGES_PER_USER: usize = 25;
    let node = Arc::new(TestNode::start(&[]));
    let mut readers = Vec::new();
    for u in 0..USERS {
        for _ in 0..CONNECTIONS_PER_USER {
            let mut client = node.connect(&u.to_string()).await;
            readers.push(tokio::spawn(async move {
                let mut seen = Vec::new();
                while seen.len() < MESSAGES_PER_USER {
                    let Some(message) = client.recv_within(Duration::from_secs(10)).await else {
                        break;
                    };
                    assert_eq!(message["type"], "notification");
                    seen.push((
                        message["data"]["user"].as_str().unwrap().to_owned(),
                        message["data"]["seq"].as_u64().unwrap(),
                    ));
                }
                // Nothing else may arrive for this user.
                client.expect_silence(Duration::from_millis(300)).await;
                (u, seen)
            }));
        }
    }
    // Publishers race each other: one task per user, numeric and string ids mixed.
    let mut publishers = Vec::new();
    for u in 0..USERS {
        let node = node.clone();
        publishers.push(tokio::spawn(async move {
            for seq in 0..MESSAGES_PER_USER {
                let id = if seq % 2 == 0 {
                    json!(u)
                } else {
                    json!(u.to_string())
                };
                let (status, reply) = node
                    .publish(&json!({"channel": "notifications", "type": "notification",
                                     "users": [id], "data": {"user": u.to_string(), "seq": seq}}))
                    .await;
                assert_eq!(status, 200, "{reply}");
                assert_eq!(reply["delivered_locally"], CONNECTIONS_PER_USER);
            }
        }));
    }
    for publisher in publishers {
        publisher.await.unwrap();
    }
    let mut per_user: HashMap<usize, usize> = HashMap::new();
    for reader in readers {
        let (u, seen) = reader.await.unwrap();
        assert_eq!(seen.len(), MESSAGES_PER_USER, "user {u} missed messages");
        for (owner, _) in &seen {
            assert_eq!(
                owner,
                &u.to_string(),
                "user {u} received another user's message"
            );
        }
        let seqs: Vec<u64> = seen.iter().map(|(_, s)| *s).collect();
        let expected: Vec<u64> = (0..MESSAGES_PER_USER as u64).collect();
        assert_eq!(seqs, expected, "user {u}: exactly once, in order");
        *per_user.entry(u).or_default() += 1;
    }
    assert_eq!(per_user.len(), USERS);
}

#[tokio::test]
async fn role_channels_admit_only_matching_roles() {
    let dir = std::env::temp_dir().join(format!("herald-roles-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("channels.json");
    std::fs::write(
        &path,
        json!({"channels": [
            {"name": "ops", "access": "roles", "roles": ["ops"], "auto_subscribe": true},
            {"name": "news", "access": "public"}
        ]})
        .to_string(),
    )
    .unwrap();
    let node = TestNode::start(&["--channels", path.to_str().unwrap()]);
    let ops_token =
        common::token_with(json!({"user_id": 1, "roles": ["ops"], "exp": common::now() + 60}));
    let mut operator = node.connect_url(&node.ws_url(&ops_token)).await;
    let mut staff = node.connect("2").await;
    staff
        .send_json(json!({"type": "subscribe", "channels": ["ops", "news"]}))
        .await;
    assert_eq!(
        staff.recv().await,
        json!({"type": "subscription_success", "channels": ["news"]})
    );
    let refusal = staff.recv().await;
    assert_eq!(
        (refusal["code"].as_str(), refusal["channel"].as_str()),
        (Some("forbidden"), Some("ops"))
    );
    let (_, reply) = node
        .publish(&json!({"channel": "ops", "type": "incident", "data": {"sev": 1}}))
        .await;
    assert_eq!(reply["delivered_locally"], 1);
    assert_eq!(operator.recv().await["type"], "incident");
    staff.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn channel_changes_apply_to_a_running_node_without_restart() {
    let dir = std::env::temp_dir().join(format!("herald-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("channels.json");
    std::fs::write(
        &path,
        json!({"channels": [{"name": "alerts", "access": "authenticated"}]}).to_string(),
    )
    .unwrap();
    let node = TestNode::start(&[
        "--channels",
        path.to_str().unwrap(),
        "--channels-reload",
        "100ms",
    ]);
    let (status, _) = node
        .publish(&json!({"channel": "stock_levels", "type": "material_update", "data": {}}))
        .await;
    assert_eq!(status, 404);
    let pid_before = node.pid();
    std::fs::write(
        &path,
        json!({"channels": [
            {"name": "alerts", "access": "authenticated"},
            {"name": "stock_levels", "access": "authenticated", "allowed_types": ["material_update"]}
        ]})
        .to_string(),
    )
    .unwrap();
    let mut client = node.connect("3").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        client
            .send_json(json!({"type": "subscribe", "channels": ["stock_levels"]}))
            .await;
        let reply = client.recv().await;
        if reply["channels"] == json!(["stock_levels"]) {
            break;
        }
        // Not yet known: the refusal follows the (empty) success.
        let refusal = client.recv().await;
        assert_eq!(refusal["code"], "unknown_channel");
        assert!(
            tokio::time::Instant::now() < deadline,
            "reload not applied: {reply}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, reply) = node
        .publish(&json!({"channel": "stock_levels", "type": "material_update", "data": {"id": 1}}))
        .await;
    assert_eq!(
        (status, reply["delivered_locally"].as_u64()),
        (200, Some(1))
    );
    assert_eq!(client.recv().await["channel"], "stock_levels");
    assert_eq!(node.pid(), pid_before);
    let (_, listed) = node
        .http("GET", "/api/v1/channels", Some(API_KEY), String::new())
        .await;
    let names: HashSet<&str> = listed["channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, HashSet::from(["alerts", "stock_levels"]));
}

#[tokio::test]
async fn publish_rate_limits_per_channel() {
    let dir = std::env::temp_dir().join(format!("herald-pubrate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("channels.json");
    std::fs::write(
        &path,
        json!({"channels": [{"name": "ticks", "access": "authenticated", "publish_rate": {"per_second": 1.0, "burst": 3}}]})
            .to_string(),
    )
    .unwrap();
    let node = TestNode::start(&["--channels", path.to_str().unwrap()]);
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let (status, _) = node
            .publish(&json!({"channel": "ticks", "type": "tick", "data": {}}))
            .await;
        statuses.push(status);
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
}

#[tokio::test]
async fn oversized_batches_and_recipient_lists_are_refused_before_any_work() {
    let node = TestNode::start(&["--max-batch", "3", "--max-users-per-message", "2"]);
    let mut alice = node.connect("alice").await;
    alice.assert_alive().await;
    let item = json!({"channel": "alerts", "type": "alert", "data": {"n": 1}});
    let (status, reply) = node.publish(&json!([item, item, item])).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["results"].as_array().unwrap().len(), 3);
    for _ in 0..3 {
        assert_eq!(alice.recv().await["data"]["n"], 1);
    }
    // One item more: refused as a whole, nothing published.
    let (status, reply) = node.publish(&json!([item, item, item, item])).await;
    assert_eq!(status, 413, "{reply}");
    assert_eq!(reply["error"]["code"], "too_many_messages");
    assert!(reply["error"]["message"].as_str().unwrap().contains('3'));
    alice.expect_silence(Duration::from_millis(200)).await;

    let to = |users: Value| json!({"channel": "notifications", "type": "notification", "data": {}, "users": users});
    let (status, reply) = node.publish(&to(json!(["alice", 7]))).await;
    assert_eq!(status, 200, "{reply}");
    alice.recv().await;
    let (status, reply) = node.publish(&to(json!(["alice", 7, "x"]))).await;
    assert_eq!(status, 413, "{reply}");
    assert_eq!(reply["error"]["code"], "too_many_users");
    let (status, reply) = node.publish(&to(json!("alice"))).await;
    assert_eq!(
        (status, reply["error"]["code"].as_str()),
        (400, Some("bad_request"))
    );
    // Inside a batch the recipient limit is per item.
    let (status, reply) = node
        .publish(&json!([to(json!(["alice"])), to(json!([1, 2, 3]))]))
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["results"][0]["delivered_locally"], 1);
    assert_eq!(reply["results"][1]["status"], 413);
    assert_eq!(reply["results"][1]["error"]["code"], "too_many_users");
    alice.recv().await;
    alice.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn a_megabyte_of_tiny_batch_items_is_refused_at_once() {
    let node = TestNode::start(&[]);
    // 1 MiB of `{},`: about 350,000 items, refused at item 1,001.
    let mut body = String::from("[");
    while body.len() < 1024 * 1024 - 8 {
        body.push_str("{},");
    }
    body.push_str("{}]");
    let started = std::time::Instant::now();
    let (status, reply) = node
        .http("POST", "/api/v1/publish", Some(API_KEY), body)
        .await;
    assert_eq!(status, 413, "{reply}");
    assert_eq!(reply["error"]["code"], "too_many_messages");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn deeply_nested_data_is_refused_with_data_too_deep() {
    let node = TestNode::start(&["--max-data-depth", "4"]);
    let publish = |data: &str| format!(r#"{{"channel":"alerts","type":"alert","data":{data}}}"#);
    // Depth 4, brackets inside strings (with escaped quotes) do not count.
    let ok = r#"{"a":[{"b":["[[[{{{\"]]]"]}]}"#;
    let (status, reply) = node
        .http("POST", "/api/v1/publish", Some(API_KEY), publish(ok))
        .await;
    assert_eq!(status, 200, "{reply}");
    for deep in [
        r#"{"a":[{"b":[[]]}]}"#.to_owned(),
        format!("{}{}", "{\"a\":[".repeat(300), "]}".repeat(300)),
    ] {
        let (status, reply) = node
            .http("POST", "/api/v1/publish", Some(API_KEY), publish(&deep))
            .await;
        assert_eq!(
            (status, reply["error"]["code"].as_str()),
            (422, Some("data_too_deep")),
            "{reply}"
        );
    }
}

#[tokio::test]
async fn admin_page_parameters_that_are_not_positive_integers_mean_the_defaults() {
    let node = TestNode::start(&[]);
    let _a = node.connect("ann").await;
    let _b = node.connect("bob").await;
    let get = |query: &'static str| {
        let node = &node;
        async move {
            let path = format!("/api/developer/websocket-sessions/?{query}");
            let (status, page) = node.http("GET", &path, Some(API_KEY), String::new()).await;
            assert_eq!(status, 200, "{query}: {page}");
            (
                page["page"].as_u64().unwrap(),
                page["page_size"].as_u64().unwrap(),
                page["results"].as_array().unwrap().len(),
            )
        }
    };
    for query in [
        "page=abc", "page=0", "page=-3", "page=1.5", "page=", "page=%00",
    ] {
        assert_eq!(get(query).await, (1, 100, 2), "{query}");
    }
    for query in ["page_size=x", "page_size=-1", "page_size="] {
        assert_eq!(get(query).await, (1, 100, 2), "{query}");
    }
    assert_eq!(get("page_size=0").await, (1, 1, 1));
    assert_eq!(get("page_size=99999").await, (1, 1000, 2));
    assert_eq!(get("page=2&page_size=1").await, (2, 1, 1));
    assert_eq!(get("page=99999999999999999999").await, (1, 100, 2));
}
