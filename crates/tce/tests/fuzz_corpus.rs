//! Replays every saved input of the `tce_ops` fuzz target, so CI exercises the corpus
//! without the fuzzer (`cargo fuzz run -s none tce_ops` grows it).

use std::path::PathBuf;

#[test]
fn every_saved_tce_ops_input_agrees_with_the_model() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/tce_ops");
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {} missing: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .collect();
    inputs.sort();
    assert!(inputs.len() >= 8, "corpus has only {} inputs", inputs.len());
    for path in &inputs {
        let data = std::fs::read(path).expect("read corpus input");
        if let Err(d) = spapr_tce::ops::run_bytes(&data) {
            panic!("{}: {d}", path.display());
        }
    }
}

#[test]
fn the_decoder_overflow_found_by_the_fuzzer_stays_fixed() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus/tce_ops/regress-decoder-overflow");
    let data = std::fs::read(path).expect("regression input");
    assert_eq!(spapr_tce::ops::run_bytes(&data), Ok(()));
}
