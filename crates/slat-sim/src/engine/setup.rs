//! Turning a scenario into a host, an MMU and hardware.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use slat_mmu::{Gfn, HostMemory, Hva, MemslotSpec, Mmu};
use slat_pt::{Format, PageSize, SimFrameAllocator};

use super::{Engine, EngineCounters, ScenarioHost, SlotMap, SlotPlace};
use crate::host::{
    Backing as HostBacking, HostConfig, MmapRequest, Placement, Prot as HostProt, ShmemHuge as HostShmem, SimHost,
    ThpAdvice, ThpMode,
};
use crate::hw::{GuestPaging, GuestRegion, GuestTables, Hardware, WalkRecord};
use crate::report::RunReport;
use crate::scenario::{Backing, Memslot, Scenario, ShmemHuge, Thp};

/// Physical base of the stage-2 page-table frames (apart from host RAM, DAX and host tables).
const STAGE2_TABLE_BASE: u64 = 0x3000_0000_0000;
/// Physical base of PFN-mapped MMIO regions.
const MMIO_BASE: u64 = 0x3800_0000_0000;

/// A scenario that cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The host configuration is invalid.
    #[error("{file}: [host]: {message}")]
    Host {
        /// Scenario file.
        file: String,
        /// What is wrong.
        message: String,
    },
    /// A memslot's host mapping could not be created.
    #[error("{file}: memslot {slot}: cannot map {size} bytes of {backing} memory on the host: {message}")]
    Mmap {
        /// Scenario file.
        file: String,
        /// Memslot id.
        slot: u32,
        /// Size.
        size: u64,
        /// Backing name.
        backing: &'static str,
        /// Host error.
        message: String,
    },
    /// The MMU refused the configuration or a memslot.
    #[error("{file}: {message}")]
    Mmu {
        /// Scenario file.
        file: String,
        /// What is wrong.
        message: String,
    },
    /// The guest page tables or TLB configuration are invalid.
    #[error("{file}: [vm]: {message}")]
    Hardware {
        /// Scenario file.
        file: String,
        /// What is wrong.
        message: String,
    },
    /// A real host cannot give what the scenario asks for (a backing, a pool, a mount).
    #[error("{location}: {field}: {message}")]
    RealHost {
        /// Where the scenario asks for it (`file:line`).
        location: String,
        /// The field concerned (`memslot[0].backing`, `host.hugetlb_2m`).
        field: String,
        /// What the host could not do, and what to change.
        message: String,
    },
}

/// The simulated host a scenario's `[host]` table describes.
pub(crate) fn sim_host(s: &Scenario) -> Result<SimHost, SetupError> {
    SimHost::new(host_config(s)).map_err(|e| SetupError::Host { file: s.file.clone(), message: e.to_string() })
}

/// Map every memslot of `s` on the simulated host (see [`ScenarioHost::map_memslots`]).
pub(crate) fn map_sim_memslots(host: &SimHost, s: &Scenario) -> Result<Vec<u64>, SetupError> {
    let (mut dax_offset, mut mmio_offset) = (0, 0);
    let mut out = Vec::with_capacity(s.memslots.len());
    for m in &s.memslots {
        let req = mmap_request(s, m, &mut dax_offset, &mut mmio_offset);
        let hva = host.mmap(&req).map_err(|e| SetupError::Mmap {
            file: s.file.clone(),
            slot: m.id,
            size: m.size.0,
            backing: m.backing.name(),
            message: e.to_string(),
        })?;
        out.push(hva + m.hva_offset.0);
    }
    Ok(out)
}

fn host_config(s: &Scenario) -> HostConfig {
    let h = &s.host;
    HostConfig {
        memory: h.memory.0,
        fragmentation: h.fragmentation,
        fragmentation_1g: h.fragmentation_1g,
        hugetlb_2m_pages: h.hugetlb_2m,
        hugetlb_1g_pages: h.hugetlb_1g,
        khugepaged_max_ptes_none: h.khugepaged_max_ptes_none,
        seed: s.seed,
        dax_size: h.dax_size.0,
        ..HostConfig::default()
    }
}

/// The host mapping request for a memslot.
fn mmap_request(s: &Scenario, m: &Memslot, dax_offset: &mut u64, mmio_offset: &mut u64) -> MmapRequest {
    let thp = match s.host.thp {
        Thp::Never => ThpMode::Never,
        Thp::Madvise => ThpMode::Madvise,
        Thp::Always => ThpMode::Always,
    };
    // The mapping is naturally aligned; the memslot starts `hva_offset` bytes into it (what a
    // VMM does when it registers part of a larger mapping). Round the mapping to the backing's
    // page size so hugetlbfs and DAX lengths stay whole pages.
    let granule = match m.backing {
        Backing::Hugetlbfs1G => PageSize::Size1G.bytes(),
        Backing::Hugetlbfs2M => PageSize::Size2M.bytes(),
        Backing::Dax => s.host.dax_align.bytes(),
        _ => PageSize::Size4K.bytes(),
    };
    let len = (m.size.0 + m.hva_offset.0).next_multiple_of(granule);
    let backing = match m.backing {
        Backing::Anonymous | Backing::AnonymousThp => HostBacking::Anonymous { thp },
        Backing::Shmem => HostBacking::Shmem {
            huge: match s.host.shmem_huge {
                ShmemHuge::Never => HostShmem::Never,
                ShmemHuge::Always => HostShmem::Always,
                ShmemHuge::WithinSize => HostShmem::WithinSize,
                ShmemHuge::Advise => HostShmem::Advise,
            },
            file_offset: 0,
            file_size: None,
        },
        Backing::Hugetlbfs2M => HostBacking::Hugetlbfs { page_size: PageSize::Size2M, file_offset: 0 },
        Backing::Hugetlbfs1G => HostBacking::Hugetlbfs { page_size: PageSize::Size1G, file_offset: 0 },
        Backing::PageCache => {
            HostBacking::PageCache { max_folio_order: s.host.page_cache_max_order, file_offset: 0, file_size: None }
        }
        Backing::Dax => {
            let off = *dax_offset;
            *dax_offset += len.next_multiple_of(s.host.dax_align.bytes());
            HostBacking::Dax { max_leaf: s.host.dax_align, file_offset: off }
        }
        Backing::PfnMap => {
            let pa = MMIO_BASE + *mmio_offset;
            *mmio_offset += len.next_multiple_of(PageSize::Size1G.bytes());
            HostBacking::PfnMap { pa, max_leaf: PageSize::Size2M }
        }
    };
    let advice =
        if m.madvise_hugepage || m.backing == Backing::AnonymousThp { ThpAdvice::HugePage } else { ThpAdvice::None };
    let prot = if m.readonly { HostProt::ReadOnly } else { HostProt::ReadWrite };
    MmapRequest { placement: Placement::Aligned { offset: 0 }, ..MmapRequest::new(len, backing) }
        .with_prot(prot)
        .with_advice(advice)
}

impl<'s, F: Format, H: ScenarioHost> Engine<'s, F, H> {
    pub(crate) fn new(s: &'s Scenario, host: Arc<H>) -> Result<Self, SetupError> {
        let file = || s.file.clone();

        // Host mappings for every memslot (also those added later by events).
        let slots: SlotMap = Arc::new(Mutex::new(BTreeMap::new()));
        let hvas = host.map_memslots(s)?;
        for (m, hva) in s.memslots.iter().zip(hvas) {
            slots.lock().unwrap().insert(m.id, SlotPlace { gpa: m.gpa.0, size: m.size.0, hva, present: false });
        }

        // Guest page tables live at the top of the first boot memslot.
        let regions: Vec<GuestRegion> = s
            .guest_regions()
            .iter()
            .map(|g| GuestRegion { gva: g.gva.0, len: g.len.0, page_size: g.size, gpa: g.gpa() })
            .collect();
        let reserve = crate::scenario::guest_table_reserve(regions.iter().map(|r| r.len));
        let first = s.memslots.iter().find(|m| m.at_boot).ok_or_else(|| SetupError::Hardware {
            file: file(),
            message: "no memslot is present at boot (at_boot = true): the guest page tables need one".into(),
        })?;
        if reserve >= first.size.0 {
            return Err(SetupError::Hardware {
                file: file(),
                message: format!(
                    "memslot {} ({} bytes) must be larger than the {reserve} bytes the guest page tables take at its top",
                    first.id, first.size.0
                ),
            });
        }
        let paging = if F::INPUT_BITS > 48 { GuestPaging::FiveLevel } else { GuestPaging::FourLevel };
        let guest = GuestTables::new(paging, first.gpa_end() - reserve, regions)
            .map_err(|e| SetupError::Hardware { file: file(), message: e.to_string() })?;
        let hw_config = s.hw_config();
        let mut hw = Hardware::new(hw_config, s.vm.vcpus as usize, guest)
            .map_err(|e| SetupError::Hardware { file: file(), message: e.to_string() })?;

        // I1 on every walk: the translation equals what the host maps at the slot's hva.
        let (checker_host, checker_slots) = (host.clone(), slots.clone());
        hw.set_walk_checker(Some(Box::new(move |w: &WalkRecord| check_walk(&checker_host, &checker_slots, w))));

        // arm64 formats model a CPU without FEAT_S2FWB and FEAT_DIC: every leaf installed costs
        // cache maintenance, which the hardware model counts.
        if F::NAME.starts_with("arm64") {
            hw.set_cache_maintenance(slat_mmu::CacheMaintenance::ARM64_NO_FWB_NO_DIC);
        }
        let mmu = Mmu::new(
            s.policy.mmu_config(),
            SimFrameAllocator::new(STAGE2_TABLE_BASE, 64 << 30),
            host.clone(),
            hw.tlb_handle(),
        )
        .map_err(|e| SetupError::Mmu { file: file(), message: format!("[policy]: {e}") })?;

        let mut engine = Engine {
            s,
            host,
            mmu,
            hw,
            slots,
            counters: EngineCounters::default(),
            written: BTreeMap::new(),
            balloon: BTreeMap::new(),
            report: RunReport::default(),
            done: 0,
            last_hw: Default::default(),
            last_sample_access: 0,
            peak_4k: 0,
            audit_detail: None,
            last_event_time: std::time::Duration::ZERO,
            phase_metrics: Vec::new(),
        };
        for m in s.memslots.iter().filter(|m| m.at_boot) {
            engine.add_slot(m.id).map_err(|message| SetupError::Mmu { file: file(), message })?;
        }
        Ok(engine)
    }

    /// Register memslot `id` (already mmapped) with the MMU.
    pub(crate) fn add_slot(&mut self, id: u32) -> Result<(), String> {
        let m = self.s.memslot(id).ok_or_else(|| format!("memslot {id} is not declared"))?;
        let mut slots = self.slots.lock().unwrap();
        let place = slots.get_mut(&id).ok_or_else(|| format!("memslot {id} has no host mapping"))?;
        let spec = MemslotSpec {
            id,
            base_gfn: Gfn(place.gpa >> 12),
            npages: place.size >> 12,
            hva: Hva(place.hva),
            readonly: m.readonly,
            log_dirty: false,
        };
        self.mmu.add_memslot(spec).map_err(|e| e.to_string())?;
        place.present = true;
        Ok(())
    }
}

fn check_walk<H: HostMemory>(host: &H, slots: &SlotMap, w: &WalkRecord) -> Result<(), String> {
    let slots = slots.lock().unwrap();
    let Some((id, p)) = slots.iter().find(|(_, p)| p.present && w.gpa >= p.gpa && w.gpa < p.gpa + p.size) else {
        return Err(format!("walk translated gpa {:#x}, which is in no memslot", w.gpa));
    };
    let hva = p.hva + (w.gpa - p.gpa);
    match host.lookup(Hva(hva & !0xfff)) {
        Some(h) if h.pfn.hpa() | (w.gpa & 0xfff) == w.hpa => Ok(()),
        Some(h) => Err(format!(
            "memslot {id}: gpa {:#x} translated to {:#x}, host maps hva {hva:#x} to {:#x}",
            w.gpa,
            w.hpa,
            h.pfn.hpa() | (w.gpa & 0xfff)
        )),
        None => {
            Err(format!("memslot {id}: gpa {:#x} translated to {:#x}, host no longer maps hva {hva:#x}", w.gpa, w.hpa))
        }
    }
}
