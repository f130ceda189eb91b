//! VFIO v2 MAP_DMA of 1 GiB of preregistered memory with 64K IOMMU pages (16384 TCEs), and
//! UNMAP_DMA of it, beside a raw sequential store of 16384 u64 measured in the same run
//! (target >= 0.5 for both).
//!
//! `cargo bench -p spapr-vfio --bench map`

use criterion::Criterion;
use spapr_benchkit::Comparison;
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
    let mut raw2 = raw.clone();
    cmp.pair(
        &mut c,
        "VFIO MAP_DMA 1 GiB / 64K pages",
        0.5,
        "store 16384 u64",
        |iters| store(&mut raw, iters),
        |iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                v.ioctl(MM, fd, ioctl::MAP_DMA, &mut map).expect("map");
                total += t.elapsed();
                v.ioctl(MM, fd, ioctl::UNMAP_DMA, &mut unmap)
                    .expect("unmap");
            }
            total
        },
    );
    cmp.pair(
        &mut c,
        "VFIO UNMAP_DMA 1 GiB / 64K pages",
        0.5,
        "store 16384 u64",
        |iters| store(&mut raw2, iters),
        |iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                v.ioctl(MM, fd, ioctl::MAP_DMA, &mut map).expect("map");
                let t = Instant::now();
                v.ioctl(MM, fd, ioctl::UNMAP_DMA, &mut unmap)
                    .expect("unmap");
                total += t.elapsed();
            }
            total
        },
    );
    cmp.report();
}
