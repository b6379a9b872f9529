//! Write-back started early under `Durability::None` (DESIGN.md §5,
//! "Rollover"): every write-out asks the storage to start writing its bytes
//! back (`StorageFile::start_writeback`), so the fsync of a rollover finds
//! little left to write; a durable store, which fsyncs each write-out,
//! never asks.

mod common;

use common::{acquire_with, clock};
use idemkv::storage::SimStorage;
use idemkv::{Durability, Fingerprint, Record};
use std::sync::Arc;

#[test]
fn a_store_without_durability_starts_write_back_of_what_it_writes_out() {
    const MIB: u64 = 1 << 20;
    let clock = clock();
    // A durable store fsyncs (and the simulated disk copies the file) at
    // every write, so it gets a shorter run.
    for (durability, pairs) in [(Durability::None, 40_000), (Durability::Immediate, 2_000)] {
        let sim = SimStorage::new();
        let store = common::options(&clock)
            .storage(Arc::new(sim.clone()))
            .segment_size(4 * MIB)
            .background_compaction(false)
            .durability(durability)
            .open("/store")
            .unwrap();
        let key = |i: usize| format!("tenant-9:POST /v1/payments:{i:06}");
        for i in 0..pairs {
            let t = acquire_with(&store, key(i), Fingerprint::of(key(i)));
            store
                .complete(t, format!("{{\"payment\":{i}}}").as_bytes())
                .unwrap();
        }
        let appended = store.stats().bytes_appended;
        let started = sim.writeback_bytes();
        let case = format!("{durability:?}");
        if durability == Durability::None {
            assert!(appended > 5 * MIB, "{case}: the workload spans segments");
            // What is not written out yet: under 1 MiB a stream.
            assert!(
                started + 2 * MIB >= appended && started <= appended,
                "{case}: write-back of {started} bytes for {appended} appended"
            );
        } else {
            assert_eq!(started, 0, "{case}");
        }
        for i in (0..pairs).step_by(997) {
            assert!(
                matches!(store.get(key(i)).unwrap(), Some(Record::Completed { .. })),
                "{case}: key {i}"
            );
        }
    }
}
