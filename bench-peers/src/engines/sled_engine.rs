//! sled: a lock-free B+ tree with compare-and-swap.
//!
//! A claim is `compare_and_swap(key, None, in_progress)`; when it fails the
//! current value decides the outcome (and an expired record is swapped out).
//! Durable mode calls `flush` after every write; otherwise sled's default
//! background flush (every 500 ms) runs.

use super::{
    Engine, Outcome, Result, Tail, classify, encode_completed, encode_in_progress, now_ms,
    outcome_of,
};
use sled::IVec;
use std::path::Path;

/// A sled database; records live in its default tree.
pub struct Sled {
    db: sled::Db,
    durable: bool,
}

impl Sled {
    fn settle(&self) -> Result<()> {
        if self.durable {
            self.db.flush()?;
        }
        Ok(())
    }
}

impl Engine for Sled {
    type Ticket = ();
    type Response = Tail<IVec>;

    fn open(dir: &Path, durable: bool) -> Result<Self> {
        let db = sled::Config::new().path(dir).open()?;
        Ok(Sled { db, durable })
    }

    fn claim(&self, key: &[u8], fp: u128) -> Result<Outcome<(), Tail<IVec>>> {
        let now = now_ms();
        let mut expected: Option<IVec> = None;
        loop {
            let swap = self.db.compare_and_swap(
                key,
                expected.as_ref(),
                Some(&encode_in_progress(fp, now)[..]),
            )?;
            match swap {
                Ok(()) => {
                    self.settle()?;
                    return Ok(Outcome::Acquired(()));
                }
                Err(conflict) => {
                    let Some(current) = conflict.current else {
                        expected = None;
                        continue;
                    };
                    let found = classify(&current, fp, now)?;
                    match outcome_of(found, current.clone()) {
                        Some(out) => return Ok(out),
                        None => expected = Some(current),
                    }
                }
            }
        }
    }

    fn complete(&self, key: &[u8], fp: u128, _ticket: (), response: &[u8]) -> Result<()> {
        self.db
            .insert(key, encode_completed(fp, now_ms(), response))?;
        self.settle()
    }
}
