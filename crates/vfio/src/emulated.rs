//! Emulated-IOMMU groups (`vfio_register_emulated_iommu_dev`, the mdev case): a device
//! whose DMA its parent driver translates in software, so its group has no PE and no
//! `iommu_table_group`. The VFIO core puts such a group in a container without claiming
//! DMA ownership (there is nothing to own), and the SPAPR TCE driver refuses it at attach
//! (`tce_iommu_attach_group`: `VFIO_EMULATED_IOMMU` → -EINVAL), whether the container
//! already has the driver (SET_CONTAINER fails) or gets it later (SET_IOMMU fails, and
//! the groups it attached in that call are detached again: nothing changes).

use crate::container::ContainerFd;
use crate::group::GroupFd;
use crate::vfio::{lock, Vfio};
use iommu_core::{Errno, EventKind};

/// One emulated group's file: the container it sits in, if any.
#[derive(Debug, Default)]
pub(crate) struct EmulatedGroup {
    pub(crate) container: Option<ContainerFd>,
}

impl Vfio {
    /// Registers an emulated-IOMMU device and opens its group: the fd of a group with no
    /// PE behind it.
    pub fn open_emulated_group(&self) -> GroupFd {
        let mut st = lock(&self.state);
        let fd = st.alloc_fd();
        st.emulated.insert(fd, EmulatedGroup::default());
        GroupFd(fd)
    }

    /// `VFIO_GROUP_SET_CONTAINER` for an emulated group: no DMA ownership to claim; the
    /// SPAPR TCE driver refuses the group (-EINVAL) if the container has it already.
    pub(crate) fn set_container_emulated(
        &self,
        group: GroupFd,
        container: ContainerFd,
    ) -> Result<(), Errno> {
        let mut st = lock(&self.state);
        let g = st.emulated.get(&group.0).ok_or(Errno::Ebadf)?;
        if g.container.is_some() {
            return Err(Errno::Einval);
        }
        let is_group =
            st.groups.contains_key(&container.0) || st.emulated.contains_key(&container.0);
        let c = st.containers.get_mut(&container.0).ok_or(if is_group {
            // A descriptor, but not a container's (as for a real group).
            Errno::Ebadfd
        } else {
            Errno::Ebadf
        })?;
        if c.tce.is_some() {
            drop(st);
            self.note(
                EventKind::Attach,
                None,
                "tce_iommu_attach_group: an emulated-IOMMU group (-EINVAL)".into(),
            );
            return Err(Errno::Einval);
        }
        c.emulated.push(group);
        if let Some(g) = st.emulated.get_mut(&group.0) {
            g.container = Some(container);
        }
        Ok(())
    }

    /// `VFIO_GROUP_UNSET_CONTAINER` / close of an emulated group.
    pub(crate) fn unset_container_emulated(
        &self,
        group: GroupFd,
        close: bool,
    ) -> Result<(), Errno> {
        let mut st = lock(&self.state);
        let g = st.emulated.get_mut(&group.0).ok_or(Errno::Ebadf)?;
        let was = g.container.take();
        if close {
            st.emulated.remove(&group.0);
        } else if was.is_none() {
            return Err(Errno::Einval);
        }
        if let Some(c) = was.and_then(|c| st.containers.get_mut(&c.0)) {
            c.emulated.retain(|x| *x != group);
        }
        Ok(())
    }
}
