//! # iommu-core — the generic IOMMU core
//!
//! Platform-neutral model of Linux's `drivers/iommu/iommu.c`: [`IommuOps`] (optional
//! operations with the kernel's defaults), hardware instances registered per unit, buses
//! and devices probed on registration and on add, reference-counted [`Group`]s, domains,
//! kernel driver binding and DMA ownership claims as guards that release on drop, and the
//! invariant checker of kernel.md section 3. POWER is one driver of it (`spapr-platform`);
//! [`simple::SimpleIommu`] is another.
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod check;
mod core;
pub mod device;
pub mod domain;
pub mod errno;
pub mod group;
pub mod ops;
pub mod simple;
pub mod trace;

pub use crate::core::{Claim, Core, DeviceClaim, DeviceView, GroupClaim, GroupView, InstanceId};
pub use check::{Rule, Violation};
pub use device::{BusType, DeviceAddr, DeviceId, DeviceInfo, DriverBinding};
pub use domain::{AttachCtx, Domain, DomainOps, DomainType};
pub use errno::Errno;
pub use group::{Group, GroupId, GroupState, OwnerCookie};
pub use ops::{Cap, IommuOps};
pub use trace::{Event, EventKind};
