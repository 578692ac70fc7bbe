//! ssh targets at local speed (issue 15): one connection per target for
//! pushd's whole run, cleaned up when it ends.

use std::ffi::OsStr;
use std::fs;

use syncpipe::wire::event::ChangeOp;

use super::harness::*;
use crate::support::sshd::Sshd;
use crate::support::{tempdir, wait_until, TIMEOUT};

/// The control directories pushd made under `base`.
fn control_dirs(base: &std::path::Path) -> Vec<std::path::PathBuf> {
    fs::read_dir(base)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("syncpipe-ssh."))
        .map(|e| e.path())
        .collect()
}

#[test]
fn batches_to_an_ssh_target_share_one_login_closed_at_exit() {
    let sshd = Sshd::start();
    let (src, dst, scratch, run) = (tempdir(), tempdir(), tempdir(), tempdir());
    let target = format!("127.0.0.1:{}", dst.path().display());
    let mut args = ssh_flags(&sshd, scratch.path());
    args.push(target.clone().into());
    let args: Vec<&OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    write(src.path(), b"first", b"0");
    let mut p = Pushd::start_env(
        src.path(),
        &args,
        scratch.path(),
        &[("XDG_RUNTIME_DIR", run.path().as_os_str())],
    );
    p.header();
    assert_eq!(p.result(&target).status, "ok");
    let dirs = control_dirs(run.path());
    assert_eq!(dirs.len(), 1, "one private socket directory: {dirs:?}");
    let mode = fs::metadata(&dirs[0]).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o700
    );
    for i in 0..4u8 {
        let name = [b'f', b'0' + i];
        write(src.path(), &name, &[i; 10]);
        // Deleting one as well: the dry run that weighs deletions uses ssh too.
        let mut changes = vec![change(ChangeOp::Update, &name)];
        if i > 0 {
            fs::remove_file(src.path().join(format!("f{}", i - 1))).unwrap();
            changes.push(change(ChangeOp::Delete, &[b'f', b'0' + i - 1]));
        }
        let seq = p.batch(changes);
        assert_eq!(p.applied(&target, seq).status, "ok");
    }
    assert_same(src.path(), dst.path());
    assert_eq!(
        sshd.logins(),
        1,
        "a full sync and four batches (eight rsyncs) are one ssh login"
    );
    assert_eq!(p.finish(), Some(0));
    assert!(
        control_dirs(run.path()).is_empty(),
        "the socket directory is removed at exit"
    );
    assert!(
        wait_until(TIMEOUT, || sshd.sessions() == 0),
        "the shared connection is closed at exit"
    );
}

#[test]
fn ssh_opt_control_master_no_logs_in_per_transfer() {
    let sshd = Sshd::start();
    let (src, dst, scratch, run) = (tempdir(), tempdir(), tempdir(), tempdir());
    let target = format!("127.0.0.1:{}", dst.path().display());
    let mut args = ssh_flags(&sshd, scratch.path());
    args.extend([
        "--ssh-opt".into(),
        "ControlMaster=no".into(),
        target.clone().into(),
    ]);
    let args: Vec<&OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let mut p = Pushd::start_env(
        src.path(),
        &args,
        scratch.path(),
        &[("XDG_RUNTIME_DIR", run.path().as_os_str())],
    );
    p.header();
    assert_eq!(p.result(&target).status, "ok");
    write(src.path(), b"a", b"a");
    let seq = p.batch(vec![change(ChangeOp::Update, b"a")]);
    assert_eq!(p.applied(&target, seq).status, "ok");
    assert!(
        control_dirs(run.path()).is_empty(),
        "the user turned it off"
    );
    assert!(sshd.logins() >= 2, "{} logins", sshd.logins());
    assert_same(src.path(), dst.path());
    assert_eq!(p.finish(), Some(0));
}
