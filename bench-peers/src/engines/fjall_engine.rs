//! fjall: an LSM tree, used through its single-writer transactions.
//!
//! A claim first reads without the writer lock (the common replay path),
//! then, if the key is free, runs a write transaction that reads it again and
//! inserts the in-progress record. Commits use `PersistMode::SyncData` when
//! durable and `PersistMode::Buffer` otherwise.

use super::{
    Engine, Outcome, Result, Tail, classify, encode_completed, encode_in_progress, now_ms,
    outcome_of,
};
use fjall::{
    KeyspaceCreateOptions, PersistMode, Readable, SingleWriterTxDatabase, SingleWriterTxKeyspace,
    Slice,
};
use std::path::Path;

/// A fjall database with one keyspace for the records.
pub struct Fjall {
    db: SingleWriterTxDatabase,
    records: SingleWriterTxKeyspace,
    mode: PersistMode,
}

impl Engine for Fjall {
    type Ticket = ();
    type Response = Tail<Slice>;

    fn open(dir: &Path, durable: bool) -> Result<Self> {
        let db = SingleWriterTxDatabase::builder(dir).open()?;
        let records = db.keyspace("records", KeyspaceCreateOptions::default)?;
        let mode = if durable {
            PersistMode::SyncData
        } else {
            PersistMode::Buffer
        };
        Ok(Fjall { db, records, mode })
    }

    fn claim(&self, key: &[u8], fp: u128) -> Result<Outcome<(), Tail<Slice>>> {
        let now = now_ms();
        if let Some(rec) = self.records.get(key)?
            && let Some(out) = outcome_of(classify(&rec, fp, now)?, rec)
        {
            return Ok(out);
        }
        let mut tx = self.db.write_tx().durability(Some(self.mode));
        if let Some(rec) = tx.get(&self.records, key)?
            && let Some(out) = outcome_of(classify(&rec, fp, now)?, rec)
        {
            return Ok(out);
        }
        tx.insert(&self.records, key, encode_in_progress(fp, now));
        tx.commit()?;
        Ok(Outcome::Acquired(()))
    }

    fn complete(&self, key: &[u8], fp: u128, _ticket: (), response: &[u8]) -> Result<()> {
        let mut tx = self.db.write_tx().durability(Some(self.mode));
        tx.insert(&self.records, key, encode_completed(fp, now_ms(), response));
        tx.commit()?;
        Ok(())
    }
}
