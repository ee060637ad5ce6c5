//! The buddy allocator over host physical page frames.
//!
//! Blocks of `2^order` 4 KiB pages, `order` in `0..=MAX_ORDER` (4 KiB up to 1 GiB), each aligned
//! to its size in absolute pfn terms. Free blocks sit in one ordered set per order, so every
//! choice is deterministic: an allocation takes the lowest-addressed block of the smallest order
//! that fits and splits it, keeping the lower half; a free merges with its buddy for as long as
//! the buddy is free. The allocator does not remember allocation orders: freeing the pages of an
//! allocated block one 4 KiB page at a time (a split folio) is as valid as freeing the block.

use std::collections::BTreeSet;

/// Largest block order: `2^18` pages of 4 KiB = 1 GiB.
pub const MAX_ORDER: u8 = 18;

/// Number of orders, `0..=MAX_ORDER`.
pub const ORDERS: usize = MAX_ORDER as usize + 1;

/// Order of a 2 MiB block (a PMD-sized folio).
pub const PMD_ORDER: u8 = 9;

/// Order of a 1 GiB block (a PUD-sized folio).
pub const PUD_ORDER: u8 = 18;

/// A bad request to the [`BuddyAllocator`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BuddyError {
    /// The order is above [`MAX_ORDER`].
    #[error("order {order} is above the maximum order {MAX_ORDER}")]
    OrderTooLarge {
        /// The requested order.
        order: u8,
    },
    /// The pfn is not aligned to the block size of the order.
    #[error("pfn {pfn:#x} is not aligned to a block of order {order}")]
    Misaligned {
        /// The pfn.
        pfn: u64,
        /// The order.
        order: u8,
    },
    /// The block lies (partly) outside the managed range.
    #[error("block of order {order} at pfn {pfn:#x} lies outside the managed pfn range")]
    OutOfRange {
        /// The pfn.
        pfn: u64,
        /// The order.
        order: u8,
    },
    /// Part of the block is free already (a double free), or, for [`BuddyAllocator::alloc_at`],
    /// part of it is allocated.
    #[error("block of order {order} at pfn {pfn:#x} is not wholly {expected}")]
    WrongState {
        /// The pfn.
        pfn: u64,
        /// The order.
        order: u8,
        /// The state every page of the block should have been in ("allocated" or "free").
        expected: &'static str,
    },
}

/// A binary buddy allocator over the pfns `start_pfn..end_pfn`.
///
/// ```
/// use slat_sim::host::BuddyAllocator;
/// let mut b = BuddyAllocator::new(0x100000, 1024); // 4 MiB at 4 GiB
/// let huge = b.alloc(9).unwrap();
/// assert_eq!(huge, 0x100000);
/// let page = b.alloc(0).unwrap();
/// assert_eq!(page, 0x100200);
/// b.free(huge, 9).unwrap();
/// b.free(page, 0).unwrap();
/// assert_eq!(b.free_blocks()[10], 1); // merged back into one 4 MiB block
/// ```
#[derive(Debug, Clone)]
pub struct BuddyAllocator {
    start_pfn: u64,
    end_pfn: u64,
    free: Vec<BTreeSet<u64>>,
    free_pages: u64,
}

#[inline]
const fn block_pages(order: u8) -> u64 {
    1 << order
}

impl BuddyAllocator {
    /// An allocator over `pages` pages from `start_pfn`, all free. The range is cut into the
    /// largest naturally aligned blocks that fit.
    pub fn new(start_pfn: u64, pages: u64) -> Self {
        let mut b = BuddyAllocator {
            start_pfn,
            end_pfn: start_pfn.saturating_add(pages),
            free: vec![BTreeSet::new(); ORDERS],
            free_pages: 0,
        };
        let mut pfn = b.start_pfn;
        while pfn < b.end_pfn {
            let mut order = MAX_ORDER;
            while order > 0 && (pfn % block_pages(order) != 0 || pfn + block_pages(order) > b.end_pfn) {
                order -= 1;
            }
            b.free[order as usize].insert(pfn);
            b.free_pages += block_pages(order);
            pfn += block_pages(order);
        }
        b
    }

    /// First pfn managed.
    pub fn start_pfn(&self) -> u64 {
        self.start_pfn
    }

    /// One past the last pfn managed.
    pub fn end_pfn(&self) -> u64 {
        self.end_pfn
    }

    /// Pages managed.
    pub fn total_pages(&self) -> u64 {
        self.end_pfn - self.start_pfn
    }

    /// Pages currently free.
    pub fn free_pages(&self) -> u64 {
        self.free_pages
    }

    /// Number of free blocks of each order (`[order 0, ..., order 18]`).
    pub fn free_blocks(&self) -> [u64; ORDERS] {
        let mut out = [0; ORDERS];
        for (o, set) in self.free.iter().enumerate() {
            out[o] = set.len() as u64;
        }
        out
    }

    /// How many blocks of `order` could be allocated right now (free blocks of that order or
    /// larger, each counted as the number of `order` blocks it holds).
    pub fn allocatable(&self, order: u8) -> u64 {
        if order > MAX_ORDER {
            return 0;
        }
        (order..=MAX_ORDER).map(|o| (self.free[o as usize].len() as u64) << (o - order)).sum()
    }

    /// Allocate a block of `2^order` pages: the lowest-addressed free block of the smallest
    /// sufficient order, split down. `None` when no block is large enough (or `order` is above
    /// [`MAX_ORDER`]).
    pub fn alloc(&mut self, order: u8) -> Option<u64> {
        if order > MAX_ORDER {
            return None;
        }
        let from = (order..=MAX_ORDER).find(|&o| !self.free[o as usize].is_empty())?;
        let head = self.free[from as usize].pop_first()?;
        let mut o = from;
        while o > order {
            o -= 1;
            self.free[o as usize].insert(head + block_pages(o));
        }
        self.free_pages -= block_pages(order);
        Some(head)
    }

    /// Allocate exactly the block of `2^order` pages at `pfn`, which must be wholly free.
    pub fn alloc_at(&mut self, pfn: u64, order: u8) -> Result<(), BuddyError> {
        self.check(pfn, order)?;
        let Some(from) = (order..=MAX_ORDER).find(|&o| {
            let head = pfn & !(block_pages(o) - 1);
            self.free[o as usize].contains(&head)
        }) else {
            return Err(BuddyError::WrongState { pfn, order, expected: "free" });
        };
        let mut head = pfn & !(block_pages(from) - 1);
        self.free[from as usize].remove(&head);
        let mut o = from;
        while o > order {
            o -= 1;
            let half = block_pages(o);
            // Keep the half that contains `pfn`, free the other.
            if pfn >= head + half {
                self.free[o as usize].insert(head);
                head += half;
            } else {
                self.free[o as usize].insert(head + half);
            }
        }
        self.free_pages -= block_pages(order);
        Ok(())
    }

    /// Free the block of `2^order` pages at `pfn`, merging it with free buddies.
    pub fn free(&mut self, pfn: u64, order: u8) -> Result<(), BuddyError> {
        self.check(pfn, order)?;
        if self.overlaps_free(pfn, order) {
            return Err(BuddyError::WrongState { pfn, order, expected: "allocated" });
        }
        let (mut head, mut o) = (pfn, order);
        while o < MAX_ORDER {
            let buddy = head ^ block_pages(o);
            if !self.free[o as usize].remove(&buddy) {
                break;
            }
            head = head.min(buddy);
            o += 1;
        }
        self.free[o as usize].insert(head);
        self.free_pages += block_pages(order);
        Ok(())
    }

    /// Whether the page `pfn` is free.
    pub fn is_free(&self, pfn: u64) -> bool {
        (0..=MAX_ORDER).any(|o| self.free[o as usize].contains(&(pfn & !(block_pages(o) - 1))))
    }

    /// Free blocks overlapping `start..end` as `(pfn, order)`, lowest pfn first.
    pub fn free_blocks_in(&self, start: u64, end: u64) -> Vec<(u64, u8)> {
        let mut out = Vec::new();
        for o in 0..=MAX_ORDER {
            let lo = start & !(block_pages(o) - 1);
            out.extend(
                self.free[o as usize].range(lo..end).map(|&h| (h, o)).filter(|&(h, o)| h + block_pages(o) > start),
            );
        }
        out.sort_unstable();
        out
    }

    /// Free pages inside `start..end`.
    pub fn free_pages_in(&self, start: u64, end: u64) -> u64 {
        self.free_blocks_in(start, end).iter().map(|&(h, o)| (h + block_pages(o)).min(end) - h.max(start)).sum()
    }

    fn check(&self, pfn: u64, order: u8) -> Result<(), BuddyError> {
        if order > MAX_ORDER {
            return Err(BuddyError::OrderTooLarge { order });
        }
        if pfn % block_pages(order) != 0 {
            return Err(BuddyError::Misaligned { pfn, order });
        }
        if pfn < self.start_pfn || pfn.checked_add(block_pages(order)).is_none_or(|e| e > self.end_pfn) {
            return Err(BuddyError::OutOfRange { pfn, order });
        }
        Ok(())
    }

    /// Whether any page of the block is free: a free block contains it, or lies inside it.
    fn overlaps_free(&self, pfn: u64, order: u8) -> bool {
        let end = pfn + block_pages(order);
        (order..=MAX_ORDER).any(|o| self.free[o as usize].contains(&(pfn & !(block_pages(o) - 1))))
            || (0..order).any(|o| self.free[o as usize].range(pfn..end).next().is_some())
    }
}
