//! `idemkv-tower`'s end-to-end scenarios (an axum server behind the
//! idempotency layer, driven over real TCP) with `RedisBackend` as the
//! store, each scenario on a redis-server of its own (`appendfsync
//! always`). An outage is real: the harness kills the server by its PID
//! and later starts it again on the same port from its append-only file,
//! so "backend down -> 503" and "a claim survives the outage" are checked
//! against what the backend itself reports and recovers.

use idemkv::Backend;
use idemkv_redis::test_support::RedisNode;
use idemkv_redis::{RedisBackend, RedisOptions};
use idemkv_tower::test_support::{BreakSwitch, E2eHarness};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Connections per backend: every one of them must have reconnected
/// before a restarted server counts as back.
const CONNECTIONS: usize = 2;

/// Backends (a fresh prefix each) on a redis-server of the harness's own,
/// stopped by its PID when the harness drops.
struct RedisE2e {
    node: RedisNode,
    next: AtomicU64,
    /// The backend most recently made, and its prefix.
    last: Mutex<Option<(RedisBackend, String)>>,
}

impl RedisE2e {
    /// Starts the server; the test fails if there is none to start.
    fn start() -> RedisE2e {
        let node = RedisNode::start().unwrap_or_else(|e| panic!("{e}"));
        RedisE2e {
            node,
            next: AtomicU64::new(0),
            last: Mutex::new(None),
        }
    }

    async fn connect(&self, prefix: &str) -> RedisBackend {
        RedisOptions::new()
            .prefix(prefix)
            .connections(CONNECTIONS)
            .connect(&self.node.url())
            .await
            .unwrap()
    }

    fn last(&self) -> (RedisBackend, String) {
        let last = self.last.lock().unwrap();
        last.clone().expect("a backend was made")
    }
}

impl E2eHarness for RedisE2e {
    type Backend = RedisBackend;

    async fn backend(&self) -> RedisBackend {
        let prefix = format!("e2e{}:", self.next.fetch_add(1, Ordering::Relaxed));
        let backend = self.connect(&prefix).await;
        *self.last.lock().unwrap() = Some((backend.clone(), prefix));
        backend
    }

    async fn reopen(&self) -> RedisBackend {
        let (_, prefix) = self.last();
        self.connect(&prefix).await
    }

    /// Down: `SIGKILL` by PID, then waits until the backend's calls fail
    /// as unreachable (a connection whose server just died may first
    /// answer `TimedOut`, "it may have been applied").
    /// Up: starts the server again on the same port and directory (it
    /// loads its append-only file before it answers), then waits until
    /// calls succeed on every connection of the backend. The switch stays
    /// up throughout.
    async fn set_down(&self, _switch: &BreakSwitch, down: bool) {
        let (backend, _) = self.last();
        if down {
            self.node.kill();
            assert!(!self.node.is_running());
        } else {
            let node = &self.node;
            tokio::task::block_in_place(|| node.restart()).unwrap_or_else(|e| panic!("{e}"));
        }
        // Consecutive answers that show the new state, one round over the
        // connections at least (calls take them in turn) and then some.
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut in_a_row = 0;
        while in_a_row < 2 * CONNECTIONS {
            let answer = backend.get(b"probe").await;
            let settled = match &answer {
                Ok(_) => !down,
                Err(idemkv::Error::Unreachable { .. }) => down,
                Err(_) => false,
            };
            if settled {
                in_a_row += 1;
            } else {
                in_a_row = 0;
                assert!(
                    Instant::now() < deadline,
                    "the backend did not come {}: {answer:?}",
                    if down { "down" } else { "up" }
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

idemkv_tower::e2e_tests! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    harness = RedisE2e::start();
}

/// The harness's outage is real: the server's process is gone while the
/// backend is down, a call fails as unreachable, and after the restart a
/// record written before the outage is still there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_harness_outage_stops_the_server_and_keeps_the_records() {
    let h = RedisE2e::start();
    let b = h.backend().await;
    let fp = idemkv::Fingerprint::of(b"x");
    let idemkv::Claim::Acquired(ticket) = b.claim(b"k", fp).await.unwrap() else {
        panic!("a fresh key is acquired");
    };
    b.complete(ticket, b"done", Duration::from_secs(600))
        .await
        .unwrap();
    let pid = h.node.pid().expect("running");
    let (_, switch) = idemkv_tower::test_support::Breakable::new(());
    h.set_down(&switch, true).await;
    assert!(h.node.pid().is_none());
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "process {pid} is gone"
    );
    assert!(
        matches!(b.get(b"k").await, Err(idemkv::Error::Unreachable { .. })),
        "a call on a stopped server is refused"
    );
    h.set_down(&switch, false).await;
    let Some(idemkv::Record::Completed(done)) = b.get(b"k").await.unwrap() else {
        panic!("the completed record survived the outage");
    };
    assert_eq!(done.response(), b"done");
}
