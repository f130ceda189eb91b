//! A vCPU handle ([`spapr_papr::Vcpu`]) made before a window change and used after it
//! returned: each change that replaces a table (restore, remove, create, a reset of another
//! PHB) must be seen by the handle's next call, so the call answers as the locked call would
//! and stores into the current table, never into the one that went. (Racing changes are
//! the loom models' and the stress test's.)

mod common;
use common::*;
use spapr_papr::{HStatus, PhbConfig, Profile, RtasCall, Spapr, SpaprConfig};
use vm_memory::{GuestAddress, GuestMemoryMmap};

const HI: u32 = (BUID >> 32) as u32;
const LO: u32 = BUID as u32;

#[test]
fn a_call_after_a_restore_writes_the_restored_table() {
    let (s, mem) = guest(Profile::Kvm);
    let saved = s.save_phb(0).unwrap();
    let mut v = s.vcpu();
    assert_eq!(
        v.h_put_tce(&mem, LIOBN0, 0x1000, 0x5_0001),
        HStatus::Success
    );
    let old = s.table(LIOBN0).unwrap();
    s.restore_phb(0, &saved).unwrap();
    assert_eq!(
        v.h_put_tce(&mem, LIOBN0, 0x2000, 0x6_0001),
        HStatus::Success
    );
    assert_eq!(
        old.entry_at(0x2000).map(|t| t.0),
        Some(0),
        "the old table got it"
    );
    let now = s.table(LIOBN0).unwrap();
    assert_eq!(now.entry_at(0x2000).map(|t| t.0), Some(0x6_0001));
    assert_eq!(
        now.entry_at(0x1000).map(|t| t.0),
        Some(0),
        "restored as saved"
    );
    assert_eq!(
        v.h_get_tce(&mem, LIOBN0, 0x1000),
        (HStatus::Success, Some(0))
    );
}

#[test]
fn a_call_after_a_remove_is_refused_and_the_old_table_is_untouched() {
    let (s, mem) = guest(Profile::Kvm);
    assert_eq!(
        s.rtas(RtasCall::Create, &[0, HI, LO, 16, 30], 4),
        vec![0, 0x8000_0001, 0x0800_0000, 0]
    );
    let mut v = s.vcpu();
    assert_eq!(
        v.h_put_tce(&mem, LIOBN1, DDW_BASE, 0x10_0001),
        HStatus::Success
    );
    let old = s.table(LIOBN1).unwrap();
    assert_eq!(s.rtas(RtasCall::Remove, &[0x8000_0001], 1), vec![0]);
    assert_eq!(
        v.h_put_tce(&mem, LIOBN1, DDW_BASE + 0x1_0000, 0x20_0001),
        HStatus::Parameter,
        "the window went: the locked call refuses it too"
    );
    assert_eq!(
        s.h_put_tce(&mem, LIOBN1, DDW_BASE + 0x1_0000, 0x20_0001),
        HStatus::Parameter
    );
    assert_eq!(old.entry_at(DDW_BASE + 0x1_0000).map(|t| t.0), Some(0));
    assert!(s.check().is_empty());
}

#[test]
fn a_call_after_a_create_reaches_the_new_window() {
    let (s, mem) = guest(Profile::Kvm);
    let mut v = s.vcpu();
    assert_eq!(
        v.h_put_tce(&mem, LIOBN1, DDW_BASE, 0x10_0001),
        HStatus::Parameter,
        "no DDW yet"
    );
    assert_eq!(s.rtas(RtasCall::Create, &[0, HI, LO, 16, 30], 4)[0], 0);
    assert_eq!(
        v.h_put_tce(&mem, LIOBN1, DDW_BASE, 0x10_0001),
        HStatus::Success
    );
    let t = s.table(LIOBN1).unwrap();
    assert_eq!(t.entry_at(DDW_BASE).map(|t| t.0), Some(0x10_0001));
}

#[test]
fn a_call_on_a_second_phb_after_its_reset_writes_its_current_table() {
    let s = Spapr::new(SpaprConfig {
        profile: Profile::Kvm,
        ram_size: RAM,
        phbs: vec![PhbConfig::qemu(0), PhbConfig::qemu(1)],
        vio: vec![],
    })
    .unwrap();
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), RAM as usize)]).unwrap();
    let phb1 = u64::from(spapr_papr::spapr::pci_liobn(1, 0));
    let mut v = s.vcpu();
    assert_eq!(v.h_put_tce(&mem, phb1, 0x1000, 0x5_0001), HStatus::Success);
    assert_eq!(
        v.h_put_tce(&mem, LIOBN0, 0x1000, 0x7_0001),
        HStatus::Success
    );
    let old = s.table(phb1).unwrap();
    s.reset_phb(1);
    assert_eq!(v.h_put_tce(&mem, phb1, 0x2000, 0x6_0001), HStatus::Success);
    assert_eq!(old.entry_at(0x2000).map(|t| t.0), Some(0));
    let now = s.table(phb1).unwrap();
    assert_eq!(now.entry_at(0x2000).map(|t| t.0), Some(0x6_0001));
    assert_eq!(
        now.entry_at(0x1000).map(|t| t.0),
        Some(0),
        "reset zeroed it"
    );
    // PHB 0 was left alone.
    assert_eq!(
        s.table(LIOBN0).unwrap().entry_at(0x1000).map(|t| t.0),
        Some(0x7_0001)
    );
}

#[test]
fn an_idle_handle_lets_go_of_a_removed_window_when_told() {
    let (s, mem) = guest(Profile::Kvm);
    assert_eq!(s.rtas(RtasCall::Create, &[0, HI, LO, 16, 30], 4)[0], 0);
    let mut v = s.vcpu();
    let old = s.table(LIOBN1).unwrap();
    assert_eq!(
        std::sync::Arc::strong_count(&old),
        3,
        "the slot's, ours, the handle's"
    );
    assert_eq!(s.rtas(RtasCall::Remove, &[0x8000_0001], 1), vec![0]);
    assert_eq!(
        std::sync::Arc::strong_count(&old),
        2,
        "the handle still holds it"
    );
    v.forget_stale();
    assert_eq!(std::sync::Arc::strong_count(&old), 1);
    // Nothing changed since: a second call changes nothing, and the answers are the same.
    v.forget_stale();
    assert_eq!(
        v.h_put_tce(&mem, LIOBN1, DDW_BASE, 0x10_0001),
        HStatus::Parameter
    );
    assert_eq!(
        v.h_put_tce(&mem, LIOBN0, 0x1000, 0x5_0001),
        HStatus::Success
    );
}
