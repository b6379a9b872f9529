//! Local Redis servers for tests (feature `test-support`): a single
//! [`RedisNode`] or a [`RedisCluster`] on free 127.0.0.1 ports, each node in
//! a temporary directory of its own with `appendonly yes` and `appendfsync
//! always`, stopped by its PID when the value is dropped (also while a
//! panicking test unwinds); and the [`checker`] of a failover's
//! acknowledgements.
//!
//! ```no_run
//! use idemkv_redis::test_support::{RedisCluster, RedisNode};
//!
//! # async fn run() -> idemkv::Result<()> {
//! let node = RedisNode::start().expect("redis-server");
//! let backend = idemkv_redis::RedisBackend::connect(&node.url()).await?;
//!
//! let cluster = RedisCluster::start(3, 1).expect("a 3 + 3 cluster");
//! let backend = idemkv_redis::RedisBackend::connect_cluster(&cluster.urls()).await?;
//! # Ok(())
//! # }
//! ```
//!
//! `redis-server` and `redis-cli` come from `PATH`. When they are missing
//! and the process runs as root on a Debian-like system, the first start
//! installs them (`apt-get update`, then `apt-get install -y redis-server
//! redis-tools`), so that `cargo test` works on a fresh machine; set
//! `IDEMKV_REDIS_NO_INSTALL=1` to forbid that. Otherwise a start fails with
//! a message that says what to install: a test that needs a server fails,
//! it never passes without one.

pub mod checker;
mod cluster;
mod node;

pub use cluster::{ClusterNode, RedisCluster};
pub use node::{NodeOptions, RedisNode};

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU16, Ordering};

/// Makes sure `redis-server` and `redis-cli` are on `PATH`, installing the
/// Debian packages when they are not and this process is root (once per
/// process). The error says what to do.
pub fn ensure_installed() -> Result<(), String> {
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            if on_path("redis-server") && on_path("redis-cli") {
                return Ok(());
            }
            let how = "install them with `apt-get install -y redis-server redis-tools` \
                       (Debian, Ubuntu) or your system's Redis 7 package";
            if std::env::var_os("IDEMKV_REDIS_NO_INSTALL").is_some() {
                return Err(format!(
                    "redis-server or redis-cli is not on PATH and IDEMKV_REDIS_NO_INSTALL is set; {how}"
                ));
            }
            if !is_root() || !on_path("apt-get") {
                return Err(format!(
                    "redis-server or redis-cli is not on PATH, and this process cannot install \
                     them (it is not root, or there is no apt-get); {how}"
                ));
            }
            eprintln!("test_support: installing redis-server and redis-tools with apt-get");
            for args in [
                &["update", "-q"][..],
                &["install", "-y", "-q", "redis-server", "redis-tools"][..],
            ] {
                let status = Command::new("apt-get")
                    .args(args)
                    .env("DEBIAN_FRONTEND", "noninteractive")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .status()
                    .map_err(|e| format!("apt-get {args:?} could not run: {e}; {how}"))?;
                if !status.success() {
                    return Err(format!("apt-get {args:?} failed ({status}); {how}"));
                }
            }
            if on_path("redis-server") && on_path("redis-cli") {
                Ok(())
            } else {
                Err(format!("apt-get ran but redis-server is still not on PATH; {how}"))
            }
        })
        .clone()
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// Whether the effective user is root, from `/proc/self/status`.
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("Uid:"))?;
            // Uid: real effective saved filesystem
            line.split_whitespace().nth(2).map(|euid| euid == "0")
        })
        .unwrap_or(false)
}

/// A port on 127.0.0.1 that is free now, and whose cluster bus port (port +
/// 10000) is too. Ports are taken in turn from a range that depends on the
/// process id, so that concurrent test processes rarely try the same one; a
/// node that still fails to bind is started again on the next port.
pub fn free_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let span = 20_000u16;
    let base = 20_000u16;
    let start = (std::process::id() % 97) as u16 * 200;
    for _ in 0..span {
        let offset = (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        let port = base + offset;
        let bindable = |p: u16| TcpListener::bind(("127.0.0.1", p)).is_ok();
        if bindable(port) && bindable(port + 10_000) {
            return port;
        }
    }
    panic!("no free port pair on 127.0.0.1 in {base}..{}", base + span)
}

/// Sends `signal` (`STOP`, `CONT`, `KILL`) to one process, by its id.
pub fn signal(pid: u32, signal: &str) -> Result<(), String> {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .map_err(|e| format!("kill -{signal} {pid}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("kill -{signal} {pid} failed: {status}"))
    }
}
