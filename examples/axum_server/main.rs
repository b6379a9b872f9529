//! An order service whose `POST /v1/orders` is made idempotent by idemkv.
//!
//! ```sh
//! cargo run --example axum_server -- --dir /tmp/orders-idem --addr 127.0.0.1:3000
//! ```
//!
//! Options: `--dir DIR` (the idemkv store, required), `--addr ADDR`
//! (default `127.0.0.1:3000`), `--wait SECONDS` (a retry that arrives while
//! the first request runs waits up to this long for its answer instead of
//! getting 409), `--no-idempotency` (serve without the layer and without a
//! store: the benchmark's baseline), `--no-fsync` (the store with
//! `Durability::None`: for measuring what fsync costs; a crash can lose
//! acknowledged records). Ctrl-C stops the server gracefully:
//! requests in flight finish and the store is closed with everything
//! acknowledged on disk.
//!
//! The routes are in `app.rs`; the idempotency is `idemkv_tower`'s layer.

mod app;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

struct Args {
    /// `None` with `--no-idempotency`.
    dir: Option<PathBuf>,
    addr: SocketAddr,
    wait: Option<Duration>,
    no_fsync: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut dir = None;
    let mut addr: SocketAddr = ([127, 0, 0, 1], 3000).into();
    let mut wait = None;
    let mut idempotency = true;
    let mut no_fsync = false;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--dir" => dir = Some(PathBuf::from(value()?)),
            "--addr" => addr = value()?.parse().map_err(|e| format!("--addr: {e}"))?,
            "--wait" => {
                let secs: f64 = value()?.parse().map_err(|e| format!("--wait: {e}"))?;
                wait = Some(Duration::try_from_secs_f64(secs).map_err(|e| format!("--wait: {e}"))?);
            }
            "--no-idempotency" => idempotency = false,
            "--no-fsync" => no_fsync = true,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let dir = match (idempotency, dir) {
        (true, None) => return Err("--dir DIR is required".to_owned()),
        (true, dir) => dir,
        (false, _) => None,
    };
    Ok(Args {
        dir,
        addr,
        wait,
        no_fsync,
    })
}

fn durability(args: &Args) -> idemkv::Options {
    let options = idemkv::Options::new();
    if args.no_fsync {
        options.durability(idemkv::Durability::None)
    } else {
        options
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!(
                "{e}\nusage: axum_server --dir DIR [--addr 127.0.0.1:3000] [--wait SECONDS]\n       \
                 axum_server --no-idempotency [--addr 127.0.0.1:3000]\n       \
                 (--no-fsync: the store without fsync, for measurements)"
            );
            return ExitCode::from(2);
        }
    };
    let idempotency = match &args.dir {
        Some(dir) => match durability(&args).open(dir) {
            Ok(store) => Some(app::idempotency(store).wait(args.wait)),
            Err(e) => {
                eprintln!("cannot open the store in {}: {e}", dir.display());
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    let listener = match tokio::net::TcpListener::bind(args.addr).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("cannot listen on {}: {e}", args.addr);
            return ExitCode::FAILURE;
        }
    };
    let addr = listener.local_addr().unwrap_or(args.addr);
    match &args.dir {
        Some(dir) => println!("listening on http://{addr}, store in {}", dir.display()),
        None => println!("listening on http://{addr}, without idempotency"),
    }
    println!(
        "try: curl -i -X POST http://{addr}/v1/orders -H 'Idempotency-Key: k-1' \
         -H 'X-Tenant: acme' -d '{{\"item\": \"book\"}}'"
    );
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
        println!("shutting down");
    };
    // The router, and with it the store, is dropped when serving ends:
    // the store then syncs and releases its directory lock.
    let app = app::app_with_orders(idempotency, app::Orders::new());
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
