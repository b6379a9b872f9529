//! Sharing between cores without contention: values alone on a cache line,
//! and a stripe per thread for data that every thread writes often (counters)
//! or locks often (the segment table's read lock).

use std::sync::atomic::{AtomicUsize, Ordering};

/// Stripes per striped value: threads spread over them, so two threads at
/// once rarely share one.
pub(crate) const STRIPES: usize = 8;

/// A value alone on its cache line (128 bytes covers adjacent-line
/// prefetching), so cores writing neighbouring values do not contend.
#[derive(Default)]
#[repr(align(128))]
pub(crate) struct Padded<T>(pub T);

/// The calling thread's stripe, below [`STRIPES`], handed out round-robin
/// on first use.
pub(crate) fn stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: usize = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
    }
    STRIPE.with(|s| *s)
}
