//! One guest-visible TCE table (QEMU's `SpaprTceTable`): a LIOBN, a window, entries stored
//! verbatim in guest-physical terms, and an invalidation hook that keeps the device
//! models' IOTLB honest.

use spapr_tce::{Gpa, Iova, PageShift, TableGeometry, TableOptions, TceIndex, TceKill, TceTable};
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use vm_memory::iommu::Iotlb;
use vm_memory::GuestAddress;

/// The IOTLB of the device models translating through one PHB, with a flag that says
/// whether it may hold anything: while nothing was ever looked up, a table change has
/// nothing to invalidate and skips the lock (hypercalls at boot, before any device DMA).
#[derive(Debug, Default)]
pub struct DeviceTlb {
    tlb: RwLock<Iotlb>,
    populated: AtomicBool,
}

impl DeviceTlb {
    /// Reads the IOTLB (a device model's lookup).
    pub fn read(&self) -> RwLockReadGuard<'_, Iotlb> {
        self.tlb.read().unwrap_or_else(|p| p.into_inner())
    }
    /// Locks the IOTLB to fill it. Marks it populated first: a table change that stores
    /// its entry and then finds the flag clear knows no refill can have read the old entry.
    pub fn fill(&self) -> RwLockWriteGuard<'_, Iotlb> {
        self.populated.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        self.tlb.write().unwrap_or_else(|p| p.into_inner())
    }
    /// Forgets `[start, start + len)`.
    pub fn invalidate(&self, start: u64, len: u64) {
        fence(Ordering::SeqCst);
        if !self.populated.load(Ordering::SeqCst) {
            return;
        }
        let mut tlb = self.tlb.write().unwrap_or_else(|p| p.into_inner());
        tlb.invalidate_mapping(GuestAddress(start), len.min(usize::MAX as u64) as usize);
    }
    /// Forgets everything.
    pub fn invalidate_all(&self) {
        let mut tlb = self.tlb.write().unwrap_or_else(|p| p.into_inner());
        tlb.invalidate_all();
        self.populated.store(false, Ordering::SeqCst);
    }
}

/// Invalidates the IOTLB of the device models that translate through a table whenever
/// entries change (a changed entry may have narrowed or disappeared).
#[derive(Debug)]
pub struct IotlbInvalidate {
    pub(crate) tlb: Arc<DeviceTlb>,
    page_shift: u32,
}

impl TceKill for IotlbInvalidate {
    fn kill_range(&self, first: TceIndex, count: u64) {
        let start = first.0 << self.page_shift;
        self.tlb
            .invalidate(start, count.saturating_mul(1 << self.page_shift));
    }
    fn kill_all(&self) {
        self.tlb.invalidate_all();
    }
}

/// A guest TCE table: one enabled DMA window.
#[derive(Debug)]
pub struct GuestTable {
    /// The guest's handle.
    pub liobn: u32,
    /// The entries (guest-physical addresses, stored verbatim).
    pub tces: TceTable<Gpa, IotlbInvalidate>,
}

/// Index bits per lower level: leaves of 512 entries (one 4 KiB page), allocated on first
/// write, so that QEMU's eager 2 GiB table of 2^28 entries costs only what is mapped.
const LEVEL_BITS: u32 = 9;

impl GuestTable {
    /// A table of exactly `nb_table` entries of `page_shift` pages at `bus_offset`.
    pub fn new(
        liobn: u32,
        bus_offset: u64,
        page_shift: PageShift,
        nb_table: u64,
        tlb: Arc<DeviceTlb>,
    ) -> Result<Self, spapr_tce::TceError> {
        let bits = 64 - nb_table.saturating_sub(1).leading_zeros();
        let levels = bits.div_ceil(LEVEL_BITS).clamp(1, spapr_tce::MAX_LEVELS);
        let g = if levels == 1 {
            TableGeometry::flat(Iova(bus_offset), page_shift, nb_table)?
        } else {
            TableGeometry::new(Iova(bus_offset), page_shift, nb_table, levels, LEVEL_BITS)?
        };
        let kill = IotlbInvalidate {
            tlb,
            page_shift: page_shift.shift(),
        };
        Ok(Self {
            liobn,
            tces: TceTable::with_kill(g, TableOptions::default(), kill)?,
        })
    }
    /// First bus address.
    pub fn bus_offset(&self) -> u64 {
        self.tces.geometry().bus_offset().raw()
    }
    /// Page shift.
    pub fn page_shift(&self) -> u32 {
        self.tces.geometry().page_shift().shift()
    }
    /// Entries (`nb_table`).
    pub fn nb_table(&self) -> u64 {
        self.tces.geometry().entries()
    }
    /// The absolute index of `ioba` if it is in the window (QEMU's wrapping check).
    #[inline]
    pub fn index_of(&self, ioba: u64) -> Option<TceIndex> {
        let g = self.tces.geometry();
        g.relative_index(Iova(ioba))
            .map(|rel| TceIndex(g.first_index().0 + rel))
    }
}
