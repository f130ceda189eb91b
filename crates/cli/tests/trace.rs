//! The trace: typed events in step order, each tagged with the step that caused it
//! (0 for boot); bounded with an explicit count of what was not kept, never silently.

use spapr_iommu::doc::Source;
use spapr_iommu::engine::{self, TRACE_LIMIT};
use spapr_iommu::scenario;

fn run(text: &str) -> spapr_iommu::report::Report {
    let sc = scenario::parse(Source {
        name: "t.toml".into(),
        text: text.into(),
    })
    .unwrap();
    engine::run(&sc, &mut |_| {})
}

#[test]
fn events_carry_their_step_in_step_order_and_print_with_it() {
    let r = run(spapr_iommu::SEED);
    assert!(r.all_held());
    assert_eq!(r.trace[0].step, 0, "boot first");
    assert!(r.trace.windows(2).all(|w| w[0].step <= w[1].step));
    let last = r.steps.len();
    assert!(r.trace.iter().all(|e| e.step <= last));
    assert!(r.trace.iter().any(|e| e.step > 0));
    // The hand-over's kills and ownership changes are attributed to the step that did them.
    let set_container = r
        .steps
        .iter()
        .find(|s| s.op.starts_with("vfio_set_container"))
        .unwrap()
        .n;
    assert!(r
        .trace
        .iter()
        .any(|e| e.step == set_container && e.kind == "Ownership" && e.group.is_some()));
    let text = r.trace_text();
    assert!(
        text.contains(&format!("step {set_container:>3}: Ownership")),
        "{text}"
    );
    let v = serde_json::to_value(&r).unwrap();
    let e = &v["trace"][0];
    assert_eq!(e["step"], 0);
    assert!(e["kind"].is_string() && e["detail"].is_string());
}

#[test]
fn a_trace_past_its_limit_says_how_many_events_it_did_not_keep() {
    let n = TRACE_LIMIT + 1000;
    let text = format!(
        "[machine]\nkind = \"pseries\"\nram = \"1G\"\n\n[[step]]\nop = \"hcall\"\nopcode = 0x20\n\
         args = [0x80000000, 0, 3]\nrepeat = {n}\nvary = {{ args = 0 }}\n"
    );
    let text = text.replace("vary = { args = 0 }\n", "");
    let r = run(&text);
    assert_eq!(r.trace.len(), TRACE_LIMIT + 1);
    let last = r.trace.last().unwrap();
    assert_eq!(last.kind, "TraceLimit");
    assert!(
        last.detail
            .starts_with("1000 more events happened and were not kept"),
        "{}",
        last.detail
    );
}
