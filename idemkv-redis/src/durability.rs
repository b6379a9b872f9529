//! The durability check at connect: `CONFIG GET appendonly appendfsync` on
//! every node.

use crate::conn::{Pool, connect_error};
use crate::options::{FsyncCheck, RedisOptions};
use idemkv::{Error, Result};
use redis::{ConnectionAddr, IntoConnectionInfo, Value};
use std::time::Duration;

/// What [`RedisOptions::connect`] found about each node's persistence, as
/// [`RedisBackend::durability`](crate::RedisBackend::durability) returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DurabilityReport {
    /// The check that was configured.
    pub check: FsyncCheck,
    /// One entry per node looked at (none under [`FsyncCheck::Skip`]).
    pub nodes: Vec<NodeDurability>,
}

/// One node's persistence settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeDurability {
    /// `host:port`.
    pub address: String,
    /// `master` or `slave`, from `CLUSTER NODES`; `server` for a single
    /// server.
    pub role: String,
    /// `CONFIG GET appendonly`, if the node answered.
    pub appendonly: Option<String>,
    /// `CONFIG GET appendfsync`, if the node answered.
    pub appendfsync: Option<String>,
    /// Why the node did not answer, if it did not.
    pub error: Option<String>,
    /// Whether the node could be reached at all (a refused `CONFIG` is
    /// reached; a node that is down or paused is not).
    pub reached: bool,
}

impl NodeDurability {
    /// Whether this node fsyncs its append-only file before it answers a
    /// write: `appendonly yes` and `appendfsync always`.
    pub fn fsync_always(&self) -> bool {
        self.appendonly.as_deref() == Some("yes") && self.appendfsync.as_deref() == Some("always")
    }
}

impl DurabilityReport {
    /// Whether every node was seen to fsync every write (false when the
    /// check was skipped: nothing is known).
    pub fn fsync_always(&self) -> bool {
        !self.nodes.is_empty() && self.nodes.iter().all(NodeDurability::fsync_always)
    }
}

/// Looks at every node and applies `options.fsync_check`.
pub(crate) async fn check(
    options: &RedisOptions,
    pool: &Pool,
    urls: &[&str],
    cluster: bool,
) -> Result<DurabilityReport> {
    let check = options.fsync_check;
    if check == FsyncCheck::Skip {
        return Ok(DurabilityReport {
            check,
            nodes: Vec::new(),
        });
    }
    let nodes = if cluster {
        let listing = pool.command(redis::cmd("CLUSTER").arg("NODES")).await?;
        let listing = text(&listing).unwrap_or_default();
        let template = urls[0].into_connection_info().map_err(connect_error)?;
        let mut nodes = Vec::new();
        for (host, port, role) in cluster_nodes(&listing) {
            let info = template
                .clone()
                .set_addr(ConnectionAddr::Tcp(host.clone(), port));
            nodes.push(
                node_config(
                    info,
                    format!("{host}:{port}"),
                    role,
                    options.connect_timeout,
                )
                .await,
            );
        }
        nodes
    } else {
        let info = urls[0].into_connection_info().map_err(connect_error)?;
        let address = match info.addr() {
            ConnectionAddr::Tcp(h, p) => format!("{h}:{p}"),
            other => format!("{other:?}"),
        };
        vec![node_config(info, address, "server".into(), options.connect_timeout).await]
    };
    let report = DurabilityReport { check, nodes };
    for node in report.nodes.iter().filter(|n| !n.fsync_always()) {
        let found = match &node.error {
            Some(e) => format!("CONFIG GET failed: {e}"),
            None => format!(
                "appendonly {}, appendfsync {}",
                node.appendonly.as_deref().unwrap_or("?"),
                node.appendfsync.as_deref().unwrap_or("?")
            ),
        };
        if check == FsyncCheck::Require && node.reached {
            return Err(Error::InvalidOptions(format!(
                "Redis node {} ({}) does not fsync every write ({found}): an acknowledged claim \
                 could vanish in a crash. Run it with `appendonly yes` and `appendfsync always`, \
                 or connect with FsyncCheck::Warn (knowingly) or FsyncCheck::Skip (when CONFIG \
                 is disabled)",
                node.address, node.role
            )));
        }
        tracing::warn!(
            node = %node.address,
            role = %node.role,
            "Redis node does not fsync every write ({found}); acknowledged records may be lost in a crash"
        );
    }
    Ok(report)
}

/// `CONFIG GET appendonly appendfsync` on one node, through a connection
/// of its own.
async fn node_config(
    info: redis::ConnectionInfo,
    address: String,
    role: String,
    timeout: Duration,
) -> NodeDurability {
    let mut node = NodeDurability {
        address,
        role,
        appendonly: None,
        appendfsync: None,
        error: None,
        reached: false,
    };
    let reached = &mut node.reached;
    let ask = async {
        let client = redis::Client::open(info)?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        let ping = redis::cmd("PING").query_async::<Value>(&mut conn).await;
        *reached = ping.is_ok();
        redis::cmd("CONFIG")
            .arg("GET")
            .arg("appendonly")
            .arg("appendfsync")
            .query_async::<Value>(&mut conn)
            .await
    };
    match tokio::time::timeout(timeout, ask).await {
        Ok(Ok(value)) => {
            for (name, value) in config_pairs(value) {
                match name.as_str() {
                    "appendonly" => node.appendonly = Some(value),
                    "appendfsync" => node.appendfsync = Some(value),
                    _ => {}
                }
            }
        }
        Ok(Err(e)) => node.error = Some(e.to_string()),
        Err(_) => node.error = Some(format!("no answer within {timeout:?}")),
    }
    node
}

/// The name/value pairs of a `CONFIG GET` reply (an array in RESP2, a map
/// in RESP3).
fn config_pairs(v: Value) -> Vec<(String, String)> {
    let items: Vec<(Value, Value)> = match v {
        Value::Map(pairs) => pairs,
        Value::Array(items) => {
            let mut it = items.into_iter();
            let mut pairs = Vec::new();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                pairs.push((k, v));
            }
            pairs
        }
        _ => Vec::new(),
    };
    items
        .into_iter()
        .filter_map(|(k, v)| Some((text(&k)?, text(&v)?)))
        .collect()
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) | Value::VerbatimString { text: s, .. } => Some(s.clone()),
        _ => None,
    }
}

/// `(host, port, role)` of every node in a `CLUSTER NODES` listing that is
/// not failed, in handshake or without an address.
pub(crate) fn cluster_nodes(listing: &str) -> Vec<(String, u16, String)> {
    let mut nodes = Vec::new();
    for line in listing.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(addr), Some(flags)) = (fields.get(1), fields.get(2)) else {
            continue;
        };
        let flags: Vec<&str> = flags.split(',').collect();
        if flags
            .iter()
            .any(|f| matches!(*f, "fail" | "handshake" | "noaddr"))
        {
            continue;
        }
        let role = if flags.contains(&"master") {
            "master"
        } else {
            "slave"
        };
        // ip:port@cport[,hostname]
        let hostport = addr.split('@').next().unwrap_or_default();
        let Some((host, port)) = hostport.rsplit_once(':') else {
            continue;
        };
        if let Ok(port) = port.parse() {
            nodes.push((host.to_string(), port, role.to_string()));
        }
    }
    nodes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_listing_is_parsed_and_failed_nodes_skipped() {
        let listing = "\
07c3 127.0.0.1:30004@40004 slave e7d1 0 1426238317239 4 connected
67ed 127.0.0.1:30002@40002,host2 master - 0 1426238316232 2 connected 5461-10922
e7d1 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460
6ec2 127.0.0.1:30005@40005 master,fail 67ed 1426238316232 1426238316232 5 connected
";
        let nodes = cluster_nodes(listing);
        assert_eq!(
            nodes,
            vec![
                ("127.0.0.1".into(), 30004, "slave".into()),
                ("127.0.0.1".into(), 30002, "master".into()),
                ("127.0.0.1".into(), 30001, "master".into()),
            ]
        );
    }

    #[test]
    fn fsync_always_needs_both_settings_on_every_node() {
        let node = |a: &str, f: &str| NodeDurability {
            address: "x".into(),
            role: "master".into(),
            appendonly: Some(a.into()),
            appendfsync: Some(f.into()),
            error: None,
            reached: true,
        };
        assert!(node("yes", "always").fsync_always());
        assert!(!node("yes", "everysec").fsync_always());
        assert!(!node("no", "always").fsync_always());
        let report = |nodes| DurabilityReport {
            check: FsyncCheck::Warn,
            nodes,
        };
        assert!(report(vec![node("yes", "always")]).fsync_always());
        assert!(!report(vec![node("yes", "always"), node("yes", "no")]).fsync_always());
        assert!(!report(Vec::new()).fsync_always(), "nothing known");
        let pairs = config_pairs(Value::Array(vec![
            Value::BulkString(b"appendonly".to_vec()),
            Value::BulkString(b"yes".to_vec()),
        ]));
        assert_eq!(pairs, vec![("appendonly".into(), "yes".into())]);
    }
}
