//! Claim + complete pairs per second through `RedisBackend`, against the
//! same local 3 + 3 cluster's raw `SET key v NX PX` rate measured in the
//! same run: from the same client (`redis` crate, one multiplexed cluster
//! connection) at the same concurrency, and from `redis-benchmark
//! --cluster` (`-P 1`, `-P 16`). `WAIT` off and `WAIT 1`.
//!
//! `cargo bench -p idemkv-redis --features test-support --bench pairs`
//! (or `idemkv-redis/bench.sh`). Every node runs `appendonly yes`,
//! `appendfsync always`. Bounded: `IDEMKV_BENCH_SECS` per cell (default 3),
//! `IDEMKV_BENCH_REPS` repetitions (default 3); the data is flushed and the
//! append-only files rewritten between cells, and the run stops if the
//! nodes' directories pass 2 GB. `IDEMKV_BENCH_TASKS=64` (a comma-separated
//! list) runs only those concurrencies, without `redis-benchmark`.

use idemkv::{Backend, Claim, Fingerprint};
use idemkv_redis::RedisOptions;
use idemkv_redis::test_support::RedisCluster;
use redis::aio::ConnectionLike;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const CONCURRENCY: [usize; 3] = [1, 64, 1000];
const DISK_LIMIT: u64 = 2 << 30;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs `tasks` copies of `op` for `secs`, returns operations per second.
async fn rate<F, Fut>(tasks: usize, secs: Duration, op: F) -> f64
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let op = Arc::new(op);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
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
    counted as f64 / elapsed.as_secs_f64()
}

/// Median, min and max.
fn spread(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn fmt(s: (f64, f64, f64)) -> String {
    format!("{:.0} ({:.0}-{:.0})", s.0, s.1, s.2)
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

async fn run() {
    let secs = Duration::from_secs(env("IDEMKV_BENCH_SECS", 3));
    let reps = env("IDEMKV_BENCH_REPS", 3).max(1) as usize;
    let cluster = tokio::task::spawn_blocking(|| RedisCluster::start(3, 1))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}"));
    let cluster = Arc::new(cluster);
    let port = cluster.nodes()[0].port();
    let reset = |c: &Arc<RedisCluster>| {
        let c = c.clone();
        tokio::task::spawn_blocking(move || reset(&c))
    };

    let pipelines: &[u32] = if std::env::var_os("IDEMKV_BENCH_TASKS").is_some() {
        &[]
    } else {
        &[1, 16]
    };
    println!("redis-benchmark --cluster, keys k:{{tag}}:__rand_int__, -c 64, -n 200000:");
    const SET_NX: &[&str] = &["SET", "k:{tag}:__rand_int__", "v", "NX", "PX", "60000"];
    // What a claim's write costs the server, as a hash (HSET + PEXPIREAT,
    // replicated as MULTI/HSET/PEXPIREAT/EXEC) and, for comparison, as one
    // packed string (SET ... PXAT, replicated as one command).
    const EVAL_HASH: &[&str] = &[
        "EVAL",
        "redis.call('HSET', KEYS[1], 's', 'c', 'g', '1795000000000000', 'f', '0123456789abcdef', \
         'a', '1795000000000', 'l', '1795000060000', 'x', '1795086460000', 'o', 'fedcba9876543210') \
         redis.call('PEXPIREAT', KEYS[1], '1995086460000') return 1",
        "1",
        "k:{tag}:__rand_int__",
    ];
    const EVAL_STRING: &[&str] = &[
        "EVAL",
        "redis.call('SET', KEYS[1], 'c1795000000000000 0123456789abcdef 1795000000000 \
         1795000060000 1795086460000 fedcba9876543210', 'PXAT', '1995086460000') return 1",
        "1",
        "k:{tag}:__rand_int__",
    ];
    let commands: [(&str, &[&str], &[u32]); 3] = [
        ("SET NX PX", SET_NX, pipelines),
        (
            "EVAL: HSET 7 fields + PEXPIREAT",
            EVAL_HASH,
            &pipelines[..pipelines.len().min(1)],
        ),
        (
            "EVAL: SET packed PXAT",
            EVAL_STRING,
            &pipelines[..pipelines.len().min(1)],
        ),
    ];
    for (name, command, pipelines) in commands {
        for &p in pipelines {
            let mut rates = Vec::new();
            for _ in 0..reps {
                reset(&cluster).await.unwrap();
                let r = tokio::task::spawn_blocking(move || redis_benchmark(port, p, command));
                rates.push(r.await.unwrap());
            }
            println!("  {name}, -P {p}: {} requests/s", fmt(spread(rates)));
        }
    }

    let client = redis::cluster::ClusterClient::new(cluster.urls()).unwrap();
    let raw = client.get_async_connection().await.unwrap();
    println!(
        "\n| tasks | raw SET NX PX /s | pairs/s, WAIT off | ratio | pairs/s, WAIT 1 | ratio | WAIT cost |\n|---|---|---|---|---|---|---|"
    );
    let only: Vec<usize> = std::env::var("IDEMKV_BENCH_TASKS")
        .map(|v| v.split(',').filter_map(|t| t.trim().parse().ok()).collect())
        .unwrap_or_else(|_| CONCURRENCY.to_vec());
    for tasks in only {
        let mut set_nx = Vec::new();
        let mut off = Vec::new();
        let mut on = Vec::new();
        for rep in 0..reps {
            reset(&cluster).await.unwrap();
            let conn = raw.clone();
            set_nx.push(
                rate(tasks, secs, move |t, i| {
                    let mut conn = conn.clone();
                    async move {
                        let mut cmd = redis::cmd("SET");
                        cmd.arg(format!("raw:{rep}:{t}:{i}"))
                            .arg("v")
                            .arg("NX")
                            .arg("PX")
                            .arg(60_000);
                        conn.req_packed_command(&cmd).await.is_ok()
                    }
                })
                .await,
            );
            for (wait, out) in [(false, &mut off), (true, &mut on)] {
                reset(&cluster).await.unwrap();
                let mut options = RedisOptions::new()
                    .prefix(format!("b{rep}:"))
                    .lease(Duration::from_secs(30))
                    .retention(Duration::from_secs(30));
                if wait {
                    options = options.wait_for_replicas(1, Duration::from_millis(500));
                }
                let b = options.connect_cluster(&cluster.urls()).await.unwrap();
                out.push(
                    rate(tasks, secs, move |t, i| {
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
                    .await,
                );
            }
        }
        let (s, f, n) = (spread(set_nx), spread(off), spread(on));
        println!(
            "| {tasks} | {} | {} | {:.2} | {} | {:.2} | {:.0}% fewer pairs |",
            fmt(s),
            fmt(f),
            f.0 / s.0,
            fmt(n),
            n.0 / s.0,
            100.0 * (1.0 - n.0 / f.0)
        );
    }
}
