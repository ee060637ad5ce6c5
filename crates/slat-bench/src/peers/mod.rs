//! The contenders: slat and the four peer crates, each over the shared pool.

pub mod aarch64;
pub mod multiarch;
pub mod ptg;
pub mod slat;
pub mod x86;
