//! `bisync --serve`'s request reader on arbitrary bytes, against a fresh
//! small replica each run.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("a temporary directory");
    syncpipe::fuzz::serve_fixture(dir.path()).expect("the fixture");
    syncpipe::fuzz::serve_bytes(dir.path(), data);
});
