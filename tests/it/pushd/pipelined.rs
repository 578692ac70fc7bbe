//! Batches pipelined across the agent connection (issue 15): pushd sends
//! the next batch while the agent has not answered the ones before, and
//! `--state` never claims a batch the agent has not acknowledged.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use syncpipe::wire::event::ChangeOp;

use super::harness::*;
use super::remote::{agent_flags, agents, results_until};
use crate::support::sshd::Sshd;
use crate::support::{tempdir, wait_until, TIMEOUT};

/// The seq `--state` holds for `target` (0 when none).
fn state_seq(state: &Path, target: &str) -> u64 {
    let Ok(text) = fs::read(state) else {
        return 0;
    };
    let v: serde_json::Value = serde_json::from_slice(&text).unwrap();
    v["targets"][target]["seq"].as_u64().unwrap_or(0)
}

/// The status file's numbers for the one target: applied, seen, pending.
fn status(path: &Path) -> Option<(u64, u64, u64)> {
    let v: serde_json::Value = serde_json::from_slice(&fs::read(path).ok()?).ok()?;
    let t = &v["targets"][0];
    Some((
        t["applied_seq"].as_u64()?,
        t["seen_seq"].as_u64()?,
        t["pending_paths"].as_u64()?,
    ))
}

/// Watches `--state` on its own thread until dropped: whenever it claims
/// a seq, every file the batches up to it created must be on the target
/// (files are only ever added here, so a later look at the target can only
/// find more). What it found wrong is in `wrong`.
struct Watch {
    stop: Arc<AtomicBool>,
    wrong: Arc<Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watch {
    /// `made`: (seq, file name) of every batch, filled in as they are sent.
    fn start(
        state: PathBuf,
        target: String,
        dst: PathBuf,
        made: Arc<Mutex<Vec<(u64, String)>>>,
    ) -> Watch {
        let stop = Arc::new(AtomicBool::new(false));
        let wrong = Arc::new(Mutex::new(Vec::new()));
        let (s, w) = (Arc::clone(&stop), Arc::clone(&wrong));
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let claimed = state_seq(&state, &target);
                for (seq, name) in made.lock().unwrap().iter() {
                    if *seq <= claimed && fs::read(dst.join(name)).ok() != Some(name.clone().into())
                    {
                        w.lock().unwrap().push(format!(
                            "--state claims seq {claimed}, but {name} (seq {seq}) is not on the target"
                        ));
                    }
                }
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        });
        Watch {
            stop,
            wrong,
            thread: Some(thread),
        }
    }

    fn check(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap();
        let wrong = self.wrong.lock().unwrap();
        assert!(wrong.is_empty(), "{wrong:#?}");
    }
}

struct Setup {
    sshd: Sshd,
    src: tempfile::TempDir,
    dst: tempfile::TempDir,
    scratch: tempfile::TempDir,
    target: String,
    state: PathBuf,
    status: PathBuf,
    p: Pushd,
    made: Arc<Mutex<Vec<(u64, String)>>>,
}

/// pushd with the agent, `--state` and a status file, in step after a
/// first batch (so the agent is connected and has answered).
fn setup() -> Setup {
    setup_with(&[])
}

fn setup_with(extra: &[&str]) -> Setup {
    let sshd = Sshd::start();
    let (src, dst, scratch) = (tempdir(), tempdir(), tempdir());
    let target = format!("127.0.0.1:{}", dst.path().display());
    let state = scratch.path().join("state.json");
    let status = scratch.path().join("status.json");
    let mut args: Vec<OsString> = agent_flags(&sshd, scratch.path());
    args.extend(extra.iter().map(OsString::from));
    args.extend([
        "--state".into(),
        state.clone().into(),
        "--status-file".into(),
        status.clone().into(),
        target.clone().into(),
    ]);
    let args: Vec<&OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let mut p = Pushd::start_in(src.path(), &args, scratch.path());
    p.header();
    assert_eq!(p.result(&target).status, "ok");
    let made = Arc::new(Mutex::new(Vec::new()));
    let mut s = Setup {
        sshd,
        src,
        dst,
        scratch,
        target,
        state,
        status,
        p,
        made,
    };
    let seq = s.batch("first");
    assert_eq!(s.p.applied(&s.target, seq).status, "ok");
    assert_eq!(agents(s.dst.path()).len(), 1);
    s
}

impl Setup {
    /// A batch creating the file `name` (its content is its name).
    fn batch(&mut self, name: &str) -> u64 {
        write(self.src.path(), name.as_bytes(), name.as_bytes());
        let seq = self
            .p
            .batch(vec![change(ChangeOp::Update, name.as_bytes())]);
        self.made.lock().unwrap().push((seq, name.to_string()));
        seq
    }

    fn watch(&self) -> Watch {
        Watch::start(
            self.state.clone(),
            self.target.clone(),
            self.dst.path().to_path_buf(),
            Arc::clone(&self.made),
        )
    }

    /// Sends `count` batches while the agent is stopped: each is taken
    /// (the status file shows it seen, nothing pending) although none was
    /// answered — sent on behind the ones before, not waiting for them.
    fn batches_in_flight(&mut self, count: usize, stopped_at: u64) -> Vec<u64> {
        let mut seqs = Vec::new();
        for i in 0..count {
            let seq = self.batch(&format!("f{i}"));
            seqs.push(seq);
            assert!(
                wait_until(TIMEOUT, || status(&self.status)
                    .is_some_and(|(_, seen, pending)| seen == seq && pending == 0)),
                "batch {seq} was not sent while the ones before wait for answers: {:?}",
                status(&self.status)
            );
            let (applied, _, _) = status(&self.status).unwrap();
            assert_eq!(applied, stopped_at, "the status claims an unanswered batch");
            assert_eq!(state_seq(&self.state, &self.target), stopped_at);
            assert!(!self.dst.path().join(format!("f{i}")).exists());
        }
        seqs
    }
}

fn signal(pid: i32, s: Signal) {
    kill(Pid::from_raw(pid), s).unwrap();
}

#[test]
fn batches_sent_while_the_agent_is_stopped_are_claimed_only_once_answered() {
    let mut s = setup();
    let watch = s.watch();
    let stopped_at = state_seq(&s.state, &s.target);
    assert_eq!(stopped_at, s.p.seq);
    let pid = agents(s.dst.path())[0];
    signal(pid, Signal::SIGSTOP);
    let seqs = s.batches_in_flight(6, stopped_at);
    signal(pid, Signal::SIGCONT);
    let last = *seqs.last().unwrap();
    let results = results_until(&mut s.p, &s.target, last);
    assert!(results.iter().all(|a| a.status == "ok"), "{results:?}");
    // One result per batch, in order: each was its own transfer.
    let firsts: Vec<u64> = results.iter().map(|a| a.first_seq).collect();
    assert_eq!(firsts, seqs, "{results:?}");
    // Many more, quickly, with the agent running.
    for i in 0..40 {
        s.batch(&format!("g{i}"));
    }
    let last = s.p.seq;
    results_until(&mut s.p, &s.target, last);
    assert_eq!(state_seq(&s.state, &s.target), last);
    assert_same(s.src.path(), s.dst.path());
    assert_eq!(s.p.finish(), Some(0));
    watch.check();
    assert_eq!(s.sshd.logins(), 1, "one connection all along");
    drop(s.scratch);
}

#[test]
fn the_agent_killed_with_batches_in_flight_fails_them_and_they_are_applied_again() {
    let mut s = setup();
    let watch = s.watch();
    let stopped_at = state_seq(&s.state, &s.target);
    let pid = agents(s.dst.path())[0];
    signal(pid, Signal::SIGSTOP);
    let seqs = s.batches_in_flight(4, stopped_at);
    signal(pid, Signal::SIGKILL);
    let last = *seqs.last().unwrap();
    let results = results_until(&mut s.p, &s.target, last);
    assert!(
        results.iter().any(|a| a.status == "failed"),
        "the batches in flight failed, not claimed: {results:?}"
    );
    assert_eq!(state_seq(&s.state, &s.target), last);
    assert_same(s.src.path(), s.dst.path());
    // A new agent comes (after its backoff) and later batches use it.
    let mut n = 0;
    assert!(
        wait_until(TIMEOUT, || {
            n += 1;
            let seq = s.batch(&format!("after{n}"));
            results_until(&mut s.p, &s.target, seq);
            agents(s.dst.path()).len() == 1
        }),
        "a new agent"
    );
    let seq = s.batch("end");
    results_until(&mut s.p, &s.target, seq);
    assert_eq!(state_seq(&s.state, &s.target), seq);
    assert_same(s.src.path(), s.dst.path());
    assert_eq!(s.p.finish(), Some(0));
    watch.check();
}

#[test]
fn a_path_this_side_cannot_read_keeps_the_agents_connection() {
    let mut s = setup();
    let pid = agents(s.dst.path());
    // `d/x` is listed after `d` became a file on the source: reading it
    // fails here (not a directory), which says nothing about the link.
    write(s.src.path(), b"d/x", b"x");
    let seq = s.p.batch(vec![change(ChangeOp::Update, b"d/x")]);
    assert_eq!(s.p.applied(&s.target, seq).status, "ok");
    fs::remove_dir_all(s.src.path().join("d")).unwrap();
    write(s.src.path(), b"d", b"now a file");
    // (Alone in its batch: with `d` listed too, the plan sends `d` only.)
    let seq = s.p.batch(vec![change(ChangeOp::Update, b"d/x")]);
    let a = s.p.applied(&s.target, seq);
    assert_eq!(a.status, "ok", "{a:?}");
    assert!(
        !s.dst.path().join("d/x").exists(),
        "deleted: it is gone here"
    );
    let seq = s.p.batch(vec![change(ChangeOp::Update, b"d")]);
    let a = s.p.applied(&s.target, seq);
    assert_eq!(a.status, "ok", "{a:?}");
    assert_same(s.src.path(), s.dst.path());
    assert_eq!(
        agents(s.dst.path()),
        pid,
        "the same agent, never reconnected"
    );
    assert_eq!(s.p.finish(), Some(0));
}

/// An agent that stops answering behind a live ssh (a hung target file
/// system) is given up after `--io-timeout`: the batch fails and is
/// applied again over a new connection, never waited on forever.
#[test]
fn an_agent_that_stops_answering_is_given_up_after_the_io_timeout() {
    let mut s = setup_with(&["--io-timeout", "2s"]);
    let pid = agents(s.dst.path())[0];
    signal(pid, Signal::SIGSTOP);
    let seq = s.batch("while stopped");
    let target = s.target.clone();
    s.p.out
        .wait_for("the batch failed for want of an answer", |r| {
            matches!(r, syncpipe::wire::event::Record::Applied(a)
            if a.target == target && a.status == "failed"
                && a.error.as_deref().is_some_and(|e| e.contains("no answer")))
        });
    signal(pid, Signal::SIGKILL);
    let a = s.p.applied(&s.target, seq);
    assert_eq!(a.status, "ok", "{a:?}");
    assert_same(s.src.path(), s.dst.path());
    assert_eq!(s.p.finish(), Some(0));
}
