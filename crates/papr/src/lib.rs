//! # spapr-papr — the pSeries guest interface
//!
//! What a Rust VMM needs to give a pSeries guest its DMA windows: the TCE hypercalls
//! (H_GET_TCE, H_PUT_TCE, H_STUFF_TCE, H_PUT_TCE_INDIRECT), the DDW RTAS calls
//! (ibm,query/create/remove/reset-pe-dma-window) with PAPR's big-endian argument buffers,
//! LIOBN/BUID numbering, PHB default windows and VIO windows, machine reset, the
//! device-tree properties the guest reads, save/restore of a PHB's windows, and translation
//! for device models, from any number of threads: through rust-vmm's `vm_memory::Iommu`
//! ([`PhbIommu`], so a virtio device's DMA goes through the guest's TCE tables) or a
//! device thread's own lock-free [`DeviceTranslator`]. A vCPU thread makes its hypercalls
//! through [`Spapr::hcall`] (the window found under the PHB's slot lock) or through its
//! own [`Vcpu`] handle (found with no lock, as KVM's real-mode handlers find theirs; the
//! same answers, see [`vcpu`]). What a device sees while the guest changes its tables is
//! stated in [`iommu`]; why no call can deadlock or serve a cleared entry, in [`iotlb`].
//! [`Spapr::check`] is the pSeries checker.
//!
//! Where QEMU, KVM and the LoPAR specification disagree, [`Profile`] chooses (papr.md A.8;
//! the default is `kvm`). Depends only on the TCE engine. Models QEMU's
//! `hw/ppc/spapr_iommu.c`, `spapr_rtas_ddw.c`, `spapr_pci.c` and KVM's
//! `arch/powerpc/kvm/book3s_64_vio.c`.
//!
//! A VMM's use, end to end: the hypercall dispatcher maps a page, a device model reads
//! through the guest's table, and the Linux guest's own DDW sequence ([`LinuxGuestDdw`])
//! gets a 64-bit window over all of RAM.
//!
//! ```
//! use spapr_papr::{opcode, DdwRequest, GuestScratch, HStatus, LinuxGuestDdw, Spapr, SpaprConfig};
//! use vm_memory::iommu::IommuMemory;
//! use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
//!
//! let ram = 64 << 20;
//! let s = Spapr::new(SpaprConfig { ram_size: ram, ..SpaprConfig::default() }).unwrap();
//! let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), ram as usize)]).unwrap();
//!
//! // The guest maps bus address 0x3000 of the default window (LIOBN 0x8000_0000) to
//! // guest page 0x20_0000, read-only, and puts data there.
//! let (st, _) = s.hcall(&mem, opcode::H_PUT_TCE, [0x8000_0000, 0x3000, 0x20_0001, 0], false);
//! assert_eq!(st, HStatus::Success);
//! mem.write_slice(b"hello", GuestAddress(0x20_0000)).unwrap();
//!
//! // A device model's DMA goes through the table: reads work, writes are refused.
//! let dma = IommuMemory::new(mem.clone(), s.phb_iommu(0).unwrap(), true, ());
//! let mut buf = [0u8; 5];
//! dma.read_slice(&mut buf, GuestAddress(0x3000)).unwrap();
//! assert_eq!(&buf, b"hello");
//! assert!(dma.write_slice(b"x", GuestAddress(0x3000)).is_err());
//!
//! // The guest kernel asks for a dynamic DMA window (RTAS through KVMPPC_H_RTAS, then
//! // H_PUT_TCE_INDIRECT): 16M pages, direct-mapped over all RAM at the 64-bit base.
//! let scratch = GuestScratch { rtas: 0x10_0000, list: 0x11_0000 };
//! let w = LinuxGuestDdw::new(scratch, false)
//!     .enable_ddw(&s, &mem, &DdwRequest::new(0, 0, ram))
//!     .unwrap();
//! assert_eq!((w.start, w.page_shift, w.direct), (0x0800_0000_0000_0000, 24, true));
//! dma.read_slice(&mut buf, GuestAddress(w.start + 0x20_0000)).unwrap();
//! assert_eq!(&buf, b"hello");
//! ```
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
#![forbid(unsafe_code)]

pub mod check;
pub mod dt;
pub mod eeh;
pub mod fuzzing;
pub mod guest;
pub mod hcall;
pub mod iommu;
pub mod iotlb;
pub mod rtas;
mod slots;
pub mod spapr;
pub mod state;
mod sync;
pub mod table;
pub mod vcpu;

pub use check::{Evidence, PseriesRule, PseriesViolation, WindowSpan};
pub use dt::{DeviceTree, PhbNode};
pub use guest::{DdwError, DdwRequest, DdwWindow, GuestCall, GuestScratch, LinuxGuestDdw};
pub use hcall::Hcall;
pub use iommu::{DeviceTranslator, DmaError, PhbIommu};
pub use iotlb::CachedTranslation;
pub use rtas::{RtasCall, RtasStatus};
pub use spapr::{PaprPhb, PhbConfig, Spapr, SpaprConfig, Target, VioConfig, VioWindow, WindowView};
pub use table::GuestTable;
pub use vcpu::Vcpu;

use core::fmt;

/// Which reference a call follows where they disagree (papr.md A.8).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub enum Profile {
    /// QEMU 7.2 as observed (masking, partial writes, zero counts refused), without its
    /// crash and shift-aliasing bugs.
    Qemu,
    /// What a guest sees on a KVM host: KVM's in-kernel checks first, QEMU's answer where
    /// KVM hands the call to user space (H_TOO_HARD).
    #[default]
    Kvm,
    /// The LoPAR specification: H_P4 for counts over 512, TCEs validated against guest
    /// memory, H_PARTIAL for foreign pages.
    Lopar,
}

impl Profile {
    /// Every profile.
    pub const ALL: [Profile; 3] = [Profile::Qemu, Profile::Kvm, Profile::Lopar];
    /// Name as written in scenario files.
    pub fn name(self) -> &'static str {
        match self {
            Profile::Qemu => "qemu",
            Profile::Kvm => "kvm",
            Profile::Lopar => "lopar",
        }
    }
    /// Parses a name.
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == s)
    }
}

/// Hypercall return codes (r3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HStatus {
    /// `H_SUCCESS` (0).
    Success,
    /// `H_HARDWARE` (-1).
    Hardware,
    /// `H_FUNCTION` (-2): unknown opcode.
    Function,
    /// `H_PRIVILEGE` (-3): issued from problem state.
    Privilege,
    /// `H_PARAMETER` (-4).
    Parameter,
    /// `H_P4` (-57): LoPAR's answer to a count over 512.
    P4,
    /// `H_PARTIAL` (5): LoPAR's H_GET_TCE of a page that is not the caller's.
    Partial,
}

impl HStatus {
    /// Every status.
    pub const ALL: [HStatus; 7] = [
        HStatus::Success,
        HStatus::Hardware,
        HStatus::Function,
        HStatus::Privilege,
        HStatus::Parameter,
        HStatus::P4,
        HStatus::Partial,
    ];
    /// The value in r3.
    pub fn code(self) -> i64 {
        match self {
            HStatus::Success => 0,
            HStatus::Hardware => -1,
            HStatus::Function => -2,
            HStatus::Privilege => -3,
            HStatus::Parameter => -4,
            HStatus::P4 => -57,
            HStatus::Partial => 5,
        }
    }
    /// The name (`H_PARAMETER`).
    pub fn name(self) -> &'static str {
        match self {
            HStatus::Success => "H_SUCCESS",
            HStatus::Hardware => "H_HARDWARE",
            HStatus::Function => "H_FUNCTION",
            HStatus::Privilege => "H_PRIVILEGE",
            HStatus::Parameter => "H_PARAMETER",
            HStatus::P4 => "H_P4",
            HStatus::Partial => "H_PARTIAL",
        }
    }
    /// Parses a name.
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|h| h.name() == s)
    }
}

impl fmt::Display for HStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Hypercall opcodes (papr.md A.1).
pub mod opcode {
    /// `H_GET_TCE`.
    pub const H_GET_TCE: u64 = 0x1C;
    /// `H_PUT_TCE`.
    pub const H_PUT_TCE: u64 = 0x20;
    /// `H_STUFF_TCE`.
    pub const H_STUFF_TCE: u64 = 0x138;
    /// `H_PUT_TCE_INDIRECT`.
    pub const H_PUT_TCE_INDIRECT: u64 = 0x13C;
    /// QEMU's private RTAS hypercall (r4 = RTAS argument buffer).
    pub const KVMPPC_H_RTAS: u64 = 0xF000;
}

/// QEMU's RTAS tokens for the DDW calls.
pub mod token {
    /// `ibm,query-pe-dma-window`.
    pub const QUERY: u32 = 0x2026;
    /// `ibm,create-pe-dma-window`.
    pub const CREATE: u32 = 0x2027;
    /// `ibm,remove-pe-dma-window`.
    pub const REMOVE: u32 = 0x2028;
    /// `ibm,reset-pe-dma-window`.
    pub const RESET: u32 = 0x2029;
}

/// Most TCEs one H_PUT_TCE_INDIRECT carries (one 4 KiB list page), and LoPAR's limit for
/// H_STUFF_TCE.
pub const MAX_MULTI_TCE: u64 = 512;

/// The DDW query's page-size bits, in the order LoPAR numbers them (2M came last).
pub const DDW_PAGE_BITS: [(u32, u32); 9] = [
    (12, 0x1),
    (16, 0x2),
    (24, 0x4),
    (25, 0x8),
    (26, 0x10),
    (27, 0x20),
    (28, 0x40),
    (34, 0x80),
    (21, 0x100),
];

/// The query mask of a page-size set (bit n of `sizes` = 2^n bytes).
pub fn ddw_page_mask(sizes: spapr_tce::PageSizes) -> u32 {
    DDW_PAGE_BITS
        .iter()
        .filter(|(shift, _)| sizes.contains_shift(*shift))
        .map(|(_, bit)| bit)
        .fold(0, |a, b| a | b)
}
