//! What the targets' workers share: the result output, the state file, the
//! `--max-procs` slots, the stop flag, and the targets' health table with
//! what systemd and the status files are told from it (one lock for all of
//! pushd's per-target state).

use std::io::Write;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use crate::health::publish::Publisher;
use crate::health::target::TargetHealth;
use crate::log_notice;
use crate::os::systemd::Systemd;
use crate::pushd::health::HealthTable;
use crate::pushd::state::StateFile;
use crate::wire::event::Record;

/// `--max-procs` slots: how many transfers may run at once.
pub(crate) struct Slots {
    free: Mutex<usize>,
    freed: Condvar,
}

/// One slot, given back when dropped (also on an early return or a panic).
pub(crate) struct Slot<'a>(&'a Slots);

impl Slots {
    pub(crate) fn new(n: usize) -> Self {
        Slots {
            free: Mutex::new(n.max(1)),
            freed: Condvar::new(),
        }
    }

    /// Takes a slot, waiting for one.
    pub(crate) fn take(&self) -> Slot<'_> {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        while *free == 0 {
            free = self.freed.wait(free).unwrap_or_else(|e| e.into_inner());
        }
        *free -= 1;
        Slot(self)
    }

    /// Takes a slot if one is free now.
    #[cfg(test)]
    pub(crate) fn try_take(&self) -> Option<Slot<'_>> {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        (*free > 0).then(|| {
            *free -= 1;
            Slot(self)
        })
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.0.freed.notify_one();
    }
}

/// State shared by the workers and the reader.
pub(crate) struct Shared {
    /// Where result records go; `None` once a write failed.
    out: Mutex<Option<Box<dyn Write + Send>>>,
    /// `--state`: each target's applied position.
    pub(crate) state: Option<Mutex<StateFile>>,
    /// `--max-procs`: transfers that may run at once.
    pub(crate) slots: Slots,
    /// SIGTERM/SIGINT after the input ended: workers waiting to retry stop.
    stop: (Mutex<bool>, Condvar),
    /// Everything pushd reports, under one lock.
    status: Mutex<Status>,
}

/// What pushd reports, kept together so that `STATUS=` and the status
/// files are always said from the table as it is.
pub(crate) struct Status {
    /// Every target's row.
    pub(crate) table: HealthTable,
    /// `--status-file`, `--metrics-file`.
    publisher: Publisher,
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
        table: HealthTable,
        publisher: Publisher,
        systemd: Systemd,
    ) -> Self {
        Shared {
            out: Mutex::new(Some(output)),
            state: state.map(Mutex::new),
            slots: Slots::new(max_procs),
            stop: (Mutex::new(false), Condvar::new()),
            status: Mutex::new(Status {
                table,
                publisher,
                systemd,
                gave_up: None,
            }),
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

    /// Changes one target's numbers; the status files follow at their
    /// next tick. True when `STATUS=` should say so at once (see
    /// [`HealthTable::update`]).
    pub(crate) fn update(&self, index: usize, change: impl FnOnce(&mut TargetHealth)) -> bool {
        let mut status = self.status();
        status.publisher.changed();
        status.table.update(index, change)
    }

    /// Changes one target's numbers and updates `STATUS=`: at once when
    /// the target falls behind or catches up, its hold changes or its
    /// state changed (or `urgent`), else at most every few seconds.
    pub(crate) fn report(&self, index: usize, change: impl FnOnce(&mut TargetHealth)) {
        let mut status = self.status();
        status.publisher.changed();
        let changed = status.table.update(index, change);
        if changed || status.systemd.status_due() {
            let text = status.table.summary(SystemTime::now());
            status.systemd.status(&text, changed);
        }
    }

    /// A copy of one target's numbers.
    pub(crate) fn get(&self, index: usize) -> TargetHealth {
        self.status().table.get(index).clone()
    }

    /// `STATUS=`: the targets, worst first.
    pub(crate) fn summary(&self) -> String {
        self.status().table.summary(SystemTime::now())
    }

    /// One target's start-up sync has ended; the last one tells systemd
    /// we are ready, so `systemctl start` returns with the targets in step.
    pub(crate) fn target_started(&self, index: usize) {
        let mut status = self.status();
        if status.table.started(index) {
            // A target whose first transfer failed is shown failing, never
            // synced (README "READY=1 and a target that cannot sync").
            let text = status.table.summary(SystemTime::now());
            status.publisher.changed();
            status.systemd.ready(&text);
        }
    }

    /// Writes the status files when due.
    pub(crate) fn publish(&self) {
        let status = &mut *self.status();
        let table = &status.table;
        status.publisher.tick(false, |now| table.views(now));
    }

    /// Once a second from the reader: writes the status files when due,
    /// pings the watchdog and, while a start-up sync of a large tree runs
    /// (it outlasts any fixed start timeout), asks systemd for more time.
    pub(crate) fn tick(&self) {
        let status = &mut *self.status();
        let table = &status.table;
        status.publisher.tick(false, |now| table.views(now));
        status.systemd.tick();
        // Lags in seconds grow while nothing happens.
        if status.systemd.status_due() {
            let text = status.table.summary(SystemTime::now());
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
