//! Arbitrary bytes as segment files and as a hint file: `open` must return a
//! store or a typed error, never panic, hang or allocate without bound. A
//! store that opens must answer reads, compact, verify and take a new write
//! (a segment opened from its hint, sealed or the last of its stream, was not
//! read, so compaction and verify may find damage in it, as `Corrupt`).
//!
//! Input: `[len1: u16][segment 1][len2: u16][segment 2][hint of segment 1]`,
//! each length cut to the bytes that remain; an empty segment 2 is left out.
#![no_main]

use idemkv::storage::SimStorage;
use idemkv::{Claim, Durability, Fingerprint, ManualClock, Options};
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use std::sync::Arc;

/// Splits a length-prefixed part off the front of `data`.
fn part(data: &[u8]) -> (&[u8], &[u8]) {
    let Some((len, rest)) = data.split_first_chunk::<2>() else {
        return (&[], &[]);
    };
    let len = usize::from(u16::from_le_bytes(*len)).min(rest.len());
    rest.split_at(len)
}

fuzz_target!(|data: &[u8]| {
    let (seg1, rest) = part(data);
    let (seg2, hint) = part(rest);
    let sim = SimStorage::new();
    let dir = Path::new("/fuzz");
    sim.write_file(&dir.join("0000000001.seg"), seg1);
    if !seg2.is_empty() {
        sim.write_file(&dir.join("0000000002.seg"), seg2);
    }
    if !hint.is_empty() {
        sim.write_file(&dir.join("0000000001.hint"), hint);
    }
    let options = Options::new()
        .storage(Arc::new(sim))
        .clock(Arc::new(ManualClock::new(1_700_000_000_000)))
        .durability(Durability::None)
        .segment_size(1 << 16)
        .max_response_len(1 << 12)
        .background_compaction(false);
    let Ok(store) = options.clone().open(dir) else {
        return;
    };
    let stats = store.stats();
    assert!(stats.live_keys <= stats.indexed_keys);
    // A segment opened from its hint is not read at open, so damage in it
    // shows when a record is read (every read checks the checksum).
    let hinted = stats.segments_opened_from_hints + stats.last_segments_opened_from_hints > 0;
    let acceptable = |r: &idemkv::Result<()>| {
        r.is_ok() || (hinted && matches!(r, Err(idemkv::Error::Corrupt { .. })))
    };
    let compacted = store.compact().map(drop);
    assert!(
        acceptable(&compacted),
        "compaction of a store that opened: {compacted:?}"
    );
    let fp = Fingerprint::of(b"fuzz");
    if let Ok(Claim::Acquired(t)) = store.claim("fuzz-new-key", fp) {
        store
            .complete(t, b"ok")
            .expect("a store that opened takes writes");
        match store.claim("fuzz-new-key", fp).expect("claim") {
            Claim::Replay(done) => assert_eq!(done.response(), b"ok"),
            other => panic!("completed key answered {other:?}"),
        }
    }
    drop(store);
    let verified = options.verify(dir).map(drop);
    assert!(
        acceptable(&verified),
        "verify of a store that opened: {verified:?}"
    );
});
