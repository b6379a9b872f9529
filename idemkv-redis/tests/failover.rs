//! Failover under load: many tasks claim and complete against a local
//! 3 + 3 cluster, one primary is killed (`SIGKILL`, by PID), its replica is
//! promoted, and every acknowledged transition is checked against the
//! cluster's records. Four rounds: `WAIT` off and on, each with the replica
//! keeping up and with the replica paused (`SIGSTOP`) 1.5 s before its
//! primary dies. The figures are printed (uncaptured) in every run; with
//! `WAIT` on the test asserts that nothing acknowledged was lost.

use idemkv::{Backend, BackendTicket, Claim, Error, Fingerprint};
use idemkv_redis::test_support::checker::{self, Ack, Losses};
use idemkv_redis::test_support::{NodeOptions, RedisCluster};
use idemkv_redis::{RedisBackend, RedisOptions};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Tasks claiming and completing at once.
const TASKS: usize = 64;
/// Load before anything fails.
const WARM_UP: Duration = Duration::from_secs(2);
/// How long the replica is paused before its primary is killed.
const PAUSE: Duration = Duration::from_millis(1500);
/// Load after the promotion.
const AFTER: Duration = Duration::from_secs(1);
/// No task makes more claims than this (a bound on a fast machine).
const MAX_PER_TASK: usize = 20_000;

/// What one round measured.
#[derive(Debug, Default)]
struct Figures {
    claims_tried: usize,
    completes_tried: usize,
    losses: Losses,
    errors: BTreeMap<&'static str, usize>,
    promotion: Duration,
    write_gap: Duration,
}

/// What one task did.
#[derive(Default)]
struct Work {
    acks: Vec<(Instant, Ack)>,
    claims_tried: usize,
    completes_tried: usize,
    errors: BTreeMap<&'static str, usize>,
}

fn error_kind(e: &Error) -> &'static str {
    match e {
        Error::Unreachable { .. } => "unreachable",
        Error::TimedOut { .. } => "timed out",
        Error::NotDurable { .. } => "not durable",
        Error::LeaseLost => "lease lost",
        _ => "other",
    }
}

/// Claims fresh keys and completes them until `stop`, logging every
/// acknowledgement.
async fn worker(b: RedisBackend, task: usize, stop: Arc<AtomicBool>) -> Work {
    let mut w = Work::default();
    for i in 0..MAX_PER_TASK {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let key = format!("w{task}-{i}").into_bytes();
        w.claims_tried += 1;
        let ticket = match b.claim(&key, Fingerprint::of(&key)).await {
            Ok(Claim::Acquired(t)) => t,
            Ok(other) => panic!("a fresh key answered {other:?}"),
            Err(e) => {
                *w.errors.entry(error_kind(&e)).or_default() += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let generation = ticket.generation();
        w.acks.push((
            Instant::now(),
            Ack::Claimed {
                key: key.clone(),
                generation,
            },
        ));
        let response = [&key[..], b" done"].concat();
        w.completes_tried += 1;
        match b
            .complete(ticket, &response, Duration::from_secs(600))
            .await
        {
            Ok(()) => w.acks.push((
                Instant::now(),
                Ack::Completed {
                    key,
                    generation,
                    response,
                },
            )),
            Err(e) => {
                *w.errors.entry(error_kind(&e)).or_default() += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    w
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// The longest time after `from` in which no task got an acknowledgement.
fn longest_gap(mut times: Vec<Instant>, from: Instant) -> Duration {
    times.sort_unstable();
    times
        .windows(2)
        .filter(|w| w[1] > from)
        .map(|w| w[1] - w[0].max(from))
        .max()
        .unwrap_or_default()
}

/// Reads every acknowledged key back, a few hundred at a time.
async fn read_back(
    b: &RedisBackend,
    acks: &[Ack],
) -> HashMap<Vec<u8>, Option<idemkv_redis::Inspected>> {
    let mut keys: Vec<Vec<u8>> = acks.iter().map(|a| a.key().to_vec()).collect();
    keys.sort_unstable();
    keys.dedup();
    let mut found = HashMap::new();
    for chunk in keys.chunks(256) {
        let reads: Vec<_> = chunk
            .iter()
            .map(|k| {
                let (b, k) = (b.clone(), k.clone());
                tokio::spawn(async move {
                    for _ in 0..50 {
                        if let Ok(state) = b.inspect(&k).await {
                            return (k, state);
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    panic!("{k:?} could not be read back")
                })
            })
            .collect();
        for r in reads {
            let (k, state) = r.await.unwrap();
            found.insert(k, state);
        }
    }
    found
}

/// With `WAIT 1` after the failover: the promoted replica has no replica
/// of its own, so writes on its slots are `NotDurable` (and none is
/// acknowledged); once the killed node is back (as its replica), they are
/// acknowledged again. Returns the `NotDurable` count of the probes before
/// the rejoin (they stop at three).
async fn rejoin(
    cluster: &Arc<RedisCluster>,
    b: &RedisBackend,
    victim: u16,
    promoted: u16,
) -> usize {
    let mut not_durable = 0;
    for i in 0..60 {
        match b
            .claim(format!("probe-{i}").as_bytes(), Fingerprint::of(b"p"))
            .await
        {
            Err(Error::NotDurable {
                acknowledged: 0,
                required: 1,
            }) => not_durable += 1,
            Ok(Claim::Acquired(_)) => {}
            other => panic!("probe {i} after the promotion: {other:?}"),
        }
        if not_durable >= 3 {
            break;
        }
    }
    assert!(
        not_durable > 0,
        "the promoted node, without a replica, confirms nothing"
    );
    let c = cluster.clone();
    blocking(move || {
        c.node(victim).unwrap().restart().unwrap();
        // Rejoined once the promoted node has it as an online replica.
        let promoted = c.node(promoted).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !promoted
            .text(&["INFO", "replication"])
            .is_ok_and(|i| i.contains("connected_slaves:1") && i.contains("state=online"))
        {
            assert!(
                Instant::now() < deadline,
                "the old primary never rejoined as a replica"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await;
    // The new replica may still be busy right after its sync (it rewrites
    // its append-only file): writes must be acknowledged again within a
    // few seconds, 30 in a row.
    let deadline = Instant::now() + Duration::from_secs(15);
    let (mut streak, mut i) = (0, 0);
    while streak < 30 {
        i += 1;
        match b
            .claim(format!("rejoined-{i}").as_bytes(), Fingerprint::of(b"p"))
            .await
        {
            Ok(Claim::Acquired(_)) => streak += 1,
            Err(Error::NotDurable { .. }) if Instant::now() < deadline => {
                streak = 0;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => panic!("probe {i} after the old primary rejoined as a replica: {other:?}"),
        }
    }
    not_durable
}

async fn round(wait: bool, paused: bool) -> Figures {
    let options = NodeOptions {
        node_timeout_ms: 1000,
        ..NodeOptions::default()
    };
    let cluster = Arc::new(
        blocking(move || RedisCluster::start_with(3, 1, options))
            .await
            .unwrap_or_else(|e| panic!("{e}")),
    );
    let mut o = RedisOptions::new()
        .prefix("f:")
        .lease(Duration::from_secs(600))
        .retention(Duration::from_secs(600))
        .command_timeout(Duration::from_secs(2));
    if wait {
        o = o.wait_for_replicas(1, Duration::from_millis(500));
    }
    let b = o.connect_cluster(&cluster.urls()).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..TASKS)
        .map(|t| tokio::spawn(worker(b.clone(), t, stop.clone())))
        .collect();

    tokio::time::sleep(WARM_UP).await;
    let victim = cluster.primaries().unwrap()[0].port;
    let replica = cluster.replicas_of(victim).unwrap()[0].port;
    if paused {
        cluster.node(replica).unwrap().pause().unwrap();
        tokio::time::sleep(PAUSE).await;
    }
    let killed_at = Instant::now();
    cluster.node(victim).unwrap().kill();
    if paused {
        cluster.node(replica).unwrap().resume().unwrap();
    }
    let c = cluster.clone();
    let promotion = blocking(move || {
        c.wait_for(Duration::from_secs(60), |t| {
            t.iter()
                .any(|n| n.port == replica && n.primary && n.slots > 0)
        })
    })
    .await
    .unwrap_or_else(|e| panic!("no promotion: {e}"));
    tokio::time::sleep(AFTER).await;
    stop.store(true, Ordering::Relaxed);

    let mut f = Figures {
        promotion,
        ..Figures::default()
    };
    let mut acks = Vec::new();
    let mut times = Vec::new();
    for w in workers {
        let w = w.await.unwrap();
        f.claims_tried += w.claims_tried;
        f.completes_tried += w.completes_tried;
        for (kind, n) in w.errors {
            *f.errors.entry(kind).or_default() += n;
        }
        for (at, ack) in w.acks {
            times.push(at);
            acks.push(ack);
        }
    }
    f.write_gap = longest_gap(times, killed_at);
    let found = read_back(&b, &acks).await;
    f.losses = checker::check(&acks, &found);
    assert_eq!(
        f.losses.claims + f.losses.completes,
        acks.len(),
        "every acknowledgement was checked"
    );
    assert!(f.losses.claims > 1000, "the load ran: {:?}", f.losses);
    if wait {
        let n = rejoin(&cluster, &b, victim, replica).await;
        f.errors.insert("probe not durable", n);
    }
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_transitions_across_a_primary_failover() {
    let mut out = std::io::stderr();
    let _ = writeln!(
        out,
        "\nfailover rounds ({TASKS} tasks, 3 + 3 cluster, appendfsync always, node timeout 1 s):\n\
         | WAIT | replica | claims tried | acked | lost | completes tried | acked | lost | promotion | no acks for | errors |\n\
         |---|---|---|---|---|---|---|---|---|---|---|"
    );
    for (wait, paused) in [(false, false), (true, false), (false, true), (true, true)] {
        let f = round(wait, paused).await;
        let l = &f.losses;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} ms | {} ms | {:?} |",
            if wait { "1, 500 ms" } else { "off" },
            if paused { "paused 1.5 s" } else { "live" },
            f.claims_tried,
            l.claims,
            l.claims_lost,
            f.completes_tried,
            l.completes,
            l.completes_lost,
            f.promotion.as_millis(),
            f.write_gap.as_millis(),
            f.errors,
        );
        if !l.examples.is_empty() {
            let _ = writeln!(out, "  lost, for example: {:?}", l.examples);
        }
        if wait {
            assert_eq!(l.lost(), 0, "WAIT on: acknowledged transitions lost: {l:?}");
        }
    }
}
