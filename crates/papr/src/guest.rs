//! The Linux guest's side of dynamic DMA windows (pseries/iommu.c `enable_ddw`, kernel.md
//! 2.8 and papr.md A.10, last paragraph), driven only through what a guest sees: the
//! device tree, RTAS calls through an argument buffer in guest memory (`KVMPPC_H_RTAS`),
//! and the TCE hypercalls. A VMM's test suite runs it against its own [`Spapr`] to check
//! that a real guest gets its 64-bit window (and can watch every call it makes with an
//! observer); the simulator offers it as a step.
//!
//! What it does, per PHB (the kernel does it per PE; here the PE is the whole PHB):
//! 1. a window made before is reused; a PHB that failed before is not tried again;
//! 2. query, with 6 outputs when extension 2 says so, else 5;
//! 3. no window available: refuse if the guest's own allocator holds pages of the
//!    default window (`iommu_table_in_use`: the allocator's view, never a sweep of the
//!    entries), or if there is no reset extension to bring it back; else clear it with
//!    H_STUFF_TCE in 512-entry chunks (`clean_dma_window`), remove it and query again;
//! 4. the largest page size the query offers (`iommu_get_page_shift`);
//! 5. the window: `order_base_2` of the most memory the guest may have (hot-pluggable
//!    included, `ddw_memory_hotplug_max`), direct-mapped; when the largest block (rounded
//!    up, `order_base_2(largest << page_shift)`, and capped by the DMA mask) is smaller,
//!    a window of that size for the guest's own table instead;
//! 6. create, retrying while RTAS is busy;
//! 7. a direct window gets 1:1 TCEs (R|W) for present RAM only, range by range
//!    (`walk_system_ram_range`), 512 per H_PUT_TCE_INDIRECT; a table-backed window is
//!    cleared first, as `iommu_init_table` clears a new table;
//! 8. a failed direct map clears the new window with H_STUFF_TCE before removing it; any
//!    failure after the default window was removed resets the PHB
//!    (`ibm,reset-pe-dma-windows`) to get the default window back.
//!
//! Where this differs from Linux: a busy create is retried at most [`BUSY_RETRIES`] times
//! (Linux retries for as long as RTAS says busy).

use crate::spapr::Spapr;
use crate::{opcode, HStatus, DDW_PAGE_BITS, MAX_MULTI_TCE};
use std::collections::{BTreeMap, BTreeSet};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

/// Where in guest memory the guest keeps its RTAS argument buffer and its TCE list page
/// (the kernel's `rtas_data_buf` and per-CPU `tce_page`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestScratch {
    /// The RTAS argument buffer (at least 64 bytes).
    pub rtas: u64,
    /// The TCE list page: 4 KiB aligned.
    pub list: u64,
}

/// What one `enable_ddw` is asked for: the device, and what the guest kernel believes of
/// its memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DdwRequest {
    /// Device-tree PHB (position in [`Spapr::phbs`]).
    pub phb: usize,
    /// The device's config address, `(bus << 16) | (devfn << 8)`.
    pub cfg: u32,
    /// The most memory the guest may have, hot-pluggable included
    /// (`ddw_memory_hotplug_max`): the window is sized from it.
    pub max_memory: u64,
    /// Present RAM as `(start, length)` ranges (the guest's memory nodes): what a direct
    /// window maps.
    pub present: Vec<(u64, u64)>,
    /// The device's DMA mask (`fls64` of it caps the window).
    pub dma_mask: u64,
}

impl DdwRequest {
    /// A 64-bit device on PHB `phb` of a guest with `ram` bytes of RAM from 0 and nothing
    /// hot-pluggable.
    pub fn new(phb: usize, cfg: u32, ram: u64) -> Self {
        Self {
            phb,
            cfg,
            max_memory: ram,
            present: vec![(0, ram)],
            dma_mask: u64::MAX,
        }
    }
    /// A 64-bit device on PHB `phb` of a guest whose present RAM is `mem`'s regions and
    /// whose largest memory is where the last one ends.
    pub fn for_memory<M: GuestMemoryBackend>(phb: usize, cfg: u32, mem: &M) -> Self {
        let present: Vec<(u64, u64)> = mem.iter().map(|r| (r.start_addr().0, r.len())).collect();
        let max_memory = present.iter().map(|(a, l)| a + l).max().unwrap_or(0);
        Self {
            phb,
            cfg,
            max_memory,
            present,
            dma_mask: u64::MAX,
        }
    }
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
    /// Direct-mapped over present RAM (`linux,direct64-ddr-window-info`), or left to the
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

/// Why the guest got no window (or a default-window mapping failed).
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
    /// The guest's allocator has no free run of that many pages in the default window.
    #[error("no {0} free pages in the default window")]
    DefaultWindowFull(u64),
}

/// One call the guest kernel made, as an observer sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestCall<'a> {
    /// A TCE hypercall: its name, argument registers and answer.
    Hcall {
        /// `H_STUFF_TCE`, `H_PUT_TCE_INDIRECT`, `H_PUT_TCE`.
        name: &'static str,
        /// r4 to r7.
        args: [u64; 4],
        /// r3.
        status: HStatus,
    },
    /// An RTAS call through the argument buffer: its name, token, arguments and the
    /// return words read back (empty if the hypercall itself failed).
    Rtas {
        /// `ibm,query-pe-dma-window`, ...
        name: &'static str,
        /// Its token.
        token: u32,
        /// The argument words.
        args: &'a [u32],
        /// The return words.
        rets: &'a [u32],
    },
}

/// RTAS statuses that mean "call again" (`rtas_busy_delay`: -2 and 9900..=9905).
fn rtas_busy(status: i32) -> bool {
    status == -2 || (9900..=9905).contains(&status)
}

/// Retries of a busy create before giving up (Linux has no limit).
pub const BUSY_RETRIES: u32 = 100;

/// `order_base_2`: the smallest `n` with `2^n >= x` (0 for 0 and 1).
fn order_base_2(x: u128) -> u32 {
    if x <= 1 {
        0
    } else {
        128 - (x - 1).leading_zeros()
    }
}

/// `fls64`: the number of bits up to the highest set one (0 for 0).
fn fls64(x: u64) -> u32 {
    64 - x.leading_zeros()
}

/// The window the guest asks for (`enable_ddw`): `order_base_2` of the largest memory,
/// direct-mapped; or, when the largest block of TCEs (rounded up to a power of two, in
/// bytes) or the DMA mask allows less, that much, left to the guest's own table. Returns
/// `(window_shift, direct)`.
fn window_size(max_memory: u64, page_shift: u32, largest_block: u64, dma_mask: u64) -> (u32, bool) {
    let max_ram_len = order_base_2(u128::from(max_memory));
    let ddw_sz = order_base_2(u128::from(largest_block) << page_shift).min(fls64(dma_mask));
    if ddw_sz < max_ram_len {
        (ddw_sz, false)
    } else {
        (max_ram_len, true)
    }
}

/// The guest kernel's DDW state: the windows it made, the PHBs that failed, and its
/// allocator's view of each default window (the pages its drivers hold).
#[derive(Clone, Debug)]
pub struct LinuxGuestDdw {
    scratch: GuestScratch,
    disabled: bool,
    windows: BTreeMap<u64, DdwWindow>,
    failed: BTreeSet<u64>,
    default_pages: BTreeMap<u64, BTreeSet<u64>>,
}

/// One PHB's properties, as the guest read them.
struct Node {
    buid: u64,
    default_liobn: u32,
    default_start: u64,
    default_size: u64,
    tokens: [u32; 3],
    reset: Option<u32>,
    six_outputs: bool,
}

impl Node {
    fn of(s: &Spapr, phb: usize) -> Result<(Self, bool), DdwError> {
        let dt = s.device_tree();
        let p = dt.phbs.get(phb).ok_or(DdwError::NoSuchPhb(phb))?;
        let ext = p.ddw_extensions.unwrap_or([0; 3]);
        let node = Node {
            buid: p.buid,
            default_liobn: p.dma_window[0],
            default_start: (u64::from(p.dma_window[1]) << 32) | u64::from(p.dma_window[2]),
            default_size: (u64::from(p.dma_window[3]) << 32) | u64::from(p.dma_window[4]),
            tokens: p.ddw_applicable.unwrap_or([0; 3]),
            reset: (ext[0] >= 1).then_some(ext[1]),
            six_outputs: ext[0] >= 2 && ext[2] == 1,
        };
        Ok((node, p.ddw_applicable.is_some()))
    }
}

/// What every call of one `enable_ddw` needs: the host, guest memory, the observer.
struct Ctx<'a, M: GuestMemoryBackend> {
    s: &'a Spapr,
    mem: &'a M,
    obs: &'a mut dyn FnMut(&GuestCall<'_>),
    scratch: GuestScratch,
}

impl<M: GuestMemoryBackend> Ctx<'_, M> {
    /// One TCE hypercall, observed; its failure as a [`DdwError`].
    fn hcall(&mut self, name: &'static str, op: u64, args: [u64; 4]) -> Result<(), DdwError> {
        let (status, _) = self.s.hcall(self.mem, op, args, false);
        (self.obs)(&GuestCall::Hcall { name, args, status });
        if status == HStatus::Success {
            Ok(())
        } else {
            Err(DdwError::Hcall { call: name, status })
        }
    }

    /// One RTAS call through the argument buffer, observed; its rets, or the failure.
    fn rtas(
        &mut self,
        name: &'static str,
        token: u32,
        args: &[u32],
        nret: u32,
    ) -> Result<Vec<u32>, DdwError> {
        let r = self
            .s
            .rtas_through_buffer(self.mem, self.scratch.rtas, token, args, nret);
        let rets = r.as_ref().map_or(&[][..], |(_, rets)| rets.as_slice());
        (self.obs)(&GuestCall::Rtas {
            name,
            token,
            args,
            rets,
        });
        let (st, rets) = r.ok_or(DdwError::Scratch)?;
        if st != HStatus::Success {
            return Err(DdwError::Hcall {
                call: "KVMPPC_H_RTAS",
                status: st,
            });
        }
        match rets.first() {
            Some(0) => Ok(rets),
            Some(st) => Err(DdwError::Rtas {
                call: name,
                status: *st as i32,
            }),
            None => Err(DdwError::Scratch),
        }
    }

    /// Clears `entries` entries of `page_shift` pages from `start` with H_STUFF_TCE, 512
    /// per call (`tce_clearrange_multi_pSeriesLP`, `tce_freemulti_pSeriesLP`).
    fn clear(
        &mut self,
        liobn: u32,
        start: u64,
        page_shift: u32,
        entries: u64,
    ) -> Result<(), DdwError> {
        let mut i = 0;
        while i < entries {
            let k = (entries - i).min(MAX_MULTI_TCE);
            let args = [u64::from(liobn), start + (i << page_shift), 0, k];
            self.hcall("H_STUFF_TCE", opcode::H_STUFF_TCE, args)?;
            i += k;
        }
        Ok(())
    }
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
            default_pages: BTreeMap::new(),
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

    /// Pages of the default window of the PHB with `buid` that the guest's allocator
    /// holds (what `iommu_table_in_use` looks at).
    pub fn default_pages_in_use(&self, buid: u64) -> u64 {
        self.default_pages.get(&buid).map_or(0, |p| p.len() as u64)
    }

    /// A driver's `dma_map` through the default window of PHB `phb` (the kernel DMA API
    /// on the 32-bit window): the guest's allocator finds free pages (page 0 is reserved
    /// when the window starts at 0, as `iommu_init_table` reserves it) and maps them with
    /// H_PUT_TCE, R always and W unless `to_device`. Returns the bus address.
    pub fn dma_map_default<M: GuestMemoryBackend>(
        &mut self,
        s: &Spapr,
        mem: &M,
        phb: usize,
        gpa: u64,
        len: u64,
        to_device: bool,
    ) -> Result<u64, DdwError> {
        let (n, _) = Node::of(s, phb)?;
        let pages = ((gpa & 0xfff) + len).div_ceil(4096).max(1);
        let first = u64::from(n.default_start == 0);
        let used = self.default_pages.entry(n.buid).or_default();
        let total = n.default_size >> 12;
        // First fit: the lowest run of `pages` free pages from `first`.
        let mut at = first;
        for &p in used.range(first..) {
            if p >= at + pages {
                break;
            }
            at = p + 1;
        }
        if at.checked_add(pages).map_or(true, |end| end > total) {
            return Err(DdwError::DefaultWindowFull(pages));
        }
        let perm = if to_device { 1 } else { 3 };
        for k in 0..pages {
            let ioba = n.default_start + ((at + k) << 12);
            let tce = ((gpa & !0xfff) + (k << 12)) | perm;
            let (st, _) = s.hcall(
                mem,
                opcode::H_PUT_TCE,
                [u64::from(n.default_liobn), ioba, tce, 0],
                false,
            );
            if st != HStatus::Success {
                for j in 0..k {
                    let ioba = n.default_start + ((at + j) << 12);
                    let _ = s.hcall(
                        mem,
                        opcode::H_PUT_TCE,
                        [u64::from(n.default_liobn), ioba, 0, 0],
                        false,
                    );
                }
                return Err(DdwError::Hcall {
                    call: "H_PUT_TCE",
                    status: st,
                });
            }
        }
        used.extend(at..at + pages);
        Ok(n.default_start + (at << 12) + (gpa & 0xfff))
    }

    /// A driver's `dma_unmap` of what [`Self::dma_map_default`] returned: the entries are
    /// cleared with H_PUT_TCE and the pages given back to the allocator.
    pub fn dma_unmap_default<M: GuestMemoryBackend>(
        &mut self,
        s: &Spapr,
        mem: &M,
        phb: usize,
        bus: u64,
        len: u64,
    ) -> Result<(), DdwError> {
        let (n, _) = Node::of(s, phb)?;
        let first = bus.saturating_sub(n.default_start) >> 12;
        let pages = ((bus & 0xfff) + len).div_ceil(4096).max(1);
        let used = self.default_pages.entry(n.buid).or_default();
        for p in first..first.saturating_add(pages) {
            if used.remove(&p) {
                let ioba = n.default_start + (p << 12);
                let (st, _) = s.hcall(
                    mem,
                    opcode::H_PUT_TCE,
                    [u64::from(n.default_liobn), ioba, 0, 0],
                    false,
                );
                if st != HStatus::Success {
                    return Err(DdwError::Hcall {
                        call: "H_PUT_TCE",
                        status: st,
                    });
                }
            }
        }
        Ok(())
    }

    /// `enable_ddw` for the device and memory of `req`: the window, made or reused. A
    /// failure is remembered for the PHB and, once the default window was removed,
    /// undone with a reset.
    pub fn enable_ddw<M: GuestMemoryBackend>(
        &mut self,
        s: &Spapr,
        mem: &M,
        req: &DdwRequest,
    ) -> Result<DdwWindow, DdwError> {
        self.enable_ddw_observed(s, mem, req, &mut |_| {})
    }

    /// [`Self::enable_ddw`], calling `observer` with every hypercall and RTAS call the
    /// guest makes, in order.
    pub fn enable_ddw_observed<M: GuestMemoryBackend>(
        &mut self,
        s: &Spapr,
        mem: &M,
        req: &DdwRequest,
        observer: &mut dyn FnMut(&GuestCall<'_>),
    ) -> Result<DdwWindow, DdwError> {
        if self.disabled {
            return Err(DdwError::Disabled);
        }
        let (n, applicable) = Node::of(s, req.phb)?;
        if let Some(w) = self.windows.get(&n.buid) {
            return Ok(*w);
        }
        if self.failed.contains(&n.buid) {
            return Err(DdwError::FailedBefore);
        }
        if !mem.check_range(GuestAddress(self.scratch.rtas), 64)
            || self.scratch.list & 0xfff != 0
            || !mem.check_range(GuestAddress(self.scratch.list), 4096)
        {
            return Err(DdwError::Scratch);
        }
        let in_use = self.default_pages_in_use(n.buid) > 0;
        let mut cx = Ctx {
            s,
            mem,
            obs: observer,
            scratch: self.scratch,
        };
        let result = if applicable {
            make(&mut cx, &n, req, in_use)
        } else {
            Err(DdwError::NotApplicable)
        };
        match result {
            Ok(w) => {
                if w.removed_default {
                    // The default window is gone, and with it what the allocator held.
                    self.default_pages.remove(&n.buid);
                }
                self.windows.insert(n.buid, w);
                Ok(w)
            }
            Err(e) => {
                self.failed.insert(n.buid);
                Err(e)
            }
        }
    }
}

/// Steps 2 to 8: query; make room by removing an unused default window if need be; open
/// the window. Once the default window is removed, any failure resets the PHB, here and
/// only here.
fn make<M: GuestMemoryBackend>(
    cx: &mut Ctx<'_, M>,
    n: &Node,
    req: &DdwRequest,
    default_in_use: bool,
) -> Result<DdwWindow, DdwError> {
    let q = query(cx, n, req.cfg)?;
    if q[1] != 0 {
        return open_window(cx, n, req, &q);
    }
    if default_in_use {
        return Err(DdwError::NoWindow("the default window is in use"));
    }
    let Some(reset) = n.reset else {
        return Err(DdwError::NoWindow(
            "no reset extension to restore the default",
        ));
    };
    // `remove_dma_window(cleanup)`: clear it, then remove it.
    let removed = cx
        .clear(n.default_liobn, n.default_start, 12, n.default_size >> 12)
        .and_then(|()| {
            cx.rtas(
                "ibm,remove-pe-dma-window",
                n.tokens[2],
                &[n.default_liobn],
                1,
            )
        });
    removed?;
    let opened = query(cx, n, req.cfg).and_then(|q| {
        if q[1] == 0 {
            Err(DdwError::NoWindow("none free after removing the default"))
        } else {
            open_window(cx, n, req, &q)
        }
    });
    match opened {
        Ok(w) => Ok(DdwWindow {
            removed_default: true,
            ..w
        }),
        Err(e) => {
            let args = [req.cfg, (n.buid >> 32) as u32, n.buid as u32];
            let _ = cx.rtas("ibm,reset-pe-dma-windows", reset, &args, 1);
            Err(e)
        }
    }
}

/// `ibm,query-pe-dma-window`, with 6 outputs when the extension says so.
fn query<M: GuestMemoryBackend>(
    cx: &mut Ctx<'_, M>,
    n: &Node,
    cfg: u32,
) -> Result<Vec<u32>, DdwError> {
    let args = [cfg, (n.buid >> 32) as u32, n.buid as u32];
    let nret = if n.six_outputs { 6 } else { 5 };
    cx.rtas("ibm,query-pe-dma-window", n.tokens[0], &args, nret)
}

/// Steps 4 to 8 with a free slot (`q` is its query): page size, window size, create
/// (retrying while busy), then the direct map or the clear of a table-backed window. A
/// failure after the create clears and removes the new window.
fn open_window<M: GuestMemoryBackend>(
    cx: &mut Ctx<'_, M>,
    n: &Node,
    req: &DdwRequest,
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
    let (window_shift, direct) = window_size(req.max_memory, page_shift, largest, req.dma_mask);
    let args = [
        req.cfg,
        (n.buid >> 32) as u32,
        n.buid as u32,
        page_shift,
        window_shift,
    ];
    let mut made = cx.rtas("ibm,create-pe-dma-window", create, &args, 4);
    for _ in 0..BUSY_RETRIES {
        match &made {
            Err(DdwError::Rtas { status, .. }) if rtas_busy(*status) => {
                made = cx.rtas("ibm,create-pe-dma-window", create, &args, 4);
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
    let entries = 1u64
        .checked_shl(window_shift.saturating_sub(page_shift))
        .unwrap_or(0);
    let filled = if direct {
        direct_map(cx, &w, req).inspect_err(|_| {
            // `clean_dma_window` before the window goes.
            let _ = cx.clear(w.liobn, w.start, page_shift, entries);
        })
    } else {
        // `iommu_init_table` clears the new table before the guest uses it.
        cx.clear(w.liobn, w.start, page_shift, entries)
    };
    if let Err(e) = filled {
        let _ = cx.rtas("ibm,remove-pe-dma-window", remove, &[w.liobn], 1);
        return Err(e);
    }
    Ok(w)
}

/// Maps present RAM 1:1 into a direct window, range by range below the largest memory
/// (`walk_system_ram_range` with `tce_setrange_multi_pSeriesLP`): each range rounded out
/// to the IOMMU page, 512 TCEs (R|W) per H_PUT_TCE_INDIRECT, stopping at the first error.
fn direct_map<M: GuestMemoryBackend>(
    cx: &mut Ctx<'_, M>,
    w: &DdwWindow,
    req: &DdwRequest,
) -> Result<(), DdwError> {
    let ps = w.page_shift;
    let mut ranges: Vec<(u64, u64)> = req
        .present
        .iter()
        .filter_map(|&(a, l)| {
            let end = a.checked_add(l)?.min(req.max_memory);
            (a < end).then_some((a >> ps, (end - 1) >> ps))
        })
        .collect();
    ranges.sort_unstable();
    let mut next = 0u64;
    for (first, last) in ranges {
        let mut page = first.max(next);
        while page <= last {
            let k = (last - page + 1).min(MAX_MULTI_TCE);
            for j in 0..k {
                let tce = ((page + j) << ps) | 3;
                cx.mem
                    .write_obj(tce.to_be(), GuestAddress(cx.scratch.list + 8 * j))
                    .map_err(|_| DdwError::Scratch)?;
            }
            let args = [
                u64::from(w.liobn),
                w.start + (page << ps),
                cx.scratch.list,
                k,
            ];
            cx.hcall("H_PUT_TCE_INDIRECT", opcode::H_PUT_TCE_INDIRECT, args)?;
            page += k;
        }
        next = next.max(last + 1);
    }
    Ok(())
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
        assert_eq!(order_base_2(u128::from(u64::MAX)), 64);
        assert_eq!(
            (fls64(0), fls64(1), fls64(u64::MAX), fls64(0xffff_ffff)),
            (0, 1, 64, 32)
        );
    }

    #[test]
    fn the_window_covers_the_largest_memory_unless_the_block_or_mask_is_smaller() {
        // 64 MiB of 16M pages: QEMU's block of 2^31 TCEs holds them.
        assert_eq!(window_size(64 << 20, 24, 0x8000_0000, u64::MAX), (26, true));
        // Memory that is not a power of two rounds up.
        assert_eq!(
            window_size((64 << 20) + 1, 24, 0x8000_0000, u64::MAX),
            (27, true)
        );
        // 1 TiB of 4K pages needs 2^28 TCEs; a block of 2^20 gives a 4 GiB table window.
        assert_eq!(window_size(1 << 40, 12, 1 << 20, u64::MAX), (32, false));
        // A block that is not a power of two rounds up too: the window may exceed it.
        assert_eq!(
            window_size(1 << 40, 12, (1 << 20) + 5, u64::MAX),
            (33, false)
        );
        // A 40-bit DMA mask caps a window over 2 TiB at 1 TiB.
        assert_eq!(
            window_size(2 << 40, 16, 1 << 40, (1 << 40) - 1),
            (40, false)
        );
        // No block at all: nothing can be direct.
        assert_eq!(window_size(1 << 30, 16, 0, u64::MAX), (0, false));
    }
}
