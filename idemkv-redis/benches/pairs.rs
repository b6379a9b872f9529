//! Claim + complete pairs per second through `RedisBackend`, against the
//! same local 3 + 3 cluster's raw `SET key v NX PX` rate measured in the
//! same run: from the same client (`redis` crate, multiplexed cluster
//! connections, as many as the backend uses, taken in turn per call) at the
//! same concurrency, and from `redis-benchmark --cluster` (`-P 1`,
//! `-P 16`). `WAIT` off and `WAIT 1`. Also the floor of any design with a
//! script per transition: pairs of the cheapest script that can write a
//! record on the server's clock (`TIME`, then `SET .. NX` or `XX` `PXAT`),
//! sent by the raw client. For every cell also the CPU time it cost per
//! operation, from `/proc`: this process (the client), the three
//! primaries, the three replicas.
//!
//! `cargo bench -p idemkv-redis --features test-support --bench pairs`
//! (or `idemkv-redis/bench.sh`). Every node runs `appendonly yes`,
//! `appendfsync always`. Bounded: `IDEMKV_BENCH_SECS` per cell (default 3),
//! `IDEMKV_BENCH_REPS` repetitions (default 3); the data is flushed and the
//! append-only files rewritten between cells, and the run stops if the
//! nodes' directories pass 2 GB. Narrower runs:
//! `IDEMKV_BENCH_TASKS=64,1000` (those concurrencies only, without
//! `redis-benchmark`), `IDEMKV_BENCH_CONNECTIONS=1,4` (connections per node
//! for both the raw client and the backend; default 1), `IDEMKV_BENCH_WAIT=0`
//! (without the `WAIT 1` cells), `IDEMKV_BENCH_WAIT_CONNECTIONS=128` (the
//! backend's `wait_connections` in the `WAIT 1` cells; default the
//! option's default, 32).

use idemkv::{Backend, Claim, Fingerprint};
use idemkv_redis::RedisOptions;
use idemkv_redis::test_support::RedisCluster;
use redis::aio::ConnectionLike;
use redis::cluster_async::ClusterConnection;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const CONCURRENCY: [usize; 3] = [1, 64, 1000];
const DISK_LIMIT: u64 = 2 << 30;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn env_list(name: &str, default: &[usize]) -> Vec<usize> {
    std::env::var(name)
        .map(|v| v.split(',').filter_map(|t| t.trim().parse().ok()).collect())
        .unwrap_or_else(|_| default.to_vec())
}

/// CPU time used so far, in clock ticks: this process, the primaries, the
/// replicas.
#[derive(Clone, Copy, Default)]
struct Cpu {
    client: u64,
    primaries: u64,
    replicas: u64,
}

/// utime + stime of a process, in clock ticks (fields 14 and 15 of
/// `/proc/<pid>/stat`, counted after the parenthesised command name).
fn ticks(pid: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    field(11) + field(12)
}

fn cpu(cluster: &RedisCluster, primaries: &[u16]) -> Cpu {
    let mut c = Cpu {
        client: ticks("self"),
        ..Cpu::default()
    };
    for node in cluster.nodes() {
        let t = node.pid().map_or(0, |p| ticks(&p.to_string()));
        if primaries.contains(&node.port()) {
            c.primaries += t;
        } else {
            c.replicas += t;
        }
    }
    c
}

/// One cell's outcome: operations per second and CPU µs per operation.
#[derive(Clone, Copy)]
struct Cell {
    rate: f64,
    client_us: f64,
    primaries_us: f64,
    replicas_us: f64,
}

/// Runs `tasks` copies of `op` for `secs`.
async fn rate<F, Fut>(
    tasks: usize,
    secs: Duration,
    cluster: &RedisCluster,
    primaries: &[u16],
    op: F,
) -> Cell
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let op = Arc::new(op);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let before = cpu(cluster, primaries);
    let started = Instant::now();
    let workers: Vec<_> = (0..tasks)
        .map(|t| {
            let (op, stop, done) = (op.clone(), stop.clone(), done.clone());
            tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    if op(t, i).await {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(secs).await;
    stop.store(true, Ordering::Relaxed);
    let counted = done.load(Ordering::Relaxed);
    let elapsed = started.elapsed();
    for w in workers {
        w.await.unwrap();
    }
    let after = cpu(cluster, primaries);
    let ops = counted.max(1) as f64;
    let us = |a: u64, b: u64| (a - b) as f64 * 10_000.0 / ops; // 100 ticks/s
    Cell {
        rate: counted as f64 / elapsed.as_secs_f64(),
        client_us: us(after.client, before.client),
        primaries_us: us(after.primaries, before.primaries),
        replicas_us: us(after.replicas, before.replicas),
    }
}

/// Median, min and max.
fn spread(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn fmt(s: (f64, f64, f64)) -> String {
    format!("{:.0} ({:.0}-{:.0})", s.0, s.1, s.2)
}

/// Median CPU µs per operation: client / primaries / replicas.
fn fmt_cpu(cells: &[Cell]) -> String {
    let median = |f: fn(&Cell) -> f64| spread(cells.iter().map(f).collect()).0;
    format!(
        "{:.0} / {:.0} / {:.0}",
        median(|c| c.client_us),
        median(|c| c.primaries_us),
        median(|c| c.replicas_us)
    )
}

/// Empties the cluster and compacts the append-only files; panics past
/// the disk limit.
fn reset(cluster: &RedisCluster) {
    for node in cluster.nodes() {
        let _ = node.text(&["FLUSHALL"]);
        let _ = node.text(&["BGREWRITEAOF"]);
    }
    std::thread::sleep(Duration::from_millis(300));
    let used: u64 = cluster.nodes().iter().map(|n| dir_size(n.dir())).sum();
    assert!(
        used < DISK_LIMIT,
        "the nodes use {used} bytes on disk: stopping"
    );
}

fn dir_size(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// `redis-benchmark --cluster` with a custom `SET ... NX PX` command: its
/// `{tag}` placeholder becomes a tag of each primary in turn, so the keys
/// spread over all three. Requests/s.
fn redis_benchmark(port: u16, pipeline: u32, command: &[&str]) -> f64 {
    let out = Command::new("redis-benchmark")
        .args(["--cluster", "-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-n", "200000", "-c", "64", "-r", "100000000", "-q"])
        .args(["-P", &pipeline.to_string()])
        .args(command)
        .output()
        .expect("redis-benchmark runs");
    let text = String::from_utf8_lossy(&out.stdout).replace('\r', "\n");
    text.lines()
        .filter_map(|l| {
            l.split("requests per second")
                .next()?
                .rsplit(' ')
                .nth(1)?
                .parse()
                .ok()
        })
        .next_back()
        .unwrap_or(0.0)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

async fn run_redis_benchmark(cluster: &Arc<RedisCluster>, reps: usize) {
    let port = cluster.nodes()[0].port();
    let pipelines: &[u32] = &[1, 16];
    println!("redis-benchmark --cluster, keys k:{{tag}}:__rand_int__, -c 64, -n 200000:");
    const SET_NX: &[&str] = &["SET", "k:{tag}:__rand_int__", "v", "NX", "PX", "60000"];
    // The server's cost of the smallest script that writes a record: one
    // EVAL, TIME, one SET .. PXAT of a 65-byte value (as a claim on a key
    // Redis does not hold).
    const EVAL_SET: &[&str] = &[
        "EVAL",
        "local t = redis.call('TIME') return redis.call('SET', KEYS[1], \
         string.rep('c', 65), 'NX', 'PXAT', t[1] * 1000 + 60000)",
        "1",
        "k:{tag}:__rand_int__",
    ];
    let commands: [(&str, &[&str], &[u32]); 2] = [
        ("SET NX PX", SET_NX, pipelines),
        ("EVAL: TIME + SET NX PXAT", EVAL_SET, pipelines),
    ];
    for (name, command, pipelines) in commands {
        for &p in pipelines {
            let mut rates = Vec::new();
            for _ in 0..reps {
                let c = cluster.clone();
                tokio::task::spawn_blocking(move || reset(&c))
                    .await
                    .unwrap();
                let r = tokio::task::spawn_blocking(move || redis_benchmark(port, p, command));
                rates.push(r.await.unwrap());
            }
            println!("  {name}, -P {p}: {} requests/s", fmt(spread(rates)));
        }
    }
    println!();
}

/// `SET key v NX PX 60000` on `conns` connections taken in turn per call,
/// as the backend takes its connections.
fn raw_set(
    conns: Arc<Vec<ClusterConnection>>,
    rep: usize,
) -> impl Fn(usize, u64) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>>
+ Send
+ Sync
+ 'static {
    let next = Arc::new(AtomicUsize::new(0));
    move |t, i| {
        let n = next.fetch_add(1, Ordering::Relaxed) % conns.len();
        let mut conn = conns[n].clone();
        Box::pin(async move {
            let mut cmd = redis::cmd("SET");
            cmd.arg(format!("raw:{rep}:{t}:{i}"))
                .arg("v")
                .arg("NX")
                .arg("PX")
                .arg(60_000);
            conn.req_packed_command(&cmd).await.is_ok()
        })
    }
}

/// The cheapest script that writes a record on the server's clock.
const MINIMAL: &str = "local t = redis.call('TIME') \
    return redis.call('SET', KEYS[1], ARGV[1], ARGV[2], 'PXAT', t[1] * 1000 + 60000)";

/// A pair of [`MINIMAL`] scripts on one key (`NX`, then `XX` with a
/// longer value), by `EVALSHA`, on `conns` connections taken in turn.
fn minimal_pair(
    conns: Arc<Vec<ClusterConnection>>,
    rep: usize,
) -> impl Fn(usize, u64) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>>
+ Send
+ Sync
+ 'static {
    let next = Arc::new(AtomicUsize::new(0));
    let script = Arc::new(redis::Script::new(MINIMAL));
    move |t, i| {
        let n = next.fetch_add(1, Ordering::Relaxed) % conns.len();
        let mut conn = conns[n].clone();
        let script = script.clone();
        Box::pin(async move {
            let key = format!("min:{rep}:{t}:{i}");
            let claimed: redis::RedisResult<Option<String>> = script
                .key(&key)
                .arg([b'c'; 65].as_slice())
                .arg("NX")
                .invoke_async(&mut conn)
                .await;
            if !matches!(claimed, Ok(Some(_))) {
                return false;
            }
            let done: redis::RedisResult<Option<String>> = script
                .key(&key)
                .arg(&b"d201 created"[..])
                .arg("XX")
                .invoke_async(&mut conn)
                .await;
            matches!(done, Ok(Some(_)))
        })
    }
}

async fn run() {
    let secs = Duration::from_secs(env("IDEMKV_BENCH_SECS", 3));
    let reps = env("IDEMKV_BENCH_REPS", 3).max(1) as usize;
    let with_wait = env("IDEMKV_BENCH_WAIT", 1) != 0;
    let wait_connections = std::env::var("IDEMKV_BENCH_WAIT_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok());
    let cluster = tokio::task::spawn_blocking(|| RedisCluster::start(3, 1))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}"));
    let cluster = Arc::new(cluster);
    let primaries: Vec<u16> = cluster
        .primaries()
        .unwrap()
        .iter()
        .map(|n| n.port)
        .collect();
    let reset = |c: &Arc<RedisCluster>| {
        let c = c.clone();
        tokio::task::spawn_blocking(move || reset(&c))
    };
    println!(
        "load average at the start: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    if std::env::var_os("IDEMKV_BENCH_TASKS").is_none() {
        run_redis_benchmark(&cluster, reps).await;
    }

    let client = redis::cluster::ClusterClient::new(cluster.urls()).unwrap();
    println!(
        "CPU: µs per operation (a SET, or a pair), client / 3 primaries / 3 replicas, medians\n\n\
         | tasks | conns | raw SET NX PX /s | pairs/s, WAIT off | ratio | pairs/s, WAIT 1 | ratio | minimal script pairs/s | ratio | CPU per SET | CPU per pair, WAIT off | CPU per minimal pair |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    let tasks_list = env_list("IDEMKV_BENCH_TASKS", &CONCURRENCY);
    let conns_list = env_list("IDEMKV_BENCH_CONNECTIONS", &[1]);
    for tasks in tasks_list {
        for &conns in &conns_list {
            let mut set_nx = Vec::new();
            let mut minimal = Vec::new();
            let mut off = Vec::new();
            let mut on = Vec::new();
            let mut raw = Vec::new();
            for _ in 0..conns {
                raw.push(client.get_async_connection().await.unwrap());
            }
            let raw = Arc::new(raw);
            for rep in 0..reps {
                reset(&cluster).await.unwrap();
                let op = raw_set(raw.clone(), rep);
                set_nx.push(rate(tasks, secs, &cluster, &primaries, op).await);
                reset(&cluster).await.unwrap();
                let op = minimal_pair(raw.clone(), rep);
                minimal.push(rate(tasks, secs, &cluster, &primaries, op).await);
                let waits: &[bool] = if with_wait { &[false, true] } else { &[false] };
                for &wait in waits {
                    reset(&cluster).await.unwrap();
                    let mut options = RedisOptions::new()
                        .prefix(format!("b{rep}:"))
                        .lease(Duration::from_secs(30))
                        .retention(Duration::from_secs(30))
                        .connections(conns);
                    if wait {
                        options = options.wait_for_replicas(1, Duration::from_millis(500));
                        if let Some(n) = wait_connections {
                            options = options.wait_connections(n);
                        }
                    }
                    let b = options.connect_cluster(&cluster.urls()).await.unwrap();
                    let cell = rate(tasks, secs, &cluster, &primaries, move |t, i| {
                        let b = b.clone();
                        async move {
                            let key = format!("{t}:{i}");
                            let fp = Fingerprint::of(key.as_bytes());
                            match b.claim(key.as_bytes(), fp).await {
                                Ok(Claim::Acquired(ticket)) => b
                                    .complete(ticket, b"201 created", Duration::from_secs(30))
                                    .await
                                    .is_ok(),
                                _ => false,
                            }
                        }
                    })
                    .await;
                    if wait { &mut on } else { &mut off }.push(cell);
                }
            }
            let rates = |v: &[Cell]| fmt(spread(v.iter().map(|c| c.rate).collect()));
            // Each repetition's ratio to the raw rate measured just before it.
            let ratio = |v: &[Cell]| {
                let r = spread(
                    v.iter()
                        .zip(&set_nx)
                        .map(|(p, s)| p.rate / s.rate)
                        .collect(),
                );
                format!("{:.2} ({:.2}-{:.2})", r.0, r.1, r.2)
            };
            let (wait_rate, wait_ratio) = if with_wait {
                (rates(&on), ratio(&on))
            } else {
                ("-".into(), "-".into())
            };
            println!(
                "| {tasks} | {conns} | {} | {} | {} | {wait_rate} | {wait_ratio} | {} | {} | {} | {} | {} |",
                rates(&set_nx),
                rates(&off),
                ratio(&off),
                rates(&minimal),
                ratio(&minimal),
                fmt_cpu(&set_nx),
                fmt_cpu(&off),
                fmt_cpu(&minimal),
            );
        }
    }
    println!(
        "load average at the end: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
}
