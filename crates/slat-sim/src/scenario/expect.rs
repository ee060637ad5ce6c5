//! Expectations: what a run should show, checked at the end of the run, for one memslot, or
//! at the end of a phase.
//!
//! ```toml
//! [expect]                       # end of run, whole VM
//! pages_2m = ">= 900"            # a comparison string: <op> <number>, op in == != >= <= > <
//! isolation_violations = 0       # a bare number means ==
//! huge_fraction = "> 0.9"
//!
//! [expect.why_not_huge]          # fault decisions by primary reason (`WhyNotHuge::name`)
//! dirty-logging = "> 0"          # present
//! misaligned = 0                 # absent
//!
//! [[expect.slot]]                # one memslot
//! id = 1
//! pages_2m = 0
//!
//! [[expect.after_phase]]         # at the end of a phase
//! phase = "migrate"
//! pages_2m = "<= 10"
//! ```

use std::fmt;

use super::error::Location;
use slat_mmu::WhyNotHuge;

use super::names::Metric;

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CmpOp {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `>=`
    Ge,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `<`
    Lt,
}

impl CmpOp {
    /// The operator as written.
    pub const fn symbol(self) -> &'static str {
        match self {
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
            CmpOp::Ge => ">=",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Lt => "<",
        }
    }
}

/// `<op> <number>`: what a measured value must satisfy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Comparison {
    /// The operator.
    pub op: CmpOp,
    /// The right-hand side.
    pub value: f64,
}

/// What comparisons look like, for error messages.
pub(crate) const COMPARISON_SYNTAX: &str =
    "expected a number (meaning ==) or a string \"<op> <number>\" with op one of \"==\", \"!=\", \">=\", \"<=\", \">\", \"<\"";

impl Comparison {
    /// Parse `">= 10"`, `"< 0.5"`, `"== 0"` or a bare number (`"3"`, meaning `==`).
    pub fn parse(text: &str) -> Result<Comparison, String> {
        let t = text.trim();
        let ops = [
            ("==", CmpOp::Eq),
            ("!=", CmpOp::Ne),
            (">=", CmpOp::Ge),
            ("<=", CmpOp::Le),
            (">", CmpOp::Gt),
            ("<", CmpOp::Lt),
        ];
        let (op, rest) =
            ops.iter().find_map(|(s, op)| t.strip_prefix(s).map(|rest| (*op, rest))).unwrap_or((CmpOp::Eq, t));
        let number: String = rest.trim().chars().filter(|&c| c != '_').collect();
        match number.parse::<f64>() {
            Ok(value) if value.is_finite() => Ok(Comparison { op, value }),
            _ => Err(COMPARISON_SYNTAX.to_string()),
        }
    }

    /// From a TOML value: an integer or float (==), or a comparison string.
    pub(crate) fn from_toml(v: &toml::Value) -> Result<Comparison, String> {
        match v {
            toml::Value::Integer(i) => Ok(Comparison { op: CmpOp::Eq, value: *i as f64 }),
            toml::Value::Float(f) if f.is_finite() => Ok(Comparison { op: CmpOp::Eq, value: *f }),
            toml::Value::String(s) => Comparison::parse(s),
            _ => Err(COMPARISON_SYNTAX.to_string()),
        }
    }

    /// Whether `actual` satisfies the comparison.
    pub fn holds(&self, actual: f64) -> bool {
        match self.op {
            CmpOp::Eq => actual == self.value,
            CmpOp::Ne => actual != self.value,
            CmpOp::Ge => actual >= self.value,
            CmpOp::Le => actual <= self.value,
            CmpOp::Gt => actual > self.value,
            CmpOp::Lt => actual < self.value,
        }
    }
}

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.op.symbol(), self.value)
    }
}

/// Where and when a check applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// At the end of the run, over the whole VM.
    Run,
    /// At the end of the run, for one memslot.
    Slot(u32),
    /// At the end of a phase (index into the scenario's phases), over the whole VM: after its
    /// last access and the events placed at its end, before the events at the start of the next
    /// phase.
    AfterPhase(usize),
}

/// What a check measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    /// A statistic.
    Metric(Metric),
    /// The count of fault decisions whose primary why-not-huge reason is this one.
    WhyNotHuge(WhyNotHuge),
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Metric(m) => f.write_str(m.name()),
            Subject::WhyNotHuge(r) => write!(f, "why_not_huge.{r}"),
        }
    }
}

/// One expectation.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// When and over what.
    pub scope: Scope,
    /// What is measured.
    pub subject: Subject,
    /// What the measured value must satisfy.
    pub comparison: Comparison,
    /// The key as written (`expect.slot[0].pages_2m`).
    pub key: String,
    /// Where it is written.
    pub location: Location,
}

impl Check {
    /// Whether `actual` passes the check.
    pub fn holds(&self, actual: f64) -> bool {
        self.comparison.holds(actual)
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.key, self.comparison)
    }
}
