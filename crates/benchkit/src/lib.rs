//! Paired benchmarks: each of our hot paths is measured beside a raw-memory baseline in the
//! same run, and the ratio `baseline time / our time` is printed (1.0 = as fast as the raw
//! baseline; the targets are fractions of it). Criterion does the sampling and statistics
//! of each side. The recorded figures come from a second, interleaved measurement: rounds
//! of baseline and ours run back to back (in alternating order), and the medians of the
//! per-round times and ratios are reported, so that a machine whose speed drifts during
//! the seconds criterion spends on one side does not skew the ratio.
#![forbid(unsafe_code)]

pub mod legal;

use criterion::{BenchmarkId, Criterion};
use std::cell::Cell;
use std::fmt::Write as _;
use std::rc::Rc;
use std::time::Duration;

/// One compared pair.
#[derive(Clone, Debug)]
pub struct Row {
    /// What is measured.
    pub name: String,
    /// Our mean time per operation, in nanoseconds.
    pub ours_ns: f64,
    /// The baseline's mean time per operation, in nanoseconds.
    pub baseline_ns: f64,
    /// The baseline's description.
    pub baseline: String,
    /// The median over the interleaved rounds of `baseline / ours`: our speed as a
    /// fraction of the baseline's.
    pub ratio: f64,
    /// The ratio we aim for; 0 marks a row kept for information (an illegal or
    /// unrelated baseline, no target).
    pub target: f64,
}

impl Row {
    /// "`>= target` met" or "missed", or "information" for a row with no target.
    pub fn verdict(&self) -> String {
        if self.target <= 0.0 {
            "information".to_string()
        } else if self.ratio >= self.target {
            format!(">= {:.2} met", self.target)
        } else {
            format!(">= {:.2} missed", self.target)
        }
    }
}

/// Rounds of the interleaved measurement.
const ROUNDS: usize = 15;
/// Target duration of one side of one round.
const ROUND_NANOS: f64 = 20e6;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs [`ROUNDS`] rounds of both sides back to back, each side about [`ROUND_NANOS`] long
/// (sized from criterion's means), alternating which side goes first. Returns the medians
/// of our time per operation, the baseline's, and the per-round ratio.
fn interleaved(
    base_mean: f64,
    ours_mean: f64,
    baseline: &mut impl FnMut(u64) -> Duration,
    ours: &mut impl FnMut(u64) -> Duration,
) -> (f64, f64, f64) {
    let n_base = ((ROUND_NANOS / base_mean.max(0.01)) as u64).max(1);
    let n_ours = ((ROUND_NANOS / ours_mean.max(0.01)) as u64).max(1);
    let (mut b, mut o, mut r) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let per_op = |d: Duration, n: u64| d.as_nanos() as f64 / n as f64;
        let (bt, ot) = if round % 2 == 0 {
            let bt = per_op(baseline(n_base), n_base);
            (bt, per_op(ours(n_ours), n_ours))
        } else {
            let ot = per_op(ours(n_ours), n_ours);
            (per_op(baseline(n_base), n_base), ot)
        };
        b.push(bt);
        o.push(ot);
        r.push(bt / ot.max(f64::MIN_POSITIVE));
    }
    (median(&mut o), median(&mut b), median(&mut r))
}

/// Collects pairs and prints them as a table.
#[derive(Default)]
pub struct Comparison {
    rows: Vec<Row>,
}

#[derive(Default)]
struct Acc {
    iters: Cell<u64>,
    nanos: Cell<u128>,
}

impl Acc {
    fn add(&self, iters: u64, d: Duration) {
        self.iters.set(self.iters.get() + iters);
        self.nanos.set(self.nanos.get() + d.as_nanos());
    }
    fn mean(&self) -> f64 {
        self.nanos.get() as f64 / self.iters.get().max(1) as f64
    }
}

impl Comparison {
    /// A new, empty comparison.
    pub fn new() -> Self {
        Self::default()
    }

    /// Measures `baseline` and `ours` in one criterion group named `name`. Each closure runs
    /// `iters` operations and returns the time they took (criterion's `iter_custom`).
    pub fn pair(
        &mut self,
        c: &mut Criterion,
        name: &str,
        target: f64,
        baseline_label: &str,
        mut baseline: impl FnMut(u64) -> Duration,
        mut ours: impl FnMut(u64) -> Duration,
    ) {
        let (base_acc, ours_acc) = (Rc::new(Acc::default()), Rc::new(Acc::default()));
        let mut group = c.benchmark_group(name);
        {
            let acc = base_acc.clone();
            group.bench_function(BenchmarkId::new("baseline", baseline_label), |b| {
                b.iter_custom(|iters| {
                    let d = baseline(iters);
                    acc.add(iters, d);
                    d
                })
            });
        }
        {
            let acc = ours_acc.clone();
            group.bench_function("ours", |b| {
                b.iter_custom(|iters| {
                    let d = ours(iters);
                    acc.add(iters, d);
                    d
                })
            });
        }
        group.finish();
        if ours_acc.iters.get() == 0 || base_acc.iters.get() == 0 {
            // Filtered out on the command line: nothing measured, nothing to report.
            return;
        }
        let (ours_ns, baseline_ns, ratio) =
            interleaved(base_acc.mean(), ours_acc.mean(), &mut baseline, &mut ours);
        let row = Row {
            name: name.to_string(),
            ours_ns,
            baseline_ns,
            ratio,
            baseline: baseline_label.to_string(),
            target,
        };
        println!(
            "{name}: ours {:.2} ns, {} {:.2} ns, ratio {:.2} ({})",
            row.ours_ns,
            row.baseline,
            row.baseline_ns,
            row.ratio,
            row.verdict()
        );
        self.rows.push(row);
    }

    /// The rows measured so far.
    pub fn rows(&self) -> &[Row] {
        &self.rows
    }

    /// The comparison as a Markdown table (what README records).
    pub fn markdown(&self) -> String {
        let mut s = String::from(
            "| benchmark | ours (ns/op) | baseline | baseline (ns/op) | ratio | target |\n|---|---:|---|---:|---:|---:|\n",
        );
        for r in &self.rows {
            let _ = writeln!(
                s,
                "| {} | {:.2} | {} | {:.2} | {:.2} | {} |",
                r.name,
                r.ours_ns,
                r.baseline,
                r.baseline_ns,
                r.ratio,
                r.verdict()
            );
        }
        s
    }

    /// Prints the table.
    pub fn report(&self) {
        println!("\n{}", self.markdown());
    }
}

/// A copy destination for `src`, placed so that the copy baseline runs at the machine's
/// full speed: `memcpy` of a few KiB (`rep movsb` on x86) slows down about tenfold when
/// destination and source sit at nearly the same offset within a 4 KiB page, and where two
/// heap buffers land changes from build to build. Returns a buffer and the index in it
/// where a `src.len()`-long destination starts half a page away from `src` modulo 4 KiB.
pub fn copy_destination(src: &[u64]) -> (Vec<u64>, usize) {
    let dst = vec![0u64; src.len() + 512];
    let src_page_off = src.as_ptr() as usize % 4096;
    let at = (0..512)
        .find(|k| {
            let off = (dst.as_ptr() as usize + 8 * k) % 4096;
            (off + 4096 - src_page_off) % 4096 == 2048
        })
        .unwrap_or(0);
    (dst, at)
}

/// A fast deterministic random sequence (xorshift64*), the same for ours and the baseline.
#[derive(Clone, Copy, Debug)]
pub struct XorShift(pub u64);

impl XorShift {
    /// Next value.
    #[inline(always)]
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[cfg(test)]
mod tests {
    use super::Row;

    fn row(ratio: f64, target: f64) -> Row {
        Row {
            name: "x".into(),
            ours_ns: 1.0,
            baseline_ns: ratio,
            baseline: "b".into(),
            ratio,
            target,
        }
    }

    #[test]
    fn verdicts() {
        assert_eq!(row(0.95, 0.9).verdict(), ">= 0.90 met");
        assert_eq!(row(0.9, 0.9).verdict(), ">= 0.90 met");
        assert_eq!(row(0.89, 0.9).verdict(), ">= 0.90 missed");
        assert_eq!(row(0.2, 0.0).verdict(), "information");
    }
}
