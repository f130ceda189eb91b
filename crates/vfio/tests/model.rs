//! A property test against a small, independent reference model of ownership, user
//! mappings and locked memory (issue 13). The machine has a multi-device PE, a
//! single-device PE and a borrowing (IODA1) PHB; two processes use two containers; devices
//! are hot-added and removed under them; `set_window` failures are injected; core claims
//! of a third owner are taken and released in any order.
//!
//! The model does not predict return codes. It is told which calls succeeded and keeps,
//! from that alone, who owns each group and which bus page of which container leads to
//! which user page. After every call the machine must agree with it:
//! - each group is owned exactly when the model says, by VFIO or by the claim;
//! - a device of a group in a container reaches every page the model has mapped there
//!   (the real address the process's memory has at that user address, with that
//!   permission), and no bus page next to them;
//! - no device of any other group reaches a user page the model has mapped anywhere;
//! - a call that failed changed nothing observable (owners, windows, locked memory).
//!
//! At the end everything is closed: every PE is the kernel's, `strict` leaves nothing
//! charged, and what `linux` leaves charged is exactly the sum of the pages its traced
//! quirks say it keeps.

use iommu_core::{DeviceClaim, EventKind, OwnerCookie};
use proptest::prelude::*;
use spapr_platform::{
    DeviceConfig, OpalError, PeScope, PhbConfig, PhbModel, PowerNv, PowerNvConfig,
};
use spapr_tce::Access;
use spapr_vfio::uapi::{encode, ioctl};
use spapr_vfio::{ContainerFd, GroupFd, KernelProfile, Mm, Vfio, VfioConfig};
use std::collections::BTreeMap;
use std::sync::Arc;

const PROCS: [Mm; 2] = [Mm(100), Mm(200)];
/// Groups: 0 = the GPU's bus PE (gpu0, and gpu1 when hot-added), 1 = the NIC's PE,
/// 2 = the IODA1 PHB's PE (borrowing).
const LEAD: [&str; 3] = ["gpu0", "nic0", "old0"];
const PAGE: u64 = 1 << 16;
const REGION: u64 = 1 << 20;
const DDW: u64 = 1 << 59;
const CLAIMER: OwnerCookie = OwnerCookie(0xC1A1);

#[derive(Clone, Debug)]
enum Op {
    SetContainer {
        g: usize,
        c: usize,
    },
    UnsetContainer {
        g: usize,
    },
    SetIommu {
        c: usize,
        v2: bool,
        p: usize,
    },
    Enable {
        c: usize,
        p: usize,
    },
    Register {
        c: usize,
        p: usize,
        r: u64,
    },
    Create {
        c: usize,
        p: usize,
    },
    Map {
        c: usize,
        p: usize,
        r: u64,
        page: u64,
        n: u64,
        rw: bool,
        ddw: bool,
    },
    Unmap {
        c: usize,
        p: usize,
        page: u64,
        n: u64,
        ddw: bool,
    },
    CloseContainer {
        c: usize,
    },
    HotAdd,
    HotRemove,
    FailSetWindow {
        skip: u32,
    },
    Claim {
        g: usize,
    },
    Release {
        k: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let c = 0..2usize;
    let p = 0..2usize;
    prop_oneof![
        3 => (0..3usize, c.clone()).prop_map(|(g, c)| Op::SetContainer { g, c }),
        1 => (0..3usize).prop_map(|g| Op::UnsetContainer { g }),
        2 => (c.clone(), any::<bool>(), p.clone()).prop_map(|(c, v2, p)| Op::SetIommu { c, v2, p }),
        1 => (c.clone(), p.clone()).prop_map(|(c, p)| Op::Enable { c, p }),
        2 => (c.clone(), p.clone(), 0..3u64).prop_map(|(c, p, r)| Op::Register { c, p, r }),
        2 => (c.clone(), p.clone()).prop_map(|(c, p)| Op::Create { c, p }),
        5 => (c.clone(), p.clone(), 0..3u64, 0..12u64, 1..5u64, any::<bool>(), any::<bool>())
            .prop_map(|(c, p, r, page, n, rw, ddw)| Op::Map { c, p, r, page, n, rw, ddw }),
        2 => (c.clone(), p.clone(), 0..14u64, 1..6u64, any::<bool>())
            .prop_map(|(c, p, page, n, ddw)| Op::Unmap { c, p, page, n, ddw }),
        1 => c.clone().prop_map(|c| Op::CloseContainer { c }),
        1 => Just(Op::HotAdd),
        1 => Just(Op::HotRemove),
        1 => (0..4u32).prop_map(|skip| Op::FailSetWindow { skip }),
        1 => (0..3usize).prop_map(|g| Op::Claim { g }),
        1 => any::<usize>().prop_map(|k| Op::Release { k }),
    ]
}

fn machine() -> Arc<PowerNv> {
    let cfg = PowerNvConfig {
        phbs: vec![
            PhbConfig::new(
                PhbModel::Phb4,
                vec![(1, PeScope::Bus(1)), (2, PeScope::Bus(2))],
            ),
            PhbConfig::new(PhbModel::Ioda1, vec![(1, PeScope::Bus(1))]),
        ],
        devices: vec![
            DeviceConfig::new("gpu0", 0, 1, 0, 64),
            DeviceConfig::new("nic0", 0, 2, 0, 32),
            DeviceConfig::new("old0", 1, 1, 0, 64),
        ],
        ..PowerNvConfig::seed()
    };
    Arc::new(PowerNv::booted(cfg).unwrap())
}

/// The reference model.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Model {
    /// Group -> the container it is in.
    in_container: [Option<usize>; 3],
    /// Group -> outstanding core claims of CLAIMER.
    claims: [u32; 3],
    /// Container -> (bus page -> (user address, writable)).
    mapped: [BTreeMap<u64, (u64, bool)>; 2],
    /// Container -> the process its mappings are in.
    mm: [Option<Mm>; 2],
    /// Container -> a driver is set (so group moves detach/attach windows): `Some(v2)`.
    driver: [Option<bool>; 2],
    /// Group -> its PE lost the user's window 0 to linux's `pnv_ioda2_take_ownership` when
    /// a device was hot-added (the user's DMA through it faults; no isolation is lost).
    dropped0: [bool; 3],
}

/// Everything a failed call must leave as it was.
#[derive(Debug, PartialEq, Eq)]
struct Observed {
    owners: Vec<Option<u64>>,
    windows: Vec<Vec<spapr_vfio::WindowView>>,
    locked: Vec<u64>,
}

struct World {
    m: Arc<PowerNv>,
    v: Vfio,
    containers: [ContainerFd; 2],
    groups: [Option<GroupFd>; 3],
    claims: Vec<(usize, DeviceClaim)>,
    /// Process -> region -> user address.
    regions: [[u64; 3]; 2],
    gpu1: bool,
}

impl World {
    fn observe(&self) -> Observed {
        let core = self.m.core();
        Observed {
            owners: LEAD
                .iter()
                .map(|n| {
                    let d = self.m.device(n).unwrap();
                    let g = core.device_group(d).unwrap().unwrap();
                    core.group_view(&g).owner.map(|o| o.0)
                })
                .collect(),
            windows: self.containers.iter().map(|c| self.v.windows(*c)).collect(),
            locked: PROCS.iter().map(|p| self.v.locked_pages(*p)).collect(),
        }
    }
    fn group_fd(&mut self, g: usize) -> GroupFd {
        if let Some(fd) = self.groups[g] {
            return fd;
        }
        let d = self.m.device(LEAD[g]).unwrap();
        let fd = self.v.open_group(d).unwrap();
        self.groups[g] = Some(fd);
        fd
    }
    fn devices_of(&self, g: usize) -> Vec<&'static str> {
        match g {
            0 if self.gpu1 => vec!["gpu0", "gpu1"],
            _ => vec![LEAD[g]],
        }
    }
}

/// The window base a MAP/UNMAP of `ddw` goes to.
fn base(ddw: bool) -> u64 {
    if ddw {
        DDW
    } else {
        0
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn the_machine_agrees_with_the_reference_model(
        strict in any::<bool>(),
        prelude in any::<bool>(),
        body in proptest::collection::vec(op(), 1..36),
    ) {
        // Half the runs start from a working v2 container (group 0, process 0's regions,
        // a DDW), so that mapping states are reached often.
        let mut ops = Vec::new();
        if prelude {
            ops.push(Op::SetContainer { g: 0, c: 0 });
            ops.push(Op::SetIommu { c: 0, v2: true, p: 0 });
            for r in 0..3 {
                ops.push(Op::Register { c: 0, p: 0, r });
            }
            ops.push(Op::Create { c: 0, p: 0 });
        }
        ops.extend(body);
        let profile = if strict { KernelProfile::Strict } else { KernelProfile::Linux };
        let m = machine();
        let v = Vfio::new(m.clone(), VfioConfig { profile, ..VfioConfig::default() });
        for name in LEAD {
            v.register_device(m.device(name).unwrap()).unwrap();
        }
        let mut regions = [[0u64; 3]; 2];
        for (i, p) in PROCS.iter().enumerate() {
            for slot in regions[i].iter_mut() {
                *slot = v.mmap(*p, REGION, 16).unwrap();
            }
        }
        let containers = [v.open_container(), v.open_container()];
        let mut w = World { m: m.clone(), v, containers, groups: [None; 3], claims: Vec::new(), regions, gpu1: false };
        let mut model = Model::default();
        let _ = m.core().take_trace();
        let mut quirk_pages = 0u64;
        let mut armed: Option<u32> = None;
        for op in ops {
            // An injected failure hits the next call that programs windows (attach, create,
            // a lazy default window), never a release (which would leave the kernel without
            // its window, a state the checker rightly reports).
            // A SET_CONTAINER the driver refuses after the claim (v1 holds one group; a
            // v2 container takes no IODA1 PE) programs nothing and then releases the
            // claim, whose restore of the kernel's window would take the failure: not armed.
            let refused_after_claim = |g: usize, c: usize| match model.driver[c] {
                Some(v2) => !v2 || g == 2,
                None => false,
            };
            if let Some(skip) = armed.take() {
                let programs = match op {
                    Op::SetContainer { g, c } => !refused_after_claim(g, c),
                    Op::SetIommu { .. } | Op::Create { .. } | Op::Map { .. } | Op::Unmap { .. } => true,
                    _ => false,
                };
                if programs {
                    w.m.env().fail_set_window(OpalError::Hardware, skip);
                }
            }
            let before = w.observe();
            let mut next = model.clone();
            let ok = match op.clone() {
                Op::SetContainer { g, c } => {
                    let fd = w.group_fd(g);
                    let ok = w.v.set_container(fd, w.containers[c]).is_ok();
                    if ok {
                        next.in_container[g] = Some(c);
                        next.dropped0[g] = false;
                    }
                    ok
                }
                Op::UnsetContainer { g } => {
                    let ok = w.groups[g].is_some_and(|fd| w.v.unset_container(fd).is_ok());
                    if ok {
                        let c = next.in_container[g].take().unwrap();
                        // `tce_iommu_release_ownership` clears every TCE of the container's
                        // (shared) windows when any group leaves.
                        next.mapped[c].clear();
                        if !next.in_container.contains(&Some(c)) {
                            // The last group's departure releases the driver.
                            next.mapped[c].clear();
                            next.mm[c] = None;
                            next.driver[c] = None;
                        }
                    }
                    ok
                }
                Op::SetIommu { c, v2, p } => {
                    let ok = w.v.ioctl_int(PROCS[p], w.containers[c], ioctl::SET_IOMMU, if v2 { 7 } else { 2 }).is_ok();
                    if ok { next.driver[c] = Some(v2); }
                    ok
                }
                Op::Enable { c, p } => {
                    let ok = w.v.ioctl_int(PROCS[p], w.containers[c], ioctl::ENABLE, 0).is_ok();
                    if ok { next.mm[c] = Some(PROCS[p]); }
                    ok
                }
                Op::Register { c, p, r } => {
                    let ua = w.regions[p][r as usize];
                    let mut arg = encode::register(0, ua, REGION);
                    let ok = w.v.ioctl(PROCS[p], w.containers[c], ioctl::REGISTER_MEMORY, &mut arg).is_ok();
                    if ok { next.mm[c] = Some(PROCS[p]); }
                    ok
                }
                Op::Create { c, p } => {
                    let mut arg = encode::create(16, 1 << 30, 1);
                    let ok = w.v.ioctl(PROCS[p], w.containers[c], ioctl::TCE_CREATE, &mut arg).is_ok();
                    if ok { next.mm[c] = Some(PROCS[p]); }
                    ok
                }
                Op::Map { c, p, r, page, n, rw, ddw } => {
                    let ua = w.regions[p][r as usize] + page * PAGE;
                    let iova = base(ddw) + page * PAGE;
                    let flags = if rw { 3 } else { 1 };
                    let mut arg = encode::map(flags, ua, iova, n * PAGE);
                    let r = w.v.ioctl(PROCS[p], w.containers[c], ioctl::MAP_DMA, &mut arg);
                    // A return of 1 (linux's unaligned quirk) cannot happen: all aligned.
                    let ok = r == Ok(0);
                    if ok {
                        for k in 0..n {
                            next.mapped[c].insert(iova + k * PAGE, (ua + k * PAGE, rw));
                        }
                    }
                    ok
                }
                Op::Unmap { c, p, page, n, ddw } => {
                    let iova = base(ddw) + page * PAGE;
                    let mut arg = encode::unmap(0, iova, n * PAGE);
                    let ok = w.v.ioctl(PROCS[p], w.containers[c], ioctl::UNMAP_DMA, &mut arg) == Ok(0);
                    if ok {
                        for k in 0..n {
                            next.mapped[c].remove(&(iova + k * PAGE));
                        }
                    }
                    ok
                }
                Op::CloseContainer { c } => {
                    let ok = w.v.close_container(w.containers[c]).is_ok();
                    if ok {
                        for g in 0..3 {
                            if next.in_container[g] == Some(c) {
                                next.in_container[g] = None;
                            }
                        }
                        next.mapped[c].clear();
                        next.mm[c] = None;
                        next.driver[c] = None;
                        w.containers[c] = w.v.open_container();
                    }
                    ok
                }
                Op::HotAdd => {
                    let ok = !w.gpu1 && w.m.add_device(&DeviceConfig::new("gpu1", 0, 1, 1, 64)).is_ok();
                    if ok {
                        w.gpu1 = true;
                        // Only a user's table in slot 0 can be dropped.
                        if let Some(c) = next.in_container[0] {
                            if !strict && w.v.windows(w.containers[c]).iter().any(|v| v.num == 0) {
                                next.dropped0[0] = true;
                            }
                        }
                    }
                    ok
                }
                Op::HotRemove => {
                    let ok = w.gpu1 && w.v.remove_device(w.m.device("gpu1").unwrap()).is_ok();
                    if ok { w.gpu1 = false; }
                    ok
                }
                Op::FailSetWindow { skip } => {
                    armed = Some(skip);
                    true
                }
                Op::Claim { g } => {
                    let d = w.m.device(LEAD[g]).unwrap();
                    match w.m.claim_device(d, CLAIMER) {
                        Ok(cl) => {
                            w.claims.push((g, cl));
                            next.claims[g] += 1;
                            true
                        }
                        Err(_) => false,
                    }
                }
                Op::Release { k } => {
                    if w.claims.is_empty() {
                        false
                    } else {
                        let (g, cl) = w.claims.remove(k % w.claims.len());
                        w.m.release(cl).unwrap();
                        next.claims[g] -= 1;
                        true
                    }
                }
            };
            w.m.env().cancel_set_window_failure();
            for e in w.m.core().take_trace() {
                if e.kind == EventKind::Quirk {
                    quirk_pages += leaked_in(&e.detail);
                }
            }
            let after = w.observe();
            if !ok && !matches!(op, Op::FailSetWindow { .. }) {
                // The one change the kernel makes before it can fail: MAP, UNMAP and
                // CREATE first create a pending default window (kernel.md 8), charged.
                let mut seen = after.windows.clone();
                let mut locked = after.locked.clone();
                if let Op::Map { c, .. } | Op::Unmap { c, .. } | Op::Create { c, .. } = op {
                    let new_default = |w: &spapr_vfio::WindowView| {
                        w.num == 0 && w.mapped == 0 && !before.windows[c].iter().any(|b| b.num == 0)
                    };
                    if seen[c].iter().any(new_default) {
                        seen[c].retain(|w| !new_default(w));
                        locked = before.locked.clone();
                    }
                }
                let after_modulo = Observed { owners: after.owners.clone(), windows: seen, locked };
                prop_assert_eq!(&before, &after_modulo, "{:?} failed but changed state", op);
            }
            model = next;
            // Ownership.
            for g in 0..3 {
                let owned = after.owners[g].is_some();
                let expect = model.in_container[g].is_some() || model.claims[g] > 0;
                prop_assert_eq!(owned, expect, "group {} after {:?}", g, op);
                if model.claims[g] > 0 {
                    prop_assert_eq!(after.owners[g], Some(CLAIMER.0));
                }
            }
            // Reachability.
            for g in 0..3 {
                for name in w.devices_of(g) {
                    let d = w.m.device(name).unwrap();
                    match model.in_container[g] {
                        Some(c) if model.mm[c].is_some() => {
                            let mm = model.mm[c].unwrap();
                            for (&iova, &(ua, rw)) in &model.mapped[c] {
                                let hpa = w.v.user_to_real(mm, ua).unwrap();
                                if model.dropped0[g] && iova < DDW {
                                    prop_assert!(w.m.device_translate(d, iova, Access::Read).is_err());
                                    continue;
                                }
                                prop_assert_eq!(
                                    w.m.device_translate(d, iova + 8, Access::Read),
                                    Ok(hpa + 8),
                                    "{} {:#x} after {:?}", name, iova, op
                                );
                                prop_assert_eq!(w.m.device_translate(d, iova, Access::Write).is_ok(), rw);
                                // The page after a mapping is mapped only if the model says so.
                                let next_page = iova + PAGE;
                                if !(model.mapped[c].contains_key(&next_page) || model.dropped0[g] && next_page < DDW) {
                                    prop_assert!(w.m.device_translate(d, next_page, Access::Read).is_err(),
                                        "{} reaches unmapped {:#x} after {:?}", name, next_page, op);
                                }
                            }
                        }
                        _ => {
                            // Not the user's: no user page may be reached.
                            for c in 0..2 {
                                let Some(mm) = model.mm[c] else { continue };
                                for (&iova, &(ua, _)) in &model.mapped[c] {
                                    let hpa = w.v.user_to_real(mm, ua).unwrap();
                                    let got = w.m.device_translate(d, iova, Access::Read);
                                    prop_assert!(got != Ok(hpa), "{} reaches a user page via {:#x}", name, iova);
                                }
                            }
                        }
                    }
                }
            }
            prop_assert!(w.v.audit().is_empty(), "{:?}", w.v.audit());
            let v = w.m.check();
            prop_assert!(v.is_empty(), "{:?} after {:?}", v, op);
        }
        // Everything closed: the kernel's again, and only the traced leaks stay charged.
        for (_, cl) in w.claims.drain(..) {
            w.m.release(cl).unwrap();
        }
        for c in w.containers {
            w.v.close_container(c).unwrap();
        }
        for e in w.m.core().take_trace() {
            if e.kind == EventKind::Quirk {
                quirk_pages += leaked_in(&e.detail);
            }
        }
        for p in PROCS {
            let left = w.v.locked_pages(p);
            prop_assert_eq!(left, w.v.leaked_pages(p));
            if strict {
                prop_assert_eq!(left, 0);
            }
        }
        let leaked: u64 = PROCS.iter().map(|p| w.v.leaked_pages(*p)).sum();
        prop_assert_eq!(leaked, quirk_pages, "the traced quirks account for every leaked page");
        for name in LEAD {
            let d = w.m.device(name).unwrap();
            let g = w.m.core().device_group(d).unwrap().unwrap();
            prop_assert_eq!(w.m.core().group_view(&g).owner, None);
        }
        prop_assert!(w.m.check().is_empty());
    }
}

/// The pages a `linux` quirk says it keeps charged: "... after N pages were charged; the
/// charge is not returned", "borrowed table released: N charged pages ..." and "... N
/// charged pages stay charged until the process exits".
fn leaked_in(detail: &str) -> u64 {
    let number_before = |marker: &str| -> Option<u64> {
        let at = detail.find(marker)?;
        detail[..at].split_whitespace().last()?.parse().ok()
    };
    if detail.contains("the charge is not returned") {
        return number_before(" pages were charged").unwrap_or(0);
    }
    if detail.contains("borrowed table released") || detail.contains("until the process exits") {
        return number_before(" charged pages").unwrap_or(0);
    }
    0
}
