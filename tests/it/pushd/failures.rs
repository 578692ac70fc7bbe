//! Targets that fail, restarts, signals and bad input: nothing is lost.

use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use syncpipe::wire::event::{Batch, ChangeOp, EventKind, Header, Record, Timestamp};
use syncpipe::wire::path::WirePath;

use super::harness::*;
use crate::support::sshd::Sshd;
use crate::support::{bin, tempdir, RecordStream, Running};

#[test]
fn ssh_target_killed_mid_stream_converges_after_restart() {
    let mut sshd = Sshd::start();
    let (src, dst, scratch) = (tempdir(), tempdir(), tempdir());
    let target = format!("127.0.0.1:{}", dst.path().display());
    let mut args = ssh_flags(&sshd, scratch.path());
    // Many events for few paths fold: no fall-back to a full sync.
    args.extend(["--max-pending".into(), "5".into(), target.clone().into()]);
    let args: Vec<&OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    write(src.path(), b"before", b"0");
    let mut p = Pushd::start_in(src.path(), &args, scratch.path());
    p.header();
    assert_eq!(p.result(&target).status, "ok");

    sshd.stop();
    write(src.path(), b"during 1", b"1");
    p.batch(vec![change(ChangeOp::Update, b"during 1")]);
    let failed = p.result(&target);
    assert_eq!(failed.status, "failed", "{failed:?}");
    assert!(failed.error.is_some());
    write(src.path(), b"during 2", b"2");
    for _ in 0..200 {
        p.event(EventKind::Modify, b"during 2", None);
    }
    fs::remove_file(src.path().join("before")).unwrap();
    let last = p.batch(vec![
        change(ChangeOp::Update, b"during 2"),
        change(ChangeOp::Delete, b"before"),
    ]);
    // Retries keep failing while the server is down...
    let again = p.result(&target);
    assert_eq!(again.status, "failed");
    assert!(again.attempt >= 2, "{again:?}");
    assert_eq!(tree(dst.path()).len(), 1);

    sshd.restart();
    let done = p.applied(&target, last);
    assert_eq!(done.status, "ok");
    assert!(
        done.first_seq <= 1,
        "the first failed batch is in it: {done:?}"
    );
    assert!(
        !done.full,
        "200 events on 3 paths stay under --max-pending 5"
    );
    assert_same(src.path(), dst.path());
    assert_eq!(p.finish(), Some(0));
}

#[test]
fn sshd_killed_during_a_transfer_then_restarted_converges() {
    let mut sshd = Sshd::start();
    let (src, dst, scratch) = (tempdir(), tempdir(), tempdir());
    let target = format!("127.0.0.1:{}", dst.path().display());
    let mut args = ssh_flags(&sshd, scratch.path());
    // Slow enough that the transfer is surely in flight when the link dies.
    args.extend(["--bwlimit".into(), "1000".into(), target.clone().into()]);
    let args: Vec<&OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    write(src.path(), b"small", b"s");
    let mut p = Pushd::start_in(src.path(), &args, scratch.path());
    p.header();
    assert_eq!(p.result(&target).status, "ok");

    write(src.path(), b"big", &vec![1u8; 2 << 20]);
    let seq = p.batch(vec![change(ChangeOp::Update, b"big")]);
    let in_flight = crate::support::wait_until(crate::support::TIMEOUT, || {
        fs::read_dir(dst.path())
            .unwrap()
            .flatten()
            .any(|e| e.file_name().as_bytes().starts_with(b".big."))
    });
    assert!(in_flight, "rsync's temporary file never appeared");
    sshd.stop();
    let failed = p.result(&target);
    assert_eq!(failed.status, "failed", "{failed:?}");
    sshd.restart();
    let done = p.applied(&target, seq);
    assert_eq!(done.status, "ok");
    assert!(done.attempt >= 2, "{done:?}");
    assert_same(src.path(), dst.path());
    assert_eq!(p.finish(), Some(0));
}

#[test]
fn a_dead_target_does_not_hold_back_the_others() {
    let mut sshd = Sshd::start();
    sshd.stop();
    let (src, dst, scratch) = (tempdir(), tempdir(), tempdir());
    let dead = format!("127.0.0.1:{}/dead", dst.path().display());
    let live = dst.path().join("live").display().to_string();
    let mut args = ssh_flags(&sshd, scratch.path());
    args.extend([dead.clone().into(), live.clone().into()]);
    let args: Vec<&OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    write(src.path(), b"a", b"a");
    let mut p = Pushd::start_in(src.path(), &args, scratch.path());
    p.header();
    assert_eq!(p.applied(&live, 0).status, "ok");
    for i in 0..5 {
        let name = format!("n{i}");
        write(src.path(), name.as_bytes(), b"x");
        let seq = p.batch(vec![change(ChangeOp::Update, name.as_bytes())]);
        assert_eq!(p.applied(&live, seq).status, "ok");
    }
    assert_same(src.path(), &dst.path().join("live"));
    assert!(!dst.path().join("dead").exists());
    // Its failures come when its retries give up, which under load may be
    // after the live target's five batches: wait for one, no timing assumed.
    let is_failure =
        |r: &Record| matches!(r, Record::Applied(a) if a.target == dead && a.status == "failed");
    if !p.out.seen.iter().any(is_failure) {
        p.out
            .wait_for("the dead target reports its failures", is_failure);
    }
    // At the end of input the dead target gives up: exit 1, not a hang.
    assert_eq!(p.finish(), Some(1));
}

#[test]
fn state_file_resumes_the_same_stream_and_resyncs_a_new_one() {
    let (src, dst, scratch) = (tempdir(), tempdir(), tempdir());
    let state = scratch.path().join("state.json");
    let target = dst.path().display().to_string();
    let args = [os("--state"), state.as_os_str(), os(&target)];
    write(src.path(), b"a", b"a");
    let mut p = Pushd::start_in(src.path(), &args, scratch.path());
    p.header();
    assert!(p.result(&target).full);
    write(src.path(), b"b", b"b");
    let seq = p.batch(vec![change(ChangeOp::Update, b"b")]);
    p.applied(&target, seq);
    assert_eq!(p.finish(), Some(0));
    let saved: serde_json::Value = serde_json::from_slice(&fs::read(&state).unwrap()).unwrap();
    assert_eq!(saved["targets"][&target]["stream"], p.stream.as_str());
    assert_eq!(saved["targets"][&target]["seq"], seq);

    // Something only on the target shows whether a full sync ran.
    write(dst.path(), b"only on target", b"x");
    let (stream, old_seq) = (p.stream.clone(), p.seq);
    let mut q = Pushd::start_in(src.path(), &args, scratch.path());
    q.stream = stream;
    q.header();
    // The replayed batch is skipped, the next one applied, no full sync.
    q.seq = 0;
    q.batch(vec![change(ChangeOp::Update, b"b")]);
    assert_eq!(q.seq, old_seq);
    write(src.path(), b"c", b"c");
    let seq = q.batch(vec![change(ChangeOp::Update, b"c")]);
    let a = q.applied(&target, seq);
    assert!(!a.full);
    assert_eq!(a.first_seq, seq, "{a:?}");
    assert!(dst.path().join("only on target").exists());
    assert_eq!(q.finish(), Some(0));
    let first = q.out.seen.iter().find_map(|r| match r {
        Record::Applied(a) => Some(a.clone()),
        _ => None,
    });
    assert_eq!(
        first.unwrap().last_seq,
        seq,
        "the first result is the new batch"
    );

    // A new stream: full sync first.
    let mut r = Pushd::start_in(src.path(), &args, scratch.path());
    r.header();
    let full = r.result(&target);
    assert!(full.full && full.status == "ok", "{full:?}");
    assert!(!dst.path().join("only on target").exists());
    assert_same(src.path(), dst.path());
    assert_eq!(r.finish(), Some(0));
}

#[test]
fn sigterm_and_sigint_stop_cleanly_while_waiting_for_input() {
    for signal in [
        nix::sys::signal::Signal::SIGTERM,
        nix::sys::signal::Signal::SIGINT,
    ] {
        let (src, dst, scratch) = (tempdir(), tempdir(), tempdir());
        write(src.path(), b"a", b"a");
        let target = dst.path().display().to_string();
        let mut p = Pushd::start_in(src.path(), &[os(&target)], scratch.path());
        p.header();
        assert_eq!(p.result(&target).status, "ok");
        p.run.signal(signal);
        assert_eq!(p.run.wait_exit(), Some(0), "{signal}");
    }
}

#[test]
fn a_malformed_line_means_a_full_sync_and_end_deletes_nothing() {
    let (src, dst, scratch) = (tempdir(), tempdir(), tempdir());
    write(src.path(), b"a", b"a");
    let target = dst.path().display().to_string();
    let mut p = Pushd::start_in(src.path(), &[os("--no-init"), os(&target)], scratch.path());
    p.header();
    p.event(EventKind::Create, b"a", None);
    p.applied(&target, 1);
    // Changed behind pushd's back, then a line it cannot read.
    write(src.path(), b"unseen", b"u");
    p.stdin
        .as_mut()
        .unwrap()
        .write_all(b"{\"type\":\"event\",\"seq\":\n")
        .unwrap();
    let a = p.result(&target);
    assert!(a.full && a.status == "ok", "{a:?}");
    assert_same(src.path(), dst.path());
    // The source going away is no reason to delete anything.
    p.send(&Record::End(syncpipe::wire::event::End {
        seq: 9,
        ts: Timestamp::now(),
        reason: "root-unmounted".into(),
    }));
    // ... but it is the pipeline's failure: exit 4, as watchd's.
    assert_eq!(p.finish(), Some(4));
    assert_same(src.path(), dst.path());
}

#[test]
fn a_relative_root_is_never_synced() {
    let (src, dst, scratch) = (tempdir(), tempdir(), tempdir());
    // A tree that a relative root would hit, resolved against pushd's cwd.
    write(scratch.path(), b"rel/wrong", b"w");
    write(src.path(), b"right", b"r");
    let target = dst.path().display().to_string();
    let mut p = Pushd::start_in(src.path(), &[os(&target)], scratch.path());
    p.root = PathBuf::from("rel");
    p.header();
    p.batch(vec![change(ChangeOp::Update, b"wrong")]);
    p.root = src.path().to_path_buf();
    p.stream = "second".into();
    p.header();
    let a = p.result(&target);
    assert!(a.full && a.stream == "second", "{a:?}");
    assert_eq!(p.finish(), Some(0));
    assert_same(src.path(), dst.path());
}

#[test]
fn systemd_hears_ready_and_each_targets_lag() {
    let notify = crate::support::NotifySocket::new();
    let mut sshd = Sshd::start();
    sshd.stop();
    let (src, dst, scratch) = (tempdir(), tempdir(), tempdir());
    write(src.path(), b"a", b"a");
    let dead = format!("127.0.0.1:{}", dst.path().display());
    let mut args = ssh_flags(&sshd, scratch.path());
    args.push(dead.clone().into());
    let mut cmd = Command::new(bin("pushd"));
    cmd.args(["--retry-min", "50ms", "--retry-max", "400ms"])
        .args(&args)
        .env("NOTIFY_SOCKET", notify.path())
        .current_dir(scratch.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let _run = Running { child };
    let header = Record::Header(Header {
        v: 1,
        stream: "s1".into(),
        root: WirePath::from(src.path()),
        host: "h".into(),
        ts: Timestamp::now(),
        producer: "test/0".into(),
        backend: None,
    });
    let batch = Record::Batch(Batch {
        stream: "s1".into(),
        first_seq: 1,
        last_seq: 7,
        root: WirePath::from(src.path()),
        ts: Timestamp::now(),
        changes: vec![change(ChangeOp::Update, b"a")],
    });
    let mut lines = Vec::new();
    header.write_line(&mut lines).unwrap();
    batch.write_line(&mut lines).unwrap();
    stdin.write_all(&lines).unwrap();
    stdin.flush().unwrap();
    // Ready once the start-up sync has been tried, even on a dead target:
    // it is retried in the background rather than holding up the start.
    // READY=1 and the lag may come in either order or together.
    let mut seen: Vec<String> = Vec::new();
    while !(seen.iter().any(|m| m.contains("READY=1"))
        && seen.iter().any(|m| m.contains("7 behind")))
    {
        seen.push(
            notify
                .recv(crate::support::TIMEOUT)
                .unwrap_or_else(|| panic!("no READY=1 and lag; got {seen:?}")),
        );
    }
    let status = seen.iter().find(|m| m.contains("7 behind")).unwrap();
    // A target that never worked is shown failing, never as merely behind.
    assert!(
        status.contains(&format!("STATUS={dead}: FAILING since "))
            && status.contains("never synced")
            && status.contains("7 behind"),
        "{status}"
    );
}

#[test]
fn max_procs_bounds_concurrent_transfers_over_all_targets() {
    let (src, dsts, scratch) = (tempdir(), tempdir(), tempdir());
    // An rsync that logs when it starts and ends, first on PATH.
    let log = scratch.path().join("rsync.log");
    let wrap = scratch.path().join("bin");
    fs::create_dir_all(&wrap).unwrap();
    let real = String::from_utf8(
        Command::new("sh")
            .args(["-c", "command -v rsync"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    fs::write(
        wrap.join("rsync"),
        format!(
            "#!/bin/sh\necho \"+\" >> '{log}'\n'{real}' \"$@\"\nrc=$?\necho \"-\" >> '{log}'\nexit $rc\n",
            log = log.display(),
            real = real.trim()
        ),
    )
    .unwrap();
    fs::set_permissions(wrap.join("rsync"), fs::Permissions::from_mode(0o755)).unwrap();
    write(src.path(), b"big", &vec![5u8; 256 << 10]);
    let targets: Vec<String> = (0..3)
        .map(|i| dsts.path().join(format!("t{i}")).display().to_string())
        .collect();
    let mut cmd = Command::new(bin("pushd"));
    cmd.args(["--max-procs", "1", "--bwlimit", "2000"])
        .args(&targets)
        .env(
            "PATH",
            format!("{}:{}", wrap.display(), std::env::var("PATH").unwrap()),
        )
        .current_dir(scratch.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut out = RecordStream::new(child.stdout.take().unwrap());
    let mut run = Running { child };
    let header = Record::Header(Header {
        v: 1,
        stream: "s".into(),
        root: WirePath::from(src.path()),
        host: "h".into(),
        ts: Timestamp::now(),
        producer: "test/0".into(),
        backend: None,
    });
    stdin.write_all(header.to_line().as_bytes()).unwrap();
    stdin.write_all(b"\n").unwrap();
    drop(stdin);
    for _ in 0..3 {
        out.wait_for(
            "a result",
            |r| matches!(r, Record::Applied(a) if a.status == "ok"),
        );
    }
    assert_eq!(run.wait_exit(), Some(0));
    let (mut now, mut most) = (0i32, 0i32);
    for line in fs::read_to_string(&log).unwrap().lines() {
        now += if line == "+" { 1 } else { -1 };
        most = most.max(now);
    }
    // Each full sync is at least a transfer (its dry run for --max-delete
    // is skipped: the empty local targets hold nothing that could go).
    assert!(fs::read_to_string(&log).unwrap().lines().count() >= 3 * 2);
    assert_eq!(
        most, 1,
        "more than one rsync ran at once with --max-procs 1"
    );
    for t in &targets {
        assert_same(src.path(), Path::new(t));
    }
}

#[test]
fn connect_to_a_writer_socket_and_resume_after_a_restart() {
    let (src, dst, scratch) = (tempdir(), tempdir(), tempdir());
    let sock = scratch.path().join("watchd.sock");
    let state = scratch.path().join("state.json");
    write(src.path(), b"first", b"1");
    let _watchd = Running::spawn(
        Command::new(bin("watchd"))
            .arg("--listen")
            .arg(&sock)
            .arg(src.path())
            .stdout(Stdio::null()),
    );
    let target = dst.path().display().to_string();
    let start = || {
        let mut child = Command::new(bin("pushd"))
            .arg("--connect")
            .arg(&sock)
            .arg("--state")
            .arg(&state)
            .arg(&target)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = RecordStream::new(child.stdout.take().unwrap());
        (Running { child }, out)
    };
    let (run, mut out) = start();
    out.wait_for(
        "the start-up sync",
        |r| matches!(r, Record::Applied(a) if a.full && a.status == "ok"),
    );
    write(src.path(), b"second", b"2");
    converges(&mut out, src.path(), dst.path());
    drop(run);

    // Changed while pushd is away: the writer's backlog still holds it.
    write(src.path(), b"while away", b"3");
    let (_run, mut out) = start();
    let Record::Applied(first) = out.wait_for("a result", |r| matches!(r, Record::Applied(_)))
    else {
        unreachable!()
    };
    assert!(
        !first.full && first.status == "ok",
        "resumed, no full sync: {first:?}"
    );
    converges(&mut out, src.path(), dst.path());
}

#[test]
fn a_rescan_batch_at_an_applied_seq_is_still_a_full_sync() {
    // batchd writes a lone `rescan .` after a malformed line with the seq it
    // had reached, which pushd has already applied: it must not be skipped.
    let (src, dst, cwd) = (tempdir(), tempdir(), tempdir());
    let target = dst.path().to_str().unwrap().to_string();
    let mut p = Pushd::start_in(src.path(), &[os(&target)], cwd.path());
    p.header();
    p.applied(&target, 0);
    write(src.path(), b"a", b"a");
    let seq = p.batch(vec![change(ChangeOp::Update, b"a")]);
    p.applied(&target, seq);
    // Made without any event: only a full sync can bring it over.
    write(src.path(), b"unseen", b"x");
    let rescan = Record::Batch(Batch {
        stream: p.stream.clone(),
        first_seq: seq,
        last_seq: seq,
        root: WirePath::from(src.path()),
        ts: Timestamp::now(),
        changes: vec![change(ChangeOp::Rescan, b".")],
    });
    p.send(&rescan);
    let full = p.out.wait_for("the full sync the rescan asks for", |r| {
        matches!(r, Record::Applied(a) if a.full && a.last_seq >= seq && a.status == "ok" && a.first_seq >= seq)
    });
    assert!(matches!(full, Record::Applied(_)));
    assert_same(src.path(), dst.path());
    assert_eq!(p.finish(), Some(0));
}

#[test]
fn no_init_still_resyncs_when_the_state_names_another_stream() {
    let (src, dst, cwd) = (tempdir(), tempdir(), tempdir());
    let target = dst.path().to_str().unwrap().to_string();
    let state = cwd.path().join("state");
    write(src.path(), b"first", b"1");
    let args = [os("--state"), state.as_os_str(), os(&target)];
    let mut p = Pushd::start_in(src.path(), &args, cwd.path());
    p.header();
    p.applied(&target, 0);
    assert_eq!(p.finish(), Some(0));
    assert_same(src.path(), dst.path());

    // The source changes while pushd is down and its watcher restarts:
    // a new stream. --no-init must not skip the sync this needs.
    write(src.path(), b"while down", b"2");
    let args = [
        os("--no-init"),
        os("--state"),
        state.as_os_str(),
        os(&target),
    ];
    let mut p = Pushd::start_in(src.path(), &args, cwd.path());
    p.header();
    let r = p.out.wait_for(
        "a full sync for the new stream",
        |r| matches!(r, Record::Applied(a) if a.full && a.status == "ok"),
    );
    assert!(matches!(r, Record::Applied(_)));
    assert_same(src.path(), dst.path());
    assert_eq!(p.finish(), Some(0));
}

#[test]
fn a_new_files_old_name_goes_from_a_target_that_is_ahead() {
    // Issue 10: events folded while the target is down. A file made and
    // then renamed meanwhile is new to the fold, but the target may hold it
    // already (a recursive copy made while the source changed): its old name
    // must still be deleted there.
    let mut sshd = Sshd::start();
    let (src, dst, scratch) = (tempdir(), tempdir(), tempdir());
    let target = format!("127.0.0.1:{}", dst.path().display());
    let mut args = ssh_flags(&sshd, scratch.path());
    args.push(target.clone().into());
    let args: Vec<&OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    write(src.path(), b"keep", b"0");
    let mut p = Pushd::start_in(src.path(), &args, scratch.path());
    p.header();
    assert_eq!(p.result(&target).status, "ok");

    sshd.stop();
    write(src.path(), b"during", b"1");
    p.event(EventKind::Create, b"during", None);
    let failed = p.result(&target);
    assert_eq!(failed.status, "failed", "{failed:?}");
    // The target is ahead: it holds `new` already.
    write(src.path(), b"new", b"2");
    write(dst.path(), b"new", b"2");
    fs::rename(src.path().join("new"), src.path().join("moved")).unwrap();
    p.event(EventKind::Create, b"new", None);
    let last = p.event(EventKind::Move, b"moved", Some(b"new"));

    sshd.restart();
    let done = p.applied(&target, last);
    assert_eq!(done.status, "ok", "{done:?}");
    assert!(!dst.path().join("new").exists(), "the stale copy stayed");
    assert_same(src.path(), dst.path());
    assert_eq!(p.finish(), Some(0));
}

#[test]
fn a_kept_rename_the_target_is_ahead_of_is_harmless() {
    // The batch renames `a/f` to `b` and `c` to `d`, but the target already
    // holds the result of the first rename (an earlier recursive copy read
    // the source after it): the rename fails there, and the data is sent
    // instead; nothing stale stays, nothing is lost.
    let (src, dst, scratch) = (tempdir(), tempdir(), tempdir());
    write(src.path(), b"a/f", b"one");
    write(src.path(), b"c", b"two");
    let target = dst.path().display().to_string();
    let mut p = Pushd::start_in(src.path(), &[os(&target)], scratch.path());
    p.header();
    assert_eq!(p.result(&target).status, "ok");
    fs::rename(src.path().join("a/f"), src.path().join("b")).unwrap();
    fs::rename(src.path().join("c"), src.path().join("d")).unwrap();
    fs::rename(dst.path().join("a/f"), dst.path().join("b")).unwrap();
    let seq = p.batch(vec![
        moved(b"a/f", b"b", false),
        change(ChangeOp::Update, b"b"),
        moved(b"c", b"d", false),
        change(ChangeOp::Update, b"d"),
    ]);
    let done = p.applied(&target, seq);
    assert_eq!(done.status, "ok", "{done:?}");
    assert_same(src.path(), dst.path());
    assert_eq!(p.finish(), Some(0));
}

/// A batch listing `d/x` alone after `d` became a file on the source (its
/// own change comes in a later batch): rsync fails on such a path on every
/// retry (exit 23); pushd syncs `d` instead and the batch succeeds.
#[test]
fn a_path_below_what_became_a_file_does_not_fail_its_batch() {
    let (src, dst, scratch) = (tempdir(), tempdir(), tempdir());
    let target = dst.path().display().to_string();
    let args = [os("--direct-max"), os("0"), os(&target)];
    write(src.path(), b"d/x", b"x");
    let mut p = Pushd::start_in(src.path(), &args, scratch.path());
    p.header();
    assert_eq!(p.applied(&target, 0).status, "ok");
    assert!(dst.path().join("d/x").is_file());
    fs::remove_dir_all(src.path().join("d")).unwrap();
    write(src.path(), b"d", b"now a file");
    let seq = p.batch(vec![change(ChangeOp::Update, b"d/x")]);
    let a = p.applied(&target, seq);
    assert_eq!(a.status, "ok", "{a:?}");
    assert_same(src.path(), dst.path());
    assert_eq!(p.finish(), Some(0));
}
