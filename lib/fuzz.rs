//! What must hold for any bytes fed to the two parsers that read untrusted
//! input: the stream reader (batchd, pushd) and the `bisync --serve` request
//! reader. Shared by the coverage-guided targets in `fuzz/` and the bounded
//! proptest run in the suite (`tests/it/fuzz.rs`), so both check the same.
//!
//! Each function panics when a property breaks; a parser error is fine.

use std::io::{self, BufRead, BufReader, Write};
use std::path::Path;

use crate::wire::event::Record;
use crate::wire::reader::{Item, RecordReader, MAX_LINE};

/// Reads every item of `data` as batchd and pushd do and checks: no panic;
/// the line buffer never grows past the line limit; every record written
/// back is one line that parses to the same record (so a relayed record can
/// neither split into two nor inject a second one).
pub fn stream_bytes(data: &[u8]) {
    stream_from(BufReader::with_capacity(64, data), data.len() as u64);
}

/// [`stream_bytes`] over any reader of `len` bytes (a long line need not sit
/// in memory twice).
pub fn stream_from(input: impl BufRead, len: u64) {
    let mut reader = RecordReader::new(input);
    let mut items = 0u64;
    let mut last_line = 0;
    while let Some(item) = reader.next_item().expect("reading from memory cannot fail") {
        items += 1;
        assert!(
            reader.buffer_capacity() <= 2 * (MAX_LINE + 1),
            "the line buffer grew to {} bytes, past the line limit",
            reader.buffer_capacity()
        );
        assert!(reader.line_no() > last_line, "line numbers must increase");
        last_line = reader.line_no();
        if let Item::Record(record) = item {
            let mut out = Vec::new();
            record
                .write_line(&mut out)
                .expect("a parsed record serialises");
            assert_eq!(out.last(), Some(&b'\n'), "a record ends its line");
            assert!(
                !out[..out.len() - 1].contains(&b'\n'),
                "a record serialised to more than one line: {:?}",
                String::from_utf8_lossy(&out)
            );
            let again = Record::parse(&out[..out.len() - 1]).expect("a written record parses");
            assert_eq!(again, record, "a record changed on its way through");
        }
    }
    assert!(items <= len + 1, "more items than bytes");
}

/// The most a `--serve` session may write for `input` bytes of requests on a
/// replica holding `replica` bytes of files: every answer is bounded by what
/// was asked and what exists, never by a number the peer made up.
pub fn serve_output_limit(input: u64, replica: u64) -> u64 {
    (64 << 20) + 4096 * input + 64 * replica
}

/// Runs `bisync --serve` on `root` with `data` as the requests and checks
/// that it ends (it must not wait for bytes that will never come), does not
/// panic, and writes no more than [`serve_output_limit`].
pub fn serve_bytes(root: &Path, data: &[u8]) {
    let replica = replica_bytes(root);
    let mut out = Bounded {
        written: 0,
        limit: serve_output_limit(data.len() as u64, replica),
    };
    let _ = crate::bisync::serve::serve_on(root, false, data, &mut out);
}

/// A sink that panics past its limit: output the peer can inflate at will
/// is a way to fill a disk or a pipe forever.
struct Bounded {
    written: u64,
    limit: u64,
}

impl Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.written += buf.len() as u64;
        assert!(
            self.written <= self.limit,
            "--serve wrote more than {} bytes for this input",
            self.limit
        );
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The bytes of the regular files below `root` (not following links).
fn replica_bytes(root: &Path) -> u64 {
    let Ok(dir) = std::fs::read_dir(root) else {
        return 0;
    };
    dir.flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => replica_bytes(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

/// A small replica for [`serve_bytes`] to work on: a file, a directory with
/// a file, an empty directory and a relative symlink, so requests that name
/// existing paths reach the code behind the checks.
pub fn serve_fixture(root: &Path) -> io::Result<()> {
    std::fs::write(root.join("a"), b"hello\n")?;
    std::fs::create_dir_all(root.join("d/e"))?;
    std::fs::write(root.join("d/b"), b"")?;
    std::os::unix::fs::symlink("a", root.join("l"))
}
