//! Shared set-up: the seed machine, VFIO on it, and a container with groups attached.
#![allow(dead_code)]

use iommu_core::Errno;
use spapr_platform::{PowerNv, PowerNvConfig};
use spapr_vfio::uapi::{encode, ioctl};
use spapr_vfio::{ContainerFd, GroupFd, KernelProfile, Mm, Vfio, VfioConfig};
use std::sync::Arc;

pub const QEMU: Mm = Mm(1000);
pub const OTHER: Mm = Mm(2000);
pub const DDW: u64 = 1 << 59;

pub fn vfio(profile: KernelProfile) -> Vfio {
    let m = Arc::new(PowerNv::booted(PowerNvConfig::seed()).unwrap());
    Vfio::new(
        m,
        VfioConfig {
            profile,
            ..VfioConfig::default()
        },
    )
}

/// vfio-pci bound to each device, its group opened and put in one container.
pub fn container(v: &Vfio, devs: &[&str]) -> (ContainerFd, Vec<GroupFd>) {
    let c = v.open_container();
    let mut groups = Vec::new();
    for name in devs {
        let d = v.machine().device(name).unwrap();
        v.register_device(d).unwrap();
        let g = v.open_group(d).unwrap();
        v.set_container(g, c).unwrap();
        groups.push(g);
    }
    (c, groups)
}

pub fn v2(v: &Vfio, devs: &[&str]) -> (ContainerFd, Vec<GroupFd>) {
    let (c, g) = container(v, devs);
    assert_eq!(v.ioctl_int(QEMU, c, ioctl::SET_IOMMU, 7), Ok(0));
    (c, g)
}

pub fn v1(v: &Vfio, dev: &str) -> (ContainerFd, GroupFd) {
    let (c, g) = container(v, &[dev]);
    assert_eq!(v.ioctl_int(QEMU, c, ioctl::SET_IOMMU, 2), Ok(0));
    (c, g[0])
}

pub fn call(v: &Vfio, c: ContainerFd, nr: u32, mut arg: Vec<u8>) -> Result<i64, Errno> {
    v.ioctl(QEMU, c, nr, &mut arg)
}

/// Registers `len` bytes of fresh 64K-page memory; returns its user address.
pub fn prereg(v: &Vfio, c: ContainerFd, len: u64) -> u64 {
    let ua = v.mmap(QEMU, len, 16).unwrap();
    assert_eq!(
        call(v, c, ioctl::REGISTER_MEMORY, encode::register(0, ua, len)),
        Ok(0)
    );
    ua
}

/// A 64K-page DDW of `size` bytes with `levels`; returns its start.
pub fn ddw(v: &Vfio, c: ContainerFd, size: u64, levels: u32) -> u64 {
    let mut arg = encode::create(16, size, levels);
    assert_eq!(v.ioctl(QEMU, c, ioctl::TCE_CREATE, &mut arg), Ok(0));
    encode::get64(&arg, 32)
}

pub const RW: u32 = 3;
pub const R: u32 = 1;
