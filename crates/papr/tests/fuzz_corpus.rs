//! Replays every saved input of the `papr_state`, `hcalls` and `rtas_buffer` fuzz targets,
//! so CI exercises the corpora without the fuzzer (`cargo fuzz run -s none TARGET` grows
//! them), and runs the same bodies on random inputs.

use proptest::prelude::*;
use std::path::PathBuf;

fn corpus_of(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../../fuzz/corpus/{target}"))
}

fn corpus() -> PathBuf {
    corpus_of("papr_state")
}

/// Every input saved for `target`, each run through `body`.
fn replay(target: &str, body: fn(&[u8]) -> Result<(), String>) {
    let dir = corpus_of(target);
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {} missing: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .collect();
    inputs.sort();
    assert!(
        inputs.len() >= 5,
        "{target} corpus has only {} inputs",
        inputs.len()
    );
    for path in &inputs {
        let data = std::fs::read(path).expect("read corpus input");
        if let Err(e) = body(&data) {
            panic!("{}: {e}", path.display());
        }
    }
}

#[test]
fn every_saved_hcalls_input_keeps_the_guest_consistent() {
    replay("hcalls", spapr_papr::fuzzing::hcalls);
}

#[test]
fn every_saved_rtas_buffer_input_writes_only_its_return_words() {
    replay("rtas_buffer", spapr_papr::fuzzing::rtas_buffer);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn random_hypercalls_keep_the_guest_consistent(data in prop::collection::vec(any::<u8>(), 0..600)) {
        prop_assert_eq!(spapr_papr::fuzzing::hcalls(&data), Ok(()));
    }
    #[test]
    fn random_rtas_buffers_write_only_their_return_words(data in prop::collection::vec(any::<u8>(), 0..400)) {
        prop_assert_eq!(spapr_papr::fuzzing::rtas_buffer(&data), Ok(()));
    }
}

#[test]
fn every_saved_papr_state_input_round_trips_or_changes_nothing() {
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(corpus())
        .unwrap_or_else(|e| panic!("corpus {} missing: {e}", corpus().display()))
        .map(|e| e.expect("corpus entry").path())
        .collect();
    inputs.sort();
    assert!(inputs.len() >= 3, "corpus has only {} inputs", inputs.len());
    for path in &inputs {
        let data = std::fs::read(path).expect("read corpus input");
        if let Err(e) = spapr_papr::state::restore_round_trip(&data) {
            panic!("{}: {e}", path.display());
        }
    }
}

/// Writes the seed inputs (valid saves). Run once with `--ignored` to regenerate.
#[test]
#[ignore]
fn write_seed_corpus() {
    use spapr_papr::{RtasCall, Spapr, SpaprConfig};
    use vm_memory::{GuestAddress, GuestMemoryMmap};
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 24)]).unwrap();
    let s = Spapr::new(SpaprConfig::default()).unwrap();
    std::fs::create_dir_all(corpus()).unwrap();
    std::fs::write(corpus().join("seed-default"), s.save_phb(0).unwrap()).unwrap();
    s.h_put_tce(&mem, 0x8000_0000, 0x3000, 0x5003);
    std::fs::write(corpus().join("seed-one-entry"), s.save_phb(0).unwrap()).unwrap();
    let buid = 0x0800_0000_2000_0000u64;
    s.rtas(
        RtasCall::Create,
        &[0, (buid >> 32) as u32, buid as u32, 16, 30],
        4,
    );
    s.h_put_tce(&mem, 0x8000_0001, 0x0800_0000_0001_0000, 0x7_0003);
    std::fs::write(corpus().join("seed-ddw"), s.save_phb(0).unwrap()).unwrap();
    s.rtas(RtasCall::Remove, &[0x8000_0000], 1);
    std::fs::write(
        corpus().join("seed-default-removed"),
        s.save_phb(0).unwrap(),
    )
    .unwrap();
}
