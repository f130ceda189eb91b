//! Property: whatever a process does with containers, groups and ioctls, in either
//! profile, the security invariants hold after every call, and once everything is closed
//! every charge is returned and every PE is the kernel's again.

mod common;
use common::*;
use proptest::prelude::*;
use spapr_platform::Tve1;
use spapr_vfio::uapi::{encode, ioctl};
use spapr_vfio::{ContainerFd, GroupFd, KernelProfile};

#[derive(Clone, Debug)]
enum Op {
    SetContainer(usize, usize),
    UnsetContainer(usize),
    SetIommu(usize, bool),
    Enable(usize),
    Register(usize, u64),
    Unregister(usize, u64),
    Create(usize, u32, u32),
    Remove(usize, bool),
    Map(usize, u64, u64, u64, u32),
    Unmap(usize, u64, u64),
    CloseContainer(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..2usize, 0..2usize).prop_map(|(g, c)| Op::SetContainer(g, c)),
        (0..2usize).prop_map(Op::UnsetContainer),
        (0..2usize, any::<bool>()).prop_map(|(c, v2)| Op::SetIommu(c, v2)),
        (0..2usize).prop_map(Op::Enable),
        (0..2usize, 0..4u64).prop_map(|(c, r)| Op::Register(c, r)),
        (0..2usize, 0..4u64).prop_map(|(c, r)| Op::Unregister(c, r)),
        (
            0..2usize,
            prop_oneof![Just(12u32), Just(16), Just(21)],
            1..4u32
        )
            .prop_map(|(c, p, l)| Op::Create(c, p, l)),
        (0..2usize, any::<bool>()).prop_map(|(c, ddw)| Op::Remove(c, ddw)),
        (0..2usize, 0..4u64, 0..64u64, 1..8u64, 0..4u32)
            .prop_map(|(c, r, at, n, f)| Op::Map(c, r, at, n, f)),
        (0..2usize, 0..4u64, 0..64u64, 1..8u64, 0..4u32)
            .prop_map(|(c, r, at, n, f)| Op::Map(c, r, at, n, f)),
        (0..2usize, 0..64u64, 1..16u64).prop_map(|(c, at, n)| Op::Unmap(c, at, n)),
        (0..2usize).prop_map(Op::CloseContainer),
    ]
}

const REGION: u64 = 1 << 22;

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn invariants_hold_and_everything_is_returned(
        strict in any::<bool>(),
        set_up in any::<bool>(),
        ops in proptest::collection::vec(op(), 1..40),
    ) {
        let v = vfio(if strict { KernelProfile::Strict } else { KernelProfile::Linux });
        let m = v.machine().clone();
        let devs = ["nvme0", "gpu0"].map(|n| m.device(n).unwrap());
        let mut groups: Vec<GroupFd> = Vec::new();
        for d in devs {
            m.unbind_driver(d).ok();
            v.register_device(d).unwrap();
            groups.push(v.open_group(d).unwrap());
        }
        let mut containers: Vec<Option<ContainerFd>> = vec![Some(v.open_container()), Some(v.open_container())];
        let ua = v.mmap(QEMU, 4 * REGION, 16).unwrap();
        if set_up {
            // Half the cases start from a working v2 container, so that maps succeed.
            let c = containers[0].unwrap();
            v.set_container(groups[0], c).unwrap();
            v.ioctl_int(QEMU, c, ioctl::SET_IOMMU, 7).unwrap();
            for r in 0..2 {
                call(&v, c, ioctl::REGISTER_MEMORY, encode::register(0, ua + r * REGION, REGION)).unwrap();
            }
        }
        for op in ops {
            let cfd = |i: usize| containers[i];
            match op {
                Op::SetContainer(g, c) => {
                    if let Some(c) = cfd(c) {
                        let _ = v.set_container(groups[g], c);
                    }
                }
                Op::UnsetContainer(g) => {
                    let _ = v.unset_container(groups[g]);
                }
                Op::SetIommu(c, v2) => {
                    if let Some(c) = cfd(c) {
                        let _ = v.ioctl_int(QEMU, c, ioctl::SET_IOMMU, if v2 { 7 } else { 2 });
                    }
                }
                Op::Enable(c) => {
                    if let Some(c) = cfd(c) {
                        let _ = v.ioctl_int(QEMU, c, ioctl::ENABLE, 0);
                    }
                }
                Op::Register(c, r) | Op::Unregister(c, r) => {
                    if let Some(c) = cfd(c) {
                        let nr = if matches!(op, Op::Register(..)) {
                            ioctl::REGISTER_MEMORY
                        } else {
                            ioctl::UNREGISTER_MEMORY
                        };
                        let _ = call(&v, c, nr, encode::register(0, ua + r * REGION, REGION));
                    }
                }
                Op::Create(c, p, l) => {
                    if let Some(c) = cfd(c) {
                        let _ = call(&v, c, ioctl::TCE_CREATE, encode::create(p, 1 << 30, l));
                    }
                }
                Op::Remove(c, ddw) => {
                    if let Some(c) = cfd(c) {
                        let _ = call(&v, c, ioctl::TCE_REMOVE, encode::remove(if ddw { DDW } else { 0 }));
                    }
                }
                Op::Map(c, r, at, n, f) => {
                    if let Some(c) = cfd(c) {
                        let iova = if at % 2 == 0 { DDW } else { 0 } + (at << 16);
                        let _ = call(&v, c, ioctl::MAP_DMA, encode::map(f, ua + r * REGION, iova, n << 16));
                    }
                }
                Op::Unmap(c, at, n) => {
                    if let Some(c) = cfd(c) {
                        let iova = if at % 2 == 0 { DDW } else { 0 } + (at << 16);
                        let _ = call(&v, c, ioctl::UNMAP_DMA, encode::unmap(0, iova, n << 16));
                    }
                }
                Op::CloseContainer(c) => {
                    if let Some(fd) = containers[c].take() {
                        v.close_container(fd).unwrap();
                    }
                }
            }
            let bad = m.check();
            prop_assert!(bad.is_empty(), "{:?}", bad);
            let books = v.audit();
            prop_assert!(books.is_empty(), "{:?}", books);
        }
        for c in containers.into_iter().flatten() {
            v.close_container(c).unwrap();
        }
        for g in &groups {
            v.close_group(*g).unwrap();
        }
        if strict {
            prop_assert_eq!(v.locked_pages(QEMU), 0, "strict returns every charge");
        }
        for d in devs {
            let pe = m.pe_of(d).unwrap();
            prop_assert!(pe.table(0).is_some_and(|t| t.is_kernel_table()));
            prop_assert!(pe.table(1).is_none());
            let bypass = matches!(pe.tve1_now(), Tve1::Bypass { .. });
            prop_assert!(bypass, "bypass back on");
        }
        prop_assert!(m.check().is_empty());
    }
}
