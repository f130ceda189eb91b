//! The guest's DMA windows: PHBs with their two window slots (QEMU `spapr_pci.c`), VIO
//! windows, LIOBN and BUID numbering, PHB and machine reset.

use crate::iommu::{DeviceTranslator, PhbIommu};
use crate::iotlb::{Generation, TlbCache};
use crate::slots::{Slots, SlotsMut, MAX_SLOTS};
use crate::sync::RwLock;
use crate::table::GuestTable;
use crate::Profile;
use spapr_tce::{PageShift, PageSizes};
use std::collections::HashMap;
use std::sync::Arc;

/// `SPAPR_PCI_LIOBN(index, n)`.
pub fn pci_liobn(phb_index: u32, window: u32) -> u32 {
    0x8000_0000 | (phb_index << 8) | window
}

/// Whether `liobn` has the shape of [`pci_liobn`] (high bit set, bits 16-30 clear): the
/// hypercalls decode such a LIOBN from its bits as a PCI window, so no VIO device may
/// use one.
fn is_pci_liobn(liobn: u32) -> bool {
    liobn & 0x8000_0000 != 0 && liobn & 0x7fff_0000 == 0
}

/// A PHB's BUID: `0x0800_0000_2000_0000 + index`.
pub fn phb_buid(phb_index: u32) -> u64 {
    0x0800_0000_2000_0000 + u64::from(phb_index)
}

/// How one PHB's DMA is set up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PhbConfig {
    /// PHB index (LIOBNs and BUID derive from it).
    pub index: u32,
    /// Dynamic DMA windows on (`ddw=on`); off, only `liobn[0]` exists.
    pub ddw: bool,
    /// Default window bus address (`dma_win_addr`).
    pub dma_win_addr: u64,
    /// Default window size (`dma_win_size`).
    pub dma_win_size: u64,
    /// Second window's bus address (`dma64_win_addr`).
    pub dma64_win_addr: u64,
    /// Page sizes a DDW may use (`pgsz`).
    pub page_sizes: PageSizes,
}

impl PhbConfig {
    /// QEMU's defaults for PHB `index`: a 1 GiB default window at 0, DDW at
    /// 0x0800_0000_0000_0000, 4K/64K/2M/16M pages.
    pub fn qemu(index: u32) -> Self {
        Self {
            index,
            ddw: true,
            dma_win_addr: 0,
            dma_win_size: 0x4000_0000,
            dma64_win_addr: 0x0800_0000_0000_0000,
            page_sizes: PageSizes::QEMU_PSERIES,
        }
    }
}

/// A VIO device's window (spapr-vscsi, spapr-llan).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VioConfig {
    /// The device's `reg`, which is its LIOBN.
    pub reg: u32,
    /// Window size (256 MiB for vscsi and llan).
    pub window_size: u64,
}

/// The guest's DMA configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpaprConfig {
    /// Behaviour profile.
    pub profile: Profile,
    /// Guest RAM bytes.
    pub ram_size: u64,
    /// PHBs.
    pub phbs: Vec<PhbConfig>,
    /// VIO devices.
    pub vio: Vec<VioConfig>,
}

impl Default for SpaprConfig {
    fn default() -> Self {
        Self {
            profile: Profile::Kvm,
            ram_size: 4 << 30,
            phbs: vec![PhbConfig::qemu(0)],
            vio: vec![VioConfig {
                reg: 0x2000,
                window_size: 0x1000_0000,
            }],
        }
    }
}

/// A description that cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// What a VMM (or the simulator) may read of one window slot.
#[derive(Clone, Debug)]
pub struct WindowView {
    /// Slot number (0: the default window's slot).
    pub slot: usize,
    /// The slot's LIOBN.
    pub liobn: u32,
    /// QEMU's sticky `def_win` flag.
    pub def_win: bool,
    /// The table while the window is enabled (read-only outside this crate).
    pub table: Option<Arc<GuestTable>>,
}

/// State shared between a PHB and the device models translating through it.
///
/// Lock order (see `iotlb.rs`): `iotlb` before `slots`. Table writers take `slots` only
/// (read for a hypercall, write for a window change) and publish through the change counters (`gen()`).
#[derive(Debug)]
pub(crate) struct PhbShared {
    /// Window slots (one without DDW, else two), with the PHB's change counters (every
    /// window change and every TCE change bumps one; [`Self::gen`]). Second in the lock
    /// order. Changed only through [`SlotsMut`], which publishes the window changes.
    pub(crate) slots: Slots,
    /// The device models' IOTLB, tagged with the counters it was filled under. First in
    /// the lock order; never taken by a table writer.
    pub(crate) iotlb: RwLock<TlbCache>,
}

/// One PHB.
#[derive(Debug)]
pub struct PaprPhb {
    pub(crate) config: PhbConfig,
    pub(crate) buid: u64,
    pub(crate) shared: Arc<PhbShared>,
}

impl PhbShared {
    /// The PHB's change counters (held by its slots).
    #[inline]
    pub(crate) fn gen(&self) -> &Arc<Generation> {
        self.slots.gen()
    }
}

impl PaprPhb {
    /// Its configuration.
    pub fn config(&self) -> &PhbConfig {
        &self.config
    }
    /// Its BUID.
    pub fn buid(&self) -> u64 {
        self.buid
    }
    /// Its window slots as they are now.
    pub fn windows(&self) -> Vec<WindowView> {
        self.shared
            .slots
            .read()
            .iter()
            .enumerate()
            .map(|(slot, s)| WindowView {
                slot,
                liobn: s.liobn(),
                def_win: s.def_win(),
                table: s.table().cloned(),
            })
            .collect()
    }
    /// The tables of the enabled windows.
    pub(crate) fn tables(&self) -> Vec<Arc<GuestTable>> {
        let slots = self.shared.slots.read();
        slots.iter().filter_map(|s| s.table().cloned()).collect()
    }
}

/// Where a LIOBN leads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// PHB `phb`, slot `slot`.
    Pci {
        /// Position in [`Spapr::phbs`].
        phb: usize,
        /// Window slot.
        slot: usize,
    },
    /// VIO device `vio`.
    Vio(usize),
}

/// A VIO window.
#[derive(Debug)]
pub struct VioWindow {
    pub(crate) config: VioConfig,
    pub(crate) table: Arc<GuestTable>,
}

impl VioWindow {
    /// Configuration.
    pub fn config(&self) -> &VioConfig {
        &self.config
    }
    /// Its table (always enabled; read-only outside this crate).
    pub fn table(&self) -> &Arc<GuestTable> {
        &self.table
    }
}

/// The guest-facing TCE subsystem of one VM.
#[derive(Debug)]
pub struct Spapr {
    profile: std::sync::atomic::AtomicU8,
    ram_size: u64,
    phbs: Vec<PaprPhb>,
    vio: Vec<VioWindow>,
    liobns: HashMap<u32, Target>,
    /// PHB index (a PCI LIOBN's middle byte) -> its position and slot count, decoded on
    /// every hypercall with one load.
    pci: [PciIndex; 256],
    /// Each PHB's VFIO side for EEH (none: emulated devices only). A leaf lock.
    pub(crate) eeh: crate::eeh::Backends,
}

/// What a PHB index decodes to.
#[derive(Clone, Copy, Debug, Default)]
struct PciIndex {
    /// Position in `Spapr::phbs` + 1 (0: no PHB has this index).
    phb: u16,
    /// Window slots the PHB has (1, or 2 with DDW).
    nslots: u8,
}

fn profile_code(p: Profile) -> u8 {
    match p {
        Profile::Qemu => 0,
        Profile::Kvm => 1,
        Profile::Lopar => 2,
    }
}

impl Spapr {
    /// Builds the PHBs and VIO windows and resets them (default windows enabled).
    pub fn new(config: SpaprConfig) -> Result<Self, ConfigError> {
        let mut liobns = HashMap::new();
        let mut phbs = Vec::new();
        let mut pci = [PciIndex::default(); 256];
        let mut buids = std::collections::BTreeSet::new();
        for (i, pc) in config.phbs.iter().enumerate() {
            if pc.index > 0xff {
                return Err(ConfigError(format!("PHB index {} is above 255", pc.index)));
            }
            if !buids.insert(pc.index) {
                return Err(ConfigError(format!("PHB index {} used twice", pc.index)));
            }
            if pc.dma_win_size < 4096 || pc.dma_win_addr % 4096 != 0 {
                return Err(ConfigError(format!(
                    "PHB {}: default window {:#x}+{:#x} is not 4K-aligned or is empty",
                    pc.index, pc.dma_win_addr, pc.dma_win_size
                )));
            }
            if pc.dma_win_addr.checked_add(pc.dma_win_size).is_none() {
                return Err(ConfigError(format!(
                    "PHB {}: default window overflows",
                    pc.index
                )));
            }
            if let Some(bad) =
                (0..64).find(|s| pc.page_sizes.contains_shift(*s) && PageShift::new(*s).is_err())
            {
                return Err(ConfigError(format!(
                    "PHB {}: page size 2^{bad} is not supported by the TCE engine",
                    pc.index
                )));
            }
            let nslots = if pc.ddw { MAX_SLOTS as u32 } else { 1 };
            // At most 256 PHBs (their indices are distinct and below 256): i + 1 fits.
            pci[pc.index as usize] = PciIndex {
                phb: u16::try_from(i + 1).unwrap_or(0),
                nslots: nslots as u8,
            };
            for n in 0..nslots {
                liobns.insert(
                    pci_liobn(pc.index, n),
                    Target::Pci {
                        phb: i,
                        slot: n as usize,
                    },
                );
            }
            phbs.push(PaprPhb {
                config: pc.clone(),
                buid: phb_buid(pc.index),
                shared: Arc::new(PhbShared {
                    slots: Slots::new(
                        (0..nslots).map(|n| pci_liobn(pc.index, n)),
                        Arc::new(Generation::new()),
                    ),
                    iotlb: RwLock::new(TlbCache::default()),
                }),
            });
        }
        let mut vio = Vec::new();
        for (i, vc) in config.vio.iter().enumerate() {
            if is_pci_liobn(vc.reg) && !liobns.contains_key(&vc.reg) {
                return Err(ConfigError(format!(
                    "VIO LIOBN {:#x} has the shape of a PCI LIOBN (0x8000_XXYY)",
                    vc.reg
                )));
            }
            if liobns.insert(vc.reg, Target::Vio(i)).is_some() {
                return Err(ConfigError(format!("LIOBN {:#x} used twice", vc.reg)));
            }
            if vc.window_size < 4096 {
                return Err(ConfigError(format!("VIO {:#x}: empty window", vc.reg)));
            }
            let table = GuestTable::new(
                vc.reg,
                0,
                PageShift::K4,
                vc.window_size >> 12,
                Arc::new(Generation::new()),
            )
            .map_err(|e| ConfigError(format!("VIO {:#x}: {e}", vc.reg)))?;
            vio.push(VioWindow {
                config: vc.clone(),
                table: Arc::new(table),
            });
        }
        let s = Self {
            pci,
            profile: std::sync::atomic::AtomicU8::new(profile_code(config.profile)),
            ram_size: config.ram_size,
            phbs,
            vio,
            liobns,
            eeh: std::sync::Mutex::new(Vec::new()),
        };
        for i in 0..s.phbs.len() {
            s.reset_phb(i);
        }
        Ok(s)
    }

    /// The behaviour profile.
    #[inline]
    pub fn profile(&self) -> Profile {
        match self.profile.load(std::sync::atomic::Ordering::Relaxed) {
            0 => Profile::Qemu,
            2 => Profile::Lopar,
            _ => Profile::Kvm,
        }
    }
    /// Switches the behaviour profile.
    pub fn set_profile(&self, p: Profile) {
        self.profile
            .store(profile_code(p), std::sync::atomic::Ordering::Relaxed);
    }
    /// Guest RAM bytes.
    pub fn ram_size(&self) -> u64 {
        self.ram_size
    }
    /// PHBs.
    pub fn phbs(&self) -> &[PaprPhb] {
        &self.phbs
    }
    /// VIO windows.
    pub fn vio(&self) -> &[VioWindow] {
        &self.vio
    }
    /// The PHB with `buid`.
    pub fn phb_by_buid(&self, buid: u64) -> Option<usize> {
        self.phbs.iter().position(|p| p.buid == buid)
    }
    /// Where a LIOBN leads.
    pub fn target(&self, liobn: u32) -> Option<Target> {
        self.liobns.get(&liobn).copied()
    }

    /// Where a LIOBN register leads: PCI LIOBNs are decoded from their bits (no lookup on
    /// the hypercall path), VIO ones looked up.
    #[inline]
    pub(crate) fn decode(&self, liobn: u64) -> Option<Target> {
        let l = u32::try_from(liobn).ok()?;
        if is_pci_liobn(l) {
            let (index, slot) = ((l >> 8) & 0xff, (l & 0xff) as usize);
            let pci = self.pci[index as usize];
            let phb = usize::from(pci.phb.checked_sub(1)?);
            return (slot < usize::from(pci.nslots)).then_some(Target::Pci { phb, slot });
        }
        self.target(l)
    }

    /// The enabled table of `liobn` (None: unknown LIOBN or disabled window).
    #[inline]
    pub fn table(&self, liobn: u64) -> Option<Arc<GuestTable>> {
        match self.decode(liobn)? {
            Target::Pci { phb, slot } => self.phbs[phb].shared.slots.read()[slot].table().cloned(),
            Target::Vio(i) => Some(self.vio[i].table.clone()),
        }
    }

    /// Runs `f` on the enabled table of `liobn` without taking a reference to it (the
    /// hypercall path); None for an unknown LIOBN or a disabled window.
    #[inline]
    pub fn with_table<R>(&self, liobn: u64, f: impl FnOnce(&GuestTable) -> R) -> Option<R> {
        // One call of `f`, so that it is inlined here; the slots' read guard, when there is
        // one, is held until `f` returns.
        let slots;
        let table: &GuestTable = match self.decode(liobn)? {
            Target::Pci { phb, slot } => {
                slots = self.phbs[phb].shared.slots.read();
                slots[slot].table()?
            }
            Target::Vio(i) => &self.vio[i].table,
        };
        Some(f(table))
    }

    /// The translation of PHB `i` for a device model through vm-memory's `IommuMemory`.
    pub fn phb_iommu(&self, i: usize) -> Option<PhbIommu> {
        self.phbs.get(i).map(|p| PhbIommu::new(p.shared.clone()))
    }

    /// A device model thread's own translator for PHB `i`: reads the live TCEs, no IOTLB.
    pub fn device_translator(&self, i: usize) -> Option<DeviceTranslator> {
        self.phbs
            .get(i)
            .map(|p| DeviceTranslator::new(p.shared.clone()))
    }

    /// Enables slot `slot` of PHB `phb` with a fresh (zeroed) table, under the slots'
    /// write lock (`slots`, which publishes the change when it is dropped). A table that
    /// cannot be built changes nothing.
    pub(crate) fn enable(
        &self,
        phb: usize,
        slots: &mut SlotsMut<'_>,
        slot: usize,
        bus_offset: u64,
        page_shift: PageShift,
        nb_table: u64,
    ) -> Result<(), spapr_tce::TceError> {
        let t = GuestTable::new(
            slots[slot].liobn(),
            bus_offset,
            page_shift,
            nb_table,
            self.phbs[phb].shared.gen().clone(),
        )?;
        slots.set_table(slot, Some(Arc::new(t)));
        Ok(())
    }

    /// `spapr_phb_dma_reset`: both windows off, the default window back (zeroed) with its
    /// `def_win` flag.
    pub fn reset_phb(&self, phb: usize) {
        let Some(p) = self.phbs.get(phb) else {
            return;
        };
        self.reset_slots(phb, &mut p.shared.slots.write());
        tracing::debug!(target: "spapr_papr", buid = p.buid, "PHB DMA reset: default window back");
    }

    /// [`Spapr::reset_phb`]'s body, under a write lock the caller already holds (the RTAS
    /// remove of the last window resets in the same critical section).
    pub(crate) fn reset_slots(&self, phb: usize, slots: &mut SlotsMut<'_>) {
        for n in 0..slots.len() {
            slots.set_table(n, None);
        }
        let cfg = &self.phbs[phb].config;
        // The configuration was validated: a 4K-aligned, non-empty default window.
        let _ = self.enable(
            phb,
            slots,
            0,
            cfg.dma_win_addr,
            PageShift::K4,
            cfg.dma_win_size >> 12,
        );
        slots.set_def_win(0, true);
    }

    /// Machine reset (`spapr_phb_reset`): every PHB's windows reset, then, where EEH is
    /// available, the container's ENABLE op (the host thaws a frozen PE); every VIO
    /// window zeroed.
    pub fn reset(&self) {
        for i in 0..self.phbs.len() {
            self.reset_phb(i);
            self.eeh_phb_reset(i);
        }
        for v in &self.vio {
            let g = *v.table.geometry();
            let _ = v.table.tces.clear(g.first_index(), g.entries());
        }
    }
}
