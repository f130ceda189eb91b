//! `spapr-iommu`: the simulator's command line.
//!
//! `run [SCENARIO]` runs a scenario file (the built-in seed story without one) and prints
//! each step's outcome, the state tree and the invariant checks; `show` prints only the
//! state, `check` only the checks. `--trace` adds one line per core event, `--json` prints
//! one JSON document. The exit status is 0 only if every expectation held; 2 for a file
//! that cannot be run (with file, line and column).
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
}

fn load(path: &Option<PathBuf>) -> Result<scenario::Scenario, String> {
    let src = match path {
        None => doc::Source {
            name: "<built-in seed story>".into(),
            text: SEED.to_string(),
        },
        Some(p) => doc::Source {
            name: p.display().to_string(),
            text: std::fs::read_to_string(p)
                .map_err(|e| format!("{}: cannot read: {e}", p.display()))?,
        },
    };
    scenario::parse(src).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (common, what) = match cli.command {
        Command::Ops => {
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
                println!(
                    "{:<24} {:<8} {}",
                    op.name,
                    format!("{:?}", op.needs).to_lowercase(),
                    op.what
                );
                if !fields.is_empty() {
                    println!("{:<33} {fields}", "");
                }
            }
            return ExitCode::SUCCESS;
        }
        Command::Run(c) => (c, "run"),
        Command::Show(c) => (c, "show"),
        Command::Check(c) => (c, "check"),
    };
    let mut sc = match load(&common.scenario) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    sc.check_each_step |= common.check_each_step;
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
    if common.json {
        let value = match what {
            "show" => serde_json::to_value(&report.state),
            "check" => serde_json::to_value(&report.checks),
            _ => serde_json::to_value(&report),
        };
        match value.and_then(|v| serde_json::to_string_pretty(&v)) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("error: cannot encode the report: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        match what {
            "show" => print!("{}", report.state_text()),
            "check" => print!("{}", report.checks_text()),
            _ => print!("{}", report.render_text(common.trace)),
        }
        if what != "run" && common.trace {
            print!("\n{}", report.trace_text());
        }
    }
    if report.all_held() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
