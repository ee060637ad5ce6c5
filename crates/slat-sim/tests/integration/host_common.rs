//! Shared helpers for the host tests: a recording MMU notifier and small constructors.
#![allow(dead_code)]

use std::cell::{Cell, RefCell};

use slat_mmu::{HostMemory, Hva, MmuNotifier};
use slat_sim::host::{HostConfig, SimHost};

pub const K4: u64 = 4 << 10;
pub const M2: u64 = 2 << 20;
pub const G1: u64 = 1 << 30;

/// One notifier call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    Start(u64, u64),
    End(u64, u64),
    ClearYoung(u64, u64),
    TestYoung(u64, u64),
}

/// Records every call. When given a host, it also calls `lookup` on it from inside each
/// callback, which would deadlock if the host held its lock while notifying.
#[derive(Default)]
pub struct Recorder<'a> {
    pub calls: RefCell<Vec<Call>>,
    pub young: Cell<bool>,
    pub host: Option<&'a SimHost>,
    depth: Cell<i32>,
}

impl<'a> Recorder<'a> {
    pub fn new() -> Self {
        Recorder::default()
    }

    pub fn probing(host: &'a SimHost) -> Self {
        Recorder { host: Some(host), ..Recorder::default() }
    }

    /// The invalidated ranges (from the start calls), checking every start has its end.
    pub fn invalidations(&self) -> Vec<(u64, u64)> {
        let calls = self.calls.borrow();
        let starts: Vec<(u64, u64)> =
            calls.iter().filter_map(|c| if let Call::Start(s, e) = c { Some((*s, *e)) } else { None }).collect();
        let ends: Vec<(u64, u64)> =
            calls.iter().filter_map(|c| if let Call::End(s, e) = c { Some((*s, *e)) } else { None }).collect();
        assert_eq!(starts, ends, "every invalidate_range_start needs its end");
        assert_eq!(self.depth.get(), 0);
        starts
    }

    pub fn clear(&self) {
        self.calls.borrow_mut().clear();
    }
}

impl MmuNotifier for Recorder<'_> {
    fn invalidate_range_start(&self, start: Hva, end: Hva) {
        let (start, end) = (start.0, end.0);
        assert!(start < end && start % K4 == 0 && end % K4 == 0, "bad range {start:#x}..{end:#x}");
        if let Some(h) = self.host {
            let _ = h.lookup(Hva(start));
        }
        self.depth.set(self.depth.get() + 1);
        self.calls.borrow_mut().push(Call::Start(start, end));
    }
    fn invalidate_range_end(&self, start: Hva, end: Hva) {
        let (start, end) = (start.0, end.0);
        if let Some(h) = self.host {
            let _ = h.lookup(Hva(start));
        }
        self.depth.set(self.depth.get() - 1);
        self.calls.borrow_mut().push(Call::End(start, end));
    }
    fn clear_young(&self, start: Hva, end: Hva) -> bool {
        let (start, end) = (start.0, end.0);
        self.calls.borrow_mut().push(Call::ClearYoung(start, end));
        self.young.replace(false)
    }
    fn test_young(&self, start: Hva, end: Hva) -> bool {
        let (start, end) = (start.0, end.0);
        self.calls.borrow_mut().push(Call::TestYoung(start, end));
        self.young.get()
    }
}

/// A host with `memory` bytes of RAM and otherwise default settings.
pub fn host(memory: u64) -> SimHost {
    SimHost::new(HostConfig { memory, ..HostConfig::default() }).unwrap()
}

/// A host from a config, audited.
pub fn host_with(config: HostConfig) -> SimHost {
    let h = SimHost::new(config).unwrap();
    h.audit().unwrap();
    h
}
