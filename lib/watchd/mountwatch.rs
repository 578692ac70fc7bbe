//! Noticing mounts and unmounts below the root: `/proc/self/mountinfo`
//! signals POLLPRI whenever the mount table changes.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::PathBuf;

use crate::wire::path::WirePath;

pub struct MountWatch {
    file: File,
    root: PathBuf,
    known: Vec<WirePath>,
}

/// Mount points below the root (relative to it) that came or went.
#[derive(Debug, Default)]
pub struct MountChanges {
    pub added: Vec<WirePath>,
    pub removed: Vec<WirePath>,
}

impl MountWatch {
    /// `None` (with a warning) when the mount table cannot be read: then
    /// a disk mounted below the root later is not noticed.
    pub fn open(root: &std::path::Path) -> Option<Self> {
        let opened = File::open("/proc/self/mountinfo").and_then(|file| {
            let known = below(root)?;
            Ok(MountWatch {
                file,
                root: root.to_path_buf(),
                known,
            })
        });
        match opened {
            Ok(w) => Some(w),
            Err(e) => {
                crate::log_warn!(
                    "cannot read /proc/self/mountinfo: {e}; a disk mounted below the root later is not noticed"
                );
                None
            }
        }
    }

    /// Poll this for POLLPRI.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// What changed since the last call (or `open`).
    pub fn changes(&mut self) -> MountChanges {
        let now = match below(&self.root) {
            Ok(now) => now,
            Err(e) => {
                crate::log_warn!("cannot read /proc/self/mountinfo: {e}");
                return MountChanges::default();
            }
        };
        let changes = MountChanges {
            added: now
                .iter()
                .filter(|m| !self.known.contains(m))
                .cloned()
                .collect(),
            removed: self
                .known
                .iter()
                .filter(|m| !now.contains(m))
                .cloned()
                .collect(),
        };
        self.known = now;
        changes
    }
}

/// Mount points strictly below `root`, relative to it, shallowest first.
fn below(root: &std::path::Path) -> std::io::Result<Vec<WirePath>> {
    let mut points: Vec<WirePath> = crate::os::mounts::mount_points()?
        .iter()
        .filter_map(|p| p.strip_prefix(root).ok())
        .filter(|rel| !rel.as_os_str().is_empty())
        .map(WirePath::from)
        .collect();
    points.sort_by_key(|p| p.depth());
    points.dedup();
    Ok(points)
}
