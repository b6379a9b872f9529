//! Records survive close and reopen exactly: completed responses byte for
//! byte (binary, empty, maximum size), in-progress records with their
//! fingerprint, claim time and lease, seen marks; generations keep growing
//! across reopens; removed and released keys stay absent. Small segments
//! make the log roll over so records span several files.

mod common;

use common::{
    START_MS, XorShift, acquire_with, assert_mark_seen, assert_replays_with, complete_new,
    dir_and_clock, durability_modes,
};
use idemkv::{Claim, Durability, Fingerprint, ManualClock, Options, Record, Seen, Store};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const LEASE_MS: u64 = 60_000;
const MAX_RESPONSE: usize = 1024;

fn open_with(dir: &Path, clock: &Arc<ManualClock>, durability: Durability) -> Store {
    Options::new()
        .clock(clock.clone())
        .durability(durability)
        .lease(Duration::from_millis(LEASE_MS))
        .segment_size(4096)
        .max_response_len(MAX_RESPONSE)
        .open(dir)
        .unwrap()
}

fn open(dir: &Path, clock: &Arc<ManualClock>) -> Store {
    open_with(dir, clock, Durability::Immediate)
}

/// Responses that stress byte-exactness: empty, NULs, every byte value,
/// maximum size, and sizes around the segment boundaries.
fn responses() -> Vec<Vec<u8>> {
    let mut out = vec![
        Vec::new(),
        vec![0],
        vec![0; 7],
        vec![0; MAX_RESPONSE],
        vec![0xff; MAX_RESPONSE],
        (0..=255u8).collect(),
        b"\0leading and trailing nul\0".to_vec(),
        b"plain text response".to_vec(),
    ];
    // A deterministic pseudo-random maximum-size response.
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    out.push((0..MAX_RESPONSE).map(|_| rng.byte()).collect());
    for len in [1, 63, 64, 65, 511, 1000, MAX_RESPONSE - 1] {
        out.push((0..len).map(|i| (i * 7 % 256) as u8).collect());
    }
    out
}

#[test]
fn completed_responses_survive_reopen_byte_for_byte() {
    for durability in durability_modes(Duration::from_millis(5)) {
        let (dir, clock) = dir_and_clock();
        let responses = responses();
        let mut expected = BTreeMap::new();
        {
            let store = open_with(dir.path(), &clock, durability);
            for round in 0..3 {
                for (i, response) in responses.iter().enumerate() {
                    let key = format!("r{round}-{i}");
                    let fp = Fingerprint::of(key.as_bytes());
                    let t = acquire_with(&store, &key, fp);
                    clock.advance(Duration::from_millis(3));
                    store.complete(t, response).unwrap();
                    let Some(Record::Completed(c)) = store.get(&key).unwrap() else {
                        panic!("{key} was just completed")
                    };
                    assert_eq!(c.response(), &response[..]);
                    expected.insert(key, c);
                }
            }
            assert!(
                store.stats().segments > 3,
                "the log rolled over several times ({durability:?})"
            );
        }
        for _ in 0..2 {
            let store = open_with(dir.path(), &clock, durability);
            for (key, before) in &expected {
                let Some(Record::Completed(after)) = store.get(key).unwrap() else {
                    panic!("{key} lost its completed record ({durability:?})")
                };
                assert_eq!(
                    &after, before,
                    "{key} changed across reopen ({durability:?})"
                );
                match store.claim(key, Fingerprint::of(key.as_bytes())).unwrap() {
                    Claim::Replay(done) => {
                        assert_eq!(done.response(), before.response());
                        assert_eq!(done.fingerprint(), before.fingerprint());
                        assert_eq!(done.completed_at_ms(), before.completed_at_ms());
                        assert_eq!(done.expires_at_ms(), before.expires_at_ms());
                    }
                    other => panic!("{key} must replay after reopen, got {other:?}"),
                }
            }
            assert_eq!(store.stats().live_keys, expected.len() as u64);
            assert_eq!(store.stats().torn_tail_bytes_truncated, 0);
        }
    }
}

#[test]
fn in_progress_records_survive_reopen_with_their_lease() {
    let (dir, clock) = dir_and_clock();
    let mut before = BTreeMap::new();
    let mut tickets = Vec::new();
    {
        let store = open(dir.path(), &clock);
        for i in 0..40u64 {
            let key = format!("pending-{i}");
            let fp = Fingerprint::from_u128(u128::from(i) << 64 | 0xabcd);
            let t = acquire_with(&store, &key, fp);
            if i % 3 == 0 {
                clock.advance(Duration::from_millis(7));
                store
                    .extend_lease(&t, Duration::from_millis(LEASE_MS + i * 100))
                    .unwrap();
            }
            clock.advance(Duration::from_millis(11));
            // Interleave completed records so the segments hold a mix.
            let filler = format!("filler-{i}");
            let f = acquire_with(&store, &filler, fp);
            store.complete(f, &[i as u8; 200]).unwrap();
            let record = store.get(&key).unwrap().unwrap();
            assert!(matches!(record, Record::InProgress { .. }));
            before.insert(key, record);
            tickets.push(t);
        }
        assert!(store.stats().segments > 1);
    }
    let store = open(dir.path(), &clock);
    for (key, record) in &before {
        assert_eq!(store.get(key).unwrap().as_ref(), Some(record), "{key}");
        let Record::InProgress {
            fingerprint,
            claimed_at_ms,
            lease_expires_at_ms,
        } = *record
        else {
            unreachable!()
        };
        assert!(claimed_at_ms >= START_MS && lease_expires_at_ms > claimed_at_ms);
        match store.claim(key, fingerprint).unwrap() {
            Claim::InProgress {
                lease_expires_at_ms: end,
            } => assert_eq!(end, lease_expires_at_ms, "{key}"),
            other => panic!("{key} is still in progress after reopen, got {other:?}"),
        }
        assert!(matches!(
            store.claim(key, Fingerprint::of(b"another")).unwrap(),
            Claim::Mismatch
        ));
    }
    // Tickets held across the reopen still own their keys.
    for (i, t) in tickets.into_iter().enumerate() {
        if i % 2 == 0 {
            store.complete(t, format!("done-{i}").as_bytes()).unwrap();
        } else {
            store.release(t).unwrap();
        }
    }
    drop(store);
    let store = open(dir.path(), &clock);
    for i in 0..40 {
        let key = format!("pending-{i}");
        match store.get(&key).unwrap() {
            Some(Record::Completed(c)) if i % 2 == 0 => {
                assert_eq!(c.response(), format!("done-{i}").as_bytes())
            }
            None if i % 2 == 1 => {}
            other => panic!("{key}: unexpected {other:?}"),
        }
    }
}

#[test]
fn lease_runs_on_across_reopen_and_allows_takeover() {
    let (dir, clock) = dir_and_clock();
    let fp = Fingerprint::of(b"req");
    let old = {
        let store = open(dir.path(), &clock);
        acquire_with(&store, "k", fp)
    };
    clock.set_ms(START_MS + LEASE_MS - 1);
    {
        let store = open(dir.path(), &clock);
        assert!(matches!(
            store.claim("k", fp).unwrap(),
            Claim::InProgress { lease_expires_at_ms } if lease_expires_at_ms == START_MS + LEASE_MS
        ));
    }
    clock.set_ms(START_MS + LEASE_MS);
    let store = open(dir.path(), &clock);
    let new = acquire_with(&store, "k", fp);
    assert!(new.generation() > old.generation());
    assert_eq!(store.stats().takeovers, 1);
    assert!(matches!(
        store.complete(old, b"stale"),
        Err(idemkv::Error::LeaseLost)
    ));
    store.complete(new, b"fresh").unwrap();
}

#[test]
fn generations_keep_growing_across_reopens() {
    let (dir, clock) = dir_and_clock();
    let fp = Fingerprint::of(b"req");
    let mut highest = 0u64;
    for session in 0..5 {
        let store = open(dir.path(), &clock);
        for i in 0..30 {
            let key = format!("s{session}-k{i}");
            let t = acquire_with(&store, &key, fp);
            assert!(
                t.generation() > highest,
                "session {session}: generation {} after {highest}",
                t.generation()
            );
            highest = t.generation();
            match i % 3 {
                0 => store.complete(t, &[session as u8; 300]).unwrap(),
                1 => store.release(t).unwrap(),
                _ => drop(t),
            }
        }
        // A takeover after the reopen also outranks everything before it.
        if session > 0 {
            clock.advance(Duration::from_millis(LEASE_MS));
            let key = format!("s{}-k2", session - 1);
            let t = acquire_with(&store, &key, fp);
            assert!(t.generation() > highest);
            highest = t.generation();
            drop(t);
        }
    }
    // Reopening with nothing written in between does not reuse numbers.
    drop(open(dir.path(), &clock));
    let store = open(dir.path(), &clock);
    let t = acquire_with(&store, "last", fp);
    assert!(t.generation() > highest);
    assert!(store.stats().segments > 1);
}

#[test]
fn removed_and_released_keys_stay_absent_after_reopen() {
    let (dir, clock) = dir_and_clock();
    let fp = Fingerprint::of(b"req");
    {
        let store = open(dir.path(), &clock);
        complete_new(&store, "removed-completed", fp, b"x");
        assert!(store.remove("removed-completed").unwrap());

        drop(acquire_with(&store, "removed-in-progress", fp));
        assert!(store.remove("removed-in-progress").unwrap());

        let t = acquire_with(&store, "released", fp);
        store.release(t).unwrap();

        let _ = store
            .mark_seen("removed-seen", Duration::from_secs(60))
            .unwrap();
        assert!(store.remove("removed-seen").unwrap());

        // Removed, then claimed and completed again: the new record wins.
        complete_new(&store, "reborn", fp, b"first life");
        assert!(store.remove("reborn").unwrap());
        complete_new(
            &store,
            "reborn",
            Fingerprint::of(b"new req"),
            b"second life",
        );

        // Removed, then more records pushed through rollover.
        for i in 0..20 {
            complete_new(&store, format!("pad-{i}"), fp, &[b'p'; 500]);
        }
        assert!(store.stats().segments > 1);
    }
    for _ in 0..2 {
        let store = open(dir.path(), &clock);
        for key in [
            "removed-completed",
            "removed-in-progress",
            "released",
            "removed-seen",
        ] {
            assert_eq!(store.get(key).unwrap(), None, "{key} came back");
        }
        assert_replays_with(
            &store,
            "reborn",
            Fingerprint::of(b"new req"),
            b"second life",
        );
        assert_eq!(store.stats().live_keys, 21);
    }
    let store = open(dir.path(), &clock);
    for key in ["removed-completed", "removed-in-progress", "released"] {
        assert!(matches!(
            store.claim(key, Fingerprint::of(b"anything")).unwrap(),
            Claim::Acquired(_)
        ));
    }
    assert_mark_seen(&store, "removed-seen", Duration::from_secs(1), Seen::First);
}

#[test]
fn seen_marks_survive_reopen() {
    let (dir, clock) = dir_and_clock();
    let mut before = BTreeMap::new();
    {
        let store = open_with(dir.path(), &clock, Durability::None);
        for i in 0..200u64 {
            let key = format!("msg-{i}");
            assert_mark_seen(&store, &key, Duration::from_millis(10_000 + i), Seen::First);
            before.insert(key.clone(), store.get(&key).unwrap().unwrap());
        }
        assert!(store.stats().segments > 1);
    }
    let store = open(dir.path(), &clock);
    for (key, record) in &before {
        assert_eq!(store.get(key).unwrap().as_ref(), Some(record));
        assert_mark_seen(&store, key, Duration::from_secs(1), Seen::Duplicate);
    }
}

#[test]
fn stats_report_recovered_records_after_reopen() {
    let (dir, clock) = dir_and_clock();
    let fp = Fingerprint::of(b"req");
    {
        let store = open(dir.path(), &clock);
        for i in 0..10 {
            complete_new(&store, format!("k{i}"), fp, b"v");
        }
        assert_eq!(store.stats().recovered_records, 0);
    }
    let store = open(dir.path(), &clock);
    // Ten completions; closing deleted the claim segment, whose ten
    // claims were all completed.
    assert_eq!(store.stats().recovered_records, 10);
    assert_eq!(store.stats().claims, 0, "counters start again at open");
}

#[test]
fn what_open_recovers_is_durable_before_it_answers() {
    // The writing process dies with its records written but not fsynced
    // (`Periodic` with a long period). The next open answers from them, so
    // it must make them durable first: a power loss right after must not
    // take back a response that was already replayed.
    use idemkv::storage::{PendingFate, SimStorage};
    let sim = SimStorage::new();
    let clock = Arc::new(ManualClock::new(START_MS));
    let open = || {
        Options::new()
            .storage(Arc::new(sim.clone()))
            .clock(clock.clone())
            .durability(Durability::Periodic(Duration::from_secs(3600)))
            .background_compaction(false)
            .open(Path::new("/store"))
            .unwrap()
    };
    let store = open();
    complete_new(
        &store,
        "charge-1",
        Fingerprint::of(b"body"),
        b"charged once",
    );
    let _in_progress = acquire_with(&store, "charge-2", Fingerprint::of(b"body"));
    sim.kill_process();
    drop(store);

    let check = |store: &Store| {
        assert_replays_with(store, "charge-1", Fingerprint::of(b"body"), b"charged once");
        assert!(matches!(
            store.get("charge-2").unwrap(),
            Some(Record::InProgress { .. })
        ));
    };
    let store = open();
    check(&store);
    sim.power_loss(7, PendingFate::DropAll);
    drop(store);
    check(&open());
}
