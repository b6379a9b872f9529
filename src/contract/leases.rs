//! Rows: leases and fencing. Takeover, stale owners, late owners,
//! extensions, release, remove.

use super::{
    Harness, LONG, SHORT, WAIT, acquired, claim_new, complete_new, in_progress, lease_lost,
    mismatch, ms, pass, replayed,
};
use crate::backend::{Backend, BackendTicket};
use crate::fingerprint::Fingerprint;
use crate::outcome::{Record, Seen};

/// Before its lease ends, an owned key answers `InProgress` with the
/// owner's lease end, to `claim`, to a zero-timeout `claim_wait` and in `get`.
pub async fn in_progress_until_the_lease_ends<H: Harness>(h: &H) {
    let b = h.backend(LONG, LONG).await;
    let fp = Fingerprint::of(b"work");
    let ticket = claim_new(&b, b"k", fp).await;
    let end = ticket.lease_expires_at_ms();
    assert_eq!(in_progress(b.claim(b"k", fp).await, "a retry"), end);
    let zero = b.claim_wait(b"k", fp, std::time::Duration::ZERO).await;
    assert_eq!(in_progress(zero, "claim_wait with a zero timeout"), end);
    match b.get(b"k").await.unwrap() {
        Some(Record::InProgress {
            fingerprint,
            lease_expires_at_ms,
            ..
        }) => assert_eq!((fingerprint, lease_expires_at_ms), (fp, end)),
        other => panic!("get of a claimed key: expected InProgress, got {other:?}"),
    }
    b.complete(ticket, b"done", LONG).await.unwrap();
}

/// Once the lease has passed, a claim with the same fingerprint takes the
/// key over with a higher generation, every time; the old owners are
/// fenced off and the last owner's response is the one replayed.
pub async fn lease_takeover_has_a_higher_generation<H: Harness>(h: &H) {
    let b = h.backend(SHORT, LONG).await;
    let fp = Fingerprint::of(b"slow");
    let first = claim_new(&b, b"k", fp).await;
    pass(h, SHORT).await;
    let second = acquired(b.claim(b"k", fp).await, "a claim after the lease");
    assert!(
        second.generation() > first.generation(),
        "{second:?} outranks {first:?}"
    );
    assert!(second.claimed_at_ms() >= first.lease_expires_at_ms());
    assert_eq!(
        second.lease_expires_at_ms() - second.claimed_at_ms(),
        ms(SHORT),
        "a takeover gets a full lease"
    );
    pass(h, SHORT).await;
    let third = acquired(b.claim(b"k", fp).await, "a second takeover");
    assert!(third.generation() > second.generation());
    lease_lost(b.complete(first, b"first", LONG).await, "the first owner");
    lease_lost(
        b.complete(second, b"second", LONG).await,
        "the second owner",
    );
    b.complete(third, b"third", LONG).await.unwrap();
    let done = replayed(b.claim(b"k", fp).await, "after the takeovers");
    assert_eq!(done.response(), b"third");
}

/// A taken-over owner's `extend_lease`, `complete` and `release` are refused
/// with `LeaseLost` and change nothing: not the new owner's claim, not its
/// completed record, not the stale ticket's own lease.
pub async fn stale_owner_is_refused_and_changes_nothing<H: Harness>(h: &H) {
    let b = h.backend(SHORT, LONG).await;
    let fp = Fingerprint::of(b"req");
    let old_a = claim_new(&b, b"a", fp).await;
    let old_b = claim_new(&b, b"b", fp).await;
    let old_c = claim_new(&b, b"c", fp).await;
    pass(h, SHORT).await;
    let new_a = acquired(b.claim(b"a", fp).await, "takeover of a");
    let new_b = acquired(b.claim(b"b", fp).await, "takeover of b");
    let new_c = acquired(b.claim(b"c", fp).await, "takeover of c");

    let before = b.get(b"a").await.unwrap();
    let old_lease = old_a.lease_expires_at_ms();
    lease_lost(b.extend_lease(&old_a, LONG).await, "stale extend_lease");
    assert_eq!(
        old_a.lease_expires_at_ms(),
        old_lease,
        "the stale lease did not move"
    );
    assert_eq!(b.get(b"a").await.unwrap(), before);
    lease_lost(b.complete(old_a, b"stale", LONG).await, "stale complete");
    assert_eq!(
        b.get(b"a").await.unwrap(),
        before,
        "the stale response was not stored"
    );

    let before = b.get(b"b").await.unwrap();
    lease_lost(b.release(old_b).await, "stale release");
    assert_eq!(
        b.get(b"b").await.unwrap(),
        before,
        "the new claim still stands"
    );

    b.complete(new_c, b"fresh c", LONG).await.unwrap();
    lease_lost(
        b.extend_lease(&old_c, LONG).await,
        "stale extend after completion",
    );
    lease_lost(
        b.complete(old_c, b"stale c", LONG).await,
        "stale complete after completion",
    );

    b.complete(new_a, b"fresh a", LONG).await.unwrap();
    b.complete(new_b, b"fresh b", LONG).await.unwrap();
    for (key, want) in [(b"a", b"fresh a"), (b"b", b"fresh b"), (b"c", b"fresh c")] {
        let done = replayed(b.claim(key, fp).await, "after the stale calls");
        assert_eq!(done.response(), want, "the new owner's response stands");
    }
}

/// Fencing is by generation, not by the clock: an owner whose lease passed
/// but whose key nobody took over may still complete, extend or release.
pub async fn late_owner_without_takeover_may_finish<H: Harness>(h: &H) {
    let b = h.backend(SHORT, LONG).await;
    let fp = Fingerprint::of(b"late");
    let a = claim_new(&b, b"a", fp).await;
    let k = claim_new(&b, b"b", fp).await;
    let c = claim_new(&b, b"c", fp).await;
    pass(h, SHORT).await;

    b.complete(a, b"late but first", LONG).await.unwrap();
    let done = replayed(b.claim(b"a", fp).await, "a late completion");
    assert_eq!(done.response(), b"late but first");

    let end = b.extend_lease(&k, LONG).await.unwrap();
    assert_eq!(
        k.lease_expires_at_ms(),
        end,
        "the ticket follows its extension"
    );
    assert_eq!(
        in_progress(b.claim(b"b", fp).await, "an extended lease"),
        end
    );

    let generation = c.generation();
    b.release(c).await.unwrap();
    assert_eq!(b.get(b"c").await.unwrap(), None);
    let next = acquired(b.claim(b"c", fp).await, "after a late release");
    assert!(next.generation() > generation);
}

/// `extend_lease` moves the lease end to `by` from now: the ticket, `get`
/// and `claim` all show the new end, and the key is not taken over when the
/// original lease passes.
pub async fn extend_lease_moves_the_lease<H: Harness>(h: &H) {
    let b = h.backend(SHORT, LONG).await;
    let fp = Fingerprint::of(b"long work");
    let ticket = claim_new(&b, b"k", fp).await;
    let original = ticket.lease_expires_at_ms();
    let end = b.extend_lease(&ticket, LONG).await.unwrap();
    assert!(
        end >= ticket.claimed_at_ms() + ms(LONG),
        "{end} is LONG from now"
    );
    assert!(end > original);
    assert_eq!(ticket.lease_expires_at_ms(), end);
    let shown = Record::InProgress {
        fingerprint: fp,
        claimed_at_ms: ticket.claimed_at_ms(),
        lease_expires_at_ms: end,
    };
    assert_eq!(b.get(b"k").await.unwrap(), Some(shown));
    pass(h, SHORT).await;
    assert_eq!(
        in_progress(b.claim(b"k", fp).await, "past the original lease"),
        end
    );
    b.complete(ticket, b"done", LONG).await.unwrap();
    assert_eq!(
        replayed(b.claim(b"k", fp).await, "after completion").response(),
        b"done"
    );
}

/// `release` makes the key absent: the next claim acquires it, with any
/// fingerprint and a higher generation, and `claim_wait` acquires at once.
pub async fn release_then_reclaim<H: Harness>(h: &H) {
    let b = h.backend(LONG, LONG).await;
    let (fp_a, fp_b) = (Fingerprint::of(b"a"), Fingerprint::of(b"b"));
    let first = claim_new(&b, b"k", fp_a).await;
    let g1 = first.generation();
    b.release(first).await.unwrap();
    assert_eq!(b.get(b"k").await.unwrap(), None, "a released key is absent");
    let second = acquired(b.claim(b"k", fp_b).await, "a released key, other request");
    assert!(second.generation() > g1);
    let g2 = second.generation();
    b.release(second).await.unwrap();
    let third = acquired(
        b.claim_wait(b"k", fp_a, WAIT).await,
        "claim_wait on a released key",
    );
    assert!(third.generation() > g2);
    b.complete(third, b"third time", LONG).await.unwrap();
    assert_eq!(
        replayed(b.claim(b"k", fp_a).await, "after release and reclaim").response(),
        b"third time"
    );
    mismatch(
        b.claim(b"k", fp_b).await,
        "the completed key's other request",
    );
}

/// `remove` purges a key in any state and reports whether it did; a
/// ticket for a removed key is fenced off, even once the key is claimed again.
pub async fn remove_purges_and_fences<H: Harness>(h: &H) {
    let b = h.backend(LONG, LONG).await;
    let fp = Fingerprint::of(b"r");

    let ticket = claim_new(&b, b"k", fp).await;
    let generation = ticket.generation();
    assert!(
        b.remove(b"k").await.unwrap(),
        "an in-progress key is removed"
    );
    assert_eq!(b.get(b"k").await.unwrap(), None);
    lease_lost(b.extend_lease(&ticket, LONG).await, "extend after remove");
    lease_lost(
        b.complete(ticket, b"after", LONG).await,
        "complete after remove",
    );
    assert_eq!(b.get(b"k").await.unwrap(), None, "nothing was stored");
    assert!(!b.remove(b"k").await.unwrap(), "nothing left to remove");
    let next = acquired(b.claim(b"k", fp).await, "a removed key");
    assert!(next.generation() > generation);

    let old = claim_new(&b, b"r", fp).await;
    assert!(b.remove(b"r").await.unwrap());
    let new = claim_new(&b, b"r", fp).await;
    lease_lost(b.release(old).await, "release after remove and reclaim");
    assert_eq!(
        in_progress(b.claim(b"r", fp).await, "the new owner's claim stands"),
        new.lease_expires_at_ms()
    );

    complete_new(&b, b"c", fp, b"gone soon", LONG).await;
    assert!(b.remove(b"c").await.unwrap(), "a completed key is removed");
    acquired(b.claim(b"c", fp).await, "a removed completed key");

    assert_eq!(b.mark_seen(b"s", LONG).await.unwrap(), Seen::First);
    assert!(b.remove(b"s").await.unwrap(), "a seen key is removed");
    assert_eq!(b.mark_seen(b"s", LONG).await.unwrap(), Seen::First);

    assert!(!b.remove(b"never").await.unwrap());
    b.complete(next, b"n", LONG).await.unwrap();
    b.complete(new, b"n", LONG).await.unwrap();
}
