//! A payments service that never charges a card twice.
//!
//! Run it with `cargo run --release --example demo` (optionally followed by
//! the number of logical requests, default 64000, or with
//! `IDEMKV_DEMO_REQUESTS` set).
//!
//! Many client threads send "create charge" requests to one in-process
//! server. Every logical request carries an idempotency key that the client
//! generated once, and the networks are flaky:
//!
//! - a response is lost now and then, so the client retries the same request
//!   (same key, same body), sometimes several times;
//! - some users double-click: two copies of a request race from two threads;
//! - a few clients are buggy and reuse an earlier key for a new request body;
//! - the server's upstream sometimes fails before charging (the handler
//!   releases the key and answers 503), and a handler occasionally crashes
//!   right after claiming (its key is taken over once the lease ends).
//!
//! The server claims the key before charging, so each logical request is
//! charged once whatever the network does. At the end the demo checks that
//! no key was charged twice, then reopens the store from disk and checks
//! that every completed key replays its exact response bytes. It exits with
//! status 1 if either check fails.

use idemkv::{Claim, Fingerprint, Options, Store};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::thread;
use std::time::{Duration, Instant};

/// Client threads sending requests at the same time.
const CLIENTS: usize = 32;
/// Logical requests sent when neither the argument nor the variable is given.
const DEFAULT_REQUESTS: usize = 64_000;
/// Clients `0..BUGGY_CLIENTS` sometimes reuse a key for a different body.
const BUGGY_CLIENTS: usize = 3;

/// Chance that a response is lost on its way back to the client.
const P_RESPONSE_LOST: f64 = 0.15;
/// Chance that a user double-clicks: two copies race from two threads.
const P_DOUBLE_CLICK: f64 = 0.05;
/// Chance that a buggy client reuses its previous key for a new request.
const P_KEY_REUSE: f64 = 0.10;
/// Chance that the upstream fails before charging; the key is released.
const P_RETRYABLE_FAILURE: f64 = 0.02;
/// Chance that the handler crashes after claiming, before charging.
const P_CRASH: f64 = 0.0005;
/// Lease of an in-progress claim. The default is 60 s; the demo uses a short
/// one so that keys of crashed handlers are taken over within its run time.
const LEASE: Duration = Duration::from_millis(200);

fn main() {
    let requests = requested_total();
    match run(requests) {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}

/// The number of logical requests: first CLI argument, else
/// `IDEMKV_DEMO_REQUESTS`, else the default.
fn requested_total() -> usize {
    let arg = std::env::args().nth(1);
    let var = std::env::var("IDEMKV_DEMO_REQUESTS").ok();
    match arg.or(var) {
        None => DEFAULT_REQUESTS,
        Some(s) => match s.trim().replace('_', "").parse::<usize>() {
            Ok(n) if n >= CLIENTS => n,
            _ => {
                eprintln!("expected a number of requests >= {CLIENTS}, got {s:?}");
                std::process::exit(2);
            }
        },
    }
}

// ---------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------

/// One "create charge" request as it travels over the wire.
#[derive(Clone)]
struct Request {
    /// The `Idempotency-Key` header.
    key: String,
    /// The order the body asks to charge (the server reads it from the body).
    order: usize,
    /// The request body.
    body: String,
}

/// What the server answers.
enum Response {
    /// 201: the charge was made now.
    Created(Vec<u8>),
    /// 200 with `Idempotent-Replayed: true`: the stored response of an
    /// earlier attempt.
    Replayed(Vec<u8>),
    /// 409: an earlier attempt with this key is still running.
    Conflict,
    /// 422: the key was used before with a different body.
    Unprocessable,
    /// 503: a retryable failure before anything was charged.
    Unavailable,
    /// The handler crashed: the client sees a dropped connection.
    Crashed,
}

/// The payments server: the idempotency store plus the side effect, a
/// ledger counting how often each order was charged.
struct Server {
    store: Store,
    charges: Vec<AtomicU32>,
    handled: AtomicU64,
    side_effects: AtomicU64,
    replays: AtomicU64,
    conflicts: AtomicU64,
    mismatches: AtomicU64,
    releases: AtomicU64,
    crashes: AtomicU64,
}

impl Server {
    fn new(store: Store, orders: usize) -> Server {
        Server {
            store,
            charges: (0..orders).map(|_| AtomicU32::new(0)).collect(),
            handled: AtomicU64::new(0),
            side_effects: AtomicU64::new(0),
            replays: AtomicU64::new(0),
            conflicts: AtomicU64::new(0),
            mismatches: AtomicU64::new(0),
            releases: AtomicU64::new(0),
            crashes: AtomicU64::new(0),
        }
    }

    /// The request handler: claim, then charge and complete, or answer from
    /// the store. `rng` stands in for the upstream's and the host's moods.
    fn handle(&self, req: &Request, rng: &mut Rng) -> idemkv::Result<Response> {
        self.handled.fetch_add(1, Relaxed);
        let fingerprint = Fingerprint::of_parts(&[b"POST /v1/charges", req.body.as_bytes()]);
        match self.store.claim(&req.key, fingerprint)? {
            Claim::Acquired(ticket) => {
                if rng.chance(P_CRASH) {
                    // The process dies before charging: nobody completes or
                    // releases the claim. After the lease, a retry takes over.
                    drop(ticket);
                    self.crashes.fetch_add(1, Relaxed);
                    return Ok(Response::Crashed);
                }
                if rng.chance(P_RETRYABLE_FAILURE) {
                    // The card network timed out before charging: give the
                    // key back so that the client's retry can run it.
                    self.store.release(ticket)?;
                    self.releases.fetch_add(1, Relaxed);
                    return Ok(Response::Unavailable);
                }
                // The side effect. The claim is already on disk.
                self.charges[req.order].fetch_add(1, Relaxed);
                self.side_effects.fetch_add(1, Relaxed);
                let response = format!(
                    r#"{{"id":"ch_{:016x}","object":"charge","order":{},"status":"succeeded"}}"#,
                    ticket.generation(),
                    req.order
                )
                .into_bytes();
                self.store.complete(ticket, &response)?;
                Ok(Response::Created(response))
            }
            Claim::Replay(done) => {
                self.replays.fetch_add(1, Relaxed);
                Ok(Response::Replayed(done.into_response()))
            }
            Claim::InProgress { .. } => {
                self.conflicts.fetch_add(1, Relaxed);
                Ok(Response::Conflict)
            }
            Claim::Mismatch => {
                self.mismatches.fetch_add(1, Relaxed);
                Ok(Response::Unprocessable)
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The clients
// ---------------------------------------------------------------------------

/// How one logical request ended, as its client saw it.
enum Outcome {
    /// Charged; every copy and retry got these exact bytes.
    Charged(Vec<u8>),
    /// Refused with 422 (a buggy key reuse).
    Refused,
    /// Two copies of one request got different answers. Must never happen.
    Diverged,
}

/// A client's record of one completed key, checked again after reopening.
struct Receipt {
    order: usize,
    key: String,
    body: String,
    response: Vec<u8>,
}

/// What one client saw over its whole run.
#[derive(Default)]
struct ClientLog {
    /// One per charged order.
    receipts: Vec<Receipt>,
    /// Orders refused with 422.
    refused: usize,
    /// Orders whose copies got different answers. Must stay 0.
    diverged: usize,
}

/// Sends `req` until it gets a final answer, over a network that loses
/// responses.
fn send_until_answered(server: &Server, req: &Request, rng: &mut Rng) -> idemkv::Result<Outcome> {
    let mut backoff = Duration::from_micros(100);
    loop {
        let response = server.handle(req, rng)?;
        if rng.chance(P_RESPONSE_LOST) {
            continue; // Timed out waiting; retry with the same key and body.
        }
        match response {
            Response::Created(bytes) | Response::Replayed(bytes) => {
                return Ok(Outcome::Charged(bytes));
            }
            Response::Unprocessable => return Ok(Outcome::Refused),
            Response::Unavailable | Response::Crashed => continue,
            Response::Conflict => {
                // Another copy is running: wait a little, then ask again.
                thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_millis(20));
            }
        }
    }
}

/// One client thread: sends its logical requests one after another.
fn client(
    server: &Server,
    id: usize,
    first_order: usize,
    count: usize,
) -> idemkv::Result<ClientLog> {
    let mut rng = Rng::new(0x1de0_0000 + id as u64);
    let mut log = ClientLog::default();
    let mut last_key: Option<String> = None;
    for order in first_order..first_order + count {
        let body = format!(
            r#"{{"order":{order},"amount":{},"currency":"usd"}}"#,
            100 + order % 9_900
        );
        let fresh_key = format!("c{id:02}:POST/v1/charges:{:032x}", rng.next_u128());
        let reuse = id < BUGGY_CLIENTS && rng.chance(P_KEY_REUSE);
        let key = match (&last_key, reuse) {
            (Some(old), true) => old.clone(), // the bug: an old key, a new body
            _ => fresh_key,
        };
        let req = Request { key, order, body };

        let outcome = if !reuse && rng.chance(P_DOUBLE_CLICK) {
            double_click(server, &req, &mut rng)?
        } else {
            send_until_answered(server, &req, &mut rng)?
        };
        match outcome {
            Outcome::Charged(response) => {
                last_key = Some(req.key.clone());
                log.receipts.push(Receipt {
                    order: req.order,
                    key: req.key,
                    body: req.body,
                    response,
                });
            }
            Outcome::Refused => log.refused += 1,
            Outcome::Diverged => {
                eprintln!("key {} got two different answers", req.key);
                log.diverged += 1;
            }
        }
    }
    Ok(log)
}

/// Two copies of one request race from two threads; both must end with the
/// same answer.
fn double_click(server: &Server, req: &Request, rng: &mut Rng) -> idemkv::Result<Outcome> {
    let mut other_rng = Rng::new(rng.next_u64());
    let (first, second) = thread::scope(|s| {
        let second = s.spawn(|| send_until_answered(server, req, &mut other_rng));
        let first = send_until_answered(server, req, rng);
        (first, second.join().expect("client thread panicked"))
    });
    Ok(match (first?, second?) {
        (Outcome::Charged(a), Outcome::Charged(b)) if a == b => Outcome::Charged(a),
        _ => Outcome::Diverged,
    })
}

// ---------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------

fn run(requests: usize) -> idemkv::Result<bool> {
    let dir = tempfile::tempdir()?;
    let store = Options::new().lease(LEASE).open(dir.path())?; // Immediate durability
    let server = Server::new(store, requests);
    let per_client = requests / CLIENTS;
    let extra = requests % CLIENTS;

    println!("idemkv demo: {requests} logical charge requests from {CLIENTS} clients");
    println!("store: {} (durability Immediate)", dir.path().display());

    let started = Instant::now();
    let seen: Mutex<ClientLog> = Mutex::default();
    let failure: Mutex<Option<idemkv::Error>> = Mutex::new(None);
    thread::scope(|s| {
        for id in 0..CLIENTS {
            let first_order = id * per_client + id.min(extra);
            let count = per_client + usize::from(id < extra);
            let (server, seen, failure) = (&server, &seen, &failure);
            s.spawn(move || match client(server, id, first_order, count) {
                Ok(mine) => {
                    let mut all = seen.lock().unwrap();
                    all.receipts.extend(mine.receipts);
                    all.refused += mine.refused;
                    all.diverged += mine.diverged;
                }
                Err(e) => *failure.lock().unwrap() = Some(e),
            });
        }
    });
    let elapsed = started.elapsed();
    if let Some(e) = failure.into_inner().unwrap() {
        return Err(e);
    }
    let ClientLog {
        receipts,
        refused,
        diverged,
    } = seen.into_inner().unwrap();

    // The key point: every order was charged at most once, and every order a
    // client saw completed was charged exactly once.
    let charges = |order: usize| server.charges[order].load(Relaxed);
    let charged_twice = (0..requests).filter(|&o| charges(o) > 1).count();
    let completed = receipts.len();
    let charged_once = receipts.iter().filter(|r| charges(r.order) == 1).count();

    let stats = server.store.stats();
    let handled = server.handled.load(Relaxed);
    let secs = elapsed.as_secs_f64();
    let durable_writes = stats.acquired + stats.completes + stats.releases;

    let n = |counter: &AtomicU64| counter.load(Relaxed);

    section("traffic");
    row("logical requests", requests);
    row("requests sent (with retries)", handled);
    row("side effects executed (charges)", n(&server.side_effects));
    row("duplicates prevented (replays)", n(&server.replays));
    row("conflicts (in progress, 409)", n(&server.conflicts));
    row("mismatches refused (422)", n(&server.mismatches));
    row("releases (retryable failure, 503)", n(&server.releases));
    row("handler crashes after claiming", n(&server.crashes));
    row("takeovers after the lease", stats.takeovers);
    println!();
    row("orders completed", completed);
    row("orders refused (reused key)", refused);
    row("completed orders charged exactly once", charged_once);
    row("answers that diverged", diverged);
    row("keys charged twice", charged_twice);

    section("performance");
    row_f("elapsed (s)", secs, 2);
    row_f("requests/s", handled as f64 / secs, 0);
    row_f("claim+complete pairs/s", stats.completes as f64 / secs, 0);
    row("fsyncs", stats.fsyncs);
    let fsyncs = stats.fsyncs.max(1) as f64;
    row_f("requests per fsync", handled as f64 / fsyncs, 1);
    row_f(
        "durable writes per fsync",
        durable_writes as f64 / fsyncs,
        1,
    );
    row("bytes on disk", stats.bytes_on_disk);

    section("what the store counted (store.stats())");
    row("claims", stats.claims);
    row("  acquired (work ran)", stats.acquired);
    row("  replays (stored answer returned)", stats.replays);
    row("  in progress (409, or waited)", stats.in_progress);
    row("  mismatches (422)", stats.mismatches);
    row("  takeovers after a lease", stats.takeovers);
    row(
        "completes / releases",
        format!("{} / {}", stats.completes, stats.releases),
    );
    row("live keys", stats.live_keys);
    row_f(
        "index RAM per live key (bytes)",
        stats.index_memory_bytes as f64 / stats.live_keys.max(1) as f64,
        1,
    );
    row("segments", stats.segments);
    row("poisoned", stats.poisoned);

    // Restart: drop the store, reopen the directory, and replay every key.
    drop(server);
    let opened = Instant::now();
    let store = Store::open(dir.path())?;
    let open_time = opened.elapsed();
    let mut replayed_exactly = 0usize;
    let mut differ = 0usize;
    for r in &receipts {
        let fingerprint = Fingerprint::of_parts(&[b"POST /v1/charges", r.body.as_bytes()]);
        match store.claim(&r.key, fingerprint)? {
            Claim::Replay(done) if done.response() == r.response => replayed_exactly += 1,
            other => {
                differ += 1;
                if differ <= 5 {
                    eprintln!("after reopen, {} answered {other:?}", r.key);
                }
            }
        }
    }
    let reopened = store.stats();

    section("after reopening the directory");
    row_f("open time (ms)", open_time.as_secs_f64() * 1e3, 1);
    row("records recovered", reopened.recovered_records);
    row("live keys", reopened.live_keys);
    row("completed keys replayed byte-for-byte", replayed_exactly);
    row("replays that differ", differ);

    let ok = charged_twice == 0
        && diverged == 0
        && differ == 0
        && charged_once == completed
        && replayed_exactly == completed;
    println!();
    if ok {
        println!("OK: no key was charged twice, and every completed key replays its exact bytes.");
    } else {
        println!("FAILED: see the figures above.");
    }
    Ok(ok)
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn section(title: &str) {
    println!("\n== {title} ==");
}

/// A row of the report: numbers with their digits grouped, other values
/// as they display.
fn row(label: &str, value: impl std::fmt::Display) {
    let text = value.to_string();
    let shown = if text.bytes().all(|b| b.is_ascii_digit()) {
        group_digits(&text)
    } else {
        text
    };
    println!("  {label:<40}{shown:>14}");
}

fn row_f(label: &str, value: f64, decimals: usize) {
    let s = format!("{value:.decimals$}");
    let (int, frac) = s.split_at(s.find('.').unwrap_or(s.len()));
    println!(
        "  {label:<40}{:>14}",
        format!("{}{frac}", group_digits(int))
    );
}

/// `1234567` -> `1,234,567`.
fn group_digits(digits: &str) -> String {
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// SplitMix64: a small, seeded random source, so each run is comparable.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn next_u128(&mut self) -> u128 {
        (u128::from(self.next_u64()) << 64) | u128::from(self.next_u64())
    }

    /// True with probability `p`.
    fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}
