//! After an fsync fails the store is poisoned: the failing operation returns
//! an error, every later write returns `Error::Poisoned` (even once the disk
//! recovers: the store refuses rather than retries), `stats().poisoned` is
//! true, reads of durable records still work, and reopening the directory
//! recovers everything acknowledged before the failure.

mod common;

use common::{
    SyncHooked, acquire, assert_in_progress, assert_mark_seen, assert_replays, complete_new,
    dir_and_clock, durability_modes, fp, small_segments,
};
use idemkv::{Claim, Durability, Error, ManualClock, Options, Record, Seen, Store, Ticket};
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;
use tempfile::TempDir;

/// The real file system, except that every `sync_data` fails while the
/// switch is on.
struct FailingSync {
    fail: Arc<AtomicBool>,
    failures: Arc<AtomicU64>,
    storage: Arc<SyncHooked>,
}

impl Default for FailingSync {
    fn default() -> Self {
        let (fail, failures) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
        );
        let (f, n) = (fail.clone(), failures.clone());
        let storage = Arc::new(SyncHooked::new(move || {
            if f.load(Ordering::SeqCst) {
                n.fetch_add(1, Ordering::SeqCst);
                return Err(io::Error::other("injected fsync failure"));
            }
            Ok(())
        }));
        FailingSync {
            fail,
            failures,
            storage,
        }
    }
}

impl FailingSync {
    fn flip(&self, on: bool) {
        self.fail.store(on, Ordering::SeqCst);
    }
    fn failures(&self) -> u64 {
        self.failures.load(Ordering::SeqCst)
    }
}

/// A scratch directory on the fsync-failing file system, and a manual clock.
struct Rig {
    dir: TempDir,
    storage: Arc<FailingSync>,
    clock: Arc<ManualClock>,
}

impl Rig {
    /// A rig whose store, opened with `durability`, holds the acknowledged
    /// work; returns it with the store and the ticket of "held".
    fn with_acknowledged_work(durability: Durability) -> (Rig, Store, Ticket) {
        let (dir, clock) = dir_and_clock();
        let rig = Rig {
            dir,
            storage: Arc::new(FailingSync::default()),
            clock,
        };
        let store = rig.open(durability);
        let held = acknowledged_work(&store);
        (rig, store, held)
    }

    /// Drops `store`, lets the disk work again, and reopens the directory.
    fn reopen_healed(&self, store: Store, durability: Durability) -> Store {
        drop(store);
        self.storage.flip(false);
        self.open(durability)
    }

    fn open(&self, durability: Durability) -> Store {
        small_segments(
            Options::new()
                .storage(self.storage.storage.clone())
                .clock(self.clock.clone())
                .durability(durability),
        )
        .open(self.dir.path())
        .unwrap()
    }
}

#[track_caller]
fn assert_poisoned<T: std::fmt::Debug>(what: &str, result: idemkv::Result<T>) {
    match result {
        Err(Error::Poisoned) => {}
        other => panic!("{what}: expected Poisoned, got {other:?}"),
    }
}

/// Writes acknowledged records: completed "done-0".."done-9" (some over the
/// segment boundary), an in-progress "held" whose ticket is returned, and a
/// seen mark "msg".
fn acknowledged_work(store: &Store) -> Ticket {
    for i in 0..10 {
        complete_new(store, format!("done-{i}"), fp(), &[i as u8; 600]);
    }
    assert_mark_seen(store, "msg", Duration::from_secs(60), Seen::First);
    acquire(store, "held")
}

fn assert_acknowledged_work_recovered(store: &Store) {
    for i in 0..10 {
        assert_replays(store, format!("done-{i}"), &[i as u8; 600]);
    }
    assert_mark_seen(store, "msg", Duration::from_secs(60), Seen::Duplicate);
    assert!(matches!(
        store.get("held").unwrap(),
        Some(Record::InProgress { fingerprint, .. }) if fingerprint == fp()
    ));
}

#[test]
fn failed_fsync_poisons_every_later_write_and_reopen_recovers() {
    let (rig, store, held) = Rig::with_acknowledged_work(Durability::Immediate);
    let held2 = acquire(&store, "held-2");
    assert!(store.stats().segments > 1);
    assert!(!store.stats().poisoned);

    rig.storage.flip(true);
    let first = store.claim("new-key", fp());
    assert!(
        first.is_err(),
        "a claim whose fsync failed must not be acknowledged: {first:?}"
    );
    assert!(rig.storage.failures() >= 1);
    assert!(store.stats().poisoned);

    // Every write is refused from now on, even after the disk recovers.
    for disk_ok in [false, true] {
        rig.storage.flip(!disk_ok);
        assert_poisoned("claim of a new key", store.claim("another", fp()));
        assert_poisoned(
            "mark_seen of a new key",
            store.mark_seen("new-msg", Duration::from_secs(1)),
        );
        assert_poisoned(
            "extend_lease",
            store.extend_lease(&held, Duration::from_secs(1)),
        );
        assert_poisoned("remove", store.remove("done-0"));
        assert_poisoned("sync", store.sync());
        assert!(store.stats().poisoned);
    }
    assert_poisoned("complete", store.complete(held, b"too late"));
    assert_poisoned("release", store.release(held2));

    // Reads of durable records still work.
    match store.get("done-3").unwrap() {
        Some(Record::Completed(c)) => assert_eq!(c.response(), [3u8; 600]),
        other => panic!("{other:?}"),
    }
    assert_replays(&store, "done-3", &[3u8; 600]);

    let store = rig.reopen_healed(store, Durability::Immediate);
    assert!(!store.stats().poisoned);
    assert_acknowledged_work_recovered(&store);
    assert_in_progress(&store, "held-2");
    // None of the refused writes happened.
    assert_eq!(store.get("another").unwrap(), None);
    assert_eq!(store.get("new-msg").unwrap(), None);
    // The reopened store accepts writes again.
    let t = acquire(&store, "after-reopen");
    store.complete(t, b"fine").unwrap();
    drop(store);
    // The plain file system reads what was written through the wrapper.
    let store = small_segments(Options::new().clock(rig.clock.clone()))
        .open(rig.dir.path())
        .unwrap();
    assert_replays(&store, "after-reopen", b"fine");
}

#[test]
fn failed_complete_fsync_poisons() {
    let (rig, store, held) = Rig::with_acknowledged_work(Durability::Immediate);
    rig.storage.flip(true);
    assert!(store.complete(held, b"response").is_err());
    assert!(store.stats().poisoned);
    assert_poisoned("claim", store.claim("x", fp()));
    assert_poisoned("mark_seen", store.mark_seen("y", Duration::from_secs(1)));
    let store = rig.reopen_healed(store, Durability::Immediate);
    for i in 0..10 {
        assert!(matches!(
            store.claim(format!("done-{i}"), fp()).unwrap(),
            Claim::Replay(_)
        ));
    }
    // "held" is either still in progress or completed: the failed complete
    // was never acknowledged, so both are allowed, but nothing else.
    match store.get("held").unwrap() {
        Some(Record::InProgress { .. }) => {}
        Some(Record::Completed(c)) => assert_eq!(c.response(), b"response"),
        other => panic!("held: {other:?}"),
    }
}

#[test]
fn failed_sync_poisons_in_every_durability_mode() {
    for durability in durability_modes(Duration::from_secs(3600)) {
        let (rig, store, held) = Rig::with_acknowledged_work(durability);
        store.sync().unwrap();

        rig.storage.flip(true);
        let t = match store.claim("unsynced", fp()) {
            Ok(Claim::Acquired(t)) => Some(t),
            Err(_) if durability == Durability::Immediate => None,
            other => panic!("{durability:?}: {other:?}"),
        };
        assert!(store.sync().is_err(), "{durability:?}: sync must fail");
        assert!(store.stats().poisoned, "{durability:?}");
        assert_poisoned("claim", store.claim("later", fp()));
        assert_poisoned(
            "mark_seen",
            store.mark_seen("later-msg", Duration::from_secs(1)),
        );
        assert_poisoned("complete", store.complete(held, b"r"));
        if let Some(t) = t {
            assert_poisoned("release", store.release(t));
        }
        let store = rig.reopen_healed(store, durability);
        assert_acknowledged_work_recovered(&store);
        assert_eq!(store.get("later").unwrap(), None);
    }
}

#[test]
fn failed_fsync_at_rollover_poisons() {
    let (rig, store, held) = Rig::with_acknowledged_work(Durability::None);
    store.sync().unwrap();
    let segments = store.stats().segments;

    rig.storage.flip(true);
    // Durability::None fsyncs only at rollover here: write until one is due.
    let mut failed = None;
    for i in 0..20 {
        match store.claim(format!("fill-{i}"), fp()) {
            Ok(Claim::Acquired(t)) => match store.complete(t, &[0xaa; 900]) {
                Ok(()) => {}
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            },
            Ok(other) => panic!("{other:?}"),
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    let err = failed.expect("a rollover with a failing fsync must fail");
    assert!(
        !matches!(err, Error::Poisoned),
        "the first failure reports the I/O error, got {err:?}"
    );
    assert!(store.stats().poisoned);
    assert_eq!(
        store.stats().segments,
        segments,
        "no new segment after the failure"
    );
    assert_poisoned("claim", store.claim("after", fp()));
    assert_poisoned("complete", store.complete(held, b"x"));
    let store = rig.reopen_healed(store, Durability::None);
    assert_acknowledged_work_recovered(&store);
}

#[test]
fn concurrent_writers_all_see_the_failure() {
    let (rig, store, held) = Rig::with_acknowledged_work(Durability::Immediate);
    rig.storage.flip(true);

    let threads = 8;
    let barrier = Barrier::new(threads);
    std::thread::scope(|s| {
        for n in 0..threads {
            let (store, barrier) = (&store, &barrier);
            s.spawn(move || {
                barrier.wait();
                for i in 0..20 {
                    let r = store.claim(format!("t{n}-k{i}"), fp());
                    assert!(r.is_err(), "no claim is acknowledged after a failed fsync");
                }
            });
        }
    });
    assert!(store.stats().poisoned);
    assert_poisoned("complete", store.complete(held, b"r"));
    let store = rig.reopen_healed(store, Durability::Immediate);
    assert_acknowledged_work_recovered(&store);
}

#[test]
fn poisoned_error_says_what_to_do() {
    let text = Error::Poisoned.to_string();
    assert!(text.contains("open"), "{text}");
    assert_ne!(text, format!("{:?}", Error::Poisoned));
}
