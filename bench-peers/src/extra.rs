//! Rows that are not a timed claim/complete loop shared by every engine:
//! memory after reopening a store (`rss`), the first open after a clean
//! close and the open after a compaction (`open`), the disk's own
//! append + fdatasync rate (`raw_fsync`), and idemkv's async API with 1,000
//! tasks (`a1000`).
//!
//! `rss` and `open` time the open in a fresh child process (this binary,
//! re-executed with the hidden `__open` subcommand), so the figure is what a
//! restarted process sees: its own heap starts empty, while the page cache
//! still holds the store's files (they were just written: warm).

use crate::engines::{RETENTION, Result};
use crate::workload::{fingerprint, key, response};
use idemkv::{Claim, Durability, Fingerprint, Options, Store};
use serde_json::{Value, json};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The hidden subcommand a child process runs.
pub const OPEN_SUBCOMMAND: &str = "__open";
/// The hidden subcommand that builds a store and keeps it, for profiling
/// an open by hand: `__build DIR KEYS`.
pub const BUILD_SUBCOMMAND: &str = "__build";

/// `__build DIR KEYS`: builds the store the `rss` and `open` rows use.
pub fn child_build(args: &[String]) -> Result<()> {
    let [dir, keys] = args else {
        return Err("__build DIR KEYS".into());
    };
    build_store(Path::new(dir), keys.parse()?)
}

/// Bytes of free disk a store of `keys` keys needs, with room to spare:
/// about 360 bytes of records and 24 of hints per pair, while compaction
/// has not yet deleted the claim segments.
fn disk_needed(keys: u64) -> u64 {
    keys * 500 + (1 << 30)
}

/// Free bytes on the file system holding `dir` (`df`'s figure).
fn free_bytes(dir: &Path) -> Result<u64> {
    let out = Command::new("df")
        .arg("--output=avail")
        .arg("-B1")
        .arg(dir)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .ok_or_else(|| format!("cannot read free space of {}: {text}", dir.display()).into())
}

fn check_space(dir: &Path, keys: u64) -> Result<()> {
    let free = free_bytes(dir)?;
    if free < disk_needed(keys) {
        return Err(format!(
            "{} has {} MB free; a store of {keys} keys needs about {} MB",
            dir.display(),
            free >> 20,
            disk_needed(keys) >> 20
        )
        .into());
    }
    Ok(())
}

/// Writes `keys` completed keys on two threads (`Durability::None`, the
/// default segment size, background compaction on, as an operator runs
/// it), then closes the store by dropping it.
fn build_store(dir: &Path, keys: u64) -> Result<()> {
    let store = Options::new()
        .durability(Durability::None)
        .retention(RETENTION)
        .open(dir)?;
    std::thread::scope(|s| -> Result<()> {
        let workers: Vec<_> = (0..2u64)
            .map(|t| {
                let store = &store;
                s.spawn(move || -> Result<()> {
                    for n in (t..keys).step_by(2) {
                        let k = key(0, n);
                        match store.claim(k, Fingerprint::from_u128(fingerprint(0, n)))? {
                            Claim::Acquired(ticket) => store.complete(ticket, &response(0, n))?,
                            _ => return Err(format!("fresh key {n} not acquired").into()),
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        for w in workers {
            w.join().map_err(|_| "build thread panicked")??;
        }
        Ok(())
    })?;
    drop(store);
    Ok(())
}

/// `RssAnon` of this process, in bytes.
fn rss_anon() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("RssAnon:"))?.to_string();
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kib| kib * 1024)
}

/// CPU time this process has used (user + system, all threads), in ms.
fn cpu_ms() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `getrusage` fills the struct it is given.
    #[allow(unsafe_code)]
    let usage = unsafe {
        if libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) != 0 {
            return f64::NAN;
        }
        usage.assume_init()
    };
    let ms = |t: libc::timeval| t.tv_sec as f64 * 1e3 + t.tv_usec as f64 / 1e3;
    ms(usage.ru_utime) + ms(usage.ru_stime)
}

/// The child's side: open the store in `dir`, report the open's time and
/// memory as one JSON line on stdout, then compact if asked, and close.
pub fn child_open(args: &[String]) -> Result<()> {
    let dir = args.first().ok_or("__open DIR [--compact]")?;
    let compact = args.iter().any(|a| a == "--compact");
    let before = rss_anon();
    let cpu_before = cpu_ms();
    let started = Instant::now();
    let store = Options::new()
        .durability(Durability::None)
        .retention(RETENTION)
        .open(dir)?;
    let open_ms = started.elapsed().as_secs_f64() * 1e3;
    let open_cpu_ms = cpu_ms() - cpu_before;
    if args.iter().any(|a| a == "--no-close") {
        // For profiling the open alone: no stats (they read every record),
        // no close; leave as a crash would.
        println!(
            "{}",
            json!({ "open_ms": open_ms, "open_cpu_ms": open_cpu_ms })
        );
        std::process::exit(0);
    }
    let after = rss_anon();
    let stats = store.stats();
    // What the allocator keeps of memory freed during the open: RssAnon
    // again after asking glibc to return every free page.
    // SAFETY: `malloc_trim` only releases free memory; any pad is valid.
    #[allow(unsafe_code)]
    unsafe {
        libc::malloc_trim(0);
    }
    let after_trim = rss_anon();
    let mut out = json!({
        "rss_anon_after_trim": after_trim,
        "open_ms": open_ms,
        "open_cpu_ms": open_cpu_ms,
        "rss_anon_before": before,
        "rss_anon_after": after,
        "live_keys": stats.live_keys,
        "index_memory_bytes": stats.index_memory_bytes,
        "segments_from_hints": stats.segments_opened_from_hints,
        "records_scanned": stats.recovered_records,
    });
    if compact {
        let started = Instant::now();
        store.compact()?;
        out["compact_ms"] = json!(started.elapsed().as_secs_f64() * 1e3);
    }
    let started = Instant::now();
    drop(store);
    out["close_ms"] = json!(started.elapsed().as_secs_f64() * 1e3);
    println!("{out}");
    Ok(())
}

/// Runs the child on `dir` and parses its report.
///
/// First `sync` ([`crate::settle`]): the files the build and earlier rows
/// wrote (gigabytes, for the 10 M-key stores) are then on disk, so their
/// write-back does not run on the processors during the timed open. The
/// page cache stays warm.
fn open_in_child(dir: &Path, compact: bool) -> Result<Value> {
    crate::settle();
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg(OPEN_SUBCOMMAND).arg(dir);
    if compact {
        cmd.arg("--compact");
    }
    let out = cmd.output()?;
    if !out.status.success() {
        return Err(format!(
            "child open failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    let line = String::from_utf8_lossy(&out.stdout);
    Ok(serde_json::from_str(line.trim())?)
}

fn fresh_dir(parent: &Path) -> Result<tempfile::TempDir> {
    Ok(tempfile::Builder::new()
        .prefix("bench-peers-")
        .tempdir_in(parent)?)
}

/// The median of `v`; NaN when empty.
fn median(v: &[f64]) -> f64 {
    crate::median(v)
}

fn fmt_list(v: &[f64], digits: usize) -> String {
    v.iter()
        .map(|x| format!("{x:.digits$}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `rss`: a store of `keys` keys, built and closed here, opened `reps`
/// times, each in a fresh child: RssAnon after open minus before, per live
/// key, beside the index's own count.
pub fn rss(parent: &Path, keys: u64, reps: usize) -> Result<Value> {
    check_space(parent, keys)?;
    let dir = fresh_dir(parent)?;
    let t = Instant::now();
    build_store(dir.path(), keys)?;
    eprintln!(
        "[   rss] built {keys} keys in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let mut runs = Vec::new();
    for rep in 0..reps {
        let r = open_in_child(dir.path(), false)?;
        let live = r["live_keys"].as_f64().unwrap_or(f64::NAN);
        let grew = r["rss_anon_after"].as_f64().unwrap_or(f64::NAN)
            - r["rss_anon_before"].as_f64().unwrap_or(f64::NAN);
        let per_key = grew / live;
        let index_per_key = r["index_memory_bytes"].as_f64().unwrap_or(f64::NAN) / live;
        let trimmed_per_key = (r["rss_anon_after_trim"].as_f64().unwrap_or(f64::NAN)
            - r["rss_anon_before"].as_f64().unwrap_or(f64::NAN))
            / live;
        eprintln!(
            "[   rss] rep {}/{reps}: {per_key:.1} B/key RssAnon ({:.0} MB), {trimmed_per_key:.1} B/key after malloc_trim, index {index_per_key:.1} B/key, open {:.0} ms",
            rep + 1,
            grew / 1e6,
            r["open_ms"].as_f64().unwrap_or(f64::NAN)
        );
        runs.push(json!({
            "rss_anon_per_key": per_key,
            "rss_anon_after_malloc_trim_per_key": trimmed_per_key,
            "index_per_key": index_per_key,
            "child": r,
        }));
    }
    drop(dir);
    let per_key: Vec<f64> = runs
        .iter()
        .filter_map(|r| r["rss_anon_per_key"].as_f64())
        .collect();
    let index: Vec<f64> = runs
        .iter()
        .filter_map(|r| r["index_per_key"].as_f64())
        .collect();
    println!(
        "\nmemory after reopening {keys} keys (fresh child per rep): RssAnon growth per live key {} (median {:.1} B); index's own count {} (median {:.1} B)",
        fmt_list(&per_key, 1),
        median(&per_key),
        fmt_list(&index, 1),
        median(&index)
    );
    Ok(json!({
        "row": "rss",
        "keys": keys,
        "reps": runs,
        "median_rss_anon_per_key": median(&per_key),
        "median_index_per_key": median(&index),
    }))
}

/// `open`: for each store size, per rep, a store built and closed here;
/// then a child times the first open after that clean close (and compacts
/// and closes); then another child times the open after the compaction.
pub fn open(parent: &Path, sizes: &[u64], reps: usize) -> Result<Value> {
    let mut rows = Vec::new();
    for &keys in sizes {
        let (mut first, mut compacted) = (Vec::new(), Vec::new());
        let (mut first_cpu, mut compacted_cpu) = (Vec::new(), Vec::new());
        let mut detail = Vec::new();
        for rep in 0..reps {
            check_space(parent, keys)?;
            let dir = fresh_dir(parent)?;
            let t = Instant::now();
            build_store(dir.path(), keys)?;
            let built = t.elapsed().as_secs_f64();
            let a = open_in_child(dir.path(), true)?;
            let b = open_in_child(dir.path(), false)?;
            drop(dir);
            let ms = |v: &Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
            let (fa, fb) = (ms(&a, "open_ms"), ms(&b, "open_ms"));
            let (ca, cb) = (ms(&a, "open_cpu_ms"), ms(&b, "open_cpu_ms"));
            eprintln!(
                "[  open] {keys} keys rep {}/{reps}: built in {built:.1} s; first open after close {fa:.0} ms ({ca:.0} ms CPU; from hints {}, records scanned {}); after compaction {fb:.0} ms ({cb:.0} ms CPU)",
                rep + 1,
                a["segments_from_hints"],
                a["records_scanned"]
            );
            first.push(fa);
            compacted.push(fb);
            first_cpu.push(ca);
            compacted_cpu.push(cb);
            detail.push(json!({ "after_close": a, "after_compaction": b, "build_s": built }));
        }
        println!(
            "\nopen of {keys} keys (fresh child, page cache warm): first after a clean close {} ms (median {:.0}); after a compaction {} ms (median {:.0}); ratio {:.2}",
            fmt_list(&first, 0),
            median(&first),
            fmt_list(&compacted, 0),
            median(&compacted),
            median(&first) / median(&compacted)
        );
        println!(
            "  CPU time of those opens (all threads): {} ms (median {:.0}); after a compaction {} ms (median {:.0})",
            fmt_list(&first_cpu, 0),
            median(&first_cpu),
            fmt_list(&compacted_cpu, 0),
            median(&compacted_cpu)
        );
        rows.push(json!({
            "keys": keys,
            "after_close_ms": first,
            "after_compaction_ms": compacted,
            "after_close_cpu_ms": first_cpu,
            "after_compaction_cpu_ms": compacted_cpu,
            "reps": detail,
        }));
    }
    Ok(json!({ "row": "open", "sizes": rows }))
}

/// One `raw_fsync` run: `ops` 4 KiB `pwrite` + `fdatasync` at rising
/// offsets of a new file, grown by each write or zero-filled (and fsynced)
/// to its full length first. Returns microseconds per write.
fn fsync_loop(dir: &Path, ops: u64, preallocate: bool) -> Result<f64> {
    const BLOCK: usize = 4096;
    let path = dir.join(if preallocate {
        "preallocated"
    } else {
        "growing"
    });
    let file = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    if preallocate {
        let zeros = vec![0u8; 1 << 20];
        let total = ops * BLOCK as u64;
        let mut at = 0;
        while at < total {
            let n = zeros.len().min((total - at) as usize);
            file.write_all_at(&zeros[..n], at)?;
            at += n as u64;
        }
        file.sync_all()?;
    }
    let block = [0x5au8; BLOCK];
    crate::settle();
    let started = Instant::now();
    for i in 0..ops {
        file.write_all_at(&block, i * BLOCK as u64)?;
        file.sync_data()?;
    }
    let us = started.elapsed().as_secs_f64() * 1e6 / ops as f64;
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(us)
}

/// `raw_fsync`: the disk's limit for one writer, growing against
/// preallocated file, alternated within each rep.
pub fn raw_fsync(parent: &Path, ops: u64, reps: usize) -> Result<Value> {
    let dir = fresh_dir(parent)?;
    let (mut growing, mut prealloc) = (Vec::new(), Vec::new());
    for rep in 0..reps {
        let order = if rep % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for pre in order {
            let us = fsync_loop(dir.path(), ops, pre)?;
            eprintln!(
                "[ fsync] rep {}/{reps} {}: {us:.0} us per 4 KiB write + fdatasync ({:.1} k/s)",
                rep + 1,
                if pre { "preallocated" } else { "growing" },
                1e3 / us
            );
            if pre {
                prealloc.push(us);
            } else {
                growing.push(us);
            }
        }
    }
    println!(
        "\n4 KiB pwrite + fdatasync, 1 thread, {ops} per run: growing file {} us (median {:.0} us, {:.1} k/s); zero-filled preallocated file {} us (median {:.0} us, {:.1} k/s)",
        fmt_list(&growing, 0),
        median(&growing),
        1e3 / median(&growing),
        fmt_list(&prealloc, 0),
        median(&prealloc),
        1e3 / median(&prealloc)
    );
    Ok(json!({
        "row": "raw_fsync",
        "ops_per_run": ops,
        "growing_us": growing,
        "preallocated_us": prealloc,
        "median_growing_us": median(&growing),
        "median_preallocated_us": median(&prealloc),
    }))
}

/// `a1000`: pairs through `claim_async` + `complete_async` from 1,000
/// tokio tasks on a 2-worker runtime, for `seconds`, durable
/// (`Immediate`) and not (`None`), alternated within each rep: goal 3
/// compares the two.
pub fn a1000(parent: &Path, seconds: f64, reps: usize) -> Result<Value> {
    let mut durable = Vec::new();
    let mut not_durable = Vec::new();
    for rep in 0..reps {
        for (durability, rates) in [
            (Durability::Immediate, &mut durable),
            (Durability::None, &mut not_durable),
        ] {
            let rate = a1000_rep(parent, seconds, durability)?;
            eprintln!(
                "[ a1000] rep {}/{reps}: {} pairs/s, {durability:?}",
                rep + 1,
                crate::fmt_rate(rate)
            );
            rates.push(rate);
        }
    }
    let list = |rates: &[f64]| {
        rates
            .iter()
            .map(|r| crate::fmt_rate(*r))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let ratio = median(&durable) / median(&not_durable);
    println!(
        "\nasync API, 1,000 tasks, 2 tokio workers: Durability::Immediate {} pairs/s (median {}), \
         Durability::None {} (median {}); durable / not durable {ratio:.2}",
        list(&durable),
        crate::fmt_rate(median(&durable)),
        list(&not_durable),
        crate::fmt_rate(median(&not_durable)),
    );
    Ok(json!({
        "row": "a1000",
        "tasks": A1000_TASKS,
        "seconds": seconds,
        "pairs_per_s": durable,
        "median": median(&durable),
        "not_durable_pairs_per_s": not_durable,
        "not_durable_median": median(&not_durable),
        "durable_over_not_durable": ratio,
    }))
}

const A1000_TASKS: usize = 1000;

/// One rep of `a1000`: pairs per second on a fresh store.
fn a1000_rep(parent: &Path, seconds: f64, durability: Durability) -> Result<f64> {
    crate::settle();
    let dir = fresh_dir(parent)?;
    let store = Options::new()
        .durability(durability)
        .retention(RETENTION)
        .open(dir.path())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let stop = Arc::new(AtomicBool::new(false));
    let pairs = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let elapsed = runtime.block_on(async {
        let tasks: Vec<_> = (0..A1000_TASKS)
            .map(|t| {
                let (store, stop, pairs) = (store.clone(), stop.clone(), pairs.clone());
                tokio::spawn(async move { task_loop(&store, t, &stop, &pairs).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
        stop.store(true, Ordering::Relaxed);
        let mut failure = None;
        for task in tasks {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failure = Some(e),
                Err(e) => failure = Some(e.to_string()),
            }
        }
        failure.map_or(Ok(started.elapsed()), Err)
    })?;
    drop(runtime);
    drop(store);
    drop(dir);
    Ok(pairs.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64())
}

/// One task of `a1000`: fresh pairs until told to stop.
async fn task_loop(
    store: &Store,
    t: usize,
    stop: &AtomicBool,
    pairs: &AtomicU64,
) -> std::result::Result<(), String> {
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let k = key(t, n);
        let fp = Fingerprint::from_u128(fingerprint(t, n));
        match store.claim_async(k, fp).await.map_err(|e| e.to_string())? {
            Claim::Acquired(ticket) => store
                .complete_async(ticket, response(t, n))
                .await
                .map_err(|e| e.to_string())?,
            _ => return Err(format!("fresh key {t}/{n} not acquired")),
        }
        pairs.fetch_add(1, Ordering::Relaxed);
        n += 1;
        // Under `Durability::None` the store's futures are ready at once,
        // so a task would never give its worker back, and the timer that
        // ends the run would never fire: a server task awaits its network.
        tokio::task::yield_now().await;
    }
    Ok(())
}
