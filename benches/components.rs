//! Criterion benches of the parts a claim is made of, each alone:
//!
//! - `record/encode` and `record/decode`: one 200-byte completed record
//!   (60-byte header, 54-byte key, 86-byte value), CRC-32 included.
//! - `index/insert`, `index/lookup_hit`, `index/lookup_miss`: the sharded
//!   index at one million entries.
//! - `group_commit/durable_already`: a wait whose position is already
//!   durable (what a caller pays when someone else's fsync covered it);
//!   `group_commit/leader`: one caller leading a sync that does nothing, the
//!   hand-off cost without the disk.
//!
//! Run with `cargo bench --bench components`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use idemkv::internals::{BenchGroupCommit, BenchIndex, decode_record, encode_record, key_hash};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const KEY: &[u8; 54] = b"t0042:POST/v1/charges:0123456789abcdef0123456789abcdef";

fn record(c: &mut Criterion) {
    let value = [b'v'; 86];
    let mut g = c.benchmark_group("record");
    g.throughput(Throughput::Elements(1))
        .measurement_time(Duration::from_secs(2));
    let mut buf = Vec::with_capacity(256);
    g.bench_function("encode", |b| {
        b.iter(|| {
            buf.clear();
            encode_record(&mut buf, 7, black_box(KEY), black_box(&value), 42);
        })
    });
    buf.clear();
    encode_record(&mut buf, 7, KEY, &value, 42);
    g.bench_function("decode", |b| {
        b.iter(|| black_box(decode_record(black_box(&buf))).expect("valid record"))
    });
    g.finish();
}

fn index(c: &mut Criterion) {
    const N: u64 = 1_000_000;
    let hashes: Vec<u64> = (0..N).map(|n| key_hash(&n.to_le_bytes())).collect();
    let full = BenchIndex::default();
    for (i, h) in hashes.iter().enumerate() {
        full.insert(*h, i as u32);
    }
    let mut g = c.benchmark_group("index");
    g.throughput(Throughput::Elements(1))
        .measurement_time(Duration::from_secs(2));
    let mut i = 0usize;
    g.bench_function("lookup_hit", |b| {
        b.iter(|| {
            i = (i + 7919) % hashes.len();
            black_box(full.lookup(hashes[i])).expect("present")
        })
    });
    let mut m = N;
    g.bench_function("lookup_miss", |b| {
        b.iter(|| {
            m += 1;
            black_box(full.lookup(key_hash(&m.to_le_bytes())))
        })
    });
    // Insert then remove, so the table size stays at N.
    let mut k = 2 * N;
    g.bench_function("insert_remove", |b| {
        b.iter(|| {
            k += 1;
            let h = key_hash(&k.to_le_bytes());
            full.insert(h, k as u32);
            assert!(full.remove(h, k as u32));
        })
    });
    g.finish();
}

fn group_commit(c: &mut Criterion) {
    let mut g = c.benchmark_group("group_commit");
    g.throughput(Throughput::Elements(1))
        .measurement_time(Duration::from_secs(2));
    let gc = BenchGroupCommit::default();
    gc.wait(1, || Ok(1));
    g.bench_function("durable_already", |b| {
        b.iter(|| gc.wait(black_box(1), || Ok(1)))
    });
    let appended = AtomicU64::new(1);
    g.bench_function("leader", |b| {
        b.iter(|| {
            let target = appended.fetch_add(1, Ordering::Relaxed) + 1;
            gc.wait(target, || Ok(appended.load(Ordering::Relaxed)));
        })
    });
    g.finish();
}

criterion_group!(benches, record, index, group_commit);
criterion_main!(benches);
