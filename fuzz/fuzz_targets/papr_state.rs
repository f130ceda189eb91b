#![no_main]
//! Restoring arbitrary bytes as a PHB's window state never panics, round-trips when
//! accepted and changes nothing when refused.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = spapr_papr::state::restore_round_trip(data) {
        panic!("{e}");
    }
});
