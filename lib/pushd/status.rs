//! What pushd knows about each target, in one table: how far behind it is,
//! what a guard holds, whether its start-up sync has ended. `READY=1` is
//! decided from it; the words of `STATUS=`, the states, last success or
//! error and the counters are the targets' health (pushd/health.rs over
//! lib/health/). Pure: the workers update it under one lock (see `Shared`).

use std::time::{Duration, Instant};

/// One target's row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TargetStatus {
    /// The target's name (as in result records and logs).
    pub(crate) name: String,
    /// Seqs received but not applied yet.
    pub(crate) lag: u64,
    /// Deletions a guard refused and holds; 0 when none.
    pub(crate) held: u64,
    /// The start-up sync has ended (succeeded, or failed and retrying).
    pub(crate) started: bool,
    /// The input ended with deletions still held here (exit code 12).
    pub(crate) held_at_end: bool,
}

impl TargetStatus {
    fn new(name: String) -> Self {
        TargetStatus {
            name,
            lag: 0,
            held: 0,
            started: false,
            held_at_end: false,
        }
    }
}

/// Every target's row, in the order of the configured targets (a worker's
/// index is its row), and the start-up state of the whole.
#[derive(Clone, Debug)]
pub(crate) struct StatusTable {
    /// One row per target, in the order of `Config::targets`.
    targets: Vec<TargetStatus>,
    /// A stream has arrived, so the start-up sync is under way.
    syncing: bool,
    /// When systemd was last asked for more start-up time.
    extended: Option<Instant>,
}

impl StatusTable {
    pub(crate) fn new(names: impl IntoIterator<Item = String>) -> Self {
        StatusTable {
            targets: names.into_iter().map(TargetStatus::new).collect(),
            syncing: false,
            extended: None,
        }
    }

    /// Records a target's lag and held deletions. True when `STATUS=` should
    /// say so at once: the target fell behind or caught up, or what is held
    /// changed; other changes may wait for the next periodic update.
    pub(crate) fn set_lag(&mut self, index: usize, lag: u64, held: u64) -> bool {
        let row = &mut self.targets[index];
        let changed = (row.lag == 0) != (lag == 0) || row.held != held;
        row.lag = lag;
        row.held = held;
        changed
    }

    /// A target's start-up sync ended. True when it was the last one, so
    /// systemd hears `READY=1` once: when every target is in step or retrying.
    pub(crate) fn started(&mut self, index: usize) -> bool {
        let row = &mut self.targets[index];
        if row.started {
            return false;
        }
        row.started = true;
        !self.starting()
    }

    /// Some target's start-up sync has not ended yet.
    pub(crate) fn starting(&self) -> bool {
        self.targets.iter().any(|t| !t.started)
    }

    /// A stream has arrived: the start-up sync is under way.
    pub(crate) fn stream_arrived(&mut self) {
        self.syncing = true;
    }

    /// Whether to ask systemd for more start-up time at `now`: while a
    /// start-up sync runs (a large tree outlasts any fixed start timeout),
    /// at most once per `every`. Before a stream arrives nothing is asked,
    /// so a source that never comes fails the start after TimeoutStartSec
    /// instead of hanging.
    pub(crate) fn extend_due(&mut self, now: Instant, every: Duration) -> bool {
        if !(self.starting() && self.syncing) {
            return false;
        }
        if self
            .extended
            .is_some_and(|t| now.saturating_duration_since(t) < every)
        {
            return false;
        }
        self.extended = Some(now);
        true
    }

    /// The input ended with deletions held on this target.
    pub(crate) fn held_at_end(&mut self, index: usize) {
        self.targets[index].held_at_end = true;
    }

    /// Whether `name` ended its input with deletions held.
    pub(crate) fn is_held_at_end(&self, name: &str) -> bool {
        self.targets.iter().any(|t| t.name == name && t.held_at_end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> StatusTable {
        StatusTable::new(["a".to_string(), "b".to_string()])
    }

    #[test]
    fn lag_changes_are_urgent_only_when_behind_flips_or_held_changes() {
        let mut t = table();
        assert!(!t.set_lag(0, 0, 0), "nothing changed");
        assert!(t.set_lag(0, 4, 0), "fell behind");
        assert!(
            !t.set_lag(0, 9, 0),
            "further behind: the periodic update says it"
        );
        assert!(t.set_lag(0, 9, 2), "held");
        assert!(!t.set_lag(0, 7, 2));
        assert!(t.set_lag(0, 0, 2), "caught up");
        assert!(t.set_lag(0, 0, 0), "released");
        assert_eq!(t.targets[0].lag, 0);
        assert_eq!(t.targets[1], TargetStatus::new("b".into()));
    }

    #[test]
    fn ready_once_when_the_last_target_started() {
        let mut t = table();
        assert!(t.starting());
        assert!(!t.started(1));
        assert!(
            !t.started(1),
            "a second report of one target is not another"
        );
        assert!(t.starting());
        assert!(t.started(0));
        assert!(!t.starting());
        assert!(!t.started(0), "READY=1 is said once");
    }

    #[test]
    fn no_targets_is_not_starting() {
        let mut t = StatusTable::new(Vec::new());
        assert!(!t.starting());
        t.stream_arrived();
        assert!(!t.extend_due(Instant::now(), Duration::from_secs(10)));
    }

    #[test]
    fn more_start_time_only_while_a_stream_syncs_and_not_too_often() {
        let mut t = table();
        let now = Instant::now();
        let every = Duration::from_secs(10);
        assert!(!t.extend_due(now, every), "no stream yet");
        t.stream_arrived();
        assert!(t.extend_due(now, every));
        assert!(!t.extend_due(now + Duration::from_secs(9), every));
        assert!(t.extend_due(now + every, every));
        t.started(0);
        t.started(1);
        assert!(
            !t.extend_due(now + every * 5, every),
            "started: no more asked"
        );
    }

    #[test]
    fn held_at_end_is_per_target() {
        let mut t = table();
        t.held_at_end(1);
        assert!(t.is_held_at_end("b"));
        assert!(!t.is_held_at_end("a"));
        assert!(!t.is_held_at_end("c"));
    }
}
