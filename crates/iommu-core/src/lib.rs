//! # iommu-core — the generic IOMMU core
//!
//! Platform-neutral model of Linux's `drivers/iommu/iommu.c`: `iommu_ops`, hardware IOMMU
//! instances, buses and devices, reference-counted groups, domains and DMA ownership, and
//! the invariant checker. POWER is one driver of it (crate `spapr-platform`).
//!
//! Not implemented yet: this crate is the place the layer lands (issue 4).
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
#![forbid(unsafe_code)]
