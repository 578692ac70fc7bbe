//! Writing the status and metrics files: atomically (a temporary file in
//! the same directory, renamed over the old one, so a reader never sees
//! half a file), at most once a second however busy the program is, at
//! the next tick after a change, and every few seconds while idle, so a
//! file's `updated` time (and node_exporter's mtime) proves the program is
//! alive — lsyncd's status file goes stale when nothing happens (its
//! issue 461).

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;

use crate::health::status::StatusDoc;

/// The shortest gap between two writes.
pub const MIN_GAP: Duration = Duration::from_secs(1);
/// The longest gap while nothing changes.
pub const IDLE_REFRESH: Duration = Duration::from_secs(5);

/// When a write is due: pure, so the pacing is tested without a clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct Pace {
    last: Option<Instant>,
    dirty: bool,
}

impl Pace {
    /// Something changed: written at the next due tick.
    pub fn changed(&mut self) {
        self.dirty = true;
    }

    pub fn due(&self, now: Instant) -> bool {
        match self.last {
            None => true,
            Some(last) => {
                let gap = now.saturating_duration_since(last);
                (self.dirty && gap >= MIN_GAP) || gap >= IDLE_REFRESH
            }
        }
    }

    pub fn written(&mut self, now: Instant) {
        self.last = Some(now);
        self.dirty = false;
    }
}

/// Where a program keeps its status and metrics files (`--status-file`,
/// `--metrics-file`); either may be off.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HealthFiles {
    pub status: Option<PathBuf>,
    pub metrics: Option<PathBuf>,
}

/// Writes one program's [`HealthFiles`], paced.
#[derive(Debug, Default)]
pub struct Publisher {
    status: Option<PathBuf>,
    metrics: Option<PathBuf>,
    pace: Pace,
    warned: bool,
}

impl Publisher {
    pub fn new(files: &HealthFiles) -> Self {
        Publisher {
            status: files.status.clone(),
            metrics: files.metrics.clone(),
            ..Self::default()
        }
    }

    /// How long a loop may sleep before the next [`tick`](Self::tick) is
    /// due; `None` when no file is kept.
    pub fn poll_timeout(&self) -> Option<Duration> {
        self.is_enabled().then_some(MIN_GAP)
    }

    pub fn is_enabled(&self) -> bool {
        self.status.is_some() || self.metrics.is_some()
    }

    pub fn changed(&mut self) {
        self.pace.changed();
    }

    /// Writes both files when due (`force`: now, e.g. at exit); `render`
    /// is only called then. A failed write is said once and retried at the
    /// next tick: the sync itself goes on.
    pub fn tick(&mut self, force: bool, render: impl FnOnce(SystemTime) -> (StatusDoc, String)) {
        let now = Instant::now();
        if !self.is_enabled() || !(force || self.pace.due(now)) {
            return;
        }
        self.pace.written(now);
        let (doc, metrics) = render(SystemTime::now());
        let mut result = Ok(());
        if let Some(path) = &self.status {
            result = serde_json::to_vec_pretty(&doc)
                .map_err(anyhow::Error::from)
                .and_then(|mut text| {
                    text.push(b'\n');
                    write_atomically(path, &text)
                });
        }
        if let (Some(path), Ok(())) = (&self.metrics, &result) {
            result = write_atomically(path, metrics.as_bytes());
        }
        match result {
            Ok(()) if self.warned => {
                self.warned = false;
                crate::log_notice!("status files are written again");
            }
            Ok(()) => {}
            Err(e) => {
                self.pace.changed();
                if !self.warned {
                    self.warned = true;
                    crate::log_warn!("{e:#} (carrying on; retried every second)");
                }
            }
        }
    }
}

/// Replaces `path` with `data` in one rename; readable by everyone (the
/// metrics are read by node_exporter's user, the status by any operator).
pub fn write_atomically(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let name = path
        .file_name()
        .with_context(|| format!("{}: not a file name", path.display()))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = match dir {
        Some(d) => d.join(&tmp_name),
        None => PathBuf::from(&tmp_name),
    };
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&tmp)
        .and_then(|mut f| {
            // The units' UMask=0077 would leave it 0600.
            f.set_permissions(std::fs::Permissions::from_mode(0o644))?;
            f.write_all(data)
        });
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("writing {}", path.display()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paced_once_a_second_and_refreshed_while_idle() {
        let t0 = Instant::now();
        let mut p = Pace::default();
        assert!(p.due(t0), "the first write is at once");
        p.written(t0);
        assert!(!p.due(t0 + Duration::from_millis(500)));
        p.changed();
        assert!(
            !p.due(t0 + Duration::from_millis(999)),
            "at most once a second"
        );
        assert!(p.due(t0 + MIN_GAP));
        p.written(t0 + MIN_GAP);
        let idle = t0 + MIN_GAP;
        assert!(!p.due(idle + Duration::from_secs(4)), "nothing changed");
        assert!(p.due(idle + IDLE_REFRESH), "refreshed while idle");
    }

    #[test]
    fn written_whole_and_readable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pushd.json");
        write_atomically(&path, b"one").unwrap();
        write_atomically(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file left");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o444, 0o444);
        let missing = dir.path().join("no/such/dir/x.prom");
        let err = write_atomically(&missing, b"x").unwrap_err();
        assert!(format!("{err:#}").contains("no/such/dir/x.prom"), "{err:#}");
    }
}
