//! `--svg`: the picture is well-formed XML and holds every window of the machine, each
//! mapped run, the bypass bars and every fault; names are escaped.

use spapr_iommu::doc::Source;
use spapr_iommu::engine;
use spapr_iommu::scenario;

fn svg_of(text: &str) -> String {
    let mut sc = scenario::parse(Source {
        name: "t.toml".into(),
        text: text.into(),
    })
    .unwrap_or_else(|e| panic!("{e}"));
    sc.svg = true;
    let r = engine::run(&sc, &mut |_| {});
    assert!(r.all_held(), "{:?}", r.stopped);
    r.svg.expect("asked for")
}

fn count(doc: &roxmltree::Document<'_>, tag: &str, class: &str) -> usize {
    doc.descendants()
        .filter(|n| n.has_tag_name(tag))
        .filter(|n| {
            n.attribute("class")
                .is_some_and(|c| c.split(' ').any(|w| w == class))
        })
        .count()
}

const DDW: &str = r#"name = "a <VM> & its \"GPU\""
[machine]
kind = "powernv"
ram = "8G"
eeh = true
[[machine.phb]]
model = "phb4"
pes = [{ number = 1, bus = 1 }, { number = 2, bus = 2 }]
[[machine.device]]
name = "gpu0"
phb = 0
bus = 1
[[machine.device]]
name = "nic0"
phb = 0
bus = 2
driver = "ixgbe"
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
size = "1G"
as = "ram"
[[step]]
op = "vfio_register_memory"
container = "$c"
vaddr = "$ram"
size = "1G"
[[step]]
op = "vfio_create_window"
container = "$c"
page_size = "64K"
window_size = "4G"
as = "ddw"
[[step]]
op = "vfio_map_dma"
container = "$c"
vaddr = "$ram"
iova = "$ddw"
size = "256M"
[[step]]
op = "vfio_map_dma"
container = "$c"
vaddr = "$ram+512M"
iova = "$ddw+2G"
size = "512M"
[[step]]
op = "device_read"
device = "gpu0"
addr = "$ddw+1G"
expect = "fault"
[[step]]
op = "device_read"
device = "nic0"
addr = 0x7000000000000000
expect = "fault"
"#;

#[test]
fn the_picture_is_well_formed_and_holds_every_window_run_and_fault() {
    let svg = svg_of(DDW);
    let doc = roxmltree::Document::parse(&svg).unwrap_or_else(|e| panic!("{e}\n{svg}"));
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    // gpu0: its two user windows; nic0: its kernel window 0 and the bypass bar.
    assert_eq!(count(&doc, "rect", "window"), 3, "{svg}");
    assert_eq!(count(&doc, "rect", "user"), 2);
    assert_eq!(count(&doc, "rect", "bypass"), 1);
    // The two MAPs, the bypass's RAM, nothing in nic0's idle window.
    assert_eq!(count(&doc, "rect", "mapped"), 3);
    // gpu0's fault sits on its DDW bar; nic0's is outside every window and listed.
    assert_eq!(count(&doc, "path", "fault"), 1);
    assert!(svg.contains("DMA fault at 0x800000040000000"));
    assert!(
        svg.contains("faults outside every window: 0x7000000000000000"),
        "{svg}"
    );
    assert_eq!(
        count(&doc, "text", "frozen"),
        2,
        "both PEs froze on their fault"
    );
    let title = doc
        .descendants()
        .find(|n| n.attribute("class") == Some("title"))
        .and_then(|n| n.text());
    assert_eq!(title, Some("a <VM> & its \"GPU\""));
}

#[test]
fn many_runs_are_drawn_with_at_most_one_rectangle_per_pixel() {
    let mut text = DDW.to_string();
    for k in 0..2000u64 {
        text.push_str(&format!(
            "[[step]]\nop = \"vfio_map_dma\"\ncontainer = \"$c\"\nvaddr = \"$ram\"\niova = \"$ddw+{}\"\nsize = \"64K\"\n",
            (1 << 30) + (1 << 28) + k * 2 * 65536
        ));
    }
    let svg = svg_of(&text);
    let doc = roxmltree::Document::parse(&svg).unwrap();
    let mapped = count(&doc, "rect", "mapped");
    assert!(mapped < 800, "{mapped} rectangles for 2002 runs");
    assert!(svg.contains("runs)"), "merged runs say how many they hold");
}

#[test]
fn every_example_draws_a_well_formed_picture() {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    for f in std::fs::read_dir(dir).unwrap() {
        let p = f.unwrap().path();
        if p.extension().is_none_or(|x| x != "toml") {
            continue;
        }
        let mut sc = scenario::parse(Source {
            name: p.display().to_string(),
            text: std::fs::read_to_string(&p).unwrap(),
        })
        .unwrap();
        sc.svg = true;
        let r = engine::run(&sc, &mut |_| {});
        let svg = r.svg.unwrap();
        roxmltree::Document::parse(&svg).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    }
}

#[test]
fn a_pseries_guest_is_drawn_with_its_liobn_windows_and_mappings() {
    let text = r#"
[machine]
kind = "pseries"

[[step]]
op = "h_put_tce"
liobn = 0x80000000
ioba = 0x10000
tce = 0x2003
expect = "H_SUCCESS"
"#;
    let svg = svg_of(text);
    let doc = roxmltree::Document::parse(&svg).unwrap();
    assert_eq!(
        count(&doc, "rect", "window"),
        1,
        "the default window; the DDW slot is off"
    );
    assert_eq!(count(&doc, "rect", "mapped"), 1);
    assert!(svg.contains("LIOBN 0x80000000"));
    assert!(svg.contains("mapped 0x10000..0x11000"), "{svg}");
}
