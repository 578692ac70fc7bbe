//! Excludes in pushd: the kit's one syntax (lib/exclude.rs), given by flag
//! and by file, holding on the full sync and on every batch for every kind
//! of target; and rsync, fed the translated filter rules, leaving out
//! exactly what our matcher leaves out.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Stdio;

use syncpipe::exclude::Excludes;
use syncpipe::location::Target;
use syncpipe::pushd::rsync::{build_args, RsyncSettings, Transfer};
use syncpipe::wire::event::{Change, ChangeOp};
use syncpipe::wire::path::WirePath;

use super::harness::*;
use crate::support::rsyncd::{Module, Rsyncd};
use crate::support::sshd::Sshd;
use crate::support::tempdir;

type Tree = BTreeMap<Vec<u8>, (String, Vec<u8>)>;

/// `src`'s tree minus what `ex` leaves out.
fn expected(src: &Path, ex: &Excludes) -> Tree {
    tree(src)
        .into_iter()
        .filter(|(rel, (kind, _))| {
            let rel = Path::new(OsStr::from_bytes(rel));
            !ex.is_excluded_path(rel, kind.starts_with("dir"))
        })
        .collect()
}

fn names(t: &Tree) -> Vec<String> {
    t.keys()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect()
}

/// Waits until `dst` holds exactly `want` (rsync may still be at work).
fn holds(p: &mut Pushd, dst: &Path, want: &Tree) {
    while &tree(dst) != want {
        if p.out.next(crate::support::TIMEOUT).is_none() {
            assert_eq!(names(&tree(dst)), names(want));
            assert_eq!(&tree(dst), want);
        }
    }
}

const FLAG_PATTERNS: &[&str] = &["*.tmp", "cache/"];
/// Newline-separated, as a person writes it (rsync would read it
/// NUL-separated next to --from0).
const FILE_TEXT: &str = "# secrets and logs\n**/secret/\nlogs/**\n/top-only\n\n!keep.tmp\n";

fn excludes() -> Excludes {
    let tmp = tempdir();
    let f = tmp.path().join("ex");
    fs::write(&f, FILE_TEXT).unwrap();
    let flags: Vec<String> = FLAG_PATTERNS.iter().map(|s| s.to_string()).collect();
    Excludes::new(&flags, &[f]).unwrap()
}

fn populate(src: &Path) {
    for rel in [
        "a",
        "x.tmp",
        "keep.tmp",
        "sub/y.tmp",
        "sub/z",
        "cache/f",
        "sub/cache/g",
        "secret/k",
        "deep/er/secret/k",
        "logs/old/a.gz",
        "logs/b",
        "top-only",
        "sub/top-only",
    ] {
        write(src, rel.as_bytes(), rel.as_bytes());
    }
}

/// One target: full sync, then batches of updates, deletes and moves
/// across the excluded line, the target holding the source minus excludes
/// after each step.
fn run_case(target: &str, dst: &Path, extra: &[OsString]) {
    let (src, scratch) = (tempdir(), tempdir());
    populate(src.path());
    // A relative --exclude-from, resolved against pushd's working directory.
    fs::write(scratch.path().join("excludes.txt"), FILE_TEXT).unwrap();
    let mut args: Vec<OsString> = extra.to_vec();
    for p in FLAG_PATTERNS {
        args.push("--exclude".into());
        args.push(p.into());
    }
    args.extend([
        "--exclude-from".into(),
        "excludes.txt".into(),
        target.into(),
    ]);
    let args: Vec<&OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let mut p = Pushd::start_in(src.path(), &args, scratch.path());
    let ex = excludes();
    p.header();
    let first = p.result(target);
    assert_eq!(first.status, "ok", "{first:?}");
    let want = expected(src.path(), &ex);
    assert!(want.contains_key(&b"keep.tmp"[..]) && !want.contains_key(&b"x.tmp"[..]));
    holds(&mut p, dst, &want);

    // Batches: excluded paths are listed too, as a watchd without the
    // excludes would send them.
    let mut changes = Vec::new();
    for rel in [
        "new.tmp",
        "cache/new",
        "sub/secret/s",
        "logs/c",
        "fresh",
        "top-only",
    ] {
        write(src.path(), rel.as_bytes(), b"second");
        changes.push(change(ChangeOp::Update, rel.as_bytes()));
    }
    changes.push(Change {
        dir: true,
        ..change(ChangeOp::Rescan, b"sub")
    });
    write(src.path(), b"sub/another.tmp", b"x");
    let seq = p.batch(changes);
    assert_eq!(p.applied(target, seq).status, "ok");
    holds(&mut p, dst, &expected(src.path(), &ex));

    // Moves across the line: out of an excluded name is a new path, into
    // one is a deletion.
    fs::rename(src.path().join("a"), src.path().join("a.tmp")).unwrap();
    fs::rename(src.path().join("x.tmp"), src.path().join("x")).unwrap();
    fs::remove_file(src.path().join("sub/z")).unwrap();
    let seq = p.batch(vec![
        moved(b"a", b"a.tmp", false),
        moved(b"x.tmp", b"x", false),
        change(ChangeOp::Delete, b"sub/z"),
        change(ChangeOp::Delete, b"cache/f"),
    ]);
    assert_eq!(p.applied(target, seq).status, "ok");
    let want = expected(src.path(), &ex);
    assert!(!want.contains_key(&b"a"[..]) && want.contains_key(&b"x"[..]));
    holds(&mut p, dst, &want);
    assert_eq!(p.finish(), Some(0));
}

#[test]
fn excludes_hold_on_a_local_target() {
    let dst = tempdir();
    let target = dst.path().join("copy");
    run_case(&target.display().to_string(), &target, &[]);
}

#[test]
fn excludes_hold_with_direct() {
    let dst = tempdir();
    let target = dst.path().join("copy");
    run_case(&target.display().to_string(), &target, &["--direct".into()]);
}

#[test]
fn excludes_hold_on_an_ssh_target() {
    let sshd = Sshd::start();
    let (dst, scratch) = (tempdir(), tempdir());
    let target = format!("127.0.0.1:{}/copy", dst.path().display());
    run_case(
        &target,
        &dst.path().join("copy"),
        &ssh_flags(&sshd, scratch.path()),
    );
}

#[test]
fn excludes_hold_on_an_rsync_daemon_target() {
    let dst = tempdir();
    let daemon = Rsyncd::start(&[Module::open("m", dst.path())]);
    let target = daemon.url("m", "copy");
    run_case(&target, &dst.path().join("copy"), &[]);
}

#[test]
fn rsync_style_lines_are_refused_naming_the_line() {
    let (src, scratch) = (tempdir(), tempdir());
    fs::write(scratch.path().join("ex"), "*.o\n- *.bak\n").unwrap();
    let out = std::process::Command::new(crate::support::bin("pushd"))
        .args(["--exclude-from", "ex"])
        .arg(src.path())
        .current_dir(scratch.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("ex, line 2") && err.contains("- *.bak"),
        "{err}"
    );
}

/// xorshift64, seeded and printed so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[(self.next() % from.len() as u64) as usize]
    }
}

const NAMES: &[&str] = &["a", "b", "ab", "ba", ".a", "a.t", "b.t", "c d", "x"];
const PIECES: &[&str] = &[
    "a", "b", "ab", "*", "?", "a*", "*.t", "[ab]", "[!a]*", "**", "x", "c d", ".*",
];

fn random_tree(rng: &mut Rng, root: &Path) -> Vec<String> {
    let mut made = Vec::new();
    let mut dirs = vec![String::new()];
    for _ in 0..(8 + rng.next() % 14) {
        let parent = dirs[(rng.next() % dirs.len() as u64) as usize].clone();
        if parent.matches('/').count() >= 3 {
            continue;
        }
        let rel = format!("{parent}{}", rng.pick(NAMES));
        let path = root.join(&rel);
        if path.exists() {
            continue;
        }
        if rng.next().is_multiple_of(3) {
            fs::create_dir(&path).unwrap();
            dirs.push(format!("{rel}/"));
        } else {
            fs::write(&path, b"x").unwrap();
        }
        made.push(rel);
    }
    made
}

fn random_patterns(rng: &mut Rng) -> Vec<String> {
    let mut out = Vec::new();
    while out.len() < 1 + (rng.next() % 3) as usize {
        let mut p = String::new();
        if rng.next().is_multiple_of(4) {
            p.push('!');
        }
        if rng.next().is_multiple_of(3) {
            p.push('/');
        }
        let parts = 1 + rng.next() % 3;
        let body: Vec<&str> = (0..parts).map(|_| rng.pick(PIECES)).collect();
        p.push_str(&body.join("/"));
        if rng.next().is_multiple_of(4) {
            p.push('/');
        }
        if syncpipe::exclude::unsupported(&p).is_none() {
            out.push(p);
        }
    }
    out
}

/// For random trees and patterns, what rsync copies with pushd's own
/// argument list (full sync, and a subtree sync) is what our matcher
/// keeps: "rsync excludes it" == "our matcher excludes it".
#[test]
fn rsync_excludes_what_our_matcher_excludes() {
    let seed = std::env::var("EXCLUDE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("rsync_excludes_what_our_matcher_excludes: EXCLUDE_SEED={seed}");
    let mut rng = Rng(seed);
    // A few seconds here; EXCLUDE_CASES=2000 for a longer run.
    let cases: u32 = std::env::var("EXCLUDE_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    for case in 0..cases {
        let (src, dst) = (tempdir(), tempdir());
        let made = random_tree(&mut rng, src.path());
        let patterns = random_patterns(&mut rng);
        let ex = Excludes::new(&patterns, &[] as &[&Path]).unwrap();
        let settings = RsyncSettings {
            filters: ex.rsync_filters(),
            ..RsyncSettings::default()
        };
        // A subtree of the source, or the whole root.
        // (pushd never lists an excluded one: lib/pushd/excluded.rs)
        let dirs: Vec<&String> = made
            .iter()
            .filter(|m| src.path().join(m).is_dir())
            .filter(|m| !ex.is_excluded_path(Path::new(m.as_str()), true))
            .collect();
        let sub = if !dirs.is_empty() && rng.next().is_multiple_of(2) {
            Some(dirs[(rng.next() % dirs.len() as u64) as usize].clone())
        } else {
            None
        };
        let list = sub.clone().unwrap_or_else(|| ".".into());
        let target = Target::parse(dst.path().as_os_str(), Path::new("/")).unwrap();
        let args = build_args(
            &settings,
            Transfer::Subtrees { delete: true },
            false,
            src.path(),
            &target,
        );
        let run = syncpipe::pushd::rsync::run(
            settings.program(),
            &args,
            &[WirePath::from(list.as_str()).as_bytes()],
        )
        .unwrap();
        assert_eq!(run.code, Some(0), "{}", run.stderr);
        let want: Vec<String> = names(&expected(src.path(), &ex))
            .into_iter()
            .filter(|n| match &sub {
                None => true,
                // The subtree, and the directories leading to it.
                Some(s) => {
                    n == s || n.starts_with(&format!("{s}/")) || s.starts_with(&format!("{n}/"))
                }
            })
            .collect();
        assert_eq!(
            names(&tree(dst.path())),
            want,
            "case {case} (EXCLUDE_SEED={seed}): patterns {patterns:?} -> rsync {:?}, list {list:?}",
            ex.rsync_filters()
        );
    }
}
