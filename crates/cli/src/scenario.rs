//! The scenario file format: a `[machine]` table and `[[step]]`s. Everything is checked
//! before anything runs: unknown tables, fields and operations (with the closest valid
//! name), values of the wrong kind, references to results no earlier step names.

use crate::doc::{closest, echo, parse_num, FileError, Node, Source, Val};
use crate::state_path::{self, Expectation, Known};
use iommu_core::Errno;
use spapr_papr::{
    HStatus, PhbConfig as PaprPhbConfig, Profile, RtasStatus, SpaprConfig, VioConfig,
};
use spapr_platform::{Design, DeviceConfig, PeScope, PhbConfig, PhbModel, PowerNvConfig};
use spapr_tce::PageSizes;
use spapr_vfio::KernelProfile;

/// Which machine a scenario describes.
#[derive(Clone, Debug)]
pub enum Machine {
    /// A PowerNV host: platform, core, VFIO.
    PowerNv {
        /// The machine.
        config: PowerNvConfig,
        /// Drivers bound at boot: (device, driver).
        drivers: Vec<(String, String)>,
        /// VFIO profile.
        profile: KernelProfile,
        /// `RLIMIT_MEMLOCK` for VFIO.
        memlock: u64,
        /// EEH on.
        eeh: bool,
        /// The readings of eeh.md 5 chosen by `eeh_flags`.
        eeh_flags: spapr_platform::EehFlags,
    },
    /// A pSeries guest: the PAPR interface.
    PSeries {
        /// Its DMA windows.
        config: SpaprConfig,
        /// Guest PHBs whose devices are host devices passed through VFIO: (PHB position,
        /// host device names, guest bus).
        passthrough: Vec<(usize, Vec<String>, u8)>,
    },
}

/// One step.
#[derive(Clone, Debug)]
pub struct Step {
    /// Operation name.
    pub op: &'static OpSpec,
    /// Fields other than the generic ones, in file order.
    pub args: Vec<(String, Node)>,
    /// The expectation, if any.
    pub expect: Option<String>,
    /// Name for the result.
    pub name: Option<String>,
    /// Times to run.
    pub repeat: u64,
    /// Per-repetition increments of numeric fields.
    /// (Negative steps count down; a value that leaves the field's range is an error.)
    pub vary: Vec<(String, i128)>,
    /// Line in the file.
    pub line: usize,
    /// Expectations on the state once the step has run (the `state` table).
    pub state: Vec<Expectation>,
}

/// A whole scenario.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Its name.
    pub name: String,
    /// The machine.
    pub machine: Machine,
    /// Run every invariant check after every step.
    pub check_each_step: bool,
    /// The final state tree lists every valid TCE run with its raw value (`--tables`).
    pub full_tables: bool,
    /// Draw the final machine as an SVG (`--svg`), in [`crate::report::Report::svg`].
    pub svg: bool,
    /// Steps.
    pub steps: Vec<Step>,
    /// Final checks that must be violated (a buggy design shown being caught).
    pub expect_violations: Vec<String>,
    /// The file.
    pub source: Source,
}

/// Which machine an operation needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Needs {
    /// PowerNV.
    PowerNv,
    /// pSeries.
    PSeries,
    /// Either.
    Any,
}

/// An operation: its name, the machine it needs, its fields.
#[derive(Debug)]
pub struct OpSpec {
    /// Name in files.
    pub name: &'static str,
    /// Machine.
    pub needs: Needs,
    /// Required fields.
    pub required: &'static [&'static str],
    /// Optional fields.
    pub optional: &'static [&'static str],
    /// What it does, and the kernel or PAPR call it models.
    pub what: &'static str,
}

macro_rules! ops {
    ($($name:literal $needs:ident [$($req:literal),*] [$($opt:literal),*] $what:literal;)*) => {
        /// Every operation a scenario can use.
        pub static OPS: &[OpSpec] = &[$(OpSpec {
            name: $name,
            needs: Needs::$needs,
            required: &[$($req),*],
            optional: &[$($opt),*],
            what: $what,
        }),*];
    };
}

ops! {
    // Checks and views.
    "check" Any [] [] "run every invariant check now (kernel.md section 3; pSeries window rules)";
    "show" Any [] ["tables"] "print the state tree at this point (`tables = true`: every valid TCE, all 64 bits)";
    "assert" Any ["state"] [] "call nothing: only check the step's `state` expectations";
    // IOMMU core and platform.
    "bind" PowerNv ["device", "driver"] [] "bind a kernel driver (iommu_device_use_default_domain); gives it a DMA session";
    "unbind" PowerNv ["device"] [] "unbind the device's driver";
    "claim" PowerNv ["device"] ["owner"] "claim the device's group for a user (iommu_group_claim_dma_owner)";
    "release" PowerNv ["device"] [] "release the group claim (iommu_group_release_dma_owner); without one, the kernel's WARN and nothing changes";
    "claim_device" PowerNv ["device"] ["owner"] "claim DMA ownership through one device (iommu_device_claim_dma_owner); the same owner may claim again";
    "release_device" PowerNv ["device"] [] "release the device's claim (iommu_device_release_dma_owner); without one, the kernel's WARN and nothing changes";
    "hot_add" PowerNv ["device", "phb", "bus"] ["devfn", "dma_mask"] "hot-plug a PCI device under a PHB (iommu_probe_device, device_group)";
    "hot_remove" PowerNv ["device"] [] "hot-unplug a device; the group goes with its last device";
    "dma_alloc" PowerNv ["device", "size"] ["dir"] "dma_alloc_coherent for the bound driver: RAM plus a bus address";
    "dma_free" PowerNv ["device", "dma"] [] "dma_free_coherent";
    "dma_map" PowerNv ["device", "phys", "size"] ["dir", "cpu"] "dma_map_page of real memory (the kernel allocator, or bypass)";
    "dma_unmap" PowerNv ["device", "dma", "size"] ["cpu"] "dma_unmap_page";
    "device_read" Any ["addr"] ["device", "phb", "len", "data"] "the device reads by DMA through its translation (fault recorded)";
    "device_write" Any ["addr", "data"] ["device", "phb"] "the device writes by DMA through its translation (fault recorded)";
    "ram_write" PowerNv ["addr", "data"] [] "write host RAM directly";
    "ram_read" PowerNv ["addr", "data"] [] "read host RAM and compare";
    "fail_next_set_window" PowerNv ["opal"] [] "make the next OPAL set-window call fail (error injection)";
    // EEH.
    "stray_tce" PowerNv ["device", "window", "entry", "tce"] ["kill"] "fault injection for a kernel bug: a raw 64-bit TCE stored into entry `entry` of the table in window 0 or 1 of the device's PE by no kernel path (not VFIO, not the DMA API), with a PE-wide kill after it if `kill = true`; the checker judges it by provenance";
    "config_read" PowerNv ["device"] ["value"] "a config-space read of the device (a register reading 0; `value` is the expected read): all-ones while an EEH reset keeps its PE's config space blocked";
    "mmio_read" PowerNv ["device"] ["value"] "an MMIO load from the device's BAR: all-ones while its PE is frozen (an all-ones read on a host-owned PE isolates it); `value` compares";
    "eeh_recover" PowerNv ["device"] ["results"] "the host's eeh_handle_normal_event on the device's isolated PE; `results` scripts each device driver's error_detected answer (none, can_recover, need_reset, recovered, disconnect)";
    "clock_advance" PowerNv ["seconds"] [] "advance the virtual clock EEH counts freezes on";
    "vfio_ioctl" PowerNv ["container", "nr"] ["arg", "bytes", "u32", "u64", "process"] "a raw ioctl on a container fd: `nr` by name (GET_API_VERSION, CHECK_EXTENSION, SET_IOMMU, SPAPR_TCE_GET_INFO, MAP_DMA, UNMAP_DMA, ENABLE, DISABLE, REGISTER_MEMORY, UNREGISTER_MEMORY, TCE_CREATE, TCE_REMOVE, EEH_PE_OP) or number, with an integer `arg` or a buffer given as `bytes`, `u32` or `u64` (little-endian, as on ppc64le); `as` names the result and the buffer's first 64-bit words after the call (.w0, .w1 ...)";
    "vfio_eeh_pe_op" PowerNv ["container", "eeh_op"] ["argsz", "flags", "type", "func", "process"] "VFIO_EEH_PE_OP: disable, enable, unfreeze_io, unfreeze_dma, get_state, reset_deactivate, reset_hot, reset_fundamental, configure, inject_err (or a number)";
    "fail" PowerNv ["call"] ["device", "nth", "opal"] "make the nth (default 1st) call of a kernel operation fail, on the device's PE or any: set_window (OPAL), create_table, user_table, tce_store (a level allocation during MAP), pin, region_lookup, eeh_thaw (the freeze sticks: the thaw is -EIO)";
    "phb_fence" PowerNv ["phb"] [] "the PHB fences (an error it cannot pin on one PE): every PE under it stops; the first all-ones read isolates the PHB PE";
    "phb_kill" PowerNv ["phb"] [] "the PHB dies (OPAL_HARDWARE): its PEs read NOT_SUPPORT (GET_STATE 2), thaws return 0 and change nothing, no reset brings it back";
    "phb_recover" PowerNv ["phb"] [] "the host's recovery of an isolated PHB PE: the PHB's complete reset (eeh_pe_reset_full), windows kept, TCE cache killed, passed PEs re-frozen for their owners";
    // VFIO.
    "profile" Any [] ["kernel", "papr"] "switch the kernel (linux/strict) or PAPR (qemu/kvm/lopar) profile";
    "mmap" PowerNv ["size"] ["process", "page_size"] "map anonymous memory into a process (the VMM's guest RAM)";
    "vfio_register_device" PowerNv ["device"] [] "bind vfio-pci to the device (driver_managed_dma)";
    "vfio_open_container" PowerNv [] [] "open /dev/vfio/vfio";
    "vfio_open_group" PowerNv ["device"] [] "open /dev/vfio/GROUP";
    "vfio_open_emulated_group" PowerNv [] [] "open the group of an emulated-IOMMU (mdev) device: no PE behind it; the SPAPR TCE driver refuses it at attach (-EINVAL)";
    "vfio_set_container" PowerNv ["group", "container"] [] "VFIO_GROUP_SET_CONTAINER: claims DMA ownership, isolates the PE";
    "vfio_unset_container" PowerNv ["group"] [] "VFIO_GROUP_UNSET_CONTAINER: clears TCEs, gives the PE back";
    "vfio_open_device" PowerNv ["group", "device"] [] "VFIO_GROUP_GET_DEVICE_FD";
    "vfio_close_device" PowerNv ["group"] [] "close the device fd";
    "vfio_close_group" PowerNv ["group"] [] "close the group fd";
    "vfio_close_container" PowerNv ["container"] [] "close the container fd: frees windows, returns charges";
    "vfio_check_extension" PowerNv ["container", "arg"] ["process"] "VFIO_CHECK_EXTENSION";
    "vfio_set_iommu" PowerNv ["container", "type"] ["process"] "VFIO_SET_IOMMU: 2 = SPAPR TCE v1, 7 = v2";
    "vfio_enable" PowerNv ["container"] ["process"] "VFIO_IOMMU_ENABLE (v1): charge and enable";
    "vfio_disable" PowerNv ["container"] ["process"] "VFIO_IOMMU_DISABLE (v1)";
    "vfio_get_info" PowerNv ["container"] ["argsz", "process"] "VFIO_IOMMU_SPAPR_TCE_GET_INFO; names its fields";
    "vfio_register_memory" PowerNv ["container", "vaddr", "size"] ["flags", "process"] "VFIO_IOMMU_SPAPR_REGISTER_MEMORY (v2 preregistration)";
    "vfio_unregister_memory" PowerNv ["container", "vaddr", "size"] ["flags", "process"] "VFIO_IOMMU_SPAPR_UNREGISTER_MEMORY";
    "vfio_create_window" PowerNv ["container", "page_size", "window_size"] ["levels", "flags", "process"] "VFIO_IOMMU_SPAPR_TCE_CREATE: a dynamic DMA window";
    "vfio_remove_window" PowerNv ["container", "start"] ["flags", "process"] "VFIO_IOMMU_SPAPR_TCE_REMOVE";
    "vfio_map_dma" PowerNv ["container", "vaddr", "iova", "size"] ["flags", "argsz", "process"] "VFIO_IOMMU_MAP_DMA";
    "vfio_unmap_dma" PowerNv ["container", "iova", "size"] ["flags", "argsz", "process"] "VFIO_IOMMU_UNMAP_DMA";
    // pSeries guest.
    "h_put_tce" PSeries ["liobn", "ioba", "tce"] [] "H_PUT_TCE";
    "h_get_tce" PSeries ["liobn", "ioba"] ["value"] "H_GET_TCE; `value` compares r4";
    "h_stuff_tce" PSeries ["liobn", "ioba", "tce", "count"] [] "H_STUFF_TCE";
    "h_put_tce_indirect" PSeries ["liobn", "ioba", "list", "count"] [] "H_PUT_TCE_INDIRECT (the list read from guest memory)";
    "hcall" PSeries ["opcode"] ["args", "problem_state", "value"] "any hypercall by opcode, through the dispatcher";
    "rtas" PSeries ["call", "args"] ["nret", "rets"] "a DDW RTAS call (query, create, remove, reset) with its arguments";
    "rtas_buffer" PSeries ["addr", "token", "args"] ["nret", "rets"] "an RTAS call through a PAPR argument buffer in guest memory (KVMPPC_H_RTAS)";
    "guest_write" PSeries ["addr"] ["u64be", "u32be", "data"] "write guest memory (text, or big-endian u64/u32 words)";
    "guest_read" PSeries ["addr"] ["u64be", "u32be", "data", "words"] "read guest memory and compare; with `words = N` (1..8) read N big-endian 64-bit words into the step's `as` name ($x is word 0, $x.w1 the next)";
    "machine_reset" PSeries [] [] "reset the machine: default windows back, a fresh guest kernel";
    "linux_enable_ddw" PSeries [] ["phb", "cfg", "ram", "max_memory", "dma_mask", "scratch"] "the Linux guest kernel's enable_ddw (pseries/iommu.c) on a PHB";
    "linux_dma_map" PSeries ["gpa", "size"] ["phb", "dir"] "a guest driver's dma_map through the default window (the guest kernel's allocator, H_PUT_TCE)";
    "rtas_eeh" PSeries ["call"] ["phb", "addr", "option", "function", "severity", "nret", "rets"] "an EEH RTAS call as QEMU 7.2 answers it: set_eeh_option, get_config_addr_info2, read_slot_reset_state2, set_slot_reset, configure_pe, slot_error_detail (the BUID is the PHB's; on a PHB with `vfio` devices it drives the host container's VFIO_EEH_PE_OP)";
    "host_dma" PSeries ["device", "addr"] ["dir"] "a passed-through host device DMAs at a host bus address (read, or write with dir = \"write\"); a fault freezes its host PE";
    "host_mmio_read" PSeries ["device"] ["value"] "the guest reads a passed-through device's BAR (a register reading 0; `value` is the expected read): all-ones while its host PE is frozen";
    "linux_dma_unmap" PSeries ["dma", "size"] ["phb"] "a guest driver's dma_unmap: H_PUT_TCE 0, pages back to the allocator";
    "save_phb" PSeries ["phb"] [] "save a PHB's windows (versioned bytes)";
    "restore_phb" PSeries ["phb", "from"] [] "restore a PHB's windows from a save";
}

/// One field of the `[machine]` tables: where it goes, what it takes, its default and
/// what it models. The parser accepts exactly these fields (`spapr-iommu fields` prints
/// them), so this list and the parser cannot drift apart.
#[derive(Debug)]
pub struct FieldDoc {
    /// The table (`[machine]`, `[[machine.phb]]`, `[[machine.device]]`, `pes`, `[[machine.vio]]`).
    pub table: &'static str,
    /// The machine kind it belongs to.
    pub kind: Needs,
    /// Field name.
    pub name: &'static str,
    /// What it takes.
    pub takes: &'static str,
    /// Its default (`required` if it has none).
    pub default: &'static str,
    /// What it sets, and the kernel or firmware notion it models.
    pub what: &'static str,
}

macro_rules! fields {
    ($($table:literal $kind:ident $name:literal $takes:literal $default:literal $what:literal;)*) => {
        /// Every field of the `[machine]` tables.
        pub static MACHINE_FIELDS: &[FieldDoc] = &[$(FieldDoc {
            table: $table,
            kind: Needs::$kind,
            name: $name,
            takes: $takes,
            default: $default,
            what: $what,
        }),*];
    };
}

fields! {
    "[machine]" Any "kind" "\"powernv\" or \"pseries\"" "\"powernv\"" "a PowerNV host (platform, IOMMU core, VFIO) or a pSeries guest (PAPR hypercalls and RTAS)";
    "[machine]" Any "check_each_step" "true or false" "false" "run every invariant check after every step and stop at the first that breaks";
    "[machine]" PowerNv "ram" "a size (\"8G\")" "8G" "host RAM: bypass maps all of it, kernel buffers and VFIO user memory come from it";
    "[machine]" PowerNv "host_page_size" "\"4K\" or \"64K\"" "64K" "the host kernel's PAGE_SIZE: locked_vm is counted in these pages";
    "[machine]" PowerNv "design" "\"v1\", \"v6.7\" or \"fixed\"" "\"fixed\"" "which history of the PowerPC IOMMU driver: the v1 patch, Linux 6.7, or the fixed design";
    "[machine]" PowerNv "bypass" "true or false" "true" "false is the boot option iommu=nobypass: no TVE#1 direct window";
    "[machine]" PowerNv "profile" "\"linux\" or \"strict\"" "\"linux\"" "linux reproduces the kernel's quirks (traced); strict fixes them";
    "[machine]" PowerNv "memlock" "a size" "4G" "RLIMIT_MEMLOCK of the VFIO user process (locked_vm limit)";
    "[machine]" PowerNv "eeh" "true or false" "false" "EEH on: a faulting DMA freezes its PE until software recovers it (off: the fault is recorded and DMA goes on)";
    "[machine]" PowerNv "eeh_flags" "[\"linux-6.12\", \"peev-sticky\", \"linux-old-open\"]" "none" "eeh.md 5's other readings: INJECT_ERR's bad type -ERANGE; PEEV set by hardware only (a software freeze reads not frozen); a failed eeh_dev_open fails the device open";
    "[machine]" PowerNv "phb" "[[machine.phb]] tables" "required" "the PCI host bridges";
    "[machine]" PowerNv "device" "[[machine.device]] tables" "none" "PCI functions present at boot";
    "[[machine.phb]]" PowerNv "model" "\"phb3\", \"phb4\" or \"ioda1\"" "required" "IODA2 PHBs (DDW, bypass) or IODA1 (PEs borrow one 32-bit table)";
    "[[machine.phb]]" PowerNv "m32_base" "a number" "0x80000000" "base of the 32-bit MMIO window (the 32-bit DMA window stops below it)";
    "[[machine.phb]]" PowerNv "pes" "[{ number, bus[, devfn] }, ...]" "none" "partitionable endpoints: a whole bus, or one function";
    "[[machine.phb]]" PowerNv "device_group" "true or false" "true" "false models a controller without the device_group callback (-ENOENT at probe)";
    "[[machine.phb]]" PowerNv "tce32_size" "a size, at most 4G" "m32_base" "the 32-bit DMA window VFIO sees (0: none, so v1 ENABLE is -EPERM and v2's default window cannot be made)";
    "[[machine.phb]]" PowerNv "ddw_table" "true or false" "false" "ioda1 only: each PE also gets a second kernel table over RAM at the 64-bit base (pSeries' table-backed DDW), which its 64-bit devices map through; taking ownership takes both";
    "[[machine.phb]]" PowerNv "xchg_no_kill" "true or false" "true" "false: the kernel's tables lack xchg_no_kill, so iommu_take_ownership refuses an IODA1 PE's tables (-EINVAL) and nobody can claim its group";
    "[[machine.phb]]" PowerNv "create_table" "\"ioda2\" or \"npu\"" "\"ioda2\"" "the PEs' create_table op; VFIO puts only groups with the same ops in one container (-EPERM)";
    "pes" PowerNv "number" "0..4095" "required" "the PE number (its TVEs are 2n and 2n+1)";
    "pes" PowerNv "bus" "0..255" "required" "the bus the PE covers";
    "pes" PowerNv "devfn" "0..255" "the whole bus" "one function only";
    "[[machine.device]]" PowerNv "name" "text" "required" "the name steps use";
    "[[machine.device]]" PowerNv "phb" "a PHB index" "required" "its host bridge, counted from 0 in file order";
    "[[machine.device]]" PowerNv "bus" "0..255" "required" "its bus";
    "[[machine.device]]" PowerNv "devfn" "0..255" "0" "its device/function";
    "[[machine.device]]" PowerNv "dma_mask" "32..64 (bits)" "64" "dma_set_mask: 32-bit devices DMA through window 0, 64-bit ones may use bypass";
    "[[machine.device]]" PowerNv "driver" "text" "none" "a kernel driver bound at boot (\"vfio-pci\" is driver_managed_dma)";
    "[[machine.device]]" PowerNv "vf" "\"flr\", \"af_flr\" or \"none\"" "not a VF" "an SR-IOV VF with a VF PE, reset by PCIe FLR, AF FLR, or not at all (an EEH reset is -ENOTTY)";
    "[machine]" PSeries "ram" "a size, a multiple of 4K, at most 64G" "4G" "guest RAM";
    "[machine]" PSeries "profile" "\"qemu\", \"kvm\" or \"lopar\"" "\"kvm\"" "whose hypercall and RTAS behaviour where they differ (papr.md)";
    "[machine]" PSeries "phb" "[[machine.phb]] tables" "one PHB, index 0" "the guest's PCI host bridges";
    "[machine]" PSeries "vio" "[[machine.vio]] tables" "one at reg 0x2000" "VIO devices with their own TCE window";
    "[[machine.phb]]" PSeries "index" "a number (32 bits)" "its position" "the PHB's index (its LIOBNs derive from it)";
    "[[machine.phb]]" PSeries "ddw" "true or false" "true" "whether the ibm,ddw-applicable RTAS calls are offered";
    "[[machine.phb]]" PSeries "dma_win_addr" "a number" "0" "bus address of the default 32-bit window";
    "[[machine.phb]]" PSeries "dma_win_size" "a size" "1G" "size of the default window";
    "[[machine.phb]]" PSeries "dma64_win_addr" "a number" "0x800000000000000" "where a dynamic window starts";
    "[[machine.phb]]" PSeries "vfio" "a host device name, or a list of them" "none (emulated devices only)" "host devices (of the seed host: nic0, nvme0, gpu0) passed through one VFIO v2 container: this PHB's EEH RTAS calls drive the container's VFIO_EEH_PE_OP";
    "[[machine.phb]]" PSeries "vfio_bus" "0..255" "1" "the guest bus the passed devices sit on (device k at devfn k)";
    "[[machine.phb]]" PSeries "page_sizes" "[\"4K\", \"64K\", ...]" "4K, 64K, 2M, 16M" "IOMMU page sizes a DDW may use";
    "[[machine.vio]]" PSeries "reg" "a number (32 bits)" "required" "the VIO device's reg, also its LIOBN";
    "[[machine.vio]]" PSeries "window" "a size" "256M" "its TCE window";
}

/// The fields `table` takes on a machine of `kind`.
fn allowed_fields(table: &str, kind: Needs) -> Vec<&'static str> {
    MACHINE_FIELDS
        .iter()
        .filter(|f| f.table == table && (f.kind == kind || f.kind == Needs::Any))
        .map(|f| f.name)
        .collect()
}

/// Fields every step may have.
pub const GENERIC: [&str; 7] = ["op", "expect", "as", "repeat", "vary", "note", "state"];

fn find_op(name: &str) -> Option<&'static OpSpec> {
    OPS.iter().find(|o| o.name == name)
}

/// Whether `s` is a valid expectation.
fn valid_expect(s: &str) -> bool {
    s == "ok"
        || s == "fault"
        || s == "clean"
        || s == "error"
        || s == "refused"
        || Errno::from_name(s).is_some()
        || HStatus::from_name(s).is_some()
        || RtasStatus::from_name(s).is_some()
        || s == "RTAS_NO_ERRORS_FOUND"
        || s.parse::<i64>().is_ok()
        || is_rule(s)
}

/// The kernel's security rules, checked on a PowerNV machine.
pub const RULES: [&str; 8] = [
    "NoKernelTranslationOnUserGroup",
    "NoKernelDriverOnUserGroup",
    "NoUserMappingAfterRelease",
    "KernelDmaRestored",
    "RefcountBalance",
    "WindowsBelongToOwner",
    "TceCacheCoherent",
    "NoDmaWhileFrozen",
];

/// The window rules, checked on a pSeries machine.
pub const PSERIES_RULES: [&str; 3] = ["WindowsDisjoint", "LiobnMatchesSlot", "NoStaleTranslation"];

/// Whether `s` names a rule a `check` step may expect or a scenario may expect violated.
fn is_rule(s: &str) -> bool {
    RULES.contains(&s) || PSERIES_RULES.contains(&s)
}

struct Ctx<'a> {
    src: &'a Source,
}

impl Ctx<'_> {
    fn err(&self, n: &Node, msg: impl Into<String>) -> FileError {
        self.src.err(&n.span, msg)
    }
    fn table<'n>(&self, n: &'n Node, what: &str) -> Result<&'n [(String, Node)], FileError> {
        match &n.val {
            Val::Table(t) => Ok(t),
            v => Err(self.err(n, format!("{what} must be a table, found {}", v.kind()))),
        }
    }
    fn num(&self, n: &Node, what: &str) -> Result<u64, FileError> {
        match &n.val {
            Val::Int(i) => u64::try_from(*i).map_err(|_| {
                self.err(
                    n,
                    if *i < 0 {
                        format!("{what} must be 0 or more, found {i}")
                    } else {
                        format!("{what}: {i:#x} does not fit in 64 bits")
                    },
                )
            }),
            Val::Str(s) => parse_num(s).map_err(|e| self.err(n, format!("{what}: {e}"))),
            v => Err(self.err(n, format!("{what} must be a number, found {}", v.kind()))),
        }
    }
    fn string<'n>(&self, n: &'n Node, what: &str) -> Result<&'n str, FileError> {
        match &n.val {
            Val::Str(s) => Ok(s),
            v => Err(self.err(n, format!("{what} must be a string, found {}", v.kind()))),
        }
    }
    fn boolean(&self, n: &Node, what: &str) -> Result<bool, FileError> {
        match &n.val {
            Val::Bool(b) => Ok(*b),
            v => Err(self.err(
                n,
                format!("{what} must be true or false, found {}", v.kind()),
            )),
        }
    }
    fn fields<'n>(
        &self,
        t: &'n [(String, Node)],
        whole: &Node,
        what: &str,
        allowed: &[&str],
        required: &[&str],
    ) -> Result<Fields<'n>, FileError> {
        for (k, v) in t {
            if !allowed.contains(&k.as_str()) {
                let hint = closest(k, allowed.iter().copied())
                    .map_or(String::new(), |c| format!(" (did you mean {c:?}?)"));
                return Err(self.err(
                    v,
                    format!(
                        "unknown field {} in {what}{hint}; expected one of: {}",
                        echo(k),
                        allowed.join(", ")
                    ),
                ));
            }
        }
        for r in required {
            if !t.iter().any(|(k, _)| k == r) {
                return Err(self.err(whole, format!("{what} needs the field {r:?}")));
            }
        }
        Ok(Fields(t))
    }
}

struct Fields<'n>(&'n [(String, Node)]);

impl<'n> Fields<'n> {
    fn get(&self, k: &str) -> Option<&'n Node> {
        self.0.iter().find(|(key, _)| key == k).map(|(_, v)| v)
    }
}

fn page_sizes(ctx: &Ctx<'_>, n: &Node) -> Result<PageSizes, FileError> {
    let Val::Arr(items) = &n.val else {
        return Err(ctx.err(n, "page_sizes must be an array like [\"4K\", \"64K\"]"));
    };
    let mut bits = 0u64;
    for i in items {
        let size = ctx.num(i, "a page size")?;
        if !size.is_power_of_two() || spapr_tce::PageShift::new(size.trailing_zeros()).is_err() {
            return Err(ctx.err(
                i,
                format!("page size {size:#x} is not one of 4K, 64K, 2M, 16M, 256M, 1G, 16G"),
            ));
        }
        bits |= size;
    }
    Ok(PageSizes(bits))
}

fn machine(ctx: &Ctx<'_>, n: &Node) -> Result<(Machine, bool), FileError> {
    let t = ctx.table(n, "[machine]")?;
    let kind_node = t.iter().find(|(k, _)| k == "kind").map(|(_, v)| v);
    let kind = match kind_node {
        Some(k) => ctx.string(k, "kind")?,
        None => "powernv",
    };
    match kind {
        "powernv" => powernv(ctx, n, t),
        "pseries" => pseries(ctx, n, t),
        other => Err(ctx.err(
            kind_node.unwrap_or(n),
            format!("unknown machine kind {other:?}; expected \"powernv\" or \"pseries\""),
        )),
    }
}

fn powernv(ctx: &Ctx<'_>, n: &Node, t: &[(String, Node)]) -> Result<(Machine, bool), FileError> {
    let f = ctx.fields(
        t,
        n,
        "[machine]",
        &allowed_fields("[machine]", Needs::PowerNv),
        &["phb"],
    )?;
    let mut cfg = PowerNvConfig {
        phbs: Vec::new(),
        devices: Vec::new(),
        ..PowerNvConfig::seed()
    };
    if let Some(v) = f.get("ram") {
        cfg.ram_size = ctx.num(v, "ram")?;
    }
    if let Some(v) = f.get("host_page_size") {
        let s = ctx.num(v, "host_page_size")?;
        if s != 4096 && s != 65536 {
            return Err(ctx.err(v, "host_page_size must be 4K or 64K"));
        }
        cfg.host_page_shift = s.trailing_zeros();
    }
    if let Some(v) = f.get("design") {
        let s = ctx.string(v, "design")?;
        cfg.design = Design::from_name(s).ok_or_else(|| {
            ctx.err(
                v,
                format!("unknown design {s:?}; expected \"v1\", \"v6.7\" or \"fixed\""),
            )
        })?;
    }
    if let Some(v) = f.get("bypass") {
        cfg.bypass_disabled = !ctx.boolean(v, "bypass")?;
    }
    let profile = match f.get("profile") {
        Some(v) => {
            let s = ctx.string(v, "profile")?;
            KernelProfile::from_name(s).ok_or_else(|| {
                ctx.err(
                    v,
                    format!("unknown profile {s:?}; expected \"linux\" or \"strict\""),
                )
            })?
        }
        None => KernelProfile::Linux,
    };
    let memlock = match f.get("memlock") {
        Some(v) => ctx.num(v, "memlock")?,
        None => 4 << 30,
    };
    let check = match f.get("check_each_step") {
        Some(v) => ctx.boolean(v, "check_each_step")?,
        None => false,
    };
    let eeh = match f.get("eeh") {
        Some(v) => ctx.boolean(v, "eeh")?,
        None => false,
    };
    let mut eeh_flags = spapr_platform::EehFlags::default();
    if let Some(v) = f.get("eeh_flags") {
        let Val::Arr(items) = &v.val else {
            return Err(ctx.err(v, "eeh_flags must be an array of flag names"));
        };
        for i in items {
            let name = ctx.string(i, "an EEH flag")?;
            if !eeh_flags.set(name) {
                let names = spapr_platform::EehFlags::NAMES;
                let hint = closest(name, names.iter().copied())
                    .map_or(String::new(), |c| format!(" (did you mean {c:?}?)"));
                return Err(ctx.err(
                    i,
                    format!(
                        "unknown EEH flag {}{hint}; expected one of: {}",
                        echo(name),
                        names.join(", ")
                    ),
                ));
            }
        }
    }
    let Some(phbs) = f.get("phb") else {
        return Err(ctx.err(n, "[machine] needs at least one [[machine.phb]]"));
    };
    let Val::Arr(phbs) = &phbs.val else {
        return Err(ctx.err(phbs, "phb must be an array of tables ([[machine.phb]])"));
    };
    for p in phbs {
        let pt = ctx.table(p, "[[machine.phb]]")?;
        let pf = ctx.fields(
            pt,
            p,
            "[[machine.phb]]",
            &allowed_fields("[[machine.phb]]", Needs::PowerNv),
            &["model"],
        )?;
        let model_node = pf.get("model").unwrap_or(p);
        let model = match ctx.string(model_node, "model")? {
            "phb3" => PhbModel::Phb3,
            "phb4" => PhbModel::Phb4,
            "ioda1" => PhbModel::Ioda1,
            other => {
                return Err(ctx.err(
                    model_node,
                    format!(
                        "unknown PHB model {other:?}; expected \"phb3\", \"phb4\" or \"ioda1\""
                    ),
                ))
            }
        };
        let mut pc = PhbConfig::new(model, Vec::new());
        if let Some(v) = pf.get("m32_base") {
            pc.m32_pci_base = ctx.num(v, "m32_base")?;
        }
        if let Some(v) = pf.get("device_group") {
            pc.device_group_callback = ctx.boolean(v, "device_group")?;
        }
        if let Some(v) = pf.get("tce32_size") {
            let size = ctx.num(v, "tce32_size")?;
            if size > 1 << 32 {
                return Err(ctx.err(v, format!("tce32_size {size:#x} is past 4G")));
            }
            pc.tce32_size = Some(size);
        }
        if let Some(v) = pf.get("ddw_table") {
            pc.ddw_table = ctx.boolean(v, "ddw_table")?;
            if pc.ddw_table && model != PhbModel::Ioda1 {
                return Err(ctx.err(v, "ddw_table is for ioda1 PHBs (PEs that borrow tables)"));
            }
        }
        if let Some(v) = pf.get("xchg_no_kill") {
            pc.xchg_no_kill = ctx.boolean(v, "xchg_no_kill")?;
        }
        if let Some(v) = pf.get("create_table") {
            let name = ctx.string(v, "create_table")?;
            pc.create_table = spapr_platform::CreateTable::from_name(name).ok_or_else(|| {
                ctx.err(
                    v,
                    format!("create_table {}: expected ioda2 or npu", echo(name)),
                )
            })?;
        }
        if let Some(v) = pf.get("pes") {
            let Val::Arr(pes) = &v.val else {
                return Err(ctx.err(v, "pes must be an array like [{ number = 1, bus = 1 }]"));
            };
            for pe in pes {
                let et = ctx.table(pe, "a PE")?;
                let ef = ctx.fields(
                    et,
                    pe,
                    "a PE",
                    &allowed_fields("pes", Needs::PowerNv),
                    &["number", "bus"],
                )?;
                let num = u32::try_from(ctx.num(ef.get("number").unwrap_or(pe), "number")?)
                    .map_err(|_| ctx.err(pe, "number must fit in 32 bits"))?;
                let bus = ctx.num(ef.get("bus").unwrap_or(pe), "bus")?;
                if bus > 255 {
                    return Err(ctx.err(pe, "bus must be 0..=255"));
                }
                let scope = match ef.get("devfn") {
                    Some(d) => {
                        let devfn = ctx.num(d, "devfn")?;
                        if devfn > 255 {
                            return Err(ctx.err(d, "devfn must be 0..=255"));
                        }
                        PeScope::Device(((bus as u16) << 8) | devfn as u16)
                    }
                    None => PeScope::Bus(bus as u8),
                };
                pc.pes.push((num, scope));
            }
        }
        cfg.phbs.push(pc);
    }
    let mut drivers = Vec::new();
    if let Some(devs) = f.get("device") {
        let Val::Arr(devs) = &devs.val else {
            return Err(ctx.err(
                devs,
                "device must be an array of tables ([[machine.device]])",
            ));
        };
        for d in devs {
            let dt = ctx.table(d, "[[machine.device]]")?;
            let df = ctx.fields(
                dt,
                d,
                "[[machine.device]]",
                &allowed_fields("[[machine.device]]", Needs::PowerNv),
                &["name", "phb", "bus"],
            )?;
            let name = ctx.string(df.get("name").unwrap_or(d), "name")?.to_string();
            let phb = u32::try_from(ctx.num(df.get("phb").unwrap_or(d), "phb")?)
                .map_err(|_| ctx.err(d, "phb must fit in 32 bits"))?;
            let bus = ctx.num(df.get("bus").unwrap_or(d), "bus")?;
            let devfn = match df.get("devfn") {
                Some(v) => ctx.num(v, "devfn")?,
                None => 0,
            };
            let mask = match df.get("dma_mask") {
                Some(v) => {
                    let m = ctx.num(v, "dma_mask")?;
                    if !(1..=64).contains(&m) {
                        return Err(
                            ctx.err(v, format!("dma_mask is a width in bits, 1..=64; found {m}"))
                        );
                    }
                    m
                }
                None => 64,
            };
            for (field, val) in [("bus", bus), ("devfn", devfn)] {
                if val > 255 {
                    let at = df.get(field).unwrap_or(d);
                    return Err(ctx.err(at, format!("{field} must be 0..=255, found {val}")));
                }
            }
            if let Some(v) = df.get("driver") {
                drivers.push((name.clone(), ctx.string(v, "driver")?.to_string()));
            }
            let mut dc = DeviceConfig::new(&name, phb, bus as u8, devfn as u8, mask as u32);
            if let Some(v) = df.get("vf") {
                let how = ctx.string(v, "vf")?;
                dc.vf = Some(spapr_platform::VfReset::from_name(how).ok_or_else(|| {
                    ctx.err(v, format!("vf {}: expected flr, af_flr or none", echo(how)))
                })?);
            }
            cfg.devices.push(dc);
        }
    }
    cfg.validate().map_err(|e| ctx.err(n, e.to_string()))?;
    for (dev, _) in &drivers {
        if !cfg.devices.iter().any(|d| &d.name == dev) {
            return Err(ctx.err(n, format!("driver for unknown device {dev:?}")));
        }
    }
    Ok((
        Machine::PowerNv {
            config: cfg,
            drivers,
            profile,
            memlock,
            eeh,
            eeh_flags,
        },
        check,
    ))
}

fn pseries(ctx: &Ctx<'_>, n: &Node, t: &[(String, Node)]) -> Result<(Machine, bool), FileError> {
    let f = ctx.fields(
        t,
        n,
        "[machine]",
        &allowed_fields("[machine]", Needs::PSeries),
        &[],
    )?;
    let mut cfg = SpaprConfig {
        phbs: Vec::new(),
        vio: Vec::new(),
        ..SpaprConfig::default()
    };
    if let Some(v) = f.get("ram") {
        cfg.ram_size = ctx.num(v, "ram")?;
        if cfg.ram_size == 0 || cfg.ram_size > 64 << 30 || cfg.ram_size % 4096 != 0 {
            return Err(ctx.err(v, "ram must be a multiple of 4K, at most 64G"));
        }
    }
    if let Some(v) = f.get("profile") {
        let s = ctx.string(v, "profile")?;
        cfg.profile = Profile::from_name(s).ok_or_else(|| {
            ctx.err(
                v,
                format!("unknown profile {s:?}; expected \"qemu\", \"kvm\" or \"lopar\""),
            )
        })?;
    }
    let mut passthrough: Vec<(usize, Vec<String>, u8)> = Vec::new();
    let check = match f.get("check_each_step") {
        Some(v) => ctx.boolean(v, "check_each_step")?,
        None => false,
    };
    match f.get("phb") {
        None => cfg.phbs.push(PaprPhbConfig::qemu(0)),
        Some(v) => {
            let Val::Arr(phbs) = &v.val else {
                return Err(ctx.err(v, "phb must be an array of tables ([[machine.phb]])"));
            };
            for p in phbs {
                let pt = ctx.table(p, "[[machine.phb]]")?;
                let pf = ctx.fields(
                    pt,
                    p,
                    "[[machine.phb]]",
                    &allowed_fields("[[machine.phb]]", Needs::PSeries),
                    &[],
                )?;
                let index = match pf.get("index") {
                    Some(v) => u32::try_from(ctx.num(v, "index")?)
                        .map_err(|_| ctx.err(v, "index must fit in 32 bits"))?,
                    None => {
                        u32::try_from(cfg.phbs.len()).map_err(|_| ctx.err(p, "too many PHBs"))?
                    }
                };
                let mut pc = PaprPhbConfig::qemu(index);
                if let Some(v) = pf.get("ddw") {
                    pc.ddw = ctx.boolean(v, "ddw")?;
                }
                if let Some(v) = pf.get("dma_win_addr") {
                    pc.dma_win_addr = ctx.num(v, "dma_win_addr")?;
                }
                if let Some(v) = pf.get("dma_win_size") {
                    pc.dma_win_size = ctx.num(v, "dma_win_size")?;
                }
                if let Some(v) = pf.get("dma64_win_addr") {
                    pc.dma64_win_addr = ctx.num(v, "dma64_win_addr")?;
                }
                if let Some(v) = pf.get("page_sizes") {
                    pc.page_sizes = page_sizes(ctx, v)?;
                }
                if let Some(v) = pf.get("vfio") {
                    let names: Vec<String> = match &v.val {
                        Val::Arr(a) => a
                            .iter()
                            .map(|n| ctx.string(n, "vfio").map(str::to_string))
                            .collect::<Result<_, _>>()?,
                        _ => vec![ctx.string(v, "vfio")?.to_string()],
                    };
                    const HOST: [&str; 3] = ["nic0", "nvme0", "gpu0"];
                    for (i, name) in names.iter().enumerate() {
                        if !HOST.contains(&name.as_str()) {
                            let hint = closest(name, HOST.iter().copied())
                                .map_or(String::new(), |c| format!(" (did you mean {c:?}?)"));
                            return Err(
                                ctx.err(v, format!("the host has no device {}{hint}", echo(name)))
                            );
                        }
                        if names[..i].contains(name) {
                            return Err(ctx.err(v, format!("{} is named twice", echo(name))));
                        }
                    }
                    if names.is_empty() {
                        return Err(ctx.err(v, "vfio names at least one host device"));
                    }
                    let bus = match pf.get("vfio_bus") {
                        Some(b) => {
                            let n = ctx.num(b, "vfio_bus")?;
                            u8::try_from(n).map_err(|_| {
                                ctx.err(b, format!("vfio_bus must be 0..=255, found {n}"))
                            })?
                        }
                        None => 1,
                    };
                    for (_, others, _) in &passthrough {
                        if let Some(n) = names.iter().find(|n| others.contains(n)) {
                            return Err(
                                ctx.err(v, format!("{} is passed to another PHB already", echo(n)))
                            );
                        }
                    }
                    passthrough.push((cfg.phbs.len(), names, bus));
                } else if let Some(b) = pf.get("vfio_bus") {
                    return Err(ctx.err(b, "vfio_bus needs vfio"));
                }
                cfg.phbs.push(pc);
            }
        }
    }
    if let Some(v) = f.get("vio") {
        let Val::Arr(vios) = &v.val else {
            return Err(ctx.err(v, "vio must be an array of tables ([[machine.vio]])"));
        };
        for vio in vios {
            let vt = ctx.table(vio, "[[machine.vio]]")?;
            let vf = ctx.fields(
                vt,
                vio,
                "[[machine.vio]]",
                &allowed_fields("[[machine.vio]]", Needs::PSeries),
                &["reg"],
            )?;
            let reg = ctx.num(vf.get("reg").unwrap_or(vio), "reg")?;
            let window = match vf.get("window") {
                Some(w) => ctx.num(w, "window")?,
                None => 0x1000_0000,
            };
            cfg.vio.push(VioConfig {
                reg: u32::try_from(reg).map_err(|_| ctx.err(vio, "reg must fit in 32 bits"))?,
                window_size: window,
            });
        }
    }
    spapr_papr::Spapr::new(cfg.clone()).map_err(|e| ctx.err(n, e.to_string()))?;
    Ok((
        Machine::PSeries {
            config: cfg,
            passthrough,
        },
        check,
    ))
}

/// `error_detected` answers an `eeh_recover` step scripts.
const DRIVER_RESULTS: [&str; 5] = [
    "none",
    "recovered",
    "can_recover",
    "disconnect",
    "need_reset",
];

/// `VFIO_EEH_PE_*` ops by name, in number order.
pub const EEH_OPS: [&str; 10] = [
    "disable",
    "enable",
    "unfreeze_io",
    "unfreeze_dma",
    "get_state",
    "reset_deactivate",
    "reset_hot",
    "reset_fundamental",
    "configure",
    "inject_err",
];

/// The number of the EEH op named `s`.
pub fn eeh_op_number(s: &str) -> Option<u32> {
    EEH_OPS.iter().position(|o| *o == s).map(|i| i as u32)
}

/// Fields that hold text.
const TEXT_FIELDS: [&str; 8] = [
    "device", "driver", "dir", "data", "call", "kernel", "papr", "opal",
];
/// Fields that hold arrays of numbers.
const ARRAY_FIELDS: [&str; 7] = ["args", "rets", "u64be", "u32be", "bytes", "u32", "u64"];

/// The width of the field a step's number feeds: a value that does not fit is an error,
/// never truncated (checked on the file's literals, and again on `$` results and `vary`
/// values when the step runs).
pub fn field_bits(op: &str, field: &str) -> u32 {
    match (op, field) {
        (_, "bus" | "devfn") => 8,
        ("rtas" | "rtas_buffer", "args" | "rets" | "token" | "nret") => 32,
        ("vfio_eeh_pe_op", "type" | "func" | "eeh_op") => 32,
        ("rtas_eeh", "addr" | "option" | "function" | "severity" | "nret" | "rets") => 32,
        ("config_read", "value") => 32,
        ("vfio_ioctl", "bytes") => 8,
        ("vfio_ioctl", "u32" | "nr") => 32,
        (_, "u32be") => 32,
        (
            _,
            "phb" | "cpu" | "process" | "container" | "group" | "argsz" | "flags" | "levels"
            | "nth" | "cfg",
        ) => 32,
        _ => 64,
    }
}

/// The largest value a field of `op` holds (from [`field_bits`]).
pub fn field_max(op: &str, field: &str) -> u64 {
    match field_bits(op, field) {
        64 => u64::MAX,
        bits => (1u64 << bits) - 1,
    }
}

/// Fields that take negative numbers (two's complement at the field's width): RTAS
/// status words, hypercall arguments and compared values.
pub fn field_signed(field: &str) -> bool {
    matches!(field, "rets" | "args" | "value")
}

/// Checks a field's value has the kind the field takes (numbers parse, text is text).
fn check_field(ctx: &Ctx<'_>, op: &str, key: &str, n: &Node) -> Result<(), FileError> {
    let what = format!("{key} of {op}");
    if key == "results" {
        let Val::Arr(items) = &n.val else {
            return Err(ctx.err(n, format!("{what} must be an array of driver answers")));
        };
        for i in items {
            let s = ctx.string(i, "a driver answer")?;
            if spapr_platform::DriverResult::from_name(s).is_none() {
                let hint = closest(s, DRIVER_RESULTS.iter().copied())
                    .map_or(String::new(), |c| format!(" (did you mean {c:?}?)"));
                return Err(ctx.err(
                    i,
                    format!(
                        "unknown driver answer {}{hint}; expected one of: {}",
                        echo(s),
                        DRIVER_RESULTS.join(", ")
                    ),
                ));
            }
        }
        return Ok(());
    }
    // An ioctl by name: `check_raw_ioctl` knows the names.
    if let (true, Val::Str(s)) = (key == "nr", &n.val) {
        if !s.starts_with('$') && parse_num(s).is_err() {
            return Ok(());
        }
    }
    if let (true, Val::Str(s)) = (key == "eeh_op", &n.val) {
        if !s.starts_with('$') && parse_num(s).is_err() {
            if eeh_op_number(s).is_none() {
                let hint = closest(s, EEH_OPS.iter().copied())
                    .map_or(String::new(), |c| format!(" (did you mean {c:?}?)"));
                return Err(ctx.err(
                    n,
                    format!(
                        "unknown EEH op {}{hint}; expected one of: {}",
                        echo(s),
                        EEH_OPS.join(", ")
                    ),
                ));
            }
            return Ok(());
        }
    }
    if key == "problem_state" || key == "tables" || key == "kill" {
        return ctx.boolean(n, &what).map(drop);
    }
    if TEXT_FIELDS.contains(&key) {
        return ctx.string(n, &what).map(drop);
    }
    if key == "flags" && matches!(&n.val, Val::Str(s) if ["r", "w", "rw"].contains(&s.as_str())) {
        return Ok(());
    }
    let bits = field_bits(op, key);
    let max = field_max(op, key);
    let number = |n: &Node| -> Result<(), FileError> {
        let v = match &n.val {
            Val::Str(s) if s.starts_with('$') => return Ok(()),
            Val::Int(i) if *i < 0 => {
                let min = -(1i128 << (bits - 1));
                return if !field_signed(key) {
                    Err(ctx.err(n, format!("{what} must be 0 or more, found {i}")))
                } else if *i < min {
                    Err(ctx.err(n, format!("{what}: {i} does not fit in {bits} bits")))
                } else {
                    Ok(())
                };
            }
            _ => ctx.num(n, &what)?,
        };
        if key == "dma_mask" && !(1..=64).contains(&v) {
            return Err(ctx.err(n, format!("{what} is a width in bits, 1..=64; found {v}")));
        }
        if v > max {
            return Err(ctx.err(
                n,
                format!("{what}: {v:#x} does not fit in the {bits}-bit field it feeds"),
            ));
        }
        Ok(())
    };
    if ARRAY_FIELDS.contains(&key) {
        let Val::Arr(items) = &n.val else {
            return Err(ctx.err(
                n,
                format!("{what} must be an array of numbers, found {}", n.val.kind()),
            ));
        };
        return items.iter().try_for_each(number);
    }
    number(n)
}

/// The OPAL error an `opal` field names.
pub fn opal_error(name: &str) -> Option<spapr_platform::OpalError> {
    match name {
        "parameter" => Some(spapr_platform::OpalError::Parameter),
        "hardware" => Some(spapr_platform::OpalError::Hardware),
        _ => None,
    }
}

/// A `fail` step: a known call, an nth from 1 that fits the counter, a known OPAL error.
fn check_fail(ctx: &Ctx<'_>, f: &Fields<'_>) -> Result<(), FileError> {
    if let Some(c) = f.get("call") {
        let name = ctx.string(c, "call of fail")?;
        if spapr_platform::FaultPoint::from_name(name).is_none() {
            let names = spapr_platform::FaultPoint::ALL.map(|p| p.name());
            let hint = closest(name, names.iter().copied())
                .map_or(String::new(), |c| format!(" (did you mean {c:?}?)"));
            return Err(ctx.err(
                c,
                format!(
                    "fail: unknown call {}{hint}; expected one of: {}",
                    echo(name),
                    names.join(", ")
                ),
            ));
        }
    }
    if let Some(n) = f.get("nth") {
        let v = ctx.num(n, "nth")?;
        if v == 0 || v > u64::from(u32::MAX) {
            return Err(ctx.err(n, "nth counts calls from 1 (at most 4294967295)"));
        }
    }
    if let Some(o) = f.get("opal") {
        let e = ctx.string(o, "opal")?;
        if opal_error(e).is_none() {
            return Err(ctx.err(o, format!("opal {e:?}: expected parameter or hardware")));
        }
    }
    Ok(())
}

/// The container ioctls a `vfio_ioctl` step names (`VFIO_` and `VFIO_IOMMU_` dropped).
pub const CONTAINER_IOCTLS: [(&str, u32); 13] = {
    use spapr_vfio::uapi::ioctl as i;
    [
        ("GET_API_VERSION", i::GET_API_VERSION),
        ("CHECK_EXTENSION", i::CHECK_EXTENSION),
        ("SET_IOMMU", i::SET_IOMMU),
        ("SPAPR_TCE_GET_INFO", i::SPAPR_TCE_GET_INFO),
        ("MAP_DMA", i::MAP_DMA),
        ("UNMAP_DMA", i::UNMAP_DMA),
        ("ENABLE", i::ENABLE),
        ("DISABLE", i::DISABLE),
        ("REGISTER_MEMORY", i::REGISTER_MEMORY),
        ("UNREGISTER_MEMORY", i::UNREGISTER_MEMORY),
        ("TCE_CREATE", i::TCE_CREATE),
        ("TCE_REMOVE", i::TCE_REMOVE),
        ("EEH_PE_OP", i::EEH_PE_OP),
    ]
};

/// The number of the container ioctl named `name`.
pub fn container_ioctl(name: &str) -> Option<u32> {
    CONTAINER_IOCTLS.iter().find(|c| c.0 == name).map(|c| c.1)
}

/// Most bytes a `vfio_ioctl` buffer holds.
pub const IOCTL_BUFFER_MAX: usize = 4096;

/// A `vfio_ioctl` step: a known ioctl name (or a number), one way to give its argument,
/// a buffer of at most [`IOCTL_BUFFER_MAX`] bytes.
fn check_raw_ioctl(ctx: &Ctx<'_>, f: &Fields<'_>) -> Result<(), FileError> {
    if let Some(n) = f.get("nr") {
        if let Val::Str(s) = &n.val {
            if !s.starts_with('$') && parse_num(s).is_err() && container_ioctl(s).is_none() {
                let hint = closest(s, CONTAINER_IOCTLS.iter().map(|c| c.0))
                    .map_or(String::new(), |c| format!(" (did you mean {c:?}?)"));
                return Err(ctx.err(n, format!("unknown container ioctl {}{hint}", echo(s))));
            }
        }
    }
    let given: Vec<(&str, &Node)> = ["arg", "bytes", "u32", "u64"]
        .into_iter()
        .filter_map(|k| f.get(k).map(|n| (k, n)))
        .collect();
    if let [(a, _), (b, n), ..] = given.as_slice() {
        return Err(ctx.err(
            n,
            format!("give one of arg, bytes, u32, u64; found {a} and {b}"),
        ));
    }
    for (k, width) in [("bytes", 1), ("u32", 4), ("u64", 8)] {
        if let Some(
            n @ Node {
                val: Val::Arr(a), ..
            },
        ) = f.get(k)
        {
            if a.len() * width > IOCTL_BUFFER_MAX {
                return Err(ctx.err(
                    n,
                    format!("the buffer holds at most {IOCTL_BUFFER_MAX} bytes"),
                ));
            }
        }
    }
    Ok(())
}

/// An `rtas_eeh` step names one of the six EEH calls QEMU registers.
fn check_eeh_call(ctx: &Ctx<'_>, f: &Fields<'_>) -> Result<(), FileError> {
    if let Some(c) = f.get("call") {
        let name = ctx.string(c, "call of rtas_eeh")?;
        let names: Vec<&str> = crate::engine::eeh_call_names().collect();
        if !names.contains(&name) {
            let hint = closest(name, names.iter().copied())
                .map_or(String::new(), |c| format!(" (did you mean {c:?}?)"));
            return Err(ctx.err(
                c,
                format!(
                    "rtas_eeh: unknown call {}{hint}; expected one of: {}",
                    echo(name),
                    names.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// Names results get from `as`, and the fields each kind of result has.
fn result_fields(op: &str) -> &'static [&'static str] {
    match op {
        "dma_alloc" => &["dma", "phys", "len"],
        "vfio_create_window" => &["start"],
        "vfio_get_info" => &["flags", "start", "size", "pgsizes", "max_windows", "levels"],
        "rtas" | "rtas_buffer" => &["status", "r1", "r2", "r3", "r4", "r5", "liobn", "start"],
        "rtas_eeh" => &["status", "r1", "r2", "r3", "r4"],
        "guest_read" | "vfio_ioctl" => &crate::engine::WORD_NAMES,
        "linux_dma_map" => &["dma"],
        "linux_enable_ddw" => &[
            "liobn",
            "start",
            "page_shift",
            "window_shift",
            "direct",
            "removed_default",
        ],
        _ => &[],
    }
}

/// Checks a reference `$name[.field][+n|-n]` against the names defined so far.
fn check_ref(
    ctx: &Ctx<'_>,
    n: &Node,
    s: &str,
    defined: &[(String, &'static str)],
) -> Result<(), FileError> {
    let body = &s[1..];
    let end = body.find(['+', '-']).unwrap_or(body.len());
    let (path, off) = body.split_at(end);
    if !off.is_empty() {
        parse_num(&off[1..]).map_err(|e| ctx.err(n, format!("offset in {s:?}: {e}")))?;
    }
    let (name, field) = match path.split_once('.') {
        Some((a, b)) => (a, Some(b)),
        None => (path, None),
    };
    let Some((_, op)) = defined.iter().find(|(d, _)| d == name) else {
        let hint = closest(name, defined.iter().map(|(d, _)| d.as_str()))
            .map_or(String::new(), |c| format!(" (did you mean ${c}?)"));
        return Err(ctx.err(
            n,
            format!(
                "{} refers to {}, which no earlier step names with `as`{hint}",
                echo(s),
                echo(name)
            ),
        ));
    };
    if let Some(field) = field {
        let fields = result_fields(op);
        if !fields.contains(&field) {
            return Err(ctx.err(
                n,
                format!(
                    "{s:?}: a result of {op} has no field {field:?}; it has: {}",
                    if fields.is_empty() {
                        "none".to_string()
                    } else {
                        fields.join(", ")
                    }
                ),
            ));
        }
    }
    Ok(())
}

fn check_refs(
    ctx: &Ctx<'_>,
    n: &Node,
    defined: &[(String, &'static str)],
) -> Result<(), FileError> {
    match &n.val {
        Val::Str(s) if s.starts_with('$') => check_ref(ctx, n, s, defined),
        Val::Arr(a) => a.iter().try_for_each(|x| check_refs(ctx, x, defined)),
        Val::Table(t) => t.iter().try_for_each(|(_, x)| check_refs(ctx, x, defined)),
        _ => Ok(()),
    }
}

/// Parses and checks a scenario file.
pub fn parse(src: Source) -> Result<Scenario, FileError> {
    let doc = src.parse()?;
    let ctx = Ctx { src: &src };
    let whole = Node {
        val: Val::Table(doc.clone()),
        span: 0..0,
    };
    let top = ctx.fields(
        &doc,
        &whole,
        "the file",
        &["name", "machine", "step", "expect_violations"],
        &["machine"],
    )?;
    let mut expect_violations = Vec::new();
    if let Some(v) = top.get("expect_violations") {
        let Val::Arr(items) = &v.val else {
            return Err(ctx.err(v, "expect_violations must be an array of rule names"));
        };
        for i in items {
            let r = ctx.string(i, "a rule name")?;
            if !is_rule(r) {
                let hint = closest(r, RULES.iter().chain(&PSERIES_RULES).copied())
                    .map_or(String::new(), |c| format!(" (did you mean {c:?}?)"));
                return Err(ctx.err(i, format!("unknown rule {}{hint}", echo(r))));
            }
            expect_violations.push(r.to_string());
        }
    }
    let name = match top.get("name") {
        Some(v) => ctx.string(v, "name")?.to_string(),
        None => src.name.clone(),
    };
    let Some(mnode) = top.get("machine") else {
        return Err(ctx.err(&whole, "the file needs a [machine] table"));
    };
    let (machine, check_each_step) = machine(&ctx, mnode)?;
    let kind = match machine {
        Machine::PowerNv { .. } => Needs::PowerNv,
        Machine::PSeries { .. } => Needs::PSeries,
    };
    let mut steps = Vec::new();
    let mut defined: Vec<(String, &'static str)> = Vec::new();
    let mut devices: Vec<String> = match &machine {
        Machine::PowerNv { config, .. } => config.devices.iter().map(|d| d.name.clone()).collect(),
        Machine::PSeries { passthrough, .. } => passthrough
            .iter()
            .flat_map(|p| p.1.iter().cloned())
            .collect(),
    };
    let rules: Vec<&str> = match &machine {
        Machine::PowerNv { .. } => RULES.to_vec(),
        Machine::PSeries { .. } => PSERIES_RULES.to_vec(),
    };
    let step_nodes: &[Node] = match top.get("step") {
        None => &[],
        Some(Node {
            val: Val::Arr(a), ..
        }) => a,
        Some(other) => return Err(ctx.err(other, "step must be an array of tables ([[step]])")),
    };
    let lines = crate::doc::LineIndex::new(&src.text);
    for sn in step_nodes {
        let t = ctx.table(sn, "[[step]]")?;
        let Some(opn) = t.iter().find(|(k, _)| k == "op").map(|(_, v)| v) else {
            return Err(ctx.err(sn, "a [[step]] needs an `op`"));
        };
        let opname = ctx.string(opn, "op")?;
        let Some(op) = find_op(opname) else {
            let hint = closest(opname, OPS.iter().map(|o| o.name))
                .map_or(String::new(), |c| format!("; did you mean {c:?}?"));
            return Err(ctx.err(opn, format!("unknown operation {}{hint}", echo(opname))));
        };
        if op.needs != Needs::Any && op.needs != kind {
            return Err(ctx.err(
                opn,
                format!(
                    "{opname} needs a {} machine",
                    if op.needs == Needs::PowerNv {
                        "powernv"
                    } else {
                        "pseries"
                    }
                ),
            ));
        }
        let allowed: Vec<&str> = GENERIC
            .iter()
            .chain(op.required)
            .chain(op.optional)
            .copied()
            .collect();
        let f = ctx.fields(t, sn, &format!("op {opname:?}"), &allowed, op.required)?;
        let expect = match f.get("expect") {
            Some(v) => {
                let s = ctx.string(v, "expect")?;
                if !valid_expect(s) {
                    return Err(ctx.err(
                        v,
                        format!(
                            "unknown expectation {s:?}; expected ok, fault, clean, an errno \
                             (EBUSY), an H_* or RTAS_* status, a number or a rule name"
                        ),
                    ));
                }
                Some(s.to_string())
            }
            None => None,
        };
        let repeat = match f.get("repeat") {
            Some(v) => {
                let r = ctx.num(v, "repeat")?;
                if r == 0 || r > 10_000_000 {
                    return Err(ctx.err(v, "repeat must be 1..=10000000"));
                }
                r
            }
            None => 1,
        };
        let mut vary = Vec::new();
        if let Some(v) = f.get("vary") {
            for (k, inc) in ctx.table(v, "vary")? {
                if !op.required.contains(&k.as_str()) && !op.optional.contains(&k.as_str()) {
                    return Err(ctx.err(inc, format!("vary: {opname} has no field {k:?}")));
                }
                let d = match &inc.val {
                    Val::Int(i) => *i,
                    Val::Str(s) if s.starts_with('-') => -i128::from(
                        parse_num(&s[1..]).map_err(|e| ctx.err(inc, format!("vary {k}: {e}")))?,
                    ),
                    _ => i128::from(ctx.num(inc, "a vary step")?),
                };
                // The last repetition's value must fit: found now, not half-way.
                let base = match t.iter().find(|(x, _)| x == k).map(|(_, n)| &n.val) {
                    Some(Val::Int(b)) => Some(*b),
                    Some(Val::Str(s)) if !s.starts_with('$') => parse_num(s).ok().map(i128::from),
                    _ => None,
                };
                if let Some(base) = base {
                    let last = d
                        .checked_mul(i128::from(repeat - 1))
                        .and_then(|x| x.checked_add(base));
                    let bits = field_bits(opname, k);
                    let max = i128::from(field_max(opname, k));
                    if !last.is_some_and(|l| (0..=max).contains(&l)) {
                        return Err(ctx.err(
                            inc,
                            format!(
                                "vary {k}: after {repeat} repetitions {k} leaves 0..={max:#x} \
                                 (the field is {bits} bits wide)"
                            ),
                        ));
                    }
                }
                vary.push((k.clone(), d));
            }
        }
        let args: Vec<(String, Node)> = t
            .iter()
            .filter(|(k, _)| !GENERIC.contains(&k.as_str()))
            .cloned()
            .collect();
        for (k, v) in &args {
            check_field(&ctx, opname, k, v)?;
            check_refs(&ctx, v, &defined)?;
        }
        if op.name == "fail" {
            check_fail(&ctx, &f)?;
        }
        if op.name == "rtas_eeh" {
            check_eeh_call(&ctx, &f)?;
        }
        if op.name == "vfio_ioctl" {
            check_raw_ioctl(&ctx, &f)?;
        }
        let checks_device = match kind {
            Needs::PowerNv => op.name != "hot_add",
            _ => op.name.starts_with("host_"),
        };
        if let (true, Some(d)) = (checks_device, f.get("device")) {
            let name = ctx.string(d, "device")?;
            if !devices.iter().any(|x| x == name) {
                let hint = closest(name, devices.iter().map(String::as_str))
                    .map_or(String::new(), |c| format!(" (did you mean {c:?}?)"));
                return Err(ctx.err(d, format!("the machine has no device {}{hint}", echo(name))));
            }
        }
        let name = match f.get("as") {
            Some(v) => {
                let s = ctx.string(v, "as")?;
                if s.is_empty() || !s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(ctx.err(v, "`as` must be a name of letters, digits and _"));
                }
                defined.push((s.to_string(), op.name));
                Some(s.to_string())
            }
            None => None,
        };
        if op.name == "hot_add" {
            if let Some(Node {
                val: Val::Str(d), ..
            }) = f.get("device")
            {
                devices.push(d.clone());
            }
        }
        let state = match f.get("state") {
            Some(v) => {
                if kind == Needs::PSeries {
                    return Err(ctx.err(v, "state expectations need a powernv machine"));
                }
                let check = |n: &Node, s: &str| check_ref(&ctx, n, s, &defined);
                let known = Known {
                    devices: &devices,
                    rules: &rules,
                    check_ref: &check,
                };
                state_path::parse(&src, v, &known)?
            }
            None => Vec::new(),
        };
        let line = lines.line(sn.span.start);
        steps.push(Step {
            state,
            op,
            args,
            expect,
            name,
            repeat,
            vary,
            line,
        });
    }
    Ok(Scenario {
        name,
        machine,
        check_each_step,
        full_tables: false,
        svg: false,
        steps,
        expect_violations,
        source: src,
    })
}
