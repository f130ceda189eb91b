//! `dma_map_sg` / `dma_unmap_sg` on the seed machine's NIC (window 0, 64K pages): a list
//! of one-page segments mapped with one claim of consecutive entries gives what the
//! segment-by-segment map gives (the entries, each TCE, one kill per segment), and its
//! unmap clears each TCE and frees the run; lists that do not qualify take the segment-by-
//! segment path with the same kind of result.

use spapr_platform::{PowerNv, PowerNvConfig, SgEntry, BYPASS_BASE};
use spapr_tce::{Access, DmaDirection};

const PAGE: u64 = 0x1_0000;

fn nic() -> (
    PowerNv,
    spapr_platform::DmaSession,
    std::sync::Arc<spapr_platform::Pe>,
    iommu_core::DeviceId,
) {
    let m = PowerNv::booted(PowerNvConfig::seed()).unwrap();
    let nic = m.device("nic0").unwrap();
    m.bind_driver(nic, "ixgbe").unwrap();
    let d = m.dma_session(nic).unwrap();
    let pe = m.pe_of(nic).unwrap();
    (m, d, pe, nic)
}

/// The seed machine's GPU with its driver bound: a 64-bit mask while bypass is on.
fn bypass_gpu() -> (PowerNv, spapr_platform::DmaSession, iommu_core::DeviceId) {
    let m = PowerNv::booted(PowerNvConfig::seed()).unwrap();
    let gpu = m.device("gpu0").unwrap();
    m.bind_driver(gpu, "nvidia").unwrap();
    let d = m.dma_session(gpu).unwrap();
    assert!(d.bypass());
    (m, d, gpu)
}

/// Each entry's bus address reaches its buffer, its first byte and its last, with the
/// direction's permission.
fn assert_reaches(m: &PowerNv, dev: iommu_core::DeviceId, sg: &[SgEntry]) {
    for e in sg {
        let a = e.dma_address().expect("mapped");
        for off in [0, e.len() - 1] {
            assert_eq!(
                m.device_translate(dev, a + off, Access::Write),
                Ok(e.phys() + off),
                "{:#x}",
                a + off
            );
        }
    }
}

#[test]
fn a_list_of_one_page_segments_maps_consecutively_and_unmaps_completely() {
    let (m, d, pe, dev) = nic();
    let mut sg: Vec<SgEntry> = (0..16u64)
        .map(|k| SgEntry::new(k * 0x30_0000 + 0x80, 0x1000))
        .collect();
    let kills = pe.range_kills();
    d.map_sg(&mut sg, DmaDirection::FromDevice, 0).unwrap();
    let first = sg[0].dma_address().unwrap();
    for (k, e) in sg.iter().enumerate() {
        assert_eq!(e.dma_address(), Some(first + k as u64 * PAGE));
    }
    assert_eq!(first & (PAGE - 1), 0x80, "the offset in the page is kept");
    assert_reaches(&m, dev, &sg);
    assert_eq!(pe.range_kills(), kills + 16, "one kill per segment");
    let addrs: Vec<u64> = sg.iter().map(|e| e.dma_address().unwrap()).collect();
    d.unmap_sg(&mut sg, 0).unwrap();
    assert_eq!(pe.range_kills(), kills + 32);
    for a in &addrs {
        assert!(
            m.device_translate(dev, *a, Access::Read).is_err(),
            "{a:#x} still mapped"
        );
    }
    // The entries were freed, and the list can be mapped again.
    assert_eq!(pe.table(0).unwrap().allocator().unwrap().allocated(), 0);
    let mut again: Vec<SgEntry> = (0..16u64).map(|k| SgEntry::new(k * PAGE, PAGE)).collect();
    d.map_sg(&mut again, DmaDirection::FromDevice, 0).unwrap();
    assert!(again.iter().all(|e| e.dma_address().is_some()));
    assert_reaches(&m, dev, &again);
    d.unmap_sg(&mut again, 0).unwrap();
}

#[test]
fn lists_that_do_not_qualify_for_one_claim_map_segment_by_segment() {
    let (m, d, pe, dev) = nic();
    // A two-page segment in the middle; a segment crossing a page boundary; 70 segments
    // (more than a bitmap word).
    let lists: Vec<Vec<(u64, u64)>> = vec![
        vec![(0, 0x1000), (0x40_0000, 2 * PAGE), (0x80_0000, 0x1000)],
        vec![(0, 0x1000), (PAGE - 0x800, 0x1000)],
        (0..70u64).map(|k| (k * PAGE, PAGE)).collect(),
        // A two-page segment last, after a one-page one (their entries follow one
        // another), and a two-page segment alone: the unmap must not take either for a
        // run of one-page segments.
        vec![(0, 0x1000), (0x40_0000, 2 * PAGE)],
        vec![(0x40_0000, 2 * PAGE)],
    ];
    for spans in lists {
        let mut sg: Vec<SgEntry> = spans.iter().map(|&(p, l)| SgEntry::new(p, l)).collect();
        let kills = pe.range_kills();
        d.map_sg(&mut sg, DmaDirection::Bidirectional, 0).unwrap();
        assert_reaches(&m, dev, &sg);
        assert_eq!(pe.range_kills(), kills + sg.len() as u64);
        // Every page of each segment reaches its buffer, the last byte of each too.
        let mut addrs = Vec::new();
        for (e, &(phys, len)) in sg.iter().zip(&spans) {
            let a = e.dma_address().unwrap();
            for off in (0..len).step_by(PAGE as usize).chain([len - 1]) {
                assert_eq!(
                    m.device_translate(dev, a + off, Access::Read),
                    Ok(phys + off)
                );
                addrs.push(a + off);
            }
        }
        d.unmap_sg(&mut sg, 0).unwrap();
        assert!(sg.iter().all(|e| e.dma_address().is_none()));
        for a in addrs {
            assert!(m.device_translate(dev, a, Access::Read).is_err(), "{a:#x}");
        }
        assert_eq!(
            pe.table(0).unwrap().allocator().unwrap().allocated(),
            0,
            "everything freed"
        );
    }
}

/// A device whose driver set a 64-bit mask while bypass is on maps a list straight through
/// bypass: each bus address is the buffer's real address above `BYPASS_BASE`, and no TCE
/// is allocated.
#[test]
fn a_bypass_device_maps_a_list_straight_through_bypass() {
    let (m, d, gpu) = bypass_gpu();
    let mut sg = [
        SgEntry::new(0x20_0000, 0x1000),
        SgEntry::new(0x50_0010, 0x30),
    ];
    d.map_sg(&mut sg, DmaDirection::ToDevice, 1).unwrap();
    assert_eq!(sg[0].dma_address(), Some(BYPASS_BASE + 0x20_0000));
    assert_eq!(sg[1].dma_address(), Some(BYPASS_BASE + 0x50_0010));
    assert_reaches(&m, gpu, &sg);
    d.unmap_sg(&mut sg, 1).unwrap();
    assert!(sg.iter().all(|e| e.dma_address().is_none()));
}

/// A list that cannot be mapped whole (the window has room for fewer segments than it
/// holds) is refused with the allocator's error and left as it came: no entry keeps an
/// address, no entry of the table stays allocated, none of its buffers is reachable.
#[test]
fn a_list_that_does_not_fit_is_unwound_completely() {
    let (m, d, pe, _) = nic();
    let table = pe.table(0).unwrap();
    let alloc = table.allocator().unwrap();
    let room = alloc.size() - alloc.allocated();
    // One list of one-page segments, then one of two-page segments, each too long.
    for pages in [1u64, 2] {
        let mut sg: Vec<SgEntry> = (0..room / pages + 1)
            .map(|k| SgEntry::new(k * pages * PAGE, pages * PAGE))
            .collect();
        let before = alloc.allocated();
        assert!(d.map_sg(&mut sg, DmaDirection::FromDevice, 0).is_err());
        assert!(sg.iter().all(|e| e.dma_address().is_none()));
        assert_eq!(alloc.allocated(), before);
    }
    assert!(m.check().is_empty());
}

/// An unmap of a list whose addresses were mapped as one run but whose entries no longer
/// follow one another (a caller reordered the list): every segment is still unmapped.
#[test]
fn a_reordered_list_is_unmapped_segment_by_segment() {
    let (m, d, pe, dev) = nic();
    let mut sg: Vec<SgEntry> = (0..8u64).map(|k| SgEntry::new(k * PAGE, 0x100)).collect();
    d.map_sg(&mut sg, DmaDirection::ToDevice, 0).unwrap();
    sg.swap(2, 5);
    let addrs: Vec<u64> = sg.iter().map(|e| e.dma_address().unwrap()).collect();
    d.unmap_sg(&mut sg, 0).unwrap();
    for a in addrs {
        assert!(m.device_translate(dev, a, Access::Read).is_err());
    }
    assert_eq!(pe.table(0).unwrap().allocator().unwrap().allocated(), 0);
}

/// A list unmapped through another device's session than the one that mapped it (here a
/// bypass device's list through the NIC, whose window holds none of its addresses) is
/// refused with -EINVAL segment by segment, as the NIC's `dma_unmap_page` of each address
/// would be: the list keeps its addresses and the NIC's table is untouched; the device
/// that mapped it can still unmap it.
#[test]
fn a_list_unmapped_through_another_device_keeps_its_addresses() {
    let (m, nic, pe, _) = nic();
    let gpu = m.device("gpu0").unwrap();
    m.bind_driver(gpu, "nvidia").unwrap();
    let g = m.dma_session(gpu).unwrap();
    let mut sg: Vec<SgEntry> = (0..4u64).map(|k| SgEntry::new(k * PAGE, 0x1000)).collect();
    g.map_sg(&mut sg, DmaDirection::ToDevice, 0).unwrap();
    let addrs: Vec<Option<u64>> = sg.iter().map(SgEntry::dma_address).collect();
    let kills = pe.range_kills();
    assert_eq!(
        nic.unmap_sg(&mut sg, 0),
        Err(spapr_platform::DmaMapError::Invalid)
    );
    assert_eq!(
        sg.iter().map(SgEntry::dma_address).collect::<Vec<_>>(),
        addrs
    );
    assert_eq!(pe.range_kills(), kills);
    assert_eq!(pe.table(0).unwrap().allocator().unwrap().allocated(), 0);
    g.unmap_sg(&mut sg, 0).unwrap();
    assert!(sg.iter().all(|e| e.dma_address().is_none()));
}

/// Through bypass a bus address is the real address plus `BYPASS_BASE`; a buffer whose bus
/// address would pass the top of the 64-bit space is not DMA-capable (`dma_capable`), and
/// the map is refused with -EIO (`dma_direct_map_sg`'s code) with nothing mapped, for a
/// page and for a list (found by review: the addition wrapped to a low bus address).
#[test]
fn a_bypass_address_past_the_top_of_the_bus_is_refused() {
    let (_m, d, _) = bypass_gpu();
    let top = u64::MAX - BYPASS_BASE; // the last real address bypass can reach
    assert_eq!(d.map_page(top, 1, DmaDirection::ToDevice, 0), Ok(u64::MAX));
    let err = d.map_page(top, 2, DmaDirection::ToDevice, 0).unwrap_err();
    assert_eq!(err, spapr_platform::DmaMapError::NotCapable);
    assert_eq!(err.errno(), iommu_core::Errno::Eio);
    assert_eq!(
        d.map_page(top + 1, 1, DmaDirection::ToDevice, 0),
        Err(spapr_platform::DmaMapError::NotCapable)
    );
    let mut sg = [SgEntry::new(0x1000, 0x1000), SgEntry::new(top + 1, 1)];
    assert_eq!(
        d.map_sg(&mut sg, DmaDirection::ToDevice, 0),
        Err(spapr_platform::DmaMapError::NotCapable)
    );
    assert!(sg.iter().all(|e| e.dma_address().is_none()));
}

/// A bypass device's unmap goes direct only for a bus address in the bypass range
/// (`arch_dma_unmap_page_direct`'s test of the handle); an address below it is its
/// table's, and one past that table's window is -EINVAL (`iommu_free_check`), with the
/// table untouched.
#[test]
fn a_bypass_device_unmaps_a_table_address_through_its_table() {
    let (m, d, gpu) = bypass_gpu();
    let pe = m.pe_of(gpu).unwrap();
    let window = pe.table(0).unwrap().window_size();
    assert!(window < BYPASS_BASE);
    assert_eq!(d.unmap_page(BYPASS_BASE + window, 0x1000, 0), Ok(()));
    assert_eq!(
        d.unmap_page(window, 0x1000, 0),
        Err(spapr_platform::DmaMapError::Invalid)
    );
    assert_eq!(pe.table(0).unwrap().allocator().unwrap().allocated(), 0);
}

/// A run mapped and unmapped from CPUs past the fourth (their kill slot is the CPU number
/// modulo 4): every kill counted, one per segment each way.
#[test]
fn a_run_from_a_high_cpu_counts_a_kill_per_segment() {
    let (m, d, pe, dev) = nic();
    for (map_cpu, unmap_cpu) in [(5, 6), (7, 4), (u32::MAX, 1 << 20)] {
        let mut sg: Vec<SgEntry> = (0..16u64).map(|k| SgEntry::new(k * PAGE, 0x1000)).collect();
        let kills = pe.range_kills();
        d.map_sg(&mut sg, DmaDirection::ToDevice, map_cpu).unwrap();
        assert_reaches_read(&m, dev, &sg);
        assert_eq!(pe.range_kills(), kills + 16, "CPU {map_cpu}");
        d.unmap_sg(&mut sg, unmap_cpu).unwrap();
        assert_eq!(pe.range_kills(), kills + 32, "CPU {unmap_cpu}");
        assert!(sg.iter().all(|e| e.dma_address().is_none()));
    }
}

/// Each entry's bus address can be read by the device at its buffer.
fn assert_reaches_read(m: &PowerNv, dev: iommu_core::DeviceId, sg: &[SgEntry]) {
    for e in sg {
        let a = e.dma_address().expect("mapped");
        assert_eq!(m.device_translate(dev, a, Access::Read), Ok(e.phys()));
    }
}

/// The allocator's read-only view reads the bitmap as it is: nothing allocated on a fresh
/// window, each mapping counted and the table in use while one is live, the 32-bit MMIO
/// hole reserved (from the PE's 32-bit window size to 4 GiB, in the window's pages), never
/// saturated while the kernel has it.
#[test]
fn the_allocator_view_reads_the_bitmap() {
    let (_m, d, pe, _) = nic();
    let table = pe.table(0).unwrap();
    let view = table.allocator().unwrap();
    let shift = table.geometry().page_shift().shift();
    assert_eq!(
        view.reserved(),
        (pe.tce32_size >> shift, (1u64 << 32) >> shift)
    );
    assert_eq!((view.allocated(), view.in_use()), (0, false));
    let a: Vec<u64> = (0..3u64)
        .map(|k| {
            d.map_page(k * PAGE, 0x1000, DmaDirection::ToDevice, 0)
                .unwrap()
        })
        .collect();
    assert_eq!((view.allocated(), view.in_use()), (3, true));
    assert!(!view.saturated());
    for x in a {
        d.unmap_page(x, 0x1000, 0).unwrap();
    }
    assert_eq!((view.allocated(), view.in_use()), (0, false));
}
