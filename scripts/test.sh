#!/usr/bin/env bash
# The whole test suite: every crate's unit, integration, property and doc tests, the fuzz
# corpus replays, the examples, and the loom models: the TCE level publication, the pSeries
# device IOTLB generations, the kernel allocator hand-over, the EEH DMA gate and the PHB's
# TCE cache against kills.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --locked
CARGO_TARGET_DIR=target/loom RUSTFLAGS="--cfg loom" cargo test -p spapr-tce --test loom --release --locked
CARGO_TARGET_DIR=target/loom RUSTFLAGS="--cfg loom" cargo test -p spapr-papr --test loom --release --locked
CARGO_TARGET_DIR=target/loom RUSTFLAGS="--cfg loom" cargo test -p spapr-platform --test loom --release --locked
