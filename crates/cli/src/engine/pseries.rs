//! pSeries steps: hypercalls, RTAS, guest memory and the simulated guest kernel.

use super::*;
use spapr_papr::eeh::token as eeh_token;

impl Engine {
    pub(super) fn papr(&mut self, step: &Step, iter: u64) -> Result<Outcome, String> {
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
                let World::PSeries {
                    s,
                    mem,
                    trace,
                    trace_dropped,
                    ..
                } = &mut self.world
                else {
                    return Err("needs a pseries machine".into());
                };
                let (st, r4) = s.hcall(mem, code, args, pr);
                if trace.len() >= 4096 {
                    *trace_dropped += 1;
                } else {
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
                compare_rets(status, &rets, &want)
            }
            "rtas_eeh" => self.rtas_eeh(step, iter)?,
            "host_dma" | "host_mmio_read" => self.host_access(step, iter)?,
            "guest_write" | "guest_read" => {
                let addr = num("addr")?;
                if step.op.name == "guest_read" && Self::node(step, "words").is_some() {
                    return self.guest_read_words(step, iter, addr);
                }
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
}

fn rtas_name(w: u32) -> String {
    match w as i32 {
        0 => "RTAS_SUCCESS",
        -1 => "RTAS_HARDWARE_ERROR",
        -2 => "RTAS_BUSY",
        -3 => "RTAS_PARAMETER_ERROR",
        1 => "RTAS_NO_ERRORS_FOUND",
        _ => "RTAS_UNKNOWN",
    }
    .to_string()
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
pub(super) fn default_scratch(ram: u64) -> GuestScratch {
    let top = ram & !0xfff;
    GuestScratch {
        rtas: top.saturating_sub(0x2000),
        list: top.saturating_sub(0x1000),
    }
}

/// Names a `guest_read` may give its words: `$x` is word 0, `$x.w1` the next, ….
pub(crate) const WORD_NAMES: [&str; 8] = ["w0", "w1", "w2", "w3", "w4", "w5", "w6", "w7"];

impl Engine {
    /// `guest_read` with `words = N`: N big-endian 64-bit words of guest memory, named
    /// by `as` (the first is the value itself, each is `.wK`), and compared with `u64be`
    /// when given.
    fn guest_read_words(&mut self, step: &Step, iter: u64, addr: u64) -> Result<Outcome, String> {
        let n = self.num(step, "words", iter)?;
        if !(1..=WORD_NAMES.len() as u64).contains(&n) {
            return Err(format!(
                "words {n}: a read names 1 to {} words",
                WORD_NAMES.len()
            ));
        }
        let World::PSeries { mem, .. } = &self.world else {
            return Err("needs a pseries machine".into());
        };
        let mut got = vec![0u8; n as usize * 8];
        mem.read_slice(&mut got, GuestAddress(addr))
            .map_err(|e| e.to_string())?;
        let words: Vec<u64> = got
            .chunks_exact(8)
            .map(|c| {
                let mut w = [0u8; 8];
                w.copy_from_slice(c);
                u64::from_be_bytes(w)
            })
            .collect();
        let mut named = Named {
            primary: words[0],
            ..Named::default()
        };
        for (k, w) in WORD_NAMES.iter().zip(&words) {
            named.fields.insert(k, *w);
        }
        self.name_result(step, named);
        let shown: Vec<String> = words.iter().map(|w| format!("{w:#x}")).collect();
        if Self::node(step, "u64be").is_some() {
            let want = self.nums(step, "u64be")?;
            if want != words {
                return Ok(Outcome::Mismatch(format!(
                    "read [{}], the file expects {want:#x?}",
                    shown.join(", ")
                )));
            }
        }
        Ok(Outcome::Ok(format!("read [{}]", shown.join(", "))))
    }
}

/// An RTAS call's outcome: its status and return words, or a mismatch with the words the
/// file expects (none: any).
fn compare_rets(status: String, rets: &[u32], want: &[u32]) -> Outcome {
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

/// The EEH RTAS calls by name: (token, default nret).
const EEH_CALLS: [(&str, u32, u32); 6] = [
    ("set_eeh_option", eeh_token::SET_EEH_OPTION, 1),
    ("get_config_addr_info2", eeh_token::GET_CONFIG_ADDR_INFO2, 2),
    (
        "read_slot_reset_state2",
        eeh_token::READ_SLOT_RESET_STATE2,
        4,
    ),
    ("set_slot_reset", eeh_token::SET_SLOT_RESET, 1),
    ("configure_pe", eeh_token::CONFIGURE_PE, 1),
    ("slot_error_detail", eeh_token::SLOT_ERROR_DETAIL, 1),
];

/// The names `rtas_eeh` takes in `call`.
pub(crate) fn eeh_call_names() -> impl Iterator<Item = &'static str> {
    EEH_CALLS.iter().map(|c| c.0)
}

impl Engine {
    /// `rtas_eeh`: the call's arguments built the way the guest kernel builds them
    /// (config address, the PHB's BUID, then the call's own word), answered by
    /// `Spapr::rtas_eeh`.
    fn rtas_eeh(&mut self, step: &Step, iter: u64) -> Result<Outcome, String> {
        let name = Self::text(step, "call")?;
        let (_, tok, default_nret) = EEH_CALLS
            .iter()
            .find(|c| c.0 == name)
            .copied()
            .ok_or_else(|| format!("unknown EEH call {name:?}"))?;
        let word = |e: &Self, f: &str, d: u64| -> Result<u32, String> {
            let v = e.opt_num(step, f, iter, d)?;
            u32::try_from(v).map_err(|_| format!("{f} {v:#x} does not fit in an RTAS word"))
        };
        let phb = self.opt_num(step, "phb", iter, 0)?;
        let addr = word(self, "addr", 0)?;
        let extra = match tok {
            eeh_token::SET_EEH_OPTION | eeh_token::SET_SLOT_RESET => {
                vec![word(self, "option", 0)?]
            }
            eeh_token::GET_CONFIG_ADDR_INFO2 => vec![word(self, "function", 0)?],
            eeh_token::SLOT_ERROR_DETAIL => vec![0, 0, 0, 0, word(self, "severity", 1)?],
            _ => Vec::new(),
        };
        let nret = word(self, "nret", u64::from(default_nret))?;
        let want: Vec<u32> = self
            .nums(step, "rets")?
            .into_iter()
            .map(|a| a as u32)
            .collect();
        let World::PSeries { s, trace, .. } = &mut self.world else {
            return Err("needs a pseries machine".into());
        };
        let buid = usize::try_from(phb)
            .ok()
            .and_then(|i| s.phbs().get(i))
            .ok_or_else(|| format!("the guest has no PHB {phb}"))?
            .buid();
        let mut args = vec![addr, (buid >> 32) as u32, buid as u32];
        args.extend(extra);
        let rets = s.rtas_eeh(tok, &args, nret).ok_or("not an EEH call")?;
        trace.push(format!(
            "RTAS ibm,{} {args:x?} -> {rets:x?}",
            name.replace('_', "-")
        ));
        let status = rtas_name(rets.first().copied().unwrap_or(0));
        let mut named = Named {
            primary: u64::from(rets.first().copied().unwrap_or(0)),
            ..Named::default()
        };
        for (n, r) in ["status", "r1", "r2", "r3", "r4"].iter().zip(&rets) {
            named.fields.insert(n, u64::from(*r));
        }
        self.name_result(step, named);
        Ok(compare_rets(status, &rets, &want))
    }

    /// `host_dma` / `host_mmio_read`: a passed-through device's access as the host's PHB
    /// sees it.
    fn host_access(&mut self, step: &Step, iter: u64) -> Result<Outcome, String> {
        let World::PSeries { host: Some(h), .. } = &self.world else {
            return Err(
                "no device of this guest is passed through (a [[machine.phb]] vfio)".into(),
            );
        };
        let m = h.machine().clone();
        let name = Self::text(step, "device")?;
        let passed = h.backends.iter().any(|(_, b)| b.passes(name));
        let d = m
            .device(name)
            .filter(|_| passed)
            .ok_or_else(|| format!("{name:?} is not passed to this guest"))?;
        if step.op.name == "host_mmio_read" {
            // The register reads 0 unless frozen; `value` is what the file expects.
            let v = m.device_mmio_read(d, 0).map_err(|e| e.to_string())?;
            self.name_value(step, v);
            return Ok(match Self::node(step, "value") {
                Some(_) if self.num(step, "value", iter)? != v => Outcome::Mismatch(format!(
                    "read {v:#x}, the file expects {:#x}",
                    self.num(step, "value", iter)?
                )),
                _ => Outcome::Ok(format!("read {v:#x}")),
            });
        }
        let addr = self.num(step, "addr", iter)?;
        let access = match Self::node(step, "dir")
            .map(|_| Self::text(step, "dir"))
            .transpose()?
        {
            None | Some("read") => spapr_tce::Access::Read,
            Some("write") => spapr_tce::Access::Write,
            Some(o) => return Err(format!("dir {o:?}: expected read or write")),
        };
        Ok(match m.device_translate(d, addr, access) {
            Ok(hpa) => Outcome::Ok(format!("host address {hpa:#x}")),
            Err(f) => Outcome::Status("fault".into(), f.to_string()),
        })
    }
}
