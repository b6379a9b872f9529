//! The engine: the index and the log under one set of rules. Every
//! operation looks a key up, decides from its latest record (DESIGN.md §7),
//! and writes through the one write step here; `ops.rs` holds the
//! operations, `rebuild.rs` the rule that rebuilds the index at open,
//! `compaction.rs` the passes that drop and rewrite segments.

pub(crate) mod compaction;
mod ops;
pub(crate) mod rebuild;
mod stats;

use crate::clock::Clock;
use crate::durability::{Durability, DurableTarget};
use crate::error::{Error, Result};
use crate::fingerprint::Fingerprint;
use crate::format::record::{RecordFields, RecordRef, Tag, encoded_len};
use crate::index::{Entry, Index, Shard, State};
use crate::loc::{Loc, seg_u32};
use crate::log::{AppendOpts, Appended, Log, RecoveryReport};
use crate::notify::key_waiters::KeyWaiters;
use crate::notify::service::Service;
use crate::outcome::Completed;
use crate::retention::{drop_after_s, own_drop_after_ms};
use crate::stats::Counters;
use crate::storage::DirLock;
use compaction::Compaction;
use std::path::PathBuf;
use std::sync::Arc;

/// An operation's answer and the durability target that must be met before
/// it is given (`None` when nothing needs waiting for).
pub(crate) type Pending<T> = (T, Option<DurableTarget>);

pub(crate) struct Engine {
    pub(crate) log: Log,
    pub(crate) index: Index,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) durability: Durability,
    pub(crate) lease_ms: u64,
    pub(crate) retention_ms: u64,
    pub(crate) compaction: Compaction,
    pub(crate) max_key_len: usize,
    pub(crate) max_response_len: usize,
    pub(crate) counters: Counters,
    pub(crate) namespaces: crate::observe::Namespaces,
    /// `claim_wait` callers, woken by every write to their key.
    pub(crate) waiters: KeyWaiters,
    /// Fsyncs and deadlines for async callers.
    pub(crate) service: Service,
    pub(crate) recovery: RecoveryReport,
    pub(crate) dir: PathBuf,
    /// Declared last so it is released after the log is closed.
    pub(crate) _lock: DirLock,
}
fn state_of(tag: Tag) -> State {
    match tag {
        Tag::Claim => State::InProgress,
        Tag::Complete => State::Completed,
        Tag::Seen => State::Seen,
        Tag::Release | Tag::Remove => State::Absent,
    }
}
/// The key's entry and latest record a write replaces: what it shadows,
/// the bytes that become dead, and the sequence number the write must
/// follow.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Prior {
    pub entry: Entry,
    pub len: u32,
    pub seq: u64,
}

/// What a key's latest record says, as read from the log.
#[derive(Debug, Clone, Copy)]
struct Current {
    tag: Tag,
    seq: u64,
    fingerprint: u128,
    generation: u64,
    since_ms: u64,
    until_ms: u64,
    /// Encoded length of the record.
    len: u32,
}

impl Current {
    fn of(r: &RecordRef<'_>) -> Current {
        Current {
            len: seg_u32(encoded_len(r.key.len(), r.value.len())),
            tag: r.tag,
            seq: r.seq,
            fingerprint: r.fingerprint,
            generation: r.generation,
            since_ms: r.since_ms,
            until_ms: r.until_ms,
        }
    }

    /// Whether the key is present at `now_ms`. An in-progress claim whose
    /// lease ended stays present (it can be taken over) until a further
    /// retention period has passed.
    fn is_live(&self, now_ms: u64, retention_ms: u64) -> bool {
        now_ms < own_drop_after_ms(self.tag, self.until_ms, retention_ms)
    }
}
fn completed_from(r: RecordRef<'_>) -> Completed {
    Completed {
        response: r.value.to_vec(),
        fingerprint: Fingerprint::from_u128(r.fingerprint),
        completed_at_ms: r.since_ms,
        expires_at_ms: r.until_ms,
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
    fn needs(&self, target: DurableTarget) -> Option<DurableTarget> {
        matches!(self.durability, Durability::Immediate).then_some(target)
    }

    /// Under `Immediate`, the durability target to wait for before
    /// answering from the record with sequence number `seq` at `loc`, so no
    /// answer rests on a write a crash could undo.
    fn needs_read(&self, loc: Loc, seq: u64) -> Option<DurableTarget> {
        match self.durability {
            Durability::Immediate => self.log.read_target(loc, seq),
            _ => None,
        }
    }

    /// Blocks until the durability target an operation `needed` (from
    /// [`needs`](Engine::needs)) is met, then hands back its answer.
    pub(crate) fn settle<T>(&self, (answer, needed): Pending<T>) -> Result<T> {
        if let Some(target) = needed {
            self.log.wait_durable(target)?;
            // Invariant (§9): under `Immediate` no answer rests on a record
            // that is not durable.
            debug_assert!(self.log.is_durable(target));
        }
        Ok(answer)
    }

    /// Like [`settle`](Engine::settle), leaving the fsync to the store's
    /// service thread.
    pub(crate) async fn settle_async<T>(&self, (answer, needed): Pending<T>) -> Result<T> {
        if let Some(target) = needed {
            crate::notify::service::Durable {
                log: &self.log,
                service: &self.service,
                target,
            }
            .await?;
        }
        Ok(answer)
    }

    /// Runs one compaction pass now (see `compaction.rs`).
    pub(crate) fn compact(&self) -> Result<crate::reports::CompactionReport> {
        compaction::compact(
            &self.log,
            &self.index,
            &self.compaction,
            self.clock.now_ms(),
        )
    }

    /// Closes the engine, best effort (DESIGN.md §5b, "Closing"): makes
    /// everything appended durable; runs the closing pass (dead segments
    /// dropped, every sealed segment left hinted, nothing rewritten);
    /// writes the closing sync marks (`Log::close`); moves the claim
    /// stream to a new, empty segment and deletes its active one if no
    /// index entry points into it; writes the hint of each active segment
    /// left. A failure
    /// at any step leaves a store that opens: each step is one a
    /// compaction pass or a close already takes.
    pub(crate) fn close(&self) {
        let now_ms = self.clock.now_ms();
        if self.log.sync().is_err() {
            return;
        }
        let _ = compaction::closing_pass(&self.log, &self.index, &self.compaction, now_ms);
        if self.log.is_poisoned() || self.log.close(now_ms).is_err() {
            return;
        }
        let claims_deleted = self.remove_dead_active_claims().unwrap_or(false);
        let _ = self.log.write_active_hints(claims_deleted);
    }

    /// At close, moves the claim stream to a new, empty segment and
    /// deletes its active one if that holds records and no index entry
    /// points into it (`Log::remove_closing_claims`).
    fn remove_dead_active_claims(&self) -> Result<bool> {
        let Some(claims) = self.log.closing_claims()? else {
            return Ok(false);
        };
        for r in &claims.records {
            if self
                .index
                .shard(r.hash)
                .position_at(r.hash, r.loc)
                .is_some()
            {
                return Ok(false);
            }
        }
        self.log.remove_closing_claims(&claims)
    }

    /// The key's index entry and what its latest record says.
    #[expect(
        clippy::expect_used,
        reason = "find returns an entry only after the matcher, which reads its record, said yes"
    )]
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
        let found = found.map(|e| (e, current.expect("a matched entry's record was read")));
        // Invariant (§9): an entry's state is what its record's tag says.
        debug_assert!(
            found
                .as_ref()
                .is_none_or(|(e, cur)| e.state() == state_of(cur.tag)),
            "an index entry's state matches its record"
        );
        Ok(found)
    }

    /// Appends a record for the key whose current entry is `prior` (with
    /// its record's length), and returns the key's new entry. The record
    /// follows `prior`'s, or, for a key with no entry, takes a sequence
    /// number of at least `floor`, its shard's `Shard::evicted_floor`. The entry keeps
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
        prior: Option<Prior>,
        floor: u64,
        now_ms: u64,
    ) -> Result<(Entry, Appended)> {
        let drop_after_s = drop_after_s(
            fields.tag,
            fields.until_ms,
            self.retention_ms,
            prior.map_or(0, |p| p.entry.drop_after_s),
        );
        // Invariant (§9): an entry keeps shadowing what the one it replaces
        // shadowed, so its drop-after second never falls.
        debug_assert!(prior.is_none_or(|p| drop_after_s >= p.entry.drop_after_s));
        let app = self.log.append(
            fields,
            AppendOpts {
                generation_from_seq,
                drop_after_s,
                now_ms,
                supersedes: prior.map(|p| (p.entry.loc().segment, p.len)),
                // After the key's latest record, whichever stream it is in.
                min_seq: prior.map_or(floor, |p| p.seq + 1),
            },
        )?;
        self.waiters.notify(hash);
        self.compaction
            .after_write(&self.log, fields.tag.stream(), app.loc.segment, now_ms);
        Ok((
            Entry::new(hash, app.loc, state_of(fields.tag), drop_after_s),
            app,
        ))
    }
}

fn tombstone(tag: Tag, key: &[u8], generation: u64, now_ms: u64) -> RecordFields<'_> {
    RecordFields {
        tag,
        key,
        value: &[],
        fingerprint: 0,
        generation,
        since_ms: now_ms,
        until_ms: 0,
    }
}
