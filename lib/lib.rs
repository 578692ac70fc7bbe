//! syncpipe: real-time file synchronisation for Linux, as small programs that
//! compose through a JSON-lines event stream.
//!
//! The binaries under `bins/` only parse flags; everything they do lives here,
//! one module per job, so unit tests reach it without spawning processes.

pub mod apply;
pub mod batchd;
pub mod batcher;
pub mod beneath;
pub mod bisync;
pub mod cli;
pub mod direct;
pub mod event;
mod eventwrite;
pub mod exclude;
pub mod exit;
pub mod fold;
#[doc(hidden)]
pub mod fuzz;
pub mod interruptible;
pub mod keys;
pub mod log;
pub mod manpage;
pub mod mounts;
pub mod plan;
pub mod push;
pub mod pushd;
pub mod pushstate;
pub mod rsync;
pub mod signals;
pub mod stream;
pub mod syncpipe;
pub mod systemd;
pub mod target;
#[cfg(test)]
mod testconfig;
pub mod transport;
pub mod watch;
pub mod wirepath;
