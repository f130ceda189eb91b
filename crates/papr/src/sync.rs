//! Locks and atomics, swapped for loom's under `--cfg loom` so that the translation
//! protocol (`iotlb.rs`) and the window changes can be model-checked.
//!
//! A poisoned lock is taken as it is: every critical section in this crate leaves its
//! data consistent before anything that can panic, and no caller input can panic inside.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU64, Ordering};
#[cfg(loom)]
use loom::sync::{RwLock as Inner, RwLockReadGuard, RwLockWriteGuard};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU64, Ordering};
#[cfg(not(loom))]
use std::sync::{RwLock as Inner, RwLockReadGuard, RwLockWriteGuard};

/// A reader-writer lock whose guards ignore poisoning.
#[derive(Debug)]
pub(crate) struct RwLock<T>(Inner<T>);

/// Shared access.
pub(crate) type ReadGuard<'a, T> = RwLockReadGuard<'a, T>;
/// Exclusive access.
pub(crate) type WriteGuard<'a, T> = RwLockWriteGuard<'a, T>;

impl<T> RwLock<T> {
    pub(crate) fn new(v: T) -> Self {
        Self(Inner::new(v))
    }
    #[inline]
    pub(crate) fn read(&self) -> ReadGuard<'_, T> {
        self.0.read().unwrap_or_else(|p| p.into_inner())
    }
    #[inline]
    pub(crate) fn write(&self) -> WriteGuard<'_, T> {
        self.0.write().unwrap_or_else(|p| p.into_inner())
    }
}
