#![no_main]
//! Raw hypercalls never panic and keep the guest consistent (see `spapr_papr::fuzzing::hcalls`).

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = spapr_papr::fuzzing::hcalls(data) {
        panic!("{e}");
    }
});
