//! The end-to-end scenarios (`idemkv_tower::test_support`) on the embedded
//! store, durable (`Immediate`) in a real directory, over real TCP.

use idemkv::{Error, Store};
use idemkv_tower::test_support::E2eHarness;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;
use tempfile::TempDir;

/// Stores in temporary directories, removed when the harness drops.
#[derive(Default)]
struct Embedded {
    dirs: Mutex<Vec<TempDir>>,
}

impl Embedded {
    fn last_dir(&self) -> PathBuf {
        let dirs = self.dirs.lock().unwrap();
        dirs.last().expect("a backend was made").path().to_owned()
    }
}

impl E2eHarness for Embedded {
    type Backend = Store;

    fn backend(&self) -> impl Future<Output = Store> + Send {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        self.dirs.lock().unwrap().push(dir);
        std::future::ready(store)
    }

    fn reopen(&self) -> impl Future<Output = Store> + Send {
        let dir = self.last_dir();
        async move {
            // The stopped server's last handle may still be dropping.
            for _ in 0..2000 {
                match Store::open(&dir) {
                    Err(Error::Locked) => tokio::time::sleep(Duration::from_millis(10)).await,
                    other => return other.unwrap(),
                }
            }
            panic!("{} stayed locked", dir.display());
        }
    }
}

idemkv_tower::e2e_tests! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    harness = Embedded::default();
}
