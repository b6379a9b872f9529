//! The repository's `axum_server` order service (the same routes and
//! handlers, `examples/axum_server/app.rs`) with its idempotency records in
//! Redis: `POST /v1/orders` behind `idemkv_tower::IdempotencyLayer` over a
//! [`RedisBackend`](idemkv_redis::RedisBackend), so that several instances
//! of the service share the records.
//!
//! ```sh
//! redis-server --port 6390 --appendonly yes --appendfsync always &
//! cargo run -p idemkv-redis --example axum_redis -- --redis redis://127.0.0.1:6390
//! ```
//!
//! Options: `--redis URL` (a server; required, unless `--cluster`),
//! `--cluster URL[,URL...]` (nodes of a Redis Cluster), `--addr ADDR`
//! (default `127.0.0.1:3000`), `--wait SECONDS` (a retry that arrives while
//! the first request runs waits up to this long for its answer instead of
//! getting 409), `--prefix P` (the Redis key prefix, default `orders:`),
//! `--connections N` (multiplexed connections, default the backend's).
//! The backend refuses to start unless every node runs `appendfsync
//! always`. Ctrl-C stops the server gracefully: requests in flight finish.

#[path = "../../examples/axum_server/app.rs"]
mod app;

use idemkv_redis::RedisOptions;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

enum Target {
    Server(String),
    Cluster(Vec<String>),
}

struct Args {
    target: Target,
    addr: SocketAddr,
    wait: Option<Duration>,
    prefix: String,
    connections: Option<usize>,
}

fn parse_args() -> Result<Args, String> {
    let mut target = None;
    let mut addr: SocketAddr = ([127, 0, 0, 1], 3000).into();
    let mut wait = None;
    let mut prefix = "orders:".to_owned();
    let mut connections = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--redis" => target = Some(Target::Server(value()?)),
            "--cluster" => {
                let nodes = value()?.split(',').map(str::to_owned).collect();
                target = Some(Target::Cluster(nodes));
            }
            "--addr" => addr = value()?.parse().map_err(|e| format!("--addr: {e}"))?,
            "--wait" => {
                let secs: f64 = value()?.parse().map_err(|e| format!("--wait: {e}"))?;
                wait = Some(Duration::try_from_secs_f64(secs).map_err(|e| format!("--wait: {e}"))?);
            }
            "--prefix" => prefix = value()?,
            "--connections" => {
                let n = value()?
                    .parse()
                    .map_err(|e| format!("--connections: {e}"))?;
                connections = Some(n);
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let target = target.ok_or("--redis URL or --cluster URL,... is required")?;
    Ok(Args {
        target,
        addr,
        wait,
        prefix,
        connections,
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!(
                "{e}\nusage: axum_redis --redis redis://HOST:PORT [--addr 127.0.0.1:3000] \
                 [--wait SECONDS] [--prefix P] [--connections N]\n       \
                 axum_redis --cluster redis://HOST:PORT,redis://HOST:PORT,... [...]"
            );
            return ExitCode::from(2);
        }
    };
    let mut options = RedisOptions::new().prefix(&args.prefix);
    if let Some(n) = args.connections {
        options = options.connections(n);
    }
    let connected = match &args.target {
        Target::Server(url) => options.connect(url).await,
        Target::Cluster(nodes) => options.connect_cluster(nodes).await,
    };
    let backend = match connected {
        Ok(backend) => backend,
        Err(e) => {
            eprintln!("cannot use Redis: {e}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match tokio::net::TcpListener::bind(args.addr).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("cannot listen on {}: {e}", args.addr);
            return ExitCode::FAILURE;
        }
    };
    let addr = listener.local_addr().unwrap_or(args.addr);
    println!(
        "listening on http://{addr}, records in Redis under {:?}",
        args.prefix
    );
    let layer = app::idempotency(backend).wait(args.wait);
    let app = app::app_with_orders(Some(layer), app::Orders::new());
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
        println!("shutting down");
    };
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("server error: {e}");
            ExitCode::FAILURE
        }
    }
}
