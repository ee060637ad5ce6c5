//! The real Linux host behind the scenario engine (`host.kind = "linux"`): [`LinuxHost`]
//! turns a scenario's memslots and host events into slat-linux's [`RunHost`] and its system
//! calls, and renders what the kernel says of the run's memory.
//!
//! The engine (slat-sim) knows the host only through [`ScenarioHost`]; slat-linux knows nothing
//! of scenarios. This module, above both, is where they meet.

use std::fmt::Write as _;
use std::sync::Arc;

use slat_linux::backing::{HugetlbSize, ThpAdvice};
use slat_linux::policy::SystemThp;
use slat_linux::pool::{PoolState, TmpfsHuge};
use slat_linux::run_host::{HostChange, Protection, RunHost, RunHostConfig, RunHostError, SlotBacking, SlotRequest};
use slat_mmu::{HostError, HostMemory, HostPage, Hva, MmuNotifier, Pfn};
use slat_pt::PageSize;
use slat_sim::engine::{ScenarioHost, SetupError};
use slat_sim::host::{Advice, EventReport, HostEvent, HugetlbPoolStats, HvaRange, Prot};
use slat_sim::report::{HostReport, HostSlotReport, RunReport};
use slat_sim::scenario::{real_memory, Backing, Scenario, ShmemHuge, Thp};

use crate::units::{bytes, count};

/// This machine's kernel as the host of a scenario run.
#[derive(Debug)]
pub struct LinuxHost {
    host: RunHost,
    /// The slot address of each memslot, in file order (mapping + `hva_offset`).
    hvas: Vec<u64>,
    thp_mode: String,
}

/// `file:line` of memslot `i`.
fn slot_at(s: &Scenario, i: usize) -> String {
    s.memslot_locations.get(i).map_or_else(|| s.file.clone(), |l| l.to_string())
}

fn tmpfs_huge(h: ShmemHuge) -> TmpfsHuge {
    match h {
        ShmemHuge::Never => TmpfsHuge::Never,
        ShmemHuge::Always => TmpfsHuge::Always,
        ShmemHuge::WithinSize => TmpfsHuge::WithinSize,
        ShmemHuge::Advise => TmpfsHuge::Advise,
    }
}

impl LinuxHost {
    /// Make every memslot of `s` in this process's real memory: grow the hugetlb pools by
    /// `host.hugetlb_2m`/`_1g` pages, mount a private tmpfs `huge=<host.shmem_huge>` for shmem
    /// slots, map each slot 1 GiB-aligned (its `hva_offset` into the mapping), and apply
    /// `host.thp` as per-mapping advice. The scenario must have passed validation for a linux
    /// host (backings, events and size are checked there).
    ///
    /// # Errors
    /// [`SetupError::RealHost`] naming the scenario line and field the host could not honour.
    pub fn new(s: &Scenario) -> Result<Self, SetupError> {
        let thp = SystemThp::read();
        let thp_mode = thp.anon_mode().unwrap_or("unknown").to_string();
        let mut requests = Vec::new();
        for (i, m) in s.memslots.iter().enumerate() {
            let want_thp = match m.backing {
                Backing::Anonymous | Backing::AnonymousThp => match s.host.thp {
                    Thp::Never => false,
                    Thp::Always => true,
                    Thp::Madvise => m.madvise_hugepage || m.backing == Backing::AnonymousThp,
                },
                _ => false,
            };
            if want_thp && thp_mode == "never" {
                return Err(SetupError::RealHost {
                    location: slot_at(s, i),
                    field: format!("memslot[{i}].backing"),
                    message: format!(
                        "\"{}\" with host.thp = \"{}\" needs THP, but this kernel's THP mode is \"never\" \
                         (/sys/kernel/mm/transparent_hugepage/enabled); a run never changes system-wide settings",
                        m.backing, s.host.thp
                    ),
                });
            }
            let advice = |want: bool| match (want, thp_mode.as_str()) {
                (true, _) => ThpAdvice::Hugepage,
                (false, "always") => ThpAdvice::NoHugepage,
                (false, _) => ThpAdvice::None,
            };
            let backing = match m.backing {
                Backing::Anonymous | Backing::AnonymousThp => SlotBacking::Anonymous { thp: advice(want_thp) },
                Backing::Shmem => {
                    SlotBacking::Tmpfs { thp: if m.madvise_hugepage { ThpAdvice::Hugepage } else { ThpAdvice::None } }
                }
                Backing::Hugetlbfs2M => SlotBacking::Hugetlb { size: HugetlbSize::Size2M },
                Backing::Hugetlbfs1G => SlotBacking::Hugetlb { size: HugetlbSize::Size1G },
                other => {
                    return Err(SetupError::RealHost {
                        location: slot_at(s, i),
                        field: format!("memslot[{i}].backing"),
                        message: format!("a linux-host run cannot back a memslot with \"{other}\""),
                    })
                }
            };
            requests.push(SlotRequest { id: m.id, backing, len: real_memory(m), read_only: m.readonly });
        }
        let config = RunHostConfig {
            tmpfs_huge: tmpfs_huge(s.host.shmem_huge),
            hugetlb_2m: s.host.hugetlb_2m,
            hugetlb_1g: s.host.hugetlb_1g,
        };
        let host = RunHost::new(&config, &requests).map_err(|e| setup_error(s, e))?;
        let hvas = s
            .memslots
            .iter()
            .map(|m| host.slot_hva(m.id).expect("every slot was mapped") + m.hva_offset.get())
            .collect();
        Ok(LinuxHost { host, hvas, thp_mode })
    }

    /// The owned host.
    pub fn run_host(&self) -> &RunHost {
        &self.host
    }
}

/// A setup failure against the scenario line and field it comes from.
fn setup_error(s: &Scenario, e: RunHostError) -> SetupError {
    let first = |pred: &dyn Fn(Backing) -> bool| s.memslots.iter().position(|m| pred(m.backing)).unwrap_or(0);
    match &e {
        RunHostError::Pool { size, pages, .. } => {
            let (key, ps) = match size {
                HugetlbSize::Size2M => ("hugetlb_2m", PageSize::Size2M),
                HugetlbSize::Size1G => ("hugetlb_1g", PageSize::Size1G),
            };
            let i = first(&|b| b.hugetlb_page() == Some(ps));
            SetupError::RealHost {
                location: slot_at(s, i),
                field: format!("host.{key} = {pages}"),
                message: format!(
                    "memslot[{i}] needs the pool, and {e}; free memory in whole {} blocks is short \
                     (1G pages can rarely be reserved after boot), so this host cannot back the slot",
                    size.name()
                ),
            }
        }
        RunHostError::Tmpfs { .. } => {
            let i = first(&|b| b == Backing::Shmem);
            SetupError::RealHost {
                location: slot_at(s, i),
                field: format!("host.shmem_huge = \"{}\"", s.host.shmem_huge),
                message: format!("{e} (mounting needs root)"),
            }
        }
        RunHostError::Slot { id, .. } => {
            let i = s.memslots.iter().position(|m| m.id == *id).unwrap_or(0);
            SetupError::RealHost {
                location: slot_at(s, i),
                field: format!("memslot[{i}].backing = \"{}\"", s.memslots[i].backing),
                message: e.to_string(),
            }
        }
        RunHostError::Host(_) => SetupError::RealHost {
            location: s.file.clone(),
            field: "host.kind = \"linux\"".into(),
            message: e.to_string(),
        },
    }
}

impl HostMemory for LinuxHost {
    fn fault_in(&self, hva: Hva, write: bool) -> Result<HostPage, HostError> {
        self.host.fault_in(hva, write)
    }
    fn lookup(&self, hva: Hva) -> Option<HostPage> {
        self.host.lookup(hva)
    }
    fn mark_dirty(&self, pfn: Pfn, pages: u64) {
        self.host.mark_dirty(pfn, pages)
    }
    fn mark_accessed(&self, pfn: Pfn, pages: u64) {
        self.host.mark_accessed(pfn, pages)
    }
}

impl ScenarioHost for LinuxHost {
    fn map_memslots(&self, _s: &Scenario) -> Result<Vec<u64>, SetupError> {
        Ok(self.hvas.clone())
    }

    fn apply(&self, event: &HostEvent, notifier: &dyn MmuNotifier) -> Result<EventReport, String> {
        let change = |hva: u64, len: u64, c: HostChange| -> Result<EventReport, String> {
            let r = self.host.change(hva, len, c, notifier)?;
            let (before, after) = r.huge_bytes;
            Ok(EventReport {
                invalidated: r.invalidated.iter().map(|&(start, end)| HvaRange { start, end }).collect(),
                pages: r.pages,
                huge_split: before.saturating_sub(after) >> 21,
                huge_collapsed: after.saturating_sub(before) >> 21,
                ..EventReport::default()
            })
        };
        match *event {
            HostEvent::Mprotect { hva, len, prot } => {
                let p = match prot {
                    Prot::None => Protection::None,
                    Prot::ReadOnly => Protection::Read,
                    Prot::ReadWrite => Protection::ReadWrite,
                };
                change(hva, len, HostChange::Protect(p))
            }
            HostEvent::Madvise { hva, len, advice: Advice::DontNeed } => change(hva, len, HostChange::DontNeed),
            HostEvent::Madvise { hva, len, advice: Advice::Collapse } => change(hva, len, HostChange::Collapse),
            // virtio-balloon in QEMU discards inflated pages with MADV_DONTNEED.
            HostEvent::BalloonInflate { hva, len } => change(hva, len, HostChange::DontNeed),
            // Nothing to do on the host: the pages fault back in on their next access.
            HostEvent::BalloonDeflate { len, .. } => Ok(EventReport { pages: len / 4096, ..EventReport::default() }),
            HostEvent::Age { hva, len, .. } => {
                // The notifier answers whether anything was young, not how much.
                self.host.age(hva, len, notifier)?;
                Ok(EventReport { pages: len / 4096, ..EventReport::default() })
            }
            ref other => Err(format!("a linux-host run cannot produce the host event \"{}\"", other.name())),
        }
    }

    fn named_stats(&self) -> Vec<(String, u64)> {
        let leaves = self.host.leaves();
        let (fault_ins, invalidations, kernel_changes) = self.host.counters();
        let (r2m, r1g) = self.host.reserved();
        vec![
            ("host_leaves_0".into(), leaves[0]),
            ("host_leaves_1".into(), leaves[1]),
            ("host_leaves_2".into(), leaves[2]),
            ("fault_ins".into(), fault_ins),
            ("invalidations".into(), invalidations),
            ("kernel_changes_while_faulting".into(), kernel_changes),
            ("hugetlb_2m_reserved".into(), r2m),
            ("hugetlb_1g_reserved".into(), r1g),
        ]
    }

    fn host_leaves(&self) -> [u64; 3] {
        self.host.leaves()
    }

    fn hugetlb_pool(&self, size: PageSize) -> HugetlbPoolStats {
        let h = if size == PageSize::Size1G { HugetlbSize::Size1G } else { HugetlbSize::Size2M };
        PoolState::read(h).map(|p| HugetlbPoolStats { total: p.total, free: p.free }).unwrap_or_default()
    }

    fn audit(&self) -> Result<(), String> {
        self.host.audit()
    }

    fn sync(&self, notifier: &dyn MmuNotifier, thorough: bool) {
        self.host.sync(notifier, thorough)
    }

    fn report(&self, slots: &[(u32, u64, u64)]) -> Option<HostReport> {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let cfg = self.host.config();
        let (r2m, r1g) = self.host.reserved();
        let (_, _, kernel_changes) = self.host.counters();
        let memslots = slots
            .iter()
            .map(|&(slot, hva, len)| {
                let split = self.host.split(hva, hva + len);
                let (pmd, hugetlb) = self.host.slot_smaps(slot).ok().flatten().unwrap_or_default();
                HostSlotReport {
                    slot,
                    backing: self.host.slot_backing(slot).unwrap_or("").to_string(),
                    hva,
                    len,
                    bytes_4k: split.bytes_4k,
                    bytes_2m: split.bytes_2m,
                    bytes_1g: split.bytes_1g,
                    bytes_zero: split.bytes_zero,
                    bytes_absent: split.bytes_absent,
                    smaps_pmd_bytes: pmd,
                    smaps_hugetlb_bytes: hugetlb,
                    stage2: [0; 3],
                }
            })
            .collect();
        Some(HostReport {
            kind: "linux".into(),
            facts: vec![
                ("kernel".into(), release.trim().to_string()),
                ("thp".into(), self.thp_mode.clone()),
                ("tmpfs".into(), format!("huge={}", cfg.tmpfs_huge.name())),
                ("hugetlb reserved".into(), format!("{r2m} x 2M, {r1g} x 1G (given back after the run)")),
                ("host leaf sizes".into(), "PAGEMAP_SCAN (PAGE_IS_HUGE), smaps beside it".into()),
            ],
            memslots,
            notes: vec![
                format!(
                    "{kernel_changes} huge blocks the kernel changed on its own (a write to the huge zero page while \
                     faulting, khugepaged or compaction later) were found by comparing with PAGEMAP_SCAN and pagemap \
                     and given to the MMU as invalidations"
                ),
                "the kernel tells this process nothing when it changes a mapping on its own: such a change is found \
                 within 10 ms or at the next fault in its block, and a walk in between may see the old translation \
                 (counted as an isolation violation)"
                    .into(),
            ],
        })
    }
}

/// Run `scenario` on this machine's kernel.
pub fn host_for(scenario: &Scenario) -> Result<Arc<LinuxHost>, SetupError> {
    LinuxHost::new(scenario).map(Arc::new)
}

/// The report's host section in text: each memslot's host leaves beside its stage-2 leaves.
pub fn render(report: &RunReport) -> Option<String> {
    let h = report.host.as_ref()?;
    let mut out = String::new();
    let facts: Vec<String> = h.facts.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    let _ = writeln!(out, "\nHost ({}): {}", h.kind, facts.join("; "));
    for s in &h.memslots {
        let _ = writeln!(
            out,
            "  slot {} ({}, {} at {:#x}): host 4K {} / 2M {} / 1G {} (zero page {}, absent {}); smaps PMD {} hugetlb {}; \
             stage 2: {} x 4K, {} x 2M, {} x 1G",
            s.slot,
            s.backing,
            bytes(s.len),
            s.hva,
            bytes(s.bytes_4k),
            bytes(s.bytes_2m),
            bytes(s.bytes_1g),
            bytes(s.bytes_zero),
            bytes(s.bytes_absent),
            bytes(s.smaps_pmd_bytes),
            bytes(s.smaps_hugetlb_bytes),
            count(s.stage2[0]),
            count(s.stage2[1]),
            count(s.stage2[2]),
        );
    }
    for n in &h.notes {
        let _ = writeln!(out, "  note: {n}");
    }
    Some(out)
}
