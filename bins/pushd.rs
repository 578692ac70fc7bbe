//! `pushd`: apply a syncpipe stream to one or more targets with rsync.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use syncpipe::cli::exit::{coded, Code};
use syncpipe::cli::{self, parse_duration, Verbosity};
use syncpipe::limit::MaxDelete;
use syncpipe::location::Target;
use syncpipe::pushd::agent::push::AgentSettings;
use syncpipe::pushd::apply::Guards;
use syncpipe::pushd::rsync::RsyncSettings;
use syncpipe::pushd::{self, Config, DeleteMode, Retry};
use syncpipe::ssh::{SshArgs, SshSettings};

/// Apply a stream of changes to targets with rsync (in bash/zsh run it as `env pushd`: plain `pushd` is the shell's builtin)
///
/// Reads records (from watchd or batchd) on stdin and brings every TARGET to the source's state:
/// a local directory, [user@]host:/path (rsync over ssh) or an rsync daemon
/// (host::module/path, rsync://host[:port]/module/path). Writes one JSON
/// `result` record per transfer and target on stdout.
///
/// bash and zsh have a `pushd` builtin (the directory stack) that wins over
/// this program, in scripts too: `pushd --help` printing "pushd [-n] [+N |
/// -N | dir]" was the builtin. Write `env pushd` or /usr/local/bin/pushd, or
/// install completions/pushd-function.sh for interactive shells.
///
/// $ watchd /data | batchd -d 15 | env pushd backup1:/srv/data /mnt/copy
#[derive(Parser, Debug)]
#[command(name = "pushd", version, after_help = cli::exit_codes_help("pushd"))]
struct Args {
    /// Where to push: DIR, [user@]host:PATH, host::module/PATH, rsync://host[:port]/module/PATH
    #[arg(required_unless_present = "serve", value_name = "TARGET")]
    targets: Vec<OsString>,

    /// Pull into the one local TARGET from UPSTREAM (DIR or [user@]host:PATH)
    /// instead of pushing: for replicas that follow the stream themselves
    /// (relayd subscribe | batchd | pushd --from)
    #[arg(long, value_name = "UPSTREAM", help_heading = "Pull replica")]
    from: Option<OsString>,
    /// With --from, when the upstream is itself a replica (tiers): its
    /// --state FILE on its host; nothing is pulled before it has applied it
    #[arg(
        long,
        value_name = "FILE",
        requires = "from",
        help_heading = "Pull replica"
    )]
    upstream_state: Option<OsString>,
    /// Be the agent for DIR on the far side of ssh: apply a pusher's
    /// requests on stdin beneath DIR (started by pushd itself over ssh;
    /// what was applied is recorded in $XDG_STATE_HOME/syncpipe/agent/;
    /// docs/protocol.md)
    #[arg(
        long,
        value_name = "DIR",
        conflicts_with = "targets",
        help_heading = "ssh"
    )]
    serve: Option<PathBuf>,
    /// With --serve: keep the pusher's owners and set-id bits (when run as root)
    #[arg(long, requires = "serve", help_heading = "ssh")]
    owners: bool,
    /// With --serve: the forced command of a key limited to DIR (keysetup
    /// --only pushd:DIR); pushd's rsync goes to rrsync -wo DIR
    #[arg(
        long,
        requires = "serve",
        conflicts_with = "owners",
        help_heading = "ssh"
    )]
    restricted: bool,
    /// The agent on ssh targets, as the remote shell runs it (default `env pushd`)
    #[arg(long, value_name = "PROGRAM", help_heading = "ssh")]
    agent_path: Option<String>,
    /// ssh targets: rsync alone, no agent (small files, renames and
    /// deletions then cost an rsync run each batch)
    #[arg(long, conflicts_with = "agent_path", help_heading = "ssh")]
    no_agent: bool,

    /// Local targets: copy, rename and remove with plain file system calls
    /// instead of rsync (full syncs still use rsync)
    #[arg(long, help_heading = "Sync")]
    direct: bool,
    /// Local targets, as root: a batch of at most N paths is applied like
    /// --direct, without starting rsync, unless rsync flags ask for more
    /// (filters, --rsync-opt, --checksum, --inplace, --partial, --bwlimit,
    /// --rsync-binary); 0: always rsync. A failure is applied by rsync and
    /// warned once per cause; one that lasts turns this off until restart
    #[arg(long, value_name = "N", default_value_t = 256, help_heading = "Sync")]
    direct_max: usize,
    /// Which transfers may delete on the target
    #[arg(long, value_enum, default_value = "true", help_heading = "Sync")]
    delete: DeleteMode,
    /// Skip the full sync at start-up
    #[arg(long, help_heading = "Sync")]
    no_init: bool,
    /// Change nothing: print what each target would get instead
    ///
    /// Every transfer runs rsync with --dry-run (also for --direct) and
    /// writes, before its `result` record (`"dry_run": true`), one `would`
    /// record per path on stdout: `send`, `create`, `attrs`, `hardlink`,
    /// `delete`, `rename` (local targets) or `hold` (a deletion a guard
    /// would refuse), plus a summary line per transfer on stderr. --state
    /// is read, never written. Exit codes are those of a real run.
    #[arg(short = 'n', long, help_heading = "Sync")]
    dry_run: bool,
    /// Read the stream from a writer's --listen socket instead of stdin,
    /// resuming where --state says
    #[arg(long, value_name = "SOCKET", help_heading = "Sync")]
    connect: Option<PathBuf>,
    /// Remember per target the stream and last applied seq in FILE, to resume
    #[arg(long, value_name = "FILE", help_heading = "Sync")]
    state: Option<PathBuf>,
    /// Transfers running at the same time, over all targets
    #[arg(long, default_value_t = 4, value_name = "N", help_heading = "Sync")]
    max_procs: usize,
    /// Pending changes per target before falling back to a full sync
    #[arg(
        long,
        default_value_t = 100_000,
        value_name = "N",
        help_heading = "Sync"
    )]
    max_pending: usize,
    /// First retry delay after a failed transfer
    #[arg(long, default_value = "1s", value_parser = parse_duration, help_heading = "Sync")]
    retry_min: Duration,
    /// Longest retry delay (the delay doubles per failure up to this)
    #[arg(long, default_value = "60s", value_parser = parse_duration, help_heading = "Sync")]
    retry_max: Duration,
    /// Give up a transfer after this long without I/O (rsync --timeout,
    /// ssh ConnectTimeout); 0: never
    #[arg(long, default_value = "120s", value_parser = parse_duration, help_heading = "Sync")]
    io_timeout: Duration,
    /// Random part of each retry delay, 0 to 1
    #[arg(
        long,
        default_value_t = 0.5,
        value_name = "FRACTION",
        help_heading = "Sync"
    )]
    retry_jitter: f64,

    /// Hold the deletions of a batch or full sync past N entries, or P% of the target
    #[arg(long, default_value = "50%", value_parser = MaxDelete::parse, value_name = "N|P%", help_heading = "Safety")]
    max_delete: MaxDelete,
    /// Allow a full sync from an empty source root to delete on the target
    #[arg(long, help_heading = "Safety")]
    allow_empty_source: bool,
    /// Apply, in the start-up transfer, the deletions the guards would hold
    ///
    /// A guard that refuses deletions (--max-delete, an empty or unmounted
    /// or replaced source root) holds them: the target is reported `held`
    /// and they stay pending. Once the source is checked, `kill -USR2 PID`
    /// releases them in a running pushd; this flag does the same for the
    /// first transfer of each target after a restart.
    #[arg(long, help_heading = "Safety")]
    release_held: bool,
    /// Keep retrying a target whose first transfer fails for good (unknown
    /// host, refused or changed key, no rsync there, missing parent
    /// directory); without it pushd exits with that failure's code (6, 7,
    /// 8 or 1) at start, as a target that never worked needs a person
    #[arg(long, help_heading = "Sync")]
    insist: bool,
    /// Refuse to sync unless the source root is a mount point
    #[arg(long, help_heading = "Safety")]
    require_mount: bool,
    /// Refuse to sync unless FILE (relative to the source root) exists
    #[arg(long, value_name = "FILE", help_heading = "Safety")]
    sentinel: Option<PathBuf>,

    /// Compress data on the wire
    #[arg(short = 'z', long, help_heading = "rsync")]
    compress: bool,
    /// Bandwidth limit (rsync's --bwlimit, e.g. 1m)
    #[arg(long, value_name = "RATE", help_heading = "rsync")]
    bwlimit: Option<String>,
    /// Compare files by checksum, not size and time
    #[arg(short = 'c', long, help_heading = "rsync")]
    checksum: bool,
    /// Update files in place
    #[arg(long, help_heading = "rsync")]
    inplace: bool,
    /// Keep partially transferred files
    #[arg(long, help_heading = "rsync")]
    partial: bool,
    /// rsync program on the remote side (run by its shell: `sudo rsync`
    /// works); the local one is --rsync-binary
    #[arg(long, value_name = "PROGRAM", help_heading = "rsync")]
    rsync_path: Option<String>,
    /// rsync program to run on this machine (lsyncd's rsync.binary)
    /// [default: rsync on PATH]; the remote one is --rsync-path
    // OsString, not PathBuf: clap refuses an empty path, and the unit
    // passes the config's RSYNC_BINARY= as it is (empty: PATH's rsync).
    #[arg(long, value_name = "PATH", value_hint = clap::ValueHint::ExecutablePath, help_heading = "rsync")]
    rsync_binary: Option<OsString>,
    /// One more argument for rsync, passed through (repeatable)
    #[arg(
        long,
        value_name = "ARG",
        allow_hyphen_values = true,
        help_heading = "rsync"
    )]
    rsync_opt: Vec<OsString>,
    /// Password file for rsync daemon targets
    #[arg(long, value_name = "FILE", help_heading = "rsync")]
    password_file: Option<PathBuf>,

    #[command(flatten)]
    ssh: SshArgs,

    /// Excluded paths are never sent, and never deleted on the target
    #[command(flatten)]
    excludes: cli::ExcludeArgs,

    #[command(flatten)]
    health: cli::HealthArgs,

    #[command(flatten)]
    verbosity: Verbosity,
}

impl Args {
    fn into_config(self) -> anyhow::Result<Config> {
        let cwd = std::env::current_dir().map_err(|e| {
            coded(
                Code::Usage,
                format!("cannot read the working directory: {e}"),
            )
        })?;
        let targets = self
            .targets
            .iter()
            .map(|t| Target::parse(t, &cwd).map_err(|e| coded(Code::Usage, e.to_string())))
            .collect::<anyhow::Result<Vec<_>>>()?;
        syncpipe::location::refuse_private_tmp(&targets)?;
        let pull = match &self.from {
            None => None,
            Some(from) => {
                if targets.len() != 1 || !targets[0].is_local() {
                    return Err(coded(
                        Code::Usage,
                        "--from pulls into exactly one local directory TARGET",
                    ));
                }
                if self.direct {
                    return Err(coded(
                        Code::Usage,
                        "--direct copies from a local source; a pull (--from) uses rsync",
                    ));
                }
                if self.dry_run {
                    return Err(coded(
                        Code::Usage,
                        "--dry-run does not preview a pull (--from) yet",
                    ));
                }
                let location =
                    pushd::pull::Upstream::parse(from, &cwd).map_err(|e| coded(Code::Usage, e))?;
                Some(pushd::pull::Upstream {
                    location,
                    state: self
                        .upstream_state
                        .as_ref()
                        .map(|s| std::os::unix::ffi::OsStrExt::as_bytes(s.as_os_str()).to_vec()),
                })
            }
        };
        if !(0.0..=1.0).contains(&self.retry_jitter) {
            return Err(coded(Code::Usage, "--retry-jitter must be between 0 and 1"));
        }
        let excludes = self.excludes.compile()?;
        if self.retry_min > self.retry_max {
            return Err(coded(Code::Usage, "--retry-min is longer than --retry-max"));
        }
        let io_timeout =
            Some(self.io_timeout.as_secs().max(1)).filter(|_| !self.io_timeout.is_zero());
        let absolute = |p: PathBuf| if p.is_absolute() { p } else { cwd.join(p) };
        Ok(Config {
            targets,
            rsync: RsyncSettings {
                compress: self.compress,
                bwlimit: self.bwlimit,
                checksum: self.checksum,
                inplace: self.inplace,
                partial: self.partial,
                rsync_path: self.rsync_path,
                extra: self.rsync_opt,
                filters: excludes.rsync_filters(),
                password_file: self.password_file.map(absolute),
                ssh: SshSettings {
                    identity: self.ssh.identity.clone().map(absolute),
                    connect_timeout: io_timeout,
                    ..self.ssh.settings()
                },
                delete_missing_args_works: true,
                io_timeout,
                rsync_binary: self
                    .rsync_binary
                    .filter(|p| !p.is_empty())
                    .map(PathBuf::from)
                    .map(|p| {
                        // A bare name is looked up on PATH, as `rsync` is.
                        if p.components().count() > 1 {
                            absolute(p)
                        } else {
                            p
                        }
                    }),
                dry_run: self.dry_run,
                agent: (!self.no_agent).then(|| AgentSettings {
                    program: self
                        .agent_path
                        .map_or_else(|| "env pushd".into(), Into::into),
                    ..AgentSettings::default()
                }),
                in_process_max: self.direct_max,
            },
            guards: Guards {
                max_delete: self.max_delete,
                allow_empty_source: self.allow_empty_source,
                require_mount: self.require_mount,
                sentinel: self.sentinel,
            },
            delete: self.delete,
            init: !self.no_init,
            state: self.state.map(absolute),
            max_procs: self.max_procs.max(1),
            max_pending: self.max_pending.max(1),
            retry: Retry {
                min: self.retry_min,
                max: self.retry_max,
                jitter: self.retry_jitter,
            },
            direct: self.direct,
            excludes,
            connect: self.connect.map(absolute),
            release_held: self.release_held,
            insist: self.insist,
            pull,
            health: self.health.files(&cwd),
        })
    }
}

fn main() -> ExitCode {
    let args: Args = cli::parse("pushd");
    cli::run("pushd", args.verbosity, || {
        if let Some(dir) = &args.serve {
            if args.restricted {
                return pushd::agent::serve::serve_restricted(dir);
            }
            return pushd::agent::serve::serve(dir, args.owners);
        }
        let config = args.into_config()?;
        pushd::run(config)
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
