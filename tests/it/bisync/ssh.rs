//! bisync with a replica behind a real sshd on 127.0.0.1: `bisync --serve`
//! on the far side, names with spaces, newlines and invalid UTF-8.

use std::ffi::OsString;
use std::fs;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;
use std::process::Command;

use super::{result, tree, write, Pair, CONFLICTS, SYNCED, WEIRD};
use crate::support::{bin, join_bytes, sshd::Sshd};

/// `bisync` with the ssh settings for `sshd` and the built binary as the
/// remote program.
fn ssh_sync(
    p: &Pair,
    sshd: &Sshd,
    a: OsString,
    b: OsString,
    args: &[&str],
) -> (i32, String, String) {
    let mut cmd: Command = p.command(args);
    cmd.arg("-p")
        .arg(sshd.port().to_string())
        .arg("-i")
        .arg(sshd.identity())
        .arg("--remote-bisync")
        .arg(bin("bisync"));
    for o in sshd.client_options() {
        cmd.arg("--ssh-opt").arg(o);
    }
    result(cmd.arg(a).arg(b).output().expect("running bisync"))
}

fn remote(path: &Path) -> OsString {
    let mut s = b"127.0.0.1:".to_vec();
    s.extend_from_slice(path.as_os_str().as_bytes());
    OsString::from_vec(s)
}

#[test]
fn a_remote_replica_behaves_like_a_local_one() {
    let sshd = Sshd::start();
    let mut p = Pair::new();
    // The remote root's own name needs quoting too.
    let b = join_bytes(p.dir.path(), b"remote b \xff $(x) 'q'\nline");
    fs::create_dir(&b).unwrap();
    p.b = b;
    for name in WEIRD {
        let mut rel = b"w/".to_vec();
        rel.extend_from_slice(name);
        write(&p.a, &rel, name);
        rel.extend_from_slice(b" on b");
        write(&p.b, &rel, b"b side");
    }
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    write(&p.b, b"big", &big);
    std::os::unix::fs::symlink("w/with space", p.a.join("link")).unwrap();
    let (code, out, err) = ssh_sync(&p, &sshd, p.a.clone().into(), remote(&p.b), &[]);
    assert_eq!(code, SYNCED, "{out}{err}");
    assert_eq!(tree(&p.a), tree(&p.b));
    assert_eq!(fs::read(p.a.join("big")).unwrap(), big);
    assert_eq!(
        ssh_sync(&p, &sshd, p.a.clone().into(), remote(&p.b), &[]).0,
        0,
        "in sync"
    );

    // Both directions at once: an edit on the remote side, a rename and a
    // delete on the local side, and a conflict.
    write(&p.b, b"w/with space", b"edited remotely");
    fs::rename(
        join_bytes(&p.a, b"w/new\nline"),
        join_bytes(&p.a, b"w/moved\nline"),
    )
    .unwrap();
    fs::remove_file(join_bytes(&p.a, b"w/bad \xff\xfe utf8 on b")).unwrap();
    write(&p.a, b"big", b"small now");
    write(&p.b, b"big", b"also changed on b");
    let (code, out, err) = ssh_sync(&p, &sshd, p.a.clone().into(), remote(&p.b), &["--json"]);
    assert_eq!(code, CONFLICTS, "{out}{err}");
    assert_eq!(tree(&p.a), tree(&p.b));
    let t = tree(&p.a);
    assert!(t.contains_key(&b"w/moved\nline"[..]));
    assert!(!t.contains_key(&b"w/bad \xff\xfe utf8 on b"[..]));
    assert_eq!(t.keys().filter(|k| k.starts_with(b"big")).count(), 2);
    assert!(out.contains(r#""op":"rename""#), "{out}");
}

#[test]
fn both_replicas_remote_and_the_failures_say_what_happened() {
    let sshd = Sshd::start();
    let p = Pair::new();
    write(&p.a, b"x/y", b"1");
    write(&p.b, b"z", b"2");
    let (code, _, err) = ssh_sync(&p, &sshd, remote(&p.a), remote(&p.b), &[]);
    assert_eq!(code, SYNCED, "{err}");
    assert_eq!(tree(&p.a), tree(&p.b));

    let missing = p.dir.path().join("not there");
    let (code, _, err) = ssh_sync(&p, &sshd, p.a.clone().into(), remote(&missing), &[]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("not there"), "{err}");

    let mut cmd = p.command(&[]);
    cmd.arg("-p")
        .arg(sshd.port().to_string())
        .arg("-i")
        .arg(sshd.identity())
        .arg("--remote-bisync")
        .arg("/nonexistent/bisync");
    for o in sshd.client_options() {
        cmd.arg("--ssh-opt").arg(o);
    }
    let (code, _, err) = result(cmd.arg(&p.a).arg(remote(&p.b)).output().unwrap());
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("is bisync installed there"), "{err}");
    assert_eq!(tree(&p.a), tree(&p.b), "nothing changed");
}

/// Backups and the sentinel work on a remote replica: the `backup` verb
/// turns them on there, old run folders past --backup-keep are removed
/// there, and the sentinel is looked for in the remote scan.
#[test]
fn remote_backups_and_sentinel() {
    let sshd = Sshd::start();
    let p = Pair::new();
    for side in [&p.a, &p.b] {
        write(side, b".ok", b"");
        write(side, b"doc", b"v1");
        write(side, b"other", b"o");
    }
    // A run folder from long ago, to be pruned by --backup-keep.
    write(&p.b, b".bak/20200101T000000Z/old", b"ancient");
    let args = [
        "--backup-dir-b",
        ".bak",
        "--backup-keep",
        "30days",
        "--sentinel",
        ".ok",
    ];
    let (code, out, err) = ssh_sync(&p, &sshd, p.a.clone().into(), remote(&p.b), &args);
    assert!(code == 0 || code == SYNCED, "{out}{err}");
    write(&p.a, b"doc", b"v2, longer");
    fs::remove_file(p.a.join("other")).unwrap();
    let (code, out, err) = ssh_sync(&p, &sshd, p.a.clone().into(), remote(&p.b), &args);
    assert!(code == 0 || code == SYNCED, "{out}{err}");
    assert_eq!(fs::read(p.b.join("doc")).unwrap(), b"v2, longer");
    assert!(!p.b.join("other").exists());
    let runs: Vec<_> = fs::read_dir(p.b.join(".bak"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(runs.len(), 1, "the 2020 run is pruned: {runs:?}");
    assert_eq!(fs::read(runs[0].join("doc")).unwrap(), b"v1");
    assert_eq!(fs::read(runs[0].join("other")).unwrap(), b"o");
    assert!(!p.a.join(".bak").exists(), "backups are not synced");

    // The sentinel gone on the remote side: refused, nothing changed.
    fs::remove_file(p.b.join(".ok")).unwrap();
    write(&p.a, b"doc", b"v3");
    let (code, out, err) = ssh_sync(&p, &sshd, p.a.clone().into(), remote(&p.b), &args);
    assert_eq!(code, 12, "{out}{err}");
    assert!(err.contains("sentinel"), "{err}");
    assert_eq!(fs::read(p.b.join("doc")).unwrap(), b"v2, longer");
}
