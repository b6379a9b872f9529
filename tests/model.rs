//! Model test: random sequences of operations (claims, completes, releases,
//! lease extensions, removes, seen marks, reads, clock moves and reopens)
//! run against the store and against a small reference model of the
//! contract; every answer, every counter and, at the end, every key's record
//! must agree.
//!
//! A ticket whose claim has expired entirely (lease plus retention passed,
//! nobody took the key over) no longer owns the key: like any stale ticket,
//! its operations answer `LeaseLost`.

mod common;

use common::OpCounts;
use idemkv::{
    Claim, Completed, Durability, Error, Fingerprint, ManualClock, Options, Record, Seen, Store,
    Ticket,
};
use proptest::collection::vec;
use proptest::prelude::*;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

const START_MS: u64 = 1_700_000_000_000;
const LEASE_MS: u64 = 1_000;
const RETENTION_MS: u64 = 5_000;
const MAX_RESPONSE: usize = 256;

/// The keys operations draw from: a few, so they collide often, of varied
/// lengths; the two long ones fill 4 KiB segments fast, so the log rolls
/// over within a case.
static KEYS: LazyLock<Vec<String>> = LazyLock::new(|| {
    vec![
        "a".to_string(),
        "bb".to_string(),
        "tenant-7:POST /charges:6f1c".to_string(),
        "key with spaces and \u{e9}".to_string(),
        format!("long-{}", "x".repeat(600)),
        format!("longest-{}", "y".repeat(1000)),
    ]
});

fn key(i: usize) -> &'static str {
    &KEYS[i]
}

fn fingerprint(i: usize) -> Fingerprint {
    [Fingerprint::of(b"request A"), Fingerprint::of(b"request B")][i]
}

#[derive(Debug, Clone)]
enum Op {
    Claim {
        key: usize,
        fp: usize,
    },
    Complete {
        ticket: usize,
        response: Vec<u8>,
        retention_ms: Option<u64>,
    },
    Release {
        ticket: usize,
    },
    Extend {
        ticket: usize,
        by_ms: u64,
    },
    DropTicket {
        ticket: usize,
    },
    Remove {
        key: usize,
    },
    MarkSeen {
        key: usize,
        retain_ms: u64,
    },
    Get {
        key: usize,
    },
    Advance {
        ms: u64,
    },
    Reopen,
    Sync,
}

fn response() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => vec(any::<u8>(), 0..16),
        4 => vec(any::<u8>(), 180..=MAX_RESPONSE),
        1 => vec(any::<u8>(), MAX_RESPONSE + 1..=300),
    ]
}

fn advance_ms() -> impl Strategy<Value = u64> {
    prop_oneof![
        0..=1_200u64,
        900..=1_100u64,
        Just(LEASE_MS),
        Just(RETENTION_MS),
        Just(LEASE_MS + RETENTION_MS),
        4_000..=7_000u64,
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0..KEYS.len();
    let ticket = 0..8usize;
    prop_oneof![
        30 => (key.clone(), 0..2usize).prop_map(|(key, fp)| Op::Claim { key, fp }),
        12 => (ticket.clone(), response(), proptest::option::weighted(0.3, 0..8_000u64))
            .prop_map(|(ticket, response, retention_ms)| Op::Complete {
                ticket,
                response,
                retention_ms,
            }),
        5 => ticket.clone().prop_map(|ticket| Op::Release { ticket }),
        6 => (ticket.clone(), 0..3_000u64).prop_map(|(ticket, by_ms)| Op::Extend { ticket, by_ms }),
        2 => ticket.prop_map(|ticket| Op::DropTicket { ticket }),
        5 => key.clone().prop_map(|key| Op::Remove { key }),
        6 => (key.clone(), 1..6_000u64).prop_map(|(key, retain_ms)| Op::MarkSeen { key, retain_ms }),
        8 => key.prop_map(|key| Op::Get { key }),
        15 => advance_ms().prop_map(|ms| Op::Advance { ms }),
        5 => Just(Op::Reopen),
        1 => Just(Op::Sync),
    ]
}

/// What the contract says a key holds.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    InProgress {
        fp: Fingerprint,
        generation: u64,
        claimed_at_ms: u64,
        lease_expires_at_ms: u64,
    },
    Completed {
        fp: Fingerprint,
        response: Vec<u8>,
        completed_at_ms: u64,
        expires_at_ms: u64,
    },
    Seen {
        seen_at_ms: u64,
        expires_at_ms: u64,
    },
}

impl State {
    /// Present at `now`: an in-progress claim stays present (for takeover)
    /// until its lease plus the retention has passed.
    fn is_live(&self, now: u64) -> bool {
        match *self {
            State::InProgress {
                lease_expires_at_ms,
                ..
            } => now < lease_expires_at_ms + RETENTION_MS,
            State::Completed { expires_at_ms, .. } | State::Seen { expires_at_ms, .. } => {
                now < expires_at_ms
            }
        }
    }
}

fn check_completed(c: &Completed, want: &State, ctx: &str) {
    let State::Completed {
        fp,
        response,
        completed_at_ms,
        expires_at_ms,
    } = want
    else {
        panic!("{ctx}: the model holds {want:?}, the store a completed record {c:?}")
    };
    assert_eq!(c.response(), &response[..], "{ctx}: response bytes");
    assert_eq!(c.fingerprint(), *fp, "{ctx}: fingerprint");
    assert_eq!(
        c.completed_at_ms(),
        *completed_at_ms,
        "{ctx}: completed_at_ms"
    );
    assert_eq!(c.expires_at_ms(), *expires_at_ms, "{ctx}: expires_at_ms");
}

fn check_record(got: Option<Record>, want: Option<&State>, ctx: &str) {
    match (got, want) {
        (None, None) => {}
        (Some(Record::Completed(c)), Some(want)) => check_completed(&c, want, ctx),
        (
            Some(Record::InProgress {
                fingerprint,
                claimed_at_ms,
                lease_expires_at_ms,
            }),
            Some(State::InProgress {
                fp,
                claimed_at_ms: c,
                lease_expires_at_ms: l,
                ..
            }),
        ) => assert_eq!(
            (fingerprint, claimed_at_ms, lease_expires_at_ms),
            (*fp, *c, *l),
            "{ctx}: in-progress record"
        ),
        (
            Some(Record::Seen {
                seen_at_ms,
                expires_at_ms,
            }),
            Some(State::Seen {
                seen_at_ms: s,
                expires_at_ms: e,
            }),
        ) => assert_eq!((seen_at_ms, expires_at_ms), (*s, *e), "{ctx}: seen record"),
        (got, want) => panic!("{ctx}: store has {got:?}, model has {want:?}"),
    }
}

struct Harness {
    dir: tempfile::TempDir,
    clock: Arc<ManualClock>,
    durability: Durability,
    store: Option<Store>,
    tickets: Vec<Ticket>,
    model: HashMap<&'static str, State>,
    /// The operation counters of `Stats`, as the model predicts them.
    counts: OpCounts,
    highest_generation: u64,
    log: Vec<String>,
}

fn open(dir: &std::path::Path, clock: &Arc<ManualClock>, durability: Durability) -> Store {
    Options::new()
        .clock(clock.clone())
        .durability(durability)
        .lease(Duration::from_millis(LEASE_MS))
        .retention(Duration::from_millis(RETENTION_MS))
        .segment_size(4096)
        .max_response_len(MAX_RESPONSE)
        .open(dir)
        .unwrap()
}

/// How a held ticket stands in the model.
enum Standing {
    /// Its claim is the key's current one and present: the operation succeeds.
    Owner,
    /// Taken over, completed, released, removed, replaced or expired: `LeaseLost`.
    Stale,
}

impl Harness {
    fn new(durability: Durability) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(START_MS));
        let store = open(dir.path(), &clock, durability);
        Harness {
            dir,
            clock,
            durability,
            store: Some(store),
            tickets: Vec::new(),
            model: HashMap::new(),
            counts: OpCounts::default(),
            highest_generation: 0,
            log: Vec::new(),
        }
    }

    fn store(&self) -> &Store {
        self.store.as_ref().unwrap()
    }

    fn now(&self) -> u64 {
        use idemkv::Clock;
        self.clock.now_ms()
    }

    fn key_of(ticket: &Ticket) -> &'static str {
        KEYS.iter()
            .map(String::as_str)
            .find(|k| k.as_bytes() == ticket.key())
            .expect("tickets are for model keys")
    }

    fn live(&self, key: &str) -> Option<&State> {
        let now = self.now();
        self.model.get(key).filter(|s| s.is_live(now))
    }

    fn standing(&self, ticket: &Ticket) -> Standing {
        match self.model.get(Self::key_of(ticket)) {
            Some(s @ State::InProgress { generation, .. })
                if *generation == ticket.generation() =>
            {
                if s.is_live(self.now()) {
                    Standing::Owner
                } else {
                    Standing::Stale
                }
            }
            _ => Standing::Stale,
        }
    }

    fn ctx(&self) -> String {
        format!(
            "after ops:\n  {}\n({:?}, now = START + {})",
            self.log.join("\n  "),
            self.durability,
            self.now() - START_MS
        )
    }

    fn live_count(&self) -> u64 {
        let now = self.now();
        self.model.values().filter(|s| s.is_live(now)).count() as u64
    }

    fn check_counts(&mut self) {
        self.counts.live_keys = self.live_count();
        let got = OpCounts::of(&self.store().stats());
        assert_eq!(got, self.counts, "counters {}", self.ctx());
    }

    fn apply(&mut self, op: Op) {
        self.log.push(format!("{op:?}"));
        let now = self.now();
        match op {
            Op::Claim { key: k, fp } => self.claim(key(k), fingerprint(fp)),
            Op::Complete {
                ticket,
                response,
                retention_ms,
            } => {
                let Some(i) = self.pick(ticket) else { return };
                if response.len() > MAX_RESPONSE {
                    let t = self.tickets.swap_remove(i);
                    let r = self.complete(t, &response, retention_ms);
                    assert!(
                        matches!(r, Err(Error::ResponseTooLarge { len, max: MAX_RESPONSE }) if len == response.len()),
                        "oversized complete: {r:?} {}",
                        self.ctx()
                    );
                    return;
                }
                match self.standing(&self.tickets[i]) {
                    Standing::Owner => {
                        let t = self.tickets.swap_remove(i);
                        let (key, fp) = (Self::key_of(&t), t.fingerprint());
                        let r = self.complete(t, &response, retention_ms);
                        assert!(r.is_ok(), "complete: {r:?} {}", self.ctx());
                        self.counts.completes += 1;
                        let expires_at_ms = now + retention_ms.unwrap_or(RETENTION_MS);
                        self.model.insert(
                            key,
                            State::Completed {
                                fp,
                                response,
                                completed_at_ms: now,
                                expires_at_ms,
                            },
                        );
                    }
                    Standing::Stale => {
                        let t = self.tickets.swap_remove(i);
                        let r = self.complete(t, &response, retention_ms);
                        assert!(
                            matches!(r, Err(Error::LeaseLost)),
                            "stale complete: {r:?} {}",
                            self.ctx()
                        );
                        self.counts.lease_lost += 1;
                    }
                }
            }
            Op::Release { ticket } => {
                let Some(i) = self.pick(ticket) else { return };
                match self.standing(&self.tickets[i]) {
                    Standing::Owner => {
                        let t = self.tickets.swap_remove(i);
                        let key = Self::key_of(&t);
                        let r = self.store().release(t);
                        assert!(r.is_ok(), "release: {r:?} {}", self.ctx());
                        self.counts.releases += 1;
                        self.model.remove(key);
                    }
                    Standing::Stale => {
                        let t = self.tickets.swap_remove(i);
                        let r = self.store().release(t);
                        assert!(
                            matches!(r, Err(Error::LeaseLost)),
                            "stale release: {r:?} {}",
                            self.ctx()
                        );
                        self.counts.lease_lost += 1;
                    }
                }
            }
            Op::Extend { ticket, by_ms } => {
                let Some(i) = self.pick(ticket) else { return };
                match self.standing(&self.tickets[i]) {
                    Standing::Owner => {
                        let t = &self.tickets[i];
                        let r = self.store().extend_lease(t, Duration::from_millis(by_ms));
                        assert_eq!(r.ok(), Some(now + by_ms), "extend_lease {}", self.ctx());
                        assert_eq!(t.lease_expires_at_ms(), now + by_ms);
                        let key = Self::key_of(t);
                        let Some(State::InProgress {
                            lease_expires_at_ms,
                            ..
                        }) = self.model.get_mut(key)
                        else {
                            unreachable!("an owner's key is in progress")
                        };
                        *lease_expires_at_ms = now + by_ms;
                        self.counts.lease_extensions += 1;
                    }
                    Standing::Stale => {
                        let t = &self.tickets[i];
                        let before = t.lease_expires_at_ms();
                        let r = self.store().extend_lease(t, Duration::from_millis(by_ms));
                        assert!(
                            matches!(r, Err(Error::LeaseLost)),
                            "stale extend_lease: {r:?} {}",
                            self.ctx()
                        );
                        assert_eq!(t.lease_expires_at_ms(), before);
                        self.counts.lease_lost += 1;
                    }
                }
            }
            Op::DropTicket { ticket } => {
                if let Some(i) = self.pick(ticket) {
                    drop(self.tickets.swap_remove(i));
                }
            }
            Op::Remove { key: k } => {
                let key = key(k);
                let was_live = self.live(key).is_some();
                let r = self.store().remove(key);
                assert_eq!(r.ok(), Some(was_live), "remove({key}) {}", self.ctx());
                if was_live {
                    self.counts.removes += 1;
                }
                self.model.remove(key);
            }
            Op::MarkSeen { key: k, retain_ms } => {
                let key = key(k);
                let was_live = self.live(key).is_some();
                let r = self
                    .store()
                    .mark_seen(key, Duration::from_millis(retain_ms));
                if was_live {
                    assert_eq!(r.ok(), Some(Seen::Duplicate), "mark_seen {}", self.ctx());
                    self.counts.seen_duplicates += 1;
                } else {
                    assert_eq!(r.ok(), Some(Seen::First), "mark_seen {}", self.ctx());
                    self.counts.seen_first += 1;
                    self.model.insert(
                        key,
                        State::Seen {
                            seen_at_ms: now,
                            expires_at_ms: now + retain_ms,
                        },
                    );
                }
            }
            Op::Get { key: k } => {
                let key = key(k);
                let got = self.store().get(key).unwrap();
                check_record(got, self.live(key), &format!("get({key}) {}", self.ctx()));
            }
            Op::Advance { ms } => self.clock.advance(Duration::from_millis(ms)),
            Op::Reopen => self.reopen(),
            Op::Sync => self.store().sync().unwrap(),
        }
        self.check_counts();
    }

    fn pick(&self, slot: usize) -> Option<usize> {
        (!self.tickets.is_empty()).then(|| slot % self.tickets.len())
    }

    fn complete(
        &self,
        t: Ticket,
        response: &[u8],
        retention_ms: Option<u64>,
    ) -> idemkv::Result<()> {
        match retention_ms {
            None => self.store().complete(t, response),
            Some(ms) => {
                self.store()
                    .complete_with_retention(t, response, Duration::from_millis(ms))
            }
        }
    }

    fn claim(&mut self, key: &'static str, fp: Fingerprint) {
        let now = self.now();
        self.counts.claims += 1;
        let got = self.store().claim(key, fp).unwrap();
        let ctx = format!("claim({key}) {}", self.ctx());
        let takeover = match self.live(key) {
            Some(State::Seen { .. }) => {
                assert!(matches!(got, Claim::Mismatch), "{ctx}: got {got:?}");
                self.counts.mismatches += 1;
                return;
            }
            Some(State::InProgress { fp: stored, .. } | State::Completed { fp: stored, .. })
                if *stored != fp =>
            {
                assert!(matches!(got, Claim::Mismatch), "{ctx}: got {got:?}");
                self.counts.mismatches += 1;
                return;
            }
            Some(want @ State::Completed { .. }) => {
                let Claim::Replay(c) = got else {
                    panic!("{ctx}: expected Replay, got {got:?}")
                };
                check_completed(&c, want, &ctx);
                self.counts.replays += 1;
                return;
            }
            Some(State::InProgress {
                lease_expires_at_ms,
                ..
            }) if now < *lease_expires_at_ms => {
                assert!(
                    matches!(got, Claim::InProgress { lease_expires_at_ms: l } if l == *lease_expires_at_ms),
                    "{ctx}: expected InProgress until {lease_expires_at_ms}, got {got:?}"
                );
                self.counts.in_progress += 1;
                return;
            }
            Some(State::InProgress { .. }) => true,
            None => false,
        };
        let Claim::Acquired(t) = got else {
            panic!("{ctx}: expected Acquired (takeover: {takeover}), got {got:?}")
        };
        assert!(
            t.generation() > self.highest_generation,
            "{ctx}: generation {} not above {}",
            t.generation(),
            self.highest_generation
        );
        assert_eq!(t.key(), key.as_bytes());
        assert_eq!(t.fingerprint(), fp);
        assert_eq!(t.claimed_at_ms(), now);
        assert_eq!(t.lease_expires_at_ms(), now + LEASE_MS);
        self.highest_generation = t.generation();
        self.counts.acquired += 1;
        if takeover {
            self.counts.takeovers += 1;
        }
        self.model.insert(
            key,
            State::InProgress {
                fp,
                generation: t.generation(),
                claimed_at_ms: now,
                lease_expires_at_ms: now + LEASE_MS,
            },
        );
        self.tickets.push(t);
    }

    fn reopen(&mut self) {
        drop(self.store.take());
        self.store = Some(open(self.dir.path(), &self.clock, self.durability));
        // What expired is gone for good after recovery.
        let now = self.now();
        self.model.retain(|_, s| s.is_live(now));
        self.counts = OpCounts::default();
    }

    fn check_every_key(&self, when: &str) {
        for key in KEYS.iter().map(String::as_str) {
            let got = self.store().get(key).unwrap();
            check_record(
                got,
                self.live(key),
                &format!("{when}: get({key}) {}", self.ctx()),
            );
        }
    }
}

fn run(ops: Vec<Op>, durability: Durability) {
    let mut h = Harness::new(durability);
    for op in ops {
        h.apply(op);
    }
    h.check_every_key("at the end");
    h.log.push("Reopen (final)".into());
    h.reopen();
    h.check_every_key("after the final reopen");
    h.check_counts();
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 192,
        ..ProptestConfig::default()
    })]

    #[test]
    fn store_matches_the_model_without_fsync(ops in vec(op(), 1..60)) {
        run(ops, Durability::None);
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 32,
        ..ProptestConfig::default()
    })]

    #[test]
    fn store_matches_the_model_with_immediate_durability(ops in vec(op(), 1..60)) {
        run(ops, Durability::Immediate);
    }
}

/// A fixed sequence that walks the interesting corners once, so they are
/// covered whatever the random cases draw.
#[test]
fn store_matches_the_model_on_a_fixed_walk() {
    use Op::*;
    let ops = vec![
        Claim { key: 0, fp: 0 },
        Claim { key: 0, fp: 0 },
        Claim { key: 0, fp: 1 },
        Extend {
            ticket: 0,
            by_ms: 2_500,
        },
        Advance { ms: 1_000 },
        Claim { key: 0, fp: 0 },
        Reopen,
        Advance { ms: 1_500 },
        Claim { key: 0, fp: 0 },
        Complete {
            ticket: 0,
            response: vec![0; 10],
            retention_ms: None,
        },
        Complete {
            ticket: 0,
            response: vec![7; MAX_RESPONSE],
            retention_ms: Some(100),
        },
        Claim { key: 0, fp: 0 },
        Advance { ms: 100 },
        Get { key: 0 },
        MarkSeen {
            key: 0,
            retain_ms: 50,
        },
        Claim { key: 0, fp: 0 },
        Advance { ms: 50 },
        Claim { key: 1, fp: 1 },
        Release { ticket: 0 },
        Claim { key: 1, fp: 0 },
        Remove { key: 1 },
        Complete {
            ticket: 0,
            response: vec![1; 5],
            retention_ms: None,
        },
        Sync,
        Reopen,
        Get { key: 1 },
    ];
    run(ops, Durability::Immediate);
}
