//! `struct iommu_group`: reference counted. A [`Group`] is one counted reference; the group
//! lives exactly as long as some device or the platform holds one, and its release callback
//! (`iommu_group_set_iommudata`'s release, which clears the PE's back-pointer on POWER) runs
//! when the last one goes.

use crate::device::DeviceId;
use crate::domain::Domain;
use core::fmt;
use std::any::Any;
use std::sync::{Arc, Mutex, MutexGuard};

/// Identifies a group within a core.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupId(pub u64);

/// The cookie of a DMA owner (`void *owner`; 0 is the kernel's NULL).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OwnerCookie(pub u64);

impl OwnerCookie {
    /// The NULL cookie, which every claim refuses with -EINVAL.
    pub const NULL: OwnerCookie = OwnerCookie(0);
}

/// The mutable state of a group, under its mutex (the kernel's `group->mutex`).
#[derive(Debug, Default)]
pub(crate) struct GroupState {
    /// Devices in the group, in the order they joined.
    pub(crate) devices: Vec<DeviceId>,
    /// The domain the group's devices are attached to.
    pub(crate) domain: Option<Arc<Domain>>,
    /// The default domain (NULL on v6.4 POWER).
    pub(crate) default_domain: Option<Arc<Domain>>,
    /// The cached blocking domain.
    pub(crate) blocking_domain: Option<Arc<Domain>>,
    /// DMA owner; `None` means the kernel DMA API.
    pub(crate) owner: Option<OwnerCookie>,
    /// Users of the current ownership: bound kernel drivers, or claims of the owner.
    pub(crate) owner_cnt: u32,
    /// Incremented each time ownership is taken: a claim remembers the epoch it was made
    /// in, so a claim of an earlier ownership can never release a later one.
    pub(crate) epoch: u64,
}

impl GroupState {
    /// Owned by `owner` in ownership epoch `epoch`. (`owner` is set exactly while
    /// `owner_cnt > 0`; both are asked, so a state that broke that would read as unowned.)
    fn owned_by(&self, owner: OwnerCookie, epoch: u64) -> bool {
        self.owner == Some(owner) && self.epoch == epoch && self.owner_cnt > 0
    }
}

pub(crate) struct GroupInner {
    id: GroupId,
    name: String,
    data: Box<dyn Any + Send + Sync>,
    /// Shared only with [`OwnershipLease`]s, which hold it weakly: asking a lease takes no
    /// reference to the group (its count is what `RefcountBalance` checks).
    state: Arc<Mutex<GroupState>>,
    release: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl Drop for GroupInner {
    fn drop(&mut self) {
        let release = match self.release.get_mut() {
            Ok(r) => r.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(f) = release {
            f();
        }
    }
}

/// One counted reference to a group.
#[derive(Clone)]
pub struct Group(pub(crate) Arc<GroupInner>);

impl Group {
    pub(crate) fn new(
        id: GroupId,
        name: String,
        data: Box<dyn Any + Send + Sync>,
        release: Option<Box<dyn FnOnce() + Send>>,
    ) -> Self {
        Group(Arc::new(GroupInner {
            id,
            name,
            data,
            state: Arc::new(Mutex::new(GroupState::default())),
            release: Mutex::new(release),
        }))
    }
    /// Its id.
    pub fn id(&self) -> GroupId {
        self.0.id
    }
    /// Its kernel-style name (`domain0-pe1f` on POWER, a number elsewhere).
    pub fn name(&self) -> &str {
        &self.0.name
    }
    /// The driver's data (`iommu_group_get_iommudata`), if it is a `T`.
    pub fn data<T: 'static>(&self) -> Option<&T> {
        self.0.data.downcast_ref::<T>()
    }
    /// References held right now (devices, the platform, handles in use).
    pub fn ref_count(&self) -> usize {
        Arc::strong_count(&self.0)
    }
    /// Whether two handles are the same group.
    pub fn same(&self, other: &Group) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
    /// Locks the state (never poisoned in practice: no code panics while holding it; a
    /// poisoned lock is recovered since the state is kept consistent step by step).
    pub(crate) fn lock(&self) -> MutexGuard<'_, GroupState> {
        self.0.state.lock().unwrap_or_else(|p| p.into_inner())
    }
    /// Whether the group is owned by `owner` in ownership epoch `epoch` (a claim made then
    /// is still current).
    pub fn is_owned_by(&self, owner: OwnerCookie, epoch: u64) -> bool {
        self.lock().owned_by(owner, epoch)
    }
    /// The owner and ownership epoch (None: the kernel's).
    pub fn owner(&self) -> Option<(OwnerCookie, u64)> {
        let gs = self.lock();
        gs.owner.map(|o| (o, gs.epoch))
    }
    /// Whether `dev` is one of the group's devices.
    pub fn contains(&self, dev: DeviceId) -> bool {
        self.lock().devices.contains(&dev)
    }
    /// The group's devices, in join order.
    pub fn devices(&self) -> Vec<DeviceId> {
        self.lock().devices.clone()
    }
    /// A weak handle.
    pub(crate) fn downgrade(&self) -> std::sync::Weak<GroupInner> {
        Arc::downgrade(&self.0)
    }
    /// An [`OwnershipLease`] on ownership by `owner` in epoch `epoch` (a claim's:
    /// [`crate::Claim::owner`] and [`crate::Claim::epoch`]).
    pub fn lease(&self, owner: OwnerCookie, epoch: u64) -> OwnershipLease {
        OwnershipLease {
            state: Arc::downgrade(&self.0.state),
            owner,
            epoch,
        }
    }
}

/// Whether a claim is still current, asked later by something that outlives the claim's
/// borrow: a table lent to a user under the claim (a borrowing PE's kernel table) refuses
/// writes once the claim has ended, so a handle kept past the release cannot write into
/// the table the kernel has taken back. It grants nothing: it can only say no. It holds
/// the group's state weakly and never the group, so it neither keeps a group alive (a
/// group lives exactly as long as its devices) nor, when asked, counts as a reference.
#[derive(Clone)]
pub struct OwnershipLease {
    state: std::sync::Weak<Mutex<GroupState>>,
    owner: OwnerCookie,
    epoch: u64,
}

impl OwnershipLease {
    /// Whether the group still exists and is owned by the lease's owner in its epoch
    /// ([`Group::is_owned_by`]; the group's state lock, taken and dropped).
    pub fn is_live(&self) -> bool {
        self.while_live(|| ()).is_some()
    }

    /// Runs `f` if the lease is live, holding the group's state lock throughout, so that
    /// the ownership cannot end (a release takes that lock first) between the check and
    /// what `f` does; `None`, without running `f`, if it is not. `f` must not take the
    /// group's lock or any lock taken before it (the core's): the platform's lock order,
    /// core → group → PE → table, lets it write a table.
    pub fn while_live<R>(&self, f: impl FnOnce() -> R) -> Option<R> {
        let st = self.state.upgrade()?;
        let gs = st.lock().unwrap_or_else(|p| p.into_inner());
        gs.owned_by(self.owner, self.epoch).then(f)
    }
}

impl fmt::Debug for OwnershipLease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not `is_live`: formatting must not take the group's lock (a caller holding it
        // would deadlock).
        f.debug_struct("OwnershipLease")
            .field("owner", &self.owner)
            .field("epoch", &self.epoch)
            .finish()
    }
}

impl fmt::Debug for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Group({} #{})", self.0.name, self.0.id.0)
    }
}
