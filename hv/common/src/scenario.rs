//! The guest scenario every hypervisor runs, written once against [`Vm`]: what the guest does,
//! how its stage-2 faults reach slat, and what each step must look like to the emulated CPU.
//!
//! The guest runs with its own translation off, so every address it uses is a guest-physical
//! address (gpa). One [`Op`] is one guest entry: the hypervisor points the guest at a stub (store,
//! load, or a fetch from a target), the guest executes it and hypercalls; every stage-2 fault on
//! the way comes back as an [`S2Fault`] decoded from the architecture's syndrome and is resolved by
//! `Mmu::handle_fault`.
//!
//! Guest-physical layout (three memslots, each backed by one host window of [`crate::host`]):
//! * slot 0, gpa 0 .. 4 MiB: 4 KiB host pages (scattered) -> 4 KiB leaves; the guest's stubs
//!   live at [`CODE_GPA`];
//! * slot 1, gpa 16 MiB .. 32 MiB: 2 MiB host chunks -> 2 MiB leaves;
//! * slot 2, gpa 1 GiB .. 2 GiB: one 1 GiB host chunk -> a 1 GiB leaf.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use slat_mmu::{DirtyLogMode, FaultOutcome, Gfn, Gpa, Hva, MemslotSpec, Mmu, MmuConfig, MmuNotifier, Parts};
use slat_pt::{Access, Format, PageSize, Perms, PAGE_SIZE};

use crate::arena::FrameArena;
use crate::check;
use crate::flush::SKIP_FLUSH;
use crate::host::{BareHost, HVA_1G, HVA_2M, HVA_4K};
use crate::report::Report;

/// Guest-physical address of the guest's stub page (store stub at +0, load stub at +[`LOAD_STUB`]).
pub const CODE_GPA: u64 = 0x1000;
/// Offset of the load stub in the stub page.
pub const LOAD_STUB: u64 = 0x40;

/// Slot 0: 4 KiB-backed.
pub const SLOT_4K: (u32, u64, u64) = (0, 0, 4 << 20);
/// Slot 1: 2 MiB-backed.
pub const SLOT_2M: (u32, u64, u64) = (1, 16 << 20, 16 << 20);
/// Slot 2: 1 GiB-backed.
pub const SLOT_1G: (u32, u64, u64) = (2, 1 << 30, 1 << 30);

/// One guest entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Store the 32-bit `val` at `gpa`.
    Store {
        /// Address.
        gpa: u64,
        /// Value.
        val: u32,
    },
    /// Load the 32-bit word at `gpa` (returned as the op's result).
    Load {
        /// Address.
        gpa: u64,
    },
    /// Jump to the code at `gpa` (an [`Vm::exec_stub`]), whose result is the op's result.
    Exec {
        /// Address.
        gpa: u64,
    },
}

/// A stage-2 fault as the hypervisor decoded it from the CPU's syndrome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct S2Fault {
    /// Faulting guest-physical address.
    pub gpa: u64,
    /// What the guest was doing.
    pub access: Access,
    /// `Some(true)`: a present leaf refused the access (permission fault); `Some(false)`: no
    /// translation; `None`: the architecture does not say (RISC-V).
    pub permission: Option<bool>,
    /// The raw syndrome (EXITINFO1, ESR_EL2, scause), for the log.
    pub syndrome: u64,
}

impl S2Fault {
    fn describe(&self) -> String {
        let p = match self.permission {
            Some(true) => "permission",
            Some(false) => "not-present",
            None => "guest-page-fault",
        };
        format!("{:?}@{:#x} {} syndrome={:#x}", self.access, self.gpa, p, self.syndrome)
    }
}

/// Why a guest entry did not complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunError {
    /// More stage-2 faults than any op needs: the fault handler is not making progress.
    TooManyFaults,
    /// `handle_fault` refused the fault.
    FaultRefused,
    /// An exit the hypervisor does not expect (code, info).
    Unexpected(u64, u64),
}

/// One architecture's hypervisor, as the scenario drives it.
pub trait Vm {
    /// The stage-2 format the CPU walks.
    type Fmt: Format;
    /// The TLB that executes the architecture's invalidation instructions.
    type Tlb: slat_mmu::Tlb;
    /// Name printed on every line.
    const ARCH: &'static str;
    /// The emulator keeps stage-2 TLB entries across exits, so a skipped flush is visible.
    const KEEPS_TLB_ACROSS_EXITS: bool;
    /// A handle on the TLB for a new MMU.
    fn tlb(&self) -> Self::Tlb;
    /// Use the stage-2 table at `root_pa` from the next entry on.
    fn set_root(&mut self, root_pa: u64);
    /// Machine code of the stub page: store `value` to `addr` at +0, load from `addr` at
    /// +[`LOAD_STUB`], each ending with a hypercall.
    fn code_page(&self) -> Vec<u8>;
    /// Machine code that returns `value` as the op's result and hypercalls.
    fn exec_stub(&self, value: u32) -> Vec<u8>;
    /// Run one op; every stage-2 fault goes to `on_fault` (false: give up).
    fn run(&mut self, op: Op, on_fault: &mut dyn FnMut(&S2Fault) -> bool) -> Result<u32, RunError>;
}

/// The page-table memory the scenario may use: each MMU gets its own quarter.
#[derive(Debug, Clone, Copy)]
pub struct Arenas {
    /// Base (identity mapped).
    pub base: u64,
    /// Bytes.
    pub len: u64,
}

type M<'h, V> = Mmu<<V as Vm>::Fmt, Parts<FrameArena, &'h BareHost, <V as Vm>::Tlb>>;

/// What one op did.
struct Outcome {
    result: Result<u32, RunError>,
    faults: Vec<S2Fault>,
}

impl Outcome {
    fn faults_str(&self) -> String {
        if self.faults.is_empty() {
            return String::from("no stage-2 fault");
        }
        let v: Vec<String> = self.faults.iter().take(3).map(S2Fault::describe).collect();
        if self.faults.len() > 3 {
            format!("{}, ... ({} faults in all)", v.join(", "), self.faults.len())
        } else {
            v.join(", ")
        }
    }

    /// The faults are exactly `want` (page, access, permission).
    fn faults_are(&self, want: &[(u64, Access, bool)]) -> bool {
        self.faults.len() == want.len()
            && self.faults.iter().zip(want).all(|(f, &(gpa, access, perm))| {
                f.gpa / PAGE_SIZE == gpa / PAGE_SIZE && f.access == access && f.permission.is_none_or(|p| p == perm)
            })
    }
}

/// The scenario runner.
pub struct Scenario<'a, 'o, V: Vm> {
    vm: &'a mut V,
    r: &'a mut Report<'o>,
    host: &'a BareHost,
    arenas: Arenas,
    next_arena: u64,
}

fn pages_of(log: &[u64]) -> Vec<u64> {
    let mut v = Vec::new();
    for (w, bits) in log.iter().enumerate() {
        for b in 0..64 {
            if bits & (1 << b) != 0 {
                v.push(w as u64 * 64 + b);
            }
        }
    }
    v
}

impl<'a, 'o, V: Vm> Scenario<'a, 'o, V> {
    /// A runner over `vm`, printing to `r`, with guest memory from `host` and page tables from
    /// `arenas`.
    pub fn new(vm: &'a mut V, r: &'a mut Report<'o>, host: &'a BareHost, arenas: Arenas) -> Self {
        Scenario { vm, r, host, arenas, next_arena: 0 }
    }

    fn mmu(&mut self, dirty_log: DirtyLogMode) -> M<'a, V> {
        let quarter = self.arenas.len / 4;
        let arena = FrameArena::new(self.arenas.base + self.next_arena * quarter, quarter);
        self.next_arena = (self.next_arena + 1) % 4;
        let config = MmuConfig::default().with_dirty_log(dirty_log);
        let mmu = M::<V>::new(config, arena, self.host, self.vm.tlb()).expect("MMU configuration");
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
        self.vm.set_root(mmu.root_pa());
        mmu
    }

    fn op(&mut self, mmu: &M<'a, V>, op: Op) -> Outcome {
        let mut faults = Vec::new();
        let result = self.vm.run(op, &mut |f| {
            faults.push(*f);
            matches!(mmu.handle_fault(Gpa(f.gpa), f.access), Ok(FaultOutcome::Mapped { .. } | FaultOutcome::Retry))
        });
        Outcome { result, faults }
    }

    fn leaf(mmu: &M<'a, V>, gpa: u64) -> Option<slat_pt::Translation> {
        mmu.with_tables(|pt| pt.translate(Gpa(gpa)))
    }

    fn size_of(mmu: &M<'a, V>, gpa: u64) -> Option<PageSize> {
        Self::leaf(mmu, gpa).map(|t| t.size)
    }

    fn audit(&mut self, mmu: &M<'a, V>, when: &str) {
        match mmu.audit() {
            Ok(rep) => {
                check!(
                    self.r,
                    true,
                    "audit() after {when}: {} leaves, {} table pages, invariants hold",
                    rep.leaves,
                    rep.table_pages
                );
            }
            Err(e) => {
                check!(self.r, false, "audit() after {when}: {e}");
            }
        }
    }

    /// Run every part of the scenario.
    pub fn run_all(&mut self) {
        self.seed();
        self.fault_path();
        self.hardware_dirty();
        self.eager_split();
        self.flushes();
    }

    /// Put the stubs and recognisable data into host memory.
    fn seed(&mut self) {
        let h = self.host;
        h.write_bytes(HVA_4K + CODE_GPA, &self.vm.code_page());
        h.write_bytes(HVA_4K + 0x3000, &self.vm.exec_stub(0xC0DE_0001));
        h.write_bytes(HVA_2M + 0x20_8000, &self.vm.exec_stub(0xC0DE_0002));
        h.write(HVA_2M + 0x4_0000, 0x5EED_0001);
        h.write(HVA_1G, 0x5EED_0002);
    }

    /// Faults from an empty table with every leaf size, then dirty logging with write
    /// protection and in-place recovery.
    fn fault_path(&mut self) {
        self.r.section("fault path from an empty table (4K, 2M, 1G leaves; read, write, fetch)");
        let mmu = self.mmu(DirtyLogMode::SplitOnFault);
        let s = mmu.stats();
        check!(
            self.r,
            s.pages_4k + s.pages_2m + s.pages_1g == 0,
            "empty table: no leaves, {} table page(s)",
            s.table_pages
        );

        // A store into the 4 KiB slot: the stub fetch faults, then the store.
        let o = self.op(&mmu, Op::Store { gpa: 0x1_0000, val: 0xA11C_E001 });
        check!(
            self.r,
            o.result.is_ok() && o.faults_are(&[(CODE_GPA, Access::Exec, false), (0x1_0000, Access::Write, false)]),
            "first entry: stub fetch then store fault, each resolved by handle_fault: {}",
            o.faults_str()
        );
        let hpa = self.host.hpa(HVA_4K + 0x1_0000).unwrap_or(0);
        check!(
            self.r,
            self.host.read(HVA_4K + 0x1_0000) == 0xA11C_E001 && Self::size_of(&mmu, 0x1_0000) == Some(PageSize::Size4K),
            "store landed in the scattered host page {hpa:#x} through a 4K leaf"
        );
        check!(
            self.r,
            Self::leaf(&mmu, 0x1_0000).map(|t| t.pa) == Some(hpa),
            "translate(gpa 0x10000) agrees with the host page"
        );

        // A load from the 2 MiB slot.
        let g = SLOT_2M.1 + 0x4_0000;
        let o = self.op(&mmu, Op::Load { gpa: g });
        check!(
            self.r,
            o.result == Ok(0x5EED_0001) && o.faults_are(&[(g, Access::Read, false)]),
            "load from the 2M slot: one read fault, value {:x?} from host memory: {}",
            o.result,
            o.faults_str()
        );
        check!(self.r, Self::size_of(&mmu, g) == Some(PageSize::Size2M), "read fault installed a 2M leaf");
        check!(
            self.r,
            Self::leaf(&mmu, g).is_some_and(|t| !t.attrs.dirty),
            "the 2M leaf is clean after the read (D clear in slat's leaf)"
        );
        let end = SLOT_2M.1 + 0x1F_FFFC;
        let o = self.op(&mmu, Op::Store { gpa: end, val: 0xB0B0_0002 });
        check!(
            self.r,
            o.result.is_ok() && o.faults.is_empty() && self.host.read(HVA_2M + 0x1F_FFFC) == 0xB0B0_0002,
            "store to the last word of the 2M block: {}, lands at host {:#x}",
            o.faults_str(),
            self.host.hpa(HVA_2M + 0x1F_FFFC).unwrap_or(0)
        );
        check!(
            self.r,
            Self::leaf(&mmu, g).is_some_and(|t| t.attrs.dirty),
            "the CPU set the dirty bit in slat's 2M leaf"
        );

        // The 1 GiB slot.
        let g1 = SLOT_1G.1 + 0x2345_6780;
        let o = self.op(&mmu, Op::Store { gpa: g1, val: 0x1616_0003 });
        check!(
            self.r,
            o.result.is_ok()
                && o.faults_are(&[(g1, Access::Write, false)])
                && self.host.read(HVA_1G + 0x2345_6780) == 0x1616_0003,
            "store into the 1G slot: one write fault, data lands: {}",
            o.faults_str()
        );
        check!(self.r, Self::size_of(&mmu, g1) == Some(PageSize::Size1G), "write fault installed a 1G leaf");
        let last = SLOT_1G.1 + SLOT_1G.2 - 4;
        let o = self.op(&mmu, Op::Store { gpa: last, val: 0x1616_0004 });
        let o2 = self.op(&mmu, Op::Load { gpa: SLOT_1G.1 });
        check!(
            self.r,
            o.faults.is_empty()
                && o2.faults.is_empty()
                && o2.result == Ok(0x5EED_0002)
                && self.host.read(HVA_1G + SLOT_1G.2 - 4) == 0x1616_0004,
            "last and first word of the GiB go through the same 1G leaf without faults"
        );

        // Instruction fetches.
        let o = self.op(&mmu, Op::Exec { gpa: 0x3000 });
        check!(
            self.r,
            o.result == Ok(0xC0DE_0001) && o.faults_are(&[(0x3000, Access::Exec, false)]),
            "fetch from the 4K slot: one instruction-fetch fault, code ran (result {:x?}): {}",
            o.result,
            o.faults_str()
        );
        let gx = SLOT_2M.1 + 0x20_8000;
        let o = self.op(&mmu, Op::Exec { gpa: gx });
        check!(
            self.r,
            o.result == Ok(0xC0DE_0002)
                && o.faults_are(&[(gx, Access::Exec, false)])
                && Self::size_of(&mmu, gx) == Some(PageSize::Size2M),
            "fetch from the 2M slot: instruction-fetch fault, 2M executable leaf: {}",
            o.faults_str()
        );
        let s = mmu.stats();
        check!(
            self.r,
            (s.pages_4k, s.pages_2m, s.pages_1g) == (3, 2, 1),
            "leaves: {} x 4K, {} x 2M, {} x 1G (want 3, 2, 1); {} faults",
            s.pages_4k,
            s.pages_2m,
            s.pages_1g,
            s.faults
        );
        self.audit(&mmu, "the fault path");

        self.r.section("dirty logging, write-protect mode, then in-place recovery");
        let id = SLOT_2M.0;
        let _ = mmu.set_dirty_logging(id, true);
        check!(
            self.r,
            Self::leaf(&mmu, g).is_some_and(|t| !t.attrs.perms.contains(Perms::WRITE) && t.size == PageSize::Size2M),
            "logging on: the 2M leaves are write-protected ({} leaves)",
            mmu.stats().write_protected
        );
        let o = self.op(&mmu, Op::Load { gpa: g });
        check!(
            self.r,
            o.result == Ok(0x5EED_0001) && o.faults.is_empty(),
            "reads still go through: {}",
            o.faults_str()
        );
        let x = SLOT_2M.1 + 0x5000;
        let y = SLOT_2M.1 + 0x9000;
        let o = self.op(&mmu, Op::Store { gpa: x, val: 0xD1D1_0005 });
        check!(
            self.r,
            o.result.is_ok() && o.faults_are(&[(x, Access::Write, true)]),
            "write to a protected page faults with the write bit on a present leaf: {}",
            o.faults_str()
        );
        check!(
            self.r,
            Self::size_of(&mmu, x) == Some(PageSize::Size4K)
                && Self::leaf(&mmu, y)
                    .is_some_and(|t| t.size == PageSize::Size4K && !t.attrs.perms.contains(Perms::WRITE)),
            "the 2M leaf was split: page 5 is a writable 4K leaf, page 9 a protected one"
        );
        let o = self.op(&mmu, Op::Store { gpa: y, val: 0xD1D1_0009 });
        let o2 = self.op(&mmu, Op::Store { gpa: x, val: 0xD1D1_1005 });
        check!(
            self.r,
            o.faults_are(&[(y, Access::Write, true)]) && o2.faults.is_empty(),
            "write to page 9 faults ({}); the second write to page 5 does not ({})",
            o.faults_str(),
            o2.faults_str()
        );
        let log = mmu.get_dirty_log(id).map(|l| pages_of(&l));
        check!(self.r, log == Ok(alloc::vec![5, 9]), "get_dirty_log = pages {:?} (want exactly [5, 9])", log);
        let o = self.op(&mmu, Op::Store { gpa: x, val: 0xD1D1_2005 });
        check!(
            self.r,
            o.faults_are(&[(x, Access::Write, true)]),
            "after the harvest page 5 is protected again: {}",
            o.faults_str()
        );
        let log = mmu.get_dirty_log(id).map(|l| pages_of(&l));
        check!(self.r, log == Ok(alloc::vec![5]), "next get_dirty_log = pages {:?} (want exactly [5])", log);
        let before = mmu.stats();
        let _ = mmu.set_dirty_logging(id, false);
        let after = mmu.stats();
        check!(
            self.r,
            after.pages_2m == 2
                && after.recoveries > before.recoveries
                && Self::size_of(&mmu, x) == Some(PageSize::Size2M),
            "logging off: recovered in place to {} x 2M leaves ({} 4K leaves left, {} recoveries)",
            after.pages_2m,
            after.pages_4k,
            after.recoveries
        );
        let o = self.op(&mmu, Op::Load { gpa: x });
        let o2 = self.op(&mmu, Op::Load { gpa: y });
        let o3 = self.op(&mmu, Op::Store { gpa: y + 4, val: 7 });
        check!(
            self.r,
            o.result == Ok(0xD1D1_2005)
                && o2.result == Ok(0xD1D1_0009)
                && o.faults.is_empty()
                && o2.faults.is_empty()
                && o3.faults.is_empty(),
            "the guest keeps its data through the recovered leaf without faults (reads {:x?} {:x?})",
            o.result,
            o2.result
        );
        let r = mmu.recover_huge_pages(id);
        check!(
            self.r,
            r.as_ref().is_ok_and(|r| r.blocks == 0),
            "a second recover_huge_pages finds nothing to do: {:?}",
            r
        );
        self.audit(&mmu, "write-protect logging and recovery");
    }

    /// Dirty logging with the CPU's dirty bits.
    fn hardware_dirty(&mut self) {
        self.r.section("dirty logging, hardware-dirty mode (the CPU sets D in slat's leaves)");
        let mmu = self.mmu(DirtyLogMode::HardwareDirty);
        let id = SLOT_4K.0;
        let _ = mmu.set_dirty_logging(id, true);
        let p = |i: u64| 0x2_0000 + i * PAGE_SIZE;
        let mut faults = 0;
        for i in 0..4 {
            faults += self.op(&mmu, Op::Load { gpa: p(i) }).faults.len();
        }
        check!(self.r, faults == 5, "4 loads while logging: stub fetch + 4 read faults ({faults})");
        check!(
            self.r,
            (0..4).all(|i| Self::leaf(&mmu, p(i)).is_some_and(|t| t.attrs.perms.contains(Perms::WRITE) && !t.attrs.dirty)),
            "read faults map writable-clean 4K leaves"
        );
        let o1 = self.op(&mmu, Op::Store { gpa: p(1), val: 0xD0_0001 });
        let o3 = self.op(&mmu, Op::Store { gpa: p(3), val: 0xD0_0003 });
        check!(
            self.r,
            o1.faults.is_empty() && o3.faults.is_empty(),
            "stores to pages 0x21 and 0x23 take no stage-2 fault ({}; {})",
            o1.faults_str(),
            o3.faults_str()
        );
        let d: Vec<bool> = (0..4).map(|i| Self::leaf(&mmu, p(i)).is_some_and(|t| t.attrs.dirty)).collect();
        check!(self.r, d == [false, true, false, true], "the CPU set D in exactly the written leaves: {:?}", d);
        let log = mmu.get_dirty_log(id).map(|l| pages_of(&l));
        check!(
            self.r,
            log == Ok(alloc::vec![0x21, 0x23]),
            "get_dirty_log harvests exactly the written pages: {:x?}",
            log
        );
        let o = self.op(&mmu, Op::Store { gpa: p(1), val: 0xD0_1001 });
        let log = mmu.get_dirty_log(id).map(|l| pages_of(&l));
        check!(
            self.r,
            o.faults.is_empty() && log == Ok(alloc::vec![0x21]),
            "a write after the harvest: no fault, next harvest {:x?} (want [0x21])",
            log
        );
        // A huge leaf under hardware-dirty logging is write-protected and split on the first write.
        let x = SLOT_2M.1 + 0x7000;
        let _ = self.op(&mmu, Op::Store { gpa: x, val: 1 });
        let _ = mmu.set_dirty_logging(SLOT_2M.0, true);
        let o = self.op(&mmu, Op::Store { gpa: x, val: 2 });
        let o2 = self.op(&mmu, Op::Store { gpa: x, val: 3 });
        let log = mmu.get_dirty_log(SLOT_2M.0).map(|l| pages_of(&l));
        check!(
            self.r,
            o.faults_are(&[(x, Access::Write, true)]) && o2.faults.is_empty() && log == Ok(alloc::vec![7]),
            "2M leaf: first write faults ({}), the next does not, harvest {:?}",
            o.faults_str(),
            log
        );
        self.audit(&mmu, "hardware-dirty logging");
    }

    /// Eager split of a 1 GiB leaf and in-place recovery back to 1 GiB.
    fn eager_split(&mut self) {
        self.r.section("eager split of a 1G leaf, dirty log, in-place recovery to 1G");
        let mmu = self.mmu(DirtyLogMode::EagerSplit { chunk_tables: 64 });
        let id = SLOT_1G.0;
        let z = SLOT_1G.1 + 0x1234_5000;
        let _ = self.op(&mmu, Op::Store { gpa: z, val: 0xE0_0001 });
        let tables_1g = mmu.stats().table_pages;
        check!(self.r, Self::size_of(&mmu, z) == Some(PageSize::Size1G), "1G leaf mapped ({} table pages)", tables_1g);
        let _ = mmu.set_dirty_logging(id, true);
        let s = mmu.stats();
        check!(
            self.r,
            s.pages_1g == 0 && s.pages_4k >= 262_144 && s.eager_splits > 0,
            "eager split: {} x 4K leaves, {} table pages, {} splits",
            s.pages_4k,
            s.table_pages,
            s.eager_splits
        );
        let o = self.op(&mmu, Op::Load { gpa: z });
        let o2 = self.op(&mmu, Op::Load { gpa: SLOT_1G.1 + 0x3FFF_F000 });
        check!(
            self.r,
            o.result == Ok(0xE0_0001) && o.faults.is_empty() && o2.faults.is_empty(),
            "reads through the split tables: no faults, data intact"
        );
        let o = self.op(&mmu, Op::Store { gpa: z + 8, val: 0xE0_0002 });
        let log = mmu.get_dirty_log(id).map(|l| pages_of(&l));
        let want = (z - SLOT_1G.1) / PAGE_SIZE;
        check!(
            self.r,
            o.faults_are(&[(z, Access::Write, true)]) && log == Ok(alloc::vec![want]),
            "write faults on the protected 4K leaf ({}); log {:x?} (want [{want:#x}])",
            o.faults_str(),
            log
        );
        let _ = mmu.set_dirty_logging(id, false);
        let s = mmu.stats();
        check!(
            self.r,
            s.pages_1g == 1 && s.table_pages == tables_1g && Self::size_of(&mmu, z) == Some(PageSize::Size1G),
            "logging off: recovered in place to one 1G leaf; table pages back to {} (from {})",
            s.table_pages,
            tables_1g
        );
        let o = self.op(&mmu, Op::Load { gpa: z + 8 });
        check!(self.r, o.result == Ok(0xE0_0002) && o.faults.is_empty(), "data intact through the recovered 1G leaf");
        self.audit(&mmu, "eager split and recovery");
    }

    /// Flush obligations: a host-side remap and a dirty harvest, with slat's flushes and with
    /// the flush deliberately skipped.
    fn flushes(&mut self) {
        self.r.section("flush obligations (remap through the MMU notifier; dirty harvest)");
        let mmu = self.mmu(DirtyLogMode::HardwareDirty);
        // Remap with slat's flushes.
        let q = 0x3_0000;
        let _ = self.op(&mmu, Op::Store { gpa: q, val: 0xAAAA_0001 });
        let _ = self.op(&mmu, Op::Load { gpa: q });
        let before = crate::flush::FLUSHES.load(core::sync::atomic::Ordering::Relaxed);
        let (old, new) = self.remap(&mmu, HVA_4K + q, 0xAAAA_0002);
        let flushed = crate::flush::FLUSHES.load(core::sync::atomic::Ordering::Relaxed) - before;
        let o = self.op(&mmu, Op::Load { gpa: q });
        check!(
            self.r,
            o.result == Ok(0xAAAA_0002) && o.faults_are(&[(q, Access::Read, false)]),
            "host migrates page {old:#x} -> {new:#x} under invalidate_range_start/end ({flushed} flush(es)): guest sees the new page after a fault (read {:x?}; {})",
            o.result,
            o.faults_str()
        );
        // The same step with the flush skipped.
        let q2 = 0x3_1000;
        let _ = self.op(&mmu, Op::Store { gpa: q2, val: 0xBBBB_0001 });
        let _ = self.op(&mmu, Op::Load { gpa: q2 });
        SKIP_FLUSH.store(true, core::sync::atomic::Ordering::SeqCst);
        let _ = self.remap(&mmu, HVA_4K + q2, 0xBBBB_0002);
        SKIP_FLUSH.store(false, core::sync::atomic::Ordering::SeqCst);
        let o = self.op(&mmu, Op::Load { gpa: q2 });
        if V::KEEPS_TLB_ACROSS_EXITS {
            check!(
                self.r,
                o.result == Ok(0xBBBB_0001) && o.faults.is_empty(),
                "same migration with the flush skipped: the guest still reads the OLD page ({:x?}, {}), so the flush check can fail",
                o.result,
                o.faults_str()
            );
        } else {
            self.r.note(format_args!(
                "same migration with the flush skipped: read {:x?} ({}); this emulator flushes stage-2 translations on every world switch, so a missing flush is invisible here",
                o.result,
                o.faults_str()
            ));
        }
        slat_mmu::Tlb::flush_all(&self.vm.tlb());

        // Harvest with and without its flush.
        let id = SLOT_4K.0;
        let _ = mmu.set_dirty_logging(id, true);
        let h = 0x3_2000;
        let _ = self.op(&mmu, Op::Store { gpa: h, val: 1 });
        let _ = mmu.get_dirty_log(id);
        let _ = self.op(&mmu, Op::Store { gpa: h, val: 2 });
        let log = mmu.get_dirty_log(id).map(|l| pages_of(&l));
        check!(
            self.r,
            log == Ok(alloc::vec![0x32]),
            "write after a harvest (with its flush) is in the next log: {:x?}",
            log
        );
        let _ = self.op(&mmu, Op::Store { gpa: h, val: 3 });
        SKIP_FLUSH.store(true, core::sync::atomic::Ordering::SeqCst);
        let log1 = mmu.get_dirty_log(id).map(|l| pages_of(&l));
        SKIP_FLUSH.store(false, core::sync::atomic::Ordering::SeqCst);
        let _ = self.op(&mmu, Op::Store { gpa: h, val: 4 });
        let log2 = mmu.get_dirty_log(id).map(|l| pages_of(&l));
        if V::KEEPS_TLB_ACROSS_EXITS {
            check!(
                self.r,
                log1 == Ok(alloc::vec![0x32]) && log2 == Ok(alloc::vec![]),
                "harvest with its flush skipped: the next write is LOST from the log ({:x?} then {:x?}), so the flush check can fail",
                log1,
                log2
            );
        } else {
            self.r.note(format_args!(
                "harvest with its flush skipped: logs {:x?} then {:x?} (no stale TLB here)",
                log1, log2
            ));
        }
        slat_mmu::Tlb::flush_all(&self.vm.tlb());
        self.audit(&mmu, "the flush checks");
    }

    /// Migrate the host page behind `hva` the way a host kernel would (notifier start, move,
    /// notifier end) and write `val` into the new copy. Returns (old, new) host addresses.
    fn remap(&mut self, mmu: &M<'a, V>, hva: u64, val: u32) -> (u64, u64) {
        mmu.invalidate_range_start(Hva(hva), Hva(hva + PAGE_SIZE));
        let moved = self.host.migrate_4k(hva);
        mmu.invalidate_range_end(Hva(hva), Hva(hva + PAGE_SIZE));
        // The page is only there to move if the guest's earlier store faulted it in.
        let Some((old, new)) = moved else { return (0, 0) };
        // SAFETY: `new` is the identity-mapped pool page that now backs `hva`.
        unsafe { core::ptr::write_volatile((new + (hva & (PAGE_SIZE - 1))) as *mut u32, val) };
        (old, new)
    }
}
