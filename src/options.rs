//! Settings for opening a store.

use crate::clock::{Clock, SystemClock};
use crate::durability::Durability;
use crate::error::{Error, Result};
use crate::format::record::{MAX_KEY_LEN, MAX_VALUE_LEN, SYNC_MARK_LEN, encoded_len};
use crate::format::segment::SEGMENT_HEADER_LEN;
use crate::storage::{FsStorage, Storage};
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Builder for a [`Store`](crate::Store): `Options::new().lease(..).open(dir)`.
#[derive(Clone)]
pub struct Options {
    pub(crate) durability: Durability,
    pub(crate) lease: Duration,
    pub(crate) retention: Duration,
    pub(crate) segment_size: u64,
    pub(crate) max_key_len: usize,
    pub(crate) max_response_len: usize,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) background_compaction: bool,
    pub(crate) compaction_interval: Duration,
    pub(crate) compaction_threshold: f64,
    pub(crate) namespaces: Vec<(String, Box<[u8]>)>,
    pub(crate) metrics_interval: Option<Duration>,
    pub(crate) preallocate: bool,
}

impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Options")
            .field("durability", &self.durability)
            .field("lease", &self.lease)
            .field("retention", &self.retention)
            .field("segment_size", &self.segment_size)
            .field("max_key_len", &self.max_key_len)
            .field("max_response_len", &self.max_response_len)
            .field("background_compaction", &self.background_compaction)
            .field("compaction_interval", &self.compaction_interval)
            .field("compaction_threshold", &self.compaction_threshold)
            .field(
                "namespaces",
                &self.namespaces.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .field("metrics_interval", &self.metrics_interval)
            .field("preallocate", &self.preallocate)
            .finish_non_exhaustive()
    }
}

impl Default for Options {
    fn default() -> Self {
        Options::new()
    }
}

/// Most namespaces [`Options::namespace`] accepts.
pub const MAX_NAMESPACES: usize = 64;

/// Smallest segment size accepted.
pub const MIN_SEGMENT_SIZE: u64 = 4096;
/// Largest segment size accepted: record offsets are 32-bit.
pub const MAX_SEGMENT_SIZE: u64 = u32::MAX as u64;

impl Options {
    /// The defaults: `Immediate` durability, 60 s lease, 24 h retention,
    /// 64 MiB segments, keys up to 1 KiB, responses up to 1 MiB, the system
    /// clock and the real file system.
    pub fn new() -> Self {
        Options {
            durability: Durability::Immediate,
            lease: Duration::from_secs(60),
            retention: Duration::from_secs(86_400),
            segment_size: 64 << 20,
            max_key_len: 1024,
            max_response_len: 1 << 20,
            clock: Arc::new(SystemClock),
            storage: Arc::new(FsStorage),
            background_compaction: true,
            compaction_interval: Duration::from_secs(10),
            compaction_threshold: 0.5,
            namespaces: Vec::new(),
            metrics_interval: cfg!(feature = "metrics").then_some(Duration::from_secs(10)),
            preallocate: true,
        }
    }

    /// When writes are acknowledged; see [`Durability`]. Default `Immediate`.
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// How long a claim stays in progress before another caller may take it
    /// over. Longer leases delay recovery from a crashed owner; shorter ones
    /// risk a takeover while the owner still works (use `extend_lease`).
    /// Default 60 s.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// How long a completed record is kept and replayed. Default 24 h.
    pub fn retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// Bytes per segment file before a new one starts (4 KiB to 4 GiB - 1).
    /// Claims have their own segments, a quarter of this size (at least one
    /// claim with the longest key). Each stream's active segment is also
    /// buffered in memory, so this bounds those buffers. Default 64 MiB.
    pub fn segment_size(mut self, bytes: u64) -> Self {
        self.segment_size = bytes;
        self
    }

    /// Longest key accepted, in bytes (1 to 65535). Default 1024.
    pub fn max_key_len(mut self, bytes: usize) -> Self {
        self.max_key_len = bytes;
        self
    }

    /// Longest response accepted, in bytes. Default 1 MiB.
    pub fn max_response_len(mut self, bytes: usize) -> Self {
        self.max_response_len = bytes;
        self
    }

    /// The time source. Default [`SystemClock`].
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The file-system backend. Default [`FsStorage`]; tests pass one that
    /// injects faults.
    pub fn storage(mut self, storage: Arc<dyn Storage>) -> Self {
        self.storage = storage;
        self
    }

    /// Whether each segment file gets its whole size on disk when it starts
    /// (`fallocate` on Linux), so that appends never grow the file and an
    /// fsync has no file size to record: about a third less time per
    /// durable write on ext4 (DESIGN.md §5, "Preallocation"). The space
    /// shows in `du` at once (a main and a claim segment, 80 MiB with the
    /// default `segment_size`); a sealed segment is cut to its last record,
    /// and closing the store cuts the active ones. Unless durability is
    /// [`Durability::None`], each stream also writes zeros 256 KiB ahead of
    /// its records, so an fsync commits data alone even when a batch of
    /// records reaches a new block: about twice the bytes written, counted
    /// by `Stats::zero_bytes_written`. Storage without support just grows
    /// files as they are written. Default on.
    pub fn preallocate(mut self, on: bool) -> Self {
        self.preallocate = on;
        self
    }

    /// Whether a background thread runs compaction every
    /// [`compaction_interval`](Options::compaction_interval), and as soon
    /// as a segment fills while a sealed one has something to expire or
    /// reclaim, so expiry keeps up with any write rate. With it on,
    /// dropping the last handle also settles the store as a pass would
    /// (hints written, settled claim segments deleted; nothing rewritten),
    /// so the next open is as fast as after a compaction. Turn it off to
    /// run [`Store::compact`](crate::Store::compact) by hand; closing then
    /// leaves the segments as they are. Default on.
    pub fn background_compaction(mut self, on: bool) -> Self {
        self.background_compaction = on;
        self
    }

    /// How often background compaction runs at least (a filled segment
    /// can wake it sooner). Each pass costs little when nothing expired.
    /// Default 10 s.
    pub fn compaction_interval(mut self, every: Duration) -> Self {
        self.compaction_interval = every;
        self
    }

    /// Live fraction below which a sealed segment is rewritten (its live
    /// records copied forward) rather than left to expire whole; 0.0 never
    /// rewrites. Lower values write less and keep more disk. Default 0.5.
    pub fn compaction_threshold(mut self, live_fraction: f64) -> Self {
        self.compaction_threshold = live_fraction;
        self
    }

    /// Names a namespace: claims on keys that start with `prefix` are
    /// counted apart, in [`Stats::namespaces`](crate::Stats) and, with the
    /// `metrics` feature, under a `namespace` label. A key counts in the
    /// first namespace whose prefix it starts with. Name a small, fixed set
    /// (endpoints, say; at most 64), never one per tenant: each costs a
    /// prefix comparison per claim. With [`scoped_key`](crate::scoped_key),
    /// put the part to count by first, e.g.
    /// `scoped_key(["POST /v1/charges", tenant, client_key])` and the prefix
    /// `scoped_key(["POST /v1/charges"])`.
    pub fn namespace(mut self, name: impl Into<String>, prefix: impl AsRef<[u8]>) -> Self {
        self.namespaces
            .push((name.into(), prefix.as_ref().to_vec().into_boxed_slice()));
        self
    }

    /// How often a background thread publishes [`Stats`](crate::Stats)
    /// through the `metrics` facade (with the `metrics` feature; without it
    /// nothing is published). `None` publishes only on
    /// `Store::publish_metrics`. Default 10 s with the feature.
    pub fn metrics_interval(mut self, every: Option<Duration>) -> Self {
        self.metrics_interval = every;
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |why: String| Err(Error::InvalidOptions(why));
        if self.lease.as_millis() == 0 {
            return bad("lease must be at least 1 ms".into());
        }
        if self.retention.as_millis() == 0 {
            return bad("retention must be at least 1 ms".into());
        }
        if let Durability::Periodic(d) = self.durability
            && d.as_millis() == 0
        {
            return bad("the Periodic sync interval must be at least 1 ms".into());
        }
        if !(0.0..=1.0).contains(&self.compaction_threshold) {
            return bad(format!(
                "compaction_threshold {} is outside 0.0..=1.0",
                self.compaction_threshold
            ));
        }
        if self.namespaces.len() > MAX_NAMESPACES {
            return bad(format!(
                "{} namespaces named; at most {MAX_NAMESPACES} (name a fixed set, such as endpoints)",
                self.namespaces.len()
            ));
        }
        if let Some((name, _)) = self.namespaces.iter().find(|(n, _)| n.is_empty()) {
            return bad(format!("namespace name {name:?} is empty"));
        }
        if self.metrics_interval.is_some_and(|d| d.as_millis() == 0) {
            return bad("metrics_interval must be at least 1 ms".into());
        }
        if self.background_compaction && self.compaction_interval.as_millis() == 0 {
            return bad("compaction_interval must be at least 1 ms".into());
        }
        if !(MIN_SEGMENT_SIZE..=MAX_SEGMENT_SIZE).contains(&self.segment_size) {
            return bad(format!(
                "segment_size {} is outside {MIN_SEGMENT_SIZE}..={MAX_SEGMENT_SIZE}",
                self.segment_size
            ));
        }
        if self.max_key_len == 0 || self.max_key_len > MAX_KEY_LEN {
            return bad(format!(
                "max_key_len {} is outside 1..={MAX_KEY_LEN}",
                self.max_key_len
            ));
        }
        if self.max_response_len > MAX_VALUE_LEN {
            return bad(format!(
                "max_response_len {} exceeds the format maximum {MAX_VALUE_LEN}",
                self.max_response_len
            ));
        }
        // A record may be preceded by a sync mark in its segment.
        let largest = (SEGMENT_HEADER_LEN + SYNC_MARK_LEN) as u64
            + encoded_len(self.max_key_len, self.max_response_len) as u64;
        if largest > self.segment_size {
            return bad(format!(
                "the largest record ({largest} bytes for max_key_len + max_response_len, with a \
                 sync mark and the segment header) does not fit in \
                 segment_size {}; raise segment_size or lower the maxima",
                self.segment_size
            ));
        }
        Ok(())
    }
}

/// Takes the store directory's lock, mapping "held elsewhere" to `Locked`.
pub(crate) fn lock_dir(storage: &dyn Storage, dir: &Path) -> Result<crate::storage::DirLock> {
    storage.lock_dir(dir).map_err(|e| match e.kind() {
        std::io::ErrorKind::WouldBlock => Error::Locked,
        _ => crate::error::io_context("lock", dir, e),
    })
}
