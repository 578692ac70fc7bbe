//! What the integration tests share: the built binaries, temporary trees,
//! a reader for a child's record stream, waiting on conditions rather than
//! sleeping, and a fake systemd notify socket.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use syncpipe::wire::event::Record;

pub mod container;
#[cfg(feature = "relay")]
pub mod nats;
pub mod pty;
pub mod rsyncd;
pub mod sshd;
pub mod users;

/// Generous: CI machines are slow and noisy. Tests wait on signals the
/// program gives; this only bounds how long a broken test hangs.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// Path of a binary built by this package.
pub fn bin(name: &str) -> PathBuf {
    let path = match name {
        "watchd" => env!("CARGO_BIN_EXE_watchd"),
        "pushd" => env!("CARGO_BIN_EXE_pushd"),
        "batchd" => env!("CARGO_BIN_EXE_batchd"),
        "keysetup" => env!("CARGO_BIN_EXE_keysetup"),
        "bisync" => env!("CARGO_BIN_EXE_bisync"),
        "syncpipe" => env!("CARGO_BIN_EXE_syncpipe"),
        #[cfg(feature = "relay")]
        "relayd" => env!("CARGO_BIN_EXE_relayd"),
        other => panic!("unknown binary {other}"),
    };
    PathBuf::from(path)
}

/// Polls `cond` until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// A temporary directory, removed on drop.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("syncpipe-test-")
        .tempdir()
        .expect("creating a temporary directory")
}

/// Joins a relative path given as bytes (names need not be UTF-8).
pub fn join_bytes(base: &Path, rel: &[u8]) -> PathBuf {
    base.join(OsStr::from_bytes(rel))
}

/// Reads a child's stdout on a thread and hands over parsed records, so a
/// test can wait for "the record that says X" with a timeout.
pub struct RecordStream {
    rx: mpsc::Receiver<Result<Record, String>>,
    pub seen: Vec<Record>,
}

impl RecordStream {
    pub fn new(stdout: ChildStdout) -> Self {
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = Vec::new();
            loop {
                line.clear();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        if line.last() == Some(&b'\n') {
                            line.pop();
                        }
                        let parsed = Record::parse(&line)
                            .map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&line)));
                        if tx.send(parsed).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        RecordStream {
            rx,
            seen: Vec::new(),
        }
    }

    /// The next record, or `None` at end of stream or after `timeout`.
    /// A line that does not parse fails the test: the producer broke the contract.
    pub fn next(&mut self, timeout: Duration) -> Option<Record> {
        match self.rx.recv_timeout(timeout) {
            Ok(Ok(record)) => {
                self.seen.push(record.clone());
                Some(record)
            }
            Ok(Err(e)) => panic!("producer wrote a malformed line: {e}"),
            Err(_) => None,
        }
    }

    /// Reads until `pred` matches a record; returns it. Panics with what was
    /// seen when it does not come within `TIMEOUT`.
    pub fn wait_for(&mut self, what: &str, mut pred: impl FnMut(&Record) -> bool) -> Record {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left) {
                Some(r) if pred(&r) => return r,
                Some(_) => continue,
                None => panic!(
                    "timed out waiting for {what}; seen:\n{}",
                    self.seen
                        .iter()
                        .map(Record::to_line)
                        .collect::<Vec<_>>()
                        .join("\n")
                ),
            }
        }
    }

    /// Everything that arrives until the stream is quiet for `quiet`.
    pub fn drain(&mut self, quiet: Duration) -> Vec<Record> {
        let mut out = Vec::new();
        while let Some(r) = self.next(quiet) {
            out.push(r);
        }
        out
    }
}

/// A child process killed (and reaped) on drop, so a failing test leaves
/// nothing running.
pub struct Running {
    pub child: Child,
}

impl Running {
    pub fn spawn(cmd: &mut Command) -> Self {
        let child = cmd
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
        Running { child }
    }

    pub fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.child.id() as i32)
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(self.pid(), sig).expect("sending a signal");
    }

    /// Waits for exit within `TIMEOUT`; returns the exit code (None if killed by a signal).
    pub fn wait_exit(&mut self) -> Option<i32> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("waiting for child") {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "child did not exit within {TIMEOUT:?}"
            );
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A stand-in for systemd's notify socket: a datagram socket at a path in a
/// temporary directory. Pass `path()` as `NOTIFY_SOCKET`. A thread reads it
/// all the time, as systemd does: the kernel queues only
/// `net.unix.max_dgram_qlen` datagrams (10 here), and a sender whose
/// datagrams nobody reads blocks (sd_notify is a blocking send), so a test
/// that stopped reading after `READY=1` would stall the program it watches.
pub struct NotifySocket {
    _dir: tempfile::TempDir,
    path: PathBuf,
    received: mpsc::Receiver<String>,
    stop: Arc<AtomicBool>,
}

impl NotifySocket {
    pub fn new() -> Self {
        let dir = tempdir();
        let path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&path).expect("binding notify socket");
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let (tx, received) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            while !stopped.load(Ordering::Relaxed) {
                if let Ok(n) = sock.recv(&mut buf) {
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    if tx.send(text).is_err() {
                        return;
                    }
                }
            }
        });
        NotifySocket {
            _dir: dir,
            path,
            received,
            stop,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The next datagram's text, or `None` after `timeout`.
    pub fn recv(&self, timeout: Duration) -> Option<String> {
        self.received.recv_timeout(timeout).ok()
    }

    /// Waits for a datagram containing `needle` (e.g. `READY=1`); returns it.
    pub fn wait_for(&self, needle: &str) -> String {
        let deadline = Instant::now() + TIMEOUT;
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            if let Some(msg) = self.recv(Duration::from_millis(200)) {
                if msg.contains(needle) {
                    return msg;
                }
                seen.push(msg);
            }
        }
        panic!("no {needle:?} from the notify socket; got {seen:?}");
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// What a tree holds: per relative path, a file's content, a link's
/// target or a directory, with the mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    File(Vec<u8>, u32),
    Link(Vec<u8>),
    Dir(u32),
}

/// Every entry below `root` (nothing when it is missing): the one tree
/// snapshot of the suite, which pushd's and bisync's tests view as they
/// need. Entries that vanish while it reads (rsync at work on a target) are
/// left out: the tree then differs from the source, and the caller looks
/// again.
pub fn tree(root: &Path) -> BTreeMap<Vec<u8>, Node> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<Vec<u8>, Node>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries {
            let Ok(entry) = entry else { continue };
            let path = entry.path();
            let rel = path
                .strip_prefix(base)
                .unwrap()
                .as_os_str()
                .as_bytes()
                .to_vec();
            let Ok(meta) = fs::symlink_metadata(&path) else {
                continue;
            };
            let mode = meta.permissions().mode() & 0o7777;
            if meta.file_type().is_symlink() {
                if let Ok(t) = fs::read_link(&path) {
                    out.insert(rel, Node::Link(t.as_os_str().as_bytes().to_vec()));
                }
            } else if meta.is_dir() {
                out.insert(rel, Node::Dir(mode));
                walk(base, &path, out);
            } else if let Ok(content) = fs::read(&path) {
                out.insert(rel, Node::File(content, mode));
            }
        }
    }
    let mut out = BTreeMap::new();
    if root.exists() {
        walk(root, root, &mut out);
    }
    out
}
