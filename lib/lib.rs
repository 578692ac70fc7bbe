//! syncpipe: real-time file synchronisation for Linux, as small programs that
//! compose through a JSON-lines event stream.
//!
//! The binaries under `bins/` only parse flags; everything they do lives here,
//! a folder per program beside the parts they share:
//!
//! ```text
//! watchd | batchd | pushd          the pipeline, one folder each
//!   watchd/    inotify/fanotify watch tree -> event records
//!   batchd/    coalesces events into batches (the pure Batcher + its loop)
//!   pushd/     applies batches to targets: the reader and one worker per
//!              target over pure parts (pending, retry, the health table); plan,
//!              guards, rsync, --direct, state, --dry-run preview, pull
//!              (--from); agent/ (pushd --serve on ssh targets, its client)
//! bisync/      two-way sync of two replicas (planner, scan, exec, --watch)
//! keysetup/    ssh keys: authorized_keys, known_hosts, ssh_config, checks
//! syncpipe/    the operator's command: import-lsyncd (lsyncd config -> units), status
//! wire/        what they all speak: records, paths, line reading, transport
//! fold/        the shared folding core (events -> changes) and its model test
//! location     a target or replica: local path or [user@]host:path
//! ssh          the ssh flags (one clap group), settings, shared connections, quoting
//! exclude      the --exclude syntax of watchd and bisync
//! limit        --max-delete, one type for pushd and bisync
//! os/          signals, systemd notify, mounts, interruptible waits, beneath
//! cli/         what every main shares: logging, exit codes, man pages,
//!              the terminal progress bar
//! health/      target states, STATUS= words, status file, metrics text
//! ```

pub mod batchd;
pub mod bisync;
pub mod cli;
pub mod exclude;
pub(crate) mod fold;
#[doc(hidden)]
pub mod fuzz;
pub mod health;
pub mod keysetup;
pub mod limit;
pub mod location;
pub(crate) mod os;
pub mod pushd;
#[cfg(feature = "relay")]
pub mod relayd;
pub mod ssh;
pub mod syncpipe;
#[cfg(test)]
mod testconfig;
pub mod watchd;
pub mod wire;
