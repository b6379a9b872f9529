//! Rows: the claim itself. Acquire, replay, races, mismatches, bad input.

use super::{
    Harness, LONG, RACERS, SHORT, WAIT, acquired, claim_new, complete_new, every_byte, in_progress,
    join_all, mismatch, ms, pass, replayed,
};
use crate::backend::{Backend, BackendTicket};
use crate::error::{Error, Result};
use crate::fingerprint::Fingerprint;
use crate::outcome::{Claim, Record, Seen};
use std::future::Future;
use std::time::Duration;

/// Starts `n` tasks at once through the harness and returns their outputs.
pub(super) async fn race<H, T, F, Fut>(h: &H, n: usize, task: F) -> Vec<T>
where
    H: Harness,
    F: Fn(usize) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    join_all((0..n).map(|i| h.spawn(task(i))).collect()).await
}

/// `n` concurrent claims of `key`, the `i`th with fingerprint `fp(i)`.
async fn race_claims<H: Harness>(
    h: &H,
    b: &H::Backend,
    key: &[u8],
    fp: impl Fn(usize) -> Fingerprint,
) -> Vec<Result<Claim<<H::Backend as Backend>::Ticket>>> {
    race(h, RACERS, |i| {
        let (b, key, fp) = (b.clone(), key.to_vec(), fp(i));
        async move { b.claim(&key, fp).await }
    })
    .await
}

/// Splits race answers into the one winner's ticket and the rest, and
/// panics unless exactly one racer acquired.
#[track_caller]
fn one_winner<T: std::fmt::Debug>(
    answers: Vec<Result<Claim<T>>>,
    what: &str,
) -> (T, Vec<Claim<T>>) {
    let mut winners = Vec::new();
    let mut others = Vec::new();
    for answer in answers {
        match answer {
            Ok(Claim::Acquired(t)) => winners.push(t),
            Ok(other) => others.push(other),
            Err(e) => panic!("{what}: a racer failed: {e}"),
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "{what}: exactly one racer acquires, got {winners:?}"
    );
    (winners.pop().expect("one winner"), others)
}

/// A fresh key is `Acquired`; its ticket and `get` describe the claim; the
/// response passed to `complete` comes back byte for byte from every replay,
/// `claim_wait` and `get`, with the retention it was given.
pub async fn claim_complete_replay_byte_for_byte<H: Harness>(h: &H) {
    let b = h.backend(LONG, LONG).await;
    let fp = Fingerprint::of(b"POST /v1/charges {\"amount\": 500}");
    let ticket = claim_new(&b, b"charge-1", fp).await;
    assert_eq!(ticket.key(), b"charge-1");
    assert_eq!(ticket.fingerprint(), fp);
    assert_eq!(
        ticket.lease_expires_at_ms() - ticket.claimed_at_ms(),
        ms(LONG),
        "the lease runs the backend's lease from the claim"
    );
    let claimed = Record::InProgress {
        fingerprint: fp,
        claimed_at_ms: ticket.claimed_at_ms(),
        lease_expires_at_ms: ticket.lease_expires_at_ms(),
    };
    assert_eq!(b.get(b"charge-1").await.unwrap(), Some(claimed));

    let response = every_byte();
    let retention = Duration::from_secs(3_600);
    b.complete(ticket, &response, retention).await.unwrap();
    let done = replayed(b.claim(b"charge-1", fp).await, "a retry");
    assert_eq!(done.response(), response, "the replay is byte for byte");
    assert_eq!(done.fingerprint(), fp);
    assert_eq!(done.expires_at_ms() - done.completed_at_ms(), ms(retention));
    let again = replayed(b.claim(b"charge-1", fp).await, "a second retry");
    assert_eq!(again, done, "every replay is the same record");
    let waited = replayed(b.claim_wait(b"charge-1", fp, WAIT).await, "claim_wait");
    assert_eq!(waited, done);
    assert_eq!(
        b.get(b"charge-1").await.unwrap(),
        Some(Record::Completed(done))
    );

    // An empty response and a large one replay exactly too.
    complete_new(&b, b"empty", fp, b"", LONG).await;
    let empty = replayed(b.claim(b"empty", fp).await, "an empty response");
    assert!(empty.response().is_empty(), "{empty:?}");
    let len = b.max_response_len().min(256 * 1024);
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let large: Vec<u8> = (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    complete_new(&b, b"large", fp, &large, LONG).await;
    let done = replayed(b.claim(b"large", fp).await, "a large response");
    assert!(
        done.response() == large,
        "a {len}-byte response replays exactly"
    );
}

/// Of many concurrent claims on one key, exactly one is `Acquired` and the
/// others `InProgress` with the winner's lease end; once the winner
/// completes, every racer of a second race replays the winner's bytes.
pub async fn racing_claims_have_one_winner<H: Harness>(h: &H) {
    let b = h.backend(LONG, LONG).await;
    let fp = Fingerprint::of(b"one request");
    for round in 0..4u32 {
        let key = format!("race-{round}").into_bytes();
        let what = format!("round {round}");
        let (winner, others) = one_winner(race_claims(h, &b, &key, |_| fp).await, &what);
        for other in others {
            let end = in_progress(Ok(other), &what);
            assert_eq!(
                end,
                winner.lease_expires_at_ms(),
                "{what}: the winner's lease"
            );
        }
        let answer = format!("made once in round {round}");
        b.complete(winner, answer.as_bytes(), LONG).await.unwrap();
        for replay in race_claims(h, &b, &key, |_| fp).await {
            let done = replayed(replay, &what);
            assert_eq!(done.response(), answer.as_bytes(), "{what}");
        }
    }
}

/// Racers with two fingerprints: one acquires; those with the winner's
/// fingerprint see `InProgress`, the others `Mismatch`.
pub async fn racing_fingerprints_have_one_winner_and_mismatches<H: Harness>(h: &H) {
    let b = h.backend(LONG, LONG).await;
    let fps = [Fingerprint::of(b"request a"), Fingerprint::of(b"request b")];
    for round in 0..4u32 {
        let key = format!("race-{round}").into_bytes();
        let what = format!("round {round}");
        let answers = race_claims(h, &b, &key, |i| fps[i % 2]).await;
        // Which racer had which fingerprint is kept alongside the answer.
        let tagged: Vec<_> = answers.into_iter().enumerate().collect();
        let winner_fp = tagged
            .iter()
            .find_map(|(i, a)| matches!(a, Ok(Claim::Acquired(_))).then_some(fps[i % 2]))
            .unwrap_or_else(|| panic!("{what}: nobody acquired"));
        let mut acquired_n = 0;
        for (i, answer) in tagged {
            match answer {
                Ok(Claim::Acquired(t)) => {
                    acquired_n += 1;
                    assert_eq!(t.fingerprint(), winner_fp);
                }
                Ok(Claim::InProgress { .. }) => assert_eq!(fps[i % 2], winner_fp, "{what}"),
                Ok(Claim::Mismatch) => assert_ne!(fps[i % 2], winner_fp, "{what}"),
                other => panic!("{what}: unexpected answer {other:?}"),
            }
        }
        assert_eq!(acquired_n, 1, "{what}: exactly one racer acquires");
    }
}

/// Concurrent claims of distinct keys all acquire: no false conflicts.
pub async fn racing_claims_on_distinct_keys_all_acquire<H: Harness>(h: &H) {
    let b = h.backend(LONG, LONG).await;
    let answers = race(h, RACERS, |i| {
        let b = b.clone();
        async move {
            let key = format!("distinct-{i}");
            b.claim(key.as_bytes(), Fingerprint::of(key.as_bytes()))
                .await
        }
    })
    .await;
    for (i, answer) in answers.into_iter().enumerate() {
        let ticket = acquired(answer, &format!("racer {i} on its own key"));
        assert_eq!(ticket.key(), format!("distinct-{i}").as_bytes());
    }
}

/// When a lease has passed, of many concurrent claims exactly one takes the
/// key over, with a higher generation; the others see the new lease.
pub async fn racing_takeovers_have_one_winner<H: Harness>(h: &H) {
    // Three SHORTs: a real-time race ends well before the new owner's
    // lease passes in turn.
    let lease = 3 * SHORT;
    let b = h.backend(lease, LONG).await;
    let fp = Fingerprint::of(b"slow request");
    let mut abandoned = Vec::new();
    for round in 0..4u32 {
        let key = format!("abandoned-{round}").into_bytes();
        abandoned.push(claim_new(&b, &key, fp).await);
    }
    pass(h, lease).await;
    for (round, old) in abandoned.into_iter().enumerate() {
        let what = format!("takeover round {round}");
        let (winner, others) = one_winner(race_claims(h, &b, old.key(), |_| fp).await, &what);
        assert!(
            winner.generation() > old.generation(),
            "{what}: {winner:?} outranks {old:?}"
        );
        for other in others {
            let end = in_progress(Ok(other), &what);
            assert_eq!(end, winner.lease_expires_at_ms(), "{what}: the new lease");
        }
        super::lease_lost(b.release(old).await, &what);
    }
}

/// Of many concurrent `mark_seen` calls on one key, exactly one is `First`.
pub async fn racing_mark_seen_has_one_first<H: Harness>(h: &H) {
    let b = h.backend(LONG, LONG).await;
    for round in 0..4u32 {
        let answers = race(h, RACERS, |_| {
            let b = b.clone();
            async move { b.mark_seen(format!("msg-{round}").as_bytes(), LONG).await }
        })
        .await;
        let first = answers
            .iter()
            .filter(|a| matches!(a, Ok(Seen::First)))
            .count();
        let duplicates = answers
            .iter()
            .filter(|a| matches!(a, Ok(Seen::Duplicate)))
            .count();
        assert_eq!(
            (first, duplicates),
            (1, RACERS - 1),
            "round {round}: {answers:?}"
        );
    }
}

/// A live key claimed with another fingerprint is `Mismatch` on every path:
/// in progress, in progress past its lease, completed, and marked seen;
/// through `claim` and `claim_wait`; and the record does not change.
pub async fn mismatch_on_every_path<H: Harness>(h: &H) {
    let b = h.backend(LONG, LONG).await;
    let (fp_a, fp_b) = (Fingerprint::of(b"a"), Fingerprint::of(b"b"));

    let owner = claim_new(&b, b"k", fp_a).await;
    let before = b.get(b"k").await.unwrap();
    mismatch(b.claim(b"k", fp_b).await, "in progress");
    mismatch(
        b.claim_wait(b"k", fp_b, WAIT).await,
        "in progress, claim_wait",
    );
    assert_eq!(
        b.get(b"k").await.unwrap(),
        before,
        "a mismatch changes nothing"
    );
    in_progress(b.claim(b"k", fp_a).await, "the owner's own fingerprint");

    b.complete(owner, b"201 a", LONG).await.unwrap();
    mismatch(b.claim(b"k", fp_b).await, "completed");
    mismatch(
        b.claim_wait(b"k", fp_b, WAIT).await,
        "completed, claim_wait",
    );
    let near = Fingerprint::from_u128(fp_a.as_u128() ^ 1);
    mismatch(b.claim(b"k", near).await, "completed, one bit off");
    let done = replayed(b.claim(b"k", fp_a).await, "the matching fingerprint");
    assert_eq!(done.response(), b"201 a");

    assert_eq!(b.mark_seen(b"msg", LONG).await.unwrap(), Seen::First);
    for fp in [fp_a, fp_b, Fingerprint::default()] {
        mismatch(b.claim(b"msg", fp).await, "marked seen");
    }
    mismatch(
        b.claim_wait(b"msg", fp_a, WAIT).await,
        "marked seen, claim_wait",
    );

    // Past its lease but still present, a claim is taken over only by its
    // own request.
    let short = h.backend(SHORT, LONG).await;
    let lapsed = claim_new(&short, b"k", fp_a).await;
    pass(h, SHORT).await;
    mismatch(short.claim(b"k", fp_b).await, "in progress, lease passed");
    mismatch(
        short.claim_wait(b"k", fp_b, WAIT).await,
        "lease passed, claim_wait",
    );
    let next = acquired(
        short.claim(b"k", fp_a).await,
        "a takeover by the same request",
    );
    assert!(next.generation() > lapsed.generation());
}

/// Bad input is a typed error on every call, never a panic, and a refused
/// response leaves the claim in progress.
pub async fn bad_input_is_a_typed_error<H: Harness>(h: &H) {
    let b = h.backend(LONG, LONG).await;
    let fp = Fingerprint::of(b"x");
    let empty = |what: &str, e: Result<()>| match e {
        Err(Error::EmptyKey) => {}
        other => panic!("{what} with an empty key: expected EmptyKey, got {other:?}"),
    };
    empty("claim", b.claim(b"", fp).await.map(drop));
    empty("claim_wait", b.claim_wait(b"", fp, WAIT).await.map(drop));
    empty("get", b.get(b"").await.map(drop));
    empty("remove", b.remove(b"").await.map(drop));
    empty("mark_seen", b.mark_seen(b"", LONG).await.map(drop));

    let huge = vec![b'k'; 64 * 1024 + 1];
    let too_long = |what: &str, e: Result<()>| match e {
        Err(Error::KeyTooLong { len, .. }) => assert_eq!(len, huge.len(), "{what}"),
        other => panic!("{what} with a 64 KiB key: expected KeyTooLong, got {other:?}"),
    };
    too_long("claim", b.claim(&huge, fp).await.map(drop));
    too_long("mark_seen", b.mark_seen(&huge, LONG).await.map(drop));
    too_long("get", b.get(&huge).await.map(drop));
    assert_eq!(b.get(b"k").await.unwrap(), None, "nothing was written");

    let max = b.max_response_len();
    if let Some(over) = max.checked_add(1).filter(|&n| n <= 64 << 20) {
        let ticket = claim_new(&b, b"big", fp).await;
        let lease_end = ticket.lease_expires_at_ms();
        match b.complete(ticket, &vec![0u8; over], LONG).await {
            Err(Error::ResponseTooLarge { len, max: m }) => assert_eq!((len, m), (over, max)),
            other => panic!("a {over}-byte response: expected ResponseTooLarge, got {other:?}"),
        }
        assert_eq!(
            in_progress(b.claim(b"big", fp).await, "after a refused response"),
            lease_end
        );
    }
}
