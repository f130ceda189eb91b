//! A borrowed table's lease against its claim's release under load: a writer thread keeps
//! mapping entries through the `UserTable` a borrowing PE lent it while the claim's owner
//! releases the claim. The release clears the kernel's table; a write that passed the
//! lease's check before the release but stored after its clear would leave a user's entry
//! in the kernel's window 0 with its bitmap free. So after every round the kernel's table
//! must hold no entry, and the checker must find nothing. The write holds the group's
//! lock across check and store (`OwnershipLease::while_live`), so the release waits for
//! it. A no-progress detector fails the test if either thread stops.

mod common;

use iommu_core::OwnerCookie;
use spapr_platform::{DeviceConfig, PeScope, PhbConfig, PhbModel, PowerNv, PowerNvConfig};
use spapr_tce::{TceError, TcePerm};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[test]
fn a_release_never_leaves_a_lent_tables_write_behind() {
    let m = PowerNv::booted(PowerNvConfig {
        phbs: vec![PhbConfig::new(PhbModel::Ioda1, vec![(1, PeScope::Bus(1))])],
        devices: vec![DeviceConfig::new("a", 0, 1, 0, 32)],
        ..PowerNvConfig::seed()
    })
    .unwrap();
    let a = m.device("a").unwrap();
    let pe = m.pe_of(a).unwrap();
    // Rounds done, writes done.
    let progress: Arc<[AtomicU64; 2]> = Arc::new(Default::default());
    let stop = Arc::new(AtomicBool::new(false));
    let releaser = {
        let (progress, stop) = (progress.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut rounds = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let c = m.claim_group(a, OwnerCookie(7)).unwrap();
                let tok = pe.window_token(&c).unwrap();
                let t = pe.create_table(0, 12, pe.tce32_size, 1, &tok).unwrap();
                let first = t.geometry().first_index();
                let writes = &progress[1];
                std::thread::scope(|s| {
                    s.spawn(|| loop {
                        match t.put_linear(first, 512, 0x4000_0000, TcePerm::READ_WRITE) {
                            Ok(()) => {
                                writes.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(TceError::Revoked) => break,
                            Err(e) => panic!("write: {e}"),
                        }
                    });
                    // Let the writer get going, a varying while, then release under it.
                    for _ in 0..(rounds % 64) * 50 {
                        std::hint::spin_loop();
                    }
                    m.release(c).unwrap();
                });
                let kernel = pe.table(0).unwrap();
                assert_eq!(
                    kernel.count_mapped(),
                    0,
                    "round {rounds}: a write landed after the release's clear"
                );
                assert!(m.check().is_empty(), "round {rounds}: {:?}", m.check());
                rounds += 1;
                progress[0].fetch_add(1, Ordering::Relaxed);
            }
            rounds
        })
    };
    common::watch_progress(
        &progress[..],
        &["the releaser", "the writer"],
        Duration::from_secs(2),
        Duration::from_secs(10),
    );
    stop.store(true, Ordering::Relaxed);
    let rounds = releaser.join().expect("no round failed");
    assert!(rounds > 10, "only {rounds} rounds");
}
