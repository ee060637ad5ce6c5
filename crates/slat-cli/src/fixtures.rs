//! Synthetic [`RunReport`]s for the rendering tests: a migration rehearsal (boot, dirty logging
//! that shatters 2M leaves into 4K, recovery) with events, why-not-huge rows and expectations.

use slat_sim::report::{
    EventMark, ExpectationResult, LeafCounts, PhaseSummary, RunReport, Sample, Totals, WhyRow, SCHEMA_VERSION,
};

/// A report shaped like the default scenario's, `variant` (0, 1, ...) shifting the numbers a bit
/// so compare tests see different columns.
pub fn report(variant: u64) -> RunReport {
    let n = 200u64;
    let per = 25_000u64;
    let mut samples = Vec::new();
    for i in 0..=n {
        let access = i * per;
        // Boot: 2M leaves grow to 1000; dirty logging (60..120) splits them; recovery after 120.
        let (p4k, p2m) = if i < 60 {
            (i * 40, i * 16)
        } else if i < 120 {
            let split = (i - 60) * 12;
            (2400 + split * 512, 960 - split.min(960))
        } else {
            let rec = ((i - 120) * (20 + variant * 5)).min(960);
            (2400 + (960 - rec) * 512, rec)
        };
        samples.push(Sample {
            access,
            leaves: LeafCounts { pages_4k: p4k, pages_2m: p2m, pages_1g: u64::from(i > 30) },
            faults: i * 31 + variant * 7 * i,
            retries: i / 20,
            splits: if i >= 60 { (i - 60).min(60) * 12 } else { 0 },
            recoveries: if i >= 120 { ((i - 120) * (20 + variant * 5)).min(960) } else { 0 },
            flushes: i / 3,
            tlb_misses_per_1k: if (60..120).contains(&i) { 40.0 + (i % 7) as f64 } else { 6.0 + (i % 5) as f64 },
            walk_refs_per_access: if (60..120).contains(&i) { 0.9 } else { 0.2 + variant as f64 * 0.05 },
            table_pages: 10 + i / 2,
        });
    }
    let leaves_at = |i: usize| samples[i].leaves;
    let phases = vec![
        PhaseSummary {
            name: "boot".into(),
            accesses: 60 * per,
            leaves_before: leaves_at(0),
            leaves_after: leaves_at(60),
            peak_4k: 2400,
            faults: 1860,
            tlb_misses_per_1k: 8.1,
            walk_refs_per_access: 0.21,
            why_not_huge: vec![("dirty-logging".into(), 100)],
        },
        PhaseSummary {
            name: "dirty-logging".into(),
            accesses: 60 * per,
            leaves_before: leaves_at(60),
            leaves_after: leaves_at(120),
            peak_4k: 493_920,
            faults: 9_000,
            tlb_misses_per_1k: 43.2,
            walk_refs_per_access: 0.9,
            why_not_huge: vec![("dirty-logging".into(), 100)],
        },
        PhaseSummary {
            name: "recovered".into(),
            accesses: 80 * per,
            leaves_before: leaves_at(120),
            leaves_after: leaves_at(200),
            peak_4k: 493_920,
            faults: 2_100,
            tlb_misses_per_1k: 7.0,
            walk_refs_per_access: 0.22,
            why_not_huge: vec![("dirty-logging".into(), 100)],
        },
    ];
    let last = samples.last().cloned().unwrap_or_default();
    RunReport {
        schema: SCHEMA_VERSION,
        scenario: "default".into(),
        description: "migration rehearsal: boot, dirty logging, recovery".into(),
        seed: 1,
        format: "ept4".into(),
        overrides: if variant == 0 { vec![] } else { vec![format!("policy.recover_batch={}", variant * 64)] },
        samples,
        events: vec![
            EventMark { access: 30 * per, kind: "thp-collapse".into(), detail: "khugepaged, slot 0".into() },
            EventMark { access: 60 * per, kind: "dirty-log-on".into(), detail: "slot 0, eager split".into() },
            EventMark { access: 61 * per, kind: "harvest".into(), detail: "slot 0 <& \"quoted\">".into() },
            EventMark { access: 120 * per, kind: "dirty-log-off".into(), detail: "slot 0, recover in-place".into() },
        ],
        phases,
        why_not_huge: vec![
            WhyRow {
                reason: "host-small".into(),
                description: "host maps it with 4K pages (THP off or fallback)".into(),
                pages: 1_228_800,
                share: 0.6,
            },
            WhyRow {
                reason: "host-2m".into(),
                description: "host leaf is 2M, 1G wanted".into(),
                pages: 491_520,
                share: 0.24,
            },
            WhyRow {
                reason: "misaligned".into(),
                description: "gfn and hva not congruent".into(),
                pages: 2_400,
                share: 0.0012,
            },
        ],
        totals: Totals {
            accesses: n * per,
            mmu: vec![("pages_4k".into(), last.leaves.pages_4k), ("remote_tlb_flush".into(), last.flushes)],
            hw: vec![("tlb_hits".into(), 4_900_000), ("tlb_misses".into(), 100_000), ("walk_refs".into(), 1_300_000)],
            host: vec![("thp_alloc".into(), 1000), ("thp_fallback".into(), 12)],
            tlb_misses_per_1k: 14.2 + variant as f64,
            walk_refs_per_access: 0.33,
            table_bytes: last.table_pages * 4096,
            bookkeeping_bytes: 65_536,
            isolation_violations: 0,
            audits: 5,
        },
        expectations: vec![
            ExpectationResult { expectation: "pages_2m >= 900".into(), actual: "960".into(), ok: true },
            ExpectationResult {
                expectation: "recoveries >= 960".into(),
                actual: last.recoveries.to_string(),
                ok: last.recoveries >= 960,
            },
        ],
        host: None,
    }
}

/// A two-variant comparison of [`report`]s, varying `policy.recover`.
pub fn comparison() -> crate::compare::Comparison {
    use crate::compare::{Comparison, Variant};
    let variants = ["zap", "in-place"]
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let settings = vec![("policy.recover".to_string(), v.to_string())];
            Variant { label: crate::compare::label(&settings), settings, report: report(i as u64) }
        })
        .collect();
    Comparison {
        schema: SCHEMA_VERSION,
        scenario: "default".into(),
        keys: vec!["policy.recover".into()],
        common: vec!["vm.vcpus=2".into()],
        variants,
    }
}
