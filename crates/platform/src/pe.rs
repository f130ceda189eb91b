//! Partitionable endpoints and their `iommu_table_group`: the two windows, bypass, and the
//! table-group ops — IODA2's real DDW ops (`pnv_pci_ioda2_ops`) and the "borrowing" ops
//! (`spapr_tce_table_group_ops`) of IODA1 and pSeries.

use crate::table::{IommuTable, Padded, PeCounters, UserTable};
use crate::{Env, FaultPoint};
use iommu_core::{
    DeviceId, Errno, EventKind, Evidence, Finding, Group, OwnerCookie, Programmer, Rule,
};
use spapr_tce::{ioda2_table_size, Access, Fault, Hpa, Iova, PageShift, PageSizes, TableGeometry};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, Weak};

/// `tce_bypass_base`: PCI address bit 59 selects TVE#1.
pub const BYPASS_BASE: u64 = 1 << 59;
/// Windows per table group (`IOMMU_TABLE_GROUP_MAX_TABLES`).
pub const MAX_WINDOWS: usize = 2;

/// OPAL status codes that `set_window` can fail with (`opal_pci_map_pe_dma_window`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpalError {
    /// `OPAL_PARAMETER` (-1).
    Parameter,
    /// `OPAL_HARDWARE` (-6).
    Hardware,
}

impl OpalError {
    /// The raw OPAL status.
    pub fn code(self) -> i64 {
        match self {
            OpalError::Parameter => -1,
            OpalError::Hardware => -6,
        }
    }
    /// What the kernel returns: the raw status passed through as if it were an errno
    /// (-1 reads as -EPERM, -6 as -ENXIO).
    pub fn as_kernel_errno(self) -> Errno {
        match self {
            OpalError::Parameter => Errno::Eperm,
            OpalError::Hardware => Errno::Enxio,
        }
    }
}

/// Which table-group ops the PE's PHB provides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableGroupOps {
    /// `pnv_pci_ioda2_ops`: creates tables, programs TVEs, two dynamic windows.
    Ioda2,
    /// `spapr_tce_table_group_ops`: lends the kernel's existing table (IODA1, pSeries).
    Borrowing,
}

/// What a PE covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeScope {
    /// Every function on a bus (a bus PE).
    Bus(u8),
    /// One function (`bus << 8 | devfn`).
    Device(u16),
}

impl PeScope {
    /// Whether the PE covers `bdfn`.
    pub fn covers(&self, bdfn: u16) -> bool {
        match *self {
            PeScope::Bus(b) => (bdfn >> 8) as u8 == b,
            PeScope::Device(d) => d == bdfn,
        }
    }
}

/// How TVE#1 (bus addresses with bit 59 set) translates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tve1 {
    /// Not programmed: every access faults.
    Off,
    /// Real-mode bypass over `[0, size)` of RAM.
    Bypass {
        /// Bytes covered.
        size: u64,
    },
    /// Window 1's table.
    Table,
}

/// `iommu_table_base`, read on every DMA API call from every CPU and changed only at
/// ownership changes: one reader lock per CPU slot, each on its own cache lines, so that
/// CPUs mapping for the same device never write a shared line (a "big reader" lock).
/// Writers take every slot before changing the value, so all readers see one value.
#[derive(Debug, Default)]
pub(crate) struct TableBase {
    slots: [Padded<RwLock<Option<Arc<IommuTable>>>>; 4],
}

impl TableBase {
    #[inline]
    pub(crate) fn read(&self, cpu: u32) -> RwLockReadGuard<'_, Option<Arc<IommuTable>>> {
        self.slots[(cpu & 3) as usize]
            .0
            .read()
            .unwrap_or_else(|p| p.into_inner())
    }
    pub(crate) fn get(&self) -> Option<Arc<IommuTable>> {
        self.read(0).clone()
    }
    pub(crate) fn set(&self, t: Option<Arc<IommuTable>>) {
        let mut guards: Vec<_> = self
            .slots
            .iter()
            .map(|s| s.0.write().unwrap_or_else(|p| p.into_inner()))
            .collect();
        for g in &mut guards {
            **g = t.clone();
        }
    }
}

/// A PCI function as the platform sees it (`struct pci_dev` + `dev_archdata`).
#[derive(Debug)]
pub struct PciDev {
    /// Core handle.
    pub id: DeviceId,
    /// Name.
    pub name: String,
    /// `bus << 8 | devfn`.
    pub bdfn: u16,
    /// DMA mask width in bits.
    pub dma_mask_bits: u32,
    /// `iommu_table_base`: the table the kernel DMA API maps through (NULL when the group
    /// is handed to a user).
    pub(crate) table_base: TableBase,
    /// `dma_ops_bypass`: decided when a driver sets its mask, used by every map after.
    pub(crate) bypass: std::sync::atomic::AtomicBool,
    pub(crate) pe: Weak<Pe>,
    /// The PE's kill counters (the DMA API counts its `tce_kill`s there).
    pub(crate) counters: Arc<PeCounters>,
}

impl PciDev {
    /// The PE it belongs to.
    pub fn pe(&self) -> Option<Arc<Pe>> {
        self.pe.upgrade()
    }
    /// Whether the kernel DMA API has a table for it.
    pub fn has_table_base(&self) -> bool {
        self.table_base.get().is_some()
    }
    /// Whether its DMA goes direct through bypass.
    pub fn uses_bypass(&self) -> bool {
        self.bypass.load(std::sync::atomic::Ordering::Relaxed)
    }
    pub(crate) fn set_table_base(&self, t: Option<Arc<IommuTable>>) {
        self.table_base.set(t);
    }
}

/// A PE's mutable state (`pnv_ioda_pe` + its `iommu_table_group`), private to this
/// crate: others read it through [`Pe`]'s views.
#[derive(Debug, Default)]
pub(crate) struct PeState {
    /// `tables[0]` (32-bit / default window) and `tables[1]` (64-bit / DDW).
    pub(crate) tables: [Option<Arc<IommuTable>>; MAX_WINDOWS],
    /// `tce_bypass_enabled`.
    pub(crate) bypass_enabled: bool,
    /// Its devices (`device_count` is their number).
    pub(crate) devices: Vec<Arc<PciDev>>,
    /// `dma_setup_done`.
    pub(crate) dma_setup_done: bool,
    /// The platform's reference to the PE's group.
    pub(crate) group: Option<Group>,
    /// Who programmed each window (`None`: not programmed, or lent by the borrowing ops).
    pub(crate) programmed_by: [Option<Programmer>; MAX_WINDOWS],
}

/// Leave to program a user's windows on one PE (`set_window`, `unset_window`): only a
/// live DMA ownership claim of the PE's group hands one out ([`Pe::window_token`]), it
/// borrows the claim so it cannot outlive it, and every use checks the claim is still the
/// group's. The kernel-owned default configuration is programmed inside this module only.
#[derive(Debug)]
pub struct WindowToken<'c> {
    group: &'c Group,
    owner: iommu_core::OwnerCookie,
    epoch: u64,
    pe: *const Pe,
}

impl WindowToken<'_> {
    /// Whether the claim behind it still owns the group, and the token is `pe`'s.
    fn valid_for(&self, pe: &Pe) -> bool {
        std::ptr::eq(self.pe, pe) && self.group.is_owned_by(self.owner, self.epoch)
    }
}

/// Why a window could not be programmed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    /// The token is not this PE's, or its claim has ended (`-EPERM`).
    #[error("the window token is not a live claim of this PE's group")]
    NotOwner,
    /// OPAL refused (`opal_pci_map_pe_dma_window`).
    #[error("OPAL status {}", .0.code())]
    Opal(OpalError),
    /// The table is a kernel DMA table lent to a user (a borrowing PE's window 0): it is
    /// that PE's window only, and never another PE's, where it would outlive the lend
    /// (`-EINVAL`; the kernel's VFIO never mixes such groups in one container).
    #[error("a kernel table lent to a user is its own PE's window only")]
    KernelTable,
}

/// Group data: how a group finds its PE (`iommu_group_get_iommudata`).
#[derive(Debug, Clone)]
pub struct PeLink(pub Weak<Pe>);

/// One partitionable endpoint.
#[derive(Debug)]
pub struct Pe {
    /// `pe_number`.
    pub number: u32,
    /// What it covers.
    pub scope: PeScope,
    /// PHB index.
    pub phb: u32,
    /// PCI domain of the PHB.
    pub pci_domain: u32,
    /// Table-group ops.
    pub ops: TableGroupOps,
    /// `pgsizes`.
    pub pgsizes: PageSizes,
    /// `tce32_start`.
    pub tce32_start: u64,
    /// `tce32_size` (= the PHB's `m32_pci_base`).
    pub tce32_size: u64,
    /// Kills received, and the PHB's TCE cache they invalidate. Private: whoever could
    /// reach it could count kills that never happened or fill the cache with a TCE no
    /// table holds (`PeCounters::cached_tce` keeps what its loader returns), and a device
    /// would then DMA through it. Read through [`Pe::range_kills`] and [`Pe::pe_kills`]:
    ///
    /// ```compile_fail,E0616
    /// fn poison(pe: &spapr_platform::Pe) {
    ///     pe.counters.cached_tce(0, 0, || 0x1000 | 3);
    /// }
    /// ```
    pub(crate) counters: Arc<PeCounters>,
    /// Whether its kernel tables implement `xchg_no_kill` (borrowing ownership needs it).
    pub xchg_no_kill: bool,
    /// Its ops' `create_table` (VFIO compares it between groups of one container).
    pub create_table: crate::phb::CreateTable,
    /// A borrowing PE with a second kernel table in `tables[1]` (pSeries' table-backed
    /// dynamic window), which its 64-bit devices map through.
    pub ddw_table: bool,
    pub(crate) env: Arc<Env>,
    /// Third in the crate's lock order (core → group → PE → table, see the crate docs):
    /// never held while a group's state is locked.
    state: Mutex<PeState>,
    /// The PE's EEH state: first in the EEH chain (PE EEH → PHB PE EEH → EEH flags,
    /// injection list → note buffer), never held with `state`.
    eeh: crate::eeh::EehMutex<crate::eeh::EehState>,
    /// The PHB PE's EEH state, shared with the PHB: taken last (after `eeh` when both
    /// are held), nothing taken under it.
    phb_eeh: Arc<crate::eeh::EehMutex<crate::eeh::PhbEehState>>,
}

impl Pe {
    /// Range kills received (`tce_kill` of a range, every CPU's count summed).
    pub fn range_kills(&self) -> u64 {
        self.counters.range_kills()
    }

    /// Whole-PE kills received (a window set or unset, a freeze).
    pub fn pe_kills(&self) -> u64 {
        self.counters.pe_kills()
    }

    pub(crate) fn new(
        number: u32,
        scope: PeScope,
        phb: u32,
        model: crate::phb::PhbModel,
        tce32_size: u64,
        env: Arc<Env>,
        phb_eeh: Arc<crate::eeh::EehMutex<crate::eeh::PhbEehState>>,
    ) -> Self {
        Self {
            number,
            scope,
            phb,
            pci_domain: phb,
            ops: model.table_group_ops(),
            pgsizes: model.page_sizes(),
            tce32_start: 0,
            tce32_size,
            counters: Arc::new(PeCounters::default()),
            xchg_no_kill: true,
            create_table: crate::phb::CreateTable::Ioda2,
            ddw_table: false,
            env,
            state: Mutex::new(PeState::default()),
            eeh: crate::eeh::EehMutex::new(crate::eeh::EehState::default()),
            phb_eeh,
        }
    }

    /// Locks the PHB PE's EEH state (a leaf lock).
    pub(crate) fn phb_eeh_lock(&self) -> crate::eeh::EehGuard<'_, crate::eeh::PhbEehState> {
        self.phb_eeh.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Locks the EEH state (a leaf lock).
    pub(crate) fn eeh_lock(&self) -> crate::eeh::EehGuard<'_, crate::eeh::EehState> {
        self.eeh.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Locks the state.
    pub(crate) fn lock(&self) -> MutexGuard<'_, PeState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The table programmed in window `num` now.
    pub fn table(&self, num: usize) -> Option<Arc<IommuTable>> {
        self.lock().tables.get(num).cloned().flatten()
    }
    /// `(PHB index, PE number)`: how injected failures name a PE.
    pub fn id(&self) -> (u32, u32) {
        (self.phb, self.number)
    }
    /// Whether bypass (TVE#1 over RAM) is on.
    pub fn bypass_enabled(&self) -> bool {
        self.lock().bypass_enabled
    }
    /// Who programmed window `num`.
    pub fn programmed_by(&self, num: usize) -> Option<Programmer> {
        self.lock().programmed_by.get(num).copied().flatten()
    }
    /// The platform's reference to the PE's group.
    pub fn group(&self) -> Option<Group> {
        self.lock().group.clone()
    }
    /// The names of its devices.
    pub fn device_names(&self) -> Vec<String> {
        self.lock().devices.iter().map(|d| d.name.clone()).collect()
    }

    /// The kernel's group name: `domain<pci_domain>-pe<pe hex>`.
    pub fn group_name(&self) -> String {
        format!("domain{}-pe{:x}", self.pci_domain, self.number)
    }

    /// `max_dynamic_windows_supported`.
    pub fn max_dynamic_windows(&self) -> u32 {
        match self.ops {
            TableGroupOps::Ioda2 => 2,
            TableGroupOps::Borrowing => 0,
        }
    }

    /// TVE index of window `num`: `(pe_number << 1) + num`.
    pub fn tve_index(&self, num: usize) -> u32 {
        (self.number << 1) + num as u32
    }

    fn note(&self, kind: EventKind, detail: String) {
        self.env.note(kind, None, Some(self.group_name()), detail);
    }

    /// How TVE#1 translates now.
    pub fn tve1_now(&self) -> Tve1 {
        Self::tve1(&self.lock(), self.env.ram_size)
    }

    pub(crate) fn tve1(st: &PeState, ram_size: u64) -> Tve1 {
        if st.tables[1].is_some() {
            Tve1::Table
        } else if st.bypass_enabled {
            Tve1::Bypass {
                size: ram_size.next_power_of_two(),
            }
        } else {
            Tve1::Off
        }
    }

    /// The PHB's translation of a device access at bus address `iova`: through the TVE
    /// the address selects, the TCE read through the PHB's TCE cache ([`PeCounters`]).
    ///
    /// With EEH on, a frozen PE's DMA is refused ([`DmaFault::Frozen`]), and a DMA that
    /// faults freezes the PE (eeh.md 5.6).
    pub fn translate(&self, iova: u64, access: Access) -> Result<Hpa, DmaFault> {
        let Ok(gen) = self.eeh_dma_gate() else {
            return Err(DmaFault::Frozen {
                iova,
                pe: self.number,
            });
        };
        let r = self.translate_via(iova, access, true);
        match &r {
            Ok(_) => self.eeh_dma_served(gen),
            Err(f) if self.env.eeh_enabled() => self.eeh_freeze(&format!("a DMA fault ({f})")),
            Err(_) => {}
        }
        r
    }

    /// What a device access at `iova` would reach now, the TCE cache included, without
    /// filling the cache: an observation (a scenario's `device.D.reads.ADDR`) that
    /// changes nothing.
    pub fn reaches(&self, iova: u64, access: Access) -> Result<Hpa, DmaFault> {
        if self.eeh_blocks_now() {
            return Err(DmaFault::Frozen {
                iova,
                pe: self.number,
            });
        }
        self.translate_via(iova, access, false)
    }

    fn translate_via(&self, iova: u64, access: Access, fill: bool) -> Result<Hpa, DmaFault> {
        let st = self.lock();
        let slot = usize::from(iova & BYPASS_BASE != 0);
        if let Some(t) = &st.tables[slot] {
            let g = t.tces.geometry();
            let Some(rel) = g.relative_index(Iova(iova)) else {
                return Err(DmaFault::Tce(Fault::OutsideWindow { iova: Iova(iova) }));
            };
            let index = spapr_tce::TceIndex(g.first_index().0 + rel);
            let load = || t.tces.get(index).map_or(0, |e| e.0);
            let raw = if fill {
                self.counters.cached_tce(slot as u32, index.0, load)
            } else {
                self.counters.peek_tce(slot as u32, index.0, load)
            };
            let need = match access {
                Access::Read => 1,
                Access::Write => 2,
            };
            if raw & need == 0 {
                return Err(DmaFault::Tce(if raw & 3 == 0 {
                    Fault::NoEntry {
                        iova: Iova(iova),
                        index,
                    }
                } else {
                    Fault::Permission {
                        iova: Iova(iova),
                        index,
                        tce: spapr_tce::Tce(raw),
                        access,
                    }
                }));
            }
            let mask = g.offset_mask();
            return Ok(Hpa((raw & !mask) | (iova & mask)));
        }
        if slot == 1 {
            if let Tve1::Bypass { size } = Self::tve1(&st, self.env.ram_size) {
                let off = iova - BYPASS_BASE;
                return if off < size {
                    Ok(Hpa(off))
                } else {
                    Err(DmaFault::BeyondBypass { iova })
                };
            }
        }
        Err(DmaFault::NoWindow {
            iova,
            tve: self.tve_index(slot),
        })
    }

    /// What the hardware would translate `iova` to, from the live tables, without
    /// touching the TCE cache (the checker's probe).
    fn probe(&self, st: &PeState, iova: u64) -> Option<u64> {
        let slot = usize::from(iova & BYPASS_BASE != 0);
        if let Some(t) = &st.tables[slot] {
            return t.tces.translate(Iova(iova), Access::Read).ok().map(|h| h.0);
        }
        match (slot, Self::tve1(st, self.env.ram_size)) {
            (1, Tve1::Bypass { size }) if iova - BYPASS_BASE < size => Some(iova - BYPASS_BASE),
            _ => None,
        }
    }

    // ---- table-group ops ----

    /// `get_table_size`: bytes a table of these parameters takes (0 = invalid). Borrowing
    /// ops: `window >> (shift - 3)` for one level, `!0` for more.
    pub fn get_table_size(&self, page_shift: u32, window_size: u64, levels: u32) -> u64 {
        match self.ops {
            TableGroupOps::Ioda2 => {
                ioda2_table_size(page_shift, window_size, levels, self.env.host_page_shift)
            }
            TableGroupOps::Borrowing => {
                if levels > 1 {
                    !0
                } else {
                    window_size >> page_shift.saturating_sub(3).min(63)
                }
            }
        }
    }

    /// Bus offset of window `num`.
    pub fn window_base(&self, num: usize) -> u64 {
        if num == 0 {
            self.tce32_start
        } else {
            BYPASS_BASE
        }
    }

    /// `create_table`: a new table for window `num` (IODA2), or the borrowed existing one,
    /// for the holder of a live claim of the PE's group (-EPERM otherwise): the only way
    /// to get write access to a table.
    pub fn create_table(
        &self,
        num: usize,
        page_shift: u32,
        window_size: u64,
        levels: u32,
        token: &WindowToken<'_>,
    ) -> Result<UserTable, Errno> {
        if !token.valid_for(self) {
            return Err(Errno::Eperm);
        }
        let table = self.make_table(num, page_shift, window_size, levels)?;
        Ok(match self.ops {
            TableGroupOps::Ioda2 => UserTable::made(table),
            // The kernel's own table: lent for as long as the claim lasts.
            TableGroupOps::Borrowing => {
                UserTable::lent(table, token.group.lease(token.owner, token.epoch))
            }
        })
    }

    fn make_table(
        &self,
        num: usize,
        page_shift: u32,
        window_size: u64,
        levels: u32,
    ) -> Result<Arc<IommuTable>, Errno> {
        if num >= MAX_WINDOWS {
            return Err(Errno::Einval);
        }
        match self.ops {
            TableGroupOps::Ioda2 => {
                let ps = PageShift::new(page_shift).map_err(|_| Errno::Einval)?;
                if !self.pgsizes.contains(ps) {
                    return Err(Errno::Einval);
                }
                let g = TableGeometry::ioda2(
                    Iova(self.window_base(num)),
                    ps,
                    window_size,
                    levels,
                    self.env.host_page_shift,
                )
                .map_err(|_| Errno::Einval)?;
                if self
                    .env
                    .take_fault(FaultPoint::CreateTable, self.id())
                    .is_some()
                {
                    return Err(FaultPoint::CreateTable.errno());
                }
                let t = IommuTable::new(g, self.liobn(num), None).map_err(|_| Errno::Enomem)?;
                Ok(Arc::new(t))
            }
            TableGroupOps::Borrowing => {
                if num > 0 {
                    return Err(Errno::Eperm);
                }
                let st = self.lock();
                let t = st.tables[0].clone().ok_or(Errno::Einval)?;
                let g = t.tces.geometry();
                if g.page_shift().shift() != page_shift
                    || g.window_size() != window_size
                    || levels != g.levels()
                {
                    return Err(Errno::Einval);
                }
                Ok(t)
            }
        }
    }

    /// `it_index` of window `num`.
    pub fn liobn(&self, num: usize) -> u32 {
        (self.phb << 16) | self.tve_index(num)
    }

    /// A token for programming this PE's windows, from a live claim of its group: -EPERM
    /// if the claim is of another group or has ended, -ENODEV if the PE has no group.
    pub fn window_token<'c, const W: bool>(
        &self,
        claim: &'c iommu_core::Claim<W>,
    ) -> Result<WindowToken<'c>, Errno> {
        // The group's state before the PE's (the crate's lock order).
        if !claim.is_current() {
            return Err(Errno::Eperm);
        }
        let st = self.lock();
        let g = st.group.as_ref().ok_or(Errno::Enodev)?;
        if !g.same(claim.group()) {
            return Err(Errno::Eperm);
        }
        Ok(WindowToken {
            group: claim.group(),
            owner: claim.owner(),
            epoch: claim.epoch(),
            pe: self,
        })
    }

    /// `set_window`: programs window `num` with `table` (OPAL map-PE-DMA-window with TVE
    /// `(pe << 1) + num`), links the table, then a PE-wide kill. Needs a token of a live
    /// claim of the PE's group.
    pub fn set_window(
        &self,
        num: usize,
        table: &UserTable,
        token: &WindowToken<'_>,
    ) -> Result<(), WindowError> {
        if !token.valid_for(self) {
            return Err(WindowError::NotOwner);
        }
        if table.is_kernel_table() && self.ops != TableGroupOps::Borrowing {
            return Err(WindowError::KernelTable);
        }
        let mut st = self.lock();
        let by = Programmer::User {
            owner: token.owner,
            epoch: token.epoch,
        };
        self.set_window_locked(&mut st, num, table.shared(), by)
            .map_err(WindowError::Opal)
    }

    fn set_window_locked(
        &self,
        st: &mut PeState,
        num: usize,
        table: &Arc<IommuTable>,
        by: Programmer,
    ) -> Result<(), OpalError> {
        if self.ops == TableGroupOps::Borrowing {
            return Ok(());
        }
        if num >= MAX_WINDOWS || table.start() != self.window_base(num) {
            return Err(OpalError::Parameter);
        }
        if let Some(e) = self.env.take_fault(FaultPoint::SetWindow, self.id()) {
            return Err(e);
        }
        table.links().link(&self.counters);
        st.tables[num] = Some(table.clone());
        st.programmed_by[num] = Some(by);
        self.counters.pe_kill();
        table.tces.kill_all();
        let g = table.tces.geometry();
        self.note(
            EventKind::IotlbInvalidate,
            format!(
                "set window {num}: TVE#{} {:#x}+{:#x} page {} levels {}; PE-wide kill",
                self.tve_index(num),
                table.start(),
                table.window_size(),
                g.page_shift().size(),
                g.levels()
            ),
        );
        Ok(())
    }

    /// `unset_window`: clears TVE `num`, a PE-wide kill, unlinks the table. Needs a token
    /// of a live claim of the PE's group (-EPERM otherwise).
    pub fn unset_window(&self, num: usize, token: &WindowToken<'_>) -> Result<(), Errno> {
        if !token.valid_for(self) {
            return Err(Errno::Eperm);
        }
        let mut st = self.lock();
        self.unset_window_locked(&mut st, num)
    }

    fn unset_window_locked(&self, st: &mut PeState, num: usize) -> Result<(), Errno> {
        if self.ops == TableGroupOps::Borrowing {
            return Ok(());
        }
        if num >= MAX_WINDOWS {
            return Err(Errno::Einval);
        }
        if let Some(t) = st.tables[num].take() {
            st.programmed_by[num] = None;
            t.links().unlink(&self.counters);
            self.counters.pe_kill();
            self.note(
                EventKind::IotlbInvalidate,
                format!(
                    "unset window {num}: TVE#{}; PE-wide kill",
                    self.tve_index(num)
                ),
            );
        }
        Ok(())
    }

    /// `take_ownership`: called per device at blocking attach. IODA2: the first call
    /// disables bypass, unsets window 0 and leaves the devices without a table; later
    /// calls find `tables[0]` empty and return at once. Borrowing: `iommu_take_ownership`
    /// on every table (-EBUSY while a kernel mapping is live or the bitmap is saturated).
    ///
    /// Inside the crate: the domains' attach calls it (`iommu.rs`: the blocking domain's,
    /// under the core's DMA ownership, and in the `V6_7` design the platform domain's, the
    /// history the checker catches). Public, it would drop a bound driver's window and bypass
    /// with no claim, and its partner below would give the kernel's window 0 and bypass
    /// back to a PE a user owns:
    ///
    /// ```compile_fail,E0624
    /// fn take(pe: &spapr_platform::Pe) {
    ///     let _ = pe.take_ownership();
    /// }
    /// ```
    pub(crate) fn take_ownership(&self) -> Result<(), Errno> {
        let mut st = self.lock();
        match self.ops {
            TableGroupOps::Ioda2 => {
                let Some(old) = st.tables[0].clone() else {
                    return Ok(());
                };
                if old.map.is_none() {
                    // A user's table sits in slot 0: a device hot-added into a user-owned
                    // PE is being attached to BLOCKED.
                    if self.env.strict() {
                        self.note(
                            EventKind::Ownership,
                            "take_ownership: window 0 is the user's; left alone".into(),
                        );
                        return Ok(());
                    }
                    self.note(
                        EventKind::Quirk,
                        format!(
                            "linux quirk: pnv_ioda2_take_ownership drops the table in slot 0, \
                             the user's included ({} TCEs): the user's DMA through window 0 now \
                             faults",
                            old.tces.count_mapped()
                        ),
                    );
                }
                let live = old.tces.count_mapped();
                st.bypass_enabled = false;
                self.unset_window_locked(&mut st, 0)?;
                for d in &st.devices {
                    d.set_table_base(None);
                }
                self.note(
                    EventKind::Ownership,
                    format!(
                        "take_ownership: bypass off, window 0 dropped{}",
                        if live > 0 {
                            format!(" with {live} kernel TCEs (only warned)")
                        } else {
                            String::new()
                        }
                    ),
                );
                Ok(())
            }
            TableGroupOps::Borrowing => {
                if !self.xchg_no_kill {
                    self.note(
                        EventKind::Ownership,
                        "iommu_take_ownership: the table has no xchg_no_kill (-EINVAL)".into(),
                    );
                    return Err(Errno::Einval);
                }
                let mut taken: Vec<usize> = Vec::new();
                for (i, t) in st.tables.iter().enumerate() {
                    let Some(t) = t else { continue };
                    let Some(map) = &t.map else { continue };
                    if let Err(e) = map.take_ownership() {
                        for j in taken {
                            if let Some(m) = st.tables[j].as_ref().and_then(|t| t.map.as_ref()) {
                                m.release_ownership();
                            }
                        }
                        self.note(
                            EventKind::Ownership,
                            format!("iommu_take_ownership: table {i} in use: {e}"),
                        );
                        return Err(e);
                    }
                    taken.push(i);
                }
                self.note(
                    EventKind::Ownership,
                    "take_ownership: bitmaps saturated".into(),
                );
                Ok(())
            }
        }
    }

    /// `release_ownership`: IODA2 (first call) re-creates the default configuration;
    /// borrowing clears every TCE and gives the bitmaps back. Inside the crate, as
    /// [`Self::take_ownership`]:
    ///
    /// ```compile_fail,E0624
    /// fn give_back(pe: &spapr_platform::Pe) {
    ///     let _ = pe.release_ownership();
    /// }
    /// ```
    pub(crate) fn release_ownership(&self) -> Result<(), Errno> {
        let mut st = self.lock();
        match self.ops {
            TableGroupOps::Ioda2 => {
                if st.tables[0].is_some() {
                    return Ok(());
                }
                self.setup_default_config(&mut st)
            }
            TableGroupOps::Borrowing => {
                for t in st.tables.iter().flatten() {
                    let g = *t.tces.geometry();
                    let _ = t.tces.clear(g.first_index(), g.entries());
                    if let Some(m) = &t.map {
                        m.release_ownership();
                    }
                }
                self.note(
                    EventKind::Ownership,
                    "release_ownership: tables cleared, bitmaps released".into(),
                );
                Ok(())
            }
        }
    }

    /// `pnv_pci_ioda2_setup_default_config`: a kernel table over RAM (host page size, at
    /// least 2 levels, the 32-bit MMIO hole reserved) on window 0, bypass on, devices
    /// pointed at the table. Borrowing PEs get a flat 4K table over the 32-bit window.
    pub(crate) fn setup_default_config(&self, st: &mut PeState) -> Result<(), Errno> {
        let table = match self.build_default_table() {
            Ok(t) => Arc::new(t),
            Err(e) => {
                self.note(
                    EventKind::Ownership,
                    format!("default window creation failed: {e}; bypass stays off"),
                );
                return Err(e);
            }
        };
        if let Err(e) = self.set_window_locked(st, 0, &table, Programmer::Kernel) {
            st.bypass_enabled = !self.env.bypass_disabled;
            self.note(
                EventKind::Ownership,
                format!("set_window 0 failed (OPAL {}); bypass on again", e.code()),
            );
            return Err(e.as_kernel_errno());
        }
        if self.ops == TableGroupOps::Borrowing {
            // The kernel's table is the PE's window (no OPAL call), and its kills must
            // reach the PE's TCE cache like any other's.
            table.links().link(&self.counters);
            st.tables[0] = Some(table.clone());
            if self.ddw_table {
                let ddw = Arc::new(self.build_ddw_table()?);
                ddw.links().link(&self.counters);
                st.tables[1] = Some(ddw);
            }
        }
        st.bypass_enabled = self.ops == TableGroupOps::Ioda2 && !self.env.bypass_disabled;
        for d in &st.devices {
            d.set_table_base(Self::kernel_table_for(st, d.dma_mask_bits));
        }
        st.dma_setup_done = true;
        self.note(
            EventKind::Ownership,
            format!(
                "default config: window 0 {:#x} bytes, bypass {}",
                table.window_size(),
                if st.bypass_enabled { "on" } else { "off" }
            ),
        );
        Ok(())
    }

    /// The kernel table a device of `mask_bits` maps through: the second (DDW) table of a
    /// borrowing PE for a 64-bit device, else window 0's; none when window 0 holds a
    /// user's table.
    pub(crate) fn kernel_table_for(st: &PeState, mask_bits: u32) -> Option<Arc<IommuTable>> {
        let ddw = st.tables[1]
            .clone()
            .filter(|t| mask_bits > 32 && t.map.is_some());
        ddw.or_else(|| st.tables[0].clone().filter(|t| t.map.is_some()))
    }

    /// A borrowing PE's second kernel table: a flat table of host pages over all RAM at
    /// the 64-bit window base, as pSeries makes a table-backed dynamic window.
    fn build_ddw_table(&self) -> Result<IommuTable, Errno> {
        let ps = PageShift::new(self.env.host_page_shift).map_err(|_| Errno::Einval)?;
        let entries = (self.env.ram_size >> ps.shift()).max(1);
        let g = TableGeometry::flat(Iova(BYPASS_BASE), ps, entries).map_err(|_| Errno::Einval)?;
        IommuTable::new(g, self.liobn(1), Some((0, 0))).map_err(|_| Errno::Enomem)
    }

    fn build_default_table(&self) -> Result<IommuTable, Errno> {
        let (geometry, reserved) = match self.ops {
            TableGroupOps::Ioda2 => {
                let ps = PageShift::new(self.env.host_page_shift).map_err(|_| Errno::Einval)?;
                let ram = self.env.ram_size.max(1 << 20);
                let window = 1u64 << (63 - ram.leading_zeros());
                let window = window.min(self.env.default_window_max);
                let mut geometry = Err(Errno::Einval);
                for levels in spapr_tce::DEFAULT_LEVELS..=spapr_tce::MAX_LEVELS {
                    if let Ok(g) =
                        TableGeometry::ioda2(Iova(0), ps, window, levels, self.env.host_page_shift)
                    {
                        geometry = Ok(g);
                        break;
                    }
                }
                let g = geometry?;
                let shift = ps.shift();
                let hole_end = window.min(1 << 32);
                let reserved = if self.tce32_size < hole_end {
                    (self.tce32_size >> shift, hole_end >> shift)
                } else {
                    (0, 0)
                };
                (g, reserved)
            }
            TableGroupOps::Borrowing => {
                let g = TableGeometry::flat(Iova(0), PageShift::K4, (self.tce32_size >> 12).max(1))
                    .map_err(|_| Errno::Einval)?;
                (g, (0, 0))
            }
        };
        IommuTable::new(geometry, self.liobn(0), Some(reserved)).map_err(|_| Errno::Enomem)
    }

    /// The store behind [`crate::PowerNv::inject_stray_tce`]: entry `entry` of the table
    /// in window `window`, swapped for `tce`; a PE-wide kill after it with `kill`.
    pub(crate) fn stray_tce_write(
        &self,
        window: usize,
        entry: u64,
        tce: u64,
        kill: bool,
    ) -> Result<u64, Errno> {
        let st = self.lock();
        let t = st
            .tables
            .get(window)
            .and_then(Option::as_ref)
            .ok_or(Errno::Enoent)?;
        let g = *t.tces.geometry();
        if entry >= g.entries() {
            return Err(Errno::Einval);
        }
        let index = spapr_tce::TceIndex(g.first_index().0 + entry);
        let old = t
            .tces
            .exchange_no_kill(index, spapr_tce::Tce(tce))
            .map_err(|_| Errno::Enomem)?;
        drop(st);
        if kill {
            self.counters.pe_kill();
        }
        Ok(old.0)
    }

    /// Gives up every window and the group reference (`pnv_ioda_release_pe`).
    pub(crate) fn release(&self) -> Option<Group> {
        let mut st = self.lock();
        for num in 0..MAX_WINDOWS {
            let _ = self.unset_window_locked(&mut st, num);
            st.tables[num] = None;
        }
        st.bypass_enabled = false;
        st.dma_setup_done = false;
        st.group.take()
    }

    /// The driver's part of the checker (kernel.md section 3), by provenance. `owner` is
    /// who owns the PE's group now (None: the kernel) and the ownership epoch.
    ///
    /// - Any owner: the PHB's TCE cache serves nothing its table no longer holds
    ///   (`TceCacheCoherent`).
    /// - User-owned: no kernel table is programmed (a borrowed table lent to the user, its
    ///   bitmap saturated, is the user's), no bypass, no device keeps a usable kernel DMA
    ///   table; each such finding comes with what a device access would reach, probed by
    ///   translation (`NoKernelTranslationOnUserGroup`); every other window was programmed
    ///   under the current ownership (`WindowsBelongToOwner`).
    /// - Kernel-owned: no user table is programmed, and every TCE of a kernel table was
    ///   handed out by the kernel allocator (`NoUserMappingAfterRelease`); window 0, bypass
    ///   and every device's table base are back (`KernelDmaRestored`).
    /// - With EEH on: no DMA served while the PE was frozen, and a frozen PE's devices
    ///   reach nothing (`NoDmaWhileFrozen`).
    pub fn check(&self, owner: Option<(OwnerCookie, u64)>) -> Vec<Finding> {
        let (mut out, probes, devices) = self.check_ownership(owner);
        out.extend(self.eeh_check(&probes, &devices));
        out
    }

    /// The ownership rules of [`Pe::check`], the bus addresses an EEH probe tries (each
    /// window's first mapped entry, the bypass base) and each device with the PE its DMA
    /// goes through.
    #[allow(clippy::type_complexity)]
    fn check_ownership(
        &self,
        owner: Option<(OwnerCookie, u64)>,
    ) -> (Vec<Finding>, Vec<u64>, Vec<(String, Option<Arc<Pe>>)>) {
        let st = self.lock();
        let devices = st
            .devices
            .iter()
            .map(|d| (d.name.clone(), d.pe()))
            .collect();
        let mut probes: Vec<u64> = st
            .tables
            .iter()
            .flatten()
            .filter_map(|t| t.mapped_runs_first())
            .collect();
        if matches!(Self::tve1(&st, self.env.ram_size), Tve1::Bypass { .. }) {
            probes.push(BYPASS_BASE);
        }
        let mut out = Vec::new();
        let mut found = |rule: Rule, device: Option<&str>, evidence: Evidence| {
            out.push(Finding {
                rule,
                device: device.map(str::to_string),
                evidence,
            })
        };
        for (slot, index, cached) in self.counters.cached() {
            let current = st.tables[slot as usize]
                .as_ref()
                .and_then(|t| t.tces.get(spapr_tce::TceIndex(index)).ok())
                .map_or(0, |e| e.0);
            if current != cached {
                found(
                    Rule::TceCacheCoherent,
                    None,
                    Evidence::StaleCache {
                        window: slot,
                        index,
                        cached,
                        current,
                    },
                );
            }
        }
        let window = |num: usize, t: &IommuTable, by: Programmer| Evidence::Window {
            window: num as u32,
            tve: self.tve_index(num),
            start: t.start(),
            size: t.window_size(),
            live: t.tces.count_mapped(),
            by,
            kernel_table: t.map.is_some(),
        };
        match owner {
            Some((o, epoch)) => {
                let current = Programmer::User { owner: o, epoch };
                for (num, t) in st.tables.iter().enumerate() {
                    let Some(t) = t else { continue };
                    let by = st.programmed_by[num].unwrap_or(Programmer::Kernel);
                    let lent = t.map.as_ref().is_some_and(|m| m.saturated());
                    if t.map.is_some() && !lent {
                        found(
                            Rule::NoKernelTranslationOnUserGroup,
                            None,
                            window(num, t, by),
                        );
                        if let Some(r) = t.mapped_runs_first() {
                            if let Some(hpa) = self.probe(&st, r) {
                                found(
                                    Rule::NoKernelTranslationOnUserGroup,
                                    None,
                                    Evidence::Reach { iova: r, hpa },
                                );
                            }
                        }
                    } else if !lent && by != current {
                        found(Rule::WindowsBelongToOwner, None, window(num, t, by));
                    }
                }
                if let Tve1::Bypass { size } = Self::tve1(&st, self.env.ram_size) {
                    found(
                        Rule::NoKernelTranslationOnUserGroup,
                        None,
                        Evidence::Bypass {
                            start: BYPASS_BASE,
                            end: BYPASS_BASE + size,
                        },
                    );
                    if let Some(hpa) = self.probe(&st, BYPASS_BASE) {
                        found(
                            Rule::NoKernelTranslationOnUserGroup,
                            None,
                            Evidence::Reach {
                                iova: BYPASS_BASE,
                                hpa,
                            },
                        );
                    }
                }
                for d in &st.devices {
                    let usable = d
                        .table_base
                        .get()
                        .is_some_and(|t| t.map.as_ref().is_some_and(|m| !m.saturated()));
                    if usable {
                        found(
                            Rule::NoKernelTranslationOnUserGroup,
                            Some(&d.name),
                            Evidence::TableBase,
                        );
                    }
                }
            }
            None => {
                for (num, t) in st.tables.iter().enumerate() {
                    let Some(t) = t else { continue };
                    let by = st.programmed_by[num].unwrap_or(Programmer::Kernel);
                    let Some(map) = &t.map else {
                        found(Rule::NoUserMappingAfterRelease, None, window(num, t, by));
                        continue;
                    };
                    // Provenance: the kernel DMA API writes only entries it allocated.
                    let g = *t.tces.geometry();
                    let first = g.first_index().0;
                    let mut strays = 0u64;
                    let _ = t.tces.for_each_entry(g.first_index(), g.entries(), |i, e| {
                        if !map.is_set(i.0 - first) {
                            strays += 1;
                            if strays <= 16 {
                                found(
                                    Rule::NoUserMappingAfterRelease,
                                    None,
                                    Evidence::Entry {
                                        window: num as u32,
                                        index: i.0,
                                        value: e.0,
                                    },
                                );
                            }
                        }
                    });
                    if strays > 16 {
                        found(
                            Rule::NoUserMappingAfterRelease,
                            None,
                            Evidence::Count {
                                what: "TCEs not from the kernel allocator (16 listed)",
                                expected: 0,
                                found: strays,
                            },
                        );
                    }
                }
                if !st.devices.is_empty() && st.dma_setup_done {
                    if st.tables[0].is_none() {
                        found(
                            Rule::KernelDmaRestored,
                            None,
                            Evidence::Missing {
                                what: "window 0 not restored: table unavailable for kernel DMA",
                            },
                        );
                    }
                    if self.ops == TableGroupOps::Ioda2
                        && !self.env.bypass_disabled
                        && !st.bypass_enabled
                    {
                        found(
                            Rule::KernelDmaRestored,
                            None,
                            Evidence::Missing {
                                what: "bypass not re-enabled",
                            },
                        );
                    }
                    for d in &st.devices {
                        if !d.has_table_base() {
                            found(
                                Rule::KernelDmaRestored,
                                Some(&d.name),
                                Evidence::Missing {
                                    what: "iommu_table_base is NULL",
                                },
                            );
                        }
                    }
                }
            }
        }
        drop(st);
        (out, probes, devices)
    }
}

/// Why a device access faulted (an EEH freeze on real hardware).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DmaFault {
    /// The TVE selected by the address is not programmed.
    #[error("{iova:#x}: TVE#{tve} not programmed")]
    NoWindow {
        /// Faulting bus address.
        iova: u64,
        /// TVE selected.
        tve: u32,
    },
    /// Through bypass, past the end of the bypass window.
    #[error("{iova:#x}: beyond the bypass window")]
    BeyondBypass {
        /// Faulting bus address.
        iova: u64,
    },
    /// The window's table refused it.
    #[error("{0}")]
    Tce(Fault),
    /// The translated address is beyond RAM.
    #[error("{0}")]
    Ram(crate::ram::BeyondRam),
    /// The device has no PE (never set up, or removed).
    #[error("device has no PE")]
    NoPe,
    /// The PE is frozen by EEH: its DMA is stopped until software thaws it.
    #[error("{iova:#x}: PE {pe} is frozen (EEH): DMA stopped")]
    Frozen {
        /// Bus address.
        iova: u64,
        /// PE number.
        pe: u32,
    },
}

#[cfg(test)]
mod tests {
    use crate::{PowerNv, PowerNvConfig};
    use iommu_core::{Evidence, Rule};
    use spapr_tce::{DmaDirection, Tce, TceIndex, TcePerm};

    /// A planted fault (only this crate can write a kernel table): a TCE its allocator
    /// never handed out is not the kernel's, and is named with its index and value.
    #[test]
    fn a_kernel_table_entry_the_allocator_did_not_hand_out_is_named() {
        let m = PowerNv::booted(PowerNvConfig::seed()).unwrap();
        let nic = m.device("nic0").unwrap();
        let pe = m.pe_of(nic).unwrap();
        let t = pe.table(0).unwrap();
        let idx = TceIndex(t.geometry().first_index().0 + 7);
        t.tces
            .set(idx, Tce::new(0x9000_0000, TcePerm::READ))
            .unwrap();
        let v = m.check();
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].rule, Rule::NoUserMappingAfterRelease);
        assert_eq!(
            v[0].evidence,
            Evidence::Entry {
                window: 0,
                index: idx.0,
                value: 0x9000_0001
            }
        );
        // The kernel's own mappings are its allocator's: silent.
        t.tces.set(idx, Tce::EMPTY).unwrap();
        m.bind_driver(nic, "ixgbe").unwrap();
        m.dma_map(nic, 0x1000_0000, 0x3000, DmaDirection::ToDevice, 0)
            .unwrap();
        assert!(m.check().is_empty());
    }
}
