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
        // Bytes a retention window of pairs takes in both streams (claims
        // included, though their segments go sooner), their hints, plus
        // a segment in its expiry window, each stream's active one, and a
        // segment of slack.
        let pair_bytes = s.bytes_appended / (i + 1);
        bound = window_pairs * (pair_bytes + 24) * 5 / 4 + 4 * SEGMENT_SIZE;
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
    println!(
        "worst disk {worst} bytes within a bound of {bound}; {} bytes appended; {} segments dropped",
        s.bytes_appended, s.segments_dropped
    );
}
