//! Unmap touches no heap: not for one leaf, not for a range that detaches whole tables (the
//! batch keeps its first ranges and subtrees inline, and `free_detached` walks subtrees with a
//! fixed stack), and every detached frame goes back to the allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use slat_pt::format::{Ept4, Format, Npt, Sv48x4};
use slat_pt::{
    FlushBatch, FrameAllocator, Gpa, LeafAttrs, Mapping, NoTlb, PageSize, PageTable, Perms, SimFrameAllocator,
};

struct Counting;
static CALLS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to `System` unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        CALLS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded contract.
        unsafe { System.alloc(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        CALLS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded contract.
        unsafe { System.realloc(p, l, n) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: forwarded contract.
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static A: Counting = Counting;

const GIB: u64 = 1 << 30;

fn case<F: Format>(frames: &SimFrameAllocator, len: u64, size: PageSize, per_leaf: bool, allowed: u64) {
    let mut pt = PageTable::<F, _>::new(frames).unwrap();
    let m = Mapping { pa: 1 << 40, size, attrs: LeafAttrs::ram(Perms::RW) };
    let mut batch = FlushBatch::new();
    pt.map(Gpa(0), len, &m, &mut batch, &NoTlb).unwrap();
    assert!(batch.is_empty());
    let before = CALLS.load(Ordering::Relaxed);
    if per_leaf {
        for gpa in (0..len).step_by(size.bytes() as usize) {
            let mut batch = FlushBatch::new();
            pt.unmap(Gpa(gpa), size.bytes(), &mut batch, None).unwrap();
            assert!(batch.covers(Gpa(gpa)));
            // SAFETY: no TLB or walker in this test.
            unsafe { pt.free_detached(batch.into_detached()) };
        }
    } else {
        let mut batch = FlushBatch::new();
        pt.unmap(Gpa(0), len, &mut batch, None).unwrap();
        assert!(batch.covers(Gpa(len - 1)));
        // SAFETY: no TLB or walker in this test.
        unsafe { pt.free_detached(batch.into_detached()) };
    }
    let calls = CALLS.load(Ordering::Relaxed) - before;
    assert!(
        calls <= allowed,
        "{} unmap of {len:#x} with {size} leaves (per leaf: {per_leaf}): {calls} allocations",
        F::NAME
    );
    assert_eq!(pt.counts(), pt.recount());
    assert_eq!(pt.counts().leaves, [0; 3]);
    assert_eq!(frames.live_frames() as u64, pt.counts().table_pages, "every detached frame is freed");
}

#[test]
fn unmap_allocates_nothing_and_frees_every_detached_frame() {
    let frames = SimFrameAllocator::new(0x100_0000_0000, 1 << 30);
    // Warm the allocator's free lists, so freeing frames needs no capacity of its own.
    let warm: Vec<_> = (0..2048).map(|_| frames.alloc_zeroed(1).unwrap()).collect();
    // SAFETY: nothing refers to these frames.
    unsafe { frames.free_frames(&mut warm.iter().map(|f| f.pa)) };
    for per_leaf in [false, true] {
        // One detached subtree (the 1 GiB table of 4K tables), up to four (2M tables), none (1G).
        case::<Ept4>(&frames, GIB, PageSize::Size4K, per_leaf, 0);
        case::<Ept4>(&frames, 4 * GIB, PageSize::Size2M, per_leaf, 0);
        case::<Ept4>(&frames, 4 * GIB, PageSize::Size1G, per_leaf, 0);
        case::<Npt>(&frames, GIB, PageSize::Size4K, per_leaf, 0);
        case::<Sv48x4>(&frames, GIB, PageSize::Size4K, per_leaf, 0);
    }
    // Past `slat_pt::flush::INLINE` detached subtrees (32 here) the batch moves them to the heap:
    // once.
    case::<Ept4>(&frames, 64 << 20, PageSize::Size4K, false, 1);
}
