//! Reading and writing the JSON-lines stream: line framing, line numbers for
//! messages, and the broken-pipe rule (a reader that goes away is a quiet stop).

use std::io::{self, BufRead, Write};

use crate::wire::event::{Malformed, Record};

/// Lines longer than this are reported as malformed instead of being buffered:
/// a producer gone wrong must not make a consumer eat all memory.
pub const MAX_LINE: usize = 16 << 20;

/// One item read from a stream.
#[derive(Debug)]
pub enum Item {
    Record(Record),
    /// A line that could not be parsed. The caller decides how to degrade
    /// (usually: a full rescan, because something may have been missed).
    Malformed {
        line_no: u64,
        error: Malformed,
    },
    /// Records were lost between this reader and its writer (a socket
    /// writer's backlog no longer held them). Like a malformed line, the
    /// consumer's answer is a full sync.
    Gap {
        reason: String,
    },
}

/// Splits a byte stream into records. Blank lines are skipped; a last line
/// without a newline still counts.
pub struct RecordReader<R> {
    input: R,
    line: Vec<u8>,
    line_no: u64,
}

impl<R: BufRead> RecordReader<R> {
    pub fn new(input: R) -> Self {
        RecordReader {
            input,
            line: Vec::with_capacity(512),
            line_no: 0,
        }
    }

    /// The number of the line read last (1-based), for messages.
    pub fn line_no(&self) -> u64 {
        self.line_no
    }

    /// The bytes held for the current line (for the fuzz checks: it must
    /// stay within the line limit whatever the input).
    pub fn buffer_capacity(&self) -> usize {
        self.line.capacity()
    }

    /// The next record, `Ok(None)` at end of input.
    pub fn next_item(&mut self) -> io::Result<Option<Item>> {
        loop {
            self.line.clear();
            let n = io::Read::take(&mut self.input, MAX_LINE as u64 + 1)
                .read_until(b'\n', &mut self.line)?;
            if n == 0 {
                return Ok(None);
            }
            self.line_no += 1;
            if self.line.len() > MAX_LINE && self.line.last() != Some(&b'\n') {
                self.skip_rest_of_line()?;
                return Ok(Some(Item::Malformed {
                    line_no: self.line_no,
                    error: Malformed {
                        reason: format!("line longer than {MAX_LINE} bytes"),
                    },
                }));
            }
            if self.line.last() == Some(&b'\n') {
                self.line.pop();
            }
            if self.line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return Ok(Some(match Record::parse(&self.line) {
                Ok(Record::Other { kind, line }) if kind == "resume" => {
                    // The socket handshake's answer (docs/protocol.md), here
                    // handed on through a pipe: full means records were lost.
                    if resume_is_full(&line) {
                        Item::Gap {
                            reason: format!(
                                "input line {}: records were lost upstream (the writer's \
                                 socket backlog no longer held what this stream's reader \
                                 had not yet read; a larger --backlog avoids it)",
                                self.line_no
                            ),
                        }
                    } else {
                        continue;
                    }
                }
                Ok(record) => Item::Record(record),
                Err(error) => Item::Malformed {
                    line_no: self.line_no,
                    error,
                },
            }));
        }
    }

    fn skip_rest_of_line(&mut self) -> io::Result<()> {
        loop {
            let buf = self.input.fill_buf()?;
            if buf.is_empty() {
                return Ok(());
            }
            if let Some(i) = buf.iter().position(|&b| b == b'\n') {
                self.input.consume(i + 1);
                return Ok(());
            }
            let len = buf.len();
            self.input.consume(len);
        }
    }
}

/// Whether a `resume` line says `"full": true` (or cannot be read: then
/// assume the worst).
fn resume_is_full(line: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Full {
        full: Option<bool>,
    }
    serde_json::from_slice::<Full>(line)
        .ok()
        .and_then(|f| f.full)
        .unwrap_or(true)
}

/// Writes records, one per line. Output is buffered; call [`flush`] before
/// blocking, so no record waits in a buffer while the producer sleeps.
///
/// [`flush`]: RecordWriter::flush
pub struct RecordWriter<W: Write> {
    out: io::BufWriter<W>,
    scratch: Vec<u8>,
}

impl<W: Write> RecordWriter<W> {
    pub fn new(out: W) -> Self {
        RecordWriter {
            out: io::BufWriter::with_capacity(64 << 10, out),
            scratch: Vec::with_capacity(512),
        }
    }

    pub fn write(&mut self, record: &Record) -> io::Result<()> {
        self.scratch.clear();
        record
            .write_line(&mut self.scratch)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        self.out.write_all(&self.scratch)
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// True for the error a writer gets when its reader has gone away. That is a
/// normal end for a pipeline stage (`watchd | head`), not a failure.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(input: &[u8]) -> Vec<Item> {
        let mut reader = RecordReader::new(input);
        let mut out = Vec::new();
        while let Some(item) = reader.next_item().unwrap() {
            out.push(item);
        }
        out
    }

    #[test]
    fn reads_lines_skips_blanks_and_numbers_errors() {
        let input = b"{\"type\":\"x\"}\n\n  \nnope\n{\"type\":\"y\"}";
        let got = items(input);
        assert_eq!(got.len(), 3);
        assert!(matches!(&got[0], Item::Record(Record::Other { kind, .. }) if kind == "x"));
        assert!(matches!(&got[1], Item::Malformed { line_no: 4, .. }));
        assert!(matches!(&got[2], Item::Record(Record::Other { kind, .. }) if kind == "y"));
    }

    #[test]
    fn a_full_resume_is_a_gap_and_a_partial_one_is_nothing() {
        let got = items(b"{\"type\":\"resume\",\"stream\":\"s\",\"full\":false}\n{\"type\":\"resume\",\"stream\":\"s\",\"full\":true}\n");
        assert_eq!(got.len(), 1);
        let Item::Gap { reason } = &got[0] else {
            panic!("{got:?}")
        };
        // What happened, where, and what to do, in words a user knows.
        assert!(
            reason.starts_with("input line 2: records were lost"),
            "{reason}"
        );
        assert!(reason.contains("--backlog"), "{reason}");
    }

    #[test]
    fn writer_round_trips_unknown_lines() {
        let mut buf = Vec::new();
        {
            let mut w = RecordWriter::new(&mut buf);
            for item in items(b"{\"type\":\"z\", \"a\" : 1}\n") {
                let Item::Record(r) = item else { panic!() };
                w.write(&r).unwrap();
            }
            w.flush().unwrap();
        }
        assert_eq!(buf, b"{\"type\":\"z\", \"a\" : 1}\n");
    }

    #[test]
    fn broken_pipe_is_recognised_through_context() {
        use anyhow::Context;
        let err: anyhow::Result<()> = Err(io::Error::from(io::ErrorKind::BrokenPipe).into());
        let err = err.context("writing stdout").unwrap_err();
        assert!(is_broken_pipe(&err));
        assert!(!is_broken_pipe(&anyhow::anyhow!("other")));
    }
}
