//! What a run prints: steps with outcomes, the state tree, invariant checks, the trace.

use serde::Serialize;
use std::fmt::Write as _;

/// One step (or one repetition that failed) and whether its expectation held.
#[derive(Debug, Serialize, Clone)]
pub struct StepReport {
    /// Step number, from 1.
    pub n: usize,
    /// Line in the file.
    pub line: usize,
    /// What the step did.
    pub op: String,
    /// What it was expected to produce (empty: no expectation).
    pub expect: String,
    /// What it produced.
    pub outcome: String,
    /// Whether they match.
    pub held: bool,
    /// Times the operation ran.
    pub runs: u64,
    /// The state at this point (`show` steps).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<Node>,
    /// The step's `state` expectations, each with what was found.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub state_checks: Vec<StateCheck>,
    /// The call failed and the step has no `expect`: allowed, but not shown as ok.
    pub failed_allowed: bool,
}

/// One `state` expectation of a step and what the machine held.
#[derive(Debug, Serialize, Clone, PartialEq, Eq)]
pub struct StateCheck {
    /// The path, as the file writes it.
    pub path: String,
    /// What the file expects.
    pub expected: String,
    /// What was found.
    pub actual: String,
    /// Whether they match.
    pub held: bool,
}

/// One invariant check.
#[derive(Debug, Serialize, Clone)]
pub struct CheckReport {
    /// The invariant.
    pub name: String,
    /// Whether it holds.
    pub held: bool,
    /// Evidence.
    pub detail: String,
}

/// A node of the state tree.
#[derive(Debug, Serialize, Clone)]
pub struct Node {
    /// The node's text.
    pub label: String,
    /// Its children.
    pub children: Vec<Node>,
}

impl Node {
    /// A node.
    pub fn new(label: impl Into<String>, children: Vec<Node>) -> Self {
        Self {
            label: label.into(),
            children,
        }
    }
    /// A leaf.
    pub fn leaf(label: impl Into<String>) -> Self {
        Self::new(label, Vec::new())
    }
}

/// Everything a run prints.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// Steps in order (a run stops at the first unmet expectation).
    pub steps: Vec<StepReport>,
    /// Why the run stopped early, if it did.
    pub stopped: Option<String>,
    /// State at the end of the run.
    pub state: Node,
    /// Invariant checks.
    pub checks: Vec<CheckReport>,
    /// Events in step order (step 0: the machine's boot), each as typed fields.
    pub trace: Vec<TraceEvent>,
    /// The final machine drawn as an SVG, when the scenario asked for it.
    #[serde(skip)]
    pub svg: Option<String>,
}

/// One event of the trace: the step that caused it and what happened.
#[derive(Debug, Serialize, Clone, PartialEq, Eq)]
pub struct TraceEvent {
    /// Step number (0: boot, before the first step).
    pub step: usize,
    /// Event kind (`Ownership`, `IotlbInvalidate`, `Fault`, `H_PUT_TCE`, `RTAS`, …).
    pub kind: String,
    /// Device concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Group concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// What happened, with the result.
    pub detail: String,
}

impl std::fmt::Display for TraceEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "step {:>3}: {}", self.step, self.kind)?;
        if let Some(d) = &self.device {
            write!(f, " dev={d}")?;
        }
        if let Some(g) = &self.group {
            write!(f, " group={g}")?;
        }
        if !self.detail.is_empty() {
            write!(f, " {}", self.detail)?;
        }
        Ok(())
    }
}

impl Report {
    /// Whether every step and check held.
    pub fn all_held(&self) -> bool {
        self.stopped.is_none()
            && self.steps.iter().all(|s| s.held)
            && self.checks.iter().all(|c| c.held)
    }

    /// The steps as text.
    pub fn steps_text(&self) -> String {
        let mut s = format!("scenario: {}\n\nsteps:\n", self.scenario);
        for st in &self.steps {
            let runs = if st.runs > 1 {
                format!(" (x{})", st.runs)
            } else {
                String::new()
            };
            let _ = writeln!(
                s,
                "  {:>2}. [{}] {}{runs} -> {}{}",
                st.n,
                if !st.held {
                    "FAILED"
                } else if st.failed_allowed {
                    "failed, allowed"
                } else {
                    "ok"
                },
                st.op,
                st.outcome,
                if st.held {
                    String::new()
                } else {
                    format!(" (expected {}; line {})", st.expect, st.line)
                }
            );
            for c in &st.state_checks {
                let _ = writeln!(
                    s,
                    "        [{}] state {} = {}{}",
                    if c.held { "ok" } else { "FAILED" },
                    c.path,
                    c.actual,
                    if c.held {
                        String::new()
                    } else {
                        format!(" (expected {})", c.expected)
                    }
                );
            }
            if let Some(state) = &st.state {
                for line in to_tree(state).to_string().lines() {
                    let _ = writeln!(s, "        {line}");
                }
            }
        }
        if let Some(why) = &self.stopped {
            let _ = writeln!(s, "\nstopped: {why}");
        }
        s
    }

    /// The trace as text.
    pub fn trace_text(&self) -> String {
        let mut s = String::from("trace:\n");
        for e in &self.trace {
            let _ = writeln!(s, "  {e}");
        }
        s
    }

    /// The state tree as text.
    pub fn state_text(&self) -> String {
        format!("state:\n{}", to_tree(&self.state))
    }

    /// The checks as text, with the tally.
    pub fn checks_text(&self) -> String {
        let mut s = String::from("checks:\n");
        for c in &self.checks {
            let _ = writeln!(
                s,
                "  [{}] {}: {}",
                if c.held { "ok" } else { "VIOLATED" },
                c.name,
                c.detail
            );
        }
        let with_expect = self.steps.iter().filter(|x| !x.expect.is_empty());
        let states = self.steps.iter().flat_map(|x| &x.state_checks);
        let held = with_expect.clone().filter(|x| x.held).count()
            + states.clone().filter(|c| c.held).count()
            + self.checks.iter().filter(|x| x.held).count();
        let total = with_expect.count() + states.count() + self.checks.len();
        let _ = writeln!(s, "\n{held}/{total} expectations held");
        s
    }

    /// The full report as text.
    pub fn render_text(&self, with_trace: bool) -> String {
        let mut s = self.steps_text();
        if with_trace {
            s.push('\n');
            s.push_str(&self.trace_text());
        }
        s.push('\n');
        s.push_str(&self.state_text());
        s.push_str(&self.checks_text());
        s
    }
}

fn to_tree(n: &Node) -> termtree::Tree<String> {
    termtree::Tree::new(n.label.clone()).with_leaves(n.children.iter().map(to_tree))
}
