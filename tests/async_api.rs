//! The async API under tokio: thousands of concurrent tasks on a 2-worker
//! runtime, every answer durable, fsyncs shared (counted on a disk that
//! holds each fsync until every task is idle, so the count does not depend
//! on the machine's speed), and `claim_wait_async` woken by the owner's
//! write.

mod common;

use common::SyncHooked;
use idemkv::storage::{PendingFate, SimStorage};
use idemkv::{Claim, Durability, Fingerprint, Options, Store};
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicU8, AtomicUsize, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

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

/// Counts the tasks of a test that are idle: parked (their last poll
/// returned `Pending` and nothing has woken them since) or finished.
struct Idle {
    tasks: usize,
    /// May dip below the true count for an instant (a wake that lands
    /// between a task's parking and its count), never above it.
    parked: AtomicIsize,
    done: AtomicUsize,
}

impl Idle {
    fn all(&self) -> bool {
        let idle = self.parked.load(Ordering::SeqCst) + self.done.load(Ordering::SeqCst) as isize;
        idle == self.tasks as isize
    }
}

const RUNNING: u8 = 0;
const PARKED: u8 = 1;
const WOKEN: u8 = 2;

/// Wraps a task's future so [`Idle`] knows when it is parked.
struct Tracked<F> {
    fut: Pin<Box<F>>,
    state: Arc<AtomicU8>,
    idle: Arc<Idle>,
}

/// The task's waker, which first marks the task runnable.
struct TrackingWaker {
    inner: Waker,
    state: Arc<AtomicU8>,
    idle: Arc<Idle>,
}

impl Wake for TrackingWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.state.swap(WOKEN, Ordering::SeqCst) == PARKED {
            self.idle.parked.fetch_sub(1, Ordering::SeqCst);
        }
        self.inner.wake_by_ref();
    }
}

impl<F: Future> Future for Tracked<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        if self.state.swap(RUNNING, Ordering::SeqCst) == PARKED {
            self.idle.parked.fetch_sub(1, Ordering::SeqCst);
        }
        let waker = Waker::from(Arc::new(TrackingWaker {
            inner: cx.waker().clone(),
            state: self.state.clone(),
            idle: self.idle.clone(),
        }));
        let out = self.fut.as_mut().poll(&mut Context::from_waker(&waker));
        match out {
            Poll::Ready(_) => {
                self.idle.done.fetch_add(1, Ordering::SeqCst);
            }
            Poll::Pending => {
                let parked = self.state.compare_exchange(
                    RUNNING,
                    PARKED,
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                );
                if parked.is_ok() {
                    self.idle.parked.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
        out
    }
}

/// While armed, holds every fsync until every task of the test is idle:
/// the slowest disk there is, next to the tasks (a [`SyncHooked`] disk runs
/// `hold` before each fsync). Whatever the machine's speed, each fsync then
/// covers everything the tasks could write before needing it, so the count
/// of fsyncs is a property of the code, not of the timing.
struct Gate {
    armed: AtomicBool,
    idle: Arc<Idle>,
    /// An fsync waited this long and went ahead: a task never went idle.
    stuck: AtomicBool,
}

impl Gate {
    fn hold(&self) {
        let give_up = Instant::now() + Duration::from_secs(120);
        while self.armed.load(Ordering::SeqCst) && !self.idle.all() {
            if Instant::now() > give_up {
                self.stuck.store(true, Ordering::SeqCst);
                return;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

/// Thousands of tasks, two per key: one claims and completes, the other
/// waits for it. Every answer is durable before it resolves, and the
/// fsyncs are shared. The disk holds each fsync until every task is idle
/// (see [`Gate`]), so each fsync covers every record written before
/// anyone had to wait for it, and the count is exact enough to bound: per
/// stream and per wave of writes (the claims, then the completes), one
/// fsync already under way when the wave starts and one that covers the
/// rest of it.
#[test]
fn thousands_of_tasks_share_group_commits_and_survive_reopen() {
    const TASKS: usize = 4_000;
    let dir = tempfile::tempdir().unwrap();
    let idle = Arc::new(Idle {
        tasks: TASKS,
        parked: AtomicIsize::new(0),
        done: AtomicUsize::new(0),
    });
    let gate = Arc::new(Gate {
        armed: AtomicBool::new(false),
        idle: idle.clone(),
        stuck: AtomicBool::new(false),
    });
    let held = gate.clone();
    let disk = Arc::new(SyncHooked::new(move || {
        held.hold();
        Ok(())
    }));
    let store = Options::new().storage(disk).open(dir.path()).unwrap();
    let before = store.stats().fsyncs;
    gate.armed.store(true, Ordering::SeqCst);
    let effects = Arc::new(AtomicUsize::new(0));
    runtime().block_on(async {
        let mut tasks = Vec::new();
        for i in 0..TASKS {
            let (store, effects) = (store.clone(), effects.clone());
            // Every key is claimed by two tasks: one runs the effect.
            let key = format!("t1:POST /orders:{}", i / 2);
            let task = async move {
                let fp = Fingerprint::of(key.as_bytes());
                match store
                    .claim_wait_async(&key, fp, Duration::from_secs(600))
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
            };
            tasks.push(tokio::spawn(assert_send(Tracked {
                fut: Box::pin(task),
                state: Arc::new(AtomicU8::new(RUNNING)),
                idle: idle.clone(),
            })));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
    });
    gate.armed.store(false, Ordering::SeqCst);
    assert!(
        !gate.stuck.load(Ordering::SeqCst),
        "an fsync waited two minutes for the tasks to go idle"
    );
    assert_eq!(
        effects.load(Ordering::SeqCst),
        TASKS / 2,
        "one effect per key"
    );
    // 4,000 durable writes (2,000 claims, 2,000 completes) in two streams.
    let fsyncs = store.stats().fsyncs - before;
    println!("{fsyncs} fsyncs for {TASKS} durable writes");
    assert!(
        (2..=8).contains(&fsyncs),
        "{fsyncs} fsyncs for {TASKS} durable writes"
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
