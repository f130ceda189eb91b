//! Each row of kernel.md section 5's VFIO tables (with section 8's corrections), in each
//! profile where `linux` and `strict` differ.

mod common;
use common::*;
use iommu_core::{Errno, EventKind};
use spapr_platform::OpalError;
use spapr_vfio::uapi::{encode, ioctl};
use spapr_vfio::{KernelProfile, Mm};

use Errno::*;
use KernelProfile::*;

fn quirks(v: &spapr_vfio::Vfio) -> Vec<String> {
    v.machine()
        .core()
        .take_trace()
        .into_iter()
        .filter(|e| e.kind == EventKind::Quirk)
        .map(|e| e.detail)
        .collect()
}

// ---- container before SET_IOMMU, CHECK_EXTENSION, SET_IOMMU ----

#[test]
fn check_extension_answers_for_2_7_and_eeh() {
    let v = vfio(Linux);
    let c = v.open_container();
    assert_eq!(v.ioctl_int(QEMU, c, ioctl::CHECK_EXTENSION, 2), Ok(1));
    assert_eq!(v.ioctl_int(QEMU, c, ioctl::CHECK_EXTENSION, 7), Ok(1));
    assert_eq!(v.ioctl_int(QEMU, c, ioctl::CHECK_EXTENSION, 5), Ok(0));
    assert_eq!(v.ioctl_int(QEMU, c, ioctl::CHECK_EXTENSION, 1), Ok(0));
    assert_eq!(v.ioctl_int(QEMU, c, ioctl::GET_API_VERSION, 0), Ok(0));
}

#[test]
fn set_iommu_refuses_other_types_an_empty_container_and_a_second_driver() {
    let v = vfio(Linux);
    let empty = v.open_container();
    assert_eq!(v.ioctl_int(QEMU, empty, ioctl::SET_IOMMU, 7), Err(Einval));
    let (c, _) = container(&v, &["gpu0"]);
    assert_eq!(v.ioctl_int(QEMU, c, ioctl::SET_IOMMU, 1), Err(Enodev));
    assert_eq!(v.ioctl_int(QEMU, c, ioctl::SET_IOMMU, 7), Ok(0));
    assert_eq!(v.ioctl_int(QEMU, c, ioctl::SET_IOMMU, 7), Err(Einval));
}

#[test]
fn container_ioctls_before_a_driver_is_set_are_einval() {
    let v = vfio(Linux);
    let (c, _) = container(&v, &["gpu0"]);
    assert_eq!(
        call(&v, c, ioctl::SPAPR_TCE_GET_INFO, encode::info(32)),
        Err(Einval)
    );
    assert_eq!(
        call(&v, c, ioctl::MAP_DMA, encode::map(3, 0, 0, 0)),
        Err(Einval)
    );
}

#[test]
fn unknown_and_wrong_version_ioctls_are_enotty() {
    let v = vfio(Linux);
    let (c, _) = v2(&v, &["gpu0"]);
    assert_eq!(
        v.ioctl_int(QEMU, c, ioctl::ENABLE, 0),
        Err(Enotty),
        "ENABLE on v2"
    );
    assert_eq!(v.ioctl_int(QEMU, c, ioctl::DISABLE, 0), Err(Enotty));
    // VFIO_EEH_PE_OP is the TCE driver's (v6.2+): argsz 0 is -EINVAL, not -ENOTTY.
    assert_eq!(
        call(&v, c, ioctl::EEH_PE_OP, vec![0; 16]),
        Err(iommu_core::Errno::Einval)
    );
    let v = vfio(Linux);
    let (c, _) = v1(&v, "gpu0");
    assert_eq!(
        call(&v, c, ioctl::TCE_CREATE, encode::create(16, 1 << 30, 1)),
        Err(Enotty)
    );
    assert_eq!(
        call(&v, c, ioctl::REGISTER_MEMORY, encode::register(0, 0, 0)),
        Err(Enotty)
    );
}

#[test]
fn another_process_gets_eperm_once_the_mm_is_set() {
    let v = vfio(Linux);
    let (c, _) = v2(&v, &["gpu0"]);
    prereg(&v, c, 1 << 20);
    let mut arg = encode::info(32);
    assert_eq!(
        v.ioctl(OTHER, c, ioctl::SPAPR_TCE_GET_INFO, &mut arg),
        Err(Eperm)
    );
    assert_eq!(v.ioctl_int(OTHER, c, ioctl::CHECK_EXTENSION, 7), Ok(1));
    let mut arg = encode::create(16, 1 << 30, 1);
    assert_eq!(v.ioctl(OTHER, c, ioctl::TCE_CREATE, &mut arg), Err(Eperm));
}

// ---- GET_INFO ----

#[test]
fn get_info_rows() {
    let v = vfio(Linux);
    let (c, g) = v2(&v, &["gpu0"]);
    // argsz < 16 → EINVAL; a buffer shorter than minsz faults.
    assert_eq!(
        call(&v, c, ioctl::SPAPR_TCE_GET_INFO, encode::info(8)),
        Err(Einval)
    );
    assert_eq!(
        v.ioctl(QEMU, c, ioctl::SPAPR_TCE_GET_INFO, &mut [0u8; 8]),
        Err(Efault)
    );
    // 32 bytes: DDW info included.
    let mut arg = encode::info(32);
    assert_eq!(v.ioctl(QEMU, c, ioctl::SPAPR_TCE_GET_INFO, &mut arg), Ok(0));
    assert_eq!(encode::get32(&arg, 4), 1, "VFIO_IOMMU_SPAPR_INFO_DDW");
    assert_eq!(encode::get32(&arg, 8), 0);
    assert_eq!(encode::get32(&arg, 12), 0x8000_0000);
    assert_eq!(encode::get64(&arg, 16), spapr_tce::PageSizes::PHB4.0);
    assert_eq!(encode::get32(&arg, 24), 2);
    assert_eq!(encode::get32(&arg, 28), 5);
    // 16 bytes: the DDW part is not copied.
    let mut arg = encode::info(16);
    arg.resize(32, 0xee);
    assert_eq!(v.ioctl(QEMU, c, ioctl::SPAPR_TCE_GET_INFO, &mut arg), Ok(0));
    assert_eq!(&arg[16..], &[0xee; 16]);
    // No group left → ENXIO (the driver is released with the last group; a new one is
    // set once another group joins, so test through a fresh container).
    v.unset_container(g[0]).unwrap();
    let v = vfio(Linux);
    let (c, g) = v1(&v, "gpu0");
    let mut arg = encode::info(32);
    assert_eq!(v.ioctl(QEMU, c, ioctl::SPAPR_TCE_GET_INFO, &mut arg), Ok(0));
    assert_eq!(encode::get32(&arg, 4), 0, "v1: no DDW flag");
    let _ = g;
}

// ---- ENABLE / DISABLE (v1) ----

#[test]
fn enable_rows() {
    let v = vfio(Linux);
    let (c, _) = v1(&v, "gpu0");
    assert_eq!(v.ioctl_int(QEMU, c, ioctl::ENABLE, 0), Ok(0));
    assert_eq!(v.locked_pages(QEMU), 0x8000_0000 >> 16);
    assert_eq!(v.ioctl_int(QEMU, c, ioctl::ENABLE, 0), Err(Ebusy));
    assert_eq!(v.ioctl_int(QEMU, c, ioctl::DISABLE, 0), Ok(0));
    assert_eq!(v.locked_pages(QEMU), 0);
    assert_eq!(v.ioctl_int(QEMU, c, ioctl::DISABLE, 0), Ok(0), "always 0");
    // Over RLIMIT_MEMLOCK.
    let v = spapr_vfio::Vfio::new(
        vfio(Linux).machine().clone(),
        spapr_vfio::VfioConfig {
            memlock_limit: 1 << 20,
            ..Default::default()
        },
    );
    let (c, _) = v1(&v, "gpu0");
    assert_eq!(v.ioctl_int(QEMU, c, ioctl::ENABLE, 0), Err(Enomem));
}

// ---- MAP_DMA ----

fn mapped_v2(profile: KernelProfile) -> (spapr_vfio::Vfio, spapr_vfio::ContainerFd, u64, u64) {
    let v = vfio(profile);
    let (c, _) = v2(&v, &["gpu0"]);
    let ua = prereg(&v, c, 1 << 24);
    let start = ddw(&v, c, 1 << 30, 1);
    quirks(&v);
    (v, c, ua, start)
}

#[test]
fn map_before_enable_is_eperm() {
    let v = vfio(Linux);
    let (c, _) = v2(&v, &["gpu0"]);
    assert_eq!(
        call(&v, c, ioctl::MAP_DMA, encode::map(RW, 0, 0, 0x1000)),
        Err(Eperm)
    );
    assert_eq!(
        call(&v, c, ioctl::UNMAP_DMA, encode::unmap(0, 0, 0x1000)),
        Err(Eperm)
    );
}

#[test]
fn map_argument_rows_in_order() {
    let (v, c, ua, start) = mapped_v2(Linux);
    let mut short = encode::map(RW, ua, start, 0x1_0000);
    encode::set_argsz(&mut short, 24);
    assert_eq!(
        call(&v, c, ioctl::MAP_DMA, short),
        Err(Einval),
        "argsz < 32"
    );
    assert_eq!(
        v.ioctl(QEMU, c, ioctl::MAP_DMA, &mut [0u8; 16]),
        Err(Efault)
    );
    assert_eq!(
        call(
            &v,
            c,
            ioctl::MAP_DMA,
            encode::map(4 | RW, ua, start, 0x1_0000)
        ),
        Err(Einval)
    );
    // Not in any window → ENXIO, even with flags 0 (checked after the window lookup).
    assert_eq!(
        call(&v, c, ioctl::MAP_DMA, encode::map(0, ua, 1 << 40, 0x1_0000)),
        Err(Enxio)
    );
    assert_eq!(
        call(
            &v,
            c,
            ioctl::MAP_DMA,
            encode::map(RW, ua, 1 << 40, 0x1_0000)
        ),
        Err(Enxio)
    );
    assert_eq!(
        call(&v, c, ioctl::MAP_DMA, encode::map(RW, ua, start, 0x1000)),
        Err(Einval),
        "size"
    );
    assert_eq!(
        call(
            &v,
            c,
            ioctl::MAP_DMA,
            encode::map(RW, ua + 0x1000, start, 0x1_0000)
        ),
        Err(Einval),
        "vaddr"
    );
    assert_eq!(
        call(&v, c, ioctl::MAP_DMA, encode::map(0, ua, start, 0x1_0000)),
        Err(Einval),
        "flags 0"
    );
    // v2: vaddr outside every preregistered region.
    assert_eq!(
        call(
            &v,
            c,
            ioctl::MAP_DMA,
            encode::map(RW, ua + (1 << 24), start, 0x1_0000)
        ),
        Err(Einval)
    );
}

#[test]
fn an_unaligned_iova_inside_a_window_returns_1_in_linux_and_einval_in_strict() {
    for (p, want) in [(Linux, Ok(1)), (Strict, Err(Einval))] {
        let (v, c, ua, start) = mapped_v2(p);
        assert_eq!(
            call(
                &v,
                c,
                ioctl::MAP_DMA,
                encode::map(RW, ua, start + 0x1000, 0x1_0000)
            ),
            want
        );
        assert_eq!(
            call(
                &v,
                c,
                ioctl::UNMAP_DMA,
                encode::unmap(0, start + 0x1000, 0x1_0000)
            ),
            want
        );
        assert_eq!(!quirks(&v).is_empty(), p == Linux);
    }
}

#[test]
fn an_existing_entry_is_silently_replaced_in_linux_and_ebusy_in_strict() {
    for (p, want) in [(Linux, Ok(0)), (Strict, Err(Ebusy))] {
        let (v, c, ua, start) = mapped_v2(p);
        assert_eq!(
            call(&v, c, ioctl::MAP_DMA, encode::map(RW, ua, start, 0x2_0000)),
            Ok(0)
        );
        assert_eq!(
            call(
                &v,
                c,
                ioctl::MAP_DMA,
                encode::map(R, ua + 0x2_0000, start, 0x2_0000)
            ),
            want
        );
        // The region's use count stays right either way.
        assert_eq!(v.region_mapped(QEMU), vec![2]);
    }
}

#[test]
fn a_map_running_past_the_window_is_cut_in_linux_and_refused_in_strict() {
    for p in [Linux, Strict] {
        let (v, c, ua, start) = mapped_v2(p);
        let last = start + (1 << 30) - 0x1_0000;
        let r = call(&v, c, ioctl::MAP_DMA, encode::map(RW, ua, last, 0x3_0000));
        match p {
            Linux => {
                assert_eq!(r, Ok(0));
                assert_eq!(v.region_mapped(QEMU), vec![1], "only the in-window page");
                assert!(quirks(&v).iter().any(|q| q.contains("past the table")));
            }
            Strict => {
                assert_eq!(r, Err(Einval));
                assert_eq!(v.region_mapped(QEMU), vec![0], "nothing mapped");
            }
        }
    }
}

#[test]
fn strict_refuses_maps_past_the_requested_size_of_an_enlarged_window() {
    // 64K host pages: a 64 MiB window of 64K IOMMU pages (1024 entries) is enlarged to
    // 8192 entries (one host page of TCEs).
    for (p, want) in [(Linux, Ok(0)), (Strict, Err(Enxio))] {
        let v = vfio(p);
        let (c, _) = v2(&v, &["gpu0"]);
        let ua = prereg(&v, c, 1 << 24);
        let start = ddw(&v, c, 1 << 26, 1);
        assert_eq!(
            call(
                &v,
                c,
                ioctl::MAP_DMA,
                encode::map(RW, ua, start + (1 << 26), 0x1_0000)
            ),
            want,
            "{p:?}"
        );
    }
}

#[test]
fn a_region_with_small_pages_cannot_back_large_iommu_pages() {
    let v = vfio(Linux);
    let (c, _) = v2(&v, &["gpu0"]);
    let ua = v.mmap(QEMU, 1 << 20, 12).unwrap();
    assert_eq!(
        call(
            &v,
            c,
            ioctl::REGISTER_MEMORY,
            encode::register(0, ua, 1 << 20)
        ),
        Ok(0)
    );
    let start = ddw(&v, c, 1 << 30, 1);
    assert_eq!(
        call(&v, c, ioctl::MAP_DMA, encode::map(RW, ua, start, 0x1_0000)),
        Err(Einval)
    );
}

#[test]
fn v1_map_rows() {
    let v = vfio(Linux);
    let (c, _) = v1(&v, "gpu0");
    v.ioctl_int(QEMU, c, ioctl::ENABLE, 0).unwrap();
    // Pin fails: not the process's memory.
    assert_eq!(
        call(
            &v,
            c,
            ioctl::MAP_DMA,
            encode::map(RW, 0x1000, 0x1_0000, 0x1000)
        ),
        Err(Efault)
    );
    // A 4K host page under a 4K IOMMU page is fine; the EPERM row needs a host page
    // smaller than the IOMMU page, which the 4K default window cannot have.
    let ua = v.mmap(QEMU, 1 << 16, 12).unwrap();
    assert_eq!(
        call(&v, c, ioctl::MAP_DMA, encode::map(RW, ua, 0x1_0000, 0x1000)),
        Ok(0)
    );
}

// ---- UNMAP_DMA ----

#[test]
fn unmap_rows() {
    let (v, c, ua, start) = mapped_v2(Linux);
    assert_eq!(
        call(&v, c, ioctl::MAP_DMA, encode::map(RW, ua, start, 0x2_0000)),
        Ok(0)
    );
    let mut short = encode::unmap(0, start, 0x1_0000);
    encode::set_argsz(&mut short, 16);
    assert_eq!(call(&v, c, ioctl::UNMAP_DMA, short), Err(Einval));
    assert_eq!(
        call(&v, c, ioctl::UNMAP_DMA, encode::unmap(1, start, 0x1_0000)),
        Err(Einval)
    );
    assert_eq!(
        call(&v, c, ioctl::UNMAP_DMA, encode::unmap(0, start, 0x1000)),
        Err(Einval)
    );
    assert_eq!(
        call(&v, c, ioctl::UNMAP_DMA, encode::unmap(0, 1 << 40, 0x1_0000)),
        Err(Enxio)
    );
    // Empty entries are skipped; never fails.
    assert_eq!(
        call(&v, c, ioctl::UNMAP_DMA, encode::unmap(0, start, 0x10_0000)),
        Ok(0)
    );
    assert_eq!(v.region_mapped(QEMU), vec![0]);
}

// ---- REGISTER / UNREGISTER (v2) ----

#[test]
fn register_rows() {
    let v = vfio(Linux);
    let (c, _) = v2(&v, &["gpu0"]);
    let ua = v.mmap(QEMU, 1 << 22, 16).unwrap();
    let bad = |flags, vaddr, size| {
        call(
            &v,
            c,
            ioctl::REGISTER_MEMORY,
            encode::register(flags, vaddr, size),
        )
    };
    assert_eq!(bad(1, ua, 1 << 20), Err(Einval), "flags");
    assert_eq!(
        bad(0, ua + 0x1000, 1 << 20),
        Err(Einval),
        "vaddr not page aligned"
    );
    assert_eq!(bad(0, ua, 0x1000), Err(Einval), "size not page aligned");
    assert_eq!(bad(0, u64::MAX - 0xffff, 1 << 20), Err(Einval), "wraps");
    assert_eq!(bad(0, 0x10_0000, 1 << 20), Err(Efault), "pinning fails");
    assert_eq!(bad(0, ua, 1 << 20), Ok(0));
    assert_eq!(
        bad(0, ua, 1 << 20),
        Err(Ebusy),
        "same region, same container"
    );
    assert_eq!(
        bad(0, ua + (1 << 19), 1 << 20),
        Err(Einval),
        "overlaps, not exact"
    );
    // An exact match from another container of the same mm is shared.
    let c2 = {
        let v2c = v.open_container();
        let d = v.machine().device("nvme0").unwrap();
        v.register_device(d).unwrap();
        let g = v.open_group(d).unwrap();
        v.set_container(g, v2c).unwrap();
        v.ioctl_int(QEMU, v2c, ioctl::SET_IOMMU, 7).unwrap();
        v2c
    };
    assert_eq!(
        call(
            &v,
            c2,
            ioctl::REGISTER_MEMORY,
            encode::register(0, ua, 1 << 20)
        ),
        Ok(0)
    );
    assert_eq!(v.locked_pages(QEMU), 16, "charged once");
    // RLIMIT_MEMLOCK.
    let v = spapr_vfio::Vfio::new(
        vfio(Linux).machine().clone(),
        spapr_vfio::VfioConfig {
            memlock_limit: 1 << 20,
            ..Default::default()
        },
    );
    let (c, _) = v2(&v, &["gpu0"]);
    let ua = v.mmap(QEMU, 1 << 22, 16).unwrap();
    assert_eq!(
        call(
            &v,
            c,
            ioctl::REGISTER_MEMORY,
            encode::register(0, ua, 1 << 22)
        ),
        Err(Enomem)
    );
}

#[test]
fn unregister_rows() {
    let v = vfio(Linux);
    let (c, _) = v2(&v, &["gpu0"]);
    let ua = v.mmap(QEMU, 1 << 22, 16).unwrap();
    let unreg = |mm: Mm, vaddr, size| {
        v.ioctl(
            mm,
            c,
            ioctl::UNREGISTER_MEMORY,
            &mut encode::register(0, vaddr, size),
        )
    };
    assert_eq!(unreg(QEMU, ua, 1 << 20), Err(Eperm), "no mm yet");
    assert_eq!(
        call(
            &v,
            c,
            ioctl::REGISTER_MEMORY,
            encode::register(0, ua, 1 << 20)
        ),
        Ok(0)
    );
    assert_eq!(unreg(QEMU, ua + 0x1000, 1 << 20), Err(Einval));
    assert_eq!(unreg(QEMU, ua, 1 << 21), Err(Enoent));
    assert_eq!(unreg(QEMU, ua, 1 << 20), Ok(0));
    assert_eq!(v.locked_pages(QEMU), 0);
    assert_eq!(unreg(QEMU, ua, 1 << 20), Err(Enoent));
}

#[test]
fn unregistering_a_mapped_region_leaks_in_linux_and_is_ebusy_in_strict() {
    for p in [Linux, Strict] {
        let (v, c, ua, start) = mapped_v2(p);
        assert_eq!(
            call(&v, c, ioctl::MAP_DMA, encode::map(RW, ua, start, 0x1_0000)),
            Ok(0)
        );
        let pages = v.locked_pages(QEMU);
        let r = call(
            &v,
            c,
            ioctl::UNREGISTER_MEMORY,
            encode::register(0, ua, 1 << 24),
        );
        match p {
            Linux => {
                assert_eq!(r, Ok(0));
                assert_eq!(v.locked_pages(QEMU), pages, "still charged");
                // MAPs still resolve it; a second UNREGISTER → ENOENT.
                assert_eq!(
                    call(
                        &v,
                        c,
                        ioctl::MAP_DMA,
                        encode::map(RW, ua, start + 0x1_0000, 0x1_0000)
                    ),
                    Ok(0)
                );
                assert_eq!(
                    call(
                        &v,
                        c,
                        ioctl::UNREGISTER_MEMORY,
                        encode::register(0, ua, 1 << 24)
                    ),
                    Err(Enoent)
                );
            }
            Strict => {
                assert_eq!(r, Err(Ebusy));
                assert_eq!(v.region_mapped(QEMU), vec![1]);
            }
        }
    }
}

// ---- TCE_CREATE / TCE_REMOVE (v2) ----

#[test]
fn create_rows() {
    let v = vfio(Linux);
    let (c, _) = v2(&v, &["gpu0"]);
    let create = |b: Vec<u8>| call(&v, c, ioctl::TCE_CREATE, b);
    let mut short = encode::create(16, 1 << 30, 1);
    encode::set_argsz(&mut short, 32);
    assert_eq!(create(short), Err(Einval));
    let mut flagged = encode::create(16, 1 << 30, 1);
    encode::set_flags(&mut flagged, 1);
    assert_eq!(create(flagged), Err(Einval));
    assert_eq!(
        create(encode::create(24, 1 << 30, 1)),
        Err(Einval),
        "16M not on PHB4"
    );
    assert_eq!(
        create(encode::create(16, 1 << 30, 0)),
        Err(Einval),
        "levels 0"
    );
    assert_eq!(
        create(encode::create(16, 1 << 30, 6)),
        Err(Einval),
        "levels 6"
    );
    assert_eq!(
        create(encode::create(16, 3 << 30, 1)),
        Err(Einval),
        "not a power of two"
    );
    // The default window (pending) and one DDW fill both slots.
    assert_eq!(create(encode::create(16, 1 << 30, 1)), Ok(0));
    assert_eq!(create(encode::create(16, 1 << 30, 1)), Err(Enospc));
}

#[test]
fn create_with_no_group_is_enxio_and_remove_too() {
    let v = vfio(Linux);
    let (c, g) = v2(&v, &["gpu0"]);
    v.unset_container(g[0]).unwrap();
    // The driver went with the last group: back to "no driver".
    assert_eq!(
        call(&v, c, ioctl::TCE_CREATE, encode::create(16, 1 << 30, 1)),
        Err(Einval)
    );
}

#[test]
fn a_refused_geometry_leaks_its_charge_in_linux_and_not_in_strict() {
    for p in [Linux, Strict] {
        let v = vfio(p);
        let (c, _) = v2(&v, &["gpu0"]);
        prereg(&v, c, 1 << 20);
        // Make the pending default window first.
        assert_eq!(
            call(&v, c, ioctl::TCE_REMOVE, encode::remove(0)),
            Ok(0),
            "cancels pending"
        );
        let before = v.locked_pages(QEMU);
        // 3 levels of 64K pages on a 64K-page host: (13*3)+16 = 55, refused by create_table.
        assert_eq!(
            call(&v, c, ioctl::TCE_CREATE, encode::create(16, 1 << 40, 3)),
            Err(Einval)
        );
        let leaked = v.locked_pages(QEMU) > before;
        assert_eq!(leaked, p == Linux, "{p:?}");
    }
}

#[test]
fn locked_memory_limit_refuses_create_with_enomem() {
    let v = spapr_vfio::Vfio::new(
        vfio(Linux).machine().clone(),
        spapr_vfio::VfioConfig {
            memlock_limit: 1 << 20,
            ..Default::default()
        },
    );
    let (c, _) = v2(&v, &["gpu0"]);
    prereg(&v, c, 1 << 19);
    assert_eq!(call(&v, c, ioctl::TCE_REMOVE, encode::remove(0)), Ok(0));
    assert_eq!(
        call(&v, c, ioctl::TCE_CREATE, encode::create(12, 1 << 40, 2)),
        Err(Enomem)
    );
}

#[test]
fn set_window_failures_pass_raw_opal_status_in_linux_and_map_in_strict() {
    for (p, param, hw) in [(Linux, Eperm, Enxio), (Strict, Einval, Eio)] {
        for (e, want) in [(OpalError::Parameter, param), (OpalError::Hardware, hw)] {
            let v = vfio(p);
            let (c, _) = v2(&v, &["gpu0"]);
            prereg(&v, c, 1 << 20);
            assert_eq!(call(&v, c, ioctl::TCE_REMOVE, encode::remove(0)), Ok(0));
            v.machine().env().fail_next_set_window(e);
            assert_eq!(
                call(&v, c, ioctl::TCE_CREATE, encode::create(16, 1 << 30, 1)),
                Err(want)
            );
            assert!(v.windows(c).is_empty(), "nothing left behind");
        }
    }
}

#[test]
fn remove_rows() {
    let v = vfio(Linux);
    let (c, _) = v2(&v, &["gpu0"]);
    prereg(&v, c, 1 << 20);
    let mut short = encode::remove(0);
    encode::set_argsz(&mut short, 8);
    assert_eq!(
        v.ioctl(QEMU, c, ioctl::TCE_REMOVE, &mut short[..8]),
        Err(Efault)
    );
    let mut flagged = encode::remove(0);
    encode::set_flags(&mut flagged, 1);
    assert_eq!(call(&v, c, ioctl::TCE_REMOVE, flagged), Err(Einval));
    // Pending default window and start 0: cancelled, 0.
    assert!(v.default_window_pending(c));
    assert_eq!(call(&v, c, ioctl::TCE_REMOVE, encode::remove(0)), Ok(0));
    assert!(!v.default_window_pending(c));
    assert_eq!(
        call(&v, c, ioctl::TCE_REMOVE, encode::remove(DDW)),
        Err(Einval),
        "no window"
    );
    let start = ddw(&v, c, 1 << 30, 1);
    // After removing the default, CREATE takes slot 0 (bus offset 0).
    assert_eq!(start, 0);
    // Containment: any address inside the window removes it.
    assert_eq!(
        call(&v, c, ioctl::TCE_REMOVE, encode::remove(start + 0x12_3456)),
        Ok(0)
    );
    assert!(v.windows(c).is_empty());
}

// ---- groups ----

#[test]
fn set_container_rows() {
    let v = vfio(Linux);
    let m = v.machine().clone();
    let gpu = m.device("gpu0").unwrap();
    v.register_device(gpu).unwrap();
    let g = v.open_group(gpu).unwrap();
    let c = v.open_container();
    assert_eq!(v.set_container(g, spapr_vfio::ContainerFd(999)), Err(Ebadf));
    assert_eq!(
        v.set_container(g, spapr_vfio::ContainerFd(g.0)),
        Err(Ebadfd)
    );
    v.set_container(g, c).unwrap();
    assert_eq!(
        v.set_container(g, c),
        Err(Einval),
        "already has a container"
    );
    // A group whose kernel driver is bound cannot be claimed.
    let nic = m.device("nic0").unwrap();
    m.bind_driver(nic, "ixgbe").unwrap();
    let gn = v.open_group(nic).unwrap();
    let c2 = v.open_container();
    assert_eq!(v.set_container(gn, c2), Err(Eperm));
}

#[test]
fn unset_container_rows() {
    let v = vfio(Linux);
    let (_, g) = v2(&v, &["gpu0"]);
    let gpu = v.machine().device("gpu0").unwrap();
    v.open_device(g[0], gpu).unwrap();
    assert_eq!(v.unset_container(g[0]), Err(Ebusy));
    v.close_device(g[0]).unwrap();
    v.unset_container(g[0]).unwrap();
    assert_eq!(v.unset_container(g[0]), Err(Einval));
}

#[test]
fn attach_rows() {
    // v1 with a second group → EBUSY.
    let v = vfio(Linux);
    let (c, _) = v1(&v, "gpu0");
    let nvme = v.machine().device("nvme0").unwrap();
    v.register_device(nvme).unwrap();
    let g = v.open_group(nvme).unwrap();
    assert_eq!(v.set_container(g, c), Err(Ebusy));
    // The failed attach gave the claim back.
    let grp = v.machine().core().device_group(nvme).unwrap().unwrap();
    assert_eq!(v.machine().core().group_view(&grp).owner, None);
}

#[test]
fn a_device_that_is_not_cache_coherent_cannot_be_registered() {
    let v = vfio(Linux);
    let m = v.machine().clone();
    // A PCI device on a bus no PE covers: no IOMMU, no capability.
    let _ = m.add_device(&spapr_platform::DeviceConfig::new("orphan", 0, 9, 0, 64));
    let d = m.device("orphan").unwrap();
    assert_eq!(v.register_device(d), Err(Einval));
}

// ---- the kernel's order: version first, mm set only where the kernel sets it ----

/// Defect: MAP_DMA and UNMAP_DMA bound the container's mm to their caller, so a foreign
/// process's refused MAP locked the real owner out. The kernel sets the mm only in
/// REGISTER_MEMORY, TCE_CREATE, TCE_REMOVE and ENABLE (`tce_iommu_mm_set`).
#[test]
fn a_foreign_map_or_unmap_does_not_bind_the_container() {
    for version in [2u64, 7] {
        let v = vfio(Linux);
        let (c, _) = container(&v, &["gpu0"]);
        assert_eq!(v.ioctl_int(QEMU, c, ioctl::SET_IOMMU, version), Ok(0));
        let mut arg = encode::map(RW, 0, 0, 1 << 16);
        assert_eq!(
            v.ioctl(OTHER, c, ioctl::MAP_DMA, &mut arg),
            Err(Eperm),
            "not enabled"
        );
        let mut arg = encode::unmap(0, 0, 1 << 16);
        assert_eq!(v.ioctl(OTHER, c, ioctl::UNMAP_DMA, &mut arg), Err(Eperm));
        // The owner can still take the container.
        if version == 7 {
            prereg(&v, c, 1 << 20);
        } else {
            assert_eq!(v.ioctl_int(QEMU, c, ioctl::ENABLE, 0), Ok(0));
        }
        let mut arg = encode::map(RW, 0, 0, 1 << 16);
        assert_eq!(
            v.ioctl(OTHER, c, ioctl::MAP_DMA, &mut arg),
            Err(Eperm),
            "foreign"
        );
    }
}

/// Defect: UNREGISTER_MEMORY on a v1 container answered -EPERM (no mm yet) where the
/// kernel answers -ENOTTY: the version is checked before anything else of the ioctl.
#[test]
fn the_version_is_checked_before_the_mm_of_each_ioctl() {
    let v = vfio(Linux);
    let (c, _) = v1(&v, "gpu0");
    assert_eq!(
        call(
            &v,
            c,
            ioctl::UNREGISTER_MEMORY,
            encode::register(0, 0, 1 << 16)
        ),
        Err(Enotty)
    );
    assert_eq!(
        call(&v, c, ioctl::TCE_REMOVE, encode::remove(0)),
        Err(Enotty)
    );
    // A v2 container with no mm yet: ENABLE is v1's (ENOTTY), UNREGISTER finds no mm.
    let v = vfio(Linux);
    let (c, _) = v2(&v, &["gpu0"]);
    assert_eq!(v.ioctl_int(OTHER, c, ioctl::ENABLE, 0), Err(Enotty));
    assert_eq!(
        call(
            &v,
            c,
            ioctl::UNREGISTER_MEMORY,
            encode::register(0, 0, 1 << 16)
        ),
        Err(Eperm)
    );
}

/// REGISTER_MEMORY sets the mm before it reads its argument (`tce_iommu_mm_set` comes
/// first): even a refused REGISTER binds the container to its caller.
#[test]
fn a_refused_register_still_binds_the_mm_as_the_kernel_does() {
    let v = vfio(Linux);
    let (c, _) = v2(&v, &["gpu0"]);
    assert_eq!(
        call(
            &v,
            c,
            ioctl::REGISTER_MEMORY,
            encode::register(1, 0, 1 << 16)
        ),
        Err(Einval),
        "a flag"
    );
    let mut arg = encode::register(0, 0, 1 << 16);
    assert_eq!(
        v.ioctl(OTHER, c, ioctl::REGISTER_MEMORY, &mut arg),
        Err(Eperm)
    );
}
