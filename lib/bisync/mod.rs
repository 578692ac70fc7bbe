//! `bisync`: two-way synchronisation of two replicas (what unison does):
//! a scanner per replica, a pure planner, and an executor that never
//! overwrites a path that changed since it was scanned.
//!
//! - [`entry`]: what is known about one path on one replica;
//! - [`planner`]: archive + two scans -> a plan of actions (pure);
//! - [`scan`], [`local`]: a replica on this machine;
//! - [`names`]: names differing only in Unicode normalization or case;
//! - [`replica`]: what the executor asks of any replica;
//! - [`remote`], [`serve`], [`proto`]: a replica over ssh, both ends and
//!   the protocol between them;
//! - [`exec`]: carrying out a plan; [`progress`]: how far a run has got;
//! - [`archive`]: the last synchronised state, and the pair's lock;
//! - [`backup`]: keeping what a sync replaces or deletes (`--backup-dir-a/-b`);
//! - [`report`]: records and lines about the plan and its results;
//! - [`config`]: the replicas and settings of a run ([`Config`]);
//! - [`run`]: one whole run;
//! - [`watch`], [`feed`]: `--watch`, runs driven by both replicas' `watchd`.

pub(crate) mod archive;
pub mod backup;
pub mod config;
pub mod entry;
pub(crate) mod exec;
pub(crate) mod feed;
pub mod local;
pub mod names;
pub mod planner;
pub mod progress;
pub(crate) mod proto;
pub(crate) mod remote;
pub mod replica;
pub mod report;
pub mod run;
pub(crate) mod scan;
pub mod serve;
pub(crate) mod watch;

pub use config::{Config, Spec, WatchSettings};
pub use serve::serve;

use crate::cli::exit::Code;

/// bisync's entry point: one sync, or with [`Config::watch`] one sync after
/// every quiet spell; the exit code tells how it ended.
pub fn run(mut config: Config) -> anyhow::Result<Code> {
    // A remote replica's server and, with --watch, its watcher share one
    // ssh connection, and a reconnect after a drop costs no second login.
    let any_ssh = [&config.a, &config.b]
        .iter()
        .any(|s| matches!(s, Spec::Ssh { .. }));
    let _control = crate::ssh::ControlDir::for_settings(&mut config.ssh, any_ssh);
    match config.watch.clone() {
        Some(settings) => watch::run(config, settings),
        None => run::once(config),
    }
}
