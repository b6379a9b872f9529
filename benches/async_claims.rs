//! Claims per second through the async API at 1,000 and 10,000
//! concurrent tasks on a 2-worker tokio runtime, beside the same workload
//! through the blocking API on 64 threads; and the same pairs through the
//! `Backend` trait beside the direct async methods.
//!
//! Each task (or thread) loops: claim a fresh key, complete it with a
//! 130-byte response. The first three rows run under `Durability::Immediate`,
//! so each pair waits for two durable writes. Printed per row: claims per
//! second (one claim per pair), claim latency p50/p99/p99.9, fsyncs, and
//! writes per fsync.
//!
//! The `trait` rows compare `Backend::claim` + `Backend::complete` on a
//! `Store` with `claim_async` + `complete_with_retention_async` (the same
//! 24 h retention), durable at 1,000 tasks and with `Durability::None` at
//! 1,000 tasks and in one task, where the per-call cost shows most.
//!
//! Run: `cargo bench --bench async_claims`. `IDEMKV_SECONDS` sets the
//! seconds per row (default 5), `IDEMKV_REPS` the repetitions (default 3;
//! the median is printed with the spread), `IDEMKV_ROWS` runs only the rows
//! whose name contains it (e.g. `IDEMKV_ROWS=trait`).

use idemkv::{Backend, Claim, Durability, Fingerprint, Options, Store};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const RESPONSE_LEN: usize = 130;
/// The retention of every completed record (the store's default).
const RETENTION: Duration = Duration::from_secs(24 * 3600);

/// How the async rows call the store.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Via {
    /// `claim_async` + `complete_with_retention_async`.
    Direct,
    /// `Backend::claim` + `Backend::complete`.
    Trait,
}

/// One pair through the direct async methods; returns the claim's latency.
async fn pair_direct(store: &Store, k: &str, response: &[u8]) -> u64 {
    let t0 = Instant::now();
    let claim = store
        .claim_async(k, Fingerprint::of(k.as_bytes()))
        .await
        .unwrap();
    let took = t0.elapsed().as_nanos() as u64;
    match claim {
        Claim::Acquired(t) => store
            .complete_with_retention_async(t, response, RETENTION)
            .await
            .unwrap(),
        other => panic!("fresh keys are acquired, got {other:?}"),
    }
    took
}

/// One pair through the `Backend` trait, generic as a caller of the trait
/// is; returns the claim's latency.
async fn pair_trait<B: Backend>(backend: &B, k: &str, response: &[u8]) -> u64 {
    let t0 = Instant::now();
    let claim = backend
        .claim(k.as_bytes(), Fingerprint::of(k.as_bytes()))
        .await
        .unwrap();
    let took = t0.elapsed().as_nanos() as u64;
    match claim {
        Claim::Acquired(t) => backend.complete(t, response, RETENTION).await.unwrap(),
        other => panic!("fresh keys are acquired, got {other:?}"),
    }
    took
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn key(worker: usize, n: u64) -> String {
    format!("t{worker:05}:POST/v1/charges:{n:032x}")
}

/// What one row measured.
struct Row {
    pairs: u64,
    seconds: f64,
    fsyncs: u64,
    latencies_ns: Vec<u64>,
}

impl Row {
    fn claims_per_s(&self) -> f64 {
        self.pairs as f64 / self.seconds
    }

    fn percentile_us(&mut self, p: f64) -> f64 {
        self.latencies_ns.sort_unstable();
        let n = self.latencies_ns.len();
        if n == 0 {
            return 0.0;
        }
        let at = ((n as f64 * p).ceil() as usize).clamp(1, n) - 1;
        self.latencies_ns[at] as f64 / 1000.0
    }
}

/// One pair; returns the claim's latency.
fn pair_blocking(store: &Store, k: &str, response: &[u8]) -> u64 {
    let started = Instant::now();
    let claim = store.claim(k, Fingerprint::of(k.as_bytes())).unwrap();
    let took = started.elapsed().as_nanos() as u64;
    match claim {
        Claim::Acquired(t) => store.complete(t, response).unwrap(),
        other => panic!("fresh keys are acquired, got {other:?}"),
    }
    took
}

fn blocking_row(threads: usize, seconds: f64) -> Row {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let response = vec![b'r'; RESPONSE_LEN];
    let fsyncs_before = store.stats().fsyncs;
    let started = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|w| {
            let (store, stop, response) = (store.clone(), stop.clone(), response.clone());
            std::thread::spawn(move || {
                let mut lat = Vec::new();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    lat.push(pair_blocking(&store, &key(w, n), &response));
                    n += 1;
                }
                lat
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(seconds));
    stop.store(true, Ordering::Relaxed);
    let latencies_ns: Vec<u64> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    Row {
        pairs: latencies_ns.len() as u64,
        seconds: started.elapsed().as_secs_f64(),
        fsyncs: store.stats().fsyncs - fsyncs_before,
        latencies_ns,
    }
}

fn async_row(tasks: usize, seconds: f64, durability: Durability, via: Via) -> Row {
    let dir = tempfile::tempdir().unwrap();
    let store = Options::new()
        .durability(durability)
        .open(dir.path())
        .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let fsyncs_before = store.stats().fsyncs;
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    // Without fsyncs to wait for, every future is ready at once, so a task
    // would never give its worker back: such tasks yield every 64 pairs, and
    // watch the deadline themselves.
    let yields = durability != Durability::Immediate;
    let latencies_ns: Vec<u64> = rt.block_on(async {
        let handles: Vec<_> = (0..tasks)
            .map(|w| {
                let (store, stop) = (store.clone(), stop.clone());
                tokio::spawn(async move {
                    let response = [b'r'; RESPONSE_LEN];
                    let mut lat = Vec::new();
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                        let k = key(w, n);
                        lat.push(match via {
                            Via::Direct => pair_direct(&store, &k, &response).await,
                            Via::Trait => pair_trait(&store, &k, &response).await,
                        });
                        n += 1;
                        if yields && n % 64 == 0 {
                            tokio::task::yield_now().await;
                        }
                    }
                    lat
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
        stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for h in handles {
            all.extend(h.await.unwrap());
        }
        all
    });
    Row {
        pairs: latencies_ns.len() as u64,
        seconds: started.elapsed().as_secs_f64(),
        fsyncs: store.stats().fsyncs - fsyncs_before,
        latencies_ns,
    }
}

fn main() {
    // `cargo bench` passes `--bench`; this binary takes no other arguments.
    let seconds = env_or("IDEMKV_SECONDS", 5) as f64;
    let reps = env_or("IDEMKV_REPS", 3).max(1);
    type Runner = Box<dyn Fn() -> Row>;
    let async_rows = [
        (
            "async, 1,000 tasks, 2 workers",
            1_000,
            Durability::Immediate,
            Via::Direct,
        ),
        (
            "async, 10,000 tasks, 2 workers",
            10_000,
            Durability::Immediate,
            Via::Direct,
        ),
        (
            "trait: direct, 1,000 tasks, durable",
            1_000,
            Durability::Immediate,
            Via::Direct,
        ),
        (
            "trait: Backend, 1,000 tasks, durable",
            1_000,
            Durability::Immediate,
            Via::Trait,
        ),
        (
            "trait: direct, 1,000 tasks, none",
            1_000,
            Durability::None,
            Via::Direct,
        ),
        (
            "trait: Backend, 1,000 tasks, none",
            1_000,
            Durability::None,
            Via::Trait,
        ),
        (
            "trait: direct, 1 task, none",
            1,
            Durability::None,
            Via::Direct,
        ),
        (
            "trait: Backend, 1 task, none",
            1,
            Durability::None,
            Via::Trait,
        ),
    ];
    let mut rows: Vec<(&str, Runner)> = async_rows
        .into_iter()
        .map(|(name, tasks, durability, via)| {
            let run: Runner = Box::new(move || async_row(tasks, seconds, durability, via));
            (name, run)
        })
        .collect();
    rows.push((
        "blocking, 64 threads",
        Box::new(move || blocking_row(64, seconds)),
    ));
    if let Ok(only) = std::env::var("IDEMKV_ROWS") {
        rows.retain(|(name, _)| name.contains(&only));
    }
    println!(
        "claim+complete pairs (durable unless the row says none), {seconds} s per run, {reps} reps, rows alternated"
    );
    let mut results: Vec<Vec<Row>> = rows.iter().map(|_| Vec::new()).collect();
    for _ in 0..reps {
        for (i, (_, run)) in rows.iter().enumerate() {
            results[i].push(run());
        }
    }
    println!("| row | claims/s (median) | spread | claim p50 | p99 | p99.9 | writes per fsync |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for ((name, _), mut runs) in rows.iter().zip(results) {
        runs.sort_by(|a, b| a.claims_per_s().total_cmp(&b.claims_per_s()));
        let (lo, hi) = (runs[0].claims_per_s(), runs[runs.len() - 1].claims_per_s());
        let middle = runs.len() / 2;
        let mid = &mut runs[middle];
        let per_fsync = 2.0 * mid.pairs as f64 / mid.fsyncs.max(1) as f64;
        println!(
            "| {name} | {:.0} | {:.0}–{:.0} | {:.0} µs | {:.0} µs | {:.0} µs | {:.1} |",
            mid.claims_per_s(),
            lo,
            hi,
            mid.percentile_us(0.50),
            mid.percentile_us(0.99),
            mid.percentile_us(0.999),
            per_fsync,
        );
    }
}
