//! State expectations (`state = { path = value }` on any step): each path reads what it
//! names, an unmet one stops the run naming path, expected and actual, and a malformed one
//! is refused before anything runs, with the closest valid name.

use spapr_iommu::doc::Source;
use spapr_iommu::engine;
use spapr_iommu::report::Report;
use spapr_iommu::scenario;

const MACHINE: &str = r#"
[machine]
kind = "powernv"
ram = "8G"
host_page_size = "64K"

[[machine.phb]]
model = "phb4"
pes = [{ number = 1, bus = 1 }, { number = 2, bus = 2 }]

[[machine.device]]
name = "nic0"
phb = 0
bus = 1
dma_mask = 32
driver = "ixgbe"

[[machine.device]]
name = "gpu0"
phb = 0
bus = 2
dma_mask = 64
"#;

/// A VFIO v2 hand-over with a DDW and one 64K page mapped at the DDW's start.
const STEPS: &str = r#"
[[step]]
op = "vfio_register_device"
device = "gpu0"

[[step]]
op = "vfio_open_container"
as = "c"

[[step]]
op = "vfio_open_group"
device = "gpu0"
as = "g"

[[step]]
op = "vfio_set_container"
group = "$g"
container = "$c"

[[step]]
op = "vfio_set_iommu"
container = "$c"
type = 7

[[step]]
op = "mmap"
size = "1M"
as = "ram"

[[step]]
op = "vfio_register_memory"
container = "$c"
vaddr = "$ram"
size = "1M"

[[step]]
op = "vfio_create_window"
container = "$c"
page_size = "64K"
window_size = "1G"
as = "ddw"

[[step]]
op = "vfio_map_dma"
container = "$c"
vaddr = "$ram"
iova = "$ddw"
size = "64K"
expect = "ok"
"#;

fn run(text: &str) -> Report {
    let sc = scenario::parse(Source {
        name: "t.toml".into(),
        text: text.into(),
    })
    .unwrap_or_else(|e| panic!("{e}\n{text}"));
    engine::run(&sc, &mut |_| {})
}

fn refused(text: &str) -> String {
    match scenario::parse(Source {
        name: "t.toml".into(),
        text: text.into(),
    }) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

fn with_state(state: &str) -> String {
    format!("{MACHINE}{STEPS}\n[[step]]\nop = \"assert\"\nstate = {{ {state} }}\n")
}

/// Each path, with the value it has after STEPS: it holds, and a different value fails
/// the run naming what was found.
#[test]
fn each_path_reads_what_it_names_and_a_wrong_value_fails() {
    let cases: &[(&str, &str, &str)] = &[
        ("group.gpu0.owner", "\"0x7f100005\"", "\"none\""),
        ("group.gpu0.owner_cnt", "1", "2"),
        ("group.gpu0.domain", "\"BLOCKED\"", "\"DMA\""),
        ("group.gpu0.dma_owner_claimed", "true", "false"),
        ("group.gpu0.exists", "true", "false"),
        ("group.gpu0.devices", "1", "2"),
        ("group.nic0.owner", "\"none\"", "1"),
        ("group.nic0.owner_cnt", "1", "0"),
        ("device.nic0.driver", "\"ixgbe\"", "\"none\""),
        ("device.gpu0.driver", "\"vfio-pci\"", "\"none\""),
        ("pe.gpu0.number", "2", "1"),
        ("pe.gpu0.bypass", "false", "true"),
        ("pe.nic0.bypass", "true", "false"),
        ("pe.gpu0.tve0", "\"window\"", "\"off\""),
        ("pe.gpu0.tve1", "\"window\"", "\"bypass\""),
        ("pe.nic0.tve1", "\"bypass\"", "\"off\""),
        ("pe.gpu0.windows", "2", "1"),
        ("window.gpu0.1.exists", "true", "false"),
        ("window.gpu0.1.start", "\"$ddw\"", "0"),
        ("window.gpu0.1.size", "\"1G\"", "\"2G\""),
        ("window.gpu0.1.page_size", "\"64K\"", "\"4K\""),
        ("window.gpu0.1.levels", "1", "2"),
        ("window.gpu0.1.mapped", "1", "0"),
        ("window.gpu0.1.kernel", "false", "true"),
        ("window.gpu0.1.tve", "5", "4"),
        ("window.nic0.0.kernel", "true", "false"),
        ("container.\"$c\".windows", "2", "1"),
        ("container.\"$c\".mapped", "1", "0"),
        ("container.\"$c\".pinned", "0", "1"),
        ("container.\"$c\".default_window_pending", "false", "true"),
        ("process.1000.locked_vm", "148", "16"),
        ("process.1000.leaked", "0", "1"),
        ("check.NoKernelTranslationOnUserGroup", "true", "false"),
        ("device.gpu0.reads.0x1000", "\"fault\"", "0"),
    ];
    for (path, right, wrong) in cases {
        let ok = run(&with_state(&format!("{path} = {right}")));
        assert!(
            ok.all_held(),
            "{path} = {right}: {:?} {:?}",
            ok.stopped,
            ok.steps.last().map(|s| &s.state_checks)
        );
        let bad = run(&with_state(&format!("{path} = {wrong}")));
        let why = bad.stopped.clone().unwrap_or_default();
        let plain = path.replace('"', "");
        assert!(
            why.contains(&format!("state {plain}: expected ")),
            "{path} = {wrong}: {why}"
        );
        let last = bad.steps.last().unwrap();
        assert!(!last.held);
        assert_eq!(last.state_checks.len(), 1);
        assert!(!last.state_checks[0].held);
    }
}

/// The raw TCE of the mapped entry: the host page of the user's memory with read and
/// write, all 64 bits; entry 1 is empty; the device reaches the page through it.
#[test]
fn tce_and_reach_paths_show_the_raw_entry_and_where_a_dma_lands() {
    let r = run(&with_state("tce.gpu0.1.1 = 0"));
    assert!(r.all_held(), "{:?}", r.stopped);
    // Find the value: a wrong guess names it.
    let r = run(&with_state("tce.gpu0.1.0 = 0"));
    let found = &r.steps.last().unwrap().state_checks[0].actual;
    let raw = u64::from_str_radix(
        found
            .split_whitespace()
            .next()
            .unwrap()
            .trim_start_matches("0x"),
        16,
    )
    .unwrap();
    assert_eq!(raw & 3, 3, "read and write: {found}");
    let hpa = raw & !0xfff;
    let text = with_state(&format!(
        "tce.gpu0.1.0 = {raw}, device.gpu0.writes.\"$ddw\" = {hpa}, device.gpu0.reads.\"$ddw\" = {hpa}"
    ));
    let text = text.replace("\"$ddw\" =", "0x800000000000000 =");
    let r = run(&text);
    assert!(
        r.all_held(),
        "{:?} {:?}",
        r.stopped,
        r.steps.last().unwrap().state_checks
    );
}

/// Reading a path changes nothing: the trace and the final state (kill counts included)
/// are the same with or without an `assert` step that probes device reaches.
#[test]
fn observing_changes_nothing() {
    let plain = run(&format!("{MACHINE}{STEPS}"));
    let observed = run(&with_state(
        "device.gpu0.reads.0x800000000000000 = \"0x100000000\", device.gpu0.reads.0x1000 = \"fault\", pe.gpu0.range_kills = 1",
    ));
    assert!(observed.all_held(), "{:?}", observed.stopped);
    assert_eq!(plain.trace, observed.trace);
    assert_eq!(plain.state_text(), observed.state_text());
}

/// Malformed paths are refused before anything runs, each naming what is wrong.
#[test]
fn malformed_paths_are_refused_with_the_closest_name() {
    let cases: &[(&str, &str)] = &[
        (
            "grup.gpu0.owner = 1",
            "unknown root \"grup\" (did you mean \"group\"?)",
        ),
        (
            "group.gpu0.ownr = 1",
            "no attribute \"ownr\" (did you mean \"owner\"?)",
        ),
        (
            "group.gpu9.owner = 1",
            "no device \"gpu9\" (did you mean \"gpu0\"?)",
        ),
        (
            "group.gpu0.owner_cnt = true",
            "group.gpu0.owner_cnt is a number; found a boolean",
        ),
        ("group.gpu0.owner_cnt = -1", "-1 is not a number"),
        (
            "group.gpu0.dma_owner_claimed = 1",
            "is true or false; found an integer",
        ),
        ("group.gpu0.owner = \"nobody\"", "state group.gpu0.owner:"),
        ("window.gpu0.2.size = 1", "a PE has windows 0 and 1"),
        (
            "window.gpu0.size = 1",
            "expected the form window.DEVICE.N.ATTR",
        ),
        ("device.gpu0.reads = 1", "reads needs a bus address"),
        ("container.\"$nope\".windows = 1", "no earlier step names"),
        ("check.NoSuchRule = true", "unknown rule \"NoSuchRule\""),
    ];
    for (state, want) in cases {
        let err = refused(&with_state(state));
        assert!(err.contains(want), "{state}: {err}");
        assert!(err.starts_with("t.toml:"), "{err}");
    }
    let err = refused(
        "[machine]\nkind = \"pseries\"\n[[step]]\nop = \"assert\"\nstate = { check.WindowsDisjoint = true }\n",
    );
    assert!(err.contains("need a powernv machine"), "{err}");
    let err = refused(&format!("{MACHINE}[[step]]\nop = \"assert\"\nstate = 3\n"));
    assert!(err.contains("state must be a table"), "{err}");
}

/// A device hot-added by an earlier step may be named by later paths.
#[test]
fn a_hot_added_device_can_be_named() {
    let text = format!(
        "{MACHINE}[[step]]\nop = \"hot_add\"\ndevice = \"nic1\"\nphb = 0\nbus = 1\ndevfn = 1\n\
         state = {{ group.nic1.devices = 2, group.nic1.exists = true }}\n"
    );
    let r = run(&text);
    assert!(r.all_held(), "{:?}", r.stopped);
}

/// A step without `expect` whose call fails is reported as failed-but-allowed, not ok.
#[test]
fn a_failed_call_without_expect_is_allowed_but_not_ok() {
    let text = format!("{MACHINE}[[step]]\nop = \"claim\"\ndevice = \"nic0\"\nowner = 0\n");
    let r = run(&text);
    assert!(r.all_held());
    assert!(r.steps[0].failed_allowed);
    assert!(
        r.steps_text().contains("[failed, allowed] claim"),
        "{}",
        r.steps_text()
    );
    let text = format!("{MACHINE}[[step]]\nop = \"claim\"\ndevice = \"gpu0\"\n");
    let r = run(&text);
    assert!(!r.steps[0].failed_allowed);
    assert!(r.steps_text().contains("[ok] claim"));
}

/// The JSON report carries each state check as typed fields.
#[test]
fn state_checks_are_in_the_json_report() {
    let r = run(&with_state("group.gpu0.owner_cnt = 1"));
    let v = serde_json::to_value(&r).unwrap();
    let last = v["steps"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["state_checks"][0]["path"], "group.gpu0.owner_cnt");
    assert_eq!(last["state_checks"][0]["expected"], "1");
    assert_eq!(last["state_checks"][0]["actual"], "1");
    assert_eq!(last["state_checks"][0]["held"], true);
}

/// `fail` names a known call (the closest is offered), counts from 1, and knows OPAL's
/// errors; all found before anything runs.
#[test]
fn fail_steps_are_checked_before_anything_runs() {
    let step = |body: &str| format!("{MACHINE}[[step]]\nop = \"fail\"\n{body}\n");
    let err = refused(&step("call = \"set_windw\""));
    assert!(
        err.contains("unknown call \"set_windw\" (did you mean \"set_window\"?)"),
        "{err}"
    );
    let err = refused(&step("call = \"pin\"\nnth = 0"));
    assert!(err.contains("nth counts calls from 1"), "{err}");
    let err = refused(&step("call = \"pin\"\nnth = 4294967296"));
    assert!(err.contains("does not fit in the 32-bit field"), "{err}");
    let err = refused(&step("call = \"set_window\"\nopal = \"busy\""));
    assert!(err.contains("expected parameter or hardware"), "{err}");
    let err = refused(&step("call = \"pin\"\ndevice = \"gpu7\""));
    assert!(err.contains("gpu7"), "{err}");
}

/// A targeted failure strikes only on its PE: a MAP on another container's PE is not
/// counted, and the failure then strikes where it was aimed.
#[test]
fn a_targeted_failure_strikes_only_its_pe() {
    let text = format!(
        "{MACHINE}{STEPS}\n[[step]]\nop = \"fail\"\ncall = \"tce_store\"\ndevice = \"nic0\"\n\n\
         [[step]]\nop = \"vfio_map_dma\"\ncontainer = \"$c\"\nvaddr = \"$ram\"\niova = \"$ddw+64K\"\nsize = \"64K\"\nexpect = \"ok\"\n\
         state = {{ window.gpu0.1.mapped = 2 }}\n"
    );
    let r = run(&text);
    assert!(r.all_held(), "{:?}", r.stopped);
    let text = text.replace("device = \"nic0\"", "device = \"gpu0\"");
    let r = run(&text.replace(
        "expect = \"ok\"\nstate = { window.gpu0.1.mapped = 2 }",
        "expect = \"ENOMEM\"\nstate = { window.gpu0.1.mapped = 1 }",
    ));
    assert!(r.all_held(), "{:?}", r.stopped);
}

/// EEH steps are checked before anything runs: driver answers and EEH op names get the
/// closest valid one; `eeh.DEV.ATTR` paths are known.
#[test]
fn eeh_steps_and_paths_are_checked_before_anything_runs() {
    let err = refused(&format!(
        "{MACHINE}[[step]]\nop = \"eeh_recover\"\ndevice = \"nic0\"\nresults = [\"can_recovr\"]\n"
    ));
    assert!(
        err.contains("unknown driver answer \"can_recovr\" (did you mean \"can_recover\"?)"),
        "{err}"
    );
    let err = refused(&format!(
        "{MACHINE}[[step]]\nop = \"vfio_eeh_pe_op\"\ncontainer = 4\neeh_op = \"get_stat\"\n"
    ));
    assert!(
        err.contains("unknown EEH op \"get_stat\" (did you mean \"get_state\"?)"),
        "{err}"
    );
    let err = refused(&with_state("eeh.gpu0.frozen = true"));
    assert!(err.contains("no attribute \"frozen\""), "{err}");
    let r = run(&with_state(
        "eeh.gpu0.state = 0, eeh.gpu0.pass_dev_cnt = 0, eeh.gpu0.removed = false",
    ));
    assert!(r.all_held(), "{:?}", r.stopped);
}

/// `show` with `tables = true` lists every run of valid TCEs with its raw 64-bit value,
/// past the 8 runs the plain tree shows.
#[test]
fn show_tables_lists_every_run_with_its_raw_tce() {
    let mut text = format!("{MACHINE}{STEPS}");
    for k in 1..12u64 {
        text.push_str(&format!(
            "\n[[step]]\nop = \"vfio_map_dma\"\ncontainer = \"$c\"\nvaddr = \"$ram\"\niova = \"$ddw+{}\"\nsize = \"64K\"\nflags = \"{}\"\nexpect = \"ok\"\n",
            k * 2 * 65536,
            if k % 2 == 0 { "rw" } else { "r" }
        ));
    }
    let plain = run(&format!("{text}\n[[step]]\nop = \"show\"\n"));
    let full = run(&format!("{text}\n[[step]]\nop = \"show\"\ntables = true\n"));
    let flat = |r: &spapr_iommu::report::Report| {
        let mut out = Vec::new();
        fn walk(n: &spapr_iommu::report::Node, out: &mut Vec<String>) {
            out.push(n.label.clone());
            n.children.iter().for_each(|c| walk(c, out));
        }
        walk(r.steps.last().unwrap().state.as_ref().unwrap(), &mut out);
        out
    };
    let (p, f) = (flat(&plain), flat(&full));
    assert!(p.iter().any(|l| l.contains("more runs")), "{p:?}");
    assert!(!f.iter().any(|l| l.contains("more runs")), "{f:?}");
    let raw: Vec<&String> = f.iter().filter(|l| l.contains("first TCE 0x")).collect();
    assert_eq!(raw.len(), 12, "{f:?}");
    assert!(
        raw[0].contains("(entry 0x0 x1, first TCE 0x0000000100000003)"),
        "{}",
        raw[0]
    );
}

/// `guest_read` with `words` names what it read: `$x` is the first big-endian word,
/// `$x.w1` the next, usable by later steps; a wrong `u64be` beside it fails the run.
#[test]
fn guest_memory_is_read_into_named_values() {
    let base = "[machine]\nkind = \"pseries\"\n\n[[step]]\nop = \"guest_write\"\naddr = 0x1000\nu64be = [0x2000, 0xabcd]\n\n[[step]]\nop = \"guest_read\"\naddr = 0x1000\nwords = 2\nas = \"x\"\n";
    let text = format!(
        "{base}\n[[step]]\nop = \"guest_write\"\naddr = \"$x\"\nu64be = [\"$x.w1\"]\n\n[[step]]\nop = \"guest_read\"\naddr = 0x2000\nu64be = [0xabcd]\n"
    );
    let r = run(&text);
    assert!(r.all_held(), "{:?}", r.stopped);
    assert!(
        r.steps[1].outcome.contains("read [0x2000, 0xabcd]"),
        "{}",
        r.steps[1].outcome
    );
    let r = run(&format!("{base}u64be = [0x2000, 0xabce]\n"));
    assert!(!r.all_held());
    let err = refused(&format!(
        "{base}\n[[step]]\nop = \"guest_write\"\naddr = \"$x.w9\"\ndata = \"a\"\n"
    ));
    assert!(err.contains("w9"), "{err}");
    let r = run(&base.replace("words = 2", "words = 9"));
    assert!(!r.all_held());
}

/// `vfio_ioctl`: a raw container ioctl with the bytes the file spells out, by name or
/// number; the result and the buffer after it are named; bad names, two kinds of
/// argument and oversized buffers are refused before anything runs.
#[test]
fn raw_ioctls_take_explicit_bytes() {
    let text = format!(
        "{MACHINE}{STEPS}
[[step]]
op = \"vfio_ioctl\"
container = \"$c\"
nr = \"MAP_DMA\"
u64 = [0x300000020, \"$ram+64K\", \"$ddw+64K\", 0x10000]
expect = \"ok\"
state = {{ window.gpu0.1.mapped = 2 }}

[[step]]
op = \"vfio_ioctl\"
container = \"$c\"
nr = \"MAP_DMA\"
u64 = [0x300000010, \"$ram+128K\", \"$ddw+128K\", 0x10000]
expect = \"EINVAL\"
state = {{ window.gpu0.1.mapped = 2 }}

[[step]]
op = \"vfio_ioctl\"
container = \"$c\"
nr = 0x3b70
u32 = [32, 0, 0, 0, 0, 0, 0, 0]
as = \"info\"
expect = \"ok\"

[[step]]
op = \"vfio_ioctl\"
container = \"$c\"
nr = \"CHECK_EXTENSION\"
arg = 7
expect = \"1\"

[[step]]
op = \"vfio_ioctl\"
container = \"$c\"
nr = \"TCE_REMOVE\"
bytes = [16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 8]
expect = \"ok\"
state = {{ window.gpu0.1.exists = false }}
"
    );
    let r = run(&text);
    assert!(r.all_held(), "{:?}\n{:#?}", r.stopped, r.steps.last());
    let info = r.steps.iter().find(|s| s.op.contains("as info")).unwrap();
    assert!(
        info.outcome.contains("buffer after: [0x"),
        "{}",
        info.outcome
    );
    let step = |body: &str| {
        format!("{MACHINE}{STEPS}\n[[step]]\nop = \"vfio_ioctl\"\ncontainer = \"$c\"\n{body}\n")
    };
    let err = refused(&step("nr = \"MAP_DAM\""));
    assert!(
        err.contains("unknown container ioctl \"MAP_DAM\" (did you mean \"MAP_DMA\"?)"),
        "{err}"
    );
    let err = refused(&step("nr = \"ENABLE\"\narg = 1\nbytes = [1]"));
    assert!(err.contains("give one of arg, bytes, u32, u64"), "{err}");
    let err = refused(&step("nr = \"ENABLE\"\nbytes = [256]"));
    assert!(err.contains("does not fit in the 8-bit field"), "{err}");
    let big = vec!["0"; 513].join(", ");
    let err = refused(&step(&format!("nr = \"ENABLE\"\nu64 = [{big}]")));
    assert!(err.contains("at most 4096 bytes"), "{err}");
}

/// `stray_tce`: a TCE stored by no kernel path is judged by provenance: in a kernel
/// table it is an entry the allocator never handed out; in a user table, changed without
/// a kill after the PHB cached it, the cache goes stale until a kill.
#[test]
fn a_stray_tce_is_caught_by_the_checker() {
    let text = format!(
        "{MACHINE}{STEPS}
[[step]]
op = \"stray_tce\"
device = \"nic0\"
window = 0
entry = 5
tce = 0x10000003
state = {{ check.NoUserMappingAfterRelease = false, tce.nic0.0.5 = 0x10000003 }}

[[step]]
op = \"stray_tce\"
device = \"nic0\"
window = 0
entry = 5
tce = 0
state = {{ check.NoUserMappingAfterRelease = true }}

[[step]]
op = \"device_read\"
device = \"gpu0\"
addr = \"$ddw\"

[[step]]
op = \"stray_tce\"
device = \"gpu0\"
window = 1
entry = 0
tce = 0x20000003
state = {{ check.TceCacheCoherent = false }}

[[step]]
op = \"stray_tce\"
device = \"gpu0\"
window = 1
entry = 1
tce = 0
kill = true
state = {{ check.TceCacheCoherent = true, device.gpu0.reads.0x800000000000000 = 0x20000000 }}

[[step]]
op = \"stray_tce\"
device = \"gpu0\"
window = 1
entry = 0x100000000
tce = 0
expect = \"EINVAL\"
"
    );
    let r = run(&text);
    assert!(r.all_held(), "{:?}", r.stopped);
    assert!(r
        .trace
        .iter()
        .any(|e| e.detail.contains("stray TCE store outside VFIO")));
    let err = refused(&format!(
        "{MACHINE}[[step]]\nop = \"stray_tce\"\ndevice = \"nic0\"\nwindow = 0\nentry = 0\ntce = 0\nkill = 1\n"
    ));
    assert!(err.contains("true or false"), "{err}");
}

/// The PHB knobs kernel.md's tables need: a 32-bit window of size 0, tables without
/// xchg_no_kill, a second PHB whose create_table differs; each refusal as the kernel's.
#[test]
fn phb_knobs_reach_the_kernels_refusals() {
    let text = r#"
[machine]
kind = "powernv"
ram = "8G"

[[machine.phb]]
model = "ioda1"
tce32_size = 0
pes = [{ number = 1, bus = 1 }]

[[machine.phb]]
model = "ioda1"
xchg_no_kill = false
pes = [{ number = 1, bus = 1 }]

[[machine.phb]]
model = "phb4"
pes = [{ number = 1, bus = 1 }]

[[machine.phb]]
model = "phb4"
create_table = "npu"
pes = [{ number = 1, bus = 1 }]

[[machine.device]]
name = "a"
phb = 0
bus = 1

[[machine.device]]
name = "b"
phb = 1
bus = 1

[[machine.device]]
name = "c"
phb = 2
bus = 1

[[machine.device]]
name = "d"
phb = 3
bus = 1

[[step]]
op = "vfio_register_device"
device = "a"

[[step]]
op = "vfio_open_container"
as = "ca"

[[step]]
op = "vfio_open_group"
device = "a"
as = "ga"

[[step]]
op = "vfio_set_container"
group = "$ga"
container = "$ca"

[[step]]
op = "vfio_set_iommu"
container = "$ca"
type = 2

[[step]]
op = "vfio_enable"
container = "$ca"
expect = "EPERM"

[[step]]
op = "vfio_register_device"
device = "b"

[[step]]
op = "vfio_open_container"
as = "cb"

[[step]]
op = "vfio_open_group"
device = "b"
as = "gb"

[[step]]
op = "vfio_set_container"
group = "$gb"
container = "$cb"
expect = "EINVAL"
state = { group.b.owner = "none" }

[[step]]
op = "vfio_register_device"
device = "c"

[[step]]
op = "vfio_register_device"
device = "d"

[[step]]
op = "vfio_open_container"
as = "cc"

[[step]]
op = "vfio_open_group"
device = "c"
as = "gc"

[[step]]
op = "vfio_open_group"
device = "d"
as = "gd"

[[step]]
op = "vfio_set_container"
group = "$gc"
container = "$cc"

[[step]]
op = "vfio_set_iommu"
container = "$cc"
type = 7

[[step]]
op = "vfio_set_container"
group = "$gd"
container = "$cc"
expect = "EPERM"
state = { group.d.owner = "none" }
"#;
    let r = run(text);
    assert!(r.all_held(), "{:?}", r.stopped);
    let err = refused(&text.replace("create_table = \"npu\"", "create_table = \"np\""));
    assert!(err.contains("expected ioda2 or npu"), "{err}");
    let err = refused(&text.replace("tce32_size = 0", "tce32_size = \"8G\""));
    assert!(err.contains("past 4G"), "{err}");
}

/// An emulated (mdev) group reaches the attach row of kernel.md's table: -EINVAL.
#[test]
fn an_emulated_group_is_refused_at_attach() {
    let text = format!(
        "{MACHINE}{STEPS}
[[step]]
op = \"vfio_open_emulated_group\"
as = \"e\"
expect = \"ok\"

[[step]]
op = \"vfio_set_container\"
group = \"$e\"
container = \"$c\"
expect = \"EINVAL\"
"
    );
    let r = run(&text);
    assert!(r.all_held(), "{:?}", r.stopped);
}

/// `ddw_table` on an IODA1 PHB: a 64-bit device's kernel DMA goes through the second
/// table at the 64-bit base; refused on other PHB models.
#[test]
fn a_borrowing_pe_with_a_second_table() {
    let text = r#"
[machine]
kind = "powernv"
ram = "8G"

[[machine.phb]]
model = "ioda1"
ddw_table = true
pes = [{ number = 1, bus = 1 }]

[[machine.device]]
name = "nic0"
phb = 0
bus = 1
dma_mask = 64
driver = "ixgbe"

[[step]]
op = "dma_alloc"
device = "nic0"
size = "4K"
as = "b"
state = { window.nic0.1.kernel = true, window.nic0.1.mapped = 1, window.nic0.0.mapped = 0 }

[[step]]
op = "device_read"
device = "nic0"
addr = "$b.dma"
expect = "ok"
"#;
    let r = run(text);
    assert!(r.all_held(), "{:?}", r.stopped);
    let err = refused(&text.replace("model = \"ioda1\"", "model = \"phb4\""));
    assert!(err.contains("ddw_table is for ioda1 PHBs"), "{err}");
}
