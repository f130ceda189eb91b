//! The device-tree properties a guest needs to find its DMA windows and the calls that
//! manage them, as data a VMM writes into its FDT (QEMU `spapr_pci.c`, `spapr.c`).

use crate::spapr::Spapr;
use crate::token;

/// One PHB node's DMA properties.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PhbNode {
    /// Node name: `pci@<buid hex>`.
    pub name: String,
    /// `reg` (the BUID).
    pub buid: u64,
    /// `ibm,dma-window`: LIOBN, 2 address cells, 2 size cells.
    pub dma_window: [u32; 5],
    /// `ibm,ddw-applicable`: query, create, remove tokens (absent without DDW).
    pub ddw_applicable: Option<[u32; 3]>,
    /// `ibm,ddw-extensions`: count, reset token, 1 = query has 6 outputs.
    pub ddw_extensions: Option<[u32; 3]>,
}

/// What the VMM writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceTree {
    /// `ibm,hypertas-functions` entries this library serves.
    pub hypertas_functions: Vec<&'static str>,
    /// PHB nodes.
    pub phbs: Vec<PhbNode>,
    /// VIO nodes: (`reg`, `ibm,my-dma-window` cells).
    pub vio: Vec<(u32, [u32; 5])>,
    /// The `/rtas` EEH properties QEMU writes unconditionally: (name, token).
    pub rtas_eeh_tokens: Vec<(&'static str, u32)>,
}

fn window_cells(liobn: u32, addr: u64, size: u64) -> [u32; 5] {
    [
        liobn,
        (addr >> 32) as u32,
        addr as u32,
        (size >> 32) as u32,
        size as u32,
    ]
}

impl Spapr {
    /// The properties, as they must be at boot.
    pub fn device_tree(&self) -> DeviceTree {
        DeviceTree {
            hypertas_functions: vec!["hcall-tce", "hcall-multi-tce"],
            rtas_eeh_tokens: crate::eeh::token::ALL.to_vec(),
            phbs: self
                .phbs()
                .iter()
                .map(|p| PhbNode {
                    name: format!("pci@{:x}", p.buid),
                    buid: p.buid,
                    dma_window: window_cells(
                        crate::spapr::pci_liobn(p.config.index, 0),
                        p.config.dma_win_addr,
                        p.config.dma_win_size,
                    ),
                    ddw_applicable: p.config.ddw.then_some([
                        token::QUERY,
                        token::CREATE,
                        token::REMOVE,
                    ]),
                    ddw_extensions: p.config.ddw.then_some([2, token::RESET, 1]),
                })
                .collect(),
            vio: self
                .vio()
                .iter()
                .map(|v| {
                    (
                        v.config.reg,
                        window_cells(v.config.reg, 0, v.config.window_size),
                    )
                })
                .collect(),
        }
    }
}
