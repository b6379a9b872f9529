//! The operations: claim, complete, release, extend_lease, get, remove,
//! mark_seen. Each locks its key's shard, decides from the key's latest
//! record (DESIGN.md §7), writes through the engine's one write step, and
//! returns its answer with the durability target to meet before giving it.

use super::{Engine, Pending, Prior, completed_from, tombstone};
use crate::durability::DurableTarget;
use crate::error::{Error, Result};
use crate::fingerprint::Fingerprint;
use crate::format::record::{RecordFields, Tag, encoded_len};
use crate::index::{Entry, Shard, State};
use crate::key::key_hash;
use crate::loc::{Loc, seg_u32};
use crate::outcome::{Claim, Record, Seen, Ticket};
use std::sync::atomic::{AtomicU64, Ordering};

impl Engine {
    /// Appends a claim record for a new owner; the caller installs the entry.
    fn append_claim(
        &self,
        key: &[u8],
        hash: u64,
        fingerprint: Fingerprint,
        now_ms: u64,
        prior: Option<Prior>,
        floor: u64,
    ) -> Result<(Entry, Ticket, DurableTarget)> {
        let lease_until = now_ms.saturating_add(self.lease_ms);
        let fields = RecordFields {
            tag: Tag::Claim,
            key,
            value: &[],
            fingerprint: fingerprint.as_u128(),
            generation: 0,
            since_ms: now_ms,
            until_ms: lease_until,
        };
        let (entry, app) = self.write(hash, &fields, true, prior, floor, now_ms)?;
        let ticket = Ticket {
            key: key.into(),
            hash,
            fingerprint,
            generation: app.seq,
            claimed_at_ms: now_ms,
            lease_expires_at_ms: AtomicU64::new(lease_until),
            lpos: AtomicU64::new(app.loc.lpos()),
            claim_seq: AtomicU64::new(app.seq),
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
        let floor = shard.evicted_floor();
        let found = self.lookup(&mut shard, hash, key)?;
        let takeover = match &found {
            Some((entry, cur)) if cur.is_live(now_ms, self.retention_ms) => {
                let lease_passed = cur.tag == Tag::Claim && now_ms >= cur.until_ms;
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
                            lease_expires_at_ms: cur.until_ms,
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
        let prior = found.as_ref().map(|(e, cur)| Prior {
            entry: **e,
            len: cur.len,
            seq: cur.seq,
        });
        let (entry, ticket, end) =
            self.append_claim(key, hash, fingerprint, now_ms, prior, floor)?;
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
    ) -> Result<(&'s mut Entry, Prior)> {
        // Fast path, no read: the entry still points at the ticket's own
        // claim record, which is therefore the key's latest; the ticket
        // knows that record's lease end. Ticket fields change only under
        // the shard lock, so they agree with each other here.
        let at = Loc::from_lpos(ticket.lpos.load(Ordering::Relaxed));
        let lease_end = ticket.lease_expires_at_ms.load(Ordering::Relaxed);
        let claim_len = seg_u32(encoded_len(ticket.key.len(), 0));
        if now_ms < lease_end.saturating_add(self.retention_ms)
            && let Some(pos) = shard.position_at(ticket.hash, at)
        {
            // Invariant (DESIGN.md §9): the record a ticket's entry points
            // at is the ticket's own claim, of its generation.
            debug_assert!(
                self.log
                    .read(at, |r| r.tag == Tag::Claim
                        && r.generation == ticket.generation
                        && r.key == &ticket.key[..])
                    .unwrap_or(false),
                "a ticket's entry points at its own claim"
            );
            let entry = shard.entry_mut(pos);
            let prior = Prior {
                entry: *entry,
                len: claim_len,
                seq: ticket.claim_seq.load(Ordering::Relaxed),
            };
            return Ok((entry, prior));
        }
        let owned = self
            .lookup(shard, ticket.hash, &ticket.key)?
            .filter(|(_, cur)| {
                cur.tag == Tag::Claim
                    && cur.generation == ticket.generation
                    && cur.is_live(now_ms, self.retention_ms)
            });
        match owned {
            Some((entry, cur)) => {
                let prior = Prior {
                    entry: *entry,
                    len: cur.len,
                    seq: cur.seq,
                };
                Ok((entry, prior))
            }
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
        let (entry, prior) = self.owned_claim(&mut shard, &ticket, now_ms)?;
        let expires_at_ms = now_ms.saturating_add(retention_ms);
        let fields = RecordFields {
            tag: Tag::Complete,
            key: &ticket.key,
            value: response,
            fingerprint: ticket.fingerprint.as_u128(),
            generation: ticket.generation,
            since_ms: now_ms,
            until_ms: expires_at_ms,
        };
        let (new, app) = self.write(ticket.hash, &fields, false, Some(prior), 0, now_ms)?;
        *entry = new;
        drop(shard);
        self.counters.completes.inc();
        Ok(((), self.needs(app.target)))
    }

    pub(crate) fn release(&self, ticket: Ticket) -> Result<Pending<()>> {
        let now_ms = self.clock.now_ms();
        let mut shard = self.index.shard(ticket.hash);
        let (entry, prior) = self.owned_claim(&mut shard, &ticket, now_ms)?;
        let fields = tombstone(Tag::Release, &ticket.key, ticket.generation, now_ms);
        let (new, app) = self.write(ticket.hash, &fields, false, Some(prior), 0, now_ms)?;
        *entry = new;
        drop(shard);
        self.counters.releases.inc();
        Ok(((), self.needs(app.target)))
    }

    pub(crate) fn extend_lease(&self, ticket: &Ticket, by_ms: u64) -> Result<Pending<u64>> {
        let now_ms = self.clock.now_ms();
        let mut shard = self.index.shard(ticket.hash);
        let (entry, prior) = self.owned_claim(&mut shard, ticket, now_ms)?;
        let lease_until = now_ms.saturating_add(by_ms);
        let fields = RecordFields {
            tag: Tag::Claim,
            key: &ticket.key,
            value: &[],
            fingerprint: ticket.fingerprint.as_u128(),
            generation: ticket.generation,
            since_ms: ticket.claimed_at_ms,
            until_ms: lease_until,
        };
        let (new, app) = self.write(ticket.hash, &fields, false, Some(prior), 0, now_ms)?;
        *entry = new;
        // Under the shard lock, so the two always describe one record.
        ticket.lpos.store(app.loc.lpos(), Ordering::Relaxed);
        ticket.claim_seq.store(app.seq, Ordering::Relaxed);
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
                claimed_at_ms: cur.since_ms,
                lease_expires_at_ms: cur.until_ms,
            },
            Tag::Seen => Record::Seen {
                seen_at_ms: cur.since_ms,
                expires_at_ms: cur.until_ms,
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
        let prior = Prior {
            entry: *entry,
            len: cur.len,
            seq: cur.seq,
        };
        let (new, app) = self.write(hash, &fields, false, Some(prior), 0, now_ms)?;
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
        let floor = shard.evicted_floor();
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
            since_ms: now_ms,
            until_ms: expires_at_ms,
        };
        let app = match found {
            Some((slot, cur)) => {
                let prior = Prior {
                    entry: *slot,
                    len: cur.len,
                    seq: cur.seq,
                };
                let (new, app) = self.write(hash, &fields, true, Some(prior), 0, now_ms)?;
                *slot = new;
                app
            }
            None => {
                let (new, app) = self.write(hash, &fields, true, None, floor, now_ms)?;
                shard.insert(new);
                app
            }
        };
        drop(shard);
        self.counters.seen_first.inc();
        Ok((Seen::First, self.needs(app.target)))
    }
}
