//! Table geometry: where a window sits on the bus, its page size, how many entries it
//! has and how those entries are split into levels.
//!
//! Two ways to build one:
//! - [`TableGeometry::ioda2`] follows the PowerNV rules of `pnv_pci_ioda2_table_alloc_pages`:
//!   power-of-two window, per-level index bits `ceil(entries_shift / levels)`, a level is at
//!   least one host page, the `(level_shift - 3) * levels + page_shift < 55` walk limit, and
//!   the entry count enlarged to at least one host page of TCEs.
//! - [`TableGeometry::new`] takes an exact entry count (QEMU's `nb_table`) and any split.

use crate::addr::{Iova, TceIndex};
use crate::error::{GeometryError, TceError};
use crate::page::PageShift;

/// Most levels a TCE table can have (`POWERNV_IOMMU_MAX_LEVELS`).
pub const MAX_LEVELS: u32 = 5;
/// Levels PowerNV uses for its default window (`POWERNV_IOMMU_DEFAULT_LEVELS`).
pub const DEFAULT_LEVELS: u32 = 2;
/// Bytes per TCE.
pub const TCE_BYTES: u64 = 8;

/// The shape of one TCE table (one DMA window).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableGeometry {
    bus_offset: u64,
    page_shift: PageShift,
    entries: u64,
    levels: u32,
    level_bits: u32,
    top_entries: u64,
    /// `page size - 1`, kept so a translation does not recompute it.
    offset_mask: u64,
}

impl TableGeometry {
    /// A table of exactly `entries` entries split into `levels` levels, each lower level
    /// holding `1 << level_bits` entries (ignored with one level, where the single level
    /// holds every entry). The window starts at `bus_offset`, which must be page aligned.
    pub fn new(
        bus_offset: Iova,
        page_shift: PageShift,
        entries: u64,
        levels: u32,
        level_bits: u32,
    ) -> Result<Self, TceError> {
        if levels == 0 || levels > MAX_LEVELS {
            return Err(GeometryError::Levels(levels).into());
        }
        if entries == 0 {
            return Err(GeometryError::Empty.into());
        }
        if !bus_offset.is_aligned(page_shift.shift()) {
            return Err(GeometryError::UnalignedOffset(bus_offset).into());
        }
        // The window [bus_offset, bus_offset + entries * page) must fit in 64 bits.
        let end = u128::from(bus_offset.raw()) + (u128::from(entries) << page_shift.shift());
        if end > 1u128 << 64 {
            return Err(GeometryError::Overflow.into());
        }
        let coverage = GeometryError::Coverage {
            levels,
            level_bits,
            entries,
        };
        let (level_bits, top_entries) = if levels == 1 {
            (0, entries)
        } else {
            // A lower level of `1 << level_bits` slots of 8 bytes must be addressable
            // (`usize`; the bound matters only on a 32-bit host).
            if level_bits == 0 || level_bits > 32 || level_bits >= usize::BITS - 3 {
                return Err(coverage.into());
            }
            let low_bits = (levels - 1) * level_bits;
            if low_bits >= 64 {
                return Err(coverage.into());
            }
            let top = entries.div_ceil(1u64 << low_bits);
            if top > 1u64 << level_bits {
                return Err(coverage.into());
            }
            (level_bits, top)
        };
        Ok(Self {
            bus_offset: bus_offset.raw(),
            page_shift,
            entries,
            levels,
            level_bits,
            top_entries,
            offset_mask: page_shift.offset_mask(),
        })
    }

    /// A single-level table of exactly `entries` entries (QEMU's flat `SpaprTceTable`).
    pub fn flat(bus_offset: Iova, page_shift: PageShift, entries: u64) -> Result<Self, TceError> {
        Self::new(bus_offset, page_shift, entries, 1, 0)
    }

    /// The PowerNV IODA2 geometry of a `window_size`-byte window of `levels` levels on a
    /// host with `host_page_shift` pages (`pnv_pci_ioda2_table_alloc_pages`).
    pub fn ioda2(
        bus_offset: Iova,
        page_shift: PageShift,
        window_size: u64,
        levels: u32,
        host_page_shift: u32,
    ) -> Result<Self, TceError> {
        let p = Ioda2Params::compute(page_shift, window_size, levels, host_page_shift)?;
        Self::new(bus_offset, page_shift, p.entries, levels, p.level_bits)
    }

    /// Bus address of the first byte of the window.
    #[inline]
    pub const fn bus_offset(&self) -> Iova {
        Iova(self.bus_offset)
    }
    /// IOMMU page size.
    #[inline]
    pub const fn page_shift(&self) -> PageShift {
        self.page_shift
    }
    /// Number of entries (`it_size`).
    #[inline]
    pub const fn entries(&self) -> u64 {
        self.entries
    }
    /// Number of levels (`it_indirect_levels + 1`).
    #[inline]
    pub const fn levels(&self) -> u32 {
        self.levels
    }
    /// Index bits per lower level (0 for a one-level table).
    #[inline]
    pub const fn level_bits(&self) -> u32 {
        self.level_bits
    }
    /// `page size - 1`.
    #[inline(always)]
    pub const fn offset_mask(&self) -> u64 {
        self.offset_mask
    }
    /// Entries of the top level.
    #[inline]
    pub const fn top_entries(&self) -> u64 {
        self.top_entries
    }
    /// Entries of each lower level.
    #[inline]
    pub const fn lower_level_entries(&self) -> u64 {
        1u64 << self.level_bits
    }
    /// Entries one leaf holds.
    #[inline]
    pub const fn leaf_entries(&self) -> u64 {
        if self.levels == 1 {
            self.top_entries
        } else {
            1u64 << self.level_bits
        }
    }
    /// First absolute index of the window (`it_offset`).
    #[inline]
    pub const fn first_index(&self) -> TceIndex {
        TceIndex(self.bus_offset >> self.page_shift.shift())
    }
    /// One past the last absolute index.
    #[inline]
    pub const fn end_index(&self) -> TceIndex {
        TceIndex((self.bus_offset >> self.page_shift.shift()) + self.entries)
    }
    /// Window size in bytes (saturates at `u64::MAX` for a window reaching 2^64).
    pub fn window_size(&self) -> u64 {
        self.entries
            .checked_shl(self.page_shift.shift())
            .filter(|s| s >> self.page_shift.shift() == self.entries)
            .unwrap_or(u64::MAX)
    }
    /// Whether an absolute index lies in the window.
    #[inline]
    pub const fn contains_index(&self, index: TceIndex) -> bool {
        index
            .0
            .wrapping_sub(self.bus_offset >> self.page_shift.shift())
            < self.entries
    }
    /// The window-relative index of a bus address, if it lies in the window. One
    /// comparison: below the window the wrapping difference is at least the window size
    /// (the window ends at or below 2^64 and its offset is page aligned), so it fails the
    /// same test as an address past the end (QEMU's index check works the same way).
    #[inline(always)]
    pub const fn relative_index(&self, iova: Iova) -> Option<u64> {
        let rel = iova.0.wrapping_sub(self.bus_offset) >> self.page_shift.shift();
        if rel < self.entries {
            Some(rel)
        } else {
            None
        }
    }
    /// Bytes of the top level, allocated with the table.
    #[inline]
    pub const fn top_bytes(&self) -> u64 {
        self.top_entries * TCE_BYTES
    }
    /// Bytes of each lower level, allocated on first write below it.
    #[inline]
    pub const fn lower_level_bytes(&self) -> u64 {
        (1u64 << self.level_bits) * TCE_BYTES
    }
}

/// The numbers `pnv_pci_ioda2_table_alloc_pages` derives from a window request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Ioda2Params {
    entries: u64,
    level_bits: u32,
}

impl Ioda2Params {
    fn compute(
        page_shift: PageShift,
        window_size: u64,
        levels: u32,
        host_page_shift: u32,
    ) -> Result<Self, GeometryError> {
        if levels == 0 || levels > MAX_LEVELS {
            return Err(GeometryError::Levels(levels));
        }
        if !(12..=30).contains(&host_page_shift) {
            return Err(GeometryError::HostPageShift(host_page_shift));
        }
        if !window_size.is_power_of_two() {
            return Err(GeometryError::WindowNotPowerOfTwo(window_size));
        }
        let window_shift = window_size.trailing_zeros();
        let ps = page_shift.shift();
        if window_shift < ps {
            return Err(GeometryError::WindowSmallerThanPage {
                size: window_size,
                page_shift: ps,
            });
        }
        let entries_shift = window_shift - ps;
        // One level holds every index bit split evenly, and at least one host page.
        let level_shift = (entries_shift.div_ceil(levels) + 3).max(host_page_shift);
        let walk_bits = (level_shift - 3) * levels + ps;
        if walk_bits >= 55 {
            return Err(GeometryError::BitsLimit(walk_bits));
        }
        // it_size: the table is at least one host page of TCEs (a small window is enlarged).
        let entries = 1u64 << (entries_shift + 3).max(host_page_shift).saturating_sub(3);
        Ok(Self {
            entries,
            level_bits: level_shift - 3,
        })
    }
}

/// Bytes a PowerNV table of these parameters takes, counting the hardware table and the
/// userspace-address copy VFIO keeps beside it (`pnv_pci_ioda2_get_table_size`); 0 when the
/// parameters are invalid (the caller treats 0 as -EINVAL).
pub fn ioda2_table_size(
    page_shift: u32,
    window_size: u64,
    levels: u32,
    host_page_shift: u32,
) -> u64 {
    if levels == 0 || levels > MAX_LEVELS || !window_size.is_power_of_two() {
        return 0;
    }
    if !(12..=30).contains(&host_page_shift) {
        return 0;
    }
    let window_shift = window_size.trailing_zeros();
    if window_shift < page_shift {
        return 0;
    }
    let entries_shift = window_shift - page_shift;
    let Some(mut remaining) = 1u64.checked_shl(entries_shift + 3) else {
        return 0;
    };
    remaining = remaining.max(0x1000);
    let direct_shift = (entries_shift.div_ceil(levels) + 3).max(host_page_shift);
    let Some(direct) = 1u64.checked_shl(direct_shift) else {
        return 0;
    };
    let mut bytes: u64 = 0;
    for _ in 0..levels {
        bytes = bytes.saturating_add(remaining.div_ceil(direct).saturating_mul(direct));
        remaining = ((remaining / direct) << 3).max(direct);
    }
    bytes.saturating_mul(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    const K64: u32 = 16;

    #[test]
    fn levels_outside_one_to_five_are_refused() {
        for levels in [0, 6] {
            assert_eq!(
                TableGeometry::ioda2(Iova(0), PageShift::K4, 1 << 30, levels, K64),
                Err(TceError::BadGeometry(GeometryError::Levels(levels)))
            );
        }
    }

    #[test]
    fn window_size_must_be_a_power_of_two() {
        assert_eq!(
            TableGeometry::ioda2(Iova(0), PageShift::K4, 3 << 30, 1, K64),
            Err(TceError::BadGeometry(GeometryError::WindowNotPowerOfTwo(
                3 << 30
            )))
        );
    }

    #[test]
    fn level_splits_index_bits_evenly_and_is_at_least_a_host_page() {
        // 1 TiB of 4K pages = 2^28 entries; 2 levels of 14 bits (128 KiB per level).
        let g = TableGeometry::ioda2(Iova(0), PageShift::K4, 1 << 40, 2, K64).unwrap();
        assert_eq!(
            (g.entries(), g.level_bits(), g.top_entries()),
            (1 << 28, 14, 1 << 14)
        );
        // 3 levels: ceil(28/3) = 10 bits, raised to a 64K host page = 13 bits.
        let g = TableGeometry::ioda2(Iova(0), PageShift::K4, 1 << 40, 3, K64).unwrap();
        assert_eq!((g.level_bits(), g.lower_level_bytes()), (13, 1 << 16));
    }

    #[test]
    fn fifty_five_bit_walk_limit_refuses_deep_tables_on_64k_hosts() {
        // 4 levels of 4K pages with 64K host pages: 13*4+12 = 64.
        assert_eq!(
            TableGeometry::ioda2(Iova(0), PageShift::K4, 1 << 40, 4, K64),
            Err(TceError::BadGeometry(GeometryError::BitsLimit(64)))
        );
        // 3 levels of 64K pages: 13*3+16 = 55, refused although max_levels is 5.
        assert_eq!(
            TableGeometry::ioda2(Iova(0), PageShift::K64, 1 << 40, 3, K64),
            Err(TceError::BadGeometry(GeometryError::BitsLimit(55)))
        );
        // With 4K host pages, 9 bits per level: 9*4+12 = 48 is fine.
        assert!(TableGeometry::ioda2(Iova(0), PageShift::K4, 1 << 40, 4, 12).is_ok());
    }

    #[test]
    fn small_window_is_enlarged_to_one_host_page_of_tces() {
        // 64 KiB window of 4K pages = 16 entries, enlarged to 8192 (64K / 8).
        let g = TableGeometry::ioda2(Iova(0), PageShift::K4, 1 << 16, 1, K64).unwrap();
        assert_eq!(g.entries(), 8192);
    }

    #[test]
    fn bus_offset_must_be_page_aligned_and_window_must_fit_64_bits() {
        assert_eq!(
            TableGeometry::flat(Iova(0x1000), PageShift::K64, 16),
            Err(TceError::BadGeometry(GeometryError::UnalignedOffset(Iova(
                0x1000
            ))))
        );
        assert_eq!(
            TableGeometry::flat(Iova(1 << 63), PageShift::K4, 1 << 52),
            Err(TceError::BadGeometry(GeometryError::Overflow))
        );
        // Exactly reaching 2^64 is allowed.
        assert!(TableGeometry::flat(Iova(1 << 63), PageShift::K4, 1 << 51).is_ok());
    }

    #[test]
    fn first_index_is_bus_offset_over_page_size() {
        let g = TableGeometry::flat(Iova(1 << 59), PageShift::K64, 16).unwrap();
        assert_eq!(g.first_index(), TceIndex(1 << 43));
        assert!(g.contains_index(TceIndex((1 << 43) + 15)));
        assert!(!g.contains_index(TceIndex((1 << 43) + 16)));
        assert!(!g.contains_index(TceIndex((1 << 43) - 1)));
        assert_eq!(g.relative_index(Iova((1 << 59) + 0x1_0001)), Some(1));
        assert_eq!(g.relative_index(Iova((1 << 59) - 1)), None);
    }

    #[test]
    fn table_size_counts_every_level_twice() {
        // One level, 1 GiB of 64K pages: 16384 entries = 128 KiB, times two.
        assert_eq!(ioda2_table_size(16, 1 << 30, 1, K64), 2 << 17);
        // Two levels, 1 TiB of 4K: 2^28 entries, level 128 KiB: top 128 KiB + leaves 2 GiB.
        assert_eq!(
            ioda2_table_size(12, 1 << 40, 2, K64),
            2 * ((1 << 17) + (1 << 31))
        );
        // Invalid parameters give 0.
        assert_eq!(ioda2_table_size(12, 3 << 30, 1, K64), 0);
        assert_eq!(ioda2_table_size(12, 1 << 30, 0, K64), 0);
        assert_eq!(ioda2_table_size(12, 1 << 30, 6, K64), 0);
    }
}
