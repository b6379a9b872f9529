//! A power cut that persists the pages of one unsynced write out of order:
//! an earlier page lost, a later one kept, holding complete, valid records
//! that were never fsynced or acknowledged. The store opens, keeps a prefix
//! of each stream (everything acknowledged, never a record from after the
//! hole), and still reports damage to data that was fsynced as `Corrupt`;
//! `verify` calls such a tail torn, and `repair` keeps prefixes only.
//!
//! Format versions before 3 refused such a store (a valid record follows the
//! bad bytes), so a busy server that lost power could not start until
//! someone ran `repair`.

mod common;

use common::{stream_paths, strip_close_marks, walk, written_len};
use idemkv::storage::{PageFate, SimStorage, Storage, UnsyncedPage};
use idemkv::{Claim, Durability, Error, Fingerprint, ManualClock, Options, Record, Store, Ticket};
use std::path::Path;
use std::sync::Arc;

const DIR: &str = "/store";

fn options(sim: &SimStorage, durability: Durability) -> Options {
    Options::new()
        .storage(Arc::new(sim.clone()))
        .clock(Arc::new(ManualClock::new(1_700_000_000_000)))
        .durability(durability)
        .segment_size(SEGMENT_SIZE)
        .max_response_len(4096)
        .background_compaction(false)
}

/// Big enough that the pending batches of these tests stay in one segment.
const SEGMENT_SIZE: u64 = 64 << 10;

fn key(i: usize) -> String {
    format!("tenant-7:POST /v1/charges:{i:05}")
}

fn response(i: usize) -> Vec<u8> {
    format!("{{\"id\":\"ch_{i:05}\",\"status\":\"succeeded\"}}").into_bytes()
}

fn acquire(store: &Store, i: usize) -> Ticket {
    match store.claim(key(i), Fingerprint::of(key(i))).unwrap() {
        Claim::Acquired(t) => t,
        other => panic!("{}: {other:?}", key(i)),
    }
}

/// The main stream's active segment file, by its header flag.
fn main_segment(sim: &SimStorage) -> std::path::PathBuf {
    let dir = Path::new(DIR);
    let mut names = sim.list(dir).unwrap();
    names.sort();
    names
        .iter()
        .filter(|n| n.ends_with(".seg"))
        .map(|n| dir.join(n))
        .rfind(|p| sim.read_file(p).unwrap()[24] & 1 == 0)
        .unwrap()
}

/// Writes `durable` pairs and syncs them, then `pending` more pairs that a
/// failed fsync leaves written but never acknowledged as durable. Returns
/// the main segment and its durable length.
fn durable_then_pending(
    sim: &SimStorage,
    durable: usize,
    pending: usize,
) -> (std::path::PathBuf, u64) {
    let store = options(sim, Durability::None).open(DIR).unwrap();
    for i in 0..durable {
        let t = acquire(&store, i);
        store.complete(t, &response(i)).unwrap();
    }
    store.sync().unwrap();
    let main = main_segment(sim);
    let durable_len = written_len(&sim.read_file(&main).unwrap());
    for i in durable..durable + pending {
        let t = acquire(&store, i);
        store.complete(t, &response(i)).unwrap();
    }
    // The write of the batch reaches the page cache; its fsync fails.
    sim.fail(idemkv::storage::SimOp::Sync, 1, std::io::ErrorKind::Other);
    assert!(store.sync().is_err());
    drop(store);
    (main, durable_len)
}

/// Checks keys `0..durable` completed, and that of the keys after them a
/// prefix (in write order) is completed and the rest are not.
fn check_prefix(store: &Store, durable: usize, pending: usize) -> usize {
    let mut completed = durable;
    for i in 0..durable + pending {
        match store.get(key(i)).unwrap() {
            Some(Record::Completed(c)) => {
                assert_eq!(c.response(), &response(i)[..], "{}", key(i));
                if i >= durable {
                    assert_eq!(
                        completed,
                        i,
                        "{}: completed after a key that was not",
                        key(i)
                    );
                    completed = i + 1;
                }
            }
            other => assert!(
                i >= durable,
                "{}: acknowledged durable, got {other:?}",
                key(i)
            ),
        }
    }
    completed
}

#[test]
fn an_earlier_page_lost_and_a_later_one_kept_opens_with_a_prefix() {
    let sim = SimStorage::new();
    let (main, durable_len) = durable_then_pending(&sim, 20, 80);
    let mut lost_pages = 0;
    sim.power_loss_with(1, |page: &UnsyncedPage<'_>| {
        // The main stream's batch loses its first page and keeps the rest;
        // everything else survives.
        if page.path == main && page.offset == durable_len {
            lost_pages += 1;
            PageFate::Lost
        } else {
            PageFate::Kept
        }
    });
    assert_eq!(lost_pages, 1, "the batch starts inside a page");
    let file = sim.read_file(&main).unwrap();
    let hole_end = durable_len.next_multiple_of(4096) as usize;
    assert!(file.len() > hole_end + 1000, "a later page survived");
    assert!(file[durable_len as usize..hole_end].iter().all(|&b| b == 0));

    let store = options(&sim, Durability::Immediate).open(DIR).unwrap();
    let completed = check_prefix(&store, 20, 80);
    assert_eq!(completed, 20, "nothing after the hole came back");
    let stats = store.stats();
    assert_eq!(
        stats.torn_tail_bytes_truncated,
        common::nonzero_len(&file) - durable_len,
        "the main stream is cut where the hole starts"
    );
    // The failed fsync (of the main stream, which had more to sync)
    // poisoned the store before the claim stream's batch was written, so
    // the keys after the hole are absent.
    assert_eq!(store.get(key(50)).unwrap(), None);
    // And the store takes writes that survive a reopen.
    let t = acquire(&store, 1000);
    store.complete(t, b"after").unwrap();
    drop(store);
    let store = options(&sim, Durability::Immediate).open(DIR).unwrap();
    assert!(matches!(
        store.get(key(1000)).unwrap(),
        Some(Record::Completed(_))
    ));
}

#[test]
fn every_page_fate_of_the_batch_opens_with_a_prefix() {
    // Each page of the pending batch kept or lost, in every combination of
    // its first pages, sectors torn and garbled in between.
    let fates = [
        PageFate::Kept,
        PageFate::Lost,
        PageFate::Zeroed,
        PageFate::Garbled,
        PageFate::Torn,
    ];
    let mut opened = 0;
    for pattern in 0..fates.len().pow(3) {
        let sim = SimStorage::new();
        let (_, _) = durable_then_pending(&sim, 10, 120);
        sim.power_loss_with(pattern as u64, |page| {
            let digit = (pattern / fates.len().pow(page.page.min(2) as u32)) % fates.len();
            fates[digit]
        });
        let store = options(&sim, Durability::Immediate)
            .open(DIR)
            .unwrap_or_else(|e| panic!("pattern {pattern}: open refused: {e}"));
        check_prefix(&store, 10, 120);
        opened += 1;
    }
    assert_eq!(opened, 125);
}

#[test]
fn damage_before_a_sync_mark_is_corrupt_and_after_it_is_a_torn_tail() {
    // Durable writes, one fsync each, across more than a page, so that the
    // main segment holds sync marks attesting its durable length.
    let dir = tempfile::tempdir().unwrap();
    let opts = || {
        Options::new()
            .clock(Arc::new(ManualClock::new(1_700_000_000_000)))
            .segment_size(SEGMENT_SIZE)
            .max_response_len(4096)
            .background_compaction(false)
    };
    let store = opts().open(dir.path()).unwrap();
    for i in 0..120 {
        let t = acquire(&store, i);
        store.complete(t, &response(i)).unwrap();
    }
    drop(store);
    // As a crash right after the last write would leave it.
    strip_close_marks(dir.path());
    let main = stream_paths(dir.path(), false).pop().unwrap();
    let bytes = std::fs::read(&main).unwrap();
    let entries = walk(&bytes);
    let marks: Vec<u64> = entries
        .iter()
        .filter(|r| common::is_sync_mark(&bytes, r))
        .map(|r| common::le_u64(&bytes, r.start + 36))
        .collect();
    assert!(!marks.is_empty(), "the segment has sync marks");
    let attested = *marks.iter().max().unwrap() as usize;
    let records: Vec<_> = entries
        .iter()
        .filter(|r| !common::is_sync_mark(&bytes, r))
        .collect();

    // A byte flipped in a record below the attested length: damage.
    let before = records.iter().rfind(|r| r.end() <= attested).unwrap();
    let copy = tempfile::tempdir().unwrap();
    common::copy_dir(dir.path(), copy.path());
    let mut damaged = bytes.clone();
    damaged[before.start + 62] ^= 0x01;
    std::fs::write(copy.path().join(main.file_name().unwrap()), &damaged).unwrap();
    match opts().open(copy.path()) {
        Err(Error::Corrupt { offset, reason, .. }) => {
            assert_eq!(offset, before.start as u64);
            assert!(reason.contains("sync mark"), "{reason}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert!(matches!(
        idemkv::verify(copy.path()),
        Err(Error::Corrupt { .. })
    ));

    // The same flip past everything a mark attests: a tail that a crash can
    // leave, cut at open. (Fsynced bytes that no mark attests yet, at most
    // a page and the last fsync's, cannot be told from a torn write.)
    let after = records.iter().find(|r| r.start >= attested).unwrap();
    let copy = tempfile::tempdir().unwrap();
    common::copy_dir(dir.path(), copy.path());
    let mut damaged = bytes.clone();
    damaged[after.start + 62] ^= 0x01;
    std::fs::write(copy.path().join(main.file_name().unwrap()), &damaged).unwrap();
    let report = idemkv::verify(copy.path()).unwrap();
    assert_eq!(report.torn_tail_bytes, (bytes.len() - after.start) as u64);
    let store = opts().open(copy.path()).unwrap();
    assert_eq!(
        store.stats().torn_tail_bytes_truncated,
        (bytes.len() - after.start) as u64
    );
}

#[test]
fn repair_keeps_a_prefix_and_salvages_durable_records_around_damage() {
    let sim = SimStorage::new();
    // Enough durable pairs to seal main segments, then a torn batch.
    let (main, durable_len) = durable_then_pending(&sim, 700, 80);
    sim.power_loss_with(1, |page| {
        if page.path == main && page.offset == durable_len {
            PageFate::Lost
        } else {
            PageFate::Kept
        }
    });
    // Copy the simulated disk to a real directory for `repair`.
    let dir = tempfile::tempdir().unwrap();
    for name in sim.list(Path::new(DIR)).unwrap() {
        let bytes = sim.read_file(&Path::new(DIR).join(&name)).unwrap();
        std::fs::write(dir.path().join(&name), bytes).unwrap();
    }
    // Bit rot in a sealed main segment: one record's key byte flipped.
    let sealed = stream_paths(dir.path(), false)[0].clone();
    assert_ne!(sealed.file_name(), main.file_name(), "a sealed segment");
    let mut bytes = std::fs::read(&sealed).unwrap();
    let victim = walk(&bytes)[3].clone();
    bytes[victim.start + 60] ^= 0x01;
    std::fs::write(&sealed, bytes).unwrap();
    let reopen = || {
        Options::new()
            .clock(Arc::new(ManualClock::new(1_700_000_000_000)))
            .open(dir.path())
    };
    assert!(matches!(reopen(), Err(Error::Corrupt { .. })));

    let main_name = main.file_name().unwrap();
    // The batch's later pages, kept; preallocated zeros after them.
    let file = std::fs::read(dir.path().join(main_name)).unwrap();
    let file_len = common::nonzero_len(&file);
    let report = idemkv::repair(dir.path()).unwrap();
    assert!(!report.salvaged_everything(), "{report:?}");
    assert_eq!(report.records_skipped(), 1, "{report:?}");
    assert_eq!(report.repaired.len(), 1);
    assert_eq!(report.repaired[0].file, sealed);
    assert_eq!(report.torn_tail_bytes, file_len - durable_len);
    assert_eq!(
        std::fs::metadata(dir.path().join(main_name)).unwrap().len(),
        durable_len,
        "the main stream is a prefix again: nothing after the hole kept"
    );
    let store = reopen().unwrap();
    // The damaged complete is lost: its key shows its claim; every other
    // durable key is completed; nothing after the hole came back.
    let lost = String::from_utf8(victim.key).unwrap();
    let mut completed = 0;
    for i in 0..780 {
        match store.get(key(i)).unwrap() {
            Some(Record::Completed(c)) => {
                assert!(i < 700, "{}: from after the hole", key(i));
                assert_eq!(c.response(), &response(i)[..]);
                completed += 1;
            }
            // A claim after the durable point is there if a rollover of
            // the claim stream fsynced it.
            Some(Record::InProgress { .. }) => assert!(i >= 700 || key(i) == lost, "{}", key(i)),
            None => assert!(i >= 700, "{}: its claim is durable", key(i)),
            Some(other) => panic!("{other:?}"),
        }
    }
    assert_eq!(completed, 699);
    drop(store);
    let verified = idemkv::verify(dir.path()).unwrap();
    assert_eq!(verified.torn_tail_bytes, 0);
}
