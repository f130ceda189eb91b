//! EEH through VFIO: the cases of eeh.md section 6 a PowerNV host can run, each op and
//! each return code of `VFIO_EEH_PE_OP`, host recovery with freeze counting, and a
//! property: whatever the sequence, no DMA succeeds on a frozen PE, and a thawed PE
//! serves its mappings again.

mod common;
use common::*;
use iommu_core::Errno;
use proptest::prelude::*;
use spapr_platform::{DmaFault, DriverResult, Recovery};
use spapr_tce::Access;
use spapr_vfio::uapi::{encode, ioctl};
use spapr_vfio::{encode_eeh_pe_op, ContainerFd, KernelProfile, Vfio, VfioConfig};
use std::sync::Arc;

const GET_STATE: u32 = 4;

/// Setup S: EEH on, gpu0's group in a v2 container with a DDW, one 64K page mapped
/// read-only at the DDW's start, the device opened (`pass_dev_cnt` 1).
fn setup() -> (Vfio, ContainerFd, u64) {
    let m =
        Arc::new(spapr_platform::PowerNv::booted(spapr_platform::PowerNvConfig::seed()).unwrap());
    let v = Vfio::new(
        m,
        VfioConfig {
            profile: KernelProfile::Strict,
            eeh: true,
            ..VfioConfig::default()
        },
    );
    let (c, g) = v2(&v, &["gpu0"]);
    let ua = prereg(&v, c, 1 << 20);
    let start = ddw(&v, c, 1 << 30, 1);
    assert_eq!(
        call(&v, c, ioctl::MAP_DMA, encode::map(R, ua, start, 1 << 16)),
        Ok(0)
    );
    v.open_device(g[0], v.machine().device("gpu0").unwrap())
        .unwrap();
    (v, c, start)
}

fn op(v: &Vfio, c: ContainerFd, o: u32) -> Result<i64, Errno> {
    call(v, c, ioctl::EEH_PE_OP, encode_eeh_pe_op(o, 0, 0))
}

fn pe(v: &Vfio) -> Arc<spapr_platform::Pe> {
    v.machine()
        .pe_of(v.machine().device("gpu0").unwrap())
        .unwrap()
}

fn dma(v: &Vfio, iova: u64, a: Access) -> Result<u64, DmaFault> {
    v.machine()
        .device_translate(v.machine().device("gpu0").unwrap(), iova, a)
}

fn mmio(v: &Vfio) -> u64 {
    v.machine()
        .device_mmio_read(v.machine().device("gpu0").unwrap(), 0x1234)
        .unwrap()
}

#[test]
fn check_extension_and_the_header_rules() {
    let (v, c, _) = setup();
    assert_eq!(
        v.ioctl_int(QEMU, c, ioctl::CHECK_EXTENSION, 5),
        Ok(1),
        "case 1"
    );
    v.machine().env().set_eeh(false);
    assert_eq!(
        v.ioctl_int(QEMU, c, ioctl::CHECK_EXTENSION, 5),
        Ok(0),
        "case 2"
    );
    v.machine().env().set_eeh(true);
    // Case 3: a container without SET_IOMMU.
    let bare = v.open_container();
    assert_eq!(op(&v, bare, GET_STATE), Err(Errno::Einval));
    assert_eq!(op(&v, c, GET_STATE), Ok(0), "case 4");
    // Case 5: argsz 8, flags 1, op 10.
    let mut short = encode_eeh_pe_op(GET_STATE, 0, 0);
    short[0..4].copy_from_slice(&8u32.to_ne_bytes());
    assert_eq!(call(&v, c, ioctl::EEH_PE_OP, short), Err(Errno::Einval));
    let mut flagged = encode_eeh_pe_op(GET_STATE, 0, 0);
    flagged[4..8].copy_from_slice(&1u32.to_ne_bytes());
    assert_eq!(call(&v, c, ioctl::EEH_PE_OP, flagged), Err(Errno::Einval));
    assert_eq!(op(&v, c, 10), Err(Errno::Einval));
    // Fewer than 12 bytes to copy: -EFAULT.
    assert_eq!(
        call(&v, c, ioctl::EEH_PE_OP, vec![12, 0, 0, 0, 0, 0]),
        Err(Errno::Efault)
    );
    // Another process: -EPERM before anything else.
    assert_eq!(
        v.ioctl(
            OTHER,
            c,
            ioctl::EEH_PE_OP,
            &mut encode_eeh_pe_op(GET_STATE, 0, 0)
        ),
        Err(Errno::Eperm)
    );
}

#[test]
fn a_bad_dma_freezes_the_pe_and_the_owner_thaws_it() {
    let (v, c, start) = setup();
    assert!(dma(&v, start + 8, Access::Read).is_ok(), "a legal read");
    // Case 7: a write through a read-only TCE.
    assert!(matches!(
        dma(&v, start, Access::Write),
        Err(DmaFault::Tce(_))
    ));
    assert!(
        matches!(
            dma(&v, start + 8, Access::Read),
            Err(DmaFault::Frozen { .. })
        ),
        "DMA stopped"
    );
    assert_eq!(mmio(&v), u64::MAX, "MMIO reads all-ones");
    assert_eq!(op(&v, c, GET_STATE), Ok(2));
    let e = pe(&v).eeh();
    assert!(e.isolated && e.mmio_frozen && e.dma_stopped);
    assert_eq!(e.freeze_count, 0, "no host recovery of a passed PE");
    assert_eq!(
        pe(&v).eeh_recover(&[]),
        Err(Errno::Ebusy),
        "the host leaves it to its owner"
    );
    // Cases 8 and 9.
    assert_eq!(op(&v, c, 2), Ok(0));
    assert_eq!(op(&v, c, GET_STATE), Ok(4));
    assert_eq!(mmio(&v), 0x1234, "MMIO thawed");
    assert!(
        dma(&v, start + 8, Access::Read).is_err(),
        "DMA still stopped"
    );
    assert_eq!(op(&v, c, 3), Ok(0));
    assert_eq!(op(&v, c, GET_STATE), Ok(0));
    assert!(
        pe(&v).eeh().isolated,
        "only ENABLE or DEACTIVATE clear ISOLATED"
    );
    assert!(
        dma(&v, start + 8, Access::Read).is_ok(),
        "the mapping is served again"
    );
    // Case 10: DMA thawed first, MMIO still frozen: 5.
    let _ = dma(&v, start, Access::Write);
    assert_eq!(op(&v, c, 3), Ok(0));
    assert_eq!(op(&v, c, GET_STATE), Ok(5));
    // Case 11 (its setup S, not frozen, below): thawing what is not frozen succeeds
    // without a firmware call. Here, a thaw of the DMA that is already thawed.
    assert_eq!(op(&v, c, 3), Ok(0));
    // Case 16 then 17: DISABLE and CONFIGURE change nothing; ENABLE thaws.
    let _ = op(&v, c, 2);
    let _ = dma(&v, start, Access::Write);
    assert_eq!(op(&v, c, 0), Ok(0));
    assert_eq!(op(&v, c, 8), Ok(0));
    assert_eq!(op(&v, c, GET_STATE), Ok(2));
    assert_eq!(op(&v, c, 1), Ok(0));
    assert_eq!(op(&v, c, GET_STATE), Ok(0));
    assert!(!pe(&v).eeh().isolated);
    // Case 18: EEH disabled: ENABLE is -EIO.
    v.machine().env().set_eeh(false);
    assert_eq!(op(&v, c, 1), Err(Errno::Eio));
    assert!(v.machine().check().is_empty(), "{:?}", v.machine().check());
}

#[test]
fn resets_freeze_until_deactivate_and_keep_the_windows() {
    let (v, c, start) = setup();
    let t = pe(&v).table(1).unwrap();
    let idx = spapr_tce::TceIndex(t.geometry().first_index().0);
    let (tce, mapped, kills) = (t.get(idx).unwrap(), t.count_mapped(), pe(&v).pe_kills());
    for reset in [6, 7] {
        assert_eq!(op(&v, c, reset), Ok(0), "case 13");
        assert_eq!(op(&v, c, GET_STATE), Ok(2));
        assert!(pe(&v).eeh().cfg_blocked);
        assert_eq!(mmio(&v), u64::MAX);
        assert_eq!(op(&v, c, 5), Ok(0), "case 14");
        assert_eq!(op(&v, c, GET_STATE), Ok(0));
        let e = pe(&v).eeh();
        assert!(!e.cfg_blocked && !e.isolated);
        // The windows, their TCEs and the TCE cache are untouched: no re-programming,
        // no kill.
        assert_eq!(t.get(idx).unwrap(), tce);
        assert_eq!(t.count_mapped(), mapped);
        assert_eq!(pe(&v).pe_kills(), kills);
        assert!(dma(&v, start + 8, Access::Read).is_ok());
    }
    assert_eq!(op(&v, c, 11), Err(Errno::Einval));
}

#[test]
fn error_injection_arms_the_next_access() {
    let (v, c, start) = setup();
    let inject = |kind, func, argsz: u32| {
        let mut b = encode_eeh_pe_op(9, kind, func);
        b[0..4].copy_from_slice(&argsz.to_ne_bytes());
        call(&v, c, ioctl::EEH_PE_OP, b)
    };
    assert_eq!(inject(0, 0, 12), Err(Errno::Einval), "case 19");
    assert_eq!(inject(2, 0, 40), Err(Errno::Einval), "case 20");
    assert_eq!(inject(0, 20, 40), Err(Errno::Einval), "case 21");
    assert_eq!(inject(0, 2, 40), Err(Errno::Eio), "case 22");
    assert_eq!(op(&v, c, GET_STATE), Ok(0), "nothing armed by a refusal");
    assert_eq!(inject(1, 0, 40), Ok(0), "case 23");
    assert_eq!(op(&v, c, GET_STATE), Ok(0), "armed, not yet struck");
    assert_eq!(mmio(&v), u64::MAX);
    assert_eq!(op(&v, c, GET_STATE), Ok(2));
    assert_eq!(op(&v, c, 1), Ok(0));
    // A DMA injection strikes the next DMA, even a legal one.
    assert_eq!(inject(0, 16, 40), Ok(0));
    assert!(matches!(
        dma(&v, start + 8, Access::Read),
        Err(DmaFault::Frozen { .. })
    ));
    assert_eq!(op(&v, c, GET_STATE), Ok(2));
}

#[test]
fn opening_a_device_thaws_and_counts_and_release_gives_it_back() {
    let v = vfio(KernelProfile::Strict);
    v.machine().env().set_eeh(true);
    let (c, g) = v2(&v, &["gpu0"]);
    let gpu = v.machine().device("gpu0").unwrap();
    let p = pe(&v);
    // Case 25: frozen before the open (here by a DMA nobody mapped).
    assert!(v
        .machine()
        .device_translate(gpu, 0x1000, Access::Read)
        .is_err());
    assert!(p.eeh().dma_stopped);
    v.open_device(g[0], gpu).unwrap();
    let e = p.eeh();
    assert_eq!(e.pass_dev_cnt, 1);
    assert!(!e.dma_stopped && !e.mmio_frozen, "thawed for its new owner");
    assert!(v
        .machine()
        .device_translate(gpu, 0x1000, Access::Read)
        .is_err());
    v.close_device(g[0]).unwrap();
    let e = p.eeh();
    assert_eq!(e.pass_dev_cnt, 0);
    assert!(!e.dma_stopped, "released usable for the host");
    let _ = c;
}

/// Case 26, on a host-owned PE: six freezes ten minutes apart, the sixth disables the PE
/// for good; two freezes more than an hour apart are each the first of their window.
#[test]
fn the_host_recovers_its_pes_and_disables_one_that_keeps_failing() {
    let m = spapr_platform::PowerNv::booted(spapr_platform::PowerNvConfig::seed()).unwrap();
    m.env().set_eeh(true);
    let nic = m.device("nic0").unwrap();
    let p = m.pe_of(nic).unwrap();
    let freeze = || {
        assert!(m
            .device_translate(nic, 0xffff_0000_0000, Access::Read)
            .is_err());
        assert_eq!(m.device_mmio_read(nic, 7), Ok(u64::MAX));
        assert!(p.eeh().isolated, "the host saw the all-ones read");
    };
    for k in 1..=5 {
        freeze();
        assert_eq!(
            p.eeh_recover(&[DriverResult::CanRecover]),
            Ok(Recovery::Recovered { freeze_count: k })
        );
        assert_eq!(m.device_mmio_read(nic, 7), Ok(7), "recovered");
        m.env().advance_clock(600);
    }
    freeze();
    assert_eq!(
        m.eeh_recover(nic, &[DriverResult::CanRecover]),
        Ok(Recovery::Failed { freeze_count: 6 })
    );
    let e = p.eeh();
    assert!(
        e.removed && e.mmio_frozen && e.dma_stopped,
        "REMOVED, stays frozen"
    );
    assert!(m.device("nic0").is_none(), "its devices are hot-removed");
    assert_eq!(p.eeh_recover(&[]), Err(Errno::Enodev));
    // (b) on another host-owned PE.
    let nvme = m.device("nvme0").unwrap();
    let q = m.pe_of(nvme).unwrap();
    for answer in [DriverResult::CanRecover, DriverResult::NeedReset] {
        assert!(m
            .device_translate(nvme, 0x1_0000_0000_0000, Access::Read)
            .is_err());
        let _ = m.device_mmio_read(nvme, 0);
        assert_eq!(
            q.eeh_recover(&[answer]),
            Ok(Recovery::Recovered { freeze_count: 1 }),
            "case 26(b), {answer:?}"
        );
        assert_eq!(m.device_mmio_read(nvme, 5), Ok(5));
        m.env().advance_clock(3601);
    }
    // A driver that answers RECOVERED at once gets no thaw (only CAN_RECOVER thaws).
    assert!(m
        .device_translate(nvme, 0x1_0000_0000_0000, Access::Read)
        .is_err());
    let _ = m.device_mmio_read(nvme, 0);
    assert_eq!(
        q.eeh_recover(&[DriverResult::Recovered]),
        Ok(Recovery::Recovered { freeze_count: 1 })
    );
    assert!(q.eeh().mmio_frozen && q.eeh().dma_stopped);
    // Thawed and its isolation cleared by hand (ENABLE) for what follows.
    q.eeh_set_option(1).unwrap();
    // Not isolated: nothing to recover.
    assert_eq!(q.eeh_recover(&[]), Err(Errno::Einval));
    // A driver that disconnects is a hard fail at once.
    let gpu = m.device("gpu0").unwrap();
    let r = m.pe_of(gpu).unwrap();
    assert!(m
        .device_translate(gpu, 0x1_0000_0000_0000, Access::Read)
        .is_err());
    let _ = m.device_mmio_read(gpu, 0);
    assert_eq!(
        r.eeh_recover(&[DriverResult::Disconnect]),
        Ok(Recovery::Failed { freeze_count: 1 })
    );
}

#[derive(Clone, Debug)]
enum Step {
    GoodDma,
    BadDma,
    Mmio,
    Op(u32),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => Just(Step::GoodDma),
        1 => Just(Step::BadDma),
        1 => Just(Step::Mmio),
        3 => (0u32..9).prop_map(Step::Op),
    ]
}

proptest! {
    /// Against a reference model of the two PEST bits: a DMA succeeds exactly when DMA
    /// is not stopped (so never on a frozen PE, and always again once thawed), MMIO
    /// reads all-ones exactly while MMIO is frozen, and GET_STATE reads the bits.
    #[test]
    fn no_dma_on_a_frozen_pe_and_a_thawed_pe_serves_its_mappings(steps in prop::collection::vec(step(), 1..40)) {
        let (v, c, start) = setup();
        let (mut mmio_frozen, mut dma_stopped) = (false, false);
        for s in steps {
            match s {
                Step::GoodDma => {
                    let r = dma(&v, start + 8, Access::Read);
                    prop_assert_eq!(r.is_ok(), !dma_stopped, "{:?}", r);
                }
                Step::BadDma => {
                    prop_assert!(dma(&v, start, Access::Write).is_err());
                    // A DMA to a PE whose DMA is stopped is dropped: no new error.
                    if !dma_stopped {
                        mmio_frozen = true;
                        dma_stopped = true;
                    }
                }
                Step::Mmio => prop_assert_eq!(mmio(&v) == u64::MAX, mmio_frozen),
                Step::Op(o) => {
                    prop_assert_eq!(op(&v, c, o).is_ok(), true);
                    match o {
                        1 | 5 => { mmio_frozen = false; dma_stopped = false; }
                        2 => mmio_frozen = false,
                        3 => dma_stopped = false,
                        6 | 7 => { mmio_frozen = true; dma_stopped = true; }
                        _ => {}
                    }
                }
            }
            let want = match (mmio_frozen, dma_stopped) {
                (false, false) => 0,
                (true, false) => 5,
                (false, true) => 4,
                (true, true) => 2,
            };
            prop_assert_eq!(op(&v, c, GET_STATE), Ok(want));
            let found = v.machine().check();
            prop_assert!(found.is_empty(), "{:?}", found);
        }
    }
}

/// Case 12: the hardware freezes the PE again as the firmware clears it ("the freeze
/// sticks"): UNFREEZE_IO is -EIO and the PE stays frozen; the next try thaws it.
#[test]
fn a_freeze_that_sticks_makes_the_thaw_fail() {
    let (v, c, start) = setup();
    let p = pe(&v);
    let _ = dma(&v, start, Access::Write);
    v.machine().env().inject(
        spapr_platform::FaultPoint::Thaw,
        Some((p.phb, p.number)),
        0,
        spapr_platform::OpalError::Hardware,
    );
    assert_eq!(op(&v, c, 2), Err(Errno::Eio), "case 12");
    assert_eq!(op(&v, c, GET_STATE), Ok(2), "still frozen");
    assert_eq!(op(&v, c, 2), Ok(0), "the fault struck once");
    assert_eq!(op(&v, c, GET_STATE), Ok(4));
}

/// Case 15: a VF PE resets its function by FLR or AF FLR; without either capability a
/// hot or fundamental reset is -ENOTTY, and the PE is left frozen with config blocked.
#[test]
fn a_vf_pe_without_flr_cannot_be_reset() {
    for (how, want) in [
        (spapr_platform::VfReset::None, Err(Errno::Enotty)),
        (spapr_platform::VfReset::Flr, Ok(0)),
        (spapr_platform::VfReset::AfFlr, Ok(0)),
    ] {
        let mut cfg = spapr_platform::PowerNvConfig::seed();
        for d in &mut cfg.devices {
            if d.name == "gpu0" {
                d.vf = Some(how);
            }
        }
        let m = Arc::new(spapr_platform::PowerNv::booted(cfg).unwrap());
        let v = Vfio::new(
            m,
            VfioConfig {
                profile: KernelProfile::Strict,
                eeh: true,
                ..VfioConfig::default()
            },
        );
        let (c, _) = v2(&v, &["gpu0"]);
        for reset in [6, 7] {
            assert_eq!(op(&v, c, reset), want, "case 15, {how:?}");
            let e = pe(&v).eeh();
            assert!(e.mmio_frozen && e.dma_stopped && e.cfg_blocked);
            // The deassert is refused alike, config space unblocked all the same.
            assert_eq!(op(&v, c, 5), want);
            let e = pe(&v).eeh();
            assert!(!e.cfg_blocked);
            assert_eq!(
                e.dma_stopped,
                want.is_err(),
                "thawed only by a working reset"
            );
        }
    }
}

/// Cases 24 and 27: a fenced PHB stops its PEs; once the host has seen the fence (an
/// all-ones read isolates the PHB PE) a passed PE under it reads UNAVAIL and cannot be
/// thawed; the PHB's complete reset keeps every window and TCE, kills the TCE cache,
/// thaws the host's PEs and re-freezes the passed one for its owner.
#[test]
fn a_fenced_phb_reads_unavail_and_its_reset_refreezes_the_passed_pe() {
    let (v, c, start) = setup();
    let m = v.machine();
    let p = pe(&v);
    let phb = m.phbs()[p.phb as usize].clone();
    let t = p.table(1).unwrap();
    let idx = spapr_tce::TceIndex(t.geometry().first_index().0);
    let (tce, kills) = (t.get(idx).unwrap(), p.pe_kills());
    phb.eeh_fence();
    assert!(matches!(
        dma(&v, start + 8, Access::Read),
        Err(DmaFault::Frozen { .. })
    ));
    assert_eq!(op(&v, c, GET_STATE), Ok(2), "fenced, not yet seen");
    assert_eq!(mmio(&v), u64::MAX);
    assert!(
        phb.eeh().isolated,
        "the passed PE's read isolates the PHB PE"
    );
    assert_eq!(op(&v, c, GET_STATE), Ok(5), "case 24");
    assert_eq!(op(&v, c, 2), Err(Errno::Eio), "no thaw on a fenced PHB");
    assert_eq!(op(&v, c, 1), Err(Errno::Eio));
    assert!(m.check().is_empty(), "{:?}", m.check());
    // Case 27.
    assert_eq!(phb.eeh_reset_full(false), Ok(()));
    assert!(!phb.eeh().fenced && !phb.eeh().isolated);
    assert_eq!(t.get(idx).unwrap(), tce, "windows and TCEs survive");
    assert_eq!(p.pe_kills(), kills + 1, "the TCE cache is killed");
    let e = p.eeh();
    assert!(
        e.mmio_frozen && e.dma_stopped,
        "the passed PE is re-frozen (3)"
    );
    assert_eq!(op(&v, c, GET_STATE), Ok(2));
    assert_eq!(op(&v, c, 1), Ok(0), "its owner thaws it");
    assert!(dma(&v, start + 8, Access::Read).is_ok());
    assert!(m.check().is_empty(), "{:?}", m.check());
}

/// Host recovery of a fenced PHB: its host-owned PEs serve again; a PHB PE not isolated
/// has nothing to recover.
#[test]
fn the_host_recovers_a_fenced_phb() {
    let m = spapr_platform::PowerNv::booted(spapr_platform::PowerNvConfig::seed()).unwrap();
    m.env().set_eeh(true);
    let nic = m.device("nic0").unwrap();
    let phb = m.phbs()[0].clone();
    assert_eq!(phb.eeh_recover(), Err(Errno::Einval));
    m.bind_driver(nic, "ixgbe").unwrap();
    let buf = m
        .driver_dma_alloc(nic, 4096, spapr_tce::DmaDirection::Bidirectional)
        .unwrap()
        .dma;
    phb.eeh_fence();
    assert!(m.device_translate(nic, buf, Access::Read).is_err());
    assert_eq!(m.device_mmio_read(nic, 7), Ok(u64::MAX));
    assert_eq!(m.pe_of(nic).unwrap().eeh_state_value(), 5);
    assert_eq!(
        phb.eeh_recover(),
        Ok(Recovery::Recovered { freeze_count: 1 })
    );
    assert_eq!(m.device_mmio_read(nic, 7), Ok(7));
    assert!(m.device_translate(nic, buf, Access::Read).is_ok());
    assert!(m.check().is_empty(), "{:?}", m.check());
}

fn setup_with(flags: spapr_platform::EehFlags) -> (Vfio, ContainerFd, u64) {
    let (v, c, start) = setup();
    v.machine().env().set_eeh_flags(flags);
    (v, c, start)
}

/// eeh.md decision 1, `linux-6.12`: a bad INJECT_ERR type is -ERANGE (v6.4: -EINVAL).
#[test]
fn linux_6_12_refuses_a_bad_injection_type_with_erange() {
    let (v, c, _) = setup_with(spapr_platform::EehFlags {
        inject_type_erange: true,
        ..Default::default()
    });
    let mut b = encode_eeh_pe_op(9, 2, 0);
    b[0..4].copy_from_slice(&40u32.to_ne_bytes());
    assert_eq!(
        call(&v, c, ioctl::EEH_PE_OP, b),
        Err(Errno::Erange),
        "case 20, 6.12"
    );
    let b = encode_eeh_pe_op(9, 0, 20);
    assert_eq!(
        call(&v, c, ioctl::EEH_PE_OP, b),
        Err(Errno::Einval),
        "func still -EINVAL"
    );
}

/// eeh.md decision 4, `peev-sticky`: a freeze by software alone (a reset's assert) is not
/// reported, so GET_STATE reads 0 and the thaw does nothing, while the PEST bits go on
/// stopping DMA; a hardware-detected error is seen as usual.
#[test]
fn peev_sticky_hides_a_software_freeze() {
    let (v, c, start) = setup_with(spapr_platform::EehFlags {
        peev_sticky: true,
        ..Default::default()
    });
    assert_eq!(op(&v, c, 6), Ok(0));
    assert_eq!(op(&v, c, GET_STATE), Ok(0), "not reported");
    assert_eq!(op(&v, c, 5), Ok(0));
    assert!(
        pe(&v).eeh().dma_stopped,
        "the deassert's thaw saw nothing to do"
    );
    assert!(dma(&v, start + 8, Access::Read).is_err());
    // A PHB complete reset clears every PEST; a hardware error is then reported.
    let phb = v.machine().phbs()[pe(&v).phb as usize].clone();
    phb.eeh_reset_full(true).unwrap();
    assert!(dma(&v, start + 8, Access::Read).is_ok());
    let _ = dma(&v, start, Access::Write);
    assert_eq!(op(&v, c, GET_STATE), Ok(2), "a hardware freeze sets PEEV");
    assert_eq!(op(&v, c, 1), Ok(0));
    assert_eq!(op(&v, c, GET_STATE), Ok(0));
    assert!(v.machine().check().is_empty(), "{:?}", v.machine().check());
}

/// eeh.md decision 10: a thaw that fails at `eeh_dev_open` is ignored since v6.2 (the
/// open succeeds, the device is not counted as passed, the PE stays frozen);
/// `linux-old-open` fails the open with it.
#[test]
fn a_failed_eeh_dev_open_fails_the_open_only_in_the_old_reading() {
    for old in [false, true] {
        let v = vfio(KernelProfile::Strict);
        v.machine().env().set_eeh(true);
        v.machine().env().set_eeh_flags(spapr_platform::EehFlags {
            open_fails: old,
            ..Default::default()
        });
        let (_c, g) = v2(&v, &["gpu0"]);
        let gpu = v.machine().device("gpu0").unwrap();
        let p = pe(&v);
        let _ = v.machine().device_translate(gpu, 0x1000, Access::Read);
        v.machine().env().inject(
            spapr_platform::FaultPoint::Thaw,
            Some((p.phb, p.number)),
            0,
            spapr_platform::OpalError::Hardware,
        );
        let r = v.open_device(g[0], gpu);
        assert_eq!(r, if old { Err(Errno::Eio) } else { Ok(()) });
        let e = p.eeh();
        assert_eq!(e.pass_dev_cnt, 0);
        assert!(e.mmio_frozen && e.dma_stopped);
        // Closing what did not open is EBADF; closing what did opens nothing up.
        assert_eq!(v.close_device(g[0]).is_ok(), !old);
    }
}

/// Case 11 on setup S: UNFREEZE_IO on a PE that is not frozen succeeds and makes no OPAL
/// call (an armed thaw failure is left unused); case 10: UNFREEZE_DMA on a fully frozen
/// PE the host has not looked at marks it isolated (the state read before the thaw).
#[test]
fn a_thaw_of_what_is_not_frozen_calls_no_firmware() {
    let (v, c, start) = setup();
    let p = pe(&v);
    v.machine().env().inject(
        spapr_platform::FaultPoint::Thaw,
        Some((p.phb, p.number)),
        0,
        spapr_platform::OpalError::Hardware,
    );
    assert_eq!(op(&v, c, 2), Ok(0), "case 11");
    assert_eq!(
        v.machine().env().pending_injections(),
        1,
        "no firmware call"
    );
    let _ = v
        .machine()
        .env()
        .take_fault(spapr_platform::FaultPoint::Thaw, (p.phb, p.number));
    let _ = dma(&v, start, Access::Write);
    assert!(!p.eeh().isolated);
    assert_eq!(op(&v, c, 3), Ok(0));
    assert_eq!(op(&v, c, GET_STATE), Ok(5), "case 10");
    assert!(
        p.eeh().isolated,
        "the state read before the thaw saw the full freeze"
    );
}

/// Case 13's config read: all-ones while a reset keeps config space blocked.
#[test]
fn config_space_reads_all_ones_while_blocked() {
    let (v, c, _) = setup();
    let gpu = v.machine().device("gpu0").unwrap();
    assert_eq!(v.machine().device_config_read(gpu, 0x10de), Ok(0x10de));
    assert_eq!(op(&v, c, 6), Ok(0));
    assert_eq!(
        v.machine().device_config_read(gpu, 0x10de),
        Ok(u32::MAX),
        "case 13"
    );
    assert_eq!(op(&v, c, 5), Ok(0));
    assert_eq!(
        v.machine().device_config_read(gpu, 0x10de),
        Ok(0x10de),
        "case 14"
    );
}

/// With EEH turned off after a freeze (`eeh_enable` = 0), the hardware still stops the
/// PE's DMA and MMIO; only the kernel stops looking.
#[test]
fn turning_eeh_off_does_not_thaw_the_hardware() {
    let (v, c, start) = setup();
    let _ = dma(&v, start, Access::Write);
    v.machine().env().set_eeh(false);
    assert!(dma(&v, start + 8, Access::Read).is_err());
    assert_eq!(mmio(&v), u64::MAX);
    assert!(v.machine().check().is_empty(), "{:?}", v.machine().check());
    v.machine().env().set_eeh(true);
    assert_eq!(op(&v, c, 1), Ok(0));
    assert!(dma(&v, start + 8, Access::Read).is_ok());
}
