//! pushd's own file system calls (`--direct`, and small batches to a local
//! target as root) when the kernel refuses one of them: the change still
//! lands, the operator is told once, and nothing is left behind.

use std::fs;
use std::path::Path;

use syncpipe::wire::event::ChangeOp;

use super::harness::*;
use crate::support::tempdir;

fn lines_with(log: &Path, needle: &str) -> usize {
    fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .count()
}

/// Entries below `dir` whose name holds `needle`.
fn leftovers(dir: &Path, needle: &str) -> Vec<String> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.contains(needle) {
            out.push(name.clone());
        }
        if e.file_type().unwrap().is_dir() {
            out.extend(leftovers(&e.path(), needle));
        }
    }
    out
}

#[test]
fn in_process_failures_fall_back_to_rsync_warn_once_and_stop_when_they_last() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: the in-process path is taken as root only");
        return;
    }
    let (src, dst, scratch) = (tempdir(), tempdir(), tempdir());
    for i in 0..6 {
        write(src.path(), format!("d/old{i}").as_bytes(), b"old");
    }
    let target = dst.path().join("copy");
    let name = target.display().to_string();
    let log = scratch.path().join("stderr");
    // Owner changes through a descriptor (fchownat AT_EMPTY_PATH, the
    // in-process path's way) are refused, as they are to root in a user
    // namespace for unmapped owners; rsync's chown by name still works.
    let wrapper = refusing("fchownat:4&0x1000:EPERM");
    let mut p = Pushd::start_under(
        &wrapper,
        src.path(),
        &[target.as_os_str()],
        scratch.path(),
        &log,
    );
    p.header();
    assert_eq!(p.result(&name).status, "ok");
    for i in 0..5 {
        write(src.path(), format!("d/new{i}").as_bytes(), b"new");
        fs::remove_file(src.path().join(format!("d/old{i}"))).unwrap();
        let seq = p.batch(vec![
            change(ChangeOp::Update, format!("d/new{i}").as_bytes()),
            change(ChangeOp::Delete, format!("d/old{i}").as_bytes()),
        ]);
        let a = p.applied(&name, seq);
        assert_eq!(a.status, "ok", "{a:?}");
        assert_eq!(a.rsync_exit, Some(0), "rsync applied batch {i}: {a:?}");
        // Every path of the batch, the deletion too.
        assert_same(src.path(), &target);
    }
    assert_eq!(p.finish(), Some(0));
    let failed = lines_with(&log, "applying a batch in-process failed");
    let stopped = lines_with(&log, "stops trying it");
    assert_eq!(
        (failed, stopped),
        (1, 1),
        "one warning for the cause, one for stopping:\n{}",
        fs::read_to_string(&log).unwrap()
    );
    // What failed and where: in the warning and in the stop.
    assert_eq!(lines_with(&log, "copying to"), 2);
    assert_eq!(lines_with(&log, "d/new0: Operation not permitted"), 1);
}

#[test]
fn direct_names_its_copy_itself_when_an_unnamed_one_cannot_be_linked() {
    let (src, dst, scratch) = (tempdir(), tempdir(), tempdir());
    write(src.path(), b"d/f", b"first");
    let target = dst.path().join("copy");
    let name = target.display().to_string();
    let log = scratch.path().join("stderr");
    // No linkat at all: neither AT_EMPTY_PATH nor /proc/self/fd can give
    // an O_TMPFILE file a name (root in a user namespace on an older
    // kernel, no /proc, a strict seccomp profile).
    let wrapper = refusing("linkat:EPERM");
    let args = [os("--direct"), target.as_os_str()];
    let mut p = Pushd::start_under(&wrapper, src.path(), &args, scratch.path(), &log);
    p.header();
    assert_eq!(p.result(&name).status, "ok");
    for i in 0..3 {
        write(src.path(), b"d/f", format!("change {i}").as_bytes());
        write(src.path(), format!("d/new{i}").as_bytes(), b"new");
        let seq = p.batch(vec![
            change(ChangeOp::Update, b"d/f"),
            change(ChangeOp::Update, format!("d/new{i}").as_bytes()),
        ]);
        let a = p.applied(&name, seq);
        assert_eq!((a.status.as_str(), a.rsync_exit), ("ok", None), "{a:?}");
        assert_same(src.path(), &target);
    }
    assert_eq!(p.finish(), Some(0));
    assert_eq!(leftovers(&target, ".syncpipe-"), Vec::<String>::new());
    assert_eq!(
        lines_with(&log, "cannot give an O_TMPFILE file a name"),
        1,
        "said once:\n{}",
        fs::read_to_string(&log).unwrap()
    );
}

#[test]
fn direct_works_where_openat2_is_refused() {
    let (src, dst, scratch) = (tempdir(), tempdir(), tempdir());
    write(src.path(), b"d/e/f", b"first");
    let target = dst.path().join("copy");
    let name = target.display().to_string();
    let log = scratch.path().join("stderr");
    // Docker's seccomp profiles before openat2 was known answered it with
    // EPERM, not ENOSYS: resolving beneath the root walks one O_NOFOLLOW
    // component at a time instead.
    let wrapper = refusing("openat2:EPERM");
    let args = [os("--direct"), target.as_os_str()];
    let mut p = Pushd::start_under(&wrapper, src.path(), &args, scratch.path(), &log);
    p.header();
    assert_eq!(p.result(&name).status, "ok");
    write(src.path(), b"d/e/f", b"second");
    write(src.path(), b"d/e/g", b"new");
    let seq = p.batch(vec![
        change(ChangeOp::Update, b"d/e/f"),
        change(ChangeOp::Update, b"d/e/g"),
    ]);
    let a = p.applied(&name, seq);
    assert_eq!((a.status.as_str(), a.rsync_exit), ("ok", None), "{a:?}");
    assert_same(src.path(), &target);
    assert_eq!(p.finish(), Some(0));
}
