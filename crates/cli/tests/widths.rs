//! Every number is checked at the width of the field it feeds: a value that does not fit
//! is an error naming the field (never truncated or wrapped), negative numbers are refused
//! where the field is unsigned, a `vary` that leaves the field's range is an error before
//! anything runs (or at the repetition where a `$` result takes it out), and hot_add
//! applies [machine]'s checks.

use spapr_iommu::doc::Source;
use spapr_iommu::engine;
use spapr_iommu::scenario;

const PNV: &str = "[machine]\nkind = \"powernv\"\nram = \"4G\"\n[[machine.phb]]\nmodel = \"phb4\"\npes = [{ number = 1, bus = 1 }]\n[[machine.device]]\nname = \"nic0\"\nphb = 0\nbus = 1\n";
const PSERIES: &str = "[machine]\nkind = \"pseries\"\nram = \"1G\"\n";

fn parse(text: &str) -> Result<scenario::Scenario, String> {
    scenario::parse(Source {
        name: "t.toml".into(),
        text: text.into(),
    })
    .map_err(|e| e.to_string())
}

fn refused(text: &str, want: &str) {
    match parse(text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => assert!(e.contains(want), "{e}\nwanted: {want}"),
    }
}

#[test]
fn literals_that_do_not_fit_their_field_are_refused() {
    let step = |s: &str| format!("{PNV}[[step]]\n{s}\n");
    refused(
        &step("op = \"hot_add\"\ndevice = \"x\"\nphb = 0\nbus = 256"),
        "bus of hot_add: 0x100 does not fit in the 8-bit field",
    );
    refused(
        &step("op = \"hot_add\"\ndevice = \"x\"\nphb = 0x100000000\nbus = 1"),
        "phb of hot_add: 0x100000000 does not fit in the 32-bit field",
    );
    refused(
        &step("op = \"hot_add\"\ndevice = \"x\"\nphb = 0\nbus = 1\ndma_mask = 65"),
        "dma_mask of hot_add is a width in bits, 1..=64; found 65",
    );
    refused(
        &step("op = \"vfio_close_container\"\ncontainer = 4294967296"),
        "does not fit in the 32-bit field",
    );
    refused(
        &step("op = \"vfio_map_dma\"\ncontainer = 4\nvaddr = 0\niova = 0\nsize = 4096\nargsz = -1"),
        "argsz of vfio_map_dma must be 0 or more, found -1",
    );
    refused(
        &step("op = \"dma_map\"\ndevice = \"nic0\"\nphys = -4096\nsize = 4096"),
        "must be 0 or more",
    );
    let rt = |s: &str| format!("{PSERIES}[[step]]\n{s}\n");
    refused(
        &rt("op = \"rtas\"\ncall = \"query\"\nargs = [0x100000000]"),
        "args of rtas: 0x100000000 does not fit in the 32-bit field",
    );
    refused(
        &rt("op = \"rtas\"\ncall = \"query\"\nargs = [-2147483649]"),
        "does not fit in 32 bits",
    );
    // A negative RTAS status word is legal where statuses go.
    assert!(parse(&rt(
        "op = \"rtas\"\ncall = \"query\"\nargs = [1, 2, 3]\nrets = [-3]"
    ))
    .is_ok());
}

#[test]
fn machine_fields_are_checked_at_their_width_and_point_at_the_field() {
    let dev = |extra: &str| {
        format!("[machine]\nkind = \"powernv\"\n[[machine.phb]]\nmodel = \"phb4\"\npes = [{{ number = 1, bus = 1 }}]\n[[machine.device]]\nname = \"d\"\nphb = 0\nbus = 1\n{extra}\n")
    };
    refused(
        &dev("dma_mask = 4294967296"),
        "dma_mask is a width in bits, 1..=64",
    );
    refused(&dev("dma_mask = 0"), "dma_mask is a width in bits, 1..=64");
    let e = parse(&dev("devfn = 300")).unwrap_err();
    assert!(e.contains("devfn must be 0..=255, found 300"), "{e}");
    assert!(e.starts_with("t.toml:10:"), "points at the devfn line: {e}");
    refused(
        "[machine]\nkind = \"pseries\"\n[[machine.phb]]\nindex = 4294967296\n",
        "index must fit in 32 bits",
    );
}

#[test]
fn a_vary_that_leaves_the_field_is_an_error_before_anything_runs() {
    refused(
        &format!("{PNV}[[step]]\nop = \"hot_add\"\ndevice = \"x\"\nphb = 0\nbus = 250\nrepeat = 10\nvary = {{ bus = 1 }}\n"),
        "vary bus: after 10 repetitions bus leaves 0..=0xff",
    );
    refused(
        &format!("{PSERIES}[[step]]\nop = \"h_put_tce\"\nliobn = 0x80000000\nioba = 4096\ntce = 3\nrepeat = 3\nvary = {{ ioba = -4096 }}\n"),
        "vary ioba: after 3 repetitions ioba leaves",
    );
    refused(
        &format!("{PSERIES}[[step]]\nop = \"h_put_tce\"\nliobn = 0x80000000\nioba = \"0xffffffffffff0000\"\ntce = 3\nrepeat = 100000\nvary = {{ ioba = \"4K\" }}\n"),
        "leaves 0..=0xffffffffffffffff",
    );
}

#[test]
fn vary_may_step_down() {
    let text = format!(
        "{PSERIES}[[step]]\nop = \"h_put_tce\"\nliobn = 0x80000000\nioba = \"12K\"\ntce = 3\nrepeat = 4\nvary = {{ ioba = \"-4K\" }}\nexpect = \"H_SUCCESS\"\n\n\
         [[step]]\nop = \"h_get_tce\"\nliobn = 0x80000000\nioba = 0\nvalue = 3\nexpect = \"H_SUCCESS\"\n"
    );
    let r = engine::run(&parse(&text).unwrap(), &mut |_| {});
    assert!(r.all_held(), "{}", r.steps_text());
    assert_eq!(r.steps[0].runs, 4);
}

#[test]
fn hot_add_fails_with_an_errno_when_nothing_is_added() {
    let step = |s: &str| format!("{PNV}[[step]]\nop = \"hot_add\"\n{s}\n");
    for (body, errno) in [
        (
            "device = \"nic0\"\nphb = 0\nbus = 1\ndevfn = 1\nexpect = \"EEXIST\"",
            "a name twice",
        ),
        (
            "device = \"nic1\"\nphb = 0\nbus = 1\nexpect = \"EEXIST\"",
            "an address twice",
        ),
        (
            "device = \"nic1\"\nphb = 3\nbus = 1\nexpect = \"ENODEV\"",
            "no such PHB",
        ),
        (
            "device = \"nic1\"\nphb = 0\nbus = 1\ndevfn = 1\ndma_mask = 16\nexpect = \"EINVAL\"",
            "a mask the platform refuses",
        ),
    ] {
        let r = engine::run(&parse(&step(body)).unwrap(), &mut |_| {});
        assert!(r.all_held(), "{errno}: {}", r.steps_text());
    }
}

/// A name the file gets wrong is echoed at most 80 characters long, and a huge one gets
/// no suggestion (the edit distance is bounded).
#[test]
fn echoed_names_are_cut_and_suggestions_bounded() {
    let long = "x".repeat(1 << 20);
    let e = parse(&format!("{PSERIES}[[step]]\nop = \"{long}\"\n")).unwrap_err();
    assert!(
        e.contains(&format!(
            "unknown operation \"{}\"... (1048576 bytes)",
            "x".repeat(80)
        )),
        "{}",
        &e[..200.min(e.len())]
    );
    assert!(e.len() < 400, "{}", e.len());
    assert!(!e.contains("did you mean"));
    let e = parse(&format!("{PSERIES}[[step]]\nop = \"h_put_tec\"\n")).unwrap_err();
    assert!(
        e.contains("unknown operation \"h_put_tec\"; did you mean \"h_put_tce\"?"),
        "{e}"
    );
}
