//! Which kernel interface watches the tree: inotify (a watch per directory)
//! or fanotify (one mark per file system), behind one small enum the I/O
//! loop drives the same way.

use std::os::fd::{AsFd, BorrowedFd};
use std::path::PathBuf;

use super::fanotify::{self, Unavailable};
use super::mountwatch::MountChanges;
use super::watcher::{EventMode, Outcome, Seen, Watcher};
use crate::cli::exit::{coded, Code};
use crate::exclude::Excludes;

/// `--backend`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendChoice {
    /// fanotify when this process, kernel and file system allow it, else inotify.
    Auto,
    /// A watch on every directory (any user, any file system).
    Inotify,
    /// One mark per file system (root, Linux 5.17+, file systems with file handles).
    Fanotify,
}

pub enum Backend {
    Inotify(Watcher),
    Fanotify(fanotify::Watcher),
}

impl Backend {
    pub fn start(
        choice: BackendChoice,
        root: PathBuf,
        mode: EventMode,
        excludes: Excludes,
        progress: &mut dyn FnMut(usize),
    ) -> anyhow::Result<Self> {
        let inotify = |progress: &mut dyn FnMut(usize)| {
            Watcher::start(root.clone(), mode, excludes.clone(), progress).map(Backend::Inotify)
        };
        match choice {
            BackendChoice::Inotify => inotify(progress),
            BackendChoice::Fanotify => {
                match fanotify::Watcher::start(root.clone(), mode, excludes.clone()) {
                    Ok(w) => Ok(Backend::Fanotify(w)),
                    Err(e) if e.downcast_ref::<Unavailable>().is_some() => Err(coded(
                        Code::Usage,
                        format!("--backend fanotify: {e:#}; use --backend inotify or auto"),
                    )),
                    Err(e) => Err(e),
                }
            }
            BackendChoice::Auto => {
                match fanotify::Watcher::start(root.clone(), mode, excludes.clone()) {
                    Ok(w) => {
                        crate::log_notice!("using fanotify (one mark per file system)");
                        Ok(Backend::Fanotify(w))
                    }
                    Err(e) => {
                        crate::log_notice!("using inotify: fanotify is not usable here: {e:#}");
                        inotify(progress)
                    }
                }
            }
        }
    }

    /// `inotify` or `fanotify`, as in the header's `backend` field.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Inotify(_) => "inotify",
            Backend::Fanotify(_) => "fanotify",
        }
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Backend::Inotify(w) => w.inotify().as_fd(),
            Backend::Fanotify(w) => w.fd().as_fd(),
        }
    }

    /// Directories watched (inotify) or known by handle (fanotify).
    pub fn watched(&self) -> usize {
        match self {
            Backend::Inotify(w) => w.watched(),
            Backend::Fanotify(w) => w.known(),
        }
    }

    pub fn take_seen(&mut self) -> Vec<Seen> {
        match self {
            Backend::Inotify(w) => w.take_seen(),
            Backend::Fanotify(w) => w.take_seen(),
        }
    }

    pub fn read_and_handle(
        &mut self,
        buf_a: &mut [u8],
        buf_b: &mut [u8],
    ) -> anyhow::Result<Outcome> {
        match self {
            Backend::Inotify(w) => super::read_inotify(w, buf_a, buf_b),
            Backend::Fanotify(w) => w.read_and_handle(buf_a),
        }
    }

    /// After an overflow or SIGHUP: start afresh (the caller reports the rescan).
    pub fn rebuild(&mut self, progress: &mut dyn FnMut(usize)) -> anyhow::Result<()> {
        match self {
            Backend::Inotify(w) => w.rebuild(progress),
            Backend::Fanotify(w) => {
                w.rebuild();
                Ok(())
            }
        }
    }

    /// The mount table changed: a file system mounted below the root is
    /// watched and reported as a `rescan` of its mount point. (inotify sees
    /// unmounts itself, as IN_UNMOUNT; fanotify learns them here.)
    pub fn mounts_changed(&mut self, changes: MountChanges) -> anyhow::Result<Outcome> {
        match self {
            Backend::Inotify(w) => {
                for rel in changes.added {
                    w.mounted(rel)?;
                }
                Ok(Outcome::Continue)
            }
            Backend::Fanotify(w) => {
                for rel in changes.removed {
                    w.rescan(rel);
                }
                for rel in changes.added {
                    w.mounted(rel);
                }
                if !w.root_is_same() {
                    return Ok(Outcome::RootGone("root-unmounted"));
                }
                Ok(Outcome::Continue)
            }
        }
    }
}
