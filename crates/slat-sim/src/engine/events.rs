//! Firing scenario events: MMU operations and host events, each followed by an audit.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use slat_pt::{Format, MemType, PageSize};

use super::{Engine, ScenarioHost, SimError};
use crate::host::{Advice, HostEvent, HvaRange, Prot as HostProt};
use crate::report::EventMark;
use crate::scenario::{Action, Attribute, Event, Harvest, Prot, SlotRange};

impl<'s, F: Format, H: ScenarioHost> Engine<'s, F, H> {
    pub(crate) fn fire(&mut self, e: &Event) -> Result<(), SimError> {
        let started = std::time::Instant::now();
        let applied = self.apply(e);
        self.last_event_time = started.elapsed();
        let detail = applied.map_err(|message| SimError::Event {
            location: e.location.to_string(),
            kind: e.action.kind().name().to_string(),
            message,
        })?;
        self.report.events.push(EventMark { access: self.done, kind: e.action.kind().name().to_string(), detail });
        let at = format!("after event[{}] {}", e.index, e.action.kind().name());
        self.audit(&at);
        let pages_4k = self.mmu.stats().pages_4k;
        self.peak_4k = self.peak_4k.max(pages_4k);
        Ok(())
    }

    /// Slots an event applies to: one, or every present slot.
    fn targets(&self, slot: Option<u32>) -> Vec<u32> {
        let slots = self.slots.lock().unwrap();
        match slot {
            Some(id) => vec![id],
            None => slots.iter().filter(|(_, p)| p.present).map(|(id, _)| *id).collect(),
        }
    }

    fn hva_range(&self, r: &SlotRange) -> Result<(u64, u64), String> {
        let slots = self.slots.lock().unwrap();
        let p = slots.get(&r.slot).ok_or_else(|| format!("memslot {} does not exist", r.slot))?;
        if r.offset + r.len > p.size {
            return Err(format!(
                "range {:#x}+{:#x} is outside memslot {} ({:#x} bytes)",
                r.offset, r.len, r.slot, p.size
            ));
        }
        Ok((p.hva + r.offset, r.len))
    }

    /// The host range of `r`, or of every present slot when `r` is `None`.
    fn hva_ranges(&self, r: Option<&SlotRange>) -> Result<Vec<(u64, u64)>, String> {
        match r {
            Some(r) => Ok(vec![self.hva_range(r)?]),
            None => {
                let slots = self.slots.lock().unwrap();
                Ok(slots.values().filter(|p| p.present).map(|p| (p.hva, p.size)).collect())
            }
        }
    }

    fn host_event(&mut self, ev: HostEvent) -> Result<String, String> {
        let r = self.host.apply(&ev, &self.mmu)?;
        Ok(format!("{}: {} pages, {} ranges invalidated", ev.name(), r.pages, r.invalidated.len()))
    }

    fn apply(&mut self, e: &Event) -> Result<String, String> {
        match &e.action {
            Action::DirtyLogOn { slot } => {
                let ids = self.targets(*slot);
                for id in &ids {
                    self.mmu.set_dirty_logging(*id, true).map_err(|e| e.to_string())?;
                    self.written.insert(*id, Default::default());
                }
                Ok(format!("logging on for slots {ids:?}"))
            }
            Action::DirtyLogOff { slot } => {
                let ids = self.targets(*slot);
                let before = self.mmu.stats().recoveries;
                for id in &ids {
                    self.mmu.set_dirty_logging(*id, false).map_err(|e| e.to_string())?;
                    self.written.remove(id);
                }
                Ok(format!("logging off for slots {ids:?}; {} blocks recovered", self.mmu.stats().recoveries - before))
            }
            Action::Harvest { slot } => {
                let ids: Vec<u32> =
                    self.targets(*slot).into_iter().filter(|id| self.written.contains_key(id)).collect();
                let mut total = 0;
                for id in &ids {
                    let log = self.mmu.get_dirty_log(*id).map_err(|e| e.to_string())?;
                    if self.s.policy.harvest == Harvest::ManualClear {
                        self.mmu.clear_dirty_log(*id, 0, &log).map_err(|e| e.to_string())?;
                    }
                    total += log.iter().map(|w| w.count_ones() as u64).sum::<u64>();
                    // I5: every page written since the last harvest is in this log.
                    let written = std::mem::take(self.written.get_mut(id).unwrap());
                    for i in written.iter() {
                        if log.get((i / 64) as usize).is_none_or(|w| w & (1 << (i % 64)) == 0) {
                            self.counters.dirty_lost += 1;
                        }
                    }
                }
                Ok(format!("{total} dirty pages from slots {ids:?}"))
            }
            Action::ClearLog(r) => {
                let pages = r.len >> 12;
                let mask = vec![u64::MAX; pages.div_ceil(64) as usize];
                let n = self.mmu.clear_dirty_log(r.slot, r.offset >> 12, &mask).map_err(|e| e.to_string())?;
                Ok(format!("{n} pages re-protected"))
            }
            Action::RecoverNx => Ok(format!("{} NX-split blocks zapped", self.mmu.recover_nx_huge_pages())),
            Action::MemslotAdd { slot } => {
                self.add_slot(*slot)?;
                Ok(format!("slot {slot} added"))
            }
            Action::MemslotDelete { slot } => {
                self.mmu.delete_memslot(*slot).map_err(|e| e.to_string())?;
                if let Some(p) = self.slots.lock().unwrap().get_mut(slot) {
                    p.present = false;
                }
                self.written.remove(slot);
                Ok(format!("slot {slot} deleted"))
            }
            Action::MemslotMove { slot, gpa } => {
                self.mmu.move_memslot(*slot, slat_pt::Gfn(gpa >> 12)).map_err(|e| e.to_string())?;
                if let Some(p) = self.slots.lock().unwrap().get_mut(slot) {
                    p.gpa = *gpa;
                }
                Ok(format!("slot {slot} moved to gpa {gpa:#x}"))
            }
            Action::SetAttributes { range, attribute } => {
                let gpa = self.slots.lock().unwrap().get(&range.slot).map(|p| p.gpa).ok_or("no such memslot")?;
                // Private memory is modelled as a distinct memory type: what matters for huge
                // pages is that a block mixing attributes cannot be one leaf.
                let mt = match attribute {
                    Attribute::Private => MemType::WriteThrough,
                    Attribute::Shared => MemType::WriteBack,
                };
                self.mmu
                    .set_memory_type(slat_pt::Gfn((gpa + range.offset) >> 12), range.len >> 12, mt)
                    .map_err(|e| e.to_string())?;
                Ok(format!("{} pages set {}", range.len >> 12, attribute.name()))
            }
            Action::WriteTrack { range, enable } => {
                let gpa = self.slots.lock().unwrap().get(&range.slot).map(|p| p.gpa).ok_or("no such memslot")?;
                let g0 = (gpa + range.offset) >> 12;
                for gfn in g0..g0 + (range.len >> 12) {
                    if *enable {
                        self.mmu.write_track(slat_pt::Gfn(gfn)).map_err(|e| e.to_string())?;
                    } else {
                        self.mmu.write_untrack(slat_pt::Gfn(gfn)).map_err(|e| e.to_string())?;
                    }
                }
                Ok(format!("{} pages {}tracked", range.len >> 12, if *enable { "" } else { "un" }))
            }
            Action::Munmap(r) => {
                let (hva, len) = self.hva_range(r)?;
                self.host_event(HostEvent::Munmap { hva, len })
            }
            Action::Mprotect { range, prot } => {
                let (hva, len) = self.hva_range(range)?;
                let prot = match prot {
                    Prot::None => HostProt::None,
                    Prot::Read => HostProt::ReadOnly,
                    Prot::ReadWrite => HostProt::ReadWrite,
                };
                self.host_event(HostEvent::Mprotect { hva, len, prot })
            }
            Action::MadviseDontneed(r) => {
                let (hva, len) = self.hva_range(r)?;
                self.host_event(HostEvent::Madvise { hva, len, advice: Advice::DontNeed })
            }
            Action::MadviseCollapse(r) => {
                let (hva, len) = self.hva_range(r)?;
                self.host_event(HostEvent::Madvise { hva, len, advice: Advice::Collapse })
            }
            Action::Khugepaged(r) => {
                let ranges = self.hva_ranges(r.as_ref())?;
                let mut out = Vec::new();
                for (hva, len) in ranges {
                    let ev = HostEvent::Khugepaged {
                        blocks: len.div_ceil(PageSize::Size2M.bytes()),
                        range: Some(HvaRange { start: hva, end: hva + len }),
                    };
                    out.push(self.host_event(ev)?);
                }
                Ok(out.join("; "))
            }
            Action::Migrate(r) => {
                let (hva, len) = self.hva_range(r)?;
                self.host_event(HostEvent::Migrate { hva, len })
            }
            Action::Compact => self.host_event(HostEvent::Compact { max_blocks: u64::MAX }),
            Action::KsmMerge { range, ratio } => {
                let (hva, len) = self.hva_range(range)?;
                self.host_event(HostEvent::KsmMerge { hva, len, ratio: *ratio })
            }
            Action::BalloonInflate { range, amount, unit } => {
                let (hva, len) = self.hva_range(range)?;
                let chunks = len / unit.bytes();
                let want = (amount / unit.bytes()).min(chunks);
                let mut rng =
                    ChaCha8Rng::seed_from_u64(self.s.seed ^ (e.index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
                let mut all: Vec<u64> = (0..chunks).collect();
                all.shuffle(&mut rng);
                let mut picked: Vec<u64> = all.into_iter().take(want as usize).collect();
                picked.sort_unstable();
                for c in &picked {
                    let a = hva + c * unit.bytes();
                    self.host.apply(&HostEvent::BalloonInflate { hva: a, len: unit.bytes() }, &self.mmu)?;
                    self.balloon.entry(range.slot).or_default().push((a, unit.bytes()));
                }
                Ok(format!("{} chunks of {} inflated", picked.len(), unit))
            }
            Action::BalloonDeflate { slot, amount } => {
                let chunks = self.balloon.entry(*slot).or_default();
                let mut left = amount.unwrap_or(u64::MAX);
                let mut give = Vec::new();
                while left > 0 {
                    let Some((hva, len)) = chunks.pop() else { break };
                    left = left.saturating_sub(len);
                    give.push((hva, len));
                }
                for (hva, len) in &give {
                    self.host.apply(&HostEvent::BalloonDeflate { hva: *hva, len: *len }, &self.mmu)?;
                }
                Ok(format!("{} chunks deflated", give.len()))
            }
            Action::SharePteMap(r) => {
                let (hva, len) = self.hva_range(r)?;
                self.host_event(HostEvent::ForeignMap { hva, len })
            }
            Action::ReclaimAge(r) => {
                let ranges = self.hva_ranges(r.as_ref())?;
                let mut out = Vec::new();
                for (hva, len) in ranges {
                    out.push(self.host_event(HostEvent::Age { hva, len, clear: true })?);
                }
                Ok(out.join("; "))
            }
            Action::HugetlbResize { unit, pages } => {
                let detail = self.host_event(HostEvent::HugetlbResize { page_size: *unit, pages: *pages })?;
                let p = self.host.hugetlb_pool(*unit);
                Ok(format!(
                    "{detail}; pool of {} pages: {} asked, {} now ({} free, {} in use)",
                    crate::scenario::page_size_name(*unit),
                    pages,
                    p.total,
                    p.free,
                    p.used()
                ))
            }
        }
    }
}
