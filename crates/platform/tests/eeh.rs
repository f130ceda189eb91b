//! EEH at the platform layer (eeh.md 1, 5, 6), through the PE's own calls: each state
//! change and value, the DMA gate and its checker rule, host recovery with freeze
//! counting, a fenced PHB and its complete reset, VF PEs, the fault point and the flags.

use iommu_core::{Errno, Rule};
use spapr_platform::{
    DriverResult, EehFlags, FaultPoint, OpalError, PowerNv, PowerNvConfig, Recovery, VfReset,
};
use spapr_tce::{Access, DmaDirection};
use std::sync::Arc;

/// The seed machine with EEH on, the NIC's driver bound with one buffer mapped.
fn machine() -> (PowerNv, iommu_core::DeviceId, u64) {
    let m = PowerNv::booted(PowerNvConfig::seed()).unwrap();
    m.env().set_eeh(true);
    let nic = m.device("nic0").unwrap();
    m.bind_driver(nic, "ixgbe").unwrap();
    let buf = m
        .driver_dma_alloc(nic, 4096, DmaDirection::Bidirectional)
        .unwrap()
        .dma;
    (m, nic, buf)
}

fn pe(m: &PowerNv, d: iommu_core::DeviceId) -> Arc<spapr_platform::Pe> {
    m.pe_of(d).unwrap()
}

#[test]
fn a_fault_freezes_both_bits_and_each_thaw_reads_its_state() {
    let (m, nic, buf) = machine();
    let p = pe(&m, nic);
    assert_eq!(p.eeh_get_state(), 0);
    assert!(m.device_translate(nic, buf, Access::Read).is_ok());
    assert!(m.device_translate(nic, 0xfff0_0000, Access::Read).is_err());
    let e = p.eeh();
    assert!(e.mmio_frozen && e.dma_stopped && !e.isolated);
    assert_eq!(e.freeze_gen, 1);
    assert!(
        m.device_translate(nic, buf, Access::Read).is_err(),
        "DMA stopped"
    );
    assert!(m.device_translate(nic, 0xfff0_0000, Access::Read).is_err());
    assert_eq!(
        p.eeh().freeze_gen,
        1,
        "a DMA to a frozen PE freezes nothing more"
    );
    assert_eq!(p.eeh_state_value(), 2);
    assert!(!p.eeh().isolated, "an observation has no side effect");
    assert_eq!(p.eeh_get_state(), 2);
    assert!(
        p.eeh().isolated,
        "the state read marks a full freeze isolated"
    );
    assert_eq!(p.eeh_set_option(3), Ok(()));
    assert_eq!(p.eeh_get_state(), 5, "MMIO frozen only");
    assert_eq!(m.device_mmio_read(nic, 9), Ok(u64::MAX));
    assert!(m.device_translate(nic, buf, Access::Read).is_ok());
    assert_eq!(p.eeh_set_option(2), Ok(()));
    assert_eq!(p.eeh_get_state(), 0);
    assert_eq!(m.device_mmio_read(nic, 9), Ok(9));
    assert!(p.eeh().isolated, "thaws never clear ISOLATED");
    assert_eq!(p.eeh_set_option(0), Ok(()));
    assert_eq!(p.eeh_set_option(4), Err(Errno::Einval));
    // DMA-only freeze by hand: thaw MMIO on a fresh freeze.
    let _ = m.device_translate(nic, 0xfff0_0000, Access::Read);
    assert_eq!(p.eeh_set_option(2), Ok(()));
    assert_eq!(p.eeh_get_state(), 4, "DMA stopped only");
    assert_eq!(p.eeh_set_option(1), Ok(()));
    assert!(
        !p.eeh().isolated && !p.eeh().dma_stopped,
        "ENABLE: change of owner"
    );
    assert!(m.check().is_empty(), "{:?}", m.check());
}

#[test]
fn mmio_reads_isolate_a_host_pe_once_and_count_the_rest() {
    let (m, nic, _) = machine();
    let p = pe(&m, nic);
    assert_eq!(m.device_mmio_read(nic, 3), Ok(3));
    let _ = m.device_translate(nic, 0xfff0_0000, Access::Read);
    assert_eq!(m.device_mmio_read(nic, 3), Ok(u64::MAX));
    assert!(p.eeh().isolated);
    assert_eq!(p.eeh().check_count, 0);
    assert_eq!(m.device_mmio_read(nic, 3), Ok(u64::MAX));
    assert_eq!(m.device_mmio_read(nic, 3), Ok(u64::MAX));
    assert_eq!(p.eeh().check_count, 2);
    // A passed PE is not looked at.
    let (m, nic, _) = machine();
    let p = pe(&m, nic);
    p.eeh_dev_open().unwrap();
    let _ = m.device_translate(nic, 0xfff0_0000, Access::Read);
    assert_eq!(m.device_mmio_read(nic, 3), Ok(u64::MAX));
    assert!(!p.eeh().isolated && p.eeh().check_count == 0);
    assert_eq!(p.eeh_recover(&[]), Err(Errno::Ebusy));
    p.eeh_dev_release();
    assert_eq!(p.eeh().pass_dev_cnt, 0);
    assert!(!p.eeh().mmio_frozen, "release leaves the PE usable");
    p.eeh_dev_release();
    assert_eq!(p.eeh().pass_dev_cnt, 0, "never below zero");
}

#[test]
fn resets_freeze_block_config_and_deassert_thaws() {
    let (m, nic, buf) = machine();
    let p = pe(&m, nic);
    for opt in [1, 3] {
        assert_eq!(p.eeh_reset(opt), Ok(()));
        let e = p.eeh();
        assert!(e.mmio_frozen && e.dma_stopped && e.cfg_blocked);
        assert_eq!(m.device_config_read(nic, 7), Ok(u32::MAX));
        assert_eq!(p.eeh_reset(0), Ok(()));
        let e = p.eeh();
        assert!(!e.mmio_frozen && !e.dma_stopped && !e.cfg_blocked && !e.isolated);
        assert_eq!(m.device_config_read(nic, 7), Ok(7));
        assert!(m.device_translate(nic, buf, Access::Read).is_ok());
    }
    assert_eq!(p.eeh_reset(2), Err(Errno::Einval));
    assert!(m.check().is_empty(), "{:?}", m.check());
}

#[test]
fn a_vf_pe_resets_only_with_flr() {
    for (how, ok) in [
        (VfReset::None, false),
        (VfReset::Flr, true),
        (VfReset::AfFlr, true),
    ] {
        let mut cfg = PowerNvConfig::seed();
        cfg.devices[0].vf = Some(how);
        let m = PowerNv::booted(cfg).unwrap();
        let nic = m.device("nic0").unwrap();
        let p = pe(&m, nic);
        assert_eq!(p.eeh().vf, Some(how));
        let want = if ok { Ok(()) } else { Err(Errno::Enotty) };
        assert_eq!(p.eeh_reset(1), want);
        assert!(p.eeh().cfg_blocked && p.eeh().dma_stopped);
        assert_eq!(p.eeh_reset(0), want);
        assert!(!p.eeh().cfg_blocked);
        assert_eq!(p.eeh().dma_stopped, !ok);
        // Host recovery of a VF PE that cannot be reset is the hard fail.
        if !ok {
            m.env().set_eeh(true);
            let _ = p.eeh_get_state();
            let r = p.eeh_recover(&[DriverResult::NeedReset]);
            assert_eq!(r, Ok(Recovery::Failed { freeze_count: 1 }));
        }
    }
}

#[test]
fn injection_arms_one_access_of_its_class() {
    let (m, nic, buf) = machine();
    let p = pe(&m, nic);
    assert_eq!(p.eeh_inject(2, 0), Err(Errno::Einval));
    assert_eq!(p.eeh_inject(0, 20), Err(Errno::Einval));
    for f in [2, 3, 8, 9] {
        assert_eq!(p.eeh_inject(1, f), Err(Errno::Eio));
    }
    assert_eq!(p.eeh().injected, None);
    assert_eq!(p.eeh_inject(0, 11), Ok(()));
    assert!(
        m.device_translate(nic, buf, Access::Read).is_ok(),
        "an MMIO injection"
    );
    assert_eq!(m.device_mmio_read(nic, 1), Ok(u64::MAX));
    assert_eq!(p.eeh().injected, None);
    assert_eq!(p.eeh_set_option(1), Ok(()));
    assert_eq!(p.eeh_inject(1, 12), Ok(()));
    assert_eq!(m.device_mmio_read(nic, 1), Ok(1), "a DMA injection");
    assert!(m.device_translate(nic, buf, Access::Read).is_err());
    assert!(p.eeh().dma_stopped);
    m.env().set_eeh_flags(EehFlags {
        inject_type_erange: true,
        ..EehFlags::default()
    });
    assert_eq!(p.eeh_inject(2, 0), Err(Errno::Erange));
    assert_eq!(p.eeh_inject(2, 20), Err(Errno::Einval), "func first");
}

#[test]
fn recovery_counts_freezes_in_a_window_and_merges_driver_answers() {
    let (m, nic, _) = machine();
    let p = pe(&m, nic);
    let isolate = || {
        let _ = m.device_translate(nic, 0xfff0_0000, Access::Read);
        let _ = m.device_mmio_read(nic, 0);
    };
    assert_eq!(p.eeh_recover(&[]), Err(Errno::Einval), "nothing to recover");
    isolate();
    assert_eq!(
        p.eeh_recover(&[DriverResult::CanRecover]),
        Ok(Recovery::Recovered { freeze_count: 1 })
    );
    assert!(!p.eeh().isolated && !p.eeh().mmio_frozen);
    m.env().advance_clock(3600);
    isolate();
    assert_eq!(
        p.eeh_recover(&[DriverResult::NeedReset]),
        Ok(Recovery::Recovered { freeze_count: 2 }),
        "3600 s is still inside the window"
    );
    m.env().advance_clock(3601);
    isolate();
    assert_eq!(
        p.eeh_recover(&[DriverResult::None]),
        Ok(Recovery::Recovered { freeze_count: 1 }),
        "a new window"
    );
    assert_eq!(p.eeh().tstamp, 7201);
    isolate();
    assert_eq!(
        p.eeh_recover(&[DriverResult::Recovered]),
        Ok(Recovery::Recovered { freeze_count: 2 })
    );
    assert!(p.eeh().dma_stopped, "RECOVERED at once gets no thaw");
    assert_eq!(p.eeh_set_option(1), Ok(()));
    // A thaw that sticks is the hard fail.
    isolate();
    m.env().inject(
        FaultPoint::Thaw,
        Some((p.phb, p.number)),
        0,
        OpalError::Hardware,
    );
    assert_eq!(
        p.eeh_recover(&[DriverResult::CanRecover]),
        Ok(Recovery::Failed { freeze_count: 3 })
    );
    assert!(p.eeh().removed);
    assert_eq!(p.eeh_recover(&[]), Err(Errno::Enodev));
    assert_eq!(
        DriverResult::from_name("can_recover"),
        Some(DriverResult::CanRecover)
    );
    assert_eq!(DriverResult::from_name("x"), None);
    assert!(DriverResult::NeedReset > DriverResult::Disconnect);
    assert!(DriverResult::Disconnect > DriverResult::CanRecover);
    assert!(DriverResult::CanRecover > DriverResult::Recovered);
}

#[test]
fn six_freezes_in_an_hour_disable_the_pe_and_remove_its_devices() {
    let (m, nic, _) = machine();
    let p = pe(&m, nic);
    for k in 1..=5 {
        let _ = m.device_translate(nic, 0xfff0_0000, Access::Read);
        let _ = m.device_mmio_read(nic, 0);
        assert_eq!(
            m.eeh_recover(nic, &[DriverResult::CanRecover]),
            Ok(Recovery::Recovered { freeze_count: k })
        );
        m.env().advance_clock(700);
    }
    let _ = m.device_translate(nic, 0xfff0_0000, Access::Read);
    let _ = m.device_mmio_read(nic, 0);
    assert_eq!(
        m.eeh_recover(nic, &[DriverResult::CanRecover]),
        Ok(Recovery::Failed { freeze_count: 6 })
    );
    assert!(m.device("nic0").is_none());
    assert!(p.eeh().removed && p.eeh().dma_stopped);
}

#[test]
fn a_fenced_phb_stops_every_pe_until_its_complete_reset() {
    let (m, nic, buf) = machine();
    let nvme = m.device("nvme0").unwrap();
    let (p, q) = (pe(&m, nic), pe(&m, nvme));
    let phb = m.phbs()[0].clone();
    let kills = p.pe_kills();
    assert_eq!(phb.eeh_recover(), Err(Errno::Einval));
    phb.eeh_fence();
    phb.eeh_fence();
    assert!(phb.eeh().fenced && p.phb_eeh().fenced);
    assert!(m.device_translate(nic, buf, Access::Read).is_err());
    assert_eq!(p.eeh_get_state(), 2);
    assert_eq!(p.eeh_set_option(2), Err(Errno::Eio));
    assert_eq!(m.device_mmio_read(nvme, 4), Ok(u64::MAX));
    assert!(
        phb.eeh().isolated && !q.eeh().isolated,
        "the PHB PE took it"
    );
    assert_eq!(m.device_mmio_read(nvme, 4), Ok(u64::MAX));
    assert!(q.eeh().isolated, "then the PE's own check");
    assert_eq!(p.eeh_get_state(), 5);
    assert_eq!(q.eeh_state_value(), 5);
    assert!(m.check().is_empty(), "{:?}", m.check());
    assert_eq!(
        phb.eeh_recover(),
        Ok(Recovery::Recovered { freeze_count: 1 })
    );
    let e = phb.eeh();
    assert!(!e.fenced && !e.isolated && e.resets == 1);
    assert_eq!(p.pe_kills(), kills + 1);
    assert!(!q.eeh().isolated && !q.eeh().mmio_frozen);
    assert!(m.device_translate(nic, buf, Access::Read).is_ok());
    assert_eq!(m.device_mmio_read(nvme, 4), Ok(4));
    // Passed PEs are re-frozen unless included, and keep their isolation.
    p.eeh_dev_open().unwrap();
    phb.eeh_fence();
    let _ = p.eeh_get_state();
    let _ = m.device_mmio_read(nvme, 0);
    let _ = m.device_mmio_read(nvme, 0);
    assert!(q.eeh().isolated);
    let _ = m.device_translate(nic, 0xfff0_0000, Access::Read);
    let _ = p.eeh_set_option(2);
    assert_eq!(phb.eeh_reset_full(false), Ok(()));
    assert!(p.eeh().dma_stopped && !q.eeh().dma_stopped);
    assert!(
        p.eeh().isolated,
        "a passed PE keeps its flags (include_passed = false)"
    );
    assert!(!q.eeh().isolated, "the host's PE is usable again");
    assert!(!p.eeh().peev, "a software freeze leaves PEEV alone");
    phb.eeh_fence();
    assert_eq!(phb.eeh_reset_full(true), Ok(()));
    assert!(!p.eeh().dma_stopped);
    // The sixth counted freeze within the hour fails the PHB: it stays fenced.
    for k in 2..=5 {
        phb.eeh_fence();
        let _ = m.device_mmio_read(nvme, 0);
        assert_eq!(
            phb.eeh_recover(),
            Ok(Recovery::Recovered { freeze_count: k })
        );
    }
    phb.eeh_fence();
    let _ = m.device_mmio_read(nvme, 0);
    assert_eq!(phb.eeh_recover(), Ok(Recovery::Failed { freeze_count: 6 }));
    assert!(phb.eeh().fenced);
    m.flush();
    let trace = m.core().take_trace();
    for said in [
        "fenced: every PE under it stops",
        "complete reset",
        "permanently failed",
    ] {
        assert!(trace.iter().any(|e| e.detail.contains(said)), "{said}");
    }
}

#[test]
fn the_checker_finds_a_dma_served_past_the_gate() {
    let (m, nic, _) = machine();
    let p = pe(&m, nic);
    let _ = m.device_translate(nic, 0xfff0_0000, Access::Read);
    assert!(m.check().iter().all(|v| v.rule != Rule::NoDmaWhileFrozen));
    assert_eq!(p.eeh().served_while_stopped, 0);
}

#[test]
fn flags_peev_sticky_and_eeh_off() {
    let (m, nic, buf) = machine();
    let p = pe(&m, nic);
    m.env().set_eeh_flags(EehFlags {
        peev_sticky: true,
        ..EehFlags::default()
    });
    assert_eq!(EehFlags::NAMES.len(), 3);
    let mut f = EehFlags::default();
    assert!(f.set("linux-old-open") && f.open_fails && !f.set("nope"));
    assert_eq!(p.eeh_reset(1), Ok(()));
    assert_eq!(p.eeh_get_state(), 0, "a software freeze is not reported");
    let _ = m.device_translate(nic, buf, Access::Read);
    assert!(!p.eeh().peev);
    p.eeh_reset(0).unwrap();
    assert!(p.eeh().dma_stopped, "the deassert's thaw saw nothing");
    m.env().set_eeh_flags(EehFlags::default());
    p.eeh_set_option(1).unwrap();
    assert!(!p.eeh().dma_stopped);
    // EEH off: no freeze on a fault, but a frozen PE stays stopped.
    let _ = m.device_translate(nic, 0xfff0_0000, Access::Read);
    m.env().set_eeh(false);
    assert!(m.device_translate(nic, buf, Access::Read).is_err());
    assert_eq!(m.device_mmio_read(nic, 2), Ok(u64::MAX));
    assert_eq!(p.eeh_set_option(1), Err(Errno::Eio));
    p.eeh_set_option(2).unwrap();
    p.eeh_set_option(3).unwrap();
    assert!(m.device_translate(nic, 0xfff0_0000, Access::Read).is_err());
    assert!(!p.eeh().dma_stopped, "no freeze with EEH off");
    assert_eq!(m.device_mmio_read(nic, 2), Ok(2));
}

#[test]
fn names_traces_reach_and_the_freeze_generation() {
    assert_eq!(VfReset::from_name("flr"), Some(VfReset::Flr));
    assert_eq!(VfReset::from_name("af_flr"), Some(VfReset::AfFlr));
    assert_eq!(VfReset::from_name("none"), Some(VfReset::None));
    assert_eq!(VfReset::from_name("FLR"), None);
    let (m, nic, buf) = machine();
    let p = pe(&m, nic);
    let _ = m.core().take_trace();
    assert!(
        p.reaches(buf, Access::Read).is_ok(),
        "a normal PE reaches its mapping"
    );
    let _ = m.device_translate(nic, 0xfff0_0000, Access::Read);
    let trace = m.core().take_trace();
    assert!(
        trace
            .iter()
            .any(|e| e.detail.contains("EEH: PE frozen (MMIO and DMA)")),
        "{trace:?}"
    );
    assert!(
        p.reaches(buf, Access::Read).is_err(),
        "a frozen PE reaches nothing"
    );
    assert_eq!(p.eeh().freeze_gen, 1);
    assert_eq!(p.eeh_reset(1), Ok(()));
    assert_eq!(p.eeh().freeze_gen, 1, "already frozen: not a new freeze");
    p.eeh_reset(0).unwrap();
    assert_eq!(p.eeh_reset(1), Ok(()));
    assert_eq!(p.eeh().freeze_gen, 2);
    p.eeh_reset(0).unwrap();
    // A PE with only its DMA stopped is frozen again by an MMIO error.
    let _ = m.device_translate(nic, 0xfff0_0000, Access::Read);
    p.eeh_set_option(2).unwrap();
    assert_eq!(p.eeh_state_value(), 4);
    p.eeh_inject(0, 0).unwrap();
    assert_eq!(m.device_mmio_read(nic, 5), Ok(u64::MAX));
    assert_eq!(p.eeh_state_value(), 2);
    // Under peev-sticky a hardware error is reported (its PEEV bit is set).
    p.eeh_set_option(1).unwrap();
    m.env().set_eeh_flags(EehFlags {
        peev_sticky: true,
        ..EehFlags::default()
    });
    let _ = m.device_translate(nic, 0xfff0_0000, Access::Read);
    assert!(p.eeh().peev);
    assert_eq!(p.eeh_get_state(), 2);
}

#[test]
fn edges_of_injection_funcs_and_a_reset_of_a_partial_freeze() {
    let (m, nic, _) = machine();
    let p = pe(&m, nic);
    assert_eq!(p.eeh_inject(1, 19), Ok(()), "func 19 is the last DMA func");
    assert_eq!(
        p.eeh().injected,
        Some(spapr_platform::eeh::InjectClass::Dma)
    );
    assert_eq!(p.eeh_inject(0, 12), Ok(()));
    assert_eq!(p.eeh_inject(0, 11), Ok(()));
    assert_eq!(
        p.eeh().injected,
        Some(spapr_platform::eeh::InjectClass::Mmio)
    );
    p.eeh().injected.take();
    // A reset of a PE with one bit frozen is a new freeze.
    let _ = m.device_translate(nic, 0xfff0_0000, Access::Read);
    p.eeh_set_option(2).unwrap();
    let gen = p.eeh().freeze_gen;
    p.eeh_reset(1).unwrap();
    assert_eq!(p.eeh().freeze_gen, gen + 1);
    m.flush();
    let trace = m.core().take_trace();
    assert!(trace
        .iter()
        .any(|e| e.detail.contains("hot reset asserted")));
    p.eeh_reset(3).unwrap();
    m.flush();
    let trace = m.core().take_trace();
    assert!(trace
        .iter()
        .any(|e| e.detail.contains("fundamental reset asserted")));
}

#[test]
fn the_reset_path_retries_and_says_what_it_did() {
    for (name, r) in [
        ("none", DriverResult::None),
        ("recovered", DriverResult::Recovered),
        ("can_recover", DriverResult::CanRecover),
        ("disconnect", DriverResult::Disconnect),
        ("need_reset", DriverResult::NeedReset),
    ] {
        assert_eq!(DriverResult::from_name(name), Some(r));
    }
    let (m, nic, _) = machine();
    let p = pe(&m, nic);
    let isolate = || {
        let _ = m.device_translate(nic, 0xfff0_0000, Access::Read);
        let _ = m.device_mmio_read(nic, 0);
    };
    // Three deasserts whose thaw sticks: the reset keeps failing, the thaw after it
    // works: recovered, after three tries.
    isolate();
    for _ in 0..3 {
        m.env().inject(
            FaultPoint::Thaw,
            Some((p.phb, p.number)),
            0,
            OpalError::Hardware,
        );
    }
    assert_eq!(
        p.eeh_recover(&[DriverResult::NeedReset]),
        Ok(Recovery::Recovered { freeze_count: 1 })
    );
    assert_eq!(m.env().pending_injections(), 0);
    m.flush();
    let trace = m.core().take_trace();
    assert!(trace
        .iter()
        .any(|e| e.detail.contains("nic0: slot_reset()")));
    assert!(!trace.iter().any(|e| e.detail.contains("hotplug")));
    isolate();
    assert!(p.eeh_recover(&[DriverResult::None]).is_ok());
    m.flush();
    let trace = m.core().take_trace();
    assert!(trace.iter().any(|e| e.detail.contains("hotplug")));
    assert!(!trace.iter().any(|e| e.detail.contains("slot_reset()")));
}

/// eeh.md decision 9: a dead PHB reads NOT_SUPPORT; a thaw returns 0 and changes
/// nothing; nothing brings it back.
#[test]
fn a_dead_phb_answers_thaws_with_0_and_stays_dead() {
    let (m, nic, buf) = machine();
    let p = pe(&m, nic);
    let phb = m.phbs()[0].clone();
    phb.eeh_kill();
    phb.eeh_kill();
    assert!(phb.eeh().dead && phb.eeh().stopped());
    assert_eq!(p.eeh_state_value(), 2);
    assert!(m.device_translate(nic, buf, Access::Read).is_err());
    assert_eq!(p.eeh_set_option(2), Ok(()), "0, and nothing changes");
    assert_eq!(p.eeh_set_option(1), Ok(()));
    assert!(m.device_translate(nic, buf, Access::Read).is_err());
    assert_eq!(m.device_mmio_read(nic, 3), Ok(u64::MAX));
    assert!(phb.eeh().isolated);
    assert_eq!(phb.eeh_reset_full(false), Err(Errno::Eio));
    assert_eq!(phb.eeh_recover(), Err(Errno::Eio));
    assert!(phb.eeh().dead);
    assert!(m.check().is_empty(), "{:?}", m.check());
}
