//! Targets that can never work (unknown host, refused key, changed host
//! key, missing parent directory) against the real sshd: pushd says what
//! it is and what to do, and exits at start with the kit's code, while the
//! stream is still open; `--insist` keeps retrying instead.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::Read;
use std::process::{Command, Stdio};

use syncpipe::wire::event::Record;

use super::harness::{ssh_flags, write, Pushd};
use crate::support::sshd::Sshd;
use crate::support::tempdir;

/// Runs pushd on one target with the header sent and stdin left open;
/// returns its exit code and stderr.
fn start_fails(target: &str, flags: Vec<OsString>) -> (Option<i32>, String) {
    let (src, scratch) = (tempdir(), tempdir());
    write(src.path(), b"a", b"a");
    let mut args = flags;
    args.push(target.into());
    let args: Vec<&OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let mut cmd = Command::new(crate::support::bin("pushd"));
    cmd.args(["--retry-min", "50ms", "--retry-max", "400ms"])
        .args(&args)
        .current_dir(scratch.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let stdin = child.stdin.take();
    let out = crate::support::RecordStream::new(child.stdout.take().unwrap());
    let mut p = Pushd {
        run: crate::support::Running { child },
        stdin,
        out,
        stream: syncpipe::wire::event::new_stream_id().unwrap(),
        seq: 0,
        root: src.path().to_path_buf(),
    };
    p.header();
    // stdin stays open: the exit comes from the failure, not the input's end.
    let code = p.run.wait_exit();
    (code, err.join().unwrap())
}

#[test]
fn an_unknown_host_name_ends_the_start_with_8() {
    let (code, err) = start_fails("nosuch-host.invalid:/srv/x", vec![]);
    assert_eq!(code, Some(8), "{err}");
    assert!(
        err.contains("host name nosuch-host.invalid is unknown"),
        "{err}"
    );
    assert!(err.contains("--insist"), "{err}");
}

#[test]
fn a_refused_key_ends_the_start_with_6_and_names_keysetup() {
    let sshd = Sshd::start();
    let scratch = tempdir();
    let mut flags = ssh_flags(&sshd, scratch.path());
    // Another key than the one the server accepts.
    let other = scratch.path().join("other");
    let ok = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other)
        .status()
        .unwrap();
    assert!(ok.success());
    let i = flags.iter().position(|f| f == "--identity").unwrap();
    flags[i + 1] = other.into();
    let dst = tempdir();
    let target = format!("127.0.0.1:{}/d", dst.path().display());
    let (code, err) = start_fails(&target, flags);
    assert_eq!(code, Some(6), "{err}");
    assert!(err.contains("refused the ssh login"), "{err}");
    assert!(err.contains("keysetup check 127.0.0.1"), "{err}");
}

#[test]
fn a_changed_host_key_ends_the_start_with_7() {
    let sshd = Sshd::start();
    let scratch = tempdir();
    let flags = ssh_flags(&sshd, scratch.path());
    // known_hosts now pins another key for the same host and port.
    let fake = scratch.path().join("fake_host");
    let ok = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&fake)
        .status()
        .unwrap();
    assert!(ok.success());
    let public = fs::read_to_string(fake.with_extension("pub")).unwrap();
    let mut parts = public.split_whitespace();
    let line = format!(
        "[127.0.0.1]:{} {} {}\n",
        sshd.port(),
        parts.next().unwrap(),
        parts.next().unwrap()
    );
    fs::write(sshd.known_hosts(), line).unwrap();
    let dst = tempdir();
    let target = format!("127.0.0.1:{}/d", dst.path().display());
    let (code, err) = start_fails(&target, flags);
    assert_eq!(code, Some(7), "{err}");
    assert!(err.contains("has CHANGED"), "{err}");
}

#[test]
fn a_missing_parent_directory_ends_the_start_with_1_and_says_so() {
    let sshd = Sshd::start();
    let scratch = tempdir();
    let flags = ssh_flags(&sshd, scratch.path());
    let dst = tempdir();
    let target = format!("127.0.0.1:{}/no/such/parent", dst.path().display());
    let (code, err) = start_fails(&target, flags);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("parent does not exist"), "{err}");
    assert!(err.contains("mkdir -p"), "{err}");
}

#[test]
fn insist_keeps_retrying_a_target_that_never_worked() {
    let src = tempdir();
    write(src.path(), b"a", b"a");
    let scratch = tempdir();
    let target = "nosuch-host.invalid:/srv/x";
    let mut p = Pushd::start_in(
        src.path(),
        &[OsStr::new("--insist"), OsStr::new(target)],
        scratch.path(),
    );
    p.header();
    for _ in 0..2 {
        assert_eq!(p.result(target).status, "failed");
    }
    assert!(
        p.run.child.try_wait().unwrap().is_none(),
        "still running after two failures"
    );
    let failed = p
        .out
        .seen
        .iter()
        .filter(|r| matches!(r, Record::Applied(a) if a.status == "failed"))
        .count();
    assert!(failed >= 2);
    // At the end of input it gives up with the reason's code.
    assert_eq!(p.finish(), Some(1));
}
