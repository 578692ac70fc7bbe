//! Target-side file operations that never leave the target: every path is
//! resolved beneath a root directory descriptor without following a symlink
//! (`openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, or one `O_NOFOLLOW`
//! component at a time), and every change is an `*at` call on a directory
//! descriptor or a call on the descriptor of the entry itself — never a name
//! acted on after a check. Shared by `pushd --direct`, pushd's local renames
//! and deletions, and bisync's local replica.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{fstat, fstatat, FileStat, Mode, SFlag};
use nix::sys::time::TimeSpec;
use nix::unistd::{unlinkat, Gid, Uid, UnlinkatFlags};

use crate::wire::path::WirePath;

/// A directory opened once; everything below it is reached through it.
pub struct Root {
    fd: OwnedFd,
    path: PathBuf,
}

impl Root {
    /// Opens the root itself (following symlinks: the root is the user's
    /// choice; only what lies below it is the target's content).
    pub fn open(path: &Path) -> io::Result<Root> {
        let fd = openat(
            nix::fcntl::AT_FDCWD,
            path,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Root {
            fd,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// The directory `rel` (the root itself for `.`) as an `O_PATH`
    /// descriptor. `ELOOP`/`ENOTDIR`/`EXDEV` when a component is a symlink
    /// or not a directory, `ENOENT` when one is missing.
    pub fn dir(&self, rel: &WirePath) -> io::Result<OwnedFd> {
        if rel.is_root() {
            return self.fd.try_clone();
        }
        resolve(&self.fd, rel.as_bytes(), OFlag::O_PATH | OFlag::O_DIRECTORY)
    }

    /// The directory holding `rel`, and `rel`'s last component.
    pub fn parent(&self, rel: &WirePath) -> io::Result<(OwnedFd, Vec<u8>)> {
        let (dir, name) = split(rel)?;
        Ok((self.dir(&dir)?, name))
    }
}

/// `rel`'s parent and last component; `.`, `..` and empty components are
/// refused.
pub fn split(rel: &WirePath) -> io::Result<(WirePath, Vec<u8>)> {
    let bytes = rel.as_bytes();
    if rel.is_root() || bytes.is_empty() || bytes.split(|&b| b == b'/').any(bad_component) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("refusing path {rel:?}"),
        ));
    }
    Ok(match bytes.iter().rposition(|&b| b == b'/') {
        Some(i) => (WirePath::from_bytes(&bytes[..i]), bytes[i + 1..].to_vec()),
        None => (WirePath::root(), bytes.to_vec()),
    })
}

fn bad_component(c: &[u8]) -> bool {
    c.is_empty() || c == b"." || c == b".."
}

/// Opens the relative path `rel` below `dir` without following any symlink
/// and without leaving `dir`: `openat2` where the kernel has it (5.6+),
/// else one `O_NOFOLLOW` component at a time.
pub fn resolve(dir: &OwnedFd, rel: &[u8], flags: OFlag) -> io::Result<OwnedFd> {
    if rel.split(|&b| b == b'/').any(bad_component) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("refusing path {:?}", String::from_utf8_lossy(rel)),
        ));
    }
    use rustix::fs::{Mode as RMode, OFlags, ResolveFlags};
    let oflags =
        OFlags::from_bits_retain((flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC).bits() as _);
    match rustix::fs::openat2(
        dir,
        p(rel),
        oflags,
        RMode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    ) {
        // Older container seccomp profiles answer a system call they do not
        // know with EPERM rather than ENOSYS: the walk below is as safe.
        Err(rustix::io::Errno::NOSYS | rustix::io::Errno::PERM) => {}
        // Another thread's rename can make openat2 ask for a retry.
        Err(rustix::io::Errno::AGAIN) => {}
        r => return r.map_err(io::Error::from),
    }
    let comps: Vec<&[u8]> = rel.split(|&b| b == b'/').collect();
    let mut fd = dir.try_clone()?;
    for (i, comp) in comps.iter().enumerate() {
        let last = i + 1 == comps.len();
        let f = if last {
            flags
        } else {
            OFlag::O_PATH | OFlag::O_DIRECTORY
        };
        fd = openat(
            &fd,
            p(comp),
            f | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
    }
    Ok(fd)
}

/// A byte string as a path.
pub fn p(name: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(name))
}

/// The entry `name` in `dir`, not following a symlink; `None` when absent.
pub fn stat_at(dir: &impl AsFd, name: &[u8]) -> io::Result<Option<FileStat>> {
    match fstatat(dir, p(name), AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

pub fn kind_of(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

/// Removes `name` in `dir`: a symlink itself (never what it points to), a
/// file, or a directory with everything below it, each level reached
/// through descriptors. `false` when nothing was there.
pub fn remove_at(dir: &OwnedFd, name: &[u8]) -> io::Result<bool> {
    let Some(st) = stat_at(dir, name)? else {
        return Ok(false);
    };
    if kind_of(&st) == SFlag::S_IFDIR {
        let sub = openat(
            dir,
            p(name),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        clear_dir(sub)?;
        match unlinkat(dir, p(name), UnlinkatFlags::RemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(true),
            Err(e) => Err(e.into()),
        }
    } else {
        match unlinkat(dir, p(name), UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(true),
            Err(e) => Err(e.into()),
        }
    }
}

/// Empties the directory open as `fd`.
fn clear_dir(fd: OwnedFd) -> io::Result<()> {
    let keep = fd.try_clone()?;
    let mut dir = nix::dir::Dir::from_fd(fd)?;
    let names: Vec<Vec<u8>> = dir
        .iter()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_bytes().to_vec())
        .filter(|n| n != b"." && n != b"..")
        .collect();
    for name in names {
        remove_at(&keep, &name)?;
    }
    Ok(())
}

/// Entries at and below `rel` beneath `root` (0 when it is not there, or a
/// parent is not a real directory: then nothing of it is beneath the root),
/// never following a symlink, counting at most `limit`: what deleting
/// `rel` would remove. A directory swapped for a symlink to a big tree
/// counts as one entry, as its removal removes one.
pub fn count(root: &Root, rel: &WirePath, limit: u64) -> u64 {
    if !rel.is_root() {
        return match root.parent(rel) {
            Ok((dir, name)) => count_in(&dir, &name, limit),
            Err(_) => 0,
        };
    }
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let mut n = 1;
    if let Ok(fd) = openat(root.fd(), ".", flags, Mode::empty()) {
        count_below(fd, limit, &mut n);
    }
    n.min(limit)
}

/// [`count`] for the entry `name` in the directory `dir`.
pub fn count_in(dir: &impl AsFd, name: &[u8], limit: u64) -> u64 {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut n = match stat_at(dir, name) {
        Ok(Some(_)) => 1,
        _ => return 0,
    };
    // A symlink or a file fails O_NOFOLLOW | O_DIRECTORY: one entry.
    if let Ok(fd) = openat(dir, p(name), flags, Mode::empty()) {
        count_below(fd, limit, &mut n);
    }
    n.min(limit)
}

/// Adds the entries below the directory open as `fd` to `n`, up to `limit`.
fn count_below(fd: OwnedFd, limit: u64, n: &mut u64) {
    let Ok(keep) = fd.try_clone() else {
        return;
    };
    let Ok(mut dir) = nix::dir::Dir::from_fd(fd) else {
        return;
    };
    let mut subdirs = Vec::new();
    for entry in dir.iter().filter_map(Result::ok) {
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        *n += 1;
        if *n >= limit {
            return;
        }
        let is_dir = match entry.file_type() {
            Some(t) => t == nix::dir::Type::Directory,
            None => matches!(stat_at(&keep, name), Ok(Some(st)) if kind_of(&st) == SFlag::S_IFDIR),
        };
        if is_dir {
            subdirs.push(name.to_vec());
        }
    }
    drop(dir);
    for name in subdirs {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        if let Ok(sub) = openat(&keep, p(&name), flags, Mode::empty()) {
            count_below(sub, limit, n);
        }
        if *n >= limit {
            return;
        }
    }
}

/// An entry opened without following a symlink, to change its metadata
/// through the descriptor. Directories and files are opened for reading
/// (`O_NONBLOCK`: a FIFO never blocks); when that is refused (an unreadable
/// entry when not root) or for special files, an `O_PATH` descriptor is
/// used through `/proc/self/fd`, which still names that very inode.
pub struct Handle {
    fd: OwnedFd,
    path_only: bool,
    pub stat: FileStat,
}

impl Handle {
    /// Opens `name` in `dir`; `Err(ELOOP)` for a symlink, which is never
    /// followed and has no metadata of its own worth setting here.
    pub fn open(dir: &impl AsFd, name: &[u8]) -> io::Result<Handle> {
        let flags = OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let pfd = openat(dir, p(name), flags | OFlag::O_PATH, Mode::empty())?;
        let st = fstat(&pfd)?;
        let kind = kind_of(&st);
        if kind == SFlag::S_IFLNK {
            return Err(Errno::ELOOP.into());
        }
        if kind == SFlag::S_IFDIR || kind == SFlag::S_IFREG {
            let read = flags | OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY;
            if let Ok(fd) = openat(dir, p(name), read, Mode::empty()) {
                let st2 = fstat(&fd)?;
                if (st2.st_dev, st2.st_ino) == (st.st_dev, st.st_ino) {
                    return Ok(Handle {
                        fd,
                        path_only: false,
                        stat: st2,
                    });
                }
            }
        }
        Ok(Handle {
            fd: pfd,
            path_only: true,
            stat: st,
        })
    }

    /// A handle on a file this process just created and holds open.
    pub fn from_file(file: &std::fs::File) -> io::Result<Handle> {
        let fd = file.as_fd().try_clone_to_owned()?;
        let stat = fstat(&fd)?;
        Ok(Handle {
            fd,
            path_only: false,
            stat,
        })
    }

    pub fn is_dir(&self) -> bool {
        kind_of(&self.stat) == SFlag::S_IFDIR
    }

    fn proc_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
    }

    /// Owner first: a chown clears set-id bits the mode then sets.
    pub fn chown(&self, uid: u32, gid: u32) -> io::Result<()> {
        nix::unistd::fchownat(
            &self.fd,
            "",
            Some(Uid::from_raw(uid)),
            Some(Gid::from_raw(gid)),
            AtFlags::AT_EMPTY_PATH | AtFlags::AT_SYMLINK_NOFOLLOW,
        )?;
        Ok(())
    }

    pub fn chmod(&self, mode: u32) -> io::Result<()> {
        let mode = Mode::from_bits_truncate(mode & 0o7777);
        if self.path_only {
            nix::sys::stat::fchmodat(
                nix::fcntl::AT_FDCWD,
                &self.proc_path(),
                mode,
                nix::sys::stat::FchmodatFlags::FollowSymlink,
            )?;
        } else {
            nix::sys::stat::fchmod(&self.fd, mode)?;
        }
        Ok(())
    }

    pub fn set_times(&self, atime: TimeSpec, mtime: TimeSpec) -> io::Result<()> {
        if self.path_only {
            nix::sys::stat::utimensat(
                nix::fcntl::AT_FDCWD,
                &self.proc_path(),
                &atime,
                &mtime,
                nix::sys::stat::UtimensatFlags::FollowSymlink,
            )?;
        } else {
            nix::sys::stat::futimens(&self.fd, &atime, &mtime)?;
        }
        Ok(())
    }
}

/// What [`make_dirs_with`] does with an entry that is not a directory (a
/// planted symlink, a file) where it needs one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InTheWay {
    /// Stop with its error (`ENOTDIR`/`ELOOP`): the caller decides.
    Refuse,
    /// Remove it (a symlink itself, never what it points to) and make the
    /// directory: the source has a directory there.
    Remove,
}

/// Where [`make_dirs_with`] stopped: what it was doing (`"opening"`,
/// `"removing"`, `"creating"`, or what `on_created` says), on which path
/// below the root, and the error itself, unchanged for callers that
/// branch on it (`is_not_beneath`).
#[derive(Debug)]
pub struct DirsError {
    pub doing: &'static str,
    pub at: Vec<u8>,
    pub error: io::Error,
}

impl DirsError {
    pub fn new(doing: &'static str, at: &[u8], error: io::Error) -> DirsError {
        DirsError {
            doing,
            at: at.to_vec(),
            error,
        }
    }
}

impl From<DirsError> for io::Error {
    fn from(e: DirsError) -> io::Error {
        e.error
    }
}

/// The directory `rel` beneath `root`, creating missing components (mode
/// 0755 before the umask) one at a time without following symlinks; a
/// component that is not a directory is an error (`ENOTDIR`/`ELOOP`).
pub fn make_dirs(root: &Root, rel: &WirePath) -> io::Result<OwnedFd> {
    Ok(make_dirs_with(
        root,
        rel,
        0o755,
        InTheWay::Refuse,
        |_, _| Ok(()),
    )?)
}

/// The one walker that makes the directory `rel` beneath `root`: each
/// component is opened with `O_NOFOLLOW | O_DIRECTORY` from its parent's
/// descriptor, made with `mkdirat(mode)` when missing (before the umask),
/// and what is in the way is refused or removed as `in_the_way` says.
/// `on_created` gets the path so far and the descriptor of each directory
/// this call made (or found made by someone else in between), before the
/// walk goes below it — pushd's `--direct` copies the source twin's owner,
/// mode and times there. `.`, `..` and empty components are refused before
/// anything is made.
pub fn make_dirs_with(
    root: &Root,
    rel: &WirePath,
    mode: u32,
    in_the_way: InTheWay,
    mut on_created: impl FnMut(&[u8], &OwnedFd) -> Result<(), DirsError>,
) -> Result<OwnedFd, DirsError> {
    let mut fd = root
        .fd()
        .try_clone()
        .map_err(|e| DirsError::new("opening", b".", e))?;
    if rel.is_root() {
        return Ok(fd);
    }
    let bytes = rel.as_bytes();
    if bytes.split(|&b| b == b'/').any(bad_component) {
        let e = io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("refusing path {rel:?}"),
        );
        return Err(DirsError::new("resolving", bytes, e));
    }
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut end = 0;
    for comp in bytes.split(|&b| b == b'/') {
        end += usize::from(end > 0) + comp.len();
        let so_far = &bytes[..end];
        match openat(&fd, p(comp), flags, Mode::empty()) {
            Ok(next) => {
                fd = next;
                continue;
            }
            Err(Errno::ENOENT) => {}
            Err(Errno::ENOTDIR | Errno::ELOOP) if in_the_way == InTheWay::Remove => {
                remove_at(&fd, comp).map_err(|e| DirsError::new("removing", so_far, e))?;
            }
            Err(e) => return Err(DirsError::new("opening", so_far, e.into())),
        }
        match nix::sys::stat::mkdirat(&fd, p(comp), Mode::from_bits_truncate(mode)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(DirsError::new("creating", so_far, e.into())),
        }
        fd = openat(&fd, p(comp), flags, Mode::empty())
            .map_err(|e| DirsError::new("opening", so_far, e.into()))?;
        on_created(so_far, &fd)?;
    }
    Ok(fd)
}

/// Whether an error means "a component is not a real directory here" (a
/// symlink, a file, or something escaping the root).
pub fn is_not_beneath(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error().map(Errno::from_raw),
        Some(Errno::ELOOP | Errno::ENOTDIR | Errno::EXDEV)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn never_resolves_through_symlinks_or_out_of_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let (root, outside) = (dir.path().join("root"), dir.path().join("outside"));
        fs::create_dir_all(root.join("a/b")).unwrap();
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("victim"), b"v").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        std::os::unix::fs::symlink("../outside", root.join("a/rel")).unwrap();
        let r = Root::open(&root).unwrap();
        assert!(r.dir(&WirePath::from("a/b")).is_ok());
        for bad in ["link", "a/rel", "link/x"] {
            let e = r.dir(&WirePath::from(bad)).unwrap_err();
            assert!(is_not_beneath(&e), "{bad}: {e}");
        }
        assert!(r.parent(&WirePath::from("../outside/victim")).is_err());
        // Removing the link removes the link, not what it points to.
        let (d, name) = r.parent(&WirePath::from("link")).unwrap();
        assert!(remove_at(&d, &name).unwrap());
        assert!(outside.join("victim").exists());
        // A whole tree goes; a symlink inside it is unlinked, not followed.
        std::os::unix::fs::symlink(&outside, root.join("a/b/in")).unwrap();
        let (d, name) = r.parent(&WirePath::from("a")).unwrap();
        assert!(remove_at(&d, &name).unwrap());
        assert!(!root.join("a").exists());
        assert_eq!(fs::read(outside.join("victim")).unwrap(), b"v");
        assert!(!remove_at(&d, &name).unwrap());
        // Metadata through a handle; a symlink is refused.
        fs::write(root.join("f"), b"").unwrap();
        let h = Handle::open(r.fd(), b"f").unwrap();
        h.chmod(0o640).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(root.join("f")).unwrap().permissions().mode() & 0o7777,
            0o640
        );
        std::os::unix::fs::symlink(outside.join("victim"), root.join("l2")).unwrap();
        assert!(Handle::open(r.fd(), b"l2").is_err());
    }

    #[test]
    fn counts_beneath_the_root_never_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let (root, outside) = (dir.path().join("root"), dir.path().join("outside"));
        fs::create_dir_all(root.join("d/e")).unwrap();
        fs::write(root.join("d/e/f"), b"").unwrap();
        fs::write(root.join("top"), b"").unwrap();
        fs::create_dir_all(outside.join("x")).unwrap();
        for i in 0..50 {
            fs::write(outside.join(format!("x/{i}")), b"").unwrap();
        }
        std::os::unix::fs::symlink(&outside, root.join("d/link")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("s")).unwrap();
        let r = Root::open(&root).unwrap();
        let n = |rel: &str| count(&r, &WirePath::from(rel), u64::MAX);
        // root, d, d/e, d/e/f, d/link, top, s
        assert_eq!(n("."), 7);
        assert_eq!((n("d"), n("d/e"), n("top")), (4, 2, 1));
        // A symlink is one entry, and nothing is beneath the root through it.
        assert_eq!((n("s"), n("s/x"), n("d/link/x"), n("none")), (1, 0, 0, 0));
        assert_eq!(count(&r, &WirePath::root(), 3), 3);
        // The root itself may be reached through a symlink: the user's choice.
        let via = dir.path().join("via");
        std::os::unix::fs::symlink(&root, &via).unwrap();
        assert_eq!(
            count(&Root::open(&via).unwrap(), &WirePath::root(), u64::MAX),
            7
        );
    }

    #[test]
    fn make_dirs_refuses_or_removes_what_is_in_the_way_never_following_it() {
        let dir = tempfile::tempdir().unwrap();
        let (root, outside) = (dir.path().join("root"), dir.path().join("outside"));
        fs::create_dir_all(root.join("keep")).unwrap();
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("victim"), b"v").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("keep/link")).unwrap();
        fs::write(root.join("file"), b"f").unwrap();
        let r = Root::open(&root).unwrap();
        let outside_before = || {
            let mut names: Vec<_> = fs::read_dir(&outside)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            names.sort();
            names
        };
        let before = outside_before();

        // Refuse: the symlink and the file stay, nothing is made through them.
        let e = make_dirs(&r, &WirePath::from("keep/link/x")).unwrap_err();
        assert!(is_not_beneath(&e), "{e}");
        let e = make_dirs(&r, &WirePath::from("file/x")).unwrap_err();
        assert!(is_not_beneath(&e), "{e}");
        assert!(fs::symlink_metadata(root.join("keep/link"))
            .unwrap()
            .file_type()
            .is_symlink());
        assert!(root.join("file").is_file());
        assert!(make_dirs(&r, &WirePath::from("keep/../x")).is_err());
        assert!(!root.join("keep/x").exists() && !dir.path().join("x").exists());

        // Remove: the symlink itself goes, a real directory takes its place,
        // and only the directories made here are reported, each once.
        let mut made = Vec::new();
        let fd = make_dirs_with(
            &r,
            &WirePath::from("keep/link/x"),
            0o700,
            InTheWay::Remove,
            |so_far, d| {
                assert_eq!(kind_of(&fstat(d).unwrap()), SFlag::S_IFDIR);
                made.push(String::from_utf8(so_far.to_vec()).unwrap());
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(made, ["keep/link", "keep/link/x"]);
        let st = fstat(&fd).unwrap();
        let real = fs::symlink_metadata(root.join("keep/link/x")).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!((st.st_dev, st.st_ino), (real.dev(), real.ino()));
        assert!(fs::symlink_metadata(root.join("keep/link"))
            .unwrap()
            .file_type()
            .is_dir());
        // A file in the way goes too.
        make_dirs_with(
            &r,
            &WirePath::from("file"),
            0o755,
            InTheWay::Remove,
            |_, _| Ok(()),
        )
        .unwrap();
        assert!(root.join("file").is_dir());
        // The outside is untouched.
        assert_eq!(outside_before(), before);
        assert_eq!(fs::read(outside.join("victim")).unwrap(), b"v");

        // A second walk makes nothing; on_created's error stops the walk.
        let mut again = 0;
        make_dirs_with(
            &r,
            &WirePath::from("keep/link/x"),
            0o700,
            InTheWay::Remove,
            |_, _| {
                again += 1;
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(again, 0);
        let e = make_dirs_with(
            &r,
            &WirePath::from("new/deeper"),
            0o755,
            InTheWay::Remove,
            |at, _| Err(DirsError::new("refusing", at, Errno::EPERM.into())),
        )
        .unwrap_err();
        assert_eq!((e.doing, e.at.as_slice()), ("refusing", &b"new"[..]));
        assert!(!root.join("new/deeper").exists());
    }
}
