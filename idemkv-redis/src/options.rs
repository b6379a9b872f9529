//! How a [`RedisBackend`](crate::RedisBackend) is configured.

use crate::backend::RedisBackend;
use idemkv::{Error, Result};
use std::time::Duration;

/// Where an idempotency key's record lives: the Redis key name is the
/// prefix, then the hash tag this selects, then the idempotency key's bytes.
///
/// Redis Cluster picks a key's slot from the first `{...}` section of its
/// name that has at least one byte, or from the whole name. Each transition
/// touches one Redis key, so any slot works; the choice is about spreading
/// the load and about who picks the slot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum HashTag {
    /// `prefix` + key. The whole name picks the slot, unless it contains a
    /// `{...}` section: then the first one does. Idempotency keys usually
    /// come from clients, so a client can pick its keys' slot with braces;
    /// use [`HashTag::Digest`] where that matters.
    #[default]
    None,
    /// `prefix{<16 hex digits>}` + key, the digits a 64-bit digest of the
    /// key: the slot depends on the key's digest only, never on braces in
    /// the key. 18 bytes more per name.
    Digest,
    /// `prefix{tag}` + key: every record of this backend on the one slot of
    /// `tag`, so on one node. For a namespace that must stay on one shard
    /// (or a test); it gives up spreading the load.
    Fixed(Vec<u8>),
}

/// What [`RedisOptions::connect`] does about the servers' `appendfsync`.
///
/// `appendonly yes` with `appendfsync always` is the only Redis
/// configuration in which an acknowledged write survives a crash of the
/// server (or its machine) by itself: with `everysec` up to a second of
/// acknowledged writes is lost with the process or the kernel, with
/// `appendonly no` everything since the last snapshot. The check reads
/// `CONFIG GET appendonly appendfsync` on every node (in a cluster, every
/// primary and replica `CLUSTER NODES` lists) once, at connect.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FsyncCheck {
    /// Refuse to connect ([`Error::InvalidOptions`], naming the node and
    /// what it has) if a node answers without `appendonly yes` and
    /// `appendfsync always`, or refuses `CONFIG GET`. A node that cannot
    /// be reached (down, being failed over) is logged and listed in the
    /// report, not refused: it acknowledges nothing while it is away, and
    /// the next connect checks it. The default.
    #[default]
    Require,
    /// Connect anyway; log a `tracing` warning for each node that falls
    /// short, and say so in [`RedisBackend::durability`]. For a deployment
    /// that relies on replicas and `WAIT` instead, or on everysec knowingly.
    Warn,
    /// Do not look (`CONFIG` is disabled on some managed services). The
    /// report then says nothing is known.
    Skip,
}

/// `WAIT replicas timeout` after each write: the write is acknowledged only
/// once `replicas` replicas of the key's primary confirmed it, else the call
/// fails with [`Error::NotDurable`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WaitFor {
    /// Replicas that must confirm each write (at least 1).
    pub replicas: u32,
    /// How long the primary waits for them (`WAIT`'s timeout; below
    /// [`RedisOptions::command_timeout`]).
    pub timeout: Duration,
}

/// The configuration of a [`RedisBackend`]: defaults, then builder methods,
/// then [`connect`](RedisOptions::connect) or
/// [`connect_cluster`](RedisOptions::connect_cluster).
///
/// | option | default |
/// |---|---|
/// | [`prefix`](RedisOptions::prefix) | `idemkv:` |
/// | [`hash_tag`](RedisOptions::hash_tag) | [`HashTag::None`] |
/// | [`lease`](RedisOptions::lease) | 60 s |
/// | [`retention`](RedisOptions::retention) | 24 h |
/// | [`tombstone_ttl`](RedisOptions::tombstone_ttl) | lease + retention |
/// | [`max_key_len`](RedisOptions::max_key_len) | 1 KiB |
/// | [`max_response_len`](RedisOptions::max_response_len) | 1 MiB |
/// | [`command_timeout`](RedisOptions::command_timeout) | 2 s |
/// | [`connect_timeout`](RedisOptions::connect_timeout) | 2 s |
/// | [`fsync_check`](RedisOptions::fsync_check) | [`FsyncCheck::Require`] |
/// | [`wait_for_replicas`](RedisOptions::wait_for_replicas) | off |
/// | [`claim_wait_poll`](RedisOptions::claim_wait_poll) | 2 ms doubling to 50 ms |
/// | [`connections`](RedisOptions::connections) | 4 |
/// | [`wait_connections`](RedisOptions::wait_connections) | 32 (with `WAIT` only) |
/// | [`cluster_retries`](RedisOptions::cluster_retries) | 4 |
#[derive(Clone, Debug)]
pub struct RedisOptions {
    pub(crate) prefix: Vec<u8>,
    pub(crate) hash_tag: HashTag,
    pub(crate) lease: Duration,
    pub(crate) retention: Duration,
    pub(crate) tombstone_ttl: Option<Duration>,
    pub(crate) max_key_len: usize,
    pub(crate) max_response_len: usize,
    pub(crate) command_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) fsync_check: FsyncCheck,
    pub(crate) wait: Option<WaitFor>,
    pub(crate) poll_min: Duration,
    pub(crate) poll_max: Duration,
    pub(crate) connections: usize,
    pub(crate) wait_connections: usize,
    pub(crate) cluster_retries: u32,
}

/// The largest response accepted: Redis refuses bulk strings above 512 MiB.
pub const MAX_RESPONSE_LEN_LIMIT: usize = 512 << 20;

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            prefix: b"idemkv:".to_vec(),
            hash_tag: HashTag::None,
            lease: Duration::from_secs(60),
            retention: Duration::from_secs(24 * 3600),
            tombstone_ttl: None,
            max_key_len: 1024,
            max_response_len: 1 << 20,
            command_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(2),
            fsync_check: FsyncCheck::Require,
            wait: None,
            poll_min: Duration::from_millis(2),
            poll_max: Duration::from_millis(50),
            connections: 4,
            wait_connections: 32,
            cluster_retries: 4,
        }
    }
}

impl RedisOptions {
    /// The defaults (see the table above).
    pub fn new() -> Self {
        RedisOptions::default()
    }

    /// The bytes every Redis key name of this backend starts with, so that
    /// several backends (services, tenants, test runs) share a server.
    pub fn prefix(mut self, prefix: impl AsRef<[u8]>) -> Self {
        self.prefix = prefix.as_ref().to_vec();
        self
    }

    /// How the slot of a record is chosen; see [`HashTag`].
    pub fn hash_tag(mut self, hash_tag: HashTag) -> Self {
        self.hash_tag = hash_tag;
        self
    }

    /// How long a claim owns its key before another claim with the same
    /// fingerprint may take it over. Measured on the Redis server's clock.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// How long an in-progress record stays present after its lease ended
    /// (so that it can be taken over, and so that a different request is
    /// still refused as a mismatch) before it expires: an abandoned claim
    /// is gone `lease + retention` after its last claim or extension.
    /// Completed records keep the retention passed to `complete`.
    pub fn retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// How long a released or removed key remembers its last generation
    /// (a tombstone of two hash fields), so that the next claim's
    /// generation is above it whatever the server's clock does. Default:
    /// lease + retention.
    pub fn tombstone_ttl(mut self, ttl: Duration) -> Self {
        self.tombstone_ttl = Some(ttl);
        self
    }

    /// The longest idempotency key accepted ([`Error::KeyTooLong`] above).
    pub fn max_key_len(mut self, len: usize) -> Self {
        self.max_key_len = len;
        self
    }

    /// The longest response `complete` accepts ([`Error::ResponseTooLarge`]
    /// above); at most [`MAX_RESPONSE_LEN_LIMIT`].
    pub fn max_response_len(mut self, len: usize) -> Self {
        self.max_response_len = len;
        self
    }

    /// How long one call may take, retries and `WAIT` included, before it
    /// fails with [`Error::TimedOut`].
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// How long connecting (and the durability check) may take.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// What to do about servers without `appendfsync always`; see
    /// [`FsyncCheck`].
    pub fn fsync_check(mut self, check: FsyncCheck) -> Self {
        self.fsync_check = check;
        self
    }

    /// Send `WAIT replicas timeout` after every write (claim, complete,
    /// release, extension, removal, mark) and fail it with
    /// [`Error::NotDurable`] unless `replicas` replicas confirmed it.
    pub fn wait_for_replicas(mut self, replicas: u32, timeout: Duration) -> Self {
        self.wait = Some(WaitFor { replicas, timeout });
        self
    }

    /// No `WAIT` (the default): a write is acknowledged once its primary
    /// applied it (and, with `appendfsync always`, fsynced it).
    pub fn no_wait(mut self) -> Self {
        self.wait = None;
        self
    }

    /// `claim_wait` polls the key while another owner holds it, first after
    /// `min`, each pause twice the last up to `max`, and never past the
    /// owner's lease end or the caller's timeout.
    pub fn claim_wait_poll(mut self, min: Duration, max: Duration) -> Self {
        self.poll_min = min;
        self.poll_max = max;
        self
    }

    /// Multiplexed connections (per node, in a cluster) that the calls
    /// without `WAIT` share, in turn.
    pub fn connections(mut self, n: usize) -> Self {
        self.connections = n;
        self
    }

    /// With `WAIT`: connections (per node, in a cluster) of which each
    /// write takes one for itself until its replicas answered. Redis holds
    /// up every later command on a connection while a `WAIT` on it waits,
    /// so this bounds the writes in flight: about `wait_connections` per
    /// replica round trip, or per `WAIT` timeout while a primary's replicas
    /// are away (writes then queue here, within the command timeout, not
    /// on the server).
    pub fn wait_connections(mut self, n: usize) -> Self {
        self.wait_connections = n;
        self
    }

    /// How many times the cluster client retries a call the cluster refused
    /// for now (`CLUSTERDOWN`, `TRYAGAIN`, `MOVED` to a node being
    /// promoted) before the call fails with [`Error::Unreachable`]; within
    /// the command timeout either way.
    pub fn cluster_retries(mut self, n: u32) -> Self {
        self.cluster_retries = n;
        self
    }

    /// Connects to one Redis server (`redis://host:port`, with the usual
    /// URL parameters for a password or a database), checks its durability
    /// settings and returns the backend.
    pub async fn connect(self, url: &str) -> Result<RedisBackend> {
        self.validate()?;
        RedisBackend::open(self, &[url], false).await
    }

    /// Connects to a Redis Cluster through any of its nodes, checks every
    /// node's durability settings and returns the backend.
    pub async fn connect_cluster<S: AsRef<str>>(self, nodes: &[S]) -> Result<RedisBackend> {
        self.validate()?;
        let nodes: Vec<&str> = nodes.iter().map(AsRef::as_ref).collect();
        if nodes.is_empty() {
            return Err(invalid("connect_cluster needs at least one node address"));
        }
        RedisBackend::open(self, &nodes, true).await
    }

    /// The lease as the backend uses it.
    pub fn lease_duration(&self) -> Duration {
        self.lease
    }

    /// The replicas `WAIT` requires, if any.
    pub fn wait(&self) -> Option<WaitFor> {
        self.wait
    }

    pub(crate) fn tombstone(&self) -> Duration {
        self.tombstone_ttl
            .unwrap_or_else(|| self.lease.saturating_add(self.retention))
    }

    /// Checks every option, so that nothing later has to.
    pub(crate) fn validate(&self) -> Result<()> {
        if self.lease.is_zero() || self.lease.as_millis() < 1 {
            return Err(invalid("lease must be at least 1 ms"));
        }
        for (what, d) in [
            ("lease", self.lease),
            ("retention", self.retention),
            ("tombstone_ttl", self.tombstone()),
        ] {
            // Times in the scripts are unix ms in Lua numbers (doubles):
            // keep every sum far below 2^53.
            if d > Duration::from_secs(100 * 365 * 24 * 3600) {
                return Err(invalid(&format!("{what} must be at most 100 years")));
            }
        }
        if self.tombstone().is_zero() {
            return Err(invalid("tombstone_ttl must be above zero"));
        }
        if self.max_key_len == 0 {
            return Err(invalid("max_key_len must be at least 1"));
        }
        if self.max_response_len > MAX_RESPONSE_LEN_LIMIT {
            return Err(invalid(&format!(
                "max_response_len must be at most {MAX_RESPONSE_LEN_LIMIT} (Redis' bulk string limit)"
            )));
        }
        if self.command_timeout.is_zero() || self.connect_timeout.is_zero() {
            return Err(invalid(
                "command_timeout and connect_timeout must be above zero",
            ));
        }
        if let Some(w) = self.wait {
            if w.replicas == 0 {
                return Err(invalid("wait_for_replicas needs at least 1 replica"));
            }
            if w.timeout.is_zero() || w.timeout >= self.command_timeout {
                return Err(invalid(
                    "the WAIT timeout must be above zero and below command_timeout, \
                     so that a short WAIT is reported as NotDurable, not as a timeout",
                ));
            }
        }
        if self.poll_min.is_zero() || self.poll_min > self.poll_max {
            return Err(invalid("claim_wait_poll needs 0 < min <= max"));
        }
        if self.connections == 0 || self.connections > 64 {
            return Err(invalid("connections must be between 1 and 64"));
        }
        if self.wait_connections == 0 || self.wait_connections > 1024 {
            return Err(invalid("wait_connections must be between 1 and 1024"));
        }
        match &self.hash_tag {
            HashTag::None => {}
            HashTag::Fixed(tag) if tag.is_empty() || tag.contains(&b'}') => {
                return Err(invalid(
                    "a fixed hash tag must be non-empty and hold no '}'",
                ));
            }
            HashTag::Fixed(_) | HashTag::Digest if self.prefix.contains(&b'{') => {
                return Err(invalid(
                    "with a hash tag the prefix must hold no '{', or Redis would hash the prefix's",
                ));
            }
            HashTag::Fixed(_) | HashTag::Digest => {}
        }
        Ok(())
    }
}

fn invalid(why: &str) -> Error {
    Error::InvalidOptions(why.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_typed_errors() {
        RedisOptions::new().validate().unwrap();
        let bad = [
            RedisOptions::new().lease(Duration::ZERO),
            RedisOptions::new().max_key_len(0),
            RedisOptions::new().max_response_len(MAX_RESPONSE_LEN_LIMIT + 1),
            RedisOptions::new().command_timeout(Duration::ZERO),
            RedisOptions::new().wait_for_replicas(0, Duration::from_millis(100)),
            RedisOptions::new().wait_for_replicas(1, Duration::from_secs(2)),
            RedisOptions::new().claim_wait_poll(Duration::from_millis(9), Duration::from_millis(1)),
            RedisOptions::new().connections(0),
            RedisOptions::new().wait_connections(0),
            RedisOptions::new().hash_tag(HashTag::Fixed(Vec::new())),
            RedisOptions::new().hash_tag(HashTag::Fixed(b"a}b".to_vec())),
            RedisOptions::new().prefix("{p}").hash_tag(HashTag::Digest),
            RedisOptions::new().retention(Duration::from_secs(200 * 365 * 24 * 3600)),
        ];
        for options in bad {
            match options.validate() {
                Err(Error::InvalidOptions(_)) => {}
                other => panic!("{options:?}: expected InvalidOptions, got {other:?}"),
            }
        }
        let tag = RedisOptions::new().prefix("{p}").hash_tag(HashTag::None);
        tag.validate().unwrap();
        assert_eq!(
            RedisOptions::new().tombstone(),
            Duration::from_secs(60 + 24 * 3600)
        );
    }
}
