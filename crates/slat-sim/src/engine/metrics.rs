//! Metric values for samples, totals and expectations.

use slat_mmu::{Gpa, Stats, WhyNotHuge, WhyReport};
use slat_pt::{Format, PageSize};

use super::{Engine, ScenarioHost, SlotPlace};
use crate::hw::HwStats;
use crate::report::{ExpectationResult, LeafCounts, Totals, WhyRow};
use crate::scenario::{Metric, Scope, Subject};

/// Every metric and why-not-huge count at one point of the run.
#[derive(Debug, Clone, Default)]
pub(crate) struct Snapshot {
    metrics: Vec<(Metric, f64)>,
    why: [u64; WhyNotHuge::COUNT],
}

pub(crate) fn leaves(s: &Stats) -> LeafCounts {
    LeafCounts { pages_4k: s.pages_4k, pages_2m: s.pages_2m, pages_1g: s.pages_1g }
}

/// The why-not-huge table, largest first.
pub(crate) fn why_rows(w: &WhyReport) -> Vec<WhyRow> {
    let mut rows: Vec<WhyRow> = WhyNotHuge::ALL
        .iter()
        .filter(|r| w.pages(**r) > 0)
        .map(|r| WhyRow {
            reason: r.name().to_string(),
            description: r.describe().to_string(),
            pages: w.pages(*r),
            share: if w.mapped_pages == 0 { 0.0 } else { w.pages(*r) as f64 / w.mapped_pages as f64 },
        })
        .collect();
    rows.sort_by(|a, b| b.pages.cmp(&a.pages).then(a.reason.cmp(&b.reason)));
    rows
}

/// `(name, value)` for every integer field of a serialisable struct (arrays get `_i` suffixes).
pub(crate) fn named_numbers<T: serde::Serialize>(v: &T) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    if let Ok(serde_json::Value::Object(map)) = serde_json::to_value(v) {
        for (k, v) in map {
            match v {
                serde_json::Value::Number(n) => {
                    if let Some(n) = n.as_u64() {
                        out.push((k, n));
                    }
                }
                serde_json::Value::Array(a) => {
                    for (i, x) in a.iter().enumerate() {
                        if let Some(n) = x.as_u64() {
                            out.push((format!("{k}_{i}"), n));
                        }
                    }
                }
                _ => {}
            }
        }
    }
    out
}

fn huge_fraction(l: &LeafCounts) -> f64 {
    let total = l.mapped_bytes();
    if total == 0 {
        0.0
    } else {
        ((l.pages_2m << 21) + (l.pages_1g << 30)) as f64 / total as f64
    }
}

impl<'s, F: Format, H: ScenarioHost> Engine<'s, F, H> {
    fn metric(&mut self, m: Metric, s: &Stats, hw: &HwStats) -> f64 {
        let host_leaves = self.host.host_leaves();
        (match m {
            Metric::Pages4K => s.pages_4k,
            Metric::Pages2M => s.pages_2m,
            Metric::Pages1G => s.pages_1g,
            Metric::HugeFraction => return huge_fraction(&leaves(s)),
            Metric::HostPages2M => host_leaves[1],
            Metric::HostPages1G => host_leaves[2],
            Metric::Faults => s.faults,
            Metric::Retries => s.retries,
            Metric::Spurious => s.spurious,
            Metric::Mmio => s.mmio,
            Metric::HugeOnFault => s.huge_on_fault,
            Metric::WriteProtected => s.write_protected,
            Metric::Splits => s.splits,
            Metric::EagerSplits => s.eager_splits,
            Metric::Recoveries => s.recoveries,
            Metric::ZappedLeaves => s.zapped_leaves,
            Metric::Invalidations => s.invalidations,
            Metric::TlbFlushes => s.remote_tlb_flush,
            Metric::TlbFlushRequests => s.remote_tlb_flush_requests,
            Metric::TlbFlushRanges => s.remote_tlb_flush_ranges,
            Metric::NxSplits => s.nx_lpage_splits,
            Metric::NxRecovered => s.nx_recovered,
            Metric::DirtyPagesHarvested => s.dirty_pages_harvested,
            Metric::DirtyRingFull => s.dirty_ring_full,
            Metric::TablePages => s.table_pages,
            Metric::TlbMisses => hw.misses,
            Metric::WalkRefs => hw.walk_refs,
            Metric::IsolationViolations => hw.isolation_violations,
            Metric::DirtyLost => self.counters.dirty_lost,
            Metric::AuditFailures => self.counters.audit_failures,
        }) as f64
    }

    /// Every metric now.
    pub(crate) fn snapshot(&mut self) -> Snapshot {
        let s = self.mmu.stats();
        let hw = self.hw.stats();
        let metrics = Metric::ALL.iter().map(|m| (*m, self.metric(*m, &s, &hw))).collect();
        Snapshot { metrics, why: s.why_not_huge }
    }

    /// Leaf counts of one memslot now.
    fn slot_leaves(&self, id: u32) -> Option<LeafCounts> {
        let p = *self.slots.lock().unwrap().get(&id)?;
        let mut l = LeafCounts::default();
        self.mmu.with_tables(|pt| {
            pt.for_each_leaf(Gpa(p.gpa), p.size, |leaf| match leaf.size {
                PageSize::Size4K => l.pages_4k += 1,
                PageSize::Size2M => l.pages_2m += 1,
                PageSize::Size1G => l.pages_1g += 1,
            })
        });
        Some(l)
    }

    pub(crate) fn check_expectations(&mut self) -> Vec<ExpectationResult> {
        let end = self.snapshot();
        let why_now = self.mmu.why_not_huge();
        let checks = self.s.checks.clone();
        checks
            .iter()
            .map(|c| {
                let actual: Option<f64> = match (&c.scope, c.subject) {
                    (Scope::Run, Subject::Metric(m)) => end.metrics.iter().find(|(x, _)| *x == m).map(|(_, v)| *v),
                    (Scope::Run, Subject::WhyNotHuge(r)) => Some(end.why[r as usize] as f64),
                    (Scope::AfterPhase(i), Subject::Metric(m)) => self
                        .phase_metrics
                        .get(*i)
                        .and_then(|s| s.metrics.iter().find(|(x, _)| *x == m))
                        .map(|(_, v)| *v),
                    (Scope::AfterPhase(i), Subject::WhyNotHuge(r)) => {
                        self.phase_metrics.get(*i).map(|s| s.why[r as usize] as f64)
                    }
                    (Scope::Slot(id), Subject::Metric(m)) => {
                        let l = self.slot_leaves(*id);
                        match m {
                            Metric::Pages4K => l.map(|l| l.pages_4k as f64),
                            Metric::Pages2M => l.map(|l| l.pages_2m as f64),
                            Metric::Pages1G => l.map(|l| l.pages_1g as f64),
                            Metric::HugeFraction => l.map(|l| huge_fraction(&l)),
                            _ => end.metrics.iter().find(|(x, _)| *x == m).map(|(_, v)| *v),
                        }
                    }
                    (Scope::Slot(id), Subject::WhyNotHuge(r)) => {
                        why_now.by_slot.iter().find(|(s, _)| s == id).map(|(_, p)| p[r as usize] as f64)
                    }
                };
                match actual {
                    Some(a) => ExpectationResult {
                        expectation: c.to_string(),
                        actual: if a.fract() == 0.0 { format!("{a:.0}") } else { format!("{a:.3}") },
                        ok: c.holds(a),
                    },
                    None => ExpectationResult { expectation: c.to_string(), actual: "n/a".into(), ok: false },
                }
            })
            .collect()
    }

    pub(crate) fn totals(&mut self, s: &Stats, hw: &HwStats) -> Totals {
        let mut engine = vec![
            ("mmio_exits".to_string(), self.counters.mmio_exits),
            ("readonly_exits".to_string(), self.counters.readonly_exits),
            ("write_tracked_exits".to_string(), self.counters.write_tracked_exits),
            ("host_unmapped_accesses".to_string(), self.counters.host_unmapped),
            ("sigbus_exits".to_string(), self.counters.sigbus_exits),
            ("dirty_lost".to_string(), self.counters.dirty_lost),
            ("audit_failures".to_string(), self.counters.audit_failures),
        ];
        let mut hw_named = named_numbers(hw);
        hw_named.append(&mut engine);
        let mut why: Vec<(String, u64)> =
            WhyNotHuge::ALL.iter().map(|r| (format!("why_{}", r.name().replace('-', "_")), s.why(*r))).collect();
        let mut mmu: Vec<(String, u64)> = s.named().iter().map(|(n, v)| (n.to_string(), *v)).collect();
        mmu.append(&mut why);
        Totals {
            accesses: self.done,
            mmu,
            hw: hw_named,
            host: self.host.named_stats(),
            tlb_misses_per_1k: hw.misses_per_kilo_access(),
            walk_refs_per_access: hw.refs_per_access(),
            table_bytes: s.table_pages * 4096,
            bookkeeping_bytes: self.mmu.bookkeeping_bytes(),
            isolation_violations: hw.isolation_violations,
            audits: self.counters.audits,
        }
    }

    /// The host's own report, with the stage-2 leaves of each present memslot beside it.
    pub(crate) fn host_report(&mut self) -> Option<crate::report::HostReport> {
        let places: Vec<(u32, SlotPlace)> = self.slots.lock().unwrap().iter().map(|(id, p)| (*id, *p)).collect();
        let ranges: Vec<(u32, u64, u64)> = places.iter().map(|(id, p)| (*id, p.hva, p.size)).collect();
        let mut report = self.host.report(&ranges)?;
        for slot in &mut report.memslots {
            if places.iter().any(|(id, p)| *id == slot.slot && p.present) {
                let l = self.slot_leaves(slot.slot).unwrap_or_default();
                slot.stage2 = [l.pages_4k, l.pages_2m, l.pages_1g];
            }
        }
        Some(report)
    }
}
