//! Runs a scenario: builds the machine, executes each step (repeated and varied as the
//! file says), compares outcomes with expectations, stops at the first unmet one, and
//! collects the state tree, the invariant checks and the trace.

use crate::doc::{parse_num, Node as DocNode, Val};
use crate::report::{CheckReport, Node, Report, StepReport, TraceEvent};
use crate::scenario::{Machine, Scenario, Step, RULES};
use iommu_core::{DeviceClaim, DomainType, Errno, EventKind, GroupClaim, OwnerCookie, Rule};
use spapr_papr::{
    opcode, DdwError, DdwRequest, GuestCall, GuestScratch, HStatus, LinuxGuestDdw, RtasCall, Spapr,
};
use spapr_platform::{OpalError, PowerNv, Tve1, BYPASS_BASE};
use spapr_tce::DmaDirection;
use spapr_vfio::uapi::{encode, ioctl};
use spapr_vfio::{ContainerFd, GroupFd, Mm, Vfio, VfioConfig};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use vm_memory::iommu::IommuMemory;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

mod observe;
mod passthrough;
mod powernv;
mod pseries;
mod render;
mod vfio;

use pseries::default_scratch;
pub(crate) use pseries::{eeh_call_names, WORD_NAMES};
use render::*;

/// A named result.
#[derive(Clone, Debug, Default)]
struct Named {
    primary: u64,
    fields: HashMap<&'static str, u64>,
}

enum World {
    PowerNv {
        m: Arc<PowerNv>,
        vfio: Arc<Vfio>,
        claims: HashMap<String, GroupClaim>,
        /// Device claims by device name; the same owner may hold several.
        device_claims: HashMap<String, Vec<DeviceClaim>>,
        containers: Vec<ContainerFd>,
    },
    PSeries {
        s: Box<Spapr>,
        mem: GuestMemoryMmap,
        saved: HashMap<u64, Vec<u8>>,
        trace: Vec<String>,
        /// Lines past [`TRACE_LIMIT`] in one step, counted instead of kept.
        trace_dropped: u64,
        /// The guest kernel's DDW state (windows made, PHBs that failed); a machine
        /// reset reboots it.
        guest: LinuxGuestDdw,
        /// The PowerNV host of the PHBs with passed-through devices, if any.
        host: Option<passthrough::Host>,
    },
}

/// What one operation produced.
enum Outcome {
    /// It worked; the detail is printed.
    Ok(String),
    /// A status (errno, H_*, RTAS_*, "fault", a number) and what came with it.
    Status(String, String),
    /// It worked but produced data other than the file says.
    Mismatch(String),
    /// The step could not be carried out (a bad argument at run time).
    Error(String),
}

impl Outcome {
    fn text(&self) -> String {
        match self {
            Outcome::Ok(d) if d.is_empty() => "ok".into(),
            Outcome::Ok(d) => format!("ok ({d})"),
            Outcome::Status(s, d) if d.is_empty() => s.clone(),
            Outcome::Status(s, d) => format!("{s} ({d})"),
            Outcome::Mismatch(m) => format!("mismatch: {m}"),
            Outcome::Error(e) => format!("error: {e}"),
        }
    }
    fn key(&self) -> String {
        match self {
            Outcome::Ok(_) => "ok".into(),
            Outcome::Status(s, _) => s.clone(),
            Outcome::Mismatch(_) => "mismatch".into(),
            Outcome::Error(_) => "error".into(),
        }
    }
    fn matches(&self, expect: &str) -> bool {
        match self {
            Outcome::Ok(_) => expect == "ok",
            Outcome::Status(s, _) => {
                s == expect
                    || (expect == "ok" && (s == "H_SUCCESS" || s == "RTAS_SUCCESS" || s == "0"))
            }
            Outcome::Mismatch(_) => false,
            Outcome::Error(_) => expect == "error",
        }
    }
}

fn errno<T>(r: Result<T, Errno>) -> Outcome {
    match r {
        Ok(_) => Outcome::Ok(String::new()),
        Err(e) => Outcome::Status(e.to_string(), String::new()),
    }
}

fn ioctl_outcome(r: Result<i64, Errno>) -> Outcome {
    match r {
        Ok(0) => Outcome::Ok(String::new()),
        Ok(n) => Outcome::Status(n.to_string(), String::new()),
        Err(e) => Outcome::Status(e.to_string(), String::new()),
    }
}

const DEFAULT_PROCESS: u64 = 1000;

/// Runs `sc`; `on_progress` is told of every operation run (for a progress bar).
pub fn run(sc: &Scenario, on_progress: &mut dyn FnMut(u64)) -> Report {
    let mut e = match Engine::new(sc) {
        Ok(e) => e,
        Err(msg) => {
            return Report {
                scenario: sc.name.clone(),
                steps: Vec::new(),
                stopped: Some(format!("the machine could not be built: {msg}")),
                state: Node::leaf("no machine"),
                checks: Vec::new(),
                trace: Vec::new(),
                svg: None,
            }
        }
    };
    let mut steps = Vec::new();
    let mut stopped = None;
    e.collect_trace(0);
    for (i, step) in sc.steps.iter().enumerate() {
        let (report, ok) = e.step(sc, i + 1, step, on_progress);
        e.collect_trace(i + 1);
        if !ok {
            let unmet: Vec<String> = report
                .state_checks
                .iter()
                .filter(|c| !c.held)
                .map(|c| {
                    format!(
                        "state {}: expected {}, found {}",
                        c.path, c.expected, c.actual
                    )
                })
                .collect();
            stopped = Some(if unmet.is_empty() {
                format!(
                    "step {} (line {}) did not do what the file expects",
                    i + 1,
                    step.line
                )
            } else {
                format!("step {} (line {}): {}", i + 1, step.line, unmet.join("; "))
            });
            steps.push(report);
            break;
        }
        steps.push(report);
        if sc.check_each_step {
            let bad: Vec<String> = e.failed_checks().map(|c| c.detail).collect();
            if !bad.is_empty() {
                stopped = Some(format!(
                    "an invariant broke after step {} (line {}): {}",
                    i + 1,
                    step.line,
                    bad.join("; ")
                ));
                break;
            }
        }
    }
    let state = e.state_tree(sc.full_tables);
    let mut checks = e.checks();
    for c in &mut checks {
        if sc.expect_violations.contains(&c.name) {
            c.held = !c.held;
            c.detail = if c.held {
                format!("violated, as this scenario expects: {}", c.detail)
            } else {
                format!("expected a violation, found none ({})", c.detail)
            };
        }
    }
    let trace = e.take_trace();
    let svg = sc.svg.then(|| e.svg(&sc.name, &trace));
    Report {
        scenario: sc.name.clone(),
        steps,
        stopped,
        state,
        checks,
        trace,
        svg,
    }
}

/// Events a report keeps; past it, the count of those not kept is reported.
pub const TRACE_LIMIT: usize = 200_000;

struct Engine {
    world: World,
    names: HashMap<String, Named>,
    trace: Vec<TraceEvent>,
    trace_dropped: u64,
}

impl Engine {
    fn new(sc: &Scenario) -> Result<Self, String> {
        let world = match &sc.machine {
            Machine::PowerNv {
                config,
                drivers,
                profile,
                memlock,
                eeh,
                eeh_flags,
            } => {
                let m = Arc::new(PowerNv::booted(config.clone()).map_err(|e| e.to_string())?);
                m.env().set_eeh(*eeh);
                m.env().set_eeh_flags(*eeh_flags);
                for (dev, drv) in drivers {
                    let id = m.device(dev).ok_or_else(|| format!("no device {dev}"))?;
                    m.bind_driver(id, drv)
                        .map_err(|e| format!("boot: binding {drv} to {dev}: {e}"))?;
                }
                let vfio = Arc::new(Vfio::new(
                    m.clone(),
                    VfioConfig {
                        profile: *profile,
                        memlock_limit: *memlock,
                        ..VfioConfig::default()
                    },
                ));
                World::PowerNv {
                    m,
                    vfio,
                    claims: HashMap::new(),
                    device_claims: HashMap::new(),
                    containers: Vec::new(),
                }
            }
            Machine::PSeries {
                config,
                passthrough,
            } => {
                let s = Box::new(Spapr::new(config.clone()).map_err(|e| e.to_string())?);
                let host = if passthrough.is_empty() {
                    None
                } else {
                    let h = passthrough::Host::boot(passthrough)?;
                    for (phb, b) in &h.backends {
                        s.set_eeh_backend(
                            *phb,
                            Some(b.clone() as Arc<dyn spapr_papr::eeh::EehBackend>),
                        );
                    }
                    // The set-up's own events are the boot's, not the guest's.
                    h.machine().flush();
                    let _ = h.machine().core().take_trace();
                    Some(h)
                };
                let mem = GuestMemoryMmap::<()>::from_ranges(&[(
                    GuestAddress(0),
                    config.ram_size as usize,
                )])
                .map_err(|e| format!("guest memory: {e}"))?;
                World::PSeries {
                    s,
                    mem,
                    saved: HashMap::new(),
                    trace: Vec::new(),
                    trace_dropped: 0,
                    guest: LinuxGuestDdw::new(default_scratch(config.ram_size), false),
                    host,
                }
            }
        };
        Ok(Self {
            world,
            names: HashMap::new(),
            trace: Vec::new(),
            trace_dropped: 0,
        })
    }

    // ---- argument access ----

    fn node<'s>(step: &'s Step, field: &str) -> Option<&'s DocNode> {
        step.args.iter().find(|(k, _)| k == field).map(|(_, v)| v)
    }

    fn resolve(&self, s: &str) -> Result<u64, String> {
        let body = &s[1..];
        let end = body.find(['+', '-']).unwrap_or(body.len());
        let (path, off) = body.split_at(end);
        let (name, field) = match path.split_once('.') {
            Some((a, b)) => (a, Some(b)),
            None => (path, None),
        };
        let named = self
            .names
            .get(name)
            .ok_or_else(|| format!("{s}: the step that names {name} did not succeed"))?;
        let base = match field {
            None => named.primary,
            Some(f) => *named
                .fields
                .get(f)
                .ok_or_else(|| format!("{s}: no field {f}"))?,
        };
        if off.is_empty() {
            return Ok(base);
        }
        let d = parse_num(&off[1..])?;
        let r = if off.starts_with('+') {
            base.checked_add(d)
        } else {
            base.checked_sub(d)
        };
        r.ok_or_else(|| format!("{s} overflows"))
    }

    fn value(&self, n: &DocNode) -> Result<u64, String> {
        match &n.val {
            Val::Int(i) => u64::try_from(*i)
                .or_else(|_| i64::try_from(*i).map(|v| v as u64))
                .map_err(|_| format!("{i} does not fit in 64 bits")),
            Val::Str(s) if s.starts_with('$') => self.resolve(s),
            Val::Str(s) => parse_num(s),
            v => Err(format!("expected a number, found {}", v.kind())),
        }
    }

    /// A numeric field at repetition `iter`: its value plus `iter` vary steps, checked
    /// against the width of the field it feeds (never wrapped or truncated).
    fn num(&self, step: &Step, field: &str, iter: u64) -> Result<u64, String> {
        let n = Self::node(step, field).ok_or_else(|| format!("missing {field}"))?;
        let base = self.fit(step, field, n)?;
        let inc = step
            .vary
            .iter()
            .find(|(k, _)| k == field)
            .map_or(0, |(_, d)| *d);
        if inc == 0 {
            return Ok(base);
        }
        let max = i128::from(crate::scenario::field_max(step.op.name, field));
        inc.checked_mul(i128::from(iter))
            .and_then(|d| d.checked_add(i128::from(base)))
            .filter(|v| (0..=max).contains(v))
            .and_then(|v| u64::try_from(v).ok())
            .ok_or_else(|| {
                format!(
                    "{field}: vary takes it out of 0..={max:#x} at repetition {}",
                    iter + 1
                )
            })
    }

    /// One number for `field`, in the field's width: a negative literal (where the field
    /// takes one) as two's complement at that width, anything else refused if it does
    /// not fit.
    fn fit(&self, step: &Step, field: &str, n: &DocNode) -> Result<u64, String> {
        let v = self.value(n).map_err(|e| format!("{field}: {e}"))?;
        let bits = crate::scenario::field_bits(step.op.name, field);
        if matches!(n.val, Val::Int(i) if i < 0) {
            if !crate::scenario::field_signed(field) {
                return Err(format!("{field} must be 0 or more"));
            }
            return Ok(v & crate::scenario::field_max(step.op.name, field));
        }
        if bits < 64 && v >> bits != 0 {
            return Err(format!(
                "{field}: {v:#x} does not fit in the {bits}-bit field it feeds"
            ));
        }
        Ok(v)
    }

    fn opt_num(&self, step: &Step, field: &str, iter: u64, default: u64) -> Result<u64, String> {
        if Self::node(step, field).is_some() {
            self.num(step, field, iter)
        } else {
            Ok(default)
        }
    }

    fn text<'s>(step: &'s Step, field: &str) -> Result<&'s str, String> {
        match Self::node(step, field).map(|n| &n.val) {
            Some(Val::Str(s)) => Ok(s),
            Some(v) => Err(format!("{field} must be a string, found {}", v.kind())),
            None => Err(format!("missing {field}")),
        }
    }

    fn nums(&self, step: &Step, field: &str) -> Result<Vec<u64>, String> {
        match Self::node(step, field).map(|n| &n.val) {
            Some(Val::Arr(a)) => a.iter().map(|n| self.fit(step, field, n)).collect(),
            Some(v) => Err(format!("{field} must be an array, found {}", v.kind())),
            None => Ok(Vec::new()),
        }
    }

    fn flag(step: &Step, field: &str) -> Result<bool, String> {
        match Self::node(step, field).map(|n| &n.val) {
            Some(Val::Bool(b)) => Ok(*b),
            Some(v) => Err(format!("{field} must be true or false, found {}", v.kind())),
            None => Ok(false),
        }
    }

    fn dir(step: &Step) -> Result<DmaDirection, String> {
        match Self::text(step, "dir") {
            Err(_) if Self::node(step, "dir").is_none() => Ok(DmaDirection::Bidirectional),
            Err(e) => Err(e),
            Ok("bidirectional") => Ok(DmaDirection::Bidirectional),
            Ok("to_device") => Ok(DmaDirection::ToDevice),
            Ok("from_device") => Ok(DmaDirection::FromDevice),
            Ok("none") => Ok(DmaDirection::None),
            Ok(o) => Err(format!(
                "dir {o:?}: expected bidirectional, to_device, from_device or none"
            )),
        }
    }

    fn data(step: &Step, field: &str) -> Result<Vec<u8>, String> {
        Self::text(step, field).map(|s| s.as_bytes().to_vec())
    }

    fn describe(sc: &Scenario, step: &Step) -> String {
        let mut s = step.op.name.to_string();
        for (k, v) in &step.args {
            let raw = sc.source.text.get(v.span.clone()).unwrap_or("?");
            let _ = write!(s, " {k}={}", raw.replace('\n', " "));
        }
        if let Some(n) = &step.name {
            let _ = write!(s, " as {n}");
        }
        s
    }

    // ---- steps ----

    fn step(
        &mut self,
        sc: &Scenario,
        n: usize,
        step: &Step,
        on_progress: &mut dyn FnMut(u64),
    ) -> (StepReport, bool) {
        let mut counts: Vec<(String, u64)> = Vec::new();
        let mut last = Outcome::Ok(String::new());
        let mut runs = 0;
        let mut failed_at = None;
        for iter in 0..step.repeat {
            let out = self.exec(step, iter);
            runs += 1;
            if iter % 4096 == 4095 || iter + 1 == step.repeat {
                on_progress((iter % 4096) + 1);
                // Bounded as it goes: a step repeated a million times keeps at most
                // TRACE_LIMIT events and counts the rest.
                self.collect_trace(n);
            }
            let key = out.key();
            match counts.iter_mut().find(|(k, _)| *k == key) {
                Some((_, c)) => *c += 1,
                None => counts.push((key, 1)),
            }
            let held = match &step.expect {
                Some(e) => out.matches(e),
                None => !matches!(out, Outcome::Mismatch(_) | Outcome::Error(_)),
            };
            last = out;
            if !held {
                failed_at = Some(iter);
                break;
            }
        }
        let mut outcome = if counts.len() > 1 && failed_at.is_none() {
            counts
                .iter()
                .map(|(k, c)| format!("{k} x{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        } else {
            last.text()
        };
        if let (Some(i), true) = (failed_at, step.repeat > 1) {
            outcome = format!("{outcome} at repetition {}", i + 1);
        }
        let mut held = failed_at.is_none();
        let state_checks = if held {
            self.observe_all(step)
        } else {
            Vec::new()
        };
        if state_checks.iter().any(|c| !c.held) {
            held = false;
        }
        let failed_allowed = step.expect.is_none() && !last.matches("ok");
        (
            StepReport {
                n,
                line: step.line,
                op: Self::describe(sc, step),
                expect: step.expect.clone().unwrap_or_default(),
                outcome,
                held,
                runs,
                state: (step.op.name == "show")
                    .then(|| self.state_tree(Self::flag(step, "tables").unwrap_or(false))),
                state_checks,
                failed_allowed,
            },
            held,
        )
    }

    fn exec(&mut self, step: &Step, iter: u64) -> Outcome {
        let r = match step.op.name {
            "check" => Ok(self.check_step()),
            "show" | "assert" => Ok(Outcome::Ok(String::new())),
            "profile" => self.profile(step),
            name if name.starts_with("h_")
                || name.starts_with("rtas")
                || name.starts_with("guest_")
                || name == "hcall"
                || name == "machine_reset"
                || name.starts_with("linux_")
                || name.starts_with("host_")
                || name.ends_with("_phb") =>
            {
                self.papr(step, iter)
            }
            "device_read" | "device_write" if matches!(self.world, World::PSeries { .. }) => {
                self.papr(step, iter)
            }
            name if name.starts_with("vfio_") || name == "mmap" => self.vfio(step, iter),
            _ => self.powernv(step, iter),
        };
        match r {
            Ok(o) => o,
            Err(e) => Outcome::Error(e),
        }
    }

    fn check_step(&self) -> Outcome {
        let broken: Vec<String> = self.failed_checks().map(|c| c.name).collect();
        if broken.is_empty() {
            Outcome::Status("clean".into(), String::new())
        } else {
            Outcome::Status(broken.join(","), String::new())
        }
    }

    fn profile(&mut self, step: &Step) -> Result<Outcome, String> {
        match &self.world {
            World::PowerNv { vfio, .. } => {
                let k = Self::text(step, "kernel")?;
                let p = spapr_vfio::KernelProfile::from_name(k)
                    .ok_or_else(|| format!("kernel profile {k:?}: expected linux or strict"))?;
                vfio.set_profile(p);
            }
            World::PSeries { s, .. } => {
                let k = Self::text(step, "papr")?;
                let p = spapr_papr::Profile::from_name(k)
                    .ok_or_else(|| format!("papr profile {k:?}: expected qemu, kvm or lopar"))?;
                s.set_profile(p);
            }
        }
        Ok(Outcome::Ok(String::new()))
    }

    fn name_value(&mut self, step: &Step, v: u64) {
        self.name_result(
            step,
            Named {
                primary: v,
                ..Named::default()
            },
        );
    }

    fn name_result(&mut self, step: &Step, named: Named) {
        if let Some(n) = &step.name {
            self.names.insert(n.clone(), named);
        }
    }

    // ---- state, checks, trace ----

    /// The checks that do not hold now.
    fn failed_checks(&self) -> impl Iterator<Item = CheckReport> {
        self.checks().into_iter().filter(|c| !c.held)
    }

    fn checks(&self) -> Vec<CheckReport> {
        match &self.world {
            World::PowerNv { m, .. } => {
                let groups = m.core().groups().len();
                kernel_checks(m, "", &format!("holds for {groups} groups"))
            }
            World::PSeries { s, host, .. } => {
                // The library's checker, one report per rule; then the host's, if any.
                let found = s.check();
                let host_reports: Vec<CheckReport> = host
                    .iter()
                    .flat_map(|h| kernel_checks(h.machine(), "host ", "holds on the host"))
                    .collect();
                spapr_papr::PseriesRule::ALL
                    .iter()
                    .map(|rule| {
                        let hits: Vec<String> = found
                            .iter()
                            .filter(|v| v.rule == *rule)
                            .map(|v| v.to_string())
                            .collect();
                        CheckReport {
                            name: rule.name().into(),
                            held: hits.is_empty(),
                            detail: if hits.is_empty() {
                                format!("holds for {} PHBs", s.phbs().len())
                            } else {
                                hits.join("; ")
                            },
                        }
                    })
                    .chain(host_reports)
                    .collect()
            }
        }
    }

    /// Moves what happened since the last call into the report's trace, tagged with
    /// `step`. Past [`TRACE_LIMIT`] events only a count is kept, and the trace ends with
    /// an event that says how many were not kept.
    fn collect_trace(&mut self, step: usize) {
        let add = |t: &mut Vec<TraceEvent>, dropped: &mut u64, e: TraceEvent| {
            if t.len() < TRACE_LIMIT {
                t.push(e);
            } else {
                *dropped += 1;
            }
        };
        let (t, dropped) = (&mut self.trace, &mut self.trace_dropped);
        match &mut self.world {
            World::PowerNv { m, .. } => {
                m.flush();
                for e in m.core().take_trace() {
                    add(
                        t,
                        dropped,
                        TraceEvent {
                            step,
                            kind: format!("{:?}", e.kind),
                            device: e.device,
                            group: e.group,
                            detail: e.detail,
                        },
                    );
                }
            }
            World::PSeries {
                trace,
                trace_dropped,
                host,
                ..
            } => {
                *dropped += std::mem::take(trace_dropped);
                if let Some(h) = host {
                    h.machine().flush();
                    for e in h.machine().core().take_trace() {
                        add(
                            t,
                            dropped,
                            TraceEvent {
                                step,
                                kind: format!("host {:?}", e.kind),
                                device: e.device,
                                group: e.group,
                                detail: e.detail,
                            },
                        );
                    }
                }
                for line in trace.drain(..) {
                    let line = line.trim_start().to_string();
                    let (kind, detail) = match line.split_once([' ', '(']) {
                        Some((k, _)) if !k.is_empty() => (k.to_string(), line.clone()),
                        _ => ("papr".to_string(), line.clone()),
                    };
                    add(
                        t,
                        dropped,
                        TraceEvent {
                            step,
                            kind,
                            device: None,
                            group: None,
                            detail,
                        },
                    );
                }
            }
        }
    }

    /// The whole trace, with the count of events not kept.
    fn take_trace(&mut self) -> Vec<TraceEvent> {
        let mut t = std::mem::take(&mut self.trace);
        if self.trace_dropped > 0 {
            t.push(TraceEvent {
                step: t.last().map_or(0, |e| e.step),
                kind: "TraceLimit".into(),
                device: None,
                group: None,
                detail: format!(
                    "{} more events happened and were not kept (the trace keeps {TRACE_LIMIT})",
                    self.trace_dropped
                ),
            });
        }
        t
    }

    /// The state tree; `full`: every valid TCE run with its raw value (`show` with
    /// `tables = true`).
    fn state_tree(&self, full: bool) -> Node {
        match &self.world {
            World::PowerNv {
                m,
                vfio,
                containers,
                ..
            } => powernv_tree(m, vfio, containers, full),
            World::PSeries { s, guest, host, .. } => {
                let mut t = pseries_tree(s, guest);
                if let Some(h) = host {
                    t.children.push(h.tree());
                }
                t
            }
        }
    }
}

impl Engine {
    /// The machine as an SVG ([`crate::svg`]): a PowerNV host with its PEs; a pSeries
    /// guest with host devices as its host, else its own PHBs and LIOBN windows.
    fn svg(&self, title: &str, trace: &[TraceEvent]) -> String {
        match &self.world {
            World::PowerNv { m, .. } => powernv_svg(title, m, trace),
            World::PSeries { host: Some(h), .. } => powernv_svg(title, h.machine(), trace),
            World::PSeries { s, .. } => pseries_svg(title, s),
        }
    }
}

/// One report per kernel rule on `m`, named with `prefix`; `holds` says what a rule that
/// holds covers.
fn kernel_checks(m: &PowerNv, prefix: &str, holds: &str) -> Vec<CheckReport> {
    let v = m.check();
    RULES
        .iter()
        .map(|name| {
            let hits: Vec<String> = v
                .iter()
                .filter(|x| rule_name(x.rule) == *name)
                .map(|x| x.to_string())
                .collect();
            CheckReport {
                name: format!("{prefix}{name}"),
                held: hits.is_empty(),
                detail: if hits.is_empty() {
                    holds.to_string()
                } else {
                    hits.join("; ")
                },
            }
        })
        .collect()
}

fn rule_name(r: Rule) -> &'static str {
    r.name()
}

fn compare(got: &[u8], want: Option<&[u8]>) -> Outcome {
    match want {
        Some(w) if w != got => Outcome::Mismatch(format!(
            "read {:?}, the file expects {:?}",
            String::from_utf8_lossy(got),
            String::from_utf8_lossy(w)
        )),
        Some(w) => Outcome::Ok(format!("read {:?}", String::from_utf8_lossy(w))),
        None => Outcome::Ok(format!("read {} bytes", got.len())),
    }
}

/// How many operations a scenario will run, for the progress bar.
pub fn total_ops(sc: &Scenario) -> u64 {
    sc.steps.iter().map(|s| s.repeat).sum()
}

/// The fuzz target's body (`cargo fuzz run -s none scenario`): arbitrary bytes as a
/// scenario file never panic; a refusal names a line inside the file; an accepted file of
/// at most 5000 operations runs. The error says which property broke.
pub fn fuzz_one(data: &[u8]) -> Result<(), String> {
    let Ok(text) = std::str::from_utf8(data) else {
        return Ok(());
    };
    let lines = text.lines().count().max(1);
    let src = crate::doc::Source {
        name: "fuzz.toml".into(),
        text: text.to_string(),
    };
    match crate::scenario::parse(src) {
        Ok(sc) => {
            if total_ops(&sc) <= 5000 {
                let _ = run(&sc, &mut |_| {});
            }
            Ok(())
        }
        Err(e) if e.line >= 1 && e.line <= lines + 1 && e.col >= 1 => {
            // The rendered error quotes the file's own line, numbered, with its message.
            let shown = e.render();
            let numbered = format!("{} |", e.line);
            match &e.source_line {
                Some(_) if !shown.contains(&numbered) || !shown.contains(&e.msg) => {
                    Err(format!("the rendered error lost its line: {shown}"))
                }
                _ => Ok(()),
            }
        }
        Err(e) => Err(format!("error outside the file: {e}")),
    }
}
