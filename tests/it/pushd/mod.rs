//! pushd against real targets: local directories, sshd on loopback and an
//! rsync daemon, fed records written by the test on its stdin.

mod beneath;
pub mod churn;
mod dryrun;
mod excludes;
mod failures;
mod guards;
pub mod harness;
mod inprocess;
mod input;
mod kinds;
mod never_worked;
mod pull;
mod quickcheck;
mod remote;
mod servers;
