//! A reader-writer lock whose readers do not share a cache line: [`ShardedRawRwLock`].
//!
//! Faults take the MMU locks for reading, millions of times a second from every vCPU thread. With
//! an ordinary reader-writer lock every read acquisition is an atomic update of one shared word,
//! which then bounces between CPUs and caps fault throughput at what one cache line allows. Here
//! each thread counts itself in on its own shard (cache-line padded, chosen once per thread); a
//! writer raises a flag and waits until every shard is empty. Readers scale; writers pay a scan of
//! the shards, which suits the MMU (writes are zaps, harvests and memslot changes).

use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use lock_api::{GuardNoSend, RawRwLock};

const SHARDS: usize = 16;

#[repr(align(128))]
struct Shard(AtomicUsize);

/// A raw reader-writer lock with per-thread reader shards (for `lock_api`).
pub struct ShardedRawRwLock {
    writer: AtomicBool,
    readers: [Shard; SHARDS],
}

std::thread_local! {
    static SHARD: usize = {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS
    };
}

fn my_shard() -> usize {
    SHARD.with(|s| *s)
}

// SAFETY: readers and writers exclude each other: a reader is counted in its shard (SeqCst)
// before it checks the writer flag (SeqCst), and a writer sets the flag (SeqCst) before it waits
// for every shard to drain, so at least one of them sees the other. Unlocking a shared lock uses
// the same thread's shard, which `GuardNoSend` guarantees.
unsafe impl RawRwLock for ShardedRawRwLock {
    #[allow(clippy::declare_interior_mutable_const)]
    const INIT: Self =
        ShardedRawRwLock { writer: AtomicBool::new(false), readers: [const { Shard(AtomicUsize::new(0)) }; SHARDS] };
    type GuardMarker = GuardNoSend;

    fn lock_shared(&self) {
        while !self.try_lock_shared() {
            while self.writer.load(Ordering::Relaxed) {
                core::hint::spin_loop();
            }
        }
    }

    fn try_lock_shared(&self) -> bool {
        let shard = &self.readers[my_shard()].0;
        shard.fetch_add(1, Ordering::SeqCst);
        if !self.writer.load(Ordering::SeqCst) {
            return true;
        }
        shard.fetch_sub(1, Ordering::Release);
        false
    }

    unsafe fn unlock_shared(&self) {
        self.readers[my_shard()].0.fetch_sub(1, Ordering::Release);
    }

    fn lock_exclusive(&self) {
        while self.writer.compare_exchange_weak(false, true, Ordering::SeqCst, Ordering::Relaxed).is_err() {
            core::hint::spin_loop();
        }
        for s in &self.readers {
            while s.0.load(Ordering::SeqCst) != 0 {
                core::hint::spin_loop();
            }
        }
    }

    fn try_lock_exclusive(&self) -> bool {
        if self.writer.compare_exchange(false, true, Ordering::SeqCst, Ordering::Relaxed).is_err() {
            return false;
        }
        if self.readers.iter().all(|s| s.0.load(Ordering::SeqCst) == 0) {
            return true;
        }
        self.writer.store(false, Ordering::Release);
        false
    }

    unsafe fn unlock_exclusive(&self) {
        self.writer.store(false, Ordering::Release);
    }
}
