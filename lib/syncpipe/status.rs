//! `syncpipe status [NAME]`: every sync on this host, one line per target
//! (state, lag, last error), read from the status files pushd (or, for a
//! two-way pair, `bisync --watch`) writes under /run/syncpipe/NAME/, and for
//! a pull replica one line for the broker's feed (relayd's file beside it);
//! exit 17 when any target fails or holds deletions, a replica's broker does
//! not answer, or a configured sync has no fresh status file — a monitoring
//! check.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::Context;
use serde::Serialize;

use crate::cli::exit::Code;
use crate::health::status::{StatusDoc, TargetReport};
use crate::health::target::{human_bytes, one_line, rfc3339, State};

/// The file name pushd's unit gives `--status-file` in each sync's directory.
pub const PUSHD_FILE: &str = "pushd.json";
/// The same for bisync-watch@'s `bisync --watch` (a two-way pair).
pub const BISYNC_FILE: &str = "bisync.json";
/// relayd subscribe's, in a pull replica's (syncpipe-replica@.service).
pub const RELAYD_FILE: &str = "relayd.json";
/// A status file older than this is stale: pushd rewrites it every few
/// seconds even when idle (lib/health/publish.rs), so it stopped or hangs.
pub const STALE_SECS: f64 = 30.0;

pub struct Options {
    /// Only this sync.
    pub name: Option<String>,
    pub json: bool,
    /// Where the syncs' runtime directories are (`/run/syncpipe`).
    pub run_dir: PathBuf,
    /// Where their configs are (`/etc/syncpipe`): a sync configured there
    /// with no status file is reported as not running.
    pub conf_dir: PathBuf,
}

/// One sync as found on disk.
#[derive(Debug, Serialize)]
pub struct Sync {
    pub name: String,
    /// Why there is nothing to trust (no file, unreadable, stale).
    pub problem: Option<String>,
    pub status: Option<StatusDoc>,
    /// A pull replica's feed: relayd's file (absent for other syncs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relayd: Option<Feed>,
}

/// relayd subscribe's status file, as found.
#[derive(Debug, Serialize)]
pub struct Feed {
    pub problem: Option<String>,
    pub status: Option<StatusDoc>,
}

impl Feed {
    fn number(&self, name: &str) -> Option<&serde_json::Value> {
        self.status.as_ref().and_then(|s| s.numbers.get(name))
    }

    /// The server answered relayd's last look at its consumer.
    fn broker_up(&self) -> bool {
        self.number("broker_up").and_then(|v| v.as_f64()) == Some(1.0)
    }
}

impl Sync {
    fn healthy(&self) -> bool {
        self.problem.is_none()
            && self.status.as_ref().is_some_and(|s| {
                s.targets.iter().all(|t| !t.state.needs_attention())
                    && pair_state(s).is_none_or(|state| !state.needs_attention())
            })
            && self
                .relayd
                .as_ref()
                .is_none_or(|f| f.problem.is_none() && f.broker_up())
    }
}

/// A two-way pair's state, from what `bisync --watch` writes: failing
/// after a failed or refused run, syncing-initial before its first sync
/// ended, in sync after; `None` for pushd's file.
fn pair_state(doc: &StatusDoc) -> Option<State> {
    if doc.program != "bisync" {
        return None;
    }
    let failures = doc.numbers.get("consecutive_failures");
    Some(if failures.and_then(|n| n.as_u64()).unwrap_or(0) > 0 {
        State::Failing
    } else if !doc.ready {
        State::SyncingInitial
    } else {
        State::InSync
    })
}

pub fn run(opts: &Options) -> anyhow::Result<Code> {
    let syncs = gather(opts, SystemTime::now())?;
    if opts.json {
        let text = serde_json::to_string_pretty(&syncs).context("writing JSON")?;
        println!("{text}");
    } else if syncs.is_empty() {
        println!(
            "no syncs: nothing in {} or {}",
            opts.run_dir.display(),
            opts.conf_dir.display()
        );
    } else {
        for line in lines(&syncs) {
            println!("{line}");
        }
    }
    if syncs.iter().all(Sync::healthy) {
        Ok(Code::Ok)
    } else {
        Ok(Code::Unhealthy)
    }
}

/// Reads every sync's status file (or only `opts.name`'s).
pub fn gather(opts: &Options, now: SystemTime) -> anyhow::Result<Vec<Sync>> {
    let mut names = Vec::new();
    match &opts.name {
        Some(name) => names.push(name.clone()),
        None => {
            names.extend(dir_names(&opts.run_dir, |p| {
                p.join(PUSHD_FILE).exists() || p.join(BISYNC_FILE).exists()
            })?);
            names.extend(configured(&opts.conf_dir)?);
            names.sort();
            names.dedup();
        }
    }
    Ok(names
        .into_iter()
        .map(|name| read_sync(&opts.run_dir, name, now))
        .collect())
}

fn read_sync(run_dir: &Path, name: String, now: SystemTime) -> Sync {
    let dir = run_dir.join(&name);
    let pair = !dir.join(PUSHD_FILE).exists() && dir.join(BISYNC_FILE).exists();
    let (status, problem) = if pair {
        read_doc(&dir.join(BISYNC_FILE), "bisync", now)
    } else {
        read_doc(&dir.join(PUSHD_FILE), "pushd", now)
    };
    let relayd_path = dir.join(RELAYD_FILE);
    // Only a pull replica has one; its unit starts relayd with pushd.
    let relayd = relayd_path.exists().then(|| {
        let (status, problem) = read_doc(&relayd_path, "relayd", now);
        Feed { problem, status }
    });
    Sync {
        name,
        problem,
        status,
        relayd,
    }
}

/// One program's status file: the document, or why it cannot be trusted.
fn read_doc(path: &Path, program: &str, now: SystemTime) -> (Option<StatusDoc>, Option<String>) {
    match std::fs::read(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (
            None,
            Some(format!("no {} ({program} not running?)", path.display())),
        ),
        Err(e) => (None, Some(format!("{}: {e}", path.display()))),
        Ok(bytes) => match serde_json::from_slice::<StatusDoc>(&bytes) {
            Err(e) => (None, Some(format!("{}: {e}", path.display()))),
            Ok(doc) if doc.v > crate::health::status::VERSION => (
                None,
                Some(format!(
                    "{}: layout version {} is newer than this syncpipe",
                    path.display(),
                    doc.v
                )),
            ),
            Ok(doc) => {
                let age = doc.age(now);
                let problem = (age > STALE_SECS).then(|| {
                    format!(
                        "stale: {program} (pid {}) last wrote its status {:.0}s ago; stopped or hung",
                        doc.pid, age
                    )
                });
                (Some(doc), problem)
            }
        },
    }
}

/// Subdirectories of `dir` that pass `keep`; none when `dir` is missing.
fn dir_names(dir: &Path, keep: impl Fn(&Path) -> bool) -> anyhow::Result<Vec<String>> {
    let entries = match std::fs::read_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        other => other.with_context(|| format!("reading {}", dir.display()))?,
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
        if keep(&entry.path()) {
            if let Some(name) = entry.file_name().to_str() {
                names.push(name.to_string());
            }
        }
    }
    Ok(names)
}

/// Syncs configured in `conf_dir`: NAME.conf files with a TARGETS= line
/// (pushd), a BROKER= line (a pull replica) or a REPLICA_A= line (a two-way
/// pair: bisync-watch@NAME; one run by the timer instead, bisync@NAME, keeps
/// no status file and shows as not running).
fn configured(conf_dir: &Path) -> anyhow::Result<Vec<String>> {
    let entries = match std::fs::read_dir(conf_dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        other => other.with_context(|| format!("reading {}", conf_dir.display()))?,
    };
    let mut names = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".conf"))
        else {
            continue;
        };
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if text.lines().any(|l| {
            let l = l.trim_start();
            l.starts_with("TARGETS=") || l.starts_with("BROKER=") || l.starts_with("REPLICA_A=")
        }) {
            names.push(name.to_string());
        }
    }
    Ok(names)
}

/// The table: `SYNC  TARGET  STATE  LAG  LAST ERROR`, columns aligned.
pub fn lines(syncs: &[Sync]) -> Vec<String> {
    let mut rows: Vec<[String; 5]> = vec![[
        "SYNC".into(),
        "TARGET".into(),
        "STATE".into(),
        "LAG".into(),
        "LAST ERROR".into(),
    ]];
    for sync in syncs {
        let targets = sync.status.as_ref().map_or(&[][..], |s| &s.targets[..]);
        if let Some(feed) = &sync.relayd {
            rows.push(feed_row(&sync.name, feed));
        }
        if let Some(problem) = &sync.problem {
            let state = if sync.status.is_some() {
                "stale"
            } else {
                "not-running"
            };
            rows.push([
                sync.name.clone(),
                "-".into(),
                state.into(),
                "-".into(),
                problem.clone(),
            ]);
        }
        if let Some(state) = sync.status.as_ref().and_then(pair_state) {
            let doc = sync.status.as_ref().expect("a pair's status");
            rows.push([
                sync.name.clone(),
                "(two-way pair)".into(),
                state.as_str().into(),
                "-".into(),
                match state {
                    State::InSync => "-".into(),
                    _ => one_line(&doc.summary, 160),
                },
            ]);
        }
        for t in targets {
            rows.push([
                sync.name.clone(),
                t.target.name.clone(),
                t.state.as_str().into(),
                lag(t),
                last_error(t),
            ]);
        }
    }
    let mut widths = [0usize; 4];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    rows.iter()
        .map(|row| {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                line.push_str(cell);
                if i < 4 {
                    let pad = widths[i] - cell.chars().count() + 2;
                    line.push_str(&" ".repeat(pad));
                }
            }
            line.trim_end().to_string()
        })
        .collect()
}

/// A pull replica's feed: `broker STREAM as DURABLE`, `following` (nothing
/// pending), `behind` or `no-broker`, the consumer's pending messages and
/// the age of the oldest, and the last seq written to the pipeline.
fn feed_row(sync: &str, feed: &Feed) -> [String; 5] {
    let text = |name: &str| {
        feed.number(name)
            .map(|v| v.as_str().map_or_else(|| v.to_string(), String::from))
            .unwrap_or_else(|| "?".into())
    };
    let Some(status) = &feed.status else {
        return [
            sync.into(),
            "broker".into(),
            "not-running".into(),
            "-".into(),
            feed.problem.clone().unwrap_or_default(),
        ];
    };
    let pending = feed.number("pending_messages").and_then(|v| v.as_u64());
    let state = match (&feed.problem, feed.broker_up(), pending) {
        (Some(_), _, _) => "stale",
        (None, false, _) => "no-broker",
        (None, true, Some(0)) => "following",
        (None, true, _) => "behind",
    };
    let seconds = feed
        .number("behind_seconds")
        .and_then(|v| v.as_f64())
        .unwrap_or(0.0);
    let note = match (&feed.problem, feed.broker_up()) {
        (Some(problem), _) => problem.clone(),
        (None, false) => format!("the broker does not answer: {}", status.summary),
        (None, true) => format!("wrote seq {}", text("written_seq")),
    };
    [
        sync.into(),
        format!("broker {} as {}", text("stream"), text("durable")),
        state.into(),
        format!("{} messages, {seconds:.0}s", text("pending_messages")),
        note,
    ]
}

/// `7 events, 12s`, or the full sync's progress: never "0" while one runs.
fn lag(t: &TargetReport) -> String {
    if t.state == State::NeverSynced {
        return "-".into();
    }
    if t.target.full_sync {
        let mut s = String::from("full sync");
        if let Some(p) = &t.target.progress {
            s.push_str(&format!(" ({} files, {})", p.files, human_bytes(p.bytes)));
        }
        return format!("{s}, {:.0}s", t.lag_seconds);
    }
    format!("{} events, {:.0}s", t.lag_events, t.lag_seconds)
}

fn last_error(t: &TargetReport) -> String {
    let h = &t.target;
    match t.state {
        State::Failing => format!(
            "since {} ({} tries): {}",
            h.failing_since.map_or("?".into(), rfc3339),
            h.consecutive_failures,
            one_line(h.last_error.as_deref().unwrap_or("?"), 160)
        ),
        State::Held => format!(
            "{} deletions held by a guard (kill -USR2 the pushd, or --release-held)",
            h.deletions_held
        ),
        _ => match (&h.last_error, h.last_error_at) {
            (Some(e), Some(at)) => format!("recovered; at {}: {}", rfc3339(at), one_line(e, 120)),
            _ => "-".into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::publish::{HealthFiles, Publisher};
    use crate::health::target::{InFlight, Progress, TargetHealth};
    use crate::pushd::health::HealthTable;
    use std::time::{Duration, UNIX_EPOCH};

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    fn write_doc(run: &Path, name: &str, targets: &[TargetHealth], when: SystemTime) {
        let mut doc = StatusDoc::new("pushd", when, true, String::new());
        doc.targets = targets.iter().map(|t| TargetReport::of(t, when)).collect();
        std::fs::create_dir_all(run.join(name)).unwrap();
        std::fs::write(
            run.join(name).join(PUSHD_FILE),
            serde_json::to_vec(&doc).unwrap(),
        )
        .unwrap();
    }

    #[test]
    fn one_line_per_target_and_the_verdict() {
        let dir = tempfile::tempdir().unwrap();
        let (run, conf) = (dir.path().join("run"), dir.path().join("conf"));
        std::fs::create_dir_all(&conf).unwrap();
        let ok = TargetHealth {
            stream: Some("s".into()),
            in_step_once: true,
            ..TargetHealth::new("/copy")
        };
        let dead = TargetHealth {
            stream: Some("s".into()),
            seen_seq: 3,
            consecutive_failures: 4,
            failing_since: Some(at(0)),
            last_error: Some("rsync exit 255: ssh: no route".into()),
            ..TargetHealth::new("nas:/srv")
        };
        write_doc(&run, "web", std::slice::from_ref(&ok), at(0));
        write_doc(&run, "mail", &[ok.clone(), dead], at(0));
        std::fs::write(conf.join("gone.conf"), "SOURCE=/x\nTARGETS=/y\n").unwrap();
        std::fs::write(conf.join("pair.conf"), "REPLICA_A=/a\n").unwrap();
        // Two bisync --watch pairs: one that failed its last run.
        let pair = |name: &str, ready: bool, failures: u64, summary: &str| {
            let mut doc = StatusDoc::new("bisync", at(0), ready, summary.into());
            doc.numbers
                .insert("consecutive_failures".into(), failures.into());
            std::fs::create_dir_all(run.join(name)).unwrap();
            let text = serde_json::to_vec(&doc).unwrap();
            std::fs::write(run.join(name).join(BISYNC_FILE), text).unwrap();
        };
        pair(
            "pair",
            true,
            0,
            "watching /a and peer:/a; last run: in sync",
        );
        pair(
            "share",
            true,
            2,
            "last run failed: peer: connection refused",
        );
        let opts = |name: Option<&str>| Options {
            name: name.map(String::from),
            json: false,
            run_dir: run.clone(),
            conf_dir: conf.clone(),
        };
        let syncs = gather(&opts(None), at(5)).unwrap();
        let names: Vec<_> = syncs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["gone", "mail", "pair", "share", "web"]);
        let text = lines(&syncs);
        assert_eq!(
            text[0],
            "SYNC   TARGET          STATE        LAG           LAST ERROR"
        );
        assert!(
            text[1].starts_with("gone   -               not-running  -"),
            "{text:?}"
        );
        assert_eq!(
            text[2],
            "mail   /copy           in-sync      0 events, 0s  -"
        );
        assert_eq!(
            text[3],
            "mail   nas:/srv        failing      3 events, 0s  since 2027-01-15T08:00:00.000Z (4 tries): rsync exit 255: ssh: no route"
        );
        assert_eq!(
            text[4],
            "pair   (two-way pair)  in-sync      -             -"
        );
        assert_eq!(
            text[5],
            "share  (two-way pair)  failing      -             last run failed: peer: connection refused"
        );
        assert_eq!(
            text[6],
            "web    /copy           in-sync      0 events, 0s  -"
        );
        let healthy: Vec<bool> = syncs.iter().map(Sync::healthy).collect();
        assert_eq!(healthy, [false, false, true, false, true]);

        let web = gather(&opts(Some("web")), at(5)).unwrap();
        assert!(web.len() == 1 && web[0].healthy());
        // Not rewritten for a minute: pushd is gone.
        let stale = gather(&opts(Some("web")), at(60)).unwrap();
        assert!(!stale[0].healthy());
        assert!(
            lines(&stale)[1].contains("stale: pushd"),
            "{:?}",
            lines(&stale)
        );
    }

    #[test]
    fn a_pull_replica_lists_its_feed_first() {
        let dir = tempfile::tempdir().unwrap();
        let (run, conf) = (dir.path().join("run"), dir.path().join("conf"));
        std::fs::create_dir_all(&conf).unwrap();
        std::fs::write(conf.join("rep.conf"), "BROKER=nats://b/www\nTARGET=/srv\n").unwrap();
        let ok = TargetHealth {
            stream: Some("s".into()),
            in_step_once: true,
            ..TargetHealth::new("/srv")
        };
        write_doc(&run, "rep", std::slice::from_ref(&ok), at(0));
        let feed = |pending: u64, behind: f64, up: u64| {
            let mut doc = StatusDoc::new("relayd", at(0), true, "rep: wrote …".into());
            for (k, v) in [
                ("durable", serde_json::json!("rep")),
                ("stream", serde_json::json!("www")),
                ("pending_messages", pending.into()),
                ("behind_seconds", behind.into()),
                ("written_seq", 41.into()),
                ("broker_up", up.into()),
            ] {
                doc.numbers.insert(k.into(), v);
            }
            std::fs::write(
                run.join("rep").join(RELAYD_FILE),
                serde_json::to_vec(&doc).unwrap(),
            )
            .unwrap();
        };
        let opts = Options {
            name: None,
            json: false,
            run_dir: run.clone(),
            conf_dir: conf.clone(),
        };
        feed(7, 12.4, 1);
        let syncs = gather(&opts, at(5)).unwrap();
        let text = lines(&syncs);
        assert_eq!(text.len(), 3, "{text:?}");
        assert_eq!(
            text[1],
            "rep   broker www as rep  behind   7 messages, 12s  wrote seq 41"
        );
        assert!(text[2].starts_with("rep   /srv"), "{text:?}");
        assert!(syncs[0].healthy(), "behind is not a failure");
        feed(0, 0.0, 1);
        let text = lines(&gather(&opts, at(5)).unwrap());
        assert!(text[1].contains("following  0 messages, 0s"), "{text:?}");
        feed(3, 4.0, 0);
        let syncs = gather(&opts, at(5)).unwrap();
        assert!(
            lines(&syncs)[1].contains("no-broker"),
            "{:?}",
            lines(&syncs)
        );
        assert!(
            !syncs[0].healthy(),
            "a broker that does not answer fails the check"
        );
        // relayd stopped writing: stale, whatever pushd says.
        let syncs = gather(&opts, at(60)).unwrap();
        assert!(
            lines(&syncs)[1].contains("stale: relayd"),
            "{:?}",
            lines(&syncs)
        );
    }

    /// A status file as pushd writes it (its health table through the
    /// publisher) reads back as the same document, with the key names the
    /// README documents, and `syncpipe status` says each target from it.
    #[test]
    fn reads_back_what_pushd_writes() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        std::fs::create_dir_all(run.join("web")).unwrap();
        let mut table = HealthTable::new(["/copy", "nas:/srv", "/big"].map(String::from));
        table.update(0, |h| {
            h.stream = Some("s".into());
            h.in_step_once = true;
            (h.applied_seq, h.seen_seq, h.transfers) = (5, 5, 2);
            h.last_success = Some(at(3));
            h.last_error = Some("rsync exit 23".into());
            h.last_error_at = Some(at(0));
        });
        table.update(1, |h| {
            h.stream = Some("s".into());
            h.seen_seq = 3;
            h.consecutive_failures = 2;
            h.failing_since = Some(at(1));
            h.last_error = Some("ssh: no route\nport 22".into());
        });
        let full_sync_since = |started| InFlight {
            started,
            full: true,
        };
        table.update(2, |h| {
            h.stream = Some("s".into());
            h.in_step_once = true;
            (h.full_sync, h.pending_paths) = (true, 1);
            h.in_flight = Some(full_sync_since(at(2)));
            h.progress = Some(Progress {
                files: 1200,
                bytes: 35_200_000,
                ..Progress::default()
            });
        });
        let path = run.join("web").join(PUSHD_FILE);
        let mut publisher = Publisher::new(&HealthFiles {
            status: Some(path.clone()),
            metrics: None,
        });
        let mut written = None;
        publisher.tick(true, |now| {
            let views = table.views(now);
            written = Some(views.0.clone());
            views
        });

        let raw: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let mut keys: Vec<_> = raw["targets"][2]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "applied_seq",
                "bytes_sent",
                "consecutive_failures",
                "deleted",
                "deletions_held",
                "failing_since",
                "failures",
                "files_sent",
                "full_sync",
                "in_flight_since",
                "lag_events",
                "lag_seconds",
                "last_error",
                "last_error_at",
                "last_success",
                "name",
                "pending_paths",
                "progress",
                "seen_seq",
                "state",
                "stream",
                "transfers",
                "words",
            ]
        );
        assert_eq!(
            raw["targets"][2]["in_flight_since"],
            "2027-01-15T08:00:02.000Z"
        );
        assert_eq!(
            raw["targets"][0]["last_success"],
            "2027-01-15T08:00:03.000Z"
        );
        assert_eq!(raw["targets"][1]["consecutive_failures"], 2);

        let opts = Options {
            name: None,
            json: false,
            run_dir: run,
            conf_dir: dir.path().join("conf"),
        };
        let syncs = gather(&opts, SystemTime::now()).unwrap();
        assert!(syncs.len() == 1 && syncs[0].problem.is_none(), "{syncs:?}");
        let read = syncs[0].status.as_ref().unwrap();
        // Through text on both sides: serde_json's default float parser may
        // land one ulp off the f64 written (`updated_unix`).
        let through_text = serde_json::from_str::<serde_json::Value>(
            &serde_json::to_string(&written.unwrap()).unwrap(),
        )
        .unwrap();
        assert_eq!(
            serde_json::to_value(read).unwrap(),
            through_text,
            "the document reads back as written"
        );
        assert_eq!(serde_json::to_value(read).unwrap(), raw);
        let text = lines(&syncs);
        let cells: Vec<Vec<&str>> = text[1..]
            .iter()
            .map(|l| {
                l.split("  ")
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .collect()
            })
            .collect();
        assert_eq!(
            cells,
            [
                vec![
                    "web",
                    "/copy",
                    "in-sync",
                    "0 events, 0s",
                    "recovered; at 2027-01-15T08:00:00.000Z: rsync exit 23",
                ],
                vec![
                    "web",
                    "nas:/srv",
                    "failing",
                    "3 events, 0s",
                    "since 2027-01-15T08:00:01.000Z (2 tries): ssh: no route / port 22",
                ],
                vec![
                    "web",
                    "/big",
                    "behind",
                    "full sync (1200 files, 35.2 MB), 0s",
                    "-",
                ],
            ]
        );
        assert!(!syncs[0].healthy(), "a failing target");
    }
}
