//! The `bisync --serve` protocol (docs/protocol.md, "bisync --serve"):
//! JSON lines on stdin/stdout, one request then its reply, with a file's
//! bytes sent raw right after the line that announces their length.

use std::io::{self, BufRead, Read, Write};

use serde::{Deserialize, Serialize};

use super::entry::{Entry, Hash};
use super::replica::{Applied, Change};
use crate::wire::path::WirePath;

pub const VERSION: u32 = 1;

/// A line longer than this is a broken peer, not a request.
const MAX_LINE: u64 = 64 << 20;

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Hello {
        v: u32,
        #[serde(default)]
        excludes: Vec<String>,
    },
    Owners {
        on: bool,
    },
    /// Keep replaced and deleted versions (`--backup-dir-a/-b`); answered
    /// like `owners`. A server that predates it refuses the request, so a
    /// backup is never silently not made.
    Backup {
        backup: Option<super::backup::Backup>,
    },
    Scan {
        checksum: bool,
    },
    /// Answered like `scan`, with the entries at and below `paths` only.
    ScanPaths {
        paths: Vec<WirePath>,
        checksum: bool,
    },
    Hash {
        paths: Vec<WirePath>,
    },
    Change {
        change: Change,
    },
    Get {
        path: WirePath,
        expect: Entry,
    },
    /// Followed by `src.size` raw bytes and an [`Intact`] line.
    Put {
        path: WirePath,
        src: Entry,
        expect: Option<Entry>,
    },
    Bye,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct HelloReply {
    pub v: u32,
    pub host: String,
    pub root_user: bool,
    pub producer: String,
}

/// One scanned entry; a scan reply is these, then [`ScanEnd`].
#[derive(Debug, Serialize, Deserialize)]
pub struct ScanItem {
    pub p: WirePath,
    pub e: Entry,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ScanEnd {
    pub end: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct HashReply {
    pub hashes: Vec<Option<Hash>>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ChangeReply {
    pub applied: Applied,
}

/// Announces `size` raw bytes.
#[derive(Debug, Serialize, Deserialize)]
pub struct DataHeader {
    pub size: u64,
}

/// Follows file bytes: whether the source stayed as expected while read.
#[derive(Debug, Serialize, Deserialize)]
pub struct Intact {
    pub intact: bool,
}

/// A request that failed on the serving side; `code` is an exit code when
/// the failure decides one (3: the root is missing).
#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorReply {
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u8>,
}

/// A reply line is either what was asked for or an [`ErrorReply`].
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Reply<T> {
    Error(ErrorReply),
    Ok(T),
}

pub fn write_line(out: &mut impl Write, value: &impl Serialize) -> io::Result<()> {
    serde_json::to_writer(&mut *out, value).map_err(io::Error::other)?;
    out.write_all(b"\n")
}

/// Reads one line; `Ok(None)` at a clean end of input.
pub fn read_line(input: &mut impl BufRead, buf: &mut Vec<u8>) -> io::Result<Option<()>> {
    buf.clear();
    let n = input.take(MAX_LINE).read_until(b'\n', buf)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the peer's line was cut short",
        ));
    }
    buf.pop();
    Ok(Some(()))
}

pub fn parse<'a, T: Deserialize<'a>>(line: &'a [u8]) -> io::Result<T> {
    serde_json::from_slice(line).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "unexpected line from the peer ({e}): {}",
                String::from_utf8_lossy(&line[..line.len().min(200)])
            ),
        )
    })
}

/// Copies exactly `n` bytes from `input` to `out`. A failing `out` does not
/// stop the copy (the stream must stay in step); its first error is
/// returned as the inner result.
pub fn copy_exact(
    input: &mut impl Read,
    out: &mut dyn Write,
    mut n: u64,
) -> io::Result<io::Result<()>> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut sink_err = None;
    while n > 0 {
        let want = n.min(buf.len() as u64) as usize;
        let got = input.read(&mut buf[..want])?;
        if got == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the peer stopped in the middle of a file",
            ));
        }
        if sink_err.is_none() {
            if let Err(e) = out.write_all(&buf[..got]) {
                sink_err = Some(e);
            }
        }
        n -= got as u64;
    }
    Ok(sink_err.map_or(Ok(()), Err))
}

/// Counts what passes through, so a writer that failed half-way can be
/// padded to the announced length.
pub struct Counting<'w> {
    pub inner: &'w mut dyn Write,
    pub count: u64,
}

impl Write for Counting<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

pub fn pad(out: &mut dyn Write, mut n: u64) -> io::Result<()> {
    let zeros = [0u8; 8192];
    while n > 0 {
        let k = n.min(zeros.len() as u64) as usize;
        out.write_all(&zeros[..k])?;
        n -= k as u64;
    }
    Ok(())
}
