//! The kernel DMA API for bound drivers (`dma_iommu_ops`: `iommu_map_page`,
//! `iommu_unmap_page`, `ppc_iommu_map_sg`, `ppc_iommu_unmap_sg`): through the device's
//! `iommu_table_base` with the kernel allocator, or direct through bypass for a device
//! whose driver set a 64-bit mask while bypass was on (`dma_ops_bypass`).

use crate::alloc::{DmaLimits, EntryLimits};
use crate::pe::{PciDev, BYPASS_BASE};
use crate::scatterlist::SgEntry;
use crate::table::{IommuTable, PeCounters};
use iommu_core::Errno;
use spapr_tce::{DmaDirection, Tce, TceIndex, TcePerm};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Why a map failed; every variant is `DMA_MAPPING_ERROR` to the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DmaMapError {
    /// The device has no table (`iommu_table_base` NULL): "table unavailable".
    #[error("table unavailable")]
    TableUnavailable,
    /// The allocator found no room.
    #[error("no space in the DMA window")]
    NoSpace,
    /// A length of 0, a direction of NONE, an address not mapped by this device.
    #[error("invalid argument")]
    Invalid,
    /// A TCE level could not be allocated.
    #[error("TCE level allocation failed")]
    NoMemory,
    /// Through bypass, the buffer's bus address would pass the top of the device's 64-bit
    /// mask (`dma_capable` fails in `dma_direct_map_page`; `dma_direct_map_sg` says -EIO).
    #[error("bus address beyond the device's DMA mask")]
    NotCapable,
}

impl DmaMapError {
    /// The errno a driver reports.
    pub fn errno(self) -> Errno {
        match self {
            DmaMapError::Invalid => Errno::Einval,
            DmaMapError::NotCapable => Errno::Eio,
            DmaMapError::TableUnavailable | DmaMapError::NoSpace | DmaMapError::NoMemory => {
                Errno::Enomem
            }
        }
    }
}

#[inline]
fn perm(dir: DmaDirection) -> Result<TcePerm, DmaMapError> {
    let p = TcePerm::from(dir);
    if p == TcePerm::NONE {
        Err(DmaMapError::Invalid)
    } else {
        Ok(p)
    }
}

/// What a bound driver maps with: the device's DMA configuration (`dev->archdata`: its
/// table base and whether it goes direct through bypass) as it was when the driver set its
/// mask. The kernel reads these without a lock because they only change while no kernel
/// driver is bound (ownership changes need `owner_cnt == 0`); a session is that snapshot,
/// so the hot path takes no lock at all. A session kept past an ownership change maps into
/// a table that is no longer programmed: the device reaches none of it.
#[derive(Clone, Debug)]
pub struct DmaSession {
    table: Option<Arc<IommuTable>>,
    bypass: bool,
    counters: Arc<PeCounters>,
    /// The device's limits in the table's entries, worked out once.
    limits: Option<EntryLimits>,
}

impl PciDev {
    /// The device's DMA configuration now.
    pub fn dma_session(&self) -> DmaSession {
        let table = self.table_base.get();
        let limits = table
            .as_ref()
            .and_then(|t| t.map.as_ref())
            .map(|m| m.entry_limits(DmaLimits::pci(self.dma_mask_bits)));
        DmaSession {
            table,
            bypass: self.bypass.load(Ordering::Relaxed),
            counters: self.counters.clone(),
            limits,
        }
    }
    /// [`DmaSession::map_page`] on the current configuration.
    pub fn map_page(
        &self,
        phys: u64,
        len: u64,
        dir: DmaDirection,
        cpu: u32,
    ) -> Result<u64, DmaMapError> {
        self.dma_session().map_page(phys, len, dir, cpu)
    }
    /// [`DmaSession::unmap_page`] on the current configuration.
    pub fn unmap_page(&self, dma: u64, len: u64) -> Result<(), DmaMapError> {
        self.dma_session().unmap_page(dma, len, 0)
    }
    /// [`DmaSession::map_sg`] on the current configuration.
    pub fn map_sg(
        &self,
        sg: &mut [SgEntry],
        dir: DmaDirection,
        cpu: u32,
    ) -> Result<(), DmaMapError> {
        self.dma_session().map_sg(sg, dir, cpu)
    }
    /// [`DmaSession::unmap_sg`] on the current configuration.
    pub fn unmap_sg(&self, sg: &mut [SgEntry], cpu: u32) -> Result<(), DmaMapError> {
        self.dma_session().unmap_sg(sg, cpu)
    }
}

impl DmaSession {
    /// Whether maps go direct through bypass.
    pub fn bypass(&self) -> bool {
        self.bypass
    }

    #[inline]
    fn table(&self) -> Result<&IommuTable, DmaMapError> {
        self.table.as_deref().ok_or(DmaMapError::TableUnavailable)
    }

    /// `dma_map_page`: a bus address for `len` bytes at real address `phys`, from `cpu`
    /// (which allocator pool it starts in).
    #[inline]
    pub fn map_page(
        &self,
        phys: u64,
        len: u64,
        dir: DmaDirection,
        cpu: u32,
    ) -> Result<u64, DmaMapError> {
        let perm = perm(dir)?;
        if len == 0 || phys.checked_add(len).is_none() {
            return Err(DmaMapError::Invalid);
        }
        if self.bypass {
            return bypass_address(phys, len);
        }
        map_one(self.table()?, phys, len, perm, cpu, &mut None, self)
    }

    /// `dma_unmap_page`.
    #[inline]
    pub fn unmap_page(&self, dma: u64, len: u64, cpu: u32) -> Result<(), DmaMapError> {
        if len == 0 {
            return Err(DmaMapError::Invalid);
        }
        if self.bypass && dma & BYPASS_BASE != 0 {
            return Ok(());
        }
        unmap_one(self.table()?, dma, len, cpu, &self.counters)
    }

    /// `dma_map_sg`: a bus address for each entry of `sg`, written into the entry
    /// (`sg_dma_address`; segments are not merged). Consecutive entries are allocated after
    /// one another where the window allows (the allocator's handle). Refused with
    /// [`DmaMapError::Invalid`] before anything is mapped: an empty list, an empty or
    /// wrapping entry, or an entry already mapped (mapping it again would leak its
    /// mapping). On failure everything this call mapped is undone and every entry is left
    /// unmapped, as it came.
    pub fn map_sg(
        &self,
        sg: &mut [SgEntry],
        dir: DmaDirection,
        cpu: u32,
    ) -> Result<(), DmaMapError> {
        let perm = perm(dir)?;
        if sg.is_empty()
            || sg.iter().any(|e| {
                e.is_empty() || e.phys().checked_add(e.len()).is_none() || e.dma_address().is_some()
            })
        {
            return Err(DmaMapError::Invalid);
        }
        if self.bypass {
            for i in 0..sg.len() {
                match bypass_address(sg[i].phys(), sg[i].len()) {
                    Ok(a) => sg[i].set_dma(Some(a)),
                    Err(e) => {
                        // Nothing to unmap through bypass: the list goes back unmapped.
                        sg[..i].iter_mut().for_each(|x| x.set_dma(None));
                        return Err(e);
                    }
                }
            }
            return Ok(());
        }
        let table = self.table()?;
        if let Some(done) = map_sg_run(table, sg, perm, cpu, self) {
            return done;
        }
        let mut handle = Some(0u64);
        for i in 0..sg.len() {
            match map_one(
                table,
                sg[i].phys(),
                sg[i].len(),
                perm,
                cpu,
                &mut handle,
                self,
            ) {
                Ok(a) => sg[i].set_dma(Some(a)),
                Err(e) => {
                    undo_mapped(table, &mut sg[..i], cpu, &self.counters);
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// `dma_unmap_sg`: unmaps every entry of a list [`Self::map_sg`] mapped, and marks it
    /// unmapped. Refused with [`DmaMapError::Invalid`] before anything is unmapped if some
    /// entry is not mapped. An entry whose unmap fails (its address is not this device's)
    /// keeps its address; the others are still unmapped, and the first error is returned.
    pub fn unmap_sg(&self, sg: &mut [SgEntry], cpu: u32) -> Result<(), DmaMapError> {
        if sg.iter().any(|e| e.dma_address().is_none()) {
            return Err(DmaMapError::Invalid);
        }
        if !self.bypass {
            if let Some(table) = self.table.as_deref() {
                if unmap_sg_run(table, sg, cpu, &self.counters) {
                    return Ok(());
                }
            }
        }
        let mut first_err = Ok(());
        for e in sg.iter_mut() {
            let Some(a) = e.dma_address() else { continue };
            match self.unmap_page(a, e.len(), cpu) {
                Ok(()) => e.set_dma(None),
                Err(err) => {
                    if first_err.is_ok() {
                        first_err = Err(err);
                    }
                }
            }
        }
        first_err
    }
}

/// The unmap of a list [`map_sg_run`] mapped: one-page segments on consecutive entries of
/// one another. Each segment's TCE is cleared, their kills (one per segment, as the unmap
/// of each makes) counted together after the last, then the run's bits are given back together (one `lock and` per bitmap word; the
/// bitmap ends as after freeing them one by one). `false` if the list is not such a run (nothing
/// changed: the caller unmaps segment by segment).
#[inline]
fn unmap_sg_run(table: &IommuTable, sg: &mut [SgEntry], cpu: u32, counters: &PeCounters) -> bool {
    let Some(map) = table.map.as_ref() else {
        return false;
    };
    let g = table.tces.geometry();
    let shift = g.page_shift().shift();
    let mask = g.page_shift().offset_mask();
    let Some(first) = sg.first().and_then(|e| e.dma_address()) else {
        return false;
    };
    let rel = first.wrapping_sub(g.bus_offset().raw()) >> shift;
    let n = sg.len() as u64;
    if rel >= map.size() || n > map.size() - rel || map.size() > g.entries() {
        return false;
    }
    let mut next = first & !mask;
    for e in sg.iter() {
        match e.dma_address() {
            Some(a) if a & !mask == next && (a & mask) + e.len() <= mask + 1 => {
                next += mask + 1;
            }
            _ => return false,
        }
    }
    let index = g.first_index().0 + rel;
    for (k, e) in sg.iter_mut().enumerate() {
        let _ = table
            .tces
            .store_no_kill(TceIndex(index + k as u64), Tce::EMPTY);
        e.set_dma(None);
    }
    // One kill per segment, counted at once after the last clear.
    counters.range_kills_at_once(cpu, n);
    // Cannot fail: `[rel, rel + n)` was checked against the allocator's size above.
    let _ = map.free(rel, n);
    true
}

/// The bus address of `len` (at least 1) bytes at `phys` through bypass
/// (`phys_to_dma` with the PE's bypass offset), if its last byte fits the 64-bit mask
/// (`dma_capable`).
#[inline]
fn bypass_address(phys: u64, len: u64) -> Result<u64, DmaMapError> {
    let dma = phys
        .checked_add(BYPASS_BASE)
        .ok_or(DmaMapError::NotCapable)?;
    dma.checked_add(len - 1).ok_or(DmaMapError::NotCapable)?;
    Ok(dma)
}

/// IOMMU pages that `bytes` from a page boundary cover (`iommu_num_pages`), with shifts:
/// the page size is only known at run time, and a division would cost more than the
/// rest of a one-page map.
#[inline]
fn pages_spanned(bytes: u64, shift: u32) -> u64 {
    (bytes >> shift) + u64::from(bytes & ((1u64 << shift) - 1) != 0)
}

#[inline]
fn map_one(
    table: &IommuTable,
    phys: u64,
    len: u64,
    perm: TcePerm,
    cpu: u32,
    handle: &mut Option<u64>,
    session: &DmaSession,
) -> Result<u64, DmaMapError> {
    let map = table.map.as_ref().ok_or(DmaMapError::TableUnavailable)?;
    let g = table.tces.geometry();
    let shift = g.page_shift().shift();
    let mask = g.page_shift().offset_mask();
    let npages = pages_spanned((phys & mask) + len, shift);
    let limits = session.limits.ok_or(DmaMapError::TableUnavailable)?;
    // A buffer inside one IOMMU page, the common case, takes the allocator's one-page
    // fast path (the same answer as the full search).
    let entry = if npages == 1 {
        map.alloc_one(cpu, handle.as_mut(), limits)
    } else {
        map.alloc_within(npages, cpu, handle.as_mut(), limits)
            .map(|a| a.entry)
    }
    .map_err(|_| DmaMapError::NoSpace)?;
    let a = store_entries(table, entry, npages, phys, perm).inspect_err(|_| {
        let _ = map.free(entry, npages);
    })?;
    // `tce_kill` for the range, counted on the device's PE.
    session.counters.range_kill(cpu);
    Ok(a)
}

/// Stores the TCEs of `npages` pages from `phys` into the entries allocated from `entry`
/// (`ppc_md.tce_build`); the bus address of `phys`. The caller kills the range. On failure
/// (a TCE level could not be allocated) the entries it stored are cleared again, and the
/// caller still holds the allocation.
#[inline]
fn store_entries(
    table: &IommuTable,
    entry: u64,
    npages: u64,
    phys: u64,
    perm: TcePerm,
) -> Result<u64, DmaMapError> {
    let g = table.tces.geometry();
    let shift = g.page_shift().shift();
    let mask = g.page_shift().offset_mask();
    let first = TceIndex(g.first_index().0 + entry);
    let base = phys & !mask;
    for i in 0..npages {
        let tce = Tce::new(base + (i << shift), perm);
        if table
            .tces
            .store_no_kill(TceIndex(first.0 + i), tce)
            .is_err()
        {
            for j in 0..i {
                let _ = table.tces.store_no_kill(TceIndex(first.0 + j), Tce::EMPTY);
            }
            return Err(DmaMapError::NoMemory);
        }
    }
    Ok(g.bus_offset().raw() + (entry << shift) + (phys & mask))
}

/// A failed `dma_map_sg`'s undo: unmaps the entries this call mapped and leaves them all
/// unmapped, as they came.
fn undo_mapped(table: &IommuTable, done: &mut [SgEntry], cpu: u32, counters: &PeCounters) {
    for e in done {
        if let Some(a) = e.dma_address() {
            let _ = unmap_one(table, a, e.len(), cpu, counters);
        }
        e.set_dma(None);
    }
}

/// A scatter list of one-page segments mapped with one claim of consecutive entries
/// ([`TceAllocator::alloc_one_run`](crate::TceAllocator::alloc_one_run)): the entries,
/// hint and handle the segment-by-segment map would give, then each segment's TCE as that
/// map stores it. `None` if the list does not qualify or the claim did not succeed
/// (nothing changed: the caller maps segment by segment). `Some(Err)` after a failed TCE
/// store, with everything undone.
#[inline]
fn map_sg_run(
    table: &IommuTable,
    sg: &mut [SgEntry],
    perm: TcePerm,
    cpu: u32,
    session: &DmaSession,
) -> Option<Result<(), DmaMapError>> {
    let map = table.map.as_ref()?;
    let limits = session.limits?;
    let g = table.tces.geometry();
    let mask = g.page_shift().offset_mask();
    if sg.iter().any(|e| (e.phys() & mask) + e.len() > mask + 1) {
        return None;
    }
    let mut handle = 0u64;
    let z = map.alloc_one_run(sg.len() as u64, cpu, &mut handle, limits)?;
    for k in 0..sg.len() {
        let entry = z + k as u64;
        match store_entries(table, entry, 1, sg[k].phys(), perm) {
            Ok(a) => sg[k].set_dma(Some(a)),
            Err(e) => {
                // The kills of the segments mapped, then their unmap.
                session.counters.range_kills_at_once(cpu, k as u64);
                undo_mapped(table, &mut sg[..k], cpu, &session.counters);
                let _ = map.free(entry, sg.len() as u64 - k as u64);
                return Some(Err(e));
            }
        }
    }
    // One kill per segment, as the segment-by-segment map makes them; counted in one
    // read-modify-write, after the last store, before the caller sees an address.
    session.counters.range_kills_at_once(cpu, sg.len() as u64);
    Some(Ok(()))
}

#[inline]
fn unmap_one(
    table: &IommuTable,
    dma: u64,
    len: u64,
    cpu: u32,
    counters: &PeCounters,
) -> Result<(), DmaMapError> {
    let map = table.map.as_ref().ok_or(DmaMapError::TableUnavailable)?;
    let g = table.tces.geometry();
    let shift = g.page_shift().shift();
    let mask = g.page_shift().offset_mask();
    let rel = dma.wrapping_sub(g.bus_offset().raw()) >> shift;
    let npages = pages_spanned((dma & mask) + len, shift);
    if rel >= g.entries() || npages > g.entries() - rel {
        return Err(DmaMapError::Invalid);
    }
    let first = g.first_index().0 + rel;
    if npages == 1 {
        // One entry, the common case: no loop (measured: the loop cost a 16-segment
        // scatter list about a tenth).
        let _ = table.tces.store_no_kill(TceIndex(first), Tce::EMPTY);
        counters.range_kill(cpu);
        return map.free(rel, 1).map_err(|_| DmaMapError::Invalid);
    }
    for i in 0..npages {
        let _ = table.tces.store_no_kill(TceIndex(first + i), Tce::EMPTY);
    }
    counters.range_kill(cpu);
    map.free(rel, npages).map_err(|_| DmaMapError::Invalid)
}
