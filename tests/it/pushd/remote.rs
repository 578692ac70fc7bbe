//! ssh targets at local speed (issue 15): one connection per target for
//! pushd's whole run, cleaned up when it ends.

use std::ffi::OsStr;
use std::fs;

use syncpipe::wire::event::{Applied, ChangeOp};

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
pub(super) fn agent_flags(sshd: &Sshd, scratch: &std::path::Path) -> Vec<std::ffi::OsString> {
    let mut args = ssh_flags(sshd, scratch);
    args.extend(["--agent-path".into(), crate::support::bin("pushd").into()]);
    args
}

/// The agents serving `dst` right now (processes below sshd).
pub(super) fn agents(dst: &std::path::Path) -> Vec<i32> {
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

/// Every result for `target` until one applied `seq` (failed ones too).
pub(super) fn results_until(p: &mut Pushd, target: &str, seq: u64) -> Vec<Applied> {
    let mut all = Vec::new();
    loop {
        let a = p.result(target);
        let done = a.last_seq >= seq && a.status == "ok";
        all.push(a);
        if done {
            return all;
        }
    }
}

#[test]
fn sshd_killed_mid_stream_and_restarted_resumes_without_a_full_sync() {
    let mut sshd = Sshd::start();
    let (src, dst, scratch) = (tempdir(), tempdir(), tempdir());
    let target = format!("127.0.0.1:{}", dst.path().display());
    let log = scratch.path().join("stderr");
    let mut args = agent_flags(&sshd, scratch.path());
    args.push(target.clone().into());
    let args: Vec<&OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let mut p = Pushd::start_with_stderr(src.path(), &args, scratch.path(), &log);
    p.header();
    assert!(p.result(&target).full, "the start-up sync");
    write(src.path(), b"a", b"a");
    let seq = p.batch(vec![change(ChangeOp::Update, b"a")]);
    assert_eq!(p.applied(&target, seq).status, "ok");
    assert_eq!(agents(dst.path()).len(), 1);
    // A batch large enough to be in flight when the server dies, then more
    // changes of every kind while it is down.
    let names: Vec<Vec<u8>> = (0..400).map(|i| format!("d/f{i}").into_bytes()).collect();
    for n in &names {
        write(src.path(), n, &[b'x'; 4096]);
    }
    p.batch(names.iter().map(|n| change(ChangeOp::Update, n)).collect());
    sshd.stop();
    write(src.path(), b"a", b"rewritten");
    write(src.path(), b"b", b"b");
    fs::remove_file(src.path().join("d/f1")).unwrap();
    fs::rename(src.path().join("d/f2"), src.path().join("moved")).unwrap();
    let last = p.batch(vec![
        change(ChangeOp::Update, b"a"),
        change(ChangeOp::Update, b"b"),
        change(ChangeOp::Delete, b"d/f1"),
        moved(b"d/f2", b"moved", false),
    ]);
    // pushd notices (a failed try), then the server comes back on its port.
    let mut results = Vec::new();
    while !results.iter().any(|a: &Applied| a.status == "failed") {
        results.push(p.result(&target));
    }
    sshd.restart();
    results.extend(results_until(&mut p, &target, last));
    assert_same(src.path(), dst.path());
    // Later batches find a new agent (after its backoff) that says what it
    // last applied: resumed, never a full sync.
    let mut n = 0;
    assert!(
        wait_until(TIMEOUT, || {
            n += 1;
            let name = format!("after{n}");
            write(src.path(), name.as_bytes(), b"1");
            let seq = p.batch(vec![change(ChangeOp::Update, name.as_bytes())]);
            results.extend(results_until(&mut p, &target, seq));
            agents(dst.path()).len() == 1
        }),
        "a new agent"
    );
    assert_same(src.path(), dst.path());
    assert_eq!(p.finish(), Some(0));
    let fulls: Vec<&Applied> = results.iter().filter(|a| a.full).collect();
    assert!(
        fulls.is_empty(),
        "no full sync after the restart: {fulls:?}"
    );
    let text = fs::read_to_string(&log).unwrap();
    assert!(!text.contains("doing a full sync"), "{text}");
    let asked = text
        .lines()
        .filter(|l| l.contains("connected (it last applied seq"))
        .count();
    assert!(asked >= 1, "the new agent said what it applied: {text}");
}

#[test]
fn a_resumed_pushd_trusts_the_agents_record_and_a_replaced_root_gets_a_full_sync() {
    let sshd = Sshd::start();
    let (src, dst, scratch) = (tempdir(), tempdir(), tempdir());
    let copy = dst.path().join("copy");
    // The root exists before pushd starts: an agent that found no root would
    // leave the first batches to rsync (and retry a second later), and those
    // write no record for the assertion below.
    fs::create_dir(&copy).unwrap();
    let target = format!("127.0.0.1:{}", copy.display());
    let state = scratch.path().join("state.json");
    let log = scratch.path().join("stderr");
    let mut args = agent_flags(&sshd, scratch.path());
    args.extend([
        "--state".into(),
        state.clone().into(),
        target.clone().into(),
    ]);
    let args: Vec<&OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let mut p = Pushd::start_in(src.path(), &args, scratch.path());
    p.header();
    assert!(p.result(&target).full);
    for name in [&b"a"[..], b"b"] {
        write(src.path(), name, name);
        let seq = p.batch(vec![change(ChangeOp::Update, name)]);
        assert_eq!(p.applied(&target, seq).status, "ok");
    }
    assert_eq!(p.finish(), Some(0));
    // Records live outside the target, in the remote user's state dir.
    assert!(fs::read_dir(sshd.state_home().join("syncpipe/agent")).is_ok_and(|d| d.count() > 0));
    let (stream, seq) = (p.stream.clone(), p.seq);
    let again = |p: &mut Pushd| {
        let mut next = Pushd::start_with_stderr(src.path(), &args, scratch.path(), &log);
        next.stream = p.stream.clone();
        next.seq = p.seq;
        next.header();
        write(src.path(), b"c", b"c");
        let seq = next.batch(vec![change(ChangeOp::Update, b"c")]);
        let results = results_until(&mut next, &target, seq);
        assert_same(src.path(), &copy);
        assert_eq!(next.finish(), Some(0));
        *p = next;
        results
    };
    // The same stream, the agent in step: no full sync.
    let results = again(&mut p);
    assert!(results.iter().all(|a| !a.full), "{results:?}");
    assert_eq!((p.stream.clone(), p.seq), (stream, seq + 1));
    // The target root replaced behind pushd's back (restored, another
    // disk): its agent has no record of it, so a full sync puts back what
    // the batches alone would not.
    fs::remove_dir_all(&copy).unwrap();
    fs::create_dir(&copy).unwrap();
    let results = again(&mut p);
    assert!(results.iter().any(|a| a.full), "{results:?}");
    let text = fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("no record of what it applied there"),
        "{text}"
    );
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
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("may only push into"),
        "refused by the key's restriction, not failing for another reason"
    );
    assert!(!std::path::Path::new("/tmp/pwned-by-key").exists());
}
