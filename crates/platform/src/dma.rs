//! The kernel DMA API for bound drivers (`dma_iommu_ops`: `iommu_map_page`,
//! `iommu_unmap_page`, `ppc_iommu_map_sg`, `ppc_iommu_unmap_sg`): through the device's
//! `iommu_table_base` with the kernel allocator, or direct through bypass for a device
//! whose driver set a 64-bit mask while bypass was on (`dma_ops_bypass`).

use crate::alloc::{DmaLimits, EntryLimits};
use crate::pe::{PciDev, BYPASS_BASE};
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
}

impl DmaMapError {
    /// The errno a driver reports.
    pub fn errno(self) -> Errno {
        match self {
            DmaMapError::Invalid => Errno::Einval,
            _ => Errno::Enomem,
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
        segs: &[(u64, u64)],
        dir: DmaDirection,
        cpu: u32,
    ) -> Result<Vec<u64>, DmaMapError> {
        self.dma_session().map_sg(segs, dir, cpu)
    }
    /// [`DmaSession::unmap_sg`] on the current configuration.
    pub fn unmap_sg(&self, segs: &[(u64, u64)], cpu: u32) -> Result<(), DmaMapError> {
        self.dma_session().unmap_sg(segs, cpu)
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
            return Ok(phys + BYPASS_BASE);
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

    /// `dma_map_sg`: one bus address per segment `(phys, len)`. Consecutive segments are
    /// allocated after one another where the window allows (the allocator's handle). On
    /// failure everything mapped by this call is undone.
    pub fn map_sg(
        &self,
        segs: &[(u64, u64)],
        dir: DmaDirection,
        cpu: u32,
    ) -> Result<Vec<u64>, DmaMapError> {
        let perm = perm(dir)?;
        if segs.is_empty()
            || segs
                .iter()
                .any(|(p, l)| *l == 0 || p.checked_add(*l).is_none())
        {
            return Err(DmaMapError::Invalid);
        }
        if self.bypass {
            return Ok(segs.iter().map(|(p, _)| p + BYPASS_BASE).collect());
        }
        let table = self.table()?;
        let mut out = Vec::with_capacity(segs.len());
        let mut handle = Some(0u64);
        for (p, l) in segs {
            match map_one(table, *p, *l, perm, cpu, &mut handle, self) {
                Ok(a) => out.push(a),
                Err(e) => {
                    for (a, (_, l)) in out.iter().zip(segs) {
                        let _ = unmap_one(table, *a, *l, cpu, &self.counters);
                    }
                    return Err(e);
                }
            }
        }
        Ok(out)
    }

    /// `dma_unmap_sg`: `(dma, len)` pairs as returned by [`Self::map_sg`].
    pub fn unmap_sg(&self, segs: &[(u64, u64)], cpu: u32) -> Result<(), DmaMapError> {
        let mut first_err = Ok(());
        for (a, l) in segs {
            if let Err(e) = self.unmap_page(*a, *l, cpu) {
                if first_err.is_ok() {
                    first_err = Err(e);
                }
            }
        }
        first_err
    }
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
    let counters = &session.counters;
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
            let _ = map.free(entry, npages);
            return Err(DmaMapError::NoMemory);
        }
    }
    // `tce_kill` for the range, counted on the device's PE.
    counters.range_kill(cpu);
    Ok(g.bus_offset().raw() + (entry << shift) + (phys & mask))
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
