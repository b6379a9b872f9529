//! Criterion benches for the claim path.
//!
//! - `claim_complete/<mode>`: claim a fresh key, then complete it with a
//!   130-byte response: the cost of one first attempt.
//! - `replay/<mode>`: claim a key that is already completed: the cost of
//!   answering a retry.
//!
//! Each runs on 1 and 2 threads in each durability mode (`immediate`,
//! `periodic_10ms`, `none`). One element is one claim+complete pair or one
//! replay; multi-thread figures are the total across threads. Keys look like
//! `t0042:POST/v1/charges:<32 hex>` (54 bytes).
//!
//! - `replay_mix_90_10/none`: 2 threads, 90% retries of completed keys and
//!   10% fresh pairs; one element is one request.
//! - `mark_seen/none`: one-shot dedup of fresh ids, 1 and 2 threads.
//! - `durable_pairs/<n>_threads`: pairs under `Immediate` at 1, 2, 16 and 64
//!   threads, showing how group commit shares fsyncs.
//!
//! Run with `cargo bench --bench claim`, or a subset with
//! `cargo bench --bench claim -- replay/none`.

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main};
use idemkv::{Claim, Durability, Fingerprint, Options, Store};
use std::hint::black_box;
use std::sync::Barrier;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// Length of every key: `t0042:POST/v1/charges:` plus 32 hex digits.
const KEY_LEN: usize = 54;
/// Length of every stored response.
const RESPONSE_LEN: usize = 130;
/// Completed keys per thread that the replay benches cycle through.
const REPLAY_KEYS_PER_THREAD: usize = 16_384;

type Key = [u8; KEY_LEN];

/// The modes benchmarked, with their group-name suffix.
fn modes() -> [(&'static str, Durability); 3] {
    [
        ("immediate", Durability::Immediate),
        (
            "periodic_10ms",
            Durability::Periodic(Duration::from_millis(10)),
        ),
        ("none", Durability::None),
    ]
}

/// `t<thread>:POST/v1/charges:<32 hex digits derived from n>`.
fn key(thread: usize, n: u64) -> Key {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut k = [0u8; KEY_LEN];
    let prefix = format!("t{thread:04}:POST/v1/charges:");
    k[..prefix.len()].copy_from_slice(prefix.as_bytes());
    let mixed = (u128::from(mix(n)) << 64) | u128::from(mix(!n));
    for (i, slot) in k[prefix.len()..].iter_mut().enumerate() {
        *slot = HEX[((mixed >> (124 - 4 * i)) & 0xf) as usize];
    }
    k
}

/// SplitMix64's finalizer: spreads consecutive counters over the key space.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `ops` keys for thread `t` that no run has used: numbers drawn from `next`.
fn fresh_keys(next: &AtomicU64, t: usize, ops: u64) -> Vec<Key> {
    let first = next.fetch_add(ops, Ordering::Relaxed);
    (first..first + ops).map(|n| key(t, n)).collect()
}

fn response() -> Vec<u8> {
    let mut r = br#"{"id":"ch_3PqR8s2eZvKYlo2C1x0aBcDe","object":"charge","amount":2000,"currency":"usd","status":"succeeded","paid":true}"#
        .to_vec();
    r.resize(RESPONSE_LEN, b' ');
    r
}

/// Splits `iters` over `threads`: the first ones take the remainder.
fn share(iters: u64, threads: usize, t: usize) -> u64 {
    let threads = threads as u64;
    iters / threads + u64::from((t as u64) < iters % threads)
}

/// Runs `work(thread, ops)` on `threads` threads started together and
/// returns the wall time from the common start until the last one ends.
/// `prepare(thread, ops)` runs first on each thread, outside the timing.
fn timed_threads<P: Send>(
    threads: usize,
    iters: u64,
    prepare: impl Fn(usize, u64) -> P + Sync,
    work: impl Fn(usize, P) + Sync,
) -> Duration {
    if threads == 1 {
        let prepared = prepare(0, iters);
        let start = Instant::now();
        work(0, prepared);
        return start.elapsed();
    }
    let barrier = Barrier::new(threads + 1);
    thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (barrier, prepare, work) = (&barrier, &prepare, &work);
                s.spawn(move || {
                    let prepared = prepare(t, share(iters, threads, t));
                    barrier.wait();
                    work(t, prepared);
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        for h in handles {
            h.join().expect("bench thread panicked");
        }
        start.elapsed()
    })
}

fn configure(group: &mut BenchmarkGroup<'_, WallTime>, slow: bool) {
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(if slow { 3 } else { 2 }))
        .throughput(Throughput::Elements(1));
}

/// Claim a fresh key and complete it.
fn claim_complete(c: &mut Criterion) {
    let fp = Fingerprint::of(br#"{"amount":2000,"currency":"usd"}"#);
    let resp = response();
    for (name, durability) in modes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Options::new()
            .durability(durability)
            .open(dir.path())
            .expect("open store");
        // Keys are never reused: each thread draws fresh ones from its counter.
        let next: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];
        let mut group = c.benchmark_group(format!("claim_complete/{name}"));
        configure(&mut group, durability == Durability::Immediate);
        for threads in [1, 2] {
            let id = if threads == 1 {
                "1_thread"
            } else {
                "2_threads"
            };
            group.bench_function(id, |b| {
                b.iter_custom(|iters| {
                    timed_threads(
                        threads,
                        iters,
                        |t, ops| fresh_keys(&next[t], t, ops),
                        |_, keys| claim_complete_all(&store, fp, &resp, &keys),
                    )
                })
            });
        }
        group.finish();
    }
}

/// Claims a completed key, which must replay.
fn claim_replays(store: &Store, key: Key, fp: Fingerprint) {
    match store.claim(key, fp).expect("claim") {
        Claim::Replay(done) => {
            black_box(done);
        }
        other => panic!("a completed key must replay, got {other:?}"),
    }
}

fn claim_complete_all(store: &Store, fp: Fingerprint, resp: &[u8], keys: &[Key]) {
    for k in keys {
        match store.claim(k, fp).expect("claim") {
            Claim::Acquired(ticket) => store.complete(ticket, resp).expect("complete"),
            other => panic!("a fresh key must be acquired, got {other:?}"),
        }
    }
}

/// Claim a key that is already completed: the stored response comes back.
fn replay(c: &mut Criterion) {
    let fp = Fingerprint::of(br#"{"amount":2000,"currency":"usd"}"#);
    let resp = response();
    for (name, durability) in modes() {
        let dir = tempfile::tempdir().expect("temp dir");
        // Fill the store quickly without fsyncs, then reopen it in the mode
        // under test; the replayed records are then on disk in every mode.
        {
            let store = Options::new()
                .durability(Durability::None)
                .open(dir.path())
                .expect("open store");
            for t in 0..2 {
                for n in 0..REPLAY_KEYS_PER_THREAD as u64 {
                    claim_complete_all(&store, fp, &resp, &[key(t, n)]);
                }
            }
            store.sync().expect("sync");
        }
        let store = Options::new()
            .durability(durability)
            .open(dir.path())
            .expect("reopen store");
        let mut group = c.benchmark_group(format!("replay/{name}"));
        configure(&mut group, false);
        for threads in [1, 2] {
            let id = if threads == 1 {
                "1_thread"
            } else {
                "2_threads"
            };
            let keys: Vec<Vec<Key>> = (0..threads)
                .map(|t| {
                    (0..REPLAY_KEYS_PER_THREAD as u64)
                        .map(|n| key(t, n))
                        .collect()
                })
                .collect();
            group.bench_function(id, |b| {
                b.iter_custom(|iters| {
                    timed_threads(
                        threads,
                        iters,
                        |_, ops| ops,
                        |t, ops| {
                            let keys = &keys[t];
                            for i in 0..ops as usize {
                                claim_replays(&store, keys[i % keys.len()], fp);
                            }
                        },
                    )
                })
            });
        }
        group.finish();
    }
}

/// Durable pairs (`Immediate`) at 1, 2, 16 and 64 threads: how well group
/// commit shares fsyncs as callers multiply.
fn durable_threads(c: &mut Criterion) {
    let fp = Fingerprint::of(br#"{"amount":2000,"currency":"usd"}"#);
    let resp = response();
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path()).expect("open store");
    let next = AtomicU64::new(0);
    let mut group = c.benchmark_group("durable_pairs");
    configure(&mut group, true);
    for threads in [1, 2, 16, 64] {
        group.bench_function(format!("{threads}_threads"), |b| {
            b.iter_custom(|iters| {
                timed_threads(
                    threads,
                    iters,
                    |t, ops| fresh_keys(&next, t, ops),
                    |_, keys| claim_complete_all(&store, fp, &resp, &keys),
                )
            })
        });
    }
    group.finish();
}

/// 90% retries of completed keys, 10% fresh pairs, on 2 threads, `None`.
fn replay_mix(c: &mut Criterion) {
    let fp = Fingerprint::of(br#"{"amount":2000,"currency":"usd"}"#);
    let resp = response();
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Options::new()
        .durability(Durability::None)
        .open(dir.path())
        .expect("open store");
    let done: Vec<Vec<Key>> = (0..2)
        .map(|t| {
            let keys: Vec<Key> = (0..REPLAY_KEYS_PER_THREAD as u64)
                .map(|n| key(t, n))
                .collect();
            claim_complete_all(&store, fp, &resp, &keys);
            keys
        })
        .collect();
    let next = AtomicU64::new(1 << 40);
    let mut group = c.benchmark_group("replay_mix_90_10/none");
    configure(&mut group, false);
    group.bench_function("2_threads", |b| {
        b.iter_custom(|iters| {
            timed_threads(
                2,
                iters,
                |t, ops| fresh_keys(&next, t, ops),
                |t, fresh| {
                    let old = &done[t];
                    for (i, k) in fresh.iter().enumerate() {
                        if i % 10 == 9 {
                            claim_complete_all(&store, fp, &resp, std::slice::from_ref(k));
                        } else {
                            claim_replays(&store, old[i % old.len()], fp);
                        }
                    }
                },
            )
        })
    });
    group.finish();
}

/// `mark_seen` of fresh message ids: one record per call, `None`.
fn mark_seen(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Options::new()
        .durability(Durability::None)
        .open(dir.path())
        .expect("open store");
    let next = AtomicU64::new(0);
    let mut group = c.benchmark_group("mark_seen/none");
    configure(&mut group, false);
    for threads in [1, 2] {
        group.bench_function(format!("{threads}_threads"), |b| {
            b.iter_custom(|iters| {
                timed_threads(
                    threads,
                    iters,
                    |t, ops| fresh_keys(&next, t, ops),
                    |_, keys| {
                        for k in &keys {
                            let seen = store
                                .mark_seen(k, Duration::from_secs(3600))
                                .expect("mark_seen");
                            assert_eq!(seen, idemkv::Seen::First);
                        }
                    },
                )
            })
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    claim_complete,
    replay,
    replay_mix,
    mark_seen,
    durable_threads
);
criterion_main!(benches);
