//! Loom model of the lazy level publication: two writers race to allocate the same leaf
//! and exchange different entries of it while a reader translates. Every interleaving must
//! end with one leaf, both entries written, and the reader seeing either nothing or a
//! whole entry. Run with `RUSTFLAGS="--cfg loom" cargo test -p spapr-tce --test loom --release`.
#![cfg(loom)]

use loom::sync::Arc;
use loom::thread;
use spapr_tce::*;

/// One interleaving of the race, on a table of two levels of two entries (entries 0 and 1
/// share one leaf, which neither writer finds allocated): the first writer exchanges
/// entry 0 to `0x1000 | perm` (and must get the empty entry back), the second runs
/// `second` on entry 1, and a reader translates a read of entry 1's page meanwhile, which
/// must find nothing or the whole entry `0x2000`. Returns the table, with exactly one
/// leaf, for the caller's own checks of what was stored.
fn race_on_one_leaf(options: TableOptions, perm: u64, second: fn(&TceTable)) -> Arc<TceTable> {
    let g = TableGeometry::new(Iova(0), PageShift::K4, 4, 2, 1).unwrap();
    let t: Arc<TceTable> = Arc::new(TceTable::new(g, options).unwrap());
    let w1 = {
        let t = t.clone();
        thread::spawn(move || t.exchange(TceIndex(0), Tce(0x1000 | perm)).unwrap())
    };
    let w2 = {
        let t = t.clone();
        thread::spawn(move || second(&t))
    };
    let r = {
        let t = t.clone();
        thread::spawn(move || t.translate(Iova(0x1008), Access::Read))
    };
    assert_eq!(w1.join().unwrap(), Tce::EMPTY);
    w2.join().unwrap();
    match r.join().unwrap() {
        Ok(h) => assert_eq!(h, Hpa(0x2008)),
        Err(f) => assert!(matches!(f, Fault::NoEntry { .. })),
    }
    assert_eq!(t.allocated_leaves(), 1);
    t
}

#[test]
fn racing_first_writes_publish_one_leaf_and_keep_both_entries() {
    loom::model(|| {
        let t = race_on_one_leaf(TableOptions::default(), 3, |t| {
            assert_eq!(
                t.exchange(TceIndex(1), Tce(0x2000 | 3)).unwrap(),
                Tce::EMPTY
            );
        });
        assert_eq!(t.get(TceIndex(0)).unwrap(), Tce(0x1003));
        assert_eq!(t.get(TceIndex(1)).unwrap(), Tce(0x2003));
    });
}

#[test]
fn a_racing_reader_of_a_write_implies_read_table_sees_read_with_write() {
    // The same race on PowerNV's table, with entries stored write-only: the readers add
    // the read (the table stores the entries as given), so the racing read translation
    // finds the whole entry or nothing, and every entry reads back with read set.
    loom::model(|| {
        let t = race_on_one_leaf(TableOptions::powernv(), 2, |t| {
            t.put_batch(TceIndex(1), &[Tce(0x2000 | 2)]).unwrap();
        });
        assert_eq!(t.get(TceIndex(0)).unwrap(), Tce(0x1003));
        assert_eq!(t.exchange(TceIndex(1), Tce::EMPTY).unwrap(), Tce(0x2003));
    });
}
