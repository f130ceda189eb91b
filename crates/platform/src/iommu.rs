//! `spapr_tce_iommu_ops` (arch/powerpc/kernel/iommu.c) and the PLATFORM and BLOCKED
//! domains, in the three designs the history went through.

use crate::pe::{Pe, PeLink};
use crate::phb::Phb;
use crate::Design;
use iommu_core::{
    AttachCtx, Cap, DeviceAddr, DeviceInfo, Domain, DomainOps, DomainType, Errno, Finding, Group,
    IommuOps, OwnerCookie,
};
use std::any::Any;
use std::sync::{Arc, Weak};

fn pe_of(group: &Group) -> Result<Arc<Pe>, Errno> {
    group
        .data::<PeLink>()
        .and_then(|l| l.0.upgrade())
        .ok_or(Errno::Enodev)
}

/// The PLATFORM domain's attach: the kernel's DMA ops own the device.
/// - fixed design: `release_ownership` (skipped on the first attach, when the device had
///   no domain);
/// - v6.7: shares BLOCKED's ops (the FIXME), so it calls `take_ownership`, except on the
///   first attach;
/// - v1 patch: nothing.
struct PlatformAttach(Design);

impl DomainOps for PlatformAttach {
    fn attach_dev(&self, ctx: &AttachCtx<'_>) -> Result<(), Errno> {
        if ctx.old.is_none() {
            return Ok(());
        }
        match self.0 {
            Design::Fixed => pe_of(ctx.group)?.release_ownership(),
            Design::V6_7 => pe_of(ctx.group)?.take_ownership(),
            Design::V1Patch => Ok(()),
        }
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The BLOCKED domain's attach (`spapr_tce_blocking_iommu_attach_dev`): the group's table
/// group gives up every kernel translation (`take_ownership`), except in the v1 patch,
/// which transferred nothing.
struct BlockedAttach(Design);

impl DomainOps for BlockedAttach {
    fn attach_dev(&self, ctx: &AttachCtx<'_>) -> Result<(), Errno> {
        match self.0 {
            Design::Fixed | Design::V6_7 => pe_of(ctx.group)?.take_ownership(),
            Design::V1Patch => {
                pe_of(ctx.group)?;
                Ok(())
            }
        }
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// `spapr_tce_iommu_ops` bound to one PHB's `iommu_device`.
pub struct SpaprTceIommu {
    phb: Weak<Phb>,
    platform: Arc<Domain>,
    blocked: Arc<Domain>,
}

impl SpaprTceIommu {
    /// The ops of `phb` in `design`.
    pub fn new(phb: Weak<Phb>, design: Design) -> Self {
        Self {
            phb,
            platform: Domain::new(DomainType::Platform, Arc::new(PlatformAttach(design))),
            blocked: Domain::new(DomainType::Blocked, Arc::new(BlockedAttach(design))),
        }
    }
}

impl IommuOps for SpaprTceIommu {
    /// Non-PCI → -EPERM; a PCI device of another PHB → -ENODEV (not this instance's).
    fn probe_device(&self, dev: &DeviceInfo) -> Result<(), Errno> {
        let DeviceAddr::Pci { domain, .. } = dev.addr else {
            return Err(Errno::Eperm);
        };
        let phb = self.phb.upgrade().ok_or(Errno::Enodev)?;
        if phb.pci_domain != domain {
            return Err(Errno::Enodev);
        }
        Ok(())
    }

    /// The controller's `device_group` (`pnv_pci_device_group`): -ENOENT without the
    /// callback, -ENODEV without a PE or a group, else a counted reference.
    fn device_group(&self, dev: &DeviceInfo) -> Result<Group, Errno> {
        let phb = self.phb.upgrade().ok_or(Errno::Enodev)?;
        if !phb.config.device_group_callback {
            return Err(Errno::Enoent);
        }
        let bdfn = dev.addr.bdfn().ok_or(Errno::Enodev)?;
        let pe = phb.pe_for(bdfn).ok_or(Errno::Enodev)?;
        let st = pe.lock();
        st.group.clone().ok_or(Errno::Enodev)
    }

    /// Cache coherency only.
    fn capable(&self, _dev: &DeviceInfo, cap: Cap) -> bool {
        cap == Cap::CacheCoherency
    }

    fn default_domain(&self) -> Option<Arc<Domain>> {
        Some(self.platform.clone())
    }

    fn blocked_domain(&self) -> Option<Arc<Domain>> {
        Some(self.blocked.clone())
    }

    fn domain_alloc(&self, ty: DomainType) -> Option<Arc<Domain>> {
        (ty == DomainType::Blocked).then(|| self.blocked.clone())
    }

    fn check_group(&self, group: &Group, owner: Option<(OwnerCookie, u64)>) -> Vec<Finding> {
        pe_of(group).map_or_else(|_| Vec::new(), |pe| pe.check(owner))
    }
}
