//! Views of VFIO's state for `show` and tests, and the audit of its own bookkeeping.

use crate::container::ContainerFd;
use crate::mm::Mm;
use crate::vfio::{lock, Vfio};
use std::collections::HashMap;

/// A container window, for `show`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WindowView {
    /// Slot.
    pub num: usize,
    /// First bus address.
    pub start: u64,
    /// Table size in bytes.
    pub size: u64,
    /// IOMMU page size.
    pub page_size: u64,
    /// Levels.
    pub levels: u32,
    /// Mapped entries.
    pub mapped: u64,
}

impl Vfio {
    /// The windows of a container.
    pub fn windows(&self, fd: ContainerFd) -> Vec<WindowView> {
        let st = lock(&self.state);
        let Some(t) = st.containers.get(&fd.0).and_then(|c| c.tce.as_ref()) else {
            return Vec::new();
        };
        t.windows
            .iter()
            .enumerate()
            .filter_map(|(i, w)| {
                let w = w.as_ref()?;
                let g = w.table.geometry();
                Some(WindowView {
                    num: i,
                    start: w.table.start(),
                    size: w.table.window_size(),
                    page_size: g.page_shift().size(),
                    levels: g.levels(),
                    mapped: w.table.count_mapped(),
                })
            })
            .collect()
    }

    /// Pins held by a v1 container.
    pub fn pinned_pages(&self, fd: ContainerFd) -> u64 {
        lock(&self.state)
            .containers
            .get(&fd.0)
            .and_then(|c| c.tce.as_ref())
            .map_or(0, |t| t.pins.values().map(|n| u64::from(*n)).sum())
    }

    /// Live mappings of `mm`'s preregistered regions, in registration order.
    pub fn region_mapped(&self, mm: Mm) -> Vec<u64> {
        lock(&self.state).procs.get(&mm).map_or_else(Vec::new, |p| {
            p.regions.iter().flatten().map(|r| r.mapped).collect()
        })
    }

    /// Whether the container's default window is still to be created.
    pub fn default_window_pending(&self, fd: ContainerFd) -> bool {
        lock(&self.state)
            .containers
            .get(&fd.0)
            .and_then(|c| c.tce.as_ref())
            .is_some_and(|t| t.def_window_pending)
    }

    /// Cross-checks VFIO's own bookkeeping: every window's live count matches its table;
    /// every preregistered region's use count matches the TCEs that point into it (over
    /// all containers of its process); no count ever went below zero and no charge was
    /// given back twice. Each string names a mismatch.
    pub fn audit(&self) -> Vec<String> {
        let st = lock(&self.state);
        let mut out = st.imbalances.clone();
        let mut uses: HashMap<(Mm, usize), u64> = HashMap::new();
        for (fd, c) in &st.containers {
            let Some(t) = &c.tce else { continue };
            for (i, w) in t.windows.iter().enumerate() {
                let Some(w) = w else { continue };
                let mapped = w.table.count_mapped();
                if w.live != mapped {
                    out.push(format!(
                        "container {fd} window {i}: live count {} but {mapped} TCEs",
                        w.live
                    ));
                }
                let (Some(u), Some(mm)) = (&w.ua, t.mm) else {
                    continue;
                };
                let Some(p) = st.procs.get(&mm) else { continue };
                let g = *u.geometry();
                // Every live TCE has its user address beside it.
                let _ = w
                    .table
                    .for_each_entry(g.first_index(), g.entries(), |i, _| {
                        if u.get(i).map_or(true, |e| e.is_empty()) {
                            out.push(format!(
                                "container {fd} window {i:?}: a TCE without its user address"
                            ));
                        }
                    });
                let _ = u.for_each_entry(g.first_index(), g.entries(), |_, ua| {
                    if let Some(id) = p
                        .regions
                        .iter()
                        .position(|r| r.as_ref().is_some_and(|r| r.contains(ua.0)))
                    {
                        *uses.entry((mm, id)).or_default() += 1;
                    }
                });
            }
        }
        for (mm, p) in &st.procs {
            for (id, r) in p.regions.iter().enumerate() {
                let Some(r) = r else { continue };
                let counted = uses.get(&(*mm, id)).copied().unwrap_or(0);
                if r.mapped != counted {
                    out.push(format!(
                        "region {:#x}+{:#x}: use count {} but {counted} TCEs point into it",
                        r.ua, r.size, r.mapped
                    ));
                }
            }
            if p.locked.imbalance() > 0 {
                out.push(format!(
                    "{mm:?}: {} pages given back that were never charged",
                    p.locked.imbalance()
                ));
            }
        }
        out
    }
}
