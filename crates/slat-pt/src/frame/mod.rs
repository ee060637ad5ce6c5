//! Page-table frames: the [`FrameAllocator`] trait the embedder implements, and (feature `sim`)
//! `SimFrameAllocator`, which places frames in a simulated physical address space so that
//! walks follow physical addresses exactly as hardware does.

use core::ptr::NonNull;
use core::sync::atomic::AtomicU64;

/// A frame handed out by a [`FrameAllocator`]: its physical address and where it is mapped.
#[derive(Debug, Clone, Copy)]
pub struct Frame {
    /// Physical address (aligned to the allocation size).
    pub pa: u64,
    /// Where the frame's 512 entries (or more for multi-frame allocations) can be accessed.
    pub ptr: NonNull<AtomicU64>,
}

/// Supplies zeroed, page-aligned frames for page tables.
///
/// # Contract
/// * `alloc_zeroed(n)` returns `n` (1, 2 or 4) physically contiguous zeroed frames aligned to
///   `n * 4 KiB`, also contiguous at `ptr`; `None` when out of memory.
/// * `frame_ptr(pa)` returns the pointer for any address inside a live allocation; it is called
///   on every step of every walk, so it should be cheap. For any other address the result is
///   unspecified (an implementation may panic, in debug builds say, or return any non-null
///   pointer) and callers must not use it; page tables only ask for frames they hold.
/// * `free(pa, n)` returns an allocation; the caller guarantees no one can still reach it.
/// * `live_frames()` counts frames currently allocated.
pub trait FrameAllocator {
    /// Allocate `count` contiguous zeroed frames.
    fn alloc_zeroed(&self, count: usize) -> Option<Frame>;
    /// Free an allocation made with [`alloc_zeroed`](Self::alloc_zeroed).
    ///
    /// # Safety
    /// `pa`/`count` must name a live allocation from this allocator that no thread and no
    /// hardware walker can still reach.
    unsafe fn free(&self, pa: u64, count: usize);
    /// Free many single-frame allocations at once (a detached subtree after its flush).
    /// Allocators with a lock should override this to take it once.
    ///
    /// # Safety
    /// As for [`free`](Self::free), for every address, each a single-frame allocation.
    unsafe fn free_frames(&self, pas: &mut dyn Iterator<Item = u64>) {
        for pa in pas {
            // SAFETY: forwarded contract.
            unsafe { self.free(pa, 1) };
        }
    }
    /// Pointer through which the frame containing `pa` is accessed.
    fn frame_ptr(&self, pa: u64) -> NonNull<AtomicU64>;
    /// Frames currently allocated.
    fn live_frames(&self) -> usize;
}

impl<T: FrameAllocator + ?Sized> FrameAllocator for &T {
    fn alloc_zeroed(&self, count: usize) -> Option<Frame> {
        (**self).alloc_zeroed(count)
    }
    unsafe fn free(&self, pa: u64, count: usize) {
        // SAFETY: forwarded contract.
        unsafe { (**self).free(pa, count) }
    }
    unsafe fn free_frames(&self, pas: &mut dyn Iterator<Item = u64>) {
        // SAFETY: forwarded contract.
        unsafe { (**self).free_frames(pas) }
    }
    #[inline]
    fn frame_ptr(&self, pa: u64) -> NonNull<AtomicU64> {
        (**self).frame_ptr(pa)
    }
    fn live_frames(&self) -> usize {
        (**self).live_frames()
    }
}

impl<T: FrameAllocator + ?Sized> FrameAllocator for alloc::sync::Arc<T> {
    fn alloc_zeroed(&self, count: usize) -> Option<Frame> {
        (**self).alloc_zeroed(count)
    }
    unsafe fn free(&self, pa: u64, count: usize) {
        // SAFETY: forwarded contract.
        unsafe { (**self).free(pa, count) }
    }
    unsafe fn free_frames(&self, pas: &mut dyn Iterator<Item = u64>) {
        // SAFETY: forwarded contract.
        unsafe { (**self).free_frames(pas) }
    }
    #[inline]
    fn frame_ptr(&self, pa: u64) -> NonNull<AtomicU64> {
        (**self).frame_ptr(pa)
    }
    fn live_frames(&self) -> usize {
        (**self).live_frames()
    }
}

#[cfg(feature = "sim")]
mod sim;
#[cfg(feature = "sim")]
pub use sim::SimFrameAllocator;
