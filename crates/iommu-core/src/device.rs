//! Buses and devices (`struct bus_type`, `struct device`).

use core::fmt;

/// A device's handle in one [`crate::Core`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId(pub usize);

/// The bus types the core probes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BusType {
    /// PCI.
    Pci,
    /// Platform devices (no PCI address).
    Platform,
    /// pSeries VIO.
    Vio,
}

/// Where a device sits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeviceAddr {
    /// A PCI function: PCI domain (PHB number), bus, device/function.
    Pci {
        /// PCI domain (one per PHB on POWER).
        domain: u32,
        /// Bus number.
        bus: u8,
        /// Device and function (`devfn`).
        devfn: u8,
    },
    /// A platform device, by index.
    Platform(u32),
    /// A VIO device, by its `reg` (its LIOBN on pSeries).
    Vio(u32),
}

impl DeviceAddr {
    /// The bus the device is on.
    pub fn bus(&self) -> BusType {
        match self {
            DeviceAddr::Pci { .. } => BusType::Pci,
            DeviceAddr::Platform(_) => BusType::Platform,
            DeviceAddr::Vio(_) => BusType::Vio,
        }
    }
    /// The PCI BDFN (`bus << 8 | devfn`), for PCI devices.
    pub fn bdfn(&self) -> Option<u16> {
        match self {
            DeviceAddr::Pci { bus, devfn, .. } => Some((u16::from(*bus) << 8) | u16::from(*devfn)),
            _ => None,
        }
    }
}

impl fmt::Display for DeviceAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceAddr::Pci { domain, bus, devfn } => {
                write!(f, "{domain:04x}:{bus:02x}:{:02x}.{}", devfn >> 3, devfn & 7)
            }
            DeviceAddr::Platform(i) => write!(f, "platform.{i}"),
            DeviceAddr::Vio(r) => write!(f, "vio.{r:x}"),
        }
    }
}

/// What the core knows of a device when it is added.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    /// A name for people ("nic0", "nvme0").
    pub name: String,
    /// Its address.
    pub addr: DeviceAddr,
}

impl DeviceInfo {
    /// A PCI function.
    pub fn pci(name: &str, domain: u32, bus: u8, devfn: u8) -> Self {
        Self {
            name: name.to_string(),
            addr: DeviceAddr::Pci { domain, bus, devfn },
        }
    }
    /// A platform device.
    pub fn platform(name: &str, index: u32) -> Self {
        Self {
            name: name.to_string(),
            addr: DeviceAddr::Platform(index),
        }
    }
}

/// A bound driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DriverBinding {
    /// Driver name.
    pub name: String,
    /// `driver_managed_dma`: VFIO-style drivers manage DMA themselves and do not use the
    /// default domain (their bind does not count towards `owner_cnt`).
    pub driver_managed_dma: bool,
}
