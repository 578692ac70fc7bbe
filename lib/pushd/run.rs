//! pushd's main loop: read the stream, hand every record to the targets'
//! workers, and turn how the input and the workers ended into the exit code.

use std::io::{BufReader, Read, Write};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use anyhow::Context;
use nix::sys::signal::Signal;

use crate::health::publish::Publisher;
use crate::os::interruptible::{is_stop, Interruptible};
use crate::os::signals::Signals;
use crate::os::systemd::Systemd;
use crate::pushd::health::HealthTable;
use crate::pushd::state::StateFile;
use crate::wire::event::Record;
use crate::wire::path::WirePath;
use crate::wire::reader::{Item, RecordReader};
use crate::{log_error, log_info, log_notice, log_warn};

use super::shared::Shared;
use super::worker::{Work, Worker};
use super::Config;

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

/// Reads the stream from `input` until it ends, applying it to every
/// target; returns once every target has caught up (or given up), or after
/// SIGTERM/SIGINT once the transfers in progress have ended.
pub(crate) fn run_with(
    mut config: Config,
    input: impl Read + AsFd,
    output: Box<dyn Write + Send>,
) -> anyhow::Result<()> {
    if !crate::pushd::apply::delete_missing_args_works(&config.rsync)? {
        log_warn!(
            "this rsync ignores --delete-missing-args with --files-from (rsync issue 910): \
             deleting natively or with rm over ssh instead; upgrade rsync"
        );
        config.rsync.delete_missing_args_works = false;
    }
    // One ssh connection per ssh target for pushd's whole run, closed at the
    // end; the agents (declared after it, so dropped first) say bye first.
    let any_ssh = (config.targets.iter())
        .any(|t| matches!(t.location, crate::location::Location::Ssh { .. }));
    let _control = crate::ssh::ControlDir::for_settings(&mut config.rsync.ssh, any_ssh);
    let _agents = crate::pushd::agent::push::CloseAll;
    // Blocked before any thread starts, so every thread inherits the mask.
    let signals = Signals::block(&[
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
    ])?;
    let state = match &config.state {
        Some(path) => Some(StateFile::load(path)?.read_only(config.rsync.dry_run)),
        None => None,
    };
    let shared = Arc::new(Shared::new(
        output,
        state,
        config.max_procs,
        HealthTable::new(config.targets.iter().map(|t| t.name.clone())),
        Publisher::new(&config.health),
        Systemd::from_env(),
    ));
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
        .status()
        .systemd
        .status("waiting for the stream to start", true);
    let ticker = Arc::clone(&shared);
    let releasers = senders.clone();
    let teller = Arc::clone(&shared);
    let input = Interruptible::new(
        input,
        signals,
        Duration::from_secs(1),
        Box::new(move || ticker.tick()),
    )
    .on_signal(Box::new(move |signal| {
        if signal == Signal::SIGUSR2 {
            log_notice!("SIGUSR2: releasing the deletions the guards hold");
            for tx in &releasers {
                let _ = tx.send(Work::Release);
            }
        } else if signal == Signal::SIGUSR1 {
            log_notice!("SIGUSR1: {}", teller.summary());
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
            log_notice!("SIGUSR1: {}", teller.summary());
        } else {
            log_info!("ignoring {signal}");
        }
    }));
    // A target that gave up stopped us with a SIGTERM of our own.
    let gave_up = || shared.gave_up();
    if let Ok(Some(signal)) = &read {
        if !gave_up() {
            log_info!("stopping on {signal} once the transfers in progress end");
        }
        shared
            .status()
            .systemd
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
            shared.publish();
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
                        .status()
                        .systemd
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
    let gave_up = shared.status().gave_up.take();
    if let Some(err) = gave_up {
        return Err(err);
    }
    if read?.is_some() || stopped {
        return Ok(());
    }
    let held = |name: &String| shared.status().table.is_held_at_end(name);
    if !unfinished.is_empty() && unfinished.iter().all(held) {
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
                    shared.status().table.stream_arrived();
                }
            }
            Item::Record(Record::Batch(b)) => {
                ending.saw_stream = true;
                if stream.as_deref() != Some(b.stream.as_str()) {
                    stream = start_stream(&b.stream, &b.root, reader.line_no(), senders);
                    shared.status().table.stream_arrived();
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
                let what = match &item {
                    Item::Malformed { line_no, error } => {
                        format!("line {line_no} is malformed ({error})")
                    }
                    Item::Gap { reason } => reason.clone(),
                    Item::Record(_) => String::new(),
                };
                if stream.is_some() {
                    log_warn!("{what}: syncing the whole root");
                } else {
                    // Nothing is sent before a header names the stream and
                    // its root; the header then starts with a full sync, or
                    // resumes (--state) where the seqs show any loss.
                    log_warn!(
                        "{what} before any header: nothing to sync until a header names the stream"
                    );
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
