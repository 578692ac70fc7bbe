//! `pushd --from`: a pull replica reading its upstream over ssh (a real
//! sshd on loopback): hostile names arrive, planted links on the replica
//! are never followed, and an upstream root that vanishes or is replaced
//! deletes nothing.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::path::Path;

use syncpipe::wire::event::ChangeOp;

use super::beneath::planted_links_are_not_followed_from;
use super::harness::{assert_same, change, moved, ssh_flags, write, Pushd, NASTY};
use crate::support::sshd::Sshd;
use crate::support::tempdir;

/// pushd's arguments for a pull over `sshd` from `upstream` into `dst`.
fn pull_args(sshd: &Sshd, scratch: &Path, upstream: &Path, dst: &Path) -> Vec<OsString> {
    let mut args = ssh_flags(sshd, scratch);
    let mut from = OsString::from("127.0.0.1:");
    from.push(upstream);
    args.extend([OsString::from("--from"), from, dst.into()]);
    args
}

fn refs(args: &[OsString]) -> Vec<&OsStr> {
    args.iter().map(|a| a.as_os_str()).collect()
}

#[test]
fn a_pull_over_ssh_carries_hostile_names() {
    let sshd = Sshd::start();
    let (src, dst, scratch) = (tempdir(), tempdir(), tempdir());
    let target = dst.path().join("copy");
    for (i, name) in NASTY.iter().enumerate() {
        write(src.path(), name, format!("v{i}").as_bytes());
    }
    let args = pull_args(&sshd, scratch.path(), src.path(), &target);
    let name = target.display().to_string();
    let mut p = Pushd::start_in(src.path(), &refs(&args), scratch.path());
    p.header();
    let a = p.result(&name);
    assert_eq!(a.status, "ok", "{a:?}");
    assert_same(src.path(), &target);
    fs::remove_file(src.path().join("-rf")).unwrap();
    fs::rename(src.path().join("a b"), src.path().join("a b moved")).unwrap();
    write(src.path(), b"new\nline", b"changed");
    write(src.path(), b"dir/$(x)/deep", b"deep");
    let seq = p.batch(vec![
        change(ChangeOp::Delete, b"-rf"),
        moved(b"a b", b"a b moved", false),
        change(ChangeOp::Update, b"new\nline"),
        change(ChangeOp::Update, b"dir"),
        change(ChangeOp::Rescan, b"dir"),
    ]);
    let a = p.applied(&name, seq);
    assert_eq!(a.status, "ok", "{a:?}");
    assert_same(src.path(), &target);
    assert_eq!(p.finish(), Some(0));
}

#[test]
fn a_pull_never_follows_links_planted_on_the_replica() {
    let sshd = Sshd::start();
    let (up, dst, scratch) = (tempdir(), tempdir(), tempdir());
    let target = dst.path().join("copy");
    let args = pull_args(&sshd, scratch.path(), up.path(), &target);
    let spec = target.display().to_string();
    planted_links_are_not_followed_from(up.path(), &refs(&args), &spec, &target, scratch.path());
}

#[test]
fn an_upstream_root_that_vanishes_or_is_replaced_deletes_nothing() {
    let sshd = Sshd::start();
    let (base, dst, scratch) = (tempdir(), tempdir(), tempdir());
    let up = base.path().join("www");
    let target = dst.path().join("copy");
    for i in 0..40 {
        write(&up, format!("f{i}").as_bytes(), b"x");
    }
    let args = pull_args(&sshd, scratch.path(), &up, &target);
    let name = target.display().to_string();
    let mut p = Pushd::start_in(&up, &refs(&args), scratch.path());
    p.header();
    assert_eq!(p.result(&name).status, "ok");
    assert_same(&up, &target);
    let deletes = || {
        (0..40)
            .map(|i| change(ChangeOp::Delete, format!("f{i}").as_bytes()))
            .collect::<Vec<_>>()
    };
    // Vanished (an unmounted share whose mount point is gone, a moved
    // directory): the batch's deletions are not applied.
    fs::rename(&up, base.path().join("away")).unwrap();
    p.batch(deletes());
    let a = p.result(&name);
    assert_eq!(a.status, "failed", "{a:?}");
    assert!(
        a.error.as_deref().unwrap_or("").contains("not there"),
        "{a:?}"
    );
    assert_eq!(fs::read_dir(&target).unwrap().count(), 40);
    // Replaced by an empty directory (a fresh mount point): held.
    fs::create_dir(&up).unwrap();
    let a = loop {
        let a = p.result(&name);
        if a.status != "failed" {
            break a;
        }
    };
    assert_eq!(a.status, "held", "{a:?}");
    assert_eq!(
        fs::read_dir(&target).unwrap().count(),
        40,
        "nothing deleted"
    );
    // SIGTERM: pushd stops with the deletions still held, never applied.
    p.run.signal(nix::sys::signal::Signal::SIGTERM);
    p.finish();
    assert_eq!(
        fs::read_dir(&target).unwrap().count(),
        40,
        "nothing deleted"
    );
}
