//! One target's worker: its queue, position and retry clock, and the
//! transfers it runs (one thread per target).

use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::fold::Fold;
use crate::location::{Location, Target};
use crate::pushd::apply::{Applier, Checks, Identity, RootId};
use crate::pushd::plan::Plan;
use crate::pushd::rsync::Outcome;
use crate::pushd::state::Position;
use crate::wire::event::{Applied, Change, ChangeOp, Event, Record, Timestamp};
use crate::{log_error, log_info, log_notice, log_warn};

use super::retry::Backoff;
use super::shared::Shared;
use super::Config;

/// Work for one target's thread.
pub(super) enum Work {
    /// A stream starts (or the root changes): `root` is where its paths hang from.
    Stream { stream: String, root: PathBuf },
    Changes {
        first_seq: u64,
        last_seq: u64,
        changes: Vec<Change>,
    },
    /// Something may have been missed (a malformed line): sync the root.
    FullSync,
    /// One raw watcher event (each is its own batch).
    Event(Event),
    /// SIGUSR2: apply what the delete guards hold, once.
    Release,
    /// SIGTERM/SIGINT: end after the transfer in progress.
    Stop,
}

/// One target's queue, position and retry clock.
pub(super) struct Worker<'a> {
    config: &'a Config,
    shared: &'a Shared,
    index: usize,
    target: &'a Target,
    stream: Option<String>,
    root: PathBuf,
    /// Last seq applied on the current stream.
    applied: u64,
    /// The seq `--state` said was applied before this process started, on
    /// the stream it resumed: records up to it are replayed by the writer and
    /// skipped here. 0 when nothing was resumed.
    resumed_upto: u64,
    /// Highest seq received on the current stream.
    seen: u64,
    /// The last seq this process received on the current stream, to notice
    /// a stream that goes backwards.
    received: Option<u64>,
    /// Pending changes folded by path (lib/fold/): memory grows with the
    /// distinct paths, not the events, while a target is down.
    pending: Fold,
    pending_first: Option<u64>,
    /// Changes whose deletions a guard refused: kept here, rechecked every
    /// `retry.max` and applied once the guard passes or the operator
    /// releases them. Never dropped.
    held: Fold,
    /// First seq whose changes are held: `--state` never records more than
    /// the seq before it, so a restart replays them.
    held_first: Option<u64>,
    /// Deletions held (for the result record and `STATUS=`); 0 when none.
    held_count: u64,
    /// When held changes are looked at again.
    recheck_at: Instant,
    /// The operator released what is held (SIGUSR2, `--release-held`):
    /// the next transfer applies it without the delete guards.
    release: bool,
    /// The source root when the stream started (see [`Identity`]).
    identity: Option<Identity>,
    /// A local target root's device and inode after the last transfer: a
    /// root removed or replaced since then gets a full sync.
    target_root: Option<RootId>,
    /// A transfer has succeeded on this target (a remote root that rsync
    /// must create after that was removed meanwhile).
    synced: bool,
    /// When the next attempt may start.
    backoff: Backoff,
    /// The start-up sync has ended (see [`Shared::target_started`]).
    started: bool,
}

impl<'a> Worker<'a> {
    pub(super) fn new(config: &'a Config, shared: &'a Shared, index: usize) -> Self {
        // Targets that fail together should not retry in lock step: each
        // worker's jitter starts from its own random seed.
        let seed = crate::wire::event::new_stream_id()
            .ok()
            .and_then(|id| u64::from_str_radix(&id[..16], 16).ok())
            .unwrap_or(index as u64);
        Worker {
            config,
            shared,
            index,
            target: &config.targets[index],
            stream: None,
            root: PathBuf::new(),
            applied: 0,
            resumed_upto: 0,
            seen: 0,
            received: None,
            pending: Fold::new(),
            pending_first: None,
            held: Fold::new(),
            held_first: None,
            held_count: 0,
            recheck_at: Instant::now(),
            release: config.release_held,
            identity: None,
            target_root: None,
            synced: false,
            backoff: Backoff::new(config.retry, seed, Instant::now()),
            started: false,
        }
    }

    fn has_work(&self) -> bool {
        !self.pending.is_empty()
    }

    /// When the next transfer is due, if one is: pending changes at the
    /// retry clock, held ones at once when released, else at their recheck.
    fn due(&self) -> Option<Instant> {
        if self.has_work() {
            Some(self.backoff.next_try())
        } else if self.held.is_empty() {
            None
        } else if self.release {
            Some(self.backoff.next_try())
        } else {
            Some(self.recheck_at.max(self.backoff.next_try()))
        }
    }

    /// Runs until the input ends and the queue is empty. `Err(name)` when
    /// changes were left unapplied.
    pub(super) fn run(mut self, rx: Receiver<Work>) -> Result<(), String> {
        let mut open = true;
        while open || self.has_work() {
            if open {
                let wait = match self.due() {
                    Some(at) => at.saturating_duration_since(Instant::now()),
                    None => Duration::from_secs(3600),
                };
                match rx.recv_timeout(wait) {
                    Ok(work) => {
                        let mut go_on = self.take(work);
                        // Whatever else is queued joins this transfer.
                        while let Ok(work) = rx.try_recv() {
                            go_on &= self.take(work);
                        }
                        if !go_on {
                            return Ok(());
                        }
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => open = false,
                }
            } else if self.shared.sleep_unless_stopped(
                self.backoff
                    .next_try()
                    .saturating_duration_since(Instant::now()),
            ) {
                // Stopped after the input ended: what is pending stays
                // unapplied, and --state says so (it holds applied seqs only).
                return Ok(());
            }
            if self.due().is_some_and(|at| Instant::now() >= at) {
                let succeeded = self.transfer();
                if !succeeded && !open && self.backoff.at_max() {
                    log_error!(
                        "{}: giving up at the end of input with changes up to seq {} not applied",
                        self.target,
                        self.seen
                    );
                    return Err(self.target.name.clone());
                }
            }
        }
        if !self.held.is_empty() {
            // One last look: the source may have come back meanwhile.
            self.recheck_at = Instant::now();
            self.transfer();
        }
        if !self.held.is_empty() {
            log_error!(
                "{}: input ended with {} deletions held by a guard (not applied)",
                self.target,
                self.held_count
            );
            self.shared.status().table.held_at_end(self.index);
            return Err(self.target.name.clone());
        }
        Ok(())
    }

    /// Adds `work` to the queue; false on [`Work::Stop`].
    fn take(&mut self, work: Work) -> bool {
        match work {
            Work::Stop => return false,
            Work::Release => {
                if self.held.is_empty() {
                    log_info!("{}: nothing held to release", self.target);
                } else {
                    log_notice!(
                        "{}: released by the operator: applying {} held deletions",
                        self.target,
                        self.held_count
                    );
                    self.release = true;
                }
            }
            Work::FullSync => self.pending.rescan_all(),
            Work::Stream { stream, root } => {
                let first = self.stream.is_none();
                let stored = self.shared.state.as_ref().filter(|_| first).and_then(|s| {
                    s.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get(&self.target.name)
                        .cloned()
                });
                // A position of another stream: the target was in step with
                // a stream that is gone, so a full sync is due even with
                // --no-init (which skips it only for a target never synced).
                let stale = stored.as_ref().is_some_and(|p| p.stream != stream);
                let resumed = stored.filter(|p| p.stream == stream);
                self.pending = Fold::new();
                self.pending_first = None;
                // A new stream starts with a full sync, which weighs again
                // whatever was held under the old one.
                self.held = Fold::new();
                self.held_first = None;
                self.held_count = 0;
                self.identity = match Identity::of(&root) {
                    Ok(identity) => Some(identity),
                    Err(why) => {
                        log_warn!("{}: {why}", self.target);
                        None
                    }
                };
                self.root = root;
                self.stream = Some(stream);
                self.received = None;
                if let Some(position) = resumed {
                    log_info!(
                        "{}: resuming stream after seq {}",
                        self.target,
                        position.seq
                    );
                    self.applied = position.seq;
                    self.seen = position.seq;
                    self.resumed_upto = position.seq;
                } else {
                    self.applied = 0;
                    self.seen = 0;
                    self.resumed_upto = 0;
                    if !first || self.config.init || stale {
                        self.pending.rescan_all();
                    }
                }
                if !self.has_work() {
                    // Resuming, or no start-up sync asked for: in step now.
                    self.start_done();
                }
            }
            Work::Changes {
                first_seq,
                last_seq,
                changes,
            } => {
                // A rescan is never "already applied": batchd sends one after
                // a malformed line with the seq it had reached.
                let rescan = changes.iter().any(|c| c.op == ChangeOp::Rescan);
                if !self.note_seqs(first_seq, last_seq, rescan) && !rescan {
                    return true;
                }
                for change in changes {
                    self.pending.push(change);
                }
                self.bound_pending();
            }
            Work::Event(event) => {
                if !self.note_seqs(event.seq, event.seq, false) {
                    return true;
                }
                self.pending.push_event(&event);
                self.bound_pending();
            }
        }
        true
    }

    /// Records that `first..=last` arrived; false when it was applied
    /// before a restart (the writer replays from where `--state` says).
    fn note_seqs(&mut self, first: u64, last: u64, rescan: bool) -> bool {
        let backwards = self.received.is_some_and(|r| first <= r || last < first);
        self.received = Some(last);
        if backwards {
            // Malformed input (seqs only grow within a stream): nothing is
            // trusted, the root is synced, and the positions start over from
            // this seq, so a wild jump (2^64-1, then 2) is neither stored nor
            // makes a restart skip what follows. A rescan batch from batchd
            // may repeat the seq it reached: not worth a warning.
            if !rescan {
                log_warn!(
                    "{}: seq {first} after seq {}: the stream went backwards; syncing the whole root",
                    self.target,
                    self.seen
                );
            }
            self.pending.rescan_all();
            self.resumed_upto = 0;
            self.seen = last;
            self.applied = self.applied.min(last);
            self.pending_first = Some(first.min(last));
            return true;
        }
        if last <= self.resumed_upto {
            return false;
        }
        self.seen = self.seen.max(last);
        if self.pending_first.is_none() {
            self.pending_first = Some(first);
        }
        true
    }

    /// Past `--max-pending` distinct paths, a full sync replaces the list.
    fn bound_pending(&mut self) {
        if self.pending.len() > self.config.max_pending && !self.pending.is_full_rescan() {
            log_notice!(
                "{}: more than {} pending paths, doing a full sync instead",
                self.target,
                self.config.max_pending
            );
            self.pending = Fold::new();
            self.pending.rescan_all();
        }
    }

    /// One attempt at everything pending. Returns whether it succeeded.
    fn transfer(&mut self) -> bool {
        let Some(stream) = self.stream.clone() else {
            self.pending = Fold::new();
            return true;
        };
        self.check_target_root();
        // Held changes are weighed again with whatever is pending at their
        // recheck or release only: merged into every batch, a held subtree
        // (the root, after a held full sync) would turn each later batch
        // into a full sync, and the hold would weigh everything forever.
        let with_held =
            !self.held.is_empty() && (self.release || Instant::now() >= self.recheck_at);
        let held_first = if with_held {
            self.held_first.take()
        } else {
            None
        };
        let changes = if !with_held {
            self.pending.take()
        } else {
            let mut all = std::mem::take(&mut self.held);
            for change in self.pending.take() {
                all.push(change);
            }
            all.take()
        };
        let changes = crate::pushd::excluded::without_excluded(changes, &self.config.excludes);
        let first_seq = match (held_first, self.pending_first.take()) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b).unwrap_or(self.seen),
        };
        let last_seq = self.seen;
        let released = self.release;
        let plan = Plan::from_changes(&changes);
        // A rescan of the root (an overflow, a malformed line) is a full sync too.
        let whole = plan.is_full();
        for bad in &plan.rejected {
            log_warn!(
                "{}: path {bad:?} would leave the root; syncing the whole root instead",
                self.target
            );
        }
        let attempt = self.backoff.begin();
        let applier = Applier {
            target: self.target,
            settings: &self.config.rsync,
            guards: &self.config.guards,
            direct: self.config.direct,
        };
        self.shared.acquire();
        let checks = Checks {
            identity: self.identity,
            released,
        };
        let report = applier.apply(&self.root, plan, self.config.delete.allows(whole), checks);
        self.shared.release();
        let mut held_now = false;
        let (ok, record) = match report {
            Ok(report) => {
                let ok = report.succeeded();
                if ok && report.created_root && self.synced && !whole {
                    log_warn!(
                        "{}: the target root was gone (rsync created it again): doing a full sync",
                        self.target
                    );
                    self.pending.rescan_all();
                }
                if ok && report.held() {
                    held_now = true;
                    self.hold(&report, &changes, first_seq, with_held);
                } else if let Some(why) = &report.refusal {
                    log_error!("{}: {why}", self.target);
                }
                let status = if !ok {
                    "failed"
                } else if report.held() || !self.held.is_empty() {
                    // Still held from before: the target is not in step.
                    "held"
                } else {
                    "ok"
                };
                let error = if ok {
                    report.refusal.clone()
                } else {
                    let what = match report.code {
                        Some(code) => format!("rsync exit {code}: {}", report.message),
                        None => report.message.clone(),
                    };
                    if let Some(bad) = crate::pushd::rsync::diagnose(
                        report.code,
                        &report.message,
                        &self.target.host(),
                    ) {
                        self.permanent(bad, &what);
                    } else {
                        match report.outcome {
                            Some(Outcome::Retry) => log_warn!(
                                "{}: transfer failed, will retry (attempt {attempt}): {what}",
                                self.target
                            ),
                            _ => log_error!(
                                "{}: transfer failed (attempt {attempt}): {what}",
                                self.target
                            ),
                        }
                    }
                    Some(what)
                };
                let record = Applied {
                    target: self.target.name.clone(),
                    stream: stream.clone(),
                    first_seq,
                    last_seq,
                    full: whole,
                    status: status.into(),
                    files: report.stats.transferred,
                    bytes: report.stats.transferred_size,
                    sent: report.stats.sent,
                    deleted: report.stats.deleted,
                    renamed: report.renamed,
                    refused_deletes: report.refused_deletes,
                    duration_ms: report.duration.as_millis() as u64,
                    rsync_exit: report.code,
                    attempt,
                    error,
                    ts: Timestamp::now(),
                };
                (ok, record)
            }
            Err(e) => {
                log_error!("{}: {e:#}", self.target);
                let record = Applied {
                    target: self.target.name.clone(),
                    stream: stream.clone(),
                    first_seq,
                    last_seq,
                    full: whole,
                    status: "failed".into(),
                    files: 0,
                    bytes: 0,
                    sent: 0,
                    deleted: 0,
                    renamed: 0,
                    refused_deletes: 0,
                    duration_ms: 0,
                    rsync_exit: None,
                    attempt,
                    error: Some(format!("{e:#}")),
                    ts: Timestamp::now(),
                };
                (false, record)
            }
        };
        if ok && with_held && !held_now && self.held_count > 0 {
            log_notice!(
                "{}: the {} deletions held by a guard are applied now{}",
                self.target,
                self.held_count,
                if released {
                    " (released by the operator)"
                } else {
                    " (the guard passes again)"
                }
            );
            self.held_count = 0;
        }
        if ok {
            if released {
                // The operator accepted the source as it is now.
                self.release = false;
                self.identity = Identity::of(&self.root).ok();
            } else if self.identity.is_none() {
                self.identity = Identity::of(&self.root).ok();
            }
            self.note_target_root();
            self.synced = true;
        }
        if ok {
            // Held changes are not applied: --state stays before them.
            let upto = match self.held_first {
                Some(first) => first.saturating_sub(1).min(last_seq),
                None => last_seq,
            };
            let last_seq = upto;
            self.applied = last_seq;
            self.backoff.succeeded(Instant::now());
            if let Some(state) = &self.shared.state {
                let saved = state.lock().unwrap_or_else(|e| e.into_inner()).set(
                    &self.target.name,
                    Position {
                        stream,
                        seq: last_seq,
                    },
                );
                if let Err(e) = saved {
                    log_error!("{}: {e:#}", self.target);
                }
            }
        } else {
            // Nothing is lost: the changes go back in front of whatever
            // arrived meanwhile, and the next try waits a little longer.
            let newer = self.pending.take();
            for change in changes.into_iter().chain(newer) {
                self.pending.push(change);
            }
            self.pending_first = Some(first_seq);
            self.backoff.failed(Instant::now());
        }
        self.shared.emit(&Record::Applied(record));
        self.shared.set_lag(
            self.index,
            self.seen.saturating_sub(self.applied),
            self.held_count,
        );
        // The first attempt ends start-up even when it failed: a target that
        // is down is retried in the background, not a start that hangs.
        self.start_done();
        ok
    }

    /// Keeps what a guard refused (`report.held()`) for later, and says so
    /// on stderr once per hold, not once per batch.
    /// `merged`: the changes included everything held before, so the count
    /// starts again; else this hold joins an earlier one.
    fn hold(
        &mut self,
        report: &crate::pushd::apply::Report,
        changes: &[Change],
        first_seq: u64,
        merged: bool,
    ) {
        // Nothing held before (or all of it in these changes): a new recheck.
        let fresh = self.held.is_empty();
        if report.held_everything {
            for change in changes {
                self.held.push(change.clone());
            }
        } else {
            // Rechecked as updates: a path still missing on the source is
            // deleted then, one that came back is copied.
            for path in &report.held_paths {
                self.held.push(Change {
                    op: ChangeOp::Update,
                    path: path.clone(),
                    dir: false,
                    from: None,
                });
            }
            for path in &report.held_subtrees {
                self.held.push(Change {
                    op: ChangeOp::Rescan,
                    path: path.clone(),
                    dir: true,
                    from: None,
                });
            }
        }
        self.held_first = Some(self.held_first.map_or(first_seq, |f| f.min(first_seq)));
        let why = report.refusal.clone().unwrap_or_default();
        if self.held_count == 0 {
            log_error!(
                "{}: HELD: {why}. Release with: kill -USR2 {} (or restart with --release-held)",
                self.target,
                std::process::id()
            );
        } else {
            log_info!("{}: still held: {why}", self.target);
        }
        // Two holds may overlap (a held batch, then a full sync weighing the
        // same deletions): the larger count is the one sure to be held.
        self.held_count = if merged {
            report.refused_deletes.max(1)
        } else {
            self.held_count.max(report.refused_deletes).max(1)
        };
        if fresh {
            self.recheck_at = Instant::now() + self.config.retry.max;
        }
    }

    /// A local target root removed or replaced since the last transfer
    /// (`rm -rf DST`): a transfer of only the pending paths would leave it
    /// holding just those, so a full sync is queued instead.
    fn check_target_root(&mut self) {
        let (Some(before), Location::Local(root)) = (self.target_root, &self.target.location)
        else {
            return;
        };
        let now = std::fs::metadata(root).ok().map(|m| RootId::of(&m));
        if now != Some(before) {
            log_warn!(
                "{}: the target root {} {} since the last transfer: doing a full sync",
                self.target,
                root.display(),
                if now.is_none() {
                    "disappeared"
                } else {
                    "was replaced"
                }
            );
            self.pending.rescan_all();
            self.target_root = None;
        }
    }

    fn note_target_root(&mut self) {
        if let Location::Local(root) = &self.target.location {
            self.target_root = std::fs::metadata(root).ok().map(|m| RootId::of(&m));
        }
    }

    /// A failure that trying again will not fix: said with its advice, and
    /// on a target that never synced (unless `--insist`) the end of pushd
    /// with its exit code: the stop signal to ourselves ends the reader.
    fn permanent(&mut self, bad: crate::pushd::rsync::Permanent, what: &str) {
        if self.synced || self.config.insist {
            log_error!(
                "{}: {} (attempt {}, will retry): {what}",
                self.target,
                bad.advice,
                self.backoff.attempt()
            );
            return;
        }
        let message = format!(
            "{}: {}; giving up, as this target has never synced (--insist keeps retrying); rsync said: {what}",
            self.target, bad.advice
        );
        if self
            .shared
            .give_up(crate::cli::exit::coded(bad.code, message))
        {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), Signal::SIGTERM);
        }
    }

    fn start_done(&mut self) {
        if !self.started {
            self.started = true;
            self.shared.target_started(self.index);
        }
    }
}
