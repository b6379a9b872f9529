//! Power loss at every storage operation of a workload: after the crash and a
//! reboot, the store opens and holds every acknowledged write unchanged,
//! nothing that was never written, and accepts new writes. A second crash
//! during that recovery changes none of this.

use idemkv::storage::{PendingFate, SimStorage};
use idemkv::{Claim, Durability, Fingerprint, ManualClock, Options, Record, Seen, Store, Ticket};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const DIR: &str = "/store";
const LEASE_MS: u64 = 1_000;

/// What a key must look like after recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Want {
    Absent,
    InProgress { fp: u128, lease_expires_at_ms: u64 },
    Completed { fp: u128, response: Vec<u8> },
    Seen,
}

fn open(sim: &SimStorage, clock: &Arc<ManualClock>) -> idemkv::Result<Store> {
    Options::new()
        .storage(Arc::new(sim.clone()))
        .clock(clock.clone())
        .durability(Durability::Immediate)
        .lease(Duration::from_millis(LEASE_MS))
        .retention(Duration::from_secs(3600))
        .segment_size(4096)
        .max_response_len(512)
        .open(DIR)
}

fn key(i: u64) -> String {
    format!("k{}", i % 97)
}

/// Runs a deterministic workload until it finishes or an operation fails.
/// `model` holds the state every acknowledged operation left; `in_flight`
/// names the key of the operation that failed, with the state it would have
/// left had it succeeded.
fn run_workload(
    store: &Store,
    clock: &ManualClock,
    model: &mut BTreeMap<String, Want>,
) -> Option<(String, Want)> {
    let mut held: Vec<(Ticket, u128)> = Vec::new();
    for i in 0..600u64 {
        let k = key(i * 7 + i / 13);
        let fp = u128::from(i % 3 == 0);
        clock.advance(Duration::from_millis(37));
        let now = idemkv::Clock::now_ms(clock);
        match i % 10 {
            0..=4 => {
                let Ok(claim) = store.claim(&k, Fingerprint::from_u128(fp)) else {
                    return Some((
                        k.clone(),
                        Want::InProgress {
                            fp,
                            lease_expires_at_ms: now + LEASE_MS,
                        },
                    ));
                };
                if let Claim::Acquired(t) = claim {
                    model.insert(
                        k,
                        Want::InProgress {
                            fp,
                            lease_expires_at_ms: now + LEASE_MS,
                        },
                    );
                    held.push((t, fp));
                }
            }
            5..=7 => {
                if let Some((t, fp)) = held.pop() {
                    let k = String::from_utf8(t.key().to_vec()).unwrap();
                    let response = format!("response {i} for {k}")
                        .repeat(1 + (i % 5) as usize)
                        .into_bytes();
                    let after = Want::Completed {
                        fp,
                        response: response.clone(),
                    };
                    match store.complete(t, &response) {
                        Ok(()) => {
                            model.insert(k, after);
                        }
                        Err(idemkv::Error::LeaseLost) => {}
                        Err(_) => return Some((k, after)),
                    }
                }
            }
            8 => {
                if let Some((t, _)) = held.pop() {
                    let k = String::from_utf8(t.key().to_vec()).unwrap();
                    match store.release(t) {
                        Ok(()) => {
                            model.insert(k, Want::Absent);
                        }
                        Err(idemkv::Error::LeaseLost) => {}
                        Err(_) => return Some((k, Want::Absent)),
                    }
                }
            }
            _ => {
                if i % 20 == 9 {
                    match store.remove(&k) {
                        Ok(_) => {
                            model.insert(k, Want::Absent);
                        }
                        Err(_) => return Some((k, Want::Absent)),
                    }
                } else {
                    let seen_key = format!("msg{i}");
                    match store.mark_seen(&seen_key, Duration::from_secs(3600)) {
                        Ok(Seen::First) => {
                            model.insert(seen_key, Want::Seen);
                        }
                        Ok(Seen::Duplicate) => panic!("{seen_key} is new"),
                        Err(_) => return Some((seen_key, Want::Seen)),
                    }
                }
            }
        }
    }
    None
}

fn observed(store: &Store, k: &str) -> Want {
    match store.get(k).unwrap() {
        None => Want::Absent,
        Some(Record::InProgress {
            fingerprint,
            lease_expires_at_ms,
            ..
        }) => Want::InProgress {
            fp: fingerprint.as_u128(),
            lease_expires_at_ms,
        },
        Some(Record::Completed(c)) => Want::Completed {
            fp: c.fingerprint().as_u128(),
            response: c.response().to_vec(),
        },
        Some(Record::Seen { .. }) => Want::Seen,
        Some(other) => panic!("unexpected record {other:?}"),
    }
}

/// Checks the recovered store against the model; the in-flight key may show
/// either its old or its new state.
fn check(
    store: &Store,
    model: &BTreeMap<String, Want>,
    in_flight: &Option<(String, Want)>,
    label: &str,
) {
    let mut keys: Vec<String> = (0..97).map(|i| format!("k{i}")).collect();
    keys.extend((0..600).map(|i| format!("msg{i}")));
    for k in keys {
        let before = model.get(&k).cloned().unwrap_or(Want::Absent);
        let got = observed(store, &k);
        let ok = got == before
            || in_flight
                .as_ref()
                .is_some_and(|(fk, after)| *fk == k && got == *after);
        assert!(
            ok,
            "{label}: key {k}: got {got:?}, acknowledged {before:?}, in flight {in_flight:?}"
        );
    }
}

/// After recovery the store takes new writes, and they survive a clean reopen.
fn check_writable(sim: &SimStorage, clock: &Arc<ManualClock>, store: Store, label: &str) {
    let fp = Fingerprint::of(b"after");
    let Claim::Acquired(t) = store.claim("after-crash", fp).unwrap() else {
        panic!("{label}: fresh key")
    };
    store.complete(t, b"written after recovery").unwrap();
    drop(store);
    let store = open(sim, clock).unwrap();
    match store.claim("after-crash", fp).unwrap() {
        Claim::Replay(c) => assert_eq!(c.response(), b"written after recovery", "{label}"),
        other => panic!("{label}: {other:?}"),
    }
}

#[test]
fn every_crash_point_keeps_every_acknowledged_write() {
    // Count the storage operations of a clean run.
    let total = {
        let sim = SimStorage::new();
        let clock = Arc::new(ManualClock::new(1_000_000));
        let store = open(&sim, &clock).unwrap();
        assert!(run_workload(&store, &clock, &mut BTreeMap::new()).is_none());
        assert!(
            store.stats().segments > 3,
            "the workload rolls over segments"
        );
        drop(store);
        sim.ops()
    };
    assert!(total > 500, "workload has {total} storage operations");

    let mut recovery_crashes = 0;
    for n in 1..=total {
        let sim = SimStorage::new();
        let clock = Arc::new(ManualClock::new(1_000_000));
        let mut model = BTreeMap::new();
        sim.crash_after(n);
        let in_flight = match open(&sim, &clock) {
            Ok(store) => run_workload(&store, &clock, &mut model),
            Err(_) => None,
        };
        sim.power_loss(n, PendingFate::Random);

        // Crash again part-way through recovery, then recover for real.
        sim.crash_after(1 + n % 7);
        if open(&sim, &clock).is_err() {
            recovery_crashes += 1;
        }
        sim.power_loss(n ^ 0x5555, PendingFate::Random);

        let label = format!("crash point {n}/{total}");
        let store = open(&sim, &clock).unwrap_or_else(|e| panic!("{label}: reopen failed: {e}"));
        check(&store, &model, &in_flight, &label);
        check_writable(&sim, &clock, store, &label);
    }
    println!(
        "checked {total} crash points ({recovery_crashes} with a second crash during recovery)"
    );
}
