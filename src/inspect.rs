//! Looking inside a closed store directory without opening it: its files,
//! every record in log order, and a [`verify`] that reports its progress.
//! The `idemkv` command-line tool (the `cli` feature) is built on these.
//!
//! Each function that reads records takes the directory's lock for its
//! duration, so it answers [`Error::Locked`](crate::Error::Locked) while a `Store` has the
//! directory open, in this process or another, and a `Store` cannot open it
//! meanwhile.
//!
//! ```
//! # fn main() -> idemkv::Result<()> {
//! # let dir = tempfile::tempdir().unwrap();
//! # let store = idemkv::Store::open(dir.path())?;
//! # assert!(store.mark_seen("order-7", std::time::Duration::from_secs(60))? == idemkv::Seen::First);
//! # drop(store);
//! use std::ops::ControlFlow;
//!
//! let mut lines = Vec::new();
//! let report = idemkv::inspect::dump(dir.path(), |rec| {
//!     // Closing the store wrote a sync mark after the record.
//!     if rec.tag != "sync-mark" {
//!         assert_eq!((rec.tag, rec.key), ("seen", &b"order-7"[..]));
//!         lines.push(rec.to_string());
//!     }
//!     ControlFlow::Continue(())
//! })?;
//! assert_eq!((report.records, report.sync_marks), (1, 1));
//! assert!(lines[0].starts_with("0000000001.seg"), "{}", lines[0]);
//! assert!(lines[0].ends_with(r#"key="order-7""#), "{}", lines[0]);
//! # Ok(())
//! # }
//! ```

use crate::error::{Result, io_context};
use crate::fingerprint::Fingerprint;
use crate::format::hint::hint_file_name;
use crate::format::record::{Decoded, SYNC_MARK_LEN, Tag, encoded_len};
use crate::format::segment::{parse_segment_file_name, segment_file_name};
use crate::options::lock_dir;
use crate::reports::VerifyReport;
use crate::storage::{FsStorage, Storage};
use std::fmt;
use std::io;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

/// One segment file of a store directory, and its hint file if present.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SegmentFile {
    /// The segment id, the number in the file name.
    pub id: u32,
    /// The segment file.
    pub path: PathBuf,
    /// Its length in bytes.
    pub bytes: u64,
    /// The length of its hint file, if it has one.
    pub hint_bytes: Option<u64>,
}

/// The segment files in `dir`, oldest first, with their sizes. Reads only
/// the directory and file metadata, and takes no lock.
///
/// A missing directory is an [`Error::Io`](crate::Error::Io) of kind `NotFound`; a directory
/// without segment files gives an empty list (it holds no store).
pub fn segment_files(dir: impl AsRef<Path>) -> Result<Vec<SegmentFile>> {
    let dir = dir.as_ref();
    let names = FsStorage
        .list(dir)
        .map_err(|e| io_context("list", dir, e))?;
    let mut ids: Vec<u32> = names
        .iter()
        .filter_map(|n| parse_segment_file_name(n))
        .collect();
    ids.sort_unstable();
    ids.into_iter()
        .map(|id| {
            let path = dir.join(segment_file_name(id));
            let bytes = file_len(&path)?.unwrap_or(0);
            let hint_bytes = file_len(&dir.join(hint_file_name(id)))?;
            Ok(SegmentFile {
                id,
                path,
                bytes,
                hint_bytes,
            })
        })
        .collect()
}

fn file_len(path: &Path) -> Result<Option<u64>> {
    match std::fs::metadata(path) {
        Ok(m) => Ok(Some(m.len())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_context("stat", path, e)),
    }
}

/// One record as [`dump`] finds it on disk.
///
/// Its `Display` is a single line: the segment file name, the offset, the
/// kind, then `name=value` fields, with the key last, quoted and escaped
/// (`\xNN` for bytes outside printable ASCII), and the value's length (not
/// the value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct DumpedRecord<'a> {
    /// The segment file the record is in.
    pub file: &'a Path,
    /// The segment id.
    pub segment: u32,
    /// Where the record starts in the file.
    pub offset: u64,
    /// The record's encoded length, header included.
    pub len: u64,
    /// The record kind: `claim`, `complete`, `release`, `remove` or `seen`,
    /// or `sync-mark` for a sync mark (DESIGN.md §3), which has no key.
    pub tag: &'static str,
    /// The sequence number: one higher for every record in the store.
    pub seq: u64,
    /// The fencing generation: the sequence number of the claim that
    /// acquired the key (a `seen` record's own sequence number).
    pub generation: u64,
    /// The request fingerprint (zero for tombstones and `seen`).
    pub fingerprint: Fingerprint,
    /// `claimed_at_ms` (claim), `completed_at_ms` (complete), `seen_at_ms`
    /// (seen), or when the key was released or removed, in unix ms.
    pub time_a_ms: u64,
    /// `lease_expires_at_ms` (claim), `expires_at_ms` (complete, seen), zero
    /// for tombstones.
    pub time_b_ms: u64,
    /// The key.
    pub key: &'a [u8],
    /// The value: the stored response of a `complete`, empty otherwise.
    pub value: &'a [u8],
    /// For a `sync-mark`: how many bytes of its segment were durable when
    /// it was written. Zero for records.
    pub synced_len: u64,
}

impl<'a> DumpedRecord<'a> {
    fn new(file: &'a Path, segment: u32, offset: u32, entry: &Decoded<'a>) -> Self {
        let rec = match entry {
            Decoded::Record(rec) => rec,
            Decoded::SyncMark(mark) => {
                return DumpedRecord {
                    file,
                    segment,
                    offset: u64::from(offset),
                    len: SYNC_MARK_LEN as u64,
                    tag: "sync-mark",
                    seq: mark.seq,
                    generation: 0,
                    fingerprint: Fingerprint::from_u128(0),
                    time_a_ms: mark.written_at_ms,
                    time_b_ms: 0,
                    key: &[],
                    value: &[],
                    synced_len: mark.synced_len,
                };
            }
        };
        DumpedRecord {
            file,
            segment,
            offset: u64::from(offset),
            len: encoded_len(rec.key.len(), rec.value.len()) as u64,
            tag: tag_name(rec.tag),
            seq: rec.seq,
            generation: rec.generation,
            fingerprint: Fingerprint::from_u128(rec.fingerprint),
            time_a_ms: rec.since_ms,
            time_b_ms: rec.until_ms,
            key: rec.key,
            value: rec.value,
            synced_len: 0,
        }
    }
}

fn tag_name(tag: Tag) -> &'static str {
    match tag {
        Tag::Claim => "claim",
        Tag::Complete => "complete",
        Tag::Release => "release",
        Tag::Remove => "remove",
        Tag::Seen => "seen",
    }
}

impl fmt::Display for DumpedRecord<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.file.file_name().map_or_else(
            || self.file.display().to_string(),
            |n| n.to_string_lossy().into(),
        );
        if self.tag == "sync-mark" {
            return write!(
                f,
                "{name} {:>10} {:<8} seq={} synced_len={} written={}",
                self.offset,
                self.tag,
                self.seq,
                self.synced_len,
                UnixMs(self.time_a_ms)
            );
        }
        write!(
            f,
            "{name} {:>10} {:<8} seq={} gen={} fp={} ",
            self.offset,
            self.tag,
            self.seq,
            self.generation,
            Hex(self.fingerprint),
        )?;
        let (a, b) = match self.tag {
            "claim" => ("claimed", Some("lease_until")),
            "complete" => ("completed", Some("expires")),
            "seen" => ("seen", Some("expires")),
            "release" => ("released", None),
            _ => ("removed", None),
        };
        write!(f, "{a}={}", UnixMs(self.time_a_ms))?;
        if let Some(b) = b {
            write!(f, " {b}={}", UnixMs(self.time_b_ms))?;
        }
        write!(
            f,
            " value_len={} key=\"{}\"",
            self.value.len(),
            Escaped(self.key)
        )
    }
}

/// Every record and sync mark of every segment in `dir`, in log order, handed to `each`
/// until it answers `Break`. Reads the segment files directly (no `Store`
/// is opened and nothing is written) and checks each record as `verify`
/// does, so damage ends the dump with [`Error::Corrupt`](crate::Error::Corrupt) after the records
/// before it were handed out. A torn tail is not an error: the report's
/// `torn_tail_bytes` counts it. Hint files are not read.
///
/// [`Error::Locked`](crate::Error::Locked) if a `Store` has the directory open.
pub fn dump(
    dir: impl AsRef<Path>,
    mut each: impl FnMut(&DumpedRecord<'_>) -> ControlFlow<()>,
) -> Result<VerifyReport> {
    let dir = dir.as_ref();
    let storage = FsStorage;
    let _lock = lock_store_dir(&storage, dir)?;
    crate::maintenance::walk(
        &storage,
        dir,
        &mut |path, loc, rec| each(&DumpedRecord::new(path, loc.segment, loc.offset, rec)),
        &mut |_, _| {},
        false,
    )
}

/// [`verify`](crate::verify), calling `progress(done, total)` with the
/// bytes of segment and hint files checked so far and in all: at the start,
/// after each file, and at least every MiB within a segment. `done` never
/// decreases and ends equal to `total`.
///
/// [`Error::Locked`](crate::Error::Locked) if a `Store` has the directory open; [`Error::Corrupt`](crate::Error::Corrupt)
/// names the first damaged file and byte.
pub fn verify(dir: impl AsRef<Path>, mut progress: impl FnMut(u64, u64)) -> Result<VerifyReport> {
    let dir = dir.as_ref();
    let storage = FsStorage;
    let _lock = lock_store_dir(&storage, dir)?;
    crate::maintenance::verify_in(&storage, dir, &mut progress)
}

/// Locks `dir`, which must exist: taking the lock creates the `LOCK` file,
/// and a typo should not leave a new directory behind.
fn lock_store_dir(storage: &dyn Storage, dir: &Path) -> Result<crate::storage::DirLock> {
    if !dir.is_dir() {
        return Err(io_context(
            "open",
            dir,
            io::Error::new(io::ErrorKind::NotFound, "no such directory"),
        ));
    }
    lock_dir(storage, dir)
}

/// A unix time in milliseconds, displayed as UTC in ISO 8601 with
/// milliseconds: `2023-11-14T22:13:20.000Z`. Zero displays as `-`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnixMs(pub u64);

impl fmt::Display for UnixMs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("-");
        }
        let secs = self.0 / 1000;
        let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2);
        let (year, month, day) = civil_from_days(days);
        let in_day = secs % 86_400;
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
            in_day / 3600,
            in_day / 60 % 60,
            in_day % 60,
            self.0 % 1000
        )
    }
}

/// The proleptic Gregorian date `days` after 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    // Count from 0000-03-01 so that the leap day ends each 400-year era's
    // years; an era is 146 097 days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    // Months from March, of 153 days per five.
    let mp = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Bytes displayed as printable ASCII, with `\\`, `\"`, `\'`, `\n`, `\r`,
/// `\t` and `\xNN` escapes for everything else, so that any key fits on one
/// line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Escaped<'a>(pub &'a [u8]);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &b in self.0 {
            for c in std::ascii::escape_default(b) {
                fmt::Write::write_char(f, char::from(c))?;
            }
        }
        Ok(())
    }
}

/// A fingerprint as 32 lowercase hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hex(pub Fingerprint);

impl fmt::Display for Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0.as_u128())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_display_as_utc() {
        assert_eq!(UnixMs(0).to_string(), "-");
        assert_eq!(UnixMs(1).to_string(), "1970-01-01T00:00:00.001Z");
        assert_eq!(
            UnixMs(1_700_000_000_000).to_string(),
            "2023-11-14T22:13:20.000Z"
        );
        // Leap days, century rules and the last millisecond of a year.
        assert_eq!(
            UnixMs(951_782_400_000).to_string(),
            "2000-02-29T00:00:00.000Z"
        );
        assert_eq!(
            UnixMs(4_107_542_399_999).to_string(),
            "2100-02-28T23:59:59.999Z"
        );
        assert_eq!(
            UnixMs(4_107_542_400_000).to_string(),
            "2100-03-01T00:00:00.000Z"
        );
        assert_eq!(
            UnixMs(1_735_689_599_999).to_string(),
            "2024-12-31T23:59:59.999Z"
        );
        // Every day for 500 years: consecutive, each month the right length.
        let mut prev = civil_from_days(-1);
        for days in 0..(500 * 366) {
            let (y, m, d) = civil_from_days(days);
            let next_day = (prev.0, prev.1, prev.2 + 1);
            let next_month = (prev.0, prev.1 + 1, 1);
            let next_year = (prev.0 + 1, 1, 1);
            assert!(
                [next_day, next_month, next_year].contains(&(y, m, d)),
                "{prev:?} -> {:?}",
                (y, m, d)
            );
            if (y, m, d) != next_day {
                let leap = prev.0 % 4 == 0 && (prev.0 % 100 != 0 || prev.0 % 400 == 0);
                let len = [
                    31,
                    if leap { 29 } else { 28 },
                    31,
                    30,
                    31,
                    30,
                    31,
                    31,
                    30,
                    31,
                    30,
                    31,
                ];
                assert_eq!(prev.2, len[prev.1 as usize - 1], "{prev:?}");
            }
            prev = (y, m, d);
        }
    }

    #[test]
    fn keys_escape_onto_one_line() {
        assert_eq!(Escaped(b"tenant:POST /x").to_string(), "tenant:POST /x");
        assert_eq!(
            Escaped(b"a\"b\\c\nd\xff").to_string(),
            "a\\\"b\\\\c\\nd\\xff"
        );
    }

    #[test]
    fn a_dumped_record_is_one_line() {
        let rec = crate::format::record::RecordRef {
            tag: Tag::Complete,
            seq: 7,
            fingerprint: 0x1122,
            generation: 5,
            since_ms: 1_700_000_000_000,
            until_ms: 1_700_086_400_000,
            key: b"k\n1",
            value: b"ok",
        };
        let line = DumpedRecord::new(Path::new("/d/0000000003.seg"), 3, 32, &Decoded::Record(rec))
            .to_string();
        assert_eq!(
            line,
            "0000000003.seg         32 complete seq=7 gen=5 \
             fp=00000000000000000000000000001122 completed=2023-11-14T22:13:20.000Z \
             expires=2023-11-15T22:13:20.000Z value_len=2 key=\"k\\n1\""
        );
        let mark = crate::format::record::SyncMark {
            seq: 8,
            synced_len: 4096,
            written_at_ms: 1_700_000_000_000,
        };
        let line = DumpedRecord::new(
            Path::new("/d/0000000003.seg"),
            3,
            92,
            &Decoded::SyncMark(mark),
        )
        .to_string();
        assert_eq!(
            line,
            "0000000003.seg         92 sync-mark seq=8 synced_len=4096 \
             written=2023-11-14T22:13:20.000Z"
        );
    }
}
