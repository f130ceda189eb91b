//! # spapr-iommu — the simulator
//!
//! Scenario files (TOML) describing a PowerNV host or a pSeries guest and a sequence of
//! operations on every layer (driver binds, DMA API, device DMA, ownership claims, VFIO
//! ioctls, hypercalls, RTAS calls), run against the models with expectations checked, the
//! state shown as a tree and the invariants checked. The `spapr-iommu` binary is a thin
//! command line over this library.
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod doc;
pub mod engine;
pub mod report;
pub mod scenario;
pub mod state_path;
pub mod svg;

/// The built-in default: the seed story on a POWER9 PowerNV box.
pub const SEED: &str = include_str!("../../../examples/seed.toml");
