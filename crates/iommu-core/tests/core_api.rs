//! The core's bookkeeping seen through its public API: lookups, listings, the direct
//! group join, driver-bind guards, claim identity and the group list's pruning. Written
//! from cargo-mutants' survivors on core.rs: each test pins down a behaviour a mutant
//! changed without any other test noticing.

mod common;
use common::*;
use iommu_core::*;

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
fn find_device_finds_by_name_and_only_live_devices() {
    let (core, _d, devs) = setup(1, 3);
    assert_eq!(core.find_device("dev1"), Some(devs[1]));
    assert_eq!(core.find_device("dev2"), Some(devs[2]));
    assert_eq!(core.find_device("nope"), None);
    core.remove_device(devs[1]).unwrap();
    assert_eq!(core.find_device("dev1"), None);
}

#[test]
fn devices_and_instances_list_what_is_there() {
    let (core, _d, devs) = setup(2, 3);
    let views = core.devices();
    assert_eq!(
        views.iter().map(|v| v.id).collect::<Vec<_>>(),
        devs,
        "every live device, in order"
    );
    assert_eq!(views[2].info.name, "dev2");
    assert_eq!(views[0].iommu.as_deref(), Some("test-iommu"));
    assert_eq!(views[1].group.as_deref(), Some("grp0"));
    assert_eq!(core.instances(), vec!["test-iommu".to_string()]);
    let other = TestDriver::new(&core, 1, true);
    core.register_instance("second", other);
    assert_eq!(
        core.instances(),
        vec!["test-iommu".to_string(), "second".to_string()]
    );
}

#[test]
fn record_puts_the_event_in_the_trace() {
    let (core, _d, _) = setup(1, 0);
    let _ = core.take_trace();
    core.record(
        EventKind::Ownership,
        Some("devX".into()),
        Some("grpX".into()),
        "from above".into(),
    );
    let t = core.take_trace();
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].kind, EventKind::Ownership);
    assert_eq!(t[0].device.as_deref(), Some("devX"));
    assert_eq!(t[0].group.as_deref(), Some("grpX"));
    assert_eq!(t[0].detail, "from above");
}

#[test]
fn group_add_device_joins_the_group_once() {
    let core = Core::new();
    // No instance: the device is never probed and has no group of its own.
    let dev = core.add_device(DeviceInfo::platform("lonely", 0));
    let g = core.alloc_group(Some("direct".into()), Box::new(()), None);
    assert!(core.device_group(dev).unwrap().is_none());
    core.group_add_device(&g, dev).unwrap();
    assert!(core.device_group(dev).unwrap().unwrap().same(&g));
    assert!(g.contains(dev));
    assert_eq!(core.group_add_device(&g, dev), Err(Errno::Ebusy));
    assert_eq!(g.devices(), vec![dev], "joined once");
}

#[test]
fn a_second_kernel_driver_in_a_kernel_group_binds() {
    // owner_cnt 1 with the default domain and no owner: the guard lets it through.
    let (core, _d, devs) = setup(2, 2);
    core.bind_driver(devs[0], "a", false).unwrap();
    core.bind_driver(devs[1], "b", false).unwrap();
    let g = core.device_group(devs[0]).unwrap().unwrap();
    assert!(core.owner_claimed(&g));
    assert!(core.check().is_empty());
}

#[test]
fn a_kernel_driver_cannot_bind_into_a_user_owned_group() {
    let (core, _d, devs) = setup(2, 2);
    let g = core.device_group(devs[0]).unwrap().unwrap();
    let _claim = core.claim_group(&g, OWNER_A).unwrap();
    assert_eq!(core.bind_driver(devs[1], "nvme", false), Err(Errno::Ebusy));
    // A driver that manages DMA itself (vfio-pci) may.
    assert!(core.bind_driver(devs[1], "vfio-pci", true).is_ok());
}

#[test]
fn a_claim_knows_its_epoch_and_whether_it_is_current() {
    let (core, _d, devs) = setup(1, 1);
    let g = core.device_group(devs[0]).unwrap().unwrap();
    let c1 = core.claim_group(&g, OWNER_A).unwrap();
    assert!(c1.is_current());
    let e1 = c1.epoch();
    c1.release().unwrap();
    let c2 = core.claim_group(&g, OWNER_A).unwrap();
    assert!(c2.epoch() > e1, "a new ownership, a new epoch");
    assert!(c2.is_current());
    assert_eq!(c2.owner(), OWNER_A);
    let d = core.claim_device(devs[0], OWNER_A).unwrap();
    assert_eq!(d.epoch(), c2.epoch(), "a device claim joins the ownership");
}

#[test]
fn a_stale_claim_of_the_same_owner_does_not_release_its_new_ownership() {
    // A holds a group claim and a device claim; the group claim goes (the ownership
    // ends); A claims the group again. Dropping the old device claim must not end the
    // new ownership: same owner, older epoch.
    let (core, _d, devs) = setup(1, 1);
    let g = core.device_group(devs[0]).unwrap().unwrap();
    let c1 = core.claim_group(&g, OWNER_A).unwrap();
    let d1 = core.claim_device(devs[0], OWNER_A).unwrap();
    c1.release().unwrap();
    let c2 = core.claim_group(&g, OWNER_A).unwrap();
    assert!(!d1.is_current());
    drop(d1);
    assert!(c2.is_current(), "the new ownership stands");
    assert!(g.is_owned_by(OWNER_A, c2.epoch()));
    assert!(core
        .take_trace()
        .iter()
        .any(|e| e.detail.contains("stale release")));
    c2.release().unwrap();
    assert!(g.owner().is_none());
}

#[test]
fn the_group_list_keeps_live_groups_and_forgets_dead_ones() {
    let core = Core::new();
    let keep: Vec<Group> = (0..40)
        .map(|k| core.alloc_group(Some(format!("keep{k}")), Box::new(()), None))
        .collect();
    for k in 0..200 {
        drop(core.alloc_group(Some(format!("gone{k}")), Box::new(()), None));
    }
    let listed = core.groups();
    assert_eq!(listed.len(), keep.len(), "exactly the live groups");
    for g in &keep {
        assert!(listed.iter().any(|l| l.same(g)), "{} listed", g.name());
    }
}

/// v6.4 POWER's shape: no default domain, no domain_alloc; one group for every device.
struct NoDefault {
    group: std::sync::Mutex<Option<Group>>,
    core: Core,
}

impl IommuOps for NoDefault {
    fn probe_device(&self, _dev: &DeviceInfo) -> Result<(), Errno> {
        Ok(())
    }
    fn device_group(&self, _dev: &DeviceInfo) -> Result<Group, Errno> {
        let mut g = self.group.lock().unwrap();
        Ok(g.get_or_insert_with(|| {
            self.core
                .alloc_group(Some("one".into()), Box::new(()), None)
        })
        .clone())
    }
}

#[test]
fn kernel_drivers_share_a_group_that_has_no_default_domain() {
    let core = Core::new();
    core.register_instance(
        "nodefault",
        std::sync::Arc::new(NoDefault {
            group: std::sync::Mutex::new(None),
            core: core.clone(),
        }),
    );
    let a = core.add_device(DeviceInfo::platform("a", 0));
    let b = core.add_device(DeviceInfo::platform("b", 1));
    core.bind_driver(a, "x", false).unwrap();
    // No domain and no default domain are the same domain: the group is the kernel's.
    core.bind_driver(b, "y", false).unwrap();
    assert!(core.check().is_empty());
}
