//! EEH: a PE's error state (eeh.md 1). A DMA the PHB cannot translate, or one through a
//! TCE without the needed permission, freezes the PE (both PEST bits: MMIO frozen, DMA
//! stopped); a frozen PE's devices reach nothing and their MMIO loads read all-ones until
//! software thaws it. The host recovers the PEs it owns ([`driver`]:
//! `eeh_handle_normal_event`, with freeze counting on a virtual clock and a permanent
//! disable after too many freezes); a PE passed to user space is left to its owner, who
//! drives it through `VFIO_EEH_PE_OP` ([`Pe::eeh_set_option`], [`Pe::eeh_reset`],
//! [`Pe::eeh_get_state`]). A fenced PHB ([`phb`]) stops every PE under it; its PEs read
//! UNAVAIL while the PHB PE is isolated, and the PHB's complete reset thaws them all and
//! re-freezes the passed ones for their owners.
//!
//! The PE tree is two levels here: the PHB PE and the PEs under it. The machines this
//! crate builds have no bridge PEs, so the PELT-V domain of a PE is the PE itself and a
//! freeze is never collateral.
//!
//! What a reset does to the windows (eeh.md 1.6): nothing. A PE reset touches the link and
//! the devices only; the TVEs, the TCE tables and their contents are kept, and no TCE kill
//! is issued. A PHB complete reset rewrites the TVT from the firmware's cache (the windows
//! survive) and kills the whole TCE cache.
//!
//! Kernel files: arch/powerpc/kernel/eeh.c and eeh_pe.c (this module),
//! eeh_driver.c ([`driver`]), platforms/powernv/eeh-powernv.c (the PHB side, [`phb`]).

pub mod driver;
pub mod phb;

use crate::pe::Pe;
use crate::FaultPoint;
use iommu_core::{Errno, EventKind};
pub use phb::PhbEehState;

/// The EEH chain's locks: loom's under `cfg(loom)`, so that its model
/// (`tests/loom.rs`) explores every interleaving of the DMA gate against freezes and fences.
#[cfg(loom)]
pub(crate) use loom::sync::{Mutex as EehMutex, MutexGuard as EehGuard};
#[cfg(not(loom))]
pub(crate) use std::sync::{Mutex as EehMutex, MutexGuard as EehGuard};

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
    /// `Some` for a VF PE (`EEH_PE_VF`): how its function resets.
    pub vf: Option<VfReset>,
    /// Freezes so far: a DMA records the generation it passed the gate in, so that a DMA
    /// served while the PE stayed frozen since that gate is evidence for the checker.
    pub freeze_gen: u64,
    /// The PE's PEEV bit ("error pending"): set by a hardware-detected error, cleared
    /// only by a PHB complete reset. It matters under the `peev-sticky` reading only.
    pub peev: bool,
    /// DMAs served on a PE whose DMA was stopped when they passed the gate and still is
    /// (must stay 0: the checker's `NoDmaWhileFrozen`).
    pub served_while_stopped: u64,
}

/// How a VF PE's function is reset (`pnv_eeh_reset_vf_pe`): by PCIe FLR, by the
/// Advanced Features capability's FLR, or not at all (-ENOTTY).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VfReset {
    /// PCIe Function Level Reset (`pnv_eeh_do_flr`).
    Flr,
    /// Advanced Features FLR (`pnv_eeh_do_af_flr`).
    AfFlr,
    /// Neither capability.
    None,
}

impl VfReset {
    /// The name in scenario files.
    pub fn from_name(s: &str) -> Option<Self> {
        Some(match s {
            "flr" => VfReset::Flr,
            "af_flr" => VfReset::AfFlr,
            "none" => VfReset::None,
            _ => return None,
        })
    }
}

/// What an armed injection waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InjectClass {
    /// An MMIO or config access (funcs 0..11).
    Mmio,
    /// A DMA (funcs 12..19).
    Dma,
}

pub use driver::{DriverResult, Recovery};

/// `VFIO_EEH_PE_GET_STATE` / `RTAS_EEH_PE_STATE_*` values.
pub mod state {
    /// Not frozen.
    pub const NORMAL: i64 = 0;
    /// MMIO and DMA stopped.
    pub const STOPPED_IO_DMA: i64 = 2;
    /// DMA stopped, MMIO enabled.
    pub const STOPPED_DMA: i64 = 4;
    /// Unavailable: an MMIO-only freeze, or the parent (PHB) PE isolated (eeh.md 1.3).
    pub const UNAVAIL: i64 = 5;
}

/// The user-visible state (eeh.md 1.3, `eeh_pe_get_state` over `pnv_eeh_get_state`): a PE
/// whose PHB PE is isolated is UNAVAIL; on a fenced PHB every PE reads fully stopped;
/// else the PEST bits decide.
fn state_of(e: &EehState, phb: &PhbEehState, flags: crate::EehFlags) -> i64 {
    if phb.isolated && !e.removed {
        return state::UNAVAIL;
    }
    if phb.fenced || phb.dead {
        return state::STOPPED_IO_DMA;
    }
    if !pest_visible(e, flags) {
        return state::NORMAL;
    }
    match (e.mmio_frozen, e.dma_stopped) {
        (false, false) => state::NORMAL,
        (true, false) => state::UNAVAIL,
        (false, true) => state::STOPPED_DMA,
        (true, true) => state::STOPPED_IO_DMA,
    }
}

/// Whether the firmware reads the PEST bits (eeh.md 1.1: only with PEEV set). By
/// default PEEV follows the PEST bits; under `peev-sticky` a software-only freeze is not
/// seen.
fn pest_visible(e: &EehState, flags: crate::EehFlags) -> bool {
    !flags.peev_sticky || e.peev
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

    /// Marks the PE a VF PE whose function resets as `how` (set when its VF is scanned).
    pub(crate) fn eeh_set_vf(&self, how: VfReset) {
        self.eeh_lock().vf = Some(how);
    }

    /// Freezes the PE as the PHB does on an error it attributes to the PE (both bits,
    /// and its PEEV bit).
    pub(crate) fn eeh_freeze(&self, why: &str) {
        self.eeh_freeze_as(why, true);
    }

    /// Freezes the PE: by the hardware (`hardware`: PEEV set too), or by software
    /// (`opal_pci_eeh_freeze_set`, which leaves PEEV alone).
    pub(crate) fn eeh_freeze_as(&self, why: &str, hardware: bool) {
        let mut e = self.eeh_lock();
        e.peev |= hardware;
        if e.mmio_frozen && e.dma_stopped {
            return;
        }
        e.mmio_frozen = true;
        e.dma_stopped = true;
        e.freeze_gen += 1;
        drop(e);
        self.eeh_note(format!("EEH: PE frozen (MMIO and DMA) by {why}"));
    }

    /// Whether the PE's DMA is stopped now (its PESTB bit, or its PHB fenced or dead),
    /// and the stop generation: the PE's freezes plus its PHB's stops, so that a stop of
    /// either kind while a DMA is in flight is seen by [`Pe::eeh_dma_served`].
    fn eeh_stopped(&self, e: &EehState) -> (bool, u64) {
        let phb = self.phb_eeh();
        (e.dma_stopped || phb.stopped(), e.freeze_gen + phb.stops)
    }

    /// The DMA gate: `Err` if a DMA is refused because the PE's DMA is stopped (an armed
    /// DMA injection strikes here), else the freeze generation the DMA passed in, for
    /// [`Pe::eeh_dma_served`].
    ///
    /// The gate is the hardware's: it holds whether or not the kernel has EEH enabled
    /// (`eeh=off` only stops the kernel looking), though with EEH off nothing freezes a
    /// PE on a fault.
    pub(crate) fn eeh_dma_gate(&self) -> Result<u64, ()> {
        let armed = {
            let mut e = self.eeh_lock();
            let (stopped, gen) = self.eeh_stopped(&e);
            if stopped {
                return Err(());
            }
            if e.injected.take_if(|c| *c == InjectClass::Dma).is_none() {
                return Ok(gen);
            }
            true
        };
        if armed {
            self.eeh_freeze("an injected DMA error");
        }
        Err(())
    }

    /// Records a DMA that was served after passing the gate in stop generation `gen`:
    /// if the PE's DMA is stopped now and nothing stopped it since the gate, the DMA was
    /// served on a frozen PE (evidence for `NoDmaWhileFrozen`). A freeze or fence that
    /// came while the DMA was in flight is not the DMA's fault.
    pub(crate) fn eeh_dma_served(&self, gen: u64) {
        let mut e = self.eeh_lock();
        if self.eeh_stopped(&e) == (true, gen) {
            e.served_while_stopped += 1;
        }
    }

    /// Whether an observation of a device access must find the PE frozen.
    pub(crate) fn eeh_blocks_now(&self) -> bool {
        self.eeh_stopped(&self.eeh_lock()).0
    }

    /// An MMIO load from one of the PE's BARs: all-ones while MMIO is frozen or the PHB
    /// fenced (an armed MMIO injection freezes it first), else `value`. On all-ones the
    /// host looks (`eeh_dev_check_failure`): first at the PHB (a fenced PHB's PE is
    /// isolated, passed PEs or not: `eeh_phb_check_failure`); then a PE passed to user
    /// space is not looked at; one already isolated counts the check; otherwise the host
    /// marks it isolated and queues the event its recovery runs from.
    ///
    /// With EEH off the hardware still returns all-ones for a frozen PE, but the host does
    /// not look.
    pub fn eeh_mmio_load(&self, value: u64) -> u64 {
        if !self.env.eeh_enabled() {
            let frozen = self.eeh_lock().mmio_frozen || self.phb_eeh().stopped();
            return if frozen { u64::MAX } else { value };
        }
        if self.eeh_phb_check_failure() {
            return u64::MAX;
        }
        let armed = self
            .eeh_lock()
            .injected
            .take_if(|c| *c == InjectClass::Mmio)
            .is_some();
        if armed {
            self.eeh_freeze("an injected MMIO error");
        }
        let fenced = self.phb_eeh().stopped();
        let mut e = self.eeh_lock();
        if !e.mmio_frozen && !fenced {
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
        state_of(&self.eeh_lock(), &self.phb_eeh(), self.env.eeh_flags())
    }

    /// `eeh_pe_get_state` over `pnv_eeh_get_state` (eeh.md 1.2, 1.3): 0 normal, 2 MMIO and
    /// DMA stopped, 4 DMA stopped only, 5 MMIO frozen only or the PHB PE isolated.
    /// Reading a full stop marks the PE isolated (the platform's side effect).
    pub fn eeh_get_state(&self) -> i64 {
        let phb = self.phb_eeh();
        let mut e = self.eeh_lock();
        let v = state_of(&e, &phb, self.env.eeh_flags());
        if v == state::STOPPED_IO_DMA {
            e.isolated = true;
        }
        v
    }

    /// `eeh_pci_enable` for one thaw: nothing to do (0) if already enabled; else the
    /// firmware clears the bit, and the state read after it decides: still frozen (the
    /// freeze stuck, or the PHB is fenced and refuses the clear) is -EIO.
    fn eeh_thaw(&self, mmio: bool) -> Result<(), Errno> {
        let what = if mmio { "MMIO" } else { "DMA" };
        // A dead PHB reads NOT_SUPPORT: `eeh_pci_enable` returns 0 and changes nothing
        // (eeh.md decision 9).
        if self.phb_eeh().dead {
            self.eeh_note(format!(
                "EEH: {what} thaw on a dead PHB: 0, nothing changes"
            ));
            return Ok(());
        }
        // A fenced PHB reads "not active" for every PE: the firmware refuses the clear.
        if self.phb_eeh().fenced {
            self.eeh_note(format!(
                "EEH: {what} thaw refused: the PHB is fenced (-EIO)"
            ));
            return Err(Errno::Eio);
        }
        let mut e = self.eeh_lock();
        let frozen = if mmio { e.mmio_frozen } else { e.dma_stopped };
        // A freeze the firmware does not report (peev-sticky) reads enabled: nothing done.
        if !frozen || !pest_visible(&e, self.env.eeh_flags()) {
            return Ok(());
        }
        // The state read before the thaw (`pnv_eeh_get_state`) marks a fully frozen PE
        // isolated, as GET_STATE does.
        if e.mmio_frozen && e.dma_stopped {
            e.isolated = true;
        }
        if self
            .env
            .take_fault(FaultPoint::Thaw, (self.phb, self.number))
            .is_some()
        {
            drop(e);
            self.eeh_note(format!("EEH: {what} thaw: the freeze stuck (-EIO)"));
            return Err(Errno::Eio);
        }
        if mmio {
            e.mmio_frozen = false;
        } else {
            e.dma_stopped = false;
        }
        drop(e);
        self.eeh_note(format!("EEH: {what} thawed"));
        Ok(())
    }

    /// `eeh_unfreeze_pe`: MMIO, then DMA; stops at the first error.
    pub(crate) fn eeh_unfreeze(&self) -> Result<(), Errno> {
        self.eeh_thaw(true)?;
        self.eeh_thaw(false)
    }

    /// `eeh_pe_set_option` as VFIO calls it: 0 DISABLE (no effect), 1 ENABLE
    /// (`eeh_pe_change_owner`: a frozen PE is thawed and its isolation cleared; -EIO with
    /// EEH disabled), 2 THAW_MMIO, 3 THAW_DMA (-EIO if the PE stays frozen); anything
    /// else -EINVAL.
    pub fn eeh_set_option(&self, option: u32) -> Result<(), Errno> {
        match option {
            0 => Ok(()),
            1 => {
                if !self.env.eeh_enabled() {
                    return Err(Errno::Eio);
                }
                self.eeh_change_owner()
            }
            2 => self.eeh_thaw(true),
            3 => self.eeh_thaw(false),
            _ => Err(Errno::Einval),
        }
    }

    /// `eeh_pe_change_owner`: a frozen PE is thawed and its isolation cleared, so that the
    /// next owner (the host, or a user) starts from a usable PE; a thaw that fails is
    /// returned and the isolation kept.
    pub(crate) fn eeh_change_owner(&self) -> Result<(), Errno> {
        let thaw = {
            let e = self.eeh_lock();
            let phb = self.phb_eeh();
            // A dead PHB reads NOT_SUPPORT: the change of owner does nothing.
            !phb.dead && (e.mmio_frozen || e.dma_stopped || phb.fenced)
        };
        if thaw {
            self.eeh_unfreeze()?;
            self.eeh_clear_isolated();
        }
        Ok(())
    }

    /// `eeh_pe_state_clear(pe, EEH_PE_ISOLATED, true)`: a permanently disabled (REMOVED)
    /// PE keeps its flags.
    fn eeh_clear_isolated(&self) {
        let mut e = self.eeh_lock();
        if !e.removed {
            e.isolated = false;
        }
    }

    /// `eeh_pe_reset(pe, option, include_passed = true)`: 0 DEACTIVATE (config space
    /// unblocked even on failure, the PE re-enabled: thawed, isolation cleared; a thaw
    /// that fails is -EIO), 1 HOT and 3 FUNDAMENTAL (the PE frozen and config space
    /// blocked until DEACTIVATE; a VF PE is reset by FLR or AF FLR, -ENOTTY without
    /// either, frozen and blocked all the same); anything else -EINVAL. The windows and
    /// their TCEs are kept; no kill is issued.
    pub fn eeh_reset(&self, option: u32) -> Result<(), Errno> {
        match option {
            0 => {
                let vf = {
                    let mut e = self.eeh_lock();
                    e.cfg_blocked = false;
                    e.vf
                };
                // `pnv_eeh_reset_vf_pe` refuses every option without FLR or AF FLR;
                // `eeh_pe_reset` then returns before re-enabling anything.
                if vf == Some(VfReset::None) {
                    self.eeh_note(
                        "EEH: reset deassert of a VF PE without FLR or AF FLR (-ENOTTY); still frozen"
                            .into(),
                    );
                    return Err(Errno::Enotty);
                }
                self.eeh_unfreeze()?;
                self.eeh_clear_isolated();
                self.eeh_note("EEH: reset deasserted; windows and TCEs kept".into());
                Ok(())
            }
            1 | 3 => {
                let vf = {
                    let mut e = self.eeh_lock();
                    if !(e.mmio_frozen && e.dma_stopped) {
                        e.freeze_gen += 1;
                    }
                    e.mmio_frozen = true;
                    e.dma_stopped = true;
                    e.cfg_blocked = true;
                    e.vf
                };
                let kind = if option == 1 { "hot" } else { "fundamental" };
                match vf {
                    Some(VfReset::None) => {
                        self.eeh_note(format!(
                            "EEH: {kind} reset of a VF PE without FLR or AF FLR (-ENOTTY); \
                             PE frozen, config blocked"
                        ));
                        Err(Errno::Enotty)
                    }
                    Some(how) => {
                        self.eeh_note(format!(
                            "EEH: {kind} reset of a VF PE by {how:?} (PE frozen, config blocked)"
                        ));
                        Ok(())
                    }
                    None => {
                        self.eeh_note(format!(
                            "EEH: {kind} reset asserted (PE frozen, config blocked)"
                        ));
                        Ok(())
                    }
                }
            }
            _ => Err(Errno::Einval),
        }
    }

    /// `eeh_pe_inject_err` → `pnv_eeh_err_inject` (v6.4): type 0 or 1, func 0..=19; the
    /// I/O-space funcs 2, 3, 8 and 9 are refused by OPAL (-EIO). The next access of the
    /// func's class (MMIO/config, or DMA) freezes the PE.
    /// Under `linux-6.12` the type is checked by the platform, after the core's func
    /// check, and a bad one is -ERANGE.
    pub fn eeh_inject(&self, kind: u32, func: u32) -> Result<(), Errno> {
        if func > 19 {
            return Err(Errno::Einval);
        }
        if kind > 1 {
            return Err(if self.env.eeh_flags().inject_type_erange {
                Errno::Erange
            } else {
                Errno::Einval
            });
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

    /// `eeh_dev_open`: a frozen PE is thawed for its new owner (`eeh_pe_change_owner`);
    /// on success one more device of the PE is opened by a user. A failed thaw is not
    /// counted and is returned; v6.2+ ignores it and opens the device all the same (the
    /// owner gets a PE still frozen, which the host goes on recovering), while
    /// `linux-old-open` fails the open with it.
    pub fn eeh_dev_open(&self) -> Result<(), Errno> {
        match self.eeh_change_owner() {
            Ok(()) => {
                self.eeh_lock().pass_dev_cnt += 1;
                Ok(())
            }
            Err(e) => {
                self.eeh_note(format!(
                    "EEH: eeh_dev_open: change of owner failed ({e}), device not counted as passed"
                ));
                Err(e)
            }
        }
    }

    /// `eeh_dev_release`: the user closed a device; the PE is left usable for the host.
    pub fn eeh_dev_release(&self) {
        let passed = {
            let mut e = self.eeh_lock();
            let was = e.pass_dev_cnt > 0;
            if was {
                e.pass_dev_cnt -= 1;
            }
            was
        };
        if passed {
            // A thaw that fails leaves the PE isolated for the host to recover.
            let _ = self.eeh_change_owner();
        }
    }

    /// The checker's EEH rule (`NoDmaWhileFrozen`): no DMA was served on this PE while
    /// its DMA stayed stopped since the DMA's gate (the DMA path's own record), and while
    /// the PE is frozen none of its devices reaches memory through the path its DMA takes
    /// (`devices`: each device's name and the PE its translations go through), probed at
    /// the first mapped entry of each window and at the bypass base.
    pub(crate) fn eeh_check(
        &self,
        probes: &[u64],
        devices: &[(String, Option<std::sync::Arc<Pe>>)],
    ) -> Vec<iommu_core::Finding> {
        let mut out = Vec::new();
        let served = self.eeh_lock().served_while_stopped;
        if served > 0 {
            out.push(iommu_core::Finding {
                rule: iommu_core::Rule::NoDmaWhileFrozen,
                device: None,
                evidence: iommu_core::Evidence::Count {
                    what: "DMAs served while the PE's DMA was stopped",
                    expected: 0,
                    found: served,
                },
            });
        }
        // Each device's DMA goes through the PE its `pci_dn` points at: a device of a
        // frozen PE whose path leads anywhere else reaches memory past the freeze.
        if self.eeh_blocks_now() {
            for (name, path) in devices {
                for &iova in probes {
                    let reached = path
                        .as_ref()
                        .and_then(|pe| pe.reaches(iova, spapr_tce::Access::Read).ok());
                    if let Some(hpa) = reached {
                        out.push(iommu_core::Finding {
                            rule: iommu_core::Rule::NoDmaWhileFrozen,
                            device: Some(name.clone()),
                            evidence: iommu_core::Evidence::Reach { iova, hpa: hpa.0 },
                        });
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use crate::{PowerNv, PowerNvConfig};
    use iommu_core::Rule;

    /// The rule fires on what the DMA path records: a DMA served after a gate that saw
    /// the PE frozen (the gate skipped, as a bug would) is evidence; one whose PE froze
    /// while it was in flight is not.
    #[test]
    fn a_dma_served_through_a_skipped_gate_is_found() {
        let m = PowerNv::booted(PowerNvConfig::seed()).unwrap();
        m.env().set_eeh(true);
        let pe = m.pe_of(m.device("nic0").unwrap()).unwrap();
        let gen = pe.eeh_dma_gate().unwrap();
        pe.eeh_freeze("a test");
        pe.eeh_dma_served(gen);
        assert!(m.check().is_empty(), "in flight when the PE froze");
        let gen = pe.eeh().freeze_gen;
        pe.eeh_dma_served(gen);
        let v = m.check();
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].rule, Rule::NoDmaWhileFrozen);
    }

    /// A PHB fence while a DMA is in flight is not the DMA's fault either.
    #[test]
    fn a_fence_during_a_dma_is_no_evidence() {
        let m = PowerNv::booted(PowerNvConfig::seed()).unwrap();
        m.env().set_eeh(true);
        let pe = m.pe_of(m.device("nic0").unwrap()).unwrap();
        let gen = pe.eeh_dma_gate().unwrap();
        m.phbs()[0].eeh_fence();
        pe.eeh_dma_served(gen);
        assert_eq!(pe.eeh().served_while_stopped, 0);
        assert!(pe.eeh_dma_gate().is_err());
    }
}
