//! The level tree behind a table: a top level allocated with the table and lower levels
//! allocated on first write, published with one compare-and-swap (the kernel's `pnv_tce`
//! with `alloc = true`). Levels are never freed before the table is dropped, which is what
//! makes lock-free readers safe without any reclamation scheme: a pointer, once published,
//! stays valid for the table's lifetime.
//!
//! This is the only module of the crate with `unsafe`: directory slots hold raw pointers
//! to the child level's first slot. Every dereference relies on the two invariants below,
//! which this module alone establishes, and on indices this module bounds itself (a top
//! index through a checked `get`, lower ones masked to a level, a flat table's through a
//! checked `get`, a view's against the window's entry count): no caller outside it can make
//! a lookup unsound.
//!
//! - I1: a non-null directory slot at depth `d` points to a live, leaked boxed slice of
//!   `level_entries` elements: `AtomicPtr<()>` slots if `d + 1 < levels - 1`, else leaf
//!   `AtomicU64` slots. It was fully initialised before it was published (Release CAS,
//!   Acquire loads).
//! - I2: it is freed only by `Drop`, which has exclusive access.

use crate::error::TceError;
use crate::geometry::TableGeometry;
use crate::sync::{AtomicPtr, AtomicU64, Ordering};
use core::ptr;

/// What a directory slot points at.
type Child = AtomicPtr<()>;

/// The first slot of the leaf holding `rel` in a tree of `levels` levels (`levels >= 2`):
/// the top entry, `levels - 2` directory entries, then the leaf pointer; `None` where a
/// level is missing or `rel` is past the top. Called with a constant depth it unrolls (a
/// translation's loads then follow one another with no loop control between them). The
/// pointer returned starts a live leaf of `1 << bits` slots (I1).
#[inline(always)]
fn find_leaf(top: &[Child], rel: u64, levels: u32, bits: u32) -> Option<*const AtomicU64> {
    let mask = (1u64 << bits) - 1;
    let mut child = top
        .get((rel >> ((levels - 1) * bits)) as usize)?
        .load(Ordering::Acquire);
    let mut k = levels - 1;
    while k > 1 {
        k -= 1;
        if child.is_null() {
            return None;
        }
        // SAFETY: `child` is a live directory level of `1 << bits` slots (I1; not a leaf
        // since `k > 0` levels remain below it); the index is masked.
        child = unsafe { &*(child as *const Child).add(((rel >> (k * bits)) & mask) as usize) }
            .load(Ordering::Acquire);
    }
    if child.is_null() {
        return None;
    }
    Some(child as *const AtomicU64)
}

/// [`View::slot`] in a tree of `levels` levels: the leaf's slot of `rel`.
#[inline(always)]
fn find_slot(top: &[Child], rel: u64, levels: u32, bits: u32) -> Option<&AtomicU64> {
    let leaf = find_leaf(top, rel, levels, bits)?;
    // SAFETY: `leaf` starts a live leaf of `1 << bits` slots (I1, `find_leaf`) and the
    // masked index is below that.
    Some(unsafe { &*leaf.add((rel & ((1u64 << bits) - 1)) as usize) })
}

/// [`View::run`] in a tree of `levels` levels: `n` slots from `rel`, if they lie in one
/// allocated leaf.
#[inline(always)]
fn find_run(top: &[Child], rel: u64, n: usize, levels: u32, bits: u32) -> Option<&[AtomicU64]> {
    let start = (rel & ((1u64 << bits) - 1)) as usize;
    if n > (1usize << bits) - start {
        return None;
    }
    let leaf = find_leaf(top, rel, levels, bits)?;
    // SAFETY: `leaf` starts a live leaf of `1 << bits` slots (I1, `find_leaf`), and
    // `start + n <= 1 << bits` was checked above (`start` is masked below `1 << bits`).
    Some(unsafe { core::slice::from_raw_parts(leaf.add(start), n) })
}

/// Counters of what the tree holds.
#[derive(Debug)]
pub(crate) struct Usage {
    bytes: AtomicU64,
    leaves: AtomicU64,
    budget: u64,
}

/// The top level: the leaf itself for a one-level table, else a directory.
enum Top {
    Leaf(Box<[AtomicU64]>),
    Dir(Box<[Child]>),
}

/// A read-only view of a tree's shape (see [`LevelTree::view`]), for a loop of lookups.
/// It carries the window's entry count and checks every index against it itself: no
/// lookup through a view relies on its caller for a bound.
#[derive(Clone, Copy)]
pub(crate) enum View<'t> {
    /// A one-level table: the slots themselves (exactly the window's entries).
    Flat(&'t [AtomicU64]),
    /// A directory tree.
    Tree {
        top: &'t [Child],
        levels: u32,
        bits: u32,
        entries: u64,
    },
}

impl<'t> View<'t> {
    /// The raw (big-endian) entry at `rel` with a relaxed load, 0 where a level is
    /// missing; `None` if `rel` is outside the window. The flat case is one bounds check
    /// and one load, for translation loops.
    #[inline(always)]
    pub(crate) fn load_raw(&self, rel: u64) -> Option<u64> {
        match *self {
            View::Flat(leaf) => leaf
                .get(usize::try_from(rel).ok()?)
                .map(|s| s.load(Ordering::Relaxed)),
            View::Tree { entries, .. } if rel >= entries => None,
            tree => Some(tree.slot(rel).map_or(0, |s| s.load(Ordering::Relaxed))),
        }
    }

    /// The slot of `rel`, `None` where a level is missing or `rel` is outside the window.
    #[inline(always)]
    pub(crate) fn slot(&self, rel: u64) -> Option<&'t AtomicU64> {
        match *self {
            View::Flat(leaf) => leaf.get(usize::try_from(rel).ok()?),
            View::Tree {
                top,
                levels,
                bits,
                entries,
            } => {
                if rel >= entries {
                    return None;
                }
                // The common depths as constants, so that each walk unrolls.
                match levels {
                    2 => find_slot(top, rel, 2, bits),
                    3 => find_slot(top, rel, 3, bits),
                    4 => find_slot(top, rel, 4, bits),
                    _ => find_slot(top, rel, levels, bits),
                }
            }
        }
    }

    /// The `n` slots from `rel` if they lie inside one allocated leaf and inside the
    /// window; `None` otherwise (a missing level, a run across a leaf's end, or outside the
    /// window). Never allocates: the batched writes' fast path, one walk for the run.
    #[inline(always)]
    pub(crate) fn run(&self, rel: u64, n: usize) -> Option<&'t [AtomicU64]> {
        match *self {
            View::Flat(leaf) => leaf.get(usize::try_from(rel).ok()?..)?.get(..n),
            View::Tree {
                top,
                levels,
                bits,
                entries,
            } => {
                if rel >= entries || n as u64 > entries - rel {
                    return None;
                }
                match levels {
                    2 => find_run(top, rel, n, 2, bits),
                    3 => find_run(top, rel, n, 3, bits),
                    _ => find_run(top, rel, n, levels, bits),
                }
            }
        }
    }
}

/// A multi-level TCE tree indexed by window-relative index.
pub(crate) struct LevelTree {
    top: Top,
    levels: u32,
    level_bits: u32,
    entries: u64,
    usage: Usage,
}

fn alloc_slots<T>(n: u64, make: impl Fn() -> T) -> Result<Box<[T]>, TceError> {
    let bytes = n.saturating_mul(core::mem::size_of::<T>() as u64);
    let len = usize::try_from(n).map_err(|_| TceError::AllocFailed { bytes })?;
    let mut v = Vec::new();
    v.try_reserve_exact(len)
        .map_err(|_| TceError::AllocFailed { bytes })?;
    v.resize_with(len, make);
    Ok(v.into_boxed_slice())
}

impl LevelTree {
    /// Allocates the top level. `budget` caps the bytes the tree may ever hold.
    pub(crate) fn new(g: &TableGeometry, budget: u64) -> Result<Self, TceError> {
        let top_bytes = g.top_bytes();
        if top_bytes > budget {
            return Err(TceError::AllocFailed { bytes: top_bytes });
        }
        let (top, leaves) = if g.levels() == 1 {
            (
                Top::Leaf(alloc_slots(g.top_entries(), || AtomicU64::new(0))?),
                1,
            )
        } else {
            (
                Top::Dir(alloc_slots(
                    g.top_entries(),
                    || Child::new(ptr::null_mut()),
                )?),
                0,
            )
        };
        Ok(Self {
            top,
            levels: g.levels(),
            level_bits: g.level_bits(),
            entries: g.entries(),
            usage: Usage {
                bytes: AtomicU64::new(top_bytes),
                leaves: AtomicU64::new(leaves),
                budget,
            },
        })
    }

    /// Bytes held by every allocated level.
    pub(crate) fn bytes(&self) -> u64 {
        self.usage.bytes.load(Ordering::Relaxed)
    }

    /// Leaves allocated.
    pub(crate) fn leaves(&self) -> u64 {
        self.usage.leaves.load(Ordering::Relaxed)
    }

    #[inline]
    fn level_len(&self) -> usize {
        1usize << self.level_bits
    }

    #[inline]
    fn mask(&self) -> u64 {
        (1u64 << self.level_bits) - 1
    }

    /// A read-only view for a loop of lookups, its shape copied out so that it stays in
    /// registers (see `TceTable::translator`).
    #[inline(always)]
    pub(crate) fn view(&self) -> View<'_> {
        match &self.top {
            Top::Leaf(leaf) => View::Flat(leaf),
            Top::Dir(dir) => View::Tree {
                top: dir,
                levels: self.levels,
                bits: self.level_bits,
                entries: self.entries,
            },
        }
    }

    /// The leaf slot of `rel`, without allocating; `None` where a level is missing or
    /// `rel` is outside the window.
    #[inline(always)]
    pub(crate) fn slot(&self, rel: u64) -> Option<&AtomicU64> {
        self.view().slot(rel)
    }

    /// The leaf slot of `rel`, allocating missing levels on the way.
    #[inline]
    pub(crate) fn slot_alloc(&self, rel: u64) -> Result<&AtomicU64, TceError> {
        match &self.top {
            Top::Leaf(leaf) => usize::try_from(rel)
                .ok()
                .and_then(|r| leaf.get(r))
                .ok_or(TceError::AllocFailed { bytes: 0 }),
            Top::Dir(dir) => {
                let leaf = self
                    .walk(dir, rel, true)?
                    .ok_or(TceError::AllocFailed { bytes: 0 })?;
                // SAFETY: as in `slot`.
                Ok(unsafe { &*leaf.add((rel & self.mask()) as usize) })
            }
        }
    }

    /// Leaf slots of `[rel, rel + n)` inside one leaf (the caller keeps the range inside a
    /// leaf), allocating if asked. `None` means the leaf does not exist and `alloc` is false.
    pub(crate) fn leaf_run(
        &self,
        rel: u64,
        n: usize,
        alloc: bool,
    ) -> Result<Option<&[AtomicU64]>, TceError> {
        match &self.top {
            Top::Leaf(leaf) => Ok(usize::try_from(rel)
                .ok()
                .and_then(|r| leaf.get(r..)?.get(..n))),
            Top::Dir(dir) => {
                let Some(leaf) = self.walk(dir, rel, alloc)? else {
                    return Ok(None);
                };
                let start = (rel & self.mask()) as usize;
                if start + n > self.level_len() {
                    return Ok(None);
                }
                // SAFETY: `leaf` starts a live leaf of `level_len()` slots (I1) and
                // `start + n <= level_len()` was checked above.
                Ok(Some(unsafe {
                    core::slice::from_raw_parts(leaf.add(start), n)
                }))
            }
        }
    }

    /// Walks the directories to the leaf holding `rel`; returns a pointer to the leaf's
    /// first slot.
    #[inline]
    fn walk(
        &self,
        top: &[Child],
        rel: u64,
        alloc: bool,
    ) -> Result<Option<*const AtomicU64>, TceError> {
        let mut shift = (self.levels - 1) * self.level_bits;
        let Some(mut slot) = top.get((rel >> shift) as usize) else {
            return Ok(None);
        };
        loop {
            shift -= self.level_bits;
            let is_leaf_next = shift == 0;
            let mut child = slot.load(Ordering::Acquire);
            if child.is_null() {
                if !alloc {
                    return Ok(None);
                }
                child = self.publish(slot, is_leaf_next)?;
            }
            if is_leaf_next {
                return Ok(Some(child as *const AtomicU64));
            }
            let idx = ((rel >> shift) & self.mask()) as usize;
            // SAFETY: `child` is a live directory level of `level_len()` slots (I1, and not
            // a leaf since `shift > 0`); `idx` is masked below `level_len()`.
            slot = unsafe { &*(child as *const Child).add(idx) };
        }
    }

    /// Allocates a zeroed level and installs it in `slot` unless another writer won the
    /// race, in which case ours is freed and theirs returned.
    #[cold]
    fn publish(&self, slot: &Child, leaf: bool) -> Result<*mut (), TceError> {
        let n = self.level_len() as u64;
        let bytes = n * 8;
        let prev = self.usage.bytes.fetch_add(bytes, Ordering::Relaxed);
        if prev.saturating_add(bytes) > self.usage.budget {
            self.usage.bytes.fetch_sub(bytes, Ordering::Relaxed);
            return Err(TceError::AllocFailed { bytes });
        }
        let fresh: *mut () = match if leaf {
            alloc_slots(n, || AtomicU64::new(0)).map(|b| Box::into_raw(b) as *mut ())
        } else {
            alloc_slots(n, || Child::new(ptr::null_mut())).map(|b| Box::into_raw(b) as *mut ())
        } {
            Ok(p) => p,
            Err(e) => {
                self.usage.bytes.fetch_sub(bytes, Ordering::Relaxed);
                return Err(e);
            }
        };
        match slot.compare_exchange(ptr::null_mut(), fresh, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => {
                if leaf {
                    self.usage.leaves.fetch_add(1, Ordering::Relaxed);
                }
                Ok(fresh)
            }
            Err(theirs) => {
                // SAFETY: `fresh` came from `Box::into_raw` of a slice of `n` elements of the
                // type chosen by `leaf` just above, and was never published.
                unsafe { free_level(fresh, n as usize, leaf) };
                self.usage.bytes.fetch_sub(bytes, Ordering::Relaxed);
                Ok(theirs)
            }
        }
    }

    /// Calls `f(first_rel, leaf)` for each allocated leaf overlapping `[first, end)`, with the
    /// leaf cut to that range, in index order. Missing subtrees are skipped without being
    /// visited, so the cost follows the allocated leaves, not the window.
    pub(crate) fn for_each_leaf(&self, first: u64, end: u64, f: &mut dyn FnMut(u64, &[AtomicU64])) {
        match &self.top {
            Top::Leaf(leaf) => {
                let end = end.min(leaf.len() as u64);
                if first < end {
                    f(first, &leaf[first as usize..end as usize]);
                }
            }
            Top::Dir(dir) => {
                let shift = (self.levels - 1) * self.level_bits;
                self.visit_dir(dir, 0, shift, first, end, f);
            }
        }
    }

    /// `dir` covers relative indices `[base, base + len << shift)`; each slot `1 << shift`.
    fn visit_dir(
        &self,
        dir: &[Child],
        base: u64,
        shift: u32,
        first: u64,
        end: u64,
        f: &mut dyn FnMut(u64, &[AtomicU64]),
    ) {
        let span = 1u64 << shift;
        let lo = (first.saturating_sub(base) >> shift) as usize;
        for (i, slot) in dir.iter().enumerate().skip(lo) {
            let start = base + (i as u64) * span;
            if start >= end {
                break;
            }
            let child = slot.load(Ordering::Acquire);
            if child.is_null() {
                continue;
            }
            let child_shift = shift - self.level_bits;
            if child_shift == 0 {
                // SAFETY: a non-null slot just above the leaves points to a live leaf of
                // `level_len()` slots (I1).
                let leaf = unsafe {
                    core::slice::from_raw_parts(child as *const AtomicU64, self.level_len())
                };
                let from = first.max(start);
                let to = end.min(start + span);
                f(from, &leaf[(from - start) as usize..(to - start) as usize]);
            } else {
                // SAFETY: a non-null slot higher up points to a live directory of
                // `level_len()` slots (I1).
                let sub =
                    unsafe { core::slice::from_raw_parts(child as *const Child, self.level_len()) };
                self.visit_dir(sub, start, child_shift, first, end, f);
            }
        }
    }
}

/// Frees one level and, for a directory, everything below it.
///
/// # Safety
/// `p` must come from `Box::into_raw` of a boxed slice of `len` elements, of leaf slots if
/// `leaf`, else of directory slots whose non-null entries satisfy the same contract one
/// level down; nothing may use it afterwards.
unsafe fn free_level(p: *mut (), len: usize, leaf: bool) {
    if leaf {
        // SAFETY: per the contract, `p` is a leaked `Box<[AtomicU64]>` of `len` elements.
        drop(unsafe { Box::from_raw(ptr::slice_from_raw_parts_mut(p as *mut AtomicU64, len)) });
    } else {
        // SAFETY: per the contract, `p` is a leaked `Box<[Child]>` of `len` elements.
        drop(unsafe { Box::from_raw(ptr::slice_from_raw_parts_mut(p as *mut Child, len)) });
    }
}

impl Drop for LevelTree {
    fn drop(&mut self) {
        fn free_dir(dir: &[Child], below: u32, len: usize) {
            for slot in dir {
                let child = slot.load(Ordering::Acquire);
                if child.is_null() {
                    continue;
                }
                if below > 1 {
                    // SAFETY: a non-null slot with more than one level below points to a live
                    // directory of `len` slots (I1), freed right after.
                    let sub = unsafe { core::slice::from_raw_parts(child as *const Child, len) };
                    free_dir(sub, below - 1, len);
                }
                // SAFETY: I1 gives the allocation's origin and length; `drop` has exclusive
                // access (I2), and the slot is not read again.
                unsafe { free_level(child, len, below == 1) };
            }
        }
        if let Top::Dir(dir) = &self.top {
            free_dir(dir, self.levels - 1, self.level_len());
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::addr::Iova;
    use crate::page::PageShift;

    fn tree(entries: u64, levels: u32, bits: u32) -> LevelTree {
        let g = TableGeometry::new(Iova(0), PageShift::K4, entries, levels, bits).unwrap();
        LevelTree::new(&g, u64::MAX).unwrap()
    }

    /// `run` is the slots `slot` finds, one after the other.
    fn is_slots(t: &LevelTree, rel: u64, run: &[AtomicU64]) -> bool {
        run.iter()
            .zip(rel..)
            .all(|(s, r)| t.view().slot(r).is_some_and(|x| ptr::eq(s, x)))
    }

    #[test]
    fn a_run_is_found_only_inside_one_allocated_leaf_and_the_window() {
        // Leaves of 16 entries; the last (48..64) only partly inside the window of 53.
        let t = tree(53, 2, 4);
        assert!(t.view().run(16, 1).is_none(), "no leaf allocated yet");
        t.slot_alloc(20).unwrap();
        t.slot_alloc(50).unwrap();
        let v = t.view();
        let whole = v.run(16, 16).expect("the whole leaf");
        assert_eq!(whole.len(), 16);
        assert!(is_slots(&t, 16, whole));
        let tail = v.run(17, 15).expect("up to the leaf's end");
        assert!(is_slots(&t, 17, tail));
        assert!(v.run(17, 16).is_none(), "across the leaf's end");
        assert!(v.run(0, 1).is_none(), "leaf 0 is missing");
        assert!(v.run(32, 1).is_none(), "leaf 2 is missing");
        let last = v.run(48, 5).expect("to the window's end");
        assert!(is_slots(&t, 48, last));
        assert!(v.run(48, 6).is_none(), "past the window, inside the leaf");
        assert!(v.run(53, 0).is_none(), "starts past the window");
        assert_eq!(v.run(20, 0).map(<[_]>::len), Some(0));
    }

    #[test]
    fn a_run_in_a_three_level_tree_and_in_a_flat_table() {
        let t = tree(64, 3, 2);
        t.slot_alloc(37).unwrap();
        let v = t.view();
        let run = v.run(36, 4).expect("leaf 36..40");
        assert!(is_slots(&t, 36, run));
        assert!(v.run(38, 3).is_none(), "across the leaf's end");
        assert!(v.run(40, 1).is_none(), "the next leaf is missing");

        let flat = tree(10, 1, 0);
        let v = flat.view();
        let run = v.run(8, 2).expect("to the end");
        assert!(is_slots(&flat, 8, run));
        assert!(v.run(8, 3).is_none());
        assert!(v.run(11, 0).is_none());
    }
}
