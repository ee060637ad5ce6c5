//! The hypervisor's heap: a bump allocator over a range of identity-mapped memory.
//!
//! The runs are short, so freed memory is only reused when it is the most recent allocation;
//! everything else stays allocated until the machine powers off.

use core::alloc::{GlobalAlloc, Layout};
use core::sync::atomic::{AtomicU64, Ordering};

/// A bump heap; [`BumpHeap::init`] gives it memory before the first allocation.
pub struct BumpHeap {
    next: AtomicU64,
    end: AtomicU64,
}

impl BumpHeap {
    /// An empty heap (every allocation fails until `init`).
    pub const fn new() -> Self {
        BumpHeap { next: AtomicU64::new(0), end: AtomicU64::new(0) }
    }

    /// Hand the heap `len` bytes at `base` (identity mapped, unused by anything else).
    pub fn init(&self, base: u64, len: u64) {
        self.next.store(base, Ordering::SeqCst);
        self.end.store(base + len, Ordering::SeqCst);
    }

    /// Bytes handed out so far (high-water mark from the base).
    pub fn remaining(&self) -> u64 {
        self.end.load(Ordering::Relaxed) - self.next.load(Ordering::Relaxed)
    }
}

impl Default for BumpHeap {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: allocations are disjoint ranges carved with compare-and-swap from memory that `init`
// says is unused; dealloc only moves the pointer back over the very last allocation.
unsafe impl GlobalAlloc for BumpHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let align = layout.align() as u64;
        let size = layout.size() as u64;
        let mut cur = self.next.load(Ordering::Relaxed);
        loop {
            let start = (cur + align - 1) & !(align - 1);
            let new = start + size;
            if new > self.end.load(Ordering::Relaxed) {
                return core::ptr::null_mut();
            }
            match self.next.compare_exchange_weak(cur, new, Ordering::SeqCst, Ordering::Relaxed) {
                Ok(_) => return start as *mut u8,
                Err(c) => cur = c,
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let end = ptr as u64 + layout.size() as u64;
        // Give back the most recent allocation only (temporary vectors in loops).
        let _ = self.next.compare_exchange(end, ptr as u64, Ordering::SeqCst, Ordering::Relaxed);
    }
}
