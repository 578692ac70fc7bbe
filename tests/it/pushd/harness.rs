//! What the pushd tests share: a running pushd fed records on stdin, trees
//! compared entry by entry, awkward names, and one run through every change kind.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};

use syncpipe::wire::event::{
    Applied, Batch, Change, ChangeOp, Event, EventKind, Header, Record, Timestamp,
};
use syncpipe::wire::path::WirePath;

use crate::support::sshd::Sshd;
use crate::support::{bin, join_bytes, Node, RecordStream, Running};

/// Names that break naive code: spaces, newlines, leading dashes, invalid
/// UTF-8, shell syntax, quotes.
pub const NASTY: &[&[u8]] = &[
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
pub struct Pushd {
    pub run: Running,
    pub stdin: Option<ChildStdin>,
    pub out: RecordStream,
    pub stream: String,
    pub seq: u64,
    pub root: PathBuf,
}

impl Pushd {
    pub fn start_in(root: &Path, args: &[&OsStr], cwd: &Path) -> Pushd {
        let mut all: Vec<&OsStr> = ["--retry-min", "50ms", "--retry-max", "400ms"]
            .into_iter()
            .map(OsStr::new)
            .collect();
        all.extend_from_slice(args);
        Self::start_with(root, &all, cwd)
    }

    /// Without the short retry delays `start_in` adds.
    pub fn start_with(root: &Path, args: &[&OsStr], cwd: &Path) -> Pushd {
        Self::start_env(root, args, cwd, &[])
    }

    /// Like [`start_with`](Self::start_with), with extra environment variables.
    pub fn start_env(root: &Path, args: &[&OsStr], cwd: &Path, env: &[(&str, &OsStr)]) -> Pushd {
        Self::spawn(&[], root, args, cwd, env, Stdio::inherit())
    }

    /// Like [`start_in`](Self::start_in), with stderr written to `log`.
    pub fn start_with_stderr(root: &Path, args: &[&OsStr], cwd: &Path, log: &Path) -> Pushd {
        let file = fs::File::create(log).unwrap();
        Self::start_with_stdio(root, args, cwd, Stdio::from(file))
    }

    /// Like [`start_in`](Self::start_in), with stderr going to `stderr`
    /// (a terminal, say).
    pub fn start_with_stdio(root: &Path, args: &[&OsStr], cwd: &Path, stderr: Stdio) -> Pushd {
        let mut all: Vec<&OsStr> = ["--retry-min", "50ms", "--retry-max", "400ms"]
            .into_iter()
            .map(OsStr::new)
            .collect();
        all.extend_from_slice(args);
        Self::spawn(&[], root, &all, cwd, &[], stderr)
    }

    /// Like [`start_with_stderr`](Self::start_with_stderr), with pushd
    /// started by `wrapper` (its program and arguments, pushd's path and
    /// arguments follow), e.g. [`refusing`].
    pub fn start_under(
        wrapper: &[OsString],
        root: &Path,
        args: &[&OsStr],
        cwd: &Path,
        log: &Path,
    ) -> Pushd {
        let mut all: Vec<&OsStr> = ["--retry-min", "50ms", "--retry-max", "400ms"]
            .into_iter()
            .map(OsStr::new)
            .collect();
        all.extend_from_slice(args);
        let stderr = Stdio::from(fs::File::create(log).unwrap());
        Self::spawn(wrapper, root, &all, cwd, &[], stderr)
    }

    fn spawn(
        wrapper: &[OsString],
        root: &Path,
        args: &[&OsStr],
        cwd: &Path,
        env: &[(&str, &OsStr)],
        stderr: Stdio,
    ) -> Pushd {
        let mut cmd = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut cmd = Command::new(program);
                cmd.args(rest).arg(bin("pushd"));
                cmd
            }
            None => Command::new(bin("pushd")),
        };
        cmd.envs(env.iter().copied())
            .stderr(stderr)
            .arg("-v")
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
            stream: syncpipe::wire::event::new_stream_id().unwrap(),
            seq: 0,
            root: root.to_path_buf(),
        }
    }

    pub fn send(&mut self, record: &Record) {
        let mut line = Vec::new();
        record.write_line(&mut line).unwrap();
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(&line).unwrap();
        stdin.flush().unwrap();
    }

    pub fn header(&mut self) {
        let h = Record::Header(Header {
            v: 1,
            stream: self.stream.clone(),
            root: WirePath::from(self.root.as_path()),
            host: "test".into(),
            ts: Timestamp::now(),
            producer: "test/0".into(),
            backend: None,
        });
        self.send(&h);
    }

    /// Sends one batch; returns its last seq.
    pub fn batch(&mut self, changes: Vec<Change>) -> u64 {
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

    pub fn event(&mut self, kind: EventKind, path: &[u8], from: Option<&[u8]>) -> u64 {
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
    pub fn applied(&mut self, target: &str, seq: u64) -> Applied {
        let r = self.out.wait_for(&format!("{target} applied up to {seq}"), |r| {
            matches!(r, Record::Applied(a) if a.target == target && a.last_seq >= seq && a.status != "failed")
        });
        let Record::Applied(a) = r else {
            unreachable!()
        };
        a
    }

    /// The next result for `target` whatever its status.
    pub fn result(&mut self, target: &str) -> Applied {
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
    pub fn finish(&mut self) -> Option<i32> {
        self.stdin = None;
        self.run.wait_exit()
    }
}

pub fn change(op: ChangeOp, path: &[u8]) -> Change {
    Change {
        op,
        path: WirePath::from_bytes(path),
        dir: false,
        from: None,
    }
}

pub fn moved(from: &[u8], to: &[u8], dir: bool) -> Change {
    Change {
        op: ChangeOp::Move,
        path: WirePath::from_bytes(to),
        dir,
        from: Some(WirePath::from_bytes(from)),
    }
}

/// Every entry below `root`: relative path -> (kind and mode, content),
/// a view of the suite's one [`support::tree`](crate::support::tree).
pub fn tree(root: &Path) -> BTreeMap<Vec<u8>, (String, Vec<u8>)> {
    crate::support::tree(root)
        .into_iter()
        .map(|(path, node)| {
            let seen = match node {
                Node::Dir(mode) => (format!("dir {mode:o}"), Vec::new()),
                Node::Link(to) => ("link".into(), to),
                Node::File(content, mode) => (format!("file {mode:o}"), content),
            };
            (path, seen)
        })
        .collect()
}

pub fn assert_same(src: &Path, dst: &Path) {
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

pub fn write(root: &Path, rel: &[u8], content: &[u8]) {
    let path = join_bytes(root, rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

pub fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// Runs every change kind through `p` (already started, header not sent)
/// and checks after each step that `dst` equals `src`. `renames` says
/// whether the target can rename in place.
pub fn every_change_kind(p: &mut Pushd, target: &str, src: &Path, dst: &Path, renames: bool) {
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

pub fn assert_nothing_executed(dirs: &[&Path]) {
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

/// pushd's ssh flags for `sshd`, with the key copied to a path that needs
/// quoting in rsync's `-e` (a space and a quote).
pub fn ssh_flags(sshd: &Sshd, scratch: &Path) -> Vec<std::ffi::OsString> {
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

/// Reads results until `dst` equals `src`; fails if the stream goes quiet first.
pub fn converges(out: &mut RecordStream, src: &Path, dst: &Path) {
    while tree(src) != tree(dst) {
        if out.next(crate::support::TIMEOUT).is_none() {
            assert_same(src, dst);
        }
    }
}

/// A wrapper for [`Pushd::start_under`]: the kernel refuses the system
/// calls `rules` name for pushd and its children (a seccomp filter loaded
/// through libseccomp, as a container runtime's profile would), e.g.
/// `linkat:EPERM`, or `fchownat:4&0x1000:EPERM` for calls whose argument 4
/// has those bits set. Rules are comma-separated.
pub fn refusing(rules: &str) -> Vec<OsString> {
    const SCRIPT: &str = r#"
import ctypes, errno, os, sys
lib = ctypes.CDLL("libseccomp.so.2")
lib.seccomp_init.restype = ctypes.c_void_p
ctx = ctypes.c_void_p(lib.seccomp_init(ctypes.c_uint32(0x7FFF0000)))  # allow
class Cmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                ("a", ctypes.c_uint64), ("b", ctypes.c_uint64)]
for rule in sys.argv[1].split(","):
    parts = rule.split(":")
    nr = lib.seccomp_syscall_resolve_name(parts[0].encode())
    action = ctypes.c_uint32(0x00050000 | getattr(errno, parts[-1]))  # errno
    if len(parts) == 3:
        arg, mask = parts[1].split("&")
        cmp = Cmp(int(arg), 7, int(mask, 0), int(mask, 0))  # masked eq
        rc = lib.seccomp_rule_add_array(ctx, action, nr, 1, ctypes.byref(cmp))
    else:
        rc = lib.seccomp_rule_add_array(ctx, action, nr, 0, None)
    assert rc == 0, (rule, rc)
assert lib.seccomp_load(ctx) == 0
os.execv(sys.argv[2], sys.argv[2:])
"#;
    ["/usr/bin/python3", "-c", SCRIPT, rules]
        .map(OsString::from)
        .to_vec()
}
