//! Guest workloads: deterministic streams of guest memory accesses `(vcpu, gva, kind)`.
//!
//! A [`Workload`] plays a list of [`PhaseSpec`]s one after the other. Each phase has an access
//! [`Pattern`] (sequential, uniform, Zipf hot set, strided, or the replay of a valgrind lackey
//! trace), a guest-virtual range it touches, an access count, and the fractions of writes and
//! instruction fetches. The phase's accesses are dealt to its vCPUs round-robin, `quantum`
//! accesses per turn, so vCPU interleaving is deterministic too.
//!
//! Everything random comes from one ChaCha8 generator seeded with the workload seed; phase `i`
//! uses ChaCha stream `i`, so changing one phase never changes the addresses of another. The same
//! seed and phases always give the same accesses, on every platform.
//!
//! The iterator sits on the simulator's hot path: one access costs a few nanoseconds, it
//! allocates only when a phase starts (per-vCPU cursors, the Zipf alias table, a trace reader).
//! [`Workload::fill`] hands out accesses in batches.
//!
//! ```
//! use slat_sim::workload::{AccessKind, GvaRange, Pattern, PhaseSpec, Workload};
//!
//! let phase = PhaseSpec::new("scan", Pattern::Sequential { step: 4096 }, GvaRange::new(0, 1 << 20), 512);
//! let accesses: Vec<_> = Workload::new(7, vec![phase]).unwrap().collect();
//! assert_eq!(accesses.len(), 512);
//! assert_eq!(accesses[1].gva - accesses[0].gva, 4096);
//! assert!(accesses.iter().all(|a| a.kind == AccessKind::Read));
//! ```

mod generator;
pub mod lackey;
mod spec;
mod zipf;

use std::fmt;

use generator::PhaseGen;
pub use lackey::{LackeyError, LackeyLine, LackeyOp, LackeyReader};
pub use spec::{GvaRange, Pattern, PhaseSpec, CACHE_LINE, DEFAULT_QUANTUM};
pub use zipf::ZipfSampler;

/// What a guest access does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AccessKind {
    /// A data load.
    Read,
    /// A data store.
    Write,
    /// An instruction fetch.
    Exec,
}

impl AccessKind {
    /// Lowercase name (`read`, `write`, `exec`).
    pub const fn name(self) -> &'static str {
        match self {
            AccessKind::Read => "read",
            AccessKind::Write => "write",
            AccessKind::Exec => "exec",
        }
    }
}

impl fmt::Display for AccessKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One guest memory access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Access {
    /// The vCPU that makes the access (0-based).
    pub vcpu: u32,
    /// Guest virtual address.
    pub gva: u64,
    /// Load, store or instruction fetch.
    pub kind: AccessKind,
}

/// Why a workload cannot be built or cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    /// A phase's parameters are out of range.
    #[error("phase {phase:?}: {field}: {reason}")]
    InvalidPhase {
        /// Phase name.
        phase: String,
        /// The offending parameter, in the phase's words (`range`, `write_ratio`, ...).
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A trace phase's file could not be read or holds a malformed line.
    #[error("phase {phase:?}: {error}")]
    Trace {
        /// Phase name.
        phase: String,
        /// The trace error, with the file and line.
        #[source]
        error: LackeyError,
    },
}

/// A deterministic stream of guest accesses made of phases.
///
/// Iterate it (or call [`fill`](Self::fill)) to get the accesses. A trace phase can fail mid-way
/// (unreadable file, malformed line): the iterator then ends early and [`error`](Self::error)
/// tells why; check it after the iteration ends.
pub struct Workload {
    seed: u64,
    phases: Vec<PhaseSpec>,
    /// Index of the phase being played; `phases.len()` when done.
    phase: usize,
    /// Generator of the current phase (`None` before the first access and after the end).
    gen: Option<PhaseGen>,
    /// Accesses left in the current phase.
    left: u64,
    /// Accesses issued so far over all phases.
    issued: u64,
    /// Sticky error that ended the stream.
    error: Option<WorkloadError>,
}

impl Workload {
    /// A workload playing `phases` in order, all randomness derived from `seed`.
    ///
    /// Checks every phase (see [`PhaseSpec::validate`]) and that every trace file can be opened;
    /// traces are otherwise read lazily, when their phase starts.
    pub fn new(seed: u64, phases: Vec<PhaseSpec>) -> Result<Self, WorkloadError> {
        for p in &phases {
            p.validate()?;
            if let Pattern::Trace { path } | Pattern::TraceOnce { path } = &p.pattern {
                std::fs::File::open(path).map_err(|e| WorkloadError::Trace {
                    phase: p.name.clone(),
                    error: LackeyError::Io { name: path.display().to_string(), error: e },
                })?;
            }
        }
        Ok(Workload { seed, phases, phase: 0, gen: None, left: 0, issued: 0, error: None })
    }

    /// The phases, in play order.
    pub fn phases(&self) -> &[PhaseSpec] {
        &self.phases
    }

    /// Total accesses of all phases.
    pub fn total_accesses(&self) -> u64 {
        self.phases.iter().map(|p| p.accesses).sum()
    }

    /// Accesses issued so far.
    pub fn issued(&self) -> u64 {
        self.issued
    }

    /// Index of the phase the next access will belong to (`phases().len()` once the stream has
    /// ended).
    pub fn current_phase(&self) -> usize {
        if self.gen.is_some() && self.left > 0 {
            self.phase
        } else {
            // The next access starts the next non-empty phase.
            let start = if self.gen.is_some() { self.phase + 1 } else { self.phase };
            (start..self.phases.len()).find(|&i| self.phases[i].accesses > 0).unwrap_or(self.phases.len())
        }
    }

    /// The error that ended the stream early, if any.
    pub fn error(&self) -> Option<&WorkloadError> {
        self.error.as_ref()
    }

    /// Take the error that ended the stream early, if any.
    pub fn take_error(&mut self) -> Option<WorkloadError> {
        self.error.take()
    }

    /// Fill `out` with the next accesses; returns how many were written (less than `out.len()`
    /// only at the end of the stream).
    pub fn fill(&mut self, out: &mut [Access]) -> usize {
        let mut n = 0;
        while n < out.len() {
            if self.left == 0 && !self.enter_next_phase() {
                break;
            }
            let gen = match self.gen.as_mut() {
                Some(g) => g,
                None => break,
            };
            let batch = (out.len() - n).min(self.left.min(usize::MAX as u64) as usize);
            let mut done = 0;
            while done < batch {
                match gen.next_access() {
                    Ok(Some(a)) => {
                        out[n + done] = a;
                        done += 1;
                    }
                    Ok(None) => {
                        self.end();
                        break;
                    }
                    Err(error) => {
                        self.fail(error);
                        break;
                    }
                }
            }
            n += done;
            self.left = self.left.saturating_sub(done as u64);
            self.issued += done as u64;
            if self.error.is_some() || self.ended() {
                break;
            }
        }
        n
    }

    /// Move to the next phase with accesses; false at the end of the stream or on error.
    #[cold]
    fn enter_next_phase(&mut self) -> bool {
        if self.error.is_some() {
            return false;
        }
        let mut next = if self.gen.is_some() { self.phase + 1 } else { self.phase };
        self.gen = None;
        while next < self.phases.len() && self.phases[next].accesses == 0 {
            next += 1;
        }
        self.phase = next;
        let Some(spec) = self.phases.get(next) else {
            return false;
        };
        match PhaseGen::new(spec, self.seed, next as u64) {
            Ok(g) => {
                self.gen = Some(g);
                self.left = spec.accesses;
                true
            }
            Err(error) => {
                self.fail(error);
                false
            }
        }
    }

    /// End the stream here (a trace played once reached its end).
    #[cold]
    fn end(&mut self) {
        self.gen = None;
        self.left = 0;
        self.phase = self.phases.len();
    }

    fn ended(&self) -> bool {
        self.gen.is_none() && self.phase >= self.phases.len()
    }

    #[cold]
    fn fail(&mut self, error: LackeyError) {
        let phase = self.phases.get(self.phase).map(|p| p.name.clone()).unwrap_or_default();
        self.error = Some(WorkloadError::Trace { phase, error });
        self.gen = None;
        self.left = 0;
        self.phase = self.phases.len();
    }
}

impl Iterator for Workload {
    type Item = Access;

    #[inline]
    fn next(&mut self) -> Option<Access> {
        if self.left == 0 && !self.enter_next_phase() {
            return None;
        }
        let gen = self.gen.as_mut()?;
        match gen.next_access() {
            Ok(Some(a)) => {
                self.left -= 1;
                self.issued += 1;
                Some(a)
            }
            Ok(None) => {
                self.end();
                None
            }
            Err(error) => {
                self.fail(error);
                None
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        if self.error.is_some() {
            return (0, Some(0));
        }
        let rest: u64 = self.total_accesses() - self.issued;
        let rest = usize::try_from(rest).unwrap_or(usize::MAX);
        // A trace phase may end the stream early on error.
        (0, Some(rest))
    }
}

impl fmt::Debug for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Workload")
            .field("seed", &self.seed)
            .field("phases", &self.phases)
            .field("phase", &self.phase)
            .field("issued", &self.issued)
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}
