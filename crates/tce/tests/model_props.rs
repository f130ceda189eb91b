//! Property tests: random operation sequences on 1- to 5-level tables agree with a plain
//! map-based model, and reads never allocate.

use proptest::prelude::*;
use spapr_tce::ops::{run, Op, TableSpec};

fn op(entries: u64) -> impl Strategy<Value = Op> {
    let e = entries as i64;
    let rel = -3i64..e + 3;
    let tce = prop_oneof![
        Just(0u64),
        (0u64..4, 0u64..1 << 20).prop_map(|(p, a)| (a << 12) | p),
        any::<u64>(),
    ];
    prop_oneof![
        rel.clone().prop_map(|rel| Op::Get { rel }),
        (rel.clone(), tce.clone()).prop_map(|(rel, tce)| Op::Exchange { rel, tce }),
        (rel.clone(), tce.clone()).prop_map(|(rel, tce)| Op::ExchangeNoKill { rel, tce }),
        (rel.clone(), prop::collection::vec(tce.clone(), 0..40))
            .prop_map(|(rel, tces)| Op::Put { rel, tces }),
        (rel.clone(), 0u64..(entries + 5), tce).prop_map(|(rel, count, tce)| Op::Fill {
            rel,
            count,
            tce
        }),
        (rel.clone(), 0u64..(entries + 5)).prop_map(|(rel, count)| Op::Clear { rel, count }),
        (rel.clone(), 0u64..(entries + 5), 0u64..1 << 40, 0u8..4).prop_map(
            |(rel, count, addr, perm)| Op::PutLinear {
                rel,
                count,
                addr,
                perm
            }
        ),
        (rel.clone(), 0u64..(entries + 5), any::<bool>())
            .prop_map(|(rel, count, runs)| { Op::ClearExclusive { rel, count, runs } }),
        (rel, 0u64..(entries + 5)).prop_map(|(rel, count)| Op::ZeroExclusive { rel, count }),
        (-(1i64 << 20)..(e << 16) + (1 << 20), any::<bool>())
            .prop_map(|(offset, write)| Op::Translate { offset, write }),
    ]
}

fn spec_and_ops() -> impl Strategy<Value = (TableSpec, Vec<Op>)> {
    (
        1u32..=5,
        1u32..=3,
        1u64..300,
        prop::sample::select(vec![12u32, 16, 21]),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_flat_map(|(levels, level_bits, entries, page_shift, wir, budget)| {
            // Enough levels to cover the entries: raise the top if the split is too small.
            let spec = TableSpec {
                offset_pages: 3,
                page_shift,
                entries,
                levels,
                level_bits: if levels == 1 {
                    0
                } else {
                    level_bits.max(9u32.div_ceil(levels))
                },
                write_implies_read: wir,
                max_bytes: if budget { 4096 } else { u64::MAX },
            };
            (Just(spec), prop::collection::vec(op(entries), 1..60))
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn table_agrees_with_the_map_model((spec, ops) in spec_and_ops()) {
        if let Err(d) = run(&spec, &ops) {
            prop_assert!(false, "{spec:?}: {d}");
        }
    }
}

#[test]
fn every_level_count_is_exercised_by_the_model_test() {
    // The strategy above covers levels 1..=5; check each builds a real multi-level table.
    for levels in 1..=5u32 {
        let spec = TableSpec {
            offset_pages: 3,
            page_shift: 12,
            entries: 200,
            levels,
            level_bits: if levels == 1 {
                0
            } else {
                9u32.div_ceil(levels).max(2)
            },
            write_implies_read: false,
            max_bytes: u64::MAX,
        };
        let ops = vec![
            Op::Put {
                rel: 190,
                tces: vec![0x1003; 10],
            },
            Op::Translate {
                offset: 199 << 12,
                write: true,
            },
            Op::Clear { rel: 0, count: 200 },
        ];
        assert_eq!(run(&spec, &ops), Ok(()), "levels {levels}");
    }
}
