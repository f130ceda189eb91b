//! The built-in default scenario, as far as the layers that exist reach: the TCE engine.
//! A PowerNV-style 64-bit DMA window (64K pages at 1<<59, 2 levels on a 64K-page host) is
//! created, pages are mapped and unmapped, and device accesses are translated, each step
//! with the outcome it must have.

use serde::Serialize;
use spapr_tce::{
    Access, Fault, Hpa, Iova, KillCounter, PageShift, TableGeometry, TableOptions, Tce, TceError,
    TceIndex, TcePerm, TceTable,
};
use std::fmt::Write as _;
use std::sync::Arc;

/// One step and whether its expectation held.
#[derive(Debug, Serialize)]
pub struct StepReport {
    /// Step number, from 1.
    pub n: usize,
    /// What the step did.
    pub op: String,
    /// What it was expected to produce.
    pub expect: String,
    /// What it produced.
    pub outcome: String,
    /// Whether they match.
    pub held: bool,
}

/// One invariant check.
#[derive(Debug, Serialize)]
pub struct CheckReport {
    /// The invariant.
    pub name: String,
    /// Whether it holds.
    pub held: bool,
    /// Evidence.
    pub detail: String,
}

/// A node of the state tree.
#[derive(Debug, Serialize)]
pub struct Node {
    /// The node's text.
    pub label: String,
    /// Its children.
    pub children: Vec<Node>,
}

/// Everything a run prints.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// Steps in order.
    pub steps: Vec<StepReport>,
    /// State at the end of the run.
    pub state: Node,
    /// Invariant checks.
    pub checks: Vec<CheckReport>,
    /// Core events, one line each.
    pub trace: Vec<String>,
}

impl Report {
    /// Whether every step and check held.
    pub fn all_held(&self) -> bool {
        self.steps.iter().all(|s| s.held) && self.checks.iter().all(|c| c.held)
    }

    /// The report as text.
    pub fn render_text(&self, with_trace: bool) -> String {
        let mut s = format!("scenario: {}\n\nsteps:\n", self.scenario);
        for st in &self.steps {
            let _ = writeln!(
                s,
                "  {:>2}. [{}] {} -> {}{}",
                st.n,
                if st.held { "ok" } else { "FAILED" },
                st.op,
                st.outcome,
                if st.held {
                    String::new()
                } else {
                    format!(" (expected {})", st.expect)
                }
            );
        }
        if with_trace {
            let _ = writeln!(s, "\ntrace:");
            for line in &self.trace {
                let _ = writeln!(s, "  {line}");
            }
        }
        let _ = writeln!(s, "\nstate:\n{}", to_tree(&self.state));
        let _ = writeln!(s, "checks:");
        for c in &self.checks {
            let _ = writeln!(
                s,
                "  [{}] {}: {}",
                if c.held { "ok" } else { "VIOLATED" },
                c.name,
                c.detail
            );
        }
        let held = self.steps.iter().filter(|x| x.held).count()
            + self.checks.iter().filter(|x| x.held).count();
        let total = self.steps.len() + self.checks.len();
        let _ = writeln!(s, "\n{held}/{total} expectations held");
        s
    }
}

fn to_tree(n: &Node) -> termtree::Tree<String> {
    termtree::Tree::new(n.label.clone()).with_leaves(n.children.iter().map(to_tree))
}

struct Runner {
    steps: Vec<StepReport>,
}

impl Runner {
    fn step(
        &mut self,
        op: impl Into<String>,
        expect: impl Into<String>,
        outcome: impl Into<String>,
    ) {
        let (expect, outcome) = (expect.into(), outcome.into());
        self.steps.push(StepReport {
            n: self.steps.len() + 1,
            op: op.into(),
            held: expect == outcome,
            expect,
            outcome,
        });
    }
}

fn outcome(r: Result<(), TceError>) -> String {
    match r {
        Ok(()) => "ok".into(),
        Err(TceError::IndexOutOfWindow { .. } | TceError::RangeOutOfWindow { .. }) => {
            "error: index outside the window".into()
        }
        Err(e) => format!("error: {e}"),
    }
}

fn fault_name(r: &Result<Hpa, Fault>) -> String {
    match r {
        Ok(h) => format!("{h:?}"),
        Err(Fault::OutsideWindow { .. }) => "fault: outside window".into(),
        Err(Fault::NoEntry { .. }) => "fault: no entry".into(),
        Err(Fault::Permission { .. }) => "fault: permission".into(),
    }
}

fn errno_outcome<T>(r: Result<T, iommu_core::Errno>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => e.to_string(),
    }
}

/// The IOMMU core part: a generic page-table IOMMU with two devices, a kernel driver, and a
/// user claiming a group (what VFIO does), with the ownership rules refusing what they must.
fn core_part(r: &mut Runner) -> (Node, Vec<CheckReport>, Vec<String>) {
    use iommu_core::simple::SimpleIommu;
    use iommu_core::{Core, DeviceInfo, OwnerCookie};
    let core = Core::new();
    core.register_instance("simple-iommu0", SimpleIommu::new(&core, 16, false));
    let nic = core.add_device(DeviceInfo::platform("nic0", 0));
    let nvme = core.add_device(DeviceInfo::platform("nvme0", 1));
    r.step(
        "core: bind kernel driver nvme to nvme0",
        "ok",
        errno_outcome(core.bind_driver(nvme, "nvme", false)),
    );
    r.step(
        "core: bind kernel driver e1000 to nic0",
        "ok",
        errno_outcome(core.bind_driver(nic, "e1000", false)),
    );
    let group = core.device_group(nvme).ok().flatten();
    let claim = |owner| match &group {
        Some(g) => core.claim_group(g, owner),
        None => Err(iommu_core::Errno::Enodev),
    };
    r.step(
        "core: user claims nvme0's group while nvme is bound",
        "EPERM",
        errno_outcome(claim(OwnerCookie(0x1))),
    );
    r.step(
        "core: unbind nvme from nvme0",
        "ok",
        errno_outcome(core.unbind_driver(nvme)),
    );
    let held = claim(OwnerCookie(0x1));
    r.step(
        "core: user claims nvme0's group",
        "ok",
        errno_outcome(held.as_ref().map(drop).map_err(|e| *e)),
    );
    r.step(
        "core: bind kernel driver nvme to the user-owned nvme0",
        "EBUSY",
        errno_outcome(core.bind_driver(nvme, "nvme", false)),
    );
    let mut checks = vec![CheckReport {
        name: "core: security invariants while the group is user-owned".into(),
        held: core.check().is_empty(),
        detail: format!("{} violations", core.check().len()),
    }];
    let mut tree = Node {
        label: "iommu core (generic page-table driver), seen while nvme0's group is user-owned"
            .into(),
        children: Vec::new(),
    };
    for inst in core.instances() {
        let mut inode = Node {
            label: format!("instance {inst}"),
            children: Vec::new(),
        };
        for g in core.groups() {
            let v = core.group_view(&g);
            let mut gnode = Node {
                label: format!(
                    "group {}: domain {}, default {}, owner {}, owner_cnt {}",
                    v.name,
                    v.domain.map_or("none".into(), |d| d.to_string()),
                    v.default_domain.map_or("none".into(), |d| d.to_string()),
                    v.owner.map_or("kernel".into(), |o| format!("{:#x}", o.0)),
                    v.owner_cnt
                ),
                children: Vec::new(),
            };
            for dv in core
                .devices()
                .into_iter()
                .filter(|d| v.devices.contains(&d.id))
            {
                gnode.children.push(Node {
                    label: format!(
                        "device {} ({}), driver {}",
                        dv.info.name,
                        dv.info.addr,
                        dv.driver.map_or("none".into(), |b| b.name)
                    ),
                    children: Vec::new(),
                });
            }
            inode.children.push(gnode);
        }
        tree.children.push(inode);
    }
    let release = held.map(|c| c.release());
    r.step(
        "core: user releases the group",
        "ok",
        errno_outcome(release.and_then(|x| x)),
    );
    r.step(
        "core: bind kernel driver nvme to nvme0 again",
        "ok",
        errno_outcome(core.bind_driver(nvme, "nvme", false)),
    );
    checks.push(CheckReport {
        name: "core: security invariants after the release".into(),
        held: core.check().is_empty(),
        detail: format!("{} violations", core.check().len()),
    });
    let trace = core.take_trace().iter().map(ToString::to_string).collect();
    (tree, checks, trace)
}

/// Runs the default scenario.
pub fn run_default() -> Report {
    let mut r = Runner { steps: Vec::new() };
    let (core_tree, core_checks, core_trace) = core_part(&mut r);
    let base = 1u64 << 59;
    let kills = Arc::new(KillCounter::default());
    let geometry = TableGeometry::ioda2(Iova(base), PageShift::K64, 1 << 40, 2, 16);
    r.step(
        "create window 1: 1 TiB of 64K pages at 1<<59, 2 levels",
        "ok",
        outcome(geometry.as_ref().map(drop).map_err(Clone::clone)),
    );
    let core = (core_tree, core_checks, core_trace);
    let Ok(g) = geometry else {
        return finish(r, None, &kills, core);
    };
    let table = match TceTable::with_kill(g, TableOptions::powernv(), kills.clone()) {
        Ok(t) => t,
        Err(e) => {
            r.step("allocate the top level", "ok", e.to_string());
            return finish(r, None, &kills, core);
        }
    };
    let first = g.first_index().0;
    let tces: Vec<Tce> = (0..16u64)
        .map(|k| Tce::new(0x2_0000_0000 + (k << 16), TcePerm::READ_WRITE))
        .collect();
    r.step(
        "map 16 pages rw at iova 1<<59 -> hpa 0x200000000 (batched put)",
        "ok",
        outcome(table.put_batch(TceIndex(first), &tces)),
    );
    r.step(
        "map 1 page read-only at iova (1<<59)+1GiB -> hpa 0x300000000",
        "ok",
        outcome(table.set(
            TceIndex(first + (1 << 14)),
            Tce::new(0x3_0000_0000, TcePerm::READ),
        )),
    );
    r.step(
        "device writes iova (1<<59)+0x12345",
        "hpa:0x200012345",
        fault_name(&table.translate(Iova(base + 0x12345), Access::Write)),
    );
    r.step(
        "device writes the read-only page",
        "fault: permission",
        fault_name(&table.translate(Iova(base + (1 << 30)), Access::Write)),
    );
    r.step(
        "device reads an unmapped page",
        "fault: no entry",
        fault_name(&table.translate(Iova(base + (1 << 20)), Access::Read)),
    );
    r.step(
        "device reads below the window",
        "fault: outside window",
        fault_name(&table.translate(Iova(0x1000), Access::Read)),
    );
    r.step(
        "map past the end of the window",
        "error: index outside the window",
        outcome(table.set(g.end_index(), Tce::new(0x1000, TcePerm::READ))),
    );
    let stats = table.clear(g.first_index(), 8);
    r.step(
        "unmap the first 8 pages",
        "cleared 8",
        stats
            .map(|s| format!("cleared {}", s.cleared))
            .unwrap_or_else(|e| e.to_string()),
    );
    r.step(
        "device reads an unmapped page again",
        "fault: no entry",
        fault_name(&table.translate(Iova(base + 0x1000), Access::Read)),
    );
    finish(r, Some(&table), &kills, core)
}

fn finish(
    r: Runner,
    table: Option<&TceTable<Hpa, Arc<KillCounter>>>,
    kills: &KillCounter,
    core: (Node, Vec<CheckReport>, Vec<String>),
) -> Report {
    let (core_tree, mut checks, trace) = core;
    let mut state = Node {
        label: "machine (IOMMU core and TCE engine; PHBs, PEs and VFIO arrive with their layers)"
            .into(),
        children: vec![core_tree],
    };
    if let Some(t) = table {
        let g = t.geometry();
        let leaf_bytes = t.allocated_leaves() * g.lower_level_bytes();
        let mut window = Node {
            label: format!(
                "TCE table (a PE's window 1): bus {:#x}..{:#x}, {}K pages, {} levels, {} entries, {} bytes held",
                g.bus_offset().0,
                g.bus_offset().0.saturating_add(g.window_size()),
                g.page_shift().size() >> 10,
                g.levels(),
                g.entries(),
                t.allocated_bytes()
            ),
            children: Vec::new(),
        };
        for run in t.mapped_runs() {
            let page = g.page_shift().size();
            let iova = run.first.0 << g.page_shift().shift();
            window.children.push(Node {
                label: format!(
                    "iova {:#x}..{:#x} -> hpa {:#x} {:?} ({} pages)",
                    iova,
                    iova + run.count * page,
                    run.tce.page_addr(g.page_shift().shift()),
                    run.tce.perm(),
                    run.count
                ),
                children: Vec::new(),
            });
        }
        state.children.push(window);
        checks.push(CheckReport {
            name: "lazy levels: bytes held follow what was mapped".into(),
            held: t.allocated_bytes() <= g.top_bytes() + leaf_bytes,
            detail: format!(
                "{} bytes held: top level {} + {} leaves of {}",
                t.allocated_bytes(),
                g.top_bytes(),
                t.allocated_leaves(),
                g.lower_level_bytes()
            ),
        });
        checks.push(CheckReport {
            name: "every update invalidated the TCE cache".into(),
            held: kills.range_kills() == 3,
            detail: format!(
                "{} range kills covering {} entries",
                kills.range_kills(),
                kills.entries_killed()
            ),
        });
    }
    Report {
        scenario: "built-in default (IOMMU core and TCE engine demonstration)".into(),
        steps: r.steps,
        state,
        checks,
        trace,
    }
}
