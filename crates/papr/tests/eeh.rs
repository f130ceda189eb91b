//! The EEH RTAS calls as QEMU 7.2 answers them (eeh.md 3, cases 28-30): each call's
//! arguments and returns, mapped to the container's VFIO_EEH_PE_OP through the VMM's
//! backend; an emulated-only PHB, a two-group container and bad arguments all -3.

use spapr_papr::eeh::{token, EehBackend};
use spapr_papr::{Spapr, SpaprConfig};
use std::sync::{Arc, Mutex};

#[derive(Debug, Default)]
struct Fake {
    groups: usize,
    state: i64,
    fail: bool,
    ops: Mutex<Vec<u32>>,
}

impl EehBackend for Fake {
    fn groups(&self) -> usize {
        self.groups
    }
    fn pe_op(&self, op: u32) -> i64 {
        self.ops.lock().unwrap().push(op);
        if self.fail {
            -5
        } else if op == 4 {
            self.state
        } else {
            0
        }
    }
    fn vfio_device_on_bus(&self, bus: u8) -> bool {
        bus == 1
    }
    fn device_at(&self, bus: u8, devfn: u8) -> bool {
        bus == 1 && devfn == 0
    }
}

fn machine(fake: Option<Fake>) -> (Spapr, Option<Arc<Fake>>) {
    let s = Spapr::new(SpaprConfig::default()).unwrap();
    let f = fake.map(Arc::new);
    if let Some(f) = &f {
        s.set_eeh_backend(0, Some(f.clone() as Arc<dyn EehBackend>));
    }
    (s, f)
}

fn buid(s: &Spapr) -> (u32, u32) {
    let b = s.phbs()[0].buid();
    ((b >> 32) as u32, b as u32)
}

const M3: u32 = -3i32 as u32;

#[test]
fn read_slot_reset_state2_reports_the_kernel_value() {
    let (s, f) = machine(Some(Fake {
        groups: 1,
        state: 2,
        ..Fake::default()
    }));
    let (hi, lo) = buid(&s);
    let r = s.rtas_eeh(token::READ_SLOT_RESET_STATE2, &[0, hi, lo], 5);
    assert_eq!(r, Some(vec![0, 2, 1, 1000, 0]), "case 28, nret 5");
    let r = s.rtas_eeh(token::READ_SLOT_RESET_STATE2, &[0, hi, lo], 4);
    assert_eq!(r, Some(vec![0, 2, 1, 1000]));
    assert_eq!(
        s.rtas_eeh(token::READ_SLOT_RESET_STATE2, &[0, hi, lo], 3),
        Some(vec![M3])
    );
    assert_eq!(f.unwrap().ops.lock().unwrap().as_slice(), &[4, 4]);
    let (s, _) = machine(Some(Fake {
        groups: 1,
        ..Fake::default()
    }));
    let (hi, lo) = buid(&s);
    assert_eq!(
        s.rtas_eeh(token::READ_SLOT_RESET_STATE2, &[0, hi, lo], 5),
        Some(vec![0, 0, 1, 1000, 0]),
        "case 28 as written: a PE in normal state"
    );
}

#[test]
fn get_config_addr_info2_names_the_pe_by_the_devices_own_bus() {
    let (s, f) = machine(Some(Fake {
        groups: 1,
        ..Fake::default()
    }));
    let (hi, lo) = buid(&s);
    let addr = 1 << 16;
    assert_eq!(
        s.rtas_eeh(token::GET_CONFIG_ADDR_INFO2, &[addr, hi, lo, 0], 2),
        Some(vec![0, 0x10001])
    );
    assert_eq!(
        s.rtas_eeh(token::GET_CONFIG_ADDR_INFO2, &[addr, hi, lo, 1], 2),
        Some(vec![0, 2])
    );
    assert_eq!(
        s.rtas_eeh(token::GET_CONFIG_ADDR_INFO2, &[addr, hi, lo, 2], 2),
        Some(vec![M3])
    );
    assert_eq!(
        s.rtas_eeh(token::GET_CONFIG_ADDR_INFO2, &[2 << 16, hi, lo, 0], 2),
        Some(vec![M3]),
        "no device"
    );
    assert!(f.unwrap().ops.lock().unwrap().is_empty(), "no VFIO op");
}

#[test]
fn options_and_resets_map_to_the_container_ops() {
    let (s, f) = machine(Some(Fake {
        groups: 1,
        ..Fake::default()
    }));
    let f = f.unwrap();
    let (hi, lo) = buid(&s);
    let on_bus1 = 1 << 16;
    for (opt, op) in [(0, 0), (1, 1), (2, 2), (3, 3)] {
        assert_eq!(
            s.rtas_eeh(token::SET_EEH_OPTION, &[on_bus1, hi, lo, opt], 1),
            Some(vec![0])
        );
        assert_eq!(f.ops.lock().unwrap().pop(), Some(op));
    }
    // ENABLE needs a vfio-pci device on the address's bus.
    assert_eq!(
        s.rtas_eeh(token::SET_EEH_OPTION, &[2 << 16, hi, lo, 1], 1),
        Some(vec![M3])
    );
    assert_eq!(
        s.rtas_eeh(token::SET_EEH_OPTION, &[on_bus1, hi, lo, 7], 1),
        Some(vec![M3])
    );
    for (opt, op) in [(0, 5), (1, 6), (3, 7)] {
        assert_eq!(
            s.rtas_eeh(token::SET_SLOT_RESET, &[0, hi, lo, opt], 1),
            Some(vec![0])
        );
        assert_eq!(f.ops.lock().unwrap().pop(), Some(op));
    }
    assert_eq!(
        s.rtas_eeh(token::SET_SLOT_RESET, &[0, hi, lo, 2], 1),
        Some(vec![M3])
    );
    assert_eq!(
        s.rtas_eeh(token::CONFIGURE_PE, &[0, hi, lo], 1),
        Some(vec![0])
    );
    assert_eq!(f.ops.lock().unwrap().pop(), Some(8));
    // slot-error-detail: severity 1 or 2 -> NO_ERRORS_FOUND, no op; other -> -3.
    let args = |sev| [0, hi, lo, 0, 0, 0, 0, sev];
    assert_eq!(
        s.rtas_eeh(token::SLOT_ERROR_DETAIL, &args(1), 1),
        Some(vec![1])
    );
    assert_eq!(
        s.rtas_eeh(token::SLOT_ERROR_DETAIL, &args(3), 1),
        Some(vec![M3])
    );
    assert!(f.ops.lock().unwrap().is_empty());
}

#[test]
fn a_failing_op_maps_asymmetrically_as_qemu_does() {
    let (s, _) = machine(Some(Fake {
        groups: 1,
        fail: true,
        ..Fake::default()
    }));
    let (hi, lo) = buid(&s);
    assert_eq!(
        s.rtas_eeh(token::SET_EEH_OPTION, &[0, hi, lo, 2], 1),
        Some(vec![-1i32 as u32])
    );
    assert_eq!(
        s.rtas_eeh(token::SET_SLOT_RESET, &[0, hi, lo, 1], 1),
        Some(vec![-1i32 as u32])
    );
    assert_eq!(
        s.rtas_eeh(token::READ_SLOT_RESET_STATE2, &[0, hi, lo], 4),
        Some(vec![M3])
    );
    assert_eq!(
        s.rtas_eeh(token::CONFIGURE_PE, &[0, hi, lo], 1),
        Some(vec![M3])
    );
}

#[test]
fn emulated_phbs_two_group_containers_and_bad_buids_are_refused() {
    let (s, _) = machine(None);
    let (hi, lo) = buid(&s);
    for (tok, args, nret) in [
        (token::SET_EEH_OPTION, vec![0, hi, lo, 1], 1),
        (token::READ_SLOT_RESET_STATE2, vec![0, hi, lo], 4),
        (token::CONFIGURE_PE, vec![0, hi, lo], 1),
    ] {
        assert_eq!(
            s.rtas_eeh(tok, &args, nret),
            Some(vec![M3]),
            "emulated only"
        );
    }
    let (s, f) = machine(Some(Fake {
        groups: 2,
        ..Fake::default()
    }));
    assert_eq!(
        s.rtas_eeh(token::CONFIGURE_PE, &[0, hi, lo], 1),
        Some(vec![M3]),
        "two groups"
    );
    assert!(f.unwrap().ops.lock().unwrap().is_empty());
    let (s, _) = machine(Some(Fake {
        groups: 1,
        ..Fake::default()
    }));
    assert_eq!(
        s.rtas_eeh(token::CONFIGURE_PE, &[0, hi, lo ^ 1], 1),
        Some(vec![M3]),
        "no such BUID"
    );
    assert_eq!(
        s.rtas_eeh(token::CONFIGURE_PE, &[0, hi], 1),
        Some(vec![M3]),
        "nargs"
    );
    assert_eq!(s.rtas_eeh(0x2030, &[], 1), None, "not an EEH token");
    assert_eq!(token::ALL.len(), 6);
}

/// Machine reset (`spapr_phb_reset`) sends ENABLE to an available container, after the
/// windows are reset; a two-group container gets nothing.
#[test]
fn machine_reset_enables_eeh_on_an_available_phb() {
    let (s, f) = machine(Some(Fake {
        groups: 1,
        ..Fake::default()
    }));
    s.reset();
    assert_eq!(f.unwrap().ops.lock().unwrap().as_slice(), &[1]);
    let (s, f) = machine(Some(Fake {
        groups: 2,
        ..Fake::default()
    }));
    s.reset();
    assert!(f.unwrap().ops.lock().unwrap().is_empty());
}

/// eeh.md records no profile difference for the EEH calls (KVM has no in-kernel EEH RTAS
/// and QEMU's code is the same under every profile): each call answers alike in all three.
#[test]
fn every_profile_answers_the_eeh_calls_alike() {
    let calls: [(u32, Vec<u32>, u32); 8] = [
        (token::SET_EEH_OPTION, vec![1 << 16, 0, 0, 1], 1),
        (token::SET_EEH_OPTION, vec![0, 0, 0, 7], 1),
        (token::GET_CONFIG_ADDR_INFO2, vec![1 << 16, 0, 0, 0], 2),
        (token::READ_SLOT_RESET_STATE2, vec![0, 0, 0], 5),
        (token::SET_SLOT_RESET, vec![0, 0, 0, 1], 1),
        (token::SET_SLOT_RESET, vec![0, 0, 0, 2], 1),
        (token::CONFIGURE_PE, vec![0, 0, 0], 1),
        (token::SLOT_ERROR_DETAIL, vec![0, 0, 0, 0, 0, 0, 0, 1], 1),
    ];
    let answers = |p: spapr_papr::Profile| {
        let (s, _) = machine(Some(Fake {
            groups: 1,
            state: 2,
            ..Fake::default()
        }));
        s.set_profile(p);
        let (hi, lo) = buid(&s);
        calls
            .iter()
            .map(|(t, a, n)| {
                let mut a = a.clone();
                a[1] = hi;
                a[2] = lo;
                s.rtas_eeh(*t, &a, *n)
            })
            .collect::<Vec<_>>()
    };
    let qemu = answers(spapr_papr::Profile::Qemu);
    assert_eq!(qemu[0], Some(vec![0]));
    assert_eq!(qemu[3], Some(vec![0, 2, 1, 1000, 0]));
    assert_eq!(answers(spapr_papr::Profile::Kvm), qemu);
    assert_eq!(answers(spapr_papr::Profile::Lopar), qemu);
}
