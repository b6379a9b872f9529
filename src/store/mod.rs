//! The public handle: [`Store`] and its blocking calls. Opening and closing
//! are in `open.rs`, `claim_wait` in `claim_wait.rs`, the async calls in
//! `async_api.rs`, the [`Backend`](crate::Backend) implementation in
//! `backend.rs`.

mod async_api;
mod backend;
mod claim_wait;
mod open;

use crate::clock::duration_ms;
use crate::engine::Engine;
use crate::error::Result;
use crate::fingerprint::Fingerprint;
use crate::outcome::{Claim, Record, Seen, Ticket};
use crate::reports::CompactionReport;
use crate::stats::Stats;
use crossbeam_channel::Sender;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// A handle to an open store. Cheap to clone; clones share one engine.
///
/// Dropping the last clone writes out and fsyncs everything acknowledged,
/// stops the background threads and releases the directory lock, so the
/// directory can be opened again at once. With background compaction on
/// (the default), it first leaves the store as a compaction pass would
/// (without rewriting anything): settled claim segments deleted, a hint
/// file for every segment, so the next open reads hints only.
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
    /// The threads behind async durability and deadlines, one per stream
    /// (`notify/service.rs`).
    service: Vec<JoinHandle<()>>,
    /// Whether closing settles the segments as the background compactor
    /// would (on when it runs; DESIGN.md §5b, "Closing").
    settle_on_close: bool,
}

impl Store {
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
    /// every [`Options::metrics_interval`](crate::Options::metrics_interval).
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
