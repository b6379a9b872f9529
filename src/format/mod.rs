//! The on-disk format: segment headers, records and hint files.
//!
//! DESIGN.md draws every byte of both; the golden test in this module checks
//! the encoders against those tables so the document cannot drift.

pub(crate) mod hint;
pub(crate) mod record;
pub(crate) mod segment;

/// The format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

#[cfg(test)]
mod golden;
