//! The kernel DMA API for bound drivers (`dma_iommu_ops`: `iommu_map_page`,
//! `iommu_unmap_page`, `ppc_iommu_map_sg`, `ppc_iommu_unmap_sg`): through the device's
//! `iommu_table_base` with the kernel allocator, or direct through bypass for a device
//! whose driver set a 64-bit mask while bypass was on (`dma_ops_bypass`).

use crate::pe::{PciDev, BYPASS_BASE};
use crate::table::IommuTable;
use iommu_core::Errno;
use spapr_tce::{DmaDirection, Tce, TceIndex, TcePerm};
use std::sync::atomic::Ordering;

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

impl PciDev {
    /// `dma_map_page`: a bus address for `len` bytes at real address `phys`.
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
        if self.bypass.load(Ordering::Relaxed) {
            return Ok(phys + BYPASS_BASE);
        }
        let guard = self.table_base.read().unwrap_or_else(|p| p.into_inner());
        let table = guard.as_ref().ok_or(DmaMapError::TableUnavailable)?;
        let mut handle = None;
        map_one(table, phys, len, perm, cpu, &mut handle, self)
    }

    /// `dma_unmap_page`.
    #[inline]
    pub fn unmap_page(&self, dma: u64, len: u64) -> Result<(), DmaMapError> {
        if len == 0 {
            return Err(DmaMapError::Invalid);
        }
        if self.bypass.load(Ordering::Relaxed) && dma & BYPASS_BASE != 0 {
            return Ok(());
        }
        let guard = self.table_base.read().unwrap_or_else(|p| p.into_inner());
        let table = guard.as_ref().ok_or(DmaMapError::TableUnavailable)?;
        unmap_one(table, dma, len, self)
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
        if self.bypass.load(Ordering::Relaxed) {
            return Ok(segs.iter().map(|(p, _)| p + BYPASS_BASE).collect());
        }
        let guard = self.table_base.read().unwrap_or_else(|p| p.into_inner());
        let table = guard.as_ref().ok_or(DmaMapError::TableUnavailable)?;
        let mut out = Vec::with_capacity(segs.len());
        let mut handle = Some(0u64);
        for (p, l) in segs {
            match map_one(table, *p, *l, perm, cpu, &mut handle, self) {
                Ok(a) => out.push(a),
                Err(e) => {
                    for (a, (_, l)) in out.iter().zip(segs) {
                        let _ = unmap_one(table, *a, *l, self);
                    }
                    return Err(e);
                }
            }
        }
        Ok(out)
    }

    /// `dma_unmap_sg`: `(dma, len)` pairs as returned by [`Self::map_sg`].
    pub fn unmap_sg(&self, segs: &[(u64, u64)]) -> Result<(), DmaMapError> {
        let mut first_err = Ok(());
        for (a, l) in segs {
            if let Err(e) = self.unmap_page(*a, *l) {
                if first_err.is_ok() {
                    first_err = Err(e);
                }
            }
        }
        first_err
    }
}

#[inline]
fn map_one(
    table: &IommuTable,
    phys: u64,
    len: u64,
    perm: TcePerm,
    cpu: u32,
    handle: &mut Option<u64>,
    dev: &PciDev,
) -> Result<u64, DmaMapError> {
    let map = table.map.as_ref().ok_or(DmaMapError::TableUnavailable)?;
    let g = table.tces.geometry();
    let shift = g.page_shift().shift();
    let mask = g.page_shift().offset_mask();
    let npages = ((phys & mask) + len).div_ceil(1 << shift);
    let got = map
        .alloc(npages, cpu, handle.as_mut())
        .map_err(|_| DmaMapError::NoSpace)?;
    let first = TceIndex(g.first_index().0 + got.entry);
    let base = phys & !mask;
    for i in 0..npages {
        let tce = Tce::new(base + (i << shift), perm);
        if table
            .tces
            .exchange_no_kill(TceIndex(first.0 + i), tce)
            .is_err()
        {
            for j in 0..i {
                let _ = table
                    .tces
                    .exchange_no_kill(TceIndex(first.0 + j), Tce::EMPTY);
            }
            let _ = map.free(got.entry, npages);
            return Err(DmaMapError::NoMemory);
        }
    }
    // `tce_kill` for the range, counted on the device's PE.
    dev.counters.range_kill(cpu);
    Ok(g.bus_offset().raw() + (got.entry << shift) + (phys & mask))
}

#[inline]
fn unmap_one(table: &IommuTable, dma: u64, len: u64, dev: &PciDev) -> Result<(), DmaMapError> {
    let map = table.map.as_ref().ok_or(DmaMapError::TableUnavailable)?;
    let g = table.tces.geometry();
    let shift = g.page_shift().shift();
    let mask = g.page_shift().offset_mask();
    let rel = dma.wrapping_sub(g.bus_offset().raw()) >> shift;
    let npages = ((dma & mask) + len).div_ceil(1 << shift);
    if rel >= g.entries() || npages > g.entries() - rel {
        return Err(DmaMapError::Invalid);
    }
    let first = g.first_index().0 + rel;
    for i in 0..npages {
        let _ = table.tces.exchange_no_kill(TceIndex(first + i), Tce::EMPTY);
    }
    dev.counters.range_kill(0);
    map.free(rel, npages).map_err(|_| DmaMapError::Invalid)
}
