//! loom models of the concurrent core. Each runs the crate's own code (with
//! `src/sync.rs` switched to loom's primitives) under every interleaving
//! loom explores, within `LOOM_MAX_PREEMPTIONS` preemptions:
//!
//! ```sh
//! LOOM_MAX_PREEMPTIONS=3 RUSTFLAGS="--cfg idemkv_loom" cargo test --release --lib models -- --nocapture
//! ```
//!
//! Each model prints how many interleavings it explored.

#![allow(
    unsafe_code,
    reason = "the models read loom cells, whose access loom checks"
)]

mod commit;
mod publish;
mod relay;
mod rollover;
mod waiters;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Runs `f` under loom and prints how many executions it explored.
fn explore(name: &str, f: impl Fn() + Sync + Send + 'static) {
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = runs.clone();
    loom::model(move || {
        counted.fetch_add(1, Ordering::Relaxed);
        f();
    });
    let n = runs.load(Ordering::Relaxed);
    println!("loom model {name}: {n} interleavings explored");
    assert!(n > 0);
}
