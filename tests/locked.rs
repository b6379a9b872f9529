//! One `Store` owns a directory at a time: a second open, from this process or
//! another, fails with `Error::Locked` while the first is open, and succeeds
//! as soon as the first store and all its clones are dropped (or its process
//! exits).
//!
//! The second-process case re-runs this test binary as the child, selecting
//! only `child_holds_lock` with libtest's `--exact`, which works the same
//! under `cargo test` and `cargo nextest run`.

mod common;

use idemkv::{Error, Fingerprint, Store};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

/// Set only in the child process: the directory it must hold open.
const CHILD_DIR_ENV: &str = "IDEMKV_LOCK_CHILD_DIR";
/// The test function the child runs.
const CHILD_TEST: &str = "child_holds_lock";
/// The line the child prints once it holds the store open.
const READY: &str = "ready";

fn assert_locked(dir: &Path, ctx: &str) {
    match Store::open(dir) {
        Err(Error::Locked) => {}
        Err(other) => panic!("{ctx}: expected Locked, got {other:?}"),
        Ok(_) => panic!("{ctx}: a second open of a held directory succeeded"),
    }
}

/// Claims the fresh `key`, fingerprinted by itself, and completes it.
fn complete(store: &Store, key: &str, response: &[u8]) {
    common::complete_new(store, key, Fingerprint::of(key), response);
}

/// `key`, fingerprinted by itself, must replay `response`.
fn assert_replays(store: &Store, key: &str, response: &[u8]) {
    common::assert_replays_with(store, key, Fingerprint::of(key), response);
}

#[test]
fn second_open_in_this_process_is_locked_until_every_clone_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert_locked(dir.path(), "while the first store is open");
    assert_locked(
        &dir.path().join("."),
        "the same directory spelled another way",
    );
    let message = Store::open(dir.path()).unwrap_err().to_string();
    assert!(
        message.contains("already open"),
        "Locked says what happened: {message}"
    );

    // A failed open does not disturb the owner.
    complete(&store, "first", b"written by the owner");

    // Clones share the lock; one used and dropped on another thread.
    let clone = store.clone();
    let on_thread = store.clone();
    std::thread::spawn(move || complete(&on_thread, "from-thread", b"written by a clone"))
        .join()
        .unwrap();
    drop(store);
    assert_locked(dir.path(), "while one clone is still alive");
    drop(clone);

    let reopened = Store::open(dir.path()).expect("open right after the last clone is dropped");
    assert_replays(&reopened, "first", b"written by the owner");
    assert_replays(&reopened, "from-thread", b"written by a clone");
    assert_locked(dir.path(), "while the reopened store is open");
    drop(reopened);
    Store::open(dir.path()).expect("and again after that one is dropped");
}

/// The child half of `second_process_holding_the_lock_blocks_open`: opens the
/// store, writes a record, prints `ready`, and holds the store until its
/// stdin is closed. Run as an ordinary test (no `IDEMKV_LOCK_CHILD_DIR`), it
/// does nothing.
#[test]
fn child_holds_lock() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else {
        return;
    };
    let store = Store::open(&dir).expect("the child opens the store");
    complete(&store, "from-child", b"written by the child process");
    // Straight to the file descriptor, past any output capture.
    let mut out = std::io::stdout().lock();
    writeln!(out, "{READY}").unwrap();
    out.flush().unwrap();
    drop(out);
    let mut rest = Vec::new();
    std::io::stdin()
        .read_to_end(&mut rest)
        .expect("read stdin until the parent closes it");
    drop(store);
}

#[test]
fn second_process_holding_the_lock_blocks_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", CHILD_TEST, "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR_ENV, dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("re-run this test binary as the child");
    // Dropped on every path out of this test, panics included, so the child
    // never waits for a parent that is gone.
    let stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());

    let mut output = String::new();
    loop {
        let mut line = String::new();
        if stdout.read_line(&mut line).unwrap() == 0 {
            drop(stdin);
            let status = child.wait().unwrap();
            panic!("the child exited ({status}) before it was ready; its output:\n{output}");
        }
        output.push_str(&line);
        // libtest may print "test child_holds_lock ... " on the same line.
        if line.trim_end().ends_with(READY) {
            break;
        }
    }

    assert_locked(dir.path(), "while another process holds the store");

    drop(stdin);
    stdout.read_to_string(&mut output).unwrap();
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "the child failed ({status}); its output:\n{output}"
    );
    assert!(
        output.contains("1 passed"),
        "the child ran exactly its one test; its output:\n{output}"
    );

    let store = Store::open(dir.path()).expect("open once the other process has exited");
    assert_replays(&store, "from-child", b"written by the child process");
}
