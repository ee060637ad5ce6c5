//! What a phase is: its access pattern, range, length, access mix and vCPU interleaving.

use std::path::PathBuf;

use super::WorkloadError;

/// Granule of generated addresses: random patterns produce cache-line-aligned addresses.
pub const CACHE_LINE: u64 = 64;

/// Accesses a vCPU makes per round-robin turn unless a phase says otherwise.
pub const DEFAULT_QUANTUM: u32 = 256;

/// A guest virtual address range `[start, start + len)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GvaRange {
    /// First guest virtual address.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
}

impl GvaRange {
    /// The range `[start, start + len)`.
    pub const fn new(start: u64, len: u64) -> Self {
        GvaRange { start, len }
    }

    /// One past the last address (saturating).
    pub const fn end(&self) -> u64 {
        self.start.saturating_add(self.len)
    }

    /// Whether `gva` lies in the range.
    pub const fn contains(&self, gva: u64) -> bool {
        gva >= self.start && gva - self.start < self.len
    }
}

/// How a phase picks addresses.
#[derive(Debug, Clone, PartialEq)]
pub enum Pattern {
    /// Walk upward `step` bytes at a time. Each vCPU sweeps its own equal slice of the range
    /// (like a parallel memset) and wraps around at the end of its slice.
    Sequential {
        /// Bytes between consecutive accesses of one vCPU (> 0).
        step: u64,
    },
    /// Cache-line-aligned addresses drawn uniformly over the whole range.
    Uniform,
    /// A Zipf-distributed hot set: `hot_set` bytes worth of 4 KiB pages, spread evenly over the
    /// range (every `range.len / hot_set`-th page, in a seeded shuffled order of rank); the page
    /// of rank `k` (1-based) is drawn with probability proportional to `1 / k^s`, then a random
    /// cache line in it. `s = 0` is uniform over the hot set; `s` near 1 is a typical key-value
    /// cache; larger `s` concentrates further.
    Zipf {
        /// Exponent (>= 0, finite).
        s: f64,
        /// Bytes of 4 KiB pages in the hot set (a multiple of 4 KiB, 4 KiB up to the range length).
        hot_set: u64,
    },
    /// A column walk, as when reading a row-major matrix by columns: accesses `stride` bytes
    /// apart; past the end of the vCPU's slice it goes back to the start shifted by `step` bytes
    /// (the next column), and back to offset 0 after `stride` bytes of columns. Each vCPU walks
    /// its own equal slice of the range.
    Strided {
        /// Bytes between consecutive accesses of one vCPU (> 0).
        stride: u64,
        /// Column shift at each wrap (> 0).
        step: u64,
    },
    /// Replay a valgrind lackey trace (`valgrind --tool=lackey --trace-mem=yes`). Kinds come
    /// from the trace (`I` = exec, `L` = read, `S` = write, `M` = read then write); the phase's
    /// ratios are ignored. Each trace address `a` is folded into the range as
    /// `range.start + a % range.len`: page offsets and the trace's locality survive (when the
    /// range length is a multiple of 4 KiB), distinct trace pages `range.len` apart alias onto
    /// one guest page. When the trace ends before the phase does it is replayed from the start.
    Trace {
        /// The trace file.
        path: PathBuf,
    },
    /// Replay a lackey trace once, streamed: the phase ends where the trace ends (its
    /// `accesses` is only an upper bound). For traces that can be read only once (a pipe).
    TraceOnce {
        /// The trace file (`/dev/stdin` for standard input).
        path: PathBuf,
    },
}

impl Pattern {
    /// The pattern's kind name as written in scenarios (`sequential`, `uniform`, `zipf`,
    /// `strided`, `trace`).
    pub fn kind_name(&self) -> &'static str {
        match self {
            Pattern::Sequential { .. } => "sequential",
            Pattern::Uniform => "uniform",
            Pattern::Zipf { .. } => "zipf",
            Pattern::Strided { .. } => "strided",
            Pattern::Trace { .. } | Pattern::TraceOnce { .. } => "trace",
        }
    }
}

/// One phase of a workload.
#[derive(Debug, Clone, PartialEq)]
pub struct PhaseSpec {
    /// Name, for reports and errors.
    pub name: String,
    /// How addresses are picked.
    pub pattern: Pattern,
    /// The guest virtual range the pattern touches (its working set).
    pub range: GvaRange,
    /// Number of accesses in the phase.
    pub accesses: u64,
    /// Fraction of accesses that are stores, 0..=1.
    pub write_ratio: f64,
    /// Fraction of accesses that are instruction fetches, 0..=1 (`write_ratio + exec_ratio <= 1`).
    pub exec_ratio: f64,
    /// Where instruction fetches go: uniformly random cache lines of this range. `None`: at the
    /// pattern's addresses, like the data accesses.
    pub code: Option<GvaRange>,
    /// vCPUs taking part (numbered `0..vcpus`), >= 1.
    pub vcpus: u32,
    /// Accesses per vCPU turn, >= 1.
    pub quantum: u32,
}

impl PhaseSpec {
    /// A read-only phase on one vCPU with the default quantum.
    pub fn new(name: impl Into<String>, pattern: Pattern, range: GvaRange, accesses: u64) -> Self {
        PhaseSpec {
            name: name.into(),
            pattern,
            range,
            accesses,
            write_ratio: 0.0,
            exec_ratio: 0.0,
            code: None,
            vcpus: 1,
            quantum: DEFAULT_QUANTUM,
        }
    }

    /// Set the store and instruction-fetch fractions.
    pub fn with_mix(mut self, write_ratio: f64, exec_ratio: f64) -> Self {
        self.write_ratio = write_ratio;
        self.exec_ratio = exec_ratio;
        self
    }

    /// Set the vCPU count and the round-robin quantum.
    pub fn with_vcpus(mut self, vcpus: u32, quantum: u32) -> Self {
        self.vcpus = vcpus;
        self.quantum = quantum;
        self
    }

    /// Send instruction fetches to `code`.
    pub fn with_code(mut self, code: GvaRange) -> Self {
        self.code = Some(code);
        self
    }

    /// Check every parameter; the error names the parameter.
    pub fn validate(&self) -> Result<(), WorkloadError> {
        let bad = |field: &'static str, reason: String| {
            Err(WorkloadError::InvalidPhase { phase: self.name.clone(), field, reason })
        };
        if self.range.len == 0 {
            return bad("range", "the range is empty".into());
        }
        if self.range.start.checked_add(self.range.len).is_none() {
            return bad(
                "range",
                format!("{:#x} + {:#x} overflows the address space", self.range.start, self.range.len),
            );
        }
        if let Some(code) = self.code {
            if code.len < CACHE_LINE {
                return bad("code", "the code range is shorter than a cache line".into());
            }
            if code.start.checked_add(code.len).is_none() {
                return bad("code", "the code range overflows the address space".into());
            }
        }
        for (field, r) in [("write_ratio", self.write_ratio), ("exec_ratio", self.exec_ratio)] {
            if !(0.0..=1.0).contains(&r) {
                return bad(field, format!("{r} is not within 0..=1"));
            }
        }
        if self.write_ratio + self.exec_ratio > 1.0 + 1e-12 {
            return bad(
                "exec_ratio",
                format!("write_ratio + exec_ratio = {} exceeds 1", self.write_ratio + self.exec_ratio),
            );
        }
        if self.vcpus == 0 {
            return bad("vcpus", "at least one vCPU is needed".into());
        }
        if self.quantum == 0 {
            return bad("quantum", "the quantum must be at least one access".into());
        }
        match &self.pattern {
            Pattern::Sequential { step } => {
                if *step == 0 {
                    return bad("step", "the step must be > 0".into());
                }
            }
            Pattern::Uniform => {
                if self.range.len < CACHE_LINE {
                    return bad("range", "a uniform range needs at least one cache line".into());
                }
            }
            Pattern::Zipf { s, hot_set } => {
                if !s.is_finite() || *s < 0.0 {
                    return bad("s", format!("{s} is not a finite exponent >= 0"));
                }
                if *hot_set == 0 || hot_set % 4096 != 0 {
                    return bad("hot_set", format!("{hot_set:#x} is not a non-zero multiple of 4 KiB"));
                }
                if *hot_set > self.range.len {
                    return bad("hot_set", format!("{hot_set:#x} is larger than the range ({:#x})", self.range.len));
                }
                if hot_set / 4096 > u64::from(u32::MAX) {
                    return bad("hot_set", "more than 2^32 pages".into());
                }
            }
            Pattern::Strided { stride, step } => {
                if *stride == 0 {
                    return bad("stride", "the stride must be > 0".into());
                }
                if *step == 0 {
                    return bad("step", "the step must be > 0".into());
                }
            }
            Pattern::Trace { path } | Pattern::TraceOnce { path } => {
                if path.as_os_str().is_empty() {
                    return bad("trace", "empty path".into());
                }
            }
        }
        Ok(())
    }
}
