//! redb: a copy-on-write B-tree with serialized write transactions.
//!
//! A claim first reads in a read transaction (the common replay path), then,
//! if the key is free, runs a write transaction that reads it again, inserts
//! the in-progress record and commits with `Durability::Immediate` when
//! durable and `Durability::None` otherwise.

use super::{
    Engine, Outcome, Result, Tail, classify, encode_completed, encode_in_progress, now_ms,
    outcome_of,
};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use std::path::Path;

const RECORDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("records");

/// A redb database file with one table for the records.
pub struct Redb {
    db: Database,
    durability: Durability,
}

impl Redb {
    fn write_txn(&self) -> Result<redb::WriteTransaction> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(self.durability)?;
        Ok(txn)
    }
}

impl Engine for Redb {
    type Ticket = ();
    type Response = Tail<Vec<u8>>;

    fn open(dir: &Path, durable: bool) -> Result<Self> {
        let db = Database::create(dir.join("records.redb"))?;
        let durability = if durable {
            Durability::Immediate
        } else {
            Durability::None
        };
        let engine = Redb { db, durability };
        // Create the table once, so read transactions find it.
        let mut txn = engine.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        txn.open_table(RECORDS)?;
        txn.commit()?;
        Ok(engine)
    }

    fn claim(&self, key: &[u8], fp: u128) -> Result<Outcome<(), Tail<Vec<u8>>>> {
        let now = now_ms();
        {
            let txn = self.db.begin_read()?;
            let table = txn.open_table(RECORDS)?;
            if let Some(rec) = table.get(key)? {
                let rec = rec.value().to_vec();
                if let Some(out) = outcome_of(classify(&rec, fp, now)?, rec) {
                    return Ok(out);
                }
            }
        }
        let txn = self.write_txn()?;
        {
            let mut table = txn.open_table(RECORDS)?;
            if let Some(rec) = table.get(key)? {
                let rec = rec.value().to_vec();
                if let Some(out) = outcome_of(classify(&rec, fp, now)?, rec) {
                    return Ok(out);
                }
            }
            table.insert(key, &encode_in_progress(fp, now)[..])?;
        }
        txn.commit()?;
        Ok(Outcome::Acquired(()))
    }

    fn complete(&self, key: &[u8], fp: u128, _ticket: (), response: &[u8]) -> Result<()> {
        let txn = self.write_txn()?;
        {
            let mut table = txn.open_table(RECORDS)?;
            table.insert(key, &encode_completed(fp, now_ms(), response)[..])?;
        }
        txn.commit()?;
        Ok(())
    }
}
