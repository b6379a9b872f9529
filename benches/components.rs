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
//! - `append_section/threads_1`, `threads_2`: the steps of an append that
//!   every appender of a stream takes on shared words, one at a time (the
//!   reservation compare-and-swap and the publish: a compare-and-swap by
//!   the appender at the front, a completion slot otherwise), with nothing
//!   else between appends; the time per append at 2 threads is that
//!   section's cost when the words move between cores, so its inverse is
//!   the most appends one stream can take, however many cores append.
//!
//! Run with `cargo bench --bench components`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use idemkv::internals::{
    BenchAppendSection, BenchGroupCommit, BenchIndex, decode_record, encode_record, key_hash,
};
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

fn append_section(c: &mut Criterion) {
    const LEN: usize = 200;
    let mut g = c.benchmark_group("append_section");
    g.throughput(Throughput::Elements(1))
        .measurement_time(Duration::from_secs(3));
    for threads in [1usize, 2] {
        g.bench_function(format!("threads_{threads}"), |b| {
            b.iter_custom(|iters| {
                // A buffer per million appends: its length field is 32 bits.
                let mut left = iters as usize;
                let mut spent = Duration::ZERO;
                while left > 0 {
                    let per_thread = left.min(1 << 20).div_ceil(threads);
                    left -= left.min(1 << 20);
                    let section = BenchAppendSection::new(per_thread * threads, LEN);
                    let start = std::time::Instant::now();
                    std::thread::scope(|s| {
                        for _ in 0..threads {
                            s.spawn(|| {
                                for _ in 0..per_thread {
                                    assert!(section.append(LEN), "sized for every append");
                                }
                            });
                        }
                    });
                    spent += start.elapsed();
                }
                spent
            })
        });
    }
    g.finish();
}

criterion_group!(benches, record, index, group_commit, append_section);
criterion_main!(benches);
