//! Printing checks: one line per check, counted, and the overall verdict.

use core::fmt::{self, Write};

/// Where the checks of one run go.
pub struct Report<'a> {
    out: &'a mut dyn Write,
    arch: &'static str,
    /// Checks that passed.
    pub passed: u32,
    /// Checks that failed.
    pub failed: u32,
}

impl<'a> Report<'a> {
    /// A report for `arch` printing to `out`.
    pub fn new(out: &'a mut dyn Write, arch: &'static str) -> Self {
        Report { out, arch, passed: 0, failed: 0 }
    }

    /// Record one check and print it.
    pub fn check(&mut self, ok: bool, what: fmt::Arguments) -> bool {
        if ok {
            self.passed += 1;
        } else {
            self.failed += 1;
        }
        let _ = writeln!(self.out, "[{}] {} {}", self.arch, if ok { "ok  " } else { "FAIL" }, what);
        ok
    }

    /// Print an informational line (not a check).
    pub fn note(&mut self, what: fmt::Arguments) {
        let _ = writeln!(self.out, "[{}] note {}", self.arch, what);
    }

    /// Print a section heading.
    pub fn section(&mut self, what: &str) {
        let _ = writeln!(self.out, "[{}] == {}", self.arch, what);
    }

    /// Print the verdict line; true when every check passed.
    pub fn finish(&mut self) -> bool {
        let ok = self.failed == 0 && self.passed > 0;
        let _ = writeln!(
            self.out,
            "RESULT {}: {} ({} checks passed, {} failed)",
            self.arch,
            if ok { "PASS" } else { "FAIL" },
            self.passed,
            self.failed
        );
        ok
    }
}

/// `check!(report, condition, "format", args...)`.
#[macro_export]
macro_rules! check {
    ($r:expr, $ok:expr, $($fmt:tt)+) => {
        $r.check($ok, format_args!($($fmt)+))
    };
}
