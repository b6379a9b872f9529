//! Rows: expiry. Completed records, abandoned claims, seen marks.

use super::{
    Harness, LONG, SHORT, acquired, claim_new, complete_new, mismatch, ms, pass, replayed,
};
use crate::backend::{Backend, BackendTicket};
use crate::fingerprint::Fingerprint;
use crate::outcome::{Record, Seen};

/// A completed record replays until its own retention passes, then is
/// absent: `get` finds nothing, `remove` removes nothing, and any request
/// acquires the key; a record with a longer retention still replays.
pub async fn completed_records_expire_after_their_retention<H: Harness>(h: &H) {
    let b = h.backend(LONG, LONG).await;
    let fp = Fingerprint::of(b"req");
    let retention = 4 * SHORT;
    complete_new(&b, b"short", fp, b"brief", retention).await;
    complete_new(&b, b"long", fp, b"lasting", LONG).await;
    match b.get(b"short").await.unwrap() {
        Some(Record::Completed(done)) => {
            assert_eq!(done.expires_at_ms() - done.completed_at_ms(), ms(retention));
        }
        other => panic!("get of a completed key: expected Completed, got {other:?}"),
    }
    let done = replayed(b.claim(b"short", fp).await, "before its retention");
    assert_eq!(done.response(), b"brief");

    pass(h, retention).await;
    assert_eq!(b.get(b"short").await.unwrap(), None, "expired");
    assert!(!b.remove(b"short").await.unwrap(), "nothing live to remove");
    let other = Fingerprint::of(b"another request");
    let fresh = acquired(b.claim(b"short", other).await, "an expired key");
    assert_eq!(fresh.fingerprint(), other);
    let kept = replayed(b.claim(b"long", fp).await, "the longer retention");
    assert_eq!(kept.response(), b"lasting");
    b.complete(fresh, b"second life", LONG).await.unwrap();
    let done = replayed(b.claim(b"short", other).await, "the key's second life");
    assert_eq!(done.response(), b"second life");
}

/// An abandoned claim stays present after its lease (so it can be taken
/// over: `get` shows it, other requests are mismatched, `mark_seen` is a
/// duplicate) until one retention period after the lease, then is absent.
pub async fn abandoned_claim_expires_after_lease_plus_retention<H: Harness>(h: &H) {
    let retention = 4 * SHORT;
    let b = h.backend(SHORT, retention).await;
    let fp = Fingerprint::of(b"crashed");
    let abandoned = claim_new(&b, b"k", fp).await;
    let (claimed_at, lease_end) = (abandoned.claimed_at_ms(), abandoned.lease_expires_at_ms());
    drop(abandoned); // the owner crashed

    pass(h, SHORT).await;
    let still = Record::InProgress {
        fingerprint: fp,
        claimed_at_ms: claimed_at,
        lease_expires_at_ms: lease_end,
    };
    assert_eq!(
        b.get(b"k").await.unwrap(),
        Some(still),
        "present past its lease"
    );
    assert_eq!(b.mark_seen(b"k", LONG).await.unwrap(), Seen::Duplicate);
    mismatch(
        b.claim(b"k", Fingerprint::of(b"other")).await,
        "past its lease, other request",
    );

    pass(h, retention).await;
    assert_eq!(
        b.get(b"k").await.unwrap(),
        None,
        "gone after lease + retention"
    );
    assert!(!b.remove(b"k").await.unwrap(), "nothing live to remove");
    acquired(
        b.claim(b"k", Fingerprint::of(b"other")).await,
        "an expired claim, any request",
    );
}

/// `mark_seen` is `First` once, then `Duplicate` while the mark lives
/// (whatever retention the duplicates ask for), and `First` again once it
/// expired. A claimed or completed key is a duplicate too.
pub async fn mark_seen_first_then_duplicate_until_it_expires<H: Harness>(h: &H) {
    let b = h.backend(LONG, LONG).await;
    let retain = 4 * SHORT;
    assert_eq!(b.mark_seen(b"msg", retain).await.unwrap(), Seen::First);
    assert_eq!(b.mark_seen(b"msg", retain).await.unwrap(), Seen::Duplicate);
    assert_eq!(b.mark_seen(b"msg", LONG).await.unwrap(), Seen::Duplicate);
    match b.get(b"msg").await.unwrap() {
        Some(Record::Seen {
            seen_at_ms,
            expires_at_ms,
        }) => assert_eq!(
            expires_at_ms - seen_at_ms,
            ms(retain),
            "a duplicate does not extend the mark"
        ),
        other => panic!("get of a seen key: expected Seen, got {other:?}"),
    }

    let fp = Fingerprint::of(b"req");
    let ticket = claim_new(&b, b"claimed", fp).await;
    assert_eq!(
        b.mark_seen(b"claimed", LONG).await.unwrap(),
        Seen::Duplicate
    );
    complete_new(&b, b"done", fp, b"r", retain).await;
    assert_eq!(b.mark_seen(b"done", LONG).await.unwrap(), Seen::Duplicate);

    pass(h, retain).await;
    assert_eq!(b.get(b"msg").await.unwrap(), None, "the mark expired");
    assert_eq!(b.mark_seen(b"msg", retain).await.unwrap(), Seen::First);
    assert_eq!(b.mark_seen(b"msg", retain).await.unwrap(), Seen::Duplicate);
    assert_eq!(
        b.mark_seen(b"done", LONG).await.unwrap(),
        Seen::First,
        "an expired completed key"
    );
    b.complete(ticket, b"r", LONG).await.unwrap();
}
