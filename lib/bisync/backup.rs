//! Backups of what a sync replaces or deletes on one replica
//! (`--backup-dir-a/-b DIR`): right before a file or symlink is replaced or
//! removed, it is hard-linked to `DIR/<run's UTC time>/<its path>` below the
//! replica's root. A link costs no copy and keeps exactly the old version
//! (bisync replaces by renaming a new file over the old one and deletes by
//! unlinking, so the linked inode is never written to). DIR is excluded
//! from the sync on both replicas. Run folders older than `--backup-keep`
//! are deleted before a run changes anything.
//!
//! Everything here acts on descriptors beneath the root, never following a
//! symlink, like the rest of [`super::local`].

use std::ffi::{CStr, OsStr};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{mkdirat, Mode};
use nix::unistd::{linkat, unlinkat, UnlinkatFlags};
use serde::{Deserialize, Serialize};

use crate::wire::path::WirePath;

/// One replica's backup settings, as sent to a remote replica.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backup {
    /// The backup directory, relative to the replica's root.
    pub dir: WirePath,
    /// Run folders older than this many seconds are deleted before a run
    /// changes anything; `None` keeps them all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_secs: Option<u64>,
}

/// The settings for one run: where this run's versions go.
#[derive(Clone, Debug)]
pub struct Active {
    pub spec: Backup,
    /// This run's folder name, `YYYYMMDDTHHMMSSZ`.
    pub stamp: String,
}

/// `YYYYMMDDTHHMMSSZ`: sorts by time, no characters a shell or a Windows
/// share would mind.
pub fn stamp(now: SystemTime) -> String {
    humantime::format_rfc3339_seconds(now)
        .to_string()
        .chars()
        .filter(|c| *c != '-' && *c != ':')
        .collect()
}

fn parse_stamp(name: &[u8]) -> Option<SystemTime> {
    let s = std::str::from_utf8(name).ok()?;
    if s.len() != 16 || !s.ends_with('Z') {
        return None;
    }
    let text = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &s[0..4],
        &s[4..6],
        &s[6..8],
        &s[9..11],
        &s[11..13],
        &s[13..15]
    );
    humantime::parse_rfc3339(&text).ok()
}

fn p(name: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(name))
}

const DIR_FLAGS: OFlag = OFlag::O_PATH
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

/// Opens (creating what is missing) the directory `rel` below `base`, one
/// component at a time without following symlinks.
fn open_dirs(base: &OwnedFd, rel: &[u8], create: bool) -> io::Result<OwnedFd> {
    let mut fd = base.try_clone()?;
    for comp in rel.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
        if comp == b"." || comp == b".." {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "backup paths stay below the root",
            ));
        }
        if create {
            match mkdirat(&fd, p(comp), Mode::from_bits_truncate(0o700)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(e.into()),
            }
        }
        fd = openat(&fd, p(comp), DIR_FLAGS, Mode::empty())?;
    }
    Ok(fd)
}

/// Keeps the entry `name` in `dir` (the replica's `rel`) as
/// `<backup>/<stamp>/<rel>`. A name already taken in this run's folder
/// (the same path replaced twice in one second) gets `.~2~`, `.~3~`, ….
pub fn keep(
    root: &OwnedFd,
    active: &Active,
    dir: &OwnedFd,
    name: &[u8],
    rel: &WirePath,
) -> io::Result<()> {
    let bytes = rel.as_bytes();
    let (sub, leaf) = match bytes.iter().rposition(|&b| b == b'/') {
        Some(i) => (&bytes[..i], &bytes[i + 1..]),
        None => (&b""[..], bytes),
    };
    let mut folder = active.spec.dir.as_bytes().to_vec();
    folder.push(b'/');
    folder.extend_from_slice(active.stamp.as_bytes());
    folder.push(b'/');
    folder.extend_from_slice(sub);
    let target = open_dirs(root, &folder, true)?;
    let mut candidate = leaf.to_vec();
    for n in 2.. {
        match linkat(dir, p(name), &target, p(&candidate), AtFlags::empty()) {
            Err(Errno::EEXIST) => {
                candidate = leaf.to_vec();
                candidate.extend_from_slice(format!(".~{n}~").as_bytes());
            }
            r => return r.map_err(io::Error::from),
        }
    }
    unreachable!("the loop returns")
}

/// Deletes the run folders of `spec.dir` older than `keep_secs` at `now`;
/// returns how many. Folders whose names are not stamps are left alone.
pub fn prune(root: &OwnedFd, spec: &Backup, now: SystemTime) -> io::Result<u64> {
    let Some(keep) = spec.keep_secs else {
        return Ok(0);
    };
    let cutoff = now
        .checked_sub(Duration::from_secs(keep))
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let base = match open_dirs(root, spec.dir.as_bytes(), false) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(Errno::ENOENT as i32) => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut removed = 0;
    for name in list(&base)? {
        if parse_stamp(&name).is_some_and(|t| t < cutoff) {
            remove_tree(&base, &name)?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// The names in a directory (not `.` and `..`).
fn list(dir: &OwnedFd) -> io::Result<Vec<Vec<u8>>> {
    let fd = openat(
        dir,
        p(b"."),
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let mut d = nix::dir::Dir::from_fd(fd)?;
    let mut out = Vec::new();
    for e in d.iter() {
        let e = e?;
        let n: &CStr = e.file_name();
        let n = n.to_bytes();
        if n != b"." && n != b".." {
            out.push(n.to_vec());
        }
    }
    Ok(out)
}

/// Removes `name` in `dir` and everything below it, never following a
/// symlink.
fn remove_tree(dir: &OwnedFd, name: &[u8]) -> io::Result<()> {
    match unlinkat(dir, p(name), UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => return Ok(()),
        Err(Errno::EISDIR | Errno::EPERM) => {}
        Err(e) => return Err(e.into()),
    }
    let sub = openat(dir, p(name), DIR_FLAGS, Mode::empty())?;
    for child in list(&sub)? {
        remove_tree(&sub, &child)?;
    }
    debug_assert!(sub.as_fd().as_raw_fd() >= 0);
    match unlinkat(dir, p(name), UnlinkatFlags::RemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Opens a replica root for [`keep`] and [`prune`].
pub fn open_root(root: &Path) -> io::Result<OwnedFd> {
    Ok(openat(
        nix::fcntl::AT_FDCWD,
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?)
}

/// The exclude pattern that keeps `dir` (relative to the roots) out of the
/// sync: anchored, with gitignore's special characters escaped.
pub fn exclude_pattern(dir: &str) -> String {
    let mut out = String::from("/");
    for c in dir.trim_matches('/').chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\' | '!' | '#') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('/');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn keeps_old_versions_and_prunes_old_runs() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fs::create_dir(root.join("d")).unwrap();
        fs::write(root.join("d/f"), b"old").unwrap();
        let rfd = open_root(root).unwrap();
        let dfd = open_dirs(&rfd, b"d", false).unwrap();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let active = Active {
            spec: Backup {
                dir: WirePath::from(".bak/x"),
                keep_secs: Some(86_400),
            },
            stamp: stamp(now),
        };
        assert_eq!(active.stamp, "20270115T080000Z");
        keep(&rfd, &active, &dfd, b"f", &WirePath::from("d/f")).unwrap();
        keep(&rfd, &active, &dfd, b"f", &WirePath::from("d/f")).unwrap();
        // Replaced the way bisync does: a new file renamed over it.
        fs::write(root.join("d/new"), b"new").unwrap();
        fs::rename(root.join("d/new"), root.join("d/f")).unwrap();
        let kept = root.join(".bak/x/20270115T080000Z/d");
        assert_eq!(fs::read(kept.join("f")).unwrap(), b"old");
        assert_eq!(fs::read(kept.join("f.~2~")).unwrap(), b"old");
        // An older run, a folder that is no run, and a symlink planted to
        // lead the removal out of the backup directory.
        let old = root.join(".bak/x/20260101T000000Z");
        fs::create_dir_all(old.join("deep")).unwrap();
        fs::write(old.join("deep/v"), b"v").unwrap();
        fs::create_dir(root.join("outside")).unwrap();
        fs::write(root.join("outside/precious"), b"p").unwrap();
        std::os::unix::fs::symlink(root.join("outside"), old.join("link")).unwrap();
        fs::create_dir(root.join(".bak/x/notes")).unwrap();
        assert_eq!(prune(&rfd, &active.spec, now).unwrap(), 1);
        assert!(!old.exists());
        assert!(kept.join("f").exists());
        assert!(root.join(".bak/x/notes").exists());
        assert_eq!(fs::read(root.join("outside/precious")).unwrap(), b"p");
        // Without a retention nothing goes.
        let forever = Backup {
            keep_secs: None,
            ..active.spec.clone()
        };
        let far = now + Duration::from_secs(10 * 365 * 86_400);
        assert_eq!(prune(&rfd, &forever, far).unwrap(), 0);
        assert_eq!(prune(&rfd, &active.spec, far).unwrap(), 1);
    }

    #[test]
    fn stamps_round_trip_and_patterns_are_escaped() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        assert_eq!(parse_stamp(stamp(t).as_bytes()), Some(t));
        assert_eq!(parse_stamp(b"notes"), None);
        assert_eq!(exclude_pattern(".bisync-backup/"), "/.bisync-backup/");
        assert_eq!(exclude_pattern("a*b[1]"), "/a\\*b\\[1\\]/");
    }
}
