//! `VFIO_EEH_PE_OP` on the SPAPR TCE container (`vfio_spapr_ioctl_eeh_pe_op`, v6.2+: the
//! TCE driver runs it for each attached group, most recently attached first, and returns
//! the first non-zero result) and the EEH half of opening a device (`eeh_dev_open`,
//! `eeh_dev_release`). The PE's EEH state machine is the platform's
//! (`spapr_platform::eeh`).

use crate::container::ContainerFd;
use crate::vfio::{State, Vfio};
use iommu_core::{Errno, EventKind};

/// `struct vfio_eeh_pe_op` up to `op`: `argsz`, `flags`, `op`.
pub const EEH_PE_OP_MINSZ: usize = 12;
/// The whole struct, with `struct vfio_eeh_pe_err` (type, func, addr, mask).
pub const EEH_PE_OP_SIZE: usize = 40;

fn rd32(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_ne_bytes(w)
}

impl Vfio {
    /// `VFIO_EEH_PE_OP`: every attached group in turn, the first non-zero result wins
    /// (zero groups: 0 without reading the buffer).
    pub(crate) fn eeh_pe_op(&self, st: &State, fd: ContainerFd, arg: &[u8]) -> Result<i64, Errno> {
        let c = st.containers.get(&fd.0).ok_or(Errno::Ebadf)?;
        if c.groups.len() > 1 {
            self.note(
                EventKind::Eeh,
                None,
                "multi-group EEH: the op runs on every group".into(),
            );
        }
        for g in c.groups.iter().rev() {
            let Some(group) = st.groups.get(&g.0) else {
                return Err(Errno::Enodev);
            };
            let r = self.eeh_pe_op_one(&group.pe, arg)?;
            if r != 0 {
                return Ok(r);
            }
        }
        Ok(0)
    }

    /// One group's `vfio_spapr_ioctl_eeh_pe_op`, in the kernel's order: the PE, the
    /// 12-byte header (-EFAULT if short), argsz and flags (-EINVAL), then the op.
    fn eeh_pe_op_one(&self, pe: &spapr_platform::Pe, arg: &[u8]) -> Result<i64, Errno> {
        if arg.len() < EEH_PE_OP_MINSZ {
            return Err(Errno::Efault);
        }
        let (argsz, flags, op) = (rd32(arg, 0), rd32(arg, 4), rd32(arg, 8));
        if (argsz as usize) < EEH_PE_OP_MINSZ || flags != 0 {
            return Err(Errno::Einval);
        }
        let r = match op {
            0..=3 => pe.eeh_set_option(op).map(|()| 0),
            4 => Ok(pe.eeh_get_state()),
            5 => pe.eeh_reset(0).map(|()| 0),
            6 => pe.eeh_reset(1).map(|()| 0),
            7 => pe.eeh_reset(3).map(|()| 0),
            8 => Ok(0),
            9 => {
                if (argsz as usize) < EEH_PE_OP_SIZE {
                    return Err(Errno::Einval);
                }
                if arg.len() < EEH_PE_OP_SIZE {
                    return Err(Errno::Efault);
                }
                pe.eeh_inject(rd32(arg, 16), rd32(arg, 20)).map(|()| 0)
            }
            _ => Err(Errno::Einval),
        };
        self.machine().flush();
        r
    }
}

/// Builds a `struct vfio_eeh_pe_op` (for tests and the simulator).
pub fn encode_eeh_pe_op(op: u32, kind: u32, func: u32) -> Vec<u8> {
    let mut b = vec![0u8; EEH_PE_OP_SIZE];
    b[0..4].copy_from_slice(&(EEH_PE_OP_SIZE as u32).to_ne_bytes());
    b[8..12].copy_from_slice(&op.to_ne_bytes());
    b[16..20].copy_from_slice(&kind.to_ne_bytes());
    b[20..24].copy_from_slice(&func.to_ne_bytes());
    b
}
