//! `inspect` of a 16 GiB guest RAM range, the DESIGN target being under a second.
//!
//! The 16 GiB are this process's own anonymous memory, every page present without using RAM:
//! read-faulting maps the shared zero page (4 KiB PTEs: 4 Mi of them, the worst case for the
//! page-table walk) or, with `MADV_HUGEPAGE`, the huge zero page (8192 PMDs). The inspection
//! walks the same page tables, builds the same extents and asks slat-mmu the same questions as
//! it would for a QEMU process with 16 GiB of preallocated RAM.
//!
//! A third case discards every other page, the worst case for the extents (2 Mi one-page runs).
//!
//! Run: `cargo bench -p slat-linux --bench inspect`.

use criterion::{criterion_group, criterion_main, Criterion};
use slat_linux::backing::{Backing, Placement, ThpAdvice};
use slat_linux::inspect::{inspect, Options};

const SIZE: u64 = 16 << 30;

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("inspect_16g");
    g.sample_size(10);
    for (name, thp) in [
        ("4k_ptes", ThpAdvice::NoHugepage),
        ("2m_pmds", ThpAdvice::Hugepage),
        ("4k_every_other_page", ThpAdvice::NoHugepage),
    ] {
        let b = match Backing::anonymous(SIZE, thp, Placement::aligned(1 << 30)) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("SKIP inspect_16g/{name}: cannot map 16 GiB: {e}");
                continue;
            }
        };
        b.populate_read().expect("read-fault 16 GiB");
        let mut present = SIZE;
        if name == "4k_every_other_page" {
            // The worst case for the extents: 2 Mi runs of one page (and 2 Mi holes).
            for off in (4096..SIZE).step_by(8192) {
                b.discard(off, 4096).expect("MADV_DONTNEED");
            }
            present = SIZE / 2;
        }
        let opts = Options {
            ranges: vec![format!("{:#x}:16G@0x100000000", b.hva()).parse().unwrap()],
            no_debugfs: true,
            ..Options::default()
        };
        let r = inspect(std::process::id() as i32, &opts).unwrap();
        assert_eq!(r.blocks[0].host.present(), present);
        g.bench_function(name, |bench| bench.iter(|| inspect(std::process::id() as i32, &opts).unwrap()));
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
