//! VFIO containers (drivers/vfio/container.c): `/dev/vfio/vfio` fds, the ioctls the
//! container answers itself (`GET_API_VERSION`, `CHECK_EXTENSION`, `SET_IOMMU`), and the
//! hand-off of every other ioctl to the IOMMU driver (the SPAPR TCE driver,
//! `spapr_tce.rs`), which answers -EINVAL while none is set.

use crate::group::GroupFd;
use crate::spapr_tce::TceContainer;
use crate::uapi::ioctl;
use crate::vfio::{lock, Vfio};
use crate::Mm;
use iommu_core::Errno;

/// A container file descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ContainerFd(pub u32);

/// One container: its groups and, once `SET_IOMMU` chose it, its driver's state.
pub(crate) struct Container {
    pub(crate) groups: Vec<GroupFd>,
    /// Emulated-IOMMU groups in it (they never get past the SPAPR TCE driver).
    pub(crate) emulated: Vec<GroupFd>,
    pub(crate) tce: Option<TceContainer>,
}

/// An ioctl's argument: an integer, or the bytes of a struct.
pub(crate) enum IoctlArg<'a> {
    Int(u64),
    Bytes(&'a mut [u8]),
}

impl Vfio {
    /// Opens `/dev/vfio/vfio`.
    pub fn open_container(&self) -> ContainerFd {
        let mut st = lock(&self.state);
        let fd = st.alloc_fd();
        st.containers.insert(
            fd,
            Container {
                groups: Vec::new(),
                emulated: Vec::new(),
                tce: None,
            },
        );
        ContainerFd(fd)
    }

    /// Closes a container fd (`vfio_container_release` → `tce_iommu_release`): every
    /// group detached, every table and region freed, every charge returned.
    pub fn close_container(&self, container: ContainerFd) -> Result<(), Errno> {
        let (groups, emulated) = {
            let st = lock(&self.state);
            let c = st.containers.get(&container.0).ok_or(Errno::Ebadf)?;
            (c.groups.clone(), c.emulated.clone())
        };
        for g in emulated {
            self.unset_container(g)?;
        }
        for g in groups {
            if let Some(g) = lock(&self.state).groups.get_mut(&g.0) {
                g.device_fds = 0;
            }
            self.unset_container(g)?;
        }
        let mut st = lock(&self.state);
        self.release_driver(&mut st, container);
        st.containers.remove(&container.0);
        Ok(())
    }

    /// A container ioctl with an integer argument (CHECK_EXTENSION, SET_IOMMU, ENABLE,
    /// DISABLE, GET_API_VERSION).
    pub fn ioctl_int(&self, mm: Mm, fd: ContainerFd, nr: u32, arg: u64) -> Result<i64, Errno> {
        self.container_ioctl(mm, fd, nr, IoctlArg::Int(arg))
    }

    /// A container ioctl with a struct argument: `arg` holds the bytes user space passed
    /// (at least `minsz`, else -EFAULT) and receives what the kernel copies back.
    pub fn ioctl(&self, mm: Mm, fd: ContainerFd, nr: u32, arg: &mut [u8]) -> Result<i64, Errno> {
        let r = self.container_ioctl(mm, fd, nr, IoctlArg::Bytes(arg));
        self.machine.flush();
        r
    }

    /// `vfio_fops_unl_ioctl`.
    fn container_ioctl(
        &self,
        mm: Mm,
        fd: ContainerFd,
        nr: u32,
        arg: IoctlArg<'_>,
    ) -> Result<i64, Errno> {
        let mut st = lock(&self.state);
        let c = st.containers.get(&fd.0).ok_or(Errno::Ebadf)?;
        let int = match arg {
            IoctlArg::Int(v) => v,
            IoctlArg::Bytes(_) => 0,
        };
        match nr {
            ioctl::GET_API_VERSION => Ok(0),
            // With a driver, the driver answers (`tce_iommu_ioctl`); without, the container
            // asks the drivers it knows: the same answer here.
            ioctl::CHECK_EXTENSION => Ok(match int {
                2 | 7 => 1,
                5 => i64::from(self.machine.env().eeh_enabled()),
                _ => 0,
            }),
            ioctl::SET_IOMMU => {
                if int != 2 && int != 7 {
                    // No driver claims the type.
                    return Err(Errno::Enodev);
                }
                if (c.groups.is_empty() && c.emulated.is_empty()) || c.tce.is_some() {
                    return Err(Errno::Einval);
                }
                if !c.emulated.is_empty() {
                    // `__vfio_container_attach_groups`: the emulated group's attach fails,
                    // those attached before it are detached again, nothing is kept.
                    drop(st);
                    self.note(
                        iommu_core::EventKind::Attach,
                        None,
                        "SET_IOMMU: tce_iommu_attach_group refuses an emulated-IOMMU group \
                         (-EINVAL); nothing attached"
                            .into(),
                    );
                    return Err(Errno::Einval);
                }
                self.set_iommu(&mut st, fd, int == 7).map(|()| 0)
            }
            _ => {
                if c.tce.is_none() {
                    return Err(Errno::Einval);
                }
                self.tce_iommu_ioctl(&mut st, mm, fd, nr, arg)
            }
        }
    }
}
