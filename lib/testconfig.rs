//! proptest settings shared by the property tests: how many cases, and where
//! shrunk failures are kept (tests/proptest-regressions/, mirroring lib/, so
//! the top level stays the layout the design card fixes).

use proptest::test_runner::{Config, FileFailurePersistence};

/// `PROPTEST_SOAK=N` runs N times the usual cases: CI draws fresh inputs
/// on every run, so a rare failure is better found here first.
pub fn proptest(cases: u32) -> Config {
    let soak = std::env::var("PROPTEST_SOAK")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .unwrap_or(1)
        .max(1);
    Config {
        cases: cases.saturating_mul(soak),
        failure_persistence: Some(Box::new(FileFailurePersistence::SourceParallel(
            "tests/proptest-regressions",
        ))),
        ..Config::default()
    }
}
