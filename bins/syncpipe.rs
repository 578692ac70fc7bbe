//! `syncpipe`: the operator's command beside the pipeline's programs.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use syncpipe::cli::{self, Verbosity};
use syncpipe::syncpipe::import;

/// Look after syncpipe's pipelines: import an lsyncd configuration
///
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
    /// Turn an lsyncd configuration into one syncpipe config per sync{}
    ///
    /// Evaluates FILE with a real Lua 5.4, as lsyncd 2.2 reads it (its
    /// `settings`, `sync` and `default.rsync`/`rsyncssh`/`direct`; loops,
    /// functions and string building work; no `io`, no `os.execute`),
    /// writes DIR/NAME.conf for each sync{} (NAME from its source path),
    /// and prints a table: every lsyncd option, the syncpipe key or flag it
    /// became, and what could not be carried over, why, and what to do.
    /// Exit code 14 when something could not be carried over.
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
