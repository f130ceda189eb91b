//! Core events, one per line in `--trace` (like the kernel's iommu trace events).

use core::fmt;

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A hardware instance was registered.
    RegisterInstance,
    /// A device was added.
    AddDevice,
    /// A device was removed.
    RemoveDevice,
    /// A probe failed (the reason is in the detail).
    ProbeFailed,
    /// A device joined a group / was attached to a domain.
    Attach,
    /// DMA ownership changed.
    Ownership,
    /// A kernel driver was bound.
    DriverBind,
    /// A kernel driver was unbound.
    DriverUnbind,
    /// Pages were mapped (by a layer above).
    Map,
    /// Pages were unmapped (by a layer above).
    Unmap,
    /// The driver invalidated cached translations (an IOTLB flush: on POWER a TCE kill,
    /// per range or PE-wide).
    IotlbInvalidate,
    /// A device access faulted.
    Fault,
    /// A behaviour-profile quirk was reproduced.
    Quirk,
    /// A failure injected by a test or scenario struck.
    Injected,
    /// An EEH event: a PE frozen, thawed, reset or recovered.
    Eeh,
}

/// One event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Sequence number in this core.
    pub seq: u64,
    /// What happened.
    pub kind: EventKind,
    /// Device concerned.
    pub device: Option<String>,
    /// Group concerned.
    pub group: Option<String>,
    /// Details.
    pub detail: String,
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:>5} {:?}", self.seq, self.kind)?;
        if let Some(d) = &self.device {
            write!(f, " dev={d}")?;
        }
        if let Some(g) = &self.group {
            write!(f, " group={g}")?;
        }
        if !self.detail.is_empty() {
            write!(f, " {}", self.detail)?;
        }
        Ok(())
    }
}
