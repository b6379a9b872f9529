//! One local `redis-server`, stopped by its PID on drop.

use super::{ensure_installed, free_port, signal};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// How a [`RedisNode`] is started.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    /// `--cluster-enabled yes`.
    pub cluster: bool,
    /// `--cluster-node-timeout` (ms): how long a node is unreachable before
    /// the others fail it over. Default 1000.
    pub node_timeout_ms: u64,
    /// `--appendonly`. Default true.
    pub appendonly: bool,
    /// `--appendfsync`. Default `always`.
    pub appendfsync: String,
    /// `--replicaof 127.0.0.1 <port>`: start as a replica of that node.
    pub replica_of: Option<u16>,
    /// Further `--name value` arguments.
    pub extra: Vec<String>,
}

impl Default for NodeOptions {
    fn default() -> Self {
        NodeOptions {
            cluster: false,
            node_timeout_ms: 1000,
            appendonly: true,
            appendfsync: "always".into(),
            replica_of: None,
            extra: Vec::new(),
        }
    }
}

/// A `redis-server` on 127.0.0.1 with a temporary directory of its own.
///
/// Dropping it kills the process (`SIGKILL`, by its PID) and deletes the
/// directory; a paused process is killed as well.
pub struct RedisNode {
    port: u16,
    dir: TempDir,
    options: NodeOptions,
    child: Mutex<Option<Child>>,
}

impl RedisNode {
    /// A standalone server with the default [`NodeOptions`].
    pub fn start() -> Result<RedisNode, String> {
        RedisNode::start_with(NodeOptions::default())
    }

    /// A server with `options`, on a free port, answering `PING` when this
    /// returns. Tries a few ports if one turns out to be taken.
    pub fn start_with(options: NodeOptions) -> Result<RedisNode, String> {
        ensure_installed()?;
        let mut last = String::new();
        for _ in 0..5 {
            let dir = tempfile::Builder::new()
                .prefix("idemkv-redis-")
                .tempdir()
                .map_err(|e| format!("a temporary directory for redis-server: {e}"))?;
            let node = RedisNode {
                port: free_port(),
                dir,
                options: options.clone(),
                child: Mutex::new(None),
            };
            match node.spawn() {
                Ok(()) => return Ok(node),
                Err(e) => last = e,
            }
        }
        Err(format!("redis-server did not start: {last}"))
    }

    /// Starts the process and waits until it answers.
    fn spawn(&self) -> Result<(), String> {
        let o = &self.options;
        let mut cmd = Command::new("redis-server");
        let dir = self.dir.path();
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(dir)
            .arg("--logfile")
            .arg(dir.join("redis.log"))
            .args(["--daemonize", "no", "--save", ""])
            // A replica's first sync starts at once, not after the default
            // 5 s wait for more replicas.
            .args(["--repl-diskless-sync-delay", "0"])
            .args(["--appendonly", if o.appendonly { "yes" } else { "no" }])
            .args(["--appendfsync", &o.appendfsync]);
        if o.cluster {
            cmd.args(["--cluster-enabled", "yes"])
                .args(["--cluster-config-file", "nodes.conf"])
                .args(["--cluster-node-timeout", &o.node_timeout_ms.to_string()]);
        }
        if let Some(primary) = o.replica_of {
            cmd.args(["--replicaof", "127.0.0.1", &primary.to_string()]);
        }
        cmd.args(&o.extra);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("redis-server could not be run: {e}"))?;
        *self.child.lock().unwrap() = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.exited() {
                return Err(format!(
                    "redis-server on port {} exited ({status}): {}",
                    self.port,
                    self.log_tail()
                ));
            }
            if self.ping() {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.kill();
                return Err(format!(
                    "redis-server on port {} did not answer PING within 10 s: {}",
                    self.port,
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The exit status, if the process has ended.
    fn exited(&self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.lock().unwrap();
        child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    fn ping(&self) -> bool {
        self.connection()
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
            .is_ok()
    }

    /// The port it listens on (its cluster bus is port + 10000).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Its data directory (append-only file, `nodes.conf`, `redis.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The options it was started with.
    pub fn options(&self) -> &NodeOptions {
        &self.options
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        let mut child = self.child.lock().unwrap();
        let c = child.as_mut()?;
        match c.try_wait() {
            Ok(None) => Some(c.id()),
            _ => None,
        }
    }

    /// Whether the process runs (a paused one does).
    pub fn is_running(&self) -> bool {
        self.pid().is_some()
    }

    /// A blocking connection with 2 s timeouts, for test control
    /// (`CLUSTER NODES`, `INFO`, `CONFIG`).
    pub fn connection(&self) -> redis::RedisResult<redis::Connection> {
        let client = redis::Client::open(self.url())?;
        let c = client.get_connection_with_timeout(Duration::from_secs(2))?;
        c.set_read_timeout(Some(Duration::from_secs(2)))?;
        c.set_write_timeout(Some(Duration::from_secs(2)))?;
        Ok(c)
    }

    /// Runs one command on a fresh blocking connection and returns the
    /// reply as text (`INFO`, `CLUSTER INFO`, `CLUSTER NODES`).
    pub fn text(&self, args: &[&str]) -> Result<String, String> {
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        self.connection()
            .and_then(|mut c| cmd.query::<String>(&mut c))
            .map_err(|e| format!("{args:?} on port {}: {e}", self.port))
    }

    /// `SIGKILL` (`kill -9`), by PID, and reaps the process. Nothing
    /// happens if it is not running.
    pub fn kill(&self) {
        let mut child = self.child.lock().unwrap();
        if let Some(c) = child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        *child = None;
    }

    /// `SIGSTOP`, by PID: the process stops answering (and replicating)
    /// until [`resume`](RedisNode::resume).
    pub fn pause(&self) -> Result<(), String> {
        let pid = self.pid().ok_or("the node is not running")?;
        signal(pid, "STOP")
    }

    /// `SIGCONT`, by PID.
    pub fn resume(&self) -> Result<(), String> {
        let pid = self.pid().ok_or("the node is not running")?;
        signal(pid, "CONT")
    }

    /// Starts the process again, on the same port with the same directory
    /// (so a cluster node rejoins with its `nodes.conf`, as a replica of
    /// whichever node took its slots over).
    pub fn restart(&self) -> Result<(), String> {
        self.kill();
        self.spawn()
    }

    /// The last lines of its log, for error messages.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(8)..].join("\n")
    }
}

impl Drop for RedisNode {
    fn drop(&mut self) {
        self.kill();
    }
}

impl std::fmt::Debug for RedisNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisNode")
            .field("port", &self.port)
            .field("pid", &self.pid())
            .field("dir", &self.dir.path())
            .finish()
    }
}
