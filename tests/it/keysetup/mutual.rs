//! `keysetup --mutual`: trust both ways between two accounts, each behind
//! its own sshd, keysetup running as one of them in its real home.

use std::fs;
use std::process::{Output, Stdio};

use super::{public_line, stderr, stdout, Remote};
use crate::support::bin;
use crate::support::sshd::Sshd;
use crate::support::users::User;

/// `ssh` run as `user` with its own kit key to `dest` on `port`.
fn ssh_as(user: &User, port: u16, dest: &str, command: &str) -> Output {
    user.command("ssh")
        .arg("-i")
        .arg(user.home.join(".ssh/id_syncpipe_ed25519"))
        .args([
            "-p",
            &port.to_string(),
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
        ])
        .args(["-o", "StrictHostKeyChecking=yes", dest, command])
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn mutual_trust_between_two_sshd_instances() {
    // B: the remote account behind its sshd (with the admin login).
    let b = Remote::new();
    // A: a second account, with its own sshd that only reads users' keys;
    // keysetup runs as A, in A's real home.
    let a = User::create(&b.dir.path().join("local-home"));
    let a_sshd = Sshd::start_with_config(&[
        "AuthorizedKeysFile .ssh/authorized_keys".to_string(),
        "StrictModes yes".to_string(),
    ]);
    let admin = a.home.join("admin");
    fs::copy(&b.admin_key, &admin).unwrap();
    a.own(&admin);

    let run = |extra: &[&str]| {
        let out = a
            .command(bin("keysetup"))
            .args(["--accept-new", "-p", &b.port()])
            .args(extra)
            .args(["--mutual", "--back", &format!("{}@127.0.0.1", a.name)])
            .args(["--back-port", &a_sshd.port().to_string(), &b.dest()])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        eprintln!("{}", stderr(&out));
        out
    };
    let out = run(&["--login-key", admin.to_str().unwrap()]);
    assert!(out.status.success());
    assert!(stderr(&out).contains(&format!(
        "mutual: {}@127.0.0.1 logs in back to {}@127.0.0.1",
        b.user.name, a.name
    )));

    // A logs in to B, and B to A, each with its own key, no prompt.
    let there = ssh_as(&a, b.sshd.port(), &b.dest(), "id -un");
    assert_eq!(stdout(&there).trim(), b.user.name, "{}", stderr(&there));
    let back = ssh_as(
        &b.user,
        a_sshd.port(),
        &format!("{}@127.0.0.1", a.name),
        "id -un",
    );
    assert_eq!(stdout(&back).trim(), a.name, "{}", stderr(&back));
    // B's key is in A's authorized_keys, and only there.
    let a_keys = fs::read_to_string(a.home.join(".ssh/authorized_keys")).unwrap();
    assert_eq!(
        a_keys,
        format!(
            "{}\n",
            public_line(&b.user.home.join(".ssh/id_syncpipe_ed25519"))
        )
    );
    assert!(a_keys.contains(&format!(" syncpipe:{}@", b.user.name)));

    // Twice: no byte changes on either side.
    let files = [
        a.home.join(".ssh/authorized_keys"),
        a.home.join(".ssh/known_hosts"),
        a.home.join(".ssh/id_syncpipe_ed25519"),
        b.authorized_keys(),
        b.ssh_dir().join("known_hosts"),
        b.ssh_dir().join("id_syncpipe_ed25519"),
    ];
    let before: Vec<Vec<u8>> = files.iter().map(|f| fs::read(f).unwrap()).collect();
    assert!(run(&[]).status.success());
    let after: Vec<Vec<u8>> = files.iter().map(|f| fs::read(f).unwrap()).collect();
    assert_eq!(before, after);
}
