//! What every binary's `main` shares: logging set-up, running the library
//! call, turning its error into one message and a documented exit code, and
//! the argument parsers clap uses for durations, and the progress bar of
//! long work on a terminal.

pub mod exit;
pub mod log;
pub(crate) mod manpage;
pub(crate) mod progress;

use std::process::ExitCode;
use std::time::Duration;

use crate::cli::exit::{code_of, Code};
use crate::cli::log::Level;
use crate::wire::reader::is_broken_pipe;

/// Runs `body` as program `prog`: an error is printed once with its causes
/// (`prog: error: what: why`) and becomes its exit code; a broken pipe on
/// stdout is a quiet, successful end.
pub fn run(
    prog: &'static str,
    verbosity: Verbosity,
    body: impl FnOnce() -> anyhow::Result<()>,
) -> ExitCode {
    if let Err(e) = crate::cli::log::init(prog, verbosity.level(), verbosity.log_file) {
        crate::log_error!("{e:#}");
        return ExitCode::from(code_of(&e) as u8);
    }
    match body() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            crate::log_error!("{err:#}");
            ExitCode::from(code_of(&err) as u8)
        }
    }
}

/// Like [`run`], for a body that chooses its exit code when it succeeds
/// (bisync tells "in sync" from "synced" and "conflicts left").
pub fn run_coded(
    prog: &'static str,
    verbosity: Verbosity,
    body: impl FnOnce() -> anyhow::Result<Code>,
) -> ExitCode {
    let mut code = Code::Ok;
    let exit = run(prog, verbosity, || {
        code = body()?;
        Ok(())
    });
    if exit == ExitCode::SUCCESS {
        ExitCode::from(code as u8)
    } else {
        exit
    }
}

/// Parses the command line as clap would, except for two hidden requests
/// that packagers and `make` use to get files generated from the very same
/// definitions, never written by hand:
///
/// - `BIN --print-completions bash|zsh|fish|elvish|powershell`
/// - `BIN --print-man` (a roff man page)
///
/// Both print to stdout and exit 0, like `--help`.
pub fn parse<A: clap::Parser>(bin: &'static str) -> A {
    let mut argv = std::env::args_os().skip(1);
    match argv.next().as_deref().and_then(|a| a.to_str()) {
        Some("--print-completions") => {
            let shell = argv
                .next()
                .and_then(|s| s.to_str()?.parse::<clap_complete::Shell>().ok());
            let Some(shell) = shell else {
                eprintln!("{bin}: --print-completions takes bash, zsh, fish, elvish or powershell");
                std::process::exit(Code::Usage as i32);
            };
            clap_complete::generate(shell, &mut A::command(), bin, &mut std::io::stdout());
            std::process::exit(0);
        }
        Some("--print-man") => {
            if let Err(e) = crate::cli::manpage::render(A::command(), bin, &mut std::io::stdout()) {
                eprintln!("{bin}: writing the man page: {e}");
                std::process::exit(Code::Failure as i32);
            }
            std::process::exit(0);
        }
        _ => A::parse(),
    }
}

/// `-v` / `-q` as every binary spells them.
#[derive(clap::Args, Debug, Clone, Copy, Default)]
pub struct Verbosity {
    /// Say more on stderr (repeat for debug output)
    #[arg(short, long, action = clap::ArgAction::Count, global = true, help_heading = "Logging")]
    pub verbose: u8,
    /// Say only warnings and errors
    #[arg(
        short,
        long,
        global = true,
        conflicts_with = "verbose",
        help_heading = "Logging"
    )]
    pub quiet: bool,
    /// Append the log lines to FILE too, each after its time (lsyncd's
    /// logfile); a rotated FILE is noticed and opened again
    // &'static, leaked once per process: keeps Verbosity Copy, so every
    // binary hands it to `run` as before.
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        value_hint = clap::ValueHint::FilePath,
        value_parser = leaked_path(),
        help_heading = "Logging"
    )]
    pub log_file: Option<&'static std::path::Path>,
}

impl Verbosity {
    pub fn level(self) -> Level {
        match (self.quiet, self.verbose) {
            (true, _) => Level::Warn,
            (false, 0) => Level::Notice,
            (false, 1) => Level::Info,
            (false, _) => Level::Debug,
        }
    }
}

/// `--status-file` and `--metrics-file`, spelt the same in every program
/// (what they hold: lib/health/, README "Operator view").
#[derive(clap::Args, Debug, Clone, Default)]
pub struct HealthArgs {
    /// Keep a JSON status file at FILE (rewritten atomically on changes, at
    /// most once a second, and every 5 s while idle; `syncpipe status` reads it)
    #[arg(long, value_name = "FILE", value_hint = clap::ValueHint::FilePath, help_heading = "Health")]
    pub status_file: Option<std::path::PathBuf>,
    /// Keep Prometheus metrics (text format, `syncpipe_` names) at FILE, for
    /// node_exporter's textfile collector (name it *.prom in its directory)
    #[arg(long, value_name = "FILE", value_hint = clap::ValueHint::FilePath, help_heading = "Health")]
    pub metrics_file: Option<std::path::PathBuf>,
}

impl HealthArgs {
    /// The two paths, made absolute against `cwd`.
    pub fn files(&self, cwd: &std::path::Path) -> crate::health::publish::HealthFiles {
        let absolute = |p: &std::path::PathBuf| cwd.join(p);
        crate::health::publish::HealthFiles {
            status: self.status_file.as_ref().map(absolute),
            metrics: self.metrics_file.as_ref().map(absolute),
        }
    }
}

/// The exclude flags, spelt the same in watchd, pushd and bisync (syntax:
/// lib/exclude.rs, README "Excludes").
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ExcludeArgs {
    /// Leave out paths matching PATTERN, gitignore-style, relative to the
    /// root: `*.tmp`, `/build/`, `cache/`, `logs/**`, `a/**/b`, `!keep.log`
    /// (repeatable; rsync rules like `- *.tmp` or `dir/***` are refused)
    #[arg(long, value_name = "PATTERN", help_heading = "Excludes")]
    pub exclude: Vec<String>,
    /// Patterns separated by spaces, as the config file's EXCLUDES= key
    /// holds them (repeatable; empty: none)
    #[arg(long, value_name = "LIST", help_heading = "Excludes")]
    pub excludes: Vec<String>,
    /// Read patterns from FILE, one per line, `#` comments (repeatable;
    /// empty: none, so a unit can pass the config's EXCLUDE_FROM= as it is)
    // OsString, not PathBuf: clap refuses an empty path, and an empty
    // value must mean "none" here.
    #[arg(long, value_name = "FILE", value_hint = clap::ValueHint::FilePath, help_heading = "Excludes")]
    pub exclude_from: Vec<std::ffi::OsString>,
}

impl ExcludeArgs {
    /// The compiled patterns; a pattern outside the syntax is a usage error
    /// naming the flag or the file and line.
    pub fn compile(&self) -> anyhow::Result<crate::exclude::Excludes> {
        crate::exclude::Excludes::from_args(&self.exclude, &self.excludes, &self.exclude_from)
            .map_err(|e| crate::cli::exit::coded(Code::Usage, format!("{e:#}")))
    }
}

/// A path argument leaked once, so it is `&'static` (see `log_file`).
fn leaked_path() -> impl clap::builder::TypedValueParser<Value = &'static std::path::Path> {
    use clap::builder::TypedValueParser;
    clap::builder::OsStringValueParser::new()
        .map(|s| &*Box::leak(std::path::PathBuf::from(s).into_boxed_path()))
}

/// A duration as a sysadmin writes it: `15s`, `500ms`, `2m`, `1h30m`; a bare
/// number is seconds (`batchd -d 15`, as lsyncd's `delay = 15`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<f64>() {
        if (0.0..1e9).contains(&secs) {
            return Ok(Duration::from_secs_f64(secs));
        }
        return Err(format!(
            "{text:?} is not a duration of zero or more seconds"
        ));
    }
    humantime::parse_duration(text)
        .map_err(|e| format!("{text:?} is not a duration ({e}); write e.g. 15, 15s, 500ms or 2m"))
}

/// A count of at least 1, said plainly when it is not one (clap's own
/// message is "number would be zero for non-zero type").
pub fn parse_count(text: &str) -> Result<std::num::NonZeroUsize, String> {
    match text.trim().parse::<usize>() {
        Ok(0) => {
            Err("0 is not allowed: give at least 1, or leave the option out for no limit".into())
        }
        Ok(n) => Ok(std::num::NonZeroUsize::new(n).expect("not 0")),
        Err(_) => Err(format!(
            "{text:?} is not a count; write a whole number such as 1000"
        )),
    }
}

/// The exit-code table, for the end of every `--help`.
pub fn exit_codes_help(bin: &str) -> String {
    Code::help_table(bin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_say_what_is_wrong() {
        assert_eq!(parse_count("5").unwrap().get(), 5);
        assert!(parse_count("0").unwrap_err().contains("at least 1"));
        assert!(parse_count("-3").unwrap_err().contains("whole number"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("15").unwrap(), Duration::from_secs(15));
        assert_eq!(parse_duration("0.5").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1h 30m").unwrap(), Duration::from_secs(5400));
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("NaN").is_err());
    }
}
