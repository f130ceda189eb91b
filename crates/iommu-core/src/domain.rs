//! Domains (`struct iommu_domain`): the core's view of one address space a group's
//! devices are attached to.

use crate::device::{DeviceId, DeviceInfo};
use crate::errno::Errno;
use crate::group::Group;
use core::fmt;
use std::any::Any;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// `iommu_domain` types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DomainType {
    /// No translation at all: the device reaches no memory (a group handed to a user).
    Blocked,
    /// 1:1 passthrough.
    Identity,
    /// A page table managed by a user (VFIO type1, iommufd).
    Unmanaged,
    /// The kernel DMA API's translated domain.
    Dma,
    /// The platform's own DMA ops own the device (POWER's default since v6.7).
    Platform,
}

impl fmt::Display for DomainType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DomainType::Blocked => "BLOCKED",
            DomainType::Identity => "IDENTITY",
            DomainType::Unmanaged => "UNMANAGED",
            DomainType::Dma => "DMA",
            DomainType::Platform => "PLATFORM",
        })
    }
}

/// What an attach callback sees.
pub struct AttachCtx<'a> {
    /// The device.
    pub dev: DeviceId,
    /// Its description.
    pub info: &'a DeviceInfo,
    /// Its group.
    pub group: &'a Group,
    /// The domain the device is leaving (None on its first attach).
    pub old: Option<DomainType>,
}

/// A domain's operations (`iommu_domain_ops`).
pub trait DomainOps: Send + Sync {
    /// Attach one device (`attach_dev`). Called once per device of the group.
    fn attach_dev(&self, ctx: &AttachCtx<'_>) -> Result<(), Errno>;
    /// The domain's driver-specific state, for drivers that map through it.
    fn as_any(&self) -> &dyn Any;
}

/// Identifies a domain within a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DomainId(pub u64);

static NEXT_DOMAIN: AtomicU64 = AtomicU64::new(1);

/// A domain: a type and its ops.
pub struct Domain {
    id: DomainId,
    ty: DomainType,
    ops: Arc<dyn DomainOps>,
}

impl Domain {
    /// A domain of `ty` with `ops`.
    pub fn new(ty: DomainType, ops: Arc<dyn DomainOps>) -> Arc<Domain> {
        Arc::new(Domain {
            id: DomainId(NEXT_DOMAIN.fetch_add(1, Ordering::Relaxed)),
            ty,
            ops,
        })
    }
    /// Its id.
    pub fn id(&self) -> DomainId {
        self.id
    }
    /// Its type.
    pub fn ty(&self) -> DomainType {
        self.ty
    }
    /// Its ops.
    pub fn ops(&self) -> &Arc<dyn DomainOps> {
        &self.ops
    }
}

impl fmt::Debug for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Domain({} #{})", self.ty, self.id.0)
    }
}
