//! One guest-visible TCE table (QEMU's `SpaprTceTable`): a LIOBN, a window, and entries
//! stored verbatim in guest-physical terms. Every change bumps its PHB's entry generation
//! (see `iotlb.rs`), which is how the device models' IOTLB learns of it.
//!
//! The entries are private to this crate: a VMM reads them through the methods below and
//! changes them only through the hypercalls and RTAS calls of [`crate::Spapr`].

use crate::iotlb::{GenBump, Generation};
use spapr_tce::{
    Access, Fault, Gpa, Iova, MappedRun, PageShift, TableGeometry, TableOptions, Tce, TceError,
    TceIndex, TceTable,
};
use std::sync::Arc;

/// A guest TCE table: one enabled DMA window.
#[derive(Debug)]
pub struct GuestTable {
    liobn: u32,
    pub(crate) tces: TceTable<Gpa, GenBump>,
}

/// Index bits per lower level: leaves of 512 entries (one 4 KiB page), allocated on first
/// write, so that QEMU's eager 2 GiB table of 2^28 entries costs only what is mapped.
const LEVEL_BITS: u32 = 9;

impl GuestTable {
    /// A table of exactly `nb_table` entries of `page_shift` pages at `bus_offset`, whose
    /// changes are published through `gen`.
    pub(crate) fn new(
        liobn: u32,
        bus_offset: u64,
        page_shift: PageShift,
        nb_table: u64,
        gen: Arc<Generation>,
    ) -> Result<Self, TceError> {
        let bits = 64 - nb_table.saturating_sub(1).leading_zeros();
        let levels = bits.div_ceil(LEVEL_BITS).clamp(1, spapr_tce::MAX_LEVELS);
        let g = if levels == 1 {
            TableGeometry::flat(Iova(bus_offset), page_shift, nb_table)?
        } else {
            TableGeometry::new(Iova(bus_offset), page_shift, nb_table, levels, LEVEL_BITS)?
        };
        Ok(Self {
            liobn,
            tces: TceTable::with_kill(g, TableOptions::default(), GenBump(gen))?,
        })
    }
    /// The guest's handle.
    #[inline]
    pub fn liobn(&self) -> u32 {
        self.liobn
    }
    /// The window's shape.
    #[inline]
    pub fn geometry(&self) -> &TableGeometry {
        self.tces.geometry()
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
    /// Bytes the window spans.
    pub fn window_size(&self) -> u64 {
        self.nb_table() << self.page_shift()
    }
    /// The absolute index of `ioba` if it is in the window (QEMU's wrapping check).
    #[inline]
    pub fn index_of(&self, ioba: u64) -> Option<TceIndex> {
        let g = self.tces.geometry();
        g.relative_index(Iova(ioba))
            .map(|rel| TceIndex(g.first_index().0 + rel))
    }
    /// The entry at absolute index `index` (0 where never written).
    #[inline]
    pub fn get(&self, index: TceIndex) -> Result<Tce, TceError> {
        self.tces.get(index)
    }
    /// The entry covering bus address `ioba`, if it is in the window.
    pub fn entry_at(&self, ioba: u64) -> Option<Tce> {
        self.index_of(ioba).and_then(|i| self.tces.get(i).ok())
    }
    /// A device access through the live entry: the guest-physical address, or the fault.
    #[inline]
    pub fn translate(&self, iova: u64, access: Access) -> Result<Gpa, Fault> {
        self.tces.translate(Iova(iova), access)
    }
    /// Entries that are not zero.
    pub fn count_mapped(&self) -> u64 {
        self.tces.count_mapped()
    }
    /// The mapped entries as runs of consecutive pages with one permission.
    pub fn mapped_runs(&self) -> Vec<MappedRun> {
        self.tces.mapped_runs()
    }
    /// Calls `f(index, tce)` for every non-zero entry, in index order.
    pub fn for_each_entry(&self, f: impl FnMut(TceIndex, Tce)) {
        let g = *self.tces.geometry();
        // The whole window is always a valid range.
        let _ = self.tces.for_each_entry(g.first_index(), g.entries(), f);
    }
}
