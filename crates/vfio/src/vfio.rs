//! VFIO on one machine (drivers/vfio/vfio_main.c): its settings, its state, the
//! processes it serves, and device registration.
//!
//! One lock guards all of VFIO's state (the kernel's container, group and driver locks,
//! taken in that order, collapse into it). It is taken before any call into the machine
//! (core, group, PE): VFIO → core → group → PE → table.

use crate::container::Container;
use crate::group::VfioGroup;
use crate::mm::{Charge, Mm, Process, Vma};
use crate::KernelProfile;
use iommu_core::{Cap, DeviceId, Errno, EventKind};
use spapr_platform::PowerNv;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

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

/// Everything VFIO holds, under one lock.
#[derive(Default)]
pub(crate) struct State {
    pub(crate) next_fd: u32,
    pub(crate) containers: HashMap<u32, Container>,
    pub(crate) groups: HashMap<u32, VfioGroup>,
    /// Emulated-IOMMU groups' files (no PE behind them).
    pub(crate) emulated: HashMap<u32, crate::emulated::EmulatedGroup>,
    pub(crate) procs: HashMap<Mm, Process>,
    pub(crate) next_user_hpa: u64,
    /// Counts that would have gone below zero (see [`crate::mm::decrement`]).
    pub(crate) imbalances: Vec<String>,
}

impl State {
    pub(crate) fn alloc_fd(&mut self) -> u32 {
        self.next_fd += 1;
        self.next_fd
    }
}

/// VFIO on one PowerNV machine.
///
/// Lock order (this crate): `state` (processes, groups, containers) → `config` (a leaf,
/// read briefly) → the machine's locks in the platform's own order (core → group → PE →
/// table). The platform never calls back into VFIO, so no cycle can form; every ioctl runs
/// under `state`, which is what makes a container's bookkeeping and its tables change
/// together.
pub struct Vfio {
    pub(crate) machine: Arc<PowerNv>,
    config: Mutex<VfioConfig>,
    pub(crate) state: Mutex<State>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Where user memory comes from in the machine's RAM.
const USER_MEMORY: u64 = 1 << 32;

impl Vfio {
    /// VFIO on `machine`.
    pub fn new(machine: Arc<PowerNv>, config: VfioConfig) -> Self {
        machine
            .env()
            .set_strict(config.profile == KernelProfile::Strict);
        if config.eeh {
            machine.env().set_eeh(true);
        }
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
        self.machine.env().set_strict(p == KernelProfile::Strict);
    }
    pub(crate) fn profile(&self) -> KernelProfile {
        lock(&self.config).profile
    }
    pub(crate) fn page_shift(&self) -> u32 {
        self.machine.env().host_page_shift
    }

    pub(crate) fn note(&self, kind: EventKind, group: Option<String>, detail: String) {
        self.machine.flush();
        self.machine.core().record(kind, None, group, detail);
    }

    pub(crate) fn quirk(&self, what: &str) {
        self.note(EventKind::Quirk, None, format!("linux quirk: {what}"));
    }

    /// `account_locked_vm` for `mm`: a charge of `pages`, or -ENOMEM past the limit.
    pub(crate) fn charge(&self, st: &mut State, mm: Mm, pages: u64) -> Result<Charge, Errno> {
        let cfg = self.config();
        let limit = (!cfg.cap_ipc_lock).then_some(cfg.memlock_limit >> self.page_shift());
        let p = st.procs.entry(mm).or_default();
        Charge::take(&p.locked, pages, limit)
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
        let v = st.procs.get(&mm)?.vma(ua)?;
        Some(v.hpa + (ua - v.ua))
    }

    /// Pages of `mm` charged against its locked-memory limit.
    pub fn locked_pages(&self, mm: Mm) -> u64 {
        lock(&self.state)
            .procs
            .get(&mm)
            .map_or(0, |p| p.locked.pages())
    }

    /// Pages of `mm` the `linux` profile left charged for good (each one a traced quirk).
    pub fn leaked_pages(&self, mm: Mm) -> u64 {
        lock(&self.state)
            .procs
            .get(&mm)
            .map_or(0, |p| p.locked.leaked())
    }

    // ---- devices ----

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
}
