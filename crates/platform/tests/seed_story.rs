//! The seed story (issue 5): a two-PHB POWER9 box, a NIC and an NVMe drive with kernel
//! drivers and live DMA; the NVMe's group cannot be claimed while its driver is bound; once
//! claimed it reaches no kernel buffer; released, kernel DMA works again. Then the same
//! story under the two historical designs, where the checker catches each bug.

use iommu_core::{DomainType, Errno, Evidence, OwnerCookie, Programmer, Rule};
use spapr_platform::{Design, DmaFault, PowerNv, PowerNvConfig, Tve1, BYPASS_BASE};
use spapr_tce::{Access, DmaDirection};

const VFIO: OwnerCookie = OwnerCookie(0xf10);

fn boot(design: Design) -> PowerNv {
    let mut cfg = PowerNvConfig::seed();
    cfg.design = design;
    PowerNv::booted(cfg).unwrap()
}

fn live_dma(m: &PowerNv, name: &str, driver: &str) -> spapr_platform::machine::DriverBuffer {
    let d = m.device(name).unwrap();
    m.bind_driver(d, driver).unwrap();
    let b = m
        .driver_dma_alloc(d, 0x3000, DmaDirection::Bidirectional)
        .unwrap();
    m.device_write(d, b.dma + 0x10, b"packet").unwrap();
    let mut got = [0u8; 6];
    m.ram().read(b.phys + 0x10, &mut got).unwrap();
    assert_eq!(&got, b"packet", "{name}'s DMA lands in its kernel buffer");
    b
}

#[test]
fn boot_gives_every_device_a_group_in_the_platform_domain() {
    let m = boot(Design::Fixed);
    let groups: Vec<String> = m
        .core()
        .groups()
        .iter()
        .map(|g| g.name().to_string())
        .collect();
    assert_eq!(groups, vec!["domain0-pe1", "domain0-pe2", "domain1-pe1"]);
    for g in m.core().groups() {
        let v = m.core().group_view(&g);
        assert_eq!(v.domain, Some(DomainType::Platform));
        assert_eq!(v.devices.len(), 1);
    }
    assert_eq!(
        m.core().instances(),
        vec!["iommu-phb0000".to_string(), "iommu-phb0001".to_string()]
    );
    let snap = m.snapshot();
    let pe = &snap[0].pes[0];
    assert_eq!(pe.windows.len(), 1);
    assert_eq!(pe.windows[0].start, 0);
    assert_eq!(pe.windows[0].tve, 2, "TVE = (pe << 1) + 0");
    assert_eq!(pe.windows[0].page_size, 1 << 16);
    assert_eq!(pe.windows[0].size, 8 << 30);
    assert_eq!(pe.windows[0].levels, 2);
    assert_eq!(pe.tve1, Tve1::Bypass { size: 8 << 30 });
    assert!(m.check().is_empty());
}

#[test]
fn the_seed_story_with_the_fixed_design() {
    let m = boot(Design::Fixed);
    let nic = m.device("nic0").unwrap();
    let nvme = m.device("nvme0").unwrap();
    let nic_buf = live_dma(&m, "nic0", "ixgbe");
    let nvme_buf = live_dma(&m, "nvme0", "nvme");
    // The NIC has a 32-bit mask: window 0. The NVMe is 64-bit: bypass.
    assert!(nic_buf.dma < 1 << 32 && nic_buf.dma >= 1 << 16);
    assert_eq!(nvme_buf.dma, nvme_buf.phys + BYPASS_BASE);

    // Claiming the NVMe's group with its driver bound: -EPERM, nothing changes.
    assert_eq!(m.claim_group(nvme, VFIO).err(), Some(Errno::Eperm));
    m.device_read(nvme, nvme_buf.dma, 8).unwrap();

    // Unbind, then claim.
    m.unbind_driver(nvme).unwrap();
    let claim = m.claim_group(nvme, VFIO).unwrap();
    let g = m.core().group_view(claim.group());
    assert_eq!(g.domain, Some(DomainType::Blocked));
    assert_eq!(g.owner, Some(VFIO));
    // No translation left at all: the old buffer, any bypass address, window 0.
    for iova in [
        nvme_buf.dma,
        BYPASS_BASE,
        BYPASS_BASE + nic_buf.phys,
        nic_buf.dma,
        0x10000,
    ] {
        let f = m.device_read(nvme, iova, 8).unwrap_err();
        assert!(matches!(f, DmaFault::NoWindow { .. }), "{iova:#x}: {f}");
    }
    assert!(m.device_write(nvme, nvme_buf.dma, b"x").is_err());
    assert!(m.check().is_empty(), "{:?}", m.check());
    // A kernel driver cannot bind meanwhile.
    assert_eq!(m.bind_driver(nvme, "nvme"), Err(Errno::Ebusy));
    // The NIC, on another PE, is untouched.
    assert_eq!(
        m.device_read(nic, nic_buf.dma + 0x10, 6).unwrap(),
        b"packet"
    );

    // Release: PLATFORM again, default window and bypass restored, kernel DMA works.
    m.release(claim).unwrap();
    let pe = m.pe_of(nvme).unwrap();
    assert!(pe.table(0).is_some() && pe.bypass_enabled());
    let again = live_dma(&m, "nvme0", "nvme");
    assert_eq!(again.dma, again.phys + BYPASS_BASE);
    assert!(m.check().is_empty(), "{:?}", m.check());
    let trace: Vec<String> = m
        .core()
        .take_trace()
        .iter()
        .map(|e| e.to_string())
        .collect();
    assert!(trace
        .iter()
        .any(|l| l.contains("take_ownership: bypass off")));
    assert!(trace.iter().any(|l| l.contains("default config")));
}

#[test]
fn the_v1_patch_leaves_kernel_translations_at_hand_over_and_the_checker_says_so() {
    let m = boot(Design::V1Patch);
    let nvme = m.device("nvme0").unwrap();
    let buf = live_dma(&m, "nvme0", "nvme");
    m.unbind_driver(nvme).unwrap();
    let claim = m.claim_group(nvme, VFIO).unwrap();
    // The user's device still reaches all of RAM through bypass.
    assert!(m.device_read(nvme, buf.dma, 8).is_ok());
    let v = m.check();
    let user = |e: &dyn Fn(&Evidence) -> bool| {
        v.iter()
            .any(|v| v.rule == Rule::NoKernelTranslationOnUserGroup && e(&v.evidence))
    };
    assert!(
        user(&|e| matches!(
            e,
            Evidence::Bypass {
                start: BYPASS_BASE,
                ..
            }
        )),
        "{v:?}"
    );
    assert!(user(&|e| matches!(
        e,
        Evidence::Window {
            window: 0,
            kernel_table: true,
            by: Programmer::Kernel,
            ..
        }
    )));
    // And by translation: the user's device reaches RAM through the bypass.
    assert!(user(&|e| matches!(
        e,
        Evidence::Reach {
            iova: BYPASS_BASE,
            hpa: 0
        }
    )));
    drop(claim);
}

#[test]
fn the_v6_7_design_never_gives_the_windows_back_and_the_checker_says_so() {
    let m = boot(Design::V6_7);
    let nvme = m.device("nvme0").unwrap();
    live_dma(&m, "nvme0", "nvme");
    m.unbind_driver(nvme).unwrap();
    let claim = m.claim_group(nvme, VFIO).unwrap();
    assert!(m.check().is_empty(), "hand-over itself is right in v6.7");
    m.release(claim).unwrap();
    let v = m.check();
    assert!(
        v.iter().any(|v| v.rule == Rule::KernelDmaRestored
            && matches!(&v.evidence, Evidence::Missing { what } if what.contains("table unavailable"))),
        "{v:?}"
    );
    // The host driver comes back and finds no DMA table.
    m.bind_driver(nvme, "nvme").unwrap();
    assert_eq!(
        m.driver_dma_alloc(nvme, 0x1000, DmaDirection::ToDevice),
        Err(Errno::Enomem)
    );
    let trace: Vec<String> = m
        .core()
        .take_trace()
        .iter()
        .map(|e| e.to_string())
        .collect();
    assert!(
        trace.iter().any(|l| l.contains("table unavailable")),
        "{trace:#?}"
    );
}

#[test]
fn pe_kills_are_counted_per_pe() {
    let m = boot(Design::Fixed);
    let nic = m.device("nic0").unwrap();
    let pe = m.pe_of(nic).unwrap();
    let (r0, p0) = (pe.range_kills(), pe.pe_kills());
    live_dma(&m, "nic0", "ixgbe");
    assert_eq!(pe.range_kills(), r0 + 1);
    m.unbind_driver(nic).unwrap();
    assert_eq!(pe.range_kills(), r0 + 2);
    let window0 = pe.table(0).unwrap();
    assert_eq!(
        window0.linked_pes(),
        1,
        "window 0's updates reach its PE's cache"
    );
    let c = m.claim_group(nic, VFIO).unwrap();
    assert_eq!(pe.pe_kills(), p0 + 1, "unset window 0");
    assert_eq!(window0.linked_pes(), 0, "unset: its updates reach no PE");
    m.release(c).unwrap();
    assert_eq!(pe.pe_kills(), p0 + 2, "set window 0 again");
    assert_eq!(pe.table(0).unwrap().linked_pes(), 1);
    let other = m.pe_of(m.device("nvme0").unwrap()).unwrap();
    assert_eq!(other.range_kills(), 0);
}

#[test]
fn the_group_lives_exactly_as_long_as_its_devices() {
    let m = boot(Design::Fixed);
    let gpu = m.device("gpu0").unwrap();
    let g = m.core().device_group(gpu).unwrap().unwrap();
    let weak_name = g.name().to_string();
    drop(g);
    m.remove_device(gpu).unwrap();
    assert!(m.core().groups().iter().all(|g| g.name() != weak_name));
    let trace: Vec<String> = m
        .core()
        .take_trace()
        .iter()
        .map(|e| e.to_string())
        .collect();
    assert!(
        trace.iter().any(|l| l.contains("group released")),
        "{trace:#?}"
    );
    assert!(m.check().is_empty());
    // Hot-add it back: a new group.
    let d = spapr_platform::DeviceConfig::new("gpu0", 1, 1, 0, 64);
    let gpu = m.add_device(&d).unwrap();
    assert_eq!(
        m.core().device_group(gpu).unwrap().unwrap().name(),
        "domain1-pe1"
    );
    m.device_translate(gpu, BYPASS_BASE, Access::Read).unwrap();
}
