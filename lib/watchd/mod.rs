//! `watchd`: watch a tree and write its changes as a record stream.
//!
//! This module is the I/O loop: it finds the root (or waits for it), sets up
//! the watches, writes the header only once every watch is in place, and then
//! polls inotify, signals and stdout. What the kernel's events mean is
//! [`watcher`]'s business; which directory a descriptor is, [`tree`]'s.

pub(crate) mod backend;
pub(crate) mod fanotify;
mod fanotify_sys;
pub(crate) mod limits;
pub(crate) mod mountwatch;
pub(crate) mod tree;
pub(crate) mod watcher;

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;

use crate::cli::exit::{coded, Code};
use crate::exclude::Excludes;
use crate::os::signals::Signals;
use crate::os::systemd::Systemd;
use crate::wire::event::{
    new_stream_id, End, Event, EventKind, Header, Record, Timestamp, PROTOCOL_VERSION,
};
use crate::wire::path::WirePath;
use crate::wire::transport::{Output, Sink};
use backend::Backend;
pub use backend::BackendChoice;
pub use watcher::EventMode;
use watcher::{Outcome, RawEvent, Seen, Watcher};

/// Everything `watchd` needs, checked.
#[derive(Debug, Clone)]
pub struct Config {
    pub root: PathBuf,
    pub mode: EventMode,
    /// inotify, fanotify, or the best this machine allows.
    pub backend: BackendChoice,
    pub excludes: Excludes,
    /// Wait for the root to appear instead of failing.
    pub wait: bool,
    /// The root must be a mount point (with `wait`: wait until it is).
    pub require_mount: bool,
    /// stdout, or a socket with a backlog for readers that come and go.
    pub output: Output,
    /// `--status-file`, `--metrics-file`.
    pub health: crate::health::publish::HealthFiles,
}

/// How long to wait for the second half of a rename that arrived split over
/// two reads. The kernel queues both halves together, so this is rarely used.
const MOVE_PAIR_WAIT: Duration = Duration::from_millis(10);
const READ_BUFFER: usize = 256 << 10;

/// During a burst, how long to let the kernel queue fill before reading it
/// again. A reader waiting in poll(2) is woken by every event, and the
/// wake-up (an inter-processor interrupt, a VM exit on a virtual machine) is
/// paid by the process that made the change, in its own time: the writer of
/// a burst ran slower the faster watchd read. Sleeping instead of polling
/// takes the reader off the kernel's wait queue, so queueing an event costs
/// the writer no wake-up, and the next read takes hundreds of events at
/// once. Only after a read that found a burst (`BUSY_READ` records or more):
/// a single change is still read the moment it happens. A millisecond holds
/// far fewer events than the kernel queue (16,384 by default) even at the
/// fastest writers, so it cannot cause an overflow; it is nothing next to
/// batchd's delay. `WATCHD_COALESCE_US` overrides it (0: off), for the
/// benchmark (bench/watchd.sh W2).
const COALESCE: Duration = Duration::from_millis(1);
const BUSY_READ: usize = 32;

pub fn run(config: Config) -> anyhow::Result<()> {
    let mut signals = Signals::standard()?;
    let mut systemd = Systemd::from_env();
    let mut publisher = crate::health::publish::Publisher::new(&config.health);
    let Some(root) = find_root(&config, &mut signals, &mut systemd, &mut publisher)? else {
        return Ok(()); // stopped while waiting
    };
    let mut writer = Sink::open(&config.output)?.originating();

    let started = Instant::now();
    let setting_up =
        |n: usize| format!("setting up watches on {}: {n} directories", root.display());
    systemd.status(&setting_up(0), true);
    publisher.changed();
    publisher.tick(false, |now| {
        starting_views(&root, setting_up(0), false, 0, now)
    });
    let mut last_extend = Instant::now();
    let mut progress = |n: usize| {
        if last_extend.elapsed() >= Duration::from_secs(1) {
            last_extend = Instant::now();
            systemd.extend_timeout(Duration::from_secs(30));
            systemd.status(&setting_up(n), true);
            publisher.changed();
            publisher.tick(false, |now| {
                starting_views(&root, setting_up(n), false, n, now)
            });
        }
    };
    let mut watcher = Backend::start(
        config.backend,
        root.clone(),
        config.mode,
        config.excludes.clone(),
        &mut progress,
    )?;
    let mut mounts = mountwatch::MountWatch::open(&root);

    let header = Header {
        v: PROTOCOL_VERSION,
        stream: new_stream_id().context("making a stream id")?,
        root: WirePath::from(root.as_path()),
        host: nix::unistd::gethostname()
            .context("reading the host name")?
            .to_string_lossy()
            .into_owned(),
        ts: Timestamp::now(),
        producer: concat!("watchd/", env!("CARGO_PKG_VERSION")).to_string(),
        backend: Some(watcher.name().to_string()),
    };
    writer.write(&Record::Header(header.clone()))?;
    writer.flush().context("writing to stdout")?;
    let mut stats = Stats {
        seq: 0,
        root: root.clone(),
        overflows: 0,
        rescans: 0,
    };
    publisher.changed();
    let mut published_seq = 0;
    systemd.ready(&stats.status(&watcher));
    crate::log_info!(
        "watching {} with {}: {} directories in {:.2?}, stream {}",
        root.display(),
        watcher.name(),
        watcher.watched(),
        started.elapsed(),
        header.stream
    );

    let mut buf_a = vec![0u8; READ_BUFFER];
    let mut buf_b = vec![0u8; READ_BUFFER];
    let coalesce = std::env::var("WATCHD_COALESCE_US")
        .ok()
        .and_then(|us| us.parse().ok())
        .map_or(COALESCE, Duration::from_micros);
    let mut busy = false;
    loop {
        if busy && !coalesce.is_zero() {
            // See COALESCE: off the wait queue while the burst goes on.
            std::thread::sleep(coalesce);
        }
        busy = false;
        systemd.tick();
        if systemd.status_due() {
            systemd.status(&stats.status(&watcher), false);
        }
        if stats.seq != published_seq {
            published_seq = stats.seq;
            publisher.changed();
        }
        publisher.tick(false, |now| stats.views(&watcher, now));
        let timeout = systemd
            .poll_timeout()
            .into_iter()
            .chain(publisher.poll_timeout())
            .min()
            .unwrap_or(Duration::from_secs(2));
        let (inotify_ready, signal_ready, stdout_gone, mounts_changed) = {
            let mut fds = vec![
                PollFd::new(watcher.fd(), PollFlags::POLLIN),
                PollFd::new(signals.as_fd(), PollFlags::POLLIN),
            ];
            let stdout_at = writer.stdout_fd().map(|stdout| {
                fds.push(PollFd::new(stdout, PollFlags::empty()));
                fds.len() - 1
            });
            let mounts_at = mounts.as_ref().map(|m| {
                fds.push(PollFd::new(m.fd(), PollFlags::POLLPRI));
                fds.len() - 1
            });
            match poll(&mut fds, poll_timeout(timeout)) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e).context("waiting for events"),
            }
            let ready = |fd: &PollFd| fd.revents().unwrap_or(PollFlags::empty());
            (
                ready(&fds[0]).contains(PollFlags::POLLIN),
                ready(&fds[1]).contains(PollFlags::POLLIN),
                stdout_at.is_some_and(|i| {
                    ready(&fds[i]).intersects(PollFlags::POLLERR | PollFlags::POLLHUP)
                }),
                mounts_at.is_some_and(|i| {
                    ready(&fds[i]).intersects(PollFlags::POLLPRI | PollFlags::POLLERR)
                }),
            )
        };
        if stdout_gone {
            return Ok(()); // the reader went away: a normal end for a pipe stage
        }
        if signal_ready {
            while let Some(signal) = signals.pending()? {
                match signal {
                    Signal::SIGTERM | Signal::SIGINT => {
                        systemd.stopping(&format!("stopping on {signal}"));
                        writer.flush().context("writing to stdout")?;
                        crate::log_info!("stopping on {signal} after {} events", stats.seq);
                        return Ok(());
                    }
                    Signal::SIGHUP => {
                        crate::log_notice!(
                            "SIGHUP: rebuilding watches and asking for a full rescan"
                        );
                        watcher.rebuild(&mut |_| systemd.tick())?;
                        stats.rescans += 1;
                        stats.emit_rescan(&mut writer)?;
                    }
                    _ => crate::log_notice!("{signal}: {}", stats.status(&watcher)),
                }
            }
        }
        let mut outcome = Outcome::Continue;
        if mounts_changed {
            if let Some(m) = mounts.as_mut() {
                outcome = watcher.mounts_changed(m.changes())?;
                stats.emit(&mut writer, watcher.take_seen())?;
            }
        }
        if inotify_ready && outcome == Outcome::Continue {
            outcome = watcher.read_and_handle(&mut buf_a, &mut buf_b)?;
            let seen = watcher.take_seen();
            busy = seen.len() >= BUSY_READ;
            stats.emit(&mut writer, seen)?;
        }
        {
            match outcome {
                Outcome::Continue => {}
                Outcome::Overflow => {
                    crate::log_warn!(
                        "the kernel's {} queue overflowed (fs.{}.max_queued_events); \
                         events were lost, so the whole root is to be rescanned",
                        watcher.name(),
                        watcher.name()
                    );
                    watcher.rebuild(&mut |_| systemd.tick())?;
                    stats.overflows += 1;
                    stats.rescans += 1;
                    publisher.changed();
                    stats.emit_rescan(&mut writer)?;
                }
                Outcome::RootGone(reason) => {
                    stats.seq += 1;
                    writer.write(&Record::End(End {
                        seq: stats.seq,
                        ts: Timestamp::now(),
                        reason: reason.to_string(),
                    }))?;
                    writer.flush().context("writing to stdout")?;
                    systemd.stopping(&format!("{}: {reason}", root.display()));
                    return Err(coded(
                        Code::SourceGone,
                        format!(
                            "{} is gone ({reason}); stopping. Nothing is deleted on any replica because of this. \
                             Restore or remount it, then start watchd again",
                            root.display()
                        ),
                    ));
                }
            }
        }
        writer.flush().context("writing to stdout")?;
    }
}

/// Reads what the kernel has queued and hands it to the watcher. When a
/// rename's first half ends the read, waits briefly for its second half.
fn read_inotify(
    watcher: &mut Watcher,
    buf_a: &mut [u8],
    buf_b: &mut [u8],
) -> anyhow::Result<Outcome> {
    let mut raws: Vec<RawEvent> = match watcher.inotify_mut().read_events(buf_a) {
        Ok(events) => events.map(|e| RawEvent::from_inotify(&e)).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(Outcome::Continue),
        Err(e) => return Err(e).context("reading inotify events"),
    };
    if has_unpaired_move_from(&raws) {
        let readable = {
            let mut fds = [PollFd::new(watcher.inotify().as_fd(), PollFlags::POLLIN)];
            poll(&mut fds, poll_timeout(MOVE_PAIR_WAIT)).unwrap_or(0) > 0
        };
        if readable {
            match watcher.inotify_mut().read_events(buf_b) {
                Ok(events) => raws.extend(events.map(|e| RawEvent::from_inotify(&e))),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e).context("reading inotify events"),
            }
        }
    }
    watcher.handle(&raws)
}

fn has_unpaired_move_from(raws: &[RawEvent]) -> bool {
    use inotify::EventMask;
    raws.iter().enumerate().any(|(i, ev)| {
        ev.mask.contains(EventMask::MOVED_FROM)
            && !raws[i + 1..]
                .iter()
                .any(|to| to.mask.contains(EventMask::MOVED_TO) && to.cookie == ev.cookie)
    })
}

struct Stats {
    seq: u64,
    root: PathBuf,
    /// Kernel queue overflows (each a full rescan).
    overflows: u64,
    /// Full rescans asked for (overflows, SIGHUP).
    rescans: u64,
}

impl Stats {
    /// Writes what one read of the kernel queue produced. One `Event` is
    /// reused for all of them (the paths move in, the timestamp is shared),
    /// so a burst costs no allocation per record beyond the paths themselves.
    fn emit(&mut self, writer: &mut Sink, seen: Vec<Seen>) -> anyhow::Result<()> {
        if seen.is_empty() {
            return Ok(());
        }
        let event = Event {
            seq: 0,
            ts: Timestamp::now(),
            kind: EventKind::Rescan,
            path: WirePath::root(),
            dir: false,
            from: None,
        };
        let mut record = Record::Event(event);
        for s in seen {
            self.seq += 1;
            let Record::Event(event) = &mut record else {
                unreachable!("built as an event above")
            };
            event.seq = self.seq;
            event.kind = s.kind;
            event.path = s.path;
            event.dir = s.dir;
            event.from = s.from;
            writer.write(&record).context("writing to stdout")?;
        }
        Ok(())
    }

    fn emit_rescan(&mut self, writer: &mut Sink) -> anyhow::Result<()> {
        self.emit(
            writer,
            vec![Seen {
                kind: EventKind::Rescan,
                path: WirePath::root(),
                dir: true,
                from: None,
            }],
        )?;
        writer.flush().context("writing to stdout")
    }

    /// The status file and metrics (lib/health/), labelled with the root.
    fn views(
        &self,
        watcher: &Backend,
        now: std::time::SystemTime,
    ) -> (crate::health::status::StatusDoc, String) {
        use crate::health::status::{program_views, Number, StatusDoc};
        let mut doc = StatusDoc::new("watchd", now, true, self.status(watcher));
        let root = self.root.to_string_lossy();
        let metrics = program_views(
            &mut doc,
            &[("root", &root), ("backend", watcher.name())],
            &[
                Number::counter("events_total", "Events written", self.seq),
                Number::counter(
                    "overflows_total",
                    "Kernel event queue overflows, each followed by a full rescan",
                    self.overflows,
                ),
                Number::counter(
                    "rescans_total",
                    "Full rescans asked for (overflows, SIGHUP)",
                    self.rescans,
                ),
                Number::gauge(
                    "watches",
                    "Directories watched (inotify; fanotify: marks)",
                    watcher.watched() as f64,
                ),
                waiting_gauge(false),
            ],
        );
        (doc, metrics)
    }

    fn status(&self, watcher: &Backend) -> String {
        format!(
            "watching {} with {}: {} directories, {} events",
            self.root.display(),
            watcher.name(),
            watcher.watched(),
            self.seq
        )
    }
}

fn poll_timeout(d: Duration) -> PollTimeout {
    PollTimeout::try_from(d.as_millis().min(i32::MAX as u128) as i32).unwrap_or(PollTimeout::MAX)
}

/// Checks the root, or waits for it with `--wait`, saying so in `STATUS=`,
/// the status file (kept fresh while waiting) and on SIGUSR1. `Ok(None)`: a
/// stop signal came while waiting.
fn find_root(
    config: &Config,
    signals: &mut Signals,
    systemd: &mut Systemd,
    publisher: &mut crate::health::publish::Publisher,
) -> anyhow::Result<Option<PathBuf>> {
    let mut announced: Option<String> = None;
    loop {
        match check_root(&config.root, config.require_mount) {
            Ok(root) => return Ok(Some(root)),
            Err(RootProblem::Fatal(e)) => return Err(e),
            Err(RootProblem::NotYet(why)) if !config.wait => {
                return Err(coded(
                    Code::NoSource,
                    format!(
                        "{why}. Check the path or mount the disk; with --wait, watchd waits for it"
                    ),
                ))
            }
            Err(RootProblem::NotYet(why)) => {
                if announced.as_deref() != Some(why.as_str()) {
                    crate::log_notice!("{why}; waiting for it (--wait)");
                    systemd.status(&format!("waiting: {why}"), true);
                    publisher.changed();
                    announced = Some(why);
                }
            }
        }
        let why = announced.as_deref().unwrap_or_default();
        publisher.tick(false, |now| {
            let text = format!("waiting: {why} (--wait)");
            starting_views(&config.root, text, true, 0, now)
        });
        systemd.tick();
        let mut fds = [PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
        let _ = poll(&mut fds, poll_timeout(Duration::from_millis(500)));
        while let Some(signal) = signals.pending()? {
            match signal {
                Signal::SIGTERM | Signal::SIGINT => return Ok(None),
                Signal::SIGUSR1 => crate::log_notice!("{signal}: waiting: {why} (--wait)"),
                _ => {}
            }
        }
    }
}

/// The status file and metrics before the watches are in place (not
/// ready): while `--wait` waits for the root (`waiting`), then while the
/// watches are set up.
fn starting_views(
    root: &Path,
    summary: String,
    waiting: bool,
    watches: usize,
    now: std::time::SystemTime,
) -> (crate::health::status::StatusDoc, String) {
    use crate::health::status::{program_views, Number, StatusDoc};
    let mut doc = StatusDoc::new("watchd", now, false, summary);
    let root = root.to_string_lossy();
    let metrics = program_views(
        &mut doc,
        &[("root", &root)],
        &[
            Number::gauge(
                "watches",
                "Directories watched (inotify; fanotify: marks)",
                watches as f64,
            ),
            waiting_gauge(waiting),
        ],
    );
    (doc, metrics)
}

fn waiting_gauge(waiting: bool) -> crate::health::status::Number {
    crate::health::status::Number::gauge(
        "waiting",
        "1 while --wait waits for the root to appear or be mounted",
        f64::from(u8::from(waiting)),
    )
}

enum RootProblem {
    /// Missing or not mounted yet: worth waiting for.
    NotYet(String),
    Fatal(anyhow::Error),
}

fn check_root(root: &Path, require_mount: bool) -> Result<PathBuf, RootProblem> {
    let shown = root.display();
    // Behind PrivateTmp= a root under /tmp is a different, empty tree:
    // waiting for it to appear would be silence, not a sync.
    if let Some(why) = crate::os::mounts::in_private_tmp(root) {
        return Err(RootProblem::Fatal(coded(
            Code::NoSource,
            format!("the source {why}"),
        )));
    }
    let meta = match std::fs::metadata(root) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(RootProblem::NotYet(format!("{shown} does not exist")))
        }
        Err(e) => {
            return Err(RootProblem::Fatal(coded(
                Code::NoSource,
                format!("cannot use {shown}: {e}"),
            )))
        }
    };
    if !meta.is_dir() {
        return Err(RootProblem::Fatal(coded(
            Code::NoSource,
            format!("{shown} is not a directory; watchd watches a directory tree"),
        )));
    }
    let canonical = std::fs::canonicalize(root).map_err(|e| {
        RootProblem::Fatal(coded(
            Code::NoSource,
            format!("cannot resolve {shown}: {e}"),
        ))
    })?;
    if let Err(e) = std::fs::read_dir(&canonical) {
        return Err(RootProblem::Fatal(coded(
            Code::NoSource,
            format!("cannot read {shown}: {e}"),
        )));
    }
    if require_mount {
        let mounted = crate::os::mounts::is_mount_point(&canonical).map_err(|e| {
            RootProblem::Fatal(anyhow::Error::new(e).context("reading /proc/self/mountinfo"))
        })?;
        if !mounted {
            return Err(RootProblem::NotYet(format!(
                "{shown} is not a mount point (--require-mount)"
            )));
        }
    }
    Ok(canonical)
}
