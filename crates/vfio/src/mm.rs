//! Processes as VFIO sees them: their memory (what pinning finds), their `locked_vm`, and
//! their preregistered regions (arch/powerpc/mm/book3s64/iommu_api.c, `mm_iommu_*`).
//!
//! A locked-memory charge is a value ([`Charge`]): taking it raises the process's
//! `locked_vm` (or fails with -ENOMEM past `RLIMIT_MEMLOCK`), dropping it lowers it again,
//! and the only other way to get rid of one is [`Charge::leak`], which the `linux` profile
//! calls where the kernel forgets to un-charge, and which is counted. So a charge cannot be
//! returned twice or forgotten by accident, and what stays charged after every container
//! is gone is exactly the sum of the leaks.

use iommu_core::Errno;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A process (its `mm`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mm(pub u32);

/// `mm->locked_vm` of one process, shared with the charges held against it. Atomics only
/// so that a [`Charge`] can give its pages back from `Drop`; every change happens under
/// VFIO's state lock.
#[derive(Debug, Default)]
pub(crate) struct LockedVm {
    pages: AtomicU64,
    leaked: AtomicU64,
    /// Pages a drop could not give back (more returned than charged): a bookkeeping bug,
    /// reported by `Vfio::audit`.
    imbalance: AtomicU64,
}

impl LockedVm {
    pub(crate) fn pages(&self) -> u64 {
        self.pages.load(Ordering::Relaxed)
    }
    pub(crate) fn leaked(&self) -> u64 {
        self.leaked.load(Ordering::Relaxed)
    }
    pub(crate) fn imbalance(&self) -> u64 {
        self.imbalance.load(Ordering::Relaxed)
    }
}

/// Pages charged against a process's `locked_vm` (`account_locked_vm`), given back when
/// dropped.
#[must_use = "a charge is given back when dropped; keep it where the pages stay locked"]
#[derive(Debug)]
pub(crate) struct Charge {
    vm: Arc<LockedVm>,
    pages: u64,
}

impl Charge {
    /// `account_locked_vm(mm, pages, true)`: -ENOMEM if the process would pass `limit`
    /// pages (`None`: `CAP_IPC_LOCK`, no limit).
    pub(crate) fn take(vm: &Arc<LockedVm>, pages: u64, limit: Option<u64>) -> Result<Self, Errno> {
        let now = vm.pages();
        let after = now.checked_add(pages).ok_or(Errno::Enomem)?;
        if limit.is_some_and(|l| after > l) {
            return Err(Errno::Enomem);
        }
        vm.pages.store(after, Ordering::Relaxed);
        Ok(Self {
            vm: vm.clone(),
            pages,
        })
    }
    /// Keeps the pages charged for good (a `linux` quirk: the kernel never returns them).
    /// Returns how many.
    pub(crate) fn leak(mut self) -> u64 {
        self.leak_in_place()
    }
    /// [`Charge::leak`] for a charge whose owner lives on (a region the kernel keeps
    /// until the process exits): the pages stay charged for good, nothing is given back
    /// when it drops.
    pub(crate) fn leak_in_place(&mut self) -> u64 {
        let pages = std::mem::take(&mut self.pages);
        self.vm.leaked.fetch_add(pages, Ordering::Relaxed);
        pages
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        let now = self.vm.pages();
        match now.checked_sub(self.pages) {
            Some(left) => self.vm.pages.store(left, Ordering::Relaxed),
            None => {
                self.vm.pages.store(0, Ordering::Relaxed);
                self.vm
                    .imbalance
                    .fetch_add(self.pages - now, Ordering::Relaxed);
            }
        }
    }
}

/// A mapping of a process: user addresses backed by real memory.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Vma {
    pub(crate) ua: u64,
    pub(crate) len: u64,
    pub(crate) page_shift: u32,
    pub(crate) hpa: u64,
}

/// A preregistered region (`mm_iommu_table_group_mem_t`), mm-wide.
#[derive(Debug)]
pub(crate) struct Region {
    pub(crate) ua: u64,
    pub(crate) size: u64,
    pub(crate) page_shift: u32,
    pub(crate) hpa: u64,
    /// Containers that registered it (`mem->used`).
    pub(crate) users: u64,
    /// TCEs pointing into it (`mem->mapped`).
    pub(crate) mapped: u64,
    /// Its pages, charged while it lives.
    pub(crate) _charge: Charge,
}

impl Region {
    pub(crate) fn contains(&self, ua: u64) -> bool {
        ua >= self.ua && ua - self.ua < self.size
    }
}

/// One process.
#[derive(Debug, Default)]
pub(crate) struct Process {
    pub(crate) vmas: Vec<Vma>,
    pub(crate) locked: Arc<LockedVm>,
    pub(crate) regions: Vec<Option<Region>>,
}

impl Process {
    /// The host page size backing real address `hpa` (pins are counted per host page).
    pub(crate) fn host_page_shift(&self, hpa: u64) -> Option<u32> {
        self.vmas
            .iter()
            .find(|v| hpa >= v.hpa && hpa - v.hpa < v.len)
            .map(|v| v.page_shift)
    }

    /// The mapping holding user address `ua`.
    pub(crate) fn vma(&self, ua: u64) -> Option<&Vma> {
        self.vmas.iter().find(|v| ua >= v.ua && ua - v.ua < v.len)
    }

    /// Frees every region no container has registered any more once its last mapping
    /// is gone (a region another container of the mm mapped outlives its unregister until
    /// then); its charge goes back with it.
    pub(crate) fn free_unused_regions(&mut self) {
        for slot in &mut self.regions {
            if slot.as_ref().is_some_and(|r| r.users == 0 && r.mapped == 0) {
                *slot = None;
            }
        }
    }

    /// The live region holding `ua`.
    pub(crate) fn region_of(&mut self, ua: u64) -> Option<&mut Region> {
        self.regions.iter_mut().flatten().find(|r| r.contains(ua))
    }
}

/// Lowers a count that must not go below zero; an impossible balance is recorded (and the
/// count left at zero) so that `Vfio::audit` reports it instead of hiding it.
pub(crate) fn decrement(count: &mut u64, by: u64, what: &str, bad: &mut Vec<String>) {
    match count.checked_sub(by) {
        Some(v) => *count = v,
        None => {
            bad.push(format!("{what}: {} taken from {}", by, *count));
            *count = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_charge_raises_locked_vm_up_to_the_limit_and_gives_it_back_on_drop() {
        let vm = Arc::new(LockedVm::default());
        let a = Charge::take(&vm, 10, Some(16)).unwrap();
        assert_eq!(vm.pages(), 10);
        assert_eq!(Charge::take(&vm, 7, Some(16)).err(), Some(Errno::Enomem));
        assert_eq!(vm.pages(), 10, "a refused charge takes nothing");
        let b = Charge::take(&vm, 6, Some(16)).unwrap();
        assert_eq!(vm.pages(), 16, "up to the limit exactly");
        let c = Charge::take(&vm, 1000, None).unwrap();
        assert_eq!(vm.pages(), 1016, "no limit with CAP_IPC_LOCK");
        assert_eq!(Charge::take(&vm, u64::MAX, None).err(), Some(Errno::Enomem));
        drop(b);
        assert_eq!(vm.pages(), 1010);
        drop(c);
        drop(a);
        assert_eq!((vm.pages(), vm.leaked(), vm.imbalance()), (0, 0, 0));
    }

    #[test]
    fn a_leaked_charge_stays_and_is_counted() {
        let vm = Arc::new(LockedVm::default());
        let a = Charge::take(&vm, 5, None).unwrap();
        let _b = Charge::take(&vm, 3, None).unwrap();
        assert_eq!(a.leak(), 5);
        assert_eq!((vm.pages(), vm.leaked()), (8, 5));
    }

    #[test]
    fn a_drop_that_finds_fewer_pages_than_it_holds_reports_the_imbalance() {
        let vm = Arc::new(LockedVm::default());
        let a = Charge::take(&vm, 5, None).unwrap();
        vm.pages.store(2, Ordering::Relaxed);
        drop(a);
        assert_eq!((vm.pages(), vm.imbalance()), (0, 3));
    }

    #[test]
    fn decrement_records_an_impossible_balance() {
        let mut bad = Vec::new();
        let mut n = 5;
        decrement(&mut n, 5, "x", &mut bad);
        assert_eq!((n, bad.len()), (0, 0));
        n = 2;
        decrement(&mut n, 3, "region users", &mut bad);
        assert_eq!(n, 0);
        assert_eq!(bad, vec!["region users: 3 taken from 2".to_string()]);
    }

    #[test]
    fn lookups_find_the_mapping_the_region_and_the_host_page_size() {
        let vm = Arc::new(LockedVm::default());
        let mut p = Process {
            vmas: vec![
                Vma {
                    ua: 0x1000_0000,
                    len: 0x2_0000,
                    page_shift: 16,
                    hpa: 0x8000_0000,
                },
                Vma {
                    ua: 0x2000_0000,
                    len: 0x1000,
                    page_shift: 12,
                    hpa: 0x9000_0000,
                },
            ],
            locked: vm.clone(),
            regions: vec![
                None,
                Some(Region {
                    ua: 0x1000_0000,
                    size: 0x2_0000,
                    page_shift: 16,
                    hpa: 0x8000_0000,
                    users: 1,
                    mapped: 0,
                    _charge: Charge::take(&vm, 2, None).unwrap(),
                }),
            ],
        };
        assert_eq!(p.vma(0x1001_ffff).map(|v| v.hpa), Some(0x8000_0000));
        assert!(p.vma(0x1002_0000).is_none(), "one past the end");
        assert!(p.vma(0x0fff_ffff).is_none());
        assert_eq!(p.vma(0x2000_0fff).map(|v| v.page_shift), Some(12));
        assert_eq!(p.host_page_shift(0x8001_0000), Some(16));
        assert_eq!(p.host_page_shift(0x9000_0000), Some(12));
        assert_eq!(p.host_page_shift(0x9000_1000), None);
        assert_eq!(p.region_of(0x1001_0000).map(|r| r.size), Some(0x2_0000));
        assert!(p.region_of(0x1002_0000).is_none());
        assert!(p.region_of(0x0fff_ffff).is_none());
    }
}
