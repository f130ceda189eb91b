//! # spapr-tce — the TCE table engine
//!
//! The lowest layer of spapr-iommu: the translation tables every layer above keeps its DMA
//! mappings in. One [`TceTable`] is one DMA window: a bus offset, an IOMMU page size, an
//! entry count and 1 to 5 levels of 64-bit big-endian TCEs, lower levels allocated on
//! first write. It models the kernel's `struct iommu_table` with the PowerNV accessors
//! (`pnv_tce_build`, `pnv_tce_xchg`, `pnv_tce_get`, `pnv_pci_ioda2_table_alloc_pages`) and
//! QEMU's `SpaprTceTable`, and is usable on its own by a VMM.
//!
//! ```
//! use spapr_tce::{Access, Hpa, Iova, PageShift, TableGeometry, TableOptions, Tce, TcePerm, TceTable};
//!
//! // A 1 GiB window of 64K pages at 1<<59, two levels, on a 64K-page host.
//! let g = TableGeometry::ioda2(Iova(1 << 59), PageShift::K64, 1 << 30, 2, 16)?;
//! let table: TceTable<Hpa> = TceTable::new(g, TableOptions::powernv())?;
//! let first = g.first_index();
//! table.set(first, Tce::new(0x2000_0000, TcePerm::READ))?;
//! assert_eq!(table.translate(Iova((1 << 59) + 0x10), Access::Read), Ok(Hpa(0x2000_0010)));
//! assert!(table.translate(Iova((1 << 59) + 0x10), Access::Write).is_err());
//! # Ok::<(), spapr_tce::TceError>(())
//! ```
#![deny(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod addr;
pub mod entry;
pub mod error;
pub mod geometry;
pub mod kill;
#[allow(unsafe_code)]
mod levels;
pub mod model;
pub mod ops;
pub mod page;
pub mod scan;
mod sync;
pub mod table;

pub use addr::{Gpa, Hpa, Iova, Liobn, RealAddress, TceIndex, Ua};
pub use entry::{Access, DmaDirection, Tce, TcePerm};
pub use error::{Fault, GeometryError, TceError};
pub use geometry::{ioda2_table_size, TableGeometry, DEFAULT_LEVELS, MAX_LEVELS, TCE_BYTES};
pub use kill::{KillCounter, NoKill, TceKill};
pub use page::{PageShift, PageSizes};
pub use table::{ClearStats, MappedRun, TableOptions, TceTable, Translator, MAX_BATCH};
