//! `pushd --direct`: listed paths applied to a local target with plain file
//! system calls instead of an rsync process (lsyncd's `default.direct`):
//! files copied to a temporary name and renamed into place, directories and
//! symlinks recreated, deletions removed; mode, times and (as root) owner
//! kept. Full syncs still go through rsync.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::sys::stat::{utimensat, UtimensatFlags};
use nix::sys::time::TimeSpec;

use crate::wirepath::WirePath;

/// What a direct application did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Done {
    pub files: u64,
    pub bytes: u64,
    pub deleted: u64,
}

/// Brings each of `paths` on `target` to its state under `source`; a path
/// gone from the source is removed when `delete` is set. An error names the
/// path; what was done before it stays done (each step is atomic).
pub fn apply_paths(
    source: &Path,
    target: &Path,
    paths: &[WirePath],
    delete: bool,
) -> Result<Done, String> {
    let mut done = Done::default();
    let mut touched_dirs: Vec<WirePath> = Vec::new();
    let owner = nix::unistd::geteuid().is_root();
    for p in paths {
        let (s, t) = (join(source, p), join(target, p));
        let meta = match fs::symlink_metadata(&s) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if delete && remove(&t).map_err(|e| at("removing", &t, e))? {
                    done.deleted += 1;
                    touched_dirs.extend(p.parent());
                }
                continue;
            }
            Err(e) => return Err(at("reading", &s, e)),
        };
        make_parents(source, target, p, owner)?;
        touched_dirs.extend(p.parent());
        let kind = meta.file_type();
        if kind.is_dir() {
            if fs::symlink_metadata(&t).is_ok_and(|m| !m.is_dir()) {
                remove(&t).map_err(|e| at("removing", &t, e))?;
            }
            match fs::create_dir(&t) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(at("creating", &t, e)),
            }
            copy_meta(&meta, &t, owner)?;
        } else if kind.is_symlink() {
            let link = fs::read_link(&s).map_err(|e| at("reading", &s, e))?;
            let tmp = temp_name(&t);
            let _ = fs::remove_file(&tmp);
            std::os::unix::fs::symlink(&link, &tmp).map_err(|e| at("creating", &tmp, e))?;
            replace(&tmp, &t)?;
            copy_meta(&meta, &t, owner)?;
        } else if kind.is_file() {
            let same = fs::symlink_metadata(&t).is_ok_and(|m| {
                m.is_file()
                    && m.len() == meta.len()
                    && m.mtime() == meta.mtime()
                    && m.mtime_nsec() == meta.mtime_nsec()
            });
            if !same {
                let tmp = temp_name(&t);
                match fs::copy(&s, &tmp) {
                    Ok(n) => {
                        done.files += 1;
                        done.bytes += n;
                    }
                    // Vanished meanwhile: its delete event follows (rsync's 24).
                    Err(e) if e.kind() == io::ErrorKind::NotFound && !s.exists() => continue,
                    Err(e) => {
                        let _ = fs::remove_file(&tmp);
                        return Err(at("copying to", &tmp, e));
                    }
                }
                copy_meta(&meta, &tmp, owner)?;
                replace(&tmp, &t)?;
            } else {
                copy_meta(&meta, &t, owner)?;
            }
        } else {
            crate::log_warn!(
                "{}: a special file; --direct copies files, directories and symlinks only",
                s.display()
            );
        }
    }
    // Adding or removing entries changed the target directories' times.
    touched_dirs.sort();
    touched_dirs.dedup();
    for d in touched_dirs {
        if let (Ok(meta), t) = (fs::symlink_metadata(join(source, &d)), join(target, &d)) {
            if meta.is_dir() && t.is_dir() {
                set_times(&meta, &t)?;
            }
        }
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

fn at(what: &str, path: &Path, e: io::Error) -> String {
    format!("{what} {}: {e}", path.display())
}

/// Removes a file, link or whole directory; false when nothing was there.
/// Removes `path` (a whole tree for a directory); `false` when it was not
/// there. Any error but "not found" is an error.
pub(crate) fn remove(path: &Path) -> io::Result<bool> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path).map(|()| true),
        Ok(_) => fs::remove_file(path).map(|()| true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// `.NAME.syncpipe-PID` next to `path`: same directory, so the final rename
/// is atomic.
fn temp_name(path: &Path) -> PathBuf {
    let mut name = OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(format!(".syncpipe-{}", std::process::id()));
    path.with_file_name(name)
}

/// Renames `tmp` over `dst`; a directory in the way is removed first.
fn replace(tmp: &Path, dst: &Path) -> Result<(), String> {
    if fs::symlink_metadata(dst).is_ok_and(|m| m.is_dir()) {
        fs::remove_dir_all(dst).map_err(|e| at("removing", dst, e))?;
    }
    fs::rename(tmp, dst).map_err(|e| {
        let _ = fs::remove_file(tmp);
        at("renaming into", dst, e)
    })
}

/// Creates missing ancestors of `p` on the target like their source twins.
fn make_parents(source: &Path, target: &Path, p: &WirePath, owner: bool) -> Result<(), String> {
    let mut missing = Vec::new();
    let mut cur = p.parent();
    while let Some(dir) = cur {
        if dir.is_root() || join(target, &dir).is_dir() {
            break;
        }
        cur = dir.parent();
        missing.push(dir);
    }
    for dir in missing.into_iter().rev() {
        let t = join(target, &dir);
        match fs::create_dir(&t) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(at("creating", &t, e)),
        }
        if let Ok(meta) = fs::symlink_metadata(join(source, &dir)) {
            copy_meta(&meta, &t, owner)?;
        }
    }
    Ok(())
}

/// Owner (as root), mode and times of `meta` onto `path` (not following a
/// symlink). Owner first: chown clears set-id bits.
fn copy_meta(meta: &fs::Metadata, path: &Path, owner: bool) -> Result<(), String> {
    if owner {
        std::os::unix::fs::lchown(path, Some(meta.uid()), Some(meta.gid()))
            .map_err(|e| at("changing the owner of", path, e))?;
    }
    if !meta.file_type().is_symlink() {
        fs::set_permissions(path, fs::Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(|e| at("changing the mode of", path, e))?;
    }
    set_times(meta, path)
}

fn set_times(meta: &fs::Metadata, path: &Path) -> Result<(), String> {
    let atime = TimeSpec::new(meta.atime(), meta.atime_nsec());
    let mtime = TimeSpec::new(meta.mtime(), meta.mtime_nsec());
    utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &atime,
        &mtime,
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(|e| at("setting the times of", path, io::Error::from(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
