//! Runs the idempotency-record workload on idemkv and on peer engines in one
//! process, alternating engines over several repetitions, and prints the
//! medians, the ratios idemkv / best peer and idemkv / in-memory map, and the
//! claim latency under the durable 64-thread load. See `README.md`.

mod chart;
mod engines;
mod extra;
mod workload;

use engines::Engine;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use workload::{Budget, Mix, RunResult, RunSpec, quantile};

/// One row of the table: a workload shape.
#[derive(Clone, Copy)]
struct Row {
    /// Short name, for `--rows` and the JSON.
    id: &'static str,
    /// Column heading.
    title: &'static str,
    mix: Mix,
    threads: usize,
    durable: bool,
}

/// Every row, in table order.
const ROWS: [Row; 7] = [
    Row {
        id: "1t",
        title: "pairs/s, 1 thread",
        mix: Mix::Pairs,
        threads: 1,
        durable: false,
    },
    Row {
        id: "2t",
        title: "pairs/s, 2 threads",
        mix: Mix::Pairs,
        threads: 2,
        durable: false,
    },
    Row {
        id: "replay",
        title: "90% replay / 10% new, 2 threads (ops/s)",
        mix: Mix::ReplayMix,
        threads: 2,
        durable: false,
    },
    Row {
        id: "d1",
        title: "durable pairs/s, 1 thread",
        mix: Mix::Pairs,
        threads: 1,
        durable: true,
    },
    Row {
        id: "d2",
        title: "durable pairs/s, 2 threads",
        mix: Mix::Pairs,
        threads: 2,
        durable: true,
    },
    Row {
        id: "d16",
        title: "durable pairs/s, 16 threads",
        mix: Mix::Pairs,
        threads: 16,
        durable: true,
    },
    Row {
        id: "d64",
        title: "durable pairs/s, 64 threads",
        mix: Mix::Pairs,
        threads: 64,
        durable: true,
    },
];

/// Rows of their own shape (`extra.rs`), run after the timed rows.
const EXTRA_ROWS: [&str; 4] = ["rss", "open", "raw_fsync", "a1000"];

/// The row whose claim latencies are recorded.
const LATENCY_ROW: &str = "d64";

/// The engines this build can run, in table order. `map` (rows that are
/// not durable) and `map-wal` (durable rows) are the ceilings, not peers.
fn all_engines() -> Vec<&'static str> {
    let mut v = vec!["map", "map-wal", "idemkv", "fjall", "redb", "sled"];
    if cfg!(feature = "rocksdb") {
        v.push("rocksdb");
    }
    v
}

/// The ceilings: the in-memory map, and the map with a group-committed log.
const CEILINGS: [&str; 2] = ["map", "map-wal"];

/// Whether engine `e` runs a row that is `durable` or not: `map` keeps
/// nothing on disk and `map-wal` exists for its durable rate.
fn ceiling_runs(e: &str, durable: bool) -> bool {
    match e {
        "map" => !durable,
        "map-wal" => durable,
        _ => true,
    }
}

/// Engines run only when `--engines` names them: idemkv variants, neither
/// peers nor the ceiling.
const VARIANTS: [&str; 1] = ["idemkv-grow"];

/// Runs one repetition of `spec` on the named engine in `dir`.
fn run_engine(name: &str, dir: &Path, spec: RunSpec) -> engines::Result<RunResult> {
    fn go<E: Engine>(dir: &Path, spec: RunSpec) -> engines::Result<RunResult> {
        workload::run::<E>(dir, spec)
    }
    match name {
        "map" => go::<engines::map::ShardedMap>(dir, spec),
        "map-wal" => go::<engines::map_wal::MapWal>(dir, spec),
        "idemkv" => go::<engines::idem::Idemkv>(dir, spec),
        "idemkv-grow" => go::<engines::idem::IdemkvGrowing>(dir, spec),
        "fjall" => go::<engines::fjall_engine::Fjall>(dir, spec),
        "redb" => go::<engines::redb_engine::Redb>(dir, spec),
        "sled" => go::<engines::sled_engine::Sled>(dir, spec),
        #[cfg(feature = "rocksdb")]
        "rocksdb" => go::<engines::rocks::Rocks>(dir, spec),
        other => Err(format!("unknown engine {other}").into()),
    }
}

/// Before each timed run: `sync(2)`, so the write-back of what the runs
/// before wrote (over a gigabyte for a fast engine's 3 s) does not share
/// the processors and the disk with this one.
pub(crate) fn settle() {
    // SAFETY: `sync` takes no arguments and cannot fail.
    #[allow(unsafe_code)]
    unsafe {
        libc::sync();
    }
}

/// Command-line settings.
struct Args {
    seconds: f64,
    ops: Option<u64>,
    reps: usize,
    rows: Vec<Row>,
    /// Which of [`EXTRA_ROWS`] to run.
    extra: Vec<&'static str>,
    /// Keys of the `rss` row's store.
    rss_keys: u64,
    /// Store sizes of the `open` row.
    open_keys: Vec<u64>,
    /// Writes per run of the `raw_fsync` row.
    fsync_ops: u64,
    engines: Vec<&'static str>,
    replay_keys: u64,
    dir: PathBuf,
    out: PathBuf,
}

const USAGE: &str = "\
usage: bench-peers [flags]
  --seconds S      length of each timed run (default 3)
  --ops N          instead of --seconds: operations per client thread
  --reps N         repetitions per engine and row (default 3)
  --rows LIST      comma-separated rows: 1t,2t,replay,d1,d2,d16,d64,rss,open,raw_fsync,a1000 (default all)
  --rss-keys N     keys in the rss row's store (default 10000000)
  --open-keys LIST store sizes of the open row (default 1000000,10000000)
  --fsync-ops N    4 KiB writes per raw_fsync run (default 2000)
  --engines LIST   comma-separated engines: map,map-wal,idemkv,fjall,redb,sled[,rocksdb] (default all built)
  --replay-keys N  completed keys preloaded for the replay row (default 100000)
  --dir PATH       where the per-run temporary directories go (default: the system temp dir)
  --out PATH       where latest.json and pairs_vs_threads.svg go (default bench-peers/results)";

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        seconds: 3.0,
        ops: None,
        reps: 3,
        rows: ROWS.to_vec(),
        extra: EXTRA_ROWS.to_vec(),
        rss_keys: 10_000_000,
        open_keys: vec![1_000_000, 10_000_000],
        fsync_ops: 2000,
        engines: all_engines(),
        replay_keys: 100_000,
        dir: std::env::temp_dir(),
        out: Path::new(env!("CARGO_MANIFEST_DIR")).join("results"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = || format!("bad value for {flag}: {value}");
        match flag.as_str() {
            "--seconds" => args.seconds = value.parse().map_err(|_| bad())?,
            "--ops" => args.ops = Some(value.parse().map_err(|_| bad())?),
            "--reps" => args.reps = value.parse().map_err(|_| bad())?,
            "--replay-keys" => args.replay_keys = value.parse().map_err(|_| bad())?,
            "--dir" => args.dir = value.into(),
            "--out" => args.out = value.into(),
            "--rss-keys" => args.rss_keys = value.parse().map_err(|_| bad())?,
            "--fsync-ops" => args.fsync_ops = value.parse().map_err(|_| bad())?,
            "--open-keys" => {
                args.open_keys = value
                    .split(',')
                    .map(|n| n.parse().map_err(|_| bad()))
                    .collect::<Result<_, _>>()?;
            }
            "--rows" => {
                args.rows.clear();
                args.extra.clear();
                for id in value.split(',') {
                    if let Some(r) = ROWS.iter().find(|r| r.id == id) {
                        args.rows.push(*r);
                    } else if let Some(x) = EXTRA_ROWS.iter().find(|x| **x == id) {
                        args.extra.push(x);
                    } else {
                        return Err(format!("unknown row {id}"));
                    }
                }
            }
            "--engines" => {
                let mut known = all_engines();
                known.extend(VARIANTS);
                args.engines = value
                    .split(',')
                    .map(|name| {
                        known
                            .iter()
                            .find(|k| **k == name)
                            .copied()
                            .ok_or_else(|| format!("unknown or not built engine {name}"))
                    })
                    .collect::<Result<_, _>>()?;
            }
            _ => return Err(format!("unknown flag {flag}\n{USAGE}")),
        }
    }
    if args.reps == 0
        || args.replay_keys == 0
        || args.seconds <= 0.0
        || args.rss_keys == 0
        || args.fsync_ops == 0
        || args.open_keys.contains(&0)
    {
        return Err(
            "--reps, --replay-keys, --seconds, --rss-keys, --open-keys and --fsync-ops must be positive"
                .into(),
        );
    }
    Ok(args)
}

/// What one engine measured on one row, one entry per repetition.
#[derive(Default)]
struct Cell {
    rates: Vec<f64>,
    /// Claim latency p50, p99, p99.9 in nanoseconds, per repetition.
    latencies: Vec<[u64; 3]>,
    errors: Vec<String>,
}

/// The median of `v` (mean of the middle two when even); NaN when empty.
fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let m = s.len() / 2;
    if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    }
}

/// `(max - min) / median`, in percent.
fn spread(v: &[f64]) -> f64 {
    let (lo, hi) = v
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    (hi - lo) / median(v) * 100.0
}

/// A rate the way the table shows it: `1,630 k`, `3.8 k`, `870`.
fn fmt_rate(r: f64) -> String {
    if r.is_nan() {
        "—".into()
    } else if r >= 10_000.0 {
        let k = (r / 1000.0).round() as u64;
        let s = k.to_string();
        let mut out = String::new();
        for (i, ch) in s.chars().enumerate() {
            if i > 0 && (s.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(ch);
        }
        format!("{out} k")
    } else if r >= 1000.0 {
        format!("{:.1} k", r / 1000.0)
    } else {
        format!("{r:.0}")
    }
}

/// Nanoseconds as microseconds or milliseconds.
fn fmt_nanos(n: f64) -> String {
    if n >= 1e6 {
        format!("{:.2} ms", n / 1e6)
    } else {
        format!("{:.0} us", n / 1e3)
    }
}

/// The first line of /proc/cpuinfo with `field`, without the field name.
fn cpuinfo(field: &str) -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// The 1, 5 and 15 minute load averages, as /proc/loadavg gives them.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// nproc, kernel, CPU model and memory of this machine.
fn machine() -> Value {
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("MemTotal:"))?.to_string();
            let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some((kib / 1024.0 / 1024.0).round())
        })
        .unwrap_or(0.0);
    json!({
        "nproc": nproc,
        "kernel": kernel,
        "cpu": cpuinfo("model name"),
        "mem_gib": mem_gib,
        "loadavg_at_start": loadavg(),
    })
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.first().map(String::as_str) == Some(extra::OPEN_SUBCOMMAND) {
        if let Err(e) = extra::child_open(&argv[1..]) {
            eprintln!("{e}");
            std::process::exit(1);
        }
        return;
    }
    if argv.first().map(String::as_str) == Some(extra::BUILD_SUBCOMMAND) {
        if let Err(e) = extra::child_build(&argv[1..]) {
            eprintln!("{e}");
            std::process::exit(1);
        }
        return;
    }
    let mut args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let began = Instant::now();
    let command = std::iter::once("cargo run --release -p bench-peers --".to_string())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ");
    let host = machine();
    println!(
        "machine: {} cores (nproc), {}, {} GiB, Linux {}, load average at start {}",
        host["nproc"],
        host["cpu"].as_str().unwrap_or("unknown"),
        host["mem_gib"],
        host["kernel"].as_str().unwrap_or("unknown"),
        loadavg()
    );
    println!("command: {command}");
    let budget = match args.ops {
        Some(n) => Budget::Ops(n),
        None => Budget::Time(Duration::from_secs_f64(args.seconds)),
    };
    println!(
        "settings: {} per run, {} reps, engines alternated round-robin, fresh directory per run under {}\n",
        match budget {
            Budget::Ops(n) => format!("{n} ops per thread"),
            Budget::Time(d) => format!("{:.1} s", d.as_secs_f64()),
        },
        args.reps,
        args.dir.display()
    );

    let mut cells: BTreeMap<(&str, &str), Cell> = BTreeMap::new();
    for row in &args.rows {
        let engines: Vec<&str> = args
            .engines
            .iter()
            .copied()
            .filter(|e| ceiling_runs(e, row.durable))
            .collect();
        let spec = RunSpec {
            mix: row.mix,
            threads: row.threads,
            durable: row.durable,
            budget,
            latencies: row.id == LATENCY_ROW,
            replay_keys: args.replay_keys,
        };
        for rep in 0..args.reps {
            for i in 0..engines.len() {
                let engine = engines[(i + rep) % engines.len()];
                let cell = cells.entry((row.id, engine)).or_default();
                settle();
                let result = tempfile::Builder::new()
                    .prefix("bench-peers-")
                    .tempdir_in(&args.dir)
                    .map_err(Into::into)
                    .and_then(|dir| run_engine(engine, dir.path(), spec));
                match result {
                    Ok(r) => {
                        eprintln!(
                            "[{:>6}] rep {}/{} {:<7} {:>10} ops/s  ({} ops in {:.2} s)",
                            row.id,
                            rep + 1,
                            args.reps,
                            engine,
                            fmt_rate(r.rate()),
                            r.ops,
                            r.elapsed.as_secs_f64()
                        );
                        cell.rates.push(r.rate());
                        if spec.latencies {
                            cell.latencies.push([
                                quantile(&r.claim_nanos, 0.5),
                                quantile(&r.claim_nanos, 0.99),
                                quantile(&r.claim_nanos, 0.999),
                            ]);
                        }
                    }
                    Err(e) => {
                        eprintln!("[{:>6}] rep {} {engine}: FAILED: {e}", row.id, rep + 1);
                        cell.errors.push(e.to_string());
                    }
                }
            }
        }
    }

    let med = |row: &str, engine: &str| {
        cells
            .get(&(row, engine))
            .map_or(f64::NAN, |c| median(&c.rates))
    };

    if args.rows.is_empty() {
        args.engines.clear();
    }
    // The table: engines down, rows across.
    println!();
    print!("| engine |");
    for row in &args.rows {
        print!(" {} |", row.title);
    }
    println!();
    print!("|---|");
    for _ in &args.rows {
        print!("---:|");
    }
    println!();
    for engine in &args.engines {
        print!("| {engine} |");
        for row in &args.rows {
            let failed = cells
                .get(&(row.id, *engine))
                .is_some_and(|c| c.rates.is_empty() && !c.errors.is_empty());
            if failed {
                print!(" failed |");
            } else {
                print!(" {} |", fmt_rate(med(row.id, engine)));
            }
        }
        println!();
    }

    // Rep-to-rep spread.
    println!("\nspread across reps, (max - min) / median:");
    for engine in &args.engines {
        let parts: Vec<String> = args
            .rows
            .iter()
            .filter_map(|row| {
                let c = cells.get(&(row.id, *engine))?;
                (c.rates.len() > 1).then(|| format!("{} {:.0}%", row.id, spread(&c.rates)))
            })
            .collect();
        if !parts.is_empty() {
            println!("  {engine}: {}", parts.join(", "));
        }
    }

    // Claim latency under the durable 64-thread load.
    let lat_engines: Vec<(&str, [f64; 3])> = args
        .engines
        .iter()
        .filter_map(|e| {
            let c = cells.get(&(LATENCY_ROW, *e))?;
            if c.latencies.is_empty() {
                return None;
            }
            let pick =
                |i: usize| median(&c.latencies.iter().map(|l| l[i] as f64).collect::<Vec<_>>());
            Some((*e, [pick(0), pick(1), pick(2)]))
        })
        .collect();
    if !lat_engines.is_empty() {
        println!("\nclaim latency, durable, 64 threads (median over reps):\n");
        println!("| engine | p50 | p99 | p99.9 |\n|---|---:|---:|---:|");
        for (e, l) in &lat_engines {
            println!(
                "| {e} | {} | {} | {} |",
                fmt_nanos(l[0]),
                fmt_nanos(l[1]),
                fmt_nanos(l[2])
            );
        }
    }

    // Ratios.
    if !args.rows.is_empty() {
        println!("\nratios (medians):");
    }
    let peers: Vec<&str> = args
        .engines
        .iter()
        .copied()
        .filter(|e| !CEILINGS.contains(e) && *e != "idemkv" && !VARIANTS.contains(e))
        .collect();
    let mut ratios = Vec::new();
    for row in &args.rows {
        let idem = med(row.id, "idemkv");
        let best = peers
            .iter()
            .map(|p| (*p, med(row.id, p)))
            .filter(|(_, r)| !r.is_nan())
            .max_by(|a, b| a.1.total_cmp(&b.1));
        let mut parts = Vec::new();
        let mut entry = json!({ "row": row.id });
        if let Some((peer, rate)) = best {
            parts.push(format!("idemkv / best peer ({peer}) = {:.2}x", idem / rate));
            entry["best_peer"] = json!(peer);
            entry["idemkv_over_best_peer"] = json!(idem / rate);
        }
        // The ceiling of the row: the map, or the map with its log.
        let (ceiling, key) = if row.durable {
            ("map-wal", "idemkv_over_map_wal")
        } else {
            ("map", "idemkv_over_map")
        };
        let top = med(row.id, ceiling);
        if !top.is_nan() {
            parts.push(format!("idemkv / {ceiling} = {:.2}x", idem / top));
            entry[key] = json!(idem / top);
        }
        println!("  {}: {}", row.title, parts.join("; "));
        ratios.push(entry);
    }
    // Rows of their own shape; `idemkv` only.
    let mut extras = Vec::new();
    for &x in &args.extra {
        let result = match x {
            "rss" => extra::rss(&args.dir, args.rss_keys, args.reps),
            "open" => extra::open(&args.dir, &args.open_keys, args.reps),
            "raw_fsync" => extra::raw_fsync(&args.dir, args.fsync_ops, args.reps),
            "a1000" => extra::a1000(&args.dir, args.seconds, args.reps),
            _ => Err(format!("unknown row {x}").into()),
        };
        match result {
            Ok(v) => extras.push(v),
            Err(e) => {
                eprintln!("[{x}] FAILED: {e}");
                extras.push(json!({ "row": x, "error": e.to_string() }));
            }
        }
    }
    let took = began.elapsed();
    println!(
        "\nwhole run: {:.0} s; load average at the end {}",
        took.as_secs_f64(),
        loadavg()
    );

    // JSON.
    let results: Vec<Value> = args
        .rows
        .iter()
        .flat_map(|row| {
            args.engines.iter().filter_map(|e| {
                let c = cells.get(&(row.id, *e))?;
                let mut v = json!({
                    "row": row.id,
                    "title": row.title,
                    "threads": row.threads,
                    "durable": row.durable,
                    "engine": e,
                    "reps": c.rates,
                    "median": if c.rates.is_empty() { Value::Null } else { json!(median(&c.rates)) },
                    "errors": c.errors,
                });
                if !c.latencies.is_empty() {
                    v["claim_latency_ns"] = json!(c.latencies.iter().map(|l| json!({"p50": l[0], "p99": l[1], "p999": l[2]})).collect::<Vec<_>>());
                }
                Some(v)
            })
        })
        .collect();
    let doc = json!({
        "machine": host,
        "command": command,
        "budget": match budget {
            Budget::Ops(n) => json!({ "ops_per_thread": n }),
            Budget::Time(d) => json!({ "seconds": d.as_secs_f64() }),
        },
        "reps": args.reps,
        "replay_keys": args.replay_keys,
        "wall_seconds": took.as_secs_f64(),
        "loadavg_at_end": loadavg(),
        "results": results,
        "ratios": ratios,
        "extra_rows": extras,
    });
    if let Err(e) = std::fs::create_dir_all(&args.out) {
        eprintln!("cannot create {}: {e}", args.out.display());
        std::process::exit(1);
    }
    let json_path = args.out.join("latest.json");
    let text = serde_json::to_string_pretty(&doc).expect("JSON of plain values") + "\n";
    if let Err(e) = std::fs::write(&json_path, text) {
        eprintln!("cannot write {}: {e}", json_path.display());
    }

    // Chart.
    let series = |durable: bool| -> Vec<chart::Series> {
        args.engines
            .iter()
            .map(|e| chart::Series {
                engine: e.to_string(),
                points: args
                    .rows
                    .iter()
                    .filter(|r| r.durable == durable && r.mix == Mix::Pairs)
                    .filter_map(|r| {
                        let m = med(r.id, e);
                        (!m.is_nan()).then_some((r.threads as u32, m))
                    })
                    .collect(),
            })
            .collect()
    };
    if args.rows.is_empty() {
        // No timed row: the chart of the last full run stays.
        println!("wrote {}", json_path.display());
        return;
    }
    let svg_path = args.out.join("pairs_vs_threads.svg");
    if let Err(e) = chart::draw(&svg_path, &series(true), &series(false)) {
        eprintln!("cannot draw {}: {e}", svg_path.display());
    }
    println!("wrote {} and {}", json_path.display(), svg_path.display());
}
