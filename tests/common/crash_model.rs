//! A reference model for crash tests: it records the state every
//! acknowledged operation left each key in, and checks a recovered store
//! against it. Shared by `tests/crash_points.rs`, `tests/io_errors.rs` and the
//! `crash_ops` fuzz target.
#![allow(
    dead_code,
    reason = "each user drives a different subset of operations"
)]

use idemkv::storage::SimStorage;
use idemkv::{
    Claim, Clock, Durability, Error, Fingerprint, ManualClock, Options, Record, Seen, Store, Ticket,
};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub const DIR: &str = "/store";
pub const LEASE_MS: u64 = 1_000;
pub const RETENTION_MS: u64 = 60_000;
/// Keys are `k0`..`k{KEYS-1}` (claims) and `s0`.. (mark_seen).
pub const KEYS: u8 = 200;

/// One step of a workload.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(fuzzing, derive(arbitrary::Arbitrary))]
pub enum Op {
    Claim { key: u8, fp: bool },
    Complete { len: u8 },
    Release,
    Extend { ms: u16 },
    Remove { key: u8 },
    MarkSeen { key: u8 },
    Advance { ms: u16 },
    Sync,
    Compact,
}

/// What a key must look like after recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Want {
    Absent,
    InProgress {
        fp: u128,
        lease_expires_at_ms: u64,
    },
    Completed {
        fp: u128,
        response: Vec<u8>,
        expires_at_ms: u64,
    },
    Seen {
        expires_at_ms: u64,
    },
}

impl Want {
    /// The state as `get` reports it at `now_ms` (expired records are absent).
    fn at(&self, now_ms: u64) -> Want {
        let live = match self {
            Want::Absent => false,
            Want::InProgress {
                lease_expires_at_ms,
                ..
            } => now_ms < lease_expires_at_ms + RETENTION_MS,
            Want::Completed { expires_at_ms, .. } | Want::Seen { expires_at_ms } => {
                now_ms < *expires_at_ms
            }
        };
        if live { self.clone() } else { Want::Absent }
    }
}

pub fn open(sim: &SimStorage, clock: &Arc<ManualClock>) -> idemkv::Result<Store> {
    open_with(sim, clock, Durability::Immediate)
}

pub fn open_with(
    sim: &SimStorage,
    clock: &Arc<ManualClock>,
    durability: Durability,
) -> idemkv::Result<Store> {
    Options::new()
        .storage(Arc::new(sim.clone()))
        .clock(clock.clone())
        .durability(durability)
        .lease(Duration::from_millis(LEASE_MS))
        .retention(Duration::from_millis(RETENTION_MS))
        .segment_size(4096)
        .max_response_len(512)
        .background_compaction(false)
        .open(DIR)
}

fn claim_key(key: u8) -> String {
    format!("k{}", key % KEYS)
}

fn seen_key(key: u8) -> String {
    format!("s{}", key % KEYS)
}

/// Drives a store and keeps the model of what it acknowledged.
///
/// Under `Durability::Immediate` (the default) every acknowledged write is
/// durable, and the model is exact. Under `Durability::None` only what a
/// successful `sync` covered is durable: the model keeps each key's state
/// at the last sync and every state it took since, and a recovered key may
/// show any of those.
#[derive(Default)]
pub struct Harness {
    model: BTreeMap<String, Want>,
    held: Vec<(Ticket, u128)>,
    /// The key of the operation that failed, and the state it would have left.
    in_flight: Option<(String, Want)>,
    /// `Durability::None`: the states each key took since the last sync.
    unsynced: Option<BTreeMap<String, Vec<Want>>>,
}

impl Harness {
    /// A model for a store opened with `Durability::None`, whose writes are
    /// durable only once a `sync` returned.
    pub fn unsynced() -> Harness {
        Harness {
            unsynced: Some(BTreeMap::new()),
            ..Harness::default()
        }
    }

    /// Records an acknowledged write: under `Immediate` it is the key's
    /// state; under `None` one more state it may show until the next sync.
    fn acked(&mut self, key: String, after: Want) {
        match &mut self.unsynced {
            None => {
                self.model.insert(key, after);
            }
            Some(since) => since.entry(key).or_default().push(after),
        }
    }

    /// A successful sync: everything acknowledged is durable.
    fn synced(&mut self) {
        if let Some(since) = &mut self.unsynced {
            for (k, states) in std::mem::take(since) {
                if let Some(last) = states.last() {
                    self.model.insert(k, last.clone());
                }
            }
        }
    }

    /// Applies `op`; returns false once an operation failed (the store is
    /// then poisoned or the machine crashed, and the workload stops).
    pub fn apply(&mut self, store: &Store, clock: &ManualClock, op: Op) -> bool {
        let now = clock.now_ms();
        match op {
            Op::Claim { key, fp } => {
                let k = claim_key(key);
                let fp = u128::from(fp);
                match store.claim(&k, Fingerprint::from_u128(fp)) {
                    Ok(Claim::Acquired(t)) => {
                        self.acked(
                            k,
                            Want::InProgress {
                                fp,
                                lease_expires_at_ms: now + LEASE_MS,
                            },
                        );
                        self.held.push((t, fp));
                    }
                    Ok(_) => {}
                    Err(_) => {
                        return self.failed(
                            k,
                            Want::InProgress {
                                fp,
                                lease_expires_at_ms: now + LEASE_MS,
                            },
                        );
                    }
                }
            }
            Op::Complete { len } => {
                let Some((t, fp)) = self.held.pop() else {
                    return true;
                };
                let k = String::from_utf8(t.key().to_vec()).expect("ascii keys");
                let response: Vec<u8> =
                    (0..usize::from(len) * 2).map(|i| (i as u8) ^ len).collect();
                let after = Want::Completed {
                    fp,
                    response: response.clone(),
                    expires_at_ms: now + RETENTION_MS,
                };
                match store.complete(t, &response) {
                    Ok(()) => {
                        self.acked(k, after);
                    }
                    Err(Error::LeaseLost) => {}
                    Err(_) => return self.failed(k, after),
                }
            }
            Op::Release => {
                let Some((t, _)) = self.held.pop() else {
                    return true;
                };
                let k = String::from_utf8(t.key().to_vec()).expect("ascii keys");
                match store.release(t) {
                    Ok(()) => {
                        self.acked(k, Want::Absent);
                    }
                    Err(Error::LeaseLost) => {}
                    Err(_) => return self.failed(k, Want::Absent),
                }
            }
            Op::Extend { ms } => {
                let Some((t, fp)) = self.held.last() else {
                    return true;
                };
                let (k, fp) = (
                    String::from_utf8(t.key().to_vec()).expect("ascii keys"),
                    *fp,
                );
                let after = Want::InProgress {
                    fp,
                    lease_expires_at_ms: now + u64::from(ms),
                };
                match store.extend_lease(t, Duration::from_millis(u64::from(ms))) {
                    Ok(_) => {
                        self.acked(k, after);
                    }
                    Err(Error::LeaseLost) => {}
                    Err(_) => return self.failed(k, after),
                }
            }
            Op::Remove { key } => {
                let k = claim_key(key);
                match store.remove(&k) {
                    Ok(_) => {
                        self.acked(k, Want::Absent);
                    }
                    Err(_) => return self.failed(k, Want::Absent),
                }
            }
            Op::MarkSeen { key } => {
                let k = seen_key(key);
                let after = Want::Seen {
                    expires_at_ms: now + RETENTION_MS,
                };
                match store.mark_seen(&k, Duration::from_millis(RETENTION_MS)) {
                    Ok(Seen::First) => {
                        self.acked(k, after);
                    }
                    Ok(Seen::Duplicate) => {}
                    Err(_) => return self.failed(k, after),
                }
            }
            Op::Advance { ms } => clock.advance(Duration::from_millis(u64::from(ms))),
            Op::Sync => {
                if store.sync().is_err() {
                    self.in_flight = None;
                    return false;
                }
                self.synced();
            }
            Op::Compact => {
                if store.compact().is_err() {
                    self.in_flight = None;
                    return false;
                }
            }
        }
        true
    }

    fn failed(&mut self, key: String, after: Want) -> bool {
        self.in_flight = Some((key, after));
        false
    }

    /// The states `key` may show after recovery at `now_ms`: its durable
    /// state, every state acknowledged since the last sync (under `None`),
    /// and the state of the operation that failed.
    fn allowed(&self, key: &str, now_ms: u64) -> Vec<Want> {
        let durable = self.model.get(key).cloned().unwrap_or(Want::Absent);
        let mut allowed = vec![durable.at(now_ms)];
        if let Some(states) = self.unsynced.as_ref().and_then(|s| s.get(key)) {
            allowed.extend(states.iter().map(|w| w.at(now_ms)));
        }
        if let Some((fk, after)) = &self.in_flight
            && fk == key
        {
            allowed.push(after.at(now_ms));
        }
        allowed
    }

    /// Checks every key of the recovered store against the model: each
    /// shows its acknowledged state, or, for the key of the failed
    /// operation, possibly the state that operation would have left.
    pub fn check(&self, store: &Store, now_ms: u64, label: &str) {
        for i in 0..KEYS {
            for k in [claim_key(i), seen_key(i)] {
                let got = observed(store, &k);
                let allowed = self.allowed(&k, now_ms);
                assert!(
                    allowed.contains(&got),
                    "{label}: key {k}: got {got:?}, allowed {allowed:?}"
                );
            }
        }
    }
}

fn observed(store: &Store, k: &str) -> Want {
    match store.get(k).expect("get after recovery") {
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
            expires_at_ms: c.expires_at_ms(),
        },
        Some(Record::Seen { expires_at_ms, .. }) => Want::Seen { expires_at_ms },
    }
}

/// After recovery the store takes new writes, and they survive a clean reopen.
pub fn check_writable(sim: &SimStorage, clock: &Arc<ManualClock>, store: Store, label: &str) {
    let fp = Fingerprint::of(b"after");
    match store
        .claim("after-crash", fp)
        .expect("claim after recovery")
    {
        Claim::Acquired(t) => store
            .complete(t, b"written after recovery")
            .expect("complete after recovery"),
        other => panic!("{label}: a fresh key after recovery answered {other:?}"),
    }
    drop(store);
    let store = open(sim, clock).expect("clean reopen");
    match store.claim("after-crash", fp).expect("claim after reopen") {
        Claim::Replay(c) => assert_eq!(c.response(), b"written after recovery", "{label}"),
        other => panic!("{label}: {other:?}"),
    }
}
