//! The shared contract suite on a local 3-primary + 3-replica Redis
//! Cluster, without and with `WAIT 1`; `MOVED` after a planned failover;
//! `CLUSTERDOWN` surfacing as a typed error.

mod common;

use common::RedisHarness;
use futures_util::FutureExt;
use futures_util::future::join_all;
use idemkv::contract::{self, Harness};
use idemkv::{Backend, Claim, Error, Fingerprint};
use idemkv_redis::RedisOptions;
use idemkv_redis::test_support::{NodeOptions, RedisCluster};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Rows run at once: enough to overlap their sleeps, few enough that a
/// row's margins (three `SHORT`s) hold on two cores.
const ROWS_AT_ONCE: usize = 6;

async fn start_cluster(primaries: usize, replicas: usize) -> RedisCluster {
    tokio::task::spawn_blocking(move || RedisCluster::start(primaries, replicas))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `rows` on `harness`, a few at a time (interleaved on this task;
/// each row's racers are spawned on the runtime), and returns the failed
/// rows' names with their panic messages.
async fn run_rows(harness: &RedisHarness, rows: &[&'static str]) -> Vec<String> {
    let slots = Semaphore::new(ROWS_AT_ONCE);
    let runs = rows.iter().map(|&row| {
        let slots = &slots;
        async move {
            let _slot = slots.acquire().await.unwrap();
            let run = AssertUnwindSafe(contract::run(harness, row)).catch_unwind();
            match run.await {
                Ok(true) => None,
                Ok(false) => Some(format!("{row}: no such row")),
                Err(p) => {
                    let why = p
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    Some(format!("{row}: {why}"))
                }
            }
        }
    });
    join_all(runs).await.into_iter().flatten().collect()
}

/// Every contract row against one 3 + 3 cluster: all rows without `WAIT`,
/// all rows with `WAIT 1` (a replica confirms every write), then the
/// fail-closed row with `WAIT 1` and every replica paused, where each write
/// must fail (`NotDurable`) instead of being acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn contract_suite_on_a_three_plus_three_cluster() {
    let cluster = Arc::new(start_cluster(3, 1).await);
    let fail_closed = "unconfirmed_writes_fail_closed";
    let rows: Vec<&str> = contract::TESTS
        .iter()
        .copied()
        .filter(|r| *r != fail_closed)
        .collect();
    for wait in [false, true] {
        let harness = RedisHarness::cluster(cluster.clone(), wait);
        let failed = run_rows(&harness, &rows).await;
        assert!(
            failed.is_empty(),
            "WAIT {wait}: rows failed:\n{}",
            failed.join("\n")
        );
    }
    let harness = RedisHarness::cluster(cluster.clone(), true);
    let b = harness.backend(contract::LONG, contract::LONG).await;
    contract::run(&harness, fail_closed).await;
    // The row above is skipped when the harness cannot break writes: make
    // sure it could (the replicas are paused now).
    assert!(
        harness.break_writes(&b).await,
        "the cluster harness breaks writes"
    );
    match b.claim(b"after-break", Fingerprint::of(b"x")).await {
        Err(Error::NotDurable {
            acknowledged: 0,
            required: 1,
        }) => {}
        other => panic!("with every replica paused: expected NotDurable, got {other:?}"),
    }
}

/// A planned failover (`CLUSTER FAILOVER` on a replica) moves a primary's
/// slots: the backend follows `MOVED` to the new primary, and every record
/// written before is there, with its generation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moved_slots_are_followed_after_a_planned_failover() {
    let cluster = Arc::new(start_cluster(3, 1).await);
    let h = RedisHarness::cluster(cluster.clone(), false);
    let b = h.connect(h.options()).await;
    let fp = Fingerprint::of(b"x");
    let mut before = Vec::new();
    for i in 0..60 {
        let key = format!("k{i}");
        match b.claim(key.as_bytes(), fp).await.unwrap() {
            Claim::Acquired(t) => before.push((key, t)),
            other => panic!("expected Acquired, got {other:?}"),
        }
    }
    let primary = cluster.primaries().unwrap()[0].port;
    let replica = cluster.replicas_of(primary).unwrap()[0].port;
    let node = cluster.node(replica).unwrap();
    node.text(&["CLUSTER", "FAILOVER"]).unwrap();
    cluster
        .wait_for(Duration::from_secs(30), |t| {
            t.iter()
                .any(|n| n.port == replica && n.primary && n.slots > 0)
        })
        .unwrap();
    for (key, ticket) in before {
        b.complete(ticket, key.as_bytes(), Duration::from_secs(600))
            .await
            .unwrap_or_else(|e| panic!("complete of {key} after the failover: {e}"));
        match b.claim(key.as_bytes(), fp).await.unwrap() {
            Claim::Replay(done) => assert_eq!(done.response(), key.as_bytes()),
            other => panic!("{key}: expected Replay, got {other:?}"),
        }
    }
}

/// A cluster that lost a primary with no replica to promote refuses every
/// slot (`CLUSTERDOWN`): the backend fails closed with `Unreachable`,
/// whose source is the `redis::RedisError` of kind `ClusterDown`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clusterdown_surfaces_as_a_typed_error() {
    let cluster = tokio::task::spawn_blocking(|| {
        let options = NodeOptions {
            node_timeout_ms: 500,
            ..NodeOptions::default()
        };
        RedisCluster::start_with(3, 0, options)
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("{e}"));
    let options = RedisOptions::new()
        .prefix("down:")
        .cluster_retries(2)
        .command_timeout(Duration::from_secs(3));
    let b = options.connect_cluster(&cluster.urls()).await.unwrap();
    let victim = cluster.primaries().unwrap()[0].port;
    cluster.node(victim).unwrap().kill();
    let survivor = cluster.nodes().iter().find(|n| n.is_running()).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !survivor
        .text(&["CLUSTER", "INFO"])
        .unwrap()
        .contains("cluster_state:fail")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the cluster never went down"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut cluster_down = 0;
    for i in 0..12 {
        let key = format!("k{i}");
        match b.claim(key.as_bytes(), Fingerprint::of(b"x")).await {
            Err(Error::Unreachable { source }) => {
                let e = source
                    .downcast_ref::<redis::RedisError>()
                    .expect("the source is the Redis error");
                if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ClusterDown) {
                    cluster_down += 1;
                }
            }
            Err(Error::TimedOut { .. }) => {}
            other => panic!("{key} on a cluster that is down: expected an error, got {other:?}"),
        }
    }
    assert!(cluster_down > 0, "some keys were refused with CLUSTERDOWN");
}

/// A backend that was idle through a failover and then gets a burst of
/// calls recovers within a few command timeouts: a cluster connection
/// whose call timed out is replaced by a fresh one that reads the new
/// topology (the cluster client alone can stay stuck on the old one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_backend_recovers_after_a_failover() {
    let cluster = Arc::new(start_cluster(3, 1).await);
    let timeout = Duration::from_millis(1000);
    let b = RedisOptions::new()
        .prefix("idle:")
        .command_timeout(timeout)
        .connect_cluster(&cluster.urls())
        .await
        .unwrap();
    let victim = cluster.primaries().unwrap()[0].port;
    let replica = cluster.replicas_of(victim).unwrap()[0].port;
    cluster.node(victim).unwrap().kill();
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || {
        c.wait_for(Duration::from_secs(60), |t| {
            t.iter()
                .any(|n| n.port == replica && n.primary && n.slots > 0)
        })
    })
    .await
    .unwrap()
    .unwrap();
    let burst = |round: usize| {
        let calls: Vec<_> = (0..256)
            .map(|i| {
                let b = b.clone();
                tokio::spawn(async move { b.get(format!("r{round}-{i}").as_bytes()).await.is_ok() })
            })
            .collect();
        async move {
            let mut ok = 0;
            for c in calls {
                ok += usize::from(c.await.unwrap());
            }
            ok
        }
    };
    let started = std::time::Instant::now();
    let mut round = 0;
    while burst(round).await < 256 {
        round += 1;
        assert!(
            started.elapsed() < 10 * timeout,
            "still failing calls {:?} after the promotion",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
