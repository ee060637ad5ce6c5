//! The sharded reader-writer lock under concurrent faults (readers) and invalidations (writers).

use slat_mmu::sharded::ShardedRawRwLock;
use slat_mmu::testing::{FakeHost, RecordingTlb};
use slat_mmu::{Gfn, Gpa, Hva, MemslotSpec, Mmu, MmuConfig, MmuNotifier, Parts};
use slat_pt::format::Ept4;
use slat_pt::{Access, PageSize, SimFrameAllocator};

#[test]
fn faults_and_invalidations_under_the_sharded_lock() {
    const HVA: u64 = 0x7f00_0000_0000;
    let host = FakeHost::new();
    host.map_range(HVA, 64 << 20, 0x20_0000_0000, PageSize::Size2M, true);
    let m: Mmu<Ept4, Parts<_, _, _, ShardedRawRwLock>> =
        Mmu::new(MmuConfig::default(), SimFrameAllocator::new(0x100_0000_0000, 1 << 30), host, RecordingTlb::default())
            .unwrap();
    m.add_memslot(MemslotSpec {
        id: 0,
        base_gfn: Gfn(0x40000),
        npages: (64 << 20) >> 12,
        hva: Hva(HVA),
        readonly: false,
        log_dirty: false,
    })
    .unwrap();
    let lock_api_check = lock_api::RwLock::<ShardedRawRwLock, u64>::new(0);
    std::thread::scope(|s| {
        for t in 0..3u64 {
            let (m, l) = (&m, &lock_api_check);
            s.spawn(move || {
                let mut x = 0x9e37_79b9u64 + t;
                for i in 0..3000 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let gpa = (1 << 30) + ((x % (64 << 20)) & !0xfff);
                    m.handle_fault(Gpa(gpa), if x % 3 == 0 { Access::Write } else { Access::Read }).unwrap();
                    if i % 100 == 0 {
                        *l.write() += 1;
                    } else {
                        let v = *l.read();
                        assert!(v <= 90);
                    }
                }
            });
        }
        let m = &m;
        s.spawn(move || {
            for i in 0..300u64 {
                let hva = HVA + (i % 32) * (2 << 20);
                m.invalidate_range_start(Hva(hva), Hva(hva + 4096));
                m.invalidate_range_end(Hva(hva), Hva(hva + 4096));
            }
        });
    });
    assert_eq!(*lock_api_check.read(), 90, "no lost writer update");
    m.audit().unwrap();
}
