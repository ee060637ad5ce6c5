//! Differential random tester: random sequences of memslot changes (including failing ones),
//! guest reads, writes and instruction fetches, host events through the notifier, dirty logging
//! in every mode, recovery (both policies), the NX workaround, write tracking and memory types,
//! checked after every step against a model the tester keeps itself (never slat's own rules):
//!
//! * `audit()` (slat's own recount, I1/I2/I6);
//! * I1: every leaf translates to the page the tester's host model maps at the slot's hva, with
//!   no permission the tester's slot and host model withhold; every slot the tester believes in
//!   is the one slat publishes, and a failing slot change changed nothing;
//! * I2: every huge leaf is size-aligned, inside one slot, inside one host leaf that is at least
//!   as large (hence congruent), not writable while logged, over no tracked gfn, over one memory
//!   type, not executable with NX on;
//! * I3/I4: every leaf an operation removed or narrowed (permissions, output, memory type, dirty
//!   state) is covered by a TLB flush recorded during that operation; and a TLB model per vCPU
//!   (entries filled by successful hardware walks, used by later accesses, removed only by the
//!   flushes slat issues through `Tlb`) never holds an entry the current tables do not allow
//!   (other output, more permissions, other memory type, dirty where the leaf is clean, or no
//!   leaf at all), and no range flush names a leaf size larger than a cached entry it covers;
//! * I5: a shadow of the pages the guest wrote since the last harvest: each must be reported,
//!   by the bitmap or (with per-vCPU dirty rings) by a ring harvest; each ring harvest returns
//!   exactly the records the model pushed for that vCPU (a write fault that made a page of a
//!   logged slot writable), re-protects them, and the soft-full state, the exits it forces and a
//!   full ring's refusal of writes are the model's;
//! * faults: the outcome the model predicts (mapped, read-only slot, host unmapped, read-only host
//!   memory, write-tracked), and after a mapped fault the hardware walk succeeds.
//!
//! Failing sequences shrink (proptest) to a minimal reproducer. `SLAT_DIFF_CASES` (default 40)
//! and `SLAT_DIFF_OPS` (default 64) set the length of the run; `SLAT_DIFF_SEED` the seed.

use slat_mmu::{
    DirtyLogMode, DirtyRingConfig, FaultError, FaultOutcome, Gfn, Gpa, HarvestMode, HostError, Hva, MemslotSpec, Mmu,
    MmuConfig, MmuError, MmuNotifier, NxPolicy, Parts, RecoveryPolicy,
};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use slat_mmu::testing::Flush;
use slat_mmu::testing::{FakeHost, RecordingTlb};
use slat_pt::format::Ept4;
use slat_pt::{Access, Leaf, MemType, PageSize, Perms, SimFrameAllocator, Translation, PAGE_SIZE};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
/// Region A: 32 MiB of host memory in 2 MiB chunks, each mapped 4K or 2M.
const HVA_A: u64 = 0x7f00_0000_0000;
const LEN_A: u64 = 32 * MIB;
/// Region B: one 1 GiB host leaf (hugetlbfs), never changed.
const HVA_B: u64 = 0x7f80_0000_0000;
const PA_B: u64 = 0x40_0000_0000;

type DMmu = Mmu<Ept4, Parts<SimFrameAllocator, FakeHost, RecordingTlb>>;

// ---- figures --------------------------------------------------------------------------------

static OPS: AtomicU64 = AtomicU64::new(0);
static CHECKS: AtomicU64 = AtomicU64::new(0);
static LEAVES_CHECKED: AtomicU64 = AtomicU64::new(0);
static FAULTS: AtomicU64 = AtomicU64::new(0);
static HARVESTS: AtomicU64 = AtomicU64::new(0);
static FAILED_SLOT_OPS: AtomicU64 = AtomicU64::new(0);
static RING_HARVESTS: AtomicU64 = AtomicU64::new(0);
static RING_RECORDS: AtomicU64 = AtomicU64::new(0);
static RING_EXITS: AtomicU64 = AtomicU64::new(0);
static RING_FULL_REFUSALS: AtomicU64 = AtomicU64::new(0);
static TLB_FILLS: AtomicU64 = AtomicU64::new(0);
static TLB_HITS: AtomicU64 = AtomicU64::new(0);
static TLB_ENTRY_CHECKS: AtomicU64 = AtomicU64::new(0);
/// vCPUs the tester runs (and the ring's `max_vcpus`).
const VCPUS: usize = 4;

type Check = Result<(), String>;

macro_rules! ensure {
    ($c:expr, $($fmt:tt)*) => {
        if !$c {
            return Err(format!($($fmt)*));
        }
    };
}

// ---- operations -----------------------------------------------------------------------------

/// One step. Numbers select among what exists at that moment (modulo), so every sequence runs.
#[derive(Debug, Clone)]
pub enum Op {
    AddSlot {
        id: u8,
        gfn: u32,
        pages: u32,
        hva: u32,
        readonly: bool,
        log: bool,
    },
    DeleteSlot {
        id: u8,
    },
    MoveSlot {
        id: u8,
        gfn: u32,
    },
    Access {
        vcpu: u8,
        at: u32,
        kind: u8,
    },
    HostUnmap {
        chunk: u8,
    },
    /// Migrate / collapse / mprotect: a 2 MiB chunk gets new pages of `size4k ? 4K : 2M`.
    HostRemap {
        chunk: u8,
        small: bool,
        writable: bool,
    },
    HostSplit {
        chunk: u8,
    },
    /// A host invalidation in flight while a slot is added or moved, with a fault inside it.
    RemapAroundSlotChange {
        chunk: u8,
        slot_op: Box<Op>,
        at: u32,
    },
    LogOn {
        id: u8,
    },
    LogOff {
        id: u8,
    },
    Harvest {
        id: u8,
        mask: u64,
    },
    Recover {
        id: u8,
    },
    RecoverNx,
    Track {
        at: u32,
    },
    Untrack {
        at: u32,
    },
    MemType {
        at: u32,
        pages: u16,
        ty: u8,
    },
    /// One vCPU writes `pages` consecutive pages from the one `at` selects, twice over (a
    /// memset: fills the dirty ring past its soft limit, and the second pass meets the TLB).
    WriteBurst {
        vcpu: u8,
        at: u32,
        pages: u8,
    },
    /// Collect and reset one vCPU's dirty ring (`KVM_RESET_DIRTY_RINGS`).
    RingHarvest {
        vcpu: u8,
    },
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let add = (0u8..5, any::<u32>(), any::<u32>(), any::<u32>(), any::<u8>(), any::<bool>()).prop_map(
        |(id, gfn, pages, hva, ro, log)| Op::AddSlot {
            id,
            gfn,
            pages,
            hva,
            readonly: ro % 4 == 0,
            log: log && gfn % 3 == 0,
        },
    );
    let mov = (0u8..5, any::<u32>()).prop_map(|(id, gfn)| Op::MoveSlot { id, gfn });
    let leaf = prop_oneof![
        4 => add.clone(),
        1 => (0u8..5).prop_map(|id| Op::DeleteSlot { id }),
        2 => mov.clone(),
        24 => (0u8..4, any::<u32>(), 0u8..3).prop_map(|(vcpu, at, kind)| Op::Access { vcpu, at, kind }),
        1 => (0u8..16).prop_map(|chunk| Op::HostUnmap { chunk }),
        3 => (0u8..16, any::<bool>(), any::<u8>()).prop_map(|(chunk, small, w)| Op::HostRemap { chunk, small, writable: w % 4 != 0 }),
        2 => (0u8..16).prop_map(|chunk| Op::HostSplit { chunk }),
        6 => (0u8..5).prop_map(|id| Op::LogOn { id }),
        2 => (0u8..5).prop_map(|id| Op::LogOff { id }),
        8 => (0u8..5, any::<u64>()).prop_map(|(id, mask)| Op::Harvest { id, mask }),
        1 => (0u8..5).prop_map(|id| Op::Recover { id }),
        1 => Just(Op::RecoverNx),
        1 => any::<u32>().prop_map(|at| Op::Track { at }),
        1 => any::<u32>().prop_map(|at| Op::Untrack { at }),
        1 => (any::<u32>(), any::<u16>(), 0u8..4).prop_map(|(at, pages, ty)| Op::MemType { at, pages, ty }),
        4 => (0u8..4).prop_map(|vcpu| Op::RingHarvest { vcpu }),
        3 => (0u8..4, any::<u32>(), 1u8..24).prop_map(|(vcpu, at, pages)| Op::WriteBurst { vcpu, at, pages }),
    ];
    prop_oneof![
        20 => leaf,
        1 => (0u8..16, prop_oneof![add, mov], any::<u32>())
            .prop_map(|(chunk, op, at)| Op::RemapAroundSlotChange { chunk, slot_op: Box::new(op), at }),
    ]
}

/// Small rings (8 or 16 records, soft limit 2 or 4 below) so the soft limit and a full ring
/// are reached within a sequence.
fn ring_config(sel: u8) -> DirtyRingConfig {
    let entries = if sel % 2 == 0 { 8 } else { 16 };
    DirtyRingConfig::new(entries, entries - 2 * (1 + (sel as u32 / 2) % 2), VCPUS as u32)
}

/// Rings need write faults: not with hardware dirty bits, not with an initially-set log.
fn ring_allowed(dirty_log: DirtyLogMode, harvest: HarvestMode) -> bool {
    dirty_log != DirtyLogMode::HardwareDirty && harvest != HarvestMode::ManualClear { initially_set: true }
}

fn config_strategy() -> impl Strategy<Value = MmuConfig> {
    (0u8..5, 0u8..3, any::<bool>(), any::<bool>(), 1u64..4, 0u8..8).prop_map(|(d, h, rec, nx, chunk, ring)| {
        let dirty_log = match d {
            0 => DirtyLogMode::WriteProtect,
            1 => DirtyLogMode::SplitOnFault,
            2 | 3 => DirtyLogMode::EagerSplit { chunk_tables: chunk },
            _ => DirtyLogMode::HardwareDirty,
        };
        let harvest = match h {
            0 => HarvestMode::GetAndClear,
            1 => HarvestMode::ManualClear { initially_set: false },
            _ => HarvestMode::ManualClear { initially_set: true },
        };
        MmuConfig::default()
            .with_dirty_log(dirty_log)
            .with_harvest(harvest)
            .with_recovery(if rec { RecoveryPolicy::InPlace } else { RecoveryPolicy::Zap })
            .with_nx(nx.then_some(NxPolicy::new(2)))
            .with_recovery_batch(3)
            .with_dirty_ring((ring >= 3 && ring_allowed(dirty_log, harvest)).then(|| ring_config(ring)))
    })
}

// ---- the tester's own model -----------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
struct HLeaf {
    pa: u64,
    size: PageSize,
    writable: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct MSlot {
    base_gfn: u64,
    npages: u64,
    hva: u64,
    readonly: bool,
    logging: bool,
}

impl MSlot {
    fn end(&self) -> u64 {
        self.base_gfn + self.npages
    }
    fn hva_of(&self, gfn: u64) -> u64 {
        self.hva + (gfn - self.base_gfn) * PAGE_SIZE
    }
}

struct Model {
    cfg: MmuConfig,
    host: BTreeMap<u64, HLeaf>,
    next_pa: u64,
    slots: BTreeMap<u32, MSlot>,
    tracked: BTreeMap<u64, u32>,
    mem_types: BTreeMap<u64, MemType>,
    /// Pages (slot id, offset) written while logged and not yet harvested.
    shadow: BTreeMap<u32, BTreeSet<u64>>,
    /// Each vCPU's dirty ring as the model expects it: every record pushed since its last
    /// harvest, in order (duplicates included: a page can fault for write twice between them).
    rings: [Vec<(u32, u64)>; VCPUS],
    /// Times a push brought a ring to its soft limit (slat's `dirty_ring_full` counter).
    ring_crossings: u64,
}

/// A translation a vCPU's TLB caches: the whole leaf the hardware walk found, with the
/// permissions, memory type and dirty state it had then (a write walk sets the dirty state).
#[derive(Debug, Clone, Copy)]
struct TlbEntry {
    gpa: u64,
    size: PageSize,
    pa: u64,
    perms: Perms,
    mem_type: MemType,
    dirty: bool,
    /// The step that filled it.
    step: usize,
}

impl TlbEntry {
    fn end(&self) -> u64 {
        self.gpa + self.size.bytes()
    }
    fn allows(&self, access: Access) -> bool {
        match access {
            Access::Read => self.perms.contains(Perms::READ),
            // A write through a clean entry walks again to set the dirty state.
            Access::Write => self.perms.contains(Perms::WRITE) && self.dirty,
            Access::Exec => self.perms.contains(Perms::EXEC),
        }
    }
}

/// Per-vCPU TLBs: filled by successful hardware walks, emptied only by the flushes slat issues.
/// An entry per (leaf gpa, leaf size): a CPU may hold a 2M and a 4K entry for one address, and
/// use either.
#[derive(Default)]
struct TlbModel {
    vcpus: [BTreeMap<(u64, u64), TlbEntry>; VCPUS],
    /// Flushes of the current step already applied (the recording TLB is cleared per step).
    applied: usize,
}

impl TlbModel {
    fn fill(&mut self, vcpu: usize, gpa: u64, t: &Translation, step: usize) {
        let size = t.size;
        let off = gpa & (size.bytes() - 1);
        let e = TlbEntry {
            gpa: gpa - off,
            size,
            pa: t.pa - off,
            perms: t.attrs.perms,
            mem_type: t.attrs.mem_type,
            dirty: t.attrs.dirty,
            step,
        };
        TLB_FILLS.fetch_add(1, Relaxed);
        self.vcpus[vcpu].insert((e.gpa, size.bytes()), e);
    }

    fn hit(&self, vcpu: usize, gpa: u64, access: Access) -> bool {
        self.vcpus[vcpu]
            .range((gpa.saturating_sub(GIB - 1), 0)..(gpa + 1, 0))
            .any(|(_, e)| gpa >= e.gpa && gpa < e.end() && e.allows(access))
    }

    /// Apply the flushes recorded since the last call: a range flush removes every entry it
    /// overlaps on every vCPU (the flush is broadcast), a full flush empties every TLB. A range
    /// flush promises its range held no leaf smaller than `size` (arm64's TTL hint): an entry
    /// it covers that is smaller may survive on such a CPU, which is an error.
    fn apply(&mut self, flushes: &[Flush]) -> Check {
        for f in &flushes[self.applied.min(flushes.len())..] {
            match f {
                Flush::All => self.vcpus.iter_mut().for_each(BTreeMap::clear),
                Flush::Range(r) => {
                    let end = r.gpa + r.len;
                    for (v, tlb) in self.vcpus.iter_mut().enumerate() {
                        let hit: Vec<(u64, u64)> = tlb
                            .range((r.gpa.0.saturating_sub(GIB - 1), 0)..(end.0, 0))
                            .filter(|(_, e)| e.end() > r.gpa.0 && e.gpa < end.0)
                            .map(|(k, _)| *k)
                            .collect();
                        for k in hit {
                            let e = tlb.remove(&k).unwrap();
                            ensure!(
                                e.size.bytes() >= r.size.bytes(),
                                "I3: flush {:#x}+{:#x} names leaves of at least {:?}, but vCPU {v} caches a {:?} \
                                 entry at {:#x} (filled at step {}) that a CPU using the hint would keep",
                                r.gpa,
                                r.len,
                                r.size,
                                e.size,
                                e.gpa,
                                e.step
                            );
                        }
                    }
                }
            }
        }
        self.applied = flushes.len();
        Ok(())
    }
}

impl Model {
    fn host_leaf(&self, hva: u64) -> Option<(u64, HLeaf)> {
        let (&k, l) = self.host.range(..=hva).next_back()?;
        (hva < k + l.size.bytes()).then_some((k, *l))
    }
    fn slot_of(&self, gfn: u64) -> Option<(u32, MSlot)> {
        self.slots.iter().find(|(_, s)| gfn >= s.base_gfn && gfn < s.end()).map(|(i, s)| (*i, *s))
    }
    fn overlaps(&self, id: u32, base: u64, npages: u64) -> bool {
        self.slots.iter().any(|(i, s)| *i != id && s.base_gfn < base + npages && base < s.end())
    }
    fn mem_type(&self, gfn: u64) -> MemType {
        self.mem_types.get(&gfn).copied().unwrap_or(MemType::WriteBack)
    }
    fn forget_gfns(&mut self, s: MSlot) {
        let keys: Vec<u64> = self.tracked.range(s.base_gfn..s.end()).map(|(k, _)| *k).collect();
        for k in keys {
            self.tracked.remove(&k);
        }
        let keys: Vec<u64> = self.mem_types.range(s.base_gfn..s.end()).map(|(k, _)| *k).collect();
        for k in keys {
            self.mem_types.remove(&k);
        }
    }
    /// A gfn selected by `at` inside some slot.
    fn pick_gfn(&self, at: u32) -> Option<(u32, MSlot, u64)> {
        if self.slots.is_empty() {
            return None;
        }
        let (id, s) = self.slots.iter().nth(at as usize % self.slots.len()).map(|(i, s)| (*i, *s))?;
        // Favour the first pages of the slot so repeated accesses meet each other.
        let span = s.npages.min(if at % 4 == 0 { u64::MAX } else { 2048 });
        Some((id, s, s.base_gfn + (at as u64 / 7) % span))
    }
    fn initially_set(&self) -> bool {
        self.cfg.harvest == HarvestMode::ManualClear { initially_set: true }
    }
}

struct Tester {
    m: DMmu,
    model: Model,
    tlb: TlbModel,
    step: usize,
    /// The VMM ignores soft-full rings during this step (the vCPU runs into the reserve, then
    /// has its writes refused).
    slow_vmm: bool,
}

fn all_leaves(m: &DMmu) -> Vec<Leaf> {
    m.with_tables(|pt| pt.leaves(Gpa(0), pt.input_limit()))
}

impl Tester {
    fn new(cfg: MmuConfig) -> Self {
        let m =
            Mmu::new(cfg, SimFrameAllocator::new(0x100_0000_0000, 16 * GIB), FakeHost::new(), RecordingTlb::default())
                .expect("config");
        let mut model = Model {
            cfg,
            host: BTreeMap::new(),
            next_pa: 0x20_0000_0000,
            slots: BTreeMap::new(),
            tracked: BTreeMap::new(),
            mem_types: BTreeMap::new(),
            shadow: BTreeMap::new(),
            rings: Default::default(),
            ring_crossings: 0,
        };
        for c in 0..LEN_A / (2 * MIB) {
            let size = if c % 3 == 1 { PageSize::Size4K } else { PageSize::Size2M };
            let pa = model.next_pa;
            model.next_pa += 2 * MIB;
            Self::map(&m, &mut model, HVA_A + c * 2 * MIB, 2 * MIB, pa, size, true);
        }
        Self::map(&m, &mut model, HVA_B, GIB, PA_B, PageSize::Size1G, true);
        Tester { m, model, tlb: TlbModel::default(), step: 0, slow_vmm: false }
    }

    fn map(m: &DMmu, model: &mut Model, hva: u64, len: u64, pa: u64, size: PageSize, writable: bool) {
        m.host().map_range(hva, len, pa, size, writable);
        let mut off = 0;
        while off < len {
            model.host.insert(hva + off, HLeaf { pa: pa + off, size, writable });
            off += size.bytes();
        }
    }

    fn unmap(&mut self, hva: u64, len: u64) {
        self.m.host().unmap_range(hva, len);
        let keys: Vec<u64> = self.model.host.range(hva..hva + len).map(|(k, _)| *k).collect();
        for k in keys {
            self.model.host.remove(&k);
        }
    }

    fn run(&mut self, op: &Op) -> Check {
        let before = all_leaves(&self.m);
        self.m.tlb().clear();
        self.tlb.applied = 0;
        self.slow_vmm = false;
        self.apply(op)?;
        OPS.fetch_add(1, Relaxed);
        self.check(&before)
    }

    fn apply(&mut self, op: &Op) -> Check {
        match op {
            Op::AddSlot { id, gfn, pages, hva, readonly, log } => {
                let id = *id as u32;
                let spec = if hva % 8 == 0 {
                    // A 1 GiB slot over region B, at a 1 GiB aligned gfn, or 2 MiB off it.
                    let base = (4 + (*gfn as u64 % 4)) * (GIB >> 12) + if gfn % 5 == 0 { 512 } else { 0 };
                    MemslotSpec {
                        id,
                        base_gfn: Gfn(base),
                        npages: GIB >> 12,
                        hva: Hva(HVA_B),
                        readonly: *readonly,
                        log_dirty: *log,
                    }
                } else {
                    let hva_page = *hva as u64 % (LEN_A >> 12);
                    let hva_page = if hva % 3 == 0 { hva_page & !511 } else { hva_page };
                    let max = (LEN_A >> 12) - hva_page;
                    let npages = 1 + *pages as u64 % max.min(3000);
                    let base = if gfn % 2 == 0 { (*gfn as u64 % 32) * 512 } else { *gfn as u64 % 16384 };
                    MemslotSpec {
                        id,
                        base_gfn: Gfn(base),
                        npages,
                        hva: Hva(HVA_A + hva_page * PAGE_SIZE),
                        readonly: *readonly,
                        log_dirty: *log,
                    }
                };
                self.add_slot(spec)
            }
            Op::DeleteSlot { id } => {
                let id = self.pick_id(*id);
                let r = self.m.delete_memslot(id);
                match self.model.slots.remove(&id) {
                    Some(s) => {
                        ensure!(r.is_ok(), "delete of slot {id}: {r:?}");
                        self.model.forget_gfns(s);
                        self.model.shadow.remove(&id);
                    }
                    None => {
                        FAILED_SLOT_OPS.fetch_add(1, Relaxed);
                        ensure!(r.is_err(), "delete of a missing slot {id} succeeded")
                    }
                }
                Ok(())
            }
            Op::MoveSlot { id, gfn } => {
                let id = self.pick_id(*id);
                let base = match self.model.slots.get(&id) {
                    Some(s) if s.npages == GIB >> 12 && s.hva == HVA_B => (4 + (*gfn as u64 % 4)) * (GIB >> 12),
                    _ => {
                        if gfn % 2 == 0 {
                            (*gfn as u64 % 32) * 512
                        } else {
                            *gfn as u64 % 16384
                        }
                    }
                };
                self.move_slot(id, base)
            }
            Op::Access { vcpu, at, kind } => {
                let access = [Access::Read, Access::Write, Access::Exec][*kind as usize];
                match self.model.pick_gfn(*at) {
                    Some((id, s, gfn)) => self.access(*vcpu as u32, id, s, gfn, access),
                    // No slot: an MMIO exit.
                    None => {
                        let r = self.m.handle_fault(Gpa(0x1234_5000), access);
                        ensure!(
                            r == Err(FaultError::NoMemslot { gpa: Gpa(0x1234_5000) }),
                            "fault outside slots: {r:?}"
                        );
                        Ok(())
                    }
                }
            }
            Op::HostUnmap { chunk } => {
                let hva = HVA_A + *chunk as u64 * 2 * MIB;
                self.m.invalidate_range_start(Hva(hva), Hva(hva + 2 * MIB));
                self.unmap(hva, 2 * MIB);
                self.m.invalidate_range_end(Hva(hva), Hva(hva + 2 * MIB));
                Ok(())
            }
            Op::HostRemap { chunk, small, writable } => {
                self.remap(*chunk, *small, *writable);
                Ok(())
            }
            Op::HostSplit { chunk } => {
                let hva = HVA_A + *chunk as u64 * 2 * MIB;
                if let Some((k, l)) = self.model.host_leaf(hva) {
                    if l.size == PageSize::Size2M {
                        self.m.invalidate_range_start(Hva(k), Hva(k + 2 * MIB));
                        self.m.host().split(k);
                        self.model.host.remove(&k);
                        for i in 0..512 {
                            self.model.host.insert(
                                k + i * PAGE_SIZE,
                                HLeaf { pa: l.pa + i * PAGE_SIZE, size: PageSize::Size4K, ..l },
                            );
                        }
                        self.m.invalidate_range_end(Hva(k), Hva(k + 2 * MIB));
                    }
                }
                Ok(())
            }
            Op::RemapAroundSlotChange { chunk, slot_op, at } => {
                let hva = HVA_A + *chunk as u64 * 2 * MIB;
                self.m.invalidate_range_start(Hva(hva), Hva(hva + 2 * MIB));
                // The host is changing the chunk; the VMM changes a slot meanwhile.
                self.apply(slot_op)?;
                // A fault on a slot over the chunk must not install the old page: it retries.
                if let Some((_, s, gfn)) = self.model.pick_gfn(*at) {
                    let h = s.hva_of(gfn);
                    if h >= hva && h < hva + 2 * MIB {
                        let r = self.m.handle_fault(Gpa(gfn * PAGE_SIZE), Access::Read);
                        // Retry; or, when the host maps nothing there, its error (nothing installed).
                        let unmapped = self.model.host_leaf(h).is_none()
                            && r == Err(FaultError::Host(HostError::NotMapped { hva: Hva(h) }));
                        ensure!(
                            r == Ok(FaultOutcome::Retry) || unmapped,
                            "fault inside an invalidation in flight: {r:?}"
                        );
                    }
                }
                self.unmap(hva, 2 * MIB);
                let pa = self.fresh_pa();
                Self::map(&self.m, &mut self.model, hva, 2 * MIB, pa, PageSize::Size2M, true);
                self.m.invalidate_range_end(Hva(hva), Hva(hva + 2 * MIB));
                Ok(())
            }
            Op::LogOn { id } => {
                let id = self.pick_id(*id);
                if self.eager() && self.model.slots.get(&id).is_some_and(|s| s.npages == GIB >> 12) {
                    return Ok(());
                }
                self.set_logging(id, true)
            }
            Op::LogOff { id } => self.set_logging(self.pick_id(*id), false),
            Op::Harvest { id, mask } => self.harvest(self.pick_id(*id), *mask),
            Op::Recover { id } => {
                let id = self.pick_id(*id);
                match self.model.slots.get(&id) {
                    Some(s) if !s.logging => {
                        let r = self.m.recover_huge_pages(id);
                        ensure!(r.is_ok(), "recover {id}: {r:?}");
                    }
                    Some(_) => {}
                    None => ensure!(self.m.recover_huge_pages(id).is_err(), "recover of a missing slot"),
                }
                Ok(())
            }
            Op::RecoverNx => {
                self.m.recover_nx_huge_pages();
                Ok(())
            }
            Op::Track { at } => {
                if let Some((_, _, gfn)) = self.model.pick_gfn(*at) {
                    let r = self.m.write_track(Gfn(gfn));
                    ensure!(r.is_ok(), "track {gfn:#x}: {r:?}");
                    *self.model.tracked.entry(gfn).or_default() += 1;
                }
                Ok(())
            }
            Op::Untrack { at } => {
                // Untrack a gfn the model has tracked (slat's counts nest).
                if !self.model.tracked.is_empty() {
                    let gfn = *self.model.tracked.keys().nth(*at as usize % self.model.tracked.len()).unwrap();
                    let r = self.m.write_untrack(Gfn(gfn));
                    ensure!(r.is_ok(), "untrack {gfn:#x}: {r:?}");
                    let c = self.model.tracked.get_mut(&gfn).unwrap();
                    *c -= 1;
                    if *c == 0 {
                        self.model.tracked.remove(&gfn);
                    }
                }
                Ok(())
            }
            Op::MemType { at, pages, ty } => {
                if let Some((_, s, gfn)) = self.model.pick_gfn(*at) {
                    let npages = *pages as u64 % 700;
                    let ty = [MemType::WriteBack, MemType::WriteThrough, MemType::WriteCombining, MemType::Uncached]
                        [*ty as usize];
                    let r = self.m.set_memory_type(Gfn(gfn), npages, ty);
                    let valid = npages > 0 && gfn + npages <= s.end();
                    ensure!(r.is_ok() == valid, "set_memory_type({gfn:#x}, {npages}): {r:?}, model valid={valid}");
                    if valid {
                        for g in gfn..gfn + npages {
                            if ty == MemType::WriteBack {
                                self.model.mem_types.remove(&g);
                            } else {
                                self.model.mem_types.insert(g, ty);
                            }
                        }
                    }
                }
                Ok(())
            }
            Op::RingHarvest { vcpu } => self.ring_harvest(*vcpu as usize % VCPUS),
            Op::WriteBurst { vcpu, at, pages } => {
                if let Some((id, s, gfn)) = self.model.pick_gfn(*at) {
                    self.slow_vmm = pages % 4 == 0;
                    for _ in 0..2 {
                        for g in gfn..(gfn + *pages as u64).min(s.end()) {
                            self.access(*vcpu as u32 % VCPUS as u32, id, s, g, Access::Write)?;
                        }
                    }
                }
                Ok(())
            }
        }
    }

    fn eager(&self) -> bool {
        matches!(self.model.cfg.dirty_log, DirtyLogMode::EagerSplit { .. })
    }

    /// An existing slot's id (selector 0..4), or an id that does not exist (4).
    fn pick_id(&self, sel: u8) -> u32 {
        if sel >= 4 || self.model.slots.is_empty() {
            return 9;
        }
        *self.model.slots.keys().nth(sel as usize % self.model.slots.len()).unwrap()
    }

    fn fresh_pa(&mut self) -> u64 {
        let pa = self.model.next_pa;
        self.model.next_pa += 2 * MIB;
        pa
    }

    fn remap(&mut self, chunk: u8, small: bool, writable: bool) {
        let hva = HVA_A + chunk as u64 * 2 * MIB;
        self.m.invalidate_range_start(Hva(hva), Hva(hva + 2 * MIB));
        self.unmap(hva, 2 * MIB);
        let pa = self.fresh_pa();
        let size = if small { PageSize::Size4K } else { PageSize::Size2M };
        Self::map(&self.m, &mut self.model, hva, 2 * MIB, pa, size, writable);
        self.m.invalidate_range_end(Hva(hva), Hva(hva + 2 * MIB));
    }

    fn add_slot(&mut self, spec: MemslotSpec) -> Check {
        let r = self.m.add_memslot(spec);
        let valid =
            !self.model.slots.contains_key(&spec.id) && !self.model.overlaps(spec.id, spec.base_gfn.0, spec.npages);
        ensure!(r.is_ok() == valid, "add {spec:?}: {r:?}, model valid={valid}");
        if valid {
            let s = MSlot {
                base_gfn: spec.base_gfn.0,
                npages: spec.npages,
                hva: spec.hva.0,
                readonly: spec.readonly,
                logging: spec.log_dirty,
            };
            self.model.slots.insert(spec.id, s);
            if spec.log_dirty {
                self.model.shadow.insert(spec.id, BTreeSet::new());
            }
        } else {
            FAILED_SLOT_OPS.fetch_add(1, Relaxed);
        }
        Ok(())
    }

    fn move_slot(&mut self, id: u32, base: u64) -> Check {
        let r = self.m.move_memslot(id, Gfn(base));
        let Some(s) = self.model.slots.get(&id).copied() else {
            FAILED_SLOT_OPS.fetch_add(1, Relaxed);
            ensure!(r.is_err(), "move of missing slot {id} succeeded");
            return Ok(());
        };
        let valid = !self.model.overlaps(id, base, s.npages);
        ensure!(r.is_ok() == valid, "move {id} to {base:#x}: {r:?}, model valid={valid}");
        if valid {
            self.model.forget_gfns(s);
            self.model.slots.insert(id, MSlot { base_gfn: base, ..s });
        } else {
            FAILED_SLOT_OPS.fetch_add(1, Relaxed);
        }
        Ok(())
    }

    fn set_logging(&mut self, id: u32, on: bool) -> Check {
        let r = self.m.set_dirty_logging(id, on);
        let Some(s) = self.model.slots.get_mut(&id) else {
            ensure!(r.is_err(), "logging on a missing slot {id}");
            return Ok(());
        };
        ensure!(r.is_ok(), "set_dirty_logging({id}, {on}): {r:?}");
        if s.logging != on {
            s.logging = on;
            if on {
                self.model.shadow.insert(id, BTreeSet::new());
            } else {
                self.model.shadow.remove(&id);
            }
        }
        Ok(())
    }

    fn harvest(&mut self, id: u32, mask: u64) -> Check {
        let r = self.m.get_dirty_log(id);
        let Some(s) = self.model.slots.get(&id).copied() else {
            ensure!(r.is_err(), "harvest of a missing slot {id}");
            return Ok(());
        };
        if !s.logging {
            ensure!(r == Err(MmuError::NotLogging { id }), "harvest of an unlogged slot: {r:?}");
            return Ok(());
        }
        let log = r.map_err(|e| format!("get_dirty_log({id}): {e}"))?;
        HARVESTS.fetch_add(1, Relaxed);
        ensure!(log.len() as u64 == s.npages.div_ceil(64), "log of {} words for {} pages", log.len(), s.npages);
        let set = |p: u64| log[(p / 64) as usize] & (1 << (p % 64)) != 0;
        for p in s.npages..log.len() as u64 * 64 {
            ensure!(!set(p), "log reports page {p} past the end of slot {id} ({} pages)", s.npages);
        }
        let shadow = self.model.shadow.entry(id).or_default();
        for &p in shadow.iter() {
            ensure!(
                set(p),
                "I5: page {p} of slot {id} (gfn {:#x}) was written since the last harvest but is not reported",
                s.base_gfn + p
            );
        }
        match self.model.cfg.harvest {
            HarvestMode::GetAndClear => shadow.clear(),
            HarvestMode::ManualClear { .. } => {
                // Clear a subset of what was reported (all of it when `mask` is odd).
                let m: Vec<u64> = log
                    .iter()
                    .enumerate()
                    .map(|(i, &w)| if mask & 1 == 1 { w } else { w & mask.rotate_left(i as u32) })
                    .collect();
                let n = self.m.clear_dirty_log(id, 0, &m).map_err(|e| format!("clear_dirty_log({id}): {e}"))?;
                let expect: u64 = m.iter().map(|w| w.count_ones() as u64).sum();
                ensure!(n == expect, "clear_dirty_log cleared {n}, mask had {expect} reported bits");
                shadow.retain(|&p| m[(p / 64) as usize] & (1 << (p % 64)) == 0);
            }
        }
        Ok(())
    }

    /// Collect one vCPU's ring: exactly the records the model pushed, sorted and without
    /// duplicates; the pages of logged slots among them are reported (they leave the shadow) and
    /// are write-protected again.
    fn ring_harvest(&mut self, vcpu: usize) -> Check {
        let got = self.m.harvest_dirty_ring(vcpu as u32);
        let mut expect = std::mem::take(&mut self.model.rings[vcpu]);
        expect.sort_unstable();
        expect.dedup();
        ensure!(got == expect, "I5: ring harvest of vCPU {vcpu} returned {got:?}, the model pushed {expect:?}");
        if self.model.cfg.dirty_ring.is_none() {
            return Ok(());
        }
        RING_HARVESTS.fetch_add(1, Relaxed);
        RING_RECORDS.fetch_add(got.len() as u64, Relaxed);
        for (id, p) in got {
            let Some(s) = self.model.slots.get(&id).copied().filter(|s| s.logging && p < s.npages) else { continue };
            if let Some(shadow) = self.model.shadow.get_mut(&id) {
                shadow.remove(&p);
            }
            let gfn = s.base_gfn + p;
            let t = self.m.with_tables(|pt| pt.translate(Gpa(gfn * PAGE_SIZE)));
            ensure!(
                !t.is_some_and(|t| t.attrs.perms.contains(Perms::WRITE)),
                "I5: page {p} of slot {id} (gfn {gfn:#x}) harvested from vCPU {vcpu}'s ring is still writable: {t:?}"
            );
        }
        Ok(())
    }

    fn access(&mut self, vcpu: u32, id: u32, s: MSlot, gfn: u64, access: Access) -> Check {
        let gpa = gfn * PAGE_SIZE + 0x18;
        let write = access == Access::Write;
        let v = vcpu as usize;
        if self.model.cfg.dirty_ring.is_some() {
            // Before entering the guest: a vCPU at its soft limit exits (KVM_EXIT_DIRTY_RING_FULL)
            // and the VMM harvests its ring. One time in eight the VMM is slow and the vCPU runs
            // on into the reserve (and, once full, has its writes refused); so does a whole
            // burst now and then.
            if self.m.dirty_ring_soft_full(vcpu) && gfn % 8 != 0 && !self.slow_vmm {
                RING_EXITS.fetch_add(1, Relaxed);
                self.ring_harvest(v)?;
            }
        }
        // The guest's access: the vCPU's TLB first, then the hardware walk, a fault only if
        // both fail, as a CPU would. Flushes issued earlier in this step (a ring harvest at a
        // soft-full exit, an earlier fault) reach the TLBs first.
        self.tlb.apply(&self.m.tlb().flushes())?;
        if self.tlb.hit(v, gpa, access) {
            TLB_HITS.fetch_add(1, Relaxed);
            if write && s.logging {
                self.model.shadow.entry(id).or_default().insert(gfn - s.base_gfn);
            }
            return Ok(());
        }
        let hw = self.m.with_tables(|pt| pt.hw_walk(Gpa(gpa), access).result);
        if let Ok(t) = hw {
            self.tlb.fill(v, gpa, &t, self.step);
        } else {
            FAULTS.fetch_add(1, Relaxed);
            let host = self.model.host_leaf(s.hva_of(gfn));
            let tracked = self.model.tracked.contains_key(&gfn);
            let mut r = self.m.handle_fault_on(vcpu, Gpa(gpa), access);
            for _ in 0..3 {
                if r != Ok(FaultOutcome::Retry) {
                    break;
                }
                r = self.m.handle_fault_on(vcpu, Gpa(gpa), access);
            }
            // A write fault that makes a page of a logged slot writable pushes a record to the
            // vCPU's ring; a full ring refuses it (the fault retries and nothing is installed).
            let ring = self.model.cfg.dirty_ring.filter(|_| s.logging && write);
            let ring_full = ring.is_some_and(|r| self.model.rings[v].len() >= r.entries as usize);
            let expect: Result<&str, FaultError> = if write && s.readonly {
                Err(FaultError::ReadOnly { gpa: Gpa(gpa), slot: id })
            } else if host.is_none() {
                Err(FaultError::Host(HostError::NotMapped { hva: Hva(s.hva_of(gfn)) }))
            } else if write && !host.unwrap().1.writable {
                Err(FaultError::Host(HostError::ReadOnly { hva: Hva(s.hva_of(gfn)) }))
            } else if write && tracked {
                Ok("tracked")
            } else if ring_full {
                Ok("ring full")
            } else {
                Ok("mapped")
            };
            match (expect, r) {
                (Err(e), Err(got)) if e == got => {
                    let t = self.m.with_tables(|pt| pt.translate(Gpa(gpa)));
                    if matches!(e, FaultError::Host(HostError::NotMapped { .. })) {
                        ensure!(t.is_none(), "a fault on an unmapped host page left {t:?}");
                    }
                    return Ok(());
                }
                (Ok("tracked"), Ok(FaultOutcome::WriteTracked)) => return Ok(()),
                (Ok("ring full"), Ok(FaultOutcome::Retry)) => {
                    RING_FULL_REFUSALS.fetch_add(1, Relaxed);
                    let t = self.m.with_tables(|pt| pt.translate(Gpa(gpa)));
                    ensure!(
                        !t.is_some_and(|t| t.attrs.perms.contains(Perms::WRITE)),
                        "a write refused by vCPU {vcpu}'s full ring made gfn {gfn:#x} writable: {t:?}"
                    );
                    // The write did not happen: the vCPU must exit and have its ring harvested.
                    return Ok(());
                }
                (Ok("mapped"), Ok(FaultOutcome::Mapped { .. })) => {}
                (e, got) => {
                    return Err(format!(
                        "fault {access:?} at gfn {gfn:#x} (slot {id}, vCPU {vcpu}): expected {e:?}, got {got:?}"
                    ))
                }
            }
            if let Some(rc) = ring {
                let r = &mut self.model.rings[v];
                r.push((id, gfn - s.base_gfn));
                if r.len() == rc.soft_limit as usize {
                    self.model.ring_crossings += 1;
                }
            }
            // Flushes the fault issued reach the TLBs before the walk that refills them.
            self.tlb.apply(&self.m.tlb().flushes())?;
            let again = self.m.with_tables(|pt| pt.hw_walk(Gpa(gpa), access).result);
            match again {
                Ok(t) => self.tlb.fill(v, gpa, &t, self.step),
                Err(e) => return Err(format!("after a mapped fault the hardware walk still fails: {e:?}")),
            }
        }
        if write && s.logging {
            self.model.shadow.entry(id).or_default().insert(gfn - s.base_gfn);
        }
        Ok(())
    }

    /// I3/I4 through the TLB model: every entry a vCPU still caches after the step's flushes
    /// must be allowed by the current tables over its whole span (same output, no permission
    /// the leaf lacks, same memory type, not dirty over a clean leaf, no hole).
    fn check_tlbs(&self, by_gpa: &BTreeMap<u64, &Leaf>) -> Check {
        for (v, tlb) in self.tlb.vcpus.iter().enumerate() {
            for e in tlb.values() {
                TLB_ENTRY_CHECKS.fetch_add(1, Relaxed);
                let mut at = e.gpa;
                let mut bad = None;
                for (_, n) in by_gpa.range(e.gpa.saturating_sub(GIB - 1)..e.end()) {
                    let (a, b) = (n.gpa.max(Gpa(e.gpa)), (n.gpa + n.size.bytes()).min(Gpa(e.end())));
                    if a >= b {
                        continue;
                    }
                    if a > Gpa(at) {
                        bad = Some(at);
                        break;
                    }
                    let same_output = n.pa.wrapping_sub(n.gpa.0) == e.pa.wrapping_sub(e.gpa);
                    if !same_output
                        || !n.attrs.perms.contains(e.perms)
                        || n.attrs.mem_type != e.mem_type
                        || (e.dirty && !n.attrs.dirty)
                    {
                        bad = Some(a.0);
                        break;
                    }
                    at = b.0;
                }
                if bad.is_none() && at < e.end() {
                    bad = Some(at);
                }
                if let Some(a) = bad {
                    let gfn = a / PAGE_SIZE;
                    let cached = e.pa + (a - e.gpa);
                    let now = self.m.with_tables(|pt| pt.translate(Gpa(a)));
                    let host = self.model.slot_of(gfn).and_then(|(_, s)| {
                        self.model.host_leaf(s.hva_of(gfn)).map(|(k, h)| h.pa + (s.hva_of(gfn) - k))
                    });
                    return Err(format!(
                        "I3/I4: stale TLB entry on vCPU {v} for gfn {gfn:#x}: cached {cached:#x} {:?} {:?} dirty={} \
                         ({:?} leaf at {:#x}, filled at step {}), tables now {}, host model {}",
                        e.perms,
                        e.mem_type,
                        e.dirty,
                        e.size,
                        e.gpa,
                        e.step,
                        match now {
                            Some(t) => format!(
                                "{:#x} {:?} {:?} dirty={} ({:?})",
                                t.pa, t.attrs.perms, t.attrs.mem_type, t.attrs.dirty, t.size
                            ),
                            None => "unmapped".into(),
                        },
                        match host {
                            Some(pa) => format!("{pa:#x}"),
                            None => "nothing".into(),
                        }
                    ));
                }
            }
        }
        Ok(())
    }

    /// Every check after a step.
    fn check(&mut self, before: &[Leaf]) -> Check {
        CHECKS.fetch_add(1, Relaxed);
        if let Err(e) = self.m.audit() {
            return Err(format!("audit: {:?}", e.violations));
        }
        // The slots slat publishes are the model's.
        let mut published: Vec<_> = self
            .m
            .memslots()
            .into_iter()
            .map(|i| (i.id, i.base_gfn.0, i.npages, i.hva.0, i.readonly, i.logging))
            .collect();
        published.sort();
        let model: Vec<_> =
            self.model.slots.iter().map(|(i, s)| (*i, s.base_gfn, s.npages, s.hva, s.readonly, s.logging)).collect();
        ensure!(published == model, "memslots {published:?} != model {model:?}");

        let after = all_leaves(&self.m);
        let eager = matches!(self.model.cfg.dirty_log, DirtyLogMode::EagerSplit { .. }) && !self.model.initially_set();
        for l in &after {
            LEAVES_CHECKED.fetch_add(1, Relaxed);
            self.check_leaf(l, eager).map_err(|e| format!("leaf {:#x} {:?}: {e}", l.gpa, l.size))?;
        }
        // I3/I4: no vCPU's TLB caches what the tables no longer allow, and whatever an
        // operation removed or narrowed was flushed during it.
        let by_gpa: BTreeMap<u64, &Leaf> = after.iter().map(|l| (l.gpa.0, l)).collect();
        self.tlb.apply(&self.m.tlb().flushes())?;
        self.check_tlbs(&by_gpa)?;
        for old in before {
            let end = old.gpa + old.size.bytes();
            let mut covered = 0;
            let mut kept = true;
            for (_, n) in by_gpa.range(old.gpa.0.saturating_sub(GIB - 1)..end.0) {
                let (a, b) = (n.gpa.max(old.gpa), (n.gpa + n.size.bytes()).min(end));
                if a >= b {
                    continue;
                }
                covered += b - a;
                let same_output = n.pa.wrapping_sub(n.gpa.0) == old.pa.wrapping_sub(old.gpa.0);
                let dirty_cleared = old.attrs.dirty && !n.attrs.dirty;
                if !same_output
                    || !n.attrs.perms.contains(old.attrs.perms)
                    || n.attrs.mem_type != old.attrs.mem_type
                    || dirty_cleared
                {
                    kept = false;
                }
            }
            if (!kept || covered != old.size.bytes()) && !self.m.tlb().covered(old.gpa.0, old.size.bytes()) {
                return Err(format!(
                    "I3/I4: leaf {:#x} {:?} was removed or narrowed without a flush",
                    old.gpa, old.size
                ));
            }
        }
        // The rings: lengths, soft-full state and soft-limit crossings are the model's.
        if let Some(rc) = self.model.cfg.dirty_ring {
            for v in 0..VCPUS {
                let len = self.model.rings[v].len();
                ensure!(
                    self.m.dirty_ring_len(v as u32) == len,
                    "vCPU {v}'s ring holds {} records, the model {len}",
                    self.m.dirty_ring_len(v as u32)
                );
                ensure!(
                    self.m.dirty_ring_soft_full(v as u32) == (len >= rc.soft_limit as usize),
                    "vCPU {v}: soft full = {} with {len} records, soft limit {}",
                    self.m.dirty_ring_soft_full(v as u32),
                    rc.soft_limit
                );
            }
            let n = self.m.stats().dirty_ring_full;
            ensure!(
                n == self.model.ring_crossings,
                "dirty_ring_full = {n}, the model counted {} crossings",
                self.model.ring_crossings
            );
        }
        Ok(())
    }

    fn check_leaf(&self, l: &Leaf, eager: bool) -> Check {
        let gfn = l.gpa.gfn().0;
        let pages = l.size.pages();
        ensure!(gfn % pages == 0, "I2: not size aligned");
        let Some((id, s)) = self.model.slot_of(gfn) else { return Err("I1: leaf outside every slot".into()) };
        ensure!(gfn + pages <= s.end(), "I2: leaf crosses the end of slot {id}");
        let hva = s.hva_of(gfn);
        let Some((hk, h)) = self.model.host_leaf(hva) else { return Err(format!("I1: host maps nothing at {hva:#x}")) };
        ensure!(
            l.pa == h.pa + (hva - hk),
            "I1: leaf maps {:#x}, host maps hva {hva:#x} to {:#x}",
            l.pa,
            h.pa + (hva - hk)
        );
        ensure!(
            hk <= hva && hva + l.size.bytes() <= hk + h.size.bytes(),
            "I2: leaf larger than the host leaf {:?} at {hk:#x}",
            h.size
        );
        let w = l.attrs.perms.contains(Perms::WRITE);
        ensure!(!(w && s.readonly), "I1: writable leaf in read-only slot {id}");
        ensure!(!w || h.writable, "I1: writable leaf over read-only host memory");
        ensure!(!(w && self.model.tracked.contains_key(&gfn)), "I1: writable leaf over a tracked gfn");
        let ty = self.model.mem_type(gfn);
        ensure!(l.attrs.mem_type == ty, "memory type {:?}, the model says {ty:?}", l.attrs.mem_type);
        if l.size == PageSize::Size4K {
            return Ok(());
        }
        ensure!(self.model.tracked.range(gfn..gfn + pages).next().is_none(), "I2: huge leaf over a tracked gfn");
        ensure!((gfn..gfn + pages).all(|g| self.model.mem_type(g) == ty), "I2: huge leaf over mixed memory types");
        ensure!(
            !(self.model.cfg.nx.is_some() && l.attrs.perms.contains(Perms::EXEC)),
            "I2: executable huge leaf with NX on"
        );
        if s.logging {
            ensure!(!w || self.model.initially_set(), "I2: writable huge leaf in logged slot {id}");
            ensure!(!eager, "I2: huge leaf left in logged slot {id} after eager split");
        }
        Ok(())
    }
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn run_sequence(cfg: MmuConfig, ops: &[Op]) -> Check {
    let mut t = Tester::new(cfg);
    for (i, op) in ops.iter().enumerate() {
        t.step = i;
        t.run(op).map_err(|e| format!("step {i} ({op:?}): {e}"))?;
    }
    // The migration's last pass: every ring and every logged slot's bitmap is harvested; every
    // page written while logged must be reported by one of them.
    t.step = ops.len();
    let before = all_leaves(&t.m);
    t.m.tlb().clear();
    t.tlb.applied = 0;
    for v in 0..VCPUS {
        t.ring_harvest(v).map_err(|e| format!("final ring harvest: {e}"))?;
    }
    let logged: Vec<u32> = t.model.slots.iter().filter(|(_, s)| s.logging).map(|(i, _)| *i).collect();
    for id in logged {
        t.harvest(id, u64::MAX).map_err(|e| format!("final harvest of slot {id}: {e}"))?;
    }
    t.check(&before).map_err(|e| format!("after the final harvests: {e}"))
}

#[test]
fn random_sequences_hold_the_invariants() {
    let cases = env("SLAT_DIFF_CASES", 40) as u32;
    let max_ops = env("SLAT_DIFF_OPS", 64) as usize;
    let seed = env("SLAT_DIFF_SEED", 0x51a7);
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let config = Config { cases, failure_persistence: None, max_shrink_iters: 4096, ..Config::default() };
    let mut runner = TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes));
    let start = std::time::Instant::now();
    let r = runner.run(&(config_strategy(), prop::collection::vec(op_strategy(), 1..max_ops)), |(cfg, ops)| {
        run_sequence(cfg, &ops).map_err(TestCaseError::fail)
    });
    eprintln!(
        "differential: {cases} sequences (+ shrinking), {} operations, {} faults, {} harvests, {} failing slot changes, \
         {} step checks, {} leaf checks, {:.1} s",
        OPS.load(Relaxed),
        FAULTS.load(Relaxed),
        HARVESTS.load(Relaxed),
        FAILED_SLOT_OPS.load(Relaxed),
        CHECKS.load(Relaxed),
        LEAVES_CHECKED.load(Relaxed),
        start.elapsed().as_secs_f64()
    );
    eprintln!(
        "differential: dirty rings: {} ring harvests returning {} records, {} soft-full exits, {} writes refused by a \
         full ring; TLB model: {} fills, {} hits, {} cached-entry checks",
        RING_HARVESTS.load(Relaxed),
        RING_RECORDS.load(Relaxed),
        RING_EXITS.load(Relaxed),
        RING_FULL_REFUSALS.load(Relaxed),
        TLB_FILLS.load(Relaxed),
        TLB_HITS.load(Relaxed),
        TLB_ENTRY_CHECKS.load(Relaxed)
    );
    if let Err(e) = r {
        panic!("{e}");
    }
}

/// Minimal reproducers the long runs shrank to, kept as regression tests.
#[test]
fn regression_flush_inside_a_step_reaches_the_tlb_model() {
    // A write burst on a logged slot with a ring of 8 (soft limit 4): the vCPU exits at the soft
    // limit and its ring is harvested inside the burst, which re-protects and flushes the pages;
    // the next write of one of them must fault and be recorded, not hit a TLB entry the flush
    // removed. (Found by `SLAT_DIFF_CASES=400 SLAT_DIFF_SEED=7`: the tester applied the flush
    // only at the end of the step and lost page 23 from its own shadow.)
    let cfg = MmuConfig::default()
        .with_dirty_log(DirtyLogMode::WriteProtect)
        .with_recovery(RecoveryPolicy::Zap)
        .with_recovery_batch(3)
        .with_dirty_ring(Some(DirtyRingConfig::new(8, 4, VCPUS as u32)));
    let add = |id, gfn, pages, hva, readonly| Op::AddSlot { id, gfn, pages, hva, readonly, log: false };
    let ops = [
        add(1, 304465323, 0, 0, true),
        Op::RemapAroundSlotChange { chunk: 0, slot_op: Box::new(add(0, 0, 0, 0, true)), at: 0 },
        add(2, 0, 2978078148, 3130957622, false),
        Op::LogOn { id: 2 },
        Op::WriteBurst { vcpu: 0, at: 1876761470, pages: 5 },
        add(0, 0, 0, 0, true),
    ];
    run_sequence(cfg, &ops).unwrap();
}

// ---- byte-driven sequences (the fuzz target `mmu_ops` and its seeded stable twin) ---------------

/// Reads numbers from fuzzer bytes; zeros once they run out.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        let (b, rest) = self.0.split_first().map_or((0, &[][..]), |(b, r)| (*b, r));
        self.0 = rest;
        b
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn u64(&mut self) -> u64 {
        self.u32() as u64 | (self.u32() as u64) << 32
    }
    fn op(&mut self, depth: u32) -> Op {
        match self.u8() % 20 {
            0 => Op::AddSlot {
                id: self.u8() % 5,
                gfn: self.u32(),
                pages: self.u32(),
                hva: self.u32(),
                readonly: self.u8() % 4 == 0,
                log: self.u8() % 3 == 0,
            },
            1 => Op::DeleteSlot { id: self.u8() % 5 },
            2 => Op::MoveSlot { id: self.u8() % 5, gfn: self.u32() },
            3..=6 => Op::Access { vcpu: self.u8() % 4, at: self.u32(), kind: self.u8() % 3 },
            7 => Op::HostUnmap { chunk: self.u8() % 16 },
            8 => Op::HostRemap { chunk: self.u8() % 16, small: self.u8() % 2 == 0, writable: self.u8() % 4 != 0 },
            9 => Op::HostSplit { chunk: self.u8() % 16 },
            10 if depth == 0 => {
                let chunk = self.u8() % 16;
                let inner = self.op(1);
                let slot_op = match inner {
                    Op::AddSlot { .. } | Op::MoveSlot { .. } => inner,
                    _ => Op::MoveSlot { id: 0, gfn: self.u32() },
                };
                Op::RemapAroundSlotChange { chunk, slot_op: Box::new(slot_op), at: self.u32() }
            }
            10 | 11 => Op::LogOn { id: self.u8() % 5 },
            12 => Op::LogOff { id: self.u8() % 5 },
            13 => Op::Harvest { id: self.u8() % 5, mask: self.u64() },
            14 => match self.u8() % 2 {
                0 => Op::Recover { id: self.u8() % 5 },
                _ => Op::RecoverNx,
            },
            15 => match self.u8() % 2 {
                0 => Op::Track { at: self.u32() },
                _ => Op::Untrack { at: self.u32() },
            },
            16 => Op::MemType { at: self.u32(), pages: self.u32() as u16, ty: self.u8() % 4 },
            17 => Op::RingHarvest { vcpu: self.u8() % 4 },
            _ => Op::WriteBurst { vcpu: self.u8() % 4, at: self.u32(), pages: 1 + self.u8() % 24 },
        }
    }
}

/// A configuration and an operation sequence decoded from arbitrary bytes (at most 256 steps).
pub fn sequence_from_bytes(data: &[u8]) -> (MmuConfig, Vec<Op>) {
    let mut b = Bytes(data);
    let c = b.u8();
    let dirty_log = match c % 5 {
        0 => DirtyLogMode::WriteProtect,
        1 => DirtyLogMode::SplitOnFault,
        2 | 3 => DirtyLogMode::EagerSplit { chunk_tables: 1 + (c / 5) as u64 % 3 },
        _ => DirtyLogMode::HardwareDirty,
    };
    let h = b.u8();
    let harvest = match h % 3 {
        0 => HarvestMode::GetAndClear,
        1 => HarvestMode::ManualClear { initially_set: false },
        _ => HarvestMode::ManualClear { initially_set: true },
    };
    let cfg = MmuConfig::default()
        .with_dirty_log(dirty_log)
        .with_harvest(harvest)
        .with_recovery(if h & 8 == 0 { RecoveryPolicy::InPlace } else { RecoveryPolicy::Zap })
        .with_nx((h & 16 != 0).then_some(NxPolicy::new(2)))
        .with_recovery_batch(3)
        .with_dirty_ring((h & 32 != 0 && ring_allowed(dirty_log, harvest)).then(|| ring_config(h >> 6)));
    let mut ops = Vec::new();
    while !b.0.is_empty() && ops.len() < 256 {
        ops.push(b.op(0));
    }
    (cfg, ops)
}

/// Run the sequence the bytes decode to; panics with the failing step on a broken invariant.
pub fn run_bytes(data: &[u8]) {
    let (cfg, ops) = sequence_from_bytes(data);
    if let Err(e) = run_sequence(cfg, &ops) {
        panic!("{cfg:?}: {e}");
    }
}

/// The fuzz target's stable twin: seeded random byte strings and the checked-in corpus through
/// the same decoder, bounded by `SLAT_FUZZ_ITERS` (default 60) random inputs and
/// `SLAT_FUZZ_CORPUS` (default 100) corpus files, spread evenly over the corpus sorted by name
/// (the libFuzzer corpus holds a few hundred; `SLAT_FUZZ_CORPUS=100000` runs them all).
///
/// `SLAT_FUZZ_INPUT=<file>` replays one input instead (a libFuzzer artifact, say), printing the
/// sequence it decodes to and how long it ran.
#[test]
fn byte_sequences_seeded() {
    if let Ok(path) = std::env::var("SLAT_FUZZ_INPUT") {
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let (cfg, ops) = sequence_from_bytes(&data);
        eprintln!("{path}: {cfg:?}\n{ops:#?}");
        let start = std::time::Instant::now();
        run_bytes(&data);
        eprintln!("{path}: {} steps, {:.2} s", ops.len(), start.elapsed().as_secs_f64());
        return;
    }
    let iters = env("SLAT_FUZZ_ITERS", 60);
    let max_corpus = env("SLAT_FUZZ_CORPUS", 100).max(1) as usize;
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/corpus/mmu_ops");
    let mut files: Vec<_> =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("corpus {dir}: {e}")).flatten().map(|e| e.path()).collect();
    files.sort();
    let stride = files.len().div_ceil(max_corpus).max(1);
    let mut corpus = 0;
    for f in files.iter().step_by(stride) {
        run_bytes(&std::fs::read(f).unwrap());
        corpus += 1;
    }
    let mut x = env("SLAT_FUZZ_SEED", 0xf022) | 1;
    for _ in 0..iters {
        let mut data = Vec::new();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let len = (x % 600) as usize;
        for _ in 0..len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            data.push(x as u8);
        }
        run_bytes(&data);
    }
    eprintln!("byte sequences: {corpus} of {} corpus files, {iters} random inputs", files.len());
}
