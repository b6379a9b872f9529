//! The happy path and its neighbours, end to end through the public API.

mod common;

use common::{
    acquire_with, assert_in_progress, assert_mark_seen, assert_replays_with, complete_new,
    dir_and_clock, durability_modes, small_segments,
};
use idemkv::{Claim, Error, Fingerprint, Options, Seen};
use std::time::Duration;

#[test]
fn claim_complete_replay_survives_reopen() {
    let (dir, clock) = dir_and_clock();
    let open = || {
        small_segments(Options::new().clock(clock.clone()))
            .open(dir.path())
            .unwrap()
    };
    let fp = Fingerprint::of(b"body");
    {
        let store = open();
        for i in 0..100 {
            complete_new(
                &store,
                format!("key-{i}"),
                fp,
                format!("resp-{i}").as_bytes(),
            );
        }
        let t = acquire_with(&store, "pending", fp);
        assert!(t.generation() > 0);
        drop(t);
        assert_mark_seen(&store, "msg", Duration::from_secs(10), Seen::First);
        assert!(store.stats().segments > 1, "small segments roll over");
    }
    let store = open();
    for i in 0..100 {
        assert_replays_with(
            &store,
            format!("key-{i}"),
            fp,
            format!("resp-{i}").as_bytes(),
        );
    }
    assert_in_progress(&store, "pending");
    assert!(matches!(
        store.claim("pending", fp).unwrap(),
        Claim::InProgress { .. }
    ));
    assert_mark_seen(&store, "msg", Duration::from_secs(10), Seen::Duplicate);
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
    for d in durability_modes(Duration::from_millis(5)) {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Options::new().durability(d).open(dir.path()).unwrap();
            complete_new(&store, "k", Fingerprint::of(b"x"), b"done");
        }
        let store = Options::new().durability(d).open(dir.path()).unwrap();
        assert_replays_with(&store, "k", Fingerprint::of(b"x"), b"done");
    }
}
