//! Seeded random churn on both replicas while bisync runs: one-shot runs in
//! a loop (some killed -9 at a random moment), or `bisync --watch`. Once both
//! sides are quiet, a few runs must bring them to one tree, and a further run
//! must find nothing to do. Paths changed during a run, directories copied
//! while they change, renames racing the scan, entries swapped for another
//! type under the same name: all part of the workload.
//!
//! A failure prints the seed and the command to replay it:
//! `CHURN_SEED=N CHURN_ROUNDS=1 cargo test --test it bisync::churn`.
//! `CHURN_OPS` sets the operations per side (default 250).

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use nix::sys::signal::Signal;

use super::{Pair, CONFLICTS, SYNCED};
use crate::pushd::churn::{base_seed, env_u64, Churn};
use crate::support::{tree, wait_until, NotifySocket, Running};

/// Churn on a and b at once, in two threads, while `during` runs until both
/// are done (it gets a flag that turns true then).
fn churn_both(p: &Pair, seed: u64, ops: usize, during: impl FnOnce(&AtomicBool)) {
    let done = Arc::new(AtomicBool::new(false));
    let sides: Vec<_> = [(&p.a, seed), (&p.b, seed ^ 0x5bd1_e995)]
        .into_iter()
        .map(|(root, s)| {
            let root = root.clone();
            thread::spawn(move || {
                let mut churn = Churn::new(s, &root);
                churn.swaps = true;
                churn.run(ops, |_| {})
            })
        })
        .collect();
    let watcher = {
        let done = done.clone();
        thread::spawn(move || {
            for side in sides {
                side.join().expect("a churn thread");
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    during(&done);
    watcher.join().unwrap();
}

/// The tree a churn starts from, on a, and a first sync that copies it to b.
fn seeded_pair(seed: u64) -> Pair {
    let p = Pair::new();
    let mut c = Churn::new(seed.wrapping_mul(31), &p.a);
    for _ in 0..120 {
        c.step();
    }
    let (code, _, err) = p.sync(&[]);
    assert_eq!(code, SYNCED, "seed {seed}: the first sync: {err}");
    p
}

/// Runs bisync until it finds nothing to do; the replicas must then agree.
fn settles(p: &Pair, seed: u64, how: &str) {
    let replay = format!(
        "replay: CHURN_SEED={seed} CHURN_ROUNDS=1 CHURN_OPS={} cargo test --test it bisync::churn",
        env_u64("CHURN_OPS").unwrap_or(250)
    );
    let mut codes = Vec::new();
    loop {
        let (code, out, err) = p.sync(&["--max-delete", "100%"]);
        codes.push(code);
        assert!(
            [0, SYNCED, CONFLICTS].contains(&code),
            "seed {seed} ({how}): a quiet rerun exited {code}: {err}{out}\n{replay}"
        );
        if code == 0 {
            break;
        }
        assert!(
            codes.len() < 4,
            "seed {seed} ({how}): no convergence after quiet runs {codes:?}: {err}\n{replay}"
        );
    }
    let (ta, tb) = (tree(&p.a), tree(&p.b));
    if ta != tb {
        let only = |x: &super::BTreeMap<Vec<u8>, super::Node>,
                    y: &super::BTreeMap<Vec<u8>, super::Node>| {
            x.iter()
                .filter(|(k, v)| y.get(*k) != Some(*v))
                .map(|(k, v)| format!("{:?} {v:?}", String::from_utf8_lossy(k)))
                .take(20)
                .collect::<Vec<_>>()
        };
        panic!(
            "seed {seed} ({how}): runs {codes:?} said in sync, the replicas differ\n\
             a only/differs: {:?}\nb only/differs: {:?}\n{replay}",
            only(&ta, &tb),
            only(&tb, &ta)
        );
    }
    assert!(
        !ta.keys().any(|k| k.windows(9).any(|w| w == b".~bisync.")),
        "seed {seed} ({how}): temporary files left\n{replay}"
    );
    eprintln!(
        "bisync churn: seed {seed} ({how}): quiet runs {codes:?}, {} entries",
        ta.len()
    );
}

/// One-shot runs back to back while both sides churn; every third one
/// killed -9 after a random time. No run may fail for a reason other than
/// the churn (skipped paths, a guard); the archive must stay readable.
fn runs_round(seed: u64) {
    let p = seeded_pair(seed);
    let ops = env_u64("CHURN_OPS").unwrap_or(250) as usize;
    let mut rng = crate::pushd::churn::Rng::new(seed ^ 0xdead_beef);
    let mut codes = Vec::new();
    churn_both(&p, seed, ops, |done| {
        let mut i = 0;
        while !done.load(Ordering::SeqCst) {
            i += 1;
            let mut cmd = p.command(&["--max-delete", "100%"]);
            cmd.arg(&p.a)
                .arg(&p.b)
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            let mut run = Running::spawn(&mut cmd);
            if i % 3 == 0 {
                thread::sleep(Duration::from_millis(rng.below(400) as u64));
                let _ = nix::sys::signal::kill(run.pid(), Signal::SIGKILL);
            }
            let out = finish(&mut run.child);
            let code = out.0;
            assert!(
                !out.1.contains("damaged") && !out.1.contains("panicked"),
                "seed {seed}: run {i}: {}",
                out.1
            );
            // 1: an unexpected failure; churn alone must never cause one.
            assert!(
                code != Some(1) && code != Some(101) && code != Some(2),
                "seed {seed}: run {i} exited {code:?} during churn: {}\n\
                 replay: CHURN_SEED={seed} CHURN_ROUNDS=1 cargo test --test it bisync::churn",
                out.1
            );
            codes.push(code);
        }
    });
    eprintln!("bisync churn: seed {seed}: runs during churn {codes:?}");
    settles(&p, seed, "one-shot runs, some killed -9");
}

/// `bisync --watch` while both sides churn; once quiet it must bring them
/// to one tree by itself, then a one-shot run finds them in sync.
fn watch_round(seed: u64) {
    let p = seeded_pair(seed);
    let ops = env_u64("CHURN_OPS").unwrap_or(250) as usize;
    let notify = NotifySocket::new();
    let log = p.dir.path().join("watch.log");
    let mut cmd = p.command(&["--watch", "--delay", "100ms", "--max-delete", "100%", "-v"]);
    cmd.arg(&p.a)
        .arg(&p.b)
        .env("NOTIFY_SOCKET", notify.path())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let mut run = Running::spawn(&mut cmd);
    notify.wait_for("READY=1");
    churn_both(&p, seed, ops, |done| {
        while !done.load(Ordering::SeqCst) {
            thread::sleep(Duration::from_millis(50));
        }
    });
    let agreed = wait_until(Duration::from_secs(90), || tree(&p.a) == tree(&p.b));
    let tail = || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    };
    assert!(
        run.child.try_wait().unwrap().is_none(),
        "seed {seed}: bisync --watch exited during churn\n{}",
        tail()
    );
    run.signal(Signal::SIGTERM);
    let stopped = wait_until(Duration::from_secs(60), || {
        run.child.try_wait().unwrap().is_some()
    });
    assert!(
        stopped && run.wait_exit() == Some(0),
        "seed {seed}: SIGTERM ends --watch with 0 (agreed: {agreed})\n{}",
        tail()
    );
    if !agreed {
        eprintln!("bisync churn: seed {seed}: --watch did not bring the replicas together");
    }
    settles(&p, seed, "--watch");
    assert!(
        agreed,
        "seed {seed}: bisync --watch left the replicas apart after the churn (a one-shot run \
         mended them)\nreplay: CHURN_SEED={seed} CHURN_ROUNDS=1 cargo test --test it bisync::churn"
    );
}

/// Waits for a child whose stderr is piped: its exit code (None when
/// killed) and what it wrote there.
fn finish(child: &mut std::process::Child) -> (Option<i32>, String) {
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut err);
    }
    (child.wait().expect("waiting for bisync").code(), err)
}

fn rounds(test: &str, round: fn(u64)) {
    let seed = base_seed();
    let n = env_u64("CHURN_ROUNDS").unwrap_or(1);
    eprintln!("bisync churn: {test}: CHURN_SEED={seed} CHURN_ROUNDS={n}");
    for i in 0..n {
        round(seed.wrapping_add(i));
    }
}

#[test]
fn churn_on_both_sides_with_killed_runs_converges() {
    rounds("churn_on_both_sides_with_killed_runs_converges", runs_round);
}

#[test]
fn churn_on_both_sides_under_watch_converges() {
    rounds("churn_on_both_sides_under_watch_converges", watch_round);
}
