//! The progress bar of long work (pushd's start-up full sync, bisync's first
//! sync) on stderr, drawn only while stderr is a terminal. Into a pipe, a
//! log file or the journal no bar is ever written: there the same numbers
//! are in `STATUS=` and the status file (lib/health/).
//!
//! One set of bars per process (pushd draws one per target syncing at
//! once); log lines go through [`suspend`], so they print above the bars
//! instead of through them.

use std::io::IsTerminal;
use std::sync::OnceLock;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::health::target::Progress;

/// The process's bars; `None` when stderr is not a terminal, or `-q` asked
/// for warnings and errors only. Decided once, after the log's set-up:
/// stderr does not become a terminal later.
fn bars() -> Option<&'static MultiProgress> {
    static BARS: OnceLock<Option<MultiProgress>> = OnceLock::new();
    BARS.get_or_init(|| {
        let wanted = crate::cli::log::enabled(crate::cli::log::Level::Notice);
        (wanted && std::io::stderr().is_terminal())
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()))
    })
    .as_ref()
}

/// Runs `write` (a log line to stderr) with the bars cleared away, then
/// draws them again below it.
pub fn suspend<R>(write: impl FnOnce() -> R) -> R {
    match bars() {
        Some(bars) => bars.suspend(write),
        None => write(),
    }
}

/// One piece of long work's bar: nothing is drawn until the first numbers
/// come, and it is cleared when dropped (the log line that follows says how
/// the work ended).
#[derive(Default)]
pub struct Bar {
    bar: OnceLock<Option<ProgressBar>>,
}

impl Bar {
    /// Shows `percent` done as the bar and `words` beside it, cut at the
    /// terminal's width; `label` names the work (a target, `first sync`)
    /// when the bar first appears.
    pub fn show(&self, label: &str, percent: Option<u8>, words: &str) {
        let set = |bar: &ProgressBar| {
            if let Some(percent) = percent {
                bar.set_position(u64::from(percent.min(100)));
            }
            bar.set_message(words.to_string());
        };
        let mut fresh = false;
        let Some(bar) = self.bar.get_or_init(|| {
            fresh = true;
            start(label, &set)
        }) else {
            return;
        };
        if !fresh {
            set(bar);
        }
    }

    /// Shows a transfer's [`Progress`] (the words `STATUS=` says).
    pub fn show_progress(&self, label: &str, p: &Progress) {
        self.show(label, p.percent, &p.words());
    }
}

/// A bar labelled `label`, filled by `set` before it is first drawn.
fn start(label: &str, set: &dyn Fn(&ProgressBar)) -> Option<ProgressBar> {
    let bars = bars()?;
    let style = ProgressStyle::with_template("{prefix} [{bar:20}] {wide_msg}")
        .expect("a valid template")
        .progress_chars("=> ");
    let bar = ProgressBar::with_draw_target(Some(100), ProgressDrawTarget::hidden())
        .with_style(style)
        .with_prefix(label.to_string());
    set(&bar);
    let bar = bars.add(bar);
    bar.tick(); // drawn now, not at the next change: there may be none
    Some(bar)
}

impl Drop for Bar {
    fn drop(&mut self) {
        if let (Some(Some(bar)), Some(bars)) = (self.bar.get(), bars()) {
            bar.finish_and_clear();
            bars.remove(bar);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_bar_when_stderr_is_not_a_terminal() {
        // cargo test captures stderr through a pipe, or hands the
        // terminal on: whichever, the decision follows isatty(2).
        let bar = Bar::default();
        bar.show_progress(
            "x",
            &Progress {
                files: 1,
                bytes: 10,
                percent: Some(5),
                rate: None,
            },
        );
        let drawn = bar.bar.get().is_some_and(Option::is_some);
        assert_eq!(drawn, bars().is_some());
        assert_eq!(bars().is_some(), std::io::stderr().is_terminal());
        assert_eq!(suspend(|| 7), 7);
    }
}
