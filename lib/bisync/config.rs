//! What one bisync run is given: the two replicas ([`Spec`]), the settings
//! of a run ([`Config`]) and what `--watch` adds ([`WatchSettings`]). Its own
//! module so the one-shot run, the watch loop and the feeds all depend on it
//! and not on each other.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use super::planner::Prefer;
use crate::cli::exit::{coded, Code};
use crate::exclude::Excludes;
use crate::limit::MaxDelete;
use crate::location::{Location, Target};
use crate::ssh::SshSettings;
use crate::wire::path::WirePath;

/// Where a replica is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Spec {
    Local(PathBuf),
    Ssh {
        user: Option<String>,
        host: String,
        path: Vec<u8>,
    },
}

impl Spec {
    /// `PATH` or `[user@]host:PATH`; relative local paths are made absolute.
    pub fn parse(arg: &std::ffi::OsStr) -> anyhow::Result<Spec> {
        let cwd = std::env::current_dir().context("reading the working directory")?;
        let target = Target::parse(arg, &cwd).map_err(|e| coded(Code::Usage, e.to_string()))?;
        match target.location {
            Location::Local(p) => Ok(Spec::Local(p)),
            Location::Ssh { user, host, path } => Ok(Spec::Ssh { user, host, path }),
            Location::Daemon { .. } => Err(coded(
                Code::Usage,
                format!(
                    "{}: bisync needs ssh or a local path, not an rsync daemon",
                    arg.to_string_lossy()
                ),
            )),
        }
    }

    /// The replica as a stable, lossless text key for the archive's name:
    /// two replicas whose paths differ only in bytes that are not UTF-8 must
    /// never share an archive (the other's "deleted" files would be deleted).
    pub fn key(&self) -> String {
        let (prefix, path): (String, &[u8]) = match self {
            Spec::Local(p) => (String::new(), p.as_os_str().as_encoded_bytes()),
            Spec::Ssh { user, host, path } => (
                format!(
                    "{}{host}:",
                    user.as_ref().map(|u| format!("{u}@")).unwrap_or_default()
                ),
                path,
            ),
        };
        match std::str::from_utf8(path) {
            Ok(text) => format!("{prefix}{text}"),
            // NUL is in no path and no host name: these keys cannot meet a
            // UTF-8 one.
            Err(_) => format!(
                "{prefix}\0{}",
                path.iter().map(|b| format!("{b:02x}")).collect::<String>()
            ),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Config {
    pub a: Spec,
    pub b: Spec,
    pub checksum: bool,
    pub prefer: Prefer,
    pub max_delete: MaxDelete,
    /// `--size-only`: compare files by size alone.
    pub size_only: bool,
    /// `--sentinel`: a path that must exist on both replicas.
    pub sentinel: Option<WirePath>,
    /// `--force`: go ahead although (nearly) all files changed on a side.
    pub force: bool,
    /// `--normalization`, `--case-insensitive`: which names are the same.
    pub fold: super::names::Fold,
    /// `--backup-dir-a/-b` with `--backup-keep`, per replica.
    pub backup: [Option<super::backup::Backup>; 2],
    pub dry_run: bool,
    pub json: bool,
    /// Exit [`Code::Synced`] (9) after changes instead of 0: success is 0
    /// for cron and `&&`, the detail is in the log and `--json`.
    pub exit_changes: bool,
    pub excludes: Excludes,
    /// Archive and lock directory; default [`archive::default_dir`].
    pub state_dir: Option<PathBuf>,
    pub ssh: SshSettings,
    /// The bisync program on remote hosts.
    pub remote_bisync: OsString,
    /// Keep syncing from the replicas' event streams (`--watch`).
    pub watch: Option<WatchSettings>,
}

/// What `--watch` adds to a run's [`Config`].
#[derive(Clone, Debug)]
pub struct WatchSettings {
    /// How long changes gather after the first one before a run.
    pub delay: Duration,
    /// The watchd program here; `None`: the one next to this bisync, else
    /// `watchd` from PATH.
    pub watchd: Option<OsString>,
    /// The watchd program on remote hosts.
    pub remote_watchd: OsString,
    /// `--status-file`, `--metrics-file`.
    pub health: crate::health::publish::HealthFiles,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn keys_are_lossless() {
        let a = Spec::Local(PathBuf::from(std::ffi::OsStr::from_bytes(
            b"/data/Fotos_\xe4",
        )));
        let b = Spec::Local(PathBuf::from(std::ffi::OsStr::from_bytes(
            b"/data/Fotos_\xf6",
        )));
        assert_ne!(a.key(), b.key());
        assert_eq!(Spec::Local(PathBuf::from("/data/x")).key(), "/data/x");
    }
}
