//! Connections, script calls (with `WAIT`), and how Redis errors become
//! [`idemkv::Error`]s.

use crate::options::{RedisOptions, WaitFor};
use crate::scripts::Script;
use futures_util::future::join_all;
use idemkv::Error;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, ErrorKind, Pipeline, RedisError, ServerErrorKind, Value};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// One multiplexed connection: to a server, or to a cluster (one connection
/// per node, following `MOVED` and retrying `CLUSTERDOWN`/`TRYAGAIN`).
#[derive(Clone)]
pub(crate) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Conn {
    async fn commands(&mut self, p: &Pipeline, n: usize) -> redis::RedisResult<Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(p, 0, n).await,
            Conn::Cluster(c) => c.req_packed_commands(p, 0, n).await,
        }
    }

    pub(crate) async fn command(&mut self, cmd: &Cmd) -> redis::RedisResult<Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd).await,
            Conn::Cluster(c) => c.req_packed_command(cmd).await,
        }
    }
}

/// The backend's connections.
///
/// Calls without `WAIT` share `connections` multiplexed connections, in
/// turn. A script followed by `WAIT` takes one of `wait_connections`
/// connections for itself until both answer: Redis holds up every later
/// command of a client while its `WAIT` waits, so two `WAIT`s queued on one
/// connection would add up, and a replica outage would pile a backlog of
/// `WAIT` timeouts onto the server that outlives the callers' timeouts.
/// One at a time per connection, the waiting happens here, where the
/// command timeout bounds it.
///
/// A cluster connection whose call timed out or lost its socket is
/// replaced by a fresh one (one replacement at a time per connection, at
/// most one a second): a cluster client that was idle through a failover
/// and then gets a burst of calls can stay stuck on the old topology, and
/// a fresh connection reads the topology anew.
pub(crate) struct Pool {
    shared: Arc<[Shared]>,
    next: AtomicUsize,
    exclusive: Arc<Mutex<Vec<Conn>>>,
    free: Arc<Semaphore>,
    cluster: Option<ClusterClient>,
    connect_timeout: Duration,
    timeout: Duration,
    wait: Option<WaitFor>,
}

/// A shared connection, and whether it is being replaced.
struct Shared {
    conn: Mutex<Conn>,
    healing: AtomicBool,
}

/// A script's reply, and what `WAIT` said after it (if it was sent).
pub(crate) struct Reply {
    pub(crate) value: Vec<Value>,
    pub(crate) replicas: Option<i64>,
}

/// The cluster client every cluster connection comes from.
fn cluster_client(options: &RedisOptions, nodes: &[&str]) -> redis::RedisResult<ClusterClient> {
    ClusterClientBuilder::new(nodes.iter().copied())
        .connection_timeout(options.connect_timeout)
        .response_timeout(options.command_timeout)
        .retries(options.cluster_retries)
        .min_retry_wait(10)
        .max_retry_wait(250)
        .retry_wait_formula(25, 2)
        .build()
}

/// Opens `n` connections, all at once.
async fn open_all(
    options: &RedisOptions,
    nodes: &[&str],
    cluster: Option<&ClusterClient>,
    n: usize,
) -> redis::RedisResult<Vec<Conn>> {
    if let Some(client) = cluster {
        let opened = join_all((0..n).map(|_| client.get_async_connection())).await;
        return opened.into_iter().map(|c| c.map(Conn::Cluster)).collect();
    }
    let client = redis::Client::open(nodes[0])?;
    // Reconnects in the background after a failure; the failed call itself
    // is not retried (it may have been applied).
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(options.connect_timeout))
        .set_response_timeout(Some(options.command_timeout))
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(10))
        .set_max_delay(Duration::from_millis(250));
    let opened =
        join_all((0..n).map(|_| client.get_connection_manager_with_config(config.clone()))).await;
    opened.into_iter().map(|c| c.map(Conn::Single)).collect()
}

impl Pool {
    /// Opens the connections to `nodes`.
    pub(crate) async fn open(
        options: &RedisOptions,
        nodes: &[&str],
        cluster: bool,
    ) -> idemkv::Result<Pool> {
        let started = Instant::now();
        let exclusive = options.wait.map_or(0, |_| options.wait_connections);
        let connect = async {
            let client = if cluster {
                Some(cluster_client(options, nodes)?)
            } else {
                None
            };
            let shared = open_all(options, nodes, client.as_ref(), options.connections).await?;
            let exclusive = open_all(options, nodes, client.as_ref(), exclusive).await?;
            Ok::<_, RedisError>((client, shared, exclusive))
        };
        let (client, shared, exclusive) =
            match tokio::time::timeout(options.connect_timeout, connect).await {
                Ok(Ok(opened)) => opened,
                Ok(Err(e)) => return Err(connect_error(e)),
                Err(_) => {
                    return Err(Error::TimedOut {
                        after: started.elapsed(),
                    });
                }
            };
        let shared = shared
            .into_iter()
            .map(|conn| Shared {
                conn: Mutex::new(conn),
                healing: AtomicBool::new(false),
            })
            .collect();
        Ok(Pool {
            free: Arc::new(Semaphore::new(exclusive.len())),
            exclusive: Arc::new(Mutex::new(exclusive)),
            shared,
            next: AtomicUsize::new(0),
            cluster: client,
            connect_timeout: options.connect_timeout,
            timeout: options.command_timeout,
            wait: options.wait,
        })
    }

    /// Runs `script` on `key` with the arguments `args` appends: `EVALSHA`,
    /// then `EVAL` if the server does not have it yet. For a script that
    /// writes, with `WAIT` configured, `WAIT` goes in the same pipeline, so
    /// it reaches the same node on the same connection right after the
    /// script (a `WAIT` routed on its own could reach another node after a
    /// failover and confirm nothing), on a connection of its own. Bounded
    /// by the command timeout, the wait for a free connection included.
    pub(crate) async fn run(
        &self,
        script: &Script,
        key: &[u8],
        args: impl Fn(&mut Cmd),
    ) -> idemkv::Result<Reply> {
        let wait = self.wait.filter(|_| script.writes);
        self.bounded(wait.is_some(), async |conn| {
            match call(conn, script, key, &args, wait, false).await {
                Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                    call(conn, script, key, &args, wait, true).await
                }
                other => other,
            }
        })
        .await
    }

    /// Runs one plain command on a shared connection.
    pub(crate) async fn command(&self, cmd: &Cmd) -> idemkv::Result<Value> {
        self.bounded(false, async |conn| conn.command(cmd).await)
            .await
    }

    /// Runs `f` on a connection (one of its own if `exclusive`) within the
    /// command timeout, maps its error, and replaces the connection if it
    /// looks broken.
    async fn bounded<T>(
        &self,
        exclusive: bool,
        f: impl AsyncFnOnce(&mut Conn) -> redis::RedisResult<T>,
    ) -> idemkv::Result<T> {
        let started = Instant::now();
        let deadline = tokio::time::Instant::from_std(started + self.timeout);
        let timed_out = || Error::TimedOut {
            after: started.elapsed(),
        };
        let mut lease = if exclusive {
            match tokio::time::timeout_at(deadline, self.check_out()).await {
                Ok(lease) => lease,
                Err(_) => return Err(timed_out()),
            }
        } else {
            let i = self.next.fetch_add(1, Ordering::Relaxed) % self.shared.len();
            let conn = lock(&self.shared[i].conn).clone();
            Lease::Shared { index: i, conn }
        };
        let outcome = tokio::time::timeout_at(deadline, f(lease.conn())).await;
        let (result, broken) = match outcome {
            Ok(Ok(v)) => (Ok(v), false),
            Ok(Err(e)) => {
                let broken = e.is_io_error()
                    || e.is_timeout()
                    || e.kind() == ErrorKind::ClusterConnectionNotFound;
                (Err(call_error(e, started)), broken)
            }
            Err(_) => (Err(timed_out()), true),
        };
        if broken {
            self.heal(&mut lease);
        }
        result
    }

    /// Takes a connection for one `WAIT` pipeline; it goes back when the
    /// lease drops (also when the caller's timeout drops the call: the
    /// server then finishes that `WAIT` within its timeout, which is below
    /// the command timeout).
    async fn check_out(&self) -> Lease {
        let permit = self
            .free
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let conn = lock(&self.exclusive)
            .pop()
            .expect("a permit stands for a free connection");
        Lease::Exclusive {
            conn,
            permit: Some(permit),
            free: self.exclusive.clone(),
        }
    }

    /// Replaces the leased connection with a fresh one, in the background
    /// (cluster connections only: a single server's connection manager
    /// reconnects by itself).
    fn heal(&self, lease: &mut Lease) {
        let (Some(client), Ok(runtime)) = (&self.cluster, tokio::runtime::Handle::try_current())
        else {
            return;
        };
        let (client, connect_timeout) = (client.clone(), self.connect_timeout);
        let fresh = async move {
            match tokio::time::timeout(connect_timeout, client.get_async_connection()).await {
                Ok(Ok(conn)) => Some(Conn::Cluster(conn)),
                _ => None,
            }
        };
        match lease {
            Lease::Shared { index, .. } => {
                let shared = self.shared.clone();
                let index = *index;
                if shared[index].healing.swap(true, Ordering::AcqRel) {
                    return;
                }
                runtime.spawn(async move {
                    if let Some(conn) = fresh.await {
                        *lock(&shared[index].conn) = conn;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    shared[index].healing.store(false, Ordering::Release);
                });
            }
            Lease::Exclusive {
                conn, permit, free, ..
            } => {
                // The connection and its permit go back only once the
                // replacement is there (or could not be made).
                let (old, permit, free) = (conn.clone(), permit.take(), free.clone());
                runtime.spawn(async move {
                    let conn = fresh.await.unwrap_or(old);
                    lock(&free).push(conn);
                    drop(permit);
                });
            }
        }
    }
}

/// A connection in use.
enum Lease {
    /// One of the shared connections.
    Shared { index: usize, conn: Conn },
    /// One of the exclusive connections, with its permit; it goes back on
    /// drop unless a replacement took it over (`permit` then `None`).
    Exclusive {
        conn: Conn,
        permit: Option<OwnedSemaphorePermit>,
        free: Arc<Mutex<Vec<Conn>>>,
    },
}

impl Lease {
    fn conn(&mut self) -> &mut Conn {
        match self {
            Lease::Shared { conn, .. } | Lease::Exclusive { conn, .. } => conn,
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Lease::Exclusive {
            conn, permit, free, ..
        } = self
            && let Some(permit) = permit.take()
        {
            lock(free).push(conn.clone());
            drop(permit);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One attempt: the script (by SHA, or its source), and `WAIT` after it.
async fn call(
    conn: &mut Conn,
    script: &Script,
    key: &[u8],
    args: &impl Fn(&mut Cmd),
    wait: Option<WaitFor>,
    by_source: bool,
) -> redis::RedisResult<Reply> {
    let mut eval = if by_source {
        let mut c = redis::cmd("EVAL");
        c.arg(script.source);
        c
    } else {
        let mut c = redis::cmd("EVALSHA");
        c.arg(&script.sha);
        c
    };
    eval.arg(1).arg(key);
    args(&mut eval);
    let Some(w) = wait else {
        let value = conn.command(&eval).await?.extract_error()?;
        return Ok(Reply {
            value: into_array(value)?,
            replicas: None,
        });
    };
    let mut pipe = redis::pipe();
    pipe.add_command(eval);
    pipe.cmd("WAIT")
        .arg(w.replicas)
        .arg(u64::try_from(w.timeout.as_millis()).unwrap_or(u64::MAX));
    let mut values = conn.commands(&pipe, 2).await?.into_iter();
    let (Some(value), Some(acked)) = (values.next(), values.next()) else {
        return Err(unexpected("a pipeline of two commands answered fewer"));
    };
    let value = value.extract_error()?;
    let replicas = match acked.extract_error()? {
        Value::Int(n) => n,
        other => return Err(unexpected(&format!("WAIT answered {other:?}"))),
    };
    Ok(Reply {
        value: into_array(value)?,
        replicas: Some(replicas),
    })
}

fn into_array(v: Value) -> redis::RedisResult<Vec<Value>> {
    match v {
        Value::Array(items) => Ok(items),
        other => Err(unexpected(&format!("a script answered {other:?}"))),
    }
}

fn unexpected(what: &str) -> RedisError {
    RedisError::from((
        ErrorKind::UnexpectedReturnType,
        "unexpected reply",
        what.to_string(),
    ))
}

/// How a failed call is reported; the table is in the crate docs.
///
/// - Refused before anything ran (connection refused, no node for the
///   slot, `CLUSTERDOWN`, `TRYAGAIN`, `MASTERDOWN`, `LOADING`, `READONLY`,
///   `MOVED`/`ASK` left after the retries, `OOM`, `BUSY`, `MISCONF`,
///   `NOREPLICAS`): [`Error::Unreachable`], the Redis error as its source.
/// - A timeout, or a connection lost once the call may have been sent:
///   [`Error::TimedOut`]; the call may have been applied.
/// - Anything else (`WRONGTYPE` on a key under the prefix that is not this
///   backend's, a reply of an unexpected shape): [`Error::Io`] with kind
///   `Other`, the Redis error inside.
pub(crate) fn call_error(e: RedisError, started: Instant) -> Error {
    if refused(&e) {
        Error::Unreachable {
            source: Box::new(e),
        }
    } else if e.is_io_error() || e.is_timeout() {
        Error::TimedOut {
            after: started.elapsed(),
        }
    } else {
        Error::Io(std::io::Error::other(e))
    }
}

/// A failure to connect: nothing was sent, so always unreachable.
pub(crate) fn connect_error(e: RedisError) -> Error {
    match e.kind() {
        ErrorKind::InvalidClientConfig => {
            Error::InvalidOptions(format!("the Redis address is not usable: {e}"))
        }
        _ => Error::Unreachable {
            source: Box::new(e),
        },
    }
}

/// Whether the server (or the cluster client) refused the call before
/// running it, so that nothing was recorded.
fn refused(e: &RedisError) -> bool {
    if e.is_connection_refusal() {
        return true;
    }
    match e.kind() {
        ErrorKind::ClusterConnectionNotFound => true,
        ErrorKind::Server(
            ServerErrorKind::ClusterDown
            | ServerErrorKind::TryAgain
            | ServerErrorKind::MasterDown
            | ServerErrorKind::BusyLoading
            | ServerErrorKind::ReadOnly
            | ServerErrorKind::Moved
            | ServerErrorKind::Ask,
        ) => true,
        _ => matches!(
            e.code(),
            Some("OOM" | "BUSY" | "MISCONF" | "NOREPLICAS" | "NOTREADY")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    fn server(code: &str) -> RedisError {
        let reply = format!("-{code} some detail\r\n");
        redis::parse_redis_value(reply.as_bytes())
            .unwrap()
            .extract_error()
            .unwrap_err()
    }

    #[test]
    fn errors_map_to_the_documented_variants() {
        let t = Instant::now();
        for code in [
            "CLUSTERDOWN",
            "TRYAGAIN",
            "MASTERDOWN",
            "LOADING",
            "READONLY",
            "OOM",
        ] {
            match call_error(server(code), t) {
                Error::Unreachable { source } => {
                    let e = source.downcast_ref::<RedisError>().expect("a RedisError");
                    assert_eq!(e.code(), Some(code));
                }
                other => panic!("{code}: expected Unreachable, got {other:?}"),
            }
        }
        let refused = RedisError::from(io::Error::from(io::ErrorKind::ConnectionRefused));
        assert!(matches!(call_error(refused, t), Error::Unreachable { .. }));
        for kind in [io::ErrorKind::ConnectionReset, io::ErrorKind::TimedOut] {
            let e = RedisError::from(io::Error::from(kind));
            assert!(
                matches!(call_error(e, t), Error::TimedOut { .. }),
                "{kind:?}"
            );
        }
        assert!(matches!(call_error(server("WRONGTYPE"), t), Error::Io(_)));
        assert!(matches!(call_error(server("ERR x"), t), Error::Io(_)));
    }
}
