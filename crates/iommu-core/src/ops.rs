//! `struct iommu_ops`: what a hardware IOMMU driver gives the core. Only `probe_device` and
//! `device_group` are required; every optional operation has the kernel's default, so a
//! driver implements only what it needs (Jason's answer to v1 of the POWER patch).

use crate::check::Finding;
use crate::device::DeviceInfo;
use crate::domain::{Domain, DomainType};
use crate::errno::Errno;
use crate::group::{Group, OwnerCookie};
use std::sync::Arc;

/// `enum iommu_cap`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cap {
    /// DMA is cache coherent (`IOMMU_CAP_CACHE_COHERENCY`); VFIO requires it.
    CacheCoherency,
    /// Interrupt remapping.
    IntrRemap,
    /// No-execute mappings.
    NoExec,
    /// Cache coherency can be enforced.
    PreEnforceCacheCoherency,
    /// Deferred IOTLB flush.
    DeferredFlush,
    /// Dirty tracking.
    DirtyTracking,
}

impl Cap {
    /// Every capability.
    pub const ALL: [Cap; 6] = [
        Cap::CacheCoherency,
        Cap::IntrRemap,
        Cap::NoExec,
        Cap::PreEnforceCacheCoherency,
        Cap::DeferredFlush,
        Cap::DirtyTracking,
    ];
}

/// Operations of one hardware IOMMU instance (`iommu_ops` bound to an `iommu_device`).
pub trait IommuOps: Send + Sync {
    /// `probe_device`: whether this instance translates the device. An error means "not
    /// mine" (-ENODEV) or "refused" (POWER: -EPERM for non-PCI devices).
    fn probe_device(&self, dev: &DeviceInfo) -> Result<(), Errno>;

    /// `device_group`: the group the device belongs to, as a counted reference (the core
    /// keeps it for the device). Returning a [`Group`] makes the reference count right by
    /// construction.
    fn device_group(&self, dev: &DeviceInfo) -> Result<Group, Errno>;

    /// `release_device`: the device is going away. Default: nothing.
    fn release_device(&self, dev: &DeviceInfo) {
        let _ = dev;
    }

    /// `capable`. Default: no capability.
    fn capable(&self, dev: &DeviceInfo, cap: Cap) -> bool {
        let _ = (dev, cap);
        false
    }

    /// `is_attach_deferred`. Default: false.
    fn is_attach_deferred(&self, dev: &DeviceInfo) -> bool {
        let _ = dev;
        false
    }

    /// `def_domain_type`: the default domain type wanted for a device. Default: DMA.
    fn def_domain_type(&self, dev: &DeviceInfo) -> DomainType {
        let _ = dev;
        DomainType::Dma
    }

    /// `default_domain`: a static default domain (POWER's PLATFORM domain). Default: none,
    /// the core allocates one of `def_domain_type`.
    fn default_domain(&self) -> Option<Arc<Domain>> {
        None
    }

    /// `blocked_domain`: a static BLOCKED domain. Default: none, the core asks
    /// `domain_alloc(BLOCKED)` then `domain_alloc(UNMANAGED)`.
    fn blocked_domain(&self) -> Option<Arc<Domain>> {
        None
    }

    /// `domain_alloc`. Default: cannot allocate (NULL).
    fn domain_alloc(&self, ty: DomainType) -> Option<Arc<Domain>> {
        let _ = ty;
        None
    }

    /// The driver's part of the checker for one group (kernel.md section 3): what its
    /// hardware lets the group's devices reach, judged by provenance (who wrote each TCE,
    /// who programmed each window). `owner` is who owns the group now (None: the kernel)
    /// and the ownership epoch. Called without any core lock held. Default: nothing.
    fn check_group(&self, group: &Group, owner: Option<(OwnerCookie, u64)>) -> Vec<Finding> {
        let _ = (group, owner);
        Vec::new()
    }
}
