//! What VFIO gives back on every error path, how it holds locked memory, and how it
//! behaves when devices come and go under a container (issue 13, defects 4 and 5).

mod common;
use common::*;
use iommu_core::{DomainType, Errno, EventKind};
use spapr_platform::PeScope;
use spapr_platform::{DeviceConfig, OpalError, PhbConfig, PhbModel, PowerNv, PowerNvConfig};
use spapr_tce::Access;
use spapr_vfio::uapi::{encode, ioctl};
use spapr_vfio::{KernelProfile, Vfio, VfioConfig};
use std::sync::Arc;

/// A `set_window` that fails on the second group of a container: the first group's
/// window is unset again, the table's charge is returned, nothing is left programmed.
#[test]
fn a_window_that_fails_on_one_group_is_unset_on_all_and_its_charge_returned() {
    for profile in [KernelProfile::Linux, KernelProfile::Strict] {
        let v = vfio(profile);
        let (c, groups) = v2(&v, &["nvme0", "gpu0"]);
        prereg(&v, c, 1 << 20);
        let before = v.locked_pages(QEMU);
        // The default window is made first (two set_windows), then the DDW's: fail the
        // DDW on the second group.
        v.machine().env().fail_set_window(OpalError::Hardware, 3);
        let mut arg = encode::create(16, 1 << 30, 1);
        assert!(
            v.ioctl(QEMU, c, ioctl::TCE_CREATE, &mut arg).is_err(),
            "{profile:?}"
        );
        for name in ["nvme0", "gpu0"] {
            let pe = v
                .machine()
                .pe_of(v.machine().device(name).unwrap())
                .unwrap();
            assert!(
                pe.table(1).is_none(),
                "{profile:?}: {name} keeps no half window"
            );
        }
        // Only the default window's charge is still held.
        assert_eq!(v.windows(c).len(), 1);
        assert!(v.locked_pages(QEMU) >= before);
        let default_window = v.locked_pages(QEMU) - before;
        v.close_container(c).unwrap();
        let _ = groups;
        assert_eq!(
            v.locked_pages(QEMU),
            0,
            "{profile:?}: default {default_window}"
        );
        assert!(v.audit().is_empty(), "{:?}", v.audit());
    }
}

/// What stays charged once every container is gone is exactly what the `linux` quirks
/// said they leak (here: a refused geometry), and nothing in `strict`.
#[test]
fn what_stays_charged_is_the_sum_of_the_traced_leaks() {
    for profile in [KernelProfile::Linux, KernelProfile::Strict] {
        let v = vfio(profile);
        let (c, _) = v2(&v, &["gpu0"]);
        prereg(&v, c, 1 << 20);
        // 3 levels of 64K pages on a 64K-page host is refused by create_table, after the
        // charge (kernel.md 8).
        let mut arg = encode::create(16, 1 << 40, 3);
        assert_eq!(
            v.ioctl(QEMU, c, ioctl::TCE_CREATE, &mut arg),
            Err(Errno::Einval)
        );
        v.close_container(c).unwrap();
        let left = v.locked_pages(QEMU);
        assert_eq!(left, v.leaked_pages(QEMU), "{profile:?}");
        match profile {
            KernelProfile::Linux => assert!(left > 0),
            KernelProfile::Strict => assert_eq!(left, 0),
        }
        assert!(v.audit().is_empty());
    }
}

/// An IODA1 machine whose PE borrows the kernel's table: VFIO v1 charges the table, and
/// `linux` never gives the charge back (traced), `strict` does.
#[test]
fn a_borrowed_tables_charge_is_kept_by_linux_and_returned_by_strict() {
    for profile in [KernelProfile::Linux, KernelProfile::Strict] {
        let cfg = PowerNvConfig {
            phbs: vec![PhbConfig::new(PhbModel::Ioda1, vec![(1, PeScope::Bus(1))])],
            devices: vec![DeviceConfig::new("nic0", 0, 1, 0, 64)],
            ..PowerNvConfig::seed()
        };
        let m = Arc::new(PowerNv::booted(cfg).unwrap());
        let v = Vfio::new(
            m.clone(),
            VfioConfig {
                profile,
                ..VfioConfig::default()
            },
        );
        let (c, _) = container(&v, &["nic0"]);
        assert_eq!(v.ioctl_int(QEMU, c, ioctl::SET_IOMMU, 2), Ok(0));
        assert_eq!(v.ioctl_int(QEMU, c, ioctl::ENABLE, 0), Ok(0));
        let ua = v.mmap(QEMU, 1 << 16, 16).unwrap();
        let mut arg = encode::map(RW, ua, 0x1_0000, 1 << 16);
        assert_eq!(v.ioctl(QEMU, c, ioctl::MAP_DMA, &mut arg), Ok(0));
        // VFIO v1 on a borrowing PHB is legal: the user's entries in the lent table are the
        // user's, and the checker stays silent.
        let nic = m.device("nic0").unwrap();
        assert!(m.device_translate(nic, 0x1_0000, Access::Write).is_ok());
        assert!(m.check().is_empty(), "{profile:?}: {:?}", m.check());
        v.close_container(c).unwrap();
        assert_eq!(v.locked_pages(QEMU), v.leaked_pages(QEMU), "{profile:?}");
        match profile {
            KernelProfile::Linux => assert!(v.leaked_pages(QEMU) > 0),
            KernelProfile::Strict => assert_eq!(v.locked_pages(QEMU), 0),
        }
        assert!(m.check().is_empty(), "{:?}", m.check());
    }
}

/// Hot-unplug of a device a container holds: refused with -EBUSY and named in the
/// trace; the container's windows stay programmed and the device still reaches what the
/// user mapped. Once user space lets go, the device goes.
#[test]
fn a_device_held_by_a_container_is_not_removed_behind_it() {
    let v = vfio(KernelProfile::Linux);
    let (c, g) = v2(&v, &["gpu0"]);
    let ua = prereg(&v, c, 1 << 20);
    let start = ddw(&v, c, 1 << 30, 1);
    assert_eq!(
        call(&v, c, ioctl::MAP_DMA, encode::map(RW, ua, start, 1 << 20)),
        Ok(0)
    );
    let gpu = v.machine().device("gpu0").unwrap();
    let _ = v.machine().core().take_trace();
    assert_eq!(v.remove_device(gpu), Err(Errno::Ebusy));
    // VFIO refuses itself, naming what holds the group (the platform would refuse too).
    let trace = v.machine().core().take_trace();
    assert!(
        trace.iter().any(|e| e.kind == EventKind::RemoveDevice
            && e.detail.contains(&format!("held by container fd {}", c.0))),
        "{trace:?}"
    );
    // A device no VFIO group holds goes, whatever else a container holds.
    let nic = v.machine().device("nic0").unwrap();
    v.remove_device(nic).unwrap();
    assert!(v.machine().device("nic0").is_none());
    assert_eq!(
        v.machine().remove_device(gpu),
        Err(Errno::Ebusy),
        "the platform refuses too"
    );
    let trace = v.machine().core().take_trace();
    assert!(trace
        .iter()
        .any(|e| e.kind == EventKind::RemoveDevice && e.detail.contains("waits")));
    assert!(v
        .machine()
        .device_translate(gpu, start + 0x10, Access::Write)
        .is_ok());
    v.close_group(g[0]).unwrap();
    v.close_container(c).unwrap();
    v.remove_device(gpu).unwrap();
    assert!(v.machine().device("gpu0").is_none());
    assert!(v.machine().check().is_empty());
}

/// A device hot-added into a user-owned PE is attached BLOCKED: no kernel table, no
/// kernel driver. Linux's `pnv_ioda2_take_ownership` then drops the table in slot 0, the
/// user's default window included (a traced quirk: the user's DMA through it faults, no
/// isolation is lost); `strict` leaves the user's windows alone.
#[test]
fn a_device_hot_added_into_a_user_owned_pe_is_blocked() {
    for profile in [KernelProfile::Linux, KernelProfile::Strict] {
        let v = vfio(profile);
        let (c, _) = v2(&v, &["gpu0"]);
        let ua = prereg(&v, c, 1 << 20);
        // The default window (slot 0) is made lazily by the first MAP.
        assert_eq!(
            call(
                &v,
                c,
                ioctl::MAP_DMA,
                encode::map(RW, ua, 0x1_0000, 1 << 16)
            ),
            Ok(0)
        );
        let gpu = v.machine().device("gpu0").unwrap();
        assert!(v
            .machine()
            .device_translate(gpu, 0x1_0000, Access::Read)
            .is_ok());
        let _ = v.machine().core().take_trace();
        let fn1 = v
            .machine()
            .add_device(&DeviceConfig::new("gpu0.1", 1, 1, 1, 64))
            .unwrap();
        let group = v.machine().core().device_group(fn1).unwrap().unwrap();
        let view = v.machine().core().group_view(&group);
        assert_eq!(view.domain, Some(DomainType::Blocked), "{profile:?}");
        assert_eq!(view.devices.len(), 2);
        assert!(!v.machine().pci_dev(fn1).unwrap().has_table_base());
        assert_eq!(v.machine().bind_driver(fn1, "gpu"), Err(Errno::Ebusy));
        let quirk =
            v.machine().core().take_trace().iter().any(|e| {
                e.kind == EventKind::Quirk && e.detail.contains("pnv_ioda2_take_ownership")
            });
        let reach = v
            .machine()
            .device_translate(gpu, 0x1_0000, Access::Read)
            .is_ok();
        match profile {
            KernelProfile::Linux => assert!(quirk && !reach, "slot 0 dropped, traced"),
            KernelProfile::Strict => assert!(!quirk && reach, "the user's window kept"),
        }
        assert!(v.machine().check().is_empty(), "{:?}", v.machine().check());
        v.close_container(c).unwrap();
    }
}

/// Group and container descriptors: each group is owned under its own cookie, closing a
/// group fd leaves its container and gives the PE back, and a closed fd is gone.
#[test]
fn group_fds_own_their_groups_and_closing_one_gives_the_pe_back() {
    let v = vfio(KernelProfile::Strict);
    let (c, g) = v2(&v, &["nvme0", "gpu0"]);
    for (name, fd) in [("nvme0", g[0]), ("gpu0", g[1])] {
        let dev = v.machine().device(name).unwrap();
        let group = v.machine().core().device_group(dev).unwrap().unwrap();
        assert_eq!(
            group.owner().map(|o| o.0),
            Some(iommu_core::OwnerCookie(0x7f10_0000 + u64::from(fd.0))),
            "{name}"
        );
    }
    let nvme = v.machine().device("nvme0").unwrap();
    v.close_group(g[0]).unwrap();
    let group = v.machine().core().device_group(nvme).unwrap().unwrap();
    assert!(group.owner().is_none(), "the PE is the kernel's again");
    assert_eq!(
        v.set_container(g[0], c),
        Err(Errno::Ebadf),
        "the fd is gone"
    );
    assert_eq!(v.close_group(g[0]), Err(Errno::Ebadf));
    assert!(v.machine().check().is_empty());
}

#[test]
fn check_extension_answers_eeh_as_configured() {
    for eeh in [false, true] {
        let m = Arc::new(PowerNv::booted(PowerNvConfig::seed()).unwrap());
        let v = Vfio::new(
            m,
            VfioConfig {
                eeh,
                ..VfioConfig::default()
            },
        );
        let c = v.open_container();
        assert_eq!(
            v.ioctl_int(QEMU, c, ioctl::CHECK_EXTENSION, 5),
            Ok(i64::from(eeh))
        );
        assert_eq!(v.ioctl_int(QEMU, c, ioctl::CHECK_EXTENSION, 7), Ok(1));
        assert_eq!(v.ioctl_int(QEMU, c, ioctl::CHECK_EXTENSION, 3), Ok(0));
    }
}

/// A v1 MAP of 16 IOMMU pages inside one mapping: entry k points at the host page of
/// `vaddr + k * page size`, not at the first page (tce_iommu_build's per-entry address).
#[test]
fn a_v1_map_points_each_entry_at_its_own_page() {
    let v = vfio(KernelProfile::Strict);
    let (c, _) = v1(&v, "gpu0");
    assert_eq!(v.ioctl_int(QEMU, c, ioctl::ENABLE, 0), Ok(0));
    let (start, page) = v1_window(&v, "gpu0");
    let ua = v.mmap(QEMU, 16 * page.max(1 << 16), 16).unwrap();
    let iova = start + 16 * page;
    assert_eq!(
        call(&v, c, ioctl::MAP_DMA, encode::map(RW, ua, iova, 16 * page)),
        Ok(0)
    );
    let gpu = v.machine().device("gpu0").unwrap();
    for k in 0..16 {
        let want = v.user_to_real(QEMU, ua + k * page).unwrap();
        assert_eq!(
            v.machine()
                .device_translate(gpu, iova + k * page, Access::Read),
            Ok(want),
            "entry {k}"
        );
    }
    assert_eq!(v.pinned_pages(c), 16, "one pin per entry");
    assert!(v.audit().is_empty(), "{:?}", v.audit());
}

/// A v1 re-MAP over live entries swaps each old page's pin for the new one (`linux`)
/// or is refused (`strict`): either way one pin per entry, and UNMAP returns them all.
#[test]
fn a_v1_remap_over_live_entries_keeps_one_pin_per_entry() {
    for profile in [KernelProfile::Linux, KernelProfile::Strict] {
        let v = vfio(profile);
        let (c, _) = v1(&v, "gpu0");
        assert_eq!(v.ioctl_int(QEMU, c, ioctl::ENABLE, 0), Ok(0));
        let (start, page) = v1_window(&v, "gpu0");
        let a = v.mmap(QEMU, 16 * page.max(1 << 16), 16).unwrap();
        let b = v.mmap(QEMU, 16 * page.max(1 << 16), 16).unwrap();
        let iova = start;
        for (k, ua) in [a, b, a].into_iter().enumerate() {
            // `linux` swaps the entries (tce_iommu_build's xchg); `strict` refuses to
            // overwrite a live entry and keeps the first mapping's pins.
            let want = match profile {
                KernelProfile::Strict if k > 0 => Err(Errno::Ebusy),
                _ => Ok(0),
            };
            assert_eq!(
                call(&v, c, ioctl::MAP_DMA, encode::map(RW, ua, iova, 16 * page)),
                want,
                "{profile:?} map {k}"
            );
            assert_eq!(v.pinned_pages(c), 16, "{profile:?}");
        }
        assert!(v.audit().is_empty(), "{profile:?}: {:?}", v.audit());
        assert_eq!(
            call(&v, c, ioctl::UNMAP_DMA, encode::unmap(0, iova, 16 * page)),
            Ok(0)
        );
        assert_eq!(v.pinned_pages(c), 0, "{profile:?}");
        assert!(v.audit().is_empty(), "{profile:?}: {:?}", v.audit());
    }
}

/// `linux` v1 UNMAP unpins before the TCE kill and says so in the trace with the page
/// count; `strict` unpins after the kill and has nothing to say; an UNMAP that clears
/// nothing traces no quirk in either.
#[test]
fn v1_unmap_traces_the_early_unpin_only_in_linux_and_only_when_it_happened() {
    for profile in [KernelProfile::Linux, KernelProfile::Strict] {
        let v = vfio(profile);
        let (c, _) = v1(&v, "gpu0");
        assert_eq!(v.ioctl_int(QEMU, c, ioctl::ENABLE, 0), Ok(0));
        let (start, page) = v1_window(&v, "gpu0");
        let ua = v.mmap(QEMU, 16 * page.max(1 << 16), 16).unwrap();
        assert_eq!(
            call(&v, c, ioctl::MAP_DMA, encode::map(RW, ua, start, 16 * page)),
            Ok(0)
        );
        let early = |v: &Vfio| {
            v.machine()
                .core()
                .take_trace()
                .into_iter()
                .filter(|e| e.kind == EventKind::Quirk && e.detail.contains("before the TCE kill"))
                .map(|e| e.detail)
                .collect::<Vec<_>>()
        };
        let _ = early(&v);
        // Nothing mapped here: nothing unpinned, nothing to trace.
        assert_eq!(
            call(
                &v,
                c,
                ioctl::UNMAP_DMA,
                encode::unmap(0, start + 32 * page, 16 * page)
            ),
            Ok(0)
        );
        assert_eq!(early(&v), Vec::<String>::new(), "{profile:?}");
        assert_eq!(
            call(&v, c, ioctl::UNMAP_DMA, encode::unmap(0, start, 16 * page)),
            Ok(0)
        );
        let said = early(&v);
        match profile {
            KernelProfile::Linux => {
                assert_eq!(said.len(), 1, "{said:?}");
                assert!(said[0].contains("unpinned 16 pages"), "{said:?}");
            }
            KernelProfile::Strict => assert_eq!(said, Vec::<String>::new()),
        }
        assert_eq!(v.pinned_pages(c), 0);
    }
}

/// The default window `tce_iommu_create_default_window` makes at the first MAP of a v1
/// container on IODA2: 4K IOMMU pages from bus address 0.
fn v1_window(_v: &Vfio, _dev: &str) -> (u64, u64) {
    (0, 1 << 12)
}

/// Each VFIO injection point fails the call with the kernel's code and unwinds it: the
/// user-address table (inside create_table: `linux` keeps the charge, traced; `strict`
/// returns it), a region lookup mid-MAP (-EINVAL, nothing left mapped), a v1 pin
/// mid-MAP (-EFAULT, every pin taken so far returned).
#[test]
fn injected_failures_in_vfio_unwind_what_the_call_did() {
    use spapr_platform::FaultPoint;
    for profile in [KernelProfile::Linux, KernelProfile::Strict] {
        let v = vfio(profile);
        let (c, _) = v2(&v, &["gpu0"]);
        let ua = prereg(&v, c, 1 << 20);
        let pe = v
            .machine()
            .pe_of(v.machine().device("gpu0").unwrap())
            .unwrap();
        let env = v.machine().env();
        // The default window is made first: aim at the DDW's user table.
        env.inject(FaultPoint::UserTable, Some(pe.id()), 1, OpalError::Hardware);
        let before = v.locked_pages(QEMU);
        let mut arg = encode::create(16, 1 << 30, 1);
        assert_eq!(
            v.ioctl(QEMU, c, ioctl::TCE_CREATE, &mut arg),
            Err(Errno::Enomem),
            "{profile:?}"
        );
        assert!(pe.table(1).is_none());
        let default_window = v.locked_pages(QEMU) - before;
        let leaked = v.leaked_pages(QEMU);
        match profile {
            KernelProfile::Linux => assert_eq!(leaked, 4, "the DDW's 4 pages stay charged"),
            KernelProfile::Strict => assert_eq!(leaked, 0),
        }
        let start = ddw(&v, c, 1 << 30, 1);
        env.inject(
            FaultPoint::RegionLookup,
            Some(pe.id()),
            2,
            OpalError::Hardware,
        );
        assert_eq!(
            call(&v, c, ioctl::MAP_DMA, encode::map(RW, ua, start, 8 << 16)),
            Err(Errno::Einval)
        );
        assert_eq!(pe.table(1).unwrap().count_mapped(), 0, "{profile:?}");
        assert_eq!(v.region_mapped(QEMU), vec![0]);
        assert_eq!(
            call(&v, c, ioctl::MAP_DMA, encode::map(RW, ua, start, 8 << 16)),
            Ok(0)
        );
        assert!(v.audit().is_empty(), "{:?}", v.audit());
        v.close_container(c).unwrap();
        assert_eq!(
            v.locked_pages(QEMU),
            v.leaked_pages(QEMU),
            "{default_window}"
        );
    }
    // v1: the third pin fails.
    let v = vfio(KernelProfile::Strict);
    let (c, _) = v1(&v, "gpu0");
    assert_eq!(v.ioctl_int(QEMU, c, ioctl::ENABLE, 0), Ok(0));
    let pe = v
        .machine()
        .pe_of(v.machine().device("gpu0").unwrap())
        .unwrap();
    let ua = v.mmap(QEMU, 1 << 16, 16).unwrap();
    v.machine()
        .env()
        .inject(FaultPoint::Pin, Some(pe.id()), 2, OpalError::Hardware);
    assert_eq!(
        call(&v, c, ioctl::MAP_DMA, encode::map(RW, ua, 0, 8 << 12)),
        Err(Errno::Efault)
    );
    assert_eq!(v.pinned_pages(c), 0);
    assert_eq!(
        call(&v, c, ioctl::MAP_DMA, encode::map(RW, ua, 0, 8 << 12)),
        Ok(0)
    );
    assert_eq!(v.pinned_pages(c), 8);
    assert!(v.audit().is_empty(), "{:?}", v.audit());
}

/// One v2 MAP across two adjacent preregistered regions, then UNMAPs that cut through
/// both: each region loses exactly the entries that lay in it (the run of user addresses
/// is split at the region boundary), and the last UNMAP leaves both unused.
#[test]
fn an_unmap_across_two_regions_charges_each_its_own_entries() {
    for profile in [KernelProfile::Linux, KernelProfile::Strict] {
        let v = vfio(profile);
        let (c, _) = v2(&v, &["gpu0"]);
        let ua = v.mmap(QEMU, 2 << 20, 16).unwrap();
        for half in [ua, ua + (1 << 20)] {
            assert_eq!(
                call(
                    &v,
                    c,
                    ioctl::REGISTER_MEMORY,
                    encode::register(0, half, 1 << 20)
                ),
                Ok(0)
            );
        }
        let start = ddw(&v, c, 1 << 30, 1);
        assert_eq!(
            call(&v, c, ioctl::MAP_DMA, encode::map(RW, ua, start, 2 << 20)),
            Ok(0)
        );
        assert_eq!(v.region_mapped(QEMU), vec![16, 16], "{profile:?}");
        // 1M from the middle of the first region: 8 pages of each.
        assert_eq!(
            call(
                &v,
                c,
                ioctl::UNMAP_DMA,
                encode::unmap(0, start + (512 << 10), 1 << 20)
            ),
            Ok(0)
        );
        assert_eq!(v.region_mapped(QEMU), vec![8, 8], "{profile:?}");
        // The first 8 pages: what was left of the first region.
        assert_eq!(
            call(&v, c, ioctl::UNMAP_DMA, encode::unmap(0, start, 8 << 16)),
            Ok(0)
        );
        assert_eq!(v.region_mapped(QEMU), vec![0, 8], "{profile:?}");
        assert_eq!(
            call(&v, c, ioctl::UNMAP_DMA, encode::unmap(0, start, 2 << 20)),
            Ok(0)
        );
        assert_eq!(v.region_mapped(QEMU), vec![0, 0], "{profile:?}");
        assert!(v.audit().is_empty(), "{profile:?}: {:?}", v.audit());
    }
}

/// A region two containers of one process registered stays registered, pinned and
/// charged until the last of them lets go (`mm_iommu_put` counts users, not mappings).
#[test]
fn a_region_shared_by_two_containers_lives_until_the_last_unregister() {
    let v = vfio(KernelProfile::Strict);
    let (a, _) = v2(&v, &["gpu0"]);
    let (b, _) = v2(&v, &["nvme0"]);
    let ua = v.mmap(QEMU, 1 << 20, 16).unwrap();
    for c in [a, b] {
        assert_eq!(
            call(
                &v,
                c,
                ioctl::REGISTER_MEMORY,
                encode::register(0, ua, 1 << 20)
            ),
            Ok(0)
        );
    }
    let charged = v.locked_pages(QEMU);
    assert_eq!(
        call(
            &v,
            a,
            ioctl::UNREGISTER_MEMORY,
            encode::register(0, ua, 1 << 20)
        ),
        Ok(0)
    );
    assert_eq!(v.locked_pages(QEMU), charged, "still B's");
    let start = ddw(&v, b, 1 << 30, 1);
    let with_ddw = v.locked_pages(QEMU);
    assert_eq!(
        call(&v, b, ioctl::MAP_DMA, encode::map(RW, ua, start, 1 << 16)),
        Ok(0)
    );
    assert_eq!(
        call(&v, b, ioctl::UNMAP_DMA, encode::unmap(0, start, 1 << 16)),
        Ok(0)
    );
    assert_eq!(
        call(
            &v,
            b,
            ioctl::UNREGISTER_MEMORY,
            encode::register(0, ua, 1 << 20)
        ),
        Ok(0)
    );
    assert_eq!(
        v.locked_pages(QEMU),
        with_ddw - 16,
        "the region's 16 pages went back"
    );
    assert!(v.audit().is_empty(), "{:?}", v.audit());
}

/// The unwind of a failed v2 MAP kills the range it cleared: a device may have cached
/// an entry written before the failure.
#[test]
fn a_failed_map_kills_what_its_unwind_cleared() {
    use spapr_platform::FaultPoint;
    let v = vfio(KernelProfile::Strict);
    let (c, _) = v2(&v, &["gpu0"]);
    let ua = prereg(&v, c, 1 << 20);
    let start = ddw(&v, c, 1 << 30, 1);
    let pe = v
        .machine()
        .pe_of(v.machine().device("gpu0").unwrap())
        .unwrap();
    v.machine()
        .env()
        .inject(FaultPoint::TceStore, Some(pe.id()), 2, OpalError::Hardware);
    let kills = pe.range_kills();
    assert_eq!(
        call(&v, c, ioctl::MAP_DMA, encode::map(RW, ua, start, 8 << 16)),
        Err(Errno::Enomem)
    );
    assert_eq!(
        pe.range_kills(),
        kills + 1,
        "one kill of the two cleared entries"
    );
    assert!(v.machine().check().is_empty(), "{:?}", v.machine().check());
}

/// A region one container registered and another container of the same process mapped
/// (the lookup is mm-wide): closing the registering container first leaves the region
/// alive while it is mapped; under `strict` the other container's close frees it and
/// returns its charge (found by the reference model: the charge used to stay with no
/// owner), under `linux` it stays, as the kernel keeps it, with a traced leak.
#[test]
fn a_region_mapped_by_another_container_goes_with_its_last_mapping() {
    for profile in [KernelProfile::Linux, KernelProfile::Strict] {
        let v = vfio(profile);
        let (a, _) = v2(&v, &["gpu0"]);
        let (b, _) = v2(&v, &["nvme0"]);
        let ua = prereg(&v, a, 1 << 20);
        let other = v.mmap(QEMU, 1 << 20, 16).unwrap();
        assert_eq!(
            call(
                &v,
                b,
                ioctl::REGISTER_MEMORY,
                encode::register(0, other, 1 << 20)
            ),
            Ok(0)
        );
        let start = ddw(&v, b, 1 << 30, 1);
        assert_eq!(
            call(&v, b, ioctl::MAP_DMA, encode::map(RW, ua, start, 1 << 16)),
            Ok(0),
            "{profile:?}: B maps A's region"
        );
        v.close_container(a).unwrap();
        assert_eq!(
            v.region_mapped(QEMU)[0],
            1,
            "{profile:?}: still mapped by B"
        );
        v.close_container(b).unwrap();
        assert_eq!(v.locked_pages(QEMU), v.leaked_pages(QEMU), "{profile:?}");
        // `strict` frees the region with its last mapping; `linux` keeps it as the kernel
        // does (mm_iommu_put was -EBUSY at A's release), its 16 pages charged until the
        // process exits, and says so.
        let kept = if profile == KernelProfile::Strict {
            0
        } else {
            16
        };
        assert_eq!(v.leaked_pages(QEMU), kept, "{profile:?}");
        let said = v.machine().core().take_trace().iter().any(|e| {
            e.detail
                .contains("16 charged pages stay charged until the process exits")
        });
        assert_eq!(said, profile == KernelProfile::Linux);
        assert!(v.audit().is_empty(), "{profile:?}: {:?}", v.audit());
    }
}

fn machine_with(phbs: Vec<PhbConfig>, devices: Vec<DeviceConfig>) -> Vfio {
    let cfg = PowerNvConfig {
        phbs,
        devices,
        ..PowerNvConfig::seed()
    };
    Vfio::new(
        Arc::new(PowerNv::booted(cfg).unwrap()),
        VfioConfig {
            profile: KernelProfile::Strict,
            ..VfioConfig::default()
        },
    )
}

/// The machine knobs of kernel.md's tables. A 32-bit window of size 0: v1 ENABLE is
/// -EPERM and nothing is charged.
#[test]
fn a_32_bit_window_of_size_0_cannot_be_enabled() {
    let mut phb = PhbConfig::new(PhbModel::Ioda1, vec![(1, PeScope::Bus(1))]);
    phb.tce32_size = Some(0);
    let v = machine_with(vec![phb], vec![DeviceConfig::new("nic0", 0, 1, 0, 64)]);
    let (c, _) = container(&v, &["nic0"]);
    assert_eq!(v.ioctl_int(QEMU, c, ioctl::SET_IOMMU, 2), Ok(0));
    assert_eq!(v.ioctl_int(QEMU, c, ioctl::ENABLE, 0), Err(Errno::Eperm));
    assert_eq!(v.locked_pages(QEMU), 0);
    assert!(v.audit().is_empty());
}

/// Tables without `xchg_no_kill`: `iommu_take_ownership` refuses an IODA1 PE's tables,
/// so SET_CONTAINER's claim fails with -EINVAL and the group stays the kernel's, its DMA
/// untouched.
#[test]
fn a_table_without_xchg_no_kill_cannot_be_taken() {
    let mut phb = PhbConfig::new(PhbModel::Ioda1, vec![(1, PeScope::Bus(1))]);
    phb.xchg_no_kill = false;
    let v = machine_with(vec![phb], vec![DeviceConfig::new("nic0", 0, 1, 0, 64)]);
    let m = v.machine().clone();
    let nic = m.device("nic0").unwrap();
    m.bind_driver(nic, "e1000").unwrap();
    let buf = m
        .driver_dma_alloc(nic, 4096, spapr_tce::DmaDirection::Bidirectional)
        .unwrap();
    m.unbind_driver(nic).unwrap();
    v.register_device(nic).unwrap();
    let g = v.open_group(nic).unwrap();
    let c = v.open_container();
    assert_eq!(v.set_container(g, c), Err(Errno::Einval));
    let pe = m.pe_of(nic).unwrap();
    let gv = m
        .core()
        .group_view(&m.core().device_group(nic).unwrap().unwrap());
    assert!(gv.owner.is_none(), "the claim was unwound");
    let window0 = pe.table(0).unwrap();
    let bitmap = window0.allocator().unwrap();
    assert!(
        window0.is_kernel_table() && !bitmap.saturated(),
        "window 0 is still the kernel's, its bitmap not taken"
    );
    assert!(m.check().is_empty(), "{:?}", m.check());
    let _ = buf;
}

/// Two DDW-capable groups whose table ops differ (an NPU's create_table beside IODA2's)
/// cannot share a container: -EPERM, and the refused group is released.
#[test]
fn groups_whose_table_ops_differ_cannot_share_a_container() {
    let a = PhbConfig::new(PhbModel::Phb4, vec![(1, PeScope::Bus(1))]);
    let mut b = PhbConfig::new(PhbModel::Phb4, vec![(1, PeScope::Bus(1))]);
    b.create_table = spapr_platform::CreateTable::NpuPeers;
    let v = machine_with(
        vec![a, b],
        vec![
            DeviceConfig::new("gpu0", 0, 1, 0, 64),
            DeviceConfig::new("npu0", 1, 1, 0, 64),
        ],
    );
    let (c, _) = v2(&v, &["gpu0"]);
    let m = v.machine().clone();
    let npu = m.device("npu0").unwrap();
    v.register_device(npu).unwrap();
    let g = v.open_group(npu).unwrap();
    assert_eq!(v.set_container(g, c), Err(Errno::Eperm));
    let gv = m
        .core()
        .group_view(&m.core().device_group(npu).unwrap().unwrap());
    assert!(gv.owner.is_none());
    assert!(m.check().is_empty(), "{:?}", m.check());
}

/// An emulated-IOMMU (mdev) group: SET_CONTAINER on a container with the SPAPR TCE
/// driver is -EINVAL; put in a container first, its SET_IOMMU is -EINVAL and nothing is
/// attached (the real group beside it gets the driver once the emulated one is gone); it
/// leaves with UNSET_CONTAINER, its close or the container's close.
#[test]
fn an_emulated_group_is_refused_by_the_spapr_driver() {
    let v = vfio(KernelProfile::Strict);
    let (c, _) = v2(&v, &["gpu0"]);
    let e = v.open_emulated_group();
    assert_eq!(
        v.set_container(e, c),
        Err(Errno::Einval),
        "driver already set"
    );
    assert_eq!(
        v.unset_container(e),
        Err(Errno::Einval),
        "it is in no container"
    );
    assert_eq!(
        v.set_container(e, spapr_vfio::ContainerFd(e.0)),
        Err(Errno::Ebadfd),
        "a group fd is not a container"
    );
    assert_eq!(
        v.set_container(e, spapr_vfio::ContainerFd(999)),
        Err(Errno::Ebadf)
    );
    let d = v.open_container();
    let nvme = v.machine().device("nvme0").unwrap();
    v.register_device(nvme).unwrap();
    let g = v.open_group(nvme).unwrap();
    assert_eq!(v.set_container(g, d), Ok(()));
    assert_eq!(
        v.set_container(e, d),
        Ok(()),
        "the core takes it, no ownership to claim"
    );
    assert_eq!(v.set_container(e, d), Err(Errno::Einval), "already in one");
    assert_eq!(
        v.ioctl_int(QEMU, d, ioctl::SET_IOMMU, 7),
        Err(Errno::Einval)
    );
    assert_eq!(
        v.ioctl_int(QEMU, d, ioctl::CHECK_EXTENSION, 7),
        Ok(1),
        "the container still has no driver"
    );
    assert_eq!(v.unset_container(e), Ok(()));
    assert_eq!(v.set_container(e, d), Ok(()));
    assert_eq!(v.close_group(e), Ok(()));
    assert_eq!(
        v.ioctl_int(QEMU, d, ioctl::SET_IOMMU, 7),
        Ok(0),
        "the real group alone"
    );
    let f = v.open_emulated_group();
    let d2 = v.open_container();
    assert_eq!(v.set_container(f, d2), Ok(()));
    assert_eq!(v.close_container(d2), Ok(()));
    assert_eq!(
        v.unset_container(f),
        Err(Errno::Einval),
        "the close took it out"
    );
    assert!(v.audit().is_empty(), "{:?}", v.audit());
    assert!(v.machine().check().is_empty());
}
