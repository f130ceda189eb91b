//! Invariant violations (kernel.md section 3), typed: the rule that broke, where, and the
//! evidence (which entry, which window, which count), so that a test asserts exactly what
//! was found and a script reads it as data.
//!
//! The core checks what it owns (group membership, references, `owner_cnt`, bound kernel
//! drivers); a driver checks its hardware through [`crate::IommuOps::check_group`], told
//! who owns the group, and judges provenance: who wrote a TCE, who programmed a window.

use crate::group::OwnerCookie;
use core::fmt;

/// A rule of the checker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rule {
    /// A user-owned group's devices reach nothing through the kernel: no kernel table
    /// programmed, no bypass, no kernel DMA table left to its devices (3.1).
    NoKernelTranslationOnUserGroup,
    /// No kernel driver is bound to a device of a user-owned group (3.2).
    NoKernelDriverOnUserGroup,
    /// A kernel-owned group keeps no user mapping: no user table programmed, no TCE that
    /// the kernel allocator did not hand out (3.3).
    NoUserMappingAfterRelease,
    /// A kernel-owned group has its DMA back: default window, bypass, table base (3.3,
    /// the v6.7 bug).
    KernelDmaRestored,
    /// Membership, references and `owner_cnt` balance (3.8).
    RefcountBalance,
    /// Every window programmed on a user-owned PE was programmed under the ownership that
    /// holds it now (no other user's window left behind).
    WindowsBelongToOwner,
    /// No cached translation disagrees with its TCE: every TCE change was followed by a
    /// kill before the next device access could be served from the cache (3.7).
    TceCacheCoherent,
    /// No DMA is served on a PE between its EEH freeze and the thaw of its DMA, and a
    /// frozen PE's devices reach nothing (eeh.md 1.1): judged by the DMA's own record of
    /// the freeze generation it passed the gate in, and by translation.
    NoDmaWhileFrozen,
}

impl Rule {
    /// Every rule, in report order.
    pub const ALL: [Rule; 8] = [
        Rule::NoKernelTranslationOnUserGroup,
        Rule::NoKernelDriverOnUserGroup,
        Rule::NoUserMappingAfterRelease,
        Rule::KernelDmaRestored,
        Rule::RefcountBalance,
        Rule::WindowsBelongToOwner,
        Rule::TceCacheCoherent,
        Rule::NoDmaWhileFrozen,
    ];
    /// Its name, as scenario files write it.
    pub fn name(self) -> &'static str {
        match self {
            Rule::NoKernelTranslationOnUserGroup => "NoKernelTranslationOnUserGroup",
            Rule::NoKernelDriverOnUserGroup => "NoKernelDriverOnUserGroup",
            Rule::NoUserMappingAfterRelease => "NoUserMappingAfterRelease",
            Rule::KernelDmaRestored => "KernelDmaRestored",
            Rule::RefcountBalance => "RefcountBalance",
            Rule::WindowsBelongToOwner => "WindowsBelongToOwner",
            Rule::TceCacheCoherent => "TceCacheCoherent",
            Rule::NoDmaWhileFrozen => "NoDmaWhileFrozen",
        }
    }
    /// Parses a name.
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.name() == s)
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Who programmed a window: the kernel, or a user's claim (owner and ownership epoch).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Programmer {
    /// The kernel's own configuration.
    Kernel,
    /// A user, under the claim of `owner` in ownership epoch `epoch`.
    User {
        /// The claim's owner.
        owner: OwnerCookie,
        /// Its ownership epoch.
        epoch: u64,
    },
}

impl fmt::Display for Programmer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Programmer::Kernel => f.write_str("the kernel"),
            Programmer::User { owner, epoch } => write!(f, "owner {:#x} (epoch {epoch})", owner.0),
        }
    }
}

/// What a violation found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Evidence {
    /// The group lists a device that is gone or in another group, or a device points to a
    /// group that does not list it.
    Membership {
        /// The device's index in the core.
        device: usize,
    },
    /// A count that does not balance.
    Count {
        /// What is counted.
        what: &'static str,
        /// What it should be.
        expected: u64,
        /// What it is.
        found: u64,
    },
    /// A user-owned group still attached to its default (kernel) domain.
    DefaultDomain,
    /// A kernel driver bound.
    Driver {
        /// Its name.
        name: String,
    },
    /// A window programmed with a table it must not have.
    Window {
        /// Window slot.
        window: u32,
        /// Its TVE.
        tve: u32,
        /// First bus address.
        start: u64,
        /// Bytes.
        size: u64,
        /// Live TCEs in it.
        live: u64,
        /// Who programmed it.
        by: Programmer,
        /// Whether its table is a kernel DMA table (has the kernel allocator).
        kernel_table: bool,
    },
    /// One TCE where it must not be.
    Entry {
        /// Window slot.
        window: u32,
        /// Absolute TCE index.
        index: u64,
        /// The entry.
        value: u64,
    },
    /// A device access that the hardware would translate, where it must not.
    Reach {
        /// The bus address.
        iova: u64,
        /// Where it lands.
        hpa: u64,
    },
    /// Bypass (TVE#1) maps RAM.
    Bypass {
        /// First bus address.
        start: u64,
        /// End (exclusive).
        end: u64,
    },
    /// A device's `iommu_table_base` points at a usable kernel table.
    TableBase,
    /// Something kernel DMA needs is missing.
    Missing {
        /// What.
        what: &'static str,
    },
    /// A cached translation the hardware would serve disagrees with its TCE.
    StaleCache {
        /// Window slot.
        window: u32,
        /// Absolute TCE index.
        index: u64,
        /// What the cache holds.
        cached: u64,
        /// What the table holds.
        current: u64,
    },
    /// Free text from a driver that has nothing more precise.
    Note(String),
}

impl fmt::Display for Evidence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Evidence::Membership { device } => {
                write!(f, "device {device} is listed by one side only")
            }
            Evidence::Count {
                what,
                expected,
                found,
            } => write!(f, "{what} is {found}, expected {expected}"),
            Evidence::DefaultDomain => {
                f.write_str("user-owned group still attached to its default (kernel) domain")
            }
            Evidence::Driver { name } => write!(f, "driver {name} bound while the group is owned"),
            Evidence::Window {
                window,
                tve,
                start,
                size,
                live,
                by,
                kernel_table,
            } => write!(
                f,
                "window {window} (TVE#{tve}) {start:#x}+{size:#x} programmed by {by}, {} table, {live} TCEs live",
                if *kernel_table { "kernel" } else { "user" }
            ),
            Evidence::Entry {
                window,
                index,
                value,
            } => write!(
                f,
                "window {window} entry {index:#x} = {value:#x} was not handed out by the kernel allocator"
            ),
            Evidence::Reach { iova, hpa } => {
                write!(f, "a device access at {iova:#x} reaches {hpa:#x}")
            }
            Evidence::Bypass { start, end } => {
                write!(f, "bypass maps [{start:#x}, {end:#x}) onto RAM")
            }
            Evidence::TableBase => {
                f.write_str("iommu_table_base still points at a usable kernel table")
            }
            Evidence::Missing { what } => write!(f, "{what}"),
            Evidence::StaleCache {
                window,
                index,
                cached,
                current,
            } => write!(
                f,
                "window {window} entry {index:#x}: the TCE cache holds {cached:#x} but the table {current:#x} (changed without a kill)"
            ),
            Evidence::Note(s) => f.write_str(s),
        }
    }
}

/// What a driver's check found in one group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// The rule.
    pub rule: Rule,
    /// The device concerned, if one.
    pub device: Option<String>,
    /// What was found.
    pub evidence: Evidence,
}

/// One rule broken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The rule.
    pub rule: Rule,
    /// The device concerned.
    pub device: Option<String>,
    /// The group concerned.
    pub group: Option<String>,
    /// What was found.
    pub evidence: Evidence,
}

impl Violation {
    /// A violation of `rule`.
    pub fn new(rule: Rule, device: Option<&str>, group: Option<&str>, evidence: Evidence) -> Self {
        Self {
            rule,
            device: device.map(str::to_string),
            group: group.map(str::to_string),
            evidence,
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.rule)?;
        if let Some(g) = &self.group {
            write!(f, " group {g}")?;
        }
        if let Some(d) = &self.device {
            write!(f, " device {d}")?;
        }
        write!(f, ": {}", self.evidence)
    }
}
