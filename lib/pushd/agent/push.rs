//! Applying a batch through the agent: one [`Agent`] per ssh target kept
//! for pushd's whole run, requests pipelined within the window, every path
//! counted only once its acknowledgement says so. What the agent cannot
//! take (large files, special files, a path it failed) is returned for
//! rsync, which runs over the same shared ssh connection. A broken link
//! sends the whole list to rsync and reconnects later with backoff; a
//! remote without the agent is said once and left to rsync for good.
//!
//! Across batches: a batch the agent takes whole (no rsync, no rename, no
//! comparison) is left in flight when the worker allows it ([`begin`]),
//! and its answers are handed to the worker later ([`answers`]), tagged
//! with the batch, for its [`crate::pushd::window`]. Anything that must
//! not overtake requests in flight (an rsync, see [`drain`]) waits for
//! them first; the agent applies requests in order on its one connection.
//!
//! The connections live in a table keyed by target name rather than in the
//! worker, so the worker loop (being split, issue 12) needs no change; they
//! move into the worker once it has settled.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::client::{Acked, Agent, Answer, Sent, Unavailable, Waker};
use super::proto::Recorded;
use crate::location::{Location, Target};
use crate::pushd::plan::Rename;
use crate::pushd::rsync::{RsyncSettings, Stats};
use crate::pushd::state::Position;
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
    Idle(Box<Agent>),
    /// The link failed: no new try before `until`.
    Waiting { until: Instant, delay: Duration },
    /// No agent there (missing, or another version): rsync only, said once.
    Never,
}

/// One ssh target's agent and what is known of the target's position.
struct Entry {
    slot: Slot,
    /// Where pushd stands on this target (what `--state` holds): told by
    /// the worker at the stream's start and after every transfer.
    applied: Option<Position>,
    /// The last record an agent acknowledged writing for this target.
    acked: Option<Acked>,
    /// The agent's record did not vouch for the target: a full sync is due
    /// (said to the worker once), and nothing is recorded until it is done.
    full_due: Option<String>,
    in_doubt: bool,
    /// Wakes the target's worker when an answer comes ([`set_waker`]).
    waker: Option<Waker>,
    /// The batch being applied, and whether it may be left in flight.
    batch: u64,
    may_pipeline: bool,
    /// Requests of `batch` left in flight by [`paths`].
    left: usize,
    /// Answers of a connection that was dropped (an error for every
    /// request it left unanswered), for the worker.
    orphans: Vec<Answer>,
}

static POOL: Mutex<Option<HashMap<String, Entry>>> = Mutex::new(None);

/// Runs `f` on `target`'s entry (made when missing).
fn with_entry<T>(target: &Target, f: impl FnOnce(&mut Entry) -> T) -> T {
    let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
    let entry = pool
        .get_or_insert_with(HashMap::new)
        .entry(target.name.clone())
        .or_insert(Entry {
            slot: Slot::Waiting {
                until: Instant::now(),
                delay: Duration::ZERO,
            },
            applied: None,
            acked: None,
            full_due: None,
            in_doubt: false,
            waker: None,
            batch: 0,
            may_pipeline: false,
            left: 0,
            orphans: Vec::new(),
        });
    f(entry)
}

/// What an agent's record says of the target, against what pushd knows.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// It holds at least what pushd applied: resume from there.
    InStep,
    /// Its record is the one this pushd last had acknowledged, and what was
    /// applied since went by rsync while the agent was away: resume, and
    /// bring the record up to date.
    Behind,
    /// Unknown, another stream, or a record other than the one this pushd
    /// wrote (another machine, a directory made again): full sync.
    Full(String),
}

/// The resume rule (pure), as for the stream's own resume: `applied` is
/// where pushd stands (`None`: a full sync is pending anyway, nothing to
/// judge), `recorded` what the agent says it last applied, `acked` the
/// last record this pushd saw it write.
pub fn judge(
    recorded: Option<&Recorded>,
    applied: Option<&Position>,
    acked: Option<&Acked>,
) -> Verdict {
    let Some(applied) = applied else {
        return Verdict::InStep;
    };
    let Some(r) = recorded else {
        return Verdict::Full("the agent has no record of what it applied there".into());
    };
    if r.stream == applied.stream && r.seq >= applied.seq {
        return Verdict::InStep;
    }
    let ours = acked.is_some_and(|a| {
        a.record == r.record && a.position.stream == r.stream && r.seq >= a.position.seq
    });
    if ours && r.stream == applied.stream {
        return Verdict::Behind;
    }
    Verdict::Full(if r.stream != applied.stream {
        format!(
            "the agent last applied seq {} of another stream ({})",
            r.seq, r.stream
        )
    } else {
        format!(
            "the agent last applied seq {} where seq {} was, in a record this pushd did not write",
            r.seq, applied.seq
        )
    })
}

/// The target's agent, connecting when due; `None`: use rsync alone. A
/// new connection is judged against what pushd applied ([`judge`]).
/// Requests sent on it belong to the batch being applied.
fn take(target: &Target, ssh: &SshSettings, settings: &AgentSettings) -> Option<Agent> {
    let Location::Ssh { user, host, path } = &target.location else {
        return None;
    };
    let due = with_entry(target, |entry| {
        match std::mem::replace(&mut entry.slot, Slot::Never) {
            Slot::Idle(mut agent) => {
                agent.set_batch(entry.batch);
                Err(Some(agent))
            }
            Slot::Never => Err(None),
            Slot::Waiting { until, delay } if Instant::now() < until => {
                entry.slot = Slot::Waiting { until, delay };
                Err(None)
            }
            Slot::Waiting { delay, .. } => Ok((delay, entry.waker.clone())),
        }
    });
    let (delay, waker) = match due {
        Ok(due) => due,
        Err(agent) => return agent.map(|a| *a),
    };
    let destination = match user {
        Some(u) => format!("{u}@{host}"),
        None => host.clone(),
    };
    let owners = nix::unistd::geteuid().is_root();
    // Connecting takes a login: the pool is not locked meanwhile (the slot
    // says Never until then, so no other caller connects too).
    let connected = Agent::connect(&destination, path, ssh, &settings.program, owners, waker);
    let (agent, failed) = with_entry(target, |entry| match connected {
        Ok(mut agent) => {
            agent.set_batch(entry.batch);
            let at = match &agent.recorded {
                Some(r) => format!("it last applied seq {} of stream {}", r.seq, r.stream),
                None => "it has no record of what it applied".into(),
            };
            crate::log_info!(
                "{target}: agent {} connected ({at}): small files, renames and deletions go inline",
                agent.producer
            );
            if entry.in_doubt {
                return (Some(agent), None);
            }
            match judge(
                agent.recorded.as_ref(),
                entry.applied.as_ref(),
                entry.acked.as_ref(),
            ) {
                Verdict::InStep => {}
                Verdict::Behind => {
                    let applied = entry.applied.clone().expect("judged");
                    crate::log_info!(
                        "{target}: resuming after seq {}: the agent's record is brought up to \
                         date (seqs after {} went by rsync)",
                        applied.seq,
                        agent.recorded.as_ref().map_or(0, |r| r.seq)
                    );
                    if agent.record(&applied).is_err() {
                        entry.slot = backoff(BACKOFF_MIN);
                        // Dropped once the pool is unlocked: a hung link
                        // takes a second to close.
                        return (None, Some(agent));
                    }
                }
                Verdict::Full(why) => {
                    entry.full_due = Some(why);
                    entry.in_doubt = true;
                }
            }
            (Some(agent), None)
        }
        Err(Unavailable::Missing(why) | Unavailable::Refused(why)) => {
            crate::log_notice!("{target}: {why}; using rsync over ssh");
            entry.slot = Slot::Never;
            (None, None)
        }
        Err(Unavailable::Link(why)) => {
            let delay = (delay * 2).clamp(BACKOFF_MIN, BACKOFF_MAX);
            crate::log_info!("{target}: {why}; rsync alone, agent again in {delay:?}");
            entry.slot = backoff(delay);
            (None, None)
        }
    });
    drop(failed);
    agent
}

fn backoff(delay: Duration) -> Slot {
    Slot::Waiting {
        until: Instant::now() + delay,
        delay,
    }
}

/// Puts a healthy agent back, or drops a broken one and waits before the
/// next try; what it acknowledged recording is kept either way, and what
/// it left unanswered goes to the worker as failed ([`answers`]). A
/// connection is dropped outside the pool's lock (closing a hung link
/// takes a second, and the pool is every ssh target's).
fn give_back(target: &Target, mut agent: Agent, healthy: bool) {
    let acked = agent.acked();
    let healthy = healthy && !agent.is_broken();
    let (agent, orphans) = if healthy {
        (Some(agent), Vec::new())
    } else {
        let why = match agent.broken_why() {
            Some(why) => format!("the agent connection was lost before it answered ({why})"),
            None => "the agent connection was lost before it answered".to_string(),
        };
        let orphans = agent.last_answers(&why);
        drop(agent);
        (None, orphans)
    };
    with_entry(target, |entry| {
        if acked.is_some() {
            entry.acked = acked;
        }
        entry.orphans.extend(orphans);
        entry.slot = match agent {
            Some(agent) => Slot::Idle(Box::new(agent)),
            None => backoff(BACKOFF_MIN),
        };
    });
}

/// The agent settings that apply to `target`: an ssh target, the agent on,
/// not a dry run (a dry run asks rsync only: the agent would really write).
pub fn for_target<'a>(target: &Target, settings: &'a RsyncSettings) -> Option<&'a AgentSettings> {
    let ssh = matches!(target.location, Location::Ssh { .. });
    settings.agent.as_ref().filter(|_| ssh && !settings.dry_run)
}

/// Where pushd stands on `target` as a stream starts: the position
/// `--state` resumed, or `None` (a full sync is pending).
pub fn starting_at(target: &Target, settings: &RsyncSettings, position: Option<Position>) {
    if for_target(target, settings).is_some() {
        with_entry(target, |entry| entry.applied = position);
    }
}

/// Before a transfer: connects the agent when due and says why a full sync
/// is due when its record does not vouch for the target (said once).
pub fn full_sync_due(target: &Target, settings: &RsyncSettings) -> Option<String> {
    let agent_settings = for_target(target, settings)?;
    if let Some(agent) = take(target, &settings.ssh, agent_settings) {
        give_back(target, agent, true);
    }
    with_entry(target, |entry| entry.full_due.take())
}

/// A transfer succeeded: `target` is applied up to `position` (`full`: by
/// a full sync). The agent records it, unless a full sync is still due.
pub fn applied(target: &Target, settings: &RsyncSettings, position: Position, full: bool) {
    if for_target(target, settings).is_none() {
        return;
    }
    let Some(agent) = with_entry(target, |entry| {
        if full {
            entry.in_doubt = false;
            entry.full_due = None;
        }
        entry.applied = Some(position.clone());
        if entry.in_doubt {
            return None;
        }
        match std::mem::replace(&mut entry.slot, Slot::Never) {
            Slot::Idle(agent) => Some(agent),
            other => {
                entry.slot = other;
                None
            }
        }
    }) else {
        return;
    };
    let mut agent = *agent;
    let sent = agent.record(&position);
    give_back(target, agent, sent.is_ok());
}

/// Closes every agent when dropped (pushd is ending): declared after the
/// [`crate::ssh::ControlDir`], so the agents say bye before the shared
/// connections close.
pub struct CloseAll;

impl Drop for CloseAll {
    fn drop(&mut self) {
        let pool = POOL.lock().unwrap_or_else(|e| e.into_inner()).take();
        drop(pool);
    }
}

/// The worker's hand in the pipelining: `waker` is called when an answer
/// comes on `target`'s agent connection (from its reader thread).
pub fn set_waker(target: &Target, settings: &RsyncSettings, waker: Waker) {
    if for_target(target, settings).is_some() {
        with_entry(target, |entry| entry.waker = Some(waker));
    }
}

/// A batch numbered `batch` is about to be applied; `may_pipeline`: the
/// worker can take its answers later (nothing in it needs them first).
pub fn begin(target: &Target, settings: &RsyncSettings, batch: u64, may_pipeline: bool) {
    if for_target(target, settings).is_some() {
        with_entry(target, |entry| {
            entry.batch = batch;
            entry.may_pipeline = may_pipeline;
            entry.left = 0;
        });
    }
}

/// The batch's transfer returned: how many of its requests were left in
/// flight (their answers come through [`answers`]). A batch that waited
/// for its own answers leaves none, and its orphans are not the worker's.
pub fn end(target: &Target, settings: &RsyncSettings) -> usize {
    if for_target(target, settings).is_none() {
        return 0;
    }
    with_entry(target, |entry| {
        let left = std::mem::take(&mut entry.left);
        if left == 0 {
            let batch = entry.batch;
            entry.orphans.retain(|a| a.batch != batch);
        }
        entry.may_pipeline = false;
        left
    })
}

/// The agent, when it is connected and idle (not in use, not broken: a
/// broken one is dropped here, its requests answered as failed).
fn idle(target: &Target) -> Option<Agent> {
    let agent = with_entry(target, |entry| {
        match std::mem::replace(&mut entry.slot, Slot::Never) {
            Slot::Idle(agent) => Some(agent),
            other => {
                entry.slot = other;
                None
            }
        }
    })?;
    if agent.is_broken() {
        give_back(target, *agent, false);
        return None;
    }
    Some(*agent)
}

/// The answers of batches left in flight that came since last asked: the
/// batch and whether its step succeeded. Never waits.
pub fn answers(target: &Target, settings: &RsyncSettings) -> Vec<(u64, Result<(), String>)> {
    if for_target(target, settings).is_none() {
        return Vec::new();
    }
    let mut all = with_entry(target, |entry| std::mem::take(&mut entry.orphans));
    if let Some(mut agent) = idle(target) {
        all.extend(agent.answers());
        give_back(target, agent, true);
    }
    // A broken link found just now.
    all.extend(with_entry(target, |entry| {
        std::mem::take(&mut entry.orphans)
    }));
    all.into_iter()
        .map(|a| (a.batch, a.ack.error.map_or(Ok(()), Err)))
        .collect()
}

/// Waits until an answer comes (or the link breaks): the worker's window
/// is full.
pub fn wait(target: &Target, settings: &RsyncSettings) {
    wait_on(target, settings, Agent::wait_answer);
}

/// Waits until every request sent to `target`'s agent was answered: what
/// comes next (an rsync over the same shared connection, a full sync, a
/// delete guard's dry run) must not overtake them, nor see the target
/// without them. Their answers stay for the worker.
pub fn drain(target: &Target, settings: &RsyncSettings) {
    wait_on(target, settings, Agent::wait_all);
}

/// Runs `until` on the target's idle agent, if it has one; a link that
/// broke meanwhile is dropped.
fn wait_on(
    target: &Target,
    settings: &RsyncSettings,
    until: impl FnOnce(&mut Agent) -> anyhow::Result<()>,
) {
    if for_target(target, settings).is_none() {
        return;
    }
    if let Some(mut agent) = idle(target) {
        let ok = until(&mut agent).is_ok();
        give_back(target, agent, ok);
    }
}

/// Waits for every answer of `batch` now (its transfer ended in a way the
/// worker handles at once): the first failure, if any.
pub fn finish_now(target: &Target, settings: &RsyncSettings, batch: u64) -> Result<(), String> {
    if for_target(target, settings).is_none() {
        return Ok(());
    }
    let mut failed = None;
    if let Some(mut agent) = idle(target) {
        let result = (|| -> anyhow::Result<()> {
            while let Some(ack) = agent.answer_of(batch)? {
                if let Some(why) = ack.error {
                    failed.get_or_insert(why);
                }
            }
            Ok(())
        })();
        if let Err(e) = &result {
            failed.get_or_insert(format!("{e:#}"));
        }
        give_back(target, agent, result.is_ok());
    }
    let mine: Vec<Answer> = with_entry(target, |entry| {
        let (mine, rest) = std::mem::take(&mut entry.orphans)
            .into_iter()
            .partition(|a| a.batch == batch);
        entry.orphans = rest;
        mine
    });
    if let Some(why) = mine.into_iter().find_map(|a| a.ack.error) {
        failed.get_or_insert(why);
    }
    failed.map_or(Ok(()), Err)
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
/// rsync takes the whole list. When the agent takes the whole list and
/// the worker allows it ([`begin`]), its answers are left to come later.
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
    let may_pipeline = with_entry(target, |entry| entry.may_pipeline);
    match send_paths(
        &mut agent,
        settings,
        source,
        list,
        delete,
        renamed,
        may_pipeline,
    ) {
        Ok((pushed, left)) => {
            with_entry(target, |entry| entry.left += left);
            give_back(target, agent, true);
            Some(pushed)
        }
        Err(e) => {
            crate::log_warn!("{target}: {e:#}; sending this batch with rsync");
            give_back(target, agent, false);
            None
        }
    }
}

/// Sends `list`, then either waits for every answer (what failed goes to
/// rsync) or, when `may_pipeline` and the agent took everything, returns
/// at once with how many requests are left in flight (counted as done:
/// a failure fails the whole batch later, in the worker).
fn send_paths(
    agent: &mut Agent,
    settings: &AgentSettings,
    source: &Path,
    list: &[WirePath],
    delete: bool,
    renamed: &[WirePath],
    may_pipeline: bool,
) -> anyhow::Result<(Pushed, usize)> {
    let mut pushed = Pushed::default();
    // Requests in flight: what was sent, and for which path.
    let mut waiting: std::collections::VecDeque<(Sent, usize)> = Default::default();
    let batch = agent.batch();
    agent.send(super::proto::Request::Check { id: 0 }, &[])?;
    for (i, rel) in list.iter().enumerate() {
        if rel.is_root() {
            pushed.rest.push(rel.clone());
            continue;
        }
        agent.wait_room(settings.inline_max)?;
        let was_renamed = renamed.contains(rel);
        match agent.send_path(source, rel, settings.inline_max, delete, was_renamed)? {
            Sent::Rsync => pushed.rest.push(rel.clone()),
            Sent::Nothing => {}
            sent => waiting.push_back((sent, i)),
        }
    }
    let compared = waiting.iter().any(|(s, _)| matches!(s, Sent::Same(_)));
    if may_pipeline && pushed.rest.is_empty() && !compared {
        agent.flush()?;
        for (sent, _) in &waiting {
            count(&mut pushed, *sent, None);
        }
        return Ok((pushed, waiting.len() + 1));
    }
    // The check first: the root is still the one the agent opened.
    if let Some(why) = agent.answer_of(batch)?.and_then(|ack| ack.error) {
        anyhow::bail!("{why}");
    }
    while let Some(ack) = agent.answer_of(batch)? {
        let (sent, i) = waiting.pop_front().expect("an answer per request");
        match ack.error {
            None => count(&mut pushed, sent, Some(ack.bytes)),
            Some(why) => {
                if !matches!(sent, Sent::Same(_)) {
                    crate::log_info!("agent: {why}; rsync sends it instead");
                }
                pushed.rest.push(list[i].clone());
            }
        }
    }
    Ok((pushed, 0))
}

/// Counts a path the agent applied (`bytes`: as its answer says, else as
/// sent).
fn count(pushed: &mut Pushed, sent: Sent, bytes: Option<u64>) {
    pushed.stats.files += 1;
    match sent {
        Sent::Put(size) => {
            pushed.stats.transferred += 1;
            pushed.stats.transferred_size += bytes.unwrap_or(size);
        }
        Sent::Delete(_) => pushed.stats.deleted += 1,
        _ => {}
    }
}

/// Replays `renames` through the target's agent: `None` when there is no
/// agent, else how many were done or why one failed (the plan then sends
/// the data of every new name instead). Always waits for the answers.
pub fn renames(
    target: &Target,
    ssh: &SshSettings,
    settings: &AgentSettings,
    renames: &[Rename],
) -> Option<Result<u64, String>> {
    let mut agent = take(target, ssh, settings)?;
    let result = (|| -> anyhow::Result<Result<u64, String>> {
        let batch = agent.batch();
        agent.send(super::proto::Request::Check { id: 0 }, &[])?;
        for r in renames {
            agent.send_rename(&r.from, &r.to, r.dir)?;
        }
        if let Some(why) = agent.answer_of(batch)?.and_then(|ack| ack.error) {
            anyhow::bail!("{why}");
        }
        let mut failed = None;
        while let Some(ack) = agent.answer_of(batch)? {
            if let Some(why) = ack.error {
                failed.get_or_insert(why);
            }
        }
        Ok(failed.map_or(Ok(renames.len() as u64), Err))
    })();
    match result {
        Ok(done) => {
            give_back(target, agent, true);
            Some(done)
        }
        Err(e) => {
            crate::log_warn!("{target}: {e:#}; sending the renamed data with rsync");
            give_back(target, agent, false);
            Some(Err(format!("{e:#}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(stream: &str, seq: u64) -> Position {
        Position {
            stream: stream.into(),
            seq,
        }
    }

    fn rec(record: &str, stream: &str, seq: u64) -> Recorded {
        Recorded {
            record: record.into(),
            stream: stream.into(),
            seq,
        }
    }

    fn acked(record: &str, stream: &str, seq: u64) -> Acked {
        Acked {
            record: record.into(),
            position: at(stream, seq),
        }
    }

    #[test]
    fn the_agent_vouches_for_what_it_recorded_and_nothing_else() {
        let full = |v: Verdict| matches!(v, Verdict::Full(_));
        // Nothing to judge: a full sync is pending anyway.
        assert_eq!(judge(None, None, None), Verdict::InStep);
        // Where pushd stands, or past it (pushd was killed before --state).
        let p = at("s", 10);
        assert_eq!(
            judge(Some(&rec("r", "s", 10)), Some(&p), None),
            Verdict::InStep
        );
        assert_eq!(
            judge(Some(&rec("x", "s", 12)), Some(&p), None),
            Verdict::InStep
        );
        // Unknown, another stream: full sync.
        assert!(full(judge(None, Some(&p), None)));
        assert!(full(judge(Some(&rec("r", "t", 10)), Some(&p), None)));
        // Behind: only when it is the record this pushd saw written, not
        // below what it acknowledged (rsync applied the rest meanwhile).
        let mine = acked("r", "s", 7);
        assert_eq!(
            judge(Some(&rec("r", "s", 7)), Some(&p), Some(&mine)),
            Verdict::Behind
        );
        assert_eq!(
            judge(Some(&rec("r", "s", 8)), Some(&p), Some(&mine)),
            Verdict::Behind
        );
        assert!(full(judge(Some(&rec("r", "s", 6)), Some(&p), Some(&mine))));
        assert!(full(judge(Some(&rec("q", "s", 7)), Some(&p), Some(&mine))));
        assert!(full(judge(Some(&rec("r", "s", 7)), Some(&p), None)));
        assert!(full(judge(
            Some(&rec("r", "t", 7)),
            Some(&p),
            Some(&acked("r", "t", 7))
        )));
    }
}
