//! Property: whatever the sequence of driver binds, DMA API maps, claims, user mappings
//! and releases, a user-owned group's devices reach no memory the user did not map, and the
//! checker finds nothing wrong with the fixed design.

use iommu_core::{GroupClaim, OwnerCookie};
use proptest::prelude::*;
use spapr_platform::{PowerNv, PowerNvConfig, UserTable, BYPASS_BASE};
use spapr_tce::{Access, DmaDirection, Tce, TceIndex, TcePerm};
use std::collections::HashMap;

#[derive(Clone, Debug)]
enum Op {
    Bind(usize),
    Unbind(usize),
    Alloc(usize, u64),
    Free(usize),
    Claim(usize),
    Release(usize),
    UserMap(usize, u64, bool),
    Access(usize, u64, bool),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..3usize).prop_map(Op::Bind),
        (0..3usize).prop_map(Op::Unbind),
        (0..3usize, 1..0x40000u64).prop_map(|(d, l)| Op::Alloc(d, l)),
        (0..3usize).prop_map(Op::Free),
        (0..3usize).prop_map(Op::Claim),
        (0..3usize).prop_map(Op::Release),
        (0..3usize, 0..64u64, any::<bool>()).prop_map(|(d, p, w)| Op::UserMap(d, p, w)),
        (0..3usize, 0..1u64 << 34, any::<bool>()).prop_map(|(d, a, w)| Op::Access(d, a, w)),
    ]
}

struct UserSide {
    claim: GroupClaim,
    table: Option<UserTable>,
    /// iova page → hpa page, permission writable.
    mapped: HashMap<u64, (u64, bool)>,
}

const NAMES: [&str; 3] = ["nic0", "nvme0", "gpu0"];
const PAGE: u64 = 1 << 16;

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn user_owned_devices_reach_only_user_mappings(ops in proptest::collection::vec(op(), 1..40)) {
        let m = PowerNv::booted(PowerNvConfig::seed()).unwrap();
        let devs: Vec<_> = NAMES.iter().map(|n| m.device(n).unwrap()).collect();
        let mut users: HashMap<usize, UserSide> = HashMap::new();
        let mut issued: Vec<u64> = vec![0x1_0000, BYPASS_BASE, BYPASS_BASE + 0x2000_0000];
        for op in ops {
            match op {
                Op::Bind(i) => { let _ = m.bind_driver(devs[i], "drv"); }
                Op::Unbind(i) => { let _ = m.unbind_driver(devs[i]); }
                Op::Alloc(i, len) => {
                    if let Ok(b) = m.driver_dma_alloc(devs[i], len, DmaDirection::Bidirectional) {
                        issued.push(b.dma);
                    }
                }
                Op::Free(i) => {
                    if let Some(b) = m.driver_buffers(devs[i]).first() {
                        m.driver_dma_free(devs[i], b.dma).unwrap();
                    }
                }
                Op::Claim(i) => {
                    if let Ok(claim) = m.claim_group(devs[i], OwnerCookie(100 + i as u64)) {
                        users.insert(i, UserSide { claim, table: None, mapped: HashMap::new() });
                    }
                }
                Op::Release(i) => {
                    if let Some(u) = users.remove(&i) {
                        let pe = m.pe_of(devs[i]).unwrap();
                        // The owner (VFIO) clears and unsets its windows before release.
                        if let Some(t) = &u.table {
                            let g = *t.geometry();
                            t.clear(g.first_index(), g.entries()).unwrap();
                            pe.unset_window(1, &pe.window_token(&u.claim).unwrap()).unwrap();
                        }
                        m.release(u.claim).unwrap();
                    }
                }
                Op::UserMap(i, page, writable) => {
                    if let Some(u) = users.get_mut(&i) {
                        let pe = m.pe_of(devs[i]).unwrap();
                        if u.table.is_none() {
                            let t = pe.create_table(1, 16, 64 * PAGE, 1, &pe.window_token(&u.claim).unwrap()).unwrap();
                            pe.set_window(1, &t, &pe.window_token(&u.claim).unwrap()).unwrap();
                            u.table = Some(t);
                        }
                        let t = u.table.as_ref().unwrap();
                        let hpa = 0x1_0000_0000 + page * 3 * PAGE;
                        let perm = if writable { TcePerm::READ_WRITE } else { TcePerm::READ };
                        let idx = TceIndex(t.geometry().first_index().0 + page);
                        t.set(idx, Tce::new(hpa, perm)).unwrap();
                        u.mapped.insert(BYPASS_BASE + page * PAGE, (hpa, writable));
                        issued.push(BYPASS_BASE + page * PAGE + 0x10);
                    }
                }
                Op::Access(i, addr, write) => {
                    issued.push(addr);
                    issued.push(addr | BYPASS_BASE);
                    let access = if write { Access::Write } else { Access::Read };
                    let _ = m.device_translate(devs[i], addr, access);
                }
            }
            // Invariant: owned devices reach only what their user mapped.
            for (i, u) in &users {
                for &iova in &issued {
                    for access in [Access::Read, Access::Write] {
                        let got = m.pe_of(devs[*i]).unwrap().translate(iova, access);
                        let page = iova & !(PAGE - 1);
                        match (got, u.mapped.get(&page)) {
                            (Ok(hpa), Some((base, writable))) => {
                                prop_assert_eq!(hpa.0, base + (iova & (PAGE - 1)));
                                prop_assert!(access == Access::Read || *writable);
                            }
                            (Ok(hpa), None) => prop_assert!(false, "{} reached {:#x} via {:#x}", NAMES[*i], hpa.0, iova),
                            (Err(_), _) => {}
                        }
                    }
                }
            }
            let v = m.check();
            prop_assert!(v.is_empty(), "{:?}", v);
        }
        // Everything back to the kernel: every device can bind and map again.
        for (i, u) in users.drain() {
            if let Some(t) = &u.table {
                let g = *t.geometry();
                t.clear(g.first_index(), g.entries()).unwrap();
                let pe = m.pe_of(devs[i]).unwrap();
                pe.unset_window(1, &pe.window_token(&u.claim).unwrap()).unwrap();
            }
            m.release(u.claim).unwrap();
        }
        for d in &devs {
            let _ = m.unbind_driver(*d);
            m.bind_driver(*d, "drv").unwrap();
            m.driver_dma_alloc(*d, 4096, DmaDirection::ToDevice).unwrap();
        }
        prop_assert!(m.check().is_empty());
    }
}
