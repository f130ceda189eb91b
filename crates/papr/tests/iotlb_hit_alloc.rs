//! The hit paths allocate nothing: once a page is in the IOTLB, device reads through
//! `IommuMemory` make no heap allocation, and a `DeviceTranslator` never allocates while
//! the windows stay as they are (counted by a global allocator in this test binary only,
//! per thread: the test harness's own threads may allocate while the test runs, which
//! once made a loaded run count three allocations that were not the test's).

use spapr_papr::{HStatus, Profile, Spapr, SpaprConfig};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use vm_memory::iommu::IommuMemory;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

struct Counting;

thread_local! {
    // Const-initialized and without a destructor: safe to touch from the allocator.
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

/// Allocations made so far by the calling thread.
fn allocs() -> u64 {
    ALLOCS.with(Cell::get)
}

fn count() {
    // `try_with`: a thread being torn down has no counter left; its allocations are not
    // the test's.
    let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
}

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as ours, passed through.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours, passed through.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: same contract as ours, passed through.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn device_reads_that_hit_the_iotlb_allocate_nothing() {
    let s = Spapr::new(SpaprConfig {
        profile: Profile::Kvm,
        ram_size: 64 << 20,
        ..SpaprConfig::default()
    })
    .unwrap();
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 64 << 20)]).unwrap();
    for i in 0..16u64 {
        assert_eq!(
            s.h_put_tce(
                &mem,
                0x8000_0000,
                0x10_0000 + (i << 12),
                (0x20_0000 + (i << 12)) | 1
            ),
            HStatus::Success
        );
    }
    let mut own = s.device_translator(0).unwrap();
    let dma = IommuMemory::new(mem.clone(), s.phb_iommu(0).unwrap(), true, ());
    let mut buf = vec![0u8; 4096];
    // Misses fill the IOTLB (this may allocate).
    for i in 0..16u64 {
        dma.read_slice(&mut buf, GuestAddress(0x10_0000 + (i << 12)))
            .unwrap();
    }
    let before = allocs();
    for round in 0..100u64 {
        let i = round % 16;
        dma.read_slice(&mut buf, GuestAddress(0x10_0000 + (i << 12)))
            .unwrap();
    }
    assert_eq!(allocs(), before, "IOTLB hits allocated");
    // Entry changes do not make a DeviceTranslator allocate either: it reads them live.
    let before = allocs();
    for round in 0..100u64 {
        let i = round % 16;
        own.read(&mem, 0x10_0000 + (i << 12), &mut buf).unwrap();
        let tce = (0x20_0000 + (i << 12)) | 1;
        assert_eq!(
            s.h_put_tce(&mem, 0x8000_0000, 0x10_0000 + (i << 12), tce),
            HStatus::Success
        );
    }
    assert_eq!(allocs(), before, "DeviceTranslator reads allocated");
}
