//! Leases and fencing: once an in-progress claim's lease passes, the next
//! claim takes the key over with a strictly higher generation, and the old
//! ticket's `complete`, `release` and `extend_lease` are refused with
//! `LeaseLost` and change nothing. `extend_lease` moves the lease, `release`
//! gives the key back, and `remove` fences out the ticket of the key it purges.

mod common;

use common::{
    LEASE_MS, RETENTION_MS, START_MS, acquire, assert_replays, dir_and_clock, fp, fresh_store, open,
};
use idemkv::{Claim, Error, Fingerprint, ManualClock, Record, Store, Ticket};
use std::time::Duration;

fn in_progress(claimed_at_ms: u64, lease_expires_at_ms: u64) -> Option<Record> {
    Some(Record::InProgress {
        fingerprint: fp(),
        claimed_at_ms,
        lease_expires_at_ms,
    })
}

fn assert_lease_lost<T: std::fmt::Debug>(result: idemkv::Result<T>) {
    match result {
        Err(Error::LeaseLost) => {}
        other => panic!("expected LeaseLost, got {other:?}"),
    }
}

/// Claims "k" at START_MS, moves past the lease and takes it over.
fn taken_over(store: &Store, clock: &ManualClock) -> (Ticket, Ticket) {
    let old = acquire(store, "k");
    clock.set_ms(START_MS + LEASE_MS + 10);
    let new = acquire(store, "k");
    (old, new)
}

#[test]
fn claim_before_the_lease_ends_is_in_progress() {
    let (_dir, clock, store) = fresh_store();
    let t = acquire(&store, "k");
    assert_eq!(t.claimed_at_ms(), START_MS);
    assert_eq!(t.lease_expires_at_ms(), START_MS + LEASE_MS);
    clock.set_ms(START_MS + LEASE_MS - 1);
    match store.claim("k", fp()).unwrap() {
        Claim::InProgress {
            lease_expires_at_ms,
        } => assert_eq!(lease_expires_at_ms, START_MS + LEASE_MS),
        other => panic!("lease still running, got {other:?}"),
    }
    assert_eq!(store.stats().takeovers, 0);
    store.complete(t, b"done").unwrap();
}

#[test]
fn claim_after_the_lease_takes_over_with_a_higher_generation() {
    let (_dir, clock, store) = fresh_store();
    let first = acquire(&store, "k");
    // The lease has passed at exactly its end.
    clock.set_ms(START_MS + LEASE_MS);
    let second = acquire(&store, "k");
    assert!(
        second.generation() > first.generation(),
        "takeover generation {} must exceed {}",
        second.generation(),
        first.generation()
    );
    assert_eq!(second.claimed_at_ms(), START_MS + LEASE_MS);
    assert_eq!(second.lease_expires_at_ms(), START_MS + 2 * LEASE_MS);
    let stats = store.stats();
    assert_eq!(stats.takeovers, 1);
    assert_eq!(stats.acquired, 2);

    // The new owner's lease is fresh: a claim now is in progress.
    assert!(matches!(
        store.claim("k", fp()).unwrap(),
        Claim::InProgress { lease_expires_at_ms } if lease_expires_at_ms == START_MS + 2 * LEASE_MS
    ));

    // And a chain of takeovers keeps raising the generation.
    clock.set_ms(START_MS + 2 * LEASE_MS);
    let third = acquire(&store, "k");
    assert!(third.generation() > second.generation());
    assert_eq!(store.stats().takeovers, 2);
    assert_lease_lost(store.complete(first, b"first"));
    assert_lease_lost(store.complete(second, b"second"));
    store.complete(third, b"third").unwrap();
    assert_replays(&store, "k", b"third");
}

#[test]
fn stale_complete_is_lease_lost_and_changes_nothing() {
    let (_dir, clock, store) = fresh_store();
    let (old, new) = taken_over(&store, &clock);
    let before = store.get("k").unwrap();
    assert_eq!(
        before,
        in_progress(START_MS + LEASE_MS + 10, START_MS + 2 * LEASE_MS + 10)
    );
    let appended = store.stats().bytes_appended;

    assert_lease_lost(store.complete(old, b"stale answer"));

    assert_eq!(store.get("k").unwrap(), before);
    assert_eq!(
        store.stats().bytes_appended,
        appended,
        "nothing was written"
    );
    assert_eq!(store.stats().lease_lost, 1);
    assert!(matches!(
        store.claim("k", fp()).unwrap(),
        Claim::InProgress { .. }
    ));
    store.complete(new, b"fresh answer").unwrap();
    assert_replays(&store, "k", b"fresh answer");
}

#[test]
fn stale_complete_with_retention_is_lease_lost() {
    let (_dir, clock, store) = fresh_store();
    let (old, new) = taken_over(&store, &clock);
    let before = store.get("k").unwrap();
    assert_lease_lost(store.complete_with_retention(old, b"stale", Duration::from_secs(1)));
    assert_eq!(store.get("k").unwrap(), before);
    store.complete(new, b"fresh").unwrap();
}

#[test]
fn stale_release_is_lease_lost_and_changes_nothing() {
    let (_dir, clock, store) = fresh_store();
    let (old, new) = taken_over(&store, &clock);
    let before = store.get("k").unwrap();

    assert_lease_lost(store.release(old));

    assert_eq!(
        store.get("k").unwrap(),
        before,
        "the new claim is not released"
    );
    assert_eq!(store.stats().releases, 0);
    assert_eq!(store.stats().lease_lost, 1);
    store.complete(new, b"fresh answer").unwrap();
    assert_replays(&store, "k", b"fresh answer");
}

#[test]
fn stale_extend_lease_is_lease_lost_and_changes_nothing() {
    let (_dir, clock, store) = fresh_store();
    let (old, new) = taken_over(&store, &clock);
    let before = store.get("k").unwrap();
    let old_lease = old.lease_expires_at_ms();

    assert_lease_lost(store.extend_lease(&old, Duration::from_secs(3600)));

    assert_eq!(store.get("k").unwrap(), before, "the lease did not move");
    assert_eq!(old.lease_expires_at_ms(), old_lease);
    assert_eq!(store.stats().lease_extensions, 0);
    // The new owner's lease still ends where it did: at its end, a claim
    // takes over again.
    clock.set_ms(new.lease_expires_at_ms());
    let third = acquire(&store, "k");
    assert!(third.generation() > new.generation());
    assert_lease_lost(store.complete(new, b"too late"));
    assert_lease_lost(store.complete(old, b"far too late"));
    store.complete(third, b"third").unwrap();
}

#[test]
fn stale_ticket_after_the_new_owner_completed_is_lease_lost() {
    let (_dir, clock, store) = fresh_store();
    let (old, new) = taken_over(&store, &clock);
    store.complete(new, b"winner").unwrap();
    let before = store.get("k").unwrap();
    assert_lease_lost(store.extend_lease(&old, Duration::from_secs(5)));
    assert_lease_lost(store.complete(old, b"loser"));
    assert_eq!(store.get("k").unwrap(), before);
    assert_replays(&store, "k", b"winner");
}

#[test]
fn stale_ticket_after_takeover_across_reopen_is_lease_lost() {
    let (dir, clock, store) = fresh_store();
    let old = acquire(&store, "k");
    drop(store);
    clock.set_ms(START_MS + LEASE_MS);
    let store = open(dir.path(), &clock);
    let new = acquire(&store, "k");
    assert!(new.generation() > old.generation());
    assert_eq!(store.stats().takeovers, 1);
    assert_lease_lost(store.release(old));
    store.complete(new, b"after reopen").unwrap();
}

#[test]
fn late_complete_without_takeover_is_accepted() {
    let (_dir, clock, store) = fresh_store();
    let t = acquire(&store, "k");
    clock.set_ms(START_MS + LEASE_MS + RETENTION_MS / 2);
    store.complete(t, b"late").unwrap();
    assert_replays(&store, "k", b"late");
    assert_eq!(store.stats().lease_lost, 0);
}

#[test]
fn extend_lease_moves_the_lease() {
    let (_dir, clock, store) = fresh_store();
    let t = acquire(&store, "k");
    clock.set_ms(START_MS + 500);
    let new_end = store
        .extend_lease(&t, Duration::from_millis(2_000))
        .unwrap();
    assert_eq!(new_end, START_MS + 2_500);
    assert_eq!(t.lease_expires_at_ms(), START_MS + 2_500);
    assert_eq!(t.claimed_at_ms(), START_MS);
    assert_eq!(
        store.get("k").unwrap(),
        in_progress(START_MS, START_MS + 2_500)
    );

    // Past the original lease, before the new end: still in progress.
    clock.set_ms(START_MS + LEASE_MS);
    assert!(matches!(
        store.claim("k", fp()).unwrap(),
        Claim::InProgress { lease_expires_at_ms } if lease_expires_at_ms == START_MS + 2_500
    ));
    clock.set_ms(START_MS + 2_499);
    assert!(matches!(
        store.claim("k", fp()).unwrap(),
        Claim::InProgress { .. }
    ));
    assert_eq!(store.stats().takeovers, 0);
    assert_eq!(store.stats().lease_extensions, 1);

    // At the new end the lease has passed.
    clock.set_ms(START_MS + 2_500);
    let next = acquire(&store, "k");
    assert!(next.generation() > t.generation());
    assert_lease_lost(store.extend_lease(&t, Duration::from_secs(1)));
    store.complete(next, b"next").unwrap();
}

#[test]
fn extend_lease_after_the_lease_passed_without_takeover_is_accepted() {
    let (_dir, clock, store) = fresh_store();
    let t = acquire(&store, "k");
    clock.set_ms(START_MS + LEASE_MS + 100);
    let end = store
        .extend_lease(&t, Duration::from_millis(LEASE_MS))
        .unwrap();
    assert_eq!(end, START_MS + 2 * LEASE_MS + 100);
    assert!(matches!(
        store.claim("k", fp()).unwrap(),
        Claim::InProgress { lease_expires_at_ms } if lease_expires_at_ms == end
    ));
    store.complete(t, b"done").unwrap();
}

#[test]
fn extended_lease_survives_reopen() {
    let (dir, clock, store) = fresh_store();
    let t = acquire(&store, "k");
    store
        .extend_lease(&t, Duration::from_millis(5 * LEASE_MS))
        .unwrap();
    drop(store);
    clock.set_ms(START_MS + 2 * LEASE_MS);
    let store = open(dir.path(), &clock);
    assert_eq!(
        store.get("k").unwrap(),
        in_progress(START_MS, START_MS + 5 * LEASE_MS)
    );
    assert!(matches!(
        store.claim("k", fp()).unwrap(),
        Claim::InProgress { lease_expires_at_ms } if lease_expires_at_ms == START_MS + 5 * LEASE_MS
    ));
    // The ticket still owns the key after the reopen.
    store.complete(t, b"long work").unwrap();
}

#[test]
fn release_makes_the_key_absent_and_the_next_claim_acquires() {
    let (dir, clock, store) = fresh_store();
    let t = acquire(&store, "k");
    let g1 = t.generation();
    store.release(t).unwrap();
    assert_eq!(store.get("k").unwrap(), None);
    assert_eq!(store.stats().releases, 1);

    // Immediately acquirable, by any fingerprint, without a takeover.
    let t2 = match store.claim("k", Fingerprint::of(b"retry")).unwrap() {
        Claim::Acquired(t) => t,
        other => panic!("a released key is acquired, got {other:?}"),
    };
    assert!(t2.generation() > g1);
    assert_eq!(store.stats().takeovers, 0);
    store.complete(t2, b"second try").unwrap();

    // Released keys stay absent across a reopen.
    let t3 = acquire(&store, "r");
    store.release(t3).unwrap();
    drop(store);
    let store = open(dir.path(), &clock);
    assert_eq!(store.get("r").unwrap(), None);
    drop(acquire(&store, "r"));
}

#[test]
fn release_after_the_lease_passed_without_takeover_is_accepted() {
    let (_dir, clock, store) = fresh_store();
    let t = acquire(&store, "k");
    clock.set_ms(START_MS + 3 * LEASE_MS);
    store.release(t).unwrap();
    assert_eq!(store.get("k").unwrap(), None);
}

#[test]
fn remove_of_an_in_progress_key_makes_its_ticket_lease_lost() {
    let (_dir, _, store) = fresh_store();

    let t = acquire(&store, "k");
    assert!(store.remove("k").unwrap());
    assert_eq!(store.get("k").unwrap(), None);
    assert_lease_lost(store.extend_lease(&t, Duration::from_secs(1)));
    assert_lease_lost(store.complete(t, b"after remove"));
    assert_eq!(
        store.get("k").unwrap(),
        None,
        "the refused complete wrote nothing"
    );

    let t = acquire(&store, "k2");
    assert!(store.remove("k2").unwrap());
    assert_lease_lost(store.release(t));

    // A ticket for a removed key must not touch the key's next owner.
    let t = acquire(&store, "k3");
    assert!(store.remove("k3").unwrap());
    let next = acquire(&store, "k3");
    assert!(next.generation() > t.generation());
    let before = store.get("k3").unwrap();
    assert_lease_lost(store.complete(t, b"old owner"));
    assert_eq!(store.get("k3").unwrap(), before);
    store.complete(next, b"new owner").unwrap();

    let stats = store.stats();
    assert_eq!(stats.removes, 3);
    assert_eq!(stats.lease_lost, 4);
    assert_eq!(stats.completes, 1);
}

#[test]
fn remove_fences_the_ticket_across_reopen() {
    let (dir, clock, store) = fresh_store();
    let t = acquire(&store, "k");
    assert!(store.remove("k").unwrap());
    drop(store);
    let store = open(dir.path(), &clock);
    assert_eq!(store.get("k").unwrap(), None);
    assert_lease_lost(store.complete(t, b"after remove and reopen"));
}

/// A ticket whose claim has expired entirely (lease and then retention
/// passed, nobody took it over) must get the same answer whether or not the
/// store was reopened in between: the key is absent either way, so the
/// outcome must not depend on whether the expired entry was still cached in
/// memory.
#[test]
fn ticket_of_an_expired_claim_answers_the_same_with_or_without_reopen() {
    let outcome = |reopen: bool| {
        let (dir, clock) = dir_and_clock();
        let mut store = open(dir.path(), &clock);
        let t = acquire(&store, "k");
        clock.set_ms(START_MS + LEASE_MS + RETENTION_MS);
        assert_eq!(store.get("k").unwrap(), None, "the expired claim is absent");
        if reopen {
            drop(store);
            store = open(dir.path(), &clock);
        }
        let result = store.complete(t, b"very late");
        let ok = match result {
            Ok(()) => true,
            Err(Error::LeaseLost) => false,
            Err(e) => panic!("unexpected error {e}"),
        };
        (ok, store.get("k").unwrap())
    };
    let without = outcome(false);
    let with = outcome(true);
    assert_eq!(
        without, with,
        "complete of an expired claim: without reopen {without:?}, after reopen {with:?}"
    );
}
