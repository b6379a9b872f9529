//! A fixed workload for counting instructions, not time:
//! `IDEMKV_PAIRS` claim+complete pairs of fresh keys, then as many replays,
//! under `Durability::None` with compaction off, on one thread.
//!
//! Instructions per pair = (total at N pairs − total at 0 pairs) / N, with
//! totals from `valgrind --tool=callgrind`, which counts instructions
//! exactly whatever else the machine is doing:
//!
//! ```sh
//! cargo bench --bench pair_instructions --no-run   # prints the binary's path
//! IDEMKV_PAIRS=0      valgrind --tool=callgrind --callgrind-out-file=/tmp/cg0 BINARY
//! IDEMKV_PAIRS=100000 valgrind --tool=callgrind --callgrind-out-file=/tmp/cg1 BINARY
//! ```
//!
//! Set `IDEMKV_REPLAYS=0` to count pairs alone. `IDEMKV_VIA` picks the
//! calls: `blocking` (the default: `claim`, `complete`), `async`
//! (`claim_async`, `complete_with_retention_async`) or `trait`
//! (`Backend::claim`, `Backend::complete`, from generic code). The async
//! futures are polled once with a no-op waker: under `Durability::None`
//! they are ready at once, so no runtime's instructions are counted.

use idemkv::{Backend, Claim, Durability, Fingerprint, Options, Store};
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// The retention of every completed record (the store's default).
const RETENTION: Duration = Duration::from_secs(24 * 3600);

/// Polls a future that must be ready at once.
fn now<F: Future>(future: F) -> F::Output {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("a future under Durability::None is ready at once"),
    }
}

/// Which calls the workload makes.
#[derive(Clone, Copy)]
enum Via {
    Blocking,
    Async,
    Trait,
}

/// One claim through the chosen calls.
fn claim(store: &Store, via: Via, key: &[u8], fp: Fingerprint) -> Claim {
    match via {
        Via::Blocking => store.claim(key, fp),
        Via::Async => now(store.claim_async(key, fp)),
        Via::Trait => now(claim_generic(store, key, fp)),
    }
    .expect("claim")
}

/// One complete through the chosen calls.
fn complete(store: &Store, via: Via, ticket: idemkv::Ticket, response: &[u8]) {
    match via {
        Via::Blocking => store.complete(ticket, response),
        Via::Async => now(store.complete_with_retention_async(ticket, response, RETENTION)),
        Via::Trait => now(complete_generic(store, ticket, response)),
    }
    .expect("complete")
}

/// `Backend::claim`, called as code generic over the trait calls it.
fn claim_generic<B: Backend>(
    b: &B,
    key: &[u8],
    fp: Fingerprint,
) -> impl Future<Output = idemkv::Result<Claim<B::Ticket>>> {
    b.claim(key, fp)
}

/// `Backend::complete`, called as code generic over the trait calls it.
fn complete_generic<B: Backend>(
    b: &B,
    ticket: B::Ticket,
    response: &[u8],
) -> impl Future<Output = idemkv::Result<()>> {
    b.complete(ticket, response, RETENTION)
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn key(n: u64) -> [u8; 54] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut k = *b"t0042:POST/v1/charges:00000000000000000000000000000000";
    let mixed = n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for i in 0..16 {
        k[22 + i] = HEX[((mixed >> (60 - 4 * i)) & 0xf) as usize];
        k[38 + i] = HEX[((n >> (60 - 4 * i)) & 0xf) as usize];
    }
    k
}

fn main() {
    let pairs = env_or("IDEMKV_PAIRS", 100_000);
    let replays = env_or("IDEMKV_REPLAYS", pairs);
    let via = match std::env::var("IDEMKV_VIA").as_deref() {
        Ok("async") => Via::Async,
        Ok("trait") => Via::Trait,
        Ok("blocking") | Err(_) => Via::Blocking,
        Ok(other) => panic!("IDEMKV_VIA is blocking, async or trait, not {other:?}"),
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Options::new()
        .durability(Durability::None)
        .background_compaction(false)
        .segment_size(256 << 20)
        .open(dir.path())
        .expect("open");
    let fp = Fingerprint::of(br#"{"amount":2000,"currency":"usd"}"#);
    let response = [b'r'; 130];
    for n in 0..pairs {
        match claim(&store, via, &key(n), fp) {
            Claim::Acquired(t) => complete(&store, via, t, &response),
            other => panic!("fresh keys are acquired, got {other:?}"),
        }
    }
    for n in 0..replays.min(pairs) {
        match claim(&store, via, &key(n), fp) {
            Claim::Replay(done) => {
                black_box(done);
            }
            other => panic!("completed keys replay, got {other:?}"),
        }
    }
    println!("{pairs} pairs, {} replays", replays.min(pairs));
}
