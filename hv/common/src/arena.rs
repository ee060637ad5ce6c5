//! Page-table frames for slat: a [`FrameAllocator`] over a range of the hypervisor's own,
//! identity-mapped memory.

use core::ptr::NonNull;
use core::sync::atomic::AtomicU64;

use alloc::vec::Vec;
use slat_pt::{Frame, FrameAllocator, PAGE_SIZE};

struct State {
    /// Next never-used frame.
    bump: u64,
    /// Freed allocations of 1, 2 and 4 frames.
    free: [Vec<u64>; 3],
    live: usize,
}

/// Frames from `[base, base + len)`; physical address = pointer (identity map).
pub struct FrameArena {
    base: u64,
    end: u64,
    state: spin::Mutex<State>,
}

impl FrameArena {
    /// An arena over `len` bytes at `base` (4 KiB aligned, identity mapped, owned by the arena).
    pub fn new(base: u64, len: u64) -> Self {
        FrameArena {
            base,
            end: base + len,
            state: spin::Mutex::new(State { bump: base, free: Default::default(), live: 0 }),
        }
    }

    /// Whether `pa` lies inside the arena.
    pub fn contains(&self, pa: u64) -> bool {
        (self.base..self.end).contains(&pa)
    }

    fn order(count: usize) -> Option<usize> {
        match count {
            1 => Some(0),
            2 => Some(1),
            4 => Some(2),
            _ => None,
        }
    }
}

impl FrameAllocator for FrameArena {
    fn alloc_zeroed(&self, count: usize) -> Option<Frame> {
        let order = Self::order(count)?;
        let bytes = count as u64 * PAGE_SIZE;
        let pa = {
            let mut st = self.state.lock();
            let pa = match st.free[order].pop() {
                Some(pa) => pa,
                None => {
                    // Align to the allocation size (the 2- and 4-frame roots need physical alignment); the
                    // skipped frames go to the single-frame list.
                    while st.bump & (bytes - 1) != 0 {
                        let skipped = st.bump;
                        st.free[0].push(skipped);
                        st.bump += PAGE_SIZE;
                    }
                    if st.bump + bytes > self.end {
                        return None;
                    }
                    st.bump += bytes;
                    st.bump - bytes
                }
            };
            st.live += count;
            pa
        };
        // SAFETY: the frames are inside the arena, identity mapped, and were just taken off the
        // free lists or the bump pointer under the lock, so nothing else refers to them.
        unsafe { core::ptr::write_bytes(pa as *mut u8, 0, bytes as usize) };
        Some(Frame { pa, ptr: self.frame_ptr(pa) })
    }

    unsafe fn free(&self, pa: u64, count: usize) {
        let Some(order) = Self::order(count) else { return };
        let mut st = self.state.lock();
        st.free[order].push(pa);
        st.live -= count;
    }

    #[inline]
    fn frame_ptr(&self, pa: u64) -> NonNull<AtomicU64> {
        // Identity map: the physical address is the pointer.
        NonNull::new((pa & !(PAGE_SIZE - 1)) as *mut AtomicU64).unwrap_or(NonNull::dangling())
    }

    fn live_frames(&self) -> usize {
        self.state.lock().live
    }
}
