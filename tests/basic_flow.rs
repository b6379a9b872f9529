//! The happy path and its neighbours, end to end through the public API.

use idemkv::{Claim, Durability, Error, Fingerprint, ManualClock, Options, Record, Seen};
use std::sync::Arc;
use std::time::Duration;

#[test]
fn claim_complete_replay_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let open = || {
        Options::new()
            .clock(clock.clone())
            .segment_size(4096)
            .max_response_len(1024)
            .open(dir.path())
            .unwrap()
    };
    let fp = Fingerprint::of(b"body");
    {
        let store = open();
        for i in 0..100 {
            let key = format!("key-{i}");
            let Claim::Acquired(t) = store.claim(&key, fp).unwrap() else {
                panic!("fresh key")
            };
            store.complete(t, format!("resp-{i}").as_bytes()).unwrap();
        }
        let Claim::Acquired(t) = store.claim("pending", fp).unwrap() else {
            panic!()
        };
        assert!(t.generation() > 0);
        drop(t);
        assert_eq!(
            store.mark_seen("msg", Duration::from_secs(10)).unwrap(),
            Seen::First
        );
        assert!(store.stats().segments > 1, "small segments roll over");
    }
    let store = open();
    for i in 0..100 {
        match store.claim(format!("key-{i}"), fp).unwrap() {
            Claim::Replay(done) => assert_eq!(done.response(), format!("resp-{i}").as_bytes()),
            other => panic!("{other:?}"),
        }
    }
    assert!(matches!(
        store.get("pending").unwrap(),
        Some(Record::InProgress { .. })
    ));
    assert!(matches!(
        store.claim("pending", fp).unwrap(),
        Claim::InProgress { .. }
    ));
    assert_eq!(
        store.mark_seen("msg", Duration::from_secs(10)).unwrap(),
        Seen::Duplicate
    );
    assert!(matches!(
        Options::new().open(dir.path()),
        Err(Error::Locked)
    ));
    let s = store.stats();
    assert_eq!(s.replays, 100);
    assert_eq!(s.live_keys, 102);
}

#[test]
fn every_durability_mode_round_trips() {
    for d in [
        Durability::Immediate,
        Durability::Periodic(Duration::from_millis(5)),
        Durability::None,
    ] {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Options::new().durability(d).open(dir.path()).unwrap();
            let Claim::Acquired(t) = store.claim("k", Fingerprint::of(b"x")).unwrap() else {
                panic!()
            };
            store.complete(t, b"done").unwrap();
        }
        let store = Options::new().durability(d).open(dir.path()).unwrap();
        assert!(
            matches!(store.claim("k", Fingerprint::of(b"x")).unwrap(), Claim::Replay(c) if c.response() == b"done")
        );
    }
}
