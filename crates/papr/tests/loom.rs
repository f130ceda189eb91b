//! Loom models of the translation protocol (`iotlb.rs`): a device's lookup against a
//! table change, and against window removal and PHB reset. In every interleaving, a
//! translation that begins after the change returned must not use the old entry. The same
//! for a vCPU handle's hypercalls (`vcpu.rs`, `slots.rs`), and for RTAS calls racing each
//! other (a create against the removal that resets the PHB).
//! Run with `RUSTFLAGS="--cfg loom" cargo test -p spapr-papr --test loom --release`.
#![cfg(loom)]

use loom::sync::atomic::{AtomicBool, Ordering};
use loom::thread;
use spapr_papr::{HStatus, PhbConfig, Profile, RtasCall, Spapr, SpaprConfig};
use spapr_tce::Access;
use std::sync::Arc;
use vm_memory::iommu::Iommu;
use vm_memory::{GuestAddress, GuestMemoryMmap, Permissions};

const BUID: u64 = 0x0800_0000_2000_0000;

/// A guest with one PHB whose default window has 4 pages (one-level table).
fn small_guest(ddw: bool) -> Spapr {
    Spapr::new(SpaprConfig {
        profile: Profile::Kvm,
        ram_size: 1 << 20,
        phbs: vec![PhbConfig {
            ddw,
            dma_win_size: 0x4000,
            ..PhbConfig::qemu(0)
        }],
        vio: vec![],
    })
    .unwrap()
}

fn memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap()
}

#[test]
fn a_lookup_after_a_cleared_tce_returned_misses() {
    let mem = Arc::new(memory());
    loom::model(move || {
        let s = Arc::new(small_guest(false));
        assert_eq!(
            s.h_put_tce(&*mem, 0x8000_0000, 0x1000, 0x5_0000 | 1),
            HStatus::Success
        );
        let done = Arc::new(AtomicBool::new(false));
        let writer = {
            let (s, mem, done) = (s.clone(), mem.clone(), done.clone());
            thread::spawn(move || {
                assert_eq!(s.h_put_tce(&*mem, 0x8000_0000, 0x1000, 0), HStatus::Success);
                done.store(true, Ordering::Release);
            })
        };
        let iommu = s.phb_iommu(0).unwrap();
        // The first lookup may fill the IOTLB before or after the clear.
        let first = iommu
            .translate(GuestAddress(0x1008), 8, Permissions::Read)
            .is_ok();
        let cleared = done.load(Ordering::Acquire);
        let second = iommu
            .translate(GuestAddress(0x1008), 8, Permissions::Read)
            .is_ok();
        if cleared {
            assert!(
                !second,
                "a lookup after the clear returned used the old entry"
            );
        }
        let _ = first;
        writer.join().unwrap();
        assert!(iommu
            .translate(GuestAddress(0x1008), 8, Permissions::Read)
            .is_err());
        assert!(s.check().is_empty());
    });
}

#[test]
fn a_lookup_after_a_replaced_tce_returned_sees_the_new_page() {
    let mem = Arc::new(memory());
    loom::model(move || {
        let s = Arc::new(small_guest(false));
        assert_eq!(
            s.h_put_tce(&*mem, 0x8000_0000, 0, 0x5_0000 | 3),
            HStatus::Success
        );
        let done = Arc::new(AtomicBool::new(false));
        let writer = {
            let (s, mem, done) = (s.clone(), mem.clone(), done.clone());
            thread::spawn(move || {
                assert_eq!(
                    s.h_put_tce(&*mem, 0x8000_0000, 0, 0x6_0000 | 1),
                    HStatus::Success
                );
                done.store(true, Ordering::Release);
            })
        };
        let iommu = s.phb_iommu(0).unwrap();
        let _ = iommu.translate(GuestAddress(0x10), 8, Permissions::Write);
        let replaced = done.load(Ordering::Acquire);
        let read = iommu
            .translate(GuestAddress(0x10), 8, Permissions::Read)
            .map(|mut it| it.next().unwrap().base.0);
        let write = iommu
            .translate(GuestAddress(0x10), 8, Permissions::Write)
            .is_ok();
        if replaced {
            assert_eq!(read.unwrap(), 0x6_0010);
            assert!(!write, "write permission outlived its TCE");
        }
        writer.join().unwrap();
    });
}

#[test]
fn a_device_translator_sees_a_clear_that_returned() {
    let mem = Arc::new(memory());
    loom::model(move || {
        let s = Arc::new(small_guest(false));
        assert_eq!(
            s.h_put_tce(&*mem, 0x8000_0000, 0x2000, 0x5_0000 | 1),
            HStatus::Success
        );
        let done = Arc::new(AtomicBool::new(false));
        let writer = {
            let (s, mem, done) = (s.clone(), mem.clone(), done.clone());
            thread::spawn(move || {
                assert_eq!(
                    s.h_stuff_tce(&*mem, 0x8000_0000, 0x2000, 0, 1),
                    HStatus::Success
                );
                done.store(true, Ordering::Release);
            })
        };
        let mut own = s.device_translator(0).unwrap();
        let _ = own.translate(0x2000, Access::Read);
        if done.load(Ordering::Acquire) {
            assert!(own.translate(0x2000, Access::Read).is_err());
        }
        writer.join().unwrap();
    });
}

/// A window removal (RTAS) or a PHB reset against a device translating through the
/// window: once the call returned, the window's addresses fault, in both translators.
fn window_change_against_lookup(change: fn(&Spapr, u32)) {
    let mem = Arc::new(memory());
    loom::model(move || {
        let s = Arc::new(small_guest(true));
        let rets = s.rtas(
            RtasCall::Create,
            &[0, (BUID >> 32) as u32, BUID as u32, 12, 14],
            4,
        );
        assert_eq!(rets[0], 0);
        let (liobn, start) = (rets[1], (u64::from(rets[2]) << 32) | u64::from(rets[3]));
        assert_eq!(
            s.h_put_tce(&*mem, u64::from(liobn), start, 0x7_0000 | 1),
            HStatus::Success
        );
        let done = Arc::new(AtomicBool::new(false));
        let writer = {
            let (s, done) = (s.clone(), done.clone());
            thread::spawn(move || {
                change(&s, liobn);
                done.store(true, Ordering::Release);
            })
        };
        let iommu = s.phb_iommu(0).unwrap();
        let mut own = s.device_translator(0).unwrap();
        let _ = iommu.translate(GuestAddress(start), 8, Permissions::Read);
        let _ = own.translate(start, Access::Read);
        if done.load(Ordering::Acquire) {
            assert!(iommu
                .translate(GuestAddress(start), 8, Permissions::Read)
                .is_err());
            assert!(own.translate(start, Access::Read).is_err());
        }
        writer.join().unwrap();
    });
}

#[test]
fn a_lookup_after_a_window_removal_returned_faults() {
    window_change_against_lookup(|s, liobn| {
        assert_eq!(s.rtas(RtasCall::Remove, &[liobn], 1), vec![0]);
    });
}

#[test]
fn a_lookup_after_a_phb_reset_returned_faults() {
    window_change_against_lookup(|s, _| s.reset_phb(0));
}

/// A vCPU handle ([`spapr_papr::Vcpu`], no lock on the way to the table) made and used
/// while another thread resets the PHB twice: a call that begins after the resets returned
/// stores into the default window's current table, whatever snapshot the handle took while
/// they ran. Seen to fail with the handle's counter check removed, and with its snapshot
/// reading the slots before loading the counter.
#[test]
fn a_vcpu_call_after_window_changes_returned_uses_the_current_table() {
    let mem = Arc::new(memory());
    loom::model(move || {
        let s = Arc::new(small_guest(false));
        let done = Arc::new(AtomicBool::new(false));
        let writer = {
            let (s, done) = (s.clone(), done.clone());
            thread::spawn(move || {
                s.reset_phb(0);
                s.reset_phb(0);
                done.store(true, Ordering::Release);
            })
        };
        let mut vcpu = s.vcpu();
        // Racing the resets: it may land in any of the three tables.
        assert_eq!(
            vcpu.h_put_tce(&*mem, 0x8000_0000, 0x1000, 0x5_0000 | 1),
            HStatus::Success
        );
        if done.load(Ordering::Acquire) {
            assert_eq!(
                vcpu.h_put_tce(&*mem, 0x8000_0000, 0x2000, 0x6_0000 | 1),
                HStatus::Success
            );
            let now = s.table(0x8000_0000).unwrap();
            assert_eq!(
                now.entry_at(0x2000).map(|t| t.0),
                Some(0x6_0000 | 1),
                "a call after the resets returned wrote a table that had gone"
            );
        }
        writer.join().unwrap();
        assert!(s.check().is_empty());
    });
}

/// The RTAS remove of the last window resets the PHB when that window was not the default
/// one (`spapr_phb_dma_reset`); a create racing it must not be undone by that reset. A
/// create that succeeded leaves its window (64K pages) in place whatever the interleaving.
/// Seen to fail when the removal and its reset took the slots' lock twice (the create got
/// the freed slot in between and the reset replaced its window with the 4K default).
#[test]
fn a_create_racing_the_last_removal_is_not_undone_by_its_reset() {
    loom::model(|| {
        let s = Arc::new(small_guest(true));
        let (hi, lo) = ((BUID >> 32) as u32, BUID as u32);
        assert_eq!(s.rtas(RtasCall::Create, &[0, hi, lo, 12, 14], 4)[0], 0);
        assert_eq!(s.rtas(RtasCall::Remove, &[0x8000_0000], 1), vec![0]);
        let remover = {
            let s = s.clone();
            thread::spawn(move || {
                assert_eq!(s.rtas(RtasCall::Remove, &[0x8000_0001], 1), vec![0]);
            })
        };
        let rets = s.rtas(RtasCall::Create, &[0, hi, lo, 16, 17], 4);
        remover.join().unwrap();
        if rets[0] == 0 {
            let t = s
                .table(u64::from(rets[1]))
                .expect("the created window is gone");
            assert_eq!(t.page_shift(), 16, "the created window was replaced");
        }
        assert!(s.check().is_empty());
    });
}

/// A vCPU handle against the removal of the window it writes: once the removal returned,
/// the handle's next call on that LIOBN is refused (H_PARAMETER, as the locked call), and
/// the removed table gets no store from it. Seen to fail with the handle's counter check
/// removed.
#[test]
fn a_vcpu_call_after_its_window_was_removed_is_refused() {
    let mem = Arc::new(memory());
    loom::model(move || {
        let s = Arc::new(small_guest(true));
        let (hi, lo) = ((BUID >> 32) as u32, BUID as u32);
        let rets = s.rtas(RtasCall::Create, &[0, hi, lo, 12, 14], 4);
        assert_eq!(rets[0], 0);
        let (liobn, start) = (
            u64::from(rets[1]),
            (u64::from(rets[2]) << 32) | u64::from(rets[3]),
        );
        let old = s.table(liobn).unwrap();
        let mut vcpu = s.vcpu();
        let done = Arc::new(AtomicBool::new(false));
        let remover = {
            let (s, done) = (s.clone(), done.clone());
            thread::spawn(move || {
                assert_eq!(s.rtas(RtasCall::Remove, &[liobn as u32], 1), vec![0]);
                done.store(true, Ordering::Release);
            })
        };
        // Racing the removal: stored into the window, or refused.
        let first = vcpu.h_put_tce(&*mem, liobn, start, 0x5_0000 | 1);
        assert!(matches!(first, HStatus::Success | HStatus::Parameter));
        if done.load(Ordering::Acquire) {
            assert_eq!(
                vcpu.h_put_tce(&*mem, liobn, start + 0x1000, 0x6_0000 | 1),
                HStatus::Parameter
            );
            assert_eq!(old.entry_at(start + 0x1000).map(|t| t.0), Some(0));
        }
        remover.join().unwrap();
        assert!(s.table(liobn).is_none());
    });
}
