//! `slat compare`: the variants of a scenario (the cartesian product of `--vary key=v1,v2`
//! specs), run on identical inputs, shown side by side.
//!
//! This module parses and expands the specs and lays out the comparison; [`rows`] is shared by
//! the terminal table ([`render`]) and the HTML report so both show the same numbers.

use std::fmt::Write as _;

use serde::Serialize;
use slat_sim::report::RunReport;

use crate::error::CliError;
use crate::style::Style;
use crate::summary::{failures, final_sample, guest_accesses};
use crate::table::{Align, TextTable};
use crate::units::{bytes, count, ratio};

/// Most variants one comparison may expand to (the cartesian product grows fast).
pub const MAX_VARIANTS: usize = 64;

/// One `--vary key=v1,v2,...` spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VarySpec {
    /// Scenario field, as for `--set`.
    pub key: String,
    /// Values to try, in order.
    pub values: Vec<String>,
}

/// Split `v1,v2,...` at the commas outside quotes (`"a,b"`, `'a,b'`), brackets and braces
/// (`[1, 2]`, `{ entries = 64, ways = 4 }`), so values may be any TOML value.
fn split_values(text: &str) -> Result<Vec<String>, String> {
    let mut values = Vec::new();
    let mut current = String::new();
    let mut quote: Option<char> = None;
    let mut depth = 0i32;
    let mut escaped = false;
    for c in text.chars() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' && q == '"' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
            }
            None => match c {
                '"' | '\'' => quote = Some(c),
                '[' | '{' => depth += 1,
                ']' | '}' => depth -= 1,
                ',' if depth == 0 => {
                    values.push(current.trim().to_string());
                    current.clear();
                    continue;
                }
                _ => {}
            },
        }
        current.push(c);
    }
    if let Some(q) = quote {
        return Err(format!("unterminated {q} quote"));
    }
    if depth != 0 {
        return Err("unbalanced brackets".into());
    }
    values.push(current.trim().to_string());
    Ok(values)
}

/// Parse `key=v1,v2[,...]`: a non-empty key, then one or more non-empty, distinct values
/// (commas inside quotes, brackets or braces belong to the value).
pub fn parse_vary(spec: &str) -> Result<VarySpec, CliError> {
    let bad = |why: &str| CliError::input(format!("--vary {spec:?}: {why} (expected key=value1,value2,...)"));
    let Some((key, values)) = spec.split_once('=') else {
        return Err(bad("no '='"));
    };
    let key = key.trim();
    if key.is_empty() {
        return Err(bad("empty key"));
    }
    let values: Vec<String> = split_values(values).map_err(|why| bad(&why))?;
    if values.iter().any(String::is_empty) {
        return Err(bad("empty value"));
    }
    for (i, v) in values.iter().enumerate() {
        if values[..i].contains(v) {
            return Err(bad(&format!("value {v:?} given twice")));
        }
    }
    Ok(VarySpec { key: key.to_string(), values })
}

/// Whether one dotted key lies under or over the other (`vm.tlb` and `vm.tlb.stlb`).
fn overlaps(a: &str, b: &str) -> bool {
    let under =
        |x: &str, y: &str| x == y || x.strip_prefix(y).is_some_and(|r| r.starts_with('.') || r.starts_with('['));
    under(a, b) || under(b, a)
}

/// Refuse a `--seed` or `--set` that would override a varied key in every variant (the
/// variants would all run the same scenario under different labels).
pub fn check_conflicts(specs: &[VarySpec], seed: Option<u64>, sets: &[String]) -> Result<(), CliError> {
    for s in specs {
        if let (Some(seed), true) = (seed, s.key == "seed") {
            return Err(CliError::input(format!(
                "--seed {seed} conflicts with --vary seed={}: every variant would run with seed {seed}; drop one of them",
                s.values.join(",")
            )));
        }
        for set in sets {
            let key = set.split_once('=').map_or(set.as_str(), |(k, _)| k).trim();
            if overlaps(key, &s.key) {
                return Err(CliError::input(format!(
                    "--set {set} conflicts with --vary {}=...: the variants would not differ in {key}; drop one of them",
                    s.key
                )));
            }
        }
    }
    Ok(())
}

/// Every combination of the specs' values, the first spec varying slowest. Errors if a key is
/// varied twice or the product exceeds [`MAX_VARIANTS`].
pub fn expand(specs: &[VarySpec]) -> Result<Vec<Vec<(String, String)>>, CliError> {
    if specs.is_empty() {
        return Err(CliError::input("compare needs at least one --vary key=value1,value2,..."));
    }
    for (i, s) in specs.iter().enumerate() {
        if specs[..i].iter().any(|o| o.key == s.key) {
            return Err(CliError::input(format!("--vary {}: the key is varied twice", s.key)));
        }
    }
    let total = specs.iter().try_fold(1usize, |n, s| n.checked_mul(s.values.len())).unwrap_or(usize::MAX);
    if total > MAX_VARIANTS {
        return Err(CliError::input(format!(
            "--vary: {total} variants is too many (at most {MAX_VARIANTS}); vary fewer keys or values"
        )));
    }
    let mut out: Vec<Vec<(String, String)>> = vec![Vec::new()];
    for s in specs {
        out = out
            .into_iter()
            .flat_map(|prefix| {
                s.values.iter().map(move |v| {
                    let mut p = prefix.clone();
                    p.push((s.key.clone(), v.clone()));
                    p
                })
            })
            .collect();
    }
    Ok(out)
}

/// A variant's column label: its values, `/`-separated in `--vary` order.
pub fn label(settings: &[(String, String)]) -> String {
    settings.iter().map(|(_, v)| v.as_str()).collect::<Vec<_>>().join(" / ")
}

/// One variant and its run.
#[derive(Debug, Clone, Serialize)]
pub struct Variant {
    /// Column label ([`label`]).
    pub label: String,
    /// The varied settings, `(key, value)` in `--vary` order.
    pub settings: Vec<(String, String)>,
    /// The run.
    pub report: RunReport,
}

/// A whole comparison (also its JSON form).
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// JSON schema version (that of the embedded run reports).
    pub schema: u32,
    /// Scenario name.
    pub scenario: String,
    /// The varied keys, in `--vary` order.
    pub keys: Vec<String>,
    /// `--set` overrides common to every variant (`key=value`).
    pub common: Vec<String>,
    /// The variants, in expansion order.
    pub variants: Vec<Variant>,
}

impl Comparison {
    /// Whether every variant passed.
    pub fn passed(&self) -> bool {
        self.variants.iter().all(|v| v.report.passed())
    }
}

/// One row of the side-by-side table.
#[derive(Debug, Clone)]
pub struct Row {
    /// What the row shows.
    pub label: &'static str,
    /// One cell per variant.
    pub cells: Vec<String>,
    /// Per variant, a verdict for verdict rows (`None` for plain numbers).
    pub ok: Vec<Option<bool>>,
}

/// The most 4K leaves at any time: the phases track their peaks between samples (a short
/// phase of split leaves can fall between two samples of a long run).
fn peak_4k(r: &RunReport) -> u64 {
    let sampled = r.samples.iter().map(|s| s.leaves.pages_4k).max().unwrap_or(0);
    r.phases.iter().map(|p| p.peak_4k).max().unwrap_or(0).max(sampled)
}

/// The rows of the side-by-side table.
pub fn rows(cmp: &Comparison) -> Vec<Row> {
    type Getter = fn(&RunReport) -> String;
    let numbers: [(&'static str, Getter); 15] = [
        ("4K leaves (final)", |r| count(r.final_leaves().pages_4k)),
        ("2M leaves (final)", |r| count(r.final_leaves().pages_2m)),
        ("1G leaves (final)", |r| count(r.final_leaves().pages_1g)),
        ("mapped memory (final)", |r| bytes(r.final_leaves().mapped_bytes())),
        ("peak 4K leaves", |r| count(peak_4k(r))),
        ("faults", |r| count(final_sample(r).faults)),
        ("retries", |r| count(final_sample(r).retries)),
        ("splits", |r| count(final_sample(r).splits)),
        ("recoveries", |r| count(final_sample(r).recoveries)),
        ("flushes", |r| count(final_sample(r).flushes)),
        ("TLB misses / 1k accesses", |r| ratio(r.totals.tlb_misses_per_1k)),
        ("walk refs / access", |r| ratio(r.totals.walk_refs_per_access)),
        ("page-table memory", |r| bytes(r.totals.table_bytes)),
        ("bookkeeping", |r| bytes(r.totals.bookkeeping_bytes)),
        ("guest accesses", |r| count(guest_accesses(r))),
    ];
    let n = cmp.variants.len();
    let mut out: Vec<Row> = numbers
        .iter()
        .map(|(label, get)| Row {
            label,
            cells: cmp.variants.iter().map(|v| get(&v.report)).collect(),
            ok: vec![None; n],
        })
        .collect();
    out.push(Row {
        label: "expectations",
        cells: cmp
            .variants
            .iter()
            .map(|v| {
                let held = v.report.expectations.iter().filter(|e| e.ok).count();
                format!("{held}/{}", v.report.expectations.len())
            })
            .collect(),
        ok: cmp.variants.iter().map(|v| Some(v.report.passed())).collect(),
    });
    out
}

/// The terminal rendering: header, the side-by-side table, failures and the verdict.
pub fn render(cmp: &Comparison, style: Style) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}", style.bold(&format!("slat compare · {}", cmp.scenario)));
    if let Some(first) = cmp.variants.first() {
        for line in wrap(&first.report.description, style.width) {
            let _ = writeln!(out, "{line}");
        }
        let _ = writeln!(
            out,
            "{}",
            style.dim(&format!(
                "format {} · seed {} · {} variants, same inputs",
                first.report.format,
                first.report.seed,
                cmp.variants.len()
            ))
        );
    }
    if !cmp.common.is_empty() {
        for line in wrap(&format!("overrides: {}", cmp.common.join(", ")), style.width) {
            let _ = writeln!(out, "{}", style.dim(&line));
        }
    }
    let columns = format!("columns: {}", cmp.keys.join(" / "));
    if width(&columns) + 14 <= style.width {
        let _ = writeln!(out, "\n{}  {}", style.bold("Side by side"), style.dim(&columns));
    } else {
        let _ = writeln!(out, "\n{}", style.bold("Side by side"));
        for line in wrap(&columns, style.width) {
            let _ = writeln!(out, "{}", style.dim(&line));
        }
    }
    side_by_side(&mut out, cmp, style);
    out.push('\n');
    if cmp.passed() {
        let _ = writeln!(out, "result: {} (every variant met its expectations)", style.verdict(true));
    } else {
        let failed = cmp.variants.iter().filter(|v| !v.report.passed()).count();
        let _ = writeln!(out, "result: {} ({failed} of {} variants failed)", style.verdict(false), cmp.variants.len());
        for v in &cmp.variants {
            for f in failures(&v.report) {
                for line in wrap(&format!("{}: {f}", v.label), style.width.saturating_sub(2)) {
                    let _ = writeln!(out, "  {}", style.bad(&line));
                }
            }
        }
    }
    out
}

/// The rows' cells as printed (verdict rows say PASS or FAIL).
fn printed_rows(cmp: &Comparison) -> Vec<(&'static str, Vec<String>)> {
    rows(cmp)
        .into_iter()
        .map(|row| {
            let cells = row
                .cells
                .iter()
                .zip(&row.ok)
                .map(|(c, ok)| match ok {
                    Some(true) => format!("PASS {c}"),
                    Some(false) => format!("FAIL {c}"),
                    None => c.clone(),
                })
                .collect();
            (row.label, cells)
        })
        .collect()
}

/// `text` in lines of at most `max` columns, broken at spaces (a word longer than a line is
/// cut).
fn wrap(text: &str, max: usize) -> Vec<String> {
    let max = max.max(20);
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        let mut word: Vec<char> = word.chars().collect();
        while word.len() > max {
            if !line.is_empty() {
                lines.push(std::mem::take(&mut line));
            }
            lines.push(word.drain(..max).collect());
        }
        let word: String = word.into_iter().collect();
        if !line.is_empty() && width(&line) + 1 + width(&word) > max {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(&word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// Display width (one column per `char`).
fn width(s: &str) -> usize {
    s.chars().count()
}

/// A variant's label in lines for a column header: broken after ` / ` so that each line is at
/// most `room` columns (or one value, when a value is wider).
fn wrap_label(label: &str, room: usize) -> Vec<String> {
    let parts: Vec<&str> = label.split(" / ").collect();
    let mut lines: Vec<String> = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        let piece = if i + 1 < parts.len() { format!("{part} /") } else { part.to_string() };
        match lines.last_mut() {
            Some(last) if width(last) + 1 + width(&piece) <= room => {
                last.push(' ');
                last.push_str(&piece);
            }
            _ => lines.push(piece),
        }
    }
    lines
}

/// Consecutive groups of variant columns such that each group's table, indented by two, fits
/// `max` columns; `None` when a single variant's column does not fit.
fn column_groups(labels: &[usize], cells: &[usize], first: usize, max: usize) -> Option<Vec<std::ops::Range<usize>>> {
    let mut groups = Vec::new();
    let (mut start, mut used) = (0, 2 + first);
    for i in 0..labels.len() {
        let w = 2 + labels[i].max(cells[i]);
        if 2 + first + w > max {
            return None;
        }
        if used + w > max {
            groups.push(start..i);
            start = i;
            used = 2 + first;
        }
        used += w;
    }
    groups.push(start..labels.len());
    Some(groups)
}

/// The side-by-side table within the terminal's width: all variants in one table when it fits,
/// else the variants in groups of columns (each group a table of its own, the row names
/// repeated), else one variant per block (a variant's label wider than the terminal).
fn side_by_side(out: &mut String, cmp: &Comparison, style: Style) {
    let rows = printed_rows(cmp);
    let first = rows.iter().map(|(l, _)| width(l)).max().unwrap_or(0);
    let labels: Vec<usize> = cmp.variants.iter().map(|v| width(&v.label)).collect();
    let cells: Vec<usize> =
        (0..cmp.variants.len()).map(|i| rows.iter().map(|(_, c)| width(&c[i])).max().unwrap_or(0)).collect();
    let n = cmp.variants.len();
    // Labels on one line when everything fits side by side, else broken after their ` / `s.
    let one_line = column_groups(&labels, &cells, first, style.width).is_some_and(|g| g.len() == 1);
    let headers: Vec<Vec<String>> = cmp
        .variants
        .iter()
        .zip(&cells)
        .map(|(v, &c)| if one_line { vec![v.label.clone()] } else { wrap_label(&v.label, c) })
        .collect();
    let header_widths: Vec<usize> = headers.iter().map(|h| h.iter().map(|l| width(l)).max().unwrap_or(0)).collect();
    let table = |range: std::ops::Range<usize>| {
        let mut cols: Vec<(&str, Align)> = vec![("", Align::Left)];
        cols.extend(range.clone().map(|_| ("", Align::Right)));
        let mut t = TextTable::new(&cols);
        let height = headers[range.clone()].iter().map(Vec::len).max().unwrap_or(1);
        for line in 0..height {
            // Bottom-aligned: shorter headers start lower.
            t.row(std::iter::once(String::new()).chain(headers[range.clone()].iter().map(|h| {
                let skip = height - h.len();
                if line < skip {
                    String::new()
                } else {
                    h[line - skip].clone()
                }
            })));
        }
        t.rule();
        for (label, c) in &rows {
            t.row(std::iter::once(label.to_string()).chain(c[range.clone()].iter().cloned()));
        }
        (height, t.lines().split_off(2))
    };
    let print = |out: &mut String, (height, lines): (usize, Vec<String>)| {
        for (i, line) in lines.iter().enumerate() {
            let line = if i <= height { style.dim(line) } else { line.clone() };
            let _ = writeln!(out, "  {line}");
        }
    };
    match column_groups(&header_widths, &cells, first, style.width) {
        Some(groups) if groups.len() == 1 => print(out, table(0..n)),
        Some(groups) => {
            for (g, range) in groups.into_iter().enumerate() {
                if g > 0 {
                    out.push('\n');
                }
                let what = if range.len() == 1 {
                    format!("variant {} of {n}", range.start + 1)
                } else {
                    format!("variants {}–{} of {n}", range.start + 1, range.end)
                };
                let _ = writeln!(out, "  {}", style.dim(&style.chars(&what)));
                print(out, table(range));
            }
        }
        None => {
            // Transposed: one block per variant, its label on a line of its own (wrapped).
            for (i, v) in cmp.variants.iter().enumerate() {
                if i > 0 {
                    out.push('\n');
                }
                let head = format!("{} of {n}: {}", i + 1, v.label);
                let room = style.width.saturating_sub(2).max(20);
                let chars: Vec<char> = head.chars().collect();
                for part in chars.chunks(room) {
                    let _ = writeln!(out, "  {}", style.bold(&part.iter().collect::<String>()));
                }
                let mut t = TextTable::new(&[("", Align::Left), ("", Align::Right)]);
                for (label, c) in &rows {
                    t.row([label.to_string(), c[i].clone()]);
                }
                for line in t.lines().into_iter().skip(2) {
                    let _ = writeln!(out, "  {line}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    #[test]
    fn parses_vary_specs() {
        let s = parse_vary("policy.recover=zap, in-place").unwrap();
        assert_eq!(s.key, "policy.recover");
        assert_eq!(s.values, ["zap", "in-place"]);
        for bad in ["policy.recover", "=a,b", "k=a,,b", "k=", "k=a,a"] {
            let e = parse_vary(bad).unwrap_err();
            assert_eq!(e.code, 2);
            assert!(e.message.starts_with("--vary"), "{}", e.message);
        }
    }

    #[test]
    fn expands_the_cartesian_product() {
        let specs = [parse_vary("a=1,2").unwrap(), parse_vary("b=x,y,z").unwrap()];
        let v = expand(&specs).unwrap();
        assert_eq!(v.len(), 6);
        assert_eq!(label(&v[0]), "1 / x");
        assert_eq!(label(&v[5]), "2 / z");
        assert!(expand(&[]).is_err());
        assert!(expand(&[parse_vary("a=1").unwrap(), parse_vary("a=2").unwrap()]).is_err());
        let many: Vec<VarySpec> = (0..7).map(|i| parse_vary(&format!("k{i}=a,b")).unwrap()).collect();
        assert!(expand(&many).unwrap_err().message.contains("too many"));
    }

    #[test]
    fn wraps_at_spaces_within_the_width() {
        assert_eq!(wrap("aaa bbb ccc", 20), vec!["aaa bbb ccc"]);
        let long = "word ".repeat(30);
        let lines = wrap(&long, 24);
        assert!(lines.len() > 1 && lines.iter().all(|l| l.chars().count() <= 24), "{lines:?}");
        assert_eq!(lines.join(" "), long.trim_end());
        assert!(wrap(&"x".repeat(50), 20).iter().all(|l| l.chars().count() <= 20));
    }

    #[test]
    fn many_variants_fit_the_width_in_groups_or_blocks() {
        let mut cmp = fixtures::comparison();
        let one = cmp.variants[0].clone();
        cmp.variants = (0..12)
            .map(|i| {
                let mut v = one.clone();
                v.label = format!("zap / {}K / v{i}", 4 << i);
                v
            })
            .collect();
        for width in [60, 80, 100, 160] {
            let text = render(&cmp, Style { width, ..Style::PLAIN });
            for line in text.lines() {
                assert!(line.chars().count() <= width, "{width}: {line:?} is {} wide", line.chars().count());
            }
            for v in &cmp.variants {
                // Each value of the label shows (the label may be broken after a slash).
                for part in v.label.split(" / ") {
                    assert!(text.contains(part), "{width}: {} missing:\n{text}", v.label);
                }
            }
        }
        // Everything side by side when it fits, in groups when it does not; labels broken after
        // their slashes when they would make the columns wide.
        assert!(!render(&cmp, Style::PLAIN).contains("variants 1–"));
        let at_80 = render(&cmp, Style { width: 80, ..Style::PLAIN });
        assert!(at_80.contains("variants 1–"), "{at_80}");
        assert!(at_80.lines().any(|l| l.trim_end().ends_with("zap /")), "{at_80}");
        assert_eq!(wrap_label("in-place / split-on-fault / 2", 10), ["in-place /", "split-on-fault /", "2"]);
        assert_eq!(wrap_label("zap / 4K", 10), ["zap / 4K"]);
        // A label wider than the terminal: one block per variant.
        cmp.variants[3].label = "x".repeat(70);
        let text = render(&cmp, Style { width: 60, ..Style::PLAIN });
        assert!(text.contains("4 of 12: "), "{text}");
        assert!(text.lines().all(|l| l.chars().count() <= 60), "{text}");
    }

    #[test]
    fn renders_side_by_side() {
        let cmp = fixtures::comparison();
        let text = render(&cmp, Style::PLAIN);
        assert!(text.contains("zap"), "{text}");
        assert!(text.contains("in-place"));
        assert!(text.contains("peak 4K leaves"));
        assert!(text.contains("TLB misses / 1k accesses"));
        assert!(text.contains("expectations"));
        let rows = rows(&cmp);
        assert!(rows.iter().all(|r| r.cells.len() == 2));
    }
}
