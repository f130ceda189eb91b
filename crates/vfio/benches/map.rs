//! VFIO v2 MAP_DMA of 1 GiB of preregistered memory with 64K IOMMU pages (16384 TCEs), and
//! UNMAP_DMA of it, beside the legal floor measured in the same run: the relaxed 8-byte
//! stores the call must make, a big-endian TCE and a user address per page (2 x 16384;
//! `spapr_benchkit::legal::map_stores`; for UNMAP the user addresses must also be read to
//! release their regions: `legal::unmap_stores`). Target >= 0.8 for both.
//! A plain `u64` store loop (a data race on a table devices read) is kept for information.
//!
//! `cargo bench -p spapr-vfio --bench map`

use criterion::Criterion;
use spapr_benchkit::{legal, Comparison};
use spapr_platform::{PowerNv, PowerNvConfig};
use spapr_vfio::uapi::{encode, ioctl};
use spapr_vfio::{Mm, Vfio, VfioConfig};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

const MM: Mm = Mm(1);
const GIB: u64 = 1 << 30;

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let mut cmp = Comparison::new();
    let m = Arc::new(PowerNv::booted(PowerNvConfig::seed()).expect("seed machine"));
    let v = Vfio::new(m.clone(), VfioConfig::default());
    let gpu = m.device("gpu0").expect("gpu0");
    v.register_device(gpu).expect("vfio-pci");
    let g = v.open_group(gpu).expect("group");
    let fd = v.open_container();
    v.set_container(g, fd).expect("set container");
    v.ioctl_int(MM, fd, ioctl::SET_IOMMU, 7).expect("v2");
    let ua = v.mmap(MM, GIB, 16).expect("memory");
    v.ioctl(
        MM,
        fd,
        ioctl::REGISTER_MEMORY,
        &mut encode::register(0, ua, GIB),
    )
    .expect("register");
    let mut create = encode::create(16, 1 << 40, 2);
    v.ioctl(MM, fd, ioctl::TCE_CREATE, &mut create)
        .expect("create");
    let start = encode::get64(&create, 32);
    let mut map = encode::map(3, ua, start, GIB);
    let mut unmap = encode::unmap(0, start, GIB);
    let entries = (GIB >> 16) as usize;
    let tces = legal::slots(entries);
    let uas = legal::slots(entries);
    let legal_map = |iters: u64| {
        let t = Instant::now();
        for k in 0..iters {
            legal::map_stores(&tces, &uas, black_box(k << 30), ua, 16);
        }
        t.elapsed()
    };
    let legal_unmap = |iters: u64| {
        let mut total = Duration::ZERO;
        for k in 0..iters {
            // Refilled outside the timing, as ours maps outside it.
            legal::map_stores(&tces, &uas, black_box(k << 30), ua, 16);
            let t = Instant::now();
            black_box(legal::unmap_stores(&tces, &uas));
            total += t.elapsed();
        }
        total
    };
    let mut raw = vec![0u64; entries];
    let store = |raw: &mut Vec<u64>, iters: u64| {
        let t = Instant::now();
        for k in 0..iters {
            for (i, e) in raw.iter_mut().enumerate() {
                *e = black_box(k) + ((i as u64) << 16);
            }
            black_box(&mut *raw);
        }
        t.elapsed()
    };
    let mut ours_map = |iters: u64| {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            let t = Instant::now();
            v.ioctl(MM, fd, ioctl::MAP_DMA, &mut map).expect("map");
            total += t.elapsed();
            v.ioctl(MM, fd, ioctl::UNMAP_DMA, &mut unmap)
                .expect("unmap");
        }
        total
    };
    cmp.pair(
        &mut c,
        "VFIO MAP_DMA 1 GiB / 64K pages",
        0.8,
        "2 x 16384 relaxed stores",
        legal_map,
        &mut ours_map,
    );
    let mut raw2 = raw.clone();
    cmp.pair(
        &mut c,
        "VFIO MAP_DMA 1 GiB / 64K pages (info)",
        0.0,
        "store 16384 u64 (racy)",
        |iters| store(&mut raw, iters),
        &mut ours_map,
    );
    let mut ours_unmap = |iters: u64| {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            v.ioctl(MM, fd, ioctl::MAP_DMA, &mut map).expect("map");
            let t = Instant::now();
            v.ioctl(MM, fd, ioctl::UNMAP_DMA, &mut unmap)
                .expect("unmap");
            total += t.elapsed();
        }
        total
    };
    cmp.pair(
        &mut c,
        "VFIO UNMAP_DMA 1 GiB / 64K pages",
        0.8,
        "16384 loads + 2 x 16384 zeroing stores",
        legal_unmap,
        &mut ours_unmap,
    );
    cmp.pair(
        &mut c,
        "VFIO UNMAP_DMA 1 GiB / 64K pages (info)",
        0.0,
        "store 16384 u64 (racy)",
        |iters| store(&mut raw2, iters),
        &mut ours_unmap,
    );
    cmp.report();
}
