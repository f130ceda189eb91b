//! The kernel's TCE allocator (`iommu_range_alloc` / `__iommu_free` in
//! arch/powerpc/kernel/iommu.c): one bit per entry (`it_map`), split into pools so that CPUs
//! do not fight over one lock.
//!
//! - Windows of 1 GiB or more get 4 small pools, smaller ones 1; the small pools share the
//!   bottom three quarters of the entries, the top quarter is the large pool, where
//!   requests of more than 15 pages start.
//! - A CPU starts in the pool `hash_32(cpu, 2)` picks. The search goes hint → pool start →
//!   the other pools in turn → the large pool → failure.
//! - After a small allocation the hint is rounded up to the next block of 16 entries
//!   (`it_blocksize`), so consecutive small allocations do not share a cache line of TCEs.
//! - Page 0 is reserved when the window starts at bus address 0; a reserved range (the
//!   32-bit MMIO hole) is never handed out.
//! - Ownership: `iommu_take_ownership` refuses with -EBUSY while any entry is allocated
//!   (reservations aside), else saturates the bitmap; `iommu_release_ownership` sets each
//!   word straight back to its reservations (never through zero).
//!
//! - A scatter list of one-page segments may be claimed in one go
//!   ([`TceAllocator::alloc_one_run`]): the entries the segment-by-segment search would
//!   give, when they lie in one bitmap word, else nothing changes and the list is mapped
//!   segment by segment. The kernel has no such claim; it takes the pool lock per segment.
//!
//! Pools cover disjoint ranges of the bitmap and keep their hints on their own cache lines,
//! so two CPUs allocating from different pools share no memory written on the hot path.
//!
//! No locks: entries are claimed and given back with atomic read-modify-writes on the
//! bitmap words, and the hand-over is the protocol written at [`TceAllocator::take_ownership`]
//! and [`TceAllocator::release_ownership`]. Loom models: `tests/loom.rs`; stress test with a
//! no-progress detector: `tests/alloc_stress.rs`.

use crate::table::Padded;
use iommu_core::Errno;
#[cfg(loom)]
use loom::sync::atomic::{AtomicBool, AtomicU64, Ordering};
#[cfg(not(loom))]
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// `IOMMU_NR_POOLS`.
pub const NR_POOLS: usize = 4;
/// `it_blocksize`.
pub const BLOCK_SIZE: u64 = 16;
/// Requests of more than this many pages start in the large pool.
pub const LARGE_ALLOC_PAGES: u64 = 15;

/// `hash_32(cpu, IOMMU_POOL_HASHBITS)`: the pool a CPU starts in (before masking by the
/// table's pool count).
pub fn pool_hash(cpu: u32) -> usize {
    (cpu.wrapping_mul(0x61C8_8647) >> 30) as usize
}

/// A read-only view of a kernel table's allocator ([`IommuTable::allocator`](crate::IommuTable::allocator)).
/// The allocator itself stays inside the crate: whoever held it could free a driver's
/// live entry (the next map would hand out the same bus address: two buffers aliased),
/// or give back the saturation that keeps the kernel out of a table lent to a user.
///
/// ```compile_fail,E0599
/// fn free_a_live_entry(t: &spapr_platform::IommuTable) {
///     t.allocator().unwrap().free(1, 1);
/// }
/// ```
#[derive(Clone, Copy, Debug)]
pub struct AllocatorView<'a>(pub(crate) &'a TceAllocator);

impl AllocatorView<'_> {
    /// Entries in the bitmap (the window's).
    pub fn size(&self) -> u64 {
        self.0.size()
    }
    /// The reserved range `[start, end)`.
    pub fn reserved(&self) -> (u64, u64) {
        self.0.reserved()
    }
    /// `iommu_table_in_use`.
    pub fn in_use(&self) -> bool {
        self.0.in_use()
    }
    /// Entries allocated besides the reservations.
    pub fn allocated(&self) -> u64 {
        self.0.allocated()
    }
    /// Whether a user took the table (every bit set).
    pub fn saturated(&self) -> bool {
        self.0.saturated()
    }
}

/// One pool's range and next-fit hint.
#[derive(Debug)]
struct Pool {
    start: u64,
    end: u64,
    hint: AtomicU64,
}

/// What a device's DMA configuration allows (`dma_get_mask`, `dma_get_seg_boundary`):
/// every allocation for it ends at or below `mask` and never crosses a multiple of
/// `seg_boundary + 1` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DmaLimits {
    /// The DMA mask: the highest bus address the device can drive.
    pub mask: u64,
    /// The segment boundary mask (PCI's default is `0xffff_ffff`: no segment crosses
    /// 4 GiB).
    pub seg_boundary: u64,
}

impl DmaLimits {
    /// A device of `bits` address bits with PCI's default segment boundary.
    pub fn pci(bits: u32) -> Self {
        Self {
            mask: if bits >= 64 {
                u64::MAX
            } else {
                (1u64 << bits) - 1
            },
            seg_boundary: 0xffff_ffff,
        }
    }
    /// No device (`dev == NULL`): no mask, the 4 GiB boundary.
    pub const NONE: DmaLimits = DmaLimits {
        mask: u64::MAX,
        seg_boundary: 0xffff_ffff,
    };
}

/// [`DmaLimits`] in one allocator's entries, worked out once per device (a DMA session)
/// rather than on every map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryLimits {
    /// The last TCE index the mask allows (`dma_get_mask(dev) >> it_page_shift`).
    mask: u64,
    /// Entries from the window's start that the mask allows.
    mask_limit: u64,
    /// The segment boundary in entries (a power of two).
    boundary: u64,
}

/// Where an allocation came from, for the trace and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Allocation {
    /// First entry, relative to the window (add `it_offset` for the TCE index).
    pub entry: u64,
    /// Pages.
    pub npages: u64,
    /// Pool that served it (`NR_POOLS` = the large pool).
    pub pool: usize,
}

/// `it_map` and its pools for one table of `size` entries.
///
/// The kernel guards each pool with a spinlock. Here a pool is its hint, and the bitmap's
/// words are claimed with atomic `fetch_or` (a racing claim of the same bits is detected
/// and retried), so a map costs one atomic read-modify-write and an unmap one more, and
/// CPUs in different pools touch disjoint cache lines. Ownership is a flag checked before
/// and after every claim, so a table taken by a user never hands out an entry.
#[derive(Debug)]
pub struct TceAllocator {
    size: u64,
    poolsize: u64,
    nr_pools: usize,
    bits: Box<[AtomicU64]>,
    /// One bit per word of `bits`: set while that word is full, so a search skips a run
    /// of full words 64 at a time (the reserved 32-bit hole, a full pool) instead of
    /// loading each. A hint only: a transiently stale bit costs a skipped free entry,
    /// never a double allocation.
    full: Box<[AtomicU64]>,
    pools: Box<[Padded<Pool>]>,
    large: Padded<Pool>,
    owned: AtomicBool,
    reserve_page0: bool,
    reserved: (u64, u64),
    /// `it_offset`: the window's first TCE index (bus address >> page shift).
    offset: u64,
    page_shift: u32,
}

impl TceAllocator {
    /// The allocator of a window of `size` entries of `1 << page_shift` bytes whose first
    /// entry is TCE index `offset` (`iommu_init_table`). A window at bus address 0
    /// reserves entry 0; `reserved` (entries, relative to the window, clamped to it) is
    /// never handed out.
    pub fn new(size: u64, page_shift: u32, offset: u64, reserved: (u64, u64)) -> Self {
        let starts_at_zero = offset == 0;
        let bytes = u128::from(size) << page_shift;
        let nr_pools = if bytes >= 1 << 30 { NR_POOLS } else { 1 };
        let poolsize = (size * 3 / 4) / nr_pools as u64;
        let pool = |start: u64, end: u64| {
            Padded(Pool {
                start,
                end,
                hint: AtomicU64::new(start),
            })
        };
        let pools: Box<[Padded<Pool>]> = (0..nr_pools as u64)
            .map(|i| pool(poolsize * i, poolsize * (i + 1)))
            .collect();
        let large = pool(poolsize * nr_pools as u64, size);
        let reserved = (reserved.0.min(size), reserved.1.min(size));
        let a = Self {
            size,
            poolsize,
            nr_pools,
            bits: (0..size.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
            full: (0..size.div_ceil(64).div_ceil(64))
                .map(|_| AtomicU64::new(0))
                .collect(),
            pools,
            large,
            owned: AtomicBool::new(false),
            reserve_page0: starts_at_zero,
            offset,
            page_shift,
            reserved: if reserved.0 < reserved.1 {
                reserved
            } else {
                (0, 0)
            },
        };
        a.reset_to_reservations();
        a
    }

    /// Entries in the table.
    pub fn size(&self) -> u64 {
        self.size
    }
    /// Entries per small pool.
    pub fn poolsize(&self) -> u64 {
        self.poolsize
    }
    /// Small pools (1 or 4).
    pub fn nr_pools(&self) -> usize {
        self.nr_pools
    }
    /// The reserved range, relative to the window.
    pub fn reserved(&self) -> (u64, u64) {
        self.reserved
    }

    #[inline]
    fn test(&self, i: u64) -> bool {
        self.bits[(i / 64) as usize].load(Ordering::Relaxed) >> (i % 64) & 1 == 1
    }

    /// Sets or clears `[from, from + n)`; with `exclusive`, fails (undoing its own bits)
    /// if any bit was already set.
    #[inline]
    fn update(&self, from: u64, n: u64, on: bool, exclusive: bool) -> bool {
        let (mut r, end) = (from, from + n);
        while r < end {
            let w = (r / 64) as usize;
            let lo = r % 64;
            let take = (64 - lo).min(end - r);
            let mask = if take == 64 {
                !0
            } else {
                ((1u64 << take) - 1) << lo
            };
            if on {
                let old = self.bits[w].fetch_or(mask, Ordering::SeqCst);
                if exclusive && old & mask != 0 {
                    // Give back only the bits this call set, then everything before.
                    self.bits[w].fetch_and(!(mask & !old), Ordering::SeqCst);
                    self.word_not_full(w);
                    if r > from {
                        self.update(from, r - from, false, false);
                    }
                    return false;
                }
                if old | mask == !0 {
                    self.word_full(w);
                }
            } else {
                self.bits[w].fetch_and(!mask, Ordering::SeqCst);
                self.word_not_full(w);
            }
            r += take;
        }
        true
    }

    #[inline]
    fn word_full(&self, w: usize) {
        let bit = 1u64 << (w % 64);
        self.full[w / 64].fetch_or(bit, Ordering::SeqCst);
        // A racing free may have emptied a bit before the summary was set: undo.
        if self.bits[w].load(Ordering::SeqCst) != !0 {
            self.full[w / 64].fetch_and(!bit, Ordering::SeqCst);
        }
    }

    /// Whether the summary marks word `w` full (for tests).
    #[cfg(test)]
    fn word_summary(&self, w: usize) -> bool {
        self.full[w / 64].load(Ordering::SeqCst) >> (w % 64) & 1 == 1
    }

    #[inline]
    fn word_not_full(&self, w: usize) {
        let bit = 1u64 << (w % 64);
        if self.full[w / 64].load(Ordering::SeqCst) & bit != 0 {
            self.full[w / 64].fetch_and(!bit, Ordering::SeqCst);
        }
    }

    /// First entry in `[from, to)` whose bit is `want`.
    #[inline]
    fn find(&self, from: u64, to: u64, want: bool) -> Option<u64> {
        let mut r = from;
        while r < to {
            let w = (r / 64) as usize;
            if !want {
                // Skip the run of full words starting here, 64 at a time at most.
                let summary = self.full[w / 64].load(Ordering::Relaxed) >> (w % 64);
                let run = u64::from((!summary).trailing_zeros());
                if run > 0 {
                    r = (w as u64 + run) * 64;
                    continue;
                }
            }
            let raw = self.bits[w].load(Ordering::Relaxed);
            let word = if want { raw } else { !raw };
            let masked = word & (!0u64 << (r % 64));
            if masked != 0 {
                let hit = (w as u64) * 64 + u64::from(masked.trailing_zeros());
                return (hit < to).then_some(hit);
            }
            r = (w as u64 + 1) * 64;
        }
        None
    }

    /// `iommu_area_alloc` + claiming: the first run of `n` clear bits in `[from, to)` that
    /// does not cross a multiple of `boundary` entries (counted from TCE index 0, as
    /// `iommu_is_span_boundary` counts with `it_offset`), now set.
    #[inline]
    fn area(&self, from: u64, to: u64, n: u64, boundary: u64) -> Option<u64> {
        if n > boundary {
            return None;
        }
        let mut i = from;
        loop {
            let z = self.find(i, to, false)?;
            if z.checked_add(n)? > to {
                return None;
            }
            // A span across a boundary: start again at the boundary.
            let in_seg = (self.offset.wrapping_add(z)) & (boundary - 1);
            if in_seg + n > boundary {
                i = z + (boundary - in_seg);
                continue;
            }
            if n == 1 {
                // One bit: a single `lock bts`.
                let (w, bit) = ((z / 64) as usize, 1u64 << (z % 64));
                if self.bits[w].fetch_or(bit, Ordering::SeqCst) & bit == 0 {
                    if self.bits[w].load(Ordering::Relaxed) == !0 {
                        self.word_full(w);
                    }
                    return Some(z);
                }
                i = z + 1;
                continue;
            }
            if let Some(one) = self.find(z, z + n, true) {
                i = one + 1;
                continue;
            }
            if self.update(z, n, true, true) {
                return Some(z);
            }
            i = z + 1;
        }
    }

    /// The reserved bits of bitmap word `w` (page 0, the reserved range), what the word
    /// holds with nothing allocated.
    fn reserved_bits(&self, w: usize) -> u64 {
        let (lo, hi) = (w as u64 * 64, (w as u64 * 64 + 64).min(self.size));
        let run = |s: u64, e: u64| -> u64 {
            let (s, e) = (s.max(lo), e.min(hi));
            if s >= e {
                0
            } else if e - s == 64 {
                !0
            } else {
                ((1u64 << (e - s)) - 1) << (s - lo)
            }
        };
        let page0 = if self.reserve_page0 { run(0, 1) } else { 0 };
        page0 | run(self.reserved.0, self.reserved.1)
    }

    /// Every word set to its reservations and the full-word summary to match, one store
    /// per word: a fresh table, and a released one (which must never pass through zero,
    /// see [`Self::release_ownership`]).
    fn reset_to_reservations(&self) {
        let mut summary = 0u64;
        for (w, word) in self.bits.iter().enumerate() {
            let reserved = self.reserved_bits(w);
            word.store(reserved, Ordering::SeqCst);
            if reserved == !0 {
                summary |= 1 << (w % 64);
            }
            if w % 64 == 63 || w + 1 == self.bits.len() {
                self.full[w / 64].store(summary, Ordering::SeqCst);
                summary = 0;
            }
        }
    }

    fn pool(&self, which: usize) -> &Pool {
        if which >= self.nr_pools {
            &self.large.0
        } else {
            &self.pools[which].0
        }
    }

    /// `iommu_range_alloc` with no device limits (`dev == NULL`: no mask, the 4 GiB
    /// boundary); see [`Self::alloc_for`].
    #[inline]
    pub fn alloc(
        &self,
        npages: u64,
        cpu: u32,
        handle: Option<&mut u64>,
    ) -> Result<Allocation, Errno> {
        self.alloc_for(npages, cpu, handle, DmaLimits::NONE)
    }

    /// `iommu_range_alloc`: `npages` consecutive entries for a device with `limits`, for a
    /// caller on `cpu`, or -ENOMEM (`DMA_MAPPING_ERROR`). `handle` is the caller's
    /// next-entry hint (scatter lists pass the end of the previous segment), updated on
    /// success. A pool that reaches past the device's mask is searched only up to it; on a
    /// second pass such a search starts at pool 0 and runs up to the mask, across pools.
    #[inline]
    pub fn alloc_for(
        &self,
        npages: u64,
        cpu: u32,
        handle: Option<&mut u64>,
        limits: DmaLimits,
    ) -> Result<Allocation, Errno> {
        self.alloc_within(npages, cpu, handle, self.entry_limits(limits))
    }

    /// `limits` in this allocator's entries: the last index the mask allows, the entries
    /// it leaves from the window's start, the boundary (`ALIGN(seg_boundary + 1, page) >>
    /// page_shift`, a power of two).
    pub fn entry_limits(&self, limits: DmaLimits) -> EntryLimits {
        let mask = limits.mask >> self.page_shift;
        let boundary = ((u128::from(limits.seg_boundary) + 1) >> self.page_shift)
            .max(1)
            .next_power_of_two()
            .min(1 << 63) as u64;
        // Entries past this (relative to the window) are beyond the mask.
        let mask_limit = mask
            .checked_sub(self.offset)
            .map_or(0, |m| m.saturating_add(1));
        EntryLimits {
            mask,
            mask_limit,
            boundary,
        }
    }

    /// [`Self::alloc_for`] with limits already in entries ([`Self::entry_limits`]).
    #[inline]
    pub fn alloc_within(
        &self,
        npages: u64,
        cpu: u32,
        handle: Option<&mut u64>,
        limits: EntryLimits,
    ) -> Result<Allocation, Errno> {
        self.range_alloc(npages, cpu, handle, limits)
    }

    /// [`Self::alloc_within`] of one page (`dma_map_page` of a buffer inside one IOMMU
    /// page, or such a segment of a scatter list): the same search and the same answer.
    ///
    /// The first step of the search (the CPU's pool from the handle or its hint) is done
    /// here when the pool lies wholly below the device's mask and the start's bitmap word
    /// has a clear bit at or above the start, inside the pool: the entry the full search
    /// would pick first, taken with one `lock or`. Anything else (a full word, a lost
    /// race, a pool past the mask, a start past the pool) goes to the full search, which
    /// starts from the same place. `start < pool.end` also keeps the word inside the
    /// bitmap. Like the full search, `owned` is read before and after the claim, so a
    /// concurrent `take_ownership` and this never both succeed (loom models it).
    #[inline]
    pub fn alloc_one(
        &self,
        cpu: u32,
        handle: Option<&mut u64>,
        limits: EntryLimits,
    ) -> Result<u64, Errno> {
        if self.owned.load(Ordering::SeqCst) {
            return Err(Errno::Enomem);
        }
        let pool = &self.pools[pool_hash(cpu) & (self.nr_pools - 1)].0;
        let start = match handle.as_deref() {
            Some(&h) if h != 0 && (pool.start..pool.end).contains(&h) => h,
            _ => pool.hint.load(Ordering::Relaxed),
        };
        if start < pool.end && pool.end <= limits.mask_limit {
            let w = (start / 64) as usize;
            let free = !self.bits[w].load(Ordering::Relaxed) & (!0u64 << (start % 64));
            let z = (w as u64) * 64 + u64::from(free.trailing_zeros());
            if free != 0 && z < pool.end {
                let bit = 1u64 << (z % 64);
                let old = self.bits[w].fetch_or(bit, Ordering::SeqCst);
                if old & bit == 0 {
                    if old | bit == !0 {
                        self.word_full(w);
                    }
                    if self.owned.load(Ordering::SeqCst) {
                        // Taken by a user meanwhile: never hand it out.
                        self.free_one_unchecked(z);
                        return Err(Errno::Enomem);
                    }
                    pool.hint
                        .store((z + BLOCK_SIZE) & !(BLOCK_SIZE - 1), Ordering::Relaxed);
                    if let Some(h) = handle {
                        *h = z + 1;
                    }
                    return Ok(z);
                }
            }
        }
        self.range_alloc(1, cpu, handle, limits).map(|a| a.entry)
    }

    /// `n` calls of [`Self::alloc_one`] with one scatter-list handle, in one claim: the
    /// entries they would take when the first is the one `alloc_one` picks and the `n - 1`
    /// after it are free too, all in one bitmap word and inside the pool: `[z, z + n)`,
    /// claimed with one `lock or` (the exclusive claim of `update`, which gives
    /// back its own bits if a racing claim got one of them first). The pool hint and the
    /// handle are left as the `n` calls would leave them. `None` when the run is not free
    /// or the claim raced, and then nothing changed: the caller makes the `n` calls. Like
    /// `alloc_one`, `owned` is read before and after the claim.
    #[inline]
    pub fn alloc_one_run(
        &self,
        n: u64,
        cpu: u32,
        handle: &mut u64,
        limits: EntryLimits,
    ) -> Option<u64> {
        // `n <= 64` also keeps `lo + n` below from wrapping around.
        if n == 0 || n > 64 || self.owned.load(Ordering::SeqCst) {
            return None;
        }
        let pool = &self.pools[pool_hash(cpu) & (self.nr_pools - 1)].0;
        let h = *handle;
        let start = if h != 0 && (pool.start..pool.end).contains(&h) {
            h
        } else {
            pool.hint.load(Ordering::Relaxed)
        };
        if start >= pool.end || pool.end > limits.mask_limit {
            return None;
        }
        let w = (start / 64) as usize;
        let raw = self.bits[w].load(Ordering::Relaxed);
        let free = !raw & (!0u64 << (start % 64));
        if free == 0 {
            return None;
        }
        let lo = u64::from(free.trailing_zeros());
        let z = (w as u64) * 64 + lo;
        // Each later segment starts from the handle, which the search follows only inside
        // the pool: a hint left below the pool (by a masked device's search, which runs
        // from the masked hint) would send the second segment to the hint instead.
        if lo + n > 64 || z + n > pool.end || (n > 1 && z < pool.start) {
            return None;
        }
        let mask = if n == 64 { !0 } else { ((1u64 << n) - 1) << lo };
        if raw & mask != 0 || !self.update(z, n, true, true) {
            return None;
        }
        if self.owned.load(Ordering::SeqCst) {
            // Taken by a user meanwhile: never hand them out.
            self.update(z, n, false, false);
            return None;
        }
        let last = z + n - 1;
        pool.hint
            .store((last + BLOCK_SIZE) & !(BLOCK_SIZE - 1), Ordering::Relaxed);
        *handle = z + n;
        Some(z)
    }

    /// `iommu_range_alloc` itself, inlined into both callers above.
    #[inline(always)]
    fn range_alloc(
        &self,
        npages: u64,
        cpu: u32,
        handle: Option<&mut u64>,
        limits: EntryLimits,
    ) -> Result<Allocation, Errno> {
        if npages == 0 || npages > self.size {
            return Err(Errno::Einval);
        }
        if self.owned.load(Ordering::SeqCst) {
            return Err(Errno::Enomem);
        }
        let EntryLimits {
            mask,
            mask_limit,
            boundary,
        } = limits;
        let largealloc = npages > LARGE_ALLOC_PAGES;
        let pool_mask = self.nr_pools - 1;
        let mut pool_nr = pool_hash(cpu) & pool_mask;
        let mut which = if largealloc { NR_POOLS } else { pool_nr };
        let mut pass = 0usize;
        let handle_in = handle.as_ref().map_or(0, |h| **h);
        loop {
            let mut pool = self.pool(which);
            let mut start =
                if pass == 0 && handle_in != 0 && (pool.start..pool.end).contains(&handle_in) {
                    handle_in
                } else {
                    pool.hint.load(Ordering::Relaxed)
                };
            let mut limit = pool.end;
            if start >= limit {
                start = pool.start;
            }
            if limit > mask_limit {
                limit = mask_limit;
                if (start & mask) >= limit || pass > 0 {
                    which = 0;
                    pool = self.pool(0);
                    start = pool.start;
                } else {
                    start &= mask;
                }
            }
            if let Some(n) = self.area(start, limit, npages, boundary) {
                if self.owned.load(Ordering::SeqCst) {
                    // Taken by a user meanwhile: never hand it out.
                    self.update(n, npages, false, false);
                    return Err(Errno::Enomem);
                }
                let stop = n + npages;
                let hint = if largealloc {
                    stop
                } else {
                    (stop + BLOCK_SIZE - 1) & !(BLOCK_SIZE - 1)
                };
                pool.hint.store(hint, Ordering::Relaxed);
                if let Some(h) = handle {
                    *h = stop;
                }
                return Ok(Allocation {
                    entry: n,
                    npages,
                    pool: which,
                });
            }
            if pass == 0 {
                // First try the pool from its start.
            } else if pass <= self.nr_pools {
                // Then every other pool in turn.
                pool_nr = (pool_nr + 1) & pool_mask;
                which = pool_nr;
            } else if pass == self.nr_pools + 1 {
                // Last resort: the large pool.
                which = NR_POOLS;
            } else {
                return Err(Errno::Enomem);
            }
            let next = self.pool(which);
            next.hint.store(next.start, Ordering::Relaxed);
            pass += 1;
        }
    }

    /// `__iommu_free`: gives back `npages` entries from `entry`. -EINVAL for a range
    /// outside the table (the kernel WARNs and ignores it).
    #[inline]
    pub fn free(&self, entry: u64, npages: u64) -> Result<(), Errno> {
        if npages == 0 || entry >= self.size || npages > self.size - entry {
            return Err(Errno::Einval);
        }
        if npages == 1 {
            self.free_one_unchecked(entry);
            return Ok(());
        }
        self.update(entry, npages, false, false);
        Ok(())
    }

    /// One bit given back with a single `lock and`; `entry < size` (checked by callers:
    /// the index below would panic otherwise, never touch another table's bits).
    #[inline]
    fn free_one_unchecked(&self, entry: u64) {
        let (w, bit) = ((entry / 64) as usize, 1u64 << (entry % 64));
        self.bits[w].fetch_and(!bit, Ordering::SeqCst);
        self.word_not_full(w);
    }

    /// Whether entry `i` is allocated (or reserved).
    pub fn is_set(&self, i: u64) -> bool {
        i < self.size && self.test(i)
    }

    fn is_reservation(&self, i: u64) -> bool {
        i < self.size && self.reserved_bits((i / 64) as usize) >> (i % 64) & 1 == 1
    }

    /// `iommu_table_in_use`: any entry allocated besides the reservations (always true
    /// once a user took the table: its bitmap is saturated).
    pub fn in_use(&self) -> bool {
        if self.owned.load(Ordering::SeqCst) {
            return true;
        }
        self.in_use_bits()
    }

    fn in_use_bits(&self) -> bool {
        let mut i = 0;
        while let Some(k) = self.find(i, self.size, true) {
            if !self.is_reservation(k) {
                return true;
            }
            i = if k >= self.reserved.0 && k < self.reserved.1 {
                self.reserved.1
            } else {
                k + 1
            };
        }
        false
    }

    /// Entries allocated besides the reservations.
    pub fn allocated(&self) -> u64 {
        (0..self.size)
            .filter(|i| self.test(*i) && !self.is_reservation(*i))
            .count() as u64
    }

    /// `iommu_take_ownership`'s bitmap part: -EBUSY while an entry is allocated (or the
    /// table is already taken), else every bit is set so that the kernel can never
    /// allocate from the table again.
    ///
    /// The hand-over with a concurrent allocation (loom models check it): the take sets
    /// `owned`, then saturates the bitmap word by word with a compare-and-swap from a
    /// value holding only the word's reservations. A claim on a word either comes first
    /// (the swap fails, the take sees the claim: -EBUSY, and every word it saturated goes
    /// back to its reservations) or after (it finds every bit set and fails). No claim can
    /// land between the take's look at a word and its saturation of it, so none is ever
    /// absorbed; a scan followed by plain stores let a claim slip in between, and a
    /// claimer that then slept through the whole release kept an entry the released
    /// bitmap showed free.
    pub fn take_ownership(&self) -> Result<(), Errno> {
        if self.owned.swap(true, Ordering::AcqRel) {
            return Err(Errno::Ebusy);
        }
        for (w, word) in self.bits.iter().enumerate() {
            let reserved = self.reserved_bits(w);
            let mut cur = word.load(Ordering::SeqCst);
            loop {
                if cur & !reserved != 0 {
                    // In use: undo, word by word, what this take saturated. No claim
                    // changed those words meanwhile (every bit was set).
                    for (k, done) in self.bits[..w].iter().enumerate() {
                        done.store(self.reserved_bits(k), Ordering::SeqCst);
                    }
                    self.owned.store(false, Ordering::Release);
                    return Err(Errno::Ebusy);
                }
                match word.compare_exchange(cur, !0, Ordering::SeqCst, Ordering::SeqCst) {
                    Ok(_) => break,
                    Err(now) => cur = now,
                }
            }
        }
        for w in self.full.iter() {
            w.store(!0, Ordering::SeqCst);
        }
        Ok(())
    }

    /// Whether the bitmap is saturated (the table is owned by a user).
    pub fn saturated(&self) -> bool {
        self.owned.load(Ordering::SeqCst)
    }

    /// `iommu_release_ownership`'s bitmap part: every word set straight from saturated to
    /// its reservations (page 0, the reserved range), then the hints reset and `owned`
    /// cleared. Never through zero: a mapping CPU that read `owned` before the take may
    /// claim bits while this runs, and a reserved bit must never look free to it (the
    /// kernel holds every pool's lock here; a loom model checks this order).
    pub fn release_ownership(&self) {
        self.reset_to_reservations();
        for p in self.pools.iter() {
            p.0.hint.store(p.0.start, Ordering::Relaxed);
        }
        self.large
            .0
            .hint
            .store(self.large.0.start, Ordering::Relaxed);
        self.owned.store(false, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set_bits(a: &TceAllocator) -> Vec<u64> {
        (0..a.size()).filter(|&i| a.test(i)).collect()
    }

    /// An exclusive claim that meets a bit another claim holds gives back exactly what it
    /// set, in the word of the conflict and in every word before it (a racing claim,
    /// driven here by hand).
    #[test]
    fn a_conflicting_exclusive_claim_gives_back_only_its_own_bits() {
        let a = TceAllocator::new(1 << 12, 16, 1 << 20, (0, 0));
        // Conflict in the first word of the range.
        assert!(a.update(70, 1, true, true));
        assert!(!a.update(66, 10, true, true));
        assert_eq!(set_bits(&a), vec![70]);
        // Conflict two words in: the earlier words are given back too.
        assert!(!a.update(20, 100, true, true));
        assert_eq!(set_bits(&a), vec![70]);
        assert!(!a.word_summary(1), "no word is left marked full");
        // A non-exclusive claim overlaps freely.
        assert!(a.update(64, 64, true, false));
        assert!(a.word_summary(1), "word 1 is full");
        assert!(a.update(64, 64, false, false));
        assert_eq!(set_bits(&a), Vec::<u64>::new());
        assert!(!a.word_summary(1));
    }

    /// The size limits: the whole table in one allocation, a range freed exactly to the
    /// table's end, `is_set` past the end (cargo-mutants survivors, MUTANTS.md).
    #[test]
    fn the_edges_of_the_table_are_in_and_past_them_out() {
        let a = TceAllocator::new(1024, 12, 1 << 20, (0, 0));
        assert_eq!(a.alloc(1025, 0, None).err(), Some(Errno::Einval));
        // The whole table is a legal request no single pool can hold (the kernel's
        // DMA_MAPPING_ERROR), not a bad argument.
        assert_eq!(a.alloc(1024, 0, None).err(), Some(Errno::Enomem));
        assert!(a.update(0, 1024, true, true));
        assert_eq!(a.free(1000, 24), Ok(()), "up to the last entry");
        assert_eq!(a.free(1000, 25), Err(Errno::Einval));
        assert!(a.is_set(999) && !a.is_set(1000));
        assert!(!a.is_set(1024), "past the end");
        let empty = TceAllocator::new(0, 12, 0, (0, 0));
        assert!(!empty.in_use());
    }

    /// `iommu_area_alloc`'s span rules: a run may be exactly one segment long and may
    /// end exactly at the limit; a run that would cross a boundary starts again at it.
    #[test]
    fn areas_fill_whole_segments_and_restart_at_the_next_boundary() {
        let a = TceAllocator::new(256, 12, 1 << 20, (0, 0));
        assert_eq!(a.area(0, 128, 64, 64), Some(0), "exactly one segment");
        assert_eq!(
            a.area(64, 128, 64, 64),
            Some(64),
            "ending exactly at the limit"
        );
        assert_eq!(
            a.area(138, 256, 64, 64),
            Some(192),
            "restarted at the next boundary"
        );
        assert_eq!(a.area(0, 256, 65, 64), None, "longer than a segment");
    }

    /// Where a masked allocation starts (`iommu_range_alloc`'s limit handling): its CPU's
    /// pool hint when inside the mask, else the hint folded into the mask (`start &=
    /// mask`) on the first pass.
    #[test]
    fn a_masked_allocation_starts_in_its_pool_or_falls_back_to_pool_0() {
        // 4 pools of 3072 entries (the top quarter is the large pool); the mask leaves
        // the first 8192 entries. CPU 1 hashes to pool 1 (start 3072), CPU 2 to pool 3
        // (start 9216).
        let limits = DmaLimits {
            mask: 0x1fff_ffff,
            seg_boundary: u64::MAX,
        };
        let a = TceAllocator::new(1 << 14, 16, 0, (0, 0));
        assert_eq!(a.poolsize(), 3072);
        let in_pool = a.alloc_for(1, 1, None, limits).unwrap();
        assert_eq!(in_pool.entry, 3072, "pool 1's hint is inside the mask");
        let folded = a.alloc_for(1, 2, None, limits).unwrap();
        assert_eq!(
            folded.entry, 1024,
            "pool 3's hint, 9216, folded into the mask"
        );
    }

    /// Taking a table saturates every bit, so the kernel's allocator sees it full.
    #[test]
    fn take_ownership_sets_every_bit() {
        let a = TceAllocator::new(200, 12, 1 << 20, (0, 0));
        a.take_ownership().unwrap();
        assert!((0..200).all(|i| a.is_set(i)));
        assert_eq!(a.allocated(), 200);
        a.release_ownership();
        assert_eq!(a.allocated(), 0);
    }

    /// A take refused by a mapping in a late word gives back every word it had already
    /// saturated: the bitmap is the kernel's again, as it was, and allocates as before.
    #[test]
    fn a_refused_take_restores_the_words_it_saturated() {
        let a = TceAllocator::new(1 << 14, 16, 0, (100, 9000));
        let fresh = TceAllocator::new(1 << 14, 16, 0, (100, 9000));
        assert!(a.update(12_000, 1, true, true));
        assert!(fresh.update(12_000, 1, true, true));
        assert_eq!(a.take_ownership(), Err(Errno::Ebusy));
        assert!(!a.saturated());
        for i in 0..1 << 14 {
            assert_eq!(a.is_set(i), fresh.is_set(i), "entry {i}");
        }
        assert_eq!(
            a.alloc(1, 0, None).map(|x| x.entry),
            fresh.alloc(1, 0, None).map(|x| x.entry)
        );
    }

    /// A release leaves the bitmap and its full-word summary exactly as a fresh table's:
    /// the reservations (page 0, a hole across whole words and partial ones) and nothing
    /// else, set word by word without passing through zero.
    #[test]
    fn release_leaves_the_bitmap_of_a_fresh_table() {
        for (size, offset, hole) in [
            (200u64, 0u64, (0u64, 0u64)),
            (1 << 14, 0, (100, 9000)),
            (1 << 14, 1 << 20, (64, 128)),
            (65, 0, (63, 65)),
            // The hole covers page 0, reserved on its own too.
            (200, 0, (0, 70)),
        ] {
            let fresh = TceAllocator::new(size, 16, offset, hole);
            let a = TceAllocator::new(size, 16, offset, hole);
            a.take_ownership().unwrap();
            a.release_ownership();
            for i in 0..size {
                assert_eq!(a.is_set(i), fresh.is_set(i), "entry {i} of {size}");
            }
            for w in 0..size.div_ceil(64) as usize {
                assert_eq!(
                    a.word_summary(w),
                    fresh.word_summary(w),
                    "word {w} of {size}"
                );
            }
            assert_eq!(a.allocated(), 0);
        }
    }

    /// The full-word summary marks exactly the words that are full, at every position
    /// (word 65 is bit 1 of summary word 1).
    #[test]
    fn the_full_word_summary_marks_exactly_the_full_words() {
        let a = TceAllocator::new(1 << 14, 16, 1 << 20, (0, 0));
        assert!(a.update(65 * 64, 64, true, true));
        assert!(a.update(3 * 64, 63, true, true));
        let marked: Vec<usize> = (0..(1 << 14) / 64).filter(|&w| a.word_summary(w)).collect();
        assert_eq!(marked, vec![65]);
        // A search for set bits never skips full words: a table whose only mapping
        // fills one word is in use.
        let b = TceAllocator::new(1 << 14, 16, 1 << 20, (0, 0));
        assert!(b.update(5 * 64, 64, true, true));
        assert!(b.in_use());
        assert_eq!(b.find(0, b.size(), true), Some(5 * 64));
        // Every remaining entry can still be found and claimed one by one.
        let mut n = 0u64;
        while let Some(z) = a.find(0, a.size(), false) {
            assert!(a.update(z, 1, true, true));
            n += 1;
        }
        assert_eq!(n, (1 << 14) - 64 - 63);
    }

    #[test]
    fn pool_hash_matches_the_kernel_table() {
        let got: Vec<usize> = (0..8).map(pool_hash).collect();
        assert_eq!(got, vec![0, 1, 3, 0, 2, 3, 1, 2]);
    }

    #[test]
    fn windows_of_one_gib_get_four_pools_and_smaller_ones_one() {
        assert_eq!(
            TceAllocator::new(1 << 14, 16, 1 << 20, (0, 0)).nr_pools(),
            4
        );
        assert_eq!(
            TceAllocator::new((1 << 14) - 1, 16, 1 << 20, (0, 0)).nr_pools(),
            1
        );
    }

    #[test]
    fn page_zero_is_reserved_when_the_window_starts_at_zero() {
        let a = TceAllocator::new(1024, 12, 0, (0, 0));
        let got = a.alloc(1, 0, None).unwrap();
        assert_eq!(got.entry, 1);
        assert!(!a.in_use() || a.allocated() == 1);
        let b = TceAllocator::new(1024, 12, 1 << 20, (0, 0));
        assert_eq!(b.alloc(1, 0, None).unwrap().entry, 0);
    }

    #[test]
    fn the_accessors_report_the_geometry() {
        let a = TceAllocator::new(1 << 14, 16, 1 << 20, (100, 200));
        assert_eq!(a.size(), 1 << 14);
        assert_eq!(a.poolsize(), (1 << 14) * 3 / 4 / 4);
        assert_eq!(a.reserved(), (100, 200));
    }

    #[test]
    fn small_allocations_round_the_hint_up_to_a_block_of_sixteen() {
        let a = TceAllocator::new(1024, 12, 1 << 20, (0, 0));
        assert_eq!(a.alloc(1, 0, None).unwrap().entry, 0);
        assert_eq!(a.alloc(1, 0, None).unwrap().entry, 16);
        assert_eq!(a.alloc(3, 0, None).unwrap().entry, 32);
        assert_eq!(a.alloc(1, 0, None).unwrap().entry, 48);
        // An allocation ending one short of a block, then one ending on a block: the hint
        // is the end rounded up, and an end on a block is its own round-up.
        assert_eq!(a.alloc(14, 0, None).unwrap().entry, 64);
        assert_eq!(a.alloc(1, 0, None).unwrap().entry, 80);
        let mut handle = 88;
        assert_eq!(a.alloc(8, 0, Some(&mut handle)).unwrap().entry, 88);
        assert_eq!(handle, 96);
        assert_eq!(a.alloc(1, 0, None).unwrap().entry, 96);
    }

    #[test]
    fn a_masked_device_in_a_pool_past_its_mask_starts_at_the_masked_hint() {
        // 8 GiB of 64K pages, the 32-bit MMIO hole reserved: pools 2 and 3 lie above
        // 4 GiB. A 32-bit device on a CPU homed in pool 3 searches first from the pool's
        // hint with the mask applied (`start &= mask`), not from pool 0.
        let a = TceAllocator::new(1 << 17, 16, 0, (1 << 15, 1 << 16));
        let cpu = (0..64).find(|&c| pool_hash(c) == 3).unwrap();
        let poolsize = (1u64 << 17) * 3 / 4 / 4;
        let got = a.alloc_for(1, cpu, None, DmaLimits::pci(32)).unwrap();
        assert_eq!(got.entry, (3 * poolsize) & 0xffff);
        // A masked hint inside the hole finds nothing there; the next pass starts at pool 0.
        let b = TceAllocator::new(1 << 17, 16, 0, (1 << 13, 1 << 16));
        let got = b.alloc_for(1, cpu, None, DmaLimits::pci(32)).unwrap();
        assert_eq!(got.entry, 1);
    }

    #[test]
    fn a_full_pool_sends_the_search_to_the_next_pools_in_turn() {
        // 4 pools of 3072 entries below the large pool.
        let a = TceAllocator::new(1 << 14, 16, 1 << 20, (0, 0));
        let poolsize = (1u64 << 14) * 3 / 4 / 4;
        let home = pool_hash(0);
        while a.alloc(15, 0, None).is_ok_and(|x| x.pool == home) {}
        // The home pool is full up to its last few entries: small requests go on in the
        // next pool, then the one after it.
        let next = (home + 1) % 4;
        let got = a.alloc(15, 0, None).unwrap();
        assert!(got.pool == next || got.pool == home, "pool {}", got.pool);
        for _ in 0..(poolsize / 15 + 1) {
            let _ = a.alloc(15, 0, None);
        }
        let got = a.alloc(15, 0, None).unwrap();
        assert_eq!(got.pool, (home + 2) % 4, "the pool after the next one");
    }

    #[test]
    fn large_requests_start_in_the_large_pool() {
        let a = TceAllocator::new(1 << 14, 16, 1 << 20, (0, 0));
        let got = a.alloc(16, 0, None).unwrap();
        assert_eq!(got.pool, NR_POOLS);
        assert_eq!(got.entry, (1 << 14) * 3 / 4);
        assert_eq!(a.alloc(15, 0, None).unwrap().pool, 0);
    }

    #[test]
    fn cpus_start_in_their_hashed_pool() {
        let a = TceAllocator::new(1 << 14, 16, 1 << 20, (0, 0));
        let poolsize = (1u64 << 14) * 3 / 4 / 4;
        for cpu in 0..8 {
            let got = a.alloc(1, cpu, None).unwrap();
            assert_eq!(got.pool, pool_hash(cpu));
            assert!(got.entry >= poolsize * got.pool as u64);
        }
    }

    #[test]
    fn a_full_pool_spills_into_the_others_then_the_large_pool_then_fails() {
        let a = TceAllocator::new(64, 12, 1 << 20, (0, 0));
        // One pool of 48 entries, a large pool of 16.
        let mut got = Vec::new();
        while let Ok(x) = a.alloc(8, 0, None) {
            got.push(x);
        }
        assert_eq!(got.len(), 8);
        assert!(got.iter().any(|x| x.pool == NR_POOLS));
        assert_eq!(a.alloc(1, 0, None), Err(Errno::Enomem));
        a.free(got[0].entry, 8).unwrap();
        assert_eq!(a.alloc(8, 0, None).unwrap().entry, got[0].entry);
    }

    #[test]
    fn the_reserved_range_is_never_handed_out() {
        let a = TceAllocator::new(256, 12, 1 << 20, (10, 200));
        let mut seen = Vec::new();
        while let Ok(x) = a.alloc(1, 0, None) {
            seen.push(x.entry);
        }
        assert!(seen.iter().all(|e| !(10..200).contains(e)), "{seen:?}");
        assert!(!seen.is_empty());
    }

    #[test]
    fn take_ownership_is_refused_while_a_mapping_is_live_and_saturates_after() {
        let a = TceAllocator::new(1024, 12, 0, (100, 200));
        assert!(!a.in_use());
        let x = a.alloc(2, 0, None).unwrap();
        assert!(a.in_use());
        assert_eq!(a.take_ownership(), Err(Errno::Ebusy));
        a.free(x.entry, 2).unwrap();
        a.take_ownership().unwrap();
        assert!(a.saturated());
        assert_eq!(a.alloc(1, 0, None), Err(Errno::Enomem));
        // A second take (the next device of a multi-device group) finds it in use.
        assert_eq!(a.take_ownership(), Err(Errno::Ebusy));
        a.release_ownership();
        assert!(!a.in_use());
        assert!(a.is_set(0) && a.is_set(150) && !a.is_set(5));
    }

    #[test]
    fn a_search_skips_full_words_and_finds_the_first_free_entry_after_them() {
        let a = TceAllocator::new(1 << 16, 12, 1 << 20, (0, 40_000));
        let got = a.alloc(1, 0, None).unwrap();
        assert_eq!(got.entry, 40_000);
        // Free one entry inside a full run: the summary forgets that word.
        a.release_ownership();
        let b = TceAllocator::new(1 << 12, 12, 1 << 20, (0, 0));
        let mut all = Vec::new();
        while let Ok(x) = b.alloc(1, 0, None) {
            all.push(x.entry);
        }
        b.free(130, 1).unwrap();
        assert_eq!(b.alloc(1, 0, None).unwrap().entry, 130);
    }

    #[test]
    fn bad_frees_are_refused() {
        let a = TceAllocator::new(64, 12, 1 << 20, (0, 0));
        assert_eq!(a.free(64, 1), Err(Errno::Einval));
        assert_eq!(a.free(60, 5), Err(Errno::Einval));
        assert_eq!(a.free(0, 0), Err(Errno::Einval));
        assert_eq!(a.alloc(0, 0, None), Err(Errno::Einval));
    }

    #[test]
    fn the_handle_continues_a_scatter_list_where_the_last_segment_ended() {
        let a = TceAllocator::new(1024, 12, 1 << 20, (0, 0));
        let mut h = 0;
        let x = a.alloc(3, 0, Some(&mut h)).unwrap();
        assert_eq!(h, x.entry + 3);
        let y = a.alloc(2, 0, Some(&mut h)).unwrap();
        assert_eq!(y.entry, x.entry + 3);
    }
}
