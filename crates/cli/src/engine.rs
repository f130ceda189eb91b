//! Runs a scenario: builds the machine, executes each step (repeated and varied as the
//! file says), compares outcomes with expectations, stops at the first unmet one, and
//! collects the state tree, the invariant checks and the trace.

use crate::doc::{parse_num, Node as DocNode, Val};
use crate::report::{CheckReport, Node, Report, StepReport};
use crate::scenario::{Machine, Scenario, Step, RULES};
use iommu_core::{DomainType, Errno, GroupClaim, OwnerCookie, Rule};
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
        containers: Vec<ContainerFd>,
    },
    PSeries {
        s: Box<Spapr>,
        mem: GuestMemoryMmap,
        saved: HashMap<u64, Vec<u8>>,
        trace: Vec<String>,
        /// The guest kernel's DDW state (windows made, PHBs that failed); a machine
        /// reset reboots it.
        guest: LinuxGuestDdw,
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
            }
        }
    };
    let mut steps = Vec::new();
    let mut stopped = None;
    for (i, step) in sc.steps.iter().enumerate() {
        let (report, ok) = e.step(sc, i + 1, step, on_progress);
        steps.push(report);
        if !ok {
            stopped = Some(format!(
                "step {} (line {}) did not do what the file expects",
                i + 1,
                step.line
            ));
            break;
        }
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
    let state = e.state();
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
    let trace = e.trace();
    Report {
        scenario: sc.name.clone(),
        steps,
        stopped,
        state,
        checks,
        trace,
    }
}

struct Engine {
    world: World,
    names: HashMap<String, Named>,
}

impl Engine {
    fn new(sc: &Scenario) -> Result<Self, String> {
        let world = match &sc.machine {
            Machine::PowerNv {
                config,
                drivers,
                profile,
                memlock,
            } => {
                let m = Arc::new(PowerNv::booted(config.clone()).map_err(|e| e.to_string())?);
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
                    containers: Vec::new(),
                }
            }
            Machine::PSeries { config } => {
                let s = Box::new(Spapr::new(config.clone()).map_err(|e| e.to_string())?);
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
                    guest: LinuxGuestDdw::new(default_scratch(config.ram_size), false),
                }
            }
        };
        Ok(Self {
            world,
            names: HashMap::new(),
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

    fn num(&self, step: &Step, field: &str, iter: u64) -> Result<u64, String> {
        let n = Self::node(step, field).ok_or_else(|| format!("missing {field}"))?;
        let base = self.value(n).map_err(|e| format!("{field}: {e}"))?;
        let inc = step
            .vary
            .iter()
            .find(|(k, _)| k == field)
            .map_or(0, |(_, d)| *d);
        Ok(base.wrapping_add(inc.wrapping_mul(iter)))
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
            Some(Val::Arr(a)) => a.iter().map(|n| self.value(n)).collect(),
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
        let held = failed_at.is_none();
        (
            StepReport {
                n,
                line: step.line,
                op: Self::describe(sc, step),
                expect: step.expect.clone().unwrap_or_default(),
                outcome,
                held,
                runs,
                state: (step.op.name == "show").then(|| self.state()),
            },
            held,
        )
    }

    fn exec(&mut self, step: &Step, iter: u64) -> Outcome {
        let r = match step.op.name {
            "check" => Ok(self.check_step()),
            "show" => Ok(Outcome::Ok(String::new())),
            "profile" => self.profile(step),
            name if name.starts_with("h_")
                || name.starts_with("rtas")
                || name.starts_with("guest_")
                || name == "hcall"
                || name == "machine_reset"
                || name.starts_with("linux_")
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

    fn device(m: &PowerNv, step: &Step) -> Result<iommu_core::DeviceId, String> {
        let name = Self::text(step, "device")?;
        m.device(name)
            .ok_or_else(|| format!("no device named {name:?}"))
    }

    fn powernv(&mut self, step: &Step, iter: u64) -> Result<Outcome, String> {
        let World::PowerNv { m, vfio, .. } = &self.world else {
            return Err("needs a powernv machine".into());
        };
        let (m, vfio) = (m.clone(), vfio.clone());
        Ok(match step.op.name {
            "bind" => errno(m.bind_driver(Self::device(&m, step)?, Self::text(step, "driver")?)),
            "unbind" => errno(m.unbind_driver(Self::device(&m, step)?)),
            "claim" => {
                let dev = Self::device(&m, step)?;
                let owner = self.opt_num(step, "owner", iter, 0x5e5)?;
                match m.claim_group(dev, OwnerCookie(owner)) {
                    Ok(c) => {
                        if let World::PowerNv { claims, .. } = &mut self.world {
                            claims.insert(Self::text(step, "device")?.to_string(), c);
                        }
                        Outcome::Ok(String::new())
                    }
                    Err(e) => Outcome::Status(e.to_string(), String::new()),
                }
            }
            "release" => {
                let name = Self::text(step, "device")?;
                let claim = match &mut self.world {
                    World::PowerNv { claims, .. } => claims.remove(name),
                    World::PSeries { .. } => None,
                };
                match claim {
                    Some(c) => errno(m.release(c)),
                    None => return Err(format!("no claim of {name} to release")),
                }
            }
            "hot_add" => {
                let d = spapr_platform::DeviceConfig::new(
                    Self::text(step, "device")?,
                    self.num(step, "phb", iter)? as u32,
                    self.num(step, "bus", iter)? as u8,
                    self.opt_num(step, "devfn", iter, 0)? as u8,
                    self.opt_num(step, "dma_mask", iter, 64)? as u32,
                );
                match m.add_device(&d) {
                    Ok(_) => Outcome::Ok(String::new()),
                    Err(e) => Outcome::Ok(format!("added without a group: {e}")),
                }
            }
            // Through VFIO: a device user space holds is not removed behind it.
            "hot_remove" => errno(vfio.remove_device(Self::device(&m, step)?)),
            "dma_alloc" => {
                let dev = Self::device(&m, step)?;
                match m.driver_dma_alloc(dev, self.num(step, "size", iter)?, Self::dir(step)?) {
                    Ok(b) => {
                        let mut named = Named {
                            primary: b.dma,
                            ..Named::default()
                        };
                        named.fields.insert("dma", b.dma);
                        named.fields.insert("phys", b.phys);
                        named.fields.insert("len", b.len);
                        self.name_result(step, named);
                        Outcome::Ok(format!("dma {:#x} -> phys {:#x}", b.dma, b.phys))
                    }
                    Err(e) => Outcome::Status(e.to_string(), String::new()),
                }
            }
            "dma_free" => {
                errno(m.driver_dma_free(Self::device(&m, step)?, self.num(step, "dma", iter)?))
            }
            "dma_map" => {
                let dev = Self::device(&m, step)?;
                let cpu = self.opt_num(step, "cpu", iter, 0)? as u32;
                let (phys, len) = (self.num(step, "phys", iter)?, self.num(step, "size", iter)?);
                match m.dma_map(dev, phys, len, Self::dir(step)?, cpu) {
                    Ok(a) => {
                        self.name_value(step, a);
                        Outcome::Ok(format!("dma {a:#x}"))
                    }
                    Err(e) => Outcome::Status(e.errno().to_string(), e.to_string()),
                }
            }
            "dma_unmap" => {
                let dev = Self::device(&m, step)?;
                match m.dma_unmap(
                    dev,
                    self.num(step, "dma", iter)?,
                    self.num(step, "size", iter)?,
                ) {
                    Ok(()) => Outcome::Ok(String::new()),
                    Err(e) => Outcome::Status(e.errno().to_string(), e.to_string()),
                }
            }
            "device_read" => {
                let dev = Self::device(&m, step)?;
                let want = Self::node(step, "data")
                    .map(|_| Self::data(step, "data"))
                    .transpose()?;
                let len = match &want {
                    Some(d) => d.len() as u64,
                    None => self.opt_num(step, "len", iter, 8)?,
                };
                match m.device_read(dev, self.num(step, "addr", iter)?, len) {
                    Ok(got) => compare(&got, want.as_deref()),
                    Err(f) => Outcome::Status("fault".into(), f.to_string()),
                }
            }
            "device_write" => {
                let dev = Self::device(&m, step)?;
                match m.device_write(
                    dev,
                    self.num(step, "addr", iter)?,
                    &Self::data(step, "data")?,
                ) {
                    Ok(()) => Outcome::Ok(String::new()),
                    Err(f) => Outcome::Status("fault".into(), f.to_string()),
                }
            }
            "ram_write" => {
                let d = Self::data(step, "data")?;
                match m.ram().write(self.num(step, "addr", iter)?, &d) {
                    Ok(()) => Outcome::Ok(String::new()),
                    Err(e) => Outcome::Error(e.to_string()),
                }
            }
            "ram_read" => {
                let d = Self::data(step, "data")?;
                let mut got = vec![0u8; d.len()];
                match m.ram().read(self.num(step, "addr", iter)?, &mut got) {
                    Ok(()) => compare(&got, Some(&d)),
                    Err(e) => Outcome::Error(e.to_string()),
                }
            }
            "fail_next_set_window" => {
                let e = match Self::text(step, "opal")? {
                    "parameter" => OpalError::Parameter,
                    "hardware" => OpalError::Hardware,
                    o => return Err(format!("opal {o:?}: expected parameter or hardware")),
                };
                m.env().fail_next_set_window(e);
                Outcome::Ok(String::new())
            }
            other => return Err(format!("{other} is not a powernv operation")),
        })
    }

    fn vfio(&mut self, step: &Step, iter: u64) -> Result<Outcome, String> {
        let World::PowerNv { m, vfio, .. } = &self.world else {
            return Err("needs a powernv machine".into());
        };
        let (m, vfio) = (m.clone(), vfio.clone());
        let mm = Mm(self.opt_num(step, "process", iter, DEFAULT_PROCESS)? as u32);
        let cfd = |e: &Engine| -> Result<ContainerFd, String> {
            Ok(ContainerFd(e.num(step, "container", iter)? as u32))
        };
        let gfd = |e: &Engine| -> Result<GroupFd, String> {
            Ok(GroupFd(e.num(step, "group", iter)? as u32))
        };
        let out = match step.op.name {
            "mmap" => {
                let ps = self.opt_num(step, "page_size", iter, 1 << 16)?;
                if !ps.is_power_of_two() {
                    return Err("page_size must be a power of two".into());
                }
                match vfio.mmap(mm, self.num(step, "size", iter)?, ps.trailing_zeros()) {
                    Ok(ua) => {
                        self.name_value(step, ua);
                        Outcome::Ok(format!("ua {ua:#x}"))
                    }
                    Err(e) => Outcome::Status(e.to_string(), String::new()),
                }
            }
            "vfio_register_device" => errno(vfio.register_device(Self::device(&m, step)?)),
            "vfio_open_container" => {
                let c = vfio.open_container();
                if let World::PowerNv { containers, .. } = &mut self.world {
                    containers.push(c);
                }
                self.name_value(step, u64::from(c.0));
                Outcome::Ok(format!("fd {}", c.0))
            }
            "vfio_open_group" => match vfio.open_group(Self::device(&m, step)?) {
                Ok(g) => {
                    self.name_value(step, u64::from(g.0));
                    Outcome::Ok(format!("fd {}", g.0))
                }
                Err(e) => Outcome::Status(e.to_string(), String::new()),
            },
            "vfio_set_container" => {
                let (g, c) = (gfd(self)?, cfd(self)?);
                errno(vfio.set_container(g, c))
            }
            "vfio_unset_container" => errno(vfio.unset_container(gfd(self)?)),
            "vfio_open_device" => errno(vfio.open_device(gfd(self)?, Self::device(&m, step)?)),
            "vfio_close_device" => errno(vfio.close_device(gfd(self)?)),
            "vfio_close_group" => errno(vfio.close_group(gfd(self)?)),
            "vfio_close_container" => errno(vfio.close_container(cfd(self)?)),
            "vfio_check_extension" => ioctl_outcome(vfio.ioctl_int(
                mm,
                cfd(self)?,
                ioctl::CHECK_EXTENSION,
                self.num(step, "arg", iter)?,
            )),
            "vfio_set_iommu" => ioctl_outcome(vfio.ioctl_int(
                mm,
                cfd(self)?,
                ioctl::SET_IOMMU,
                self.num(step, "type", iter)?,
            )),
            "vfio_enable" => ioctl_outcome(vfio.ioctl_int(mm, cfd(self)?, ioctl::ENABLE, 0)),
            "vfio_disable" => ioctl_outcome(vfio.ioctl_int(mm, cfd(self)?, ioctl::DISABLE, 0)),
            "vfio_get_info" => {
                let mut arg = encode::info(self.opt_num(step, "argsz", iter, 32)? as u32);
                let r = vfio.ioctl(mm, cfd(self)?, ioctl::SPAPR_TCE_GET_INFO, &mut arg);
                if r.is_ok() {
                    let mut named = Named::default();
                    named
                        .fields
                        .insert("flags", u64::from(encode::get32(&arg, 4)));
                    named
                        .fields
                        .insert("start", u64::from(encode::get32(&arg, 8)));
                    named
                        .fields
                        .insert("size", u64::from(encode::get32(&arg, 12)));
                    if arg.len() >= 32 {
                        named.fields.insert("pgsizes", encode::get64(&arg, 16));
                        named
                            .fields
                            .insert("max_windows", u64::from(encode::get32(&arg, 24)));
                        named
                            .fields
                            .insert("levels", u64::from(encode::get32(&arg, 28)));
                    }
                    named.primary = named.fields["size"];
                    let detail = format!(
                        "window 0 {:#x}+{:#x}, flags {:#x}",
                        named.fields["start"], named.fields["size"], named.fields["flags"]
                    );
                    self.name_result(step, named);
                    Outcome::Ok(detail)
                } else {
                    ioctl_outcome(r)
                }
            }
            "vfio_register_memory" | "vfio_unregister_memory" => {
                let mut arg = encode::register(
                    self.opt_num(step, "flags", iter, 0)? as u32,
                    self.num(step, "vaddr", iter)?,
                    self.num(step, "size", iter)?,
                );
                let nr = if step.op.name == "vfio_register_memory" {
                    ioctl::REGISTER_MEMORY
                } else {
                    ioctl::UNREGISTER_MEMORY
                };
                ioctl_outcome(vfio.ioctl(mm, cfd(self)?, nr, &mut arg))
            }
            "vfio_create_window" => {
                let ps = self.num(step, "page_size", iter)?;
                if !ps.is_power_of_two() {
                    return Err("page_size must be a power of two".into());
                }
                let mut arg = encode::create(
                    ps.trailing_zeros(),
                    self.num(step, "window_size", iter)?,
                    self.opt_num(step, "levels", iter, 1)? as u32,
                );
                encode::set_flags(&mut arg, self.opt_num(step, "flags", iter, 0)? as u32);
                let r = vfio.ioctl(mm, cfd(self)?, ioctl::TCE_CREATE, &mut arg);
                if r == Ok(0) {
                    let start = encode::get64(&arg, 32);
                    let mut named = Named {
                        primary: start,
                        ..Named::default()
                    };
                    named.fields.insert("start", start);
                    self.name_result(step, named);
                    Outcome::Ok(format!("start {start:#x}"))
                } else {
                    ioctl_outcome(r)
                }
            }
            "vfio_remove_window" => {
                let mut arg = encode::remove(self.num(step, "start", iter)?);
                encode::set_flags(&mut arg, self.opt_num(step, "flags", iter, 0)? as u32);
                ioctl_outcome(vfio.ioctl(mm, cfd(self)?, ioctl::TCE_REMOVE, &mut arg))
            }
            "vfio_map_dma" => {
                let flags = match Self::node(step, "flags").map(|n| &n.val) {
                    Some(Val::Str(s)) if s == "rw" => 3,
                    Some(Val::Str(s)) if s == "r" => 1,
                    Some(Val::Str(s)) if s == "w" => 2,
                    Some(_) => self.num(step, "flags", iter)?,
                    None => 3,
                };
                let mut arg = encode::map(
                    flags as u32,
                    self.num(step, "vaddr", iter)?,
                    self.num(step, "iova", iter)?,
                    self.num(step, "size", iter)?,
                );
                if Self::node(step, "argsz").is_some() {
                    encode::set_argsz(&mut arg, self.num(step, "argsz", iter)? as u32);
                }
                ioctl_outcome(vfio.ioctl(mm, cfd(self)?, ioctl::MAP_DMA, &mut arg))
            }
            "vfio_unmap_dma" => {
                let mut arg = encode::unmap(
                    self.opt_num(step, "flags", iter, 0)? as u32,
                    self.num(step, "iova", iter)?,
                    self.num(step, "size", iter)?,
                );
                if Self::node(step, "argsz").is_some() {
                    encode::set_argsz(&mut arg, self.num(step, "argsz", iter)? as u32);
                }
                ioctl_outcome(vfio.ioctl(mm, cfd(self)?, ioctl::UNMAP_DMA, &mut arg))
            }
            other => return Err(format!("{other} is not a VFIO operation")),
        };
        Ok(out)
    }

    fn papr(&mut self, step: &Step, iter: u64) -> Result<Outcome, String> {
        let World::PSeries { .. } = &self.world else {
            return Err("needs a pseries machine".into());
        };
        let num = |f: &str| self.num(step, f, iter);
        let out = match step.op.name {
            "h_put_tce" | "h_stuff_tce" | "h_put_tce_indirect" | "h_get_tce" | "hcall" => {
                let (code, args) = match step.op.name {
                    "h_put_tce" => (
                        opcode::H_PUT_TCE,
                        [num("liobn")?, num("ioba")?, num("tce")?, 0],
                    ),
                    "h_get_tce" => (opcode::H_GET_TCE, [num("liobn")?, num("ioba")?, 0, 0]),
                    "h_stuff_tce" => (
                        opcode::H_STUFF_TCE,
                        [num("liobn")?, num("ioba")?, num("tce")?, num("count")?],
                    ),
                    "h_put_tce_indirect" => (
                        opcode::H_PUT_TCE_INDIRECT,
                        [num("liobn")?, num("ioba")?, num("list")?, num("count")?],
                    ),
                    _ => {
                        let a = self.nums(step, "args")?;
                        let mut args = [0u64; 4];
                        for (d, s) in args.iter_mut().zip(a) {
                            *d = s;
                        }
                        (num("opcode")?, args)
                    }
                };
                let pr = Self::flag(step, "problem_state")?;
                let want = Self::node(step, "value")
                    .map(|_| num("value"))
                    .transpose()?;
                let World::PSeries { s, mem, trace, .. } = &mut self.world else {
                    return Err("needs a pseries machine".into());
                };
                let (st, r4) = s.hcall(mem, code, args, pr);
                if trace.len() < 10_000 {
                    trace.push(format!(
                        "hcall {code:#x} ({:#x}, {:#x}, {:#x}, {:#x}) -> {st}{}",
                        args[0],
                        args[1],
                        args[2],
                        args[3],
                        r4.map_or(String::new(), |v| format!(" r4={v:#x}"))
                    ));
                }
                match (st, want, r4) {
                    (HStatus::Success, Some(w), Some(v)) if w != v => {
                        Outcome::Mismatch(format!("r4 = {v:#x}, the file expects {w:#x}"))
                    }
                    (_, _, Some(v)) => {
                        self.name_value(step, v);
                        Outcome::Status(st.name().to_string(), format!("r4 {v:#x}"))
                    }
                    _ => Outcome::Status(st.name().to_string(), String::new()),
                }
            }
            "rtas" | "rtas_buffer" => {
                let args: Vec<u32> = self
                    .nums(step, "args")?
                    .into_iter()
                    .map(|a| a as u32)
                    .collect();
                let nret = self.opt_num(step, "nret", iter, 1)?;
                if nret > 16 {
                    return Err(format!(
                        "nret {nret}: an RTAS buffer holds at most 16 words"
                    ));
                }
                let nret = nret as u32;
                let want: Vec<u32> = self
                    .nums(step, "rets")?
                    .into_iter()
                    .map(|a| a as u32)
                    .collect();
                let call = if step.op.name == "rtas" {
                    Some(match Self::text(step, "call")? {
                        "query" => RtasCall::Query,
                        "create" => RtasCall::Create,
                        "remove" => RtasCall::Remove,
                        "reset" => RtasCall::Reset,
                        o => {
                            return Err(format!(
                                "call {o:?}: expected query, create, remove or reset"
                            ))
                        }
                    })
                } else {
                    None
                };
                let buffer = if call.is_none() {
                    Some((
                        self.num(step, "addr", iter)?,
                        self.num(step, "token", iter)? as u32,
                    ))
                } else {
                    None
                };
                let World::PSeries { s, mem, trace, .. } = &mut self.world else {
                    return Err("needs a pseries machine".into());
                };
                let (status, rets) = match (call, buffer) {
                    (Some(call), _) => {
                        let rets = s.rtas(call, &args, nret);
                        trace.push(format!("RTAS {call:?} {args:x?} -> {rets:x?}"));
                        (rtas_name(rets.first().copied().unwrap_or(0)), rets)
                    }
                    (None, Some((addr, tok))) => {
                        let (st, rets) = s
                            .rtas_through_buffer(mem, addr, tok, &args, nret)
                            .ok_or("RTAS buffer outside guest RAM")?;
                        trace.push(format!(
                            "KVMPPC_H_RTAS token {tok:#x} -> {st}, rets {rets:x?}"
                        ));
                        (st.name().to_string(), rets)
                    }
                    (None, None) => return Err("rtas needs a call or a buffer".into()),
                };
                let mut named = Named {
                    primary: u64::from(rets.first().copied().unwrap_or(0)),
                    ..Named::default()
                };
                let names = ["status", "r1", "r2", "r3", "r4", "r5"];
                for (n, r) in names.iter().zip(&rets) {
                    named.fields.insert(n, u64::from(*r));
                }
                if rets.len() == 4 && rets[0] == 0 {
                    named.fields.insert("liobn", u64::from(rets[1]));
                    named
                        .fields
                        .insert("start", (u64::from(rets[2]) << 32) | u64::from(rets[3]));
                }
                self.name_result(step, named);
                let shown: Vec<String> = rets.iter().map(|r| format!("{r:#x}")).collect();
                if !want.is_empty() && want != rets {
                    let w: Vec<String> = want.iter().map(|r| format!("{r:#x}")).collect();
                    Outcome::Mismatch(format!(
                        "rets [{}], the file expects [{}]",
                        shown.join(", "),
                        w.join(", ")
                    ))
                } else {
                    Outcome::Status(status, format!("rets [{}]", shown.join(", ")))
                }
            }
            "guest_write" | "guest_read" => {
                let addr = num("addr")?;
                let bytes = if Self::node(step, "u64be").is_some() {
                    self.nums(step, "u64be")?
                        .iter()
                        .flat_map(|v| v.to_be_bytes())
                        .collect()
                } else if Self::node(step, "u32be").is_some() {
                    self.nums(step, "u32be")?
                        .iter()
                        .flat_map(|v| (*v as u32).to_be_bytes())
                        .collect()
                } else {
                    Self::data(step, "data")?
                };
                let World::PSeries { mem, .. } = &self.world else {
                    return Err("needs a pseries machine".into());
                };
                if step.op.name == "guest_write" {
                    match mem.write_slice(&bytes, GuestAddress(addr)) {
                        Ok(()) => Outcome::Ok(String::new()),
                        Err(e) => Outcome::Error(e.to_string()),
                    }
                } else {
                    let mut got = vec![0u8; bytes.len()];
                    match mem.read_slice(&mut got, GuestAddress(addr)) {
                        Ok(()) => compare(&got, Some(&bytes)),
                        Err(e) => Outcome::Error(e.to_string()),
                    }
                }
            }
            "machine_reset" => {
                let World::PSeries { s, guest, .. } = &mut self.world else {
                    return Err("needs a pseries machine".into());
                };
                s.reset();
                *guest = LinuxGuestDdw::new(default_scratch(s.ram_size()), false);
                Outcome::Ok(String::new())
            }
            "linux_dma_map" | "linux_dma_unmap" => {
                let phb = self.opt_num(step, "phb", iter, 0)? as usize;
                let size = self.num(step, "size", iter)?;
                let map = step.op.name == "linux_dma_map";
                let at = self.num(step, if map { "gpa" } else { "dma" }, iter)?;
                // pSeries' tce_build: R always, W unless the device only reads.
                let to_device = Self::dir(step)? == DmaDirection::ToDevice;
                let World::PSeries { s, mem, guest, .. } = &mut self.world else {
                    return Err("needs a pseries machine".into());
                };
                let r = if map {
                    guest.dma_map_default(s, mem, phb, at, size, to_device)
                } else {
                    guest.dma_unmap_default(s, mem, phb, at, size).map(|()| 0)
                };
                match r {
                    Ok(bus) if map => {
                        let mut named = Named {
                            primary: bus,
                            ..Named::default()
                        };
                        named.fields.insert("dma", bus);
                        self.name_result(step, named);
                        Outcome::Ok(format!("dma {bus:#x}"))
                    }
                    Ok(_) => Outcome::Ok(String::new()),
                    Err(DdwError::Hcall { call, status }) => {
                        Outcome::Status(status.name().to_string(), call.to_string())
                    }
                    Err(e) => Outcome::Status("refused".into(), e.to_string()),
                }
            }
            "linux_enable_ddw" => {
                let World::PSeries { s, .. } = &self.world else {
                    return Err("needs a pseries machine".into());
                };
                let machine_ram = s.ram_size();
                let phb = self.opt_num(step, "phb", iter, 0)?;
                let cfg = self.opt_num(step, "cfg", iter, 1 << 16)?;
                let ram = self.opt_num(step, "ram", iter, machine_ram)?;
                if ram > machine_ram.saturating_mul(4) {
                    // Bounds what one step may map: a guest that believes in more RAM
                    // than it has is a test of failure paths, not of size.
                    return Err(format!(
                        "ram {ram:#x}: at most 4 x the machine's RAM ({machine_ram:#x})"
                    ));
                }
                let max_memory = self.opt_num(step, "max_memory", iter, ram)?;
                let max_bound = machine_ram.saturating_mul(4).max(1 << 40);
                if max_memory > max_bound {
                    // Bounds the clear of a table-backed window the step may make.
                    return Err(format!(
                        "max_memory {max_memory:#x}: at most {max_bound:#x} (1 TiB or 4 x the machine's RAM)"
                    ));
                }
                // The device's DMA mask in bits, as elsewhere in scenario files.
                let bits = self.opt_num(step, "dma_mask", iter, 64)?;
                if !(1..=64).contains(&bits) {
                    return Err(format!("dma_mask {bits}: a width from 1 to 64 bits"));
                }
                let dma_mask = u64::MAX >> (64 - bits);
                let scratch = match Self::node(step, "scratch") {
                    Some(_) => {
                        let at = self.num(step, "scratch", iter)?;
                        GuestScratch {
                            rtas: at,
                            list: at.saturating_add(0x1000),
                        }
                    }
                    None => default_scratch(machine_ram),
                };
                let World::PSeries {
                    s,
                    mem,
                    trace,
                    guest,
                    ..
                } = &mut self.world
                else {
                    return Err("needs a pseries machine".into());
                };
                guest.set_scratch(scratch);
                let req = DdwRequest {
                    max_memory,
                    dma_mask,
                    ..DdwRequest::new(phb as usize, cfg as u32, ram)
                };
                let mut calls = Vec::new();
                let r = guest.enable_ddw_observed(s, mem, &req, &mut |c| {
                    calls.push(guest_call_line(c));
                });
                // One trace line per run of calls of one kind (a clear is many H_STUFF_TCE).
                let mut k = 0;
                while k < calls.len() {
                    let n = calls[k..].iter().take_while(|c| c.0 == calls[k].0).count();
                    let more = if n > 1 {
                        format!(" (and {} more like it)", n - 1)
                    } else {
                        String::new()
                    };
                    trace.push(format!("  guest kernel: {}{more}", calls[k].1));
                    k += n;
                }
                trace.push(format!("linux enable_ddw phb {phb} cfg {cfg:#x} -> {r:x?}"));
                match r {
                    Ok(w) => {
                        let mut named = Named {
                            primary: u64::from(w.liobn),
                            ..Named::default()
                        };
                        named.fields.insert("liobn", u64::from(w.liobn));
                        named.fields.insert("start", w.start);
                        named.fields.insert("page_shift", u64::from(w.page_shift));
                        named
                            .fields
                            .insert("window_shift", u64::from(w.window_shift));
                        named.fields.insert("direct", u64::from(w.direct));
                        named
                            .fields
                            .insert("removed_default", u64::from(w.removed_default));
                        self.name_result(step, named);
                        Outcome::Ok(format!(
                            "liobn {:#x} at {:#x}, {} pages, {}{}{}",
                            w.liobn,
                            w.start,
                            size(1u64 << w.page_shift),
                            size(1u64 << w.window_shift),
                            if w.direct { ", direct" } else { ", table" },
                            if w.removed_default {
                                ", default window removed"
                            } else {
                                ""
                            }
                        ))
                    }
                    Err(DdwError::Hcall { call, status }) => {
                        Outcome::Status(status.name().to_string(), call.to_string())
                    }
                    Err(DdwError::Rtas { call, status }) => {
                        Outcome::Status(rtas_name(status as u32), call.to_string())
                    }
                    Err(DdwError::Scratch) => {
                        return Err(format!(
                            "the guest's scratch pages ({:#x}, {:#x}) are not in guest RAM",
                            scratch.rtas, scratch.list
                        ))
                    }
                    Err(e) => Outcome::Status("refused".into(), e.to_string()),
                }
            }
            "save_phb" => {
                let phb = num("phb")?;
                let World::PSeries { s, saved, .. } = &mut self.world else {
                    return Err("needs a pseries machine".into());
                };
                match s.save_phb(phb as usize) {
                    Ok(b) => {
                        let len = b.len();
                        saved.insert(phb, b);
                        Outcome::Ok(format!("{len} bytes"))
                    }
                    Err(e) => Outcome::Error(e.to_string()),
                }
            }
            "restore_phb" => {
                let (phb, from) = (num("phb")?, num("from")?);
                let World::PSeries { s, saved, .. } = &mut self.world else {
                    return Err("needs a pseries machine".into());
                };
                let bytes = saved
                    .get(&from)
                    .cloned()
                    .ok_or("nothing saved from that PHB")?;
                match s.restore_phb(phb as usize, &bytes) {
                    Ok(()) => Outcome::Ok(String::new()),
                    Err(e) => Outcome::Error(e.to_string()),
                }
            }
            "device_read" | "device_write" => {
                let phb = self.opt_num(step, "phb", iter, 0)? as usize;
                let addr = num("addr")?;
                let World::PSeries { s, mem, .. } = &self.world else {
                    return Err("needs a pseries machine".into());
                };
                let iommu = s.phb_iommu(phb).ok_or("no such PHB")?;
                let dma = IommuMemory::new(mem.clone(), iommu, true, ());
                if step.op.name == "device_write" {
                    match dma.write_slice(&Self::data(step, "data")?, GuestAddress(addr)) {
                        Ok(()) => Outcome::Ok(String::new()),
                        Err(e) => Outcome::Status("fault".into(), e.to_string()),
                    }
                } else {
                    let want = Self::node(step, "data")
                        .map(|_| Self::data(step, "data"))
                        .transpose()?;
                    let len = match &want {
                        Some(d) => d.len() as u64,
                        None => self.opt_num(step, "len", iter, 8)?,
                    };
                    let mut got = vec![0u8; len.min(1 << 20) as usize];
                    match dma.read_slice(&mut got, GuestAddress(addr)) {
                        Ok(()) => compare(&got, want.as_deref()),
                        Err(e) => Outcome::Status("fault".into(), e.to_string()),
                    }
                }
            }
            other => return Err(format!("{other} is not a pseries operation")),
        };
        Ok(out)
    }

    // ---- state, checks, trace ----

    /// The checks that do not hold now.
    fn failed_checks(&self) -> impl Iterator<Item = CheckReport> {
        self.checks().into_iter().filter(|c| !c.held)
    }

    fn checks(&self) -> Vec<CheckReport> {
        match &self.world {
            World::PowerNv { m, .. } => {
                let v = m.check();
                let groups = m.core().groups().len();
                RULES
                    .iter()
                    .map(|name| {
                        let hits: Vec<String> = v
                            .iter()
                            .filter(|x| rule_name(x.rule) == *name)
                            .map(|x| x.to_string())
                            .collect();
                        CheckReport {
                            name: (*name).to_string(),
                            held: hits.is_empty(),
                            detail: if hits.is_empty() {
                                format!("holds for {groups} groups")
                            } else {
                                hits.join("; ")
                            },
                        }
                    })
                    .collect()
            }
            World::PSeries { s, .. } => {
                // The library's checker, one report per rule.
                let found = s.check();
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
                    .collect()
            }
        }
    }

    fn trace(&self) -> Vec<String> {
        match &self.world {
            World::PowerNv { m, .. } => {
                m.flush();
                m.core()
                    .take_trace()
                    .iter()
                    .map(|e| e.to_string())
                    .collect()
            }
            World::PSeries { trace, .. } => trace.clone(),
        }
    }

    fn state(&self) -> Node {
        match &self.world {
            World::PowerNv {
                m,
                vfio,
                containers,
                ..
            } => powernv_tree(m, vfio, containers),
            World::PSeries { s, guest, .. } => pseries_tree(s, guest),
        }
    }
}

fn rtas_name(w: u32) -> String {
    match w as i32 {
        0 => "RTAS_SUCCESS",
        -1 => "RTAS_HARDWARE_ERROR",
        -2 => "RTAS_BUSY",
        -3 => "RTAS_PARAMETER_ERROR",
        _ => "RTAS_UNKNOWN",
    }
    .to_string()
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

fn size(n: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (1 << 40, "T"),
        (1 << 30, "G"),
        (1 << 20, "M"),
        (1 << 10, "K"),
    ];
    for (u, s) in UNITS {
        if n >= u && n % u == 0 {
            return format!("{}{s}", n / u);
        }
    }
    format!("{n:#x}")
}

fn bytes(n: u64) -> String {
    if n < 1024 {
        format!("{n} B")
    } else if n < 1 << 20 {
        format!("{:.1} KiB", n as f64 / 1024.0)
    } else {
        format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64)
    }
}

fn perm(bits: u64) -> &'static str {
    match bits & 3 {
        1 => "R",
        2 => "W",
        3 => "RW",
        _ => "-",
    }
}

fn powernv_tree(m: &PowerNv, vfio: &Vfio, containers: &[ContainerFd]) -> Node {
    let mut phbs = Vec::new();
    for phb in m.snapshot() {
        let mut pes = Vec::new();
        for pe in &phb.pes {
            let mut kids = Vec::new();
            for (name, addr, driver, has_table, bypass) in &pe.devices {
                kids.push(Node::leaf(format!(
                    "device {name} {addr}, driver {}, kernel DMA {}",
                    driver.as_deref().unwrap_or("none"),
                    if *bypass {
                        "direct (bypass)"
                    } else if *has_table {
                        "via window 0"
                    } else {
                        "none"
                    }
                )));
            }
            for w in &pe.windows {
                let runs: Vec<Node> = w
                    .runs
                    .iter()
                    .take(8)
                    .map(|r| {
                        let ps = w.page_size;
                        let iova = (r.first.0) * ps;
                        Node::leaf(format!(
                            "{iova:#x}+{} -> {:#x} {}",
                            size(r.count * ps),
                            r.tce.page_addr(ps.trailing_zeros()),
                            perm(r.tce.0)
                        ))
                    })
                    .chain(
                        (w.runs.len() > 8)
                            .then(|| Node::leaf(format!("... {} more runs", w.runs.len() - 8))),
                    )
                    .collect();
                kids.push(Node::new(
                    format!(
                        "window {} TVE#{} {:#x}+{}, {} pages, {} level{}, {} table, {} of TCE levels",
                        w.num,
                        w.tve,
                        w.start,
                        size(w.size),
                        size(w.page_size),
                        w.levels,
                        if w.levels == 1 { "" } else { "s" },
                        if w.kernel { "kernel" } else { "user" },
                        bytes(w.table_bytes)
                    ),
                    runs,
                ));
            }
            kids.push(Node::leaf(match pe.tve1 {
                Tve1::Bypass { size: s } => format!(
                    "TVE#{} bypass {:#x}+{} -> all RAM",
                    pe.number * 2 + 1,
                    BYPASS_BASE,
                    size(s)
                ),
                Tve1::Off => format!("TVE#{} off", pe.number * 2 + 1),
                Tve1::Table => format!("TVE#{} window 1", pe.number * 2 + 1),
            }));
            let owner = match pe.owner {
                Some(o) => format!("user {:#x}", o.0),
                None => "kernel".into(),
            };
            pes.push(Node::new(
                format!(
                    "PE {} group {} [{}] owner {owner} (owner_cnt {}), kills {} range / {} PE-wide",
                    pe.number,
                    pe.group.as_deref().unwrap_or("none"),
                    pe.domain
                        .map_or("no domain".into(), |d: DomainType| d.to_string()),
                    pe.owner_cnt,
                    pe.kills.0,
                    pe.kills.1
                ),
                kids,
            ));
        }
        phbs.push(Node::new(
            format!("PHB {} ({}, {})", phb.index, phb.model.name(), phb.iommu),
            pes,
        ));
    }
    for c in containers {
        let wins = vfio.windows(*c);
        if wins.is_empty() && !vfio.default_window_pending(*c) {
            continue;
        }
        phbs.push(Node::new(
            format!(
                "VFIO container fd {}{}",
                c.0,
                if vfio.default_window_pending(*c) {
                    " (default window pending)"
                } else {
                    ""
                }
            ),
            wins.iter()
                .map(|w| {
                    Node::leaf(format!(
                        "window {} {:#x}+{}, {} pages, {} level{}, {} TCEs mapped",
                        w.num,
                        w.start,
                        size(w.size),
                        size(w.page_size),
                        w.levels,
                        if w.levels == 1 { "" } else { "s" },
                        w.mapped
                    ))
                })
                .collect(),
        ));
    }
    Node::new(
        format!(
            "PowerNV machine: {} PHBs, {} RAM, {} host pages, design {}",
            m.phbs().len(),
            size(m.ram().size()),
            size(1 << m.env().host_page_shift),
            m.design().name()
        ),
        phbs,
    )
}

fn pseries_tree(s: &Spapr, guest: &LinuxGuestDdw) -> Node {
    let mut kids = Vec::new();
    for p in s.phbs() {
        let mut wins = Vec::new();
        for sl in p.windows() {
            let label = match &sl.table {
                Some(t) => {
                    let ps = 1u64 << t.page_shift();
                    let runs: Vec<Node> = t
                        .mapped_runs()
                        .iter()
                        .take(8)
                        .map(|r| {
                            Node::leaf(format!(
                                "{:#x}+{} -> {:#x} {}",
                                r.first.0 * ps,
                                size(r.count * ps),
                                r.tce.0 & !(ps - 1),
                                perm(r.tce.0)
                            ))
                        })
                        .collect();
                    wins.push(Node::new(
                        format!(
                            "LIOBN {:#x}: {:#x}+{}, {} pages, {} entries{}",
                            sl.liobn,
                            t.bus_offset(),
                            size(t.nb_table() * ps),
                            size(ps),
                            t.nb_table(),
                            if sl.def_win { ", def_win" } else { "" }
                        ),
                        runs,
                    ));
                    continue;
                }
                None => format!(
                    "LIOBN {:#x}: disabled{}",
                    sl.liobn,
                    if sl.def_win { " (def_win)" } else { "" }
                ),
            };
            wins.push(Node::leaf(label));
        }
        // What the guest kernel's enable_ddw made of this PHB, if it ran.
        let kernel = match guest.window(p.buid()) {
            Some(w) => format!(
                "; guest kernel: DDW liobn {:#x}{}",
                w.liobn,
                if w.direct { " direct" } else { " table" }
            ),
            None if guest.failed(p.buid()) => "; guest kernel: DDW failed".to_string(),
            None => String::new(),
        };
        kids.push(Node::new(
            format!(
                "PHB {} BUID {:#x}, DDW {}{kernel}",
                p.config().index,
                p.buid(),
                if p.config().ddw { "on" } else { "off" }
            ),
            wins,
        ));
    }
    for v in s.vio() {
        kids.push(Node::leaf(format!(
            "VIO {:#x}: 0x0+{}, 4K pages, {} TCEs mapped",
            v.config().reg,
            size(v.config().window_size),
            v.table().count_mapped()
        )));
    }
    Node::new(
        format!(
            "pSeries guest: {} RAM, profile {}",
            size(s.ram_size()),
            s.profile().name()
        ),
        kids,
    )
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
        Err(e) if e.line >= 1 && e.line <= lines + 1 && e.col >= 1 => Ok(()),
        Err(e) => Err(format!("error outside the file: {e}")),
    }
}

/// One call the guest kernel made: its kind (for grouping) and a trace line.
fn guest_call_line(c: &GuestCall<'_>) -> (&'static str, String) {
    match *c {
        GuestCall::Hcall { name, args, status } => (
            name,
            format!(
                "{name}(liobn {:#x}, ioba {:#x}, {:#x}, {}) -> {status}",
                args[0], args[1], args[2], args[3]
            ),
        ),
        GuestCall::Rtas {
            name, args, rets, ..
        } => (name, format!("{name}{args:x?} -> {rets:x?}")),
    }
}

/// Where the simulated guest kernel keeps its RTAS buffer and TCE list by default: the
/// last two 4 KiB pages of its RAM.
fn default_scratch(ram: u64) -> GuestScratch {
    let top = ram & !0xfff;
    GuestScratch {
        rtas: top.saturating_sub(0x2000),
        list: top.saturating_sub(0x1000),
    }
}
