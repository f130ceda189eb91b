//! Loom model of the allocator's hand-over (kernel.md 2.9): `iommu_take_ownership` on one
//! CPU against `iommu_range_alloc` on another. They must not both miss each other: either
//! the allocation fails (or is given back), or the take sees it and fails with -EBUSY. Run
//! with `RUSTFLAGS="--cfg loom" cargo test -p spapr-platform --test loom --release`.
#![cfg(loom)]

use loom::thread;
use spapr_platform::TceAllocator;
use std::sync::Arc;

#[test]
fn take_ownership_and_a_concurrent_alloc_never_both_succeed() {
    loom::model(|| {
        let a = Arc::new(TceAllocator::new(64, 12, 1 << 20, (0, 0)));
        let cpu = {
            let a = a.clone();
            thread::spawn(move || a.alloc(1, 0, None).map(|x| x.entry))
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
        }
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
