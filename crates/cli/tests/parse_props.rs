//! Property: no file, however mangled, makes the parser (or a run of what it accepts)
//! panic; every refusal names a line and column inside the file.

use proptest::prelude::*;
use spapr_iommu::doc::Source;
use spapr_iommu::{engine, scenario, SEED};

fn check(text: String) -> Result<(), TestCaseError> {
    let lines = text.lines().count().max(1);
    let src = Source {
        name: "p.toml".into(),
        text,
    };
    match scenario::parse(src) {
        Ok(sc) => {
            // Cap the work a mutated `repeat` could ask for.
            if engine::total_ops(&sc) <= 5000 {
                let _ = engine::run(&sc, &mut |_| {});
            }
        }
        Err(e) => {
            prop_assert!(e.line >= 1 && e.line <= lines + 1, "{e}");
            prop_assert!(e.col >= 1, "{e}");
            let shown = e.render();
            prop_assert!(shown.contains(&e.msg), "{shown}");
            if let Some(l) = &e.source_line {
                prop_assert!(shown.contains(&format!("{} |", e.line)), "{shown}");
                prop_assert!(l.span.start <= l.span.end && l.span.end <= l.text.len());
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn mutated_seed_files_never_panic(
        cuts in proptest::collection::vec((0usize..4000, 0usize..40), 0..4),
        inserts in proptest::collection::vec((0usize..4000, "[a-z$=\\[\\]\"0-9x\\. \n]{0,12}"), 0..4),
    ) {
        let mut text = SEED.to_string();
        for (at, len) in cuts {
            let at = at.min(text.len());
            let end = (at + len).min(text.len());
            if text.is_char_boundary(at) && text.is_char_boundary(end) {
                text.replace_range(at..end, "");
            }
        }
        for (at, s) in inserts {
            let at = at.min(text.len());
            if text.is_char_boundary(at) {
                text.insert_str(at, &s);
            }
        }
        check(text)?;
    }

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,300}") {
        check(text)?;
    }
}
