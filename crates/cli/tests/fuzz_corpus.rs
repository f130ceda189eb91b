//! Replays every saved input of the `scenario` fuzz target, so CI exercises the corpus
//! without the fuzzer (`cargo fuzz run -s none scenario` grows it).

use std::path::PathBuf;

#[test]
fn every_saved_scenario_input_parses_or_is_refused_with_a_position() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/scenario");
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {} missing: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .collect();
    inputs.sort();
    assert!(
        inputs.len() >= 10,
        "corpus has only {} inputs",
        inputs.len()
    );
    for path in &inputs {
        let data = std::fs::read(path).expect("read corpus input");
        if let Err(e) = spapr_iommu::engine::fuzz_one(&data) {
            panic!("{}: {e}", path.display());
        }
    }
}
