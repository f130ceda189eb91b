//! IOMMU page sizes and page-size sets (`iommu_table_group::pgsizes`).

use crate::error::TceError;

/// An IOMMU page size that real TCE hardware implements, as a shift:
/// 4K (12), 64K (16), 2M (21), 16M (24), 256M (28), 1G (30), 16G (34).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct PageShift(u8);

impl PageShift {
    /// 4 KiB.
    pub const K4: PageShift = PageShift(12);
    /// 64 KiB.
    pub const K64: PageShift = PageShift(16);
    /// 2 MiB.
    pub const M2: PageShift = PageShift(21);
    /// 16 MiB.
    pub const M16: PageShift = PageShift(24);
    /// 256 MiB.
    pub const M256: PageShift = PageShift(28);
    /// 1 GiB.
    pub const G1: PageShift = PageShift(30);
    /// 16 GiB.
    pub const G16: PageShift = PageShift(34);

    /// Every page size some TCE implementation supports.
    pub const ALL: [PageShift; 7] = [
        Self::K4,
        Self::K64,
        Self::M2,
        Self::M16,
        Self::M256,
        Self::G1,
        Self::G16,
    ];

    /// Validates a shift against the real page sizes.
    pub fn new(shift: u32) -> Result<Self, TceError> {
        Self::ALL
            .iter()
            .copied()
            .find(|p| u32::from(p.0) == shift)
            .ok_or(TceError::UnsupportedPageShift(shift))
    }

    /// The shift.
    #[inline]
    pub const fn shift(self) -> u32 {
        self.0 as u32
    }

    /// The page size in bytes.
    #[inline]
    pub const fn size(self) -> u64 {
        1u64 << self.0
    }

    /// Mask of the offset-in-page bits.
    #[inline]
    pub const fn offset_mask(self) -> u64 {
        self.size() - 1
    }
}

/// A set of page sizes, as the kernel's `pgsizes` bitmap: bit n set = 2^n-byte pages.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct PageSizes(pub u64);

impl PageSizes {
    /// PHB3 (POWER8): 4K, 64K, 16M, 256M.
    pub const PHB3: PageSizes = PageSizes((1 << 12) | (1 << 16) | (1 << 24) | (1 << 28));
    /// PHB4 (POWER9): 4K, 64K, 2M, 1G.
    pub const PHB4: PageSizes = PageSizes((1 << 12) | (1 << 16) | (1 << 21) | (1 << 30));
    /// QEMU pSeries PHB: 4K, 64K, 2M, 16M (query mask 0x107).
    pub const QEMU_PSERIES: PageSizes = PageSizes((1 << 12) | (1 << 16) | (1 << 21) | (1 << 24));
    /// Borrowing ops (IODA1, pSeries at the merge): 4K only.
    pub const K4_ONLY: PageSizes = PageSizes(1 << 12);

    /// Whether the set holds the page size.
    #[inline]
    pub const fn contains(self, p: PageShift) -> bool {
        self.0 & (1u64 << p.0) != 0
    }

    /// Whether the set holds a page of `1 << shift` bytes (any shift, for ABI checks).
    #[inline]
    pub const fn contains_shift(self, shift: u32) -> bool {
        shift < 64 && self.0 & (1u64 << shift) != 0
    }

    /// The real page sizes of the set, smallest first.
    pub fn iter(self) -> impl Iterator<Item = PageShift> {
        PageShift::ALL
            .into_iter()
            .filter(move |p| self.contains(*p))
    }

    /// The largest page size of the set.
    pub fn largest(self) -> Option<PageShift> {
        self.iter().last()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_real_page_size_is_accepted_and_others_are_refused() {
        for s in [12, 16, 21, 24, 28, 30, 34] {
            assert_eq!(PageShift::new(s).map(PageShift::shift), Ok(s));
        }
        for s in [0, 11, 13, 20, 64, 76] {
            assert_eq!(PageShift::new(s), Err(TceError::UnsupportedPageShift(s)));
        }
    }

    #[test]
    fn phb_page_size_sets_are_the_hardware_ones() {
        let p3: Vec<u32> = PageSizes::PHB3.iter().map(PageShift::shift).collect();
        let p4: Vec<u32> = PageSizes::PHB4.iter().map(PageShift::shift).collect();
        assert_eq!(p3, [12, 16, 24, 28]);
        assert_eq!(p4, [12, 16, 21, 30]);
        assert_eq!(PageSizes::PHB4.largest(), Some(PageShift::G1));
        assert!(!PageSizes::K4_ONLY.contains_shift(76));
    }
}
