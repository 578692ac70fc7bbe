//! What keeps a bad source from wiping a replica, and which transfers delete.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use syncpipe::wire::event::{Change, ChangeOp};

use super::harness::*;
use crate::support::rsyncd::{Module, Rsyncd};
use crate::support::sshd::Sshd;
use crate::support::tempdir;

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
    assert_eq!(a.status, "held", "{a:?}");
    assert!(a.error.unwrap().contains("empty"));
    assert_eq!(tree(dst.path()).len(), 20);
    assert_eq!(p.finish(), Some(12), "input ended with deletions held");

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
        ("held", 60),
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
        ("held", 60),
        "{a:?}"
    );
    assert_eq!(tree(dst.path()).len(), 100);
    assert_eq!(p.finish(), Some(12), "input ended with deletions held");

    // An absolute limit above the count lets them through.
    let args = [os("--max-delete"), os("60"), os(&target)];
    let mut p = Pushd::start_in(src.path(), &args, scratch.path());
    p.header();
    assert_eq!(p.result(&target).status, "ok");
    assert_same(src.path(), dst.path());
    assert_eq!(p.finish(), Some(0));
}

#[test]
fn max_delete_counts_what_a_deleted_directory_holds() {
    // Counted on the file system for a local target, by an rsync dry run
    // for a remote one.
    let (dst, daemon_dst) = (tempdir(), tempdir());
    let daemon = Rsyncd::start(&[Module::open("m", daemon_dst.path())]);
    for (target, dir) in [
        (dst.path().display().to_string(), dst.path()),
        (daemon.url("m", ""), daemon_dst.path()),
    ] {
        let (src, scratch) = (tempdir(), tempdir());
        for d in ["one", "two", "three"] {
            for i in 0..20 {
                write(src.path(), format!("{d}/f{i}").as_bytes(), b"x");
            }
        }
        write(src.path(), b"keep", b"k");
        let mut p = Pushd::start_in(src.path(), &[os(&target)], scratch.path());
        p.header();
        assert_eq!(p.result(&target).status, "ok");
        // Three paths in the batch, but 63 of 65 entries on the target.
        let mut changes = Vec::new();
        for d in ["one", "two", "three"] {
            fs::remove_dir_all(src.path().join(d)).unwrap();
            changes.push(Change {
                dir: true,
                ..change(ChangeOp::Delete, d.as_bytes())
            });
        }
        let seq = p.batch(changes);
        let a = p.applied(&target, seq);
        assert_eq!(
            (a.status.as_str(), a.refused_deletes),
            ("held", 63),
            "{target}: {a:?}"
        );
        assert_eq!(tree(dir).len(), 64, "{target}");
        assert_eq!(
            p.finish(),
            Some(12),
            "{target}: input ended with deletions held"
        );
    }
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

/// For an rsync whose --delete-missing-args is broken (rsync issue 910),
/// deletions over ssh go through `xargs -0 rm -rf` fed on stdin.
#[test]
fn ssh_deletes_without_delete_missing_args() {
    use syncpipe::location::Target;
    use syncpipe::pushd::apply::{Applier, Checks, Guards};
    use syncpipe::pushd::plan::Plan;
    use syncpipe::pushd::rsync::RsyncSettings;
    use syncpipe::ssh::SshSettings;

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
            control: None,
        },
        delete_missing_args_works: false,
        ..RsyncSettings::default()
    };
    // The batch deletes 12 of the 13 entries: this test is about how they
    // are deleted, not about --max-delete, which would hold them.
    let guards = Guards {
        max_delete: syncpipe::limit::MaxDelete::Percent(100.0),
        ..Guards::default()
    };
    let applier = Applier {
        target: &target,
        settings: &settings,
        guards: &guards,
        direct: false,
        progress: None,
    };
    let mut changes: Vec<Change> = NASTY.iter().map(|n| change(ChangeOp::Delete, n)).collect();
    changes.push(change(ChangeOp::Delete, b"dir"));
    changes.push(change(ChangeOp::Update, b"stays"));
    let report = applier
        .apply(
            src.path(),
            Plan::from_changes(&changes),
            true,
            Checks::default(),
        )
        .unwrap();
    assert!(report.succeeded() && !report.held(), "{report:?}");
    assert_same(src.path(), dst.path());
    assert_nothing_executed(&[dst.path(), Path::new("/root")]);
}

#[test]
fn deleting_the_last_file_of_a_tree_is_not_an_empty_source() {
    let (src, dst, scratch) = (tempdir(), tempdir(), tempdir());
    write(src.path(), b"only", b"o");
    let target = dst.path().display().to_string();
    let mut p = Pushd::start_in(src.path(), &[os(&target)], scratch.path());
    p.header();
    assert_eq!(p.result(&target).status, "ok");
    fs::remove_file(src.path().join("only")).unwrap();
    let seq = p.batch(vec![change(ChangeOp::Delete, b"only")]);
    let a = p.applied(&target, seq);
    assert_eq!(a.status, "ok", "{a:?}");
    assert!(tree(dst.path()).is_empty());
    assert_eq!(p.finish(), Some(0));
}

/// A pushd like [`Pushd::start_in`] with its stderr in `log` and systemd's
/// notifications on `notify`, to check what it says and how often.
fn start_logged(root: &Path, args: &[&OsStr], cwd: &Path, log: &Path, notify: &Path) -> Pushd {
    use std::process::{Command, Stdio};
    let mut cmd = Command::new(crate::support::bin("pushd"));
    cmd.args(["--retry-min", "50ms", "--retry-max", "400ms", "-v"])
        .args(args)
        .current_dir(cwd)
        .env("NOTIFY_SOCKET", notify)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(fs::File::create(log).unwrap());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    let stdin = child.stdin.take();
    let out = crate::support::RecordStream::new(child.stdout.take().unwrap());
    Pushd {
        run: crate::support::Running { child },
        stdin,
        out,
        stream: syncpipe::wire::event::new_stream_id().unwrap(),
        seq: 0,
        root: root.to_path_buf(),
    }
}

fn signal(p: &Pushd, sig: nix::sys::signal::Signal) {
    let pid = nix::unistd::Pid::from_raw(p.run.child.id() as i32);
    nix::sys::signal::kill(pid, sig).unwrap();
}

/// The next result for `target` with `status`.
fn status_of(p: &mut Pushd, target: &str, status: &str) -> syncpipe::wire::event::Applied {
    let r = p.out.wait_for(&format!("a {status} result for {target}"), |r| {
        matches!(r, syncpipe::wire::event::Record::Applied(a) if a.target == target && a.status == status)
    });
    let syncpipe::wire::event::Record::Applied(a) = r else {
        unreachable!()
    };
    a
}

#[test]
fn percentage_follows_a_tree_that_was_empty_at_start() {
    // A fresh deploy: nothing at start, 40 files later, then bulk deletes
    // that are well within the limit of what the tree holds NOW.
    for (limit, doomed) in [("50%", 15), ("100%", 33)] {
        let (src, dst, scratch) = (tempdir(), tempdir(), tempdir());
        let target = dst.path().display().to_string();
        let args = [os("--max-delete"), os(limit), os(&target)];
        let mut p = Pushd::start_in(src.path(), &args, scratch.path());
        p.header();
        assert_eq!(p.result(&target).status, "ok");
        let mut changes = Vec::new();
        for i in 0..40 {
            let name = format!("f{i:02}");
            write(src.path(), name.as_bytes(), b"x");
            changes.push(change(ChangeOp::Update, name.as_bytes()));
        }
        let seq = p.batch(changes);
        assert_eq!(p.applied(&target, seq).status, "ok");
        assert_eq!(tree(dst.path()).len(), 40);
        let mut changes = Vec::new();
        for i in 0..doomed {
            let name = format!("f{i:02}");
            fs::remove_file(src.path().join(&name)).unwrap();
            changes.push(change(ChangeOp::Delete, name.as_bytes()));
        }
        let seq = p.batch(changes);
        let a = p.applied(&target, seq);
        assert_eq!(
            (a.status.as_str(), a.deleted, a.refused_deletes),
            ("ok", doomed, 0),
            "--max-delete {limit}: {a:?}"
        );
        assert_same(src.path(), dst.path());
        assert_eq!(p.finish(), Some(0));
    }
}

/// An emptied source trips the guard: the deletions are held (result,
/// `STATUS=`, stderr once however many batches follow), the other changes
/// flow, and SIGUSR2 applies them.
fn held_then_released(target: &str, dir: &Path, extra: &[&OsStr], src: &Path, scratch: &Path) {
    let log = scratch.join("pushd.log");
    let notify = crate::support::NotifySocket::new();
    let mut args: Vec<&OsStr> = extra.to_vec();
    args.push(os(target));
    for i in 0..30 {
        write(src, format!("f{i:02}").as_bytes(), b"data");
    }
    let mut p = start_logged(src, &args, scratch, &log, notify.path());
    p.header();
    assert_eq!(p.result(target).status, "ok");
    assert_eq!(tree(dir).len(), 30, "{target}");

    // Everything goes at once, one new file comes: 30 of 30 deleted.
    let mut changes = Vec::new();
    for i in 0..30 {
        let name = format!("f{i:02}");
        fs::remove_file(src.join(&name)).unwrap();
        changes.push(change(ChangeOp::Delete, name.as_bytes()));
    }
    write(src, b"new", b"n");
    changes.push(change(ChangeOp::Update, b"new"));
    let seq = p.batch(changes);
    let a = p.applied(target, seq);
    assert_eq!(
        (a.status.as_str(), a.refused_deletes),
        ("held", 30),
        "{target}: {a:?}"
    );
    assert!(
        a.error.as_deref().unwrap_or("").contains("max-delete"),
        "{a:?}"
    );
    assert_eq!(
        tree(dir).len(),
        31,
        "{target}: nothing deleted, new file there"
    );
    notify.wait_for("HELD: 30 deletions");

    // More batches, and rechecks: still held, still there, said once.
    for name in [&b"new2"[..], b"new3"] {
        write(src, name, b"n");
        let seq = p.batch(vec![change(ChangeOp::Update, name)]);
        let a = p.applied(target, seq);
        assert_eq!(a.status, "held", "{target}: {a:?}");
    }
    assert_eq!(tree(dir).len(), 33, "{target}");
    let said = fs::read_to_string(&log).unwrap();
    assert_eq!(said.matches("HELD:").count(), 1, "{target}: {said}");
    assert!(said.contains("kill -USR2"), "{said}");

    // The operator checked the source and releases the hold.
    signal(&p, nix::sys::signal::Signal::SIGUSR2);
    let a = status_of(&mut p, target, "ok");
    assert_eq!(a.deleted, 30, "{target}: {a:?}");
    assert_same(src, dir);
    let said = fs::read_to_string(&log).unwrap();
    assert!(said.contains("released by the operator"), "{said}");
    assert_eq!(p.finish(), Some(0), "{target}: nothing held any more");
}

#[test]
fn guard_trip_is_held_then_released_local_and_direct() {
    for direct in [false, true] {
        let (src, dst, scratch) = (tempdir(), tempdir(), tempdir());
        let target = dst.path().display().to_string();
        let extra: &[&OsStr] = if direct { &[os("--direct")] } else { &[] };
        held_then_released(&target, dst.path(), extra, src.path(), scratch.path());
    }
}

#[test]
fn guard_trip_is_held_then_released_daemon() {
    let daemon_dst = tempdir();
    let daemon = Rsyncd::start(&[Module::open("m", daemon_dst.path())]);
    let (src, scratch) = (tempdir(), tempdir());
    held_then_released(
        &daemon.url("m", ""),
        daemon_dst.path(),
        &[],
        src.path(),
        scratch.path(),
    );
}

#[test]
fn guard_trip_is_held_then_released_ssh() {
    let sshd = Sshd::start();
    let (src, dst, scratch) = (tempdir(), tempdir(), tempdir());
    let target = format!("127.0.0.1:{}/copy", dst.path().display());
    let flags = ssh_flags(&sshd, scratch.path());
    let extra: Vec<&OsStr> = flags.iter().map(|a| a.as_os_str()).collect();
    held_then_released(
        &target,
        &dst.path().join("copy"),
        &extra,
        src.path(),
        scratch.path(),
    );
}

#[test]
fn hold_ends_by_itself_when_the_source_comes_back() {
    let (src, dst, scratch) = (tempdir(), tempdir(), tempdir());
    let log = scratch.path().join("pushd.log");
    let notify = crate::support::NotifySocket::new();
    let target = dst.path().display().to_string();
    for i in 0..30 {
        write(src.path(), format!("f{i:02}").as_bytes(), b"data");
    }
    let args = [os(&target)];
    let mut p = start_logged(src.path(), &args, scratch.path(), &log, notify.path());
    p.header();
    assert_eq!(p.result(&target).status, "ok");
    // The files move away (a disk swapped, a restore under way)...
    let aside = scratch.path().join("aside");
    fs::create_dir(&aside).unwrap();
    for i in 1..30 {
        let name = format!("f{i:02}");
        fs::rename(src.path().join(&name), aside.join(&name)).unwrap();
    }
    let changes = (1..30)
        .map(|i| change(ChangeOp::Delete, format!("f{i:02}").as_bytes()))
        .collect();
    let seq = p.batch(changes);
    let a = p.applied(&target, seq);
    assert_eq!(
        (a.status.as_str(), a.refused_deletes),
        ("held", 29),
        "{a:?}"
    );
    // ...and come back: the next recheck finds nothing to delete.
    for i in 1..30 {
        let name = format!("f{i:02}");
        fs::rename(aside.join(&name), src.path().join(&name)).unwrap();
    }
    let a = status_of(&mut p, &target, "ok");
    assert_eq!(a.deleted, 0, "{a:?}");
    assert_same(src.path(), dst.path());
    let said = fs::read_to_string(&log).unwrap();
    assert!(said.contains("the guard passes again"), "{said}");
    assert_eq!(p.finish(), Some(0));
}

#[test]
fn a_removed_target_root_gets_a_full_sync() {
    for direct in [false, true] {
        let (src, base, scratch) = (tempdir(), tempdir(), tempdir());
        let dst = base.path().join("dst");
        let target = dst.display().to_string();
        for i in 0..10 {
            write(src.path(), format!("f{i}").as_bytes(), b"data");
        }
        let mut args = vec![os(&target)];
        if direct {
            args.insert(0, os("--direct"));
        }
        let mut p = Pushd::start_in(src.path(), &args, scratch.path());
        p.header();
        assert_eq!(p.result(&target).status, "ok");
        assert_same(src.path(), &dst);
        fs::remove_dir_all(&dst).unwrap();
        write(src.path(), b"f1", b"changed");
        write(src.path(), b"f2", b"changed");
        let seq = p.batch(vec![
            change(ChangeOp::Update, b"f1"),
            change(ChangeOp::Update, b"f2"),
        ]);
        let a = p.applied(&target, seq);
        assert_eq!((a.status.as_str(), a.full), ("ok", true), "{a:?}");
        assert_same(src.path(), &dst);
        // Replaced by an empty directory of the same name: the same.
        fs::remove_dir_all(&dst).unwrap();
        fs::create_dir(&dst).unwrap();
        write(src.path(), b"f3", b"changed");
        let seq = p.batch(vec![change(ChangeOp::Update, b"f3")]);
        let a = p.applied(&target, seq);
        assert_eq!((a.status.as_str(), a.full), ("ok", true), "{a:?}");
        assert_same(src.path(), &dst);
        assert_eq!(p.finish(), Some(0));
    }
}

#[test]
fn a_source_unmounted_with_changes_pending_deletes_nothing() {
    // The real thing in a private mount namespace: a tmpfs at SRC, the
    // whole pipeline on it, 8 files changed and SRC unmounted while the
    // batch is still in batchd's window. The batch then lists 8 paths that
    // are missing on the bare mount point. watchd's `end` record (it sees
    // the unmount) is filtered out, so pushd's own per-batch check of the
    // source root is what must catch it, as for a source whose watcher
    // cannot see it vanish (a relayed stream, a network file system).
    // inotify, because it reports the writes queued before the unmount in
    // order; fanotify can no longer resolve them once the file system is
    // gone, so no batch would reach pushd at all.
    let dir = tempdir();
    let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
    let (out, err) = (dir.path().join("out.jsonl"), dir.path().join("err.txt"));
    fs::create_dir(&src).unwrap();
    let script = format!(
        r#"set -e
        src='{src}'; dst='{dst}'; out='{out}'; err='{err}'
        mount -t tmpfs syncpipe-src "$src"
        for i in 1 2 3 4 5 6 7 8; do echo one > "$src/f$i"; done
        ( WATCHD_BACKEND=inotify {watchd} "$src" | {batchd} -d 2 | grep --line-buffered -v '"type":"end"' | {pushd} --retry-min 50ms --retry-max 200ms "$dst" > "$out" 2> "$err" ) & pid=$!
        for i in $(seq 600); do grep -q '"status":"ok"' "$out" && break; sleep 0.05; done
        grep -q '"status":"ok"' "$out"
        for i in 1 2 3 4 5 6 7 8; do echo two > "$src/f$i"; done
        umount "$src"
        wait $pid || echo "exit=$?"
        "#,
        src = src.display(),
        dst = dst.display(),
        out = out.display(),
        err = err.display(),
        watchd = crate::support::bin("watchd").display(),
        batchd = crate::support::bin("batchd").display(),
        pushd = crate::support::bin("pushd").display(),
    );
    let run = std::process::Command::new("unshare")
        .args(["-m", "--propagation", "private", "bash", "-c", &script])
        .output()
        .expect("unshare -m (util-linux) is needed for this test");
    let said = fs::read_to_string(&err).unwrap_or_default();
    let results = fs::read_to_string(&out).unwrap_or_default();
    let context = format!(
        "{}\n{}\nstderr: {said}\nresults: {results}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(run.status.success(), "{context}");
    // Nothing deleted, the target reported held and pushd not claiming success.
    assert_eq!(tree(&dst).len(), 8, "{context}");
    assert!(!results.contains(r#""deleted":8"#), "{context}");
    assert!(results.contains(r#""status":"held""#), "{context}");
    assert!(said.contains("unmounted?"), "{context}");
    assert_eq!(said.matches("HELD:").count(), 1, "{context}");
    assert!(
        String::from_utf8_lossy(&run.stdout).contains("exit=12"),
        "{context}"
    );
}

#[test]
fn release_held_applies_the_start_up_transfer_only() {
    let (src, dst, scratch) = (tempdir(), tempdir(), tempdir());
    write(src.path(), b"keep", b"k");
    for i in 0..30 {
        write(dst.path(), format!("old{i:02}").as_bytes(), b"o");
    }
    let target = dst.path().display().to_string();
    // Without the flag the start-up sync holds the 30 deletions...
    let mut p = Pushd::start_in(src.path(), &[os(&target)], scratch.path());
    p.header();
    let a = p.result(&target);
    assert_eq!(
        (a.status.as_str(), a.refused_deletes),
        ("held", 30),
        "{a:?}"
    );
    assert_eq!(p.finish(), Some(12));
    assert_eq!(tree(dst.path()).len(), 31);
    // ...with it they are applied.
    let args = [os("--release-held"), os(&target)];
    let mut p = Pushd::start_in(src.path(), &args, scratch.path());
    p.header();
    let a = p.result(&target);
    assert_eq!((a.status.as_str(), a.deleted), ("ok", 30), "{a:?}");
    assert_same(src.path(), dst.path());
    // A later trip in the same run is held again.
    let names: Vec<String> = (0..20).map(|i| format!("n{i:02}")).collect();
    for n in &names {
        write(src.path(), n.as_bytes(), b"n");
    }
    let seq = p.batch(
        names
            .iter()
            .map(|n| change(ChangeOp::Update, n.as_bytes()))
            .collect(),
    );
    assert_eq!(p.applied(&target, seq).status, "ok");
    for n in &names {
        fs::remove_file(src.path().join(n)).unwrap();
    }
    let seq = p.batch(
        names
            .iter()
            .map(|n| change(ChangeOp::Delete, n.as_bytes()))
            .collect(),
    );
    let a = p.applied(&target, seq);
    assert_eq!(
        (a.status.as_str(), a.refused_deletes),
        ("held", 20),
        "{a:?}"
    );
    assert_eq!(tree(dst.path()).len(), 21);
    assert_eq!(p.finish(), Some(12));
}

#[test]
fn held_deletions_survive_a_restart_with_state() {
    let (src, dst, scratch) = (tempdir(), tempdir(), tempdir());
    for i in 0..30 {
        write(src.path(), format!("f{i:02}").as_bytes(), b"d");
    }
    let target = dst.path().display().to_string();
    let state = scratch.path().join("state");
    let args = [os("--state"), state.as_os_str(), os(&target)];
    let mut p = Pushd::start_in(src.path(), &args, scratch.path());
    p.header();
    assert_eq!(p.result(&target).status, "ok");
    let mut changes = Vec::new();
    for i in 0..30 {
        let name = format!("f{i:02}");
        fs::remove_file(src.path().join(&name)).unwrap();
        changes.push(change(ChangeOp::Delete, name.as_bytes()));
    }
    write(src.path(), b"new", b"n");
    changes.push(change(ChangeOp::Update, b"new"));
    let held_seq = p.batch(changes);
    assert_eq!(p.applied(&target, held_seq).status, "held");
    write(src.path(), b"later", b"l");
    let later = p.batch(vec![change(ChangeOp::Update, b"later")]);
    assert_eq!(p.applied(&target, later).status, "held");
    let (stream, seq) = (p.stream.clone(), p.seq);
    p.finish();
    // The state stays before the held batch: a writer replays it, and the
    // released restart applies it.
    let saved = syncpipe::pushd::state::StateFile::load(&state).unwrap();
    let position = saved.get(&target).cloned().unwrap();
    assert_eq!(position.stream, stream);
    assert!(position.seq < held_seq - 30, "{position:?}");
    let args = [
        os("--state"),
        state.as_os_str(),
        os("--release-held"),
        os(&target),
    ];
    let mut p = Pushd::start_in(src.path(), &args, scratch.path());
    p.stream = stream;
    p.header();
    p.seq = 0;
    let mut replay = Vec::new();
    for i in 0..30 {
        replay.push(change(ChangeOp::Delete, format!("f{i:02}").as_bytes()));
    }
    replay.push(change(ChangeOp::Update, b"new"));
    p.batch(replay);
    p.batch(vec![change(ChangeOp::Update, b"later")]);
    assert_eq!(p.seq, seq);
    let a = p.applied(&target, seq);
    assert_eq!(a.status, "ok", "{a:?}");
    assert_same(src.path(), dst.path());
    assert_eq!(p.finish(), Some(0));
}

#[test]
fn a_removed_remote_target_root_gets_a_full_sync() {
    // Only rsync sees a remote root: when it has to create it again, the
    // batch is followed by a full sync.
    let sshd = Sshd::start();
    let daemon_dst = tempdir();
    let daemon = Rsyncd::start(&[Module::open("m", daemon_dst.path())]);
    let ssh_dst = tempdir();
    let scratch0 = tempdir();
    let flags = ssh_flags(&sshd, scratch0.path());
    let ssh_extra: Vec<&OsStr> = flags.iter().map(|a| a.as_os_str()).collect();
    let cases = [
        (
            format!("127.0.0.1:{}/copy", ssh_dst.path().display()),
            ssh_dst.path().join("copy"),
            ssh_extra,
        ),
        (
            daemon.url("m", "sub"),
            daemon_dst.path().join("sub"),
            vec![],
        ),
    ];
    for (target, dir, extra) in cases {
        let (src, scratch) = (tempdir(), tempdir());
        for i in 0..10 {
            write(src.path(), format!("f{i}").as_bytes(), b"data");
        }
        let mut args = extra.clone();
        args.push(os(&target));
        let mut p = Pushd::start_in(src.path(), &args, scratch.path());
        p.header();
        assert_eq!(p.result(&target).status, "ok");
        assert_same(src.path(), &dir);
        fs::remove_dir_all(&dir).unwrap();
        write(src.path(), b"f1", b"changed");
        write(src.path(), b"f2", b"changed");
        p.batch(vec![
            change(ChangeOp::Update, b"f1"),
            change(ChangeOp::Update, b"f2"),
        ]);
        let r = p.out.wait_for(&format!("a full sync of {target}"), |r| {
            matches!(r, syncpipe::wire::event::Record::Applied(a)
                if a.target == target && a.full && a.status == "ok")
        });
        assert_same(src.path(), &dir);
        drop(r);
        assert_eq!(p.finish(), Some(0), "{target}");
    }
}

/// Issue 10's churn: a directory renamed while pushd was down deletes and
/// creates the same entries in the start-up sync, which loses nothing and is
/// not held; a rescanned subtree is weighed against the whole tree; a real
/// loss is still held, and while it is, later batches stay path batches (no
/// full sync each) until the release applies it.
#[test]
fn a_rename_is_no_wipe_and_a_hold_does_not_snowball() {
    let (src, dst, scratch) = (tempdir(), tempdir(), tempdir());
    for i in 0..40 {
        write(src.path(), format!("big/f{i:02}").as_bytes(), b"d");
        write(src.path(), format!("top{i:02}").as_bytes(), b"t");
    }
    for i in 0..20 {
        write(src.path(), format!("sub/g{i:02}").as_bytes(), b"g");
    }
    let target = dst.path().display().to_string();
    let log = scratch.path().join("pushd.log");
    let notify = crate::support::NotifySocket::new();
    let args = [os(&target)];
    let mut p = Pushd::start_in(src.path(), &args, scratch.path());
    p.header();
    assert_eq!(p.result(&target).status, "ok");
    assert_eq!(p.finish(), Some(0));

    // Renamed while nothing ran: 41 of 102 go, 41 come.
    fs::rename(src.path().join("big"), src.path().join("big2")).unwrap();
    let mut p = start_logged(src.path(), &args, scratch.path(), &log, notify.path());
    p.header();
    let a = p.result(&target);
    assert_eq!((a.status.as_str(), a.deleted), ("ok", 41), "{a:?}");
    assert_same(src.path(), dst.path());

    // 15 of sub's 21 entries go, seen as a rescan of sub: 15 of 102.
    for i in 0..15 {
        fs::remove_file(src.path().join(format!("sub/g{i:02}"))).unwrap();
    }
    let seq = p.batch(vec![Change {
        dir: true,
        ..change(ChangeOp::Rescan, b"sub")
    }]);
    let a = p.applied(&target, seq);
    assert_eq!((a.status.as_str(), a.deleted), ("ok", 15), "{a:?}");
    assert_same(src.path(), dst.path());

    // A real loss (the 40 top files and big2, 81 of 87) is held...
    for i in 0..40 {
        fs::remove_file(src.path().join(format!("top{i:02}"))).unwrap();
    }
    fs::remove_dir_all(src.path().join("big2")).unwrap();
    let seq = p.batch(vec![Change {
        dir: true,
        ..change(ChangeOp::Rescan, b".")
    }]);
    let a = p.applied(&target, seq);
    assert_eq!(
        (a.status.as_str(), a.refused_deletes, a.full),
        ("held", 81, true),
        "{a:?}"
    );
    // ...and the batches that follow are applied as what they are.
    for name in [&b"late1"[..], b"late2"] {
        write(src.path(), name, b"l");
        let seq = p.batch(vec![change(ChangeOp::Update, name)]);
        let a = p.applied(&target, seq);
        assert_eq!((a.status.as_str(), a.full), ("held", false), "{a:?}");
        assert_eq!(
            fs::read(dst.path().join(OsStr::from_bytes(name))).unwrap(),
            b"l"
        );
    }
    assert_eq!(tree(dst.path()).len(), 89);
    signal(&p, nix::sys::signal::Signal::SIGUSR2);
    let a = status_of(&mut p, &target, "ok");
    assert_eq!(a.deleted, 81, "{a:?}");
    assert_same(src.path(), dst.path());
    let said = fs::read_to_string(&log).unwrap();
    assert_eq!(said.matches("HELD:").count(), 1, "{said}");
    assert_eq!(p.finish(), Some(0));
}
