//! The status file's document (JSON, `--status-file`, read back by
//! `syncpipe status`) and the metrics text (`--metrics-file`) of the same
//! numbers: a program fills [`TargetHealth`]s (pushd) or a list of
//! [`Number`]s (watchd, batchd, bisync) and both views come from them.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::health::metrics::{Exposition, Kind};
use crate::health::target::{rfc3339, State, TargetHealth};

/// Version of the status file's layout; a reader refuses a higher one.
pub const VERSION: u32 = 1;

/// What a status file holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusDoc {
    pub v: u32,
    /// `pushd`, `watchd`, `batchd`, `bisync`.
    pub program: String,
    pub pid: u32,
    /// When this was written (RFC 3339); the file is rewritten while idle
    /// too, so an old time means the program is gone or stuck.
    pub updated: String,
    pub updated_unix: f64,
    /// The program told systemd `READY=1` (pushd: every target finished
    /// its start-up sync, or is shown failing).
    pub ready: bool,
    /// The `STATUS=` text.
    pub summary: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<TargetReport>,
    /// Program-wide numbers (watchd's events, batchd's batches, …).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub numbers: BTreeMap<String, serde_json::Value>,
}

impl StatusDoc {
    pub fn new(program: &str, now: SystemTime, ready: bool, summary: String) -> Self {
        StatusDoc {
            v: VERSION,
            program: program.to_string(),
            pid: std::process::id(),
            updated: rfc3339(now),
            updated_unix: unix(now),
            ready,
            summary,
            targets: Vec::new(),
            numbers: BTreeMap::new(),
        }
    }

    /// Seconds since the file was written.
    pub fn age(&self, now: SystemTime) -> f64 {
        (unix(now) - self.updated_unix).max(0.0)
    }
}

/// One target in the status file: its numbers (the [`TargetHealth`]
/// itself, which says what it carries) and what they put it in when the
/// file was written, so a reader needs no clock and no pushd internals.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TargetReport {
    #[serde(flatten)]
    pub target: TargetHealth,
    pub state: State,
    /// The target's clause of `STATUS=`.
    pub words: String,
    /// Stream seqs received and not applied yet.
    pub lag_events: u64,
    /// Age of the oldest change not applied yet.
    pub lag_seconds: f64,
}

impl TargetReport {
    pub fn of(t: &TargetHealth, now: SystemTime) -> Self {
        TargetReport {
            target: t.clone(),
            state: t.state(),
            words: t.words(now),
            lag_events: t.lag_events(),
            lag_seconds: t.lag_seconds(now),
        }
    }
}

/// One metric family of every target: name, kind, help, how to read the
/// value (`None`: no sample, e.g. a time that never was).
type Reading<'a> = (
    &'a str,
    Kind,
    &'a str,
    &'a dyn Fn(&TargetHealth) -> Option<f64>,
);

/// pushd's metrics: one family per number, a `target` label on each.
pub fn target_metrics(targets: &[TargetHealth], ready: bool, now: SystemTime) -> String {
    let mut e = Exposition::new();
    e.single(
        "syncpipe_pushd_ready",
        Kind::Gauge,
        "1 once every target finished its start-up sync or is shown failing (READY=1)",
        if ready { 1.0 } else { 0.0 },
    );
    let mut states = Vec::new();
    for t in targets {
        let now_state = t.state();
        for s in State::ALL {
            let v = if s == now_state { 1.0 } else { 0.0 };
            states.push((vec![("target", t.name.as_str()), ("state", s.as_str())], v));
        }
    }
    e.family(
        "syncpipe_pushd_target_state",
        Kind::Gauge,
        "1 for the state the target is in (failing, held, never-synced, syncing-initial, behind, in-sync)",
        &states,
    );
    let time = |t: Option<SystemTime>| t.map(unix);
    let families: [Reading; 15] = [
        (
            "syncpipe_pushd_lag_events",
            Kind::Gauge,
            "Stream seqs received and not applied yet",
            &|t| Some(t.lag_events() as f64),
        ),
        (
            "syncpipe_pushd_lag_seconds",
            Kind::Gauge,
            "Age of the oldest change not applied yet (0 when none)",
            &|t| Some(t.lag_seconds(now)),
        ),
        (
            "syncpipe_pushd_applied_seq",
            Kind::Gauge,
            "Last stream seq applied",
            &|t| Some(t.applied_seq as f64),
        ),
        (
            "syncpipe_pushd_pending_paths",
            Kind::Gauge,
            "Distinct paths waiting to be sent (a full sync counts as one)",
            &|t| Some(t.pending_paths as f64),
        ),
        (
            "syncpipe_pushd_full_sync",
            Kind::Gauge,
            "1 while a full sync is pending or running",
            &|t| Some(f64::from(u8::from(t.full_sync))),
        ),
        (
            "syncpipe_pushd_transfer_in_flight",
            Kind::Gauge,
            "1 while a transfer runs",
            &|t| Some(f64::from(u8::from(t.in_flight.is_some()))),
        ),
        (
            "syncpipe_pushd_consecutive_failures",
            Kind::Gauge,
            "Failed transfers since the last success",
            &|t| Some(f64::from(t.consecutive_failures)),
        ),
        (
            "syncpipe_pushd_deletions_held",
            Kind::Gauge,
            "Deletions a guard refuses right now (SIGUSR2 releases)",
            &|t| Some(t.deletions_held as f64),
        ),
        (
            "syncpipe_pushd_last_success_timestamp_seconds",
            Kind::Gauge,
            "When a transfer last succeeded (absent: never)",
            &|t| time(t.last_success),
        ),
        (
            "syncpipe_pushd_last_error_timestamp_seconds",
            Kind::Gauge,
            "When a transfer last failed (absent: never)",
            &|t| time(t.last_error_at),
        ),
        (
            "syncpipe_pushd_transfers_total",
            Kind::Counter,
            "Transfers ended, failed ones included",
            &|t| Some(t.transfers as f64),
        ),
        (
            "syncpipe_pushd_failures_total",
            Kind::Counter,
            "Transfers that failed",
            &|t| Some(t.failures as f64),
        ),
        (
            "syncpipe_pushd_files_sent_total",
            Kind::Counter,
            "Files whose data was sent",
            &|t| Some(t.files_sent as f64),
        ),
        (
            "syncpipe_pushd_bytes_sent_total",
            Kind::Counter,
            "Size of the files whose data was sent",
            &|t| Some(t.bytes_sent as f64),
        ),
        (
            "syncpipe_pushd_deleted_total",
            Kind::Counter,
            "Entries deleted on the target",
            &|t| Some(t.deleted as f64),
        ),
    ];
    for (name, kind, help, read) in families {
        let samples: Vec<_> = targets
            .iter()
            .filter_map(|t| read(t).map(|v| (vec![("target", t.name.as_str())], v)))
            .collect();
        e.family(name, kind, help, &samples);
    }
    e.finish()
}

/// A program-wide number for watchd, batchd and bisync.
#[derive(Clone, Debug)]
pub struct Number {
    /// Without the `syncpipe_PROGRAM_` prefix; counters end in `_total`.
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
    pub value: f64,
}

impl Number {
    pub fn counter(name: &'static str, help: &'static str, value: u64) -> Self {
        Number {
            name,
            kind: Kind::Counter,
            help,
            value: value as f64,
        }
    }

    pub fn gauge(name: &'static str, help: &'static str, value: f64) -> Self {
        Number {
            name,
            kind: Kind::Gauge,
            help,
            value,
        }
    }
}

/// A program's numbers as metrics (`syncpipe_PROGRAM_NAME`, with `labels`
/// on each, e.g. watchd's `root`) and as the status file's `numbers`.
pub fn program_views(doc: &mut StatusDoc, labels: &[(&str, &str)], numbers: &[Number]) -> String {
    let mut e = Exposition::new();
    for n in numbers {
        let name = format!("syncpipe_{}_{}", doc.program, n.name);
        e.family(&name, n.kind, n.help, &[(labels.to_vec(), n.value)]);
        // Counts as whole numbers, so a reader sees 12, not 12.0.
        let value = if n.value.fract() == 0.0 && (0.0..9e15).contains(&n.value) {
            serde_json::Value::from(n.value as u64)
        } else {
            serde_json::Value::from(n.value)
        };
        doc.numbers.insert(n.name.to_string(), value);
    }
    e.finish()
}

pub fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    #[test]
    fn the_document_round_trips_and_says_the_state() {
        let t = TargetHealth {
            stream: Some("s1".into()),
            seen_seq: 4,
            unapplied_since: Some(at(0)),
            consecutive_failures: 2,
            failing_since: Some(at(1)),
            last_error: Some("rsync exit 255".into()),
            last_error_at: Some(at(2)),
            ..TargetHealth::new("nas:/x")
        };
        let mut doc = StatusDoc::new("pushd", at(10), true, "s".into());
        doc.targets.push(TargetReport::of(&t, at(10)));
        let text = serde_json::to_string(&doc).unwrap();
        assert!(text.contains("\"state\":\"failing\""), "{text}");
        assert!(
            text.contains("\"failing_since\":\"2027-01-15T08:00:01.000Z\""),
            "{text}"
        );
        assert!(text.contains("\"in_flight_since\":null"), "{text}");
        assert!(!text.contains("unapplied_since"), "pushd's own: {text}");
        let back: StatusDoc = serde_json::from_str(&text).unwrap();
        assert_eq!(serde_json::to_string(&back).unwrap(), text);
        let read = &back.targets[0];
        assert_eq!(read.state, State::Failing);
        assert_eq!(read.target.failing_since, Some(at(1)));
        assert_eq!(read.target.last_error_at, Some(at(2)));
        assert_eq!(read.lag_seconds, 10.0);
        assert_eq!(read.lag_events, 4);
        assert_eq!(back.age(at(13)), 3.0);
    }

    /// A record in the order the separate report type wrote it reads the
    /// same: readers go by key names, never by order.
    #[test]
    fn a_record_in_the_earlier_key_order_reads_the_same() {
        let text = r#"{"name":"/copy","state":"behind","words":"/copy: 2 behind, oldest 3s",
            "stream":"s","applied_seq":1,"seen_seq":3,"lag_events":2,"lag_seconds":3.5,
            "pending_paths":2,"full_sync":false,"in_flight_since":"2027-01-15T08:00:02.000Z",
            "progress":{"files":1,"bytes":20},"last_success":"2027-01-15T08:00:01.000Z",
            "last_error":null,"last_error_at":null,"failing_since":null,"consecutive_failures":0,
            "transfers":1,"failures":0,"files_sent":1,"bytes_sent":20,"deleted":0,
            "deletions_held":0}"#;
        let read: TargetReport = serde_json::from_str(text).unwrap();
        assert_eq!(
            (read.state, read.lag_events, read.lag_seconds),
            (State::Behind, 2, 3.5)
        );
        assert_eq!(
            read.target.in_flight.as_ref().map(|f| f.started),
            Some(at(2))
        );
        assert_eq!(read.target.last_success, Some(at(1)));
        assert_eq!(read.target.progress.as_ref().map(|p| p.bytes), Some(20));
        let again: serde_json::Value = serde_json::to_value(&read).unwrap();
        let earlier: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(again, earlier);
    }

    #[test]
    fn target_metrics_have_one_state_and_the_lag() {
        let t = TargetHealth {
            stream: Some("s1".into()),
            in_step_once: true,
            applied_seq: 2,
            seen_seq: 9,
            unapplied_since: Some(at(0)),
            last_success: Some(at(0)),
            transfers: 3,
            ..TargetHealth::new("/copy")
        };
        let text = target_metrics(&[t], true, at(42));
        assert!(
            text.contains("syncpipe_pushd_lag_seconds{target=\"/copy\"} 42\n"),
            "{text}"
        );
        assert!(
            text.contains("syncpipe_pushd_lag_events{target=\"/copy\"} 7\n"),
            "{text}"
        );
        assert!(text.contains("syncpipe_pushd_target_state{target=\"/copy\",state=\"behind\"} 1\n"));
        assert_eq!(text.matches("state=").count(), State::ALL.len());
        assert_eq!(
            text.lines()
                .filter(|l| l.contains("state=") && l.ends_with(" 1"))
                .count(),
            1
        );
        assert!(text.contains("# TYPE syncpipe_pushd_transfers_total counter\n"));
        assert!(text.contains(
            "syncpipe_pushd_last_success_timestamp_seconds{target=\"/copy\"} 1800000000\n"
        ));
        // Never failed: no error time at all rather than a fake 0.
        assert!(!text.contains("last_error_timestamp"), "{text}");
    }

    #[test]
    fn program_numbers_become_metrics_and_numbers() {
        let mut doc = StatusDoc::new("watchd", at(0), true, "watching".into());
        let text = program_views(
            &mut doc,
            &[("root", "/srv")],
            &[
                Number::counter("events_total", "Events written", 5),
                Number::gauge("watches", "Directories watched", 3.0),
            ],
        );
        assert!(
            text.contains("syncpipe_watchd_events_total{root=\"/srv\"} 5\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE syncpipe_watchd_watches gauge\n"),
            "{text}"
        );
        assert_eq!(doc.numbers["watches"], serde_json::json!(3));
        assert_eq!(
            serde_json::to_string(&doc.numbers).unwrap(),
            r#"{"events_total":5,"watches":3}"#
        );
    }
}
