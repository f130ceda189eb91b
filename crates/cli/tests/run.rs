//! The main job runs, every expectation holds, and `--json` is valid JSON with the steps.

use std::process::Command;

#[test]
fn default_run_exits_zero_with_every_expectation_held() {
    let out = Command::new(env!("CARGO_BIN_EXE_spapr-iommu"))
        .args(["run", "--trace"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{text}");
    assert!(text.contains("22/22 expectations held"), "{text}");
    assert!(text.contains("user claims nvme0's group while nvme is bound -> EPERM"));
    assert!(text.contains("Ownership group=simple-nvme0 claimed by 0x1"));
}

#[test]
fn json_report_lists_steps_checks_and_state() {
    let out = Command::new(env!("CARGO_BIN_EXE_spapr-iommu"))
        .args(["run", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["steps"].as_array().unwrap().len(), 18);
    assert!(v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["held"] == true));
    assert!(v["state"]["children"].as_array().unwrap().len() >= 2);
}
