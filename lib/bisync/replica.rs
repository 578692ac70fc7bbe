//! What the executor asks of a replica, local or over ssh: scan it, hash
//! files, make one change that first checks the path is still as scanned,
//! and stream a file's data out of or into it.

use std::io::Write;

use serde::{Deserialize, Serialize};

use super::entry::{Entry, Hash};
use super::planner::Scan;
use crate::wire::path::WirePath;

/// A change to one replica that is not a file copy. Each names the state
/// it expects; the replica checks it right before acting.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Change {
    /// Rename a file or symlink; `to` must not exist.
    Rename {
        path: WirePath,
        to: WirePath,
        expect: Entry,
    },
    /// Delete a file or symlink.
    Remove { path: WirePath, expect: Entry },
    /// Delete an empty directory.
    Rmdir { path: WirePath, expect: Entry },
    /// Create a directory with `entry`'s mode (and owner when root); the
    /// path must be free.
    Mkdir { path: WirePath, entry: Entry },
    /// Set mode, file mtime and (when root) owner from `src`.
    SetMeta {
        path: WirePath,
        src: Entry,
        expect: Entry,
    },
}

/// The end of one change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Applied {
    /// Done; the entry now at the path (none after a removal; for a rename,
    /// the entry at `to`).
    Done(Option<Entry>),
    /// Not done: the path is not as the scan saw it (or the source changed
    /// while it was read). The next run picks it up.
    Skipped(String),
}

/// Writes a file's data into the sink; `Ok(false)` when the source changed
/// while it was read, and the write must be dropped.
pub type Fill<'a> = dyn FnMut(&mut dyn Write) -> anyhow::Result<bool> + 'a;

/// Who a replica is, the same for every kind of replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Who {
    /// The replica as the user wrote it.
    pub name: String,
    /// The host the replica is on, for conflict copies' names.
    pub host: String,
    /// Whether changes there run as root (owners can be kept).
    pub root_user: bool,
}

pub trait Replica {
    /// Who the replica is (the accessors below read it).
    fn who(&self) -> &Who;
    /// The replica as the user wrote it.
    fn name(&self) -> &str {
        &self.who().name
    }
    /// The host the replica is on, for conflict copies' names.
    fn host(&self) -> &str {
        &self.who().host
    }
    /// Whether changes there run as root (owners can be kept).
    fn is_root(&self) -> bool {
        self.who().root_user
    }
    /// Copy owner and group from now on (both replicas run as root).
    fn set_owners(&mut self, owners: bool) -> anyhow::Result<()>;
    /// Keep what this run replaces or deletes there (`--backup-dir-a/-b`);
    /// old run folders past the retention are removed now.
    fn set_backup(&mut self, backup: Option<super::backup::Backup>) -> anyhow::Result<()>;
    /// Every entry below the root, excluded paths left out. An error when
    /// the root is missing or unreadable (exit code 3).
    fn scan(&mut self, checksum: bool) -> anyhow::Result<Scan>;
    /// The entries at and below each of `paths` as they are now (what
    /// [`scan`](Replica::scan) would report there), for re-reading only what
    /// changed; `.` among them means everything.
    fn scan_paths(&mut self, paths: &[WirePath], checksum: bool) -> anyhow::Result<Scan>;
    /// Content hashes of files; `None` where the path is not a file now.
    fn hash(&mut self, paths: &[WirePath]) -> anyhow::Result<Vec<Option<Hash>>>;
    fn change(&mut self, change: &Change) -> anyhow::Result<Applied>;
    /// Streams exactly `expect.size` bytes of the file at `path` (nothing
    /// for a symlink) into `out`; `Ok(false)` when it is no longer as
    /// expected (the bytes written are then padding).
    fn read(
        &mut self,
        path: &WirePath,
        expect: &Entry,
        out: &mut dyn Write,
    ) -> anyhow::Result<bool>;
    /// Creates `src` (a file or symlink) at `path` atomically, replacing
    /// `expect` (`None`: the path must be free), with data from `fill`.
    fn write(
        &mut self,
        path: &WirePath,
        src: &Entry,
        expect: Option<&Entry>,
        fill: &mut Fill<'_>,
    ) -> anyhow::Result<Applied>;
}

/// A failure of the link to a replica, not of one path: the run stops.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Transport(pub String);
