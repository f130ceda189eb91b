//! # iommu-core — the generic IOMMU core
//!
//! Platform-neutral model of Linux's `drivers/iommu/iommu.c`: [`IommuOps`] (optional
//! operations with the kernel's defaults), hardware instances registered per unit, buses
//! and devices probed on registration and on add, reference-counted [`Group`]s, domains,
//! kernel driver binding and DMA ownership claims as guards that release on drop, and the
//! invariant checker of kernel.md section 3. POWER is one driver of it (`spapr-platform`);
//! [`simple::SimpleIommu`] is another.
//!
//! A claim is a guard: dropping it gives the group back to the kernel's default domain,
//! so a forgotten release cannot leave a device blocked (or owned) for ever.
//!
//! ```
//! use iommu_core::simple::SimpleIommu;
//! use iommu_core::{Core, DeviceInfo, DomainType, OwnerCookie};
//!
//! let core = Core::new();
//! core.register_instance("simple", SimpleIommu::new(&core, 10, false));
//! let dev = core.add_device(DeviceInfo::platform("eth0", 1));
//! let group = core.device_group(dev).unwrap().unwrap();
//! assert_eq!(core.group_view(&group).domain, Some(DomainType::Dma));
//! {
//!     let _claim = core.claim_group(&group, OwnerCookie(1)).unwrap();
//!     // This driver has no BLOCKED domain: the core falls back to an empty UNMANAGED one.
//!     assert_eq!(core.group_view(&group).domain, Some(DomainType::Unmanaged));
//! }
//! assert_eq!(core.group_view(&group).domain, Some(DomainType::Dma));
//! ```
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
pub use check::{Evidence, Finding, Programmer, Rule, Violation};
pub use device::{BusType, DeviceAddr, DeviceId, DeviceInfo, DriverBinding};
pub use domain::{AttachCtx, Domain, DomainOps, DomainType};
pub use errno::Errno;
pub use group::{Group, GroupId, OwnerCookie, OwnershipLease};
pub use ops::{Cap, IommuOps};
pub use trace::{Event, EventKind};
