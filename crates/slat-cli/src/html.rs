//! The HTML report: one self-contained, XHTML-compatible file (inline CSS, inline SVG charts,
//! no script, no external resource) for a run ([`run_report`]) or a comparison
//! ([`compare_report`]).
//!
//! A run report has, in order: a header (scenario, description, format, seed, overrides,
//! verdict), key numbers, guest memory by leaf size over time (stacked area, events as numbered
//! dashed lines), translation cost over time (TLB misses per 1000 accesses, walk references per
//! access), faults and flushes over time, the why-not-huge bar chart and table, then the phase,
//! event, expectation and counter tables. A comparison report has the side-by-side table and the
//! variants overlaid on the leaf and translation-cost charts.
//!
//! The document is well-formed XML (every element closed, text escaped, no named entities other
//! than XML's own), so XML tools and tests can read it as well as browsers.

use std::fmt::Write as _;

use slat_sim::report::{RunReport, Sample};

use crate::compare::{self, Comparison};
use crate::summary::{final_sample, guest_accesses};
use crate::svg::{esc, Band, Bar, BarChart, Chart, Marker, Scale, Series, COLOR_1G, COLOR_2M, COLOR_4K, SERIES_COLORS};
use crate::units::{bytes, count, percent, ratio, short_count};

/// Width of full-width charts (viewBox units, about CSS px at the page's width).
const FULL: f64 = 1060.0;
/// Width of half-width charts.
const HALF: f64 = 520.0;
/// Dash patterns of overlaid variants, so identical lines stay visible (the first is solid).
const DASHES: [Option<&str>; 4] = [None, Some("7 4"), Some("2 3"), Some("9 3 2 3")];

/// The page's stylesheet (no `<` or `&`, so it stays valid XML text).
const CSS: &str = r#"
:root { --ink: #1f2630; --soft: #5f6b7a; --line: #e3e7ec; --bg: #ffffff; --panel: #f7f8fa; --good: #2b8a3e; --bad: #c92a2a; }
* { box-sizing: border-box; }
html { background: var(--bg); }
body { margin: 0; color: var(--ink); font: 14px/1.5 -apple-system, BlinkMacSystemFont, "Segoe UI", Roboto, "Helvetica Neue", "Noto Sans", "Liberation Sans", Arial, sans-serif; }
main { max-width: 1120px; margin: 0 auto; padding: 28px 30px 40px; }
header { border-bottom: 1px solid var(--line); padding-bottom: 18px; margin-bottom: 8px; }
.kicker { text-transform: uppercase; letter-spacing: 0.08em; font-size: 11px; color: var(--soft); margin: 0 0 4px; }
h1 { font-size: 26px; line-height: 1.2; margin: 0 0 6px; font-weight: 650; }
h1 .verdict { vertical-align: middle; margin-left: 10px; }
.description { margin: 0 0 12px; color: #3b4450; font-size: 15px; }
dl.meta { display: flex; flex-wrap: wrap; gap: 6px 26px; margin: 0; }
dl.meta div { display: flex; gap: 6px; }
dl.meta dt { color: var(--soft); }
dl.meta dd { margin: 0; font-weight: 600; }
code, .mono { font-family: "SFMono-Regular", Menlo, Consolas, "DejaVu Sans Mono", "Liberation Mono", monospace; font-size: 12.5px; }
section { margin-top: 30px; }
h2 { font-size: 17px; margin: 0 0 4px; font-weight: 650; }
p.note { margin: 0 0 10px; color: var(--soft); font-size: 13px; }
.cards { display: grid; grid-template-columns: repeat(4, 1fr); gap: 10px; margin-top: 18px; }
.card { background: var(--panel); border: 1px solid var(--line); border-radius: 8px; padding: 10px 12px; }
.card .label { color: var(--soft); font-size: 12px; }
.card .value { font-size: 20px; font-weight: 650; font-variant-numeric: tabular-nums; }
.card .sub { color: var(--soft); font-size: 12px; }
figure { margin: 0; background: var(--bg); border: 1px solid var(--line); border-radius: 8px; padding: 10px 10px 4px; }
figure svg { display: block; width: 100%; height: auto; font-family: inherit; }
figcaption { color: var(--soft); font-size: 12.5px; padding: 4px 4px 6px; }
.grid2 { display: grid; grid-template-columns: 1fr 1fr; gap: 14px; }
.grid3 { display: grid; grid-template-columns: repeat(3, 1fr); gap: 14px; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
th, td { padding: 5px 10px; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
th { font-weight: 600; color: var(--soft); font-size: 12.5px; background: var(--panel); }
td.num, th.num { text-align: right; white-space: nowrap; }
tbody tr:hover { background: #fafbfc; }
td.rowhead { font-weight: 600; white-space: nowrap; }
table.fit td.num, table.fit th.num, table.fit td.badge-cell { width: 1%; }
table.compare { width: auto; min-width: 55%; }
.scroll { overflow-x: auto; max-width: 100%; }
table.compare td.rowhead, table.compare thead th:first-child { position: sticky; left: 0; background: var(--panel, #fff); z-index: 1; }
table.compare td.num, table.compare th.num { min-width: 120px; }
td.differs { font-weight: 650; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px; font-weight: 700; letter-spacing: 0.04em; }
.pass { background: #e6f4ea; color: var(--good); }
.fail { background: #fdecea; color: var(--bad); }
.swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 6px; vertical-align: baseline; }
.empty { color: var(--soft); font-style: italic; }
footer { margin-top: 36px; padding-top: 12px; border-top: 1px solid var(--line); color: var(--soft); font-size: 12px; }
@media (max-width: 900px) { .grid2, .grid3 { grid-template-columns: 1fr; } .cards { grid-template-columns: repeat(2, 1fr); } }
@media print { main { max-width: none; } figure, table { break-inside: avoid; } }
"#;

/// A value read off a sample, for overlaid charts.
type Metric<'a> = &'a dyn Fn(&Sample) -> f64;

/// Wrap `body` into a complete document titled `title`.
fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html xmlns=\"http://www.w3.org/1999/xhtml\" lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"/>\n<meta name=\"generator\" content=\"slat {}\"/>\n\
         <title>{}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n{body}\
         <footer>Generated by slat {} · report schema {} · self-contained: no scripts, no external resources.</footer>\n\
         </main>\n</body>\n</html>\n",
        env!("CARGO_PKG_VERSION"),
        esc(title),
        env!("CARGO_PKG_VERSION"),
        slat_sim::report::SCHEMA_VERSION,
    )
}

/// A pass/fail badge.
fn verdict(ok: bool) -> &'static str {
    if ok {
        r#"<span class="badge pass">PASS</span>"#
    } else {
        r#"<span class="badge fail">FAIL</span>"#
    }
}

/// A table cell: escaped text, numeric (right-aligned) or not.
#[derive(Debug, Clone)]
struct Cell {
    html: String,
    num: bool,
    badge: bool,
}

impl Cell {
    fn text(s: &str) -> Self {
        Cell { html: esc(s), num: false, badge: false }
    }
    fn num(s: String) -> Self {
        Cell { html: esc(&s), num: true, badge: false }
    }
    fn raw(html: String) -> Self {
        Cell { html, num: false, badge: false }
    }
    /// A cell holding a verdict badge (shrinks to it in `fit` tables).
    fn badge(mut self) -> Self {
        self.badge = true;
        self
    }
}

/// A table; the first column is a row header when `row_heads`.
fn table(headers: &[(&str, bool)], rows: &[Vec<Cell>], row_heads: bool) -> String {
    table_with_class("", headers, rows, row_heads)
}

/// [`table`] with a CSS class on the `<table>` (`fit`: numeric columns shrink to their content).
fn table_with_class(class: &str, headers: &[(&str, bool)], rows: &[Vec<Cell>], row_heads: bool) -> String {
    let mut out = if class.is_empty() {
        String::from("<table><thead><tr>")
    } else {
        format!(r#"<table class="{class}"><thead><tr>"#)
    };
    for (h, num) in headers {
        let _ = write!(out, "<th{}>{}</th>", if *num { r#" class="num""# } else { "" }, esc(h));
    }
    out.push_str("</tr></thead><tbody>");
    for row in rows {
        out.push_str("<tr>");
        for (i, cell) in row.iter().enumerate() {
            let class = match (cell.num, i == 0 && row_heads, cell.badge) {
                (true, _, _) => r#" class="num""#,
                (false, true, _) => r#" class="rowhead""#,
                (false, false, true) => r#" class="badge-cell""#,
                _ => "",
            };
            let _ = write!(out, "<td{class}>{}</td>", cell.html);
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
    out
}

fn figure(svg: &str, caption: &str) -> String {
    format!("<figure>{svg}<figcaption>{}</figcaption></figure>", esc(caption))
}

fn section(id: &str, title: &str, note: &str, content: &str) -> String {
    let note = if note.is_empty() { String::new() } else { format!(r#"<p class="note">{}</p>"#, esc(note)) };
    format!("<section id=\"{id}\"><h2>{}</h2>{note}{content}</section>\n", esc(title))
}

/// Event markers for the charts, numbered from 1 as in the event tables.
fn markers(report: &RunReport) -> Vec<Marker> {
    report
        .events
        .iter()
        .enumerate()
        .map(|(i, e)| Marker {
            x: e.access as f64,
            badge: (i + 1).to_string(),
            label: e.kind.clone(),
            title: format!("{}. {} at access {}: {}", i + 1, e.kind, count(e.access), e.detail),
        })
        .collect()
}

/// Points `(access, f(sample))`.
fn points(samples: &[Sample], f: impl Fn(&Sample) -> f64) -> Vec<(f64, f64)> {
    samples
        .iter()
        .map(|s| {
            let y = f(s);
            (s.access as f64, if y.is_finite() { y } else { 0.0 })
        })
        .collect()
}

/// The phases as bands of the time axis (consecutive, from access 0).
fn bands(report: &RunReport) -> Vec<Band> {
    let mut start = 0u64;
    report
        .phases
        .iter()
        .map(|p| {
            let b = Band { start: start as f64, end: (start + p.accesses) as f64, name: p.name.clone() };
            start += p.accesses;
            b
        })
        .collect()
}

/// The markers with their numbers only (for the small charts: the kinds are in the main chart
/// and the event table).
fn badges(markers: &[Marker]) -> Vec<Marker> {
    markers.iter().map(|m| Marker { label: String::new(), ..m.clone() }).collect()
}

fn chart(title: &str, y_label: &str, y_scale: Scale, series: Vec<Series>, markers: Vec<Marker>, width: f64) -> Chart {
    let marker_labels = !markers.is_empty();
    let markers = if width >= FULL { markers } else { badges(&markers) };
    Chart {
        title: title.into(),
        x_label: "guest accesses".into(),
        y_label: y_label.into(),
        y_scale,
        series,
        stacked: false,
        markers,
        marker_labels,
        bands: Vec::new(),
        width,
        height: if width >= FULL { 340.0 } else { 280.0 },
    }
}

/// Bytes mapped by 1G, 2M and 4K leaves per sample, bottom band first.
fn leaf_bands(samples: &[Sample]) -> Vec<Series> {
    vec![
        Series::new("1 GiB leaves", COLOR_1G, points(samples, |s| (s.leaves.pages_1g << 30) as f64)),
        Series::new("2 MiB leaves", COLOR_2M, points(samples, |s| (s.leaves.pages_2m << 21) as f64)),
        Series::new("4 KiB leaves", COLOR_4K, points(samples, |s| (s.leaves.pages_4k << 12) as f64)),
    ]
}

fn header(kicker: &str, title: &str, description: &str, meta: &[(&str, String)], ok: bool) -> String {
    let mut out = format!(
        r#"<header><p class="kicker">{}</p><h1>{}{}</h1>"#,
        esc(kicker),
        esc(title),
        verdict(ok).replace("class=\"badge", "class=\"verdict badge")
    );
    if !description.is_empty() {
        let _ = write!(out, r#"<p class="description">{}</p>"#, esc(description));
    }
    out.push_str(r#"<dl class="meta">"#);
    for (k, v) in meta {
        let _ = write!(out, "<div><dt>{}</dt><dd>{}</dd></div>", esc(k), esc(v));
    }
    out.push_str("</dl></header>\n");
    out
}

fn card(label: &str, value: &str, sub: &str) -> String {
    format!(
        r#"<div class="card"><div class="label">{}</div><div class="value">{}</div><div class="sub">{}</div></div>"#,
        esc(label),
        esc(value),
        esc(sub)
    )
}

fn key_numbers(report: &RunReport) -> String {
    let leaves = report.final_leaves();
    let last = final_sample(report);
    let t = &report.totals;
    let mapped = leaves.mapped_bytes().max(1) as f64;
    let mut out = String::from(r#"<div class="cards">"#);
    // Peaks over the samples and the phases, with the phase they fell in.
    let phase_at = |access: u64| {
        let mut start = 0;
        for p in &report.phases {
            if access <= start + p.accesses {
                return p.name.clone();
            }
            start += p.accesses;
        }
        String::new()
    };
    let peak_of = |f: &dyn Fn(&Sample) -> u64| {
        report.samples.iter().map(|s| (f(s), s.access)).fold((0, 0), |a, b| if b.0 > a.0 { b } else { a })
    };
    let mapped_peak = peak_of(&|s| s.leaves.mapped_bytes());
    let mapped_sub = if mapped_peak.0 > leaves.mapped_bytes() {
        format!("at the end of the run · peak {} during {}", bytes(mapped_peak.0), phase_at(mapped_peak.1))
    } else {
        "at the end of the run, also the peak".to_string()
    };
    out.push_str(&card("mapped guest memory, end", &bytes(leaves.mapped_bytes()), &mapped_sub));
    let (peak_4k_phase, peak_4k_value) = report
        .phases
        .iter()
        .map(|p| (p.name.clone(), p.peak_4k))
        .fold((String::new(), 0), |a, b| if b.1 > a.1 { b } else { a });
    for (label, n, shift, peak) in [
        ("1 GiB leaves, end", leaves.pages_1g, 30, peak_of(&|s| s.leaves.pages_1g)),
        ("2 MiB leaves, end", leaves.pages_2m, 21, peak_of(&|s| s.leaves.pages_2m)),
        ("4 KiB leaves, end", leaves.pages_4k, 12, peak_of(&|s| s.leaves.pages_4k)),
    ] {
        let share = percent((n << shift) as f64 / mapped);
        let sub = if shift == 12 && peak_4k_value > peak.0 {
            format!("{share} of mapped · peak {} during {peak_4k_phase}", count(peak_4k_value))
        } else if peak.0 > n {
            let during = phase_at(peak.1);
            format!(
                "{share} of mapped · peak {}{}",
                count(peak.0),
                if during.is_empty() { String::new() } else { format!(" during {during}") }
            )
        } else {
            format!("{share} of mapped · also the peak")
        };
        out.push_str(&card(label, &count(n), &sub));
    }
    out.push_str(&card("TLB misses / 1k accesses", &ratio(t.tlb_misses_per_1k), "whole run"));
    out.push_str(&card("walk refs / access", &ratio(t.walk_refs_per_access), "whole run"));
    out.push_str(&card("stage-2 faults", &count(last.faults), &format!("{} retries", count(last.retries))));
    let tables_peak = peak_of(&|s| s.table_pages * 4096);
    let tables_peak = (tables_peak.0.max(t.table_bytes), tables_peak.1);
    let during = phase_at(tables_peak.1);
    out.push_str(&card(
        "page-table memory, end",
        &bytes(t.table_bytes),
        &format!(
            "peak {}{} · bookkeeping {}",
            bytes(tables_peak.0),
            if during.is_empty() || tables_peak.0 == t.table_bytes {
                String::new()
            } else {
                format!(" during {during}")
            },
            bytes(t.bookkeeping_bytes)
        ),
    ));
    out.push_str("</div>\n");
    out
}

fn why_section(report: &RunReport) -> String {
    let note = "At the end of the run: 4 KiB guest pages mapped with leaves smaller than 1 GiB, by the first reason that kept them small. Per phase: the decisions made during each phase.";
    if report.why_not_huge.is_empty() {
        return section(
            "why-not-huge",
            "Why not huge",
            note,
            &format!(
                r#"<p class="empty">Nothing to explain at the end of the run: every mapped page sits in a 1 GiB leaf.</p>{}"#,
                why_by_phase(report)
            ),
        );
    }
    let bars = report
        .why_not_huge
        .iter()
        .map(|r| Bar {
            label: r.reason.clone(),
            value: r.share,
            value_text: format!("{} · {}", bytes(r.pages << 12), percent(r.share)),
            title: format!("{}: {} ({} pages)", r.reason, r.description, count(r.pages)),
        })
        .collect();
    let chart = BarChart {
        title: "Why guest memory is not mapped with 1 GiB leaves".into(),
        x_label: "share of mapped guest memory".into(),
        scale: Scale::Percent,
        bars,
        color: COLOR_4K.into(),
        width: FULL,
    };
    let rows: Vec<Vec<Cell>> = report
        .why_not_huge
        .iter()
        .map(|r| {
            vec![
                Cell::raw(format!("<code>{}</code>", esc(&r.reason))),
                Cell::text(&r.description),
                Cell::num(count(r.pages)),
                Cell::num(bytes(r.pages << 12)),
                Cell::num(percent(r.share)),
            ]
        })
        .collect();
    let tbl = table(
        &[("reason", false), ("what it means", false), ("4K pages", true), ("memory", true), ("share", true)],
        &rows,
        true,
    );
    section(
        "why-not-huge",
        "Why not huge",
        note,
        &format!(
            "<h3>At the end of the run</h3>{}<div style=\"height:12px\"></div>{tbl}{}",
            figure(&chart.render(), "Bar length: share of all mapped guest memory."),
            why_by_phase(report)
        ),
    )
}

/// Leaf-size decisions below 1 GiB per phase and reason: the why-not-huge story over time.
fn why_by_phase(report: &RunReport) -> String {
    let mut reasons: Vec<&str> = Vec::new();
    for p in &report.phases {
        for (r, _) in &p.why_not_huge {
            if !reasons.contains(&r.as_str()) {
                reasons.push(r);
            }
        }
    }
    if reasons.is_empty() {
        return String::new();
    }
    let rows: Vec<Vec<Cell>> = report
        .phases
        .iter()
        .map(|p| {
            let mut row = vec![Cell::text(&p.name)];
            for r in &reasons {
                let n = p.why_not_huge.iter().find(|(x, _)| x == r).map_or(0, |(_, n)| *n);
                row.push(Cell::num(if n == 0 { "·".to_string() } else { count(n) }));
            }
            row
        })
        .collect();
    let mut headers: Vec<(&str, bool)> = vec![("phase", false)];
    headers.extend(reasons.iter().map(|r| (*r, true)));
    format!(
        r#"<h3>Per phase</h3><p class="note">Leaf-size decisions (faults, splits, recoveries) that chose less than 1 GiB during each phase, by reason.</p>{}"#,
        table(&headers, &rows, true)
    )
}

fn phases_table(report: &RunReport) -> String {
    if report.phases.is_empty() {
        return r#"<p class="empty">No phases.</p>"#.into();
    }
    let change = |a: u64, b: u64| if a == b { count(b) } else { format!("{} → {}", count(a), count(b)) };
    let rows: Vec<Vec<Cell>> = report
        .phases
        .iter()
        .map(|p| {
            vec![
                Cell::text(&p.name),
                Cell::num(short_count(p.accesses as f64)),
                Cell::num(change(p.leaves_before.pages_4k, p.leaves_after.pages_4k)),
                Cell::num(change(p.leaves_before.pages_2m, p.leaves_after.pages_2m)),
                Cell::num(change(p.leaves_before.pages_1g, p.leaves_after.pages_1g)),
                Cell::num(count(p.peak_4k)),
                Cell::num(count(p.faults)),
                Cell::num(ratio(p.tlb_misses_per_1k)),
                Cell::num(ratio(p.walk_refs_per_access)),
            ]
        })
        .collect();
    table(
        &[
            ("phase", false),
            ("accesses", true),
            ("4K leaves", true),
            ("2M leaves", true),
            ("1G leaves", true),
            ("peak 4K", true),
            ("faults", true),
            ("TLB misses/1k", true),
            ("walk refs/access", true),
        ],
        &rows,
        true,
    )
}

fn events_table(report: &RunReport) -> String {
    if report.events.is_empty() {
        return r#"<p class="empty">No events.</p>"#.into();
    }
    let rows: Vec<Vec<Cell>> = report
        .events
        .iter()
        .enumerate()
        .map(|(i, e)| {
            vec![
                Cell::num((i + 1).to_string()),
                Cell::num(count(e.access)),
                Cell::raw(format!("<code>{}</code>", esc(&e.kind))),
                Cell::text(&e.detail),
            ]
        })
        .collect();
    table_with_class("fit", &[("#", true), ("at access", true), ("event", false), ("detail", false)], &rows, false)
}

fn expectations_table(report: &RunReport) -> String {
    let mut rows: Vec<Vec<Cell>> = report
        .expectations
        .iter()
        .map(|e| {
            vec![
                Cell::raw(verdict(e.ok).into()).badge(),
                Cell::raw(format!("<code>{}</code>", esc(&e.expectation))),
                Cell::num(e.actual.clone()),
            ]
        })
        .collect();
    rows.push(vec![
        Cell::raw(verdict(report.totals.isolation_violations == 0).into()).badge(),
        Cell::text("no isolation violation (stale TLB entry or I1) caught by the hardware model"),
        Cell::num(count(report.totals.isolation_violations)),
    ]);
    table_with_class("fit", &[("result", false), ("expectation", false), ("actual", true)], &rows, false)
}

fn counters_tables(report: &RunReport) -> String {
    let t = &report.totals;
    let one = |title: &str, items: &[(String, u64)]| {
        let rows: Vec<Vec<Cell>> = items
            .iter()
            .map(|(k, v)| vec![Cell::raw(format!("<code>{}</code>", esc(k))), Cell::num(count(*v))])
            .collect();
        if rows.is_empty() {
            format!(
                r#"<div><table><thead><tr><th>{}</th></tr></thead></table><p class="empty">none</p></div>"#,
                esc(title)
            )
        } else {
            format!("<div>{}</div>", table(&[(title, false), ("", true)], &rows, false))
        }
    };
    format!(
        r#"<div class="grid3">{}{}{}</div>"#,
        one("MMU", &t.mmu),
        one("hardware model", &t.hw),
        one("host", &t.host)
    )
}

/// The HTML report of one run.
/// The command line that made a report, and the host it ran on, for the report's header.
pub fn provenance() -> (String, String) {
    let args: Vec<String> = std::env::args()
        .enumerate()
        .map(|(i, a)| if i == 0 { "slat".to_string() } else { a })
        .map(|a| {
            if a.is_empty() || a.contains(|c: char| c.is_whitespace() || "\"'$`\\{}[]*?;&|<>()".contains(c)) {
                format!("'{}'", a.replace('\'', "'\\''"))
            } else {
                a
            }
        })
        .collect();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
    let host = format!("{host} ({}, slat {})", std::env::consts::ARCH, env!("CARGO_PKG_VERSION"));
    (args.join(" "), host.trim().to_string())
}

/// The HTML report of one run.
pub fn run_report(report: &RunReport) -> String {
    let mut body = String::new();
    let (command, host) = provenance();
    let overrides = if report.overrides.is_empty() { "none".to_string() } else { report.overrides.join(", ") };
    body.push_str(&header(
        "slat simulation report",
        &report.scenario,
        &report.description,
        &[
            ("format", report.format.clone()),
            ("seed", report.seed.to_string()),
            ("guest accesses", count(guest_accesses(report))),
            ("phases", report.phases.len().to_string()),
            ("events", report.events.len().to_string()),
            ("overrides", overrides),
            ("command", command),
            ("host", host),
        ],
        report.passed(),
    ));
    body.push_str(&key_numbers(report));

    let s = &report.samples;
    let marks = markers(report);
    let phases = bands(report);
    let mut leaves = chart(
        "Guest memory by leaf size over time",
        "guest memory mapped",
        Scale::Bytes,
        leaf_bands(s),
        marks.clone(),
        FULL,
    )
    .with_bands(phases.clone());
    leaves.stacked = true;
    leaves.marker_labels = true;
    // Small but decisive series, each on its own axis: 4 KiB leaves are a hairline next to
    // huge leaves in the stacked chart, page-table memory is invisible there.
    let small_4k = chart(
        "Guest memory mapped by 4 KiB leaves",
        "bytes",
        Scale::Bytes,
        vec![Series::new("mapped by 4 KiB leaves", COLOR_4K, points(s, |x| (x.leaves.pages_4k << 12) as f64))],
        marks.clone(),
        HALF,
    )
    .with_bands(phases.clone());
    let small_tables = chart(
        "Stage-2 page-table memory",
        "bytes",
        Scale::Bytes,
        vec![Series::new("page-table memory", SERIES_COLORS[3], points(s, |x| (x.table_pages * 4096) as f64))],
        marks.clone(),
        HALF,
    )
    .with_bands(phases.clone());
    let small_fig = format!(
        r#"<div class="grid2">{}{}</div>"#,
        figure(&small_4k.render(), "4 KiB leaves and page-table memory on their own axes"),
        figure(&small_tables.render(), "stage-2 page-table memory (its peak is in the cards above)")
    );
    body.push_str(&section(
        "leaves",
        "Guest memory by leaf size",
        "Guest memory mapped by 1 GiB, 2 MiB and 4 KiB stage-2 leaves (stacked). Dashed lines mark events, numbered as in the event table.",
        &format!(
            "{}{}",
            figure(&leaves.render(), "x: guest accesses executed · y: bytes of guest memory mapped by each leaf size"),
            small_fig
        ),
    ));

    let tlb = chart(
        "TLB misses per 1000 accesses",
        "misses / 1000 accesses",
        Scale::Ratio,
        vec![Series::new("TLB misses per 1000 accesses", SERIES_COLORS[0], points(s, |x| x.tlb_misses_per_1k))],
        marks.clone(),
        HALF,
    )
    .with_bands(phases.clone());
    let walk = chart(
        "Page-walk memory references per access",
        "walk refs / access",
        Scale::Ratio,
        vec![Series::new("walk memory references per access", SERIES_COLORS[3], points(s, |x| x.walk_refs_per_access))],
        marks.clone(),
        HALF,
    )
    .with_bands(phases.clone());
    body.push_str(&section(
        "translation",
        "Translation cost",
        "Over each sampling interval: TLB misses per 1000 guest accesses, and memory references spent in 2D page walks per access.",
        &format!(
            r#"<div class="grid2">{}{}</div>"#,
            figure(&tlb.render(), "TLB misses per 1000 accesses"),
            figure(&walk.render(), "walk memory references per access")
        ),
    ));

    let faults = chart(
        "Stage-2 faults and retries (cumulative)",
        "count",
        Scale::Count,
        vec![
            Series::new("faults", SERIES_COLORS[0], points(s, |x| x.faults as f64)),
            Series::new("retries", SERIES_COLORS[1], points(s, |x| x.retries as f64)),
        ],
        marks.clone(),
        HALF,
    )
    .with_bands(phases.clone());
    let changes = chart(
        "Splits, recoveries and TLB flushes (cumulative)",
        "count",
        Scale::Count,
        vec![
            Series::new("splits", COLOR_4K, points(s, |x| x.splits as f64)),
            Series::new("recoveries", SERIES_COLORS[2], points(s, |x| x.recoveries as f64)),
            Series::new("flushes", SERIES_COLORS[3], points(s, |x| x.flushes as f64)),
        ],
        marks,
        HALF,
    )
    .with_bands(phases.clone());
    body.push_str(&section(
        "faults",
        "Faults and flushes",
        "Cumulative counts since the start of the run.",
        &format!(
            r#"<div class="grid2">{}{}</div>"#,
            figure(&faults.render(), "stage-2 faults and fault retries"),
            figure(&changes.render(), "huge leaves split, huge blocks recovered, TLB flush operations")
        ),
    ));

    body.push_str(&why_section(report));
    body.push_str(&section(
        "phases",
        "Phases",
        "Leaf counts before → after each phase, with the peak of 4K leaves during it.",
        &phases_table(report),
    ));
    body.push_str(&section("events", "Events", "", &events_table(report)));
    body.push_str(&section("expectations", "Expectations", "", &expectations_table(report)));
    body.push_str(&section("counters", "Final counters", "", &counters_tables(report)));
    page(&format!("slat · {}", report.scenario), &body)
}

/// The HTML report of a comparison.
pub fn compare_report(cmp: &Comparison) -> String {
    let mut body = String::new();
    let first = cmp.variants.first().map(|v| &v.report);
    let (format, seed, description) =
        first.map(|r| (r.format.clone(), r.seed.to_string(), r.description.clone())).unwrap_or_default();
    let mut meta = vec![
        ("format", format),
        ("seed", seed),
        ("varying", cmp.keys.join(" × ")),
        ("variants", cmp.variants.len().to_string()),
    ];
    if !cmp.common.is_empty() {
        meta.push(("overrides", cmp.common.join(", ")));
    }
    body.push_str(&header(
        "slat comparison report",
        &cmp.scenario,
        &description,
        &meta,
        cmp.variants.iter().all(|v| v.report.passed()),
    ));

    // The side-by-side table, variant columns with their colour.
    let mut headers: Vec<(String, bool)> = vec![(String::new(), false)];
    headers.extend(cmp.variants.iter().map(|v| (v.label.clone(), true)));
    // Many variants scroll sideways inside the table, the row names staying in view.
    let mut html = String::from(r#"<div class="scroll"><table class="compare"><thead><tr><th></th>"#);
    for (i, v) in cmp.variants.iter().enumerate() {
        let _ = write!(
            html,
            r#"<th class="num"><span class="swatch" style="background:{}"></span>{}</th>"#,
            SERIES_COLORS[i % SERIES_COLORS.len()],
            esc(&v.label)
        );
    }
    html.push_str("</tr></thead><tbody>");
    for row in compare::rows(cmp) {
        let _ = write!(html, r#"<tr><td class="rowhead">{}</td>"#, esc(row.label));
        let first = row.cells.first().cloned().unwrap_or_default();
        for (cell, ok) in row.cells.iter().zip(&row.ok) {
            let class = if *cell != first { "num differs" } else { "num" };
            match ok {
                Some(ok) => {
                    let _ = write!(html, r#"<td class="{class}">{} {}</td>"#, verdict(*ok), esc(cell));
                }
                None => {
                    let _ = write!(html, r#"<td class="{class}">{}</td>"#, esc(cell));
                }
            }
        }
        html.push_str("</tr>");
    }
    html.push_str("</tbody></table></div>");
    body.push_str(&section(
        "table",
        "Side by side",
        "Every variant ran the same scenario with the same seed; only the varied settings differ. Bold: differs from the first variant.",
        &html,
    ));

    let marks = first.map(markers).unwrap_or_default();
    let phases = first.map(bands).unwrap_or_default();
    let overlay = |f: Metric| -> Vec<Series> {
        cmp.variants
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let mut s =
                    Series::new(v.label.clone(), SERIES_COLORS[i % SERIES_COLORS.len()], points(&v.report.samples, f));
                s.dash = DASHES[i % DASHES.len()];
                s
            })
            .collect()
    };
    let any_1g = cmp.variants.iter().any(|v| v.report.samples.iter().any(|s| s.leaves.pages_1g > 0));
    let mut leaf_figs = String::new();
    let sizes: [(&str, Metric); 3] = [
        ("4 KiB leaves", &|s: &Sample| (s.leaves.pages_4k << 12) as f64),
        ("2 MiB leaves", &|s: &Sample| (s.leaves.pages_2m << 21) as f64),
        ("1 GiB leaves", &|s: &Sample| (s.leaves.pages_1g << 30) as f64),
    ];
    for (i, (name, f)) in sizes.iter().enumerate() {
        if i == 2 && !any_1g {
            continue;
        }
        let mut c = chart(
            &format!("Guest memory mapped by {name}"),
            "guest memory mapped",
            Scale::Bytes,
            overlay(*f),
            marks.clone(),
            FULL,
        )
        .with_bands(phases.clone());
        c.marker_labels = i == 0;
        c.height = 300.0;
        let _ = write!(
            leaf_figs,
            "{}",
            figure(&c.render(), &format!("Guest memory mapped by {name}, one line per variant."))
        );
        leaf_figs.push_str(r#"<div style="height:12px"></div>"#);
    }
    if !any_1g {
        leaf_figs.push_str(r#"<p class="note">No variant mapped any 1 GiB leaf.</p>"#);
    }
    body.push_str(&section(
        "leaves",
        "Guest memory by leaf size",
        "Dashed lines mark the events of the first variant.",
        &leaf_figs,
    ));

    let tlb = chart(
        "TLB misses per 1000 accesses",
        "misses / 1000 accesses",
        Scale::Ratio,
        overlay(&|s| s.tlb_misses_per_1k),
        marks.clone(),
        HALF,
    )
    .with_bands(phases.clone());
    let walk = chart(
        "Page-walk memory references per access",
        "walk refs / access",
        Scale::Ratio,
        overlay(&|s| s.walk_refs_per_access),
        marks,
        HALF,
    )
    .with_bands(phases.clone());
    body.push_str(&section(
        "translation",
        "Translation cost",
        "Over each sampling interval, one line per variant.",
        &format!(
            r#"<div class="grid2">{}{}</div>"#,
            figure(&tlb.render(), "TLB misses per 1000 accesses"),
            figure(&walk.render(), "walk memory references per access")
        ),
    ));

    let mut failures = String::new();
    for v in &cmp.variants {
        for f in crate::summary::failures(&v.report) {
            let _ = write!(failures, "<li><strong>{}</strong>: {}</li>", esc(&v.label), esc(&f));
        }
    }
    if !failures.is_empty() {
        body.push_str(&section("failures", "Failed expectations", "", &format!("<ul>{failures}</ul>")));
    }
    page(&format!("slat · compare {}", cmp.scenario), &body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    fn xml(doc: &str) -> roxmltree::Document<'_> {
        let opts = roxmltree::ParsingOptions { allow_dtd: true, ..Default::default() };
        roxmltree::Document::parse_with_options(doc, opts).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn run_report_is_wellformed_and_complete() {
        let html = run_report(&fixtures::report(0));
        let doc = xml(&html);
        let svgs = doc.descendants().filter(|n| n.has_tag_name(("http://www.w3.org/2000/svg", "svg"))).count();
        assert_eq!(svgs, 8);
        for id in ["leaves", "translation", "faults", "why-not-huge", "phases", "events", "expectations", "counters"] {
            assert!(doc.descendants().any(|n| n.attribute("id") == Some(id)), "section {id}");
        }
        assert!(!html.contains("<script"));
        assert!(
            !html.contains("http://") || html.matches("http://").count() == html.matches("xmlns=\"http://").count()
        );
        assert!(html.contains("&lt;&amp; &quot;quoted&quot;&gt;"));
    }

    #[test]
    fn empty_report_is_wellformed() {
        let html = run_report(&RunReport::default());
        xml(&html);
        assert!(html.contains("Nothing to explain"));
    }

    #[test]
    fn compare_report_is_wellformed() {
        let cmp = fixtures::comparison();
        let html = compare_report(&cmp);
        let doc = xml(&html);
        assert!(doc.descendants().filter(|n| n.has_tag_name(("http://www.w3.org/2000/svg", "svg"))).count() >= 4);
        assert!(html.contains("policy.recover"));
    }
}
