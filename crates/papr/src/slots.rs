//! A PHB's window slots (QEMU's `liobn[n]` TCE tables of one `SpaprPhbState`), and the only
//! way to change them.
//!
//! Every reader that keeps a table past its lock (a [`crate::Vcpu`] handle, a
//! [`crate::DeviceTranslator`]) trusts the PHB's window counter: a slot change is seen
//! because the counter moved. So the rule "a window change bumps the counter, before the
//! lock is let go" is held here by a type rather than by each caller: a slot's table is
//! private to this module, the only writer is [`SlotsMut`] (the write lock), and dropping a
//! [`SlotsMut`] that changed a table bumps the counter while the lock is still held (its
//! `Drop` runs before the guard it owns is released).
//!
//! Readers pair with it through [`Slots::read_since`], which loads the counter *before* it
//! reads the slots: the tables read are at least as new as the counter value returned, and
//! a change that lands in between makes the next comparison differ.

use crate::iotlb::Generation;
use crate::sync::{ReadGuard, RwLock, WriteGuard};
use crate::table::GuestTable;
use std::ops::Deref;
use std::sync::Arc;

/// One window slot of a PHB.
#[derive(Debug)]
pub(crate) struct Slot {
    liobn: u32,
    table: Option<Arc<GuestTable>>,
    def_win: bool,
}

impl Slot {
    /// Its LIOBN (`SPAPR_PCI_LIOBN(index, n)`).
    #[inline]
    pub(crate) fn liobn(&self) -> u32 {
        self.liobn
    }
    /// The table while the window is enabled.
    #[inline]
    pub(crate) fn table(&self) -> Option<&Arc<GuestTable>> {
        self.table.as_ref()
    }
    /// QEMU's sticky `def_win` flag (set on slot 0 by a PHB reset).
    #[inline]
    pub(crate) fn def_win(&self) -> bool {
        self.def_win
    }
}

/// Window slots a PHB has at most: the default window and one DDW (QEMU's
/// `SPAPR_PCI_DMA_MAX_WINDOWS`).
pub(crate) const MAX_SLOTS: usize = 2;

/// The slots of one PHB behind their lock, with the PHB's change counters.
///
/// Lock order (this crate's one order, `iotlb.rs`): `PhbShared::iotlb` (the device IOTLB)
/// before this lock. Only an IOTLB refill holds both; hypercalls, RTAS calls, resets and
/// restores take this lock alone and never the IOTLB's.
#[derive(Debug)]
pub(crate) struct Slots {
    slots: RwLock<Vec<Slot>>,
    gen: Arc<Generation>,
}

impl Slots {
    /// Disabled slots with these LIOBNs, publishing through `gen`.
    pub(crate) fn new(liobns: impl IntoIterator<Item = u32>, gen: Arc<Generation>) -> Self {
        let slots = liobns
            .into_iter()
            .map(|liobn| Slot {
                liobn,
                table: None,
                def_win: false,
            })
            .collect();
        Self {
            slots: RwLock::new(slots),
            gen,
        }
    }

    /// The PHB's change counters (this is their one owner; tables' kill hooks and the
    /// device IOTLB hold clones).
    #[inline]
    pub(crate) fn gen(&self) -> &Arc<Generation> {
        &self.gen
    }

    /// The slots as they are now (shared lock).
    #[inline]
    pub(crate) fn read(&self) -> ReadGuard<'_, Vec<Slot>> {
        self.slots.read()
    }

    /// The window counter, loaded before the slots are read, and the slots: what is read
    /// is at least as new as the counter value (the snapshot protocol of [`crate::Vcpu`]
    /// and [`crate::DeviceTranslator`]).
    #[inline]
    pub(crate) fn read_since(&self) -> (u64, ReadGuard<'_, Vec<Slot>>) {
        let windows = self.gen.windows();
        (windows, self.slots.read())
    }

    /// Exclusive access to change the slots; the change is published when it is dropped.
    #[inline]
    pub(crate) fn write(&self) -> SlotsMut<'_> {
        SlotsMut {
            slots: self.slots.write(),
            gen: &self.gen,
            changed: false,
        }
    }
}

/// The slots under their write lock. Dropping it after a table changed bumps the window
/// counter (release) before the lock is let go, so no path can change a window without
/// publishing it.
#[derive(Debug)]
pub(crate) struct SlotsMut<'a> {
    slots: WriteGuard<'a, Vec<Slot>>,
    gen: &'a Generation,
    changed: bool,
}

impl SlotsMut<'_> {
    /// Puts `table` in slot `n` (None disables it) and returns what was there. A slot that
    /// stays disabled is no change.
    pub(crate) fn set_table(
        &mut self,
        n: usize,
        table: Option<Arc<GuestTable>>,
    ) -> Option<Arc<GuestTable>> {
        let slot = &mut self.slots[n];
        let old = std::mem::replace(&mut slot.table, table);
        self.changed |= old.is_some() || slot.table.is_some();
        old
    }

    /// Sets slot `n`'s `def_win` flag (no reader keeps it, so no publication).
    pub(crate) fn set_def_win(&mut self, n: usize, def_win: bool) {
        self.slots[n].def_win = def_win;
    }
}

impl Deref for SlotsMut<'_> {
    type Target = [Slot];
    #[inline]
    fn deref(&self) -> &[Slot] {
        &self.slots
    }
}

impl Drop for SlotsMut<'_> {
    /// Runs before the write guard (a field) is dropped: the bump is inside the lock.
    fn drop(&mut self) {
        if self.changed {
            self.gen.windows_changed(self);
        }
    }
}
