//! EEH: a PE's error state (eeh.md 1). A DMA the PHB cannot translate, or one through a
//! TCE without the needed permission, freezes the PE (both PEST bits: MMIO frozen, DMA
//! stopped); a frozen PE's devices reach nothing and their MMIO loads read all-ones until
//! software thaws it. The host recovers the PEs it owns (`eeh_handle_normal_event`, with
//! freeze counting on a virtual clock and a permanent disable after too many freezes);
//! a PE passed to user space is left to its owner, who drives it through
//! `VFIO_EEH_PE_OP` ([`Pe::eeh_set_option`], [`Pe::eeh_reset`], [`Pe::eeh_get_state`]).
//!
//! What a reset does to the windows (eeh.md 1.6): nothing. A PE reset touches the link and
//! the devices only; the TVEs, the TCE tables and their contents are kept, and no TCE kill
//! is issued.

use crate::pe::Pe;
use iommu_core::{Errno, EventKind};

/// `eeh_max_freezes`: the sixth freeze within an hour of the first counted one disables
/// the PE for good.
pub const EEH_MAX_FREEZES: u32 = 5;

/// The window in which freezes are counted, in seconds of the virtual clock.
pub const EEH_FREEZE_WINDOW: u64 = 3600;

/// One PE's EEH state: the firmware's PEST bits and the kernel's `eeh_pe` flags.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EehState {
    /// PESTA bit 0: MMIO frozen (loads read all-ones, stores dropped).
    pub mmio_frozen: bool,
    /// PESTB bit 0: DMA stopped.
    pub dma_stopped: bool,
    /// `EEH_PE_ISOLATED`: the kernel has seen the freeze.
    pub isolated: bool,
    /// `EEH_PE_CFG_BLOCKED`: config space blocked (between a reset's assert and deassert).
    pub cfg_blocked: bool,
    /// `EEH_PE_REMOVED`: permanently disabled after too many freezes.
    pub removed: bool,
    /// `pass_dev_cnt`: devices of the PE opened by a user (VFIO).
    pub pass_dev_cnt: u32,
    /// `freeze_count` within the current window.
    pub freeze_count: u32,
    /// `tstamp`: when the current counting window began.
    pub tstamp: u64,
    /// `check_count`: all-ones reads seen while already isolated.
    pub check_count: u64,
    /// An armed error injection: the next access of this class freezes the PE.
    pub injected: Option<InjectClass>,
}

/// What an armed injection waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InjectClass {
    /// An MMIO or config access (funcs 0..11).
    Mmio,
    /// A DMA (funcs 12..19).
    Dma,
}

/// A host driver's answer to `error_detected` (eeh.md 5.17: scripted per device), in the
/// order the kernel merges them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum DriverResult {
    /// `PCI_ERS_RESULT_NONE`: no EEH-aware driver (the hotplug reset path).
    None,
    /// `PCI_ERS_RESULT_RECOVERED`.
    Recovered,
    /// `PCI_ERS_RESULT_CAN_RECOVER`: thaw and go on.
    CanRecover,
    /// `PCI_ERS_RESULT_DISCONNECT`: give up.
    Disconnect,
    /// `PCI_ERS_RESULT_NEED_RESET`: reset the PE.
    NeedReset,
}

impl DriverResult {
    /// The name in scenario files.
    pub fn from_name(s: &str) -> Option<Self> {
        Some(match s {
            "none" => DriverResult::None,
            "recovered" => DriverResult::Recovered,
            "can_recover" => DriverResult::CanRecover,
            "disconnect" => DriverResult::Disconnect,
            "need_reset" => DriverResult::NeedReset,
            _ => return None,
        })
    }
}

/// How a host recovery ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recovery {
    /// Recovered; the PE serves DMA and MMIO again. The freeze count after it.
    Recovered {
        /// `freeze_count` after this freeze.
        freeze_count: u32,
    },
    /// Hard fail: the PE is permanently disabled (REMOVED) and stays frozen.
    Failed {
        /// `freeze_count` after this freeze.
        freeze_count: u32,
    },
}

/// `VFIO_EEH_PE_GET_STATE` / `RTAS_EEH_PE_STATE_*` values.
pub mod state {
    /// Not frozen.
    pub const NORMAL: i64 = 0;
    /// MMIO and DMA stopped.
    pub const STOPPED_IO_DMA: i64 = 2;
    /// DMA stopped, MMIO enabled.
    pub const STOPPED_DMA: i64 = 4;
    /// Unavailable (here: an MMIO-only freeze, eeh.md 1.3).
    pub const UNAVAIL: i64 = 5;
}

/// The user-visible state of the PEST bits (eeh.md 1.3 through `pnv_eeh_get_state`).
fn state_of(e: &EehState) -> i64 {
    match (e.mmio_frozen, e.dma_stopped) {
        (false, false) => state::NORMAL,
        (true, false) => state::UNAVAIL,
        (false, true) => state::STOPPED_DMA,
        (true, true) => state::STOPPED_IO_DMA,
    }
}

impl Pe {
    fn eeh_note(&self, detail: String) {
        self.env
            .note(EventKind::Eeh, None, Some(self.group_name()), detail);
    }

    /// The EEH state, for views and tests.
    pub fn eeh(&self) -> EehState {
        self.eeh_lock().clone()
    }

    /// Freezes the PE as the PHB does on an error it attributes to the PE (both bits).
    pub(crate) fn eeh_freeze(&self, why: &str) {
        let mut e = self.eeh_lock();
        if e.mmio_frozen && e.dma_stopped {
            return;
        }
        e.mmio_frozen = true;
        e.dma_stopped = true;
        drop(e);
        self.eeh_note(format!("EEH: PE frozen (MMIO and DMA) by {why}"));
    }

    /// Whether a DMA is refused because the PE's DMA is stopped; an armed DMA injection
    /// strikes here.
    pub(crate) fn eeh_dma_blocked(&self) -> bool {
        if !self.env.eeh_enabled() {
            return false;
        }
        let armed = {
            let mut e = self.eeh_lock();
            if e.dma_stopped {
                return true;
            }
            e.injected.take_if(|c| *c == InjectClass::Dma).is_some()
        };
        if armed {
            self.eeh_freeze("an injected DMA error");
        }
        armed
    }

    /// An MMIO load from one of the PE's BARs: all-ones while MMIO is frozen (an armed
    /// MMIO injection freezes it first), else `value`. On all-ones the host looks
    /// (`eeh_dev_check_failure`): a PE passed to user space is not looked at; one already
    /// isolated counts the check; otherwise the host marks it isolated and queues the
    /// event its recovery runs from.
    pub fn eeh_mmio_load(&self, value: u64) -> u64 {
        if !self.env.eeh_enabled() {
            return value;
        }
        let armed = self
            .eeh_lock()
            .injected
            .take_if(|c| *c == InjectClass::Mmio)
            .is_some();
        if armed {
            self.eeh_freeze("an injected MMIO error");
        }
        let mut e = self.eeh_lock();
        if !e.mmio_frozen {
            return value;
        }
        if e.pass_dev_cnt > 0 {
            return u64::MAX;
        }
        if e.isolated {
            e.check_count += 1;
            return u64::MAX;
        }
        e.isolated = true;
        drop(e);
        self.eeh_note("EEH: all-ones MMIO read; PE isolated, recovery event queued".into());
        u64::MAX
    }

    /// What `eeh_pe_get_state` would answer now, without its side effect (an observation).
    pub fn eeh_state_value(&self) -> i64 {
        state_of(&self.eeh_lock())
    }

    /// `eeh_pe_get_state` over `pnv_eeh_get_state` (eeh.md 1.2, 1.3): 0 normal, 2 MMIO and
    /// DMA stopped, 4 DMA stopped only, 5 MMIO frozen only. Reading a full freeze marks
    /// the PE isolated (the platform's side effect).
    pub fn eeh_get_state(&self) -> i64 {
        let mut e = self.eeh_lock();
        let v = state_of(&e);
        if v == state::STOPPED_IO_DMA {
            e.isolated = true;
        }
        v
    }

    /// `eeh_pci_enable` for one thaw: nothing to do if already enabled; else the
    /// firmware clears the bit.
    fn eeh_thaw(&self, mmio: bool) {
        let mut e = self.eeh_lock();
        let bit = if mmio {
            &mut e.mmio_frozen
        } else {
            &mut e.dma_stopped
        };
        if *bit {
            *bit = false;
            drop(e);
            self.eeh_note(format!("EEH: {} thawed", if mmio { "MMIO" } else { "DMA" }));
        }
    }

    /// `eeh_unfreeze_pe`: MMIO, then DMA.
    fn eeh_unfreeze(&self) {
        self.eeh_thaw(true);
        self.eeh_thaw(false);
    }

    /// `eeh_pe_set_option` as VFIO calls it: 0 DISABLE (no effect), 1 ENABLE
    /// (`eeh_pe_change_owner`: a frozen PE is thawed and its isolation cleared; -EIO with
    /// EEH disabled), 2 THAW_MMIO, 3 THAW_DMA; anything else -EINVAL.
    pub fn eeh_set_option(&self, option: u32) -> Result<(), Errno> {
        match option {
            0 => Ok(()),
            1 => {
                if !self.env.eeh_enabled() {
                    return Err(Errno::Eio);
                }
                self.eeh_change_owner();
                Ok(())
            }
            2 => {
                self.eeh_thaw(true);
                Ok(())
            }
            3 => {
                self.eeh_thaw(false);
                Ok(())
            }
            _ => Err(Errno::Einval),
        }
    }

    /// `eeh_pe_change_owner`: a frozen PE is thawed and its isolation cleared, so that the
    /// next owner (the host, or a user) starts from a usable PE.
    pub(crate) fn eeh_change_owner(&self) {
        let thaw = {
            let e = self.eeh_lock();
            (e.mmio_frozen || e.dma_stopped) && !e.removed
        };
        if thaw {
            self.eeh_unfreeze();
            self.eeh_lock().isolated = false;
        }
    }

    /// `eeh_pe_reset(pe, option, include_passed = true)`: 0 DEACTIVATE (config space
    /// unblocked, the PE re-enabled: thawed, isolation cleared), 1 HOT and 3 FUNDAMENTAL
    /// (the PE frozen and config space blocked until DEACTIVATE); anything else -EINVAL.
    /// The windows and their TCEs are kept; no kill is issued.
    pub fn eeh_reset(&self, option: u32) -> Result<(), Errno> {
        match option {
            0 => {
                self.eeh_lock().cfg_blocked = false;
                if !self.eeh_lock().removed {
                    self.eeh_unfreeze();
                    self.eeh_lock().isolated = false;
                }
                self.eeh_note("EEH: reset deasserted; windows and TCEs kept".into());
                Ok(())
            }
            1 | 3 => {
                {
                    let mut e = self.eeh_lock();
                    e.mmio_frozen = true;
                    e.dma_stopped = true;
                    e.cfg_blocked = true;
                }
                self.eeh_note(format!(
                    "EEH: {} reset asserted (PE frozen, config blocked)",
                    if option == 1 { "hot" } else { "fundamental" }
                ));
                Ok(())
            }
            _ => Err(Errno::Einval),
        }
    }

    /// `eeh_pe_inject_err` → `pnv_eeh_err_inject` (v6.4): type 0 or 1, func 0..=19; the
    /// I/O-space funcs 2, 3, 8 and 9 are refused by OPAL (-EIO). The next access of the
    /// func's class (MMIO/config, or DMA) freezes the PE.
    pub fn eeh_inject(&self, kind: u32, func: u32) -> Result<(), Errno> {
        if kind > 1 || func > 19 {
            return Err(Errno::Einval);
        }
        if matches!(func, 2 | 3 | 8 | 9) {
            return Err(Errno::Eio);
        }
        let class = if func >= 12 {
            InjectClass::Dma
        } else {
            InjectClass::Mmio
        };
        self.eeh_lock().injected = Some(class);
        self.eeh_note(format!(
            "EEH: error injection armed (func {func}, {class:?})"
        ));
        Ok(())
    }

    /// `eeh_dev_open`: one more device of the PE opened by a user; a frozen PE is thawed
    /// for its new owner (`eeh_pe_change_owner`).
    pub fn eeh_dev_open(&self) {
        self.eeh_change_owner();
        self.eeh_lock().pass_dev_cnt += 1;
    }

    /// `eeh_dev_release`: the user closed a device; the PE is left usable for the host.
    pub fn eeh_dev_release(&self) {
        let passed = {
            let mut e = self.eeh_lock();
            let was = e.pass_dev_cnt > 0;
            e.pass_dev_cnt = e.pass_dev_cnt.saturating_sub(u32::from(was));
            was
        };
        if passed {
            self.eeh_change_owner();
        }
    }

    /// `eeh_handle_normal_event` for a host-owned PE the host has isolated: freeze
    /// counting (`eeh_pe_update_time_stamp` on the virtual clock), each device's driver
    /// asked `error_detected` (answers in `results`, merged by the kernel's priority),
    /// then the thaw or the reset path, `resume`; or the hard fail after
    /// [`EEH_MAX_FREEZES`] freezes within [`EEH_FREEZE_WINDOW`] seconds, or on DISCONNECT.
    /// -EBUSY if the PE is passed to a user (the host leaves it to its owner), -EINVAL if
    /// it is not isolated (nothing to recover), -ENODEV once removed.
    pub fn eeh_recover(&self, results: &[DriverResult]) -> Result<Recovery, Errno> {
        let now = self.env.clock();
        let count = {
            let mut e = self.eeh_lock();
            if e.removed {
                return Err(Errno::Enodev);
            }
            if e.pass_dev_cnt > 0 {
                return Err(Errno::Ebusy);
            }
            if !e.isolated {
                return Err(Errno::Einval);
            }
            if e.freeze_count == 0 || now.saturating_sub(e.tstamp) > EEH_FREEZE_WINDOW {
                e.tstamp = now;
                e.freeze_count = 0;
            }
            e.freeze_count += 1;
            e.freeze_count
        };
        self.eeh_note(format!(
            "EEH: recovery at t={now}s, freeze {count} of at most {EEH_MAX_FREEZES} in {EEH_FREEZE_WINDOW}s"
        ));
        if count > EEH_MAX_FREEZES {
            return Ok(self.eeh_hard_fail(count, "too many freezes"));
        }
        let names = self.device_names();
        let mut merged = DriverResult::None;
        for (i, name) in names.iter().enumerate() {
            let r = results.get(i).copied().unwrap_or(DriverResult::None);
            self.eeh_note(format!("EEH: {name}: error_detected(io_frozen) -> {r:?}"));
            merged = merged.max(r);
        }
        match merged {
            DriverResult::Disconnect => {
                return Ok(self.eeh_hard_fail(count, "a driver disconnected"))
            }
            DriverResult::CanRecover | DriverResult::Recovered => {
                self.eeh_thaw(true);
                for name in &names {
                    self.eeh_note(format!("EEH: {name}: mmio_enabled()"));
                }
                self.eeh_thaw(false);
            }
            DriverResult::None | DriverResult::NeedReset => {
                let hotplug = merged == DriverResult::None;
                self.eeh_note(format!(
                    "EEH: eeh_reset_device{}: hot reset, then deassert",
                    if hotplug {
                        " (hotplug: devices removed and re-added)"
                    } else {
                        ""
                    }
                ));
                let _ = self.eeh_reset(1);
                let _ = self.eeh_reset(0);
                if !hotplug {
                    for name in &names {
                        self.eeh_note(format!("EEH: {name}: slot_reset()"));
                    }
                }
            }
        }
        self.eeh_lock().isolated = false;
        for name in &names {
            self.eeh_note(format!("EEH: {name}: resume()"));
        }
        Ok(Recovery::Recovered {
            freeze_count: count,
        })
    }

    fn eeh_hard_fail(&self, count: u32, why: &str) -> Recovery {
        self.eeh_lock().removed = true;
        for name in self.device_names() {
            self.eeh_note(format!("EEH: {name}: error_detected(io_perm_failure)"));
        }
        self.eeh_note(format!(
            "EEH: PE permanently disabled ({why}); it stays frozen"
        ));
        Recovery::Failed {
            freeze_count: count,
        }
    }
}
