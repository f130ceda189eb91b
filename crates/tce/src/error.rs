//! Errors of the TCE engine. Each variant names the rule that fired and carries the
//! offending values, so a caller (and a test) can tell exactly what was refused.

use crate::addr::{Iova, TceIndex};
use crate::entry::{Access, Tce};

/// A misuse of a table or of its construction. Nothing was changed when one is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TceError {
    /// The index lies outside the window `[first, end)`.
    #[error("TCE index {index:?} is outside the window [{first:?}, {end:?})")]
    IndexOutOfWindow {
        /// Offending index.
        index: TceIndex,
        /// First index of the window.
        first: TceIndex,
        /// One past the last index of the window.
        end: TceIndex,
    },
    /// A range of `count` entries from `first` does not fit in the window.
    #[error(
        "TCE range {first:?}+{count} does not fit in the window [{window_first:?}, {window_end:?})"
    )]
    RangeOutOfWindow {
        /// First index of the range.
        first: TceIndex,
        /// Number of entries.
        count: u64,
        /// First index of the window.
        window_first: TceIndex,
        /// One past the last index of the window.
        window_end: TceIndex,
    },
    /// An IOMMU page size that no TCE hardware implements.
    #[error("unsupported IOMMU page shift {0} (supported: 12, 16, 21, 24, 28, 30, 34)")]
    UnsupportedPageShift(u32),
    /// The table parameters break a geometry rule.
    #[error("bad table geometry: {0}")]
    BadGeometry(GeometryError),
    /// A level could not be allocated (memory or the table's byte budget exhausted).
    #[error("allocation of a {bytes}-byte TCE level failed")]
    AllocFailed {
        /// Size of the level that could not be allocated.
        bytes: u64,
    },
    /// Write access to the table was revoked: it was lent under a claim that has ended
    /// (a borrowing PE's kernel table, which the kernel has taken back).
    #[error("write access to the table was revoked (the claim it was lent under has ended)")]
    Revoked,
    /// A batched put of more entries than one call may carry.
    #[error("batch of {len} TCEs exceeds the limit of {max}")]
    BatchTooLarge {
        /// Entries in the batch.
        len: usize,
        /// The limit ([`crate::MAX_BATCH`]).
        max: usize,
    },
}

/// Which geometry rule a table's parameters broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GeometryError {
    /// Levels must be 1 to 5.
    #[error("levels must be 1..=5, got {0}")]
    Levels(u32),
    /// A window must hold at least one entry.
    #[error("a window needs at least one entry")]
    Empty,
    /// The window size must be a power of two (IODA2 `create_table`).
    #[error("window size {0:#x} is not a power of two")]
    WindowNotPowerOfTwo(u64),
    /// The window is smaller than one IOMMU page.
    #[error("window size {size:#x} is smaller than the IOMMU page (shift {page_shift})")]
    WindowSmallerThanPage {
        /// Window size in bytes.
        size: u64,
        /// IOMMU page shift.
        page_shift: u32,
    },
    /// The hardware walk limit `(level_shift - 3) * levels + page_shift < 55`.
    #[error("(level_shift - 3) * levels + page_shift = {0} is not below 55")]
    BitsLimit(u32),
    /// The bus offset is not aligned to the IOMMU page.
    #[error("bus offset {0:?} is not aligned to the IOMMU page")]
    UnalignedOffset(Iova),
    /// The window runs past the end of the 64-bit bus address space.
    #[error("window does not fit in the 64-bit bus address space")]
    Overflow,
    /// The host page shift is outside what a host can have (12..=30).
    #[error("host page shift {0} is not in 12..=30")]
    HostPageShift(u32),
    /// Per-level index bits must be 1..=32 and the levels must cover the entry count.
    #[error("{levels} levels of {level_bits} bits cannot index {entries} entries")]
    Coverage {
        /// Levels requested.
        levels: u32,
        /// Index bits per level.
        level_bits: u32,
        /// Entries in the window.
        entries: u64,
    },
}

impl From<GeometryError> for TceError {
    fn from(e: GeometryError) -> Self {
        TceError::BadGeometry(e)
    }
}

/// Why a device access through the table was refused: what the PHB would report as a
/// DMA fault (an EEH freeze on real hardware).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Fault {
    /// The bus address is outside the window.
    #[error("{iova:?} is outside the DMA window")]
    OutsideWindow {
        /// Faulting bus address.
        iova: Iova,
    },
    /// The entry is empty (or its level was never allocated).
    #[error("{iova:?}: no TCE at {index:?}")]
    NoEntry {
        /// Faulting bus address.
        iova: Iova,
        /// Entry consulted.
        index: TceIndex,
    },
    /// The entry exists but does not permit this access.
    #[error("{iova:?}: TCE {tce:?} at {index:?} does not permit {access:?}")]
    Permission {
        /// Faulting bus address.
        iova: Iova,
        /// Entry consulted.
        index: TceIndex,
        /// The entry found.
        tce: Tce,
        /// The access attempted.
        access: Access,
    },
}
