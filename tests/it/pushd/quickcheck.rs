//! rsync's quick check on remote targets: a file rewritten with as many
//! bytes within the same second as its last copy must still be sent over
//! ssh (plain, through `rrsync -wo`, and past the agent's size limit) and to
//! an rsync daemon (issue 10; local targets: the unit test of the same name
//! in lib/pushd/apply.rs).

use std::ffi::{OsStr, OsString};
use std::fs;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use syncpipe::wire::event::ChangeOp;

use super::harness::*;
use crate::support::rsyncd::{Module, Rsyncd};
use crate::support::sshd::Sshd;
use crate::support::tempdir;

/// Writes `content` to `src/rel` with an mtime `nanos` into one fixed second.
fn write_at(src: &Path, rel: &str, content: &[u8], nanos: u32) {
    write(src, rel.as_bytes(), content);
    let f = fs::File::options().write(true).open(src.join(rel)).unwrap();
    f.set_modified(UNIX_EPOCH + Duration::new(1_700_000_000, nanos))
        .unwrap();
}

/// Starts pushd with `args` + `target`, sends `rel` once, rewrites it with
/// the same size in the same second, sends it again: the target must hold
/// the second content.
fn rewrite_is_sent(args: Vec<OsString>, target: &str, src: &Path, dst: &Path, size: usize) {
    let scratch = tempdir();
    let mut all = args;
    all.push(target.into());
    let all: Vec<&OsStr> = all.iter().map(|a| a.as_os_str()).collect();
    let mut p = Pushd::start_in(src, &all, scratch.path());
    p.header();
    assert_eq!(p.result(target).status, "ok", "start-up sync to {target}");
    for (content, nanos) in [(b'a', 100_000_000), (b'b', 200_000_000)] {
        write_at(src, "f", &vec![content; size], nanos);
        let seq = p.batch(vec![change(ChangeOp::Update, b"f")]);
        assert_eq!(p.applied(target, seq).status, "ok");
    }
    let got = fs::read(dst.join("f")).unwrap();
    assert!(
        got.iter().all(|&b| b == b'b'),
        "{target}: the rewrite within the same second was not sent"
    );
    assert_same(src, dst);
    assert_eq!(p.finish(), Some(0));
}

#[test]
fn a_same_second_rewrite_reaches_an_ssh_target() {
    let sshd = Sshd::start();
    let (src, dst, scratch) = (tempdir(), tempdir(), tempdir());
    let target = format!("127.0.0.1:{}", dst.path().display());
    let mut args = ssh_flags(&sshd, scratch.path());
    args.push("--no-agent".into());
    rewrite_is_sent(args, &target, src.path(), dst.path(), 4);
}

#[test]
fn a_same_second_rewrite_too_big_for_the_agent_reaches_an_ssh_target() {
    let sshd = Sshd::start();
    let (src, dst, scratch) = (tempdir(), tempdir(), tempdir());
    let target = format!("127.0.0.1:{}", dst.path().display());
    let mut args = ssh_flags(&sshd, scratch.path());
    args.extend(["--agent-path".into(), crate::support::bin("pushd").into()]);
    rewrite_is_sent(args, &target, src.path(), dst.path(), 2 << 20);
}

#[test]
fn a_same_second_rewrite_passes_rrsync() {
    let (src, dst, scratch) = (tempdir(), tempdir(), tempdir());
    let dir = dst.path().display().to_string();
    let sshd = Sshd::start_with_authorized(|key| {
        format!("command=\"/usr/bin/rrsync -wo {dir}\",restrict {key}")
    });
    let mut args = ssh_flags(&sshd, scratch.path());
    args.push("--no-agent".into());
    rewrite_is_sent(args, "127.0.0.1:/", src.path(), dst.path(), 4);
}

#[test]
fn a_same_second_rewrite_reaches_an_rsync_daemon() {
    let (src, dst) = (tempdir(), tempdir());
    let daemon = Rsyncd::start(&[Module::open("m", dst.path())]);
    let target = daemon.url("m", "copy");
    rewrite_is_sent(Vec::new(), &target, src.path(), &dst.path().join("copy"), 4);
}
