//! One lock order (core → group → PE → table), obeyed by every path: `snapshot` and
//! `check` run on one thread while others claim and release groups and devices, bind and
//! unbind drivers and map through the DMA API, and, with EEH on, faults, MMIO reads,
//! fences, state reads, thaws and resets run on the EEH chain (PE EEH → PHB PE EEH). A
//! no-progress detector fails the test if a thread stops finishing iterations (the old
//! `snapshot` took the PE, then the group, against a claim's group, then PE; a complete
//! reset holding the PHB PE's lock while it takes each PE's deadlocks against the DMA
//! gate).

mod common;

use iommu_core::OwnerCookie;
use spapr_platform::{PowerNv, PowerNvConfig};
use spapr_tce::DmaDirection;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

#[test]
fn views_and_ownership_changes_never_deadlock() {
    let m = Arc::new(PowerNv::booted(PowerNvConfig::seed()).unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    m.env().set_eeh(true);
    let names = [
        "show+check",
        "claim gpu0",
        "driver nic0",
        "device claims nvme0",
        "eeh: faults and reads on PHB 0",
        "eeh: fence, reset, ops",
    ];
    let progress: Arc<Vec<AtomicU64>> = Arc::new(names.iter().map(|_| AtomicU64::new(0)).collect());
    let start = Arc::new(Barrier::new(names.len() + 1));
    let mut handles = Vec::new();
    for who in 0..names.len() {
        let (m, stop, progress, start) = (m.clone(), stop.clone(), progress.clone(), start.clone());
        handles.push(std::thread::spawn(move || {
            start.wait();
            let p = &progress[who];
            let gpu = m.device("gpu0").unwrap();
            let nic = m.device("nic0").unwrap();
            let nvme = m.device("nvme0").unwrap();
            while !stop.load(Ordering::Relaxed) {
                match who {
                    0 => {
                        let snap = m.snapshot();
                        assert_eq!(snap.len(), 2);
                        let _ = m.check();
                    }
                    1 => {
                        if let Ok(c) = m.claim_group(gpu, OwnerCookie(0xA)) {
                            let _ = m.device_read(gpu, 0, 8);
                            c.release().unwrap();
                        }
                    }
                    2 => {
                        if m.bind_driver(nic, "ixgbe").is_ok() {
                            if let Ok(a) =
                                m.dma_map(nic, 0x1000_0000, 4096, DmaDirection::ToDevice, 1)
                            {
                                let _ = m.dma_unmap(nic, a, 4096);
                            }
                            m.unbind_driver(nic).unwrap();
                        }
                    }
                    4 => {
                        // The DMA gate and its record, a fault's freeze, MMIO checks.
                        let _ = m.device_translate(nvme, 0x1_0000_0000, spapr_tce::Access::Read);
                        let _ = m.device_translate(nvme, 0, spapr_tce::Access::Read);
                        let _ = m.device_mmio_read(nvme, 1);
                    }
                    5 => {
                        // The PHB side against the PE side: fence, state reads, thaws,
                        // the complete reset.
                        let phb = m.phbs()[0].clone();
                        let pe = m.pe_of(nvme).unwrap();
                        phb.eeh_fence();
                        let _ = pe.eeh_get_state();
                        let _ = pe.eeh_set_option(2);
                        let _ = phb.eeh_reset_full(false);
                        let _ = pe.eeh_set_option(1);
                        let _ = pe.eeh_reset(1);
                        let _ = pe.eeh_reset(0);
                    }
                    _ => {
                        if let Ok(a) = m.claim_device(nvme, OwnerCookie(0xB)) {
                            if let Ok(b) = m.claim_device(nvme, OwnerCookie(0xB)) {
                                drop(a);
                                drop(b);
                            }
                        }
                    }
                }
                p.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    start.wait();
    let stall = Duration::from_secs(2);
    common::watch_progress(&progress, &names, Duration::from_millis(1000), stall);
    // Every thread must have gone round at least once, and stop when asked.
    let deadline = Instant::now() + stall;
    for (i, name) in names.iter().enumerate() {
        while progress[i].load(Ordering::Relaxed) == 0 {
            assert!(
                Instant::now() < deadline,
                "{name} never finished an iteration (deadlock)"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    stop.store(true, Ordering::Relaxed);
    let deadline = Instant::now() + stall;
    while handles.iter().any(|h| !h.is_finished()) {
        assert!(
            Instant::now() < deadline,
            "a thread did not stop (deadlock)"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    for h in handles {
        h.join().expect("a thread panicked");
    }
    assert!(m.check().is_empty(), "{:?}", m.check());
}
