//! The host a scenario runs on, as the engine needs it: [`ScenarioHost`].
//!
//! The engine drives slat-mmu over any host that can back the scenario's memslots, answer the
//! MMU's [`HostMemory`] questions, apply the host events the scenario names (calling the MMU
//! notifier around every mapping change), and report its own view of the page sizes. The
//! simulated host ([`SimHost`]) is one; a real Linux host (built outside this crate, e.g. by
//! `slat-cli` over `slat-linux`) is another.

use serde::Serialize;
use slat_mmu::{HostMemory, MmuNotifier};
use slat_pt::PageSize;

use super::setup::SetupError;
use crate::host::{EventReport, HostEvent, HugetlbPoolStats, SimHost};
use crate::report::HostReport;
use crate::scenario::Scenario;

/// A host the scenario engine can run on.
///
/// `Send + Sync + 'static` because the engine shares it (as an `Arc`) between the MMU and the
/// hardware model's walk checker.
pub trait ScenarioHost: HostMemory + Send + Sync + 'static {
    /// Map every memslot of `s` (in file order, also those added later by events) and return
    /// the host virtual address of each slot's first byte, in the same order. Nothing is faulted
    /// in.
    ///
    /// # Errors
    /// A [`SetupError`] naming the memslot when its memory cannot be mapped.
    fn map_memslots(&self, s: &Scenario) -> Result<Vec<u64>, SetupError>;

    /// Apply a host event, calling `notifier` around every change of a host mapping.
    ///
    /// # Errors
    /// What went wrong, in words; the engine adds the event's location and kind. A host that
    /// cannot produce an event says so here (it must never ignore one).
    fn apply(&self, event: &HostEvent, notifier: &dyn MmuNotifier) -> Result<EventReport, String>;

    /// The host's counters by name, for the report's totals.
    fn named_stats(&self) -> Vec<(String, u64)>;

    /// Leaves of the host's own page tables mapping guest memory now: `[4K, 2M, 1G]`.
    fn host_leaves(&self) -> [u64; 3];

    /// The hugetlb pool of `size` (2M or 1G).
    fn hugetlb_pool(&self, size: PageSize) -> HugetlbPoolStats;

    /// Check the host's own invariants (after every event and at the end of the run).
    ///
    /// # Errors
    /// The first invariant that does not hold, in words.
    fn audit(&self) -> Result<(), String>;

    /// Give `notifier` the invalidations of mapping changes the host made on its own since the
    /// last call (a real kernel changes mappings while faulting pages in, and tells this process
    /// nothing). The engine calls it before each batch of accesses and after every fault the MMU
    /// handled, and `thorough`ly before every audit (a host may check less often otherwise).
    /// The simulated host calls the notifier as it changes mappings, so it has nothing to give.
    fn sync(&self, _notifier: &dyn MmuNotifier, _thorough: bool) {}

    /// The host's own description of the run's memory, for the report (`None`: nothing beyond
    /// the totals). `slots` are the memslots as `(id, hva, len)`.
    fn report(&self, _slots: &[(u32, u64, u64)]) -> Option<HostReport> {
        None
    }
}

impl ScenarioHost for SimHost {
    fn map_memslots(&self, s: &Scenario) -> Result<Vec<u64>, SetupError> {
        super::setup::map_sim_memslots(self, s)
    }

    fn apply(&self, event: &HostEvent, notifier: &dyn MmuNotifier) -> Result<EventReport, String> {
        SimHost::apply(self, event, notifier).map_err(|e| e.to_string())
    }

    fn named_stats(&self) -> Vec<(String, u64)> {
        super::metrics::named_numbers(&self.stats())
    }

    fn host_leaves(&self) -> [u64; 3] {
        self.stats().host_leaves
    }

    fn hugetlb_pool(&self, size: PageSize) -> HugetlbPoolStats {
        let st = self.stats();
        if size == PageSize::Size1G {
            st.hugetlb_1g
        } else {
            st.hugetlb_2m
        }
    }

    fn audit(&self) -> Result<(), String> {
        SimHost::audit(self).map_err(|e| e.to_string())
    }
}

/// Serialise `v` as `(name, number)` pairs (integer fields only), for [`ScenarioHost::named_stats`].
pub fn named_numbers<T: Serialize>(v: &T) -> Vec<(String, u64)> {
    super::metrics::named_numbers(v)
}
