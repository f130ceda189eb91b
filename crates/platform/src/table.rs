//! `struct iommu_table` as the platform holds it: the TCE engine's table for the entries,
//! the kernel allocator's bitmap when the kernel DMA API maps through it, and the list of
//! PEs it is linked to (`it_group_list`), which receive its TCE kills.

use crate::alloc::TceAllocator;
use iommu_core::OwnershipLease;
#[cfg(loom)]
use loom::sync::atomic::{AtomicU64, Ordering};
use spapr_tce::{Hpa, TableGeometry, TableOptions, TceIndex, TceKill, TceTable};
use std::collections::BTreeMap;
#[cfg(not(loom))]
use std::sync::atomic::{AtomicU64, Ordering};
// The TCE cache's lock is std's even under loom: the models that reach it translate from
// one thread only, and a loom lock would add a switch point under the PE's (std) state lock.
use std::sync::{Arc, Mutex, MutexGuard as CacheGuard, RwLock, Weak};

/// Keeps a value on its own cache lines (128 bytes covers adjacent-line prefetch).
#[repr(align(128))]
#[derive(Debug, Default)]
pub(crate) struct Padded<T>(pub T);

/// TCE invalidations a PE received (kernel.md 3.7): range kills after map/unmap, PE-wide
/// kills when a window is set or unset; and the PHB's TCE cache they invalidate. Range
/// kills go to a per-CPU slot so that CPUs mapping through one PE do not share a cache
/// line.
///
/// The TCE cache models the hardware's: a device translation that finds a valid TCE keeps
/// it, and later translations of that entry are served from the cache. Any kill on the PE
/// empties it before the next translation; so a TCE changed without a kill goes on being
/// served from the cache, which is what the checker's `TceCacheCoherent` rule looks for.
/// The cache is only touched by device translations (the simulator's DMA), never by the
/// DMA API's hot path.
///
/// How a kill reaches the cache: every count is bumped with a read-modify-write (release)
/// and the translation loads them (acquire) before it looks in the cache, emptying it if
/// any moved since it was filled. Not the kernel's `this_cpu_inc` load and store: a
/// caller's CPU number is only its claim, two threads that give the same one would lose a
/// count, and a lost count can bring a slot back to the value the cache was filled at,
/// which then serves a TCE from before the kill. A read-modify-write never loses one, and
/// the acquire that sees a count sees every TCE written before the kills it includes
/// (they form one release sequence), which a flag set with plain stores would not give.
/// Loom model: `tests/loom.rs`; stress test with a no-progress detector: `tests/kill_stress.rs`.
#[derive(Debug)]
pub struct PeCounters {
    range: [Padded<AtomicU64>; 4],
    pe_wide: AtomicU64,
    /// A leaf lock: taken after the PE's state, nothing taken under it.
    cache: Mutex<TceCache>,
}

impl Default for PeCounters {
    fn default() -> Self {
        PeCounters {
            range: Default::default(),
            pe_wide: AtomicU64::new(0),
            cache: Mutex::new(TceCache::default()),
        }
    }
}

/// The PHB's TCE cache of one PE: `(window slot, absolute index) -> TCE`, valid while the
/// kill counts are still the ones it was filled at.
#[derive(Debug, Default)]
struct TceCache {
    range_seen: [u64; 4],
    pe_seen: u64,
    entries: BTreeMap<(u32, u64), u64>,
}

/// Most entries the cache holds (past it, it starts empty again, as a small hardware
/// cache evicts).
const TCE_CACHE_ENTRIES: usize = 1024;

impl PeCounters {
    /// Records one range kill from `cpu` (its slot keeps CPUs mapping through one PE off
    /// each other's cache line). Release: the TCE writes before it are seen by the
    /// translation that sees the kill.
    #[inline]
    pub fn range_kill(&self, cpu: u32) {
        self.range[(cpu & 3) as usize]
            .0
            .fetch_add(1, Ordering::Release);
    }
    /// Records `n` range kills from `cpu` at once: a scatter list's, one per segment, after
    /// its last TCE store (what a translation can tell apart from `n` single kills is
    /// only that none of them came before the last store).
    #[inline]
    pub fn range_kills_at_once(&self, cpu: u32, n: u64) {
        self.range[(cpu & 3) as usize]
            .0
            .fetch_add(n, Ordering::Release);
    }
    /// Records one PE-wide kill.
    pub fn pe_kill(&self) {
        self.pe_wide.fetch_add(1, Ordering::Release);
    }
    /// Range kills so far.
    pub fn range_kills(&self) -> u64 {
        self.range.iter().map(|c| c.0.load(Ordering::Relaxed)).sum()
    }
    /// PE-wide kills so far.
    pub fn pe_kills(&self) -> u64 {
        self.pe_wide.load(Ordering::Relaxed)
    }
    /// The cache, emptied first if a kill happened since it was filled.
    fn cache(&self) -> CacheGuard<'_, TceCache> {
        let mut c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let range = self.range.each_ref().map(|s| s.0.load(Ordering::Acquire));
        let pe = self.pe_wide.load(Ordering::Acquire);
        if c.range_seen != range || c.pe_seen != pe {
            c.entries.clear();
            c.range_seen = range;
            c.pe_seen = pe;
        }
        c
    }
    /// The TCE the PHB uses for entry `index` of window `slot`: the cached one if any,
    /// else `load()`'s, kept if valid. A device translation (`Pe::translate` calls it; public
    /// so that the loom model can race it against kills).
    pub fn cached_tce(&self, slot: u32, index: u64, load: impl FnOnce() -> u64) -> u64 {
        let mut c = self.cache();
        if let Some(v) = c.entries.get(&(slot, index)) {
            return *v;
        }
        let v = load();
        if v & 3 != 0 {
            if c.entries.len() >= TCE_CACHE_ENTRIES {
                c.entries.clear();
            }
            c.entries.insert((slot, index), v);
        }
        v
    }
    /// The TCE the PHB would use for entry `index` of window `slot`, the cache left as
    /// it is.
    pub(crate) fn peek_tce(&self, slot: u32, index: u64, load: impl FnOnce() -> u64) -> u64 {
        let cached = self.cache().entries.get(&(slot, index)).copied();
        cached.unwrap_or_else(load)
    }
    /// What the cache would serve now: `(slot, index, tce)`.
    pub(crate) fn cached(&self) -> Vec<(u32, u64, u64)> {
        self.cache()
            .entries
            .iter()
            .map(|((s, i), v)| (*s, *i, *v))
            .collect()
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
///
/// Its entries are private to this crate: everyone reads them through the methods below;
/// only the kernel DMA API (inside this crate) writes a kernel table, and only the holder
/// of a [`UserTable`] (handed out by [`crate::Pe::create_table`] against a live claim)
/// writes a user's.
#[derive(Debug)]
pub struct IommuTable {
    /// The entries.
    pub(crate) tces: HwTable,
    /// `it_map`: present on tables the kernel DMA API allocates from (the default window,
    /// borrowed tables); absent on tables created for a user (VFIO).
    pub(crate) map: Option<TceAllocator>,
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
    /// Its links (inside the crate: through them a caller could count kills no update
    /// made, which would hide a missing one from `TceCacheCoherent`).
    pub(crate) fn links(&self) -> &Arc<TableLinks> {
        &self.links
    }
    /// PEs whose TCE caches its updates invalidate now (every PE it is programmed on).
    pub fn linked_pes(&self) -> usize {
        self.links.linked()
    }
    /// The window's shape.
    pub fn geometry(&self) -> &TableGeometry {
        self.tces.geometry()
    }
    /// The entry at absolute index `index` (0 where never written).
    pub fn get(&self, index: TceIndex) -> Result<spapr_tce::Tce, spapr_tce::TceError> {
        self.tces.get(index)
    }
    /// Entries that are not zero.
    pub fn count_mapped(&self) -> u64 {
        self.tces.count_mapped()
    }
    /// The mapped entries as runs of consecutive pages with one permission.
    pub fn mapped_runs(&self) -> Vec<spapr_tce::MappedRun> {
        self.tces.mapped_runs()
    }
    /// Calls `f(index, tce)` for each non-zero entry of `[first, first + count)`.
    pub fn for_each_entry(
        &self,
        first: TceIndex,
        count: u64,
        f: impl FnMut(TceIndex, spapr_tce::Tce),
    ) -> Result<(), spapr_tce::TceError> {
        self.tces.for_each_entry(first, count, f)
    }
    /// Bytes its levels hold.
    pub fn allocated_bytes(&self) -> u64 {
        self.tces.allocated_bytes()
    }
    /// Whether it is a kernel DMA table (it has the kernel allocator).
    pub fn is_kernel_table(&self) -> bool {
        self.map.is_some()
    }
    /// A read-only view of a kernel table's allocator (its bitmap); `None` for a user
    /// table. The kernel DMA API is the only way to change it.
    pub fn allocator(&self) -> Option<crate::AllocatorView<'_>> {
        self.map.as_ref().map(crate::AllocatorView)
    }
    /// The window's first bus address.
    pub fn start(&self) -> u64 {
        self.tces.geometry().bus_offset().raw()
    }
    /// The window's size in bytes.
    pub fn window_size(&self) -> u64 {
        self.tces.geometry().window_size()
    }
    /// The bus address of the first mapped entry, if any (what a probe translates).
    pub fn mapped_runs_first(&self) -> Option<u64> {
        let g = *self.tces.geometry();
        let mut first = None;
        let _ = self
            .tces
            .for_each_entry(g.first_index(), g.entries(), |i, _| {
                if first.is_none() {
                    first = Some(i.0 << g.page_shift().shift());
                }
            });
        first
    }
    /// Whether `iova` lies in the window.
    pub fn contains(&self, iova: u64) -> bool {
        self.tces
            .geometry()
            .relative_index(spapr_tce::Iova(iova))
            .is_some()
    }
}

/// Write access to a user's table: handed out only by [`crate::Pe::create_table`] against
/// a live claim of the PE's group (VFIO's windows, a borrowed table lent to a user).
/// Reads go through [`IommuTable`] (`Deref`).
///
/// A borrowed table (a borrowing PE's kernel window 0) is the kernel's again once the
/// claim ends, so its `UserTable` carries the claim's [`OwnershipLease`] and every write
/// checks it: a handle kept past the release gets [`spapr_tce::TceError::Revoked`] and
/// changes nothing (the kernel's DMA and a device behind it never see a user's entry); a
/// write in flight holds the group's lock, so the release waits for it. A table made for
/// the user carries none and its writes cost no check: once its window is unset no device
/// reaches it (VFIO unsets every window before it releases the claim; a release that
/// leaves one programmed is what `NoUserMappingAfterRelease` reports, and an IODA2 PE
/// refuses a lent kernel table, [`crate::WindowError::KernelTable`]).
#[derive(Clone, Debug)]
pub struct UserTable {
    table: Arc<IommuTable>,
    lease: Option<OwnershipLease>,
}

impl std::ops::Deref for UserTable {
    type Target = IommuTable;
    fn deref(&self) -> &IommuTable {
        &self.table
    }
}

impl UserTable {
    /// A table made for the user (no lease: see the type's doc).
    pub(crate) fn made(table: Arc<IommuTable>) -> Self {
        Self { table, lease: None }
    }
    /// The kernel's table lent to the user under `lease`.
    pub(crate) fn lent(table: Arc<IommuTable>, lease: OwnershipLease) -> Self {
        Self {
            table,
            lease: Some(lease),
        }
    }
    /// Runs the write `f` on the entries if this handle may still write them: for a lent
    /// table, under the lease (the group's lock held, so the claim cannot end, and the
    /// release clear the table, between the check and the write: group → table, the
    /// crate's order); `Revoked` without running it once the claim has ended.
    #[inline]
    fn write<R>(
        &self,
        f: impl FnOnce(&HwTable) -> Result<R, spapr_tce::TceError>,
    ) -> Result<R, spapr_tce::TceError> {
        match &self.lease {
            Some(l) => l
                .while_live(|| f(&self.table.tces))
                .unwrap_or(Err(spapr_tce::TceError::Revoked)),
            None => f(&self.table.tces),
        }
    }
    /// The shared table (what a PE's window holds).
    pub fn shared(&self) -> &Arc<IommuTable> {
        &self.table
    }
    /// Sets the entry at `index` and kills it.
    pub fn set(&self, index: TceIndex, tce: spapr_tce::Tce) -> Result<(), spapr_tce::TceError> {
        self.write(|t| t.set(index, tce))
    }
    /// `xchg_no_kill`: replaces an entry, returns the old one; the caller kills.
    pub fn exchange_no_kill(
        &self,
        index: TceIndex,
        tce: spapr_tce::Tce,
    ) -> Result<spapr_tce::Tce, spapr_tce::TceError> {
        self.write(|t| t.exchange_no_kill(index, tce))
    }
    /// Maps `count` consecutive pages from `addr` with `perm`, then one kill.
    pub fn put_linear(
        &self,
        first: TceIndex,
        count: u64,
        addr: u64,
        perm: spapr_tce::TcePerm,
    ) -> Result<(), spapr_tce::TceError> {
        self.write(|t| t.put_linear(first, count, addr, perm))
    }
    /// Zeroes a range without reading it (the owner knows what it held), then one kill.
    pub fn zero_exclusive(&self, first: TceIndex, count: u64) -> Result<(), spapr_tce::TceError> {
        self.write(|t| t.zero_exclusive(first, count))
    }
    /// Zeroes a range of this table and clears the same range of `uas` (the user
    /// addresses VFIO v2 keeps beside each TCE) in one pass, reporting the user addresses
    /// as runs of consecutive pages (`TceTable::clear_exclusive_runs_paired`); returns the
    /// user-address entries cleared. The TCEs' kill comes first.
    pub fn zero_exclusive_with_uas<U: spapr_tce::RealAddress>(
        &self,
        uas: &spapr_tce::TceTable<U>,
        first: TceIndex,
        count: u64,
        f: impl FnMut(spapr_tce::Tce, u64),
    ) -> Result<u64, spapr_tce::TceError> {
        self.write(|t| uas.clear_exclusive_runs_paired(t, first, count, f))
    }
    /// Clears a range, calling `f` for each old entry, then one kill.
    pub fn clear_exclusive_with(
        &self,
        first: TceIndex,
        count: u64,
        f: impl FnMut(TceIndex, spapr_tce::Tce),
    ) -> Result<spapr_tce::ClearStats, spapr_tce::TceError> {
        self.write(|t| t.clear_exclusive_with(first, count, f))
    }
    /// Clears a range, then one kill.
    pub fn clear(
        &self,
        first: TceIndex,
        count: u64,
    ) -> Result<spapr_tce::ClearStats, spapr_tce::TceError> {
        self.write(|t| t.clear(first, count))
    }
    /// `tce_kill` for a range (after `exchange_no_kill`s); nothing once revoked (it
    /// changed nothing to kill).
    pub fn kill(&self, first: TceIndex, count: u64) {
        let _ = self.write(|t| {
            t.kill(first, count);
            Ok(())
        });
    }
}
