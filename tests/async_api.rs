//! The async API under tokio: thousands of concurrent tasks on a 2-worker
//! runtime, every answer durable, fsyncs shared, and `claim_wait_async`
//! woken by the owner's write.

use idemkv::storage::{PendingFate, SimStorage};
use idemkv::{Claim, Durability, Fingerprint, Options, Store};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap()
}

/// The futures can be spawned on a multi-threaded runtime.
fn assert_send<T: Send>(t: T) -> T {
    t
}

#[test]
fn thousands_of_tasks_share_group_commits_and_survive_reopen() {
    const TASKS: usize = 4_000;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let effects = Arc::new(AtomicUsize::new(0));
    runtime().block_on(async {
        let mut tasks = Vec::new();
        for i in 0..TASKS {
            let (store, effects) = (store.clone(), effects.clone());
            // Every key is claimed by two tasks: one runs the effect.
            let key = format!("t1:POST /orders:{}", i / 2);
            tasks.push(tokio::spawn(assert_send(async move {
                let fp = Fingerprint::of(key.as_bytes());
                match store
                    .claim_wait_async(&key, fp, Duration::from_secs(60))
                    .await?
                {
                    Claim::Acquired(ticket) => {
                        effects.fetch_add(1, Ordering::SeqCst);
                        tokio::task::yield_now().await;
                        store
                            .complete_async(ticket, format!("order {}", i / 2))
                            .await?;
                    }
                    Claim::Replay(done) => {
                        assert_eq!(done.response(), format!("order {}", i / 2).as_bytes())
                    }
                    other => panic!("wait resolves to acquired or replay, got {other:?}"),
                }
                Ok::<(), idemkv::Error>(())
            })));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
    });
    assert_eq!(
        effects.load(Ordering::SeqCst),
        TASKS / 2,
        "one effect per key"
    );
    let stats = store.stats();
    // Each pair needs two durable writes; sharing means far fewer fsyncs.
    assert!(
        stats.fsyncs < TASKS as u64 / 4,
        "{} fsyncs for {TASKS} durable writes",
        stats.fsyncs
    );
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    for k in 0..TASKS / 2 {
        let key = format!("t1:POST /orders:{k}");
        match store.claim(&key, Fingerprint::of(key.as_bytes())).unwrap() {
            Claim::Replay(done) => assert_eq!(done.response(), format!("order {k}").as_bytes()),
            other => panic!("every completion was durable before it resolved: {other:?}"),
        }
    }
}

#[test]
fn resolved_futures_survive_power_loss() {
    let sim = SimStorage::new();
    let dir = Path::new("/store");
    let open = || {
        Options::new()
            .storage(Arc::new(sim.clone()))
            .open(dir)
            .unwrap()
    };
    let store = open();
    let fp = Fingerprint::of(b"b");
    runtime().block_on(async {
        let Claim::Acquired(t) = store.claim_async("a", fp).await.unwrap() else {
            panic!("fresh key")
        };
        store.complete_async(t, b"resp").await.unwrap();
        let Claim::Acquired(t) = store.claim_async("r", fp).await.unwrap() else {
            panic!("fresh key")
        };
        store.release_async(t).await.unwrap();
        let seen = store
            .mark_seen_async("msg-1", Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(seen, idemkv::Seen::First);
        let Claim::Acquired(_pending) = store.claim_async("p", fp).await.unwrap() else {
            panic!("fresh key")
        };
    });
    // Every write not yet fsynced is lost; what resolved must remain.
    sim.power_loss(7, PendingFate::DropAll);
    drop(store);
    let reopened = open();
    assert!(matches!(
        reopened.claim("a", fp).unwrap(),
        Claim::Replay(ref d) if d.response() == b"resp"
    ));
    assert!(matches!(
        reopened.claim("r", fp).unwrap(),
        Claim::Acquired(_)
    ));
    assert!(matches!(
        reopened.claim("p", fp).unwrap(),
        Claim::InProgress { .. }
    ));
    assert_eq!(
        reopened
            .mark_seen("msg-1", Duration::from_secs(60))
            .unwrap(),
        idemkv::Seen::Duplicate
    );
}

#[test]
fn claim_wait_async_wakes_on_completion_and_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let store = Options::new()
        .durability(Durability::None)
        .open(dir.path())
        .unwrap();
    let fp = Fingerprint::of(b"w");
    runtime().block_on(async {
        let Claim::Acquired(ticket) = store.claim_async("k", fp).await.unwrap() else {
            panic!("fresh key")
        };
        // Times out while the owner holds the key.
        let early = store
            .claim_wait_async("k", fp, Duration::from_millis(30))
            .await
            .unwrap();
        assert!(
            matches!(early, Claim::InProgress { lease_expires_at_ms } if lease_expires_at_ms == ticket.lease_expires_at_ms())
        );
        let waiters: Vec<_> = (0..100)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move {
                    store
                        .claim_wait_async("k", fp, Duration::from_secs(60))
                        .await
                })
            })
            .collect();
        while store.stats().claim_waits < 100 {
            tokio::task::yield_now().await;
        }
        store.complete_async(ticket, b"done").await.unwrap();
        for w in waiters {
            match w.await.unwrap().unwrap() {
                Claim::Replay(d) => assert_eq!(d.response(), b"done"),
                other => panic!("the owner completed, got {other:?}"),
            }
        }
    });
    assert_eq!(store.stats().waiting, 0);
}

#[test]
fn lease_end_wakes_an_async_waiter_without_a_runtime_timer() {
    let dir = tempfile::tempdir().unwrap();
    let store = Options::new()
        .lease(Duration::from_millis(100))
        .open(dir.path())
        .unwrap();
    let fp = Fingerprint::of(b"l");
    let Claim::Acquired(_abandoned) = store.claim("k", fp).unwrap() else {
        panic!("fresh key")
    };
    // A current-thread runtime without the time driver: the store's own
    // thread keeps the deadline.
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let answer = rt
        .block_on(store.claim_wait_async("k", fp, Duration::from_secs(60)))
        .unwrap();
    assert!(matches!(answer, Claim::Acquired(_)), "{answer:?}");
    assert_eq!(store.stats().takeovers, 1);
}
