//! Segment files: creating one, giving it its whole size on disk ahead of
//! the appends (DESIGN.md §5, "Preallocation"), and cutting the active
//! ones back to their records when the store closes.

use super::active::PublishedBuf;
use super::numbering::seq_of;
use super::{Active, Log, SegMeta};
use crate::durability::Stream;
use crate::error::{Result, io_context};
use crate::format::segment::{SEGMENT_HEADER_LEN, SegmentHeader, segment_file_name};
use crate::storage::{Storage, StorageFile};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

impl Log {
    /// Cuts each active segment file to what is written, giving back the
    /// space preallocated past it, and fsyncs it: a closed store's files
    /// end at their last record, so the next open reads no zeros.
    pub(super) fn cut_preallocation(&self) -> Result<()> {
        for st in &self.streams.0 {
            let mut flush = st.flush.lock();
            // SAFETY: the write-out lock is held, so no rollover swaps it.
            let active = unsafe { &*st.active.load(Ordering::Acquire) };
            let path = &active.path;
            // Nothing past the records (never preallocated, or cut
            // already): no fsync either.
            if cut_to(&*active.file, flush.flushed).map_err(|e| self.fail("truncate", path, e))? {
                active
                    .file
                    .sync_data()
                    .map_err(|e| self.fail("fsync", path, e))?;
            }
            flush.allocated = 0;
        }
        Ok(())
    }
}

/// Cuts `file` to `len` bytes if it holds more (space preallocated or
/// zeros written past its records, or a torn tail); returns whether it
/// did, so that the caller fsyncs only a file that changed.
pub(crate) fn cut_to(file: &dyn StorageFile, len: usize) -> std::io::Result<bool> {
    let len = len as u64;
    if file.len().is_ok_and(|now| now <= len) {
        return Ok(false);
    }
    file.set_len(len)?;
    Ok(true)
}

/// Gives a segment file its whole size on disk, `len` bytes that read as
/// zeros past what is written, so appends below `len` change no file size
/// (DESIGN.md §5, "Preallocation"). Best effort: a file system without
/// room or support leaves the file growing as it is written.
/// Returns the length the file was given: `len`, or 0 when it was not.
pub(crate) fn preallocate(file: &dyn StorageFile, _path: &Path, len: usize) -> usize {
    match file.allocate(len as u64) {
        Ok(()) => len,
        Err(_e) => {
            crate::observe::event!(
                warn,
                path = %_path.display(),
                error = %_e,
                "segment not preallocated; it grows as it is written"
            );
            0
        }
    }
}

/// A segment to create.
pub(crate) struct NewSegment {
    pub id: u32,
    pub stream: Stream,
    /// The counter its first record gets.
    pub base: u64,
    /// Its size: the capacity of its buffer.
    pub size: usize,
    /// Whether the file gets its whole size on disk at once.
    pub preallocate: bool,
    /// An empty allocation of at least `size` bytes for its buffer, from a
    /// sealed segment ([`PublishedBuf::take_allocation`]), or none.
    pub buffer: Option<Vec<u8>>,
}

/// Creates a segment file with its header (and, with `preallocate`, its
/// whole size on disk), fsyncs it and the directory.
pub(crate) fn create_segment(
    storage: &dyn Storage,
    dir: &Path,
    new: NewSegment,
    meta: Arc<SegMeta>,
) -> Result<Active> {
    let NewSegment {
        id,
        stream,
        base,
        size: segment_size,
        preallocate,
        buffer,
    } = new;
    let path = dir.join(segment_file_name(id));
    let file = storage
        .create(&path)
        .map_err(|e| io_context("create", &path, e))?;
    let header = SegmentHeader::new(id, seq_of(stream, base), stream).encode();
    file.write_all_at(0, &header)
        .map_err(|e| io_context("write", &path, e))?;
    let allocated = match preallocate {
        true => self::preallocate(&*file, &path, segment_size),
        false => 0,
    };
    file.sync_data()
        .map_err(|e| io_context("fsync", &path, e))?;
    storage
        .sync_dir(dir)
        .map_err(|e| io_context("fsync directory", dir, e))?;
    let mut buf = match buffer {
        Some(bytes) if bytes.capacity() >= segment_size => PublishedBuf::from(bytes),
        _ => PublishedBuf::with_capacity(segment_size),
    };
    buf.append(&header, 0);
    // The header is durable and needs no mark.
    meta.synced_len
        .fetch_max(SEGMENT_HEADER_LEN as u64, Ordering::Relaxed);
    meta.marked_len
        .fetch_max(SEGMENT_HEADER_LEN as u64, Ordering::Relaxed);
    Ok(Active {
        id,
        path,
        file,
        buf,
        base,
        meta,
        allocated,
    })
}
