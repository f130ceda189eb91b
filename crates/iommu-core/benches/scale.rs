//! Scale of the core: registering an instance over 100,000 devices in 10,000 groups, the
//! device -> group lookup, and a claim/release pair on one group while 10 or 10,000 other
//! groups exist. `cargo bench -p iommu-core --bench scale`
//!
//! The driver here is the generic page-table driver's shape: groups of 10 devices created
//! by the platform before probing, as PowerNV does.

use criterion::{BatchSize, Criterion};
use iommu_core::simple::PageTableDomain;
use iommu_core::*;
use std::any::Any;
use std::hint::black_box;
use std::sync::{Arc, Mutex};

struct Grouped {
    groups: Mutex<Vec<Group>>,
    default: Arc<Domain>,
    blocked: Arc<Domain>,
}

struct Noop;
impl DomainOps for Noop {
    fn attach_dev(&self, _ctx: &AttachCtx<'_>) -> Result<(), Errno> {
        Ok(())
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl IommuOps for Grouped {
    fn probe_device(&self, _dev: &DeviceInfo) -> Result<(), Errno> {
        Ok(())
    }
    fn device_group(&self, dev: &DeviceInfo) -> Result<Group, Errno> {
        let DeviceAddr::Platform(i) = dev.addr else {
            return Err(Errno::Enodev);
        };
        let groups = self.groups.lock().map_err(|_| Errno::Enodev)?;
        groups.get((i / 10) as usize).cloned().ok_or(Errno::Enodev)
    }
    fn default_domain(&self) -> Option<Arc<Domain>> {
        Some(self.default.clone())
    }
    fn blocked_domain(&self) -> Option<Arc<Domain>> {
        Some(self.blocked.clone())
    }
}

fn machine(devices: u32) -> (Core, Arc<Grouped>) {
    let core = Core::new();
    let drv = Arc::new(Grouped {
        groups: Mutex::new(Vec::new()),
        default: Domain::new(DomainType::Platform, Arc::new(Noop)),
        blocked: Domain::new(DomainType::Blocked, Arc::new(PageTableDomain::default())),
    });
    {
        let mut g = drv.groups.lock().expect("fresh lock");
        for k in 0..devices.div_ceil(10) {
            g.push(core.alloc_group(Some(format!("pe{k:x}")), Box::new(k), None));
        }
    }
    for i in 0..devices {
        core.add_device(DeviceInfo::platform(&format!("d{i}"), i));
    }
    (core, drv)
}

fn main() {
    let mut c = Criterion::default().configure_from_args().sample_size(10);
    for n in [10_000u32, 100_000] {
        c.bench_function(
            &format!("register_instance/{n}_devices_in_{}_groups", n / 10),
            |b| {
                b.iter_batched(
                    || machine(n),
                    |(core, drv)| {
                        core.register_instance("phb", drv);
                        core
                    },
                    BatchSize::PerIteration,
                )
            },
        );
    }
    let mut c = Criterion::default().configure_from_args();
    for n in [100u32, 100_000] {
        let (core, drv) = machine(n);
        core.register_instance("phb", drv);
        let dev = DeviceId((n / 2) as usize);
        c.bench_function(&format!("device_group_lookup/{n}_devices"), |b| {
            b.iter(|| black_box(core.device_group(black_box(dev)).ok()))
        });
        let g = core.device_group(dev).ok().flatten().expect("probed");
        c.bench_function(&format!("claim_release/{}_groups", n / 10), |b| {
            b.iter(|| {
                let claim = core.claim_group(&g, OwnerCookie(1)).expect("claim");
                claim.release().expect("release");
            })
        });
    }
    c.final_summary();
}
