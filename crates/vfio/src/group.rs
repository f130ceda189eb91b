//! VFIO groups (drivers/vfio/group.c): a group fd per IOMMU group, `SET_CONTAINER`
//! (which claims DMA ownership: the PE is isolated from that moment), `UNSET_CONTAINER`,
//! device fds, and device removal while user space holds the group.

use crate::container::ContainerFd;
use crate::vfio::{lock, Vfio};
use iommu_core::{DeviceId, Errno, EventKind, Group, GroupClaim, OwnerCookie};
use spapr_platform::pe::PeLink;
use spapr_platform::Pe;
use std::sync::Arc;

/// A group file descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GroupFd(pub u32);

/// One open group (`struct vfio_group` with its fd).
pub(crate) struct VfioGroup {
    pub(crate) group: Group,
    pub(crate) pe: Arc<Pe>,
    pub(crate) container: Option<ContainerFd>,
    /// The DMA ownership claim, held while the group is in a container.
    pub(crate) claim: Option<GroupClaim>,
    pub(crate) device_fds: u32,
}

impl Vfio {
    /// Opens `/dev/vfio/<group>` for the group of `dev`. -ENODEV without a group or PE,
    /// -EBUSY if it is open already.
    pub fn open_group(&self, dev: DeviceId) -> Result<GroupFd, Errno> {
        let group = self
            .machine
            .core()
            .device_group(dev)?
            .ok_or(Errno::Enodev)?;
        let pe = group
            .data::<PeLink>()
            .and_then(|l| l.0.upgrade())
            .ok_or(Errno::Enodev)?;
        let mut st = lock(&self.state);
        if st.groups.values().any(|g| g.group.same(&group)) {
            return Err(Errno::Ebusy);
        }
        let fd = st.alloc_fd();
        st.groups.insert(
            fd,
            VfioGroup {
                group,
                pe,
                container: None,
                claim: None,
                device_fds: 0,
            },
        );
        Ok(GroupFd(fd))
    }

    /// `VFIO_GROUP_SET_CONTAINER`: claims DMA ownership (the PE is isolated from now on),
    /// then attaches to the container's driver if it has one.
    pub fn set_container(&self, group: GroupFd, container: ContainerFd) -> Result<(), Errno> {
        if lock(&self.state).emulated.contains_key(&group.0) {
            return self.set_container_emulated(group, container);
        }
        let mut st = lock(&self.state);
        let g = st.groups.get(&group.0).ok_or(Errno::Ebadf)?;
        if g.container.is_some() {
            return Err(Errno::Einval);
        }
        if !st.containers.contains_key(&container.0) {
            return Err(
                if st.groups.contains_key(&container.0) || st.emulated.contains_key(&container.0) {
                    Errno::Ebadfd
                } else {
                    Errno::Ebadf
                },
            );
        }
        let cookie = OwnerCookie(0x7f10_0000 + u64::from(group.0));
        let claim = self.machine.core().claim_group(&g.group, cookie);
        self.machine.flush();
        let claim = claim?;
        let has_driver = st
            .containers
            .get(&container.0)
            .is_some_and(|c| c.tce.is_some());
        if has_driver {
            if let Err(e) = self.attach_group(&mut st, container, group, &claim) {
                drop(st);
                drop(claim);
                self.machine.flush();
                return Err(e);
            }
        }
        let name = {
            let g = st.groups.get_mut(&group.0).ok_or(Errno::Ebadf)?;
            g.container = Some(container);
            g.claim = Some(claim);
            g.group.name().to_string()
        };
        if let Some(c) = st.containers.get_mut(&container.0) {
            c.groups.push(group);
        }
        drop(st);
        self.note(
            EventKind::Attach,
            Some(name),
            format!("VFIO container fd {}", container.0),
        );
        Ok(())
    }

    /// `VFIO_GROUP_UNSET_CONTAINER`: -EINVAL without a container, -EBUSY while a device
    /// fd is open; else the driver detaches the group (TCEs cleared, windows unset), the
    /// claim is released (the kernel gets its windows back), and the last group's
    /// departure releases the driver.
    pub fn unset_container(&self, group: GroupFd) -> Result<(), Errno> {
        if lock(&self.state).emulated.contains_key(&group.0) {
            return self.unset_container_emulated(group, false);
        }
        let mut st = lock(&self.state);
        let g = st.groups.get(&group.0).ok_or(Errno::Ebadf)?;
        let cfd = g.container.ok_or(Errno::Einval)?;
        if g.device_fds > 0 {
            return Err(Errno::Ebusy);
        }
        self.detach_group(&mut st, cfd, group);
        let claim = st.groups.get_mut(&group.0).and_then(|g| {
            g.container = None;
            g.claim.take()
        });
        let last = st.containers.get_mut(&cfd.0).is_some_and(|c| {
            c.groups.retain(|x| *x != group);
            c.groups.is_empty()
        });
        if last {
            self.release_driver(&mut st, cfd);
        }
        drop(st);
        if let Some(c) = claim {
            let _ = c.release();
        }
        self.note(
            EventKind::Ownership,
            None,
            format!("group fd {} left its container", group.0),
        );
        Ok(())
    }

    /// `VFIO_GROUP_GET_DEVICE_FD`: the group must be in a container with a driver.
    pub fn open_device(&self, group: GroupFd, dev: DeviceId) -> Result<(), Errno> {
        let mut st = lock(&self.state);
        let in_container = {
            let g = st.groups.get(&group.0).ok_or(Errno::Ebadf)?;
            g.container
                .and_then(|c| st.containers.get(&c.0))
                .is_some_and(|c| c.tce.is_some())
        };
        if !in_container {
            return Err(Errno::Einval);
        }
        let g = st.groups.get_mut(&group.0).ok_or(Errno::Ebadf)?;
        if !g.group.contains(dev) {
            return Err(Errno::Enodev);
        }
        if let Err(e) = g.pe.eeh_dev_open() {
            if self.machine().env().eeh_flags().open_fails {
                return Err(e);
            }
        }
        g.device_fds += 1;
        Ok(())
    }

    /// Closes a device fd.
    pub fn close_device(&self, group: GroupFd) -> Result<(), Errno> {
        let mut st = lock(&self.state);
        let g = st.groups.get_mut(&group.0).ok_or(Errno::Ebadf)?;
        if g.device_fds == 0 {
            return Err(Errno::Ebadf);
        }
        g.device_fds -= 1;
        g.pe.eeh_dev_release();
        Ok(())
    }

    /// Closes a group fd (its device fds, then leaving its container).
    pub fn close_group(&self, group: GroupFd) -> Result<(), Errno> {
        if lock(&self.state).emulated.contains_key(&group.0) {
            return self.unset_container_emulated(group, true);
        }
        let has_container = {
            let mut st = lock(&self.state);
            let g = st.groups.get_mut(&group.0).ok_or(Errno::Ebadf)?;
            for _ in 0..g.device_fds {
                g.pe.eeh_dev_release();
            }
            g.device_fds = 0;
            g.container.is_some()
        };
        if has_container {
            self.unset_container(group)?;
        }
        lock(&self.state).groups.remove(&group.0);
        Ok(())
    }

    /// Hot-unplug of a device bound to vfio-pci (`vfio_unregister_group_dev`): the kernel
    /// waits until user space lets go of it. Modelled as a refusal, -EBUSY, named in the
    /// trace, while its group is in a container or one of its fds is open; the container's
    /// windows are never unset behind it. Otherwise the device goes as any other.
    pub fn remove_device(&self, dev: DeviceId) -> Result<(), Errno> {
        let held = {
            let st = lock(&self.state);
            st.groups
                .iter()
                .find(|(_, g)| g.group.contains(dev) && (g.container.is_some() || g.device_fds > 0))
                .map(|(fd, g)| (*fd, g.container, g.device_fds, g.group.name().to_string()))
        };
        if let Some((fd, container, fds, name)) = held {
            let by = match container {
                Some(c) => format!("container fd {}", c.0),
                None => format!("{fds} device fds"),
            };
            self.note(
                EventKind::RemoveDevice,
                Some(name),
                format!(
                    "vfio_unregister_group_dev waits: group fd {fd} is held by {by}; removal refused until user space lets go"
                ),
            );
            return Err(Errno::Ebusy);
        }
        self.machine.remove_device(dev)
    }
}
