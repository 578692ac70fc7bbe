//! The `batchd` program around the pure [`Batcher`]: stdin is read and parsed
//! on one thread, signals are read from a signalfd on another, and the main
//! thread folds, keeps time and writes batches to stdout.

pub(crate) mod batcher;

use std::cell::Cell;
use std::io::{self, BufRead, Read};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;

use crate::batchd::batcher::{Batcher, Limits, Out};
use crate::os::signals::Signals;
use crate::os::systemd::Systemd;
use crate::wire::event::{Record, Timestamp};
use crate::wire::reader::{Item, RecordReader};
use crate::wire::transport::client::Connector;
use crate::wire::transport::{Output, Sink};

/// Settings, checked: what the command line asked for.
#[derive(Clone, Debug)]
pub struct Config {
    /// A batch is written this long after its first event at the latest.
    pub delay: Duration,
    /// A batch is written early once the input was quiet this long.
    pub settle: Option<Duration>,
    /// A batch is written as soon as this many changes are pending.
    pub max_events: Option<usize>,
    /// Read from a writer's socket (`--connect`) instead of stdin.
    pub connect: Option<PathBuf>,
    /// stdout, or a socket with a backlog (`--listen`).
    pub output: Output,
    /// `--status-file`, `--metrics-file`.
    pub health: crate::health::publish::HealthFiles,
}

/// What the helper threads tell the main thread.
enum Msg {
    /// Records read in one go (as many as stdin had ready, up to a limit).
    Items(Vec<Item>),
    Eof,
    ReadError(io::Error),
    Signal(Signal),
}

/// Items handed over at once: enough to make the hand-over cheap, few
/// enough that a burst does not hold a batch back.
const CHUNK: usize = 512;

/// Folded chunks go back to the reading thread, which frees their events
/// and reuses the chunk: freeing a chunk (over 64 KiB) made glibc consolidate
/// its free lists every time, and freeing the events' strings was another
/// tenth of the fold's time. Bounded; when the channel is full the chunk is
/// simply dropped here.
const SPARE_CHUNKS: usize = 4;

/// Reads the stream on stdin and writes batches on stdout until end of input
/// or SIGTERM/SIGINT/SIGHUP (each writes what is pending first, then returns
/// `Ok`). SIGUSR1 writes what is pending and goes on.
pub fn run(config: Config) -> anyhow::Result<()> {
    // Blocked before any thread starts, so no thread takes them the old way.
    let signals = Signals::block(&[
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGUSR1,
    ])?;
    let (tx, rx) = mpsc::sync_channel(16);
    let (spare_tx, spare_rx) = mpsc::sync_channel::<Vec<Item>>(SPARE_CHUNKS);
    let signal_tx = tx.clone();
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || forward_signals(signals, signal_tx))
        .context("starting the signal thread")?;
    match config.connect.clone() {
        Some(path) => thread::Builder::new()
            .name("connect".into())
            .spawn(move || read_socket(&path, tx))
            .context("starting the socket thread")?,
        None => thread::Builder::new()
            .name("stdin".into())
            .spawn(move || read_stdin(tx, spare_rx))
            .context("starting the stdin thread")?,
    };

    let mut batcher = Batcher::new(Limits {
        delay: config.delay,
        settle: config.settle,
        max_changes: config.max_events,
    });
    let mut writer = Sink::open(&config.output)?;
    let mut systemd = Systemd::from_env();
    systemd.ready(&match config.settle {
        Some(settle) => format!(
            "batching with a delay of {:?} (early after {settle:?} quiet)",
            config.delay
        ),
        None => format!("batching with a delay of {:?}", config.delay),
    });
    let mut out = Vec::new();
    let mut stats = Stats::default();
    let mut publisher = crate::health::publish::Publisher::new(&config.health);
    let mut published_events = 0;
    // How the input ended decides the exit code (see `input_verdict`).
    let (mut saw_header, mut end_reason) = (false, None::<String>);
    loop {
        systemd.tick();
        if systemd.status_due() {
            systemd.status(&stats.status(), false);
        }
        if stats.events != published_events {
            published_events = stats.events;
            publisher.changed();
        }
        publisher.tick(false, |now| stats.views(now));
        // Wake for the next batch, the watchdog, a status line or file.
        let wake = batcher
            .deadline()
            .map(|d| d.saturating_duration_since(Instant::now()))
            .into_iter()
            .chain(systemd.poll_timeout())
            .chain(systemd.is_enabled().then_some(Duration::from_secs(2)))
            .chain(publisher.poll_timeout())
            .min();
        let msg = match wake {
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            Some(wait) => rx.recv_timeout(wait),
        };
        let mut stop = false;
        match msg {
            Err(RecvTimeoutError::Timeout) => batcher.tick(Instant::now(), &mut out),
            Ok(Msg::Items(mut items)) => {
                // One clock read per chunk: a chunk takes well under a
                // millisecond, far below any delay worth setting.
                let now = Instant::now();
                for at in 0..items.len() {
                    ask_ahead(&items, at, &batcher);
                    let slot = &mut items[at];
                    // Events, nearly every item, are folded where they lie
                    // and freed by the reading thread.
                    if let Item::Record(Record::Event(ev)) = slot {
                        stats.events += 1;
                        if let Some(warning) = batcher.event(ev, now, &mut out) {
                            crate::log_warn!("{warning}");
                        }
                        continue;
                    }
                    let item = std::mem::replace(
                        slot,
                        Item::Gap {
                            reason: String::new(),
                        },
                    );
                    match item {
                        Item::Record(record) => {
                            match &record {
                                Record::Header(_) | Record::Batch(_) => {
                                    saw_header = true;
                                    end_reason = None;
                                }
                                Record::End(end) => end_reason = Some(end.reason.clone()),
                                _ => {}
                            }
                            if let Some(warning) = batcher.record(record, now, &mut out) {
                                crate::log_warn!("{warning}");
                            }
                        }
                        Item::Malformed { line_no, error } => {
                            stats.rescans += 1;
                            crate::log_warn!(
                                "stdin line {line_no}: not a stream record ({error}); \
                                 the next batch is a full rescan of the root"
                            );
                            batcher.malformed(now);
                        }
                        Item::Gap { reason } => {
                            stats.rescans += 1;
                            crate::log_warn!(
                                "{reason}: the next batch is a full rescan of the root"
                            );
                            batcher.malformed(now);
                        }
                    }
                }
                batcher.tick(now, &mut out);
                let _ = spare_tx.try_send(items);
            }
            Ok(Msg::Signal(Signal::SIGUSR1)) => {
                crate::log_notice!("SIGUSR1: {}; writing what is pending", stats.status());
                batcher.flush(&mut out);
            }
            Ok(Msg::Signal(sig)) => {
                crate::log_info!("{sig}: writing what is pending and stopping");
                systemd.stopping(&format!("stopping on {sig}"));
                batcher.flush(&mut out);
                stop = true;
            }
            Ok(Msg::Eof) | Err(RecvTimeoutError::Disconnected) => {
                batcher.flush(&mut out);
                write_counted(&mut writer, &mut out, &mut stats)?;
                stats.log();
                return input_verdict(saw_header, end_reason);
            }
            Ok(Msg::ReadError(err)) => {
                batcher.flush(&mut out);
                write_counted(&mut writer, &mut out, &mut stats)?;
                return Err(err).context("reading the stream on stdin");
            }
        }
        if write_counted(&mut writer, &mut out, &mut stats)? {
            publisher.changed();
        }
        if stop {
            stats.log();
            return Ok(());
        }
    }
}

/// How many events ahead of the one being folded their memory is asked
/// for: the path's bytes (written by the reading thread, maybe still in the
/// other core's cache), then the fold's index slots (which hashes the path),
/// then the record the slot points to. Far enough for a fetch from memory
/// to arrive while the events in between are folded, near enough that what
/// came is still in the cache.
const PATH_AHEAD: usize = 12;
const INDEX_AHEAD: usize = 6;
const RECORD_AHEAD: usize = 2;

/// Asks for what folding the events ahead of `at` will read (hints only;
/// at 100,000 paths the fold mostly waits on memory, one miss after the
/// other, when nothing is fetched ahead).
fn ask_ahead(items: &[Item], at: usize, batcher: &Batcher) {
    let event = |i: usize| match items.get(i) {
        Some(Item::Record(Record::Event(ev))) => Some(ev),
        _ => None,
    };
    // The first events of a chunk are asked for at its start.
    let nearest = if at == 0 { 0 } else { PATH_AHEAD };
    for ahead in nearest..=PATH_AHEAD {
        if let Some(ev) = event(at + ahead) {
            if let Some(byte) = ev.path.as_bytes().first() {
                crate::fold::prefetch(byte);
            }
        }
    }
    if let Some(ev) = event(at + INDEX_AHEAD) {
        batcher.prefetch(ev, false);
    }
    if let Some(ev) = event(at + RECORD_AHEAD) {
        batcher.prefetch(ev, true);
    }
}

/// The end of the input as an exit code: a stream that never started
/// (the stage before failed) or that ended because its source vanished is
/// not a success, so `set -o pipefail` and units downstream see it.
fn input_verdict(saw_header: bool, end_reason: Option<String>) -> anyhow::Result<()> {
    use crate::cli::exit::{coded, Code};
    if let Some(reason) = end_reason {
        return Err(coded(
            Code::SourceGone,
            format!("the source stream ended ({reason}): the source root is gone"),
        ));
    }
    if !saw_header {
        return Err(coded(
            Code::NoStream,
            "the input ended without a stream header (see the message of the stage before)",
        ));
    }
    Ok(())
}

/// What the main thread did, for `-v`: the fold's own cost, apart from
/// reading and parsing (the stdin thread).
#[derive(Default)]
struct Stats {
    events: u64,
    batches: u64,
    /// Malformed lines and gaps in the input, each a full rescan.
    rescans: u64,
}

impl Stats {
    fn status(&self) -> String {
        format!(
            "{} events folded into {} batches",
            self.events, self.batches
        )
    }

    /// The status file and metrics (lib/health/).
    fn views(&self, now: std::time::SystemTime) -> (crate::health::status::StatusDoc, String) {
        use crate::health::status::{program_views, Number, StatusDoc};
        let mut doc = StatusDoc::new("batchd", now, true, self.status());
        let metrics = program_views(
            &mut doc,
            &[],
            &[
                Number::counter("events_total", "Events read", self.events),
                Number::counter("batches_total", "Batches written", self.batches),
                Number::counter(
                    "rescans_total",
                    "Malformed lines or gaps in the input, each turned into a full rescan",
                    self.rescans,
                ),
            ],
        );
        (doc, metrics)
    }

    fn log(&self) {
        use nix::time::{clock_gettime, ClockId};
        let cpu = clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID)
            .map(|t| Duration::from(t).as_secs_f64())
            .unwrap_or(0.0);
        let rate = if cpu > 0.0 {
            self.events as f64 / cpu
        } else {
            0.0
        };
        crate::log_info!(
            "{} events folded into {} batches; main thread {cpu:.3} s CPU ({rate:.0} events per CPU second)",
            self.events,
            self.batches
        );
    }
}

/// Counts the batches in `out`, then writes it: every way out of the loop
/// (end of input too) counts what it writes. True when a batch was written.
fn write_counted(writer: &mut Sink, out: &mut Vec<Out>, stats: &mut Stats) -> anyhow::Result<bool> {
    let batches = out.iter().filter(|o| matches!(o, Out::Batch(_))).count() as u64;
    stats.batches += batches;
    write_all(writer, out)?;
    Ok(batches > 0)
}

fn write_all(writer: &mut Sink, out: &mut Vec<Out>) -> anyhow::Result<()> {
    if out.is_empty() {
        return Ok(());
    }
    for o in out.drain(..) {
        let record = match o {
            Out::Batch(mut batch) => {
                batch.ts = Timestamp::now();
                Record::Batch(batch)
            }
            Out::Pass(record) => record,
        };
        writer.write(&record).context("writing stdout")?;
    }
    writer.flush().context("writing stdout")
}

fn forward_signals(mut signals: Signals, tx: SyncSender<Msg>) {
    loop {
        let mut fds = [PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
        if let Err(err) = poll(&mut fds, PollTimeout::NONE) {
            if err == nix::errno::Errno::EINTR {
                continue;
            }
            crate::log_error!("waiting for signals: {err}");
            return;
        }
        loop {
            match signals.pending() {
                Ok(Some(sig)) => {
                    if tx.send(Msg::Signal(sig)).is_err() {
                        return;
                    }
                }
                Ok(None) => break,
                Err(err) => {
                    crate::log_error!("{err:#}");
                    return;
                }
            }
        }
    }
}

/// Reads from a writer's socket, reconnecting and resuming when it goes
/// away; a place the writer could not resume arrives as [`Item::Gap`].
fn read_socket(path: &Path, tx: SyncSender<Msg>) {
    let mut connector = Connector::new(path, None);
    loop {
        match connector.next_item(&|| false) {
            Ok(Some(item)) => {
                if tx.send(Msg::Items(vec![item])).is_err() {
                    return;
                }
            }
            Ok(None) => {
                let _ = tx.send(Msg::Eof);
                return;
            }
            Err(err) => {
                let _ = tx.send(Msg::ReadError(io::Error::other(format!("{err:#}"))));
                return;
            }
        }
    }
}

fn read_stdin(tx: SyncSender<Msg>, spare: mpsc::Receiver<Vec<Item>>) {
    let drained = Rc::new(Cell::new(true));
    let mut reader = RecordReader::new(Tracked {
        inner: io::BufReader::with_capacity(256 << 10, io::stdin().lock()),
        drained: Rc::clone(&drained),
    });
    let mut items = Vec::with_capacity(CHUNK);
    loop {
        let (end, last) = match reader.next_item() {
            Ok(Some(item)) => {
                items.push(item);
                (None, false)
            }
            Ok(None) => (Some(Msg::Eof), true),
            Err(err) => (Some(Msg::ReadError(err)), true),
        };
        // Hand over before a read could block, so nothing waits here.
        if !items.is_empty() && (last || items.len() >= CHUNK || drained.get()) {
            let next = match spare.try_recv() {
                Ok(mut used) => {
                    used.clear();
                    used
                }
                Err(_) => Vec::with_capacity(CHUNK),
            };
            let chunk = std::mem::replace(&mut items, next);
            if tx.send(Msg::Items(chunk)).is_err() {
                return;
            }
        }
        if let Some(end) = end {
            let _ = tx.send(end);
            return;
        }
    }
}

/// A buffered reader that notes whether its buffer is empty, i.e. whether
/// the next read may block.
struct Tracked<R> {
    inner: io::BufReader<R>,
    drained: Rc<Cell<bool>>,
}

impl<R: Read> Read for Tracked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.drained.set(self.inner.buffer().is_empty());
        Ok(n)
    }
}

impl<R: Read> BufRead for Tracked<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, amt: usize) {
        self.inner.consume(amt);
        self.drained.set(self.inner.buffer().is_empty());
    }
}
