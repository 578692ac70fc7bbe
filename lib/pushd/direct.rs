//! `pushd --direct`: listed paths applied to a local target with plain file
//! system calls instead of an rsync process (lsyncd's `default.direct`):
//! files copied to a temporary name and renamed into place, directories and
//! symlinks recreated, deletions removed; mode, times and (as root) owner
//! kept. Both sides are reached beneath their roots without following a
//! symlink. Full syncs still go through rsync.

use std::fmt;
use std::fs;
use std::io::{self, Seek};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::errno::Errno;
use nix::fcntl::{openat, readlinkat, renameat, AtFlags, OFlag};
use nix::sys::stat::{fstat, mkdirat, mknodat, utimensat, FileStat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchownat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};

use crate::os::beneath::{self, kind_of, p, remove_at, stat_at, DirsError, Handle, InTheWay, Root};
use crate::wire::path::WirePath;

/// What a direct application did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Done {
    pub files: u64,
    pub bytes: u64,
    pub deleted: u64,
    /// Special files not recreated, with why (a device when not root).
    pub skipped: Vec<String>,
}

/// Why a direct application stopped: what it was doing, where, and the
/// error itself, so a caller can tell a cause that lasts from one that
/// passes ([`crate::pushd::fallback`]).
#[derive(Debug)]
pub struct Failed {
    pub doing: &'static str,
    pub path: PathBuf,
    pub error: io::Error,
}

impl fmt::Display for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.doing, self.path.display(), self.error)
    }
}

fn at(doing: &'static str, path: &Path, error: io::Error) -> Failed {
    Failed {
        doing,
        path: path.to_path_buf(),
        error,
    }
}

/// Brings each of `paths` on `target` to its state under `source`; a path
/// gone from the source is removed when `delete` is set. An error names the
/// path; what was done before it stays done (each step is atomic).
///
/// Nothing outside `target` is touched and nothing outside `source` is
/// read: every path is resolved beneath the root's directory descriptor
/// without following symlinks. A symlink found on the target where the
/// source has a directory is replaced, never followed; a path whose parent
/// on the source is no longer a directory (swapped for a symlink, say) is
/// left alone — the swap's own events bring the target there.
pub fn apply_paths(
    source: &Path,
    target: &Path,
    paths: &[WirePath],
    delete: bool,
) -> Result<Done, Failed> {
    let src = Root::open(source).map_err(|e| at("opening", source, e))?;
    let root = Root::open(target).map_err(|e| at("opening", target, e))?;
    let mut done = Done::default();
    let mut touched_dirs: Vec<WirePath> = Vec::new();
    let owner = nix::unistd::geteuid().is_root();
    for rel in paths {
        if rel.is_root() {
            continue;
        }
        let (s, t) = (join(source, rel), join(target, rel));
        let (sdir, name, meta) = match on_source(&src, rel) {
            Ok(Found::Entry(sdir, name, meta)) => (sdir, name, meta),
            Ok(Found::Missing) => {
                if delete && remove(&root, rel).map_err(|e| at("removing", &t, e))? {
                    done.deleted += 1;
                    touched_dirs.extend(rel.parent());
                }
                continue;
            }
            Ok(Found::NotBeneath) => continue,
            Err(e) => return Err(at("reading", &s, e)),
        };
        let dir = make_parents(&root, &src, rel, owner)?;
        touched_dirs.extend(rel.parent());
        let kind = kind_of(&meta);
        if kind == SFlag::S_IFDIR {
            match stat_at(&dir, &name) {
                Ok(Some(st)) if kind_of(&st) == SFlag::S_IFDIR => {}
                Ok(Some(_)) => {
                    remove_at(&dir, &name).map_err(|e| at("removing", &t, e))?;
                }
                Ok(None) => {}
                Err(e) => return Err(at("reading", &t, e)),
            }
            match mkdirat(&dir, p(&name), Mode::from_bits_truncate(0o700)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(at("creating", &t, e.into())),
            }
            let h = Handle::open(&dir, &name).map_err(|e| at("opening", &t, e))?;
            if !h.is_dir() {
                return Err(at(
                    "checking",
                    &t,
                    io::Error::other("not a directory any more"),
                ));
            }
            copy_meta(&meta, &h, owner).map_err(|e| at("setting metadata of", &t, e))?;
        } else if kind == SFlag::S_IFLNK {
            let link = match readlinkat(&sdir, p(&name)) {
                Ok(link) => link,
                // Changed meanwhile: its events follow.
                Err(Errno::ENOENT | Errno::EINVAL) => continue,
                Err(e) => return Err(at("reading", &s, e.into())),
            };
            let tmp = temp_name(&name);
            let _ = unlinkat(&dir, p(&tmp), UnlinkatFlags::NoRemoveDir);
            symlinkat(link.as_os_str(), &dir, p(&tmp)).map_err(|e| at("creating", &t, e.into()))?;
            let result = (|| -> io::Result<()> {
                if owner {
                    fchownat(
                        &dir,
                        p(&tmp),
                        Some(Uid::from_raw(meta.st_uid)),
                        Some(Gid::from_raw(meta.st_gid)),
                        AtFlags::AT_SYMLINK_NOFOLLOW,
                    )?;
                }
                let (a, m) = times(&meta);
                utimensat(&dir, p(&tmp), &a, &m, UtimensatFlags::NoFollowSymlink)?;
                Ok(())
            })();
            if let Err(e) = result {
                let _ = unlinkat(&dir, p(&tmp), UnlinkatFlags::NoRemoveDir);
                return Err(at("setting metadata of", &t, e));
            }
            replace(&dir, &tmp, &name).map_err(|e| at("renaming into", &t, e))?;
        } else if kind == SFlag::S_IFREG {
            let same = matches!(stat_at(&dir, &name), Ok(Some(st))
                if kind_of(&st) == SFlag::S_IFREG
                    && st.st_size == meta.st_size
                    && st.st_mtime == meta.st_mtime
                    && st.st_mtime_nsec == meta.st_mtime_nsec);
            if same {
                let h = Handle::open(&dir, &name).map_err(|e| at("opening", &t, e))?;
                copy_meta(&meta, &h, owner).map_err(|e| at("setting metadata of", &t, e))?;
                continue;
            }
            match copy_file(&sdir, &dir, &name, &meta, owner) {
                Ok(Some(n)) => {
                    done.files += 1;
                    done.bytes += n;
                }
                // Vanished meanwhile: its delete event follows (rsync's 24).
                Ok(None) => continue,
                Err(e) => return Err(at("copying to", &t, e)),
            }
        } else {
            let device = kind == SFlag::S_IFCHR || kind == SFlag::S_IFBLK;
            if device && !owner {
                // rsync -a skips devices when not root too; say so.
                done.skipped
                    .push(format!("{}: a device, only root recreates it", s.display()));
                continue;
            }
            let tmp = temp_name(&name);
            let _ = unlinkat(&dir, p(&tmp), UnlinkatFlags::NoRemoveDir);
            mknodat(
                &dir,
                p(&tmp),
                kind,
                Mode::from_bits_truncate(0o600),
                meta.st_rdev as _,
            )
            .map_err(|e| at("creating", &t, e.into()))?;
            let result = Handle::open(&dir, &tmp).and_then(|h| copy_meta(&meta, &h, owner));
            if let Err(e) = result {
                let _ = unlinkat(&dir, p(&tmp), UnlinkatFlags::NoRemoveDir);
                return Err(at("setting metadata of", &t, e));
            }
            replace(&dir, &tmp, &name).map_err(|e| at("renaming into", &t, e))?;
            done.files += 1;
        }
    }
    // Adding or removing entries changed the target directories' times.
    touched_dirs.sort();
    touched_dirs.dedup();
    for d in touched_dirs {
        let Some(meta) = source_dir(&src, &d) else {
            continue;
        };
        let handle = if d.is_root() {
            Handle::open(root.fd(), b".")
        } else {
            match beneath::split(&d).and_then(|(parent, name)| {
                let dir = root.dir(&parent)?;
                Handle::open(&dir, &name)
            }) {
                Ok(h) => Ok(h),
                Err(e) if beneath::is_not_beneath(&e) || e.kind() == io::ErrorKind::NotFound => {
                    continue
                }
                Err(e) => Err(e),
            }
        };
        let (a, m) = times(&meta);
        handle
            .and_then(|h| {
                if h.is_dir() {
                    h.set_times(a, m)
                } else {
                    Ok(())
                }
            })
            .map_err(|e| at("setting the times of", &join(target, &d), e))?;
    }
    Ok(done)
}

/// What a listed path is on the source.
enum Found {
    /// There: its parent directory, its name, and what it is.
    Entry(OwnedFd, Vec<u8>, FileStat),
    /// Not there (a parent missing included): deleted.
    Missing,
    /// A parent is not a real directory beneath the source root any more.
    NotBeneath,
}

/// Looks `rel` up beneath the source root, never through a symlink.
fn on_source(src: &Root, rel: &WirePath) -> io::Result<Found> {
    match src.parent(rel) {
        Ok((dir, name)) => Ok(match stat_at(&dir, &name)? {
            Some(st) => Found::Entry(dir, name, st),
            None => Found::Missing,
        }),
        Err(e) if vanished(&e) => Ok(Found::Missing),
        Err(e) if beneath::is_not_beneath(&e) => Ok(Found::NotBeneath),
        Err(e) => Err(e),
    }
}

/// A source path that is not there any more: gone (ENOENT), or one of its
/// parents replaced by a file (ENOTDIR) — then the source has no such path
/// either (deleted on the target), and the replacement's own events follow.
pub(crate) fn vanished(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR)
}

/// The source directory `rel`'s metadata, when it is a real directory
/// beneath the source root.
fn source_dir(src: &Root, rel: &WirePath) -> Option<FileStat> {
    let fd = src.dir(rel).ok()?;
    fstat(&fd).ok()
}

fn join(root: &Path, p: &WirePath) -> PathBuf {
    if p.is_root() {
        root.to_path_buf()
    } else {
        root.join(p.as_path())
    }
}

/// Removes `rel` beneath `root` (a whole tree for a directory, a symlink
/// itself); `false` when it was not there — also when a parent on the
/// target is not a real directory, since then `rel` is not beneath the root.
pub(crate) fn remove(root: &Root, rel: &WirePath) -> io::Result<bool> {
    match root.parent(rel) {
        Ok((dir, name)) => remove_at(&dir, &name),
        Err(e) if e.kind() == io::ErrorKind::NotFound || beneath::is_not_beneath(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The longest file name most Linux file systems take (`NAME_MAX`).
const NAME_MAX: usize = 255;

/// `.NAME.syncpipe-PID` next to `name`: same directory, so the final rename
/// is atomic. A long `NAME` is cut so the whole stays a valid name (as
/// rsync does with its own temporary names).
pub(crate) fn temp_name(name: &[u8]) -> Vec<u8> {
    let suffix = format!(".syncpipe-{}", std::process::id());
    let keep = name.len().min(NAME_MAX - 1 - suffix.len());
    let mut tmp = b".".to_vec();
    tmp.extend_from_slice(&name[..keep]);
    tmp.extend_from_slice(suffix.as_bytes());
    tmp
}

/// Renames `tmp` over `name` in `dir`; a directory in the way is removed
/// first. The temporary name is removed when that fails.
pub(crate) fn replace(dir: &OwnedFd, tmp: &[u8], name: &[u8]) -> io::Result<()> {
    let result = (|| -> io::Result<()> {
        if let Some(st) = stat_at(dir, name)? {
            if kind_of(&st) == SFlag::S_IFDIR {
                remove_at(dir, name)?;
            }
        }
        renameat(dir, p(tmp), dir, p(name))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = unlinkat(dir, p(tmp), UnlinkatFlags::NoRemoveDir);
    }
    result
}

/// How many times a copy is made again when the source changed while it
/// was read; past that the copy is kept but marked as stale.
const COPY_TRIES: usize = 3;

/// Copies the regular file `name` in the source directory `sdir` into a new
/// temporary file in `dir` (never following a link), sets its metadata
/// through its descriptor and renames it over `name`. `None` when the
/// source vanished or is not the file `meta` describes any more.
///
/// A write while the data is read would leave a torn copy that the next
/// size-and-time check takes as current when the write fell within the
/// same timestamp tick; so the source's size, mtime and ctime (which every
/// write moves, and which the kernel makes fine-grained once it has been
/// looked at) are compared before and after, and the copy made again if
/// they moved. A source that keeps moving is copied with an mtime one
/// nanosecond before its own, so the next look sends it again (its writes'
/// events bring that look).
fn copy_file(
    sdir: &OwnedFd,
    dir: &OwnedFd,
    name: &[u8],
    meta: &FileStat,
    owner: bool,
) -> io::Result<Option<u64>> {
    // The file checked a moment ago, or nothing: a name swapped for a
    // symlink (ELOOP) or a FIFO (O_NONBLOCK: no hang on open) in between is
    // not read — it is not what `meta` describes, and the swap's own events
    // follow.
    let flags = OFlag::O_RDONLY
        | OFlag::O_NOFOLLOW
        | OFlag::O_NONBLOCK
        | OFlag::O_NOCTTY
        | OFlag::O_CLOEXEC;
    let input = match openat(sdir, p(name), flags, Mode::empty()) {
        Ok(fd) => fs::File::from(fd),
        Err(Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut before = fstat(&input)?;
    if kind_of(&before) != SFlag::S_IFREG
        || (before.st_dev, before.st_ino) != (meta.st_dev, meta.st_ino)
    {
        return Ok(None);
    }
    let tmp = temp_name(name);
    let mut out = Temp::create(dir, &tmp)?;
    let result = (|| -> io::Result<u64> {
        let mut stable = false;
        let mut n = 0;
        for _ in 0..COPY_TRIES {
            (&input).rewind()?;
            out.file.set_len(0)?;
            out.file.rewind()?;
            n = io::copy(&mut &input, &mut out.file)?;
            let after = fstat(&input)?;
            stable = unchanged(&before, &after);
            before = after;
            if stable {
                break;
            }
        }
        let mut meta = before;
        if !stable {
            (meta.st_mtime, meta.st_mtime_nsec) = match meta.st_mtime_nsec {
                0 => (meta.st_mtime - 1, 999_999_999),
                ns => (meta.st_mtime, ns - 1),
            };
        }
        out.finish(&meta, owner)?;
        Ok(n)
    })();
    match result {
        Ok(n) => {
            replace(dir, &tmp, name)?;
            Ok(Some(n))
        }
        Err(e) => {
            out.discard();
            Err(e)
        }
    }
}

/// Nothing wrote to or truncated the file between the two looks.
fn unchanged(a: &FileStat, b: &FileStat) -> bool {
    (
        a.st_size,
        a.st_mtime,
        a.st_mtime_nsec,
        a.st_ctime,
        a.st_ctime_nsec,
    ) == (
        b.st_size,
        b.st_mtime,
        b.st_mtime_nsec,
        b.st_ctime,
        b.st_ctime_nsec,
    )
}

/// Set once an unnamed (`O_TMPFILE`) file could not be given a name here
/// (root in a user namespace without `CAP_DAC_READ_SEARCH` and no `/proc`,
/// say): every later copy goes straight to a named temporary file.
static NAMING_REFUSED: AtomicBool = AtomicBool::new(false);

/// A copy's temporary file in the target directory `dir`: unnamed
/// (`O_TMPFILE`) where the file system and the process can give it a name
/// afterwards — a pushd killed with -9 mid-copy then leaves nothing behind,
/// where a named temporary file would stay, an entry the source never had —
/// else `tmp` created `O_EXCL | O_NOFOLLOW` and removed on failure.
struct Temp<'a> {
    file: fs::File,
    dir: &'a OwnedFd,
    tmp: &'a [u8],
    named: bool,
}

impl<'a> Temp<'a> {
    fn create(dir: &'a OwnedFd, tmp: &'a [u8]) -> io::Result<Temp<'a>> {
        let mode = Mode::from_bits_truncate(0o600);
        let unnamed = OFlag::O_TMPFILE | OFlag::O_RDWR | OFlag::O_CLOEXEC;
        let (fd, named) = if NAMING_REFUSED.load(Ordering::Relaxed) {
            (create_excl(dir, tmp, mode)?, true)
        } else {
            match openat(dir, ".", unnamed, mode) {
                Ok(fd) => (fd, false),
                Err(Errno::EOPNOTSUPP | Errno::EISDIR | Errno::EINVAL) => {
                    (create_excl(dir, tmp, mode)?, true)
                }
                Err(e) => return Err(e.into()),
            }
        };
        Ok(Temp {
            file: fs::File::from(fd),
            dir,
            tmp,
            named,
        })
    }

    /// Sets `meta`'s owner, mode and times and names the file `tmp`, ready
    /// to be renamed into place. An unnamed file that cannot be named is
    /// copied into a named one.
    fn finish(&mut self, meta: &FileStat, owner: bool) -> io::Result<()> {
        copy_meta(meta, &Handle::from_file(&self.file)?, owner)?;
        if self.named {
            return Ok(());
        }
        let Err(e) = link_unnamed(&self.file, self.dir, self.tmp) else {
            return Ok(());
        };
        // Only a refusal to name it is a reason to stop using unnamed files;
        // a full disk or a directory removed meanwhile fails this copy alone.
        let refused = matches!(
            e.raw_os_error().map(Errno::from_raw),
            Some(
                Errno::EPERM
                    | Errno::EACCES
                    | Errno::ENOENT
                    | Errno::ENOSYS
                    | Errno::EOPNOTSUPP
                    | Errno::EINVAL
            )
        );
        if !refused {
            return Err(e);
        }
        if !NAMING_REFUSED.swap(true, Ordering::Relaxed) {
            crate::log_warn!(
                "cannot give an O_TMPFILE file a name ({e}: no CAP_DAC_READ_SEARCH and no /proc?): \
                 --direct copies go through named temporary files .NAME.syncpipe-PID from now on \
                 (a pushd killed mid-copy can leave one behind)"
            );
        }
        let mode = Mode::from_bits_truncate(0o600);
        let mut named = fs::File::from(create_excl(self.dir, self.tmp, mode)?);
        self.named = true;
        let unnamed = std::mem::replace(&mut self.file, named.try_clone()?);
        (&unnamed).rewind()?;
        io::copy(&mut &unnamed, &mut named)?;
        copy_meta(meta, &Handle::from_file(&named)?, owner)
    }

    /// Removes the named temporary file, if there is one.
    fn discard(self) {
        if self.named {
            let _ = unlinkat(self.dir, p(self.tmp), UnlinkatFlags::NoRemoveDir);
        }
    }
}

/// A new file `tmp` in `dir`, never through a link; a leftover of a killed
/// run of this pid is replaced.
fn create_excl(dir: &OwnedFd, tmp: &[u8], mode: Mode) -> io::Result<OwnedFd> {
    let flags =
        OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    match openat(dir, p(tmp), flags, mode) {
        Err(Errno::EEXIST) => {
            unlinkat(dir, p(tmp), UnlinkatFlags::NoRemoveDir)?;
            Ok(openat(dir, p(tmp), flags, mode)?)
        }
        r => Ok(r?),
    }
}

/// Gives the O_TMPFILE file `file` the name `tmp` in `dir` (a leftover of
/// this pid is replaced): by its descriptor (`AT_EMPTY_PATH`: kernels
/// before 6.10 want `CAP_DAC_READ_SEARCH` in the first user namespace,
/// which root in a container lacks), else through `/proc/self/fd` (needs
/// `/proc`).
fn link_unnamed(file: &fs::File, dir: &OwnedFd, tmp: &[u8]) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let by_fd = || nix::unistd::linkat(file, "", dir, p(tmp), AtFlags::AT_EMPTY_PATH);
    let by_proc = || {
        let proc = format!("/proc/self/fd/{}", file.as_raw_fd());
        nix::unistd::linkat(
            nix::fcntl::AT_FDCWD,
            proc.as_str(),
            dir,
            p(tmp),
            AtFlags::AT_SYMLINK_FOLLOW,
        )
    };
    let link = || match by_fd() {
        Err(Errno::ENOENT | Errno::EPERM) => by_proc(),
        r => r,
    };
    match link() {
        Err(Errno::EEXIST) => {
            unlinkat(dir, p(tmp), UnlinkatFlags::NoRemoveDir)?;
            Ok(link()?)
        }
        r => Ok(r?),
    }
}

/// Creates missing ancestors of `rel` on the target (0700 until their
/// source twin's owner, mode and times are copied on), one component at a
/// time without following links; anything but a directory in the way (a
/// planted symlink) is removed, never followed. Returns the parent
/// directory of `rel`.
fn make_parents(root: &Root, src: &Root, rel: &WirePath, owner: bool) -> Result<OwnedFd, Failed> {
    let (parent, _) =
        beneath::split(rel).map_err(|e| at("resolving", &join(root.path(), rel), e))?;
    beneath::make_dirs_with(root, &parent, 0o700, InTheWay::Remove, |so_far, dir| {
        // "." of the new directory's own descriptor: that very inode.
        let h = Handle::open(dir, b".").map_err(|e| DirsError::new("opening", so_far, e))?;
        if let Some(meta) = source_dir(src, &WirePath::from_bytes(so_far)) {
            copy_meta(&meta, &h, owner)
                .map_err(|e| DirsError::new("setting metadata of", so_far, e))?;
        }
        Ok(())
    })
    .map_err(|e| {
        let here = join(root.path(), &WirePath::from_bytes(e.at));
        at(e.doing, &here, e.error)
    })
}

/// Owner (as root), mode and times of `meta` onto the entry open as `h`.
/// Owner first: chown clears set-id bits.
fn copy_meta(meta: &FileStat, h: &Handle, owner: bool) -> io::Result<()> {
    if owner {
        h.chown(meta.st_uid, meta.st_gid)?;
    }
    h.chmod(meta.st_mode & 0o7777)?;
    let (a, m) = times(meta);
    h.set_times(a, m)
}

fn times(meta: &FileStat) -> (TimeSpec, TimeSpec) {
    (
        TimeSpec::new(meta.st_atime, meta.st_atime_nsec),
        TimeSpec::new(meta.st_mtime, meta.st_mtime_nsec),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

    #[test]
    fn a_source_swapped_after_its_check_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let (src, dst) = (dir.path().join("s"), dir.path().join("d"));
        fs::create_dir_all(&src).unwrap();
        fs::create_dir_all(&dst).unwrap();
        fs::write(dir.path().join("secret"), b"secret").unwrap();
        fs::write(src.join("f"), b"data").unwrap();
        let sroot = Root::open(&src).unwrap();
        let checked = stat_at(sroot.fd(), b"f").unwrap().unwrap();
        // A second name keeps the checked inode in use: the file system
        // cannot give its number to the files made below.
        fs::hard_link(src.join("f"), dir.path().join("keep")).unwrap();
        let root = Root::open(&dst).unwrap();
        let copy = |meta: &FileStat| copy_file(sroot.fd(), root.fd(), b"f", meta, false).unwrap();
        // Swapped for a link to a file outside the source, then for a FIFO
        // (whose open would block without O_NONBLOCK), then for another
        // regular file: none of them is the file checked.
        fs::remove_file(src.join("f")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), src.join("f")).unwrap();
        assert_eq!(copy(&checked), None);
        fs::remove_file(src.join("f")).unwrap();
        nix::unistd::mkfifo(&src.join("f"), Mode::from_bits_truncate(0o600)).unwrap();
        assert_eq!(copy(&checked), None);
        fs::write(src.join("g"), b"other").unwrap();
        fs::rename(src.join("g"), src.join("f")).unwrap();
        assert_eq!(copy(&checked), None);
        assert!(!dst.join("f").exists(), "nothing was written to the target");
        // The file itself is copied.
        let now = stat_at(sroot.fd(), b"f").unwrap().unwrap();
        assert_eq!(copy(&now), Some(5));
        assert_eq!(fs::read(dst.join("f")).unwrap(), b"other");
    }

    #[test]
    fn a_path_whose_source_parent_became_a_file_is_gone() {
        // Churn with type swaps: `a` was a directory when `a/f` changed,
        // and is a file by the time the batch is applied. The source has
        // no `a/f` then: deleted, not a failed transfer.
        let dir = tempfile::tempdir().unwrap();
        let (src, dst) = (dir.path().join("s"), dir.path().join("d"));
        fs::create_dir_all(&src).unwrap();
        fs::create_dir_all(dst.join("a")).unwrap();
        fs::write(src.join("a"), b"now a file").unwrap();
        fs::write(dst.join("a/f"), b"old").unwrap();
        let paths = [WirePath::from_bytes(b"a/f".to_vec())];
        let done = apply_paths(&src, &dst, &paths, true).unwrap();
        assert_eq!(done.deleted, 1);
        assert!(!dst.join("a/f").exists());
        let done = apply_paths(&src, &dst, &paths, false).unwrap();
        assert_eq!(done.deleted, 0);
    }

    #[test]
    fn copies_keeps_metadata_replaces_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let (src, dst) = (dir.path().join("s"), dir.path().join("d"));
        fs::create_dir_all(src.join("a/b")).unwrap();
        fs::create_dir_all(dst.join("gone/x")).unwrap();
        fs::create_dir_all(dst.join("f")).unwrap(); // a dir where a file goes
        fs::write(src.join("a/b/f"), b"data").unwrap();
        fs::write(src.join("f"), b"file").unwrap();
        fs::set_permissions(src.join("a/b/f"), fs::Permissions::from_mode(0o640)).unwrap();
        fs::set_permissions(src.join("a"), fs::Permissions::from_mode(0o750)).unwrap();
        std::os::unix::fs::symlink("a/b/f", src.join("link")).unwrap();
        let paths: Vec<WirePath> = ["a/b/f", "f", "link", "gone"]
            .into_iter()
            .map(WirePath::from)
            .collect();
        let done = apply_paths(&src, &dst, &paths, true).unwrap();
        assert_eq!((done.files, done.bytes, done.deleted), (2, 8, 1));
        assert_eq!(fs::read(dst.join("a/b/f")).unwrap(), b"data");
        assert_eq!(fs::read(dst.join("f")).unwrap(), b"file");
        assert_eq!(fs::read_link(dst.join("link")).unwrap(), Path::new("a/b/f"));
        assert!(!dst.join("gone").exists());
        let (s, d) = (
            fs::metadata(src.join("a/b/f")).unwrap(),
            fs::metadata(dst.join("a/b/f")).unwrap(),
        );
        assert_eq!(d.mode() & 0o7777, 0o640);
        assert_eq!((d.mtime(), d.mtime_nsec()), (s.mtime(), s.mtime_nsec()));
        assert_eq!(fs::metadata(dst.join("a")).unwrap().mode() & 0o7777, 0o750);
        // Unchanged: nothing copied again. Without delete: nothing removed.
        fs::create_dir_all(dst.join("extra")).unwrap();
        let again = apply_paths(&src, &dst, &[WirePath::from("f"), "extra".into()], false).unwrap();
        assert_eq!(again, Done::default());
        assert!(dst.join("extra").exists());
    }

    #[test]
    fn names_as_long_as_the_file_system_takes_are_copied() {
        let dir = tempfile::tempdir().unwrap();
        let (src, dst) = (dir.path().join("s"), dir.path().join("d"));
        fs::create_dir_all(&src).unwrap();
        fs::create_dir_all(&dst).unwrap();
        // The temporary name beside them must be cut to fit (it was not:
        // ENAMETOOLONG on every batch).
        let (file, link) = ("f".repeat(NAME_MAX), "l".repeat(NAME_MAX));
        fs::write(src.join(&file), b"long").unwrap();
        std::os::unix::fs::symlink(&file, src.join(&link)).unwrap();
        let paths = [WirePath::from(file.as_str()), WirePath::from(link.as_str())];
        let done = apply_paths(&src, &dst, &paths, true).unwrap();
        assert_eq!(done.files, 1);
        assert_eq!(fs::read(dst.join(&file)).unwrap(), b"long");
        assert_eq!(fs::read_link(dst.join(&link)).unwrap(), Path::new(&file));
        assert_eq!(fs::read_dir(&dst).unwrap().count(), 2, "no temporary left");
        assert!(temp_name(file.as_bytes()).len() <= NAME_MAX);
    }

    #[test]
    fn planted_symlinks_on_the_target_are_replaced_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let (src, dst, out) = (
            dir.path().join("s"),
            dir.path().join("d"),
            dir.path().join("outside"),
        );
        fs::create_dir_all(src.join("a/b")).unwrap();
        fs::create_dir_all(&dst).unwrap();
        fs::create_dir_all(out.join("b")).unwrap();
        for f in ["f", "gone", "b/f"] {
            fs::write(out.join(f), b"victim").unwrap();
        }
        fs::set_permissions(out.join("f"), fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(src.join("a/f"), b"new").unwrap();
        fs::write(src.join("a/b/f"), b"deep").unwrap();
        fs::write(src.join("top"), b"top").unwrap();
        // `a` and `x` on the target point outside; `top` is a link to a file.
        std::os::unix::fs::symlink(&out, dst.join("a")).unwrap();
        std::os::unix::fs::symlink(&out, dst.join("x")).unwrap();
        std::os::unix::fs::symlink(out.join("f"), dst.join("top")).unwrap();
        let paths: Vec<WirePath> = ["x/gone", "a/f", "a/b/f", "top", "x/b"]
            .into_iter()
            .map(WirePath::from)
            .collect();
        let done = apply_paths(&src, &dst, &paths, true).unwrap();
        assert_eq!(done.deleted, 0, "nothing beneath the target to delete");
        for f in ["f", "gone", "b/f"] {
            assert_eq!(fs::read(out.join(f)).unwrap(), b"victim", "{f}");
        }
        assert_eq!(fs::metadata(out.join("f")).unwrap().mode() & 0o777, 0o600);
        assert!(fs::symlink_metadata(dst.join("a")).unwrap().is_dir());
        assert_eq!(fs::read(dst.join("a/f")).unwrap(), b"new");
        assert_eq!(fs::read(dst.join("a/b/f")).unwrap(), b"deep");
        assert!(fs::symlink_metadata(dst.join("top")).unwrap().is_file());
        assert!(fs::symlink_metadata(dst.join("x")).unwrap().is_symlink());
    }

    #[test]
    fn special_files_are_recreated_or_reported() {
        let dir = tempfile::tempdir().unwrap();
        let (src, dst) = (dir.path().join("s"), dir.path().join("d"));
        fs::create_dir_all(&src).unwrap();
        fs::create_dir_all(&dst).unwrap();
        nix::unistd::mkfifo(&src.join("fifo"), Mode::from_bits_truncate(0o640)).unwrap();
        let done = apply_paths(&src, &dst, &[WirePath::from("fifo")], true).unwrap();
        assert_eq!((done.files, done.skipped.len()), (1, 0));
        let m = fs::symlink_metadata(dst.join("fifo")).unwrap();
        assert!(m.file_type().is_fifo());
        assert_eq!(m.mode() & 0o7777, 0o640);
    }
}
