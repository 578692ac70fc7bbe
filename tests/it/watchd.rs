//! watchd against real inotify or fanotify, real files and the real binary.
//!
//! This file is compiled twice (tests/it/main.rs): as `watchd` with
//! `--backend inotify` and as `watchd_fanotify` with `--backend fanotify`
//! (through WATCHD_BACKEND, so every spawn below gets it). Without the
//! privilege or kernel for fanotify, the second run's tests say so on stderr
//! ("SKIPPED (fanotify)") and pass without asserting anything.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;
use syncpipe::wire::event::{EventKind, Header, Record};

use crate::support::{bin, tempdir, NotifySocket, RecordStream, Running, TIMEOUT};

/// The backend this copy of the tests runs.
fn backend() -> &'static str {
    if module_path!().ends_with("fanotify") {
        "fanotify"
    } else {
        "inotify"
    }
}

/// A `watchd` command with this copy's backend.
fn watchd_cmd() -> Command {
    let mut cmd = Command::new(bin("watchd"));
    cmd.env("WATCHD_BACKEND", backend());
    cmd
}

/// The `watchd` command line with this copy's backend, for shell scripts.
fn watchd_shell() -> String {
    format!("{} --backend {}", bin("watchd").display(), backend())
}

/// False (after saying why) when this copy is fanotify's and fanotify
/// cannot run here: the test then ends without asserting.
fn backend_usable() -> bool {
    if backend() != "fanotify" {
        return true;
    }
    match fanotify_unusable() {
        None => true,
        Some(why) => {
            eprintln!("SKIPPED (fanotify): {why}");
            false
        }
    }
}

/// Why `watchd --backend fanotify` cannot run here (its message), or `None`.
fn fanotify_unusable() -> Option<&'static str> {
    static WHY: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let why = WHY.get_or_init(|| {
        let dir = tempdir();
        let out = watchd_cmd()
            .args(["--backend", "fanotify", "--quiet"])
            .arg(dir.path())
            .env_remove("NOTIFY_SOCKET")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .and_then(|child| {
                std::thread::sleep(Duration::from_millis(300));
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(child.id() as i32),
                    Signal::SIGTERM,
                );
                child.wait_with_output()
            })
            .expect("running watchd");
        (out.status.code() != Some(0))
            .then(|| String::from_utf8_lossy(&out.stderr).trim().to_string())
    });
    why.as_deref()
}

struct Watchd {
    proc: Running,
    stream: RecordStream,
    header: Header,
}

impl Watchd {
    fn start(root: &Path, args: &[&str]) -> Self {
        Self::start_with(watchd_cmd().args(args).arg(root))
    }

    fn start_with(cmd: &mut Command) -> Self {
        cmd.env("WATCHD_BACKEND", backend());
        let mut proc = Running::spawn(cmd.stdout(Stdio::piped()).stderr(Stdio::piped()));
        let mut stream = RecordStream::new(proc.child.stdout.take().unwrap());
        let Record::Header(header) = stream.wait_for("header", |r| matches!(r, Record::Header(_)))
        else {
            unreachable!()
        };
        Watchd {
            proc,
            stream,
            header,
        }
    }

    /// Waits for an event of `kind` on `path` (bytes, relative to the root).
    fn expect(&mut self, kind: EventKind, path: &[u8]) -> syncpipe::wire::event::Event {
        let what = format!("{kind} {:?}", String::from_utf8_lossy(path));
        match self.stream.wait_for(
            &what,
            |r| matches!(r, Record::Event(e) if e.kind == kind && e.path.as_bytes() == path),
        ) {
            Record::Event(e) => e,
            _ => unreachable!(),
        }
    }

    /// Every event path seen so far with its kind.
    fn seen(&self) -> Vec<(EventKind, Vec<u8>)> {
        self.stream
            .seen
            .iter()
            .filter_map(|r| match r {
                Record::Event(e) => Some((e.kind.clone(), e.path.as_bytes().to_vec())),
                _ => None,
            })
            .collect()
    }

    fn stderr(mut self) -> String {
        use std::io::Read;
        let _ = self.proc.wait_exit();
        let mut s = String::new();
        self.proc
            .child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        s
    }
}

#[test]
fn header_names_the_root_and_a_fresh_stream() {
    if !backend_usable() {
        return;
    }
    let dir = tempdir();
    let a = Watchd::start(dir.path(), &[]);
    let b = Watchd::start(dir.path(), &[]);
    assert_eq!(a.header.v, 1);
    assert_eq!(
        a.header.root.as_path(),
        fs::canonicalize(dir.path()).unwrap()
    );
    assert_ne!(a.header.stream, b.header.stream);
    assert!(!a.header.host.is_empty());
    assert_eq!(a.header.backend.as_deref(), Some(backend()));
}

/// `--backend auto` takes fanotify where `--backend fanotify` runs and
/// inotify elsewhere, and says which on stderr and in the header.
#[test]
fn auto_says_which_backend_it_took() {
    let dir = tempdir();
    let mut w = Watchd::start(dir.path(), &["--backend", "auto"]);
    let expected = if fanotify_unusable().is_none() {
        "fanotify"
    } else {
        "inotify"
    };
    assert_eq!(w.header.backend.as_deref(), Some(expected));
    // It still works: a change is reported.
    fs::write(dir.path().join("f"), b"x").unwrap();
    w.expect(EventKind::Create, b"f");
    w.proc.signal(Signal::SIGTERM);
    assert_eq!(w.proc.wait_exit(), Some(0));
    let stderr = w.stderr();
    assert!(stderr.contains(&format!("using {expected}")), "{stderr}");
}

#[test]
fn every_event_kind() {
    if !backend_usable() {
        return;
    }
    let dir = tempdir();
    let root = dir.path();
    let mut w = Watchd::start(root, &[]);
    fs::write(root.join("f"), b"one").unwrap();
    w.expect(EventKind::Create, b"f");
    w.expect(EventKind::Modify, b"f");
    fs::set_permissions(root.join("f"), fs::Permissions::from_mode(0o600)).unwrap();
    w.expect(EventKind::Attrib, b"f");
    fs::rename(root.join("f"), root.join("g")).unwrap();
    let mv = w.expect(EventKind::Move, b"g");
    assert_eq!(mv.from.unwrap().as_bytes(), b"f");
    assert!(!mv.dir);
    fs::create_dir(root.join("d")).unwrap();
    assert!(w.expect(EventKind::Create, b"d").dir);
    fs::remove_file(root.join("g")).unwrap();
    w.expect(EventKind::Delete, b"g");
    fs::remove_dir(root.join("d")).unwrap();
    assert!(w.expect(EventKind::Delete, b"d").dir);

    // seq is strictly increasing, starting at 1.
    let seqs: Vec<u64> = w
        .stream
        .seen
        .iter()
        .filter_map(|r| match r {
            Record::Event(e) => Some(e.seq),
            _ => None,
        })
        .collect();
    assert_eq!(seqs[0], 1);
    assert!(seqs.windows(2).all(|p| p[0] < p[1]), "{seqs:?}");
}

#[test]
fn modify_mode_reports_writes_without_close() {
    if !backend_usable() {
        return;
    }
    use std::io::Write;
    let dir = tempdir();
    fs::write(dir.path().join("log"), b"").unwrap();
    let mut w = Watchd::start(dir.path(), &["--events", "modify"]);
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(dir.path().join("log"))
        .unwrap();
    f.write_all(b"line\n").unwrap();
    // Still open: only --events modify can have seen it.
    w.expect(EventKind::Modify, b"log");
}

#[test]
fn nested_mkdir_race_reports_the_deepest_file() {
    if !backend_usable() {
        return;
    }
    let dir = tempdir();
    let root = dir.path();
    let mut w = Watchd::start(root, &[]);
    // `mkdir -p a/b/c && touch a/b/c/f`, as fast as the kernel allows: the
    // inner directories and the file exist before watchd can watch them.
    for round in 0..20 {
        let top = format!("r{round}");
        fs::create_dir_all(root.join(&top).join("b/c")).unwrap();
        fs::write(root.join(&top).join("b/c/f"), b"x").unwrap();
        let deep = format!("{top}/b/c/f");
        w.expect(EventKind::Create, deep.as_bytes());
        for d in [top.clone(), format!("{top}/b"), format!("{top}/b/c")] {
            assert!(
                w.seen()
                    .contains(&(EventKind::Create, d.clone().into_bytes())),
                "no create for {d}"
            );
        }
    }
}

#[test]
fn directory_moved_inside_then_written_into() {
    if !backend_usable() {
        return;
    }
    let dir = tempdir();
    let root = dir.path();
    fs::create_dir_all(root.join("a/b")).unwrap();
    let mut w = Watchd::start(root, &[]);
    fs::rename(root.join("a"), root.join("z")).unwrap();
    let mv = w.expect(EventKind::Move, b"z");
    assert!(mv.dir);
    assert_eq!(mv.from.unwrap().as_bytes(), b"a");
    fs::write(root.join("z/b/new"), b"x").unwrap();
    w.expect(EventKind::Create, b"z/b/new");
    // Into another directory, deeper.
    fs::create_dir(root.join("other")).unwrap();
    // Once its create is out, `other` is watched and the rename's second half
    // is seen (before that it could only be seen as delete + create).
    w.expect(EventKind::Create, b"other");
    fs::rename(root.join("z/b"), root.join("other/bee")).unwrap();
    w.expect(EventKind::Move, b"other/bee");
    fs::write(root.join("other/bee/again"), b"x").unwrap();
    w.expect(EventKind::Create, b"other/bee/again");
    assert!(!w
        .seen()
        .iter()
        .any(|(_, p)| p.starts_with(b"a/") || p.starts_with(b"z/b/again")));
}

#[test]
fn moves_in_and_out_of_the_tree() {
    if !backend_usable() {
        return;
    }
    let outside = tempdir();
    let dir = tempdir();
    let root = dir.path();
    fs::create_dir_all(outside.path().join("incoming/sub")).unwrap();
    fs::write(outside.path().join("incoming/sub/file"), b"x").unwrap();
    fs::create_dir_all(root.join("leaving/deep")).unwrap();
    let mut w = Watchd::start(root, &[]);

    fs::rename(outside.path().join("incoming"), root.join("incoming")).unwrap();
    assert!(w.expect(EventKind::Create, b"incoming").dir);
    assert!(w.expect(EventKind::Create, b"incoming/sub").dir);
    assert!(!w.expect(EventKind::Create, b"incoming/sub/file").dir);
    // Moved-in directories are watched.
    fs::write(root.join("incoming/sub/later"), b"x").unwrap();
    w.expect(EventKind::Create, b"incoming/sub/later");

    fs::rename(root.join("leaving"), outside.path().join("gone")).unwrap();
    assert!(w.expect(EventKind::Delete, b"leaving").dir);
    // Its watches are dropped: changes out there are not ours.
    fs::write(outside.path().join("gone/deep/x"), b"x").unwrap();
    fs::write(root.join("marker"), b"x").unwrap();
    w.expect(EventKind::Create, b"marker");
    assert!(
        !w.seen().iter().any(|(_, p)| p.starts_with(b"leaving/")),
        "{:?}",
        w.seen()
    );
}

#[test]
fn awkward_names_round_trip() {
    if !backend_usable() {
        return;
    }
    let dir = tempdir();
    let root = dir.path();
    let mut w = Watchd::start(root, &[]);
    let names: [&[u8]; 7] = [
        b"with space",
        b"new\nline",
        "ünïcödé ✓".as_bytes(),
        b"\xff\xfeinvalid",
        b"-leading-dash",
        b"$(touch pwned)",
        b"quote\"back\\slash",
    ];
    for name in names {
        fs::write(root.join(OsStr::from_bytes(name)), b"x").unwrap();
        w.expect(EventKind::Modify, name);
    }
    fs::create_dir(root.join(OsStr::from_bytes(b"dir\xff"))).unwrap();
    fs::write(root.join(OsStr::from_bytes(b"dir\xff/in\nside")), b"x").unwrap();
    w.expect(EventKind::Create, b"dir\xff/in\nside");
    assert!(!root.join("pwned").exists());
}

#[test]
fn excludes_skip_paths_and_do_not_watch_directories() {
    if !backend_usable() {
        return;
    }
    let dir = tempdir();
    let root = dir.path();
    fs::create_dir_all(root.join("cache/deep")).unwrap();
    let ex_file = root.join("..").join(format!(
        "{}.exclude",
        root.file_name().unwrap().to_string_lossy()
    ));
    fs::write(&ex_file, "# comment\n/build/\n").unwrap();
    let mut w = Watchd::start(
        root,
        &[
            "--exclude",
            "*.tmp",
            "--exclude",
            "cache/",
            "--exclude-from",
            ex_file.to_str().unwrap(),
        ],
    );
    fs::write(root.join("a.tmp"), b"x").unwrap();
    fs::write(root.join("cache/deep/f"), b"x").unwrap();
    fs::create_dir(root.join("build")).unwrap();
    fs::write(root.join("build/out"), b"x").unwrap();
    fs::rename(root.join("a.tmp"), root.join("a.txt")).unwrap();
    // Renamed from an excluded name: it arrives as a new file.
    w.expect(EventKind::Create, b"a.txt");
    fs::write(root.join("kept"), b"x").unwrap();
    w.expect(EventKind::Modify, b"kept");
    let seen = w.seen();
    for bad in [&b"a.tmp"[..], b"cache/deep/f", b"build", b"build/out"] {
        assert!(!seen.iter().any(|(_, p)| p == bad), "{bad:?} in {seen:?}");
    }
    let _ = fs::remove_file(ex_file);
}

#[test]
fn queue_overflow_becomes_a_rescan() {
    if !backend_usable() {
        return;
    }
    let dir = tempdir();
    let root = dir.path();
    fs::create_dir(root.join("burst")).unwrap();
    let mut w = Watchd::start(root, &[]);
    let max_queued: usize =
        fs::read_to_string(format!("/proc/sys/fs/{}/max_queued_events", backend()))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
    w.proc.signal(Signal::SIGSTOP);
    // Each file is at least two events (create, close_write) in a directory
    // that is already watched: more than the queue holds.
    // fanotify may merge a file's create and close_write into one event.
    let files = if backend() == "fanotify" {
        max_queued + 1000
    } else {
        max_queued / 2 + 1000
    };
    for i in 0..files {
        fs::write(root.join("burst").join(i.to_string()), b"").unwrap();
    }
    w.proc.signal(Signal::SIGCONT);
    let rescan = w.stream.wait_for(
        "rescan",
        |r| matches!(r, Record::Event(e) if e.kind == EventKind::Rescan),
    );
    let Record::Event(rescan) = rescan else {
        unreachable!()
    };
    assert!(rescan.path.is_root());
    // Watches were rebuilt: new changes are still seen.
    fs::write(root.join("burst/after"), b"x").unwrap();
    w.expect(EventKind::Create, b"burst/after");
    w.proc.signal(Signal::SIGTERM);
    assert_eq!(w.proc.wait_exit(), Some(0));
    let stderr = w.stderr();
    assert!(stderr.contains("overflowed"), "{stderr}");
}

#[test]
fn root_deleted_ends_the_stream_with_code_4() {
    if !backend_usable() {
        return;
    }
    let dir = tempdir();
    let root = dir.path().join("root");
    fs::create_dir_all(root.join("sub")).unwrap();
    let mut w = Watchd::start(&root, &[]);
    fs::remove_dir_all(&root).unwrap();
    let end = w.stream.wait_for("end", |r| matches!(r, Record::End(_)));
    let Record::End(end) = end else {
        unreachable!()
    };
    assert_eq!(end.reason, "root-deleted");
    assert_eq!(w.proc.wait_exit(), Some(4));
    let stderr = w.stderr();
    assert!(stderr.contains("is gone"), "{stderr}");
}

#[test]
fn missing_root_fails_clearly_or_is_waited_for() {
    if !backend_usable() {
        return;
    }
    let dir = tempdir();
    let root = dir.path().join("later");
    let out = watchd_cmd().arg(&root).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("does not exist") && stderr.contains("--wait"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "one message: {stderr}");
    assert!(out.stdout.is_empty());

    let mut cmd = watchd_cmd();
    cmd.arg("--wait").arg(&root);
    let mut proc = Running::spawn(cmd.stdout(Stdio::piped()));
    let mut stream = RecordStream::new(proc.child.stdout.take().unwrap());
    assert!(stream.next(Duration::from_millis(300)).is_none());
    fs::create_dir(&root).unwrap();
    stream.wait_for("header", |r| matches!(r, Record::Header(_)));
    fs::write(root.join("f"), b"x").unwrap();
    stream.wait_for(
        "create f",
        |r| matches!(r, Record::Event(e) if e.path.as_bytes() == b"f"),
    );
    proc.signal(Signal::SIGTERM);
    assert_eq!(proc.wait_exit(), Some(0));
}

#[test]
fn require_mount_refuses_a_plain_directory() {
    if !backend_usable() {
        return;
    }
    let dir = tempdir();
    let out = watchd_cmd()
        .arg("--require-mount")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a mount point"));
}

#[test]
fn not_a_directory_and_bad_patterns() {
    if !backend_usable() {
        return;
    }
    let dir = tempdir();
    let file = dir.path().join("file");
    fs::write(&file, b"").unwrap();
    let out = watchd_cmd().arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    let out = watchd_cmd()
        .args(["--exclude", "a["])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("a["));
}

#[test]
fn ready_only_after_watches_and_status_counts_directories() {
    if !backend_usable() {
        return;
    }
    let dir = tempdir();
    for i in 0..50 {
        fs::create_dir_all(dir.path().join(format!("d{i}/e"))).unwrap();
    }
    let notify = NotifySocket::new();
    let mut cmd = watchd_cmd();
    cmd.arg(dir.path()).env("NOTIFY_SOCKET", notify.path());
    let mut w = Watchd::start_with(&mut cmd);
    let ready = notify.wait_for("READY=1");
    assert!(ready.contains("STATUS=watching"), "{ready}");
    if backend() == "inotify" {
        assert!(ready.contains("101 directories"), "{ready}");
    }
    assert!(ready.contains(&format!("with {}", backend())), "{ready}");
    // Ready means watched: a change right now is seen.
    fs::write(dir.path().join("d49/e/f"), b"x").unwrap();
    w.expect(EventKind::Create, b"d49/e/f");
    w.proc.signal(Signal::SIGTERM);
    assert!(notify.wait_for("STOPPING=1").contains("STOPPING=1"));
    assert_eq!(w.proc.wait_exit(), Some(0));
}

#[test]
fn abstract_notify_socket_works_too() {
    if !backend_usable() {
        return;
    }
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let name = format!("syncpipe-test-{}", std::process::id());
    let sock = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(&name).unwrap()).unwrap();
    sock.set_read_timeout(Some(TIMEOUT)).unwrap();
    let dir = tempdir();
    let mut cmd = watchd_cmd();
    cmd.arg(dir.path()).env("NOTIFY_SOCKET", format!("@{name}"));
    let _w = Watchd::start_with(&mut cmd);
    let mut buf = [0u8; 1024];
    let mut got = Vec::new();
    while !got.iter().any(|m: &String| m.contains("READY=1")) {
        let n = sock.recv(&mut buf).expect("READY=1 within the timeout");
        got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert!(got[0].starts_with("STATUS=setting up watches"), "{got:?}");
}

#[test]
fn reader_going_away_is_a_quiet_exit() {
    if !backend_usable() {
        return;
    }
    use std::io::{BufRead, BufReader, Read};
    let dir = tempdir();
    let mut proc = Running::spawn(
        watchd_cmd()
            .arg(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let mut reader = BufReader::new(proc.child.stdout.take().unwrap());
    let mut header = String::new();
    reader.read_line(&mut header).unwrap();
    assert!(header.contains("\"header\""));
    drop(reader); // like `watchd ROOT | head -1`
    fs::write(dir.path().join("f"), b"x").unwrap();
    assert_eq!(proc.wait_exit(), Some(0));
    let mut stderr = String::new();
    proc.child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(stderr.is_empty(), "{stderr}");
}

#[test]
fn sigint_and_sigterm_exit_cleanly() {
    if !backend_usable() {
        return;
    }
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        let dir = tempdir();
        let mut w = Watchd::start(dir.path(), &[]);
        w.proc.signal(sig);
        assert_eq!(w.proc.wait_exit(), Some(0), "{sig}");
    }
}

#[test]
fn too_few_watches_is_refused_with_the_setting_named() {
    if !backend_usable() {
        return;
    }
    if backend() == "fanotify" {
        eprintln!("SKIPPED (fanotify): a watch limit is inotify's alone");
        return;
    }
    // A user namespace has its own inotify watch limit, so the test lowers
    // it without touching the machine's.
    if Command::new("unshare")
        .args(["-U", "-r", "true"])
        .status()
        .map(|s| !s.success())
        .unwrap_or(true)
    {
        panic!("unshare -U -r is needed for this test (util-linux, user namespaces)");
    }
    let dir = tempdir();
    for i in 0..40 {
        fs::create_dir_all(dir.path().join(format!("d{i}/x"))).unwrap();
    }
    let script = format!(
        "echo 30 > /proc/sys/user/max_inotify_watches && exec {} {}",
        watchd_shell(),
        dir.path().display()
    );
    let out = Command::new("unshare")
        .args(["-U", "-r", "sh", "-c", &script])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("max_inotify_watches is 30"), "{stderr}");
    assert!(stderr.contains("at least 81 directories"), "{stderr}");
    assert!(out.stdout.is_empty(), "no header for a half-watched tree");
}

/// Runs `script` as root in a private mount namespace, so mounts made there
/// vanish with it and the machine's mount table is left alone.
fn in_mount_namespace(script: &str) -> std::process::Output {
    Command::new("unshare")
        .args(["-m", "--propagation", "private", "bash", "-c", script])
        .output()
        .expect("unshare -m (util-linux) is needed for this test")
}

#[test]
fn root_unmounted_ends_the_stream_and_a_submount_going_is_a_rescan() {
    if !backend_usable() {
        return;
    }
    let dir = tempdir();
    let root = dir.path().join("mnt");
    let out_file = dir.path().join("out.jsonl");
    fs::create_dir(&root).unwrap();
    let script = format!(
        r#"set -e
        root='{root}'; out='{out}'
        mount -t tmpfs syncpipe-test "$root"
        mkdir -p "$root/sub/mnt"
        mount -t tmpfs syncpipe-inner "$root/sub/mnt"
        mkdir -p "$root/sub/mnt/deep"
        {watchd} "$root" > "$out" 2> "$out.err" & pid=$!
        for i in $(seq 200); do [ -s "$out" ] && break; sleep 0.05; done
        umount "$root/sub/mnt"
        for i in $(seq 200); do grep -q rescan "$out" && break; sleep 0.05; done
        touch "$root/sub/mnt/uncovered"
        for i in $(seq 200); do grep -q uncovered "$out" && break; sleep 0.05; done
        umount "$root"
        wait $pid || echo "exit=$?"
        "#,
        root = root.display(),
        out = out_file.display(),
        watchd = watchd_shell(),
    );
    let out = in_mount_namespace(&script);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("exit=4"),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let records: Vec<Record> = fs::read(&out_file)
        .unwrap()
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| Record::parse(l).unwrap())
        .collect();
    let rescans: Vec<&[u8]> = records
        .iter()
        .filter_map(|r| match r {
            Record::Event(e) if e.kind == EventKind::Rescan => Some(e.path.as_bytes()),
            _ => None,
        })
        .collect();
    assert!(rescans.contains(&&b"sub/mnt"[..]), "{records:?}");
    assert_eq!(rescans.len(), 1, "one rescan for the submount: {records:?}");
    // What the submount had covered is watched now.
    assert!(records.iter().any(
        |r| matches!(r, Record::Event(e) if e.kind == EventKind::Create && e.path.as_bytes() == b"sub/mnt/uncovered")
    ), "{records:?}");
    assert!(
        !rescans.contains(&&b"sub"[..]),
        "the root's own unmount is not a rescan: {records:?}"
    );
    match records.last() {
        Some(Record::End(end)) => assert_eq!(end.reason, "root-unmounted"),
        other => panic!("last record {other:?}"),
    }
}

#[test]
fn a_directory_renamed_and_made_again_before_watchd_looks_stays_watched() {
    if !backend_usable() {
        return;
    }
    // `mkdir a; mv a b; mkdir a` all queued in one read: the watch added for
    // the first "a" lands on the second one; the renamed one must still be
    // watched afterwards.
    let dir = tempdir();
    let root = dir.path();
    let mut w = Watchd::start(root, &[]);
    w.proc.signal(Signal::SIGSTOP);
    fs::create_dir(root.join("a")).unwrap();
    fs::rename(root.join("a"), root.join("b")).unwrap();
    fs::create_dir(root.join("a")).unwrap();
    w.proc.signal(Signal::SIGCONT);
    w.expect(EventKind::Move, b"b");
    fs::write(root.join("b/inside"), b"x").unwrap();
    fs::write(root.join("a/inside"), b"x").unwrap();
    w.expect(EventKind::Create, b"b/inside");
    w.expect(EventKind::Create, b"a/inside");
}

#[test]
fn a_directory_made_in_a_new_one_then_both_renamed_before_watchd_looks_stays_watched() {
    // `mkdir a` seen and watched; then `mkdir a/inner; mv a b` queued in one
    // read. Watching "a/inner" by name fails (a is now b), and the move only
    // relocates the watch of a: inner must still be watched afterwards.
    if !backend_usable() {
        return;
    }
    if backend() == "fanotify" {
        eprintln!("SKIPPED (fanotify): one mark covers every directory; no watch to lose");
        return;
    }
    let dir = tempdir();
    let root = dir.path();
    let mut w = Watchd::start(root, &[]);
    fs::create_dir(root.join("a")).unwrap();
    w.expect(EventKind::Create, b"a");
    w.proc.signal(Signal::SIGSTOP);
    fs::create_dir(root.join("a/inner")).unwrap();
    fs::write(root.join("a/inner/early"), b"x").unwrap();
    fs::rename(root.join("a"), root.join("b")).unwrap();
    w.proc.signal(Signal::SIGCONT);
    w.expect(EventKind::Move, b"b");
    // What inner held before its watch is reported once it is watched.
    w.expect(EventKind::Create, b"b/inner/early");
    fs::write(root.join("b/inner/late"), b"x").unwrap();
    w.expect(EventKind::Create, b"b/inner/late");
}

#[test]
fn a_disk_mounted_below_the_root_later_is_a_rescan_and_watched() {
    if !backend_usable() {
        return;
    }
    let dir = tempdir();
    let root = dir.path().join("root");
    let out_file = dir.path().join("out.jsonl");
    fs::create_dir_all(root.join("sub")).unwrap();
    let script = format!(
        r#"set -e
        root='{root}'; out='{out}'
        {watchd} "$root" > "$out" 2> "$out.err" & pid=$!
        for i in $(seq 200); do [ -s "$out" ] && break; sleep 0.05; done
        mount -t tmpfs syncpipe-late "$root/sub"
        for i in $(seq 200); do grep -q rescan "$out" && break; sleep 0.05; done
        touch "$root/sub/on-the-new-disk"
        for i in $(seq 200); do grep -q on-the-new-disk "$out" && break; sleep 0.05; done
        kill $pid; wait $pid || true
        cat "$out.err" >&2
        "#,
        root = root.display(),
        out = out_file.display(),
        watchd = watchd_shell(),
    );
    let out = in_mount_namespace(&script);
    let records: Vec<Record> = fs::read(&out_file)
        .unwrap()
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| Record::parse(l).unwrap())
        .collect();
    let why = String::from_utf8_lossy(&out.stderr);
    assert!(
        records.iter().any(|r| matches!(r, Record::Event(e) if e.kind == EventKind::Rescan && e.path.as_bytes() == b"sub")),
        "{records:?} {why}"
    );
    assert!(
        records.iter().any(|r| matches!(r, Record::Event(e) if e.kind == EventKind::Create && e.path.as_bytes() == b"sub/on-the-new-disk")),
        "{records:?} {why}"
    );
}

/// Writes `path` (below `root`) and then a marker in the root, waits for the
/// marker's create and says whether `path`'s create came before it. Events
/// reach watchd in the order they happened, so a missing create is lost, not
/// late.
fn create_reported_before_a_marker(w: &mut Watchd, root: &Path, path: &str) -> bool {
    fs::write(root.join(path), b"x").unwrap();
    fs::write(root.join("marker"), b"x").unwrap();
    w.expect(EventKind::Create, b"marker");
    w.seen()
        .contains(&(EventKind::Create, path.as_bytes().to_vec()))
}

#[test]
fn a_directory_moved_out_of_one_replaced_before_watchd_looks_keeps_its_paths() {
    // `mv p/x y; mv q p` queued in one read, after p/x/d was seen: fanotify
    // cannot name the first p any more (replaced, its handle is stale), so
    // the move looks like one from outside, and no delete of p follows. What
    // is cached below x must not keep the old path.
    if !backend_usable() {
        return;
    }
    let dir = tempdir();
    let root = dir.path();
    fs::create_dir_all(root.join("p/x/d")).unwrap();
    fs::create_dir(root.join("q")).unwrap();
    let mut w = Watchd::start(root, &[]);
    fs::write(root.join("p/x/d/f1"), b"x").unwrap();
    w.expect(EventKind::Create, b"p/x/d/f1");
    w.proc.signal(Signal::SIGSTOP);
    fs::rename(root.join("p/x"), root.join("y")).unwrap();
    fs::rename(root.join("q"), root.join("p")).unwrap();
    w.proc.signal(Signal::SIGCONT);
    w.expect(EventKind::Move, b"p");
    assert!(
        create_reported_before_a_marker(&mut w, root, "y/d/f2"),
        "{:?}",
        w.seen()
    );
}

#[test]
fn a_name_moved_away_and_taken_by_another_directory_before_watchd_looks() {
    // `touch c/d/f1; mv a b; mv c a` queued in one read: fanotify names d by
    // asking the kernel, which answers with today's path (a/d); the move of
    // a to b read next must not carry d along to b/d.
    if !backend_usable() {
        return;
    }
    let dir = tempdir();
    let root = dir.path();
    fs::create_dir(root.join("a")).unwrap();
    fs::create_dir_all(root.join("c/d")).unwrap();
    let mut w = Watchd::start(root, &[]);
    w.proc.signal(Signal::SIGSTOP);
    fs::write(root.join("c/d/f1"), b"x").unwrap();
    fs::rename(root.join("a"), root.join("b")).unwrap();
    fs::rename(root.join("c"), root.join("a")).unwrap();
    w.proc.signal(Signal::SIGCONT);
    w.expect(EventKind::Move, b"a");
    assert!(
        create_reported_before_a_marker(&mut w, root, "a/d/f2"),
        "{:?}",
        w.seen()
    );
}

#[test]
fn a_directory_moved_while_its_old_parent_is_named_ahead_keeps_its_paths() {
    // `touch p/f0; mv p/h n/h; touch n/h/y/fw; mv p p2` queued in one read,
    // after p/h/y was seen: fanotify names p by asking the kernel (p2, ahead
    // of the move of h), so the move of h is read as one from p2/h and what
    // is cached under p/h stays; the move of p read next must drop it, or
    // every later event in y is reported under a path that is gone.
    if !backend_usable() {
        return;
    }
    let dir = tempdir();
    let root = dir.path();
    fs::create_dir_all(root.join("p/h/y")).unwrap();
    fs::create_dir(root.join("n")).unwrap();
    let mut w = Watchd::start(root, &[]);
    fs::write(root.join("p/h/y/f1"), b"x").unwrap();
    w.expect(EventKind::Create, b"p/h/y/f1");
    w.proc.signal(Signal::SIGSTOP);
    fs::write(root.join("p/f0"), b"x").unwrap();
    fs::rename(root.join("p/h"), root.join("n/h")).unwrap();
    fs::write(root.join("n/h/y/fw"), b"x").unwrap();
    fs::rename(root.join("p"), root.join("p2")).unwrap();
    w.proc.signal(Signal::SIGCONT);
    w.expect(EventKind::Move, b"p2");
    assert!(
        create_reported_before_a_marker(&mut w, root, "n/h/y/f2"),
        "{:?}",
        w.seen()
    );
}

#[test]
fn renames_back_and_forth_read_late_end_at_the_last_name() {
    // One process renaming b to a, back, and to a again while watchd is
    // stopped: fanotify merges the third rename into the first in its queue
    // (same names, same process), so two moves are read, ending at b. The
    // stream must still end with a (re-read), and events in it must be
    // reported under a.
    if !backend_usable() {
        return;
    }
    let dir = tempdir();
    let root = dir.path();
    fs::create_dir(root.join("b")).unwrap();
    fs::write(root.join("b/f0"), b"x").unwrap();
    let mut w = Watchd::start(root, &[]);
    w.proc.signal(Signal::SIGSTOP);
    fs::rename(root.join("b"), root.join("a")).unwrap();
    fs::rename(root.join("a"), root.join("b")).unwrap();
    fs::rename(root.join("b"), root.join("a")).unwrap();
    w.proc.signal(Signal::SIGCONT);
    assert!(
        create_reported_before_a_marker(&mut w, root, "a/f2"),
        "{:?}",
        w.seen()
    );
    let last = w.seen().into_iter().rfind(|(_, p)| p == b"a" || p == b"b");
    assert!(
        matches!(&last, Some((EventKind::Move | EventKind::Rescan | EventKind::Create, p)) if p == b"a"),
        "the last word on a and b must make a re-read: {:?}",
        w.seen()
    );
}
