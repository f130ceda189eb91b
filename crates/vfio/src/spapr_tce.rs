//! The SPAPR TCE IOMMU driver (drivers/vfio/vfio_iommu_spapr_tce.c): `tce_container`,
//! attaching and detaching groups, the container ioctls in the kernel's order, dynamic DMA
//! windows, preregistration, MAP_DMA and UNMAP_DMA, and the release of everything.
//!
//! Every window is programmed with a token of the group's live claim
//! ([`spapr_platform::WindowToken`]), so VFIO can only touch PEs it owns. Every error path
//! gives back what it took: a charge is a value returned when dropped (`mm.rs`), a window
//! that fails half-way is unset on every group it was set on, a MAP that fails clears what
//! it wrote, and no TCE is ever live without its user address beside it.

use crate::container::{ContainerFd, IoctlArg};
use crate::group::{GroupFd, VfioGroup};
use crate::mm::{decrement, Charge, Mm, Process};
use crate::uapi::{
    self, ioctl, Arg, DmaMap, DmaUnmap, RegisterMemory, TceCreate, TceInfo, TceRemove,
};
use crate::vfio::{State, Vfio};
use crate::KernelProfile;
use iommu_core::{Errno, EventKind, GroupClaim};
use spapr_platform::pe::TableGroupOps;
use spapr_platform::{FaultPoint, OpalError, Pe, UserTable, WindowError};
use spapr_tce::{Tce, TceIndex, TcePerm, Ua};
use std::collections::HashMap;
use std::sync::Arc;

/// One container window.
pub(crate) struct Window {
    pub(crate) table: UserTable,
    /// `it_userspace` (v2): the user address behind each entry.
    pub(crate) ua: Option<spapr_tce::TceTable<Ua>>,
    /// The size the caller asked for (the table may be larger).
    pub(crate) requested: u64,
    /// The pages charged for the table.
    charge: Option<Charge>,
    /// The `linux` quirk of a borrowed table: charged at creation, never un-charged.
    leak_charge: bool,
    /// Live entries: while 0, a MAP needs no scan for entries to replace.
    pub(crate) live: u64,
}

/// `struct tce_container`: the driver's state of one container.
pub(crate) struct TceContainer {
    pub(crate) v2: bool,
    /// The owning process, set once by the calls that take it (`tce_iommu_mm_set`).
    pub(crate) mm: Option<Mm>,
    pub(crate) enabled: bool,
    pub(crate) def_window_pending: bool,
    pub(crate) windows: [Option<Window>; 2],
    /// Preregistered regions (ids into the process's list).
    pub(crate) prereg: Vec<usize>,
    /// v1 ENABLE's charge.
    enable_charge: Option<Charge>,
    /// v1: pins per host page.
    pub(crate) pins: HashMap<u64, u32>,
}

impl TceContainer {
    fn new(v2: bool) -> Self {
        Self {
            v2,
            mm: None,
            enabled: false,
            def_window_pending: false,
            windows: [None, None],
            prereg: Vec::new(),
            enable_charge: None,
            pins: HashMap::new(),
        }
    }
}

/// One MAP_DMA after its checks: window `num`, `n` entries from `first`, user memory
/// from `vaddr`, permission `perm`, for process `mm`.
#[derive(Clone, Copy)]
struct MapReq {
    num: usize,
    /// The PE injected failures are matched against (the container's first).
    target: (u32, u32),
    mm: Mm,
    first: TceIndex,
    n: u64,
    vaddr: u64,
    perm: TcePerm,
}

/// The PEs of `fds` with their claims (the tokens' source), in attach order.
fn claimed<'a>(
    groups: &'a HashMap<u32, VfioGroup>,
    fds: &[GroupFd],
) -> Vec<(&'a Arc<Pe>, &'a GroupClaim)> {
    fds.iter()
        .filter_map(|g| groups.get(&g.0))
        .filter_map(|g| g.claim.as_ref().map(|c| (&g.pe, c)))
        .collect()
}

impl Vfio {
    pub(crate) fn opal(&self, e: OpalError) -> Errno {
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

    fn window_error(&self, e: WindowError) -> Errno {
        match e {
            WindowError::NotOwner => Errno::Eperm,
            WindowError::KernelTable => Errno::Einval,
            WindowError::Opal(o) => self.opal(o),
        }
    }

    /// `VFIO_SET_IOMMU`: the driver takes the container and attaches its groups in order;
    /// if one cannot be attached, the container is left without a driver.
    pub(crate) fn set_iommu(&self, st: &mut State, fd: ContainerFd, v2: bool) -> Result<(), Errno> {
        let groups = st.containers.get(&fd.0).ok_or(Errno::Ebadf)?.groups.clone();
        let c = st.containers.get_mut(&fd.0).ok_or(Errno::Ebadf)?;
        c.tce = Some(TceContainer::new(v2));
        let saved = std::mem::take(&mut c.groups);
        let mut result = Ok(());
        for g in &groups {
            let claim = st.groups.get_mut(&g.0).and_then(|g| g.claim.take());
            let Some(claim) = claim else {
                result = Err(Errno::Einval);
                break;
            };
            let r = self.attach_group(st, fd, *g, &claim);
            if let Some(vg) = st.groups.get_mut(&g.0) {
                vg.claim = Some(claim);
            }
            if let Err(e) = r {
                result = Err(e);
                break;
            }
            if let Some(c) = st.containers.get_mut(&fd.0) {
                c.groups.push(*g);
            }
        }
        let c = st.containers.get_mut(&fd.0).ok_or(Errno::Ebadf)?;
        c.groups = saved;
        if result.is_err() {
            c.tce = None;
        }
        result
    }

    /// `tce_iommu_attach_group`: refusals in the kernel's order, then the container's
    /// windows programmed on the new group's PE (unset again if one fails).
    pub(crate) fn attach_group(
        &self,
        st: &mut State,
        cfd: ContainerFd,
        gfd: GroupFd,
        claim: &GroupClaim,
    ) -> Result<(), Errno> {
        let pe = st.groups.get(&gfd.0).ok_or(Errno::Ebadf)?.pe.clone();
        let c = st.containers.get(&cfd.0).ok_or(Errno::Ebadf)?;
        let first_ops = c
            .groups
            .first()
            .and_then(|g| st.groups.get(&g.0))
            .map(|g| (g.pe.ops, g.pe.create_table));
        let ngroups = c.groups.len();
        let t = c.tce.as_ref().ok_or(Errno::Einval)?;
        if t.v2 && pe.max_dynamic_windows() == 0 {
            return Err(Errno::Einval);
        }
        if !t.v2 && ngroups > 0 {
            return Err(Errno::Ebusy);
        }
        if first_ops.is_some_and(|o| o != (pe.ops, pe.create_table)) {
            return Err(Errno::Eperm);
        }
        let token = pe.window_token(claim)?;
        let c = st.containers.get_mut(&cfd.0).ok_or(Errno::Ebadf)?;
        let t = c.tce.as_mut().ok_or(Errno::Einval)?;
        let mut result = Ok(());
        let mut done = Vec::new();
        for (i, w) in t.windows.iter().enumerate() {
            if let Some(w) = w {
                if let Err(e) = pe.set_window(i, &w.table, &token) {
                    result = Err(e);
                    break;
                }
                done.push(i);
            }
        }
        if ngroups == 0 && t.windows[0].is_none() {
            // Set even when taking the windows failed (as the kernel does).
            t.def_window_pending = true;
        }
        if let Err(e) = result {
            for i in done {
                let _ = pe.unset_window(i, &token);
            }
            return Err(self.window_error(e));
        }
        Ok(())
    }

    /// `tce_iommu_detach_group` → `tce_iommu_release_ownership`: every TCE of the
    /// container's windows cleared, then the windows unset on the group's PE.
    pub(crate) fn detach_group(&self, st: &mut State, cfd: ContainerFd, gfd: GroupFd) {
        let State {
            containers,
            procs,
            groups,
            imbalances,
            ..
        } = st;
        let Some(g) = groups.get(&gfd.0) else {
            return;
        };
        let Some(t) = containers.get_mut(&cfd.0).and_then(|c| c.tce.as_mut()) else {
            return;
        };
        let token = g.claim.as_ref().and_then(|c| g.pe.window_token(c).ok());
        let strict = self.profile() == KernelProfile::Strict;
        for i in 0..2 {
            if t.windows[i].is_some() {
                let early = clear_window(t, procs, i, None, imbalances, strict);
                self.unpinned_early(early);
                if let Some(token) = &token {
                    let _ = g.pe.unset_window(i, token);
                }
            }
        }
    }

    /// `tce_iommu_release`, the driver's part: every window's TCEs cleared and its table
    /// freed (its charge given back, or kept for good where `linux` keeps it), every
    /// region put, the enable charge returned.
    pub(crate) fn release_driver(&self, st: &mut State, cfd: ContainerFd) {
        let Some(mut t) = st.containers.get_mut(&cfd.0).and_then(|c| c.tce.take()) else {
            return;
        };
        let State {
            procs, imbalances, ..
        } = st;
        let strict = self.profile() == KernelProfile::Strict;
        for i in 0..2 {
            if t.windows[i].is_some() {
                let early = clear_window(&mut t, procs, i, None, imbalances, strict);
                self.unpinned_early(early);
            }
            if let Some(w) = t.windows[i].take() {
                self.free_window(w);
            }
        }
        if let Some(mm) = t.mm {
            for id in std::mem::take(&mut t.prereg) {
                let kept = procs
                    .get_mut(&mm)
                    .and_then(|p| p.regions.get_mut(id))
                    .and_then(Option::as_mut)
                    .filter(|r| !strict && r.mapped > 0);
                if let Some(r) = kept {
                    // `tce_iommu_prereg_free` → `mm_iommu_put`: -EBUSY while another
                    // container of the mm maps the region; the release WARNs and goes on,
                    // and the region is never put: it lives until the mm does.
                    let pages = r._charge.leak_in_place();
                    let (ua, size) = (r.ua, r.size);
                    self.quirk(&format!(
                        "container released while another container maps region \
                         {ua:#x}+{size:#x}: mm_iommu_put is -EBUSY (WARN); the region stays \
                         registered and pinned, {pages} charged pages stay charged until the \
                         process exits"
                    ));
                    continue;
                }
                put_region(procs, mm, id, imbalances);
            }
        }
        drop(t);
    }

    /// Frees a window: its charge goes back, except the `linux` borrowed-table quirk.
    fn free_window(&self, w: Window) {
        if let Some(ch) = w.charge {
            if w.leak_charge {
                let pages = ch.leak();
                self.quirk(&format!(
                    "borrowed table released: {pages} charged pages are never un-charged"
                ));
            }
        }
    }

    /// `tce_iommu_ioctl` for everything but CHECK_EXTENSION: another process's call is
    /// -EPERM once the mm is set; then each ioctl checks the container's version first
    /// (-ENOTTY for a v1 ioctl on v2 and the reverse), and only REGISTER_MEMORY,
    /// TCE_CREATE, TCE_REMOVE and ENABLE set the mm (`tce_iommu_mm_set`).
    pub(crate) fn tce_iommu_ioctl(
        &self,
        st: &mut State,
        mm: Mm,
        fd: ContainerFd,
        nr: u32,
        arg: IoctlArg<'_>,
    ) -> Result<i64, Errno> {
        let t = tce(st, fd)?;
        if t.mm.is_some_and(|owner| owner != mm) {
            return Err(Errno::Eperm);
        }
        let v2 = t.v2;
        match nr {
            ioctl::SPAPR_TCE_GET_INFO => self.get_info(st, fd, bytes(arg)?),
            ioctl::MAP_DMA => self.map_dma(st, fd, bytes(arg)?),
            ioctl::UNMAP_DMA => self.unmap_dma(st, fd, bytes(arg)?),
            ioctl::REGISTER_MEMORY if v2 => {
                mm_set(st, fd, mm)?;
                self.register(st, fd, mm, bytes(arg)?)
            }
            ioctl::UNREGISTER_MEMORY if v2 => {
                if tce(st, fd)?.mm.is_none() {
                    return Err(Errno::Eperm);
                }
                self.unregister(st, fd, bytes(arg)?)
            }
            ioctl::ENABLE if !v2 => self.enable(st, fd, mm),
            ioctl::DISABLE if !v2 => {
                let t = tce_mut(st, fd)?;
                t.enabled = false;
                // Returned here (`account_locked_vm(.., false)`).
                drop(t.enable_charge.take());
                Ok(0)
            }
            ioctl::TCE_CREATE if v2 => {
                mm_set(st, fd, mm)?;
                self.create(st, fd, bytes(arg)?)
            }
            ioctl::TCE_REMOVE if v2 => {
                mm_set(st, fd, mm)?;
                self.remove(st, fd, bytes(arg)?)
            }
            ioctl::EEH_PE_OP => self.eeh_pe_op(st, fd, bytes(arg)?),
            _ => Err(Errno::Enotty),
        }
    }

    /// `tce_iommu_enable` (v1): -EBUSY, -ENODEV, -EPERM for a PE without a 32-bit window,
    /// then the mm is set and the window's pages charged.
    fn enable(&self, st: &mut State, fd: ContainerFd, mm: Mm) -> Result<i64, Errno> {
        if tce(st, fd)?.enabled {
            return Err(Errno::Ebusy);
        }
        let pe = first_pe(st, fd).ok_or(Errno::Enodev)?;
        if pe.tce32_size == 0 {
            return Err(Errno::Eperm);
        }
        mm_set(st, fd, mm)?;
        let charge = self.charge(st, mm, pe.tce32_size >> self.page_shift())?;
        let t = tce_mut(st, fd)?;
        t.enabled = true;
        t.enable_charge = Some(charge);
        Ok(0)
    }

    fn get_info(&self, st: &State, fd: ContainerFd, arg: &mut [u8]) -> Result<i64, Errno> {
        let t = tce(st, fd)?;
        let pe = first_pe(st, fd).ok_or(Errno::Enxio)?;
        let mut info = TceInfo::read(arg)?;
        if (info.argsz as usize) < TceInfo::MINSZ {
            return Err(Errno::Einval);
        }
        info.dma32_window_start = pe.tce32_start as u32;
        info.dma32_window_size = pe.tce32_size as u32;
        if t.v2 && pe.max_dynamic_windows() > 0 {
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

    /// `tce_iommu_create_window`: window `slot` (or the first free one) of the given
    /// geometry, charged, created, programmed on every group; returns its start. Every
    /// failure gives back what was taken (the `linux` quirk of a refused geometry keeps
    /// its charge, traced).
    fn create_window(
        &self,
        st: &mut State,
        fd: ContainerFd,
        page_shift: u32,
        window_size: u64,
        levels: u32,
        slot: Option<usize>,
    ) -> Result<u64, Errno> {
        let t = tce(st, fd)?;
        let pe = first_pe(st, fd).ok_or(Errno::Enxio)?;
        let num = match slot {
            Some(n) => n,
            None => t
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
        let mm = t.mm;
        let v2 = t.v2;
        let borrowed = pe.ops == TableGroupOps::Borrowing;
        let pages = if borrowed {
            // The borrowed table's size is charged; its allocated size reads as 0.
            size >> self.page_shift()
        } else {
            size.div_ceil(1 << self.page_shift())
        };
        let charge = match mm {
            Some(mm) => Some(self.charge(st, mm, pages)?),
            None => None,
        };
        let made = {
            let c = st.containers.get(&fd.0).ok_or(Errno::Ebadf)?;
            let first = claimed(&st.groups, &c.groups);
            let (p, claim) = first.first().ok_or(Errno::Enxio)?;
            let token = p.window_token(claim)?;
            p.create_table(num, page_shift, window_size, levels, &token)
                .and_then(|t| {
                    // The user-address table is allocated inside create_table
                    // (`pnv_pci_ioda2_table_alloc_pages(..., alloc_userspace_copy)`).
                    let fails = v2
                        && !borrowed
                        && self
                            .machine()
                            .env()
                            .take_fault(FaultPoint::UserTable, p.id())
                            .is_some();
                    if fails {
                        Err(FaultPoint::UserTable.errno())
                    } else {
                        Ok(t)
                    }
                })
        };
        let table = match made {
            Ok(t) => t,
            Err(e) => {
                if let (KernelProfile::Linux, Some(ch)) = (self.profile(), charge) {
                    let pages = ch.leak();
                    self.quirk(&format!(
                        "create_table failed ({e}) after {pages} pages were charged; \
                         the charge is not returned"
                    ));
                }
                return Err(e);
            }
        };
        // The user-address view is made with the table, before any window is set
        // (`pnv_pci_ioda2_create_table_userspace`).
        let ua = if v2 && !borrowed {
            let u = spapr_tce::TceTable::new(*table.geometry(), spapr_tce::TableOptions::default())
                .map_err(|_| Errno::Enomem)?;
            Some(u)
        } else {
            None
        };
        {
            let c = st.containers.get(&fd.0).ok_or(Errno::Ebadf)?;
            let pes = claimed(&st.groups, &c.groups);
            let mut set: Vec<(&Arc<Pe>, spapr_platform::WindowToken<'_>)> = Vec::new();
            for (p, claim) in &pes {
                let programmed = p
                    .window_token(claim)
                    .map_err(|e| (e, None))
                    .and_then(|token| match p.set_window(num, &table, &token) {
                        Ok(()) => Ok(token),
                        Err(e) => Err((Errno::Eperm, Some(e))),
                    });
                match programmed {
                    Ok(token) => set.push((p, token)),
                    Err((errno, opal)) => {
                        // Unset what was set; the table and its charge go with this scope.
                        for (q, tok) in &set {
                            let _ = q.unset_window(num, tok);
                        }
                        return Err(opal.map_or(errno, |e| self.window_error(e)));
                    }
                }
            }
        }
        let start = table.start();
        let leak_charge = borrowed && self.profile() == KernelProfile::Linux;
        if leak_charge && pages > 0 {
            self.quirk(&format!(
                "borrowed table charged {pages} pages but will un-charge 0 at release"
            ));
        }
        let t = tce_mut(st, fd)?;
        t.windows[num] = Some(Window {
            table,
            ua,
            requested: window_size,
            charge,
            leak_charge,
            live: 0,
        });
        Ok(start)
    }

    /// `tce_iommu_create_default_window`, run lazily by MAP, UNMAP and CREATE.
    fn default_window(&self, st: &mut State, fd: ContainerFd) -> Result<(), Errno> {
        if !tce(st, fd)?.def_window_pending {
            return Ok(());
        }
        let pe = first_pe(st, fd).ok_or(Errno::Enodev)?;
        let start = self.create_window(st, fd, 12, pe.tce32_size, 1, Some(0))?;
        if start != 0 {
            return Err(Errno::Einval);
        }
        tce_mut(st, fd)?.def_window_pending = false;
        Ok(())
    }

    fn create(&self, st: &mut State, fd: ContainerFd, arg: &mut [u8]) -> Result<i64, Errno> {
        if no_groups(st, fd) {
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

    /// `tce_iommu_remove_window`: found by containment; TCEs cleared, unset on every
    /// group, the table freed.
    fn remove(&self, st: &mut State, fd: ContainerFd, arg: &mut [u8]) -> Result<i64, Errno> {
        if no_groups(st, fd) {
            return Err(Errno::Enxio);
        }
        let a = TceRemove::read(arg)?;
        if (a.argsz as usize) < TceRemove::MINSZ || a.flags != 0 {
            return Err(Errno::Einval);
        }
        let t = tce_mut(st, fd)?;
        if t.def_window_pending && a.start_addr == 0 {
            t.def_window_pending = false;
            return Ok(0);
        }
        let num = t
            .windows
            .iter()
            .position(|w| w.as_ref().is_some_and(|w| w.table.contains(a.start_addr)))
            .ok_or(Errno::Einval)?;
        let State {
            containers,
            procs,
            groups,
            imbalances,
            ..
        } = st;
        let c = containers.get_mut(&fd.0).ok_or(Errno::Ebadf)?;
        let pes = claimed(groups, &c.groups);
        let t = c.tce.as_mut().ok_or(Errno::Einval)?;
        let early = clear_window(
            t,
            procs,
            num,
            None,
            imbalances,
            self.profile() == KernelProfile::Strict,
        );
        self.unpinned_early(early);
        for (p, claim) in &pes {
            let token = p.window_token(claim)?;
            p.unset_window(num, &token)?;
        }
        if let Some(w) = t.windows[num].take() {
            self.free_window(w);
        }
        Ok(0)
    }

    /// `tce_iommu_register_pages` (`mm_iommu_new`, `mm_iommu_get`).
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
        let t = tce(st, fd)?;
        let id = match existing {
            Some((id, true)) if t.prereg.contains(&id) => return Err(Errno::Ebusy),
            Some((_, false)) => return Err(Errno::Einval),
            Some((id, true)) => {
                // Registered by another container of this mm: shared.
                if let Some(Some(r)) = st.procs.get_mut(&mm).map(|p| &mut p.regions[id]) {
                    r.users += 1;
                }
                id
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
                let charge = self.charge(st, mm, a.size >> self.page_shift())?;
                // mm_iommu_do_alloc pins after charging; a short pin unpins what it got
                // and returns the charge with -EFAULT.
                let target = first_pe(st, fd).map_or((u32::MAX, u32::MAX), |p| p.id());
                if self
                    .machine()
                    .env()
                    .take_fault(FaultPoint::Pin, target)
                    .is_some()
                {
                    drop(charge);
                    return Err(FaultPoint::Pin.errno());
                }
                let p = st.procs.entry(mm).or_default();
                p.regions.push(Some(crate::mm::Region {
                    ua: a.vaddr,
                    size: a.size,
                    page_shift: vma.page_shift,
                    hpa: vma.hpa + (a.vaddr - vma.ua),
                    users: 1,
                    mapped: 0,
                    _charge: charge,
                }));
                p.regions.len() - 1
            }
        };
        let t = tce_mut(st, fd)?;
        t.prereg.push(id);
        t.enabled = true;
        Ok(0)
    }

    /// `tce_iommu_unregister_pages`.
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
        let t = tce(st, fd)?;
        let mm = t.mm.ok_or(Errno::Eperm)?;
        let p = st.procs.get(&mm);
        let id = t
            .prereg
            .iter()
            .copied()
            .find(|id| {
                p.and_then(|p| p.regions.get(*id))
                    .and_then(|r| r.as_ref())
                    .is_some_and(|r| r.ua == a.vaddr && r.size == a.size)
            })
            .ok_or(Errno::Enoent)?;
        let mapped = p
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
            tce_mut(st, fd)?.prereg.retain(|x| *x != id);
            return Ok(0);
        }
        tce_mut(st, fd)?.prereg.retain(|x| *x != id);
        put_region(&mut st.procs, mm, id, &mut st.imbalances);
        Ok(0)
    }

    /// `VFIO_IOMMU_MAP_DMA` after its checks, in the kernel's order (kernel.md 8).
    fn map_dma(&self, st: &mut State, fd: ContainerFd, arg: &mut [u8]) -> Result<i64, Errno> {
        if !tce(st, fd)?.enabled {
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
        let t = tce(st, fd)?;
        let num = window_of(t, a.iova).ok_or(Errno::Enxio)?;
        let w = t.windows[num].as_ref().ok_or(Errno::Enxio)?;
        let g = *w.table.geometry();
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
        // A range, not bookkeeping: past the limit there is no room.
        let room = limit.saturating_sub(first_rel);
        let n = if npages <= room {
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
                 past the table; {room} in-window pages mapped, 0 returned",
                a.iova
            ));
            room
        };
        let v2 = t.v2;
        let mm = t.mm.ok_or(Errno::Eperm)?;
        let first = TceIndex(g.first_index().0 + first_rel);
        if self.profile() == KernelProfile::Strict {
            let mut live = false;
            let _ = w.table.for_each_entry(first, n, |_, _| live = true);
            if live {
                return Err(Errno::Ebusy);
            }
        }
        let target = first_pe(st, fd).map_or((u32::MAX, u32::MAX), |p| p.id());
        let req = MapReq {
            num,
            target,
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

    /// The `linux` v1 quirk of unpinning before the kill, traced when it happened.
    fn unpinned_early(&self, pages: u64) {
        if pages > 0 {
            self.quirk(&format!(
                "v1 clear unpinned {pages} pages before the TCE kill (a device may reach them \
                 through its TCE cache until the kill)"
            ));
        }
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
            target: _,
            n,
            vaddr,
            perm,
        } = req;
        let State {
            containers,
            procs,
            imbalances,
            ..
        } = st;
        let t = containers
            .get_mut(&fd.0)
            .and_then(|c| c.tce.as_mut())
            .ok_or(Errno::Ebadf)?;
        let w = t.windows[num].as_mut().ok_or(Errno::Enxio)?;
        let shift = w.table.geometry().page_shift().shift();
        let p = procs.get_mut(&mm).ok_or(Errno::Einval)?;
        // Fast path: the whole range in one region with pages at least as large, and no
        // live entry to replace (this container is the table's only writer, so a read-only
        // scan is enough): two bulk writes and one use count. The user addresses go in
        // first, so no TCE is ever live without its address.
        let end = vaddr.checked_add(n << shift).ok_or(Errno::Einval)?;
        let whole = p.regions.iter().position(|r| {
            r.as_ref()
                .is_some_and(|r| vaddr >= r.ua && end <= r.ua + r.size && r.page_shift >= shift)
        });
        let env = self.machine().env();
        // Armed failures force the per-entry path, where they strike at their entry; with
        // none the injection list is not locked per entry.
        let armed = env.armed(FaultPoint::TceStore, req.target)
            || env.armed(FaultPoint::RegionLookup, req.target);
        let inject = |point: FaultPoint| armed && env.take_fault(point, req.target).is_some();
        if let (Some(id), Some(u), false) = (whole, w.ua.as_ref(), armed) {
            let mut live = false;
            if w.live > 0 {
                let _ = w.table.for_each_entry(first, n, |_, _| live = true);
            }
            if !live {
                if let Some(r) = p.regions[id].as_mut() {
                    let hpa = r.hpa + (vaddr - r.ua);
                    u.put_linear(first, n, vaddr, TcePerm::NONE)
                        .map_err(|_| Errno::Enomem)?;
                    if w.table.put_linear(first, n, hpa, perm).is_err() {
                        let _ = u.zero_exclusive(first, n);
                        return Err(Errno::Enomem);
                    }
                    r.mapped += n;
                    w.live += n;
                    return Ok(0);
                }
            }
        }
        let r = map_v2_each(w, p, req, shift, imbalances, &inject);
        w.live = w.table.count_mapped();
        r
    }

    fn map_v1(&self, st: &mut State, fd: ContainerFd, req: MapReq) -> Result<i64, Errno> {
        let r = self.map_v1_pin(st, fd, req);
        if let Some(w) = st
            .containers
            .get_mut(&fd.0)
            .and_then(|c| c.tce.as_mut())
            .and_then(|t| t.windows[req.num].as_mut())
        {
            w.live = w.table.count_mapped();
        }
        r
    }

    /// MAP_DMA (v1): pin and map entry by entry.
    fn map_v1_pin(&self, st: &mut State, fd: ContainerFd, req: MapReq) -> Result<i64, Errno> {
        let MapReq {
            num,
            mm,
            first,
            target: _,
            n,
            vaddr,
            perm,
        } = req;
        let State {
            containers,
            procs,
            imbalances: bad,
            ..
        } = st;
        let t = containers
            .get_mut(&fd.0)
            .and_then(|c| c.tce.as_mut())
            .ok_or(Errno::Ebadf)?;
        let p = procs.get(&mm).ok_or(Errno::Efault)?;
        let table = t.windows[num].as_ref().ok_or(Errno::Enxio)?.table.clone();
        let shift = table.geometry().page_shift().shift();
        let env = self.machine().env();
        // The injection list is locked once per call here, and per entry only while a
        // failure is armed for this PE.
        let armed = [FaultPoint::Pin, FaultPoint::TceStore].map(|p| env.armed(p, req.target));
        let inject = |point: FaultPoint| {
            let i = usize::from(point == FaultPoint::TceStore);
            armed[i] && env.take_fault(point, req.target).is_some()
        };
        for k in 0..n {
            let ua = vaddr + (k << shift);
            if inject(FaultPoint::Pin) {
                undo_v1(t, p, &table, first, k, bad);
                return Err(FaultPoint::Pin.errno());
            }
            let Some(v) = p.vma(ua) else {
                undo_v1(t, p, &table, first, k, bad);
                return Err(Errno::Efault);
            };
            let hpa = v.hpa + (ua - v.ua);
            // Pinned once per IOMMU page.
            *t.pins.entry(hpa >> v.page_shift).or_default() += 1;
            if v.page_shift < shift {
                match self.profile() {
                    KernelProfile::Linux => self
                        .quirk("v1 MAP: host page smaller than the IOMMU page; its pin is leaked"),
                    KernelProfile::Strict => unpin(&mut t.pins, hpa, v.page_shift, bad),
                }
                undo_v1(t, p, &table, first, k, bad);
                return Err(Errno::Eperm);
            }
            let stored = if inject(FaultPoint::TceStore) {
                Err(FaultPoint::TceStore.errno())
            } else {
                table
                    .exchange_no_kill(TceIndex(first.0 + k), Tce::new(hpa, perm))
                    .map_err(|_| Errno::Enomem)
            };
            match stored {
                Ok(old) if !old.is_empty() => {
                    let old_hpa = old.page_addr(shift);
                    let ps = p.host_page_shift(old_hpa).unwrap_or(shift);
                    unpin(&mut t.pins, old_hpa, ps, bad)
                }
                Ok(_) => {}
                Err(_) => {
                    unpin(&mut t.pins, hpa, v.page_shift, bad);
                    undo_v1(t, p, &table, first, k, bad);
                    return Err(Errno::Enomem);
                }
            }
        }
        table.kill(first, n);
        Ok(0)
    }

    fn unmap_dma(&self, st: &mut State, fd: ContainerFd, arg: &mut [u8]) -> Result<i64, Errno> {
        if !tce(st, fd)?.enabled {
            return Err(Errno::Eperm);
        }
        let a = DmaUnmap::read(arg)?;
        if (a.argsz as usize) < DmaUnmap::MINSZ || a.flags != 0 {
            return Err(Errno::Einval);
        }
        self.default_window(st, fd)?;
        let t = tce(st, fd)?;
        let num = window_of(t, a.iova).ok_or(Errno::Enxio)?;
        let w = t.windows[num].as_ref().ok_or(Errno::Enxio)?;
        let g = *w.table.geometry();
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
            containers,
            procs,
            imbalances,
            ..
        } = st;
        let t = containers
            .get_mut(&fd.0)
            .and_then(|c| c.tce.as_mut())
            .ok_or(Errno::Ebadf)?;
        let early = clear_window(
            t,
            procs,
            num,
            Some((TceIndex(g.first_index().0 + rel), n)),
            imbalances,
            self.profile() == KernelProfile::Strict,
        );
        self.unpinned_early(early);
        self.note(
            EventKind::Unmap,
            None,
            format!("UNMAP_DMA iova {:#x} size {:#x}", a.iova, n << shift),
        );
        Ok(0)
    }
}

/// The driver state of container `fd` (-EINVAL without a driver).
pub(crate) fn tce(st: &State, fd: ContainerFd) -> Result<&TceContainer, Errno> {
    st.containers
        .get(&fd.0)
        .ok_or(Errno::Ebadf)?
        .tce
        .as_ref()
        .ok_or(Errno::Einval)
}

fn tce_mut(st: &mut State, fd: ContainerFd) -> Result<&mut TceContainer, Errno> {
    st.containers
        .get_mut(&fd.0)
        .ok_or(Errno::Ebadf)?
        .tce
        .as_mut()
        .ok_or(Errno::Einval)
}

/// The bytes of a struct argument; an integer argument has none (`copy_from_user`
/// faults).
fn bytes<'a>(arg: IoctlArg<'a>) -> Result<&'a mut [u8], Errno> {
    match arg {
        IoctlArg::Bytes(b) => Ok(b),
        IoctlArg::Int(_) => Err(Errno::Efault),
    }
}

/// `tce_groups_attached` is false.
fn no_groups(st: &State, fd: ContainerFd) -> bool {
    st.containers
        .get(&fd.0)
        .map_or(true, |c| c.groups.is_empty())
}

/// `tce_iommu_mm_set`: the first caller owns the container; another gets -EPERM.
fn mm_set(st: &mut State, fd: ContainerFd, mm: Mm) -> Result<(), Errno> {
    let t = tce_mut(st, fd)?;
    match t.mm {
        Some(owner) if owner != mm => Err(Errno::Eperm),
        Some(_) => Ok(()),
        None => {
            t.mm = Some(mm);
            Ok(())
        }
    }
}

/// The first attached group's PE (the container's `table_group`).
pub(crate) fn first_pe(st: &State, fd: ContainerFd) -> Option<Arc<Pe>> {
    st.containers
        .get(&fd.0)?
        .groups
        .first()
        .and_then(|g| st.groups.get(&g.0))
        .map(|g| g.pe.clone())
}

fn window_of(t: &TceContainer, iova: u64) -> Option<usize> {
    t.windows
        .iter()
        .position(|w| w.as_ref().is_some_and(|w| w.table.contains(iova)))
}

/// Drops one pin of the host page holding `hpa`. A page that holds no pin is a
/// bookkeeping bug: recorded in `bad` (reported by `Vfio::audit`), never ignored.
fn unpin(pins: &mut HashMap<u64, u32>, hpa: u64, page_shift: u32, bad: &mut Vec<String>) {
    let key = hpa >> page_shift;
    match pins.get_mut(&key) {
        Some(n) => {
            *n -= 1;
            if *n == 0 {
                pins.remove(&key);
            }
        }
        None => bad.push(format!(
            "an unpin of host page {hpa:#x}, which holds no pin"
        )),
    }
}

/// MAP_DMA (v2) entry by entry: any mix of regions, replacing live entries. Each entry's
/// user address is stored before its TCE, so a failure never leaves a live TCE without
/// one; a failure clears everything this call wrote.
fn map_v2_each(
    w: &mut Window,
    p: &mut Process,
    req: MapReq,
    shift: u32,
    bad: &mut Vec<String>,
    inject: &dyn Fn(FaultPoint) -> bool,
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
        if inject(FaultPoint::RegionLookup) {
            undo(w, p, first, k, bad);
            return Err(FaultPoint::RegionLookup.errno());
        }
        let in_region = |r: &crate::mm::Region| ua >= r.ua && ua + (1 << shift) <= r.ua + r.size;
        let id = match region.filter(|id| p.regions[*id].as_ref().is_some_and(in_region)) {
            Some(id) => id,
            None => match p
                .regions
                .iter()
                .position(|r| r.as_ref().is_some_and(&in_region))
            {
                Some(id) => id,
                None => {
                    undo(w, p, first, k, bad);
                    return Err(Errno::Einval);
                }
            },
        };
        region = Some(id);
        let Some(r) = p.regions[id].as_ref() else {
            undo(w, p, first, k, bad);
            return Err(Errno::Einval);
        };
        if r.page_shift < shift {
            undo(w, p, first, k, bad);
            return Err(Errno::Einval);
        }
        let hpa = r.hpa + (ua - r.ua);
        let idx = TceIndex(first.0 + k);
        // The address the old entry (if any) held, then the new one in its place.
        let old_ua =
            w.ua.as_ref()
                .and_then(|u| u.get(idx).ok())
                .map_or(0, |e| e.0);
        if let Some(u) = &w.ua {
            if u.store_no_kill(idx, Tce(ua)).is_err() {
                undo(w, p, first, k, bad);
                return Err(Errno::Enomem);
            }
        }
        let stored = if inject(FaultPoint::TceStore) {
            Err(FaultPoint::TceStore.errno())
        } else {
            w.table
                .exchange_no_kill(idx, Tce::new(hpa, perm))
                .map_err(|_| Errno::Enomem)
        };
        let old = match stored {
            Ok(o) => o,
            Err(_) => {
                if let Some(u) = &w.ua {
                    let _ = u.store_no_kill(idx, Tce(old_ua));
                }
                undo(w, p, first, k, bad);
                return Err(Errno::Enomem);
            }
        };
        if let Some(r) = p.regions[id].as_mut() {
            r.mapped += 1;
        }
        if !old.is_empty() {
            // Silently replaced (linux): the old entry's region loses its use.
            if let Some(r) = p.region_of(old_ua) {
                decrement(&mut r.mapped, 1, "region use count", bad);
            }
        }
    }
    w.table.kill(first, n);
    p.free_unused_regions();
    Ok(0)
}

/// Undoes the first `k` entries a failed v2 MAP wrote.
fn undo(w: &mut Window, p: &mut Process, first: TceIndex, k: u64, bad: &mut Vec<String>) {
    for j in 0..k {
        let idx = TceIndex(first.0 + j);
        if let Ok(old) = w.table.exchange_no_kill(idx, Tce::EMPTY) {
            if !old.is_empty() {
                let ua =
                    w.ua.as_ref()
                        .and_then(|u| u.get(idx).ok())
                        .map_or(0, |e| e.0);
                if let Some(r) = p.region_of(ua) {
                    decrement(&mut r.mapped, 1, "region use count", bad);
                }
            }
        }
        if let Some(u) = &w.ua {
            let _ = u.store_no_kill(idx, Tce::EMPTY);
        }
    }
    if k > 0 {
        w.table.kill(first, k);
    }
    p.free_unused_regions();
}

fn undo_v1(
    t: &mut TceContainer,
    p: &Process,
    table: &UserTable,
    first: TceIndex,
    k: u64,
    bad: &mut Vec<String>,
) {
    let shift = table.geometry().page_shift().shift();
    let pins = &mut t.pins;
    let _ = table.clear_exclusive_with(first, k, |_, old| {
        let hpa = old.page_addr(shift);
        unpin(pins, hpa, p.host_page_shift(hpa).unwrap_or(shift), bad);
    });
}

/// `tce_iommu_clear`: clears `range` (or the whole window), releasing what each old
/// entry held (v1 pins, v2 region uses), then one kill.
fn clear_window(
    t: &mut TceContainer,
    procs: &mut HashMap<Mm, Process>,
    num: usize,
    range: Option<(TceIndex, u64)>,
    bad: &mut Vec<String>,
    unpin_after_kill: bool,
) -> u64 {
    let mm = t.mm;
    let Some(w) = t.windows[num].as_ref() else {
        return 0;
    };
    let g = *w.table.geometry();
    let (first, n) = range.unwrap_or((g.first_index(), g.entries()));
    let shift = g.page_shift().shift();
    let table = w.table.clone();
    let pins = &mut t.pins;
    let ua_table = w.ua.as_ref();
    let mut process = mm.and_then(|m| procs.get_mut(&m));
    if let Some(u) = ua_table {
        // v2: clear each TCE, then the user address beside it, each region losing one use
        // per entry, in one pass over both tables. Every live TCE has its user address
        // beside it: the TCEs are zeroed without a read, and the user addresses count and
        // release what was mapped, as runs of consecutive pages, each charged to the
        // regions it lies in.
        let page = 1u64 << shift;
        let cleared = table.zero_exclusive_with_uas(u, first, n, |head, len| {
            let Some(p) = process.as_deref_mut() else {
                return;
            };
            let (mut ua, mut left) = (head.0, len);
            while left > 0 {
                let Some(r) = p.region_of(ua) else {
                    bad.push(format!("a user address {ua:#x} in no region"));
                    ua = ua.wrapping_add(page);
                    left -= 1;
                    continue;
                };
                let k = ((r.ua + r.size - ua) / page).clamp(1, left);
                decrement(&mut r.mapped, k, "region use count", bad);
                ua = ua.wrapping_add(k * page);
                left -= k;
            }
        });
        if let (Some(w), Ok(k)) = (t.windows[num].as_mut(), cleared) {
            decrement(&mut w.live, k, "window live count", bad);
        }
        if let Some(p) = process {
            p.free_unused_regions();
        }
        return 0;
    }
    // v1: the pins go with the entries. The kernel unpins each page as its entry is
    // cleared, before the range's kill (a device may still reach the page through the
    // TCE cache until then); `strict` unpins after the kill.
    let mut unpinned_early = 0;
    let mut freed = Vec::new();
    let cleared = table.clear_exclusive_with(first, n, |_, old| {
        let hpa = old.page_addr(shift);
        if unpin_after_kill {
            freed.push(hpa);
        } else {
            let ps = process.as_deref().and_then(|p| p.host_page_shift(hpa));
            unpin(pins, hpa, ps.unwrap_or(shift), bad);
            unpinned_early += 1;
        }
    });
    // `clear_exclusive_with` has killed the range by now.
    for hpa in freed {
        let ps = process.as_deref().and_then(|p| p.host_page_shift(hpa));
        unpin(pins, hpa, ps.unwrap_or(shift), bad);
    }
    if let (Some(w), Ok(st)) = (t.windows[num].as_mut(), cleared) {
        decrement(&mut w.live, st.cleared, "window live count", bad);
    }
    unpinned_early
}

/// Drops one user of a region; the last frees it, and its charge goes back.
fn put_region(procs: &mut HashMap<Mm, Process>, mm: Mm, id: usize, bad: &mut Vec<String>) {
    let Some(slot) = procs.get_mut(&mm).and_then(|p| p.regions.get_mut(id)) else {
        bad.push(format!("a put of region {id} that {mm:?} does not have"));
        return;
    };
    let Some(r) = slot.as_mut() else {
        bad.push(format!("a put of freed region {id}"));
        return;
    };
    decrement(&mut r.users, 1, "region users", bad);
    if r.users == 0 && r.mapped == 0 {
        *slot = None;
    }
}
