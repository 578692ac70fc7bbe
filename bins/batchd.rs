//! `batchd`: folds the event stream on stdin into batches on stdout.

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use syncpipe::batchd::{self, Config};
use syncpipe::cli::{self, Verbosity};
use syncpipe::wire::transport;

/// Fold the syncpipe event stream into batches of changes
///
/// Reads the stream (as `watchd` writes it) on stdin and writes `batch`
/// records on stdout: the events of a window, folded per path (repeated
/// modifies become one update, a file created and deleted again vanishes, a
/// deleted directory swallows what happened below it, a rename stays a rename
/// where a target can do it). Other records pass through in order. A batch
/// is written once the input has been quiet for SETTLE (50 ms), DELAY after
/// its first event at the latest, as soon as MAX changes are pending, at end
/// of input, on SIGUSR1 (which also logs the counts), and before stopping on
/// SIGTERM or SIGINT. `--settle 0` makes every batch wait the whole DELAY,
/// as lsyncd's `delay` does.
///
/// $ watchd /data | batchd -d 15 | env pushd backup:/srv/data
///
/// $ watchd /data | batchd -d 500ms -n 10000
#[derive(Parser, Debug)]
#[command(name = "batchd", version, after_help = cli::exit_codes_help("batchd"))]
struct Args {
    /// Write a batch this long after its first event at the latest: the
    /// longest a change waits (15s, 500ms, 2m; a bare number is seconds)
    #[arg(short, long, value_name = "DURATION", default_value = "15s", value_parser = cli::parse_duration)]
    delay: Duration,

    /// Write a batch early once no event came for this long, so a source
    /// that went quiet does not wait out the delay (0: off, every batch
    /// waits the whole delay, as lsyncd's)
    #[arg(long, value_name = "DURATION", default_value = "50ms", value_parser = cli::parse_duration)]
    settle: Duration,

    /// Write a batch early once this many changes are pending (after folding)
    #[arg(short = 'n', long, value_name = "MAX", value_parser = cli::parse_count)]
    max_events: Option<NonZeroUsize>,

    /// Read the stream from a writer's unix socket (`watchd --listen PATH`)
    /// instead of stdin; when the writer goes away, reconnect and resume
    #[arg(long, value_name = "PATH", help_heading = "Sockets")]
    connect: Option<PathBuf>,

    /// Serve batches on a unix socket at PATH instead of stdout, for any
    /// number of readers (`pushd --connect PATH`) that resume where they left off
    #[arg(long, value_name = "PATH", help_heading = "Sockets")]
    listen: Option<PathBuf>,

    /// How much a --listen writer keeps for readers that reconnect: a record
    /// count (100000) or a size (64M)
    #[arg(long, value_name = "N|SIZE", value_parser = transport::parse_backlog, help_heading = "Sockets")]
    backlog: Option<transport::BacklogSize>,

    #[command(flatten)]
    health: cli::HealthArgs,

    #[command(flatten)]
    verbosity: Verbosity,
}

impl Args {
    fn config(&self) -> Config {
        Config {
            delay: self.delay,
            settle: (!self.settle.is_zero()).then_some(self.settle),
            max_events: self.max_events.map(NonZeroUsize::get),
            connect: self.connect.clone(),
            output: transport::Output {
                listen: self.listen.clone(),
                backlog: self.backlog.unwrap_or_default(),
            },
            health: self
                .health
                .files(&std::env::current_dir().unwrap_or_default()),
        }
    }
}

fn main() -> ExitCode {
    let args: Args = cli::parse("batchd");
    cli::run("batchd", args.verbosity, || batchd::run(args.config()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn verify_cli() {
        Args::command().debug_assert();
    }

    #[test]
    fn bare_numbers_are_seconds() {
        let args = Args::try_parse_from(["batchd", "-d", "15", "-n", "3"]).unwrap();
        assert_eq!(args.config().delay, Duration::from_secs(15));
        assert_eq!(args.config().max_events, Some(3));
        assert_eq!(args.config().settle, Some(Duration::from_millis(50)));
        let off = Args::try_parse_from(["batchd", "--settle", "0"]).unwrap();
        assert_eq!(off.config().settle, None);
        assert!(Args::try_parse_from(["batchd", "-n", "0"]).is_err());
        assert!(Args::try_parse_from(["batchd", "-d", "soon"]).is_err());
    }
}
