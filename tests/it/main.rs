//! Integration tests: the real binaries on real files, real inotify, real
//! rsync and sshd. One test crate, so the support code is built once.

mod batchd;
mod bisync;
mod demo;
mod fuzz;
mod generated;
mod health;
mod keysetup;
mod logging;
mod pipeline;
mod privatetmp;
mod progress;
mod pushd;
#[cfg(feature = "relay")]
mod relayd;
mod shells;
mod support;
mod syncpipe;
mod systemd;
mod transport;
mod units;
mod watchd;
/// The same tests with `--backend fanotify`.
// Compiled twice on purpose: once per backend (the module's path says which).
#[allow(clippy::duplicate_mod)]
#[path = "watchd.rs"]
mod watchd_fanotify;
mod wire;
