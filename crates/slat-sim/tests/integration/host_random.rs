//! Randomized, seeded sequences of faults and events over every backing kind. After every step:
//! the host's invariants hold (`audit`), and a shadow "stage 2" that caches every `fault_in`
//! result and forgets only what the notifier invalidates still agrees with `lookup` — the host
//! never changes or removes a mapping behind the MMU's back.

use std::cell::RefCell;
use std::collections::BTreeMap;

use crate::host_common::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use slat_mmu::{HostMemory, Hva, MmuNotifier, Pfn};
use slat_pt::PageSize;
use slat_sim::host::{
    Advice, Backing, HostConfig, HostEvent, HvaRange, MmapRequest, Prot, ShmemHuge, SimHost, ThpAdvice, ThpMode,
};

/// What a stage 2 built from `fault_in` results would hold: page -> (pfn, writable).
#[derive(Default)]
struct Shadow {
    pages: RefCell<BTreeMap<u64, (u64, bool)>>,
    open: RefCell<Vec<(u64, u64)>>,
}

impl MmuNotifier for Shadow {
    fn invalidate_range_start(&self, start: Hva, end: Hva) {
        let (start, end) = (start.0, end.0);
        let mut p = self.pages.borrow_mut();
        let gone: Vec<u64> = p.range(start..end).map(|(&k, _)| k).collect();
        for k in gone {
            p.remove(&k);
        }
        self.open.borrow_mut().push((start, end));
    }
    fn invalidate_range_end(&self, start: Hva, end: Hva) {
        let (start, end) = (start.0, end.0);
        assert_eq!(self.open.borrow_mut().pop(), Some((start, end)), "unbalanced invalidation");
    }
    fn clear_young(&self, _: Hva, _: Hva) -> bool {
        true
    }
    fn test_young(&self, _: Hva, _: Hva) -> bool {
        false
    }
}

fn backings() -> Vec<(Backing, u64, ThpAdvice)> {
    vec![
        (Backing::Anonymous { thp: ThpMode::Always }, 0, ThpAdvice::None),
        (Backing::Anonymous { thp: ThpMode::Madvise }, K4, ThpAdvice::HugePage),
        (Backing::Shmem { huge: ShmemHuge::Always, file_offset: 0, file_size: None }, 0, ThpAdvice::None),
        (Backing::Shmem { huge: ShmemHuge::Advise, file_offset: 0, file_size: None }, 8 * K4, ThpAdvice::HugePage),
        (Backing::PageCache { max_folio_order: 9, file_offset: 0, file_size: None }, 0, ThpAdvice::None),
        (Backing::PageCache { max_folio_order: 3, file_offset: 0, file_size: None }, 0, ThpAdvice::None),
        (Backing::Hugetlbfs { page_size: PageSize::Size2M, file_offset: 0 }, 0, ThpAdvice::None),
        (Backing::Dax { max_leaf: PageSize::Size2M, file_offset: 0 }, 0, ThpAdvice::None),
        (Backing::PfnMap { pa: 0xf0_0000_0000, max_leaf: PageSize::Size2M }, 0, ThpAdvice::None),
    ]
}

fn random_event(rng: &mut ChaCha8Rng, vmas: &[(u64, u64)]) -> HostEvent {
    let (start, len) = vmas[rng.gen_range(0..vmas.len())];
    let pages = len / K4;
    let first = rng.gen_range(0..pages);
    // Mostly small ranges, sometimes whole 2 MiB blocks, sometimes past the end (an error).
    let n = match rng.gen_range(0..10) {
        0..=5 => rng.gen_range(1..=4),
        6..=8 => 512,
        _ => pages + 7,
    };
    let hva = if rng.gen_bool(0.3) { start + (first & !511) * K4 } else { start + first * K4 };
    let len = n * K4;
    match rng.gen_range(0..16) {
        0 => HostEvent::Munmap { hva, len },
        1 | 2 => {
            HostEvent::Mprotect { hva, len, prot: [Prot::ReadOnly, Prot::ReadWrite, Prot::None][rng.gen_range(0..3)] }
        }
        3 => HostEvent::Madvise { hva, len, advice: Advice::DontNeed },
        4 => HostEvent::Madvise { hva, len, advice: Advice::Collapse },
        5 => HostEvent::Madvise { hva, len, advice: [Advice::HugePage, Advice::NoHugePage][rng.gen_range(0..2)] },
        6 => HostEvent::Khugepaged {
            blocks: rng.gen_range(1..6),
            range: rng.gen_bool(0.5).then_some(HvaRange { start: hva, end: hva + len }),
        },
        7 => HostEvent::Compact { max_blocks: rng.gen_range(1..4) },
        8 => HostEvent::Migrate { hva, len },
        9 => HostEvent::KsmMerge { hva, len, ratio: rng.gen_range(0.0..=1.0) },
        10 => HostEvent::BalloonInflate { hva, len },
        11 => HostEvent::BalloonDeflate { hva, len },
        12 => HostEvent::ForeignMap { hva, len },
        13 => HostEvent::ForeignUnmap { hva, len },
        14 => HostEvent::Age { hva, len, clear: rng.gen_bool(0.5) },
        _ => HostEvent::Fragment { fraction: 0.01 },
    }
}

fn check_shadow(h: &SimHost, shadow: &Shadow, step: usize, what: &str) {
    for (&page, &(pfn, writable)) in shadow.pages.borrow().iter() {
        let now = h.lookup(Hva(page));
        let ok = now.is_some_and(|p| p.pfn == Pfn(pfn) && (p.writable || !writable));
        assert!(ok, "step {step} ({what}): cached {page:#x} -> {pfn:#x} (w={writable}) but host has {now:?}");
    }
}

fn run(seed: u64, steps: usize) -> (Vec<u64>, slat_sim::host::HostStats) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let h = SimHost::new(HostConfig {
        memory: 512 << 20,
        fragmentation: 0.2,
        hugetlb_2m_pages: 6,
        dax_size: 6 * M2,
        khugepaged_max_ptes_none: 511,
        seed,
        ..HostConfig::default()
    })
    .unwrap();
    let mut vmas = Vec::new();
    for (backing, offset, advice) in backings() {
        let len = 6 * M2;
        let hva = h.mmap(&MmapRequest::new(len, backing).at_offset(offset).with_advice(advice)).unwrap();
        vmas.push((hva, len));
    }
    let shadow = Shadow::default();
    let mut pfns = Vec::new();
    for step in 0..steps {
        let last: String;
        if rng.gen_bool(0.6) {
            let (start, len) = vmas[rng.gen_range(0..vmas.len())];
            let hva = start + rng.gen_range(0..len / K4) * K4 + rng.gen_range(0..K4);
            let write = rng.gen_bool(0.5);
            last = format!("fault {hva:#x} write={write}");
            if let Ok(p) = h.fault_in(Hva(hva), write) {
                assert!(!write || p.writable);
                let page = hva & !(K4 - 1);
                shadow.pages.borrow_mut().insert(page, (p.pfn.0, p.writable));
                pfns.push(p.pfn.0);
                // The block around the page maps contiguous memory of the reported size.
                let base = p.size.align_down(hva);
                let first = h.lookup(Hva(base)).unwrap();
                assert_eq!(first.pfn + (page - base) / K4, p.pfn, "step {step}: leaf not contiguous");
            }
            check_shadow(&h, &shadow, step, "fault");
        } else {
            let event = random_event(&mut rng, &vmas);
            let result = h.apply(&event, &shadow);
            last = format!("{event:?} -> {result:?}");
            if let Ok(r) = &result {
                for inv in &r.invalidated {
                    assert!(inv.start < inv.end);
                }
            }
            assert!(shadow.open.borrow().is_empty());
            check_shadow(&h, &shadow, step, event.name());
        }
        if let Err(e) = h.audit() {
            panic!("seed {seed} step {step} after {last}: {e}");
        }
    }
    (pfns, h.stats())
}

#[test]
fn random_sequences_keep_invariants_and_the_notifier_contract() {
    let seeds: u64 = std::env::var("HOST_RANDOM_SEEDS").ok().and_then(|v| v.parse().ok()).unwrap_or(12);
    for seed in 0..seeds {
        run(seed, 400);
    }
}

#[test]
fn random_sequences_are_deterministic() {
    let a = run(99, 300);
    let b = run(99, 300);
    assert_eq!(a, b);
}
