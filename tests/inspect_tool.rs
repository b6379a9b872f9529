//! The inspect API (`idemkv::inspect`) and the `idemkv` tool built on it, on
//! real store directories: clean, with a damaged segment, with damaged hint
//! files, with expired records to compact, and held open by a `Store`.
//!
//! The tests that run the binary need the `cli` feature
//! (`cargo test --features cli`); the library's own tests run without it.

use idemkv::inspect::{self, DumpedRecord};
use idemkv::{Claim, Error, Fingerprint, Options, Seen, Store};
use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// Held by every test for its whole run. A child process started by one
/// test holds copies of this process's file descriptors until it execs,
/// the directory lock of another test's `Store` included; that other test
/// could then see its own closed store as `Locked`. One test at a time
/// closes that window.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// 4 KiB segments, so the records below fill several, and compaction that
/// only writes hint files and drops expired segments (never rewrites).
fn options() -> Options {
    Options::new()
        .segment_size(idemkv::MIN_SEGMENT_SIZE)
        .max_response_len(1024)
        .background_compaction(false)
        .compaction_threshold(0.0)
}

fn key(i: u32) -> String {
    format!("tenant-{}:POST /charges:{i}", i % 3)
}

fn response(i: u32) -> Vec<u8> {
    format!("{{\"charge\": \"ch_{i}\", \"status\": 201}}").into_bytes()
}

/// A key that needs escaping on one line.
const ODD_KEY: &[u8] = b"odd\"key\n";
/// A key whose response is not UTF-8.
const BINARY_KEY: &str = "binary-response";
const BINARY_RESPONSE: &[u8] = b"\xff\x00\x01";
const KEYS: u32 = 120;
const SEEN: u32 = 10;

/// What `populate` wrote.
#[derive(Debug, Default)]
struct Written {
    /// Records per tag, and in all.
    tags: BTreeMap<&'static str, u64>,
    records: u64,
    /// Keys present at the end: completed, in progress, seen.
    live: u64,
}

impl Written {
    fn count(&mut self, tag: &'static str) {
        *self.tags.entry(tag).or_default() += 1;
        self.records += 1;
    }
}

/// Claims, completions, releases, removals, abandoned claims and seen
/// marks over several segments, then a compaction pass that writes the
/// sealed segments' hint files; the store is closed on return.
fn populate(dir: &Path, options: Options) -> Written {
    let store = options.open(dir).unwrap();
    let mut w = Written::default();
    let claim = |store: &Store, w: &mut Written, key: &[u8]| {
        let Claim::Acquired(t) = store.claim(key, Fingerprint::of(key)).unwrap() else {
            panic!("a fresh key is acquired")
        };
        w.count("claim");
        t
    };
    for i in 0..KEYS {
        let k = key(i);
        let t = claim(&store, &mut w, k.as_bytes());
        match i % 6 {
            3 => {
                store.release(t).unwrap();
                w.count("release");
            }
            4 => {
                drop(t); // abandoned: in progress until its lease passes
                w.live += 1;
            }
            5 => {
                store.complete(t, &response(i)).unwrap();
                w.count("complete");
                assert!(store.remove(&k).unwrap());
                w.count("remove");
            }
            _ => {
                store.complete(t, &response(i)).unwrap();
                w.count("complete");
                w.live += 1;
            }
        }
    }
    for (k, value) in [
        (ODD_KEY, &b"odd"[..]),
        (BINARY_KEY.as_bytes(), BINARY_RESPONSE),
    ] {
        let t = claim(&store, &mut w, k);
        store.complete(t, value).unwrap();
        w.count("complete");
        w.live += 1;
    }
    for i in 0..SEEN {
        let seen = store
            .mark_seen(format!("msg-{i}"), Duration::from_secs(3600))
            .unwrap();
        assert_eq!(seen, Seen::First);
        w.count("seen");
        w.live += 1;
    }
    let report = store.compact().unwrap();
    assert_eq!(
        (report.segments_dropped, report.segments_rewritten),
        (0, 0),
        "nothing expired yet: compaction only writes hint files"
    );
    drop(store);
    let files = inspect::segment_files(dir).unwrap();
    assert!(files.len() >= 4, "several segments: {}", files.len());
    let hinted = files.iter().filter(|f| f.hint_bytes.is_some()).count();
    // All but the newest segment of each stream are sealed.
    assert_eq!(hinted, files.len() - 2, "every sealed segment has a hint");
    w
}

/// An owned copy of a dumped record.
#[derive(Debug, Clone)]
struct Rec {
    file: PathBuf,
    offset: u64,
    len: u64,
    tag: &'static str,
    seq: u64,
    key: Vec<u8>,
}

fn dump_all(dir: &Path) -> (Vec<Rec>, idemkv::Result<idemkv::VerifyReport>) {
    let mut recs = Vec::new();
    let report = inspect::dump(dir, |r: &DumpedRecord<'_>| {
        recs.push(Rec {
            file: r.file.to_path_buf(),
            offset: r.offset,
            len: r.len,
            tag: r.tag,
            seq: r.seq,
            key: r.key.to_vec(),
        });
        ControlFlow::Continue(())
    });
    (recs, report)
}

fn hint(dir: &Path, id: u32) -> PathBuf {
    dir.join(format!("{id:010}.hint"))
}

/// Sequence numbers (with the segment file each is in) are unique, even in
/// the main stream's segments and odd in the claim stream's.
fn assert_seqs_unique_per_stream<'a>(seqs: impl Iterator<Item = (&'a Path, u64)>) {
    let mut all = Vec::new();
    for (file, seq) in seqs {
        let bytes = std::fs::read(file).unwrap();
        let claims = bytes[24] & 1 == 1;
        assert_eq!(seq % 2, u64::from(claims), "{}: seq {seq}", file.display());
        all.push(seq);
    }
    let n = all.len();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), n, "sequence numbers are unique");
}

fn flip(path: &Path, at: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at] ^= 0x40;
    std::fs::write(path, bytes).unwrap();
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

/// Changes entry 0's expiry in the hint of segment 1 and fixes both of the
/// hint's checksums, so the hint passes every check yet lies about its
/// segment. Returns the byte changed.
fn forge_hint(dir: &Path) -> usize {
    const ENTRY0_TIME: usize = 64 + 8;
    let path = hint(dir, 1);
    let mut b = std::fs::read(&path).unwrap();
    assert_eq!(
        le_u32(&b, 52),
        crc32fast::hash(&b[64..]),
        "entries checksum at 52"
    );
    assert_eq!(
        le_u32(&b, 60),
        crc32fast::hash(&b[..60]),
        "header checksum at 60"
    );
    b[ENTRY0_TIME] ^= 0x01;
    let entries_crc = crc32fast::hash(&b[64..]);
    b[52..56].copy_from_slice(&entries_crc.to_le_bytes());
    let crc = crc32fast::hash(&b[..60]);
    b[60..64].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&path, b).unwrap();
    ENTRY0_TIME
}

#[test]
fn dump_hands_out_every_record_in_log_order_back_to_back() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let written = populate(dir.path(), options());
    let (recs, report) = dump_all(dir.path());
    let report = report.unwrap();
    // Sync marks come with the records: at least the two closing ones.
    assert!(report.sync_marks >= 2, "{report:?}");
    assert_eq!(recs.len() as u64, written.records + report.sync_marks);
    assert_eq!(report.records, written.records);
    let mut tags = BTreeMap::new();
    for r in &recs {
        *tags.entry(r.tag).or_insert(0u64) += 1;
    }
    assert_eq!(tags.remove("sync-mark"), Some(report.sync_marks));
    assert_eq!(tags, written.tags);
    // Each stream numbers its own entries, the main stream even and the
    // claim stream odd, so no two entries share a number.
    assert_seqs_unique_per_stream(recs.iter().map(|r| (r.file.as_path(), r.seq)));
    let files = inspect::segment_files(dir.path()).unwrap();
    for f in &files {
        let mine: Vec<&Rec> = recs.iter().filter(|r| r.file == f.path).collect();
        assert!(
            mine.windows(2).all(|w| w[0].seq < w[1].seq),
            "{}: sequence numbers grow within a segment",
            f.path.display()
        );
        let mut at = 32;
        for r in &mine {
            assert_eq!(
                r.offset,
                at,
                "{}: records follow one another",
                f.path.display()
            );
            at += r.len;
        }
        assert_eq!(
            at,
            f.bytes,
            "{}: the last record ends the file",
            f.path.display()
        );
    }
    assert!(recs.iter().any(|r| r.key == ODD_KEY));

    // Stopping early hands out no more.
    let mut n = 0;
    inspect::dump(dir.path(), |_| {
        n += 1;
        if n == 5 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .unwrap();
    assert_eq!(n, 5);
}

#[test]
fn verify_reports_progress_up_to_the_bytes_of_every_file() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let written = populate(dir.path(), options());
    let files = inspect::segment_files(dir.path()).unwrap();
    let total: u64 = files
        .iter()
        .map(|f| f.bytes + f.hint_bytes.unwrap_or(0))
        .sum();
    let mut calls = Vec::new();
    let report = inspect::verify(dir.path(), |done, total| calls.push((done, total))).unwrap();
    assert_eq!(report.records, written.records);
    assert_eq!(report.hints, files.len() as u64 - 2);
    assert!(report.damaged_hints.is_empty());
    assert_eq!(calls.first(), Some(&(0, total)));
    assert_eq!(calls.last(), Some(&(total, total)));
    assert!(calls.windows(2).all(|w| w[0].0 <= w[1].0), "{calls:?}");
    assert!(
        calls.len() > files.len(),
        "at least once per file: {calls:?}"
    );
}

#[test]
fn verify_tells_an_ignored_hint_from_one_open_would_trust() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path(), options());

    // Bit rot in a hint entry: open ignores the hint, so it is reported,
    // not an error.
    flip(&hint(dir.path(), 2), 64 + 24 + 3);
    let report = idemkv::verify(dir.path()).unwrap();
    assert_eq!(report.damaged_hints.len(), 1, "{report:?}");
    let damaged = &report.damaged_hints[0];
    assert_eq!(damaged.file, hint(dir.path(), 2));
    assert_eq!(damaged.offset, 64 + 24 + 3);
    assert!(damaged.reason.contains("entry 1"), "{}", damaged.reason);
    // Open reads the segment instead and writes the hint again.
    drop(options().open(dir.path()).unwrap());
    let report = idemkv::verify(dir.path()).unwrap();
    assert!(report.damaged_hints.is_empty(), "{report:?}");

    // A hint whose checksums hold but whose entry lies would be trusted.
    let at = forge_hint(dir.path());
    match idemkv::verify(dir.path()) {
        Err(Error::Corrupt { file, offset, .. }) => {
            assert_eq!(file, hint(dir.path(), 1));
            assert_eq!(offset, at as u64);
        }
        other => panic!("a lying hint is corruption: {other:?}"),
    }
}

#[test]
fn dump_and_verify_refuse_a_store_that_is_open_and_a_missing_directory() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path(), options());
    let store = options().open(dir.path()).unwrap();
    assert!(matches!(
        inspect::dump(dir.path(), |_| ControlFlow::Continue(())),
        Err(Error::Locked)
    ));
    assert!(matches!(
        inspect::verify(dir.path(), |_, _| {}),
        Err(Error::Locked)
    ));
    drop(store);

    let missing = dir.path().join("missing");
    match inspect::dump(&missing, |_| ControlFlow::Continue(())) {
        Err(Error::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::NotFound),
        other => panic!("{other:?}"),
    }
    assert!(!missing.exists(), "nothing creates the directory");
}

/// The tests that run the `idemkv` binary.
#[cfg(feature = "cli")]
mod tool {
    use super::*;
    use idemkv::ManualClock;
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    use std::process::{Command, Output};
    use std::sync::Arc;

    const ABSENT: i32 = 1;
    const CORRUPT: i32 = 2;
    const LOCKED: i32 = 3;
    const LOST: i32 = 5;
    const USAGE: i32 = 64;
    const NO_STORE: i32 = 66;

    fn exec<I: AsRef<OsStr>>(args: impl IntoIterator<Item = I>) -> Output {
        Command::new(env!("CARGO_BIN_EXE_idemkv"))
            .args(args)
            .output()
            .expect("run idemkv")
    }

    fn run(args: &[&dyn AsRef<OsStr>]) -> Output {
        exec(args.iter().map(|a| a.as_ref()))
    }

    fn seg(dir: &Path, id: u32) -> PathBuf {
        dir.join(format!("{id:010}.seg"))
    }

    fn stdout(o: &Output) -> String {
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn stderr(o: &Output) -> String {
        String::from_utf8_lossy(&o.stderr).into_owned()
    }

    #[track_caller]
    fn assert_exit(o: &Output, code: i32) {
        assert_eq!(
            o.status.code(),
            Some(code),
            "stdout:\n{}\nstderr:\n{}",
            stdout(o),
            stderr(o)
        );
        assert!(!stderr(o).contains("panicked"), "{}", stderr(o));
    }

    /// The value on the `name  value` line of `text`.
    #[track_caller]
    fn field<'a>(text: &'a str, name: &str) -> &'a str {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(name)
                    .filter(|rest| rest.starts_with(' '))
                    .map(str::trim)
            })
            .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
    }

    #[test]
    fn stats_counts_the_records_and_files_of_a_closed_store() {
        let _serial = serial();
        let dir = tempfile::tempdir().unwrap();
        let w = populate(dir.path(), options());
        let segments = inspect::segment_files(dir.path()).unwrap().len();
        let o = run(&[&"stats", &dir.path()]);
        assert_exit(&o, 0);
        let text = stdout(&o);
        assert_eq!(field(&text, "live_keys"), w.live.to_string());
        assert_eq!(field(&text, "recovered_records"), w.records.to_string());
        assert_eq!(field(&text, "segments"), segments.to_string());
        assert_eq!(
            field(&text, "segments_opened_from_hints"),
            (segments - 2).to_string()
        );
        assert_eq!(field(&text, "poisoned"), "false");
        assert!(
            text.contains(&format!("files: {segments} segment files")),
            "{text}"
        );
        assert!(
            text.contains(&format!("{} hint files", segments - 2)),
            "{text}"
        );
    }

    #[test]
    fn get_prints_each_kind_of_record_and_exits_1_for_an_absent_key() {
        let _serial = serial();
        let dir = tempfile::tempdir().unwrap();
        populate(dir.path(), options());

        let k = key(7);
        let o = run(&[&"get", &dir.path(), &k]);
        assert_exit(&o, 0);
        let text = stdout(&o);
        assert_eq!(field(&text, "state"), "completed");
        let fp = format!("{:032x}", Fingerprint::of(&k).as_u128());
        assert_eq!(field(&text, "fingerprint"), fp);
        assert!(
            text.ends_with(&format!("{}\n", String::from_utf8(response(7)).unwrap())),
            "{text}"
        );
        assert!(field(&text, "completed").ends_with(')'), "{text}");

        let o = run(&[&"get", &dir.path(), &key(4)]);
        assert_exit(&o, 0);
        assert_eq!(field(&stdout(&o), "state"), "in progress");

        let o = run(&[&"get", &dir.path(), &"msg-3"]);
        assert_exit(&o, 0);
        assert_eq!(field(&stdout(&o), "state"), "seen");

        let o = run(&[&"get", &dir.path(), &BINARY_KEY]);
        assert_exit(&o, 0);
        let text = stdout(&o);
        assert!(text.contains("not UTF-8"), "{text}");
        assert!(text.ends_with("ff0001\n"), "{text}");

        let o = run(&[&"get", &dir.path(), &OsStr::from_bytes(ODD_KEY)]);
        assert_exit(&o, 0);
        assert_eq!(field(&stdout(&o), "key"), r#""odd\"key\n""#);

        for absent in [key(3), key(5), "never-written".to_string()] {
            let o = run(&[&"get", &dir.path(), &absent]);
            assert_exit(&o, ABSENT);
            assert!(stderr(&o).contains("no record for key"), "{}", stderr(&o));
            assert!(stdout(&o).is_empty());
        }
    }

    #[test]
    fn dump_prints_every_record_in_order_one_a_line() {
        let _serial = serial();
        let dir = tempfile::tempdir().unwrap();
        let w = populate(dir.path(), options());
        let o = run(&[&"dump", &dir.path()]);
        assert_exit(&o, 0);
        let text = stdout(&o);
        let lines: Vec<&str> = text.lines().collect();
        let marks = lines.iter().filter(|l| l.contains(" sync-mark ")).count() as u64;
        assert!(marks >= 2, "the closing sync marks are listed: {text}");
        assert_eq!(lines.len() as u64, w.records + marks, "{text}");
        let mut tags = BTreeMap::new();
        let mut last: Option<(String, u64)> = None;
        let mut seqs = Vec::new();
        for line in &lines {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (file, offset, tag, seq) = (cols[0], cols[1], cols[2], cols[3]);
            let offset: u64 = offset.parse().unwrap();
            assert!(file.ends_with(".seg"), "{line}");
            seqs.push((
                dir.path().join(file),
                seq.strip_prefix("seq=").unwrap().parse::<u64>().unwrap(),
            ));
            match &last {
                Some((f, o)) if f == file => assert!(offset > *o, "{line}"),
                Some((f, _)) => assert!(file > f.as_str(), "segments in order: {line}"),
                None => {}
            }
            if last.as_ref().is_none_or(|(f, _)| f != file) {
                assert_eq!(offset, 32, "a segment's first record: {line}");
            }
            last = Some((file.to_string(), offset));
            *tags.entry(tag.to_string()).or_insert(0u64) += 1;
        }
        let want: BTreeMap<String, u64> = w.tags.iter().map(|(t, n)| (t.to_string(), *n)).collect();
        assert_eq!(tags.remove("sync-mark"), Some(marks));
        assert_eq!(tags, want);
        assert_seqs_unique_per_stream(seqs.iter().map(|(f, seq)| (f.as_path(), *seq)));
        let first = lines
            .iter()
            .find(|l| l.contains(" claim ") && l.ends_with(&format!("key=\"{}\"", key(0))))
            .unwrap();
        assert!(first.contains(" claim "), "{first}");
        assert!(first.contains("lease_until=20"), "{first}");
        assert!(
            text.contains(r#"key="odd\"key\n""#),
            "escaped on one line:\n{text}"
        );
        assert!(
            stderr(&o).contains(&format!("{} records", w.records)),
            "{}",
            stderr(&o)
        );
    }

    #[test]
    fn verify_passes_a_clean_store_and_names_the_byte_of_damage() {
        let _serial = serial();
        let dir = tempfile::tempdir().unwrap();
        let w = populate(dir.path(), options());
        let o = run(&[&"verify", &dir.path()]);
        assert_exit(&o, 0);
        assert!(
            stdout(&o).contains(&format!("{} records", w.records)),
            "{}",
            stdout(&o)
        );
        assert!(
            stderr(&o).is_empty(),
            "no progress bar off a terminal: {:?}",
            stderr(&o)
        );

        // A flipped byte in the middle of a sealed segment.
        let (recs, _) = dump_all(dir.path());
        let path = seg(dir.path(), 2);
        let at = std::fs::metadata(&path).unwrap().len() / 2;
        let hit = recs
            .iter()
            .position(|r| r.file == path && (r.offset..r.offset + r.len).contains(&at))
            .unwrap();
        flip(&path, at as usize);
        let o = run(&[&"verify", &dir.path()]);
        assert_exit(&o, CORRUPT);
        let err = stderr(&o);
        assert!(err.contains("0000000002.seg"), "{err}");
        assert!(
            err.contains(&format!("at byte {}", recs[hit].offset)),
            "{err}"
        );

        // Dump prints what comes before the damage, then names it.
        let o = run(&[&"dump", &dir.path()]);
        assert_exit(&o, CORRUPT);
        assert_eq!(stdout(&o).lines().count(), hit);
        assert!(
            stderr(&o).contains(&format!("at byte {}", recs[hit].offset)),
            "{}",
            stderr(&o)
        );
    }

    #[test]
    fn repair_salvages_reports_and_exits_nonzero_only_when_records_are_lost() {
        let _serial = serial();
        let dir = tempfile::tempdir().unwrap();
        let w = populate(dir.path(), options());

        // A sound store: nothing to do.
        let o = run(&[&"repair", &dir.path()]);
        assert_exit(&o, 0);
        assert!(stdout(&o).contains("no damage found"), "{}", stdout(&o));

        // A flipped byte in a sealed segment: the record is skipped and
        // lost, the rest kept, the damaged file kept aside.
        let path = seg(dir.path(), 2);
        let at = std::fs::metadata(&path).unwrap().len() / 2;
        flip(&path, at as usize);
        let o = run(&[&"verify", &dir.path()]);
        assert_exit(&o, CORRUPT);
        let o = run(&[&"repair", &dir.path()]);
        assert_exit(&o, LOST);
        let out = stdout(&o);
        assert!(
            out.contains("repaired") && out.contains("0000000002.seg"),
            "{out}"
        );
        assert!(out.contains("lost 1"), "{out}");
        assert!(
            stderr(&o).contains("1 records that had been fsynced"),
            "{}",
            stderr(&o)
        );
        assert!(dir.path().join("0000000002.seg.damaged").exists());
        let o = run(&[&"verify", &dir.path()]);
        assert_exit(&o, 0);
        assert!(
            stdout(&o).contains(&format!("{} records", w.records - 1)),
            "{}",
            stdout(&o)
        );
        // Repairing again finds nothing.
        let o = run(&[&"repair", &dir.path()]);
        assert_exit(&o, 0);
        assert!(stdout(&o).contains("no damage found"), "{}", stdout(&o));
    }

    #[test]
    fn verify_reports_damaged_and_lying_hint_files() {
        let _serial = serial();
        let dir = tempfile::tempdir().unwrap();
        populate(dir.path(), options());

        flip(&hint(dir.path(), 1), 20);
        let o = run(&[&"verify", &dir.path()]);
        assert_exit(&o, CORRUPT);
        let err = stderr(&o);
        assert!(err.contains("0000000001.hint at byte 20"), "{err}");
        assert!(err.contains("header"), "{err}");
        assert!(err.contains("no record is at risk"), "{err}");
        // Open rewrites it, and the store verifies clean again.
        drop(options().open(dir.path()).unwrap());
        assert_exit(&run(&[&"verify", &dir.path()]), 0);

        let at = forge_hint(dir.path());
        let o = run(&[&"verify", &dir.path()]);
        assert_exit(&o, CORRUPT);
        let err = stderr(&o);
        assert!(
            err.contains(&format!("0000000001.hint at byte {at}")),
            "{err}"
        );
        assert!(err.contains("passes its checksums"), "{err}");
    }

    #[test]
    fn compact_drops_expired_segments_and_prints_the_report() {
        let _serial = serial();
        let dir = tempfile::tempdir().unwrap();
        // Written in 2023 with a one-minute retention: long expired by the
        // tool's clock.
        let clock = Arc::new(ManualClock::new(1_700_000_000_000));
        populate(
            dir.path(),
            options()
                .clock(clock)
                .retention(Duration::from_secs(60))
                .lease(Duration::from_secs(10)),
        );
        let before = inspect::segment_files(dir.path()).unwrap().len();
        let o = run(&[&"compact", &dir.path()]);
        assert_exit(&o, 0);
        let text = stdout(&o);
        // Everything but each stream's active segment.
        assert_eq!(field(&text, "segments_dropped"), (before - 2).to_string());
        assert_eq!(field(&text, "segments_rewritten"), "0");
        assert!(
            field(&text, "segments").starts_with(&format!("{before} -> 2")),
            "{text}"
        );
        assert_eq!(inspect::segment_files(dir.path()).unwrap().len(), 2);
        assert_exit(&run(&[&"verify", &dir.path()]), 0);

        // Nothing more to do the second time.
        let o = run(&[&"compact", &dir.path()]);
        assert_exit(&o, 0);
        assert_eq!(field(&stdout(&o), "segments_dropped"), "0");
    }

    #[test]
    fn every_command_refuses_a_store_held_open_with_the_locked_code() {
        let _serial = serial();
        let dir = tempfile::tempdir().unwrap();
        populate(dir.path(), options());
        let store = options().open(dir.path()).unwrap();
        let d = dir.path();
        for args in [
            vec!["stats", d.to_str().unwrap()],
            vec!["get", d.to_str().unwrap(), "msg-1"],
            vec!["dump", d.to_str().unwrap()],
            vec!["verify", d.to_str().unwrap()],
            vec!["compact", d.to_str().unwrap()],
        ] {
            let o = exec(&args);
            assert_exit(&o, LOCKED);
            assert!(
                stderr(&o).contains("already open"),
                "{args:?}: {}",
                stderr(&o)
            );
            assert!(stdout(&o).is_empty(), "{args:?}: {}", stdout(&o));
        }
        // The store it refused is untouched and still works.
        assert_eq!(
            store.mark_seen("msg-1", Duration::from_secs(1)).unwrap(),
            Seen::Duplicate
        );
        drop(store);
        assert_exit(&run(&[&"stats", &d]), 0);
    }

    #[test]
    fn bad_usage_and_directories_without_a_store_are_explained() {
        let _serial = serial();
        let o = exec::<&str>([]);
        assert_exit(&o, USAGE);
        assert!(stderr(&o).contains("usage: idemkv"), "{}", stderr(&o));
        let o = run(&[&"--help"]);
        assert_exit(&o, 0);
        assert!(stdout(&o).contains("usage: idemkv"));
        assert_exit(&run(&[&"get", &"/tmp"]), USAGE);
        assert_exit(&run(&[&"frobnicate", &"/tmp"]), USAGE);

        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        for cmd in ["stats", "dump", "verify", "compact"] {
            let o = run(&[&cmd, &missing]);
            assert_exit(&o, NO_STORE);
            assert!(stderr(&o).contains("no such directory"), "{}", stderr(&o));
        }
        assert!(!missing.exists(), "no command creates the directory");

        let o = run(&[&"stats", &dir.path()]);
        assert_exit(&o, NO_STORE);
        assert!(stderr(&o).contains("no segment files"), "{}", stderr(&o));
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "nothing is written into a directory without a store"
        );
    }
}
