//! The Linux guest's `enable_ddw` (`LinuxGuestDdw`), driven through the guest-visible
//! interfaces only: every path of kernel.md 2.8 that a QEMU-model host can produce.

mod common;
use common::*;
use spapr_papr::{
    DdwError, DdwRequest, DdwWindow, GuestCall, GuestScratch, HStatus, LinuxGuestDdw, PhbConfig,
    Profile, RtasCall, Spapr, SpaprConfig,
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
        let w = linux()
            .enable_ddw(&s, &mem, &DdwRequest::new(0, CFG, RAM))
            .unwrap();
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
    let w = g
        .enable_ddw(&s, &mem, &DdwRequest::new(0, CFG, RAM))
        .unwrap();
    assert_eq!(
        g.enable_ddw(&s, &mem, &DdwRequest::new(0, CFG + 0x100, RAM)),
        Ok(w)
    );
    assert_eq!(g.window(BUID), Some(w));
    // No second window was made: the query still shows none free.
    assert_eq!(s.rtas(RtasCall::Query, &[0, HI, LO], 5)[1], 0);
}

#[test]
fn an_unused_default_window_is_cleared_and_removed_when_no_slot_is_free() {
    let (s, mem) = guest(Profile::Kvm);
    take_second_slot(&s);
    let w = linux()
        .enable_ddw(&s, &mem, &DdwRequest::new(0, CFG, RAM))
        .unwrap();
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
    let mut g = linux();
    // A driver maps a page through the kernel's allocator: page 0 is reserved, so it is
    // given bus address 0x1000.
    assert_eq!(
        g.dma_map_default(&s, &mem, 0, 0x7000, 4096, false),
        Ok(0x1000)
    );
    assert_eq!(g.default_pages_in_use(BUID), 1);
    assert_eq!(
        g.enable_ddw(&s, &mem, &DdwRequest::new(0, CFG, RAM)),
        Err(DdwError::NoWindow("the default window is in use"))
    );
    assert_eq!(
        get(&s, &mem, LIOBN0, 0x1000),
        Some(0x7003),
        "mapping intact"
    );
    assert!(g.failed(BUID));
    // The kernel does not try a failed PE again, even once the window is free.
    g.dma_unmap_default(&s, &mem, 0, 0x1000, 4096).unwrap();
    assert_eq!(g.default_pages_in_use(BUID), 0);
    assert_eq!(get(&s, &mem, LIOBN0, 0x1000), Some(0));
    assert_eq!(
        g.enable_ddw(&s, &mem, &DdwRequest::new(0, CFG, RAM)),
        Err(DdwError::FailedBefore)
    );
    // A fresh guest (after reboot) does.
    assert!(linux()
        .enable_ddw(&s, &mem, &DdwRequest::new(0, CFG, RAM))
        .is_ok());
}

#[test]
fn a_failed_direct_map_removes_the_window_and_resets_the_default_back() {
    // LoPAR validates each TCE against guest memory: a guest that believes it has twice
    // its RAM fails half-way through the direct map.
    let (s, mem) = guest(Profile::Lopar);
    take_second_slot(&s);
    let err = linux()
        .enable_ddw(&s, &mem, &DdwRequest::new(0, CFG, 2 * RAM))
        .unwrap_err();
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
    assert!(linux()
        .enable_ddw(&s, &mem, &DdwRequest::new(0, CFG, 2 * RAM))
        .is_err());
    assert!(s.table(LIOBN1).is_none(), "the new window is gone");
    assert_eq!(get(&s, &mem, LIOBN0, 0x1000), Some(0x1003), "default kept");
}

#[test]
fn refusals_before_any_call() {
    let (s, mem) = guest(Profile::Kvm);
    assert_eq!(
        LinuxGuestDdw::new(SCRATCH, true).enable_ddw(&s, &mem, &DdwRequest::new(0, CFG, RAM)),
        Err(DdwError::Disabled)
    );
    assert_eq!(
        linux().enable_ddw(&s, &mem, &DdwRequest::new(1, CFG, RAM)),
        Err(DdwError::NoSuchPhb(1))
    );
    let outside = GuestScratch {
        rtas: RAM,
        list: 0x31_0000,
    };
    assert_eq!(
        LinuxGuestDdw::new(outside, false).enable_ddw(&s, &mem, &DdwRequest::new(0, CFG, RAM)),
        Err(DdwError::Scratch)
    );
    let unaligned = GuestScratch {
        rtas: 0x30_0000,
        list: 0x31_0008,
    };
    assert_eq!(
        LinuxGuestDdw::new(unaligned, false).enable_ddw(&s, &mem, &DdwRequest::new(0, CFG, RAM)),
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
        g.enable_ddw(&s, &mem, &DdwRequest::new(0, CFG, RAM)),
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
                    let mut g = linux();
                    if default_busy {
                        let bus = g.dma_map_default(&s, &mem, 0, 0x7000, 4096, false);
                        assert_eq!(bus, Ok(0x1000));
                    }
                    let case =
                        format!("{p:?} slot_taken={slot_taken} busy={default_busy} ram={ram:#x}");
                    let r = g.enable_ddw(&s, &mem, &DdwRequest::new(0, CFG, ram));
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
                            assert_eq!(get(&s, &mem, LIOBN0, 0x1000), Some(0x7003), "{case}");
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
                            assert_eq!(get(&s, &mem, LIOBN0, 0x1000), busy, "{case}");
                        }
                        (true, false, false) => {
                            let w = r.clone().unwrap();
                            assert_eq!((w.liobn, w.removed_default), (0x8000_0000, true), "{case}");
                        }
                        (false, _, true) => {
                            assert!(matches!(r, Err(DdwError::Hcall { .. })), "{case}: {r:?}");
                            assert!(s.table(LIOBN1).is_none(), "{case}: new window removed");
                            let busy = default_busy.then_some(0x7003).or(Some(0));
                            assert_eq!(get(&s, &mem, LIOBN0, 0x1000), busy, "{case}: default kept");
                        }
                        (true, false, true) => {
                            assert!(matches!(r, Err(DdwError::Hcall { .. })), "{case}: {r:?}");
                            // Reset: the default is back (zeroed), every DDW gone.
                            assert_eq!(get(&s, &mem, LIOBN0, 0x1000), Some(0), "{case}");
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

/// Every call the guest made, as `name liobn-or-first-arg`.
fn record(
    s: &Spapr,
    mem: &GuestMemoryMmap,
    g: &mut LinuxGuestDdw,
    req: &DdwRequest,
) -> (Result<DdwWindow, DdwError>, Vec<String>) {
    let mut calls = Vec::new();
    let r = g.enable_ddw_observed(s, mem, req, &mut |c| {
        calls.push(match c {
            GuestCall::Hcall { name, args, status } => {
                format!(
                    "{name} {:#x} {:#x} n={} {status}",
                    args[0], args[1], args[3]
                )
            }
            GuestCall::Rtas {
                name, args, rets, ..
            } => {
                let first = args.first().map_or("-".into(), |a| format!("{a:#x}"));
                format!("{name} {first} -> {:?}", rets.first().map(|r| *r as i32))
            }
        })
    });
    (r, calls)
}

#[test]
fn the_observer_sees_every_call_in_order() {
    let (s, mem) = guest(Profile::Kvm);
    let (r, calls) = record(&s, &mem, &mut linux(), &DdwRequest::new(0, CFG, RAM));
    assert!(r.is_ok());
    assert_eq!(
        calls,
        vec![
            "ibm,query-pe-dma-window 0x10000 -> Some(0)",
            "ibm,create-pe-dma-window 0x10000 -> Some(0)",
            "H_PUT_TCE_INDIRECT 0x80000001 0x800000000000000 n=4 H_SUCCESS",
        ]
    );
}

#[test]
fn an_entry_the_allocator_did_not_hand_out_does_not_keep_the_default_window() {
    // Linux asks its allocator, never the entries: a TCE set behind its back is cleared
    // with the rest of the window, which is then removed.
    let (s, mem) = guest(Profile::Kvm);
    take_second_slot(&s);
    assert_eq!(s.h_put_tce(&mem, LIOBN0, 0x5000, 0x7003), HStatus::Success);
    let (r, calls) = record(&s, &mem, &mut linux(), &DdwRequest::new(0, CFG, RAM));
    let w = r.unwrap();
    assert!(w.removed_default);
    assert!(
        !calls.iter().any(|c| c.starts_with("H_GET_TCE")),
        "{calls:#?}"
    );
    // 1 GiB of 4K pages: 512 H_STUFF_TCE calls of 512 entries, then the remove.
    let stuffs = calls
        .iter()
        .filter(|c| c.starts_with("H_STUFF_TCE 0x80000000"))
        .count();
    assert_eq!(stuffs, 512);
    let remove = calls
        .iter()
        .position(|c| c.starts_with("ibm,remove-pe-dma-window"))
        .unwrap();
    assert!(
        calls[..remove]
            .iter()
            .filter(|c| c.starts_with("H_STUFF_TCE"))
            .count()
            == 512
    );
}

#[test]
fn a_failed_direct_map_clears_the_new_window_before_removing_it() {
    let (s, mem) = guest(Profile::Lopar);
    let (r, calls) = record(&s, &mem, &mut linux(), &DdwRequest::new(0, CFG, 2 * RAM));
    assert!(matches!(
        r,
        Err(DdwError::Hcall {
            call: "H_PUT_TCE_INDIRECT",
            ..
        })
    ));
    let failed = calls
        .iter()
        .position(|c| c.starts_with("H_PUT_TCE_INDIRECT") && !c.ends_with("H_SUCCESS"))
        .unwrap();
    let tail: Vec<&str> = calls[failed + 1..].iter().map(|c| c.as_str()).collect();
    // 128 MiB of 16M pages: one H_STUFF_TCE of 8 entries over the new window, then remove.
    assert_eq!(
        tail,
        vec![
            "H_STUFF_TCE 0x80000001 0x800000000000000 n=8 H_SUCCESS",
            "ibm,remove-pe-dma-window 0x80000001 -> Some(0)",
        ]
    );
}

#[test]
fn a_table_backed_window_is_cleared_as_iommu_init_table_does() {
    // 128 GiB may be hot-plugged, the device has a 36-bit mask: a 64 GiB window of 16M
    // pages (4096 TCEs), left to the guest's table and cleared first.
    let (s, mem) = guest(Profile::Kvm);
    let req = DdwRequest {
        max_memory: 128 << 30,
        dma_mask: (1 << 36) - 1,
        ..DdwRequest::new(0, CFG, RAM)
    };
    let (r, calls) = record(&s, &mem, &mut linux(), &req);
    let w = r.unwrap();
    assert_eq!((w.window_shift, w.direct), (36, false));
    assert_eq!(w.dt_property(), "linux,dma64-ddr-window-info");
    let stuffs: Vec<&String> = calls
        .iter()
        .filter(|c| c.starts_with("H_STUFF_TCE"))
        .collect();
    assert_eq!(stuffs.len(), 8, "{calls:#?}");
    assert!(stuffs
        .iter()
        .all(|c| c.contains("0x80000001") && c.contains("n=512")));
    assert!(!calls.iter().any(|c| c.starts_with("H_PUT_TCE_INDIRECT")));
}

#[test]
fn the_window_is_sized_from_the_largest_memory_and_maps_present_ram_only() {
    // 256 MiB may be plugged; present: [0, 32M) and [48M, 64M). 16M pages: 16 TCEs.
    let (s, mem) = guest(Profile::Lopar);
    let req = DdwRequest {
        max_memory: 256 << 20,
        present: vec![(48 << 20, 16 << 20), (0, 32 << 20)],
        ..DdwRequest::new(0, CFG, RAM)
    };
    let w = linux().enable_ddw(&s, &mem, &req).unwrap();
    assert_eq!((w.page_shift, w.window_shift, w.direct), (24, 28, true));
    let t = s.table(u64::from(w.liobn)).unwrap();
    let mapped: Vec<u64> = (0..16)
        .filter(|i| t.entry_at(w.start + (i << 24)).is_some_and(|e| e.0 != 0))
        .collect();
    assert_eq!(mapped, vec![0, 1, 3]);
    assert_eq!(
        t.translate(w.start + (3 << 24) + 8, Access::Write),
        Ok(Gpa((3 << 24) + 8))
    );
}

#[test]
fn dma_mapping_through_the_default_window_uses_the_guest_allocator() {
    let (s, mem) = guest(Profile::Kvm);
    let mut g = linux();
    // Two pages from an unaligned address, then one read-only page after them.
    assert_eq!(
        g.dma_map_default(&s, &mem, 0, 0x7010, 0x1000, false),
        Ok(0x1010)
    );
    assert_eq!(g.dma_map_default(&s, &mem, 0, 0x9000, 16, true), Ok(0x3000));
    assert_eq!(get(&s, &mem, LIOBN0, 0x1000), Some(0x7003));
    assert_eq!(get(&s, &mem, LIOBN0, 0x2000), Some(0x8003));
    assert_eq!(get(&s, &mem, LIOBN0, 0x3000), Some(0x9001));
    g.dma_unmap_default(&s, &mem, 0, 0x1010, 0x1000).unwrap();
    assert_eq!(g.default_pages_in_use(BUID), 1);
    // The freed run is reused first.
    assert_eq!(
        g.dma_map_default(&s, &mem, 0, 0xA000, 0x2000, false),
        Ok(0x1000)
    );
    // A window of 1 GiB has 2^18 pages: a map larger than what is free is refused.
    assert_eq!(
        g.dma_map_default(&s, &mem, 0, 0, 1 << 30, false),
        Err(DdwError::DefaultWindowFull(1 << 18))
    );
}
