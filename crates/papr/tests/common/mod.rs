//! Shared set-up: a guest with 64 MiB of RAM and QEMU's default PHB and VIO device.
#![allow(dead_code)]

use spapr_papr::{Profile, Spapr, SpaprConfig};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

pub const RAM: u64 = 64 << 20;
pub const LIOBN0: u64 = 0x8000_0000;
pub const LIOBN1: u64 = 0x8000_0001;
pub const BUID: u64 = 0x0800_0000_2000_0000;
pub const DDW_BASE: u64 = 0x0800_0000_0000_0000;

pub fn guest(profile: Profile) -> (Spapr, GuestMemoryMmap) {
    let cfg = SpaprConfig {
        profile,
        ram_size: RAM,
        ..SpaprConfig::default()
    };
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), RAM as usize)]).unwrap();
    (Spapr::new(cfg).unwrap(), mem)
}

pub fn get(s: &Spapr, mem: &GuestMemoryMmap, liobn: u64, ioba: u64) -> Option<u64> {
    match s.h_get_tce(mem, liobn, ioba) {
        (spapr_papr::HStatus::Success, v) => v,
        _ => None,
    }
}

/// Writes a big-endian TCE list at `at`.
pub fn write_list(mem: &GuestMemoryMmap, at: u64, tces: &[u64]) {
    for (i, t) in tces.iter().enumerate() {
        mem.write_obj(t.to_be(), GuestAddress(at + 8 * i as u64))
            .unwrap();
    }
}

/// The RTAS buffer: token, nargs, nret, args; returns where rets start.
pub fn write_rtas(mem: &GuestMemoryMmap, at: u64, token: u32, args: &[u32], nret: u32) -> u64 {
    let words: Vec<u32> = [token, args.len() as u32, nret]
        .into_iter()
        .chain(args.iter().copied())
        .collect();
    for (i, w) in words.iter().enumerate() {
        mem.write_obj(w.to_be(), GuestAddress(at + 4 * i as u64))
            .unwrap();
    }
    at + 4 * words.len() as u64
}

pub fn read_u32s(mem: &GuestMemoryMmap, at: u64, n: usize) -> Vec<u32> {
    (0..n)
        .map(|i| u32::from_be(mem.read_obj(GuestAddress(at + 4 * i as u64)).unwrap()))
        .collect()
}
