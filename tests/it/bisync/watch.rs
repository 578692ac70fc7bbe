//! `bisync --watch` with the real watchd on both replicas: changes on both
//! sides keep flowing, conflicts are kept, an inotify overflow brings a full
//! scan, a remote replica is watched over ssh, and SIGTERM ends it cleanly.

use std::ffi::OsString;
use std::fs;
use std::os::unix::ffi::OsStringExt;
use std::path::Path;
use std::process::{Command, Stdio};

use nix::sys::signal::Signal;
use syncpipe::wire::event::Record;

use super::{tree, write, Pair};
use crate::support::sshd::{descendants, Sshd};
use crate::support::{bin, wait_until, NotifySocket, RecordStream, Running, TIMEOUT};

/// A running `bisync --watch --json`, its records and its notify socket.
struct Watching {
    run: Running,
    records: RecordStream,
    notify: NotifySocket,
}

fn start(p: &Pair, mut cmd: Command) -> Watching {
    let notify = NotifySocket::new();
    cmd.args(["--watch", "--json", "--delay", "100ms", "-v"])
        .env("NOTIFY_SOCKET", notify.path())
        .stdout(Stdio::piped());
    let mut run = Running::spawn(&mut cmd);
    let records = RecordStream::new(run.child.stdout.take().unwrap());
    let w = Watching {
        run,
        records,
        notify,
    };
    let ready = w.notify.wait_for("READY=1");
    assert!(ready.contains("STATUS=last full run"), "{ready}");
    let _ = p;
    w
}

fn local(p: &Pair) -> Watching {
    let mut cmd = p.command(&[]);
    cmd.arg(&p.a).arg(&p.b);
    start(p, cmd)
}

/// A bisync record of `kind` as JSON.
fn json(r: &Record, kind: &str) -> Option<serde_json::Value> {
    match r {
        Record::Other { kind: k, line } if k == kind => serde_json::from_slice(line).ok(),
        _ => None,
    }
}

impl Watching {
    /// Reads run summaries until `done` holds after one.
    fn until(&mut self, what: &str, mut done: impl FnMut() -> bool) {
        loop {
            self.records
                .wait_for(what, |r| json(r, "bisync_summary").is_some());
            if done() {
                return;
            }
        }
    }

    /// SIGTERM: exit 0, and no watchd left behind.
    fn stop(mut self) {
        let children = descendants(self.run.child.id());
        assert!(!children.is_empty(), "watchd runs below bisync");
        self.run.signal(Signal::SIGTERM);
        assert_eq!(self.run.wait_exit(), Some(0));
        for pid in children {
            assert!(
                !Path::new(&format!("/proc/{pid}")).exists(),
                "process {pid} outlived bisync"
            );
        }
    }
}

#[test]
fn changes_on_both_sides_flow_continuously_and_conflicts_are_kept() {
    let p = Pair::new();
    write(&p.a, b"before/start", b"there before");
    let mut w = local(&p);
    assert_eq!(fs::read(p.b.join("before/start")).unwrap(), b"there before");

    // One side, then the other, then both at once.
    write(&p.a, b"dir/new on a", b"from a");
    w.until("a's new file on b", || p.b.join("dir/new on a").exists());
    write(&p.b, b"dir/new on b", b"from b");
    fs::remove_file(p.b.join("before/start")).unwrap();
    w.until("b's changes on a", || {
        p.a.join("dir/new on b").exists() && !p.a.join("before/start").exists()
    });
    fs::rename(p.a.join("dir"), p.a.join("moved dir")).unwrap();
    fs::write(p.b.join("late"), b"late").unwrap();
    w.until("the rename and b's file", || tree(&p.a) == tree(&p.b));
    assert!(p.b.join("moved dir/new on b").exists());
    assert!(!p.b.join("dir").exists());

    // The same file changed on both sides within one run: both versions
    // stay, one as a conflict copy. bisync is held still while both edits
    // land, so they meet in one run.
    w.run.signal(Signal::SIGSTOP);
    let stopped = || {
        let stat = fs::read_to_string(format!("/proc/{}/stat", w.run.child.id())).unwrap();
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('T'))
    };
    assert!(wait_until(TIMEOUT, stopped), "bisync stopped");
    fs::write(p.a.join("late"), b"edited on a").unwrap();
    fs::write(p.b.join("late"), b"edited on b, longer").unwrap();
    w.run.signal(Signal::SIGCONT);
    w.records.wait_for("the conflict", |r| {
        json(r, "bisync_conflict").is_some_and(|c| c["path"] == "late")
    });
    w.until("the copy on both sides", || tree(&p.a) == tree(&p.b));
    let t = tree(&p.a);
    let contents: Vec<Vec<u8>> = t
        .iter()
        .filter(|(k, _)| k.starts_with(b"late"))
        .map(|(_, v)| match v {
            super::Node::File(data, _) => data.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(contents.len(), 2, "{:?}", t.keys());
    assert!(contents.contains(&b"edited on a".to_vec()));
    assert!(contents.contains(&b"edited on b, longer".to_vec()));
    w.stop();
}

#[test]
fn an_inotify_overflow_brings_a_full_scan() {
    let p = Pair::new();
    fs::create_dir(p.a.join("many")).unwrap();
    // The inotify backend: its queue overflow is what this test forces
    // (watchd's own fanotify tests force fanotify's).
    let mut cmd = p.command(&[]);
    cmd.arg(&p.a).arg(&p.b).env("WATCHD_BACKEND", "inotify");
    let mut w = start(&p, cmd);
    // Hold a's watchd still while more changes than the kernel queues
    // (16384 events) land in a watched directory: it overflows, and the
    // files past the overflow have no event at all.
    let watchd_a: Vec<u32> = descendants(w.run.child.id())
        .into_iter()
        .filter(|pid| {
            let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            let root = p.a.as_os_str().as_encoded_bytes();
            comm.trim() == "watchd"
                && fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| c.split(|&b| b == 0).any(|arg| arg == root))
        })
        .collect();
    assert_eq!(watchd_a.len(), 1, "one watchd for replica a");
    let pid = nix::unistd::Pid::from_raw(watchd_a[0] as i32);
    nix::sys::signal::kill(pid, Signal::SIGSTOP).unwrap();
    for i in 0..9000 {
        fs::File::create(p.a.join(format!("many/{i}"))).unwrap();
    }
    nix::sys::signal::kill(pid, Signal::SIGCONT).unwrap();
    w.notify.wait_for("STATUS=last full run");
    w.until("every file on b", || {
        fs::read_dir(p.b.join("many")).is_ok_and(|d| d.count() == 9000)
    });
    assert_eq!(tree(&p.a), tree(&p.b));
    w.stop();
}

/// `bisync` of `p.a` with `p.b` reached through `sshd`, the remote side
/// running this build's bisync and watchd.
fn over_ssh(p: &Pair, sshd: &Sshd) -> Command {
    let mut b = b"127.0.0.1:".to_vec();
    b.extend_from_slice(p.b.as_os_str().as_encoded_bytes());
    let mut cmd = p.command(&[]);
    cmd.arg("-p")
        .arg(sshd.port().to_string())
        .arg("-i")
        .arg(sshd.identity())
        .arg("--remote-bisync")
        .arg(bin("bisync"))
        .arg("--remote-watchd")
        .arg(bin("watchd"));
    for o in sshd.client_options() {
        cmd.arg("--ssh-opt").arg(o);
    }
    cmd.arg(&p.a).arg(OsString::from_vec(b));
    cmd
}

#[test]
fn a_remote_replica_is_watched_over_ssh_and_a_lost_link_heals() {
    let sshd = Sshd::start();
    let p = Pair::new();
    write(&p.b, b"remote/first", b"on b at the start");
    let mut w = start(&p, over_ssh(&p, &sshd));
    assert_eq!(
        fs::read(p.a.join("remote/first")).unwrap(),
        b"on b at the start"
    );

    write(&p.b, b"remote/second with space", b"made on b");
    w.until("b's file on a", || {
        p.a.join("remote/second with space").exists()
    });
    write(&p.a, b"local", b"made on a");
    w.until("a's file on b", || p.b.join("local").exists());

    // The link breaks: the watcher and the replica reconnect, a full scan
    // finds what changed meanwhile.
    sshd.drop_connections();
    write(&p.b, b"after the break", b"b again");
    w.until("the change after the break", || {
        p.a.join("after the break").exists()
    });
    assert_eq!(tree(&p.a), tree(&p.b));
    w.stop();
}

/// The processes whose command line holds `--serve` and `root`: the
/// remote end of a bisync over ssh (a child of sshd, not of bisync).
fn servers_of(root: &Path) -> Vec<i32> {
    let root = root.as_os_str().as_encoded_bytes();
    let mut pids = Vec::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        if args.contains(&&b"--serve"[..]) && args.contains(&root) {
            pids.push(pid);
        }
    }
    pids
}

/// SIGUSR1 during a run is answered at once, from the run's ticker, with
/// how far the run got: here the run waits on a remote replica whose
/// server is stopped (it once waited for the run to end).
#[test]
fn sigusr1_during_a_run_is_answered_at_once() {
    let sshd = Sshd::start();
    let p = Pair::new();
    write(&p.a, b"first", b"a");
    let log = p.dir.path().join("bisync.log");
    let mut cmd = over_ssh(&p, &sshd);
    cmd.stderr(fs::File::create(&log).unwrap());
    let w = start(&p, cmd);
    let servers = servers_of(&p.b);
    assert_eq!(servers.len(), 1, "one bisync --serve for {}", p.b.display());
    let server = nix::unistd::Pid::from_raw(servers[0]);
    nix::sys::signal::kill(server, Signal::SIGSTOP).unwrap();
    // A change: the run that follows waits on the stopped server.
    write(&p.a, b"second", b"a");
    let said = || fs::read_to_string(&log).unwrap_or_default();
    let answered = wait_until(TIMEOUT, || {
        w.run.signal(Signal::SIGUSR1);
        wait_until(std::time::Duration::from_secs(1), || {
            said().contains("SIGUSR1: a run is in progress: syncing: ")
        })
    });
    nix::sys::signal::kill(server, Signal::SIGCONT).unwrap();
    assert!(answered, "{}", said());
    let mut w = w;
    w.until("the change after the stop", || p.b.join("second").exists());
    w.stop();
}
