//! The archive: the last synchronised state of a replica pair, kept under
//! the user's state directory, written atomically, checked on load (a
//! damaged archive means a first sync, which never deletes), and the lock
//! that keeps two runs on one pair apart.
//!
//! Format: JSON lines. A header `{"bisync_archive":1,"a":…,"b":…,"entries":N}`,
//! N lines `{"p":PATH,"a":ENTRY,"b":ENTRY}` (or `"bi":INODE` instead of `b`
//! when b's entry is a's with another inode, the usual case), and a trailer
//! `{"end":N,"blake3":HEX}` hashing every byte before it.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use super::entry::{Entry, Hash, HashingWriter};
use super::planner::{ArchEntry, Archive};
use crate::wire::path::WirePath;

const VERSION: u32 = 1;

/// `$XDG_STATE_HOME/syncpipe/bisync`, else `~/.local/state/syncpipe/bisync`.
pub fn default_dir() -> anyhow::Result<PathBuf> {
    if let Some(state) = std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        let state = PathBuf::from(state);
        if state.is_absolute() {
            return Ok(state.join("syncpipe/bisync"));
        }
    }
    let home = std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .context("neither XDG_STATE_HOME nor HOME is set: give --state-dir")?;
    Ok(PathBuf::from(home).join(".local/state/syncpipe/bisync"))
}

/// Where one pair's archive and lock live: named by a hash of the two
/// replicas as resolved (absolute local paths, `host:path` as given).
pub struct Store {
    pub archive: PathBuf,
    pub lock: PathBuf,
    a: String,
    b: String,
}

impl Store {
    pub fn new(dir: &Path, a: &str, b: &str) -> Store {
        let mut key = a.as_bytes().to_vec();
        key.push(0);
        key.extend_from_slice(b.as_bytes());
        let name = &Hash::of(&key).to_hex()[..32];
        Store {
            archive: dir.join(format!("{name}.archive")),
            lock: dir.join(format!("{name}.lock")),
            a: a.to_string(),
            b: b.to_string(),
        }
    }

    /// Takes the pair's lock, or says who has it. Held until dropped.
    pub fn lock(&self) -> anyhow::Result<Flock<File>> {
        let dir = self.lock.parent().expect("a file in a directory");
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.lock)
            .with_context(|| format!("opening lock {}", self.lock.display()))?;
        Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
            anyhow::anyhow!(
                "another bisync is running on {} and {} (lock {} is held: {e}); try again later",
                self.a,
                self.b,
                self.lock.display()
            )
        })
    }

    /// The archive, or `None` when there is none or it is damaged (a warning
    /// says so): either way a first sync follows.
    pub fn load(&self) -> Option<Archive> {
        let file = match File::open(&self.archive) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                crate::log_warn!(
                    "cannot read archive {}: {e}; doing a first sync (nothing is deleted)",
                    self.archive.display()
                );
                return None;
            }
        };
        match parse(BufReader::with_capacity(1 << 20, file)) {
            Ok(archive) => Some(archive),
            Err(e) => {
                crate::log_warn!(
                    "archive {} is damaged ({e:#}); doing a first sync (nothing is deleted)",
                    self.archive.display()
                );
                None
            }
        }
    }

    /// Writes the archive atomically: a temporary file, fsync, rename, fsync
    /// of the directory.
    pub fn save(&self, archive: &Archive) -> anyhow::Result<()> {
        let dir = self.archive.parent().expect("a file in a directory");
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut temp_name = self.archive.as_os_str().to_owned();
        temp_name.push(format!(".tmp.{}", std::process::id()));
        let temp = PathBuf::from(temp_name);
        let written = (|| {
            let file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&temp)?;
            let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
            serialise(archive, &self.a, &self.b, &mut out)?;
            out.into_inner().map_err(|e| e.into_error())?.sync_all()
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&temp);
            return Err(e).with_context(|| format!("writing {}", temp.display()));
        }
        fs::rename(&temp, &self.archive)
            .with_context(|| format!("replacing {}", self.archive.display()))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("syncing {}", dir.display()))?;
        self.remove_stale_temps(dir);
        Ok(())
    }

    /// Removes the temporary archives of runs killed while saving (their
    /// pid is gone): harmless, but they would pile up. Best effort.
    fn remove_stale_temps(&self, dir: &Path) {
        let Some(name) = self.archive.file_name() else {
            return;
        };
        let mut prefix = name.as_encoded_bytes().to_vec();
        prefix.extend_from_slice(b".tmp.");
        let Ok(listing) = fs::read_dir(dir) else {
            return;
        };
        for item in listing.flatten() {
            let file = item.file_name();
            let Some(pid) = file.as_encoded_bytes().strip_prefix(&prefix[..]) else {
                continue;
            };
            let Some(pid) = std::str::from_utf8(pid).ok().and_then(|p| p.parse().ok()) else {
                continue;
            };
            let pid = nix::unistd::Pid::from_raw(pid);
            if nix::sys::signal::kill(pid, None) == Err(nix::errno::Errno::ESRCH) {
                crate::log_debug!("removing {} left by a killed run", item.path().display());
                let _ = fs::remove_file(item.path());
            }
        }
    }
}

#[derive(Serialize, Deserialize)]
struct HeaderLine {
    bisync_archive: u32,
    a: String,
    b: String,
    entries: u64,
}

#[derive(Serialize, Deserialize)]
struct EntryLine {
    p: WirePath,
    a: Entry,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    b: Option<Entry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bi: Option<u64>,
}

#[derive(Serialize, Deserialize)]
struct Trailer {
    end: u64,
    blake3: String,
}

/// Writes the archive to `out` as it goes (an archive of 50,000 entries is
/// about 7 MB: not worth holding in memory).
pub fn serialise(archive: &Archive, a: &str, b: &str, out: impl Write) -> std::io::Result<()> {
    let mut h = HashingWriter::new(out);
    json(
        &mut h,
        &HeaderLine {
            bisync_archive: VERSION,
            a: a.to_string(),
            b: b.to_string(),
            entries: archive.len() as u64,
        },
    )?;
    for (p, e) in archive {
        let only_ino = e.b.ino != 0
            && e.b
                == Entry {
                    ino: e.b.ino,
                    ..e.a.clone()
                };
        json(
            &mut h,
            &Borrowed {
                p,
                a: &e.a,
                b: (!only_ino).then_some(&e.b),
                bi: only_ino.then_some(e.b.ino),
            },
        )?;
    }
    let hash = Hash::from(h.hasher.finalize()).to_hex();
    let mut out = h.out;
    serde_json::to_writer(
        &mut out,
        &Trailer {
            end: archive.len() as u64,
            blake3: hash,
        },
    )
    .map_err(std::io::Error::other)?;
    out.write_all(b"\n")?;
    out.flush()
}

#[derive(Serialize)]
struct Borrowed<'x> {
    p: &'x WirePath,
    a: &'x Entry,
    #[serde(skip_serializing_if = "Option::is_none")]
    b: Option<&'x Entry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bi: Option<u64>,
}

/// One JSON line.
fn json(out: &mut impl Write, value: &impl Serialize) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, value).map_err(std::io::Error::other)?;
    out.write_all(b"\n")
}

pub fn parse(mut input: impl BufRead) -> anyhow::Result<Archive> {
    let mut hasher = blake3::Hasher::new();
    let mut line = Vec::new();
    let mut next = |line: &mut Vec<u8>| -> anyhow::Result<bool> {
        line.clear();
        let n = input.read_until(b'\n', line)?;
        Ok(n > 0 && line.last() == Some(&b'\n'))
    };
    anyhow::ensure!(next(&mut line)?, "no header");
    let header: HeaderLine = serde_json::from_slice(&line).context("bad header")?;
    anyhow::ensure!(
        header.bisync_archive == VERSION,
        "archive version {} is not {VERSION}",
        header.bisync_archive
    );
    hasher.update(&line);
    let mut archive = Archive::new();
    for i in 0..header.entries {
        anyhow::ensure!(next(&mut line)?, "cut short after {i} entries");
        let e: EntryLine =
            serde_json::from_slice(&line).with_context(|| format!("bad entry {}", i + 1))?;
        hasher.update(&line);
        let b = match (e.b, e.bi) {
            (Some(b), None) => b,
            (None, Some(ino)) => Entry { ino, ..e.a.clone() },
            _ => anyhow::bail!("entry {} needs one of b and bi", i + 1),
        };
        archive.insert(e.p, ArchEntry { a: e.a, b });
    }
    anyhow::ensure!(next(&mut line)?, "no trailer");
    let trailer: Trailer = serde_json::from_slice(&line).context("bad trailer")?;
    anyhow::ensure!(
        trailer.end == header.entries && archive.len() as u64 == header.entries,
        "entry count does not match"
    );
    anyhow::ensure!(
        trailer.blake3 == Hash::from(hasher.finalize()).to_hex(),
        "checksum does not match"
    );
    Ok(archive)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bisync::entry::Kind;

    fn sample() -> Archive {
        let mut ar = Archive::new();
        let file = Entry {
            kind: Kind::File,
            size: 3,
            mtime: 1_700_000_000_123_456_789,
            mode: 0o640,
            ino: 42,
            hash: Some(Hash::of(b"abc")),
            ..Entry::dir(0)
        };
        ar.insert(
            WirePath::from_bytes(b"a\nb\xff".to_vec()),
            ArchEntry {
                a: file.clone(),
                b: Entry { ino: 7, ..file },
            },
        );
        ar.insert(
            WirePath::from("d"),
            ArchEntry {
                a: Entry::dir(0o755),
                b: Entry::dir(0o700),
            },
        );
        ar
    }

    #[test]
    fn round_trips_and_detects_damage() {
        let ar = sample();
        let mut bytes = Vec::new();
        serialise(&ar, "/x", "h:/y", &mut bytes).unwrap();
        assert_eq!(parse(&bytes[..]).unwrap(), ar);
        // Any cut or flipped byte is noticed.
        for cut in [1, bytes.len() / 2, bytes.len() - 1] {
            assert!(parse(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut flipped = bytes.clone();
        let i = bytes.len() / 2;
        flipped[i] = if flipped[i] == b'1' { b'2' } else { b'1' };
        assert!(parse(&flipped[..]).is_err());
    }

    #[test]
    fn store_saves_loads_and_locks() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::new(&tmp.path().join("st"), "/x", "/y");
        assert!(store.load().is_none());
        let lock = store.lock().unwrap();
        assert!(
            store.lock().is_err(),
            "a second lock on the same pair fails"
        );
        store.save(&sample()).unwrap();
        assert_eq!(store.load().unwrap(), sample());
        drop(lock);
        assert!(store.lock().is_ok());
        // A run killed while saving leaves its temporary archive; the next
        // save removes it (its pid is gone), not a live writer's.
        let temp = |pid: u32| {
            let mut name = store.archive.as_os_str().to_owned();
            name.push(format!(".tmp.{pid}"));
            PathBuf::from(name)
        };
        let (dead, live) = (temp(999_999_999), temp(1));
        fs::write(&dead, b"half an archive").unwrap();
        fs::write(&live, b"being written").unwrap();
        store.save(&sample()).unwrap();
        assert!(!dead.exists() && live.exists());
        fs::write(&store.archive, b"garbage").unwrap();
        assert!(store.load().is_none());
        assert_ne!(Store::new(tmp.path(), "/x", "/z").archive, store.archive);
    }
}
