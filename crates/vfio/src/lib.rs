//! # spapr-vfio — VFIO's SPAPR TCE container
//!
//! VFIO groups and containers with the SPAPR TCE v1/v2 IOMMU backend and dynamic DMA
//! windows (`drivers/vfio/vfio_iommu_spapr_tce.c`), on top of `spapr-platform`.
//!
//! Not implemented yet: this crate is the place the layer lands (issue 6).
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
#![forbid(unsafe_code)]
