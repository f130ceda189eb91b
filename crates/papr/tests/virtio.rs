//! A virtio device model's DMA through the guest's TCE tables: `IommuMemory` over a PHB's
//! `PhbIommu`, a virtio-queue descriptor chain walked through it, the IOTLB invalidated
//! when an entry narrows or disappears, and a write through a read-only TCE refused.

mod common;
use common::*;
use spapr_papr::{HStatus, PhbIommu, Profile};
use virtio_queue::{Queue, QueueT};
use vm_memory::iommu::{Iommu, IommuMemory};
use vm_memory::{Bytes, GuestAddress, GuestMemory, GuestMemoryMmap, Permissions};

const R: u64 = 1;
const W: u64 = 2;

fn dma_memory(mem: &GuestMemoryMmap, iommu: PhbIommu) -> IommuMemory<GuestMemoryMmap, PhbIommu> {
    IommuMemory::new(mem.clone(), iommu, true, ())
}

/// Split-ring descriptor: addr, len, flags, next (little-endian, in guest memory).
fn write_desc(
    mem: &GuestMemoryMmap,
    table_gpa: u64,
    i: u64,
    addr: u64,
    len: u32,
    flags: u16,
    next: u16,
) {
    let at = GuestAddress(table_gpa + 16 * i);
    mem.write_obj(addr.to_le(), at).unwrap();
    mem.write_obj(len.to_le(), GuestAddress(at.0 + 8)).unwrap();
    mem.write_obj(flags.to_le(), GuestAddress(at.0 + 12))
        .unwrap();
    mem.write_obj(next.to_le(), GuestAddress(at.0 + 14))
        .unwrap();
}

#[test]
fn a_descriptor_chain_is_walked_through_the_tce_tables() {
    let (s, mem) = guest(Profile::Kvm);
    // The driver maps (iova -> gpa): rings and two buffers; the second read-only.
    let maps = [
        (0x1_0000, 0x10_0000, R | W), // descriptor table
        (0x1_1000, 0x10_1000, R | W), // avail ring
        (0x1_2000, 0x10_2000, R | W), // used ring
        (0x2_0000, 0x20_0000, R),     // request buffer: device reads it
        (0x2_1000, 0x20_1000, R),     // response buffer: read-only by mistake
    ];
    for (iova, gpa, perm) in maps {
        assert_eq!(
            s.h_put_tce(&mem, LIOBN0, iova, gpa | perm),
            HStatus::Success
        );
    }
    // Descriptor 0: request (readable), next 1; descriptor 1: response (write-only).
    write_desc(&mem, 0x10_0000, 0, 0x2_0000, 16, 1, 1);
    write_desc(&mem, 0x10_0000, 1, 0x2_1000, 64, 2, 0);
    // Avail ring: flags 0, idx 1, ring[0] = 0.
    mem.write_obj(0u16, GuestAddress(0x10_1000)).unwrap();
    mem.write_obj(1u16.to_le(), GuestAddress(0x10_1002))
        .unwrap();
    mem.write_obj(0u16, GuestAddress(0x10_1004)).unwrap();
    mem.write_slice(b"hello, device!!!", GuestAddress(0x20_0000))
        .unwrap();

    let dma = dma_memory(&mem, s.phb_iommu(0).unwrap());
    let mut q = Queue::new(16).unwrap();
    q.set_size(16);
    q.set_desc_table_address(Some(0x1_0000), Some(0));
    q.set_avail_ring_address(Some(0x1_1000), Some(0));
    q.set_used_ring_address(Some(0x1_2000), Some(0));
    q.set_ready(true);
    let chain = q.pop_descriptor_chain(&dma).expect("one chain");
    let descs: Vec<_> = chain.collect();
    assert_eq!(descs.len(), 2);
    let mut req = [0u8; 16];
    dma.read_slice(&mut req, descs[0].addr()).unwrap();
    assert_eq!(&req, b"hello, device!!!");
    // The response buffer's TCE is read-only: the device's write is refused.
    assert!(descs[1].is_write_only());
    assert!(dma.write_slice(b"ok", descs[1].addr()).is_err());
    assert!(!dma.check_range(descs[1].addr(), 2, Permissions::Write));
    // The guest fixes the TCE; the next write goes through.
    assert_eq!(
        s.h_put_tce(&mem, LIOBN0, 0x2_1000, 0x20_1000 | R | W),
        HStatus::Success
    );
    dma.write_slice(b"ok", descs[1].addr()).unwrap();
    let mut got = [0u8; 2];
    mem.read_slice(&mut got, GuestAddress(0x20_1000)).unwrap();
    assert_eq!(&got, b"ok");
    q.add_used(&dma, 0, 2).unwrap();
}

#[test]
fn the_iotlb_forgets_entries_that_narrow_or_disappear() {
    let (s, mem) = guest(Profile::Qemu);
    let iommu = s.phb_iommu(0).unwrap();
    s.h_put_tce(&mem, LIOBN0, 0x5000, 0x30_0000 | R | W);
    let hit = |a: Permissions| {
        iommu
            .translate(GuestAddress(0x5010), 8, a)
            .map(|mut i| i.next())
    };
    let m = hit(Permissions::Write).unwrap().unwrap();
    assert_eq!(m.base, GuestAddress(0x30_0010));
    // Narrowed to read-only: the cached RW mapping must go.
    s.h_put_tce(&mem, LIOBN0, 0x5000, 0x30_0000 | R);
    assert!(hit(Permissions::Write).is_err());
    assert!(hit(Permissions::Read).is_ok());
    // Moved to another page.
    s.h_put_tce(&mem, LIOBN0, 0x5000, 0x40_0000 | R);
    assert_eq!(
        hit(Permissions::Read).unwrap().unwrap().base,
        GuestAddress(0x40_0010)
    );
    // Gone (H_STUFF_TCE 0).
    s.h_stuff_tce(&mem, LIOBN0, 0x5000, 0, 1);
    assert!(hit(Permissions::Read).is_err());
    // A window removal or reset forgets everything.
    s.h_put_tce(&mem, LIOBN0, 0x5000, 0x40_0000 | R);
    assert!(hit(Permissions::Read).is_ok());
    s.reset();
    assert!(hit(Permissions::Read).is_err());
    // Outside every window.
    assert!(iommu
        .translate(GuestAddress(1 << 40), 8, Permissions::Read)
        .is_err());
}

#[test]
fn a_read_across_two_tce_pages_is_served_from_both() {
    let (s, mem) = guest(Profile::Kvm);
    s.h_put_tce(&mem, LIOBN0, 0x6000, 0x50_0000 | R);
    s.h_put_tce(&mem, LIOBN0, 0x7000, 0x70_0000 | R);
    mem.write_slice(b"ab", GuestAddress(0x50_0ffe)).unwrap();
    mem.write_slice(b"cd", GuestAddress(0x70_0000)).unwrap();
    let dma = dma_memory(&mem, s.phb_iommu(0).unwrap());
    let mut b = [0u8; 4];
    dma.read_slice(&mut b, GuestAddress(0x6ffe)).unwrap();
    assert_eq!(&b, b"abcd");
}

#[test]
fn a_range_that_wraps_the_bus_address_space_is_refused_not_a_panic() {
    let (s, _mem) = guest(Profile::Kvm);
    let iommu = s.phb_iommu(0).unwrap();
    assert!(iommu
        .translate(GuestAddress(u64::MAX - 4), 64, Permissions::Read)
        .is_err());
    let mut own = s.device_translator(0).unwrap();
    let mut b = [0u8; 64];
    assert_eq!(
        own.read(&_mem, u64::MAX - 4, &mut b),
        Err(spapr_papr::DmaError::Wraps {
            iova: u64::MAX - 4,
            len: 64
        })
    );
}
