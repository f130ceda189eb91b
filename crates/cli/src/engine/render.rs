//! The state trees `show` prints, one per machine kind, and the pictures `--svg` draws.

use super::*;

pub(super) fn size(n: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (1 << 40, "T"),
        (1 << 30, "G"),
        (1 << 20, "M"),
        (1 << 10, "K"),
    ];
    for (u, s) in UNITS {
        if n >= u && n % u == 0 {
            return format!("{}{s}", n / u);
        }
    }
    format!("{n:#x}")
}

pub(super) fn bytes(n: u64) -> String {
    if n < 1024 {
        format!("{n} B")
    } else if n < 1 << 20 {
        format!("{:.1} KiB", n as f64 / 1024.0)
    } else {
        format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64)
    }
}

pub(super) fn perm(bits: u64) -> &'static str {
    match bits & 3 {
        1 => "R",
        2 => "W",
        3 => "RW",
        _ => "-",
    }
}

/// The PowerNV state tree; `full` lists every run of valid TCEs with its raw 64-bit value
/// (else the first 8 runs of each window).
pub(super) fn powernv_tree(
    m: &PowerNv,
    vfio: &Vfio,
    containers: &[ContainerFd],
    full: bool,
) -> Node {
    let cap = if full { usize::MAX } else { 8 };
    let mut phbs = Vec::new();
    for phb in m.snapshot() {
        let mut pes = Vec::new();
        for pe in &phb.pes {
            let mut kids = Vec::new();
            for (name, addr, driver, has_table, bypass) in &pe.devices {
                kids.push(Node::leaf(format!(
                    "device {name} {addr}, driver {}, kernel DMA {}",
                    driver.as_deref().unwrap_or("none"),
                    if *bypass {
                        "direct (bypass)"
                    } else if *has_table {
                        "via window 0"
                    } else {
                        "none"
                    }
                )));
            }
            for w in &pe.windows {
                let runs: Vec<Node> = w
                    .runs
                    .iter()
                    .take(cap)
                    .map(|r| {
                        let ps = w.page_size;
                        let iova = (r.first.0) * ps;
                        let raw = if full {
                            format!(
                                " (entry {:#x} x{}, first TCE {:#018x})",
                                (iova - w.start) / ps,
                                r.count,
                                r.tce.0
                            )
                        } else {
                            String::new()
                        };
                        Node::leaf(format!(
                            "{iova:#x}+{} -> {:#x} {}{raw}",
                            size(r.count * ps),
                            r.tce.page_addr(ps.trailing_zeros()),
                            perm(r.tce.0)
                        ))
                    })
                    .chain(
                        (w.runs.len() > cap)
                            .then(|| Node::leaf(format!("... {} more runs", w.runs.len() - cap))),
                    )
                    .collect();
                kids.push(Node::new(
                    format!(
                        "window {} TVE#{} {:#x}+{}, {} pages, {} level{}, {} table, {} of TCE levels",
                        w.num,
                        w.tve,
                        w.start,
                        size(w.size),
                        size(w.page_size),
                        w.levels,
                        if w.levels == 1 { "" } else { "s" },
                        if w.kernel { "kernel" } else { "user" },
                        bytes(w.table_bytes)
                    ),
                    runs,
                ));
            }
            kids.push(Node::leaf(match pe.tve1 {
                Tve1::Bypass { size: s } => format!(
                    "TVE#{} bypass {:#x}+{} -> all RAM",
                    pe.number * 2 + 1,
                    BYPASS_BASE,
                    size(s)
                ),
                Tve1::Off => format!("TVE#{} off", pe.number * 2 + 1),
                Tve1::Table => format!("TVE#{} window 1", pe.number * 2 + 1),
            }));
            let owner = match pe.owner {
                Some(o) => format!("user {:#x}", o.0),
                None => "kernel".into(),
            };
            pes.push(Node::new(
                format!(
                    "PE {} group {} [{}] owner {owner} (owner_cnt {}), kills {} range / {} PE-wide",
                    pe.number,
                    pe.group.as_deref().unwrap_or("none"),
                    pe.domain
                        .map_or("no domain".into(), |d: DomainType| d.to_string()),
                    pe.owner_cnt,
                    pe.kills.0,
                    pe.kills.1
                ),
                kids,
            ));
        }
        phbs.push(Node::new(
            format!("PHB {} ({}, {})", phb.index, phb.model.name(), phb.iommu),
            pes,
        ));
    }
    for c in containers {
        let wins = vfio.windows(*c);
        if wins.is_empty() && !vfio.default_window_pending(*c) {
            continue;
        }
        phbs.push(Node::new(
            format!(
                "VFIO container fd {}{}",
                c.0,
                if vfio.default_window_pending(*c) {
                    " (default window pending)"
                } else {
                    ""
                }
            ),
            wins.iter()
                .map(|w| {
                    Node::leaf(format!(
                        "window {} {:#x}+{}, {} pages, {} level{}, {} TCEs mapped",
                        w.num,
                        w.start,
                        size(w.size),
                        size(w.page_size),
                        w.levels,
                        if w.levels == 1 { "" } else { "s" },
                        w.mapped
                    ))
                })
                .collect(),
        ));
    }
    Node::new(
        format!(
            "PowerNV machine: {} PHBs, {} RAM, {} host pages, design {}",
            m.phbs().len(),
            size(m.ram().size()),
            size(1 << m.env().host_page_shift),
            m.design().name()
        ),
        phbs,
    )
}

pub(super) fn pseries_tree(s: &Spapr, guest: &LinuxGuestDdw) -> Node {
    let mut kids = Vec::new();
    for p in s.phbs() {
        let mut wins = Vec::new();
        for sl in p.windows() {
            let label = match &sl.table {
                Some(t) => {
                    let ps = 1u64 << t.page_shift();
                    let runs: Vec<Node> = t
                        .mapped_runs()
                        .iter()
                        .take(8)
                        .map(|r| {
                            Node::leaf(format!(
                                "{:#x}+{} -> {:#x} {}",
                                r.first.0 * ps,
                                size(r.count * ps),
                                r.tce.0 & !(ps - 1),
                                perm(r.tce.0)
                            ))
                        })
                        .collect();
                    wins.push(Node::new(
                        format!(
                            "LIOBN {:#x}: {:#x}+{}, {} pages, {} entries{}",
                            sl.liobn,
                            t.bus_offset(),
                            size(t.nb_table() * ps),
                            size(ps),
                            t.nb_table(),
                            if sl.def_win { ", def_win" } else { "" }
                        ),
                        runs,
                    ));
                    continue;
                }
                None => format!(
                    "LIOBN {:#x}: disabled{}",
                    sl.liobn,
                    if sl.def_win { " (def_win)" } else { "" }
                ),
            };
            wins.push(Node::leaf(label));
        }
        // What the guest kernel's enable_ddw made of this PHB, if it ran.
        let kernel = match guest.window(p.buid()) {
            Some(w) => format!(
                "; guest kernel: DDW liobn {:#x}{}",
                w.liobn,
                if w.direct { " direct" } else { " table" }
            ),
            None if guest.failed(p.buid()) => "; guest kernel: DDW failed".to_string(),
            None => String::new(),
        };
        kids.push(Node::new(
            format!(
                "PHB {} BUID {:#x}, DDW {}{kernel}",
                p.config().index,
                p.buid(),
                if p.config().ddw { "on" } else { "off" }
            ),
            wins,
        ));
    }
    for v in s.vio() {
        kids.push(Node::leaf(format!(
            "VIO {:#x}: 0x0+{}, 4K pages, {} TCEs mapped",
            v.config().reg,
            size(v.config().window_size),
            v.table().count_mapped()
        )));
    }
    Node::new(
        format!(
            "pSeries guest: {} RAM, profile {}",
            size(s.ram_size()),
            s.profile().name()
        ),
        kids,
    )
}

/// A PowerNV machine as a picture, with the DMA faults of the run's `trace`.
pub(super) fn powernv_svg(title: &str, m: &PowerNv, trace: &[TraceEvent]) -> String {
    // Faults by device, from the trace: "Read: 0x1000: ...".
    let mut faults: HashMap<String, Vec<u64>> = HashMap::new();
    for e in trace.iter().filter(|e| e.kind.ends_with("Fault")) {
        let (Some(dev), Some(at)) = (&e.device, e.detail.find("0x")) else {
            continue;
        };
        let hex: String = e.detail[at + 2..]
            .chars()
            .take_while(char::is_ascii_hexdigit)
            .collect();
        if let Ok(a) = u64::from_str_radix(&hex, 16) {
            faults.entry(dev.clone()).or_default().push(a);
        }
    }
    let snap = m.snapshot();
    let extras = |phb: u32, pe: u32| {
        let mut x = crate::svg::PeExtras::default();
        if let Some(p) = m
            .phbs()
            .get(phb as usize)
            .and_then(|p| p.pes.iter().find(|q| q.number == pe))
        {
            x.eeh_state = p.eeh_state_value();
            for d in p.device_names() {
                x.faults.extend(faults.get(&d).into_iter().flatten());
            }
        }
        x
    };
    crate::svg::powernv(title, &snap, &extras)
}

/// A pSeries guest's PHBs and enabled LIOBN windows as a picture.
pub(super) fn pseries_svg(title: &str, s: &Spapr) -> String {
    let phbs: Vec<crate::svg::GuestPhb> = s
        .phbs()
        .iter()
        .enumerate()
        .map(|(i, p)| crate::svg::GuestPhb {
            label: format!("PHB {i} BUID {:#x}", p.buid()),
            windows: p
                .windows()
                .iter()
                .filter_map(|sl| {
                    let t = sl.table.as_ref()?;
                    let ps = 1u64 << t.page_shift();
                    let runs = t
                        .mapped_runs()
                        .iter()
                        .map(|r| (r.first.0 * ps, r.count * ps))
                        .collect();
                    Some(crate::svg::GuestWindow {
                        label: format!("LIOBN {:#x}", sl.liobn),
                        start: t.bus_offset(),
                        size: t.nb_table() * ps,
                        runs,
                    })
                })
                .collect(),
        })
        .collect();
    crate::svg::pseries(title, &phbs)
}
