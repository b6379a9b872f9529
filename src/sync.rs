//! The synchronization primitives of the concurrent core: group commit, the
//! segment table's lock, the active buffer's publication and the key
//! waiters take their locks, atomics, cells and parking from here.
//!
//! A normal build gets `parking_lot` and `std`. A build with `--cfg idemkv_loom`
//! gets loom's instrumented versions behind the same API, so the model tests
//! in `src/models/` run the real code under every interleaving loom
//! explores (DESIGN.md §8, "Sanitizers and models"):
//!
//! ```sh
//! RUSTFLAGS="--cfg idemkv_loom" cargo test --release --lib models
//! ```
//!
//! loom's locks and condition variables take and return guards by value
//! (`std`'s API); the wrappers under `loom` give them `parking_lot`'s shape
//! (`Condvar::wait(&mut guard)`, `MutexGuard::unlocked`).

#![allow(
    unsafe_code,
    reason = "the loom shim wraps cells whose access loom tracks"
)]

#[cfg(not(idemkv_loom))]
pub(crate) use parking_lot::{
    Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard,
};
#[cfg(not(idemkv_loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};

#[cfg(idemkv_loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
#[cfg(idemkv_loom)]
pub(crate) use loom_shim::{Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Thread parking for blocking waiters.
pub(crate) mod thread {
    #[cfg(not(idemkv_loom))]
    pub(crate) use std::thread::{Thread, current};

    /// Lets another thread run (loom's yield under loom, so a spinning
    /// model thread lets the others make progress).
    pub(crate) fn yield_now() {
        #[cfg(not(idemkv_loom))]
        std::thread::yield_now();
        #[cfg(idemkv_loom)]
        loom::thread::yield_now();
    }

    /// One step of waiting for another thread's progress, the `tries`-th:
    /// a spin while the wait is short (the other thread is most likely
    /// running), then the processor given up (it may be descheduled).
    /// Under loom always a yield, so the model runs the other thread.
    pub(crate) fn backoff(tries: u32) {
        if tries < 64 && !cfg!(idemkv_loom) {
            std::hint::spin_loop();
        } else {
            yield_now();
        }
    }

    /// Parks the calling thread for at most `timeout`. Under loom there is
    /// no time: the thread parks until unparked, so a wake-up that a waiter
    /// misses shows as a deadlock instead of a late timeout.
    pub(crate) fn park_timeout(timeout: std::time::Duration) {
        #[cfg(not(idemkv_loom))]
        std::thread::park_timeout(timeout);
        #[cfg(idemkv_loom)]
        {
            let _ = timeout;
            CURRENT.with(|p| {
                let mut token = p.token.lock().expect("loom mutexes are not poisoned");
                while !*token {
                    token = p.wake.wait(token).expect("loom mutexes are not poisoned");
                }
                *token = false;
            });
        }
    }

    // loom's own `unpark` also wakes a thread blocked on a mutex, which then
    // fails loom's lock assertion, so under loom parking is a token behind
    // a loom mutex and condition variable (std's semantics: an unpark before
    // the park is kept).
    #[cfg(idemkv_loom)]
    pub(crate) struct Parker {
        token: loom::sync::Mutex<bool>,
        wake: loom::sync::Condvar,
    }

    #[cfg(idemkv_loom)]
    loom::thread_local! {
        static CURRENT: std::sync::Arc<Parker> = std::sync::Arc::new(Parker {
            token: loom::sync::Mutex::new(false),
            wake: loom::sync::Condvar::new(),
        });
    }

    /// A handle to unpark a thread.
    #[cfg(idemkv_loom)]
    pub(crate) struct Thread(std::sync::Arc<Parker>);

    #[cfg(idemkv_loom)]
    impl Thread {
        pub(crate) fn unpark(&self) {
            *self.0.token.lock().expect("loom mutexes are not poisoned") = true;
            self.0.wake.notify_one();
        }
    }

    /// The calling thread's handle.
    #[cfg(idemkv_loom)]
    pub(crate) fn current() -> Thread {
        CURRENT.with(|p| Thread(p.clone()))
    }
}

/// A cell whose accesses loom checks for races; a plain `UnsafeCell`
/// otherwise.
pub(crate) struct UnsafeCell<T>(
    #[cfg(not(idemkv_loom))] std::cell::UnsafeCell<T>,
    #[cfg(idemkv_loom)] loom::cell::UnsafeCell<T>,
);

/// A shared borrow of an [`UnsafeCell`]'s contents (under loom, a tracked
/// one: a write while it lives is reported).
#[cfg(not(idemkv_loom))]
pub(crate) type CellRef<'a, T> = &'a T;
/// A shared borrow of an [`UnsafeCell`]'s contents (under loom, a tracked
/// one: a write while it lives is reported).
#[cfg(idemkv_loom)]
pub(crate) type CellRef<'a, T> = loom_shim::CellRef<'a, T>;
/// An exclusive borrow of an [`UnsafeCell`]'s contents.
#[cfg(not(idemkv_loom))]
pub(crate) type CellMut<'a, T> = &'a mut T;
/// An exclusive borrow of an [`UnsafeCell`]'s contents.
#[cfg(idemkv_loom)]
pub(crate) type CellMut<'a, T> = loom_shim::CellMut<'a, T>;

impl<T> UnsafeCell<T> {
    pub(crate) fn new(value: T) -> Self {
        #[cfg(not(idemkv_loom))]
        return UnsafeCell(std::cell::UnsafeCell::new(value));
        #[cfg(idemkv_loom)]
        return UnsafeCell(loom::cell::UnsafeCell::new(value));
    }

    /// Shared access.
    ///
    /// # Safety
    /// No exclusive borrow may live at the same time.
    pub(crate) unsafe fn borrow(&self) -> CellRef<'_, T> {
        #[cfg(not(idemkv_loom))]
        // SAFETY: the caller excludes writers.
        return unsafe { &*self.0.get() };
        #[cfg(idemkv_loom)]
        return loom_shim::CellRef::new(self.0.get());
    }

    /// Exclusive access.
    ///
    /// # Safety
    /// No other borrow may live at the same time.
    pub(crate) unsafe fn borrow_mut(&self) -> CellMut<'_, T> {
        #[cfg(not(idemkv_loom))]
        // SAFETY: the caller excludes every other access.
        return unsafe { &mut *self.0.get() };
        #[cfg(idemkv_loom)]
        return loom_shim::CellMut::new(self.0.get_mut());
    }
}

#[cfg(idemkv_loom)]
mod loom_shim {
    use std::marker::PhantomData;
    use std::ops::{Deref, DerefMut};
    use std::time::Instant;

    /// `parking_lot::Mutex`'s API over loom's mutex.
    #[derive(Default)]
    pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Self {
            Mutex(loom::sync::Mutex::new(value))
        }

        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            MutexGuard {
                mutex: &self.0,
                guard: Some(self.0.lock().expect("loom mutexes are not poisoned")),
            }
        }

        pub(crate) fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
            self.0.try_lock().ok().map(|guard| MutexGuard {
                mutex: &self.0,
                guard: Some(guard),
            })
        }
    }

    pub(crate) struct MutexGuard<'a, T> {
        mutex: &'a loom::sync::Mutex<T>,
        guard: Option<loom::sync::MutexGuard<'a, T>>,
    }

    impl<'a, T> MutexGuard<'a, T> {
        /// Runs `f` with the mutex unlocked, then locks it again.
        pub(crate) fn unlocked<R>(this: &mut Self, f: impl FnOnce() -> R) -> R {
            drop(this.guard.take());
            let out = f();
            this.guard = Some(this.mutex.lock().expect("loom mutexes are not poisoned"));
            out
        }
    }

    impl<T> Deref for MutexGuard<'_, T> {
        type Target = T;
        fn deref(&self) -> &T {
            self.guard.as_ref().expect("locked")
        }
    }

    impl<T> DerefMut for MutexGuard<'_, T> {
        fn deref_mut(&mut self) -> &mut T {
            self.guard.as_mut().expect("locked")
        }
    }

    /// `parking_lot::Condvar`'s API over loom's condition variable.
    #[derive(Default)]
    pub(crate) struct Condvar(loom::sync::Condvar);

    impl Condvar {
        pub(crate) fn new() -> Self {
            Condvar(loom::sync::Condvar::new())
        }

        pub(crate) fn wait<T>(&self, guard: &mut MutexGuard<'_, T>) {
            let inner = guard.guard.take().expect("locked");
            guard.guard = Some(self.0.wait(inner).expect("loom mutexes are not poisoned"));
        }

        /// loom has no time: waits until notified.
        pub(crate) fn wait_until<T>(&self, guard: &mut MutexGuard<'_, T>, _deadline: Instant) {
            self.wait(guard);
        }

        /// loom has no time: waits until notified.
        pub(crate) fn wait_for<T>(
            &self,
            guard: &mut MutexGuard<'_, T>,
            _timeout: std::time::Duration,
        ) {
            self.wait(guard);
        }

        pub(crate) fn notify_one(&self) -> bool {
            self.0.notify_one();
            true
        }

        pub(crate) fn notify_all(&self) -> usize {
            self.0.notify_all();
            0
        }
    }

    /// `parking_lot::RwLock`'s API over loom's lock.
    #[derive(Default)]
    pub(crate) struct RwLock<T>(loom::sync::RwLock<T>);

    #[allow(
        dead_code,
        reason = "parking_lot's API; the striped lock builds its locks by `Default`"
    )]

    pub(crate) type RwLockReadGuard<'a, T> = loom::sync::RwLockReadGuard<'a, T>;
    pub(crate) type RwLockWriteGuard<'a, T> = loom::sync::RwLockWriteGuard<'a, T>;

    impl<T> RwLock<T> {
        #[allow(
            dead_code,
            reason = "parking_lot's API; the striped lock builds its locks by `Default`"
        )]
        pub(crate) fn new(value: T) -> Self {
            RwLock(loom::sync::RwLock::new(value))
        }

        pub(crate) fn read(&self) -> RwLockReadGuard<'_, T> {
            self.0.read().expect("loom locks are not poisoned")
        }

        pub(crate) fn write(&self) -> RwLockWriteGuard<'_, T> {
            self.0.write().expect("loom locks are not poisoned")
        }
    }

    /// A tracked shared borrow of a loom cell.
    pub(crate) struct CellRef<'a, T> {
        ptr: loom::cell::ConstPtr<T>,
        _life: PhantomData<&'a T>,
    }

    impl<T> CellRef<'_, T> {
        pub(super) fn new(ptr: loom::cell::ConstPtr<T>) -> Self {
            CellRef {
                ptr,
                _life: PhantomData,
            }
        }
    }

    impl<T> Deref for CellRef<'_, T> {
        type Target = T;
        fn deref(&self) -> &T {
            // SAFETY: `UnsafeCell::borrow`'s caller excludes writers while
            // this lives; loom checks that it does.
            unsafe { self.ptr.deref() }
        }
    }

    /// A tracked exclusive borrow of a loom cell.
    pub(crate) struct CellMut<'a, T> {
        ptr: loom::cell::MutPtr<T>,
        _life: PhantomData<&'a mut T>,
    }

    impl<T> CellMut<'_, T> {
        pub(super) fn new(ptr: loom::cell::MutPtr<T>) -> Self {
            CellMut {
                ptr,
                _life: PhantomData,
            }
        }
    }

    impl<T> Deref for CellMut<'_, T> {
        type Target = T;
        fn deref(&self) -> &T {
            // SAFETY: `UnsafeCell::borrow_mut`'s caller excludes every other
            // access while this lives; loom checks that it does.
            unsafe { self.ptr.deref() }
        }
    }

    impl<T> DerefMut for CellMut<'_, T> {
        fn deref_mut(&mut self) -> &mut T {
            // SAFETY: as for `deref`.
            unsafe { self.ptr.deref() }
        }
    }
}
