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
//! Set `IDEMKV_REPLAYS=0` to count pairs alone.

use idemkv::{Claim, Durability, Fingerprint, Options};
use std::hint::black_box;

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
        match store.claim(key(n), fp).expect("claim") {
            Claim::Acquired(t) => store.complete(t, &response).expect("complete"),
            other => panic!("fresh keys are acquired, got {other:?}"),
        }
    }
    for n in 0..replays.min(pairs) {
        match store.claim(key(n), fp).expect("claim") {
            Claim::Replay(done) => {
                black_box(done);
            }
            other => panic!("completed keys replay, got {other:?}"),
        }
    }
    println!("{pairs} pairs, {} replays", replays.min(pairs));
}
