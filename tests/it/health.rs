//! The operator view (issue 14): status files and metrics of the real
//! programs, checked with Debian's `promtool` and scraped through a real
//! `prometheus-node-exporter`; pushd's states for targets that never
//! worked, fail, and recover.

use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::pushd::harness::{change, os, write, Pushd};

use crate::support::{bin, tempdir, wait_until, Running, TIMEOUT};
use syncpipe::wire::event::ChangeOp;

/// The status file as JSON, once it exists and parses.
fn status(path: &Path) -> Option<Value> {
    serde_json::from_slice(&fs::read(path).ok()?).ok()
}

/// Waits until the status file satisfies `pred`; returns it.
pub(crate) fn wait_status(path: &Path, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let mut last = None;
    let ok = wait_until(TIMEOUT, || {
        last = status(path);
        last.as_ref().is_some_and(&pred)
    });
    assert!(ok, "{what}: status file {}: {last:#?}", path.display());
    last.unwrap()
}

/// `promtool check metrics` (Debian's `prometheus`) accepts the file as
/// it is, lint warnings included.
pub(crate) fn promtool_accepts(path: &Path) {
    let text = fs::read(path).unwrap();
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; make test-deps)");
    child.stdin.take().unwrap().write_all(&text).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics {}: {}{}\n{}",
        path.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&text)
    );
}

/// The `updated_unix` of a status file changes while the program is idle.
fn refreshed_while_idle(path: &Path) {
    let first = wait_status(path, "written", |_| true)["updated_unix"]
        .as_f64()
        .unwrap();
    wait_status(path, "rewritten while idle", |s| {
        s["updated_unix"].as_f64().unwrap() > first
    });
}

#[test]
fn watchd_and_batchd_keep_status_and_metrics_fresh_while_idle() {
    let (src, run) = (tempdir(), tempdir());
    let files = |p: &str| {
        (
            run.path().join(format!("{p}.json")),
            run.path().join(format!("{p}.prom")),
        )
    };
    let (w_status, w_metrics) = files("watchd");
    let (b_status, b_metrics) = files("batchd");
    let mut watchd = Command::new(bin("watchd"));
    watchd
        .arg("--status-file")
        .arg(&w_status)
        .arg("--metrics-file")
        .arg(&w_metrics)
        .arg(src.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut watchd = Running::spawn(&mut watchd);
    let events = watchd.child.stdout.take().unwrap();
    let mut batchd = Command::new(bin("batchd"));
    batchd
        .args(["-d", "100ms", "--status-file"])
        .arg(&b_status)
        .arg("--metrics-file")
        .arg(&b_metrics)
        .stdin(events)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // Not Running::spawn: it would give batchd an empty stdin.
    let _batchd = Running {
        child: batchd.spawn().unwrap(),
    };
    wait_status(&w_status, "watchd started", |s| s["ready"] == true);
    for i in 0..3 {
        write(src.path(), format!("f{i}").as_bytes(), b"x");
    }
    let w = wait_status(&w_status, "watchd counted the events", |s| {
        s["numbers"]["events_total"].as_u64() >= Some(3)
    });
    assert_eq!(w["program"], "watchd");
    assert!(
        w["summary"].as_str().unwrap().starts_with("watching "),
        "{w}"
    );
    wait_status(&b_status, "batchd counted the events and a batch", |s| {
        s["numbers"]["events_total"].as_u64() >= Some(3)
            && s["numbers"]["batches_total"].as_u64() >= Some(1)
    });
    for path in [&w_status, &b_status] {
        refreshed_while_idle(path);
    }
    let m = fs::read_to_string(&w_metrics).unwrap();
    assert!(
        m.contains("# TYPE syncpipe_watchd_events_total counter")
            && m.contains(&format!(
                "syncpipe_watchd_events_total{{root=\"{}\"",
                src.path().display()
            )),
        "{m}"
    );
    for path in [&w_metrics, &b_metrics] {
        promtool_accepts(path);
    }
}

/// pushd on one local target that works and one whose parent directory is
/// missing (it cannot work until a person creates it; `--insist` keeps
/// retrying), with status and metrics files.
struct TwoTargets {
    p: Pushd,
    src: tempfile::TempDir,
    good: std::path::PathBuf,
    dead: std::path::PathBuf,
    status: std::path::PathBuf,
    metrics: std::path::PathBuf,
    /// pushd's stderr.
    log: std::path::PathBuf,
    _dirs: [tempfile::TempDir; 2],
}

fn two_targets(textfile_dir: &Path) -> TwoTargets {
    let (src, dsts, scratch) = (tempdir(), tempdir(), tempdir());
    write(src.path(), b"a", b"a");
    let good = dsts.path().join("good");
    let dead = dsts.path().join("missing parent").join("dead");
    let status = scratch.path().join("pushd.json");
    let metrics = textfile_dir.join("syncpipe-test-pushd.prom");
    let log = scratch.path().join("pushd.log");
    let args: Vec<&OsStr> = vec![
        os("-v"),
        os("--insist"),
        os("--retry-min"),
        os("100ms"),
        os("--retry-max"),
        os("300ms"),
        os("--status-file"),
        status.as_os_str(),
        os("--metrics-file"),
        metrics.as_os_str(),
        good.as_os_str(),
        dead.as_os_str(),
    ];
    let mut cmd = Command::new(bin("pushd"));
    cmd.args(&args)
        .current_dir(scratch.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(fs::File::create(&log).unwrap());
    let mut child = cmd.spawn().unwrap();
    let p = Pushd {
        stdin: child.stdin.take(),
        out: crate::support::RecordStream::new(child.stdout.take().unwrap()),
        run: Running { child },
        stream: syncpipe::wire::event::new_stream_id().unwrap(),
        seq: 0,
        root: src.path().to_path_buf(),
    };
    TwoTargets {
        p,
        src,
        good,
        dead,
        status,
        metrics,
        log,
        _dirs: [dsts, scratch],
    }
}

fn target<'a>(s: &'a Value, name: &Path) -> &'a Value {
    let name = name.to_str().unwrap();
    s["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("no target {name} in {s:#}"))
}

#[test]
fn a_target_that_never_worked_is_failing_never_in_sync_then_recovers() {
    let scratch = tempdir();
    let mut t = two_targets(scratch.path());
    t.p.header();
    let seq = t.p.batch(vec![change(ChangeOp::Update, b"a")]);
    let good = t.good.to_str().unwrap().to_string();
    t.p.applied(&good, seq);
    // Every look at the file while the dead target fails: never in sync,
    // never "0 behind", its error and since when.
    let mut looks = 0;
    let s = wait_status(&t.status, "the dead target failing for a while", |s| {
        let d = target(s, &t.dead);
        d["consecutive_failures"].as_u64() >= Some(3)
    });
    let ok = wait_until(Duration::from_secs(3), || {
        let Some(s) = status(&t.status) else {
            return false;
        };
        let d = target(&s, &t.dead);
        assert_ne!(d["state"], "in-sync", "{s:#}");
        assert_ne!(d["state"], "behind", "never synced: {s:#}");
        assert!(!d["words"].as_str().unwrap().contains(" 0 behind"), "{s:#}");
        looks += 1;
        looks >= 5
    });
    assert!(ok);
    let d = target(&s, &t.dead);
    assert_eq!(d["state"], "failing", "{s:#}");
    assert!(
        d["failing_since"].is_string() && d["last_error_at"].is_string(),
        "{d:#}"
    );
    assert!(d["last_error"].as_str().unwrap().contains("rsync"), "{d:#}");
    let words = d["words"].as_str().unwrap();
    assert!(
        words.contains("FAILING since") && words.contains("never synced"),
        "{words}"
    );
    assert_eq!(target(&s, &t.good)["state"], "in-sync", "{s:#}");
    // The worst target first.
    let summary = s["summary"].as_str().unwrap();
    assert!(
        summary.starts_with(&format!("{}: FAILING", t.dead.display())),
        "{summary}"
    );
    promtool_accepts(&t.metrics);

    // A person creates the missing directory: the next retry works.
    fs::create_dir_all(t.dead.parent().unwrap()).unwrap();
    let s = wait_status(&t.status, "recovered", |s| {
        target(s, &t.dead)["state"] == "in-sync"
    });
    let d = target(&s, &t.dead);
    assert_eq!(d["consecutive_failures"], 0, "{d:#}");
    assert!(d["last_success"].is_string(), "{d:#}");
    assert!(
        d["last_error"].is_string(),
        "the last error stays for the record: {d:#}"
    );
    assert_eq!(fs::read(t.dead.join("a")).unwrap(), b"a");
    let _ = &t.src;
    // SIGUSR1: the summary in the log.
    t.p.run.signal(nix::sys::signal::Signal::SIGUSR1);
    let said = format!(
        "SIGUSR1: {}: in sync; {}: in sync",
        t.good.display(),
        t.dead.display()
    );
    assert!(
        wait_until(TIMEOUT, || fs::read_to_string(&t.log)
            .unwrap()
            .contains(&said)),
        "{said}: {}",
        fs::read_to_string(&t.log).unwrap()
    );
    let code = t.p.finish();
    let err = fs::read_to_string(&t.log).unwrap();
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains(&format!("{}: recovered after", t.dead.display())),
        "{err}"
    );
    // -v: one line per transfer.
    let good_line = format!("pushd: info: {}: full sync up to seq ", t.good.display());
    assert!(
        err.lines()
            .any(|l| l.starts_with(&good_line) && l.contains(" ok: ") && l.contains(" sent, ")),
        "{err}"
    );
}

/// GET /metrics from node_exporter on 127.0.0.1:`port`.
fn scrape(port: u16) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(TIMEOUT)).ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    body.starts_with("HTTP/1.0 200").then_some(body)
}

#[test]
fn node_exporter_serves_the_lag_of_each_target() {
    let textfiles = tempdir();
    let mut t = two_targets(textfiles.path());
    t.p.header();
    let seq = t.p.batch(vec![change(ChangeOp::Update, b"a")]);
    let seq2 = t.p.batch(vec![change(ChangeOp::Update, b"a")]);
    assert_eq!(seq2, seq + 1);
    let good = t.good.to_str().unwrap().to_string();
    t.p.applied(&good, seq2);
    wait_status(&t.status, "the dead target two seqs behind", |s| {
        target(s, &t.dead)["lag_events"] == 2 && target(s, &t.good)["state"] == "in-sync"
    });
    let port = crate::support::sshd::free_port();
    let mut exporter = Command::new("prometheus-node-exporter");
    exporter
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--collector.disable-defaults")
        .arg("--collector.textfile")
        .arg(format!(
            "--collector.textfile.directory={}",
            textfiles.path().display()
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _exporter = Running::spawn(&mut exporter);
    let line = |body: &str, name: &str, target: &Path| {
        let prefix = format!("{name}{{target=\"{}\"}} ", target.display());
        body.lines()
            .find_map(|l| l.strip_prefix(&prefix).map(str::to_string))
    };
    let mut body = String::new();
    assert!(
        wait_until(TIMEOUT, || {
            body = scrape(port).unwrap_or_default();
            line(&body, "syncpipe_pushd_lag_events", &t.dead).is_some()
        }),
        "node_exporter on port {port} never served the lag: {body}"
    );
    assert!(
        body.contains("\nnode_textfile_scrape_error 0\n"),
        "node_exporter could not read the file: {body}"
    );
    assert_eq!(
        line(&body, "syncpipe_pushd_lag_events", &t.dead).as_deref(),
        Some("2")
    );
    assert_eq!(
        line(&body, "syncpipe_pushd_lag_events", &t.good).as_deref(),
        Some("0")
    );
    let dead_secs: f64 = line(&body, "syncpipe_pushd_lag_seconds", &t.dead)
        .unwrap()
        .parse()
        .unwrap();
    assert!(dead_secs > 0.0, "{body}");
    assert_eq!(
        line(&body, "syncpipe_pushd_lag_seconds", &t.good).as_deref(),
        Some("0")
    );
    assert!(body.contains(&format!(
        "syncpipe_pushd_target_state{{state=\"failing\",target=\"{}\"}} 1",
        t.dead.display()
    )));
    refreshed_while_idle(&t.status);
}

#[test]
fn a_start_up_sync_in_progress_is_never_zero_behind_and_shows_progress() {
    let (src, dst, scratch) = (tempdir(), tempdir(), tempdir());
    // About 3 MB at 1 MB/s: a start-up sync that lasts a few seconds.
    for i in 0..30 {
        let data: Vec<u8> = (0..100_000u32).map(|j| (j * 7 + i) as u8).collect();
        write(src.path(), format!("f{i:02}").as_bytes(), &data);
    }
    let status = scratch.path().join("pushd.json");
    let target = dst.path().join("copy");
    let args: Vec<&OsStr> = vec![
        os("--bwlimit"),
        os("1000"),
        os("--status-file"),
        status.as_os_str(),
        target.as_os_str(),
    ];
    let mut p = Pushd::start_in(src.path(), &args, scratch.path());
    p.header();
    let seq = p.batch(vec![change(ChangeOp::Update, b"f00")]);
    let s = wait_status(&status, "progress of the start-up sync", |s| {
        let t = target_of(s);
        assert!(!t["words"].as_str().unwrap().contains(" 0 behind"), "{s:#}");
        assert_ne!(
            t["state"], "in-sync",
            "before the start-up sync ended: {s:#}"
        );
        t["progress"]["bytes"].as_u64() > Some(0)
    });
    let t = target_of(&s);
    assert_eq!(t["state"], "syncing-initial", "{s:#}");
    let words = t["words"].as_str().unwrap();
    assert!(words.contains("start-up sync running: "), "{words}");
    assert!(words.contains(" so far"), "{words}");
    let name = target.to_str().unwrap().to_string();
    p.applied(&name, seq);
    let s = wait_status(&status, "in sync after the start-up sync", |s| {
        target_of(s)["state"] == "in-sync"
    });
    assert!(target_of(&s)["progress"].is_null(), "{s:#}");
    assert_eq!(p.finish(), Some(0));
}

fn target_of(s: &Value) -> &Value {
    &s["targets"][0]
}

/// `watchd --wait` keeps a status file while it waits for its root: not
/// ready, saying what it waits for, rewritten while it waits, SIGUSR1 says
/// the same in the log; once the root is there the file (and SIGUSR1) says
/// it watches.
#[test]
fn watchd_says_what_it_waits_for_in_its_status_file() {
    let (dir, run) = (tempdir(), tempdir());
    let root = dir.path().join("late disk");
    let (status, metrics) = (
        run.path().join("watchd.json"),
        run.path().join("watchd.prom"),
    );
    let log = run.path().join("watchd.log");
    let mut cmd = Command::new(bin("watchd"));
    cmd.arg("--wait")
        .arg("--status-file")
        .arg(&status)
        .arg("--metrics-file")
        .arg(&metrics)
        .arg(&root)
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap());
    let w = Running::spawn(&mut cmd);
    let waiting = format!("waiting: {} does not exist (--wait)", root.display());
    let s = wait_status(&status, "waiting", |s| s["summary"] == waiting.as_str());
    assert_eq!(s["ready"], false, "{s:#}");
    assert_eq!(s["numbers"]["waiting"], 1, "{s:#}");
    // The metrics file is written after the status file: wait for it too.
    let want = format!("syncpipe_watchd_waiting{{root=\"{}\"}} 1\n", root.display());
    let has = || fs::read_to_string(&metrics).is_ok_and(|m| m.contains(&want));
    assert!(
        wait_until(TIMEOUT, has),
        "{:?}",
        fs::read_to_string(&metrics)
    );
    promtool_accepts(&metrics);
    refreshed_while_idle(&status);
    usr1_logs(&w, &log, &format!("SIGUSR1: {waiting}"));
    fs::create_dir(&root).unwrap();
    let s = wait_status(&status, "watching", |s| s["ready"] == true);
    assert!(
        s["summary"].as_str().unwrap().starts_with("watching "),
        "{s:#}"
    );
    assert_eq!(s["numbers"]["waiting"], 0, "{s:#}");
    usr1_logs(&w, &log, &format!("SIGUSR1: watching {}", root.display()));
}

/// SIGUSR1 to `run`: its log (stderr in the file `log`) gets `said`.
pub(crate) fn usr1_logs(run: &Running, log: &Path, said: &str) {
    run.signal(nix::sys::signal::Signal::SIGUSR1);
    let logged = wait_until(TIMEOUT, || fs::read_to_string(log).unwrap().contains(said));
    assert!(
        logged,
        "no {said:?} in {}",
        fs::read_to_string(log).unwrap()
    );
}
