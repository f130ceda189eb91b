//! # spapr-platform — PowerNV and pSeries
//!
//! PHBs, PEs, IODA2 table groups with their two windows and bypass, the "borrowing"
//! table-group ops, `spapr_tce_iommu_ops` and the kernel DMA API, on top of `iommu-core`
//! and `spapr-tce`.
//!
//! Not implemented yet: this crate is the place the layer lands (issue 5).
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
#![forbid(unsafe_code)]
