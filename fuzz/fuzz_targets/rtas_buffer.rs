#![no_main]
//! Raw RTAS buffers never panic and write only their return words (see `spapr_papr::fuzzing::rtas_buffer`).

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = spapr_papr::fuzzing::rtas_buffer(data) {
        panic!("{e}");
    }
});
