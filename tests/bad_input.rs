//! Bad input gets a typed error, never a panic, and changes nothing stored:
//! empty keys, keys over the maximum, responses over the maximum, invalid
//! options. Each error's `Display` is a readable sentence, not a `Debug` dump.

mod common;

use common::{acquire, assert_in_progress, assert_replays, complete_new, dir_and_clock, fp};
use idemkv::{
    Claim, Durability, Error, MAX_SEGMENT_SIZE, MIN_SEGMENT_SIZE, ManualClock, Options, Store,
};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

fn open(dir: &Path, clock: &Arc<ManualClock>) -> Store {
    Options::new()
        .clock(clock.clone())
        .max_key_len(16)
        .max_response_len(100)
        .segment_size(4096)
        .open(dir)
        .unwrap()
}

/// A store with one completed key, "keep", to check nothing is disturbed.
fn store_with_keeper(dir: &Path, clock: &Arc<ManualClock>) -> Store {
    let store = open(dir, clock);
    complete_new(&store, "keep", fp(), b"kept \0 bytes");
    store
}

/// The completed key must still replay.
#[track_caller]
fn assert_keeper_intact(store: &Store) {
    assert_replays(store, "keep", b"kept \0 bytes");
}

/// A readable sentence: not the Debug text, no struct braces, several words.
#[track_caller]
fn assert_readable(err: &Error) -> String {
    let text = err.to_string();
    let debug = format!("{err:?}");
    assert_ne!(text, debug, "Display must not be the Debug text");
    assert!(!text.contains('{') && !text.contains('}'), "{text}");
    assert!(text.split_whitespace().count() >= 5, "too terse: {text}");
    text
}

#[test]
fn empty_key_is_refused_everywhere() {
    let (dir, clock) = dir_and_clock();
    let store = store_with_keeper(dir.path(), &clock);
    let appended = store.stats().bytes_appended;

    assert!(matches!(store.claim("", fp()), Err(Error::EmptyKey)));
    assert!(matches!(store.claim(b"", fp()), Err(Error::EmptyKey)));
    assert!(matches!(store.get(""), Err(Error::EmptyKey)));
    assert!(matches!(store.remove(""), Err(Error::EmptyKey)));
    assert!(matches!(
        store.mark_seen("", Duration::from_secs(1)),
        Err(Error::EmptyKey)
    ));

    assert_eq!(
        store.stats().bytes_appended,
        appended,
        "nothing was written"
    );
    assert_keeper_intact(&store);
    let text = assert_readable(&Error::EmptyKey);
    assert!(text.contains("empty"), "{text}");
}

#[test]
fn key_over_the_maximum_is_refused_everywhere() {
    let (dir, clock) = dir_and_clock();
    let store = store_with_keeper(dir.path(), &clock);
    let appended = store.stats().bytes_appended;
    let long = [b'x'; 17];

    let too_long = |r: idemkv::Result<()>| match r {
        Err(Error::KeyTooLong { len: 17, max: 16 }) => {}
        other => panic!("expected KeyTooLong {{ len: 17, max: 16 }}, got {other:?}"),
    };
    too_long(store.claim(long, fp()).map(drop));
    too_long(store.get(long).map(drop));
    too_long(store.remove(long).map(drop));
    too_long(store.mark_seen(long, Duration::from_secs(1)).map(drop));
    // Far over the maximum, past what the format can hold at all.
    let huge = vec![b'y'; 70_000];
    assert!(matches!(
        store.claim(&huge, fp()),
        Err(Error::KeyTooLong {
            len: 70_000,
            max: 16
        })
    ));

    assert_eq!(
        store.stats().bytes_appended,
        appended,
        "nothing was written"
    );
    // A key of exactly the maximum is fine.
    let t = acquire(&store, [b'x'; 16]);
    store.complete(t, b"max key").unwrap();
    assert_keeper_intact(&store);

    let err = store.claim(long, fp()).unwrap_err();
    let text = assert_readable(&err);
    assert!(text.contains("17") && text.contains("16"), "{text}");
}

#[test]
fn default_key_limit_is_one_kibibyte() {
    let dir = tempfile::tempdir().unwrap();
    let store = Options::new()
        .durability(Durability::None)
        .open(dir.path())
        .unwrap();
    let t = acquire(&store, [b'k'; 1024]);
    store.complete(t, b"ok").unwrap();
    assert!(matches!(
        store.claim([b'k'; 1025], fp()),
        Err(Error::KeyTooLong {
            len: 1025,
            max: 1024
        })
    ));
}

#[test]
fn response_over_the_maximum_is_refused() {
    let (dir, clock) = dir_and_clock();
    let store = store_with_keeper(dir.path(), &clock);
    assert_eq!(store.max_response_len(), 100);

    let t = acquire(&store, b"big");
    let appended = store.stats().bytes_appended;
    match store.complete(t, &[1u8; 101]) {
        Err(Error::ResponseTooLarge { len: 101, max: 100 }) => {}
        other => panic!("expected ResponseTooLarge, got {other:?}"),
    }
    assert_eq!(
        store.stats().bytes_appended,
        appended,
        "nothing was written"
    );
    assert_eq!(store.stats().completes, 1, "only the keeper completed");
    // The ticket is consumed and the key stays in progress until its lease ends.
    assert_in_progress(&store, "big");
    assert!(matches!(
        store.claim("big", fp()).unwrap(),
        Claim::InProgress { .. }
    ));

    let t = acquire(&store, b"big2");
    let err = store
        .complete_with_retention(t, &vec![0u8; 1 << 20], Duration::from_secs(1))
        .unwrap_err();
    assert!(matches!(
        err,
        Error::ResponseTooLarge {
            len: 1_048_576,
            max: 100
        }
    ));
    let text = assert_readable(&err);
    assert!(text.contains("1048576") && text.contains("100"), "{text}");

    // Exactly the maximum is accepted.
    let t = acquire(&store, b"exact");
    store.complete(t, &[2u8; 100]).unwrap();
    assert_replays(&store, "exact", &[2u8; 100]);
    assert_keeper_intact(&store);

    drop(store);
    let store = open(dir.path(), &clock);
    assert_keeper_intact(&store);
    assert_in_progress(&store, "big");
}

fn invalid_options() -> Vec<(&'static str, Options, &'static str)> {
    vec![
        ("zero lease", Options::new().lease(Duration::ZERO), "lease"),
        (
            "sub-millisecond lease",
            Options::new().lease(Duration::from_micros(999)),
            "lease",
        ),
        (
            "zero retention",
            Options::new().retention(Duration::ZERO),
            "retention",
        ),
        (
            "zero Periodic interval",
            Options::new().durability(Durability::Periodic(Duration::ZERO)),
            "Periodic",
        ),
        (
            "zero segment_size",
            Options::new().segment_size(0),
            "segment_size",
        ),
        (
            "segment_size just too small",
            Options::new()
                .segment_size(MIN_SEGMENT_SIZE - 1)
                .max_key_len(16)
                .max_response_len(16),
            "segment_size",
        ),
        (
            "segment_size too large",
            Options::new().segment_size(MAX_SEGMENT_SIZE + 1),
            "segment_size",
        ),
        (
            "segment_size far too large",
            Options::new().segment_size(u64::MAX),
            "segment_size",
        ),
        (
            "zero max_key_len",
            Options::new().max_key_len(0),
            "max_key_len",
        ),
        (
            "max_key_len beyond the format",
            Options::new().max_key_len(1 << 16),
            "max_key_len",
        ),
        (
            "max_response_len beyond the format",
            Options::new()
                .segment_size(MAX_SEGMENT_SIZE)
                .max_response_len(usize::MAX),
            "max_response_len",
        ),
        (
            "largest record does not fit the segment",
            Options::new().segment_size(4096).max_response_len(4096),
            "segment_size",
        ),
        (
            "default maxima do not fit a small segment",
            Options::new().segment_size(64 << 10),
            "segment_size",
        ),
    ]
}

#[test]
fn invalid_options_are_refused_with_a_reason() {
    let root = tempfile::tempdir().unwrap();
    for (i, (what, options, names)) in invalid_options().into_iter().enumerate() {
        let dir = root.path().join(format!("store-{i}"));
        match options.open(&dir) {
            Err(err @ Error::InvalidOptions(_)) => {
                let text = assert_readable(&err);
                assert!(text.contains(names), "{what}: {text}");
            }
            other => panic!("{what}: expected InvalidOptions, got {other:?}"),
        }
        assert!(!dir.exists(), "{what}: refused options left a directory");
    }
}

#[test]
fn valid_edge_options_are_accepted() {
    let root = tempfile::tempdir().unwrap();
    let edge = [
        Options::new()
            .segment_size(MIN_SEGMENT_SIZE)
            .max_key_len(1024)
            .max_response_len(1024),
        Options::new()
            .lease(Duration::from_millis(1))
            .retention(Duration::from_millis(1))
            .segment_size(MIN_SEGMENT_SIZE)
            .max_key_len(1)
            .max_response_len(0),
    ];
    for (i, options) in edge.into_iter().enumerate() {
        let store = options
            .durability(Durability::None)
            .open(root.path().join(format!("s{i}")))
            .unwrap();
        let t = acquire(&store, b"k");
        store.complete(t, b"").unwrap();
    }
}

#[test]
fn invalid_options_do_not_touch_an_existing_store() {
    let (dir, clock) = dir_and_clock();
    drop(store_with_keeper(dir.path(), &clock));
    let listing = |p: &Path| {
        let mut v: Vec<_> = std::fs::read_dir(p)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.file_name(), e.metadata().unwrap().len())
            })
            .collect();
        v.sort();
        v
    };
    let before = listing(dir.path());
    for (what, options, _) in invalid_options() {
        assert!(
            matches!(options.open(dir.path()), Err(Error::InvalidOptions(_))),
            "{what}"
        );
    }
    assert_eq!(listing(dir.path()), before);
    let store = open(dir.path(), &clock);
    assert_keeper_intact(&store);
}

#[test]
fn bad_input_in_a_burst_leaves_the_store_working() {
    let (dir, clock) = dir_and_clock();
    let store = store_with_keeper(dir.path(), &clock);
    let pending = acquire(&store, b"pending");
    for i in 0..200usize {
        let key = vec![b'z'; i % 40];
        let _ = store.claim(&key, fp());
        let _ = store.get(&key);
        let _ = store.mark_seen(&key, Duration::from_millis(i as u64));
    }
    match store.complete(pending, &[0u8; 500]) {
        Err(Error::ResponseTooLarge { len: 500, max: 100 }) => {}
        other => panic!("{other:?}"),
    }
    assert_keeper_intact(&store);
    drop(store);
    let store = open(dir.path(), &clock);
    assert_keeper_intact(&store);
    assert_in_progress(&store, "pending");
}

#[test]
fn other_errors_display_as_sentences() {
    for err in [
        Error::Locked,
        Error::LeaseLost,
        Error::Poisoned,
        Error::EmptyKey,
        Error::KeyTooLong { len: 9, max: 8 },
        Error::ResponseTooLarge { len: 9, max: 8 },
        Error::InvalidOptions("lease must be at least 1 ms".into()),
        Error::Corrupt {
            file: "/tmp/seg".into(),
            offset: 42,
            reason: "checksum mismatch".into(),
        },
        Error::IncompatibleFormat {
            file: "/tmp/seg".into(),
            found: 9,
            supported: 1,
        },
        Error::Io(std::io::Error::other("disk on fire")),
    ] {
        assert_readable(&err);
    }
    fn is_error<E: std::error::Error + Send + Sync + 'static>() {}
    is_error::<Error>();
}
