//! A configurable test driver: platform devices grouped by `index / group_size`, groups
//! created lazily or only after `create_groups`, attach failures on demand, and reported
//! kernel leftovers.
#![allow(dead_code)]

use iommu_core::*;
use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

pub struct TestDomain {
    pub fail_for: Mutex<Option<String>>,
    pub attaches: AtomicUsize,
}

impl DomainOps for TestDomain {
    fn attach_dev(&self, ctx: &AttachCtx<'_>) -> Result<(), Errno> {
        if self.fail_for.lock().unwrap().as_deref() == Some(ctx.info.name.as_str()) {
            return Err(Errno::Eio);
        }
        self.attaches.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

pub struct TestDriver {
    pub core: Core,
    pub group_size: u32,
    pub groups: Mutex<HashMap<u32, Group>>,
    pub lazy_groups: AtomicBool,
    pub blocking: Option<Arc<Domain>>,
    pub default: Arc<Domain>,
    pub leftovers: Mutex<Vec<String>>,
    pub freed: Arc<AtomicUsize>,
}

impl TestDriver {
    pub fn new(core: &Core, group_size: u32, with_blocking: bool) -> Arc<Self> {
        let mk = || {
            Arc::new(TestDomain {
                fail_for: Mutex::new(None),
                attaches: AtomicUsize::new(0),
            })
        };
        Arc::new(Self {
            core: core.clone(),
            group_size,
            groups: Mutex::new(HashMap::new()),
            lazy_groups: AtomicBool::new(true),
            blocking: with_blocking.then(|| Domain::new(DomainType::Blocked, mk())),
            default: Domain::new(DomainType::Platform, mk()),
            leftovers: Mutex::new(Vec::new()),
            freed: Arc::new(AtomicUsize::new(0)),
        })
    }
    pub fn domain_ops(d: &Arc<Domain>) -> &TestDomain {
        d.ops().as_any().downcast_ref::<TestDomain>().unwrap()
    }
    /// Creates the platform's group for `key` and keeps the platform's reference.
    pub fn create_group(&self, key: u32) -> Group {
        let freed = self.freed.clone();
        let g = self.core.alloc_group(
            Some(format!("grp{key}")),
            Box::new(key),
            Some(Box::new(move || {
                freed.fetch_add(1, Ordering::Relaxed);
            })),
        );
        self.groups.lock().unwrap().insert(key, g.clone());
        g
    }
}

impl IommuOps for TestDriver {
    fn probe_device(&self, dev: &DeviceInfo) -> Result<(), Errno> {
        match dev.addr {
            DeviceAddr::Platform(_) => Ok(()),
            _ => Err(Errno::Eperm),
        }
    }
    fn device_group(&self, dev: &DeviceInfo) -> Result<Group, Errno> {
        let DeviceAddr::Platform(i) = dev.addr else {
            return Err(Errno::Enodev);
        };
        let key = i / self.group_size;
        if let Some(g) = self.groups.lock().unwrap().get(&key) {
            return Ok(g.clone());
        }
        if !self.lazy_groups.load(Ordering::Relaxed) {
            return Err(Errno::Enodev);
        }
        // Lazy groups are also kept in the driver's map (tests clear it to drop them).
        Ok(self.create_group(key))
    }
    fn capable(&self, _dev: &DeviceInfo, cap: Cap) -> bool {
        cap == Cap::CacheCoherency
    }
    fn default_domain(&self) -> Option<Arc<Domain>> {
        Some(self.default.clone())
    }
    fn blocked_domain(&self) -> Option<Arc<Domain>> {
        self.blocking.clone()
    }
    fn check_group(&self, _group: &Group, owner: Option<(OwnerCookie, u64)>) -> Vec<Finding> {
        if owner.is_none() {
            return Vec::new();
        }
        self.leftovers
            .lock()
            .unwrap()
            .iter()
            .map(|s| Finding {
                rule: Rule::NoKernelTranslationOnUserGroup,
                device: None,
                evidence: Evidence::Note(s.clone()),
            })
            .collect()
    }
}

pub const OWNER_A: OwnerCookie = OwnerCookie(0xA);
pub const OWNER_B: OwnerCookie = OwnerCookie(0xB);
