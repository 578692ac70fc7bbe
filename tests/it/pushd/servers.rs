//! The throw-away servers themselves: sshd and rsync daemon on loopback.

use std::process::Command;

use crate::support::rsyncd::{Module, Rsyncd};
use crate::support::sshd::Sshd;
use crate::support::tempdir;

#[test]
fn sshd_runs_commands_and_restarts_on_the_same_port() {
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
fn rsyncd_accepts_a_push_with_the_right_password_only() {
    let dst = tempdir();
    let src = tempdir();
    std::fs::write(src.path().join("f"), "x").unwrap();
    let daemon = Rsyncd::start(&[Module::with_auth("m", dst.path(), "u", "secret")]);
    let url = daemon.url("m", "").replace("rsync://", "rsync://u@");
    let push = |password: &str| {
        Command::new("rsync")
            .arg("-a")
            .arg(format!(
                "--password-file={}",
                daemon.password_file(password).display()
            ))
            .arg(format!("{}/", src.path().display()))
            .arg(&url)
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap()
    };
    assert!(push("secret").success(), "{}", daemon.log());
    assert_eq!(std::fs::read(dst.path().join("f")).unwrap(), b"x");
    std::fs::remove_file(dst.path().join("f")).unwrap();
    assert!(!push("wrong").success());
    assert!(!dst.path().join("f").exists());
}
