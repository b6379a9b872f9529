//! Racing claims: of many threads that claim one key at the same moment,
//! exactly one gets `Acquired` and the rest `InProgress`, in every durability
//! mode, for many keys in a row; threads on distinct keys all acquire; and
//! once the winner completes, every racer replays the same bytes.

mod common;

use common::{acquire_with, clock, durability_modes};
use idemkv::{Claim, Durability, Fingerprint, Options, Seen, Store};
use std::collections::HashSet;
use std::sync::{Barrier, Mutex};
use std::thread;
use std::time::Duration;

const THREADS: usize = 16;

/// Every durability mode; `Periodic` flushes often, so races meet flushes.
fn modes() -> [Durability; 3] {
    durability_modes(Duration::from_millis(2))
}

/// Options in `durability` on a manual clock that stays put.
fn on_manual_clock(durability: Durability) -> Options {
    Options::new().durability(durability).clock(clock())
}

/// What one racer saw, reduced to what is comparable across threads.
#[derive(Debug)]
enum Answer {
    Acquired { generation: u64, lease_end: u64 },
    InProgress { lease_end: u64 },
    Replay,
    Mismatch,
}

fn reduce(claim: Claim, keep: &Mutex<Vec<idemkv::Ticket>>) -> Answer {
    match claim {
        Claim::Acquired(t) => {
            let seen = Answer::Acquired {
                generation: t.generation(),
                lease_end: t.lease_expires_at_ms(),
            };
            keep.lock().unwrap().push(t);
            seen
        }
        Claim::InProgress {
            lease_expires_at_ms,
        } => Answer::InProgress {
            lease_end: lease_expires_at_ms,
        },
        Claim::Replay(_) => Answer::Replay,
        Claim::Mismatch => Answer::Mismatch,
    }
}

/// Runs `rounds` races: in each, all threads claim key `k{round}` at once.
/// Returns every round's answers.
fn race(
    store: &Store,
    rounds: usize,
    fp_of: impl Fn(usize) -> Fingerprint + Sync,
) -> Vec<Vec<Answer>> {
    let barrier = Barrier::new(THREADS);
    let results: Vec<Mutex<Vec<Answer>>> = (0..rounds).map(|_| Mutex::new(Vec::new())).collect();
    let tickets = Mutex::new(Vec::new());
    thread::scope(|s| {
        for thread in 0..THREADS {
            let (barrier, results, tickets, fp_of) = (&barrier, &results, &tickets, &fp_of);
            s.spawn(move || {
                for (round, slot) in results.iter().enumerate() {
                    barrier.wait();
                    let claim = store.claim(format!("k{round}"), fp_of(thread)).unwrap();
                    let seen = reduce(claim, tickets);
                    slot.lock().unwrap().push(seen);
                }
            });
        }
    });
    results
        .into_iter()
        .map(|m| m.into_inner().unwrap())
        .collect()
}

fn check_one_winner(round: usize, answers: &[Answer]) -> u64 {
    assert_eq!(answers.len(), THREADS);
    let winners: Vec<_> = answers
        .iter()
        .filter_map(|a| match a {
            Answer::Acquired {
                generation,
                lease_end,
            } => Some((*generation, *lease_end)),
            _ => None,
        })
        .collect();
    assert_eq!(
        winners.len(),
        1,
        "round {round}: exactly one Acquired, got {answers:?}"
    );
    let (generation, lease_end) = winners[0];
    for a in answers {
        match a {
            Answer::Acquired { .. } => {}
            Answer::InProgress { lease_end: end } => assert_eq!(
                *end, lease_end,
                "round {round}: losers see the winner's lease"
            ),
            other => panic!("round {round}: a loser must see InProgress, got {other:?}"),
        }
    }
    generation
}

#[test]
fn exactly_one_racer_acquires_each_key_in_every_durability_mode() {
    for durability in modes() {
        let dir = tempfile::tempdir().unwrap();
        let store = on_manual_clock(durability)
            .segment_size(64 << 10)
            .max_response_len(1024)
            .open(dir.path())
            .unwrap();
        let rounds = 60;
        let results = race(&store, rounds, |_| Fingerprint::of(b"same request"));
        let mut generations = HashSet::new();
        for (round, answers) in results.iter().enumerate() {
            let g = check_one_winner(round, answers);
            assert!(generations.insert(g), "generation {g} handed out twice");
        }
        let stats = store.stats();
        assert_eq!(stats.acquired, rounds as u64, "{durability:?}");
        assert_eq!(stats.in_progress, (rounds * (THREADS - 1)) as u64);
        assert_eq!(stats.claims, (rounds * THREADS) as u64);
        assert_eq!(stats.live_keys, rounds as u64);
    }
}

#[test]
fn racers_with_different_fingerprints_get_one_acquired_and_mismatches() {
    for durability in modes() {
        let dir = tempfile::tempdir().unwrap();
        let store = on_manual_clock(durability).open(dir.path()).unwrap();
        let fp = |thread: usize| Fingerprint::from_u128((thread % 2) as u128 + 1);
        // Whichever fingerprint wins, the other half of the racers mismatch.
        let results = race(&store, 30, fp);
        for (round, answers) in results.iter().enumerate() {
            let acquired = answers
                .iter()
                .filter(|a| matches!(a, Answer::Acquired { .. }))
                .count();
            let in_progress = answers
                .iter()
                .filter(|a| matches!(a, Answer::InProgress { .. }))
                .count();
            let mismatches = answers
                .iter()
                .filter(|a| matches!(a, Answer::Mismatch))
                .count();
            assert_eq!(acquired, 1, "round {round}: {answers:?}");
            // Half the racers share the winner's fingerprint.
            assert_eq!(in_progress, THREADS / 2 - 1, "round {round}: {answers:?}");
            assert_eq!(mismatches, THREADS / 2, "round {round}: {answers:?}");
        }
    }
}

#[test]
fn racers_on_distinct_keys_all_acquire() {
    for durability in modes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Options::new()
            .durability(durability)
            .segment_size(64 << 10)
            .max_response_len(1024)
            .open(dir.path())
            .unwrap();
        let per_thread = 150;
        let barrier = Barrier::new(THREADS);
        let generations = Mutex::new(Vec::new());
        thread::scope(|s| {
            for thread in 0..THREADS {
                let (store, barrier, generations) = (&store, &barrier, &generations);
                s.spawn(move || {
                    barrier.wait();
                    let mut mine = Vec::new();
                    for i in 0..per_thread {
                        let key = format!("t{thread}-k{i}");
                        match store.claim(&key, Fingerprint::of(key.as_bytes())).unwrap() {
                            Claim::Acquired(t) => {
                                mine.push(t.generation());
                                if i % 2 == 0 {
                                    store.complete(t, key.as_bytes()).unwrap();
                                } else {
                                    drop(t);
                                }
                            }
                            other => panic!("{key} is fresh, got {other:?}"),
                        }
                    }
                    generations.lock().unwrap().extend(mine);
                });
            }
        });
        let generations = generations.into_inner().unwrap();
        let total = THREADS * per_thread;
        assert_eq!(generations.len(), total);
        let unique: HashSet<_> = generations.iter().collect();
        assert_eq!(
            unique.len(),
            total,
            "generations are unique ({durability:?})"
        );
        let stats = store.stats();
        assert_eq!(stats.acquired, total as u64);
        assert_eq!(stats.live_keys, total as u64);
        assert!(stats.segments > 1, "the race spans a rollover");
        for thread in 0..THREADS {
            for i in (0..per_thread).step_by(2) {
                let key = format!("t{thread}-k{i}");
                assert!(matches!(
                    store.claim(&key, Fingerprint::of(key.as_bytes())).unwrap(),
                    Claim::Replay(c) if c.response() == key.as_bytes()
                ));
            }
        }
    }
}

#[test]
fn after_the_winner_completes_every_racer_replays_the_same_bytes() {
    for durability in modes() {
        let dir = tempfile::tempdir().unwrap();
        let store = on_manual_clock(durability).open(dir.path()).unwrap();
        let fp = Fingerprint::of(b"charge 500");
        let rounds = 20;
        let barrier = Barrier::new(THREADS);
        let replays: Mutex<Vec<(usize, Vec<u8>)>> = Mutex::new(Vec::new());
        let winners = Mutex::new(vec![0usize; rounds]);
        let expected: Vec<Vec<u8>> = (0..rounds)
            .map(|r| {
                let mut v = format!("response for round {r}\0").into_bytes();
                v.extend((0..=255u8).rev());
                v
            })
            .collect();
        thread::scope(|s| {
            for _ in 0..THREADS {
                let (store, barrier, replays, winners, expected) =
                    (&store, &barrier, &replays, &winners, &expected);
                s.spawn(move || {
                    for (round, response) in expected.iter().enumerate() {
                        let key = format!("k{round}");
                        barrier.wait();
                        let mine = match store.claim(&key, fp).unwrap() {
                            Claim::Acquired(t) => Some(t),
                            Claim::InProgress { .. } => None,
                            other => panic!("first claim: {other:?}"),
                        };
                        barrier.wait();
                        if let Some(t) = mine {
                            winners.lock().unwrap()[round] += 1;
                            store.complete(t, response).unwrap();
                        }
                        barrier.wait();
                        match store.claim(&key, fp).unwrap() {
                            Claim::Replay(done) => {
                                replays.lock().unwrap().push((round, done.into_response()))
                            }
                            other => panic!("after completion every racer replays: {other:?}"),
                        }
                    }
                });
            }
        });
        assert!(winners.into_inner().unwrap().iter().all(|&w| w == 1));
        let replays = replays.into_inner().unwrap();
        assert_eq!(replays.len(), rounds * THREADS);
        for (round, bytes) in &replays {
            assert_eq!(bytes, &expected[*round], "round {round} ({durability:?})");
        }
        assert_eq!(store.stats().replays, (rounds * THREADS) as u64);
    }
}

#[test]
fn exactly_one_racer_takes_over_an_expired_lease() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let store = Options::new()
        .clock(clock.clone())
        .lease(Duration::from_millis(1_000))
        .open(dir.path())
        .unwrap();
    let fp = Fingerprint::of(b"req");
    let rounds = 20;
    let mut abandoned = Vec::new();
    for round in 0..rounds {
        abandoned.push(acquire_with(&store, format!("k{round}"), fp));
    }
    clock.advance(Duration::from_millis(1_000));
    let results = race(&store, rounds, |_| fp);
    for (round, answers) in results.iter().enumerate() {
        let g = check_one_winner(round, answers);
        assert!(g > abandoned[round].generation());
    }
    assert_eq!(store.stats().takeovers, rounds as u64);
    for t in abandoned {
        assert!(matches!(
            store.complete(t, b"stale"),
            Err(idemkv::Error::LeaseLost)
        ));
    }
}

#[test]
fn exactly_one_racer_marks_a_message_first() {
    for durability in modes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Options::new()
            .durability(durability)
            .open(dir.path())
            .unwrap();
        let rounds = 30;
        let barrier = Barrier::new(THREADS);
        let firsts = Mutex::new(vec![0usize; rounds]);
        thread::scope(|s| {
            for _ in 0..THREADS {
                let (store, barrier, firsts) = (&store, &barrier, &firsts);
                s.spawn(move || {
                    for round in 0..rounds {
                        barrier.wait();
                        let seen = store
                            .mark_seen(format!("msg-{round}"), Duration::from_secs(60))
                            .unwrap();
                        if seen == Seen::First {
                            firsts.lock().unwrap()[round] += 1;
                        }
                    }
                });
            }
        });
        assert!(
            firsts.into_inner().unwrap().iter().all(|&n| n == 1),
            "{durability:?}"
        );
        let stats = store.stats();
        assert_eq!(stats.seen_first, rounds as u64);
        assert_eq!(stats.seen_duplicates, (rounds * (THREADS - 1)) as u64);
    }
}
