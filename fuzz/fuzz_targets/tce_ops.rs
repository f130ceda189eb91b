//! Random operation sequences on a random small table, checked against the map model.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(d) = spapr_tce::ops::run_bytes(data) {
        panic!("TCE table diverged from the model: {d}");
    }
});
