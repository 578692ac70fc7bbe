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
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

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
    /// A file's data sent inline: its size.
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

/// Called by the reader thread when an answer arrives or the link breaks,
/// so a worker waiting on its own channel looks at the answers.
pub type Waker = Arc<dyn Fn() + Send + Sync>;

/// The answer to a request sent in `batch` ([`Agent::set_batch`]).
#[derive(Debug)]
pub struct Answer {
    pub batch: u64,
    pub ack: Ack,
}

/// A request in flight: its id, its inline bytes, the batch it belongs
/// to, and for an `applied` the position it records.
struct InFlight {
    id: u64,
    bytes: u64,
    batch: u64,
    records: Option<Position>,
}

/// What the pusher and the connection's reader thread share.
#[derive(Default)]
struct Flight {
    /// Requests sent and not yet answered, in order.
    in_flight: VecDeque<InFlight>,
    /// Of them, the ones that are not `applied`.
    requests: usize,
    bytes: u64,
    /// Answers read and not taken yet, in order (never those of `applied`).
    answers: VecDeque<Answer>,
    /// The last `applied` the agent acknowledged on this connection.
    acked: Option<Acked>,
    record_failed: bool,
    /// The link broke (end of stream, a read error, a wrong answer): why.
    broken: Option<String>,
    /// When the agent last showed progress on what is in flight: the
    /// first request sent after an idle spell, or the last answer.
    progress: Option<std::time::Instant>,
}

struct Link {
    flight: Mutex<Flight>,
    changed: Condvar,
}

impl Link {
    fn lock(&self) -> MutexGuard<'_, Flight> {
        self.flight.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One live agent connection. Answers are read by a thread of their own
/// ([`read_answers`]), so the pusher can send a batch while the answers
/// of earlier ones are still coming, and a worker can wait for them
/// beside its input.
pub struct Agent {
    child: Child,
    to: BufWriter<ChildStdin>,
    link: Arc<Link>,
    stderr: Arc<Mutex<Vec<u8>>>,
    next_id: u64,
    /// The batch requests are sent in now.
    batch: u64,
    pub root_user: bool,
    pub producer: String,
    /// What the agent had recorded as applied when it said hello.
    pub recorded: Option<Recorded>,
    /// Longest wait for an answer without any answer coming (`--io-timeout`):
    /// an agent stuck on a hung target file system behind a live ssh is
    /// given up (ssh killed, the link broken, its batches applied again),
    /// not waited on forever by the worker, the other targets and a stop.
    quiet: Option<Duration>,
}

impl Agent {
    /// Starts the agent on `destination` (`user@host`) serving `path`.
    pub fn connect(
        destination: &str,
        path: &[u8],
        ssh: &SshSettings,
        program: &OsStr,
        owners: bool,
        waker: Option<Waker>,
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
        let mut from = BufReader::with_capacity(64 * 1024, child.stdout.take().expect("piped"));
        let mut agent = Agent {
            to: BufWriter::with_capacity(256 * 1024, child.stdin.take().expect("piped")),
            child,
            link: Arc::new(Link {
                flight: Mutex::new(Flight::default()),
                changed: Condvar::new(),
            }),
            stderr,
            next_id: 1,
            batch: 0,
            root_user: false,
            producer: String::new(),
            recorded: None,
            quiet: ssh.connect_timeout.map(Duration::from_secs),
        };
        let hello = Request::Hello {
            v: proto::VERSION,
            producer: concat!("pushd/", env!("CARGO_PKG_VERSION")).into(),
            owners,
        };
        let mut line = Vec::new();
        let sent = write_line(&mut agent.to, &hello).and_then(|()| agent.to.flush());
        let answer = sent.and_then(|()| read_line(&mut from, &mut line));
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
        if let Ok(hello) = parse::<proto::HelloReply>(&line) {
            agent.root_user = hello.root_user;
            agent.producer = hello.producer;
            agent.recorded = hello.applied;
            let link = Arc::clone(&agent.link);
            std::thread::Builder::new()
                .name("agent answers".into())
                .spawn(move || read_answers(from, &link, waker))
                .map_err(|e| Unavailable::Link(format!("starting a thread: {e}")))?;
            return Ok(agent);
        }
        if let Ok(r) = parse::<proto::HelloRefused>(&line) {
            if r.v == proto::VERSION {
                // The same protocol, but DIR cannot be opened now (missing):
                // rsync creates it, the agent is tried again later.
                return Err(Unavailable::Link(format!(
                    "the agent `{what}` on {destination}: {}",
                    r.error
                )));
            }
        }
        let refused = parse::<proto::HelloRefused>(&line)
            .map(|r| format!("{} (agent protocol {})", r.error, r.v))
            .unwrap_or_else(|_| {
                format!(
                    "unexpected answer: {}",
                    String::from_utf8_lossy(&line[..line.len().min(200)])
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
    fn broken(&mut self, what: &str, e: &dyn std::fmt::Display) -> anyhow::Error {
        let status = match self.child.try_wait() {
            Ok(Some(status)) => format!(" (ssh exited: {status})"),
            _ => String::new(),
        };
        anyhow::anyhow!(
            "agent connection lost while {what}: {e}{status}; {}",
            crate::pushd::rsync::one_line(&self.stderr_text())
        )
    }

    /// Why the link broke (the reader saw it end, a wrong answer, no
    /// answer within `--io-timeout`).
    pub fn broken_why(&self) -> Option<String> {
        self.link.lock().broken.clone()
    }

    /// The link broke.
    pub fn is_broken(&self) -> bool {
        self.link.lock().broken.is_some()
    }

    /// Requests sent in `batch` from now on (see [`Answer`]).
    pub fn set_batch(&mut self, batch: u64) {
        self.batch = batch;
    }

    /// Requests sent and not yet answered (not counting `applied`).
    pub fn in_flight(&self) -> usize {
        self.link.lock().requests
    }

    /// Whether another request of `bytes` inline bytes fits in the window.
    pub fn has_room(&self, bytes: u64) -> bool {
        let f = self.link.lock();
        f.in_flight.len() < WINDOW && (f.in_flight.is_empty() || f.bytes + bytes <= WINDOW_BYTES)
    }

    /// The last `applied` the agent acknowledged on this connection.
    pub fn acked(&self) -> Option<Acked> {
        self.link.lock().acked.clone()
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
        let records = match &request {
            Request::Applied { stream, seq, .. } => Some(Position {
                stream: stream.clone(),
                seq: *seq,
            }),
            _ => None,
        };
        {
            // Queued before it is written: its answer may come before this
            // thread gets here again.
            let mut f = self.link.lock();
            if let Some(why) = f.broken.clone() {
                drop(f);
                return Err(self.broken("sending a request", &why));
            }
            f.requests += usize::from(records.is_none());
            f.bytes += data.len() as u64;
            if f.in_flight.is_empty() {
                f.progress = Some(std::time::Instant::now());
            }
            f.in_flight.push_back(InFlight {
                id,
                bytes: data.len() as u64,
                batch: self.batch,
                records,
            });
        }
        let written = write_line(&mut self.to, &request).and_then(|()| self.to.write_all(data));
        if let Err(e) = written {
            return Err(self.broken("sending a request", &e));
        }
        Ok(id)
    }

    /// Asks the agent to record that `position` is applied, without
    /// waiting: its answer is noted by the reader ([`Agent::acked`]).
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
            return Err(self.broken("sending requests", &e));
        }
        Ok(())
    }

    /// Waits (flushing first) until `done` holds of what is in flight and
    /// answered, or the link breaks (an error).
    fn wait_for<T>(
        &mut self,
        what: &str,
        mut done: impl FnMut(&mut Flight) -> Option<T>,
    ) -> anyhow::Result<T> {
        self.flush()?;
        let link = Arc::clone(&self.link);
        let mut f = link.lock();
        let mut since = std::time::Instant::now();
        loop {
            if let Some(t) = done(&mut f) {
                return Ok(t);
            }
            if let Some(why) = f.broken.clone() {
                drop(f);
                return Err(self.broken(what, &why));
            }
            let Some(quiet) = self.quiet else {
                f = link.changed.wait(f).unwrap_or_else(|e| e.into_inner());
                continue;
            };
            let left = quiet.saturating_sub(since.elapsed());
            let (g, waited) = link
                .changed
                .wait_timeout(f, left)
                .unwrap_or_else(|e| e.into_inner());
            f = g;
            if !waited.timed_out() {
                since = std::time::Instant::now();
            } else if since.elapsed() >= quiet {
                let why = format!("no answer for {} s (--io-timeout)", quiet.as_secs());
                f.broken = Some(why.clone());
                drop(f);
                link.changed.notify_all();
                let _ = self.child.kill();
                return Err(self.broken(what, &why));
            }
        }
    }

    /// The batch requests are sent in now.
    pub fn batch(&self) -> u64 {
        self.batch
    }

    /// The next answer to a request sent in `batch`, in the order sent;
    /// those of other batches stay for [`Agent::answers`]. `None`: none
    /// of its requests is waiting for one.
    pub fn answer_of(&mut self, batch: u64) -> anyhow::Result<Option<Ack>> {
        self.wait_for("waiting for an answer", |f| {
            if let Some(at) = f.answers.iter().position(|a| a.batch == batch) {
                return Some(f.answers.remove(at).map(|a| a.ack));
            }
            let waiting = f
                .in_flight
                .iter()
                .any(|r| r.batch == batch && r.records.is_none());
            (!waiting).then_some(None)
        })
    }

    /// Waits until an answer is there to take, or nothing is in flight.
    pub fn wait_answer(&mut self) -> anyhow::Result<()> {
        self.wait_for("waiting for an answer", |f| {
            (!f.answers.is_empty() || f.requests == 0).then_some(())
        })
    }

    /// Waits until every request sent was answered (a step that must not
    /// overtake them, such as rsync, comes next).
    pub fn wait_all(&mut self) -> anyhow::Result<()> {
        self.wait_for("waiting for answers", |f| {
            f.in_flight.is_empty().then_some(())
        })
    }

    /// Waits until another request of `bytes` fits in the window.
    pub fn wait_room(&mut self, bytes: u64) -> anyhow::Result<()> {
        self.wait_for("waiting for answers", |f| {
            let room = f.in_flight.len() < WINDOW
                && (f.in_flight.is_empty() || f.bytes + bytes <= WINDOW_BYTES);
            room.then_some(())
        })
    }

    /// The answers read so far, taken.
    pub fn answers(&mut self) -> Vec<Answer> {
        let mut f = self.link.lock();
        let stalled = self.quiet.filter(|quiet| {
            f.broken.is_none()
                && !f.in_flight.is_empty()
                && f.progress.is_some_and(|at| at.elapsed() >= *quiet)
        });
        if let Some(quiet) = stalled {
            // Batches sent on without waiting are watched here: the
            // worker asks for answers while they are in flight.
            f.broken = Some(format!(
                "no answer for {} s (--io-timeout)",
                quiet.as_secs()
            ));
            drop(f);
            self.link.changed.notify_all();
            let _ = self.child.kill();
            f = self.link.lock();
        }
        f.answers.drain(..).collect()
    }

    /// The answers read so far, and an error for every request still in
    /// flight: what a connection being dropped leaves its batches with.
    pub fn last_answers(&mut self, why: &str) -> Vec<Answer> {
        let mut f = self.link.lock();
        let mut all: Vec<Answer> = f.answers.drain(..).collect();
        all.extend(
            f.in_flight
                .iter()
                .filter(|r| r.records.is_none())
                .map(|r| Answer {
                    batch: r.batch,
                    ack: Ack {
                        id: r.id,
                        error: Some(why.to_string()),
                        bytes: 0,
                        record: None,
                    },
                }),
        );
        all
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
            Err(e) => return Ok(unreadable(&path, &e)),
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
            let to = match std::fs::read_link(&path) {
                Ok(to) => to,
                Err(e) => return Ok(unreadable(&path, &e)),
            };
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
            Err(e) => return Ok(unreadable(&path, &e)),
        };
        let mut data = Vec::with_capacity(meta.len() as usize);
        if let Err(e) = (&mut file).take(inline_max + 1).read_to_end(&mut data) {
            return Ok(unreadable(&path, &e));
        }
        if data.len() as u64 > inline_max {
            return Ok(Sent::Rsync);
        }
        let meta = match file.metadata() {
            Ok(meta) => meta,
            Err(e) => return Ok(unreadable(&path, &e)),
        };
        let request = Request::Put {
            id: 0,
            path: rel.clone(),
            size: 0,
            meta: Meta::of(&meta),
        };
        let size = data.len() as u64;
        self.send(request, &data).map(|_| Sent::Put(size))
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

/// A source path this process cannot read (a parent replaced by a file,
/// EACCES, EIO): rsync is given it and says what it makes of it. The
/// agent's connection is healthy and stays.
fn unreadable(path: &Path, e: &io::Error) -> Sent {
    crate::log_info!("reading {}: {e}; rsync sends it", path.display());
    Sent::Rsync
}

/// The connection's reader: every answer goes to the request it is due
/// for (they come in the order sent), `applied` ones are noted, the rest
/// queued for the pusher; the end of the stream or a wrong answer marks
/// the link broken. Every change wakes the waiters and the worker.
fn read_answers(mut from: BufReader<ChildStdout>, link: &Link, waker: Option<Waker>) {
    let mut line = Vec::new();
    loop {
        let read = read_line(&mut from, &mut line);
        let mut f = link.lock();
        let broken = match read {
            Ok(Some(())) => match parse::<Ack>(&line) {
                Ok(ack) => take_answer(&mut f, ack).err(),
                Err(e) => Some(format!("reading an answer: {e}")),
            },
            Ok(None) => Some("end of stream".to_string()),
            Err(e) => Some(format!("reading an answer: {e}")),
        };
        let end = broken.is_some();
        if let Some(why) = broken {
            f.broken.get_or_insert(why);
        }
        drop(f);
        link.changed.notify_all();
        if let Some(wake) = &waker {
            wake();
        }
        if end {
            return;
        }
    }
}

/// Matches `ack` with the request it is due for.
fn take_answer(f: &mut Flight, ack: Ack) -> Result<(), String> {
    f.progress = Some(std::time::Instant::now());
    let Some(sent) = f.in_flight.pop_front() else {
        return Err(format!("an answer ({}) to no request", ack.id));
    };
    f.bytes -= sent.bytes;
    if ack.id != sent.id {
        return Err(format!(
            "the agent answered {} where {} was due",
            ack.id, sent.id
        ));
    }
    let Some(position) = sent.records else {
        f.requests -= 1;
        f.answers.push_back(Answer {
            batch: sent.batch,
            ack,
        });
        return Ok(());
    };
    match (ack.error, ack.record) {
        (None, Some(record)) => f.acked = Some(Acked { record, position }),
        (error, _) if !f.record_failed => {
            // Not fatal: the next connection finds an older record (or
            // none) and a full sync is done then. Said once.
            f.record_failed = true;
            crate::log_warn!(
                "the agent could not record what was applied ({}): \
                 a reconnect will mean a full sync",
                error.as_deref().unwrap_or("no record named")
            );
        }
        _ => {}
    }
    Ok(())
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
