//! A live key claimed with another fingerprint answers `Mismatch`, whatever
//! state the key is in (in progress, in progress with its lease passed,
//! completed, marked seen), before and after a reopen, and the refusal
//! changes nothing. An expired record is absent, so another fingerprint
//! acquires it.

mod common;

use common::{
    LEASE_MS, RETENTION_MS, START_MS, acquire_with, dir_and_clock, durability_modes, fresh_store,
    open,
};
use idemkv::{Claim, Fingerprint, Options, Record, Store};
use std::time::Duration;

fn fp_a() -> Fingerprint {
    Fingerprint::of(b"POST /charges amount=500")
}

fn fp_b() -> Fingerprint {
    Fingerprint::of(b"POST /charges amount=900")
}

fn assert_mismatch(store: &Store, key: &str, fp: Fingerprint) {
    match store.claim(key, fp).unwrap() {
        Claim::Mismatch => {}
        other => panic!("expected Mismatch for {key}, got {other:?}"),
    }
}

#[test]
fn in_progress_key_with_other_fingerprint_is_mismatch() {
    let (_dir, clock, store) = fresh_store();
    let ticket = acquire_with(&store, "k", fp_a());
    let before = store.get("k").unwrap();

    assert_mismatch(&store, "k", fp_b());
    clock.advance(Duration::from_millis(LEASE_MS - 1));
    assert_mismatch(&store, "k", fp_b());

    // The refusal changed nothing: same record, the owner still holds it.
    assert_eq!(store.get("k").unwrap(), before);
    assert!(matches!(
        store.claim("k", fp_a()).unwrap(),
        Claim::InProgress { lease_expires_at_ms } if lease_expires_at_ms == START_MS + LEASE_MS
    ));
    store.complete(ticket, b"ok").unwrap();
    assert_eq!(store.stats().mismatches, 2);
}

#[test]
fn in_progress_key_whose_lease_passed_is_mismatch_not_takeover() {
    let (_dir, clock, store) = fresh_store();
    let ticket = acquire_with(&store, "k", fp_a());

    // Exactly at the lease end the lease has passed: a same-fingerprint
    // claim would take over, but another fingerprint must not.
    clock.set_ms(START_MS + LEASE_MS);
    assert_mismatch(&store, "k", fp_b());
    // Well after the lease, but while the record is still present.
    clock.set_ms(START_MS + LEASE_MS + RETENTION_MS - 1);
    assert_mismatch(&store, "k", fp_b());

    let stats = store.stats();
    assert_eq!(stats.takeovers, 0);
    assert_eq!(stats.acquired, 1);
    assert_eq!(stats.mismatches, 2);
    match store.get("k").unwrap() {
        Some(Record::InProgress {
            fingerprint,
            claimed_at_ms,
            lease_expires_at_ms,
        }) => {
            assert_eq!(fingerprint, fp_a());
            assert_eq!(claimed_at_ms, START_MS);
            assert_eq!(lease_expires_at_ms, START_MS + LEASE_MS);
        }
        other => panic!("expected the original in-progress record, got {other:?}"),
    }
    // No takeover happened, so the original owner's late complete is accepted.
    store.complete(ticket, b"late but first").unwrap();
    assert_mismatch(&store, "k", fp_b());
}

#[test]
fn completed_key_with_other_fingerprint_is_mismatch() {
    let (_dir, clock, store) = fresh_store();
    let t = acquire_with(&store, "k", fp_a());
    store.complete(t, b"201 created").unwrap();

    assert_mismatch(&store, "k", fp_b());
    clock.set_ms(START_MS + RETENTION_MS - 1);
    assert_mismatch(&store, "k", fp_b());
    // A near miss in the raw value is still another fingerprint.
    assert_mismatch(&store, "k", Fingerprint::from_u128(fp_a().as_u128() ^ 1));

    match store.claim("k", fp_a()).unwrap() {
        Claim::Replay(done) => {
            assert_eq!(done.response(), b"201 created");
            assert_eq!(done.fingerprint(), fp_a());
        }
        other => panic!("the original fingerprint replays, got {other:?}"),
    }
    assert_eq!(store.stats().mismatches, 3);
}

#[test]
fn completed_with_custom_retention_and_other_fingerprint_is_mismatch() {
    let (_dir, clock, store) = fresh_store();
    let t = acquire_with(&store, "k", fp_a());
    store
        .complete_with_retention(t, b"kept long", Duration::from_millis(5 * RETENTION_MS))
        .unwrap();
    // Past the store's retention, within the record's own.
    clock.set_ms(START_MS + 3 * RETENTION_MS);
    assert_mismatch(&store, "k", fp_b());
}

#[test]
fn mismatch_is_answered_after_reopen() {
    let (dir, clock) = dir_and_clock();
    {
        let store = open(dir.path(), &clock);
        let t = acquire_with(&store, "done", fp_a());
        store.complete(t, b"r").unwrap();
        let pending = acquire_with(&store, "pending", fp_a());
        drop(pending);
        let lapsed = acquire_with(&store, "lapsed", fp_a());
        drop(lapsed);
    }
    clock.advance(Duration::from_millis(LEASE_MS));
    let store = open(dir.path(), &clock);
    assert_mismatch(&store, "done", fp_b());
    assert_mismatch(&store, "pending", fp_b());
    assert_mismatch(&store, "lapsed", fp_b());
    assert_eq!(store.stats().takeovers, 0);
    // The right fingerprint still sees the stored states.
    assert!(matches!(
        store.claim("done", fp_a()).unwrap(),
        Claim::Replay(c) if c.response() == b"r"
    ));
    assert!(matches!(
        store.claim("pending", fp_a()).unwrap(),
        Claim::Acquired(_)
    ));
}

#[test]
fn mismatch_in_every_durability_mode() {
    for durability in durability_modes(Duration::from_millis(5)) {
        let (dir, clock) = dir_and_clock();
        let store = Options::new()
            .clock(clock.clone())
            .durability(durability)
            .open(dir.path())
            .unwrap();
        let t = acquire_with(&store, "k", fp_a());
        assert_mismatch(&store, "k", fp_b());
        store.complete(t, b"x").unwrap();
        assert_mismatch(&store, "k", fp_b());
    }
}

#[test]
fn expired_completed_key_with_other_fingerprint_is_acquired() {
    let (_dir, clock, store) = fresh_store();
    let t = acquire_with(&store, "k", fp_a());
    store.complete(t, b"old answer").unwrap();

    clock.set_ms(START_MS + RETENTION_MS);
    assert_eq!(store.get("k").unwrap(), None);
    let t = acquire_with(&store, "k", fp_b());
    assert_eq!(t.fingerprint(), fp_b());
    // The new claim is what the key holds now; the old fingerprint is the
    // stranger.
    assert!(matches!(
        store.get("k").unwrap(),
        Some(Record::InProgress { fingerprint, .. }) if fingerprint == fp_b()
    ));
    assert_mismatch(&store, "k", fp_a());
    store.complete(t, b"new answer").unwrap();
    assert!(matches!(
        store.claim("k", fp_b()).unwrap(),
        Claim::Replay(c) if c.response() == b"new answer"
    ));
    assert_eq!(store.stats().mismatches, 1);
}

#[test]
fn expired_custom_retention_key_with_other_fingerprint_is_acquired() {
    let (_dir, clock, store) = fresh_store();
    let t = acquire_with(&store, "k", fp_a());
    store
        .complete_with_retention(t, b"short lived", Duration::from_millis(50))
        .unwrap();
    clock.advance(Duration::from_millis(49));
    assert_mismatch(&store, "k", fp_b());
    clock.advance(Duration::from_millis(1));
    drop(acquire_with(&store, "k", fp_b()));
}

#[test]
fn expired_in_progress_key_with_other_fingerprint_is_acquired() {
    let (_dir, clock, store) = fresh_store();
    drop(acquire_with(&store, "k", fp_a()));
    clock.set_ms(START_MS + LEASE_MS + RETENTION_MS);
    assert_eq!(store.get("k").unwrap(), None);
    drop(acquire_with(&store, "k", fp_b()));
}

#[test]
fn claim_on_a_seen_key_is_mismatch_for_every_fingerprint() {
    let (_dir, clock, store) = fresh_store();
    assert_eq!(
        store.mark_seen("msg-1", Duration::from_secs(30)).unwrap(),
        idemkv::Seen::First
    );
    // A seen mark has no request fingerprint, so no fingerprint matches it,
    // not even the all-zero one.
    for fp in [
        fp_a(),
        fp_b(),
        Fingerprint::from_u128(0),
        Fingerprint::default(),
    ] {
        assert_mismatch(&store, "msg-1", fp);
    }
    assert!(matches!(
        store.get("msg-1").unwrap(),
        Some(Record::Seen { seen_at_ms, expires_at_ms })
            if seen_at_ms == START_MS && expires_at_ms == START_MS + 30_000
    ));
    assert_eq!(store.stats().mismatches, 4);
    assert_eq!(store.stats().acquired, 0);

    // Once the mark expires the key is absent and can be claimed.
    clock.set_ms(START_MS + 30_000);
    drop(acquire_with(&store, "msg-1", fp_a()));
}

#[test]
fn claim_on_a_seen_key_is_mismatch_after_reopen() {
    let (dir, clock) = dir_and_clock();
    {
        let store = open(dir.path(), &clock);
        let _ = store.mark_seen("msg-1", Duration::from_secs(30)).unwrap();
    }
    let store = open(dir.path(), &clock);
    assert_mismatch(&store, "msg-1", Fingerprint::default());
    assert_mismatch(&store, "msg-1", fp_a());
}
