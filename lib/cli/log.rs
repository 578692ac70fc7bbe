//! Log lines on stderr, one per record, that journald understands.
//!
//! When stderr is the journal (systemd sets `JOURNAL_STREAM=dev:ino` and it
//! matches fstat(2) of fd 2) a line starts with `<N>` so journald records the
//! priority; otherwise with `prog: level: ` for a person at a terminal. The
//! program's name is not repeated in the journal, which has it already.

use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;

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
}

static LOGGER: OnceLock<Logger> = OnceLock::new();
static MAX_LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);

/// Sets the program name and how much to say. Call once, early; until then
/// lines are still written, under the name `syncpipe`.
pub fn init(prog: &'static str, max_level: Level) {
    let _ = LOGGER.set(Logger {
        prog,
        journal: stderr_is_journal(),
    });
    MAX_LEVEL.store(max_level as u8, Ordering::Relaxed);
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
    });
    let message = args.to_string().replace('\n', "\\n");
    let line = if logger.journal {
        format!("<{}>{message}\n", level as u8)
    } else {
        format!("{}: {}: {message}\n", logger.prog, level.word())
    };
    // One write per line so lines from threads do not interleave; a failing
    // stderr has nowhere left to report to.
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
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
