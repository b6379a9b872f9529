//! After an fsync fails the store is poisoned: the failing operation returns
//! an error, every later write returns `Error::Poisoned` (even once the disk
//! recovers: the store refuses rather than retries), `stats().poisoned` is
//! true, reads of durable records still work, and reopening the directory
//! recovers everything acknowledged before the failure.

use idemkv::storage::{DirLock, FsStorage, SealedBytes, Storage, StorageFile};
use idemkv::{Claim, Durability, Error, Fingerprint, ManualClock, Options, Record, Seen, Store};
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

/// The real file system, except that every `sync_data` fails while the
/// switch is on.
#[derive(Default)]
struct FailingSync {
    fail: Arc<AtomicBool>,
    failures: Arc<AtomicU64>,
}

impl FailingSync {
    fn flip(&self, on: bool) {
        self.fail.store(on, Ordering::SeqCst);
    }
    fn failures(&self) -> u64 {
        self.failures.load(Ordering::SeqCst)
    }
    fn wrap(&self, inner: Arc<dyn StorageFile>) -> Arc<dyn StorageFile> {
        Arc::new(FailingFile {
            inner,
            fail: self.fail.clone(),
            failures: self.failures.clone(),
        })
    }
}

impl Storage for FailingSync {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        FsStorage.create_dir_all(dir)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        FsStorage.list(dir)
    }
    fn open(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        FsStorage.open(path).map(|f| self.wrap(f))
    }
    fn create(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        FsStorage.create(path).map(|f| self.wrap(f))
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        FsStorage.remove(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        FsStorage.rename(from, to)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        FsStorage.sync_dir(dir)
    }
    fn lock_dir(&self, dir: &Path) -> io::Result<DirLock> {
        FsStorage.lock_dir(dir)
    }
}

struct FailingFile {
    inner: Arc<dyn StorageFile>,
    fail: Arc<AtomicBool>,
    failures: Arc<AtomicU64>,
}

impl StorageFile for FailingFile {
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.inner.read_exact_at(offset, buf)
    }
    fn write_all_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.inner.write_all_at(offset, data)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        if self.fail.load(Ordering::SeqCst) {
            self.failures.fetch_add(1, Ordering::SeqCst);
            return Err(io::Error::other("injected fsync failure"));
        }
        self.inner.sync_data()
    }
    fn map(&self) -> io::Result<SealedBytes> {
        self.inner.map()
    }
}

const START_MS: u64 = 1_000_000;

fn fp() -> Fingerprint {
    Fingerprint::of(b"req")
}

fn open(
    dir: &Path,
    storage: &Arc<FailingSync>,
    clock: &Arc<ManualClock>,
    durability: Durability,
) -> Store {
    Options::new()
        .storage(storage.clone())
        .clock(clock.clone())
        .durability(durability)
        .segment_size(4096)
        .max_response_len(1024)
        .open(dir)
        .unwrap()
}

fn acquire(store: &Store, key: &str) -> idemkv::Ticket {
    match store.claim(key, fp()).unwrap() {
        Claim::Acquired(t) => t,
        other => panic!("expected Acquired for {key}, got {other:?}"),
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
fn acknowledged_work(store: &Store) -> idemkv::Ticket {
    for i in 0..10 {
        let t = acquire(store, &format!("done-{i}"));
        store.complete(t, &[i as u8; 600]).unwrap();
    }
    assert_eq!(
        store.mark_seen("msg", Duration::from_secs(60)).unwrap(),
        Seen::First
    );
    acquire(store, "held")
}

fn assert_acknowledged_work_recovered(store: &Store) {
    for i in 0..10 {
        match store.claim(format!("done-{i}"), fp()).unwrap() {
            Claim::Replay(c) => assert_eq!(c.response(), [i as u8; 600]),
            other => panic!("done-{i} was acknowledged, got {other:?}"),
        }
    }
    assert_eq!(
        store.mark_seen("msg", Duration::from_secs(60)).unwrap(),
        Seen::Duplicate
    );
    assert!(matches!(
        store.get("held").unwrap(),
        Some(Record::InProgress { fingerprint, .. }) if fingerprint == fp()
    ));
}

#[test]
fn failed_fsync_poisons_every_later_write_and_reopen_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Arc::new(FailingSync::default());
    let clock = Arc::new(ManualClock::new(START_MS));
    let store = open(dir.path(), &storage, &clock, Durability::Immediate);
    let held = acknowledged_work(&store);
    let held2 = acquire(&store, "held-2");
    assert!(store.stats().segments > 1);
    assert!(!store.stats().poisoned);

    storage.flip(true);
    let first = store.claim("new-key", fp());
    assert!(
        first.is_err(),
        "a claim whose fsync failed must not be acknowledged: {first:?}"
    );
    assert!(storage.failures() >= 1);
    assert!(store.stats().poisoned);

    // Every write is refused from now on, even after the disk recovers.
    for disk_ok in [false, true] {
        storage.flip(!disk_ok);
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
    assert!(matches!(
        store.claim("done-3", fp()).unwrap(),
        Claim::Replay(c) if c.response() == [3u8; 600]
    ));

    drop(store);
    storage.flip(false);
    let store = open(dir.path(), &storage, &clock, Durability::Immediate);
    assert!(!store.stats().poisoned);
    assert_acknowledged_work_recovered(&store);
    assert!(matches!(
        store.get("held-2").unwrap(),
        Some(Record::InProgress { .. })
    ));
    // None of the refused writes happened.
    assert_eq!(store.get("another").unwrap(), None);
    assert_eq!(store.get("new-msg").unwrap(), None);
    // The reopened store accepts writes again.
    let t = acquire(&store, "after-reopen");
    store.complete(t, b"fine").unwrap();
    drop(store);
    // The plain file system reads what was written through the wrapper.
    let store = Options::new()
        .clock(clock.clone())
        .segment_size(4096)
        .max_response_len(1024)
        .open(dir.path())
        .unwrap();
    assert!(matches!(
        store.claim("after-reopen", fp()).unwrap(),
        Claim::Replay(c) if c.response() == b"fine"
    ));
}

#[test]
fn failed_complete_fsync_poisons() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Arc::new(FailingSync::default());
    let clock = Arc::new(ManualClock::new(START_MS));
    let store = open(dir.path(), &storage, &clock, Durability::Immediate);
    let held = acknowledged_work(&store);
    storage.flip(true);
    assert!(store.complete(held, b"response").is_err());
    assert!(store.stats().poisoned);
    assert_poisoned("claim", store.claim("x", fp()));
    assert_poisoned("mark_seen", store.mark_seen("y", Duration::from_secs(1)));
    drop(store);
    storage.flip(false);
    let store = open(dir.path(), &storage, &clock, Durability::Immediate);
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
    for durability in [
        Durability::Immediate,
        Durability::Periodic(Duration::from_secs(3600)),
        Durability::None,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let storage = Arc::new(FailingSync::default());
        let clock = Arc::new(ManualClock::new(START_MS));
        let store = open(dir.path(), &storage, &clock, durability);
        let held = acknowledged_work(&store);
        store.sync().unwrap();

        storage.flip(true);
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
        drop(store);

        storage.flip(false);
        let store = open(dir.path(), &storage, &clock, durability);
        assert_acknowledged_work_recovered(&store);
        assert_eq!(store.get("later").unwrap(), None);
    }
}

#[test]
fn failed_fsync_at_rollover_poisons() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Arc::new(FailingSync::default());
    let clock = Arc::new(ManualClock::new(START_MS));
    let store = open(dir.path(), &storage, &clock, Durability::None);
    let held = acknowledged_work(&store);
    store.sync().unwrap();
    let segments = store.stats().segments;

    storage.flip(true);
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
    drop(store);

    storage.flip(false);
    let store = open(dir.path(), &storage, &clock, Durability::None);
    assert_acknowledged_work_recovered(&store);
}

#[test]
fn concurrent_writers_all_see_the_failure() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Arc::new(FailingSync::default());
    let clock = Arc::new(ManualClock::new(START_MS));
    let store = open(dir.path(), &storage, &clock, Durability::Immediate);
    let held = acknowledged_work(&store);
    storage.flip(true);

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
    drop(store);
    storage.flip(false);
    let store = open(dir.path(), &storage, &clock, Durability::Immediate);
    assert_acknowledged_work_recovered(&store);
}

#[test]
fn poisoned_error_says_what_to_do() {
    let text = Error::Poisoned.to_string();
    assert!(text.contains("open"), "{text}");
    assert_ne!(text, format!("{:?}", Error::Poisoned));
}
