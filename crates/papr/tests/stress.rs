//! A VMM's threads at once: two vCPUs (TCE hypercalls, the first through its own lock-free
//! `Vcpu` handle; RTAS create/remove/reset, PHB reset and restore) and two device models
//! (`IommuMemory` reads and writes, a virtio-queue chain, and a `DeviceTranslator`), for a
//! while, with
//! - a no-progress detector: every thread must keep finishing iterations (a deadlock
//!   fails the test with the names of the threads that stopped);
//! - a check that the handle sees every window replacement that returned before its call
//!   began: such a call's entry must be in the window's current table;
//! - a ledger that proves no access succeeds through an entry cleared before the access
//!   began: each mapping of a page has a number, written into its target page, and the
//!   vCPU publishes the highest number it has cleared (or that a reset has) after the
//!   call returns; a device loads that floor before its access and must read a number
//!   above it.

mod common;
use common::*;
use spapr_papr::{token, DeviceTranslator, HStatus, PhbIommu, Profile};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};
use virtio_queue::{Queue, QueueT};
use vm_memory::iommu::IommuMemory;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Pages the first vCPU maps and clears, from `PAGES_IOVA`.
const PAGES: u64 = 16;
const PAGES_IOVA: u64 = 0x100_0000;
/// Target pages of the mappings (mapping k goes to target k % TARGETS).
const TARGETS: u64 = 1024;
const TARGET_BASE: u64 = 0x200_0000;
/// The TCE list page of the first vCPU, the RTAS buffer of the second.
const LIST: u64 = 0x10_0000;
const RTAS_BUF: u64 = 0x11_0000;
/// Virtio rings and buffers: iova 0x80_0000.. -> gpa 0x12_0000.. (re-mapped all along).
const RING_IOVA: u32 = 0x80_0000;
const RING_GPA: u64 = 0x12_0000;
/// The second vCPU's DDW targets.
const DDW_TARGET: u64 = 0x300_0000;

const R: u64 = 1;
const W: u64 = 2;

fn target(k: u64) -> u64 {
    TARGET_BASE + (k % TARGETS) * 4096
}

/// What the vCPUs publish for the devices' checks.
struct Ledger {
    /// Per page: the highest mapping number cleared or replaced (after the call returned).
    floor: Vec<AtomicU64>,
    /// The highest mapping number whose H_PUT_TCE returned.
    completed: AtomicU64,
    /// Every mapping up to this number was cleared by a reset or restore.
    reset_floor: AtomicU64,
    /// Accesses that succeeded through a cleared entry.
    stale: AtomicU64,
    /// Accesses that read a number (the check ran).
    checked: AtomicU64,
    /// The default window's replacements (reset, restore), as a sequence count: odd
    /// while one runs, bumped (release) before it begins and after it returned.
    changes: AtomicU64,
    /// Handle calls made after a replacement returned and with none running until the
    /// entry was read back, whose entry was in the window's current table.
    landed: AtomicU64,
    /// Such calls whose entry was not there (it went into a table that had gone).
    lost: AtomicU64,
}

impl Ledger {
    fn floor_of(&self, page: u64) -> u64 {
        self.floor[page as usize]
            .load(Ordering::Acquire)
            .max(self.reset_floor.load(Ordering::Acquire))
    }
    fn judge(&self, floor: u64, read: Option<u64>) {
        if let Some(s) = read {
            self.checked.fetch_add(1, Ordering::Relaxed);
            if s <= floor {
                self.stale.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn put(s: &spapr_papr::Spapr, mem: &GuestMemoryMmap, liobn: u64, ioba: u64, tce: u64) {
    assert_eq!(s.h_put_tce(mem, liobn, ioba, tce), HStatus::Success);
}

/// Writes the virtio request: descriptor 0 readable (16 bytes), descriptor 1 writable.
fn write_rings(s: &spapr_papr::Spapr, mem: &GuestMemoryMmap) {
    for i in 0..5 {
        put(
            s,
            mem,
            LIOBN0,
            u64::from(RING_IOVA) + i * 4096,
            (RING_GPA + i * 4096) | R | W,
        );
    }
}

fn setup_rings(mem: &GuestMemoryMmap) {
    let desc = |i: u64, addr: u64, len: u32, flags: u16, next: u16| {
        let at = RING_GPA + 16 * i;
        mem.write_obj(addr.to_le(), GuestAddress(at)).unwrap();
        mem.write_obj(len.to_le(), GuestAddress(at + 8)).unwrap();
        mem.write_obj(flags.to_le(), GuestAddress(at + 12)).unwrap();
        mem.write_obj(next.to_le(), GuestAddress(at + 14)).unwrap();
    };
    desc(0, u64::from(RING_IOVA) + 0x3000, 16, 1, 1);
    desc(1, u64::from(RING_IOVA) + 0x4000, 64, 2, 0);
    mem.write_obj(0u16, GuestAddress(RING_GPA + 0x1000))
        .unwrap();
    mem.write_obj(1u16.to_le(), GuestAddress(RING_GPA + 0x1002))
        .unwrap();
    mem.write_obj(0u16, GuestAddress(RING_GPA + 0x1004))
        .unwrap();
    mem.write_slice(b"request, please!", GuestAddress(RING_GPA + 0x3000))
        .unwrap();
}

/// vCPU 1: maps pages with H_PUT_TCE and H_PUT_TCE_INDIRECT, clears them with H_PUT_TCE
/// 0 and H_STUFF_TCE, keeps the virtio pages mapped.
fn vcpu_tces(
    s: &spapr_papr::Spapr,
    mem: &GuestMemoryMmap,
    l: &Ledger,
    stop: &AtomicBool,
    progress: &AtomicU64,
) {
    // This vCPU's own handle: its hypercalls find the window with no lock (the rings
    // below still go through the locked calls).
    let mut vcpu = s.vcpu();
    let mut k = 0u64;
    let mut current = [0u64; PAGES as usize];
    let mut round = 0u64;
    while !stop.load(Ordering::Relaxed) {
        round += 1;
        let page = round % PAGES;
        let ioba = PAGES_IOVA + page * 4096;
        match round % 4 {
            0 => {
                // Map (or replace) one page.
                k += 1;
                mem.write_obj(k, GuestAddress(target(k))).unwrap();
                // A call that begins after a replacement returned writes the current
                // table: judged when no replacement ran from before the call until the
                // entry was read back (the read-back's lock orders a replacement's slot
                // change after its first bump).
                let before = l.changes.load(Ordering::Acquire);
                assert_eq!(
                    vcpu.h_put_tce(mem, LIOBN0, ioba, target(k) | R),
                    HStatus::Success
                );
                let now = s.table(LIOBN0).and_then(|t| t.entry_at(ioba)).map(|t| t.0);
                if before % 2 == 0 && l.changes.load(Ordering::Acquire) == before {
                    let judged = if now == Some(target(k) | R) {
                        &l.landed
                    } else {
                        &l.lost
                    };
                    judged.fetch_add(1, Ordering::Relaxed);
                }
                l.floor[page as usize].store(current[page as usize], Ordering::Release);
                current[page as usize] = k;
                l.completed.store(k, Ordering::Release);
            }
            1 => {
                // Map four pages at once from a list.
                let first = page & !3;
                let mut list = [0u64; 4];
                for e in list.iter_mut() {
                    k += 1;
                    mem.write_obj(k, GuestAddress(target(k))).unwrap();
                    *e = target(k) | R;
                }
                write_list(mem, LIST, &list);
                let st = vcpu.h_put_tce_indirect(mem, LIOBN0, PAGES_IOVA + first * 4096, LIST, 4);
                assert_eq!(st, HStatus::Success);
                for j in 0..4 {
                    let p = (first + j) as usize;
                    l.floor[p].store(current[p], Ordering::Release);
                    current[p] = k - 3 + j;
                }
                l.completed.store(k, Ordering::Release);
            }
            2 => {
                assert_eq!(vcpu.h_put_tce(mem, LIOBN0, ioba, 0), HStatus::Success);
                l.floor[page as usize].store(current[page as usize], Ordering::Release);
            }
            _ => {
                assert_eq!(vcpu.h_stuff_tce(mem, LIOBN0, ioba, 0, 1), HStatus::Success);
                l.floor[page as usize].store(current[page as usize], Ordering::Release);
                write_rings(s, mem);
            }
        }
        progress.fetch_add(1, Ordering::Relaxed);
    }
}

/// vCPU 2: the window changes: RTAS create, a mapping in the new window, RTAS remove;
/// RTAS reset, PHB reset and restore every few rounds.
fn vcpu_windows(
    s: &spapr_papr::Spapr,
    mem: &GuestMemoryMmap,
    l: &Ledger,
    empty: &[u8],
    stop: &AtomicBool,
    progress: &AtomicU64,
) {
    let args = |extra: &[u32]| {
        let mut a = vec![0u32, (BUID >> 32) as u32, BUID as u32];
        a.extend_from_slice(extra);
        a
    };
    let mut round = 0u64;
    while !stop.load(Ordering::Relaxed) {
        round += 1;
        let made = s.rtas_through_buffer(mem, RTAS_BUF, token::CREATE, &args(&[16, 30]), 4);
        if let Some((HStatus::Success, rets)) = made {
            if rets[0] == 0 {
                let liobn = u64::from(rets[1]);
                let start = (u64::from(rets[2]) << 32) | u64::from(rets[3]);
                put(s, mem, liobn, start + 0x1_0000, DDW_TARGET | R | W);
                if round % 2 == 0 {
                    let _ = s.rtas_through_buffer(mem, RTAS_BUF, token::REMOVE, &[rets[1]], 1);
                }
            }
        }
        if round % 5 == 0 {
            // Everything mapped so far is cleared once the reset returns.
            let before = l.completed.load(Ordering::Acquire);
            l.changes.fetch_add(1, Ordering::Release);
            match round % 15 {
                0 => s.reset_phb(0),
                5 => s.restore_phb(0, empty).unwrap(),
                _ => {
                    let r = s.rtas_through_buffer(mem, RTAS_BUF, token::RESET, &args(&[]), 1);
                    assert_eq!(
                        r.map(|(st, rets)| (st, rets[0])),
                        Some((HStatus::Success, 0))
                    );
                }
            }
            l.reset_floor.fetch_max(before, Ordering::Release);
            l.changes.fetch_add(1, Ordering::Release);
        }
        progress.fetch_add(1, Ordering::Relaxed);
    }
}

/// Device 1: reads the pages through `IommuMemory` (checked), writes the virtio response
/// buffer, reads the DDW mapping.
fn device_iommu_memory(
    mem: &GuestMemoryMmap,
    iommu: PhbIommu,
    l: &Ledger,
    stop: &AtomicBool,
    progress: &AtomicU64,
) {
    let dma = IommuMemory::new(mem.clone(), iommu, true, ());
    let mut round = 0u64;
    while !stop.load(Ordering::Relaxed) {
        round += 1;
        let page = (round * 7) % PAGES;
        let floor = l.floor_of(page);
        let read: Option<u64> = dma.read_obj(GuestAddress(PAGES_IOVA + page * 4096)).ok();
        l.judge(floor, read);
        let _ = dma.write_slice(b"response", GuestAddress(u64::from(RING_IOVA) + 0x4000));
        let _: Result<u64, _> = dma.read_obj(GuestAddress(DDW_BASE + 0x1_0000));
        progress.fetch_add(1, Ordering::Relaxed);
    }
}

/// Device 2: a virtio-queue chain through `IommuMemory`, and the pages through its own
/// `DeviceTranslator` (checked).
fn device_virtio_and_translator(
    mem: &GuestMemoryMmap,
    iommu: PhbIommu,
    mut own: DeviceTranslator,
    l: &Ledger,
    stop: &AtomicBool,
    progress: &AtomicU64,
) {
    let dma = IommuMemory::new(mem.clone(), iommu, true, ());
    let mut round = 0u64;
    while !stop.load(Ordering::Relaxed) {
        round += 1;
        let mut q = Queue::new(16).unwrap();
        q.set_size(16);
        q.set_desc_table_address(Some(RING_IOVA), Some(0));
        q.set_avail_ring_address(Some(RING_IOVA + 0x1000), Some(0));
        q.set_used_ring_address(Some(RING_IOVA + 0x2000), Some(0));
        q.set_ready(true);
        if let Some(chain) = q.pop_descriptor_chain(&dma) {
            for d in chain {
                let mut b = [0u8; 16];
                if d.is_write_only() {
                    let _ = dma.write_slice(b"done", d.addr());
                } else {
                    let _ = dma.read_slice(&mut b, d.addr());
                }
            }
        }
        let page = (round * 5) % PAGES;
        let floor = l.floor_of(page);
        let mut b = [0u8; 8];
        let read = own
            .read(mem, PAGES_IOVA + page * 4096, &mut b)
            .ok()
            .map(|()| u64::from_ne_bytes(b));
        l.judge(floor, read);
        progress.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn vcpus_and_devices_keep_progressing_and_no_access_uses_a_cleared_entry() {
    let (s, mem) = guest(Profile::Kvm);
    let empty = s.save_phb(0).unwrap();
    setup_rings(&mem);
    write_rings(&s, &mem);
    let s = Arc::new(s);
    let l = Arc::new(Ledger {
        floor: (0..PAGES).map(|_| AtomicU64::new(0)).collect(),
        completed: AtomicU64::new(0),
        reset_floor: AtomicU64::new(0),
        stale: AtomicU64::new(0),
        checked: AtomicU64::new(0),
        changes: AtomicU64::new(0),
        landed: AtomicU64::new(0),
        lost: AtomicU64::new(0),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let names = ["vcpu tces", "vcpu windows", "device iommu", "device virtio"];
    let progress: Arc<Vec<AtomicU64>> = Arc::new(names.iter().map(|_| AtomicU64::new(0)).collect());
    let start = Arc::new(Barrier::new(names.len() + 1));
    let mut handles = Vec::new();
    for who in 0..names.len() {
        let (s, mem, l, stop, progress, start, empty) = (
            s.clone(),
            mem.clone(),
            l.clone(),
            stop.clone(),
            progress.clone(),
            start.clone(),
            empty.clone(),
        );
        handles.push(std::thread::spawn(move || {
            start.wait();
            let p = &progress[who];
            match who {
                0 => vcpu_tces(&s, &mem, &l, &stop, p),
                1 => vcpu_windows(&s, &mem, &l, &empty, &stop, p),
                2 => device_iommu_memory(&mem, s.phb_iommu(0).unwrap(), &l, &stop, p),
                _ => device_virtio_and_translator(
                    &mem,
                    s.phb_iommu(0).unwrap(),
                    s.device_translator(0).unwrap(),
                    &l,
                    &stop,
                    p,
                ),
            }
        }));
    }
    start.wait();
    // The no-progress detector: every thread must finish an iteration in every 2 s.
    let run = Duration::from_millis(1500);
    let stall = Duration::from_secs(2);
    let began = Instant::now();
    let mut last: Vec<(u64, Instant)> = names.iter().map(|_| (0, began)).collect();
    while began.elapsed() < run {
        std::thread::sleep(Duration::from_millis(50));
        let now = Instant::now();
        let mut stuck = Vec::new();
        for (i, (seen, at)) in last.iter_mut().enumerate() {
            let v = progress[i].load(Ordering::Relaxed);
            if v != *seen {
                *seen = v;
                *at = now;
            } else if now - *at > stall {
                stuck.push(names[i]);
            }
        }
        // Threads that stopped are left behind: joining a deadlocked thread never returns.
        assert!(
            stuck.is_empty(),
            "no progress for {stall:?} in: {stuck:?} (deadlock)"
        );
        if handles.iter().any(|h| h.is_finished()) {
            break;
        }
    }
    // Give a thread that is slow (not stuck) its stall window before judging.
    let deadline = Instant::now() + stall;
    for (i, _) in names.iter().enumerate() {
        while progress[i].load(Ordering::Relaxed) == 0 {
            assert!(
                Instant::now() < deadline,
                "{} never finished an iteration",
                names[i]
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    stop.store(true, Ordering::Relaxed);
    let joined_by = Instant::now() + stall;
    while handles.iter().any(|h| !h.is_finished()) {
        assert!(
            Instant::now() < joined_by,
            "a thread did not stop within {stall:?} (deadlock)"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    for h in handles {
        h.join().expect("a thread panicked");
    }
    let (landed, lost) = (
        l.landed.load(Ordering::Relaxed),
        l.lost.load(Ordering::Relaxed),
    );
    assert_eq!(
        lost, 0,
        "handle calls after a window change wrote a table that had gone ({landed} landed)"
    );
    assert!(landed > 100, "only {landed} judged handle calls");
    let checked = l.checked.load(Ordering::Relaxed);
    assert!(checked > 100, "only {checked} checked accesses");
    assert_eq!(
        l.stale.load(Ordering::Relaxed),
        0,
        "accesses through entries cleared before they began (of {checked})"
    );
    assert!(s.check().is_empty(), "{:?}", s.check());
}
