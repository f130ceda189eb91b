//! The bodies of the hypercall and RTAS fuzz targets (`cargo fuzz run -s none hcalls`,
//! `... rtas_buffer`), kept in the library so that the tests replay every saved input.
//! Each returns the property that broke, never panics on its own.

use crate::check::PseriesRule;
use crate::{opcode, HStatus, Profile, RtasCall, Spapr, SpaprConfig};
use vm_memory::iommu::Iommu;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap, Permissions};

/// Guest RAM of the fuzzed hypercalls: 1 MiB, so addresses past it are easy to reach.
const RAM: u64 = 1 << 20;
/// Guest RAM of the fuzzed RTAS buffers: 64 KiB, compared whole after every call.
const RTAS_RAM: u64 = 64 << 10;

fn guest(profile: Profile, ram: u64) -> Result<(Spapr, GuestMemoryMmap), String> {
    let s = Spapr::new(SpaprConfig {
        profile,
        ram_size: ram,
        ..SpaprConfig::default()
    })
    .map_err(|e| e.to_string())?;
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), ram as usize)])
        .map_err(|e| e.to_string())?;
    Ok((s, mem))
}

/// Reads little-endian words off the input; zero past its end.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn u8(&mut self) -> u8 {
        let (b, rest) = self.0.split_first().map_or((0, &[][..]), |(b, r)| (*b, r));
        self.0 = rest;
        b
    }
    fn u64(&mut self) -> u64 {
        let mut v = [0u8; 8];
        for b in &mut v {
            *b = self.u8();
        }
        u64::from_le_bytes(v)
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Registers steered towards what matters: a LIOBN of the guest (or raw), a bus address
/// near a window (or raw), a TCE into RAM (or raw), a count near 512 (or raw).
fn steer(sel: u8, raw: u64, choices: &[u64]) -> u64 {
    if sel & 0x80 != 0 || choices.is_empty() {
        raw
    } else {
        choices[sel as usize % choices.len()].wrapping_add(raw & 0xffff)
    }
}

/// A window change made the same way on a guest and its twin: a PHB reset, a DDW made by
/// RTAS, the DDW removed, or the PHB restored to the state `saved` (new tables, same
/// LIOBNs). Returns the RTAS return words (none for the reset; for the restore, 0 or 1 as
/// it failed or not).
fn change_windows(s: &Spapr, which: u8, saved: &[u8]) -> Vec<u32> {
    let buid = s.phbs().first().map_or(0, |p| p.buid());
    match which % 4 {
        0 => {
            s.reset_phb(0);
            Vec::new()
        }
        1 => s.rtas(
            RtasCall::Create,
            &[0, (buid >> 32) as u32, buid as u32, 12, 16],
            4,
        ),
        2 => s.rtas(RtasCall::Remove, &[0x8000_0001], 1),
        _ => vec![u32::from(s.restore_phb(0, saved).is_ok())],
    }
}

/// Raw hypercalls (opcode and four argument registers, some steered to valid values)
/// against a guest in the profile the first byte picks, and window changes. After every
/// call: the status is one the call may return, H_GET_TCE of an entry KVM or LoPAR just
/// stored reads it back, a device translation of the address agrees with the table, and
/// the pSeries rules hold. A twin guest gets the same calls through a vCPU handle
/// ([`crate::Vcpu`], no lock) and must answer each exactly as the locked calls do, and end
/// with the same windows and entries.
pub fn hcalls(data: &[u8]) -> Result<(), String> {
    let mut inp = Input(data);
    let profile = Profile::ALL[inp.u8() as usize % 3];
    let (s, mem) = guest(profile, RAM)?;
    let (twin, twin_mem) = guest(profile, RAM)?;
    let mut vcpu = twin.vcpu();
    let saved = s.save_phb(0).map_err(|e| e.to_string())?;
    let iommu = s.phb_iommu(0).ok_or("no PHB")?;
    let liobns = [0x8000_0000, 0x8000_0001, 0x2000, 0x8000_0100];
    let iobas = [0, 0x1000, 0x3FFF_F000, 0x0800_0000_0000_0000];
    let tces = [0x1003, 0x2001, 0xF_F002, RAM | 3, 0];
    let mut calls = 0;
    while !inp.is_empty() && calls < 64 {
        calls += 1;
        let sel = inp.u8();
        let op = match sel & 7 {
            0 => opcode::H_GET_TCE,
            1 => opcode::H_PUT_TCE,
            2 => opcode::H_STUFF_TCE,
            3 => opcode::H_PUT_TCE_INDIRECT,
            4 => opcode::KVMPPC_H_RTAS,
            5 => {
                let which = inp.u8();
                let (a, b) = (
                    change_windows(&s, which, &saved),
                    change_windows(&twin, which, &saved),
                );
                if a != b {
                    return Err(format!(
                        "window change {which}: {a:x?} and, on the twin, {b:x?}"
                    ));
                }
                continue;
            }
            _ => inp.u64(),
        };
        let problem = sel & 8 != 0;
        let (s0, s1, s2, s3) = (inp.u8(), inp.u8(), inp.u8(), inp.u8());
        let args = [
            steer(s0, inp.u64(), &liobns),
            steer(s1, inp.u64(), &iobas) & !(if s1 & 0x40 == 0 { 0xfff } else { 0 }),
            steer(s2, inp.u64(), &tces),
            steer(s3, inp.u64() & 0x3ff, &[1, 16, 512, 513]),
        ];
        // A list for H_PUT_TCE_INDIRECT at the page it names, if that is in RAM.
        if op == opcode::H_PUT_TCE_INDIRECT && args[2] < RAM {
            for i in 0..(args[3].min(512)) {
                for m in [&mem, &twin_mem] {
                    let _ = m.write_obj(
                        (tces[(i % 5) as usize] + (i << 12)).to_be(),
                        GuestAddress((args[2] & !0xfff) + 8 * i),
                    );
                }
            }
        }
        let (st, r4) = s.hcall(&mem, op, args, problem);
        let (vst, vr4) = vcpu.hcall(&twin_mem, op, args, problem);
        if (st, r4) != (vst, vr4) {
            return Err(format!(
                "opcode {op:#x} {args:x?}: {st} {r4:x?} locked, {vst} {vr4:x?} through a vCPU handle"
            ));
        }
        if problem && st != HStatus::Privilege {
            return Err(format!("problem state answered {st}"));
        }
        if op == opcode::H_GET_TCE && st == HStatus::Success && r4.is_none() {
            return Err("H_GET_TCE succeeded without r4".into());
        }
        if op == opcode::H_PUT_TCE && st == HStatus::Success && profile != Profile::Qemu {
            let (st2, v) = s.hcall(&mem, opcode::H_GET_TCE, [args[0], args[1], 0, 0], false);
            if st2 == HStatus::Success && v != Some(args[2]) {
                return Err(format!(
                    "H_GET_TCE read {v:?} after H_PUT_TCE of {:#x}",
                    args[2]
                ));
            }
        }
        // A device at that address: what it is served must be what the table says.
        let _ = iommu.translate(GuestAddress(args[1]), 8, Permissions::Read);
        let broken: Vec<String> = s.check().iter().map(|v| v.to_string()).collect();
        if !broken.is_empty() {
            return Err(broken.join("; "));
        }
    }
    if s.save_phb(0).ok() != twin.save_phb(0).ok() {
        return Err(
            "the twin driven through a vCPU handle ended with other windows or entries".into(),
        );
    }
    Ok(())
}

/// Raw RTAS argument buffers: each chunk of the input is written at an address the
/// chunk picks (inside RAM, across its end, or past it) and run through KVMPPC_H_RTAS.
/// After each: the hypercall answered H_SUCCESS or H_PARAMETER, no byte of guest memory
/// changed outside the return words (`[12 + 4 nargs, + 4 max(nret, 1))` of the buffer),
/// and the rules hold that RTAS cannot break (QEMU places a window at the 64-bit base
/// twice in one known sequence, papr.md A.10, so `WindowsDisjoint` is not asserted here).
pub fn rtas_buffer(data: &[u8]) -> Result<(), String> {
    let mut inp = Input(data);
    let (s, mem) = guest(Profile::Kvm, RTAS_RAM)?;
    let mut before = vec![0u8; RTAS_RAM as usize];
    let mut after = vec![0u8; RTAS_RAM as usize];
    let mut calls = 0;
    while !inp.is_empty() && calls < 16 {
        calls += 1;
        let place = inp.u8();
        let len = usize::from(inp.u8() % 64);
        let addr = match place % 4 {
            0 => u64::from(inp.u8()) * 4,
            1 => RTAS_RAM - 4 * u64::from(inp.u8() % 16),
            2 => RTAS_RAM + u64::from(inp.u8()),
            _ => inp.u64(),
        };
        // The buffer: token steered to a known one, nargs and nret as given.
        let mut words: Vec<u32> = Vec::with_capacity(len);
        for i in 0..len {
            let w = (inp.u64() & 0xffff_ffff) as u32;
            words.push(match i {
                0 if w & 0x8000_0000 == 0 => 0x2026 + (w % 4),
                1 | 2 if w & 0x8000_0000 == 0 => w % 8,
                _ => w,
            });
        }
        for (i, w) in words.iter().enumerate() {
            let _ = mem.write_obj(w.to_be(), GuestAddress(addr.wrapping_add(4 * i as u64)));
        }
        mem.read_slice(&mut before, GuestAddress(0))
            .map_err(|e| e.to_string())?;
        let st = s
            .hcall(&mem, opcode::KVMPPC_H_RTAS, [addr, 0, 0, 0], false)
            .0;
        if st != HStatus::Success && st != HStatus::Parameter {
            return Err(format!("KVMPPC_H_RTAS answered {st}"));
        }
        mem.read_slice(&mut after, GuestAddress(0))
            .map_err(|e| e.to_string())?;
        let word = |i: u64| -> Option<u64> {
            let at = addr.checked_add(4 * i)?;
            let v: u32 = mem.read_obj(GuestAddress(at)).ok()?;
            Some(u64::from(u32::from_be(v)))
        };
        let rets = match (word(1), word(2)) {
            (Some(nargs), Some(nret)) => {
                let from = u128::from(addr) + 12 + 4 * u128::from(nargs);
                from..from + 4 * u128::from(nret.max(1))
            }
            _ => 0..0,
        };
        let changed = before != after;
        if let Some(i) = (0..before.len())
            .filter(|_| changed)
            .find(|&i| before[i] != after[i] && !rets.contains(&(i as u128)))
        {
            return Err(format!(
                "byte {i:#x} changed outside the return words {rets:x?}"
            ));
        }
        let broken: Vec<String> = s
            .check()
            .iter()
            .filter(|v| v.rule != PseriesRule::WindowsDisjoint)
            .map(|v| v.to_string())
            .collect();
        if !broken.is_empty() {
            return Err(broken.join("; "));
        }
    }
    Ok(())
}
