//! Save and restore of a PHB's windows: round trips, and refusals that change nothing.

mod common;
use common::*;
use proptest::prelude::*;
use spapr_papr::state::StateError;
use spapr_papr::{HStatus, Profile, RtasCall};

fn busy_guest() -> (spapr_papr::Spapr, vm_memory::GuestMemoryMmap) {
    let (s, mem) = guest(Profile::Qemu);
    s.h_put_tce(&mem, LIOBN0, 0x3000, 0x5003);
    s.h_put_tce(&mem, LIOBN0, 0x3fff_f000, u64::MAX);
    let r = s.rtas(
        RtasCall::Create,
        &[0, (BUID >> 32) as u32, BUID as u32, 16, 34],
        4,
    );
    assert_eq!(r[0], 0);
    s.h_put_tce(&mem, LIOBN1, DDW_BASE + 0x30000, 0x12_0001);
    (s, mem)
}

#[test]
fn a_saved_phb_restores_into_a_fresh_guest_exactly() {
    let (s, mem) = busy_guest();
    let bytes = s.save_phb(0).unwrap();
    let (t, _) = guest(Profile::Qemu);
    t.restore_phb(0, &bytes).unwrap();
    assert_eq!(t.save_phb(0).unwrap(), bytes);
    assert_eq!(get(&t, &mem, LIOBN0, 0x3000), Some(0x5003));
    assert_eq!(get(&t, &mem, LIOBN0, 0x3fff_f000), Some(u64::MAX));
    assert_eq!(get(&t, &mem, LIOBN1, DDW_BASE + 0x30000), Some(0x12_0001));
    // def_win survives: removing everything does not restore the default after it.
    assert_eq!(t.rtas(RtasCall::Remove, &[0x8000_0000], 1), vec![0]);
    assert_eq!(t.rtas(RtasCall::Remove, &[0x8000_0001], 1), vec![0]);
    assert_eq!(
        get(&t, &mem, LIOBN0, 0x3000),
        Some(0),
        "reset brought the default back"
    );
}

#[test]
fn bad_state_is_refused_and_changes_nothing() {
    let (s, mem) = busy_guest();
    let good = s.save_phb(0).unwrap();
    let (t, _) = guest(Profile::Qemu);
    t.h_put_tce(&mem, LIOBN0, 0, 0x7003);
    let before = t.save_phb(0).unwrap();
    let mut v2 = good.clone();
    v2[5] = 2;
    let mut buid = good.clone();
    buid[15] ^= 1;
    let mut trailing = good.clone();
    trailing.push(0);
    type Expect = fn(&StateError) -> bool;
    let cases: Vec<(Vec<u8>, Expect)> = vec![
        (b"XXXX".to_vec(), |e| matches!(e, StateError::BadMagic)),
        (v2, |e| matches!(e, StateError::UnsupportedVersion(2))),
        (buid, |e| matches!(e, StateError::BuidMismatch { .. })),
        (good[..good.len() - 3].to_vec(), |e| {
            matches!(e, StateError::Truncated(_))
        }),
        (trailing, |e| matches!(e, StateError::Trailing(1))),
    ];
    for (bytes, want) in cases {
        let e = t.restore_phb(0, &bytes).unwrap_err();
        assert!(want(&e), "{e}");
        assert_eq!(t.save_phb(0).unwrap(), before, "nothing changed after {e}");
    }
    assert!(matches!(t.restore_phb(3, &good), Err(StateError::NoPhb(3))));
    assert_eq!(
        t.h_get_tce(&mem, LIOBN0, 0),
        (HStatus::Success, Some(0x7003))
    );
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_and_a_refusal_changes_nothing(
        flips in proptest::collection::vec((0usize..200, any::<u8>()), 0..6),
        cut in 0usize..300,
    ) {
        let (s, _) = busy_guest();
        let mut bytes = s.save_phb(0).unwrap();
        for (at, v) in flips {
            if at < bytes.len() {
                bytes[at] = v;
            }
        }
        bytes.truncate(cut.max(1).min(bytes.len()));
        let (t, _) = guest(Profile::Qemu);
        let before = t.save_phb(0).unwrap();
        match t.restore_phb(0, &bytes) {
            Ok(()) => prop_assert_eq!(t.save_phb(0).unwrap(), bytes),
            Err(_) => prop_assert_eq!(t.save_phb(0).unwrap(), before),
        }
    }
}
