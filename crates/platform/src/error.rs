//! Why a machine description or a platform call was refused: one variant per rule, each
//! mapped to the errno the kernel would return by [`PlatformError::errno`].

use iommu_core::Errno;

/// A refusal of the platform (machine description, hot-add, boot-time scan).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlatformError {
    /// RAM outside what the model supports.
    #[error("ram_size {0:#x} is not between 1 MiB and 64 TiB")]
    RamSize(u64),
    /// A host page size other than 4K or 64K.
    #[error("host_page_shift {0} is not 12 (4K) or 16 (64K)")]
    HostPageShift(u32),
    /// More PHBs than PCI domains the model numbers.
    #[error("{0} PHBs: at most 256")]
    TooManyPhbs(usize),
    /// A PHB's 32-bit MMIO base outside (0, 4G].
    #[error("phb {phb}: m32_pci_base {base:#x} not in (0, 4G]")]
    M32Base {
        /// The PHB.
        phb: usize,
        /// The base given.
        base: u64,
    },
    /// A PE number beyond the PHB's 4096.
    #[error("phb {phb}: PE number {pe} is not below 4096")]
    PeNumber {
        /// The PHB.
        phb: usize,
        /// The PE number.
        pe: u32,
    },
    /// A PE defined twice.
    #[error("phb {phb}: PE {pe} defined twice")]
    PeTwice {
        /// The PHB.
        phb: usize,
        /// The PE number.
        pe: u32,
    },
    /// A device name used twice (or an existing device's name on hot-add).
    #[error("device name {0:?} used twice")]
    NameTwice(String),
    /// A device address used twice.
    #[error("device {0:?}: address used twice")]
    AddressTwice(String),
    /// A device on a PHB that does not exist.
    #[error("device {name:?}: no PHB {phb}")]
    NoPhb {
        /// The device.
        name: String,
        /// The PHB index given.
        phb: u32,
    },
    /// A DMA mask the kernel's drivers do not set.
    #[error("device {name:?}: dma_mask_bits {bits} not in 32..=64")]
    DmaMask {
        /// The device.
        name: String,
        /// The width given.
        bits: u32,
    },
    /// No PE covers the device: it gets no DMA.
    #[error("no PE covers it: no DMA")]
    NoPe,
    /// Hot-added before the PCI bus was scanned: queued for `pcibios_init`.
    #[error("queued: the PCI bus is scanned at pcibios_init")]
    Queued,
    /// `pcibios_init` ran before `iommu_subsys_init`: the device has no group.
    #[error("iommu core not ready: no group")]
    CoreNotReady,
    /// No iommu_device is registered for its PHB: the device has no group.
    #[error("no iommu device registered: no group")]
    NoIommuDevice,
    /// The legacy path found no group for the PE.
    #[error("no group")]
    NoGroup,
    /// `iommu_add_device` failed.
    #[error("iommu_add_device: {0}")]
    AddDevice(Errno),
    /// `iommu_group_add_device` failed.
    #[error("iommu_group_add_device: {0}")]
    GroupAddDevice(Errno),
}

impl PlatformError {
    /// The errno the kernel returns for it.
    pub fn errno(&self) -> Errno {
        match self {
            PlatformError::NameTwice(_) | PlatformError::AddressTwice(_) => Errno::Eexist,
            PlatformError::NoPhb { .. } | PlatformError::NoPe | PlatformError::NoGroup => {
                Errno::Enodev
            }
            PlatformError::Queued => Errno::Eagain,
            PlatformError::CoreNotReady | PlatformError::NoIommuDevice => Errno::Enodev,
            PlatformError::AddDevice(e) | PlatformError::GroupAddDevice(e) => *e,
            _ => Errno::Einval,
        }
    }
}
