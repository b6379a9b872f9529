//! When writes are durable: the durability modes a store is opened with,
//! the log's two write streams, and the durability target a caller waits
//! for before it answers.

use std::ops::{Index, IndexMut};
use std::time::Duration;

/// When a write is acknowledged, relative to reaching the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// The default. `claim` (when it acquires), `complete`, `release`,
    /// `extend_lease`, `remove` and `mark_seen` return only after their record
    /// is fsynced; answers read from a record (`Replay`, `InProgress`,
    /// `Mismatch`) are given only once that record is durable. Concurrent
    /// callers share fsyncs (group commit). Survives power loss.
    #[default]
    Immediate,
    /// Acknowledged once the record is handed to the operating system, and
    /// fsynced by a background thread at least this often. Survives a crash
    /// of the process; power loss can lose up to the interval's writes.
    Periodic(Duration),
    /// Acknowledged once the record is in the engine's buffer; written out
    /// when 1 MiB accumulates, and fsynced on `sync`, segment rollover and
    /// when the last handle drops. A crash can lose recent writes.
    None,
}

/// Which of the log's two write streams a record or segment belongs to
/// (DESIGN.md §3a).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Stream {
    /// Every record but claims: completes, seen marks, tombstones.
    Main,
    /// `Claim` records only. They are superseded within a lease, so these
    /// segments die young and are deleted without copying.
    Claims,
}

impl Stream {
    /// Both streams, in the order [`PerStream`] holds them.
    pub(crate) const ALL: [Stream; 2] = [Stream::Main, Stream::Claims];

    /// The other stream.
    pub(crate) fn other(self) -> Stream {
        match self {
            Stream::Main => Stream::Claims,
            Stream::Claims => Stream::Main,
        }
    }

    fn index(self) -> usize {
        match self {
            Stream::Main => 0,
            Stream::Claims => 1,
        }
    }
}

/// One value for each stream, indexed by [`Stream`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PerStream<T>(pub(crate) [T; 2]);

impl<T> PerStream<T> {
    /// The values built by `f` for each stream.
    pub(crate) fn from_fn(mut f: impl FnMut(Stream) -> T) -> PerStream<T> {
        PerStream([f(Stream::Main), f(Stream::Claims)])
    }

    /// Each stream with its value.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (Stream, &T)> {
        Stream::ALL.into_iter().zip(&self.0)
    }

    /// The values, by reference.
    pub(crate) fn each_ref(&self) -> PerStream<&T> {
        PerStream(self.0.each_ref())
    }

    /// The values mapped by `f`.
    pub(crate) fn map<U>(self, f: impl FnMut(T) -> U) -> PerStream<U> {
        PerStream(self.0.map(f))
    }
}

impl<T> Index<Stream> for PerStream<T> {
    type Output = T;
    fn index(&self, s: Stream) -> &T {
        &self.0[s.index()]
    }
}

impl<T> IndexMut<Stream> for PerStream<T> {
    fn index_mut(&mut self, s: Stream) -> &mut T {
        &mut self.0[s.index()]
    }
}

/// What a caller waits for before it answers under `Immediate`: every
/// record of `stream` with a sequence number below `end` durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DurableTarget {
    pub(crate) stream: Stream,
    /// One past the sequence number of the caller's record.
    pub(crate) end: u64,
}

impl DurableTarget {
    /// The target covering the record with sequence number `seq` of `stream`.
    pub(crate) fn covering(stream: Stream, seq: u64) -> DurableTarget {
        DurableTarget {
            stream,
            end: seq + 1,
        }
    }
}
