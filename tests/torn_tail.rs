//! Torn tails: a crash that leaves the main stream's last segment cut short,
//! garbled, padded with zeros, or a new segment with only part of its header
//! loses only the record that was being written. Open cuts the torn bytes off
//! (and counts them) before anything new is appended, so later writes survive
//! a reopen.
//!
//! Every case works on a copy of one store directory, damaged by hand at a
//! chosen byte, and checks every key against the state the workload left
//! after every record that was wholly written: each key's state is the one
//! its last surviving record set, whichever stream holds it.

mod common;

use common::{
    RECORD_HEADER_LEN, RawRecord, SEGMENT_HEADER_LEN, SEGMENT_MAGIC, XorShift, acquire_with,
    copy_dir, seal_header, segment_paths, stream_paths, strip_close_marks, walk,
};
use idemkv::{Claim, Durability, FORMAT_VERSION, Fingerprint, ManualClock, Options, Record, Store};
use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tempfile::TempDir;

const START_MS: u64 = 1_700_000_000_000;
/// How far the clock moves after every write, so every record has its own times.
const STEP_MS: u64 = 3;
const LEASE_MS: u64 = 60_000;
const RETENTION_MS: u64 = 86_400_000;
/// Small segments, so the workload spans two or three of them.
const SEGMENT_SIZE: u64 = 4096;
/// How many records at the end of the last segment are cut at every byte.
const TAIL_RECORDS: usize = 4;
/// An upper bound on the bytes of those four records.
const TAIL_BYTES_MAX: u64 = 400;
/// An upper bound on the bytes of one claim record of the workload.
const CLAIM_BYTES_MAX: u64 = 80;
/// The claim stream's segment size for these options: a quarter of
/// `SEGMENT_SIZE`, but room for a sync mark and a claim with the longest
/// key (1 KiB).
const CLAIM_SEGMENT_SIZE: u64 = 32 + 60 + 60 + 1024;

/// The state of one key, as `Store::get` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expect {
    Absent,
    InProgress {
        fingerprint: Fingerprint,
        claimed_at_ms: u64,
        lease_expires_at_ms: u64,
    },
    Completed {
        response: Vec<u8>,
        fingerprint: Fingerprint,
        completed_at_ms: u64,
        expires_at_ms: u64,
    },
}

/// A store directory written by the workload, and what each record did.
struct Fixture {
    dir: TempDir,
    /// One entry per record, in log order: the key and its state after it.
    records: Vec<(String, Expect)>,
    /// The sequence number of each of those records.
    seqs: Vec<u64>,
    /// The clock reading at the end of the workload; reopens use it.
    end_ms: u64,
}

fn options(now_ms: u64) -> Options {
    Options::new()
        .durability(Durability::Immediate)
        .clock(Arc::new(ManualClock::new(now_ms)))
        .lease(Duration::from_millis(LEASE_MS))
        .retention(Duration::from_millis(RETENTION_MS))
        .segment_size(SEGMENT_SIZE)
        // Files exactly as long as what was written, so each case below
        // is one crash state, byte for byte (`tests/preallocation.rs`
        // covers preallocated files).
        .preallocate(false)
        .max_response_len(1024)
        // No background compactor: closing then only syncs and writes its
        // marks (stripped from the fixture, as a crash would leave the
        // files), and every record written stays on disk to be counted.
        .background_compaction(false)
}

fn fingerprint_of(key: &str) -> Fingerprint {
    Fingerprint::of(format!("POST /orders body for {key}"))
}

/// A response of varied length with binary bytes, ending in a non-zero byte.
fn response(i: usize) -> Vec<u8> {
    let mut r = format!("201 order {i}:").into_bytes();
    r.extend((0..(i * 7) % 90).map(|j| u8::try_from((i * 31 + j * 17) % 256).unwrap()));
    r.push(b'!');
    r
}

/// Writes through a store, recording what each record does to its key.
struct Workload {
    store: Store,
    clock: Arc<ManualClock>,
    records: Vec<(String, Expect)>,
}

impl Workload {
    fn now_ms(&self) -> u64 {
        idemkv::Clock::now_ms(&*self.clock)
    }

    fn claim(&mut self, key: &str) -> idemkv::Ticket {
        let now_ms = self.now_ms();
        let fingerprint = fingerprint_of(key);
        let ticket = acquire_with(&self.store, key, fingerprint);
        self.records.push((
            key.to_owned(),
            Expect::InProgress {
                fingerprint,
                claimed_at_ms: now_ms,
                lease_expires_at_ms: now_ms + LEASE_MS,
            },
        ));
        self.clock.advance(Duration::from_millis(STEP_MS));
        ticket
    }

    fn complete(&mut self, ticket: idemkv::Ticket, response: &[u8]) {
        let now_ms = self.now_ms();
        let key = String::from_utf8(ticket.key().to_vec()).unwrap();
        let fingerprint = ticket.fingerprint();
        self.store.complete(ticket, response).unwrap();
        self.records.push((
            key,
            Expect::Completed {
                response: response.to_vec(),
                fingerprint,
                completed_at_ms: now_ms,
                expires_at_ms: now_ms + RETENTION_MS,
            },
        ));
        self.clock.advance(Duration::from_millis(STEP_MS));
    }

    fn release(&mut self, ticket: idemkv::Ticket) {
        let key = String::from_utf8(ticket.key().to_vec()).unwrap();
        self.store.release(ticket).unwrap();
        self.records.push((key, Expect::Absent));
        self.clock.advance(Duration::from_millis(STEP_MS));
    }
}

/// Completed keys, in-progress claims and releases over two or three
/// segments, ending with four records in the last segment whose loss each
/// changes a different key's state.
fn build() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(START_MS));
    let store = options(START_MS)
        .clock(clock.clone())
        .open(dir.path())
        .unwrap();
    let mut w = Workload {
        store,
        clock,
        records: Vec::new(),
    };
    for i in 0..48 {
        let key = format!("order-{i}");
        let ticket = w.claim(&key);
        if i % 6 == 5 {
            drop(ticket); // left in progress
        } else if i % 9 == 4 {
            w.release(ticket);
        } else {
            w.complete(ticket, &response(i));
        }
    }
    // Fillers until the newest segment holds a few records and has room for
    // the whole tail, so the tail cases cut inside one segment.
    for i in 0.. {
        let newest = stream_paths(dir.path(), false).pop().unwrap();
        let len = fs::metadata(newest).unwrap().len();
        let claims = stream_paths(dir.path(), true).pop().unwrap();
        let claims_len = fs::metadata(claims).unwrap().len();
        if len >= 256
            && len + TAIL_BYTES_MAX <= SEGMENT_SIZE
            && claims_len >= 4 * CLAIM_BYTES_MAX
            && claims_len + 2 * CLAIM_BYTES_MAX <= CLAIM_SEGMENT_SIZE
        {
            break;
        }
        let ticket = w.claim(&format!("filler-{i}"));
        w.complete(ticket, &response(i));
    }
    // The tail: a claim lost, a claim kept but its completion lost, and so on.
    let a = w.claim("tail-a");
    let b = w.claim("tail-b");
    w.complete(b, b"202 accepted: tail-b, response bytes \x00\x01\x02 end");
    w.complete(a, b"201 created: tail-a, the very last record of the log!");
    let end_ms = w.now_ms();
    let records = w.records;
    drop(w.store);
    // The tail cases model a crash after the last write, so the files are
    // left as that crash would leave them: without the closing sync marks.
    strip_close_marks(dir.path());

    let fx = Fixture {
        dir,
        records,
        seqs: Vec::new(),
        end_ms,
    };
    let main = stream_paths(fx.dir.path(), false);
    assert!(
        (2..=4).contains(&main.len()),
        "the workload should span a few main segments, found {}",
        main.len()
    );
    let on_disk: Vec<RawRecord> = segment_paths(fx.dir.path())
        .iter()
        .flat_map(|p| walk(&fs::read(p).unwrap()))
        .collect();
    assert_eq!(on_disk.len(), fx.records.len(), "one record per write");
    // A key's records keep its writes' order (their sequence numbers rise),
    // so the n-th record of a key on disk is the key's n-th write.
    let mut by_key: BTreeMap<Vec<u8>, Vec<u64>> = BTreeMap::new();
    for r in &on_disk {
        by_key.entry(r.key.clone()).or_default().push(r.seq);
    }
    for seqs in by_key.values_mut() {
        seqs.sort_unstable();
    }
    let mut taken: BTreeMap<&str, usize> = BTreeMap::new();
    let seqs: Vec<u64> = fx
        .records
        .iter()
        .map(|(k, _)| {
            let n = taken.entry(k).or_default();
            *n += 1;
            by_key[k.as_bytes()][*n - 1]
        })
        .collect();
    let distinct: std::collections::BTreeSet<u64> = seqs.iter().copied().collect();
    assert_eq!(distinct.len(), seqs.len(), "sequence numbers are unique");
    let fx = Fixture { seqs, ..fx };
    for claims in [false, true] {
        let last = walk(&fs::read(stream_paths(fx.dir.path(), claims).pop().unwrap()).unwrap());
        assert!(
            last.len() > TAIL_RECORDS,
            "the last segment holds {} records; the tail cases need more than {TAIL_RECORDS}",
            last.len()
        );
    }
    fx
}

/// A fresh copy of the fixture's directory, in which `damage` is applied to
/// the bytes of the last segment of the main stream, or the claim stream if
/// `claims`.
fn damaged_copy(fx: &Fixture, claims: bool, damage: impl FnOnce(&mut Vec<u8>)) -> TempDir {
    let copy = tempfile::tempdir().unwrap();
    copy_dir(fx.dir.path(), copy.path());
    let last = stream_paths(copy.path(), claims).pop().unwrap();
    let mut bytes = fs::read(&last).unwrap();
    damage(&mut bytes);
    fs::write(&last, &bytes).unwrap();
    copy
}

/// Each key's state after every record but the `lost` ones (by sequence
/// number).
fn expected_after(fx: &Fixture, lost: &[u64]) -> BTreeMap<String, Expect> {
    let mut state: BTreeMap<String, Expect> = fx
        .records
        .iter()
        .map(|(k, _)| (k.clone(), Expect::Absent))
        .collect();
    for (seq, (key, after)) in fx.seqs.iter().zip(&fx.records) {
        if !lost.contains(seq) {
            state.insert(key.clone(), after.clone());
        }
    }
    state
}

fn observed(store: &Store, key: &str) -> Expect {
    match store.get(key).unwrap() {
        None => Expect::Absent,
        Some(Record::InProgress {
            fingerprint,
            claimed_at_ms,
            lease_expires_at_ms,
        }) => Expect::InProgress {
            fingerprint,
            claimed_at_ms,
            lease_expires_at_ms,
        },
        Some(Record::Completed(c)) => Expect::Completed {
            response: c.response().to_vec(),
            fingerprint: c.fingerprint(),
            completed_at_ms: c.completed_at_ms(),
            expires_at_ms: c.expires_at_ms(),
        },
        Some(other) => panic!("{key}: the workload never marks keys seen, got {other:?}"),
    }
}

fn check_keys(store: &Store, expected: &BTreeMap<String, Expect>, ctx: &str) {
    for (key, want) in expected {
        assert_eq!(&observed(store, key), want, "{ctx}: key {key}");
    }
}

/// What recovery of a damaged copy must find.
struct Outcome<'a> {
    /// Records wholly written before the damage, over all segments.
    whole_records: usize,
    /// Sequence numbers of the records the damage took.
    lost: Vec<u64>,
    /// Bytes `stats().torn_tail_bytes_truncated` must report.
    torn_bytes: u64,
    /// The file whose torn tail is cut, and its length once open has cut
    /// it; no length if open must remove the file.
    tail_file: &'a Path,
    tail_len: Option<u64>,
}

/// Sequence numbers of `recs` that end past `cut`.
fn lost_after(recs: &[RawRecord], cut: usize) -> Vec<u64> {
    recs.iter()
        .filter(|r| r.end() > cut)
        .map(|r| r.seq)
        .collect()
}

/// Opens the damaged copy, checks every key and the cut, writes more, and
/// checks that a second open sees everything with nothing torn.
fn verify_recovery(fx: &Fixture, dir: &Path, want: &Outcome<'_>, ctx: &str) {
    let mut expected = expected_after(fx, &want.lost);
    let store = options(fx.end_ms)
        .open(dir)
        .unwrap_or_else(|e| panic!("{ctx}: open failed: {e}"));
    let stats = store.stats();
    assert_eq!(
        stats.torn_tail_bytes_truncated, want.torn_bytes,
        "{ctx}: torn tail bytes"
    );
    assert_eq!(
        stats.recovered_records,
        u64::try_from(want.whole_records).unwrap(),
        "{ctx}: recovered records"
    );
    check_keys(&store, &expected, ctx);
    assert_eq!(
        fs::metadata(want.tail_file).ok().map(|m| m.len()),
        want.tail_len,
        "{ctx}: the torn tail must be cut off the file (or the file removed) before anything \
         is appended"
    );

    // New writes after recovery.
    let fp = fingerprint_of("after-recovery");
    let Claim::Acquired(t) = store.claim("after-recovery", fp).unwrap() else {
        panic!("{ctx}: a fresh key after recovery must be acquired");
    };
    store.complete(t, b"written after recovery").unwrap();
    let pending_fp = fingerprint_of("after-recovery-pending");
    let Claim::Acquired(t) = store.claim("after-recovery-pending", pending_fp).unwrap() else {
        panic!("{ctx}: a fresh key after recovery must be acquired");
    };
    drop(t);
    drop(store);
    expected.insert(
        "after-recovery".into(),
        Expect::Completed {
            response: b"written after recovery".to_vec(),
            fingerprint: fp,
            completed_at_ms: fx.end_ms,
            expires_at_ms: fx.end_ms + RETENTION_MS,
        },
    );
    expected.insert(
        "after-recovery-pending".into(),
        Expect::InProgress {
            fingerprint: pending_fp,
            claimed_at_ms: fx.end_ms,
            lease_expires_at_ms: fx.end_ms + LEASE_MS,
        },
    );

    let store = options(fx.end_ms)
        .open(dir)
        .unwrap_or_else(|e| panic!("{ctx}: second open failed: {e}"));
    let stats = store.stats();
    assert_eq!(
        stats.torn_tail_bytes_truncated, 0,
        "{ctx}: nothing is torn on the second open"
    );
    assert_eq!(
        stats.recovered_records,
        u64::try_from(want.whole_records + 3).unwrap(),
        "{ctx}: the second open finds the recovered records and the three new ones"
    );
    check_keys(&store, &expected, &format!("{ctx} (second open)"));
}

/// The last segment of the main stream (or the claim stream if `claims`):
/// its path, its bytes, its records, and how many records the other
/// segments (of both streams) hold.
fn last_segment(fx: &Fixture, claims: bool) -> (String, Vec<u8>, Vec<RawRecord>, usize) {
    let last = stream_paths(fx.dir.path(), claims).pop().unwrap();
    let before: usize = segment_paths(fx.dir.path())
        .iter()
        .filter(|p| **p != last)
        .map(|p| walk(&fs::read(p).unwrap()).len())
        .sum();
    let last = &last;
    let bytes = fs::read(last).unwrap();
    let recs = walk(&bytes);
    let name = last.file_name().unwrap().to_str().unwrap().to_owned();
    (name, bytes, recs, before)
}

/// What open does to a last segment whose valid records end at `kept`:
/// the torn bytes it counts (from `kept` to the last byte that is not zero;
/// zeros after it are space never written, such as preallocated space) and
/// the file's length after it (cut to `kept` if anything was torn, else as
/// it was).
fn torn_tail(bytes: &[u8], kept: usize) -> (u64, u64) {
    let len = |n: usize| u64::try_from(n).unwrap();
    match common::nonzero_len(&bytes[kept..]) {
        0 => (0, len(bytes.len())),
        torn => (torn, len(kept)),
    }
}

#[test]
fn truncation_at_every_byte_of_the_last_records_loses_only_the_cut_record() {
    truncate_every_byte_of_the_tail(false);
}

#[test]
fn truncation_at_every_byte_of_the_last_claims_loses_only_the_cut_claim() {
    // A claim cut off while its complete survives in the main stream: the
    // key is completed, as the complete says.
    truncate_every_byte_of_the_tail(true);
}

/// Cuts the last segment of the main stream (or the claim stream) at every
/// byte of its last records.
fn truncate_every_byte_of_the_tail(claims: bool) {
    let fx = build();
    let (name, original, recs, before) = last_segment(&fx, claims);
    let from = recs[recs.len() - TAIL_RECORDS].start;
    let mut cut_points = 0;
    for cut in from..=original.len() {
        let whole: Vec<&RawRecord> = recs.iter().filter(|r| r.end() <= cut).collect();
        let boundary = whole.last().map_or(SEGMENT_HEADER_LEN, |r| r.end());
        let copy = damaged_copy(&fx, claims, |b| b.truncate(cut));
        let tail_file = copy.path().join(&name);
        let (torn_bytes, tail_len) = torn_tail(&original[..cut], boundary);
        verify_recovery(
            &fx,
            copy.path(),
            &Outcome {
                whole_records: before + whole.len(),
                lost: lost_after(&recs, cut),
                torn_bytes,
                tail_file: &tail_file,
                tail_len: Some(tail_len),
            },
            &format!("{name} cut to {cut} bytes (last whole record ends at {boundary})"),
        );
        cut_points += 1;
    }
    println!(
        "torn_tail: checked {cut_points} truncation points over the last {TAIL_RECORDS} records \
         ({from}..={} of {name})",
        original.len()
    );
    assert!(cut_points > TAIL_RECORDS * RECORD_HEADER_LEN);
}

#[derive(Debug, Clone, Copy)]
enum Garble {
    /// Invert the one byte at the offset.
    FlipByte,
    /// Overwrite from the offset to the end with zeros.
    ZerosToEnd,
    /// Overwrite from the offset to the end with 0xFF.
    OnesToEnd,
    /// Overwrite from the offset to the end with pseudo-random bytes.
    RandomToEnd,
}

#[test]
fn garbling_any_byte_of_the_final_record_drops_only_that_record() {
    let fx = build();
    let (name, original, recs, before) = last_segment(&fx, false);
    let last = recs.last().unwrap().clone();
    assert_eq!(last.end(), original.len());
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut cases = 0;
    let mut unchanged = 0;
    for offset in last.start..last.end() {
        for mode in [
            Garble::FlipByte,
            Garble::ZerosToEnd,
            Garble::OnesToEnd,
            Garble::RandomToEnd,
        ] {
            let mut damaged = original.clone();
            match mode {
                Garble::FlipByte => damaged[offset] ^= 0xFF,
                Garble::ZerosToEnd => damaged[offset..].fill(0),
                Garble::OnesToEnd => damaged[offset..].fill(0xFF),
                Garble::RandomToEnd => damaged[offset..].iter_mut().for_each(|b| *b = rng.byte()),
            }
            // Garbage equal to what was there is no damage at all.
            let intact = damaged == original;
            unchanged += usize::from(intact);
            let kept = if intact { last.end() } else { last.start };
            let (torn_bytes, tail_len) = torn_tail(&damaged, kept);
            let copy = damaged_copy(&fx, false, |b| *b = damaged);
            let tail_file = copy.path().join(&name);
            verify_recovery(
                &fx,
                copy.path(),
                &Outcome {
                    whole_records: before + recs.len() - usize::from(!intact),
                    lost: lost_after(&recs, kept),
                    torn_bytes,
                    tail_file: &tail_file,
                    tail_len: Some(tail_len),
                },
                &format!(
                    "{name}: final record ({}..{}) garbled by {mode:?} at byte {offset}",
                    last.start,
                    last.end()
                ),
            );
            cases += 1;
        }
    }
    println!(
        "torn_tail: checked {cases} garbled final records ({} byte offsets x 4 patterns, \
         {unchanged} left the bytes as they were)",
        last.len
    );
}

#[test]
fn zeros_after_the_records_are_kept_and_a_torn_write_before_them_is_cut() {
    let fx = build();
    let (name, original, recs, before) = last_segment(&fx, false);
    let last = recs.last().unwrap().clone();
    let to_segment_size = usize::try_from(SEGMENT_SIZE).unwrap() - original.len();
    // (where the written bytes end, how many zero bytes follow)
    let cases = [
        (original.len(), 4096),
        (original.len(), to_segment_size),
        (original.len(), 1),
        (original.len(), RECORD_HEADER_LEN - 1),
        (original.len(), RECORD_HEADER_LEN),
        (original.len(), RECORD_HEADER_LEN + 1),
        (last.start, 4096),
        (last.start + 1, 4096),
        (last.start + RECORD_HEADER_LEN, 4096),
        (last.end() - 1, 4096),
    ];
    for (cut, zeros) in cases {
        let mut bytes = original[..cut].to_vec();
        bytes.resize(cut + zeros, 0);
        let whole = recs.iter().filter(|r| r.end() <= cut).count();
        let boundary = recs[..whole].last().unwrap().end();
        // Zeros right after the last record: preallocated space, kept,
        // nothing torn. A part of a record before them: cut with them.
        let (torn_bytes, tail_len) = torn_tail(&bytes, boundary);
        assert_eq!(torn_bytes == 0, cut == boundary);
        let copy = damaged_copy(&fx, false, |b| *b = bytes);
        let tail_file = copy.path().join(&name);
        verify_recovery(
            &fx,
            copy.path(),
            &Outcome {
                whole_records: before + whole,
                lost: lost_after(&recs, boundary),
                torn_bytes,
                tail_file: &tail_file,
                tail_len: Some(tail_len),
            },
            &format!("{name} written to {cut} bytes, then {zeros} zero bytes"),
        );
    }
    println!("torn_tail: checked {} zero-filled tails", cases.len());
}

#[test]
fn a_new_segment_with_only_part_of_its_header_opens() {
    let fx = build();
    let (_, _, recs, before) = last_segment(&fx, false);
    let newest = segment_paths(fx.dir.path()).pop().unwrap();
    let newest_id: u32 = newest
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let next_id = newest_id + 1;
    let next_name = format!("{next_id:010}.seg");
    let mut header = [0u8; SEGMENT_HEADER_LEN];
    header[..8].copy_from_slice(SEGMENT_MAGIC);
    header[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    header[12..16].copy_from_slice(&next_id.to_le_bytes());
    header[16..24].copy_from_slice(&(fx.records.len() as u64 + 1).to_le_bytes());
    seal_header(&mut header);

    // Contents of the new file.
    let mut files: Vec<Vec<u8>> = (0..SEGMENT_HEADER_LEN)
        .map(|k| header[..k].to_vec())
        .collect();
    files.push(header.to_vec()); // a complete header and no records: nothing torn
    files.push(vec![0; SEGMENT_HEADER_LEN]);
    files.push(vec![0; 4096]);
    files.push(vec![0xFF; SEGMENT_HEADER_LEN]);
    let mut bad_crc = header;
    bad_crc[31] ^= 0x01;
    files.push(bad_crc.to_vec());

    let whole_records = before + recs.len();
    for contents in &files {
        // Bytes of a header that is not whole, up to the last that is not
        // zero: a file of zeros is space never written.
        let torn = match contents[..] == header[..] {
            true => 0,
            false => common::nonzero_len(contents),
        };
        let copy = tempfile::tempdir().unwrap();
        copy_dir(fx.dir.path(), copy.path());
        let new_file = copy.path().join(&next_name);
        fs::write(&new_file, contents).unwrap();
        verify_recovery(
            &fx,
            copy.path(),
            &Outcome {
                whole_records,
                lost: Vec::new(),
                torn_bytes: torn,
                tail_file: &new_file,
                // A whole header stays (an empty main segment); a torn one
                // is removed with its file.
                tail_len: (contents[..] == header[..])
                    .then(|| u64::try_from(SEGMENT_HEADER_LEN).unwrap()),
            },
            &format!(
                "{next_name} holding {} bytes {:02x?}",
                contents.len(),
                &contents[..contents.len().min(SEGMENT_HEADER_LEN)]
            ),
        );
    }
    println!(
        "torn_tail: checked {} partial or blank headers of a new last segment",
        files.len()
    );
}
