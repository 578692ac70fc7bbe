//! The stream reader of batchd and pushd on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    syncpipe::fuzz::stream_bytes(data);
});
