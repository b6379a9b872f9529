//! Thin handles on internal parts, for the component benches
//! (`benches/components.rs`) only. Not part of the API: hidden from the
//! docs and free to change in any release.

use crate::durability::{DurableTarget, PerStream, Stream};
use crate::format::record::{self, RecordFields, Tag};
use crate::index::{Entry, Index, State};
use crate::loc::Loc;
use crate::log::active::PublishedBuf;
use crate::log::append;
use crate::log::commit::GroupCommit;
use std::sync::atomic::{AtomicU64, Ordering};

/// Encodes a completed record (header, CRC, key, value) at the end of `out`.
pub fn encode_record(out: &mut Vec<u8>, seq: u64, key: &[u8], value: &[u8], fingerprint: u128) {
    let fields = RecordFields {
        tag: Tag::Complete,
        key,
        value,
        fingerprint,
        generation: seq,
        since_ms: 1,
        until_ms: 2,
    };
    record::encode(out, seq, &fields);
}

/// Decodes and checks the record at the start of `buf`; its length, or
/// `None` if it does not check out.
pub fn decode_record(buf: &[u8]) -> Option<usize> {
    record::decode(buf).ok().map(|(_, len)| len)
}

/// The store's index, keyed by hash alone (the benches' keys do not collide).
pub struct BenchIndex(Index);

impl Default for BenchIndex {
    fn default() -> Self {
        BenchIndex(Index::new())
    }
}

impl BenchIndex {
    /// Adds an entry for `hash` at `offset`.
    pub fn insert(&self, hash: u64, offset: u32) {
        let loc = Loc { segment: 1, offset };
        self.0
            .shard(hash)
            .insert(Entry::new(hash, loc, State::Completed, u32::MAX));
    }

    /// The offset of the entry for `hash`, if any.
    pub fn lookup(&self, hash: u64) -> Option<u32> {
        let mut shard = self.0.shard(hash);
        let found = shard.find(hash, &mut |_| Ok(true)).ok()??;
        Some(found.loc().offset)
    }

    /// Removes the entry for `hash` at `offset`.
    pub fn remove(&self, hash: u64, offset: u32) -> bool {
        let loc = Loc { segment: 1, offset };
        self.0.shard(hash).remove_at(hash, loc).is_some()
    }

    /// Bytes the index's tables take.
    pub fn memory_bytes(&self) -> usize {
        self.0.memory_bytes()
    }
}

/// The group commit, with the caller's stand-in for write-and-fsync.
pub struct BenchGroupCommit(GroupCommit);

impl Default for BenchGroupCommit {
    fn default() -> Self {
        BenchGroupCommit(GroupCommit::new(0))
    }
}

impl BenchGroupCommit {
    /// Returns once `target` is durable; `sync` returns the position it
    /// made durable.
    #[expect(
        clippy::expect_used,
        reason = "bench support: a failed sync ends the bench"
    )]
    pub fn wait(&self, target: u64, sync: impl Fn() -> std::io::Result<u64>) {
        self.0
            .wait(
                DurableTarget {
                    stream: Stream::Main,
                    end: target,
                },
                |_| sync().map(|end| PerStream([end, 0])),
            )
            .expect("the bench's sync does not fail");
    }
}

/// The XXH3 hash the index keys on.
pub fn key_hash(key: &[u8]) -> u64 {
    crate::key::key_hash(key)
}

/// The segment table's reader-striped lock, over a number.
pub struct BenchBrLock(crate::log::brlock::BrLock<u64>);

impl Default for BenchBrLock {
    fn default() -> Self {
        BenchBrLock(crate::log::brlock::BrLock::new(7))
    }
}

impl BenchBrLock {
    /// Read-locks, reads the number, unlocks.
    pub fn read(&self) -> u64 {
        *self.0.read()
    }
}

/// The steps of an append that every appender of a stream takes on shared
/// words, one at a time: the compare-and-swap on the reservation word and
/// the publish of the active buffer's length, or the completion slot when
/// an earlier range is not published yet (`log/append.rs`,
/// `log/active.rs`), on the engine's own word layout and buffer, without
/// the encoding and copying that appenders do side by side.
pub struct BenchAppendSection {
    word: AtomicU64,
    buf: PublishedBuf,
    capacity: usize,
}

impl BenchAppendSection {
    /// Room for `appends` appends of `len` bytes.
    pub fn new(appends: usize, len: usize) -> Self {
        let capacity = appends * len + 64;
        BenchAppendSection {
            word: AtomicU64::new(append::pack(0, 0, false)),
            buf: PublishedBuf::with_capacity(capacity),
            capacity,
        }
    }

    /// Reserves `len` bytes and one counter, then publishes them (or
    /// leaves them for the appender of the range before); `false` when
    /// full.
    pub fn append(&self, len: usize) -> bool {
        loop {
            let w = self.word.load(Ordering::Acquire);
            let (tail, rel, epoch) = append::unpack(w);
            if tail + len > self.capacity {
                return false;
            }
            let next = append::pack(tail + len, rel + 1, epoch);
            if self
                .word
                .compare_exchange_weak(w, next, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                self.buf.publish(tail, tail + len, append::rel_tag(rel + 1));
                return true;
            }
        }
    }
}
