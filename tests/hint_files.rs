//! Hint files: open rebuilds the index from them instead of reading sealed
//! segments, with the same result; a hint that is missing, damaged, cut
//! short or belongs to another segment is ignored, the segment is scanned,
//! and a good hint is written again.

mod common;

use common::hint_paths;
use idemkv::{Claim, Fingerprint, ManualClock, Options, Record, Store};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

fn options() -> Options {
    Options::new()
        .clock(Arc::new(ManualClock::new(1_000_000_000)))
        .segment_size(4096)
        .max_response_len(512)
        .retention(Duration::from_secs(3600))
        .background_compaction(false)
}

fn response(i: u32) -> Vec<u8> {
    format!("response {i}").repeat(3).into_bytes()
}

/// 120 keys over many segments: completed, in progress, released, removed.
fn populate(dir: &Path) {
    let store = options().open(dir).unwrap();
    for i in 0..120u32 {
        let key = format!("key-{i}");
        let Claim::Acquired(t) = store.claim(&key, Fingerprint::of(&key)).unwrap() else {
            panic!()
        };
        match i % 6 {
            4 => drop(t),
            5 => store.release(t).unwrap(),
            _ => store.complete(t, &response(i)).unwrap(),
        }
    }
    assert!(store.remove("key-0").unwrap());
}

fn check(store: &Store) {
    for i in 0..120u32 {
        let key = format!("key-{i}");
        let got = store.get(&key).unwrap();
        match (i, i % 6) {
            (0, _) | (_, 5) => assert_eq!(got, None, "{key}"),
            (_, 4) => assert!(
                matches!(got, Some(Record::InProgress { .. })),
                "{key}: {got:?}"
            ),
            _ => match got {
                Some(Record::Completed(c)) => assert_eq!(c.response(), &response(i)[..], "{key}"),
                other => panic!("{key}: {other:?}"),
            },
        }
    }
}

#[test]
fn open_uses_hints_and_sees_the_same_records() {
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path());
    let first = options().open(dir.path()).unwrap();
    // Every segment but the two streams' active ones.
    let sealed = first.stats().segments - 2;
    assert!(sealed >= 3);
    assert_eq!(
        first.stats().segments_opened_from_hints,
        0,
        "no hints before the first open"
    );
    check(&first);
    drop(first);
    assert_eq!(
        hint_paths(dir.path()).len() as u64,
        sealed,
        "the first open wrote a hint per sealed segment"
    );
    let second = options().open(dir.path()).unwrap();
    assert_eq!(second.stats().segments_opened_from_hints, sealed);
    check(&second);
    // Generations keep growing past records only the hints described.
    let Claim::Acquired(t) = second.claim("new", Fingerprint::of(b"n")).unwrap() else {
        panic!()
    };
    assert!(t.generation() > second.stats().recovered_records);
}

#[test]
fn damaged_missing_or_foreign_hints_are_ignored_and_rewritten() {
    type Damage = fn(&Path, &[PathBuf]);
    let cases: [(&str, Damage); 5] = [
        ("flipped byte", |_, h| {
            let mut b = std::fs::read(&h[0]).unwrap();
            let at = b.len() / 2;
            b[at] ^= 0x20;
            std::fs::write(&h[0], b).unwrap();
        }),
        ("cut short", |_, h| {
            let b = std::fs::read(&h[0]).unwrap();
            std::fs::write(&h[0], &b[..b.len() - 5]).unwrap();
        }),
        ("deleted", |_, h| std::fs::remove_file(&h[0]).unwrap()),
        ("another segment's hint", |_, h| {
            std::fs::copy(&h[1], &h[0]).unwrap();
        }),
        ("zero-filled", |_, h| {
            let len = std::fs::metadata(&h[0]).unwrap().len() as usize;
            std::fs::write(&h[0], vec![0u8; len]).unwrap();
        }),
    ];
    for (name, damage) in cases {
        let dir = tempfile::tempdir().unwrap();
        populate(dir.path());
        drop(options().open(dir.path()).unwrap());
        let before = hint_paths(dir.path());
        let sealed = before.len() as u64;
        let good = std::fs::read(&before[0]).unwrap();
        damage(dir.path(), &before);
        let store = options().open(dir.path()).unwrap();
        assert_eq!(
            store.stats().segments_opened_from_hints,
            sealed - 1,
            "{name}: one segment scanned"
        );
        check(&store);
        drop(store);
        assert_eq!(
            std::fs::read(&before[0]).unwrap(),
            good,
            "{name}: the hint is written again"
        );
    }
}

#[test]
fn orphan_and_temporary_hints_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path());
    drop(options().open(dir.path()).unwrap());
    std::fs::write(dir.path().join("0000009999.hint"), b"orphan").unwrap();
    std::fs::write(dir.path().join("0000000001.hint.tmp"), b"half written").unwrap();
    let store = options().open(dir.path()).unwrap();
    check(&store);
    assert!(!dir.path().join("0000009999.hint").exists());
    assert!(!dir.path().join("0000000001.hint.tmp").exists());
}

#[test]
fn damage_in_a_segment_opened_from_its_hint_is_found_on_read_and_by_verify() {
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path());
    // Compaction deletes the claim segments, copying the claims still in
    // progress: open then compares no claim with key-1's record, and reads
    // nothing of segment 1 but its hint.
    let store = options().open(dir.path()).unwrap();
    store.compact().unwrap();
    drop(store);
    // Flip a byte inside the response of key-1, a completed key in segment 1.
    let seg = dir.path().join("0000000001.seg");
    let mut bytes = std::fs::read(&seg).unwrap();
    let needle = response(1);
    let at = bytes
        .windows(needle.len())
        .position(|w| w == &needle[..])
        .expect("key-1's response is in segment 1");
    bytes[at] ^= 0x01;
    std::fs::write(&seg, &bytes).unwrap();

    let store = options().open(dir.path()).unwrap();
    assert!(
        store.stats().segments_opened_from_hints > 0,
        "open trusted the hint and did not read the segment"
    );
    let err = store.get("key-1").unwrap_err();
    assert!(
        matches!(err, idemkv::Error::Corrupt { ref file, .. } if *file == seg),
        "{err}"
    );
    assert!(matches!(
        store.claim("key-1", Fingerprint::of("key-1")),
        Err(idemkv::Error::Corrupt { .. })
    ));
    drop(store);
    assert!(matches!(
        options().verify(dir.path()),
        Err(idemkv::Error::Corrupt { .. })
    ));
}

/// Options whose background compactor runs, so closing settles the store,
/// but whose timer never fires during a test.
fn settling() -> Options {
    options()
        .background_compaction(true)
        .compaction_interval(Duration::from_secs(3_600))
}

/// The stream's last segment and its hint file.
fn last_segment(dir: &Path, claims: bool) -> (PathBuf, PathBuf) {
    let seg = common::stream_paths(dir, claims).pop().unwrap();
    let hint = seg.with_extension("hint");
    (seg, hint)
}

/// The segment length a hint file says it describes.
fn hinted_len(hint: &Path) -> u64 {
    common::le_u64(&std::fs::read(hint).unwrap(), 16)
}

#[test]
fn closing_hints_the_active_segments_and_open_trusts_them() {
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path());
    // Nothing is written, so nothing wakes the compactor: closing is the
    // pass that settles the store.
    drop(settling().open(dir.path()).unwrap());
    for claims in [false, true] {
        let (seg, hint) = last_segment(dir.path(), claims);
        let len = std::fs::metadata(&seg).unwrap().len();
        if claims && len == 32 {
            // Every claim in the claim stream's last segment was settled:
            // closing moved the stream to a new, empty segment.
            assert!(!hint.exists());
            continue;
        }
        assert!(hint.exists(), "{} has a hint", seg.display());
        assert_eq!(hinted_len(&hint), len);
    }
    for seg in common::sealed_segment_paths(dir.path()) {
        assert!(seg.with_extension("hint").exists(), "{}", seg.display());
    }

    // A byte of a completed response in the main stream's last segment,
    // flipped: open does not read payloads it has a hint for, so it opens
    // and the damage shows when that record is read. Without the hint,
    // open scans the segment and refuses it (the closing mark attests it).
    let (seg, hint) = last_segment(dir.path(), false);
    let bytes = std::fs::read(&seg).unwrap();
    let victim = common::walk(&bytes)
        .into_iter()
        .rev()
        .find(|r| {
            // A complete: it carries a response.
            !common::is_sync_mark(&bytes, r)
                && r.key.starts_with(b"key-")
                && r.len > 60 + r.key.len()
        })
        .unwrap();
    let key = String::from_utf8(victim.key.clone()).unwrap();
    let mut damaged = bytes.clone();
    damaged[victim.end() - 1] ^= 0x40;
    std::fs::write(&seg, &damaged).unwrap();
    {
        let store = options().open(dir.path()).unwrap();
        assert!(
            store.stats().last_segments_opened_from_hints >= 1,
            "the main stream's last segment came from its hint"
        );
        assert!(
            matches!(store.get(&key), Err(idemkv::Error::Corrupt { .. })),
            "{key} reads as damaged"
        );
    }
    std::fs::remove_file(&hint).unwrap();
    assert!(matches!(
        options().open(dir.path()),
        Err(idemkv::Error::Corrupt { .. })
    ));
    // The segment as closing left it, without its hint: scanned, whole.
    std::fs::write(&seg, &bytes).unwrap();
    let store = options().open(dir.path()).unwrap();
    assert_eq!(store.stats().last_segments_opened_from_hints, 0);
    check(&store);
}

#[test]
fn a_stale_active_hint_is_ignored_and_replaced_once_sealed() {
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path());
    drop(settling().open(dir.path()).unwrap());
    let (seg, hint) = last_segment(dir.path(), false);
    let closed_len = hinted_len(&hint);
    // More records in that segment, and a close that writes no hint: the
    // hint describes a shorter file now.
    {
        let store = options().open(dir.path()).unwrap();
        for i in 0..3u32 {
            let key = format!("late-{i}");
            let Claim::Acquired(t) = store.claim(&key, Fingerprint::of(&key)).unwrap() else {
                panic!()
            };
            store.complete(t, b"late").unwrap();
        }
    }
    let grown = std::fs::metadata(&seg).unwrap().len();
    assert!(grown > closed_len, "{grown} > {closed_len}");
    assert_eq!(
        hinted_len(&hint),
        closed_len,
        "the stale hint is still there"
    );
    let late = |store: &Store| {
        for i in 0..3u32 {
            match store.get(format!("late-{i}")).unwrap() {
                Some(Record::Completed(c)) => assert_eq!(c.response(), b"late"),
                other => panic!("late-{i}: {other:?}"),
            }
        }
    };
    {
        let store = options().open(dir.path()).unwrap();
        check(&store);
        late(&store);
        // Fill the segment until it is sealed, then write missing hints:
        // the sealed segment gets its own hint, not the stale one.
        for i in 0..40u32 {
            let key = format!("fill-{i}");
            let Claim::Acquired(t) = store.claim(&key, Fingerprint::of(&key)).unwrap() else {
                panic!()
            };
            store.complete(t, &response(i)).unwrap();
        }
        assert!(
            common::stream_paths(dir.path(), false)
                .last()
                .is_some_and(|last| *last != seg),
            "the segment was sealed"
        );
        store.compact().unwrap();
    }
    assert_eq!(
        hinted_len(&hint),
        std::fs::metadata(&seg).unwrap().len(),
        "the sealed segment's hint describes it whole"
    );
    let store = options().open(dir.path()).unwrap();
    check(&store);
    late(&store);
}
