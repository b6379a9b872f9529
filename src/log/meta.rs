//! What the engine knows about each segment without reading it: how many
//! record bytes it holds, how many of them are dead (superseded), and when
//! its records stop mattering. Compaction decides from these figures which
//! segments to drop whole and which to rewrite.

use crate::stats::Counter;
use parking_lot::RwLock;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};

/// One segment's figures. Updated with relaxed atomics: they steer
/// compaction, which re-checks every record against the index before it
/// drops or copies anything.
#[derive(Debug)]
pub(crate) struct SegMeta {
    /// Bytes of records appended (the header excluded). Striped: every
    /// append of every thread adds to it.
    pub bytes: Counter,
    /// Bytes of records that are no longer their key's latest record
    /// (striped: every complete adds the claim it supersedes).
    pub dead_bytes: Counter,
    /// Earliest and latest drop-after second of the records' index entries
    /// when they were written (the earliest is refreshed by compaction).
    pub min_drop_after_s: AtomicU32,
    pub max_drop_after_s: AtomicU32,
    /// Clock readings (ms) of the first and last append: the segment's span.
    pub first_write_ms: AtomicU64,
    pub last_write_ms: AtomicU64,
    /// Whether the segment's hint file is on disk, and its size.
    pub hinted: AtomicBool,
    pub hint_bytes: AtomicU64,
    /// Bytes of the segment, from its start, that an fsync has made
    /// durable: what the segment's next sync mark attests.
    pub synced_len: AtomicU64,
    /// The durable length the segment's last sync mark attests (or that
    /// needs none, such as its header).
    pub marked_len: AtomicU64,
}

impl SegMeta {
    pub(crate) fn new() -> SegMeta {
        SegMeta {
            bytes: Counter::default(),
            dead_bytes: Counter::default(),
            min_drop_after_s: AtomicU32::new(u32::MAX),
            max_drop_after_s: AtomicU32::new(0),
            first_write_ms: AtomicU64::new(u64::MAX),
            last_write_ms: AtomicU64::new(0),
            hinted: AtomicBool::new(false),
            hint_bytes: AtomicU64::new(0),
            synced_len: AtomicU64::new(0),
            marked_len: AtomicU64::new(0),
        }
    }

    /// Accounts one appended record.
    /// Appenders of every thread call it, so each shared field is written
    /// only when the value moves it (once a second or a millisecond at
    /// most), and read otherwise: a read keeps the cache line shared.
    pub(crate) fn record(&self, len: usize, drop_after_s: u32, now_ms: u64) {
        self.bytes.add(len as u64);
        if drop_after_s < self.min_drop_after_s.load(Relaxed) {
            self.min_drop_after_s.fetch_min(drop_after_s, Relaxed);
        }
        if drop_after_s > self.max_drop_after_s.load(Relaxed) {
            self.max_drop_after_s.fetch_max(drop_after_s, Relaxed);
        }
        if now_ms < self.first_write_ms.load(Relaxed) {
            self.first_write_ms.fetch_min(now_ms, Relaxed);
        }
        if now_ms > self.last_write_ms.load(Relaxed) {
            self.last_write_ms.fetch_max(now_ms, Relaxed);
        }
    }

    /// Accounts one sync mark: bytes that are dead from the start.
    pub(crate) fn sync_mark(&self, len: usize) {
        self.bytes.add(len as u64);
        self.dead_bytes.add(len as u64);
    }

    /// Fraction of the record bytes still live (1.0 for an empty segment).
    pub(crate) fn live_fraction(&self) -> f64 {
        let bytes = self.bytes.get();
        if bytes == 0 {
            return 1.0;
        }
        let dead = self.dead_bytes.get().min(bytes);
        (bytes - dead) as f64 / bytes as f64
    }

    /// Milliseconds between the first and the last append.
    pub(crate) fn span_ms(&self) -> u64 {
        self.last_write_ms
            .load(Relaxed)
            .saturating_sub(self.first_write_ms.load(Relaxed))
    }
}

/// The figures of every segment, by id.
#[derive(Debug, Default)]
pub(crate) struct Metas(RwLock<BTreeMap<u32, Arc<SegMeta>>>);

impl Metas {
    /// The figures of segment `id`, created empty if new.
    pub(crate) fn get_or_insert(&self, id: u32) -> Arc<SegMeta> {
        if let Some(m) = self.0.read().get(&id) {
            return m.clone();
        }
        self.0
            .write()
            .entry(id)
            .or_insert_with(|| Arc::new(SegMeta::new()))
            .clone()
    }

    pub(crate) fn get(&self, id: u32) -> Option<Arc<SegMeta>> {
        self.0.read().get(&id).cloned()
    }

    pub(crate) fn remove(&self, id: u32) {
        self.0.write().remove(&id);
    }

    /// Bytes of hint files on disk.
    pub(crate) fn hint_bytes(&self) -> u64 {
        self.0
            .read()
            .values()
            .map(|m| m.hint_bytes.load(Relaxed))
            .sum()
    }

    /// Records that segment `id`'s hint file of `bytes` is on disk.
    pub(crate) fn set_hinted(&self, id: u32, bytes: u64) {
        let m = self.get_or_insert(id);
        m.hint_bytes.store(bytes, Relaxed);
        m.hinted.store(true, Relaxed);
    }

    /// Marks `len` bytes of segment `id` dead.
    pub(crate) fn add_dead(&self, id: u32, len: u32) {
        if let Some(m) = self.0.read().get(&id) {
            m.dead_bytes.add(u64::from(len));
        }
    }
}
