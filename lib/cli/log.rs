//! Log lines on stderr, one per record, that journald understands.
//!
//! When stderr is the journal (systemd sets `JOURNAL_STREAM=dev:ino` and it
//! matches fstat(2) of fd 2) a line starts with `<N>` so journald records the
//! priority; otherwise with `prog: level: ` for a person at a terminal. The
//! program's name is not repeated in the journal, which has it already.
//!
//! `--log-file PATH` (every program; lsyncd's `logfile`) appends the same
//! lines to a file as well, each after an RFC 3339 UTC time (a file has no
//! journal to date it). A rotated file is noticed, not signalled: before
//! each line the path is looked at, and when it names another file or none
//! (logrotate moved it away) it is opened again, created if need be. So
//! logrotate's default `create` works without a `postrotate` script, and
//! SIGHUP keeps its meaning in each program (watchd rebuilds its watches on
//! it, batchd stops).

use std::fmt;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock};

use anyhow::Context;

/// Syslog priorities, as journald reads them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Level {
    Error = 3,
    Warn = 4,
    Notice = 5,
    Info = 6,
    Debug = 7,
}

impl Level {
    fn word(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warn => "warning",
            Level::Notice => "notice",
            Level::Info => "info",
            Level::Debug => "debug",
        }
    }
}

struct Logger {
    prog: &'static str,
    journal: bool,
    file: Option<Mutex<LogFile>>,
}

/// `--log-file`: the open file and which file it is.
struct LogFile {
    path: PathBuf,
    file: File,
    /// Device and inode of `file`: the path naming another one means rotated.
    id: (u64, u64),
    /// The last reopen failed and said so: quiet until one works again.
    failing: bool,
}

impl LogFile {
    fn open(path: &Path) -> std::io::Result<LogFile> {
        let file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o640)
            .open(path)?;
        let meta = file.metadata()?;
        Ok(LogFile {
            path: path.to_path_buf(),
            file,
            id: (meta.dev(), meta.ino()),
            failing: false,
        })
    }

    /// Appends `line`, first opening the path again if it names another
    /// file or none (rotated). Failures go to stderr once.
    fn append(&mut self, prog: &str, line: &str) {
        let current = std::fs::metadata(&self.path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        if current != Some(self.id) {
            match LogFile::open(&self.path) {
                Ok(fresh) => *self = fresh,
                Err(e) => {
                    if !self.failing {
                        self.failing = true;
                        let _ = writeln!(
                            std::io::stderr(),
                            "{prog}: error: reopening the log file {}: {e}; writing to the old one",
                            self.path.display()
                        );
                    }
                }
            }
        }
        let stamped = format!("{} {line}", crate::wire::event::Timestamp::now().0);
        let _ = self.file.write_all(stamped.as_bytes());
    }
}

static LOGGER: OnceLock<Logger> = OnceLock::new();
static MAX_LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);

/// Sets the program name, how much to say and the `--log-file`. Call once,
/// early; until then lines are still written, under the name `syncpipe`.
/// An error: the log file cannot be opened.
pub fn init(prog: &'static str, max_level: Level, file: Option<&Path>) -> anyhow::Result<()> {
    MAX_LEVEL.store(max_level as u8, Ordering::Relaxed);
    // Empty: none (a unit passes the config's LOG_FILE= as it is).
    let file = match file.filter(|p| !p.as_os_str().is_empty()) {
        Some(path) => Some(Mutex::new(LogFile::open(path).with_context(|| {
            format!("opening the log file {} (--log-file)", path.display())
        })?)),
        None => None,
    };
    let _ = LOGGER.set(Logger {
        prog,
        journal: stderr_is_journal(),
        file,
    });
    Ok(())
}

pub fn enabled(level: Level) -> bool {
    level as u8 <= MAX_LEVEL.load(Ordering::Relaxed)
}

/// Writes one log line. Newlines in the message are escaped so that one
/// record stays one line (a file name may contain a newline).
pub fn write(level: Level, args: fmt::Arguments) {
    if !enabled(level) {
        return;
    }
    let logger = LOGGER.get_or_init(|| Logger {
        prog: "syncpipe",
        journal: stderr_is_journal(),
        file: None,
    });
    let message = args.to_string().replace('\n', "\\n");
    let plain = format!("{}: {}: {message}\n", logger.prog, level.word());
    let line = if logger.journal {
        format!("<{}>{message}\n", level as u8)
    } else {
        plain.clone()
    };
    // One write per line so lines from threads do not interleave; a failing
    // stderr has nowhere left to report to. Above any progress bar.
    crate::cli::progress::suspend(|| {
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    });
    if let Some(file) = &logger.file {
        file.lock()
            .unwrap_or_else(|e| e.into_inner())
            .append(logger.prog, &plain);
    }
}

fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    let Ok(stat) = nix::sys::stat::fstat(std::io::stderr()) else {
        return false;
    };
    dev.parse::<u64>().ok() == Some(stat.st_dev) && ino.parse::<u64>().ok() == Some(stat.st_ino)
}

#[macro_export]
macro_rules! log_error { ($($t:tt)*) => { $crate::cli::log::write($crate::cli::log::Level::Error, format_args!($($t)*)) } }
#[macro_export]
macro_rules! log_warn { ($($t:tt)*) => { $crate::cli::log::write($crate::cli::log::Level::Warn, format_args!($($t)*)) } }
#[macro_export]
macro_rules! log_notice { ($($t:tt)*) => { $crate::cli::log::write($crate::cli::log::Level::Notice, format_args!($($t)*)) } }
#[macro_export]
macro_rules! log_info { ($($t:tt)*) => { $crate::cli::log::write($crate::cli::log::Level::Info, format_args!($($t)*)) } }
#[macro_export]
macro_rules! log_debug { ($($t:tt)*) => { $crate::cli::log::write($crate::cli::log::Level::Debug, format_args!($($t)*)) } }

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rotated_log_file_is_opened_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sync.log");
        let mut log = LogFile::open(&path).unwrap();
        log.append("pushd", "pushd: notice: one\n");
        std::fs::rename(&path, dir.path().join("sync.log.1")).unwrap();
        log.append("pushd", "pushd: notice: two\n");
        let old = std::fs::read_to_string(dir.path().join("sync.log.1")).unwrap();
        let new = std::fs::read_to_string(&path).unwrap();
        assert!(
            old.ends_with(" pushd: notice: one\n") && !old.contains("two"),
            "{old:?}"
        );
        assert!(
            new.ends_with(" pushd: notice: two\n") && !new.contains("one"),
            "{new:?}"
        );
        // Each line starts with its time, RFC 3339 UTC.
        assert!(
            new.starts_with("20") && new.split(' ').next().unwrap().ends_with('Z'),
            "{new:?}"
        );
        // Truncated in place (copytruncate): the same file, appended at its end.
        std::fs::write(&path, b"").unwrap();
        log.append("pushd", "pushd: notice: three\n");
        let now = std::fs::read_to_string(&path).unwrap();
        assert!(
            now.ends_with(" pushd: notice: three\n") && !now.starts_with('\0'),
            "{now:?}"
        );
    }
}
