//! A second, generic driver: a page-table IOMMU for platform devices with DMA, identity and
//! unmanaged domains, one group per device (`generic_device_group`). It has no BLOCKED
//! domain, so claims exercise the core's fallback to an empty UNMANAGED domain. It exists
//! to prove the core is not POWER-specific.

use crate::device::{DeviceAddr, DeviceInfo};
use crate::domain::{AttachCtx, Domain, DomainOps, DomainType};
use crate::errno::Errno;
use crate::group::Group;
use crate::ops::{Cap, IommuOps};
use crate::Core;
use std::any::Any;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// A 4K page table: I/O page -> (physical page, writable).
#[derive(Default)]
pub struct PageTableDomain {
    ty_identity: bool,
    map: Mutex<BTreeMap<u64, (u64, bool)>>,
    attached: Mutex<Vec<crate::DeviceId>>,
}

impl PageTableDomain {
    /// Maps one 4K page.
    pub fn map(&self, iova: u64, pa: u64, writable: bool) {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(iova >> 12, (pa >> 12, writable));
    }
    /// Unmaps one 4K page.
    pub fn unmap(&self, iova: u64) -> bool {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(iova >> 12))
            .is_some()
    }
    /// Translates an access; identity domains pass everything through.
    pub fn translate(&self, iova: u64, write: bool) -> Option<u64> {
        if self.ty_identity {
            return Some(iova);
        }
        let m = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let (pa, w) = m.get(&(iova >> 12))?;
        (!write || *w).then_some((pa << 12) | (iova & 0xfff))
    }
    /// Pages mapped.
    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
    /// Whether nothing is mapped.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Devices attached so far (in attach order, repeats kept).
    pub fn attached(&self) -> Vec<crate::DeviceId> {
        self.attached
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl DomainOps for PageTableDomain {
    fn attach_dev(&self, ctx: &AttachCtx<'_>) -> Result<(), Errno> {
        self.attached
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(ctx.dev);
        Ok(())
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The generic driver. It claims platform devices whose index is below `max_index`.
pub struct SimpleIommu {
    core: Core,
    max_index: u32,
    identity_default: bool,
}

impl SimpleIommu {
    /// A driver for platform devices `0..max_index`; `identity_default` picks IDENTITY
    /// instead of DMA as the default domain.
    pub fn new(core: &Core, max_index: u32, identity_default: bool) -> Arc<Self> {
        Arc::new(Self {
            core: core.clone(),
            max_index,
            identity_default,
        })
    }
}

impl IommuOps for SimpleIommu {
    fn probe_device(&self, dev: &DeviceInfo) -> Result<(), Errno> {
        match dev.addr {
            DeviceAddr::Platform(i) if i < self.max_index => Ok(()),
            _ => Err(Errno::Enodev),
        }
    }
    fn device_group(&self, dev: &DeviceInfo) -> Result<Group, Errno> {
        // One group per device; only the device holds it.
        Ok(self
            .core
            .alloc_group(Some(format!("simple-{}", dev.name)), Box::new(()), None))
    }
    fn capable(&self, _dev: &DeviceInfo, cap: Cap) -> bool {
        cap == Cap::CacheCoherency
    }
    fn def_domain_type(&self, _dev: &DeviceInfo) -> DomainType {
        if self.identity_default {
            DomainType::Identity
        } else {
            DomainType::Dma
        }
    }
    fn domain_alloc(&self, ty: DomainType) -> Option<Arc<Domain>> {
        match ty {
            DomainType::Dma | DomainType::Unmanaged => {
                Some(Domain::new(ty, Arc::new(PageTableDomain::default())))
            }
            DomainType::Identity => Some(Domain::new(
                ty,
                Arc::new(PageTableDomain {
                    ty_identity: true,
                    ..PageTableDomain::default()
                }),
            )),
            DomainType::Blocked | DomainType::Platform => None,
        }
    }
}
