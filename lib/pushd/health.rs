//! What pushd knows about each target, in one table: one [`TargetHealth`]
//! per target (lib/health/: its numbers, the state they put it in, its
//! words) and the start-up state of the whole. `READY=1`, `STATUS=`, the
//! status file and the metrics are all said from it. Pure: the workers
//! update it under one lock (see `Shared`), and `now` is passed in.

use std::time::{Duration, Instant, SystemTime};

use crate::health::status::{target_metrics, StatusDoc, TargetReport};
use crate::health::target::{summary, TargetHealth};

/// Every target's row, in the order of the configured targets (a worker's
/// index is its row), and the start-up state of the whole.
#[derive(Clone, Debug)]
pub(crate) struct HealthTable {
    /// One row per target, in the order of `Config::targets`.
    targets: Vec<TargetHealth>,
    /// A stream has arrived, so the start-up sync is under way.
    syncing: bool,
    /// When systemd was last asked for more start-up time.
    extended: Option<Instant>,
    /// `READY=1` was sent.
    ready: bool,
}

impl HealthTable {
    pub(crate) fn new(names: impl IntoIterator<Item = String>) -> Self {
        HealthTable {
            targets: names.into_iter().map(|n| TargetHealth::new(&n)).collect(),
            syncing: false,
            extended: None,
            ready: false,
        }
    }

    /// Changes one target's numbers. True when `STATUS=` should say so at
    /// once: the target's state changed, it fell behind or caught up, or
    /// what is held changed; other changes may wait for the next periodic
    /// update.
    pub(crate) fn update(&mut self, index: usize, change: impl FnOnce(&mut TargetHealth)) -> bool {
        let row = &mut self.targets[index];
        let (state, behind, held) = (row.state(), row.lag_events() > 0, row.deletions_held);
        change(row);
        state != row.state() || behind != (row.lag_events() > 0) || held != row.deletions_held
    }

    /// One target's row.
    pub(crate) fn get(&self, index: usize) -> &TargetHealth {
        &self.targets[index]
    }

    /// A target's start-up sync ended. True when it was the last one, so
    /// systemd hears `READY=1` once: when every target is in step or retrying.
    pub(crate) fn started(&mut self, index: usize) -> bool {
        let row = &mut self.targets[index];
        if row.started {
            return false;
        }
        row.started = true;
        if self.starting() {
            return false;
        }
        self.ready = true;
        true
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

    /// `STATUS=`: the targets, worst first.
    pub(crate) fn summary(&self, now: SystemTime) -> String {
        summary(&self.targets, now)
    }

    /// The status file's document and the metrics text at `now`.
    pub(crate) fn views(&self, now: SystemTime) -> (StatusDoc, String) {
        let mut doc = StatusDoc::new("pushd", now, self.ready, self.summary(now));
        doc.targets = self
            .targets
            .iter()
            .map(|t| TargetReport::of(t, now))
            .collect();
        (doc, target_metrics(&self.targets, self.ready, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> HealthTable {
        HealthTable::new(["a".to_string(), "b".to_string()])
    }

    #[test]
    fn lag_changes_are_urgent_only_when_behind_flips_or_held_changes() {
        let mut t = table();
        // A target in step with its stream, as after its start-up sync.
        t.update(0, |h| {
            h.stream = Some("s".into());
            h.in_step_once = true;
        });
        let set_lag = |t: &mut HealthTable, lag: u64, held: u64| {
            t.update(0, |h| {
                h.seen_seq = h.applied_seq + lag;
                h.deletions_held = held;
            })
        };
        assert!(!set_lag(&mut t, 0, 0), "nothing changed");
        assert!(set_lag(&mut t, 4, 0), "fell behind");
        assert!(
            !set_lag(&mut t, 9, 0),
            "further behind: the periodic update says it"
        );
        assert!(set_lag(&mut t, 9, 2), "held");
        assert!(!set_lag(&mut t, 7, 2));
        assert!(set_lag(&mut t, 0, 2), "caught up");
        assert!(set_lag(&mut t, 0, 0), "released");
        assert_eq!(t.get(0).lag_events(), 0);
        assert_eq!(t.get(1), &TargetHealth::new("b"));
        assert!(
            !t.update(1, |h| h.transfers += 1),
            "a count alone is not urgent"
        );
        assert!(
            t.update(1, |h| h.consecutive_failures = 1),
            "a state change is"
        );
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
        assert!(t.ready);
    }

    #[test]
    fn no_targets_is_not_starting() {
        let mut t = HealthTable::new(Vec::new());
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
