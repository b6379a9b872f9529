//! The claim and replay hot paths allocate nothing beyond what the API
//! hands back: a ticket's key (`Acquired`) and a replayed response
//! (`Replay`). Counted by a global allocator, per thread, so the store's
//! background threads do not blur the count.

#![allow(
    unsafe_code,
    reason = "a counting global allocator forwards to the system one"
)]

use idemkv::{Claim, Durability, Fingerprint, Options, Seen, Store};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::Duration;

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_in(f: impl FnOnce()) -> u64 {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

fn key(n: u64) -> [u8; 54] {
    let mut k = *b"t0042:POST/v1/charges:00000000000000000000000000000000";
    let hex = format!("{n:032x}");
    k[22..].copy_from_slice(hex.as_bytes());
    k
}

const N: u64 = 2_000;
/// Index tables double now and then as keys arrive: at most one growth
/// per shard per doubling, so a few dozen over `N` inserts.
const GROWTH_ALLOWANCE: u64 = 64;

fn warm_store(durability: Durability) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let open = |durability| {
        Options::new()
            .durability(durability)
            .background_compaction(false)
            .open(dir.path())
            .unwrap()
    };
    let pairs = |store: &Store, keys: std::ops::Range<u64>| {
        for n in keys {
            let Claim::Acquired(t) = store.claim(key(n), Fingerprint::of(b"x")).unwrap() else {
                panic!("fresh key")
            };
            store.complete(t, &[b'r'; 130]).unwrap();
        }
    };
    // Fill quickly, then reopen in the mode under test and warm up there:
    // first-use allocations (thread-locals, scratch buffers, each shard's
    // table) happen here, not in the counted runs.
    pairs(&open(Durability::None), 0..20_000);
    let store = open(durability);
    pairs(&store, 20_000..20_200);
    (dir, store)
}

#[test]
fn a_pair_allocates_only_the_tickets_key() {
    for durability in [Durability::None, Durability::Immediate] {
        let (_dir, store) = warm_store(durability);
        let fp = Fingerprint::of(b"x");
        let keys: Vec<_> = (1_000_000..1_000_000 + N).map(key).collect();
        let response = [b'r'; 130];
        let counted = allocations_in(|| {
            for k in &keys {
                let Claim::Acquired(t) = store.claim(k, fp).unwrap() else {
                    panic!("fresh key")
                };
                store.complete(t, &response).unwrap();
            }
        });
        println!("{durability:?}: {counted} allocations for {N} pairs");
        assert!(counted >= N, "each ticket carries its key: {counted}");
        assert!(
            counted <= N + GROWTH_ALLOWANCE,
            "{durability:?}: {counted} allocations for {N} pairs"
        );
    }
}

#[test]
fn a_replay_allocates_only_the_response() {
    let (_dir, store) = warm_store(Durability::None);
    let fp = Fingerprint::of(b"x");
    let keys: Vec<_> = (0..N).map(key).collect();
    let counted = allocations_in(|| {
        for k in &keys {
            match store.claim(k, fp).unwrap() {
                Claim::Replay(done) => assert_eq!(done.response().len(), 130),
                other => panic!("completed keys replay, got {other:?}"),
            }
        }
    });
    assert_eq!(
        counted, N,
        "one allocation per replay: the response handed back"
    );
}

#[test]
fn mark_seen_allocates_nothing_but_index_growth() {
    let (_dir, store) = warm_store(Durability::None);
    let keys: Vec<_> = (5_000_000..5_000_000 + N).map(key).collect();
    let counted = allocations_in(|| {
        for k in &keys {
            assert_eq!(
                store.mark_seen(k, Duration::from_secs(60)).unwrap(),
                Seen::First
            );
        }
    });
    assert!(counted <= GROWTH_ALLOWANCE, "{counted} allocations");
    let dups = allocations_in(|| {
        for k in &keys {
            assert_eq!(
                store.mark_seen(k, Duration::from_secs(60)).unwrap(),
                Seen::Duplicate
            );
        }
    });
    assert_eq!(dups, 0, "a duplicate allocates nothing");
}
