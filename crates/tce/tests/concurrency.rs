//! Many threads: readers translate while writers exchange. A racing reader must see the
//! old or the new entry, never a torn one, and exchanges must hand every old value to
//! exactly one writer.

use spapr_tce::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The no-progress detector: waits until every handle has finished, failing if an
/// unfinished thread's own counter in `progress` (handle `k` bumps `progress[k]` as it
/// goes) stands still for two seconds (a thread looping in a walk, or stuck). Returns the
/// handles, finished, to be joined.
fn wait_making_progress<T>(
    handles: Vec<std::thread::JoinHandle<T>>,
    progress: &[AtomicU64],
) -> Vec<std::thread::JoinHandle<T>> {
    let mut last: Vec<(u64, Instant)> = progress
        .iter()
        .map(|p| (p.load(Ordering::Relaxed), Instant::now()))
        .collect();
    while !handles.iter().all(|h| h.is_finished()) {
        std::thread::sleep(Duration::from_millis(10));
        for (k, h) in handles.iter().enumerate() {
            let now = progress[k].load(Ordering::Relaxed);
            if now != last[k].0 || h.is_finished() {
                last[k] = (now, Instant::now());
            }
            assert!(
                last[k].1.elapsed() < Duration::from_secs(2),
                "thread {k}: no progress for {:?} after {now} steps",
                last[k].1.elapsed()
            );
        }
    }
    handles
}

#[test]
fn readers_see_old_or_new_entry_never_a_torn_one() {
    // Two levels, so that writers also race on level allocation.
    let g = TableGeometry::ioda2(Iova(0), PageShift::K4, 1 << 32, 2, 12).unwrap();
    let table: Arc<TceTable> = Arc::new(TceTable::new(g, TableOptions::default()).unwrap());
    const A: u64 = 0x0000_0000_1111_0000;
    const B: u64 = 0xFFFF_FFFF_EEEE_0000;
    let stop = Arc::new(AtomicBool::new(false));
    let slots: Vec<u64> = (0..64).map(|k| k * 4099).collect();
    let start = Arc::new(std::sync::Barrier::new(4));
    // One counter per thread: writers 0 and 1, readers 2 and 3.
    let progress: Arc<[AtomicU64]> = (0..4).map(|_| AtomicU64::new(0)).collect();
    let mut handles = Vec::new();
    for w in 0..2u64 {
        let (t, slots, start, progress) = (
            table.clone(),
            slots.clone(),
            start.clone(),
            progress.clone(),
        );
        handles.push(std::thread::spawn(move || {
            start.wait();
            for round in 0..20_000u64 {
                progress[w as usize].fetch_add(1, Ordering::Relaxed);
                let i = TceIndex(slots[((round + w) % 64) as usize]);
                let v = if (round + w) % 2 == 0 { A | 3 } else { B | 3 };
                let old = t.exchange(i, Tce(v)).unwrap();
                assert!(
                    old == Tce::EMPTY || old == Tce(A | 3) || old == Tce(B | 3),
                    "torn {old:?}"
                );
            }
        }));
    }
    let torn = Arc::new(AtomicU64::new(0));
    let seen = Arc::new(AtomicU64::new(0));
    for r in 2..4usize {
        let (t, slots, stop, torn, seen) = (
            table.clone(),
            slots.clone(),
            stop.clone(),
            torn.clone(),
            seen.clone(),
        );
        let (start, progress) = (start.clone(), progress.clone());
        handles.push(std::thread::spawn(move || {
            start.wait();
            let mut k = 0usize;
            while !stop.load(Ordering::Relaxed) || k < 100_000 {
                progress[r].fetch_add(1, Ordering::Relaxed);
                let i = slots[k % 64];
                k += 1;
                match t.translate(Iova((i << 12) | 0x42), Access::Write) {
                    Ok(Hpa(h)) => {
                        seen.fetch_add(1, Ordering::Relaxed);
                        if h != A | 0x42 && h != B | 0x42 {
                            torn.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(Fault::NoEntry { .. }) => {}
                    Err(e) => panic!("unexpected fault {e}"),
                }
            }
        }));
    }
    let readers = handles.split_off(2);
    for h in wait_making_progress(handles, &progress[..2]) {
        h.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for h in wait_making_progress(readers, &progress[2..]) {
        h.join().unwrap();
    }
    assert_eq!(torn.load(Ordering::Relaxed), 0);
    assert!(seen.load(Ordering::Relaxed) > 0);
    // Exactly the leaves the 64 slots need were allocated, despite the races.
    let leaves: std::collections::BTreeSet<u64> =
        slots.iter().map(|i| i / g.leaf_entries()).collect();
    assert_eq!(table.allocated_leaves(), leaves.len() as u64);
}

#[test]
fn concurrent_exchanges_hand_each_value_to_exactly_one_writer() {
    let g = TableGeometry::flat(Iova(0), PageShift::K4, 1).unwrap();
    let table: Arc<TceTable> = Arc::new(TceTable::new(g, TableOptions::default()).unwrap());
    let per_thread = 50_000u64;
    let progress: Arc<[AtomicU64]> = (0..4).map(|_| AtomicU64::new(0)).collect();
    let handles: Vec<_> = (0..4u64)
        .map(|t| {
            let (table, progress) = (table.clone(), progress.clone());
            std::thread::spawn(move || {
                let mut got = Vec::with_capacity(per_thread as usize);
                for k in 0..per_thread {
                    progress[t as usize].fetch_add(1, Ordering::Relaxed);
                    let v = ((t * per_thread + k + 1) << 12) | 1;
                    got.push(table.exchange(TceIndex(0), Tce(v)).unwrap().raw());
                }
                got
            })
        })
        .collect();
    let mut all: Vec<u64> = wait_making_progress(handles, &progress)
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    all.push(table.get(TceIndex(0)).unwrap().raw());
    all.sort_unstable();
    // Every value written is returned once (plus the initial empty entry), none twice.
    let mut expected: Vec<u64> = (0..4 * per_thread).map(|k| ((k + 1) << 12) | 1).collect();
    expected.push(0);
    expected.sort_unstable();
    assert_eq!(all, expected);
}
