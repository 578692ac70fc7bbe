//! pushd against real targets: local directories, sshd on loopback and an
//! rsync daemon, fed records written by the test on its stdin.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};

use syncpipe::event::{
    Applied, Batch, Change, ChangeOp, Event, EventKind, Header, Record, Timestamp,
};
use syncpipe::wirepath::WirePath;

use crate::support::rsyncd::{Module, Rsyncd};
use crate::support::sshd::Sshd;
use crate::support::{bin, join_bytes, tempdir, RecordStream, Running};

/// Names that break naive code: spaces, newlines, leading dashes, invalid
/// UTF-8, shell syntax, quotes.
const NASTY: &[&[u8]] = &[
    b"a b",
    b"new\nline",
    b"-rf",
    b"--delete",
    b"bad\xff\xfename",
    b"$(touch pwned)",
    b"`touch pwned2`",
    b"it's \"quoted\"",
    b"semi;colon&amp",
];

/// A running pushd with its stdin for records and its stdout as a stream.
struct Pushd {
    run: Running,
    stdin: Option<ChildStdin>,
    out: RecordStream,
    stream: String,
    seq: u64,
    root: PathBuf,
}

impl Pushd {
    fn start_in(root: &Path, args: &[&OsStr], cwd: &Path) -> Pushd {
        let mut cmd = Command::new(bin("pushd"));
        cmd.args(["--retry-min", "50ms", "--retry-max", "400ms", "-v"])
            .args(args)
            .current_dir(cwd)
            .stdout(Stdio::piped());
        let mut child = cmd
            .stdin(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
        let stdin = child.stdin.take();
        let out = RecordStream::new(child.stdout.take().unwrap());
        Pushd {
            run: Running { child },
            stdin,
            out,
            stream: syncpipe::event::new_stream_id().unwrap(),
            seq: 0,
            root: root.to_path_buf(),
        }
    }

    fn send(&mut self, record: &Record) {
        let mut line = Vec::new();
        record.write_line(&mut line).unwrap();
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(&line).unwrap();
        stdin.flush().unwrap();
    }

    fn header(&mut self) {
        let h = Record::Header(Header {
            v: 1,
            stream: self.stream.clone(),
            root: WirePath::from(self.root.as_path()),
            host: "test".into(),
            ts: Timestamp::now(),
            producer: "test/0".into(),
        });
        self.send(&h);
    }

    /// Sends one batch; returns its last seq.
    fn batch(&mut self, changes: Vec<Change>) -> u64 {
        let first = self.seq + 1;
        self.seq += changes.len().max(1) as u64;
        let b = Record::Batch(Batch {
            stream: self.stream.clone(),
            first_seq: first,
            last_seq: self.seq,
            root: WirePath::from(self.root.as_path()),
            ts: Timestamp::now(),
            changes,
        });
        self.send(&b);
        self.seq
    }

    fn event(&mut self, kind: EventKind, path: &[u8], from: Option<&[u8]>) -> u64 {
        self.seq += 1;
        let e = Record::Event(Event {
            seq: self.seq,
            ts: Timestamp::now(),
            kind,
            path: WirePath::from_bytes(path),
            dir: false,
            from: from.map(WirePath::from_bytes),
        });
        self.send(&e);
        self.seq
    }

    /// Waits for the result of `target` that covers `seq` and succeeded.
    fn applied(&mut self, target: &str, seq: u64) -> Applied {
        let r = self.out.wait_for(&format!("{target} applied up to {seq}"), |r| {
            matches!(r, Record::Applied(a) if a.target == target && a.last_seq >= seq && a.status != "failed")
        });
        let Record::Applied(a) = r else {
            unreachable!()
        };
        a
    }

    /// The next result for `target` whatever its status.
    fn result(&mut self, target: &str) -> Applied {
        let r = self.out.wait_for(
            &format!("a result for {target}"),
            |r| matches!(r, Record::Applied(a) if a.target == target),
        );
        let Record::Applied(a) = r else {
            unreachable!()
        };
        a
    }

    /// Closes stdin and returns the exit code.
    fn finish(&mut self) -> Option<i32> {
        self.stdin = None;
        self.run.wait_exit()
    }
}

fn change(op: ChangeOp, path: &[u8]) -> Change {
    Change {
        op,
        path: WirePath::from_bytes(path),
        dir: false,
        from: None,
    }
}

fn moved(from: &[u8], to: &[u8], dir: bool) -> Change {
    Change {
        op: ChangeOp::Move,
        path: WirePath::from_bytes(to),
        dir,
        from: Some(WirePath::from_bytes(from)),
    }
}

/// Every entry below `root`: relative path -> (kind and mode, content).
/// Entries that vanish while it reads (rsync at work on a target) are left
/// out: the tree then differs from the source, and the caller looks again.
fn tree(root: &Path) -> BTreeMap<Vec<u8>, (String, Vec<u8>)> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<Vec<u8>, (String, Vec<u8>)>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries {
            let Ok(entry) = entry else { continue };
            let path = entry.path();
            let rel = path
                .strip_prefix(base)
                .unwrap()
                .as_os_str()
                .as_bytes()
                .to_vec();
            let Ok(meta) = fs::symlink_metadata(&path) else {
                continue;
            };
            let mode = meta.permissions().mode() & 0o7777;
            if meta.is_dir() {
                out.insert(rel, (format!("dir {mode:o}"), Vec::new()));
                walk(base, &path, out);
            } else if meta.file_type().is_symlink() {
                if let Ok(t) = fs::read_link(&path) {
                    out.insert(rel, ("link".into(), t.as_os_str().as_bytes().to_vec()));
                }
            } else if let Ok(content) = fs::read(&path) {
                out.insert(rel, (format!("file {mode:o}"), content));
            }
        }
    }
    let mut out = BTreeMap::new();
    if root.exists() {
        walk(root, root, &mut out);
    }
    out
}

fn assert_same(src: &Path, dst: &Path) {
    let (a, b) = (tree(src), tree(dst));
    if a != b {
        let show = |t: &BTreeMap<Vec<u8>, (String, Vec<u8>)>| {
            t.iter()
                .map(|(k, (kind, _))| format!("{:?} {kind}", String::from_utf8_lossy(k)))
                .collect::<Vec<_>>()
                .join("\n  ")
        };
        panic!(
            "trees differ\nsource:\n  {}\ntarget:\n  {}",
            show(&a),
            show(&b)
        );
    }
}

fn write(root: &Path, rel: &[u8], content: &[u8]) {
    let path = join_bytes(root, rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// Runs every change kind through `p` (already started, header not sent)
/// and checks after each step that `dst` equals `src`. `renames` says
/// whether the target can rename in place.
fn every_change_kind(p: &mut Pushd, target: &str, src: &Path, dst: &Path, renames: bool) {
    for (i, name) in NASTY.iter().enumerate() {
        write(src, name, format!("initial {i}").as_bytes());
    }
    write(src, b"dir/sub/deep file", b"deep");
    p.header();
    let first = p.result(target);
    assert_eq!(first.status, "ok", "{first:?}");
    assert!(first.full);
    assert_same(src, dst);

    // create, modify, attrib
    let mut changes = Vec::new();
    for name in NASTY {
        let mut new = b"new-".to_vec();
        new.extend_from_slice(name);
        write(src, &new, b"created");
        changes.push(change(ChangeOp::Update, &new));
        write(src, name, b"modified, and longer than before");
        changes.push(change(ChangeOp::Update, name));
    }
    fs::set_permissions(src.join("dir/sub"), fs::Permissions::from_mode(0o700)).unwrap();
    changes.push(Change {
        dir: true,
        ..change(ChangeOp::Update, b"dir/sub")
    });
    let seq = p.batch(changes);
    let a = p.applied(target, seq);
    assert_eq!(a.status, "ok", "{a:?}");
    assert!(a.files >= NASTY.len() as u64 * 2, "{a:?}");
    assert_same(src, dst);

    // delete files and a whole directory
    let mut changes = Vec::new();
    for name in &NASTY[..4] {
        fs::remove_file(join_bytes(src, name)).unwrap();
        changes.push(change(ChangeOp::Delete, name));
    }
    fs::remove_dir_all(src.join("dir")).unwrap();
    changes.push(Change {
        dir: true,
        ..change(ChangeOp::Delete, b"dir")
    });
    let seq = p.batch(changes);
    assert_eq!(p.applied(target, seq).status, "ok");
    assert_same(src, dst);

    // renames: a file and a directory, nasty names on both sides
    write(src, b"tree/x/one", b"1");
    write(src, b"tree/x/two", b"2");
    let seq = p.batch(vec![Change {
        dir: true,
        ..change(ChangeOp::Rescan, b"tree")
    }]);
    p.applied(target, seq);
    fs::rename(
        join_bytes(src, NASTY[5]),
        join_bytes(src, b"renamed $(touch pwned)"),
    )
    .unwrap();
    fs::rename(src.join("tree/x"), join_bytes(src, b"tree/y -x\n")).unwrap();
    let seq = p.batch(vec![
        moved(NASTY[5], b"renamed $(touch pwned)", false),
        moved(b"tree/x", b"tree/y -x\n", true),
    ]);
    let a = p.applied(target, seq);
    assert_eq!(a.status, "ok", "{a:?}");
    if renames {
        assert_eq!(a.renamed, 2, "{a:?}");
        assert_eq!(a.files, 0, "a rename must not resend data: {a:?}");
    }
    assert_same(src, dst);

    // rescan of a subtree changed behind our back
    write(src, b"tree/y -x\n/three", b"3");
    fs::remove_file(src.join("tree/y -x\n/one")).unwrap();
    let seq = p.batch(vec![Change {
        dir: true,
        ..change(ChangeOp::Rescan, b"tree")
    }]);
    assert_eq!(p.applied(target, seq).status, "ok");
    assert_same(src, dst);

    // raw watcher events, each its own batch
    write(src, b"raw\nevent", b"raw");
    p.event(EventKind::Create, b"raw\nevent", None);
    fs::remove_file(join_bytes(src, NASTY[6])).unwrap();
    let seq = p.event(EventKind::Delete, NASTY[6], None);
    p.applied(target, seq);
    assert_same(src, dst);
}

fn assert_nothing_executed(dirs: &[&Path]) {
    for dir in dirs {
        for name in ["pwned", "pwned2"] {
            assert!(
                !dir.join(name).exists(),
                "{} was created",
                dir.join(name).display()
            );
        }
    }
}

#[test]
fn local_target_gets_every_change_kind() {
    let (src, dst, cwd) = (tempdir(), tempdir(), tempdir());
    let target = dst.path().join("copy");
    let mut p = Pushd::start_in(src.path(), &[target.as_os_str()], cwd.path());
    every_change_kind(
        &mut p,
        &target.display().to_string(),
        src.path(),
        &target,
        true,
    );
    // Unknown records pass through; pushd ends cleanly with its input.
    p.send(&Record::parse(br#"{"type":"heartbeat","n":1}"#).unwrap());
    p.out.wait_for(
        "the unknown record passed through",
        |r| matches!(r, Record::Other { kind, .. } if kind == "heartbeat"),
    );
    assert_eq!(p.finish(), Some(0));
    assert_nothing_executed(&[src.path(), dst.path(), cwd.path(), Path::new("/root")]);
}

/// pushd's ssh flags for `sshd`, with the key copied to a path that needs
/// quoting in rsync's `-e` (a space and a quote).
fn ssh_flags(sshd: &Sshd, scratch: &Path) -> Vec<std::ffi::OsString> {
    let key_dir = scratch.join("key dir's");
    fs::create_dir_all(&key_dir).unwrap();
    let key = key_dir.join("id");
    fs::copy(sshd.identity(), &key).unwrap();
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    let mut flags: Vec<std::ffi::OsString> = vec![
        "--port".into(),
        sshd.port().to_string().into(),
        "--identity".into(),
        key.into(),
    ];
    for o in sshd.client_options() {
        flags.push("--ssh-opt".into());
        flags.push(o.into());
    }
    flags
}

#[test]
fn ssh_target_gets_every_change_kind_and_renames_in_place() {
    let sshd = Sshd::start();
    let (src, dst, scratch) = (tempdir(), tempdir(), tempdir());
    let target = format!("127.0.0.1:{}/copy", dst.path().display());
    let mut args = ssh_flags(&sshd, scratch.path());
    args.push(target.clone().into());
    let args: Vec<&OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let mut p = Pushd::start_in(src.path(), &args, scratch.path());
    every_change_kind(&mut p, &target, src.path(), &dst.path().join("copy"), true);

    // A big file renamed crosses the wire once, not twice.
    let big = vec![7u8; 4 << 20];
    write(src.path(), b"big", &big);
    let seq = p.batch(vec![change(ChangeOp::Update, b"big")]);
    let sent = p.applied(&target, seq);
    assert_eq!(sent.bytes, big.len() as u64, "{sent:?}");
    fs::rename(src.path().join("big"), src.path().join("big renamed")).unwrap();
    let seq = p.batch(vec![moved(b"big", b"big renamed", false)]);
    let renamed = p.applied(&target, seq);
    assert_eq!(
        (renamed.renamed, renamed.files, renamed.bytes),
        (1, 0, 0),
        "{renamed:?}"
    );
    assert!(renamed.sent < 64 << 10, "{renamed:?}");
    assert_same(src.path(), &dst.path().join("copy"));
    assert_eq!(p.finish(), Some(0));
    assert_nothing_executed(&[src.path(), dst.path(), scratch.path(), Path::new("/root")]);
}

#[test]
fn rsync_daemon_target_with_password_file() {
    let (src, dst, scratch) = (tempdir(), tempdir(), tempdir());
    let daemon = Rsyncd::start(&[Module::with_auth("m", dst.path(), "pusher", "s3cret")]);
    let target = daemon
        .url("m", "copy")
        .replace("rsync://", "rsync://pusher@");
    let pw = daemon.password_file("s3cret");
    let args = [os("--password-file"), pw.as_os_str(), os(&target)];
    let mut p = Pushd::start_in(src.path(), &args, scratch.path());
    every_change_kind(&mut p, &target, src.path(), &dst.path().join("copy"), false);
    assert_eq!(p.finish(), Some(0), "{}", daemon.log());
}

#[test]
fn ssh_target_killed_mid_stream_converges_after_restart() {
    let mut sshd = Sshd::start();
    let (src, dst, scratch) = (tempdir(), tempdir(), tempdir());
    let target = format!("127.0.0.1:{}", dst.path().display());
    let mut args = ssh_flags(&sshd, scratch.path());
    args.push(target.clone().into());
    let args: Vec<&OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    write(src.path(), b"before", b"0");
    let mut p = Pushd::start_in(src.path(), &args, scratch.path());
    p.header();
    assert_eq!(p.result(&target).status, "ok");

    sshd.stop();
    write(src.path(), b"during 1", b"1");
    p.batch(vec![change(ChangeOp::Update, b"during 1")]);
    let failed = p.result(&target);
    assert_eq!(failed.status, "failed", "{failed:?}");
    assert!(failed.error.is_some());
    write(src.path(), b"during 2", b"2");
    fs::remove_file(src.path().join("before")).unwrap();
    let last = p.batch(vec![
        change(ChangeOp::Update, b"during 2"),
        change(ChangeOp::Delete, b"before"),
    ]);
    // Retries keep failing while the server is down...
    let again = p.result(&target);
    assert_eq!(again.status, "failed");
    assert!(again.attempt >= 2, "{again:?}");
    assert_eq!(tree(dst.path()).len(), 1);

    sshd.restart();
    let done = p.applied(&target, last);
    assert_eq!(done.status, "ok");
    assert!(
        done.first_seq <= 1,
        "the first failed batch is in it: {done:?}"
    );
    assert_same(src.path(), dst.path());
    assert_eq!(p.finish(), Some(0));
}

#[test]
fn state_file_resumes_the_same_stream_and_resyncs_a_new_one() {
    let (src, dst, scratch) = (tempdir(), tempdir(), tempdir());
    let state = scratch.path().join("state.json");
    let target = dst.path().display().to_string();
    let args = [os("--state"), state.as_os_str(), os(&target)];
    write(src.path(), b"a", b"a");
    let mut p = Pushd::start_in(src.path(), &args, scratch.path());
    p.header();
    assert!(p.result(&target).full);
    write(src.path(), b"b", b"b");
    let seq = p.batch(vec![change(ChangeOp::Update, b"b")]);
    p.applied(&target, seq);
    assert_eq!(p.finish(), Some(0));
    let saved: serde_json::Value = serde_json::from_slice(&fs::read(&state).unwrap()).unwrap();
    assert_eq!(saved["targets"][&target]["stream"], p.stream.as_str());
    assert_eq!(saved["targets"][&target]["seq"], seq);

    // Something only on the target shows whether a full sync ran.
    write(dst.path(), b"only on target", b"x");
    let (stream, old_seq) = (p.stream.clone(), p.seq);
    let mut q = Pushd::start_in(src.path(), &args, scratch.path());
    q.stream = stream;
    q.header();
    // The replayed batch is skipped, the next one applied, no full sync.
    q.seq = 0;
    q.batch(vec![change(ChangeOp::Update, b"b")]);
    assert_eq!(q.seq, old_seq);
    write(src.path(), b"c", b"c");
    let seq = q.batch(vec![change(ChangeOp::Update, b"c")]);
    let a = q.applied(&target, seq);
    assert!(!a.full);
    assert_eq!(a.first_seq, seq, "{a:?}");
    assert!(dst.path().join("only on target").exists());
    assert_eq!(q.finish(), Some(0));
    let first = q.out.seen.iter().find_map(|r| match r {
        Record::Applied(a) => Some(a.clone()),
        _ => None,
    });
    assert_eq!(
        first.unwrap().last_seq,
        seq,
        "the first result is the new batch"
    );

    // A new stream: full sync first.
    let mut r = Pushd::start_in(src.path(), &args, scratch.path());
    r.header();
    let full = r.result(&target);
    assert!(full.full && full.status == "ok", "{full:?}");
    assert!(!dst.path().join("only on target").exists());
    assert_same(src.path(), dst.path());
    assert_eq!(r.finish(), Some(0));
}

#[test]
fn empty_or_missing_source_never_wipes_the_target() {
    let (src, dst, scratch) = (tempdir(), tempdir(), tempdir());
    for i in 0..20 {
        write(dst.path(), format!("keep{i}").as_bytes(), b"precious");
    }
    let target = dst.path().display().to_string();
    let mut p = Pushd::start_in(src.path(), &[os(&target)], scratch.path());
    p.header();
    let a = p.result(&target);
    assert_eq!(a.status, "refused", "{a:?}");
    assert!(a.error.unwrap().contains("empty"));
    assert_eq!(tree(dst.path()).len(), 20);
    p.finish();

    // A missing root: nothing is done, the sync is retried.
    let gone = src.path().join("not mounted");
    let mut p = Pushd::start_in(&gone, &[os(&target)], scratch.path());
    p.header();
    let a = p.result(&target);
    assert_eq!(a.status, "failed", "{a:?}");
    assert!(a.error.unwrap().contains("not there"));
    assert_eq!(tree(dst.path()).len(), 20);
    drop(p);

    // A sentinel that is missing: refused likewise.
    write(src.path(), b"new", b"n");
    let args = [os("--sentinel"), os(".mounted"), os(&target)];
    let mut p = Pushd::start_in(src.path(), &args, scratch.path());
    p.header();
    let a = p.result(&target);
    assert_eq!(a.status, "failed", "{a:?}");
    assert!(a.error.unwrap().contains("sentinel"));
    assert_eq!(tree(dst.path()).len(), 20);
    drop(p);

    // Told so explicitly, an empty source empties the target.
    fs::remove_file(src.path().join("new")).unwrap();
    let args = [
        os("--allow-empty-source"),
        os("--max-delete"),
        os("100%"),
        os(&target),
    ];
    let mut p = Pushd::start_in(src.path(), &args, scratch.path());
    p.header();
    assert_eq!(p.result(&target).status, "ok");
    assert!(tree(dst.path()).is_empty());
    assert_eq!(p.finish(), Some(0));
}

#[test]
fn max_delete_refuses_mass_deletion_and_keeps_the_rest_flowing() {
    let (src, dst, scratch) = (tempdir(), tempdir(), tempdir());
    for i in 0..100 {
        write(src.path(), format!("f{i:03}").as_bytes(), b"data");
    }
    let target = dst.path().display().to_string();
    let mut p = Pushd::start_in(src.path(), &[os(&target)], scratch.path());
    p.header();
    assert_eq!(p.result(&target).status, "ok");

    // 60 of 100 deleted in one batch, with one update: the update lands.
    let mut changes = Vec::new();
    for i in 0..60 {
        let name = format!("f{i:03}");
        fs::remove_file(src.path().join(&name)).unwrap();
        changes.push(change(ChangeOp::Delete, name.as_bytes()));
    }
    write(src.path(), b"f099", b"changed");
    changes.push(change(ChangeOp::Update, b"f099"));
    let seq = p.batch(changes);
    let a = p.applied(&target, seq);
    assert_eq!(
        (a.status.as_str(), a.refused_deletes),
        ("refused", 60),
        "{a:?}"
    );
    assert_eq!(tree(dst.path()).len(), 100);
    assert_eq!(fs::read(dst.path().join("f099")).unwrap(), b"changed");

    // A full sync that would delete them is refused the same way.
    let seq = p.batch(vec![Change {
        dir: true,
        ..change(ChangeOp::Rescan, b".")
    }]);
    let a = p.applied(&target, seq);
    assert_eq!(
        (a.status.as_str(), a.refused_deletes),
        ("refused", 60),
        "{a:?}"
    );
    assert_eq!(tree(dst.path()).len(), 100);
    assert_eq!(p.finish(), Some(0));

    // An absolute limit above the count lets them through.
    let args = [os("--max-delete"), os("60"), os(&target)];
    let mut p = Pushd::start_in(src.path(), &args, scratch.path());
    p.header();
    assert_eq!(p.result(&target).status, "ok");
    assert_same(src.path(), dst.path());
    assert_eq!(p.finish(), Some(0));
}

#[test]
fn a_dead_target_does_not_hold_back_the_others() {
    let mut sshd = Sshd::start();
    sshd.stop();
    let (src, dst, scratch) = (tempdir(), tempdir(), tempdir());
    let dead = format!("127.0.0.1:{}/dead", dst.path().display());
    let live = dst.path().join("live").display().to_string();
    let mut args = ssh_flags(&sshd, scratch.path());
    args.extend([dead.clone().into(), live.clone().into()]);
    let args: Vec<&OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    write(src.path(), b"a", b"a");
    let mut p = Pushd::start_in(src.path(), &args, scratch.path());
    p.header();
    assert_eq!(p.applied(&live, 0).status, "ok");
    for i in 0..5 {
        let name = format!("n{i}");
        write(src.path(), name.as_bytes(), b"x");
        let seq = p.batch(vec![change(ChangeOp::Update, name.as_bytes())]);
        assert_eq!(p.applied(&live, seq).status, "ok");
    }
    assert_same(src.path(), &dst.path().join("live"));
    assert!(!dst.path().join("dead").exists());
    let failed = p
        .out
        .seen
        .iter()
        .any(|r| matches!(r, Record::Applied(a) if a.target == dead && a.status == "failed"));
    assert!(failed, "the dead target reports its failures");
    // At the end of input the dead target gives up: exit 1, not a hang.
    assert_eq!(p.finish(), Some(1));
}

#[test]
fn sshd_killed_during_a_transfer_then_restarted_converges() {
    let mut sshd = Sshd::start();
    let (src, dst, scratch) = (tempdir(), tempdir(), tempdir());
    let target = format!("127.0.0.1:{}", dst.path().display());
    let mut args = ssh_flags(&sshd, scratch.path());
    // Slow enough that the transfer is surely in flight when the link dies.
    args.extend(["--bwlimit".into(), "1000".into(), target.clone().into()]);
    let args: Vec<&OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    write(src.path(), b"small", b"s");
    let mut p = Pushd::start_in(src.path(), &args, scratch.path());
    p.header();
    assert_eq!(p.result(&target).status, "ok");

    write(src.path(), b"big", &vec![1u8; 2 << 20]);
    let seq = p.batch(vec![change(ChangeOp::Update, b"big")]);
    let in_flight = crate::support::wait_until(crate::support::TIMEOUT, || {
        fs::read_dir(dst.path())
            .unwrap()
            .flatten()
            .any(|e| e.file_name().as_bytes().starts_with(b".big."))
    });
    assert!(in_flight, "rsync's temporary file never appeared");
    sshd.stop();
    let failed = p.result(&target);
    assert_eq!(failed.status, "failed", "{failed:?}");
    sshd.restart();
    let done = p.applied(&target, seq);
    assert_eq!(done.status, "ok");
    assert!(done.attempt >= 2, "{done:?}");
    assert_same(src.path(), dst.path());
    assert_eq!(p.finish(), Some(0));
}

#[test]
fn delete_modes_decide_which_transfers_delete() {
    // (mode, extra file removed by the start-up sync, deleted file removed by a batch)
    for (mode, at_startup, while_running) in [
        ("true", true, true),
        ("false", false, false),
        ("startup", true, false),
        ("running", false, true),
    ] {
        let (src, dst, scratch) = (tempdir(), tempdir(), tempdir());
        write(src.path(), b"keep", b"k");
        write(src.path(), b"doomed", b"d");
        write(dst.path(), b"extra", b"e");
        let target = dst.path().display().to_string();
        let args = [os("--delete"), os(mode), os(&target)];
        let mut p = Pushd::start_in(src.path(), &args, scratch.path());
        p.header();
        assert_eq!(p.result(&target).status, "ok");
        assert_eq!(
            !dst.path().join("extra").exists(),
            at_startup,
            "--delete={mode}"
        );
        fs::remove_file(src.path().join("doomed")).unwrap();
        let seq = p.batch(vec![change(ChangeOp::Delete, b"doomed")]);
        p.applied(&target, seq);
        assert_eq!(
            !dst.path().join("doomed").exists(),
            while_running,
            "--delete={mode}"
        );
        assert_eq!(p.finish(), Some(0));
    }
}

#[test]
fn excludes_max_pending_and_no_init() {
    let (src, dst, scratch) = (tempdir(), tempdir(), tempdir());
    write(src.path(), b"a", b"a");
    write(src.path(), b"skip.tmp", b"t");
    let target = dst.path().display().to_string();
    let args = [
        os("--no-init"),
        os("--exclude"),
        os("*.tmp"),
        os("--max-pending"),
        os("3"),
        os("--max-procs"),
        os("1"),
        os(&target),
    ];
    let mut p = Pushd::start_in(src.path(), &args, scratch.path());
    p.header();
    // --no-init: nothing until the first batch, which is applied alone.
    write(src.path(), b"b", b"b");
    let seq = p.batch(vec![change(ChangeOp::Update, b"b")]);
    let a = p.applied(&target, seq);
    assert!(!a.full, "{a:?}");
    assert_eq!(tree(dst.path()).keys().collect::<Vec<_>>(), [b"b"]);
    // More pending changes than --max-pending: one full sync instead.
    let mut changes = Vec::new();
    for name in ["c", "d", "e", "f.tmp", "g"] {
        write(src.path(), name.as_bytes(), b"x");
        changes.push(change(ChangeOp::Update, name.as_bytes()));
    }
    let seq = p.batch(changes);
    let a = p.applied(&target, seq);
    assert!(a.full, "{a:?}");
    let names: Vec<_> = tree(dst.path()).into_keys().collect();
    assert_eq!(names, [&b"a"[..], b"b", b"c", b"d", b"e", b"g"]);
    assert_eq!(p.finish(), Some(0));
}

#[test]
fn systemd_hears_ready_and_each_targets_lag() {
    let notify = crate::support::NotifySocket::new();
    let mut sshd = Sshd::start();
    sshd.stop();
    let (src, dst, scratch) = (tempdir(), tempdir(), tempdir());
    write(src.path(), b"a", b"a");
    let dead = format!("127.0.0.1:{}", dst.path().display());
    let mut args = ssh_flags(&sshd, scratch.path());
    args.push(dead.clone().into());
    let mut cmd = Command::new(bin("pushd"));
    cmd.args(["--retry-min", "50ms", "--retry-max", "400ms"])
        .args(&args)
        .env("NOTIFY_SOCKET", notify.path())
        .current_dir(scratch.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let _run = Running { child };
    notify.wait_for("READY=1");
    let header = Record::Header(Header {
        v: 1,
        stream: "s1".into(),
        root: WirePath::from(src.path()),
        host: "h".into(),
        ts: Timestamp::now(),
        producer: "test/0".into(),
    });
    let batch = Record::Batch(Batch {
        stream: "s1".into(),
        first_seq: 1,
        last_seq: 7,
        root: WirePath::from(src.path()),
        ts: Timestamp::now(),
        changes: vec![change(ChangeOp::Update, b"a")],
    });
    let mut lines = Vec::new();
    header.write_line(&mut lines).unwrap();
    batch.write_line(&mut lines).unwrap();
    stdin.write_all(&lines).unwrap();
    stdin.flush().unwrap();
    let status = notify.wait_for("7 behind");
    assert!(
        status.contains(&format!("STATUS={dead}: 7 behind")),
        "{status}"
    );
}

/// Reads results until `dst` equals `src`; fails if the stream goes quiet first.
fn converges(out: &mut RecordStream, src: &Path, dst: &Path) {
    while tree(src) != tree(dst) {
        if out.next(crate::support::TIMEOUT).is_none() {
            assert_same(src, dst);
        }
    }
}

#[test]
fn watchd_piped_into_pushd_keeps_a_copy() {
    let (src, dst) = (tempdir(), tempdir());
    write(src.path(), b"existing", b"e");
    let mut watchd = Command::new(bin("watchd"))
        .arg(src.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let watch_out = watchd.stdout.take().unwrap();
    let _watchd = Running { child: watchd };
    let mut pushd = Command::new(bin("pushd"))
        .arg(dst.path())
        .stdin(Stdio::from(watch_out))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = RecordStream::new(pushd.stdout.take().unwrap());
    let _pushd = Running { child: pushd };
    out.wait_for(
        "the start-up sync",
        |r| matches!(r, Record::Applied(a) if a.full),
    );
    assert_same(src.path(), dst.path());

    for name in NASTY {
        write(src.path(), name, b"one");
    }
    fs::create_dir_all(src.path().join("a/b/c")).unwrap();
    write(src.path(), b"a/b/c/deep", b"deep");
    converges(&mut out, src.path(), dst.path());

    write(src.path(), NASTY[0], b"changed content");
    fs::rename(src.path().join("a"), src.path().join("renamed a")).unwrap();
    fs::rename(
        join_bytes(src.path(), NASTY[4]),
        src.path().join("valid now"),
    )
    .unwrap();
    converges(&mut out, src.path(), dst.path());
    // The tree can match before the result record is read: look back, then wait.
    let is_rename = |r: &Record| matches!(r, Record::Applied(a) if a.renamed > 0);
    if !out.seen.iter().any(is_rename) {
        out.wait_for("a result with renames done on the target", is_rename);
    }

    fs::remove_dir_all(src.path().join("renamed a")).unwrap();
    fs::remove_file(src.path().join("existing")).unwrap();
    converges(&mut out, src.path(), dst.path());
    assert_nothing_executed(&[src.path(), dst.path(), Path::new("/root")]);
}

#[test]
fn sigterm_and_sigint_stop_cleanly_while_waiting_for_input() {
    for signal in [
        nix::sys::signal::Signal::SIGTERM,
        nix::sys::signal::Signal::SIGINT,
    ] {
        let (src, dst, scratch) = (tempdir(), tempdir(), tempdir());
        write(src.path(), b"a", b"a");
        let target = dst.path().display().to_string();
        let mut p = Pushd::start_in(src.path(), &[os(&target)], scratch.path());
        p.header();
        assert_eq!(p.result(&target).status, "ok");
        p.run.signal(signal);
        assert_eq!(p.run.wait_exit(), Some(0), "{signal}");
    }
}

/// For an rsync whose --delete-missing-args is broken (rsync issue 910),
/// deletions over ssh go through `xargs -0 rm -rf` fed on stdin.
#[test]
fn ssh_deletes_without_delete_missing_args() {
    use syncpipe::apply::{Applier, Guards};
    use syncpipe::plan::Plan;
    use syncpipe::rsync::{RsyncSettings, SshSettings};
    use syncpipe::target::Target;

    let sshd = Sshd::start();
    let (src, dst) = (tempdir(), tempdir());
    write(src.path(), b"stays", b"s");
    for name in NASTY {
        write(dst.path(), name, b"old");
    }
    write(dst.path(), b"dir/deep/f", b"old");
    let target = Target::parse(
        OsStr::new(&format!("127.0.0.1:{}", dst.path().display())),
        Path::new("/"),
    )
    .unwrap();
    let settings = RsyncSettings {
        ssh: SshSettings {
            port: Some(sshd.port()),
            identity: Some(sshd.identity()),
            options: sshd.client_options(),
            connect_timeout: None,
        },
        delete_missing_args_works: false,
        ..RsyncSettings::default()
    };
    let guards = Guards::default();
    let applier = Applier {
        target: &target,
        settings: &settings,
        guards: &guards,
        direct: false,
    };
    let mut changes: Vec<Change> = NASTY.iter().map(|n| change(ChangeOp::Delete, n)).collect();
    changes.push(change(ChangeOp::Delete, b"dir"));
    changes.push(change(ChangeOp::Update, b"stays"));
    let report = applier
        .apply(src.path(), Plan::from_changes(&changes), true, None)
        .unwrap();
    assert!(report.succeeded(), "{report:?}");
    assert_same(src.path(), dst.path());
    assert_nothing_executed(&[dst.path(), Path::new("/root")]);
}

/// The documented pipeline pasted into bash and zsh: `pushd` is a builtin
/// there. `env pushd` always works; contrib/shell/pushd.sh makes the plain
/// spelling work in interactive shells and keeps the builtin for `pushd DIR`.
#[test]
fn documented_pipeline_works_in_bash_and_zsh() {
    let snippet = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/shell/pushd.sh");
    let bin_dir = bin("pushd").parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for shell in ["bash --norc --noprofile", "zsh -f"] {
        let src = tempdir();
        write(src.path(), b"file", b"data");
        let header = Record::Header(Header {
            v: 1,
            stream: "0123".into(),
            root: WirePath::from(src.path()),
            host: "h".into(),
            ts: Timestamp::now(),
            producer: "test/0".into(),
        })
        .to_line();
        let run = |script: &str, interactive: bool| {
            let dst = tempdir();
            let script = script.replace("DST", &dst.path().display().to_string());
            let line = if interactive {
                format!("{shell} -i -c '{script}'")
            } else {
                format!("{shell} -c '{script}'")
            };
            // `script` gives the interactive shell a terminal, as a person has.
            let out = Command::new("script")
                .args(["-qec", &line, "/dev/null"])
                .env("PATH", &path)
                .env("HEADER", &header)
                .env("SNIPPET", &snippet)
                .stdin(Stdio::null())
                .output()
                .unwrap();
            let copied = dst.path().join("file").exists();
            (copied, String::from_utf8_lossy(&out.stdout).into_owned())
        };
        let (copied, _) = run(r#"printf "%s\n" "$HEADER" | pushd DST"#, false);
        assert!(
            !copied,
            "{shell}: the builtin took the pipeline (the known trap)"
        );
        let (copied, out) = run(r#"printf "%s\n" "$HEADER" | env pushd DST"#, false);
        assert!(copied, "{shell}: env pushd: {out}");
        let (copied, out) = run(
            r#". "$SNIPPET"; printf "%s\n" "$HEADER" | pushd DST; pushd /usr >/dev/null; echo "pwd=$PWD""#,
            true,
        );
        assert!(copied, "{shell}: with the snippet: {out}");
        assert!(
            out.contains("pwd=/usr"),
            "{shell}: the builtin still works: {out}"
        );
    }
}

#[test]
fn direct_mode_applies_changes_without_rsync_and_keeps_metadata() {
    let (src, dst, scratch) = (tempdir(), tempdir(), tempdir());
    let target = dst.path().join("copy");
    let args = [os("--direct"), target.as_os_str()];
    let mut p = Pushd::start_in(src.path(), &args, scratch.path());
    every_change_kind(
        &mut p,
        &target.display().to_string(),
        src.path(),
        &target,
        true,
    );
    // Times survive too (tree() compares kinds, modes and content).
    write(src.path(), b"timed", b"t");
    let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
    fs::File::options()
        .write(true)
        .open(src.path().join("timed"))
        .unwrap()
        .set_modified(old)
        .unwrap();
    let as_root = nix::unistd::geteuid().is_root();
    if as_root {
        std::os::unix::fs::chown(src.path().join("timed"), Some(1234), Some(4321)).unwrap();
    }
    let seq = p.batch(vec![change(ChangeOp::Update, b"timed")]);
    let a = p.applied(&target.display().to_string(), seq);
    if as_root {
        use std::os::unix::fs::MetadataExt;
        let meta = fs::metadata(target.join("timed")).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid()),
            (1234, 4321),
            "as root the owner is kept"
        );
    }
    assert_eq!(a.rsync_exit, None, "no rsync ran: {a:?}");
    assert_eq!(a.files, 1);
    let mtime = fs::metadata(target.join("timed"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(mtime, old);
    assert_eq!(p.finish(), Some(0));
}

#[test]
fn a_malformed_line_means_a_full_sync_and_end_deletes_nothing() {
    let (src, dst, scratch) = (tempdir(), tempdir(), tempdir());
    write(src.path(), b"a", b"a");
    let target = dst.path().display().to_string();
    let mut p = Pushd::start_in(src.path(), &[os("--no-init"), os(&target)], scratch.path());
    p.header();
    p.event(EventKind::Create, b"a", None);
    p.applied(&target, 1);
    // Changed behind pushd's back, then a line it cannot read.
    write(src.path(), b"unseen", b"u");
    p.stdin
        .as_mut()
        .unwrap()
        .write_all(b"{\"type\":\"event\",\"seq\":\n")
        .unwrap();
    let a = p.result(&target);
    assert!(a.full && a.status == "ok", "{a:?}");
    assert_same(src.path(), dst.path());
    // The source going away is no reason to delete anything.
    p.send(&Record::End(syncpipe::event::End {
        seq: 9,
        ts: Timestamp::now(),
        reason: "root-unmounted".into(),
    }));
    assert_eq!(p.finish(), Some(0));
    assert_same(src.path(), dst.path());
}

#[test]
fn a_relative_root_is_never_synced() {
    let (src, dst, scratch) = (tempdir(), tempdir(), tempdir());
    // A tree that a relative root would hit, resolved against pushd's cwd.
    write(scratch.path(), b"rel/wrong", b"w");
    write(src.path(), b"right", b"r");
    let target = dst.path().display().to_string();
    let mut p = Pushd::start_in(src.path(), &[os(&target)], scratch.path());
    p.root = PathBuf::from("rel");
    p.header();
    p.batch(vec![change(ChangeOp::Update, b"wrong")]);
    p.root = src.path().to_path_buf();
    p.stream = "second".into();
    p.header();
    let a = p.result(&target);
    assert!(a.full && a.stream == "second", "{a:?}");
    assert_eq!(p.finish(), Some(0));
    assert_same(src.path(), dst.path());
}
