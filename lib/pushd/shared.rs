//! What the targets' workers share: the result output, the state file,
//! the `--max-procs` slots, the stop flag and what systemd is told.

use std::io::Write;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::log_notice;
use crate::os::systemd::Systemd;
use crate::pushd::state::StateFile;
use crate::wire::event::Record;

/// State shared by the workers.
pub(super) struct Shared {
    pub(super) out: Mutex<Box<dyn Write + Send>>,
    pub(super) state: Option<Mutex<StateFile>>,
    pub(super) slots: (Mutex<usize>, Condvar),
    /// Per target: name, seqs behind, deletions held.
    pub(super) lag: Mutex<Vec<(String, u64, u64)>>,
    pub(super) systemd: Mutex<Systemd>,
    pub(super) writing: std::sync::atomic::AtomicBool,
    /// Targets whose start-up sync has not ended yet: systemd hears
    /// `READY=1` when the last one ends (succeeded, or failed and retrying).
    pub(super) starting: Mutex<usize>,
    /// A stream has arrived, so the start-up sync is under way.
    pub(super) syncing: std::sync::atomic::AtomicBool,
    /// When systemd was last asked for more start-up time.
    pub(super) extended: Mutex<Option<Instant>>,
    /// SIGTERM/SIGINT after the input ended: workers waiting to retry stop.
    pub(super) stop: (Mutex<bool>, Condvar),
    /// Targets that ended their input with deletions held.
    pub(super) held_at_end: Mutex<Vec<String>>,
    /// A target that never synced failed for good (see `Config::insist`):
    /// pushd ends with this error.
    pub(super) gave_up: Mutex<Option<anyhow::Error>>,
}

impl Shared {
    pub(super) fn emit(&self, record: &Record) {
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
    pub(super) fn sleep_unless_stopped(&self, d: Duration) -> bool {
        let (flag, cv) = &self.stop;
        let stopped = flag.lock().unwrap_or_else(|e| e.into_inner());
        let (stopped, _) = cv
            .wait_timeout_while(stopped, d, |s| !*s)
            .unwrap_or_else(|e| e.into_inner());
        *stopped
    }

    pub(super) fn request_stop(&self) {
        let (flag, cv) = &self.stop;
        *flag.lock().unwrap_or_else(|e| e.into_inner()) = true;
        cv.notify_all();
    }

    pub(super) fn acquire(&self) {
        let (count, cv) = &self.slots;
        let mut free = count.lock().unwrap_or_else(|e| e.into_inner());
        while *free == 0 {
            free = cv.wait(free).unwrap_or_else(|e| e.into_inner());
        }
        *free -= 1;
    }

    pub(super) fn release(&self) {
        let (count, cv) = &self.slots;
        *count.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        cv.notify_one();
    }

    /// Records a target's lag (seqs behind) and updates `STATUS=`: at once
    /// when a target falls behind or catches up, else at most every few seconds.
    pub(super) fn set_lag(&self, index: usize, lag: u64, held: u64) {
        let (status, changed) = {
            let mut table = self.lag.lock().unwrap_or_else(|e| e.into_inner());
            let changed = (table[index].1 == 0) != (lag == 0) || table[index].2 != held;
            table[index].1 = lag;
            table[index].2 = held;
            (lag_text(&table), changed)
        };
        let mut systemd = self.systemd.lock().unwrap_or_else(|e| e.into_inner());
        systemd.status(&status, changed);
    }

    /// One target's start-up sync has ended; the last one tells systemd
    /// we are ready, so `systemctl start` returns with the targets in step.
    pub(super) fn target_started(&self) {
        let mut left = self.starting.lock().unwrap_or_else(|e| e.into_inner());
        *left = left.saturating_sub(1);
        if *left == 0 {
            let status = lag_text(&self.lag.lock().unwrap_or_else(|e| e.into_inner()));
            let mut systemd = self.systemd.lock().unwrap_or_else(|e| e.into_inner());
            systemd.ready(&status);
        }
    }
}

/// `STATUS=` text: how far behind each target is, and which are held.
fn lag_text(table: &[(String, u64, u64)]) -> String {
    table
        .iter()
        .map(|(name, lag, held)| {
            if *held > 0 {
                format!("{name}: {lag} behind, HELD: {held} deletions refused by a guard (SIGUSR2 releases)")
            } else {
                format!("{name}: {lag} behind")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}
