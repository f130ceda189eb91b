//! A vCPU thread's own hypercall handle: the TCE hypercalls with no lock taken on the way
//! to the table, as KVM's real-mode handlers find theirs (`kvmppc_find_table` walks the
//! VM's table list under RCU; `kvmppc_h_put_tce` and friends take no lock either).
//!
//! # The protocol
//! The handle keeps, per PHB, the window counter it last loaded and the slots' tables it
//! read after loading it (a reference to each, as a [`crate::DeviceTranslator`] does). A
//! call loads the counter (acquire) and uses its tables only if the counter is unchanged;
//! otherwise it reads the slots again under their lock first. Window changes (create,
//! remove, PHB reset, restore) replace a slot's table, never reuse one, and bump the
//! counter before they let go of the slots' lock ([`crate::iotlb`]; held by the slots'
//! write guard, `slots::SlotsMut`, the only way to change a slot), so:
//! - a call that begins after a window change returned sees it: the change's bump happens
//!   before the call's load, which then differs from any older snapshot;
//! - a call racing a change may act on the tables from before it, as if it had run just
//!   before the change: what it writes into a table that has gone reaches no later call
//!   and no device translation that begins after the call returned (the device models
//!   translate through the slots' current tables; one racing both may read it, as a DMA
//!   in flight may).
//!
//! What a hypercall finds costs one plain load where the slot lock costs two atomic
//! read-modify-writes (about 12 ns per call on the development Xeon, where its 512
//! stores take 80). The price: a handle holds the tables of a removed window until its
//! next call on that PHB, its drop, or [`Vcpu::forget_stale`].

use crate::hcall::WindowLookup;
use crate::iotlb::Generation;
use crate::slots::MAX_SLOTS;
use crate::spapr::{PhbShared, Spapr, Target};
use crate::table::GuestTable;
use crate::{HStatus, Hcall};
use std::sync::Arc;
use vm_memory::GuestMemoryBackend;

/// One PHB's windows as a handle last saw them.
#[derive(Debug)]
struct Snapshot<'a> {
    /// The PHB's window counter, loaded before `tables` were read.
    windows: u64,
    /// The PHB's change counters (the slots' own, kept here so that a call's check is
    /// one load from the handle and one from the counter).
    gen: &'a Generation,
    /// The PHB's slots, read again when the counter moves.
    shared: &'a PhbShared,
    /// Each slot's table then (a PHB has one slot, or `MAX_SLOTS` with DDW:
    /// `Spapr::decode` refuses a slot past the PHB's), kept in the snapshot itself so that a call's
    /// walk to its table is one load shorter.
    tables: [Option<Arc<GuestTable>>; MAX_SLOTS],
}

impl<'a> Snapshot<'a> {
    fn take(shared: &'a PhbShared) -> Self {
        let mut s = Self {
            windows: 0,
            gen: shared.gen(),
            shared,
            tables: Default::default(),
        };
        s.retake();
        s
    }

    /// The slots' tables, retaken first if the window counter moved since they were read
    /// (the handle's one check, before any use of a table).
    #[inline(always)]
    fn current(&mut self) -> &[Option<Arc<GuestTable>>] {
        if self.gen.windows() != self.windows {
            self.retake();
        }
        &self.tables
    }

    /// The counter first: tables read after it are at least that new (a change between
    /// the two makes the next call retake them).
    #[cold]
    #[inline(never)]
    fn retake(&mut self) {
        let (windows, slots) = self.shared.slots.read_since();
        self.windows = windows;
        self.tables = std::array::from_fn(|n| slots.get(n).and_then(|s| s.table().cloned()));
    }
}

/// A vCPU thread's hypercall handle ([`Spapr::vcpu`]): the same calls, the same answers
/// as [`Spapr::hcall`] and its `h_*` methods, with each window found without a lock (see
/// the module docs). One per vCPU thread; it is `Send`, so it can be made on one thread
/// and moved to the vCPU's.
#[derive(Debug)]
pub struct Vcpu<'a> {
    spapr: &'a Spapr,
    phbs: Vec<Snapshot<'a>>,
}

impl Spapr {
    /// A vCPU thread's own hypercall handle, with a snapshot of every PHB's windows.
    pub fn vcpu(&self) -> Vcpu<'_> {
        Vcpu {
            spapr: self,
            phbs: self
                .phbs()
                .iter()
                .map(|p| Snapshot::take(&p.shared))
                .collect(),
        }
    }
}

impl WindowLookup for Vcpu<'_> {
    #[inline(always)]
    fn with_table<R>(&mut self, liobn: u64, f: impl FnOnce(&GuestTable) -> R) -> Option<R> {
        // One call of `f`, so that it is inlined here.
        let table: &GuestTable = match self.spapr.decode(liobn)? {
            Target::Pci { phb, slot } => self.phbs.get_mut(phb)?.current().get(slot)?.as_deref()?,
            Target::Vio(i) => &self.spapr.vio().get(i)?.table,
        };
        Some(f(table))
    }
}

impl Vcpu<'_> {
    /// Lets go of the tables of windows that changed since this handle last looked (a
    /// removed DDW's table otherwise stays allocated until the handle's next call on its
    /// PHB): for a VMM to call when the vCPU goes idle, as an RCU grace period ends.
    /// Answers are the same with or without it.
    pub fn forget_stale(&mut self) {
        for snap in &mut self.phbs {
            snap.current();
        }
    }

    /// [`Spapr::hcall`] through this handle.
    #[inline]
    pub fn hcall<M: GuestMemoryBackend>(
        &mut self,
        mem: &M,
        opcode: u64,
        args: [u64; 4],
        problem_state: bool,
    ) -> (HStatus, Option<u64>) {
        let s = self.spapr;
        s.hcall_via(self, mem, opcode, args, problem_state)
    }
    /// [`Spapr::call`] through this handle.
    #[inline]
    pub fn call<M: GuestMemoryBackend>(&mut self, mem: &M, call: Hcall) -> (HStatus, Option<u64>) {
        let s = self.spapr;
        s.call_via(self, mem, call)
    }
    /// [`Spapr::h_put_tce`] through this handle.
    #[inline]
    pub fn h_put_tce<M: GuestMemoryBackend>(
        &mut self,
        mem: &M,
        liobn: u64,
        ioba: u64,
        tce: u64,
    ) -> HStatus {
        let s = self.spapr;
        s.put_tce_via(self, mem, liobn, ioba, tce)
    }
    /// [`Spapr::h_get_tce`] through this handle: r3 and r4 (None: r4 unchanged).
    #[inline]
    pub fn h_get_tce<M: GuestMemoryBackend>(
        &mut self,
        mem: &M,
        liobn: u64,
        ioba: u64,
    ) -> (HStatus, Option<u64>) {
        let s = self.spapr;
        s.get_tce_via(self, mem, liobn, ioba)
    }
    /// [`Spapr::h_stuff_tce`] through this handle.
    #[inline]
    pub fn h_stuff_tce<M: GuestMemoryBackend>(
        &mut self,
        mem: &M,
        liobn: u64,
        ioba: u64,
        tce: u64,
        npages: u64,
    ) -> HStatus {
        let s = self.spapr;
        s.stuff_tce_via(self, mem, liobn, ioba, tce, npages)
    }
    /// [`Spapr::h_put_tce_indirect`] through this handle.
    #[inline]
    pub fn h_put_tce_indirect<M: GuestMemoryBackend>(
        &mut self,
        mem: &M,
        liobn: u64,
        ioba: u64,
        list: u64,
        npages: u64,
    ) -> HStatus {
        let s = self.spapr;
        s.put_tce_indirect_via(self, mem, liobn, ioba, list, npages)
    }
}
