//! Expiry keeps up with any write rate: the background compactor wakes when
//! a rollover finds a sealed segment with work, not only on its timer, so
//! with a clock that runs far faster than real time (and a timer that never
//! fires during the test) the disk stays within the retention window plus
//! a segment or two.

use idemkv::{Claim, Durability, Fingerprint, ManualClock, Options, Store};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SEGMENT_SIZE: u64 = 4096;
const RETENTION: Duration = Duration::from_secs(10);
/// Virtual time between pairs: 100 pairs per retention window.
const STEP: Duration = Duration::from_millis(100);
const PAIRS: u64 = 3_000;
/// Pairs per virtual second.
const PAIRS_PER_S: u64 = 10;
/// Bytes of a complete record: the 60-byte header, a 10-byte key and a
/// 100-byte response.
const COMPLETE_LEN: u64 = 170;
/// Bytes of a hint entry.
const HINT_ENTRY_LEN: u64 = 24;

fn pair(store: &Store, i: u64) {
    let key = format!("key-{i:06}");
    match store.claim(&key, Fingerprint::of(&key)).unwrap() {
        Claim::Acquired(t) => store.complete(t, &[b'r'; 100]).unwrap(),
        other => panic!("{key}: {other:?}"),
    }
}

#[test]
fn disk_stays_within_the_retention_window_at_any_write_rate() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let store = Options::new()
        .clock(clock.clone())
        .durability(Durability::None)
        .retention(RETENTION)
        .lease(Duration::from_secs(1))
        .segment_size(SEGMENT_SIZE)
        .max_response_len(512)
        // The timer never fires while the test runs: only rollovers wake
        // the compactor.
        .background_compaction(true)
        .compaction_interval(Duration::from_secs(3_600))
        .open(dir.path())
        .unwrap();
    let window_pairs = RETENTION.as_millis() as u64 / STEP.as_millis() as u64;
    let mut worst = 0u64;
    let mut bound = 0u64;
    for i in 0..PAIRS {
        pair(&store, i);
        clock.advance(STEP);
        if i % 50 != 49 || i < 2 * window_pairs {
            continue;
        }
        let s = store.stats();
        // What must stay: the main stream's records of one retention
        // window (plus a second, as drop-after times are whole seconds)
        // with their hint entries. Then one main segment whose records
        // expired since the last rollover (which is what wakes the
        // compactor), and one segment of the claim stream's (its active
        // one, and any sealed meanwhile). Everything else must go.
        bound = (window_pairs + PAIRS_PER_S) * (COMPLETE_LEN + HINT_ENTRY_LEN) + 3 * SEGMENT_SIZE;
        // The compactor runs on its own thread: wait for it to catch up,
        // bounded in real time.
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut on_disk = s.bytes_on_disk;
        while on_disk > bound {
            assert!(
                Instant::now() < deadline,
                "after {} pairs ({} windows) the store holds {on_disk} bytes, over {bound}: \
                 expiry did not keep up ({:?})",
                i + 1,
                (i + 1) / window_pairs,
                store.stats()
            );
            std::thread::sleep(Duration::from_millis(5));
            on_disk = store.stats().bytes_on_disk;
        }
        worst = worst.max(on_disk);
    }
    let s = store.stats();
    assert!(
        s.segments_dropped > 20,
        "rollovers woke the compactor: {s:?}"
    );
    assert!(
        s.bytes_appended > 10 * bound,
        "the test wrote many windows' worth: {} bytes against a bound of {bound}",
        s.bytes_appended
    );
    assert_eq!(
        s.bytes_appended,
        PAIRS * (COMPLETE_LEN + 70),
        "a claim is 70 bytes and a complete {COMPLETE_LEN}; no sync marks"
    );
    println!(
        "worst disk {worst} bytes within a bound of {bound}; {} bytes appended; {} segments dropped",
        s.bytes_appended, s.segments_dropped
    );
}
