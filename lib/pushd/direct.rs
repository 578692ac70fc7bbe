//! `pushd --direct`: listed paths applied to a local target with plain file
//! system calls instead of an rsync process (lsyncd's `default.direct`):
//! files copied to a temporary name and renamed into place, directories and
//! symlinks recreated, deletions removed; mode, times and (as root) owner
//! kept. Full syncs still go through rsync.

use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, renameat, AtFlags, OFlag};
use nix::sys::stat::{mkdirat, mknodat, utimensat, Mode, SFlag, UtimensatFlags};
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

/// Brings each of `paths` on `target` to its state under `source`; a path
/// gone from the source is removed when `delete` is set. An error names the
/// path; what was done before it stays done (each step is atomic).
///
/// Nothing outside `target` is touched: every path is resolved beneath the
/// target's directory descriptor without following symlinks, and a symlink
/// found where the source has a directory is replaced, never followed.
pub fn apply_paths(
    source: &Path,
    target: &Path,
    paths: &[WirePath],
    delete: bool,
) -> Result<Done, String> {
    let root = Root::open(target).map_err(|e| at("opening", target, e))?;
    let mut done = Done::default();
    let mut touched_dirs: Vec<WirePath> = Vec::new();
    let owner = nix::unistd::geteuid().is_root();
    for rel in paths {
        if rel.is_root() {
            continue;
        }
        let (s, t) = (join(source, rel), join(target, rel));
        let meta = match fs::symlink_metadata(&s) {
            Ok(meta) => meta,
            Err(e) if vanished(&e) => {
                if delete && remove(&root, rel).map_err(|e| at("removing", &t, e))? {
                    done.deleted += 1;
                    touched_dirs.extend(rel.parent());
                }
                continue;
            }
            Err(e) => return Err(at("reading", &s, e)),
        };
        let (_, name) = beneath::split(rel).map_err(|e| at("resolving", &t, e))?;
        let dir = make_parents(&root, source, rel, owner)?;
        touched_dirs.extend(rel.parent());
        let kind = meta.file_type();
        if kind.is_dir() {
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
                return Err(format!("{}: not a directory any more", t.display()));
            }
            copy_meta(&meta, &h, owner).map_err(|e| at("setting metadata of", &t, e))?;
        } else if kind.is_symlink() {
            let link = fs::read_link(&s).map_err(|e| at("reading", &s, e))?;
            let tmp = temp_name(&name);
            let _ = unlinkat(&dir, p(&tmp), UnlinkatFlags::NoRemoveDir);
            symlinkat(link.as_path(), &dir, p(&tmp)).map_err(|e| at("creating", &t, e.into()))?;
            let result = (|| -> io::Result<()> {
                if owner {
                    fchownat(
                        &dir,
                        p(&tmp),
                        Some(Uid::from_raw(meta.uid())),
                        Some(Gid::from_raw(meta.gid())),
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
        } else if kind.is_file() {
            let same = matches!(stat_at(&dir, &name), Ok(Some(st))
                if kind_of(&st) == SFlag::S_IFREG
                    && st.st_size as u64 == meta.len()
                    && st.st_mtime == meta.mtime()
                    && st.st_mtime_nsec == meta.mtime_nsec());
            if same {
                let h = Handle::open(&dir, &name).map_err(|e| at("opening", &t, e))?;
                copy_meta(&meta, &h, owner).map_err(|e| at("setting metadata of", &t, e))?;
                continue;
            }
            match copy_file(&s, &dir, &name, &meta, owner) {
                Ok(Some(n)) => {
                    done.files += 1;
                    done.bytes += n;
                }
                // Vanished meanwhile: its delete event follows (rsync's 24).
                Ok(None) => continue,
                Err(e) => return Err(at("copying to", &t, e)),
            }
        } else {
            let kind_flag = if kind.is_fifo() {
                SFlag::S_IFIFO
            } else if kind.is_socket() {
                SFlag::S_IFSOCK
            } else if kind.is_char_device() {
                SFlag::S_IFCHR
            } else {
                SFlag::S_IFBLK
            };
            let device = kind_flag == SFlag::S_IFCHR || kind_flag == SFlag::S_IFBLK;
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
                kind_flag,
                Mode::from_bits_truncate(0o600),
                meta.rdev() as _,
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
        let Ok(meta) = fs::symlink_metadata(join(source, &d)) else {
            continue;
        };
        if !meta.is_dir() {
            continue;
        }
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

fn join(root: &Path, p: &WirePath) -> PathBuf {
    if p.is_root() {
        root.to_path_buf()
    } else {
        root.join(p.as_path())
    }
}

/// A source path that is not there any more: gone (ENOENT), or one of its
/// parents replaced by a file (ENOTDIR) — then the source has no such path
/// either, and the replacement's own events follow.
pub(crate) fn vanished(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR)
}

fn at(what: &str, path: &Path, e: io::Error) -> String {
    format!("{what} {}: {e}", path.display())
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

/// `.NAME.syncpipe-PID` next to `name`: same directory, so the final rename
/// is atomic.
pub(crate) fn temp_name(name: &[u8]) -> Vec<u8> {
    let mut tmp = b".".to_vec();
    tmp.extend_from_slice(name);
    tmp.extend_from_slice(format!(".syncpipe-{}", std::process::id()).as_bytes());
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

/// Copies the file `src` into a new temporary file in `dir` (`O_EXCL`,
/// never following a link), sets its metadata through its descriptor and
/// renames it over `name`. `None` when the source vanished.
fn copy_file(
    src: &Path,
    dir: &OwnedFd,
    name: &[u8],
    meta: &fs::Metadata,
    owner: bool,
) -> io::Result<Option<u64>> {
    // The file checked a moment ago, or nothing: a name swapped for a
    // symlink (ELOOP) or a FIFO (O_NONBLOCK: no hang on open) in between is
    // not read — it is not what `meta` describes, and the swap's own events
    // follow.
    let opened = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(src);
    let mut input = match opened {
        Ok(f) => f,
        Err(e) if vanished(&e) => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Ok(None),
        Err(e) => return Err(e),
    };
    let now = input.metadata()?;
    if !now.file_type().is_file() || (now.dev(), now.ino()) != (meta.dev(), meta.ino()) {
        return Ok(None);
    }
    let tmp = temp_name(name);
    let mode = Mode::from_bits_truncate(0o600);
    // The data goes into a file without a name first where the file system
    // can (O_TMPFILE), named only just before the rename: a pushd killed
    // with -9 mid-copy leaves nothing behind on the target (a named
    // temporary file would stay there, an entry the source never had).
    let unnamed = OFlag::O_TMPFILE | OFlag::O_WRONLY | OFlag::O_CLOEXEC;
    let (fd, named) = match openat(dir, ".", unnamed, mode) {
        Ok(fd) => (fd, false),
        Err(Errno::EOPNOTSUPP | Errno::EISDIR | Errno::EINVAL) => {
            (create_excl(dir, &tmp, mode)?, true)
        }
        Err(e) => return Err(e.into()),
    };
    let mut out = fs::File::from(fd);
    let result = (|| -> io::Result<u64> {
        let n = io::copy(&mut input, &mut out)?;
        let h = Handle::from_file(&out)?;
        copy_meta(meta, &h, owner)?;
        if !named {
            link_unnamed(&out, dir, &tmp)?;
        }
        Ok(n)
    })();
    match result {
        Ok(n) => {
            replace(dir, &tmp, name)?;
            Ok(Some(n))
        }
        Err(e) => {
            if named {
                let _ = unlinkat(dir, p(&tmp), UnlinkatFlags::NoRemoveDir);
            }
            Err(e)
        }
    }
}

/// A new file `tmp` in `dir`, never through a link; a leftover of a killed
/// run of this pid is replaced.
fn create_excl(dir: &OwnedFd, tmp: &[u8], mode: Mode) -> io::Result<OwnedFd> {
    let flags =
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    match openat(dir, p(tmp), flags, mode) {
        Err(Errno::EEXIST) => {
            unlinkat(dir, p(tmp), UnlinkatFlags::NoRemoveDir)?;
            Ok(openat(dir, p(tmp), flags, mode)?)
        }
        r => Ok(r?),
    }
}

/// Gives the O_TMPFILE file `file` the name `tmp` in `dir` (a leftover of
/// this pid is replaced): by its descriptor as root, through /proc
/// otherwise (linkat's AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH).
fn link_unnamed(file: &fs::File, dir: &OwnedFd, tmp: &[u8]) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let link = || {
        if nix::unistd::geteuid().is_root() {
            nix::unistd::linkat(file, "", dir, p(tmp), AtFlags::AT_EMPTY_PATH)
        } else {
            let proc = format!("/proc/self/fd/{}", file.as_raw_fd());
            nix::unistd::linkat(
                nix::fcntl::AT_FDCWD,
                proc.as_str(),
                dir,
                p(tmp),
                AtFlags::AT_SYMLINK_FOLLOW,
            )
        }
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
fn make_parents(
    root: &Root,
    source: &Path,
    rel: &WirePath,
    owner: bool,
) -> Result<OwnedFd, String> {
    let (parent, _) = beneath::split(rel).map_err(|e| e.to_string())?;
    beneath::make_dirs_with(root, &parent, 0o700, InTheWay::Remove, |so_far, dir| {
        // "." of the new directory's own descriptor: that very inode.
        let h = Handle::open(dir, b".").map_err(|e| DirsError::new("opening", so_far, e))?;
        if let Ok(meta) = fs::symlink_metadata(source.join(p(so_far))) {
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
fn copy_meta(meta: &fs::Metadata, h: &Handle, owner: bool) -> io::Result<()> {
    if owner {
        h.chown(meta.uid(), meta.gid())?;
    }
    h.chmod(meta.mode() & 0o7777)?;
    let (a, m) = times(meta);
    h.set_times(a, m)
}

fn times(meta: &fs::Metadata) -> (TimeSpec, TimeSpec) {
    (
        TimeSpec::new(meta.atime(), meta.atime_nsec()),
        TimeSpec::new(meta.mtime(), meta.mtime_nsec()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_source_swapped_after_its_check_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let (src, dst) = (dir.path().join("s"), dir.path().join("d"));
        fs::create_dir_all(&src).unwrap();
        fs::create_dir_all(&dst).unwrap();
        fs::write(dir.path().join("secret"), b"secret").unwrap();
        fs::write(src.join("f"), b"data").unwrap();
        let checked = fs::symlink_metadata(src.join("f")).unwrap();
        // A second name keeps the checked inode in use: the file system
        // cannot give its number to the files made below.
        fs::hard_link(src.join("f"), dir.path().join("keep")).unwrap();
        let root = Root::open(&dst).unwrap();
        // Swapped for a link to a file outside the source, then for a FIFO
        // (whose open would block without O_NONBLOCK), then for another
        // regular file: none of them is the file checked.
        fs::remove_file(src.join("f")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), src.join("f")).unwrap();
        let copied = copy_file(&src.join("f"), root.fd(), b"f", &checked, false).unwrap();
        assert_eq!(copied, None);
        fs::remove_file(src.join("f")).unwrap();
        nix::unistd::mkfifo(&src.join("f"), Mode::from_bits_truncate(0o600)).unwrap();
        let copied = copy_file(&src.join("f"), root.fd(), b"f", &checked, false).unwrap();
        assert_eq!(copied, None);
        fs::write(src.join("g"), b"other").unwrap();
        fs::rename(src.join("g"), src.join("f")).unwrap();
        let copied = copy_file(&src.join("f"), root.fd(), b"f", &checked, false).unwrap();
        assert_eq!(copied, None);
        assert!(!dst.join("f").exists(), "nothing was written to the target");
        // The file itself is copied.
        let now = fs::symlink_metadata(src.join("f")).unwrap();
        let copied = copy_file(&src.join("f"), root.fd(), b"f", &now, false).unwrap();
        assert_eq!(copied, Some(5));
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
