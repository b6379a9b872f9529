//! The on-disk format: segment headers, records and hint files.
//!
//! DESIGN.md draws every byte of both; the golden test in this module checks
//! the encoders against those tables so the document cannot drift.

pub(crate) mod bytes;
pub(crate) mod hint;
pub(crate) mod record;
pub(crate) mod segment;

/// The format version this build writes. It reads this version and every
/// one back to [`OLDEST_FORMAT_VERSION`].
///
/// Version 3 added sync marks (record tag 6), which let open tell a torn,
/// never-synced tail from damage to fsynced data; version 2 added the claim
/// stream (segment header flag bit 0); version 1 segments read as
/// main-stream segments.
pub const FORMAT_VERSION: u32 = 3;

/// The oldest format version this build reads.
pub const OLDEST_FORMAT_VERSION: u32 = 1;

#[cfg(test)]
mod golden;
