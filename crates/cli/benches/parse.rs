//! Input scale of the simulator: parsing and checking a scenario file against its number
//! of steps, and building a machine against its number of devices. Each figure is
//! reported per step (per device) beside the smallest size's, so a ratio near 1 means
//! linear cost.
//!
//! `cargo bench -p spapr-iommu --bench parse`

use criterion::{BenchmarkId, Criterion, Throughput};
use spapr_iommu::doc::Source;
use spapr_iommu::{engine, scenario};
use std::fmt::Write as _;
use std::hint::black_box;
use std::time::{Duration, Instant};

/// A pSeries file of `n` H_PUT_TCE steps, each with a reference to an earlier result and a
/// state-free expectation (what a generated file looks like).
fn steps_file(n: usize) -> String {
    let mut s = String::from("[machine]\nkind = \"pseries\"\nram = \"1G\"\n\n");
    s.push_str("[[step]]\nop = \"h_get_tce\"\nliobn = 0x80000000\nioba = 0\nas = \"first\"\n\n");
    for i in 0..n {
        let _ = write!(
            s,
            "[[step]]\nop = \"h_put_tce\"\nliobn = 0x80000000\nioba = {}\ntce = \"$first+3\"\nexpect = \"H_SUCCESS\"\n\n",
            (i % 4096) * 4096
        );
    }
    s
}

/// A PowerNV file of `n` devices on 2 PHBs of 256 bus PEs, with a check step.
fn devices_file(n: usize) -> String {
    let mut s = String::from("[machine]\nkind = \"powernv\"\nram = \"4G\"\n");
    for _ in 0..2 {
        s.push_str("[[machine.phb]]\nmodel = \"phb4\"\npes = [");
        for b in 0..256 {
            let _ = write!(
                s,
                "{}{{ number = {}, bus = {b} }}",
                if b > 0 { ", " } else { "" },
                b + 1
            );
        }
        s.push_str("]\n");
    }
    for i in 0..n {
        let (phb, r) = (i / 65536, i % 65536);
        let _ = write!(
            s,
            "[[machine.device]]\nname = \"d{i}\"\nphb = {phb}\nbus = {}\ndevfn = {}\n",
            r / 256,
            r % 256
        );
    }
    s.push_str("[[step]]\nop = \"check\"\n");
    s
}

fn parse(text: &str) -> scenario::Scenario {
    scenario::parse(Source {
        name: "bench.toml".into(),
        text: text.into(),
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

fn best(f: &mut dyn FnMut()) -> Duration {
    (0..3)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .unwrap_or(Duration::ZERO)
}

fn main() {
    let mut c = Criterion::default().configure_from_args().sample_size(10);
    let mut parse_rows = Vec::new();
    for n in [1_000usize, 10_000, 100_000] {
        let text = steps_file(n);
        let mut g = c.benchmark_group("parse");
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(BenchmarkId::new("steps", n), |b| {
            b.iter(|| black_box(parse(&text).steps.len()))
        });
        g.finish();
        let t = best(&mut || {
            black_box(parse(&text).steps.len());
        });
        parse_rows.push((n, text.len(), t.as_nanos() as f64 / n as f64));
    }
    let mut build_rows = Vec::new();
    for n in [1_000usize, 10_000, 100_000] {
        let sc = parse(&devices_file(n));
        let mut g = c.benchmark_group("build");
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(BenchmarkId::new("devices_run_check", n), |b| {
            b.iter(|| black_box(engine::run(&sc, &mut |_| {}).all_held()))
        });
        g.finish();
        let t = best(&mut || {
            black_box(engine::run(&sc, &mut |_| {}).all_held());
        });
        build_rows.push((n, t.as_nanos() as f64 / n as f64));
    }
    c.final_summary();
    println!("\n| steps | file | parse + check per step | vs 1,000 steps |");
    println!("|---:|---:|---:|---:|");
    let p0 = parse_rows[0].2;
    for &(n, bytes, t) in &parse_rows {
        println!(
            "| {n} | {} KiB | {:.2} us | {:.2} |",
            bytes >> 10,
            t / 1e3,
            t / p0
        );
    }
    println!("\n| devices | boot + check + state tree per device | vs 1,000 devices |");
    println!("|---:|---:|---:|");
    let b0 = build_rows[0].1;
    for &(n, t) in &build_rows {
        println!("| {n} | {:.2} us | {:.2} |", t / 1e3, t / b0);
    }
}
