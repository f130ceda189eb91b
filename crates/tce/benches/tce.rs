//! TCE engine hot paths beside baselines measured in the same run: translate (1 and 3
//! levels, 2^20 and 2^26 entries) vs a random load from a `Vec<u64>`; batched put of 512
//! vs the legal limit, 512 relaxed big-endian atomic stores (and, for information only,
//! vs a `memcpy`, which would be a data race on a table devices read); exchange vs
//! `AtomicU64::swap`.
//!
//! `cargo bench -p spapr-tce --bench tce`

use criterion::Criterion;
use spapr_benchkit::{Comparison, XorShift};
use spapr_tce::*;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

fn filled_table(entries_shift: u32, levels: u32) -> TceTable {
    let window = 1u64 << (entries_shift + 12);
    let g = TableGeometry::ioda2(Iova(0), PageShift::K4, window, levels, 16).expect("geometry");
    let t: TceTable = TceTable::new(g, TableOptions::powernv()).expect("table");
    let mut batch = vec![Tce::EMPTY; MAX_BATCH];
    let n = 1u64 << entries_shift;
    let mut i = 0;
    while i < n {
        for (k, e) in batch.iter_mut().enumerate() {
            *e = Tce(((i + k as u64) << 12) | 3);
        }
        t.put_batch(TceIndex(i), &batch).expect("fill");
        i += MAX_BATCH as u64;
    }
    t
}

fn translate_pair(
    c: &mut Criterion,
    cmp: &mut Comparison,
    entries_shift: u32,
    levels: u32,
    target: f64,
) {
    let table = filled_table(entries_shift, levels);
    let n = 1u64 << entries_shift;
    let plain: Vec<u64> = (0..n).map(|i| (i << 12) | 3).collect();
    let mask = n - 1;
    cmp.pair(
        c,
        &format!("translate/{levels}-level/2^{entries_shift}"),
        target,
        "Vec<u64> random load",
        |iters| {
            let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
            let start = Instant::now();
            let mut acc = 0u64;
            for _ in 0..iters {
                let r = rng.next_u64();
                acc = acc.wrapping_add(plain[(r & mask) as usize] & !0xfff | (r >> 52));
            }
            black_box(acc);
            start.elapsed()
        },
        |iters| {
            let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
            let start = Instant::now();
            let mut acc = 0u64;
            let tr = table.translator();
            for _ in 0..iters {
                let r = rng.next_u64();
                let iova = Iova(((r & mask) << 12) | (r >> 52));
                if let Ok(h) = tr.translate(iova, Access::Read) {
                    acc = acc.wrapping_add(h.0);
                }
            }
            black_box(acc);
            start.elapsed()
        },
    );
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let mut cmp = Comparison::new();

    translate_pair(&mut c, &mut cmp, 20, 1, 0.8);
    translate_pair(&mut c, &mut cmp, 20, 3, 0.5);
    translate_pair(&mut c, &mut cmp, 26, 1, 0.8);
    translate_pair(&mut c, &mut cmp, 26, 3, 0.5);

    // Batched put of 512 entries: the engine's default entries, and PowerNV's (write implies
    // read), each against 512 relaxed byte-swapped stores (the legal limit), then the plain
    // put against a memcpy for information.
    let src: Vec<Tce> = (0..MAX_BATCH as u64).map(|k| Tce((k << 16) | 3)).collect();
    let src_raw: Vec<u64> = src.iter().map(|t| t.0).collect();
    let slots = 64u64;
    let legal_dst = spapr_benchkit::legal::slots(MAX_BATCH * slots as usize);
    for (name, options) in [
        ("put_batch/512", TableOptions::default()),
        ("put_batch/512 write-implies-read", TableOptions::powernv()),
    ] {
        let g = TableGeometry::ioda2(Iova(0), PageShift::K64, 1 << 40, 2, 16).expect("geometry");
        let table: TceTable = TceTable::new(g, options).expect("table");
        cmp.pair(
            &mut c,
            name,
            0.9,
            "512 relaxed BE stores",
            |iters| {
                let start = Instant::now();
                for k in 0..iters {
                    let at = ((k % slots) as usize) * MAX_BATCH;
                    spapr_benchkit::legal::store_be(
                        &legal_dst[at..at + MAX_BATCH],
                        black_box(&src_raw),
                    );
                }
                start.elapsed()
            },
            |iters| {
                let start = Instant::now();
                for k in 0..iters {
                    let first = TceIndex((k % slots) * MAX_BATCH as u64);
                    table.put_batch(first, black_box(&src)).expect("put");
                }
                start.elapsed()
            },
        );
    }
    {
        let g = TableGeometry::ioda2(Iova(0), PageShift::K64, 1 << 40, 2, 16).expect("geometry");
        let table: TceTable = TceTable::new(g, TableOptions::default()).expect("table");
        let (mut dst_buf, at) = spapr_benchkit::copy_destination(&src_raw);
        let dst = &mut dst_buf[at..at + MAX_BATCH];
        cmp.pair(
            &mut c,
            "put_batch/512 (information)",
            0.0,
            "copy 512 u64 (a data race)",
            |iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    dst.copy_from_slice(black_box(&src_raw));
                    black_box(&mut *dst);
                }
                start.elapsed()
            },
            |iters| {
                let start = Instant::now();
                for k in 0..iters {
                    let first = TceIndex((k % slots) * MAX_BATCH as u64);
                    table.put_batch(first, black_box(&src)).expect("put");
                }
                start.elapsed()
            },
        );
    }

    // Exchange vs AtomicU64::swap.
    {
        let g = TableGeometry::ioda2(Iova(0), PageShift::K64, 1 << 30, 1, 16).expect("geometry");
        let table: TceTable = TceTable::new(g, TableOptions::powernv()).expect("table");
        let plain: Vec<AtomicU64> = (0..g.entries()).map(|_| AtomicU64::new(0)).collect();
        let mask = g.entries() - 1;
        cmp.pair(
            &mut c,
            "exchange",
            0.8,
            "AtomicU64::swap",
            |iters| {
                let start = Instant::now();
                for k in 0..iters {
                    black_box(plain[(k & mask) as usize].swap((k << 16) | 3, Ordering::AcqRel));
                }
                start.elapsed()
            },
            |iters| {
                let start = Instant::now();
                for k in 0..iters {
                    let _ = black_box(table.exchange(TceIndex(k & mask), Tce((k << 16) | 3)));
                }
                start.elapsed()
            },
        );
    }

    cmp.report();
    c.final_summary();
}
