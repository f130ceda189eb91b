//! The DDW RTAS calls (papr.md A.10), the RTAS buffer through KVMPPC_H_RTAS and the
//! device-tree data. The Linux guest's DDW sequence is in `guest_ddw.rs`.

mod common;
use common::*;
use spapr_papr::{opcode, token, HStatus, Profile, RtasCall, RtasStatus, Spapr};
use spapr_tce::PageSizes;
use vm_memory::{Bytes, GuestMemoryMmap};

const HI: u32 = (BUID >> 32) as u32;
const LO: u32 = BUID as u32;

fn q(s: &Spapr, nret: u32) -> Vec<u32> {
    s.rtas(RtasCall::Query, &[0, HI, LO], nret)
}
fn create(s: &Spapr, page: u32, window: u32) -> Vec<u32> {
    s.rtas(RtasCall::Create, &[0, HI, LO, page, window], 4)
}
fn remove(s: &Spapr, liobn: u32) -> Vec<u32> {
    s.rtas(RtasCall::Remove, &[liobn], 1)
}

const PARAM: u32 = -3i32 as u32;
const HW: u32 = -1i32 as u32;

#[test]
fn query_reports_free_windows_and_the_page_mask() {
    let (s, _) = guest(Profile::Kvm);
    assert_eq!(q(&s, 5), vec![0, 1, 0x8000_0000, 0x107, 0]);
    assert_eq!(q(&s, 6), vec![0, 1, 0x20, 0, 0x107, 0]);
    assert_eq!(s.rtas(RtasCall::Query, &[0, HI], 5), vec![PARAM]);
    assert_eq!(q(&s, 4), vec![PARAM]);
    assert_eq!(s.rtas(RtasCall::Query, &[0, HI, LO + 1], 5), vec![PARAM]);
    // The config address is ignored.
    assert_eq!(s.rtas(RtasCall::Query, &[0x12345, HI, LO], 5)[0], 0);
}

#[test]
fn create_checks_arity_page_size_and_free_slots() {
    let (s, _) = guest(Profile::Kvm);
    assert_eq!(
        s.rtas(RtasCall::Create, &[0, HI, LO, 16, 30], 3),
        vec![PARAM]
    );
    assert_eq!(create(&s, 13, 30), vec![PARAM], "13 is not in the mask");
    assert_eq!(
        create(&s, 16, 15),
        vec![PARAM],
        "window smaller than a page"
    );
    assert_eq!(
        create(&s, 76, 78),
        vec![PARAM],
        "QEMU's 1 << 76 alias is refused"
    );
    assert_eq!(create(&s, 16, 30), vec![0, 0x8000_0001, 0x0800_0000, 0]);
    assert_eq!(q(&s, 5)[1], 0);
    assert_eq!(create(&s, 16, 30), vec![HW], "no free slot");
}

#[test]
fn a_window_of_2_to_the_32_pages_or_more_is_refused_without_a_half_made_window() {
    let (s, _) = guest(Profile::Kvm);
    assert_eq!(create(&s, 12, 44), vec![HW]);
    assert_eq!(q(&s, 5)[1], 1, "nothing half-attached");
    assert_eq!(create(&s, 12, 43)[0], 0, "the next create works");
}

#[test]
fn remove_checks_and_restores_the_default_when_the_last_window_goes() {
    let (s, mem) = guest(Profile::Qemu);
    s.h_put_tce(&mem, LIOBN0, 0, 0x5003);
    assert_eq!(s.rtas(RtasCall::Remove, &[0x8000_0000, 0], 1), vec![PARAM]);
    assert_eq!(remove(&s, 0x2000), vec![PARAM], "a VIO LIOBN");
    assert_eq!(remove(&s, 0x1234), vec![PARAM], "unknown");
    assert_eq!(remove(&s, 0x8000_0001), vec![PARAM], "not enabled");
    assert_eq!(create(&s, 16, 30)[0], 0);
    assert_eq!(remove(&s, 0x8000_0000), vec![0]);
    assert_eq!(remove(&s, 0x8000_0000), vec![PARAM], "twice");
    assert_eq!(s.h_get_tce(&mem, LIOBN0, 0).0, HStatus::Parameter);
    // Removing the DDW (not def_win) with nothing left brings the default back, zeroed.
    assert_eq!(remove(&s, 0x8000_0001), vec![0]);
    assert_eq!(get(&s, &mem, LIOBN0, 0), Some(0));
}

#[test]
fn def_win_is_sticky_so_a_window_created_on_slot_0_does_not_restore_the_default() {
    let (s, mem) = guest(Profile::Qemu);
    assert_eq!(remove(&s, 0x8000_0000), vec![0]);
    // Nothing left, but the removed window was def_win: no reset.
    assert!(s.table(LIOBN0).is_none());
    // The next create lands on liobn[0] at offset 0.
    assert_eq!(create(&s, 16, 30), vec![0, 0x8000_0000, 0, 0]);
    assert_eq!(remove(&s, 0x8000_0000), vec![0]);
    assert_eq!(s.h_get_tce(&mem, LIOBN0, 0).0, HStatus::Parameter);
}

#[test]
fn reset_drops_every_window_and_brings_the_default_back_zeroed() {
    let (s, mem) = guest(Profile::Qemu);
    s.h_put_tce(&mem, LIOBN0, 0, 0x5003);
    create(&s, 16, 30);
    assert_eq!(s.rtas(RtasCall::Reset, &[0, HI, LO], 2), vec![PARAM]);
    assert_eq!(s.rtas(RtasCall::Reset, &[0x12345, HI, LO], 1), vec![0]);
    assert!(s.table(LIOBN1).is_none());
    assert_eq!(get(&s, &mem, LIOBN0, 0), Some(0));
}

#[test]
fn ddw_off_leaves_only_the_default_window_and_refuses_the_calls() {
    let mut cfg = spapr_papr::SpaprConfig::default();
    cfg.phbs[0].ddw = false;
    let s = Spapr::new(cfg).unwrap();
    assert_eq!(q(&s, 5), vec![PARAM]);
    assert_eq!(create(&s, 16, 30), vec![PARAM]);
    assert_eq!(remove(&s, 0x8000_0000), vec![PARAM]);
    assert_eq!(s.rtas(RtasCall::Reset, &[0, HI, LO], 1), vec![PARAM]);
    assert!(s.target(0x8000_0001).is_none());
    let dt = s.device_tree();
    assert_eq!(dt.phbs[0].ddw_applicable, None);
}

#[test]
fn the_rtas_buffer_goes_through_kvmppc_h_rtas() {
    let (s, mem) = guest(Profile::Kvm);
    let rets = write_rtas(&mem, 0x20_0000, token::QUERY, &[0, HI, LO], 5);
    assert_eq!(
        s.hcall(&mem, opcode::KVMPPC_H_RTAS, [0x20_0000, 0, 0, 0], false),
        (HStatus::Success, None)
    );
    assert_eq!(read_u32s(&mem, rets, 5), vec![0, 1, 0x8000_0000, 0x107, 0]);
    // Known token, RTAS error: the hcall still succeeds.
    let rets = write_rtas(&mem, 0x20_0000, token::CREATE, &[0, HI, LO, 13, 30], 4);
    assert_eq!(s.h_rtas(&mem, 0x20_0000), HStatus::Success);
    assert_eq!(read_u32s(&mem, rets, 1), vec![PARAM]);
    // Unknown token: rets[0] = -3 and H_PARAMETER.
    let rets = write_rtas(&mem, 0x20_0000, 0x2099, &[1, 2], 1);
    assert_eq!(s.h_rtas(&mem, 0x20_0000), HStatus::Parameter);
    assert_eq!(read_u32s(&mem, rets, 1), vec![PARAM]);
    assert_eq!(s.rtas_buffer(&mem, RAM), None, "outside RAM");
    assert_eq!(
        RtasStatus::from_name("RTAS_HARDWARE_ERROR"),
        Some(RtasStatus::HardwareError)
    );
}

#[test]
fn device_tree_data_matches_qemu() {
    let (s, _) = guest(Profile::Kvm);
    let dt = s.device_tree();
    assert_eq!(dt.hypertas_functions, vec!["hcall-tce", "hcall-multi-tce"]);
    let n = &dt.phbs[0];
    assert_eq!(n.name, "pci@800000020000000");
    assert_eq!(n.dma_window, [0x8000_0000, 0, 0, 0, 0x4000_0000]);
    assert_eq!(n.ddw_applicable, Some([0x2026, 0x2027, 0x2028]));
    assert_eq!(n.ddw_extensions, Some([2, 0x2029, 1]));
    assert_eq!(dt.vio, vec![(0x2000, [0x2000, 0, 0, 0, 0x1000_0000])]);
    assert_eq!(
        spapr_papr::ddw_page_mask(PageSizes::PHB4),
        0x1 | 0x2 | 0x100
    );
}

#[test]
fn several_phbs_have_their_own_buid_liobns_and_windows() {
    use spapr_papr::{PhbConfig, SpaprConfig};
    let mut cfg = SpaprConfig {
        ram_size: RAM,
        ..SpaprConfig::default()
    };
    let mut second = PhbConfig::qemu(3);
    second.dma_win_size = 0x1000_0000;
    second.page_sizes = PageSizes(1 << 12 | 1 << 16);
    cfg.phbs.push(second);
    let s = Spapr::new(cfg).unwrap();
    let mem =
        GuestMemoryMmap::<()>::from_ranges(&[(vm_memory::GuestAddress(0), RAM as usize)]).unwrap();
    let dt = s.device_tree();
    assert_eq!(dt.phbs.len(), 2);
    assert_eq!(dt.phbs[1].buid, BUID + 3);
    assert_eq!(dt.phbs[1].dma_window, [0x8000_0300, 0, 0, 0, 0x1000_0000]);
    // PHB 3's default window is its own: 256 MiB.
    assert_eq!(
        s.h_put_tce(&mem, 0x8000_0300, 0x0fff_f000, 0x5003),
        HStatus::Success
    );
    assert_eq!(
        s.h_put_tce(&mem, 0x8000_0300, 0x1000_0000, 0x5003),
        HStatus::Parameter
    );
    assert_eq!(
        get(&s, &mem, LIOBN0, 0x0fff_f000),
        Some(0),
        "PHB 0 untouched"
    );
    let (hi, lo) = (((BUID + 3) >> 32) as u32, (BUID + 3) as u32);
    assert_eq!(
        s.rtas(RtasCall::Query, &[0, hi, lo], 5),
        vec![0, 1, 0x8000_0000, 0x3, 0]
    );
    assert_eq!(
        s.rtas(RtasCall::Create, &[0, hi, lo, 16, 30], 4),
        vec![0, 0x8000_0301, 0x0800_0000, 0]
    );
    // PHB 0 still has both slots to give.
    assert_eq!(q(&s, 5)[1], 1);
}

#[test]
fn a_refused_call_writes_its_status_into_the_first_return_word_even_with_nret_0() {
    let (s, mem) = guest(Profile::Kvm);
    for (tok, args) in [
        (token::QUERY, vec![0, HI, LO]),
        (token::CREATE, vec![0, HI, LO, 16, 30]),
        (token::REMOVE, vec![0x8000_0001]),
        (token::RESET, vec![0, HI, LO]),
        (0x2099, vec![]),
    ] {
        let rets = write_rtas(&mem, 0x20_0000, tok, &args, 0);
        mem.write_obj(0xAAAA_AAAAu32, vm_memory::GuestAddress(rets))
            .unwrap();
        let _ = s.h_rtas(&mem, 0x20_0000);
        assert_eq!(read_u32s(&mem, rets, 1), vec![PARAM], "token {tok:#x}");
    }
}

#[test]
fn nargs_and_nret_have_no_cap_but_the_arguments_must_be_in_ram() {
    let (s, mem) = guest(Profile::Kvm);
    // 100 arguments: more than any call takes; refused on the count, status after them.
    let args = vec![0u32; 100];
    let rets = write_rtas(&mem, 0x20_0000, token::QUERY, &args, 1);
    assert_eq!(
        s.rtas_buffer(&mem, 0x20_0000),
        Some(RtasStatus::ParameterError)
    );
    assert_eq!(read_u32s(&mem, rets, 1), vec![PARAM]);
    // nret of 2^31: a query's count check refuses it; one status word is written.
    let rets = write_rtas(&mem, 0x20_0000, token::QUERY, &[0, HI, LO], 0x8000_0000);
    assert_eq!(
        s.rtas_buffer(&mem, 0x20_0000),
        Some(RtasStatus::ParameterError)
    );
    assert_eq!(read_u32s(&mem, rets, 2)[0], PARAM);
    // Arguments that run past the end of RAM: nothing is read or written.
    let at = RAM - 16;
    write_rtas(&mem, at, token::QUERY, &[0], 0);
    mem.write_obj((3u32).to_be(), vm_memory::GuestAddress(at + 4))
        .unwrap();
    assert_eq!(s.rtas_buffer(&mem, at), None);
    assert_eq!(s.h_rtas(&mem, at), HStatus::Parameter);
    // A header that wraps the address space.
    assert_eq!(s.rtas_buffer(&mem, u64::MAX - 4), None);
}

#[test]
fn return_words_past_the_end_of_ram_are_dropped_as_qemu_drops_them() {
    let (s, mem) = guest(Profile::Kvm);
    // Header and arguments in the last 24 bytes of RAM; the five return words fall past it.
    let at = RAM - 24;
    write_rtas(&mem, at, token::QUERY, &[0, HI, LO], 5);
    assert_eq!(s.rtas_buffer(&mem, at), Some(RtasStatus::Success));
}
