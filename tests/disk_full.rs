//! A real full disk: a store on a small tmpfs written until the kernel
//! answers `ENOSPC`.
//!
//! The test mounts its own 8 MiB tmpfs, so it needs root (CI runs as
//! root). tmpfs answers `ENOSPC` on the `pwrite` that finds no free page,
//! as a block file system does when it runs out of blocks (its fsync never
//! fails, so this is the write path's full disk, not fsyncgate's). Without
//! root, or where mounting fails, the test fails and says how to run it;
//! `IDEMKV_SKIP_REAL_FS=1` skips it on purpose, saying so.

use idemkv::{Claim, Durability, Error, Fingerprint, Options, Record, Store};
use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// Size of the file system.
const FS_SIZE: &str = "8m";
/// Bytes set aside before the store fills the rest, freed afterwards.
const FILLER_BYTES: usize = 1 << 20;

/// A mounted tmpfs, unmounted on drop (also when the test fails).
struct Tmpfs {
    mountpoint: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "idemkv-test"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs {
            mountpoint: dir.path().to_path_buf(),
            _dir: dir,
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.mountpoint)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Something still holds it open: detach it now, it goes when freed.
            let _ = Command::new("umount")
                .arg("-l")
                .arg(&self.mountpoint)
                .status();
        }
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(2))
            == Some("0")
    })
}

/// Mounts the file system, or reports loudly why it cannot: a failure,
/// unless skipping was asked for.
fn mount_or_report() -> Option<Tmpfs> {
    let why = if is_root() {
        match Tmpfs::mount(FS_SIZE) {
            Ok(fs) => return Some(fs),
            Err(e) => e,
        }
    } else {
        "not running as root, and mounting a tmpfs needs root".to_string()
    };
    let message = format!(
        "disk_full NOT RUN: {why}.\n  Run it as root (CI does): sudo -E cargo test --test disk_full\n  \
         or set IDEMKV_SKIP_REAL_FS=1 to skip it on purpose."
    );
    if std::env::var_os("IDEMKV_SKIP_REAL_FS").is_some_and(|v| v == "1") {
        eprintln!("{message}\n  SKIPPED (IDEMKV_SKIP_REAL_FS=1)");
        return None;
    }
    panic!("{message}");
}

fn options() -> Options {
    Options::new()
        .durability(Durability::Immediate)
        .segment_size(256 << 10)
        .max_response_len(4096)
        .background_compaction(false)
}

fn key(i: usize) -> String {
    format!("tenant-7:POST /orders:{i:06}")
}

fn response(i: usize) -> Vec<u8> {
    let mut r = format!("201 order {i} ").into_bytes();
    r.extend((0..1000).map(|j| b'a' + ((i + j) % 26) as u8));
    r
}

fn fp(i: usize) -> Fingerprint {
    Fingerprint::of(key(i).as_bytes())
}

/// What the store acknowledged, key by key.
#[derive(Debug, Clone, PartialEq)]
enum Acked {
    /// `claim` answered `Acquired`; `complete` did not succeed.
    Claimed,
    /// `complete` succeeded with this response.
    Completed(Vec<u8>),
}

/// Claims and completes keys until an operation fails; returns what was
/// acknowledged and the error.
fn fill(store: &Store) -> (BTreeMap<usize, Acked>, Error) {
    let mut acked = BTreeMap::new();
    for i in 0.. {
        let ticket = match store.claim(key(i), fp(i)) {
            Ok(Claim::Acquired(t)) => t,
            Ok(other) => panic!("key {i} is fresh, got {other:?}"),
            Err(e) => return (acked, e),
        };
        acked.insert(i, Acked::Claimed);
        if let Err(e) = store.complete(ticket, &response(i)) {
            return (acked, e);
        }
        acked.insert(i, Acked::Completed(response(i)));
    }
    unreachable!()
}

/// Every acknowledged key reads back exactly; a key whose complete failed
/// is in progress or completed with its own response (the record may have
/// reached the file before the failure), never anything else.
fn check_acknowledged(store: &Store, acked: &BTreeMap<usize, Acked>) {
    for (&i, a) in acked {
        let answer = store.claim(key(i), fp(i)).unwrap();
        match (a, &answer) {
            (Acked::Completed(r), Claim::Replay(done)) => {
                assert_eq!(done.response(), r.as_slice(), "key {i}")
            }
            (Acked::Claimed, Claim::InProgress { .. }) => {}
            (Acked::Claimed, Claim::Replay(done)) => {
                assert_eq!(done.response(), response(i).as_slice(), "key {i}")
            }
            _ => panic!("key {i}: acknowledged {a:?}, found {answer:?}"),
        }
    }
}

#[test]
fn a_full_disk_poisons_the_store_and_loses_nothing_acknowledged() {
    let Some(fs) = mount_or_report() else {
        return;
    };
    let root = fs.mountpoint.clone();
    let dir = root.join("store");
    // Space set aside now, given back once the disk is full.
    let filler = root.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    f.write_all(&vec![0x5a; FILLER_BYTES]).unwrap();
    f.sync_all().unwrap();
    drop(f);

    let store = options().open(&dir).unwrap();
    let (acked, err) = fill(&store);
    let completed = acked
        .values()
        .filter(|a| matches!(a, Acked::Completed(_)))
        .count();
    println!(
        "disk full after {} claims and {completed} completes acknowledged: {err}",
        acked.len()
    );
    assert!(
        completed > 1_000,
        "the disk filled early: {completed} completes"
    );
    match &err {
        Error::Io(e) => assert_eq!(e.kind(), io::ErrorKind::StorageFull, "{e}"),
        other => panic!("a full disk is an I/O error (ENOSPC), got {other:?}"),
    }
    // Poisoned: every later write is refused, without touching the disk.
    assert!(matches!(
        store.claim("another key", Fingerprint::of(b"x")),
        Err(Error::Poisoned)
    ));
    assert!(matches!(
        store.mark_seen("a message", Duration::from_secs(60)),
        Err(Error::Poisoned)
    ));
    assert!(matches!(store.sync(), Err(Error::Poisoned)));
    // Reads still answer, from memory.
    let (&last_done, _) = acked
        .iter()
        .rev()
        .find(|(_, a)| matches!(a, Acked::Completed(_)))
        .unwrap();
    match store.get(key(last_done)).unwrap() {
        Some(Record::Completed(done)) => assert_eq!(done.response(), response(last_done)),
        other => panic!("key {last_done} was completed, got {other:?}"),
    }
    drop(store);

    // Space comes back; the directory opens, has every acknowledged record
    // byte for byte, and takes writes again.
    std::fs::remove_file(&filler).unwrap();
    let store = options().open(&dir).unwrap();
    println!(
        "reopened after freeing {FILLER_BYTES} bytes: torn tail cut {} bytes",
        store.stats().torn_tail_bytes_truncated
    );
    check_acknowledged(&store, &acked);
    let fresh = acked.len() + 10;
    for i in fresh..fresh + 200 {
        match store.claim(key(i), fp(i)).unwrap() {
            Claim::Acquired(t) => store.complete(t, &response(i)).unwrap(),
            other => panic!("key {i} is fresh, got {other:?}"),
        }
    }
    drop(store);
    let store = options().open(&dir).unwrap();
    check_acknowledged(&store, &acked);
    for i in fresh..fresh + 200 {
        assert!(
            matches!(store.claim(key(i), fp(i)).unwrap(), Claim::Replay(ref d) if d.response() == response(i)),
            "key {i} written after the disk had room again"
        );
    }
    drop(store);
    assert_mounted_then_unmount(fs);
}

/// Unmounts now, checking that nothing kept the file system busy.
fn assert_mounted_then_unmount(fs: Tmpfs) {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    let point = fs.mountpoint.display().to_string();
    assert!(mounts.contains(&point), "{point} is mounted");
    drop(fs);
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(!mounts.contains(&point), "{point} was unmounted");
}
