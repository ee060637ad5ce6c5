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

/// The rows of the side-by-side table.
pub fn rows(cmp: &Comparison) -> Vec<Row> {
    type Getter = fn(&RunReport) -> String;
    let numbers: [(&'static str, Getter); 15] = [
        ("4K leaves (final)", |r| count(r.final_leaves().pages_4k)),
        ("2M leaves (final)", |r| count(r.final_leaves().pages_2m)),
        ("1G leaves (final)", |r| count(r.final_leaves().pages_1g)),
        ("mapped memory (final)", |r| bytes(r.final_leaves().mapped_bytes())),
        ("peak 4K leaves", |r| count(r.samples.iter().map(|s| s.leaves.pages_4k).max().unwrap_or(0))),
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
        if !first.report.description.is_empty() {
            let _ = writeln!(out, "{}", first.report.description);
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
        let _ = writeln!(out, "{}", style.dim(&format!("overrides: {}", cmp.common.join(", "))));
    }
    let _ =
        writeln!(out, "\n{}  {}", style.bold("Side by side"), style.dim(&format!("columns: {}", cmp.keys.join(" / "))));
    let mut cols: Vec<(&str, Align)> = vec![("", Align::Left)];
    cols.extend(cmp.variants.iter().map(|v| (v.label.as_str(), Align::Right)));
    let mut t = TextTable::new(&cols);
    for row in rows(cmp) {
        let cells = row.cells.iter().zip(&row.ok).map(|(c, ok)| match ok {
            Some(true) => format!("PASS {c}"),
            Some(false) => format!("FAIL {c}"),
            None => c.clone(),
        });
        t.row(std::iter::once(row.label.to_string()).chain(cells));
    }
    for (i, line) in t.lines().iter().enumerate() {
        let line = if i < 2 { style.dim(line) } else { line.clone() };
        let _ = writeln!(out, "  {line}");
    }
    out.push('\n');
    if cmp.passed() {
        let _ = writeln!(out, "result: {} (every variant met its expectations)", style.verdict(true));
    } else {
        let failed = cmp.variants.iter().filter(|v| !v.report.passed()).count();
        let _ = writeln!(out, "result: {} ({failed} of {} variants failed)", style.verdict(false), cmp.variants.len());
        for v in &cmp.variants {
            for f in failures(&v.report) {
                let _ = writeln!(out, "  {}", style.bad(&format!("{}: {f}", v.label)));
            }
        }
    }
    out
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
