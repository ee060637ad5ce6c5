//! x86 guests with their own paging on: the CPU's walk of the guest's page directory goes
//! through slat's stage-2 table too. A stage-2 fault during that walk says so (AMD EXITINFO1 bit
//! 33; Intel exit qualification bit 8 clear), and setting accessed and dirty bits in guest
//! page-table entries is a stage-2 *write* (with Intel's EPT A/D flags every guest paging-structure
//! access counts as one). So while dirty logging is on, the page holding the guest's page
//! directory must show up in the dirty log.

use alloc::string::String;
use alloc::vec::Vec;

use slat_mmu::{DirtyLogMode, FaultOutcome, Gfn, Gpa, Hva, MemslotSpec, Mmu, MmuConfig, Parts};
use slat_pt::{Access, PAGE_SIZE};

use crate::arena::FrameArena;
use crate::check;
use crate::host::{BareHost, HVA_1G, HVA_2M, HVA_4K};
use crate::report::Report;
use crate::scenario::{Op, S2Fault, Vm, SLOT_1G, SLOT_2M, SLOT_4K};

/// An x86 vCPU whose guest can turn its own 32-bit paging on.
pub trait GuestPaging: Vm {
    /// Turn the guest's paging on (32-bit, CR4.PSE, page directory at `cr3`) or off.
    fn set_guest_paging(&mut self, cr3: Option<u64>);
    /// The fault happened while the CPU walked the guest's page tables.
    fn in_guest_walk(f: &S2Fault) -> bool;
}

/// Guest-physical address of the guest's page directory (slot 0, 4 KiB host pages).
const PD_GPA: u64 = 0x5000;
const PDE_A: u32 = 1 << 5;
const PDE_D: u32 = 1 << 6;

/// Run the guest-paging checks with a fresh MMU on page tables from `arena`.
pub fn run<V: GuestPaging>(vm: &mut V, r: &mut Report, host: &BareHost, arena: (u64, u64)) {
    r.section("guest paging on: the guest's page-table walk and its A/D writes go through slat");
    let mmu = Mmu::<V::Fmt, Parts<FrameArena, &BareHost, V::Tlb>>::new(
        MmuConfig::default().with_dirty_log(DirtyLogMode::SplitOnFault),
        FrameArena::new(arena.0, arena.1),
        host,
        vm.tlb(),
    )
    .expect("MMU configuration");
    for (id, gpa, len) in [SLOT_4K, SLOT_2M, SLOT_1G] {
        let hva = [HVA_4K, HVA_2M, HVA_1G][id as usize];
        let spec = MemslotSpec {
            id,
            base_gfn: Gfn(gpa / PAGE_SIZE),
            npages: len / PAGE_SIZE,
            hva: Hva(hva),
            readonly: false,
            log_dirty: false,
        };
        mmu.add_memslot(spec).expect("memslot");
    }
    vm.set_root(mmu.root_pa());
    // An identity map of the guest's 4 GiB with 4 MiB pages: P | RW | PS, A and D clear.
    for i in 0..1024u64 {
        host.write(HVA_4K + PD_GPA + i * 4, ((i << 22) | 0x83) as u32);
    }
    vm.set_guest_paging(Some(PD_GPA));
    let mut faults: Vec<S2Fault> = Vec::new();
    let op = |vm: &mut V, op: Op, faults: &mut Vec<S2Fault>| {
        faults.clear();
        vm.run(op, &mut |f| {
            faults.push(*f);
            matches!(mmu.handle_fault(Gpa(f.gpa), f.access), Ok(FaultOutcome::Mapped { .. } | FaultOutcome::Retry))
        })
    };
    let walk = V::in_guest_walk;
    let fin = |f: &S2Fault| !V::in_guest_walk(f);

    let g = SLOT_2M.1 + 0x4000;
    let res = op(vm, Op::Load { gpa: g }, &mut faults);
    let pde = |i: u64| host.read(HVA_4K + PD_GPA + i * 4);
    check!(
        r,
        res.is_ok()
            && faults.len() == 3
            && faults[0].gpa / PAGE_SIZE == PD_GPA / PAGE_SIZE
            && walk(&faults[0])
            && faults[1..].iter().all(fin)
            && faults[2].gpa == g,
        "first load with paging on: the walk of the guest's page directory faults first (a write: the CPU sets A), then the fetch and the load: {}",
        describe::<V>(&faults)
    );
    check!(
        r,
        pde(0) & PDE_A != 0 && pde(4) & PDE_A != 0 && pde(4) & PDE_D == 0,
        "the CPU set A in the guest's PDEs 0 and 4 through slat's leaf (PDE 4 = {:#x})",
        pde(4)
    );
    let _ = mmu.set_dirty_logging(SLOT_4K.0, true);
    let st = SLOT_2M.1 + 0x8000;
    let res = op(vm, Op::Store { gpa: st, val: 0x9A9E_0001 }, &mut faults);
    check!(
        r,
        res.is_ok()
            && faults.len() == 1
            && faults[0].access == Access::Write
            && faults[0].permission == Some(true)
            && faults[0].gpa / PAGE_SIZE == PD_GPA / PAGE_SIZE
            && walk(&faults[0]),
        "logging on, a store through a 4 MiB guest page: setting D in the guest's PDE is a stage-2 write fault on the protected page directory during the walk: {}",
        describe::<V>(&faults)
    );
    let log = mmu.get_dirty_log(SLOT_4K.0).map(|l| l.first().copied().unwrap_or(0));
    check!(
        r,
        log == Ok(1 << (PD_GPA / PAGE_SIZE)) && pde(4) & PDE_D != 0 && host.read(HVA_2M + 0x8000) == 0x9A9E_0001,
        "the dirty log holds exactly the page directory's page (the CPU's D update), log word {:x?}; PDE 4 = {:#x}",
        log,
        pde(4)
    );
    vm.set_guest_paging(None);
    match mmu.audit() {
        Ok(a) => check!(r, true, "audit() after guest paging: {} leaves, invariants hold", a.leaves),
        Err(e) => check!(r, false, "audit() after guest paging: {e}"),
    };
}

fn describe<V: GuestPaging>(faults: &[S2Fault]) -> String {
    use core::fmt::Write;
    let mut s = String::new();
    for f in faults {
        let walk = if V::in_guest_walk(f) { "guest-walk" } else { "final" };
        let _ = write!(s, "{:?}@{:#x} {walk} syndrome={:#x} ", f.access, f.gpa, f.syndrome);
    }
    if s.is_empty() {
        s.push_str("no stage-2 fault");
    }
    s
}
