//! The three stages as separate services connected by sockets, the way the
//! systemd units run them: each one restarted in turn while changes keep
//! coming, and the target still ends up equal to the source.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::pushd::harness::tree;
use crate::support::{bin, tempdir, wait_until, Running};

fn converged(src: &Path, dst: &Path) -> bool {
    wait_until(Duration::from_secs(30), || tree(src) == tree(dst))
}

struct Stages {
    src: PathBuf,
    dst: PathBuf,
    run: PathBuf,
}

impl Stages {
    fn watchd(&self) -> Running {
        Running::spawn(
            Command::new(bin("watchd"))
                .arg("--listen")
                .arg(self.run.join("watchd.sock"))
                .arg(&self.src)
                .stdout(Stdio::null()),
        )
    }

    fn batchd(&self) -> Running {
        Running::spawn(
            Command::new(bin("batchd"))
                .args(["-d", "100ms", "--connect"])
                .arg(self.run.join("watchd.sock"))
                .arg("--listen")
                .arg(self.run.join("batchd.sock"))
                .stdout(Stdio::null()),
        )
    }

    fn pushd(&self) -> Running {
        Running::spawn(
            Command::new(bin("pushd"))
                .arg("--connect")
                .arg(self.run.join("batchd.sock"))
                .arg("--state")
                .arg(self.run.join("pushd.state"))
                .arg(&self.dst)
                .stdout(Stdio::null()),
        )
    }
}

fn restart(proc: &mut Running, start: impl FnOnce() -> Running) {
    proc.signal(Signal::SIGTERM);
    assert_eq!(
        proc.wait_exit(),
        Some(0),
        "a stage stops cleanly on SIGTERM"
    );
    *proc = start();
}

#[test]
fn every_stage_restarted_loses_nothing() {
    let (src, dst, run) = (tempdir(), tempdir(), tempdir());
    let s = Stages {
        src: src.path().to_path_buf(),
        dst: dst.path().to_path_buf(),
        run: run.path().to_path_buf(),
    };
    fs::write(s.src.join("before"), b"there at start").unwrap();
    let mut watchd = s.watchd();
    let mut batchd = s.batchd();
    let mut pushd = s.pushd();
    assert!(converged(&s.src, &s.dst), "start-up sync");

    fs::create_dir_all(s.src.join("a/b")).unwrap();
    fs::write(s.src.join("a/b/one"), b"1").unwrap();
    assert!(
        converged(&s.src, &s.dst),
        "a change flows through the sockets"
    );

    // pushd away: changes made meanwhile arrive after it comes back.
    pushd.signal(Signal::SIGTERM);
    assert_eq!(pushd.wait_exit(), Some(0));
    fs::write(s.src.join("while pushd was down"), b"2").unwrap();
    fs::remove_file(s.src.join("before")).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    pushd = s.pushd();
    assert!(converged(&s.src, &s.dst), "after restarting pushd");

    // batchd restarted: it held pending changes in memory only.
    fs::write(s.src.join("pending in batchd"), b"3").unwrap();
    restart(&mut batchd, || s.batchd());
    fs::write(s.src.join("after batchd"), b"4").unwrap();
    assert!(converged(&s.src, &s.dst), "after restarting batchd");

    // watchd restarted: a new stream, so a full sync.
    restart(&mut watchd, || s.watchd());
    fs::rename(s.src.join("a"), s.src.join("renamed")).unwrap();
    fs::write(s.src.join("after watchd"), b"5").unwrap();
    assert!(converged(&s.src, &s.dst), "after restarting watchd");

    for p in [&mut pushd, &mut batchd, &mut watchd] {
        p.signal(Signal::SIGTERM);
        assert_eq!(p.wait_exit(), Some(0));
    }
}
