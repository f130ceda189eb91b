//! A whole PowerNV machine: the IOMMU core, PHBs with their PEs and iommu instances, RAM,
//! PCI devices with kernel drivers that map buffers through the DMA API, device DMA, the
//! boot sequence of kernel.md 2.1, and a snapshot of it all for `show`.

use crate::dma::{DmaMapError, DmaSession};
use crate::error::PlatformError;
use crate::iommu::SpaprTceIommu;
use crate::pe::{DmaFault, PciDev, Pe, PeLink, PeScope, Tve1, MAX_WINDOWS};
use crate::phb::{Phb, PhbConfig, PhbModel};
use crate::ram::Ram;
use crate::{Design, Env};
use iommu_core::{
    BusType, Core, DeviceClaim, DeviceId, DeviceInfo, DomainType, Errno, EventKind, GroupClaim,
    OwnerCookie, Violation,
};
use spapr_tce::{Access, DmaDirection, MappedRun};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// A PCI function to put on the machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceConfig {
    /// Name ("nic0").
    pub name: String,
    /// PHB index.
    pub phb: u32,
    /// Bus number.
    pub bus: u8,
    /// Device/function.
    pub devfn: u8,
    /// DMA mask its driver sets (32..=64 bits).
    pub dma_mask_bits: u32,
    /// `Some` for an SR-IOV VF, which gets a VF PE: how the function resets.
    pub vf: Option<crate::eeh::VfReset>,
}

impl DeviceConfig {
    /// A device.
    pub fn new(name: &str, phb: u32, bus: u8, devfn: u8, dma_mask_bits: u32) -> Self {
        Self {
            name: name.to_string(),
            phb,
            bus,
            devfn,
            dma_mask_bits,
            vf: None,
        }
    }
    fn bdfn(&self) -> u16 {
        (u16::from(self.bus) << 8) | u16::from(self.devfn)
    }
}

/// How a machine is described.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PowerNvConfig {
    /// RAM bytes.
    pub ram_size: u64,
    /// Host `PAGE_SHIFT` (12 or 16).
    pub host_page_shift: u32,
    /// Which version of the ops.
    pub design: Design,
    /// `iommu=nobypass`.
    pub bypass_disabled: bool,
    /// PHBs, index = position.
    pub phbs: Vec<PhbConfig>,
    /// Devices present at boot.
    pub devices: Vec<DeviceConfig>,
}

impl PowerNvConfig {
    /// The seed story's POWER9 box: 8 GiB, 64K pages, two PHB4s. PHB 0: a NIC with a 32-bit
    /// mask (bus 1, PE 1, DMA through window 0) and an NVMe drive with a 64-bit mask (bus 2,
    /// PE 2, DMA through bypass). PHB 1: a GPU (bus 1, PE 1).
    pub fn seed() -> Self {
        Self {
            ram_size: 8 << 30,
            host_page_shift: 16,
            design: Design::Fixed,
            bypass_disabled: false,
            phbs: vec![
                PhbConfig::new(
                    PhbModel::Phb4,
                    vec![(1, PeScope::Bus(1)), (2, PeScope::Bus(2))],
                ),
                PhbConfig::new(PhbModel::Phb4, vec![(1, PeScope::Bus(1))]),
            ],
            devices: vec![
                DeviceConfig::new("nic0", 0, 1, 0, 32),
                DeviceConfig::new("nvme0", 0, 2, 0, 64),
                DeviceConfig::new("gpu0", 1, 1, 0, 64),
            ],
        }
    }

    /// Checks the description; the first problem found.
    pub fn validate(&self) -> Result<(), PlatformError> {
        if self.ram_size < (1 << 20) || self.ram_size > 1 << 46 {
            return Err(PlatformError::RamSize(self.ram_size));
        }
        if !matches!(self.host_page_shift, 12 | 16) {
            return Err(PlatformError::HostPageShift(self.host_page_shift));
        }
        if self.phbs.len() > 256 {
            return Err(PlatformError::TooManyPhbs(self.phbs.len()));
        }
        for (i, p) in self.phbs.iter().enumerate() {
            if p.m32_pci_base == 0 || p.m32_pci_base > 1 << 32 {
                return Err(PlatformError::M32Base {
                    phb: i,
                    base: p.m32_pci_base,
                });
            }
            let mut seen = std::collections::BTreeSet::new();
            for (n, _) in &p.pes {
                if *n >= 4096 {
                    return Err(PlatformError::PeNumber { phb: i, pe: *n });
                }
                if !seen.insert(*n) {
                    return Err(PlatformError::PeTwice { phb: i, pe: *n });
                }
            }
        }
        let mut names = std::collections::BTreeSet::new();
        let mut addrs = std::collections::BTreeSet::new();
        for d in &self.devices {
            if !names.insert(d.name.clone()) {
                return Err(PlatformError::NameTwice(d.name.clone()));
            }
            if !addrs.insert((d.phb, d.bdfn())) {
                return Err(PlatformError::AddressTwice(d.name.clone()));
            }
            if d.phb as usize >= self.phbs.len() {
                return Err(PlatformError::NoPhb {
                    name: d.name.clone(),
                    phb: d.phb,
                });
            }
            if !(32..=64).contains(&d.dma_mask_bits) {
                return Err(PlatformError::DmaMask {
                    name: d.name.clone(),
                    bits: d.dma_mask_bits,
                });
            }
        }
        Ok(())
    }
}

/// Initcalls of kernel.md 2.1, in the order the series set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Initcall {
    /// `postcore_initcall(pci_driver_init)`: the PCI bus type exists.
    PciDriverInit,
    /// `postcore_initcall_sync(spapr_tce_setup_phb_iommus_initcall)`: one iommu_device
    /// per PHB.
    SetupPhbIommus,
    /// `subsys_initcall(iommu_subsys_init)`: the core's bus notifiers.
    IommuSubsysInit,
    /// `subsys_initcall_sync(pcibios_init)`: scan, set up PEs and groups, probe devices.
    PcibiosInit,
    /// `pcibios_init` as before the series: devices join their PE's group with
    /// `iommu_group_add_device` directly, skipping the probe that links them to the PHB's
    /// IOMMU instance (so `capable` is false and ownership changes fail).
    PcibiosInitLegacy,
}

impl Initcall {
    /// The right order.
    pub const ORDER: [Initcall; 4] = [
        Initcall::PciDriverInit,
        Initcall::SetupPhbIommus,
        Initcall::IommuSubsysInit,
        Initcall::PcibiosInit,
    ];
}

/// What a boot did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BootReport {
    /// One line per initcall and per problem.
    pub lines: Vec<String>,
    /// Devices that ended without an iommu group (unusable by VFIO).
    pub ungrouped: Vec<String>,
}

#[derive(Debug, Default)]
struct BootFlags {
    pci_bus: bool,
    iommus: bool,
    subsys: bool,
    scanned: bool,
    legacy: bool,
}

/// A buffer a kernel driver allocated and mapped for DMA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DriverBuffer {
    /// Real address.
    pub phys: u64,
    /// Bus address the device uses.
    pub dma: u64,
    /// Bytes.
    pub len: u64,
}

/// One mapped window, for `show`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WindowView {
    /// 0 or 1.
    pub num: usize,
    /// TVE index.
    pub tve: u32,
    /// First bus address.
    pub start: u64,
    /// Bytes.
    pub size: u64,
    /// IOMMU page size.
    pub page_size: u64,
    /// Levels.
    pub levels: u32,
    /// Bytes of TCE levels allocated.
    pub table_bytes: u64,
    /// Whether the kernel allocator owns it (else a user's table).
    pub kernel: bool,
    /// Mapped runs.
    pub runs: Vec<MappedRun>,
}

/// One PE, for `show`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeView {
    /// PE number.
    pub number: u32,
    /// Group name, if it has a group.
    pub group: Option<String>,
    /// Domain type the group is attached to.
    pub domain: Option<DomainType>,
    /// DMA owner.
    pub owner: Option<OwnerCookie>,
    /// `owner_cnt`.
    pub owner_cnt: u32,
    /// Devices: name, address, driver, has table base, bypass.
    pub devices: Vec<(String, String, Option<String>, bool, bool)>,
    /// Windows.
    pub windows: Vec<WindowView>,
    /// TVE#1 state.
    pub tve1: Tve1,
    /// Range kills, PE-wide kills.
    pub kills: (u64, u64),
}

/// One PHB, for `show`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PhbView {
    /// Index.
    pub index: u32,
    /// Model.
    pub model: PhbModel,
    /// iommu_device name.
    pub iommu: String,
    /// PEs.
    pub pes: Vec<PeView>,
}

/// A PowerNV machine.
pub struct PowerNv {
    core: Core,
    env: Arc<Env>,
    ram: Arc<Ram>,
    phbs: Vec<Arc<Phb>>,
    design: Design,
    pending: Mutex<Vec<DeviceConfig>>,
    devs: Mutex<BTreeMap<DeviceId, Arc<PciDev>>>,
    buffers: Mutex<HashMap<DeviceId, Vec<DriverBuffer>>>,
    sessions: Mutex<HashMap<DeviceId, DmaSession>>,
    next_kbuf: AtomicU64,
    boot: Mutex<BootFlags>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Where kernel driver buffers are carved from.
const KERNEL_BUFFERS: u64 = 0x1000_0000;

impl PowerNv {
    /// A machine before boot: PHBs discovered (`hose_list`), nothing registered.
    pub fn new(config: PowerNvConfig) -> Result<Self, PlatformError> {
        config.validate()?;
        let env = Arc::new(Env::new(
            config.host_page_shift,
            config.ram_size,
            config.bypass_disabled,
        ));
        let phbs = config
            .phbs
            .iter()
            .enumerate()
            .map(|(i, pc)| {
                let i = i as u32;
                let eeh = Arc::new(crate::eeh::EehMutex::new(crate::eeh::PhbEehState::default()));
                let pes = pc
                    .pes
                    .iter()
                    .map(|(n, scope)| {
                        let mut pe = Pe::new(
                            *n,
                            *scope,
                            i,
                            pc.model,
                            pc.tce32_size.unwrap_or(pc.m32_pci_base),
                            env.clone(),
                            eeh.clone(),
                        );
                        pe.xchg_no_kill = pc.xchg_no_kill;
                        pe.create_table = pc.create_table;
                        pe.ddw_table = pc.ddw_table;
                        Arc::new(pe)
                    })
                    .collect();
                Arc::new(Phb {
                    index: i,
                    pci_domain: i,
                    config: pc.clone(),
                    pes,
                    eeh,
                })
            })
            .collect();
        Ok(Self {
            core: Core::without_buses(),
            ram: Arc::new(Ram::new(config.ram_size)),
            env,
            phbs,
            design: config.design,
            pending: Mutex::new(config.devices),
            devs: Mutex::new(BTreeMap::new()),
            buffers: Mutex::new(HashMap::new()),
            sessions: Mutex::new(HashMap::new()),
            next_kbuf: AtomicU64::new(KERNEL_BUFFERS),
            boot: Mutex::new(BootFlags::default()),
        })
    }

    /// A machine booted in the right order.
    pub fn booted(config: PowerNvConfig) -> Result<Self, PlatformError> {
        let m = Self::new(config)?;
        m.boot(&Initcall::ORDER);
        Ok(m)
    }

    /// The IOMMU core.
    pub fn core(&self) -> &Core {
        &self.core
    }
    /// Machine parameters (and OPAL error injection).
    pub fn env(&self) -> &Arc<Env> {
        &self.env
    }
    /// RAM.
    pub fn ram(&self) -> &Arc<Ram> {
        &self.ram
    }
    /// PHBs.
    pub fn phbs(&self) -> &[Arc<Phb>] {
        &self.phbs
    }
    /// Which design runs.
    pub fn design(&self) -> Design {
        self.design
    }

    /// Moves the platform's notes into the core's trace.
    pub fn flush(&self) {
        for n in self.env.take_notes() {
            self.core.record(n.kind, n.device, n.group, n.detail);
        }
    }

    fn note(&self, kind: EventKind, device: Option<&str>, detail: String) {
        self.env
            .note(kind, device.map(str::to_string), None, detail);
    }

    /// Runs `calls` in order (kernel.md 2.1). A wrong order is carried out as the kernel
    /// would, and the report says what went wrong.
    pub fn boot(&self, calls: &[Initcall]) -> BootReport {
        let mut r = BootReport::default();
        for c in calls {
            match c {
                Initcall::PciDriverInit => {
                    self.core.register_bus(BusType::Pci);
                    self.core.register_bus(BusType::Platform);
                    lock(&self.boot).pci_bus = true;
                    r.lines
                        .push("pci_driver_init: PCI bus type registered".into());
                }
                Initcall::SetupPhbIommus => {
                    if !lock(&self.boot).pci_bus {
                        r.lines.push(
                            "spapr_tce_setup_phb_iommus_initcall: PCI bus type not registered; \
                             the core cannot probe the PCI bus: iommu_device_register refused"
                                .into(),
                        );
                        continue;
                    }
                    for phb in &self.phbs {
                        let ops = Arc::new(SpaprTceIommu::new(Arc::downgrade(phb), self.design));
                        self.core.register_instance(&phb.iommu_name(), ops);
                    }
                    lock(&self.boot).iommus = true;
                    r.lines.push(format!(
                        "spapr_tce_setup_phb_iommus_initcall: {} iommu devices registered",
                        self.phbs.len()
                    ));
                }
                Initcall::IommuSubsysInit => {
                    lock(&self.boot).subsys = true;
                    r.lines
                        .push("iommu_subsys_init: bus notifiers installed".into());
                }
                Initcall::PcibiosInit | Initcall::PcibiosInitLegacy => {
                    let legacy = *c == Initcall::PcibiosInitLegacy;
                    lock(&self.boot).legacy = legacy;
                    let devices = std::mem::take(&mut *lock(&self.pending));
                    let n = devices.len();
                    for d in devices {
                        if let Err(e) = self.scan_device(&d) {
                            r.lines.push(format!("pcibios_init: {}: {e}", d.name));
                        }
                    }
                    lock(&self.boot).scanned = true;
                    r.lines.push(format!(
                        "pcibios_init{}: {n} devices scanned",
                        if legacy {
                            " (iommu_group_add_device)"
                        } else {
                            ""
                        }
                    ));
                }
            }
        }
        for d in self.core.devices() {
            if d.group.is_none() {
                r.ungrouped.push(d.info.name.clone());
            }
        }
        self.flush();
        r
    }

    /// `pcibios_scan_phb` + `pci_bus_add_devices` for one device: add it (the bus
    /// notifier probes it, which fails while its PE has no group), set up its PE's DMA
    /// (`pnv_pci_ioda_dma_dev_setup`), then `iommu_add_device`.
    fn scan_device(&self, d: &DeviceConfig) -> Result<DeviceId, PlatformError> {
        let phb = self
            .phbs
            .get(d.phb as usize)
            .ok_or_else(|| PlatformError::NoPhb {
                name: d.name.clone(),
                phb: d.phb,
            })?
            .clone();
        if self.core.find_device(&d.name).is_some() {
            return Err(PlatformError::NameTwice(d.name.clone()));
        }
        // The same checks as the [machine] table's: one function per address.
        let addr = DeviceInfo::pci(&d.name, phb.pci_domain, d.bus, d.devfn).addr;
        if self.core.find_device_at(addr).is_some() {
            return Err(PlatformError::AddressTwice(d.name.clone()));
        }
        let (subsys, iommus, legacy) = {
            let b = lock(&self.boot);
            (b.subsys, b.iommus, b.legacy)
        };
        let id = self
            .core
            .add_device(DeviceInfo::pci(&d.name, phb.pci_domain, d.bus, d.devfn));
        let Some(pe) = phb.pe_for(d.bdfn()) else {
            self.flush();
            return Err(PlatformError::NoPe);
        };
        if let Some(how) = d.vf {
            pe.eeh_set_vf(how);
        }
        let dev = Arc::new(PciDev {
            id,
            name: d.name.clone(),
            bdfn: d.bdfn(),
            dma_mask_bits: d.dma_mask_bits,
            table_base: Default::default(),
            bypass: AtomicBool::new(false),
            pe: Arc::downgrade(&pe),
            counters: pe.counters.clone(),
        });
        {
            let mut st = pe.lock();
            if !st.dma_setup_done {
                // `pnv_pci_ioda2_setup_dma_pe`: default window, bypass, then the group.
                let _ = pe.setup_default_config(&mut st);
                st.dma_setup_done = true;
            }
            if st.group.is_none() {
                let weak = Arc::downgrade(&pe);
                let env = self.env.clone();
                let name = pe.group_name();
                let release_name = name.clone();
                st.group = Some(self.core.alloc_group(
                    Some(name),
                    Box::new(PeLink(weak)),
                    Some(Box::new(move || {
                        env.note(
                            EventKind::Ownership,
                            None,
                            Some(release_name),
                            "group released".into(),
                        )
                    })),
                ));
            }
            // `set_iommu_table_base`: the kernel's table only; a user's table in slot 0 (a
            // PE handed to user space) is never a kernel DMA table.
            dev.set_table_base(Pe::kernel_table_for(&st, dev.dma_mask_bits));
            st.devices.push(dev.clone());
        }
        lock(&self.devs).insert(id, dev);
        let group = pe.lock().group.clone();
        let result = if legacy {
            match group {
                Some(g) => match self.core.group_add_device(&g, id) {
                    Ok(()) | Err(Errno::Ebusy) => Ok(id),
                    Err(e) => Err(PlatformError::GroupAddDevice(e)),
                },
                None => Err(PlatformError::NoGroup),
            }
        } else if !subsys {
            self.note(
                EventKind::ProbeFailed,
                Some(&d.name),
                "iommu_add_device: the iommu core is not initialised yet (pcibios_init ran \
                 before iommu_subsys_init)"
                    .into(),
            );
            Err(PlatformError::CoreNotReady)
        } else if !iommus {
            self.note(
                EventKind::ProbeFailed,
                Some(&d.name),
                "iommu_add_device: no iommu_device for its PHB".into(),
            );
            Err(PlatformError::NoIommuDevice)
        } else {
            match self.iommu_add_device(id) {
                Ok(()) | Err(Errno::Ebusy) => Ok(id),
                Err(e) => Err(PlatformError::AddDevice(e)),
            }
        };
        self.flush();
        result
    }

    /// `iommu_add_device`: -ENOENT for a device the core does not know, -EBUSY if it
    /// already has a group (the bus notifier's probe found it), else an explicit probe.
    pub fn iommu_add_device(&self, dev: DeviceId) -> Result<(), Errno> {
        let r = match self.core.device_group(dev) {
            Err(_) => Err(Errno::Enoent),
            Ok(Some(_)) => {
                let name = self.core.device_info(dev).map(|i| i.name).ok();
                self.note(
                    EventKind::ProbeFailed,
                    name.as_deref(),
                    "iommu_add_device: already has a group (-EBUSY, harmless)".into(),
                );
                Err(Errno::Ebusy)
            }
            Ok(None) => self.core.probe_device(dev),
        };
        self.flush();
        r
    }

    /// Hot-adds a device after boot.
    pub fn add_device(&self, d: &DeviceConfig) -> Result<DeviceId, PlatformError> {
        if !(32..=64).contains(&d.dma_mask_bits) {
            return Err(PlatformError::DmaMask {
                name: d.name.clone(),
                bits: d.dma_mask_bits,
            });
        }
        if !lock(&self.boot).scanned {
            lock(&self.pending).push(d.clone());
            return Err(PlatformError::Queued);
        }
        self.scan_device(d)
    }

    /// Hot-removes a device: its driver is unbound (buffers unmapped), it leaves its
    /// group; when the last device of a PE goes, the PE releases its windows and its group
    /// reference (`pnv_ioda_release_pe`), so the group is freed with its last device.
    ///
    /// A device whose group a user owns is not removed (-EBUSY, traced): its driver's
    /// remove (`vfio_unregister_group_dev`) waits until user space lets go, and the
    /// user's windows stay as they are.
    pub fn remove_device(&self, dev: DeviceId) -> Result<(), Errno> {
        let info = self.core.device_info(dev)?;
        if let Some(g) = self.core.device_group(dev)? {
            let v = self.core.group_view(&g);
            if let Some(owner) = v.owner {
                self.note(
                    EventKind::RemoveDevice,
                    Some(&info.name),
                    format!(
                        "removal waits: group {} is owned by {:#x} (vfio_unregister_group_dev); refused",
                        v.name, owner.0
                    ),
                );
                self.flush();
                return Err(Errno::Ebusy);
            }
        }
        if self
            .core
            .devices()
            .iter()
            .any(|d| d.id == dev && d.driver.is_some())
        {
            let _ = self.unbind_driver(dev);
        }
        self.core.remove_device(dev)?;
        let pdev = lock(&self.devs).remove(&dev);
        let mut released = None;
        if let Some(pdev) = pdev {
            if let Some(pe) = pdev.pe() {
                let last = {
                    let mut st = pe.lock();
                    st.devices.retain(|d| d.id != dev);
                    st.devices.is_empty()
                };
                if last {
                    released = pe.release();
                    self.note(
                        EventKind::RemoveDevice,
                        Some(&info.name),
                        format!("last device of PE {}: PE released", pe.number),
                    );
                }
            }
        }
        drop(released);
        self.flush();
        Ok(())
    }

    /// A device by name.
    pub fn device(&self, name: &str) -> Option<DeviceId> {
        self.core.find_device(name)
    }

    /// The platform's view of a device (its DMA API handle).
    pub fn pci_dev(&self, dev: DeviceId) -> Option<Arc<PciDev>> {
        lock(&self.devs).get(&dev).cloned()
    }

    fn pci(&self, dev: DeviceId) -> Result<Arc<PciDev>, Errno> {
        self.pci_dev(dev).ok_or(Errno::Enodev)
    }

    /// Binds a kernel driver: `iommu_device_use_default_domain` (-EBUSY on a user-owned
    /// group), then the driver sets its DMA mask: 64-bit masks go direct through bypass if
    /// the PE has it on (`pnv_pci_ioda_iommu_bypass_supported`).
    pub fn bind_driver(&self, dev: DeviceId, driver: &str) -> Result<(), Errno> {
        let pdev = self.pci(dev)?;
        let r = self.core.bind_driver(dev, driver, false);
        if r.is_ok() {
            let bypass =
                pdev.dma_mask_bits == 64 && pdev.pe().is_some_and(|pe| pe.lock().bypass_enabled);
            pdev.bypass.store(bypass, Ordering::Relaxed);
            lock(&self.sessions).insert(dev, pdev.dma_session());
        }
        self.flush();
        r
    }

    /// The DMA session of the device's bound kernel driver.
    pub fn dma_session(&self, dev: DeviceId) -> Option<DmaSession> {
        lock(&self.sessions).get(&dev).cloned()
    }

    /// Binds a driver that manages DMA itself (vfio-pci): no default-domain use.
    pub fn bind_managed_driver(&self, dev: DeviceId, driver: &str) -> Result<(), Errno> {
        self.pci(dev)?;
        let r = self.core.bind_driver(dev, driver, true);
        self.flush();
        r
    }

    /// Unbinds the driver; a kernel driver unmaps its buffers first.
    pub fn unbind_driver(&self, dev: DeviceId) -> Result<(), Errno> {
        let pdev = self.pci(dev)?;
        let bufs = lock(&self.buffers).remove(&dev).unwrap_or_default();
        let session = lock(&self.sessions).remove(&dev);
        for b in bufs {
            if let Some(s) = &session {
                let _ = s.unmap_page(b.dma, b.len, 0);
            }
            self.note(
                EventKind::Unmap,
                Some(&pdev.name),
                format!("driver unbind: dma {:#x}+{:#x}", b.dma, b.len),
            );
        }
        let r = self.core.unbind_driver(dev);
        pdev.bypass.store(false, Ordering::Relaxed);
        self.flush();
        r
    }

    /// The bound driver allocates `len` bytes of kernel memory and maps them for DMA
    /// (`dma_alloc_coherent`-like). Fails with the DMA API's error, e.g. "table
    /// unavailable" (-ENOMEM) when the device has no table.
    pub fn driver_dma_alloc(
        &self,
        dev: DeviceId,
        len: u64,
        dir: DmaDirection,
    ) -> Result<DriverBuffer, Errno> {
        let pdev = self.pci(dev)?;
        let session = self.dma_session(dev).ok_or(Errno::Enodev)?;
        if len == 0 || len > 1 << 30 {
            return Err(Errno::Einval);
        }
        let phys = self
            .next_kbuf
            .fetch_add(len.next_multiple_of(1 << 16), Ordering::Relaxed);
        if phys + len > self.ram.size() {
            return Err(Errno::Enomem);
        }
        let r = session.map_page(phys, len, dir, 0);
        match r {
            Ok(dma) => {
                let b = DriverBuffer { phys, dma, len };
                lock(&self.buffers).entry(dev).or_default().push(b);
                self.note(
                    EventKind::Map,
                    Some(&pdev.name),
                    format!("dma_map {phys:#x}+{len:#x} -> {dma:#x} ({dir:?})"),
                );
                self.flush();
                Ok(b)
            }
            Err(e) => {
                self.note(
                    EventKind::Map,
                    Some(&pdev.name),
                    format!("dma_map failed: {e}"),
                );
                self.flush();
                Err(e.errno())
            }
        }
    }

    /// The driver frees the buffer it mapped at `dma`.
    pub fn driver_dma_free(&self, dev: DeviceId, dma: u64) -> Result<(), Errno> {
        let pdev = self.pci(dev)?;
        let session = self.dma_session(dev).ok_or(Errno::Einval)?;
        let b = {
            let mut all = lock(&self.buffers);
            let v = all.get_mut(&dev).ok_or(Errno::Einval)?;
            let i = v.iter().position(|b| b.dma == dma).ok_or(Errno::Einval)?;
            v.remove(i)
        };
        let r = session
            .unmap_page(b.dma, b.len, 0)
            .map_err(DmaMapError::errno);
        self.note(
            EventKind::Unmap,
            Some(&pdev.name),
            format!("dma_unmap {:#x}+{:#x}", b.dma, b.len),
        );
        self.flush();
        r
    }

    /// `dma_map_page` on the device's current DMA configuration from `cpu`, traced (a
    /// driver's mapping the machine does not track as a buffer).
    pub fn dma_map(
        &self,
        dev: DeviceId,
        phys: u64,
        len: u64,
        dir: DmaDirection,
        cpu: u32,
    ) -> Result<u64, DmaMapError> {
        let pdev = self.pci(dev).map_err(|_| DmaMapError::Invalid)?;
        let r = pdev.map_page(phys, len, dir, cpu);
        let detail = match &r {
            Ok(a) => format!("dma_map {phys:#x}+{len:#x} -> {a:#x} ({dir:?})"),
            Err(e) => format!("dma_map {phys:#x}+{len:#x} failed: {e}"),
        };
        self.note(EventKind::Map, Some(&pdev.name), detail);
        self.flush();
        r
    }

    /// `dma_unmap_page`, traced.
    pub fn dma_unmap(&self, dev: DeviceId, dma: u64, len: u64) -> Result<(), DmaMapError> {
        let pdev = self.pci(dev).map_err(|_| DmaMapError::Invalid)?;
        let r = pdev.unmap_page(dma, len);
        self.note(
            EventKind::Unmap,
            Some(&pdev.name),
            format!(
                "dma_unmap {dma:#x}+{len:#x}{}",
                if r.is_err() { " refused" } else { "" }
            ),
        );
        self.flush();
        r
    }

    /// Buffers the device's driver holds.
    pub fn driver_buffers(&self, dev: DeviceId) -> Vec<DriverBuffer> {
        lock(&self.buffers).get(&dev).cloned().unwrap_or_default()
    }

    /// Translates one device access, recording a fault in the trace.
    pub fn device_translate(
        &self,
        dev: DeviceId,
        iova: u64,
        access: Access,
    ) -> Result<u64, DmaFault> {
        let r = self
            .pci_dev(dev)
            .and_then(|d| d.pe())
            .ok_or(DmaFault::NoPe)
            .and_then(|pe| pe.translate(iova, access))
            .map(|h| h.0);
        if let Err(f) = &r {
            let name = self.core.device_info(dev).map(|i| i.name).ok();
            self.note(
                EventKind::Fault,
                name.as_deref(),
                format!("{access:?}: {f}"),
            );
            self.flush();
        }
        r
    }

    /// Writes `tce` into entry `entry` (counted from the window's first page) of the
    /// table programmed in window `window` of `dev`'s PE, by no path the kernel has: not
    /// VFIO, not the DMA API, not the allocator. This is fault injection for a kernel bug
    /// (a stray store into a TCE table), so that the checker can be seen judging the
    /// entry by its provenance; with `kill` the PE's TCE cache is killed after it, else
    /// the PHB may go on serving the old entry. Traced. The old entry, or -ENODEV without
    /// a PE, -ENOENT without a table in that window, -EINVAL for an entry past its end.
    pub fn inject_stray_tce(
        &self,
        dev: DeviceId,
        window: usize,
        entry: u64,
        tce: u64,
        kill: bool,
    ) -> Result<u64, Errno> {
        let pe = self.pe_of(dev).ok_or(Errno::Enodev)?;
        let old = pe.stray_tce_write(window, entry, tce, kill)?;
        let name = self.core.device_info(dev).map(|i| i.name).ok();
        self.note(
            EventKind::Injected,
            name.as_deref(),
            format!(
                "stray TCE store outside VFIO and the DMA API: window {window} entry {entry:#x} \
                 {old:#x} -> {tce:#x}{}",
                if kill {
                    ", then a PE-wide kill"
                } else {
                    ", no kill"
                }
            ),
        );
        self.flush();
        Ok(old)
    }

    /// A config-space read of `dev` (a register reading `value`): all-ones while its PE's
    /// config space is blocked by a reset (`EEH_PE_CFG_BLOCKED`: `pnv_eeh_read_config`
    /// answers all-ones, `PCIBIOS_SET_FAILED`). -ENODEV without a PE.
    pub fn device_config_read(&self, dev: DeviceId, value: u32) -> Result<u32, Errno> {
        let pe = self.pe_of(dev).ok_or(Errno::Enodev)?;
        Ok(if pe.eeh().cfg_blocked {
            u32::MAX
        } else {
            value
        })
    }

    /// An MMIO load from `dev`'s BAR (a register reading `value`): all-ones while its PE's
    /// MMIO is frozen by EEH; an all-ones read on a host-owned PE isolates it
    /// (`eeh_dev_check_failure`). -ENODEV without a PE.
    pub fn device_mmio_read(&self, dev: DeviceId, value: u64) -> Result<u64, Errno> {
        let pe = self.pe_of(dev).ok_or(Errno::Enodev)?;
        let v = pe.eeh_mmio_load(value);
        self.flush();
        Ok(v)
    }

    /// The device reads `len` bytes at bus address `iova` (each 4 KiB piece translated).
    pub fn device_read(&self, dev: DeviceId, iova: u64, len: u64) -> Result<Vec<u8>, DmaFault> {
        let mut out = vec![0u8; len.min(1 << 24) as usize];
        let mut done = 0usize;
        while done < out.len() {
            let a = iova.wrapping_add(done as u64);
            let n = ((4096 - (a & 4095)) as usize).min(out.len() - done);
            let hpa = self.device_translate(dev, a, Access::Read)?;
            if let Err(e) = self.ram.read(hpa, &mut out[done..done + n]) {
                return Err(self.ram_fault(dev, e));
            }
            done += n;
        }
        Ok(out)
    }

    /// The device writes `data` at bus address `iova`. Pieces before a fault stay written,
    /// as on hardware.
    pub fn device_write(&self, dev: DeviceId, iova: u64, data: &[u8]) -> Result<(), DmaFault> {
        let mut done = 0usize;
        while done < data.len() {
            let a = iova.wrapping_add(done as u64);
            let n = ((4096 - (a & 4095)) as usize).min(data.len() - done);
            let hpa = self.device_translate(dev, a, Access::Write)?;
            if let Err(e) = self.ram.write(hpa, &data[done..done + n]) {
                return Err(self.ram_fault(dev, e));
            }
            done += n;
        }
        Ok(())
    }

    fn ram_fault(&self, dev: DeviceId, e: crate::ram::BeyondRam) -> DmaFault {
        let name = self.core.device_info(dev).map(|i| i.name).ok();
        self.note(EventKind::Fault, name.as_deref(), e.to_string());
        self.flush();
        DmaFault::Ram(e)
    }

    /// Claims the device's whole group for `owner` (what VFIO does at SET_CONTAINER).
    pub fn claim_group(&self, dev: DeviceId, owner: OwnerCookie) -> Result<GroupClaim, Errno> {
        let group = self.core.device_group(dev)?.ok_or(Errno::Enodev)?;
        let r = self.core.claim_group(&group, owner);
        self.flush();
        r
    }

    /// Claims the device for `owner` (iommufd-style device claim).
    pub fn claim_device(&self, dev: DeviceId, owner: OwnerCookie) -> Result<DeviceClaim, Errno> {
        let r = self.core.claim_device(dev, owner);
        self.flush();
        r
    }

    /// Releases a claim and records what the platform did.
    pub fn release<const W: bool>(&self, claim: iommu_core::Claim<W>) -> Result<(), Errno> {
        let r = claim.release();
        self.flush();
        r
    }

    /// Every invariant (kernel.md section 3) the core and the platform can see.
    pub fn check(&self) -> Vec<Violation> {
        let v = self.core.check();
        self.flush();
        v
    }

    /// `eeh_handle_normal_event` on `dev`'s PE ([`Pe::eeh_recover`]), then, on a hard
    /// fail, each of the PE's devices marked removed and hot-removed
    /// (`eeh_report_failure` → `pci_hp_remove_devices`), traced.
    pub fn eeh_recover(
        &self,
        dev: DeviceId,
        results: &[crate::DriverResult],
    ) -> Result<crate::Recovery, Errno> {
        let pe = self.pe_of(dev).ok_or(Errno::Enodev)?;
        let r = pe.eeh_recover(results);
        if let Ok(crate::Recovery::Failed { .. }) = r {
            for name in pe.device_names() {
                if let Some(d) = self.device(&name) {
                    let _ = self.remove_device(d);
                }
            }
        }
        self.flush();
        r
    }

    /// The PE a device belongs to.
    pub fn pe_of(&self, dev: DeviceId) -> Option<Arc<Pe>> {
        self.pci_dev(dev).and_then(|d| d.pe())
    }

    /// The whole state, PHB → PE/group → devices → windows → mapped runs.
    pub fn snapshot(&self) -> Vec<PhbView> {
        let all = self.core.devices();
        let devices: std::collections::HashMap<DeviceId, &iommu_core::DeviceView> =
            all.iter().map(|v| (v.id, v)).collect();
        self.phbs
            .iter()
            .map(|phb| PhbView {
                index: phb.index,
                model: phb.config.model,
                iommu: phb.iommu_name(),
                pes: phb
                    .pes
                    .iter()
                    .map(|pe| {
                        // The group first, then the PE: the crate's lock order (lib.rs).
                        let group = pe.lock().group.clone();
                        let gv = group.as_ref().map(|g| self.core.group_view(g));
                        let st = pe.lock();
                        let windows = (0..MAX_WINDOWS)
                            .filter_map(|n| {
                                let t = st.tables[n].as_ref()?;
                                let g = t.tces.geometry();
                                Some(WindowView {
                                    num: n,
                                    tve: pe.tve_index(n),
                                    start: t.start(),
                                    size: t.window_size(),
                                    page_size: g.page_shift().size(),
                                    levels: g.levels(),
                                    table_bytes: t.tces.allocated_bytes(),
                                    kernel: t.map.is_some(),
                                    runs: t.tces.mapped_runs(),
                                })
                            })
                            .collect();
                        PeView {
                            number: pe.number,
                            group: st.group.as_ref().map(|g| g.name().to_string()),
                            domain: gv.as_ref().and_then(|g| g.domain),
                            owner: gv.as_ref().and_then(|g| g.owner),
                            owner_cnt: gv.as_ref().map_or(0, |g| g.owner_cnt),
                            devices: st
                                .devices
                                .iter()
                                .map(|d| {
                                    let dv = devices.get(&d.id);
                                    (
                                        d.name.clone(),
                                        dv.map_or(String::new(), |v| v.info.addr.to_string()),
                                        dv.and_then(|v| v.driver.as_ref().map(|b| b.name.clone())),
                                        d.has_table_base(),
                                        d.uses_bypass(),
                                    )
                                })
                                .collect(),
                            windows,
                            tve1: Pe::tve1(&st, self.env.ram_size),
                            kills: (pe.counters.range_kills(), pe.counters.pe_kills()),
                        }
                    })
                    .collect(),
            })
            .collect()
    }
}
