//! The per-phase access generator: address sources, the access-kind mix and the vCPU rotation.

use std::fs::File;
use std::io::BufReader;

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::lackey::{LackeyError, LackeyReader};
use super::spec::{GvaRange, Pattern, PhaseSpec, CACHE_LINE};
use super::zipf::ZipfSampler;
use super::{Access, AccessKind};

/// State of one running phase.
pub(super) struct PhaseGen {
    rng: ChaCha8Rng,
    mix: KindMix,
    source: Source,
    code: Option<Lines>,
    vcpus: u32,
    quantum: u32,
    vcpu: u32,
    quantum_left: u32,
}

impl PhaseGen {
    /// Start phase number `index` of a workload seeded with `seed`.
    pub(super) fn new(spec: &PhaseSpec, seed: u64, index: u64) -> Result<Self, LackeyError> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(index);
        let range = spec.range;
        let source = match &spec.pattern {
            Pattern::Sequential { step } => Source::Sweep(Sweep::new(range, spec.vcpus, *step, u64::MAX)),
            Pattern::Strided { stride, step } => Source::Sweep(Sweep::new(range, spec.vcpus, *stride, *step)),
            Pattern::Uniform => Source::Uniform(Lines::new(range)),
            Pattern::Zipf { s, hot_set } => Source::Zipf(Box::new(HotSet::new(range, *s, *hot_set, &mut rng))),
            Pattern::Trace { path } => {
                let reader = LackeyReader::open(path)?;
                Source::Trace(Box::new(Trace { reader, range, yielded: 0, once: false }))
            }
            Pattern::TraceOnce { path } => {
                let reader = LackeyReader::open(path)?;
                Source::Trace(Box::new(Trace { reader, range, yielded: 0, once: true }))
            }
        };
        Ok(PhaseGen {
            rng,
            mix: KindMix::new(spec.write_ratio, spec.exec_ratio),
            source,
            code: spec.code.map(Lines::new),
            vcpus: spec.vcpus.max(1),
            quantum: spec.quantum.max(1),
            vcpu: 0,
            quantum_left: spec.quantum.max(1),
        })
    }

    /// The next access.
    #[inline]
    /// The next access; `None` when a trace played once has ended.
    pub(super) fn next_access(&mut self) -> Result<Option<Access>, LackeyError> {
        if self.quantum_left == 0 {
            self.vcpu += 1;
            if self.vcpu == self.vcpus {
                self.vcpu = 0;
            }
            self.quantum_left = self.quantum;
        }
        self.quantum_left -= 1;
        let vcpu = self.vcpu;
        let rng = &mut self.rng;
        let (gva, kind) = match &mut self.source {
            Source::Trace(t) => match t.next()? {
                Some(a) => a,
                None => return Ok(None),
            },
            source => {
                let kind = self.mix.pick(rng);
                let gva = match (&self.code, kind) {
                    (Some(code), AccessKind::Exec) => code.pick(rng.next_u64()),
                    _ => source.next_gva(vcpu, rng),
                };
                (gva, kind)
            }
        };
        Ok(Some(Access { vcpu, gva, kind }))
    }
}

/// Chooses read / write / exec from 32 random bits against fixed thresholds; one random word
/// serves two accesses.
struct KindMix {
    /// `Some(kind)` when every access has that kind (no random draw).
    fixed: Option<AccessKind>,
    /// Values below this are exec.
    exec_below: u64,
    /// Values below this (and not exec) are writes.
    write_below: u64,
    /// Unused random bits: the low 32 bits of `spare` when `has_spare`.
    spare: u64,
    has_spare: bool,
}

impl KindMix {
    fn new(write_ratio: f64, exec_ratio: f64) -> Self {
        let scale = |r: f64| (r.clamp(0.0, 1.0) * 4_294_967_296.0).round() as u64;
        let fixed = if write_ratio <= 0.0 && exec_ratio <= 0.0 {
            Some(AccessKind::Read)
        } else if write_ratio >= 1.0 {
            Some(AccessKind::Write)
        } else if exec_ratio >= 1.0 {
            Some(AccessKind::Exec)
        } else {
            None
        };
        let exec_below = scale(exec_ratio);
        KindMix { fixed, exec_below, write_below: exec_below + scale(write_ratio), spare: 0, has_spare: false }
    }

    #[inline]
    fn pick(&mut self, rng: &mut ChaCha8Rng) -> AccessKind {
        if let Some(k) = self.fixed {
            return k;
        }
        let r = if self.has_spare {
            self.has_spare = false;
            self.spare
        } else {
            let w = rng.next_u64();
            self.spare = w >> 32;
            self.has_spare = true;
            w & 0xffff_ffff
        };
        if r < self.exec_below {
            AccessKind::Exec
        } else if r < self.write_below {
            AccessKind::Write
        } else {
            AccessKind::Read
        }
    }
}

/// Uniform cache lines of a range.
struct Lines {
    start: u64,
    lines: u64,
}

impl Lines {
    fn new(range: GvaRange) -> Self {
        Lines { start: range.start, lines: (range.len / CACHE_LINE).max(1) }
    }

    #[inline]
    fn pick(&self, r: u64) -> u64 {
        self.start + mul_high(r, self.lines) * CACHE_LINE
    }
}

/// `floor(r * n / 2^64)`: maps a random word onto `0..n` without division.
#[inline]
fn mul_high(r: u64, n: u64) -> u64 {
    ((u128::from(r) * u128::from(n)) >> 64) as u64
}

enum Source {
    Sweep(Sweep),
    Uniform(Lines),
    Zipf(Box<HotSet>),
    Trace(Box<Trace>),
}

impl Source {
    #[inline]
    fn next_gva(&mut self, vcpu: u32, rng: &mut ChaCha8Rng) -> u64 {
        match self {
            Source::Sweep(s) => s.next(vcpu),
            Source::Uniform(l) => l.pick(rng.next_u64()),
            Source::Zipf(h) => h.next(rng),
            // Trace accesses are produced by `Trace::next`, never here.
            Source::Trace(t) => t.range.start,
        }
    }
}

/// Sequential and strided sweeps: every vCPU walks its own slice of the range.
struct Sweep {
    /// Per vCPU: slice start, slice length, column, offset of the next access in the slice.
    slices: Vec<Slice>,
    stride: u64,
    /// Column shift at a wrap (`u64::MAX`: no columns, a plain sequential sweep).
    column_step: u64,
}

#[derive(Clone, Copy)]
struct Slice {
    start: u64,
    len: u64,
    column: u64,
    offset: u64,
}

impl Sweep {
    fn new(range: GvaRange, vcpus: u32, stride: u64, column_step: u64) -> Self {
        let n = u128::from(vcpus.max(1));
        let bound = |i: u128| range.start + ((u128::from(range.len) * i / n) as u64 & !(CACHE_LINE - 1));
        let slices = (0..n)
            .map(|i| {
                let (lo, hi) = (bound(i), if i + 1 == n { range.end() } else { bound(i + 1) });
                // Tiny ranges split among many vCPUs: every vCPU sweeps the whole range.
                if hi > lo {
                    Slice { start: lo, len: hi - lo, column: 0, offset: 0 }
                } else {
                    Slice { start: range.start, len: range.len, column: 0, offset: 0 }
                }
            })
            .collect();
        Sweep { slices, stride, column_step }
    }

    #[inline]
    fn next(&mut self, vcpu: u32) -> u64 {
        let stride = self.stride;
        let column_step = self.column_step;
        let s = &mut self.slices[vcpu as usize];
        let gva = s.start + s.offset;
        let next = s.offset + stride;
        s.offset = if next < s.len {
            next
        } else if column_step == u64::MAX {
            0
        } else {
            s.column += column_step;
            if s.column >= stride.min(s.len) {
                s.column = 0;
            }
            s.column
        };
        gva
    }
}

/// A Zipf hot set of 4 KiB pages spread over the range.
struct HotSet {
    sampler: ZipfSampler,
    start: u64,
    /// Pages between two hot-set slots.
    spacing: u64,
    placement: Placement,
}

/// Where the page of each rank lives: a seeded bijection of `0..n`, the affine map
/// `x * mult + add` modulo the next power of two, cycle-walked back into `0..n` (fewer than two
/// steps on average; no table, no division).
struct Placement {
    n: u64,
    mask: u64,
    mult: u64,
    add: u64,
}

impl Placement {
    #[inline]
    fn slot(&self, rank: u64) -> u64 {
        let mut x = rank;
        loop {
            x = x.wrapping_mul(self.mult).wrapping_add(self.add) & self.mask;
            if x < self.n {
                return x;
            }
        }
    }
}

impl HotSet {
    fn new(range: GvaRange, s: f64, hot_set: u64, rng: &mut ChaCha8Rng) -> Self {
        let range_pages = (range.len / 4096).max(1);
        let n = (hot_set / 4096).clamp(1, range_pages.min(1 << 32));
        // Validation guarantees a finite s >= 0; n is clamped into 1..=2^32 above.
        let sampler = ZipfSampler::new(n, s).unwrap_or_else(|| fallback_sampler(n));
        let mask = n.next_power_of_two() - 1;
        let placement = Placement { n, mask, mult: rng.next_u64() | 1, add: rng.next_u64() };
        HotSet { sampler, start: range.start, spacing: range_pages / n, placement }
    }

    #[inline]
    fn next(&mut self, rng: &mut ChaCha8Rng) -> u64 {
        let r = rng.next_u64();
        let rank = self.sampler.sample_from(r, rng);
        let line = (r >> 26) & (4096 / CACHE_LINE - 1);
        self.start + self.placement.slot(rank) * self.spacing * 4096 + line * CACHE_LINE
    }
}

/// Only reached if validation was bypassed (a bad exponent): uniform over the hot set.
#[cold]
fn fallback_sampler(n: u64) -> ZipfSampler {
    match ZipfSampler::new(n, 0.0) {
        Some(z) => z,
        None => fallback_sampler(1),
    }
}

/// A trace replay folded into the phase range.
struct Trace {
    reader: LackeyReader<BufReader<File>>,
    range: GvaRange,
    /// Accesses yielded since the last rewind.
    yielded: u64,
    /// Play the trace once (no rewind): it may be a pipe.
    once: bool,
}

impl Trace {
    fn next(&mut self) -> Result<Option<(u64, AccessKind)>, LackeyError> {
        loop {
            match self.reader.next_access()? {
                Some((addr, kind)) => {
                    self.yielded += 1;
                    return Ok(Some((self.range.start + addr % self.range.len, kind)));
                }
                None if self.yielded == 0 => {
                    return Err(LackeyError::Empty { name: self.reader_name() });
                }
                None if self.once => return Ok(None),
                None => {
                    self.reader.rewind()?;
                    self.yielded = 0;
                }
            }
        }
    }

    fn reader_name(&self) -> String {
        self.reader.name().to_string()
    }
}
