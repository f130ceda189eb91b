//! The device models' IOTLB of one PHB, and the generations that keep it honest.
//!
//! # The protocol
//! Two counters per PHB, both only ever incremented, with a release read-modify-write:
//! - `windows`: a window slot changed (create, remove, PHB reset, restore);
//! - `entries`: a TCE changed (every table's kill hook bumps it, after its stores).
//!
//! A writer (a hypercall, an RTAS call, a reset, a restore) changes what it changes and
//! then bumps the counter, before it returns. It never takes the IOTLB lock, so no writer
//! can wait on a device model, and no lock cycle can form (lock order below).
//!
//! The IOTLB is tagged with the pair it was filled under. A lookup loads the pair
//! (acquire) and uses the IOTLB only if the tag is equal; otherwise it empties it and
//! refills from the live tables, tagging it with the pair loaded *before* the tables were
//! read. So a cached translation is used only if no change was published since the entries
//! it came from were read: a translation that begins after a call returned sees that call's
//! change (the call's bump happens before the lookup's load, which then differs from any
//! older tag). An access already translated when a change lands completes with the old
//! translation, as a DMA in flight does on hardware.
//!
//! # Lock order (this crate)
//! `PhbShared::iotlb` (device IOTLB) → `PhbShared::slots` (window slots). Only a refill
//! holds both; table writers take `slots` alone and never `iotlb`.

use crate::sync::{AtomicU64, Ordering, ReadGuard, WriteGuard};
use spapr_tce::{TceIndex, TceKill};
use std::ops::Deref;
use std::sync::Arc;
use vm_memory::iommu::Iotlb;
use vm_memory::{GuestAddress, Permissions};

/// The two change counters of a PHB (see the module docs).
#[derive(Debug)]
pub(crate) struct Generation {
    windows: AtomicU64,
    entries: AtomicU64,
}

/// A snapshot of both counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) struct Tag {
    pub(crate) windows: u64,
    pub(crate) entries: u64,
}

impl Generation {
    pub(crate) fn new() -> Self {
        Self {
            windows: AtomicU64::new(0),
            entries: AtomicU64::new(0),
        }
    }
    /// Publishes a window change (after it was made). Only a holder of the slots' write
    /// guard can call it (`held`), and [`crate::slots::SlotsMut`]'s drop is the one caller,
    /// inside the lock.
    #[inline]
    pub(crate) fn windows_changed(&self, _held: &crate::slots::SlotsMut<'_>) {
        self.windows.fetch_add(1, Ordering::Release);
    }
    /// Publishes a TCE change (after its stores).
    #[inline]
    pub(crate) fn entries_changed(&self) {
        self.entries.fetch_add(1, Ordering::Release);
    }
    /// The window counter alone (a [`crate::DeviceTranslator`] reads TCEs live and only
    /// needs to know when its tables were replaced).
    #[inline]
    pub(crate) fn windows(&self) -> u64 {
        self.windows.load(Ordering::Acquire)
    }
    /// Both counters.
    #[inline]
    pub(crate) fn tag(&self) -> Tag {
        // Entries first: a tag is never newer in windows than in the entries it covers
        // (either order is safe; this one refills less after a reset).
        let entries = self.entries.load(Ordering::Acquire);
        Tag {
            windows: self.windows.load(Ordering::Acquire),
            entries,
        }
    }
}

/// A table's kill hook: every TCE change bumps the PHB's entry counter.
#[derive(Debug, Clone)]
pub(crate) struct GenBump(pub(crate) Arc<Generation>);

impl TceKill for GenBump {
    #[inline]
    fn kill_range(&self, _first: TceIndex, _count: u64) {
        self.0.entries_changed();
    }
    #[inline]
    fn kill_all(&self) {
        self.0.entries_changed();
    }
}

/// One cached translation: `[iova, iova + len)` to `target`, with `perm` (a TCE's page).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CachedTranslation {
    /// First bus address (page aligned).
    pub iova: u64,
    /// Bytes (the IOMMU page).
    pub len: u64,
    /// Guest-physical address it leads to.
    pub target: u64,
    /// The TCE's permission bits (1 read, 2 write).
    pub perm: u64,
}

/// Most translations kept; past it the IOTLB starts empty again (a device that touches
/// more pages than this between two table changes refills as it goes).
pub(crate) const MAX_CACHED: usize = 4096;

/// The IOTLB with its tag, and a copy of what it holds (vm-memory's `Iotlb` cannot be
/// listed; the checker needs to compare every cached translation with its TCE).
#[derive(Debug, Default)]
pub(crate) struct TlbCache {
    pub(crate) tag: Tag,
    pub(crate) tlb: Iotlb,
    pub(crate) held: Vec<CachedTranslation>,
}

impl TlbCache {
    /// Forgets everything and takes `tag`.
    pub(crate) fn reset(&mut self, tag: Tag) {
        self.tlb.invalidate_all();
        self.held.clear();
        self.tag = tag;
    }
    /// Caches one translation.
    pub(crate) fn insert(&mut self, t: CachedTranslation) {
        if self.held.len() >= MAX_CACHED {
            let tag = self.tag;
            self.reset(tag);
        }
        let perm = match t.perm & 3 {
            1 => Permissions::Read,
            2 => Permissions::Write,
            _ => Permissions::ReadWrite,
        };
        // `set_mapping` cannot fail (its signature keeps room for eviction); the length is
        // one IOMMU page, at most 2^34 bytes, which fits `usize` on the 64-bit hosts
        // vm-memory supports.
        let _ = self.tlb.set_mapping(
            GuestAddress(t.iova),
            GuestAddress(t.target),
            t.len as usize,
            perm,
        );
        self.held.push(t);
    }
}

/// The IOTLB as a lookup holds it: shared on a hit, exclusive right after a refill (so a
/// refill's result is used without letting go of the lock, and a guest that keeps
/// changing its tables cannot starve a device).
pub struct TlbGuard<'a>(Held<'a>);

enum Held<'a> {
    Shared(ReadGuard<'a, TlbCache>),
    Exclusive(WriteGuard<'a, TlbCache>),
}

impl<'a> TlbGuard<'a> {
    pub(crate) fn shared(g: ReadGuard<'a, TlbCache>) -> Self {
        Self(Held::Shared(g))
    }
    pub(crate) fn exclusive(g: WriteGuard<'a, TlbCache>) -> Self {
        Self(Held::Exclusive(g))
    }
}

impl Deref for TlbGuard<'_> {
    type Target = Iotlb;
    #[inline]
    fn deref(&self) -> &Iotlb {
        match &self.0 {
            Held::Shared(g) => &g.tlb,
            Held::Exclusive(g) => &g.tlb,
        }
    }
}

impl core::fmt::Debug for TlbGuard<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("TlbGuard")
    }
}
