//! Address and handle newtypes.
//!
//! The IOMMU juggles several address spaces that are all "a u64"; mixing them up is the
//! classic bug (an I/O address used as a real address, a guest-physical address handed to
//! the host). Each space gets its own type and arithmetic on it is checked.

use core::fmt;

macro_rules! address_type {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(pub u64);

        impl $name {
            /// Wraps a raw value.
            #[inline]
            pub const fn new(raw: u64) -> Self {
                Self(raw)
            }
            /// The raw value.
            #[inline]
            pub const fn raw(self) -> u64 {
                self.0
            }
            /// `self + bytes`, or `None` on overflow.
            #[inline]
            pub const fn checked_add(self, bytes: u64) -> Option<Self> {
                match self.0.checked_add(bytes) {
                    Some(v) => Some(Self(v)),
                    None => None,
                }
            }
            /// `self - bytes`, or `None` on underflow.
            #[inline]
            pub const fn checked_sub(self, bytes: u64) -> Option<Self> {
                match self.0.checked_sub(bytes) {
                    Some(v) => Some(Self(v)),
                    None => None,
                }
            }
            /// Whether the address is a multiple of `1 << shift`.
            #[inline]
            pub const fn is_aligned(self, shift: u32) -> bool {
                shift >= 64 || self.0 & ((1u64 << shift) - 1) == 0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, ":{:#x}"), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:#x}", self.0)
            }
        }

        impl From<$name> for u64 {
            #[inline]
            fn from(v: $name) -> u64 {
                v.0
            }
        }
    };
}

address_type!(
    /// A bus address as a device emits it (I/O virtual address, the kernel's `ioba`/`iova`).
    Iova,
    "iova"
);
address_type!(
    /// A host real (physical) address: what a PowerNV TCE points at.
    Hpa,
    "hpa"
);
address_type!(
    /// A guest-physical ("guest real") address: what a pSeries guest's TCE points at.
    Gpa,
    "gpa"
);
address_type!(
    /// A user-space virtual address (VFIO `vaddr`).
    Ua,
    "ua"
);
address_type!(
    /// An absolute TCE index: `iova >> page_shift`, the kernel's "entry" (it includes
    /// `it_offset`, the first index of the window).
    TceIndex,
    "tce"
);

/// A logical I/O bus number: the guest's handle for one DMA window (PAPR LIOBN, 32 bits).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Liobn(pub u32);

impl fmt::Debug for Liobn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "liobn:{:#x}", self.0)
    }
}

impl fmt::Display for Liobn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// The address space a TCE points into. A table is typed by it so that a guest's table
/// can never hand out host addresses and vice versa.
pub trait RealAddress: Copy + Eq + fmt::Debug + Send + Sync + 'static {
    /// Builds the address from the raw bits a translation produced.
    fn from_raw(raw: u64) -> Self;
    /// The raw bits.
    fn to_raw(self) -> u64;
}

impl RealAddress for Hpa {
    #[inline]
    fn from_raw(raw: u64) -> Self {
        Hpa(raw)
    }
    #[inline]
    fn to_raw(self) -> u64 {
        self.0
    }
}

/// User addresses: VFIO's `it_userspace` shadow table keeps, beside each TCE, the user
/// address it was mapped from, in a table of the same geometry.
impl RealAddress for Ua {
    #[inline]
    fn from_raw(raw: u64) -> Self {
        Ua(raw)
    }
    #[inline]
    fn to_raw(self) -> u64 {
        self.0
    }
}

impl RealAddress for Gpa {
    #[inline]
    fn from_raw(raw: u64) -> Self {
        Gpa(raw)
    }
    #[inline]
    fn to_raw(self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checked_arithmetic_refuses_overflow_and_underflow() {
        assert_eq!(Iova(u64::MAX).checked_add(1), None);
        assert_eq!(Iova(0).checked_sub(1), None);
        assert_eq!(Iova(0x1000).checked_add(0x1000), Some(Iova(0x2000)));
    }

    #[test]
    fn alignment_is_checked_against_the_shift() {
        assert!(Iova(0x1_0000).is_aligned(16));
        assert!(!Iova(0x1_1000).is_aligned(16));
        assert!(Iova(0).is_aligned(64));
    }

    #[test]
    fn debug_names_the_address_space() {
        assert_eq!(format!("{:?}", Hpa(0x10)), "hpa:0x10");
        assert_eq!(format!("{:?}", Gpa(0x10)), "gpa:0x10");
        assert_eq!(format!("{:?}", Liobn(0x8000_0000)), "liobn:0x80000000");
    }
}
