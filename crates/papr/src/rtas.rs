//! The DDW RTAS calls (papr.md A.10, QEMU `spapr_rtas_ddw.c`) and the RTAS argument buffer
//! (`KVMPPC_H_RTAS`).
//!
//! The same in every profile (KVM hands RTAS to user space), without QEMU's two bugs: a
//! page shift of 64 or more is refused (QEMU computes `1 << 76` as `1 << 12` and accepts
//! it), and a refused create leaves no half-made window (QEMU 7.2 aborts on the next one).

use crate::spapr::Spapr;
use crate::{ddw_page_mask, token, HStatus};
use spapr_tce::PageShift;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

/// RTAS status words.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RtasStatus {
    /// 0.
    Success,
    /// -1.
    HardwareError,
    /// -2 (LoPAR allows it for create; never returned here).
    Busy,
    /// -3.
    ParameterError,
}

impl RtasStatus {
    /// The word in `rets[0]`.
    pub fn code(self) -> i32 {
        match self {
            RtasStatus::Success => 0,
            RtasStatus::HardwareError => -1,
            RtasStatus::Busy => -2,
            RtasStatus::ParameterError => -3,
        }
    }
    /// Name as written in scenario files (`RTAS_PARAMETER_ERROR`).
    pub fn name(self) -> &'static str {
        match self {
            RtasStatus::Success => "RTAS_SUCCESS",
            RtasStatus::HardwareError => "RTAS_HARDWARE_ERROR",
            RtasStatus::Busy => "RTAS_BUSY",
            RtasStatus::ParameterError => "RTAS_PARAMETER_ERROR",
        }
    }
    /// Parses a name.
    pub fn from_name(s: &str) -> Option<Self> {
        [
            RtasStatus::Success,
            RtasStatus::HardwareError,
            RtasStatus::Busy,
            RtasStatus::ParameterError,
        ]
        .into_iter()
        .find(|r| r.name() == s)
    }
    fn from_code(c: i32) -> Option<Self> {
        match c {
            0 => Some(RtasStatus::Success),
            -1 => Some(RtasStatus::HardwareError),
            -2 => Some(RtasStatus::Busy),
            -3 => Some(RtasStatus::ParameterError),
            _ => None,
        }
    }
}

/// The four DDW calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RtasCall {
    /// `ibm,query-pe-dma-window`.
    Query,
    /// `ibm,create-pe-dma-window`.
    Create,
    /// `ibm,remove-pe-dma-window`.
    Remove,
    /// `ibm,reset-pe-dma-window`.
    Reset,
}

impl RtasCall {
    /// The call of a token.
    pub fn from_token(t: u32) -> Option<Self> {
        match t {
            token::QUERY => Some(RtasCall::Query),
            token::CREATE => Some(RtasCall::Create),
            token::REMOVE => Some(RtasCall::Remove),
            token::RESET => Some(RtasCall::Reset),
            _ => None,
        }
    }
    /// Its token.
    pub fn token(self) -> u32 {
        match self {
            RtasCall::Query => token::QUERY,
            RtasCall::Create => token::CREATE,
            RtasCall::Remove => token::REMOVE,
            RtasCall::Reset => token::RESET,
        }
    }
}

/// The "largest block" QEMU 7.2 reports: a constant, not derived from RAM.
const LARGEST_BLOCK_5: u32 = 0x8000_0000;
const LARGEST_BLOCK_6: (u32, u32) = (0x20, 0);

/// Most arguments any call here takes: a buffer with more is refused by the call's own
/// count check, so the rest are never read (QEMU reads lazily too).
const MAX_ARGS_READ: u32 = 8;

fn status(s: RtasStatus) -> Vec<u32> {
    vec![s.code() as u32]
}

impl Spapr {
    /// Runs a DDW call with `args`, returning the words to write back: `nret` of them on
    /// success, just the status on an error (which QEMU writes into the first return word
    /// even when `nret` is 0).
    pub fn rtas(&self, call: RtasCall, args: &[u32], nret: u32) -> Vec<u32> {
        let rets = self.rtas_inner(call, args, nret);
        match rets.first().copied().map(|s| s as i32) {
            Some(0) => {
                if matches!(call, RtasCall::Create | RtasCall::Remove | RtasCall::Reset) {
                    tracing::debug!(target: "spapr_papr", ?call, ?args, ?rets, "RTAS window change");
                }
            }
            status => {
                tracing::debug!(target: "spapr_papr", ?call, ?args, nret, ?status, "RTAS call refused");
            }
        }
        rets
    }

    fn rtas_inner(&self, call: RtasCall, args: &[u32], nret: u32) -> Vec<u32> {
        let buid = |a: &[u32]| (u64::from(a[1]) << 32) | u64::from(a[2]);
        let ddw_phb = |a: &[u32]| {
            self.phb_by_buid(buid(a))
                .filter(|i| self.phbs()[*i].config().ddw)
        };
        match call {
            RtasCall::Query => {
                if args.len() != 3 || !(nret == 5 || nret == 6) {
                    return status(RtasStatus::ParameterError);
                }
                let Some(i) = ddw_phb(args) else {
                    return status(RtasStatus::ParameterError);
                };
                let p = &self.phbs()[i];
                let enabled = p
                    .shared
                    .slots
                    .read()
                    .iter()
                    .filter(|s| s.table().is_some())
                    .count();
                let avail = 2u32.saturating_sub(enabled as u32);
                let mask = ddw_page_mask(p.config().page_sizes);
                if nret == 5 {
                    vec![0, avail, LARGEST_BLOCK_5, mask, 0]
                } else {
                    vec![0, avail, LARGEST_BLOCK_6.0, LARGEST_BLOCK_6.1, mask, 0]
                }
            }
            RtasCall::Create => {
                if args.len() != 5 || nret != 4 {
                    return status(RtasStatus::ParameterError);
                }
                let Some(i) = ddw_phb(args) else {
                    return status(RtasStatus::ParameterError);
                };
                let (page_shift, window_shift) = (args[3], args[4]);
                let p = &self.phbs()[i];
                let mut slots = p.shared.slots.write();
                let free = slots.iter().position(|s| s.table().is_none());
                let enabled = slots.iter().filter(|s| s.table().is_some()).count();
                if page_shift >= 64
                    || !p.config().page_sizes.contains_shift(page_shift)
                    || window_shift < page_shift
                {
                    return status(RtasStatus::ParameterError);
                }
                let Some(slot) = free.filter(|_| enabled < 2) else {
                    return status(RtasStatus::HardwareError);
                };
                let bus_offset = if enabled == 0 {
                    p.config().dma_win_addr
                } else {
                    p.config().dma64_win_addr
                };
                // nb_table = 2^(window_shift - page_shift), truncated to 32 bits.
                let ratio = window_shift - page_shift;
                let nb = if ratio >= 32 { 0 } else { 1u64 << ratio };
                let Ok(ps) = PageShift::new(page_shift) else {
                    return status(RtasStatus::ParameterError);
                };
                if nb == 0
                    || self
                        .enable(i, &mut slots, slot, bus_offset, ps, nb)
                        .is_err()
                {
                    return status(RtasStatus::HardwareError);
                }
                let liobn = slots[slot].liobn();
                vec![0, liobn, (bus_offset >> 32) as u32, bus_offset as u32]
            }
            RtasCall::Remove => {
                if args.len() != 1 || nret != 1 {
                    return status(RtasStatus::ParameterError);
                }
                let Some(crate::spapr::Target::Pci { phb, slot }) = self.target(args[0]) else {
                    return status(RtasStatus::ParameterError);
                };
                let p = &self.phbs()[phb];
                if !p.config().ddw {
                    return status(RtasStatus::ParameterError);
                }
                // One critical section: a create between the removal and the reset it
                // triggers would otherwise be undone by that reset.
                let mut slots = p.shared.slots.write();
                if slots[slot].table().is_none() {
                    return status(RtasStatus::ParameterError);
                }
                slots.set_table(slot, None);
                let none_left = slots.iter().all(|s| s.table().is_none());
                if none_left && !slots[slot].def_win() {
                    self.reset_slots(phb, &mut slots);
                    drop(slots);
                    tracing::debug!(target: "spapr_papr", buid = p.buid(), "last window removed: PHB DMA reset");
                }
                status(RtasStatus::Success)
            }
            RtasCall::Reset => {
                if args.len() != 3 || nret != 1 {
                    return status(RtasStatus::ParameterError);
                }
                let Some(i) = ddw_phb(args) else {
                    return status(RtasStatus::ParameterError);
                };
                self.reset_phb(i);
                status(RtasStatus::Success)
            }
        }
    }

    /// Runs the RTAS call whose PAPR argument buffer is at `addr` in guest memory (token,
    /// nargs, nret, args, then rets; big-endian u32), as QEMU's `h_rtas` does: no cap on
    /// `nargs` or `nret` (the buffer is bounded by guest memory), the status of a refused
    /// call (or of an unknown token) written into the first return word even when `nret`
    /// is 0, return words outside RAM dropped. Returns the status written, or None for an
    /// unknown token (`rets[0] = -3` written) or a header or arguments outside RAM
    /// (nothing written).
    pub fn rtas_buffer<M: GuestMemoryBackend>(&self, mem: &M, addr: u64) -> Option<RtasStatus> {
        let word = |i: u64| -> Option<u32> {
            let at = addr.checked_add(i.checked_mul(4)?)?;
            mem.read_obj::<u32>(GuestAddress(at)).ok().map(u32::from_be)
        };
        let (tok, nargs, nret) = (word(0)?, word(1)?, word(2)?);
        // The arguments must be in RAM; only as many as a call can take are read.
        let args_at = addr.checked_add(12)?;
        let args_len = u64::from(nargs).checked_mul(4)?;
        let rets_at = args_at.checked_add(args_len)?;
        if !mem.check_range(GuestAddress(args_at), usize::try_from(args_len).ok()?) {
            return None;
        }
        let args: Vec<u32> = (0..u64::from(nargs.min(MAX_ARGS_READ)))
            .map(|i| word(3 + i))
            .collect::<Option<_>>()?;
        let write = |rets: &[u32]| {
            for (i, r) in rets.iter().enumerate() {
                let Some(at) = rets_at.checked_add(4 * i as u64) else {
                    return;
                };
                // QEMU's stl_be_phys: a store outside RAM is dropped.
                let _ = mem.write_obj(r.to_be(), GuestAddress(at));
            }
        };
        // An EEH call with more arguments than any takes is refused on its count.
        let eeh_args: &[u32] = if nargs > MAX_ARGS_READ { &[] } else { &args };
        if let Some(rets) = self.rtas_eeh(tok, eeh_args, nret) {
            write(&rets);
            return rets.first().and_then(|s| RtasStatus::from_code(*s as i32));
        }
        let Some(call) = RtasCall::from_token(tok) else {
            tracing::debug!(target: "spapr_papr", token = tok, "RTAS call with an unknown token");
            write(&status(RtasStatus::ParameterError));
            return None;
        };
        let rets = if nargs > MAX_ARGS_READ {
            // No call takes that many: refused on its count before anything else.
            status(RtasStatus::ParameterError)
        } else {
            self.rtas(call, &args, nret)
        };
        write(&rets);
        rets.first().and_then(|s| RtasStatus::from_code(*s as i32))
    }

    /// One RTAS call as a guest makes it: writes the argument buffer at `addr` (token,
    /// nargs, nret, args; big-endian u32), makes the `KVMPPC_H_RTAS` hypercall and reads
    /// back `nret` rets. Nothing is written or called unless the whole buffer is in guest
    /// RAM (`None`).
    pub fn rtas_through_buffer<M: GuestMemoryBackend>(
        &self,
        mem: &M,
        addr: u64,
        token: u32,
        args: &[u32],
        nret: u32,
    ) -> Option<(HStatus, Vec<u32>)> {
        let words: Vec<u32> = [token, args.len() as u32, nret]
            .into_iter()
            .chain(args.iter().copied())
            .collect();
        let len = 4 * (words.len() + nret as usize);
        addr.checked_add(len as u64)?;
        if !mem.check_range(GuestAddress(addr), len) {
            return None;
        }
        for (i, w) in words.iter().enumerate() {
            mem.write_obj(w.to_be(), GuestAddress(addr + 4 * i as u64))
                .ok()?;
        }
        let st = self.h_rtas(mem, addr);
        let rets_at = addr + 4 * words.len() as u64;
        let rets = (0..u64::from(nret))
            .map(|i| {
                mem.read_obj::<u32>(GuestAddress(rets_at + 4 * i))
                    .ok()
                    .map(u32::from_be)
            })
            .collect::<Option<Vec<u32>>>()?;
        Some((st, rets))
    }

    /// `KVMPPC_H_RTAS`: H_PARAMETER for an unknown token (or an unreadable buffer),
    /// H_SUCCESS for a known one whatever the RTAS status.
    pub fn h_rtas<M: GuestMemoryBackend>(&self, mem: &M, addr: u64) -> HStatus {
        match self.rtas_buffer(mem, addr) {
            Some(_) => HStatus::Success,
            None => HStatus::Parameter,
        }
    }
}
