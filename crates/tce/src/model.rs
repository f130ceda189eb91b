//! A plain map-based reference model of a TCE table: obviously right, slow. Property tests
//! and the fuzz target compare the real table against it.

use crate::addr::{Iova, TceIndex};
use crate::entry::{Access, Tce};
use crate::error::Fault;
use crate::geometry::TableGeometry;
use std::collections::BTreeMap;

/// The model: a window and a map from absolute index to the stored (CPU-order) entry.
#[derive(Clone, Debug)]
pub struct ModelTable {
    geometry: TableGeometry,
    write_implies_read: bool,
    entries: BTreeMap<u64, u64>,
}

/// The model refuses an index or range outside the window; it has no other errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutOfWindow;

impl ModelTable {
    /// An empty model of the window.
    pub fn new(geometry: TableGeometry, write_implies_read: bool) -> Self {
        Self {
            geometry,
            write_implies_read,
            entries: BTreeMap::new(),
        }
    }

    fn check(&self, first: TceIndex, count: u64) -> Result<(), OutOfWindow> {
        let lo = self.geometry.first_index().0;
        let hi = self.geometry.end_index().0;
        if first.0 >= lo && first.0 <= hi && count <= hi - first.0 {
            Ok(())
        } else {
            Err(OutOfWindow)
        }
    }

    fn norm(&self, t: Tce) -> u64 {
        if self.write_implies_read {
            t.with_write_implies_read().0
        } else {
            t.0
        }
    }

    fn store(&mut self, index: u64, raw: u64) -> u64 {
        let old = if raw == 0 {
            self.entries.remove(&index)
        } else {
            self.entries.insert(index, raw)
        };
        old.unwrap_or(0)
    }

    /// Entry at `index`.
    pub fn get(&self, index: TceIndex) -> Result<Tce, OutOfWindow> {
        self.check(index, 1)?;
        Ok(Tce(self.entries.get(&index.0).copied().unwrap_or(0)))
    }

    /// Replace, returning the old entry.
    pub fn exchange(&mut self, index: TceIndex, tce: Tce) -> Result<Tce, OutOfWindow> {
        self.check(index, 1)?;
        let raw = self.norm(tce);
        Ok(Tce(self.store(index.0, raw)))
    }

    /// Write consecutive entries.
    pub fn put(&mut self, first: TceIndex, tces: &[Tce]) -> Result<(), OutOfWindow> {
        self.check(first, tces.len() as u64)?;
        for (i, t) in tces.iter().enumerate() {
            let raw = self.norm(*t);
            self.store(first.0 + i as u64, raw);
        }
        Ok(())
    }

    /// Write one entry many times.
    pub fn fill(&mut self, first: TceIndex, count: u64, tce: Tce) -> Result<(), OutOfWindow> {
        self.check(first, count)?;
        let raw = self.norm(tce);
        if raw == 0 {
            return self.clear(first, count).map(drop);
        }
        for i in 0..count {
            self.store(first.0 + i, raw);
        }
        Ok(())
    }

    /// Clear a range; returns how many entries were non-zero.
    pub fn clear(&mut self, first: TceIndex, count: u64) -> Result<u64, OutOfWindow> {
        self.check(first, count)?;
        let keys: Vec<u64> = self
            .entries
            .range(first.0..first.0 + count)
            .map(|(k, _)| *k)
            .collect();
        for k in &keys {
            self.entries.remove(k);
        }
        Ok(keys.len() as u64)
    }

    /// Device access.
    pub fn translate(&self, iova: Iova, access: Access) -> Result<u64, Fault> {
        let g = &self.geometry;
        let shift = g.page_shift().shift();
        let start = u128::from(g.bus_offset().0);
        let end = start + (u128::from(g.entries()) << shift);
        if u128::from(iova.0) < start || u128::from(iova.0) >= end {
            return Err(Fault::OutsideWindow { iova });
        }
        let index = TceIndex(iova.0 >> shift);
        let tce = Tce(self.entries.get(&index.0).copied().unwrap_or(0));
        if tce.perm().bits() == 0 {
            return Err(Fault::NoEntry { iova, index });
        }
        if !tce.perm().permits(access) {
            return Err(Fault::Permission {
                iova,
                index,
                tce,
                access,
            });
        }
        Ok(tce.page_addr(shift) | (iova.0 & g.page_shift().offset_mask()))
    }

    /// Every non-zero entry, in index order.
    pub fn entries(&self) -> impl Iterator<Item = (TceIndex, Tce)> + '_ {
        self.entries.iter().map(|(k, v)| (TceIndex(*k), Tce(*v)))
    }
}
