//! Durability per configuration: the `appendfsync` check at connect,
//! `WAIT` failing closed with `NotDurable` (and the state it leaves), what
//! survives `kill -9` of a server with `appendfsync always`, and how a
//! stopped or dead server is reported.

use idemkv::{Backend, BackendTicket, Claim, Error, Fingerprint, Record, Seen};
use idemkv_redis::test_support::{NodeOptions, RedisNode};
use idemkv_redis::{FsyncCheck, RedisBackend, RedisOptions};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(600);

fn start(options: NodeOptions) -> RedisNode {
    RedisNode::start_with(options).unwrap_or_else(|e| panic!("{e}"))
}

async fn acquire(b: &RedisBackend, key: &[u8]) -> idemkv::RemoteTicket {
    match b.claim(key, Fingerprint::of(key)).await {
        Ok(Claim::Acquired(t)) => t,
        other => panic!("claim of {key:?}: expected Acquired, got {other:?}"),
    }
}

/// `Require` refuses a server without `appendfsync always` (or without
/// the append-only file), naming what it found; `Warn` connects and
/// reports it; `Skip` does not look.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appendfsync_check_require_warn_skip() {
    let everysec = start(NodeOptions {
        appendfsync: "everysec".into(),
        ..NodeOptions::default()
    });
    let no_aof = start(NodeOptions {
        appendonly: false,
        ..NodeOptions::default()
    });
    for (node, found) in [
        (&everysec, "appendfsync everysec"),
        (&no_aof, "appendonly no"),
    ] {
        match RedisOptions::new().connect(&node.url()).await {
            Err(Error::InvalidOptions(why)) => {
                assert!(why.contains(found), "{why}");
                assert!(why.contains(&node.port().to_string()), "{why}");
            }
            other => panic!("Require on {found}: expected InvalidOptions, got {other:?}"),
        }
        let warned = RedisOptions::new()
            .fsync_check(FsyncCheck::Warn)
            .connect(&node.url())
            .await
            .unwrap();
        let report = warned.durability();
        assert!(!report.fsync_always(), "{report:?}");
        assert_eq!(report.nodes.len(), 1);
        assert!(report.nodes[0].reached);
        let t = acquire(&warned, b"k").await;
        warned.complete(t, b"r", LONG).await.unwrap();
    }
    assert_eq!(
        everysec_report(&everysec).await.nodes[0]
            .appendfsync
            .as_deref(),
        Some("everysec")
    );
    let skipped = RedisOptions::new()
        .fsync_check(FsyncCheck::Skip)
        .connect(&everysec.url())
        .await
        .unwrap();
    assert!(skipped.durability().nodes.is_empty());
    assert!(!skipped.durability().fsync_always(), "nothing known");

    let always = start(NodeOptions::default());
    let b = RedisBackend::connect(&always.url()).await.unwrap();
    assert!(b.durability().fsync_always(), "{:?}", b.durability());
}

async fn everysec_report(node: &RedisNode) -> idemkv_redis::DurabilityReport {
    RedisOptions::new()
        .fsync_check(FsyncCheck::Warn)
        .connect(&node.url())
        .await
        .unwrap()
        .durability()
        .clone()
}

/// With `WAIT 1`, a write its replica does not confirm is not
/// acknowledged: `NotDurable`. It was applied on the primary: the claim
/// holds the key (in progress, for a retry too) until its lease ends, the
/// completion is there to replay; nothing was reported done. Once the
/// replica is back, writes are acknowledged again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_fails_closed_with_not_durable_and_the_write_stays_on_the_primary() {
    let primary = start(NodeOptions::default());
    let replica = start(NodeOptions {
        replica_of: Some(primary.port()),
        ..NodeOptions::default()
    });
    wait_for_link(&primary, &replica).await;
    // Long enough for a healthy replica to confirm on a loaded 2-core
    // machine (200 ms was not, with two busy processes beside the test);
    // each write while the replica is paused takes all of it, inside a
    // command timeout that leaves room for it.
    let b = RedisOptions::new()
        .command_timeout(Duration::from_secs(10))
        .wait_for_replicas(1, Duration::from_millis(1000))
        .connect(&primary.url())
        .await
        .unwrap();
    let early = acquire(&b, b"early").await;

    replica.pause().unwrap();
    let not_durable = |what: &str, r: Result<(), Error>| match r {
        Err(Error::NotDurable {
            acknowledged: 0,
            required: 1,
        }) => {}
        other => panic!("{what} with the replica paused: expected NotDurable, got {other:?}"),
    };
    let fp = Fingerprint::of(b"late");
    not_durable("claim", b.claim(b"late", fp).await.map(drop));
    match b.get(b"late").await.unwrap() {
        Some(Record::InProgress { fingerprint, .. }) => assert_eq!(fingerprint, fp),
        other => panic!("the unconfirmed claim is on the primary: {other:?}"),
    }
    match b.claim(b"late", fp).await {
        Ok(Claim::InProgress { .. }) => {}
        other => panic!("a retry finds the key held: {other:?}"),
    }
    not_durable("complete", b.complete(early, b"r1", LONG).await);
    match b.get(b"early").await.unwrap() {
        Some(Record::Completed(done)) => assert_eq!(done.response(), b"r1"),
        other => panic!("the unconfirmed completion is on the primary: {other:?}"),
    }
    not_durable("mark_seen", b.mark_seen(b"msg", LONG).await.map(drop));

    replica.resume().unwrap();
    let t = acquire(&b, b"after").await;
    b.complete(t, b"confirmed", LONG).await.unwrap();
    assert_eq!(b.mark_seen(b"msg2", LONG).await.unwrap(), Seen::First);

    // A primary without a replica can confirm nothing.
    let lonely = start(NodeOptions::default());
    let b = RedisOptions::new()
        .wait_for_replicas(1, Duration::from_millis(100))
        .connect(&lonely.url())
        .await
        .unwrap();
    match b.claim(b"k", Fingerprint::of(b"k")).await {
        Err(Error::NotDurable {
            acknowledged: 0,
            required: 1,
        }) => {}
        other => panic!("no replica: expected NotDurable, got {other:?}"),
    }
}

/// Waits until `replica` is linked to `primary` and the primary has had
/// an acknowledgement from it (`WAIT 1`): a link that is up is not yet a
/// replica the primary counts, and a busy machine can take longer than
/// the backend's `WAIT` timeout for that first acknowledgement.
async fn wait_for_link(primary: &RedisNode, replica: &RedisNode) {
    for _ in 0..500 {
        let linked = replica
            .text(&["INFO", "replication"])
            .unwrap()
            .contains("master_link_status:up");
        if linked && primary.text(&["WAIT", "1", "1000"]).unwrap() == "1" {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the replica never linked to its primary");
}

/// With `appendfsync always`, every acknowledged claim and completion
/// survives `kill -9` of the server and its restart from the append-only
/// file, under concurrent load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9_and_restart() {
    let node = start(NodeOptions::default());
    let b = RedisOptions::new()
        .command_timeout(Duration::from_millis(500))
        .connect(&node.url())
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for task in 0..16 {
        let b = b.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0.. {
                let key = format!("t{task}-{i}");
                let Ok(Claim::Acquired(t)) = b.claim(key.as_bytes(), Fingerprint::of(&key)).await
                else {
                    break;
                };
                let generation = t.generation();
                let done = b.complete(t, key.as_bytes(), LONG).await.is_ok();
                acked.push((key, generation, done));
                if !done {
                    break;
                }
            }
            acked
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    node.kill();
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    assert!(
        acked.len() > 16,
        "load ran before the kill: {}",
        acked.len()
    );
    match b.claim(b"while-down", Fingerprint::of(b"x")).await {
        Err(Error::Unreachable { .. } | Error::TimedOut { .. }) => {}
        other => panic!("a dead server: expected Unreachable or TimedOut, got {other:?}"),
    }
    tokio::task::block_in_place(|| node.restart()).unwrap();
    let mut lost = 0;
    for (key, generation, done) in &acked {
        let found = loop {
            match b.inspect(key.as_bytes()).await {
                Ok(found) => break found,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await, // reconnecting
            }
        };
        let kept = match found {
            Some(i) if i.generation == Some(*generation) => match i.record {
                Record::Completed(c) => c.response() == key.as_bytes(),
                Record::InProgress { .. } => !done,
                Record::Seen { .. } => false,
            },
            _ => false,
        };
        lost += usize::from(!kept);
    }
    assert_eq!(
        lost,
        0,
        "acknowledged writes lost across kill -9 of {}",
        acked.len()
    );
}

/// A stopped server (`SIGSTOP`) times out (`TimedOut`, no sooner than the
/// command timeout); a port with no server is `Unreachable`, at connect
/// and on a call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_and_dead_servers_are_typed_errors() {
    let node = start(NodeOptions::default());
    let timeout = Duration::from_millis(300);
    let b = RedisOptions::new()
        .command_timeout(timeout)
        .connect(&node.url())
        .await
        .unwrap();
    node.pause().unwrap();
    match b.claim(b"k", Fingerprint::of(b"k")).await {
        Err(Error::TimedOut { after }) => assert!(after >= timeout, "{after:?}"),
        other => panic!("a stopped server: expected TimedOut, got {other:?}"),
    }
    node.resume().unwrap();
    let port = node.port();
    node.kill();
    let mut unreachable = false;
    for _ in 0..20 {
        match b.claim(b"k2", Fingerprint::of(b"k")).await {
            Err(Error::Unreachable { .. }) => {
                unreachable = true;
                break;
            }
            Err(Error::TimedOut { .. }) => {} // the call that saw the connection drop
            other => panic!("a dead server: expected an error, got {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        unreachable,
        "once the connection is gone, calls are Unreachable"
    );
    match RedisBackend::connect(&format!("redis://127.0.0.1:{port}")).await {
        Err(Error::Unreachable { .. }) => {}
        other => panic!("connect to a dead port: expected Unreachable, got {other:?}"),
    }
}
