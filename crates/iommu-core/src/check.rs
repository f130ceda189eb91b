//! Invariant violations (kernel.md section 3).

use core::fmt;

/// Which security rule or bookkeeping rule broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rule {
    /// 3.1: a user-owned group's devices can still reach kernel DMA translations.
    NoKernelTranslationOnUserGroup,
    /// 3.2: a kernel driver is bound to a device of a user-owned group.
    NoKernelDriverOnUserGroup,
    /// 3.3: user mappings survived the return of the group to the kernel.
    NoUserMappingAfterRelease,
    /// 3.3 (kernel side): a group given back to the kernel has no DMA translation for its
    /// devices (the v6.7 bug: the host driver finds no DMA table after the VM goes).
    KernelDmaRestored,
    /// 3.8 and group lifetime: references and counts do not add up.
    RefcountBalance,
}

/// One violation, naming what is at fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The rule.
    pub rule: Rule,
    /// The device at fault.
    pub device: Option<String>,
    /// The group at fault.
    pub group: Option<String>,
    /// The entry or count at fault.
    pub detail: String,
}

impl Violation {
    /// A violation.
    pub fn new(rule: Rule, device: Option<&str>, group: Option<&str>, detail: String) -> Self {
        Self {
            rule,
            device: device.map(str::to_string),
            group: group.map(str::to_string),
            detail,
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.rule)?;
        if let Some(g) = &self.group {
            write!(f, " group {g}")?;
        }
        if let Some(d) = &self.device {
            write!(f, " device {d}")?;
        }
        write!(f, ": {}", self.detail)
    }
}
