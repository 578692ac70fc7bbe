//! A replica on this machine. Every change resolves its parent directory
//! from the root one component at a time with `O_NOFOLLOW`, so a symlink
//! swapped in after the scan can never lead a write out of the replica;
//! checks the path is still as scanned right before acting; and writes
//! files as a temporary file renamed into place.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use nix::errno::Errno;
use nix::fcntl::{openat, readlinkat, renameat, renameat2, OFlag, RenameFlags};
use nix::sys::stat::{fchmod, fstat, fstatat, futimens, mkdirat, Mode};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};

use super::backup;
use super::entry::{Entry, Hash, Kind};
use super::planner::Scan;
use super::proto::pad;
use super::replica::{Applied, Change, Fill, Replica, Who};
use super::scan::{self, entry_from_stat, TEMP_PREFIX, TEMP_SUFFIX};
use crate::exclude::Excludes;
use crate::os::beneath::Handle;
use crate::wire::path::WirePath;

pub struct LocalReplica {
    who: Who,
    root: PathBuf,
    excludes: Excludes,
    owners: bool,
    /// Whether owners and set-id bits may be taken from the other side at
    /// all: always for a local replica (the user runs both ends); for
    /// `--serve` only with its own `--owners`, so a client (a restricted
    /// key used as root) cannot plant a setuid-root file.
    trust_owners: bool,
    /// The last parent directory resolved, reused while changes stay in it.
    cached: Option<(WirePath, OwnedFd)>,
    temp_counter: u64,
    /// `--backup-dir-a/-b`: where replaced and deleted versions go.
    backup: Option<backup::Active>,
}

impl LocalReplica {
    pub fn new(name: &str, root: &Path, excludes: Excludes) -> LocalReplica {
        LocalReplica {
            who: Who {
                name: name.to_string(),
                host: local_host(),
                root_user: nix::unistd::geteuid().is_root(),
            },
            root: root.to_path_buf(),
            excludes,
            owners: false,
            trust_owners: true,
            cached: None,
            temp_counter: 0,
            backup: None,
        }
    }

    /// Keeps the file or symlink `name` in `dir` (at `path`) in the backup
    /// directory before it is replaced or removed, when backups are on.
    fn keep_backup(&self, dir: &OwnedFd, name: &[u8], path: &WirePath) -> io::Result<()> {
        let Some(active) = &self.backup else {
            return Ok(());
        };
        let root = backup::open_root(&self.root)?;
        backup::keep(&root, active, dir, name, path).map_err(|e| {
            if vanished(&e) {
                // The entry (or the directory holding it) went away: the
                // step is skipped, with the error as it is.
                e
            } else {
                io::Error::new(e.kind(), format!("keeping a backup of {path:?}: {e}"))
            }
        })
    }

    /// `--serve` without `--owners`: never chown, strip set-id bits.
    pub fn distrust_owners(&mut self) {
        self.trust_owners = false;
        self.owners = false;
    }

    /// The mode to set for `mode` from the other side: without trust in
    /// owners, setuid and setgid are stripped (the sticky bit is harmless).
    fn mode(&self, mode: u32) -> u32 {
        if self.trust_owners {
            mode & 0o7777
        } else {
            mode & 0o1777
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// What is at `path` now (not following a final symlink), `None` when
    /// nothing is.
    pub fn stat(&mut self, path: &WirePath) -> io::Result<Option<Entry>> {
        let (dir, name) = match self.parent(path) {
            Err(e) if vanished(&e) => return Ok(None),
            r => r?,
        };
        stat_at(&dir, &name)
    }

    /// The directory holding `path`, opened without following any symlink
    /// below the root, and `path`'s last component.
    fn parent(&mut self, path: &WirePath) -> io::Result<(OwnedFd, Vec<u8>)> {
        let bytes = path.as_bytes();
        if path.is_root() || bytes.is_empty() || bytes.split(|&b| b == b'/').any(bad_component) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("refusing path {path:?}"),
            ));
        }
        let (dir, name) = match bytes.iter().rposition(|&b| b == b'/') {
            Some(i) => (WirePath::from_bytes(&bytes[..i]), bytes[i + 1..].to_vec()),
            None => (WirePath::root(), bytes.to_vec()),
        };
        if let Some((cached, fd)) = &self.cached {
            if *cached == dir {
                return Ok((fd.try_clone()?, name));
            }
        }
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let mut fd = openat(
            nix::fcntl::AT_FDCWD,
            self.root.as_path(),
            flags,
            Mode::empty(),
        )?;
        if !dir.is_root() {
            for comp in dir.as_bytes().split(|&b| b == b'/') {
                fd = openat(
                    &fd,
                    Path::new(std::ffi::OsStr::from_bytes(comp)),
                    flags | OFlag::O_NOFOLLOW,
                    Mode::empty(),
                )?;
            }
        }
        self.cached = Some((dir, fd.try_clone()?));
        Ok((fd, name))
    }

    /// A step whose path, or a directory above it, went away (or turned
    /// into a file or symlink) while it ran: skipped, the next run sees the
    /// new state. The cached directory may be the one removed.
    fn gone_meanwhile(&mut self, e: &io::Error) -> Applied {
        self.cached = None;
        Applied::Skipped(format!("gone since the scan ({e})"))
    }

    fn temp_name(&mut self) -> Vec<u8> {
        self.temp_counter += 1;
        format!(
            "{TEMP_PREFIX}{}.{}{TEMP_SUFFIX}",
            std::process::id(),
            self.temp_counter
        )
        .into_bytes()
    }

    fn apply(&mut self, change: &Change) -> io::Result<Applied> {
        match change {
            Change::Rename { path, to, expect } => {
                let (dir, name) = self.parent(path)?;
                if let Some(why) = differs(stat_at(&dir, &name)?.as_ref(), Some(expect)) {
                    return Ok(Applied::Skipped(why));
                }
                let (to_dir, to_name) = self.parent(to)?;
                match renameat2(
                    &dir,
                    p(&name),
                    &to_dir,
                    p(&to_name),
                    RenameFlags::RENAME_NOREPLACE,
                ) {
                    Err(Errno::EEXIST) => {
                        return Ok(Applied::Skipped(format!("{to:?} appeared since the scan")))
                    }
                    r => r?,
                }
                Ok(Applied::Done(stat_at(&to_dir, &to_name)?))
            }
            Change::Remove { path, expect } | Change::Rmdir { path, expect } => {
                let (dir, name) = self.parent(path)?;
                if let Some(why) = differs(stat_at(&dir, &name)?.as_ref(), Some(expect)) {
                    return Ok(Applied::Skipped(why));
                }
                let flag = if expect.is_dir() {
                    self.cached = None;
                    UnlinkatFlags::RemoveDir
                } else {
                    self.keep_backup(&dir, &name, path)?;
                    UnlinkatFlags::NoRemoveDir
                };
                match unlinkat(&dir, p(&name), flag) {
                    Err(Errno::ENOTEMPTY | Errno::EEXIST) => Ok(Applied::Skipped(
                        "directory not empty: new or excluded entries in it".into(),
                    )),
                    Err(Errno::ENOENT) => Ok(Applied::Done(None)),
                    r => r.map(|_| Applied::Done(None)).map_err(io::Error::from),
                }
            }
            Change::Mkdir { path, entry } => {
                let (dir, name) = self.parent(path)?;
                // Owner rwx until the run ends, so copies into it work; the
                // executor sets the final mode last.
                let mode = Mode::from_bits_truncate(entry.mode | 0o700);
                match mkdirat(&dir, p(&name), mode) {
                    Err(Errno::EEXIST) => {
                        return Ok(Applied::Skipped(format!(
                            "{path:?} appeared since the scan"
                        )))
                    }
                    r => r?,
                }
                // mkdir(2) applies the umask; set the bits asked for, on the
                // directory itself: a name can be swapped for a symlink.
                let h = match Handle::open(&dir, &name) {
                    Ok(h) if h.is_dir() => h,
                    Ok(_) => return Ok(Applied::Skipped(format!("{path:?} replaced meanwhile"))),
                    Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => {
                        return Ok(Applied::Skipped(format!("{path:?} replaced meanwhile")))
                    }
                    Err(e) => return Err(e),
                };
                if self.owners {
                    h.chown(entry.uid, entry.gid)?;
                }
                h.chmod(self.mode(entry.mode | 0o700))?;
                Ok(Applied::Done(stat_at(&dir, &name)?))
            }
            Change::SetMeta { path, src, expect } => {
                let (dir, name) = self.parent(path)?;
                if expect.kind == Kind::Symlink {
                    if let Some(why) = differs(stat_at(&dir, &name)?.as_ref(), Some(expect)) {
                        return Ok(Applied::Skipped(why));
                    }
                    if self.owners {
                        chown_at(&dir, &name, src)?;
                    }
                    return Ok(Applied::Done(stat_at(&dir, &name)?));
                }
                // Check and change the very entry, through its descriptor.
                let h = match Handle::open(&dir, &name) {
                    Ok(h) => h,
                    Err(e)
                        if matches!(
                            e.raw_os_error(),
                            Some(nix::libc::ELOOP | nix::libc::ENOENT)
                        ) =>
                    {
                        return Ok(Applied::Skipped("changed since the scan".into()))
                    }
                    Err(e) => return Err(e),
                };
                if let Some(why) = differs(entry_from_stat(&h.stat, None).as_ref(), Some(expect)) {
                    return Ok(Applied::Skipped(why));
                }
                if self.owners {
                    h.chown(src.uid, src.gid)?;
                }
                h.chmod(self.mode(src.mode))?;
                if expect.kind == Kind::File {
                    h.set_times(TimeSpec::UTIME_OMIT, timespec(src.mtime))?;
                }
                Ok(Applied::Done(stat_at(&dir, &name)?))
            }
        }
    }

    fn write_inner(
        &mut self,
        path: &WirePath,
        src: &Entry,
        expect: Option<&Entry>,
        fill: &mut Fill<'_>,
    ) -> anyhow::Result<Applied> {
        let (dir, name) = self.parent(path)?;
        if let Some(why) = differs(stat_at(&dir, &name)?.as_ref(), expect) {
            return Ok(Applied::Skipped(why));
        }
        let temp = self.temp_name();
        let intact = match src.kind {
            Kind::Symlink => {
                let intact = fill(&mut io::sink())?;
                let target = src.target.as_deref().cloned().unwrap_or_default();
                symlinkat(target.as_path(), &dir, p(&temp))?;
                intact
            }
            Kind::File => {
                let fd = openat(
                    &dir,
                    p(&temp),
                    OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW,
                    Mode::from_bits_truncate(0o600),
                )?;
                let mut file = File::from(fd);
                let result = (|| -> anyhow::Result<bool> {
                    let mut out = io::BufWriter::with_capacity(256 * 1024, &mut file);
                    let intact = fill(&mut out)?;
                    out.flush()?;
                    drop(out);
                    if self.owners {
                        fchown(
                            file.as_fd(),
                            Some(Uid::from_raw(src.uid)),
                            Some(Gid::from_raw(src.gid)),
                        )?;
                    }
                    fchmod(file.as_fd(), Mode::from_bits_truncate(self.mode(src.mode)))?;
                    futimens(file.as_fd(), &TimeSpec::UTIME_OMIT, &timespec(src.mtime))?;
                    Ok(intact)
                })();
                match result {
                    Ok(intact) => intact,
                    Err(e) => {
                        let _ = unlinkat(&dir, p(&temp), UnlinkatFlags::NoRemoveDir);
                        return Err(e);
                    }
                }
            }
            Kind::Dir => anyhow::bail!("cannot write a directory as a file"),
        };
        let discard = |why: String| -> anyhow::Result<Applied> {
            unlinkat(&dir, p(&temp), UnlinkatFlags::NoRemoveDir)?;
            Ok(Applied::Skipped(why))
        };
        if !intact {
            return discard("the source changed while it was copied".into());
        }
        if src.kind == Kind::Symlink && self.owners {
            chown_at(&dir, &temp, src)?;
        }
        // Check again right before the rename: the copy took time.
        match expect {
            None => {
                match renameat2(
                    &dir,
                    p(&temp),
                    &dir,
                    p(&name),
                    RenameFlags::RENAME_NOREPLACE,
                ) {
                    Err(Errno::EEXIST) => {
                        return discard(format!("{path:?} appeared since the scan"))
                    }
                    r => r?,
                }
            }
            Some(_) => {
                if let Some(why) = differs(stat_at(&dir, &name)?.as_ref(), expect) {
                    return discard(why);
                }
                if let Err(e) = self.keep_backup(&dir, &name, path) {
                    let _ = unlinkat(&dir, p(&temp), UnlinkatFlags::NoRemoveDir);
                    return Err(e.into());
                }
                renameat(&dir, p(&temp), &dir, p(&name))?;
            }
        }
        let mut done = stat_at(&dir, &name)?;
        if let Some(e) = done.as_mut() {
            e.hash.clone_from(&src.hash);
        }
        Ok(Applied::Done(done))
    }
}

impl Replica for LocalReplica {
    fn who(&self) -> &Who {
        &self.who
    }

    fn set_owners(&mut self, owners: bool) -> anyhow::Result<()> {
        self.owners = owners && self.who.root_user && self.trust_owners;
        Ok(())
    }

    fn set_backup(&mut self, spec: Option<backup::Backup>) -> anyhow::Result<()> {
        let Some(spec) = spec else {
            self.backup = None;
            return Ok(());
        };
        let now = std::time::SystemTime::now();
        let root = backup::open_root(&self.root)
            .with_context(|| format!("opening {}", self.root.display()))?;
        let pruned = backup::prune(&root, &spec, now).with_context(|| {
            format!(
                "removing old backups in {:?} of {}",
                spec.dir,
                self.root.display()
            )
        })?;
        if pruned > 0 {
            crate::log_info!("removed {pruned} backup runs older than --backup-keep");
        }
        self.backup = Some(backup::Active {
            spec,
            stamp: backup::stamp(now),
        });
        Ok(())
    }

    fn scan(&mut self, checksum: bool) -> anyhow::Result<Scan> {
        self.cached = None;
        scan::scan(&self.root, &self.excludes, checksum)
    }

    fn scan_paths(&mut self, paths: &[WirePath], checksum: bool) -> anyhow::Result<Scan> {
        self.cached = None;
        scan::scan_paths(&self.root, &self.excludes, checksum, paths)
    }

    fn hash(&mut self, paths: &[WirePath]) -> anyhow::Result<Vec<Option<Hash>>> {
        let mut out = Vec::with_capacity(paths.len());
        for path in paths {
            let (dir, name) = match self.parent(path) {
                Ok(found) => found,
                Err(e) if vanished(&e) => {
                    self.cached = None;
                    out.push(None);
                    continue;
                }
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!(
                            "opening the directory of {path:?} in {}",
                            self.root.display()
                        )
                    })
                }
            };
            let fd = match open_regular(&dir, &name) {
                Ok(Some(fd)) => fd,
                Ok(None) | Err(Errno::ENOENT | Errno::ELOOP | Errno::ENOTDIR) => {
                    out.push(None);
                    continue;
                }
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("opening {path:?} in {} to hash it", self.root.display())
                    })
                }
            };
            let mut hasher = blake3::Hasher::new();
            hasher
                .update_reader(File::from(fd))
                .with_context(|| format!("hashing {path:?} in {}", self.root.display()))?;
            out.push(Some(Hash::from(hasher.finalize())));
        }
        Ok(out)
    }

    fn change(&mut self, change: &Change) -> anyhow::Result<Applied> {
        match self.apply(change) {
            Err(e) if vanished(&e) => Ok(self.gone_meanwhile(&e)),
            r => r.with_context(|| format!("{} in {}", describe(change), self.root.display())),
        }
    }

    fn read(
        &mut self,
        path: &WirePath,
        expect: &Entry,
        out: &mut dyn Write,
    ) -> anyhow::Result<bool> {
        let root = self.root.display().to_string();
        let (dir, name) = match self.parent(path) {
            Ok(found) => found,
            // A directory above it vanished: so did the source.
            Err(e) if vanished(&e) => {
                self.cached = None;
                pad(out, expect.size)?;
                return Ok(false);
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("opening the directory of {path:?} in {root}"))
            }
        };
        if expect.kind == Kind::Symlink {
            let now = stat_at(&dir, &name).with_context(|| format!("stat {path:?} in {root}"))?;
            return Ok(differs(now.as_ref(), Some(expect)).is_none());
        }
        let fd = match open_regular(&dir, &name) {
            Ok(Some(fd)) => fd,
            Ok(None) | Err(Errno::ENOENT | Errno::ELOOP | Errno::ENOTDIR) => {
                pad(out, expect.size)?;
                return Ok(false);
            }
            Err(e) => return Err(e).with_context(|| format!("opening {path:?} in {root}")),
        };
        let stat = |fd: &OwnedFd| fstat(fd).with_context(|| format!("stat {path:?} in {root}"));
        let before = entry_from_stat(&stat(&fd)?, None);
        if differs(before.as_ref(), Some(expect)).is_some() {
            pad(out, expect.size)?;
            return Ok(false);
        }
        let mut file = File::from(fd);
        let copied = io::copy(&mut (&mut file).take(expect.size), out)
            .with_context(|| format!("reading {path:?} in {root}"))?;
        if copied < expect.size {
            pad(out, expect.size - copied)?;
            return Ok(false);
        }
        let after = entry_from_stat(&stat(&OwnedFd::from(file))?, None);
        Ok(differs(after.as_ref(), Some(expect)).is_none())
    }

    fn write(
        &mut self,
        path: &WirePath,
        src: &Entry,
        expect: Option<&Entry>,
        fill: &mut Fill<'_>,
    ) -> anyhow::Result<Applied> {
        match self.write_inner(path, src, expect, fill) {
            Err(e) if !is_transport(&e) && vanished_cause(&e).is_some() => {
                let io = vanished_cause(&e).expect("checked");
                Ok(self.gone_meanwhile(&io))
            }
            r => r.with_context(|| format!("writing {path:?} in {}", self.root.display())),
        }
    }
}

/// Opens `name` in `dir` for reading when it is a regular file (`None`
/// otherwise): `O_NONBLOCK` so a FIFO or device never blocks the open, and
/// `O_NOFOLLOW`; the type is checked on the descriptor.
fn open_regular(dir: &OwnedFd, name: &[u8]) -> nix::Result<Option<OwnedFd>> {
    let fd = openat(
        dir,
        p(name),
        OFlag::O_RDONLY
            | OFlag::O_NOFOLLOW
            | OFlag::O_CLOEXEC
            | OFlag::O_NONBLOCK
            | OFlag::O_NOCTTY,
        Mode::empty(),
    )?;
    if fstat(&fd)?.st_mode & nix::libc::S_IFMT != nix::libc::S_IFREG {
        return Ok(None);
    }
    // Back to blocking reads for the data.
    nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETFL(OFlag::empty()))?;
    Ok(Some(fd))
}

/// Gives `name` in `dir` the owner and group of `src`, not following a
/// symlink: at worst another entry of the replica changes owner.
fn chown_at(dir: &OwnedFd, name: &[u8], src: &Entry) -> nix::Result<()> {
    fchownat(
        dir,
        p(name),
        Some(Uid::from_raw(src.uid)),
        Some(Gid::from_raw(src.gid)),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
}

fn p(name: &[u8]) -> &Path {
    Path::new(std::ffi::OsStr::from_bytes(name))
}

fn bad_component(c: &[u8]) -> bool {
    c.is_empty() || c == b"." || c == b".."
}

fn timespec(ns: i64) -> TimeSpec {
    TimeSpec::new(ns.div_euclid(1_000_000_000), ns.rem_euclid(1_000_000_000))
}

/// Whether an error says a path (or a directory above it) is not there any
/// more, or is no longer a directory where one was: what churn does to a
/// replica between the scan and a step.
fn vanished(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(nix::libc::ENOENT | nix::libc::ENOTDIR | nix::libc::ELOOP)
    )
}

/// The error in `err`'s chain that says a path vanished (see [`vanished`]).
fn vanished_cause(err: &anyhow::Error) -> Option<io::Error> {
    err.chain().find_map(|c| {
        let e = if let Some(e) = c.downcast_ref::<io::Error>() {
            io::Error::from_raw_os_error(e.raw_os_error()?)
        } else {
            io::Error::from(*c.downcast_ref::<Errno>()?)
        };
        vanished(&e).then_some(e)
    })
}

fn is_transport(err: &anyhow::Error) -> bool {
    err.chain()
        .any(|c| c.downcast_ref::<super::replica::Transport>().is_some())
}

/// The entry at `name` in `dir` now, `None` when nothing is there.
fn stat_at(dir: &OwnedFd, name: &[u8]) -> io::Result<Option<Entry>> {
    // A symlink can be removed or replaced between the stat and the readlink.
    for _ in 0..3 {
        if let Some(found) = stat_once(dir, name)? {
            return Ok(found);
        }
    }
    Err(io::Error::other("keeps changing between stat and readlink"))
}

/// [`stat_at`] once; `None` when the symlink changed under the readlink.
fn stat_once(dir: &OwnedFd, name: &[u8]) -> io::Result<Option<Option<Entry>>> {
    match fstatat(dir, p(name), nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => {
            let target = if st.st_mode & nix::libc::S_IFMT == nix::libc::S_IFLNK {
                match readlinkat(dir, p(name)) {
                    Ok(t) => Some(WirePath::from_bytes(t.as_bytes().to_vec())),
                    Err(Errno::ENOENT | Errno::EINVAL) => return Ok(None),
                    Err(e) => return Err(e.into()),
                }
            } else {
                None
            };
            Ok(Some(entry_from_stat(&st, target).or(Some(Entry {
                // A socket or device: never ours to replace.
                kind: Kind::Symlink,
                target: Some(Box::new(WirePath::from("<special file>"))),
                ..Entry::dir(0)
            }))))
        }
        Err(Errno::ENOENT) => Ok(Some(None)),
        Err(e) => Err(e.into()),
    }
}

/// Why the current state is not the expected one, or `None` when it is:
/// same kind; a file with the same size, mtime, inode and mode; a symlink
/// to the same target. Directories only need to still be directories.
pub fn differs(cur: Option<&Entry>, expect: Option<&Entry>) -> Option<String> {
    let same = match (cur, expect) {
        (None, None) => true,
        (Some(c), Some(e)) => {
            c.kind == e.kind
                && match c.kind {
                    Kind::Dir => true,
                    Kind::Symlink => c.target == e.target,
                    Kind::File => {
                        c.size == e.size && c.mtime == e.mtime && c.ino == e.ino && c.mode == e.mode
                    }
                }
        }
        _ => false,
    };
    if same {
        None
    } else if cur.is_none() {
        Some("gone since the scan".into())
    } else if expect.is_none() {
        Some("appeared since the scan".into())
    } else {
        Some("changed since the scan".into())
    }
}

fn describe(change: &Change) -> String {
    match change {
        Change::Rename { path, to, .. } => format!("renaming {path:?} to {to:?}"),
        Change::Remove { path, .. } => format!("removing {path:?}"),
        Change::Rmdir { path, .. } => format!("removing directory {path:?}"),
        Change::Mkdir { path, .. } => format!("creating directory {path:?}"),
        Change::SetMeta { path, .. } => format!("setting mode and times of {path:?}"),
    }
}

pub fn local_host() -> String {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    fn mode_of(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
    }

    /// Churn removes a directory (or swaps it for a file or a symlink)
    /// after the scan: hashing, reading and every step under it must see
    /// "gone", never fail the run with a bare ENOENT (a bisync run once
    /// exited 1 with "No such file or directory (os error 2)" from `hash`).
    #[test]
    fn a_directory_vanished_since_the_scan_is_gone_not_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("r");
        let d = root.join("d");
        let f = WirePath::from("d/f");
        let file = Entry {
            kind: Kind::File,
            size: 2,
            mode: 0o644,
            ..Entry::dir(0)
        };
        type Replace = fn(&Path);
        let ways: [(&str, Replace); 4] = [
            ("removed", |_| {}),
            ("a file", |d| fs::write(d, b"x").unwrap()),
            ("a symlink", |d| {
                std::os::unix::fs::symlink("/tmp", d).unwrap()
            }),
            ("a symlink to a dir", |d| {
                std::os::unix::fs::symlink(d.with_file_name("elsewhere"), d).unwrap()
            }),
        ];
        for ((how, replace), warm) in ways.into_iter().flat_map(|w| [(w, false), (w, true)]) {
            let _ = fs::remove_file(&d);
            fs::create_dir_all(&d).unwrap();
            fs::create_dir_all(root.join("elsewhere")).unwrap();
            fs::write(d.join("f"), b"hi").unwrap();
            let mut rep = LocalReplica::new("r", &root, Excludes::default());
            let expect = LocalReplica::new("r", &root, Excludes::default())
                .stat(&f)
                .unwrap()
                .expect("there");
            if warm {
                // The replica caches the descriptor of d, now removed.
                rep.stat(&f).unwrap();
            }
            fs::remove_dir_all(&d).unwrap();
            replace(&d);
            let how = format!("{how}{}", if warm { ", d cached" } else { "" });
            assert_eq!(
                rep.hash(std::slice::from_ref(&f)).unwrap(),
                [None],
                "d {how}"
            );
            assert_eq!(rep.stat(&f).unwrap(), None, "d {how}");
            let mut copied = Vec::new();
            assert!(!rep.read(&f, &expect, &mut copied).unwrap(), "d {how}");
            assert_eq!(copied.len(), 2, "padded to the size announced");
            let steps = [
                Change::Remove {
                    path: f.clone(),
                    expect: expect.clone(),
                },
                Change::SetMeta {
                    path: f.clone(),
                    src: file.clone(),
                    expect: expect.clone(),
                },
                Change::Rename {
                    path: f.clone(),
                    to: WirePath::from("d/g"),
                    expect: expect.clone(),
                },
                Change::Mkdir {
                    path: WirePath::from("d/e"),
                    entry: Entry::dir(0o755),
                },
            ];
            for step in &steps {
                let got = rep.change(step);
                assert!(
                    matches!(got, Ok(Applied::Skipped(_))),
                    "d {how}: {}: {got:?}",
                    describe(step)
                );
            }
            for expect in [None, Some(&expect)] {
                let got = rep.write(&WirePath::from("d/new"), &file, expect, &mut |out| {
                    out.write_all(b"hi")?;
                    Ok(true)
                });
                assert!(
                    matches!(got, Ok(Applied::Skipped(_))),
                    "d {how}: writing: {got:?}"
                );
            }
            assert!(!root.join("elsewhere/new").exists(), "d {how}");
        }
    }

    #[test]
    fn set_meta_never_chmods_through_a_directory_swapped_for_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let (root, victim) = (dir.path().join("r"), dir.path().join("victim"));
        fs::create_dir(&root).unwrap();
        fs::create_dir(root.join("d")).unwrap();
        fs::set_permissions(root.join("d"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(&victim, b"secret").unwrap();
        fs::set_permissions(&victim, fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink(&victim, root.join("link")).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let swapper = {
            let (root, stop) = (root.clone(), stop.clone());
            std::thread::spawn(move || {
                let (d, held, link) = (root.join("d"), root.join("held"), root.join("link"));
                let mut swaps = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    if fs::rename(&d, &held).is_ok() {
                        if fs::rename(&link, &d).is_ok() {
                            swaps += 1;
                            let _ = fs::rename(&d, &link);
                        }
                        let _ = fs::rename(&held, &d);
                    }
                }
                swaps
            })
        };
        let excludes = Excludes::new(&[] as &[String], &[] as &[&Path]).unwrap();
        let mut rep = LocalReplica::new("r", &root, excludes);
        let mut done = 0;
        for i in 0..5000 {
            let mode = if i % 2 == 0 { 0o777 } else { 0o755 };
            let change = Change::SetMeta {
                path: WirePath::from("d"),
                src: Entry::dir(mode),
                expect: Entry::dir(0o755),
            };
            if let Ok(Applied::Done(_)) = rep.change(&change) {
                done += 1;
            }
        }
        stop.store(true, Ordering::Relaxed);
        let swaps = swapper.join().unwrap();
        assert_eq!(
            mode_of(&victim),
            0o600,
            "after {swaps} swaps, {done} chmods"
        );
        assert!(swaps > 0 && done > 0, "{swaps} swaps, {done} chmods");
    }
}
