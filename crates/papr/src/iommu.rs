//! Translation for VMM device models: a PHB's windows as a `vm_memory::Iommu`, so that
//! `IommuMemory` routes a virtio device's DMA through the guest's TCE tables.
//!
//! The IOTLB is filled on a miss from the tables, one IOMMU page per entry, with the
//! entry's permission; every table change invalidates the range it touched (the tables'
//! kill hook), so an entry that narrows or disappears is never used from the IOTLB. A hit
//! takes one read lock and allocates nothing.

use crate::spapr::PhbShared;
use std::sync::{Arc, RwLockReadGuard};
use vm_memory::iommu::{Error, Iommu, Iotlb, IotlbIterator, IovaRange};
use vm_memory::{GuestAddress, Permissions};

/// One PHB's DMA translation.
#[derive(Debug, Clone)]
pub struct PhbIommu {
    shared: Arc<PhbShared>,
}

fn perms(bits: u64) -> Permissions {
    match bits & 3 {
        1 => Permissions::Read,
        2 => Permissions::Write,
        3 => Permissions::ReadWrite,
        _ => Permissions::No,
    }
}

impl PhbIommu {
    pub(crate) fn new(shared: Arc<PhbShared>) -> Self {
        Self { shared }
    }

    /// Fills the IOTLB for `[start, end)` from the tables; the reason if some page has no
    /// usable entry.
    fn refill(&self, start: u64, end: u64) -> Result<(), String> {
        // IOTLB lock first, then the entries: a table change stores its entry before it
        // takes this lock to invalidate, so a refill never outlives a change it missed.
        let mut tlb = self.shared.iotlb.fill();
        let slots = self.shared.read();
        let mut a = start;
        while a < end {
            let Some(t) = slots
                .iter()
                .filter_map(|s| s.table.as_ref())
                .find(|t| t.index_of(a).is_some())
            else {
                return Err(format!("{a:#x} is outside every DMA window"));
            };
            let shift = t.page_shift();
            let page = a & !((1u64 << shift) - 1);
            let Some(i) = t.index_of(page) else {
                return Err(format!("{a:#x} is outside every DMA window"));
            };
            let raw = t.tces.get(i).map_or(0, |e| e.0);
            if raw & 3 == 0 {
                return Err(format!("no TCE for {page:#x} (LIOBN {:#x})", t.liobn));
            }
            let target = raw & !((1u64 << shift) - 1);
            tlb.set_mapping(
                GuestAddress(page),
                GuestAddress(target),
                (1u64 << shift) as usize,
                perms(raw),
            )
            .map_err(|e| e.to_string())?;
            a = page.saturating_add(1 << shift);
            if a == u64::MAX {
                break;
            }
        }
        Ok(())
    }
}

impl Iommu for PhbIommu {
    type IotlbGuard<'a> = RwLockReadGuard<'a, Iotlb>;

    fn translate(
        &self,
        iova: GuestAddress,
        length: usize,
        access: Permissions,
    ) -> Result<IotlbIterator<Self::IotlbGuard<'_>>, Error> {
        let fail = |reason: String| Error::CannotResolve {
            iova_range: IovaRange { base: iova, length },
            reason,
        };
        for attempt in 0..2 {
            let guard = self.shared.iotlb.read();
            let fails = match Iotlb::lookup(guard, iova, length, access) {
                Ok(hit) => return Ok(hit),
                Err(f) => f,
            };
            if !fails.access_fails.is_empty() {
                return Err(fail(format!(
                    "the TCE does not permit {access:?} at {:#x}",
                    fails.access_fails[0].base.0
                )));
            }
            if attempt == 1 {
                break;
            }
            for m in &fails.misses {
                let end = m.base.0.saturating_add(m.length as u64);
                self.refill(m.base.0, end).map_err(&fail)?;
            }
        }
        Err(fail("mapping changed while translating".into()))
    }
}
