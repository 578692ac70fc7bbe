//! The fanotify backend: one file-system mark instead of a watch per directory.
//!
//! A `FAN_MARK_FILESYSTEM` mark with `FAN_REPORT_DFID_NAME_TARGET` reports
//! every create, delete, rename (`FAN_RENAME`, both names, Linux 5.17+),
//! close-write/modify and attribute change on the whole file system, each as
//! the parent directory's file handle, the entry's name and the entry's own
//! handle. Set-up costs microseconds whatever the tree's size, and there is no
//! watch limit. The price: the kernel names directories by handle, not path,
//! and the mark sees the whole file system, not just the root.
//!
//! So a directory handle is resolved to a path once (`open_by_handle_at` on
//! the file system's mount point, then `readlink` of `/proc/self/fd/N`) and
//! the answer cached: inside the root at this relative path, excluded,
//! outside, or gone. Creates and deletes seen later keep the cache right; a
//! directory renamed inside or out of the root drops what is cached at or
//! below its old path, one renamed in from outside (or from a directory that
//! is gone) every path (see `forget_below` for why dropping, not
//! relabelling, and why that is enough). A directory already deleted when
//! its events are read (ESTALE, or a "(deleted)" link) needs nothing
//! reported about what happened inside it:
//! its own deletion, or that of a directory above it, or its move out of the
//! root, is an event from a directory that still exists. A handle that cannot
//! be resolved for any other reason makes a `rescan` of the root: never
//! silence. (Dropping, rather than rescanning, for deleted directories is what
//! keeps a busy file system outside the root from forcing full syncs.)
//!
//! A path is the directory's path when the event is read, not when it
//! happened: in `mkdir a; touch a/f; mv a b`, read late, `a/f` is reported as
//! `b/f` before the move. Consumers end right because the move follows and
//! they re-read what they are told about.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::fanotify_sys as sys;
use super::watcher::{EventMode, Outcome, Seen};
use crate::exclude::Excludes;
use crate::wire::event::EventKind;
use crate::wire::path::WirePath;

/// How many directory handles are remembered. A miss costs two system
/// calls, so this only bounds memory on a file system with millions of
/// directories busy outside the root.
const CACHE_MAX: usize = 200_000;

const INFO_FID: u8 = 1;
const INFO_DFID_NAME: u8 = 2;
const INFO_OLD_DFID_NAME: u8 = 10;
const INFO_NEW_DFID_NAME: u8 = 12;

/// Where a directory (by handle) is.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Loc {
    Inside(WirePath),
    /// Inside the root at this path, but it or a directory above it is
    /// excluded.
    Excluded(WirePath),
    Outside,
    /// Deleted. Its events need not be reported: its removal (or that of a
    /// directory above it, or its move out of the root) is an event of its
    /// own, reported from a directory that still exists.
    Gone,
}

/// A marked file system: its id in events, and a mount point to open
/// handles through.
struct Fs {
    fsid: [u8; 8],
    mount: PathBuf,
}

pub struct Watcher {
    fd: OwnedFd,
    root: PathBuf,
    /// The root's own handle, prefixed with its fsid.
    root_key: Vec<u8>,
    mask: u64,
    excludes: Excludes,
    fs: Vec<Fs>,
    cache: HashMap<Box<[u8]>, Loc>,
    out: Vec<Seen>,
}

/// Why fanotify cannot be used here (for `--backend auto`'s message).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unavailable(pub String);

impl Watcher {
    /// Marks the root's file system and every file system mounted below it.
    pub fn start(root: PathBuf, mode: EventMode, excludes: Excludes) -> anyhow::Result<Self> {
        let flags = libc::FAN_CLASS_NOTIF
            | libc::FAN_CLOEXEC
            | libc::FAN_NONBLOCK
            | libc::FAN_REPORT_DFID_NAME_TARGET;
        let fd = sys::init(flags).map_err(|e| {
            match e.raw_os_error() {
            Some(libc::EPERM) => anyhow::Error::new(Unavailable(
                "fanotify needs CAP_SYS_ADMIN (run as root)".into(),
            )),
            Some(libc::EINVAL) => anyhow::Error::new(Unavailable(
                "this kernel's fanotify cannot report names and target handles (Linux 5.17+ needed)"
                    .into(),
            )),
            Some(libc::ENOSYS) => anyhow::Error::new(Unavailable(
                "this kernel has no fanotify".into(),
            )),
            _ => anyhow::Error::new(e).context("fanotify_init"),
        }
        })?;
        let mut mask = libc::FAN_CREATE
            | libc::FAN_DELETE
            | libc::FAN_RENAME
            | libc::FAN_ATTRIB
            | libc::FAN_ONDIR;
        mask |= match mode {
            EventMode::CloseWrite => libc::FAN_CLOSE_WRITE,
            EventMode::Modify => libc::FAN_MODIFY,
            EventMode::All => libc::FAN_CLOSE_WRITE | libc::FAN_MODIFY,
        };
        let root_handle = sys::handle_of(&root)
            .map_err(|e| unsupported(&root, e))
            .with_context(|| format!("cannot get a file handle for {}", root.display()))?;
        let mut watcher = Watcher {
            fd,
            root_key: Vec::new(),
            mask,
            excludes,
            fs: Vec::new(),
            cache: HashMap::new(),
            out: Vec::new(),
            root: root.clone(),
        };
        let root_fsid = watcher.mark(&root)?;
        watcher.root_key = [&root_fsid[..], &root_handle].concat();
        for mount in watcher.submounts() {
            let before = watcher.fs.len();
            watcher.mark(&mount)?;
            if watcher.fs.len() == before {
                // A handle names a directory by one path only (through the
                // mount point it was first seen on): the same file system
                // mounted twice would hide one of the two.
                return Err(anyhow::Error::new(Unavailable(format!(
                    "{} is a second mount of a file system already watched (a bind mount?)",
                    mount.display()
                ))));
            }
        }
        Ok(watcher)
    }

    /// Adds a file-system mark for the file system at `mount` (once per
    /// file system); returns its fsid.
    pub fn mark(&mut self, mount: &Path) -> anyhow::Result<[u8; 8]> {
        let fsid = sys::fsid_of(mount).with_context(|| format!("statfs {}", mount.display()))?;
        if self.fs.iter().any(|f| f.fsid == fsid) {
            return Ok(fsid);
        }
        sys::mark(
            self.fd.as_fd(),
            libc::FAN_MARK_ADD | libc::FAN_MARK_FILESYSTEM,
            self.mask,
            mount,
        )
        .map_err(|e| unsupported(mount, e))?;
        self.fs.push(Fs {
            fsid,
            mount: mount.to_path_buf(),
        });
        Ok(fsid)
    }

    /// Mount points strictly below the root.
    fn submounts(&self) -> Vec<PathBuf> {
        crate::os::mounts::mount_points()
            .unwrap_or_default()
            .into_iter()
            .filter(|p| p != &self.root && p.starts_with(&self.root))
            .collect()
    }

    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// Directory handles known (cached), for status lines.
    pub fn known(&self) -> usize {
        self.cache.len()
    }

    pub fn take_seen(&mut self) -> Vec<Seen> {
        std::mem::take(&mut self.out)
    }

    /// After an overflow: forget every cached path (the mark stays).
    pub fn rebuild(&mut self) {
        self.cache.clear();
        self.out.clear();
    }

    /// What was at `rel` (a mount point that went away) is to be re-read.
    pub fn rescan(&mut self, rel: WirePath) {
        self.cache.clear();
        self.push(EventKind::Rescan, rel, true, None);
    }

    /// A file system was mounted at `rel` after start: mark it too, and
    /// report a rescan of the mount point.
    pub fn mounted(&mut self, rel: WirePath) {
        if self.excluded_or_below(rel.as_path()) {
            return;
        }
        let abs = self.root.join(rel.as_path());
        let before = self.fs.len();
        let marked = self.mark(&abs);
        if marked.is_ok() && self.fs.len() == before {
            crate::log_error!(
                "{} is a second mount of a file system already watched (a bind mount?): fanotify \
                 reports its changes under the other path, so changes below it may be missed; \
                 restart watchd (auto picks inotify then) or use --backend inotify",
                abs.display()
            );
        }
        if let Err(e) = marked {
            crate::log_error!(
                "cannot watch the file system mounted at {}: {e:#}; changes below it are not seen \
                 (use --backend inotify)",
                abs.display()
            );
        }
        self.rescan(rel);
    }

    /// False when the root's path now names another directory (its file
    /// system was unmounted, or it was replaced).
    pub fn root_is_same(&self) -> bool {
        match (sys::fsid_of(&self.root), sys::handle_of(&self.root)) {
            (Ok(fsid), Ok(handle)) => {
                self.root_key[..8] == fsid && self.root_key[8..] == handle[..]
            }
            _ => false,
        }
    }

    /// Reads what the kernel has queued (one read) and handles it.
    pub fn read_and_handle(&mut self, buf: &mut [u8]) -> anyhow::Result<Outcome> {
        let n = match nix::unistd::read(&self.fd, buf) {
            Ok(n) => n,
            Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => {
                return Ok(Outcome::Continue)
            }
            Err(e) => return Err(e).context("reading fanotify events"),
        };
        let mut at = 0;
        while at + 24 <= n {
            let len = u32_at(buf, at) as usize;
            if len < 24 || at + len > n {
                break;
            }
            let event = &buf[at..at + len];
            at += len;
            let mask = u64::from_ne_bytes(event[8..16].try_into().expect("8 bytes"));
            let meta_len = u16::from_ne_bytes([event[6], event[7]]) as usize;
            if mask & libc::FAN_Q_OVERFLOW != 0 {
                return Ok(Outcome::Overflow);
            }
            let info = parse_info(&event[meta_len.min(event.len())..]);
            if let Some(outcome) = self.handle(mask, &info) {
                return Ok(outcome);
            }
        }
        Ok(Outcome::Continue)
    }

    fn handle(&mut self, mask: u64, info: &Info) -> Option<Outcome> {
        let is_dir = mask & libc::FAN_ONDIR != 0;
        let target_is_root = info.fid.as_deref() == Some(self.root_key.as_slice());
        if mask & libc::FAN_RENAME != 0 {
            if target_is_root {
                return Some(Outcome::RootGone("root-moved"));
            }
            let (Some((old_dir, old_name)), Some((new_dir, new_name))) = (&info.old, &info.new)
            else {
                self.lost("a rename without both names");
                return None;
            };
            let (Some(from), Some(to)) = (
                self.locate(old_dir, old_name, is_dir),
                self.locate(new_dir, new_name, is_dir),
            ) else {
                self.lost("a renamed entry's directory is gone");
                return None;
            };
            return self.renamed(from, to, is_dir, info.fid.as_deref());
        }
        let Some((dir, name)) = &info.dfid_name else {
            return None;
        };
        if target_is_root {
            if mask & libc::FAN_DELETE != 0 {
                return Some(Outcome::RootGone("root-deleted"));
            }
            if mask & libc::FAN_ATTRIB != 0 {
                self.push(EventKind::Attrib, WirePath::root(), true, None);
            }
            return None;
        }
        let Some(loc) = self.locate(dir, name, is_dir) else {
            self.lost("an event's directory is gone");
            return None;
        };
        let Loc::Inside(path) = loc else {
            return None; // outside the root or excluded: dropped here, cheaply
        };
        let created = mask & libc::FAN_CREATE != 0;
        let deleted = mask & libc::FAN_DELETE != 0;
        // The kernel merges events on the same entry: a mask with both means
        // both happened, in an order the mask does not keep. What is there
        // now decides which is last.
        let exists_now = (created && deleted)
            .then(|| std::fs::symlink_metadata(self.root.join(path.as_path())).is_ok());
        if deleted && exists_now == Some(true) {
            self.push(EventKind::Delete, path.clone(), is_dir, None);
        }
        if created {
            if is_dir {
                if let Some(key) = info.fid.as_deref() {
                    self.remember(key, Loc::Inside(path.clone()));
                }
            }
            self.push(EventKind::Create, path.clone(), is_dir, None);
        }
        if mask & (libc::FAN_CLOSE_WRITE | libc::FAN_MODIFY) != 0 {
            self.push(EventKind::Modify, path.clone(), is_dir, None);
        }
        if mask & libc::FAN_ATTRIB != 0 {
            self.push(EventKind::Attrib, path.clone(), is_dir, None);
        }
        if deleted && exists_now != Some(true) {
            if is_dir {
                self.forget_below(&path);
                if let Some(key) = info.fid.as_deref() {
                    self.cache.remove(key);
                }
            }
            self.push(EventKind::Delete, path, is_dir, None);
        }
        None
    }

    fn renamed(&mut self, from: Loc, to: Loc, is_dir: bool, key: Option<&[u8]>) -> Option<Outcome> {
        match (from, to) {
            (Loc::Inside(from), Loc::Inside(to)) => {
                if is_dir {
                    self.forget_below(&from);
                    self.forget_moved(key);
                }
                self.push(EventKind::Move, to, is_dir, Some(from.clone()));
                self.back_at(from);
            }
            (Loc::Inside(from), _) => {
                if is_dir {
                    self.forget_below(&from);
                    self.forget_moved(key);
                }
                self.push(EventKind::Delete, from.clone(), is_dir, None);
                self.back_at(from);
            }
            (_, Loc::Inside(to)) => {
                if is_dir {
                    // Directories cached as outside may be below it now, and
                    // when it came from a directory that is gone (replaced,
                    // deleted) it may have been inside: its old path is
                    // unknown, so are the cached paths below it.
                    self.forget_paths();
                }
                self.push(EventKind::Create, to.clone(), is_dir, None);
                if is_dir {
                    self.report_below(&to);
                }
            }
            (_, _) => {
                if is_dir {
                    self.forget_moved(key);
                    // A directory above the root may have moved.
                    match sys::handle_of(&self.root) {
                        Ok(h) if self.root_key[8..] == h[..] => {}
                        _ => return Some(Outcome::RootGone("root-moved")),
                    }
                }
            }
        }
        None
    }

    /// A renamed directory is looked up again on its next event rather than
    /// cached at its new path: the kernel merges a process's renames with
    /// the same names while they wait in the queue (`mv b a; mv a b; mv b a`
    /// read late is two moves, ending at b), so the last rename read may not
    /// be the last one made.
    fn forget_moved(&mut self, key: Option<&[u8]>) {
        if let Some(key) = key {
            self.cache.remove(key);
        }
    }

    /// After a rename from `from`: when something is there again now, a
    /// rename back may have been merged away (see `forget_moved`), so `from`
    /// is to be re-read. Usually it is a later create, reported anyway.
    fn back_at(&mut self, from: WirePath) {
        if let Ok(meta) = std::fs::symlink_metadata(self.root.join(from.as_path())) {
            let dir = meta.is_dir();
            let kind = if dir {
                EventKind::Rescan
            } else {
                EventKind::Create
            };
            self.push(kind, from, dir, None);
        }
    }

    /// Where `dir/name` is, `None` when the directory cannot be resolved.
    /// A cached directory costs no allocation beyond the entry's own path.
    fn locate(&mut self, dir: &[u8], name: &[u8], is_dir: bool) -> Option<Loc> {
        if !self.cache.contains_key(dir) {
            self.resolve(dir)?;
        }
        let path = match self.cache.get(dir)? {
            Loc::Inside(parent) if name == b"." => parent.clone(),
            Loc::Inside(parent) => parent.join(name),
            other => return Some(other.clone()),
        };
        Some(
            if !path.is_root() && self.excludes.is_excluded(path.as_path(), is_dir) {
                Loc::Excluded(path)
            } else {
                Loc::Inside(path)
            },
        )
    }

    /// The directory `key` (fsid ++ handle) names: cached, or asked of the
    /// kernel once.
    fn resolve(&mut self, key: &[u8]) -> Option<Loc> {
        if let Some(loc) = self.cache.get(key) {
            return Some(loc.clone());
        }
        let fs = self.fs.iter().find(|f| f.fsid[..] == key[..8])?;
        let mount = std::fs::File::open(&fs.mount).ok()?;
        let fd = match sys::open_handle(mount.as_fd(), &key[8..]) {
            Ok(fd) => fd,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ESTALE) | Some(libc::ENOENT)) => {
                self.remember(key, Loc::Gone);
                return Some(Loc::Gone);
            }
            Err(_) => return None,
        };
        let link = std::fs::read_link(format!("/proc/self/fd/{}", {
            use std::os::fd::AsRawFd;
            fd.as_raw_fd()
        }))
        .ok()?;
        let bytes = link.as_os_str().as_bytes();
        if bytes.ends_with(b" (deleted)") {
            self.remember(key, Loc::Gone);
            return Some(Loc::Gone);
        }
        if !bytes.starts_with(b"/") {
            return None;
        }
        let loc = match link.strip_prefix(&self.root) {
            Ok(rel) if rel.as_os_str().is_empty() => Loc::Inside(WirePath::root()),
            Ok(rel) => {
                let path = WirePath::from(rel);
                if self.excluded_or_below(rel) {
                    Loc::Excluded(path)
                } else {
                    Loc::Inside(path)
                }
            }
            Err(_) => Loc::Outside,
        };
        self.remember(key, loc.clone());
        Some(loc)
    }

    /// True when the directory `rel` or one above it is excluded.
    fn excluded_or_below(&self, rel: &Path) -> bool {
        if self.excludes.is_empty() {
            return false;
        }
        rel.ancestors()
            .filter(|a| !a.as_os_str().is_empty())
            .any(|a| self.excludes.is_excluded(a, true))
    }

    fn remember(&mut self, key: &[u8], loc: Loc) {
        if self.cache.len() >= CACHE_MAX {
            self.cache.clear();
        }
        self.cache.insert(key.into(), loc);
    }

    /// A directory came in from outside the root or from a directory that is
    /// gone: forget every cached place but `Gone` (which is for good), since
    /// what was cached as outside may be below it now, and its old path, so
    /// what was cached below it, is unknown.
    fn forget_paths(&mut self) {
        self.cache.retain(|_, loc| matches!(loc, Loc::Gone));
    }

    /// The directory at `path` was deleted or moved away: forget what is
    /// cached at or below it (one lookup each on their next event).
    ///
    /// Dropping, not relabelling: a path asked of the kernel is today's,
    /// ahead of the event being read, so in `touch c/d/f; mv a b; mv c a`
    /// read late, d is cached as `a/d` and carrying `a/*` along to `b/*`
    /// would misplace every later event below d. A forgotten entry costs a
    /// lookup; a wrong one silently misplaces events.
    ///
    /// Dropping only what is at or below the old path is enough. An entry
    /// looked up after the rename is right or ahead (then a queued rename
    /// drops it in turn). An entry from before the rename is at or below the
    /// old path, so it goes, if the old path is right: it is the old parent's
    /// cached path plus the name, wrong only when that parent's entry is
    /// ahead, looked up after a later rename of it or of a directory above
    /// it. That later rename is still queued; nothing moved those directories
    /// in between, so its old path is a prefix of the stale entry's, and its
    /// old parent is one level nearer the root, whose entry is never wrong.
    /// So a rename already queued drops the stale entry, and the events read
    /// until then under its old path happened below the moved directory
    /// before that rename: the `move` record is followed by a rescan of its
    /// new path (batchd), which covers them. The churn tests and the
    /// read-late regression tests (`watchd::a_directory_moved_out_of_one_*`,
    /// `watchd::a_name_moved_away_*`) exercise these orders.
    fn forget_below(&mut self, path: &WirePath) {
        self.cache.retain(|_, loc| match loc {
            Loc::Inside(p) | Loc::Excluded(p) => !p.starts_with(path),
            Loc::Outside | Loc::Gone => true,
        });
    }

    /// A directory moved in from outside: report what it holds (nothing
    /// inside it was ever reported).
    fn report_below(&mut self, start: &WirePath) {
        let mut stack = vec![start.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(self.root.join(dir.as_path())) else {
                continue;
            };
            for entry in entries.flatten() {
                let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
                let rel = dir.join(entry.file_name().as_bytes());
                if self.excludes.is_excluded(rel.as_path(), is_dir) {
                    continue;
                }
                self.push(EventKind::Create, rel.clone(), is_dir, None);
                if is_dir {
                    stack.push(rel);
                }
            }
        }
    }

    /// Something could not be placed: the whole root is to be re-read.
    fn lost(&mut self, why: &str) {
        crate::log_info!("fanotify: {why}; asking for a rescan of the root");
        self.cache.clear();
        if !self
            .out
            .last()
            .is_some_and(|s| s.kind == EventKind::Rescan && s.path.is_root())
        {
            self.push(EventKind::Rescan, WirePath::root(), true, None);
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

/// An error marking or naming `path` that says the file system cannot do it.
fn unsupported(path: &Path, e: io::Error) -> anyhow::Error {
    match e.raw_os_error() {
        Some(libc::EOPNOTSUPP) | Some(libc::EXDEV) | Some(libc::ENODEV) | Some(libc::ENOSYS) => {
            anyhow::Error::new(Unavailable(format!(
                "the file system of {} does not report file handles",
                path.display()
            )))
        }
        Some(libc::EPERM) => anyhow::Error::new(Unavailable(
            "fanotify file-system marks need CAP_SYS_ADMIN (run as root)".into(),
        )),
        _ => anyhow::Error::new(e).context(format!("fanotify_mark {}", path.display())),
    }
}

/// A directory's key: fsid ++ handle_type ++ f_handle, on the stack for
/// the usual handle sizes (8 to 20 bytes on ext4, tmpfs, xfs): reading an
/// event allocates nothing.
type HandleKey = smallvec::SmallVec<[u8; 40]>;

/// The info records of one event.
#[derive(Default)]
struct Info<'a> {
    dfid_name: Option<(HandleKey, &'a [u8])>,
    old: Option<(HandleKey, &'a [u8])>,
    new: Option<(HandleKey, &'a [u8])>,
    fid: Option<HandleKey>,
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(buf[at..at + 4].try_into().expect("4 bytes"))
}

fn parse_info(mut rest: &[u8]) -> Info<'_> {
    let mut info = Info::default();
    while rest.len() >= 4 {
        let kind = rest[0];
        let len = u16::from_ne_bytes([rest[2], rest[3]]) as usize;
        if len < 4 || len > rest.len() {
            break;
        }
        let record = &rest[..len];
        rest = &rest[len..];
        // header (4), fsid (8), handle_bytes (4), handle_type (4), f_handle
        if record.len() < 20 {
            continue;
        }
        let handle_len = u32_at(record, 12) as usize;
        let end = 20 + handle_len;
        if end > record.len() {
            continue;
        }
        let key_parts = (&record[4..12], &record[16..end]);
        let name = || {
            let tail = &record[end..];
            let nul = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
            &tail[..nul]
        };
        let key = || {
            let mut key = HandleKey::from_slice(key_parts.0);
            key.extend_from_slice(key_parts.1);
            key
        };
        match kind {
            INFO_FID => info.fid = Some(key()),
            INFO_DFID_NAME => info.dfid_name = Some((key(), name())),
            INFO_OLD_DFID_NAME => info.old = Some((key(), name())),
            INFO_NEW_DFID_NAME => info.new = Some((key(), name())),
            _ => {}
        }
    }
    info
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watcher() -> Watcher {
        Watcher {
            fd: std::fs::File::open("/dev/null").expect("/dev/null").into(),
            root: PathBuf::from("/nowhere"),
            root_key: Vec::new(),
            mask: 0,
            excludes: Excludes::default(),
            fs: Vec::new(),
            cache: HashMap::new(),
            out: Vec::new(),
        }
    }

    fn at(p: &str) -> WirePath {
        WirePath::from(Path::new(p))
    }

    #[test]
    fn a_moved_directory_drops_only_what_is_cached_at_or_below_its_old_path() {
        let mut w = watcher();
        let entries = [
            (b"a".as_slice(), Loc::Inside(at("a"))),
            (b"a/b", Loc::Inside(at("a/b"))),
            (b"a/x", Loc::Excluded(at("a/x"))),
            (b"ab", Loc::Inside(at("ab"))),
            (b"c", Loc::Inside(at("c/a"))),
            (b"out", Loc::Outside),
            (b"gone", Loc::Gone),
        ];
        for (key, loc) in entries {
            w.remember(key, loc);
        }
        w.forget_below(&at("a"));
        let mut left: Vec<&[u8]> = w.cache.keys().map(|k| &k[..]).collect();
        left.sort();
        assert_eq!(left, [&b"ab"[..], b"c", b"gone", b"out"]);
        w.forget_paths();
        let left: Vec<&[u8]> = w.cache.keys().map(|k| &k[..]).collect();
        assert_eq!(left, [&b"gone"[..]]);
    }
}
