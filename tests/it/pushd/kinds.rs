//! Every change kind reaching every kind of target intact: local, ssh,
//! rsync daemon, --direct, and the pipelines with watchd and batchd.

use std::ffi::OsStr;
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

use syncpipe::wire::event::{Change, ChangeOp, Header, Record, Timestamp};
use syncpipe::wire::path::WirePath;

use super::harness::*;
use crate::support::rsyncd::{Module, Rsyncd};
use crate::support::sshd::Sshd;
use crate::support::{bin, join_bytes, tempdir, RecordStream, Running};

#[test]
fn local_target_gets_every_change_kind() {
    let (src, dst, cwd) = (tempdir(), tempdir(), tempdir());
    let target = dst.path().join("copy");
    let mut p = Pushd::start_in(src.path(), &[target.as_os_str()], cwd.path());
    every_change_kind(
        &mut p,
        &target.display().to_string(),
        src.path(),
        &target,
        true,
    );
    // Unknown records pass through; pushd ends cleanly with its input.
    p.send(&Record::parse(br#"{"type":"heartbeat","n":1}"#).unwrap());
    p.out.wait_for(
        "the unknown record passed through",
        |r| matches!(r, Record::Other { kind, .. } if kind == "heartbeat"),
    );
    assert_eq!(p.finish(), Some(0));
    assert_nothing_executed(&[src.path(), dst.path(), cwd.path(), Path::new("/root")]);
}

#[test]
fn ssh_target_gets_every_change_kind_and_sends_renamed_data() {
    let sshd = Sshd::start();
    let (src, dst, scratch) = (tempdir(), tempdir(), tempdir());
    let target = format!("127.0.0.1:{}/copy", dst.path().display());
    let mut args = ssh_flags(&sshd, scratch.path());
    args.push(target.clone().into());
    let args: Vec<&OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let mut p = Pushd::start_in(src.path(), &args, scratch.path());
    every_change_kind(&mut p, &target, src.path(), &dst.path().join("copy"), false);

    // No remote shell `mv` (it would follow a planted symlink on the
    // target): a renamed file's data is sent again, by rsync.
    let big = vec![7u8; 4 << 20];
    write(src.path(), b"big", &big);
    let seq = p.batch(vec![change(ChangeOp::Update, b"big")]);
    let sent = p.applied(&target, seq);
    assert_eq!(sent.bytes, big.len() as u64, "{sent:?}");
    fs::rename(src.path().join("big"), src.path().join("big renamed")).unwrap();
    let seq = p.batch(vec![moved(b"big", b"big renamed", false)]);
    let renamed = p.applied(&target, seq);
    assert_eq!(
        (renamed.renamed, renamed.files, renamed.bytes),
        (0, 1, big.len() as u64),
        "{renamed:?}"
    );
    assert_same(src.path(), &dst.path().join("copy"));
    assert_eq!(p.finish(), Some(0));
    assert_nothing_executed(&[src.path(), dst.path(), scratch.path(), Path::new("/root")]);
}

#[test]
fn rsync_daemon_target_with_password_file() {
    let (src, dst, scratch) = (tempdir(), tempdir(), tempdir());
    let daemon = Rsyncd::start(&[Module::with_auth("m", dst.path(), "pusher", "s3cret")]);
    let target = daemon
        .url("m", "copy")
        .replace("rsync://", "rsync://pusher@");
    let pw = daemon.password_file("s3cret");
    let args = [os("--password-file"), pw.as_os_str(), os(&target)];
    let mut p = Pushd::start_in(src.path(), &args, scratch.path());
    every_change_kind(&mut p, &target, src.path(), &dst.path().join("copy"), false);
    assert_eq!(p.finish(), Some(0), "{}", daemon.log());
}

#[test]
fn direct_mode_applies_changes_without_rsync_and_keeps_metadata() {
    let (src, dst, scratch) = (tempdir(), tempdir(), tempdir());
    let target = dst.path().join("copy");
    let args = [os("--direct"), target.as_os_str()];
    let mut p = Pushd::start_in(src.path(), &args, scratch.path());
    every_change_kind(
        &mut p,
        &target.display().to_string(),
        src.path(),
        &target,
        true,
    );
    // Times survive too (tree() compares kinds, modes and content).
    write(src.path(), b"timed", b"t");
    let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
    fs::File::options()
        .write(true)
        .open(src.path().join("timed"))
        .unwrap()
        .set_modified(old)
        .unwrap();
    let as_root = nix::unistd::geteuid().is_root();
    if as_root {
        std::os::unix::fs::chown(src.path().join("timed"), Some(1234), Some(4321)).unwrap();
    }
    let seq = p.batch(vec![change(ChangeOp::Update, b"timed")]);
    let a = p.applied(&target.display().to_string(), seq);
    if as_root {
        use std::os::unix::fs::MetadataExt;
        let meta = fs::metadata(target.join("timed")).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid()),
            (1234, 4321),
            "as root the owner is kept"
        );
    }
    assert_eq!(a.rsync_exit, None, "no rsync ran: {a:?}");
    assert_eq!(a.files, 1);
    let mtime = fs::metadata(target.join("timed"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(mtime, old);
    assert_eq!(p.finish(), Some(0));
}

#[test]
fn a_directory_deleted_and_made_again_loses_its_old_contents() {
    let (src, dst, scratch) = (tempdir(), tempdir(), tempdir());
    write(src.path(), b"d/old", b"old");
    let target = dst.path().display().to_string();
    let mut p = Pushd::start_in(src.path(), &[os(&target)], scratch.path());
    p.header();
    assert_eq!(p.result(&target).status, "ok");
    fs::remove_dir_all(src.path().join("d")).unwrap();
    fs::create_dir(src.path().join("d")).unwrap();
    let seq = p.batch(vec![
        Change {
            dir: true,
            ..change(ChangeOp::Delete, b"d")
        },
        Change {
            dir: true,
            ..change(ChangeOp::Update, b"d")
        },
    ]);
    p.applied(&target, seq);
    assert_same(src.path(), dst.path());
    assert_eq!(p.finish(), Some(0));
}

#[test]
fn watchd_piped_into_pushd_keeps_a_copy() {
    pipeline_keeps_a_copy(false);
}

#[test]
fn watchd_batchd_pushd_keeps_a_copy() {
    pipeline_keeps_a_copy(true);
}

/// `watchd SRC | [batchd -d 50ms |] pushd DST`, the card's pipeline.
fn pipeline_keeps_a_copy(with_batchd: bool) {
    let (src, dst) = (tempdir(), tempdir());
    write(src.path(), b"existing", b"e");
    let mut watchd = Command::new(bin("watchd"))
        .arg(src.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stream = watchd.stdout.take().unwrap();
    let _watchd = Running { child: watchd };
    let mut _batchd = None;
    if with_batchd {
        let mut batchd = Command::new(bin("batchd"))
            .args(["-d", "50ms"])
            .stdin(Stdio::from(stream))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        stream = batchd.stdout.take().unwrap();
        _batchd = Some(Running { child: batchd });
    }
    let mut pushd = Command::new(bin("pushd"))
        .arg(dst.path())
        .stdin(Stdio::from(stream))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = RecordStream::new(pushd.stdout.take().unwrap());
    let _pushd = Running { child: pushd };
    out.wait_for(
        "the start-up sync",
        |r| matches!(r, Record::Applied(a) if a.full),
    );
    assert_same(src.path(), dst.path());

    for name in NASTY {
        write(src.path(), name, b"one");
    }
    fs::create_dir_all(src.path().join("a/b/c")).unwrap();
    write(src.path(), b"a/b/c/deep", b"deep");
    converges(&mut out, src.path(), dst.path());

    write(src.path(), NASTY[0], b"changed content");
    fs::rename(src.path().join("a"), src.path().join("renamed a")).unwrap();
    fs::rename(
        join_bytes(src.path(), NASTY[4]),
        src.path().join("valid now"),
    )
    .unwrap();
    converges(&mut out, src.path(), dst.path());
    // The tree can match before the result record is read: look back, then wait.
    let is_rename = |r: &Record| matches!(r, Record::Applied(a) if a.renamed > 0);
    if !out.seen.iter().any(is_rename) {
        out.wait_for("a result with renames done on the target", is_rename);
    }

    fs::remove_dir_all(src.path().join("renamed a")).unwrap();
    fs::remove_file(src.path().join("existing")).unwrap();
    converges(&mut out, src.path(), dst.path());
    assert_nothing_executed(&[src.path(), dst.path(), Path::new("/root")]);
}

/// The documented pipeline pasted into bash and zsh: `pushd` is a builtin
/// there. `env pushd` always works; completions/pushd-function.sh makes the plain
/// spelling work in interactive shells and keeps the builtin for `pushd DIR`.
#[test]
fn documented_pipeline_works_in_bash_and_zsh() {
    let snippet = Path::new(env!("CARGO_MANIFEST_DIR")).join("completions/pushd-function.sh");
    let bin_dir = bin("pushd").parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for shell in ["bash --norc --noprofile", "zsh -f"] {
        let src = tempdir();
        write(src.path(), b"file", b"data");
        let header = Record::Header(Header {
            v: 1,
            stream: "0123".into(),
            root: WirePath::from(src.path()),
            host: "h".into(),
            ts: Timestamp::now(),
            producer: "test/0".into(),
            backend: None,
        })
        .to_line();
        let run = |script: &str, interactive: bool| {
            let dst = tempdir();
            let script = script.replace("DST", &dst.path().display().to_string());
            let line = if interactive {
                format!("{shell} -i -c '{script}'")
            } else {
                format!("{shell} -c '{script}'")
            };
            // `script` gives the interactive shell a terminal, as a person has.
            let out = Command::new("script")
                .args(["-qec", &line, "/dev/null"])
                .env("PATH", &path)
                .env("HEADER", &header)
                .env("SNIPPET", &snippet)
                .stdin(Stdio::null())
                .output()
                .unwrap();
            let copied = dst.path().join("file").exists();
            (copied, String::from_utf8_lossy(&out.stdout).into_owned())
        };
        let (copied, _) = run(r#"printf "%s\n" "$HEADER" | pushd DST"#, false);
        assert!(
            !copied,
            "{shell}: the builtin took the pipeline (the known trap)"
        );
        let (copied, out) = run(r#"printf "%s\n" "$HEADER" | env pushd DST"#, false);
        assert!(copied, "{shell}: env pushd: {out}");
        let (copied, out) = run(
            r#". "$SNIPPET"; printf "%s\n" "$HEADER" | pushd DST; pushd /usr >/dev/null; echo "pwd=$PWD""#,
            true,
        );
        assert!(copied, "{shell}: with the snippet: {out}");
        assert!(
            out.contains("pwd=/usr"),
            "{shell}: the builtin still works: {out}"
        );
    }
}
