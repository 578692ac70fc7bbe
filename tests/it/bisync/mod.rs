//! bisync on real directories: the rules end to end, the guards, the
//! records, and names no shell would survive.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// bisync's exit codes, from the one table (lib/cli/exit.rs). `SYNCED` (9) is
/// what [`Pair::command`] runs get, as they pass `--exit-changes` to tell
/// "changes made" from "in sync"; without it a sync with changes exits 0.
pub const SYNCED: i32 = syncpipe::cli::exit::Code::Synced as i32;
pub const CONFLICTS: i32 = syncpipe::cli::exit::Code::Conflicts as i32;
pub const REFUSED: i32 = syncpipe::cli::exit::Code::Refused as i32;

use crate::support::{bin, join_bytes, tempdir, tree, Node};

pub struct Pair {
    pub dir: tempfile::TempDir,
    pub a: PathBuf,
    pub b: PathBuf,
    pub state: PathBuf,
}

impl Pair {
    pub fn new() -> Pair {
        let dir = tempdir();
        let (a, b, state) = (
            dir.path().join("a"),
            dir.path().join("b"),
            dir.path().join("state"),
        );
        fs::create_dir(&a).unwrap();
        fs::create_dir(&b).unwrap();
        Pair { dir, a, b, state }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin("bisync"));
        cmd.arg("--state-dir")
            .arg(&self.state)
            .arg("--exit-changes")
            .args(args);
        cmd
    }

    /// Runs `bisync ARGS A B`; returns the exit code and output.
    pub fn sync(&self, args: &[&str]) -> (i32, String, String) {
        let out = self
            .command(args)
            .arg(&self.a)
            .arg(&self.b)
            .output()
            .expect("running bisync");
        result(out)
    }
}

pub fn result(out: Output) -> (i32, String, String) {
    (
        out.status.code().expect("bisync exited by itself"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write(root: &Path, rel: &[u8], data: &[u8]) {
    let path = join_bytes(root, rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, data).unwrap();
}

fn names(t: &BTreeMap<Vec<u8>, Node>) -> Vec<String> {
    t.keys()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect()
}

const WEIRD: &[&[u8]] = &[
    b"with space",
    b"new\nline",
    b"-leading-dash",
    b"$(touch pwned)",
    b"bad \xff\xfe utf8",
    b"quote'and\"double",
];

/// Success is 0 for cron and `&&`: a sync that made changes exits 0 unless
/// `--exit-changes` asks for 9; the summary and `--json` say what happened.
#[test]
fn a_sync_with_changes_exits_0_unless_asked() {
    let p = Pair::new();
    write(&p.a, b"f", b"one");
    let sync = |extra: &[&str]| {
        let mut cmd = Command::new(bin("bisync"));
        cmd.arg("--state-dir").arg(&p.state).args(extra);
        result(cmd.arg(&p.a).arg(&p.b).output().unwrap())
    };
    let (code, out, err) = sync(&["--json"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(r#""synced""#),
        "--json names the outcome: {out}"
    );
    assert_eq!(tree(&p.a), tree(&p.b));
    write(&p.a, b"f", b"two, longer");
    let (code, _, err) = sync(&["--exit-changes"]);
    assert_eq!(code, SYNCED, "{err}");
    let (code, _, err) = sync(&["--exit-changes"]);
    assert_eq!(code, 0, "in sync: {err}");
}

#[test]
fn changes_on_either_side_reach_the_other() {
    let p = Pair::new();
    write(&p.a, b"docs/readme", b"hello");
    write(&p.b, b"only-b", b"from b");
    for name in WEIRD {
        let mut rel = b"weird/".to_vec();
        rel.extend_from_slice(name);
        write(&p.a, &rel, name);
    }
    fs::set_permissions(p.a.join("docs/readme"), fs::Permissions::from_mode(0o600)).unwrap();
    symlink("../docs/readme", p.a.join("weird/link")).unwrap();
    let (code, _, err) = p.sync(&[]);
    assert_eq!(code, SYNCED, "first sync copies: {err}");
    assert_eq!(tree(&p.a), tree(&p.b));
    assert!(tree(&p.b).contains_key(&b"weird/bad \xff\xfe utf8"[..]));
    assert_eq!(
        tree(&p.b)[&b"weird/link"[..]],
        Node::Link(b"../docs/readme".to_vec())
    );
    assert_eq!(
        tree(&p.b)[&b"docs/readme"[..]],
        Node::File(b"hello".to_vec(), 0o600)
    );
    let (code, _, _) = p.sync(&[]);
    assert_eq!(code, 0, "nothing to do the second time");

    // Edit on a, delete on b, rename on a, chmod on b, new dir on b.
    write(&p.a, b"docs/readme", b"hello again");
    fs::remove_file(p.b.join("only-b")).unwrap();
    fs::rename(
        join_bytes(&p.a, b"weird/new\nline"),
        join_bytes(&p.a, b"weird/renamed\nline"),
    )
    .unwrap();
    fs::set_permissions(
        join_bytes(&p.b, b"weird/with space"),
        fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    write(&p.b, b"fresh/deep/file", b"deep");
    let (code, out, err) = p.sync(&["--json"]);
    assert_eq!(code, SYNCED, "{out}{err}");
    assert_eq!(tree(&p.a), tree(&p.b));
    let t = tree(&p.a);
    assert!(!t.contains_key(&b"only-b"[..]));
    assert_eq!(
        t[&b"docs/readme"[..]],
        Node::File(b"hello again".to_vec(), 0o600)
    );
    assert_eq!(
        t[&b"weird/with space"[..]],
        Node::File(b"with space".to_vec(), 0o640)
    );
    assert!(t.contains_key(&b"fresh/deep/file"[..]));
    // The rename travelled as a rename, not as a copy and a delete.
    assert!(
        out.lines().any(|l| l.contains(r#""op":"rename""#)
            && l.contains(r#""path":"weird/new\nline""#)
            && l.contains(r#""status":"ok""#)),
        "{out}"
    );
    assert!(out
        .lines()
        .last()
        .unwrap()
        .contains(r#""type":"bisync_summary""#));
}

#[test]
fn conflicts_keep_both_versions_or_follow_prefer() {
    let p = Pair::new();
    write(&p.a, b"f", b"base");
    write(&p.a, b"g", b"base");
    assert_eq!(p.sync(&[]).0, SYNCED);
    write(&p.a, b"f", b"from a");
    write(&p.b, b"f", b"from b, newer");
    let (code, _, err) = p.sync(&[]);
    assert_eq!(code, CONFLICTS, "conflicts left: {err}");
    assert!(err.contains("conflict: f"), "{err}");
    let t = tree(&p.a);
    assert_eq!(t, tree(&p.b));
    let versions: Vec<&Node> = t
        .iter()
        .filter(|(k, _)| k.starts_with(b"f"))
        .map(|(_, v)| v)
        .collect();
    assert_eq!(versions.len(), 2, "{:?}", names(&t));
    let copy = names(&t)
        .into_iter()
        .find(|n| n.starts_with("f.conflict-"))
        .expect("a conflict copy");
    assert!(copy.len() > "f.conflict-".len() + 17, "{copy}");

    write(&p.a, b"g", b"a wins");
    write(&p.b, b"g", b"b loses");
    let (code, _, _) = p.sync(&["--prefer", "a"]);
    assert_eq!(code, SYNCED, "resolved conflicts are no conflicts left");
    assert_eq!(fs::read(p.b.join("g")).unwrap(), b"a wins");
    assert_eq!(tree(&p.a), tree(&p.b));

    // Modified on b, deleted on a: the modification wins.
    fs::remove_file(p.a.join("g")).unwrap();
    write(&p.b, b"g", b"kept");
    assert_eq!(p.sync(&[]).0, SYNCED);
    assert_eq!(fs::read(p.a.join("g")).unwrap(), b"kept");
}

#[test]
fn symlinks_are_never_followed() {
    let p = Pair::new();
    let outside = p.dir.path().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("secret"), b"s").unwrap();
    symlink(&outside, p.a.join("out")).unwrap();
    assert_eq!(p.sync(&[]).0, SYNCED);
    assert_eq!(
        tree(&p.b)[&b"out"[..]],
        Node::Link(outside.as_os_str().as_bytes().to_vec())
    );
    // b's link is a link: nothing was written through it, nothing listed.
    assert_eq!(names(&tree(&p.b)), ["out"]);
    assert_eq!(names(&tree(&outside)), ["secret"]);
}

#[test]
fn guards_stop_before_anything_changes() {
    let p = Pair::new();
    for i in 0..6 {
        write(&p.a, format!("f{i}").as_bytes(), b"x");
    }
    assert_eq!(p.sync(&[]).0, SYNCED);
    let before = tree(&p.a);

    // b emptied (an unmounted disk): refused, a untouched.
    for i in 0..6 {
        fs::remove_file(p.b.join(format!("f{i}"))).unwrap();
    }
    let (code, _, err) = p.sync(&[]);
    assert_eq!(code, REFUSED, "{err}");
    assert!(err.contains("empty"), "{err}");
    assert_eq!(tree(&p.a), before);

    // b missing altogether: exit 3.
    fs::remove_dir(&p.b).unwrap();
    let (code, _, err) = p.sync(&[]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains(&*p.b.to_string_lossy()), "{err}");
    assert_eq!(tree(&p.a), before);

    // Four of six deleted: over the default 50%.
    fs::create_dir(&p.b).unwrap();
    for i in 4..6 {
        write(&p.b, format!("f{i}").as_bytes(), b"x");
    }
    let (code, _, err) = p.sync(&[]);
    assert_eq!(code, REFUSED, "{err}");
    assert!(err.contains("--max-delete"), "{err}");
    assert_eq!(tree(&p.a), before);
    let (code, _, err) = p.sync(&["--max-delete", "4"]);
    assert_eq!(code, SYNCED, "{err}");
    assert_eq!(names(&tree(&p.a)), ["f4", "f5"]);
}

#[test]
fn a_damaged_archive_means_a_first_sync_that_deletes_nothing() {
    let p = Pair::new();
    write(&p.a, b"x", b"1");
    write(&p.a, b"y", b"2");
    assert_eq!(p.sync(&[]).0, SYNCED);
    let archive = fs::read_dir(&p.state)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension() == Some(OsStr::new("archive")))
        .expect("an archive in the state directory");
    let mut bytes = fs::read(&archive).unwrap();
    let len = bytes.len();
    bytes.truncate(len - 10);
    fs::write(&archive, bytes).unwrap();
    fs::remove_file(p.b.join("x")).unwrap();
    let (code, _, err) = p.sync(&[]);
    assert!(err.contains("damaged"), "{err}");
    assert_eq!(code, SYNCED, "{err}");
    // The delete did not propagate: x came back to b.
    assert_eq!(fs::read(p.b.join("x")).unwrap(), b"1");
    assert_eq!(p.sync(&[]).0, 0, "the rewritten archive is good");
}

#[test]
fn dry_run_changes_nothing_and_json_lists_the_plan() {
    let p = Pair::new();
    write(&p.a, b"x", b"1");
    let (code, out, _) = p.sync(&["--dry-run"]);
    assert_eq!(code, SYNCED);
    assert!(out.contains("copy      a -> b  x"), "{out}");
    assert!(!p.b.join("x").exists());
    let (code, out, _) = p.sync(&["--dry-run", "--json"]);
    assert_eq!(code, SYNCED);
    let records: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(records[0]["type"], "bisync_action");
    assert_eq!(records[0]["status"], "planned");
    assert_eq!(records[0]["from"], "a");
    assert_eq!(records[1]["type"], "bisync_summary");
    assert_eq!(records[1]["dry_run"], true);
    assert!(!p.b.join("x").exists());
    assert_eq!(
        fs::read_dir(&p.state)
            .unwrap()
            .filter(|e| { e.as_ref().unwrap().path().extension() == Some(OsStr::new("archive")) })
            .count(),
        0,
        "a dry run writes no archive"
    );
}

#[test]
fn excludes_leave_paths_alone_and_one_run_per_pair() {
    let p = Pair::new();
    write(&p.a, b"keep", b"k");
    write(&p.a, b"cache/big", b"c");
    write(&p.a, b"x.tmp", b"t");
    let (code, _, _) = p.sync(&["--exclude", "*.tmp", "--exclude", "cache/"]);
    assert_eq!(code, SYNCED);
    assert_eq!(names(&tree(&p.b)), ["keep"]);

    // A second bisync on the same pair waits for nobody: it fails at once.
    let store = fs::read_dir(&p.state)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension() == Some(OsStr::new("lock")))
        .unwrap();
    let held = fs::File::open(&store).unwrap();
    let lock = nix::fcntl::Flock::lock(held, nix::fcntl::FlockArg::LockExclusive).unwrap();
    let (code, _, err) = p.sync(&[]);
    assert_eq!(code, 1);
    assert!(err.contains("another bisync is running"), "{err}");
    drop(lock);
    assert_eq!(p.sync(&["--exclude", "*.tmp", "--exclude", "cache/"]).0, 0);
}

mod ssh;

mod churn;
mod kill;

mod watch;

#[test]
fn checksum_sees_content_that_fastcheck_cannot_and_root_keeps_owners() {
    let p = Pair::new();
    write(&p.a, b"same-size", b"aaaa");
    write(&p.a, b"owned", b"o");
    let root = nix::unistd::geteuid().is_root();
    if root {
        std::os::unix::fs::chown(p.a.join("owned"), Some(1234), Some(4321)).unwrap();
    }
    assert_eq!(p.sync(&["--checksum"]).0, SYNCED);
    if root {
        let meta = fs::metadata(p.b.join("owned")).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!((meta.uid(), meta.gid()), (1234, 4321), "owner kept as root");
    }
    // Same size, mtime put back, and the inode kept: fastcheck sees nothing.
    let path = p.a.join("same-size");
    let mtime = fs::metadata(&path).unwrap().modified().unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"bbbb"))
        .unwrap();
    fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    assert_eq!(p.sync(&[]).0, 0, "fastcheck: unchanged");
    assert_eq!(fs::read(p.b.join("same-size")).unwrap(), b"aaaa");
    let (code, _, err) = p.sync(&["--checksum"]);
    assert_eq!(code, SYNCED, "{err}");
    assert_eq!(fs::read(p.b.join("same-size")).unwrap(), b"bbbb");
    assert_eq!(p.sync(&["--checksum"]).0, 0);

    // Synced without --checksum, the archive has no hash of the new file:
    // --checksum cannot tell which side changed, so both versions stay.
    write(&p.a, b"later", b"1111");
    assert_eq!(p.sync(&[]).0, SYNCED);
    let mtime = fs::metadata(p.b.join("later")).unwrap().modified().unwrap();
    fs::write(p.b.join("later"), b"2222").unwrap();
    fs::File::options()
        .write(true)
        .open(p.b.join("later"))
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let (code, _, err) = p.sync(&["--checksum"]);
    assert_eq!(code, CONFLICTS, "{err}");
    assert_eq!(tree(&p.a), tree(&p.b));
    assert_eq!(
        names(&tree(&p.a))
            .iter()
            .filter(|n| n.starts_with("later"))
            .count(),
        2
    );
}

mod scenarios;
