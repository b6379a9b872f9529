//! Rows: `claim_wait`, and failing closed.

use super::claims::race;
use super::{
    Harness, LONG, SHORT, WAIT, acquired, claim_new, complete_new, in_progress, join, lease_lost,
    mismatch, pause, replayed,
};
use crate::backend::{Backend, BackendTicket};
use crate::error::Result;
use crate::fingerprint::Fingerprint;
use crate::outcome::{Claim, Seen};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long a row gives its spawned waiters to start waiting before it acts.
/// Only a chance to exercise the wake-up: the verdict is the same if a
/// waiter starts late and finds the owner's write already made.
const SETTLE: Duration = Duration::from_millis(50);

/// What a waiter did, reduced so it can cross tasks.
#[derive(Debug, PartialEq, Eq)]
enum Waited {
    /// Acquired the key, and completed it with the given bytes.
    Won(u64),
    /// Replayed these bytes.
    Replayed(Vec<u8>),
    /// Any other answer, printed.
    Other(String),
}

/// Spawns `n` waiters on `key`. A waiter that acquires completes the key
/// with `won_with` at once; `finished` counts the waiters that returned.
async fn waiters<H: Harness>(
    h: &H,
    b: &H::Backend,
    key: &'static [u8],
    fp: Fingerprint,
    n: usize,
    won_with: &'static [u8],
    finished: &Arc<AtomicUsize>,
) -> Vec<Waited> {
    race(h, n, |_| {
        let (b, finished) = (b.clone(), finished.clone());
        async move {
            let answer = b.claim_wait(key, fp, WAIT).await;
            let waited = match answer {
                Ok(Claim::Acquired(t)) => {
                    let generation = t.generation();
                    b.complete(t, won_with, LONG)
                        .await
                        .map(|()| Waited::Won(generation))
                }
                Ok(Claim::Replay(done)) => Ok(Waited::Replayed(done.into_response())),
                other => Ok(Waited::Other(format!("{other:?}"))),
            };
            finished.fetch_add(1, Ordering::AcqRel);
            waited.unwrap_or_else(|e| Waited::Other(e.to_string()))
        }
    })
    .await
}

/// Checks that no waiter has returned yet: with the owner still holding
/// the key and a long timeout, any that did answered too early.
#[track_caller]
fn none_returned(finished: &AtomicUsize, what: &str) {
    let n = finished.load(Ordering::Acquire);
    assert_eq!(
        n, 0,
        "{what}: {n} waiters returned while the owner held the key"
    );
}

/// Waiters on an in-progress key all replay the owner's response as soon as
/// it completes, and none of them runs the work.
pub async fn claim_wait_is_woken_by_complete<H: Harness>(h: &H) {
    let b = h.backend(LONG, LONG).await;
    let fp = Fingerprint::of(b"charge");
    let owner = claim_new(&b, b"k", fp).await;
    let finished = Arc::new(AtomicUsize::new(0));
    let (waited, ()) = join(waiters(h, &b, b"k", fp, 4, b"waiter", &finished), async {
        pause(SETTLE).await;
        none_returned(&finished, "before complete");
        b.complete(owner, b"201 made by the owner", LONG)
            .await
            .unwrap();
    })
    .await;
    for w in waited {
        assert_eq!(w, Waited::Replayed(b"201 made by the owner".to_vec()));
    }
}

/// When the owner releases, exactly one waiter acquires; the others go on
/// waiting, on the new owner, and replay its response.
pub async fn claim_wait_is_woken_by_release<H: Harness>(h: &H) {
    let b = h.backend(LONG, LONG).await;
    let fp = Fingerprint::of(b"order");
    let owner = claim_new(&b, b"k", fp).await;
    let released = owner.generation();
    let finished = Arc::new(AtomicUsize::new(0));
    let (waited, ()) = join(
        waiters(h, &b, b"k", fp, 4, b"by a waiter", &finished),
        async {
            pause(SETTLE).await;
            none_returned(&finished, "before release");
            b.release(owner).await.unwrap();
        },
    )
    .await;
    let won: Vec<_> = waited
        .iter()
        .filter_map(|w| match w {
            Waited::Won(g) => Some(*g),
            _ => None,
        })
        .collect();
    assert_eq!(won.len(), 1, "exactly one waiter acquires: {waited:?}");
    assert!(
        won[0] > released,
        "the waiter's claim outranks the released one"
    );
    let replays = waited
        .iter()
        .filter(|w| **w == Waited::Replayed(b"by a waiter".to_vec()))
        .count();
    assert_eq!(
        replays, 3,
        "the others replay the new owner's answer: {waited:?}"
    );
}

/// A waiter acquires a key that is removed under it; the removed owner is
/// fenced off.
pub async fn claim_wait_is_woken_by_remove<H: Harness>(h: &H) {
    let b = h.backend(LONG, LONG).await;
    let fp = Fingerprint::of(b"x");
    let owner = claim_new(&b, b"k", fp).await;
    let finished = Arc::new(AtomicUsize::new(0));
    let (waited, ()) = join(
        waiters(h, &b, b"k", fp, 1, b"after remove", &finished),
        async {
            pause(SETTLE).await;
            none_returned(&finished, "before remove");
            assert!(b.remove(b"k").await.unwrap());
        },
    )
    .await;
    assert!(
        matches!(waited[..], [Waited::Won(g)] if g > owner.generation()),
        "{waited:?}"
    );
    lease_lost(
        b.complete(owner, b"removed owner", LONG).await,
        "the removed owner",
    );
    let done = replayed(b.claim(b"k", fp).await, "the waiter's record");
    assert_eq!(done.response(), b"after remove");
}

/// A waiter takes the key over when the owner's lease passes, with no write
/// to wake it, and the old owner is fenced off.
pub async fn claim_wait_is_woken_by_lease_end<H: Harness>(h: &H) {
    let b = h.backend(SHORT, LONG).await;
    let fp = Fingerprint::of(b"slow");
    let stale = claim_new(&b, b"k", fp).await;
    let finished = Arc::new(AtomicUsize::new(0));
    let (waited, ()) = join(
        waiters(h, &b, b"k", fp, 1, b"taken over", &finished),
        async {
            pause(SETTLE).await;
            super::pass(h, SHORT).await;
        },
    )
    .await;
    assert!(
        matches!(waited[..], [Waited::Won(g)] if g > stale.generation()),
        "the lease passed, so the waiter takes over: {waited:?}"
    );
    lease_lost(b.complete(stale, b"late", LONG).await, "the stale owner");
    let done = replayed(b.claim(b"k", fp).await, "the new owner's record");
    assert_eq!(done.response(), b"taken over");
}

/// At its timeout, and not before, a waiter answers `InProgress` with the
/// owner's lease end; every other answer comes without waiting.
pub async fn claim_wait_times_out_with_in_progress<H: Harness>(h: &H) {
    let b = h.backend(LONG, LONG).await;
    let fp = Fingerprint::of(b"y");
    let owner = claim_new(&b, b"k", fp).await;
    let timeout = Duration::from_millis(100);
    let started = Instant::now();
    let answer = b.claim_wait(b"k", fp, timeout).await;
    // A lower bound only: a slow machine makes the wait longer, never shorter.
    assert!(
        started.elapsed() >= timeout,
        "the waiter answered before its timeout"
    );
    assert_eq!(
        in_progress(answer, "at the timeout"),
        owner.lease_expires_at_ms()
    );
    mismatch(
        b.claim_wait(b"k", Fingerprint::of(b"z"), WAIT).await,
        "another request",
    );
    complete_new(&b, b"done", fp, b"r", LONG).await;
    let done = replayed(b.claim_wait(b"done", fp, WAIT).await, "a completed key");
    assert_eq!(done.response(), b"r");
    acquired(b.claim_wait(b"fresh", fp, WAIT).await, "a fresh key");
    b.complete(owner, b"done", LONG).await.unwrap();
}

/// A waiter whose owner extends its lease keeps waiting past the original
/// lease end and answers `InProgress` with the extended end at its timeout.
pub async fn claim_wait_outlasted_by_an_extended_lease<H: Harness>(h: &H) {
    // The owner extends within three SHORTs; the waiter's timeout runs past
    // the original lease end, where it would have taken the key over.
    let lease = 3 * SHORT;
    let b = h.backend(lease, LONG).await;
    let fp = Fingerprint::of(b"z");
    let owner = claim_new(&b, b"k", fp).await;
    let waiter = {
        let b = b.clone();
        h.spawn(async move { b.claim_wait(b"k", fp, 4 * SHORT).await })
    };
    let (answer, extended) = join(waiter, async {
        pause(SETTLE).await;
        let end = b.extend_lease(&owner, LONG).await.unwrap();
        super::pass(h, lease).await;
        end
    })
    .await;
    assert_eq!(
        in_progress(answer, "the extended lease outlasts the timeout"),
        extended
    );
    b.complete(owner, b"done", LONG).await.unwrap();
}

/// Fail closed: once the backend cannot confirm writes, no claim is
/// `Acquired`, no mark is `First`, and no `complete` succeeds; each is an
/// error. Skipped (passes) if the harness cannot break its backend.
pub async fn unconfirmed_writes_fail_closed<H: Harness>(h: &H) {
    let b = h.backend(LONG, LONG).await;
    let fp = Fingerprint::of(b"pay");
    let owner = claim_new(&b, b"held", fp).await;
    if !h.break_writes(&b).await {
        return;
    }
    let claim: Result<Claim<_>> = b.claim(b"fresh", fp).await;
    assert!(
        claim.is_err(),
        "a claim the backend could not confirm: {claim:?}"
    );
    let seen: Result<Seen> = b.mark_seen(b"msg", LONG).await;
    assert!(
        seen.is_err(),
        "a mark the backend could not confirm: {seen:?}"
    );
    let done = b.complete(owner, b"paid", LONG).await;
    assert!(done.is_err(), "a completion the backend could not confirm");
    let again = b.claim(b"fresh", fp).await;
    assert!(
        !matches!(again, Ok(Claim::Acquired(_))),
        "still not acquired: {again:?}"
    );
}
