//! Moving the stream between programs: stdout and stdin, or a unix socket
//! where the writer keeps a backlog and a reader that comes back resumes.
//!
//! The handshake (docs/protocol.md, "Sockets and resume"): the reader sends
//! one `hello` line with the stream id and seq it has applied; the writer
//! answers with its `header`, one `resume` line saying whether the reader can
//! continue (`"full": false`) or must sync the whole root first
//! (`"full": true`), and then the records from where the reader is.

pub(crate) mod activation;
pub(crate) mod backlog;
pub mod client;
pub(crate) mod pipe;
pub mod server;

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::PathBuf;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::wire::event::Record;
use crate::wire::reader::RecordWriter;
pub use server::BacklogSize;

/// Where a writer's records go.
#[derive(Debug, Clone, Default)]
pub struct Output {
    /// Serve readers on this unix socket instead of writing stdout.
    pub listen: Option<PathBuf>,
    pub backlog: BacklogSize,
}

/// The open output: stdout, or a socket server with its backlog.
pub enum Sink {
    Stdout {
        writer: RecordWriter<File>,
        fd: File,
    },
    Socket(server::Server),
}

impl Sink {
    /// A socket systemd passed (named `stream`, or the only one) wins; then
    /// `--listen`; else stdout.
    pub fn open(output: &Output) -> anyhow::Result<Self> {
        if let Some(listener) = activation::take_listener(Some("stream"))? {
            crate::log_info!("serving readers on the socket systemd passed");
            return Ok(Sink::Socket(server::Server::serve(
                listener,
                output.backlog,
            )));
        }
        if let Some(path) = &output.listen {
            return Ok(Sink::Socket(server::Server::bind(path, output.backlog)?));
        }
        let fd = File::from(
            io::stdout()
                .as_fd()
                .try_clone_to_owned()
                .context("duplicating stdout")?,
        );
        let writer = RecordWriter::new(fd.try_clone().context("duplicating stdout")?);
        Ok(Sink::Stdout { writer, fd })
    }

    /// Says this writer makes the streams it writes (watchd), so a reader
    /// of a stream with no record yet resumes instead of syncing in full. A
    /// writer that passes a stream on (batchd) must not: it cannot name
    /// what came before the first record it got.
    pub fn originating(self) -> Self {
        if let Sink::Socket(server) = &self {
            server.set_origin();
        }
        self
    }

    pub fn write(&mut self, record: &Record) -> io::Result<()> {
        match self {
            Sink::Stdout { writer, .. } => writer.write(record),
            Sink::Socket(server) => server.publish(record),
        }
    }

    /// Pushes buffered records out; call before blocking.
    pub fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Stdout { writer, .. } => writer.flush(),
            Sink::Socket(_) => Ok(()),
        }
    }

    /// stdout's descriptor, to poll for the reader going away.
    pub fn stdout_fd(&self) -> Option<BorrowedFd<'_>> {
        match self {
            Sink::Stdout { fd, .. } => Some(fd.as_fd()),
            Sink::Socket(_) => None,
        }
    }
}

/// `--backlog`: a count of records (`100000`) or a size (`64M`, `1GiB`).
pub fn parse_backlog(text: &str) -> Result<BacklogSize, String> {
    let text = text.trim();
    if let Ok(records) = text.parse::<usize>() {
        if records == 0 {
            return Err("--backlog must be at least 1".into());
        }
        return Ok(BacklogSize {
            records,
            ..BacklogSize::default()
        });
    }
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let number: usize = number.parse().map_err(|_| {
        format!("{text:?} is not a backlog size: write a record count (100000) or a size (64M)")
    })?;
    let factor: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(format!("{text:?}: unknown size unit {unit:?} (K, M or G)")),
    };
    Ok(BacklogSize {
        records: usize::MAX,
        bytes: number.saturating_mul(factor).max(1),
    })
}

/// A reader's first line on a socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The stream the reader last applied records of; `null` for none.
    pub stream: Option<String>,
    /// The highest seq it has applied of that stream (0: none).
    #[serde(default)]
    pub seq: u64,
}

/// The writer's answer, right after its header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resume {
    pub stream: String,
    /// The reader must sync the whole root before applying what follows.
    pub full: bool,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Tagged<'a> {
    Hello(&'a Hello),
    Resume(&'a Resume),
}

#[derive(Deserialize)]
struct TypeOnly {
    #[serde(rename = "type")]
    kind: String,
}

fn parse_tagged<T: serde::de::DeserializeOwned>(line: &[u8], want: &str) -> anyhow::Result<T> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let kind: TypeOnly = serde_json::from_slice(line)?;
    anyhow::ensure!(
        kind.kind == want,
        "expected a {want} line, got {:?}",
        kind.kind
    );
    Ok(serde_json::from_slice(line)?)
}

impl Hello {
    pub fn write_line(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        serde_json::to_writer(&mut *out, &Tagged::Hello(self))?;
        out.write_all(b"\n")
    }

    pub fn parse(line: &[u8]) -> anyhow::Result<Self> {
        parse_tagged(line, "hello")
    }
}

impl Resume {
    pub fn write_line(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        serde_json::to_writer(&mut *out, &Tagged::Resume(self))?;
        out.write_all(b"\n")
    }

    pub fn parse(line: &[u8]) -> anyhow::Result<Self> {
        parse_tagged(line, "resume")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backlog_sizes() {
        assert_eq!(parse_backlog("5000").unwrap().records, 5000);
        assert_eq!(parse_backlog("64M").unwrap().bytes, 64 << 20);
        assert_eq!(parse_backlog("1GiB").unwrap().bytes, 1 << 30);
        assert!(parse_backlog("0").is_err());
        assert!(parse_backlog("12 parsecs").is_err());
    }

    #[test]
    fn handshake_lines() {
        let mut out = Vec::new();
        Hello {
            stream: Some("ab".into()),
            seq: 7,
        }
        .write_line(&mut out)
        .unwrap();
        assert_eq!(out, b"{\"type\":\"hello\",\"stream\":\"ab\",\"seq\":7}\n");
        assert_eq!(Hello::parse(&out).unwrap().seq, 7);
        assert_eq!(
            Hello::parse(br#"{"type":"hello","stream":null}"#).unwrap(),
            Hello {
                stream: None,
                seq: 0
            }
        );
        assert!(Hello::parse(br#"{"type":"resume","stream":"a","full":true}"#).is_err());
        let mut out = Vec::new();
        Resume {
            stream: "ab".into(),
            full: true,
        }
        .write_line(&mut out)
        .unwrap();
        assert!(Resume::parse(&out).unwrap().full);
    }
}
