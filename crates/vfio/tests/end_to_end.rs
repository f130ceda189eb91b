//! Issue 6's end-to-end story: a v2 container with two groups, a 64K-page DDW of 1 TiB
//! with 2 levels, 1 GiB of preregistered memory mapped; the devices reach only what was
//! mapped, with the permissions mapped; detach gives them back to the kernel with its
//! windows restored; closing the container returns every charge.

mod common;
use common::*;
use iommu_core::DomainType;
use spapr_platform::{DmaFault, Tve1};
use spapr_tce::DmaDirection;
use spapr_vfio::uapi::{encode, ioctl};
use spapr_vfio::KernelProfile;

#[test]
fn two_groups_share_a_ddw_and_reach_only_what_was_mapped() {
    for profile in [KernelProfile::Linux, KernelProfile::Strict] {
        let v = vfio(profile);
        let m = v.machine().clone();
        let (c, groups) = v2(&v, &["nvme0", "gpu0"]);
        let (nvme, gpu) = (m.device("nvme0").unwrap(), m.device("gpu0").unwrap());
        // Isolated since SET_CONTAINER: no kernel translation at all.
        assert!(m
            .device_translate(nvme, DDW, spapr_tce::Access::Read)
            .is_err());
        assert!(m.check().is_empty(), "{:?}", m.check());

        let ua = prereg(&v, c, 1 << 30);
        let start = ddw(&v, c, 1 << 40, 2);
        assert_eq!(start, DDW);
        // First half read-write, second half read-only.
        let half = 1u64 << 29;
        assert_eq!(
            call(&v, c, ioctl::MAP_DMA, encode::map(RW, ua, start, half)),
            Ok(0)
        );
        assert_eq!(
            call(
                &v,
                c,
                ioctl::MAP_DMA,
                encode::map(R, ua + half, start + half, half)
            ),
            Ok(0)
        );
        // CREATE made the pending default window first (slot 0), then the DDW (slot 1).
        let w = v.windows(c);
        assert_eq!(w.len(), 2);
        assert_eq!((w[0].start, w[0].page_size, w[0].mapped), (0, 1 << 12, 0));
        assert_eq!(
            (w[1].page_size, w[1].levels, w[1].mapped),
            (1 << 16, 2, 16384)
        );
        assert_eq!(v.region_mapped(QEMU), vec![16384]);

        for dev in [nvme, gpu] {
            // Read-write half: the write lands in the user's memory.
            m.device_write(dev, start + 0x1_0008, b"dma!").unwrap();
            let hpa = v.user_to_real(QEMU, ua + 0x1_0008).unwrap();
            let mut got = [0u8; 4];
            m.ram().read(hpa, &mut got).unwrap();
            assert_eq!(&got, b"dma!");
            // Read-only half: reads go, writes fault.
            assert!(m.device_read(dev, start + half + 64, 8).is_ok());
            let f = m.device_write(dev, start + half + 64, b"x").unwrap_err();
            assert!(
                matches!(f, DmaFault::Tce(spapr_tce::Fault::Permission { .. })),
                "{f}"
            );
            // Past what was mapped, and window 0 (nothing mapped there): faults.
            assert!(m.device_read(dev, start + (1 << 30), 8).is_err());
            assert!(m.device_read(dev, 0x1_0000, 8).is_err());
        }
        assert!(m.check().is_empty(), "{:?}", m.check());

        // Detach both: TCEs cleared, windows unset, the kernel's windows back.
        v.unset_container(groups[0]).unwrap();
        assert_eq!(v.region_mapped(QEMU), vec![0], "detach cleared every TCE");
        // The last group's departure releases the driver: the region is freed too.
        v.unset_container(groups[1]).unwrap();
        assert!(v.region_mapped(QEMU).is_empty());
        for dev in [nvme, gpu] {
            let pe = m.pe_of(dev).unwrap();
            assert!(pe.table(0).is_some_and(|t| t.is_kernel_table()));
            assert!(matches!(pe.tve1_now(), Tve1::Bypass { .. }));
            let g = m.core().device_group(dev).unwrap().unwrap();
            assert_eq!(m.core().group_view(&g).domain, Some(DomainType::Platform));
        }
        m.unbind_driver(nvme).unwrap();
        m.bind_driver(nvme, "nvme").unwrap();
        let b = m
            .driver_dma_alloc(nvme, 4096, DmaDirection::Bidirectional)
            .unwrap();
        m.device_write(nvme, b.dma, b"kernel").unwrap();
        assert!(m.check().is_empty(), "{:?}", m.check());

        v.close_container(c).unwrap();
        assert_eq!(
            v.locked_pages(QEMU),
            0,
            "{profile:?}: every charge returned"
        );
    }
}

#[test]
fn closing_the_container_detaches_everything_and_frees_all() {
    let v = vfio(KernelProfile::Linux);
    let m = v.machine().clone();
    let (c, _) = v2(&v, &["gpu0"]);
    let ua = prereg(&v, c, 1 << 24);
    let start = ddw(&v, c, 1 << 30, 1);
    assert_eq!(
        call(&v, c, ioctl::MAP_DMA, encode::map(RW, ua, start, 1 << 24)),
        Ok(0)
    );
    assert!(v.locked_pages(QEMU) > 0);
    v.close_container(c).unwrap();
    assert_eq!(v.locked_pages(QEMU), 0);
    let gpu = m.device("gpu0").unwrap();
    let pe = m.pe_of(gpu).unwrap();
    assert!(pe.table(1).is_none(), "the user's DDW is gone");
    assert!(pe.table(0).is_some_and(|t| t.is_kernel_table()));
    // DDW addresses now go through bypass again.
    assert!(m
        .device_translate(gpu, start, spapr_tce::Access::Read)
        .is_ok());
    assert!(m.check().is_empty());
}

#[test]
fn a_v1_flow_maps_through_the_default_window() {
    let v = vfio(KernelProfile::Linux);
    let m = v.machine().clone();
    let (c, g) = v1(&v, "gpu0");
    assert_eq!(v.ioctl_int(QEMU, c, ioctl::ENABLE, 0), Ok(0));
    let ua = v.mmap(QEMU, 1 << 20, 16).unwrap();
    assert!(v.default_window_pending(c));
    assert_eq!(
        call(
            &v,
            c,
            ioctl::MAP_DMA,
            encode::map(RW, ua, 0x10_0000, 0x1_0000)
        ),
        Ok(0)
    );
    assert!(!v.default_window_pending(c));
    // 4K IOMMU pages over a 64K host page: pinned once per IOMMU page.
    assert_eq!(v.pinned_pages(c), 16);
    let gpu = m.device("gpu0").unwrap();
    m.device_write(gpu, 0x10_0010, b"v1").unwrap();
    assert_eq!(
        call(
            &v,
            c,
            ioctl::UNMAP_DMA,
            encode::unmap(0, 0x10_0000, 0x1_0000)
        ),
        Ok(0)
    );
    assert_eq!(v.pinned_pages(c), 0);
    assert!(m.device_read(gpu, 0x10_0010, 2).is_err());
    v.unset_container(g).unwrap();
    v.close_container(c).unwrap();
    assert_eq!(v.locked_pages(QEMU), 0);
}

#[test]
fn the_bookkeeping_audit_agrees_after_fast_and_entry_by_entry_maps() {
    let v = vfio(KernelProfile::Linux);
    let (c, _) = v2(&v, &["gpu0"]);
    let ua = prereg(&v, c, 1 << 24);
    let start = ddw(&v, c, 1 << 30, 1);
    // Fast path: one region, nothing live.
    assert_eq!(
        call(&v, c, ioctl::MAP_DMA, encode::map(RW, ua, start, 1 << 22)),
        Ok(0)
    );
    assert_eq!(v.region_mapped(QEMU), vec![64]);
    assert!(v.audit().is_empty(), "{:?}", v.audit());
    // Entry by entry: replacing live entries.
    assert_eq!(
        call(
            &v,
            c,
            ioctl::MAP_DMA,
            encode::map(R, ua + (1 << 22), start, 1 << 20)
        ),
        Ok(0)
    );
    assert_eq!(v.region_mapped(QEMU), vec![64]);
    assert!(v.audit().is_empty(), "{:?}", v.audit());
    assert_eq!(
        call(&v, c, ioctl::UNMAP_DMA, encode::unmap(0, start, 1 << 23)),
        Ok(0)
    );
    assert_eq!(v.region_mapped(QEMU), vec![0]);
    assert!(v.audit().is_empty(), "{:?}", v.audit());
}
