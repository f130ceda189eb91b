//! Host recovery of a host-owned PE (eeh.md 1.5; arch/powerpc/kernel/eeh_driver.c,
//! `eeh_handle_normal_event`): freeze counting on the virtual clock, the drivers'
//! `error_detected` answers merged by priority, then the thaw path or the reset path, and
//! `resume`; or the hard fail that disables the PE for good.

use super::{EEH_FREEZE_WINDOW, EEH_MAX_FREEZES};
use crate::pe::Pe;
use iommu_core::Errno;

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

/// `eeh_pe_update_time_stamp` then `freeze_count++`: a new counting window starts at
/// the first counted freeze, or at the next freeze more than [`EEH_FREEZE_WINDOW`]
/// seconds after the window began. The count after this freeze.
pub(crate) fn count_freeze(freeze_count: &mut u32, tstamp: &mut u64, now: u64) -> u32 {
    if *freeze_count == 0 || now.saturating_sub(*tstamp) > EEH_FREEZE_WINDOW {
        *tstamp = now;
        *freeze_count = 0;
    }
    *freeze_count += 1;
    *freeze_count
}

/// `eeh_clear_pe_frozen_state` tries `eeh_unfreeze_pe` this many times.
const UNFREEZE_TRIES: u32 = 3;

/// `eeh_pe_reset_full` tries a reset this many times.
const RESET_TRIES: u32 = 3;

impl Pe {
    /// `eeh_handle_normal_event` for a host-owned PE the host has isolated: freeze
    /// counting (`eeh_pe_update_time_stamp` on the virtual clock), each device's driver
    /// asked `error_detected` (answers in `results`, merged by the kernel's priority),
    /// then the thaw or the reset path, `resume`; or the hard fail after
    /// [`EEH_MAX_FREEZES`] freezes within [`EEH_FREEZE_WINDOW`] seconds, on DISCONNECT,
    /// or when the PE will not thaw (a thaw that fails, or still frozen after the reset's
    /// three tries). -EBUSY if the PE is passed to a user (the host leaves it to its
    /// owner), -EINVAL if it is not isolated (nothing to recover), -ENODEV once removed.
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
            let e = &mut *e;
            count_freeze(&mut e.freeze_count, &mut e.tstamp, now)
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
            // Drivers that answer RECOVERED at once get no thaw: the kernel thaws only
            // on CAN_RECOVER and goes straight to resume otherwise.
            DriverResult::Recovered => {}
            DriverResult::CanRecover => {
                if self.eeh_thaw(true).is_err() {
                    return Ok(self.eeh_hard_fail(count, "MMIO would not thaw"));
                }
                for name in &names {
                    self.eeh_note(format!("EEH: {name}: mmio_enabled()"));
                }
                if self.eeh_thaw(false).is_err() {
                    return Ok(self.eeh_hard_fail(count, "DMA would not thaw"));
                }
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
                // `eeh_pe_reset_full`: up to three tries of assert and deassert; a reset
                // that keeps failing (a VF without FLR) is the hard fail.
                let reset = (0..RESET_TRIES).any(|_| {
                    let assert = self.eeh_reset(1);
                    let deassert = self.eeh_reset(0);
                    assert.is_ok() && deassert.is_ok()
                });
                if !reset && self.eeh_lock().vf == Some(super::VfReset::None) {
                    return Ok(self.eeh_hard_fail(count, "the PE cannot be reset"));
                }
                // A deassert's own thaw may fail; `eeh_clear_pe_frozen_state` tries again.
                let thawed = (0..UNFREEZE_TRIES).any(|_| self.eeh_unfreeze().is_ok());
                if !thawed {
                    return Ok(self.eeh_hard_fail(count, "still frozen after the reset"));
                }
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
            "EEH: PE permanently disabled ({why}); it stays frozen and its devices are removed"
        ));
        Recovery::Failed {
            freeze_count: count,
        }
    }
}
