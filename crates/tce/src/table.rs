//! One TCE table = one DMA window (the kernel's `struct iommu_table` with the PowerNV
//! `pnv_tce_*` accessors; QEMU's `SpaprTceTable`).

use crate::addr::{Iova, RealAddress, TceIndex};
use crate::entry::{Access, Tce};
use crate::error::{Fault, TceError};
use crate::geometry::TableGeometry;
use crate::kill::{NoKill, TceKill};
use crate::levels::LevelTree;
use crate::sync::{AtomicU64, Ordering};
use core::marker::PhantomData;

/// Most entries one batched put may carry (one 4 KiB page of TCEs, PAPR's
/// H_PUT_TCE_INDIRECT limit).
pub const MAX_BATCH: usize = 512;

/// Options of a table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableOptions {
    /// PowerNV's `pnv_tce_build`/`pnv_tce_xchg` rule: an entry with write permission
    /// has read permission too. Every read of an entry applies it (get, translate, the old
    /// value of an exchange or a clear, the scans), so a batch is stored as given and
    /// no reader can tell it from the kernel's table, which ORs read in before storing.
    pub write_implies_read: bool,
    /// Most bytes the table's levels may hold; a level that would pass it fails to
    /// allocate (models allocation failure, -ENOMEM).
    pub max_bytes: u64,
}

impl Default for TableOptions {
    fn default() -> Self {
        Self {
            write_implies_read: false,
            max_bytes: u64::MAX,
        }
    }
}

impl TableOptions {
    /// PowerNV's options: write implies read.
    pub fn powernv() -> Self {
        Self {
            write_implies_read: true,
            ..Self::default()
        }
    }
}

/// What a clear did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClearStats {
    /// Entries that were non-zero and are now zero.
    pub cleared: u64,
    /// Allocated leaves the clear looked at (missing levels are skipped, never visited).
    pub leaves_visited: u64,
}

/// Where a batched write takes its entries from.
#[derive(Clone, Copy)]
enum Source<'a> {
    Slice(&'a [Tce]),
    /// Entries as the table stores them: big-endian bytes, 8 per entry (a guest's TCE
    /// list copied as it is).
    BigEndian(&'a [u8]),
    Repeat(Tce),
    /// Entry `k` maps `addr + (k << shift)` with `perm` bits.
    Linear {
        addr: u64,
        shift: u32,
        perm: u64,
    },
}

/// A run of consecutive entries mapping consecutive pages with the same permission.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MappedRun {
    /// First index.
    pub first: TceIndex,
    /// Entries in the run.
    pub count: u64,
    /// The first entry of the run.
    pub tce: Tce,
}

/// A TCE table over one DMA window. `A` is the address space its entries point into
/// ([`crate::Hpa`] on bare metal, [`crate::Gpa`] inside a guest); `K` receives the
/// invalidations.
///
/// Every operation takes `&self`: readers (translate, get) and exchanges are lock-free and
/// safe from many threads; a racing reader sees the old or the new entry, never a torn one.
/// Entries sit in memory big-endian, as the hardware reads them. On a write-implies-read
/// table an entry may sit in memory with write and without read; every reader adds the
/// read (see [`TableOptions::write_implies_read`]), so that storing costs nothing for it.
pub struct TceTable<A: RealAddress = crate::Hpa, K: TceKill = NoKill> {
    geometry: TableGeometry,
    tree: LevelTree,
    kill: K,
    write_implies_read: bool,
    _addr: PhantomData<fn() -> A>,
}

impl<A: RealAddress> TceTable<A, NoKill> {
    /// A table without a TCE cache to invalidate.
    pub fn new(geometry: TableGeometry, options: TableOptions) -> Result<Self, TceError> {
        Self::with_kill(geometry, options, NoKill)
    }
}

impl<A: RealAddress, K: TceKill> TceTable<A, K> {
    /// A table whose updates are reported to `kill`.
    pub fn with_kill(
        geometry: TableGeometry,
        options: TableOptions,
        kill: K,
    ) -> Result<Self, TceError> {
        Ok(Self {
            tree: LevelTree::new(&geometry, options.max_bytes)?,
            geometry,
            kill,
            write_implies_read: options.write_implies_read,
            _addr: PhantomData,
        })
    }

    /// The table's shape.
    #[inline]
    pub fn geometry(&self) -> &TableGeometry {
        &self.geometry
    }
    /// The invalidation hook.
    #[inline]
    pub fn kill_hook(&self) -> &K {
        &self.kill
    }
    /// Bytes held by the allocated levels (`it_allocated_size` as it grows).
    #[inline]
    pub fn allocated_bytes(&self) -> u64 {
        self.tree.bytes()
    }
    /// Leaves allocated so far.
    #[inline]
    pub fn allocated_leaves(&self) -> u64 {
        self.tree.leaves()
    }
    /// Whether writes force read permission on writable entries.
    #[inline]
    pub fn write_implies_read(&self) -> bool {
        self.write_implies_read
    }

    #[inline]
    fn rel(&self, index: TceIndex) -> Result<u64, TceError> {
        let g = &self.geometry;
        let rel = index.0.wrapping_sub(g.first_index().0);
        if rel < g.entries() {
            Ok(rel)
        } else {
            Err(TceError::IndexOutOfWindow {
                index,
                first: g.first_index(),
                end: g.end_index(),
            })
        }
    }

    #[inline]
    fn rel_range(&self, first: TceIndex, count: u64) -> Result<u64, TceError> {
        let g = &self.geometry;
        let rel = first.0.wrapping_sub(g.first_index().0);
        if first.0 >= g.first_index().0 && rel <= g.entries() && count <= g.entries() - rel {
            Ok(rel)
        } else {
            Err(TceError::RangeOutOfWindow {
                first,
                count,
                window_first: g.first_index(),
                window_end: g.end_index(),
            })
        }
    }

    /// The entry as stored: big-endian, as given (write-implies-read is applied by
    /// [`Self::loaded`]).
    #[inline(always)]
    fn stored(tce: Tce) -> u64 {
        tce.0.to_be()
    }

    /// An entry as loaded from memory (`be`, big-endian) as every reader must see it:
    /// read added to write on a write-implies-read table (branch-free). The one place
    /// the rule is applied, with [`Translator::translate`]'s permission check and
    /// [`RunScan`] (which take it as a constant).
    #[inline(always)]
    fn loaded(&self, be: u64) -> Tce {
        Tce(with_read_if_write(
            u64::from_be(be),
            u64::from(self.write_implies_read),
        ))
    }

    /// The entry at `index` (0 where no level exists). Never allocates.
    #[inline]
    pub fn get(&self, index: TceIndex) -> Result<Tce, TceError> {
        let rel = self.rel(index)?;
        // Relaxed: the entry is a value, nothing is published through it; the level
        // pointers on the way were loaded with Acquire.
        Ok(Tce(self
            .tree
            .slot(rel)
            .map_or(0, |s| self.loaded(s.load(Ordering::Relaxed)).0)))
    }

    /// The entry at `index` as the hardware holds it in memory (big-endian bytes).
    pub fn get_be_bytes(&self, index: TceIndex) -> Result<[u8; 8], TceError> {
        self.get(index).map(Tce::to_be_bytes)
    }

    /// Atomically replaces the entry at `index` and returns the old one, without
    /// invalidating (the kernel's `xchg_no_kill`; the caller batches a [`Self::kill`]).
    /// Clearing (`Tce::EMPTY`) an entry whose level is missing succeeds without allocating.
    #[inline]
    pub fn exchange_no_kill(&self, index: TceIndex, tce: Tce) -> Result<Tce, TceError> {
        let rel = self.rel(index)?;
        let slot = if tce.is_empty() {
            match self.tree.slot(rel) {
                Some(s) => s,
                None => return Ok(Tce::EMPTY),
            }
        } else {
            self.tree.slot_alloc(rel)?
        };
        Ok(self.loaded(slot.swap(Self::stored(tce), Ordering::AcqRel)))
    }

    /// Stores the entry at `index` without reading the old one and without invalidating
    /// (the kernel DMA API's `pnv_tce_build`/`pnv_tce_free`, which own their entries
    /// through the allocator and need no exchange). One plain release store: a racing
    /// reader sees the old or the new entry. Storing `Tce::EMPTY` where no level exists
    /// succeeds without allocating. Always inlined: the kernel DMA API's map and unmap
    /// call it once per page, and as a call it cost about 30 instructions of register
    /// saves each (callgrind: 341 -> 281 instructions per one-page map+unmap).
    #[inline(always)]
    pub fn store_no_kill(&self, index: TceIndex, tce: Tce) -> Result<(), TceError> {
        let rel = self.rel(index)?;
        let slot = if tce.is_empty() {
            match self.tree.slot(rel) {
                Some(s) => s,
                None => return Ok(()),
            }
        } else {
            self.tree.slot_alloc(rel)?
        };
        slot.store(Self::stored(tce), Ordering::Release);
        Ok(())
    }

    /// Atomically replaces the entry at `index`, returns the old one and invalidates it.
    #[inline]
    pub fn exchange(&self, index: TceIndex, tce: Tce) -> Result<Tce, TceError> {
        let old = self.exchange_no_kill(index, tce)?;
        self.kill.kill_range(index, 1);
        Ok(old)
    }

    /// Sets the entry at `index` (an exchange whose old value is not needed).
    #[inline]
    pub fn set(&self, index: TceIndex, tce: Tce) -> Result<(), TceError> {
        self.exchange(index, tce).map(drop)
    }

    /// Writes `tces` to consecutive entries from `first`, then invalidates the range once.
    /// At most [`MAX_BATCH`] entries. All-or-nothing: the whole range is checked and every
    /// level it needs is allocated before the first entry is written.
    pub fn put_batch(&self, first: TceIndex, tces: &[Tce]) -> Result<(), TceError> {
        if tces.len() > MAX_BATCH {
            return Err(TceError::BatchTooLarge {
                len: tces.len(),
                max: MAX_BATCH,
            });
        }
        self.write_runs(first, tces.len() as u64, Source::Slice(tces))
    }

    /// [`Self::put_batch`] of entries given as the table stores them: 8 big-endian bytes
    /// each (a guest's TCE list as it sits in guest memory), so that no byte swap is needed
    /// on the way. At most [`MAX_BATCH`] entries; `be.len()` must be a multiple of 8.
    pub fn put_batch_be(&self, first: TceIndex, be: &[u8]) -> Result<(), TceError> {
        let n = be.len() / 8;
        if n > MAX_BATCH || be.len() % 8 != 0 {
            return Err(TceError::BatchTooLarge {
                len: n,
                max: MAX_BATCH,
            });
        }
        self.write_runs(first, n as u64, Source::BigEndian(be))
    }

    /// Writes the same entry to `count` consecutive entries from `first` (H_STUFF_TCE),
    /// then invalidates the range once. All-or-nothing like [`Self::put_batch`]; clearing
    /// never allocates.
    #[inline]
    pub fn fill(&self, first: TceIndex, count: u64, tce: Tce) -> Result<(), TceError> {
        if tce.is_empty() {
            return self.clear(first, count).map(drop);
        }
        self.write_runs(first, count, Source::Repeat(tce))
    }

    /// Maps `count` consecutive pages from `addr` (page aligned) with `perm` into
    /// consecutive entries from `first`, then invalidates the range once: VFIO's MAP of a
    /// contiguous region. All-or-nothing like [`Self::put_batch`]; no length limit.
    pub fn put_linear(
        &self,
        first: TceIndex,
        count: u64,
        addr: u64,
        perm: crate::entry::TcePerm,
    ) -> Result<(), TceError> {
        let shift = self.geometry.page_shift().shift();
        let addr = addr & !self.geometry.page_shift().offset_mask();
        self.write_runs(
            first,
            count,
            Source::Linear {
                addr,
                shift,
                perm: perm.bits(),
            },
        )
    }

    /// Like [`Self::clear_with`] for an owner that is the table's only writer (VFIO under
    /// its container lock): each entry is read and then stored, no exchange. A racing
    /// reader (the device) still sees the old or the new entry, never a torn one.
    pub fn clear_exclusive_with(
        &self,
        first: TceIndex,
        count: u64,
        f: impl FnMut(TceIndex, Tce),
    ) -> Result<ClearStats, TceError> {
        self.clear_impl(first, count, true, f)
    }

    /// Like [`Self::clear_exclusive_with`], reporting what was cleared as runs: `f(first
    /// entry, length)` for each stretch of consecutive entries whose addresses follow one
    /// another page by page (VFIO's user addresses of one mapping). Returns the entries
    /// cleared. The run state stays in registers within a leaf, so a mapping of many pages
    /// costs a load and a store per entry and one call per run.
    pub fn clear_exclusive_runs(
        &self,
        first: TceIndex,
        count: u64,
        mut f: impl FnMut(Tce, u64),
    ) -> Result<u64, TceError> {
        let rel = self.rel_range(first, count)?;
        let mut scan = RunScan::new(self.geometry.page_shift().size(), self.write_implies_read);
        self.tree.for_each_leaf(rel, rel + count, &mut |_, run| {
            scan.scan(run, None, &mut f);
        });
        let cleared = scan.finish(&mut f);
        if count > 0 {
            self.kill.kill_range(first, count);
        }
        Ok(cleared)
    }

    /// [`Self::clear_exclusive_runs`] on this table (VFIO's user addresses) and
    /// [`Self::zero_exclusive`] on `partner` (the TCEs beside them) over the same range, in
    /// one pass when the two tables have the same geometry: entry by entry, the TCE is
    /// zeroed, then its user address read and zeroed (the kernel's
    /// `tce_iommu_clear` order: `xchg_no_kill`, then `tce_iommu_unuse_page_v2`), and each
    /// table's kill follows the pass, the TCEs' first. Tables of different geometries are
    /// cleared one after the other, with the same result.
    pub fn clear_exclusive_runs_paired<B: RealAddress, L: TceKill>(
        &self,
        partner: &TceTable<B, L>,
        first: TceIndex,
        count: u64,
        mut f: impl FnMut(Tce, u64),
    ) -> Result<u64, TceError> {
        let rel = self.rel_range(first, count)?;
        partner.rel_range(first, count)?;
        if partner.geometry != self.geometry {
            partner.zero_exclusive(first, count)?;
            return self.clear_exclusive_runs(first, count, f);
        }
        let g = &self.geometry;
        // Same geometry: the leaves of the two tables cover the same entries.
        let span = if g.levels() == 1 {
            g.entries()
        } else {
            1u64 << g.level_bits()
        };
        let mut scan = RunScan::new(g.page_shift().size(), self.write_implies_read);
        let end = rel + count;
        let mut pos = rel;
        while pos < end {
            let leaf_end = ((pos / span) + 1).saturating_mul(span).min(end);
            let n = (leaf_end - pos) as usize;
            let tces = partner.tree.leaf_run(pos, n, false)?;
            let uas = self.tree.leaf_run(pos, n, false)?;
            match (uas, tces) {
                (Some(u), t) => scan.scan(u, t, &mut f),
                (None, Some(t)) => {
                    for slot in t {
                        slot.store(0, Ordering::Release);
                    }
                }
                (None, None) => {}
            }
            pos = leaf_end;
        }
        let cleared = scan.finish(&mut f);
        if count > 0 {
            partner.kill.kill_range(first, count);
            self.kill.kill_range(first, count);
        }
        Ok(cleared)
    }

    /// Zeroes `[first, first + count)` without reading it, for an owner that is the
    /// table's only writer and knows what the entries held (VFIO keeps the user address of
    /// each entry beside it). Missing levels are skipped; one kill for the range.
    pub fn zero_exclusive(&self, first: TceIndex, count: u64) -> Result<(), TceError> {
        let rel = self.rel_range(first, count)?;
        self.tree.for_each_leaf(rel, rel + count, &mut |_, run| {
            for slot in run {
                slot.store(0, Ordering::Release);
            }
        });
        if count > 0 {
            self.kill.kill_range(first, count);
        }
        Ok(())
    }

    /// Shared body of batched writes: check, write, kill once. A range inside one leaf
    /// that exists (a hypercall's batch of at most 512 entries, mostly) is written here
    /// with one walk and no allocation check; any other goes to [`Self::write_leaves`].
    /// Inlined so that each caller's `src` is a constant: what runs before the first
    /// store is what a batch pays on top of its stores, since the kill that ends the
    /// previous batch drains the store buffer first.
    #[inline(always)]
    fn write_runs(&self, first: TceIndex, count: u64, src: Source<'_>) -> Result<(), TceError> {
        let rel = self.rel_range(first, count)?;
        if count == 0 {
            return Ok(());
        }
        let run = usize::try_from(count)
            .ok()
            .and_then(|n| self.tree.view().run(rel, n));
        match run {
            Some(run) => {
                Self::store_run(run, src, 0);
                self.kill.kill_range(first, count);
                Ok(())
            }
            None => self.write_leaves(first, rel, count, src),
        }
    }

    /// Stores `src`'s entries `done..done + run.len()` into `run`, one relaxed (release)
    /// store each: entries are stored as given, a load (or an add), a byte swap and a
    /// store each; write-implies-read is applied by every reader (`Self::loaded`).
    #[inline(always)]
    fn store_run(run: &[AtomicU64], src: Source<'_>, done: usize) {
        let n = run.len();
        match src {
            Source::Slice(tces) => {
                for (slot, tce) in run.iter().zip(&tces[done..done + n]) {
                    slot.store(Self::stored(*tce), Ordering::Release);
                }
            }
            Source::BigEndian(be) => {
                let src = &be[8 * done..8 * (done + n)];
                for (slot, w) in run.iter().zip(src.chunks_exact(8)) {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(w);
                    slot.store(u64::from_ne_bytes(b), Ordering::Release);
                }
            }
            Source::Repeat(tce) => {
                let v = Self::stored(tce);
                for slot in run {
                    slot.store(v, Ordering::Release);
                }
            }
            Source::Linear { addr, shift, perm } => {
                let step = 1u64 << shift;
                let mut next = addr.wrapping_add((done as u64) << shift) | perm;
                for slot in run {
                    slot.store(next.to_be(), Ordering::Release);
                    next = next.wrapping_add(step);
                }
            }
        }
    }

    /// [`Self::write_runs`] of a range across leaves, or into a leaf not yet allocated:
    /// every leaf the range needs is allocated first, so that nothing is written unless
    /// all of it can be, then the range is written leaf by leaf and killed once.
    #[inline(never)]
    fn write_leaves(
        &self,
        first: TceIndex,
        rel: u64,
        count: u64,
        src: Source<'_>,
    ) -> Result<(), TceError> {
        // Where the leaf holding `r` ends: a one-level table is one leaf; lower levels hold
        // 2^level_bits entries (shifts, not divisions: a 64-bit division costs more than
        // a small batch's stores).
        let g = &self.geometry;
        let flat = g.levels() == 1;
        let bits = g.level_bits();
        let leaf_end = |r: u64| {
            if flat {
                u64::MAX
            } else {
                ((r >> bits) + 1) << bits
            }
        };
        let end = rel + count;
        // Pass 1 allocates every leaf the range needs, so pass 2 cannot fail half-way; a
        // range inside one leaf needs no pass 1 (pass 2's first walk allocates it, and
        // fails before anything is written).
        let one_leaf = leaf_end(rel) >= end;
        if !one_leaf {
            let mut r = rel;
            while r < end {
                self.tree.slot_alloc(r)?;
                r = leaf_end(r);
            }
        }
        let mut done = 0usize;
        let mut r = rel;
        while r < end {
            let n = (leaf_end(r).min(end) - r) as usize;
            let run = self
                .tree
                .leaf_run(r, n, one_leaf)?
                .ok_or(TceError::AllocFailed { bytes: 0 })?;
            Self::store_run(run, src, done);
            done += n;
            r += n as u64;
        }
        self.kill.kill_range(first, count);
        Ok(())
    }

    /// Clears `count` entries from `first` and invalidates the range; missing levels count
    /// as empty and are neither visited nor allocated. Costs time in proportion to the
    /// allocated leaves in the range, not to its size.
    pub fn clear(&self, first: TceIndex, count: u64) -> Result<ClearStats, TceError> {
        self.clear_with(first, count, |_, _| {})
    }

    /// Like [`Self::clear`], calling `f(index, old)` for every entry that was non-zero
    /// (the caller releases what the old entries held, as VFIO unpins pages).
    pub fn clear_with(
        &self,
        first: TceIndex,
        count: u64,
        f: impl FnMut(TceIndex, Tce),
    ) -> Result<ClearStats, TceError> {
        self.clear_impl(first, count, false, f)
    }

    /// Shared body of the clears: visit allocated leaves only, take each non-zero entry
    /// (an exchange, or a load and a store for an exclusive writer), kill once.
    #[inline]
    fn clear_impl(
        &self,
        first: TceIndex,
        count: u64,
        exclusive: bool,
        mut f: impl FnMut(TceIndex, Tce),
    ) -> Result<ClearStats, TceError> {
        let rel = self.rel_range(first, count)?;
        let base = self.geometry.first_index().0;
        let mut stats = ClearStats::default();
        self.tree
            .for_each_leaf(rel, rel + count, &mut |start, run| {
                stats.leaves_visited += 1;
                for (k, slot) in run.iter().enumerate() {
                    let seen = slot.load(Ordering::Relaxed);
                    if seen == 0 {
                        continue;
                    }
                    let old = if exclusive {
                        slot.store(0, Ordering::Release);
                        seen
                    } else {
                        slot.swap(0, Ordering::AcqRel)
                    };
                    if old != 0 {
                        stats.cleared += 1;
                        f(TceIndex(base + start + k as u64), self.loaded(old));
                    }
                }
            });
        if count > 0 {
            self.kill.kill_range(first, count);
        }
        Ok(stats)
    }

    /// Invalidates `[first, first + count)` (the kernel's `tce_kill`), after a run of
    /// [`Self::exchange_no_kill`].
    pub fn kill(&self, first: TceIndex, count: u64) {
        self.kill.kill_range(first, count);
    }

    /// Invalidates the whole window: call when the window is set or unset on a PE.
    pub fn kill_all(&self) {
        self.kill.kill_all();
    }

    /// Translates a device access at bus address `iova`: the real address it reaches, or
    /// the fault the hardware would raise.
    #[inline(always)]
    pub fn translate(&self, iova: Iova, access: Access) -> Result<A, Fault> {
        self.translator().translate(iova, access)
    }

    /// A translator for a loop of translations: [`Self::translate`] with the window's
    /// numbers copied out once, so that they stay in registers across the entry loads
    /// (the compiler must otherwise reload them after every atomic load). Same results,
    /// same lock-free guarantees; it borrows the table.
    #[inline]
    pub fn translator(&self) -> Translator<'_, A, K> {
        let g = &self.geometry;
        Translator {
            _table: PhantomData,
            bus_offset: g.bus_offset().raw(),
            shift: g.page_shift().shift(),
            mask: g.offset_mask(),
            read_need: 1 | (u64::from(self.write_implies_read) << 1),
            first: g.first_index(),
            view: self.tree.view(),
        }
    }

    /// The fault of a refused access. Built in line: a call on the translation path
    /// would make every value live across it leave its register, so a loop of
    /// translations would reload them from the stack (6 extra loads per translation,
    /// measured), and a caller that only asks `is_ok` lets the compiler drop it.
    #[inline(always)]
    fn fault(first: TceIndex, iova: Iova, rel: u64, raw: u64, access: Access) -> Fault {
        let index = TceIndex(first.0.wrapping_add(rel));
        // Write-implies-read never changes a refused entry: a read is refused only with
        // neither read nor write, a write only without write.
        if raw & 3 == 0 {
            // Neither read nor write: an empty (or poisoned) entry.
            Fault::NoEntry { iova, index }
        } else {
            Fault::Permission {
                iova,
                index,
                tce: Tce(raw),
                access,
            }
        }
    }

    /// Calls `f(index, tce)` for every non-zero entry in `[first, first + count)`, visiting
    /// only allocated leaves.
    pub fn for_each_entry(
        &self,
        first: TceIndex,
        count: u64,
        mut f: impl FnMut(TceIndex, Tce),
    ) -> Result<(), TceError> {
        let rel = self.rel_range(first, count)?;
        let base = self.geometry.first_index().0;
        self.tree
            .for_each_leaf(rel, rel + count, &mut |start, run| {
                for (k, slot) in run.iter().enumerate() {
                    // Zero in either byte order: the swap is paid only for mapped entries.
                    let raw = slot.load(Ordering::Acquire);
                    if raw != 0 {
                        f(TceIndex(base + start + k as u64), self.loaded(raw));
                    }
                }
            });
        Ok(())
    }

    /// The mapped entries of the whole window, coalesced into runs of consecutive pages
    /// with the same permission (what `show` prints).
    pub fn mapped_runs(&self) -> Vec<MappedRun> {
        let page = self.geometry.page_shift().size();
        let shift = self.geometry.page_shift().shift();
        let mut runs: Vec<MappedRun> = Vec::new();
        let g = self.geometry;
        // The range is the whole window, which `rel_range` always accepts.
        let _ = self.for_each_entry(g.first_index(), g.entries(), |index, tce| {
            if let Some(last) = runs.last_mut() {
                let expect = last.tce.page_addr(shift).wrapping_add(last.count * page);
                if last.first.0 + last.count == index.0
                    && tce.perm() == last.tce.perm()
                    && tce.page_addr(shift) == expect
                {
                    last.count += 1;
                    return;
                }
            }
            runs.push(MappedRun {
                first: index,
                count: 1,
                tce,
            });
        });
        runs
    }

    /// Number of non-zero entries in the window (walks allocated leaves).
    pub fn count_mapped(&self) -> u64 {
        let mut n = 0;
        let g = self.geometry;
        let _ = self.for_each_entry(g.first_index(), g.entries(), |_, _| n += 1);
        n
    }
}

/// [`TceTable::translate`] with the window's numbers held in registers; see
/// [`TceTable::translator`].
#[derive(Clone, Copy)]
pub struct Translator<'t, A: RealAddress, K: TceKill> {
    /// The table borrowed (its numbers are copied below; its levels are in `view`).
    _table: PhantomData<&'t TceTable<A, K>>,
    bus_offset: u64,
    shift: u32,
    mask: u64,
    /// The permission bits that allow a read: read, and write too on a write-implies-read
    /// table (the rule applied without touching the entry).
    read_need: u64,
    /// The window's first index (for a fault's index).
    first: TceIndex,
    view: crate::levels::View<'t>,
}

impl<A: RealAddress, K: TceKill> Translator<'_, A, K> {
    /// Translates a device access at bus address `iova`, as [`TceTable::translate`].
    #[inline(always)]
    pub fn translate(&self, iova: Iova, access: Access) -> Result<A, Fault> {
        let rel = iova.0.wrapping_sub(self.bus_offset) >> self.shift;
        // The view checks `rel` against the window (one compare). Relaxed: see
        // `TceTable::get`.
        let Some(raw) = self.view.load_raw(rel) else {
            return Err(Fault::OutsideWindow { iova });
        };
        let raw = u64::from_be(raw);
        let need = match access {
            Access::Read => self.read_need,
            Access::Write => 2,
        };
        if raw & need == 0 {
            return Err(TceTable::<A, K>::fault(self.first, iova, rel, raw, access));
        }
        Ok(A::from_raw((raw & !self.mask) | (iova.0 & self.mask)))
    }
}

impl<A: RealAddress, K: TceKill> core::fmt::Debug for TceTable<A, K> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TceTable")
            .field("geometry", &self.geometry)
            .field("allocated_bytes", &self.allocated_bytes())
            .finish_non_exhaustive()
    }
}

/// The run state of [`TceTable::clear_exclusive_runs`]: the first address of the open run,
/// its length, and the address that would continue it. A run may continue into the next
/// leaf: what matters is that the addresses follow one another, not where they sit.
struct RunScan {
    head: u64,
    len: u64,
    next: u64,
    page: u64,
    cleared: u64,
    /// The table's write-implies-read, applied to each entry as it is read.
    wir: bool,
}

impl RunScan {
    fn new(page: u64, wir: bool) -> Self {
        Self {
            head: 0,
            len: 0,
            next: 0,
            page,
            cleared: 0,
            wir,
        }
    }

    /// Closes the open run, if any.
    #[inline]
    fn close(&mut self, f: &mut impl FnMut(Tce, u64)) {
        if self.len > 0 {
            f(Tce(self.head), self.len);
            self.cleared += self.len;
            self.len = 0;
        }
    }

    /// One entry, already loaded (`raw`, big-endian) and not zero; `WIR` is the table's
    /// write-implies-read.
    #[inline(always)]
    fn entry<const WIR: bool>(&mut self, raw: u64, f: &mut impl FnMut(Tce, u64)) {
        let v = with_read_if_write(u64::from_be(raw), u64::from(WIR));
        if !(v == self.next && self.len > 0) {
            self.close(f);
            self.head = v;
        }
        self.len += 1;
        self.next = v.wrapping_add(self.page);
    }

    /// Clears `run`, and `partner`'s slots beside it (same length) if given, entry by
    /// entry: the partner's slot first. Eight entries that continue the open run page by
    /// page (one mapping's addresses) are checked together and cleared together.
    #[inline]
    fn scan(
        &mut self,
        run: &[AtomicU64],
        partner: Option<&[AtomicU64]>,
        f: &mut impl FnMut(Tce, u64),
    ) {
        match partner.filter(|p| p.len() == run.len()) {
            Some(p) if self.wir => self.scan_impl::<true, true>(run, p, f),
            Some(p) => self.scan_impl::<true, false>(run, p, f),
            None if self.wir => self.scan_impl::<false, true>(run, &[], f),
            None => self.scan_impl::<false, false>(run, &[], f),
        }
    }

    /// [`Self::scan`]; `partner` is `run`'s length when `PAIRED`, unused otherwise.
    #[inline(always)]
    fn scan_impl<const PAIRED: bool, const WIR: bool>(
        &mut self,
        run: &[AtomicU64],
        partner: &[AtomicU64],
        f: &mut impl FnMut(Tce, u64),
    ) {
        let page = self.page;
        let mut chunks = run.chunks_exact(8);
        let mut pchunks = partner.chunks_exact(8);
        // The open run's state in locals for the fast path (written back before the
        // entry-by-entry path and at the end), so that it stays in registers.
        let (mut next, mut len) = (self.next, self.len);
        // The highest `next` whose chunk of eight addresses does not wrap past 2^64 (a
        // page is at most 16 GiB, `PageShift::ALL`, so seven of them cannot overflow).
        let last_start = u64::MAX - 7 * page;
        for chunk in chunks.by_ref() {
            if PAIRED {
                if let Some(pc) = pchunks.next() {
                    for slot in pc {
                        slot.store(0, Ordering::Release);
                    }
                }
            }
            // Branch-free: the eight entries are next, next + page, ... (none of them can
            // be an empty entry when next is not 0 and the eight addresses do not wrap).
            // Compared as stored: `next` carries read added to write, so an entry stored
            // with write alone differs and takes the entry-by-entry path below, which
            // adds the read.
            let mut diff = 0u64;
            let mut want = next;
            for slot in chunk {
                diff |= u64::from_be(slot.load(Ordering::Relaxed)) ^ want;
                want = want.wrapping_add(page);
            }
            // `next` in [1, last_start]: not 0, and no wrap (one compare).
            if diff == 0 && len > 0 && next.wrapping_sub(1) < last_start {
                for slot in chunk {
                    slot.store(0, Ordering::Release);
                }
                len += 8;
                next = want;
                continue;
            }
            (self.next, self.len) = (next, len);
            // Loaded again: this table's owner is its only writer, so the entries are
            // what the check above read.
            for slot in chunk {
                let raw = slot.load(Ordering::Relaxed);
                if raw == 0 {
                    self.close(f);
                    continue;
                }
                slot.store(0, Ordering::Release);
                self.entry::<WIR>(raw, f);
            }
            (next, len) = (self.next, self.len);
        }
        (self.next, self.len) = (next, len);
        if PAIRED {
            for slot in pchunks.remainder() {
                slot.store(0, Ordering::Release);
            }
        }
        for slot in chunks.remainder() {
            let raw = slot.load(Ordering::Relaxed);
            if raw == 0 {
                self.close(f);
                continue;
            }
            slot.store(0, Ordering::Release);
            self.entry::<WIR>(raw, f);
        }
    }

    /// Closes the last run; the entries cleared in all.
    fn finish(mut self, f: &mut impl FnMut(Tce, u64)) -> u64 {
        self.close(f);
        self.cleared
    }
}

/// `v` with read (bit 0) added where write (bit 1) is set, when `wir` is 1; `v` when it is
/// 0 (write-implies-read, branch-free). The reference model applies the rule its own way
/// (`Tce::with_write_implies_read`, on the store), so that the property test compares two
/// implementations of it.
#[inline(always)]
fn with_read_if_write(v: u64, wir: u64) -> u64 {
    v | ((v >> 1) & wir)
}
