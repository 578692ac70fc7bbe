//! How pushd treats its input: a seq that goes backwards, SIGTERM once
//! the input has ended, and the exit status of a pipeline whose first stage
//! failed or whose source vanished.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

use nix::sys::signal::Signal;
use syncpipe::wire::event::ChangeOp;

use super::harness::*;
use crate::support::{bin, tempdir, RecordStream, Running};

/// The seq `--state` holds for `target`.
fn state_seq(state: &Path, target: &str) -> Option<u64> {
    let json: serde_json::Value = serde_json::from_slice(&fs::read(state).ok()?).unwrap();
    json["targets"][target]["seq"].as_u64()
}

#[test]
fn a_seq_going_backwards_is_a_full_sync_and_never_skips_after_a_restart() {
    let (src, dst, scratch) = (tempdir(), tempdir(), tempdir());
    let state = scratch.path().join("state.json");
    let target = dst.path().display().to_string();
    let args = [os("--state"), state.as_os_str(), os(&target)];
    let mut p = Pushd::start_in(src.path(), &args, scratch.path());
    p.header();
    p.result(&target);
    write(src.path(), b"a", b"a");
    p.seq = u64::MAX - 1;
    let seq = p.batch(vec![change(ChangeOp::Update, b"a")]);
    assert_eq!(seq, u64::MAX);
    p.applied(&target, seq);
    assert_eq!(state_seq(&state, &target), Some(u64::MAX));
    // Back to 2: malformed input, so the whole root is synced (the file
    // written without a change of its own proves it) and 2 is stored.
    write(src.path(), b"unannounced", b"u");
    write(src.path(), b"b", b"b");
    p.seq = 1;
    let seq = p.batch(vec![change(ChangeOp::Update, b"b")]);
    let r = p.out.wait_for(
        "the full sync after the backwards seq",
        |r| matches!(r, syncpipe::wire::event::Record::Applied(a) if a.last_seq == 2 && a.status == "ok"),
    );
    let syncpipe::wire::event::Record::Applied(a) = r else {
        unreachable!()
    };
    assert!(a.full, "{a:?}");
    assert_eq!(seq, 2);
    assert_same(src.path(), dst.path());
    assert_eq!(p.finish(), Some(0));
    assert_eq!(state_seq(&state, &target), Some(2));

    // After a restart on the same stream, seq 3 is applied, not skipped.
    let stream = p.stream.clone();
    let mut p = Pushd::start_in(src.path(), &args, scratch.path());
    p.stream = stream;
    p.seq = 2;
    p.header();
    write(src.path(), b"c", b"c");
    let seq = p.batch(vec![change(ChangeOp::Update, b"c")]);
    p.applied(&target, seq);
    assert_same(src.path(), dst.path());
    assert_eq!(p.finish(), Some(0));
    assert_eq!(state_seq(&state, &target), Some(3));
}

#[test]
fn sigterm_after_the_input_ended_stops_while_a_target_keeps_failing() {
    let (src, dst, scratch) = (tempdir(), tempdir(), tempdir());
    let state = scratch.path().join("state.json");
    let good = dst.path().join("good").display().to_string();
    // Below a regular file: every transfer fails.
    fs::write(dst.path().join("file"), b"").unwrap();
    let bad = dst.path().join("file/copy").display().to_string();
    // Retries that would go on for minutes before pushd gave up.
    let args = [
        os("--retry-min"),
        os("2s"),
        os("--retry-max"),
        os("60s"),
        os("--state"),
        state.as_os_str(),
        os(&good),
        os(&bad),
    ];
    let mut p = Pushd::start_with(src.path(), &args, scratch.path());
    p.header();
    write(src.path(), b"x", b"x");
    let seq = p.batch(vec![change(ChangeOp::Update, b"x")]);
    p.applied(&good, seq);
    assert_eq!(p.result(&bad).status, "failed");
    p.stdin = None;
    // The input has ended; the bad target is still being retried.
    assert_eq!(p.result(&bad).status, "failed");
    p.run.signal(Signal::SIGTERM);
    assert_eq!(p.run.wait_exit(), Some(0), "pushd stops on SIGTERM");
    assert_eq!(state_seq(&state, &good), Some(seq));
    assert_eq!(state_seq(&state, &bad), None, "nothing was applied there");
}

fn spawn_pipeline(root: &Path, dst: &Path) -> (Running, Running, Running, RecordStream) {
    let mut watchd = Command::new(bin("watchd"));
    watchd
        .arg(root)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut watchd = Running::spawn(&mut watchd);
    let mut batchd = Command::new(bin("batchd"));
    batchd
        .args(["-d", "0.1"])
        .stdin(watchd.child.stdout.take().unwrap())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut batchd = Running {
        child: batchd.spawn().unwrap(),
    };
    let mut pushd = Command::new(bin("pushd"));
    pushd
        .arg(dst)
        .stdin(batchd.child.stdout.take().unwrap())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut pushd = Running {
        child: pushd.spawn().unwrap(),
    };
    let out = RecordStream::new(pushd.child.stdout.take().unwrap());
    (watchd, batchd, pushd, out)
}

/// `watchd /missing | batchd | pushd DST` with `set -o pipefail`: every
/// stage fails, each with its documented code (PIPESTATUS 3 14 14).
#[test]
fn a_missing_source_fails_every_stage_of_the_pipeline() {
    let (dst, scratch) = (tempdir(), tempdir());
    let (mut w, mut b, mut p, _out) = spawn_pipeline(&scratch.path().join("missing"), dst.path());
    let codes = [w.wait_exit(), b.wait_exit(), p.wait_exit()];
    assert_eq!(codes, [Some(3), Some(14), Some(14)]);
}

/// The watched root removed while running: watchd ends the stream with
/// an `end` record and exit 4; batchd and pushd exit 4 too, having
/// deleted nothing on the target.
#[test]
fn a_vanished_source_fails_every_stage_of_the_pipeline() {
    let (top, dst) = (tempdir(), tempdir());
    let root = top.path().join("root");
    fs::create_dir(&root).unwrap();
    fs::write(root.join("kept"), b"k").unwrap();
    let (mut w, mut b, mut p, mut out) = spawn_pipeline(&root, dst.path());
    out.wait_for(
        "the start-up sync",
        |r| matches!(r, syncpipe::wire::event::Record::Applied(a) if a.status == "ok"),
    );
    assert!(dst.path().join("kept").exists());
    fs::remove_dir_all(&root).unwrap();
    let codes = [w.wait_exit(), b.wait_exit(), p.wait_exit()];
    assert_eq!(codes, [Some(4), Some(4), Some(4)]);
    assert!(dst.path().join("kept").exists(), "nothing deleted");
}

#[test]
fn pushd_alone_exits_14_on_an_empty_input() {
    let dst = tempdir();
    let out = Command::new(bin("pushd"))
        .arg(dst.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(14));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("without a stream header"), "{err}");
}

/// A malformed line before any header: nothing can be synced yet (no root
/// is known), and the log says so instead of claiming a full sync; the
/// header that follows starts the stream with its full sync.
#[test]
fn a_malformed_line_before_any_header_is_logged_as_what_happens() {
    let (src, dst, scratch) = (tempdir(), tempdir(), tempdir());
    let log = scratch.path().join("pushd.log");
    let target = dst.path().display().to_string();
    write(src.path(), b"a", b"a");
    let mut p = Pushd::start_with_stderr(src.path(), &[os(&target)], scratch.path(), &log);
    let stdin = p.stdin.as_mut().unwrap();
    std::io::Write::write_all(stdin, b"{not json\n").unwrap();
    p.header();
    let a = p.result(&target);
    assert!(a.full && a.status == "ok", "{a:?}");
    assert_same(src.path(), dst.path());
    assert_eq!(p.finish(), Some(0));
    let text = fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("line 1 is malformed") && text.contains("before any header: nothing to sync"),
        "{text}"
    );
    assert!(!text.contains("syncing the whole root"), "{text}");
}
