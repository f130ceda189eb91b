//! Every file in examples/ runs in the test suite and meets all its expectations.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn every_example_runs_and_every_expectation_holds() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 10, "{files:?}");
    for f in &files {
        let out = Command::new(env!("CARGO_BIN_EXE_spapr-iommu"))
            .arg("run")
            .arg(f)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}:\n{text}\n{}",
            f.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("expectations held"));
    }
}
