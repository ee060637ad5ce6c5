//! Scenarios: TOML files that describe a whole simulated VM lifecycle — the host, the VM, its
//! memslots and their backings, the MMU policy, the workload phases, timed events, and what the
//! run is expected to show.
//!
//! A [`ScenarioSource`] holds the text of a scenario (a file, a string, or one of the
//! [`library`] scenarios) plus `set(key, value)` overrides; [`ScenarioSource::parse`] applies
//! the overrides, deserialises and validates, and returns a [`Scenario`] or a
//! [`ScenarioError`] that names the file, the line, the field and the accepted values:
//!
//! ```text
//! default.toml:14: policy.recover = "inplace": expected one of "zap", "in-place"
//! ```
//!
//! # The file
//!
//! ```toml
//! name = "example"                       # one word
//! description = "What the run shows"     # one line
//! seed = 1                               # everything random derives from it
//!
//! [host]
//! kind = "simulated"                     # or "linux": this machine's kernel (root), see below
//! memory = "8G"                          # sizes: integers (bytes, 0x.. allowed) or "4K" "2M" "1G" "1T"
//! fragmentation = 0.2                    # 0..=1 of free 2M blocks broken up by a pinned page
//! thp = "madvise"                        # "never" | "madvise" | "always"
//! shmem_huge = "never"                   # "never" | "always" | "within_size" | "advise"
//! hugetlb_2m = 0                         # pool pages
//! hugetlb_1g = 0
//! dax_size = "0"                         # DAX device size, dax_align = "2M" | "1G"
//! page_cache_max_order = 9
//!
//! [vm]
//! format = "ept4"                        # "ept4" "ept5" "npt" "arm64-l0" "arm64-l1" "sv39x4" "sv48x4"
//! vcpus = 4
//! [[vm.guest_pages]]                     # optional; default: each memslot at gva = gpa, 4K pages
//! gva = 0
//! len = "2G"
//! size = "2M"                            # "4K" | "2M" | "1G"
//! [vm.tlb]                               # optional overrides: l1_4k l1_2m l1_1g stlb stlb_1g = { entries, ways }
//! stlb = { entries = 2048, ways = 16 }
//! on_sigbus = "stop"                     # hugetlbfs pool empty at a fault: "stop" the run | "continue"
//!
//! [[memslot]]
//! id = 0
//! gpa = 0
//! size = "2G"
//! backing = "anonymous"                  # "anonymous" "anonymous-thp" "shmem" "hugetlbfs-2m" "hugetlbfs-1g"
//!                                        # "page-cache" "dax" "pfnmap"
//! hva_offset = 0                         # added to a 1G-aligned host address; 4096 breaks congruence
//! readonly = false
//! madvise_hugepage = true
//! at_boot = true                         # false: added by a memslot-add event
//!
//! [policy]
//! dirty_log = "split-on-fault"           # "write-protect" "split-on-fault" "eager-split" "hardware-dirty"
//! eager_split_chunk = 64                 # page-table pages per eager-split step
//! harvest = "get-and-clear"              # "get-and-clear" | "manual-clear"
//! initially_set = false                  # manual-clear only
//! recover = "in-place"                   # "zap" | "in-place"
//! nx_huge_pages = false
//! nx_recovery_ratio = 60
//! max_leaf = "1G"                        # CPU limit
//! # cap = "2M"                           # policy cap
//!
//! [[phase]]
//! name = "boot"
//! kind = "sequential"                    # "sequential" (step) "uniform" "zipf" (s, hot_set)
//!                                        # "strided" (stride, step) "trace" (trace = "file.lackey";
//!                                        # kind may then be left out)
//! gva = 0                                # the range the phase touches
//! len = "2G"
//! accesses = 524288
//! step = "4K"
//! write_ratio = 1.0                      # also exec_ratio, code_gva + code_len, vcpus, quantum
//!
//! [[event]]
//! phase = "boot"                         # the phase it happens in
//! at = 1000                              # after this many accesses of the phase (0 = at its start)
//! kind = "dirty-log-on"                  # parameters per kind: slot offset len gpa prot attribute
//!                                        # enable ratio amount unit
//!
//! [expect]                               # see the `expect` docs of `Check`
//! pages_2m = ">= 900"
//! ```
//!
//! Sizes, addresses and ranges are bytes; event ranges (`offset`, `len`) are relative to the
//! start of their memslot and default to the whole slot. Trace paths are relative to the
//! scenario file's directory. Unknown keys are errors.
//!
//! # On the real host: `host.kind = "linux"`
//!
//! The same file runs on this machine's kernel instead of the simulated host: each memslot is a
//! real mapping of the running process, made the way VMMs make it (`anonymous`: anonymous memory,
//! `anonymous-thp`: plus `MADV_HUGEPAGE`, `shmem`: a file on a private tmpfs mounted
//! `huge=<host.shmem_huge>`, `hugetlbfs-2m`/`-1g`: `memfd_create(MFD_HUGETLB)` from pools grown
//! by `host.hugetlb_2m`/`_1g` pages for the run and shrunk back after); faults populate the real
//! pages and the host leaf sizes the MMU sees are the kernel's (`PAGEMAP_SCAN`). `host.thp`
//! becomes per-mapping advice, never a system-wide change. Host events become real system calls
//! bracketed by the MMU notifier ([`LINUX_EVENTS`]); the others, the simulator-only `[host]`
//! knobs and the `page-cache`, `dax` and `pfnmap` backings are rejected before the run, as is
//! more real memory than [`Limits::real_memory`].

mod bytes;
mod document;
mod error;
mod event;
mod expect;
mod keys;
mod library;
mod names;
mod real_host;
mod resources;
mod schema;
mod validate;

use std::borrow::Cow;
use std::path::{Path, PathBuf};

pub use bytes::Bytes;
pub use document::Override;
pub use error::{ErrorDetails, ErrorKind, Location, ScenarioError};
pub use event::{Action, Event, SlotRange};
pub use expect::{Check, CmpOp, Comparison, Scope, Subject};
pub use keys::{KeyDoc, KEYS};
pub use library::{library, LibraryEntry};
pub use names::{
    page_size_from_name, page_size_name, Attribute, Backing, DirtyLog, EventKind, Format, Harvest, HostKind, Metric,
    OnSigbus, PhaseKind, Prot, Recover, ShmemHuge, Thp,
};
pub use real_host::{real_memory, LINUX_EVENTS};
pub use resources::{
    human_bytes, Estimate, Limits, MemoryPart, BYTES_PER_2M_BLOCK, BYTES_PER_4K_PAGE, TLB_ENTRY_BYTES,
};
pub use schema::{GuestPages, Host, Memslot, Policy, Tlb, TlbArray, Vm};

use document::{apply_override, DocPath, Located, Locator};
use slat_pt::PageSize;

use crate::workload::{PhaseSpec, Workload, WorkloadError};

/// A validated scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// Short name.
    pub name: String,
    /// One-line description.
    pub description: String,
    /// Seed of everything random in the run.
    pub seed: u64,
    /// The simulated host.
    pub host: Host,
    /// The guest.
    pub vm: Vm,
    /// Memslots, in file order (including those added later by events).
    pub memslots: Vec<Memslot>,
    /// Where each memslot is written (parallel to `memslots`), for errors raised during a run.
    pub memslot_locations: Vec<Location>,
    /// MMU policy.
    pub policy: Policy,
    /// Workload phases, in play order.
    pub phases: Vec<Phase>,
    /// Events, in firing order (by access count; file order at the same point).
    pub events: Vec<Event>,
    /// Expectations.
    pub checks: Vec<Check>,
    /// The file name the scenario came from.
    pub file: String,
    /// The overrides applied on top of the file.
    pub overrides: Vec<Override>,
}

/// One workload phase of a scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Phase {
    /// Name.
    pub name: String,
    /// Accesses issued before the phase starts (its first access's index in the run).
    pub start: u64,
    /// The workload phase.
    pub spec: PhaseSpec,
    /// Where it is written.
    pub location: Location,
    /// Whether `spec.accesses` is only an upper bound: the phase ends where its trace ends
    /// (a trace read from a pipe, whose length is not known before it is read).
    pub open_ended: bool,
}

impl Phase {
    /// One past the index of the phase's last access.
    pub fn end(&self) -> u64 {
        self.start + self.spec.accesses
    }
}

/// Bytes the guest page tables take at the top of the first boot memslot, for guest regions of
/// lengths `lens` (a 2 MiB multiple: page-table pages for every region plus room to spare).
pub fn guest_table_reserve(lens: impl IntoIterator<Item = u64>) -> u64 {
    let pages: u64 = lens.into_iter().map(|len| len / (2 << 20) + len / (1 << 30) + 8).sum();
    (pages * 4096).next_multiple_of(2 << 20)
}

impl Scenario {
    /// Accesses of the whole run.
    pub fn total_accesses(&self) -> u64 {
        self.phases.last().map_or(0, Phase::end)
    }

    /// The phase called `name` and its index.
    pub fn phase(&self, name: &str) -> Option<(usize, &Phase)> {
        self.phases.iter().enumerate().find(|(_, p)| p.name == name)
    }

    /// The memslot with id `id`.
    pub fn memslot(&self, id: u32) -> Option<&Memslot> {
        self.memslots.iter().find(|m| m.id == id)
    }

    /// The guest's page-table regions: `vm.guest_pages`, or when none are given every memslot
    /// mapped at gva = gpa with 4 KiB pages.
    pub fn guest_regions(&self) -> Vec<GuestPages> {
        if !self.vm.guest_pages.is_empty() {
            return self.vm.guest_pages.clone();
        }
        self.memslots
            .iter()
            .map(|m| GuestPages { gva: m.gpa, gpa: None, len: m.size, size: PageSize::Size4K })
            .collect()
    }

    /// The workload of the run: every phase, seeded with the scenario seed.
    pub fn workload(&self) -> Result<Workload, WorkloadError> {
        Workload::new(self.seed, self.phases.iter().map(|p| p.spec.clone()).collect())
    }

    /// `name` plus the overrides, e.g. `lazy-collapse [policy.recover=zap]`.
    pub fn label(&self) -> String {
        label(&self.name, &self.overrides)
    }
}

fn label(name: &str, overrides: &[Override]) -> String {
    if overrides.is_empty() {
        return name.to_string();
    }
    let sets: Vec<String> = overrides.iter().map(|o| format!("{}={}", o.key, o.value)).collect();
    format!("{name} [{}]", sets.join(", "))
}

/// Largest scenario file read (a scenario is text written by hand or by a script; anything
/// larger is a mistake such as `/dev/zero`).
pub const MAX_SCENARIO_BYTES: u64 = 64 << 20;

/// Read a text file of at most [`MAX_SCENARIO_BYTES`].
fn read_capped(path: &Path) -> std::io::Result<String> {
    use std::io::{Error, ErrorKind, Read};
    let file = std::fs::File::open(path)?;
    if file.metadata()?.is_dir() {
        return Err(Error::new(ErrorKind::InvalidInput, "it is a directory"));
    }
    let mut bytes = Vec::new();
    file.take(MAX_SCENARIO_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_SCENARIO_BYTES {
        return Err(Error::new(
            ErrorKind::InvalidData,
            format!("larger than {} MiB; a scenario is a TOML text file", MAX_SCENARIO_BYTES >> 20),
        ));
    }
    String::from_utf8(bytes).map_err(|e| {
        Error::new(
            ErrorKind::InvalidData,
            format!("not UTF-8 text (byte {}); a scenario is a TOML text file", e.utf8_error().valid_up_to()),
        )
    })
}

/// The text of a scenario and the overrides to apply to it, before validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioSource {
    file: String,
    dir: Option<PathBuf>,
    text: String,
    overrides: Vec<Override>,
}

impl ScenarioSource {
    /// A scenario from a string; `file` names it in errors.
    pub fn from_text(file: impl Into<String>, text: impl Into<String>) -> Self {
        ScenarioSource { file: file.into(), dir: None, text: text.into(), overrides: Vec::new() }
    }

    /// Read a scenario file (trace paths inside it are then relative to its directory).
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ScenarioError> {
        let path = path.as_ref();
        let file = path.display().to_string();
        let text = read_capped(path).map_err(|e| ScenarioError::io(file.clone(), e))?;
        let dir = path.parent().map(Path::to_path_buf);
        Ok(ScenarioSource { file, dir, text, overrides: Vec::new() })
    }

    /// A scenario of the built-in [`library`], by name (its file name is `<name>.toml`).
    pub fn from_library(name: &str) -> Option<Self> {
        library().iter().find(|e| e.name == name).map(|e| Self::from_text(format!("{}.toml", e.name), e.toml))
    }

    /// The file name used in errors.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// The scenario text, without overrides.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The overrides, in the order they apply.
    pub fn overrides(&self) -> &[Override] {
        &self.overrides
    }

    /// Set `key` (a dotted path such as `policy.recover`, `host.memory` or `memslot[1].gpa`) to
    /// `value` before the scenario is deserialised, as `--set key=value` does. The value is
    /// read as a TOML value (`4096`, `0.5`, `true`, `"quoted"`, `[1, 2]`, `{ entries = 64,
    /// ways = 4 }`) or else as a plain string (`zap`, `in-place`, `2M`). Missing tables are
    /// created; a later `set` of the same key replaces an earlier one.
    ///
    /// The key and the value are checked against the schema at once (unknown keys and values
    /// not accepted are errors naming the override); consistency with the rest of the scenario
    /// is checked by [`parse`](Self::parse).
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ScenarioError> {
        let ov = Override { key: key.trim().to_string(), value: value.trim().to_string() };
        let mut next = self.clone();
        next.overrides.retain(|o| o.key != ov.key);
        next.overrides.push(ov.clone());
        if let Err(e) = DocPath::parse(&ov.key) {
            return Err(next.override_error(&ov, e));
        }
        let text = next.effective_text()?;
        let effective = next.locate(&text)?;
        let original = next.locate(&next.text)?;
        let locator =
            Locator { file: &next.file, original: &original, effective: &effective, overrides: &next.overrides };
        if let Err(e) = toml::from_str::<schema::RawScenario>(&text) {
            let err = locator.serde_error(&e);
            if matches!(&err.location, Location::Override { key, .. } if *key == ov.key) {
                return Err(err);
            }
        }
        *self = next;
        Ok(())
    }

    /// [`set`](Self::set) from a `key=value` argument.
    pub fn set_arg(&mut self, arg: &str) -> Result<(), ScenarioError> {
        match arg.split_once('=') {
            Some((k, v)) => self.set(k, v),
            None => Err(ScenarioError::new(
                Location::File { file: self.file.clone() },
                None,
                format!("--set {arg:?}: expected key=value, e.g. policy.recover=zap"),
                ErrorKind::BadOverride,
            )),
        }
    }

    /// One variant of this scenario per value of `key` (each with `set(key, value)` applied).
    pub fn vary(&self, key: &str, values: &[&str]) -> Result<Vec<ScenarioSource>, ScenarioError> {
        values
            .iter()
            .map(|v| {
                let mut s = self.clone();
                s.set(key, v)?;
                Ok(s)
            })
            .collect()
    }

    /// The file name plus the overrides, e.g. `lazy-collapse.toml [policy.recover=zap]`.
    pub fn label(&self) -> String {
        label(&self.file, &self.overrides)
    }

    /// Apply the overrides, deserialise and validate, without resource limits.
    pub fn parse(&self) -> Result<Scenario, ScenarioError> {
        self.parse_within(&Limits::NONE)
    }

    /// Apply the overrides, deserialise, validate, and check the scenario's
    /// [estimate](Scenario::estimate) against `limits`: a scenario that would not fit fails
    /// with an error of kind [`ErrorKind::TooLarge`] naming the field to blame.
    pub fn parse_within(&self, limits: &Limits) -> Result<Scenario, ScenarioError> {
        let original = self.locate(&self.text)?;
        let text = self.effective_text()?;
        let effective_doc;
        let effective = if self.overrides.is_empty() {
            &original
        } else {
            effective_doc = self.locate(&text)?;
            &effective_doc
        };
        let locator = Locator { file: &self.file, original: &original, effective, overrides: &self.overrides };
        let raw: schema::RawScenario = toml::from_str(&text).map_err(|e| locator.serde_error(&e))?;
        resources::check_events(raw.event.len(), limits, &locator)?;
        let scenario = validate::validate(raw, &locator, self.dir.as_deref())?;
        resources::check(&scenario, limits, &locator)?;
        real_host::check(&scenario, limits, &locator)?;
        Ok(scenario)
    }

    /// Parse TOML text for locating keys; a syntax error is reported with its line.
    fn locate(&self, text: &str) -> Result<Located, ScenarioError> {
        Located::parse(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text.as_bytes()[..s.start.min(text.len())].iter().filter(|&&b| b == b'\n').count() + 1);
            let detail: Vec<&str> = e.message().lines().map(str::trim).filter(|l| !l.is_empty()).collect();
            let message = format!("TOML syntax error: {}", detail.join("; ").replace('`', "\""));
            let location = match line {
                Some(line) => Location::Line { file: self.file.clone(), line },
                None => Location::File { file: self.file.clone() },
            };
            ScenarioError::new(location, None, message, ErrorKind::Syntax)
        })
    }

    /// The text with every override applied.
    fn effective_text(&self) -> Result<Cow<'_, str>, ScenarioError> {
        if self.overrides.is_empty() {
            return Ok(Cow::Borrowed(&self.text));
        }
        let mut doc: toml_edit::DocumentMut = match self.text.parse() {
            Ok(d) => d,
            Err(_) => {
                return Err(self
                    .locate(&self.text)
                    .err()
                    .unwrap_or_else(|| self.override_error(&self.overrides[0], "cannot parse the file".into())))
            }
        };
        for ov in &self.overrides {
            apply_override(&mut doc, ov).map_err(|m| self.override_error(ov, m))?;
        }
        Ok(Cow::Owned(doc.to_string()))
    }

    fn override_error(&self, ov: &Override, message: String) -> ScenarioError {
        ScenarioError::new(
            Location::Override { file: self.file.clone(), key: ov.key.clone(), value: ov.value.clone() },
            Some(ov.key.clone()),
            message,
            ErrorKind::BadOverride,
        )
    }
}
