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
    assert!(text.contains("49/49 expectations held"), "{text}");
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
    assert_eq!(v["checks"].as_array().unwrap().len(), 8);
    assert!(v["failed_step"].is_null() && v["stopped"].is_null());
    let out = bin().args(["ops"]).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("h_put_tce_indirect"));
    assert!(text.contains("vfio_map_dma"));
}

#[test]
fn fields_prints_every_machine_field_with_its_default() {
    let out = bin().arg("fields").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for f in spapr_iommu::scenario::MACHINE_FIELDS {
        assert!(
            text.contains(&format!("  {:<16} {}", f.name, f.takes)),
            "{}",
            f.name
        );
    }
    assert!(
        text.contains("[[machine.device]] (kind = \"powernv\")"),
        "{text}"
    );
    assert!(text.contains("dma_mask"), "{text}");
}

#[test]
fn file_errors_are_json_under_json() {
    let dir = std::env::temp_dir().join(format!("spapr-json-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "[machine]\nkind = \"pseries\"\n[[step]]\nop = \"h_put_tec\"\n",
    )
    .unwrap();
    let out = bin().args(["run", "--json"]).arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"]["kind"], "invalid");
    assert_eq!(v["error"]["line"], 4);
    assert_eq!(v["error"]["col"], 6);
    assert!(v["error"]["msg"]
        .as_str()
        .unwrap()
        .contains("did you mean \"h_put_tce\""));
    let out = bin()
        .args(["check", "--json"])
        .arg(dir.join("missing.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"]["kind"], "read");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn check_json_names_the_failing_step() {
    let dir = std::env::temp_dir().join(format!("spapr-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("f.toml");
    std::fs::write(
        &f,
        "[machine]\nkind = \"pseries\"\n[[step]]\nop = \"h_put_tce\"\nliobn = 0x80000000\nioba = 0\ntce = 3\nexpect = \"H_PARAMETER\"\n",
    )
    .unwrap();
    let out = bin().args(["check", "--json"]).arg(&f).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["failed_step"]["n"], 1);
    assert_eq!(v["failed_step"]["line"], 3);
    assert_eq!(v["failed_step"]["expect"], "H_PARAMETER");
    assert!(v["stopped"].as_str().unwrap().contains("step 1 (line 3)"));
    assert!(v["checks"].is_array());
    let text = bin().arg("check").arg(&f).output().unwrap();
    assert!(String::from_utf8_lossy(&text.stdout).contains("stopped: step 1 (line 3)"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_closed_stdout_ends_the_run_quietly() {
    use std::process::Stdio;
    let mut child = bin()
        .args(["run", "--trace"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `--tables` lists every valid TCE run with its raw value in the final tree; `--svg FILE`
/// writes the picture; an unwritable file is exit status 2.
#[test]
fn tables_and_svg_flags() {
    let ex = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/eeh_vfio_owner_recovers.toml"
    );
    let out = bin().args(["show", ex, "--tables"]).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("first TCE 0x"), "{text}");
    let plain = bin().args(["show", ex]).output().unwrap();
    assert!(!String::from_utf8(plain.stdout)
        .unwrap()
        .contains("first TCE 0x"));
    let dir = std::env::temp_dir().join(format!("spapr-svg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("m.svg");
    let out = bin()
        .args(["run", ex, "--svg"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success());
    let svg = std::fs::read_to_string(&file).unwrap();
    assert!(svg.starts_with("<svg ") && svg.trim_end().ends_with("</svg>"));
    let out = bin()
        .args(["run", ex, "--svg"])
        .arg(dir.join("no/such/dir/m.svg"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    std::fs::remove_dir_all(&dir).unwrap();
}
