//! The MMU's inner locks, made from the embedder's reader-writer lock.
//!
//! Every lock in the MMU, the page-table and memslot locks and the small inner ones (the
//! invalidation range, parked frames, the NX queue, per-slot tracking maps, dirty rings), comes
//! from the one `lock_api::RawRwLock` the embedder chose: a kernel's own lock, `parking_lot`, a
//! spin lock, or shuttle's in the model tests. [`Mutex`] is that lock used through its exclusive
//! side only.

/// A `lock_api::RawMutex` over the exclusive side of a `lock_api::RawRwLock`.
pub struct RawExclusive<R>(R);

// SAFETY: `lock`/`try_lock`/`unlock` map one-to-one onto the reader-writer lock's exclusive
// operations, which give mutual exclusion; `unlock` is only called by the holder, as the
// `RawMutex` contract requires of our callers, which is exactly `unlock_exclusive`'s contract.
unsafe impl<R: lock_api::RawRwLock> lock_api::RawMutex for RawExclusive<R> {
    #[allow(clippy::declare_interior_mutable_const)]
    const INIT: Self = RawExclusive(R::INIT);
    type GuardMarker = R::GuardMarker;

    fn lock(&self) {
        self.0.lock_exclusive();
    }

    fn try_lock(&self) -> bool {
        self.0.try_lock_exclusive()
    }

    unsafe fn unlock(&self) {
        // SAFETY: forwarded contract: the caller holds the lock.
        unsafe { self.0.unlock_exclusive() }
    }
}

/// A mutex built from the MMU's raw reader-writer lock `R`.
pub type Mutex<R, T> = lock_api::Mutex<RawExclusive<R>, T>;
