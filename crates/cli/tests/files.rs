//! Malformed or impossible scenario files: an error naming file, line and column and what
//! was expected; unknown names get the closest valid one; nothing half-runs.

use std::io::Write;
use std::process::Command;

fn run_text(text: &str) -> (i32, String, String) {
    let mut f = tempfile();
    f.1.write_all(text.as_bytes()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_spapr-iommu"))
        .arg("run")
        .arg(&f.0)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&f.0);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn tempfile() -> (std::path::PathBuf, std::fs::File) {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let p = std::env::temp_dir().join(format!(
        "spapr-iommu-test-{}-{}.toml",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let f = std::fs::File::create(&p).unwrap();
    (p, f)
}

const HEAD: &str = "[machine]\nkind = \"pseries\"\n\n";

#[test]
fn invalid_toml_names_the_line_and_column() {
    let (code, out, err) = run_text("[machine]\nkind = \"pseries\"\nram = [1,\n");
    assert_eq!(code, 2);
    assert!(out.is_empty(), "nothing ran: {out}");
    assert!(err.contains(".toml:"), "{err}");
    assert!(err.contains("not valid TOML"), "{err}");
}

#[test]
fn an_unknown_operation_gets_the_closest_name() {
    let text = format!("{HEAD}[[step]]\nop = \"h_put_tec\"\nliobn = 1\n");
    let (code, out, err) = run_text(&text);
    assert_eq!(code, 2);
    assert!(out.is_empty());
    assert!(
        err.contains("error: unknown operation \"h_put_tec\"; did you mean \"h_put_tce\"?")
            && err.contains(".toml:5:6\n")
            && err.contains("5 | op = \"h_put_tec\"")
            && err.contains("^^^^^^^^^^^"),
        "{err}"
    );
}

#[test]
fn an_unknown_field_gets_the_closest_name_and_missing_fields_are_named() {
    let text = format!("{HEAD}[[step]]\nop = \"h_put_tce\"\nliobn = 1\nioab = 0\ntce = 3\n");
    let (_, _, err) = run_text(&text);
    assert!(err.contains("error: unknown field \"ioab\""), "{err}");
    assert!(err.contains(".toml:7:8\n"), "{err}");
    assert!(err.contains("did you mean \"ioba\"?"), "{err}");
    let text = format!("{HEAD}[[step]]\nop = \"h_put_tce\"\nliobn = 1\n");
    let (_, _, err) = run_text(&text);
    assert!(err.contains("needs the field \"ioba\""), "{err}");
}

#[test]
fn wrong_kinds_bad_numbers_and_unknown_references_are_refused() {
    let (_, _, err) = run_text(&format!(
        "{HEAD}[[step]]\nop = \"h_put_tce\"\nliobn = true\nioba = 0\ntce = 3\n"
    ));
    assert!(
        err.contains("liobn of h_put_tce must be a number, found a boolean"),
        "{err}"
    );
    let (_, _, err) = run_text(&format!(
        "{HEAD}[[step]]\nop = \"h_put_tce\"\nliobn = \"12Q\"\nioba = 0\ntce = 3\n"
    ));
    assert!(err.contains("is not a number"), "{err}");
    let (_, _, err) = run_text(&format!(
        "{HEAD}[[step]]\nop = \"h_put_tce\"\nliobn = \"$ddw.liobn\"\nioba = 0\ntce = 3\n"
    ));
    assert!(err.contains("no earlier step names with `as`"), "{err}");
    let (_, _, err) = run_text(&format!(
        "{HEAD}[[step]]\nop = \"h_put_tce\"\nliobn = 1\nioba = 0\ntce = 3\nexpect = \"H_NOPE\"\n"
    ));
    assert!(err.contains("unknown expectation \"H_NOPE\""), "{err}");
}

#[test]
fn impossible_machines_and_wrong_machine_operations_are_refused() {
    let (_, _, err) = run_text("[machine]\nkind = \"powerpc\"\n");
    assert!(err.contains("unknown machine kind \"powerpc\""), "{err}");
    let (_, _, err) =
        run_text("[machine]\nkind = \"powernv\"\n[[machine.phb]]\nmodel = \"phb9\"\n");
    assert!(err.contains("unknown PHB model \"phb9\""), "{err}");
    let (_, _, err) = run_text(&format!(
        "{HEAD}[[step]]\nop = \"bind\"\ndevice = \"x\"\ndriver = \"y\"\n"
    ));
    assert!(err.contains("bind needs a powernv machine"), "{err}");
    let (_, _, err) =
        run_text("[machine]\nkind = \"pseries\"\n[[machine.phb]]\npage_sizes = [\"32M\"]\n");
    assert!(err.contains("is not one of"), "{err}");
}

#[test]
fn a_run_stops_at_the_first_unmet_expectation_and_says_which() {
    let text = format!(
        "{HEAD}[[step]]\nop = \"h_put_tce\"\nliobn = 0x80000000\nioba = 0\ntce = 3\nexpect = \"H_PARAMETER\"\n\n[[step]]\nop = \"machine_reset\"\n"
    );
    let (code, out, _) = run_text(&text);
    assert_eq!(code, 1);
    assert!(out.contains("[FAILED] h_put_tce"), "{out}");
    assert!(out.contains("(expected H_PARAMETER; line 4)"), "{out}");
    assert!(out.contains("stopped: step 1 (line 4)"), "{out}");
    assert!(!out.contains("machine_reset"), "the second step never ran");
}

#[test]
fn a_repeated_step_reports_the_failing_repetition() {
    let text = format!(
        "{HEAD}[[step]]\nop = \"h_put_tce\"\nliobn = 0x80000000\nioba = \"0x3FFF0000\"\ntce = 3\nrepeat = 100\nvary = {{ ioba = \"4K\" }}\nexpect = \"H_SUCCESS\"\n"
    );
    let (code, out, _) = run_text(&text);
    assert_eq!(code, 1);
    assert!(out.contains("H_PARAMETER at repetition 17"), "{out}");
}
