//! Reading a local replica: walking the tree without following symlinks,
//! turning stat(2) results into entries, hashing file content, and leaving
//! out excluded paths and bisync's own temporary files.

use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::Context;

use super::entry::{Entry, Hash, Kind};
use super::planner::Scan;
use crate::cli::exit::{coded, Code};
use crate::exclude::Excludes;
use crate::wire::path::WirePath;

/// Temporary files bisync writes before renaming them into place:
/// `.~bisync.<pid>.<n>.tmp`. Scans never report them.
pub const TEMP_PREFIX: &str = ".~bisync.";
pub const TEMP_SUFFIX: &str = ".tmp";

pub fn is_temp_name(name: &[u8]) -> bool {
    name.starts_with(TEMP_PREFIX.as_bytes()) && name.ends_with(TEMP_SUFFIX.as_bytes())
}

/// The pid in a temporary file's name, to tell a live writer's file from one
/// a killed run left behind.
fn temp_owner(name: &[u8]) -> Option<i32> {
    let inner = &name[TEMP_PREFIX.len()..name.len() - TEMP_SUFFIX.len()];
    let pid = inner.split(|&b| b == b'.').next()?;
    std::str::from_utf8(pid).ok()?.parse().ok()
}

/// An entry from lstat(2) data; `None` for sockets, fifos and devices,
/// which bisync leaves alone.
pub fn entry_from(meta: &fs::Metadata, target: Option<WirePath>) -> Option<Entry> {
    let ft = meta.file_type();
    let kind = if ft.is_file() {
        Kind::File
    } else if ft.is_dir() {
        Kind::Dir
    } else if ft.is_symlink() {
        Kind::Symlink
    } else {
        return None;
    };
    Some(Entry {
        kind,
        size: if kind == Kind::File { meta.size() } else { 0 },
        mtime: if kind == Kind::File {
            meta.mtime()
                .saturating_mul(1_000_000_000)
                .saturating_add(meta.mtime_nsec())
        } else {
            0
        },
        mode: if kind == Kind::Symlink {
            0
        } else {
            meta.mode() & 0o7777
        },
        uid: meta.uid(),
        gid: meta.gid(),
        ino: meta.ino(),
        target: target.map(Box::new),
        hash: None,
    })
}

/// The same from a raw stat buffer (the `*at` calls return those).
pub fn entry_from_stat(st: &nix::sys::stat::FileStat, target: Option<WirePath>) -> Option<Entry> {
    let fmt = st.st_mode & nix::libc::S_IFMT;
    let kind = match fmt {
        nix::libc::S_IFREG => Kind::File,
        nix::libc::S_IFDIR => Kind::Dir,
        nix::libc::S_IFLNK => Kind::Symlink,
        _ => return None,
    };
    Some(Entry {
        kind,
        size: if kind == Kind::File {
            st.st_size as u64
        } else {
            0
        },
        mtime: if kind == Kind::File {
            st.st_mtime
                .saturating_mul(1_000_000_000)
                .saturating_add(st.st_mtime_nsec)
        } else {
            0
        },
        mode: if kind == Kind::Symlink {
            0
        } else {
            st.st_mode & 0o7777
        },
        uid: st.st_uid,
        gid: st.st_gid,
        ino: st.st_ino,
        target: target.map(Box::new),
        hash: None,
    })
}

/// The hash of the regular file at `path`, never following a symlink nor
/// blocking on a FIFO swapped in since the lstat: those are `NotFound`
/// (gone as the file that was listed).
pub fn hash_file(path: &Path) -> io::Result<Hash> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(nix::libc::ELOOP | nix::libc::ENOTDIR) => io::ErrorKind::NotFound.into(),
            _ => e,
        })?;
    if !file.metadata()?.is_file() {
        return Err(io::ErrorKind::NotFound.into());
    }
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(file)?;
    Ok(Hash::from(hasher.finalize()))
}

/// Checks that `root` is a readable directory (a symlink to one is
/// followed, for the root only). Exit code 3 otherwise.
pub fn check_root(root: &Path) -> anyhow::Result<()> {
    let meta = fs::metadata(root).map_err(|e| {
        coded(
            Code::NoSource,
            format!(
                "replica root {} is not usable: {e}; is the disk mounted?",
                root.display()
            ),
        )
    })?;
    if !meta.is_dir() {
        return Err(coded(
            Code::NoSource,
            format!("replica root {} is not a directory", root.display()),
        ));
    }
    fs::read_dir(root).map_err(|e| {
        coded(
            Code::NoSource,
            format!("replica root {} cannot be read: {e}", root.display()),
        )
    })?;
    Ok(())
}

/// Every entry under `root`. A directory that cannot be read fails the
/// scan: its entries would otherwise look deleted.
pub fn scan(root: &Path, excludes: &Excludes, checksum: bool) -> anyhow::Result<Scan> {
    check_root(root)?;
    let mut out = Scan::new();
    walk(root, excludes, checksum, WirePath::root(), &mut out)?;
    Ok(out)
}

/// The entries at and below each of `paths` as they are now, for re-reading
/// only what changed: a path that is gone, excluded, or no longer reachable
/// through real directories (an ancestor was removed or replaced by a
/// symlink) has none. The root (`.`) among them means the whole tree.
pub fn scan_paths(
    root: &Path,
    excludes: &Excludes,
    checksum: bool,
    paths: &[WirePath],
) -> anyhow::Result<Scan> {
    check_root(root)?;
    let mut out = Scan::new();
    for path in tops(paths) {
        if path.is_root() {
            walk(root, excludes, checksum, path, &mut out)?;
            continue;
        }
        // Paths come from the other side (or its watcher): never let one
        // name something outside this replica (`/etc`, `a/../..`).
        let bytes = path.as_bytes();
        anyhow::ensure!(
            !bytes.starts_with(b"/")
                && bytes
                    .split(|&b| b == b'/')
                    .all(|c| !(c.is_empty() || c == b"." || c == b"..")),
            "refusing to scan {path}: not a path inside the replica"
        );
        if !reachable(root, excludes, &path)? {
            continue;
        }
        let abs = root.join(path.as_path());
        let meta = match fs::symlink_metadata(&abs) {
            Ok(m) => m,
            Err(e) if gone(&e) => continue,
            Err(e) => return Err(e).with_context(|| format!("stat {}", abs.display())),
        };
        let Some(entry) = read_entry(&abs, &path, &meta, excludes, checksum)? else {
            continue;
        };
        let is_dir = entry.is_dir();
        out.insert(path.clone(), entry);
        if is_dir {
            walk(root, excludes, checksum, path, &mut out)?;
        }
    }
    Ok(out)
}

/// `paths` without repeats and without paths below another one of them.
pub fn tops(paths: &[WirePath]) -> Vec<WirePath> {
    let set: std::collections::BTreeSet<&WirePath> = paths.iter().collect();
    if set.iter().any(|p| p.is_root()) {
        return vec![WirePath::root()];
    }
    set.iter()
        .filter(|p| {
            let mut up = p.parent();
            while let Some(a) = up {
                if !a.is_root() && set.contains(&a) {
                    return false;
                }
                up = a.parent();
            }
            true
        })
        .map(|p| (*p).clone())
        .collect()
}

fn gone(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

/// Whether a full scan would reach `path`: every directory above it is a
/// real directory (no symlink), neither excluded nor bisync's temporary file.
fn reachable(root: &Path, excludes: &Excludes, path: &WirePath) -> anyhow::Result<bool> {
    let bytes = path.as_bytes();
    let name = bytes.rsplit(|&b| b == b'/').next().unwrap_or(bytes);
    if is_temp_name(name) {
        return Ok(false);
    }
    let mut ancestors = Vec::new();
    let mut up = path.parent();
    while let Some(a) = up {
        if a.is_root() {
            break;
        }
        up = a.parent();
        ancestors.push(a);
    }
    for dir in ancestors.iter().rev() {
        let abs = root.join(dir.as_path());
        match fs::symlink_metadata(&abs) {
            Ok(m) if m.is_dir() && !excludes.is_excluded(dir.as_path(), true) => {}
            Ok(_) => return Ok(false),
            Err(e) if gone(&e) => return Ok(false),
            Err(e) => return Err(e).with_context(|| format!("stat {}", abs.display())),
        }
    }
    Ok(true)
}

/// The entry for `abs` (at `rel`) from its lstat data: `None` when it is
/// excluded, not a file, directory or symlink, or vanished meanwhile.
fn read_entry(
    abs: &Path,
    rel: &WirePath,
    meta: &fs::Metadata,
    excludes: &Excludes,
    checksum: bool,
) -> anyhow::Result<Option<Entry>> {
    if excludes.is_excluded(rel.as_path(), meta.is_dir()) {
        return Ok(None);
    }
    let target = if meta.file_type().is_symlink() {
        match fs::read_link(abs) {
            Ok(t) => Some(WirePath::from(t)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("readlink {}", abs.display())),
        }
    } else {
        None
    };
    let Some(mut entry) = entry_from(meta, target) else {
        return Ok(None);
    };
    if checksum && entry.kind == Kind::File {
        match hash_file(abs) {
            Ok(h) => entry.hash = Some(h),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("hashing {}", abs.display())),
        }
    }
    Ok(Some(entry))
}

/// Adds every entry below the directory `top` to `out`.
fn walk(
    root: &Path,
    excludes: &Excludes,
    checksum: bool,
    top: WirePath,
    out: &mut Scan,
) -> anyhow::Result<()> {
    let mut stack = vec![top];
    while let Some(dir) = stack.pop() {
        let abs = if dir.is_root() {
            root.to_path_buf()
        } else {
            root.join(dir.as_path())
        };
        let listing = match fs::read_dir(&abs) {
            Ok(l) => l,
            // Removed since its parent was listed: its entries are gone too.
            Err(e) if gone(&e) && !dir.is_root() => {
                out.remove(&dir);
                continue;
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "reading directory {}; nothing was changed (fix its permissions or \
                         --exclude it)",
                        abs.display()
                    )
                })
            }
        };
        for item in listing {
            let item = item.with_context(|| format!("reading directory {}", abs.display()))?;
            let name = item.file_name();
            let name = name.as_bytes();
            if is_temp_name(name) {
                remove_stale_temp(&item.path(), name);
                continue;
            }
            let rel = dir.join(name);
            let meta = match item.metadata() {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e).with_context(|| format!("stat {}", item.path().display())),
            };
            let Some(entry) = read_entry(&item.path(), &rel, &meta, excludes, checksum)? else {
                continue;
            };
            if entry.is_dir() {
                stack.push(rel.clone());
            }
            out.insert(rel, entry);
        }
    }
    Ok(())
}

/// A temporary file whose writer is gone (a killed run) is removed.
fn remove_stale_temp(path: &Path, name: &[u8]) {
    let Some(pid) = temp_owner(name) else { return };
    // EPERM: alive, another user's (only ESRCH says the writer is gone).
    let gone = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
        == Err(nix::errno::Errno::ESRCH);
    if gone {
        crate::log_debug!("removing {} left by an interrupted run", path.display());
        let _ = fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn scans_without_following_links_and_skips_excluded_and_temp() {
        let tmp = tempfile::tempdir().unwrap();
        let r = tmp.path();
        fs::create_dir_all(r.join("d/e")).unwrap();
        fs::write(r.join("d/e/f"), b"hello").unwrap();
        fs::write(r.join("x.tmp"), b"").unwrap();
        symlink("/etc", r.join("link")).unwrap();
        fs::write(r.join(".~bisync.999999999.1.tmp"), b"stale").unwrap();
        fs::write(
            r.join(OsStrExt::from_bytes(b"\xff name" as &[u8]) as &std::ffi::OsStr),
            b"",
        )
        .unwrap();
        let ex = Excludes::new(&["*.tmp".to_string()], &[] as &[&Path]).unwrap();
        let scan = scan(r, &ex, true).unwrap();
        let names: Vec<String> = scan.keys().map(|p| p.to_string()).collect();
        assert_eq!(names, ["d", "d/e", "d/e/f", "link", "\u{fffd} name"]);
        let f = &scan[&WirePath::from("d/e/f")];
        assert_eq!((f.kind, f.size), (Kind::File, 5));
        assert_eq!(f.hash, Some(Hash::of(b"hello")));
        assert_eq!(
            scan[&WirePath::from("link")].target,
            Some(Box::new(WirePath::from("/etc")))
        );
        // The stale temporary file of a dead pid was cleaned up.
        assert!(!r.join(".~bisync.999999999.1.tmp").exists());
    }

    #[test]
    fn scan_paths_reads_only_the_given_subtrees() {
        let tmp = tempfile::tempdir().unwrap();
        let r = tmp.path();
        fs::create_dir_all(r.join("d/e")).unwrap();
        fs::write(r.join("d/e/f"), b"x").unwrap();
        fs::write(r.join("top"), b"y").unwrap();
        fs::write(r.join("skip.tmp"), b"").unwrap();
        symlink("d", r.join("via")).unwrap();
        let ex = Excludes::new(&["*.tmp".to_string()], &[] as &[&Path]).unwrap();
        let paths: Vec<WirePath> = ["d", "d/e/f", "gone", "via/e", "skip.tmp", "top/x"]
            .into_iter()
            .map(WirePath::from)
            .collect();
        let got = scan_paths(r, &ex, false, &paths).unwrap();
        let names: Vec<String> = got.keys().map(|p| p.to_string()).collect();
        // "via/e" goes through a symlink, "top/x" through a file: not there.
        assert_eq!(names, ["d", "d/e", "d/e/f"]);
        let all = scan_paths(r, &ex, false, &[WirePath::from("top"), WirePath::root()]).unwrap();
        assert_eq!(all, scan(r, &ex, false).unwrap());
        assert_eq!(
            tops(&[
                WirePath::from("a/b"),
                WirePath::from("a"),
                WirePath::from("a b")
            ]),
            [WirePath::from("a"), WirePath::from("a b")]
        );
    }

    #[test]
    fn scan_paths_refuses_paths_outside_the_replica() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("r");
        fs::create_dir(&root).unwrap();
        fs::write(t.path().join("secret"), b"s").unwrap();
        for bad in ["/etc", "../secret", "a/../../secret", "./x"] {
            let got = scan_paths(&root, &Excludes::default(), true, &[WirePath::from(bad)]);
            assert!(got.is_err(), "{bad} was scanned");
        }
        assert!(scan_paths(
            &root,
            &Excludes::default(),
            false,
            &[WirePath::from("fine")]
        )
        .is_ok());
    }

    #[test]
    fn a_missing_root_is_code_3() {
        let err = scan(Path::new("/nonexistent/x"), &Excludes::default(), false).unwrap_err();
        assert_eq!(crate::cli::exit::code_of(&err), Code::NoSource);
        assert!(format!("{err:#}").contains("/nonexistent/x"));
    }
}
