//! The `pushd` loop: read the stream, hand every target its own queue and
//! thread, apply changes with rsync, retry failures with backoff, and write
//! one `result` record per transfer and target.
//!
//! A slow or dead target never holds back the others: each worker keeps its
//! own pending changes, retry clock and position; only `--max-procs` (a
//! shared count of concurrent transfers) couples them.

pub mod apply;
pub(crate) mod direct;
pub mod excluded;
pub(crate) mod health;
pub mod plan;
pub(crate) mod progress;
pub mod rsync;
pub mod state;

use std::io::{BufReader, Read, Write};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use nix::sys::signal::Signal;

use crate::fold::Fold;
use crate::location::{Location, Target};
use crate::os::interruptible::{is_stop, Interruptible};
use crate::os::signals::Signals;
use crate::os::systemd::Systemd;
use crate::pushd::apply::{Applier, Checks, Guards, Identity, RootId};
use crate::pushd::plan::Plan;
use crate::pushd::rsync::{Outcome, RsyncSettings};
use crate::pushd::state::{Position, StateFile};
use crate::wire::event::{Applied, Change, ChangeOp, Event, Record, Timestamp};
use crate::wire::path::WirePath;
use crate::wire::reader::{Item, RecordReader};
use crate::{log_error, log_info, log_notice, log_warn};

/// `--delete`, as in lsyncd.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DeleteMode {
    /// Deletions propagate always.
    True,
    /// Never delete on the target.
    False,
    /// Only full syncs (start-up, new stream, overflow) delete.
    Startup,
    /// Only changes seen while running delete; full syncs do not.
    Running,
}

impl DeleteMode {
    fn allows(self, full: bool) -> bool {
        match self {
            DeleteMode::True => true,
            DeleteMode::False => false,
            DeleteMode::Startup => full,
            DeleteMode::Running => !full,
        }
    }
}

/// When and how often failed transfers are tried again.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Retry {
    pub min: Duration,
    pub max: Duration,
    /// Fraction (0..=1) of each delay that is random, so that targets that
    /// failed together do not retry in lock step.
    pub jitter: f64,
}

/// Everything `pushd` needs, validated.
pub struct Config {
    pub targets: Vec<Target>,
    pub rsync: RsyncSettings,
    pub guards: Guards,
    pub delete: DeleteMode,
    /// Full sync at start (unless resuming the same stream).
    pub init: bool,
    pub state: Option<PathBuf>,
    pub max_procs: usize,
    /// Past this many pending changes a target just does a full sync.
    pub max_pending: usize,
    pub retry: Retry,
    /// `--direct`: local targets get listed paths without rsync.
    pub direct: bool,
    /// Paths never sent (rsync gets them as filter rules in `rsync` too).
    pub excludes: crate::exclude::Excludes,
    /// `--connect`: read a writer's socket (resuming where the state file
    /// says) instead of stdin.
    pub connect: Option<PathBuf>,
    /// `--release-held`: the start-up transfer of each target applies
    /// what the delete guards would hold (the operator checked the source).
    pub release_held: bool,
    /// `--insist`: a target whose first transfer fails for good (unknown
    /// host, refused key, …) is retried like any other failure instead of
    /// ending pushd with that failure's exit code.
    pub insist: bool,
    /// `--status-file`, `--metrics-file` (lib/health/).
    pub health: crate::health::publish::HealthFiles,
}

/// Runs pushd on its configured input (stdin, or `--connect`'s socket)
/// with results on stdout.
pub fn run(config: Config) -> anyhow::Result<()> {
    let stdout = Box::new(std::io::stdout());
    match config.connect.clone() {
        Some(path) => {
            let resume = resume_point(&config)?;
            let input = crate::wire::transport::pipe::connect_as_pipe(&path, resume)?;
            run_with(config, input, stdout)
        }
        None => {
            // Unbuffered: pushd polls the descriptor next to its signals, and
            // std's stdin buffer would hide data from poll(2).
            let stdin = std::io::stdin()
                .as_fd()
                .try_clone_to_owned()
                .context("duplicating stdin")?;
            run_with(config, std::fs::File::from(stdin), stdout)
        }
    }
}

/// Where a writer should resume us: the stream every target last applied
/// and the lowest seq among them; `None` (start fresh) when they differ or
/// one has no position.
fn resume_point(config: &Config) -> anyhow::Result<Option<(String, u64)>> {
    let Some(path) = &config.state else {
        return Ok(None);
    };
    let names: Vec<String> = config.targets.iter().map(|t| t.name.clone()).collect();
    Ok(StateFile::load(path)?.resume_point(&names))
}

/// Work for one target's thread.
enum Work {
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

/// State shared by the workers.
struct Shared {
    out: Mutex<Box<dyn Write + Send>>,
    state: Option<Mutex<StateFile>>,
    slots: (Mutex<usize>, Condvar),
    /// Every target's state and numbers (`STATUS=`, the status files).
    health: crate::pushd::health::Health,
    systemd: Mutex<Systemd>,
    writing: std::sync::atomic::AtomicBool,
    /// Targets whose start-up sync has not ended yet: systemd hears
    /// `READY=1` when the last one ends (succeeded, or failed and retrying).
    starting: Mutex<usize>,
    /// A stream has arrived, so the start-up sync is under way.
    syncing: std::sync::atomic::AtomicBool,
    /// When systemd was last asked for more start-up time.
    extended: Mutex<Option<Instant>>,
    /// SIGTERM/SIGINT after the input ended: workers waiting to retry stop.
    stop: (Mutex<bool>, Condvar),
    /// Targets that ended their input with deletions held.
    held_at_end: Mutex<Vec<String>>,
    /// A target that never synced failed for good (see `Config::insist`):
    /// pushd ends with this error.
    gave_up: Mutex<Option<anyhow::Error>>,
}

impl Shared {
    fn emit(&self, record: &Record) {
        if !self.writing.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let mut line = Vec::new();
        let written = record
            .write_line(&mut line)
            .map_err(std::io::Error::other)
            .and_then(|()| out.write_all(&line))
            .and_then(|()| out.flush());
        if let Err(e) = written {
            // Results are a courtesy: a reader that went away must not stop
            // the sync itself.
            self.writing
                .store(false, std::sync::atomic::Ordering::Relaxed);
            log_notice!("not writing results any more: stdout: {e}");
        }
    }

    /// Sleeps `d`, or less when a stop is asked for; true when stopping.
    fn sleep_unless_stopped(&self, d: Duration) -> bool {
        let (flag, cv) = &self.stop;
        let stopped = flag.lock().unwrap_or_else(|e| e.into_inner());
        let (stopped, _) = cv
            .wait_timeout_while(stopped, d, |s| !*s)
            .unwrap_or_else(|e| e.into_inner());
        *stopped
    }

    fn request_stop(&self) {
        let (flag, cv) = &self.stop;
        *flag.lock().unwrap_or_else(|e| e.into_inner()) = true;
        cv.notify_all();
    }

    fn acquire(&self) {
        let (count, cv) = &self.slots;
        let mut free = count.lock().unwrap_or_else(|e| e.into_inner());
        while *free == 0 {
            free = cv.wait(free).unwrap_or_else(|e| e.into_inner());
        }
        *free -= 1;
    }

    fn release(&self) {
        let (count, cv) = &self.slots;
        *count.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        cv.notify_one();
    }

    /// Updates `STATUS=` after a target's numbers changed: at once when its
    /// state changed (`urgent`), else at most every few seconds.
    fn status_changed(&self, urgent: bool) {
        let mut systemd = self.systemd.lock().unwrap_or_else(|e| e.into_inner());
        if urgent || systemd.status_due() {
            systemd.status(&self.health.summary(), urgent);
        }
    }

    /// One target's start-up sync has ended; the last one tells systemd
    /// we are ready, so `systemctl start` returns with the targets in step.
    fn target_started(&self) {
        let mut left = self.starting.lock().unwrap_or_else(|e| e.into_inner());
        *left = left.saturating_sub(1);
        if *left == 0 {
            // A target that failed its first transfer is shown failing, never
            // synced (README "READY=1 and a target that cannot sync").
            let status = self.health.summary();
            self.health.set_ready();
            let mut systemd = self.systemd.lock().unwrap_or_else(|e| e.into_inner());
            systemd.ready(&status);
        }
    }
}

/// Reads the stream from `input` until it ends, applying it to every
/// target; returns once every target has caught up (or given up), or after
/// SIGTERM/SIGINT once the transfers in progress have ended.
pub fn run_with(
    mut config: Config,
    input: impl Read + AsFd,
    output: Box<dyn Write + Send>,
) -> anyhow::Result<()> {
    if !crate::pushd::apply::delete_missing_args_works()? {
        log_warn!(
            "this rsync ignores --delete-missing-args with --files-from (rsync issue 910): \
             deleting natively or with rm over ssh instead; upgrade rsync"
        );
        config.rsync.delete_missing_args_works = false;
    }
    // Blocked before any thread starts, so every thread inherits the mask.
    let signals = Signals::block(&[
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
    ])?;
    let state = match &config.state {
        Some(path) => Some(Mutex::new(StateFile::load(path)?)),
        None => None,
    };
    let shared = Arc::new(Shared {
        out: Mutex::new(output),
        state,
        slots: (Mutex::new(config.max_procs.max(1)), Condvar::new()),
        health: crate::pushd::health::Health::new(
            config.targets.iter().map(|t| t.name.clone()),
            &config.health,
        ),
        systemd: Mutex::new(Systemd::from_env()),
        writing: std::sync::atomic::AtomicBool::new(true),
        starting: Mutex::new(config.targets.len()),
        syncing: std::sync::atomic::AtomicBool::new(false),
        extended: Mutex::new(None),
        stop: (Mutex::new(false), Condvar::new()),
        held_at_end: Mutex::new(Vec::new()),
        gave_up: Mutex::new(None),
    });
    let config = Arc::new(config);
    let mut senders = Vec::new();
    let mut handles = Vec::new();
    for index in 0..config.targets.len() {
        let (tx, rx) = mpsc::channel();
        senders.push(tx);
        let (config, shared) = (Arc::clone(&config), Arc::clone(&shared));
        let name = config.targets[index].name.clone();
        let handle = thread::Builder::new()
            .name(format!("push {name}"))
            .spawn(move || Worker::new(&config, &shared, index).run(rx))
            .context("starting a target thread")?;
        handles.push(handle);
    }
    shared
        .systemd
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .status("waiting for the stream to start", true);
    let ticker = Arc::clone(&shared);
    let releasers = senders.clone();
    let teller = Arc::clone(&shared);
    let input = Interruptible::new(
        input,
        signals,
        Duration::from_secs(1),
        Box::new(move || {
            let starting = *ticker.starting.lock().unwrap_or_else(|e| e.into_inner()) > 0;
            ticker.health.tick(false);
            let mut systemd = ticker.systemd.lock().unwrap_or_else(|e| e.into_inner());
            systemd.tick();
            // Lags in seconds grow while nothing happens.
            if systemd.status_due() {
                systemd.status(&ticker.health.summary(), false);
            }
            // A start-up sync of a large tree outlasts any fixed start
            // timeout: while one runs, ask for more time. Before a stream
            // arrives nothing is asked, so a source that never comes fails
            // the start after TimeoutStartSec instead of hanging.
            if starting && ticker.syncing.load(std::sync::atomic::Ordering::Relaxed) {
                let mut last = ticker.extended.lock().unwrap_or_else(|e| e.into_inner());
                if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                    *last = Some(Instant::now());
                    systemd.extend_timeout(Duration::from_secs(60));
                }
            }
        }),
    )
    .on_signal(Box::new(move |signal| {
        if signal == Signal::SIGUSR2 {
            log_notice!("SIGUSR2: releasing the deletions the guards hold");
            for tx in &releasers {
                let _ = tx.send(Work::Release);
            }
        } else if signal == Signal::SIGUSR1 {
            log_notice!("SIGUSR1: {}", teller.health.summary());
        } else {
            log_info!("ignoring {signal}");
        }
    }));
    let mut input = BufReader::new(input);
    let mut ending = Ending::default();
    let read = read_stream(&mut input, &senders, &shared, &mut ending);
    // The signals are kept past the input's end: SIGTERM must still stop
    // pushd while it retries. The SIGUSR2 handler is not: it holds senders,
    // and the workers end only once every sender is gone.
    let (mut signals, handler) = input.into_inner().into_parts();
    drop(handler);
    let teller = Arc::clone(&shared);
    let mut on_signal: crate::os::interruptible::OnSignal = Some(Box::new(move |signal| {
        if signal == Signal::SIGUSR1 {
            log_notice!("SIGUSR1: {}", teller.health.summary());
        } else {
            log_info!("ignoring {signal}");
        }
    }));
    // A target that gave up stopped us with a SIGTERM of our own.
    let gave_up = || {
        shared
            .gave_up
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    };
    if let Ok(Some(signal)) = &read {
        if !gave_up() {
            log_info!("stopping on {signal} once the transfers in progress end");
        }
        shared
            .systemd
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .stopping(&format!("stopping on {signal}"));
        for tx in &senders {
            let _ = tx.send(Work::Stop);
        }
    }
    drop(senders);
    // The input ended, the workers finish what is pending (retrying a
    // failing target for a while): a SIGTERM now still stops them promptly.
    let mut stopped = false;
    if ending.end_reason.is_some() {
        // The source is gone (watchd's `end`): retrying what is pending
        // cannot work, and must not act on an emptied mount point. The
        // transfers in progress end; --state keeps what was applied.
        shared.request_stop();
    }
    if matches!(read, Ok(None)) {
        while !handles.iter().all(|h| h.is_finished()) {
            shared.health.tick(false);
            match crate::os::interruptible::wait_for_stop(
                &mut signals,
                &mut on_signal,
                Duration::from_millis(200),
            ) {
                Ok(Some(signal)) => {
                    if !gave_up() {
                        log_info!(
                            "stopping on {signal}; what is not applied yet stays pending in --state"
                        );
                    }
                    shared
                        .systemd
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .stopping(&format!("stopping on {signal}"));
                    shared.request_stop();
                    stopped = true;
                    break;
                }
                Ok(None) => {}
                Err(e) => {
                    log_warn!("watching for signals: {e}");
                    break;
                }
            }
        }
    }
    let mut unfinished = Vec::new();
    for handle in handles {
        match handle.join() {
            Ok(Ok(())) => {}
            Ok(Err(name)) => unfinished.push(name),
            Err(_) => unfinished.push("a target thread panicked".into()),
        }
    }
    if let Some(err) = shared
        .gave_up
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
    {
        return Err(err);
    }
    if read?.is_some() || stopped {
        return Ok(());
    }
    let held = shared
        .held_at_end
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    if !unfinished.is_empty() && unfinished.iter().all(|name| held.contains(name)) {
        return Err(crate::cli::exit::coded(
            crate::cli::exit::Code::Refused,
            format!(
                "deletions held by a guard on {} when the input ended; check the source, then rerun with --release-held",
                unfinished.join(", ")
            ),
        ));
    }
    if !unfinished.is_empty() {
        anyhow::bail!(
            "changes not applied to {} when the input ended; a restart with the same --state resumes",
            unfinished.join(", ")
        );
    }
    ending.verdict()
}

/// How the input ended, for the exit code: a pipeline whose first stage
/// failed must not look like a success downstream (`set -o pipefail`).
#[derive(Default)]
struct Ending {
    /// A header or batch named a stream.
    saw_stream: bool,
    /// The last stream ended with an `end` record (the source vanished).
    end_reason: Option<String>,
}

impl Ending {
    fn verdict(self) -> anyhow::Result<()> {
        use crate::cli::exit::{coded, Code};
        if let Some(reason) = self.end_reason {
            return Err(coded(
                Code::SourceGone,
                format!("the source stream ended ({reason}): the source root is gone; nothing was deleted because of it"),
            ));
        }
        if !self.saw_stream {
            return Err(coded(
                Code::NoStream,
                "the input ended without a stream header: nothing was synced (see the message of the stage before)",
            ));
        }
        Ok(())
    }
}

/// Hands every record to the workers. `Ok(Some(signal))` when stopped by one.
fn read_stream(
    input: impl std::io::BufRead,
    senders: &[Sender<Work>],
    shared: &Shared,
    ending: &mut Ending,
) -> anyhow::Result<Option<nix::sys::signal::Signal>> {
    let send = |make: &dyn Fn() -> Work| {
        for tx in senders {
            // A worker that has gone (it only ends after its input) cannot
            // take more work; nothing to do about it here.
            let _ = tx.send(make());
        }
    };
    let mut reader = RecordReader::new(input);
    let mut stream: Option<String> = None;
    loop {
        let item = match reader.next_item() {
            Ok(Some(item)) => item,
            Ok(None) => return Ok(None),
            Err(e) => match is_stop(&e) {
                Some(signal) => return Ok(Some(signal)),
                None => return Err(e).context("reading stdin"),
            },
        };
        match item {
            Item::Record(Record::Header(h)) => {
                ending.saw_stream = true;
                ending.end_reason = None;
                if stream.as_deref() != Some(h.stream.as_str()) {
                    stream = start_stream(&h.stream, &h.root, reader.line_no(), senders);
                    shared
                        .syncing
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                }
            }
            Item::Record(Record::Batch(b)) => {
                ending.saw_stream = true;
                if stream.as_deref() != Some(b.stream.as_str()) {
                    stream = start_stream(&b.stream, &b.root, reader.line_no(), senders);
                    shared
                        .syncing
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                }
                if stream.is_some() {
                    send(&|| Work::Changes {
                        first_seq: b.first_seq,
                        last_seq: b.last_seq,
                        changes: b.changes.clone(),
                    });
                }
            }
            Item::Record(Record::Event(e)) => {
                if stream.is_none() {
                    log_warn!(
                        "line {}: an event before any header: no root known, ignored",
                        reader.line_no()
                    );
                    continue;
                }
                send(&|| Work::Event(e.clone()));
            }
            Item::Record(Record::End(end)) => {
                ending.end_reason = Some(end.reason.clone());
                log_notice!(
                    "the source stream ended ({}); nothing is deleted because of it",
                    end.reason
                );
            }
            Item::Record(Record::Applied(_)) => {}
            Item::Record(other @ Record::Other { .. }) => shared.emit(&other),
            Item::Malformed { .. } | Item::Gap { .. } => {
                match &item {
                    Item::Malformed { line_no, error } => {
                        log_warn!("line {line_no} is malformed ({error}): syncing the whole root")
                    }
                    Item::Gap { reason } => log_warn!("{reason}: syncing the whole root"),
                    Item::Record(_) => {}
                }
                if stream.is_some() {
                    send(&|| Work::FullSync);
                }
            }
        }
    }
}

/// Tells every worker a stream starts; `None` (and its records are ignored)
/// when its root is not absolute: resolving it against our own working
/// directory could point the sync at the wrong tree.
fn start_stream(
    id: &str,
    root: &WirePath,
    line_no: u64,
    senders: &[Sender<Work>],
) -> Option<String> {
    let root = PathBuf::from(root.clone());
    if !root.is_absolute() {
        log_error!(
            "line {line_no}: stream {id} names the relative root {}; ignoring it until a stream with an absolute root",
            root.display()
        );
        return None;
    }
    for tx in senders {
        let _ = tx.send(Work::Stream {
            stream: id.to_string(),
            root: root.clone(),
        });
    }
    Some(id.to_string())
}

/// One target's queue, position and retry clock.
struct Worker<'a> {
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
    attempt: u32,
    delay: Duration,
    next_try: Instant,
    rng: u64,
    /// The start-up sync has ended (see [`Shared::target_started`]).
    started: bool,
}

impl<'a> Worker<'a> {
    fn new(config: &'a Config, shared: &'a Shared, index: usize) -> Self {
        let seed = crate::wire::event::new_stream_id()
            .ok()
            .and_then(|id| u64::from_str_radix(&id[..16], 16).ok())
            .unwrap_or(0x9e37_79b9_7f4a_7c15)
            | 1;
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
            attempt: 0,
            delay: config.retry.min,
            next_try: Instant::now(),
            rng: seed,
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
            Some(self.next_try)
        } else if self.held.is_empty() {
            None
        } else if self.release {
            Some(self.next_try)
        } else {
            Some(self.recheck_at.max(self.next_try))
        }
    }

    /// Runs until the input ends and the queue is empty. `Err(name)` when
    /// changes were left unapplied.
    fn run(mut self, rx: Receiver<Work>) -> Result<(), String> {
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
                        self.report();
                        if !go_on {
                            return Ok(());
                        }
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => open = false,
                }
            } else if self
                .shared
                .sleep_unless_stopped(self.next_try.saturating_duration_since(Instant::now()))
            {
                // Stopped after the input ended: what is pending stays
                // unapplied, and --state says so (it holds applied seqs only).
                return Ok(());
            }
            if self.due().is_some_and(|at| Instant::now() >= at) {
                let succeeded = self.transfer();
                if !succeeded && !open && self.delay >= self.config.retry.max {
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
            self.shared
                .held_at_end
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(self.target.name.clone());
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
                    self.shared
                        .health
                        .update(self.index, |h| h.in_step_once = true);
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
        self.attempt += 1;
        let started = SystemTime::now();
        self.shared.health.update(self.index, |h| {
            h.in_flight = Some(crate::health::target::InFlight {
                started,
                full: whole,
            });
            h.full_sync |= whole;
        });
        let (health, index) = (&self.shared.health, self.index);
        let report_progress = move |p: crate::health::target::Progress| {
            health.update(index, |h| h.progress = Some(p));
        };
        let applier = Applier {
            target: self.target,
            settings: &self.config.rsync,
            guards: &self.config.guards,
            direct: self.config.direct,
            progress: Some(&report_progress),
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
                                "{}: transfer failed, will retry (attempt {}): {what}",
                                self.target,
                                self.attempt
                            ),
                            _ => log_error!(
                                "{}: transfer failed (attempt {}): {what}",
                                self.target,
                                self.attempt
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
                    attempt: self.attempt,
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
                    attempt: self.attempt,
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
            self.attempt = 0;
            self.delay = self.config.retry.min;
            self.next_try = Instant::now();
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
            self.next_try = Instant::now() + self.jittered(self.delay);
            self.delay = (self.delay * 2).min(self.config.retry.max);
        }
        self.note_outcome(ok, &record);
        self.shared.emit(&Record::Applied(record));
        self.report();
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
                self.attempt
            );
            return;
        }
        let message = format!(
            "{}: {}; giving up, as this target has never synced (--insist keeps retrying); rsync said: {what}",
            self.target, bad.advice
        );
        let mut gave_up = self
            .shared
            .gave_up
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if gave_up.is_none() {
            *gave_up = Some(crate::cli::exit::coded(bad.code, message));
            let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), Signal::SIGTERM);
        }
    }

    /// Copies this worker's position and queue into its health numbers,
    /// and tells systemd at once when the target's state changed.
    fn report(&self) {
        let now = SystemTime::now();
        let unapplied = self.has_work() || !self.held.is_empty();
        let changed = self.shared.health.update(self.index, |h| {
            h.stream = self.stream.clone();
            h.applied_seq = self.applied;
            h.seen_seq = self.seen;
            h.pending_paths = self.pending.len() as u64;
            h.full_sync =
                self.pending.is_full_rescan() || h.in_flight.as_ref().is_some_and(|f| f.full);
            h.deletions_held = self.held_count;
            if !unapplied && h.in_flight.is_none() {
                h.unapplied_since = None;
            } else if h.unapplied_since.is_none() {
                h.unapplied_since = Some(now);
            }
        });
        self.shared.status_changed(changed);
    }

    /// Counts a transfer that ended; says so at `-v`, and at notice level
    /// when the target works again after failures.
    fn note_outcome(&self, ok: bool, record: &Applied) {
        let now = SystemTime::now();
        let before = self.shared.health.get(self.index);
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
        self.shared.health.update(self.index, |h| {
            h.in_flight = None;
            h.progress = None;
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
            self.shared.target_started();
        }
    }

    /// `delay` less a random part of up to `jitter` of it.
    fn jittered(&mut self, delay: Duration) -> Duration {
        // xorshift64: enough to spread retries, no dependency needed.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let unit = (self.rng >> 11) as f64 / (1u64 << 53) as f64;
        delay.mul_f64(1.0 - self.config.retry.jitter.clamp(0.0, 1.0) * unit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delete_modes() {
        assert!(DeleteMode::True.allows(true) && DeleteMode::True.allows(false));
        assert!(!DeleteMode::False.allows(true) && !DeleteMode::False.allows(false));
        assert!(DeleteMode::Startup.allows(true) && !DeleteMode::Startup.allows(false));
        assert!(!DeleteMode::Running.allows(true) && DeleteMode::Running.allows(false));
    }
}
