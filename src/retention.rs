//! When records stop mattering: the retention rules in one place.
//!
//! Every index entry carries a drop-after second (DESIGN.md §4): the later
//! of its own record's end and that of every older record of its key it
//! shadows. An entry, its record and everything it shadows may go once that
//! second has passed; compaction, recovery and the engine all ask here.

use crate::format::record::Tag;

/// Whether an entry that may be dropped after `drop_after_s` is gone at `now_ms`.
pub(crate) fn gone(drop_after_s: u32, now_ms: u64) -> bool {
    u64::from(drop_after_s) * 1000 <= now_ms
}

/// When a record alone stops mattering: an in-progress claim one retention
/// period after its lease, a completed or seen record at its expiry, a
/// tombstone at once (it matters only through what it shadows).
pub(crate) fn own_drop_after_ms(tag: Tag, until_ms: u64, retention_ms: u64) -> u64 {
    match tag {
        Tag::Claim => until_ms.saturating_add(retention_ms),
        Tag::Complete | Tag::Seen => until_ms,
        Tag::Release | Tag::Remove => 0,
    }
}

/// The drop-after second of a new record's entry: the later of its own end
/// and that of the entry it replaces, so it keeps shadowing whatever the
/// older records of its key shadowed.
pub(crate) fn drop_after_s(tag: Tag, until_ms: u64, retention_ms: u64, prior_drop_s: u32) -> u32 {
    ceil_s(own_drop_after_ms(tag, until_ms, retention_ms)).max(prior_drop_s)
}

/// A unix-ms time as the unix second at or after it, saturating.
pub(crate) fn ceil_s(ms: u64) -> u32 {
    u32::try_from(ms.div_ceil(1000)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_round_up() {
        assert_eq!(
            (ceil_s(0), ceil_s(1), ceil_s(1000), ceil_s(1001)),
            (0, 1, 1, 2)
        );
        assert_eq!(ceil_s(u64::MAX), u32::MAX);
    }
}
