//! The TCE itself: one 64-bit entry per IOMMU page, and DMA directions.
//!
//! Layout (kernel `TCE_PCI_READ`/`TCE_PCI_WRITE`, LoPAR "RPN"): bit 0 = the device may
//! read memory, bit 1 = the device may write memory, the real page address in place in the
//! high bits. An empty entry is 0. In table memory entries are big-endian.

use core::fmt;

/// Permission bits of a TCE.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TcePerm(u8);

impl TcePerm {
    /// No access: the entry faults.
    pub const NONE: TcePerm = TcePerm(0);
    /// `TCE_PCI_READ` (0x1): the device may read memory.
    pub const READ: TcePerm = TcePerm(1);
    /// `TCE_PCI_WRITE` (0x2): the device may write memory.
    pub const WRITE: TcePerm = TcePerm(2);
    /// Both.
    pub const READ_WRITE: TcePerm = TcePerm(3);

    /// From the two low bits of a value (other bits ignored).
    #[inline]
    pub const fn from_bits(bits: u64) -> Self {
        TcePerm((bits & 3) as u8)
    }
    /// The bits, as they sit in a TCE.
    #[inline]
    pub const fn bits(self) -> u64 {
        self.0 as u64
    }
    /// Whether the device may read memory.
    #[inline]
    pub const fn can_read(self) -> bool {
        self.0 & 1 != 0
    }
    /// Whether the device may write memory.
    #[inline]
    pub const fn can_write(self) -> bool {
        self.0 & 2 != 0
    }
    /// Whether the access is permitted.
    #[inline]
    pub const fn permits(self, access: Access) -> bool {
        match access {
            Access::Read => self.can_read(),
            Access::Write => self.can_write(),
        }
    }
}

impl fmt::Debug for TcePerm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.0 {
            0 => "--",
            1 => "r-",
            2 => "-w",
            _ => "rw",
        })
    }
}

/// A device access, seen from the device: it reads memory or writes memory.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Access {
    /// The device reads memory (DMA to the device).
    Read,
    /// The device writes memory (DMA from the device).
    Write,
}

/// The kernel's `enum dma_data_direction`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum DmaDirection {
    /// `DMA_BIDIRECTIONAL`: read and write.
    Bidirectional,
    /// `DMA_TO_DEVICE`: the device reads memory.
    ToDevice,
    /// `DMA_FROM_DEVICE`: the device writes memory.
    FromDevice,
    /// `DMA_NONE`: no access.
    None,
}

impl From<DmaDirection> for TcePerm {
    /// The kernel's `iommu_direction_to_tce_perm`.
    fn from(d: DmaDirection) -> Self {
        match d {
            DmaDirection::Bidirectional => TcePerm::READ_WRITE,
            DmaDirection::ToDevice => TcePerm::READ,
            DmaDirection::FromDevice => TcePerm::WRITE,
            DmaDirection::None => TcePerm::NONE,
        }
    }
}

impl From<TcePerm> for DmaDirection {
    /// The reverse mapping the kernel's `xchg_no_kill` reports the old entry with.
    fn from(p: TcePerm) -> Self {
        match (p.can_read(), p.can_write()) {
            (true, true) => DmaDirection::Bidirectional,
            (true, false) => DmaDirection::ToDevice,
            (false, true) => DmaDirection::FromDevice,
            (false, false) => DmaDirection::None,
        }
    }
}

/// One TCE, in CPU byte order. Stored verbatim: reserved bits and the address of a
/// no-permission entry survive a round trip (QEMU's H_GET_TCE returns exactly what was put).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Tce(pub u64);

impl Tce {
    /// The empty entry.
    pub const EMPTY: Tce = Tce(0);

    /// An entry for a page at `addr` (its page-offset bits should be zero) with `perm`.
    #[inline]
    pub const fn new(addr: u64, perm: TcePerm) -> Self {
        Tce((addr & !3) | perm.bits())
    }
    /// The raw 64 bits.
    #[inline]
    pub const fn raw(self) -> u64 {
        self.0
    }
    /// Whether the entry is 0.
    #[inline]
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
    /// Its permission bits.
    #[inline]
    pub const fn perm(self) -> TcePerm {
        TcePerm::from_bits(self.0)
    }
    /// Its DMA direction.
    #[inline]
    pub fn direction(self) -> DmaDirection {
        self.perm().into()
    }
    /// The page address for a table of `page_shift`: the bits above the page offset.
    #[inline]
    pub const fn page_addr(self, page_shift: u32) -> u64 {
        self.0 & !((1u64 << page_shift) - 1)
    }
    /// PowerNV's rule on every write (`pnv_tce_build`, `pnv_tce_xchg`): write implies read.
    #[inline]
    pub const fn with_write_implies_read(self) -> Self {
        if self.0 & 2 != 0 {
            Tce(self.0 | 1)
        } else {
            self
        }
    }
    /// The entry as the hardware holds it in memory (big-endian).
    #[inline]
    pub const fn to_be_bytes(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }
}

impl fmt::Debug for Tce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tce({:#x} {:?})", self.0 & !3, self.perm())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direction_to_permission_matches_the_kernel_both_ways() {
        let pairs = [
            (DmaDirection::Bidirectional, TcePerm::READ_WRITE),
            (DmaDirection::ToDevice, TcePerm::READ),
            (DmaDirection::FromDevice, TcePerm::WRITE),
            (DmaDirection::None, TcePerm::NONE),
        ];
        for (dir, perm) in pairs {
            assert_eq!(TcePerm::from(dir), perm);
            assert_eq!(DmaDirection::from(perm), dir);
        }
    }

    #[test]
    fn read_is_bit_zero_and_write_is_bit_one() {
        assert_eq!(TcePerm::READ.bits(), 0x1);
        assert_eq!(TcePerm::WRITE.bits(), 0x2);
        let t = Tce::new(0x1234_0000, TcePerm::WRITE);
        assert_eq!(t.raw(), 0x1234_0002);
        assert!(t.perm().permits(Access::Write));
        assert!(!t.perm().permits(Access::Read));
    }

    #[test]
    fn write_implies_read_forces_read_only_when_write_is_set() {
        assert_eq!(Tce(0x1002).with_write_implies_read(), Tce(0x1003));
        assert_eq!(Tce(0x1001).with_write_implies_read(), Tce(0x1001));
        assert_eq!(Tce(0x1000).with_write_implies_read(), Tce(0x1000));
    }

    #[test]
    fn page_address_drops_only_the_page_offset_bits() {
        let t = Tce(0xFFFF_FFFF_FFFF_FFFF);
        assert_eq!(t.page_addr(12), 0xFFFF_FFFF_FFFF_F000);
        assert_eq!(t.page_addr(16), 0xFFFF_FFFF_FFFF_0000);
    }

    #[test]
    fn hardware_byte_order_is_big_endian() {
        assert_eq!(
            Tce(0x0102_0304_0506_0703).to_be_bytes(),
            [1, 2, 3, 4, 5, 6, 7, 3]
        );
    }
}
