//! The stream's last segment opened from the hint closing wrote for it
//! (DESIGN.md §6, "The last segment's hint").

use super::hinted::Hinted;
use super::view::{Applied, Recovered, RecoveryView};
use super::{BatchSource, RecoveryReport, Replay, ViewBase};
use crate::error::{Result, io_context};
use crate::log::Sealed;
use crate::storage::read_all;
use std::collections::BTreeMap;

impl<F> Replay<'_, F>
where
    F: Fn(&Recovered<'_>, &RecoveryView<'_>) -> Result<Applied> + Sync,
{
    /// The stream's last segment from the hint closing wrote for it, if
    /// that hint passes every check against the file as it is (same id,
    /// same length): its bytes are read for the active buffer but not
    /// decoded. `None`: scan it. Sound because the hint was written after
    /// the closing sync, so it describes bytes that were all durable, and
    /// an active segment's bytes below a durable length never change (it
    /// only grows; a torn tail is cut only past what was fsynced; `repair`
    /// deletes the hint of a segment it rewrites): whenever the file has
    /// the hint's length again, it holds the bytes the hint describes
    /// (DESIGN.md §6, "The last segment's hint").
    pub(super) fn last_from_hint(
        &self,
        id: u32,
        next_seq: &mut u64,
        report: &mut RecoveryReport,
        sealed: &BTreeMap<u32, Sealed>,
        base: ViewBase<'_>,
    ) -> Result<Option<Vec<u8>>> {
        let f = &self.found[&id];
        let len = f.file.len().map_err(|e| io_context("stat", &f.path, e))?;
        let mut entries = vec![];
        let Some(Ok(Some(hint))) = self.read_hints(&[id], 1, &mut entries).pop() else {
            return Ok(None);
        };
        let bytes = read_all(&*f.file).map_err(|e| io_context("read", &f.path, e))?;
        if bytes.len() as u64 != len {
            return Ok(None);
        }
        *next_seq = (*next_seq)
            .max(f.header.first_seq)
            .max(hint.header.last_seq + 1);
        let mut batch = vec![Hinted {
            id,
            len,
            hint,
            last: true,
        }];
        let threads = self.threads;
        let current = Some((id, &bytes[..]));
        let source = BatchSource {
            entries: &entries,
            current,
        };
        self.apply_batch(&mut batch, sealed, base, report, threads, source)?;
        // Not a sealed segment: counted apart.
        report.hinted_segments -= 1;
        report.hinted_last_segments += 1;
        Ok(Some(bytes))
    }
}
