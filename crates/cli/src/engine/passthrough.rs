//! A pSeries guest whose PHB holds host devices passed through VFIO, as QEMU runs one
//! on a PowerNV host: the simulator boots the host (the seed machine, EEH on), puts each
//! named device's group into one SPAPR v2 container and opens the devices, and connects
//! the guest PHB's EEH RTAS calls to that container's `VFIO_EEH_PE_OP`
//! ([`VfioEehBackend`], QEMU's `vfio_eeh_as_op`). The devices' DMA and BAR reads are the
//! host's, so a stray DMA freezes the host PE and the guest sees it through RTAS.

use spapr_papr::eeh::EehBackend;
use spapr_platform::{PowerNv, PowerNvConfig};
use spapr_vfio::uapi::ioctl;
use spapr_vfio::{encode_eeh_pe_op, ContainerFd, KernelProfile, Mm, Vfio, VfioConfig};
use std::sync::Arc;

/// The VMM process that owns the containers.
pub(super) const VMM: Mm = Mm(1000);

/// One guest PHB's host side.
pub(super) struct VfioEehBackend {
    vfio: Arc<Vfio>,
    container: ContainerFd,
    groups: usize,
    /// Guest bus of the passed devices; device k sits at devfn k.
    bus: u8,
    devices: Vec<String>,
}

impl std::fmt::Debug for VfioEehBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VfioEehBackend")
            .field("container", &self.container)
            .field("groups", &self.groups)
            .field("bus", &self.bus)
            .field("devices", &self.devices)
            .finish()
    }
}

impl VfioEehBackend {
    /// Whether host device `name` is passed through this PHB.
    pub(super) fn passes(&self, name: &str) -> bool {
        self.devices.iter().any(|d| d == name)
    }
}

impl EehBackend for VfioEehBackend {
    fn groups(&self) -> usize {
        self.groups
    }
    fn pe_op(&self, op: u32) -> i64 {
        let mut arg = encode_eeh_pe_op(op, 0, 0);
        match self
            .vfio
            .ioctl(VMM, self.container, ioctl::EEH_PE_OP, &mut arg)
        {
            Ok(v) => v,
            Err(e) => -i64::from(e.code()),
        }
    }
    fn vfio_device_on_bus(&self, bus: u8) -> bool {
        bus == self.bus
    }
    fn device_at(&self, bus: u8, devfn: u8) -> bool {
        bus == self.bus && usize::from(devfn) < self.devices.len()
    }
}

/// The host of a pSeries guest with passed-through devices.
pub(super) struct Host {
    pub(super) vfio: Arc<Vfio>,
    /// (guest PHB position, its backend).
    pub(super) backends: Vec<(usize, Arc<VfioEehBackend>)>,
}

impl Host {
    /// Boots the host and gives each guest PHB of `passthrough` (position, host device
    /// names, guest bus) one container holding its devices' groups, the devices opened.
    pub(super) fn boot(passthrough: &[(usize, Vec<String>, u8)]) -> Result<Self, String> {
        let m = Arc::new(PowerNv::booted(PowerNvConfig::seed()).map_err(|e| e.to_string())?);
        m.env().set_eeh(true);
        let vfio = Arc::new(Vfio::new(
            m.clone(),
            VfioConfig {
                profile: KernelProfile::Strict,
                eeh: true,
                ..VfioConfig::default()
            },
        ));
        let mut backends = Vec::new();
        for (phb, names, bus) in passthrough {
            let container = vfio.open_container();
            // Each device's group (one per PE on these machines) joins the container;
            // the first one lets SET_IOMMU choose the v2 driver.
            for (k, name) in names.iter().enumerate() {
                let d = m
                    .device(name)
                    .ok_or_else(|| format!("the host has no device {name:?}"))?;
                vfio.register_device(d)
                    .map_err(|e| format!("{name}: {e}"))?;
                let g = vfio.open_group(d).map_err(|e| format!("{name}: {e}"))?;
                vfio.set_container(g, container)
                    .map_err(|e| format!("{name}: {e}"))?;
                if k == 0 {
                    vfio.ioctl_int(VMM, container, ioctl::SET_IOMMU, 7)
                        .map_err(|e| format!("SET_IOMMU: {e}"))?;
                }
                vfio.open_device(g, d).map_err(|e| format!("{name}: {e}"))?;
            }
            backends.push((
                *phb,
                Arc::new(VfioEehBackend {
                    vfio: vfio.clone(),
                    container,
                    groups: names.len(),
                    bus: *bus,
                    devices: names.clone(),
                }),
            ));
        }
        m.flush();
        Ok(Self { vfio, backends })
    }

    /// The host machine.
    pub(super) fn machine(&self) -> &Arc<PowerNv> {
        self.vfio.machine()
    }
}

impl Host {
    /// The host side in the state tree: each passed device with its host PE's EEH state.
    pub(super) fn tree(&self) -> crate::report::Node {
        let m = self.machine();
        let phbs = self
            .backends
            .iter()
            .map(|(phb, b)| {
                let devs = b
                    .devices
                    .iter()
                    .map(|name| {
                        let pe = m.device(name).and_then(|d| m.pe_of(d));
                        let label = match pe {
                            Some(pe) => {
                                let e = pe.eeh();
                                format!(
                                    "{name} (bus {}, host PHB#{} PE#{}): EEH state {}{}{}",
                                    b.bus,
                                    pe.phb,
                                    pe.number,
                                    pe.eeh_state_value(),
                                    if e.mmio_frozen { ", MMIO frozen" } else { "" },
                                    if e.dma_stopped { ", DMA stopped" } else { "" },
                                )
                            }
                            None => format!("{name}: no host PE"),
                        };
                        crate::report::Node::new(label, Vec::new())
                    })
                    .collect();
                crate::report::Node::new(
                    format!(
                        "PHB {phb}: VFIO container {} with {} group{}",
                        b.container.0,
                        b.groups,
                        if b.groups == 1 { "" } else { "s" }
                    ),
                    devs,
                )
            })
            .collect();
        crate::report::Node::new("host (PowerNV, the seed machine, EEH on)", phbs)
    }
}
