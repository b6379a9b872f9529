//! Power loss at every storage operation of a workload (claims, completes,
//! releases, seen marks, removals, rollovers, compactions): after the crash and a
//! reboot, the store opens and holds every acknowledged write unchanged,
//! nothing that was never written, and accepts new writes. A second crash
//! during that recovery changes none of this.
//!
//! Every page of every unsynced write meets its own fate (kept, lost,
//! zeroed, garbled, torn by sectors), so a later page often survives an
//! earlier one. The workload runs under `Immediate` (each write its own
//! fsync) and under `None` with periodic syncs, whose writes carry many
//! records across page boundaries. Open must succeed every time: no crash
//! the fault model allows may leave a store that needs `repair`.

#[path = "common/crash_model.rs"]
mod crash_model;

use crash_model::{Harness, Op, check_writable, open, open_with};
use idemkv::storage::{PendingFate, SimStorage};
use idemkv::{Clock, Durability, ManualClock};
use std::sync::Arc;

/// A deterministic workload touching every operation, with enough records
/// to roll over several small segments.
fn workload() -> Vec<Op> {
    (0..2400u32)
        .map(|i| {
            let key = ((i * 7 + i / 13) % 200) as u8;
            match i % 12 {
                0..=4 => Op::Claim {
                    key,
                    fp: i % 3 == 0,
                },
                5..=7 => Op::Complete {
                    len: (i % 200) as u8,
                },
                8 => Op::Release,
                9 if i % 24 == 9 => Op::Remove { key },
                9 => Op::MarkSeen { key },
                10 if i % 48 == 10 => Op::Sync,
                10 if i % 48 == 22 => Op::Compact,
                10 => Op::Extend { ms: 2_000 },
                _ => Op::Advance { ms: 700 },
            }
        })
        .collect()
}

fn run(sim: &SimStorage, clock: &Arc<ManualClock>, ops: &[Op], durability: Durability) -> Harness {
    let mut harness = match durability {
        Durability::None => Harness::unsynced(),
        _ => Harness::default(),
    };
    if let Ok(store) = open_with(sim, clock, durability) {
        for &op in ops {
            if !harness.apply(&store, clock, op) {
                break;
            }
        }
    }
    harness
}

/// Crashes at every storage operation of `ops` run under `durability`,
/// then again inside the recovery, and checks each recovered store.
fn every_crash_point(durability: Durability) {
    let ops = workload();
    let total = {
        let sim = SimStorage::new();
        let clock = Arc::new(ManualClock::new(1_000_000));
        run(&sim, &clock, &ops, durability);
        assert!(!sim.crashed());
        let store = open(&sim, &clock).unwrap();
        assert!(
            store.stats().segments > 3,
            "the workload rolls over segments"
        );
        sim.ops()
    };
    assert!(total > 300, "workload has {total} storage operations");

    let (mut recovery_crashes, mut torn_tails, mut refused) = (0, 0, Vec::new());
    for n in 1..=total {
        let sim = SimStorage::new();
        let clock = Arc::new(ManualClock::new(1_000_000));
        sim.crash_after(n);
        let harness = run(&sim, &clock, &ops, durability);
        sim.power_loss(n, PendingFate::Random);

        // Crash again part-way through recovery, then recover for real.
        sim.crash_after(1 + n % 7);
        match open(&sim, &clock) {
            Err(idemkv::Error::Corrupt { .. }) => refused.push(n),
            Err(_) => recovery_crashes += 1,
            Ok(_) => {}
        }
        sim.power_loss(n ^ 0x5555, PendingFate::Random);

        let label = format!("{durability:?}: crash point {n}/{total}");
        let store = match open(&sim, &clock) {
            Ok(store) => store,
            Err(e) => {
                refused.push(n);
                panic!("{label}: reopen failed (refused so far: {refused:?}): {e}");
            }
        };
        torn_tails += u64::from(store.stats().torn_tail_bytes_truncated > 0);
        harness.check(&store, clock.now_ms(), &label);
        check_writable(&sim, &clock, store, &label);
    }
    assert!(refused.is_empty(), "opens refused as Corrupt: {refused:?}");
    println!(
        "{durability:?}: checked {total} crash points ({recovery_crashes} with a second crash \
         during recovery, {torn_tails} with a torn tail cut at the final open, 0 opens refused)"
    );
}

#[test]
fn every_crash_point_keeps_every_acknowledged_write() {
    every_crash_point(Durability::Immediate);
}

#[test]
fn every_crash_point_of_unsynced_batches_opens_with_a_prefix() {
    every_crash_point(Durability::None);
}
