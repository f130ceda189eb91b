//! The Linux guest's side of dynamic DMA windows (pseries/iommu.c `enable_ddw`, kernel.md
//! 2.8 and papr.md A.10, last paragraph), driven only through what a guest sees: the
//! device tree, RTAS calls through an argument buffer in guest memory (`KVMPPC_H_RTAS`),
//! and the TCE hypercalls. A VMM's test suite runs it against its own [`Spapr`] to check
//! that a real guest gets its 64-bit window; the simulator offers it as a step.
//!
//! What it does, per PHB (the kernel does it per PE; here the PE is the whole PHB):
//! 1. a window made before is reused; a PHB that failed before is not tried again;
//! 2. query, with 6 outputs when extension 2 says so, else 5;
//! 3. no window available: refuse if the default window holds any entry (a driver is using
//!    it), or if there is no reset extension to bring it back; else clear it with
//!    H_STUFF_TCE in 512-entry chunks, remove it and query again;
//! 4. the largest page size the query offers;
//! 5. a window covering all RAM (`order_base_2` of its size), direct-mapped; when the
//!    largest block cannot hold that, a smaller window for the guest's own table instead;
//! 6. create, retrying while RTAS is busy;
//! 7. a direct window is filled 1:1 with H_PUT_TCE_INDIRECT (512 per call, R|W);
//! 8. any failure after the default window was touched removes the new window and resets
//!    the PHB (`ibm,reset-pe-dma-windows`) to get the default window back.

use crate::spapr::Spapr;
use crate::{opcode, HStatus, DDW_PAGE_BITS, MAX_MULTI_TCE};
use std::collections::{BTreeMap, BTreeSet};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

/// Where in guest memory the guest keeps its RTAS argument buffer and its TCE list page
/// (the kernel's `rtas_data_buf` and per-CPU `tce_page`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestScratch {
    /// The RTAS argument buffer (at least 64 bytes).
    pub rtas: u64,
    /// The TCE list page: 4 KiB aligned.
    pub list: u64,
}

/// A window the guest made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DdwWindow {
    /// Its LIOBN.
    pub liobn: u32,
    /// First bus address.
    pub start: u64,
    /// IOMMU page shift.
    pub page_shift: u32,
    /// log2 of the window's size in bytes.
    pub window_shift: u32,
    /// Direct-mapped over all RAM (`linux,direct64-ddr-window-info`), or left to the
    /// guest's own table (`linux,dma64-ddr-window-info`).
    pub direct: bool,
    /// Whether the default window was removed to make room.
    pub removed_default: bool,
}

impl DdwWindow {
    /// The device-tree property the guest kernel records the window under: a direct
    /// window, used for 1:1 DMA, or one left to the guest's IOMMU table.
    pub fn dt_property(&self) -> &'static str {
        if self.direct {
            "linux,direct64-ddr-window-info"
        } else {
            "linux,dma64-ddr-window-info"
        }
    }
}

/// Why the guest got no window.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DdwError {
    /// `disable_ddw` on the kernel command line.
    #[error("DDW disabled on the guest's command line")]
    Disabled,
    /// No such PHB in the device tree.
    #[error("no PHB {0} in the device tree")]
    NoSuchPhb(usize),
    /// The node has no `ibm,ddw-applicable` property.
    #[error("the PHB node has no ibm,ddw-applicable")]
    NotApplicable,
    /// An earlier attempt on this PHB failed (the kernel's `failed_ddw_pdn_list`).
    #[error("an earlier attempt on this PHB failed")]
    FailedBefore,
    /// The scratch pages are not in guest RAM, or the list page is not 4 KiB aligned.
    #[error("the guest's scratch pages are not usable")]
    Scratch,
    /// An RTAS call failed.
    #[error("{call} returned RTAS status {status}")]
    Rtas {
        /// The call.
        call: &'static str,
        /// `rets[0]`.
        status: i32,
    },
    /// A hypercall failed.
    #[error("{call} returned {status}")]
    Hcall {
        /// The hypercall.
        call: &'static str,
        /// r3.
        status: HStatus,
    },
    /// No window is free and the default one is in use (or cannot be brought back).
    #[error("no free window: {0}")]
    NoWindow(&'static str),
    /// The query offers no page size the guest knows.
    #[error("the query offers no usable page size")]
    NoPageSize,
}

/// RTAS statuses that mean "call again" (`rtas_busy_delay`: -2 and 9900..=9905).
fn rtas_busy(status: i32) -> bool {
    status == -2 || (9900..=9905).contains(&status)
}

/// Retries of a busy create before giving up.
const BUSY_RETRIES: u32 = 100;

/// `order_base_2`: the smallest `n` with `2^n >= x` (0 for 0 and 1).
fn order_base_2(x: u64) -> u32 {
    if x <= 1 {
        0
    } else {
        64 - (x - 1).leading_zeros()
    }
}

/// The window the guest asks for: all of RAM (`order_base_2` of its size, at least one
/// page), direct-mapped; or, when the query's largest block of TCEs cannot hold that, as
/// much as it holds, left to the guest's own table. Returns `(window_shift, direct)`.
fn window_size(ram: u64, page_shift: u32, largest_block: u64) -> (u32, bool) {
    let want = order_base_2(ram).max(page_shift);
    let blocks_shift = 63 - largest_block.max(1).leading_zeros();
    if want - page_shift > blocks_shift {
        (page_shift + blocks_shift, false)
    } else {
        (want, true)
    }
}

/// The guest kernel's DDW state: the windows it made and the PHBs that failed.
#[derive(Clone, Debug)]
pub struct LinuxGuestDdw {
    scratch: GuestScratch,
    disabled: bool,
    windows: BTreeMap<u64, DdwWindow>,
    failed: BTreeSet<u64>,
}

/// One PHB's properties, as the guest read them.
struct Node {
    buid: u64,
    default_liobn: u32,
    default_size: u64,
    tokens: [u32; 3],
    reset: Option<u32>,
    six_outputs: bool,
}

impl LinuxGuestDdw {
    /// A guest that keeps its RTAS buffer and TCE list at `scratch`; `disable_ddw` as the
    /// kernel parameter.
    pub fn new(scratch: GuestScratch, disable_ddw: bool) -> Self {
        Self {
            scratch,
            disabled: disable_ddw,
            windows: BTreeMap::new(),
            failed: BTreeSet::new(),
        }
    }

    /// Moves the guest's scratch pages (the kernel state is kept).
    pub fn set_scratch(&mut self, scratch: GuestScratch) {
        self.scratch = scratch;
    }

    /// The window made on the PHB with `buid`, if any.
    pub fn window(&self, buid: u64) -> Option<DdwWindow> {
        self.windows.get(&buid).copied()
    }

    /// Whether an attempt on the PHB with `buid` failed.
    pub fn failed(&self, buid: u64) -> bool {
        self.failed.contains(&buid)
    }

    /// `enable_ddw` for a device at config address `cfg` (`(bus << 16) | (devfn << 8)`)
    /// under device-tree PHB `phb`, for a guest of `ram` bytes: the window, made or
    /// reused. A failure is remembered for the PHB and, once the default window was
    /// touched, undone with a reset.
    pub fn enable_ddw<M: GuestMemoryBackend>(
        &mut self,
        s: &Spapr,
        mem: &M,
        phb: usize,
        cfg: u32,
        ram: u64,
    ) -> Result<DdwWindow, DdwError> {
        if self.disabled {
            return Err(DdwError::Disabled);
        }
        let dt = s.device_tree();
        let p = dt.phbs.get(phb).ok_or(DdwError::NoSuchPhb(phb))?;
        if let Some(w) = self.windows.get(&p.buid) {
            return Ok(*w);
        }
        if self.failed.contains(&p.buid) {
            return Err(DdwError::FailedBefore);
        }
        if !mem.check_range(GuestAddress(self.scratch.rtas), 64)
            || self.scratch.list & 0xfff != 0
            || !mem.check_range(GuestAddress(self.scratch.list), 4096)
        {
            return Err(DdwError::Scratch);
        }
        let result = match p.ddw_applicable {
            None => Err(DdwError::NotApplicable),
            Some(tokens) => {
                let ext = p.ddw_extensions.unwrap_or([0; 3]);
                let node = Node {
                    buid: p.buid,
                    default_liobn: p.dma_window[0],
                    default_size: (u64::from(p.dma_window[3]) << 32) | u64::from(p.dma_window[4]),
                    tokens,
                    reset: (ext[0] >= 1).then_some(ext[1]),
                    six_outputs: ext[0] >= 2 && ext[2] == 1,
                };
                self.make(s, mem, &node, cfg, ram)
            }
        };
        match result {
            Ok(w) => {
                self.windows.insert(p.buid, w);
                Ok(w)
            }
            Err(e) => {
                self.failed.insert(p.buid);
                Err(e)
            }
        }
    }

    /// Steps 2 to 8: query; make room by removing an unused default window if need be;
    /// open the window. Once the default window is removed, any failure resets the PHB,
    /// here and only here.
    fn make<M: GuestMemoryBackend>(
        &self,
        s: &Spapr,
        mem: &M,
        n: &Node,
        cfg: u32,
        ram: u64,
    ) -> Result<DdwWindow, DdwError> {
        let q = self.query(s, mem, n, cfg)?;
        if q[1] != 0 {
            return self.open_window(s, mem, n, cfg, ram, &q);
        }
        let Some(reset) = n.reset else {
            return Err(DdwError::NoWindow(
                "no reset extension to restore the default",
            ));
        };
        if self.default_in_use(s, mem, n)? {
            return Err(DdwError::NoWindow("the default window is in use"));
        }
        self.clear_default(s, mem, n)?;
        let [_, _, remove] = n.tokens;
        let opened = self
            .rtas(
                s,
                mem,
                "ibm,remove-pe-dma-window",
                remove,
                &[n.default_liobn],
                1,
            )
            .and_then(|_| self.query(s, mem, n, cfg))
            .and_then(|q| {
                if q[1] == 0 {
                    Err(DdwError::NoWindow("none free after removing the default"))
                } else {
                    self.open_window(s, mem, n, cfg, ram, &q)
                }
            });
        match opened {
            Ok(w) => Ok(DdwWindow {
                removed_default: true,
                ..w
            }),
            Err(e) => {
                let args = [cfg, (n.buid >> 32) as u32, n.buid as u32];
                let _ = self.rtas(s, mem, "ibm,reset-pe-dma-windows", reset, &args, 1);
                Err(e)
            }
        }
    }

    /// `ibm,query-pe-dma-window`, with 6 outputs when the extension says so.
    fn query<M: GuestMemoryBackend>(
        &self,
        s: &Spapr,
        mem: &M,
        n: &Node,
        cfg: u32,
    ) -> Result<Vec<u32>, DdwError> {
        let args = [cfg, (n.buid >> 32) as u32, n.buid as u32];
        let nret = if n.six_outputs { 6 } else { 5 };
        self.rtas(s, mem, "ibm,query-pe-dma-window", n.tokens[0], &args, nret)
    }

    /// Steps 4 to 7 with a free slot (`q` is its query): page size, window size, create
    /// (retrying while busy), direct map. A failed direct map removes the new window.
    fn open_window<M: GuestMemoryBackend>(
        &self,
        s: &Spapr,
        mem: &M,
        n: &Node,
        cfg: u32,
        ram: u64,
        q: &[u32],
    ) -> Result<DdwWindow, DdwError> {
        let [_, create, remove] = n.tokens;
        let (largest, mask) = if n.six_outputs {
            ((u64::from(q[2]) << 32) | u64::from(q[3]), q[4])
        } else {
            (u64::from(q[2]), q[3])
        };
        let page_shift = DDW_PAGE_BITS
            .iter()
            .filter(|(_, bit)| mask & bit != 0)
            .map(|(shift, _)| *shift)
            .max()
            .ok_or(DdwError::NoPageSize)?;
        let (window_shift, direct) = window_size(ram, page_shift, largest);
        let args = [
            cfg,
            (n.buid >> 32) as u32,
            n.buid as u32,
            page_shift,
            window_shift,
        ];
        let mut made = self.rtas(s, mem, "ibm,create-pe-dma-window", create, &args, 4);
        for _ in 0..BUSY_RETRIES {
            match &made {
                Err(DdwError::Rtas { status, .. }) if rtas_busy(*status) => {
                    made = self.rtas(s, mem, "ibm,create-pe-dma-window", create, &args, 4);
                }
                _ => break,
            }
        }
        let made = made?;
        let w = DdwWindow {
            liobn: made[1],
            start: (u64::from(made[2]) << 32) | u64::from(made[3]),
            page_shift,
            window_shift,
            direct,
            removed_default: false,
        };
        if direct {
            if let Err(e) = self.direct_map(s, mem, &w, ram) {
                let _ = self.rtas(s, mem, "ibm,remove-pe-dma-window", remove, &[w.liobn], 1);
                return Err(e);
            }
        }
        Ok(w)
    }

    /// Runs one RTAS call through the argument buffer; its rets, or the failure.
    fn rtas<M: GuestMemoryBackend>(
        &self,
        s: &Spapr,
        mem: &M,
        call: &'static str,
        token: u32,
        args: &[u32],
        nret: u32,
    ) -> Result<Vec<u32>, DdwError> {
        let (st, rets) = s
            .rtas_through_buffer(mem, self.scratch.rtas, token, args, nret)
            .ok_or(DdwError::Scratch)?;
        if st != HStatus::Success {
            return Err(DdwError::Hcall {
                call: "KVMPPC_H_RTAS",
                status: st,
            });
        }
        match rets.first() {
            Some(0) => Ok(rets),
            Some(st) => Err(DdwError::Rtas {
                call,
                status: *st as i32,
            }),
            None => Err(DdwError::Scratch),
        }
    }

    /// Whether any entry of the default window is set (the kernel asks its allocator; a
    /// guest that maps only through its allocator has set exactly those entries).
    fn default_in_use<M: GuestMemoryBackend>(
        &self,
        s: &Spapr,
        mem: &M,
        n: &Node,
    ) -> Result<bool, DdwError> {
        let liobn = u64::from(n.default_liobn);
        // The default window uses 4K pages (`ibm,dma-window` carries no page size).
        for i in 0..n.default_size >> 12 {
            let (st, v) = s.hcall(mem, opcode::H_GET_TCE, [liobn, i << 12, 0, 0], false);
            match (st, v) {
                (HStatus::Success, Some(0)) => {}
                (HStatus::Success, _) | (HStatus::Partial, _) => return Ok(true),
                (status, _) => {
                    return Err(DdwError::Hcall {
                        call: "H_GET_TCE",
                        status,
                    })
                }
            }
        }
        Ok(false)
    }

    /// Clears the default window with H_STUFF_TCE, 512 entries per call.
    fn clear_default<M: GuestMemoryBackend>(
        &self,
        s: &Spapr,
        mem: &M,
        n: &Node,
    ) -> Result<(), DdwError> {
        let entries = n.default_size >> 12;
        let mut i = 0;
        while i < entries {
            let k = (entries - i).min(MAX_MULTI_TCE);
            let args = [u64::from(n.default_liobn), i << 12, 0, k];
            let (st, _) = s.hcall(mem, opcode::H_STUFF_TCE, args, false);
            if st != HStatus::Success {
                return Err(DdwError::Hcall {
                    call: "H_STUFF_TCE",
                    status: st,
                });
            }
            i += k;
        }
        Ok(())
    }

    /// Maps all RAM 1:1 into a direct window, 512 TCEs per H_PUT_TCE_INDIRECT.
    fn direct_map<M: GuestMemoryBackend>(
        &self,
        s: &Spapr,
        mem: &M,
        w: &DdwWindow,
        ram: u64,
    ) -> Result<(), DdwError> {
        let pages = ram.div_ceil(1 << w.page_shift);
        let mut done = 0;
        while done < pages {
            let k = (pages - done).min(MAX_MULTI_TCE);
            for j in 0..k {
                let tce = ((done + j) << w.page_shift) | 3;
                mem.write_obj(tce.to_be(), GuestAddress(self.scratch.list + 8 * j))
                    .map_err(|_| DdwError::Scratch)?;
            }
            let args = [
                u64::from(w.liobn),
                w.start + (done << w.page_shift),
                self.scratch.list,
                k,
            ];
            let (st, _) = s.hcall(mem, opcode::H_PUT_TCE_INDIRECT, args, false);
            if st != HStatus::Success {
                return Err(DdwError::Hcall {
                    call: "H_PUT_TCE_INDIRECT",
                    status: st,
                });
            }
            done += k;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_is_recorded_under_the_kernel_property() {
        let mut w = DdwWindow {
            liobn: 1,
            start: 0,
            page_shift: 16,
            window_shift: 30,
            direct: true,
            removed_default: false,
        };
        assert_eq!(w.dt_property(), "linux,direct64-ddr-window-info");
        w.direct = false;
        assert_eq!(w.dt_property(), "linux,dma64-ddr-window-info");
    }

    #[test]
    fn order_base_2_rounds_up() {
        assert_eq!(order_base_2(0), 0);
        assert_eq!(order_base_2(1), 0);
        assert_eq!(order_base_2(2), 1);
        assert_eq!(order_base_2(3), 2);
        assert_eq!(order_base_2(64 << 20), 26);
        assert_eq!(order_base_2((64 << 20) + 1), 27);
        assert_eq!(order_base_2(u64::MAX), 64);
    }

    #[test]
    fn the_window_covers_ram_unless_the_largest_block_is_too_small() {
        // 64 MiB of 16M pages: 4 TCEs, QEMU's block of 2^31 holds them.
        assert_eq!(window_size(64 << 20, 24, 0x8000_0000), (26, true));
        // RAM smaller than a page: one page.
        assert_eq!(window_size(4096, 24, 0x8000_0000), (24, true));
        // 1 TiB of 4K pages needs 2^28 TCEs; a block of 2^20 gives a 4 GiB table window.
        assert_eq!(window_size(1 << 40, 12, 1 << 20), (32, false));
        // A block that is not a power of two counts by its largest power of two.
        assert_eq!(window_size(1 << 40, 12, (1 << 20) + 5), (32, false));
        // No block at all: one page, not direct.
        assert_eq!(window_size(1 << 30, 16, 0), (16, false));
    }
}
