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

/// pushd's flags for `sshd` with the agent at the test build's pushd.
fn agent_flags(sshd: &Sshd, scratch: &std::path::Path) -> Vec<std::ffi::OsString> {
    let mut args = ssh_flags(sshd, scratch);
    args.extend(["--agent-path".into(), crate::support::bin("pushd").into()]);
    args
}

/// The agents serving `dst` right now (processes below sshd).
fn agents(dst: &std::path::Path) -> Vec<i32> {
    let want = dst.as_os_str().as_encoded_bytes();
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let args: Vec<&[u8]> = c.split(|&b| b == 0).collect();
                args.contains(&&b"--serve"[..]) && args.contains(&want)
            })
        })
        .collect()
}

#[test]
fn the_agent_applies_every_change_kind_and_renames_without_resending() {
    let sshd = Sshd::start();
    let (src, dst, scratch) = (tempdir(), tempdir(), tempdir());
    let copy = dst.path().join("copy");
    let target = format!("127.0.0.1:{}", copy.display());
    let mut args = agent_flags(&sshd, scratch.path());
    args.push(target.clone().into());
    let args: Vec<&OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let mut p = Pushd::start_in(src.path(), &args, scratch.path());
    // Hostile names, every kind of change; renames done by the agent
    // beneath the root, so no data is sent again.
    every_change_kind(&mut p, &target, src.path(), &copy, true);
    assert_eq!(agents(&copy).len(), 1, "one agent for the whole run");
    // A large file goes by rsync over the same connection.
    let big = vec![7u8; 1 << 20];
    write(src.path(), b"big", &big);
    let seq = p.batch(vec![change(ChangeOp::Update, b"big")]);
    assert_eq!(p.applied(&target, seq).bytes, big.len() as u64);
    assert_same(src.path(), &copy);
    assert_eq!(sshd.logins(), 1, "the agent and rsync share one login");
    assert_eq!(p.finish(), Some(0));
    assert!(wait_until(TIMEOUT, || agents(&copy).is_empty()));
    assert_nothing_executed(&[src.path(), dst.path(), scratch.path()]);
}

#[test]
fn a_killed_agent_and_dropped_connections_still_converge() {
    let sshd = Sshd::start();
    let (src, dst, scratch) = (tempdir(), tempdir(), tempdir());
    let target = format!("127.0.0.1:{}", dst.path().display());
    let mut args = agent_flags(&sshd, scratch.path());
    args.push(target.clone().into());
    let args: Vec<&OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let mut p = Pushd::start_in(src.path(), &args, scratch.path());
    p.header();
    assert_eq!(p.result(&target).status, "ok");
    let mut n = 0u32;
    let mut step = |p: &mut Pushd| {
        n += 1;
        let name = format!("f{n}");
        write(src.path(), name.as_bytes(), name.as_bytes());
        let seq = p.batch(vec![change(ChangeOp::Update, name.as_bytes())]);
        let a = p.applied(&target, seq);
        assert_eq!(a.status, "ok", "{a:?}");
        assert_same(src.path(), dst.path());
    };
    step(&mut p);
    let pids = agents(dst.path());
    assert_eq!(pids.len(), 1);
    for pid in pids {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
    }
    // The batch after the kill goes by rsync; later ones find a new agent.
    step(&mut p);
    sshd.drop_connections();
    step(&mut p);
    assert!(
        wait_until(TIMEOUT, || {
            step(&mut p);
            agents(dst.path()).len() == 1
        }),
        "the agent is started again after its backoff"
    );
    step(&mut p);
    assert_eq!(p.finish(), Some(0));
}

#[test]
fn a_remote_without_the_agent_works_with_one_notice() {
    let sshd = Sshd::start();
    let (src, dst, scratch) = (tempdir(), tempdir(), tempdir());
    let target = format!("127.0.0.1:{}", dst.path().display());
    let log = scratch.path().join("stderr");
    let mut args = ssh_flags(&sshd, scratch.path());
    args.extend([
        "--agent-path".into(),
        "/nonexistent/pushd".into(),
        target.clone().into(),
    ]);
    let args: Vec<&OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let mut p = Pushd::start_with_stderr(src.path(), &args, scratch.path(), &log);
    p.header();
    assert_eq!(p.result(&target).status, "ok");
    for name in [&b"a"[..], b"b", NASTY[1]] {
        write(src.path(), name, b"x");
        let seq = p.batch(vec![change(ChangeOp::Update, name)]);
        assert_eq!(p.applied(&target, seq).status, "ok");
    }
    assert_same(src.path(), dst.path());
    assert_eq!(p.finish(), Some(0));
    let text = fs::read_to_string(&log).unwrap();
    let notices: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("install syncpipe"))
        .collect();
    assert_eq!(notices.len(), 1, "one notice: {text}");
    assert!(notices[0].contains("--agent-path"), "{text}");
}

#[test]
fn a_key_restricted_to_the_agent_pushes_into_its_directory_only() {
    let (src, dst, scratch) = (tempdir(), tempdir(), tempdir());
    let only =
        syncpipe::keysetup::restrict::Only::parse(&format!("pushd:{}", dst.path().display()))
            .unwrap();
    let restriction = syncpipe::keysetup::restrict::Restriction {
        only: Some(only),
        from: None,
    };
    // The forced command keysetup writes, with the test build's pushd
    // (sshd's PATH has none).
    let pushd = crate::support::bin("pushd").display().to_string();
    let sshd =
        Sshd::start_with_authorized(|key| restriction.line(key).replace("env pushd", &pushd));
    let target = "127.0.0.1:/".to_string();
    let mut args = agent_flags(&sshd, scratch.path());
    args.push(target.clone().into());
    let args: Vec<&OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let mut p = Pushd::start_in(src.path(), &args, scratch.path());
    every_change_kind(&mut p, &target, src.path(), dst.path(), true);
    assert_eq!(agents(dst.path()).len(), 1, "the agent runs under the key");
    let big = vec![7u8; 1 << 20];
    write(src.path(), b"big", &big);
    let seq = p.batch(vec![change(ChangeOp::Update, b"big")]);
    assert_eq!(p.applied(&target, seq).status, "ok", "rsync via rrsync -wo");
    assert_same(src.path(), dst.path());
    assert_eq!(p.finish(), Some(0));
    // Anything else is refused, and the agent serves nothing but DIR.
    let out = sshd.ssh("touch /tmp/pwned-by-key; id").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("may only push into"));
    let out = sshd
        .ssh(&format!("{pushd} --serve /etc"))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "another directory is refused");
    assert!(!std::path::Path::new("/tmp/pwned-by-key").exists());
}
