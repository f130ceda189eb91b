//! Baselines that are legal implementations of the same contracts as ours (issue 17): a
//! TCE table is read by devices while it is written, so writing N entries costs at least N
//! relaxed 8-byte atomic stores (with the byte swap the big-endian entry format needs) —
//! a vector `memcpy` there is a data race; and the kernel DMA API's allocator is the
//! kernel's own: a spinlock per pool around a next-fit bitmap, with the same TCE store on
//! map and clear on unmap.

use std::sync::atomic::{AtomicU64, Ordering};

/// Relaxed atomic slots, standing for a table's entries.
pub fn slots(n: usize) -> Vec<AtomicU64> {
    (0..n).map(|_| AtomicU64::new(0)).collect()
}

/// `dst[i] = src[i]` big-endian, one relaxed store each: the floor of a batched put.
#[inline]
pub fn store_be(dst: &[AtomicU64], src: &[u64]) {
    for (d, s) in dst.iter().zip(src) {
        d.store(s.to_be(), Ordering::Relaxed);
    }
}

/// [`store_be`] from any source of words (so that a baseline can read the very buffer
/// ours reads: where two buffers sit relative to their destinations changes what the
/// stores cost, 4K aliasing).
#[inline]
pub fn store_be_from(dst: &[AtomicU64], src: impl IntoIterator<Item = u64>) {
    for (d, s) in dst.iter().zip(src) {
        d.store(s.to_be(), Ordering::Relaxed);
    }
}

/// Every slot set to `v` big-endian, one relaxed store each: the floor of H_STUFF_TCE.
#[inline]
pub fn store_one(dst: &[AtomicU64], v: u64) {
    let v = v.to_be();
    for d in dst {
        d.store(v, Ordering::Relaxed);
    }
}

/// [`store_one`], then the invalidation a hypercall must order after its stores before it
/// returns (`iommu_tce_kill`; here the IOTLB generation bump device models watch): one
/// atomic read-modify-write, which waits for every store before it to drain.
#[inline]
pub fn store_one_then_kill(dst: &[AtomicU64], v: u64, generation: &AtomicU64) {
    store_one(dst, v);
    generation.fetch_add(1, Ordering::AcqRel);
}

/// Reads `dst.len()` big-endian words from guest memory at `list` (vm-memory's volatile
/// copy, legal while the guest may write the page) into `buf`, then stores them into
/// `dst` with relaxed stores: the floor of H_PUT_TCE_INDIRECT. Give it a page-aligned
/// `buf`, as the hypercall's own copy is: a buffer a few bytes past a page boundary makes
/// the copy stall (about 208 against 120 ns for 4 KiB, measured).
#[inline]
pub fn copy_list_then_store<M: vm_memory::Bytes<vm_memory::GuestAddress>>(
    mem: &M,
    list: u64,
    buf: &mut [u8],
    dst: &[AtomicU64],
) {
    if mem.read_slice(buf, vm_memory::GuestAddress(list)).is_err() {
        return;
    }
    for (d, w) in dst.iter().zip(buf.chunks_exact(8)) {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        // The list is big-endian and so are the entries: stored as read.
        d.store(u64::from_ne_bytes(b), Ordering::Relaxed);
    }
}

/// One DMA window of the checked hypercall floors: its LIOBN, bus offset, IOMMU page
/// shift and entries (one flat array, the cheapest table there is).
pub struct FloorWindow<'a> {
    /// The window's LIOBN.
    pub liobn: u64,
    /// Its first bus address.
    pub offset: u64,
    /// Its IOMMU page shift.
    pub shift: u32,
    /// Its entries, from `offset`.
    pub entries: &'a [AtomicU64],
}

/// H_PARAMETER.
const H_PARAMETER: i64 = -4;

/// The checks every TCE hypercall makes before it stores (KVM's `kvmppc_find_table` and
/// `kvmppc_ioba_validate`): the window found by LIOBN, the ioba aligned to its page, the
/// `npages` entries from it inside the window. The entries to write, or None.
#[inline]
fn checked_run<'a>(
    windows: &'a [FloorWindow<'a>],
    liobn: u64,
    ioba: u64,
    npages: u64,
) -> Option<&'a [AtomicU64]> {
    let w = windows.iter().find(|w| w.liobn == liobn)?;
    if ioba & ((1u64 << w.shift) - 1) != 0 {
        return None;
    }
    let first = ioba.checked_sub(w.offset)? >> w.shift;
    let end = first
        .checked_add(npages)
        .filter(|&e| e <= w.entries.len() as u64)?;
    Some(&w.entries[first as usize..end as usize])
}

/// The least a legal H_STUFF_TCE does (KVM's `kvmppc_h_stuff_tce`): the window checks of
/// every call, a TCE with a permission refused (KVM stuffs clears only), then the stores
/// and the one invalidation ordered after them. Returns H_SUCCESS (0) or H_PARAMETER (-4,
/// nothing stored). Information: the floor is the stores alone.
#[inline]
pub fn stuff_checked(
    windows: &[FloorWindow<'_>],
    liobn: u64,
    ioba: u64,
    tce: u64,
    npages: u64,
    generation: &AtomicU64,
) -> i64 {
    if tce & 3 != 0 {
        return H_PARAMETER;
    }
    let Some(run) = checked_run(windows, liobn, ioba, npages) else {
        return H_PARAMETER;
    };
    store_one(run, tce);
    generation.fetch_add(1, Ordering::AcqRel);
    0
}

/// The least a legal H_PUT_TCE_INDIRECT does (KVM's `kvmppc_h_put_tce_indirect`), given one
/// RAM region at 0 of `ram_end` bytes: at most 512 entries, a 4 KiB-aligned list, the
/// window checks of every call; the list copied from guest memory (vm-memory's volatile
/// copy into the page-aligned `buf`); every entry validated (`kvmppc_tce_validate`: it
/// names guest memory and sets no reserved bit of a 4 KiB page) by one bound, the OR of
/// the words, which every entry is at most; then the stores and the one invalidation
/// ordered after them. `or` computes the OR of the words as they sit in memory: give it
/// the fastest fold the CPU has (the bench passes the one ours uses), so the floor is
/// charged no slower a pass. Returns H_SUCCESS (0) or H_PARAMETER (-4, nothing stored).
/// Information: the floor is the copy and the stores alone.
#[allow(clippy::too_many_arguments)]
#[inline]
pub fn indirect_checked<M: vm_memory::Bytes<vm_memory::GuestAddress>>(
    windows: &[FloorWindow<'_>],
    mem: &M,
    (liobn, ioba, list, npages): (u64, u64, u64, u64),
    buf: &mut [u8],
    ram_end: u64,
    or: impl Fn(&[u8]) -> u64,
    generation: &AtomicU64,
) -> i64 {
    if npages > 512 || list & 0xfff != 0 || buf.len() < 8 * npages as usize {
        return H_PARAMETER;
    }
    let Some(run) = checked_run(windows, liobn, ioba, npages) else {
        return H_PARAMETER;
    };
    let buf = &mut buf[..8 * npages as usize];
    if mem.read_slice(buf, vm_memory::GuestAddress(list)).is_err() {
        return H_PARAMETER;
    }
    // A byte swap commutes with OR: one swap of the OR instead of one per word.
    let any = u64::from_be(or(buf));
    let end = (any & !0xfff).checked_add(0x1000);
    if any & 0xffc != 0 || !matches!(end, Some(e) if e <= ram_end) {
        return H_PARAMETER;
    }
    for (d, w) in run.iter().zip(buf.chunks_exact(8)) {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        d.store(u64::from_ne_bytes(b), Ordering::Relaxed);
    }
    generation.fetch_add(1, Ordering::AcqRel);
    0
}

/// The pages of a 2 x `n` relaxed-store MAP (a TCE and a user address per page): the floor
/// of a VFIO v2 MAP_DMA of `n` pages; also of its UNMAP (two zeroing stores per page).
#[inline]
pub fn map_stores(tces: &[AtomicU64], uas: &[AtomicU64], hpa: u64, ua: u64, shift: u32) {
    for (k, (t, u)) in tces.iter().zip(uas).enumerate() {
        let off = (k as u64) << shift;
        t.store(((hpa + off) | 3).to_be(), Ordering::Relaxed);
        u.store(ua + off, Ordering::Relaxed);
    }
}

/// The floor of a VFIO v2 UNMAP_DMA of `n` pages: each user address is read (the region it
/// lies in loses a use, `tce_iommu_unuse_page_v2`) and zeroed, and each TCE zeroed: `n`
/// relaxed loads and 2 x `n` relaxed stores. Returns a sum of the addresses read, so the
/// loads are not optimised away.
#[inline]
pub fn unmap_stores(tces: &[AtomicU64], uas: &[AtomicU64]) -> u64 {
    let mut sum = 0u64;
    for (t, u) in tces.iter().zip(uas) {
        t.store(0, Ordering::Relaxed);
        sum = sum.wrapping_add(u.load(Ordering::Relaxed));
        u.store(0, Ordering::Relaxed);
    }
    sum
}

/// `it_blocksize` on PowerNV.
const BLOCK_SIZE: usize = 16;
/// Allocations of more pages than this do not bump the hint to a new block.
const LARGE_ALLOC_PAGES: usize = 15;

/// One pool of [`SpinPools`]: its range and next-fit hint, under its spinlock.
struct Pool {
    start: usize,
    end: usize,
    hint: usize,
}

/// The kernel's `iommu_range_alloc` / `__iommu_free` shape: the bitmap split into pools, a
/// spinlock each, next-fit from the hint, the TCE stored after the allocation and cleared
/// before the free. (The kernel sends allocations of more than 15 pages to a separate large
/// pool, and a full pool falls over to the others; here neither: the benchmarks map single
/// pages and never fill a pool.) [`Self::map_with`] and [`Self::unmap_with`] take the TCE store as a
/// closure, so that a benchmark makes the very store ours makes (the same table shape).
pub struct SpinPools {
    pools: Vec<spin::Mutex<(Pool, Vec<u64>)>>,
    poolsize: usize,
    tces: Vec<AtomicU64>,
}

impl SpinPools {
    /// `entries` entries in `nr_pools` pools.
    pub fn new(entries: usize, nr_pools: usize) -> Self {
        let poolsize = entries / nr_pools;
        let pools = (0..nr_pools)
            .map(|i| {
                spin::Mutex::new((
                    Pool {
                        start: i * poolsize,
                        end: (i + 1) * poolsize,
                        hint: i * poolsize,
                    },
                    vec![0u64; poolsize.div_ceil(64)],
                ))
            })
            .collect();
        Self {
            pools,
            poolsize,
            tces: slots(entries),
        }
    }

    /// `dma_map_page` of `n` pages from `cpu`'s pool, storing into a flat table of relaxed
    /// slots: the entry, or None when full.
    #[inline]
    pub fn map(&self, cpu: usize, n: usize, tce: u64) -> Option<usize> {
        let entry = self.alloc(cpu, n)?;
        for k in 0..n {
            self.tces[entry + k].store((tce + ((k as u64) << 12)).to_be(), Ordering::Relaxed);
        }
        Some(entry)
    }

    /// `dma_map_page` with the TCE store given: `store(entry + k)` for each page.
    #[inline]
    pub fn map_with(&self, cpu: usize, n: usize, mut store: impl FnMut(usize)) -> Option<usize> {
        let entry = self.alloc(cpu, n)?;
        for k in 0..n {
            store(entry + k);
        }
        Some(entry)
    }

    /// `dma_unmap_page` with the TCE clear given: `clear(entry + k)` for each page, then
    /// the free under the pool's lock.
    #[inline]
    pub fn unmap_with(&self, entry: usize, n: usize, mut clear: impl FnMut(usize)) {
        for k in 0..n {
            clear(entry + k);
        }
        self.free(entry, n);
    }

    /// The allocation under the pool's spinlock.
    #[inline]
    fn alloc(&self, cpu: usize, n: usize) -> Option<usize> {
        let p = cpu % self.pools.len();
        let entry = {
            let mut g = self.pools[p].lock();
            let (pool, bits) = &mut *g;
            let base = pool.start;
            let mut found = None;
            for pass in 0..2 {
                let mut i = if pass == 0 { pool.hint - base } else { 0 };
                let size = pool.end - base;
                'search: while i + n <= size {
                    let w = bits[i / 64] | ((1u64 << (i % 64)) - 1);
                    if w == !0 {
                        i = (i / 64 + 1) * 64;
                        continue;
                    }
                    let z = (i / 64) * 64 + (!w).trailing_zeros() as usize;
                    if z + n > size {
                        break;
                    }
                    for k in z..z + n {
                        if bits[k / 64] >> (k % 64) & 1 == 1 {
                            i = k + 1;
                            continue 'search;
                        }
                    }
                    for k in z..z + n {
                        bits[k / 64] |= 1 << (k % 64);
                    }
                    // `it_blocksize` (16 on PowerNV): a small allocation bumps the
                    // hint to the next block, as `iommu_range_alloc` does.
                    let end = base + z + n;
                    pool.hint = if n > LARGE_ALLOC_PAGES {
                        end
                    } else {
                        (end + BLOCK_SIZE - 1) & !(BLOCK_SIZE - 1)
                    };
                    found = Some(base + z);
                    break;
                }
                if found.is_some() {
                    break;
                }
            }
            found?
        };
        Some(entry)
    }

    /// `dma_unmap_page` of `n` pages from `entry` (flat table).
    #[inline]
    pub fn unmap(&self, entry: usize, n: usize) {
        for k in 0..n {
            self.tces[entry + k].store(0, Ordering::Relaxed);
        }
        self.free(entry, n);
    }

    /// The free under the pool's spinlock.
    #[inline]
    fn free(&self, entry: usize, n: usize) {
        let p = entry / self.poolsize;
        let mut g = self.pools[p].lock();
        let (pool, bits) = &mut *g;
        for k in entry - pool.start..entry - pool.start + n {
            bits[k / 64] &= !(1 << (k % 64));
        }
    }
}

/// The PHB's TCE kill register as the kernel's DMA API drives it: `pnv_ioda2_tce_build` and
/// `pnv_ioda2_tce_free` each end with `pnv_pci_ioda2_tce_invalidate`, whose PHB3 form
/// (`pnv_pci_phb3_tce_invalidate`) is a full barrier (`mb()`, so the PHB sees the TCE
/// stores before the kill) and one 8-byte store per page to the register naming the PE and
/// the address. Many CPUs write the register at once; the hardware takes each write, so
/// the store needs no read-modify-write. The kill the kernel's algorithm makes, for a
/// baseline of `dma_map_page`/`dma_unmap_page` that includes it.
#[repr(align(128))]
#[derive(Default)]
pub struct KillRegister {
    reg: AtomicU64,
}

impl KillRegister {
    /// Kills `npages` pages from entry `index` of PE `pe`'s table (4K pages, as
    /// `pnv_pci_phb3_tce_invalidate` encodes them: PE number in the top bits, the page
    /// address below).
    #[inline]
    pub fn kill(&self, pe: u64, index: u64, npages: u64) {
        std::sync::atomic::fence(Ordering::SeqCst);
        let base = (1u64 << 63) | (pe << 48);
        for k in 0..npages {
            self.reg
                .store((base | ((index + k) << 12)).to_be(), Ordering::Relaxed);
        }
    }

    /// The last value written (for tests).
    pub fn last(&self) -> u64 {
        u64::from_be(self.reg.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

    /// A plain OR of the words (the bench passes a vectorized one).
    fn or(buf: &[u8]) -> u64 {
        buf.chunks_exact(8).fold(0, |a, w| {
            let mut b = [0u8; 8];
            b.copy_from_slice(w);
            a | u64::from_ne_bytes(b)
        })
    }

    /// 64 KiB of RAM with a four-entry list at 0x8000.
    fn ram_with_list(list: [u64; 4]) -> GuestMemoryMmap {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x1_0000)]).unwrap();
        for (i, t) in list.iter().enumerate() {
            mem.write_obj(t.to_be(), GuestAddress(0x8000 + 8 * i as u64))
                .unwrap();
        }
        mem
    }

    fn window(entries: &[AtomicU64]) -> [FloorWindow<'_>; 1] {
        [FloorWindow {
            liobn: 7,
            offset: 0x10_0000,
            shift: 12,
            entries,
        }]
    }

    fn values(entries: &[AtomicU64]) -> Vec<u64> {
        entries
            .iter()
            .map(|d| u64::from_be(d.load(Ordering::Relaxed)))
            .collect()
    }

    /// Calls every window check refuses: (liobn, ioba, npages).
    const BAD_RANGES: [(u64, u64, u64); 5] = [
        (8, 0x10_0000, 1),        // unknown LIOBN
        (7, 0x10_0800, 1),        // not page aligned
        (7, 0x0f_f000, 1),        // below the window
        (7, 0x10_2000, 7),        // past its end
        (7, 0x10_0000, u64::MAX), // a count that wraps
    ];

    #[test]
    fn the_kill_register_holds_the_last_page_killed_with_its_pe() {
        let r = KillRegister::default();
        assert_eq!(r.last(), 0);
        r.kill(5, 0x40, 3);
        assert_eq!(r.last(), (1 << 63) | (5 << 48) | (0x42 << 12));
        r.kill(5, 0x40, 0);
        assert_eq!(r.last(), (1 << 63) | (5 << 48) | (0x42 << 12));
    }

    #[test]
    fn the_checked_stuff_floor_stores_in_range_and_refuses_the_rest_unchanged() {
        let entries = slots(8);
        let w = window(&entries);
        let gen = AtomicU64::new(0);
        assert_eq!(stuff_checked(&w, 7, 0x10_2000, 0x5000, 6, &gen), 0);
        assert_eq!(
            values(&entries),
            vec![0, 0, 0x5000, 0x5000, 0x5000, 0x5000, 0x5000, 0x5000]
        );
        assert_eq!(gen.load(Ordering::Relaxed), 1);
        for (liobn, ioba, n) in BAD_RANGES {
            assert_eq!(stuff_checked(&w, liobn, ioba, 0, n, &gen), H_PARAMETER);
        }
        assert_eq!(
            stuff_checked(&w, 7, 0x10_0000, 0x5001, 1, &gen),
            H_PARAMETER,
            "a permission"
        );
        assert_eq!(
            gen.load(Ordering::Relaxed),
            1,
            "a refusal invalidates nothing"
        );
        assert_eq!(values(&entries)[0], 0);
    }

    #[test]
    fn the_checked_indirect_floor_stores_a_list_inside_ram_as_read() {
        let mem = ram_with_list([0x1003, 0x2001, 0, 0xF002]);
        let entries = slots(8);
        let w = window(&entries);
        let gen = AtomicU64::new(0);
        let mut buf = [0u8; 4096];
        let call = (7, 0x10_1000, 0x8000, 4);
        assert_eq!(
            indirect_checked(&w, &mem, call, &mut buf, 0x1_0000, or, &gen),
            0
        );
        assert_eq!(
            values(&entries),
            vec![0, 0x1003, 0x2001, 0, 0xF002, 0, 0, 0]
        );
        assert_eq!(gen.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn the_checked_indirect_floor_refuses_a_bad_call_or_entry_and_stores_nothing() {
        let gen = AtomicU64::new(0);
        let mut buf = [0u8; 4096];
        for bad in [0x1_0001, 0x1007, !0xffc_u64] {
            let mem = ram_with_list([0x1003, bad, 0, 0]);
            let entries = slots(8);
            let w = window(&entries);
            let call = (7, 0x10_0000, 0x8000, 4);
            assert_eq!(
                indirect_checked(&w, &mem, call, &mut buf, 0x1_0000, or, &gen),
                H_PARAMETER,
                "{bad:#x}"
            );
            assert!(values(&entries).iter().all(|&v| v == 0));
        }
        let mem = ram_with_list([0x1003, 0, 0, 0]);
        let entries = slots(8);
        let w = window(&entries);
        let mut calls: Vec<(u64, u64, u64, u64)> = BAD_RANGES
            .iter()
            .map(|&(l, i, n)| (l, i, 0x8000, n))
            .collect();
        calls.push((7, 0x10_0000, 0x8008, 1)); // list not 4 KiB aligned
        calls.push((7, 0x10_0000, 0x8000, 513)); // more than 512
        calls.push((7, 0x10_0000, 0x1_0000, 1)); // list outside RAM
        for call in calls {
            assert_eq!(
                indirect_checked(&w, &mem, call, &mut buf, 0x1_0000, or, &gen),
                H_PARAMETER,
                "{call:x?}"
            );
        }
        assert!(values(&entries).iter().all(|&v| v == 0));
        assert_eq!(
            gen.load(Ordering::Relaxed),
            0,
            "a refusal invalidates nothing"
        );
    }

    #[test]
    fn the_store_floors_store_each_word_big_endian_and_the_kill_counts_once() {
        let d = slots(3);
        store_be(&d, &[1, 2, 3]);
        assert_eq!(values(&d), vec![1, 2, 3]);
        store_be_from(&d, [4, 5]);
        assert_eq!(values(&d), vec![4, 5, 3], "stops at the shorter");
        store_one(&d, 9);
        assert_eq!(values(&d), vec![9, 9, 9]);
        let gen = AtomicU64::new(5);
        store_one_then_kill(&d, 7, &gen);
        assert_eq!(
            (values(&d), gen.load(Ordering::Relaxed)),
            (vec![7, 7, 7], 6)
        );
    }

    #[test]
    fn the_list_floor_copies_the_list_as_read() {
        let mem = ram_with_list([0x1003, 0x2001, 0, 0xF002]);
        let d = slots(4);
        let mut buf = [0u8; 32];
        copy_list_then_store(&mem, 0x8000, &mut buf, &d);
        assert_eq!(values(&d), vec![0x1003, 0x2001, 0, 0xF002]);
        let far = slots(4);
        copy_list_then_store(&mem, 0x1_0000, &mut buf, &far);
        assert_eq!(
            values(&far),
            vec![0; 4],
            "a list outside RAM stores nothing"
        );
    }

    #[test]
    fn the_vfio_floors_store_a_tce_and_a_user_address_per_page_and_read_them_back() {
        let (t, u) = (slots(3), slots(3));
        map_stores(&t, &u, 0x10_0000, 0x7000_0000, 16);
        assert_eq!(values(&t), vec![0x10_0003, 0x11_0003, 0x12_0003]);
        let ua: Vec<u64> = u.iter().map(|x| x.load(Ordering::Relaxed)).collect();
        assert_eq!(ua, vec![0x7000_0000, 0x7001_0000, 0x7002_0000]);
        assert_eq!(unmap_stores(&t, &u), 3 * 0x7000_0000 + 0x3_0000);
        assert!(t.iter().chain(&u).all(|x| x.load(Ordering::Relaxed) == 0));
    }

    #[test]
    fn the_checked_floors_refuse_with_h_parameter_and_take_a_full_list() {
        assert_eq!(H_PARAMETER, -4);
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x40_0000)]).unwrap();
        for i in 0..512u64 {
            mem.write_obj(((i << 12) | 3).to_be(), GuestAddress(0x8000 + 8 * i))
                .unwrap();
        }
        let entries = slots(512);
        let w = [FloorWindow {
            liobn: 7,
            offset: 0,
            shift: 12,
            entries: &entries,
        }];
        let gen = AtomicU64::new(0);
        let mut buf = [0u8; 4096];
        let call = (7, 0, 0x8000, 512);
        assert_eq!(
            indirect_checked(&w, &mem, call, &mut buf, 0x40_0000, or, &gen),
            0
        );
        assert_eq!(values(&entries)[511], (511 << 12) | 3);
        let mut short = [0u8; 4088];
        assert_eq!(
            indirect_checked(&w, &mem, call, &mut short, 0x40_0000, or, &gen),
            H_PARAMETER,
            "a buffer too short for the list"
        );
        let mut exact = [0u8; 32];
        assert_eq!(
            indirect_checked(&w, &mem, (7, 0, 0x8000, 4), &mut exact, 0x40_0000, or, &gen),
            0,
            "a buffer the list's size"
        );
    }

    /// The reference: one pool's bitmap as booleans, next-fit from the hint, then from
    /// the pool's start; the hint (an absolute entry, as the kernel's) bumped to the next
    /// 16-entry block of the table after a small allocation, to the end after a large one.
    struct RefPool {
        base: usize,
        used: Vec<bool>,
        hint: usize,
    }

    impl RefPool {
        fn alloc(&mut self, n: usize) -> Option<usize> {
            let size = self.used.len();
            for from in [self.hint - self.base, 0] {
                let mut z = from;
                while z + n <= size {
                    if self.used[z..z + n].iter().all(|u| !u) {
                        self.used[z..z + n].iter_mut().for_each(|u| *u = true);
                        let end = self.base + z + n;
                        self.hint = if n > 15 { end } else { (end + 15) & !15 };
                        return Some(self.base + z);
                    }
                    z += 1;
                }
            }
            None
        }
    }

    proptest::proptest! {
        /// The spinlock pools hand out what the reference does, from the CPU's pool, store
        /// each page's TCE and clear it on unmap, over random maps and out-of-order unmaps.
        #[test]
        fn spin_pools_agree_with_a_next_fit_reference(
            ops in proptest::collection::vec((0usize..4, 1usize..20, proptest::bool::ANY, 0usize..64), 1..120)
        ) {
            const POOL: usize = 100;
            let p = SpinPools::new(4 * POOL, 4);
            let mut r: Vec<RefPool> = (0..4)
                .map(|i| RefPool { base: i * POOL, used: vec![false; POOL], hint: i * POOL })
                .collect();
            let mut live: Vec<(usize, usize)> = Vec::new();
            for (cpu, n, unmap, pick) in ops {
                if unmap && !live.is_empty() {
                    let (entry, n) = live.swap_remove(pick % live.len());
                    p.unmap(entry, n);
                    let pool = &mut r[entry / POOL];
                    pool.used[entry % POOL..entry % POOL + n].iter_mut().for_each(|u| *u = false);
                    for k in entry..entry + n {
                        proptest::prop_assert_eq!(p.tces[k].load(Ordering::Relaxed), 0);
                    }
                    continue;
                }
                let got = p.map(cpu, n, 0x10_0003);
                let want = r[cpu].alloc(n);
                proptest::prop_assert_eq!(got, want);
                if let Some(entry) = got {
                    for k in 0..n {
                        let v = u64::from_be(p.tces[entry + k].load(Ordering::Relaxed));
                        proptest::prop_assert_eq!(v, 0x10_0003 + ((k as u64) << 12));
                    }
                    live.push((entry, n));
                }
            }
        }
    }

    #[test]
    fn spin_pools_with_a_store_given_call_it_for_each_page() {
        let p = SpinPools::new(64, 2);
        let mut seen = Vec::new();
        let e = p.map_with(1, 3, |k| seen.push(k)).unwrap();
        assert_eq!((e, seen.clone()), (32, vec![32, 33, 34]));
        seen.clear();
        p.unmap_with(e, 3, |k| seen.push(k));
        assert_eq!(seen, vec![32, 33, 34]);
        assert_eq!(
            p.map_with(1, 3, |_| {}),
            Some(48),
            "next fit: the hint moved to the next block"
        );
    }

    #[test]
    fn spin_pools_skip_a_full_word_to_the_first_free_entry_after_it() {
        let p = SpinPools::new(128, 1);
        let runs: Vec<usize> = (0..8).map(|_| p.map(0, 16, 0x3).unwrap()).collect();
        assert_eq!(runs, (0..8).map(|k| 16 * k).collect::<Vec<_>>());
        assert_eq!(p.map(0, 1, 0x3), None, "full");
        p.unmap(64, 16);
        // From the hint (the end) nothing fits; from the start, word 0 is full and skipped.
        assert_eq!(p.map(0, 1, 0x3), Some(64));
    }
}
