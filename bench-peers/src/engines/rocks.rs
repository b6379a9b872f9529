//! RocksDB through its pessimistic `TransactionDB`, with the WAL on.
//!
//! A claim reads without a transaction first (the common replay path), then,
//! if the key is free, runs a transaction with `get_for_update` and `put`.
//! Durable mode commits with `WriteOptions::set_sync(true)`.

use super::{
    Engine, Outcome, Result, Tail, classify, encode_completed, encode_in_progress, now_ms,
    outcome_of,
};
use rocksdb::{Options, TransactionDB, TransactionDBOptions, TransactionOptions, WriteOptions};
use std::path::Path;

/// A RocksDB transaction database.
pub struct Rocks {
    db: TransactionDB,
    durable: bool,
}

impl Rocks {
    fn write_options(&self) -> WriteOptions {
        let mut w = WriteOptions::default();
        w.set_sync(self.durable);
        w
    }
}

impl Engine for Rocks {
    type Ticket = ();
    type Response = Tail<Vec<u8>>;

    fn open(dir: &Path, durable: bool) -> Result<Self> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        let db = TransactionDB::open(&opts, &TransactionDBOptions::default(), dir)?;
        Ok(Rocks { db, durable })
    }

    fn claim(&self, key: &[u8], fp: u128) -> Result<Outcome<(), Tail<Vec<u8>>>> {
        let now = now_ms();
        if let Some(rec) = self.db.get(key)?
            && let Some(out) = outcome_of(classify(&rec, fp, now)?, rec)
        {
            return Ok(out);
        }
        let txn = self
            .db
            .transaction_opt(&self.write_options(), &TransactionOptions::default());
        if let Some(rec) = txn.get_for_update(key, true)?
            && let Some(out) = outcome_of(classify(&rec, fp, now)?, rec)
        {
            return Ok(out);
        }
        txn.put(key, encode_in_progress(fp, now))?;
        txn.commit()?;
        Ok(Outcome::Acquired(()))
    }

    fn complete(&self, key: &[u8], fp: u128, _ticket: (), response: &[u8]) -> Result<()> {
        self.db.put_opt(
            key,
            encode_completed(fp, now_ms(), response),
            &self.write_options(),
        )?;
        Ok(())
    }
}
