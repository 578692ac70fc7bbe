//! A stream writer serving readers on a unix socket: any number of them, each
//! resuming from where it left off while the backlog still holds it.
//!
//! The producer's loop only appends to the shared backlog and never waits for
//! a reader; each reader has a thread that sends what it has not had yet. A
//! reader that falls behind by more than the backlog is disconnected: when it
//! comes back it is told to do a full sync, rather than being fed a stream
//! with a hole in it.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

use anyhow::Context;

use super::backlog::Backlog;
use super::{Hello, Resume};
use crate::wire::event::{Header, Record};

/// How long a reader may take to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

struct State {
    backlog: Backlog,
    header: Option<(Header, Arc<[u8]>)>,
    closed: bool,
    readers: usize,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

/// The producer's side. Dropping it (or [`close`](Server::close)) lets every
/// reader drain what it has and then closes the connections.
pub struct Server {
    shared: Arc<Shared>,
}

/// Backlog bounds, from `--backlog`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BacklogSize {
    pub records: usize,
    pub bytes: usize,
}

impl Default for BacklogSize {
    fn default() -> Self {
        BacklogSize {
            records: 100_000,
            bytes: 64 << 20,
        }
    }
}

impl Server {
    /// Binds `path` (removing a stale socket file left by a previous run) and
    /// starts accepting readers.
    pub fn bind(path: &Path, size: BacklogSize) -> anyhow::Result<Self> {
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            use std::os::unix::fs::FileTypeExt;
            anyhow::ensure!(
                meta.file_type().is_socket(),
                "{} exists and is not a socket; refusing to replace it",
                path.display()
            );
            if UnixStream::connect(path).is_ok() {
                anyhow::bail!(
                    "{} is in use by another running writer; stop it or choose another --listen path",
                    path.display()
                );
            }
            std::fs::remove_file(path)
                .with_context(|| format!("removing stale socket {}", path.display()))?;
        }
        let listener =
            UnixListener::bind(path).with_context(|| format!("listening on {}", path.display()))?;
        Ok(Self::serve(listener, size))
    }

    /// Serves readers on an already listening socket (e.g. from systemd).
    pub fn serve(listener: UnixListener, size: BacklogSize) -> Self {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                backlog: Backlog::new(size.records, size.bytes),
                header: None,
                closed: false,
                readers: 0,
            }),
            wake: Condvar::new(),
        });
        let accept_shared = shared.clone();
        thread::spawn(move || accept_loop(listener, accept_shared));
        Server { shared }
    }

    /// Publishes one record to every reader (now or when it connects).
    pub fn publish(&self, record: &Record) -> io::Result<()> {
        let mut line = Vec::with_capacity(256);
        record
            .write_line(&mut line)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let line: Arc<[u8]> = Arc::from(line);
        let mut state = self.shared.state.lock().expect("transport lock poisoned");
        match record {
            Record::Header(h) => {
                state.backlog.reset();
                state.header = Some((h.clone(), line));
            }
            other => {
                let seqs = match other {
                    Record::Event(e) => Some((e.seq, e.seq)),
                    Record::End(e) => Some((e.seq, e.seq)),
                    Record::Batch(b) => Some((b.first_seq, b.last_seq)),
                    _ => None,
                };
                state.backlog.push(seqs, line);
            }
        }
        drop(state);
        self.shared.wake.notify_all();
        Ok(())
    }

    /// This writer makes its streams rather than passing another's on.
    pub fn set_origin(&self) {
        self.shared
            .state
            .lock()
            .expect("transport lock poisoned")
            .backlog
            .set_origin();
    }

    /// Readers connected right now.
    pub fn readers(&self) -> usize {
        self.shared
            .state
            .lock()
            .expect("transport lock poisoned")
            .readers
    }

    pub fn close(&self) {
        self.shared
            .state
            .lock()
            .expect("transport lock poisoned")
            .closed = true;
        self.shared.wake.notify_all();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.close();
    }
}

fn accept_loop(listener: UnixListener, shared: Arc<Shared>) {
    for conn in listener.incoming() {
        if shared.state.lock().map(|s| s.closed).unwrap_or(true) {
            return;
        }
        match conn {
            Ok(stream) => {
                let shared = shared.clone();
                thread::spawn(move || {
                    if let Err(e) = serve_reader(stream, &shared) {
                        crate::log_info!("a reader left: {e:#}");
                    }
                });
            }
            Err(e) => {
                crate::log_warn!("accepting a reader failed: {e}");
                thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Counts a reader in while it is connected.
struct ReaderGuard<'a>(&'a Shared);

impl Drop for ReaderGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut s) = self.0.state.lock() {
            s.readers -= 1;
        }
    }
}

fn serve_reader(stream: UnixStream, shared: &Shared) -> anyhow::Result<()> {
    stream.set_read_timeout(Some(HELLO_TIMEOUT))?;
    let mut hello_line = Vec::new();
    BufReader::new(&stream)
        .take(64 << 10)
        .read_until(b'\n', &mut hello_line)
        .context("reading the reader's hello")?;
    let hello = Hello::parse(&hello_line).context("the reader's hello")?;
    let mut out = io::BufWriter::new(&stream);

    shared
        .state
        .lock()
        .expect("transport lock poisoned")
        .readers += 1;
    let _guard = ReaderGuard(shared);
    let mut state = shared.state.lock().expect("transport lock poisoned");
    // Nothing to say until the producer has started its stream.
    while state.header.is_none() && !state.closed {
        state = shared.wake.wait(state).expect("transport lock poisoned");
    }
    let Some((header, header_line)) = state.header.clone() else {
        return Ok(());
    };
    let start = state
        .backlog
        .start_for(&header.stream, hello.stream.as_deref(), hello.seq);
    let mut stream_id = header.stream.clone();
    drop(state);

    out.write_all(&header_line)?;
    Resume {
        stream: header.stream.clone(),
        full: start.full,
    }
    .write_line(&mut out)?;
    out.flush()?;
    let mut next = start.index;
    loop {
        let mut lines = Vec::new();
        {
            let mut state = shared.state.lock().expect("transport lock poisoned");
            while let Some((h, _)) = &state.header {
                if h.stream != stream_id {
                    // The producer restarted its stream: the reader must
                    // start over. Closing makes it reconnect and hear so.
                    return Ok(());
                }
                if next < state.backlog.base() {
                    anyhow::bail!(
                        "reader fell behind the backlog; it will be told to do a full sync"
                    );
                }
                if next < state.backlog.end() || state.closed {
                    break;
                }
                state = shared.wake.wait(state).expect("transport lock poisoned");
            }
            while next < state.backlog.end() && lines.len() < 1024 {
                lines.push(state.backlog.get(next).expect("index within the backlog"));
                next += 1;
            }
            if lines.is_empty() && state.closed {
                return Ok(());
            }
            stream_id = state
                .header
                .as_ref()
                .map(|(h, _)| h.stream.clone())
                .unwrap_or(stream_id);
        }
        for line in &lines {
            out.write_all(line)?;
        }
        out.flush()?;
    }
}
