//! Sequence numbers: each stream counts its records on its own, and a
//! record's sequence number is `2 * counter + parity`, main even and claims
//! odd (DESIGN.md §3a), so the two streams never share a number.

use crate::durability::Stream;

/// The low bit of a stream's sequence numbers.
fn parity(s: Stream) -> u64 {
    match s {
        Stream::Main => 0,
        Stream::Claims => 1,
    }
}

/// The sequence number of counter `count` in stream `s`.
pub(super) fn seq_of(s: Stream, count: u64) -> u64 {
    2 * count + parity(s)
}

/// The smallest counter of stream `s` whose sequence number is at least `seq`.
pub(super) fn count_at_least(s: Stream, seq: u64) -> u64 {
    seq.saturating_sub(parity(s)).div_ceil(2)
}
