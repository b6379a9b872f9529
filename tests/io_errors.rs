//! I/O errors on the write path: a failed write (`ENOSPC`, `EIO`), fsync,
//! file creation or directory fsync poisons the store, which then refuses
//! every write instead of retrying; nothing it acknowledged is lost, and the
//! directory opens again once the disk works.

#[path = "common/crash_model.rs"]
mod crash_model;

use crash_model::{Harness, Op, check_writable, open};
use idemkv::storage::{PendingFate, SimOp, SimStorage};
use idemkv::{Clock, Error, Fingerprint, ManualClock};
use std::io::ErrorKind;
use std::sync::Arc;

fn workload() -> Vec<Op> {
    (0..900u32)
        .map(|i| {
            let key = ((i * 11 + i / 7) % 200) as u8;
            match i % 9 {
                0..=3 => Op::Claim {
                    key,
                    fp: i % 4 == 0,
                },
                4..=5 => Op::Complete {
                    len: (i % 250) as u8,
                },
                6 => Op::Release,
                7 => Op::MarkSeen { key },
                _ => Op::Advance { ms: 400 },
            }
        })
        .collect()
}

/// Counts the operations of `kind` a clean run of the workload performs.
fn count(kind: SimOp, ops: &[Op]) -> u64 {
    let sim = SimStorage::new();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let store = open(&sim, &clock).unwrap();
    let mut harness = Harness::default();
    for &op in ops {
        assert!(harness.apply(&store, &clock, op));
    }
    // The workload's own operations; closing the store adds a few more.
    sim.count(kind)
}

fn fail_each(kind: SimOp, error: ErrorKind) -> u64 {
    let ops = workload();
    let total = count(kind, &ops);
    assert!(total > 0, "the workload performs {kind:?}");
    for n in 1..=total {
        let label = format!("{kind:?} #{n} of {total} fails with {error:?}");
        let sim = SimStorage::new();
        let clock = Arc::new(ManualClock::new(1_000_000));
        sim.fail(kind, n, error);
        let mut harness = Harness::default();
        match open(&sim, &clock) {
            Ok(store) => {
                let failed = ops.iter().any(|&op| !harness.apply(&store, &clock, op));
                assert!(failed, "{label}: the fault fired");
                // Poisoned: every later write is refused.
                let refused = store.claim("after-failure", Fingerprint::of(b"x"));
                assert!(
                    matches!(refused, Err(Error::Poisoned)),
                    "{label}: {refused:?}"
                );
                assert!(store.stats().poisoned, "{label}");
                // Reads answer from durable records; one resting on a record
                // the failure left unsynced is refused, never guessed.
                let read = store.get("k1");
                assert!(
                    matches!(read, Ok(_) | Err(Error::Poisoned)),
                    "{label}: {read:?}"
                );
            }
            Err(e) => assert!(matches!(e, Error::Io(_)), "{label}: open failed with {e}"),
        }
        // The process ends and the machine may lose what was not synced.
        sim.power_loss(n, PendingFate::Random);
        let store = open(&sim, &clock).unwrap_or_else(|e| panic!("{label}: reopen failed: {e}"));
        harness.check(&store, clock.now_ms(), &label);
        check_writable(&sim, &clock, store, &label);
    }
    total
}

#[test]
fn failed_writes_poison_and_lose_nothing_acknowledged() {
    let n = fail_each(SimOp::Write, ErrorKind::StorageFull);
    println!("checked {n} failing writes (ENOSPC)");
}

#[test]
fn failed_fsyncs_poison_and_lose_nothing_acknowledged() {
    let n = fail_each(SimOp::Sync, ErrorKind::Other);
    println!("checked {n} failing fsyncs (EIO)");
}

#[test]
fn failed_segment_creation_and_directory_sync_poison() {
    let created = fail_each(SimOp::Create, ErrorKind::StorageFull);
    let dir_syncs = fail_each(SimOp::SyncDir, ErrorKind::Other);
    println!("checked {created} failing creates and {dir_syncs} failing directory fsyncs");
}
