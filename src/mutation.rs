//! Planted bugs for the lifecycle checks (docs/model.md, "Planted bugs"): with the
//! `model-mutations` feature, `SASL2_FAST_MUTATION=<name>` switches on one deliberate bug in
//! `fast/login.rs` or `fast/tokens.rs`, so `scripts/model-mutations` can show that the property
//! test (`tests/lifecycle_conformance.rs`) catches it. Without the feature [`planted`] is the
//! constant `false` and the hooks compile away: no build a host uses can carry them.

/// True when the planted bug `name` is switched on.
#[cfg(feature = "model-mutations")]
pub(crate) fn planted(name: &str) -> bool {
    std::env::var("SASL2_FAST_MUTATION").is_ok_and(|v| v == name)
}

/// True when the planted bug `name` is switched on: never, without `model-mutations`.
#[cfg(not(feature = "model-mutations"))]
#[inline(always)]
pub(crate) const fn planted(_name: &str) -> bool {
    false
}
