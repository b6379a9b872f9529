//! Expiry: a completed record whose retention has passed is absent (`get`
//! is `None`, `claim` acquires), with the store's retention or a record's
//! own, before and after a reopen; the same for `mark_seen` marks; and an
//! in-progress record is absent once its lease plus the retention has passed.

mod common;

use common::{
    LEASE_MS, RETENTION_MS, START_MS, acquire, assert_mark_seen, assert_replays, dir_and_clock, fp,
    fresh_store, open,
};
use idemkv::{Claim, Fingerprint, Record, Seen};
use std::time::Duration;

#[test]
fn completed_record_is_absent_once_its_retention_passes() {
    let (_dir, clock, store) = fresh_store();
    let t = acquire(&store, "k");
    clock.advance(Duration::from_millis(200));
    store.complete(t, b"answer").unwrap();
    let done_at = START_MS + 200;
    match store.get("k").unwrap() {
        Some(Record::Completed(c)) => {
            assert_eq!(c.completed_at_ms(), done_at);
            assert_eq!(c.expires_at_ms(), done_at + RETENTION_MS);
        }
        other => panic!("expected Completed, got {other:?}"),
    }

    clock.set_ms(done_at + RETENTION_MS - 1);
    assert!(store.get("k").unwrap().is_some());
    assert_replays(&store, "k", b"answer");
    assert_eq!(store.stats().live_keys, 1);

    clock.set_ms(done_at + RETENTION_MS);
    assert_eq!(store.get("k").unwrap(), None);
    assert_eq!(store.stats().live_keys, 0);
    let t = acquire(&store, "k");
    assert_eq!(
        store.stats().takeovers,
        0,
        "acquiring an absent key is no takeover"
    );
    store.complete(t, b"second life").unwrap();
    assert_replays(&store, "k", b"second life");
}

#[test]
fn complete_with_retention_uses_the_records_own_retention() {
    let (_dir, clock, store) = fresh_store();

    let short = acquire(&store, "short");
    store
        .complete_with_retention(short, b"brief", Duration::from_millis(500))
        .unwrap();
    let long = acquire(&store, "long");
    store
        .complete_with_retention(long, b"lasting", Duration::from_millis(3 * RETENTION_MS))
        .unwrap();
    match store.get("short").unwrap() {
        Some(Record::Completed(c)) => assert_eq!(c.expires_at_ms(), START_MS + 500),
        other => panic!("expected Completed, got {other:?}"),
    }

    clock.set_ms(START_MS + 499);
    assert_replays(&store, "short", b"brief");
    clock.set_ms(START_MS + 500);
    assert_eq!(store.get("short").unwrap(), None);
    drop(acquire(&store, "short"));

    // Past the store's retention, the long record is still replayed.
    clock.set_ms(START_MS + 2 * RETENTION_MS);
    assert_replays(&store, "long", b"lasting");
    clock.set_ms(START_MS + 3 * RETENTION_MS - 1);
    assert_replays(&store, "long", b"lasting");
    clock.set_ms(START_MS + 3 * RETENTION_MS);
    assert_eq!(store.get("long").unwrap(), None);
    drop(acquire(&store, "long"));
}

#[test]
fn zero_retention_completion_is_absent_at_once() {
    let (_dir, _, store) = fresh_store();
    let t = acquire(&store, "k");
    store
        .complete_with_retention(t, b"gone", Duration::ZERO)
        .unwrap();
    assert_eq!(store.get("k").unwrap(), None);
    drop(acquire(&store, "k"));
}

#[test]
fn expired_records_stay_absent_after_reopen() {
    let (dir, clock) = dir_and_clock();
    {
        let store = open(dir.path(), &clock);
        let t = acquire(&store, "expired-before-close");
        store.complete(t, b"a").unwrap();
        let t = acquire(&store, "expires-while-closed");
        store
            .complete_with_retention(t, b"b", Duration::from_millis(2 * RETENTION_MS))
            .unwrap();
        let t = acquire(&store, "custom-long");
        store
            .complete_with_retention(t, b"c", Duration::from_millis(10 * RETENTION_MS))
            .unwrap();
        let t = acquire(&store, "custom-short");
        store
            .complete_with_retention(t, b"d", Duration::from_millis(100))
            .unwrap();
        clock.set_ms(START_MS + RETENTION_MS);
        assert_eq!(store.get("expired-before-close").unwrap(), None);
    }
    let store = open(dir.path(), &clock);
    assert_eq!(store.get("expired-before-close").unwrap(), None);
    assert_eq!(store.get("custom-short").unwrap(), None);
    assert_replays(&store, "expires-while-closed", b"b");
    assert_replays(&store, "custom-long", b"c");
    drop(acquire(&store, "expired-before-close"));
    drop(store);

    // The clock moves while the store is closed.
    clock.set_ms(START_MS + 2 * RETENTION_MS);
    let store = open(dir.path(), &clock);
    assert_eq!(store.get("expires-while-closed").unwrap(), None);
    assert!(matches!(
        store
            .claim("expires-while-closed", Fingerprint::of(b"other"))
            .unwrap(),
        Claim::Acquired(_)
    ));
    assert_replays(&store, "custom-long", b"c");
    // The claim made in the previous session is still in progress.
    assert!(matches!(
        store.get("expired-before-close").unwrap(),
        Some(Record::InProgress { .. })
    ));
    clock.set_ms(START_MS + 10 * RETENTION_MS);
    assert_eq!(store.get("custom-long").unwrap(), None);
}

#[test]
fn seen_marks_expire_after_their_own_retention() {
    let (_dir, clock, store) = fresh_store();
    assert_mark_seen(&store, "msg", Duration::from_millis(2_000), Seen::First);
    assert_eq!(
        store.get("msg").unwrap(),
        Some(Record::Seen {
            seen_at_ms: START_MS,
            expires_at_ms: START_MS + 2_000
        })
    );
    clock.set_ms(START_MS + 1_999);
    assert_mark_seen(&store, "msg", Duration::from_millis(2_000), Seen::Duplicate);
    // A duplicate does not extend the mark.
    clock.set_ms(START_MS + 2_000);
    assert_eq!(store.get("msg").unwrap(), None);
    assert_mark_seen(&store, "msg", Duration::from_millis(2_000), Seen::First);
    assert_eq!(
        store.get("msg").unwrap(),
        Some(Record::Seen {
            seen_at_ms: START_MS + 2_000,
            expires_at_ms: START_MS + 4_000
        })
    );

    // A long mark outlives the store's retention.
    assert_mark_seen(
        &store,
        "long",
        Duration::from_millis(5 * RETENTION_MS),
        Seen::First,
    );
    clock.set_ms(START_MS + 2_000 + 3 * RETENTION_MS);
    assert_mark_seen(
        &store,
        "long",
        Duration::from_millis(5 * RETENTION_MS),
        Seen::Duplicate,
    );
}

#[test]
fn seen_marks_expire_across_reopen() {
    let (dir, clock) = dir_and_clock();
    {
        let store = open(dir.path(), &clock);
        let _ = store
            .mark_seen("short", Duration::from_millis(1_000))
            .unwrap();
        let _ = store
            .mark_seen("long", Duration::from_millis(5_000))
            .unwrap();
    }
    clock.set_ms(START_MS + 1_000);
    let store = open(dir.path(), &clock);
    assert_eq!(store.get("short").unwrap(), None);
    assert_mark_seen(&store, "short", Duration::from_millis(1_000), Seen::First);
    assert_mark_seen(
        &store,
        "long",
        Duration::from_millis(5_000),
        Seen::Duplicate,
    );
    drop(store);
    clock.set_ms(START_MS + 5_000);
    let store = open(dir.path(), &clock);
    assert_eq!(store.get("long").unwrap(), None);
    assert_mark_seen(&store, "long", Duration::from_millis(5_000), Seen::First);
}

#[test]
fn mark_seen_on_an_expired_completed_key_is_first() {
    let (_dir, clock, store) = fresh_store();
    let t = acquire(&store, "k");
    store.complete(t, b"x").unwrap();
    assert_eq!(
        store.mark_seen("k", Duration::from_secs(1)).unwrap(),
        Seen::Duplicate,
        "a live completed key is a duplicate"
    );
    clock.set_ms(START_MS + RETENTION_MS);
    assert_mark_seen(&store, "k", Duration::from_secs(1), Seen::First);
}

#[test]
fn in_progress_record_is_absent_after_lease_plus_retention() {
    let (_dir, clock, store) = fresh_store();
    let t = acquire(&store, "k");
    drop(t); // the owner crashed

    let gone_at = START_MS + LEASE_MS + RETENTION_MS;
    clock.set_ms(gone_at - 1);
    assert_eq!(
        store.get("k").unwrap(),
        Some(Record::InProgress {
            fingerprint: fp(),
            claimed_at_ms: START_MS,
            lease_expires_at_ms: START_MS + LEASE_MS
        }),
        "an abandoned claim is present (for takeover) until lease + retention"
    );
    assert_eq!(store.stats().live_keys, 1);
    assert_mark_seen(&store, "k", Duration::from_secs(1), Seen::Duplicate);

    clock.set_ms(gone_at);
    assert_eq!(store.get("k").unwrap(), None);
    assert_eq!(store.stats().live_keys, 0);
    assert!(!store.remove("k").unwrap(), "nothing live to remove");
    assert!(matches!(
        store
            .claim("k", Fingerprint::of(b"another request"))
            .unwrap(),
        Claim::Acquired(_)
    ));
    assert_eq!(store.stats().takeovers, 0);
}

#[test]
fn in_progress_record_expires_across_reopen() {
    let (dir, clock) = dir_and_clock();
    {
        let store = open(dir.path(), &clock);
        drop(acquire(&store, "abandoned"));
        let t = acquire(&store, "extended");
        store
            .extend_lease(&t, Duration::from_millis(3 * LEASE_MS))
            .unwrap();
    }
    clock.set_ms(START_MS + LEASE_MS + RETENTION_MS);
    let store = open(dir.path(), &clock);
    assert_eq!(store.get("abandoned").unwrap(), None);
    // Its extended lease keeps the other one present a while longer.
    assert!(matches!(
        store.get("extended").unwrap(),
        Some(Record::InProgress { lease_expires_at_ms, .. }) if lease_expires_at_ms == START_MS + 3 * LEASE_MS
    ));
    drop(store);
    clock.set_ms(START_MS + 3 * LEASE_MS + RETENTION_MS);
    let store = open(dir.path(), &clock);
    assert_eq!(store.get("extended").unwrap(), None);
    assert!(matches!(
        store.claim("abandoned", Fingerprint::of(b"other")).unwrap(),
        Claim::Acquired(_)
    ));
    assert!(matches!(
        store.claim("extended", Fingerprint::of(b"other")).unwrap(),
        Claim::Acquired(_)
    ));
}

#[test]
fn a_retention_of_millions_of_years_survives_reopens_from_hint_files() {
    // Expiry times past what a hint entry's 56 bits hold (about year
    // 2,285,000) are saturated in the hint, not wrapped to an early time
    // that would drop the record at the next open.
    let (dir, clock) = dir_and_clock();
    let open_small = || {
        common::small_segments(common::options(&clock))
            .background_compaction(false)
            .open(dir.path())
            .unwrap()
    };
    let store = open_small();
    for (key, retention) in [
        ("forever", Duration::MAX),
        ("wraps", Duration::from_millis(1 << 56)),
    ] {
        let t = acquire(&store, key);
        store
            .complete_with_retention(t, b"kept", retention)
            .unwrap();
    }
    // Roll the log over so both records sit in a sealed segment.
    for i in 0..40 {
        let t = acquire(&store, format!("filler-{i}"));
        store.complete(t, &[b'f'; 200]).unwrap();
    }
    assert!(store.stats().segments > 3);
    // Compaction deletes the claim segments (every claim was completed) and
    // writes the hints, so a reopen knows the records from their hints alone.
    store.compact().unwrap();
    drop(store);
    let store = open_small();
    assert!(store.stats().segments_opened_from_hints > 0);
    for key in ["forever", "wraps"] {
        assert_replays(&store, key, b"kept");
    }
}
