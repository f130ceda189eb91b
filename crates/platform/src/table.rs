//! `struct iommu_table` as the platform holds it: the TCE engine's table for the entries,
//! the kernel allocator's bitmap when the kernel DMA API maps through it, and the list of
//! PEs it is linked to (`it_group_list`), which receive its TCE kills.

use crate::alloc::TceAllocator;
use spapr_tce::{Hpa, TableGeometry, TableOptions, TceIndex, TceKill, TceTable};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};

/// Keeps a value on its own cache lines (128 bytes covers adjacent-line prefetch).
#[repr(align(128))]
#[derive(Debug, Default)]
pub(crate) struct Padded<T>(pub T);

/// TCE invalidations a PE received (kernel.md 3.7): range kills after map/unmap, PE-wide
/// kills when a window is set or unset. Range kills are counted per CPU slot so that CPUs
/// mapping through one PE do not share a counter.
#[derive(Debug, Default)]
pub struct PeCounters {
    range: [Padded<AtomicU64>; 4],
    pe_wide: AtomicU64,
}

impl PeCounters {
    /// Counts one range kill from `cpu`. Each slot is a per-CPU counter, bumped with a
    /// plain load and store as the kernel's `this_cpu_inc` is: two threads that claim to
    /// be the same CPU may lose a count, never corrupt one.
    #[inline]
    pub fn range_kill(&self, cpu: u32) {
        let c = &self.range[(cpu & 3) as usize].0;
        c.store(c.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }
    /// Counts one PE-wide kill.
    pub fn pe_kill(&self) {
        self.pe_wide.fetch_add(1, Ordering::Relaxed);
    }
    /// Range kills so far.
    pub fn range_kills(&self) -> u64 {
        self.range.iter().map(|c| c.0.load(Ordering::Relaxed)).sum()
    }
    /// PE-wide kills so far.
    pub fn pe_kills(&self) -> u64 {
        self.pe_wide.load(Ordering::Relaxed)
    }
}

/// The PEs a table is linked to (`it_group_list`); its kill hook.
#[derive(Debug, Default)]
pub struct TableLinks {
    pes: RwLock<Vec<Weak<PeCounters>>>,
}

impl TableLinks {
    pub(crate) fn link(&self, pe: &Arc<PeCounters>) {
        let mut v = self.pes.write().unwrap_or_else(|p| p.into_inner());
        v.push(Arc::downgrade(pe));
    }
    pub(crate) fn unlink(&self, pe: &Arc<PeCounters>) {
        let mut v = self.pes.write().unwrap_or_else(|p| p.into_inner());
        let target = Arc::downgrade(pe);
        if let Some(i) = v.iter().position(|w| w.ptr_eq(&target)) {
            v.remove(i);
        }
    }
    /// PEs linked now.
    pub fn linked(&self) -> usize {
        self.pes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|w| w.strong_count() > 0)
            .count()
    }
}

impl TceKill for TableLinks {
    fn kill_range(&self, _first: TceIndex, _count: u64) {
        for pe in self.pes.read().unwrap_or_else(|p| p.into_inner()).iter() {
            if let Some(pe) = pe.upgrade() {
                pe.range_kill(0);
            }
        }
    }
}

/// The engine table with its kill fan-out.
pub type HwTable = TceTable<Hpa, Arc<TableLinks>>;

/// One kernel `iommu_table`: a DMA window's TCEs, its allocator if the kernel DMA API owns
/// it, its links. Shared (`it_kref`) by every PE whose window it is.
#[derive(Debug)]
pub struct IommuTable {
    /// The entries.
    pub tces: HwTable,
    /// `it_map`: present on tables the kernel DMA API allocates from (the default window,
    /// borrowed tables); absent on tables created for a user (VFIO).
    pub map: Option<TceAllocator>,
    /// `it_index`.
    pub index: u32,
    links: Arc<TableLinks>,
}

impl IommuTable {
    /// A table of `geometry` with PowerNV's write-implies-read, with an allocator if
    /// `kernel_map` (its reserved range relative to the window).
    pub fn new(
        geometry: TableGeometry,
        index: u32,
        kernel_map: Option<(u64, u64)>,
    ) -> Result<Self, spapr_tce::TceError> {
        let links = Arc::new(TableLinks::default());
        let tces = TceTable::with_kill(geometry, TableOptions::powernv(), links.clone())?;
        let map = kernel_map.map(|reserved| {
            TceAllocator::new(
                geometry.entries(),
                geometry.page_shift().shift(),
                geometry.first_index().0,
                reserved,
            )
        });
        Ok(Self {
            tces,
            map,
            index,
            links,
        })
    }
    /// Its links.
    pub fn links(&self) -> &Arc<TableLinks> {
        &self.links
    }
    /// The window's first bus address.
    pub fn start(&self) -> u64 {
        self.tces.geometry().bus_offset().raw()
    }
    /// The window's size in bytes.
    pub fn window_size(&self) -> u64 {
        self.tces.geometry().window_size()
    }
    /// Whether `iova` lies in the window.
    pub fn contains(&self, iova: u64) -> bool {
        self.tces
            .geometry()
            .relative_index(spapr_tce::Iova(iova))
            .is_some()
    }
}
