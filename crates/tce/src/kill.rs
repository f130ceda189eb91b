//! TCE cache invalidation hooks.
//!
//! Real PHBs cache TCEs; after changing entries the kernel must invalidate them
//! (`tce_kill` per range after build/clear, a PE-wide invalidate when a window is set or
//! unset). A table reports every change through its [`TceKill`] so that the owner (a PE, a
//! VMM's IOTLB) can model that cache. Hooks are generic parameters, so a table without a
//! cache pays nothing.

use crate::addr::TceIndex;
use std::sync::Arc;

/// Receives the invalidations a table's updates require.
pub trait TceKill: Send + Sync {
    /// Entries `[first, first + count)` changed (the kernel's per-range `tce_kill`).
    #[inline]
    fn kill_range(&self, first: TceIndex, count: u64) {
        let _ = (first, count);
    }
    /// The whole window changed: it was set or unset (PE-wide invalidation).
    #[inline]
    fn kill_all(&self) {}
}

/// No TCE cache: every invalidation is free.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoKill;

impl TceKill for NoKill {}

impl<K: TceKill + ?Sized> TceKill for Arc<K> {
    #[inline]
    fn kill_range(&self, first: TceIndex, count: u64) {
        (**self).kill_range(first, count)
    }
    #[inline]
    fn kill_all(&self) {
        (**self).kill_all()
    }
}

impl<K: TceKill + ?Sized> TceKill for &K {
    #[inline]
    fn kill_range(&self, first: TceIndex, count: u64) {
        (**self).kill_range(first, count)
    }
    #[inline]
    fn kill_all(&self) {
        (**self).kill_all()
    }
}

/// Counts invalidations; what the platform layer uses for "TCE kills counted per PE" and
/// what tests use to assert that an update was reported.
#[derive(Debug, Default)]
pub struct KillCounter {
    ranges: std::sync::atomic::AtomicU64,
    entries: std::sync::atomic::AtomicU64,
    whole: std::sync::atomic::AtomicU64,
}

impl KillCounter {
    /// Per-range kills seen.
    pub fn range_kills(&self) -> u64 {
        self.ranges.load(std::sync::atomic::Ordering::Relaxed)
    }
    /// Entries covered by the per-range kills.
    pub fn entries_killed(&self) -> u64 {
        self.entries.load(std::sync::atomic::Ordering::Relaxed)
    }
    /// Whole-window kills seen.
    pub fn window_kills(&self) -> u64 {
        self.whole.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl TceKill for KillCounter {
    fn kill_range(&self, _first: TceIndex, count: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        self.ranges.fetch_add(1, Relaxed);
        self.entries.fetch_add(count, Relaxed);
    }
    fn kill_all(&self) {
        self.whole
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}
