//! The library's tracing events: silent without a subscriber, and, with one, a line for a
//! refused hypercall with its reason, for each window change and for each reset.

mod common;
use common::*;
use spapr_papr::{HStatus, Profile, RtasCall};
use std::io::Write;
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn refusals_window_changes_and_resets_are_traced_with_their_reason() {
    let (s, mem) = guest(Profile::Kvm);
    let out = Captured::default();
    let writer = out.clone();
    let sub = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::with_default(sub, || {
        assert_eq!(s.h_put_tce(&mem, 0x1234, 0, 3), HStatus::Parameter);
        assert_eq!(s.h_put_tce(&mem, LIOBN0, 0x1001, 3), HStatus::Parameter);
        assert_eq!(s.h_put_tce(&mem, LIOBN1, 0, 3), HStatus::Parameter);
        let rets = s.rtas(
            RtasCall::Create,
            &[0, (BUID >> 32) as u32, BUID as u32, 16, 30],
            4,
        );
        assert_eq!(rets[0], 0);
        assert_eq!(s.rtas(RtasCall::Create, &[0], 4), vec![-3i32 as u32]);
        s.reset_phb(0);
    });
    let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    for want in [
        "hypercall refused",
        "reason=\"unknown LIOBN\"",
        "reason=\"ioba not aligned to the IOMMU page\"",
        "reason=\"window disabled\"",
        "RTAS window change",
        "RTAS call refused",
        "PHB DMA reset",
    ] {
        assert!(text.contains(want), "no {want:?} in:\n{text}");
    }
}
