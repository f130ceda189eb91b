//! The EEH RTAS calls of a pSeries guest, as QEMU 7.2 implements them (eeh.md 3): the
//! common prologue (argument counts, the PHB by BUID, EEH available only when the PHB's
//! devices sit behind exactly one VFIO container with one group), then each call mapped
//! to the container's `VFIO_EEH_PE_OP`. The VMM supplies that container through
//! [`EehBackend`]; a PHB without one has only emulated devices and answers every EEH call
//! with -3, as QEMU does.

use crate::Spapr;
use std::sync::Arc;

/// The RTAS tokens QEMU registers for EEH (`spapr_dt_rtas_tokens`; `RTAS_TOKEN_BASE`
/// 0x2000). `ibm,configure-bridge` is not among them.
pub mod token {
    /// `ibm,set-eeh-option`.
    pub const SET_EEH_OPTION: u32 = 0x2020;
    /// `ibm,get-config-addr-info2`.
    pub const GET_CONFIG_ADDR_INFO2: u32 = 0x2021;
    /// `ibm,read-slot-reset-state2`.
    pub const READ_SLOT_RESET_STATE2: u32 = 0x2022;
    /// `ibm,set-slot-reset`.
    pub const SET_SLOT_RESET: u32 = 0x2023;
    /// `ibm,configure-pe`.
    pub const CONFIGURE_PE: u32 = 0x2024;
    /// `ibm,slot-error-detail`.
    pub const SLOT_ERROR_DETAIL: u32 = 0x2025;
    /// Every EEH token with its `/rtas` property name.
    pub const ALL: [(&str, u32); 6] = [
        ("ibm,set-eeh-option", SET_EEH_OPTION),
        ("ibm,get-config-addr-info2", GET_CONFIG_ADDR_INFO2),
        ("ibm,read-slot-reset-state2", READ_SLOT_RESET_STATE2),
        ("ibm,set-slot-reset", SET_SLOT_RESET),
        ("ibm,configure-pe", CONFIGURE_PE),
        ("ibm,slot-error-detail", SLOT_ERROR_DETAIL),
    ];
}

/// What a PHB's VFIO side looks like to QEMU's EEH code: its container, for
/// `VFIO_EEH_PE_OP`, and which devices it has.
pub trait EehBackend: Send + Sync + std::fmt::Debug {
    /// Groups in the PHB's one container (`vfio_eeh_as_ok` needs exactly 1); 0 without
    /// a container.
    fn groups(&self) -> usize;
    /// `VFIO_EEH_PE_OP` with `op`: the ioctl's value, or a negative errno.
    fn pe_op(&self, op: u32) -> i64;
    /// Whether a vfio-pci device sits on `bus`.
    fn vfio_device_on_bus(&self, bus: u8) -> bool;
    /// Whether any device (VFIO or emulated) is at `bus`/`devfn`.
    fn device_at(&self, bus: u8, devfn: u8) -> bool;
}

const SUCCESS: u32 = 0;
const NO_ERRORS_FOUND: u32 = 1;
const HW_ERROR: u32 = -1i32 as u32;
const PARAM_ERROR: u32 = -3i32 as u32;

/// One PHB's backend, by PHB position.
pub(crate) type Backends = std::sync::Mutex<Vec<Option<Arc<dyn EehBackend>>>>;

impl Spapr {
    /// Connects PHB `phb` (its position) to a VFIO container: its EEH calls drive the
    /// container's `VFIO_EEH_PE_OP`. `None` makes it emulated-only again.
    pub fn set_eeh_backend(&self, phb: usize, backend: Option<Arc<dyn EehBackend>>) {
        let mut b = self.eeh.lock().unwrap_or_else(|p| p.into_inner());
        if b.len() <= phb {
            b.resize(phb + 1, None);
        }
        b[phb] = backend;
    }

    /// `spapr_phb_eeh_available`: PHB `phb`'s backend if it has one container with one
    /// group.
    fn eeh_available(&self, phb: usize) -> Option<Arc<dyn EehBackend>> {
        let backend = self
            .eeh
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(phb)
            .cloned()
            .flatten();
        backend.filter(|b| b.groups() == 1)
    }

    /// The EEH half of a PHB's machine reset (`spapr_phb_vfio_reset`): if EEH is
    /// available on PHB `phb`, the container's ENABLE op, whose result QEMU ignores.
    pub(crate) fn eeh_phb_reset(&self, phb: usize) {
        if let Some(b) = self.eeh_available(phb) {
            let r = b.pe_op(1);
            tracing::debug!(target: "spapr_papr", phb, result = r, "machine reset: EEH ENABLE");
        }
    }

    /// Runs the EEH RTAS call of `token` with `args`; the words to write back (the status
    /// first). None if `token` is not an EEH call.
    pub fn rtas_eeh(&self, tok: u32, args: &[u32], nret: u32) -> Option<Vec<u32>> {
        let (nargs, nrets): (usize, &[u32]) = match tok {
            token::SET_EEH_OPTION => (4, &[1]),
            token::GET_CONFIG_ADDR_INFO2 => (4, &[2]),
            token::READ_SLOT_RESET_STATE2 => (3, &[4, 5]),
            token::SET_SLOT_RESET => (4, &[1]),
            token::CONFIGURE_PE => (3, &[1]),
            token::SLOT_ERROR_DETAIL => (8, &[1]),
            _ => return None,
        };
        if args.len() != nargs || !nrets.contains(&nret) {
            return Some(vec![PARAM_ERROR]);
        }
        let buid = (u64::from(args[1]) << 32) | u64::from(args[2]);
        let Some(phb) = self.phb_by_buid(buid) else {
            return Some(vec![PARAM_ERROR]);
        };
        let Some(b) = self.eeh_available(phb) else {
            return Some(vec![PARAM_ERROR]);
        };
        let addr = args[0];
        let bus = ((addr >> 16) & 0xff) as u8;
        let set_or_reset = |op: u32| -> Vec<u32> {
            if b.pe_op(op) < 0 {
                vec![HW_ERROR]
            } else {
                vec![SUCCESS]
            }
        };
        Some(match tok {
            token::SET_EEH_OPTION => match args[3] {
                0 => set_or_reset(0),
                1 if !b.vfio_device_on_bus(bus) => vec![PARAM_ERROR],
                1 => set_or_reset(1),
                2 => set_or_reset(2),
                3 => set_or_reset(3),
                _ => vec![PARAM_ERROR],
            },
            token::GET_CONFIG_ADDR_INFO2 => match args[3] {
                0 if b.device_at(bus, ((addr >> 8) & 0xff) as u8) => {
                    vec![SUCCESS, (u32::from(bus) << 16) + 1]
                }
                1 => vec![SUCCESS, 2],
                _ => vec![PARAM_ERROR],
            },
            token::READ_SLOT_RESET_STATE2 => {
                let st = b.pe_op(4);
                if st < 0 {
                    vec![PARAM_ERROR]
                } else {
                    let mut r = vec![SUCCESS, st as u32, 1, 1000];
                    if nret == 5 {
                        r.push(0);
                    }
                    r
                }
            }
            token::SET_SLOT_RESET => match args[3] {
                0 => set_or_reset(5),
                1 => set_or_reset(6),
                3 => set_or_reset(7),
                _ => vec![PARAM_ERROR],
            },
            token::CONFIGURE_PE => {
                if b.pe_op(8) < 0 {
                    vec![PARAM_ERROR]
                } else {
                    vec![SUCCESS]
                }
            }
            // token::SLOT_ERROR_DETAIL
            _ => match args[7] {
                1 | 2 => vec![NO_ERRORS_FOUND],
                _ => vec![PARAM_ERROR],
            },
        })
    }
}
