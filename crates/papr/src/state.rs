//! Save and restore of one PHB's window state, for migration and snapshots.
//!
//! A versioned, big-endian byte format (ours; QEMU's vmstate "spapr_iommu" carries the same
//! facts): header `"SPTC"`, version, the BUID, then per window slot its LIOBN, whether it is
//! enabled, its sticky `def_win` flag and, if enabled, bus offset, page shift, entry count
//! and the non-zero entries as (index in window, value) pairs. A restore parses and checks
//! everything before it changes anything.

use crate::spapr::Spapr;
use spapr_tce::{PageShift, Tce, TceIndex};

const MAGIC: &[u8; 4] = b"SPTC";
/// The format version written.
pub const VERSION: u16 = 1;

/// Why bytes could not be restored. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// Not our format.
    #[error("not a spapr-iommu PHB state (bad magic)")]
    BadMagic,
    /// A version this build cannot read.
    #[error("state version {0} is not supported (this build reads {VERSION})")]
    UnsupportedVersion(u16),
    /// The bytes end early.
    #[error("state truncated at byte {0}")]
    Truncated(usize),
    /// Bytes after the end.
    #[error("{0} unexpected trailing bytes")]
    Trailing(usize),
    /// Saved from another PHB.
    #[error("state is for BUID {saved:#x}, this PHB is {ours:#x}")]
    BuidMismatch {
        /// In the state.
        saved: u64,
        /// Ours.
        ours: u64,
    },
    /// A slot's LIOBN or the slot count differs.
    #[error("window layout differs: {0}")]
    Layout(String),
    /// A window that cannot exist.
    #[error("bad window: {0}")]
    BadWindow(String),
    /// No such PHB.
    #[error("no PHB {0}")]
    NoPhb(usize),
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], StateError> {
        let s = self
            .b
            .get(self.at..self.at + N)
            .ok_or(StateError::Truncated(self.at))?;
        self.at += N;
        let mut out = [0u8; N];
        out.copy_from_slice(s);
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, StateError> {
        Ok(self.take::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, StateError> {
        Ok(u16::from_be_bytes(self.take()?))
    }
    fn u32(&mut self) -> Result<u32, StateError> {
        Ok(u32::from_be_bytes(self.take()?))
    }
    fn u64(&mut self) -> Result<u64, StateError> {
        Ok(u64::from_be_bytes(self.take()?))
    }
}

struct SavedWindow {
    bus_offset: u64,
    page_shift: PageShift,
    nb_table: u64,
    entries: Vec<(u64, u64)>,
}

struct SavedSlot {
    def_win: bool,
    window: Option<SavedWindow>,
}

impl Spapr {
    /// The state of PHB `phb`.
    pub fn save_phb(&self, phb: usize) -> Result<Vec<u8>, StateError> {
        let p = self.phbs().get(phb).ok_or(StateError::NoPhb(phb))?;
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_be_bytes());
        out.extend_from_slice(&0u16.to_be_bytes());
        out.extend_from_slice(&p.buid().to_be_bytes());
        let slots = p.shared.slots.read();
        out.push(slots.len() as u8);
        for s in slots.iter() {
            out.extend_from_slice(&s.liobn().to_be_bytes());
            out.push(u8::from(s.table().is_some()));
            out.push(u8::from(s.def_win()));
            if let Some(t) = s.table() {
                let g = *t.tces.geometry();
                out.extend_from_slice(&t.bus_offset().to_be_bytes());
                out.push(t.page_shift() as u8);
                out.extend_from_slice(&t.nb_table().to_be_bytes());
                let mut entries = Vec::new();
                let _ = t.tces.for_each_entry(g.first_index(), g.entries(), |i, e| {
                    entries.push((i.0 - g.first_index().0, e.0));
                });
                out.extend_from_slice(&(entries.len() as u64).to_be_bytes());
                for (i, v) in entries {
                    out.extend_from_slice(&i.to_be_bytes());
                    out.extend_from_slice(&v.to_be_bytes());
                }
            }
        }
        Ok(out)
    }

    /// Restores PHB `phb` from `bytes`; on error nothing changed.
    pub fn restore_phb(&self, phb: usize, bytes: &[u8]) -> Result<(), StateError> {
        let p = self.phbs().get(phb).ok_or(StateError::NoPhb(phb))?;
        let mut r = Reader { b: bytes, at: 0 };
        if &r.take::<4>()? != MAGIC {
            return Err(StateError::BadMagic);
        }
        let version = r.u16()?;
        if version != VERSION {
            return Err(StateError::UnsupportedVersion(version));
        }
        let flags = r.u16()?;
        if flags != 0 {
            return Err(StateError::Layout(format!("unknown flags {flags:#x}")));
        }
        let buid = r.u64()?;
        if buid != p.buid() {
            return Err(StateError::BuidMismatch {
                saved: buid,
                ours: p.buid(),
            });
        }
        let n = r.u8()? as usize;
        let liobns: Vec<u32> = p.shared.slots.read().iter().map(|s| s.liobn()).collect();
        if n != liobns.len() {
            return Err(StateError::Layout(format!(
                "{n} window slots saved, this PHB has {}",
                liobns.len()
            )));
        }
        let mut saved = Vec::with_capacity(n);
        for ours in &liobns {
            let liobn = r.u32()?;
            if liobn != *ours {
                return Err(StateError::Layout(format!(
                    "LIOBN {liobn:#x} saved where this PHB has {ours:#x}"
                )));
            }
            let enabled = r.u8()?;
            let def_win = r.u8()?;
            if enabled > 1 || def_win > 1 {
                return Err(StateError::BadWindow("flag byte is not 0 or 1".into()));
            }
            let window = if enabled == 1 {
                let bus_offset = r.u64()?;
                let shift = u32::from(r.u8()?);
                let page_shift = PageShift::new(shift)
                    .map_err(|_| StateError::BadWindow(format!("page shift {shift}")))?;
                let nb_table = r.u64()?;
                if nb_table == 0 || nb_table > 1 << 32 {
                    return Err(StateError::BadWindow(format!("{nb_table} entries")));
                }
                let count = r.u64()?;
                if count > nb_table || count > (bytes.len() as u64) / 16 {
                    return Err(StateError::BadWindow(format!("{count} entries listed")));
                }
                let mut entries = Vec::with_capacity(count as usize);
                let mut last: Option<u64> = None;
                for _ in 0..count {
                    let (i, v) = (r.u64()?, r.u64()?);
                    if i >= nb_table || last.is_some_and(|l| i <= l) || v == 0 {
                        return Err(StateError::BadWindow(format!(
                            "entry {i} = {v:#x}: out of order, past {nb_table} or empty"
                        )));
                    }
                    last = Some(i);
                    entries.push((i, v));
                }
                Some(SavedWindow {
                    bus_offset,
                    page_shift,
                    nb_table,
                    entries,
                })
            } else {
                None
            };
            saved.push(SavedSlot {
                def_win: def_win == 1,
                window,
            });
        }
        if r.at != bytes.len() {
            return Err(StateError::Trailing(bytes.len() - r.at));
        }
        // Build every table before touching the PHB.
        let mut tables = Vec::with_capacity(n);
        for (slot, s) in saved.iter().enumerate() {
            tables.push(match &s.window {
                None => None,
                Some(w) => {
                    let t = crate::table::GuestTable::new(
                        liobns[slot],
                        w.bus_offset,
                        w.page_shift,
                        w.nb_table,
                        p.shared.gen().clone(),
                    )
                    .map_err(|e| StateError::BadWindow(e.to_string()))?;
                    let first = t.tces.geometry().first_index().0;
                    for (i, v) in &w.entries {
                        t.tces
                            .set(TceIndex(first + i), Tce(*v))
                            .map_err(|e| StateError::BadWindow(e.to_string()))?;
                    }
                    Some(std::sync::Arc::new(t))
                }
            });
        }
        let mut slots = p.shared.slots.write();
        for (slot, (s, t)) in saved.iter().zip(tables).enumerate() {
            slots.set_table(slot, t);
            slots.set_def_win(slot, s.def_win);
        }
        drop(slots);
        tracing::debug!(target: "spapr_papr", buid = p.buid(), "PHB windows restored");
        Ok(())
    }
}

/// The fuzz target's body (`cargo fuzz run -s none papr_state`): restoring arbitrary bytes
/// into QEMU's default PHB never panics; a restore that succeeds saves back the same bytes;
/// one that fails leaves the PHB as it was. The error says which property broke.
pub fn restore_round_trip(data: &[u8]) -> Result<(), String> {
    let s = Spapr::new(crate::SpaprConfig::default()).map_err(|e| e.to_string())?;
    let before = s.save_phb(0).map_err(|e| e.to_string())?;
    match s.restore_phb(0, data) {
        Ok(()) => {
            let after = s.save_phb(0).map_err(|e| e.to_string())?;
            if after != data {
                return Err("restored state saves back differently".into());
            }
        }
        Err(_) => {
            if s.save_phb(0).map_err(|e| e.to_string())? != before {
                return Err("a refused restore changed the PHB".into());
            }
        }
    }
    Ok(())
}
