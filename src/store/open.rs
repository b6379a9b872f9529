//! Opening a store (recovery, the background threads) and closing it.

use super::{Inner, Store};
use crate::clock::duration_ms;
use crate::durability::{Durability, PerStream, Stream};
use crate::engine::Engine;
use crate::engine::compaction::Compaction;
use crate::engine::rebuild::apply_recovered;
use crate::error::{Error, Result, io_context};
use crate::index::Index;
use crate::log::{LogConfig, Metas, claim_segment_size, recover};
use crate::observe::event;
use crate::options::Options;
use crossbeam_channel::{RecvTimeoutError, Sender};
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

impl Drop for Inner {
    fn drop(&mut self) {
        for (stop, thread) in self.workers.drain(..) {
            drop(stop);
            let _ = thread.join();
        }
        self.engine.service.stop();
        for thread in self.service.drain(..) {
            let _ = thread.join();
        }
        if self.engine.log.is_poisoned() {
            // Nothing more is written to a poisoned log.
        } else if self.settle_on_close {
            // Sync, settle the segments as the background compactor would,
            // prove the active segments durable with a sync mark per
            // stream, and move the claim stream past a segment nothing
            // needs any more.
            self.engine.close();
        } else {
            // Sync, then prove it on disk with a sync mark per stream.
            let _ = self.engine.log.close(self.engine.clock.now_ms());
        }
    }
}

impl Options {
    /// Opens (or creates) the store in `dir`.
    pub fn open(self, dir: impl AsRef<Path>) -> Result<Store> {
        self.validate()?;
        Store::open_with(dir.as_ref(), self)
    }
}

impl Store {
    /// Opens (or creates) the store in `dir` with default [`Options`].
    pub fn open(dir: impl AsRef<Path>) -> Result<Store> {
        Options::new().open(dir)
    }

    pub(crate) fn open_with(dir: &Path, opts: Options) -> Result<Store> {
        let storage = opts.storage.clone();
        storage
            .create_dir_all(dir)
            .map_err(|e| io_context("create directory", dir, e))?;
        let lock = crate::options::lock_dir(&*storage, dir)?;
        let now_ms = opts.clock.now_ms();
        let retention_ms = duration_ms(opts.retention);
        let segment_size = usize::try_from(opts.segment_size)
            .map_err(|_| Error::InvalidOptions("segment_size does not fit in memory".into()))?;
        let index = Index::new();
        let metas = Arc::new(Metas::default());
        #[cfg(feature = "tracing")]
        let started = std::time::Instant::now();
        let (log, recovery) = recover(
            storage,
            dir,
            LogConfig {
                durability: opts.durability,
                segment_size: PerStream([
                    segment_size,
                    claim_segment_size(segment_size, opts.max_key_len),
                ]),
                preallocate: opts.preallocate,
            },
            metas.clone(),
            |keys, threads| index.reserve(keys, threads),
            |r, view| apply_recovered(&index, &metas, r, view, now_ms, retention_ms),
        )
        .inspect_err(|_e| event!(error, dir = %dir.display(), error = %_e, "open failed"))?;
        event!(
            info,
            dir = %dir.display(),
            records_scanned = recovery.records,
            segments_from_hints = recovery.hinted_segments,
            hint_bytes_written = recovery.hint_bytes_written,
            torn_tail_bytes_truncated = recovery.torn_tail_bytes,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "store opened"
        );
        let engine = Arc::new(Engine {
            log,
            index,
            clock: opts.clock,
            durability: opts.durability,
            lease_ms: duration_ms(opts.lease),
            compaction: Compaction::new(opts.compaction_threshold),
            retention_ms,
            max_key_len: opts.max_key_len,
            max_response_len: opts.max_response_len,
            counters: crate::stats::Counters::default(),
            namespaces: crate::observe::Namespaces::new(&opts.namespaces),
            waiters: Default::default(),
            service: Default::default(),
            recovery,
            dir: dir.to_path_buf(),
            _lock: lock,
        });
        let mut workers = Vec::new();
        if let Durability::Periodic(every) = opts.durability {
            workers.push(spawn_worker("idemkv-sync", engine.clone(), every, |e| {
                e.log.sync()
            })?);
        }
        if let Some(every) = opts.metrics_interval
            && cfg!(feature = "metrics")
        {
            workers.push(spawn_worker(
                "idemkv-metrics",
                engine.clone(),
                every,
                |e| {
                    crate::observe::publish(&e.stats(false));
                    Ok(())
                },
            )?);
        }
        if opts.background_compaction {
            workers.push(spawn_compactor(engine.clone(), opts.compaction_interval)?);
        }
        let service = [
            (Stream::Main, "idemkv-service"),
            (Stream::Claims, "idemkv-service-claims"),
        ]
        .into_iter()
        .map(|(stream, name)| {
            let engine = engine.clone();
            std::thread::Builder::new()
                .name(name.into())
                .spawn(move || engine.service.run(&engine.log, stream))
                .map_err(Error::Io)
        })
        .collect::<Result<Vec<_>>>()?;
        Ok(Store {
            inner: Arc::new(Inner {
                engine,
                workers,
                service,
                settle_on_close: opts.background_compaction,
            }),
        })
    }
}

/// Runs `work` every `every` until the returned sender is dropped, or until
/// the store is poisoned (writers then see the error; nothing to retry).
fn spawn_worker(
    name: &str,
    engine: Arc<Engine>,
    every: Duration,
    work: fn(&Engine) -> Result<()>,
) -> Result<(Sender<()>, JoinHandle<()>)> {
    let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
    let thread = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                if work(&engine).is_err() && engine.log.is_poisoned() {
                    break;
                }
            }
        })
        .map_err(Error::Io)?;
    Ok((stop, thread))
}

/// The background compactor: a pass every `every`, and one as soon as a
/// rollover finds a sealed segment with work (`Compaction::after_write`),
/// until the returned sender is dropped or the store is poisoned.
fn spawn_compactor(engine: Arc<Engine>, every: Duration) -> Result<(Sender<()>, JoinHandle<()>)> {
    let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
    let (wake, woken) = crossbeam_channel::bounded::<()>(1);
    engine.compaction.set_wake(wake);
    let thread = std::thread::Builder::new()
        .name("idemkv-compact".into())
        .spawn(move || {
            loop {
                crossbeam_channel::select! {
                    recv(stopped) -> _ => break,
                    recv(woken) -> _ => {}
                    default(every) => engine.log.release_idle_spares(),
                }
                if engine.compact().is_err() && engine.log.is_poisoned() {
                    break;
                }
            }
        })
        .map_err(Error::Io)?;
    Ok((stop, thread))
}
