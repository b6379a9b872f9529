//! The public handle and the engine behind it.

use crate::clock::{Clock, duration_ms};
use crate::compaction::CompactionReport;
use crate::error::{Error, Result, io_context};
use crate::fingerprint::Fingerprint;
use crate::format::record::{RecordFields, RecordRef, Tag, encoded_len};
use crate::index::{Entry, Index, Shard, State, ceil_s, key_hash};
use crate::log::{
    AppendOpts, Appended, Applied, Loc, Log, Metas, Recovered, RecoveryReport, RecoveryView,
    recover,
};
use crate::observe::event;
use crate::options::{Durability, Options};
use crate::outcome::{Claim, Completed, Record, Seen, Ticket};
use crate::stats::{Counters, Stats};
use crate::storage::DirLock;
use crossbeam_channel::{RecvTimeoutError, Sender};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// A handle to an open store. Cheap to clone; clones share one engine.
///
/// Dropping the last clone writes out and fsyncs everything acknowledged,
/// stops the background thread and releases the directory lock, so the
/// directory can be opened again at once.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl Store {
    pub(crate) fn engine(&self) -> &Engine {
        &self.inner.engine
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.inner.engine.dir)
            .finish_non_exhaustive()
    }
}

struct Inner {
    engine: Arc<Engine>,
    /// Background threads (sync, compaction), each stopped by dropping its sender.
    workers: Vec<(Sender<()>, JoinHandle<()>)>,
    /// The thread behind async durability and deadlines; see `wait.rs`.
    service: Option<JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for (stop, thread) in self.workers.drain(..) {
            drop(stop);
            let _ = thread.join();
        }
        self.engine.service.stop();
        if let Some(thread) = self.service.take() {
            let _ = thread.join();
        }
        if !self.engine.log.is_poisoned() {
            // Sync, then prove it on disk with a sync mark per stream.
            let _ = self.engine.log.close(self.engine.clock.now_ms());
        }
    }
}

/// An operation's answer and the durability target that must be met before
/// it is given (`None` when nothing needs waiting for).
pub(crate) type Pending<T> = (T, Option<u64>);

pub(crate) struct Engine {
    pub(crate) log: Log,
    pub(crate) index: Index,
    pub(crate) clock: Arc<dyn Clock>,
    durability: Durability,
    lease_ms: u64,
    pub(crate) retention_ms: u64,
    pub(crate) compaction: crate::compaction::Compaction,
    max_key_len: usize,
    max_response_len: usize,
    pub(crate) counters: Counters,
    namespaces: crate::observe::Namespaces,
    /// `claim_wait` callers, woken by every write to their key.
    pub(crate) waiters: crate::wait::KeyWaiters,
    /// Fsyncs and deadlines for async callers.
    pub(crate) service: crate::wait::Service,
    recovery: RecoveryReport,
    dir: PathBuf,
    /// Declared last so it is released after the log is closed.
    _lock: DirLock,
}

impl Store {
    /// Opens (or creates) the store in `dir` with default [`Options`].
    pub fn open(dir: impl AsRef<Path>) -> Result<Store> {
        Options::new().open(dir)
    }

    pub(crate) fn open_with(dir: &Path, opts: Options) -> Result<Store> {
        let storage = opts.storage.clone();
        storage
            .create_dir_all(dir)
            .map_err(|e| io_context("create directory", dir, e))?;
        let lock = crate::options::lock_dir(&*storage, dir)?;
        let now_ms = opts.clock.now_ms();
        let retention_ms = duration_ms(opts.retention);
        let segment_size = usize::try_from(opts.segment_size)
            .map_err(|_| Error::InvalidOptions("segment_size does not fit in memory".into()))?;
        let index = Index::new();
        let metas = Arc::new(Metas::default());
        #[cfg(feature = "tracing")]
        let started = std::time::Instant::now();
        let (log, recovery) = recover(
            storage,
            dir,
            opts.durability,
            [
                segment_size,
                crate::log::claim_segment_size(segment_size, opts.max_key_len),
            ],
            metas.clone(),
            |keys| index.reserve(keys),
            |r, view| apply_recovered(&index, &metas, r, view, now_ms, retention_ms),
        )
        .inspect_err(|_e| event!(error, dir = %dir.display(), error = %_e, "open failed"))?;
        event!(
            info,
            dir = %dir.display(),
            records_scanned = recovery.records,
            segments_from_hints = recovery.hinted_segments,
            hint_bytes_written = recovery.hint_bytes_written,
            torn_tail_bytes_truncated = recovery.torn_tail_bytes,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "store opened"
        );
        let engine = Arc::new(Engine {
            log,
            index,
            clock: opts.clock,
            durability: opts.durability,
            lease_ms: duration_ms(opts.lease),
            compaction: crate::compaction::Compaction::new(opts.compaction_threshold),
            retention_ms,
            max_key_len: opts.max_key_len,
            max_response_len: opts.max_response_len,
            counters: Counters::default(),
            namespaces: crate::observe::Namespaces::new(&opts.namespaces),
            waiters: Default::default(),
            service: Default::default(),
            recovery,
            dir: dir.to_path_buf(),
            _lock: lock,
        });
        let mut workers = Vec::new();
        if let Durability::Periodic(every) = opts.durability {
            workers.push(spawn_worker("idemkv-sync", engine.clone(), every, |e| {
                e.log.sync()
            })?);
        }
        if let Some(every) = opts.metrics_interval
            && cfg!(feature = "metrics")
        {
            workers.push(spawn_worker(
                "idemkv-metrics",
                engine.clone(),
                every,
                |e| {
                    crate::observe::publish(&e.stats(false));
                    Ok(())
                },
            )?);
        }
        if opts.background_compaction {
            workers.push(spawn_worker(
                "idemkv-compact",
                engine.clone(),
                opts.compaction_interval,
                |e| e.compact().map(drop),
            )?);
        }
        let service = {
            let engine = engine.clone();
            std::thread::Builder::new()
                .name("idemkv-service".into())
                .spawn(move || engine.service.run(&engine.log))
                .map_err(Error::Io)?
        };
        Ok(Store {
            inner: Arc::new(Inner {
                engine,
                workers,
                service: Some(service),
            }),
        })
    }

    /// Claims `key` for a request with fingerprint `fingerprint`.
    ///
    /// Atomic: of any number of concurrent claims on one key, exactly one
    /// answers `Acquired`. The fingerprint is checked before the state, so a
    /// live key claimed with another fingerprint answers `Mismatch` whatever
    /// its state. Under `Durability::Immediate` an `Acquired` claim is fsynced
    /// before this returns, so the side effect never starts unrecorded.
    pub fn claim(&self, key: impl AsRef<[u8]>, fingerprint: Fingerprint) -> Result<Claim> {
        let e = &self.inner.engine;
        e.settle(e.claim(key.as_ref(), fingerprint)?)
    }

    /// Stores `response` for the ticket's key, kept for the store's retention.
    /// Every later claim with the same fingerprint replays these exact bytes.
    ///
    /// A response longer than [`Store::max_response_len`] is refused with
    /// `ResponseTooLarge` and consumes the ticket (the key stays in progress
    /// until its lease ends), so check the length first when it can be large.
    pub fn complete(&self, ticket: Ticket, response: &[u8]) -> Result<()> {
        let e = &self.inner.engine;
        e.settle(e.complete(ticket, response, e.retention_ms)?)
    }

    /// Like [`complete`](Store::complete), with this record's own retention.
    pub fn complete_with_retention(
        &self,
        ticket: Ticket,
        response: &[u8],
        retention: Duration,
    ) -> Result<()> {
        let e = &self.inner.engine;
        e.settle(e.complete(ticket, response, duration_ms(retention))?)
    }

    /// Gives the key back after a failure that is safe to retry: the key
    /// becomes absent and the next claim acquires it.
    pub fn release(&self, ticket: Ticket) -> Result<()> {
        let e = &self.inner.engine;
        e.settle(e.release(ticket)?)
    }

    /// Extends the ticket's lease to `by` from now, for work that outlasts
    /// the lease. Returns the new lease end (unix ms).
    pub fn extend_lease(&self, ticket: &Ticket, by: Duration) -> Result<u64> {
        let e = &self.inner.engine;
        e.settle(e.extend_lease(ticket, duration_ms(by))?)
    }

    /// The key's current record, or `None` if it is absent or expired.
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Record>> {
        let e = &self.inner.engine;
        e.settle(e.get(key.as_ref())?)
    }

    /// Purges the key now, whatever its state; a ticket for it then gets
    /// `LeaseLost`. Returns whether a live record was removed.
    pub fn remove(&self, key: impl AsRef<[u8]>) -> Result<bool> {
        let e = &self.inner.engine;
        e.settle(e.remove(key.as_ref())?)
    }

    /// One-shot dedup for message consumers: `First` the first time a key is
    /// seen within `retain`, `Duplicate` after. One record, one call.
    pub fn mark_seen(&self, key: impl AsRef<[u8]>, retain: Duration) -> Result<Seen> {
        let e = &self.inner.engine;
        e.settle(e.mark_seen(key.as_ref(), duration_ms(retain))?)
    }

    /// Makes everything acknowledged so far durable, whatever the
    /// durability mode.
    pub fn sync(&self) -> Result<()> {
        self.inner.engine.log.sync()
    }

    /// The counters and sizes. Counting live keys walks the index, so the
    /// cost grows with the number of keys.
    pub fn stats(&self) -> Stats {
        self.inner.engine.stats(true)
    }

    /// Publishes the counters through the `metrics` facade now (with the
    /// `metrics` feature; a no-op without it). Skips the live-key walk:
    /// `indexed_keys` stands in for it. A background thread does the same
    /// every [`Options::metrics_interval`].
    pub fn publish_metrics(&self) {
        crate::observe::publish(&self.inner.engine.stats(false));
    }

    /// Runs one compaction pass now: drops segments whose records have all
    /// expired, rewrites sparse ones, evicts expired keys from the index.
    /// Background compaction does the same every `compaction_interval`.
    pub fn compact(&self) -> Result<CompactionReport> {
        self.inner.engine.compact()
    }

    /// The directory this store owns.
    pub fn dir(&self) -> &Path {
        &self.inner.engine.dir
    }

    /// The longest response `complete` accepts.
    pub fn max_response_len(&self) -> usize {
        self.inner.engine.max_response_len
    }
}

/// Runs `work` every `every` until the returned sender is dropped, or until
/// the store is poisoned (writers then see the error; nothing to retry).
fn spawn_worker(
    name: &str,
    engine: Arc<Engine>,
    every: Duration,
    work: fn(&Engine) -> Result<()>,
) -> Result<(Sender<()>, JoinHandle<()>)> {
    let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
    let thread = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                if work(&engine).is_err() && engine.log.is_poisoned() {
                    break;
                }
            }
        })
        .map_err(Error::Io)?;
    Ok((stop, thread))
}

/// Rebuilds one key's index entry from a recovered record.
fn apply_recovered(
    index: &Index,
    metas: &Metas,
    r: &Recovered<'_>,
    view: &RecoveryView<'_>,
    now_ms: u64,
    retention_ms: u64,
) -> Result<Applied> {
    let mut shard = index.shard(r.hash);
    let from_main = !view.is_claims(r.loc.segment);
    // A complete or release carries the generation of the claim it ends. If
    // an entry from the claim stream points at a claim of that same
    // generation (generations are sequence numbers, never reused), both
    // records are of one key and the main record is the later: decided
    // without reading either record. Any other case reads them below.
    let ends_claim = |e: &Entry| -> bool {
        let candidate = from_main
            && matches!(r.tag, Tag::Complete | Tag::Release)
            && view.is_claims(e.loc().segment);
        if !candidate {
            return false;
        }
        let own = r.generation.or_else(|| view.peek_generation(r.loc));
        own.is_some() && own == view.peek_generation(e.loc())
    };
    let mut ended_claim = false;
    // The record's own key is read only when another entry's hash matches.
    let mut own_key = r.key;
    let mut matches = |e: &Entry| -> Result<bool> {
        if ends_claim(e) {
            ended_claim = true;
            return Ok(true);
        }
        let key = match own_key {
            Some(k) => k,
            None => *own_key.insert(view.record(r.loc)?.key),
        };
        view.read(e.loc(), |other| other.key == key)
    };
    // One probe: the key's entry, or the place to insert it.
    let slot = shard.slot(r.hash, &mut matches)?;
    let prior = match &slot {
        crate::index::Slot::Occupied(o) => Some(*o.get()),
        crate::index::Slot::Vacant(_) => None,
    };
    if let Some(p) = prior.filter(|p| view.is_claims(p.loc().segment)) {
        // The claim stream was replayed first, so a main record can meet a
        // claim written after it. The later of the two stands; the older
        // is dead, and what it shadowed the claim shadows too.
        if from_main && !ended_claim {
            let seq = match r.seq {
                Some(seq) => seq,
                None => view.record(r.loc)?.seq,
            };
            if seq < view.record(p.loc())?.seq {
                let own = ceil_s(own_drop_after_ms(r.tag, r.time_b_ms, retention_ms));
                if let crate::index::Slot::Occupied(mut o) = slot {
                    let e = o.get_mut();
                    e.drop_after_s = e.drop_after_s.max(own);
                }
                return Ok(Applied {
                    drop_after_s: own,
                    kept: false,
                });
            }
        }
    }
    if let Some(p) = &prior {
        let prior_len = view.record_len(p.loc())?;
        metas.add_dead(
            p.loc().segment,
            u32::try_from(prior_len).expect("records fit a segment"),
        );
    }
    let drop_after_s = drop_after_s(r.tag, r.time_b_ms, retention_ms, prior.as_ref());
    let entry = Entry::new(r.hash, r.loc, state_of(r.tag), drop_after_s);
    let kept = !gone(drop_after_s, now_ms);
    // Neither a record whose drop-after time passed nor anything it shadows
    // matters any more: it gets no entry.
    match slot {
        crate::index::Slot::Occupied(o) if !kept => {
            o.remove();
        }
        crate::index::Slot::Occupied(mut o) => *o.get_mut() = entry,
        crate::index::Slot::Vacant(_) if !kept => {}
        crate::index::Slot::Vacant(v) => {
            v.insert(entry);
        }
    }
    Ok(Applied { drop_after_s, kept })
}

/// Whether an entry that may be dropped after `drop_after_s` is gone at `now_ms`.
pub(crate) fn gone(drop_after_s: u32, now_ms: u64) -> bool {
    u64::from(drop_after_s) * 1000 <= now_ms
}

/// When a record alone stops mattering: an in-progress claim one retention
/// period after its lease, a completed or seen record at its expiry, a
/// tombstone at once (it matters only through what it shadows).
fn own_drop_after_ms(tag: Tag, time_b_ms: u64, retention_ms: u64) -> u64 {
    match tag {
        Tag::Claim => time_b_ms.saturating_add(retention_ms),
        Tag::Complete | Tag::Seen => time_b_ms,
        Tag::Release | Tag::Remove => 0,
    }
}

/// The drop-after second of a new record's entry: the later of its own end
/// and that of the entry it replaces, so it keeps shadowing whatever the
/// older records of its key shadowed.
fn drop_after_s(tag: Tag, time_b_ms: u64, retention_ms: u64, prior: Option<&Entry>) -> u32 {
    ceil_s(own_drop_after_ms(tag, time_b_ms, retention_ms)).max(prior.map_or(0, |e| e.drop_after_s))
}

fn state_of(tag: Tag) -> State {
    match tag {
        Tag::Claim => State::InProgress,
        Tag::Complete => State::Completed,
        Tag::Seen => State::Seen,
        Tag::Release | Tag::Remove => State::Absent,
    }
}

/// What a key's latest record says, as read from the log.
#[derive(Debug, Clone, Copy)]
struct Current {
    tag: Tag,
    seq: u64,
    fingerprint: u128,
    generation: u64,
    time_a_ms: u64,
    time_b_ms: u64,
    /// Encoded length of the record.
    len: u32,
}

impl Current {
    fn of(r: &RecordRef<'_>) -> Current {
        Current {
            len: u32::try_from(encoded_len(r.key.len(), r.value.len()))
                .expect("records fit a segment"),
            tag: r.tag,
            seq: r.seq,
            fingerprint: r.fingerprint,
            generation: r.generation,
            time_a_ms: r.time_a_ms,
            time_b_ms: r.time_b_ms,
        }
    }

    /// Whether the key is present at `now_ms`. An in-progress claim whose
    /// lease ended stays present (it can be taken over) until a further
    /// retention period has passed.
    fn is_live(&self, now_ms: u64, retention_ms: u64) -> bool {
        now_ms < own_drop_after_ms(self.tag, self.time_b_ms, retention_ms)
    }
}

fn completed_from(r: RecordRef<'_>) -> Completed {
    Completed {
        response: r.value.to_vec(),
        fingerprint: Fingerprint::from_u128(r.fingerprint),
        completed_at_ms: r.time_a_ms,
        expires_at_ms: r.time_b_ms,
    }
}

impl Engine {
    pub(crate) fn check_key(&self, key: &[u8]) -> Result<()> {
        if key.is_empty() {
            return Err(Error::EmptyKey);
        }
        if key.len() > self.max_key_len {
            return Err(Error::KeyTooLong {
                len: key.len(),
                max: self.max_key_len,
            });
        }
        Ok(())
    }

    /// Under `Immediate`, the durability target of a write (its
    /// [`Appended::target`](crate::log::Appended)) to meet before it is
    /// acknowledged.
    fn needs(&self, end: u64) -> Option<u64> {
        matches!(self.durability, Durability::Immediate).then_some(end)
    }

    /// Under `Immediate`, the durability target to wait for before
    /// answering from the record with sequence number `seq` at `loc`, so no
    /// answer rests on a write a crash could undo.
    fn needs_read(&self, loc: Loc, seq: u64) -> Option<u64> {
        match self.durability {
            Durability::Immediate => self.log.read_target(loc, seq),
            _ => None,
        }
    }

    /// Blocks until the durability target an operation `needed` (from
    /// [`needs`](Engine::needs)) is met, then hands back its answer.
    pub(crate) fn settle<T>(&self, (answer, needed): Pending<T>) -> Result<T> {
        if let Some(end) = needed {
            self.log.wait_durable(end)?;
        }
        Ok(answer)
    }

    /// Like [`settle`](Engine::settle), leaving the fsync to the store's
    /// service thread.
    pub(crate) async fn settle_async<T>(&self, (answer, needed): Pending<T>) -> Result<T> {
        if let Some(target) = needed {
            crate::wait::Durable {
                log: &self.log,
                service: &self.service,
                target,
            }
            .await?;
        }
        Ok(answer)
    }

    /// The key's index entry and what its latest record says.
    fn lookup<'s>(
        &self,
        shard: &'s mut Shard,
        hash: u64,
        key: &[u8],
    ) -> Result<Option<(&'s mut Entry, Current)>> {
        let mut current = None;
        let found = shard.find(hash, &mut |e| {
            self.log.read(e.loc(), |r| {
                let hit = r.key == key;
                if hit {
                    current = Some(Current::of(&r));
                }
                hit
            })
        })?;
        Ok(found.map(|e| (e, current.expect("a matched entry's record was read"))))
    }

    /// Appends a record for the key whose current entry is `prior` (with
    /// its record's length), and returns the key's new entry. The entry keeps
    /// everything the key's earlier records shadow until the later of the
    /// two drop-after times; the prior record becomes dead.
    ///
    /// Every write wakes the key's `claim_wait` callers (one atomic load when
    /// there are none). The caller holds the key's shard lock until it has
    /// installed the new entry, so a woken waiter, which needs that lock to
    /// look, always sees the write.
    fn write(
        &self,
        hash: u64,
        fields: &RecordFields<'_>,
        generation_from_seq: bool,
        prior: Option<(Entry, u32)>,
        now_ms: u64,
    ) -> Result<(Entry, Appended)> {
        let drop_after_s = drop_after_s(
            fields.tag,
            fields.time_b_ms,
            self.retention_ms,
            prior.as_ref().map(|(e, _)| e),
        );
        let app = self.log.append(
            fields,
            AppendOpts {
                generation_from_seq,
                drop_after_s,
                now_ms,
                supersedes: prior.map(|(e, len)| (e.loc().segment, len)),
            },
        )?;
        self.waiters.notify(hash);
        Ok((
            Entry::new(hash, app.loc, state_of(fields.tag), drop_after_s),
            app,
        ))
    }

    /// Appends a claim record for a new owner; the caller installs the entry.
    fn append_claim(
        &self,
        key: &[u8],
        hash: u64,
        fingerprint: Fingerprint,
        now_ms: u64,
        prior: Option<(Entry, u32)>,
    ) -> Result<(Entry, Ticket, u64)> {
        let lease_until = now_ms.saturating_add(self.lease_ms);
        let fields = RecordFields {
            tag: Tag::Claim,
            key,
            value: &[],
            fingerprint: fingerprint.as_u128(),
            generation: 0,
            time_a_ms: now_ms,
            time_b_ms: lease_until,
        };
        let (entry, app) = self.write(hash, &fields, true, prior, now_ms)?;
        let ticket = Ticket {
            key: key.into(),
            hash,
            fingerprint,
            generation: app.seq,
            claimed_at_ms: now_ms,
            lease_expires_at_ms: AtomicU64::new(lease_until),
            lpos: AtomicU64::new(app.loc.lpos()),
        };
        Ok((entry, ticket, app.target))
    }

    /// Claims `key`; the answer and the position to settle before giving it.
    pub(crate) fn claim(&self, key: &[u8], fingerprint: Fingerprint) -> Result<Pending<Claim>> {
        self.check_key(key)?;
        let hash = key_hash(key);
        let now_ms = self.clock.now_ms();
        self.counters.claims.inc();
        let ns = self.namespaces.of(key);
        if let Some(ns) = ns {
            ns.claims.inc();
        }
        let mut shard = self.index.shard(hash);
        let found = self.lookup(&mut shard, hash, key)?;
        let takeover = match &found {
            Some((entry, cur)) if cur.is_live(now_ms, self.retention_ms) => {
                let lease_passed = cur.tag == Tag::Claim && now_ms >= cur.time_b_ms;
                let mismatch = cur.tag == Tag::Seen || cur.fingerprint != fingerprint.as_u128();
                if mismatch || !lease_passed {
                    let loc = entry.loc();
                    let (answer, counter) = if mismatch {
                        self.counters.mismatches.inc();
                        (Claim::Mismatch, ns.map(|n| &n.mismatches))
                    } else if cur.tag == Tag::Complete {
                        self.counters.replays.inc();
                        let done = self.log.read(loc, completed_from)?;
                        (Claim::Replay(done), ns.map(|n| &n.replays))
                    } else {
                        self.counters.in_progress.inc();
                        let busy = Claim::InProgress {
                            lease_expires_at_ms: cur.time_b_ms,
                        };
                        (busy, ns.map(|n| &n.in_progress))
                    };
                    drop(shard);
                    if let Some(c) = counter {
                        c.inc();
                    }
                    return Ok((answer, self.needs_read(loc, cur.seq)));
                }
                true
            }
            Some((entry, _)) => {
                if entry.state() != State::Absent {
                    self.counters.expirations.inc();
                }
                false
            }
            None => false,
        };
        let prior = found.as_ref().map(|(e, cur)| (**e, cur.len));
        let (entry, ticket, end) = self.append_claim(key, hash, fingerprint, now_ms, prior)?;
        match found {
            Some((slot, _)) => *slot = entry,
            None => shard.insert(entry),
        }
        drop(shard);
        if takeover {
            self.counters.takeovers.inc();
        }
        self.counters.acquired.inc();
        if let Some(ns) = ns {
            ns.acquired.inc();
        }
        Ok((Claim::Acquired(ticket), self.needs(end)))
    }

    /// The index entry of the ticket's claim, if the ticket still owns its
    /// key: the key's latest record is this claim (same generation) and it
    /// has not expired (an expired claim is absent, as it would be after a
    /// reopen or compaction). Counts a `LeaseLost` refusal otherwise.
    fn owned_claim<'s>(
        &self,
        shard: &'s mut Shard,
        ticket: &Ticket,
        now_ms: u64,
    ) -> Result<(&'s mut Entry, u32)> {
        // Fast path, no read: the entry still points at the ticket's own
        // claim record, which is therefore the key's latest; the ticket
        // knows that record's lease end. Ticket fields change only under
        // the shard lock, so they agree with each other here.
        let at = Loc::from_lpos(ticket.lpos.load(Ordering::Relaxed));
        let lease_end = ticket.lease_expires_at_ms.load(Ordering::Relaxed);
        let claim_len = encoded_len(ticket.key.len(), 0) as u32;
        if now_ms < lease_end.saturating_add(self.retention_ms)
            && let Some(pos) = shard.position_at(ticket.hash, at)
        {
            return Ok((shard.entry_mut(pos), claim_len));
        }
        let owned = self
            .lookup(shard, ticket.hash, &ticket.key)?
            .filter(|(_, cur)| {
                cur.tag == Tag::Claim
                    && cur.generation == ticket.generation
                    && cur.is_live(now_ms, self.retention_ms)
            });
        match owned {
            Some((entry, cur)) => Ok((entry, cur.len)),
            None => {
                self.counters.lease_lost.inc();
                Err(Error::LeaseLost)
            }
        }
    }

    pub(crate) fn complete(
        &self,
        ticket: Ticket,
        response: &[u8],
        retention_ms: u64,
    ) -> Result<Pending<()>> {
        if response.len() > self.max_response_len {
            return Err(Error::ResponseTooLarge {
                len: response.len(),
                max: self.max_response_len,
            });
        }
        let now_ms = self.clock.now_ms();
        let mut shard = self.index.shard(ticket.hash);
        let (entry, len) = self.owned_claim(&mut shard, &ticket, now_ms)?;
        let expires_at_ms = now_ms.saturating_add(retention_ms);
        let fields = RecordFields {
            tag: Tag::Complete,
            key: &ticket.key,
            value: response,
            fingerprint: ticket.fingerprint.as_u128(),
            generation: ticket.generation,
            time_a_ms: now_ms,
            time_b_ms: expires_at_ms,
        };
        let (new, app) = self.write(ticket.hash, &fields, false, Some((*entry, len)), now_ms)?;
        *entry = new;
        drop(shard);
        self.counters.completes.inc();
        Ok(((), self.needs(app.target)))
    }

    pub(crate) fn release(&self, ticket: Ticket) -> Result<Pending<()>> {
        let now_ms = self.clock.now_ms();
        let mut shard = self.index.shard(ticket.hash);
        let (entry, len) = self.owned_claim(&mut shard, &ticket, now_ms)?;
        let fields = tombstone(Tag::Release, &ticket.key, ticket.generation, now_ms);
        let (new, app) = self.write(ticket.hash, &fields, false, Some((*entry, len)), now_ms)?;
        *entry = new;
        drop(shard);
        self.counters.releases.inc();
        Ok(((), self.needs(app.target)))
    }

    pub(crate) fn extend_lease(&self, ticket: &Ticket, by_ms: u64) -> Result<Pending<u64>> {
        let now_ms = self.clock.now_ms();
        let mut shard = self.index.shard(ticket.hash);
        let (entry, len) = self.owned_claim(&mut shard, ticket, now_ms)?;
        let lease_until = now_ms.saturating_add(by_ms);
        let fields = RecordFields {
            tag: Tag::Claim,
            key: &ticket.key,
            value: &[],
            fingerprint: ticket.fingerprint.as_u128(),
            generation: ticket.generation,
            time_a_ms: ticket.claimed_at_ms,
            time_b_ms: lease_until,
        };
        let (new, app) = self.write(ticket.hash, &fields, false, Some((*entry, len)), now_ms)?;
        *entry = new;
        // Under the shard lock, so the two always describe one record.
        ticket.lpos.store(app.loc.lpos(), Ordering::Relaxed);
        ticket
            .lease_expires_at_ms
            .store(lease_until, Ordering::Relaxed);
        drop(shard);
        self.counters.lease_extensions.inc();
        Ok((lease_until, self.needs(app.target)))
    }

    pub(crate) fn get(&self, key: &[u8]) -> Result<Pending<Option<Record>>> {
        self.check_key(key)?;
        let hash = key_hash(key);
        let now_ms = self.clock.now_ms();
        let mut shard = self.index.shard(hash);
        let Some((entry, cur)) = self.lookup(&mut shard, hash, key)? else {
            return Ok((None, None));
        };
        if !cur.is_live(now_ms, self.retention_ms) {
            return Ok((None, None));
        }
        let loc = entry.loc();
        let record = match cur.tag {
            Tag::Complete => Record::Completed(self.log.read(loc, completed_from)?),
            Tag::Claim => Record::InProgress {
                fingerprint: Fingerprint::from_u128(cur.fingerprint),
                claimed_at_ms: cur.time_a_ms,
                lease_expires_at_ms: cur.time_b_ms,
            },
            Tag::Seen => Record::Seen {
                seen_at_ms: cur.time_a_ms,
                expires_at_ms: cur.time_b_ms,
            },
            Tag::Release | Tag::Remove => unreachable!("a tombstone is never live"),
        };
        drop(shard);
        Ok((Some(record), self.needs_read(loc, cur.seq)))
    }

    pub(crate) fn remove(&self, key: &[u8]) -> Result<Pending<bool>> {
        self.check_key(key)?;
        let hash = key_hash(key);
        let now_ms = self.clock.now_ms();
        let mut shard = self.index.shard(hash);
        let Some((entry, cur)) = self.lookup(&mut shard, hash, key)? else {
            return Ok((false, None));
        };
        if !cur.is_live(now_ms, self.retention_ms) {
            return Ok((false, None));
        }
        let fields = tombstone(Tag::Remove, key, cur.generation, now_ms);
        let (new, app) = self.write(hash, &fields, false, Some((*entry, cur.len)), now_ms)?;
        *entry = new;
        drop(shard);
        self.counters.removes.inc();
        Ok((true, self.needs(app.target)))
    }

    pub(crate) fn mark_seen(&self, key: &[u8], retain_ms: u64) -> Result<Pending<Seen>> {
        self.check_key(key)?;
        let hash = key_hash(key);
        let now_ms = self.clock.now_ms();
        let mut shard = self.index.shard(hash);
        let found = self.lookup(&mut shard, hash, key)?;
        if let Some((entry, cur)) = &found {
            if cur.is_live(now_ms, self.retention_ms) {
                let loc = entry.loc();
                drop(shard);
                self.counters.seen_duplicates.inc();
                return Ok((Seen::Duplicate, self.needs_read(loc, cur.seq)));
            }
            if entry.state() != State::Absent {
                self.counters.expirations.inc();
            }
        }
        let expires_at_ms = now_ms.saturating_add(retain_ms);
        let fields = RecordFields {
            tag: Tag::Seen,
            key,
            value: &[],
            fingerprint: 0,
            generation: 0,
            time_a_ms: now_ms,
            time_b_ms: expires_at_ms,
        };
        let app = match found {
            Some((slot, cur)) => {
                let (new, app) = self.write(hash, &fields, true, Some((*slot, cur.len)), now_ms)?;
                *slot = new;
                app
            }
            None => {
                let (new, app) = self.write(hash, &fields, true, None, now_ms)?;
                shard.insert(new);
                app
            }
        };
        drop(shard);
        self.counters.seen_first.inc();
        Ok((Seen::First, self.needs(app.target)))
    }

    /// The counters; `count_live` walks the index to count live keys.
    fn stats(&self, count_live: bool) -> Stats {
        let now_ms = self.clock.now_ms();
        let (mut live, mut indexed) = (0u64, 0u64);
        self.index.for_each(|e| {
            indexed += 1;
            if count_live && e.state() != State::Absent {
                let cur = self.log.read(e.loc(), |r| Current::of(&r));
                live += u64::from(cur.is_ok_and(|c| c.is_live(now_ms, self.retention_ms)));
            }
        });
        let c = &self.counters;
        let lc = &self.log.counters;
        use std::sync::atomic::Ordering::Relaxed;
        Stats {
            claims: c.claims.get(),
            acquired: c.acquired.get(),
            replays: c.replays.get(),
            in_progress: c.in_progress.get(),
            mismatches: c.mismatches.get(),
            takeovers: c.takeovers.get(),
            completes: c.completes.get(),
            releases: c.releases.get(),
            lease_extensions: c.lease_extensions.get(),
            lease_lost: c.lease_lost.get(),
            removes: c.removes.get(),
            seen_first: c.seen_first.get(),
            seen_duplicates: c.seen_duplicates.get(),
            expirations: c.expirations.get(),
            live_keys: live,
            indexed_keys: indexed,
            index_memory_bytes: self.index.memory_bytes() as u64,
            bytes_on_disk: self.log.disk_bytes(),
            segments: self.log.segment_count(),
            bytes_appended: lc.bytes_appended.get(),
            fsyncs: lc.fsyncs.load(Relaxed),
            hint_bytes_written: lc.hint_bytes_written.load(Relaxed)
                + self.recovery.hint_bytes_written,
            segments_opened_from_hints: self.recovery.hinted_segments,
            recovered_records: self.recovery.records,
            segments_dropped: self.compaction.segments_dropped.load(Relaxed),
            segments_rewritten: self.compaction.segments_rewritten.load(Relaxed),
            bytes_reclaimed: self.compaction.bytes_reclaimed.load(Relaxed),
            bytes_copied: self.compaction.bytes_copied.load(Relaxed),
            entries_evicted: self.compaction.entries_evicted.load(Relaxed),
            torn_tail_bytes_truncated: self.recovery.torn_tail_bytes,
            claim_waits: c.claim_waits.get(),
            waiting: self.waiters.len() as u64,
            poisoned: self.log.is_poisoned(),
            namespaces: self.namespaces.snapshot(),
        }
    }
}

fn tombstone(tag: Tag, key: &[u8], generation: u64, now_ms: u64) -> RecordFields<'_> {
    RecordFields {
        tag,
        key,
        value: &[],
        fingerprint: 0,
        generation,
        time_a_ms: now_ms,
        time_b_ms: 0,
    }
}
