//! The raw-store floor: the same entries written or read through precomputed table pointers,
//! with no walk, no decode of the path, no allocation and no bookkeeping.

use std::sync::atomic::{AtomicU64, Ordering};

use slat_pt::format::{Ept4, Format, Pte};
use slat_pt::size::{level_bytes, level_shift, table_index, Level, ENTRIES_PER_TABLE};

use crate::peers::slat::Table;

/// Every table of a slat tree that maps `0..len` with leaves at `leaf_level`, per level:
/// `levels[l][gpa >> level_shift(l + 1)]` is the level-`l` table on the path to `gpa`.
pub struct TablePtrs {
    /// Per level, the tables in address order.
    pub levels: Vec<Vec<*const AtomicU64>>,
    /// Level of the leaves.
    pub leaf_level: Level,
}

impl TablePtrs {
    /// Collect the tables of `pt` (physical = virtual in the pool) by decoding parent entries.
    pub fn collect(pt: &Table, leaf_level: Level, len: u64) -> Self {
        let mut levels = vec![Vec::new(); Ept4::ROOT_LEVEL as usize + 1];
        levels[Ept4::ROOT_LEVEL as usize].push(pt.root_pa() as *const AtomicU64);
        for l in (leaf_level..Ept4::ROOT_LEVEL).rev() {
            let parent_level = l + 1;
            for k in 0..len.div_ceil(level_bytes(parent_level)) {
                let gpa = k << level_shift(parent_level);
                let parent = levels[parent_level as usize][Self::slot(gpa, parent_level)];
                // SAFETY: `parent` is a live table of `pt` with 512 entries.
                let raw =
                    unsafe { &*parent.add(table_index(gpa, parent_level, ENTRIES_PER_TABLE)) }.load(Ordering::Acquire);
                let Pte::Table { pa } = Ept4::decode(parent_level, raw) else {
                    panic!("no level-{l} table under {gpa:#x}")
                };
                levels[l as usize].push(pa as *const AtomicU64);
            }
        }
        TablePtrs { levels, leaf_level }
    }

    #[inline]
    fn slot(gpa: u64, level: Level) -> usize {
        (gpa >> level_shift(level + 1)) as usize
    }

    /// The leaf tables in address order.
    pub fn leaf_tables(&self) -> &[*const AtomicU64] {
        &self.levels[self.leaf_level as usize]
    }
}

/// Write `n` leaves (`template | pa`, `pa` stepping by the leaf size) into the leaf tables, or
/// zero them when `template` is `None`.
#[inline(never)]
pub fn store_leaves(ptrs: &TablePtrs, n: u64, pa: u64, template: Option<u64>) {
    let step = level_bytes(ptrs.leaf_level);
    let mut left = n;
    let mut pa = pa;
    for &t in ptrs.leaf_tables() {
        let k = left.min(ENTRIES_PER_TABLE as u64) as usize;
        for i in 0..k {
            let raw = match template {
                Some(tmpl) => tmpl | pa,
                None => 0,
            };
            // SAFETY: `t` is a live leaf table with 512 entries and `i < 512`.
            unsafe { (*t.add(i)).store(raw, Ordering::Release) };
            pa += step;
        }
        left -= k as u64;
    }
}

/// For each address in a tree of 4K leaves, one entry load per level through the precomputed
/// tables (independent loads, no pointer chase). Returns the XOR of the output addresses.
#[inline(never)]
pub fn translate(ptrs: &TablePtrs, addrs: impl Iterator<Item = u64>) -> u64 {
    assert_eq!((ptrs.leaf_level, Ept4::ROOT_LEVEL), (0, 3), "the translate floor walks a 4-level tree of 4K leaves");
    let (l3, l2, l1, l0) = (ptrs.levels[3][0], &ptrs.levels[2][..], &ptrs.levels[1][..], &ptrs.levels[0][..]);
    let load = |t: *const AtomicU64, i: u64| {
        // SAFETY: `t` is a live table with 512 entries and `i < 512`.
        unsafe { &*t.add((i & 511) as usize) }.load(Ordering::Acquire)
    };
    let mut acc = 0u64;
    let mut upper = 0u64;
    for gpa in addrs {
        upper ^=
            load(l3, gpa >> 39) ^ load(l2[(gpa >> 39) as usize], gpa >> 30) ^ load(l1[(gpa >> 30) as usize], gpa >> 21);
        acc ^= Ept4::addr(0, load(l0[(gpa >> 21) as usize], gpa >> 12)) + (gpa & 0xfff);
    }
    std::hint::black_box(upper);
    acc
}

/// Eager split's floor: every leaf of the 4K tables written (`template | pa`) and every level-1
/// entry pointed at its table, through precomputed pointers (tables already allocated).
#[inline(never)]
pub fn split(ptrs: &TablePtrs, pa: u64, template: u64) {
    let l1 = &ptrs.levels[1];
    for (k, &t) in ptrs.leaf_tables().iter().enumerate() {
        let mut p = pa + (k as u64) * level_bytes(1);
        for i in 0..ENTRIES_PER_TABLE {
            // SAFETY: live leaf table, `i < 512`.
            unsafe { (*t.add(i)).store(template | p, Ordering::Relaxed) };
            p += 4096;
        }
        let parent = l1[k / ENTRIES_PER_TABLE];
        // SAFETY: live level-1 table, index < 512.
        unsafe { (*parent.add(k % ENTRIES_PER_TABLE)).store(Ept4::table(t as u64), Ordering::Release) };
    }
}

/// Harvest's floor: every 4K leaf read; a dirty one has its dirty bit cleared and its bit set in
/// `bitmap`. Returns the number of dirty pages.
#[inline(never)]
pub fn harvest(ptrs: &TablePtrs, bitmap: &mut [u64]) -> u64 {
    let mut n = 0;
    let mut page = 0usize;
    for &t in ptrs.leaf_tables() {
        for i in 0..ENTRIES_PER_TABLE {
            // SAFETY: live leaf table, `i < 512`.
            let e = unsafe { &*t.add(i) };
            let raw = e.load(Ordering::Relaxed);
            if Ept4::is_dirty(raw) {
                e.store(Ept4::clear_dirty(raw), Ordering::Release);
                bitmap[page / 64] |= 1 << (page % 64);
                n += 1;
            }
            page += 1;
        }
    }
    n
}

/// In-place recovery's floor: per 2M block, the 512 4K leaves read and checked contiguous, then
/// one 2M leaf (`template | pa`) stored over the level-1 entry. Returns the blocks rebuilt.
#[inline(never)]
pub fn recover(ptrs: &TablePtrs, template_2m: u64) -> u64 {
    let l1 = &ptrs.levels[1];
    let mut n = 0;
    for (k, &t) in ptrs.leaf_tables().iter().enumerate() {
        // SAFETY: live leaf table.
        let first = Ept4::addr(0, unsafe { &*t }.load(Ordering::Relaxed));
        let mut ok = first % level_bytes(1) == 0;
        for i in 1..ENTRIES_PER_TABLE {
            // SAFETY: live leaf table, `i < 512`.
            let raw = unsafe { &*t.add(i) }.load(Ordering::Relaxed);
            ok &= Ept4::addr(0, raw) == first + i as u64 * 4096;
        }
        if ok {
            let parent = l1[k / ENTRIES_PER_TABLE];
            // SAFETY: live level-1 table, index < 512.
            unsafe { (*parent.add(k % ENTRIES_PER_TABLE)).store(template_2m | first, Ordering::Release) };
            n += 1;
        }
    }
    n
}
