//! The pSeries checker: what must hold of a guest's DMA windows whatever the guest did,
//! typed so that a VMM's tests (and the simulator) can assert which rule fired and why.
//!
//! - [`PseriesRule::WindowsDisjoint`]: the enabled windows of a PHB do not overlap (a bus
//!   address must reach one TCE at most);
//! - [`PseriesRule::LiobnMatchesSlot`]: every enabled table answers to its slot's LIOBN;
//! - [`PseriesRule::NoStaleTranslation`]: every translation the device models' IOTLB
//!   would serve now is backed by its live TCE (same window, same page, no more
//!   permission than the entry gives): no device-model translation outlives its TCE.
//!
//! Run it while the guest is quiescent (between steps): a change still in flight has
//! stored its entries but not yet published them, and would be reported.

use crate::iommu::cached_current;
use crate::spapr::Spapr;
use core::fmt;

/// A rule of the pSeries checker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PseriesRule {
    /// The enabled windows of a PHB do not overlap.
    WindowsDisjoint,
    /// Every enabled table answers to its slot's LIOBN.
    LiobnMatchesSlot,
    /// Every translation the IOTLB would serve is backed by its live TCE.
    NoStaleTranslation,
}

impl PseriesRule {
    /// Every rule.
    pub const ALL: [PseriesRule; 3] = [
        PseriesRule::WindowsDisjoint,
        PseriesRule::LiobnMatchesSlot,
        PseriesRule::NoStaleTranslation,
    ];
    /// Its name, as scenario files write it.
    pub fn name(self) -> &'static str {
        match self {
            PseriesRule::WindowsDisjoint => "WindowsDisjoint",
            PseriesRule::LiobnMatchesSlot => "LiobnMatchesSlot",
            PseriesRule::NoStaleTranslation => "NoStaleTranslation",
        }
    }
    /// Parses a name.
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.name() == s)
    }
}

/// One window, as evidence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowSpan {
    /// The table's LIOBN.
    pub liobn: u32,
    /// First bus address.
    pub start: u64,
    /// Bytes.
    pub size: u64,
}

/// What a violation found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Evidence {
    /// Two windows of one PHB overlap.
    Overlap {
        /// One window.
        a: WindowSpan,
        /// The other.
        b: WindowSpan,
    },
    /// A slot holds a table with another LIOBN.
    WrongLiobn {
        /// The slot's LIOBN.
        slot: u32,
        /// The table's.
        table: u32,
    },
    /// A cached translation its TCE no longer gives.
    Stale {
        /// The page's bus address.
        iova: u64,
        /// Where the IOTLB sends it.
        cached_target: u64,
        /// The permission the IOTLB grants (1 read, 2 write).
        cached_perm: u64,
        /// The live TCE (0: none, or no window holds the page).
        tce: u64,
    },
}

/// One rule broken on one PHB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PseriesViolation {
    /// The rule.
    pub rule: PseriesRule,
    /// The PHB's BUID.
    pub buid: u64,
    /// What was found.
    pub evidence: Evidence,
}

impl fmt::Display for PseriesViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} on PHB {:#x}: ", self.rule.name(), self.buid)?;
        match self.evidence {
            Evidence::Overlap { a, b } => write!(
                f,
                "window {:#x} ({:#x}+{:#x}) overlaps window {:#x} ({:#x}+{:#x})",
                a.liobn, a.start, a.size, b.liobn, b.start, b.size
            ),
            Evidence::WrongLiobn { slot, table } => {
                write!(f, "slot {slot:#x} holds table {table:#x}")
            }
            Evidence::Stale {
                iova,
                cached_target,
                cached_perm,
                tce,
            } => write!(
                f,
                "the IOTLB sends {iova:#x} to {cached_target:#x} (perm {cached_perm}) but the TCE is {tce:#x}"
            ),
        }
    }
}

impl Spapr {
    /// Every violation of the pSeries rules, PHB by PHB (empty: all hold).
    pub fn check(&self) -> Vec<PseriesViolation> {
        let mut out = Vec::new();
        for p in self.phbs() {
            let buid = p.buid();
            let windows = p.windows();
            let spans: Vec<WindowSpan> = windows
                .iter()
                .filter_map(|w| w.table.as_ref())
                .map(|t| WindowSpan {
                    liobn: t.liobn(),
                    start: t.bus_offset(),
                    size: t.window_size(),
                })
                .collect();
            for (i, a) in spans.iter().enumerate() {
                for b in &spans[i + 1..] {
                    if a.start < b.start.saturating_add(b.size)
                        && b.start < a.start.saturating_add(a.size)
                    {
                        out.push(PseriesViolation {
                            rule: PseriesRule::WindowsDisjoint,
                            buid,
                            evidence: Evidence::Overlap { a: *a, b: *b },
                        });
                    }
                }
            }
            for w in &windows {
                if let Some(t) = &w.table {
                    if t.liobn() != w.liobn {
                        out.push(PseriesViolation {
                            rule: PseriesRule::LiobnMatchesSlot,
                            buid,
                            evidence: Evidence::WrongLiobn {
                                slot: w.liobn,
                                table: t.liobn(),
                            },
                        });
                    }
                }
            }
            let tables = p.tables();
            for c in cached_current(&p.shared) {
                let tce = tables
                    .iter()
                    .find(|t| t.index_of(c.iova).is_some())
                    .and_then(|t| t.entry_at(c.iova))
                    .map_or(0, |e| e.0);
                let page_mask = !(c.len - 1);
                let backed = tce & page_mask == c.target && c.perm & !(tce & 3) == 0;
                if !backed {
                    out.push(PseriesViolation {
                        rule: PseriesRule::NoStaleTranslation,
                        buid,
                        evidence: Evidence::Stale {
                            iova: c.iova,
                            cached_target: c.target,
                            cached_perm: c.perm,
                            tce,
                        },
                    });
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{HStatus, SpaprConfig};
    use spapr_tce::{Tce, TceIndex};
    use vm_memory::iommu::Iommu;
    use vm_memory::{GuestAddress, GuestMemoryMmap, Permissions};

    fn guest() -> (Spapr, GuestMemoryMmap) {
        let s = Spapr::new(SpaprConfig {
            ram_size: 1 << 24,
            ..SpaprConfig::default()
        })
        .unwrap();
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 24)]).unwrap();
        (s, mem)
    }

    #[test]
    fn a_clean_guest_breaks_no_rule() {
        let (s, mem) = guest();
        assert_eq!(
            s.h_put_tce(&mem, 0x8000_0000, 0x1000, 0x5000 | 3),
            HStatus::Success
        );
        let iommu = s.phb_iommu(0).unwrap();
        assert!(iommu
            .translate(GuestAddress(0x1000), 8, Permissions::Write)
            .is_ok());
        assert_eq!(iommu.cached().len(), 1);
        assert!(s.check().is_empty());
        // A change makes the IOTLB's tag old: nothing it holds can be served any more.
        assert_eq!(s.h_put_tce(&mem, 0x8000_0000, 0x1000, 0), HStatus::Success);
        assert!(iommu.cached().is_empty());
        assert!(s.check().is_empty());
    }

    /// A planted fault: an entry changed behind the generation (what a table writer that
    /// forgot to publish would do) leaves a served translation without its TCE.
    #[test]
    fn a_translation_that_outlives_its_tce_is_reported() {
        let (s, mem) = guest();
        assert_eq!(
            s.h_put_tce(&mem, 0x8000_0000, 0x1000, 0x5000 | 3),
            HStatus::Success
        );
        let iommu = s.phb_iommu(0).unwrap();
        assert!(iommu
            .translate(GuestAddress(0x1000), 8, Permissions::Write)
            .is_ok());
        let t = s.table(0x8000_0000).unwrap();
        t.tces
            .exchange_no_kill(TceIndex(1), Tce(0x5000 | 1))
            .unwrap();
        let v = s.check();
        assert_eq!(
            v,
            vec![PseriesViolation {
                rule: PseriesRule::NoStaleTranslation,
                buid: s.phbs()[0].buid(),
                evidence: Evidence::Stale {
                    iova: 0x1000,
                    cached_target: 0x5000,
                    cached_perm: 3,
                    tce: 0x5001
                }
            }]
        );
        assert!(v[0]
            .to_string()
            .starts_with("NoStaleTranslation on PHB 0x800000020000000"));
    }

    /// A planted fault: a slot given a table of another LIOBN, and a second window over
    /// the first.
    #[test]
    fn a_wrong_liobn_and_overlapping_windows_are_reported() {
        let (s, _mem) = guest();
        let p = &s.phbs()[0];
        {
            let mut slots = p.shared.slots.write();
            let t = GuestTable::new(
                0x8000_0007,
                0,
                spapr_tce::PageShift::K4,
                16,
                p.shared.gen().clone(),
            )
            .unwrap();
            slots.set_table(1, Some(std::sync::Arc::new(t)));
        }
        let rules: Vec<PseriesRule> = s.check().iter().map(|v| v.rule).collect();
        assert_eq!(
            rules,
            vec![PseriesRule::WindowsDisjoint, PseriesRule::LiobnMatchesSlot]
        );
        assert_eq!(
            PseriesRule::from_name("LiobnMatchesSlot"),
            Some(PseriesRule::LiobnMatchesSlot)
        );
    }

    use crate::table::GuestTable;
}
