//! Retention bench: a steady-state claim+complete workload under a fixed
//! retention in virtual time, reporting write amplification, peak disk
//! bytes over live bytes, index RAM per live key, and open time for stores
//! of 1 M and 10 M keys with and without hint files.
//!
//! `cargo bench --bench retention` runs the full workload (20 M pairs, opens
//! of 1 M and 10 M keys). Smaller runs: `IDEMKV_PAIRS=2000000
//! IDEMKV_OPEN_KEYS=100000,1000000 cargo bench --bench retention`.
//! `IDEMKV_OPEN_RUNS=5` times each open five times and reports the fastest
//! and slowest (`IDEMKV_SCAN_RUNS` sets the number of opens without hints
//! apart; 0 skips them); `IDEMKV_STORE_DIR=/path` keeps the stores built
//! for the open times there and reuses them in later runs.

use idemkv::{Claim, Durability, Fingerprint, ManualClock, Options, Store};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const RESPONSE_LEN: usize = 130;
/// Virtual milliseconds between pairs: 1,000 pairs per virtual second.
const STEP_MS: u64 = 1;

fn env_list(name: &str, default: &[u64]) -> Vec<u64> {
    std::env::var(name)
        .ok()
        .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| default.to_vec())
}

/// `t0042:POST/v1/charges:<32 hex>`: 54 bytes, like a scoped Stripe key.
fn key(i: u64) -> String {
    format!(
        "t{:04}:POST/v1/charges:{:032x}",
        i % 10_000,
        u128::from(i).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835)
    )
}

fn options(clock: &Arc<ManualClock>, retention: Duration) -> Options {
    Options::new()
        .clock(clock.clone())
        .durability(Durability::None)
        .retention(retention)
        .segment_size(16 << 20)
        .background_compaction(false)
}

fn pair(store: &Store, i: u64, response: &[u8]) {
    let k = key(i);
    match store.claim(&k, Fingerprint::of(&k)).expect("claim") {
        Claim::Acquired(t) => store.complete(t, response).expect("complete"),
        other => panic!("{k}: {other:?}"),
    }
}

fn steady_state(pairs: u64, window: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let retention = Duration::from_millis(window * STEP_MS);
    let store = options(&clock, retention).open(dir.path()).expect("open");
    let response = vec![b'r'; RESPONSE_LEN];
    let claim_len = (60 + key(0).len()) as u64;
    let complete_len = claim_len + RESPONSE_LEN as u64;
    let (mut peak_disk, mut peak_ratio, mut peak_ratio_disk, mut peak_ratio_live) =
        (0u64, 0f64, 0u64, 0u64);
    let mut peak_rss_index = 0u64;
    let started = Instant::now();
    for i in 0..pairs {
        pair(&store, i, &response);
        clock.advance(Duration::from_millis(STEP_MS));
        if i % 16_384 == 16_383 {
            // Sample just before a compaction pass, when the disk holds the
            // most. `stats()` walks the index, so only every 64th pass.
            if i % (16_384 * 64) == 16_384 * 64 - 1 {
                let s = store.stats();
                peak_disk = peak_disk.max(s.bytes_on_disk);
                // After two windows the store is in steady state.
                if i >= 2 * window {
                    let live = s.live_keys * complete_len;
                    let ratio = s.bytes_on_disk as f64 / live as f64;
                    if ratio > peak_ratio {
                        (peak_ratio, peak_ratio_disk, peak_ratio_live) =
                            (ratio, s.bytes_on_disk, live);
                    }
                    peak_rss_index = peak_rss_index.max(s.index_memory_bytes);
                }
            }
            store.compact().expect("compact");
        }
    }
    let elapsed = started.elapsed();
    let s = store.stats();
    let user_bytes = pairs * (claim_len + complete_len);
    let written = s.bytes_appended + s.hint_bytes_written;
    println!(
        "## steady state: {pairs} claim+complete pairs, retention = {window} pairs of virtual time"
    );
    println!("| figure | value |");
    println!("|---|---|");
    println!(
        "| wall time | {:.1} s ({:.0} pairs/s, Durability::None, compaction every 16,384 pairs) |",
        elapsed.as_secs_f64(),
        pairs as f64 / elapsed.as_secs_f64()
    );
    println!("| user record bytes | {user_bytes} |");
    println!(
        "| bytes written (records {} + copies {} + hints {}) | {written} |",
        s.bytes_appended - s.bytes_copied,
        s.bytes_copied,
        s.hint_bytes_written
    );
    println!(
        "| write amplification | {:.3} |",
        written as f64 / user_bytes as f64
    );
    println!(
        "| peak disk / live bytes | {peak_ratio:.3} ({peak_ratio_disk} / {peak_ratio_live}) |"
    );
    println!("| peak disk bytes | {peak_disk} |");
    println!(
        "| segments dropped whole / rewritten | {} / {} |",
        s.segments_dropped, s.segments_rewritten
    );
    println!(
        "| live keys / index entries at end | {} / {} |",
        s.live_keys, s.indexed_keys
    );
    println!(
        "| index RAM per live key | {:.1} bytes (peak {:.1}) |",
        s.index_memory_bytes as f64 / s.live_keys as f64,
        peak_rss_index as f64 / window as f64
    );
    println!();
}

fn build_store(dir: &Path, keys: u64) {
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let store = options(&clock, Duration::from_secs(86_400 * 365))
        .open(dir)
        .expect("open");
    let response = vec![b'r'; RESPONSE_LEN];
    for i in 0..keys {
        pair(&store, i, &response);
    }
}

fn timed_open(dir: &Path) -> (Duration, Store) {
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let started = Instant::now();
    let store = options(&clock, Duration::from_secs(86_400 * 365))
        .open(dir)
        .expect("open");
    (started.elapsed(), store)
}

fn remove_hints(dir: &Path) {
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "hint") {
            std::fs::remove_file(path).expect("remove hint");
        }
    }
}

/// "fastest ms" or "fastest to slowest ms" over `runs`.
fn spread(runs: &[Duration]) -> String {
    let ms = |d: &Duration| d.as_secs_f64() * 1e3;
    let min = runs.iter().map(ms).fold(f64::INFINITY, f64::min);
    let max = runs.iter().map(ms).fold(0f64, f64::max);
    if runs.is_empty() {
        "-".to_string()
    } else if runs.len() == 1 {
        format!("{min:.0} ms")
    } else {
        format!("{min:.0} to {max:.0} ms")
    }
}

fn open_times(sizes: &[u64], runs: usize, scan_runs: usize) {
    println!("## open time (16 MiB segments; the page cache is warm, as after a process restart)");
    println!(
        "| keys | with hints | with hints, every claim still on disk | without hints (scan, then write hints) | segments from hints | index RAM per key |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    let kept = std::env::var_os("IDEMKV_STORE_DIR").map(std::path::PathBuf::from);
    for &keys in sizes {
        let temp;
        let dir = match &kept {
            Some(root) => {
                let dir = root.join(format!("open-{keys}"));
                if !dir.join("built").exists() {
                    let _ = std::fs::remove_dir_all(&dir);
                    std::fs::create_dir_all(&dir).expect("store dir");
                    build_store(&dir, keys);
                    std::fs::write(dir.join("built"), b"").expect("mark");
                }
                dir
            }
            None => {
                temp = tempfile::tempdir().expect("tempdir");
                build_store(temp.path(), keys);
                temp.path().to_path_buf()
            }
        };
        // The first open scans and writes any missing hints. While no
        // compaction has run, every claim is still on disk, and open
        // compares each with its key's complete: the worst case, timed
        // first. Then one compaction pass deletes the claim segments, as
        // background compaction does within seconds of their sealing, and
        // both kinds of open are timed, the open without hints writing them
        // again.
        let _ = timed_open(&dir);
        let mut claims_on_disk = Vec::new();
        if !dir.join("compacted").exists() {
            for _ in 0..runs {
                claims_on_disk.push(timed_open(&dir).0);
            }
            let (_, store) = timed_open(&dir);
            store.compact().expect("compact");
            drop(store);
            if kept.is_some() {
                std::fs::write(dir.join("compacted"), b"").expect("mark");
            }
        }
        let mut with = Vec::new();
        let mut without = Vec::new();
        let mut stats = None;
        for run in 0..runs {
            let (elapsed, store) = timed_open(&dir);
            with.push(elapsed);
            if run + 1 == runs {
                stats = Some(store.stats());
            }
        }
        for _ in 0..scan_runs {
            remove_hints(&dir);
            without.push(timed_open(&dir).0);
        }
        let stats = stats.expect("at least one run");
        println!(
            "| {keys} | {} | {} | {} | {} | {:.1} B |",
            spread(&with),
            spread(&claims_on_disk),
            spread(&without),
            stats.segments_opened_from_hints,
            stats.index_memory_bytes as f64 / stats.live_keys.max(1) as f64
        );
    }
    println!();
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return; // `cargo test --benches` and tools probing for tests.
    }
    let pairs = env_list("IDEMKV_PAIRS", &[20_000_000])[0];
    let window = env_list("IDEMKV_WINDOW", &[pairs / 4])[0];
    let sizes = env_list("IDEMKV_OPEN_KEYS", &[1_000_000, 10_000_000]);
    if pairs > 0 {
        steady_state(pairs, window.max(1));
    }
    let runs = env_list("IDEMKV_OPEN_RUNS", &[1])[0].max(1) as usize;
    let scan_runs = env_list("IDEMKV_SCAN_RUNS", &[runs as u64])[0] as usize;
    if !sizes.is_empty() {
        open_times(&sizes, runs, scan_runs);
    }
}
