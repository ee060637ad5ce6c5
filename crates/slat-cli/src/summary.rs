//! The terminal summary of one run: what happened to the VM's memory at a glance.
//!
//! Sections, in order: a header (scenario, format, seed, overrides), leaves by size before and
//! after each phase with the peak of 4K leaves during it, the translation cost of each phase,
//! the events, run totals, the why-not-huge table, and the expectations with the verdict.

use std::fmt::Write as _;

use slat_sim::report::{LeafCounts, RunReport, Sample};

use crate::style::Style;
use crate::table::{Align, TextTable};
use crate::units::{bytes, count, percent, ratio, short_count};

/// Events listed in the terminal; the JSON and HTML outputs have all of them.
const MAX_EVENTS: usize = 20;

/// Width of the why-not-huge share bars, in characters.
const BAR_WIDTH: usize = 16;

/// Guest accesses the workload executed: the last sample's count (the time axis of the charts
/// and of the events), or the totals' when there are no samples.
pub fn guest_accesses(report: &RunReport) -> u64 {
    report.samples.last().map_or(report.totals.accesses, |s| s.access)
}

/// The final cumulative counters of a run (its last sample; zeros for an empty run).
pub fn final_sample(report: &RunReport) -> Sample {
    report.samples.last().cloned().unwrap_or_default()
}

/// `before → after` for one leaf size.
fn change(before: u64, after: u64) -> String {
    if before == after {
        count(after)
    } else {
        format!("{} → {}", count(before), count(after))
    }
}

/// Share of mapped guest memory in 2M and 1G leaves (`-` when nothing is mapped).
pub fn huge_share(leaves: LeafCounts) -> String {
    let mapped = leaves.mapped_bytes();
    if mapped == 0 {
        return "-".to_string();
    }
    percent(((leaves.pages_2m << 21) + (leaves.pages_1g << 30)) as f64 / mapped as f64)
}

fn leaves_row(name: &str, accesses: String, before: LeafCounts, after: LeafCounts, peak: String) -> Vec<String> {
    vec![
        name.to_string(),
        accesses,
        change(before.pages_4k, after.pages_4k),
        change(before.pages_2m, after.pages_2m),
        change(before.pages_1g, after.pages_1g),
        peak,
        bytes(after.mapped_bytes()),
        huge_share(after),
    ]
}

/// A unicode bar of `frac` (0..=1) of [`BAR_WIDTH`] characters, in eighths.
fn bar(frac: f64) -> String {
    const PARTS: [char; 8] = [' ', '▏', '▎', '▍', '▌', '▋', '▊', '▉'];
    let eighths = (frac.clamp(0.0, 1.0) * (BAR_WIDTH * 8) as f64).round() as usize;
    let mut s = "█".repeat(eighths / 8);
    if eighths % 8 != 0 {
        s.push(PARTS[eighths % 8]);
    }
    if s.is_empty() && frac > 0.0 {
        s.push('▏');
    }
    s
}

/// The header lines: title, description, format, seed, overrides, run length.
fn header(out: &mut String, report: &RunReport, style: Style) {
    let _ = writeln!(out, "{}", style.bold(&format!("slat · {}", report.scenario)));
    if !report.description.is_empty() {
        let _ = writeln!(out, "{}", report.description);
    }
    let mut meta =
        format!("format {} · seed {} · {} accesses", report.format, report.seed, count(guest_accesses(report)));
    if !report.phases.is_empty() {
        let _ = write!(meta, " in {} phase{}", report.phases.len(), if report.phases.len() == 1 { "" } else { "s" });
    }
    let _ = writeln!(out, "{}", style.dim(&meta));
    if !report.overrides.is_empty() {
        let _ = writeln!(out, "{}", style.dim(&format!("overrides: {}", report.overrides.join(", "))));
    }
}

fn section(out: &mut String, title: &str, note: &str, style: Style) {
    let _ = write!(out, "\n{}", style.bold(title));
    if !note.is_empty() {
        let _ = write!(out, "  {}", style.dim(note));
    }
    out.push('\n');
}

fn table(out: &mut String, t: &TextTable, style: Style) {
    for (i, line) in t.lines().iter().enumerate() {
        let line = if i < 2 { style.dim(line) } else { line.clone() };
        let _ = writeln!(out, "  {line}");
    }
}

/// Leaves by size before and after each phase.
fn leaves_section(out: &mut String, report: &RunReport, style: Style) {
    section(
        out,
        "Guest memory by leaf size",
        "leaf counts before → after each phase; huge = share in 2M/1G leaves",
        style,
    );
    let mut t = TextTable::new(&[
        ("phase", Align::Left),
        ("accesses", Align::Right),
        ("4K leaves", Align::Right),
        ("2M leaves", Align::Right),
        ("1G leaves", Align::Right),
        ("peak 4K", Align::Right),
        ("mapped after", Align::Right),
        ("huge after", Align::Right),
    ]);
    for p in &report.phases {
        t.row(leaves_row(&p.name, short_count(p.accesses as f64), p.leaves_before, p.leaves_after, count(p.peak_4k)));
    }
    let first = report.phases.first().map(|p| p.leaves_before).unwrap_or_default();
    let last = report.final_leaves();
    let peak = report.samples.iter().map(|s| s.leaves.pages_4k).max().unwrap_or(0);
    if !report.phases.is_empty() {
        t.rule();
    }
    t.row(leaves_row("whole run", short_count(guest_accesses(report) as f64), first, last, count(peak)));
    table(out, &t, style);
}

/// Faults and translation cost per phase.
fn cost_section(out: &mut String, report: &RunReport, style: Style) {
    if report.phases.is_empty() {
        return;
    }
    section(out, "Translation cost by phase", "", style);
    let mut t = TextTable::new(&[
        ("phase", Align::Left),
        ("faults", Align::Right),
        ("TLB misses/1k", Align::Right),
        ("walk refs/access", Align::Right),
    ]);
    for p in &report.phases {
        t.row([p.name.clone(), count(p.faults), ratio(p.tlb_misses_per_1k), ratio(p.walk_refs_per_access)]);
    }
    table(out, &t, style);
}

/// Events in order, numbered as in the HTML report's charts.
fn events_section(out: &mut String, report: &RunReport, style: Style) {
    if report.events.is_empty() {
        return;
    }
    section(out, "Events", "", style);
    let mut t = TextTable::new(&[
        ("#", Align::Right),
        ("at access", Align::Right),
        ("event", Align::Left),
        ("detail", Align::Left),
    ]);
    for (i, e) in report.events.iter().enumerate().take(MAX_EVENTS) {
        t.row([(i + 1).to_string(), count(e.access), e.kind.clone(), e.detail.clone()]);
    }
    table(out, &t, style);
    if report.events.len() > MAX_EVENTS {
        let more = report.events.len() - MAX_EVENTS;
        let _ = writeln!(out, "  {}", style.dim(&format!("… and {more} more (all of them in --json and --report)")));
    }
}

/// Final counters in two key/value columns.
fn totals_section(out: &mut String, report: &RunReport, style: Style) {
    section(out, "Totals", "", style);
    let s = final_sample(report);
    let t = &report.totals;
    let mapped = report.final_leaves().mapped_bytes();
    let bookkeeping = if mapped > 0 {
        format!("{} ({} of mapped)", bytes(t.bookkeeping_bytes), percent(t.bookkeeping_bytes as f64 / mapped as f64))
    } else {
        bytes(t.bookkeeping_bytes)
    };
    let left = [
        ("faults", count(s.faults)),
        ("retries", count(s.retries)),
        ("splits", count(s.splits)),
        ("recoveries", count(s.recoveries)),
        ("flushes", count(s.flushes)),
    ];
    let right = [
        ("TLB misses / 1k accesses", ratio(t.tlb_misses_per_1k)),
        ("walk refs / access", ratio(t.walk_refs_per_access)),
        ("page-table memory", format!("{} ({} pages)", bytes(t.table_bytes), count(s.table_pages))),
        ("bookkeeping", bookkeeping),
        ("audits / isolation violations", format!("{} / {}", count(t.audits), count(t.isolation_violations))),
    ];
    let lw = left.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let lv = left.iter().map(|(_, v)| v.chars().count()).max().unwrap_or(0);
    let rw = right.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for ((lk, lvv), (rk, rv)) in left.iter().zip(&right) {
        let _ = writeln!(out, "  {lk:<lw$}  {lvv:>lv$}     {rk:<rw$}  {rv}");
    }
}

/// The why-not-huge table with share bars.
fn why_section(out: &mut String, report: &RunReport, style: Style) {
    section(out, "Why not huge", "at the end of the run: guest memory mapped below 1 GiB, by reason", style);
    if report.why_not_huge.is_empty() {
        let _ = writeln!(out, "  nothing: every mapped page sits in a 1 GiB leaf");
    } else {
        why_table(out, report, style);
    }
    // Over time: the decisions made during each phase.
    let mut reasons: Vec<&str> = Vec::new();
    for p in &report.phases {
        for (r, _) in &p.why_not_huge {
            if !reasons.contains(&r.as_str()) {
                reasons.push(r);
            }
        }
    }
    if reasons.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n  {}", style.dim("leaf-size decisions below 1 GiB made during each phase, by reason:"));
    let mut headers = vec![("phase".to_string(), Align::Left)];
    headers.extend(reasons.iter().map(|r| (r.to_string(), Align::Right)));
    let hdr: Vec<(&str, Align)> = headers.iter().map(|(h, a)| (h.as_str(), *a)).collect();
    let mut t = TextTable::new(&hdr);
    for p in &report.phases {
        let mut row = vec![p.name.clone()];
        for r in &reasons {
            let n = p.why_not_huge.iter().find(|(x, _)| x == r).map_or(0, |(_, n)| *n);
            row.push(if n == 0 { "·".to_string() } else { count(n) });
        }
        t.row(row);
    }
    table(out, &t, style);
}

/// The end-of-run why-not-huge rows with share bars.
fn why_table(out: &mut String, report: &RunReport, style: Style) {
    let mut t = TextTable::new(&[
        ("reason", Align::Left),
        ("4K pages", Align::Right),
        ("memory", Align::Right),
        ("share", Align::Right),
        ("", Align::Left),
        ("what it means", Align::Left),
    ]);
    for r in &report.why_not_huge {
        // Bars are shares of guest memory, so two 25% reasons draw quarter bars.
        let frac = r.share;
        t.row([
            r.reason.clone(),
            count(r.pages),
            bytes(r.pages << 12),
            percent(r.share),
            format!("{:<BAR_WIDTH$}", bar(frac)),
            r.description.clone(),
        ]);
    }
    table(out, &t, style);
}

/// What went wrong, one line per failure (failed expectations, isolation violations).
pub fn failures(report: &RunReport) -> Vec<String> {
    let mut v: Vec<String> = report
        .expectations
        .iter()
        .filter(|e| !e.ok)
        .map(|e| format!("expectation failed: {} (actual {})", e.expectation, e.actual))
        .collect();
    if report.totals.isolation_violations > 0 {
        v.push(format!(
            "{} isolation violations caught by the hardware model",
            count(report.totals.isolation_violations)
        ));
    }
    v
}

/// Expectations and the verdict line.
fn verdict_section(out: &mut String, report: &RunReport, style: Style) {
    if !report.expectations.is_empty() {
        section(out, "Expectations", "", style);
        let w = report.expectations.iter().map(|e| e.expectation.chars().count()).max().unwrap_or(0);
        for e in &report.expectations {
            let _ = writeln!(
                out,
                "  {}  {:<w$}  {}",
                style.verdict(e.ok),
                e.expectation,
                style.dim(&format!("actual {}", e.actual))
            );
        }
    }
    out.push('\n');
    let held = report.expectations.iter().filter(|e| e.ok).count();
    let total = report.expectations.len();
    if report.passed() {
        let detail = match total {
            0 => "no expectations in the scenario".to_string(),
            1 => "the expectation held".to_string(),
            n => format!("all {n} expectations held"),
        };
        let _ = writeln!(out, "result: {} ({detail})", style.verdict(true));
    } else {
        let failed = failures(report);
        let _ = writeln!(out, "result: {} ({} of {total} expectations held)", style.verdict(false), held);
        for f in failed {
            let _ = writeln!(out, "  {}", style.bad(&f));
        }
    }
}

/// The whole terminal summary.
pub fn render(report: &RunReport, style: Style) -> String {
    let mut out = String::new();
    header(&mut out, report, style);
    leaves_section(&mut out, report, style);
    cost_section(&mut out, report, style);
    events_section(&mut out, report, style);
    totals_section(&mut out, report, style);
    why_section(&mut out, report, style);
    verdict_section(&mut out, report, style);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    #[test]
    fn summary_has_every_section() {
        let text = render(&fixtures::report(0), Style::PLAIN);
        for needle in [
            "slat · default",
            "format ept4 · seed 1",
            "Guest memory by leaf size",
            "4K leaves",
            "dirty-logging",
            "whole run",
            "Translation cost by phase",
            "Events",
            "dirty-log-on",
            "Totals",
            "recoveries",
            "page-table memory",
            "bookkeeping",
            "Why not huge",
            "host-small",
            "60%",
            "Expectations",
            "result: PASS (all 2 expectations held)",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
        assert!(!text.contains('\x1b'));
    }

    #[test]
    fn failure_is_named() {
        let mut r = fixtures::report(0);
        r.expectations[1].ok = false;
        let text = render(&r, Style::PLAIN);
        assert!(text.contains("result: FAIL (1 of 2 expectations held)"), "{text}");
        assert!(text.contains("expectation failed: recoveries >= 960 (actual 960)"));
        assert_eq!(failures(&r).len(), 1);
    }

    #[test]
    fn empty_report_renders() {
        let text = render(&RunReport::default(), Style::PLAIN);
        assert!(text.contains("whole run"));
        assert!(text.contains("nothing: every mapped page sits in a 1 GiB leaf"));
        assert!(text.contains("no expectations"));
    }

    #[test]
    fn long_event_lists_are_cut() {
        let mut r = fixtures::report(0);
        let e = r.events[2].clone();
        r.events = vec![e; 50];
        let text = render(&r, Style::PLAIN);
        assert!(text.contains("… and 30 more"), "{text}");
        assert_eq!(text.matches("harvest").count(), MAX_EVENTS);
    }

    #[test]
    fn huge_share_of_mapped_memory() {
        assert_eq!(huge_share(LeafCounts::default()), "-");
        assert_eq!(huge_share(LeafCounts { pages_4k: 512, pages_2m: 1, pages_1g: 0 }), "50%");
    }

    #[test]
    fn bars_scale() {
        assert_eq!(bar(1.0).chars().count(), BAR_WIDTH);
        assert_eq!(bar(0.0), "");
        assert_eq!(bar(0.0001), "▏");
        assert_eq!(bar(0.5).chars().count(), BAR_WIDTH / 2);
    }
}
