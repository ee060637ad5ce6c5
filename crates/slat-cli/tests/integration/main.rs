//! slat-cli's integration tests: the `slat` binary end to end (run, compare, inspect, probe-host, errors, conventions).
//!
//! One test binary for the crate (one link, one process): each module is one former test
//! file; the shared fixtures are the `*common` modules.

mod common;

mod compare;
mod conventions;
mod errors;
mod inspect;
mod linux_host;
mod probe_host;
mod run;
mod scenarios;
mod trial;
