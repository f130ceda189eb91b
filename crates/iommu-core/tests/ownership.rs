//! Each row of kernel.md's "Attach / ownership" table that the core owns, and the rules of
//! sections 2.2 to 2.4.

mod common;
use common::*;
use iommu_core::*;
use std::sync::atomic::Ordering;

fn setup(group_size: u32, devices: u32) -> (Core, std::sync::Arc<TestDriver>, Vec<DeviceId>) {
    let core = Core::new();
    let drv = TestDriver::new(&core, group_size, true);
    core.register_instance("test-iommu", drv.clone());
    let devs = (0..devices)
        .map(|i| core.add_device(DeviceInfo::platform(&format!("dev{i}"), i)))
        .collect();
    (core, drv, devs)
}

#[test]
fn group_claim_with_a_null_owner_fails_with_einval() {
    let (core, _d, devs) = setup(1, 1);
    let g = core.device_group(devs[0]).unwrap().unwrap();
    assert_eq!(
        core.claim_group(&g, OwnerCookie::NULL).err(),
        Some(Errno::Einval)
    );
    assert!(!core.owner_claimed(&g));
}

#[test]
fn group_claim_fails_with_eperm_while_a_driver_is_bound() {
    let (core, _d, devs) = setup(1, 1);
    let g = core.device_group(devs[0]).unwrap().unwrap();
    core.bind_driver(devs[0], "nvme", false).unwrap();
    assert!(core.owner_claimed(&g), "kernel drivers raise owner_cnt");
    assert_eq!(core.claim_group(&g, OWNER_A).err(), Some(Errno::Eperm));
    core.unbind_driver(devs[0]).unwrap();
    assert!(core.claim_group(&g, OWNER_A).is_ok());
}

#[test]
fn group_claim_is_exclusive_even_for_the_same_owner() {
    let (core, _d, devs) = setup(1, 1);
    let g = core.device_group(devs[0]).unwrap().unwrap();
    let _claim = core.claim_group(&g, OWNER_A).unwrap();
    assert_eq!(core.claim_group(&g, OWNER_A).err(), Some(Errno::Eperm));
}

#[test]
fn device_claim_without_a_group_fails_with_enodev() {
    let (core, _d, _) = setup(1, 0);
    // A PCI device: the test driver refuses it (EPERM at probe), so it has no group.
    let pci = core.add_device(DeviceInfo::pci("gpu", 0, 1, 0));
    assert!(core.device_group(pci).unwrap().is_none());
    assert_eq!(core.claim_device(pci, OWNER_A).err(), Some(Errno::Enodev));
    assert_eq!(
        core.claim_device(pci, OwnerCookie::NULL).err(),
        Some(Errno::Einval)
    );
}

#[test]
fn device_claim_by_another_owner_fails_with_eperm_and_same_owner_shares() {
    let (core, _d, devs) = setup(2, 2);
    let g = core.device_group(devs[0]).unwrap().unwrap();
    let a0 = core.claim_device(devs[0], OWNER_A).unwrap();
    assert_eq!(
        core.claim_device(devs[1], OWNER_B).err(),
        Some(Errno::Eperm)
    );
    let a1 = core.claim_device(devs[1], OWNER_A).unwrap();
    assert_eq!(core.group_view(&g).owner_cnt, 2);
    a0.release().unwrap();
    assert_eq!(core.group_view(&g).owner, Some(OWNER_A));
    drop(a1); // the guard releases the last use
    let v = core.group_view(&g);
    assert_eq!(
        (v.owner, v.owner_cnt, v.domain),
        (None, 0, Some(DomainType::Platform))
    );
}

#[test]
fn device_claim_after_a_group_claim_by_the_same_owner_raises_the_count_and_group_release_zeroes_it()
{
    let (core, _d, devs) = setup(1, 1);
    let g = core.device_group(devs[0]).unwrap().unwrap();
    let gc = core.claim_group(&g, OWNER_A).unwrap();
    let dc = core.claim_device(devs[0], OWNER_A).unwrap();
    assert_eq!(core.group_view(&g).owner_cnt, 2);
    gc.release().unwrap();
    assert_eq!(core.group_view(&g).owner_cnt, 0);
    dc.release().unwrap(); // warns and does nothing in the kernel
    assert_eq!(core.group_view(&g).owner, None);
}

#[test]
fn kernel_driver_bind_fails_with_ebusy_on_a_user_owned_group() {
    let (core, _d, devs) = setup(1, 1);
    let g = core.device_group(devs[0]).unwrap().unwrap();
    let claim = core.claim_group(&g, OWNER_A).unwrap();
    assert_eq!(core.bind_driver(devs[0], "nvme", false), Err(Errno::Ebusy));
    // A driver that manages DMA itself (vfio-pci) may bind.
    core.bind_driver(devs[0], "vfio-pci", true).unwrap();
    drop(claim);
    core.unbind_driver(devs[0]).unwrap();
    core.bind_driver(devs[0], "nvme", false).unwrap();
}

#[test]
fn claim_attaches_the_blocking_domain_to_every_device_and_release_restores_the_default() {
    let (core, drv, devs) = setup(3, 3);
    let g = core.device_group(devs[0]).unwrap().unwrap();
    let blocking = drv.blocking.clone().unwrap();
    let claim = core.claim_group(&g, OWNER_A).unwrap();
    assert_eq!(core.group_view(&g).domain, Some(DomainType::Blocked));
    assert_eq!(
        TestDriver::domain_ops(&blocking)
            .attaches
            .load(Ordering::Relaxed),
        3,
        "attach is per device"
    );
    let before = TestDriver::domain_ops(&drv.default)
        .attaches
        .load(Ordering::Relaxed);
    drop(claim);
    assert_eq!(core.group_view(&g).domain, Some(DomainType::Platform));
    assert_eq!(
        TestDriver::domain_ops(&drv.default)
            .attaches
            .load(Ordering::Relaxed),
        before + 3
    );
}

#[test]
fn failed_blocking_attach_unwinds_and_leaves_the_group_as_it_was() {
    let (core, drv, devs) = setup(3, 3);
    let g = core.device_group(devs[0]).unwrap().unwrap();
    let blocking = drv.blocking.clone().unwrap();
    *TestDriver::domain_ops(&blocking).fail_for.lock().unwrap() = Some("dev2".into());
    assert_eq!(core.claim_group(&g, OWNER_A).err(), Some(Errno::Eio));
    let v = core.group_view(&g);
    assert_eq!(
        (v.owner, v.owner_cnt, v.domain),
        (None, 0, Some(DomainType::Platform))
    );
    assert!(core.check().is_empty());
}

#[test]
fn take_ownership_fails_with_ebusy_while_a_non_default_domain_is_attached() {
    let (core, drv, devs) = setup(1, 1);
    let g = core.device_group(devs[0]).unwrap().unwrap();
    let claim = core.claim_group(&g, OWNER_A).unwrap();
    // The re-attach of the default domain fails on release: the group stays blocked.
    *TestDriver::domain_ops(&drv.default)
        .fail_for
        .lock()
        .unwrap() = Some("dev0".into());
    assert_eq!(claim.release(), Err(Errno::Eio));
    assert_eq!(core.group_view(&g).domain, Some(DomainType::Blocked));
    assert_eq!(core.claim_group(&g, OWNER_A).err(), Some(Errno::Ebusy));
}

#[test]
fn blocking_domain_allocation_failure_fails_the_claim() {
    let core = Core::new();
    let drv = TestDriver::new(&core, 1, false); // no BLOCKED, no domain_alloc
    core.register_instance("test-iommu", drv);
    let d = core.add_device(DeviceInfo::platform("dev0", 0));
    let g = core.device_group(d).unwrap().unwrap();
    assert_eq!(core.claim_group(&g, OWNER_A).err(), Some(Errno::Enomem));
    assert_eq!(core.group_view(&g).owner, None);
}

#[test]
fn probe_before_the_group_exists_fails_with_enodev_and_the_explicit_probe_succeeds() {
    let core = Core::new();
    let drv = TestDriver::new(&core, 1, true);
    drv.lazy_groups.store(false, Ordering::Relaxed);
    core.register_instance("test-iommu", drv.clone());
    let d = core.add_device(DeviceInfo::platform("dev0", 0));
    assert!(core.device_group(d).unwrap().is_none());
    let trace = core.take_trace();
    assert!(trace
        .iter()
        .any(|e| e.kind == EventKind::ProbeFailed && e.detail == "device_group: ENODEV"));
    let _platform_ref = drv.create_group(0);
    core.probe_device(d).unwrap();
    assert_eq!(core.device_group(d).unwrap().unwrap().name(), "grp0");
}

#[test]
fn registering_an_instance_probes_devices_already_present() {
    let core = Core::new();
    let d = core.add_device(DeviceInfo::platform("early", 0));
    assert!(core.device_group(d).unwrap().is_none());
    let drv = TestDriver::new(&core, 1, true);
    core.register_instance("late-iommu", drv);
    assert!(core.device_group(d).unwrap().is_some());
}

#[test]
fn devices_on_an_unregistered_bus_are_probed_when_the_bus_registers() {
    let core = Core::without_buses();
    let drv = TestDriver::new(&core, 1, true);
    core.register_instance("test-iommu", drv);
    let d = core.add_device(DeviceInfo::platform("dev0", 0));
    assert!(core.device_group(d).unwrap().is_none());
    core.register_bus(BusType::Platform);
    assert!(core.device_group(d).unwrap().is_some());
}

#[test]
fn a_group_lives_exactly_as_long_as_its_devices_and_the_platform_hold_it() {
    let (core, drv, devs) = setup(2, 2);
    let g = core.device_group(devs[0]).unwrap().unwrap();
    drop(g);
    // Lazily created groups are also kept in the driver's map: drop that reference.
    drv.groups.lock().unwrap().clear();
    core.remove_device(devs[0]).unwrap();
    assert_eq!(
        drv.freed.load(Ordering::Relaxed),
        0,
        "one device still holds it"
    );
    core.remove_device(devs[1]).unwrap();
    assert_eq!(drv.freed.load(Ordering::Relaxed), 1);
    assert!(core.groups().is_empty());
}

#[test]
fn capabilities_are_reported_per_device_and_false_without_an_iommu() {
    let (core, _d, devs) = setup(1, 1);
    assert_eq!(core.device_capable(devs[0], Cap::CacheCoherency), Ok(true));
    for cap in Cap::ALL.into_iter().filter(|c| *c != Cap::CacheCoherency) {
        assert_eq!(core.device_capable(devs[0], cap), Ok(false), "{cap:?}");
    }
    let pci = core.add_device(DeviceInfo::pci("gpu", 0, 1, 0));
    assert_eq!(core.device_capable(pci, Cap::CacheCoherency), Ok(false));
}

#[test]
fn checker_names_group_and_entry_of_a_kernel_translation_left_for_a_user() {
    let (core, drv, devs) = setup(1, 1);
    let g = core.device_group(devs[0]).unwrap().unwrap();
    drv.leftovers
        .lock()
        .unwrap()
        .push("window 0 entry 0x10 -> hpa 0x2000 rw".into());
    assert!(
        core.check().is_empty(),
        "leftovers only matter for user-owned groups"
    );
    let _claim = core.claim_group(&g, OWNER_A).unwrap();
    let v = core.check();
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].rule, Rule::NoKernelTranslationOnUserGroup);
    assert_eq!(v[0].group.as_deref(), Some("grp0"));
    assert_eq!(
        v[0].evidence,
        Evidence::Note("window 0 entry 0x10 -> hpa 0x2000 rw".into())
    );
}

#[test]
fn the_generic_page_table_driver_uses_dma_and_identity_domains_and_falls_back_to_unmanaged_for_blocking(
) {
    use iommu_core::simple::{PageTableDomain, SimpleIommu};
    let core = Core::new();
    core.register_instance("simple", SimpleIommu::new(&core, 10, false));
    let d = core.add_device(DeviceInfo::platform("eth0", 1));
    let g = core.device_group(d).unwrap().unwrap();
    assert_eq!(core.group_view(&g).default_domain, Some(DomainType::Dma));
    let claim = core.claim_group(&g, OWNER_A).unwrap();
    assert_eq!(core.group_view(&g).domain, Some(DomainType::Unmanaged));
    drop(claim);
    assert_eq!(core.group_view(&g).domain, Some(DomainType::Dma));
    let core2 = Core::new();
    core2.register_instance("simple", SimpleIommu::new(&core2, 10, true));
    let d2 = core2.add_device(DeviceInfo::platform("eth1", 2));
    let g2 = core2.device_group(d2).unwrap().unwrap();
    assert_eq!(core2.group_view(&g2).domain, Some(DomainType::Identity));
    let pt = PageTableDomain::default();
    pt.map(0x1000, 0x9000, false);
    assert_eq!(pt.translate(0x1234, false), Some(0x9234));
    assert_eq!(pt.translate(0x1234, true), None);
}

/// Defect: a claim used to release whoever owned the group at the time. A claims the group
/// and a device (owner_cnt 2); A's group claim goes (owner_cnt 0); B claims; A's device
/// claim is dropped late. It must release nothing of B's, and say so in the trace.
#[test]
fn a_stale_claim_releases_nothing_of_the_next_owner() {
    let (core, _d, devs) = setup(1, 1);
    let g = core.device_group(devs[0]).unwrap().unwrap();
    let a_group = core.claim_group(&g, OWNER_A).unwrap();
    let a_dev = core.claim_device(devs[0], OWNER_A).unwrap();
    assert_eq!(core.group_view(&g).owner_cnt, 2);
    a_group.release().unwrap();
    assert_eq!(core.group_view(&g).owner_cnt, 0);
    let b = core.claim_group(&g, OWNER_B).unwrap();
    let _ = core.take_trace();
    drop(a_dev);
    let v = core.group_view(&g);
    assert_eq!(
        (v.owner, v.owner_cnt, v.domain),
        (Some(OWNER_B), 1, Some(DomainType::Blocked)),
        "B's ownership survives A's stale release"
    );
    let trace = core.take_trace();
    assert!(
        trace
            .iter()
            .any(|e| e.kind == EventKind::Ownership && e.detail.contains("stale")),
        "{trace:?}"
    );
    // Even a claim by the same owner is a new one: A's old claim cannot end it.
    drop(b);
    let a2 = core.claim_device(devs[0], OWNER_A).unwrap();
    assert_eq!(core.group_view(&g).owner_cnt, 1);
    drop(a2);
    assert_eq!(core.group_view(&g).owner, None);
}

/// A lease says whether its claim is still current: live while the claim (or another of
/// the same ownership) holds the group, dead once the ownership ends, and dead for good
/// even when the same owner claims again (a new epoch). It never keeps the group alive.
#[test]
fn a_lease_lives_exactly_as_long_as_its_claims_ownership() {
    let (core, _d, devs) = setup(2, 2);
    let g = core.device_group(devs[0]).unwrap().unwrap();
    let refs = g.ref_count();
    let a0 = core.claim_device(devs[0], OWNER_A).unwrap();
    let lease = g.lease(OWNER_A, a0.epoch());
    assert_eq!(
        g.ref_count(),
        refs + 1,
        "the claim's reference, none for the lease"
    );
    assert!(lease.is_live());
    assert_eq!(
        format!("{lease:?}"),
        format!(
            "OwnershipLease {{ owner: {:?}, epoch: {} }}",
            OWNER_A,
            a0.epoch()
        )
    );
    assert_eq!(lease.while_live(|| 7), Some(7));
    let a1 = core.claim_device(devs[1], OWNER_A).unwrap();
    a0.release().unwrap();
    assert!(
        lease.is_live(),
        "the same ownership goes on through the second claim"
    );
    drop(a1);
    assert!(!lease.is_live(), "the ownership ended");
    let mut ran = false;
    assert_eq!(lease.while_live(|| ran = true), None);
    assert!(!ran, "a dead lease runs nothing");
    let again = core.claim_group(&g, OWNER_A).unwrap();
    assert!(
        !lease.is_live(),
        "a new claim by the same owner is a new epoch"
    );
    assert!(g.lease(OWNER_A, again.epoch()).is_live());
    let other = g.lease(OWNER_B, again.epoch());
    assert!(!other.is_live(), "another owner's lease on this epoch");
    drop(again);
    drop(g);
    for d in devs {
        core.remove_device(d).unwrap();
    }
    assert!(!lease.is_live(), "the group is gone");
}
