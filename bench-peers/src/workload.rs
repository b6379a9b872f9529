//! The workload: keys, fingerprints, responses, and the timed runs.

use crate::engines::{Engine, Outcome, Result};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

/// Length of every key: `t<4 digits>:POST/v1/charges:` plus 32 hex digits.
pub const KEY_LEN: usize = 54;
/// Length of every stored response.
pub const RESPONSE_LEN: usize = 130;
/// The thread number in the keys preloaded for the replay mix.
const PRELOAD_THREAD: usize = 9999;

/// One key.
pub type Key = [u8; KEY_LEN];

/// What one timed run does on each thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mix {
    /// Claim then complete a fresh key, over and over.
    Pairs,
    /// 90% claims of a preloaded completed key (which must replay the stored
    /// response), 10% fresh pairs.
    ReplayMix,
}

/// How long each run lasts.
#[derive(Clone, Copy, Debug)]
pub enum Budget {
    /// Stop all threads after this long.
    Time(Duration),
    /// Each thread does this many operations.
    Ops(u64),
}

/// One run's settings.
#[derive(Clone, Copy, Debug)]
pub struct RunSpec {
    /// What each thread does.
    pub mix: Mix,
    /// Number of client threads.
    pub threads: usize,
    /// Whether writes must be fsynced before they are acknowledged.
    pub durable: bool,
    /// When to stop.
    pub budget: Budget,
    /// Whether to record the latency of every claim.
    pub latencies: bool,
    /// Completed keys preloaded for [`Mix::ReplayMix`].
    pub replay_keys: u64,
}

/// What one run measured.
#[derive(Debug, Default)]
pub struct RunResult {
    /// Operations finished: pairs for [`Mix::Pairs`], pairs plus replays for
    /// [`Mix::ReplayMix`].
    pub ops: u64,
    /// Claims answered `Acquired`.
    pub acquired: u64,
    /// Claims answered with the right stored response.
    pub replayed: u64,
    /// Wall time from the start signal to the last thread's stop.
    pub elapsed: Duration,
    /// Claim latencies in nanoseconds, sorted, when asked for.
    pub claim_nanos: Vec<u64>,
}

impl RunResult {
    /// Operations per second.
    pub fn rate(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }
}

/// `t<thread>:POST/v1/charges:<32 hex digits derived from n>`.
pub fn key(thread: usize, n: u64) -> Key {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    const PREFIX: &[u8; 22] = b"t0000:POST/v1/charges:";
    let mut k = [0u8; KEY_LEN];
    k[..PREFIX.len()].copy_from_slice(PREFIX);
    let mut t = thread % 10_000;
    for slot in k[1..5].iter_mut().rev() {
        *slot = b'0' + (t % 10) as u8;
        t /= 10;
    }
    let mixed = (u128::from(mix(n)) << 64) | u128::from(mix(!n ^ thread as u64));
    for (i, slot) in k[PREFIX.len()..].iter_mut().enumerate() {
        *slot = HEX[((mixed >> (124 - 4 * i)) & 0xf) as usize];
    }
    k
}

/// The request fingerprint that goes with key `(thread, n)`.
pub fn fingerprint(thread: usize, n: u64) -> u128 {
    (u128::from(mix(n ^ 0x5eed)) << 64) | u128::from(mix(thread as u64))
}

/// The response stored for key `(thread, n)`: a JSON-ish body whose last 16
/// bytes name the key, so a replay can be checked against the right key.
pub fn response(thread: usize, n: u64) -> [u8; RESPONSE_LEN] {
    const BODY: &[u8] = br#"{"id":"ch_3PqR8s2eZvKYlo2C1x0aBcDe","object":"charge","amount":2000,"currency":"usd","status":"succeeded","paid":true,"ref":""#;
    let mut r = [b' '; RESPONSE_LEN];
    r[..BODY.len()].copy_from_slice(BODY);
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let tag = ((thread as u64 & 0xffff) << 48) | (n & 0xffff_ffff_ffff);
    for (i, slot) in r[RESPONSE_LEN - 16..].iter_mut().enumerate() {
        *slot = HEX[((tag >> (60 - 4 * i)) & 0xf) as usize];
    }
    r
}

/// SplitMix64's finalizer: spreads counters over the key space.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A per-thread xorshift generator for the replay mix.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Per-thread counters.
#[derive(Default)]
struct Counts {
    ops: u64,
    acquired: u64,
    replayed: u64,
    claim_nanos: Vec<u64>,
}

/// Claims and completes fresh key `(thread, n)`; it must be acquired.
fn pair<E: Engine>(e: &E, thread: usize, n: u64, c: &mut Counts, timed: bool) -> Result<()> {
    let k = key(thread, n);
    let fp = fingerprint(thread, n);
    let start = timed.then(Instant::now);
    let outcome = e.claim(&k, fp)?;
    if let Some(start) = start {
        c.claim_nanos.push(start.elapsed().as_nanos() as u64);
    }
    match outcome {
        Outcome::Acquired(ticket) => {
            e.complete(&k, fp, ticket, &response(thread, n))?;
            c.acquired += 1;
            Ok(())
        }
        Outcome::Replay(_) => Err(format!("fresh key {thread}/{n} answered Replay").into()),
        Outcome::InProgress => Err(format!("fresh key {thread}/{n} answered InProgress").into()),
        Outcome::Mismatch => Err(format!("fresh key {thread}/{n} answered Mismatch").into()),
    }
}

/// Claims preloaded key `n`; it must replay its own response.
fn replay<E: Engine>(e: &E, n: u64, c: &mut Counts) -> Result<()> {
    let k = key(PRELOAD_THREAD, n);
    match e.claim(&k, fingerprint(PRELOAD_THREAD, n))? {
        Outcome::Replay(r) if r.as_ref() == response(PRELOAD_THREAD, n) => {
            c.replayed += 1;
            Ok(())
        }
        Outcome::Replay(_) => Err(format!("preloaded key {n} replayed a wrong response").into()),
        Outcome::Acquired(_) => Err(format!("preloaded key {n} answered Acquired").into()),
        Outcome::InProgress => Err(format!("preloaded key {n} answered InProgress").into()),
        Outcome::Mismatch => Err(format!("preloaded key {n} answered Mismatch").into()),
    }
}

/// Completes preloaded keys `0..count` on two threads (not timed).
fn preload<E: Engine>(e: &Arc<E>, count: u64) -> Result<()> {
    let workers: Vec<_> = (0..2u64)
        .map(|t| {
            let e = Arc::clone(e);
            thread::spawn(move || -> Result<()> {
                let mut c = Counts::default();
                for n in (t..count).step_by(2) {
                    pair(&*e, PRELOAD_THREAD, n, &mut c, false)?;
                }
                Ok(())
            })
        })
        .collect();
    for w in workers {
        w.join().map_err(|_| "preload thread panicked")??;
    }
    Ok(())
}

/// The loop one client thread runs.
fn client<E: Engine>(
    e: &E,
    thread: usize,
    spec: RunSpec,
    stop: &AtomicBool,
    start: &Barrier,
) -> Result<Counts> {
    let mut c = Counts::default();
    let limit = match spec.budget {
        Budget::Ops(n) => n,
        Budget::Time(_) => u64::MAX,
    };
    let mut rng = Rng(mix(thread as u64 + 1) | 1);
    let mut fresh = 0u64;
    start.wait();
    while c.ops < limit && !stop.load(Ordering::Relaxed) {
        match spec.mix {
            Mix::Pairs => {
                pair(e, thread, fresh, &mut c, spec.latencies)?;
                fresh += 1;
            }
            Mix::ReplayMix => {
                let r = rng.next();
                if r.is_multiple_of(10) {
                    pair(e, thread, fresh, &mut c, spec.latencies)?;
                    fresh += 1;
                } else {
                    replay(e, (r >> 8) % spec.replay_keys, &mut c)?;
                }
            }
        }
        c.ops += 1;
    }
    Ok(c)
}

/// Opens `E` in `dir`, preloads if the mix needs it, runs the clients and
/// checks what they saw.
pub fn run<E: Engine>(dir: &Path, spec: RunSpec) -> Result<RunResult> {
    let engine = Arc::new(E::open(dir, spec.durable)?);
    if spec.mix == Mix::ReplayMix {
        preload(&engine, spec.replay_keys)?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let start = Arc::new(Barrier::new(spec.threads + 1));
    let clients: Vec<_> = (0..spec.threads)
        .map(|t| {
            let (e, stop, start) = (Arc::clone(&engine), Arc::clone(&stop), Arc::clone(&start));
            thread::spawn(move || client(&*e, t, spec, &stop, &start))
        })
        .collect();
    start.wait();
    let began = Instant::now();
    if let Budget::Time(d) = spec.budget {
        thread::sleep(d);
        stop.store(true, Ordering::Relaxed);
    }
    let mut result = RunResult::default();
    let mut failure = None;
    for c in clients {
        match c.join().map_err(|_| "client thread panicked")? {
            Ok(c) => {
                result.ops += c.ops;
                result.acquired += c.acquired;
                result.replayed += c.replayed;
                result.claim_nanos.extend(c.claim_nanos);
            }
            Err(e) => failure = Some(e),
        }
    }
    result.elapsed = began.elapsed();
    if let Some(e) = failure {
        return Err(e);
    }
    drop(engine);
    if result.acquired + result.replayed != result.ops {
        return Err(format!(
            "{} ops but {} acquired + {} replayed",
            result.ops, result.acquired, result.replayed
        )
        .into());
    }
    if spec.mix == Mix::Pairs && result.replayed != 0 {
        return Err("a pairs run replayed".into());
    }
    result.claim_nanos.sort_unstable();
    Ok(result)
}

/// The value at quantile `q` (0..=1) of sorted `v`, or 0 when empty.
pub fn quantile(v: &[u64], q: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    let i = ((v.len() - 1) as f64 * q).round() as usize;
    v[i]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_the_workload_shape() {
        let k = key(42, 7);
        assert_eq!(&k[..22], b"t0042:POST/v1/charges:");
        assert!(k[22..].iter().all(u8::is_ascii_hexdigit));
        assert_ne!(key(42, 7), key(42, 8));
        assert_ne!(key(1, 7), key(2, 7));
        assert_eq!(response(3, 5).len(), RESPONSE_LEN);
        assert_ne!(response(3, 5), response(3, 6));
    }

    #[test]
    fn quantiles() {
        let v: Vec<u64> = (1..=1000).collect();
        assert_eq!(quantile(&v, 0.5), 501);
        assert_eq!(quantile(&v, 0.99), 990);
        assert_eq!(quantile(&[], 0.5), 0);
    }
}
