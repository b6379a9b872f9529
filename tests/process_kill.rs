//! Real process kills: a child process makes `Immediate` claims and
//! completes from several threads, printing each acknowledged key; the test
//! kills it with SIGKILL at a varying moment, reopens the store, and finds
//! every acknowledged key with its exact response. Many rounds, one directory.

mod common;

use common::{XorShift, acquire_with};
use idemkv::{Claim, Fingerprint, Record, Store};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const CHILD_DIR: &str = "IDEMKV_KILL_CHILD_DIR";
const CHILD_ROUND: &str = "IDEMKV_KILL_CHILD_ROUND";
const THREADS: usize = 4;
const ROUNDS: u64 = 16;

fn key(round: u64, thread: usize, n: u64) -> String {
    format!("r{round}-t{thread}-{n}")
}

fn response(key: &str) -> Vec<u8> {
    format!("charged for {key}").repeat(3).into_bytes()
}

/// The child's body: claims and completes fresh keys until killed. Passes
/// at once when run as an ordinary test (no directory in the environment).
#[test]
fn child_writes_until_killed() {
    let (Ok(dir), Ok(round)) = (std::env::var(CHILD_DIR), std::env::var(CHILD_ROUND)) else {
        return;
    };
    let round: u64 = round.parse().unwrap();
    let store = Store::open(dir).unwrap();
    std::thread::scope(|s| {
        for thread in 0..THREADS {
            let store = store.clone();
            s.spawn(move || {
                for n in 0.. {
                    let k = key(round, thread, n);
                    let t = acquire_with(&store, &k, Fingerprint::of(&k));
                    println!("claimed {k}");
                    store.complete(t, &response(&k)).unwrap();
                    println!("acked {k}");
                }
            });
        }
    });
}

#[test]
fn killed_writer_loses_no_acknowledged_key() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let (mut total_acked, mut total_claimed_only) = (0, 0);
    for round in 0..ROUNDS {
        let kill_after = 1 + rng.next_u64() % 400;
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "child_writes_until_killed",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR, dir.path())
            .env(CHILD_ROUND, round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (mut acked, mut claimed) = (Vec::new(), Vec::new());
        let record = |line: &str, acked: &mut Vec<String>, claimed: &mut Vec<String>| {
            if let Some(k) = line.split("acked ").nth(1) {
                acked.push(k.trim().to_string());
            } else if let Some(k) = line.split("claimed ").nth(1) {
                claimed.push(k.trim().to_string());
            }
        };
        for line in lines.by_ref() {
            record(&line.unwrap(), &mut acked, &mut claimed);
            if acked.len() as u64 >= kill_after {
                break;
            }
        }
        child.kill().unwrap(); // SIGKILL
        // Lines the child printed before it died are acknowledgements too.
        for line in lines.map_while(Result::ok) {
            record(&line, &mut acked, &mut claimed);
        }
        let status = child.wait().unwrap();
        assert!(
            !status.success(),
            "round {round}: the child was killed, not finished"
        );

        let store = Store::open(dir.path()).unwrap();
        for k in &acked {
            match store.claim(k, Fingerprint::of(k)).unwrap() {
                Claim::Replay(done) => {
                    assert_eq!(done.response(), &response(k)[..], "round {round}: {k}")
                }
                other => panic!("round {round}: acknowledged {k} answered {other:?}"),
            }
        }
        for k in claimed.iter().filter(|k| !acked.contains(k)) {
            let got = store.get(k).unwrap();
            assert!(
                matches!(got, Some(Record::InProgress { .. } | Record::Completed(_))),
                "round {round}: claimed {k} is {got:?}"
            );
            total_claimed_only += 1;
        }
        total_acked += acked.len();
    }
    println!(
        "{ROUNDS} kills: {total_acked} acknowledged keys all found, {total_claimed_only} claimed-only keys found in progress"
    );
}
