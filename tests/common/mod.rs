//! Helpers shared by the integration tests, included by each with
//! `mod common;`: scratch stores on a manual clock, claims that must acquire
//! or replay, the operation counters of `Stats` by name, and the on-disk
//! layout for the tests that read or damage segment files by hand.
#![allow(dead_code, reason = "each test binary uses a subset of these helpers")]

use idemkv::storage::FsStorage;
use idemkv::{
    Claim, Durability, Fingerprint, ManualClock, Options, Record, Seen, Stats, Store, Ticket,
};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tempfile::TempDir;

// Stores on a manual clock.

/// Where the manual clock starts, unless a test needs realistic times.
pub const START_MS: u64 = 1_000_000;
/// The lease of stores opened with [`options`].
pub const LEASE_MS: u64 = 1_000;
/// The retention of stores opened with [`options`].
pub const RETENTION_MS: u64 = 10_000;

/// A manual clock reading [`START_MS`].
pub fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(START_MS))
}

/// A scratch directory and a manual clock reading [`START_MS`].
pub fn dir_and_clock() -> (TempDir, Arc<ManualClock>) {
    (tempfile::tempdir().unwrap(), clock())
}

/// Options on `clock`, with a [`LEASE_MS`] lease and a [`RETENTION_MS`]
/// retention.
pub fn options(clock: &Arc<ManualClock>) -> Options {
    Options::new()
        .clock(clock.clone())
        .lease(Duration::from_millis(LEASE_MS))
        .retention(Duration::from_millis(RETENTION_MS))
}

/// Opens `dir` with [`options`].
pub fn open(dir: &Path, clock: &Arc<ManualClock>) -> Store {
    options(clock).open(dir).unwrap()
}

/// A scratch directory, a clock at [`START_MS`] and a store opened on them
/// with [`options`]. Bind the directory to a name (`_dir`, never `_`): it is
/// deleted when dropped.
pub fn fresh_store() -> (TempDir, Arc<ManualClock>, Store) {
    let (dir, clock) = dir_and_clock();
    let store = open(dir.path(), &clock);
    (dir, clock, store)
}

/// `options` with 4 KiB segments, so a few records roll the log over, and
/// responses of up to 1 KiB.
pub fn small_segments(options: Options) -> Options {
    options.segment_size(4096).max_response_len(1024)
}

/// Every durability mode, `Periodic` with `period`.
pub fn durability_modes(period: Duration) -> [Durability; 3] {
    [
        Durability::Immediate,
        Durability::Periodic(period),
        Durability::None,
    ]
}

// Claims that must go one way.

/// The request fingerprint of tests where any one will do.
pub fn fp() -> Fingerprint {
    Fingerprint::of(b"req")
}

/// Claims `key` with [`fp`]; the claim must acquire it.
#[track_caller]
pub fn acquire(store: &Store, key: impl AsRef<[u8]>) -> Ticket {
    acquire_with(store, key, fp())
}

/// Claims `key` with `fp`; the claim must acquire it.
#[track_caller]
pub fn acquire_with(store: &Store, key: impl AsRef<[u8]>, fp: Fingerprint) -> Ticket {
    let key = key.as_ref();
    match store.claim(key, fp).unwrap() {
        Claim::Acquired(t) => t,
        other => panic!(
            "expected Acquired for {}, got {other:?}",
            String::from_utf8_lossy(key)
        ),
    }
}

/// Claims the fresh `key` with `fp` and completes it with `response`.
#[track_caller]
pub fn complete_new(store: &Store, key: impl AsRef<[u8]>, fp: Fingerprint, response: &[u8]) {
    let t = acquire_with(store, key, fp);
    store.complete(t, response).unwrap();
}

/// Claims `key` with [`fp`]; the claim must replay exactly `response`.
#[track_caller]
pub fn assert_replays(store: &Store, key: impl AsRef<[u8]>, response: &[u8]) {
    assert_replays_with(store, key, fp(), response);
}

/// Claims `key` with `fp`; the claim must replay exactly `response`.
#[track_caller]
pub fn assert_replays_with(store: &Store, key: impl AsRef<[u8]>, fp: Fingerprint, response: &[u8]) {
    let key = key.as_ref();
    let shown = String::from_utf8_lossy(key);
    match store.claim(key, fp).unwrap() {
        Claim::Replay(done) => assert_eq!(done.response(), response, "{shown}"),
        other => panic!("expected Replay for {shown}, got {other:?}"),
    }
}

/// `get` must find `key` in progress.
#[track_caller]
pub fn assert_in_progress(store: &Store, key: impl AsRef<[u8]>) {
    let key = key.as_ref();
    let got = store.get(key).unwrap();
    assert!(
        matches!(got, Some(Record::InProgress { .. })),
        "expected {} in progress, got {got:?}",
        String::from_utf8_lossy(key)
    );
}

/// Marks `key` seen for `retain`; the answer must be `want`.
#[track_caller]
pub fn assert_mark_seen(store: &Store, key: impl AsRef<[u8]>, retain: Duration, want: Seen) {
    assert_eq!(store.mark_seen(key, retain).unwrap(), want);
}

// Counters.

/// The operation counters of `Stats`, by name, so a failure says which one
/// is off.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct OpCounts {
    pub claims: u64,
    pub acquired: u64,
    pub replays: u64,
    pub in_progress: u64,
    pub mismatches: u64,
    pub takeovers: u64,
    pub completes: u64,
    pub releases: u64,
    pub lease_extensions: u64,
    pub lease_lost: u64,
    pub removes: u64,
    pub seen_first: u64,
    pub seen_duplicates: u64,
    pub live_keys: u64,
}

impl OpCounts {
    /// The operation counters of `s`.
    pub fn of(s: &Stats) -> Self {
        OpCounts {
            claims: s.claims,
            acquired: s.acquired,
            replays: s.replays,
            in_progress: s.in_progress,
            mismatches: s.mismatches,
            takeovers: s.takeovers,
            completes: s.completes,
            releases: s.releases,
            lease_extensions: s.lease_extensions,
            lease_lost: s.lease_lost,
            removes: s.removes,
            seen_first: s.seen_first,
            seen_duplicates: s.seen_duplicates,
            live_keys: s.live_keys,
        }
    }
}

// On-disk layout, as DESIGN.md draws it.

pub const SEGMENT_HEADER_LEN: usize = 32;
pub const RECORD_HEADER_LEN: usize = 60;
pub const SEGMENT_MAGIC: &[u8; 8] = b"IDEMKVSG";
pub const OFF_VERSION: usize = 8;
pub const OFF_HEADER_CRC: usize = 28;
/// The tag byte of a sync mark (a record header without key or value).
pub const SYNC_MARK_TAG: u8 = 6;

/// Files in `dir` named `*.{ext}`, sorted by name.
fn paths_with_ext(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    paths.sort();
    paths
}

/// Segment files in `dir`, oldest first.
pub fn segment_paths(dir: &Path) -> Vec<PathBuf> {
    paths_with_ext(dir, "seg")
}

/// Hint files in `dir`, oldest segment's first.
pub fn hint_paths(dir: &Path) -> Vec<PathBuf> {
    paths_with_ext(dir, "hint")
}

/// Offset of the segment header's flags; bit 0 marks the claim stream.
pub const OFF_FLAGS: usize = 24;

/// Whether the segment file at `path` belongs to the claim stream.
pub fn is_claim_segment(path: &Path) -> bool {
    let bytes = fs::read(path).unwrap();
    le_u32(&bytes, OFF_FLAGS) & 1 == 1
}

/// The segment files of one stream (`claims` or main) in `dir`, oldest
/// first; the last is the stream's active segment.
pub fn stream_paths(dir: &Path, claims: bool) -> Vec<PathBuf> {
    segment_paths(dir)
        .into_iter()
        .filter(|p| is_claim_segment(p) == claims)
        .collect()
}

/// Main-stream segment files in `dir`, oldest first.
pub fn main_segment_paths(dir: &Path) -> Vec<PathBuf> {
    stream_paths(dir, false)
}

/// Sealed segment files of both streams in `dir`: all but each stream's
/// newest.
pub fn sealed_segment_paths(dir: &Path) -> Vec<PathBuf> {
    let mut sealed = Vec::new();
    for claims in [false, true] {
        let mut paths = stream_paths(dir, claims);
        paths.pop();
        sealed.extend(paths);
    }
    sealed.sort();
    sealed
}

/// Copies the regular files of `from` into `to`.
pub fn copy_dir(from: &Path, to: &Path) {
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

pub fn le_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
}

pub fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

pub fn le_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// One record as found on disk.
#[derive(Debug, Clone)]
pub struct RawRecord {
    pub start: usize,
    pub len: usize,
    pub seq: u64,
    pub key: Vec<u8>,
}

impl RawRecord {
    pub fn end(&self) -> usize {
        self.start + self.len
    }
}

/// Every record of an undamaged segment file, checked as it is walked: the
/// magic, the header checksum, and each record's length and checksum. The
/// walk ends at the file's end or at preallocated space, zeros to the end.
pub fn walk(bytes: &[u8]) -> Vec<RawRecord> {
    assert_eq!(&bytes[..8], SEGMENT_MAGIC);
    assert_eq!(
        crc32fast::hash(&bytes[..OFF_HEADER_CRC]),
        le_u32(bytes, OFF_HEADER_CRC),
        "header checksum"
    );
    let mut out = Vec::new();
    let mut pos = SEGMENT_HEADER_LEN;
    while pos < bytes.len() {
        if bytes[pos..].iter().all(|&b| b == 0) {
            break;
        }
        let key_len = usize::from(le_u16(bytes, pos + 6));
        let value_len = usize::try_from(le_u32(bytes, pos + 8)).unwrap();
        let len = RECORD_HEADER_LEN + key_len + value_len;
        assert!(
            pos + len <= bytes.len(),
            "record at {pos} runs past the end"
        );
        assert_eq!(
            crc32fast::hash(&bytes[pos + 4..pos + len]),
            le_u32(bytes, pos),
            "record checksum at {pos}"
        );
        let key_at = pos + RECORD_HEADER_LEN;
        out.push(RawRecord {
            start: pos,
            len,
            seq: le_u64(bytes, pos + 12),
            key: bytes[key_at..key_at + key_len].to_vec(),
        });
        pos += len;
    }
    out
}

/// The length of a segment file's records: where the walk ends, before any
/// preallocated space.
pub fn written_len(bytes: &[u8]) -> u64 {
    walk(bytes)
        .last()
        .map_or(SEGMENT_HEADER_LEN, RawRecord::end) as u64
}

/// The length of `bytes` up to its last byte that is not zero.
pub fn nonzero_len(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |i| i as u64 + 1)
}

/// Whether `r` is a sync mark rather than a key record.
pub fn is_sync_mark(bytes: &[u8], r: &RawRecord) -> bool {
    bytes[r.start + 4] == SYNC_MARK_TAG
}

/// Removes the sync marks that closing a store appends to the end of each
/// stream's last segment, leaving the files as a process killed right after
/// its last write would have: the tests that damage a tail by hand model a
/// crash, not damage to a cleanly closed store.
pub fn strip_close_marks(dir: &Path) {
    for claims in [false, true] {
        let Some(last) = stream_paths(dir, claims).pop() else {
            continue;
        };
        let mut bytes = fs::read(&last).unwrap();
        let records = walk(&bytes);
        let keep = records
            .iter()
            .rev()
            .take_while(|r| is_sync_mark(&bytes, r))
            .last()
            .map_or(bytes.len(), |r| r.start);
        bytes.truncate(keep);
        fs::write(&last, &bytes).unwrap();
    }
}

/// `(start, len)` of every record of an undamaged segment, checked by [`walk`].
pub fn record_spans(bytes: &[u8]) -> Vec<(usize, usize)> {
    walk(bytes).iter().map(|r| (r.start, r.len)).collect()
}

/// Writes the checksum of a segment header's first bytes into its last four.
pub fn seal_header(bytes: &mut [u8]) {
    let crc = crc32fast::hash(&bytes[..OFF_HEADER_CRC]);
    bytes[OFF_HEADER_CRC..SEGMENT_HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
}

/// Rewrites a segment header's format version and, if asked, its checksum.
pub fn set_version(bytes: &mut [u8], version: u32, fix_crc: bool) {
    bytes[OFF_VERSION..OFF_VERSION + 4].copy_from_slice(&version.to_le_bytes());
    if fix_crc {
        seal_header(bytes);
    }
}

/// A small deterministic generator (xorshift64).
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// The low byte of the next value.
    pub fn byte(&mut self) -> u8 {
        self.next_u64().to_le_bytes()[0]
    }
}

// A file system with a hook on fsync.

/// The real file system, except that `before_sync` runs before every
/// file's `sync_data`: it can fail the fsync (its error is returned and the
/// data is not synced) or hold it.
pub struct SyncHooked {
    before_sync: Arc<dyn Fn() -> std::io::Result<()> + Send + Sync>,
}

impl SyncHooked {
    pub fn new(before_sync: impl Fn() -> std::io::Result<()> + Send + Sync + 'static) -> Self {
        SyncHooked {
            before_sync: Arc::new(before_sync),
        }
    }

    fn wrap(
        &self,
        inner: Arc<dyn idemkv::storage::StorageFile>,
    ) -> Arc<dyn idemkv::storage::StorageFile> {
        Arc::new(HookedFile {
            inner,
            before_sync: self.before_sync.clone(),
        })
    }
}

impl idemkv::storage::Storage for SyncHooked {
    fn create_dir_all(&self, dir: &Path) -> std::io::Result<()> {
        FsStorage.create_dir_all(dir)
    }
    fn list(&self, dir: &Path) -> std::io::Result<Vec<String>> {
        FsStorage.list(dir)
    }
    fn open(&self, path: &Path) -> std::io::Result<Arc<dyn idemkv::storage::StorageFile>> {
        FsStorage.open(path).map(|f| self.wrap(f))
    }
    fn create(&self, path: &Path) -> std::io::Result<Arc<dyn idemkv::storage::StorageFile>> {
        FsStorage.create(path).map(|f| self.wrap(f))
    }
    fn remove(&self, path: &Path) -> std::io::Result<()> {
        FsStorage.remove(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        FsStorage.rename(from, to)
    }
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        FsStorage.sync_dir(dir)
    }
    fn lock_dir(&self, dir: &Path) -> std::io::Result<idemkv::storage::DirLock> {
        FsStorage.lock_dir(dir)
    }
}

struct HookedFile {
    inner: Arc<dyn idemkv::storage::StorageFile>,
    before_sync: Arc<dyn Fn() -> std::io::Result<()> + Send + Sync>,
}

impl idemkv::storage::StorageFile for HookedFile {
    fn len(&self) -> std::io::Result<u64> {
        self.inner.len()
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.inner.read_exact_at(offset, buf)
    }
    fn write_all_at(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.inner.write_all_at(offset, data)
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        (self.before_sync)()?;
        self.inner.sync_data()
    }
    fn map(&self) -> std::io::Result<idemkv::storage::SealedBytes> {
        self.inner.map()
    }
}
