//! A stream reader on a unix socket that survives its writer: it reconnects
//! with backoff, says what it has already seen, and turns "the writer could
//! not resume me" into [`Item::Gap`] so the consumer does a full sync.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use anyhow::Context;

use super::{Hello, Resume};
use crate::wire::event::Record;
use crate::wire::reader::{Item, RecordReader};

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Reads records from a writer's `--listen` socket, forever: a lost
/// connection is retried until the writer is back.
pub struct Connector {
    path: PathBuf,
    reader: Option<RecordReader<BufReader<UnixStream>>>,
    /// The stream and highest seq handed to the consumer so far.
    stream: Option<String>,
    seq: u64,
    backoff: Duration,
    complained: bool,
    connected_once: bool,
    /// Items the handshake produced, handed out before the stream's own.
    queue: VecDeque<Item>,
}

impl Connector {
    /// `resume_from`: the stream and seq the consumer has already applied
    /// (from its state file), so even the first connection can resume.
    pub fn new(path: &Path, resume_from: Option<(String, u64)>) -> Self {
        let (stream, seq) = match resume_from {
            Some((s, q)) => (Some(s), q),
            None => (None, 0),
        };
        Connector {
            path: path.to_path_buf(),
            reader: None,
            stream,
            seq,
            backoff: BACKOFF_MIN,
            complained: false,
            connected_once: false,
            queue: VecDeque::new(),
        }
    }

    /// The highest seq handed out so far (of the current stream).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The next item; blocks while the writer is away. Returns `Ok(None)`
    /// only if `stop` says so between attempts.
    pub fn next_item(&mut self, stop: &dyn Fn() -> bool) -> anyhow::Result<Option<Item>> {
        loop {
            if let Some(item) = self.queue.pop_front() {
                return Ok(Some(item));
            }
            if self.reader.is_none() {
                if stop() {
                    return Ok(None);
                }
                match self.connect() {
                    Ok(()) => {
                        self.backoff = BACKOFF_MIN;
                        continue; // hand out what the handshake queued first
                    }
                    Err(e) => {
                        if !self.complained {
                            self.complained = true;
                            crate::log_warn!("{:#}; retrying until it is back", e);
                        }
                        thread::sleep(self.backoff);
                        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                        continue;
                    }
                }
            }
            let reader = self.reader.as_mut().expect("connected");
            match reader.next_item() {
                Ok(Some(item)) => {
                    if let Item::Record(record) = &item {
                        self.note(record);
                    }
                    return Ok(Some(item));
                }
                Ok(None) | Err(_) => {
                    crate::log_warn!(
                        "lost the writer at {}; reconnecting to resume after seq {}",
                        self.path.display(),
                        self.seq
                    );
                    self.reader = None;
                    self.complained = true;
                }
            }
        }
    }

    /// Remembers how far the consumer has been handed records.
    fn note(&mut self, record: &Record) {
        match record {
            Record::Header(h) if self.stream.as_deref() != Some(&h.stream) => {
                self.stream = Some(h.stream.clone());
                self.seq = 0;
            }
            Record::Event(e) => self.seq = self.seq.max(e.seq),
            Record::End(e) => self.seq = self.seq.max(e.seq),
            Record::Batch(b) => self.seq = self.seq.max(b.last_seq),
            _ => {}
        }
    }

    /// Connects and does the handshake; queues what the consumer must hear
    /// first: the header when it is news to this consumer, and a gap when the
    /// writer could not continue where we were.
    fn connect(&mut self) -> anyhow::Result<()> {
        let sock = UnixStream::connect(&self.path)
            .with_context(|| format!("cannot connect to the writer at {}", self.path.display()))?;
        let mut hello = Vec::new();
        Hello {
            stream: self.stream.clone(),
            seq: self.seq,
        }
        .write_line(&mut hello)?;
        (&sock).write_all(&hello).context("saying hello")?;
        let mut input = BufReader::new(sock);
        let header = match read_line(&mut input).map(|l| Record::parse(&l)) {
            Ok(Ok(Record::Header(h))) => h,
            Ok(_) => anyhow::bail!(
                "the writer at {} did not start with a header",
                self.path.display()
            ),
            Err(e) => {
                return Err(e.context(format!("reading the header from {}", self.path.display())))
            }
        };
        let resume =
            Resume::parse(&read_line(&mut input)?).context("reading the writer's resume line")?;
        let same_stream = self.stream.as_deref() == Some(header.stream.as_str());
        crate::log_info!(
            "connected to {}: stream {}, {}",
            self.path.display(),
            header.stream,
            if resume.full {
                "full sync needed"
            } else {
                "resuming"
            }
        );
        let first = !self.connected_once;
        self.connected_once = true;
        self.complained = false;
        if first || !same_stream {
            self.note(&Record::Header(header.clone()));
            self.queue.push_back(Item::Record(Record::Header(header)));
        }
        if resume.full && same_stream {
            self.queue.push_back(Item::Gap {
                reason: format!(
                    "the writer at {} no longer holds what came after seq {}",
                    self.path.display(),
                    self.seq
                ),
            });
        }
        self.reader = Some(RecordReader::new(input));
        Ok(())
    }
}

/// One line of the handshake, newline removed.
fn read_line<R: BufRead>(input: &mut R) -> anyhow::Result<Vec<u8>> {
    let mut line = Vec::new();
    input.take(64 << 10).read_until(b'\n', &mut line)?;
    anyhow::ensure!(
        line.pop() == Some(b'\n'),
        "the writer closed the connection"
    );
    Ok(line)
}
