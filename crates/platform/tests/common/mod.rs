//! Shared by the stress tests: the no-progress detector.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Watches `progress` (one counter per thread, bumped once per iteration) for `run`, and
/// fails the test naming the thread whose counter stood still for `stall` (a deadlock or
/// a livelock).
pub fn watch_progress(progress: &[AtomicU64], names: &[&str], run: Duration, stall: Duration) {
    let began = Instant::now();
    let mut last: Vec<(u64, Instant)> = progress.iter().map(|_| (0, began)).collect();
    while began.elapsed() < run {
        std::thread::sleep(Duration::from_millis(20));
        for (i, (seen, at)) in last.iter_mut().enumerate() {
            let v = progress[i].load(Ordering::Relaxed);
            if v != *seen {
                *seen = v;
                *at = Instant::now();
            }
            assert!(
                at.elapsed() < stall,
                "no progress in {} for {stall:?} (deadlock)",
                names.get(i).copied().unwrap_or("a thread")
            );
        }
    }
}
