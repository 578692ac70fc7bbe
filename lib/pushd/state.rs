//! `pushd --state FILE`: per target, the stream id and the last `seq`
//! applied, written atomically (temporary file, fsync, rename) after every
//! successful transfer, so a restart on the same stream resumes and a
//! restart on a new stream knows it must do a full sync first.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub stream: String,
    pub seq: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct File {
    targets: BTreeMap<String, Position>,
}

pub struct StateFile {
    path: PathBuf,
    data: File,
    /// `--dry-run`: positions are kept in memory, the file is never written.
    read_only: bool,
}

impl StateFile {
    /// Loads `path`; a missing file is an empty state. A file that does not
    /// parse is an error: silently starting over could hide a mistake.
    pub fn load(path: &Path) -> anyhow::Result<StateFile> {
        let data = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "state file {} is not valid (remove it to start with a full sync)",
                    path.display()
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => File::default(),
            Err(e) => {
                return Err(e).with_context(|| format!("reading state file {}", path.display()))
            }
        };
        Ok(StateFile {
            path: path.to_path_buf(),
            data,
            read_only: false,
        })
    }

    /// When `yes`, [`Self::set`] never writes the file (a dry run reads
    /// where the targets stand and changes nothing).
    pub fn read_only(mut self, yes: bool) -> StateFile {
        self.read_only = yes;
        self
    }

    pub fn get(&self, target: &str) -> Option<&Position> {
        self.data.targets.get(target)
    }

    /// Where a socket reader can ask its writer to resume: the common stream
    /// of `targets` and the least seq any of them applied. `None` when a
    /// target has no position or they differ in stream (a full sync is due).
    pub fn resume_point(&self, targets: &[String]) -> Option<(String, u64)> {
        let mut positions = targets.iter().map(|t| self.get(t));
        let first = positions.next()??.clone();
        let mut seq = first.seq;
        for p in positions {
            let p = p?;
            if p.stream != first.stream {
                return None;
            }
            seq = seq.min(p.seq);
        }
        Some((first.stream, seq))
    }

    /// Records `position` for `target` and writes the file atomically.
    pub fn set(&mut self, target: &str, position: Position) -> anyhow::Result<()> {
        self.data.targets.insert(target.to_string(), position);
        if self.read_only {
            return Ok(());
        }
        self.save()
    }

    fn save(&self) -> anyhow::Result<()> {
        let mut name = self.path.file_name().unwrap_or_default().to_os_string();
        name.push(format!(".tmp.{}", std::process::id()));
        let tmp = self.path.with_file_name(name);
        let mut bytes = serde_json::to_vec_pretty(&self.data).context("serialising state")?;
        bytes.push(b'\n');
        let written = std::fs::File::create(&tmp).and_then(|mut f| {
            f.write_all(&bytes)?;
            f.sync_all()
        });
        written.with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &self.path)
            .with_context(|| format!("replacing state file {}", self.path.display()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_point_is_the_least_common_position() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = StateFile::load(&dir.path().join("s")).unwrap();
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(state.resume_point(&names(&["a"])), None);
        let pos = |stream: &str, seq| Position {
            stream: stream.into(),
            seq,
        };
        state.set("a", pos("s1", 9)).unwrap();
        state.set("b", pos("s1", 4)).unwrap();
        assert_eq!(
            state.resume_point(&names(&["a", "b"])),
            Some(("s1".into(), 4))
        );
        assert_eq!(state.resume_point(&names(&["a", "c"])), None);
        state.set("c", pos("s2", 20)).unwrap();
        assert_eq!(state.resume_point(&names(&["a", "c"])), None);
    }

    #[test]
    fn round_trip_and_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let mut s = StateFile::load(&path).unwrap();
        assert_eq!(s.get("t"), None);
        s.set(
            "t",
            Position {
                stream: "ab".into(),
                seq: 7,
            },
        )
        .unwrap();
        let again = StateFile::load(&path).unwrap();
        assert_eq!(again.get("t").unwrap().seq, 7);
        std::fs::write(&path, b"{nope").unwrap();
        assert!(StateFile::load(&path).is_err());
    }
}
