//! The one frame pool every contender takes page-table frames from.
//!
//! A pre-touched arena of 4 KiB-aligned frames, handed out by a LIFO free list and a bump
//! pointer. Physical address = host virtual address (identity), so every phys-to-virt hook of
//! every crate is the identity. [`reset`] before each sample gives every contender the same
//! frames in the same order. The free list's storage is reserved up front, so freeing never
//! touches the heap (the counting allocator sees only the libraries' own allocations).

use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};

/// Bytes per frame.
pub const FRAME: usize = 4096;

struct State {
    base: usize,
    frames: usize,
    bump: usize,
    free: Vec<usize>,
}

static LOCK: AtomicBool = AtomicBool::new(false);
static STATE: AtomicPtr<State> = AtomicPtr::new(std::ptr::null_mut());
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

struct Guard;
impl Drop for Guard {
    fn drop(&mut self) {
        LOCK.store(false, Ordering::Release);
    }
}

#[inline]
fn lock() -> (Guard, &'static mut State) {
    while LOCK.compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
        std::hint::spin_loop();
    }
    let p = STATE.load(Ordering::Acquire);
    assert!(!p.is_null(), "pool::init was not called");
    // SAFETY: `p` came from `Box::into_raw` in `init` and is never freed; the spin lock held by
    // the returned guard makes this the only reference for as long as the guard lives.
    (Guard, unsafe { &mut *p })
}

/// Create the pool with `frames` frames (once per process; later calls with a smaller or equal
/// size are no-ops).
pub fn init(frames: usize) {
    if !STATE.load(Ordering::Acquire).is_null() {
        let (_g, st) = lock();
        assert!(st.frames >= frames, "pool already initialised with {} frames, {frames} wanted", st.frames);
        return;
    }
    let layout = std::alloc::Layout::from_size_align(frames * FRAME, FRAME).expect("pool layout");
    // SAFETY: the layout has non-zero size.
    let base = unsafe { std::alloc::alloc_zeroed(layout) } as usize;
    assert!(base != 0, "pool: out of memory");
    // Touch every page so no page fault lands in a timed region.
    for f in 0..frames {
        // SAFETY: inside the allocation just made.
        unsafe { std::ptr::write_volatile((base + f * FRAME) as *mut u64, 0) };
    }
    let st = Box::new(State { base, frames, bump: 0, free: Vec::with_capacity(frames) });
    STATE.store(Box::into_raw(st), Ordering::Release);
}

/// Forget every allocation: the next allocations come from the start of the arena, in order.
/// Every table built from the pool must be gone (dropped or abandoned) before this.
pub fn reset() {
    let (_g, st) = lock();
    st.bump = 0;
    st.free.clear();
    LIVE.store(0, Ordering::Relaxed);
    PEAK.store(0, Ordering::Relaxed);
}

/// One frame, contents unspecified. Returns its address (physical = virtual).
#[inline]
pub fn alloc_raw() -> Option<usize> {
    let pa = {
        let (_g, st) = lock();
        if let Some(pa) = st.free.pop() {
            pa
        } else if st.bump < st.frames {
            st.bump += 1;
            st.base + (st.bump - 1) * FRAME
        } else {
            return None;
        }
    };
    let live = LIVE.fetch_add(1, Ordering::Relaxed) + 1;
    PEAK.fetch_max(live, Ordering::Relaxed);
    Some(pa)
}

/// One zeroed frame.
#[inline]
pub fn alloc_zeroed() -> Option<usize> {
    let pa = alloc_raw()?;
    // SAFETY: the frame was just handed out and nobody else holds it.
    unsafe { std::ptr::write_bytes(pa as *mut u8, 0, FRAME) };
    Some(pa)
}

/// `n` (1, 2 or 4) contiguous zeroed frames aligned to `n` frames, from the bump pointer (roots
/// only; freed frames of such allocations go back one by one).
pub fn alloc_contiguous(n: usize) -> Option<usize> {
    if n == 1 {
        return alloc_zeroed();
    }
    let pa = {
        let (_g, st) = lock();
        while st.bump % n != 0 {
            let pa = st.base + st.bump * FRAME;
            st.free.push(pa);
            st.bump += 1;
        }
        if st.bump + n > st.frames {
            return None;
        }
        st.bump += n;
        st.base + (st.bump - n) * FRAME
    };
    LIVE.fetch_add(n, Ordering::Relaxed);
    // SAFETY: fresh frames nobody else holds.
    unsafe { std::ptr::write_bytes(pa as *mut u8, 0, n * FRAME) };
    Some(pa)
}

/// Return a frame.
#[inline]
pub fn free(pa: usize) {
    let (_g, st) = lock();
    debug_assert!(pa >= st.base && pa < st.base + st.frames * FRAME && pa % FRAME == 0, "pool: bad free {pa:#x}");
    st.free.push(pa);
    LIVE.fetch_sub(1, Ordering::Relaxed);
}

/// Return many frames under one lock hold.
pub fn free_many(pas: &mut dyn Iterator<Item = u64>) {
    let (_g, st) = lock();
    let before = st.free.len();
    st.free.extend(pas.map(|pa| pa as usize));
    LIVE.fetch_sub(st.free.len() - before, Ordering::Relaxed);
}

/// Frames handed out and not returned since the last [`reset`].
pub fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

/// Highest [`live`] since the last [`reset`].
pub fn peak() -> usize {
    PEAK.load(Ordering::Relaxed)
}

/// slat's view of the pool.
#[derive(Debug, Clone, Copy, Default)]
pub struct SlatFrames;

impl slat_pt::FrameAllocator for SlatFrames {
    #[inline]
    fn alloc_zeroed(&self, count: usize) -> Option<slat_pt::Frame> {
        let pa = alloc_contiguous(count)?;
        Some(slat_pt::Frame { pa: pa as u64, ptr: std::ptr::NonNull::new(pa as *mut _).expect("non-null frame") })
    }
    #[inline]
    unsafe fn free(&self, pa: u64, count: usize) {
        for i in 0..count {
            free(pa as usize + i * FRAME);
        }
    }
    unsafe fn free_frames(&self, pas: &mut dyn Iterator<Item = u64>) {
        free_many(pas);
    }
    #[inline]
    fn frame_ptr(&self, pa: u64) -> std::ptr::NonNull<std::sync::atomic::AtomicU64> {
        // Identity: the pool's physical address is the frame's host address.
        std::ptr::NonNull::new(pa as *mut _).unwrap_or(std::ptr::NonNull::dangling())
    }
    fn live_frames(&self) -> usize {
        live()
    }
}
