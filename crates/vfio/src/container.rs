//! VFIO groups, containers and the SPAPR TCE driver (`tce_container`).

use crate::uapi::{
    self, ioctl, Arg, DmaMap, DmaUnmap, RegisterMemory, TceCreate, TceInfo, TceRemove,
};
use crate::KernelProfile;
use iommu_core::{Cap, DeviceId, Errno, EventKind, Group, GroupClaim, OwnerCookie};
use spapr_platform::pe::{PeLink, TableGroupOps};
use spapr_platform::{IommuTable, OpalError, Pe, PowerNv};
use spapr_tce::{Tce, TceIndex, TcePerm, Ua};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// A process (its `mm`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Mm(pub u32);

/// A container file descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ContainerFd(pub u32);

/// A group file descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GroupFd(pub u32);

/// VFIO's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VfioConfig {
    /// Behaviour profile.
    pub profile: KernelProfile,
    /// `RLIMIT_MEMLOCK` in bytes.
    pub memlock_limit: u64,
    /// The process has `CAP_IPC_LOCK` (no limit).
    pub cap_ipc_lock: bool,
    /// `eeh_enabled()`.
    pub eeh: bool,
}

impl Default for VfioConfig {
    fn default() -> Self {
        Self {
            profile: KernelProfile::Linux,
            memlock_limit: 4 << 30,
            cap_ipc_lock: false,
            eeh: false,
        }
    }
}

/// A mapping of a process: user addresses backed by real memory.
#[derive(Clone, Copy, Debug)]
struct Vma {
    ua: u64,
    len: u64,
    page_shift: u32,
    hpa: u64,
}

/// A preregistered region (`mm_iommu_table_group_mem_t`), mm-wide.
#[derive(Clone, Debug)]
struct Region {
    ua: u64,
    size: u64,
    page_shift: u32,
    hpa: u64,
    users: u32,
    mapped: u64,
}

#[derive(Debug, Default)]
struct Process {
    vmas: Vec<Vma>,
    locked_pages: u64,
    regions: Vec<Option<Region>>,
}

impl Process {
    /// The host page size backing real address `hpa` (pins are counted per host page).
    fn host_page_shift(&self, hpa: u64) -> Option<u32> {
        self.vmas
            .iter()
            .find(|v| hpa >= v.hpa && hpa - v.hpa < v.len)
            .map(|v| v.page_shift)
    }

    /// One TCE mapping `ua` went away: its region has one use less.
    fn unuse(&mut self, ua: u64) {
        if let Some(r) = self
            .regions
            .iter_mut()
            .flatten()
            .find(|r| ua >= r.ua && ua < r.ua + r.size)
        {
            r.mapped = r.mapped.saturating_sub(1);
        }
    }
}

/// One MAP_DMA after its checks: window `num`, `n` entries from `first`, user memory
/// from `vaddr`, permission `perm`, for process `mm`.
#[derive(Clone, Copy)]
struct MapReq {
    num: usize,
    mm: Mm,
    first: TceIndex,
    n: u64,
    vaddr: u64,
    perm: TcePerm,
}

/// One container window.
struct Window {
    table: Arc<IommuTable>,
    /// `it_userspace` (v2): the user address behind each entry.
    ua: Option<spapr_tce::TceTable<Ua>>,
    /// The size the caller asked for (the table may be larger).
    requested: u64,
    /// Pages charged for the table.
    charged: u64,
    /// Live entries: while 0, a MAP needs no scan for entries to replace.
    live: u64,
}

struct Container {
    mm: Option<Mm>,
    v2: Option<bool>,
    enabled: bool,
    def_window_pending: bool,
    windows: [Option<Window>; 2],
    groups: Vec<GroupFd>,
    prereg: Vec<usize>,
    enable_charged: u64,
    /// v1: pins per host page.
    pins: HashMap<u64, u32>,
}

struct VfioGroup {
    group: Group,
    pe: Arc<Pe>,
    container: Option<ContainerFd>,
    claim: Option<GroupClaim>,
    device_fds: u32,
}

#[derive(Default)]
struct State {
    next_fd: u32,
    containers: HashMap<u32, Container>,
    groups: HashMap<u32, VfioGroup>,
    procs: HashMap<Mm, Process>,
    next_user_hpa: u64,
}

/// A container window, for `show`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WindowView {
    /// Slot.
    pub num: usize,
    /// First bus address.
    pub start: u64,
    /// Table size in bytes.
    pub size: u64,
    /// IOMMU page size.
    pub page_size: u64,
    /// Levels.
    pub levels: u32,
    /// Mapped entries.
    pub mapped: u64,
}

/// VFIO on one PowerNV machine.
pub struct Vfio {
    machine: Arc<PowerNv>,
    config: Mutex<VfioConfig>,
    state: Mutex<State>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Where user memory comes from in the machine's RAM.
const USER_MEMORY: u64 = 1 << 32;

impl Vfio {
    /// VFIO on `machine`.
    pub fn new(machine: Arc<PowerNv>, config: VfioConfig) -> Self {
        Self {
            machine,
            config: Mutex::new(config),
            state: Mutex::new(State {
                next_fd: 3,
                next_user_hpa: USER_MEMORY,
                ..State::default()
            }),
        }
    }

    /// The machine.
    pub fn machine(&self) -> &Arc<PowerNv> {
        &self.machine
    }
    /// The settings.
    pub fn config(&self) -> VfioConfig {
        *lock(&self.config)
    }
    /// Switches the behaviour profile.
    pub fn set_profile(&self, p: KernelProfile) {
        lock(&self.config).profile = p;
    }
    fn profile(&self) -> KernelProfile {
        lock(&self.config).profile
    }
    fn page_shift(&self) -> u32 {
        self.machine.env().host_page_shift
    }

    fn note(&self, kind: EventKind, group: Option<String>, detail: String) {
        self.machine.flush();
        self.machine.core().record(kind, None, group, detail);
    }

    fn quirk(&self, what: &str) {
        self.note(EventKind::Quirk, None, format!("linux quirk: {what}"));
    }

    // ---- processes ----

    /// Gives process `mm` `len` bytes of memory backed by pages of `1 << page_shift`
    /// (the guest RAM a VMM allocates); returns its user address.
    pub fn mmap(&self, mm: Mm, len: u64, page_shift: u32) -> Result<u64, Errno> {
        if len == 0 || !(12..=34).contains(&page_shift) || len % (1 << page_shift) != 0 {
            return Err(Errno::Einval);
        }
        let mut st = lock(&self.state);
        let hpa = st.next_user_hpa.next_multiple_of(1 << page_shift);
        if !hpa
            .checked_add(len)
            .is_some_and(|e| e <= self.machine.ram().size())
        {
            return Err(Errno::Enomem);
        }
        st.next_user_hpa = hpa + len;
        let p = st.procs.entry(mm).or_default();
        let ua = p
            .vmas
            .last()
            .map_or(0x7000_0000_0000, |v| v.ua + v.len)
            .next_multiple_of(1 << 30);
        p.vmas.push(Vma {
            ua,
            len,
            page_shift,
            hpa,
        });
        Ok(ua)
    }

    /// The real address behind `ua` of `mm` (what pinning finds).
    pub fn user_to_real(&self, mm: Mm, ua: u64) -> Option<u64> {
        let st = lock(&self.state);
        let p = st.procs.get(&mm)?;
        p.vmas
            .iter()
            .find(|v| ua >= v.ua && ua - v.ua < v.len)
            .map(|v| v.hpa + (ua - v.ua))
    }

    /// Pages of `mm` charged against its locked-memory limit.
    pub fn locked_pages(&self, mm: Mm) -> u64 {
        lock(&self.state)
            .procs
            .get(&mm)
            .map_or(0, |p| p.locked_pages)
    }

    fn charge(&self, st: &mut State, mm: Mm, pages: u64) -> Result<(), Errno> {
        let cfg = self.config();
        let limit = cfg.memlock_limit >> self.page_shift();
        let p = st.procs.entry(mm).or_default();
        if !cfg.cap_ipc_lock && p.locked_pages + pages > limit {
            return Err(Errno::Enomem);
        }
        p.locked_pages += pages;
        Ok(())
    }

    fn uncharge(st: &mut State, mm: Mm, pages: u64) {
        if let Some(p) = st.procs.get_mut(&mm) {
            p.locked_pages = p.locked_pages.saturating_sub(pages);
        }
    }

    // ---- devices, groups, containers ----

    /// Binds vfio-pci to a device (`vfio_register_group_dev`): refused with -EINVAL unless
    /// its IOMMU reports cache coherency — the check that broke VFIO on POWER before the
    /// seed patch gave POWER its `capable` op.
    pub fn register_device(&self, dev: DeviceId) -> Result<(), Errno> {
        if !self
            .machine
            .core()
            .device_capable(dev, Cap::CacheCoherency)?
        {
            return Err(Errno::Einval);
        }
        self.machine.bind_managed_driver(dev, "vfio-pci")
    }

    fn alloc_fd(st: &mut State) -> u32 {
        st.next_fd += 1;
        st.next_fd
    }

    /// Opens `/dev/vfio/vfio`.
    pub fn open_container(&self) -> ContainerFd {
        let mut st = lock(&self.state);
        let fd = Self::alloc_fd(&mut st);
        st.containers.insert(
            fd,
            Container {
                mm: None,
                v2: None,
                enabled: false,
                def_window_pending: false,
                windows: [None, None],
                groups: Vec::new(),
                prereg: Vec::new(),
                enable_charged: 0,
                pins: HashMap::new(),
            },
        );
        ContainerFd(fd)
    }

    /// Opens `/dev/vfio/<group>` for the group of `dev`. -ENODEV without a group or PE.
    pub fn open_group(&self, dev: DeviceId) -> Result<GroupFd, Errno> {
        let group = self
            .machine
            .core()
            .device_group(dev)?
            .ok_or(Errno::Enodev)?;
        let pe = group
            .data::<PeLink>()
            .and_then(|l| l.0.upgrade())
            .ok_or(Errno::Enodev)?;
        let mut st = lock(&self.state);
        if st.groups.values().any(|g| g.group.same(&group)) {
            return Err(Errno::Ebusy);
        }
        let fd = Self::alloc_fd(&mut st);
        st.groups.insert(
            fd,
            VfioGroup {
                group,
                pe,
                container: None,
                claim: None,
                device_fds: 0,
            },
        );
        Ok(GroupFd(fd))
    }

    /// `VFIO_GROUP_SET_CONTAINER`: claims DMA ownership (the PE is isolated from now on),
    /// then attaches to the container's driver if it has one.
    pub fn set_container(&self, group: GroupFd, container: ContainerFd) -> Result<(), Errno> {
        let mut st = lock(&self.state);
        let g = st.groups.get(&group.0).ok_or(Errno::Ebadf)?;
        if g.container.is_some() {
            return Err(Errno::Einval);
        }
        if !st.containers.contains_key(&container.0) {
            return Err(if st.groups.contains_key(&container.0) {
                Errno::Ebadfd
            } else {
                Errno::Ebadf
            });
        }
        let cookie = OwnerCookie(0x7f10_0000 + u64::from(group.0));
        let claim = self.machine.core().claim_group(&g.group, cookie);
        self.machine.flush();
        let claim = claim?;
        let has_driver = st
            .containers
            .get(&container.0)
            .is_some_and(|c| c.v2.is_some());
        if has_driver {
            if let Err(e) = self.attach_group(&mut st, container, group) {
                drop(st);
                drop(claim);
                self.machine.flush();
                return Err(e);
            }
        }
        let name = {
            let g = st.groups.get_mut(&group.0).ok_or(Errno::Ebadf)?;
            g.container = Some(container);
            g.claim = Some(claim);
            g.group.name().to_string()
        };
        if let Some(c) = st.containers.get_mut(&container.0) {
            c.groups.push(group);
        }
        drop(st);
        self.note(
            EventKind::Attach,
            Some(name),
            format!("VFIO container fd {}", container.0),
        );
        Ok(())
    }

    /// `VFIO_GROUP_UNSET_CONTAINER`: -EINVAL without a container, -EBUSY while a device
    /// fd is open; else the driver detaches the group (TCEs cleared, windows unset), the
    /// claim is released (the kernel gets its windows back), and the last group's
    /// departure releases the driver.
    pub fn unset_container(&self, group: GroupFd) -> Result<(), Errno> {
        let mut st = lock(&self.state);
        let g = st.groups.get(&group.0).ok_or(Errno::Ebadf)?;
        let cfd = g.container.ok_or(Errno::Einval)?;
        if g.device_fds > 0 {
            return Err(Errno::Ebusy);
        }
        self.detach(&mut st, cfd.0, group);
        let claim = st.groups.get_mut(&group.0).and_then(|g| {
            g.container = None;
            g.claim.take()
        });
        let last = st.containers.get_mut(&cfd.0).is_some_and(|c| {
            c.groups.retain(|x| *x != group);
            c.groups.is_empty()
        });
        if last {
            self.release_driver(&mut st, cfd.0);
        }
        drop(st);
        if let Some(c) = claim {
            let _ = c.release();
        }
        self.note(
            EventKind::Ownership,
            None,
            format!("group fd {} left its container", group.0),
        );
        Ok(())
    }

    /// `VFIO_GROUP_GET_DEVICE_FD`: the group must be in a container with a driver.
    pub fn open_device(&self, group: GroupFd, dev: DeviceId) -> Result<(), Errno> {
        let mut st = lock(&self.state);
        let in_container = {
            let g = st.groups.get(&group.0).ok_or(Errno::Ebadf)?;
            g.container
                .and_then(|c| st.containers.get(&c.0))
                .is_some_and(|c| c.v2.is_some())
        };
        if !in_container {
            return Err(Errno::Einval);
        }
        let g = st.groups.get_mut(&group.0).ok_or(Errno::Ebadf)?;
        if !g.group.contains(dev) {
            return Err(Errno::Enodev);
        }
        g.device_fds += 1;
        Ok(())
    }

    /// Closes a device fd.
    pub fn close_device(&self, group: GroupFd) -> Result<(), Errno> {
        let mut st = lock(&self.state);
        let g = st.groups.get_mut(&group.0).ok_or(Errno::Ebadf)?;
        if g.device_fds == 0 {
            return Err(Errno::Ebadf);
        }
        g.device_fds -= 1;
        Ok(())
    }

    /// Closes a group fd (leaving its container first).
    pub fn close_group(&self, group: GroupFd) -> Result<(), Errno> {
        let has_container = lock(&self.state)
            .groups
            .get(&group.0)
            .ok_or(Errno::Ebadf)?
            .container
            .is_some();
        if has_container {
            {
                let mut st = lock(&self.state);
                if let Some(g) = st.groups.get_mut(&group.0) {
                    g.device_fds = 0;
                }
            }
            self.unset_container(group)?;
        }
        lock(&self.state).groups.remove(&group.0);
        Ok(())
    }

    /// Closes a container fd (`tce_iommu_release`): every group detached, every table and
    /// region freed, every charge returned.
    pub fn close_container(&self, container: ContainerFd) -> Result<(), Errno> {
        let groups = lock(&self.state)
            .containers
            .get(&container.0)
            .ok_or(Errno::Ebadf)?
            .groups
            .clone();
        for g in groups {
            {
                let mut st = lock(&self.state);
                if let Some(g) = st.groups.get_mut(&g.0) {
                    g.device_fds = 0;
                }
            }
            self.unset_container(g)?;
        }
        let mut st = lock(&self.state);
        self.release_driver(&mut st, container.0);
        st.containers.remove(&container.0);
        Ok(())
    }

    // ---- the driver ----

    fn attach_group(&self, st: &mut State, cfd: ContainerFd, gfd: GroupFd) -> Result<(), Errno> {
        let pe = st.groups.get(&gfd.0).ok_or(Errno::Ebadf)?.pe.clone();
        let (first_ops, ngroups, v2) = {
            let c = st.containers.get(&cfd.0).ok_or(Errno::Ebadf)?;
            let first = c
                .groups
                .first()
                .and_then(|g| st.groups.get(&g.0))
                .map(|g| g.pe.ops);
            (first, c.groups.len(), c.v2 == Some(true))
        };
        if v2 && pe.max_dynamic_windows() == 0 {
            return Err(Errno::Einval);
        }
        if !v2 && ngroups > 0 {
            return Err(Errno::Ebusy);
        }
        if first_ops.is_some_and(|o| o != pe.ops) {
            return Err(Errno::Eperm);
        }
        let c = st.containers.get_mut(&cfd.0).ok_or(Errno::Ebadf)?;
        let mut result = Ok(());
        let mut done = Vec::new();
        for (i, w) in c.windows.iter().enumerate() {
            if let Some(w) = w {
                if let Err(e) = pe.set_window(i, &w.table) {
                    result = Err(e);
                    break;
                }
                done.push(i);
            }
        }
        if ngroups == 0 && c.windows[0].is_none() {
            // Set even when taking the windows failed (as the kernel does).
            c.def_window_pending = true;
        }
        if let Err(e) = result {
            for i in done {
                let _ = pe.unset_window(i);
            }
            return Err(self.opal(e));
        }
        Ok(())
    }

    fn opal(&self, e: OpalError) -> Errno {
        match self.profile() {
            KernelProfile::Linux => {
                self.quirk(&format!(
                    "set_window failed with OPAL status {}, returned as if it were an errno",
                    e.code()
                ));
                e.as_kernel_errno()
            }
            KernelProfile::Strict => match e {
                OpalError::Parameter => Errno::Einval,
                OpalError::Hardware => Errno::Eio,
            },
        }
    }

    /// `tce_iommu_detach_group` → `tce_iommu_release_ownership`.
    fn detach(&self, st: &mut State, cfd: u32, gfd: GroupFd) {
        let Some(pe) = st.groups.get(&gfd.0).map(|g| g.pe.clone()) else {
            return;
        };
        let State {
            containers, procs, ..
        } = st;
        let Some(c) = containers.get_mut(&cfd) else {
            return;
        };
        if c.v2.is_none() {
            return;
        }
        for i in 0..2 {
            if c.windows[i].is_some() {
                clear_window(c, procs, i, None);
                let _ = pe.unset_window(i);
            }
        }
    }

    /// `tce_iommu_release` of the driver part: tables, regions, enable charge.
    fn release_driver(&self, st: &mut State, cfd: u32) {
        let State {
            containers, procs, ..
        } = st;
        let Some(c) = containers.get_mut(&cfd) else {
            return;
        };
        let mm = c.mm;
        for i in 0..2 {
            if c.windows[i].is_some() {
                clear_window(c, procs, i, None);
            }
            if let Some(w) = c.windows[i].take() {
                if let Some(mm) = mm {
                    if let Some(p) = procs.get_mut(&mm) {
                        p.locked_pages = p.locked_pages.saturating_sub(w.charged);
                    }
                }
            }
        }
        if let (Some(mm), true) = (mm, !c.prereg.is_empty()) {
            for id in std::mem::take(&mut c.prereg) {
                put_region(procs, mm, id, self.page_shift());
            }
        }
        if let Some(mm) = mm {
            if let Some(p) = procs.get_mut(&mm) {
                p.locked_pages = p.locked_pages.saturating_sub(c.enable_charged);
            }
        }
        c.enable_charged = 0;
        c.enabled = false;
        c.v2 = None;
        c.def_window_pending = false;
    }

    /// The first attached group's PE (the container's `table_group`).
    fn first_pe(st: &State, c: &Container) -> Option<Arc<Pe>> {
        c.groups
            .first()
            .and_then(|g| st.groups.get(&g.0))
            .map(|g| g.pe.clone())
    }

    /// A container ioctl with an integer argument (CHECK_EXTENSION, SET_IOMMU, ENABLE,
    /// DISABLE, GET_API_VERSION).
    pub fn ioctl_int(&self, mm: Mm, fd: ContainerFd, nr: u32, arg: u64) -> Result<i64, Errno> {
        let mut st = lock(&self.state);
        let c = st.containers.get(&fd.0).ok_or(Errno::Ebadf)?;
        match nr {
            ioctl::GET_API_VERSION => return Ok(0),
            ioctl::CHECK_EXTENSION => {
                return Ok(match arg {
                    2 | 7 => 1,
                    5 => i64::from(self.config().eeh),
                    _ => 0,
                })
            }
            ioctl::SET_IOMMU => {
                if arg != 2 && arg != 7 {
                    return Err(Errno::Enodev);
                }
                if c.groups.is_empty() || c.v2.is_some() {
                    return Err(Errno::Einval);
                }
                let groups = c.groups.clone();
                if let Some(c) = st.containers.get_mut(&fd.0) {
                    c.v2 = Some(arg == 7);
                }
                let mut attached = Vec::new();
                for g in &groups {
                    // attach_group counts the groups already attached.
                    let saved = st
                        .containers
                        .get_mut(&fd.0)
                        .map(|c| std::mem::replace(&mut c.groups, attached.clone()));
                    let r = self.attach_group(&mut st, fd, *g);
                    if let (Some(c), Some(saved)) = (st.containers.get_mut(&fd.0), saved) {
                        c.groups = saved;
                    }
                    if let Err(e) = r {
                        if let Some(c) = st.containers.get_mut(&fd.0) {
                            c.v2 = None;
                            c.def_window_pending = false;
                        }
                        return Err(e);
                    }
                    attached.push(*g);
                }
                return Ok(0);
            }
            _ => {}
        }
        let v2 = c.v2.ok_or(Errno::Einval)?;
        self.check_mm(&mut st, fd, mm, nr)?;
        match (nr, v2) {
            (ioctl::ENABLE, false) => self.enable(&mut st, fd, mm),
            (ioctl::DISABLE, false) => {
                let c = st.containers.get_mut(&fd.0).ok_or(Errno::Ebadf)?;
                let charged = std::mem::take(&mut c.enable_charged);
                c.enabled = false;
                Self::uncharge(&mut st, mm, charged);
                Ok(0)
            }
            _ => Err(Errno::Enotty),
        }
    }

    /// -EPERM if the container belongs to another process; sets the owner on the calls
    /// that take it.
    fn check_mm(&self, st: &mut State, fd: ContainerFd, mm: Mm, nr: u32) -> Result<(), Errno> {
        let c = st.containers.get_mut(&fd.0).ok_or(Errno::Ebadf)?;
        match c.mm {
            Some(owner) if owner != mm => Err(Errno::Eperm),
            Some(_) => Ok(()),
            None => {
                if nr == ioctl::UNREGISTER_MEMORY {
                    return Err(Errno::Eperm);
                }
                if matches!(
                    nr,
                    ioctl::ENABLE | ioctl::REGISTER_MEMORY | ioctl::TCE_CREATE | ioctl::MAP_DMA
                ) {
                    c.mm = Some(mm);
                }
                Ok(())
            }
        }
    }

    fn enable(&self, st: &mut State, fd: ContainerFd, mm: Mm) -> Result<i64, Errno> {
        let c = st.containers.get(&fd.0).ok_or(Errno::Ebadf)?;
        if c.enabled {
            return Err(Errno::Ebusy);
        }
        let pe = Self::first_pe(st, c).ok_or(Errno::Enodev)?;
        if pe.tce32_size == 0 {
            return Err(Errno::Eperm);
        }
        let pages = pe.tce32_size >> self.page_shift();
        self.charge(st, mm, pages)?;
        let c = st.containers.get_mut(&fd.0).ok_or(Errno::Ebadf)?;
        c.enabled = true;
        c.enable_charged = pages;
        Ok(0)
    }

    /// A container ioctl with a struct argument: `arg` holds the bytes user space passed
    /// (at least `minsz`, else -EFAULT) and receives what the kernel copies back.
    pub fn ioctl(&self, mm: Mm, fd: ContainerFd, nr: u32, arg: &mut [u8]) -> Result<i64, Errno> {
        let mut st = lock(&self.state);
        let c = st.containers.get(&fd.0).ok_or(Errno::Ebadf)?;
        let v2 = c.v2.ok_or(Errno::Einval)?;
        self.check_mm(&mut st, fd, mm, nr)?;
        let r = match (nr, v2) {
            (ioctl::SPAPR_TCE_GET_INFO, _) => self.get_info(&st, fd, arg),
            (ioctl::MAP_DMA, _) => self.map_dma(&mut st, fd, arg),
            (ioctl::UNMAP_DMA, _) => self.unmap_dma(&mut st, fd, arg),
            (ioctl::REGISTER_MEMORY, true) => self.register(&mut st, fd, mm, arg),
            (ioctl::UNREGISTER_MEMORY, true) => self.unregister(&mut st, fd, arg),
            (ioctl::TCE_CREATE, true) => self.create(&mut st, fd, arg),
            (ioctl::TCE_REMOVE, true) => self.remove(&mut st, fd, arg),
            _ => Err(Errno::Enotty),
        };
        drop(st);
        self.machine.flush();
        r
    }

    fn get_info(&self, st: &State, fd: ContainerFd, arg: &mut [u8]) -> Result<i64, Errno> {
        let c = st.containers.get(&fd.0).ok_or(Errno::Ebadf)?;
        let pe = Self::first_pe(st, c).ok_or(Errno::Enxio)?;
        let mut info = TceInfo::read(arg)?;
        if (info.argsz as usize) < TceInfo::MINSZ {
            return Err(Errno::Einval);
        }
        info.dma32_window_start = pe.tce32_start as u32;
        info.dma32_window_size = pe.tce32_size as u32;
        if c.v2 == Some(true) && pe.max_dynamic_windows() > 0 {
            info.flags = uapi::VFIO_IOMMU_SPAPR_INFO_DDW;
            info.ddw.pgsizes = pe.pgsizes.0;
            info.ddw.max_dynamic_windows_supported = pe.max_dynamic_windows();
            info.ddw.levels = spapr_tce::MAX_LEVELS;
        } else {
            info.flags = 0;
        }
        uapi::write_info(&info, arg);
        Ok(0)
    }

    /// Creates window `num` (`tce_iommu_create_window`); returns its start address.
    fn create_window(
        &self,
        st: &mut State,
        fd: ContainerFd,
        page_shift: u32,
        window_size: u64,
        levels: u32,
        slot: Option<usize>,
    ) -> Result<u64, Errno> {
        let c = st.containers.get(&fd.0).ok_or(Errno::Ebadf)?;
        let pe = Self::first_pe(st, c).ok_or(Errno::Enxio)?;
        let num = match slot {
            Some(n) => n,
            None => c
                .windows
                .iter()
                .position(Option::is_none)
                .ok_or(Errno::Enospc)?,
        };
        if !pe.pgsizes.contains_shift(page_shift) {
            return Err(Errno::Einval);
        }
        if levels == 0 || levels > spapr_tce::MAX_LEVELS || !window_size.is_power_of_two() {
            return Err(Errno::Einval);
        }
        let size = pe.get_table_size(page_shift, window_size, levels);
        if size == 0 {
            return Err(Errno::Einval);
        }
        let mm = c.mm;
        let v2 = c.v2 == Some(true);
        let groups: Vec<Arc<Pe>> = c
            .groups
            .iter()
            .filter_map(|g| st.groups.get(&g.0).map(|g| g.pe.clone()))
            .collect();
        let pages = if pe.ops == TableGroupOps::Borrowing {
            // The borrowed table's size is charged; its allocated size reads as 0.
            size >> self.page_shift()
        } else {
            size.div_ceil(1 << self.page_shift())
        };
        if let Some(mm) = mm {
            self.charge(st, mm, pages)?;
        }
        let table = match pe.create_table(num, page_shift, window_size, levels) {
            Ok(t) => t,
            Err(e) => {
                match (self.profile(), mm) {
                    (KernelProfile::Strict, Some(mm)) => Self::uncharge(st, mm, pages),
                    (KernelProfile::Linux, Some(_)) => self.quirk(&format!(
                        "create_table refused the geometry after {pages} pages were charged; \
                         the charge is not returned"
                    )),
                    _ => {}
                }
                return Err(e);
            }
        };
        let mut set = Vec::new();
        for p in &groups {
            if let Err(e) = p.set_window(num, &table) {
                for q in set {
                    let _: &Arc<Pe> = q;
                    let _ = q.unset_window(num);
                }
                if let Some(mm) = mm {
                    Self::uncharge(st, mm, pages);
                }
                return Err(self.opal(e));
            }
            set.push(p);
        }
        let ua = (v2 && pe.ops == TableGroupOps::Ioda2).then(|| {
            spapr_tce::TceTable::new(*table.tces.geometry(), spapr_tce::TableOptions::default())
        });
        let ua = match ua {
            Some(Ok(t)) => Some(t),
            Some(Err(_)) => return Err(Errno::Enomem),
            None => None,
        };
        let start = table.start();
        let charged = if pe.ops == TableGroupOps::Borrowing {
            0
        } else {
            pages
        };
        if pe.ops == TableGroupOps::Borrowing && pages > 0 {
            self.quirk(&format!(
                "borrowed table charged {pages} pages but will un-charge 0 at release"
            ));
        }
        let c = st.containers.get_mut(&fd.0).ok_or(Errno::Ebadf)?;
        c.windows[num] = Some(Window {
            table,
            ua,
            requested: window_size,
            charged,
            live: 0,
        });
        Ok(start)
    }

    /// `tce_iommu_create_default_window`, run lazily by MAP, UNMAP and CREATE.
    fn default_window(&self, st: &mut State, fd: ContainerFd) -> Result<(), Errno> {
        let c = st.containers.get(&fd.0).ok_or(Errno::Ebadf)?;
        if !c.def_window_pending {
            return Ok(());
        }
        let pe = Self::first_pe(st, c).ok_or(Errno::Enodev)?;
        let start = self.create_window(st, fd, 12, pe.tce32_size, 1, Some(0))?;
        if start != 0 {
            return Err(Errno::Einval);
        }
        if let Some(c) = st.containers.get_mut(&fd.0) {
            c.def_window_pending = false;
        }
        Ok(())
    }

    fn create(&self, st: &mut State, fd: ContainerFd, arg: &mut [u8]) -> Result<i64, Errno> {
        let c = st.containers.get(&fd.0).ok_or(Errno::Ebadf)?;
        if c.groups.is_empty() {
            return Err(Errno::Enxio);
        }
        let a = TceCreate::read(arg)?;
        if (a.argsz as usize) < TceCreate::MINSZ || a.flags != 0 {
            return Err(Errno::Einval);
        }
        self.default_window(st, fd)?;
        let start = self.create_window(st, fd, a.page_shift, a.window_size, a.levels, None)?;
        uapi::write_start_addr(arg, start);
        self.note(
            EventKind::Map,
            None,
            format!(
                "TCE_CREATE page {} size {:#x} levels {} -> {start:#x}",
                1u64 << a.page_shift.min(63),
                a.window_size,
                a.levels
            ),
        );
        Ok(0)
    }

    fn remove(&self, st: &mut State, fd: ContainerFd, arg: &mut [u8]) -> Result<i64, Errno> {
        let c = st.containers.get(&fd.0).ok_or(Errno::Ebadf)?;
        if c.groups.is_empty() {
            return Err(Errno::Enxio);
        }
        let a = TceRemove::read(arg)?;
        if (a.argsz as usize) < TceRemove::MINSZ || a.flags != 0 {
            return Err(Errno::Einval);
        }
        if c.def_window_pending && a.start_addr == 0 {
            if let Some(c) = st.containers.get_mut(&fd.0) {
                c.def_window_pending = false;
            }
            return Ok(0);
        }
        let num = c
            .windows
            .iter()
            .position(|w| w.as_ref().is_some_and(|w| w.table.contains(a.start_addr)))
            .ok_or(Errno::Einval)?;
        let pes: Vec<Arc<Pe>> = c
            .groups
            .iter()
            .filter_map(|g| st.groups.get(&g.0).map(|g| g.pe.clone()))
            .collect();
        let mm = c.mm;
        let State {
            containers, procs, ..
        } = st;
        let c = containers.get_mut(&fd.0).ok_or(Errno::Ebadf)?;
        clear_window(c, procs, num, None);
        for p in &pes {
            p.unset_window(num)?;
        }
        if let Some(w) = c.windows[num].take() {
            if let Some(mm) = mm {
                Self::uncharge(st, mm, w.charged);
            }
        }
        Ok(0)
    }

    fn register(
        &self,
        st: &mut State,
        fd: ContainerFd,
        mm: Mm,
        arg: &mut [u8],
    ) -> Result<i64, Errno> {
        let a = RegisterMemory::read(arg)?;
        let page = 1u64 << self.page_shift();
        if (a.argsz as usize) < RegisterMemory::MINSZ
            || a.flags != 0
            || a.vaddr % page != 0
            || a.size % page != 0
            || a.size == 0
            || a.vaddr.checked_add(a.size).is_none()
        {
            return Err(Errno::Einval);
        }
        let p = st.procs.entry(mm).or_default();
        let existing = p.regions.iter().enumerate().find_map(|(i, r)| {
            let r = r.as_ref()?;
            let overlap = a.vaddr < r.ua + r.size && r.ua < a.vaddr + a.size;
            overlap.then_some((i, r.ua == a.vaddr && r.size == a.size))
        });
        let c = st.containers.get(&fd.0).ok_or(Errno::Ebadf)?;
        match existing {
            Some((id, true)) if c.prereg.contains(&id) => Err(Errno::Ebusy),
            Some((_, false)) => Err(Errno::Einval),
            Some((id, true)) => {
                // Registered by another container of this mm: shared.
                if let Some(Some(r)) = st.procs.get_mut(&mm).map(|p| &mut p.regions[id]) {
                    r.users += 1;
                }
                let c = st.containers.get_mut(&fd.0).ok_or(Errno::Ebadf)?;
                c.prereg.push(id);
                c.enabled = true;
                Ok(0)
            }
            None => {
                let vma = st
                    .procs
                    .get(&mm)
                    .and_then(|p| {
                        p.vmas
                            .iter()
                            .find(|v| a.vaddr >= v.ua && a.vaddr + a.size <= v.ua + v.len)
                    })
                    .copied()
                    .ok_or(Errno::Efault)?;
                self.charge(st, mm, a.size >> self.page_shift())?;
                let p = st.procs.entry(mm).or_default();
                p.regions.push(Some(Region {
                    ua: a.vaddr,
                    size: a.size,
                    page_shift: vma.page_shift,
                    hpa: vma.hpa + (a.vaddr - vma.ua),
                    users: 1,
                    mapped: 0,
                }));
                let id = p.regions.len() - 1;
                let c = st.containers.get_mut(&fd.0).ok_or(Errno::Ebadf)?;
                c.prereg.push(id);
                c.enabled = true;
                Ok(0)
            }
        }
    }

    fn unregister(&self, st: &mut State, fd: ContainerFd, arg: &mut [u8]) -> Result<i64, Errno> {
        let a = RegisterMemory::read(arg)?;
        let page = 1u64 << self.page_shift();
        if (a.argsz as usize) < RegisterMemory::MINSZ
            || a.flags != 0
            || a.vaddr % page != 0
            || a.size % page != 0
        {
            return Err(Errno::Einval);
        }
        let c = st.containers.get(&fd.0).ok_or(Errno::Ebadf)?;
        let mm = c.mm.ok_or(Errno::Eperm)?;
        let id = c
            .prereg
            .iter()
            .copied()
            .find(|id| {
                st.procs
                    .get(&mm)
                    .and_then(|p| p.regions.get(*id))
                    .and_then(|r| r.as_ref())
                    .is_some_and(|r| r.ua == a.vaddr && r.size == a.size)
            })
            .ok_or(Errno::Enoent)?;
        let mapped = st
            .procs
            .get(&mm)
            .and_then(|p| p.regions.get(id))
            .and_then(|r| r.as_ref())
            .map_or(0, |r| r.mapped);
        if mapped > 0 {
            if self.profile() == KernelProfile::Strict {
                return Err(Errno::Ebusy);
            }
            self.quirk(&format!(
                "UNREGISTER of a region with {mapped} live mappings returns 0; the region \
                 stays registered, pinned and charged"
            ));
            if let Some(c) = st.containers.get_mut(&fd.0) {
                c.prereg.retain(|x| *x != id);
            }
            return Ok(0);
        }
        if let Some(c) = st.containers.get_mut(&fd.0) {
            c.prereg.retain(|x| *x != id);
        }
        put_region(&mut st.procs, mm, id, self.page_shift());
        Ok(0)
    }

    fn map_dma(&self, st: &mut State, fd: ContainerFd, arg: &mut [u8]) -> Result<i64, Errno> {
        let c = st.containers.get(&fd.0).ok_or(Errno::Ebadf)?;
        if !c.enabled {
            return Err(Errno::Eperm);
        }
        let a = DmaMap::read(arg)?;
        if (a.argsz as usize) < DmaMap::MINSZ {
            return Err(Errno::Einval);
        }
        let rw = uapi::VFIO_DMA_MAP_FLAG_READ | uapi::VFIO_DMA_MAP_FLAG_WRITE;
        if a.flags & !rw != 0 {
            return Err(Errno::Einval);
        }
        self.default_window(st, fd)?;
        let c = st.containers.get(&fd.0).ok_or(Errno::Ebadf)?;
        let num = window_of(c, a.iova).ok_or(Errno::Enxio)?;
        let w = c.windows[num].as_ref().ok_or(Errno::Enxio)?;
        let g = *w.table.tces.geometry();
        let shift = g.page_shift().shift();
        let mask = (1u64 << shift) - 1;
        if a.size & mask != 0 || a.vaddr & mask != 0 {
            return Err(Errno::Einval);
        }
        if a.flags == 0 {
            return Err(Errno::Einval);
        }
        if a.iova & mask != 0 {
            return self.unaligned_iova();
        }
        let perm = TcePerm::from_bits(u64::from(a.flags & rw));
        let first_rel = (a.iova - g.bus_offset().raw()) >> shift;
        let npages = a.size >> shift;
        let limit = match self.profile() {
            KernelProfile::Linux => g.entries(),
            KernelProfile::Strict => (w.requested >> shift).min(g.entries()),
        };
        let fits = npages <= limit.saturating_sub(first_rel);
        let n = if fits {
            npages
        } else if self.profile() == KernelProfile::Strict {
            return Err(if first_rel >= limit {
                Errno::Enxio
            } else {
                Errno::Einval
            });
        } else {
            self.quirk(&format!(
                "MAP of {npages} pages from {:#x} runs past the window: the kernel would write \
                 past the table; {} in-window pages mapped, 0 returned",
                a.iova,
                limit.saturating_sub(first_rel)
            ));
            limit.saturating_sub(first_rel)
        };
        let v2 = c.v2 == Some(true);
        let mm = c.mm.ok_or(Errno::Eperm)?;
        let first = TceIndex(g.first_index().0 + first_rel);
        if self.profile() == KernelProfile::Strict {
            let mut live = false;
            let _ = w.table.tces.for_each_entry(first, n, |_, _| live = true);
            if live {
                return Err(Errno::Ebusy);
            }
        }
        let req = MapReq {
            num,
            mm,
            first,
            n,
            vaddr: a.vaddr,
            perm,
        };
        let r = if v2 {
            self.map_v2(st, fd, req)
        } else {
            self.map_v1(st, fd, req)
        };
        if r.is_ok() {
            self.note(
                EventKind::Map,
                None,
                format!("MAP_DMA iova {:#x} size {:#x} {perm:?}", a.iova, n << shift),
            );
        }
        r
    }

    fn unaligned_iova(&self) -> Result<i64, Errno> {
        match self.profile() {
            KernelProfile::Linux => {
                self.quirk("unaligned iova inside a window: -EINVAL collapsed to 1 by `||`");
                Ok(1)
            }
            KernelProfile::Strict => Err(Errno::Einval),
        }
    }

    fn map_v2(&self, st: &mut State, fd: ContainerFd, req: MapReq) -> Result<i64, Errno> {
        let MapReq {
            num,
            mm,
            first,
            n,
            vaddr,
            perm,
        } = req;
        let State {
            containers, procs, ..
        } = st;
        let c = containers.get_mut(&fd.0).ok_or(Errno::Ebadf)?;
        let w = c.windows[num].as_mut().ok_or(Errno::Enxio)?;
        let shift = w.table.tces.geometry().page_shift().shift();
        let p = procs.get_mut(&mm).ok_or(Errno::Einval)?;
        // Fast path: the whole range in one region with pages at least as large, and no
        // live entry to replace (this container is the table's only writer, so a read-only
        // scan is enough): two bulk writes and one use count.
        let end = vaddr.checked_add(n << shift).ok_or(Errno::Einval)?;
        let whole = p.regions.iter().position(|r| {
            r.as_ref()
                .is_some_and(|r| vaddr >= r.ua && end <= r.ua + r.size && r.page_shift >= shift)
        });
        if let (Some(id), Some(u)) = (whole, w.ua.as_ref()) {
            let mut live = false;
            if w.live > 0 {
                let _ = w.table.tces.for_each_entry(first, n, |_, _| live = true);
            }
            if !live {
                if let Some(r) = p.regions[id].as_mut() {
                    let hpa = r.hpa + (vaddr - r.ua);
                    w.table
                        .tces
                        .put_linear(first, n, hpa, perm)
                        .map_err(|_| Errno::Enomem)?;
                    if u.put_linear(first, n, vaddr, TcePerm::NONE).is_err() {
                        let _ = w.table.tces.clear_exclusive_with(first, n, |_, _| {});
                        return Err(Errno::Enomem);
                    }
                    r.mapped += n;
                    w.live += n;
                    return Ok(0);
                }
            }
        }
        let r = self.map_v2_each(w, p, req, shift);
        w.live = w.table.tces.count_mapped();
        r
    }

    /// MAP_DMA (v2) entry by entry: any mix of regions, replacing live entries.
    fn map_v2_each(
        &self,
        w: &mut Window,
        p: &mut Process,
        req: MapReq,
        shift: u32,
    ) -> Result<i64, Errno> {
        let MapReq {
            first,
            n,
            vaddr,
            perm,
            ..
        } = req;
        let mut region: Option<usize> = None;
        for k in 0..n {
            let ua = vaddr + (k << shift);
            let in_region = |r: &Region| ua >= r.ua && ua + (1 << shift) <= r.ua + r.size;
            let id = match region.filter(|id| p.regions[*id].as_ref().is_some_and(in_region)) {
                Some(id) => id,
                None => {
                    let found = p
                        .regions
                        .iter()
                        .position(|r| r.as_ref().is_some_and(&in_region));
                    match found {
                        Some(id) => id,
                        None => {
                            undo(w, p, first, k);
                            return Err(Errno::Einval);
                        }
                    }
                }
            };
            region = Some(id);
            let Some(r) = p.regions[id].as_mut() else {
                undo(w, p, first, k);
                return Err(Errno::Einval);
            };
            if r.page_shift < shift {
                undo(w, p, first, k);
                return Err(Errno::Einval);
            }
            let hpa = r.hpa + (ua - r.ua);
            let idx = TceIndex(first.0 + k);
            let old = match w.table.tces.exchange_no_kill(idx, Tce::new(hpa, perm)) {
                Ok(o) => o,
                Err(_) => {
                    undo(w, p, first, k);
                    return Err(Errno::Enomem);
                }
            };
            r.mapped += 1;
            if let Some(u) = &w.ua {
                if !old.is_empty() {
                    // Silently replaced (linux): release the old entry's region use.
                    p.unuse(u.get(idx).map_or(0, |e| e.0));
                }
                let _ = u.store_no_kill(idx, Tce(ua));
            }
        }
        w.table.tces.kill(first, n);
        Ok(0)
    }

    fn map_v1(&self, st: &mut State, fd: ContainerFd, req: MapReq) -> Result<i64, Errno> {
        let r = self.map_v1_pin(st, fd, req);
        if let Some(w) = st
            .containers
            .get_mut(&fd.0)
            .and_then(|c| c.windows[req.num].as_mut())
        {
            w.live = w.table.tces.count_mapped();
        }
        r
    }

    /// MAP_DMA (v1): pin and map entry by entry.
    fn map_v1_pin(&self, st: &mut State, fd: ContainerFd, req: MapReq) -> Result<i64, Errno> {
        let MapReq {
            num,
            mm,
            first,
            n,
            vaddr,
            perm,
        } = req;
        let State {
            containers, procs, ..
        } = st;
        let c = containers.get_mut(&fd.0).ok_or(Errno::Ebadf)?;
        let p = procs.get(&mm).ok_or(Errno::Efault)?;
        let w = c.windows[num].as_ref().ok_or(Errno::Enxio)?;
        let shift = w.table.tces.geometry().page_shift().shift();
        for k in 0..n {
            let ua = vaddr + (k << shift);
            let Some(v) = p.vmas.iter().find(|v| ua >= v.ua && ua - v.ua < v.len) else {
                undo_v1(c, p, num, first, k);
                return Err(Errno::Efault);
            };
            let hpa = v.hpa + (ua - v.ua);
            // Pinned once per IOMMU page.
            *c.pins.entry(hpa >> v.page_shift).or_default() += 1;
            if v.page_shift < shift {
                match self.profile() {
                    KernelProfile::Linux => self
                        .quirk("v1 MAP: host page smaller than the IOMMU page; its pin is leaked"),
                    KernelProfile::Strict => unpin(&mut c.pins, hpa, v.page_shift),
                }
                undo_v1(c, p, num, first, k);
                return Err(Errno::Eperm);
            }
            let w = c.windows[num].as_ref().ok_or(Errno::Enxio)?;
            match w
                .table
                .tces
                .exchange_no_kill(TceIndex(first.0 + k), Tce::new(hpa, perm))
            {
                Ok(old) if !old.is_empty() => {
                    let old_hpa = old.page_addr(shift);
                    let ps = p.host_page_shift(old_hpa).unwrap_or(shift);
                    unpin(&mut c.pins, old_hpa, ps)
                }
                Ok(_) => {}
                Err(_) => {
                    undo_v1(c, p, num, first, k);
                    return Err(Errno::Enomem);
                }
            }
        }
        if let Some(w) = c.windows[num].as_ref() {
            w.table.tces.kill(first, n);
        }
        Ok(0)
    }

    fn unmap_dma(&self, st: &mut State, fd: ContainerFd, arg: &mut [u8]) -> Result<i64, Errno> {
        let c = st.containers.get(&fd.0).ok_or(Errno::Ebadf)?;
        if !c.enabled {
            return Err(Errno::Eperm);
        }
        let a = DmaUnmap::read(arg)?;
        if (a.argsz as usize) < DmaUnmap::MINSZ || a.flags != 0 {
            return Err(Errno::Einval);
        }
        self.default_window(st, fd)?;
        let c = st.containers.get(&fd.0).ok_or(Errno::Ebadf)?;
        let num = window_of(c, a.iova).ok_or(Errno::Enxio)?;
        let w = c.windows[num].as_ref().ok_or(Errno::Enxio)?;
        let g = *w.table.tces.geometry();
        let shift = g.page_shift().shift();
        let mask = (1u64 << shift) - 1;
        if a.size & mask != 0 {
            return Err(Errno::Einval);
        }
        if a.iova & mask != 0 {
            return self.unaligned_iova();
        }
        let rel = (a.iova - g.bus_offset().raw()) >> shift;
        let mut n = a.size >> shift;
        if n > g.entries() - rel {
            if self.profile() == KernelProfile::Strict {
                return Err(Errno::Einval);
            }
            self.quirk("UNMAP runs past the window: only the first page was range-checked");
            n = g.entries() - rel;
        }
        let State {
            containers, procs, ..
        } = st;
        let c = containers.get_mut(&fd.0).ok_or(Errno::Ebadf)?;
        clear_window(c, procs, num, Some((TceIndex(g.first_index().0 + rel), n)));
        self.note(
            EventKind::Unmap,
            None,
            format!("UNMAP_DMA iova {:#x} size {:#x}", a.iova, n << shift),
        );
        Ok(0)
    }

    // ---- views ----

    /// The windows of a container.
    pub fn windows(&self, fd: ContainerFd) -> Vec<WindowView> {
        let st = lock(&self.state);
        let Some(c) = st.containers.get(&fd.0) else {
            return Vec::new();
        };
        c.windows
            .iter()
            .enumerate()
            .filter_map(|(i, w)| {
                let w = w.as_ref()?;
                let g = w.table.tces.geometry();
                Some(WindowView {
                    num: i,
                    start: w.table.start(),
                    size: w.table.window_size(),
                    page_size: g.page_shift().size(),
                    levels: g.levels(),
                    mapped: w.table.tces.count_mapped(),
                })
            })
            .collect()
    }

    /// Pins held by a v1 container.
    pub fn pinned_pages(&self, fd: ContainerFd) -> u64 {
        lock(&self.state)
            .containers
            .get(&fd.0)
            .map_or(0, |c| c.pins.values().map(|n| u64::from(*n)).sum())
    }

    /// Live mappings of `mm`'s preregistered regions, in registration order.
    pub fn region_mapped(&self, mm: Mm) -> Vec<u64> {
        lock(&self.state).procs.get(&mm).map_or_else(Vec::new, |p| {
            p.regions.iter().flatten().map(|r| r.mapped).collect()
        })
    }

    /// Cross-checks VFIO's own bookkeeping: every window's live count matches its table,
    /// and every preregistered region's use count matches the TCEs that point into it
    /// (over all containers of its process). Each string names a mismatch.
    pub fn audit(&self) -> Vec<String> {
        let st = lock(&self.state);
        let mut out = Vec::new();
        let mut uses: HashMap<(Mm, usize), u64> = HashMap::new();
        for (fd, c) in &st.containers {
            for (i, w) in c.windows.iter().enumerate() {
                let Some(w) = w else { continue };
                let mapped = w.table.tces.count_mapped();
                if w.live != mapped {
                    out.push(format!(
                        "container {fd} window {i}: live count {} but {mapped} TCEs",
                        w.live
                    ));
                }
                let (Some(u), Some(mm)) = (&w.ua, c.mm) else {
                    continue;
                };
                let Some(p) = st.procs.get(&mm) else { continue };
                let g = *u.geometry();
                let _ = u.for_each_entry(g.first_index(), g.entries(), |_, ua| {
                    if let Some(id) = p.regions.iter().position(|r| {
                        r.as_ref()
                            .is_some_and(|r| ua.0 >= r.ua && ua.0 < r.ua + r.size)
                    }) {
                        *uses.entry((mm, id)).or_default() += 1;
                    }
                });
            }
        }
        for (mm, p) in &st.procs {
            for (id, r) in p.regions.iter().enumerate() {
                let Some(r) = r else { continue };
                let counted = uses.get(&(*mm, id)).copied().unwrap_or(0);
                if r.mapped != counted {
                    out.push(format!(
                        "region {:#x}+{:#x}: use count {} but {counted} TCEs point into it",
                        r.ua, r.size, r.mapped
                    ));
                }
            }
        }
        out
    }

    /// Whether the container's default window is still to be created.
    pub fn default_window_pending(&self, fd: ContainerFd) -> bool {
        lock(&self.state)
            .containers
            .get(&fd.0)
            .is_some_and(|c| c.def_window_pending)
    }
}

fn window_of(c: &Container, iova: u64) -> Option<usize> {
    c.windows
        .iter()
        .position(|w| w.as_ref().is_some_and(|w| w.table.contains(iova)))
}

fn unpin(pins: &mut HashMap<u64, u32>, hpa: u64, page_shift: u32) {
    let key = hpa >> page_shift;
    if let Some(n) = pins.get_mut(&key) {
        *n -= 1;
        if *n == 0 {
            pins.remove(&key);
        }
    }
}

/// Undoes the first `k` entries a failed v2 MAP wrote.
fn undo(w: &mut Window, p: &mut Process, first: TceIndex, k: u64) {
    for j in 0..k {
        let idx = TceIndex(first.0 + j);
        if let Ok(old) = w.table.tces.exchange_no_kill(idx, Tce::EMPTY) {
            if !old.is_empty() {
                let ua =
                    w.ua.as_ref()
                        .and_then(|u| u.get(idx).ok())
                        .map_or(0, |e| e.0);
                if let Some(r) = p
                    .regions
                    .iter_mut()
                    .flatten()
                    .find(|r| ua >= r.ua && ua < r.ua + r.size)
                {
                    r.mapped = r.mapped.saturating_sub(1);
                }
            }
        }
        if let Some(u) = &w.ua {
            let _ = u.store_no_kill(idx, Tce::EMPTY);
        }
    }
    if k > 0 {
        w.table.tces.kill(first, k);
    }
}

fn undo_v1(c: &mut Container, p: &Process, num: usize, first: TceIndex, k: u64) {
    let Some(w) = c.windows[num].as_ref() else {
        return;
    };
    let shift = w.table.tces.geometry().page_shift().shift();
    let table = w.table.clone();
    let _ = table.tces.clear_exclusive_with(first, k, |_, old| {
        let hpa = old.page_addr(shift);
        unpin(&mut c.pins, hpa, p.host_page_shift(hpa).unwrap_or(shift));
    });
}

/// `tce_iommu_clear`: clears `range` (or the whole window), releasing what each old
/// entry held (v1 pins, v2 region uses), then one kill.
fn clear_window(
    c: &mut Container,
    procs: &mut HashMap<Mm, Process>,
    num: usize,
    range: Option<(TceIndex, u64)>,
) {
    let mm = c.mm;
    let Some(w) = c.windows[num].as_ref() else {
        return;
    };
    let g = *w.table.tces.geometry();
    let (first, n) = range.unwrap_or((g.first_index(), g.entries()));
    let shift = g.page_shift().shift();
    let table = w.table.clone();
    let pins = &mut c.pins;
    let ua_table = w.ua.as_ref();
    let mut process = mm.and_then(|m| procs.get_mut(&m));
    if let Some(u) = ua_table {
        // v2: clear the TCEs, then the user addresses beside them, each region losing one
        // use per entry (the last region found is remembered: ranges are usually one).
        // Every live TCE has its user address beside it: the TCEs are zeroed without a
        // read, and the user-address pass counts and releases what was mapped.
        let _ = table.tces.zero_exclusive(first, n);
        // The user addresses come back as runs of consecutive pages; each run is charged to
        // the regions it lies in.
        let page = 1u64 << shift;
        let cleared = u.clear_exclusive_runs(first, n, |head, len| {
            let Some(p) = process.as_deref_mut() else {
                return;
            };
            let (mut ua, mut left) = (head.0, len);
            while left > 0 {
                let Some(r) = p
                    .regions
                    .iter_mut()
                    .flatten()
                    .find(|r| ua >= r.ua && ua < r.ua + r.size)
                else {
                    // Not in any region (cannot happen for entries MAP wrote): skip a page.
                    ua = ua.wrapping_add(page);
                    left -= 1;
                    continue;
                };
                let k = ((r.ua + r.size - ua) / page).clamp(1, left);
                r.mapped = r.mapped.saturating_sub(k);
                ua = ua.wrapping_add(k * page);
                left -= k;
            }
        });
        if let (Some(w), Ok(k)) = (c.windows[num].as_mut(), cleared) {
            w.live = w.live.saturating_sub(k);
        }
        return;
    }
    let cleared = table.tces.clear_exclusive_with(first, n, |_, old| {
        let hpa = old.page_addr(shift);
        let ps = process.as_deref().and_then(|p| p.host_page_shift(hpa));
        unpin(pins, hpa, ps.unwrap_or(shift));
    });
    if let (Some(w), Ok(st)) = (c.windows[num].as_mut(), cleared) {
        w.live = w.live.saturating_sub(st.cleared);
    }
}

/// Drops one user of a region; the last frees it and returns its charge.
fn put_region(procs: &mut HashMap<Mm, Process>, mm: Mm, id: usize, page_shift: u32) {
    let Some(p) = procs.get_mut(&mm) else {
        return;
    };
    let Some(slot) = p.regions.get_mut(id) else {
        return;
    };
    let Some(r) = slot.as_mut() else {
        return;
    };
    r.users = r.users.saturating_sub(1);
    if r.users == 0 && r.mapped == 0 {
        let pages = r.size >> page_shift;
        *slot = None;
        p.locked_pages = p.locked_pages.saturating_sub(pages);
    }
}
