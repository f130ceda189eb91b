//! A borrowing (IODA1) PE with a second kernel table (`ddw_table`): its 64-bit devices
//! map through the table at the 64-bit base, its 32-bit ones through window 0; taking
//! ownership takes both tables, and release gives both back, cleared. (One device per
//! PE: a second device's take finds the bitmaps saturated, the kernel's -EBUSY.)

use iommu_core::OwnerCookie;
use spapr_platform::{
    DeviceConfig, PeScope, PhbConfig, PhbModel, PowerNv, PowerNvConfig, BYPASS_BASE,
};
use spapr_tce::{Access, DmaDirection};

fn machine() -> PowerNv {
    let mut phb = PhbConfig::new(
        PhbModel::Ioda1,
        vec![(1, PeScope::Bus(1)), (2, PeScope::Bus(2))],
    );
    phb.ddw_table = true;
    PowerNv::booted(PowerNvConfig {
        phbs: vec![phb],
        devices: vec![
            DeviceConfig::new("wide", 0, 1, 0, 64),
            DeviceConfig::new("narrow", 0, 2, 0, 32),
        ],
        ..PowerNvConfig::seed()
    })
    .unwrap()
}

#[test]
fn a_second_kernel_table_serves_64_bit_devices_and_is_taken_with_the_first() {
    let m = machine();
    let (wide, narrow) = (m.device("wide").unwrap(), m.device("narrow").unwrap());
    m.bind_driver(wide, "nic").unwrap();
    m.bind_driver(narrow, "old").unwrap();
    let w = m
        .driver_dma_alloc(wide, 4096, DmaDirection::Bidirectional)
        .unwrap();
    let n = m
        .driver_dma_alloc(narrow, 4096, DmaDirection::Bidirectional)
        .unwrap();
    assert!(
        w.dma >= BYPASS_BASE,
        "{:#x}: through the second table",
        w.dma
    );
    assert!(n.dma < 1 << 32, "{:#x}: through window 0", n.dma);
    assert_eq!(m.device_translate(wide, w.dma, Access::Write), Ok(w.phys));
    assert_eq!(m.device_translate(narrow, n.dma, Access::Read), Ok(n.phys));
    let pe = m.pe_of(wide).unwrap();
    assert!(pe.table(1).is_some());
    assert!(m.check().is_empty(), "{:?}", m.check());
    // The hand-over takes both tables once the drivers let go.
    m.driver_dma_free(narrow, n.dma).unwrap();
    m.unbind_driver(narrow).unwrap();
    m.unbind_driver(wide).unwrap();
    let c = m
        .claim_group(wide, OwnerCookie(7))
        .expect("the unbinds unmapped every buffer");
    assert!(pe
        .table(1)
        .is_some_and(|t| t.allocator().is_some_and(|a| a.saturated())));
    assert!(pe
        .table(0)
        .is_some_and(|t| t.allocator().is_some_and(|a| a.saturated())));
    assert!(m.check().is_empty(), "{:?}", m.check());
    m.release(c).unwrap();
    assert!(pe
        .table(1)
        .is_some_and(|t| t.allocator().is_some_and(|a| !a.saturated())));
    m.bind_driver(wide, "nic").unwrap();
    let again = m
        .driver_dma_alloc(wide, 4096, DmaDirection::Bidirectional)
        .unwrap();
    assert!(again.dma >= BYPASS_BASE);
    assert!(m.check().is_empty(), "{:?}", m.check());
}
