//! A scatter list as the kernel DMA API takes it (`struct scatterlist`): each entry a
//! buffer in real memory and, beside it, the bus address `dma_map_sg` gives it
//! (`sg_dma_address`). The map writes the addresses into the list in place, as
//! `ppc_iommu_map_sg` does, so a map allocates nothing; the unmap reads them back.
//!
//! The bus address is set only by [`crate::DmaSession::map_sg`] and cleared only by
//! [`crate::DmaSession::unmap_sg`] (the field is private): a list cannot be mapped twice
//! (which would leak the first mapping) nor unmapped with an address the map did not give.

/// One entry of a scatter list: `len` bytes at real address `phys`, and the bus address
/// the map gave it (`None` while unmapped).
///
/// Neither `Copy` nor `Clone`: a mapped entry stands for its TCEs, and a copy kept past
/// the unmap could unmap them again after the allocator had handed them to someone else
/// (found by review). Each mapped address lives in exactly one entry:
///
/// ```compile_fail,E0599
/// let e = spapr_platform::SgEntry::new(0x1000, 0x1000);
/// let copy = e.clone();
/// ```
///
/// ```compile_fail,E0382
/// let e = spapr_platform::SgEntry::new(0x1000, 0x1000);
/// let moved = e;
/// let again = e;
/// ```
#[derive(Debug, PartialEq, Eq)]
pub struct SgEntry {
    phys: u64,
    len: u64,
    dma: Option<u64>,
}

impl SgEntry {
    /// An unmapped entry for `len` bytes at `phys` (`sg_set_page`).
    pub const fn new(phys: u64, len: u64) -> Self {
        Self {
            phys,
            len,
            dma: None,
        }
    }

    /// The buffer's real address.
    pub fn phys(&self) -> u64 {
        self.phys
    }

    /// The buffer's length in bytes (also its DMA length: segments are not merged).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the buffer is empty (a map refuses it).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bus address the map gave (`sg_dma_address`), `None` while unmapped.
    pub fn dma_address(&self) -> Option<u64> {
        self.dma
    }

    pub(crate) fn set_dma(&mut self, dma: Option<u64>) {
        self.dma = dma;
    }
}
