//! `dma_map_sg` / `dma_unmap_sg` on the seed machine's NIC (window 0, 64K pages): a list
//! of one-page segments mapped with one claim of consecutive entries gives what the
//! segment-by-segment map gives (the entries, each TCE, one kill per segment), and its
//! unmap clears each TCE and frees the run; lists that do not qualify take the segment-by-
//! segment path with the same kind of result.

use spapr_platform::{PowerNv, PowerNvConfig, SgEntry};
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

/// Each entry's bus address reaches its buffer, with the direction's permission.
fn assert_reaches(m: &PowerNv, dev: iommu_core::DeviceId, sg: &[SgEntry]) {
    for e in sg {
        let a = e.dma_address().expect("mapped");
        assert_eq!(
            m.device_translate(dev, a, Access::Write),
            Ok(e.phys()),
            "{a:#x}"
        );
    }
}

#[test]
fn a_list_of_one_page_segments_maps_consecutively_and_unmaps_completely() {
    let (m, d, pe, dev) = nic();
    let mut sg: Vec<SgEntry> = (0..16u64)
        .map(|k| SgEntry::new(k * 0x30_0000 + 0x80, 0x1000))
        .collect();
    let kills = pe.counters.range_kills();
    d.map_sg(&mut sg, DmaDirection::FromDevice, 0).unwrap();
    let first = sg[0].dma_address().unwrap();
    for (k, e) in sg.iter().enumerate() {
        assert_eq!(e.dma_address(), Some(first + k as u64 * PAGE));
    }
    assert_eq!(first & (PAGE - 1), 0x80, "the offset in the page is kept");
    assert_reaches(&m, dev, &sg);
    assert_eq!(
        pe.counters.range_kills(),
        kills + 16,
        "one kill per segment"
    );
    let addrs: Vec<u64> = sg.iter().map(|e| e.dma_address().unwrap()).collect();
    d.unmap_sg(&mut sg, 0).unwrap();
    assert_eq!(pe.counters.range_kills(), kills + 32);
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
    let lists: Vec<Vec<SgEntry>> = vec![
        vec![
            SgEntry::new(0, 0x1000),
            SgEntry::new(0x40_0000, 2 * PAGE),
            SgEntry::new(0x80_0000, 0x1000),
        ],
        vec![SgEntry::new(0, 0x1000), SgEntry::new(PAGE - 0x800, 0x1000)],
        (0..70u64).map(|k| SgEntry::new(k * PAGE, PAGE)).collect(),
    ];
    for mut sg in lists {
        let kills = pe.counters.range_kills();
        d.map_sg(&mut sg, DmaDirection::Bidirectional, 0).unwrap();
        assert_reaches(&m, dev, &sg);
        assert_eq!(pe.counters.range_kills(), kills + sg.len() as u64);
        let addrs: Vec<u64> = sg.iter().map(|e| e.dma_address().unwrap()).collect();
        d.unmap_sg(&mut sg, 0).unwrap();
        assert!(sg.iter().all(|e| e.dma_address().is_none()));
        for a in addrs {
            assert!(m.device_translate(dev, a, Access::Read).is_err());
        }
    }
    assert_eq!(
        pe.table(0).unwrap().allocator().unwrap().allocated(),
        0,
        "everything freed"
    );
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
