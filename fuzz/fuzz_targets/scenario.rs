#![no_main]
//! Scenario files: parsing arbitrary bytes never panics, a refusal names a line inside the
//! file, and an accepted file runs (if small) without panicking.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = spapr_iommu::engine::fuzz_one(data) {
        panic!("{e}");
    }
});
