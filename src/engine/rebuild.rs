//! The index rebuild at open: the rule that turns each recovered record
//! into its key's entry (DESIGN.md §6, steps 5 to 7). The log's replay
//! calls it for every record, as the sink it was given.

use super::state_of;
use crate::error::Result;
use crate::format::record::Tag;
use crate::index::{Entry, Index};
use crate::loc::seg_u32;
use crate::log::{Applied, Metas, Recovered, RecoveryView};
use crate::retention::{ceil_s, drop_after_s, gone, own_drop_after_ms};

/// Rebuilds one key's index entry from a recovered record.
pub(crate) fn apply_recovered(
    index: &Index,
    metas: &Metas,
    r: &Recovered<'_>,
    view: &RecoveryView<'_>,
    now_ms: u64,
    retention_ms: u64,
) -> Result<Applied> {
    let mut shard = index.shard(r.hash);
    let from_main = !view.is_claims(r.loc.segment);
    // A complete or release carries the generation of the claim it ends. If
    // an entry from the claim stream points at a claim of that same
    // generation (generations are sequence numbers, never reused), both
    // records are of one key and the main record is the later: decided
    // without reading either record. Any other case reads them below.
    let ends_claim = |e: &Entry| -> bool {
        let candidate = from_main
            && matches!(r.tag, Tag::Complete | Tag::Release)
            && view.is_claims(e.loc().segment);
        if !candidate {
            return false;
        }
        let own = r.generation.or_else(|| view.peek_generation(r.loc));
        own.is_some() && own == view.peek_generation(e.loc())
    };
    let mut ended_claim = false;
    // The record's own key is read only when another entry's hash matches.
    let mut own_key = r.key;
    let mut matches = |e: &Entry| -> Result<bool> {
        if ends_claim(e) {
            ended_claim = true;
            return Ok(true);
        }
        let key = match own_key {
            Some(k) => k,
            None => *own_key.insert(view.record(r.loc)?.key),
        };
        view.read(e.loc(), |other| other.key == key)
    };
    // One probe: the key's entry, or the place to insert it.
    let slot = shard.slot(r.hash, &mut matches)?;
    let prior = match &slot {
        crate::index::Slot::Occupied(o) => Some(*o.get()),
        crate::index::Slot::Vacant(_) => None,
    };
    if let Some(p) = prior.filter(|p| view.is_claims(p.loc().segment)) {
        // The claim stream was replayed first, so a main record can meet a
        // claim written after it. The later of the two stands; the older
        // is dead, and what it shadowed the claim shadows too.
        if from_main && !ended_claim {
            let seq = match r.seq {
                Some(seq) => seq,
                None => view.record(r.loc)?.seq,
            };
            if seq < view.record(p.loc())?.seq {
                let own = ceil_s(own_drop_after_ms(r.tag, r.until_ms, retention_ms));
                if let crate::index::Slot::Occupied(mut o) = slot {
                    let e = o.get_mut();
                    e.drop_after_s = e.drop_after_s.max(own);
                }
                return Ok(Applied {
                    drop_after_s: own,
                    kept: false,
                });
            }
        }
    }
    if let Some(p) = &prior {
        let prior_len = view.record_len(p.loc())?;
        metas.add_dead(p.loc().segment, seg_u32(prior_len));
    }
    let drop_after_s = drop_after_s(
        r.tag,
        r.until_ms,
        retention_ms,
        prior.map_or(0, |p| p.drop_after_s),
    );
    let entry = Entry::new(r.hash, r.loc, state_of(r.tag), drop_after_s);
    let kept = !gone(drop_after_s, now_ms);
    // Neither a record whose drop-after time passed nor anything it shadows
    // matters any more: it gets no entry.
    match slot {
        crate::index::Slot::Occupied(o) if !kept => {
            o.remove();
        }
        crate::index::Slot::Occupied(mut o) => *o.get_mut() = entry,
        crate::index::Slot::Vacant(_) if !kept => {}
        crate::index::Slot::Vacant(v) => {
            v.insert(entry);
        }
    }
    Ok(Applied { drop_after_s, kept })
}
