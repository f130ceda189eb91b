//! EEH steps of the simulator: the PHB fence and its recovery, a freeze that sticks, VF
//! PEs, and a pSeries guest's EEH RTAS calls driving a host VFIO container; each input
//! rule found before anything runs.

use spapr_iommu::doc::Source;
use spapr_iommu::engine;
use spapr_iommu::report::Report;
use spapr_iommu::scenario;

fn parse(text: &str) -> Result<scenario::Scenario, String> {
    scenario::parse(Source {
        name: "t.toml".into(),
        text: text.into(),
    })
    .map_err(|e| e.to_string())
}

fn run(text: &str) -> Report {
    let sc = parse(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    engine::run(&sc, &mut |_| {})
}

fn outcomes(r: &Report) -> Vec<String> {
    r.steps.iter().map(|s| s.outcome.clone()).collect()
}

const POWERNV: &str = r#"
[machine]
kind = "powernv"
ram = "8G"
eeh = true

[[machine.phb]]
model = "phb4"
pes = [{ number = 1, bus = 1 }, { number = 2, bus = 2 }]

[[machine.device]]
name = "nic0"
phb = 0
bus = 1
driver = "ixgbe"

[[machine.device]]
name = "vf0"
phb = 0
bus = 2
vf = "none"
"#;

#[test]
fn a_fenced_phb_stops_its_pes_until_the_host_resets_it() {
    let r = run(&format!(
        "{POWERNV}
[[step]]
op = \"phb_fence\"
phb = 0
state = {{ eeh.nic0.phb_fenced = true, eeh.nic0.phb_isolated = false, eeh.nic0.state = 2, pe.nic0.pe_kills = 1 }}

[[step]]
op = \"mmio_read\"
device = \"nic0\"
value = 0xffffffffffffffff
state = {{ eeh.nic0.phb_isolated = true, eeh.nic0.state = 5, eeh.vf0.state = 5 }}

[[step]]
op = \"phb_recover\"
phb = 0
state = {{ eeh.nic0.phb_fenced = false, eeh.nic0.state = 0, pe.nic0.pe_kills = 2 }}

[[step]]
op = \"phb_recover\"
phb = 0
expect = \"EINVAL\"

[[step]]
op = \"mmio_read\"
device = \"nic0\"
value = 0
"
    ));
    assert!(r.all_held(), "{:?}\n{:?}", r.stopped, outcomes(&r));
    assert!(r
        .checks
        .iter()
        .any(|c| c.name == "NoDmaWhileFrozen" && c.held));
    assert!(
        r.trace.iter().any(|e| e.detail.contains("complete reset")),
        "{:?}",
        r.trace
    );
}

#[test]
fn a_freeze_that_sticks_and_a_vf_without_flr_fail_as_the_kernel_does() {
    let r = run(&format!(
        "{POWERNV}
[[step]]
op = \"device_read\"
device = \"nic0\"
addr = 0xfff00000000
expect = \"fault\"

[[step]]
op = \"mmio_read\"
device = \"nic0\"
value = 0xffffffffffffffff

[[step]]
op = \"fail\"
call = \"eeh_thaw\"
device = \"nic0\"

[[step]]
op = \"eeh_recover\"
device = \"nic0\"
results = [\"can_recover\"]
state = {{ device.nic0.exists = false }}
"
    ));
    assert!(r.all_held(), "{:?}\n{:?}", r.stopped, outcomes(&r));
    assert!(
        r.trace
            .iter()
            .any(|e| e.detail.contains("the freeze stuck")),
        "{:?}",
        r.trace
    );
    let err = parse(&POWERNV.replace("vf = \"none\"", "vf = \"flr2\"")).unwrap_err();
    assert!(err.contains("expected flr, af_flr or none"), "{err}");
}

const PSERIES: &str = r#"
[machine]
kind = "pseries"

[[machine.phb]]
vfio = "gpu0"

[[machine.phb]]
vfio = ["nic0", "nvme0"]
vfio_bus = 2
"#;

#[test]
fn a_pseries_guest_drives_the_host_container_through_rtas() {
    let r = run(&format!(
        "{PSERIES}
[[step]]
op = \"host_dma\"
device = \"gpu0\"
addr = 0
expect = \"fault\"

[[step]]
op = \"rtas_eeh\"
call = \"read_slot_reset_state2\"
nret = 5
rets = [0, 2, 1, 1000, 0]

[[step]]
op = \"rtas_eeh\"
call = \"set_eeh_option\"
option = 2
rets = [0]

[[step]]
op = \"rtas_eeh\"
call = \"read_slot_reset_state2\"
rets = [0, 4, 1, 1000]

[[step]]
op = \"rtas_eeh\"
call = \"set_eeh_option\"
addr = 0x10000
option = 1
rets = [0]

[[step]]
op = \"host_mmio_read\"
device = \"gpu0\"
value = 0

[[step]]
op = \"rtas_eeh\"
call = \"get_config_addr_info2\"
addr = 0x10100
function = 0
rets = [-3]
expect = \"RTAS_PARAMETER_ERROR\"

[[step]]
op = \"rtas_eeh\"
call = \"configure_pe\"
phb = 1
rets = [-3]
expect = \"RTAS_PARAMETER_ERROR\"

[[step]]
op = \"host_dma\"
device = \"nic0\"
addr = 0
expect = \"fault\"

[[step]]
op = \"machine_reset\"
"
    ));
    assert!(r.all_held(), "{:?}\n{:?}", r.stopped, outcomes(&r));
    assert!(r.checks.iter().all(|c| c.held), "{:?}", r.checks);
    assert!(r.checks.iter().any(|c| c.name == "host NoDmaWhileFrozen"));
}

#[test]
fn pseries_eeh_inputs_are_checked_before_anything_runs() {
    let step = |body: &str| format!("{PSERIES}[[step]]\n{body}\n");
    let err = parse(&step("op = \"rtas_eeh\"\ncall = \"configure_p\"")).unwrap_err();
    assert!(
        err.contains("unknown call \"configure_p\" (did you mean \"configure_pe\"?)"),
        "{err}"
    );
    let err = parse(&step(
        "op = \"rtas_eeh\"\ncall = \"set_eeh_option\"\noption = 4294967296",
    ))
    .unwrap_err();
    assert!(err.contains("does not fit in the 32-bit field"), "{err}");
    let err = parse(&step("op = \"host_dma\"\ndevice = \"gpu1\"\naddr = 0")).unwrap_err();
    assert!(err.contains("gpu1") && err.contains("gpu0"), "{err}");
    let err = parse(&PSERIES.replace("vfio = \"gpu0\"", "vfio = \"gpu9\"")).unwrap_err();
    assert!(err.contains("the host has no device \"gpu9\""), "{err}");
    let err = parse(&PSERIES.replace("vfio = \"gpu0\"", "vfio = \"nic0\"")).unwrap_err();
    assert!(err.contains("passed to another PHB"), "{err}");
    let err = parse(&PSERIES.replace("vfio_bus = 2", "vfio_bus = 256")).unwrap_err();
    assert!(err.contains("vfio_bus must be 0..=255"), "{err}");
    let err = parse(&PSERIES.replace("vfio = \"gpu0\"", "vfio_bus = 3")).unwrap_err();
    assert!(err.contains("vfio_bus needs vfio"), "{err}");
    let err = parse(
        "[machine]\nkind = \"pseries\"\n[[step]]\nop = \"host_mmio_read\"\ndevice = \"gpu0\"\n",
    )
    .unwrap_err();
    assert!(err.contains("the machine has no device \"gpu0\""), "{err}");
}

#[test]
fn eeh_flags_choose_eeh_md_readings() {
    let text = POWERNV.replace("eeh = true", "eeh = true\neeh_flags = [\"peev-stiky\"]");
    let err = parse(&text).unwrap_err();
    assert!(
        err.contains("unknown EEH flag \"peev-stiky\" (did you mean \"peev-sticky\"?)"),
        "{err}"
    );
    let r = run(&format!(
        "{}
[[step]]
op = \"device_read\"
device = \"nic0\"
addr = 0xfff00000000
expect = \"fault\"
state = {{ eeh.nic0.state = 2 }}
",
        POWERNV.replace(
            "eeh = true",
            "eeh = true\neeh_flags = [\"peev-sticky\", \"linux-6.12\"]"
        )
    ));
    assert!(r.all_held(), "{:?}", r.stopped);
}
