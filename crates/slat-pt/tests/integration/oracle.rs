//! Property tests: random map / unmap / protect / split / collapse sequences checked against a
//! plain map oracle, for every format.

use std::collections::BTreeMap;

use proptest::prelude::*;
use slat_pt::format::{Arm64S2L0, Arm64S2L1, Ept4, Ept5, Format, Npt, Sv39x4, Sv48x4};
use slat_pt::{
    FlushBatch, FrameAllocator, Gpa, LeafAttrs, Mapping, NoTlb, PageSize, PageTable, Perms, SimFrameAllocator,
};

const SPACE: u64 = 4 << 30; // guest-physical space exercised: 4 GiB
const PA_BASE: u64 = 1 << 36;

/// The oracle: leaves by guest-physical start.
#[derive(Default, Clone)]
struct Oracle {
    leaves: BTreeMap<u64, (PageSize, u64, Perms)>,
}

impl Oracle {
    fn overlapping(&self, start: u64, end: u64) -> Vec<u64> {
        // A leaf starting before `start` can overlap it: start the scan 1 GiB earlier.
        self.leaves
            .range(start.saturating_sub(1 << 30)..end)
            .filter(|(g, (s, _, _))| **g + s.bytes() > start)
            .map(|(g, _)| *g)
            .collect()
    }

    fn split(&mut self, gpa: u64) {
        let (size, pa, perms) = self.leaves.remove(&gpa).unwrap();
        let small = size.smaller().unwrap();
        for i in 0..512 {
            self.leaves.insert(gpa + i * small.bytes(), (small, pa + i * small.bytes(), perms));
        }
    }

    fn map(&mut self, gpa: u64, len: u64, pa: u64, size: PageSize, perms: Perms) {
        let mut a = gpa;
        while a < gpa + len {
            // Split larger leaves in the way until the block is free of them.
            loop {
                let big: Vec<u64> =
                    self.overlapping(a, a + size.bytes()).into_iter().filter(|g| self.leaves[g].0 > size).collect();
                if big.is_empty() {
                    break;
                }
                for g in big {
                    self.split(g);
                }
            }
            for g in self.overlapping(a, a + size.bytes()) {
                self.leaves.remove(&g);
            }
            self.leaves.insert(a, (size, pa + (a - gpa), perms));
            a += size.bytes();
        }
    }

    fn unmap(&mut self, gpa: u64, len: u64) {
        for g in self.overlapping(gpa, gpa + len) {
            self.leaves.remove(&g);
        }
    }

    fn protect(&mut self, gpa: u64, len: u64, perms: Perms) {
        for g in self.overlapping(gpa, gpa + len) {
            self.leaves.get_mut(&g).unwrap().2 = perms;
        }
    }

    fn collapsible(&self, gpa: u64, size: PageSize) -> bool {
        let small = size.smaller().unwrap();
        let Some(&(s0, pa0, p0)) = self.leaves.get(&gpa) else { return false };
        if s0 != small || !size.is_aligned(pa0) {
            return false;
        }
        (0..512).all(|i| self.leaves.get(&(gpa + i * small.bytes())) == Some(&(small, pa0 + i * small.bytes(), p0)))
    }

    fn collapse(&mut self, gpa: u64, size: PageSize) {
        let (_, pa0, p0) = self.leaves[&gpa];
        for g in self.overlapping(gpa, gpa + size.bytes()) {
            self.leaves.remove(&g);
        }
        self.leaves.insert(gpa, (size, pa0, p0));
    }

    fn counts(&self) -> [u64; 3] {
        let mut c = [0; 3];
        for (s, _, _) in self.leaves.values() {
            c[s.level() as usize] += 1;
        }
        c
    }
}

#[derive(Debug, Clone)]
enum Op {
    Map {
        gpa: u64,
        n: u64,
        pa: u64,
        size: PageSize,
        perms: Perms,
    },
    Unmap {
        gpa: u64,
        len: u64,
    },
    Protect {
        gpa: u64,
        len: u64,
        perms: Perms,
    },
    Split {
        gpa: u64,
        size: PageSize,
    },
    Collapse {
        gpa: u64,
        size: PageSize,
    },
    /// Map a contiguous aligned run of small leaves then collapse it (makes collapse succeed
    /// often enough to matter).
    MapThenCollapse {
        gpa: u64,
        pa: u64,
        size: PageSize,
    },
}

fn size() -> impl Strategy<Value = PageSize> {
    prop_oneof![3 => Just(PageSize::Size4K), 2 => Just(PageSize::Size2M), 1 => Just(PageSize::Size1G)]
}
fn huge() -> impl Strategy<Value = PageSize> {
    prop_oneof![3 => Just(PageSize::Size2M), 1 => Just(PageSize::Size1G)]
}
fn perms() -> impl Strategy<Value = Perms> {
    prop_oneof![Just(Perms::READ), Just(Perms::RW), Just(Perms::RX), Just(Perms::RWX)]
}

fn op() -> impl Strategy<Value = Op> {
    // Addresses cluster in the first 8 MiB of each GiB so operations collide often.
    let gpa = (0u64..4, 0u64..2048).prop_map(|(g, p)| (g << 30) + (p << 12));
    prop_oneof![
        4 => (gpa.clone(), 1u64..600, 0u64..1 << 18, size(), perms()).prop_map(|(g, n, p, s, perms)| {
            let gpa = s.align_down(g);
            let n = n.min((SPACE - gpa) / s.bytes()).clamp(1, if s == PageSize::Size4K { 600 } else { 2 });
            Op::Map { gpa, n, pa: PA_BASE + s.align_down(p << 12), size: s, perms }
        }),
        2 => (gpa.clone(), 1u64..(4 << 20)).prop_map(|(g, l)| Op::Unmap { gpa: g, len: (l & !0xfff).max(4096).min(SPACE - g) }),
        2 => (gpa.clone(), 1u64..(4 << 20), perms()).prop_map(|(g, l, p)| Op::Protect { gpa: g, len: (l & !0xfff).max(4096).min(SPACE - g), perms: p }),
        1 => (gpa.clone(), huge()).prop_map(|(g, s)| Op::Split { gpa: s.align_down(g), size: s }),
        1 => (gpa.clone(), huge()).prop_map(|(g, s)| Op::Collapse { gpa: s.align_down(g), size: s }),
        1 => (gpa, 0u64..1 << 18, huge()).prop_map(|(g, p, s)| Op::MapThenCollapse { gpa: s.align_down(g), pa: PA_BASE + s.align_down(p << 21), size: s }),
    ]
}

fn check<F: Format>(pt: &PageTable<F, &SimFrameAllocator>, o: &Oracle) {
    let got: Vec<_> = pt.leaves(Gpa(0), SPACE).into_iter().map(|l| (l.gpa.0, (l.size, l.pa, l.attrs.perms))).collect();
    let want: Vec<_> = o.leaves.iter().map(|(g, v)| (*g, *v)).collect();
    assert_eq!(got.len(), want.len(), "leaf count differs");
    assert_eq!(got, want);
    for (g, (s, pa, perms)) in o.leaves.iter().take(64) {
        for off in [0, s.bytes() / 2 + 8, s.bytes() - 1] {
            let t = pt.translate(Gpa(g + off)).expect("oracle leaf translates");
            assert_eq!((t.pa, t.size, t.attrs.perms), (pa + off, *s, *perms));
        }
    }
    assert_eq!(pt.counts(), pt.recount());
    assert_eq!(pt.counts().leaves, o.counts());
}

fn run<F: Format>(ops: Vec<Op>) {
    let frames = SimFrameAllocator::new(0x100_0000_0000, 1 << 34);
    {
        let mut pt = PageTable::<F, _>::new(&frames).unwrap();
        let mut o = Oracle::default();
        let mut batch = FlushBatch::new();
        let tlb = NoTlb;
        for op in ops {
            match op {
                Op::Map { gpa, n, pa, size, perms } => {
                    let m = Mapping { pa, size, attrs: LeafAttrs::ram(perms) };
                    pt.map(Gpa(gpa), n * size.bytes(), &m, &mut batch, &tlb).unwrap();
                    o.map(gpa, n * size.bytes(), pa, size, perms);
                }
                Op::Unmap { gpa, len } => {
                    pt.unmap(Gpa(gpa), len, &mut batch, None).unwrap();
                    o.unmap(gpa, len);
                }
                Op::Protect { gpa, len, perms } => {
                    // Keep software bits consistent with the oracle (which only tracks perms).
                    pt.update_leaves(Gpa(gpa), len, &mut batch, |l| {
                        Some(LeafAttrs::ram(perms).with_perms(perms).tap(l))
                    })
                    .unwrap();
                    o.protect(gpa, len, perms);
                }
                Op::Split { gpa, size } => {
                    let r = pt.split(Gpa(gpa), size, &tlb);
                    let has = o.leaves.get(&gpa).is_some_and(|l| l.0 == size);
                    assert_eq!(r.is_ok(), has, "split {gpa:#x} {size}: {r:?}");
                    if has {
                        o.split(gpa);
                    }
                }
                Op::Collapse { gpa, size } => {
                    let r = pt.collapse(Gpa(gpa), size, &mut batch, &tlb);
                    assert_eq!(r.is_ok(), o.collapsible(gpa, size), "collapse {gpa:#x} {size}: {r:?}");
                    if r.is_ok() {
                        o.collapse(gpa, size);
                    }
                }
                Op::MapThenCollapse { gpa, pa, size } => {
                    let small = size.smaller().unwrap();
                    let m = Mapping { pa, size: small, attrs: LeafAttrs::ram(Perms::RW) };
                    pt.map(Gpa(gpa), size.bytes(), &m, &mut batch, &tlb).unwrap();
                    o.map(gpa, size.bytes(), pa, small, Perms::RW);
                    pt.collapse(Gpa(gpa), size, &mut batch, &tlb).unwrap();
                    o.collapse(gpa, size);
                    // Split then collapse returns the identical leaf.
                    let before = pt.leaves(Gpa(gpa), size.bytes());
                    pt.split(Gpa(gpa), size, &tlb).unwrap();
                    pt.collapse(Gpa(gpa), size, &mut batch, &tlb).unwrap();
                    assert_eq!(pt.leaves(Gpa(gpa), size.bytes()), before);
                }
            }
            check(&pt, &o);
        }
        // SAFETY: single-threaded test, nothing walks the tables; the flush is a no-op here.
        unsafe { pt.free_detached(batch.into_detached()) };
    }
    assert_eq!(frames.live_frames(), 0, "every frame returns to the allocator");
}

trait Tap {
    fn tap(self, l: &slat_pt::Leaf) -> Self;
}
impl Tap for LeafAttrs {
    /// Keep the accessed/dirty state of the old leaf.
    fn tap(self, l: &slat_pt::Leaf) -> Self {
        LeafAttrs { accessed: l.attrs.accessed, dirty: l.attrs.dirty, ..self }
    }
}

macro_rules! oracle_tests {
    ($($name:ident: $f:ty,)*) => {$(
        proptest! {
            #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
            #[test]
            fn $name(ops in proptest::collection::vec(op(), 1..40)) {
                run::<$f>(ops);
            }
        }
    )*};
}

oracle_tests! {
    oracle_ept4: Ept4,
    oracle_ept5: Ept5,
    oracle_npt: Npt,
    oracle_arm64_l0: Arm64S2L0,
    oracle_arm64_l1: Arm64S2L1,
    oracle_sv39x4: Sv39x4,
    oracle_sv48x4: Sv48x4,
}
