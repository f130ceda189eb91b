//! State expectations: the `state` table any step may carry. Each key is a path naming one
//! piece of state a kernel developer reasons about (a group's owner, a PE's TVE, the raw
//! TCE at an entry, a process's `locked_vm`, …) and each value what it must be once the
//! step has run. Paths are parsed and checked before anything runs: an unknown root or
//! attribute gets the closest valid name, a device the machine does not have is named,
//! and a value of the wrong kind is refused.
//!
//! ```toml
//! [[step]]
//! op = "claim"
//! device = "gpu0"
//! owner = 7
//! state = { group.gpu0.owner = 7, group.gpu0.owner_cnt = 1, group.gpu0.domain = "blocked" }
//! ```

use crate::doc::{closest, echo, parse_num, FileError, Node, Source, Val};
use std::fmt;

/// A number in a path or an expectation: written in the file, or a result an earlier step
/// named with `as` (`$name`, `$name.field`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Num {
    /// A literal.
    Lit(u64),
    /// A reference, resolved when the step runs.
    Ref(String),
}

/// What kind of value an attribute has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A number.
    Num,
    /// `true` or `false`.
    Bool,
    /// A word (a domain type, a driver name).
    Text,
    /// A number, or the word given (`"none"` for no owner, `"fault"` for no translation).
    NumOr(&'static str),
}

/// Where in the machine a path points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Path {
    /// `group.DEVICE.ATTR`: the IOMMU group the device is in.
    Group {
        /// Device whose group.
        device: String,
        /// Attribute.
        attr: &'static str,
    },
    /// `device.DEVICE.ATTR`.
    Device {
        /// Device.
        device: String,
        /// Attribute.
        attr: &'static str,
    },
    /// `device.DEVICE.reads.ADDR` / `device.DEVICE.writes.ADDR`: where a DMA of the device
    /// at bus address ADDR lands now, without touching the PHB's TCE cache.
    Reach {
        /// Device.
        device: String,
        /// Bus address.
        addr: u64,
        /// A write (else a read).
        write: bool,
    },
    /// `pe.DEVICE.ATTR`: the PE the device is in.
    Pe {
        /// Device whose PE.
        device: String,
        /// Attribute.
        attr: &'static str,
    },
    /// `window.DEVICE.N.ATTR`: window N (0 or 1) programmed on the device's PE.
    Window {
        /// Device whose PE.
        device: String,
        /// Window slot.
        num: usize,
        /// Attribute.
        attr: &'static str,
    },
    /// `tce.DEVICE.N.ENTRY`: the raw 64-bit TCE of entry ENTRY (0 = the window's first
    /// page) of window N on the device's PE.
    Tce {
        /// Device whose PE.
        device: String,
        /// Window slot.
        num: usize,
        /// Entry within the window.
        entry: u64,
    },
    /// `container.FD.ATTR`: a VFIO container.
    Container {
        /// Its fd.
        fd: Num,
        /// Attribute.
        attr: &'static str,
    },
    /// `process.PID.ATTR`: a user process's memory accounting.
    Process {
        /// Its id (1000 is the default process).
        pid: Num,
        /// Attribute.
        attr: &'static str,
    },
    /// `eeh.DEVICE.ATTR`: the EEH state of the device's PE.
    Eeh {
        /// Device whose PE.
        device: String,
        /// Attribute.
        attr: &'static str,
    },
    /// `check.RULE`: whether an invariant holds now.
    Check {
        /// The rule's name.
        rule: String,
    },
}

/// What a path must be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Want {
    /// A number.
    Num(Num),
    /// A boolean.
    Bool(bool),
    /// A word.
    Text(String),
}

/// One expectation of a step.
#[derive(Clone, Debug)]
pub struct Expectation {
    /// The path as written (dotted).
    pub text: String,
    /// Where it points.
    pub path: Path,
    /// What it must be.
    pub want: Want,
}

/// One root of the path syntax: its name, its form and its attributes with their kinds.
pub struct Root {
    /// The first segment.
    pub name: &'static str,
    /// The whole form, for messages.
    pub form: &'static str,
    /// Attributes and the kind of value each has.
    pub attrs: &'static [(&'static str, Kind)],
}

/// The roots, their attributes and each attribute's kind.
pub const ROOTS: &[Root] = &[
    Root {
        name: "group",
        form: "group.DEVICE.ATTR",
        attrs: &[
            ("exists", Kind::Bool),
            ("name", Kind::Text),
            ("owner", Kind::NumOr("none")),
            ("owner_cnt", Kind::Num),
            ("domain", Kind::Text),
            ("default_domain", Kind::Text),
            ("dma_owner_claimed", Kind::Bool),
            ("devices", Kind::Num),
        ],
    },
    Root {
        name: "device",
        form: "device.DEVICE.ATTR, device.DEVICE.reads.ADDR, device.DEVICE.writes.ADDR",
        attrs: &[
            ("exists", Kind::Bool),
            ("driver", Kind::Text),
            ("group", Kind::Text),
            ("reads", Kind::NumOr("fault")),
            ("writes", Kind::NumOr("fault")),
        ],
    },
    Root {
        name: "pe",
        form: "pe.DEVICE.ATTR",
        attrs: &[
            ("number", Kind::Num),
            ("bypass", Kind::Bool),
            ("tve0", Kind::Text),
            ("tve1", Kind::Text),
            ("windows", Kind::Num),
            ("range_kills", Kind::Num),
            ("pe_kills", Kind::Num),
        ],
    },
    Root {
        name: "window",
        form: "window.DEVICE.N.ATTR",
        attrs: &[
            ("exists", Kind::Bool),
            ("start", Kind::Num),
            ("size", Kind::Num),
            ("page_size", Kind::Num),
            ("levels", Kind::Num),
            ("table_bytes", Kind::Num),
            ("mapped", Kind::Num),
            ("kernel", Kind::Bool),
            ("tve", Kind::Num),
        ],
    },
    Root {
        name: "tce",
        form: "tce.DEVICE.N.ENTRY",
        attrs: &[],
    },
    Root {
        name: "container",
        form: "container.FD.ATTR",
        attrs: &[
            ("windows", Kind::Num),
            ("mapped", Kind::Num),
            ("pinned", Kind::Num),
            ("default_window_pending", Kind::Bool),
        ],
    },
    Root {
        name: "process",
        form: "process.PID.ATTR",
        attrs: &[("locked_vm", Kind::Num), ("leaked", Kind::Num)],
    },
    Root {
        name: "eeh",
        form: "eeh.DEVICE.ATTR",
        attrs: &[
            ("state", Kind::Num),
            ("mmio_frozen", Kind::Bool),
            ("dma_stopped", Kind::Bool),
            ("isolated", Kind::Bool),
            ("cfg_blocked", Kind::Bool),
            ("removed", Kind::Bool),
            ("pass_dev_cnt", Kind::Num),
            ("freeze_count", Kind::Num),
            ("phb_fenced", Kind::Bool),
            ("phb_isolated", Kind::Bool),
        ],
    },
    Root {
        name: "check",
        form: "check.RULE",
        attrs: &[],
    },
];

impl Path {
    /// The kind of value this path has.
    pub fn kind(&self) -> Kind {
        match self {
            Path::Tce { .. } => Kind::Num,
            Path::Check { .. } => Kind::Bool,
            Path::Reach { .. } => Kind::NumOr("fault"),
            Path::Group { attr, .. }
            | Path::Device { attr, .. }
            | Path::Pe { attr, .. }
            | Path::Window { attr, .. }
            | Path::Container { attr, .. }
            | Path::Eeh { attr, .. }
            | Path::Process { attr, .. } => attr_kind(attr),
        }
    }
}

fn attr_kind(attr: &str) -> Kind {
    ROOTS
        .iter()
        .flat_map(|r| r.attrs.iter())
        .find(|(a, _)| *a == attr)
        .map_or(Kind::Num, |(_, k)| *k)
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Kind::Num => f.write_str("a number"),
            Kind::Bool => f.write_str("true or false"),
            Kind::Text => f.write_str("a word"),
            Kind::NumOr(w) => write!(f, "a number or {w:?}"),
        }
    }
}

/// What the parser needs to know of the file: its devices, its rules, and how to check a
/// `$name` reference.
pub struct Known<'a> {
    /// Devices of the machine and those hot-added by earlier steps.
    pub devices: &'a [String],
    /// Rule names `check.RULE` may use.
    pub rules: &'a [&'a str],
    /// Checks a `$reference` against the names defined so far.
    pub check_ref: &'a dyn Fn(&Node, &str) -> Result<(), FileError>,
}

/// Parses a step's `state` table. Nested tables (`state.group.gpu0.owner = 7`, or
/// `state = { group.gpu0.owner = 7 }`) and quoted dotted keys (`"group.gpu0.owner"`) both
/// name the same path.
pub fn parse(src: &Source, n: &Node, known: &Known<'_>) -> Result<Vec<Expectation>, FileError> {
    let Val::Table(t) = &n.val else {
        return Err(src.err(
            &n.span,
            format!(
                "state must be a table of paths, like {{ group.gpu0.owner = 7 }}; found {}",
                n.val.kind()
            ),
        ));
    };
    let mut leaves = Vec::new();
    flatten(String::new(), t, &mut leaves);
    if leaves.is_empty() {
        return Err(src.err(&n.span, "state names no path"));
    }
    leaves
        .into_iter()
        .map(|(text, v)| expectation(src, text, v, known))
        .collect()
}

fn flatten<'n>(prefix: String, t: &'n [(String, Node)], out: &mut Vec<(String, &'n Node)>) {
    for (k, v) in t {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match &v.val {
            Val::Table(inner) => flatten(key, inner, out),
            _ => out.push((key, v)),
        }
    }
}

fn expectation(
    src: &Source,
    text: String,
    v: &Node,
    known: &Known<'_>,
) -> Result<Expectation, FileError> {
    let path = path(&text, v, known).map_err(|m| src.err(&v.span, format!("state {text}: {m}")))?;
    let kind = path.kind();
    let want = match (&v.val, kind) {
        (Val::Bool(b), Kind::Bool) => Want::Bool(*b),
        (Val::Int(i), Kind::Num | Kind::NumOr(_)) => {
            Want::Num(Num::Lit(u64::try_from(*i).map_err(|_| {
                src.err(
                    &v.span,
                    format!("state {text}: {i} is not a number 0..2^64"),
                )
            })?))
        }
        (Val::Str(s), Kind::Num | Kind::NumOr(_)) if s.starts_with('$') => {
            (known.check_ref)(v, s)?;
            Want::Num(Num::Ref(s.clone()))
        }
        (Val::Str(s), Kind::NumOr(w)) if s == w => Want::Text(s.clone()),
        (Val::Str(s), Kind::Num | Kind::NumOr(_)) => Want::Num(Num::Lit(
            parse_num(s).map_err(|e| src.err(&v.span, format!("state {text}: {e}")))?,
        )),
        (Val::Str(s), Kind::Text) => Want::Text(s.clone()),
        (other, kind) => {
            return Err(src.err(
                &v.span,
                format!("state {text} is {kind}; found {}", other.kind()),
            ))
        }
    };
    Ok(Expectation { text, path, want })
}

fn device(name: &str, known: &Known<'_>) -> Result<String, String> {
    if known.devices.iter().any(|d| d == name) {
        return Ok(name.to_string());
    }
    let hint = closest(name, known.devices.iter().map(String::as_str))
        .map_or(String::new(), |c| format!(" (did you mean {c:?}?)"));
    Err(format!("the machine has no device {}{hint}", echo(name)))
}

fn attr(root: &str, name: &str) -> Result<&'static str, String> {
    let Root { form, attrs, .. } = ROOTS
        .iter()
        .find(|r| r.name == root)
        .ok_or_else(|| format!("unknown root {root:?}"))?;
    if let Some((a, _)) = attrs.iter().find(|(a, _)| *a == name) {
        return Ok(a);
    }
    let hint = closest(name, attrs.iter().map(|(a, _)| *a))
        .map_or(String::new(), |c| format!(" (did you mean {c:?}?)"));
    Err(format!(
        "{form}: no attribute {name:?}{hint}; expected one of: {}",
        attrs.iter().map(|(a, _)| *a).collect::<Vec<_>>().join(", ")
    ))
}

fn number(s: &str, v: &Node, known: &Known<'_>) -> Result<Num, String> {
    if s.starts_with('$') {
        (known.check_ref)(v, s).map_err(|e| e.msg)?;
        return Ok(Num::Ref(s.to_string()));
    }
    parse_num(s).map(Num::Lit)
}

fn lit(s: &str, what: &str) -> Result<u64, String> {
    parse_num(s).map_err(|e| format!("{what}: {e}"))
}

fn slot(s: &str) -> Result<usize, String> {
    match s {
        "0" => Ok(0),
        "1" => Ok(1),
        _ => Err(format!("window number {s:?}: a PE has windows 0 and 1")),
    }
}

fn path(text: &str, v: &Node, known: &Known<'_>) -> Result<Path, String> {
    let segs: Vec<&str> = text.split('.').collect();
    let root = segs[0];
    let forms = || ROOTS.iter().map(|r| r.form).collect::<Vec<_>>().join("; ");
    let shape = |n: usize| -> Result<(), String> {
        if segs.len() == n {
            Ok(())
        } else {
            let form = ROOTS.iter().find(|r| r.name == root).map_or("", |r| r.form);
            Err(format!("expected the form {form}"))
        }
    };
    Ok(match root {
        "group" => {
            shape(3)?;
            Path::Group {
                device: device(segs[1], known)?,
                attr: attr(root, segs[2])?,
            }
        }
        "device" if segs.len() == 4 && matches!(segs[2], "reads" | "writes") => Path::Reach {
            device: device(segs[1], known)?,
            addr: lit(segs[3], "bus address")?,
            write: segs[2] == "writes",
        },
        "device" => {
            shape(3)?;
            let a = attr(root, segs[2])?;
            if matches!(a, "reads" | "writes") {
                return Err(format!("{a} needs a bus address: device.DEVICE.{a}.ADDR"));
            }
            Path::Device {
                device: device(segs[1], known)?,
                attr: a,
            }
        }
        "pe" => {
            shape(3)?;
            Path::Pe {
                device: device(segs[1], known)?,
                attr: attr(root, segs[2])?,
            }
        }
        "window" => {
            shape(4)?;
            Path::Window {
                device: device(segs[1], known)?,
                num: slot(segs[2])?,
                attr: attr(root, segs[3])?,
            }
        }
        "tce" => {
            shape(4)?;
            Path::Tce {
                device: device(segs[1], known)?,
                num: slot(segs[2])?,
                entry: lit(segs[3], "entry")?,
            }
        }
        "container" => {
            shape(3)?;
            Path::Container {
                fd: number(segs[1], v, known)?,
                attr: attr(root, segs[2])?,
            }
        }
        "process" => {
            shape(3)?;
            Path::Process {
                pid: number(segs[1], v, known)?,
                attr: attr(root, segs[2])?,
            }
        }
        "eeh" => {
            shape(3)?;
            Path::Eeh {
                device: device(segs[1], known)?,
                attr: attr(root, segs[2])?,
            }
        }
        "check" => {
            shape(2)?;
            if !known.rules.contains(&segs[1]) {
                let hint = closest(segs[1], known.rules.iter().copied())
                    .map_or(String::new(), |c| format!(" (did you mean {c:?}?)"));
                return Err(format!("unknown rule {}{hint}", echo(segs[1])));
            }
            Path::Check {
                rule: segs[1].to_string(),
            }
        }
        other => {
            let hint = closest(other, ROOTS.iter().map(|r| r.name))
                .map_or(String::new(), |c| format!(" (did you mean {c:?}?)"));
            return Err(format!(
                "unknown root {}{hint}; paths are: {}",
                echo(other),
                forms()
            ));
        }
    })
}
