//! # spapr-vfio — VFIO with the SPAPR TCE backend
//!
//! How a group reaches user space on POWER (drivers/vfio/container.c, group.c,
//! vfio_iommu_spapr_tce.c): group and container file descriptors, `SET_CONTAINER` (which
//! claims DMA ownership through the core: the blocking domain isolates the PE), `SET_IOMMU`
//! with the v1 (2) and v2 (7) SPAPR TCE types, and the container ioctls with byte-exact
//! argument structs (rust-vmm's vfio-bindings layouts): GET_INFO, ENABLE/DISABLE (v1),
//! REGISTER/UNREGISTER_MEMORY (v2), TCE_CREATE/TCE_REMOVE (v2, dynamic DMA windows),
//! MAP_DMA and UNMAP_DMA.
//!
//! VFIO never takes table ownership itself: ownership comes only from the core's claim.
//! Windows live in the container (shared by every group of a v2 container); detaching a
//! group clears every TCE before unsetting its windows; closing a container frees all.
//! The owning process (mm) is fixed at first use; locked memory is charged against a
//! limit. The `linux` profile reproduces each quirk of kernel.md and says so in the trace;
//! `strict` fixes each one.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
#![forbid(unsafe_code)]

mod container;
pub mod uapi;

pub use container::{ContainerFd, GroupFd, Mm, Vfio, VfioConfig, WindowView};

/// `VFIO_TYPE`: the ioctl type character `';'`.
pub const VFIO_TYPE_CHAR: u8 = b';';

/// Kernel-side behaviour profile (spec README, decision 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub enum KernelProfile {
    /// v6.4 semantics with the 2024 fix; every quirk of kernel.md reproduced and traced.
    #[default]
    Linux,
    /// Each quirk fixed: -EINVAL, whole-range checks, no partial success, accounting
    /// undone.
    Strict,
}

impl KernelProfile {
    /// Name as written in scenario files.
    pub fn name(self) -> &'static str {
        match self {
            KernelProfile::Linux => "linux",
            KernelProfile::Strict => "strict",
        }
    }
    /// Parses a name.
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "linux" => Some(KernelProfile::Linux),
            "strict" => Some(KernelProfile::Strict),
            _ => None,
        }
    }
}
