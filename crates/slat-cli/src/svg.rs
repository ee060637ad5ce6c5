//! Inline SVG charts for the HTML report: time-series line and stacked-area charts with event
//! markers, and horizontal bar charts.
//!
//! Every chart is one well-formed, self-contained `<svg>` element (XML: quoted attributes,
//! escaped text, closed elements) sized by a `viewBox`, so the page scales it with CSS and an
//! XML parser reads it. Colours come from the constants here; text inherits the page's font.

use std::fmt::Write as _;

use crate::units::{byte_unit, short_count, trim_decimal};

/// Colour of 4 KiB leaves (warm: the size to avoid).
pub const COLOR_4K: &str = "#e4572e";
/// Colour of 2 MiB leaves.
pub const COLOR_2M: &str = "#4c78a8";
/// Colour of 1 GiB leaves.
pub const COLOR_1G: &str = "#1d3557";
/// Colours of compared variants and of unrelated series, in order.
pub const SERIES_COLORS: [&str; 8] =
    ["#4c78a8", "#e4572e", "#54a24b", "#b279a2", "#f2a541", "#72b7b2", "#9d755d", "#6c757d"];
/// Axis lines, tick labels and secondary text.
const INK_SOFT: &str = "#5f6b7a";
/// Grid lines.
const GRID: &str = "#e6e9ee";
/// Shading of every other phase band.
const BAND: &str = "#f3f5f8";
/// Event marker lines and badges.
const MARKER: &str = "#7a8494";

/// Escape text for XML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// How a value axis labels its ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// Counts: `0`, `500`, `1.5k`, `2M`.
    Count,
    /// Bytes in binary units: `512 MiB`, `1.5 GiB`.
    Bytes,
    /// Plain decimals: `0.25`, `1.5`.
    Ratio,
    /// Shares of a whole (0..=1) as percentages.
    Percent,
}

/// One line (or stacked band) of a chart.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend name.
    pub name: String,
    /// Stroke / fill colour.
    pub color: String,
    /// `(x, y)` points in increasing x.
    pub points: Vec<(f64, f64)>,
    /// SVG dash pattern (`"6 4"`), `None` for a solid line.
    pub dash: Option<&'static str>,
}

impl Series {
    /// A solid series.
    pub fn new(name: impl Into<String>, color: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Series { name: name.into(), color: color.into(), points, dash: None }
    }
}

/// A vertical event line.
#[derive(Debug, Clone)]
pub struct Marker {
    /// Position on the x axis.
    pub x: f64,
    /// Badge text (the event's number).
    pub badge: String,
    /// Short label next to the badge when there is room (the event kind).
    pub label: String,
    /// Tooltip (full detail).
    pub title: String,
}

/// A named span of the x axis (a workload phase).
#[derive(Debug, Clone)]
pub struct Band {
    /// First x.
    pub start: f64,
    /// Last x.
    pub end: f64,
    /// Name shown in the band.
    pub name: String,
}

/// A time-series chart.
#[derive(Debug, Clone)]
pub struct Chart {
    /// Accessible title (also the SVG `<title>`).
    pub title: String,
    /// X axis label, with its unit.
    pub x_label: String,
    /// Y axis label, with its unit.
    pub y_label: String,
    /// How y ticks are labelled.
    pub y_scale: Scale,
    /// The series, bottom band first when stacked.
    pub series: Vec<Series>,
    /// Stack the series as filled bands (they must share x points).
    pub stacked: bool,
    /// Event markers.
    pub markers: Vec<Marker>,
    /// Show marker labels (badges and kinds) above the plot, or only the lines.
    pub marker_labels: bool,
    /// Phases of the run, shaded alternately behind the data.
    pub bands: Vec<Band>,
    /// viewBox width.
    pub width: f64,
    /// viewBox height.
    pub height: f64,
}

/// Rough width of `s` in px at 11-12 px sans-serif, for layout without font metrics.
fn text_width(s: &str, px: f64) -> f64 {
    s.chars().count() as f64 * px * 0.58
}

/// A "nice" tick step (1, 2, 2.5 or 5 times a power of ten) splitting `range` into about
/// `target` intervals.
pub fn nice_step(range: f64, target: usize) -> f64 {
    if !(range.is_finite() && range > 0.0) {
        return 1.0;
    }
    let raw = range / target.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let nice = if norm <= 1.0 {
        1.0
    } else if norm <= 2.0 {
        2.0
    } else if norm <= 2.5 {
        2.5
    } else if norm <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

/// Fewest decimals that print `step` exactly (up to 6).
fn decimals_for(step: f64) -> usize {
    (0..6)
        .find(|&d| {
            let v = step * 10f64.powi(d as i32);
            (v - v.round()).abs() < 1e-6 * v.abs().max(1.0)
        })
        .unwrap_or(6)
}

/// A value axis from 0: its ticks, its top and a tick formatter.
struct ValueAxis {
    ticks: Vec<f64>,
    top: f64,
    unit: (f64, &'static str),
    decimals: usize,
    scale: Scale,
    /// Every value is zero: one tick at 0 and a note, no invented scale.
    empty: bool,
}

impl ValueAxis {
    fn new(max: f64, scale: Scale, target: usize) -> Self {
        if !(max.is_finite() && max > 0.0) {
            return ValueAxis { ticks: vec![0.0], top: 1.0, unit: (1.0, ""), decimals: 0, scale, empty: true };
        }
        let unit = if scale == Scale::Bytes { byte_unit(max) } else { (1.0, "") };
        let mut step = nice_step(max / unit.0, target) * unit.0;
        if matches!(scale, Scale::Count | Scale::Bytes) {
            // Counts and bytes are whole: no tick at 0.2 of a page or of a fault.
            step = step.max(1.0);
        }
        let n = (max / step - 1e-9).ceil().max(1.0) as usize;
        let ticks: Vec<f64> = (0..=n).map(|i| i as f64 * step).collect();
        let decimals = decimals_for(step / unit.0);
        ValueAxis { top: n as f64 * step, ticks, unit, decimals, scale, empty: false }
    }

    fn label(&self, v: f64) -> String {
        match self.scale {
            Scale::Count => short_count(v),
            Scale::Bytes => {
                if v == 0.0 {
                    "0".to_string()
                } else {
                    format!("{} {}", trim_decimal(v / self.unit.0, self.decimals), self.unit.1)
                }
            }
            Scale::Ratio => trim_decimal(v, self.decimals),
            Scale::Percent => format!("{}%", trim_decimal(v * 100.0, self.decimals.saturating_sub(2))),
        }
    }
}

/// Ticks for a time axis `[lo, hi]`, kept inside the range.
fn time_ticks(lo: f64, hi: f64, target: usize) -> Vec<f64> {
    // Accesses are whole: no tick at 0.2 of an access.
    let step = nice_step(hi - lo, target).max(1.0);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step + 1e-9).floor() as i64;
    (first..=last).map(|i| i as f64 * step).collect()
}

/// Format a coordinate compactly (one decimal, no trailing `.0`).
fn c(v: f64) -> String {
    trim_decimal(v, 1)
}

/// A polyline path through `pts`.
fn path(pts: &[(f64, f64)]) -> String {
    let mut d = String::new();
    for (i, (x, y)) in pts.iter().enumerate() {
        let _ = write!(d, "{}{},{}", if i == 0 { "M" } else { " L" }, c(*x), c(*y));
    }
    d
}

/// Open the root element with its accessible title.
fn open_svg(out: &mut String, width: f64, height: f64, title: &str, class: &str) {
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="{class}" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="{t}" font-size="12"><title>{t}</title>"#,
        w = c(width),
        h = c(height),
        t = esc(title),
    );
}

/// Where each legend entry goes: `(x, row)`, wrapping at `x_max` so no entry is clipped.
fn legend_layout(series: &[Series], x0: f64, x_max: f64) -> Vec<(f64, usize)> {
    let mut x = x0;
    let mut row = 0;
    series
        .iter()
        .map(|s| {
            let w = 20.0 + text_width(&s.name, 12.0) + 18.0;
            if x > x0 && x + w - 18.0 > x_max {
                x = x0;
                row += 1;
            }
            let at = (x, row);
            x += w;
            at
        })
        .collect()
}

/// Rows the legend takes.
fn legend_rows(series: &[Series], x0: f64, x_max: f64) -> usize {
    legend_layout(series, x0, x_max).last().map_or(1, |(_, r)| r + 1)
}

/// The legend: colour swatches and names laid out from the left at `y`, in rows of 16 px that
/// wrap at `x_max`.
fn legend(out: &mut String, series: &[Series], x0: f64, y0: f64, x_max: f64, filled: bool) {
    let _ = write!(out, r#"<g class="legend">"#);
    for (s, (x, row)) in series.iter().zip(legend_layout(series, x0, x_max)) {
        let y = y0 + row as f64 * 16.0;
        if filled {
            let _ = write!(
                out,
                r#"<rect x="{}" y="{}" width="12" height="12" rx="2" fill="{}"/>"#,
                c(x),
                c(y - 10.0),
                esc(&s.color)
            );
        } else {
            let dash = s.dash.map(|d| format!(r#" stroke-dasharray="{d}""#)).unwrap_or_default();
            let _ = write!(
                out,
                r#"<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="{}" stroke-width="2.5"{dash}/>"#,
                c(x),
                c(y - 4.0),
                c(x + 16.0),
                c(y - 4.0),
                esc(&s.color)
            );
        }
        let _ = write!(out, r#"<text x="{}" y="{}" fill="{INK_SOFT}">{}</text>"#, c(x + 20.0), c(y), esc(&s.name));
    }
    out.push_str("</g>");
}

/// Assign each marker label a row above the plot so labels do not overlap; a label that fits
/// nowhere is shortened to its badge, then dropped. Returns `(row, text)` per marker.
fn place_labels(markers: &[(f64, &Marker)], rows: usize) -> Vec<Option<(usize, String)>> {
    let mut ends = vec![f64::NEG_INFINITY; rows];
    let mut placed = Vec::with_capacity(markers.len());
    for (x, m) in markers {
        let full = if m.label.is_empty() { m.badge.clone() } else { format!("{} {}", m.badge, m.label) };
        let mut choice = None;
        for text in [full, m.badge.clone()] {
            let w = text_width(&text, 11.0) + 10.0;
            if let Some(r) = (0..rows).find(|&r| ends[r] + 4.0 <= x - 4.0) {
                ends[r] = x - 4.0 + w;
                choice = Some((r, text));
                break;
            }
        }
        placed.push(choice);
    }
    placed
}

impl Chart {
    /// The same chart with phase bands.
    pub fn with_bands(mut self, bands: Vec<Band>) -> Self {
        self.bands = bands;
        self
    }

    /// The chart as one `<svg>` element.
    pub fn render(&self) -> String {
        let mut out = String::new();
        open_svg(&mut out, self.width, self.height, &self.title, "chart");
        let label_rows = if self.marker_labels && !self.markers.is_empty() { 2 } else { 0 };
        // Phase names go under the x-axis ticks, outside the plot and its fills.
        let (right, bottom) = (18.0, if self.bands.is_empty() { 46.0 } else { 62.0 });
        // Legend rows beyond the first push the plot down (the left edge is not known yet:
        // lay out from a typical one).
        let extra = (legend_rows(&self.series, 60.0, self.width - right) - 1) as f64 * 16.0;
        let top = 30.0 + extra + label_rows as f64 * 17.0 + if label_rows > 0 { 4.0 } else { 0.0 };

        let all = self.series.iter().flat_map(|s| s.points.iter());
        let (mut x0, mut x1) =
            all.clone().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.0), b.max(p.0)));
        if !x0.is_finite() {
            (x0, x1) = (0.0, 1.0);
        }
        if x1 <= x0 {
            x1 = x0 + 1.0;
        }
        let ymax = if self.stacked {
            let n = self.series.iter().map(|s| s.points.len()).max().unwrap_or(0);
            (0..n)
                .map(|i| self.series.iter().filter_map(|s| s.points.get(i)).map(|p| p.1).sum::<f64>())
                .fold(0.0, f64::max)
        } else {
            all.map(|p| p.1).fold(0.0, f64::max)
        };
        let axis = ValueAxis::new(ymax, self.y_scale, 5);
        // Room for the widest tick label, then the rotated axis label.
        let widest = axis.ticks.iter().map(|&t| text_width(&axis.label(t), 12.0)).fold(0.0, f64::max);
        let left = (widest + 36.0).max(56.0);
        let (pw, ph) = (self.width - left - right, self.height - top - bottom);
        let sx = |x: f64| left + (x - x0) / (x1 - x0) * pw;
        let sy = |y: f64| top + ph - (y / axis.top).clamp(0.0, 1.05) * ph;

        // Phase bands behind everything: alternate shading; the name under the axis.
        if !self.bands.is_empty() {
            out.push_str(r#"<g class="phases">"#);
            for (i, b) in self.bands.iter().enumerate() {
                let (a, z) = (sx(b.start.clamp(x0, x1)), sx(b.end.clamp(x0, x1)));
                if z - a < 1.0 {
                    continue;
                }
                let _ = write!(out, r#"<g><title>phase {}</title>"#, esc(&b.name));
                if i % 2 == 1 {
                    let _ = write!(
                        out,
                        r#"<rect x="{}" y="{}" width="{}" height="{}" fill="{BAND}"/>"#,
                        c(a),
                        c(top),
                        c(z - a),
                        c(ph)
                    );
                }
                if text_width(&b.name, 11.0) + 8.0 < z - a {
                    let _ = write!(
                        out,
                        r##"<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="#9aa3af" stroke-width="1"/><text x="{}" y="{}" font-size="11" fill="#39414d">{}</text>"##,
                        c(a + 1.0),
                        c(top + ph + 25.0),
                        c(z - 1.0),
                        c(top + ph + 25.0),
                        c(a + 4.0),
                        c(top + ph + 37.0),
                        esc(&b.name)
                    );
                }
                out.push_str("</g>");
            }
            out.push_str("</g>");
        }

        legend(&mut out, &self.series, left.min(60.0), 16.0, self.width - right, self.stacked);

        // Grid and y ticks.
        out.push_str(r#"<g class="y-axis">"#);
        for &t in &axis.ticks {
            let y = sy(t);
            let _ = write!(
                out,
                r#"<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="{GRID}"/><text x="{}" y="{}" text-anchor="end" fill="{INK_SOFT}">{}</text>"#,
                c(left),
                c(y),
                c(left + pw),
                c(y),
                c(left - 8.0),
                c(y + 4.0),
                esc(&axis.label(t))
            );
        }
        let _ = write!(
            out,
            r#"<text transform="translate(14,{}) rotate(-90)" text-anchor="middle" fill="{INK_SOFT}">{}</text></g>"#,
            c(top + ph / 2.0),
            esc(&self.y_label)
        );

        if axis.empty {
            let _ = write!(
                out,
                r#"<text class="empty-note" x="{}" y="{}" text-anchor="middle" fill="{INK_SOFT}">all zero during the run</text>"#,
                c(left + pw / 2.0),
                c(top + ph / 2.0)
            );
        }

        // X ticks.
        out.push_str(r#"<g class="x-axis">"#);
        for t in time_ticks(x0, x1, 8) {
            let x = sx(t);
            let _ = write!(
                out,
                r#"<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="{INK_SOFT}"/><text x="{}" y="{}" text-anchor="middle" fill="{INK_SOFT}">{}</text>"#,
                c(x),
                c(top + ph),
                c(x),
                c(top + ph + 5.0),
                c(x),
                c(top + ph + 19.0),
                esc(&short_count(t))
            );
        }
        let _ = write!(
            out,
            r#"<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="{INK_SOFT}"/><text x="{}" y="{}" text-anchor="middle" fill="{INK_SOFT}">{}</text></g>"#,
            c(left),
            c(top + ph),
            c(left + pw),
            c(top + ph),
            c(left + pw / 2.0),
            c(self.height - 8.0),
            esc(&self.x_label)
        );

        // Data.
        out.push_str(r#"<g class="data">"#);
        if self.series.iter().all(|s| s.points.is_empty()) {
            let _ = write!(
                out,
                r#"<text x="{}" y="{}" text-anchor="middle" fill="{INK_SOFT}">no samples</text>"#,
                c(left + pw / 2.0),
                c(top + ph / 2.0)
            );
        } else if self.stacked {
            let n = self.series.iter().map(|s| s.points.len()).max().unwrap_or(0);
            let mut base: Vec<(f64, f64)> =
                (0..n).map(|i| (self.series.iter().find_map(|s| s.points.get(i)).map_or(0.0, |p| p.0), 0.0)).collect();
            for s in &self.series {
                let upper: Vec<(f64, f64)> =
                    base.iter().enumerate().map(|(i, (x, y))| (*x, y + s.points.get(i).map_or(0.0, |p| p.1))).collect();
                let mut poly: Vec<(f64, f64)> = upper.iter().map(|&(x, y)| (sx(x), sy(y))).collect();
                poly.extend(base.iter().rev().map(|&(x, y)| (sx(x), sy(y))));
                let top_line: Vec<(f64, f64)> = upper.iter().map(|&(x, y)| (sx(x), sy(y))).collect();
                let _ = write!(
                    out,
                    r#"<path d="{} Z" fill="{col}" fill-opacity="0.78" stroke="none"><title>{}</title></path><path d="{}" fill="none" stroke="{col}" stroke-width="1.5"/>"#,
                    path(&poly),
                    esc(&s.name),
                    path(&top_line),
                    col = esc(&s.color)
                );
                base = upper;
            }
        } else {
            for s in &self.series {
                let pts: Vec<(f64, f64)> = s.points.iter().map(|&(x, y)| (sx(x), sy(y))).collect();
                let dash = s.dash.map(|d| format!(r#" stroke-dasharray="{d}""#)).unwrap_or_default();
                let _ = write!(
                    out,
                    r#"<path d="{}" fill="none" stroke="{}" stroke-width="2" stroke-linejoin="round"{dash}><title>{}</title></path>"#,
                    path(&pts),
                    esc(&s.color),
                    esc(&s.name)
                );
            }
        }
        out.push_str("</g>");

        // Event markers.
        if !self.markers.is_empty() {
            out.push_str(r#"<g class="events">"#);
            let inside: Vec<(f64, &Marker)> =
                self.markers.iter().filter(|m| m.x >= x0 && m.x <= x1).map(|m| (sx(m.x), m)).collect();
            let labels = if label_rows > 0 { place_labels(&inside, label_rows) } else { vec![None; inside.len()] };
            for ((x, m), label) in inside.iter().zip(labels) {
                let _ = write!(
                    out,
                    r#"<g><title>{}</title><line x1="{}" y1="{}" x2="{}" y2="{}" stroke="{MARKER}" stroke-width="1" stroke-dasharray="3 3"/>"#,
                    esc(&m.title),
                    c(*x),
                    c(top),
                    c(*x),
                    c(top + ph)
                );
                if let Some((row, text)) = label {
                    let y = 26.0 + extra + row as f64 * 17.0;
                    let w = text_width(&text, 11.0) + 10.0;
                    let _ = write!(
                        out,
                        r##"<rect x="{}" y="{}" width="{}" height="15" rx="3" fill="#f4f5f7" stroke="{MARKER}" stroke-width="0.6"/><text x="{}" y="{}" font-size="11" fill="#39414d">{}</text>"##,
                        c(x - 4.0),
                        c(y),
                        c(w),
                        c(x + 1.0),
                        c(y + 11.0),
                        esc(&text)
                    );
                }
                out.push_str("</g>");
            }
            out.push_str("</g>");
        }
        out.push_str("</svg>");
        out
    }
}

/// One bar of a horizontal bar chart.
#[derive(Debug, Clone)]
pub struct Bar {
    /// Category label (left of the bar).
    pub label: String,
    /// Length, in the chart's scale.
    pub value: f64,
    /// Text after the bar.
    pub value_text: String,
    /// Tooltip.
    pub title: String,
}

/// A horizontal bar chart: one row per bar, a value axis along the bottom.
#[derive(Debug, Clone)]
pub struct BarChart {
    /// Accessible title.
    pub title: String,
    /// Value axis label.
    pub x_label: String,
    /// How value ticks are labelled.
    pub scale: Scale,
    /// The bars, top first.
    pub bars: Vec<Bar>,
    /// Bar colour.
    pub color: String,
    /// viewBox width.
    pub width: f64,
}

impl BarChart {
    /// The chart as one `<svg>` element (its height follows the number of bars).
    pub fn render(&self) -> String {
        let row = 28.0;
        let label_w = self.bars.iter().map(|b| text_width(&b.label, 12.0)).fold(60.0, f64::max).min(240.0) + 16.0;
        let value_w = self.bars.iter().map(|b| text_width(&b.value_text, 12.0)).fold(40.0, f64::max) + 16.0;
        let (top, bottom) = (8.0, 44.0);
        let height = top + row * self.bars.len().max(1) as f64 + bottom;
        let pw = (self.width - label_w - value_w - 8.0).max(50.0);
        let max = self.bars.iter().map(|b| b.value).fold(0.0, f64::max);
        let axis = ValueAxis::new(max, self.scale, 4);
        let sx = |v: f64| label_w + (v / axis.top).clamp(0.0, 1.0) * pw;
        let plot_bottom = top + row * self.bars.len().max(1) as f64;

        let mut out = String::new();
        open_svg(&mut out, self.width, height, &self.title, "bars");
        out.push_str(r#"<g class="x-axis">"#);
        for &t in &axis.ticks {
            let x = sx(t);
            let _ = write!(
                out,
                r#"<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="{GRID}"/><text x="{}" y="{}" text-anchor="middle" fill="{INK_SOFT}">{}</text>"#,
                c(x),
                c(top),
                c(x),
                c(plot_bottom),
                c(x),
                c(plot_bottom + 16.0),
                esc(&axis.label(t))
            );
        }
        let _ = write!(
            out,
            r#"<text x="{}" y="{}" text-anchor="middle" fill="{INK_SOFT}">{}</text></g>"#,
            c(label_w + pw / 2.0),
            c(height - 8.0),
            esc(&self.x_label)
        );
        out.push_str(r#"<g class="data">"#);
        for (i, b) in self.bars.iter().enumerate() {
            let y = top + i as f64 * row;
            let w = (sx(b.value) - label_w).max(if b.value > 0.0 { 1.5 } else { 0.0 });
            let _ = write!(
                out,
                r##"<g><title>{}</title><text x="{}" y="{}" text-anchor="end" fill="#2b313a">{}</text><rect x="{}" y="{}" width="{}" height="18" rx="2" fill="{}"/><text x="{}" y="{}" fill="{INK_SOFT}">{}</text></g>"##,
                esc(&b.title),
                c(label_w - 10.0),
                c(y + row / 2.0 + 4.0),
                esc(&b.label),
                c(label_w),
                c(y + (row - 18.0) / 2.0),
                c(w),
                esc(&self.color),
                c(label_w + w + 6.0),
                c(y + row / 2.0 + 4.0),
                esc(&b.value_text)
            );
        }
        if self.bars.is_empty() {
            let _ = write!(
                out,
                r#"<text x="{}" y="{}" fill="{INK_SOFT}">nothing to show</text>"#,
                c(label_w),
                c(top + 18.0)
            );
        }
        let _ = write!(
            out,
            r#"</g><line x1="{}" y1="{}" x2="{}" y2="{}" stroke="{INK_SOFT}"/></svg>"#,
            c(label_w),
            c(top),
            c(label_w),
            c(plot_bottom)
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(svg: &str) -> roxmltree::Document<'_> {
        roxmltree::Document::parse(svg).unwrap_or_else(|e| panic!("{e}\n{svg}"))
    }

    #[test]
    fn nice_steps() {
        assert_eq!(nice_step(10.0, 5), 2.0);
        assert_eq!(nice_step(100.0, 4), 25.0);
        assert_eq!(nice_step(7.0, 5), 2.0);
        assert_eq!(nice_step(0.0, 5), 1.0);
        let a = ValueAxis::new(3.0 * (1u64 << 30) as f64, Scale::Bytes, 5);
        assert_eq!(a.label(a.ticks[1]), "1 GiB");
        let b = ValueAxis::new(1.2 * (1u64 << 30) as f64, Scale::Bytes, 5);
        assert_eq!(b.label(b.ticks[1]), "0.25 GiB");
        assert!(a.top >= 3.0 * (1u64 << 30) as f64);
        let r = ValueAxis::new(0.93, Scale::Ratio, 5);
        assert_eq!(r.label(r.ticks[1]), "0.2");
        assert_eq!(r.top, 1.0);
    }

    #[test]
    fn time_ticks_stay_in_range() {
        let t = time_ticks(0.0, 5_000_000.0, 8);
        assert_eq!(t.first(), Some(&0.0));
        assert!(t.iter().all(|&v| v <= 5_000_000.0));
        assert!(t.len() >= 5);
    }

    #[test]
    fn escapes_markup() {
        assert_eq!(esc(r#"a<b & "c" 'd'>"#), "a&lt;b &amp; &quot;c&quot; &#39;d&#39;&gt;");
    }

    fn chart(stacked: bool, markers: usize) -> Chart {
        let pts = |k: f64| (0..50).map(|i| (i as f64 * 1000.0, k * i as f64)).collect::<Vec<_>>();
        Chart {
            title: "t <1>".into(),
            x_label: "guest accesses".into(),
            y_label: "bytes".into(),
            y_scale: Scale::Bytes,
            series: vec![Series::new("4K", COLOR_4K, pts(4096.0)), Series::new("2M", COLOR_2M, pts(2.0 * 1048576.0))],
            stacked,
            markers: (0..markers)
                .map(|i| Marker {
                    x: 1000.0 * (i as f64 * 3.0),
                    badge: (i + 1).to_string(),
                    label: "dirty-log-on".into(),
                    title: "a & b".into(),
                })
                .collect(),
            marker_labels: true,
            bands: vec![
                Band { start: 0.0, end: 20_000.0, name: "boot".into() },
                Band { start: 20_000.0, end: 49_000.0, name: "serve <1>".into() },
            ],
            width: 900.0,
            height: 300.0,
        }
    }

    #[test]
    fn charts_are_well_formed_xml() {
        for stacked in [false, true] {
            for markers in [0, 3, 40] {
                let svg = chart(stacked, markers).render();
                let doc = parse(&svg);
                assert_eq!(doc.root_element().tag_name().name(), "svg");
                assert!(doc.descendants().filter(|n| n.has_tag_name("path")).count() >= 2);
            }
        }
    }

    #[test]
    fn dense_markers_do_not_overlap() {
        let c = chart(false, 40);
        let xs: Vec<(f64, &Marker)> = c.markers.iter().map(|m| (m.x / 500.0, m)).collect();
        let placed = place_labels(&xs, 2);
        // Some labels are dropped or shortened, none overlap within a row.
        let mut last = [f64::NEG_INFINITY; 2];
        for ((x, _), p) in xs.iter().zip(&placed) {
            if let Some((row, text)) = p {
                assert!(x - 4.0 >= last[*row] + 4.0);
                last[*row] = x - 4.0 + text_width(text, 11.0) + 10.0;
            }
        }
        assert!(placed.iter().any(|p| p.is_none()));
    }

    #[test]
    fn empty_chart_says_so() {
        let mut c = chart(false, 0);
        c.series.iter_mut().for_each(|s| s.points.clear());
        let svg = c.render();
        parse(&svg);
        assert!(svg.contains("no samples"));
    }

    #[test]
    fn bar_chart_is_well_formed() {
        let b = BarChart {
            title: "why".into(),
            x_label: "share".into(),
            scale: Scale::Percent,
            bars: vec![
                Bar { label: "host-small".into(), value: 0.6, value_text: "60%".into(), title: "x < y".into() },
                Bar { label: "misaligned".into(), value: 0.001, value_text: "0.1%".into(), title: "z".into() },
            ],
            color: COLOR_4K.into(),
            width: 900.0,
        };
        let svg = b.render();
        let doc = parse(&svg);
        assert_eq!(doc.descendants().filter(|n| n.has_tag_name("rect")).count(), 2);
        let empty = BarChart { bars: vec![], ..b };
        parse(&empty.render());
    }
}
