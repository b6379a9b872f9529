//! TTL-ordered compaction: with a fixed retention, disk, segments and index
//! stay bounded and expired segments are dropped without copying; a
//! long-retention record is copied forward and survives; nothing removed,
//! released or expired comes back after compaction and reopen; concurrent
//! claims lose nothing; a crash at any step of compaction loses nothing.

#[path = "common/crash_model.rs"]
mod crash_model;

use idemkv::storage::{PendingFate, SimStorage, Storage};
use idemkv::{Claim, Clock, Fingerprint, ManualClock, Options, Record, Store};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const LEASE: Duration = Duration::from_secs(1);
const RETENTION: Duration = Duration::from_secs(60);

fn options(clock: &Arc<ManualClock>) -> Options {
    Options::new()
        .clock(clock.clone())
        .lease(LEASE)
        .retention(RETENTION)
        .segment_size(4096)
        .max_response_len(512)
        .background_compaction(false)
        .durability(idemkv::Durability::None)
}

fn pair(store: &Store, key: &str, response: &[u8]) {
    match store.claim(key, Fingerprint::of(key)).unwrap() {
        Claim::Acquired(t) => store.complete(t, response).unwrap(),
        other => panic!("{key}: {other:?}"),
    }
}

fn response(i: u64) -> Vec<u8> {
    format!("response {i:08}").repeat(4).into_bytes()
}

#[test]
fn fixed_retention_keeps_disk_and_index_bounded_without_copying() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000_000_000));
    let store = options(&clock).open(dir.path()).unwrap();
    let (mut max_segments, mut max_disk, mut max_indexed) = (0, 0, 0);
    let mut total = idemkv::CompactionReport::default();
    for i in 0..20_000u64 {
        pair(&store, &format!("key-{i}"), &response(i));
        clock.advance(Duration::from_millis(10)); // 100 pairs/s: 6,000 live at 60 s retention
        if i % 500 == 499 {
            let r = store.compact().unwrap();
            total.segments_dropped += r.segments_dropped;
            total.segments_rewritten += r.segments_rewritten;
            total.bytes_copied += r.bytes_copied;
            let s = store.stats();
            if i > 8_000 {
                max_segments = max_segments.max(s.segments);
                max_disk = max_disk.max(s.bytes_on_disk);
                max_indexed = max_indexed.max(s.indexed_keys);
            }
        }
    }
    let s = store.stats();
    assert!(s.live_keys <= 6_001, "live keys {}", s.live_keys);
    // Live data is about 6,000 pairs of ~300 bytes; everything older went.
    let pair_bytes = s.bytes_appended / 20_000;
    assert!(
        max_disk < 8_000 * pair_bytes,
        "disk peaked at {max_disk} bytes ({pair_bytes} per pair)"
    );
    assert!(
        max_segments < 8_000 * pair_bytes / 4096 + 2,
        "segments peaked at {max_segments}"
    );
    assert!(max_indexed < 8_000, "index peaked at {max_indexed} entries");
    assert!(total.segments_dropped > 100, "{total:?}");
    assert_eq!(
        (total.segments_rewritten, total.bytes_copied),
        (0, 0),
        "fixed retention copies nothing"
    );
    println!(
        "peak: {max_segments} segments, {max_disk} bytes, {max_indexed} index entries; {total:?}"
    );
}

#[test]
fn long_retention_record_is_copied_forward_and_survives() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000_000_000));
    {
        let store = options(&clock).open(dir.path()).unwrap();
        match store.claim("keep-me", Fingerprint::of(b"k")).unwrap() {
            Claim::Acquired(t) => store
                .complete_with_retention(t, b"kept for a day", Duration::from_secs(86_400))
                .unwrap(),
            other => panic!("{other:?}"),
        }
        for i in 0..200 {
            pair(&store, &format!("short-{i}"), &response(i));
        }
        assert!(store.stats().segments > 5);
        clock.advance(Duration::from_secs(120));
        let r = store.compact().unwrap();
        assert!(r.segments_rewritten >= 1, "{r:?}");
        assert!(
            r.bytes_copied > 0 && r.bytes_copied < 1_000,
            "only the long record moves: {r:?}"
        );
        let s = store.stats();
        assert!(s.segments <= 2, "{s:?}");
        assert_eq!(s.live_keys, 1);
    }
    let store = options(&clock).open(dir.path()).unwrap();
    match store.claim("keep-me", Fingerprint::of(b"k")).unwrap() {
        Claim::Replay(done) => assert_eq!(done.response(), b"kept for a day"),
        other => panic!("{other:?}"),
    }
    for i in 0..200 {
        assert_eq!(store.get(format!("short-{i}")).unwrap(), None);
    }
}

#[test]
fn nothing_removed_released_or_expired_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000_000_000));
    let day = Duration::from_secs(86_400);
    {
        let store = options(&clock).open(dir.path()).unwrap();
        // A claim whose completion expires long before the claim would have.
        match store
            .claim("short-complete", Fingerprint::of(b"a"))
            .unwrap()
        {
            Claim::Acquired(t) => store
                .complete_with_retention(t, b"gone soon", Duration::from_secs(1))
                .unwrap(),
            other => panic!("{other:?}"),
        }
        // A long-lived record removed later, a long claim released later.
        match store.claim("removed", Fingerprint::of(b"b")).unwrap() {
            Claim::Acquired(t) => store
                .complete_with_retention(t, b"removed later", day)
                .unwrap(),
            other => panic!("{other:?}"),
        }
        let Claim::Acquired(released) = store.claim("released", Fingerprint::of(b"c")).unwrap()
        else {
            panic!()
        };
        store.extend_lease(&released, day).unwrap();
        for i in 0..100 {
            pair(&store, &format!("filler-a-{i}"), &response(i));
        }
        assert!(store.remove("removed").unwrap());
        store.release(released).unwrap();
        for i in 0..100 {
            pair(&store, &format!("filler-b-{i}"), &response(i));
        }
    }
    for step in [5, 70, 3_600, 90_000, 200_000] {
        clock.set_ms(1_000_000_000 + step * 1000);
        {
            let store = options(&clock).open(dir.path()).unwrap();
            store.compact().unwrap();
            store.compact().unwrap();
            for key in ["short-complete", "removed", "released"] {
                assert_eq!(
                    store.get(key).unwrap(),
                    None,
                    "{key} after compaction at +{step}s"
                );
            }
        }
        let store = options(&clock).open(dir.path()).unwrap();
        for key in ["short-complete", "removed", "released"] {
            assert_eq!(
                store.get(key).unwrap(),
                None,
                "{key} after reopen at +{step}s"
            );
            assert!(matches!(
                store.claim(key, Fingerprint::of(b"new")).unwrap(),
                Claim::Acquired(_)
            ));
        }
    }
}

#[test]
fn compaction_beside_concurrent_claims_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000_000_000));
    let store = options(&clock).open(dir.path()).unwrap();
    let writers_done = std::sync::atomic::AtomicUsize::new(0);
    let passes = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for t in 0..3 {
            let store = store.clone();
            let clock = clock.clone();
            let (writers_done, passes) = (&writers_done, &passes);
            s.spawn(move || {
                // Counted done even if this writer panics, so the compactor
                // stops and the panic fails the test instead of hanging it.
                let _done = OnDrop(|| {
                    writers_done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                });
                for i in 0..3_000u64 {
                    let key = format!("t{t}-{i}");
                    pair(&store, &key, &response(i));
                    if t == 0 {
                        clock.advance(Duration::from_millis(50));
                        // Every 250 pairs, wait for a compaction pass that
                        // started after them, so passes and writes
                        // interleave however the threads are scheduled.
                        if i % 250 == 249 {
                            let seen = passes.load(std::sync::atomic::Ordering::SeqCst);
                            while passes.load(std::sync::atomic::Ordering::SeqCst) < seen + 2 {
                                std::thread::yield_now();
                            }
                        }
                    }
                }
            });
        }
        let store = store.clone();
        let (writers_done, passes) = (&writers_done, &passes);
        s.spawn(move || {
            // If a pass panics, the writer waiting for passes goes on.
            let _done = OnDrop(|| {
                passes.fetch_add(usize::MAX / 2, std::sync::atomic::Ordering::SeqCst);
            });
            while writers_done.load(std::sync::atomic::Ordering::SeqCst) < 3 {
                store.compact().unwrap();
                passes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        });
    });
    let passes = passes.into_inner() - usize::MAX / 2;
    assert!(passes > 10, "compaction ran beside the writers");
    let now = clock.now_ms();
    let check = |store: &Store| {
        let mut present = 0;
        for t in 0..3 {
            for i in 0..3_000u64 {
                match store.get(format!("t{t}-{i}")).unwrap() {
                    Some(Record::Completed(c)) => {
                        assert_eq!(c.response(), &response(i)[..]);
                        present += 1;
                    }
                    None => {}
                    other => panic!("{other:?}"),
                }
            }
        }
        present
    };
    // Every completed key is either replayed or expired by the clock.
    let live_before = check(&store);
    assert_eq!(live_before as u64, store.stats().live_keys);
    assert!(live_before > 0);
    let stats = store.stats();
    assert!(stats.segments_dropped > 0, "{stats:?}");
    drop(store);
    let store = options(&clock).open(dir.path()).unwrap();
    assert_eq!(clock.now_ms(), now);
    assert_eq!(check(&store), live_before, "the same keys after reopen");
}

/// The crash-model workload: 1,500 claims, completes, releases and clock
/// steps over 200 keys on a store without a compactor, then closed.
fn crash_workload(sim: &SimStorage, clock: &Arc<ManualClock>) -> crash_model::Harness {
    use crash_model::{Harness, Op};
    let store = crash_model::open(sim, clock).unwrap();
    let mut harness = Harness::default();
    for i in 0..1_500u32 {
        let key = ((i * 7 + i / 11) % 200) as u8;
        let op = match i % 8 {
            0..=3 => Op::Claim {
                key,
                fp: i % 5 == 0,
            },
            4 | 5 => Op::Complete {
                len: (i % 120) as u8,
            },
            6 => Op::Release,
            _ => Op::Advance { ms: 400 },
        };
        assert!(harness.apply(&store, clock, op));
    }
    drop(store);
    harness
}

/// Options of the crash tests: the simulated disk and clock, small segments.
fn crash_options(sim: &SimStorage, clock: &Arc<ManualClock>) -> Options {
    Options::new()
        .storage(Arc::new(sim.clone()))
        .clock(clock.clone())
        .lease(Duration::from_millis(crash_model::LEASE_MS))
        .retention(Duration::from_millis(crash_model::RETENTION_MS))
        .segment_size(4096)
        .max_response_len(512)
}

/// The crash-model workload on a simulated disk, then a crash at every
/// storage operation of a compaction that drops and rewrites segments.
#[test]
fn crash_at_every_step_of_compaction_loses_nothing() {
    let dir = Path::new(crash_model::DIR);
    let build = crash_workload;
    let opts = |sim: &SimStorage, clock: &Arc<ManualClock>| {
        crash_options(sim, clock)
            .background_compaction(false)
            .compaction_threshold(0.9)
    };
    // Count the steps of one compaction.
    let steps = {
        let sim = SimStorage::new();
        let clock = Arc::new(ManualClock::new(1_000_000));
        build(&sim, &clock);
        clock.advance(Duration::from_millis(crash_model::RETENTION_MS / 2));
        let store = opts(&sim, &clock).open(dir).unwrap();
        let before = sim.ops();
        let r = store.compact().unwrap();
        assert!(r.segments_dropped + r.segments_rewritten > 0, "{r:?}");
        sim.ops() - before
    };
    assert!(steps > 10, "compaction took {steps} storage steps");
    for n in 1..=steps {
        let sim = SimStorage::new();
        let clock = Arc::new(ManualClock::new(1_000_000));
        let harness = build(&sim, &clock);
        clock.advance(Duration::from_millis(crash_model::RETENTION_MS / 2));
        {
            let store = opts(&sim, &clock).open(dir).unwrap();
            sim.crash_after(n);
            assert!(store.compact().is_err(), "step {n} of {steps} crashes");
        }
        sim.power_loss(n, PendingFate::Random);
        let label = format!("crash at compaction step {n} of {steps}");
        let store = opts(&sim, &clock)
            .open(dir)
            .unwrap_or_else(|e| panic!("{label}: {e}"));
        harness.check(&store, clock.now_ms(), &label);
        store.compact().unwrap();
        harness.check(&store, clock.now_ms(), &label);
    }
    println!("checked {steps} crash points inside compaction");
}

#[test]
fn dropping_a_segment_deletes_its_hint_file() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000_000_000));
    let store = options(&clock).open(dir.path()).unwrap();
    for i in 0..600u64 {
        pair(&store, &format!("key-{i}"), &response(i));
    }
    store.compact().unwrap(); // writes the hints of the sealed segments
    clock.advance(Duration::from_secs(3_600));
    let r = store.compact().unwrap();
    assert!(r.segments_dropped > 10, "{r:?}");
    let files: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    for hint in files.iter().filter(|f| f.ends_with(".hint")) {
        let segment = hint.replace(".hint", ".seg");
        assert!(
            files.contains(&segment),
            "{hint} outlived its segment; files: {files:?}"
        );
    }
    let hints = files.iter().filter(|f| f.ends_with(".hint")).count() as u64;
    assert!(
        hints < store.stats().segments,
        "{hints} hints for {} segments",
        store.stats().segments
    );
}

/// Closing a store whose background compactor runs settles it as a pass
/// would (hints for every sealed segment, dead claim segments deleted, the
/// active segments' hints): a crash at every storage operation of that
/// closing pass, then a power loss, leaves a store that opens and holds
/// every acknowledged write; so does the next clean close and open.
#[test]
fn crash_at_every_step_of_closing_loses_nothing() {
    let dir = Path::new(crash_model::DIR);
    // Built without a compactor: its close leaves every claim segment and
    // no hint, so the closing pass below has all of that to do.
    let build = crash_workload;
    // A compactor whose timer never fires here, and no write wakes it: the
    // close is the only pass.
    let opts = |sim: &SimStorage, clock: &Arc<ManualClock>| {
        crash_options(sim, clock)
            .background_compaction(true)
            .compaction_interval(Duration::from_secs(3_600))
    };
    let count_hints = |sim: &SimStorage| {
        sim.list(dir)
            .unwrap()
            .iter()
            .filter(|f| f.ends_with(".hint"))
            .count()
    };
    // Count the steps of one close.
    let steps = {
        let sim = SimStorage::new();
        let clock = Arc::new(ManualClock::new(1_000_000));
        build(&sim, &clock);
        clock.advance(Duration::from_millis(crash_model::RETENTION_MS / 2));
        assert_eq!(count_hints(&sim), 0, "built without hints");
        let store = opts(&sim, &clock).open(dir).unwrap();
        let before = sim.ops();
        drop(store);
        let steps = sim.ops() - before;
        assert!(count_hints(&sim) > 2, "closing wrote hints");
        steps
    };
    assert!(steps > 10, "closing took {steps} storage steps");
    for n in 1..=steps {
        let sim = SimStorage::new();
        let clock = Arc::new(ManualClock::new(1_000_000));
        let harness = build(&sim, &clock);
        clock.advance(Duration::from_millis(crash_model::RETENTION_MS / 2));
        {
            let store = opts(&sim, &clock).open(dir).unwrap();
            sim.crash_after(n);
            drop(store);
        }
        sim.power_loss(n, PendingFate::Random);
        let label = format!("crash at closing step {n} of {steps}");
        let store = opts(&sim, &clock)
            .open(dir)
            .unwrap_or_else(|e| panic!("{label}: {e}"));
        harness.check(&store, clock.now_ms(), &label);
        drop(store);
        let store = opts(&sim, &clock)
            .open(dir)
            .unwrap_or_else(|e| panic!("{label}, after a clean close: {e}"));
        harness.check(&store, clock.now_ms(), &label);
    }
    println!("checked {steps} crash points inside closing");
}

/// Runs a closure when dropped, also while unwinding from a panic.
struct OnDrop<F: FnMut()>(F);

impl<F: FnMut()> Drop for OnDrop<F> {
    fn drop(&mut self) {
        (self.0)();
    }
}

/// A key whose expired record compaction evicted from the index, while the
/// record's segment stays on disk (a live record shares it), is claimed
/// again: the claim is written above that record's sequence number (the
/// shard's eviction floor), so after a reopen it is still the key's
/// latest record, not the expired one written before it. Without the
/// floor, the claim stream, which had counted less, gave the claim a lower
/// number, and the claim was gone after the reopen.
#[test]
fn a_claim_after_an_evicted_expired_record_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000_000_000));
    let store = options(&clock).open(dir.path()).unwrap();
    let seen = "seen-then-claimed";
    // Main records only (seen records): the main stream counts far ahead
    // of the claim stream; records still live share the segment of the
    // one that expires, and more of them seal it.
    let live = |i: u64| {
        let first = store.mark_seen(format!("live-{i}"), Duration::from_secs(3600));
        assert_eq!(first.unwrap(), idemkv::Seen::First);
    };
    (0..100).for_each(live);
    let first = store.mark_seen(seen, Duration::from_secs(1)).unwrap();
    assert_eq!(first, idemkv::Seen::First);
    (100..300).for_each(live);
    clock.advance(Duration::from_secs(2));
    let report = store.compact().unwrap();
    assert!(report.entries_evicted >= 1, "{report:?}");
    assert!(
        matches!(
            store.claim(seen, Fingerprint::of(seen)).unwrap(),
            Claim::Acquired(_)
        ),
        "the seen record expired"
    );
    drop(store);
    let store = options(&clock).open(dir.path()).unwrap();
    assert!(
        matches!(store.get(seen).unwrap(), Some(Record::InProgress { .. })),
        "{:?}",
        store.get(seen).unwrap()
    );
}
