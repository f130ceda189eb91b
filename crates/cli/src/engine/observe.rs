//! Reads the state a step's `state` table names ([`crate::state_path`]) and compares it
//! with what the file expects. Observing changes nothing: device reaches are probed
//! through the TCE cache without filling it, and no trace line is written.

use super::*;
use crate::report::StateCheck;
use crate::state_path::{Expectation, Num, Path, Want};
use spapr_tce::{Access, TceIndex};
use std::fmt;

/// A value read off the machine.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seen {
    Num(u64),
    Bool(bool),
    Text(String),
}

impl fmt::Display for Seen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Seen::Num(n) => f.write_str(&number(*n)),
            Seen::Bool(b) => write!(f, "{b}"),
            Seen::Text(t) => f.write_str(t),
        }
    }
}

/// Small numbers in decimal, others in hex with the decimal beside.
fn number(n: u64) -> String {
    if n < 10 {
        n.to_string()
    } else {
        format!("{n:#x} ({n})")
    }
}

impl Engine {
    /// Checks every expectation of `step`; one report per path, in file order.
    pub(super) fn observe_all(&self, step: &Step) -> Vec<StateCheck> {
        step.state.iter().map(|e| self.observe_one(e)).collect()
    }

    fn observe_one(&self, e: &Expectation) -> StateCheck {
        let want = match &e.want {
            Want::Num(Num::Lit(n)) => Ok(Seen::Num(*n)),
            Want::Num(Num::Ref(r)) => self.resolve(r).map(Seen::Num),
            Want::Bool(b) => Ok(Seen::Bool(*b)),
            Want::Text(t) => Ok(Seen::Text(t.clone())),
        };
        let seen = self.read(&e.path);
        let (expected, actual, held) = match (want, seen) {
            (Err(w), _) => (w, String::new(), false),
            (Ok(w), Err(s)) => (w.to_string(), format!("unreadable: {s}"), false),
            (Ok(w), Ok(s)) => {
                let held = match (&w, &s) {
                    (Seen::Text(a), Seen::Text(b)) => a.eq_ignore_ascii_case(b),
                    _ => w == s,
                };
                (w.to_string(), s.to_string(), held)
            }
        };
        StateCheck {
            path: e.text.clone(),
            expected,
            actual,
            held,
        }
    }

    fn num_of(&self, n: &Num) -> Result<u64, String> {
        match n {
            Num::Lit(v) => Ok(*v),
            Num::Ref(r) => self.resolve(r),
        }
    }

    fn read(&self, p: &Path) -> Result<Seen, String> {
        let World::PowerNv { m, vfio, .. } = &self.world else {
            return Err("state paths read a powernv machine".into());
        };
        let dev = |name: &str| m.device(name);
        let none = || Seen::Text("none".into());
        Ok(match p {
            Path::Group { device, attr } => {
                let group = dev(device).and_then(|d| m.core().device_group(d).ok().flatten());
                let Some(g) = group else {
                    return match *attr {
                        "exists" => Ok(Seen::Bool(false)),
                        _ => Err(format!("{device} has no group")),
                    };
                };
                let v = m.core().group_view(&g);
                match *attr {
                    "exists" => Seen::Bool(true),
                    "name" => Seen::Text(v.name),
                    "owner" => v.owner.map_or_else(none, |o| Seen::Num(o.0)),
                    "owner_cnt" => Seen::Num(u64::from(v.owner_cnt)),
                    "domain" => v.domain.map_or_else(none, |d| Seen::Text(d.to_string())),
                    "default_domain" => v
                        .default_domain
                        .map_or_else(none, |d| Seen::Text(d.to_string())),
                    "dma_owner_claimed" => Seen::Bool(m.core().owner_claimed(&g)),
                    "devices" => Seen::Num(v.devices.len() as u64),
                    other => return Err(format!("no group attribute {other}")),
                }
            }
            Path::Device { device, attr } => {
                let view =
                    dev(device).and_then(|d| m.core().devices().into_iter().find(|v| v.id == d));
                let Some(v) = view else {
                    return match *attr {
                        "exists" => Ok(Seen::Bool(false)),
                        _ => Err(format!("no device {device} now")),
                    };
                };
                match *attr {
                    "exists" => Seen::Bool(true),
                    "driver" => v.driver.map_or_else(none, |b| Seen::Text(b.name)),
                    "group" => v.group.map_or_else(none, Seen::Text),
                    other => return Err(format!("no device attribute {other}")),
                }
            }
            Path::Reach {
                device,
                addr,
                write,
            } => {
                let d = dev(device).ok_or_else(|| format!("no device {device} now"))?;
                let access = if *write { Access::Write } else { Access::Read };
                match m.pe_of(d).map(|pe| pe.reaches(*addr, access)) {
                    Some(Ok(hpa)) => Seen::Num(hpa.0),
                    _ => Seen::Text("fault".into()),
                }
            }
            Path::Pe { device, attr } => {
                let d = dev(device).ok_or_else(|| format!("no device {device} now"))?;
                let pe = m.pe_of(d).ok_or_else(|| format!("{device} is in no PE"))?;
                match *attr {
                    "number" => Seen::Num(u64::from(pe.number)),
                    "bypass" => Seen::Bool(pe.bypass_enabled()),
                    "tve0" => Seen::Text(
                        if pe.table(0).is_some() {
                            "window"
                        } else {
                            "off"
                        }
                        .into(),
                    ),
                    "tve1" => Seen::Text(
                        match pe.tve1_now() {
                            Tve1::Bypass { .. } => "bypass",
                            Tve1::Table => "window",
                            Tve1::Off => "off",
                        }
                        .into(),
                    ),
                    "windows" => {
                        Seen::Num((0..2).filter(|n| pe.table(*n).is_some()).count() as u64)
                    }
                    "range_kills" => Seen::Num(pe.range_kills()),
                    "pe_kills" => Seen::Num(pe.pe_kills()),
                    other => return Err(format!("no PE attribute {other}")),
                }
            }
            Path::Window { device, num, attr } => {
                let d = dev(device).ok_or_else(|| format!("no device {device} now"))?;
                let pe = m.pe_of(d).ok_or_else(|| format!("{device} is in no PE"))?;
                let Some(t) = pe.table(*num) else {
                    return match *attr {
                        "exists" => Ok(Seen::Bool(false)),
                        _ => Err(format!("no window {num} is programmed")),
                    };
                };
                let g = t.geometry();
                match *attr {
                    "exists" => Seen::Bool(true),
                    "start" => Seen::Num(t.start()),
                    "size" => Seen::Num(t.window_size()),
                    "page_size" => Seen::Num(g.page_shift().size()),
                    "levels" => Seen::Num(u64::from(g.levels())),
                    "table_bytes" => Seen::Num(t.allocated_bytes()),
                    "mapped" => Seen::Num(t.count_mapped()),
                    "kernel" => Seen::Bool(t.is_kernel_table()),
                    "tve" => Seen::Num(u64::from(pe.tve_index(*num))),
                    other => return Err(format!("no window attribute {other}")),
                }
            }
            Path::Tce { device, num, entry } => {
                let d = dev(device).ok_or_else(|| format!("no device {device} now"))?;
                let pe = m.pe_of(d).ok_or_else(|| format!("{device} is in no PE"))?;
                let t = pe
                    .table(*num)
                    .ok_or_else(|| format!("no window {num} is programmed"))?;
                let first = t.geometry().first_index().0;
                let index = first
                    .checked_add(*entry)
                    .ok_or_else(|| format!("entry {entry} overflows"))?;
                match t.get(TceIndex(index)) {
                    Ok(tce) => Seen::Num(tce.0),
                    Err(e) => return Err(format!("entry {entry}: {e}")),
                }
            }
            Path::Container { fd, attr } => {
                let c = ContainerFd(
                    u32::try_from(self.num_of(fd)?)
                        .map_err(|_| "a container fd fits in 32 bits".to_string())?,
                );
                match *attr {
                    "windows" => Seen::Num(vfio.windows(c).len() as u64),
                    "mapped" => Seen::Num(vfio.windows(c).iter().map(|w| w.mapped).sum()),
                    "pinned" => Seen::Num(vfio.pinned_pages(c)),
                    "default_window_pending" => Seen::Bool(vfio.default_window_pending(c)),
                    other => return Err(format!("no container attribute {other}")),
                }
            }
            Path::Process { pid, attr } => {
                let mm = Mm(u32::try_from(self.num_of(pid)?)
                    .map_err(|_| "a process id fits in 32 bits".to_string())?);
                match *attr {
                    "locked_vm" => Seen::Num(vfio.locked_pages(mm)),
                    "leaked" => Seen::Num(vfio.leaked_pages(mm)),
                    other => return Err(format!("no process attribute {other}")),
                }
            }
            Path::Eeh { device, attr } => {
                let d = dev(device).ok_or_else(|| format!("no device {device} now"))?;
                let pe = m.pe_of(d).ok_or_else(|| format!("{device} is in no PE"))?;
                let e = pe.eeh();
                match *attr {
                    "state" => Seen::Num(pe.eeh_state_value() as u64),
                    "mmio_frozen" => Seen::Bool(e.mmio_frozen),
                    "dma_stopped" => Seen::Bool(e.dma_stopped),
                    "isolated" => Seen::Bool(e.isolated),
                    "cfg_blocked" => Seen::Bool(e.cfg_blocked),
                    "removed" => Seen::Bool(e.removed),
                    "pass_dev_cnt" => Seen::Num(u64::from(e.pass_dev_cnt)),
                    "freeze_count" => Seen::Num(u64::from(e.freeze_count)),
                    "phb_fenced" => Seen::Bool(pe.phb_eeh().fenced),
                    "phb_isolated" => Seen::Bool(pe.phb_eeh().isolated),
                    other => return Err(format!("no EEH attribute {other}")),
                }
            }
            Path::Check { rule } => {
                Seen::Bool(self.checks().iter().any(|c| &c.name == rule && c.held))
            }
        })
    }
}
