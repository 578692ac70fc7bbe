//! The pushing side of the agent: `ssh HOST PROGRAM --serve DIR` started
//! over the target's shared connection ([`crate::ssh::ControlDir`]), a
//! hello that checks versions, then requests written ahead of their
//! acknowledgements within a bounded window.

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Stdio};
use std::sync::{Arc, Mutex};

use anyhow::Context;

use super::proto::{self, Ack, Meta, Recorded, Request};
use crate::bisync::proto::{parse, read_line, write_line};
use crate::os::child;
use crate::pushd::state::Position;
use crate::ssh::{quote_for_shell, SshSettings};
use crate::wire::path::WirePath;

/// Requests in flight at most: the pusher never gets further ahead of the
/// agent than this, so a dead link is noticed within one window.
pub const WINDOW: usize = 512;

/// Bytes of inline data in flight at most.
pub const WINDOW_BYTES: u64 = 8 << 20;

/// Why there is no agent to talk to.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    /// The remote has no such program (the shell said "not found", 127).
    #[error("{0}")]
    Missing(String),
    /// It answered, but speaks another protocol version or refused.
    #[error("{0}")]
    Refused(String),
    /// ssh failed or the link broke: try again later.
    #[error("{0}")]
    Link(String),
}

/// The remote command line: `PROGRAM --serve 'DIR' [--owners]` (PROGRAM
/// as written, it may be `sudo pushd`; the directory quoted for the remote
/// shell).
pub fn remote_command(program: &OsStr, path: &[u8], owners: bool) -> Vec<u8> {
    let path: &[u8] = if path.is_empty() { b"." } else { path };
    let mut cmd = program.as_bytes().to_vec();
    cmd.extend_from_slice(b" --serve ");
    cmd.extend_from_slice(&quote_for_shell(path));
    if owners {
        cmd.extend_from_slice(b" --owners");
    }
    cmd
}

/// What [`Agent::send_path`] did with a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sent {
    /// A directory, symlink or metadata sent with this id.
    Id(u64),
    /// A file's data sent inline with this id.
    Put(u64),
    /// A deletion sent with this id.
    Delete(u64),
    /// A comparison sent with this id (its data goes if it fails).
    Same(u64),
    /// Not for the agent (a large file, a special file): rsync sends it.
    Rsync,
    /// Nothing to do (gone from the source, deletions off).
    Nothing,
}

/// A record the agent said it wrote: what it applied, in which record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acked {
    pub record: String,
    pub position: Position,
}

/// A request in flight: its id, its inline bytes, and for an `applied`
/// the position it records.
struct InFlight {
    id: u64,
    bytes: u64,
    records: Option<Position>,
}

/// One live agent connection.
pub struct Agent {
    child: Child,
    to: BufWriter<ChildStdin>,
    from: BufReader<ChildStdout>,
    stderr: Arc<Mutex<Vec<u8>>>,
    line: Vec<u8>,
    next_id: u64,
    /// Requests sent and not yet acknowledged, in order.
    in_flight: VecDeque<InFlight>,
    /// Of them, the ones that are not `applied` (what [`Agent::ack`] returns).
    requests: usize,
    bytes_in_flight: u64,
    pub root_user: bool,
    pub producer: String,
    /// What the agent had recorded as applied when it said hello.
    pub recorded: Option<Recorded>,
    /// The last `applied` it acknowledged on this connection.
    pub acked: Option<Acked>,
    record_failed: bool,
}

impl Agent {
    /// Starts the agent on `destination` (`user@host`) serving `path`.
    pub fn connect(
        destination: &str,
        path: &[u8],
        ssh: &SshSettings,
        program: &OsStr,
        owners: bool,
    ) -> Result<Agent, Unavailable> {
        let command = remote_command(program, path, owners);
        let mut child = child::command("ssh")
            .args(ssh.args())
            .arg("-T")
            .arg("--")
            .arg(destination)
            .arg(OsStr::from_bytes(&command))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Unavailable::Link(format!("starting ssh: {e}")))?;
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut err_pipe = child.stderr.take().expect("piped");
        let collected = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err_pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let mut all = collected.lock().unwrap_or_else(|e| e.into_inner());
                // Enough to explain a failure; never unbounded.
                if all.len() < 64 * 1024 {
                    all.extend_from_slice(&buf[..n]);
                }
            }
        });
        let mut agent = Agent {
            to: BufWriter::with_capacity(256 * 1024, child.stdin.take().expect("piped")),
            from: BufReader::with_capacity(64 * 1024, child.stdout.take().expect("piped")),
            child,
            stderr,
            line: Vec::new(),
            next_id: 1,
            in_flight: VecDeque::new(),
            requests: 0,
            bytes_in_flight: 0,
            root_user: false,
            producer: String::new(),
            recorded: None,
            acked: None,
            record_failed: false,
        };
        let hello = Request::Hello {
            v: proto::VERSION,
            producer: concat!("pushd/", env!("CARGO_PKG_VERSION")).into(),
            owners,
        };
        let sent = write_line(&mut agent.to, &hello).and_then(|()| agent.to.flush());
        let answer = sent.and_then(|()| read_line(&mut agent.from, &mut agent.line));
        let what = String::from_utf8_lossy(&command).into_owned();
        match answer {
            Ok(Some(())) => {}
            Ok(None) | Err(_) => {
                let status = agent.child.wait().ok().and_then(|s| s.code());
                let text = agent.stderr_text();
                let missing = status == Some(127)
                    || text.contains("not found")
                    || text.contains("No such file or directory");
                return Err(if missing {
                    Unavailable::Missing(format!(
                        "`{what}` is not available on {destination} ({}): install syncpipe there \
                         (the same version as here) for the fast path, or give its path with \
                         --agent-path",
                        text.trim()
                    ))
                } else {
                    Unavailable::Link(format!(
                        "starting `{what}` on {destination} (ssh exit {status:?}): {}",
                        text.trim()
                    ))
                });
            }
        }
        if let Ok(hello) = parse::<proto::HelloReply>(&agent.line) {
            agent.root_user = hello.root_user;
            agent.producer = hello.producer;
            agent.recorded = hello.applied;
            return Ok(agent);
        }
        if let Ok(r) = parse::<proto::HelloRefused>(&agent.line) {
            if r.v == proto::VERSION {
                // The same protocol, but DIR cannot be opened now (missing):
                // rsync creates it, the agent is tried again later.
                return Err(Unavailable::Link(format!(
                    "the agent `{what}` on {destination}: {}",
                    r.error
                )));
            }
        }
        let refused = parse::<proto::HelloRefused>(&agent.line)
            .map(|r| format!("{} (agent protocol {})", r.error, r.v))
            .unwrap_or_else(|_| {
                format!(
                    "unexpected answer: {}",
                    String::from_utf8_lossy(&agent.line[..agent.line.len().min(200)])
                )
            });
        Err(Unavailable::Refused(format!(
            "the agent `{what}` on {destination} refused: {refused}; \
             install the same syncpipe version on both sides"
        )))
    }

    fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }

    /// A broken link, with what the agent or ssh said.
    fn broken(&mut self, what: &str, e: io::Error) -> anyhow::Error {
        let status = match self.child.try_wait() {
            Ok(Some(status)) => format!(" (ssh exited: {status})"),
            _ => String::new(),
        };
        anyhow::anyhow!(
            "agent connection lost while {what}: {e}{status}; {}",
            crate::pushd::rsync::one_line(&self.stderr_text())
        )
    }

    /// Requests sent and not yet acknowledged (not counting `applied`).
    pub fn in_flight(&self) -> usize {
        self.requests
    }

    /// Whether another request of `bytes` inline bytes fits in the window.
    pub fn has_room(&self, bytes: u64) -> bool {
        self.in_flight.len() < WINDOW
            && (self.in_flight.is_empty() || self.bytes_in_flight + bytes <= WINDOW_BYTES)
    }

    /// Sends `request` (its id is assigned here) with `data` after it for a
    /// put, without waiting for the answer. Returns the id.
    pub fn send(&mut self, mut request: Request, data: &[u8]) -> anyhow::Result<u64> {
        let id = self.next_id;
        self.next_id += 1;
        match &mut request {
            Request::Put { id: i, size, .. } => {
                *i = id;
                *size = data.len() as u64;
            }
            Request::Symlink { id: i, .. }
            | Request::Mkdir { id: i, .. }
            | Request::SetMeta { id: i, .. }
            | Request::Rename { id: i, .. }
            | Request::Delete { id: i, .. }
            | Request::Same { id: i, .. }
            | Request::Applied { id: i, .. }
            | Request::Check { id: i } => *i = id,
            Request::Hello { .. } | Request::Bye => anyhow::bail!("not a request with an id"),
        }
        let written = write_line(&mut self.to, &request).and_then(|()| self.to.write_all(data));
        if let Err(e) = written {
            return Err(self.broken("sending a request", e));
        }
        let records = match &request {
            Request::Applied { stream, seq, .. } => Some(Position {
                stream: stream.clone(),
                seq: *seq,
            }),
            _ => None,
        };
        self.requests += usize::from(records.is_none());
        self.in_flight.push_back(InFlight {
            id,
            bytes: data.len() as u64,
            records,
        });
        self.bytes_in_flight += data.len() as u64;
        Ok(id)
    }

    /// Asks the agent to record that `position` is applied, without
    /// waiting: its answer is read with the next ones ([`Agent::ack`]).
    pub fn record(&mut self, position: &Position) -> anyhow::Result<()> {
        let request = Request::Applied {
            id: 0,
            stream: position.stream.clone(),
            seq: position.seq,
        };
        self.send(request, &[])?;
        self.flush()
    }

    /// Sends what is buffered.
    pub fn flush(&mut self) -> anyhow::Result<()> {
        if let Err(e) = self.to.flush() {
            return Err(self.broken("sending requests", e));
        }
        Ok(())
    }

    /// The next acknowledgement of a request other than `applied` (flushing
    /// first), in the order sent; those of `applied` met on the way are
    /// noted in [`Agent::acked`].
    pub fn ack(&mut self) -> anyhow::Result<Ack> {
        self.flush()?;
        loop {
            let Some(sent) = self.in_flight.pop_front() else {
                anyhow::bail!("no request is waiting for an answer");
            };
            self.bytes_in_flight -= sent.bytes;
            match read_line(&mut self.from, &mut self.line) {
                Ok(Some(())) => {}
                Ok(None) => {
                    let eof = io::Error::new(io::ErrorKind::UnexpectedEof, "end of stream");
                    return Err(self.broken("waiting for an answer", eof));
                }
                Err(e) => return Err(self.broken("reading an answer", e)),
            }
            let ack: Ack = match parse(&self.line) {
                Ok(ack) => ack,
                Err(e) => return Err(self.broken("reading an answer", e)),
            };
            anyhow::ensure!(
                ack.id == sent.id,
                "the agent answered {} where {} was due",
                ack.id,
                sent.id
            );
            let Some(position) = sent.records else {
                self.requests -= 1;
                return Ok(ack);
            };
            match (ack.error, ack.record) {
                (None, Some(record)) => self.acked = Some(Acked { record, position }),
                (error, _) if !self.record_failed => {
                    // Not fatal: the next connection finds an older record
                    // (or none) and a full sync is done then. Said once.
                    self.record_failed = true;
                    crate::log_warn!(
                        "the agent could not record what was applied ({}): \
                         a reconnect will mean a full sync",
                        error.as_deref().unwrap_or("no record named")
                    );
                }
                _ => {}
            }
        }
    }

    /// Brings `rel` on the target to its state under `source` (a file
    /// inline, a symlink, a directory; a deletion when it is gone and
    /// `delete` is set), without waiting for the answer. A file `renamed`
    /// there in this batch is first only compared (`same`): its data goes
    /// only when that fails.
    pub fn send_path(
        &mut self,
        source: &Path,
        rel: &WirePath,
        inline_max: u64,
        delete: bool,
        renamed: bool,
    ) -> anyhow::Result<Sent> {
        let path = if rel.is_root() {
            source.to_path_buf()
        } else {
            source.join(rel.as_path())
        };
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            Err(e) if crate::pushd::direct::vanished(&e) => return self.gone(rel, delete),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let kind = meta.file_type();
        if kind.is_dir() {
            let request = Request::Mkdir {
                id: 0,
                path: rel.clone(),
                meta: Meta::of(&meta),
            };
            return self.send(request, &[]).map(Sent::Id);
        }
        if kind.is_symlink() {
            let to = std::fs::read_link(&path)
                .with_context(|| format!("reading the symlink {}", path.display()))?;
            let request = Request::Symlink {
                id: 0,
                path: rel.clone(),
                to: WirePath::from_bytes(to.as_os_str().as_bytes().to_vec()),
                meta: Meta::of(&meta),
            };
            return self.send(request, &[]).map(Sent::Id);
        }
        if kind.is_file() && renamed {
            let request = Request::Same {
                id: 0,
                path: rel.clone(),
                size: meta.len(),
                meta: Meta::of(&meta),
            };
            return self.send(request, &[]).map(Sent::Same);
        }
        if !kind.is_file() || meta.len() > inline_max {
            return Ok(Sent::Rsync);
        }
        // Read first, then the metadata of the very descriptor read: a write
        // after the read is a later event, which sends the file again.
        let mut file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if crate::pushd::direct::vanished(&e) => return self.gone(rel, delete),
            Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
        };
        let mut data = Vec::with_capacity(meta.len() as usize);
        (&mut file)
            .take(inline_max + 1)
            .read_to_end(&mut data)
            .with_context(|| format!("reading {}", path.display()))?;
        if data.len() as u64 > inline_max {
            return Ok(Sent::Rsync);
        }
        let meta = file
            .metadata()
            .with_context(|| format!("reading {}", path.display()))?;
        let request = Request::Put {
            id: 0,
            path: rel.clone(),
            size: 0,
            meta: Meta::of(&meta),
        };
        self.send(request, &data).map(Sent::Put)
    }

    /// `rel` is not on the source: deleted when deletions propagate.
    fn gone(&mut self, rel: &WirePath, delete: bool) -> anyhow::Result<Sent> {
        if !delete {
            return Ok(Sent::Nothing);
        }
        let request = Request::Delete {
            id: 0,
            path: rel.clone(),
        };
        self.send(request, &[]).map(Sent::Delete)
    }

    /// Moves `from` to `to` on the target, without waiting for the answer.
    pub fn send_rename(
        &mut self,
        from: &WirePath,
        to: &WirePath,
        dir: bool,
    ) -> anyhow::Result<u64> {
        let request = Request::Rename {
            id: 0,
            from: from.clone(),
            to: to.clone(),
            dir: Some(dir),
        };
        self.send(request, &[])
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = write_line(&mut self.to, &Request::Bye).and_then(|()| self.to.flush());
        // A hung link must not hang the pusher: a second, then it is killed.
        for _ in 0..50 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_directory_is_quoted_for_the_remote_shell() {
        assert_eq!(
            remote_command(OsStr::new("pushd"), b"/srv/it's $(x)\n", false),
            b"pushd --serve '/srv/it'\\''s $(x)\n'"
        );
        assert_eq!(
            remote_command(OsStr::new("sudo /opt/pushd"), b"", true),
            b"sudo /opt/pushd --serve '.' --owners"
        );
    }
}
