//! Scale of the PowerNV model: machines of 1, 4 and 16 PHB4s with 256 PEs each (one device
//! per bus PE, 4,096 PEs at the top), every PE with live kernel DMA (a bound driver with a
//! mapped page in its default table, bypass off).
//!
//! Two figures, each reported per PE so that a flat line means linear cost:
//! - hand-over round: for every group, the kernel driver unbinds (its page unmapped), the
//!   group is claimed and released, and the driver binds and maps again;
//! - full check (`PowerNv::check`, every rule on every group) of the machine with live DMA.
//!
//! The work per PE is constant: the check scans each PE's kernel table (one 64 KiB leaf,
//! 8,192 TCEs) for entries its allocator did not hand out. What grows is the working set
//! (the table column): at 4,096 PEs it no longer fits the last-level cache.
//!
//! `cargo bench -p spapr-platform --bench scale`

use criterion::{BenchmarkId, Criterion, Throughput};
use iommu_core::{DeviceId, OwnerCookie};
use spapr_platform::{Design, DeviceConfig, PeScope, PhbConfig, PhbModel, PowerNv, PowerNvConfig};
use spapr_tce::DmaDirection;
use std::hint::black_box;
use std::time::{Duration, Instant};

const PES_PER_PHB: u32 = 256;

fn machine(phbs: u32, ram: u64) -> (PowerNv, Vec<(DeviceId, u64)>) {
    let mut cfg = PowerNvConfig::seed();
    cfg.ram_size = ram;
    cfg.design = Design::Fixed;
    cfg.bypass_disabled = true;
    cfg.phbs = (0..phbs)
        .map(|_| {
            PhbConfig::new(
                PhbModel::Phb4,
                (0..PES_PER_PHB)
                    .map(|b| (b + 1, PeScope::Bus(b as u8)))
                    .collect(),
            )
        })
        .collect();
    cfg.devices = (0..phbs)
        .flat_map(|p| {
            (0..PES_PER_PHB)
                .map(move |b| DeviceConfig::new(&format!("d{p}.{b}"), p, b as u8, 0, 64))
        })
        .collect();
    let m = PowerNv::booted(cfg).expect("scale machine");
    let mut devs: Vec<(DeviceId, u64)> = (0..phbs)
        .flat_map(|p| (0..PES_PER_PHB).map(move |b| format!("d{p}.{b}")))
        .map(|n| (m.device(&n).expect("device"), 0))
        .collect();
    for (d, dma) in &mut devs {
        *dma = live_dma(&m, *d);
    }
    assert!(m.check().is_empty(), "scale machine starts clean");
    (m, devs)
}

/// Binds the kernel driver and maps one page (`dma_map_page`); returns the DMA address.
fn live_dma(m: &PowerNv, d: DeviceId) -> u64 {
    m.bind_driver(d, "nvme").expect("bind");
    m.dma_map(d, 0x10_0000, 1 << 16, DmaDirection::Bidirectional, 0)
        .unwrap_or_else(|e| panic!("kernel DMA on {d:?}: {e:?}"))
}

/// One hand-over of every group: unbind, claim, release, rebind and map.
fn round(m: &PowerNv, devs: &mut [(DeviceId, u64)]) {
    for (k, (d, dma)) in devs.iter_mut().enumerate() {
        m.dma_unmap(*d, *dma, 1 << 16).expect("unmap");
        m.unbind_driver(*d).expect("unbind");
        let claim = m.claim_group(*d, OwnerCookie(k as u64 + 1)).expect("claim");
        m.release(claim).expect("release");
        *dma = live_dma(m, *d);
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args().sample_size(10);
    let mut rows = Vec::new();
    for phbs in [1u32, 4, 16] {
        let (m, mut devs) = machine(phbs, 256 << 20);
        let table_bytes = m
            .pe_of(devs[0].0)
            .and_then(|pe| pe.table(0))
            .map_or(0, |t| t.geometry().entries() * 8);
        let pes = devs.len() as u64;
        let mut g = c.benchmark_group("scale");
        g.throughput(Throughput::Elements(pes));
        g.bench_function(BenchmarkId::new("handover_round", pes), |b| {
            b.iter(|| round(&m, &mut devs))
        });
        g.bench_function(BenchmarkId::new("full_check", pes), |b| {
            b.iter(|| black_box(m.check().len()))
        });
        g.finish();
        // A short min-of-5 figure per PE for the table below.
        let best = |f: &mut dyn FnMut()| {
            (0..5)
                .map(|_| {
                    let t = Instant::now();
                    f();
                    t.elapsed()
                })
                .min()
                .unwrap_or(Duration::ZERO)
        };
        let r = best(&mut || round(&m, &mut devs));
        let chk = best(&mut || {
            black_box(m.check().len());
        });
        assert!(m.check().is_empty(), "rounds leave the machine clean");
        rows.push((
            table_bytes * pes,
            pes,
            r.as_nanos() as f64 / pes as f64,
            chk.as_nanos() as f64 / pes as f64,
        ));
    }
    c.final_summary();
    println!(
        "\n| PEs | kernel tables | hand-over round per PE | vs 256 PEs | full check per PE | vs 256 PEs |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    let (_, _, r0, c0) = rows[0];
    for &(bytes, pes, r, chk) in &rows {
        println!(
            "| {pes} | {} MiB | {:.1} us | {:.2} | {:.1} us | {:.2} |",
            bytes >> 20,
            r / 1e3,
            r / r0,
            chk / 1e3,
            chk / c0
        );
    }
}
