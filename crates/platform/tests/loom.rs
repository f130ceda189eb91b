//! Loom models of the allocator's hand-over (kernel.md 2.9): `iommu_take_ownership` on one
//! CPU against `iommu_range_alloc` on another. They must not both miss each other: either
//! the allocation fails (or is given back), or the take sees it and fails with -EBUSY.
//! And of the EEH DMA gate against a freeze or a PHB fence (the EEH chain's locks are
//! loom's under `cfg(loom)`): no false evidence, and a stop is seen by the next DMA. And
//! of the PHB's TCE cache against range kills from two threads on one CPU slot. Run
//! with `RUSTFLAGS="--cfg loom" cargo test -p spapr-platform --test loom --release`.
#![cfg(loom)]

use loom::thread;
use spapr_platform::{DmaLimits, EntryLimits, TceAllocator};
use std::sync::Arc;

/// `iommu_take_ownership` on this thread against `alloc` of one page on another: never
/// both succeed, and a refused take leaves the table the kernel's.
fn take_against_alloc(alloc: fn(&TceAllocator) -> Result<u64, iommu_core::Errno>) {
    loom::model(move || {
        let a = Arc::new(TceAllocator::new(64, 12, 1 << 20, (0, 0)));
        let cpu = {
            let a = a.clone();
            thread::spawn(move || alloc(&a))
        };
        let took = a.take_ownership();
        let got = cpu.join().unwrap();
        assert!(
            !(took.is_ok() && got.is_ok()),
            "the user took the table while the kernel mapped entry {got:?}"
        );
        if took.is_err() {
            // The take saw the mapping (or lost to nothing): the kernel keeps its table.
            assert!(!a.saturated());
        } else {
            // Taken: every bit is set, none absorbed and given back.
            assert!((0..64).all(|i| a.is_set(i)), "a bit clear in a taken table");
        }
    });
}

#[test]
fn take_ownership_and_a_concurrent_alloc_never_both_succeed() {
    take_against_alloc(|a| a.alloc(1, 0, None).map(|x| x.entry));
}

/// The one-page fast path (`alloc_one`, what `dma_map_page` of one page takes) against the
/// take: the same two-sided check of `owned` around its single `lock or`.
#[test]
fn take_ownership_and_a_concurrent_one_page_alloc_never_both_succeed() {
    take_against_alloc(|a| a.alloc_one(0, None, a.entry_limits(DmaLimits::NONE)));
}

/// A stale mapping CPU (it read `owned` before the take) against a whole take and release:
/// the reserved page 0 is never handed out and stays reserved, and an entry the CPU keeps
/// is still allocated in the released bitmap. `release_ownership` once zeroed the bitmap and
/// then re-applied the reservations, a window in which page 0 could be claimed (and its
/// reservation given back with the claim); and the take once scanned and then saturated
/// with plain stores, which absorbed a claim landing in between (kept after the release).
/// After a successful take, every bit is set.
#[test]
fn a_one_page_alloc_across_a_take_and_release_keeps_the_reservations() {
    // A take and a release touch every word, summary and hint: bound the preemptions
    // (two are enough for the window this checks).
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(2);
    b.check(|| {
        // A window at bus address 0: entry 0 is reserved.
        let a = Arc::new(TceAllocator::new(64, 12, 0, (0, 0)));
        assert!(a.is_set(0));
        let limits = a.entry_limits(DmaLimits::NONE);
        let cpu = {
            let a = a.clone();
            thread::spawn(move || a.alloc_one(0, None, limits))
        };
        if a.take_ownership().is_ok() {
            a.release_ownership();
        }
        let got = cpu.join().unwrap();
        assert!(a.is_set(0), "the reservation of page 0 was lost");
        if let Ok(e) = got {
            assert_ne!(e, 0, "page 0 handed out");
            assert!(a.is_set(e), "entry {e} kept but free in the bitmap");
        }
    });
}

/// A table of `size` entries at bus address 1 MiB (no page 0 reserved), its limits, and a
/// thread running `f` on it as another CPU.
fn on_another_cpu<T: Send + 'static>(
    size: u64,
    f: fn(&TceAllocator, EntryLimits) -> T,
) -> (Arc<TceAllocator>, EntryLimits, thread::JoinHandle<T>) {
    let a = Arc::new(TceAllocator::new(size, 12, 1 << 20, (0, 0)));
    let limits = a.entry_limits(DmaLimits::NONE);
    let other = {
        let a = a.clone();
        thread::spawn(move || f(&a, limits))
    };
    (a, limits, other)
}

/// A 64-entry table, its limits, and a thread taking one page by the fast path from CPU
/// 0's pool.
fn one_page_on_another_cpu() -> (
    Arc<TceAllocator>,
    EntryLimits,
    thread::JoinHandle<Result<u64, iommu_core::Errno>>,
) {
    on_another_cpu(64, |a, limits| a.alloc_one(0, None, limits))
}

/// Adds `entries` to what the winners hold: none may be held already.
fn hold(held: &mut Vec<u64>, entries: impl IntoIterator<Item = u64>) {
    for e in entries {
        assert!(!held.contains(&e), "entry {e} handed out twice");
        held.push(e);
    }
}

/// A run claim's outcome: a winner holds `[z, z + n)` and its handle ends after it; a
/// loser leaves its handle at 0.
fn hold_run(held: &mut Vec<u64>, run: Option<u64>, handle: u64, n: u64) {
    match run {
        Some(z) => {
            assert_eq!(handle, z + n);
            hold(held, z..z + n);
        }
        None => assert_eq!(handle, 0, "a declined run claim moved its handle"),
    }
}

/// Every set bit of the first `size` belongs to a winner, and every winner's is set: a
/// loser gave back exactly its own bits.
fn assert_set_exactly(a: &TceAllocator, size: u64, held: &[u64]) {
    for i in 0..size {
        assert_eq!(a.is_set(i), held.contains(&i), "entry {i}");
    }
}

/// Two CPUs of one pool take one page each by the fast path from the same hint: never the
/// same entry (a lost `lock or` race falls back to the full search).
#[test]
fn two_one_page_allocs_from_one_hint_get_two_entries() {
    loom::model(|| {
        let (a, limits, other) = one_page_on_another_cpu();
        let mine = a.alloc_one(0, None, limits).unwrap();
        let theirs = other.join().unwrap().unwrap();
        assert_ne!(mine, theirs, "one entry handed out twice");
        assert!(a.is_set(mine) && a.is_set(theirs));
    });
}

/// The run claim of a one-page scatter list (`alloc_one_run`, one `lock or` for several
/// entries) against the take: the same two-sided check of `owned` around the claim.
#[test]
fn take_ownership_and_a_concurrent_run_claim_never_both_succeed() {
    take_against_alloc(|a| {
        a.alloc_one_run(3, 0, &mut 0, a.entry_limits(DmaLimits::NONE))
            .ok_or(iommu_core::Errno::Enomem)
    });
}

/// A run claim racing a one-page claim from the same hint: no entry is handed out twice,
/// and a claim that lost gives back exactly its own bits (nothing else changes): every
/// set bit belongs to a winner.
#[test]
fn a_run_claim_and_a_one_page_claim_from_one_hint_share_no_entry() {
    loom::model(|| {
        let (a, limits, other) = one_page_on_another_cpu();
        let mut handle = 0;
        let run = a.alloc_one_run(4, 0, &mut handle, limits);
        let one = other.join().unwrap().unwrap();
        let mut held = vec![one];
        hold_run(&mut held, run, handle, 4);
        assert_set_exactly(&a, 64, &held);
    });
}

/// Two scatter lists from two CPUs of one pool claim runs from the same hint: at most one
/// claim of the same entries wins, the loser gives back exactly its own bits and leaves its
/// handle alone, and every set bit belongs to a winner.
#[test]
fn two_run_claims_from_one_hint_share_no_entry() {
    loom::model(|| {
        let (a, limits, other) = on_another_cpu(64, |a, limits| {
            let mut h = 0;
            (a.alloc_one_run(3, 0, &mut h, limits), h)
        });
        let mut h = 0;
        let mine = (a.alloc_one_run(3, 0, &mut h, limits), h);
        let theirs = other.join().unwrap();
        let mut held = Vec::new();
        for (run, handle) in [mine, theirs] {
            hold_run(&mut held, run, handle, 3);
        }
        assert_set_exactly(&a, 64, &held);
    });
}

/// The take against a run claim in the second bitmap word of a 128-entry table: the take
/// saturates word 0 first, so when it finds the claim it must restore word 0 (and the
/// claim, if it came second, must fail on the saturated word). Never both; a refused take
/// leaves exactly the claim's bits set.
#[test]
fn take_ownership_and_a_run_claim_in_the_second_word_never_both_succeed() {
    loom::model(|| {
        let (a, _, cpu) = on_another_cpu(128, |a, limits| a.alloc_one_run(2, 0, &mut 70, limits));
        let took = a.take_ownership();
        let run = cpu.join().unwrap();
        assert!(!(took.is_ok() && run.is_some()), "both won: run {run:?}");
        if took.is_ok() {
            assert!(
                (0..128).all(|i| a.is_set(i)),
                "a bit clear in a taken table"
            );
        } else {
            assert!(!a.saturated());
            let held: Vec<u64> = run.map_or(Vec::new(), |z| vec![z, z + 1]);
            assert_set_exactly(&a, 128, &held);
        }
    });
}

/// A claim by the full search that spans two bitmap words ([60, 68) from a scatter handle)
/// against a one-page claim of entry 64 in the second word: a claim that finds a bit taken
/// gives back its bits in both words and searches on; no entry is handed out twice and
/// every set bit belongs to a winner.
#[test]
fn a_claim_across_two_words_and_a_one_page_claim_share_no_entry() {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(3);
    b.check(|| {
        let (a, _, other) = on_another_cpu(128, |a, limits| a.alloc_one(0, Some(&mut 64), limits));
        let wide = a.alloc(8, 0, Some(&mut 60)).map(|x| x.entry);
        let one = other.join().unwrap().unwrap();
        let mut held = vec![one];
        if let Ok(z) = wide {
            hold(&mut held, z..z + 8);
        }
        assert_set_exactly(&a, 128, &held);
    });
}

#[test]
fn take_ownership_and_a_concurrent_free_leave_the_table_consistent() {
    loom::model(|| {
        let a = Arc::new(TceAllocator::new(64, 12, 1 << 20, (0, 0)));
        let x = a.alloc(1, 0, None).unwrap();
        let cpu = {
            let a = a.clone();
            thread::spawn(move || a.free(x.entry, 1))
        };
        let took = a.take_ownership();
        cpu.join().unwrap().unwrap();
        match took {
            // Taken after the free: nothing can be allocated any more.
            Ok(()) => assert!(a.alloc(1, 1, None).is_err()),
            // Taken before the free landed: refused, the table stays the kernel's.
            Err(_) => assert!(!a.saturated() && a.alloc(1, 1, None).is_ok()),
        }
    });
}

/// The EEH gate against a freeze or a PHB fence on another CPU: a DMA either is refused
/// or is served, and one served never counts as served on a frozen PE (a stop while it
/// was in flight is not its fault); once the stop is in, the next DMA is refused. The
/// machine is booted inside the model so that the EEH chain's locks are loom's.
#[test]
fn the_dma_gate_against_a_freeze_and_a_fence() {
    use spapr_platform::{PowerNv, PowerNvConfig};
    use spapr_tce::{Access, DmaDirection};
    for fence in [false, true] {
        // Booting touches the allocator's loom atomics too: bound the preemptions (the
        // gate against the stop is two locks deep) and allow the boot's branches.
        let mut b = loom::model::Builder::new();
        b.preemption_bound = Some(2);
        b.max_branches = 1 << 20;
        b.check(move || {
            let m = Arc::new(PowerNv::booted(PowerNvConfig::seed()).unwrap());
            m.env().set_eeh(true);
            let nic = m.device("nic0").unwrap();
            m.bind_driver(nic, "ixgbe").unwrap();
            let buf = m
                .driver_dma_alloc(nic, 4096, DmaDirection::Bidirectional)
                .unwrap()
                .dma;
            let other = {
                let m = m.clone();
                thread::spawn(move || {
                    if fence {
                        m.phbs()[0].eeh_fence();
                    } else {
                        let _ = m.device_translate(nic, 0xfff0_0000, Access::Read);
                    }
                })
            };
            let _ = m.device_translate(nic, buf, Access::Read);
            other.join().unwrap();
            let pe = m.pe_of(nic).unwrap();
            assert_eq!(pe.eeh().served_while_stopped, 0, "a false positive");
            assert!(m.device_translate(nic, buf, Access::Read).is_err());
        });
    }
}

/// The PHB's TCE cache against range kills from two threads that claim one CPU slot
/// (CPUs 0 and 4): one thread kills, rewrites the TCE and kills again (an unmap and a
/// map), another kills once, a device translates in between. Once all are done, the next
/// translation must see the rewritten TCE: a lost kill count must never bring the cache
/// back to the tag it was filled at (`tce_kill` then a stale cached TCE).
#[test]
fn a_kill_is_never_lost_to_the_tce_cache() {
    use loom::sync::atomic::{AtomicU64, Ordering};
    use spapr_platform::PeCounters;
    const OLD: u64 = 0x1000 | 3;
    const NEW: u64 = 0x2000 | 3;
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(3);
    b.check(|| {
        let pe = Arc::new(PeCounters::default());
        let tce = Arc::new(AtomicU64::new(OLD));
        let remap = {
            let (pe, tce) = (pe.clone(), tce.clone());
            thread::spawn(move || {
                pe.range_kill(4);
                tce.store(NEW, Ordering::Relaxed);
                pe.range_kill(4);
            })
        };
        let other = {
            let pe = pe.clone();
            thread::spawn(move || pe.range_kill(0))
        };
        let _ = pe.cached_tce(0, 0, || tce.load(Ordering::Relaxed));
        remap.join().unwrap();
        other.join().unwrap();
        let seen = pe.cached_tce(0, 0, || tce.load(Ordering::Relaxed));
        assert_eq!(seen, NEW, "the cache served a TCE from before the kill");
    });
}
