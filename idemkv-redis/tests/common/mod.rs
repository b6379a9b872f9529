//! The contract suite's harness on local Redis servers.

#![allow(dead_code)] // each test binary uses part of it

use idemkv::contract::Harness;
use idemkv_redis::test_support::{RedisCluster, RedisNode};
use idemkv_redis::{RedisBackend, RedisOptions};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The `WAIT` timeout of harnesses that wait for a replica.
pub const WAIT_TIMEOUT: Duration = Duration::from_millis(250);

/// What a harness's backends connect to.
pub enum Servers {
    /// A server of the harness's own (killed by `break_writes`).
    Node(RedisNode),
    /// A cluster shared with other harnesses.
    Cluster(Arc<RedisCluster>),
}

/// Fresh backends (a prefix each) on a server or a cluster; leases and
/// retentions run on the server's clock, so `advance` sleeps.
pub struct RedisHarness {
    servers: Servers,
    wait: bool,
    id: u64,
    next: AtomicU64,
    paused: Mutex<Vec<u16>>,
}

static HARNESSES: AtomicU64 = AtomicU64::new(0);

impl RedisHarness {
    /// A harness with a redis-server of its own; panics (the test fails)
    /// if there is none to start.
    pub fn single() -> RedisHarness {
        let node = RedisNode::start().unwrap_or_else(|e| panic!("{e}"));
        RedisHarness::on(Servers::Node(node), false)
    }

    /// A harness on a shared cluster, its backends with or without `WAIT 1`.
    pub fn cluster(cluster: Arc<RedisCluster>, wait: bool) -> RedisHarness {
        RedisHarness::on(Servers::Cluster(cluster), wait)
    }

    fn on(servers: Servers, wait: bool) -> RedisHarness {
        RedisHarness {
            servers,
            wait,
            id: HARNESSES.fetch_add(1, Ordering::Relaxed),
            next: AtomicU64::new(0),
            paused: Mutex::new(Vec::new()),
        }
    }

    /// Options for a fresh backend of this harness.
    pub fn options(&self) -> RedisOptions {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let options = RedisOptions::new()
            .prefix(format!("h{}-{n}:", self.id))
            .connections(2);
        if self.wait {
            options.wait_for_replicas(1, WAIT_TIMEOUT)
        } else {
            options
        }
    }

    /// Connects `options` to this harness's servers.
    pub fn connect(&self, options: RedisOptions) -> impl Future<Output = RedisBackend> + Send {
        let (urls, cluster) = match &self.servers {
            Servers::Node(n) => (vec![n.url()], false),
            Servers::Cluster(c) => (c.urls(), true),
        };
        async move {
            let connected = if cluster {
                options.connect_cluster(&urls).await
            } else {
                options.connect(&urls[0]).await
            };
            connected.unwrap_or_else(|e| panic!("connecting to {urls:?}: {e}"))
        }
    }

    /// The single server, for a harness that has one.
    pub fn node(&self) -> &RedisNode {
        match &self.servers {
            Servers::Node(n) => n,
            Servers::Cluster(_) => panic!("a cluster harness"),
        }
    }
}

impl Harness for RedisHarness {
    type Backend = RedisBackend;

    fn backend(
        &self,
        lease: Duration,
        retention: Duration,
    ) -> impl Future<Output = RedisBackend> + Send {
        self.connect(self.options().lease(lease).retention(retention))
    }

    fn advance(&self, by: Duration) -> impl Future<Output = ()> + Send {
        // The server's clock cannot be moved: let it pass, plus a margin for
        // its millisecond granularity.
        tokio::time::sleep(by + Duration::from_millis(5))
    }

    fn spawn<F>(&self, task: F) -> impl Future<Output = F::Output> + Send
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let task = tokio::spawn(task);
        async move {
            task.await
                .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
        }
    }

    /// A single server is killed (`SIGKILL`); a cluster's replicas are
    /// paused (`SIGSTOP`, resumed when the harness is dropped), which makes
    /// every `WAIT` come back short. A cluster harness without `WAIT`
    /// cannot break its backend without breaking the other rows' (skipped).
    fn break_writes(&self, _backend: &RedisBackend) -> impl Future<Output = bool> + Send {
        let broken = match &self.servers {
            Servers::Node(n) => {
                n.kill();
                true
            }
            Servers::Cluster(c) if self.wait => {
                let mut paused = self.paused.lock().unwrap();
                for replica in c.topology().unwrap().iter().filter(|n| !n.primary) {
                    let node = c.node(replica.port).expect("a node of the cluster");
                    node.pause().unwrap();
                    paused.push(replica.port);
                }
                !paused.is_empty()
            }
            Servers::Cluster(_) => false,
        };
        std::future::ready(broken)
    }
}

impl Drop for RedisHarness {
    fn drop(&mut self) {
        if let Servers::Cluster(c) = &self.servers {
            for port in self.paused.lock().unwrap().drain(..) {
                if let Some(node) = c.node(port) {
                    let _ = node.resume();
                }
            }
        }
    }
}
