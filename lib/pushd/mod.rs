//! `pushd`: applies the stream's batches to targets, one worker thread per
//! target, with rsync (or `--direct`), retries with backoff, and one
//! `result` record per transfer and target.
//!
//! A slow or dead target never holds back the others: each worker keeps its
//! own pending changes, retry clock and position; only `--max-procs` (a
//! shared count of concurrent transfers) couples them.
//!
//! ```text
//! run       reads the stream, fans records out to the workers, the exit verdict
//! worker    one target's thread: takes work, runs transfers, reports them (the I/O)
//! pending   pure: pending changes and the stream position -> the next batch
//! retry     pure: when to try again (backoff with jitter)
//! guards    held changes (rechecked, released, never dropped); target root check
//! health    pure: one table of every target's state and numbers (lib/health/):
//!           READY=1, STATUS=, the status file and the metrics are said from it
//! progress  rsync --info=progress2 lines -> a full sync's progress
//! shared    what the workers share: output, --state, --max-procs, stop, status
//! plan      a batch's changes -> renames, paths to re-read, subtrees to sync
//! apply     a plan on one target, behind the delete guards
//! pull      --from: a pull replica's transfer and the upstream's checks (tiers)
//! rsync     rsync command lines, runs and exit codes
//! direct    --direct: local targets by plain file system calls
//! fallback  in-process apply failed: warn once per cause, stop a lasting one
//! excluded  --exclude applied to listed paths
//! state     --state: each target's stream and last applied seq
//! agent/    pushd --serve on ssh targets, its protocol and client
//! ```

pub mod agent;
pub mod apply;
pub(crate) mod direct;
pub(crate) mod excluded;
mod fallback;
mod guards;
pub(crate) mod health;
mod pending;
pub mod plan;
pub(crate) mod preview;
pub(crate) mod progress;
pub mod pull;
mod retry;
pub mod rsync;
mod run;
mod shared;
pub mod state;
mod worker;

pub use retry::Retry;
pub use run::run;

use std::path::PathBuf;

use crate::location::Target;
use crate::pushd::apply::Guards;
use crate::pushd::rsync::RsyncSettings;

/// `--delete`, as in lsyncd.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DeleteMode {
    /// Deletions propagate always.
    True,
    /// Never delete on the target.
    False,
    /// Only full syncs (start-up, new stream, overflow) delete.
    Startup,
    /// Only changes seen while running delete; full syncs do not.
    Running,
}

impl DeleteMode {
    pub(crate) fn allows(self, full: bool) -> bool {
        match self {
            DeleteMode::True => true,
            DeleteMode::False => false,
            DeleteMode::Startup => full,
            DeleteMode::Running => !full,
        }
    }
}

pub struct Config {
    pub targets: Vec<Target>,
    pub rsync: RsyncSettings,
    pub guards: Guards,
    pub delete: DeleteMode,
    /// Full sync at start (unless resuming the same stream).
    pub init: bool,
    pub state: Option<PathBuf>,
    pub max_procs: usize,
    /// Past this many pending changes a target just does a full sync.
    pub max_pending: usize,
    pub retry: Retry,
    /// `--direct`: local targets get listed paths without rsync.
    pub direct: bool,
    /// Paths never sent (rsync gets them as filter rules in `rsync` too).
    pub excludes: crate::exclude::Excludes,
    /// `--connect`: read a writer's socket (resuming where the state file
    /// says) instead of stdin.
    pub connect: Option<PathBuf>,
    /// `--release-held`: the start-up transfer of each target applies
    /// what the delete guards would hold (the operator checked the source).
    pub release_held: bool,
    /// `--insist`: a target whose first transfer fails for good (unknown
    /// host, refused key, …) is retried like any other failure instead of
    /// ending pushd with that failure's exit code.
    pub insist: bool,
    /// `--from`: a pull replica, pulling from this upstream into the one
    /// local target (lib/pushd/pull.rs).
    pub pull: Option<pull::Upstream>,
    /// `--status-file`, `--metrics-file` (lib/health/).
    pub health: crate::health::publish::HealthFiles,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delete_modes() {
        assert!(DeleteMode::True.allows(true) && DeleteMode::True.allows(false));
        assert!(!DeleteMode::False.allows(true) && !DeleteMode::False.allows(false));
        assert!(DeleteMode::Startup.allows(true) && !DeleteMode::Startup.allows(false));
        assert!(!DeleteMode::Running.allows(true) && DeleteMode::Running.allows(false));
    }
}
