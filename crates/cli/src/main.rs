//! `spapr-iommu`: the simulator's command line.
//!
//! `spapr-iommu run` runs the built-in default scenario and prints each step's outcome,
//! the resulting state as a tree and the invariant checks; the exit status is 0 only if
//! every expectation held. `--json` prints the same as one JSON document.
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod demo;

use clap::{Parser, Subcommand};
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

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the built-in default scenario: steps, state tree, invariant checks.
    Run {
        /// Print one JSON document instead of text.
        #[arg(long)]
        json: bool,
        /// Print one line per core event (attach, ownership change, bind, ...).
        #[arg(long)]
        trace: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { json, trace } => {
            let report = demo::run_default();
            if json {
                match serde_json::to_string_pretty(&report) {
                    Ok(s) => println!("{s}"),
                    Err(e) => {
                        eprintln!("error: cannot encode the report: {e}");
                        return ExitCode::from(2);
                    }
                }
            } else {
                print!("{}", report.render_text(trace));
            }
            if report.all_held() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
