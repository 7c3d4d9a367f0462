//! A Django backend moves to Herald by changing one setting.
//!
//! The legacy Django Channels application (`e2e/peers/legacy`), its views and the
//! `channel_layer.group_send` calls its signal handlers make all unchanged, runs with
//! `CHANNEL_LAYERS` switched to Herald's layer (`clients/python`). Browsers run the legacy
//! front-end code, unchanged, against two Herald nodes on a Redis Cluster behind a TLS
//! ingress. What the backend sends to a user's group, to `alerts` and to a department
//! group reaches exactly the browsers it reached before.

use std::time::Duration;

use anyhow::{ensure, Result};
use herald_bench::peers::legacy::{HeraldLayer, LegacyOptions, LegacyPeer};
use herald_testkit::browser::{Browser, Launch, Tab};
use herald_testkit::ingress::{Config, Ingress, Listen, Server};
use herald_testkit::legacy_page::{pushes, web_dir, PAGE_WAIT, PUSHES};
use herald_testkit::node::{now, token_with, try_http, TestNode, API_KEY};
use herald_testkit::redis::RedisCluster;
use herald_testkit::tls::TestCa;
use serde_json::{json, Value};

const HOST: &str = "herald.test";

/// Opens the legacy page for `user` with `roles` and waits for its subscription.
async fn open_legacy_page(browser: &Browser, url: &str, user: &str, roles: &[&str]) -> Result<Tab> {
    let tab = browser.new_tab().await?;
    let token = token_with(json!({"user_id": user, "roles": roles, "exp": now() + 3600}));
    tab.navigate(&format!("{url}?token={token}&order=42"))
        .await?;
    tab.wait_for(
        &format!("{user}'s page to subscribe"),
        "window.heraldReceived.some(m => m.type === 'subscription_success')",
        PAGE_WAIT,
    )
    .await?;
    Ok(tab)
}

/// One push through the legacy backend's own endpoint, as its signal handlers do:
/// the status and body it answered.
async fn legacy_post(peer: &LegacyPeer, key: &str, body: &Value) -> Result<(u16, String)> {
    let (status, answer) = try_http(
        peer.addr(),
        "POST",
        "/api/push/",
        None,
        &[("X-Api-Key", key)],
        body.to_string(),
    )
    .await?;
    Ok((status, String::from_utf8_lossy(&answer).into_owned()))
}

/// One push that must be accepted.
async fn legacy_push(peer: &LegacyPeer, key: &str, body: Value) -> Result<()> {
    let (status, answer) = legacy_post(peer, key, &body).await?;
    ensure!(
        status == 200,
        "legacy push {body} answered {status}: {answer}\n{}",
        peer.log()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unchanged_legacy_backend_pushes_to_browsers_on_herald_after_one_settings_change(
) -> Result<()> {
    let cluster = RedisCluster::start(3, 1).await?;
    let dir = tempfile::tempdir()?;
    // The legacy per-department group `group_7` becomes a channel of its members (by role).
    let channels = dir.path().join("channels.json");
    let user = |name: &str, kind: &str| {
        json!({"name": name, "access": "user", "auto_subscribe": true,
               "allowed_types": [kind], "history": true})
    };
    std::fs::write(
        &channels,
        json!({"channels": [
            user("notifications", "notification"),
            user("orders", "order_update"),
            {"name": "alerts", "access": "authenticated", "auto_subscribe": true,
             "allowed_types": ["alert"], "history": true},
            {"name": "group_7", "access": "roles", "roles": ["group_7"], "auto_subscribe": true},
        ]})
        .to_string(),
    )?;
    let url = cluster.url();
    let start = |i: usize| {
        let id = format!("legacy-switch-{i}");
        TestNode::start(&[
            "--redis-url",
            &url,
            "--node-id",
            &id,
            "--channels",
            channels.to_str().unwrap(),
        ])
    };
    let nodes = [start(0), start(1)];
    let options = LegacyOptions {
        herald: Some(HeraldLayer {
            url: format!("http://{}", nodes[0].addr),
            api_key: API_KEY.into(),
        }),
        ..LegacyOptions::default()
    };
    let legacy_key = options.api_key.clone();
    let backend = LegacyPeer::start(options).await?;

    let ca = TestCa::generate("herald-e2e-legacy-switch-ca").await?;
    let cert = ca.issue(&[HOST]).await?;
    let ingress = Ingress::start(
        Config {
            servers: vec![Server::new(HOST, Some(cert))
                .proxy("/", [nodes[0].addr, nodes[1].addr])
                .files("/app/", web_dir())],
        },
        Listen::Https,
    )
    .await?;
    let browser = Browser::launch(&Launch::ingress(HOST, ca.cert_pem())).await?;
    let page = ingress.https_url(HOST, "/app/index.html");
    let alice = open_legacy_page(&browser, &page, "alice", &["group_7"]).await?;
    let bob = open_legacy_page(&browser, &page, "bob", &[]).await?;

    let notification = json!({"id": 7, "title": "新订单", "content": "PO20231201001 已创建",
                              "type": "order", "is_read": false});
    let order = json!({"id": 42, "order_no": "PO20231201001", "status": "shipped"});
    let alert =
        json!({"id": 3, "title": "磁盘告警", "content": "磁盘使用率 95%", "severity": "critical"});
    let department = json!({"id": 43, "order_no": "PO20231201002", "status": "approved"});
    legacy_push(
        &backend,
        &legacy_key,
        json!({"user": "alice", "type": "notification", "data": notification}),
    )
    .await?;
    legacy_push(
        &backend,
        &legacy_key,
        json!({"user": "alice", "type": "order_update", "data": order}),
    )
    .await?;
    legacy_push(
        &backend,
        &legacy_key,
        json!({"group": "alerts", "type": "alert", "data": alert}),
    )
    .await?;
    legacy_push(
        &backend,
        &legacy_key,
        json!({"group": "group_7", "type": "order_update", "data": department}),
    )
    .await?;

    alice
        .wait_for(
            "Alice's four pushes",
            &format!("{PUSHES}.length >= 4"),
            PAGE_WAIT,
        )
        .await?;
    bob.wait_for("Bob's alert", &format!("{PUSHES}.length >= 1"), PAGE_WAIT)
        .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        pushes(&alice).await?,
        json!([
            ["notification", notification],
            ["order_update", order],
            ["alert", alert],
            ["order_update", department]
        ])
    );
    assert_eq!(pushes(&bob).await?, json!([["alert", alert]]));
    // The page rendered them as it did on the legacy stack.
    assert_eq!(
        alice
            .evaluate("document.getElementById('notification-count').textContent")
            .await?,
        "1"
    );

    // A group the mapping does not know is refused with the group's name, not dropped.
    let unmapped = json!({"group": "group_8", "type": "alert", "data": {}});
    let (status, answer) = legacy_post(&backend, &legacy_key, &unmapped).await?;
    ensure!(
        status >= 500,
        "an unknown Herald channel must fail loudly: {status} {answer}"
    );
    ensure!(
        backend.log().contains("group_8"),
        "the failure names the group:\n{}",
        backend.log()
    );
    Ok(())
}
