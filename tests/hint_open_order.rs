//! Opening from hints applies the hinted segments shard by shard, on
//! several threads and out of log order across keys: each key must still
//! end at its latest record, also when the run of hinted segments is broken
//! by a segment that has to be scanned.

mod common;

use common::hint_paths;
use idemkv::{Claim, Fingerprint, ManualClock, Options, Record, Store};
use std::sync::Arc;
use std::time::Duration;

const KEYS: u32 = 6_000;

fn options() -> Options {
    Options::new()
        .clock(Arc::new(ManualClock::new(1_000_000_000)))
        .segment_size(64 << 10)
        .max_response_len(512)
        .retention(Duration::from_secs(3600))
        .background_compaction(false)
}

fn put(store: &Store, key: &str, response: &str) {
    let Claim::Acquired(t) = store.claim(key, Fingerprint::of(key)).unwrap() else {
        panic!("{key}")
    };
    store.complete(t, response.as_bytes()).unwrap();
}

fn check(store: &Store) {
    for i in 0..KEYS {
        let key = format!("key-{i}");
        let got = store.get(&key).unwrap();
        match i % 3 {
            0 => match got {
                Some(Record::Completed(c)) => assert_eq!(c.response(), b"second", "{key}"),
                other => panic!("{key}: {other:?}"),
            },
            1 => assert_eq!(got, None, "{key}"),
            _ => match got {
                Some(Record::Completed(c)) => assert_eq!(c.response(), b"first", "{key}"),
                other => panic!("{key}: {other:?}"),
            },
        }
    }
}

#[test]
fn every_key_ends_at_its_latest_record() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = options().open(dir.path()).unwrap();
        for i in 0..KEYS {
            put(&store, &format!("key-{i}"), "first");
        }
        // Later records of two keys in three, segments after the first ones.
        for i in (0..KEYS).filter(|i| i % 3 != 2) {
            let key = format!("key-{i}");
            assert!(store.remove(&key).unwrap());
            if i % 3 == 0 {
                put(&store, &key, "second");
            }
        }
    }
    // The first open scans and writes the hints; the second uses them.
    let first = options().open(dir.path()).unwrap();
    check(&first);
    // Every segment but the two streams' active ones.
    let sealed = first.stats().segments - 2;
    drop(first);
    let store = options().open(dir.path()).unwrap();
    assert_eq!(store.stats().segments_opened_from_hints, sealed);
    check(&store);
    drop(store);

    // A segment in the middle without its hint is scanned between two runs
    // of hinted segments.
    let hints = hint_paths(dir.path());
    std::fs::remove_file(&hints[hints.len() / 2]).unwrap();
    let store = options().open(dir.path()).unwrap();
    assert_eq!(store.stats().segments_opened_from_hints, sealed - 1);
    check(&store);
}
