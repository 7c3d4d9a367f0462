//! The Redis fixture runs real `redis-server` processes: these stories show that a cluster it
//! starts really is a working Redis Cluster, that its fault injection behaves like a crashed
//! machine would, and that nothing is left behind afterwards.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use herald_testkit::redis::{redis_cli, NodeInfo, RedisCluster, RedisServer, Role};

/// Finds a key whose hash slot `node` serves, by asking the cluster with CLUSTER KEYSLOT.
async fn key_served_by(node: &NodeInfo) -> Result<String> {
    for i in 0..200 {
        let key = format!("herald:fixture:{i}");
        let slot: u16 = redis_cli(node.port, &["CLUSTER", "KEYSLOT", &key])
            .await?
            .parse()
            .context("CLUSTER KEYSLOT did not answer a number")?;
        if node.serves_slot(slot) {
            return Ok(key);
        }
    }
    anyhow::bail!("no key among 200 candidates hashes to {}", node.addr())
}

fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[tokio::test]
async fn a_cluster_of_three_masters_and_three_replicas_serves_keys_and_shard_channels() -> Result<()>
{
    let started = Instant::now();
    let cluster = RedisCluster::start(3, 1).await?;
    eprintln!("3+3 cluster ready in {:?}", started.elapsed());

    // Three masters share the slots, each followed by one replica.
    let masters = cluster.masters();
    let replicas = cluster.replicas();
    assert_eq!(masters.len(), 3);
    assert_eq!(replicas.len(), 3);
    for master in &masters {
        let followers = replicas
            .iter()
            .filter(|r| r.master_id.as_deref() == Some(master.id.as_str()))
            .count();
        assert_eq!(followers, 1, "{} should have one replica", master.addr());
    }

    // Every node, asked directly, says the cluster is ok with all slots served.
    for node in cluster.nodes() {
        let info = redis_cli(node.port, &["CLUSTER", "INFO"]).await?;
        assert!(info.contains("cluster_state:ok"), "{}: {info}", node.addr());
        assert!(
            info.contains("cluster_slots_ok:16384"),
            "{}: {info}",
            node.addr()
        );
    }

    // The URL lists all three masters in fred's cluster form.
    let url = cluster.url();
    assert!(url.starts_with(&format!("redis-cluster://{}?node=", masters[0].addr())));
    for master in &masters[1..] {
        assert!(url.contains(&format!("node={}", master.addr())), "{url}");
    }

    // A key owned by the third master, written through the first: without -c the first master
    // answers MOVED, with -c redis-cli follows the redirection.
    let (entry, owner) = (&masters[0], &masters[2]);
    let key = key_served_by(owner).await?;
    let moved = redis_cli(entry.port, &["SET", &key, "v"]).await?;
    assert!(
        moved.starts_with("MOVED"),
        "expected a redirection, got {moved:?}"
    );
    assert_eq!(
        redis_cli(entry.port, &["-c", "SET", &key, "v"]).await?,
        "OK"
    );
    assert_eq!(redis_cli(entry.port, &["-c", "GET", &key]).await?, "v");
    assert_eq!(redis_cli(owner.port, &["GET", &key]).await?, "v");

    // Sharded pub/sub: SPUBLISH on a shard channel is accepted (no subscriber yet: 0 receivers).
    let receivers = cluster
        .cli(&["SPUBLISH", "herald:{room-1}", "hello"])
        .await?;
    assert_eq!(receivers, "0");

    let cpu = cluster.cpu_seconds();
    assert!(cpu.is_finite() && cpu >= 0.0);
    eprintln!(
        "story finished in {:?}; redis used {cpu:.2} CPU s",
        started.elapsed()
    );
    Ok(())
}

#[tokio::test]
async fn a_killed_master_is_replaced_by_its_replica_and_rejoins_as_a_replica() -> Result<()> {
    let started = Instant::now();
    let mut cluster = RedisCluster::start(3, 1).await?;
    eprintln!("3+3 cluster ready in {:?}", started.elapsed());

    // Pick the first master, its replica (the heir), and a key the master serves.
    let victim = cluster.masters()[0].clone();
    let heir = cluster
        .replicas()
        .into_iter()
        .find(|r| r.master_id.as_deref() == Some(victim.id.as_str()))
        .context("the victim has no replica")?;
    let key = key_served_by(&victim).await?;
    assert_eq!(cluster.cli(&["SET", &key, "survives"]).await?, "OK");
    cluster.wait_for_replication(Duration::from_secs(5)).await?;
    let cpu_before = cluster.cpu_seconds();

    // SIGKILL: the process is gone at once, like a crashed machine.
    let killed = cluster.kill_master(0)?;
    assert_eq!(killed, victim.port);
    assert!(!process_exists(victim.pid.context("victim had no pid")?));
    assert_eq!(cluster.masters().len(), 2);

    // Within 15 s the replica is promoted and the survivors agree the cluster is ok again.
    let took = cluster.wait_for_failover(Duration::from_secs(15)).await?;
    eprintln!("failover took {took:?}");
    assert!(took < Duration::from_secs(15));
    let masters = cluster.masters();
    assert_eq!(masters.len(), 3);
    assert!(masters.iter().any(|m| m.port == heir.port));
    for node in cluster.nodes().iter().filter(|n| n.role != Role::Down) {
        let info = redis_cli(node.port, &["CLUSTER", "INFO"]).await?;
        assert!(info.contains("cluster_state:ok"), "{}: {info}", node.addr());
    }
    // The write made before the crash was replicated, so it survived it.
    assert_eq!(cluster.cli(&["GET", &key]).await?, "survives");
    // CPU accounting keeps what the killed process had used.
    assert!(cluster.cpu_seconds() >= cpu_before);

    // The old master comes back on the same port and follows its heir.
    let restart = Instant::now();
    cluster.restart(killed).await?;
    eprintln!("restarted node rejoined in {:?}", restart.elapsed());
    let back = cluster
        .nodes()
        .into_iter()
        .find(|n| n.port == killed)
        .context("restarted node missing")?;
    assert_eq!(back.role, Role::Replica);
    assert_eq!(back.master_id.as_deref(), Some(heir.id.as_str()));
    assert_eq!(cluster.replicas().len(), 3);
    assert_eq!(redis_cli(killed, &["-c", "GET", &key]).await?, "survives");

    eprintln!("story finished in {:?}", started.elapsed());
    Ok(())
}

#[tokio::test]
async fn a_standalone_server_answers_ping_survives_a_restart_and_leaves_nothing_behind(
) -> Result<()> {
    let started = Instant::now();
    let mut server = RedisServer::start_standalone().await?;
    assert_eq!(server.url(), format!("redis://127.0.0.1:{}", server.port()));
    assert_eq!(server.cli(&["PING"]).await?, "PONG");

    // Killed, it stops answering; restarted, it answers on the same port again.
    server.kill()?;
    assert!(server.cli(&["PING"]).await.is_err());
    server.restart().await?;
    assert_eq!(server.cli(&["PING"]).await?, "PONG");
    assert!(server.cpu_seconds() >= 0.0);

    // Dropping the fixture kills the process and removes its directory.
    let pid = server.pid().context("no pid")?;
    let dir = server.dir().to_path_buf();
    assert!(dir.join("redis.log").exists());
    drop(server);
    assert!(
        !process_exists(pid),
        "redis-server {pid} outlived its fixture"
    );
    assert!(!dir.exists(), "{} was not removed", dir.display());

    eprintln!("story finished in {:?}", started.elapsed());
    Ok(())
}

#[tokio::test]
async fn a_cluster_with_too_few_masters_is_refused_with_a_clear_message() {
    let err = RedisCluster::start(2, 1).await.expect_err("must fail");
    assert!(err.to_string().contains("at least 3 masters"), "{err}");
}
