//! The PHB's TCE cache against range kills under load: two threads that claim the same CPU
//! slot (CPUs 0 and 4) each rewrite their own entry with a growing value and kill after
//! every write, while a device thread translates both entries. A translation must never
//! return a value older than the last one its writer had killed before the translation
//! began (a kill lost to the cache), and no kill may be lost from the count. A
//! no-progress detector fails the test if any thread stops finishing iterations. The loom
//! model of the same protocol is `a_kill_is_never_lost_to_the_tce_cache` in `loom.rs`.

mod common;

use spapr_platform::PeCounters;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

/// A valid TCE carrying sequence number `n`.
fn tce(n: u64) -> u64 {
    (n << 12) | 3
}

/// What the threads share.
struct Shared {
    pe: PeCounters,
    /// One entry per writer.
    entries: [AtomicU64; 2],
    /// The last sequence number each writer has written and killed.
    killed: [AtomicU64; 2],
    /// Iterations of writer 0, writer 1, the device.
    progress: [AtomicU64; 3],
    stop: AtomicBool,
    start: Barrier,
}

#[test]
fn a_translation_never_serves_a_tce_from_before_a_kill() {
    let s = Arc::new(Shared {
        pe: PeCounters::default(),
        entries: [AtomicU64::new(tce(0)), AtomicU64::new(tce(0))],
        killed: Default::default(),
        progress: Default::default(),
        stop: AtomicBool::new(false),
        start: Barrier::new(4),
    });
    let writers: Vec<_> = [0u32, 4]
        .into_iter()
        .enumerate()
        .map(|(w, cpu)| {
            let s = s.clone();
            std::thread::spawn(move || {
                s.start.wait();
                let mut n = 0;
                while !s.stop.load(Ordering::Relaxed) {
                    n += 1;
                    s.entries[w].store(tce(n), Ordering::Relaxed);
                    s.pe.range_kill(cpu);
                    s.killed[w].store(n, Ordering::Release);
                    s.progress[w].fetch_add(1, Ordering::Relaxed);
                }
                n
            })
        })
        .collect();
    let device = {
        let s = s.clone();
        std::thread::spawn(move || {
            s.start.wait();
            let mut stale = 0u64;
            while !s.stop.load(Ordering::Relaxed) {
                for w in 0..2 {
                    let floor = s.killed[w].load(Ordering::Acquire);
                    let got =
                        s.pe.cached_tce(0, w as u64, || s.entries[w].load(Ordering::Relaxed));
                    if got >> 12 < floor {
                        stale += 1;
                    }
                }
                s.progress[2].fetch_add(1, Ordering::Relaxed);
            }
            stale
        })
    };
    s.start.wait();
    common::watch_progress(
        &s.progress,
        &["writer on CPU 0", "writer on CPU 4", "device"],
        Duration::from_millis(600),
        Duration::from_secs(2),
    );
    s.stop.store(true, Ordering::Relaxed);
    let written: u64 = writers.into_iter().map(|h| h.join().unwrap()).sum();
    let stale = device.join().unwrap();
    assert_eq!(stale, 0, "translations served a TCE from before its kill");
    assert_eq!(s.pe.range_kills(), written, "a range kill was lost");
    assert!(
        s.progress[2].load(Ordering::Relaxed) > 0,
        "the device never translated"
    );
}
