//! One test per rule of the TCE table (kernel.md section 4, papr.md A.3).

use spapr_tce::*;
use std::sync::Arc;

const K64_HOST: u32 = 16;

fn two_level_1g_64k() -> TableGeometry {
    TableGeometry::ioda2(Iova(1 << 59), PageShift::K64, 1 << 30, 2, K64_HOST).unwrap()
}

#[test]
fn table_memory_holds_entries_big_endian() {
    let g = TableGeometry::flat(Iova(0), PageShift::K4, 16).unwrap();
    let t: TceTable = TceTable::new(g, TableOptions::default()).unwrap();
    t.set(TceIndex(3), Tce(0x0123_4567_89ab_c003)).unwrap();
    assert_eq!(
        t.get_be_bytes(TceIndex(3)).unwrap(),
        [0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xc0, 0x03]
    );
    assert_eq!(t.get(TceIndex(3)).unwrap(), Tce(0x0123_4567_89ab_c003));
}

#[test]
fn entries_are_stored_verbatim_without_write_implies_read() {
    let g = TableGeometry::flat(Iova(0), PageShift::K4, 4).unwrap();
    let t: TceTable<Gpa> = TceTable::new(g, TableOptions::default()).unwrap();
    t.set(TceIndex(0), Tce(u64::MAX)).unwrap();
    t.set(TceIndex(1), Tce(0x5000_0002)).unwrap();
    assert_eq!(t.get(TceIndex(0)).unwrap(), Tce(u64::MAX));
    assert_eq!(t.get(TceIndex(1)).unwrap(), Tce(0x5000_0002));
}

#[test]
fn powernv_option_stores_write_only_entries_as_read_write() {
    let t: TceTable = TceTable::new(two_level_1g_64k(), TableOptions::powernv()).unwrap();
    let i = two_level_1g_64k().first_index();
    t.set(i, Tce::new(0x10_0000, TcePerm::WRITE)).unwrap();
    assert_eq!(t.get(i).unwrap().perm(), TcePerm::READ_WRITE);
    let old = t.exchange(i, Tce::new(0x20_0000, TcePerm::WRITE)).unwrap();
    assert_eq!(old, Tce(0x10_0003));
    assert_eq!(t.get(i).unwrap(), Tce(0x20_0003));
}

#[test]
fn index_outside_the_window_is_a_typed_error_and_changes_nothing() {
    let g = two_level_1g_64k();
    let t: TceTable = TceTable::new(g, TableOptions::powernv()).unwrap();
    let before = t.allocated_bytes();
    let past = g.end_index();
    let below = TceIndex(g.first_index().0 - 1);
    for i in [past, below, TceIndex(0)] {
        assert_eq!(
            t.set(i, Tce(0x1003)),
            Err(TceError::IndexOutOfWindow {
                index: i,
                first: g.first_index(),
                end: g.end_index()
            })
        );
        assert!(matches!(t.get(i), Err(TceError::IndexOutOfWindow { .. })));
    }
    assert!(matches!(
        t.put_batch(TceIndex(past.0 - 1), &[Tce(0x1003), Tce(0x2003)]),
        Err(TceError::RangeOutOfWindow { count: 2, .. })
    ));
    assert!(matches!(
        t.clear(g.first_index(), g.entries() + 1),
        Err(TceError::RangeOutOfWindow { .. })
    ));
    assert_eq!(t.allocated_bytes(), before);
    assert_eq!(t.count_mapped(), 0);
}

#[test]
fn lower_levels_are_allocated_on_first_write_only() {
    let g = two_level_1g_64k();
    let t: TceTable = TceTable::new(g, TableOptions::powernv()).unwrap();
    let top = g.top_bytes();
    assert_eq!((t.allocated_bytes(), t.allocated_leaves()), (top, 0));
    let i = TceIndex(g.first_index().0 + 5000);
    // Reads, translations, clears and exchanges with an empty entry never allocate.
    assert_eq!(t.get(i).unwrap(), Tce::EMPTY);
    assert!(t
        .translate(Iova((1 << 59) + (5000 << 16)), Access::Read)
        .is_err());
    assert_eq!(
        t.clear(g.first_index(), g.entries())
            .unwrap()
            .leaves_visited,
        0
    );
    assert_eq!(t.exchange(i, Tce::EMPTY).unwrap(), Tce::EMPTY);
    assert_eq!(t.allocated_bytes(), top);
    // The first write allocates exactly one leaf.
    t.set(i, Tce(0x4000_0003)).unwrap();
    assert_eq!(t.allocated_leaves(), 1);
    assert_eq!(t.allocated_bytes(), top + g.lower_level_bytes());
}

#[test]
fn five_level_table_allocates_one_path_per_write() {
    // The IODA2 rule never allows 5 levels (9 bits * 5 + 12 >= 55 even with 4K host
    // pages), so the general constructor builds one: 5 levels of 8 index bits.
    assert!(TableGeometry::ioda2(Iova(0), PageShift::K4, 1 << 52, 5, 12).is_err());
    let g = TableGeometry::new(Iova(0), PageShift::K4, 1 << 40, 5, 8).unwrap();
    assert_eq!(g.levels(), 5);
    let t: TceTable = TceTable::new(g, TableOptions::powernv()).unwrap();
    t.set(TceIndex((1 << 40) - 1), Tce(0x7000_0001)).unwrap();
    // One write = top + 4 lower levels on its path.
    assert_eq!(
        t.allocated_bytes(),
        g.top_bytes() + 4 * g.lower_level_bytes()
    );
    assert_eq!(t.allocated_leaves(), 1);
    assert_eq!(
        t.translate(Iova(((1 << 40) - 1) << 12 | 0x123), Access::Read),
        Ok(Hpa(0x7000_0123))
    );
}

#[test]
fn store_writes_without_killing_and_clearing_a_missing_level_allocates_nothing() {
    let kill = Arc::new(KillCounter::default());
    let t: TceTable<Hpa, Arc<KillCounter>> =
        TceTable::with_kill(two_level_1g_64k(), TableOptions::powernv(), kill.clone()).unwrap();
    let i = two_level_1g_64k().first_index();
    let bytes = t.allocated_bytes();
    t.store_no_kill(TceIndex(i.0 + 5000), Tce::EMPTY).unwrap();
    assert_eq!(t.allocated_bytes(), bytes);
    t.store_no_kill(i, Tce(0x1_0002)).unwrap();
    assert_eq!(t.get(i).unwrap(), Tce(0x1_0003), "write implies read");
    assert_eq!(kill.range_kills(), 0);
    assert!(matches!(
        t.store_no_kill(TceIndex(0), Tce(1)),
        Err(TceError::IndexOutOfWindow { .. })
    ));
}

#[test]
fn put_linear_maps_consecutive_pages_and_exclusive_clear_reports_them() {
    let kill = Arc::new(KillCounter::default());
    let t: TceTable<Hpa, Arc<KillCounter>> =
        TceTable::with_kill(two_level_1g_64k(), TableOptions::default(), kill.clone()).unwrap();
    let first = two_level_1g_64k().first_index();
    let at = TceIndex(first.0 + 8190);
    t.put_linear(at, 5, 0x10_0000, TcePerm::READ).unwrap();
    for k in 0..5 {
        assert_eq!(
            t.get(TceIndex(at.0 + k)).unwrap(),
            Tce((0x10_0000 + (k << 16)) | 1)
        );
    }
    assert_eq!(kill.range_kills(), 1);
    assert!(t
        .put_linear(TceIndex(first.0 + 16383), 2, 0, TcePerm::READ)
        .is_err());
    assert_eq!(
        t.get(TceIndex(first.0 + 16383)).unwrap(),
        Tce::EMPTY,
        "all or nothing"
    );
    let mut seen = Vec::new();
    let stats = t
        .clear_exclusive_with(first, 16384, |i, e| seen.push((i.0 - first.0, e.0)))
        .unwrap();
    assert_eq!(stats.cleared, 5);
    assert_eq!(seen[0], (8190, 0x10_0001));
    assert_eq!(t.count_mapped(), 0);
    t.put_linear(at, 5, 0x10_0000, TcePerm::WRITE).unwrap();
    let bytes = t.allocated_bytes();
    t.zero_exclusive(first, 16384).unwrap();
    assert_eq!(t.count_mapped(), 0);
    assert_eq!(t.allocated_bytes(), bytes, "zeroing allocates nothing");
    // Runs: two mappings of consecutive pages, one stray entry.
    t.put_linear(TceIndex(first.0 + 10), 4, 0x40_0000, TcePerm::NONE)
        .unwrap();
    t.put_linear(TceIndex(first.0 + 14), 3, 0x90_0000, TcePerm::NONE)
        .unwrap();
    t.set(TceIndex(first.0 + 9000), Tce(0x77_0000)).unwrap();
    let mut runs = Vec::new();
    let n = t
        .clear_exclusive_runs(first, 16384, |head, len| runs.push((head.0, len)))
        .unwrap();
    assert_eq!(n, 8);
    assert_eq!(runs, vec![(0x40_0000, 4), (0x90_0000, 3), (0x77_0000, 1)]);
    assert_eq!(t.count_mapped(), 0);
}

#[test]
fn exchange_returns_the_old_entry() {
    let t: TceTable = TceTable::new(two_level_1g_64k(), TableOptions::default()).unwrap();
    let i = two_level_1g_64k().first_index();
    assert_eq!(t.exchange(i, Tce(0x1_0001)).unwrap(), Tce::EMPTY);
    assert_eq!(t.exchange(i, Tce(0x2_0002)).unwrap(), Tce(0x1_0001));
    assert_eq!(t.exchange(i, Tce::EMPTY).unwrap(), Tce(0x2_0002));
    assert_eq!(t.get(i).unwrap().direction(), DmaDirection::None);
}

#[test]
fn clear_reports_every_old_entry_and_missing_levels_count_as_empty() {
    let g = two_level_1g_64k();
    let t: TceTable = TceTable::new(g, TableOptions::default()).unwrap();
    let f = g.first_index().0;
    t.set(TceIndex(f + 1), Tce(0x1_0001)).unwrap();
    t.set(TceIndex(f + 9000), Tce(0x2_0002)).unwrap();
    let mut seen = Vec::new();
    let stats = t
        .clear_with(g.first_index(), g.entries(), |i, old| seen.push((i, old)))
        .unwrap();
    assert_eq!(
        seen,
        [
            (TceIndex(f + 1), Tce(0x1_0001)),
            (TceIndex(f + 9000), Tce(0x2_0002))
        ]
    );
    assert_eq!(
        stats,
        ClearStats {
            cleared: 2,
            leaves_visited: 2
        }
    );
    assert_eq!(t.count_mapped(), 0);
}

#[test]
fn batched_put_writes_up_to_512_entries_and_refuses_more() {
    let g = two_level_1g_64k();
    let t: TceTable = TceTable::new(g, TableOptions::default()).unwrap();
    // Straddles a leaf boundary (8192 entries per leaf with 64K host pages).
    let first = TceIndex(g.first_index().0 + 8192 - 100);
    let tces: Vec<Tce> = (0..512).map(|k| Tce(((k + 1) << 16) | 1)).collect();
    t.put_batch(first, &tces).unwrap();
    assert_eq!(t.allocated_leaves(), 2);
    for (k, tce) in tces.iter().enumerate() {
        assert_eq!(t.get(TceIndex(first.0 + k as u64)).unwrap(), *tce);
    }
    let too_many = vec![Tce(0x1001); 513];
    assert_eq!(
        t.put_batch(first, &too_many),
        Err(TceError::BatchTooLarge { len: 513, max: 512 })
    );
}

#[test]
fn allocation_failure_is_an_error_and_writes_nothing() {
    let g = two_level_1g_64k();
    // Budget: the top level and one leaf.
    let opts = TableOptions {
        max_bytes: g.top_bytes() + g.lower_level_bytes(),
        ..TableOptions::default()
    };
    let t: TceTable = TceTable::new(g, opts).unwrap();
    let f = g.first_index().0;
    t.set(TceIndex(f), Tce(0x1001)).unwrap();
    let second_leaf = TceIndex(f + 8192);
    assert_eq!(
        t.set(second_leaf, Tce(0x2001)),
        Err(TceError::AllocFailed {
            bytes: g.lower_level_bytes()
        })
    );
    // A batch straddling into the missing leaf fails before writing its first half.
    let batch = vec![Tce(0x3001); 4];
    assert!(matches!(
        t.put_batch(TceIndex(f + 8190), &batch),
        Err(TceError::AllocFailed { .. })
    ));
    assert_eq!(t.get(TceIndex(f + 8190)).unwrap(), Tce::EMPTY);
    assert_eq!(t.count_mapped(), 1);
    // A top level over budget fails at creation.
    let tiny = TableOptions {
        max_bytes: 8,
        ..TableOptions::default()
    };
    assert!(matches!(
        TceTable::<Hpa>::new(g, tiny),
        Err(TceError::AllocFailed { .. })
    ));
}

#[test]
fn translate_says_why_it_faults() {
    let g = TableGeometry::flat(Iova(0x1000_0000), PageShift::K4, 4).unwrap();
    let t: TceTable = TceTable::new(g, TableOptions::default()).unwrap();
    let base = 0x1000_0000u64;
    t.set(TceIndex((base >> 12) + 1), Tce::new(0xAB000, TcePerm::READ))
        .unwrap();
    assert_eq!(
        t.translate(Iova(base - 1), Access::Read),
        Err(Fault::OutsideWindow {
            iova: Iova(base - 1)
        })
    );
    assert_eq!(
        t.translate(Iova(base + 0x4000), Access::Read),
        Err(Fault::OutsideWindow {
            iova: Iova(base + 0x4000)
        })
    );
    assert_eq!(
        t.translate(Iova(base + 0x10), Access::Read),
        Err(Fault::NoEntry {
            iova: Iova(base + 0x10),
            index: TceIndex(base >> 12)
        })
    );
    assert_eq!(
        t.translate(Iova(base + 0x1010), Access::Write),
        Err(Fault::Permission {
            iova: Iova(base + 0x1010),
            index: TceIndex((base >> 12) + 1),
            tce: Tce(0xAB001),
            access: Access::Write
        })
    );
    assert_eq!(
        t.translate(Iova(base + 0x1010), Access::Read),
        Ok(Hpa(0xAB010))
    );
}

#[test]
fn every_update_reports_its_range_to_the_kill_hook() {
    let g = two_level_1g_64k();
    let kills = Arc::new(KillCounter::default());
    let t: TceTable<Hpa, Arc<KillCounter>> =
        TceTable::with_kill(g, TableOptions::default(), kills.clone()).unwrap();
    let f = g.first_index();
    t.set(f, Tce(0x1001)).unwrap();
    t.exchange(f, Tce(0x2001)).unwrap();
    t.put_batch(f, &[Tce(0x3001); 10]).unwrap();
    t.fill(f, 20, Tce(0x4001)).unwrap();
    t.clear(f, 30).unwrap();
    assert_eq!(
        (kills.range_kills(), kills.entries_killed()),
        (5, 1 + 1 + 10 + 20 + 30)
    );
    // xchg_no_kill does not invalidate; the caller does, once.
    t.exchange_no_kill(f, Tce(0x5001)).unwrap();
    assert_eq!(kills.range_kills(), 5);
    t.kill(f, 1);
    t.kill_all();
    assert_eq!((kills.range_kills(), kills.window_kills()), (6, 1));
}

#[test]
fn mapped_runs_coalesce_contiguous_pages_with_the_same_permission() {
    let g = TableGeometry::flat(Iova(0), PageShift::K4, 64).unwrap();
    let t: TceTable = TceTable::new(g, TableOptions::default()).unwrap();
    for k in 0..8u64 {
        t.set(TceIndex(k), Tce((0x10_0000 + (k << 12)) | 3))
            .unwrap();
    }
    t.set(TceIndex(8), Tce(0x90_0000 | 1)).unwrap();
    t.set(TceIndex(20), Tce(0x91_0000 | 1)).unwrap();
    let runs = t.mapped_runs();
    assert_eq!(runs.len(), 3);
    assert_eq!((runs[0].first, runs[0].count), (TceIndex(0), 8));
    assert_eq!((runs[1].first, runs[1].count), (TceIndex(8), 1));
    assert_eq!((runs[2].first, runs[2].count), (TceIndex(20), 1));
}

#[test]
fn one_gigabyte_pages_and_sixteen_gigabyte_pages_translate() {
    for ps in [PageShift::G1, PageShift::G16] {
        let g = TableGeometry::flat(Iova(0), ps, 4).unwrap();
        let t: TceTable = TceTable::new(g, TableOptions::default()).unwrap();
        let page = ps.size();
        t.set(TceIndex(2), Tce((5 * page) | 3)).unwrap();
        assert_eq!(
            t.translate(Iova(2 * page + 77), Access::Write),
            Ok(Hpa(5 * page + 77))
        );
    }
}

#[test]
fn a_translator_gives_the_same_answers_as_translate() {
    for levels in [1, 2, 3] {
        // 3 levels of 64K pages break the 55-bit rule on a 64K host: use a 4K host there.
        let host = if levels == 3 { 12 } else { K64_HOST };
        let g = TableGeometry::ioda2(Iova(1 << 59), PageShift::K64, 1 << 34, levels, host).unwrap();
        let t: TceTable = TceTable::new(g, TableOptions::default()).unwrap();
        let first = g.first_index();
        t.set(TceIndex(first.0 + 3), Tce::new(0x7_0000, TcePerm::READ))
            .unwrap();
        t.set(
            TceIndex(first.0 + 200_000),
            Tce::new(0x9_0000, TcePerm::WRITE),
        )
        .unwrap();
        let tr = t.translator();
        for iova in [
            (1u64 << 59) + 3 * 65536 + 12,
            (1 << 59) + 200_000 * 65536,
            (1 << 59) + 5 * 65536,
            (1 << 59) - 1,
            (1 << 59) + (1 << 34),
        ] {
            for access in [Access::Read, Access::Write] {
                assert_eq!(
                    tr.translate(Iova(iova), access),
                    t.translate(Iova(iova), access)
                );
            }
        }
    }
}

#[test]
fn a_big_endian_batch_is_stored_as_given_with_write_implies_read_applied() {
    let g = TableGeometry::ioda2(Iova(0), PageShift::K4, 1 << 24, 1, 12).unwrap();
    for (options, expect_w) in [
        (TableOptions::default(), 0x2002u64),
        (TableOptions::powernv(), 0x2003),
    ] {
        let t: TceTable = TceTable::new(g, options).unwrap();
        let entries = [0x1003u64, 0x2002, 0x3001, 0];
        let be: Vec<u8> = entries.iter().flat_map(|e| e.to_be_bytes()).collect();
        t.put_batch_be(TceIndex(4), &be).unwrap();
        let got: Vec<u64> = (4..8).map(|i| t.get(TceIndex(i)).unwrap().0).collect();
        assert_eq!(got, vec![0x1003, expect_w, 0x3001, 0]);
        assert!(
            t.put_batch_be(TceIndex(0), &be[..7]).is_err(),
            "not whole entries"
        );
        assert!(
            t.put_batch_be(TceIndex(0), &vec![0u8; 8 * 513]).is_err(),
            "over 512"
        );
        let full: Vec<u8> = (0..512u64)
            .flat_map(|k| ((k << 12) | 1).to_be_bytes())
            .collect();
        t.put_batch_be(TceIndex(100), &full).unwrap();
        assert_eq!(
            t.get(TceIndex(611)).unwrap(),
            Tce((511 << 12) | 1),
            "512 is allowed"
        );
    }
}

#[test]
fn a_batch_across_leaves_allocates_the_leaves_it_touches_and_may_end_the_window() {
    let g = two_level_1g_64k();
    let f = g.first_index().0;
    let leaf = 1u64 << g.level_bits();
    let t: TceTable = TceTable::new(g, TableOptions::default()).unwrap();
    let empty = t.allocated_bytes();
    let tces: Vec<Tce> = (0..64u64).map(|k| Tce((k << 16) | 3)).collect();
    // Ends exactly on the boundary of the second leaf: two leaves, not three.
    t.put_batch(TceIndex(f + 2 * leaf - 64), &tces).unwrap();
    t.put_batch(TceIndex(f + leaf - 32), &tces).unwrap();
    let two = t.allocated_bytes() - empty;
    assert_eq!(two, 2 * leaf * 8, "the two leaves the batches touch");
    // Ends exactly at the end of the window, across its last two leaves.
    let last = g.entries();
    assert_eq!(last % leaf, 0);
    t.put_batch(TceIndex(f + last - 32), &tces[..32]).unwrap();
    t.put_batch(TceIndex(f + last - leaf - 16), &tces[..32])
        .unwrap();
    assert_eq!(t.get(TceIndex(f + last - 1)).unwrap(), tces[31]);
    assert_eq!(t.get(TceIndex(f + last - leaf + 15)).unwrap(), tces[31]);
}

/// The reference for the run-reporting clears: entry values in order, grouped into runs
/// of consecutive pages (an empty entry ends a run).
fn plain_runs(values: impl Iterator<Item = u64>, page: u64) -> Vec<(u64, u64)> {
    let mut runs: Vec<(u64, u64)> = Vec::new();
    let mut next = None;
    for v in values {
        if v == 0 {
            next = None;
            continue;
        }
        match (next, runs.last_mut()) {
            (Some(x), Some(last)) if x == v => last.1 += 1,
            _ => runs.push((v, 1)),
        }
        next = Some(v + page);
    }
    runs
}

proptest::proptest! {
    /// `clear_exclusive_runs` against a plain walk: the same runs, in order, for mappings
    /// of any length at any offset (the eight-entry fast path and its fall-backs, runs that
    /// cross a leaf, runs that end inside a chunk, an address that follows a run's last
    /// page without belonging to it).
    #[test]
    fn clear_runs_match_a_plain_walk(
        maps in proptest::collection::vec((0u64..16384, 1u64..40, 0u64..64), 0..12),
        strays in proptest::collection::vec(0u64..16384, 0..6),
        dense in proptest::collection::vec((0u64..16384, 1u64..40), 0..3),
        holes in proptest::collection::vec(0u64..16384, 0..6),
        resumes in proptest::collection::vec((0u64..16300, 1u64..20, 1u64..30), 0..3),
    ) {
        let g = two_level_1g_64k();
        let t: TceTable = TceTable::new(g, TableOptions::default()).unwrap();
        let f = g.first_index().0;
        for (at, len, page) in &maps {
            let len = (*len).min(16384 - at);
            t.put_linear(TceIndex(f + at), len, (page + 1) << 20, TcePerm::NONE).unwrap();
        }
        for s in &strays {
            t.set(TceIndex(f + s), Tce((s + 1) << 16)).unwrap();
        }
        // Blocks of entries that are all mapped but none follows the one before.
        for (at, len) in &dense {
            for i in *at..(at + len).min(16384) {
                t.set(TceIndex(f + i), Tce(((i * 7919) % 1000 + 1) << 17)).unwrap();
            }
        }
        for h in &holes {
            t.set(TceIndex(f + h), Tce::EMPTY).unwrap();
        }
        // A mapping, an empty entry, then a mapping whose addresses continue the first's:
        // two runs, not one.
        for (at, a, b) in &resumes {
            let addr = (at + 1) << 24;
            t.put_linear(TceIndex(f + at), *a, addr, TcePerm::NONE).unwrap();
            t.set(TceIndex(f + at + a), Tce::EMPTY).unwrap();
            let b = (*b).min(16384 - (at + a + 1));
            t.put_linear(TceIndex(f + at + a + 1), b, addr + (a << 16), TcePerm::NONE)
                .unwrap();
        }
        let expect = plain_runs((0..16384).map(|i| t.get(TceIndex(f + i)).unwrap().0), 1 << 16);
        // The paired clear of a same-geometry copy (and of a flat one, the fall-back)
        // must report the same runs and empty both tables.
        let same: TceTable = TceTable::new(g, TableOptions::default()).unwrap();
        let flat_g = TableGeometry::flat(g.bus_offset(), g.page_shift(), g.entries()).unwrap();
        let flat: TceTable = TceTable::new(flat_g, TableOptions::default()).unwrap();
        let u2: TceTable = TceTable::new(g, TableOptions::default()).unwrap();
        let u3: TceTable = TceTable::new(g, TableOptions::default()).unwrap();
        for i in 0..16384u64 {
            let v = t.get(TceIndex(f + i)).unwrap();
            if v.0 != 0 {
                for x in [&u2, &u3] {
                    x.set(TceIndex(f + i), v).unwrap();
                }
            }
            // The partners hold entries where the user addresses do not, too.
            if v.0 != 0 || i % 5000 == 7 {
                same.set(TceIndex(f + i), Tce(0x1_0003)).unwrap();
                flat.set(TceIndex(f + i), Tce(0x1_0003)).unwrap();
            }
        }
        let mut runs = Vec::new();
        let n = t.clear_exclusive_runs(g.first_index(), 16384, |h, l| runs.push((h.0, l))).unwrap();
        proptest::prop_assert_eq!(n, expect.iter().map(|r| r.1).sum::<u64>());
        proptest::prop_assert_eq!(&runs, &expect);
        proptest::prop_assert_eq!(t.count_mapped(), 0);
        for (u, partner) in [(&u2, &same), (&u3, &flat)] {
            let mut runs = Vec::new();
            let n = u
                .clear_exclusive_runs_paired(partner, g.first_index(), 16384, |h, l| runs.push((h.0, l)))
                .unwrap();
            proptest::prop_assert_eq!(n, expect.iter().map(|r| r.1).sum::<u64>());
            proptest::prop_assert_eq!(&runs, &expect);
            proptest::prop_assert_eq!(u.count_mapped(), 0);
            proptest::prop_assert_eq!(partner.count_mapped(), 0);
        }
    }
}

proptest::proptest! {
    /// The paired clear over part of a window: runs as a plain walk over that part finds
    /// them, both tables emptied there and untouched elsewhere.
    #[test]
    fn paired_clear_of_a_sub_range(
        maps in proptest::collection::vec((0u64..16384, 1u64..9000, 0u64..64), 1..6),
        lo in 0u64..16384,
        n in 0u64..16384,
    ) {
        let g = two_level_1g_64k();
        let f = g.first_index().0;
        let n = n.min(16384 - lo);
        let uas: TceTable = TceTable::new(g, TableOptions::default()).unwrap();
        let tces: TceTable = TceTable::new(g, TableOptions::default()).unwrap();
        for (at, len, page) in &maps {
            let len = (*len).min(16384 - at);
            uas.put_linear(TceIndex(f + at), len, (page + 1) << 24, TcePerm::NONE).unwrap();
            tces.put_linear(TceIndex(f + at), len, 1 << 20, TcePerm::READ).unwrap();
        }
        let before: Vec<(u64, u64)> = (0..16384)
            .map(|i| (uas.get(TceIndex(f + i)).unwrap().0, tces.get(TceIndex(f + i)).unwrap().0))
            .collect();
        let expect = plain_runs(before[lo as usize..(lo + n) as usize].iter().map(|e| e.0), 1 << 16);
        let mut runs = Vec::new();
        uas.clear_exclusive_runs_paired(&tces, TceIndex(f + lo), n, |h, l| runs.push((h.0, l)))
            .unwrap();
        proptest::prop_assert_eq!(runs, expect);
        for i in 0..16384u64 {
            let inside = i >= lo && i < lo + n;
            let now = (uas.get(TceIndex(f + i)).unwrap().0, tces.get(TceIndex(f + i)).unwrap().0);
            proptest::prop_assert_eq!(now, if inside { (0, 0) } else { before[i as usize] });
        }
    }
}

#[test]
fn every_reader_of_a_write_implies_read_table_sees_read_with_write() {
    // Entries written with write alone (a batch, a fill, a linear map): whatever reads them
    // back (get, translate, a clear's old entries, the runs of a paired clear) sees read
    // added, as the kernel's table holds them.
    let g = TableGeometry::new(Iova(0), PageShift::K4, 4096, 2, 6).unwrap();
    let t: TceTable = TceTable::new(g, TableOptions::powernv()).unwrap();
    let partner: TceTable = TceTable::new(g, TableOptions::default()).unwrap();
    let batch: Vec<Tce> = (0..20u64).map(|k| Tce(((0x100 + k) << 12) | 2)).collect();
    t.put_batch(TceIndex(60), &batch).unwrap();
    t.fill(TceIndex(100), 3, Tce(0x7000 | 2)).unwrap();
    t.put_linear(TceIndex(200), 12, 0x40_0000, TcePerm::WRITE)
        .unwrap();
    assert_eq!(t.get(TceIndex(79)).unwrap(), Tce((0x113 << 12) | 3));
    assert_eq!(
        t.translate(Iova((61 << 12) | 8), Access::Read),
        Ok(Hpa((0x101 << 12) | 8))
    );
    let mut mapped = Vec::new();
    t.for_each_entry(TceIndex(100), 3, |i, e| mapped.push((i.0, e.0)))
        .unwrap();
    assert_eq!(mapped, vec![(100, 0x7003), (101, 0x7003), (102, 0x7003)]);
    let mut old = Vec::new();
    t.clear_with(TceIndex(100), 2, |_, e| old.push(e.0))
        .unwrap();
    assert_eq!(old, vec![0x7003, 0x7003]);
    // Paired: the runs reported are this table's, read added; 20 + 12 entries in two runs
    // (the batch's addresses continue page by page, the linear map's too).
    partner.fill(TceIndex(60), 20, Tce(0x9003)).unwrap();
    let mut runs = Vec::new();
    let cleared = t
        .clear_exclusive_runs_paired(&partner, TceIndex(60), 200, |head, len| {
            runs.push((head.0, len))
        })
        .unwrap();
    assert_eq!(cleared, 20 + 1 + 12);
    assert_eq!(
        runs,
        vec![(0x100 << 12 | 3, 20), (0x7003, 1), (0x40_0000 | 3, 12)]
    );
    assert_eq!(partner.count_mapped(), 0);
}

#[test]
fn a_table_without_write_implies_read_reports_its_entries_as_stored() {
    // The other side of the test above: no read is added anywhere.
    let g = TableGeometry::new(Iova(0), PageShift::K4, 4096, 2, 6).unwrap();
    let t: TceTable = TceTable::new(g, TableOptions::default()).unwrap();
    let partner: TceTable = TceTable::new(g, TableOptions::default()).unwrap();
    t.put_linear(TceIndex(10), 20, 0x40_0000, TcePerm::WRITE)
        .unwrap();
    t.put_batch(TceIndex(40), &[Tce(0x9002)]).unwrap();
    assert_eq!(t.get(TceIndex(40)).unwrap(), Tce(0x9002));
    assert!(t.translate(Iova(40 << 12), Access::Read).is_err());
    partner.fill(TceIndex(0), 64, Tce(0x5003)).unwrap();
    let mut runs = Vec::new();
    t.clear_exclusive_runs_paired(&partner, TceIndex(0), 64, |head, len| {
        runs.push((head.0, len))
    })
    .unwrap();
    assert_eq!(runs, vec![(0x40_0000 | 2, 20), (0x9002, 1)]);
    assert_eq!(partner.count_mapped(), 0);
    t.put_batch(TceIndex(40), &[Tce(0x9002)]).unwrap();
    let mut runs = Vec::new();
    t.clear_exclusive_runs(TceIndex(0), 64, |head, len| runs.push((head.0, len)))
        .unwrap();
    assert_eq!(runs, vec![(0x9002, 1)]);
}

#[test]
fn run_reports_end_where_addresses_wrap_past_the_top() {
    // Addresses that wrap past 2^64 do not continue a run: the address after the top page
    // is 0, an empty entry. (a) the wrap between chunks of eight: entry 7 is the top page,
    // entry 8 is 0, entries 9..=15 are 1 to 7 pages; (b) inside a chunk: the run reaches
    // the top at entry 27 and entry 28 is 0; (c) a chunk that starts exactly seven pages
    // below the top with the run open: entries 40..=46 reach the top and entry 47, where
    // the next address would be 0, is empty (the last start from which eight addresses
    // would wrap, so the chunk must not be taken as a whole).
    let g = TableGeometry::flat(Iova(0), PageShift::K4, 64).unwrap();
    let t: TceTable = TceTable::new(g, TableOptions::default()).unwrap();
    let page = 0x1000u64;
    let top = 0u64.wrapping_sub(page);
    let mut e = vec![Tce::EMPTY; 64];
    e[7] = Tce(top);
    for k in 1..8u64 {
        e[8 + k as usize] = Tce(k * page);
    }
    for (k, i) in (23..=27).enumerate() {
        e[i] = Tce(top - (4 - k as u64) * page);
    }
    for k in 1..4u64 {
        e[28 + k as usize] = Tce(k * page);
    }
    for k in 0..8u64 {
        e[39 + k as usize] = Tce(top - (7 - k) * page);
    }
    t.put_batch(TceIndex(0), &e).unwrap();
    let mut runs = Vec::new();
    let cleared = t
        .clear_exclusive_runs(TceIndex(0), 64, |head, len| runs.push((head.0, len)))
        .unwrap();
    assert_eq!(
        runs,
        vec![
            (top, 1),
            (page, 7),
            (top - 4 * page, 5),
            (page, 3),
            (top - 7 * page, 8)
        ]
    );
    assert_eq!(cleared, 1 + 7 + 5 + 3 + 8);
}
