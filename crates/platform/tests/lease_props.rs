//! Property: on a borrowing PE whose kernel table is lent to users, whatever the sequence
//! of driver binds and DMA maps, claims, writes through lent handles (kept across
//! releases, so some are stale) and releases (with or without the owner's own clear
//! first), a handle's write succeeds exactly while the claim it was lent under lasts
//! (the reference: the claim generation each handle came from against the current one),
//! a refused write changes nothing, the kernel's table holds no user entry while the
//! kernel has it, and the checker finds nothing wrong.

use iommu_core::{GroupClaim, OwnerCookie};
use proptest::prelude::*;
use spapr_platform::{
    DeviceConfig, PeScope, PhbConfig, PhbModel, PowerNv, PowerNvConfig, UserTable,
};
use spapr_tce::{DmaDirection, Tce, TceError, TceIndex, TcePerm};

/// User entries point here and above; the kernel's buffers lie in RAM, far below.
const USER_BASE: u64 = 1 << 40;

#[derive(Clone, Debug)]
enum Op {
    Bind,
    Unbind,
    Alloc,
    Free,
    Claim,
    /// Release the claim; `true`: the owner clears its entries first, as VFIO does.
    Release(bool),
    /// Lend the table again under the current claim (another handle).
    Lend,
    /// Write entry `page` through handle `k` (modulo the handles lent so far).
    Write(usize, u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => Just(Op::Bind),
        1 => Just(Op::Unbind),
        1 => Just(Op::Alloc),
        1 => Just(Op::Free),
        2 => Just(Op::Claim),
        1 => any::<bool>().prop_map(Op::Release),
        1 => Just(Op::Lend),
        4 => (0..8usize, 0..32u64).prop_map(|(k, p)| Op::Write(k, p)),
    ]
}

fn machine() -> PowerNv {
    // A 1 MiB 32-bit window (256 entries), so that every step can scan the whole table.
    let mut phb = PhbConfig::new(PhbModel::Ioda1, vec![(1, PeScope::Bus(1))]);
    phb.tce32_size = Some(1 << 20);
    PowerNv::booted(PowerNvConfig {
        phbs: vec![phb],
        devices: vec![DeviceConfig::new("a", 0, 1, 0, 32)],
        ..PowerNvConfig::seed()
    })
    .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn lent_handles_write_exactly_while_their_claim_lasts(ops in proptest::collection::vec(op(), 1..48)) {
        let m = machine();
        let a = m.device("a").unwrap();
        let pe = m.pe_of(a).unwrap();
        // The reference: the current claim and its generation; each handle's generation.
        let mut claim: Option<(GroupClaim, u64)> = None;
        let mut generation = 0u64;
        let mut handles: Vec<(UserTable, u64)> = Vec::new();
        for op in ops {
            match op {
                Op::Bind => { let _ = m.bind_driver(a, "drv"); }
                Op::Unbind => { let _ = m.unbind_driver(a); }
                Op::Alloc => { let _ = m.driver_dma_alloc(a, 0x1000, DmaDirection::Bidirectional); }
                Op::Free => {
                    if let Some(b) = m.driver_buffers(a).first() {
                        m.driver_dma_free(a, b.dma).unwrap();
                    }
                }
                Op::Claim => {
                    if claim.is_none() {
                        if let Ok(c) = m.claim_group(a, OwnerCookie(7)) {
                            generation += 1;
                            claim = Some((c, generation));
                        }
                    }
                }
                Op::Lend => {
                    if let Some((c, g)) = &claim {
                        let tok = pe.window_token(c).unwrap();
                        let t = pe.create_table(0, 12, pe.tce32_size, 1, &tok).unwrap();
                        handles.push((t, *g));
                    }
                }
                Op::Release(clear_first) => {
                    if let Some((c, g)) = claim.take() {
                        if clear_first {
                            for (t, _) in handles.iter().filter(|(_, hg)| *hg == g) {
                                let geo = *t.geometry();
                                t.clear(geo.first_index(), geo.entries()).unwrap();
                            }
                        }
                        m.release(c).unwrap();
                    }
                }
                Op::Write(k, page) => {
                    if handles.is_empty() {
                        continue;
                    }
                    let (t, g) = &handles[k % handles.len()];
                    let live = claim.as_ref().is_some_and(|(_, cg)| cg == g);
                    let idx = TceIndex(t.geometry().first_index().0 + page);
                    let before = t.get(idx);
                    let r = t.set(idx, Tce::new(USER_BASE + page * 0x1000, TcePerm::READ_WRITE));
                    if live {
                        prop_assert_eq!(r, Ok(()));
                    } else {
                        prop_assert_eq!(r, Err(TceError::Revoked));
                        prop_assert_eq!(t.get(idx), before, "a refused write changed the entry");
                    }
                }
            }
            if claim.is_none() {
                let kernel = pe.table(0).unwrap();
                let g = *kernel.geometry();
                let mut user_entries = 0u64;
                kernel.for_each_entry(g.first_index(), g.entries(), |_, tce| {
                    if tce.0 & !0xfff >= USER_BASE {
                        user_entries += 1;
                    }
                }).unwrap();
                prop_assert_eq!(user_entries, 0, "a user entry in the kernel's table");
            }
            prop_assert!(m.check().is_empty(), "{:?}", m.check());
        }
    }
}
