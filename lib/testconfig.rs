//! proptest settings shared by the property tests: how many cases, and where
//! shrunk failures are kept (tests/proptest-regressions/, mirroring lib/, so
//! the top level stays the layout the design card fixes).

use proptest::test_runner::{Config, FileFailurePersistence};

pub fn proptest(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::SourceParallel(
            "tests/proptest-regressions",
        ))),
        ..Config::default()
    }
}
