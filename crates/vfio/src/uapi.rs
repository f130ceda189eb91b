//! The ioctl argument structs, byte-exact (include/uapi/linux/vfio.h), using rust-vmm's
//! vfio-bindings for the layouts. User space passes bytes; the kernel copies `minsz` bytes
//! (`copy_from_user`), checks `argsz`, and copies back what it fills. Fields are read and
//! written at their `offset_of!` positions in native byte order, so no `unsafe` is needed.

use iommu_core::Errno;
use std::mem::{offset_of, size_of};
pub use vfio_bindings::bindings::vfio::{
    vfio_iommu_spapr_register_memory as RegisterMemory, vfio_iommu_spapr_tce_create as TceCreate,
    vfio_iommu_spapr_tce_ddw_info as DdwInfo, vfio_iommu_spapr_tce_info as TceInfo,
    vfio_iommu_spapr_tce_remove as TceRemove, vfio_iommu_type1_dma_map as DmaMap,
    VFIO_SPAPR_TCE_v2_IOMMU, VFIO_DMA_MAP_FLAG_READ, VFIO_DMA_MAP_FLAG_WRITE, VFIO_EEH,
    VFIO_IOMMU_SPAPR_INFO_DDW, VFIO_SPAPR_TCE_IOMMU,
};

/// `struct vfio_iommu_type1_dma_unmap` without its flexible array (the bindings' type
/// carries `__IncompleteArrayField` and is not `Copy`); same first 24 bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DmaUnmap {
    /// `argsz`.
    pub argsz: u32,
    /// `flags`.
    pub flags: u32,
    /// `iova`.
    pub iova: u64,
    /// `size`.
    pub size: u64,
}

/// `_IO(VFIO_TYPE, VFIO_BASE + n)`: the ioctl numbers (type ';' = 59).
pub mod ioctl {
    const fn io(nr: u32) -> u32 {
        ((super::super::VFIO_TYPE_CHAR as u32) << 8) | nr
    }
    /// `VFIO_GET_API_VERSION`.
    pub const GET_API_VERSION: u32 = io(100);
    /// `VFIO_CHECK_EXTENSION`.
    pub const CHECK_EXTENSION: u32 = io(101);
    /// `VFIO_SET_IOMMU`.
    pub const SET_IOMMU: u32 = io(102);
    /// `VFIO_GROUP_GET_STATUS`.
    pub const GROUP_GET_STATUS: u32 = io(103);
    /// `VFIO_GROUP_SET_CONTAINER`.
    pub const GROUP_SET_CONTAINER: u32 = io(104);
    /// `VFIO_GROUP_UNSET_CONTAINER`.
    pub const GROUP_UNSET_CONTAINER: u32 = io(105);
    /// `VFIO_GROUP_GET_DEVICE_FD`.
    pub const GROUP_GET_DEVICE_FD: u32 = io(106);
    /// `VFIO_IOMMU_SPAPR_TCE_GET_INFO`.
    pub const SPAPR_TCE_GET_INFO: u32 = io(112);
    /// `VFIO_IOMMU_MAP_DMA`.
    pub const MAP_DMA: u32 = io(113);
    /// `VFIO_IOMMU_UNMAP_DMA`.
    pub const UNMAP_DMA: u32 = io(114);
    /// `VFIO_IOMMU_ENABLE`.
    pub const ENABLE: u32 = io(115);
    /// `VFIO_IOMMU_DISABLE`.
    pub const DISABLE: u32 = io(116);
    /// `VFIO_IOMMU_SPAPR_REGISTER_MEMORY`.
    pub const REGISTER_MEMORY: u32 = io(117);
    /// `VFIO_IOMMU_SPAPR_UNREGISTER_MEMORY`.
    pub const UNREGISTER_MEMORY: u32 = io(118);
    /// `VFIO_IOMMU_SPAPR_TCE_CREATE`.
    pub const TCE_CREATE: u32 = io(119);
    /// `VFIO_IOMMU_SPAPR_TCE_REMOVE`.
    pub const TCE_REMOVE: u32 = io(120);
    /// `VFIO_EEH_PE_OP`.
    pub const EEH_PE_OP: u32 = io(121);

    /// The name of an ioctl number, for traces and scenario files.
    pub fn name(nr: u32) -> Option<&'static str> {
        Some(match nr {
            GET_API_VERSION => "VFIO_GET_API_VERSION",
            CHECK_EXTENSION => "VFIO_CHECK_EXTENSION",
            SET_IOMMU => "VFIO_SET_IOMMU",
            SPAPR_TCE_GET_INFO => "VFIO_IOMMU_SPAPR_TCE_GET_INFO",
            MAP_DMA => "VFIO_IOMMU_MAP_DMA",
            UNMAP_DMA => "VFIO_IOMMU_UNMAP_DMA",
            ENABLE => "VFIO_IOMMU_ENABLE",
            DISABLE => "VFIO_IOMMU_DISABLE",
            REGISTER_MEMORY => "VFIO_IOMMU_SPAPR_REGISTER_MEMORY",
            UNREGISTER_MEMORY => "VFIO_IOMMU_SPAPR_UNREGISTER_MEMORY",
            TCE_CREATE => "VFIO_IOMMU_SPAPR_TCE_CREATE",
            TCE_REMOVE => "VFIO_IOMMU_SPAPR_TCE_REMOVE",
            EEH_PE_OP => "VFIO_EEH_PE_OP",
            _ => return None,
        })
    }
}

fn rd32(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_ne_bytes(w)
}
fn rd64(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_ne_bytes(w)
}
fn wr32(b: &mut [u8], at: usize, v: u32) {
    if let Some(s) = b.get_mut(at..at + 4) {
        s.copy_from_slice(&v.to_ne_bytes());
    }
}
fn wr64(b: &mut [u8], at: usize, v: u64) {
    if let Some(s) = b.get_mut(at..at + 8) {
        s.copy_from_slice(&v.to_ne_bytes());
    }
}

/// An argument struct: its `minsz` (the bytes the kernel copies in) and how to read it.
pub trait Arg: Sized {
    /// `offsetofend` of the last mandatory field.
    const MINSZ: usize;
    /// Reads the first `MINSZ` bytes; -EFAULT if the buffer is shorter (`copy_from_user`
    /// faulting).
    fn read(b: &[u8]) -> Result<Self, Errno> {
        if b.len() < Self::MINSZ {
            return Err(Errno::Efault);
        }
        Ok(Self::decode(b))
    }
    /// Decodes from at least `MINSZ` bytes.
    fn decode(b: &[u8]) -> Self;
    /// `argsz`.
    fn argsz(&self) -> u32;
}

impl Arg for TceInfo {
    const MINSZ: usize = offset_of!(TceInfo, dma32_window_size) + 4;
    fn decode(b: &[u8]) -> Self {
        TceInfo {
            argsz: rd32(b, offset_of!(TceInfo, argsz)),
            flags: rd32(b, offset_of!(TceInfo, flags)),
            ..Default::default()
        }
    }
    fn argsz(&self) -> u32 {
        self.argsz
    }
}

/// Writes GET_INFO's answer: 32 bytes if `argsz` allows, else the first 16.
pub fn write_info(info: &TceInfo, b: &mut [u8]) {
    let full = info.argsz as usize >= size_of::<TceInfo>();
    wr32(b, offset_of!(TceInfo, argsz), info.argsz);
    wr32(b, offset_of!(TceInfo, flags), info.flags);
    wr32(
        b,
        offset_of!(TceInfo, dma32_window_start),
        info.dma32_window_start,
    );
    wr32(
        b,
        offset_of!(TceInfo, dma32_window_size),
        info.dma32_window_size,
    );
    if full {
        let ddw = offset_of!(TceInfo, ddw);
        wr64(b, ddw + offset_of!(DdwInfo, pgsizes), info.ddw.pgsizes);
        wr32(
            b,
            ddw + offset_of!(DdwInfo, max_dynamic_windows_supported),
            info.ddw.max_dynamic_windows_supported,
        );
        wr32(b, ddw + offset_of!(DdwInfo, levels), info.ddw.levels);
    }
}

impl Arg for DmaMap {
    const MINSZ: usize = offset_of!(DmaMap, size) + 8;
    fn decode(b: &[u8]) -> Self {
        DmaMap {
            argsz: rd32(b, offset_of!(DmaMap, argsz)),
            flags: rd32(b, offset_of!(DmaMap, flags)),
            vaddr: rd64(b, offset_of!(DmaMap, vaddr)),
            iova: rd64(b, offset_of!(DmaMap, iova)),
            size: rd64(b, offset_of!(DmaMap, size)),
        }
    }
    fn argsz(&self) -> u32 {
        self.argsz
    }
}

impl Arg for DmaUnmap {
    const MINSZ: usize = 24;
    fn decode(b: &[u8]) -> Self {
        DmaUnmap {
            argsz: rd32(b, 0),
            flags: rd32(b, 4),
            iova: rd64(b, 8),
            size: rd64(b, 16),
        }
    }
    fn argsz(&self) -> u32 {
        self.argsz
    }
}

impl Arg for RegisterMemory {
    const MINSZ: usize = offset_of!(RegisterMemory, size) + 8;
    fn decode(b: &[u8]) -> Self {
        RegisterMemory {
            argsz: rd32(b, offset_of!(RegisterMemory, argsz)),
            flags: rd32(b, offset_of!(RegisterMemory, flags)),
            vaddr: rd64(b, offset_of!(RegisterMemory, vaddr)),
            size: rd64(b, offset_of!(RegisterMemory, size)),
        }
    }
    fn argsz(&self) -> u32 {
        self.argsz
    }
}

impl Arg for TceCreate {
    const MINSZ: usize = offset_of!(TceCreate, start_addr) + 8;
    fn decode(b: &[u8]) -> Self {
        TceCreate {
            argsz: rd32(b, offset_of!(TceCreate, argsz)),
            flags: rd32(b, offset_of!(TceCreate, flags)),
            page_shift: rd32(b, offset_of!(TceCreate, page_shift)),
            window_size: rd64(b, offset_of!(TceCreate, window_size)),
            levels: rd32(b, offset_of!(TceCreate, levels)),
            ..Default::default()
        }
    }
    fn argsz(&self) -> u32 {
        self.argsz
    }
}

/// Writes CREATE's `start_addr` back.
pub fn write_start_addr(b: &mut [u8], start: u64) {
    wr64(b, offset_of!(TceCreate, start_addr), start);
}

impl Arg for TceRemove {
    const MINSZ: usize = offset_of!(TceRemove, start_addr) + 8;
    fn decode(b: &[u8]) -> Self {
        TceRemove {
            argsz: rd32(b, offset_of!(TceRemove, argsz)),
            flags: rd32(b, offset_of!(TceRemove, flags)),
            start_addr: rd64(b, offset_of!(TceRemove, start_addr)),
        }
    }
    fn argsz(&self) -> u32 {
        self.argsz
    }
}

/// Encoders for callers (tests, the simulator): the bytes user space would pass.
pub mod encode {
    use super::*;
    /// GET_INFO's buffer claiming `argsz` bytes (holding at most the 32 the struct has).
    pub fn info(argsz: u32) -> Vec<u8> {
        let len = (argsz as usize).clamp(TceInfo::MINSZ, size_of::<TceInfo>());
        let mut b = vec![0u8; len];
        wr32(&mut b, 0, argsz);
        b
    }
    /// MAP_DMA.
    pub fn map(flags: u32, vaddr: u64, iova: u64, size: u64) -> Vec<u8> {
        let mut b = vec![0u8; size_of::<DmaMap>()];
        wr32(
            &mut b,
            offset_of!(DmaMap, argsz),
            size_of::<DmaMap>() as u32,
        );
        wr32(&mut b, offset_of!(DmaMap, flags), flags);
        wr64(&mut b, offset_of!(DmaMap, vaddr), vaddr);
        wr64(&mut b, offset_of!(DmaMap, iova), iova);
        wr64(&mut b, offset_of!(DmaMap, size), size);
        b
    }
    /// UNMAP_DMA.
    pub fn unmap(flags: u32, iova: u64, size: u64) -> Vec<u8> {
        let mut b = vec![0u8; 24];
        wr32(&mut b, 0, 24);
        wr32(&mut b, 4, flags);
        wr64(&mut b, 8, iova);
        wr64(&mut b, 16, size);
        b
    }
    /// (UN)REGISTER_MEMORY.
    pub fn register(flags: u32, vaddr: u64, size: u64) -> Vec<u8> {
        let mut b = vec![0u8; size_of::<RegisterMemory>()];
        wr32(&mut b, 0, size_of::<RegisterMemory>() as u32);
        wr32(&mut b, 4, flags);
        wr64(&mut b, offset_of!(RegisterMemory, vaddr), vaddr);
        wr64(&mut b, offset_of!(RegisterMemory, size), size);
        b
    }
    /// TCE_CREATE.
    pub fn create(page_shift: u32, window_size: u64, levels: u32) -> Vec<u8> {
        let mut b = vec![0u8; size_of::<TceCreate>()];
        wr32(&mut b, 0, size_of::<TceCreate>() as u32);
        wr32(&mut b, offset_of!(TceCreate, page_shift), page_shift);
        wr64(&mut b, offset_of!(TceCreate, window_size), window_size);
        wr32(&mut b, offset_of!(TceCreate, levels), levels);
        b
    }
    /// TCE_REMOVE.
    pub fn remove(start: u64) -> Vec<u8> {
        let mut b = vec![0u8; size_of::<TceRemove>()];
        wr32(&mut b, 0, size_of::<TceRemove>() as u32);
        wr64(&mut b, offset_of!(TceRemove, start_addr), start);
        b
    }
    /// Sets `argsz` of an encoded buffer.
    pub fn set_argsz(b: &mut [u8], argsz: u32) {
        wr32(b, 0, argsz);
    }
    /// Sets `flags` of an encoded buffer.
    pub fn set_flags(b: &mut [u8], flags: u32) {
        wr32(b, 4, flags);
    }
    /// Reads a u64 field back (CREATE's `start_addr` at 32, GET_INFO's fields).
    pub fn get64(b: &[u8], at: usize) -> u64 {
        rd64(b, at)
    }
    /// Reads a u32 field back.
    pub fn get32(b: &[u8], at: usize) -> u32 {
        rd32(b, at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_match_the_uapi() {
        assert_eq!(size_of::<TceInfo>(), 32);
        assert_eq!(offset_of!(TceInfo, flags), 4);
        assert_eq!(offset_of!(TceInfo, dma32_window_start), 8);
        assert_eq!(offset_of!(TceInfo, dma32_window_size), 12);
        assert_eq!(offset_of!(TceInfo, ddw) + offset_of!(DdwInfo, pgsizes), 16);
        assert_eq!(
            offset_of!(TceInfo, ddw) + offset_of!(DdwInfo, max_dynamic_windows_supported),
            24
        );
        assert_eq!(offset_of!(TceInfo, ddw) + offset_of!(DdwInfo, levels), 28);
        assert_eq!(size_of::<TceCreate>(), 40);
        assert_eq!(offset_of!(TceCreate, page_shift), 8);
        assert_eq!(offset_of!(TceCreate, window_size), 16);
        assert_eq!(offset_of!(TceCreate, levels), 24);
        assert_eq!(offset_of!(TceCreate, start_addr), 32);
        assert_eq!(size_of::<TceRemove>(), 16);
        assert_eq!(offset_of!(TceRemove, start_addr), 8);
        assert_eq!(size_of::<RegisterMemory>(), 24);
        assert_eq!(offset_of!(RegisterMemory, vaddr), 8);
        assert_eq!(offset_of!(RegisterMemory, size), 16);
        assert_eq!(size_of::<DmaMap>(), 32);
        assert_eq!(offset_of!(DmaMap, vaddr), 8);
        assert_eq!(offset_of!(DmaMap, iova), 16);
        assert_eq!(offset_of!(DmaMap, size), 24);
    }

    #[test]
    fn minsz_are_the_kernels() {
        assert_eq!(TceInfo::MINSZ, 16);
        assert_eq!(DmaMap::MINSZ, 32);
        assert_eq!(DmaUnmap::MINSZ, 24);
        assert_eq!(RegisterMemory::MINSZ, 24);
        assert_eq!(TceCreate::MINSZ, 40);
        assert_eq!(TceRemove::MINSZ, 16);
    }

    #[test]
    fn ioctl_numbers_are_io_semicolon_100_plus_n() {
        assert_eq!(ioctl::CHECK_EXTENSION, (59 << 8) | 101);
        assert_eq!(ioctl::SPAPR_TCE_GET_INFO & 0xff, 112);
        assert_eq!(ioctl::TCE_REMOVE & 0xff, 120);
        assert_eq!(ioctl::name(ioctl::MAP_DMA), Some("VFIO_IOMMU_MAP_DMA"));
        assert_eq!(VFIO_SPAPR_TCE_IOMMU, 2);
        assert_eq!(VFIO_SPAPR_TCE_v2_IOMMU, 7);
        assert_eq!(VFIO_EEH, 5);
    }

    #[test]
    fn a_short_buffer_faults_and_encoders_round_trip() {
        assert_eq!(DmaMap::read(&[0u8; 31]).err(), Some(Errno::Efault));
        let m = DmaMap::read(&encode::map(3, 0x1000, 0x2000, 0x3000)).unwrap();
        assert_eq!(
            (m.argsz, m.flags, m.vaddr, m.iova, m.size),
            (32, 3, 0x1000, 0x2000, 0x3000)
        );
        let c = TceCreate::read(&encode::create(16, 1 << 40, 2)).unwrap();
        assert_eq!((c.page_shift, c.window_size, c.levels), (16, 1 << 40, 2));
    }
}
