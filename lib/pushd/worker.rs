//! One target's worker: the thin loop (one thread per target) that takes
//! work from the reader, runs transfers when they are due and reports them.
//! What to send next is [`Pending`] and [`Held`], when to try again
//! [`Backoff`]; this file does the I/O around them.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::location::Target;
use crate::pushd::apply::{Checks, Identity, Report};
use crate::pushd::guards::{Held, TargetRoot};
use crate::pushd::pending::{Batch, Pending, Seqs};
use crate::pushd::plan::Plan;
use crate::pushd::pull;
use crate::pushd::retry::Backoff;
use crate::pushd::rsync::Outcome;
use crate::pushd::shared::Shared;
use crate::pushd::state::Position;
use crate::pushd::window::{Settled, Window, BATCHES_IN_FLIGHT};
use crate::pushd::Config;
use crate::wire::event::{Applied, Change, ChangeOp, Event, Record, Timestamp};
use crate::{log_error, log_info, log_notice, log_warn};

/// Work for one target's thread.
pub(crate) enum Work {
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
    /// The input ended (sent by the worker's own forwarder).
    End,
    /// Answers came on the target's agent connection.
    Answers,
}

/// A batch whose transfer returned, waiting for its acknowledgements (or
/// for those of a batch before it) to be settled.
struct Flying {
    n: u64,
    batch: Batch,
    record: Applied,
    released: bool,
    /// By a full sync, nothing held.
    full: bool,
}

/// One target's queue, position and retry clock.
pub(crate) struct Worker<'a> {
    config: &'a Config,
    shared: &'a Shared,
    /// This target's row in the health table.
    index: usize,
    target: &'a Target,
    stream: Option<String>,
    root: PathBuf,
    /// What is still to apply, and the position in the stream.
    pending: Pending,
    /// What a delete guard refused, kept for later.
    held: Held,
    backoff: Backoff,
    /// The source root when the stream started (see [`Identity`]).
    identity: Option<Identity>,
    target_root: TargetRoot,
    /// A transfer has succeeded on this target (a remote root that rsync
    /// must create after that was removed meanwhile).
    synced: bool,
    /// The start-up sync has ended (see [`Shared::target_started`]).
    started: bool,
    /// Batches taken and not settled (issue 15: an ssh target's agent
    /// acknowledges a batch while the next is sent).
    window: Window,
    flying: VecDeque<Flying>,
    /// A wake-up for answers is in the inbox already.
    nudged: Arc<AtomicBool>,
    /// A batch failed: the next one (which carries its changes) waits for
    /// its own answers, so a path the agent fails goes to rsync instead of
    /// failing the batch again.
    wait_next: bool,
}

impl<'a> Worker<'a> {
    pub(crate) fn new(config: &'a Config, shared: &'a Shared, index: usize) -> Self {
        // Targets that fail together should not retry in lock step: each
        // worker's jitter starts from its own random seed.
        let seed = crate::wire::event::new_stream_id()
            .ok()
            .and_then(|id| u64::from_str_radix(&id[..16], 16).ok())
            .unwrap_or(index as u64);
        let now = Instant::now();
        Worker {
            config,
            shared,
            index,
            target: &config.targets[index],
            stream: None,
            root: PathBuf::new(),
            pending: Pending::new(config.max_pending),
            held: Held::new(config.release_held, now),
            backoff: Backoff::new(config.retry, seed, now),
            identity: None,
            target_root: TargetRoot::default(),
            synced: false,
            started: false,
            window: Window::default(),
            flying: VecDeque::new(),
            nudged: Arc::new(AtomicBool::new(false)),
            wait_next: false,
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
        } else {
            self.held.due(self.backoff.next_try())
        }
    }

    /// The worker's inbox: what `rx` brings, then [`Work::End`], and
    /// beside it [`Work::Answers`] from the agent connection's reader, so
    /// one blocking receive waits for both.
    fn inbox(&self, rx: Receiver<Work>) -> Receiver<Work> {
        let (tx, inbox) = mpsc::channel();
        let forward = tx.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("input {}", self.target.name))
            .spawn(move || {
                for work in rx {
                    if forward.send(work).is_err() {
                        return;
                    }
                }
                let _ = forward.send(Work::End);
            });
        if let Err(e) = spawned {
            log_error!("{}: starting a thread: {e}", self.target);
            let _ = tx.send(Work::End);
        }
        let nudged = Arc::clone(&self.nudged);
        crate::pushd::agent::push::set_waker(
            self.target,
            &self.config.rsync,
            Arc::new(move || {
                if !nudged.swap(true, Ordering::SeqCst) {
                    let _ = tx.send(Work::Answers);
                }
            }),
        );
        inbox
    }

    /// Runs until the input ends and the queue is empty. `Err(name)` when
    /// changes were left unapplied.
    pub(crate) fn run(mut self, rx: Receiver<Work>) -> Result<(), String> {
        let inbox = self.inbox(rx);
        let mut open = true;
        while open || self.has_work() || !self.window.is_empty() {
            if open {
                let mut wait = match self.due() {
                    Some(at) => at.saturating_duration_since(Instant::now()),
                    None => Duration::from_secs(3600),
                };
                if !self.window.is_empty() {
                    // An agent that stops answering wakes nobody: look at
                    // what is in flight now and then (see `settle`).
                    wait = wait.min(Duration::from_secs(1));
                }
                match inbox.recv_timeout(wait) {
                    Ok(work) => {
                        let mut go_on = self.take(work, &mut open);
                        // Whatever else is queued joins this transfer.
                        while let Ok(work) = inbox.try_recv() {
                            go_on &= self.take(work, &mut open);
                        }
                        self.report();
                        if !go_on {
                            return Ok(());
                        }
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => open = false,
                }
            } else {
                let wait = self
                    .backoff
                    .next_try()
                    .saturating_duration_since(Instant::now());
                if !self.window.is_empty() {
                    // Answers wake this up; the stop is looked at often.
                    let tick = Duration::from_millis(100);
                    let until = if self.has_work() {
                        wait.min(tick)
                    } else {
                        tick
                    };
                    let _ = inbox.recv_timeout(until);
                }
                let wait = if self.window.is_empty() {
                    wait
                } else {
                    Duration::ZERO
                };
                if self.shared.sleep_unless_stopped(wait) {
                    // Stopped after the input ended: what is pending stays
                    // unapplied, and --state says so (it holds applied seqs only).
                    return Ok(());
                }
            }
            self.settle();
            if self.due().is_some_and(|at| Instant::now() >= at) {
                let succeeded = self.transfer();
                // An agent that reconnected during that transfer may have
                // found it cannot vouch for the target: the full sync is
                // due now, not at the next change (which may never come).
                self.full_sync_if_the_agent_asks();
                if !succeeded && !open && self.backoff.at_max() {
                    log_error!(
                        "{}: giving up at the end of input with changes up to seq {} not applied",
                        self.target,
                        self.pending.seen()
                    );
                    return Err(self.target.name.clone());
                }
            }
        }
        if !self.held.is_empty() {
            // One last look: the source may have come back meanwhile.
            self.held.recheck_now(Instant::now());
            self.transfer();
            self.drain_window();
        }
        if !self.held.is_empty() {
            log_error!(
                "{}: input ended with {} deletions held by a guard (not applied)",
                self.target,
                self.held.count()
            );
            self.shared.status().table.held_at_end(self.index);
            return Err(self.target.name.clone());
        }
        Ok(())
    }

    /// Adds `work` to the queue; false on [`Work::Stop`]. `open` turns
    /// false when the input ended.
    fn take(&mut self, work: Work, open: &mut bool) -> bool {
        match work {
            Work::Stop => return false,
            Work::End => *open = false,
            Work::Answers => {}
            Work::Release => {
                if self.held.release() {
                    log_notice!(
                        "{}: released by the operator: applying {} held deletions",
                        self.target,
                        self.held.count()
                    );
                } else {
                    log_info!("{}: nothing held to release", self.target);
                }
            }
            Work::FullSync => self.pending.rescan_all(),
            Work::Stream { stream, root } => self.start_stream(stream, root),
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

    /// A stream starts (or its root changes): resume where `--state` says
    /// for the same stream, else start over, with a full sync unless none
    /// is asked for.
    fn start_stream(&mut self, stream: String, root: PathBuf) {
        // What is in flight settles under the stream it was sent for.
        self.drain_window();
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
        let resumed = stored.filter(|p| p.stream == stream).map(|p| p.seq);
        // A new stream starts with a full sync, which weighs again
        // whatever was held under the old one.
        self.held.clear();
        self.identity = match pull::identity_for(self.config, self.target, &root) {
            Ok(identity) => Some(identity),
            Err(why) => {
                log_warn!("{}: {why}", self.target);
                None
            }
        };
        self.root = root;
        let position = resumed.map(|seq| Position {
            stream: stream.clone(),
            seq,
        });
        crate::pushd::agent::push::starting_at(self.target, &self.config.rsync, position);
        self.stream = Some(stream);
        self.pending.start(resumed);
        if let Some(seq) = resumed {
            // Exact only if the next news is seq + 1 (or before it):
            // note_seqs turns a jump past it into a full sync.
            log_info!("{}: resuming stream after seq {seq}", self.target);
        } else if !first || self.config.init || stale {
            self.pending.rescan_all();
        }
        if !self.has_work() {
            // Resuming, or no start-up sync asked for: in step now.
            self.shared.update(self.index, |h| h.in_step_once = true);
            self.start_done();
        }
    }

    /// Records that `first..=last` arrived; false when it was applied
    /// before a restart (the writer replays from where `--state` says).
    fn note_seqs(&mut self, first: u64, last: u64, rescan: bool) -> bool {
        match self.pending.note_seqs(first, last) {
            Seqs::New => true,
            Seqs::Replayed => false,
            Seqs::Gap { after } => {
                log_warn!(
                    "{}: resumed after seq {after} but the stream goes on at seq {first}: \
                     what came between was lost before it was applied (a writer such as \
                     relayd subscribe handed it to a pipeline that stopped); syncing the whole root",
                    self.target
                );
                true
            }
            Seqs::Backwards { after } => {
                // Batches still in flight carry seqs from before: settling
                // them must not write their higher seq to `--state`.
                self.window.block();
                // A rescan batch from batchd may repeat the seq it reached:
                // not worth a warning.
                if !rescan {
                    log_warn!(
                        "{}: seq {first} after seq {after}: the stream went backwards; syncing the whole root",
                        self.target
                    );
                }
                true
            }
        }
    }

    /// Past `--max-pending` distinct paths, a full sync replaces the list.
    fn bound_pending(&mut self) {
        if self.pending.bound() {
            log_notice!(
                "{}: more than {} pending paths, doing a full sync instead",
                self.target,
                self.config.max_pending
            );
        }
    }

    /// An ssh target's agent says what it last applied (issue 15); when
    /// that does not vouch for the target, everything is synced again.
    fn full_sync_if_the_agent_asks(&mut self) {
        if let Some(why) = crate::pushd::agent::push::full_sync_due(self.target, &self.config.rsync)
        {
            log_warn!("{}: {why}: doing a full sync", self.target);
            self.pending.rescan_all();
        }
    }

    /// One attempt at everything pending. Returns whether it succeeded.
    fn transfer(&mut self) -> bool {
        let Some(stream) = self.stream.clone() else {
            self.pending.discard();
            return true;
        };
        if self.target_root.changed(self.target) {
            self.pending.rescan_all();
        }
        self.full_sync_if_the_agent_asks();
        // Room in the window first: past it, wait for answers.
        while self.window.len() >= BATCHES_IN_FLIGHT {
            let before = self.window.len();
            crate::pushd::agent::push::wait(self.target, &self.config.rsync);
            self.settle();
            if self.window.len() == before {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let with_held = self.held.weighs_now(Instant::now());
        let mut batch = self.pending.take(with_held.then(|| self.held.take()));
        batch.changes =
            crate::pushd::excluded::without_excluded(batch.changes, &self.config.excludes);
        let released = self.held.released();
        let plan = Plan::from_changes(&batch.changes);
        // A rescan of the root (an overflow, a malformed line) is a full sync too.
        let whole = plan.is_full();
        for bad in &plan.rejected {
            log_warn!(
                "{}: path {bad:?} would leave the root; syncing the whole root instead",
                self.target
            );
        }
        let attempt = self.backoff.begin();
        let started = std::time::SystemTime::now();
        self.shared.update(self.index, |h| {
            h.in_flight = Some(crate::health::target::InFlight {
                started,
                full: whole,
            });
            h.full_sync |= whole;
        });
        let (shared, index) = (self.shared, self.index);
        // On a terminal the full sync's numbers are a bar as well.
        let bar = crate::cli::progress::Bar::default();
        let report_progress = |p: crate::health::target::Progress| {
            bar.show_progress(&self.target.name, &p);
            shared.update(index, |h| h.progress = Some(p));
        };
        let checks = Checks {
            identity: self.identity,
            released,
        };
        let upto = Position {
            stream: stream.clone(),
            seq: batch.last_seq,
        };
        let delete = self.config.delete.allows(whole);
        // Only a batch of plain paths may leave its answers to come later:
        // renames and subtrees need theirs (and rsync) first, a held or
        // released batch is weighed and settled at once.
        let may_pipeline = !whole
            && !with_held
            && !released
            && self.held.is_empty()
            && plan.renames.is_empty()
            && plan.subtrees.is_empty()
            && !std::mem::take(&mut self.wait_next);
        let n = self.window.open();
        crate::pushd::agent::push::begin(self.target, &self.config.rsync, n, may_pipeline);
        let report = pull::apply_for(
            self.config,
            self.target,
            &self.root,
            pull::Step {
                plan,
                delete,
                checks,
                upto,
            },
            Some(&report_progress),
            &self.shared.slots,
        );
        drop(bar); // cleared before the transfer's log line
        let mut report = report;
        let mut left = crate::pushd::agent::push::end(self.target, &self.config.rsync);
        let plain = report
            .as_ref()
            .is_ok_and(|r| r.succeeded() && !r.held() && r.refusal.is_none() && !r.created_root);
        if left > 0 && !plain {
            // Settled now, with what the report says.
            let finished =
                crate::pushd::agent::push::finish_now(self.target, &self.config.rsync, n);
            if let (Err(why), Ok(r)) = (finished, report.as_mut()) {
                r.outcome = Some(Outcome::Retry);
                r.message = why;
            }
            left = 0;
        }
        let mut held_now = false;
        let mut record = Applied {
            target: self.target.name.clone(),
            stream: stream.clone(),
            first_seq: batch.first_seq,
            last_seq: batch.last_seq,
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
            error: None,
            dry_run: self.config.rsync.dry_run,
            ts: Timestamp::now(),
        };
        let ok = match report {
            Ok(report) => {
                for would in
                    crate::pushd::preview::would_records(&report, &self.target.name, &stream)
                {
                    self.shared.emit(&would);
                }
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
                    let new = self.held.hold(
                        &report,
                        &batch.changes,
                        batch.first_seq,
                        with_held,
                        Instant::now(),
                        self.config.retry.max,
                    );
                    let why = report.refusal.as_deref().unwrap_or_default();
                    if new {
                        log_error!(
                            "{}: HELD: {why}. Release with: kill -USR2 {} (or restart with --release-held)",
                            self.target,
                            std::process::id()
                        );
                    } else {
                        log_info!("{}: still held: {why}", self.target);
                    }
                } else if let Some(why) = &report.refusal {
                    log_error!("{}: {why}", self.target);
                }
                record.status = if !ok {
                    "failed"
                } else if report.held() || !self.held.is_empty() {
                    // Still held from before: the target is not in step.
                    "held"
                } else {
                    "ok"
                }
                .into();
                record.error = if ok {
                    report.refusal.clone()
                } else {
                    Some(self.failed(&report))
                };
                record.files = report.stats.transferred;
                record.bytes = report.stats.transferred_size;
                record.sent = report.stats.sent;
                record.deleted = report.stats.deleted;
                record.renamed = report.renamed;
                record.refused_deletes = report.refused_deletes;
                record.duration_ms = report.duration.as_millis() as u64;
                record.rsync_exit = report.code;
                ok
            }
            Err(e) => {
                log_error!("{}: {e:#}", self.target);
                record.error = Some(format!("{e:#}"));
                false
            }
        };
        if ok && with_held && !held_now {
            if let Some(count) = self.held.applied() {
                log_notice!(
                    "{}: the {count} deletions held by a guard are applied now{}",
                    self.target,
                    if released {
                        " (released by the operator)"
                    } else {
                        " (the guard passes again)"
                    }
                );
            }
        }
        self.window.seal(
            n,
            left,
            (!ok).then(|| record.error.clone().unwrap_or_default()),
        );
        self.flying.push_back(Flying {
            n,
            batch,
            record,
            released,
            full: whole && !held_now,
        });
        self.settle();
        self.report();
        // The first attempt ends start-up even when it failed: a target that
        // is down is retried in the background, not a start that hangs.
        self.start_done();
        ok
    }

    /// Takes the answers that came, and finishes every batch that is
    /// settled now, in the order taken.
    fn settle(&mut self) {
        self.nudged.store(false, Ordering::SeqCst);
        for (n, result) in crate::pushd::agent::push::answers(self.target, &self.config.rsync) {
            self.window.answered(n, result);
        }
        for settled in self.window.settle() {
            let flying = self.flying.pop_front().expect("a batch per window entry");
            match settled {
                Settled::Applied { n, advance } => {
                    debug_assert_eq!(n, flying.n);
                    self.finished(flying, Ok(advance));
                }
                Settled::Failed { n, why } => {
                    debug_assert_eq!(n, flying.n);
                    self.finished(flying, Err(why));
                }
            }
        }
    }

    /// Waits until every batch in flight is settled.
    fn drain_window(&mut self) {
        while !self.window.is_empty() {
            let before = self.window.len();
            crate::pushd::agent::push::wait(self.target, &self.config.rsync);
            self.settle();
            if self.window.len() == before {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    /// A batch is settled: applied (`Ok(advance)`: `--state` may move to
    /// its last seq), or failed (`Err`), when its changes go back in front
    /// of whatever arrived meanwhile, and the next try waits a little
    /// longer. Its result record goes out now.
    fn finished(&mut self, flying: Flying, outcome: Result<bool, String>) {
        let Flying {
            batch,
            mut record,
            released,
            full,
            ..
        } = flying;
        let ok = match outcome {
            Ok(advance) => {
                let stream = record.stream.clone();
                self.succeeded(stream, batch.last_seq, released, full, advance);
                true
            }
            Err(why) => {
                if record.status != "failed" {
                    // Sent whole to the agent, and a step failed after.
                    log_warn!(
                        "{}: seqs {}..{}: {why}; applying them again",
                        self.target,
                        batch.first_seq,
                        batch.last_seq
                    );
                    record.status = "failed".into();
                    record.error = Some(why);
                }
                self.pending.put_back(batch);
                self.backoff.failed(Instant::now());
                self.wait_next = true;
                false
            }
        };
        self.note_outcome(ok, &record);
        self.shared.emit(&Record::Applied(record));
        self.report();
    }

    /// A transfer up to `last_seq` succeeded: the source as it is now is
    /// trusted, and `--state` records the position (before anything held)
    /// when `advance` (see [`Settled::Applied`]). `full`: by a full sync,
    /// nothing held.
    fn succeeded(
        &mut self,
        stream: String,
        last_seq: u64,
        released: bool,
        full: bool,
        advance: bool,
    ) {
        if released {
            // The operator accepted the source as it is now.
            self.held.release_done();
            self.identity = pull::identity_for(self.config, self.target, &self.root).ok();
        } else if self.identity.is_none() {
            self.identity = pull::identity_for(self.config, self.target, &self.root).ok();
        }
        self.target_root.note(self.target);
        self.synced = true;
        self.backoff.succeeded(Instant::now());
        if !advance {
            return;
        }
        // Held changes are not applied: --state stays before them.
        let seq = self.pending.applied(last_seq, self.held.first());
        let position = Position {
            stream: stream.clone(),
            seq,
        };
        crate::pushd::agent::push::applied(self.target, &self.config.rsync, position, full);
        if let Some(state) = &self.shared.state {
            let saved = state
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .set(&self.target.name, Position { stream, seq });
            if let Err(e) = saved {
                log_error!("{}: {e:#}", self.target);
            }
        }
    }

    /// Says why a transfer failed, as the log and the result record do.
    fn failed(&mut self, report: &Report) -> String {
        let attempt = self.backoff.attempt();
        let what = match report.code {
            Some(code) => format!("rsync exit {code}: {}", report.message),
            None => report.message.clone(),
        };
        if let Some(bad) =
            crate::pushd::rsync::diagnose(report.code, &report.message, &self.target.host())
        {
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
        what
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

    /// Copies this worker's position and queue into its health numbers,
    /// and tells systemd at once when the target's state changed.
    fn report(&self) {
        let now = std::time::SystemTime::now();
        // (Batches in flight are not applied until acknowledged.)
        let unapplied = self.has_work() || !self.held.is_empty() || !self.window.is_empty();
        self.shared.report(self.index, |h| {
            h.stream = self.stream.clone();
            h.applied_seq = self.pending.applied_seq();
            h.seen_seq = self.pending.seen();
            h.pending_paths = self.pending.paths();
            h.full_sync = self.pending.is_full() || h.in_flight.as_ref().is_some_and(|f| f.full);
            h.deletions_held = self.held.count();
            if !unapplied && h.in_flight.is_none() {
                h.unapplied_since = None;
            } else if h.unapplied_since.is_none() {
                h.unapplied_since = Some(now);
            }
        });
    }

    /// Counts a transfer that ended; says so at `-v`, and at notice level
    /// when the target works again after failures.
    fn note_outcome(&self, ok: bool, record: &Applied) {
        let now = std::time::SystemTime::now();
        let before = self.shared.get(self.index);
        if ok {
            if before.consecutive_failures > 0 {
                log_notice!(
                    "{}: recovered after {} failed {}{}",
                    self.target,
                    before.consecutive_failures,
                    if before.consecutive_failures == 1 {
                        "try"
                    } else {
                        "tries"
                    },
                    before
                        .failing_since
                        .map(|t| format!(
                            " (failing since {})",
                            humantime::format_rfc3339_seconds(t)
                        ))
                        .unwrap_or_default()
                );
            }
            log_info!(
                "{}: {} {}: {} files ({}) sent, {} deleted{} in {} ms",
                self.target,
                if record.full {
                    format!("full sync up to seq {}", record.last_seq)
                } else {
                    format!("seqs {}..{}", record.first_seq, record.last_seq)
                },
                record.status,
                record.files,
                crate::health::target::human_bytes(record.bytes),
                record.deleted,
                if record.renamed > 0 {
                    format!(", {} renamed", record.renamed)
                } else {
                    String::new()
                },
                record.duration_ms
            );
        }
        let none_in_flight = self.window.is_empty();
        self.shared.update(self.index, |h| {
            if none_in_flight {
                h.in_flight = None;
                h.progress = None;
            }
            h.transfers += 1;
            h.files_sent += record.files;
            h.bytes_sent += record.bytes;
            h.deleted += record.deleted;
            if ok {
                h.last_success = Some(now);
                h.consecutive_failures = 0;
                h.failing_since = None;
                h.in_step_once = true;
            } else {
                h.failures += 1;
                h.consecutive_failures += 1;
                h.failing_since.get_or_insert(now);
                h.last_error = record.error.clone();
                h.last_error_at = Some(now);
            }
        });
    }

    fn start_done(&mut self) {
        if !self.started {
            self.started = true;
            self.shared.target_started(self.index);
        }
    }
}
