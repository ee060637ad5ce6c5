//! Medians, ratios and the Markdown / JSON renderings.

use std::fmt::Write;

use crate::run::{Api, Row, RowKind, Sample, Scale};

/// Every sample of one case, plus its callgrind count.
#[derive(Debug, Clone)]
pub struct CaseResult {
    /// Per repetition.
    pub samples: Vec<Sample>,
    /// Callgrind instructions per op, if measured.
    pub ir: Option<f64>,
}

/// A row and the results of its cases (same order as `row.cases`).
#[derive(Debug, Clone)]
pub struct RowResult {
    /// The row.
    pub row: Row,
    /// Results per case.
    pub cases: Vec<CaseResult>,
}

/// Median of a non-empty list (NaNs last).
pub fn median(v: &[f64]) -> f64 {
    let mut v: Vec<f64> = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

impl CaseResult {
    /// Median ns/op.
    pub fn ns(&self) -> f64 {
        median(&self.samples.iter().map(|s| s.ns).collect::<Vec<_>>())
    }
    /// Largest heap-allocation count seen per table operation.
    pub fn allocs(&self) -> f64 {
        self.samples.iter().map(|s| s.allocs).fold(0.0, f64::max)
    }
    /// Frames per table after the operation.
    pub fn frames(&self) -> f64 {
        median(&self.samples.iter().map(|s| s.frames).collect::<Vec<_>>())
    }
}

/// A ratio between two cases of a row: median of per-repetition ratios.
#[derive(Debug, Clone, Copy)]
pub struct Ratio {
    /// Index of the numerator case.
    pub num: usize,
    /// Index of the denominator case.
    pub den: usize,
    /// Median of `num[r] / den[r]`.
    pub value: f64,
}

impl RowResult {
    fn idx(&self, f: impl Fn(&crate::run::Case) -> bool) -> Vec<usize> {
        (0..self.cases.len()).filter(|&i| f(&self.row.cases[i])).collect()
    }

    fn fastest(&self, idx: &[usize]) -> Option<usize> {
        idx.iter().copied().min_by(|&a, &b| self.cases[a].ns().total_cmp(&self.cases[b].ns()))
    }

    /// Median of per-repetition ratios `num / den`.
    pub fn ratio(&self, num: usize, den: usize) -> Ratio {
        let a = &self.cases[num].samples;
        let b = &self.cases[den].samples;
        let r: Vec<f64> = a.iter().zip(b).map(|(x, y)| x.ns / y.ns).collect();
        Ratio { num, den, value: median(&r) }
    }

    /// slat's range (or only) case.
    pub fn slat_main(&self) -> Option<usize> {
        let range = self.idx(|c| c.imp == "slat" && c.api == Api::Range);
        range.first().copied().or_else(|| self.idx(|c| c.imp == "slat").first().copied())
    }

    /// slat's per-leaf `install` case.
    pub fn slat_leaf(&self) -> Option<usize> {
        self.idx(|c| c.imp == "slat" && c.api == Api::Leaf && !c.key.ends_with("leaf-map")).first().copied()
    }

    /// The fastest peer case (any API).
    pub fn fastest_peer(&self) -> Option<usize> {
        self.fastest(&self.idx(|c| c.imp != "slat" && c.imp != "floor"))
    }

    /// The fastest per-leaf peer case.
    pub fn fastest_leaf_peer(&self) -> Option<usize> {
        self.fastest(&self.idx(|c| c.imp != "slat" && c.imp != "floor" && c.api == Api::Leaf))
    }

    /// The floor case.
    pub fn floor(&self) -> Option<usize> {
        self.idx(|c| c.api == Api::Floor).first().copied()
    }

    /// Operations per table-level sample (leaves, translations, faults, pages, blocks).
    pub fn ops(&self, scale: Scale) -> u64 {
        ops(&self.row, scale)
    }
}

/// Operations counted by one run of any case of `row`.
pub fn ops(row: &Row, scale: Scale) -> u64 {
    use crate::run::*;
    match row.kind {
        RowKind::Map(_) | RowKind::Unmap(_) => row.shape.leaves() * row.shape.copies as u64,
        RowKind::Translate => translations(scale),
        RowKind::Fault => fault_len(scale) >> 12,
        RowKind::Split | RowKind::Harvest => dirty_len(scale) >> 12,
        RowKind::Recover => dirty_len(scale) >> 21,
    }
}

fn ns(v: f64) -> String {
    if v.is_nan() {
        "—".into()
    } else if v < 10.0 {
        format!("{v:.2}")
    } else if v < 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

fn total(v_ns: f64) -> String {
    if v_ns < 1e3 {
        format!("{v_ns:.0} ns")
    } else if v_ns < 1e6 {
        format!("{:.1} µs", v_ns / 1e3)
    } else {
        format!("{:.2} ms", v_ns / 1e6)
    }
}

fn x(v: f64) -> String {
    if v.is_nan() {
        "—".into()
    } else if v < 10.0 {
        format!("{v:.2}x")
    } else {
        format!("{v:.0}x")
    }
}

fn opt(v: Option<f64>) -> String {
    match v {
        Some(v) if v < 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.0}"),
        None => "—".into(),
    }
}

fn met(ok: bool) -> &'static str {
    if ok {
        "yes"
    } else {
        "**no**"
    }
}

/// Peers must be at least this much slower than slat.
pub const PEER_FACTOR: f64 = 1.5;
/// slat within this factor of the floor.
pub const FLOOR_FACTOR: f64 = 2.0;

/// The headline table and the full tables, as Markdown.
pub fn markdown(results: &[RowResult], scale: Scale, reps: usize, meta: &str) -> String {
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(w, "{meta}\n");
    let _ = writeln!(w, "### Headline: ratios (median of per-repetition ratios of CPU time, callgrind instruction ratio in brackets; < 1 means slat is faster)\n");
    let _ = writeln!(
        w,
        "Targets: slat / fastest peer <= {:.2} (1.5x faster) on every row, per-leaf rows against the fastest \
         per-leaf peer; slat / floor <= {FLOOR_FACTOR:.1}.\n",
        1.0 / PEER_FACTOR
    );
    let _ = writeln!(
        w,
        "| row | slat ns/op (API) | fastest peer ns/op (API) | **slat / fastest peer** | **slat / floor** | slat \
         per-leaf ns/op | fastest per-leaf peer ns/op | **per-leaf ratio** | targets met |"
    );
    let _ = writeln!(w, "|---|---|---|---|---|---|---|---|---|");
    for r in results.iter().filter(|r| matches!(r.row.kind, RowKind::Map(_) | RowKind::Unmap(_) | RowKind::Translate)) {
        let name = |i: usize| format!("{} {}", r.row.cases[i].imp, r.row.cases[i].api_name);
        let Some(s) = r.slat_main() else { continue };
        let peer = r.fastest_peer();
        let floor = r.floor();
        let rp = peer.map(|p| r.ratio(s, p).value).unwrap_or(f64::NAN);
        let rf = floor.map(|f| r.ratio(s, f).value).unwrap_or(f64::NAN);
        let (sl, lp) = (r.slat_leaf(), r.fastest_leaf_peer());
        let rl = match (sl, lp) {
            (Some(a), Some(b)) => r.ratio(a, b).value,
            _ => f64::NAN,
        };
        let ir = |a: Option<usize>, b: Option<usize>| match (a, b) {
            (Some(a), Some(b)) => match (r.cases[a].ir, r.cases[b].ir) {
                (Some(x), Some(y)) => format!(" (Ir {})", self::x(x / y)),
                _ => String::new(),
            },
            _ => String::new(),
        };
        let ok = rp <= 1.0 / PEER_FACTOR && rf <= FLOOR_FACTOR && (rl.is_nan() || rl <= 1.0 / PEER_FACTOR);
        let _ = writeln!(
            w,
            "| {} | {} ({}) | {} | **{}**{} | **{}**{} | {} | {} | **{}**{} | {} |",
            r.row.title,
            ns(r.cases[s].ns()),
            r.row.cases[s].api_name,
            peer.map(|p| format!("{} ({})", ns(r.cases[p].ns()), name(p))).unwrap_or_default(),
            x(rp),
            ir(Some(s), peer),
            x(rf),
            ir(Some(s), floor),
            sl.map(|i| ns(r.cases[i].ns())).unwrap_or_else(|| "—".into()),
            lp.map(|p| format!("{} ({})", ns(r.cases[p].ns()), name(p))).unwrap_or_else(|| "—".into()),
            x(rl),
            ir(sl, lp),
            met(ok),
        );
    }
    for r in results.iter().filter(|r| matches!(r.row.kind, RowKind::Split | RowKind::Harvest | RowKind::Recover)) {
        let (Some(s), Some(f)) = (r.slat_main(), r.floor()) else { continue };
        let rf = r.ratio(s, f).value;
        let irf = match (r.cases[s].ir, r.cases[f].ir) {
            (Some(a), Some(b)) => format!(" (Ir {})", x(a / b)),
            _ => String::new(),
        };
        let _ = writeln!(
            w,
            "| {} | {} ({}) | — (slat only) | — | **{}**{irf} | — | — | — | {} |",
            r.row.title,
            ns(r.cases[s].ns()),
            r.row.cases[s].api_name,
            x(rf),
            met(rf <= FLOOR_FACTOR)
        );
    }
    if let Some(r) = results.iter().find(|r| r.row.kind == RowKind::Fault) {
        let one = &r.cases[0];
        let two = &r.cases[1];
        let speed: Vec<f64> = one.samples.iter().zip(&two.samples).map(|(a, b)| a.ns / b.ns).collect();
        let sp = median(&speed);
        let rate = 1e3 / one.ns();
        let _ = writeln!(
            w,
            "\n**Fault path** ({}): one thread {} ns/fault = **{:.1} M faults/s** (target >= 5); two threads \
             {} ns/fault, **{:.2}x** one thread (target >= 1.8x): {}. Wall time; the machine's other load \
             shares the 2 vCPUs.",
            r.row.title,
            ns(one.ns()),
            rate,
            ns(two.ns()),
            sp,
            met(rate >= 5.0 && sp >= 1.8)
        );
    }

    let _ = writeln!(w, "\n### Every case (medians over {reps} repetitions)\n");
    let _ = writeln!(
        w,
        "ns/op is per leaf (map, unmap, split, harvest: per 4K page), per translation, per fault or per 2M \
         block (recovery). *total* is per table. Ir/op: callgrind instructions per op. *heap allocs*: calls \
         to the global allocator during one table's operation (fault path: during all the faults). *frames*: page-table frames per table after \
         the operation (the floor borrows slat's tables: —).\n"
    );
    for r in results {
        let opsn = ops(&r.row, scale) as f64
            / match r.row.kind {
                RowKind::Map(_) | RowKind::Unmap(_) => r.row.shape.copies as f64,
                _ => 1.0,
            };
        let min = match r.row.kind {
            RowKind::Map(_) => format!(", minimum {} frames", r.row.shape.min_frames()),
            _ => String::new(),
        };
        let _ = writeln!(w, "#### {}{min}\n", r.row.title);
        let _ = writeln!(w, "| contender | API | ns/op | total | Ir/op | heap allocs | frames |");
        let _ = writeln!(w, "|---|---|---|---|---|---|---|");
        for (c, res) in r.row.cases.iter().zip(&r.cases) {
            let _ = writeln!(
                w,
                "| {} | {} | {} | {} | {} | {} | {} |",
                c.imp,
                c.api_name,
                ns(res.ns()),
                total(res.ns() * opsn),
                opt(res.ir),
                if c.api == Api::Floor { "—".into() } else { format!("{}", res.allocs()) },
                if res.frames().is_nan() { "—".into() } else { format!("{}", res.frames()) },
            );
        }
        let _ = writeln!(w);
    }
    out
}

fn json_str(s: &str) -> String {
    let mut o = String::from("\"");
    for ch in s.chars() {
        match ch {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn json_num(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else {
        "null".into()
    }
}

/// Every number, as JSON.
pub fn json(results: &[RowResult], scale: Scale, reps: usize) -> String {
    let mut w = String::new();
    let _ = write!(w, "{{\"schema\":1,\"scale\":{},\"repetitions\":{reps},\"rows\":[", json_str(&format!("{scale:?}")));
    for (ri, r) in results.iter().enumerate() {
        if ri > 0 {
            w.push(',');
        }
        let _ = write!(w, "{{\"key\":{},\"title\":{},", json_str(&r.row.key), json_str(&r.row.title));
        let ratio = |a: Option<usize>, b: Option<usize>| match (a, b) {
            (Some(a), Some(b)) => json_num(r.ratio(a, b).value),
            _ => "null".into(),
        };
        let _ = write!(
            w,
            "\"slat_over_fastest_peer\":{},\"slat_over_floor\":{},\"slat_leaf_over_fastest_leaf_peer\":{},\"cases\":[",
            ratio(r.slat_main(), r.fastest_peer()),
            ratio(r.slat_main(), r.floor()),
            ratio(r.slat_leaf(), r.fastest_leaf_peer())
        );
        for (ci, (c, res)) in r.row.cases.iter().zip(&r.cases).enumerate() {
            if ci > 0 {
                w.push(',');
            }
            let samples: Vec<String> = res.samples.iter().map(|s| json_num(s.ns)).collect();
            let _ = write!(
                w,
                "{{\"key\":{},\"contender\":{},\"api\":{},\"kind\":{},\"median_ns_per_op\":{},\"ir_per_op\":{},\
                 \"heap_allocs\":{},\"frames\":{},\"ns_per_op\":[{}]}}",
                json_str(&c.key),
                json_str(c.imp),
                json_str(c.api_name),
                json_str(&format!("{:?}", c.api)),
                json_num(res.ns()),
                res.ir.map(json_num).unwrap_or_else(|| "null".into()),
                json_num(res.allocs()),
                json_num(res.frames()),
                samples.join(",")
            );
        }
        w.push_str("]}");
    }
    w.push_str("]}\n");
    w
}
