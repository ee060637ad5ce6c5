//! Page-table pages equal the theoretical minimum, and every frame returns to the allocator.

use slat_pt::format::{Arm64S2L1, Ept4, Ept5, Format, Npt, Sv39x4};
use slat_pt::{
    FlushBatch, FrameAllocator, Gpa, LeafAttrs, Mapping, NoTlb, PageSize, PageTable, Perms, SimFrameAllocator,
};

const GIB: u64 = 1 << 30;

/// Table pages for `gib` GiB mapped with `size` leaves at address 0 in a tree whose root is at
/// `root_level` with `root_frames` frames: one table per populated entry above the leaf level.
fn minimum(gib: u64, size: PageSize, root_level: u8, root_frames: u64) -> u64 {
    let mut pages = root_frames;
    let bytes = gib * GIB;
    for level in size.level() as u32..root_level as u32 {
        // A table at `level` covers 512 entries of 4K << 9*level.
        let covers = 1u64 << (12 + 9 * (level + 1));
        pages += bytes.div_ceil(covers);
    }
    pages
}

fn check<F: Format>(gib: u64, size: PageSize) {
    let frames = SimFrameAllocator::new(0x100_0000_0000, 1 << 34);
    {
        let mut pt = PageTable::<F, _>::new(&frames).unwrap();
        let m = Mapping { pa: 0x40_0000_0000, size, attrs: LeafAttrs::ram(Perms::RW) };
        let mut batch = FlushBatch::new();
        pt.map(Gpa(0), gib * GIB, &m, &mut batch, &NoTlb).unwrap();
        assert!(batch.is_empty());
        let root_frames = (F::ROOT_ENTRIES / 512) as u64;
        let want = minimum(gib, size, F::ROOT_LEVEL, root_frames);
        assert_eq!(pt.counts().table_pages, want, "{} {gib} GiB of {size}", F::NAME);
        assert_eq!(pt.recount(), pt.counts());
        assert_eq!(frames.live_frames() as u64, want);
        let mut leaves = [0; 3];
        leaves[size.level() as usize] = gib * GIB / size.bytes();
        assert_eq!(pt.counts().leaves, leaves);

        // Unmap everything: tables the range covers entirely are detached and go back after the
        // flush; the tables above them (which also cover unmapped space) stay, one per level.
        pt.unmap(Gpa(0), gib * GIB, &mut batch, None).unwrap();
        assert_eq!(pt.counts().leaves, [0; 3]);
        assert_eq!(pt.recount(), pt.counts());
        assert!(pt.counts().table_pages < root_frames + F::ROOT_LEVEL as u64);
        assert!(batch.covers(Gpa(0)) && batch.covers(Gpa(gib * GIB - 1)));
        // SAFETY: single-threaded, nothing walks the table.
        unsafe { pt.free_detached(batch.into_detached()) };
        assert_eq!(frames.live_frames() as u64, pt.counts().table_pages);
    }
    assert_eq!(frames.live_frames(), 0);
}

#[test]
fn one_gib_of_4k_needs_515_pages_on_4_level() {
    assert_eq!(minimum(1, PageSize::Size4K, 3, 1), 515);
    check::<Ept4>(1, PageSize::Size4K);
    check::<Npt>(1, PageSize::Size4K);
}

#[test]
fn huge_leaves_need_a_handful_of_pages() {
    assert_eq!(minimum(1, PageSize::Size2M, 3, 1), 3);
    assert_eq!(minimum(64, PageSize::Size2M, 3, 1), 66);
    assert_eq!(minimum(64, PageSize::Size1G, 3, 1), 2);
    check::<Ept4>(64, PageSize::Size2M);
    check::<Ept4>(64, PageSize::Size1G);
    check::<Ept5>(2, PageSize::Size2M);
    check::<Arm64S2L1>(4, PageSize::Size2M);
    check::<Sv39x4>(4, PageSize::Size1G);
}

#[test]
fn drop_returns_every_frame_even_with_leaves_mapped() {
    let frames = SimFrameAllocator::new(0x100_0000_0000, 1 << 30);
    {
        let mut pt = PageTable::<Ept4, _>::new(&frames).unwrap();
        let m = Mapping { pa: 0x4000_0000, size: PageSize::Size4K, attrs: LeafAttrs::ram(Perms::RW) };
        let mut batch = FlushBatch::new();
        pt.map(Gpa(0x1234_5000), 77 << 12, &m, &mut batch, &NoTlb).unwrap();
        assert!(frames.live_frames() > 1);
    }
    assert_eq!(frames.live_frames(), 0);
}

#[test]
fn concurrent_installs_agree_with_a_recount() {
    let frames = SimFrameAllocator::new(0x100_0000_0000, 1 << 32);
    let pt = PageTable::<Ept4, _>::new(&frames).unwrap();
    let detached = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let (pt, detached) = (&pt, &detached);
            s.spawn(move || {
                let mut batch = FlushBatch::new();
                // Threads overlap on the same 8 MiB: 4K faults and 2M faults race, so tables get
                // replaced by huge leaves and huge leaves get split under each other.
                let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ t;
                for _ in 0..4000 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let gpa = (x % (8 << 20)) & !0xfff;
                    let size = if x % 7 == 0 { PageSize::Size2M } else { PageSize::Size4K };
                    let gpa = size.align_down(gpa);
                    let m = Mapping { pa: 0x40_0000_0000 + gpa, size, attrs: LeafAttrs::ram(Perms::RW) };
                    loop {
                        match pt.install(Gpa(gpa), &m, &mut batch, &NoTlb) {
                            Ok(_) => break,
                            Err(slat_pt::PtError::Busy) => std::hint::spin_loop(),
                            Err(e) => panic!("{e}"),
                        }
                    }
                    // Another thread may be replacing the entry (frozen for a moment): like a vCPU,
                    // look again until the walk sees a present leaf.
                    let t = loop {
                        if let Some(t) = pt.translate(Gpa(gpa + 8)) {
                            break t;
                        }
                        std::hint::spin_loop();
                    };
                    assert_eq!(t.pa, 0x40_0000_0000 + gpa + 8);
                }
                detached.lock().unwrap().extend(batch.into_detached());
            });
        }
    });
    assert_eq!(pt.counts(), pt.recount());
    // Every address that was installed still translates to the identity-offset output.
    for l in pt.leaves(Gpa(0), 8 << 20) {
        assert_eq!(l.pa, 0x40_0000_0000 + l.gpa.0);
    }
    // SAFETY: all threads joined; nothing walks the detached frames.
    unsafe { pt.free_detached(detached.into_inner().unwrap()) };
    drop(pt);
    assert_eq!(frames.live_frames(), 0);
}
