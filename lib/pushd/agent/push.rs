//! Applying a batch through the agent: one [`Agent`] per ssh target kept
//! for pushd's whole run, requests pipelined within the window, every path
//! counted only once its acknowledgement says so. What the agent cannot
//! take (large files, special files, a path it failed) is returned for
//! rsync, which runs over the same shared ssh connection. A broken link
//! sends the whole list to rsync and reconnects later with backoff; a
//! remote without the agent is said once and left to rsync for good.
//!
//! The connections live in a table keyed by target name rather than in the
//! worker, so the worker loop (being split, issue 12) needs no change; they
//! move into the worker once it has settled.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::client::{Agent, Sent, Unavailable};
use crate::location::{Location, Target};
use crate::pushd::plan::Rename;
use crate::pushd::rsync::Stats;
use crate::ssh::SshSettings;
use crate::wire::path::WirePath;

/// `--agent`/`--agent-path`: whether and how pushd runs its agent on ssh targets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentSettings {
    /// The remote command, as written (`env pushd` keeps bash's `pushd`
    /// builtin out of the way).
    pub program: OsString,
    /// Files up to this size travel inline; larger ones by rsync's delta.
    pub inline_max: u64,
}

impl Default for AgentSettings {
    fn default() -> Self {
        AgentSettings {
            program: "env pushd".into(),
            inline_max: INLINE_MAX,
        }
    }
}

/// Files up to this size go inline. A small file's cost is its round trip,
/// whatever its size up to many times this; past it rsync's delta may save
/// bytes on a file changed in place.
pub const INLINE_MAX: u64 = 256 * 1024;

const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);

enum Slot {
    /// Connected, not in use by a batch right now.
    Idle(Agent),
    /// The link failed: no new try before `until`.
    Waiting { until: Instant, delay: Duration },
    /// No agent there (missing, or another version): rsync only, said once.
    Never,
}

static POOL: Mutex<Option<HashMap<String, Slot>>> = Mutex::new(None);

/// The target's agent, connecting when due; `None`: use rsync alone.
fn take(target: &Target, ssh: &SshSettings, settings: &AgentSettings) -> Option<Agent> {
    let Location::Ssh { user, host, path } = &target.location else {
        return None;
    };
    let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
    let pool = pool.get_or_insert_with(HashMap::new);
    let delay = match pool.remove(&target.name) {
        Some(Slot::Idle(agent)) => return Some(agent),
        Some(Slot::Never) => {
            pool.insert(target.name.clone(), Slot::Never);
            return None;
        }
        Some(Slot::Waiting { until, delay }) if Instant::now() < until => {
            pool.insert(target.name.clone(), Slot::Waiting { until, delay });
            return None;
        }
        Some(Slot::Waiting { delay, .. }) => delay,
        None => Duration::ZERO,
    };
    let destination = match user {
        Some(u) => format!("{u}@{host}"),
        None => host.clone(),
    };
    let owners = nix::unistd::geteuid().is_root();
    match Agent::connect(&destination, path, ssh, &settings.program, owners) {
        Ok(agent) => {
            crate::log_info!(
                "{target}: agent {} connected: small files, renames and deletions go inline",
                agent.producer
            );
            Some(agent)
        }
        Err(Unavailable::Missing(why) | Unavailable::Refused(why)) => {
            crate::log_notice!("{target}: {why}; using rsync over ssh");
            pool.insert(target.name.clone(), Slot::Never);
            None
        }
        Err(Unavailable::Link(why)) => {
            let delay = (delay * 2).clamp(BACKOFF_MIN, BACKOFF_MAX);
            crate::log_info!("{target}: {why}; rsync alone, agent again in {delay:?}");
            let until = Instant::now() + delay;
            pool.insert(target.name.clone(), Slot::Waiting { until, delay });
            None
        }
    }
}

/// Puts a healthy agent back, or records a broken one's backoff.
fn give_back(target: &Target, agent: Option<Agent>) {
    let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
    let pool = pool.get_or_insert_with(HashMap::new);
    let slot = match agent {
        Some(agent) => Slot::Idle(agent),
        None => Slot::Waiting {
            until: Instant::now() + BACKOFF_MIN,
            delay: BACKOFF_MIN,
        },
    };
    pool.insert(target.name.clone(), slot);
}

/// Closes every agent when dropped (pushd is ending): declared after the
/// [`crate::ssh::ControlDir`], so the agents say bye before the shared
/// connections close.
pub struct CloseAll;

impl Drop for CloseAll {
    fn drop(&mut self) {
        let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
        *pool = None;
    }
}

/// What the agent did with a list of paths.
#[derive(Debug, Default)]
pub struct Pushed {
    /// Left for rsync: too large, special, or failed on the agent.
    pub rest: Vec<WirePath>,
    pub stats: Stats,
}

/// Applies `list` through the target's agent; `None` when there is no
/// agent (or its link broke before everything was acknowledged), and
/// rsync takes the whole list.
pub fn paths(
    target: &Target,
    ssh: &SshSettings,
    settings: &AgentSettings,
    source: &Path,
    list: &[WirePath],
    delete: bool,
    renamed: &[WirePath],
) -> Option<Pushed> {
    let mut agent = take(target, ssh, settings)?;
    match send_paths(&mut agent, settings, source, list, delete, renamed) {
        Ok(pushed) => {
            give_back(target, Some(agent));
            Some(pushed)
        }
        Err(e) => {
            crate::log_warn!("{target}: {e:#}; sending this batch with rsync");
            drop(agent);
            give_back(target, None);
            None
        }
    }
}

fn send_paths(
    agent: &mut Agent,
    settings: &AgentSettings,
    source: &Path,
    list: &[WirePath],
    delete: bool,
    renamed: &[WirePath],
) -> anyhow::Result<Pushed> {
    let mut pushed = Pushed::default();
    // Requests in flight: what was sent, and for which path.
    let mut waiting: std::collections::VecDeque<(Sent, usize)> = Default::default();
    let check = agent.send(super::proto::Request::Check { id: 0 }, &[])?;
    let settle = |agent: &mut Agent,
                  waiting: &mut std::collections::VecDeque<(Sent, usize)>,
                  pushed: &mut Pushed|
     -> anyhow::Result<()> {
        let ack = agent.ack()?;
        if ack.id == check {
            if let Some(why) = ack.error {
                anyhow::bail!("{why}");
            }
            return Ok(());
        }
        let (sent, i) = waiting.pop_front().expect("an ack per request");
        match ack.error {
            None => {
                pushed.stats.files += 1;
                match sent {
                    Sent::Put(_) => {
                        pushed.stats.transferred += 1;
                        pushed.stats.transferred_size += ack.bytes;
                    }
                    Sent::Delete(_) => pushed.stats.deleted += 1,
                    _ => {}
                }
            }
            Some(why) => {
                if !matches!(sent, Sent::Same(_)) {
                    crate::log_info!("agent: {why}; rsync sends it instead");
                }
                pushed.rest.push(list[i].clone());
            }
        }
        Ok(())
    };
    for (i, rel) in list.iter().enumerate() {
        if rel.is_root() {
            pushed.rest.push(rel.clone());
            continue;
        }
        while !agent.has_room(settings.inline_max) {
            settle(agent, &mut waiting, &mut pushed)?;
        }
        let was_renamed = renamed.contains(rel);
        match agent.send_path(source, rel, settings.inline_max, delete, was_renamed)? {
            Sent::Rsync => pushed.rest.push(rel.clone()),
            Sent::Nothing => {}
            sent => waiting.push_back((sent, i)),
        }
    }
    while agent.in_flight() > 0 {
        settle(agent, &mut waiting, &mut pushed)?;
    }
    Ok(pushed)
}

/// Replays `renames` through the target's agent: `None` when there is no
/// agent, else how many were done or why one failed (the plan then sends
/// the data of every new name instead).
pub fn renames(
    target: &Target,
    ssh: &SshSettings,
    settings: &AgentSettings,
    renames: &[Rename],
) -> Option<Result<u64, String>> {
    let mut agent = take(target, ssh, settings)?;
    let result = (|| -> anyhow::Result<Result<u64, String>> {
        let check = agent.send(super::proto::Request::Check { id: 0 }, &[])?;
        for r in renames {
            agent.send_rename(&r.from, &r.to)?;
        }
        let mut failed = None;
        while agent.in_flight() > 0 {
            let ack = agent.ack()?;
            if let Some(why) = ack.error {
                anyhow::ensure!(ack.id != check, "{why}");
                failed.get_or_insert(why);
            }
        }
        Ok(failed.map_or(Ok(renames.len() as u64), Err))
    })();
    match result {
        Ok(done) => {
            give_back(target, Some(agent));
            Some(done)
        }
        Err(e) => {
            crate::log_warn!("{target}: {e:#}; sending the renamed data with rsync");
            drop(agent);
            give_back(target, None);
            Some(Err(format!("{e:#}")))
        }
    }
}
