//! Many threads: readers translate while writers exchange. A racing reader must see the
//! old or the new entry, never a torn one, and exchanges must hand every old value to
//! exactly one writer.

use spapr_tce::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

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
    let mut handles = Vec::new();
    for w in 0..2u64 {
        let (t, slots, start) = (table.clone(), slots.clone(), start.clone());
        handles.push(std::thread::spawn(move || {
            start.wait();
            for round in 0..20_000u64 {
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
    for _ in 0..2 {
        let (t, slots, stop, torn, seen) = (
            table.clone(),
            slots.clone(),
            stop.clone(),
            torn.clone(),
            seen.clone(),
        );
        let start = start.clone();
        handles.push(std::thread::spawn(move || {
            start.wait();
            let mut k = 0usize;
            while !stop.load(Ordering::Relaxed) || k < 100_000 {
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
    for h in handles {
        h.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for h in readers {
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
    let handles: Vec<_> = (0..4u64)
        .map(|t| {
            let table = table.clone();
            std::thread::spawn(move || {
                let mut got = Vec::with_capacity(per_thread as usize);
                for k in 0..per_thread {
                    let v = ((t * per_thread + k + 1) << 12) | 1;
                    got.push(table.exchange(TceIndex(0), Tce(v)).unwrap().raw());
                }
                got
            })
        })
        .collect();
    let mut all: Vec<u64> = handles
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
