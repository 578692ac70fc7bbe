//! Integration tests: the real binaries on real files, real inotify, real
//! rsync and sshd. One test crate, so the support code is built once.

mod batchd;
mod bisync;
mod generated;
mod keysetup;
mod pipeline;
mod pushd;
#[cfg(feature = "relay")]
mod relayd;
mod support;
mod systemd;
mod transport;
mod units;
mod watchd;
mod wire;
