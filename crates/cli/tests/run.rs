//! The main job: the built-in seed story runs, every expectation holds, and each command
//! prints what it says, in text and JSON.

use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_spapr-iommu"))
}

#[test]
fn default_run_exits_zero_with_every_expectation_held() {
    let out = bin().args(["run", "--trace"]).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{text}");
    assert!(text.contains("38/38 expectations held"), "{text}");
    assert!(text.contains("vfio_set_container group=\"$g\" container=\"$c\" -> ok"));
    assert!(text.contains("device_read device=\"gpu0\" addr=\"$gpubuf.dma\" -> fault"));
    // The trace has one line per core event, including TCE kills and faults.
    assert!(
        text.contains("Ownership group=domain1-pe1 claimed by"),
        "{text}"
    );
    assert!(
        text.contains("IotlbInvalidate group=domain1-pe1 set window 1"),
        "{text}"
    );
    assert!(text.contains("Fault dev=gpu0"), "{text}");
}

#[test]
fn json_report_lists_steps_checks_state_and_trace() {
    let out = bin().args(["run", "--json"]).output().unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["steps"].as_array().unwrap().len(), 32);
    assert!(v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["held"] == true));
    assert_eq!(
        v["state"]["children"].as_array().unwrap().len(),
        2,
        "two PHBs"
    );
    assert!(!v["trace"].as_array().unwrap().is_empty());
}

#[test]
fn show_and_check_print_only_their_part() {
    let out = bin().args(["show"]).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success());
    assert!(
        text.starts_with("state:\nPowerNV machine: 2 PHBs"),
        "{text}"
    );
    assert!(!text.contains("steps:"));
    let out = bin().args(["check", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 7);
    let out = bin().args(["ops"]).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("h_put_tce_indirect"));
    assert!(text.contains("vfio_map_dma"));
}
