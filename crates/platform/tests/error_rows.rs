//! Each error row of kernel.md section 5 that the platform owns, the boot-order failures
//! of 2.1, and the table-group ops' refusals.

use iommu_core::{AttachCtx, Core, DeviceId, DeviceInfo, DomainType, Errno, IommuOps, OwnerCookie};
use spapr_platform::{
    Design, DeviceConfig, Initcall, OpalError, PeScope, PhbConfig, PhbModel, PlatformError,
    PowerNv, PowerNvConfig, SgEntry, WindowError, BYPASS_BASE,
};
use spapr_tce::{Access, DmaDirection, Tce, TceIndex, TcePerm};
use std::sync::Arc;

const OWNER: OwnerCookie = OwnerCookie(7);

fn seed() -> PowerNv {
    PowerNv::booted(PowerNvConfig::seed()).unwrap()
}

#[test]
fn probe_device_refuses_non_pci_devices_with_eperm() {
    let m = seed();
    let d = m.core().add_device(DeviceInfo::platform("uart0", 0));
    assert_eq!(m.core().probe_device(d), Err(Errno::Eperm));
    let trace: Vec<String> = m
        .core()
        .take_trace()
        .iter()
        .map(|e| e.to_string())
        .collect();
    assert!(trace
        .iter()
        .any(|l| l.contains("uart0") && l.contains("probe_device: EPERM")));
}

#[test]
fn device_group_without_the_controller_callback_is_enoent() {
    let mut cfg = PowerNvConfig::seed();
    cfg.phbs[1].device_group_callback = false;
    let m = PowerNv::booted(cfg).unwrap();
    let gpu = m.device("gpu0").unwrap();
    assert!(m.core().device_group(gpu).unwrap().is_none());
    assert_eq!(m.core().probe_device(gpu), Err(Errno::Enoent));
}

#[test]
fn device_group_without_a_pe_is_enodev() {
    let m = seed();
    let r = m.add_device(&DeviceConfig::new("orphan", 0, 9, 0, 64));
    assert!(r.is_err());
    let d = m.device("orphan").unwrap();
    assert_eq!(m.core().probe_device(d), Err(Errno::Enodev));
}

#[test]
fn iommu_add_device_is_enoent_for_unknown_and_ebusy_for_grouped_devices() {
    let m = seed();
    assert_eq!(m.iommu_add_device(DeviceId(999)), Err(Errno::Enoent));
    let nic = m.device("nic0").unwrap();
    assert_eq!(m.iommu_add_device(nic), Err(Errno::Ebusy));
}

#[test]
fn a_second_device_on_a_bus_pe_joins_the_same_group() {
    let m = seed();
    let nic1 = m
        .add_device(&DeviceConfig::new("nic1", 0, 1, 1, 64))
        .unwrap();
    let nic0 = m.device("nic0").unwrap();
    let g0 = m.core().device_group(nic0).unwrap().unwrap();
    let g1 = m.core().device_group(nic1).unwrap().unwrap();
    assert!(g0.same(&g1));
    assert!(m.check().is_empty());
}

#[test]
fn blocking_attach_of_a_device_without_a_pe_group_is_enodev() {
    let m = seed();
    let ops = spapr_platform::SpaprTceIommu::new(Arc::downgrade(&m.phbs()[0]), Design::Fixed);
    let blocked = ops.blocked_domain().unwrap();
    assert_eq!(blocked.ty(), DomainType::Blocked);
    let core = Core::new();
    let stray = core.alloc_group(None, Box::new(()), None);
    let info = DeviceInfo::pci("x", 0, 1, 0);
    let ctx = AttachCtx {
        dev: DeviceId(0),
        info: &info,
        group: &stray,
        old: Some(DomainType::Platform),
    };
    assert_eq!(blocked.ops().attach_dev(&ctx), Err(Errno::Enodev));
}

#[test]
fn capabilities_are_cache_coherency_only() {
    let m = seed();
    let nic = m.device("nic0").unwrap();
    for cap in iommu_core::Cap::ALL {
        assert_eq!(
            m.core().device_capable(nic, cap),
            Ok(cap == iommu_core::Cap::CacheCoherency),
            "{cap:?}"
        );
    }
}

fn ioda1() -> PowerNv {
    PowerNv::booted(PowerNvConfig {
        ram_size: 4 << 30,
        host_page_shift: 16,
        design: Design::Fixed,
        bypass_disabled: false,
        phbs: vec![PhbConfig::new(
            PhbModel::Ioda1,
            vec![(1, PeScope::Bus(1)), (2, PeScope::Bus(2))],
        )],
        devices: vec![
            DeviceConfig::new("a", 0, 1, 0, 32),
            DeviceConfig::new("b0", 0, 2, 0, 32),
            DeviceConfig::new("b1", 0, 2, 1, 32),
        ],
    })
    .unwrap()
}

#[test]
fn borrowed_tables_refuse_ownership_while_a_kernel_mapping_is_live() {
    let m = ioda1();
    let a = m.device("a").unwrap();
    m.bind_driver(a, "e1000").unwrap();
    // The driver leaks a mapping it never tracked, then goes.
    let leaked = m
        .pci_dev(a)
        .unwrap()
        .map_page(0x2000_0000, 0x1000, DmaDirection::ToDevice, 0)
        .unwrap();
    m.unbind_driver(a).unwrap();
    let before = m
        .core()
        .group_view(&m.core().device_group(a).unwrap().unwrap());
    assert_eq!(m.claim_group(a, OWNER).err(), Some(Errno::Ebusy));
    let after = m
        .core()
        .group_view(&m.core().device_group(a).unwrap().unwrap());
    assert_eq!(before, after, "a failed claim leaves the group as it was");
    // Once the mapping is gone the claim works and the bitmap is saturated.
    m.pci_dev(a).unwrap().unmap_page(leaked, 0x1000).unwrap();
    let c = m.claim_group(a, OWNER).unwrap();
    let pe = m.pe_of(a).unwrap();
    assert!(pe
        .table(0)
        .as_ref()
        .unwrap()
        .allocator()
        .unwrap()
        .saturated());
    assert!(m.check().is_empty(), "{:?}", m.check());
    m.release(c).unwrap();
    assert!(!pe.table(0).as_ref().unwrap().allocator().unwrap().in_use());
}

#[test]
fn claiming_a_multi_device_borrowing_group_fails_with_ebusy() {
    // kernel.md 2.5's surprise: the second device's attach finds the bitmap saturated.
    let m = ioda1();
    let b0 = m.device("b0").unwrap();
    assert_eq!(m.claim_group(b0, OWNER).err(), Some(Errno::Ebusy));
    let g = m
        .core()
        .group_view(&m.core().device_group(b0).unwrap().unwrap());
    assert_eq!(g.domain, Some(DomainType::Platform));
    assert_eq!(g.owner, None);
    let pe = m.pe_of(b0).unwrap();
    assert!(!pe
        .table(0)
        .as_ref()
        .unwrap()
        .allocator()
        .unwrap()
        .saturated());
}

#[test]
fn borrowing_ops_lend_window_0_only_with_matching_parameters() {
    let m = ioda1();
    let a = m.device("a").unwrap();
    let pe = m.pe_of(a).unwrap();
    let c = m.claim_group(a, OWNER).unwrap();
    let tok = pe.window_token(&c).unwrap();
    assert_eq!(
        pe.create_table(1, 12, 1 << 31, 1, &tok).err(),
        Some(Errno::Eperm)
    );
    assert_eq!(
        pe.create_table(0, 16, 1 << 31, 1, &tok).err(),
        Some(Errno::Einval)
    );
    assert_eq!(pe.get_table_size(12, 1 << 31, 2), !0);
    assert_eq!(pe.get_table_size(12, 1 << 31, 1), (1 << 31) >> 9);
    let t = pe.create_table(0, 12, 1 << 31, 1, &tok).unwrap();
    assert!(Arc::ptr_eq(t.shared(), pe.table(0).as_ref().unwrap()));
    assert_eq!(pe.max_dynamic_windows(), 0);
}

/// A borrowed table is lent for as long as the claim lasts: the user's handle writes it
/// while the claim holds, and once the claim is released (the kernel has its window 0
/// back) every write through a handle kept past it is refused with `Revoked` and changes
/// nothing, so neither the kernel's DMA nor a device ever meets a user's entry there.
#[test]
fn a_borrowed_table_kept_past_its_claim_writes_nothing() {
    let m = ioda1();
    let a = m.device("a").unwrap();
    let pe = m.pe_of(a).unwrap();
    let c = m.claim_group(a, OWNER).unwrap();
    let t = pe
        .create_table(0, 12, 1 << 31, 1, &pe.window_token(&c).unwrap())
        .unwrap();
    let first = t.geometry().first_index();
    let user = Tce::new(0x4000_0000, TcePerm::READ_WRITE);
    t.set(first, user).unwrap();
    assert_eq!(t.get(first), Ok(user), "a live claim writes");
    t.clear(first, 1).unwrap();
    m.release(c).unwrap();
    let kept = t.clone();
    let kernel = pe.table(0).unwrap();
    let (kills, mapped) = (pe.range_kills(), kernel.count_mapped());
    for (i, r) in [
        kept.zero_exclusive(first, 4),
        kept.clear(first, 4).map(drop),
        kept.clear_exclusive_with(first, 4, |_, _| {}).map(drop),
        kept.exchange_no_kill(first, user).map(drop),
        kept.set(first, user).map(drop),
        kept.put_linear(first, 4, 0x4000_0000, TcePerm::READ_WRITE),
    ]
    .into_iter()
    .enumerate()
    {
        assert_eq!(r, Err(spapr_tce::TceError::Revoked), "write {i}");
    }
    let uas: spapr_tce::TceTable<spapr_tce::Ua> =
        spapr_tce::TceTable::new(*kept.geometry(), spapr_tce::TableOptions::powernv()).unwrap();
    assert_eq!(
        kept.zero_exclusive_with_uas(&uas, first, 4, |_, _| {}),
        Err(spapr_tce::TceError::Revoked)
    );
    kept.kill(first, 4);
    assert_eq!(kernel.get(first), Ok(Tce::EMPTY));
    assert_eq!(kernel.count_mapped(), mapped, "no entry written");
    assert_eq!(
        pe.range_kills(),
        kills,
        "no kill counted for writes refused"
    );
    assert_eq!(
        m.device_translate(a, kernel.start(), Access::Read).ok(),
        None,
        "the device meets no user entry"
    );
    assert!(m.check().is_empty(), "{:?}", m.check());
}

#[test]
fn ioda2_create_table_checks_page_size_geometry_and_slot() {
    let m = seed();
    let gpu = m.device("gpu0").unwrap();
    let pe = m.pe_of(gpu).unwrap();
    let c = m.claim_group(gpu, OWNER).unwrap();
    let tok = pe.window_token(&c).unwrap();
    // PHB4: 4K, 64K, 2M, 1G. 16M is PHB3's.
    assert_eq!(
        pe.create_table(1, 24, 1 << 40, 2, &tok).err(),
        Some(Errno::Einval)
    );
    assert_eq!(
        pe.create_table(2, 16, 1 << 30, 1, &tok).err(),
        Some(Errno::Einval)
    );
    assert_eq!(
        pe.create_table(1, 16, 3 << 30, 1, &tok).err(),
        Some(Errno::Einval)
    );
    assert_eq!(
        pe.create_table(1, 16, 1 << 40, 0, &tok).err(),
        Some(Errno::Einval)
    );
    // 64K host pages: 3 levels of 64K IOMMU pages break the 55-bit rule.
    // get_table_size does not check that rule (create_table does, after VFIO charged it).
    assert_eq!(
        pe.create_table(1, 16, 1 << 40, 3, &tok).err(),
        Some(Errno::Einval)
    );
    assert_ne!(pe.get_table_size(16, 1 << 40, 3), 0);
    assert_eq!(pe.get_table_size(16, 3 << 30, 1), 0);
    let t = pe.create_table(1, 16, 1 << 40, 2, &tok).unwrap();
    assert_eq!(t.start(), BYPASS_BASE);
    assert_eq!(pe.max_dynamic_windows(), 2);
}

/// A borrowing PE's kernel table, lent to a user, is that PE's window only: an IODA2 PE
/// of the same owner refuses it (`KernelTable`, -EINVAL through VFIO) and keeps its
/// window 0 unset, so the user's devices there never reach what the kernel maps into the
/// table once the lend ends (found by review: the window base matched, 0 on both).
#[test]
fn an_ioda2_pe_refuses_a_kernel_table_lent_by_another_pe() {
    let m = PowerNv::booted(PowerNvConfig {
        phbs: vec![
            PhbConfig::new(PhbModel::Ioda1, vec![(1, PeScope::Bus(1))]),
            PhbConfig::new(PhbModel::Phb4, vec![(1, PeScope::Bus(1))]),
        ],
        devices: vec![
            DeviceConfig::new("old", 0, 1, 0, 32),
            DeviceConfig::new("new", 1, 1, 0, 64),
        ],
        ..PowerNvConfig::seed()
    })
    .unwrap();
    let (old, new) = (m.device("old").unwrap(), m.device("new").unwrap());
    let (lender, pe) = (m.pe_of(old).unwrap(), m.pe_of(new).unwrap());
    let c_old = m.claim_group(old, OWNER).unwrap();
    let c_new = m.claim_group(new, OWNER).unwrap();
    let lent = lender
        .create_table(
            0,
            12,
            lender.tce32_size,
            1,
            &lender.window_token(&c_old).unwrap(),
        )
        .unwrap();
    assert_eq!(
        lent.start(),
        pe.window_base(0),
        "the base alone does not tell them apart"
    );
    assert_eq!(
        pe.set_window(0, &lent, &pe.window_token(&c_new).unwrap()),
        Err(WindowError::KernelTable)
    );
    assert!(pe.table(0).is_none(), "window 0 stays unset");
    assert_eq!(lent.linked_pes(), 1, "linked to its own PE only");
    assert!(m.check().is_empty(), "{:?}", m.check());
    m.release(c_old).unwrap();
    assert!(m.check().is_empty(), "{:?}", m.check());
    drop(c_new);
}

#[test]
fn set_window_refuses_a_table_for_the_other_slot_with_opal_parameter() {
    let m = seed();
    let gpu = m.device("gpu0").unwrap();
    let pe = m.pe_of(gpu).unwrap();
    let c = m.claim_group(gpu, OWNER).unwrap();
    let t = pe
        .create_table(1, 16, 1 << 30, 1, &pe.window_token(&c).unwrap())
        .unwrap();
    assert_eq!(
        pe.set_window(0, &t, &pe.window_token(&c).unwrap()),
        Err(WindowError::Opal(OpalError::Parameter))
    );
    assert_eq!(OpalError::Parameter.as_kernel_errno(), Errno::Eperm);
    assert_eq!(OpalError::Hardware.as_kernel_errno(), Errno::Enxio);
}

#[test]
fn a_failed_set_window_at_release_leaves_window_0_empty_but_bypass_on() {
    let m = seed();
    let gpu = m.device("gpu0").unwrap();
    let c = m.claim_group(gpu, OWNER).unwrap();
    m.env().fail_next_set_window(OpalError::Hardware);
    assert_eq!(m.release(c), Err(Errno::Enxio));
    let pe = m.pe_of(gpu).unwrap();
    assert!(pe.table(0).is_none());
    assert!(pe.bypass_enabled());
    assert!(m
        .check()
        .iter()
        .any(|v| v.rule == iommu_core::Rule::KernelDmaRestored));
}

#[test]
fn user_windows_reach_only_what_the_user_mapped() {
    let m = seed();
    let gpu = m.device("gpu0").unwrap();
    let c = m.claim_group(gpu, OWNER).unwrap();
    let pe = m.pe_of(gpu).unwrap();
    let t = pe
        .create_table(1, 16, 1 << 30, 1, &pe.window_token(&c).unwrap())
        .unwrap();
    pe.set_window(1, &t, &pe.window_token(&c).unwrap()).unwrap();
    let first = t.geometry().first_index();
    t.set(TceIndex(first.0 + 2), Tce::new(0x4000_0000, TcePerm::READ))
        .unwrap();
    assert_eq!(
        m.device_translate(gpu, BYPASS_BASE + 0x2_0010, Access::Read),
        Ok(0x4000_0010)
    );
    assert!(m
        .device_translate(gpu, BYPASS_BASE + 0x2_0010, Access::Write)
        .is_err());
    assert!(m.device_translate(gpu, BYPASS_BASE, Access::Read).is_err());
    assert!(
        m.check().is_empty(),
        "user tables are not kernel translations"
    );
    pe.unset_window(1, &pe.window_token(&c).unwrap()).unwrap();
    m.release(c).unwrap();
}

/// Windows can only be programmed with a token of a live claim of the PE's own group: no
/// claim, another PE's claim, or a claim whose ownership ended get nothing.
#[test]
fn a_window_token_comes_only_from_a_live_claim_of_the_pes_group() {
    let m = seed();
    let gpu = m.device("gpu0").unwrap();
    let nvme = m.device("nvme0").unwrap();
    let pe = m.pe_of(gpu).unwrap();
    let other = m.claim_group(nvme, OwnerCookie(0x77)).unwrap();
    assert_eq!(
        pe.window_token(&other).err(),
        Some(Errno::Eperm),
        "another PE's claim"
    );
    // A device claim whose ownership has ended (a group release by the same owner).
    let g = m.claim_group(gpu, OWNER).unwrap();
    let d = m.claim_device(gpu, OWNER).unwrap();
    let t = pe
        .create_table(1, 16, 1 << 30, 1, &pe.window_token(&d).unwrap())
        .unwrap();
    let token = pe.window_token(&d).unwrap();
    m.release(g).unwrap();
    assert_eq!(
        pe.set_window(1, &t, &token),
        Err(WindowError::NotOwner),
        "the token's claim is stale"
    );
    assert_eq!(pe.window_token(&d).err(), Some(Errno::Eperm));
    assert!(pe.table(1).is_none());
    drop(d);
    drop(other);
}

#[test]
fn boot_in_the_right_order_groups_every_device() {
    let m = PowerNv::new(PowerNvConfig::seed()).unwrap();
    let r = m.boot(&Initcall::ORDER);
    assert!(r.ungrouped.is_empty(), "{r:?}");
    // The bus notifier's probe failed with -ENODEV before the PE had a group, then the
    // explicit probe succeeded.
    let trace: Vec<String> = m
        .core()
        .take_trace()
        .iter()
        .map(|e| e.to_string())
        .collect();
    assert!(trace
        .iter()
        .any(|l| l.contains("nic0") && l.contains("device_group: ENODEV")));
    assert!(trace
        .iter()
        .any(|l| l.contains("nic0") && l.contains("joined")));
}

#[test]
fn registering_the_iommus_before_the_pci_bus_leaves_devices_without_groups() {
    let m = PowerNv::new(PowerNvConfig::seed()).unwrap();
    let r = m.boot(&[
        Initcall::SetupPhbIommus,
        Initcall::PciDriverInit,
        Initcall::IommuSubsysInit,
        Initcall::PcibiosInit,
    ]);
    assert!(r.lines[0].contains("iommu_device_register refused"));
    assert_eq!(r.ungrouped.len(), 3);
}

#[test]
fn pcibios_init_before_iommu_subsys_init_leaves_devices_without_groups() {
    let m = PowerNv::new(PowerNvConfig::seed()).unwrap();
    let r = m.boot(&[
        Initcall::PciDriverInit,
        Initcall::SetupPhbIommus,
        Initcall::PcibiosInit,
        Initcall::IommuSubsysInit,
    ]);
    assert_eq!(r.ungrouped, vec!["nic0", "nvme0", "gpu0"]);
    assert!(r.lines.iter().any(|l| l.contains("iommu core not ready")));
}

#[test]
fn bad_machine_descriptions_are_refused_with_a_reason() {
    let mut c = PowerNvConfig::seed();
    c.host_page_shift = 13;
    assert_eq!(
        PowerNv::new(c).err(),
        Some(PlatformError::HostPageShift(13))
    );
    let mut c = PowerNvConfig::seed();
    c.devices[1].name = "nic0".into();
    let e = PowerNv::new(c).err().unwrap();
    assert_eq!(e, PlatformError::NameTwice("nic0".into()));
    assert_eq!(e.errno(), Errno::Eexist);
    let mut c = PowerNvConfig::seed();
    c.devices[0].phb = 5;
    assert_eq!(
        PowerNv::new(c).err(),
        Some(PlatformError::NoPhb {
            name: "nic0".into(),
            phb: 5
        })
    );
    let mut c = PowerNvConfig::seed();
    c.devices[0].dma_mask_bits = 16;
    let e = PowerNv::new(c).err().unwrap();
    assert_eq!(
        e,
        PlatformError::DmaMask {
            name: "nic0".into(),
            bits: 16
        }
    );
    assert_eq!(
        e.to_string(),
        "device \"nic0\": dma_mask_bits 16 not in 32..=64"
    );
    assert_eq!(e.errno(), Errno::Einval);
}

#[test]
fn the_dma_api_refuses_bad_arguments_and_full_windows() {
    let m = seed();
    let nic = m.device("nic0").unwrap();
    m.bind_driver(nic, "ixgbe").unwrap();
    let d = m.pci_dev(nic).unwrap();
    use spapr_platform::DmaMapError::*;
    assert_eq!(
        d.map_page(0x1000, 0, DmaDirection::ToDevice, 0),
        Err(Invalid)
    );
    assert_eq!(d.map_page(0x1000, 1, DmaDirection::None, 0), Err(Invalid));
    assert_eq!(d.unmap_page(1 << 40, 0x1000), Err(Invalid));
    // Scatter-gather: the bus addresses are written into the list, consecutive.
    let mut sg = [
        SgEntry::new(0x10_0000, 0x1_0000),
        SgEntry::new(0x30_0000, 0x1_0000),
    ];
    d.map_sg(&mut sg, DmaDirection::FromDevice, 0).unwrap();
    let first = sg[0].dma_address().unwrap();
    assert_eq!(sg[1].dma_address(), Some(first + 0x1_0000));
    // A mapped list cannot be mapped again (its mappings would leak): refused, unchanged.
    assert_eq!(d.map_sg(&mut sg, DmaDirection::FromDevice, 0), Err(Invalid));
    assert_eq!(sg[0].dma_address(), Some(first));
    d.unmap_sg(&mut sg, 0).unwrap();
    assert!(sg.iter().all(|e| e.dma_address().is_none()));
    // An unmapped list cannot be unmapped.
    assert_eq!(d.unmap_sg(&mut sg, 0), Err(Invalid));
    // The unmap freed the entries.
    let window0 = m.pe_of(nic).unwrap().table(0).unwrap();
    assert_eq!(window0.allocator().unwrap().allocated(), 0);
    // An empty list, an empty entry and a wrapping entry map nothing.
    assert_eq!(d.map_sg(&mut [], DmaDirection::ToDevice, 0), Err(Invalid));
    let mut bad = [SgEntry::new(0x10_0000, 0x1000), SgEntry::new(0x20_0000, 0)];
    assert_eq!(d.map_sg(&mut bad, DmaDirection::ToDevice, 0), Err(Invalid));
    let mut bad = [SgEntry::new(0x10_0000, 0x1000), SgEntry::new(u64::MAX, 2)];
    assert_eq!(d.map_sg(&mut bad, DmaDirection::ToDevice, 0), Err(Invalid));
    assert!(bad.iter().all(|e| e.dma_address().is_none()));
    // Exhaust the window with 256 MiB maps: the 32-bit hole is never used, and this
    // 32-bit device gets nothing above its mask: only [64K, 2G) is left for it, seven maps.
    let mut got = Vec::new();
    while let Ok(a) = d.map_page(0, 1 << 28, DmaDirection::ToDevice, 0) {
        assert!(!(0x8000_0000..0x1_0000_0000).contains(&a), "{a:#x}");
        assert!(a + (1 << 28) <= 1 << 32, "{a:#x} beyond the 32-bit mask");
        got.push(a);
    }
    assert_eq!(
        d.map_page(0, 1 << 28, DmaDirection::ToDevice, 0),
        Err(NoSpace)
    );
    assert_eq!(NoSpace.errno(), Errno::Enomem);
    assert_eq!(got.len(), 7);
}

#[test]
fn the_pre_patch_iommu_group_add_device_path_leaves_devices_unusable_for_vfio() {
    let m = PowerNv::new(PowerNvConfig::seed()).unwrap();
    let r = m.boot(&[
        Initcall::PciDriverInit,
        Initcall::SetupPhbIommus,
        Initcall::IommuSubsysInit,
        Initcall::PcibiosInitLegacy,
    ]);
    assert!(r.ungrouped.is_empty(), "the devices have groups: {r:?}");
    let gpu = m.device("gpu0").unwrap();
    assert!(m.core().device_group(gpu).unwrap().is_some());
    // ... but no IOMMU instance: no capability (VFIO refuses it), no ownership change.
    assert_eq!(
        m.core()
            .device_capable(gpu, iommu_core::Cap::CacheCoherency),
        Ok(false)
    );
    assert_eq!(m.claim_group(gpu, OWNER).err(), Some(Errno::Enodev));
}

/// The checker judges provenance (issue 13), and each rule fires on a planted fault.
mod provenance {
    use super::*;
    use iommu_core::{Evidence, Programmer, Rule};

    /// `Pe::reaches` sees what a device access would (the cached entry if one is cached)
    /// but never fills the cache: a probe, a change without a kill and a probe again
    /// show the new entry; after a real translation, the cached one is what it reaches.
    #[test]
    fn reaches_reads_through_the_tce_cache_without_filling_it() {
        let m = seed();
        let gpu = m.device("gpu0").unwrap();
        let c = m.claim_group(gpu, OWNER).unwrap();
        let pe = m.pe_of(gpu).unwrap();
        let t = pe
            .create_table(1, 16, 1 << 30, 1, &pe.window_token(&c).unwrap())
            .unwrap();
        pe.set_window(1, &t, &pe.window_token(&c).unwrap()).unwrap();
        let idx = TceIndex(t.geometry().first_index().0);
        let at = |pe: &spapr_platform::Pe| pe.reaches(BYPASS_BASE + 8, Access::Read).map(|h| h.0);
        t.set(idx, Tce::new(0x4000_0000, TcePerm::READ)).unwrap();
        assert_eq!(at(&pe), Ok(0x4000_0008));
        t.exchange_no_kill(idx, Tce::new(0x5000_0000, TcePerm::READ))
            .unwrap();
        assert_eq!(at(&pe), Ok(0x5000_0008), "the probe left nothing cached");
        assert!(m.check().is_empty(), "{:?}", m.check());
        assert_eq!(
            m.device_translate(gpu, BYPASS_BASE + 8, Access::Read),
            Ok(0x5000_0008)
        );
        t.exchange_no_kill(idx, Tce::new(0x6000_0000, TcePerm::READ))
            .unwrap();
        assert_eq!(
            at(&pe),
            Ok(0x5000_0008),
            "a device is served the cached entry"
        );
        assert!(
            pe.reaches(BYPASS_BASE + 8, Access::Write).is_err(),
            "read-only"
        );
    }

    /// A TCE changed without a kill after a device used it: the PHB's TCE cache goes on
    /// serving the old entry, and `TceCacheCoherent` names it.
    #[test]
    fn a_tce_changed_without_a_kill_is_served_stale_and_reported() {
        let m = seed();
        let gpu = m.device("gpu0").unwrap();
        let c = m.claim_group(gpu, OWNER).unwrap();
        let pe = m.pe_of(gpu).unwrap();
        let t = pe
            .create_table(1, 16, 1 << 30, 1, &pe.window_token(&c).unwrap())
            .unwrap();
        pe.set_window(1, &t, &pe.window_token(&c).unwrap()).unwrap();
        let idx = TceIndex(t.geometry().first_index().0);
        t.set(idx, Tce::new(0x4000_0000, TcePerm::READ_WRITE))
            .unwrap();
        assert_eq!(
            m.device_translate(gpu, BYPASS_BASE + 8, Access::Write),
            Ok(0x4000_0008),
            "the cache now holds the entry"
        );
        assert!(m.check().is_empty());
        // Cleared behind the hardware's back: no kill.
        t.exchange_no_kill(idx, Tce::EMPTY).unwrap();
        assert_eq!(
            m.device_translate(gpu, BYPASS_BASE + 8, Access::Write),
            Ok(0x4000_0008),
            "served from the stale cache"
        );
        let v = m.check();
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].rule, Rule::TceCacheCoherent);
        assert_eq!(
            v[0].evidence,
            Evidence::StaleCache {
                window: 1,
                index: idx.0,
                cached: 0x4000_0003,
                current: 0
            }
        );
        // The kill the change needed: the cache empties, the access faults.
        t.kill(idx, 1);
        assert!(m
            .device_translate(gpu, BYPASS_BASE + 8, Access::Write)
            .is_err());
        assert!(m.check().is_empty());
        pe.unset_window(1, &pe.window_token(&c).unwrap()).unwrap();
    }

    /// A user's window left programmed when its ownership ends: on the kernel's PE it is
    /// a user mapping after release; under the next owner, a window that is not theirs.
    #[test]
    fn a_window_left_by_a_previous_owner_is_named_with_who_programmed_it() {
        let m = seed();
        let gpu = m.device("gpu0").unwrap();
        let pe = m.pe_of(gpu).unwrap();
        let a = m.claim_group(gpu, OwnerCookie(0xA)).unwrap();
        let epoch = a.epoch();
        let t = pe
            .create_table(1, 16, 1 << 30, 1, &pe.window_token(&a).unwrap())
            .unwrap();
        pe.set_window(1, &t, &pe.window_token(&a).unwrap()).unwrap();
        // A forgets to unset it before giving the group back.
        m.release(a).unwrap();
        let v = m.check();
        let by_a = Programmer::User {
            owner: OwnerCookie(0xA),
            epoch,
        };
        assert!(
            v.iter().any(|v| v.rule == Rule::NoUserMappingAfterRelease
                && matches!(v.evidence, Evidence::Window { window: 1, by, kernel_table: false, .. } if by == by_a)),
            "{v:?}"
        );
        let b = m.claim_group(gpu, OwnerCookie(0xB)).unwrap();
        let v = m.check();
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].rule, Rule::WindowsBelongToOwner);
        assert!(matches!(v[0].evidence, Evidence::Window { window: 1, by, .. } if by == by_a));
        pe.unset_window(1, &pe.window_token(&b).unwrap()).unwrap();
        assert!(m.check().is_empty());
    }
}

/// A targeted injection strikes the nth matching call only: calls on other PEs and at
/// other points do not count, the failure is traced, and later calls succeed again.
#[test]
fn an_injected_failure_strikes_the_nth_call_on_its_pe_only() {
    use spapr_platform::FaultPoint;
    let m = seed();
    let nvme = m.device("nvme0").unwrap();
    let gpu = m.device("gpu0").unwrap();
    let (pe_nvme, pe_gpu) = (m.pe_of(nvme).unwrap(), m.pe_of(gpu).unwrap());
    assert_ne!(pe_nvme.id(), pe_gpu.id());
    let (c1, c2) = (
        m.claim_group(nvme, OWNER).unwrap(),
        m.claim_group(gpu, OwnerCookie(8)).unwrap(),
    );
    let make = |pe: &spapr_platform::Pe, c| {
        pe.create_table(1, 16, 1 << 30, 1, &pe.window_token(c).unwrap())
            .map(drop)
    };
    m.env().inject(
        FaultPoint::CreateTable,
        Some(pe_gpu.id()),
        1,
        OpalError::Hardware,
    );
    assert!(m.env().armed(FaultPoint::CreateTable, pe_gpu.id()));
    assert!(!m.env().armed(FaultPoint::CreateTable, pe_nvme.id()));
    assert!(!m.env().armed(FaultPoint::SetWindow, pe_gpu.id()));
    let _ = m.core().take_trace();
    assert_eq!(make(&pe_nvme, &c1), Ok(()), "another PE does not count");
    assert_eq!(make(&pe_gpu, &c2), Ok(()), "the first call on the PE");
    assert_eq!(make(&pe_gpu, &c2), Err(Errno::Enomem), "the second strikes");
    assert_eq!(make(&pe_gpu, &c2), Ok(()), "and only once");
    assert_eq!(m.env().pending_injections(), 0);
    m.flush();
    let trace: Vec<String> = m
        .core()
        .take_trace()
        .iter()
        .map(|e| e.to_string())
        .collect();
    let hits: Vec<&String> = trace
        .iter()
        .filter(|l| l.contains("injected failure"))
        .collect();
    assert_eq!(hits.len(), 1, "{trace:?}");
    assert!(hits[0].contains("create_table on PHB 1 PE 1"), "{hits:?}");
    for p in FaultPoint::ALL {
        assert_eq!(FaultPoint::from_name(p.name()), Some(p));
    }
}
