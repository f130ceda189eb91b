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
//!
//! What QEMU does to give a VM a GPU, as ioctls on the seed machine (a POWER9 box whose
//! `gpu0` has no kernel driver): register the device with vfio-pci, open its group, put it
//! in a container, choose the v2 SPAPR TCE IOMMU, preregister 1 GiB of guest memory, create
//! a 64K-page dynamic DMA window and map the memory into it.
//!
//! ```
//! use spapr_platform::{PowerNv, PowerNvConfig};
//! use spapr_vfio::uapi::{encode, ioctl};
//! use spapr_vfio::{Mm, Vfio, VfioConfig};
//! use std::sync::Arc;
//!
//! let m = Arc::new(PowerNv::booted(PowerNvConfig::seed()).unwrap());
//! let v = Vfio::new(m.clone(), VfioConfig::default());
//! let qemu = Mm(1000);
//! let gpu = m.device("gpu0").unwrap();
//! v.register_device(gpu).unwrap();
//! let (c, g) = (v.open_container(), v.open_group(gpu).unwrap());
//! v.set_container(g, c).unwrap(); // the group's PE is now isolated
//! assert_eq!(v.ioctl_int(qemu, c, ioctl::SET_IOMMU, 7), Ok(0));
//!
//! let ua = v.mmap(qemu, 1 << 30, 16).unwrap(); // 1 GiB of 64K pages
//! let mut arg = encode::register(0, ua, 1 << 30);
//! assert_eq!(v.ioctl(qemu, c, ioctl::REGISTER_MEMORY, &mut arg), Ok(0));
//! let mut arg = encode::create(16, 1 << 40, 2); // 64K pages, 1 TiB, 2 levels
//! assert_eq!(v.ioctl(qemu, c, ioctl::TCE_CREATE, &mut arg), Ok(0));
//! let start = encode::get64(&arg, 32);
//! let mut arg = encode::map(3, ua, start, 1 << 30); // read and write
//! assert_eq!(v.ioctl(qemu, c, ioctl::MAP_DMA, &mut arg), Ok(0));
//!
//! // The GPU's DMA now lands in QEMU's memory, and nowhere else.
//! m.device_write(gpu, start + 0x1000, b"frame").unwrap();
//! assert!(m.device_read(gpu, start + (1 << 30), 8).is_err());
//! assert!(m.check().is_empty());
//! ```
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
#![forbid(unsafe_code)]

mod audit;
mod container;
mod eeh;
mod emulated;
mod group;
mod mm;
mod spapr_tce;
pub mod uapi;
mod vfio;

pub use audit::WindowView;
pub use container::ContainerFd;
pub use eeh::{encode_eeh_pe_op, EEH_PE_OP_MINSZ, EEH_PE_OP_SIZE};
pub use group::GroupFd;
pub use mm::Mm;
pub use vfio::{Vfio, VfioConfig};

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
