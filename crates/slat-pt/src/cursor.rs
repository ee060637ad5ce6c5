//! The cursor: a restartable pre-order walk over a guest-physical range, which every operation of
//! [`PageTable`] is a loop over (as KVM's `tdp_iter` and Asterinas OSTD's page-table `Cursor`).
//!
//! A cursor stands on one entry slot: its [`level`](Cursor::level), the address it has reached
//! ([`gpa`](Cursor::gpa), inside that entry's span) and the slot itself. The operation looks at
//! the entry and decides:
//! * [`down`](Cursor::down) into the table the entry points to (or
//!   [`down_new`](Cursor::down_new) into one it just linked), staying at the same address;
//! * [`next`](Cursor::next) past the entry (skipping its subtree), or
//!   [`advance`](Cursor::advance) past a run of entries it handled in one go
//!   ([`run_len`](Cursor::run_len) says how many are in range in the current table); moving off
//!   the end of a table climbs back to the first level whose table still has entries in range.
//!
//! The walk is pre-order and in address order, and it never goes backwards: [`done`](Cursor::done)
//! is the address below which the range is finished, and [`restart`](Cursor::restart) (after a
//! compare-and-swap found the tree changed above the cursor, or after a yield) re-walks from the
//! root to the given address but never to one below `done`. [`yield_point`](Cursor::yield_point)
//! is where a long walk may give way: it refuses until the walk has made progress since the last
//! yield (so two yields always have work between them), hands the caller its pending
//! [`FlushBatch`] to flush first, and restarts from the root, since the tree above the cursor may
//! have changed in between.
//!
//! A cursor may also walk a detached subtree ([`Cursor::over`]): its root is then the detached
//! table, and the walk never climbs above it.

use core::mem::MaybeUninit;

use crate::flush::FlushBatch;
use crate::format::Format;
use crate::frame::FrameAllocator;
use crate::node::{Node, Slot};
use crate::size::{level_bytes, level_shift, Level};
use crate::table::PageTable;

/// Room for the path: a 5-level format has levels 0..=4; eight slots let a level index the
/// path as `level & 7` with no bounds check.
const PATH: usize = 8;

/// [`Cursor::fresh`] when no table on the path is fresh.
const NOT_FRESH: Level = Level::MAX;

/// A restartable pre-order walker over `gpa..end` of a [`PageTable`].
pub(crate) struct Cursor<'t, F: Format, A: FrameAllocator> {
    pt: &'t PageTable<F, A>,
    /// `path[l]`: the table at level `l` on the way to `gpa`, initialised for `level..=top`
    /// (left uninitialised below: a walk that stays near the root writes nothing else).
    path: [MaybeUninit<Node<'t>>; PATH],
    /// Tables at this level and below on the path were linked zeroed by this walk's operation
    /// and hold nothing but what it wrote (so reading their entries is pointless: they are zero
    /// ahead of the cursor); `NOT_FRESH` when there are none. Everything below a fresh table is
    /// fresh: the walk only finds empty entries there, so it only links new tables.
    fresh: Level,
    /// Level of the walk's root table.
    top: Level,
    level: Level,
    gpa: u64,
    end: u64,
    done: u64,
}

impl<'t, F: Format, A: FrameAllocator> Cursor<'t, F, A> {
    /// A cursor over `start..end` of the whole tree, at the root.
    #[inline]
    pub(crate) fn new(pt: &'t PageTable<F, A>, start: u64, end: u64) -> Self {
        Self::over(pt, pt.root_node(), start, end)
    }

    /// A cursor over `start..end` of the subtree under `root` (the tree's root, or a detached
    /// table whose span covers the range).
    #[inline]
    pub(crate) fn over(pt: &'t PageTable<F, A>, root: Node<'t>, start: u64, end: u64) -> Self {
        let top = root.level();
        let mut path = [const { MaybeUninit::uninit() }; PATH];
        path[(top & 7) as usize].write(root);
        Cursor { pt, path, fresh: NOT_FRESH, top, level: top, gpa: start, end, done: start }
    }

    /// Whether the walk has passed the end of its range.
    #[inline]
    pub(crate) fn is_done(&self) -> bool {
        self.gpa >= self.end
    }

    /// Level of the entry under the cursor.
    #[inline]
    pub(crate) fn level(&self) -> Level {
        self.level
    }

    /// The address the walk has reached (inside the current entry's span).
    #[inline]
    pub(crate) fn gpa(&self) -> u64 {
        self.gpa
    }

    /// Everything below this address is finished: no restart goes back before it.
    #[inline]
    pub(crate) fn done(&self) -> u64 {
        self.done
    }

    /// Bytes mapped by one entry at the current level.
    #[inline]
    pub(crate) fn entry_bytes(&self) -> u64 {
        level_bytes(self.level)
    }

    /// First address of the current entry's span.
    #[inline]
    pub(crate) fn base(&self) -> u64 {
        self.gpa & !(self.entry_bytes() - 1)
    }

    /// Whether the range still to walk covers the current entry's whole span.
    #[inline]
    pub(crate) fn whole(&self) -> bool {
        let base = self.base();
        base == self.gpa && base + self.entry_bytes() <= self.end
    }

    /// The table the cursor is in.
    #[inline]
    pub(crate) fn node(&self) -> Node<'t> {
        self.path_at(self.level)
    }

    /// The table at `level` on the path (`level..=top`).
    #[inline]
    fn path_at(&self, level: Level) -> Node<'t> {
        debug_assert!(level >= self.level && level <= self.top);
        // SAFETY: `path[l]` is written for the root in `over` and for every level the walk
        // steps down to (`push`) before `level` goes there; the walk only reads levels from
        // `level` up to `top`, all written on the way down.
        unsafe { self.path[(level & 7) as usize].assume_init() }
    }

    /// The entry under the cursor.
    #[inline]
    pub(crate) fn slot(&self) -> Slot<'t> {
        let node = self.node();
        node.slot(node.index_of(self.gpa))
    }

    /// The entry one level up that points to the current table (`None` at the walk's root).
    #[inline]
    pub(crate) fn parent(&self) -> Option<Slot<'t>> {
        (self.level < self.top).then(|| {
            let node = self.path_at(self.level + 1);
            node.slot(node.index_of(self.gpa))
        })
    }

    /// Whether the current table was linked by this operation and holds only what it wrote.
    #[inline]
    pub(crate) fn is_fresh(&self) -> bool {
        self.fresh != NOT_FRESH && self.level <= self.fresh
    }

    /// Entries from the current one to the end of the range or of the current table, whichever
    /// comes first.
    #[inline]
    pub(crate) fn run_len(&self) -> usize {
        let node = self.node();
        let left_in_table = node.len() - node.index_of(self.gpa);
        // Entry sizes are powers of two: a shift, not a division.
        let left_in_range = (self.end - self.base() + self.entry_bytes() - 1) >> level_shift(self.level);
        left_in_range.min(left_in_table as u64) as usize
    }

    /// Step down into the table that `raw`, a table entry read from the current slot, points
    /// to. The address stays where it is.
    #[inline]
    pub(crate) fn down(&mut self, raw: u64) {
        debug_assert!(self.level > 0 && F::is_present(raw) && !F::is_leaf(self.level, raw));
        let child = self.pt.child_node(self.level, raw);
        self.push(child);
    }

    /// Step down into the table at `pa` that this operation just linked at the current slot
    /// (zeroed, or filled by it): [`is_fresh`](Self::is_fresh) holds there and below until the
    /// walk leaves it.
    #[inline]
    pub(crate) fn down_new(&mut self, child: Node<'t>, zeroed: bool) {
        self.push(child);
        if zeroed && !self.is_fresh() {
            self.fresh = self.level;
        }
    }

    #[inline]
    fn push(&mut self, child: Node<'t>) {
        self.level -= 1;
        self.path[(self.level & 7) as usize].write(child);
    }

    /// Move past the current entry and its subtree.
    #[inline]
    pub(crate) fn next(&mut self) {
        self.advance(1);
    }

    /// Move past `n` entries from the current one (at most [`run_len`](Self::run_len)), then
    /// climb out of tables the walk has finished. `advance(0)` stays where it is.
    #[inline]
    pub(crate) fn advance(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        self.gpa = self.base() + n as u64 * self.entry_bytes();
        self.done = self.gpa;
        if self.gpa >= self.end {
            // Finished: nothing to climb back to.
            return;
        }
        while self.level < self.top && self.node().index_of(self.gpa) == 0 {
            self.level += 1;
        }
        if self.fresh != NOT_FRESH && self.level > self.fresh {
            self.fresh = NOT_FRESH;
        }
    }

    /// Re-walk from the root to `at`, or to [`done`](Self::done) if `at` is below it (the
    /// forward-progress guarantee): for when the tree above the cursor may have changed.
    #[inline]
    pub(crate) fn restart(&mut self, at: u64) {
        self.gpa = at.max(self.done);
        self.level = self.top;
        self.fresh = NOT_FRESH;
    }

    /// A yield point. No operation of this crate yields by itself (the lock that a yield would
    /// drop belongs to the caller, so bounded operations hand back where to resume instead);
    /// this is the cursor's half of the protocol, for walks that are given a way to give way.
    ///
    /// If the walk has finished more of its range since the last yield (`yielded`, the caller's
    /// record of [`done`](Self::done) then, starting at the range start), flush `batch` through
    /// `give_way` (which must flush the batch's ranges; it may also let other threads in) and
    /// restart from the root at [`done`](Self::done); returns whether it yielded.
    #[allow(dead_code)]
    pub(crate) fn yield_point(
        &mut self,
        yielded: &mut u64,
        batch: &mut FlushBatch,
        give_way: &mut dyn FnMut(&mut FlushBatch),
    ) -> bool {
        if self.done <= *yielded {
            return false;
        }
        give_way(batch);
        *yielded = self.done;
        self.restart(self.done);
        true
    }
}

#[cfg(test)]
mod tests {
    use alloc::vec::Vec;

    use super::*;
    use crate::addr::Gpa;
    use crate::attrs::{LeafAttrs, Perms};
    use crate::flush::NoTlb;
    use crate::format::{Ept4, Format, Npt};
    use crate::size::PageSize;
    use crate::table::Mapping;
    use crate::SimFrameAllocator;

    const MIB: u64 = 1 << 20;

    fn table<F: Format>(frames: &SimFrameAllocator) -> PageTable<F, &SimFrameAllocator> {
        let mut pt = PageTable::<F, _>::new(frames).unwrap();
        let mut batch = FlushBatch::new();
        // 4K leaves at 0..4M, a 2M leaf at 4M, nothing at 6M..8M, 4K leaves at 1G-8K..1G+8K.
        let k4 = Mapping { pa: 1 << 40, size: PageSize::Size4K, attrs: LeafAttrs::ram(Perms::RW) };
        let m2 = Mapping { pa: 1 << 41, size: PageSize::Size2M, attrs: LeafAttrs::ram(Perms::RW) };
        pt.map(Gpa(0), 4 * MIB, &k4, &mut batch, &NoTlb).unwrap();
        pt.map(Gpa(4 * MIB), 2 * MIB, &m2, &mut batch, &NoTlb).unwrap();
        pt.map(Gpa((1 << 30) - 8192), 16384, &k4, &mut batch, &NoTlb).unwrap();
        pt
    }

    /// Every present leaf reached by a plain walk, as (gpa, level).
    fn walk<F: Format>(pt: &PageTable<F, &SimFrameAllocator>, start: u64, end: u64) -> Vec<(u64, Level)> {
        let mut v = Vec::new();
        let mut c = Cursor::new(pt, start, end);
        while !c.is_done() {
            let raw = c.slot().load();
            if F::is_present(raw) && !F::is_leaf(c.level(), raw) {
                c.down(raw);
                continue;
            }
            if F::is_present(raw) {
                v.push((c.base(), c.level()));
            }
            c.next();
        }
        v
    }

    #[test]
    fn walks_in_address_order_and_climbs_out() {
        let frames = SimFrameAllocator::new(1 << 44, 64 * MIB);
        let pt = table::<Ept4>(&frames);
        let v = walk(&pt, 0, 2 << 30);
        assert_eq!(v.len(), 1024 + 1 + 4);
        assert!(v.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(v[1024], (4 * MIB, 1));
        assert_eq!(v[1025], ((1 << 30) - 8192, 0));
        assert_eq!(v[1028], ((1 << 30) + 4096, 0));
        // A range starting inside a huge leaf reports the leaf it starts in.
        assert_eq!(walk(&pt, 5 * MIB, 6 * MIB), [(4 * MIB, 1)]);
    }

    /// Restarting (as after a failed compare-and-swap, or a yield) re-walks from the root and
    /// resumes where the walk was; a restart to an address already finished resumes at the
    /// finished mark instead, so no entry is visited twice and the walk always ends.
    #[test]
    fn restart_never_goes_back() {
        let frames = SimFrameAllocator::new(1 << 44, 64 * MIB);
        let pt = table::<Npt>(&frames);
        let mut c = Cursor::new(&pt, 0, 2 << 30);
        let mut seen = Vec::new();
        let mut steps = 0;
        while !c.is_done() {
            steps += 1;
            assert!(steps < 10_000, "no forward progress");
            let raw = c.slot().load();
            if Npt::is_present(raw) && !Npt::is_leaf(c.level(), raw) {
                c.down(raw);
                continue;
            }
            let leaf = Npt::is_present(raw);
            if leaf {
                seen.push(c.base());
            }
            c.next();
            // After every 100th leaf, restart "from the beginning": the cursor goes back to the
            // root but not below what it finished.
            if leaf && seen.len() % 100 == 0 && !c.is_done() {
                let before = c.done();
                c.restart(0);
                assert_eq!(c.level(), Npt::ROOT_LEVEL);
                assert_eq!(c.gpa(), before);
            }
        }
        let plain: Vec<u64> = walk(&pt, 0, 2 << 30).into_iter().map(|(g, _)| g).collect();
        assert_eq!(seen, plain);
    }

    /// A yield point yields only after progress, hands over the batch first, and resumes at
    /// the finished mark from the root.
    #[test]
    fn yield_needs_progress_and_flushes_first() {
        let frames = SimFrameAllocator::new(1 << 44, 64 * MIB);
        let pt = table::<Ept4>(&frames);
        let mut c = Cursor::new(&pt, 0, 8 * MIB);
        let mut yielded = 0;
        let mut batch = FlushBatch::new();
        let mut flushed = 0;
        let mut give_way = |b: &mut FlushBatch| {
            assert!(!b.is_empty(), "the pending batch comes first");
            *b = FlushBatch::new();
            flushed += 1;
        };
        assert!(!c.yield_point(&mut yielded, &mut batch, &mut give_way), "no progress yet");
        let (mut leaves, mut yields) = (0, 0);
        while !c.is_done() {
            let raw = c.slot().load();
            if Ept4::is_present(raw) && !Ept4::is_leaf(c.level(), raw) {
                c.down(raw);
                continue;
            }
            if Ept4::is_present(raw) {
                leaves += 1;
                batch.add(Gpa(c.base()), c.entry_bytes(), PageSize::Size4K);
            }
            c.next();
            if leaves % 64 == 0 && c.yield_point(&mut yielded, &mut batch, &mut give_way) {
                yields += 1;
                assert_eq!(c.level(), Ept4::ROOT_LEVEL);
                assert!(!c.yield_point(&mut yielded, &mut batch, &mut give_way), "two yields need work between");
            }
        }
        assert_eq!(leaves, 1025);
        assert_eq!(yields, 16);
    }
}
