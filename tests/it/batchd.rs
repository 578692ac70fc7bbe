//! `batchd` through the real binary: when batches are written (delay, size,
//! end of input, signals), what passes through, and malformed input.

use std::io::{BufRead, BufReader, Write};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use syncpipe::wire::event::{Batch, ChangeOp, Record};

use crate::support::{bin, RecordStream, Running, TIMEOUT};

struct Batchd {
    proc: Running,
    stdin: Option<ChildStdin>,
    out: RecordStream,
    err: mpsc::Receiver<String>,
}

impl Batchd {
    fn start(args: &[&str]) -> Self {
        let child = Command::new(bin("batchd"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting batchd");
        let mut proc = Running { child };
        let stdin = proc.child.stdin.take();
        let out = RecordStream::new(proc.child.stdout.take().unwrap());
        let stderr = proc.child.stderr.take().unwrap();
        let (tx, err) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Batchd {
            proc,
            stdin,
            out,
            err,
        }
    }

    fn send(&mut self, lines: &[&str]) {
        // One write: lines written apart could fall on both sides of
        // batchd's settle on a loaded machine and split a batch a test
        // expects whole.
        let mut buf = Vec::new();
        for line in lines {
            buf.extend_from_slice(line.as_bytes());
            buf.push(b'\n');
        }
        let stdin = self.stdin.as_mut().expect("stdin still open");
        stdin.write_all(&buf).unwrap();
        stdin.flush().unwrap();
    }

    fn close_stdin(&mut self) {
        self.stdin = None;
    }

    fn next_batch(&mut self) -> Batch {
        match self
            .out
            .wait_for("a batch", |r| matches!(r, Record::Batch(_)))
        {
            Record::Batch(b) => b,
            _ => unreachable!(),
        }
    }

    /// Waits for a stderr line containing `needle`: proof that batchd's
    /// main loop has handled everything sent before the line that caused it.
    fn wait_stderr(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.err.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => continue,
                Err(_) => panic!("no stderr line with {needle:?}"),
            }
        }
    }

    /// Everything left on stdout until batchd exits, and its exit code.
    fn finish(&mut self) -> (Vec<Record>, Option<i32>) {
        let code = self.proc.wait_exit();
        (self.out.drain(Duration::from_millis(500)), code)
    }
}

fn header(stream: &str) -> String {
    format!(
        r#"{{"type":"header","v":1,"stream":"{stream}","root":"/data","host":"h","ts":"2026-11-21T10:00:00.000Z","producer":"test/0"}}"#
    )
}

fn event(seq: u64, kind: &str, path: &str, dir: bool) -> String {
    format!(
        r#"{{"type":"event","seq":{seq},"ts":"2026-11-21T10:00:00.000Z","kind":"{kind}","path":"{path}","dir":{dir}}}"#
    )
}

fn ops(batch: &Batch) -> Vec<String> {
    batch
        .changes
        .iter()
        .map(|c| format!("{:?} {}", c.op, c.path).to_lowercase())
        .collect()
}

/// No batch before end of input, a signal or `-n`: neither the delay nor
/// the quiet settle comes.
const NEVER: &[&str] = &["-d", "1h", "--settle", "0"];

#[test]
fn end_of_input_writes_the_pending_batch_and_records_keep_their_order() {
    let mut b = Batchd::start(NEVER);
    b.send(&[
        &header("s1"),
        &event(1, "create", "a", true),
        &event(2, "create", "a/f", false),
        &event(3, "modify", "a/f", false),
        r#"{"type":"note","text":"kept as is"}"#,
        &event(4, "create", "tmp", false),
        &event(5, "delete", "tmp", false),
        &event(6, "modify", "b", false),
    ]);
    b.close_stdin();
    let (records, code) = b.finish();
    assert_eq!(code, Some(0));
    let lines: Vec<String> = records.iter().map(Record::to_line).collect();
    assert_eq!(records.len(), 4, "{lines:#?}");
    assert!(matches!(&records[0], Record::Header(h) if h.stream == "s1"));
    let Record::Batch(first) = &records[1] else {
        panic!("{lines:#?}")
    };
    assert_eq!((first.first_seq, first.last_seq), (1, 3));
    assert_eq!(ops(first), ["update a", "update a/f"]);
    assert_eq!(first.stream, "s1");
    assert_eq!(first.root.as_bytes(), b"/data");
    assert_eq!(lines[2], r#"{"type":"note","text":"kept as is"}"#);
    let Record::Batch(second) = &records[3] else {
        panic!("{lines:#?}")
    };
    assert_eq!((second.first_seq, second.last_seq), (4, 6));
    // Made and gone within the batch is still a delete: an earlier batch's
    // recursive copy may have put it on the target.
    assert_eq!(ops(second), ["delete tmp", "update b"]);
}

#[test]
fn a_batch_is_written_after_the_delay() {
    let mut b = Batchd::start(&["-d", "0.2", "--settle", "0"]);
    b.send(&[&header("s1")]);
    b.out
        .wait_for("the header", |r| matches!(r, Record::Header(_)));
    let sent = Instant::now();
    b.send(&[
        &event(1, "modify", "x", false),
        &event(2, "modify", "x", false),
    ]);
    let batch = b.next_batch();
    // A lower bound only: a slow machine makes it later, never earlier.
    assert!(sent.elapsed() >= Duration::from_millis(200));
    assert_eq!((batch.first_seq, batch.last_seq), (1, 2));
    assert_eq!(ops(&batch), ["update x"]);
    assert!(!batch.ts.0.is_empty());
    // Still running: the next events make the next batch.
    b.send(&[&event(3, "delete", "x", false)]);
    assert_eq!(ops(&b.next_batch()), ["delete x"]);
}

#[test]
fn a_quiet_input_writes_its_batch_without_waiting_out_the_delay() {
    // The default settle: with an hour's delay, a batch still comes once
    // the input went quiet, and the stage goes on.
    let mut b = Batchd::start(&["-d", "1h"]);
    b.send(&[
        &header("s1"),
        &event(1, "modify", "x", false),
        &event(2, "modify", "y", false),
    ]);
    let batch = b.next_batch();
    assert_eq!((batch.first_seq, batch.last_seq), (1, 2));
    assert_eq!(ops(&batch), ["update x", "update y"]);
    b.send(&[&event(3, "delete", "x", false)]);
    let batch = b.next_batch();
    assert_eq!((batch.first_seq, batch.last_seq), (3, 3));
    assert_eq!(ops(&batch), ["delete x"]);
}

#[test]
fn a_batch_is_written_once_max_changes_are_pending() {
    let mut b = Batchd::start(&["-d", "1h", "-n", "3", "--settle", "0"]);
    b.send(&[&header("s1")]);
    // Four events on one path are one change; the third path makes three.
    for seq in 1..=4 {
        b.send(&[&event(seq, "modify", "a", false)]);
    }
    b.send(&[
        &event(5, "modify", "b", false),
        &event(6, "modify", "c", false),
    ]);
    let batch = b.next_batch();
    assert_eq!((batch.first_seq, batch.last_seq), (1, 6));
    assert_eq!(ops(&batch), ["update a", "update b", "update c"]);
}

#[test]
fn sigusr1_writes_the_pending_batch_and_goes_on() {
    let mut b = Batchd::start(NEVER);
    b.send(&[&header("s1"), &event(1, "modify", "a", false), "not json"]);
    // The warning proves batchd has taken both lines in.
    b.wait_stderr("line 3");
    b.proc.signal(Signal::SIGUSR1);
    // The status summary in the log, as every program's SIGUSR1 gives.
    let said = b.wait_stderr("SIGUSR1: ");
    assert!(
        said.contains("events folded into") && said.contains("writing what is pending"),
        "{said}"
    );
    let batch = b.next_batch();
    assert_eq!(batch.last_seq, 1);
    assert_eq!(ops(&batch), ["rescan ."]);
    b.send(&[&event(2, "modify", "b", false)]);
    b.close_stdin();
    let (records, code) = b.finish();
    assert_eq!(code, Some(0));
    let Some(Record::Batch(last)) = records.last() else {
        panic!("{records:?}")
    };
    assert_eq!(ops(last), ["update b"]);
}

#[test]
fn sigterm_and_sigint_write_the_pending_batch_and_exit_0() {
    for sig in [Signal::SIGTERM, Signal::SIGINT] {
        let mut b = Batchd::start(NEVER);
        b.send(&[
            &header("s1"),
            &event(1, "modify", "a", false),
            &event(2, "modify", "b", false),
            "{\"type\":\"event\"}",
        ]);
        b.wait_stderr("line 4");
        b.proc.signal(sig);
        let (records, code) = b.finish();
        assert_eq!(code, Some(0), "{sig}");
        let Some(Record::Batch(last)) = records.last() else {
            panic!("{sig}: {records:?}")
        };
        assert_eq!((last.first_seq, last.last_seq), (1, 2), "{sig}");
        assert_eq!(ops(last), ["rescan ."], "{sig}");
    }
}

#[test]
fn a_malformed_line_is_reported_with_its_number_and_makes_a_full_rescan() {
    let mut b = Batchd::start(NEVER);
    b.send(&[
        &header("s1"),
        &event(1, "modify", "a", false),
        "",
        "{\"type\":\"event\",\"seq\":\"two\"}",
        &event(3, "modify", "b", false),
    ]);
    let warning = b.wait_stderr("line 4");
    assert!(warning.contains("full rescan"), "{warning}");
    b.close_stdin();
    let (records, code) = b.finish();
    assert_eq!(code, Some(0));
    let batches: Vec<&Batch> = records
        .iter()
        .filter_map(|r| match r {
            Record::Batch(b) => Some(b),
            _ => None,
        })
        .collect();
    assert_eq!(batches.len(), 1);
    assert_eq!(ops(batches[0]), ["rescan ."]);
    assert_eq!((batches[0].first_seq, batches[0].last_seq), (1, 3));
}

#[test]
fn a_new_stream_writes_what_is_pending_first() {
    let mut b = Batchd::start(NEVER);
    b.send(&[
        &header("s1"),
        &event(41, "modify", "old", false),
        &header("s2"),
        &event(1, "modify", "new", false),
    ]);
    b.close_stdin();
    let (records, code) = b.finish();
    assert_eq!(code, Some(0));
    let seen: Vec<String> = records
        .iter()
        .map(|r| match r {
            Record::Header(h) => format!("header {}", h.stream),
            Record::Batch(b) => format!("batch {} {} {}", b.stream, b.first_seq, ops(b).join(",")),
            other => other.to_line(),
        })
        .collect();
    assert_eq!(
        seen,
        [
            "header s1",
            "batch s1 41 update old",
            "header s2",
            "batch s2 1 update new"
        ]
    );
}

#[test]
fn paths_that_are_not_utf8_come_out_as_they_went_in() {
    let mut b = Batchd::start(NEVER);
    let odd = r#"{"type":"event","seq":1,"ts":"t","kind":"move","path":{"bytes":"LW4gJCh4KQr/"},"dir":false,"from":"a b"}"#;
    b.send(&[&header("s1"), odd]);
    b.close_stdin();
    let (records, code) = b.finish();
    assert_eq!(code, Some(0));
    let Some(Record::Batch(batch)) = records.last() else {
        panic!("{records:?}")
    };
    assert_eq!(
        batch.changes.len(),
        2,
        "a move, then a re-read of its new path"
    );
    assert_eq!(batch.changes[0].op, ChangeOp::Move);
    assert_eq!(batch.changes[1].op, ChangeOp::Update);
    assert_eq!(batch.changes[1].path, batch.changes[0].path);
    assert_eq!(batch.changes[0].path.as_bytes(), b"-n $(x)\n\xff");
    assert_eq!(batch.changes[0].from.as_ref().unwrap().as_bytes(), b"a b");
}

#[test]
fn a_reader_that_goes_away_is_a_quiet_exit_0() {
    let mut child = Command::new(bin("batchd"))
        .args(["-d", "0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting batchd");
    drop(child.stdout.take());
    let mut stdin = child.stdin.take().unwrap();
    for seq in 1..=50 {
        // batchd may be gone already: then this write fails, as it should.
        let _ = stdin.write_all(format!("{}\n", event(seq, "modify", "a", false)).as_bytes());
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let noise: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.contains("before any"))
        .collect();
    assert!(noise.is_empty(), "{noise:?}");
}

#[test]
fn watchd_into_batchd_gives_batches_of_real_changes() {
    let dir = crate::support::tempdir();
    let root = dir.path().join("src");
    std::fs::create_dir(&root).unwrap();
    let mut watchd = Running {
        child: Command::new(bin("watchd"))
            .arg(&root)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting watchd"),
    };
    let events = watchd.child.stdout.take().unwrap();
    let mut batchd = Running {
        child: Command::new(bin("batchd"))
            .args(["-d", "0.3"])
            .stdin(Stdio::from(events))
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting batchd"),
    };
    let mut out = RecordStream::new(batchd.child.stdout.take().unwrap());
    // watchd writes its header once its watches are in place; batchd passes
    // it through at once.
    out.wait_for("the header", |r| matches!(r, Record::Header(_)));

    std::fs::create_dir(root.join("a")).unwrap();
    std::fs::write(root.join("a/f"), b"data").unwrap();
    let mut seen = Vec::new();
    while !seen.iter().any(|c: &String| c == "update a/f") {
        let Record::Batch(batch) = out.wait_for("a batch", |r| matches!(r, Record::Batch(_)))
        else {
            unreachable!()
        };
        for c in ops(&batch) {
            if !seen.contains(&c) {
                seen.push(c);
            }
        }
    }
    assert_eq!(seen, ["update a", "update a/f"]);

    // A directory that existed before this batch opened: renamed, not resent.
    std::fs::rename(root.join("a"), root.join("b")).unwrap();
    let Record::Batch(batch) = out.wait_for(
        "the rename",
        |r| matches!(r, Record::Batch(b) if b.changes.iter().any(|c| c.path.as_bytes() == b"b")),
    ) else {
        unreachable!()
    };
    let moved = batch
        .changes
        .iter()
        .find(|c| c.path.as_bytes() == b"b")
        .unwrap();
    assert_eq!(moved.op, ChangeOp::Move, "{:?}", batch.changes);
    assert_eq!(moved.from.as_ref().unwrap().as_bytes(), b"a");
    assert!(moved.dir);

    watchd.signal(Signal::SIGTERM);
    assert_eq!(watchd.wait_exit(), Some(0));
    // watchd's end of output is batchd's end of input.
    assert_eq!(batchd.wait_exit(), Some(0));
}

#[test]
fn the_summary_counts_the_batch_written_at_end_of_input() {
    // The only batch is the one end of input closes (the delay is an hour):
    // `-v`'s summary must count it, not say "0 batches".
    let input = concat!(
        r#"{"type":"header","v":1,"stream":"00000000000000000000000000000001","root":"/r","host":"h","ts":"2026-01-01T00:00:00Z","producer":"t"}"#,
        "\n",
        r#"{"type":"event","seq":1,"ts":"2026-01-01T00:00:00Z","kind":"create","path":"a","dir":false}"#,
        "\n",
    );
    let mut child = Command::new(bin("batchd"))
        .args(["-v", "-d", "1h", "--settle", "0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting batchd");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.matches(r#""type":"batch""#).count(), 1, "{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("1 events folded into 1 batches"),
        "the summary:\n{stderr}"
    );
}
