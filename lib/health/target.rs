//! One target's numbers (what Redis' `INFO replication` gives per replica),
//! the one state they put it in, and the words for `STATUS=`.
//!
//! Pure: the caller fills a [`TargetHealth`] as transfers start and end and
//! passes `now`; the state is derived from the numbers, never stored
//! beside them, so the two cannot disagree. The rule that matters: a
//! target is `in-sync` only once a transfer succeeded (or a resumed
//! position or `--no-init` vouches for it) with nothing pending, in flight,
//! held or failing — a target that never worked is never in sync, and a
//! full sync in progress is never "0 behind".

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The states a target can be in, worst first (the order `STATUS=` uses).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// The last transfer failed; retried with backoff.
    Failing,
    /// A guard refused deletions; they wait for the source to come back
    /// or for the operator (SIGUSR2, `--release-held`).
    Held,
    /// No stream has arrived, and nothing vouches for the target.
    NeverSynced,
    /// The start-up full sync has not completed yet.
    SyncingInitial,
    /// Changes (or a full sync) are waiting or being applied.
    Behind,
    /// Everything received is applied.
    InSync,
}

impl State {
    pub const ALL: [State; 6] = [
        State::Failing,
        State::Held,
        State::NeverSynced,
        State::SyncingInitial,
        State::Behind,
        State::InSync,
    ];

    /// The name used in the status file, the metrics and `syncpipe status`.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Failing => "failing",
            State::Held => "held",
            State::NeverSynced => "never-synced",
            State::SyncingInitial => "syncing-initial",
            State::Behind => "behind",
            State::InSync => "in-sync",
        }
    }

    /// Whether a monitoring check should page someone: a target that
    /// fails or holds deletions needs a person; the rest heals by itself.
    pub fn needs_attention(self) -> bool {
        matches!(self, State::Failing | State::Held)
    }
}

/// How far a long transfer (a full sync) has got.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// Files transferred so far.
    pub files: u64,
    /// Bytes of file data done so far.
    pub bytes: u64,
    /// rsync's estimate of the whole transfer done, in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<u8>,
    /// Bytes per second, recent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
}

impl Progress {
    /// `1200 files, 35.2 MB so far, 45%, 4.1 MB/s`.
    pub fn words(&self) -> String {
        let mut s = format!("{} files, {} so far", self.files, human_bytes(self.bytes));
        if let Some(p) = self.percent {
            let _ = write!(s, ", {p}%");
        }
        if let Some(r) = self.rate {
            let _ = write!(s, ", {}/s", human_bytes(r as u64));
        }
        s
    }
}

/// A transfer under way.
#[derive(Clone, Debug, PartialEq)]
pub struct InFlight {
    pub started: SystemTime,
    /// It is a full sync of the root.
    pub full: bool,
}

/// Everything known about one target, updated by its worker.
///
/// Serialised, it is the target's record in the status file (beside the
/// state, words and lag it is in when written: `status::TargetReport`):
/// times as RFC 3339 text or `null`, the transfer in flight as
/// `in_flight_since`. What only pushd needs (`unapplied_since`,
/// `in_step_once`, `started`, `held_at_end`, whether the transfer in flight
/// is the full sync) stays out, so a record read back has those at their
/// defaults: a reader takes the state and the lag from the report, never
/// derives them again.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TargetHealth {
    pub name: String,
    /// The stream being applied; `None` until one arrives.
    pub stream: Option<String>,
    /// Last seq applied on the stream.
    pub applied_seq: u64,
    /// Highest seq received on the stream.
    pub seen_seq: u64,
    /// When the oldest change not yet applied (pending, in flight, held)
    /// arrived; `None` when everything is applied. The file says it as
    /// the report's `lag_seconds`.
    #[serde(skip)]
    pub unapplied_since: Option<SystemTime>,
    /// Distinct paths waiting (a full sync counts as one).
    pub pending_paths: u64,
    /// A full sync of the root is pending or running.
    pub full_sync: bool,
    /// The target was in step with a stream at least once: a transfer
    /// succeeded, or a resumed position or `--no-init` vouches for it.
    #[serde(skip)]
    pub in_step_once: bool,
    /// In the file: when the transfer in flight started.
    #[serde(rename = "in_flight_since", with = "in_flight_since", default)]
    pub in_flight: Option<InFlight>,
    /// Progress of the transfer in flight, when it reports any.
    pub progress: Option<Progress>,
    #[serde(with = "time_text", default)]
    pub last_success: Option<SystemTime>,
    pub last_error: Option<String>,
    #[serde(with = "time_text", default)]
    pub last_error_at: Option<SystemTime>,
    /// When the current run of failures began.
    #[serde(with = "time_text", default)]
    pub failing_since: Option<SystemTime>,
    pub consecutive_failures: u32,
    pub transfers: u64,
    pub failures: u64,
    pub files_sent: u64,
    pub bytes_sent: u64,
    pub deleted: u64,
    /// Deletions a guard refuses right now.
    pub deletions_held: u64,
    /// pushd: the start-up sync has ended (succeeded, or failed and
    /// retrying); `READY=1` waits for every target's.
    #[serde(skip)]
    pub started: bool,
    /// pushd: the input ended with deletions still held here (exit 12).
    #[serde(skip)]
    pub held_at_end: bool,
}

/// A time as the status file writes it: RFC 3339, UTC, milliseconds.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// `Option<SystemTime>` as [`rfc3339`] text, `null` for none.
mod time_text {
    use super::*;
    use serde::de::Error as _;

    pub fn serialize<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
        t.map(rfc3339).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SystemTime>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| humantime::parse_rfc3339(&text).map_err(D::Error::custom))
            .transpose()
    }
}

/// The transfer in flight as the time it started ([`time_text`]); read
/// back, whether it is the full sync is not known (`full_sync` says one is
/// due or running).
mod in_flight_since {
    use super::*;

    pub fn serialize<S: Serializer>(f: &Option<InFlight>, s: S) -> Result<S::Ok, S::Error> {
        time_text::serialize(&f.as_ref().map(|f| f.started), s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<InFlight>, D::Error> {
        let started = time_text::deserialize(d)?;
        Ok(started.map(|started| InFlight {
            started,
            full: false,
        }))
    }
}

impl TargetHealth {
    pub fn new(name: &str) -> Self {
        TargetHealth {
            name: name.to_string(),
            stream: None,
            applied_seq: 0,
            seen_seq: 0,
            unapplied_since: None,
            pending_paths: 0,
            full_sync: false,
            in_step_once: false,
            in_flight: None,
            progress: None,
            last_success: None,
            last_error: None,
            last_error_at: None,
            failing_since: None,
            consecutive_failures: 0,
            transfers: 0,
            failures: 0,
            files_sent: 0,
            bytes_sent: 0,
            deleted: 0,
            deletions_held: 0,
            started: false,
            held_at_end: false,
        }
    }

    /// Seqs received and not applied yet.
    pub fn lag_events(&self) -> u64 {
        self.seen_seq.saturating_sub(self.applied_seq)
    }

    /// Age of the oldest unapplied change, in seconds (0 when none).
    pub fn lag_seconds(&self, now: SystemTime) -> f64 {
        self.unapplied_since.map_or(0.0, |t| {
            now.duration_since(t).unwrap_or_default().as_secs_f64()
        })
    }

    /// Anything received that the target does not hold yet.
    fn has_unapplied(&self) -> bool {
        self.lag_events() > 0
            || self.pending_paths > 0
            || self.full_sync
            || self.in_flight.is_some()
            || self.unapplied_since.is_some()
    }

    pub fn state(&self) -> State {
        if self.consecutive_failures > 0 {
            State::Failing
        } else if self.deletions_held > 0 {
            State::Held
        } else if !self.in_step_once {
            if self.stream.is_none() {
                State::NeverSynced
            } else {
                State::SyncingInitial
            }
        } else if self.has_unapplied() {
            State::Behind
        } else {
            State::InSync
        }
    }

    /// One clause for `STATUS=` and the log: `NAME: state, details`.
    pub fn words(&self, now: SystemTime) -> String {
        let mut s = format!("{}: ", self.name);
        match self.state() {
            State::InSync => s.push_str("in sync"),
            State::NeverSynced => s.push_str("never synced, waiting for the stream"),
            State::SyncingInitial => {
                s.push_str("start-up sync ");
                s.push_str(if self.in_flight.is_some() {
                    "running"
                } else {
                    "due"
                });
                self.push_progress(&mut s);
            }
            State::Behind => self.push_behind(&mut s, now),
            State::Held => {
                let _ = write!(
                    s,
                    "HELD: {} deletions refused by a guard (SIGUSR2 releases)",
                    self.deletions_held
                );
                if self.has_unapplied() {
                    s.push_str(", ");
                    self.push_behind(&mut s, now);
                }
            }
            State::Failing => {
                s.push_str("FAILING");
                if let Some(since) = self.failing_since {
                    let _ = write!(
                        s,
                        " since {} ({} ago)",
                        humantime::format_rfc3339_seconds(since),
                        age(now, since)
                    );
                }
                let _ = write!(
                    s,
                    ", {} {}",
                    self.consecutive_failures,
                    if self.consecutive_failures == 1 {
                        "try"
                    } else {
                        "tries"
                    }
                );
                if !self.in_step_once {
                    s.push_str(", never synced");
                }
                if self.has_unapplied() {
                    s.push_str(", ");
                    self.push_behind(&mut s, now);
                }
                if let Some(error) = &self.last_error {
                    let _ = write!(s, ": {}", one_line(error, 200));
                }
            }
        }
        s
    }

    /// `7 behind, oldest 12s` or `full sync running: …` — never "0 behind".
    fn push_behind(&self, s: &mut String, now: SystemTime) {
        let lag = self.lag_events();
        if self.full_sync {
            s.push_str("full sync ");
            s.push_str(if self.in_flight.as_ref().is_some_and(|f| f.full) {
                "running"
            } else {
                "due"
            });
            self.push_progress(s);
            if lag > 0 {
                let _ = write!(s, ", {lag} behind");
            }
        } else if lag > 0 {
            let _ = write!(s, "{lag} behind");
        } else if self.pending_paths > 0 {
            let _ = write!(s, "{} paths pending", self.pending_paths);
        } else {
            s.push_str("applying");
        }
        if let Some(since) = self.unapplied_since {
            let _ = write!(s, ", oldest {}", age(now, since));
        }
    }

    fn push_progress(&self, s: &mut String) {
        if let Some(p) = &self.progress {
            let _ = write!(s, ": {}", p.words());
        }
    }
}

/// `STATUS=`: every target's clause, the worst first (a stable sort: the
/// command line's order among equals).
pub fn summary(targets: &[TargetHealth], now: SystemTime) -> String {
    let mut order: Vec<&TargetHealth> = targets.iter().collect();
    order.sort_by_key(|t| t.state());
    order
        .iter()
        .map(|t| t.words(now))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Whole seconds, as a person reads them: `3m 12s`.
pub fn age(now: SystemTime, since: SystemTime) -> String {
    let secs = now.duration_since(since).unwrap_or_default().as_secs();
    humantime::format_duration(Duration::from_secs(secs)).to_string()
}

/// `35.2 MB`: decimal units, as rsync's `-h` prints them.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["kB", "MB", "GB", "TB", "PB"];
    if n < 1000 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1000.0;
    let mut unit = 0;
    while v >= 1000.0 && unit + 1 < UNITS.len() {
        v /= 1000.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// An error message on one line, cut at `max` characters.
pub fn one_line(text: &str, max: usize) -> String {
    let joined = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" / ");
    match joined.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &joined[..cut]),
        None => joined,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    fn synced(name: &str) -> TargetHealth {
        TargetHealth {
            stream: Some("s".into()),
            in_step_once: true,
            last_success: Some(at(0)),
            ..TargetHealth::new(name)
        }
    }

    #[test]
    fn a_new_target_has_never_synced() {
        let t = TargetHealth::new("nas:/srv");
        assert_eq!(t.state(), State::NeverSynced);
        assert_eq!(
            t.words(at(0)),
            "nas:/srv: never synced, waiting for the stream"
        );
    }

    #[test]
    fn the_start_up_sync_is_never_zero_behind() {
        let mut t = TargetHealth {
            stream: Some("s".into()),
            full_sync: true,
            pending_paths: 1,
            ..TargetHealth::new("/copy")
        };
        assert_eq!(t.state(), State::SyncingInitial);
        assert_eq!(t.words(at(0)), "/copy: start-up sync due");
        t.in_flight = Some(InFlight {
            started: at(0),
            full: true,
        });
        t.progress = Some(Progress {
            files: 1200,
            bytes: 35_200_000,
            percent: Some(45),
            rate: Some(4_100_000.0),
        });
        assert_eq!(
            t.words(at(3)),
            "/copy: start-up sync running: 1200 files, 35.2 MB so far, 45%, 4.1 MB/s"
        );
    }

    #[test]
    fn a_later_full_sync_says_so_not_zero_behind() {
        let t = TargetHealth {
            full_sync: true,
            pending_paths: 1,
            unapplied_since: Some(at(10)),
            in_flight: Some(InFlight {
                started: at(11),
                full: true,
            }),
            ..synced("/copy")
        };
        assert_eq!(t.state(), State::Behind);
        assert_eq!(t.words(at(75)), "/copy: full sync running, oldest 1m 5s");
    }

    #[test]
    fn behind_in_events_and_seconds() {
        let t = TargetHealth {
            applied_seq: 3,
            seen_seq: 10,
            pending_paths: 4,
            unapplied_since: Some(at(0)),
            ..synced("/copy")
        };
        assert_eq!(t.state(), State::Behind);
        assert_eq!(t.lag_events(), 7);
        assert_eq!(t.lag_seconds(at(12)), 12.0);
        assert_eq!(t.words(at(12)), "/copy: 7 behind, oldest 12s");
    }

    #[test]
    fn in_sync_only_when_nothing_is_left() {
        let t = synced("/copy");
        assert_eq!(t.state(), State::InSync);
        assert_eq!(t.words(at(1)), "/copy: in sync");
        assert_eq!(t.lag_seconds(at(1)), 0.0);
    }

    #[test]
    fn a_failing_target_says_since_when_and_why() {
        let t = TargetHealth {
            stream: Some("s".into()),
            seen_seq: 7,
            pending_paths: 1,
            full_sync: true,
            unapplied_since: Some(at(0)),
            failing_since: Some(at(0)),
            consecutive_failures: 3,
            last_error: Some("rsync exit 255: ssh: connect to host nas\nport 22: refused".into()),
            last_error_at: Some(at(20)),
            ..TargetHealth::new("nas:/srv")
        };
        assert_eq!(t.state(), State::Failing);
        assert_eq!(
            t.words(at(30)),
            "nas:/srv: FAILING since 2027-01-15T08:00:00Z (30s ago), 3 tries, never synced, \
             full sync due, 7 behind, oldest 30s: rsync exit 255: ssh: connect to host nas / port 22: refused"
        );
    }

    #[test]
    fn held_keeps_the_words_the_guards_use() {
        let t = TargetHealth {
            deletions_held: 30,
            ..synced("/copy")
        };
        assert_eq!(t.state(), State::Held);
        assert_eq!(
            t.words(at(0)),
            "/copy: HELD: 30 deletions refused by a guard (SIGUSR2 releases)"
        );
    }

    #[test]
    fn the_summary_puts_the_worst_first() {
        let ok = synced("a");
        let failing = TargetHealth {
            consecutive_failures: 1,
            failing_since: Some(at(0)),
            last_error: Some("no".into()),
            ..synced("b")
        };
        let held = TargetHealth {
            deletions_held: 2,
            ..synced("c")
        };
        let text = summary(&[ok, held, failing], at(5));
        assert_eq!(
            text,
            "b: FAILING since 2027-01-15T08:00:00Z (5s ago), 1 try: no; \
             c: HELD: 2 deletions refused by a guard (SIGUSR2 releases); a: in sync"
        );
    }

    #[test]
    fn long_errors_are_cut() {
        assert_eq!(one_line("abcdef", 3), "abc…");
        assert_eq!(one_line(" a \n\n b ", 10), "a / b");
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1_500), "1.5 kB");
        assert_eq!(human_bytes(2_000_000_000), "2.0 GB");
    }

    fn any_target() -> impl Strategy<Value = TargetHealth> {
        (
            any::<bool>(),
            (0u64..5, 0u64..5),
            0u64..3,
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            0u32..3,
            0u64..3,
        )
            .prop_map(
                |(stream, (applied, more), pending, full, once, flying, fails, held)| {
                    TargetHealth {
                        stream: stream.then(|| "s".into()),
                        applied_seq: applied,
                        seen_seq: applied + more,
                        pending_paths: pending,
                        full_sync: full,
                        in_step_once: once,
                        in_flight: flying.then_some(InFlight {
                            started: at(0),
                            full,
                        }),
                        consecutive_failures: fails,
                        deletions_held: held,
                        unapplied_since: (more > 0 || pending > 0 || full).then_some(at(0)),
                        ..TargetHealth::new("t")
                    }
                },
            )
    }

    proptest! {
        /// The words never claim more than the numbers allow.
        #[test]
        fn words_never_lie(t in any_target()) {
            let words = t.words(at(9));
            let state = t.state();
            prop_assert!(!words.contains(" 0 behind"), "{words}");
            if state == State::InSync {
                prop_assert!(t.in_step_once && t.consecutive_failures == 0 && t.deletions_held == 0);
                prop_assert!(t.lag_events() == 0 && t.pending_paths == 0 && !t.full_sync && t.in_flight.is_none());
            }
            if !t.in_step_once {
                prop_assert!(state != State::InSync && state != State::Behind, "{state:?}");
            }
            if t.consecutive_failures > 0 {
                prop_assert!(words.contains("FAILING"), "{words}");
            }
        }
    }
}
