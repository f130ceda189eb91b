//! Random sequences of add/remove, bind/unbind and claim/release never break an invariant,
//! and once everything is removed every group is freed. Threads on one group end in a
//! state a serial order would give.

mod common;
use common::*;
use iommu_core::*;
use proptest::prelude::*;
use std::sync::atomic::Ordering;
use std::sync::Arc;

#[derive(Clone, Debug)]
enum Op {
    Add(u32),
    Remove(u32),
    Bind(u32, bool),
    Unbind(u32),
    ClaimGroup(u32, u64),
    ClaimDevice(u32, u64),
    ReleaseOne,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u32..8).prop_map(Op::Add),
        (0u32..8).prop_map(Op::Remove),
        (0u32..8, any::<bool>()).prop_map(|(d, m)| Op::Bind(d, m)),
        (0u32..8).prop_map(Op::Unbind),
        (0u32..8, 0u64..3).prop_map(|(d, o)| Op::ClaimGroup(d, o)),
        (0u32..8, 0u64..3).prop_map(|(d, o)| Op::ClaimDevice(d, o)),
        Just(Op::ReleaseOne),
    ]
}

enum Claim {
    G(GroupClaim),
    D(DeviceClaim),
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]
    #[test]
    fn random_sequences_keep_every_invariant_and_free_every_group(ops in prop::collection::vec(op(), 1..80)) {
        let core = Core::new();
        let drv = TestDriver::new(&core, 3, true);
        core.register_instance("test", drv.clone());
        let mut devs: Vec<Option<DeviceId>> = vec![None; 8];
        let mut claims: Vec<Claim> = Vec::new();
        for op in &ops {
            match op {
                Op::Add(i) => if devs[*i as usize].is_none() {
                    devs[*i as usize] = Some(core.add_device(DeviceInfo::platform(&format!("d{i}"), *i)));
                },
                Op::Remove(i) => if let Some(d) = devs[*i as usize].take() {
                    core.remove_device(d).unwrap();
                },
                Op::Bind(i, managed) => if let Some(d) = devs[*i as usize] {
                    let _ = core.bind_driver(d, "drv", *managed);
                },
                Op::Unbind(i) => if let Some(d) = devs[*i as usize] {
                    let _ = core.unbind_driver(d);
                },
                Op::ClaimGroup(i, o) => if let Some(d) = devs[*i as usize] {
                    if let Some(g) = core.device_group(d).unwrap() {
                        if let Ok(c) = core.claim_group(&g, OwnerCookie(*o)) { claims.push(Claim::G(c)); }
                    }
                },
                Op::ClaimDevice(i, o) => if let Some(d) = devs[*i as usize] {
                    if let Ok(c) = core.claim_device(d, OwnerCookie(*o)) { claims.push(Claim::D(c)); }
                },
                Op::ReleaseOne => if let Some(c) = claims.pop() {
                    match c { Claim::G(c) => { let _ = c.release(); } Claim::D(c) => { let _ = c.release(); } }
                },
            }
            let v = core.check();
            prop_assert!(v.is_empty(), "after {op:?}: {v:?}");
        }
        drop(claims);
        for d in devs.into_iter().flatten() {
            core.remove_device(d).unwrap();
        }
        drv.groups.lock().unwrap().clear();
        prop_assert!(core.groups().is_empty(), "groups left: {:?}", core.groups());
    }
}

#[test]
fn concurrent_claims_releases_and_binds_end_in_a_serial_state() {
    for _round in 0..20 {
        let core = Core::new();
        let drv = TestDriver::new(&core, 4, true);
        core.register_instance("test", drv.clone());
        let devs: Vec<DeviceId> = (0..4)
            .map(|i| core.add_device(DeviceInfo::platform(&format!("d{i}"), i)))
            .collect();
        let g = core.device_group(devs[0]).unwrap().unwrap();
        let handles: Vec<_> = (0..4u64)
            .map(|t| {
                let (core, g, dev) = (core.clone(), g.clone(), devs[t as usize]);
                std::thread::spawn(move || {
                    for k in 0..200u64 {
                        match (t + k) % 3 {
                            0 => {
                                if let Ok(c) = core.claim_group(&g, OwnerCookie(t + 1)) {
                                    assert!(core.check().is_empty());
                                    drop(c);
                                }
                            }
                            1 => {
                                if let Ok(c) = core.claim_device(dev, OwnerCookie(1)) {
                                    drop(c);
                                }
                            }
                            _ => {
                                if core.bind_driver(dev, "k", false).is_ok() {
                                    core.unbind_driver(dev).unwrap();
                                }
                            }
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let v = core.group_view(&g);
        assert_eq!(
            (v.owner, v.owner_cnt, v.domain),
            (None, 0, Some(DomainType::Platform))
        );
        assert!(core.check().is_empty());
        assert_eq!(drv.freed.load(Ordering::Relaxed), 0);
        let _ = Arc::clone(&drv);
    }
}
