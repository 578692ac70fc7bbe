//! What the targets' workers share: the result output, the state file, the
//! `--max-procs` slots, the stop flag, and the status table with what
//! systemd is told from it (one lock for all of pushd's per-target status).

use std::io::Write;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::log_notice;
use crate::os::systemd::Systemd;
use crate::pushd::state::StateFile;
use crate::pushd::status::StatusTable;
use crate::wire::event::Record;

/// State shared by the workers and the reader.
pub(crate) struct Shared {
    /// Where result records go; `None` once a write failed.
    out: Mutex<Option<Box<dyn Write + Send>>>,
    /// `--state`: each target's applied position.
    pub(crate) state: Option<Mutex<StateFile>>,
    /// Free `--max-procs` slots.
    slots: (Mutex<usize>, Condvar),
    /// SIGTERM/SIGINT after the input ended: workers waiting to retry stop.
    stop: (Mutex<bool>, Condvar),
    /// Everything pushd reports, under one lock.
    status: Mutex<Status>,
    /// Every target's state and numbers: `STATUS=`, the status files.
    pub(crate) health: crate::pushd::health::Health,
}

/// What pushd reports, kept together so that `STATUS=` is always said from
/// the table as it is.
pub(crate) struct Status {
    /// Every target's row.
    pub(crate) table: StatusTable,
    pub(crate) systemd: Systemd,
    /// A target that never synced failed for good (see `Config::insist`):
    /// pushd ends with this error.
    pub(crate) gave_up: Option<anyhow::Error>,
}

impl Shared {
    pub(crate) fn new(
        output: Box<dyn Write + Send>,
        state: Option<StateFile>,
        max_procs: usize,
        table: StatusTable,
        systemd: Systemd,
        health: crate::pushd::health::Health,
    ) -> Self {
        Shared {
            out: Mutex::new(Some(output)),
            state: state.map(Mutex::new),
            slots: (Mutex::new(max_procs.max(1)), Condvar::new()),
            stop: (Mutex::new(false), Condvar::new()),
            status: Mutex::new(Status {
                table,
                systemd,
                gave_up: None,
            }),
            health,
        }
    }

    /// The status table, systemd and the give-up error, locked.
    pub(crate) fn status(&self) -> MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes a result (or passed-through) record on the output.
    pub(crate) fn emit(&self, record: &Record) {
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let Some(writer) = out.as_mut() else {
            return;
        };
        let mut line = Vec::new();
        let written = record
            .write_line(&mut line)
            .map_err(std::io::Error::other)
            .and_then(|()| writer.write_all(&line))
            .and_then(|()| writer.flush());
        if let Err(e) = written {
            // Results are a courtesy: a reader that went away must not stop
            // the sync itself.
            *out = None;
            log_notice!("not writing results any more: stdout: {e}");
        }
    }

    /// Sleeps `d`, or less when a stop is asked for; true when stopping.
    pub(crate) fn sleep_unless_stopped(&self, d: Duration) -> bool {
        let (flag, cv) = &self.stop;
        let stopped = flag.lock().unwrap_or_else(|e| e.into_inner());
        let (stopped, _) = cv
            .wait_timeout_while(stopped, d, |s| !*s)
            .unwrap_or_else(|e| e.into_inner());
        *stopped
    }

    pub(crate) fn request_stop(&self) {
        let (flag, cv) = &self.stop;
        *flag.lock().unwrap_or_else(|e| e.into_inner()) = true;
        cv.notify_all();
    }

    /// Takes a `--max-procs` slot, waiting for one.
    pub(crate) fn acquire(&self) {
        let (count, cv) = &self.slots;
        let mut free = count.lock().unwrap_or_else(|e| e.into_inner());
        while *free == 0 {
            free = cv.wait(free).unwrap_or_else(|e| e.into_inner());
        }
        *free -= 1;
    }

    pub(crate) fn release(&self) {
        let (count, cv) = &self.slots;
        *count.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        cv.notify_one();
    }

    /// Records a target's lag (seqs behind) and held deletions, and updates
    /// `STATUS=` from the targets' health: at once when a target falls
    /// behind or catches up, its hold changes or its state changed
    /// (`urgent`), else at most every few seconds.
    pub(crate) fn set_lag(&self, index: usize, lag: u64, held: u64, urgent: bool) {
        let mut status = self.status();
        let changed = status.table.set_lag(index, lag, held) || urgent;
        if changed || status.systemd.status_due() {
            let text = self.health.summary();
            status.systemd.status(&text, changed);
        }
    }

    /// One target's start-up sync has ended; the last one tells systemd
    /// we are ready, so `systemctl start` returns with the targets in step.
    pub(crate) fn target_started(&self, index: usize) {
        let mut status = self.status();
        if status.table.started(index) {
            // A target whose first transfer failed is shown failing, never
            // synced (README "READY=1 and a target that cannot sync").
            let text = self.health.summary();
            self.health.set_ready();
            status.systemd.ready(&text);
        }
    }

    /// Once a second from the reader: pings the watchdog and, while a
    /// start-up sync of a large tree runs (it outlasts any fixed start
    /// timeout), asks systemd for more time.
    pub(crate) fn tick(&self) {
        self.health.tick(false);
        let mut status = self.status();
        status.systemd.tick();
        // Lags in seconds grow while nothing happens.
        if status.systemd.status_due() {
            let text = self.health.summary();
            status.systemd.status(&text, false);
        }
        if status
            .table
            .extend_due(Instant::now(), Duration::from_secs(10))
        {
            status.systemd.extend_timeout(Duration::from_secs(60));
        }
    }

    /// The first failure that ends pushd (see `Config::insist`); false when
    /// one was recorded before.
    pub(crate) fn give_up(&self, error: anyhow::Error) -> bool {
        let mut status = self.status();
        if status.gave_up.is_some() {
            return false;
        }
        status.gave_up = Some(error);
        true
    }

    /// A target gave up (and stopped pushd with a SIGTERM of its own).
    pub(crate) fn gave_up(&self) -> bool {
        self.status().gave_up.is_some()
    }
}
