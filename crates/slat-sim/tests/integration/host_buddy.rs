//! The buddy allocator: allocation order, splitting, coalescing, exact placement, bad input.

use slat_sim::host::{BuddyAllocator, BuddyError, MAX_ORDER, ORDERS};

const BASE: u64 = 0x10_0000; // 4 GiB, 1 GiB aligned

#[test]
fn initial_blocks_are_the_largest_aligned_ones() {
    let b = BuddyAllocator::new(BASE, 3 << 18); // 3 GiB
    let mut want = [0u64; ORDERS];
    want[MAX_ORDER as usize] = 3;
    assert_eq!(b.free_blocks(), want);
    assert_eq!(b.free_pages(), 3 << 18);

    // An odd range: 1 GiB + 2 MiB + 4 KiB starting 4 KiB past a boundary.
    let b = BuddyAllocator::new(BASE + 1, (1 << 18) + 512 + 1);
    assert_eq!(b.free_pages(), (1 << 18) + 513);
    assert_eq!(b.total_pages(), (1 << 18) + 513);
    assert_eq!(b.free_blocks()[MAX_ORDER as usize], 0, "no aligned 1 GiB block fits");
    assert_eq!(b.allocatable(9), 512);
}

#[test]
fn alloc_splits_lowest_block_and_free_coalesces() {
    let mut b = BuddyAllocator::new(BASE, 1 << 18);
    let p0 = b.alloc(0).unwrap();
    assert_eq!(p0, BASE);
    // Splitting one 1 GiB block leaves one free block of every order 0..18.
    let fb = b.free_blocks();
    for (o, &n) in fb.iter().enumerate().take(MAX_ORDER as usize) {
        assert_eq!(n, 1, "order {o}");
    }
    assert_eq!(fb[MAX_ORDER as usize], 0);
    let p1 = b.alloc(0).unwrap();
    assert_eq!(p1, BASE + 1);
    let h = b.alloc(9).unwrap();
    assert_eq!(h, BASE + 512, "the order-9 block right after the first 2 MiB");
    assert_eq!(h % 512, 0);
    assert_eq!(b.free_pages(), (1 << 18) - 2 - 512);

    b.free(p0, 0).unwrap();
    b.free(h, 9).unwrap();
    assert_eq!(b.free_blocks()[MAX_ORDER as usize], 0);
    b.free(p1, 0).unwrap();
    assert_eq!(b.free_blocks()[MAX_ORDER as usize], 1, "everything merged back");
    assert_eq!(b.free_blocks().iter().sum::<u64>(), 1);
}

#[test]
fn pages_of_a_block_can_be_freed_one_by_one() {
    let mut b = BuddyAllocator::new(BASE, 1024);
    let h = b.alloc(9).unwrap();
    for i in 0..512 {
        b.free(h + i, 0).unwrap();
    }
    assert_eq!(b.free_blocks()[10], 1);
}

#[test]
fn alloc_at_takes_exactly_that_block() {
    let mut b = BuddyAllocator::new(BASE, 1 << 18);
    b.alloc_at(BASE + 777, 0).unwrap();
    assert!(!b.is_free(BASE + 777));
    assert!(b.is_free(BASE + 776));
    assert!(b.is_free(BASE + 778));
    assert_eq!(b.allocatable(9), 511, "the 2 MiB block holding the page is broken");
    assert_eq!(b.alloc_at(BASE + 777, 0), Err(BuddyError::WrongState { pfn: BASE + 777, order: 0, expected: "free" }));
    b.alloc_at(BASE + 1024, 9).unwrap();
    assert_eq!(b.allocatable(9), 510);
    b.free(BASE + 777, 0).unwrap();
    b.free(BASE + 1024, 9).unwrap();
    assert_eq!(b.free_blocks()[MAX_ORDER as usize], 1);
}

#[test]
fn bad_requests_are_errors() {
    let mut b = BuddyAllocator::new(BASE, 1024);
    assert_eq!(b.alloc(MAX_ORDER + 1), None);
    assert_eq!(b.alloc(11), None, "larger than memory");
    assert_eq!(b.free(BASE + 1, 1), Err(BuddyError::Misaligned { pfn: BASE + 1, order: 1 }));
    assert_eq!(b.free(BASE, 19), Err(BuddyError::OrderTooLarge { order: 19 }));
    assert_eq!(b.free(BASE + 1024, 0), Err(BuddyError::OutOfRange { pfn: BASE + 1024, order: 0 }));
    assert_eq!(b.free(BASE, 0), Err(BuddyError::WrongState { pfn: BASE, order: 0, expected: "allocated" }));
    let p = b.alloc(0).unwrap();
    b.free(p, 0).unwrap();
    assert!(b.free(p, 0).is_err(), "double free");
    let h = b.alloc(9).unwrap();
    b.free(h + 3, 0).unwrap();
    assert!(b.free(h, 9).is_err(), "a page of the block is free already");
}

#[test]
fn free_blocks_in_reports_holes() {
    let mut b = BuddyAllocator::new(BASE, 1024);
    let h = b.alloc(9).unwrap();
    b.free(h + 8, 3).unwrap();
    b.free(h + 100, 0).unwrap();
    assert_eq!(b.free_blocks_in(h, h + 512), vec![(h + 8, 3), (h + 100, 0)]);
    assert_eq!(b.free_pages_in(h, h + 512), 9);
    assert_eq!(b.free_pages_in(h + 512, h + 1024), 512);
}
