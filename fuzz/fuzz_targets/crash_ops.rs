//! A sequence of operations, a crash point and the fate of unsynced writes
//! (page by page: kept, lost, zeroed, garbled, torn by sectors), checked
//! against the reference model: after power loss the store opens and holds
//! every acknowledged write, and nothing else. Under `Durability::None`
//! (`unsynced`) many records share one write, so a lost page can sit before
//! a kept one; the store must still open.
#![no_main]

#[path = "../../tests/common/crash_model.rs"]
mod crash_model;

use arbitrary::Arbitrary;
use crash_model::{Harness, Op, check_writable, open, open_with};
use idemkv::storage::{PendingFate, SimStorage};
use idemkv::{Clock, Durability, ManualClock};
use libfuzzer_sys::fuzz_target;
use std::sync::Arc;

#[derive(Debug, Arbitrary)]
struct Case {
    crash_at: u16,
    recovery_crash_at: u8,
    seed: u64,
    unsynced: bool,
    ops: Vec<Op>,
}

fuzz_target!(|case: Case| {
    let sim = SimStorage::new();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let (mut harness, durability) = if case.unsynced {
        (Harness::unsynced(), Durability::None)
    } else {
        (Harness::default(), Durability::Immediate)
    };
    sim.crash_after(u64::from(case.crash_at).max(1));
    if let Ok(store) = open_with(&sim, &clock, durability) {
        for &op in case.ops.iter().take(2_000) {
            if !harness.apply(&store, &clock, op) {
                break;
            }
        }
    }
    sim.power_loss(case.seed, PendingFate::Random);
    if case.recovery_crash_at > 0 {
        sim.crash_after(u64::from(case.recovery_crash_at));
        let _ = open(&sim, &clock);
        sim.power_loss(case.seed.rotate_left(17), PendingFate::Random);
    }
    let store = open(&sim, &clock).expect("open after power loss");
    harness.check(&store, clock.now_ms(), "fuzz");
    check_writable(&sim, &clock, store, "fuzz");
});
