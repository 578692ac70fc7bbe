//! Progress of long work (issue 14): pushd's start-up full sync and
//! bisync's first sync draw a bar on stderr when it is a terminal (a real
//! pseudo-terminal here) and never into a file; bisync `--watch` says how far
//! its first sync got in `STATUS=` and its status file (and SIGUSR1 its
//! summary in the log).

use std::ffi::OsStr;
use std::fs;
use std::path::Path;
use std::process::Stdio;

use crate::bisync::Pair;
use crate::health::{promtool_accepts, usr1_logs, wait_status};
use crate::pushd::harness::{change, write, Pushd};
use crate::support::pty::Pty;
use crate::support::{NotifySocket, Running, TIMEOUT};
use syncpipe::wire::event::ChangeOp;

/// No bar, no carriage return, no escape sequence: lines a file can keep.
fn plain_lines(log: &str) {
    assert!(
        !log.contains('\r') && !log.contains('\x1b') && !log.contains("] "),
        "a bar in a file: {log:?}"
    );
}

#[test]
fn the_start_up_sync_draws_a_bar_on_a_terminal_and_none_into_a_file() {
    let (src, dst, scratch) = (
        crate::support::tempdir(),
        crate::support::tempdir(),
        crate::support::tempdir(),
    );
    // About 2 MB at 1 MB/s: rsync reports progress several times.
    for i in 0..20 {
        let data: Vec<u8> = (0..100_000u32).map(|j| (j * 7 + i) as u8).collect();
        write(src.path(), format!("f{i:02}").as_bytes(), &data);
    }
    let (on_tty, in_file) = (dst.path().join("tty"), dst.path().join("file"));
    let log = scratch.path().join("pushd.log");
    fn args(target: &Path) -> Vec<&OsStr> {
        vec![
            OsStr::new("--bwlimit"),
            OsStr::new("1000"),
            target.as_os_str(),
        ]
    }
    let (pty, stderr) = Pty::open();
    let mut a = Pushd::start_with_stdio(src.path(), &args(&on_tty), scratch.path(), stderr);
    let mut b = Pushd::start_with_stderr(src.path(), &args(&in_file), scratch.path(), &log);
    for (p, target) in [(&mut a, &on_tty), (&mut b, &in_file)] {
        p.header();
        let seq = p.batch(vec![change(ChangeOp::Update, b"f00")]);
        p.applied(target.to_str().unwrap(), seq);
    }
    assert_eq!(a.finish(), Some(0));
    assert_eq!(b.finish(), Some(0));
    let screen = pty.finish();
    assert!(
        screen.contains(&format!("{} [", on_tty.display())) && screen.contains(" so far, "),
        "no bar on the terminal: {screen:?}"
    );
    // Log lines print above the bar, whole.
    assert!(screen.contains("pushd: info: "), "{screen:?}");
    let log = fs::read_to_string(&log).unwrap();
    assert!(log.contains("full sync up to seq"), "{log}");
    plain_lines(&log);
}

/// bisync's first sync of three files with stderr going to `stderr`.
fn first_sync(stderr: Stdio) -> Pair {
    let p = Pair::new();
    for i in 0..3 {
        fs::write(p.a.join(format!("f{i}")), vec![b'x'; 50_000]).unwrap();
    }
    let status = {
        let mut cmd = p.command(&[]);
        cmd.arg(&p.a).arg(&p.b).stdout(Stdio::null()).stderr(stderr);
        cmd.status().unwrap()
    }; // a terminal's far end closes with the command
    assert_eq!(status.code(), Some(crate::bisync::SYNCED));
    p
}

#[test]
fn bisyncs_first_sync_draws_a_bar_on_a_terminal_and_none_into_a_file() {
    let (pty, stderr) = Pty::open();
    first_sync(stderr);
    let screen = pty.finish();
    assert!(
        screen.contains("first sync [") && screen.contains("3/3 files, 150.0 kB/150.0 kB"),
        "no bar on the terminal: {screen:?}"
    );
    // The same first sync with stderr in a file.
    let dir = crate::support::tempdir();
    let log = dir.path().join("bisync.log");
    first_sync(Stdio::from(fs::File::create(&log).unwrap()));
    let log = fs::read_to_string(&log).unwrap();
    assert!(log.contains("(first sync)"), "{log}");
    plain_lines(&log);
}

#[test]
fn bisync_watch_tells_its_first_syncs_progress_in_status_and_the_status_file() {
    let p = Pair::new();
    for i in 0..20 {
        fs::write(p.a.join(format!("f{i:02}")), vec![b'y'; 50_000]).unwrap();
    }
    // As bisync-watch@pair keeps them, for `syncpipe status`.
    let run_dir = p.dir.path().join("run");
    fs::create_dir_all(run_dir.join("pair")).unwrap();
    let (status, metrics) = (
        run_dir.join("pair/bisync.json"),
        run_dir.join("pair/bisync.prom"),
    );
    let log = p.dir.path().join("bisync.log");
    let notify = NotifySocket::new();
    let mut cmd = p.command(&["--watch", "--delay", "100ms"]);
    cmd.arg("--status-file")
        .arg(&status)
        .arg("--metrics-file")
        .arg(&metrics)
        .arg(&p.a)
        .arg(&p.b)
        .env("NOTIFY_SOCKET", notify.path())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap());
    let run = Running::spawn(&mut cmd);
    // Every STATUS= until READY=1: the first sync's end is told with its
    // numbers before the run's outcome.
    let mut said = Vec::new();
    let ready = loop {
        let msg = notify
            .recv(TIMEOUT)
            .unwrap_or_else(|| panic!("no READY=1; got {said:?}"));
        if msg.contains("READY=1") {
            break msg;
        }
        said.push(msg);
    };
    let done = "STATUS=first full sync: copying 20 files (1.0 MB): 20 files, 1.0 MB so far, 100%";
    assert!(said.iter().any(|m| m.contains(done)), "{said:#?}");
    assert!(ready.contains("STATUS=last full run"), "{ready}");
    // The status file said it too: the end of the first sync stays there
    // until the next write, at least a second later.
    let s = wait_status(&status, "the first sync's progress", |s| {
        s["numbers"]["progress"]["files"] == 20
    });
    assert_eq!(s["ready"], false, "{s:#}");
    assert_eq!(s["numbers"]["progress"]["bytes"], 1_000_000, "{s:#}");
    assert_eq!(s["numbers"]["progress"]["percent"], 100, "{s:#}");
    assert_eq!(s["numbers"]["run_files_planned"], 20, "{s:#}");
    assert_eq!(s["numbers"]["run_in_progress"], 1, "{s:#}");
    assert!(
        s["summary"]
            .as_str()
            .unwrap()
            .starts_with("first full sync: copying 20 files"),
        "{s:#}"
    );
    let s = wait_status(&status, "the first sync done", |s| s["ready"] == true);
    assert!(s["numbers"].get("progress").is_none(), "{s:#}");
    assert_eq!(s["numbers"]["run_in_progress"], 0, "{s:#}");
    assert_eq!(fs::read_dir(&p.b).unwrap().count(), 20);
    promtool_accepts(&metrics);
    // The pair is one line of `syncpipe status`, in sync: exit 0.
    let out = std::process::Command::new(crate::support::bin("syncpipe"))
        .arg("status")
        .arg("--run-dir")
        .arg(&run_dir)
        .arg("--conf-dir")
        .arg(p.dir.path().join("no-conf"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("pair") && l.contains("(two-way pair)  in-sync")),
        "{text}"
    );
    // SIGUSR1: the same summary in the log.
    let said = format!("SIGUSR1: watching {} and {}", p.a.display(), p.b.display());
    usr1_logs(&run, &log, &said);
    plain_lines(&fs::read_to_string(&log).unwrap());
}
