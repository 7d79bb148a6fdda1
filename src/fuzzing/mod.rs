//! The checks the fuzz targets run, as functions: the cargo-fuzz binaries in `fuzz/` call them
//! on the fuzzer's inputs, and `cargo test` replays the kept corpora and every crash
//! reproducer through them (`tests/fuzz_corpora.rs`), so a finding stays fixed.
//!
//! Each function panics when an invariant breaks and returns normally otherwise; none may
//! hang or allocate without bound on any input. Behind the `fuzzing` feature.

mod reader;
mod sasl;

pub use reader::stream_reader;
pub use sasl::{ht_initiator, negotiator, scram};
