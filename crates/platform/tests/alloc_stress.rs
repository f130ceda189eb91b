//! The allocator's hand-over under load: two CPUs map and unmap (one by the one-page fast
//! path, one by the full search, and both by the run claim of a one-page scatter list in
//! every other iteration) while a third keeps
//! taking and releasing the table for a user. Whenever a take succeeds, no kernel
//! allocation may be live; while the table is the user's, no allocation may succeed.
//! A no-progress detector fails the test if any thread stops finishing iterations.

mod common;

use spapr_platform::{Allocation, DmaLimits, TceAllocator};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

#[test]
fn a_take_never_succeeds_over_a_live_allocation() {
    let a = Arc::new(TceAllocator::new(256, 12, 0, (0, 0)));
    let live = Arc::new(AtomicU64::new(0));
    let owned = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let bad = Arc::new(AtomicU64::new(0));
    let progress: Arc<Vec<AtomicU64>> = Arc::new((0..3).map(|_| AtomicU64::new(0)).collect());
    let start = Arc::new(Barrier::new(4));
    let mut handles = Vec::new();
    for cpu in 0..2u32 {
        let (a, live, owned, stop, bad, progress, start) = (
            a.clone(),
            live.clone(),
            owned.clone(),
            stop.clone(),
            bad.clone(),
            progress.clone(),
            start.clone(),
        );
        handles.push(std::thread::spawn(move || {
            start.wait();
            let mut iter = 0u64;
            while !stop.load(Ordering::Relaxed) {
                iter += 1;
                // CPU 0 maps one page by the fast path (`dma_map_page`'s), CPU 1 two
                // pages by the full search.
                let got = if iter % 2 == 1 {
                    // A scatter list of three one-page segments claimed as one run.
                    a.alloc_one_run(3, cpu, &mut 0, a.entry_limits(DmaLimits::NONE))
                        .map(|entry| Allocation {
                            entry,
                            npages: 3,
                            pool: 0,
                        })
                        .ok_or(iommu_core::Errno::Enomem)
                } else if cpu == 0 {
                    a.alloc_one(cpu, None, a.entry_limits(DmaLimits::NONE))
                        .map(|entry| Allocation {
                            entry,
                            npages: 1,
                            pool: 0,
                        })
                } else {
                    a.alloc(2, cpu, None)
                };
                if let Ok(x) = got {
                    live.fetch_add(1, Ordering::SeqCst);
                    if owned.load(Ordering::SeqCst) {
                        // The table was the user's for the whole time (the taker clears
                        // `owned` only after releasing).
                        bad.fetch_add(1, Ordering::Relaxed);
                    }
                    live.fetch_sub(1, Ordering::SeqCst);
                    a.free(x.entry, x.npages).unwrap();
                }
                progress[cpu as usize].fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let taker = {
        let (a, live, owned, stop, bad, progress, start) = (
            a.clone(),
            live.clone(),
            owned.clone(),
            stop.clone(),
            bad.clone(),
            progress.clone(),
            start.clone(),
        );
        std::thread::spawn(move || {
            start.wait();
            let mut taken = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if a.take_ownership().is_ok() {
                    taken += 1;
                    owned.store(true, Ordering::SeqCst);
                    if live.load(Ordering::SeqCst) != 0 {
                        bad.fetch_add(1, Ordering::Relaxed);
                    }
                    if a.alloc(1, 2, None).is_ok()
                        || a.alloc_one(2, None, a.entry_limits(DmaLimits::NONE))
                            .is_ok()
                        || a.alloc_one_run(2, 2, &mut 0, a.entry_limits(DmaLimits::NONE))
                            .is_some()
                    {
                        bad.fetch_add(1, Ordering::Relaxed);
                    }
                    owned.store(false, Ordering::SeqCst);
                    a.release_ownership();
                }
                progress[2].fetch_add(1, Ordering::Relaxed);
            }
            taken
        })
    };
    start.wait();
    common::watch_progress(
        &progress,
        &["cpu 0", "cpu 1", "taker"],
        Duration::from_millis(800),
        Duration::from_secs(2),
    );
    stop.store(true, Ordering::Relaxed);
    let takes = taker.join().unwrap();
    for h in handles {
        h.join().unwrap();
    }
    assert!(takes > 0, "the table was never taken");
    assert_eq!(bad.load(Ordering::Relaxed), 0);
}
