//! `claim_wait`: a caller that meets a key in progress waits for the owner
//! instead of answering 409, and wakes for every way the claim can end.

use idemkv::{Claim, Clock, Durability, Fingerprint, ManualClock, Options, Store};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use tempfile::TempDir;

const LONG: Duration = Duration::from_secs(60);

fn store(lease: Duration) -> (TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Options::new()
        .lease(lease)
        .background_compaction(false)
        .open(dir.path())
        .unwrap();
    (dir, store)
}

fn acquire(store: &Store, key: &str, fp: Fingerprint) -> idemkv::Ticket {
    match store.claim(key, fp).unwrap() {
        Claim::Acquired(t) => t,
        other => panic!("a fresh key is acquired, got {other:?}"),
    }
}

fn spawn_waiter(store: &Store, key: &str, fp: Fingerprint, timeout: Duration) -> JoinHandle<Claim> {
    let (store, key) = (store.clone(), key.to_owned());
    std::thread::spawn(move || store.claim_wait(&key, fp, timeout).unwrap())
}

/// Returns once `n` callers have found the key in progress and gone to
/// sleep in `claim_wait` (each registered before it looked), so the test's
/// next write is certain to land while they wait rather than before they look.
fn until_waiting(store: &Store, n: u64) {
    while store.stats().claim_waits < n {
        std::thread::yield_now();
    }
}

#[test]
fn owner_completes_and_every_waiter_replays_it() {
    let (_dir, store) = store(LONG);
    let fp = Fingerprint::of(b"charge 5");
    let ticket = acquire(&store, "k", fp);
    let waiters: Vec<_> = (0..8)
        .map(|_| spawn_waiter(&store, "k", fp, LONG))
        .collect();
    until_waiting(&store, 8);
    store.complete(ticket, b"201 ch_1").unwrap();
    for w in waiters {
        match w.join().unwrap() {
            Claim::Replay(done) => assert_eq!(done.response(), b"201 ch_1"),
            other => panic!("a waiter replays the owner's response, got {other:?}"),
        }
    }
    let stats = store.stats();
    assert_eq!(stats.waiting, 0);
    assert!(stats.claim_waits >= 8, "{stats:?}");
    assert_eq!(stats.acquired, 1, "only the owner ever ran the side effect");
}

#[test]
fn owner_releases_and_exactly_one_waiter_acquires() {
    let (_dir, store) = store(LONG);
    let fp = Fingerprint::of(b"order");
    let ticket = acquire(&store, "k", fp);
    let (tx, rx) = std::sync::mpsc::channel();
    for _ in 0..4 {
        let (store, tx) = (store.clone(), tx.clone());
        std::thread::spawn(move || tx.send(store.claim_wait("k", fp, LONG).unwrap()));
    }
    until_waiting(&store, 4);
    store.release(ticket).unwrap();
    // The others keep waiting, now on the new owner, so the first answer
    // to arrive is the one acquisition.
    let new_owner = match rx.recv().unwrap() {
        Claim::Acquired(t) => t,
        other => panic!("a released key goes to one waiter, got {other:?}"),
    };
    store.complete(new_owner, b"made by a waiter").unwrap();
    for _ in 0..3 {
        match rx.recv().unwrap() {
            Claim::Replay(done) => assert_eq!(done.response(), b"made by a waiter"),
            other => panic!("the other waiters replay the new owner's answer, got {other:?}"),
        }
    }
    assert_eq!(store.stats().acquired, 2);
}

#[test]
fn removed_key_is_acquired_by_the_waiter() {
    let (_dir, store) = store(LONG);
    let fp = Fingerprint::of(b"x");
    let _ticket = acquire(&store, "k", fp);
    let w = spawn_waiter(&store, "k", fp, LONG);
    until_waiting(&store, 1);
    assert!(store.remove("k").unwrap());
    assert!(matches!(w.join().unwrap(), Claim::Acquired(_)));
}

#[test]
fn lease_end_hands_the_key_to_the_waiter() {
    let (_dir, store) = store(Duration::from_millis(150));
    let fp = Fingerprint::of(b"slow");
    let stale = acquire(&store, "k", fp);
    let w = spawn_waiter(&store, "k", fp, LONG);
    let new_owner = match w.join().unwrap() {
        Claim::Acquired(t) => t,
        other => panic!("the lease passed, so the waiter takes over, got {other:?}"),
    };
    assert!(new_owner.generation() > stale.generation());
    assert_eq!(store.stats().takeovers, 1);
    assert!(matches!(
        store.complete(stale, b"late"),
        Err(idemkv::Error::LeaseLost)
    ));
    store.complete(new_owner, b"fresh").unwrap();
}

#[test]
fn timeout_answers_in_progress_with_the_lease_end() {
    let (_dir, store) = store(LONG);
    let fp = Fingerprint::of(b"y");
    let ticket = acquire(&store, "k", fp);
    let answer = store
        .claim_wait("k", fp, Duration::from_millis(50))
        .unwrap();
    match answer {
        Claim::InProgress {
            lease_expires_at_ms,
        } => assert_eq!(lease_expires_at_ms, ticket.lease_expires_at_ms()),
        other => panic!("the owner holds the key past the timeout, got {other:?}"),
    }
    assert_eq!(store.stats().waiting, 0, "a timed-out waiter unregisters");
    // A zero timeout is a plain claim.
    assert!(matches!(
        store.claim_wait("k", fp, Duration::ZERO).unwrap(),
        Claim::InProgress { .. }
    ));
}

/// The waiter sleeps through the original lease end when the owner extends
/// its lease. The clock is a manual one and no sleep depends on real time:
/// the only looks the waiter takes after it first sleeps are those the
/// owner's writes trigger, so the outcome does not depend on how fast the
/// machine runs.
#[test]
fn extended_lease_keeps_the_waiter_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let store = Options::new()
        .lease(LONG)
        .clock(clock.clone())
        .background_compaction(false)
        .open(dir.path())
        .unwrap();
    let fp = Fingerprint::of(b"z");
    let ticket = acquire(&store, "k", fp);
    let w = spawn_waiter(&store, "k", fp, LONG);
    until_waiting(&store, 1);
    // The original lease passes while the waiter sleeps (its own retry is a
    // minute of real time away), then the late owner extends its lease:
    // that write wakes the waiter, which must find the extended lease and
    // sleep again rather than take the key over.
    clock.advance(LONG + Duration::from_secs(1));
    let until = store.extend_lease(&ticket, LONG).unwrap();
    assert_eq!(until, clock.now_ms() + 60_000);
    until_waiting(&store, 2);
    assert_eq!(store.stats().takeovers, 0, "the extended lease holds");
    store.complete(ticket, b"done").unwrap();
    match w.join().unwrap() {
        Claim::Replay(done) => assert_eq!(done.response(), b"done"),
        other => panic!("the waiter waited for the owner, got {other:?}"),
    }
    assert_eq!(store.stats().takeovers, 0);
}

#[test]
fn other_answers_return_at_once() {
    let (_dir, store) = store(LONG);
    let fp = Fingerprint::of(b"a");
    let ticket = acquire(&store, "k", fp);
    assert!(matches!(
        store.claim_wait("k", Fingerprint::of(b"b"), LONG).unwrap(),
        Claim::Mismatch
    ));
    store.complete(ticket, b"r").unwrap();
    assert!(matches!(
        store.claim_wait("k", fp, LONG).unwrap(),
        Claim::Replay(_)
    ));
    assert!(matches!(
        store.claim_wait("fresh", fp, LONG).unwrap(),
        Claim::Acquired(_)
    ));
    assert!(matches!(
        store.claim_wait("", fp, LONG),
        Err(idemkv::Error::EmptyKey)
    ));
    assert_eq!(store.stats().claim_waits, 0, "nobody had to wait");
}

#[test]
fn waiters_in_every_durability_mode_see_the_completion() {
    for durability in [
        Durability::Immediate,
        Durability::Periodic(Duration::from_millis(5)),
        Durability::None,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let store = Options::new()
            .durability(durability)
            .open(dir.path())
            .unwrap();
        let fp = Fingerprint::of(b"m");
        let ticket = acquire(&store, "k", fp);
        let w = spawn_waiter(&store, "k", fp, LONG);
        until_waiting(&store, 1);
        store.complete(ticket, b"ok").unwrap();
        assert!(
            matches!(w.join().unwrap(), Claim::Replay(ref d) if d.response() == b"ok"),
            "{durability:?}"
        );
    }
}
