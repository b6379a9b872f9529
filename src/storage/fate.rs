//! What a power loss does to a write that was never fsynced, page by page.
//!
//! A kernel writes a file back to the disk in pages, in any order, and a
//! disk persists sectors, not whole writes: after a power cut, one unsynced
//! write may have reached the disk in some of its pages and not in others,
//! a later page surviving an earlier one, and a page may be half written, a
//! sector at a time. [`SimStorage`](super::SimStorage) decides the fate of
//! every page of every unsynced write on its own, so recovery meets every
//! such state in tests.

use std::path::Path;

/// Bytes of a page: the unit the page cache writes back.
pub const PAGE_BYTES: u64 = 4096;
/// Bytes of a sector: the unit a disk writes atomically.
pub const SECTOR_BYTES: u64 = 512;

/// One page of a write that was not fsynced, as a power loss meets it: the
/// part of the write that falls in one aligned page of its file.
#[derive(Debug, Clone, Copy)]
pub struct UnsyncedPage<'a> {
    /// The file, by the name it has after the power loss.
    pub path: &'a Path,
    /// Which of the file's unsynced writes this page belongs to, oldest
    /// first from 0.
    pub write: usize,
    /// Which page of that write, from 0.
    pub page: usize,
    /// File offset of the page's first byte of the write.
    pub offset: u64,
    /// Bytes of the write in this page.
    pub len: usize,
}

/// What becomes of one page of an unsynced write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageFate {
    /// It reached the disk.
    Kept,
    /// It never reached the disk: the old contents stay, or zeros where
    /// the file had none but a kept later page extended it.
    Lost,
    /// The disk holds zeros there (the file's size was updated but the
    /// data was not written).
    Zeroed,
    /// The disk holds garbage there.
    Garbled,
    /// Each 512-byte sector of the page was kept or lost on its own.
    Torn,
}

/// A small deterministic generator (SplitMix64), so a seed names a crash.
pub(super) struct SplitMix(pub(super) u64);

impl SplitMix {
    pub(super) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub(super) fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }

    /// A fate drawn at random: most pages kept or lost, the rest zeroed,
    /// garbled or torn by sectors.
    pub(super) fn page_fate(&mut self) -> PageFate {
        match self.below(20) {
            0..=7 => PageFate::Kept,
            8..=12 => PageFate::Lost,
            13..=14 => PageFate::Zeroed,
            15..=16 => PageFate::Garbled,
            _ => PageFate::Torn,
        }
    }
}

/// Splits a write of `len` bytes at `offset` at page boundaries: the
/// `(offset, start, end)` of each piece, `start..end` within the write.
pub(super) fn pages(offset: u64, len: usize) -> impl Iterator<Item = (u64, usize, usize)> {
    let mut start = 0usize;
    std::iter::from_fn(move || {
        if start >= len {
            return None;
        }
        let at = offset + start as u64;
        let room = (PAGE_BYTES - at % PAGE_BYTES) as usize;
        let end = (start + room).min(len);
        let piece = (at, start, end);
        start = end;
        Some(piece)
    })
}

/// Applies one page of a write to `data` according to `fate`.
pub(super) fn apply_page(
    data: &mut Vec<u8>,
    offset: u64,
    bytes: &[u8],
    fate: PageFate,
    rng: &mut SplitMix,
) {
    match fate {
        PageFate::Kept => write_into(data, offset, bytes),
        PageFate::Lost => {}
        PageFate::Zeroed => write_into(data, offset, &vec![0; bytes.len()]),
        PageFate::Garbled => {
            let garbage: Vec<u8> = bytes.iter().map(|_| rng.next() as u8).collect();
            write_into(data, offset, &garbage);
        }
        PageFate::Torn => {
            let mut start = 0usize;
            while start < bytes.len() {
                let at = offset + start as u64;
                let end = (start + (SECTOR_BYTES - at % SECTOR_BYTES) as usize).min(bytes.len());
                if rng.below(2) == 0 {
                    write_into(data, at, &bytes[start..end]);
                }
                start = end;
            }
        }
    }
}

/// Writes `w` at `offset`, growing `data` with zeros if it is shorter.
pub(super) fn write_into(data: &mut Vec<u8>, offset: u64, w: &[u8]) {
    let offset = offset as usize;
    if data.len() < offset + w.len() {
        data.resize(offset + w.len(), 0);
    }
    data[offset..offset + w.len()].copy_from_slice(w);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_split_at_page_boundaries() {
        let got: Vec<_> = pages(4000, 5000).collect();
        assert_eq!(
            got,
            vec![(4000, 0, 96), (4096, 96, 4192), (8192, 4192, 5000)]
        );
        assert_eq!(pages(8192, 10).collect::<Vec<_>>(), vec![(8192, 0, 10)]);
        assert_eq!(pages(0, 0).count(), 0);
    }

    #[test]
    fn a_torn_page_keeps_or_loses_whole_sectors() {
        let mut rng = SplitMix(7);
        for _ in 0..20 {
            let mut data = vec![0u8; 4096];
            apply_page(&mut data, 0, &[0xAB; 4096], PageFate::Torn, &mut rng);
            for sector in data.chunks(SECTOR_BYTES as usize) {
                let first = sector[0];
                assert!(sector.iter().all(|&b| b == first), "a sector is atomic");
            }
        }
    }
}
