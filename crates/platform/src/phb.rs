//! PCI host bridges (`struct pci_controller`, the "hose"): model, page sizes, PEs and the
//! device → PE map behind the controller's `device_group` callback.

use crate::pe::{Pe, PeScope, TableGroupOps};
use spapr_tce::PageSizes;
use std::sync::Arc;

/// PHB generations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PhbModel {
    /// POWER8 PHB3 (IODA2): 4K, 64K, 16M, 256M pages.
    Phb3,
    /// POWER9 PHB4 (IODA2): 4K, 64K, 2M, 1G pages.
    Phb4,
    /// P7IOC (IODA1): one 4K table per PE, lent through the borrowing ops, no DDW.
    Ioda1,
}

impl PhbModel {
    /// `pgsizes` of its PEs.
    pub fn page_sizes(self) -> PageSizes {
        match self {
            PhbModel::Phb3 => PageSizes::PHB3,
            PhbModel::Phb4 => PageSizes::PHB4,
            PhbModel::Ioda1 => PageSizes::K4_ONLY,
        }
    }
    /// Its table-group ops.
    pub fn table_group_ops(self) -> TableGroupOps {
        match self {
            PhbModel::Phb3 | PhbModel::Phb4 => TableGroupOps::Ioda2,
            PhbModel::Ioda1 => TableGroupOps::Borrowing,
        }
    }
    /// Name for people.
    pub fn name(self) -> &'static str {
        match self {
            PhbModel::Phb3 => "PHB3",
            PhbModel::Phb4 => "PHB4",
            PhbModel::Ioda1 => "IODA1",
        }
    }
}

/// How a PHB is described.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PhbConfig {
    /// Generation.
    pub model: PhbModel,
    /// `m32_pci_base`: where the 32-bit MMIO region starts, so the VFIO-visible size of
    /// window 0 (`tce32_size`).
    pub m32_pci_base: u64,
    /// Its PEs: number and scope.
    pub pes: Vec<(u32, PeScope)>,
    /// Whether `controller_ops.device_group` is set (absent → -ENOENT at probe).
    pub device_group_callback: bool,
    /// `tce32_size` when it is not `m32_pci_base` (0: a PHB whose 32-bit DMA window is
    /// empty; VFIO v1 ENABLE is then -EPERM).
    pub tce32_size: Option<u64>,
    /// Whether the kernel's tables implement `xchg_no_kill`; without it
    /// `iommu_take_ownership` refuses a borrowing PE's tables (-EINVAL), so no user can
    /// claim its group.
    pub xchg_no_kill: bool,
    /// Which `create_table` the PEs' table-group ops carry: VFIO refuses to put groups
    /// whose ops differ in one container (-EPERM).
    pub create_table: CreateTable,
    /// IODA1 only: each PE also gets a second kernel table in `tables[1]`, a flat table
    /// over RAM at the 64-bit base that its 64-bit devices map through (pSeries'
    /// table-backed DDW); taking ownership takes both.
    pub ddw_table: bool,
}

/// A `table_group->ops->create_table` implementation, as VFIO compares them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CreateTable {
    /// `pnv_pci_ioda2_create_table_userspace`.
    #[default]
    Ioda2,
    /// The NVLink NPU's (`pnv_npu_peers_create_table_userspace`, v4.19..v5.12): IODA2
    /// tables, another function.
    NpuPeers,
}

impl CreateTable {
    /// The name in scenario files.
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "ioda2" => Some(CreateTable::Ioda2),
            "npu" => Some(CreateTable::NpuPeers),
            _ => None,
        }
    }
}

impl PhbConfig {
    /// A PHB of `model` with the usual 2 GiB 32-bit window and the given PEs.
    pub fn new(model: PhbModel, pes: Vec<(u32, PeScope)>) -> Self {
        Self {
            model,
            m32_pci_base: 0x8000_0000,
            pes,
            device_group_callback: true,
            tce32_size: None,
            xchg_no_kill: true,
            create_table: CreateTable::Ioda2,
            ddw_table: false,
        }
    }
}

/// One PHB.
#[derive(Debug)]
pub struct Phb {
    /// Global index (`hose->global_number`).
    pub index: u32,
    /// PCI domain (= index).
    pub pci_domain: u32,
    /// Description.
    pub config: PhbConfig,
    /// Its PEs.
    pub pes: Vec<Arc<Pe>>,
    /// The PHB PE's EEH state, shared with each PE: taken after a PE's EEH lock when both
    /// are held, nothing but the leaves (EEH flags, injection list, notes) under it.
    pub(crate) eeh: Arc<crate::eeh::EehMutex<crate::eeh::PhbEehState>>,
}

impl Phb {
    /// Locks the PHB PE's EEH state.
    pub(crate) fn eeh_lock(&self) -> crate::eeh::EehGuard<'_, crate::eeh::PhbEehState> {
        self.eeh.lock().unwrap_or_else(|p| p.into_inner())
    }
    /// The PE of `bdfn`: a device PE first, else the bus PE.
    pub fn pe_for(&self, bdfn: u16) -> Option<Arc<Pe>> {
        self.pes
            .iter()
            .find(|p| matches!(p.scope, PeScope::Device(d) if d == bdfn))
            .or_else(|| self.pes.iter().find(|p| p.scope.covers(bdfn)))
            .cloned()
    }
    /// The `iommu_device` name: `iommu-phb%04x`.
    pub fn iommu_name(&self) -> String {
        format!("iommu-phb{:04x}", self.index)
    }
}
