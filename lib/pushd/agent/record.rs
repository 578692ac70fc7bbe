//! The agent's record of what was last applied beneath its directory
//! (protocol version 2): the stream id and seq pushd said were applied,
//! kept outside the target (the target stays equal to the source, no marker
//! in it) under `$XDG_STATE_HOME/syncpipe/agent/` (else
//! `~/.local/state/…`), one file per directory, tied to the directory's
//! identity so a directory removed and made again has no record. An agent
//! holds the record's lock for its whole life: one agent per directory at a
//! time, so an agent left over from a dead connection can neither write
//! after its successor nor race it.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use super::proto::Recorded;
use crate::os::beneath::Root;
use crate::pushd::apply::RootId;
use crate::wire::path::WirePath;

/// How long a new agent waits for the one before it (on a connection that
/// died) to end before refusing.
pub(crate) const LOCK_WAIT: Duration = if cfg!(test) {
    Duration::from_millis(300)
} else {
    Duration::from_secs(10)
};

/// Why there are no records.
#[derive(Debug, thiserror::Error)]
pub enum Unusable {
    /// Another agent serves the directory now.
    #[error("{0}")]
    Busy(String),
    /// The state directory cannot be used: served without records.
    #[error("{0}")]
    NoState(String),
}

/// The file as written.
#[derive(Debug, Serialize, Deserialize)]
struct OnDisk {
    root: WirePath,
    /// [`RootId`] of the directory when the record was made, as text.
    id: String,
    #[serde(flatten)]
    recorded: Recorded,
}

/// The records of one directory, locked for this agent.
pub struct Records {
    file: PathBuf,
    root: WirePath,
    id: String,
    /// The file system keeps the directory's birth time. Without it a
    /// directory removed and made again (ext4 and tmpfs hand its inode
    /// number out again at once) looks like the one recorded, so no
    /// record is trusted: every reconnect is a full sync.
    born: bool,
    /// The record id, once known (read, or made by the first write).
    record: Option<String>,
    /// What the file said when the agent started (read once: the lock
    /// keeps every other writer out), then what this agent wrote.
    last: Option<Recorded>,
    _lock: Flock<File>,
}

/// Where records are kept: `$XDG_STATE_HOME` when absolute, else `$HOME/.local/state`.
pub fn state_dir() -> Option<PathBuf> {
    let xdg = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute());
    let base = xdg.or_else(|| {
        let home = PathBuf::from(std::env::var_os("HOME")?);
        Some(home.join(".local/state")).filter(|p| p.is_absolute())
    })?;
    Some(base.join("syncpipe/agent"))
}

impl Records {
    /// The records of `root` (opened at `path`) kept in `dir`
    /// ([`state_dir`]), locked, waiting for an agent still serving it to end.
    pub fn open(dir: Option<&Path>, path: &Path, root: &Root) -> Result<Records, Unusable> {
        let dir = dir.ok_or_else(|| {
            Unusable::NoState("neither XDG_STATE_HOME nor HOME is set".to_string())
        })?;
        let no_state = |e: io::Error| Unusable::NoState(format!("{}: {e}", dir.display()));
        std::fs::create_dir_all(dir).map_err(no_state)?;
        let canonical = std::fs::canonicalize(path).map_err(no_state)?;
        let bytes = canonical.as_os_str().as_encoded_bytes();
        let key = blake3::hash(bytes).to_hex();
        let key = &key.as_str()[..32];
        let meta = File::from(root.fd().try_clone().map_err(no_state)?)
            .metadata()
            .map_err(no_state)?;
        let lock_path = dir.join(format!("{key}.lock"));
        let mut file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(no_state)?;
        let started = Instant::now();
        let lock = loop {
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => break lock,
                Err((f, nix::errno::Errno::EWOULDBLOCK)) if started.elapsed() < LOCK_WAIT => {
                    file = f;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err((_, e)) => {
                    return Err(Unusable::Busy(format!(
                        "another agent serves {} ({}: {e})",
                        canonical.display(),
                        lock_path.display()
                    )))
                }
            }
        };
        let root_id = RootId::of(&meta);
        let mut records = Records {
            file: dir.join(format!("{key}.json")),
            root: WirePath::from_bytes(bytes.to_vec()),
            id: root_id.to_string(),
            born: root_id.born.is_some(),
            record: None,
            last: None,
            _lock: lock,
        };
        records.last = records.read();
        records.record = records.last.as_ref().map(|r| r.record.clone());
        Ok(records)
    }

    /// What was last recorded for this directory as it is now (the hello's
    /// `applied`).
    pub fn last(&self) -> Option<&Recorded> {
        self.last.as_ref()
    }

    /// The file's record, when it is of this directory as it is now.
    fn read(&self) -> Option<Recorded> {
        if !self.born {
            return None;
        }
        let bytes = std::fs::read(&self.file).ok()?;
        let file: OnDisk = serde_json::from_slice(&bytes).ok()?;
        (file.id == self.id && file.root == self.root).then_some(file.recorded)
    }

    /// Records that `stream` is applied up to `seq`: a temporary file
    /// renamed over the record (as durable as the data it describes, which
    /// the agent does not fsync either). Returns the record id.
    pub fn write(&mut self, stream: String, seq: u64) -> io::Result<String> {
        let record = match &self.record {
            Some(r) => r.clone(),
            None => crate::wire::event::new_stream_id()?,
        };
        let recorded = Recorded {
            record: record.clone(),
            stream,
            seq,
        };
        let file = OnDisk {
            root: self.root.clone(),
            id: self.id.clone(),
            recorded,
        };
        let mut bytes = serde_json::to_vec(&file).map_err(io::Error::other)?;
        bytes.push(b'\n');
        let tmp = self.file.with_extension("json.tmp");
        std::fs::write(&tmp, &bytes)?;
        std::fs::rename(&tmp, &self.file)?;
        self.record = Some(record.clone());
        self.last = self.born.then_some(file.recorded);
        Ok(record)
    }
}
