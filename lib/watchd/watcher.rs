//! Recursive inotify: from raw kernel events to the stream's changes.
//!
//! inotify watches one directory at a time and knows nothing of paths. This
//! module keeps a watch on every directory under the root, adds one (and
//! lists the new directory, so nothing created before the watch existed is
//! missed) whenever a directory appears, pairs rename halves by cookie, and
//! turns what the kernel says into `create`/`modify`/`delete`/`move`/
//! `attrib`/`rescan` records on paths relative to the root.

use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use anyhow::Context;
use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};

use super::limits;
use super::tree::{NodeId, WatchTree};
use crate::cli::exit::{coded, Code};
use crate::exclude::Excludes;
use crate::wire::event::EventKind;
use crate::wire::path::WirePath;

/// Which content changes to report (lsyncd's `inotifyMode`). Creates,
/// deletes, moves and attribute changes are always reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum EventMode {
    /// A file is reported once, when its writer closes it (the default: a
    /// consumer never copies a half-written file because of our event).
    #[value(name = "close_write")]
    CloseWrite,
    /// Every write(2), as it happens (noisy, but sees files held open).
    Modify,
    /// Both.
    All,
}

impl EventMode {
    fn mask(self) -> WatchMask {
        let base = WatchMask::CREATE
            | WatchMask::DELETE
            | WatchMask::MOVED_FROM
            | WatchMask::MOVED_TO
            | WatchMask::ATTRIB
            | WatchMask::DELETE_SELF
            | WatchMask::MOVE_SELF
            | WatchMask::ONLYDIR
            | WatchMask::DONT_FOLLOW
            | WatchMask::EXCL_UNLINK;
        match self {
            EventMode::CloseWrite => base | WatchMask::CLOSE_WRITE,
            EventMode::Modify => base | WatchMask::MODIFY,
            EventMode::All => base | WatchMask::CLOSE_WRITE | WatchMask::MODIFY,
        }
    }
}

/// One kernel event, its name borrowed from the read buffer.
#[derive(Clone, Copy, Debug)]
pub struct RawEvent<'a> {
    pub wd: i32,
    pub mask: EventMask,
    pub cookie: u32,
    pub name: Option<&'a [u8]>,
}

impl<'a> RawEvent<'a> {
    pub fn from_inotify(ev: &inotify::Event<&'a std::ffi::OsStr>) -> Self {
        RawEvent {
            wd: ev.wd.get_watch_descriptor_id(),
            mask: ev.mask,
            cookie: ev.cookie,
            name: ev.name.map(|n| n.as_bytes()),
        }
    }

    fn is_move_from(&self) -> bool {
        self.mask.contains(EventMask::MOVED_FROM)
    }

    fn is_move_to(&self) -> bool {
        self.mask.contains(EventMask::MOVED_TO)
    }
}

/// A change to write, before it gets its `seq` and `ts`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub kind: EventKind,
    pub path: WirePath,
    pub dir: bool,
    pub from: Option<WirePath>,
}

/// What the caller must do after a batch of kernel events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Continue,
    /// The kernel dropped events: rebuild every watch, then report a rescan.
    Overflow,
    /// The root itself is gone; the reason is the `end` record's.
    RootGone(&'static str),
}

/// Why adding a watch failed in a way the caller must act on.
enum AddError {
    /// `max_user_watches` reached.
    Limit,
    Other(anyhow::Error),
}

pub struct Watcher {
    root: PathBuf,
    inotify: Inotify,
    tree: WatchTree<WatchDescriptor>,
    mode: EventMode,
    excludes: Excludes,
    max_watches: Option<u64>,
    /// Changes found since the caller last took them.
    out: Vec<Seen>,
    /// Mount points below the root, from the mount table, at watch set-up.
    /// IN_UNMOUNT reaches every watch on a vanished file system, in as many
    /// reads as it takes; the nearest mount point above a watch says whose
    /// file system it was: the root's ends the stream, a submount's is one
    /// rescan of its mount point.
    mounts: Vec<WirePath>,
    /// Submounts already reported gone (their late IN_UNMOUNTs are ignored).
    gone_mounts: Vec<WirePath>,
    /// Gone submounts whose covered directory still needs a watch.
    to_rewatch: Vec<WirePath>,
}

impl Watcher {
    /// Watches every directory under `root` (absolute, an existing directory).
    /// `progress` is called now and then with the number watched so far, so a
    /// long set-up can tell systemd it is still alive.
    pub fn start(
        root: PathBuf,
        mode: EventMode,
        excludes: Excludes,
        progress: &mut dyn FnMut(usize),
    ) -> anyhow::Result<Self> {
        let mut watcher = Watcher {
            inotify: new_inotify()?,
            tree: WatchTree::new(),
            mode,
            excludes,
            max_watches: limits::WatchLimit::read().value,
            out: Vec::new(),
            mounts: Vec::new(),
            gone_mounts: Vec::new(),
            to_rewatch: Vec::new(),
            root,
        };
        watcher.watch_everything(progress)?;
        Ok(watcher)
    }

    pub fn inotify(&self) -> &Inotify {
        &self.inotify
    }

    pub fn inotify_mut(&mut self) -> &mut Inotify {
        &mut self.inotify
    }

    /// Number of directories watched.
    pub fn watched(&self) -> usize {
        self.tree.len()
    }

    /// Takes the changes found so far.
    pub fn take_seen(&mut self) -> Vec<Seen> {
        std::mem::take(&mut self.out)
    }

    /// Drops every watch and builds them anew (after an overflow: the old
    /// queue is worthless, and a fresh instance also drops stale watches).
    pub fn rebuild(&mut self, progress: &mut dyn FnMut(usize)) -> anyhow::Result<()> {
        self.tree.clear();
        self.inotify = new_inotify()?;
        self.out.clear();
        self.watch_everything(progress)
    }

    fn watch_everything(&mut self, progress: &mut dyn FnMut(usize)) -> anyhow::Result<()> {
        let handle = self
            .inotify
            .watches()
            .add(&self.root, self.mode.mask())
            .map_err(|e| match e.raw_os_error() {
                Some(nix::libc::ENOSPC) => self.limit_error(),
                _ => anyhow::Error::new(e).context(format!("cannot watch {}", self.root.display())),
            })?;
        let wd = handle.get_watch_descriptor_id();
        let root = self.tree.insert_root(handle, wd);
        self.watch_below(root, false, progress)?;
        self.mounts = self.submounts();
        self.gone_mounts.clear();
        Ok(())
    }

    /// Mount points strictly below the root, relative to it.
    fn submounts(&self) -> Vec<WirePath> {
        match crate::os::mounts::mount_points() {
            Ok(points) => points
                .iter()
                .filter_map(|p| p.strip_prefix(&self.root).ok())
                .filter(|rel| !rel.as_os_str().is_empty())
                .map(WirePath::from)
                .collect(),
            Err(e) => {
                crate::log_warn!("cannot read /proc/self/mountinfo: {e}; an unmount below the root will look like the root's");
                Vec::new()
            }
        }
    }

    /// Watches every directory below `start` (already watched), listing each
    /// right after its watch exists. With `report`, every entry found is
    /// reported as created (a directory that appeared or moved in).
    fn watch_below(
        &mut self,
        start: NodeId,
        report: bool,
        progress: &mut dyn FnMut(usize),
    ) -> anyhow::Result<()> {
        // Each directory to list travels with its path, so no path is
        // rebuilt from the tree; in a silent walk without excludes a file
        // costs nothing beyond its directory entry.
        let mut stack = vec![(start, self.tree.path(start))];
        let mut since_progress = 0usize;
        let files_matter = report || !self.excludes.is_empty();
        while let Some((dir, dir_rel)) = stack.pop() {
            let dir_abs = self.absolute(&dir_rel);
            let entries = match std::fs::read_dir(&dir_abs) {
                Ok(entries) => entries,
                Err(e) if is_gone(&e) => continue,
                Err(e) => {
                    crate::log_warn!(
                        "cannot list {}: {e}; changes below it are not seen until it is readable and a rescan runs",
                        dir_abs.display()
                    );
                    continue;
                }
            };
            for entry in entries {
                let entry = match entry {
                    Ok(entry) => entry,
                    Err(e) if is_gone(&e) => break,
                    Err(e) => {
                        return Err(e).with_context(|| format!("listing {}", dir_abs.display()))
                    }
                };
                let is_dir = match entry.file_type() {
                    Ok(t) => t.is_dir(),
                    Err(e) if is_gone(&e) => continue,
                    Err(e) => {
                        return Err(e)
                            .with_context(|| format!("inspecting {}", entry.path().display()))
                    }
                };
                if !is_dir && !files_matter {
                    continue;
                }
                let name = entry.file_name();
                let rel = dir_rel.join(name.as_bytes());
                if self.excludes.is_excluded(rel.as_path(), is_dir) {
                    continue;
                }
                if report {
                    self.out.push(Seen {
                        kind: EventKind::Create,
                        path: rel.clone(),
                        dir: is_dir,
                        from: None,
                    });
                }
                if is_dir {
                    match self.add_watch(dir, name.as_bytes(), &rel) {
                        Ok(Some(child)) => stack.push((child, rel)),
                        Ok(None) => {}
                        Err(AddError::Limit) => {
                            return Err(self.limit_error());
                        }
                        Err(AddError::Other(e)) => return Err(e),
                    }
                    since_progress += 1;
                    if since_progress >= 4096 {
                        since_progress = 0;
                        progress(self.tree.len());
                    }
                }
            }
        }
        Ok(())
    }

    /// Walks the directories below `start` (already watched) and watches
    /// those that are not, reporting each such directory and everything in
    /// it as created. Directories already watched are walked, not reported:
    /// their own watches reported what they hold.
    fn watch_unwatched_below(&mut self, start: NodeId) -> anyhow::Result<()> {
        let mut stack = vec![(start, self.tree.path(start))];
        while let Some((dir, dir_rel)) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(self.absolute(&dir_rel)) else {
                continue; // gone or unreadable: watch_below says why when it matters
            };
            for entry in entries.flatten() {
                if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                let name = entry.file_name();
                let rel = dir_rel.join(name.as_bytes());
                if self.excludes.is_excluded(rel.as_path(), true) {
                    continue;
                }
                if let Some(child) = self.tree.child(dir, name.as_bytes()) {
                    stack.push((child, rel));
                    continue;
                }
                self.push(EventKind::Create, rel.clone(), true, None);
                match self.add_watch(dir, name.as_bytes(), &rel) {
                    Ok(Some(child)) => self.watch_below(child, true, &mut |_| {})?,
                    Ok(None) => {}
                    Err(AddError::Limit) => return Err(self.limit_error()),
                    Err(AddError::Other(e)) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// Watches `parent/name`. `Ok(None)`: it is gone or not a directory
    /// any more (its removal will be reported by its parent's watch).
    fn add_watch(
        &mut self,
        parent: NodeId,
        name: &[u8],
        rel: &WirePath,
    ) -> Result<Option<NodeId>, AddError> {
        if self
            .max_watches
            .is_some_and(|max| self.tree.len() as u64 >= max)
        {
            return Err(AddError::Limit);
        }
        let abs = self.absolute(rel);
        match self.inotify.watches().add(&abs, self.mode.mask()) {
            Ok(handle) => {
                let wd = handle.get_watch_descriptor_id();
                Ok(Some(self.tree.insert(parent, name, handle, wd)))
            }
            Err(e) if is_gone(&e) => Ok(None),
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOSPC) => Err(AddError::Limit),
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                crate::log_warn!(
                    "cannot watch {}: {e}; changes below it are not seen",
                    abs.display()
                );
                Ok(None)
            }
            Err(e) => Err(AddError::Other(
                anyhow::Error::new(e).context(format!("cannot watch {}", abs.display())),
            )),
        }
    }

    fn absolute(&self, rel: &WirePath) -> PathBuf {
        if rel.is_root() {
            self.root.clone()
        } else {
            self.root.join(rel.as_path())
        }
    }

    /// The "limit too small" error, naming the setting, its value and how
    /// many directories the tree needs (counted afresh, without watching).
    fn limit_error(&self) -> anyhow::Error {
        let needed = limits::count_dirs(&self.root, &self.excludes, &self.root);
        let limit = limits::WatchLimit::read();
        let suggest = (needed as u64 * 2).max(524_288);
        coded(
            Code::Limit,
            format!(
                "cannot watch {}: it has at least {needed} directories to watch, but {} \
                 (shared by all inotify users of this account). Raise it: `sysctl {}={suggest}` \
                 and the same line in /etc/sysctl.d/90-syncpipe.conf to keep it, \
                 or --exclude directories that need no watching",
                self.root.display(),
                limit.describe(),
                limit.setting,
            ),
        )
    }

    /// Handles one batch of kernel events, in order.
    pub fn handle(&mut self, events: &[RawEvent]) -> anyhow::Result<Outcome> {
        let mut paired: Vec<u32> = Vec::new();
        for (i, ev) in events.iter().enumerate() {
            if ev.mask.contains(EventMask::Q_OVERFLOW) {
                return Ok(Outcome::Overflow);
            }
            let Some(node) = self.tree.lookup(ev.wd) else {
                continue; // a watch we already dropped
            };
            let Some(name) = ev.name else {
                if let Some(outcome) = self.handle_self_event(node, ev) {
                    return Ok(outcome);
                }
                continue;
            };
            let is_dir = ev.mask.contains(EventMask::ISDIR);
            let rel = self.tree.path(node).join(name);
            if ev.is_move_from() {
                let partner = events[i + 1..]
                    .iter()
                    .find(|to| to.is_move_to() && to.cookie == ev.cookie);
                match partner.and_then(|to| Some((to, self.tree.lookup(to.wd)?, to.name?))) {
                    Some((_, to_node, to_name)) => {
                        paired.push(ev.cookie);
                        self.handle_move(node, name, to_node, to_name, is_dir)?;
                    }
                    None => self.moved_out(node, name, rel, is_dir),
                }
                continue;
            }
            if ev.is_move_to() && paired.contains(&ev.cookie) {
                continue;
            }
            if self.excludes.is_excluded(rel.as_path(), is_dir) {
                continue;
            }
            if ev.mask.intersects(EventMask::CREATE | EventMask::MOVED_TO) {
                self.appeared(node, name, rel, is_dir)?;
            } else if ev.mask.contains(EventMask::DELETE) {
                if is_dir {
                    if let Some(child) = self.tree.child(node, name) {
                        self.tree.remove_subtree(child);
                    }
                }
                self.push(EventKind::Delete, rel, is_dir, None);
            } else if ev
                .mask
                .intersects(EventMask::CLOSE_WRITE | EventMask::MODIFY)
            {
                self.push(EventKind::Modify, rel, is_dir, None);
            } else if ev.mask.contains(EventMask::ATTRIB) {
                self.push(EventKind::Attrib, rel, is_dir, None);
            }
        }
        self.rewatch_unmounted()?;
        Ok(Outcome::Continue)
    }

    /// A file system was mounted at `rel` after start: watch its tree and
    /// report a rescan of the mount point (what it holds was never seen).
    pub fn mounted(&mut self, rel: WirePath) -> anyhow::Result<()> {
        let (Some(parent_path), Some(name)) =
            (rel.parent(), rel.as_bytes().rsplit(|&b| b == b'/').next())
        else {
            return Ok(());
        };
        let Some(parent) = self.tree.find(&parent_path) else {
            return Ok(()); // below an excluded or unwatched directory
        };
        if self.excludes.is_excluded(rel.as_path(), true) {
            return Ok(());
        }
        self.gone_mounts.retain(|m| *m != rel);
        if !self.mounts.contains(&rel) {
            self.mounts.push(rel.clone());
        }
        match self.add_watch(parent, name, &rel) {
            Ok(Some(child)) => self.watch_below(child, false, &mut |_| {})?,
            Ok(None) => {}
            Err(AddError::Limit) => return Err(self.limit_error()),
            Err(AddError::Other(e)) => return Err(e),
        }
        self.push(EventKind::Rescan, rel, true, None);
        Ok(())
    }

    /// Watches what a vanished mount had covered (the rescan already
    /// written tells consumers to re-read it).
    fn rewatch_unmounted(&mut self) -> anyhow::Result<()> {
        for path in std::mem::take(&mut self.to_rewatch) {
            let (Some(parent_path), Some(name)) =
                (path.parent(), path.as_bytes().rsplit(|&b| b == b'/').next())
            else {
                continue;
            };
            let Some(parent) = self.tree.find(&parent_path) else {
                continue;
            };
            match self.add_watch(parent, name, &path) {
                Ok(Some(child)) => self.watch_below(child, false, &mut |_| {})?,
                Ok(None) => {}
                Err(AddError::Limit) => return Err(self.limit_error()),
                Err(AddError::Other(e)) => return Err(e),
            }
        }
        Ok(())
    }

    /// Events about a watched directory itself (no name).
    fn handle_self_event(&mut self, node: NodeId, ev: &RawEvent) -> Option<Outcome> {
        if ev.mask.contains(EventMask::UNMOUNT) {
            let path = self.tree.path(node);
            let mount = self
                .mounts
                .iter()
                .chain(&self.gone_mounts)
                .filter(|m| path.starts_with(m))
                .max_by_key(|m| m.depth())
                .cloned();
            match mount {
                None => return Some(Outcome::RootGone("root-unmounted")),
                Some(m) if self.gone_mounts.contains(&m) => {}
                Some(m) => {
                    // What is there now is whatever the mount covered.
                    self.mounts.retain(|x| *x != m);
                    self.gone_mounts.push(m.clone());
                    self.to_rewatch.push(m.clone());
                    self.push(EventKind::Rescan, m, true, None);
                }
            }
        }
        if self.tree.is_root(node) {
            if ev
                .mask
                .intersects(EventMask::DELETE_SELF | EventMask::IGNORED)
            {
                return Some(Outcome::RootGone("root-deleted"));
            }
            if ev.mask.contains(EventMask::MOVE_SELF) {
                return Some(Outcome::RootGone("root-moved"));
            }
            if ev.mask.contains(EventMask::ATTRIB) {
                self.push(EventKind::Attrib, WirePath::root(), true, None);
            }
        } else if ev.mask.contains(EventMask::IGNORED) {
            self.tree.remove_subtree(node);
        }
        None
    }

    /// `parent/name` was created or moved in from outside: report it, and
    /// if it is a directory watch it and report everything already in it.
    fn appeared(
        &mut self,
        parent: NodeId,
        name: &[u8],
        rel: WirePath,
        is_dir: bool,
    ) -> anyhow::Result<()> {
        self.push(EventKind::Create, rel.clone(), is_dir, None);
        if is_dir {
            match self.add_watch(parent, name, &rel) {
                Ok(Some(child)) => self.watch_below(child, true, &mut |_| {})?,
                Ok(None) => {}
                Err(AddError::Limit) => return Err(self.limit_error()),
                Err(AddError::Other(e)) => return Err(e),
            }
        }
        Ok(())
    }

    /// `parent/name` left the tree (or was renamed to an excluded name).
    fn moved_out(&mut self, parent: NodeId, name: &[u8], rel: WirePath, is_dir: bool) {
        if self.excludes.is_excluded(rel.as_path(), is_dir) {
            return;
        }
        if is_dir {
            if let Some(child) = self.tree.child(parent, name) {
                // The directory still exists elsewhere and its watches would
                // go on reporting; remove them.
                for handle in self.tree.remove_subtree(child) {
                    let _ = self.inotify.watches().remove(handle);
                }
            }
        }
        self.push(EventKind::Delete, rel, is_dir, None);
    }

    fn handle_move(
        &mut self,
        from_parent: NodeId,
        from_name: &[u8],
        to_parent: NodeId,
        to_name: &[u8],
        is_dir: bool,
    ) -> anyhow::Result<()> {
        let from = self.tree.path(from_parent).join(from_name);
        let to = self.tree.path(to_parent).join(to_name);
        let from_excluded = self.excludes.is_excluded(from.as_path(), is_dir);
        let to_excluded = self.excludes.is_excluded(to.as_path(), is_dir);
        match (from_excluded, to_excluded) {
            (true, true) => Ok(()),
            (true, false) => self.appeared(to_parent, to_name, to, is_dir),
            (false, true) => {
                self.moved_out(from_parent, from_name, from, is_dir);
                Ok(())
            }
            (false, false) => {
                self.push(EventKind::Move, to.clone(), is_dir, Some(from));
                if is_dir {
                    let known = self.tree.child(from_parent, from_name);
                    if let Some(node) = known {
                        self.tree.relocate(node, to_parent, to_name);
                    }
                    // Ask the kernel which directory is at the new name now:
                    // after `mkdir a; mv a b; mkdir a` in one read, the watch
                    // we hold for "a" may be the second `a`, and the moved
                    // one would go unwatched. A known watch is just confirmed;
                    // any other is watched and listed now.
                    match self.add_watch(to_parent, to_name, &to) {
                        Ok(Some(child)) if Some(child) != known => {
                            self.watch_below(child, true, &mut |_| {})?
                        }
                        // Watches below it can be missing: one added by name
                        // while the directory was already being renamed
                        // failed (`mkdir a/inner; mv a b` in one read).
                        Ok(Some(child)) => self.watch_unwatched_below(child)?,
                        Ok(None) => {}
                        Err(AddError::Limit) => return Err(self.limit_error()),
                        Err(AddError::Other(e)) => return Err(e),
                    }
                }
                Ok(())
            }
        }
    }

    fn push(&mut self, kind: EventKind, path: WirePath, dir: bool, from: Option<WirePath>) {
        self.out.push(Seen {
            kind,
            path,
            dir,
            from,
        });
    }
}

fn new_inotify() -> anyhow::Result<Inotify> {
    Inotify::init().map_err(|e| {
        if e.raw_os_error() == Some(nix::libc::EMFILE) {
            let max = limits::read_sysctl("fs/inotify/max_user_instances")
                .map_or_else(|| "unknown".into(), |v| v.to_string());
            coded(
                Code::Limit,
                format!(
                    "cannot start inotify: this account already has fs.inotify.max_user_instances ({max}) \
                     inotify instances open. Stop some watchers or raise it: \
                     `sysctl fs.inotify.max_user_instances=1024`"
                ),
            )
        } else {
            anyhow::Error::new(e).context("cannot start inotify")
        }
    })
}

/// The entry vanished or changed type under us: a race with the writer, not
/// an error. Its removal is reported by the parent's watch.
fn is_gone(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(nix::libc::ENOENT) | Some(nix::libc::ENOTDIR) | Some(nix::libc::ELOOP)
    )
}
