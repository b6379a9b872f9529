//! Arbitrary bytes as segment files: `open` must return a store or a typed
//! error, never panic, hang or allocate without bound. A store that opens
//! must answer reads and take a new write.
#![no_main]

use idemkv::storage::SimStorage;
use idemkv::{Claim, Durability, Fingerprint, ManualClock, Options};
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use std::sync::Arc;

fuzz_target!(|data: &[u8]| {
    // The first byte splits the input into one or two segment files, so
    // both the sealed and the last-segment recovery paths are reached.
    let (split, body) = match data.split_first() {
        Some((&s, rest)) => (usize::from(s) * rest.len() / 256, rest),
        None => (0, data),
    };
    let sim = SimStorage::new();
    let dir = Path::new("/fuzz");
    if split == 0 {
        sim.write_file(&dir.join("0000000001.seg"), body);
    } else {
        sim.write_file(&dir.join("0000000001.seg"), &body[..split]);
        sim.write_file(&dir.join("0000000002.seg"), &body[split..]);
    }
    let opened = Options::new()
        .storage(Arc::new(sim))
        .clock(Arc::new(ManualClock::new(1_000_000)))
        .durability(Durability::None)
        .segment_size(1 << 16)
        .max_response_len(1 << 12)
        .open(dir);
    let Ok(store) = opened else { return };
    let stats = store.stats();
    assert!(stats.live_keys <= stats.recovered_records);
    let fp = Fingerprint::of(b"fuzz");
    if let Ok(Claim::Acquired(t)) = store.claim("fuzz-new-key", fp) {
        store.complete(t, b"ok").expect("a store that opened takes writes");
        match store.claim("fuzz-new-key", fp).expect("claim") {
            Claim::Replay(done) => assert_eq!(done.response(), b"ok"),
            other => panic!("completed key answered {other:?}"),
        }
    }
});
