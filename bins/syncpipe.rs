//! `syncpipe`: the operator's command beside the pipeline's programs.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use syncpipe::cli::{self, Verbosity};
use syncpipe::syncpipe::{import, status};

/// Look after syncpipe's pipelines: their status, importing an lsyncd configuration
///
/// $ syncpipe status
/// $ syncpipe import-lsyncd /etc/lsyncd/lsyncd.conf.lua
#[derive(Parser, Debug)]
#[command(version, after_help = cli::exit_codes_help("syncpipe"))]
struct Args {
    #[command(subcommand)]
    command: Command,

    #[command(flatten)]
    verbosity: Verbosity,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Every sync on this host, one line per target: state, lag, last error
    ///
    /// Reads the status file each sync's pushd writes (--status-file; the
    /// units put it in /run/syncpipe/NAME/pushd.json) and lists every
    /// target: its state (in-sync, behind, syncing-initial, never-synced,
    /// held, failing), its lag in events and seconds, and the last error
    /// with since when it fails; a pull replica also its feed (relayd.json:
    /// the consumer's pending messages, seconds behind, last seq written).
    /// A two-way pair (bisync-watch@NAME, /run/syncpipe/NAME/bisync.json)
    /// is one line: in-sync, syncing-initial or failing. A sync configured
    /// in /etc/syncpipe with
    /// no status file, or one not rewritten for 30 s, is `not-running` or
    /// `stale`. Exit code 17 when any target is failing or held, a
    /// replica's broker does not answer, or a sync is not running: usable
    /// as a monitoring check.
    ///
    /// $ syncpipe status
    ///
    /// $ syncpipe status www --json
    #[command(after_help = cli::exit_codes_help("syncpipe"))]
    Status {
        /// Only this sync (/etc/syncpipe/NAME.conf, /run/syncpipe/NAME/)
        #[arg(value_name = "NAME")]
        name: Option<String>,
        /// Print the status files' contents as one JSON array
        #[arg(long)]
        json: bool,
        /// Where the syncs' runtime directories are
        #[arg(
            long,
            value_name = "DIR",
            default_value = "/run/syncpipe",
            env = "SYNCPIPE_RUN_DIR"
        )]
        run_dir: PathBuf,
        /// Where the syncs' configs are
        #[arg(
            long,
            value_name = "DIR",
            default_value = "/etc/syncpipe",
            env = "SYNCPIPE_CONF_DIR"
        )]
        conf_dir: PathBuf,
    },
    /// Turn an lsyncd configuration into one syncpipe config per sync{}
    ///
    /// Evaluates FILE with a real Lua 5.4, as lsyncd 2.2 reads it (its
    /// `settings`, `sync` and `default.rsync`/`rsyncssh`/`direct`; loops,
    /// functions and string building work; no `io`, no `os.execute`),
    /// writes DIR/NAME.conf for each sync{} (NAME from its source path),
    /// and prints a table: every lsyncd option, the syncpipe key or flag it
    /// became, and what could not be carried over, why, and what to do.
    /// Exit code 15 when something could not be carried over.
    ///
    /// $ syncpipe import-lsyncd --dir /etc/syncpipe /etc/lsyncd/lsyncd.conf.lua
    /// $ syncpipe import-lsyncd --stdout --name www lsyncd.conf.lua
    #[command(name = "import-lsyncd", after_help = cli::exit_codes_help("syncpipe"))]
    ImportLsyncd {
        /// The lsyncd configuration (lsyncd.conf.lua)
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Write the configs into DIR
        #[arg(
            long,
            value_name = "DIR",
            default_value = "/etc/syncpipe",
            conflicts_with = "stdout"
        )]
        dir: PathBuf,
        /// Print the configs on stdout (the table goes to stderr) instead of writing them
        #[arg(long)]
        stdout: bool,
        /// Name the config NAME (one sync), or a pattern where `{}` is the
        /// name derived from each source (several syncs)
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
        /// Replace configs that exist already
        #[arg(long)]
        force: bool,
        /// Also run lsyncd and the imported pipeline on a sample tree in a
        /// temporary directory, make changes, and say whether both targets
        /// end with the same files (needs lsyncd installed)
        #[arg(long)]
        check: bool,
    },
}

fn main() -> ExitCode {
    let args: Args = cli::parse("syncpipe");
    cli::run_coded("syncpipe", args.verbosity, || match args.command {
        Command::Status {
            name,
            json,
            run_dir,
            conf_dir,
        } => status::run(&status::Options {
            name,
            json,
            run_dir,
            conf_dir,
        }),
        Command::ImportLsyncd {
            file,
            dir,
            stdout,
            name,
            force,
            check,
        } => import::run(&import::Options {
            file,
            dir: (!stdout).then_some(dir),
            naming: import::Naming { name },
            force,
            check,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn verify_cli() {
        Args::command().debug_assert();
    }
}
