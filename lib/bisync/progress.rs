//! How far a run has got: what it is doing (scanning, hashing, copying) and,
//! while copying, the files and bytes done out of what the plan copies and
//! the rate. The run adds to these counters as data flows (atomics, no
//! lock); a ticker thread reads them for the progress bar on a terminal,
//! `STATUS=` and `--watch`'s status file, so a long first sync — or one
//! large file — is never silence, and the status file never goes stale
//! while a run works.

use std::io::Write;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::cli::progress::Bar;
use crate::health::target::{human_bytes, Progress};

/// How often the ticker looks at the counters.
pub const TICK: Duration = Duration::from_millis(250);

/// What a run is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    Scanning = 0,
    Hashing = 1,
    Copying = 2,
}

/// One run's counters.
#[derive(Debug)]
pub struct Tally {
    /// When the run began.
    pub started: Instant,
    /// The archive was missing: this run is the pair's first sync.
    first: std::sync::atomic::AtomicBool,
    phase: AtomicU8,
    /// When copying began.
    copying_since: OnceLock<Instant>,
    files_planned: AtomicU64,
    bytes_planned: AtomicU64,
    files: AtomicU64,
    /// Bytes of the copies kept.
    bytes: AtomicU64,
    /// Bytes of the copy under way: kept or dropped when it ends.
    copy_bytes: AtomicU64,
    /// Grows with every phase, file and byte: the run moved (the watchdog).
    moves: AtomicU64,
}

/// What the ticker saw of a run's [`Tally::moved`] last time.
#[derive(Debug, Default)]
pub struct Seen(Option<(u64, Phase)>);

impl Tally {
    pub fn new(started: Instant) -> Tally {
        Tally {
            started,
            first: Default::default(),
            phase: AtomicU8::new(Phase::Scanning as u8),
            copying_since: OnceLock::new(),
            files_planned: AtomicU64::new(0),
            bytes_planned: AtomicU64::new(0),
            files: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            copy_bytes: AtomicU64::new(0),
            moves: AtomicU64::new(0),
        }
    }

    /// Whether the run moved since `seen` was taken, for the watchdog: a
    /// copying run only when a file or byte moved; scanning and hashing
    /// have no counters yet, so there it moved by assumption.
    pub fn moved(&self, seen: &mut Seen) -> bool {
        let now = (self.moves.load(Ordering::Relaxed), self.phase());
        let moved = now.1 != Phase::Copying || seen.0 != Some(now);
        seen.0 = Some(now);
        moved
    }

    /// The copy under way ended: its bytes count when it was `kept`, and
    /// are dropped when the copy was (the source changed while it was read,
    /// or the write failed).
    pub fn copy_ended(&self, kept: bool) {
        let n = self.copy_bytes.swap(0, Ordering::Relaxed);
        if kept {
            self.bytes.fetch_add(n, Ordering::Relaxed);
        }
    }

    pub fn set_first(&self) {
        self.first.store(true, Ordering::Relaxed);
    }

    pub fn is_first(&self) -> bool {
        self.first.load(Ordering::Relaxed)
    }

    pub fn hashing(&self) {
        self.phase.store(Phase::Hashing as u8, Ordering::Relaxed);
        self.moves.fetch_add(1, Ordering::Relaxed);
    }

    /// The plan is made: `files` copies of `bytes` in all come next.
    pub fn copying(&self, files: u64, bytes: u64, now: Instant) {
        self.files_planned.store(files, Ordering::Relaxed);
        self.bytes_planned.store(bytes, Ordering::Relaxed);
        let _ = self.copying_since.set(now);
        self.phase.store(Phase::Copying as u8, Ordering::Relaxed);
        self.moves.fetch_add(1, Ordering::Relaxed);
    }

    /// The files and bytes the plan copies.
    pub fn planned(&self) -> (u64, u64) {
        (
            self.files_planned.load(Ordering::Relaxed),
            self.bytes_planned.load(Ordering::Relaxed),
        )
    }

    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Relaxed) {
            0 => Phase::Scanning,
            1 => Phase::Hashing,
            _ => Phase::Copying,
        }
    }

    pub fn file_copied(&self) {
        self.files.fetch_add(1, Ordering::Relaxed);
        self.moves.fetch_add(1, Ordering::Relaxed);
    }

    /// `out`, counting the bytes written through it.
    pub fn counting<'w>(&'w self, out: &'w mut dyn Write) -> Counting<'w> {
        Counting { out, tally: self }
    }

    /// Files and bytes done, percent of the planned bytes (of the files
    /// when there are no bytes to copy) and the mean rate since copying
    /// began; `None` before copying.
    pub fn progress(&self, now: Instant) -> Option<Progress> {
        let since = *self.copying_since.get()?;
        let files = self.files.load(Ordering::Relaxed);
        // The kept copies and the one under way (dropped again if it is).
        let bytes = self.bytes.load(Ordering::Relaxed) + self.copy_bytes.load(Ordering::Relaxed);
        let (done, of) = match self.bytes_planned.load(Ordering::Relaxed) {
            0 => (files, self.files_planned.load(Ordering::Relaxed)),
            planned => (bytes, planned),
        };
        // Nothing to copy is all done. u128: no overflow past 184 PB.
        let percent = (u128::from(done.min(of)) * 100)
            .checked_div(u128::from(of))
            .map_or(100, |p| p as u8);
        let secs = now.saturating_duration_since(since).as_secs_f64();
        Some(Progress {
            files,
            bytes,
            percent: Some(percent),
            rate: (secs > 0.0).then(|| bytes as f64 / secs),
        })
    }

    /// `first full sync: copying 400 files (1.2 GB): 12 files, 3.1 MB so
    /// far, 1%, 2.0 MB/s`, for `STATUS=` and the status file.
    pub fn words(&self, now: Instant) -> String {
        let what = if self.is_first() {
            "first full sync"
        } else {
            "syncing"
        };
        let phase = match self.phase() {
            Phase::Scanning => "scanning both replicas".to_string(),
            Phase::Hashing => "hashing files changed on both sides".to_string(),
            Phase::Copying => format!(
                "copying {} files ({})",
                self.files_planned.load(Ordering::Relaxed),
                human_bytes(self.bytes_planned.load(Ordering::Relaxed))
            ),
        };
        match self.progress(now) {
            Some(p) => format!("{what}: {phase}: {}", p.words()),
            None => format!("{what}: {phase}"),
        }
    }
}

impl Tally {
    /// Shows the copying on `bar` (a terminal's): the first sync's always,
    /// another run's when it copies files.
    pub fn show_on(&self, bar: &Bar, now: Instant) {
        let Some(p) = self.progress(now) else {
            return;
        };
        if self.is_first() || self.planned().0 > 0 {
            bar.show(self.bar_label(), p.percent, &self.bar_words(&p));
        }
    }

    /// `94/200 files, 18.8 MB/40.0 MB, 77.0 MB/s`: short, beside the bar.
    fn bar_words(&self, p: &Progress) -> String {
        let (files, bytes) = self.planned();
        let mut s = format!(
            "{}/{files} files, {}/{}",
            p.files,
            human_bytes(p.bytes),
            human_bytes(bytes)
        );
        if let Some(rate) = p.rate {
            s.push_str(&format!(", {}/s", human_bytes(rate as u64)));
        }
        s
    }

    fn bar_label(&self) -> &'static str {
        if self.is_first() {
            "first sync"
        } else {
            "syncing"
        }
    }
}

/// A writer that adds what passes through to its run's bytes.
pub struct Counting<'w> {
    out: &'w mut dyn Write,
    tally: &'w Tally,
}

impl Write for Counting<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.out.write(buf)?;
        self.tally.copy_bytes.fetch_add(n as u64, Ordering::Relaxed);
        self.tally.moves.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// Runs `work` while a thread calls `tick(false)` every [`TICK`], and
/// `tick(true)` once after it ended.
pub fn ticking<R>(tick: impl FnMut(bool) + Send, work: impl FnOnce() -> R) -> R {
    let mut tick = tick;
    let (stop, stopped) = mpsc::channel::<()>();
    std::thread::scope(|s| {
        s.spawn(move || loop {
            match stopped.recv_timeout(TICK) {
                Err(mpsc::RecvTimeoutError::Timeout) => tick(false),
                _ => return tick(true),
            }
        });
        let result = work();
        drop(stop);
        result
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_bytes_and_files_against_the_plan() {
        let t0 = Instant::now();
        let t = Tally::new(t0);
        t.set_first();
        assert_eq!(t.progress(t0), None);
        assert_eq!(t.words(t0), "first full sync: scanning both replicas");
        t.copying(4, 2000, t0);
        let mut sink = Vec::new();
        t.counting(&mut sink).write_all(&[7; 500]).unwrap();
        t.copy_ended(true);
        t.file_copied();
        assert_eq!(sink.len(), 500);
        let p = t.progress(t0 + Duration::from_secs(2)).unwrap();
        assert_eq!((p.files, p.bytes, p.percent), (1, 500, Some(25)));
        assert_eq!(p.rate, Some(250.0));
        let words = t.words(t0 + Duration::from_secs(2));
        assert!(
            words.starts_with(
                "first full sync: copying 4 files (2.0 kB): 1 files, 500 B so far, 25%"
            ),
            "{words}"
        );
        // Nothing but empty files and directories: done by the count.
        let t = Tally::new(t0);
        t.copying(2, 0, t0);
        t.file_copied();
        assert_eq!(t.progress(t0).unwrap().percent, Some(50));
        assert_eq!(t.progress(t0).unwrap().rate, None);
        assert!(t.words(t0).starts_with("syncing: copying 2 files"));
        assert_eq!(t.bar_words(&t.progress(t0).unwrap()), "1/2 files, 0 B/0 B");
    }

    #[test]
    fn ticks_until_the_work_ends_and_once_after() {
        let ticks = std::sync::atomic::AtomicU64::new(0);
        let lasts = std::sync::atomic::AtomicU64::new(0);
        let out = ticking(
            |last| {
                let n = if last { &lasts } else { &ticks };
                n.fetch_add(1, Ordering::Relaxed);
            },
            || {
                // Work that waits for the ticker, not for a clock.
                while ticks.load(Ordering::Relaxed) < 2 {
                    std::thread::sleep(Duration::from_millis(5));
                }
                "done"
            },
        );
        assert_eq!(out, "done");
        assert_eq!(
            lasts.load(Ordering::Relaxed),
            1,
            "one last tick, before the end"
        );
        let after = ticks.load(Ordering::Relaxed);
        std::thread::sleep(TICK * 2);
        assert_eq!(
            ticks.load(Ordering::Relaxed),
            after,
            "no tick after the end"
        );
    }

    /// A copy dropped (its source changed while read) leaves no bytes in
    /// the count; one under way counts until it ends.
    #[test]
    fn only_kept_copies_count() {
        let t0 = Instant::now();
        let t = Tally::new(t0);
        t.copying(2, 1000, t0);
        let mut sink = Vec::new();
        t.counting(&mut sink).write_all(&[1; 400]).unwrap();
        assert_eq!(t.progress(t0).unwrap().bytes, 400, "under way");
        t.copy_ended(false);
        assert_eq!(t.progress(t0).unwrap().bytes, 0, "dropped");
        t.counting(&mut sink).write_all(&[1; 300]).unwrap();
        t.copy_ended(true);
        t.file_copied();
        assert_eq!(t.progress(t0).unwrap().bytes, 300);
    }

    /// The watchdog is pinged while a copying run moves, not while it
    /// stands still (a read stuck on a replica).
    #[test]
    fn a_copying_run_moves_only_when_data_does() {
        let t0 = Instant::now();
        let t = Tally::new(t0);
        let mut seen = Seen::default();
        assert!(t.moved(&mut seen), "scanning: no counters, assumed");
        assert!(t.moved(&mut seen));
        t.copying(1, 100, t0);
        assert!(t.moved(&mut seen), "a new phase");
        assert!(!t.moved(&mut seen), "nothing since");
        let mut sink = Vec::new();
        t.counting(&mut sink).write_all(&[1; 10]).unwrap();
        assert!(t.moved(&mut seen));
        assert!(!t.moved(&mut seen));
        t.copy_ended(false);
        assert!(!t.moved(&mut seen), "a dropped copy is no progress");
        t.file_copied();
        assert!(t.moved(&mut seen));
    }
}
