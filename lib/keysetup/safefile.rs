//! Safe edits under `~/.ssh`: the directory is checked before anything is
//! written (a symlink elsewhere or another owner is refused with the
//! reason), and a file is replaced atomically (temporary file in the same
//! directory, fsync, rename, fsync of the directory) after the old one is
//! kept as `NAME.bak`.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, Context};

/// Why an ssh directory or file cannot be used as it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    Symlink { target: PathBuf },
    NotDirectory,
    NotFile,
    Owner { uid: u32, expected: u32 },
}

impl Problem {
    /// One line: what is wrong with `path` and what to do.
    pub fn describe(&self, path: &Path) -> String {
        let p = path.display();
        match self {
            Problem::Symlink { target } => format!(
                "{p} is a symlink to {}; refusing to edit through it (replace the link by the directory it points to)",
                target.display()
            ),
            Problem::NotDirectory => format!("{p} is not a directory; move it away"),
            Problem::NotFile => format!("{p} is not a regular file; move it away"),
            Problem::Owner { uid, expected } => format!(
                "{p} belongs to uid {uid}, not to uid {expected} running this; fix it as root: chown {expected} {p}"
            ),
        }
    }
}

/// What is found at a path that should be the ssh directory or one of its files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Found {
    Missing,
    Present { mode: u32 },
}

/// Checks `path` without following a final symlink: must be a directory
/// (or file when `dir` is false) owned by `uid`. Modes are not judged here.
pub fn inspect(path: &Path, dir: bool, uid: u32) -> Result<Found, Problem> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Found::Missing),
        Err(_) => return Err(Problem::NotFile),
    };
    if meta.file_type().is_symlink() {
        let target = fs::read_link(path).unwrap_or_default();
        return Err(Problem::Symlink { target });
    }
    if dir && !meta.is_dir() {
        return Err(Problem::NotDirectory);
    }
    if !dir && !meta.is_file() {
        return Err(Problem::NotFile);
    }
    if meta.uid() != uid {
        return Err(Problem::Owner {
            uid: meta.uid(),
            expected: uid,
        });
    }
    Ok(Found::Present {
        mode: meta.permissions().mode() & 0o7777,
    })
}

/// The effective uid, whose files these are.
pub fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Makes sure `dir` (`~/.ssh`) exists with mode 700, refusing a symlink,
/// another owner or a non-directory. Returns true when something changed.
pub fn ensure_ssh_dir(dir: &Path) -> anyhow::Result<bool> {
    match inspect(dir, true, euid()) {
        Err(problem) => bail!("{}", problem.describe(dir)),
        Ok(Found::Missing) => {
            fs::DirBuilder::new()
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("creating {}", dir.display()))?;
            // The umask may have taken bits away; 700 is what ssh expects.
            set_mode(dir, 0o700)?;
            Ok(true)
        }
        Ok(Found::Present { mode }) if mode & 0o777 != 0o700 => {
            set_mode(dir, 0o700)?;
            Ok(true)
        }
        Ok(Found::Present { .. }) => Ok(false),
    }
}

pub fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {mode:o} {}", path.display()))
}

/// A file's bytes, or `None` when it does not exist. A symlink or a file of
/// another owner is refused: the kit edits only what is plainly the user's.
pub fn read_own(path: &Path) -> anyhow::Result<Option<Vec<u8>>> {
    match inspect(path, false, euid()) {
        Err(problem) => bail!("{}", problem.describe(path)),
        Ok(Found::Missing) => Ok(None),
        Ok(Found::Present { .. }) => fs::read(path)
            .map(Some)
            .with_context(|| format!("reading {}", path.display())),
    }
}

/// Replaces `path` by `bytes` atomically with `mode`; when the file existed
/// and `backup` is set, its old content is kept as `NAME.bak` first. The
/// directory must exist. Nothing is written when the bytes are unchanged.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32, backup: bool) -> anyhow::Result<bool> {
    let old = read_own(path)?;
    if old.as_deref() == Some(bytes) {
        return Ok(false);
    }
    if let (Some(old), true) = (&old, backup) {
        let bak = with_suffix(path, ".bak");
        if let Err(problem) = inspect(&bak, false, euid()) {
            bail!("{}", problem.describe(&bak));
        }
        replace(&bak, old, mode)?;
    }
    replace(path, bytes, mode)?;
    Ok(true)
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

/// Temporary file next to `path`, written and synced, renamed over it.
fn replace(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.syncpipe-{}-{}",
        path.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        file.set_permissions(fs::Permissions::from_mode(mode))
            .with_context(|| format!("chmod {mode:o} {}", tmp.display()))?;
        file.write_all(bytes)
            .and_then(|()| file.sync_all())
            .with_context(|| format!("writing {}", tmp.display()))?;
        fs::rename(&tmp, path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("syncing directory {}", dir.display()))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn creates_and_fixes_the_ssh_dir() {
        let home = tempfile::tempdir().unwrap();
        let ssh = home.path().join(".ssh");
        assert!(ensure_ssh_dir(&ssh).unwrap());
        assert_eq!(mode(&ssh), 0o700);
        assert!(!ensure_ssh_dir(&ssh).unwrap());
        set_mode(&ssh, 0o775).unwrap();
        assert!(ensure_ssh_dir(&ssh).unwrap());
        assert_eq!(mode(&ssh), 0o700);
    }

    #[test]
    fn refuses_symlinks_and_files() {
        let home = tempfile::tempdir().unwrap();
        let elsewhere = home.path().join("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        let ssh = home.path().join(".ssh");
        symlink(&elsewhere, &ssh).unwrap();
        let err = ensure_ssh_dir(&ssh).unwrap_err().to_string();
        assert!(
            err.contains("symlink") && err.contains("elsewhere"),
            "{err}"
        );

        let file = home.path().join("plain");
        fs::write(&file, b"x").unwrap();
        assert!(ensure_ssh_dir(&file)
            .unwrap_err()
            .to_string()
            .contains("not a directory"));

        let link = home.path().join("ak");
        symlink(&file, &link).unwrap();
        assert!(write_atomic(&link, b"y", 0o600, true).is_err());
        assert_eq!(fs::read(&file).unwrap(), b"x");
    }

    #[test]
    fn other_owners_are_named() {
        let p = Problem::Owner {
            uid: 0,
            expected: 1000,
        };
        let text = p.describe(Path::new("/home/a/.ssh"));
        assert!(
            text.contains("uid 0") && text.contains("chown 1000"),
            "{text}"
        );
        // As root, a file of another user really is refused.
        if euid() == 0 {
            let dir = tempfile::tempdir().unwrap();
            let f = dir.path().join("authorized_keys");
            fs::write(&f, b"x").unwrap();
            nix::unistd::chown(&f, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
            let err = write_atomic(&f, b"y", 0o600, true).unwrap_err().to_string();
            assert!(err.contains("belongs to uid 65534"), "{err}");
        }
    }

    #[test]
    fn atomic_write_with_backup() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("authorized_keys");
        assert!(write_atomic(&f, b"one\n", 0o600, true).unwrap());
        assert!(!dir.path().join("authorized_keys.bak").exists());
        assert_eq!(mode(&f), 0o600);
        assert!(!write_atomic(&f, b"one\n", 0o600, true).unwrap());
        assert!(write_atomic(&f, b"two\n", 0o600, true).unwrap());
        assert_eq!(fs::read(&f).unwrap(), b"two\n");
        assert_eq!(
            fs::read(dir.path().join("authorized_keys.bak")).unwrap(),
            b"one\n"
        );
        assert_eq!(mode(&dir.path().join("authorized_keys.bak")), 0o600);
        // No temporary files are left behind.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }
}
