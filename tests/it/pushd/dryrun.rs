//! `pushd --dry-run`: every transfer says path by path what the target
//! would get (`would` records, awkward names byte for byte) and the target,
//! the state file and the exit code are what they would be without a run:
//! untouched, unwritten, the real run's code.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use syncpipe::wire::event::{Applied, ChangeOp, Record, Would};

use super::harness::{change, moved, os, write, Pushd, NASTY};
use crate::support::{join_bytes, tempdir};

/// What a change to an entry would alter: kind and mode, inode, size,
/// mtime (seconds, nanoseconds), content.
type Seen = (u32, u64, u64, i64, i64, Vec<u8>);

/// Every entry below `root`, and the root, as [`Seen`].
fn snapshot(root: &Path) -> BTreeMap<Vec<u8>, Seen> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<Vec<u8>, Seen>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            let content = if meta.is_file() {
                fs::read(&path).unwrap()
            } else {
                Vec::new()
            };
            let rel = path.strip_prefix(root).unwrap();
            out.insert(
                rel.as_os_str().as_encoded_bytes().to_vec(),
                (
                    meta.mode(),
                    meta.ino(),
                    meta.size(),
                    meta.mtime(),
                    meta.mtime_nsec(),
                    content,
                ),
            );
            if meta.is_dir() {
                walk(root, &path, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    let meta = fs::metadata(root).unwrap();
    out.insert(
        b".".to_vec(),
        (
            meta.mode(),
            meta.ino(),
            0,
            meta.mtime(),
            meta.mtime_nsec(),
            Vec::new(),
        ),
    );
    walk(root, root, &mut out);
    out
}

/// The `would` records seen since `from`, and the index to read on from.
fn woulds(p: &Pushd, from: usize) -> Vec<Would> {
    p.out.seen[from..]
        .iter()
        .filter_map(|r| match r {
            Record::Other { kind, line } if kind == "would" => {
                Some(serde_json::from_slice(line).expect("a would record parses"))
            }
            _ => None,
        })
        .collect()
}

fn has(ws: &[Would], op: &str, path: &[u8]) -> bool {
    ws.iter().any(|w| w.op == op && w.path.as_bytes() == path)
}

fn result(p: &mut Pushd, target: &str) -> (Applied, Vec<Would>) {
    let from = p.out.seen.len();
    let a = p.result(target);
    (a, woulds(p, from))
}

fn dry_run_changes_nothing_and_names_every_path(extra: &[&str]) {
    let (src, dst, scratch) = (tempdir(), tempdir(), tempdir());
    for (i, name) in NASTY.iter().enumerate() {
        write(
            src.path(),
            name,
            format!("new content {i}, longer than before").as_bytes(),
        );
        write(dst.path(), name, format!("old {i}").as_bytes());
    }
    write(dst.path(), b"stale/inner", b"only on the target");
    write(dst.path(), b"old name", b"moved on the source");
    write(src.path(), b"new name", b"moved on the source");
    write(src.path(), b"only-src/deep file", b"new");
    let before = snapshot(dst.path());
    let state = scratch.path().join("pushd.state");
    let target = dst.path().display().to_string();
    let mut args: Vec<&OsStr> = vec![
        os("--dry-run"),
        os("--max-delete"),
        os("2"),
        os("--state"),
        state.as_os_str(),
    ];
    args.extend(extra.iter().map(|e| os(e)));
    args.push(os(&target));
    let mut p = Pushd::start_in(src.path(), &args, scratch.path());

    // The start-up sync: what differs, what would go.
    p.header();
    let (full, ws) = result(&mut p, &target);
    assert!(full.full && full.dry_run && full.status == "ok", "{full:?}");
    for name in NASTY {
        assert!(
            has(&ws, "send", name),
            "no send of {:?}: {ws:?}",
            String::from_utf8_lossy(name)
        );
    }
    for gone in [&b"stale"[..], b"stale/inner", b"old name"] {
        assert!(has(&ws, "delete", gone), "no delete of {gone:?}: {ws:?}");
    }
    assert!(
        has(&ws, "create", b"only-src") && has(&ws, "send", b"only-src/deep file"),
        "{ws:?}"
    );
    assert!(
        ws.iter()
            .all(|w| w.target == target && w.stream == p.stream),
        "{ws:?}"
    );
    assert_eq!(full.files, NASTY.len() as u64 + 2, "{full:?}");

    // A batch: a rename (the target has the old name) and a deletion.
    fs::remove_file(join_bytes(src.path(), NASTY[1])).unwrap();
    let seq = p.batch(vec![
        moved(b"old name", b"new name", false),
        change(ChangeOp::Delete, NASTY[1]),
    ]);
    let (batch, ws) = result(&mut p, &target);
    assert!(
        batch.last_seq == seq && batch.status == "ok" && batch.dry_run,
        "{batch:?}"
    );
    let rename = ws
        .iter()
        .find(|w| w.op == "rename")
        .unwrap_or_else(|| panic!("{ws:?}"));
    assert_eq!(
        (
            rename.path.as_bytes(),
            rename.to.as_ref().map(|t| t.as_bytes())
        ),
        (&b"old name"[..], Some(&b"new name"[..]))
    );
    assert!(has(&ws, "delete", NASTY[1]), "{ws:?}");
    assert_eq!(batch.renamed, 1, "{batch:?}");

    // More deletions than --max-delete: what the guard would hold.
    let mut deletes = Vec::new();
    for name in &NASTY[2..5] {
        fs::remove_file(join_bytes(src.path(), name)).unwrap();
        deletes.push(change(ChangeOp::Delete, name));
    }
    p.batch(deletes);
    let (held, ws) = result(&mut p, &target);
    assert!(
        held.status == "held" && held.dry_run && held.refused_deletes == 3,
        "{held:?}"
    );
    for name in &NASTY[2..5] {
        assert!(
            has(&ws, "hold", name),
            "no hold of {:?}: {ws:?}",
            String::from_utf8_lossy(name)
        );
        assert!(!has(&ws, "delete", name), "{ws:?}");
    }

    // A real run ending with held deletions exits 12: so does the dry run.
    assert_eq!(p.finish(), Some(12));
    assert_eq!(
        snapshot(dst.path()),
        before,
        "the dry run changed the target"
    );
    assert!(!state.exists(), "the dry run wrote --state");
}

#[test]
fn dry_run_leaves_an_rsync_target_untouched_and_names_its_paths() {
    dry_run_changes_nothing_and_names_every_path(&[]);
}

#[test]
fn dry_run_leaves_a_direct_target_untouched_and_names_its_paths() {
    dry_run_changes_nothing_and_names_every_path(&["--direct"]);
}

#[test]
fn dry_run_of_a_missing_target_root_creates_nothing() {
    let (src, scratch) = (tempdir(), tempdir());
    write(src.path(), b"a/b", b"x");
    let dst = scratch.path().join("not yet");
    let target = dst.display().to_string();
    let mut p = Pushd::start_in(src.path(), &[os("-n"), os(&target)], scratch.path());
    p.header();
    let (full, ws) = result(&mut p, &target);
    assert!(full.status == "ok" && full.dry_run, "{full:?}");
    assert!(has(&ws, "send", b"a/b"), "{ws:?}");
    assert_eq!(p.finish(), Some(0));
    assert!(!dst.exists(), "the dry run created the target root");
}

#[test]
fn dry_run_over_ssh_names_the_paths_and_changes_nothing() {
    let sshd = crate::support::sshd::Sshd::start();
    let (src, dst, scratch) = (tempdir(), tempdir(), tempdir());
    for (i, name) in NASTY.iter().enumerate() {
        write(
            src.path(),
            name,
            format!("new content {i}, longer").as_bytes(),
        );
    }
    write(dst.path(), NASTY[0], b"old");
    write(dst.path(), b"stale", b"only on the target");
    let before = snapshot(dst.path());
    let target = format!("127.0.0.1:{}", dst.path().display());
    let mut args = super::harness::ssh_flags(&sshd, scratch.path());
    args.extend(["-n".into(), target.clone().into()]);
    let args: Vec<&OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let mut p = Pushd::start_in(src.path(), &args, scratch.path());
    p.header();
    let (full, ws) = result(&mut p, &target);
    assert!(full.status == "ok" && full.dry_run, "{full:?}");
    for name in NASTY {
        assert!(
            has(&ws, "send", name),
            "no send of {:?}: {ws:?}",
            String::from_utf8_lossy(name)
        );
    }
    assert!(has(&ws, "delete", b"stale"), "{ws:?}");
    // rsync says what it sends from this side.
    assert!(
        ws.iter()
            .any(|w| w.itemize.as_deref().is_some_and(|i| i.starts_with("<f"))),
        "{ws:?}"
    );
    fs::remove_file(join_bytes(src.path(), NASTY[0])).unwrap();
    let seq = p.batch(vec![change(ChangeOp::Delete, NASTY[0])]);
    let (batch, ws) = result(&mut p, &target);
    assert!(batch.last_seq == seq && batch.status == "ok", "{batch:?}");
    assert!(has(&ws, "delete", NASTY[0]), "{ws:?}");
    assert_eq!(p.finish(), Some(0));
    assert_eq!(
        snapshot(dst.path()),
        before,
        "the dry run changed the target"
    );
}

/// `--rsync-binary`: the given program is what runs (lsyncd's rsync.binary).
#[test]
fn rsync_binary_is_the_program_pushd_runs() {
    let (src, dst, scratch) = (tempdir(), tempdir(), tempdir());
    write(src.path(), b"f", b"data");
    let calls = scratch.path().join("calls");
    let wrapper = scratch.path().join("my rsync");
    fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho \"called with $#\" >> '{}'\nexec rsync \"$@\"\n",
            calls.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).unwrap();
    let target = dst.path().display().to_string();
    let args = [os("--rsync-binary"), wrapper.as_os_str(), os(&target)];
    let mut p = Pushd::start_in(src.path(), &args, scratch.path());
    p.header();
    assert_eq!(p.result(&target).status, "ok");
    assert_eq!(fs::read(dst.path().join("f")).unwrap(), b"data");
    let before = fs::read_to_string(&calls).unwrap().lines().count();
    // The start-up probe and the full sync at least.
    assert!(before >= 2, "{before}");
    write(src.path(), b"g", b"more");
    let seq = p.batch(vec![change(ChangeOp::Update, b"g")]);
    p.applied(&target, seq);
    assert!(fs::read_to_string(&calls).unwrap().lines().count() > before);
    assert_eq!(p.finish(), Some(0));
}

#[test]
fn a_missing_rsync_binary_is_named() {
    let scratch = tempdir();
    let out = std::process::Command::new(crate::support::bin("pushd"))
        .args(["--rsync-binary", "/nonexistent/rsync", "dst"])
        .current_dir(scratch.path())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("/nonexistent/rsync (--rsync-binary)"), "{err}");
}
