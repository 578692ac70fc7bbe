//! A SOURCE or local target under /tmp in a service with `PrivateTmp=yes`
//! is an error that says why, not a silent empty tree. The private /tmp is
//! made the way systemd makes it (a bind mount of a `systemd-private-…`
//! directory over /tmp in a new mount namespace), without systemd.

use std::fs;
use std::process::Command;

use crate::support::{bin, tempdir};

/// Runs `program args` with a private /tmp as systemd would set it up.
fn behind_private_tmp(program: &str, args: &[&str]) -> (Option<i32>, String) {
    let scratch = tempdir();
    let private = scratch
        .path()
        .join("systemd-private-0123-syncpipe@test.service-AbCd/tmp");
    fs::create_dir_all(&private).unwrap();
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--"])
        .arg("sh")
        .arg("-c")
        .arg(r#"mount --bind "$0" /tmp && exec "$@""#)
        .arg(&private)
        .arg(bin(program))
        .args(args)
        .output()
        .expect("unshare (util-linux)");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn watchd_refuses_a_source_under_a_private_tmp() {
    let (code, err) = behind_private_tmp("watchd", &["/tmp/data"]);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("the source /tmp/data is under /tmp"), "{err}");
    assert!(err.contains("PrivateTmp=yes"), "{err}");
}

#[test]
fn pushd_refuses_a_local_target_under_a_private_tmp() {
    let (code, err) = behind_private_tmp("pushd", &["/tmp/copy"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("the target /tmp/copy is under /tmp"), "{err}");
    assert!(err.contains("systemctl edit"), "{err}");
    // Without the private /tmp the same target is accepted (stdin is empty:
    // pushd ends with the input, not with the check).
    let out = Command::new(bin("pushd"))
        .arg("/tmp/syncpipe-privatetmp-never-written")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("PrivateTmp"), "{err}");
}
