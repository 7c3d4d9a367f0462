//! Herald as its four kinds of users run it, all at once, on real components: a platform
//! team installing with Helm and `kubectl`, browsers connecting over `wss://` through a TLS
//! ingress, backends publishing, and SREs reading traces.
//!
//! Every story starts the whole stack ([`Stack`]): kube-apiserver + etcd +
//! kube-controller-manager, a Redis Cluster of 3 masters and 3 replicas, `helm install` of
//! `charts/herald` (the operator's pods run as real processes through the kubelet stand-in),
//! a `PushCluster` and its `Channel`s applied with `kubectl` (its node pods run as real
//! `herald-node` processes, as many as the Deployment asks for), nginx terminating TLS from
//! the operator's Ingress, and, for the tracing story, Jaeger. Stories run one at a time (two
//! cores) and each prints a one-line summary (collected by `e2e/run-tests.sh`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use herald_testkit::browser::{Browser, Launch};
use herald_testkit::follower::Follower;
use herald_testkit::helm;
use herald_testkit::jaeger::TraceQuery;
use herald_testkit::kube::get_json;
use herald_testkit::legacy_page::{open_page, pushes, PAGE_WAIT, PUSHES};
use herald_testkit::node::{token, token_with};
use herald_testkit::stack::{
    channel_object, channel_on, summary, Stack, StackOptions, HOST, NODE_PODS, OPERATOR_PODS,
    SETTLE, SYSTEM_NAMESPACE,
};
use herald_testkit::{eventually, kube::apply};
use serde_json::{json, Value};

/// Whole stacks are heavy on two cores: one story at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A history channel the resilience stories publish a numbered sequence on.
fn ticker(extra: Value) -> Value {
    let mut spec = json!({"name": "ticker", "access": "authenticated", "history": true,
                          "allowedTypes": ["tick"], "capacity": 10000, "expirySeconds": 600});
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    spec
}

/// Publishes `tick` messages numbered 1, 2, … on `ticker` every `every` until `stop`, each
/// to a ready node (round robin); returns the numbers the cluster accepted (answered 200).
async fn publish_ticks(stack: &Stack, every: Duration, stop: &AtomicBool) -> Vec<u64> {
    let mut accepted = Vec::new();
    let mut seq = 0;
    while !stop.load(Ordering::Relaxed) {
        seq += 1;
        let body = json!({"channel": "ticker", "type": "tick", "data": {"seq": seq}});
        if stack.publish(&body).await.is_ok() {
            accepted.push(seq);
        }
        tokio::time::sleep(every).await;
    }
    accepted
}

/// Waits until every follower has seen every accepted tick; returns how many followers were
/// closed by a draining node (1012) along the way.
async fn assert_no_tick_lost(followers: &[Follower], accepted: &[u64]) -> Result<usize> {
    let deadline = Instant::now() + Duration::from_secs(60);
    for (i, follower) in followers.iter().enumerate() {
        loop {
            let seen: Vec<u64> = follower
                .messages("ticker")
                .iter()
                .filter_map(|d| d["seq"].as_u64())
                .collect();
            let missing: Vec<u64> = accepted
                .iter()
                .copied()
                .filter(|seq| !seen.contains(seq))
                .collect();
            if missing.is_empty() {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "follower {i} lost {} accepted ticks ({:?}…); it saw {:?}",
                missing.len(),
                &missing[..missing.len().min(10)],
                follower.seen()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    Ok(followers
        .iter()
        .filter(|f| f.seen().closes.contains(&Some(1012)))
        .count())
}

/// The rows of a `kubectl get` table, split on whitespace, header first.
fn table(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .map(|line| line.split_whitespace().map(str::to_owned).collect())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s1_a_platform_team_installs_with_helm_and_sees_its_push_cluster_ready() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let stack = Stack::start(StackOptions::default()).await?;
    let ready_after = started.elapsed();

    // `helm status` says the release is deployed, and one operator pod holds the Lease.
    let status = helm::helm(&stack.plane, &["status", "herald", "-n", SYSTEM_NAMESPACE]).await?;
    assert!(status.contains("STATUS: deployed"), "{status}");
    let operators: Vec<String> = stack
        .kubelet
        .running(OPERATOR_PODS)
        .into_iter()
        .map(|p| p.name)
        .collect();
    let leases = get_json(&stack.plane, &["leases", "-n", SYSTEM_NAMESPACE])
        .await
        .context("leases")?;
    let holder = leases["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|l| l["spec"]["holderIdentity"].as_str())
        .context("a held Lease")?
        .to_owned();
    assert!(operators.contains(&holder), "{holder} not in {operators:?}");

    // `kubectl get pushclusters` shows what a platform team looks for at a glance.
    let clusters = table(&stack.kubectl(&["get", "pushclusters"]).await?);
    assert_eq!(
        clusters[0],
        [
            "NAME",
            "READY",
            "REPLICAS",
            "DESIRED",
            "CONNECTIONS",
            "BROKER",
            "AGE"
        ]
    );
    assert_eq!(clusters[1][..6], ["push", "True", "2", "2", "0", "True"]);
    let short = stack.kubectl(&["get", "hpc"]).await?;
    assert!(short.contains("push"), "{short}");

    // And the channels, each Ready, with their access and history.
    let channels = table(&stack.kubectl(&["get", "channels"]).await?);
    assert_eq!(
        channels[0],
        ["NAME", "CLUSTER", "CHANNEL", "ACCESS", "HISTORY", "READY", "AGE"]
    );
    let rows: BTreeMap<&str, &[String]> = channels[1..]
        .iter()
        .map(|row| (row[0].as_str(), &row[1..6]))
        .collect();
    assert_eq!(
        rows["notifications"],
        ["push", "notifications", "user", "true", "True"]
    );
    assert_eq!(
        rows["alerts"],
        ["push", "alerts", "authenticated", "true", "True"]
    );
    assert_eq!(rows["orders"], ["push", "orders", "user", "true", "True"]);
    summary(
        "1 helm install",
        &format!(
            "PushCluster Ready {:.0?} after install (2 operator pods, leader {holder}; 2 nodes; 3 channels Ready)",
            ready_after
        ),
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_browsers_over_wss_see_exactly_their_own_pushes() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let stack = Stack::start(StackOptions::default()).await?;
    let browser = Browser::launch(&Launch::ingress(HOST, stack.ca.cert_pem())).await?;
    let page = stack.ingress.https_url(HOST, "/app/index.html");
    let alice = open_page(&browser, page.clone(), "alice").await?;
    let bob = open_page(&browser, page, "bob").await?;

    // The backend publishes through a node Alice is not connected to when there is one, so
    // her pushes cross the Redis Cluster.
    let alice_on = stack.nodes_of("alice").await?;
    let other = stack
        .ready_nodes()
        .into_iter()
        .map(|p| p.name)
        .find(|name| !alice_on.contains(name));
    let notification = json!({"id": 9001, "title": "新订单", "content": "PO20231201001 已创建",
                              "notification_type": "order", "created_at": "2026-11-23T10:00:00Z"});
    // The legacy order_update fields; the page shows order 42 in detail.
    let order = json!({"id": 42, "order_no": "PO20231201001", "status": "shipped",
                       "updated_at": "2026-11-23T10:00:01Z"});
    let alert = json!({"id": 77, "title": "磁盘告警", "content": "磁盘使用率 95%",
                       "severity": "critical", "status": "active",
                       "created_at": "2026-11-23T10:00:02Z"});
    for body in [
        json!({"channel": "notifications", "type": "notification", "users": ["alice"],
               "data": notification}),
        json!({"channel": "orders", "type": "order_update", "users": ["alice"], "data": order}),
        json!({"channel": "alerts", "type": "alert", "data": alert}),
    ] {
        stack.publish_via(other.as_deref(), &body).await?;
    }

    alice
        .wait_for(
            "Alice's three pushes",
            &format!("{PUSHES}.length >= 3"),
            PAGE_WAIT,
        )
        .await?;
    assert_eq!(
        pushes(&alice).await?,
        json!([
            ["notification", notification],
            ["order_update", order],
            ["alert", alert]
        ])
    );
    let rendered = alice
        .evaluate(
            "[document.getElementById('notification-count').textContent, \
              document.getElementById('order-status').textContent]",
        )
        .await?;
    assert_eq!(rendered, json!(["1", "shipped"]));
    bob.wait_for("Bob's alert", &format!("{PUSHES}.length >= 1"), PAGE_WAIT)
        .await?;
    // Give a misrouted notification time to show up before concluding Bob never got one.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(pushes(&bob).await?, json!([["alert", alert]]));
    summary(
        "2 browsers over wss",
        &format!(
            "Alice got notification + order update + alert (published via {}), Bob only the alert",
            other.as_deref().unwrap_or("her own node")
        ),
    );
    alice.close().await?;
    bob.close().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_kubectl_apply_changes_a_channel_on_running_nodes_without_restarts() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let stack = Stack::start(StackOptions {
        channels: vec![ticker(json!({}))],
        ..StackOptions::default()
    })
    .await?;
    let before: Vec<(String, u32)> = stack
        .ready_nodes()
        .into_iter()
        .map(|p| (p.name, p.pid))
        .collect();
    let mut client = stack.endpoint.connect(&token("carol")).await?;
    client
        .send_json(json!({"type": "subscribe", "channels": ["ticker"]}))
        .await;
    assert_eq!(
        client.recv_type("subscription_success").await["type"],
        "subscription_success"
    );

    // The platform team restricts the channel to the ops role and shortens its history.
    let changed = Instant::now();
    apply(
        &stack.plane,
        &channel_object(&ticker(json!({"access": "roles", "roles": ["ops"],
                                       "capacity": 3, "expirySeconds": 60}))),
    )
    .await?;
    for pod in stack.ready_nodes() {
        eventually(
            &format!("{} serving the new ticker settings", pod.name),
            SETTLE,
            || async {
                let channel = channel_on(pod.ip, "ticker").await?;
                (channel["access"] == "roles"
                    && channel["roles"] == json!(["ops"])
                    && channel["capacity"] == 3
                    && channel["expiry_secs"] == 60)
                    .then_some(())
            },
        )
        .await;
    }
    let took = changed.elapsed();

    // Through the ingress (any node): carol is refused now, an ops user is admitted.
    let mut carol = stack.endpoint.connect(&token("carol")).await?;
    carol
        .send_json(json!({"type": "subscribe", "channels": ["ticker"]}))
        .await;
    let refusal = carol.recv_type("error").await;
    assert_eq!(refusal["code"], "forbidden", "{refusal}");
    let ops = token_with(json!({"user_id": "olga", "roles": ["ops"],
                                "exp": herald_testkit::node::now() + 3600}));
    let mut olga = stack.endpoint.connect(&ops).await?;
    olga.send_json(json!({"type": "subscribe", "channels": ["ticker"]}))
        .await;
    olga.recv_type("subscription_success").await;

    // Capacity 3: of five ticks, history keeps the last three.
    let mut offsets = Vec::new();
    for seq in 1..=5 {
        let answer = stack
            .publish(&json!({"channel": "ticker", "type": "tick", "data": {"seq": seq}}))
            .await?;
        offsets.push(answer["offsets"][0].as_str().unwrap_or_default().to_owned());
    }
    let mut late = stack.endpoint.connect(&ops).await?;
    late.send_json(json!({"type": "subscribe", "channels": ["ticker"],
                          "since": {"ticker": offsets[0]}}))
        .await;
    let reply = late.recv_type("subscription_success").await;
    assert_eq!(reply["recovered"]["ticker"], false, "{reply}");
    let mut replayed = Vec::new();
    while let Some(message) = late.recv_within(Duration::from_secs(2)).await {
        if message["type"] == "tick" {
            replayed.push(message["data"]["seq"].as_u64().unwrap_or(0));
        }
    }
    assert_eq!(replayed, [3, 4, 5], "only the last three are kept");

    // Nobody restarted.
    let after: Vec<(String, u32)> = stack
        .ready_nodes()
        .into_iter()
        .map(|p| (p.name, p.pid))
        .collect();
    assert_eq!(after, before, "same pods, same processes");
    assert!(stack.ready_nodes().iter().all(|p| p.restarts == 0));
    summary(
        "3 live channel change",
        &format!(
            "access/capacity/expiry reached both running nodes {took:.1?} after kubectl apply; 0 restarts"
        ),
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s4_connections_scale_nodes_up_and_down_least_loaded_first_losing_nothing() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let stack = Stack::start(StackOptions {
        replicas: (1, 3),
        scaling: Some(json!({"targetConnectionsPerNode": 10,
                             "scaleDownStabilizationSeconds": 10})),
        channels: vec![ticker(json!({}))],
        ..StackOptions::default()
    })
    .await?;
    let t0 = Instant::now();
    let first = stack.ready_nodes().remove(0).name;

    // 30 browsers arrive at the one node: 30 connections at 10 per node asks for 3 nodes.
    let mut crowd = Vec::new();
    for i in 0..30 {
        crowd.push(
            stack
                .endpoint
                .connect(&token(&format!("crowd-{i}")))
                .await?,
        );
    }
    let three = stack.wait_nodes(3, SETTLE).await;
    let up_after = t0.elapsed();
    stack.wait_routed(&three).await?;

    // Followers arrive once three nodes serve, so the ingress spreads them over all three;
    // a backend publishes numbered ticks the whole time.
    let mut followers = Vec::new();
    for i in 0..6 {
        followers
            .push(Follower::start(&stack.endpoint, &format!("follower-{i}"), &["ticker"]).await?);
    }
    let stop = AtomicBool::new(false);
    let mut costs: BTreeMap<String, i64> = BTreeMap::new();
    let scale_down = async {
        // Most of the crowd leaves; three stay, on the first node. 9 connections need one
        // node; after the stabilization window the operator scales down, and the ReplicaSet
        // removes the pods with the lowest pod-deletion-cost (fewest connections) first: the
        // first node (3 + its followers) stays.
        tokio::time::sleep(Duration::from_secs(2)).await;
        crowd.truncate(3);
        let left = Instant::now();
        let deadline = Instant::now() + SETTLE * 2;
        loop {
            if let Some(pods) = get_json(&stack.plane, &["pods", "-l", NODE_PODS]).await {
                for pod in pods["items"].as_array().into_iter().flatten() {
                    let name = pod["metadata"]["name"].as_str().unwrap_or_default();
                    let cost = pod["metadata"]["annotations"]
                        ["controller.kubernetes.io/pod-deletion-cost"]
                        .as_str()
                        .and_then(|c| c.parse().ok());
                    if let (Some(cost), None) =
                        (cost, pod["metadata"]["deletionTimestamp"].as_str())
                    {
                        costs.insert(name.to_owned(), cost);
                    }
                }
            }
            let ready = stack.ready_nodes();
            // Done once the removed pods' processes are gone: they drained their clients.
            if stack.deployment_replicas().await == Some(1)
                && ready.len() == 1
                && stack.kubelet.processes(NODE_PODS).len() == 1
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no scale-down to one node: {:?}",
                stack.kubelet
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let down_after = left.elapsed();
        // Let the drained followers come back and catch up before publishing stops.
        tokio::time::sleep(Duration::from_secs(3)).await;
        stop.store(true, Ordering::Relaxed);
        down_after
    };
    let (accepted, down_after) = tokio::join!(
        publish_ticks(&stack, Duration::from_millis(50), &stop),
        scale_down
    );
    let survivor = stack.ready_nodes().remove(0).name;
    let removed: Vec<&String> = three
        .iter()
        .map(|p| &p.name)
        .filter(|name| **name != survivor)
        .collect();
    let survivor_cost = costs.get(&survivor).copied().unwrap_or_default();
    for name in &removed {
        let cost = costs.get(*name).copied().unwrap_or_default();
        assert!(
            cost < survivor_cost,
            "{name} (cost {cost}) was removed before {survivor} (cost {survivor_cost}): {costs:?}"
        );
    }
    assert_eq!(
        survivor, first,
        "the node the rest of the crowd is on stays: {costs:?}"
    );
    drop(crowd);
    let drained = assert_no_tick_lost(&followers, &accepted).await?;
    assert!(
        drained > 0,
        "some followers were on the removed nodes; closes seen: {:?}",
        followers
            .iter()
            .map(|f| f.seen().closes)
            .collect::<Vec<_>>()
    );
    summary(
        "4 scaling",
        &format!(
            "1→3 nodes {up_after:.0?} after 30 connections; 3→1 {down_after:.0?} after 27 of them left \
             (kept {survivor}, cost {survivor_cost}; removed {removed:?}; costs {costs:?}); \
             {drained}/6 followers drained and recovered, 0 of {} ticks lost",
            accepted.len()
        ),
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s5_a_rolling_restart_under_continuous_publishing_loses_nothing() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let stack = Stack::start(StackOptions {
        channels: vec![ticker(json!({}))],
        ..StackOptions::default()
    })
    .await?;
    let old: Vec<String> = stack.ready_nodes().into_iter().map(|p| p.name).collect();
    let mut followers = Vec::new();
    for i in 0..6 {
        followers
            .push(Follower::start(&stack.endpoint, &format!("reader-{i}"), &["ticker"]).await?);
    }
    let stop = AtomicBool::new(false);
    let roll = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let started = Instant::now();
        stack
            .kubectl(&["rollout", "restart", "deployment/push-node"])
            .await
            .expect("rollout restart");
        stack
            .kubectl(&[
                "rollout",
                "status",
                "deployment/push-node",
                "--timeout=180s",
            ])
            .await
            .expect("the rollout completes");
        eventually("only new node pods", SETTLE, || async {
            let now: Vec<String> = stack.ready_nodes().into_iter().map(|p| p.name).collect();
            // The old pods' processes are gone too: they drained their clients.
            (now.len() == 2
                && stack.kubelet.processes(NODE_PODS).len() == 2
                && now.iter().all(|n| !old.contains(n)))
            .then_some(())
        })
        .await;
        let took = started.elapsed();
        tokio::time::sleep(Duration::from_secs(3)).await;
        stop.store(true, Ordering::Relaxed);
        took
    };
    let (accepted, took) = tokio::join!(
        publish_ticks(&stack, Duration::from_millis(50), &stop),
        roll
    );
    let drained = assert_no_tick_lost(&followers, &accepted).await?;
    assert_eq!(
        drained,
        followers.len(),
        "every follower was drained once at least; closes seen: {:?}",
        followers
            .iter()
            .map(|f| f.seen().closes)
            .collect::<Vec<_>>()
    );
    summary(
        "5 rolling restart",
        &format!(
            "2 nodes replaced in {took:.0?} under {} publishes; {drained}/6 followers drained and \
             recovered; 0 lost",
            accepted.len()
        ),
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s6_a_redis_master_dies_the_cluster_reports_it_and_loses_no_acknowledged_publish(
) -> Result<()> {
    let _serial = SERIAL.lock().await;
    let stack = Stack::start(StackOptions {
        channels: vec![ticker(json!({}))],
        ..StackOptions::default()
    })
    .await?;
    let mut followers = Vec::new();
    for i in 0..4 {
        followers
            .push(Follower::start(&stack.endpoint, &format!("watcher-{i}"), &["ticker"]).await?);
    }
    // The master owning the ticker's history stream.
    let slot: u16 = stack
        .redis
        .lock()
        .await
        .cli(&["CLUSTER", "KEYSLOT", "herald:{c:ticker}:log"])
        .await?
        .trim()
        .parse()?;
    let index = stack
        .redis
        .lock()
        .await
        .masters()
        .iter()
        .position(|m| m.serves_slot(slot))
        .context("a master serves the ticker's slot")?;

    let stop = AtomicBool::new(false);
    let fault = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let killed = Instant::now();
        stack
            .redis
            .lock()
            .await
            .kill_master(index)
            .expect("SIGKILL the master");
        // While it lasts, the PushCluster says its broker is unhealthy…
        let mut unhealthy = None;
        while unhealthy.is_none() && killed.elapsed() < SETTLE {
            if stack.condition("BrokerHealthy").await.as_deref() == Some("False") {
                unhealthy = Some(killed.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let failover = stack
            .redis
            .lock()
            .await
            .wait_for_failover(SETTLE)
            .await
            .expect("a replica takes over");
        // …and healthy again once a replica has taken over.
        stack
            .wait_condition("BrokerHealthy", "True")
            .await
            .expect("BrokerHealthy again");
        let healthy = killed.elapsed();
        tokio::time::sleep(Duration::from_secs(3)).await;
        stop.store(true, Ordering::Relaxed);
        (unhealthy, failover, healthy)
    };
    let (accepted, (unhealthy, failover, healthy)) = tokio::join!(
        publish_ticks(&stack, Duration::from_millis(50), &stop),
        fault
    );
    let unhealthy = unhealthy.context("BrokerHealthy never became False during the outage")?;
    assert_no_tick_lost(&followers, &accepted).await?;
    summary(
        "6 Redis master killed",
        &format!(
            "BrokerHealthy=False {unhealthy:.1?} after SIGKILL, failover in {failover:.1?}, \
             True again after {healthy:.1?}; 0 of {} acknowledged publishes lost",
            accepted.len()
        ),
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s7_an_sre_finds_one_trace_from_publish_through_redis_to_delivery_on_another_node(
) -> Result<()> {
    let _serial = SERIAL.lock().await;
    let stack = Stack::start(StackOptions {
        tracing: true,
        ..StackOptions::default()
    })
    .await?;
    let jaeger = stack.jaeger.as_ref().context("Jaeger")?;
    // Dana's browser connects; the backend publishes through the other node.
    let mut dana = stack.endpoint.connect(&token("dana")).await?;
    dana.send_json(json!({"type": "subscribe", "channels": ["notifications"]}))
        .await;
    dana.recv_type("subscription_success").await;
    let dana_on = stack.nodes_of("dana").await?;
    let (via, answer) = {
        let other = stack
            .ready_nodes()
            .into_iter()
            .map(|p| p.name)
            .find(|n| !dana_on.contains(n))
            .context("a node Dana is not on")?;
        stack
            .publish_via(
                Some(&other),
                &json!({"channel": "notifications", "type": "notification", "users": ["dana"],
                        "data": {"title": "traced"}}),
            )
            .await?
    };
    let id = answer["id"].as_str().context("message id")?.to_owned();
    assert_eq!(
        dana.recv_type("notification").await["data"]["title"],
        "traced"
    );

    // The SRE asks Jaeger for the publish of that message id, then reads its whole trace.
    let trace = eventually("the publish's trace in Jaeger", SETTLE, || async {
        let traces = jaeger
            .traces(
                &TraceQuery::service("herald-node")
                    .operation("publish")
                    .tag("id", &id),
            )
            .await
            .ok()?;
        let trace = traces.into_iter().next()?;
        let delivered_elsewhere = trace
            .spans("herald-node", "deliver")
            .iter()
            .any(|s| dana_on.iter().any(|n| s.instance() == Some(n.as_str())));
        delivered_elsewhere.then_some(trace)
    })
    .await;
    let publish = trace.spans("herald-node", "publish")[0];
    assert_eq!(
        publish.instance(),
        Some(via.as_str()),
        "{}",
        trace.outline()
    );
    let redis_hop = trace.spans("herald-node", "broker.publish");
    assert!(
        redis_hop.iter().any(|s| trace.descends_from(s, publish)),
        "{}",
        trace.outline()
    );
    let deliver = trace
        .spans("herald-node", "deliver")
        .into_iter()
        .find(|s| dana_on.iter().any(|n| s.instance() == Some(n.as_str())))
        .context("deliver on Dana's node")?;
    assert!(trace.descends_from(deliver, publish), "{}", trace.outline());

    // The operator's reconciles are traced too.
    eventually("the operator's spans", SETTLE, || async {
        let services = jaeger.services().await.ok()?;
        services
            .iter()
            .any(|s| s == "herald-operator")
            .then_some(())
    })
    .await;
    summary(
        "7 tracing",
        &format!(
            "trace {} spans publish on {via} → broker.publish → deliver on {} ({} spans)",
            trace.id,
            deliver.instance().unwrap_or("?"),
            trace.spans.len()
        ),
    );
    Ok(())
}

/// Publishes `count` stock updates (`seq` 1..=count, `qty` = `seq`) on `channel` within
/// about `over`, as a backend's publishers send a burst: four workers at once, each
/// batching its share by 25, then update `count` alone, last. Returns how long the burst
/// took from the first publish to the last answer, once every update was accepted.
async fn stock_burst(stack: &Stack, channel: &str, count: u64, over: Duration) -> Result<Duration> {
    const WORKERS: u64 = 4;
    const BATCH: usize = 25;
    let publish = |seqs: Vec<u64>| async move {
        let batch: Vec<Value> = seqs
            .iter()
            .map(|seq| {
                json!({"channel": channel, "type": "stock_update",
                       "data": {"sku": "A-1", "qty": seq, "seq": seq}})
            })
            .collect();
        let answer = stack.publish(&Value::Array(batch)).await?;
        let results = answer["results"].as_array().context("batch results")?;
        ensure!(
            results.iter().all(|r| r["coalesced"] == "pending"),
            "every update is held for its window: {answer}"
        );
        anyhow::Ok(())
    };
    let started = Instant::now();
    let worker = |w: u64| async move {
        let mine: Vec<u64> = (1..count).filter(|s| s % WORKERS == w).collect();
        let batches = mine.chunks(BATCH).count().max(1) as u32;
        for (i, chunk) in mine.chunks(BATCH).enumerate() {
            publish(chunk.to_vec()).await?;
            tokio::time::sleep_until((started + over * (i as u32 + 1) / batches).into()).await;
        }
        anyhow::Ok(())
    };
    for result in futures_util::future::join_all((0..WORKERS).map(worker)).await {
        result?;
    }
    publish(vec![count]).await?;
    Ok(started.elapsed())
}

/// The `seq` of every update the dashboard in `tab` got on `channel`, in arrival order.
async fn dash_frames(tab: &herald_testkit::browser::Tab, channel: &str) -> Result<Vec<u64>> {
    let got = tab
        .evaluate(&format!(
            "window.dashReceived.filter(m => m.channel === {}).map(m => m.data.seq)",
            json!(channel)
        ))
        .await?;
    Ok(got
        .as_array()
        .context("an array")?
        .iter()
        .filter_map(Value::as_u64)
        .collect())
}

/// The legacy push guide's department groups and its hand-written debounce, as a
/// platform team configures them now: one `dept:{dept}` Channel, joined from the
/// token's claim, coalescing each department's stock updates to the latest per 100 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s8_department_dashboards_in_chromium_get_their_departments_stock_coalesced() -> Result<()>
{
    const WINDOW_MS: u64 = 100;
    let _serial = SERIAL.lock().await;
    // The dashboard is built on the SDK, which the stack serves once it is built.
    herald_testkit::legacy_page::sdk_dist()?;
    let departments = json!({"name": "dept:{dept}", "access": "authenticated",
                             "bind": {"dept": "dept"}, "autoSubscribe": true,
                             "allowedTypes": ["stock_update"], "history": true,
                             "coalesce": {"windowMs": WINDOW_MS, "key": "type",
                                          "edge": "trailing"}});
    let stack = Stack::start(StackOptions {
        channels: vec![departments],
        ..StackOptions::default()
    })
    .await?;
    let browser = Browser::launch(&Launch::ingress(HOST, stack.ca.cert_pem())).await?;
    let page = stack.ingress.https_url(HOST, "/app/dashboard.html");
    let mut tabs = Vec::new();
    for (user, dept) in [
        ("CORP\\alice", json!(5)),
        ("o\"brien 🦀", json!("7")),
        ("manager", json!([5, 7])),
    ] {
        let token = token_with(json!({"user_id": user, "dept": dept,
                                      "exp": herald_testkit::node::now() + 3600}));
        let tab = browser.new_tab().await?;
        tab.navigate(&format!("{page}?token={token}")).await?;
        tab.wait_for(
            &format!("{user}'s dashboard to connect"),
            "window.dashEvents.some(e => e[0] === 'connected')",
            PAGE_WAIT,
        )
        .await?;
        tabs.push(tab);
    }

    // The backend's burst: 1,000 updates for department 5 in about a second, and 20
    // for department 7 meanwhile, through whichever nodes the round robin picks.
    let (five, seven) = tokio::join!(
        stock_burst(&stack, "dept:5", 1000, Duration::from_secs(1)),
        stock_burst(&stack, "dept:7", 20, Duration::from_secs(1)),
    );
    let (five, seven) = (five?, seven?);
    // Windows of W ms over a burst of D ms: at most floor(D / W) + 1 frames, the last
    // one carrying the last update (README, "Coalescing bursts").
    let bound = |burst: Duration| burst.as_millis() as u64 / WINDOW_MS + 1;
    let (alice, obrien, manager) = (&tabs[0], &tabs[1], &tabs[2]);
    for (tab, channel, last) in [
        (alice, "dept:5", 1000),
        (obrien, "dept:7", 20),
        (manager, "dept:5", 1000),
        (manager, "dept:7", 20),
    ] {
        tab.wait_for(
            &format!("the last update on {channel}"),
            &format!(
                "window.dashReceived.some(m => m.channel === {} && m.data.seq === {last})",
                json!(channel)
            ),
            Duration::from_secs(30),
        )
        .await?;
    }
    // A late frame would show up now.
    tokio::time::sleep(Duration::from_millis(3 * WINDOW_MS + 500)).await;
    let alice_five = dash_frames(alice, "dept:5").await?;
    let obrien_seven = dash_frames(obrien, "dept:7").await?;
    for (frames, burst, last) in [(&alice_five, five, 1000), (&obrien_seven, seven, 20)] {
        ensure!(
            !frames.is_empty() && frames.len() as u64 <= bound(burst),
            "{} frames for a {burst:?} burst (at most {})",
            frames.len(),
            bound(burst)
        );
        ensure!(
            frames.last() == Some(&last),
            "ends on the latest: {frames:?}"
        );
        ensure!(
            frames.windows(2).all(|w| w[0] < w[1]),
            "in order: {frames:?}"
        );
    }
    ensure!(
        dash_frames(alice, "dept:7").await?.is_empty(),
        "no other department"
    );
    ensure!(
        dash_frames(obrien, "dept:5").await?.is_empty(),
        "no other department"
    );
    ensure!(
        dash_frames(manager, "dept:5").await? == alice_five,
        "same windows"
    );
    ensure!(
        dash_frames(manager, "dept:7").await? == obrien_seven,
        "same windows"
    );
    let shown = alice
        .evaluate(
            "[...document.querySelectorAll('#stock tbody tr')].map(r => [r.cells[0].textContent, r.cells[2].textContent])",
        )
        .await?;
    assert_eq!(shown, json!([["dept:5", "1000"]]));
    summary(
        "8 department dashboards",
        &format!(
            "1,000 updates in {five:.1?} reached dept 5's dashboard as {} frames (at most {}), \
             20 for dept 7 as {}, the last one each time; no other department's",
            alice_five.len(),
            bound(five),
            obrien_seven.len()
        ),
    );
    for tab in tabs {
        tab.close().await?;
    }
    Ok(())
}
