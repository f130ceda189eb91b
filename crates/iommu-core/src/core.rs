//! The core (`drivers/iommu/iommu.c`): instances, buses, devices, probing, groups, default
//! domains, driver binding and DMA ownership.
//!
//! Locking: the core's state is under one mutex, each group's state under its own; the
//! order is always core, then group. Driver callbacks run under the core lock and must not
//! call back into the core, except [`Core::alloc_group`], which takes no core lock.

use crate::check::{Evidence, Rule, Violation};
use crate::device::{BusType, DeviceId, DeviceInfo, DriverBinding};
use crate::domain::{AttachCtx, Domain, DomainType};
use crate::errno::Errno;
use crate::group::{Group, GroupId, GroupInner, GroupState, OwnerCookie};
use crate::ops::{Cap, IommuOps};
use crate::trace::{Event, EventKind};
use std::any::Any;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

/// A registered hardware IOMMU instance (`struct iommu_device`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceId(pub usize);

struct Instance {
    name: String,
    ops: Arc<dyn IommuOps>,
}

struct DeviceEntry {
    info: DeviceInfo,
    iommu: Option<InstanceId>,
    group: Option<Group>,
    driver: Option<DriverBinding>,
}

#[derive(Default)]
struct State {
    instances: Vec<Instance>,
    buses: BTreeSet<BusType>,
    devices: Vec<Option<DeviceEntry>>,
    /// Live devices by name and by address: lookups in O(1), so that a machine of
    /// 10^5 devices builds in linear time.
    by_name: std::collections::HashMap<String, DeviceId>,
    by_addr: std::collections::HashMap<crate::DeviceAddr, DeviceId>,
    trace: Vec<Event>,
}

/// Lock order (this crate): `state` (devices, instances, trace) → a group's state
/// (`Group::lock`). `groups`, the list of weak group references, is a leaf: held only to
/// push one or to upgrade them, never while taking another lock (it may be taken under
/// `state`, when a driver's `device_group` allocates a group). Driver callbacks run under
/// `state`, except `IommuOps::check_group`, which runs with no core lock held; a group's
/// release callback runs when its last reference drops, under no group lock.
struct Shared {
    state: Mutex<State>,
    groups: Mutex<Vec<Weak<GroupInner>>>,
    live_after_prune: std::sync::atomic::AtomicUsize,
    next_group: AtomicU64,
}

/// One IOMMU core. Cheap to clone (a handle); many cores live side by side.
#[derive(Clone)]
pub struct Core(Arc<Shared>);

impl Default for Core {
    fn default() -> Self {
        Self::new()
    }
}

/// Summary of one device for listings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceView {
    /// Handle.
    pub id: DeviceId,
    /// Description.
    pub info: DeviceInfo,
    /// Instance that probed it.
    pub iommu: Option<String>,
    /// Its group's name.
    pub group: Option<String>,
    /// Bound driver.
    pub driver: Option<DriverBinding>,
}

/// Summary of one group for listings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupView {
    /// Id.
    pub id: GroupId,
    /// Name.
    pub name: String,
    /// Devices, in join order.
    pub devices: Vec<DeviceId>,
    /// Current domain type.
    pub domain: Option<DomainType>,
    /// Default domain type.
    pub default_domain: Option<DomainType>,
    /// Owner cookie.
    pub owner: Option<OwnerCookie>,
    /// `owner_cnt`.
    pub owner_cnt: u32,
}

impl Core {
    /// A core with the PCI, platform and VIO buses registered (`iommu_init`).
    pub fn new() -> Self {
        let core = Self::without_buses();
        {
            let mut st = core.state();
            st.buses
                .extend([BusType::Pci, BusType::Platform, BusType::Vio]);
        }
        core
    }

    /// A core with no bus registered yet, for modelling boot order.
    pub fn without_buses() -> Self {
        Core(Arc::new(Shared {
            state: Mutex::new(State::default()),
            groups: Mutex::new(Vec::new()),
            live_after_prune: std::sync::atomic::AtomicUsize::new(0),
            next_group: AtomicU64::new(0),
        }))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.0.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a bus type (`bus_register`); devices on it are probed by instances
    /// registered afterwards, and devices already on it are probed by every instance now.
    pub fn register_bus(&self, bus: BusType) {
        let mut st = self.state();
        if st.buses.insert(bus) {
            let ids: Vec<DeviceId> = live_devices(&st)
                .filter(|d| dev_bus(&st, *d) == Some(bus))
                .collect();
            for d in ids {
                let _ = probe_locked(&mut st, d);
            }
        }
    }

    /// Registers a hardware instance (`iommu_device_register`) and probes every device
    /// already present on every registered bus.
    pub fn register_instance(&self, name: &str, ops: Arc<dyn IommuOps>) -> InstanceId {
        let mut st = self.state();
        let id = InstanceId(st.instances.len());
        st.instances.push(Instance {
            name: name.to_string(),
            ops,
        });
        push_event(
            &mut st,
            EventKind::RegisterInstance,
            None,
            None,
            name.to_string(),
        );
        let ids: Vec<DeviceId> = live_devices(&st)
            .filter(|d| dev_bus(&st, *d).is_some_and(|b| st.buses.contains(&b)))
            .collect();
        for d in ids {
            let _ = probe_locked(&mut st, d);
        }
        id
    }

    /// Allocates a group (`iommu_group_alloc` + `iommu_group_set_iommudata` + name). The
    /// caller holds the returned reference; `release` runs when the last reference goes.
    /// Takes no core lock, so `device_group` callbacks may call it.
    pub fn alloc_group(
        &self,
        name: Option<String>,
        data: Box<dyn Any + Send + Sync>,
        release: Option<Box<dyn FnOnce() + Send>>,
    ) -> Group {
        let id = GroupId(self.0.next_group.fetch_add(1, Ordering::Relaxed));
        let name = name.unwrap_or_else(|| id.0.to_string());
        let g = Group::new(id, name, data, release);
        let mut groups = self.0.groups.lock().unwrap_or_else(|p| p.into_inner());
        // Prune dead entries only when the list doubled since the last prune: amortised
        // O(1) per allocation, so creating N groups stays linear.
        if groups.len() >= 2 * self.0.live_after_prune.load(Ordering::Relaxed).max(16) {
            groups.retain(|w| w.strong_count() > 0);
            self.0
                .live_after_prune
                .store(groups.len(), Ordering::Relaxed);
        }
        groups.push(g.downgrade());
        g
    }

    /// Adds a device to its bus; probed at once if an instance claims it and the bus is
    /// registered (the bus notifier). A probe failure is recorded in the trace and leaves
    /// the device without an IOMMU, as the kernel does.
    pub fn add_device(&self, info: DeviceInfo) -> DeviceId {
        let mut st = self.state();
        let id = DeviceId(st.devices.len());
        let bus = info.addr.bus();
        push_event(
            &mut st,
            EventKind::AddDevice,
            Some(info.name.clone()),
            None,
            info.addr.to_string(),
        );
        st.by_name.entry(info.name.clone()).or_insert(id);
        st.by_addr.entry(info.addr).or_insert(id);
        st.devices.push(Some(DeviceEntry {
            info,
            iommu: None,
            group: None,
            driver: None,
        }));
        if st.buses.contains(&bus) {
            let _ = probe_locked(&mut st, id);
        }
        id
    }

    /// `iommu_probe_device`: probes one device explicitly (POWER's `iommu_add_device`
    /// after the PE is set up). Ok if the device now has a group.
    pub fn probe_device(&self, dev: DeviceId) -> Result<(), Errno> {
        let mut st = self.state();
        entry(&st, dev)?;
        probe_locked(&mut st, dev)
    }

    /// Removes a device: unbinds its driver, leaves its group (dropping its reference) and
    /// tells the driver (`release_device`).
    pub fn remove_device(&self, dev: DeviceId) -> Result<(), Errno> {
        let mut st = self.state();
        entry(&st, dev)?;
        if st.devices[dev.0]
            .as_ref()
            .is_some_and(|e| e.driver.is_some())
        {
            unbind_locked(&mut st, dev)?;
        }
        let Some(e) = st.devices[dev.0].take() else {
            return Err(Errno::Enodev);
        };
        if st.by_name.get(&e.info.name) == Some(&dev) {
            st.by_name.remove(&e.info.name);
        }
        if st.by_addr.get(&e.info.addr) == Some(&dev) {
            st.by_addr.remove(&e.info.addr);
        }
        if let Some(g) = &e.group {
            g.lock().devices.retain(|d| *d != dev);
        }
        if let Some(i) = e.iommu {
            st.instances[i.0].ops.release_device(&e.info);
        }
        let group_name = e.group.as_ref().map(|g| g.name().to_string());
        push_event(
            &mut st,
            EventKind::RemoveDevice,
            Some(e.info.name.clone()),
            group_name,
            String::new(),
        );
        drop(st);
        drop(e); // the device's group reference goes here
        Ok(())
    }

    /// `iommu_group_add_device` called directly (POWER's pre-patch path): the device joins
    /// `group` without being probed, so it is linked to no IOMMU instance — no `capable`,
    /// and ownership changes find no driver for it. -EBUSY if it already has a group.
    pub fn group_add_device(&self, group: &Group, dev: DeviceId) -> Result<(), Errno> {
        let mut st = self.state();
        let e = entry(&st, dev)?;
        if e.group.is_some() {
            return Err(Errno::Ebusy);
        }
        let name = e.info.name.clone();
        group.lock().devices.push(dev);
        if let Some(Some(e)) = st.devices.get_mut(dev.0) {
            e.group = Some(group.clone());
        }
        push_event(
            &mut st,
            EventKind::Attach,
            Some(name),
            Some(group.name().to_string()),
            "iommu_group_add_device: joined without a probe (no IOMMU instance)".into(),
        );
        Ok(())
    }

    /// The device's group (`iommu_group_get`), as a new counted reference.
    pub fn device_group(&self, dev: DeviceId) -> Result<Option<Group>, Errno> {
        let st = self.state();
        Ok(entry(&st, dev)?.group.clone())
    }

    /// The device's description.
    pub fn device_info(&self, dev: DeviceId) -> Result<DeviceInfo, Errno> {
        let st = self.state();
        Ok(entry(&st, dev)?.info.clone())
    }

    /// Finds a live device by name.
    pub fn find_device(&self, name: &str) -> Option<DeviceId> {
        self.state().by_name.get(name).copied()
    }

    /// The live device at `addr`, if any.
    pub fn find_device_at(&self, addr: crate::DeviceAddr) -> Option<DeviceId> {
        self.state().by_addr.get(&addr).copied()
    }

    /// `device_iommu_capable`: false for a device without an IOMMU.
    pub fn device_capable(&self, dev: DeviceId, cap: Cap) -> Result<bool, Errno> {
        let st = self.state();
        let e = entry(&st, dev)?;
        Ok(match e.iommu {
            Some(i) => st.instances[i.0].ops.capable(&e.info, cap),
            None => false,
        })
    }

    /// Binds a driver (`really_probe` → `iommu_device_use_default_domain` unless the driver
    /// manages DMA itself). -EBUSY if the group is user-owned; -EBUSY if a driver is bound.
    pub fn bind_driver(
        &self,
        dev: DeviceId,
        name: &str,
        driver_managed_dma: bool,
    ) -> Result<(), Errno> {
        let mut st = self.state();
        let e = entry(&st, dev)?;
        if e.driver.is_some() {
            return Err(Errno::Ebusy);
        }
        if !driver_managed_dma {
            if let Some(g) = &e.group {
                let mut gs = g.lock();
                if gs.owner_cnt > 0
                    && (!same_domain(&gs.domain, &gs.default_domain) || gs.owner.is_some())
                {
                    return Err(Errno::Ebusy);
                }
                gs.owner_cnt += 1;
            }
        }
        let gname = e.group.as_ref().map(|g| g.name().to_string());
        let dname = e.info.name.clone();
        if let Some(Some(e)) = st.devices.get_mut(dev.0) {
            e.driver = Some(DriverBinding {
                name: name.to_string(),
                driver_managed_dma,
            });
        }
        push_event(
            &mut st,
            EventKind::DriverBind,
            Some(dname),
            gname,
            name.to_string(),
        );
        Ok(())
    }

    /// Unbinds the device's driver (`iommu_device_unuse_default_domain`). -ENODEV if none.
    pub fn unbind_driver(&self, dev: DeviceId) -> Result<(), Errno> {
        let mut st = self.state();
        entry(&st, dev)?;
        unbind_locked(&mut st, dev)
    }

    /// `iommu_group_claim_dma_owner`: the whole group for `owner`, exclusively. The claim is
    /// released when the returned guard is dropped (or by [`GroupClaim::release`]).
    pub fn claim_group(&self, group: &Group, owner: OwnerCookie) -> Result<GroupClaim, Errno> {
        if owner == OwnerCookie::NULL {
            return Err(Errno::Einval);
        }
        let mut st = self.state();
        let epoch = {
            let mut gs = group.lock();
            if gs.owner_cnt != 0 {
                return Err(Errno::Eperm);
            }
            take_ownership(&st, group, &mut gs, owner)?;
            gs.epoch
        };
        push_event(
            &mut st,
            EventKind::Ownership,
            None,
            Some(group.name().to_string()),
            format!("claimed by {:#x} (epoch {epoch})", owner.0),
        );
        Ok(GroupClaim {
            core: self.clone(),
            group: group.clone(),
            owner,
            epoch,
            live: true,
        })
    }

    /// `iommu_device_claim_dma_owner`: shares the group with other claims of the same
    /// owner. -ENODEV if the device has no group; -EPERM if another owner or a kernel
    /// driver holds it.
    pub fn claim_device(&self, dev: DeviceId, owner: OwnerCookie) -> Result<DeviceClaim, Errno> {
        if owner == OwnerCookie::NULL {
            return Err(Errno::Einval);
        }
        let mut st = self.state();
        let group = entry(&st, dev)?.group.clone().ok_or(Errno::Enodev)?;
        let epoch = {
            let mut gs = group.lock();
            if gs.owner_cnt != 0 {
                if gs.owner != Some(owner) {
                    return Err(Errno::Eperm);
                }
                gs.owner_cnt += 1;
            } else {
                take_ownership(&st, &group, &mut gs, owner)?;
            }
            gs.epoch
        };
        push_event(
            &mut st,
            EventKind::Ownership,
            None,
            Some(group.name().to_string()),
            format!("device claim by {:#x} (epoch {epoch})", owner.0),
        );
        Ok(DeviceClaim {
            core: self.clone(),
            group,
            owner,
            epoch,
            live: true,
        })
    }

    /// `iommu_group_dma_owner_claimed`: true while any owner or kernel driver uses the group.
    pub fn owner_claimed(&self, group: &Group) -> bool {
        group.lock().owner_cnt != 0
    }

    /// Every live device.
    pub fn devices(&self) -> Vec<DeviceView> {
        let st = self.state();
        live_devices(&st)
            .filter_map(|d| {
                let e = st.devices[d.0].as_ref()?;
                Some(DeviceView {
                    id: d,
                    info: e.info.clone(),
                    iommu: e.iommu.map(|i| st.instances[i.0].name.clone()),
                    group: e.group.as_ref().map(|g| g.name().to_string()),
                    driver: e.driver.clone(),
                })
            })
            .collect()
    }

    /// Every live group (`iommu_group` kset listing), in creation order.
    pub fn groups(&self) -> Vec<Group> {
        let groups = self.0.groups.lock().unwrap_or_else(|p| p.into_inner());
        groups
            .iter()
            .filter_map(|w| w.upgrade().map(Group))
            .collect()
    }

    /// A group's summary.
    pub fn group_view(&self, g: &Group) -> GroupView {
        let gs = g.lock();
        GroupView {
            id: g.id(),
            name: g.name().to_string(),
            devices: gs.devices.clone(),
            domain: gs.domain.as_ref().map(|d| d.ty()),
            default_domain: gs.default_domain.as_ref().map(|d| d.ty()),
            owner: gs.owner,
            owner_cnt: gs.owner_cnt,
        }
    }

    /// Instance names, in registration order.
    pub fn instances(&self) -> Vec<String> {
        self.state()
            .instances
            .iter()
            .map(|i| i.name.clone())
            .collect()
    }

    /// Takes the trace recorded so far.
    pub fn take_trace(&self) -> Vec<Event> {
        std::mem::take(&mut self.state().trace)
    }

    /// Records an event on behalf of a layer above (VFIO, the platform).
    pub fn record(
        &self,
        kind: EventKind,
        device: Option<String>,
        group: Option<String>,
        detail: String,
    ) {
        push_event(&mut self.state(), kind, device, group, detail);
    }

    /// Checks the invariants of kernel.md section 3: what the core owns (membership,
    /// references, `owner_cnt`, kernel drivers on user-owned groups, the domain), then each
    /// group's driver ([`IommuOps::check_group`]) for what its hardware reaches. Driver
    /// checks run with no core lock held (they take the PE's state: core → group → PE).
    pub fn check(&self) -> Vec<Violation> {
        let mut v = Vec::new();
        let mut driver_checks = Vec::new();
        {
            let st = self.state();
            for d in live_devices(&st) {
                let Some(e) = st.devices[d.0].as_ref() else {
                    continue;
                };
                if let Some(g) = &e.group {
                    if !g.lock().devices.contains(&d) {
                        v.push(Violation::new(
                            Rule::RefcountBalance,
                            Some(&e.info.name),
                            Some(g.name()),
                            Evidence::Membership { device: d.0 },
                        ));
                    }
                }
            }
            for g in self.groups() {
                let gs = g.lock();
                let mut kernel_drivers = 0u64;
                for d in &gs.devices {
                    match st.devices.get(d.0).and_then(|e| e.as_ref()) {
                        Some(e) if e.group.as_ref().is_some_and(|eg| eg.same(&g)) => {
                            if let Some(b) = e.driver.as_ref().filter(|b| !b.driver_managed_dma) {
                                kernel_drivers += 1;
                                if gs.owner.is_some() {
                                    v.push(Violation::new(
                                        Rule::NoKernelDriverOnUserGroup,
                                        Some(&e.info.name),
                                        Some(g.name()),
                                        Evidence::Driver {
                                            name: b.name.clone(),
                                        },
                                    ));
                                }
                            }
                        }
                        _ => v.push(Violation::new(
                            Rule::RefcountBalance,
                            None,
                            Some(g.name()),
                            Evidence::Membership { device: d.0 },
                        )),
                    }
                }
                // Every device holds a reference, plus this listing's own.
                let refs = g.ref_count() as u64;
                let devices = gs.devices.len() as u64;
                if refs < devices + 1 {
                    v.push(Violation::new(
                        Rule::RefcountBalance,
                        None,
                        Some(g.name()),
                        Evidence::Count {
                            what: "group references",
                            expected: devices,
                            found: refs - 1,
                        },
                    ));
                }
                match gs.owner {
                    None if u64::from(gs.owner_cnt) != kernel_drivers => v.push(Violation::new(
                        Rule::RefcountBalance,
                        None,
                        Some(g.name()),
                        Evidence::Count {
                            what: "owner_cnt (one per bound kernel driver)",
                            expected: kernel_drivers,
                            found: u64::from(gs.owner_cnt),
                        },
                    )),
                    Some(_) if gs.owner_cnt == 0 => v.push(Violation::new(
                        Rule::RefcountBalance,
                        None,
                        Some(g.name()),
                        Evidence::Count {
                            what: "owner_cnt of an owned group",
                            expected: 1,
                            found: 0,
                        },
                    )),
                    Some(_)
                        if same_domain(&gs.domain, &gs.default_domain)
                            && gs.default_domain.is_some() =>
                    {
                        v.push(Violation::new(
                            Rule::NoKernelTranslationOnUserGroup,
                            None,
                            Some(g.name()),
                            Evidence::DefaultDomain,
                        ))
                    }
                    _ => {}
                }
                let owner = gs.owner.map(|o| (o, gs.epoch));
                if let Some(ops) = ops_of(&st, &gs) {
                    driver_checks.push((g.clone(), owner, ops));
                }
            }
        }
        for (g, owner, ops) in driver_checks {
            for f in ops.check_group(&g, owner) {
                v.push(Violation {
                    rule: f.rule,
                    device: f.device,
                    group: Some(g.name().to_string()),
                    evidence: f.evidence,
                });
            }
        }
        v
    }
}

/// A DMA ownership claim, released on drop. `WHOLE` says what a release gives back:
/// the whole group (`iommu_group_release_dma_owner`) or one use of it
/// (`iommu_device_release_dma_owner`; the last use gives the group back).
///
/// A claim has an identity: its owner and the ownership epoch it was made in. It can only
/// release itself: once the ownership it belongs to has ended (a group release by the
/// same owner, say), releasing it changes nothing, and the trace says so (the kernel
/// WARNs), whoever owns the group by then.
pub struct Claim<const WHOLE: bool> {
    core: Core,
    group: Group,
    owner: OwnerCookie,
    epoch: u64,
    live: bool,
}

/// A group-level claim ([`Core::claim_group`]).
pub type GroupClaim = Claim<true>;
/// A device-level claim ([`Core::claim_device`]).
pub type DeviceClaim = Claim<false>;

impl<const WHOLE: bool> Claim<WHOLE> {
    /// The claimed group.
    pub fn group(&self) -> &Group {
        &self.group
    }
    /// The owner.
    pub fn owner(&self) -> OwnerCookie {
        self.owner
    }
    /// The ownership epoch it was made in.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }
    /// Whether the ownership it belongs to is still the group's.
    pub fn is_current(&self) -> bool {
        self.group.is_owned_by(self.owner, self.epoch)
    }
    /// Releases now. Errors of re-attaching the default domain are returned; the claim is
    /// gone either way.
    pub fn release(mut self) -> Result<(), Errno> {
        self.live = false;
        release_group(&self.core, &self.group, WHOLE, self.owner, self.epoch)
    }
}

impl<const WHOLE: bool> Drop for Claim<WHOLE> {
    fn drop(&mut self) {
        if self.live {
            let _ = release_group(&self.core, &self.group, WHOLE, self.owner, self.epoch);
        }
    }
}

fn release_group(
    core: &Core,
    group: &Group,
    whole: bool,
    owner: OwnerCookie,
    epoch: u64,
) -> Result<(), Errno> {
    let mut st = core.state();
    let result = {
        let mut gs = group.lock();
        if gs.owner_cnt == 0 || gs.owner != Some(owner) || gs.epoch != epoch {
            // The kernel WARNs and does nothing: the ownership this claim belonged to
            // ended already (and the group may be someone else's now).
            let now = match gs.owner {
                Some(o) => format!("owned by {:#x} (epoch {})", o.0, gs.epoch),
                None => "not owned".to_string(),
            };
            drop(gs);
            push_event(
                &mut st,
                EventKind::Ownership,
                None,
                Some(group.name().to_string()),
                format!(
                    "stale release by {:#x} (epoch {epoch}) ignored: the group is {now} (WARN)",
                    owner.0
                ),
            );
            return Ok(());
        }
        if !whole && gs.owner_cnt > 1 {
            gs.owner_cnt -= 1;
            return Ok(());
        }
        gs.owner_cnt = 0;
        gs.owner = None;
        let default = gs.default_domain.clone();
        set_domain(&st, group, &mut gs, default)
    };
    push_event(
        &mut st,
        EventKind::Ownership,
        None,
        Some(group.name().to_string()),
        "released to the kernel".into(),
    );
    result
}

fn same_domain(a: &Option<Arc<Domain>>, b: &Option<Arc<Domain>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
    }
}

fn entry(st: &State, dev: DeviceId) -> Result<&DeviceEntry, Errno> {
    st.devices
        .get(dev.0)
        .and_then(|e| e.as_ref())
        .ok_or(Errno::Enodev)
}

fn live_devices(st: &State) -> impl Iterator<Item = DeviceId> + '_ {
    st.devices
        .iter()
        .enumerate()
        .filter(|(_, e)| e.is_some())
        .map(|(i, _)| DeviceId(i))
}

fn dev_bus(st: &State, d: DeviceId) -> Option<BusType> {
    st.devices.get(d.0)?.as_ref().map(|e| e.info.addr.bus())
}

fn push_event(
    st: &mut State,
    kind: EventKind,
    device: Option<String>,
    group: Option<String>,
    detail: String,
) {
    let seq = st.trace.len() as u64;
    st.trace.push(Event {
        seq,
        kind,
        device,
        group,
        detail,
    });
}

fn ops_of(st: &State, group: &GroupState) -> Option<Arc<dyn IommuOps>> {
    group
        .devices
        .iter()
        .find_map(|d| st.devices.get(d.0)?.as_ref()?.iommu)
        .map(|i| st.instances[i.0].ops.clone())
}

/// `__iommu_take_dma_ownership`: switch to the (cached) blocking domain, then own.
fn take_ownership(
    st: &State,
    group: &Group,
    gs: &mut GroupState,
    owner: OwnerCookie,
) -> Result<(), Errno> {
    if !same_domain(&gs.domain, &gs.default_domain) {
        return Err(Errno::Ebusy);
    }
    if gs.blocking_domain.is_none() {
        let ops = ops_of(st, gs).ok_or(Errno::Enodev)?;
        let blocking = ops
            .blocked_domain()
            .or_else(|| ops.domain_alloc(DomainType::Blocked))
            .or_else(|| ops.domain_alloc(DomainType::Unmanaged))
            .ok_or(Errno::Enomem)?;
        gs.blocking_domain = Some(blocking);
    }
    let blocking = gs.blocking_domain.clone();
    set_domain(st, group, gs, blocking)?;
    gs.owner = Some(owner);
    gs.owner_cnt += 1;
    gs.epoch += 1;
    Ok(())
}

/// `__iommu_group_set_domain` with the v6.5 unwind: attach `new` to every device in order;
/// if one fails, re-attach the old domain to those already switched and fail.
fn set_domain(
    st: &State,
    group: &Group,
    gs: &mut GroupState,
    new: Option<Arc<Domain>>,
) -> Result<(), Errno> {
    if same_domain(&gs.domain, &new) {
        return Ok(());
    }
    let old = gs.domain.clone();
    let Some(new_dom) = new.clone() else {
        // A NULL domain: nothing to attach (v6.4 platform DMA ops with no default domain).
        gs.domain = None;
        return Ok(());
    };
    let devices = gs.devices.clone();
    for (k, d) in devices.iter().enumerate() {
        let Some(e) = st.devices.get(d.0).and_then(|e| e.as_ref()) else {
            continue;
        };
        let ctx = AttachCtx {
            dev: *d,
            info: &e.info,
            group,
            old: old.as_ref().map(|o| o.ty()),
        };
        if let Err(err) = new_dom.ops().attach_dev(&ctx) {
            if let Some(old_dom) = &old {
                for back in &devices[..k] {
                    if let Some(e) = st.devices.get(back.0).and_then(|e| e.as_ref()) {
                        let ctx = AttachCtx {
                            dev: *back,
                            info: &e.info,
                            group,
                            old: Some(new_dom.ty()),
                        };
                        let _ = old_dom.ops().attach_dev(&ctx);
                    }
                }
            }
            return Err(err);
        }
    }
    gs.domain = new;
    Ok(())
}

fn unbind_locked(st: &mut State, dev: DeviceId) -> Result<(), Errno> {
    let e = entry(st, dev)?;
    let Some(binding) = e.driver.clone() else {
        return Err(Errno::Enodev);
    };
    // `iommu_device_unuse_default_domain`: WARN and leave the count alone if it is
    // already 0 (an unbalanced unbind), else one use less.
    let mut warned = false;
    if !binding.driver_managed_dma {
        if let Some(g) = &e.group {
            let mut gs = g.lock();
            match gs.owner_cnt.checked_sub(1) {
                Some(n) => gs.owner_cnt = n,
                None => warned = true,
            }
        }
    }
    let gname = e.group.as_ref().map(|g| g.name().to_string());
    let dname = e.info.name.clone();
    if warned {
        push_event(
            st,
            EventKind::Ownership,
            Some(dname.clone()),
            gname.clone(),
            "unbind with owner_cnt already 0: left as it is (WARN)".into(),
        );
    }
    if let Some(Some(e)) = st.devices.get_mut(dev.0) {
        e.driver = None;
    }
    push_event(
        st,
        EventKind::DriverUnbind,
        Some(dname),
        gname,
        binding.name,
    );
    Ok(())
}

/// `__iommu_probe_device`: find the instance, get the group, join it, attach its domain.
fn probe_locked(st: &mut State, dev: DeviceId) -> Result<(), Errno> {
    let e = entry(st, dev)?;
    if e.group.is_some() {
        return Ok(());
    }
    let info = e.info.clone();
    let mut last = Errno::Enodev;
    let mut found = None;
    for (i, inst) in st.instances.iter().enumerate() {
        match inst.ops.probe_device(&info) {
            Ok(()) => {
                found = Some(InstanceId(i));
                break;
            }
            Err(err) => last = err,
        }
    }
    let Some(iid) = found else {
        push_event(
            st,
            EventKind::ProbeFailed,
            Some(info.name.clone()),
            None,
            format!("probe_device: {last}"),
        );
        return Err(last);
    };
    let ops = st.instances[iid.0].ops.clone();
    let group = match ops.device_group(&info) {
        Ok(g) => g,
        Err(err) => {
            push_event(
                st,
                EventKind::ProbeFailed,
                Some(info.name.clone()),
                None,
                format!("device_group: {err}"),
            );
            return Err(err);
        }
    };
    {
        let mut gs = group.lock();
        if gs.default_domain.is_none() && gs.devices.is_empty() {
            gs.default_domain = ops
                .default_domain()
                .or_else(|| ops.domain_alloc(ops.def_domain_type(&info)));
        }
        let target = if gs.domain.is_some() {
            gs.domain.clone()
        } else {
            gs.default_domain.clone()
        };
        if let Some(dom) = &target {
            let ctx = AttachCtx {
                dev,
                info: &info,
                group: &group,
                old: None,
            };
            if let Err(err) = dom.ops().attach_dev(&ctx) {
                drop(gs);
                push_event(
                    st,
                    EventKind::ProbeFailed,
                    Some(info.name.clone()),
                    Some(group.name().to_string()),
                    format!("attach: {err}"),
                );
                return Err(err);
            }
        }
        gs.domain = target;
        gs.devices.push(dev);
    }
    let gname = group.name().to_string();
    let dom = group
        .lock()
        .domain
        .as_ref()
        .map_or("none".to_string(), |d| d.ty().to_string());
    if let Some(Some(e)) = st.devices.get_mut(dev.0) {
        e.iommu = Some(iid);
        e.group = Some(group);
    }
    push_event(
        st,
        EventKind::Attach,
        Some(info.name),
        Some(gname),
        format!("joined, domain {dom}"),
    );
    Ok(())
}

/// The core's own checker rules, each made to fire by a fault planted in state no caller
/// can reach (hence here, inside the crate), and silent on the same machine unplanted.
#[cfg(test)]
mod planted {
    use super::*;
    use crate::simple::SimpleIommu;

    /// Two platform devices, one group each, only the devices holding their groups.
    fn machine() -> (Core, [DeviceId; 2], [Group; 2]) {
        let core = Core::new();
        core.register_instance("simple", SimpleIommu::new(&core, 8, false));
        let a = core.add_device(DeviceInfo::platform("a", 0));
        let b = core.add_device(DeviceInfo::platform("b", 1));
        let ga = core.device_group(a).unwrap().unwrap();
        let gb = core.device_group(b).unwrap().unwrap();
        (core, [a, b], [ga, gb])
    }

    fn only(core: &Core) -> Violation {
        let v = core.check();
        assert_eq!(v.len(), 1, "{v:?}");
        v.into_iter().next().unwrap()
    }

    #[test]
    fn the_unplanted_machine_is_clean() {
        let (core, [a, _], [ga, gb]) = machine();
        // Group b is held by its device alone: references balance exactly.
        drop(gb);
        assert!(core.check().is_empty());
        core.bind_driver(a, "drv", false).unwrap();
        assert!(core.check().is_empty());
        core.unbind_driver(a).unwrap();
        let c = core.claim_group(&ga, OwnerCookie(1)).unwrap();
        assert!(core.check().is_empty());
        drop(c);
        assert!(core.check().is_empty());
    }

    #[test]
    fn the_group_list_is_pruned_of_dead_groups_as_it_doubles() {
        let core = Core::new();
        let keep: Vec<Group> = (0..40)
            .map(|_| core.alloc_group(None, Box::new(()), None))
            .collect();
        for _ in 0..500 {
            drop(core.alloc_group(None, Box::new(()), None));
        }
        let len = core.0.groups.lock().unwrap().len();
        assert!(
            len <= 2 * keep.len() + 1,
            "{len} entries for {} live groups",
            keep.len()
        );
        assert_eq!(core.groups().len(), keep.len());
    }

    #[test]
    fn a_group_listing_a_device_of_another_group_is_named() {
        let (core, [_, b], [ga, _]) = machine();
        ga.lock().devices.push(b);
        let name = ga.name().to_string();
        // Only the device's reference is left (and the checker's listing's).
        drop(ga);
        let v = core.check();
        assert!(
            v.contains(&Violation::new(
                Rule::RefcountBalance,
                None,
                Some(&name),
                Evidence::Membership { device: b.0 },
            )),
            "{v:?}"
        );
        // Two devices listed, one reference held by a device (plus the listing's).
        assert!(
            v.contains(&Violation::new(
                Rule::RefcountBalance,
                None,
                Some(&name),
                Evidence::Count {
                    what: "group references",
                    expected: 2,
                    found: 1,
                },
            )),
            "{v:?}"
        );
    }

    #[test]
    fn a_device_its_group_does_not_list_is_named() {
        let (core, [a, _], [ga, _]) = machine();
        ga.lock().devices.clear();
        assert_eq!(
            only(&core),
            Violation::new(
                Rule::RefcountBalance,
                Some("a"),
                Some(ga.name()),
                Evidence::Membership { device: a.0 },
            )
        );
    }

    #[test]
    fn an_owner_cnt_that_is_not_the_bound_kernel_drivers_is_named() {
        let (core, [a, _], [ga, _]) = machine();
        core.bind_driver(a, "drv", false).unwrap();
        ga.lock().owner_cnt = 3;
        assert_eq!(
            only(&core),
            Violation::new(
                Rule::RefcountBalance,
                None,
                Some(ga.name()),
                Evidence::Count {
                    what: "owner_cnt (one per bound kernel driver)",
                    expected: 1,
                    found: 3,
                },
            )
        );
    }

    #[test]
    fn an_owned_group_with_no_users_is_named() {
        let (core, _, [ga, _]) = machine();
        let _c = core.claim_group(&ga, OwnerCookie(1)).unwrap();
        ga.lock().owner_cnt = 0;
        assert_eq!(
            only(&core),
            Violation::new(
                Rule::RefcountBalance,
                None,
                Some(ga.name()),
                Evidence::Count {
                    what: "owner_cnt of an owned group",
                    expected: 1,
                    found: 0,
                },
            )
        );
        ga.lock().owner_cnt = 1;
    }

    #[test]
    fn an_owned_group_left_on_its_default_domain_is_named() {
        let (core, _, [ga, _]) = machine();
        let _c = core.claim_group(&ga, OwnerCookie(1)).unwrap();
        {
            let mut gs = ga.lock();
            gs.domain = gs.default_domain.clone();
        }
        assert_eq!(
            only(&core),
            Violation::new(
                Rule::NoKernelTranslationOnUserGroup,
                None,
                Some(ga.name()),
                Evidence::DefaultDomain,
            )
        );
    }

    #[test]
    fn a_kernel_driver_on_an_owned_group_is_named() {
        let (core, [a, _], [ga, _]) = machine();
        let _c = core.claim_group(&ga, OwnerCookie(1)).unwrap();
        if let Some(Some(e)) = core.state().devices.get_mut(a.0) {
            e.driver = Some(DriverBinding {
                name: "rogue".into(),
                driver_managed_dma: false,
            });
        }
        assert_eq!(
            only(&core),
            Violation::new(
                Rule::NoKernelDriverOnUserGroup,
                Some("a"),
                Some(ga.name()),
                Evidence::Driver {
                    name: "rogue".into()
                },
            )
        );
    }
}
