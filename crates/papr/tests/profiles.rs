//! Every row of papr.md A.8 in every profile, and every hypercall return code of A.1 to
//! A.7 reached.

mod common;
use common::*;
use spapr_papr::{opcode, HStatus, Profile};

use HStatus::*;
use Profile::*;

#[test]
fn unaligned_ioba_is_masked_by_qemu_and_refused_by_kvm_and_lopar() {
    for (p, want) in [(Qemu, Success), (Kvm, Parameter), (Lopar, Parameter)] {
        let (s, mem) = guest(p);
        assert_eq!(s.h_put_tce(&mem, LIOBN0, 0x1234, 0x5003), want, "{p:?}");
        if want == Success {
            // ioba 0x1234 wrote entry 1.
            assert_eq!(get(&s, &mem, LIOBN0, 0x1000), Some(0x5003));
        } else {
            assert_eq!(get(&s, &mem, LIOBN0, 0x1000), Some(0));
        }
        let get_unaligned = s.h_get_tce(&mem, LIOBN0, 0x1234).0;
        assert_eq!(get_unaligned, want, "{p:?} H_GET_TCE");
    }
}

#[test]
fn liobn_with_upper_bits_set_is_refused_everywhere() {
    for p in Profile::ALL {
        let (s, mem) = guest(p);
        assert_eq!(s.h_put_tce(&mem, 0x1_8000_0000, 0, 3), Parameter, "{p:?}");
        assert_eq!(s.h_get_tce(&mem, 0x1_8000_0000, 0), (Parameter, None));
        assert_eq!(
            s.h_put_tce(&mem, 0x8000_0042, 0, 3),
            Parameter,
            "unknown LIOBN"
        );
    }
}

#[test]
fn reserved_bits_and_unaligned_rpns_are_stored_verbatim_except_by_lopar() {
    for (p, want) in [(Qemu, Success), (Kvm, Success), (Lopar, Parameter)] {
        let (s, mem) = guest(p);
        for tce in [0x5000 | 0x800 | 3, 0x5008 | 1] {
            assert_eq!(
                s.h_put_tce(&mem, LIOBN0, 0x2000, tce),
                want,
                "{p:?} {tce:#x}"
            );
            if want == Success {
                assert_eq!(get(&s, &mem, LIOBN0, 0x2000), Some(tce), "verbatim");
            }
        }
    }
    // QEMU even keeps all 64 bits.
    let (s, mem) = guest(Qemu);
    assert_eq!(s.h_put_tce(&mem, LIOBN0, 0, u64::MAX), Success);
    assert_eq!(get(&s, &mem, LIOBN0, 0), Some(u64::MAX));
}

#[test]
fn rpn_outside_guest_ram_is_stored_except_by_lopar() {
    for (p, want) in [(Qemu, Success), (Kvm, Success), (Lopar, Parameter)] {
        let (s, mem) = guest(p);
        assert_eq!(s.h_put_tce(&mem, LIOBN0, 0, (1 << 40) | 3), want, "{p:?}");
        // A fault entry (no permission) is always accepted: poisoning.
        assert_eq!(s.h_put_tce(&mem, LIOBN0, 0, 1 << 40), Success, "{p:?}");
    }
}

#[test]
fn stuff_with_read_write_bits_is_refused_only_by_kvm() {
    for (p, want) in [(Qemu, Success), (Kvm, Parameter), (Lopar, Success)] {
        let (s, mem) = guest(p);
        assert_eq!(s.h_stuff_tce(&mem, LIOBN0, 0, 0x10_0003, 4), want, "{p:?}");
    }
}

#[test]
fn zero_counts_fail_in_qemu_and_succeed_in_kvm_and_lopar() {
    for (p, want) in [(Qemu, Parameter), (Kvm, Success), (Lopar, Success)] {
        let (s, mem) = guest(p);
        assert_eq!(s.h_stuff_tce(&mem, LIOBN0, 0, 0, 0), want, "{p:?} stuff");
        assert_eq!(
            s.h_put_tce_indirect(&mem, LIOBN0, 0, 0x10_0000, 0),
            want,
            "{p:?} indirect"
        );
    }
}

#[test]
fn stuff_over_512_is_h_p4_only_in_lopar() {
    for (p, want) in [(Qemu, Success), (Kvm, Success), (Lopar, P4)] {
        let (s, mem) = guest(p);
        assert_eq!(s.h_stuff_tce(&mem, LIOBN0, 0, 0, 513), want, "{p:?}");
    }
    // QEMU refuses more than the table holds, writing nothing.
    let (s, mem) = guest(Qemu);
    s.h_put_tce(&mem, LIOBN0, 0, 0x5003);
    assert_eq!(s.h_stuff_tce(&mem, LIOBN0, 0, 0, (1 << 18) + 1), Parameter);
    assert_eq!(s.h_stuff_tce(&mem, LIOBN0, 0, 0, 1 << 63), Parameter);
    assert_eq!(get(&s, &mem, LIOBN0, 0), Some(0x5003));
}

#[test]
fn range_errors_leave_partial_writes_in_qemu_only() {
    let last = (1u64 << 30) - 0x1000;
    for (p, partial) in [(Qemu, true), (Kvm, false), (Lopar, false)] {
        let (s, mem) = guest(p);
        // Stuff 4 from the second-to-last entry.
        assert_eq!(
            s.h_stuff_tce(&mem, LIOBN0, last - 0x1000, 0x7000, 4),
            Parameter
        );
        let want = if partial { Some(0x7000) } else { Some(0) };
        assert_eq!(get(&s, &mem, LIOBN0, last), want, "{p:?} stuff");
        // Indirect: a valid list of 4 from the last entry.
        let (s, mem) = guest(p);
        write_list(&mem, 0x10_0000, &[0x8003, 0x9003, 0xa003, 0xb003]);
        assert_eq!(
            s.h_put_tce_indirect(&mem, LIOBN0, last, 0x10_0000, 4),
            Parameter
        );
        let want = if partial { Some(0x8003) } else { Some(0) };
        assert_eq!(get(&s, &mem, LIOBN0, last), want, "{p:?} indirect");
    }
}

#[test]
fn kvm_validates_every_tce_before_writing_and_hands_bad_ones_to_qemu() {
    let (s, mem) = guest(Kvm);
    // One entry points outside RAM: KVM cannot validate it, QEMU stores all of them.
    write_list(&mem, 0x10_0000, &[0x8003, (1 << 40) | 3]);
    assert_eq!(s.h_put_tce_indirect(&mem, LIOBN0, 0, 0x10_0000, 2), Success);
    assert_eq!(get(&s, &mem, LIOBN0, 0x1000), Some((1 << 40) | 3));
    // LoPAR refuses the whole call and writes nothing.
    let (s, mem) = guest(Lopar);
    write_list(&mem, 0x10_0000, &[0x8003, (1 << 40) | 3]);
    assert_eq!(
        s.h_put_tce_indirect(&mem, LIOBN0, 0, 0x10_0000, 2),
        Parameter
    );
    assert_eq!(get(&s, &mem, LIOBN0, 0), Some(0));
}

#[test]
fn indirect_list_checks_in_every_profile() {
    for p in Profile::ALL {
        let (s, mem) = guest(p);
        assert_eq!(
            s.h_put_tce_indirect(&mem, LIOBN0, 0, 0x10_0000, 513),
            Parameter
        );
        assert_eq!(
            s.h_put_tce_indirect(&mem, LIOBN0, 0, 0x10_0008, 1),
            Parameter
        );
        assert_eq!(
            s.h_put_tce_indirect(&mem, 0x1_0000_0000, 0, 0x10_0000, 1),
            Parameter
        );
    }
    // A list outside RAM reads as zeros in QEMU (and in KVM, which hands it to QEMU);
    // LoPAR refuses it.
    for (p, want) in [(Qemu, Success), (Kvm, Success), (Lopar, Parameter)] {
        let (s, mem) = guest(p);
        s.h_put_tce(&mem, LIOBN0, 0, 0x5003);
        assert_eq!(
            s.h_put_tce_indirect(&mem, LIOBN0, 0, 1 << 44, 1),
            want,
            "{p:?}"
        );
        if want == Success {
            assert_eq!(get(&s, &mem, LIOBN0, 0), Some(0));
        }
    }
}

#[test]
fn get_tce_of_a_foreign_page_is_h_partial_only_in_lopar() {
    for (p, want) in [(Qemu, Success), (Kvm, Success), (Lopar, Partial)] {
        let (s, mem) = guest(p);
        // Stored by QEMU, which keeps any entry (as a migrated-in table may hold one).
        s.set_profile(Qemu);
        assert_eq!(s.h_put_tce(&mem, LIOBN0, 0x3000, (1 << 40) | 1), Success);
        s.set_profile(p);
        let (st, r4) = s.h_get_tce(&mem, LIOBN0, 0x3000);
        assert_eq!(st, want, "{p:?}");
        let expect = if want == Partial {
            (1 << 40) | 1 | 0xFFFF_FFFF_FFFF_F000
        } else {
            (1 << 40) | 1
        };
        assert_eq!(r4, Some(expect));
    }
}

#[test]
fn an_ioba_below_the_window_wraps_and_fails() {
    for p in Profile::ALL {
        let (s, mem) = guest(p);
        // The DDW starts at 0x0800_0000_0000_0000: an address below it fails.
        let rets = s.rtas(
            spapr_papr::RtasCall::Create,
            &[0, (BUID >> 32) as u32, BUID as u32, 16, 30],
            4,
        );
        assert_eq!(rets[0], 0);
        assert_eq!(
            s.h_put_tce(&mem, LIOBN1, DDW_BASE - 0x10000, 3),
            Parameter,
            "{p:?}"
        );
        assert_eq!(
            s.h_put_tce(&mem, LIOBN1, DDW_BASE, 0x10003),
            Success,
            "{p:?}"
        );
    }
}

#[test]
fn the_dispatcher_refuses_unknown_opcodes_and_problem_state() {
    let (s, mem) = guest(Kvm);
    assert_eq!(s.hcall(&mem, 0x4000, [0; 4], false), (Function, None));
    assert_eq!(s.hcall(&mem, 0x1E, [0; 4], false), (Function, None));
    assert_eq!(
        s.hcall(&mem, opcode::H_PUT_TCE, [LIOBN0, 0, 3, 0], true),
        (Privilege, None)
    );
    assert_eq!(
        s.hcall(&mem, opcode::H_PUT_TCE, [LIOBN0, 0x1000, 0x5003, 0], false),
        (Success, None)
    );
    assert_eq!(
        s.hcall(&mem, opcode::H_GET_TCE, [LIOBN0, 0x1000, 0, 0], false),
        (Success, Some(0x5003))
    );
    assert_eq!(
        s.hcall(&mem, opcode::H_STUFF_TCE, [LIOBN0, 0, 0, 2], false),
        (Success, None)
    );
    assert_eq!(get(&s, &mem, LIOBN0, 0x1000), Some(0));
    // H_HARDWARE is never produced by the TCE hcalls; its code is still right.
    assert_eq!(Hardware.code(), -1);
    assert_eq!(P4.code(), -57);
}

#[test]
fn vio_liobns_are_their_reg_with_a_256m_window() {
    for p in Profile::ALL {
        let (s, mem) = guest(p);
        assert_eq!(s.h_put_tce(&mem, 0x2000, 0x0fff_f000, 0x1003), Success);
        assert_eq!(s.h_put_tce(&mem, 0x2000, 0x1000_0000, 0x1003), Parameter);
    }
}

#[test]
fn machine_reset_zeroes_every_enabled_table_and_drops_ddws() {
    let (s, mem) = guest(Qemu);
    s.h_put_tce(&mem, LIOBN0, 0, 0x5003);
    s.h_put_tce(&mem, 0x2000, 0, 0x5003);
    s.rtas(
        spapr_papr::RtasCall::Create,
        &[0, (BUID >> 32) as u32, BUID as u32, 16, 30],
        4,
    );
    s.reset();
    assert_eq!(get(&s, &mem, LIOBN0, 0), Some(0));
    assert_eq!(get(&s, &mem, 0x2000, 0), Some(0));
    assert!(s.table(LIOBN1).is_none());
}

#[test]
fn bad_configurations_are_refused_with_a_reason() {
    use spapr_papr::{PhbConfig, Spapr, SpaprConfig};
    let mut c = SpaprConfig::default();
    c.phbs.push(PhbConfig::qemu(0));
    assert!(Spapr::new(c).unwrap_err().to_string().contains("twice"));
    let mut c = SpaprConfig::default();
    c.phbs[0].page_sizes = spapr_tce::PageSizes(1 << 25);
    assert!(Spapr::new(c).unwrap_err().to_string().contains("2^25"));
    let mut c = SpaprConfig::default();
    c.phbs[0].dma_win_size = 0;
    assert!(Spapr::new(c).is_err());
    let mut c = SpaprConfig::default();
    c.vio[0].reg = 0x8000_0000;
    assert!(Spapr::new(c)
        .unwrap_err()
        .to_string()
        .contains("used twice"));
    // A VIO LIOBN shaped like a PCI one (no PHB 1 here, no slot 5 anywhere) would be
    // decoded as PCI by every hypercall and never reach its window.
    let mut c = SpaprConfig::default();
    c.vio[0].reg = 0x8000_0105;
    assert!(Spapr::new(c).unwrap_err().to_string().contains("PCI LIOBN"));
}
