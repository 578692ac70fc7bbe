//! What keeps a bad source from wiping a replica, and which transfers delete.

use std::ffi::OsStr;
use std::fs;
use std::path::Path;

use syncpipe::event::{Change, ChangeOp};

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
            ("refused", 63),
            "{target}: {a:?}"
        );
        assert_eq!(tree(dir).len(), 64, "{target}");
        assert_eq!(p.finish(), Some(0));
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
