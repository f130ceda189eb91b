//! Operation sequences run against the real table and the model side by side: the engine
//! of the property tests, the fuzz target and the corpus replay test. A divergence is
//! returned as a value (the library never panics); the harnesses turn it into a failure.

use crate::addr::{Hpa, Iova, TceIndex};
use crate::entry::{Access, Tce};
use crate::error::TceError;
use crate::geometry::TableGeometry;
use crate::model::ModelTable;
use crate::page::PageShift;
use crate::table::{TableOptions, TceTable, MAX_BATCH};

/// A table to build, in terms that are always valid or refused cleanly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableSpec {
    /// Bus offset, in pages.
    pub offset_pages: u64,
    /// IOMMU page shift (any value; unsupported ones are refused at build).
    pub page_shift: u32,
    /// Entries in the window.
    pub entries: u64,
    /// Levels (1..=5 valid).
    pub levels: u32,
    /// Index bits per lower level.
    pub level_bits: u32,
    /// PowerNV write-implies-read.
    pub write_implies_read: bool,
    /// Byte budget for the levels.
    pub max_bytes: u64,
}

/// One operation. Indices are relative to the window start and may fall outside it
/// (`rel` below 0 is expressed by `below`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// `get`.
    Get {
        /// Index relative to the window start.
        rel: i64,
    },
    /// `exchange`.
    Exchange {
        /// Index relative to the window start.
        rel: i64,
        /// New entry.
        tce: u64,
    },
    /// `exchange_no_kill` then `kill`.
    ExchangeNoKill {
        /// Index relative to the window start.
        rel: i64,
        /// New entry.
        tce: u64,
    },
    /// `put_batch`.
    Put {
        /// First index relative to the window start.
        rel: i64,
        /// Entries to write.
        tces: Vec<u64>,
    },
    /// `fill`.
    Fill {
        /// First index relative to the window start.
        rel: i64,
        /// Entries to write.
        count: u64,
        /// The entry written to each.
        tce: u64,
    },
    /// `clear`.
    Clear {
        /// First index relative to the window start.
        rel: i64,
        /// Entries to clear.
        count: u64,
    },
    /// `put_linear`: `count` consecutive pages from `addr` with `perm`.
    PutLinear {
        /// First index relative to the window start.
        rel: i64,
        /// Entries.
        count: u64,
        /// First page's address.
        addr: u64,
        /// Permission bits.
        perm: u8,
    },
    /// `clear_exclusive_with` (`runs` false) or `clear_exclusive_runs` (true).
    ClearExclusive {
        /// First index relative to the window start.
        rel: i64,
        /// Entries.
        count: u64,
        /// Report runs instead of entries.
        runs: bool,
    },
    /// `zero_exclusive`.
    ZeroExclusive {
        /// First index relative to the window start.
        rel: i64,
        /// Entries.
        count: u64,
    },
    /// `translate` at a byte offset from the window start.
    Translate {
        /// Byte offset from the window start (may be negative).
        offset: i64,
        /// A device write (else a read).
        write: bool,
    },
}

/// Where the table and the model disagreed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Divergence {
    /// Step number (`usize::MAX` for the final state comparison).
    pub step: usize,
    /// What happened.
    pub what: String,
}

impl core::fmt::Display for Divergence {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "step {}: {}", self.step, self.what)
    }
}

fn index_of(g: &TableGeometry, rel: i64) -> TceIndex {
    TceIndex(g.first_index().0.wrapping_add(rel as u64))
}

/// Builds the table and model for `spec` and runs `ops`; `Ok` if they agreed throughout
/// (or the spec was refused identically by both constructors).
pub fn run(spec: &TableSpec, ops: &[Op]) -> Result<(), Divergence> {
    let built = PageShift::new(spec.page_shift).and_then(|ps| {
        let offset = spec
            .offset_pages
            .checked_shl(ps.shift())
            .unwrap_or(u64::MAX);
        TableGeometry::new(Iova(offset), ps, spec.entries, spec.levels, spec.level_bits)
    });
    let Ok(geometry) = built else {
        return Ok(());
    };
    let options = TableOptions {
        write_implies_read: spec.write_implies_read,
        max_bytes: spec.max_bytes,
    };
    let table: TceTable<Hpa> = match TceTable::new(geometry, options) {
        Ok(t) => t,
        Err(TceError::AllocFailed { .. }) => return Ok(()),
        Err(e) => {
            return Err(Divergence {
                step: 0,
                what: format!("valid geometry refused: {e}"),
            })
        }
    };
    let mut model = ModelTable::new(geometry, spec.write_implies_read);
    let g = geometry;
    for (step, op) in ops.iter().enumerate() {
        let bytes_before = table.allocated_bytes();
        let diverged = |what: String| Divergence { step, what };
        // `may_alloc` says whether the operation is allowed to allocate levels.
        let may_alloc = match op {
            Op::Get { rel } => {
                let a = table.get(index_of(&g, *rel)).ok();
                let b = model.get(index_of(&g, *rel)).ok();
                if a != b {
                    return Err(diverged(format!("{op:?}: table {a:?} model {b:?}")));
                }
                false
            }
            Op::Exchange { rel, tce } | Op::ExchangeNoKill { rel, tce } => {
                let i = index_of(&g, *rel);
                let a = if matches!(op, Op::Exchange { .. }) {
                    table.exchange(i, Tce(*tce))
                } else {
                    table
                        .exchange_no_kill(i, Tce(*tce))
                        .inspect(|_| table.kill(i, 1))
                };
                if matches!(a, Err(TceError::AllocFailed { .. })) {
                    continue;
                }
                let b = model.exchange(i, Tce(*tce));
                if a.clone().ok() != b.ok() {
                    return Err(diverged(format!("{op:?}: table {a:?} model {b:?}")));
                }
                *tce != 0
            }
            Op::Put { rel, tces } => {
                let tces: Vec<Tce> = tces.iter().map(|t| Tce(*t)).collect();
                let i = index_of(&g, *rel);
                let a = table.put_batch(i, &tces);
                match a {
                    Err(TceError::AllocFailed { .. }) => continue,
                    Err(TceError::BatchTooLarge { .. }) if tces.len() > MAX_BATCH => {}
                    _ => {
                        let b = model.put(i, &tces);
                        if a.is_ok() != b.is_ok() {
                            return Err(diverged(format!("{op:?}: table {a:?} model {b:?}")));
                        }
                    }
                }
                true
            }
            Op::Fill { rel, count, tce } => {
                let i = index_of(&g, *rel);
                let a = table.fill(i, *count, Tce(*tce));
                if matches!(a, Err(TceError::AllocFailed { .. })) {
                    continue;
                }
                let b = model.fill(i, *count, Tce(*tce));
                if a.is_ok() != b.is_ok() {
                    return Err(diverged(format!("{op:?}: table {a:?} model {b:?}")));
                }
                *tce != 0
            }
            Op::Clear { rel, count } => {
                let i = index_of(&g, *rel);
                let before = model_range(&model, i, *count);
                let mut seen = Vec::new();
                let a = table.clear_with(i, *count, |k, t| seen.push((k, t)));
                let b = model.clear(i, *count);
                if a.as_ref().map(|s| s.cleared).ok() != b.ok() {
                    return Err(diverged(format!("{op:?}: table {a:?} model {b:?}")));
                }
                // The old entries handed back are the ones readers saw.
                if a.is_ok() && seen != before {
                    return Err(diverged(format!(
                        "{op:?}: old entries {seen:?}, model {before:?}"
                    )));
                }
                false
            }
            Op::PutLinear {
                rel,
                count,
                addr,
                perm,
            } => {
                let i = index_of(&g, *rel);
                let p = crate::entry::TcePerm::from_bits(u64::from(*perm));
                let a = table.put_linear(i, *count, *addr, p);
                if matches!(a, Err(TceError::AllocFailed { .. })) {
                    continue;
                }
                let shift = g.page_shift().shift();
                let base = addr & !g.page_shift().offset_mask();
                let list: Vec<Tce> = (0..*count)
                    .map(|k| Tce(base.wrapping_add(k << shift) | u64::from(*perm & 3)))
                    .collect();
                let b = model.put(i, &list);
                if a.is_ok() != b.is_ok() {
                    return Err(diverged(format!("{op:?}: table {a:?} model {b:?}")));
                }
                true
            }
            Op::ClearExclusive { rel, count, runs } => {
                let i = index_of(&g, *rel);
                let before = model_range(&model, i, *count);
                let page = g.page_shift().size();
                let mut seen = Vec::new();
                let a = if *runs {
                    let mut sum = 0;
                    // Each run stands for its entries, `head`, `head + page`, ...
                    let r = table.clear_exclusive_runs(i, *count, |head, len| {
                        sum += len;
                        seen.extend((0..len).map(|k| head.0.wrapping_add(k * page)));
                    });
                    // The runs must add up to what was cleared.
                    r.ok().map(|n| if n == sum { n } else { u64::MAX })
                } else {
                    table
                        .clear_exclusive_with(i, *count, |_, t| seen.push(t.0))
                        .map(|s| s.cleared)
                        .ok()
                };
                let b = model.clear(i, *count).ok();
                if a != b {
                    return Err(diverged(format!("{op:?}: table {a:?} model {b:?}")));
                }
                let want: Vec<u64> = before.iter().map(|(_, t)| t.0).collect();
                if a.is_some() && seen != want {
                    return Err(diverged(format!(
                        "{op:?}: old entries {seen:x?}, model {want:x?}"
                    )));
                }
                false
            }
            Op::ZeroExclusive { rel, count } => {
                let i = index_of(&g, *rel);
                let a = table.zero_exclusive(i, *count);
                let b = model.clear(i, *count);
                if a.is_ok() != b.is_ok() {
                    return Err(diverged(format!("{op:?}: table {a:?} model {b:?}")));
                }
                false
            }
            Op::Translate { offset, write } => {
                let iova = Iova(g.bus_offset().0.wrapping_add(*offset as u64));
                let access = if *write { Access::Write } else { Access::Read };
                let a = table.translate(iova, access).map(|h| h.0);
                let via = table.translator().translate(iova, access).map(|h| h.0);
                let b = model.translate(iova, access);
                if a != b || via != a {
                    return Err(diverged(format!(
                        "{op:?}: table {a:?} translator {via:?} model {b:?}"
                    )));
                }
                false
            }
        };
        let bytes_after = table.allocated_bytes();
        if !may_alloc && bytes_after != bytes_before {
            return Err(diverged(format!(
                "{op:?} allocated levels ({bytes_before} -> {bytes_after} bytes)"
            )));
        }
        if bytes_after > spec.max_bytes {
            return Err(diverged(format!(
                "{bytes_after} bytes held, budget {}",
                spec.max_bytes
            )));
        }
    }
    let mut actual = Vec::new();
    let _ = table.for_each_entry(g.first_index(), g.entries(), |i, t| actual.push((i, t)));
    let expected: Vec<_> = model.entries().collect();
    if actual != expected {
        return Err(Divergence {
            step: usize::MAX,
            what: format!(
                "final state: table has {} entries, model {}; first difference {:?}",
                actual.len(),
                expected.len(),
                actual.iter().zip(&expected).find(|(a, b)| a != b)
            ),
        });
    }
    Ok(())
}

/// The model's non-zero entries in `[first, first + count)` (none if out of the window).
fn model_range(model: &ModelTable, first: TceIndex, count: u64) -> Vec<(TceIndex, Tce)> {
    let end = first.0.saturating_add(count);
    model
        .entries()
        .filter(|(k, _)| k.0 >= first.0 && k.0 < end)
        .collect()
}

/// A little-endian byte reader that yields zeros once the input is exhausted.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from(self.u8()) | (u16::from(self.u8()) << 8)
    }
    fn u64(&mut self) -> u64 {
        (0..8).fold(0u64, |acc, i| acc | (u64::from(self.u8()) << (8 * i)))
    }
}

/// Decodes fuzzer bytes into a small table and up to 256 operations. Every byte string
/// decodes to something; sizes are kept small so each input runs in microseconds.
pub fn decode(data: &[u8]) -> (TableSpec, Vec<Op>) {
    let mut b = Bytes(data);
    let levels = u32::from(b.u8() % 6); // 0 and 5 included: refusal and deepest walk
    let level_bits = u32::from(b.u8() % 5);
    let entries = u64::from(b.u16() % 600);
    let page_shift = [12, 16, 21, 24, 28, 30, 34, 13][usize::from(b.u8() % 8)];
    let offset_pages = match b.u8() % 4 {
        0 => 0,
        1 => 1,
        2 => 1 << 20,
        _ => b.u64() >> 20,
    };
    let flags = b.u8();
    let max_bytes = if flags & 2 != 0 {
        u64::from(b.u16()) * 8
    } else {
        u64::MAX
    };
    let spec = TableSpec {
        offset_pages,
        page_shift,
        entries,
        levels,
        level_bits,
        write_implies_read: flags & 1 != 0,
        max_bytes,
    };
    let mut ops = Vec::new();
    while !b.0.is_empty() && ops.len() < 256 {
        let rel = i64::from(b.u16() as i16 % 700);
        let tce = match b.u8() % 4 {
            0 => 0,
            1 => u64::from(b.u8() & 3) | (u64::from(b.u16()) << 12),
            2 => u64::from(b.u8() & 3),
            _ => b.u64(),
        };
        let sel = b.u8();
        let op = match sel % 7 {
            0 => Op::Get { rel },
            1 => Op::Exchange { rel, tce },
            2 => Op::ExchangeNoKill { rel, tce },
            3 => {
                let n = usize::from(b.u16() % 520);
                let step = u64::from(b.u8());
                Op::Put {
                    rel,
                    tces: (0..n as u64)
                        .map(|k| {
                            if tce == 0 {
                                0
                            } else {
                                tce.wrapping_add(k.wrapping_mul(step) << 12)
                            }
                        })
                        .collect(),
                }
            }
            4 => Op::Fill {
                rel,
                count: u64::from(b.u16() % 700),
                tce,
            },
            5 => Op::Clear {
                rel,
                count: u64::from(b.u16() % 700),
            },
            // Selectors of 0xE0 and above (rare in old inputs) reach the later operations.
            _ if sel >= 0xE0 => match sel % 3 {
                0 => Op::PutLinear {
                    rel,
                    count: u64::from(b.u16() % 1100),
                    addr: tce,
                    perm: b.u8() & 3,
                },
                1 => Op::ClearExclusive {
                    rel,
                    count: u64::from(b.u16() % 1100),
                    runs: b.u8() & 1 != 0,
                },
                _ => Op::ZeroExclusive {
                    rel,
                    count: u64::from(b.u16() % 1100),
                },
            },
            _ => Op::Translate {
                offset: (b.u64() >> 20) as i64 - (1 << 40),
                write: b.u8() & 1 != 0,
            },
        };
        ops.push(op);
    }
    (spec, ops)
}

/// Decodes and runs fuzzer bytes.
pub fn run_bytes(data: &[u8]) -> Result<(), Divergence> {
    let (spec, ops) = decode(data);
    run(&spec, &ops)
}
