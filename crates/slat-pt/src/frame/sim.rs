//! [`SimFrameAllocator`]: frames in a simulated physical address space (feature `sim`).

use core::ptr::NonNull;
use core::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};

use alloc::boxed::Box;
use alloc::vec::Vec;

use super::{Frame, FrameAllocator};
use crate::size::{ENTRIES_PER_TABLE, PAGE_SIZE};

/// Frames per chunk of backing memory (one 2 MiB chunk).
const CHUNK_FRAMES: usize = 512;
const CHUNK_BYTES: u64 = CHUNK_FRAMES as u64 * PAGE_SIZE;

#[repr(C, align(4096))]
struct Chunk([[AtomicU64; ENTRIES_PER_TABLE]; CHUNK_FRAMES]);

/// A frame allocator over a simulated physical address range.
///
/// Frames live in 2 MiB host chunks allocated on demand; physical address `base + i * 4 KiB` is
/// frame `i`. Looking up a frame is one atomic load, with no lock, so simulated hardware can
/// walk tables by physical address at full speed. Allocation takes a spin lock.
///
/// ```
/// use slat_pt::frame::{FrameAllocator, SimFrameAllocator};
/// let frames = SimFrameAllocator::new(0x10_0000_0000, 1 << 30);
/// let f = frames.alloc_zeroed(1).unwrap();
/// assert_eq!(f.pa, 0x10_0000_0000);
/// assert_eq!(frames.frame_ptr(f.pa), f.ptr);
/// // SAFETY: nothing refers to the frame.
/// unsafe { frames.free(f.pa, 1) };
/// assert_eq!(frames.live_frames(), 0);
/// ```
pub struct SimFrameAllocator {
    base: u64,
    chunks: Box<[AtomicPtr<Chunk>]>,
    state: spin::Mutex<FreeLists>,
    live: AtomicUsize,
}

struct FreeLists {
    /// Next never-used frame index.
    bump: usize,
    /// Freed allocations by order (1, 2 and 4 frames).
    free: [Vec<usize>; 3],
}

// SAFETY: chunks are only written through atomics and freed in Drop with exclusive access.
unsafe impl Send for SimFrameAllocator {}
// SAFETY: as above; all shared mutation goes through atomics or the spin lock.
unsafe impl Sync for SimFrameAllocator {}

impl SimFrameAllocator {
    /// An allocator for up to `capacity` bytes of frames at physical addresses from `base`
    /// (`base` must be 2 MiB aligned).
    pub fn new(base: u64, capacity: u64) -> Self {
        assert!(base % CHUNK_BYTES == 0, "SimFrameAllocator base must be 2 MiB aligned");
        let n = capacity.div_ceil(CHUNK_BYTES) as usize;
        let chunks = (0..n).map(|_| AtomicPtr::new(core::ptr::null_mut())).collect();
        SimFrameAllocator {
            base,
            chunks,
            state: spin::Mutex::new(FreeLists { bump: 0, free: [Vec::new(), Vec::new(), Vec::new()] }),
            live: AtomicUsize::new(0),
        }
    }

    /// First physical address of the simulated range.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// Whether `pa` lies inside a frame that has ever been handed out.
    pub fn contains(&self, pa: u64) -> bool {
        pa >= self.base && {
            let chunk = ((pa - self.base) / CHUNK_BYTES) as usize;
            chunk < self.chunks.len() && !self.chunks[chunk].load(Ordering::Acquire).is_null()
        }
    }

    fn order(count: usize) -> usize {
        match count {
            1 => 0,
            2 => 1,
            4 => 2,
            _ => panic!("SimFrameAllocator: unsupported allocation of {count} frames"),
        }
    }

    fn ensure_chunk(&self, chunk: usize) -> Option<()> {
        let slot = self.chunks.get(chunk)?;
        if slot.load(Ordering::Acquire).is_null() {
            let layout = core::alloc::Layout::new::<Chunk>();
            // SAFETY: the layout has non-zero size.
            let p = unsafe { alloc::alloc::alloc_zeroed(layout) } as *mut Chunk;
            if p.is_null() {
                return None;
            }
            slot.store(p, Ordering::Release);
        }
        Some(())
    }
}

impl FrameAllocator for SimFrameAllocator {
    fn alloc_zeroed(&self, count: usize) -> Option<Frame> {
        let order = Self::order(count);
        let index = {
            let mut st = self.state.lock();
            if let Some(i) = st.free[order].pop() {
                i
            } else {
                // Align the bump pointer to the allocation size; the skipped frames go to the
                // single-frame free list.
                while st.bump % count != 0 {
                    let i = st.bump;
                    self.ensure_chunk(i / CHUNK_FRAMES)?;
                    st.free[0].push(i);
                    st.bump += 1;
                }
                let i = st.bump;
                self.ensure_chunk((i + count - 1) / CHUNK_FRAMES)?;
                self.ensure_chunk(i / CHUNK_FRAMES)?;
                st.bump += count;
                i
            }
        };
        let pa = self.base + index as u64 * PAGE_SIZE;
        let ptr = self.frame_ptr(pa);
        // Frames come back dirty from `free`; zero them here, outside the lock.
        // SAFETY: `ptr` points at `count` contiguous frames (`count * 512` entries) of one chunk
        // (allocations are aligned to their size, so they never straddle a 512-frame chunk). The
        // frames were just taken off a free list or the bump pointer under the lock, so no thread
        // and no walker can reach them (`free`'s contract) and nothing accesses them
        // concurrently; `AtomicU64` has the layout of `u64`, so all-zero bytes are a valid 0.
        unsafe { core::ptr::write_bytes(ptr.as_ptr(), 0, count * ENTRIES_PER_TABLE) };
        self.live.fetch_add(count, Ordering::Relaxed);
        Some(Frame { pa, ptr })
    }

    unsafe fn free(&self, pa: u64, count: usize) {
        let order = Self::order(count);
        let index = ((pa - self.base) / PAGE_SIZE) as usize;
        self.state.lock().free[order].push(index);
        self.live.fetch_sub(count, Ordering::Relaxed);
    }

    unsafe fn free_frames(&self, pas: &mut dyn Iterator<Item = u64>) {
        let mut st = self.state.lock();
        let before = st.free[0].len();
        st.free[0].extend(pas.map(|pa| ((pa - self.base) / PAGE_SIZE) as usize));
        let freed = st.free[0].len() - before;
        drop(st);
        self.live.fetch_sub(freed, Ordering::Relaxed);
    }

    /// Cheap by design: one bounds check and one atomic load of the chunk pointer. The
    /// contract only covers addresses inside a live allocation; for any other address the result
    /// is unspecified (debug builds panic) but this function stays sound: it never dereferences
    /// anything and never returns null.
    #[inline]
    fn frame_ptr(&self, pa: u64) -> NonNull<AtomicU64> {
        let off = pa.wrapping_sub(self.base);
        let chunk = (off / CHUNK_BYTES) as usize;
        let entry = ((off % CHUNK_BYTES) / PAGE_SIZE) as usize * ENTRIES_PER_TABLE;
        let p = self.chunks[chunk].load(Ordering::Acquire);
        debug_assert!(!p.is_null(), "frame_ptr: physical address {pa:#x} was never allocated");
        // Address arithmetic only (`wrapping_add`: no dereference, no in-bounds requirement), so
        // a never-allocated chunk cannot cause undefined behaviour here.
        let q = p.cast::<AtomicU64>().wrapping_add(entry);
        NonNull::new(q).unwrap_or(NonNull::dangling())
    }

    fn live_frames(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }
}

impl Drop for SimFrameAllocator {
    fn drop(&mut self) {
        let layout = core::alloc::Layout::new::<Chunk>();
        for slot in self.chunks.iter() {
            let p = slot.load(Ordering::Acquire);
            if !p.is_null() {
                // SAFETY: allocated in `ensure_chunk` with this layout; we have exclusive access.
                unsafe { alloc::alloc::dealloc(p as *mut u8, layout) };
            }
        }
    }
}
