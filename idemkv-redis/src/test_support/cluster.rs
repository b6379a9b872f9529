//! A local Redis Cluster: `redis-server` nodes joined by `redis-cli
//! --cluster create`, every one stopped by its PID on drop.

use super::node::{NodeOptions, RedisNode};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A cluster of local nodes; dropping it kills every node.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisNode>,
    replicas: usize,
}

/// One line of `CLUSTER NODES`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterNode {
    /// The node id.
    pub id: String,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Whether it is a primary (`master` flag).
    pub primary: bool,
    /// The id of its primary, for a replica.
    pub primary_id: Option<String>,
    /// Whether the cluster has failed it (`fail` flag; `fail?` is not yet).
    pub failed: bool,
    /// How many slots it serves.
    pub slots: usize,
}

impl RedisCluster {
    /// `primaries` primaries with `replicas` replicas each, every node with
    /// `appendonly yes`, `appendfsync always` and a 1 s node timeout;
    /// returns once every node reports `cluster_state:ok`, every replica's
    /// link to its primary is up, and the topology lists every primary
    /// with its replicas.
    pub fn start(primaries: usize, replicas: usize) -> Result<RedisCluster, String> {
        RedisCluster::start_with(primaries, replicas, NodeOptions::default())
    }

    /// Like [`start`](RedisCluster::start), every node started with
    /// `options` (`cluster` is turned on).
    pub fn start_with(
        primaries: usize,
        replicas: usize,
        options: NodeOptions,
    ) -> Result<RedisCluster, String> {
        if primaries < 3 {
            return Err("redis-cli --cluster create needs at least 3 primaries".into());
        }
        let options = NodeOptions {
            cluster: true,
            ..options
        };
        let mut nodes = Vec::new();
        for _ in 0..primaries * (1 + replicas) {
            nodes.push(RedisNode::start_with(options.clone())?);
        }
        let cluster = RedisCluster { nodes, replicas };
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for n in &cluster.nodes {
            create.arg(format!("127.0.0.1:{}", n.port()));
        }
        let out = create
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("redis-cli could not be run: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "redis-cli --cluster create failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        cluster.wait_ok(Duration::from_secs(30))?;
        // The replicas' links are up, but the node `topology` asks may not
        // have heard yet whose replica each one is (gossip): wait until it
        // lists every primary with all of its replicas.
        cluster.wait_for(Duration::from_secs(30), |t| {
            t.iter().filter(|n| n.primary && n.slots > 0).all(|p| {
                t.iter()
                    .filter(|r| r.primary_id.as_deref() == Some(p.id.as_str()))
                    .count()
                    >= replicas
            })
        })?;
        Ok(cluster)
    }

    /// Every node, in start order (the ports passed to `--cluster create`).
    pub fn nodes(&self) -> &[RedisNode] {
        &self.nodes
    }

    /// The node listening on `port`.
    pub fn node(&self, port: u16) -> Option<&RedisNode> {
        self.nodes.iter().find(|n| n.port() == port)
    }

    /// `redis://127.0.0.1:<port>` of every node, to connect a cluster
    /// client.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisNode::url).collect()
    }

    /// `CLUSTER NODES` as seen by the first running node.
    pub fn topology(&self) -> Result<Vec<ClusterNode>, String> {
        let mut last = "no node is running".to_string();
        for node in self.nodes.iter().filter(|n| n.is_running()) {
            match node.text(&["CLUSTER", "NODES"]) {
                Ok(listing) => return Ok(parse_nodes(&listing)),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// The primaries, from [`topology`](RedisCluster::topology), that are
    /// not failed and serve slots.
    pub fn primaries(&self) -> Result<Vec<ClusterNode>, String> {
        Ok(self
            .topology()?
            .into_iter()
            .filter(|n| n.primary && !n.failed && n.slots > 0)
            .collect())
    }

    /// The replicas of the primary on `port`.
    pub fn replicas_of(&self, port: u16) -> Result<Vec<ClusterNode>, String> {
        let topology = self.topology()?;
        let id = topology
            .iter()
            .find(|n| n.port == port)
            .map(|n| n.id.clone())
            .ok_or_else(|| format!("no node on port {port}"))?;
        Ok(topology
            .into_iter()
            .filter(|n| n.primary_id.as_deref() == Some(id.as_str()))
            .collect())
    }

    /// Waits until every running node reports `cluster_state:ok` and all
    /// 16384 slots served, and every running replica's link to its primary
    /// is up.
    pub fn wait_ok(&self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.state() {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() > deadline => {
                    return Err(format!("the cluster is not ok after {timeout:?}: {e}"));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// Waits until `ready` holds for the topology, then until the cluster
    /// is ok; returns how long the first part took.
    pub fn wait_for(
        &self,
        timeout: Duration,
        ready: impl Fn(&[ClusterNode]) -> bool,
    ) -> Result<Duration, String> {
        let started = Instant::now();
        loop {
            if let Ok(t) = self.topology()
                && ready(&t)
            {
                break;
            }
            if started.elapsed() > timeout {
                return Err(format!(
                    "the cluster did not reach the expected topology in {timeout:?}: {:?}",
                    self.topology()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let took = started.elapsed();
        self.wait_ok(timeout.saturating_sub(took).max(Duration::from_secs(5)))?;
        Ok(took)
    }

    fn state(&self) -> Result<(), String> {
        for node in self.nodes.iter().filter(|n| n.is_running()) {
            let info = node.text(&["CLUSTER", "INFO"])?;
            let field = |name: &str| {
                info.lines()
                    .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                    .map(str::trim)
                    .unwrap_or("")
                    .to_string()
            };
            if field("cluster_state") != "ok" || field("cluster_slots_ok") != "16384" {
                return Err(format!(
                    "port {}: {}",
                    node.port(),
                    info.replace("\r\n", " ")
                ));
            }
            let replication = node.text(&["INFO", "replication"])?;
            if replication.contains("role:slave") && !replication.contains("master_link_status:up")
            {
                return Err(format!("port {}: replica link down", node.port()));
            }
        }
        if self.replicas > 0 {
            let t = self.topology()?;
            let live_replicas = t.iter().filter(|n| !n.primary && !n.failed).count();
            let live_primaries = t.iter().filter(|n| n.primary && n.slots > 0).count();
            if live_replicas == 0 || live_primaries == 0 {
                return Err(format!("topology incomplete: {t:?}"));
            }
        }
        Ok(())
    }
}

/// Parses a `CLUSTER NODES` listing.
fn parse_nodes(listing: &str) -> Vec<ClusterNode> {
    let mut nodes = Vec::new();
    for line in listing.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 {
            continue;
        }
        let port = f[1]
            .split('@')
            .next()
            .and_then(|a| a.rsplit_once(':'))
            .and_then(|(_, p)| p.parse().ok());
        let Some(port) = port else { continue };
        let flags: Vec<&str> = f[2].split(',').collect();
        let slots = f[8..]
            .iter()
            .filter(|s| !s.starts_with('['))
            .map(|s| match s.split_once('-') {
                Some((a, b)) => match (a.parse::<usize>(), b.parse::<usize>()) {
                    (Ok(a), Ok(b)) if b >= a => b - a + 1,
                    _ => 0,
                },
                None => usize::from(s.parse::<usize>().is_ok()),
            })
            .sum();
        nodes.push(ClusterNode {
            id: f[0].to_string(),
            port,
            primary: flags.contains(&"master"),
            primary_id: (f[3] != "-").then(|| f[3].to_string()),
            failed: flags.contains(&"fail"),
            slots,
        });
    }
    nodes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_nodes_listing_is_parsed() {
        let listing = "\
a1 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:30002@40002 master,fail - 0 1 2 connected
c3 127.0.0.1:30003@40003 master - 0 1 3 connected 5461-10922 10923 10924-16383 [77->-b2]
d4 127.0.0.1:30004@40004 slave a1 0 1 1 connected
";
        let nodes = parse_nodes(listing);
        assert_eq!(nodes.len(), 4);
        assert_eq!(
            (nodes[0].port, nodes[0].primary, nodes[0].slots),
            (30001, true, 5461)
        );
        assert!(nodes[1].failed && nodes[1].slots == 0);
        assert_eq!(nodes[2].slots, 16384 - 5461);
        assert_eq!(nodes[3].primary_id.as_deref(), Some("a1"));
        assert!(!nodes[3].primary);
    }
}
