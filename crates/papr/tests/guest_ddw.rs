//! The Linux guest's `enable_ddw` (`LinuxGuestDdw`), driven through the guest-visible
//! interfaces only: every path of kernel.md 2.8 that a QEMU-model host can produce.

mod common;
use common::*;
use spapr_papr::{
    DdwError, DdwWindow, GuestScratch, HStatus, LinuxGuestDdw, PhbConfig, Profile, RtasCall, Spapr,
    SpaprConfig,
};
use spapr_tce::{Access, Gpa};
use vm_memory::{GuestAddress, GuestMemoryMmap};

const SCRATCH: GuestScratch = GuestScratch {
    rtas: 0x30_0000,
    list: 0x31_0000,
};
const CFG: u32 = 1 << 16;
const HI: u32 = (BUID >> 32) as u32;
const LO: u32 = BUID as u32;

fn linux() -> LinuxGuestDdw {
    LinuxGuestDdw::new(SCRATCH, false)
}

/// Something else (another device's driver) already holds the second slot.
fn take_second_slot(s: &Spapr) {
    let made = s.rtas(RtasCall::Create, &[0, HI, LO, 12, 28], 4);
    assert_eq!(made[0], 0);
}

#[test]
fn every_profile_gets_a_direct_window_over_all_ram() {
    for p in Profile::ALL {
        let (s, mem) = guest(p);
        let w = linux().enable_ddw(&s, &mem, 0, CFG, RAM).unwrap();
        assert_eq!(
            w,
            DdwWindow {
                liobn: 0x8000_0001,
                start: DDW_BASE,
                page_shift: 24,
                window_shift: 26,
                direct: true,
                removed_default: false,
            },
            "{p:?}"
        );
        let t = s.table(u64::from(w.liobn)).unwrap();
        for off in [0u64, 0x123_4567, RAM - 8] {
            assert_eq!(
                t.translate(w.start + off, Access::Write),
                Ok(Gpa(off)),
                "{p:?}"
            );
        }
        // The default window is untouched.
        assert_eq!(get(&s, &mem, LIOBN0, 0), Some(0));
    }
}

#[test]
fn a_second_call_reuses_the_window() {
    let (s, mem) = guest(Profile::Kvm);
    let mut g = linux();
    let w = g.enable_ddw(&s, &mem, 0, CFG, RAM).unwrap();
    assert_eq!(g.enable_ddw(&s, &mem, 0, CFG + 0x100, RAM), Ok(w));
    assert_eq!(g.window(BUID), Some(w));
    // No second window was made: the query still shows none free.
    assert_eq!(s.rtas(RtasCall::Query, &[0, HI, LO], 5)[1], 0);
}

#[test]
fn an_unused_default_window_is_cleared_and_removed_when_no_slot_is_free() {
    let (s, mem) = guest(Profile::Kvm);
    take_second_slot(&s);
    let w = linux().enable_ddw(&s, &mem, 0, CFG, RAM).unwrap();
    // The new window took slot 0 (liobn[0]) at the 64-bit base since one is enabled.
    assert_eq!(
        (w.liobn, w.start, w.removed_default),
        (0x8000_0000, DDW_BASE, true)
    );
    assert!(w.direct);
}

#[test]
fn a_default_window_in_use_is_kept_and_the_failure_remembered() {
    let (s, mem) = guest(Profile::Kvm);
    take_second_slot(&s);
    assert_eq!(s.h_put_tce(&mem, LIOBN0, 0x5000, 0x7003), HStatus::Success);
    let mut g = linux();
    assert_eq!(
        g.enable_ddw(&s, &mem, 0, CFG, RAM),
        Err(DdwError::NoWindow("the default window is in use"))
    );
    assert_eq!(
        get(&s, &mem, LIOBN0, 0x5000),
        Some(0x7003),
        "mapping intact"
    );
    assert!(g.failed(BUID));
    // The kernel does not try a failed PE again, even once the window is free.
    assert_eq!(s.h_put_tce(&mem, LIOBN0, 0x5000, 0), HStatus::Success);
    assert_eq!(
        g.enable_ddw(&s, &mem, 0, CFG, RAM),
        Err(DdwError::FailedBefore)
    );
    // A fresh guest (after reboot) does.
    assert!(linux().enable_ddw(&s, &mem, 0, CFG, RAM).is_ok());
}

#[test]
fn a_failed_direct_map_removes_the_window_and_resets_the_default_back() {
    // LoPAR validates each TCE against guest memory: a guest that believes it has twice
    // its RAM fails half-way through the direct map.
    let (s, mem) = guest(Profile::Lopar);
    take_second_slot(&s);
    let err = linux().enable_ddw(&s, &mem, 0, CFG, 2 * RAM).unwrap_err();
    assert_eq!(
        err,
        DdwError::Hcall {
            call: "H_PUT_TCE_INDIRECT",
            status: HStatus::Parameter
        }
    );
    // The reset brought the default window back (zeroed) and no DDW is left.
    assert_eq!(get(&s, &mem, LIOBN0, 0), Some(0));
    assert_eq!(s.h_put_tce(&mem, LIOBN0, 0x1000, 0x1003), HStatus::Success);
    assert_eq!(s.rtas(RtasCall::Query, &[0, HI, LO], 5)[1], 1);
    assert!(s.table(LIOBN1).is_none());
}

#[test]
fn a_failed_direct_map_with_the_default_kept_removes_only_the_new_window() {
    let (s, mem) = guest(Profile::Lopar);
    assert_eq!(s.h_put_tce(&mem, LIOBN0, 0x1000, 0x1003), HStatus::Success);
    assert!(linux().enable_ddw(&s, &mem, 0, CFG, 2 * RAM).is_err());
    assert!(s.table(LIOBN1).is_none(), "the new window is gone");
    assert_eq!(get(&s, &mem, LIOBN0, 0x1000), Some(0x1003), "default kept");
}

#[test]
fn refusals_before_any_call() {
    let (s, mem) = guest(Profile::Kvm);
    assert_eq!(
        LinuxGuestDdw::new(SCRATCH, true).enable_ddw(&s, &mem, 0, CFG, RAM),
        Err(DdwError::Disabled)
    );
    assert_eq!(
        linux().enable_ddw(&s, &mem, 1, CFG, RAM),
        Err(DdwError::NoSuchPhb(1))
    );
    let outside = GuestScratch {
        rtas: RAM,
        list: 0x31_0000,
    };
    assert_eq!(
        LinuxGuestDdw::new(outside, false).enable_ddw(&s, &mem, 0, CFG, RAM),
        Err(DdwError::Scratch)
    );
    let unaligned = GuestScratch {
        rtas: 0x30_0000,
        list: 0x31_0008,
    };
    assert_eq!(
        LinuxGuestDdw::new(unaligned, false).enable_ddw(&s, &mem, 0, CFG, RAM),
        Err(DdwError::Scratch)
    );
    // Nothing was made.
    assert_eq!(s.rtas(RtasCall::Query, &[0, HI, LO], 5)[1], 1);
}

#[test]
fn a_phb_without_ddw_is_not_applicable() {
    let mut phb = PhbConfig::qemu(0);
    phb.ddw = false;
    let s = Spapr::new(SpaprConfig {
        ram_size: RAM,
        phbs: vec![phb],
        ..SpaprConfig::default()
    })
    .unwrap();
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), RAM as usize)]).unwrap();
    let mut g = linux();
    assert_eq!(
        g.enable_ddw(&s, &mem, 0, CFG, RAM),
        Err(DdwError::NotApplicable)
    );
    assert!(g.failed(BUID));
}

/// Every combination of profile, second slot taken or free, default window busy or idle,
/// and a guest that believes in its real RAM or twice it: the outcome and what is left
/// behind follow kernel.md 2.8 (the decision table in the match below).
#[test]
fn the_whole_decision_table() {
    for p in Profile::ALL {
        for slot_taken in [false, true] {
            for default_busy in [false, true] {
                for ram in [RAM, 2 * RAM] {
                    let (s, mem) = guest(p);
                    if slot_taken {
                        take_second_slot(&s);
                    }
                    if default_busy {
                        assert_eq!(s.h_put_tce(&mem, LIOBN0, 0x5000, 0x7003), HStatus::Success);
                    }
                    let case =
                        format!("{p:?} slot_taken={slot_taken} busy={default_busy} ram={ram:#x}");
                    let r = linux().enable_ddw(&s, &mem, 0, CFG, ram);
                    // Only LoPAR checks TCEs against guest memory: a guest wrong about
                    // its RAM fails the direct map there and nowhere else.
                    let map_fails = p == Profile::Lopar && ram > RAM;
                    match (slot_taken, default_busy, map_fails) {
                        (true, true, _) => {
                            assert_eq!(
                                r,
                                Err(DdwError::NoWindow("the default window is in use")),
                                "{case}"
                            );
                            assert_eq!(get(&s, &mem, LIOBN0, 0x5000), Some(0x7003), "{case}");
                            assert!(s.table(LIOBN1).is_some(), "{case}: other window kept");
                        }
                        (false, _, false) => {
                            let w = r.clone().unwrap();
                            assert_eq!(
                                (w.liobn, w.removed_default),
                                (0x8000_0001, false),
                                "{case}"
                            );
                            let busy = default_busy.then_some(0x7003).or(Some(0));
                            assert_eq!(get(&s, &mem, LIOBN0, 0x5000), busy, "{case}");
                        }
                        (true, false, false) => {
                            let w = r.clone().unwrap();
                            assert_eq!((w.liobn, w.removed_default), (0x8000_0000, true), "{case}");
                        }
                        (false, _, true) => {
                            assert!(matches!(r, Err(DdwError::Hcall { .. })), "{case}: {r:?}");
                            assert!(s.table(LIOBN1).is_none(), "{case}: new window removed");
                            let busy = default_busy.then_some(0x7003).or(Some(0));
                            assert_eq!(get(&s, &mem, LIOBN0, 0x5000), busy, "{case}: default kept");
                        }
                        (true, false, true) => {
                            assert!(matches!(r, Err(DdwError::Hcall { .. })), "{case}: {r:?}");
                            // Reset: the default is back (zeroed), every DDW gone.
                            assert_eq!(get(&s, &mem, LIOBN0, 0x5000), Some(0), "{case}");
                            assert!(s.table(LIOBN1).is_none(), "{case}");
                        }
                    }
                    if let Ok(w) = r {
                        assert!(w.direct, "{case}");
                        let t = s.table(u64::from(w.liobn)).unwrap();
                        for off in [0u64, RAM / 2 + 0x1234, RAM - 8] {
                            assert_eq!(
                                t.translate(w.start + off, Access::Read),
                                Ok(Gpa(off)),
                                "{case}"
                            );
                        }
                    }
                }
            }
        }
    }
}
