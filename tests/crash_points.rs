//! Power loss at every storage operation of a workload (claims, completes,
//! releases, seen marks, removals, rollovers, compactions): after the crash and a
//! reboot, the store opens and holds every acknowledged write unchanged,
//! nothing that was never written, and accepts new writes. A second crash
//! during that recovery changes none of this.

#[path = "common/crash_model.rs"]
mod crash_model;

use crash_model::{Harness, Op, check_writable, open};
use idemkv::storage::{PendingFate, SimStorage};
use idemkv::{Clock, ManualClock};
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

fn run(sim: &SimStorage, clock: &Arc<ManualClock>, ops: &[Op]) -> Harness {
    let mut harness = Harness::default();
    if let Ok(store) = open(sim, clock) {
        for &op in ops {
            if !harness.apply(&store, clock, op) {
                break;
            }
        }
    }
    harness
}

#[test]
fn every_crash_point_keeps_every_acknowledged_write() {
    let ops = workload();
    let total = {
        let sim = SimStorage::new();
        let clock = Arc::new(ManualClock::new(1_000_000));
        run(&sim, &clock, &ops);
        assert!(!sim.crashed());
        let store = open(&sim, &clock).unwrap();
        assert!(
            store.stats().segments > 3,
            "the workload rolls over segments"
        );
        sim.ops()
    };
    assert!(total > 600, "workload has {total} storage operations");

    let mut recovery_crashes = 0;
    for n in 1..=total {
        let sim = SimStorage::new();
        let clock = Arc::new(ManualClock::new(1_000_000));
        sim.crash_after(n);
        let harness = run(&sim, &clock, &ops);
        sim.power_loss(n, PendingFate::Random);

        // Crash again part-way through recovery, then recover for real.
        sim.crash_after(1 + n % 7);
        if open(&sim, &clock).is_err() {
            recovery_crashes += 1;
        }
        sim.power_loss(n ^ 0x5555, PendingFate::Random);

        let label = format!("crash point {n}/{total}");
        let store = open(&sim, &clock).unwrap_or_else(|e| panic!("{label}: reopen failed: {e}"));
        harness.check(&store, clock.now_ms(), &label);
        check_writable(&sim, &clock, store, &label);
    }
    println!(
        "checked {total} crash points ({recovery_crashes} with a second crash during recovery)"
    );
}
