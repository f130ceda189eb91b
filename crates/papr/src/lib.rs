//! # spapr-papr — the pSeries guest interface
//!
//! H_GET_TCE, H_PUT_TCE, H_STUFF_TCE, H_PUT_TCE_INDIRECT and the DDW RTAS calls, as a
//! library a VMM calls from its hypercall and RTAS dispatchers, on top of `spapr-tce`.
//!
//! Not implemented yet: this crate is the place the layer lands (issue 7).
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
#![forbid(unsafe_code)]
