//! `watchd`: watch a directory tree and write its changes as JSON lines.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use syncpipe::cli::{self, Verbosity};
use syncpipe::watchd::{self, BackendChoice, EventMode};
use syncpipe::wire::transport;

/// Watch a directory tree and write every change as one JSON line on stdout.
///
/// watchd puts an inotify watch on every directory under ROOT (new ones as they
/// appear), or, as root with --backend fanotify/auto, one fanotify mark on each
/// file system, then writes a header line and one event line per change: create,
/// modify, delete, move, attrib, or rescan when the kernel lost events and the
/// whole root must be re-read. Paths are relative to ROOT; names that are not
/// UTF-8 are written as {"bytes": "<base64>"}. The format is docs/protocol.md.
///
/// The header is written, and systemd told READY=1, only once every watch is in
/// place, so a consumer that copies the tree after reading the header misses
/// nothing.
///
/// During a burst watchd reads the kernel's queue once a millisecond instead of
/// being woken by every event: a waiting reader's wake-up is paid by the
/// process making the change. WATCHD_COALESCE_US in the environment sets that
/// pause in microseconds (0: woken by every event), for benchmarks.
///
/// $ watchd /srv/www | batchd -d 15 | env pushd backup:/srv/www
///
/// $ watchd --exclude '*.tmp' --exclude .git/ /data | jq -c 'select(.kind=="delete")'
#[derive(Parser, Debug)]
#[command(name = "watchd", version, after_long_help = cli::exit_codes_help("watchd"))]
struct Args {
    /// Directory tree to watch
    #[arg(value_name = "ROOT")]
    root: PathBuf,

    /// Which content changes to report: close_write (a file once, when its
    /// writer closes it), modify (every write) or all. Creates, deletes, moves
    /// and attribute changes are always reported
    #[arg(long, value_enum, default_value = "close_write", value_name = "MODE")]
    events: EventMode,

    /// How to watch: inotify (a watch per directory, any user), fanotify (one
    /// mark per file system: instant set-up and no watch limit; needs root,
    /// Linux 5.17+ and a file system with file handles; every writer on that
    /// file system, also outside ROOT, then pays for the mark's events), or
    /// auto (fanotify when it can, else inotify; stderr and the header say
    /// which)
    #[arg(
        long,
        value_enum,
        default_value = "auto",
        value_name = "BACKEND",
        env = "WATCHD_BACKEND"
    )]
    backend: BackendChoice,

    /// Excluded paths are not reported; an excluded directory is not watched
    #[command(flatten)]
    excludes: cli::ExcludeArgs,

    /// If ROOT does not exist yet (a disk mounted late at boot), wait for it
    /// instead of exiting with code 3
    #[arg(long, help_heading = "Start-up")]
    wait: bool,

    /// ROOT must be a mount point; with --wait, wait until it is mounted.
    /// Guards against watching the empty directory under an unmounted disk
    #[arg(long, help_heading = "Start-up")]
    require_mount: bool,

    /// Serve the stream on a unix socket at PATH instead of stdout: any number
    /// of readers (`batchd --connect PATH`), each resuming where it left off
    /// while the backlog holds it. A socket passed by systemd (a .socket unit)
    /// is used the same way
    #[arg(long, value_name = "PATH", help_heading = "Output")]
    listen: Option<PathBuf>,

    /// How much a --listen writer keeps for readers that reconnect: a record
    /// count (100000) or a size (64M). A reader further behind is told to do a
    /// full sync
    #[arg(long, value_name = "N|SIZE", value_parser = transport::parse_backlog, help_heading = "Output")]
    backlog: Option<transport::BacklogSize>,

    #[command(flatten)]
    health: cli::HealthArgs,

    #[command(flatten)]
    verbosity: Verbosity,
}

impl Args {
    fn into_config(self) -> anyhow::Result<watchd::Config> {
        Ok(watchd::Config {
            health: self
                .health
                .files(&std::env::current_dir().unwrap_or_default()),
            excludes: self.excludes.compile()?,
            root: self.root,
            mode: self.events,
            backend: self.backend,
            wait: self.wait,
            require_mount: self.require_mount,
            output: transport::Output {
                listen: self.listen,
                backlog: self.backlog.unwrap_or_default(),
            },
        })
    }
}

fn main() -> ExitCode {
    let args: Args = cli::parse("watchd");
    cli::run("watchd", args.verbosity, || {
        watchd::run(args.into_config()?)
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
