//! Translation for VMM device models, two ways:
//! - [`PhbIommu`] is vm-memory 0.18's `Iommu`, so that `IommuMemory` (and a virtio-queue
//!   over it) routes a device's DMA through the guest's TCE tables. vm-memory hands the
//!   result back as an iterator over an `Iotlb`, so this one keeps an IOTLB, validated
//!   on every lookup against the PHB's change counters (`iotlb.rs`).
//! - [`DeviceTranslator`] is one device thread's own view of a PHB: it reads the live
//!   TCE of every page it touches and keeps only the table pointers, revalidated against
//!   the window counter. No lock and no shared write on a translation.
//!
//! # What a device sees when the guest changes its tables
//! - After H_PUT_TCE, H_STUFF_TCE or H_PUT_TCE_INDIRECT returns, every translation that
//!   begins later uses the new entries (through either type).
//! - After ibm,remove-pe-dma-window, ibm,reset-pe-dma-window, a PHB or machine reset, or
//!   a restore returns, every translation that begins later sees the new windows: a
//!   removed window's addresses fault, a reset default window is empty.
//! - An access translated before such a call returned may complete with the old
//!   translation (a DMA in flight). An access that overlaps a change of the entries it
//!   uses sees each page's entry as it was before or after the change, never a mix.

use crate::iotlb::{CachedTranslation, TlbGuard};
use crate::spapr::PhbShared;
use crate::table::GuestTable;
use spapr_tce::{Access, Fault};
use std::sync::Arc;
use vm_memory::iommu::{Error, Iommu, Iotlb, IotlbIterator, IovaRange};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, Permissions};

/// Why a device model's access was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DmaError {
    /// No enabled window holds the address, or the table refused it.
    #[error("{0}")]
    Fault(Fault),
    /// The range wraps around the top of the bus address space.
    #[error("the range at {iova:#x} of {len} bytes wraps around")]
    Wraps {
        /// First bus address.
        iova: u64,
        /// Bytes.
        len: usize,
    },
    /// The translated guest-physical range is not in guest memory.
    #[error("guest-physical {gpa:#x} is not in guest memory")]
    NotInRam {
        /// The guest-physical address.
        gpa: u64,
    },
}

/// Finds the enabled window holding `iova` and translates it through the live entry:
/// the guest-physical address and the window's page shift.
#[inline]
fn translate_live(
    tables: &[Arc<GuestTable>],
    iova: u64,
    access: Access,
) -> Result<(u64, u32), Fault> {
    for t in tables {
        match t.translate(iova, access) {
            Ok(gpa) => return Ok((gpa.0, t.page_shift())),
            Err(Fault::OutsideWindow { .. }) => continue,
            Err(f) => return Err(f),
        }
    }
    Err(Fault::OutsideWindow {
        iova: spapr_tce::Iova(iova),
    })
}

/// One PHB's DMA translation for `IommuMemory`.
#[derive(Debug, Clone)]
pub struct PhbIommu {
    shared: Arc<PhbShared>,
}

impl PhbIommu {
    pub(crate) fn new(shared: Arc<PhbShared>) -> Self {
        Self { shared }
    }

    /// What the IOTLB holds now, if it is current (its tag equals the PHB's counters):
    /// the translations a device would be served without looking at the tables.
    pub fn cached(&self) -> Vec<CachedTranslation> {
        cached_current(&self.shared)
    }

    /// Fills `tlb` for `[start, end)` from the live tables; the reason if some page has no
    /// entry permitting anything.
    fn refill(&self, tlb: &mut crate::iotlb::TlbCache, start: u64, end: u64) -> Result<(), String> {
        let slots = self.shared.slots.read();
        let mut a = start;
        while a < end {
            let Some(t) = slots
                .iter()
                .filter_map(|s| s.table().map(|t| &**t))
                .find(|t| t.index_of(a).is_some())
            else {
                return Err(format!("{a:#x} is outside every DMA window"));
            };
            let shift = t.page_shift();
            let page = a & !((1u64 << shift) - 1);
            let raw = t.entry_at(page).map_or(0, |e| e.0);
            if raw & 3 == 0 {
                return Err(format!("no TCE for {page:#x} (LIOBN {:#x})", t.liobn()));
            }
            tlb.insert(CachedTranslation {
                iova: page,
                len: 1 << shift,
                target: raw & !((1u64 << shift) - 1),
                perm: raw & 3,
            });
            match page.checked_add(1 << shift) {
                Some(next) => a = next,
                None => break,
            }
        }
        Ok(())
    }
}

/// The IOTLB's translations if its tag is current, else nothing.
pub(crate) fn cached_current(shared: &PhbShared) -> Vec<CachedTranslation> {
    let tlb = shared.iotlb.read();
    if tlb.tag == shared.gen().tag() {
        tlb.held.clone()
    } else {
        Vec::new()
    }
}

impl Iommu for PhbIommu {
    type IotlbGuard<'a> = TlbGuard<'a>;

    fn translate(
        &self,
        iova: GuestAddress,
        length: usize,
        access: Permissions,
    ) -> Result<IotlbIterator<Self::IotlbGuard<'_>>, Error> {
        let fail = |reason: String| Error::CannotResolve {
            iova_range: IovaRange { base: iova, length },
            reason,
        };
        // vm-memory adds the length unchecked.
        let Some(end) = iova.0.checked_add(length as u64) else {
            return Err(fail(format!("{:#x}+{length:#x} wraps around", iova.0)));
        };
        let denied = |base: GuestAddress| {
            fail(format!(
                "the TCE does not permit {access:?} at {:#x}",
                base.0
            ))
        };
        // The hit path: shared lock, tag check, lookup.
        let tag = self.shared.gen().tag();
        let guard = self.shared.iotlb.read();
        if guard.tag == tag {
            match Iotlb::lookup(TlbGuard::shared(guard), iova, length, access) {
                Ok(hit) => return Ok(hit),
                Err(f) if f.misses.is_empty() => return Err(denied(f.access_fails[0].base)),
                Err(_) => {}
            }
        } else {
            drop(guard);
        }
        // Miss or stale: refill under the exclusive lock, tagged with the counters loaded
        // before the tables are read, and answer from it without letting go.
        let mut w = self.shared.iotlb.write();
        let tag = self.shared.gen().tag();
        if w.tag != tag {
            w.reset(tag);
        }
        let misses = match Iotlb::lookup(&w.tlb, iova, length, access) {
            Ok(_) => Vec::new(),
            Err(f) => {
                if let Some(a) = f.access_fails.first() {
                    return Err(denied(a.base));
                }
                f.misses
            }
        };
        for m in &misses {
            self.refill(&mut w, m.base.0, m.base.0 + m.length as u64)
                .map_err(&fail)?;
        }
        debug_assert!(end >= iova.0);
        Iotlb::lookup(TlbGuard::exclusive(w), iova, length, access).map_err(|f| {
            match f.access_fails.first() {
                Some(a) => denied(a.base),
                None => fail("no translation".into()),
            }
        })
    }
}

/// One device model thread's translator for a PHB: the tables of the enabled windows,
/// refreshed when the PHB's window counter moves, and the live TCE of every page touched.
/// `&mut self`: one per thread (cheap to make with [`crate::Spapr::device_translator`]).
#[derive(Debug)]
pub struct DeviceTranslator {
    shared: Arc<PhbShared>,
    windows: u64,
    tables: Vec<Arc<GuestTable>>,
}

impl DeviceTranslator {
    pub(crate) fn new(shared: Arc<PhbShared>) -> Self {
        let mut t = Self {
            shared,
            windows: 0,
            tables: Vec::new(),
        };
        t.refresh();
        t
    }

    #[inline]
    fn refresh(&mut self) {
        // The counter first: tables read after it are at least that new.
        let (windows, slots) = self.shared.slots.read_since();
        self.windows = windows;
        self.tables.clear();
        self.tables
            .extend(slots.iter().filter_map(|s| s.table().cloned()));
    }

    /// The enabled windows' tables, current.
    #[inline]
    fn current(&mut self) -> &[Arc<GuestTable>] {
        if self.shared.gen().windows() != self.windows {
            self.refresh();
        }
        &self.tables
    }

    /// Translates one access at `iova` (within one IOMMU page).
    #[inline]
    pub fn translate(&mut self, iova: u64, access: Access) -> Result<u64, DmaError> {
        translate_live(self.current(), iova, access)
            .map(|(gpa, _)| gpa)
            .map_err(DmaError::Fault)
    }

    /// Copies `[iova, iova + buf.len())` into `buf`, page by page, each page through its
    /// live entry; nothing is read past the first refused page.
    pub fn read<M: GuestMemoryBackend>(
        &mut self,
        mem: &M,
        iova: u64,
        buf: &mut [u8],
    ) -> Result<(), DmaError> {
        self.each_page(iova, buf.len(), Access::Read, |gpa, at, n| {
            mem.read_slice(&mut buf[at..at + n], GuestAddress(gpa))
                .map_err(|_| DmaError::NotInRam { gpa })
        })
    }

    /// Copies `buf` to `[iova, iova + buf.len())`, page by page; pages before the first
    /// refused one are written (as a device's DMA would be).
    pub fn write<M: GuestMemoryBackend>(
        &mut self,
        mem: &M,
        iova: u64,
        buf: &[u8],
    ) -> Result<(), DmaError> {
        self.each_page(iova, buf.len(), Access::Write, |gpa, at, n| {
            mem.write_slice(&buf[at..at + n], GuestAddress(gpa))
                .map_err(|_| DmaError::NotInRam { gpa })
        })
    }

    fn each_page(
        &mut self,
        iova: u64,
        len: usize,
        access: Access,
        mut f: impl FnMut(u64, usize, usize) -> Result<(), DmaError>,
    ) -> Result<(), DmaError> {
        if iova.checked_add(len as u64).is_none() {
            return Err(DmaError::Wraps { iova, len });
        }
        let mut done = 0usize;
        while done < len {
            let a = iova + done as u64;
            let (gpa, shift) =
                translate_live(self.current(), a, access).map_err(DmaError::Fault)?;
            let in_page = ((1u64 << shift) - (a & ((1u64 << shift) - 1))) as usize;
            let n = in_page.min(len - done);
            f(gpa, done, n)?;
            done += n;
        }
        Ok(())
    }
}
