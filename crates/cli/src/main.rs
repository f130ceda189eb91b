//! `spapr-iommu`: the simulator's command line.
//!
//! `run [SCENARIO]` runs a scenario file (the built-in seed story without one) and prints
//! each step's outcome, the state tree and the invariant checks; `show` prints only the
//! state, `check` only the checks. `--trace` adds one line per core event, `--json` prints
//! one JSON document (file errors included), `--tables` every valid TCE run in the final
//! tree, `--svg FILE` a picture of the final machine. `ops` lists the operations, `fields` the
//! `[machine]` fields. Exit status: 0 if every expectation held, 1 if one did not (the run
//! stops there), 2 for a file that cannot be run (with file, line and column). A closed
//! stdout ends the run quietly.
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

use clap::{Parser, Subcommand};
use spapr_iommu::{doc, engine, scenario, SEED};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "spapr-iommu",
    version,
    about = "Simulate the Linux IOMMU stack of POWER: TCE tables, PEs, VFIO, PAPR"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Debug)]
struct Common {
    /// Scenario file (TOML); the built-in seed story if absent.
    scenario: Option<PathBuf>,
    /// Print one JSON document instead of text.
    #[arg(long)]
    json: bool,
    /// Print one line per core event (attach, map, unmap, ownership, TCE kill, fault).
    #[arg(long)]
    trace: bool,
    /// Run every invariant check after every step.
    #[arg(long)]
    check_each_step: bool,
    /// List every valid TCE run with its raw 64-bit value in the final state tree.
    #[arg(long)]
    tables: bool,
    /// Also draw the final machine as an SVG into FILE (PHBs, PEs and owners; each
    /// window an address bar with its mapped runs, bypass and faults).
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a scenario: steps, state tree, invariant checks.
    Run(Common),
    /// Run a scenario and print the resulting state tree.
    Show(Common),
    /// Run a scenario and print the invariant checks.
    Check(Common),
    /// List the operations a scenario can use.
    Ops,
    /// List the fields of the [machine] tables, with defaults.
    Fields,
}

/// Why a file could not be run.
#[derive(serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum LoadError {
    /// The file could not be read.
    Read { file: String, message: String },
    /// The file is not a valid scenario.
    Invalid(doc::FileError),
}

impl LoadError {
    /// For a terminal: a file error with its source line and a caret.
    fn render(&self) -> String {
        match self {
            LoadError::Read { .. } => format!("error: {self}"),
            LoadError::Invalid(e) => e.render(),
        }
    }
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadError::Read { file, message } => write!(f, "{file}: cannot read: {message}"),
            LoadError::Invalid(e) => write!(f, "{e}"),
        }
    }
}

/// Writes to stdout; false once stdout is closed (a reader that went away), so the
/// caller can stop quietly.
fn emit(text: &str) -> bool {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .is_ok()
}

fn load(path: &Option<PathBuf>) -> Result<scenario::Scenario, LoadError> {
    let src = match path {
        None => doc::Source {
            name: "<built-in seed story>".into(),
            text: SEED.to_string(),
        },
        Some(p) => doc::Source {
            name: p.display().to_string(),
            text: std::fs::read_to_string(p).map_err(|e| LoadError::Read {
                file: p.display().to_string(),
                message: e.to_string(),
            })?,
        },
    };
    scenario::parse(src).map_err(LoadError::Invalid)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (common, what) = match cli.command {
        Command::Ops => {
            let mut text = String::new();
            for op in scenario::OPS {
                let fields = match (op.required.is_empty(), op.optional.is_empty()) {
                    (true, true) => String::new(),
                    (false, true) => format!("required: {}", op.required.join(", ")),
                    (true, false) => format!("optional: {}", op.optional.join(", ")),
                    (false, false) => format!(
                        "required: {}; optional: {}",
                        op.required.join(", "),
                        op.optional.join(", ")
                    ),
                };
                text.push_str(&format!(
                    "{:<24} {:<8} {}\n",
                    op.name,
                    format!("{:?}", op.needs).to_lowercase(),
                    op.what
                ));
                if !fields.is_empty() {
                    text.push_str(&format!("{:<33} {fields}\n", ""));
                }
            }
            emit(&text);
            return ExitCode::SUCCESS;
        }
        Command::Fields => {
            let mut text = String::new();
            let mut last = ("", scenario::Needs::Any);
            for f in scenario::MACHINE_FIELDS {
                if (f.table, f.kind) != last {
                    let kind = match f.kind {
                        scenario::Needs::Any => "any machine",
                        scenario::Needs::PowerNv => "kind = \"powernv\"",
                        scenario::Needs::PSeries => "kind = \"pseries\"",
                    };
                    text.push_str(&format!("\n{} ({kind})\n", f.table));
                    last = (f.table, f.kind);
                }
                text.push_str(&format!(
                    "  {:<16} {}; default {}\n  {:<16} {}\n",
                    f.name, f.takes, f.default, "", f.what
                ));
            }
            emit(text.trim_start());
            return ExitCode::SUCCESS;
        }
        Command::Run(c) => (c, "run"),
        Command::Show(c) => (c, "show"),
        Command::Check(c) => (c, "check"),
    };
    let mut sc = match load(&common.scenario) {
        Ok(s) => s,
        Err(e) => {
            if common.json {
                let doc = serde_json::json!({ "error": e });
                emit(&format!("{doc:#}\n"));
            } else {
                eprintln!("{}", e.render());
            }
            return ExitCode::from(2);
        }
    };
    sc.check_each_step |= common.check_each_step;
    sc.full_tables = common.tables;
    sc.svg = common.svg.is_some();
    let total = engine::total_ops(&sc);
    let bar = (total > 10_000 && std::io::stderr().is_terminal()).then(|| {
        let b = indicatif::ProgressBar::new(total);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} operations ({per_sec}, {eta} left)",
        ) {
            b.set_style(style);
        }
        b
    });
    let report = engine::run(&sc, &mut |n| {
        if let Some(b) = &bar {
            b.inc(n);
        }
    });
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let status = if report.all_held() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    };
    if let (Some(path), Some(svg)) = (&common.svg, &report.svg) {
        if let Err(e) = std::fs::write(path, svg) {
            eprintln!("error: cannot write {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    // The step the run stopped at, if it stopped (what `check` names).
    let failed_step = report.steps.iter().find(|s| !s.held);
    let text = if common.json {
        let value = match what {
            "show" => serde_json::to_value(&report.state),
            "check" => serde_json::to_value(serde_json::json!({
                "checks": report.checks,
                "stopped": report.stopped,
                "failed_step": failed_step,
            })),
            _ => serde_json::to_value(&report),
        };
        match value.and_then(|v| serde_json::to_string_pretty(&v)) {
            Ok(s) => s + "\n",
            Err(e) => {
                eprintln!("error: cannot encode the report: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        let mut t = match what {
            "show" => report.state_text(),
            "check" => {
                let mut t = report.checks_text();
                if let Some(why) = &report.stopped {
                    t.push_str(&format!("\nstopped: {why}\n"));
                }
                t
            }
            _ => report.render_text(common.trace),
        };
        if what != "run" && common.trace {
            t.push('\n');
            t.push_str(&report.trace_text());
        }
        t
    };
    // A closed stdout (`| head`) ends the run quietly, with the run's status.
    emit(&text);
    status
}
