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
}

impl Report {
    /// Whether every step and check held.
    pub fn all_held(&self) -> bool {
        self.steps.iter().all(|s| s.held) && self.checks.iter().all(|c| c.held)
    }

    /// The report as text.
    pub fn render_text(&self) -> String {
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

/// Runs the default scenario.
pub fn run_default() -> Report {
    let mut r = Runner { steps: Vec::new() };
    let base = 1u64 << 59;
    let kills = Arc::new(KillCounter::default());
    let geometry = TableGeometry::ioda2(Iova(base), PageShift::K64, 1 << 40, 2, 16);
    r.step(
        "create window 1: 1 TiB of 64K pages at 1<<59, 2 levels",
        "ok",
        outcome(geometry.as_ref().map(drop).map_err(Clone::clone)),
    );
    let Ok(g) = geometry else {
        return finish(r, None, &kills);
    };
    let table = match TceTable::with_kill(g, TableOptions::powernv(), kills.clone()) {
        Ok(t) => t,
        Err(e) => {
            r.step("allocate the top level", "ok", e.to_string());
            return finish(r, None, &kills);
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
    finish(r, Some(&table), &kills)
}

fn finish(
    r: Runner,
    table: Option<&TceTable<Hpa, Arc<KillCounter>>>,
    kills: &KillCounter,
) -> Report {
    let mut checks = Vec::new();
    let mut state = Node {
        label: "machine (TCE engine only; PHBs, PEs and VFIO arrive with their layers)".into(),
        children: Vec::new(),
    };
    if let Some(t) = table {
        let g = t.geometry();
        let leaf_bytes = t.allocated_leaves() * g.lower_level_bytes();
        let mut window = Node {
            label: format!(
                "window 1: bus {:#x}..{:#x}, {}K pages, {} levels, {} entries, {} bytes held",
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
        scenario: "built-in default (TCE engine demonstration)".into(),
        steps: r.steps,
        state,
        checks,
    }
}
