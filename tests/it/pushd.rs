//! pushd against real targets: local directories, sshd on loopback and an
//! rsync daemon, fed records written by the test on its stdin.

use std::process::Command;

use crate::support::rsyncd::{Module, Rsyncd};
use crate::support::sshd::Sshd;
use crate::support::tempdir;

#[test]
fn support_sshd_runs_commands_and_restarts_on_the_same_port() {
    let mut sshd = Sshd::start();
    let out = sshd.ssh("echo hello").output().unwrap();
    assert_eq!(
        out.stdout,
        b"hello\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let port = sshd.port();
    sshd.stop();
    assert!(!sshd.ssh("true").status().unwrap().success());
    sshd.restart();
    assert_eq!(sshd.port(), port);
    assert!(sshd.ssh("true").status().unwrap().success());
}

#[test]
fn support_rsyncd_accepts_a_push_with_a_password_file() {
    let dst = tempdir();
    let src = tempdir();
    std::fs::write(src.path().join("f"), "x").unwrap();
    let daemon = Rsyncd::start(&[Module::with_auth("m", dst.path(), "u", "secret")]);
    let url = daemon.url("m", "").replace("rsync://", "rsync://u@");
    let good = Command::new("rsync")
        .arg("-a")
        .arg(format!(
            "--password-file={}",
            daemon.password_file("secret").display()
        ))
        .arg(format!("{}/", src.path().display()))
        .arg(&url)
        .status()
        .unwrap();
    assert!(good.success(), "{}", daemon.log());
    assert_eq!(std::fs::read(dst.path().join("f")).unwrap(), b"x");
    let bad = Command::new("rsync")
        .arg("-a")
        .arg(format!(
            "--password-file={}",
            daemon.password_file("wrong").display()
        ))
        .arg(format!("{}/", src.path().display()))
        .arg(&url)
        .status()
        .unwrap();
    assert!(!bad.success());
}
