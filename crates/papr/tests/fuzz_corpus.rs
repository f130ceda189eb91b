//! Replays every saved input of the `papr_state` fuzz target, so CI exercises the corpus
//! without the fuzzer (`cargo fuzz run -s none papr_state` grows it).

use std::path::PathBuf;

fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/papr_state")
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
