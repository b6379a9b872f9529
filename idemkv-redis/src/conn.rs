//! Connections, script calls (with `WAIT`), and how Redis errors become
//! [`idemkv::Error`]s.

use crate::options::{RedisOptions, WaitFor};
use crate::scripts::Script;
use idemkv::Error;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, ErrorKind, Pipeline, RedisError, ServerErrorKind, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

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

/// The backend's connections, used in turn.
pub(crate) struct Pool {
    conns: Vec<Conn>,
    next: AtomicUsize,
    timeout: Duration,
    wait: Option<WaitFor>,
}

/// A script's reply, and what `WAIT` said after it (if it was sent).
pub(crate) struct Reply {
    pub(crate) value: Vec<Value>,
    pub(crate) replicas: Option<i64>,
}

impl Pool {
    /// Opens `options.connections` connections to `nodes`.
    pub(crate) async fn open(
        options: &RedisOptions,
        nodes: &[&str],
        cluster: bool,
    ) -> idemkv::Result<Pool> {
        let started = Instant::now();
        let connect = async {
            let mut conns = Vec::with_capacity(options.connections);
            if cluster {
                let client = ClusterClientBuilder::new(nodes.iter().copied())
                    .connection_timeout(options.connect_timeout)
                    .response_timeout(options.command_timeout)
                    .retries(options.cluster_retries)
                    .min_retry_wait(10)
                    .max_retry_wait(250)
                    .retry_wait_formula(25, 2)
                    .build()?;
                for _ in 0..options.connections {
                    conns.push(Conn::Cluster(client.get_async_connection().await?));
                }
            } else {
                let client = redis::Client::open(nodes[0])?;
                // Reconnects in the background after a failure; the failed
                // call itself is not retried (it may have been applied).
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(options.connect_timeout))
                    .set_response_timeout(Some(options.command_timeout))
                    .set_number_of_retries(1)
                    .set_min_delay(Duration::from_millis(10))
                    .set_max_delay(Duration::from_millis(250));
                for _ in 0..options.connections {
                    let c = client
                        .get_connection_manager_with_config(config.clone())
                        .await?;
                    conns.push(Conn::Single(c));
                }
            }
            Ok::<_, RedisError>(conns)
        };
        let conns = match tokio::time::timeout(options.connect_timeout, connect).await {
            Ok(Ok(conns)) => conns,
            Ok(Err(e)) => return Err(connect_error(e)),
            Err(_) => {
                return Err(Error::TimedOut {
                    after: started.elapsed(),
                });
            }
        };
        Ok(Pool {
            conns,
            next: AtomicUsize::new(0),
            timeout: options.command_timeout,
            wait: options.wait,
        })
    }

    /// A connection, in turn.
    pub(crate) fn conn(&self) -> Conn {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.conns.len();
        self.conns[i].clone()
    }

    /// Runs `script` on `key` with the arguments `args` appends: `EVALSHA`,
    /// then `EVAL` if the server does not have it yet. For a script that
    /// writes, with `WAIT` configured, `WAIT` goes in the same pipeline, so
    /// it reaches the same node on the same connection right after the
    /// script (a `WAIT` routed on its own could reach another node after a
    /// failover and confirm nothing). Bounded by the command timeout.
    pub(crate) async fn run(
        &self,
        script: &Script,
        key: &[u8],
        args: impl Fn(&mut Cmd),
    ) -> idemkv::Result<Reply> {
        let started = Instant::now();
        let wait = self.wait.filter(|_| script.writes);
        let call = async {
            let mut conn = self.conn();
            let first = call(&mut conn, script, key, &args, wait, false).await;
            match first {
                Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                    call(&mut conn, script, key, &args, wait, true).await
                }
                other => other,
            }
        };
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(e)) => Err(call_error(e, started)),
            Err(_) => Err(Error::TimedOut {
                after: started.elapsed(),
            }),
        }
    }

    /// Runs one plain command on any connection, bounded by the timeout.
    pub(crate) async fn command(&self, cmd: &Cmd) -> idemkv::Result<Value> {
        let started = Instant::now();
        let mut conn = self.conn();
        match tokio::time::timeout(self.timeout, conn.command(cmd)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(call_error(e, started)),
            Err(_) => Err(Error::TimedOut {
                after: started.elapsed(),
            }),
        }
    }
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
