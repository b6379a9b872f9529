//! The shared contract suite (`idemkv::contract`) on the embedded store,
//! in each durability mode and on a simulated disk that can fail, and on a
//! small in-memory backend built the way a remote one is (server-side
//! records and clock, `RemoteTicket`s, polling `claim_wait`), which shows
//! the suite asks nothing of a backend beyond the `Backend` trait.

use idemkv::contract::{self, Harness};
use idemkv::storage::{PendingFate, SimOp, SimStorage};
use idemkv::{Durability, ManualClock, Options, Store};
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tempfile::TempDir;

/// Where the manual clocks start.
const START_MS: u64 = 1_000_000;

/// Resolves to a spawned tokio task's output, its panic carried over.
fn spawn_on_tokio<F>(task: F) -> impl Future<Output = F::Output> + Send
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let task = tokio::spawn(task);
    async move {
        task.await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    }
}

/// Embedded stores on one manual clock, each in a directory of its own:
/// real directories, or directories of a simulated disk that can be made
/// to fail.
struct Embedded {
    clock: Arc<ManualClock>,
    durability: Durability,
    simulated: bool,
    dirs: Mutex<Vec<TempDir>>,
    sims: Mutex<Vec<(PathBuf, SimStorage)>>,
    broken: AtomicU64,
}

impl Embedded {
    fn new(durability: Durability) -> Self {
        Embedded {
            clock: Arc::new(ManualClock::new(START_MS)),
            durability,
            simulated: false,
            dirs: Mutex::default(),
            sims: Mutex::default(),
            broken: AtomicU64::new(0),
        }
    }

    fn simulated() -> Self {
        Embedded {
            simulated: true,
            ..Embedded::new(Durability::Immediate)
        }
    }
}

impl Harness for Embedded {
    type Backend = Store;

    fn backend(&self, lease: Duration, retention: Duration) -> impl Future<Output = Store> + Send {
        let options = Options::new()
            .clock(self.clock.clone())
            .durability(self.durability)
            .lease(lease)
            .retention(retention);
        let store = if self.simulated {
            let mut sims = self.sims.lock().unwrap();
            let dir = PathBuf::from(format!("/sim/store-{}", sims.len()));
            let sim = SimStorage::new();
            let store = options.storage(Arc::new(sim.clone())).open(&dir).unwrap();
            sims.push((dir, sim));
            store
        } else {
            let dir = tempfile::tempdir().unwrap();
            let store = options.open(dir.path()).unwrap();
            self.dirs.lock().unwrap().push(dir);
            store
        };
        std::future::ready(store)
    }

    fn advance(&self, by: Duration) -> impl Future<Output = ()> + Send {
        self.clock.advance(by);
        std::future::ready(())
    }

    fn spawn<F>(&self, task: F) -> impl Future<Output = F::Output> + Send
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        spawn_on_tokio(task)
    }

    fn break_writes(&self, backend: &Store) -> impl Future<Output = bool> + Send {
        let sims = self.sims.lock().unwrap();
        let sim = sims.iter().find(|(dir, _)| dir == backend.dir());
        // The next fsync fails with EIO; the store then refuses every write.
        if let Some((_, sim)) = sim {
            sim.fail(SimOp::Sync, 1, std::io::ErrorKind::Other);
            self.broken.fetch_add(1, Ordering::SeqCst);
        }
        std::future::ready(sim.is_some())
    }
}

mod immediate {
    use super::*;
    idemkv::contract_tests! {
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        harness = Embedded::new(Durability::Immediate);
    }
}

mod no_durability {
    use super::*;
    idemkv::contract_tests! {
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        harness = Embedded::new(Durability::None);
    }
}

mod simulated_disk {
    use super::*;
    idemkv::contract_tests! {
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        harness = Embedded::simulated();
    }
}

mod in_memory_model {
    use super::model::ModelHarness;
    idemkv::contract_tests! {
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        harness = ModelHarness::new();
    }
}

#[tokio::test]
async fn the_fail_closed_row_breaks_the_disk_and_loses_nothing_acknowledged() {
    let h = Embedded::simulated();
    contract::unconfirmed_writes_fail_closed(&h).await;
    assert_eq!(
        h.broken.load(Ordering::SeqCst),
        1,
        "the row was not skipped"
    );
    // A power loss keeps what was acknowledged, the claim made before the
    // failure, and loses the writes refused after it, which were never
    // fsynced. (Without it they may survive in the page cache: a refused
    // claim is in doubt, and holds the key at most until its lease ends.)
    let (dir, sim) = h.sims.lock().unwrap().pop().unwrap();
    sim.power_loss(7, PendingFate::DropAll);
    let store = Options::new()
        .clock(h.clock.clone())
        .storage(Arc::new(sim))
        .open(&dir)
        .unwrap();
    assert!(matches!(
        store.get("held").unwrap(),
        Some(idemkv::Record::InProgress { .. })
    ));
    assert_eq!(store.get("fresh").unwrap(), None);
    assert_eq!(store.get("msg").unwrap(), None);
}

#[tokio::test]
async fn rows_are_listed_once_and_run_by_name() {
    let mut names = contract::TESTS.to_vec();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), contract::TESTS.len(), "a row listed twice");
    assert!(contract::TESTS.len() >= 25);
    let h = model::ModelHarness::new();
    assert!(contract::run(&h, "release_then_reclaim").await);
    assert!(!contract::run(&h, "no_such_row").await);
}

/// Every row in one test, on one thread: the suite needs nothing of the
/// runtime beyond what the backend itself uses.
#[tokio::test(flavor = "current_thread")]
async fn run_all_passes_on_the_model_on_one_thread() {
    contract::run_all(&model::ModelHarness::new()).await;
}

#[tokio::test]
async fn the_model_fails_closed_with_unreachable() {
    let h = model::ModelHarness::new();
    let b = h.backend(contract::LONG, contract::LONG).await;
    assert!(h.break_writes(&b).await);
    let e = idemkv::Backend::claim(&b, b"k", idemkv::Fingerprint::of(b"x"))
        .await
        .unwrap_err();
    assert!(matches!(e, idemkv::Error::Unreachable { .. }), "{e:?}");
    assert!(e.to_string().contains("503"), "{e}");
    assert!(std::error::Error::source(&e).is_some());
}

#[test]
fn remote_errors_say_what_to_do() {
    use idemkv::Error;
    let unreachable = Error::Unreachable {
        source: "connection refused".into(),
    };
    let timed_out = Error::TimedOut {
        after: Duration::from_millis(250),
    };
    let not_durable = Error::NotDurable {
        acknowledged: 0,
        required: 1,
    };
    for (e, says) in [
        (&unreachable, "connection refused"),
        (&timed_out, "250 ms"),
        (&not_durable, "only 0 of 1"),
    ] {
        let text = e.to_string();
        assert!(text.contains(says), "{text}");
        assert!(text.contains("do not"), "says what not to do: {text}");
        assert!(
            text.contains("503 with Retry-After"),
            "says what to answer: {text}"
        );
    }
    assert!(timed_out.to_string().contains("may or may not"));
    assert!(unreachable.to_string().contains("nothing was recorded"));
    assert!(std::error::Error::source(&timed_out).is_none());
}

/// An in-memory backend built as a remote one would be: the records live in
/// a "server" (a map behind a lock), every time comes from the server's
/// clock, a ticket holds only the key, fingerprint, generation and times
/// (`RemoteTicket`), and `claim_wait` polls. Its harness keeps the default
/// `spawn`, so its racers run interleaved on the test's task.
mod model {
    use super::START_MS;
    use idemkv::contract::Harness;
    use idemkv::{
        Backend, BackendTicket, Claim, Clock, Completed, Error, Fingerprint, ManualClock, Record,
        RemoteTicket, Result, Seen,
    };
    use std::collections::HashMap;
    use std::future::Future;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    const MAX_KEY_LEN: usize = 1024;
    const MAX_RESPONSE_LEN: usize = 1 << 20;

    enum Rec {
        Claim {
            fp: Fingerprint,
            generation: u64,
            claimed_at_ms: u64,
            lease_end_ms: u64,
        },
        Done(Completed),
        Seen {
            seen_at_ms: u64,
            expires_at_ms: u64,
        },
    }

    struct Server {
        clock: Arc<ManualClock>,
        lease_ms: u64,
        retention_ms: u64,
        records: Mutex<HashMap<Vec<u8>, Rec>>,
        generations: AtomicU64,
        down: AtomicBool,
    }

    #[derive(Clone)]
    pub struct Model(Arc<Server>);

    fn millis(d: Duration) -> u64 {
        u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
    }

    impl Server {
        fn live(&self, rec: &Rec, now: u64) -> bool {
            now < match rec {
                Rec::Claim { lease_end_ms, .. } => lease_end_ms.saturating_add(self.retention_ms),
                Rec::Done(done) => done.expires_at_ms(),
                Rec::Seen { expires_at_ms, .. } => *expires_at_ms,
            }
        }

        /// Checks the connection and the key, and runs `op` on the key's
        /// live record (expired ones are dropped first) at the server's now.
        fn with<T>(
            &self,
            key: &[u8],
            op: impl FnOnce(&mut HashMap<Vec<u8>, Rec>, u64) -> Result<T>,
        ) -> Result<T> {
            if self.down.load(Ordering::SeqCst) {
                return Err(Error::Unreachable {
                    source: "connection refused by the model server".into(),
                });
            }
            if key.is_empty() {
                return Err(Error::EmptyKey);
            }
            if key.len() > MAX_KEY_LEN {
                return Err(Error::KeyTooLong {
                    len: key.len(),
                    max: MAX_KEY_LEN,
                });
            }
            let now = self.clock.now_ms();
            let mut records = self.records.lock().unwrap();
            if records.get(key).is_some_and(|r| !self.live(r, now)) {
                records.remove(key);
            }
            op(&mut records, now)
        }

        fn claim(&self, key: &[u8], fp: Fingerprint) -> Result<Claim<RemoteTicket>> {
            self.with(key, |records, now| {
                match records.get(key) {
                    Some(Rec::Seen { .. }) => return Ok(Claim::Mismatch),
                    Some(Rec::Done(done)) if done.fingerprint() != fp => {
                        return Ok(Claim::Mismatch);
                    }
                    Some(Rec::Claim { fp: other, .. }) if *other != fp => {
                        return Ok(Claim::Mismatch);
                    }
                    Some(Rec::Done(done)) => return Ok(Claim::Replay(done.clone())),
                    Some(Rec::Claim { lease_end_ms, .. }) if now < *lease_end_ms => {
                        return Ok(Claim::InProgress {
                            lease_expires_at_ms: *lease_end_ms,
                        });
                    }
                    _ => {}
                }
                let generation = self.generations.fetch_add(1, Ordering::SeqCst) + 1;
                let lease_end_ms = now.saturating_add(self.lease_ms);
                records.insert(
                    key.to_vec(),
                    Rec::Claim {
                        fp,
                        generation,
                        claimed_at_ms: now,
                        lease_end_ms,
                    },
                );
                let t = RemoteTicket::new(key, fp, generation, now, lease_end_ms);
                Ok(Claim::Acquired(t))
            })
        }

        /// Runs `op` if `ticket` still owns its key, else `LeaseLost`.
        fn owned<T>(
            &self,
            ticket: &RemoteTicket,
            op: impl FnOnce(&mut HashMap<Vec<u8>, Rec>, u64) -> T,
        ) -> Result<T> {
            self.with(ticket.key(), |records, now| {
                match records.get(ticket.key()) {
                    Some(Rec::Claim { generation, .. }) if *generation == ticket.generation() => {}
                    _ => return Err(Error::LeaseLost),
                }
                Ok(op(records, now))
            })
        }
    }

    impl Backend for Model {
        type Ticket = RemoteTicket;

        async fn claim(&self, key: &[u8], fp: Fingerprint) -> Result<Claim<RemoteTicket>> {
            self.0.claim(key, fp)
        }

        async fn claim_wait(
            &self,
            key: &[u8],
            fp: Fingerprint,
            timeout: Duration,
        ) -> Result<Claim<RemoteTicket>> {
            let deadline = Instant::now() + timeout;
            loop {
                let answer = self.0.claim(key, fp)?;
                let now = Instant::now();
                if !matches!(answer, Claim::InProgress { .. }) || now >= deadline {
                    return Ok(answer);
                }
                tokio::time::sleep((deadline - now).min(Duration::from_millis(2))).await;
            }
        }

        async fn complete(
            &self,
            ticket: RemoteTicket,
            response: &[u8],
            retention: Duration,
        ) -> Result<()> {
            if response.len() > MAX_RESPONSE_LEN {
                return Err(Error::ResponseTooLarge {
                    len: response.len(),
                    max: MAX_RESPONSE_LEN,
                });
            }
            self.0.owned(&ticket, |records, now| {
                let done = Completed::new(
                    response.to_vec(),
                    ticket.fingerprint(),
                    now,
                    now.saturating_add(millis(retention)),
                );
                records.insert(ticket.key().to_vec(), Rec::Done(done));
            })
        }

        async fn release(&self, ticket: RemoteTicket) -> Result<()> {
            self.0.owned(&ticket, |records, _| {
                records.remove(ticket.key());
            })
        }

        async fn extend_lease(&self, ticket: &RemoteTicket, by: Duration) -> Result<u64> {
            self.0.owned(ticket, |records, now| {
                let end = now.saturating_add(millis(by));
                if let Some(Rec::Claim { lease_end_ms, .. }) = records.get_mut(ticket.key()) {
                    *lease_end_ms = end;
                }
                ticket.set_lease_expires_at_ms(end);
                end
            })
        }

        async fn get(&self, key: &[u8]) -> Result<Option<Record>> {
            self.0.with(key, |records, _| {
                Ok(records.get(key).map(|rec| match rec {
                    Rec::Claim {
                        fp,
                        claimed_at_ms,
                        lease_end_ms,
                        ..
                    } => Record::InProgress {
                        fingerprint: *fp,
                        claimed_at_ms: *claimed_at_ms,
                        lease_expires_at_ms: *lease_end_ms,
                    },
                    Rec::Done(done) => Record::Completed(done.clone()),
                    Rec::Seen {
                        seen_at_ms,
                        expires_at_ms,
                    } => Record::Seen {
                        seen_at_ms: *seen_at_ms,
                        expires_at_ms: *expires_at_ms,
                    },
                }))
            })
        }

        async fn remove(&self, key: &[u8]) -> Result<bool> {
            self.0
                .with(key, |records, _| Ok(records.remove(key).is_some()))
        }

        async fn mark_seen(&self, key: &[u8], retain: Duration) -> Result<Seen> {
            self.0.with(key, |records, now| {
                if records.contains_key(key) {
                    return Ok(Seen::Duplicate);
                }
                let expires_at_ms = now.saturating_add(millis(retain));
                let seen = Rec::Seen {
                    seen_at_ms: now,
                    expires_at_ms,
                };
                records.insert(key.to_vec(), seen);
                Ok(Seen::First)
            })
        }

        fn max_response_len(&self) -> usize {
            MAX_RESPONSE_LEN
        }
    }

    /// Model servers on one manual clock.
    pub struct ModelHarness {
        clock: Arc<ManualClock>,
    }

    impl ModelHarness {
        pub fn new() -> Self {
            ModelHarness {
                clock: Arc::new(ManualClock::new(START_MS)),
            }
        }
    }

    impl Harness for ModelHarness {
        type Backend = Model;

        fn backend(
            &self,
            lease: Duration,
            retention: Duration,
        ) -> impl Future<Output = Model> + Send {
            std::future::ready(Model(Arc::new(Server {
                clock: self.clock.clone(),
                lease_ms: millis(lease),
                retention_ms: millis(retention),
                records: Mutex::default(),
                generations: AtomicU64::new(0),
                down: AtomicBool::new(false),
            })))
        }

        fn advance(&self, by: Duration) -> impl Future<Output = ()> + Send {
            self.clock.advance(by);
            std::future::ready(())
        }

        // `spawn` keeps its default: tasks run inline, interleaved.

        fn break_writes(&self, backend: &Model) -> impl Future<Output = bool> + Send {
            backend.0.down.store(true, Ordering::SeqCst);
            std::future::ready(true)
        }
    }
}
