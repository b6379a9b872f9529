//! Sharing between cores without contention: values alone on a cache line,
//! and a stripe per thread for data that every thread writes often (counters)
//! or locks often (the segment table's read lock).

use std::sync::atomic::Ordering;

/// Stripes per striped value: threads spread over them, so two threads at
/// once rarely share one.
#[cfg(not(idemkv_loom))]
pub(crate) const STRIPES: usize = 8;
/// Two stripes under loom: enough for two readers on different stripes, and
/// fewer locks for a writer to take in every interleaving.
#[cfg(idemkv_loom)]
pub(crate) const STRIPES: usize = 2;

/// A value alone on its cache line (128 bytes covers adjacent-line
/// prefetching), so cores writing neighbouring values do not contend.
#[derive(Default)]
#[repr(align(128))]
pub(crate) struct Padded<T>(pub T);

/// The calling thread's stripe, below [`STRIPES`], handed out round-robin
/// on first use.
#[cfg(not(idemkv_loom))]
pub(crate) fn stripe() -> usize {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    thread_local! {
        static STRIPE: usize = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
    }
    STRIPE.with(|s| *s)
}

/// The calling thread's stripe: under loom, handed out per model thread in
/// the order the threads first ask, so an execution replays the same way.
#[cfg(idemkv_loom)]
pub(crate) fn stripe() -> usize {
    loom::lazy_static! {
        static ref NEXT: loom::sync::atomic::AtomicUsize = loom::sync::atomic::AtomicUsize::new(0);
    }
    loom::thread_local! {
        static STRIPE: usize = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
    }
    STRIPE.with(|s| *s)
}
