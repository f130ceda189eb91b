//! The TCE hypercalls (papr.md A.4 to A.7) in the three profiles, and the hypercall
//! dispatcher (A.2).

use crate::spapr::Spapr;
use crate::table::GuestTable;
use crate::{opcode, HStatus, Profile, MAX_MULTI_TCE};
use spapr_tce::{Iova, Tce, TceIndex, MAX_BATCH};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion, VolatileMemory};

/// A decoded hypercall.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hcall {
    /// `H_GET_TCE(liobn, ioba)`.
    GetTce {
        /// LIOBN register.
        liobn: u64,
        /// I/O bus address.
        ioba: u64,
    },
    /// `H_PUT_TCE(liobn, ioba, tce)`.
    PutTce {
        /// LIOBN register.
        liobn: u64,
        /// I/O bus address.
        ioba: u64,
        /// The entry.
        tce: u64,
    },
    /// `H_STUFF_TCE(liobn, ioba, tce, count)`.
    StuffTce {
        /// LIOBN register.
        liobn: u64,
        /// First I/O bus address.
        ioba: u64,
        /// The entry written everywhere.
        tce: u64,
        /// Entries.
        npages: u64,
    },
    /// `H_PUT_TCE_INDIRECT(liobn, ioba, tce_list, count)`.
    PutTceIndirect {
        /// LIOBN register.
        liobn: u64,
        /// First I/O bus address.
        ioba: u64,
        /// Guest-physical address of the big-endian TCE list.
        list: u64,
        /// Entries.
        npages: u64,
    },
}

/// Whether TCEs may be stored by a validating implementation: a fault entry (no
/// permission) always; otherwise its address part must be page aligned, with no reserved
/// bit set, and the page must lie in guest RAM (`kvmppc_tce_validate`, LoPAR). Remembers
/// the last RAM region found, since a list's pages are usually in one region.
struct TceValidator<'m, M: GuestMemoryBackend> {
    mem: &'m M,
    page_shift: u32,
    region: (u64, u64),
}

impl<'m, M: GuestMemoryBackend> TceValidator<'m, M> {
    fn new(mem: &'m M, page_shift: u32) -> Self {
        Self {
            mem,
            page_shift,
            region: (1, 0),
        }
    }
    #[inline]
    fn valid(&mut self, tce: u64) -> bool {
        if tce & 3 == 0 {
            return true;
        }
        let size = 1u64 << self.page_shift;
        let addr = tce & !(size - 1);
        if tce & (size - 1) & !3 != 0 {
            return false;
        }
        let Some(end) = addr.checked_add(size) else {
            return false;
        };
        if addr >= self.region.0 && end <= self.region.1 {
            return true;
        }
        if let Some(r) = self.mem.find_region(GuestAddress(addr)) {
            let start = r.start_addr().0;
            self.region = (start, start.saturating_add(r.len()));
        }
        self.mem.check_range(GuestAddress(addr), size as usize)
    }

    /// Whether every entry of a list kept as it sits in guest memory (big-endian bytes,
    /// bounds from [`read_list_be`]) is valid. When no entry sets a reserved bit and one
    /// RAM region covers the bounds, all are valid at once; otherwise each entry is checked
    /// on its own. Either way the answer is that of [`Self::valid`] entry by entry.
    fn all_valid_be(&mut self, be: &[u8], b: ListBounds) -> bool {
        self.bounds_valid(be, b) || be.chunks_exact(8).all(|w| self.valid(be_word(w)))
    }

    /// The fast half of [`Self::all_valid`]: true if the bounds alone prove every entry
    /// valid (false says nothing).
    ///
    /// Every entry is at most the OR, so every page lies in `[0, OR page + size)`: when
    /// one RAM region starts at 0 and covers that (guest RAM starts at 0), the OR alone
    /// proves the list; only past that region is the AND taken (a second pass over `be`)
    /// for the lower bound.
    fn bounds_valid(&mut self, be: &[u8], b: ListBounds) -> bool {
        if b.any & 3 == 0 {
            // No entry carries a permission.
            return true;
        }
        let size = 1u64 << self.page_shift;
        let reserved = (size - 1) & !3;
        if b.any & reserved != 0 {
            return false;
        }
        let Some(end) = (b.any & !(size - 1)).checked_add(size) else {
            return false;
        };
        let covers =
            |r: Option<&M::R>| r.is_some_and(|r| end <= r.start_addr().0.saturating_add(r.len()));
        if covers(self.mem.find_region(GuestAddress(0))) {
            return true;
        }
        let lo = u64::from_be(spapr_tce::scan::and_words(be)) & !(size - 1);
        covers(self.mem.find_region(GuestAddress(lo)))
    }
}

/// The bound of a list's entries, gathered as the list is read: the OR of them holds
/// every low bit any of them sets and is at least as large as each. Entries without a
/// permission need no validation but are included: they only widen the bound, and a
/// bound that fails sends the list to the entry-by-entry check.
#[derive(Clone, Copy, Debug)]
struct ListBounds {
    any: u64,
}

#[inline]
fn tce_valid<M: GuestMemoryBackend>(mem: &M, tce: u64, page_shift: u32) -> bool {
    TceValidator::new(mem, page_shift).valid(tce)
}

/// KVM's `kvmppc_ioba_validate`: aligned, inside the window for the whole range.
#[inline]
fn range_ok(t: &GuestTable, ioba: u64, npages: u64) -> Option<TceIndex> {
    let g = t.geometry();
    if ioba & g.offset_mask() != 0 {
        return None;
    }
    let rel = g.relative_index(Iova(ioba))?;
    (npages <= g.entries() - rel).then(|| TceIndex(g.first_index().0 + rel))
}

impl Spapr {
    /// Runs a hypercall. `problem_state` is `MSR[PR]`: QEMU refuses every hypercall from
    /// user mode with H_PRIVILEGE. Returns r3 and, for H_GET_TCE, r4 (None = unchanged).
    /// Each call finds its window under the PHB's slot lock; a vCPU thread's own
    /// [`Vcpu`](crate::Vcpu) finds it without one.
    pub fn hcall<M: GuestMemoryBackend>(
        &self,
        mem: &M,
        opcode: u64,
        args: [u64; 4],
        problem_state: bool,
    ) -> (HStatus, Option<u64>) {
        self.hcall_via(&mut Locked(self), mem, opcode, args, problem_state)
    }

    pub(crate) fn hcall_via<L: WindowLookup, M: GuestMemoryBackend>(
        &self,
        look: &mut L,
        mem: &M,
        opcode: u64,
        args: [u64; 4],
        problem_state: bool,
    ) -> (HStatus, Option<u64>) {
        if problem_state {
            return (HStatus::Privilege, None);
        }
        match decode(opcode, args) {
            Some(call) => self.call_via(look, mem, call),
            None if opcode == opcode::KVMPPC_H_RTAS => (self.h_rtas(mem, args[0]), None),
            None => (HStatus::Function, None),
        }
    }

    /// Runs a decoded TCE hypercall.
    pub fn call<M: GuestMemoryBackend>(&self, mem: &M, call: Hcall) -> (HStatus, Option<u64>) {
        self.call_via(&mut Locked(self), mem, call)
    }

    pub(crate) fn call_via<L: WindowLookup, M: GuestMemoryBackend>(
        &self,
        look: &mut L,
        mem: &M,
        call: Hcall,
    ) -> (HStatus, Option<u64>) {
        match call {
            Hcall::GetTce { liobn, ioba } => self.get_tce_via(look, mem, liobn, ioba),
            Hcall::PutTce { liobn, ioba, tce } => {
                (self.put_tce_via(look, mem, liobn, ioba, tce), None)
            }
            Hcall::StuffTce {
                liobn,
                ioba,
                tce,
                npages,
            } => (
                self.stuff_tce_via(look, mem, liobn, ioba, tce, npages),
                None,
            ),
            Hcall::PutTceIndirect {
                liobn,
                ioba,
                list,
                npages,
            } => (
                self.put_tce_indirect_via(look, mem, liobn, ioba, list, npages),
                None,
            ),
        }
    }

    /// `H_PUT_TCE`.
    pub fn h_put_tce<M: GuestMemoryBackend>(
        &self,
        mem: &M,
        liobn: u64,
        ioba: u64,
        tce: u64,
    ) -> HStatus {
        self.put_tce_via(&mut Locked(self), mem, liobn, ioba, tce)
    }

    pub(crate) fn put_tce_via<L: WindowLookup, M: GuestMemoryBackend>(
        &self,
        look: &mut L,
        mem: &M,
        liobn: u64,
        ioba: u64,
        tce: u64,
    ) -> HStatus {
        // As in H_STUFF_TCE: KVM's path inlined alone, the others out of line.
        let st = match self.profile() {
            Profile::Qemu => look.with_table(liobn, |t| put_masked(t, ioba, tce)),
            Profile::Kvm => look.with_table(liobn, |t| put_kvm(t, ioba, tce)),
            Profile::Lopar => look.with_table(liobn, |t| put_lopar(mem, t, ioba, tce)),
        }
        .unwrap_or(HStatus::Parameter);
        self.traced(look, Hcall::PutTce { liobn, ioba, tce }, st)
    }

    /// `H_GET_TCE`: r3 and r4 (None: r4 unchanged).
    pub fn h_get_tce<M: GuestMemoryBackend>(
        &self,
        mem: &M,
        liobn: u64,
        ioba: u64,
    ) -> (HStatus, Option<u64>) {
        self.get_tce_via(&mut Locked(self), mem, liobn, ioba)
    }

    pub(crate) fn get_tce_via<L: WindowLookup, M: GuestMemoryBackend>(
        &self,
        look: &mut L,
        mem: &M,
        liobn: u64,
        ioba: u64,
    ) -> (HStatus, Option<u64>) {
        let profile = self.profile();
        let r = look
            .with_table(liobn, |t| {
                let idx = match profile {
                    Profile::Qemu => t.index_of(ioba & !((1u64 << t.page_shift()) - 1)),
                    Profile::Kvm | Profile::Lopar => range_ok(t, ioba, 1),
                };
                let Some(i) = idx else {
                    return (HStatus::Parameter, None);
                };
                let v = t.tces.get(i).map_or(0, |e| e.0);
                if profile == Profile::Lopar && !tce_valid(mem, v, t.page_shift()) {
                    return (HStatus::Partial, Some(v | 0xFFFF_FFFF_FFFF_F000));
                }
                (HStatus::Success, Some(v))
            })
            .unwrap_or((HStatus::Parameter, None));
        (self.traced(look, Hcall::GetTce { liobn, ioba }, r.0), r.1)
    }

    /// `H_STUFF_TCE`.
    pub fn h_stuff_tce<M: GuestMemoryBackend>(
        &self,
        mem: &M,
        liobn: u64,
        ioba: u64,
        tce: u64,
        npages: u64,
    ) -> HStatus {
        self.stuff_tce_via(&mut Locked(self), mem, liobn, ioba, tce, npages)
    }

    pub(crate) fn stuff_tce_via<L: WindowLookup, M: GuestMemoryBackend>(
        &self,
        look: &mut L,
        mem: &M,
        liobn: u64,
        ioba: u64,
        tce: u64,
        npages: u64,
    ) -> HStatus {
        // One lookup per profile, so that KVM's (the fast path a VMM runs) is inlined
        // alone and the others are calls: what runs before the first store is what the
        // call costs on top of its stores.
        let st = match self.profile() {
            Profile::Qemu => look.with_table(liobn, |t| stuff_qemu(t, ioba, tce, npages)),
            Profile::Kvm => look.with_table(liobn, |t| stuff_kvm(t, ioba, tce, npages)),
            Profile::Lopar => look.with_table(liobn, |t| stuff_lopar(mem, t, ioba, tce, npages)),
        }
        .unwrap_or(HStatus::Parameter);
        self.traced(
            look,
            Hcall::StuffTce {
                liobn,
                ioba,
                tce,
                npages,
            },
            st,
        )
    }

    /// `H_PUT_TCE_INDIRECT`: `npages` big-endian TCEs read from guest memory at `list`.
    pub fn h_put_tce_indirect<M: GuestMemoryBackend>(
        &self,
        mem: &M,
        liobn: u64,
        ioba: u64,
        list: u64,
        npages: u64,
    ) -> HStatus {
        self.put_tce_indirect_via(&mut Locked(self), mem, liobn, ioba, list, npages)
    }

    pub(crate) fn put_tce_indirect_via<L: WindowLookup, M: GuestMemoryBackend>(
        &self,
        look: &mut L,
        mem: &M,
        liobn: u64,
        ioba: u64,
        list: u64,
        npages: u64,
    ) -> HStatus {
        // As in H_STUFF_TCE: KVM's path inlined alone, the others out of line.
        let st = match self.profile() {
            Profile::Qemu => look.with_table(liobn, |t| {
                indirect_checks(list, npages)
                    .map_or(HStatus::Parameter, |n| indirect_qemu(mem, t, ioba, list, n))
            }),
            Profile::Kvm => look.with_table(liobn, |t| indirect_kvm(mem, t, ioba, list, npages)),
            Profile::Lopar => {
                look.with_table(liobn, |t| indirect_lopar(mem, t, ioba, list, npages))
            }
        }
        .unwrap_or(HStatus::Parameter);
        self.traced(
            look,
            Hcall::PutTceIndirect {
                liobn,
                ioba,
                list,
                npages,
            },
            st,
        )
    }

    /// Reports a refused hypercall with the reason, when a subscriber listens: the reason
    /// is worked out again only then, so the hot path pays one check of the callsite. It
    /// is worked out through the lookup the call used (a vCPU handle's own snapshot, or
    /// the lock), not the locked path alone.
    #[inline(always)]
    fn traced<L: WindowLookup>(&self, look: &mut L, call: Hcall, st: HStatus) -> HStatus {
        if st != HStatus::Success {
            self.trace_refusal(look, call, st);
        }
        st
    }

    /// [`Self::traced`] of a refusal, out of line: a successful call then carries none of
    /// the tracing code (nor the registers and stack it needs) in its own frame.
    #[cold]
    #[inline(never)]
    fn trace_refusal<L: WindowLookup>(&self, look: &mut L, call: Hcall, st: HStatus) {
        if tracing::enabled!(target: "spapr_papr", tracing::Level::DEBUG) {
            let reason = self.refusal(look, &call);
            tracing::debug!(target: "spapr_papr", ?call, status = %st, reason, profile = self.profile().name(), "hypercall refused");
        }
    }

    /// Why a call was refused, checked in the order the profiles check.
    fn refusal<L: WindowLookup>(&self, look: &mut L, call: &Hcall) -> &'static str {
        let (liobn, ioba, count) = match *call {
            Hcall::GetTce { liobn, ioba } | Hcall::PutTce { liobn, ioba, .. } => (liobn, ioba, 1),
            Hcall::StuffTce {
                liobn,
                ioba,
                npages,
                ..
            }
            | Hcall::PutTceIndirect {
                liobn,
                ioba,
                npages,
                ..
            } => (liobn, ioba, npages),
        };
        if self.decode(liobn).is_none() {
            return "unknown LIOBN";
        }
        look.with_table(liobn, |t| {
            if let Hcall::PutTceIndirect { list, .. } = *call {
                if count > MAX_MULTI_TCE {
                    return "more than 512 entries";
                }
                if list & 0xfff != 0 {
                    return "TCE list not 4 KiB aligned";
                }
            }
            if ioba & ((1 << t.page_shift()) - 1) != 0 && self.profile() != Profile::Qemu {
                return "ioba not aligned to the IOMMU page";
            }
            if range_ok(t, ioba & !((1 << t.page_shift()) - 1), count).is_none() {
                return "range outside the window";
            }
            if count == 0 {
                return "zero count";
            }
            "entry refused by the profile's validation"
        })
        .unwrap_or("window disabled")
    }
}

/// Where a hypercall finds the table behind a LIOBN: under the PHB's slot lock
/// ([`Locked`]), or in a vCPU's own snapshot of the windows ([`crate::Vcpu`]).
pub(crate) trait WindowLookup {
    /// Runs `f` on the enabled table of `liobn`; None for an unknown LIOBN or a disabled
    /// window.
    fn with_table<R>(&mut self, liobn: u64, f: impl FnOnce(&GuestTable) -> R) -> Option<R>;
}

/// The table found under the PHB's slot lock, held for the call ([`Spapr::with_table`]).
pub(crate) struct Locked<'a>(pub(crate) &'a Spapr);

impl WindowLookup for Locked<'_> {
    #[inline]
    fn with_table<R>(&mut self, liobn: u64, f: impl FnOnce(&GuestTable) -> R) -> Option<R> {
        self.0.with_table(liobn, f)
    }
}

fn decode(opcode: u64, a: [u64; 4]) -> Option<Hcall> {
    Some(match opcode {
        opcode::H_GET_TCE => Hcall::GetTce {
            liobn: a[0],
            ioba: a[1],
        },
        opcode::H_PUT_TCE => Hcall::PutTce {
            liobn: a[0],
            ioba: a[1],
            tce: a[2],
        },
        opcode::H_STUFF_TCE => Hcall::StuffTce {
            liobn: a[0],
            ioba: a[1],
            tce: a[2],
            npages: a[3],
        },
        opcode::H_PUT_TCE_INDIRECT => Hcall::PutTceIndirect {
            liobn: a[0],
            ioba: a[1],
            list: a[2],
            npages: a[3],
        },
        _ => return None,
    })
}

#[inline]
fn store(t: &GuestTable, i: TceIndex, tce: u64) -> HStatus {
    match t.tces.set(i, Tce(tce)) {
        Ok(()) => HStatus::Success,
        Err(_) => HStatus::Hardware,
    }
}

/// KVM's H_PUT_TCE: alignment and range first. An entry KVM cannot validate goes to
/// QEMU, which stores it as it is: the same result.
#[inline(always)]
fn put_kvm(t: &GuestTable, ioba: u64, tce: u64) -> HStatus {
    let Some(i) = range_ok(t, ioba, 1) else {
        return HStatus::Parameter;
    };
    store(t, i, tce)
}

/// LoPAR's H_PUT_TCE: alignment and range, then the TCE validated against guest memory.
#[inline(never)]
fn put_lopar<M: GuestMemoryBackend>(mem: &M, t: &GuestTable, ioba: u64, tce: u64) -> HStatus {
    let Some(i) = range_ok(t, ioba, 1) else {
        return HStatus::Parameter;
    };
    if !tce_valid(mem, tce, t.page_shift()) {
        return HStatus::Parameter;
    }
    store(t, i, tce)
}

/// QEMU's put: low bits of ioba dropped, then the index check.
#[inline(never)]
fn put_masked(t: &GuestTable, ioba: u64, tce: u64) -> HStatus {
    match t.index_of(ioba & !((1u64 << t.page_shift()) - 1)) {
        Some(i) => store(t, i, tce),
        None => HStatus::Parameter,
    }
}

#[inline]
fn fill(t: &GuestTable, first: TceIndex, n: u64, tce: u64) -> HStatus {
    match t.tces.fill(first, n, Tce(tce)) {
        Ok(()) => HStatus::Success,
        Err(_) => HStatus::Hardware,
    }
}

#[inline]
fn put_be(t: &GuestTable, first: TceIndex, be: &[u8]) -> HStatus {
    match t.tces.put_batch_be(first, be) {
        Ok(()) => HStatus::Success,
        Err(_) => HStatus::Hardware,
    }
}

#[inline]
fn put(t: &GuestTable, first: TceIndex, tces: &[Tce]) -> HStatus {
    match t.tces.put_batch(first, tces) {
        Ok(()) => HStatus::Success,
        Err(_) => HStatus::Hardware,
    }
}

/// How many entries from the (masked) `ioba` QEMU's loop writes before its index check
/// fails, and where it starts; None if the first index already fails.
fn qemu_run(t: &GuestTable, ioba: u64, npages: u64) -> Option<(TceIndex, u64)> {
    let first = t.index_of(ioba & !((1u64 << t.page_shift()) - 1))?;
    let rel = first.0 - t.tces.geometry().first_index().0;
    Some((first, npages.min(t.nb_table() - rel)))
}

/// KVM's H_STUFF_TCE (`kvmppc_h_stuff_tce`): alignment and range, then the TCE's
/// reserved bits; nothing stored unless all of it can be.
#[inline(always)]
fn stuff_kvm(t: &GuestTable, ioba: u64, tce: u64, npages: u64) -> HStatus {
    let Some(first) = range_ok(t, ioba, npages) else {
        return HStatus::Parameter;
    };
    if tce & 3 != 0 {
        return HStatus::Parameter;
    }
    fill(t, first, npages, tce)
}

/// LoPAR's H_STUFF_TCE: at most 512 entries (H_P4), the range, then the TCE validated
/// against guest memory.
#[inline(never)]
fn stuff_lopar<M: GuestMemoryBackend>(
    mem: &M,
    t: &GuestTable,
    ioba: u64,
    tce: u64,
    npages: u64,
) -> HStatus {
    if npages > MAX_MULTI_TCE {
        return HStatus::P4;
    }
    let Some(first) = range_ok(t, ioba, npages) else {
        return HStatus::Parameter;
    };
    if !tce_valid(mem, tce, t.page_shift()) {
        return HStatus::Parameter;
    }
    fill(t, first, npages, tce)
}

/// QEMU's H_STUFF_TCE: count above the table size refused up front; zero refused; entries
/// before the first bad index stay written.
#[inline(never)]
fn stuff_qemu(t: &GuestTable, ioba: u64, tce: u64, npages: u64) -> HStatus {
    if npages > t.nb_table() || npages == 0 {
        return HStatus::Parameter;
    }
    let Some((first, ok)) = qemu_run(t, ioba, npages) else {
        return HStatus::Parameter;
    };
    if fill(t, first, ok, tce) != HStatus::Success {
        return HStatus::Hardware;
    }
    if ok < npages {
        HStatus::Parameter
    } else {
        HStatus::Success
    }
}

/// Reads the list into `out` (QEMU's path, which validates nothing); None if any of it is
/// outside guest RAM. The list is read as u64 words straight from the guest page (one
/// region: the list is 4 KiB aligned and at most 4 KiB long).
#[inline]
fn read_list<M: GuestMemoryBackend>(mem: &M, list: u64, out: &mut [Tce]) -> Option<()> {
    let slice = mem.get_slice(GuestAddress(list), 8 * out.len()).ok()?;
    let words = slice.get_array_ref::<u64>(0, out.len()).ok()?;
    for (i, e) in out.iter_mut().enumerate() {
        *e = Tce(u64::from_be(words.load(i)));
    }
    Some(())
}

/// A TCE list's copy, page aligned like the guest page it is copied from: the copy's
/// loads and stores then never alias by their low 12 bits (a load behind a store to the
/// same offset in another page stalls the copy), wherever the thread's storage lands.
#[repr(C, align(4096))]
struct ListPage([u8; 8 * MAX_BATCH]);

thread_local! {
    /// The calling vCPU thread's private copy of a TCE list (one 4 KiB page), kept between
    /// calls so that no call pays for zeroing it.
    static LIST: std::cell::RefCell<ListPage> = const { std::cell::RefCell::new(ListPage([0; 8 * MAX_BATCH])) };
}

/// One big-endian word of a list copy.
#[inline(always)]
fn be_word(w: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(w);
    u64::from_be_bytes(b)
}

/// Copies the list into `bytes` (vm-memory's copy, safe while the guest may write the
/// page: what is validated is what is stored) and gathers the bound of its entries. The
/// OR is taken of the words as they are (a byte swap is a permutation of bits, so it
/// commutes with it) and swapped once at the end: a vectorized pass (`spapr_tce::scan`).
/// None if any of it is outside guest RAM.
#[inline]
fn read_list_be<M: GuestMemoryBackend>(mem: &M, list: u64, bytes: &mut [u8]) -> Option<ListBounds> {
    mem.read_slice(bytes, GuestAddress(list)).ok()?;
    Some(ListBounds {
        any: u64::from_be(spapr_tce::scan::or_words(bytes)),
    })
}

/// Every profile's first checks of H_PUT_TCE_INDIRECT: at most 512 entries, a 4 KiB
/// aligned list. The entry count, or None (H_PARAMETER).
#[inline(always)]
fn indirect_checks(list: u64, npages: u64) -> Option<usize> {
    (npages <= MAX_MULTI_TCE && list & 0xfff == 0).then_some(npages as usize)
}

/// [`indirect_checks`], then the range (KVM's and LoPAR's order): the entry count and
/// the first index, or None (H_PARAMETER).
#[inline(always)]
fn indirect_range(t: &GuestTable, ioba: u64, list: u64, npages: u64) -> Option<(usize, TceIndex)> {
    let n = indirect_checks(list, npages)?;
    Some((n, range_ok(t, ioba, npages)?))
}

/// KVM's H_PUT_TCE_INDIRECT (`kvmppc_h_put_tce_indirect`): the checks and the range, the
/// list copied and every entry validated before any is stored. A list outside a memslot,
/// or a TCE KVM cannot validate: QEMU does the whole call instead.
#[inline(always)]
fn indirect_kvm<M: GuestMemoryBackend>(
    mem: &M,
    t: &GuestTable,
    ioba: u64,
    list: u64,
    npages: u64,
) -> HStatus {
    let Some((n, first)) = indirect_range(t, ioba, list, npages) else {
        return HStatus::Parameter;
    };
    LIST.with_borrow_mut(|page| {
        let bytes = &mut page.0[..8 * n];
        let mut v = TceValidator::new(mem, t.page_shift());
        match read_list_be(mem, list, bytes) {
            Some(b) if v.all_valid_be(bytes, b) => put_be(t, first, bytes),
            _ => indirect_qemu(mem, t, ioba, list, n),
        }
    })
}

/// LoPAR's H_PUT_TCE_INDIRECT: the checks and the range, a list wholly in guest memory,
/// every entry validated; nothing stored unless all of it is.
#[inline(never)]
fn indirect_lopar<M: GuestMemoryBackend>(
    mem: &M,
    t: &GuestTable,
    ioba: u64,
    list: u64,
    npages: u64,
) -> HStatus {
    let Some((n, first)) = indirect_range(t, ioba, list, npages) else {
        return HStatus::Parameter;
    };
    if !mem.check_range(GuestAddress(list), 4096) {
        return HStatus::Parameter;
    }
    LIST.with_borrow_mut(|page| {
        let bytes = &mut page.0[..8 * n];
        let Some(b) = read_list_be(mem, list, bytes) else {
            return HStatus::Parameter;
        };
        let mut v = TceValidator::new(mem, t.page_shift());
        if !v.all_valid_be(bytes, b) {
            return HStatus::Parameter;
        }
        put_be(t, first, bytes)
    })
}

/// QEMU's H_PUT_TCE_INDIRECT after the LIOBN, count and alignment checks: entries read
/// one by one (outside RAM reads as 0), written until the first bad index.
#[inline(never)]
fn indirect_qemu<M: GuestMemoryBackend>(
    mem: &M,
    t: &GuestTable,
    ioba: u64,
    list: u64,
    n: usize,
) -> HStatus {
    let mut buf = [Tce::EMPTY; MAX_BATCH];
    let tces = &mut buf[..n];
    let npages = n as u64;
    if npages == 0 {
        return HStatus::Parameter;
    }
    let Some((first, ok)) = qemu_run(t, ioba, npages) else {
        return HStatus::Parameter;
    };
    let tces = &mut tces[..ok as usize];
    if read_list(mem, list, tces).is_none() {
        for (i, e) in tces.iter_mut().enumerate() {
            let v: Option<u64> = mem.read_obj(GuestAddress(list + 8 * i as u64)).ok();
            *e = Tce(v.map_or(0, u64::from_be));
        }
    }
    if put(t, first, tces) != HStatus::Success {
        return HStatus::Hardware;
    }
    if ok < npages {
        HStatus::Parameter
    } else {
        HStatus::Success
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use vm_memory::GuestMemoryMmap;

    /// Guest RAM in two regions with a hole: [0, 1 MiB) and [2 MiB, 3 MiB).
    fn two_regions() -> GuestMemoryMmap<()> {
        GuestMemoryMmap::from_ranges(&[
            (GuestAddress(0), 1 << 20),
            (GuestAddress(2 << 20), 1 << 20),
        ])
        .expect("guest memory")
    }

    /// The bounds `read_list` gathers, computed apart.
    fn bounds_of(list: &[u64]) -> ListBounds {
        ListBounds {
            any: list.iter().fold(0, |a, v| a | v),
        }
    }

    /// An entry near the regions' edges: page or not, permission or not, a stray low bit.
    fn entry() -> impl Strategy<Value = u64> {
        (0u64..(4 << 8), 0u64..4, prop::bool::weighted(0.05))
            .prop_map(|(page, perm, stray)| (page << 12) | perm | if stray { 0x100 } else { 0 })
    }

    proptest! {
        /// The list check answers exactly as checking each entry, whatever the list.
        #[test]
        fn list_check_is_entry_by_entry(list in prop::collection::vec(entry(), 1..64)) {
            let mem = two_regions();
            let tces: Vec<Tce> = list.iter().map(|&v| Tce(v)).collect();
            let bounds = bounds_of(&list);
            let each = {
                let mut v = TceValidator::new(&mem, 12);
                list.iter().all(|&e| v.valid(e))
            };
            let be: Vec<u8> = tces.iter().flat_map(|t| t.0.to_be_bytes()).collect();
            let mut v = TceValidator::new(&mem, 12);
            prop_assert_eq!(v.all_valid_be(&be, bounds), each);
        }
    }

    #[test]
    fn list_bounds_fast_path_and_fallback() {
        let mem = two_regions();
        let check = |list: &[u64]| {
            let be: Vec<u8> = list.iter().flat_map(|v| v.to_be_bytes()).collect();
            TceValidator::new(&mem, 12).all_valid_be(&be, bounds_of(list))
        };
        // One region: valid.
        assert!(check(&[0x1003, 0x2001, 0xF_F002]));
        // Both regions, no entry in the hole: valid through the entry-by-entry check.
        assert!(check(&[0x1003, 0x20_0003]));
        // An entry in the hole: invalid.
        assert!(!check(&[0x1003, 0x18_0003]));
        // A reserved bit on a mapped entry: invalid; on an unmapped one: fine.
        assert!(!check(&[0x1103]));
        assert!(check(&[0x1100, 0x1003]));
        // No permission anywhere: nothing to validate.
        assert!(check(&[0x7FFF_F000, 0x18_0000]));
        // The bounds alone: the OR within the region at 0; past it, the AND gives the
        // lower bound in the second region; across the hole, neither proves anything.
        let bounds = |list: &[u64]| {
            let be: Vec<u8> = list.iter().flat_map(|v| v.to_be_bytes()).collect();
            TceValidator::new(&mem, 12).bounds_valid(&be, bounds_of(list))
        };
        assert!(bounds(&[0x1003, 0xF_F001]));
        assert!(bounds(&[0x20_0003, 0x2F_F002]));
        assert!(!bounds(&[0x1003, 0x20_0003]));
        assert!(!bounds(&[0x30_0003]));
        // The first page past each region, alone or beside one inside it.
        assert!(!bounds(&[0x10_0003]));
        assert!(!bounds(&[0x1003, 0x10_0001]));
        assert!(!bounds(&[0x20_0003, 0x30_0002]));
        assert!(!check(&[0x10_0003]));
        assert!(!check(&[0x20_0003, 0x30_0002]));
    }
}
