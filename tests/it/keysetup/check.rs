//! `keysetup check` against a real sshd: each fault it must find, one at a
//! time, on the local and the remote side.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use super::{keygen, stdout, Local, Remote};
use crate::support::bin;

/// `keysetup check` as the test runs it: stdout lines and the exit code.
fn check(local: &Local, remote: &Remote, port: &str) -> (String, Option<i32>) {
    let admin = remote.admin_key.display().to_string();
    let dest = remote.dest();
    let out = local.keysetup(&["check", "-p", port, "--login-key", &admin, &dest]);
    (stdout(&out), out.status.code())
}

fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn check_finds_each_fault() {
    let remote = Remote::new();
    let local = Local::new();
    let port = remote.port();

    // Nothing set up: no key, host key unknown (the worse: exit 7).
    let (text, code) = check(&local, &remote, &port);
    assert_eq!(code, Some(7), "{text}");
    assert!(
        text.contains("FAULT: the key ") && text.contains("is missing"),
        "{text}"
    );
    assert!(
        text.contains("FAULT: the host key of [127.0.0.1]:"),
        "{text}"
    );

    assert!(local.setup(&remote, &[]).status.success());
    let (text, code) = check(&local, &remote, &port);
    assert_eq!(code, Some(0), "{text}");
    assert!(!text.contains("FAULT"), "{text}");
    assert!(text.contains("logs in without a password"), "{text}");

    // Local side: a private key others can read (ssh will not use it).
    chmod(&local.key(), 0o644);
    let (text, code) = check(&local, &remote, &port);
    assert_eq!(code, Some(6), "{text}");
    assert!(
        text.contains("has mode 644") && text.contains("chmod 600"),
        "{text}"
    );
    chmod(&local.key(), 0o600);

    // Local side: ~/.ssh of another user.
    let ssh_dir = local.home().join(".ssh");
    nix::unistd::chown(&ssh_dir, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
    let (text, code) = check(&local, &remote, &port);
    assert_eq!(code, Some(6), "{text}");
    assert!(text.contains("belongs to uid 65534"), "{text}");
    nix::unistd::chown(&ssh_dir, Some(nix::unistd::Uid::from_raw(0)), None).unwrap();

    // An agent socket that does not answer.
    let admin = remote.admin_key.display().to_string();
    let dest = remote.dest();
    let out = Command::new(bin("keysetup"))
        .args(["check", "-p", &port, "--login-key", &admin, &dest])
        .env("HOME", local.home())
        .env("SSH_AUTH_SOCK", local.home().join("no-agent.sock"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(6));
    assert!(stdout(&out).contains("does not answer"), "{}", stdout(&out));

    // Remote side: modes sshd's StrictModes refuses, and another owner.
    let ak = remote.authorized_keys();
    type Break = fn(&Remote);
    let faults: [(&str, Break); 4] = [
        // Others may write (Debian's sshd allows group write for a
        // private group, so the test makes it world-writable).
        ("~/.ssh/authorized_keys has mode 666", |r| {
            chmod(&r.authorized_keys(), 0o666)
        }),
        ("~/.ssh has mode 777", |r| chmod(&r.ssh_dir(), 0o777)),
        ("remote home directory has mode 777", |r| {
            chmod(&r.user.home, 0o777)
        }),
        ("authorized_keys belongs to uid 0", |r| {
            nix::unistd::chown(
                &r.authorized_keys(),
                Some(nix::unistd::Uid::from_raw(0)),
                None,
            )
            .unwrap()
        }),
    ];
    for (what, fix) in faults {
        fix(&remote);
        let (text, code) = check(&local, &remote, &port);
        assert_eq!(code, Some(6), "{what}: {text}");
        assert!(text.contains(what), "{what}: {text}");
        // sshd really refuses the key then.
        assert!(
            text.contains("FAULT: a login with the key"),
            "{what}: {text}"
        );
        chmod(&remote.user.home, 0o755);
        remote.user.own(&remote.ssh_dir());
        chmod(&remote.ssh_dir(), 0o700);
        chmod(&ak, 0o600);
    }

    // Remote side: the key line is gone.
    let kept = fs::read(&ak).unwrap();
    fs::write(&ak, b"").unwrap();
    let (text, code) = check(&local, &remote, &port);
    assert_eq!(code, Some(6), "{text}");
    assert!(text.contains("the key is not in"), "{text}");
    fs::write(&ak, kept).unwrap();

    // The host key changed.
    let known = fs::read(local.known_hosts()).unwrap();
    let other = local.home().join("other_host_key");
    keygen(&other);
    let words: Vec<String> = fs::read_to_string(other.with_extension("pub"))
        .unwrap()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    fs::write(
        local.known_hosts(),
        format!("[127.0.0.1]:{port} {} {}\n", words[0], words[1]),
    )
    .unwrap();
    let (text, code) = check(&local, &remote, &port);
    assert_eq!(code, Some(7), "{text}");
    assert!(text.contains("HAS CHANGED"), "{text}");
    fs::write(local.known_hosts(), known).unwrap();

    // A port where nothing listens.
    let closed = crate::support::sshd::free_port().to_string();
    let (text, code) = check(&local, &remote, &closed);
    assert_eq!(code, Some(8), "{text}");
    assert!(text.contains("nothing accepts connections"), "{text}");

    assert_eq!(check(&local, &remote, &port).1, Some(0));
}
