//! slat-pt's integration tests: the oracle proptests, test vectors, address-space limits. `unmap_alloc` stays its own binary: it installs a counting global allocator.
//!
//! One test binary for the crate (one link, one process): each module is one former test
//! file; the shared fixtures are the `*common` modules.

mod oracle;
mod space;
mod vectors;
