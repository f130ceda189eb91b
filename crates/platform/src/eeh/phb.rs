//! The PHB PE (eeh.md 1.1, 1.2, 1.6; platforms/powernv/eeh-powernv.c
//! `pnv_eeh_get_phb_state`, `pnv_eeh_phb_reset`, kernel/eeh.c `eeh_phb_check_failure`).
//! A fenced PHB stops every PE under it: DMA is refused, MMIO reads all-ones and no thaw
//! succeeds. The first all-ones read by anyone isolates the PHB PE, and from then on its
//! PEs read UNAVAIL. The PHB's complete reset (`eeh_pe_reset_full` on the PHB PE) rewrites
//! the TVT, M64 and PELT-V from the firmware's cache, so every window survives, clears
//! every PEST, kills the whole TCE cache, and re-freezes the PEs passed to user space so
//! that their owners see the error (`eeh_pe_refreeze_passed`).

use super::driver::count_freeze;
use super::{EEH_FREEZE_WINDOW, EEH_MAX_FREEZES};
use crate::pe::Pe;
use crate::phb::Phb;
use iommu_core::{Errno, EventKind};

/// The PHB PE's EEH state, shared by the PHB and each of its PEs. Its lock is the last
/// one: it may be taken under a PE's EEH lock, and nothing is taken under it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PhbEehState {
    /// The PHB is fenced (`OPAL_EEH_PHB_ERROR`, severity PHB_FENCED).
    pub fenced: bool,
    /// The PHB is dead (`OPAL_HARDWARE`, severity PHB_DEAD): its PEs read NOT_SUPPORT
    /// (GET_STATE 2), a thaw returns 0 and changes nothing, and nothing recovers it.
    pub dead: bool,
    /// `EEH_PE_ISOLATED` on the PHB PE: the kernel has seen the fence.
    pub isolated: bool,
    /// Complete resets so far.
    pub resets: u32,
    /// Fences and deaths so far (part of the stop generation a DMA passes its gate in).
    pub stops: u64,
    /// The PHB PE's `freeze_count` within its window.
    pub freeze_count: u32,
    /// When that window began.
    pub tstamp: u64,
}

impl PhbEehState {
    /// Whether the PHB stops every PE under it (fenced or dead).
    pub fn stopped(&self) -> bool {
        self.fenced || self.dead
    }
}

impl Pe {
    /// The EEH state of this PE's PHB PE (a copy).
    pub fn phb_eeh(&self) -> PhbEehState {
        self.phb_eeh_lock().clone()
    }

    /// `eeh_phb_check_failure`, on an all-ones read: if the PHB is fenced and its PE not
    /// yet isolated, the PHB PE is isolated (whoever owns this PE) and the read handled.
    ///
    /// Once the PHB PE is isolated this answers false and the PE's own check goes on
    /// (a fenced PHB reads every PE frozen).
    pub(crate) fn eeh_phb_check_failure(&self) -> bool {
        let mut p = self.phb_eeh_lock();
        if !p.stopped() || p.isolated {
            return false;
        }
        {
            p.isolated = true;
            drop(p);
            self.env.note(
                EventKind::Eeh,
                None,
                None,
                format!(
                    "EEH: PHB#{} fenced: all-ones read, PHB PE isolated, recovery event queued",
                    self.phb
                ),
            );
        }
        true
    }

    /// This PE's part of a PHB complete reset: PEST cleared, TCE cache killed; a PE passed
    /// to user space is re-frozen for its owner unless `include_passed`; a host-owned PE
    /// is usable again (its isolation cleared, unless it is permanently disabled).
    fn eeh_phb_reset(&self, include_passed: bool) {
        self.counters.pe_kill();
        let refreeze = {
            let mut e = self.eeh_lock();
            e.mmio_frozen = false;
            e.dma_stopped = false;
            e.cfg_blocked = false;
            e.peev = false;
            let refreeze = e.pass_dev_cnt > 0 && !include_passed;
            if !refreeze && !e.removed {
                e.isolated = false;
            }
            refreeze
        };
        if refreeze {
            self.eeh_freeze_as("the PHB reset (eeh_pe_refreeze_passed)", false);
        }
    }
}

impl Phb {
    /// The PHB PE's EEH state.
    pub fn eeh(&self) -> PhbEehState {
        self.eeh_lock().clone()
    }

    fn eeh_note(&self, detail: String) {
        if let Some(pe) = self.pes.first() {
            pe.env.note(EventKind::Eeh, None, None, detail);
        }
    }

    /// Fences the PHB, as the hardware does on an error it cannot attribute to one PE
    /// (PHB4's escalated MMIO errors, a fatal PHB error). Idempotent.
    pub fn eeh_fence(&self) {
        let mut p = self.eeh_lock();
        if p.fenced {
            return;
        }
        p.fenced = true;
        p.stops += 1;
        drop(p);
        self.eeh_note(format!(
            "EEH: PHB#{} fenced: every PE under it stops",
            self.index
        ));
    }

    /// The PHB dies (a broken PHB: `opal_pci_eeh_freeze_status` returns `OPAL_HARDWARE`).
    /// For good: no reset brings it back.
    pub fn eeh_kill(&self) {
        let mut p = self.eeh_lock();
        if p.dead {
            return;
        }
        p.dead = true;
        p.stops += 1;
        drop(p);
        self.eeh_note(format!(
            "EEH: PHB#{} dead: its PEs read NOT_SUPPORT",
            self.index
        ));
    }

    /// `eeh_pe_reset_full(phb_pe, include_passed)`: the PHB complete reset (see the module
    /// docs). The windows and the TCE tables are kept; every PE's TCE cache is killed.
    /// -EIO on a dead PHB (the firmware's reset fails).
    pub fn eeh_reset_full(&self, include_passed: bool) -> Result<(), Errno> {
        if self.eeh().dead {
            return Err(Errno::Eio);
        }
        {
            let mut p = self.eeh_lock();
            p.fenced = false;
            p.resets += 1;
        }
        self.eeh_note(format!(
            "EEH: PHB#{} complete reset: TVT, M64 and PELT-V restored from the firmware cache, \
             every PEST cleared, TCE cache killed",
            self.index
        ));
        for pe in &self.pes {
            pe.eeh_phb_reset(include_passed);
        }
        self.eeh_lock().isolated = false;
        Ok(())
    }

    /// Host recovery of the isolated PHB PE (`eeh_handle_normal_event` on the PHB PE,
    /// which forces NEED_RESET): freeze counting, then the complete reset without the
    /// passed PEs (they are re-frozen for their owners), or the hard fail past
    /// [`EEH_MAX_FREEZES`]: the PHB stays fenced. -EINVAL if the PHB PE is not isolated.
    pub fn eeh_recover(&self) -> Result<super::Recovery, Errno> {
        let now = self.pes.first().map_or(0, |p| p.env.clock());
        let count = {
            let mut p = self.eeh_lock();
            if !p.isolated {
                return Err(Errno::Einval);
            }
            let p = &mut *p;
            count_freeze(&mut p.freeze_count, &mut p.tstamp, now)
        };
        self.eeh_note(format!(
            "EEH: PHB#{} recovery at t={now}s, freeze {count} of at most {EEH_MAX_FREEZES} in \
             {EEH_FREEZE_WINDOW}s",
            self.index
        ));
        if count > EEH_MAX_FREEZES {
            self.eeh_note(format!(
                "EEH: PHB#{} permanently failed; it stays fenced",
                self.index
            ));
            return Ok(super::Recovery::Failed {
                freeze_count: count,
            });
        }
        self.eeh_reset_full(false)?;
        Ok(super::Recovery::Recovered {
            freeze_count: count,
        })
    }
}
