//! `bisync --watch`: keep two replicas in sync from their event streams.
//! A full scan of both on start and whenever a stream says it may have
//! missed something (a `rescan`, a malformed line, a new stream id, a lost
//! watcher); otherwise each run re-reads only the paths that changed, on
//! both replicas, and plans over the scans kept in memory. Changes are
//! gathered for `--delay` after the first one; whatever arrives during a run
//! waits for the next. Every run is a one-shot run's plan and guards.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;

use super::archive::Store;
use super::config::{Config, Spec, WatchSettings};
use super::entry::Side;
use super::feed::{Feed, Launch, Note};
use super::planner::{Archive, Scan};
use super::progress::{self, Tally};
use super::replica::Transport;
use super::report::{Outcome, Summary};
use super::run::{self, Boxed};
use super::scan::tops;
use crate::cli::exit::{coded, Code};
use crate::health::publish::Publisher;
use crate::os::signals::Signals;
use crate::os::systemd::Systemd;
use crate::wire::path::WirePath;

/// Waits after a failed run before the next try, doubling up to the last.
const RETRY: [u64; 7] = [1, 2, 4, 8, 15, 30, 60];

pub fn run(config: Config, settings: WatchSettings) -> anyhow::Result<Code> {
    if config.dry_run {
        return Err(coded(
            Code::Usage,
            "--watch and --dry-run do not go together: a dry run changes nothing to watch",
        ));
    }
    // Blocked before any thread starts, so every thread inherits the mask.
    let signals = Signals::standard()?;
    let store = run::store(&config)?;
    let _lock = store.lock()?;
    let (tx, rx) = mpsc::channel();
    let usr1 = Arc::new(AtomicBool::new(false));
    forward_signals(signals, tx.clone(), usr1.clone());
    let feeds = [Side::A, Side::B].map(|side| {
        let spec = if side == Side::A {
            &config.a
        } else {
            &config.b
        };
        let program = match spec {
            Spec::Local(_) => settings.watchd.clone().unwrap_or_else(local_watchd),
            Spec::Ssh { .. } => settings.remote_watchd.clone(),
        };
        let launch = Launch {
            spec: spec.clone(),
            program,
            excludes: config.excludes.clone(),
            ssh: config.ssh.clone(),
        };
        Feed::start(side, launch, tx.clone())
    });
    drop(tx);
    let archive = store.load();
    let mut watch = Watch {
        config,
        delay: settings.delay,
        store,
        feeds,
        replicas: None,
        archive,
        scans: None,
        dirty: BTreeSet::new(),
        streams: [None, None],
        due: None,
        systemd: Systemd::from_env(),
        publisher: crate::health::publish::Publisher::new(&settings.health),
        totals: Totals::default(),
        usr1,
    };
    let result = watch.follow(&rx);
    for feed in &mut watch.feeds {
        feed.stop();
    }
    result
}

/// The watchd installed next to this bisync (both come from one package),
/// else the one on PATH.
fn local_watchd() -> OsString {
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join("watchd")))
        .filter(|p| p.is_file())
        .map(OsString::from)
        .unwrap_or_else(|| "watchd".into())
}

/// Hands termination signals to the loop as notes. SIGUSR1 also raises
/// `usr1`, so the ticker of a run in progress answers it at once; the
/// loop answers it between runs (whichever takes the flag first).
fn forward_signals(mut signals: Signals, tx: Sender<Note>, usr1: Arc<AtomicBool>) {
    std::thread::spawn(move || loop {
        let mut fds = [PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return,
        }
        while let Ok(Some(signal)) = signals.pending() {
            if signal == Signal::SIGUSR1 {
                usr1.store(true, Ordering::Relaxed);
            }
            if tx.send(Note::Signal(signal)).is_err() {
                return;
            }
        }
    });
}

struct Watch {
    config: Config,
    delay: Duration,
    store: Store,
    feeds: [Feed; 2],
    replicas: Option<(Boxed, Boxed, bool)>,
    archive: Option<Archive>,
    /// Both replicas as last read; `None`: the next run scans them fully.
    scans: Option<[Scan; 2]>,
    /// Paths to re-read on both replicas in the next run.
    dirty: BTreeSet<WirePath>,
    /// Each replica's current stream; runs wait until both have one.
    streams: [Option<String>; 2],
    /// When the next run starts.
    due: Option<Instant>,
    systemd: Systemd,
    /// `--status-file`, `--metrics-file`.
    publisher: Publisher,
    totals: Totals,
    /// A SIGUSR1 not yet answered.
    usr1: Arc<AtomicBool>,
}

/// What the runs of this process did, for the status file and metrics.
#[derive(Default)]
struct Totals {
    /// The first full sync is done (`READY=1`).
    ready: bool,
    /// Failed runs in a row.
    failures: usize,
    runs: u64,
    failed_runs: u64,
    copied: u64,
    deleted: u64,
    renamed: u64,
    conflicts: u64,
    last_success: Option<std::time::SystemTime>,
    /// The `STATUS=` text last said.
    said: String,
}

enum Next {
    Continue,
    Stop(Code),
}

impl Watch {
    fn follow(&mut self, rx: &Receiver<Note>) -> anyhow::Result<Code> {
        self.systemd
            .status("starting the watchers of both replicas", true);
        loop {
            let now = Instant::now();
            let mut wait = self
                .due
                .filter(|_| self.live())
                .map_or(Duration::from_secs(60), |d| {
                    d.saturating_duration_since(now)
                });
            for t in [self.systemd.poll_timeout(), self.publisher.poll_timeout()]
                .into_iter()
                .flatten()
            {
                wait = wait.min(t);
            }
            let first = match rx.recv_timeout(wait) {
                Ok(note) => Some(note),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => {
                    anyhow::bail!("every watcher and the signal handler stopped")
                }
            };
            for note in first
                .into_iter()
                .chain(std::iter::from_fn(|| rx.try_recv().ok()))
            {
                if let Next::Stop(code) = self.note(note)? {
                    return Ok(code);
                }
            }
            self.systemd.tick();
            if self.live() && self.due.is_some_and(|d| d <= Instant::now()) {
                self.sync();
            }
            self.publish();
        }
    }

    fn live(&self) -> bool {
        self.streams.iter().all(Option::is_some)
    }

    /// Plans a run `after` from now, unless one is due sooner.
    fn schedule(&mut self, after: Duration) {
        let at = Instant::now() + after;
        self.due = Some(self.due.map_or(at, |d| d.min(at)));
    }

    fn full_scan(&mut self, why: &str) {
        if self.scans.is_some() {
            crate::log_info!("{why}: both replicas are scanned again in full");
        }
        self.scans = None;
        self.dirty.clear();
        self.schedule(self.delay);
    }

    fn note(&mut self, note: Note) -> anyhow::Result<Next> {
        match note {
            Note::Started { side, stream } => {
                crate::log_debug!("replica {side}: watching, stream {stream}");
                self.streams[side as usize] = Some(stream);
                if self.totals.ready {
                    self.full_scan(&format!("replica {side}: a new event stream"));
                } else {
                    // The first full sync starts as soon as both watch.
                    self.scans = None;
                    self.schedule(Duration::ZERO);
                }
            }
            Note::Changed { paths, .. } => {
                if self.scans.is_some() {
                    self.dirty.extend(paths);
                }
                self.schedule(self.delay);
            }
            Note::Rescan { why, .. } => {
                crate::log_warn!("{why}");
                self.full_scan(&why);
            }
            Note::Lost { side, why } => {
                crate::log_warn!("{why}");
                self.streams[side as usize] = None;
                self.scans = None;
                self.dirty.clear();
            }
            Note::Failed { why, .. } => {
                return Err(coded(Code::NoSource, why));
            }
            Note::Signal(Signal::SIGTERM | Signal::SIGINT) => {
                self.systemd.stopping("stopping");
                crate::log_info!("stopping on a signal");
                return Ok(Next::Stop(Code::Ok));
            }
            Note::Signal(Signal::SIGHUP) => self.full_scan("SIGHUP"),
            // Answered already by the ticker of the run it came during.
            Note::Signal(Signal::SIGUSR1) if !self.usr1.swap(false, Ordering::Relaxed) => {}
            Note::Signal(signal) => crate::log_notice!(
                "{signal}: {}; last run: {}",
                self.status_text(),
                self.totals.said
            ),
        }
        Ok(Next::Continue)
    }

    /// Writes the status file and metrics when due (lib/health/).
    fn publish(&mut self) {
        let text = format!("{}; {}", self.status_text(), self.totals.said);
        let names = [self.config.a.key(), self.config.b.key()];
        self.publisher
            .tick(false, |now| views(&self.totals, &names, text, None, now));
    }

    fn status_text(&self) -> String {
        let pending = if self.scans.is_none() {
            "a full scan".to_string()
        } else {
            format!("{} paths", self.dirty.len())
        };
        format!(
            "watching {} and {}; next run: {}",
            self.config.a.key(),
            self.config.b.key(),
            if self.due.is_some() {
                pending
            } else {
                "when something changes".into()
            }
        )
    }

    /// One run: re-read what changed (or everything), plan, execute. While
    /// it works, a ticker keeps `STATUS=`, the status file and, on a
    /// terminal, a progress bar saying how far it got.
    fn sync(&mut self) {
        self.due = None;
        let tally = Tally::new(Instant::now());
        if self.archive.is_none() {
            tally.set_first();
        }
        let full = self.scans.is_none();
        let paths: Vec<WirePath> = std::mem::take(&mut self.dirty).into_iter().collect();
        let result = {
            let Watch {
                config,
                store,
                replicas,
                archive,
                scans,
                systemd,
                publisher,
                totals,
                usr1,
                ..
            } = self;
            let names = [config.a.key(), config.b.key()];
            let mut told = Told {
                systemd,
                publisher,
                totals,
                names: &names,
                bar: crate::cli::progress::Bar::default(),
                phase: None,
                seen: progress::Seen::default(),
                usr1,
            };
            let pair = Pair {
                config,
                store,
                replicas,
                archive,
                scans,
            };
            progress::ticking(
                |last| told.tick(&tally, last),
                || pair.attempt(&paths, &tally),
            )
        };
        match result {
            Ok(settled) => {
                let s = &settled.summary;
                let t = &mut self.totals;
                t.failures = 0;
                t.runs += 1;
                t.copied += s.copied;
                t.deleted += s.deleted;
                t.renamed += s.renamed;
                t.conflicts += s.conflicts;
                t.last_success = Some(std::time::SystemTime::now());
                self.publisher.changed();
                self.archive = settled.archive;
                // What the run changed is read again: the replicas' own
                // events say the same, but may come late.
                if self.scans.is_some() && !settled.touched.is_empty() {
                    self.dirty.extend(settled.touched);
                    self.schedule(self.delay);
                }
                let text = status_of(&settled.summary, full);
                self.totals.said = text.clone();
                if self.totals.ready {
                    self.systemd.status(&text, true);
                } else {
                    self.totals.ready = true;
                    crate::log_info!("first full sync done; watching both replicas");
                    self.systemd.ready(&text);
                }
            }
            Err(e) => {
                let lost = e.chain().any(|c| c.is::<Transport>());
                crate::log_error!("{e:#}");
                if lost {
                    self.replicas = None;
                }
                // Start again from what is certain: the saved archive and
                // full scans.
                self.archive = self.store.load();
                self.scans = None;
                let t = &mut self.totals;
                let wait = Duration::from_secs(RETRY[t.failures.min(RETRY.len() - 1)]);
                t.failures += 1;
                t.runs += 1;
                t.failed_runs += 1;
                self.schedule(wait.max(self.delay));
                self.publisher.changed();
                let outcome = if matches!(
                    crate::cli::exit::code_of(&e),
                    Code::Refused | Code::MassChange
                ) {
                    "refused"
                } else {
                    "failed"
                };
                let text = format!(
                    "last run {outcome}: {}; retrying in {}s",
                    first_line(&format!("{e:#}")),
                    wait.as_secs()
                );
                self.systemd.status(&text, true);
                self.totals.said = text;
            }
        }
    }
}

/// What a run works on: the pair, its archive and the scans kept.
struct Pair<'w> {
    config: &'w Config,
    store: &'w Store,
    replicas: &'w mut Option<(Boxed, Boxed, bool)>,
    archive: &'w mut Option<Archive>,
    scans: &'w mut Option<[Scan; 2]>,
}

impl Pair<'_> {
    fn attempt(self, paths: &[WirePath], tally: &Tally) -> anyhow::Result<run::Settled> {
        if self.replicas.is_none() {
            *self.replicas = Some(run::open_pair(self.config)?);
        }
        let (a, b, owners) = self.replicas.as_mut().expect("opened above");
        let checksum = self.config.checksum;
        let (name_a, name_b) = (self.config.a.key(), self.config.b.key());
        let mut scans = match self.scans.take() {
            None => {
                let (sa, sb) = std::thread::scope(|s| {
                    let ta = s.spawn(|| a.scan(checksum));
                    let tb = s.spawn(|| b.scan(checksum));
                    (join(ta), join(tb))
                });
                [
                    sa.with_context(|| format!("scanning {name_a}"))?,
                    sb.with_context(|| format!("scanning {name_b}"))?,
                ]
            }
            Some(mut scans) => {
                let tops = tops(paths);
                if !tops.is_empty() {
                    crate::log_debug!("re-reading {} paths", tops.len());
                    let fresh_a = a
                        .scan_paths(&tops, checksum)
                        .with_context(|| format!("reading {name_a}"))?;
                    let fresh_b = b
                        .scan_paths(&tops, checksum)
                        .with_context(|| format!("reading {name_b}"))?;
                    patch(&mut scans[0], &tops, fresh_a);
                    patch(&mut scans[1], &tops, fresh_b);
                }
                scans
            }
        };
        let settled = run::settle(
            self.config,
            self.store,
            [a.as_mut(), b.as_mut()],
            *owners,
            self.archive.take(),
            &mut scans,
            tally,
            true,
        )?;
        *self.scans = Some(scans);
        Ok(settled)
    }
}

/// What the ticker tells while a run works.
struct Told<'w> {
    systemd: &'w mut Systemd,
    publisher: &'w mut Publisher,
    totals: &'w Totals,
    names: &'w [String; 2],
    bar: crate::cli::progress::Bar,
    /// The phase last told: a new one is told at once.
    phase: Option<progress::Phase>,
    /// The run's counters at the last tick: the watchdog is pinged only
    /// when they moved.
    seen: progress::Seen,
    usr1: &'w AtomicBool,
}

impl Told<'_> {
    /// Every [`progress::TICK`] while a run works (`last`: once after):
    /// the watchdog, and how far the run got in `STATUS=`, the status file
    /// and the bar. A run that ends within a tick says nothing; the first
    /// sync says its end too.
    fn tick(&mut self, tally: &Tally, last: bool) {
        if tally.moved(&mut self.seen) {
            self.systemd.tick();
        }
        if self.usr1.swap(false, Ordering::Relaxed) {
            crate::log_notice!(
                "SIGUSR1: a run is in progress: {}; last run: {}",
                tally.words(Instant::now()),
                self.totals.said
            );
        }
        if last && !tally.is_first() {
            return;
        }
        let now = Instant::now();
        let text = tally.words(now);
        let progress = tally.progress(now);
        let phase = Some(tally.phase());
        let news = phase != self.phase || last;
        self.phase = phase;
        self.systemd.status(&text, news);
        tally.show_on(&self.bar, now);
        self.publisher.changed();
        let at_the_end = last && progress.is_some();
        self.publisher.tick(at_the_end, |now| {
            views(self.totals, self.names, text, Some(tally), now)
        });
    }
}

/// The status file and metrics: the totals, and how far a run in progress
/// got.
fn views(
    t: &Totals,
    names: &[String; 2],
    text: String,
    run: Option<&Tally>,
    now: std::time::SystemTime,
) -> (crate::health::status::StatusDoc, String) {
    use crate::health::status::{program_views, unix, Number, StatusDoc};
    let mut doc = StatusDoc::new("bisync", now, t.ready, text);
    let mut numbers = vec![
        Number::counter("runs_total", "Runs ended, failed ones included", t.runs),
        Number::counter(
            "failed_runs_total",
            "Runs that failed or were refused",
            t.failed_runs,
        ),
        Number::counter(
            "copied_total",
            "Entries copied between the replicas",
            t.copied,
        ),
        Number::counter("deleted_total", "Entries deleted on a replica", t.deleted),
        Number::counter("renamed_total", "Renames applied on a replica", t.renamed),
        Number::counter(
            "conflicts_total",
            "Conflicts kept as NAME.conflict-… copies",
            t.conflicts,
        ),
        Number::gauge(
            "consecutive_failures",
            "Failed runs since the last success",
            t.failures as f64,
        ),
        Number::gauge(
            "ready",
            "1 once the first full sync is done (READY=1)",
            f64::from(u8::from(t.ready)),
        ),
        Number::gauge(
            "run_in_progress",
            "1 while a run scans, hashes or copies",
            f64::from(u8::from(run.is_some())),
        ),
    ];
    if let Some(at) = t.last_success {
        numbers.push(Number::gauge(
            "last_success_timestamp_seconds",
            "When a run last succeeded",
            unix(at),
        ));
    }
    let progress = run.and_then(|tally| Some((tally, tally.progress(Instant::now())?)));
    if let Some((tally, p)) = &progress {
        let (files, bytes) = tally.planned();
        numbers.extend([
            Number::gauge(
                "run_files_planned",
                "Files the run in progress copies",
                files as f64,
            ),
            Number::gauge(
                "run_bytes_planned",
                "Bytes the run in progress copies",
                bytes as f64,
            ),
            Number::gauge(
                "run_files_copied",
                "Files the run in progress copied so far",
                p.files as f64,
            ),
            Number::gauge(
                "run_bytes_copied",
                "Bytes the run in progress copied so far",
                p.bytes as f64,
            ),
        ]);
    }
    let metrics = program_views(
        &mut doc,
        &[("replica_a", &names[0]), ("replica_b", &names[1])],
        &numbers,
    );
    if let Some((_, p)) = progress {
        // The same shape as a pushd target's progress.
        if let Ok(value) = serde_json::to_value(p) {
            doc.numbers.insert("progress".into(), value);
        }
    }
    (doc, metrics)
}

/// Replaces what `scan` holds at and below each of `tops` with `fresh`.
pub fn patch(scan: &mut Scan, tops: &[WirePath], fresh: Scan) {
    if tops.iter().any(WirePath::is_root) {
        *scan = fresh;
        return;
    }
    for top in tops {
        scan.remove(top);
        let mut lo = top.as_bytes().to_vec();
        lo.push(b'/');
        let mut hi = top.as_bytes().to_vec();
        hi.push(b'0'); // '0' follows '/': the end of `top/...` in byte order
        let below: Vec<WirePath> = scan
            .range(WirePath::from_bytes(lo)..WirePath::from_bytes(hi))
            .map(|(k, _)| k.clone())
            .collect();
        for path in below {
            scan.remove(&path);
        }
    }
    scan.extend(fresh);
}

fn status_of(s: &Summary, full: bool) -> String {
    let outcome = match s.status {
        Some(Outcome::InSync) => "in sync",
        Some(Outcome::Synced) => "synced",
        Some(Outcome::Conflicts) => "synced, conflicts kept as copies",
        Some(Outcome::Incomplete) => "incomplete, the next run retries",
        Some(Outcome::Refused) | None => "refused",
    };
    format!(
        "last {}run {}: {outcome}: {} copied, {} deleted, {} renamed, {} conflicts, {} skipped, \
         {} failed",
        if full { "full " } else { "" },
        humantime::format_rfc3339_seconds(std::time::SystemTime::now()),
        s.copied,
        s.deleted,
        s.renamed,
        s.conflicts,
        s.skipped,
        s.failed
    )
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or(text)
}

fn join<T>(handle: std::thread::ScopedJoinHandle<'_, anyhow::Result<T>>) -> anyhow::Result<T> {
    handle
        .join()
        .unwrap_or_else(|_| Err(anyhow::anyhow!("a scan thread panicked")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bisync::entry::{Entry, Kind};

    fn entry() -> Entry {
        Entry {
            kind: Kind::File,
            size: 1,
            mtime: 1,
            mode: 0o644,
            uid: 0,
            gid: 0,
            ino: 1,
            target: None,
            hash: None,
        }
    }

    #[test]
    fn patch_replaces_a_subtree_and_nothing_beside_it() {
        let mut scan: Scan = ["a", "a b", "a/x", "a/y/z", "a0", "b"]
            .into_iter()
            .map(|p| (WirePath::from(p), entry()))
            .collect();
        let fresh: Scan = [("a/new", entry())]
            .into_iter()
            .map(|(p, e)| (WirePath::from(p), e))
            .collect();
        patch(
            &mut scan,
            &[WirePath::from("a"), WirePath::from("b")],
            fresh,
        );
        let names: Vec<String> = scan.keys().map(|p| p.to_string()).collect();
        assert_eq!(names, ["a b", "a/new", "a0"]);
    }
}
