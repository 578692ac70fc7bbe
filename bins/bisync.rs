//! `bisync`: two-way synchronisation of two replicas.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use syncpipe::bisync::planner::Prefer;
use syncpipe::bisync::{self, Config, Spec};
use syncpipe::cli::exit::{coded, Code};
use syncpipe::cli::{self, Verbosity};
use syncpipe::limit::MaxDelete;
use syncpipe::ssh::SshArgs;
use syncpipe::wire::path::WirePath;

/// Keep two directory trees in sync both ways, locally or over ssh.
///
/// bisync compares each replica with the state both had after the last run
/// (the archive, under $XDG_STATE_HOME/syncpipe/bisync) and carries a change
/// made on one side to the other: new files, edits, deletes, renames, modes.
/// A path changed differently on both sides is a conflict: by default both
/// versions are kept, the older one renamed NAME.conflict-<host>-<time> on
/// both replicas; --prefer picks a winner instead. A path that changes again
/// while bisync runs is skipped and picked up by the next run.
///
/// A first run (no archive) deletes and overwrites nothing. A replica that
/// is missing or empty while the archive lists files stops the run, and so
/// does a plan deleting more than --max-delete.
///
/// For a remote replica, bisync runs itself there over ssh (bisync --serve).
///
/// With --watch, bisync keeps running: it starts watchd on both replicas
/// (over ssh for a remote one), syncs in full once, then after each change
/// (gathered for --delay) re-reads only the paths that changed. Any doubt a
/// watcher saw everything (an inotify overflow, a malformed record, a
/// restarted watcher or a lost connection) brings a full scan. It tells
/// systemd READY=1 after the first full sync and STATUS= after each run, and
/// stops on SIGTERM or SIGINT with exit code 0; SIGHUP asks for a full scan.
///
/// $ bisync ~/notes laptop:notes
///
/// $ bisync --dry-run --exclude '*.tmp' /srv/a backup@b:/srv/a
///
/// $ bisync --watch --delay 2s /srv/a backup@b:/srv/a
#[derive(Parser, Debug)]
#[command(name = "bisync", version, after_long_help = cli::exit_codes_help("bisync"))]
struct Args {
    /// First replica: DIR or [user@]host:PATH
    #[arg(value_name = "REPLICA_A", required_unless_present = "serve")]
    a: Option<OsString>,

    /// Second replica: DIR or [user@]host:PATH
    #[arg(value_name = "REPLICA_B", required_unless_present = "serve")]
    b: Option<OsString>,

    /// Compare file content by hash instead of size, mtime and inode
    #[arg(short = 'c', long)]
    checksum: bool,

    /// Who wins a conflict, and on a first sync (no archive) which version
    /// of a file that differs counts: a, b, newer, older, larger or
    /// smaller. Default: keep both (the loser as NAME.conflict-…). A first
    /// sync still deletes nothing
    #[arg(long, value_enum, value_name = "WHO")]
    prefer: Option<PreferArg>,

    /// Compare files by size only: modification times and inodes are not
    /// trusted (replicas on filesystems that lose or shift times). A change
    /// that keeps the size is not seen
    #[arg(long, conflicts_with = "checksum")]
    size_only: bool,

    /// Stop before deleting more than N entries (or P% of a replica's
    /// entries) on either side
    #[arg(long, value_name = "N|P%", default_value = "50%", value_parser = MaxDelete::parse, help_heading = "Safety")]
    max_delete: MaxDelete,

    /// Names that differ only in Unicode normalization (NFC/NFD, e.g. from
    /// macOS) are the same file when each replica has one spelling; each
    /// keeps its own. Without it they are reported and synced as distinct
    #[arg(long, conflicts_with = "watch")]
    normalization: bool,

    /// Names that differ only in case are the same file when each replica
    /// has one spelling (a replica on a case-insensitive filesystem)
    #[arg(long, conflicts_with = "watch")]
    case_insensitive: bool,

    /// Refuse to run unless NAME (relative to each root, not excluded)
    /// exists on both replicas: proof both are mounted and the right ones
    #[arg(long, value_name = "NAME", help_heading = "Safety")]
    sentinel: Option<PathBuf>,

    /// Go ahead although (nearly) every file on one replica changed since
    /// the last sync (at least 90% of at least 10 files, e.g. a restored
    /// backup or a touched tree); without it such a run stops with exit 13
    #[arg(long, help_heading = "Safety")]
    force: bool,

    /// Keep what a sync replaces or deletes on replica A: hard-linked to
    /// DIR/<UTC time of the run>/<path>, DIR relative to A's root and
    /// left out of the sync on both sides
    #[arg(long, value_name = "DIR", help_heading = "Backups")]
    backup_dir_a: Option<PathBuf>,

    /// The same for replica B (which may be remote)
    #[arg(long, value_name = "DIR", help_heading = "Backups")]
    backup_dir_b: Option<PathBuf>,

    /// Delete backup run folders older than DURATION before a run changes
    /// anything (30days, 12h) [default: keep all]
    #[arg(long, value_name = "DURATION", value_parser = cli::parse_duration, help_heading = "Backups")]
    backup_keep: Option<std::time::Duration>,

    /// Print the plan and change nothing
    #[arg(short = 'n', long)]
    dry_run: bool,

    /// Write the plan and results as JSON lines on stdout (docs/protocol.md)
    #[arg(long)]
    json: bool,

    /// Exit 9 instead of 0 when changes were made (for scripts that act on
    /// "something changed"; the summary line and --json say it either way)
    #[arg(long)]
    exit_changes: bool,

    #[command(flatten)]
    excludes: cli::ExcludeArgs,

    /// Keep running: sync whenever either replica changes (watchd on both)
    #[arg(
        short = 'w',
        long,
        help_heading = "Continuous",
        conflicts_with = "dry_run"
    )]
    watch: bool,

    /// With --watch: gather changes this long after the first before a run
    /// (a bare number is seconds; 500ms, 2s)
    #[arg(
        short = 'd',
        long,
        value_name = "DURATION",
        default_value = "1s",
        value_parser = cli::parse_duration,
        help_heading = "Continuous"
    )]
    delay: std::time::Duration,

    /// With --watch: the watchd program for a local replica [default: the
    /// watchd next to bisync, else from PATH]
    #[arg(long, value_name = "PROGRAM", help_heading = "Continuous")]
    watchd: Option<OsString>,

    /// With --watch: the watchd program on remote hosts
    #[arg(
        long,
        value_name = "PROGRAM",
        default_value = "watchd",
        help_heading = "Continuous"
    )]
    remote_watchd: OsString,

    /// Directory for archives and locks
    #[arg(long, value_name = "DIR", env = "BISYNC_STATE_DIR")]
    state_dir: Option<PathBuf>,

    #[command(flatten)]
    ssh: SshArgs,

    /// The bisync program on remote hosts
    #[arg(
        long,
        value_name = "PROGRAM",
        default_value = "bisync",
        help_heading = "ssh"
    )]
    remote_bisync: OsString,

    /// Serve the replica at PATH on stdin/stdout (what bisync runs on the
    /// far side of ssh; docs/protocol.md)
    #[arg(long, value_name = "PATH", conflicts_with_all = ["a", "b"], help_heading = "ssh")]
    serve: Option<PathBuf>,

    /// With --serve: apply the client's owners (as root) and set-id bits.
    /// Off by default, so a client (a restricted key used as root) cannot
    /// put a setuid-root file into the replica: set-id bits are stripped
    /// and nothing is chowned
    #[arg(long, requires = "serve", help_heading = "ssh")]
    owners: bool,

    // With --watch: the status file and metrics (runs, conflicts, …).
    #[command(flatten)]
    health: cli::HealthArgs,

    #[command(flatten)]
    verbosity: Verbosity,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum PreferArg {
    A,
    B,
    Newer,
    Older,
    Larger,
    Smaller,
}

impl Args {
    fn into_config(self) -> anyhow::Result<Config> {
        let usage = |e: anyhow::Error| coded(Code::Usage, format!("{e:#}"));
        let spec = |arg: Option<OsString>| Spec::parse(&arg.unwrap_or_default());
        let keep_secs = self.backup_keep.map(|d| d.as_secs());
        let mut exclude_args = self.excludes;
        let mut backup = [None, None];
        for (slot, (flag, dir)) in backup.iter_mut().zip([
            ("--backup-dir-a", self.backup_dir_a),
            ("--backup-dir-b", self.backup_dir_b),
        ]) {
            let Some(dir) = dir else { continue };
            let rel = relative(flag, dir).map_err(usage)?;
            let text = String::from_utf8(rel.as_bytes().to_vec())
                .map_err(|_| coded(Code::Usage, format!("{flag}: give a UTF-8 name")))?;
            // Last, so no user pattern can bring the backups into the sync.
            exclude_args
                .exclude
                .push(bisync::backup::exclude_pattern(&text));
            *slot = Some(bisync::backup::Backup {
                dir: rel,
                keep_secs,
            });
        }
        let excludes = exclude_args.compile()?;
        let sentinel = match self.sentinel {
            Some(s) => {
                let rel = relative("--sentinel", s).map_err(usage)?;
                if excludes.is_excluded(rel.as_path(), false) {
                    return Err(coded(
                        Code::Usage,
                        format!(
                            "--sentinel {rel:?} is excluded from the sync: it would never be found"
                        ),
                    ));
                }
                Some(rel)
            }
            None => None,
        };
        Ok(Config {
            a: spec(self.a)?,
            b: spec(self.b)?,
            checksum: self.checksum,
            prefer: match self.prefer {
                None => Prefer::Keep,
                Some(PreferArg::A) => Prefer::A,
                Some(PreferArg::B) => Prefer::B,
                Some(PreferArg::Newer) => Prefer::Newer,
                Some(PreferArg::Older) => Prefer::Older,
                Some(PreferArg::Larger) => Prefer::Larger,
                Some(PreferArg::Smaller) => Prefer::Smaller,
            },
            max_delete: self.max_delete,
            size_only: self.size_only,
            sentinel,
            force: self.force,
            dry_run: self.dry_run,
            json: self.json,
            exit_changes: self.exit_changes,
            excludes,
            backup,
            fold: bisync::names::Fold {
                normalization: self.normalization,
                case: self.case_insensitive,
            },
            state_dir: self.state_dir,
            ssh: self.ssh.settings(),
            remote_bisync: self.remote_bisync,
            watch: self.watch.then_some(bisync::WatchSettings {
                delay: self.delay,
                watchd: self.watchd,
                remote_watchd: self.remote_watchd,
                health: self
                    .health
                    .files(&std::env::current_dir().unwrap_or_default()),
            }),
        })
    }
}

/// A path relative to the replica roots (`--sentinel`, `--backup-dir-a`):
/// no `..`, not absolute.
fn relative(flag: &str, name: PathBuf) -> anyhow::Result<WirePath> {
    use std::path::Component;
    let parts: Vec<_> = name.components().collect();
    anyhow::ensure!(
        !parts.is_empty() && parts.iter().all(|c| matches!(c, Component::Normal(_))),
        "{flag} {}: give a path relative to the replica roots, without `..`",
        name.display()
    );
    let rel: PathBuf = parts.iter().collect();
    Ok(WirePath::from_bytes(
        rel.as_os_str().as_encoded_bytes().to_vec(),
    ))
}

fn main() -> ExitCode {
    let args: Args = cli::parse("bisync");
    let verbosity = args.verbosity;
    cli::run_coded("bisync", verbosity, || {
        if let Some(path) = args.serve {
            return bisync::serve(&path, args.owners).map(|()| Code::Ok);
        }
        bisync::run(args.into_config()?)
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
