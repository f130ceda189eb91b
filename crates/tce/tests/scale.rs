//! Scale: a 1 TiB window of 4K pages (2^28 entries) with 1 GiB mapped holds memory in
//! proportion to what is mapped, and clearing it visits only the allocated leaves.

use spapr_tce::*;

const TIB: u64 = 1 << 40;
const GIB: u64 = 1 << 30;

fn map_one_gib(levels: u32) -> (TableGeometry, TceTable) {
    let g = TableGeometry::ioda2(Iova(1 << 59), PageShift::K4, TIB, levels, 16).unwrap();
    assert_eq!(g.entries(), 1 << 28);
    let t: TceTable = TceTable::new(g, TableOptions::powernv()).unwrap();
    let pages = GIB >> 12;
    // Mapped in the middle of the window, 512 entries per batch.
    let first = g.first_index().0 + (1 << 27);
    let mut batch = Vec::with_capacity(MAX_BATCH);
    for chunk in 0..pages / MAX_BATCH as u64 {
        batch.clear();
        let base = chunk * MAX_BATCH as u64;
        batch.extend((0..MAX_BATCH as u64).map(|k| Tce(((base + k) << 12) | 3)));
        t.put_batch(TceIndex(first + base), &batch).unwrap();
    }
    assert_eq!(t.count_mapped(), pages);
    (g, t)
}

#[test]
fn one_gib_mapped_in_a_one_tib_window_holds_at_most_1_1x_the_leaf_bytes() {
    for levels in [2, 3] {
        let (g, t) = map_one_gib(levels);
        let leaf_bytes = t.allocated_leaves() * g.lower_level_bytes();
        // 1 GiB of 4K pages = 2^18 TCEs = 2 MiB of leaves.
        assert_eq!(leaf_bytes, 2 << 20, "levels {levels}");
        let ratio = t.allocated_bytes() as f64 / leaf_bytes as f64;
        assert!(
            ratio <= 1.1,
            "levels {levels}: {} bytes for {leaf_bytes} of leaves ({ratio:.3}x)",
            t.allocated_bytes()
        );
        // A flat table of the same window would hold 2 GiB.
        assert!(t.allocated_bytes() < (g.entries() * 8) / 500);
    }
}

#[test]
fn clearing_the_whole_window_visits_only_allocated_leaves() {
    let (g, t) = map_one_gib(3);
    let leaves = t.allocated_leaves();
    let stats = t.clear(g.first_index(), g.entries()).unwrap();
    assert_eq!(stats.cleared, GIB >> 12);
    assert_eq!(stats.leaves_visited, leaves);
    // 32 leaves of 8192 entries visited, out of 2^28 entries in the window.
    assert_eq!(leaves * g.leaf_entries(), 1 << 18);
    // Clearing again finds the same leaves, all empty, and allocates nothing.
    let before = t.allocated_bytes();
    let again = t.clear(g.first_index(), g.entries()).unwrap();
    assert_eq!(
        again,
        ClearStats {
            cleared: 0,
            leaves_visited: leaves
        }
    );
    assert_eq!(t.allocated_bytes(), before);
}
