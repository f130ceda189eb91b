//! # spapr-platform — the PowerNV platform
//!
//! PHBs (PHB3, PHB4, IODA1), PEs with their IODA2 table group (window 0 at bus address 0,
//! window 1 at 1<<59, bypass), the "borrowing" table-group ops, `spapr_tce_iommu_ops` with
//! its PLATFORM and BLOCKED domains, the kernel's TCE allocator and DMA API, device DMA
//! through the PHB's translation into a simulated RAM, and the boot sequence — on top of
//! `iommu-core` and `spapr-tce`. [`PowerNv`] is a whole machine.
//!
//! The history is selectable ([`Design`]) so that the checker can be seen catching the
//! real bugs: the v1 patch leaves kernel translations behind at hand-over, the v6.7 design
//! never gives the kernel its windows back, the fixed design does both right.
//!
//! The seed machine's NVMe drive, as a kernel driver and then a user sees it:
//!
//! ```
//! use iommu_core::{Errno, OwnerCookie};
//! use spapr_platform::{PowerNv, PowerNvConfig};
//! use spapr_tce::DmaDirection;
//!
//! let m = PowerNv::booted(PowerNvConfig::seed()).unwrap();
//! let nvme = m.device("nvme0").unwrap();
//! m.bind_driver(nvme, "nvme").unwrap();
//!
//! // The driver maps a buffer with the DMA API; the device writes into RAM through it.
//! let dma = m.dma_session(nvme).unwrap();
//! let bus = dma.map_page(0x1000_0000, 4096, DmaDirection::FromDevice, 0).unwrap();
//! m.device_write(nvme, bus, b"block 0").unwrap();
//! let mut got = [0u8; 7];
//! m.ram().read(0x1000_0000, &mut got).unwrap();
//! assert_eq!(&got, b"block 0");
//!
//! // No user may claim the group while a kernel driver is bound...
//! let owner = OwnerCookie(1);
//! assert_eq!(m.claim_group(nvme, owner).err(), Some(Errno::Eperm));
//! dma.unmap_page(bus, 4096, 0).unwrap();
//! m.unbind_driver(nvme).unwrap();
//!
//! // ...and once claimed, the device reaches no memory at all.
//! let claim = m.claim_group(nvme, owner).unwrap();
//! assert!(m.device_write(nvme, bus, b"x").is_err());
//! assert!(m.check().is_empty());
//! claim.release().unwrap(); // the kernel's windows are back
//! ```
//!
//! # Lock order (this crate)
//! core (the `iommu-core` state) → group (`iommu_group` state) → PE ([`Pe`]'s state) →
//! table (a table's link list and a device's `iommu_table_base` slots) → the note buffer.
//! A claim takes core, group, then the PE inside the domain attach; a view takes the
//! group's view before it locks the PE; the device-group callback runs under the core and
//! takes the PE. A write through a lent table ([`UserTable`] of a borrowing PE) holds the
//! group while it stores and kills (group → table), so a release, which takes the group
//! first, waits for it (`tests/lease_stress.rs`). The machine's own maps (devices,
//! buffers, sessions, boot state) are leaves: never held while calling into the core or
//! locking a PE. A stress test runs
//! views and checks against claims, binds and maps with a no-progress detector
//! (`tests/lock_order.rs`).
//!
//! EEH has its own chain, never held with a PE's state: a PE's EEH state → its PHB PE's
//! EEH state → the EEH flags and the injection list (leaves) → the note buffer.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
#![forbid(unsafe_code)]

pub mod alloc;
pub mod dma;
pub mod eeh;
pub mod error;
pub mod iommu;
pub mod machine;
pub mod pe;
pub mod phb;
pub mod ram;
pub mod scatterlist;
pub mod table;

pub use alloc::{pool_hash, Allocation, AllocatorView, DmaLimits, EntryLimits, TceAllocator};
pub use dma::{DmaMapError, DmaSession};
pub use eeh::{
    DriverResult, EehState, PhbEehState, Recovery, VfReset, EEH_FREEZE_WINDOW, EEH_MAX_FREEZES,
};
pub use error::PlatformError;
pub use iommu::SpaprTceIommu;
pub use machine::{
    BootReport, DeviceConfig, Initcall, PeView, PhbView, PowerNv, PowerNvConfig, WindowView,
};
pub use pe::{
    DmaFault, OpalError, PciDev, Pe, PeScope, TableGroupOps, Tve1, WindowError, WindowToken,
    BYPASS_BASE,
};
pub use phb::{CreateTable, Phb, PhbConfig, PhbModel};
pub use ram::Ram;
pub use scatterlist::SgEntry;
pub use table::{IommuTable, PeCounters, UserTable};

use iommu_core::{Errno, EventKind};
use std::sync::Mutex;

/// Which version of the POWER IOMMU ops to run (kernel.md section 7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Design {
    /// The 2022 v1 patch: blocking attach transfers no ownership; kernel mappings survive
    /// the hand-over.
    V1Patch,
    /// v6.7: BLOCKED shares PLATFORM's ops; going back to PLATFORM never calls
    /// `release_ownership`, so the host driver finds no DMA table after the VM goes.
    V6_7,
    /// The 2024 fix: PLATFORM attach releases, BLOCKED attach takes ownership.
    #[default]
    Fixed,
}

impl Design {
    /// Name as written in scenario files.
    pub fn name(self) -> &'static str {
        match self {
            Design::V1Patch => "v1",
            Design::V6_7 => "v6.7",
            Design::Fixed => "fixed",
        }
    }
    /// Parses a name.
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "v1" => Some(Design::V1Patch),
            "v6.7" => Some(Design::V6_7),
            "fixed" => Some(Design::Fixed),
            _ => None,
        }
    }
}

/// A platform event waiting to go into the core's trace. Platform code runs inside core
/// callbacks (under the core lock), so it notes events here and the machine moves them to
/// the trace when the call returns.
#[derive(Clone, Debug)]
pub(crate) struct Note {
    kind: EventKind,
    device: Option<String>,
    group: Option<String>,
    detail: String,
}

/// Machine-wide parameters and the note buffer.
#[derive(Debug)]
pub struct Env {
    /// Host `PAGE_SHIFT` (16 on POWER servers).
    pub host_page_shift: u32,
    /// RAM bytes.
    pub ram_size: u64,
    /// Boot option `iommu=nobypass`.
    pub bypass_disabled: bool,
    /// Largest default window. The kernel bounds it by what its allocator can address
    /// (`maxblock * 8` pages); the model uses 64 GiB, which keeps the allocator's bitmap
    /// at most 2 MiB per PE with 4K host pages.
    pub default_window_max: u64,
    notes: Mutex<Vec<Note>>,
    /// Failures to inject, in the order they were asked for ([`Env::inject`]). A leaf
    /// lock: nothing else is taken while it is held (a strike is traced after release).
    injections: Mutex<Vec<Injection>>,
    /// The `strict` kernel profile (set by VFIO): the platform's own quirks fixed too.
    strict: std::sync::atomic::AtomicBool,
    /// `eeh_enabled()`: PEs freeze on errors (off: a fault is recorded and DMA goes on).
    eeh: std::sync::atomic::AtomicBool,
    /// The readings eeh.md 5 offers as flags. A leaf lock (read under a PE's EEH lock).
    eeh_flags: Mutex<EehFlags>,
    /// The virtual clock EEH counts freezes on, in seconds.
    clock: std::sync::atomic::AtomicU64,
}

/// Where an injected failure can strike: each is one call of the kernel that can fail,
/// so that each of its unwind paths can be driven (scenario `fail` steps).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultPoint {
    /// `opal_pci_map_pe_dma_window` in `pnv_pci_ioda2_set_window`.
    SetWindow,
    /// The TCE table's allocation in `pnv_pci_ioda2_create_table`.
    CreateTable,
    /// The user-address table VFIO allocates beside a v2 window
    /// (`pnv_pci_ioda2_table_alloc_pages` of `it_userspace`).
    UserTable,
    /// One TCE store of a MAP: the on-demand level allocation of `pnv_tce(..., alloc)`
    /// behind `iommu_tce_xchg_no_kill`.
    TceStore,
    /// Pinning a user page (`get_user_pages` in v1 MAP, `pin_user_pages` in
    /// REGISTER_MEMORY).
    Pin,
    /// The preregistered region lookup of a v2 MAP entry (`mm_iommu_lookup` finding no
    /// region: it went away during the MAP).
    RegionLookup,
    /// One thaw of a frozen PE (`opal_pci_eeh_freeze_clear` in `eeh_pci_enable`): the
    /// hardware freezes the PE again at once ("the freeze sticks"), so the state read
    /// after it still shows it frozen and the thaw is -EIO (eeh.md 6, case 12).
    Thaw,
}

impl FaultPoint {
    /// Every point.
    pub const ALL: [FaultPoint; 7] = [
        FaultPoint::SetWindow,
        FaultPoint::CreateTable,
        FaultPoint::UserTable,
        FaultPoint::TceStore,
        FaultPoint::Pin,
        FaultPoint::RegionLookup,
        FaultPoint::Thaw,
    ];
    /// Name in scenario files.
    pub fn name(self) -> &'static str {
        match self {
            FaultPoint::SetWindow => "set_window",
            FaultPoint::CreateTable => "create_table",
            FaultPoint::UserTable => "user_table",
            FaultPoint::TceStore => "tce_store",
            FaultPoint::Pin => "pin",
            FaultPoint::RegionLookup => "region_lookup",
            FaultPoint::Thaw => "eeh_thaw",
        }
    }
    /// The point named `s`.
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == s)
    }
    /// What the failing kernel call returns (an OPAL failure is mapped by the caller).
    pub fn errno(self) -> Errno {
        match self {
            FaultPoint::SetWindow | FaultPoint::Thaw => Errno::Eio,
            FaultPoint::CreateTable | FaultPoint::UserTable | FaultPoint::TceStore => Errno::Enomem,
            FaultPoint::Pin => Errno::Efault,
            FaultPoint::RegionLookup => Errno::Einval,
        }
    }
}

/// The readings eeh.md 5 offers as flags; the default is its recommended model
/// (v6.4, PEEV derived from the PEST bits, v6.2+ open).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EehFlags {
    /// `linux-6.12` (decision 1): INJECT_ERR with a bad type is -ERANGE from the platform,
    /// not -EINVAL from the core.
    pub inject_type_erange: bool,
    /// `peev-sticky` (decision 4): the PEEV bit is set only by a hardware-detected error
    /// and cleared only by a PHB complete reset; a PE frozen by software alone (a reset's
    /// assert, a refreeze) reads not frozen.
    pub peev_sticky: bool,
    /// `linux-old-open` (decision 10): an `eeh_dev_open` that fails fails the device
    /// open with its error (before v6.2).
    pub open_fails: bool,
}

impl EehFlags {
    /// Every flag name scenario files use.
    pub const NAMES: [&'static str; 3] = ["linux-6.12", "peev-sticky", "linux-old-open"];
    /// Sets the flag named `name`; false if there is none.
    pub fn set(&mut self, name: &str) -> bool {
        match name {
            "linux-6.12" => self.inject_type_erange = true,
            "peev-sticky" => self.peev_sticky = true,
            "linux-old-open" => self.open_fails = true,
            _ => return false,
        }
        true
    }
}

/// One failure waiting for its call.
#[derive(Clone, Copy, Debug)]
struct Injection {
    point: FaultPoint,
    pe: Option<(u32, u32)>,
    skip: u32,
    opal: OpalError,
}

impl Injection {
    /// Whether a call at `point` on PE `pe` is one this injection counts.
    fn matches(&self, point: FaultPoint, pe: (u32, u32)) -> bool {
        self.point == point && self.pe.map_or(true, |t| t == pe)
    }
}

impl Env {
    pub(crate) fn new(host_page_shift: u32, ram_size: u64, bypass_disabled: bool) -> Self {
        Self {
            host_page_shift,
            ram_size,
            bypass_disabled,
            default_window_max: 64 << 30,
            notes: Mutex::new(Vec::new()),
            injections: Mutex::new(Vec::new()),
            strict: std::sync::atomic::AtomicBool::new(false),
            eeh: std::sync::atomic::AtomicBool::new(false),
            eeh_flags: Mutex::new(EehFlags::default()),
            clock: std::sync::atomic::AtomicU64::new(0),
        }
    }
    pub(crate) fn note(
        &self,
        kind: EventKind,
        device: Option<String>,
        group: Option<String>,
        detail: String,
    ) {
        self.notes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Note {
                kind,
                device,
                group,
                detail,
            });
    }
    pub(crate) fn take_notes(&self) -> Vec<Note> {
        std::mem::take(&mut *self.notes.lock().unwrap_or_else(|p| p.into_inner()))
    }
    /// Makes the next `set_window` fail with `e` (OPAL error injection).
    pub fn fail_next_set_window(&self, e: OpalError) {
        self.fail_set_window(e, 0);
    }
    /// Makes the `set_window` call after the next `skip` ones fail with `e`.
    pub fn fail_set_window(&self, e: OpalError, skip: u32) {
        self.inject(FaultPoint::SetWindow, None, skip, e);
    }
    /// Cancels every injected failure that has not struck yet.
    pub fn cancel_set_window_failure(&self) {
        self.injections().clear();
    }
    /// Makes the call at `point` after the next `skip` ones fail — on the PE `pe`
    /// (`(phb, pe number)`) only, or on any PE. `opal` is the error an OPAL call returns
    /// (the other points fail as the kernel's allocation or lookup does: see
    /// [`FaultPoint::errno`]). Injections queue: the first one that matches a call counts it.
    pub fn inject(&self, point: FaultPoint, pe: Option<(u32, u32)>, skip: u32, opal: OpalError) {
        self.injections().push(Injection {
            point,
            pe,
            skip,
            opal,
        });
    }
    /// Whether a failure is waiting at `point` for PE `pe` (a caller with a bulk fast
    /// path takes its per-call path then, so that the failure strikes where it says).
    pub fn armed(&self, point: FaultPoint, pe: (u32, u32)) -> bool {
        self.injections().iter().any(|j| j.matches(point, pe))
    }
    /// Injected failures that have not struck yet.
    pub fn pending_injections(&self) -> usize {
        self.injections().len()
    }
    /// Counts one call at `point` on PE `pe`: the injected failure if this is its turn
    /// (traced), else `None`.
    pub fn take_fault(&self, point: FaultPoint, pe: (u32, u32)) -> Option<OpalError> {
        let mut all = self.injections();
        let i = all.iter().position(|j| j.matches(point, pe))?;
        if all[i].skip > 0 {
            all[i].skip -= 1;
            return None;
        }
        let j = all.remove(i);
        drop(all);
        self.note(
            EventKind::Injected,
            None,
            None,
            format!(
                "injected failure: {} on PHB {} PE {} fails ({})",
                point.name(),
                pe.0,
                pe.1,
                match point {
                    FaultPoint::SetWindow => format!("{:?}", j.opal),
                    _ => point.errno().to_string(),
                }
            ),
        );
        Some(j.opal)
    }
    fn injections(&self) -> std::sync::MutexGuard<'_, Vec<Injection>> {
        self.injections.lock().unwrap_or_else(|p| p.into_inner())
    }
    /// Chooses the readings eeh.md 5 leaves open ([`EehFlags`]).
    pub fn set_eeh_flags(&self, flags: EehFlags) {
        *self.eeh_flags.lock().unwrap_or_else(|p| p.into_inner()) = flags;
    }
    /// The readings chosen.
    pub fn eeh_flags(&self) -> EehFlags {
        *self.eeh_flags.lock().unwrap_or_else(|p| p.into_inner())
    }
    /// Turns EEH on or off (`EEH_ENABLED`, set by `pnv_eeh_probe`; off is `eeh=off`).
    pub fn set_eeh(&self, on: bool) {
        self.eeh.store(on, std::sync::atomic::Ordering::Relaxed);
    }
    /// `eeh_enabled()`.
    pub fn eeh_enabled(&self) -> bool {
        self.eeh.load(std::sync::atomic::Ordering::Relaxed)
    }
    /// The virtual clock, in seconds.
    pub fn clock(&self) -> u64 {
        self.clock.load(std::sync::atomic::Ordering::Relaxed)
    }
    /// Advances the virtual clock by `secs` (saturating at its end).
    pub fn advance_clock(&self, secs: u64) {
        let now = self.clock().saturating_add(secs);
        self.clock.store(now, std::sync::atomic::Ordering::Relaxed);
    }
    /// Selects the `strict` profile for the platform's own quirks (or `linux`).
    pub fn set_strict(&self, strict: bool) {
        self.strict
            .store(strict, std::sync::atomic::Ordering::Relaxed);
    }
    /// Whether the `strict` profile is on.
    pub fn strict(&self) -> bool {
        self.strict.load(std::sync::atomic::Ordering::Relaxed)
    }
}
