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
//!   (reservations aside), else saturates the bitmap; `iommu_release_ownership` zeroes it
//!   and re-applies the reservations.
//!
//! Each pool owns the bits of its range inside its own lock, on its own cache lines, so
//! two CPUs allocating from different pools share no memory at all.

use iommu_core::Errno;
use std::sync::{Mutex, MutexGuard};

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

/// Keeps a value on its own cache lines (128 bytes covers adjacent-line prefetch).
#[repr(align(128))]
#[derive(Debug, Default)]
struct Padded<T>(T);

#[derive(Debug)]
struct Pool {
    start: u64,
    end: u64,
    hint: u64,
    /// Bits of `[start, end)`, bit `i - start` for entry `i`.
    bits: Vec<u64>,
}

impl Pool {
    fn new(start: u64, end: u64) -> Self {
        Self {
            start,
            end,
            hint: start,
            bits: vec![0; ((end - start) as usize).div_ceil(64)],
        }
    }
    #[inline]
    fn test(&self, i: u64) -> bool {
        let r = i - self.start;
        self.bits[(r / 64) as usize] >> (r % 64) & 1 == 1
    }
    #[inline]
    fn set_range(&mut self, from: u64, n: u64, on: bool) {
        let (mut r, end) = (from - self.start, from - self.start + n);
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
                self.bits[w] |= mask;
            } else {
                self.bits[w] &= !mask;
            }
            r += take;
        }
    }
    /// First entry at or after `from` (absolute, relative to the table) whose bit is
    /// `want`, below `to`.
    #[inline]
    fn find(&self, from: u64, to: u64, want: bool) -> Option<u64> {
        let mut r = from - self.start;
        let end = to - self.start;
        while r < end {
            let w = (r / 64) as usize;
            let word = if want { self.bits[w] } else { !self.bits[w] };
            let masked = word & (!0u64 << (r % 64));
            if masked != 0 {
                let hit = (w as u64) * 64 + u64::from(masked.trailing_zeros());
                return (hit < end).then_some(hit + self.start);
            }
            r = (w as u64 + 1) * 64;
        }
        None
    }
    /// `iommu_area_alloc`: the first run of `n` clear bits in `[from, to)`.
    #[inline]
    fn area(&self, from: u64, to: u64, n: u64) -> Option<u64> {
        let mut i = from;
        loop {
            let z = self.find(i, to, false)?;
            if z + n > to {
                return None;
            }
            if n == 1 {
                return Some(z);
            }
            match self.find(z, z + n, true) {
                None => return Some(z),
                Some(one) => i = one + 1,
            }
        }
    }
    fn any_set(&self) -> bool {
        self.bits.iter().any(|w| *w != 0)
    }
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
#[derive(Debug)]
pub struct TceAllocator {
    size: u64,
    poolsize: u64,
    nr_pools: usize,
    pools: Box<[Padded<Mutex<Pool>>]>,
    large: Padded<Mutex<Pool>>,
    reserve_page0: bool,
    reserved: (u64, u64),
}

fn lock(m: &Mutex<Pool>) -> MutexGuard<'_, Pool> {
    // No code panics while holding a pool lock; a poisoned lock still holds a valid bitmap.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl TceAllocator {
    /// The allocator of a window of `size` entries of `1 << page_shift` bytes
    /// (`iommu_init_table`). `starts_at_zero` reserves entry 0; `reserved` (entries,
    /// relative to the window, clamped to it) is never handed out.
    pub fn new(size: u64, page_shift: u32, starts_at_zero: bool, reserved: (u64, u64)) -> Self {
        let bytes = u128::from(size) << page_shift;
        let nr_pools = if bytes >= 1 << 30 { NR_POOLS } else { 1 };
        let poolsize = (size * 3 / 4) / nr_pools as u64;
        let pools: Box<[Padded<Mutex<Pool>>]> = (0..nr_pools as u64)
            .map(|i| Padded(Mutex::new(Pool::new(poolsize * i, poolsize * (i + 1)))))
            .collect();
        let large = Padded(Mutex::new(Pool::new(poolsize * nr_pools as u64, size)));
        let reserved = (reserved.0.min(size), reserved.1.min(size));
        let a = Self {
            size,
            poolsize,
            nr_pools,
            pools,
            large,
            reserve_page0: starts_at_zero,
            reserved: if reserved.0 < reserved.1 {
                reserved
            } else {
                (0, 0)
            },
        };
        a.apply_reservations();
        a
    }

    /// Entries in the table.
    pub fn size(&self) -> u64 {
        self.size
    }
    /// Small pools (1 or 4).
    pub fn nr_pools(&self) -> usize {
        self.nr_pools
    }
    /// The reserved range, relative to the window.
    pub fn reserved(&self) -> (u64, u64) {
        self.reserved
    }

    fn pool_of(&self, entry: u64) -> &Mutex<Pool> {
        if entry >= self.poolsize * self.nr_pools as u64 {
            &self.large.0
        } else {
            &self.pools[(entry / self.poolsize.max(1)) as usize].0
        }
    }

    fn mark(&self, from: u64, to: u64, on: bool) {
        let mut i = from;
        while i < to {
            let m = self.pool_of(i);
            let mut p = lock(m);
            let n = p.end.min(to) - i;
            p.set_range(i, n, on);
            i += n;
        }
    }

    fn apply_reservations(&self) {
        if self.reserve_page0 && self.size > 0 {
            self.mark(0, 1, true);
        }
        let (s, e) = self.reserved;
        self.mark(s, e, true);
    }

    /// `iommu_range_alloc`: `npages` consecutive entries for a caller on `cpu`, or
    /// -ENOMEM (`DMA_MAPPING_ERROR`). `handle` is the caller's next-entry hint (scatter
    /// lists pass the end of the previous segment), updated on success.
    #[inline]
    pub fn alloc(
        &self,
        npages: u64,
        cpu: u32,
        handle: Option<&mut u64>,
    ) -> Result<Allocation, Errno> {
        if npages == 0 || npages > self.size {
            return Err(Errno::Einval);
        }
        let largealloc = npages > LARGE_ALLOC_PAGES;
        let mask = self.nr_pools - 1;
        let mut pool_nr = pool_hash(cpu) & mask;
        let mut which = if largealloc { NR_POOLS } else { pool_nr };
        let mut guard = lock(self.pool_ref(which));
        let mut start = match &handle {
            Some(h) if **h != 0 => **h,
            _ => guard.hint,
        };
        if start >= guard.end || start < guard.start {
            start = guard.start;
        }
        let mut pass = 0usize;
        loop {
            let end = guard.end;
            if let Some(n) = guard.area(start, end, npages) {
                guard.set_range(n, npages, true);
                let stop = n + npages;
                guard.hint = if largealloc {
                    stop
                } else {
                    (stop + BLOCK_SIZE - 1) & !(BLOCK_SIZE - 1)
                };
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
                guard.hint = guard.start;
            } else if pass <= self.nr_pools {
                // Then every other pool in turn.
                drop(guard);
                pool_nr = (pool_nr + 1) & mask;
                which = pool_nr;
                guard = lock(self.pool_ref(which));
                guard.hint = guard.start;
            } else if pass == self.nr_pools + 1 {
                // Last resort: the large pool.
                drop(guard);
                which = NR_POOLS;
                guard = lock(self.pool_ref(which));
                guard.hint = guard.start;
            } else {
                return Err(Errno::Enomem);
            }
            start = guard.start;
            pass += 1;
        }
    }

    fn pool_ref(&self, which: usize) -> &Mutex<Pool> {
        if which >= self.nr_pools {
            &self.large.0
        } else {
            &self.pools[which].0
        }
    }

    /// `__iommu_free`: gives back `npages` entries from `entry`. -EINVAL for a range
    /// outside the table (the kernel WARNs and ignores it).
    #[inline]
    pub fn free(&self, entry: u64, npages: u64) -> Result<(), Errno> {
        if npages == 0 || entry >= self.size || npages > self.size - entry {
            return Err(Errno::Einval);
        }
        let m = self.pool_of(entry);
        let mut p = lock(m);
        if entry + npages <= p.end {
            p.set_range(entry, npages, false);
            return Ok(());
        }
        drop(p);
        self.mark(entry, entry + npages, false);
        Ok(())
    }

    /// Whether entry `i` is allocated (or reserved).
    pub fn is_set(&self, i: u64) -> bool {
        i < self.size && lock(self.pool_of(i)).test(i)
    }

    fn lock_all(&self) -> Vec<MutexGuard<'_, Pool>> {
        // The kernel's order: the large pool, then every small pool.
        let mut v = vec![lock(&self.large.0)];
        v.extend(self.pools.iter().map(|p| lock(&p.0)));
        v
    }

    /// `iommu_table_in_use`: any entry allocated besides the reservations.
    pub fn in_use(&self) -> bool {
        let guards = self.lock_all();
        self.in_use_locked(&guards)
    }

    fn in_use_locked(&self, guards: &[MutexGuard<'_, Pool>]) -> bool {
        guards.iter().any(|p| {
            if !p.any_set() {
                return false;
            }
            let mut i = p.start;
            while let Some(k) = p.find(i, p.end, true) {
                let page0 = self.reserve_page0 && k == 0;
                let res = k >= self.reserved.0 && k < self.reserved.1;
                if !page0 && !res {
                    return true;
                }
                i = if res {
                    self.reserved.1.max(k + 1)
                } else {
                    k + 1
                };
                if i >= p.end {
                    break;
                }
            }
            false
        })
    }

    /// Entries allocated besides the reservations.
    pub fn allocated(&self) -> u64 {
        let guards = self.lock_all();
        let mut n = 0;
        for p in &guards {
            for i in p.start..p.end {
                if p.test(i) {
                    let page0 = self.reserve_page0 && i == 0;
                    let res = i >= self.reserved.0 && i < self.reserved.1;
                    n += u64::from(!page0 && !res);
                }
            }
        }
        n
    }

    /// `iommu_take_ownership`'s bitmap part: -EBUSY while an entry is allocated, else
    /// every bit is set so that the kernel can never allocate from the table again.
    pub fn take_ownership(&self) -> Result<(), Errno> {
        let mut guards = self.lock_all();
        if self.in_use_locked(&guards) {
            return Err(Errno::Ebusy);
        }
        for p in &mut guards {
            let (s, e) = (p.start, p.end);
            p.set_range(s, e - s, true);
        }
        Ok(())
    }

    /// Whether the bitmap is saturated (the table is owned by a user).
    pub fn saturated(&self) -> bool {
        self.lock_all()
            .iter()
            .all(|p| p.find(p.start, p.end, false).is_none())
    }

    /// `iommu_release_ownership`'s bitmap part: zero, then reserve again.
    pub fn release_ownership(&self) {
        {
            let mut guards = self.lock_all();
            for p in &mut guards {
                let (s, e) = (p.start, p.end);
                p.set_range(s, e - s, false);
                p.hint = p.start;
            }
        }
        self.apply_reservations();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_hash_matches_the_kernel_table() {
        let got: Vec<usize> = (0..8).map(pool_hash).collect();
        assert_eq!(got, vec![0, 1, 3, 0, 2, 3, 1, 2]);
    }

    #[test]
    fn windows_of_one_gib_get_four_pools_and_smaller_ones_one() {
        assert_eq!(TceAllocator::new(1 << 14, 16, false, (0, 0)).nr_pools(), 4);
        assert_eq!(
            TceAllocator::new((1 << 14) - 1, 16, false, (0, 0)).nr_pools(),
            1
        );
    }

    #[test]
    fn page_zero_is_reserved_when_the_window_starts_at_zero() {
        let a = TceAllocator::new(1024, 12, true, (0, 0));
        let got = a.alloc(1, 0, None).unwrap();
        assert_eq!(got.entry, 1);
        assert!(!a.in_use() || a.allocated() == 1);
        let b = TceAllocator::new(1024, 12, false, (0, 0));
        assert_eq!(b.alloc(1, 0, None).unwrap().entry, 0);
    }

    #[test]
    fn small_allocations_round_the_hint_up_to_a_block_of_sixteen() {
        let a = TceAllocator::new(1024, 12, false, (0, 0));
        assert_eq!(a.alloc(1, 0, None).unwrap().entry, 0);
        assert_eq!(a.alloc(1, 0, None).unwrap().entry, 16);
        assert_eq!(a.alloc(3, 0, None).unwrap().entry, 32);
        assert_eq!(a.alloc(1, 0, None).unwrap().entry, 48);
    }

    #[test]
    fn large_requests_start_in_the_large_pool() {
        let a = TceAllocator::new(1 << 14, 16, false, (0, 0));
        let got = a.alloc(16, 0, None).unwrap();
        assert_eq!(got.pool, NR_POOLS);
        assert_eq!(got.entry, (1 << 14) * 3 / 4);
        assert_eq!(a.alloc(15, 0, None).unwrap().pool, 0);
    }

    #[test]
    fn cpus_start_in_their_hashed_pool() {
        let a = TceAllocator::new(1 << 14, 16, false, (0, 0));
        let poolsize = (1u64 << 14) * 3 / 4 / 4;
        for cpu in 0..8 {
            let got = a.alloc(1, cpu, None).unwrap();
            assert_eq!(got.pool, pool_hash(cpu));
            assert!(got.entry >= poolsize * got.pool as u64);
        }
    }

    #[test]
    fn a_full_pool_spills_into_the_others_then_the_large_pool_then_fails() {
        let a = TceAllocator::new(64, 12, false, (0, 0));
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
        let a = TceAllocator::new(256, 12, false, (10, 200));
        let mut seen = Vec::new();
        while let Ok(x) = a.alloc(1, 0, None) {
            seen.push(x.entry);
        }
        assert!(seen.iter().all(|e| !(10..200).contains(e)), "{seen:?}");
        assert!(!seen.is_empty());
    }

    #[test]
    fn take_ownership_is_refused_while_a_mapping_is_live_and_saturates_after() {
        let a = TceAllocator::new(1024, 12, true, (100, 200));
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
    fn bad_frees_are_refused() {
        let a = TceAllocator::new(64, 12, false, (0, 0));
        assert_eq!(a.free(64, 1), Err(Errno::Einval));
        assert_eq!(a.free(60, 5), Err(Errno::Einval));
        assert_eq!(a.free(0, 0), Err(Errno::Einval));
        assert_eq!(a.alloc(0, 0, None), Err(Errno::Einval));
    }

    #[test]
    fn the_handle_continues_a_scatter_list_where_the_last_segment_ended() {
        let a = TceAllocator::new(1024, 12, false, (0, 0));
        let mut h = 0;
        let x = a.alloc(3, 0, Some(&mut h)).unwrap();
        assert_eq!(h, x.entry + 3);
        let y = a.alloc(2, 0, Some(&mut h)).unwrap();
        assert_eq!(y.entry, x.entry + 3);
    }
}
