//! Helpers for wirespan's own tests: privileged tests fail under `CI=true` and skip (loudly)
//! elsewhere, so a developer without root can still run the rest.

/// Whether the tests run in CI, where nothing may be skipped.
#[must_use]
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Report that a test cannot run here: panics under `CI=true`, otherwise prints why and returns,
/// so the caller can `return cannot_run(..)`.
pub fn cannot_run(reason: &str) {
    assert!(!in_ci(), "CI=true and this test cannot run: {reason}");
    eprintln!("SKIPPED (not in CI): {reason}");
}

/// Whether this process may run the agent live: root, or every capability `load::privilege`
/// names.
#[must_use]
pub fn privileged() -> bool {
    crate::load::privilege::missing_capabilities().is_ok_and(|missing| missing.is_empty())
}
