//! The bisync scenario suite, in rclone bisync's style: each directory of
//! tests/fixtures/bisync/ is one scenario, found automatically. Its
//! `script` sets up a starting tree per side (optionally also copied from
//! the scenario's `a/` and `b/` folders), runs scripted steps and syncs,
//! and states the exit status of each sync and the final trees.
//! The format is in tests/fixtures/bisync/README.md.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, UNIX_EPOCH};

use syncpipe::bisync::entry::Entry;
use syncpipe::bisync::local::LocalReplica;
use syncpipe::bisync::planner::Scan;
use syncpipe::bisync::progress::Tally;
use syncpipe::bisync::replica::{Applied, Change, Fill, Replica};
use syncpipe::bisync::report::Outcome;
use syncpipe::bisync::{run, Config, Spec};
use syncpipe::wire::path::WirePath;

use crate::support::{self, bin, tempdir};

/// Where the harness's clock starts: files written without `@TIME` get
/// this plus 10 s per write, so "newer" is always well defined.
const CLOCK_START: i64 = 1_700_000_000;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bisync")
}

/// Splits a line into words: whitespace separates, "double quotes" keep
/// spaces, and inside them \n, \t, \\, \" and \xHH are escapes.
fn words(line: &str) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let Some(&c) = chars.peek() else { break };
        if c == '#' {
            break;
        }
        let mut word = Vec::new();
        if c == '"' {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err(format!("unterminated quote in {line:?}")),
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some('n') => word.push(b'\n'),
                        Some('t') => word.push(b'\t'),
                        Some('x') => {
                            let hex: String = chars.by_ref().take(2).collect();
                            word.push(
                                u8::from_str_radix(&hex, 16)
                                    .map_err(|_| format!("bad \\x{hex} in {line:?}"))?,
                            );
                        }
                        Some(other) => {
                            let mut buf = [0; 4];
                            word.extend_from_slice(other.encode_utf8(&mut buf).as_bytes());
                        }
                        None => return Err(format!("dangling \\ in {line:?}")),
                    },
                    Some(other) => {
                        let mut buf = [0; 4];
                        word.extend_from_slice(other.encode_utf8(&mut buf).as_bytes());
                    }
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                let mut buf = [0; 4];
                word.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                chars.next();
            }
        }
        out.push(word);
    }
    Ok(out)
}

fn text(w: &[u8]) -> String {
    String::from_utf8_lossy(w).into_owned()
}

fn os(w: &[u8]) -> &Path {
    Path::new(std::ffi::OsStr::from_bytes(w))
}

/// What a tree holds, as the expectations write it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Node {
    File(Vec<u8>),
    Dir,
    Link(Vec<u8>),
}

/// The suite's tree without modes: a script names kinds and contents only.
fn listing(root: &Path) -> BTreeMap<Vec<u8>, Node> {
    support::tree(root)
        .into_iter()
        .map(|(path, node)| {
            let node = match node {
                support::Node::File(content, _) => Node::File(content),
                support::Node::Dir(_) => Node::Dir,
                support::Node::Link(to) => Node::Link(to),
            };
            (path, node)
        })
        .collect()
}

/// `*` in a pattern matches any bytes (none included), nothing else is
/// special: for conflict copies' host and time.
fn glob(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.iter().position(|&b| b == b'*') {
        None => pattern == name,
        Some(i) => {
            if !name.starts_with(&pattern[..i]) {
                return false;
            }
            let rest = &pattern[i + 1..];
            (i..=name.len()).any(|j| glob(rest, &name[j..]))
        }
    }
}

/// A replica that runs the scenario's `during` steps right before the
/// first change bisync makes to it: a writer racing a run, made
/// deterministic.
struct Meddler {
    inner: LocalReplica,
    during: Option<Box<dyn FnOnce()>>,
}

impl Meddler {
    fn meddle(&mut self) {
        if let Some(f) = self.during.take() {
            f();
        }
    }
}

impl Replica for Meddler {
    fn who(&self) -> &syncpipe::bisync::replica::Who {
        self.inner.who()
    }
    fn set_owners(&mut self, owners: bool) -> anyhow::Result<()> {
        self.inner.set_owners(owners)
    }
    fn set_backup(
        &mut self,
        backup: Option<syncpipe::bisync::backup::Backup>,
    ) -> anyhow::Result<()> {
        self.inner.set_backup(backup)
    }
    fn scan(&mut self, checksum: bool) -> anyhow::Result<Scan> {
        self.inner.scan(checksum)
    }
    fn scan_paths(&mut self, paths: &[WirePath], checksum: bool) -> anyhow::Result<Scan> {
        self.inner.scan_paths(paths, checksum)
    }
    fn hash(
        &mut self,
        paths: &[WirePath],
    ) -> anyhow::Result<Vec<Option<syncpipe::bisync::entry::Hash>>> {
        self.inner.hash(paths)
    }
    fn change(&mut self, change: &Change) -> anyhow::Result<Applied> {
        self.meddle();
        self.inner.change(change)
    }
    fn read(
        &mut self,
        path: &WirePath,
        expect: &Entry,
        out: &mut dyn std::io::Write,
    ) -> anyhow::Result<bool> {
        self.meddle();
        self.inner.read(path, expect, out)
    }
    fn write(
        &mut self,
        path: &WirePath,
        src: &Entry,
        expect: Option<&Entry>,
        fill: &mut Fill<'_>,
    ) -> anyhow::Result<Applied> {
        self.meddle();
        self.inner.write(path, src, expect, fill)
    }
}

struct Scenario {
    name: String,
    a: PathBuf,
    b: PathBuf,
    state: PathBuf,
    clock: i64,
    /// Steps to run on side A while the next sync is under way.
    during: Vec<Vec<Vec<u8>>>,
    last_out: String,
    last_err: String,
    syncs: usize,
}

impl Scenario {
    fn root(&self, side: &[u8]) -> Result<Vec<PathBuf>, String> {
        match side {
            b"a" => Ok(vec![self.a.clone()]),
            b"b" => Ok(vec![self.b.clone()]),
            b"both" => Ok(vec![self.a.clone(), self.b.clone()]),
            other => Err(format!("unknown side {:?}", text(other))),
        }
    }

    fn tick(&mut self, at: Option<&[u8]>) -> Result<i64, String> {
        match at.and_then(|w| w.strip_prefix(b"@")) {
            Some(t) => text(t)
                .parse()
                .map_err(|_| format!("bad time @{}", text(t))),
            None => {
                self.clock += 10;
                Ok(self.clock)
            }
        }
    }

    /// One file-system step on one or both sides.
    fn step(&mut self, w: &[Vec<u8>]) -> Result<(), String> {
        let roots = self.root(&w[0])?;
        let verb = w.get(1).map(|v| text(v)).unwrap_or_default();
        let arg = |i: usize| -> Result<&[u8], String> {
            w.get(i)
                .map(|v| v.as_slice())
                .ok_or_else(|| format!("{verb}: argument {i} missing"))
        };
        let err = |e: std::io::Error| format!("{verb}: {e}");
        match verb.as_str() {
            "write" => {
                let t = self.tick(w.get(4).map(|v| v.as_slice()))?;
                for r in &roots {
                    let p = r.join(os(arg(2)?));
                    if let Some(d) = p.parent() {
                        fs::create_dir_all(d).map_err(err)?;
                    }
                    fs::write(&p, arg(3)?).map_err(err)?;
                    set_mtime(&p, t)?;
                }
            }
            "touch" => {
                let t = self.tick(w.get(3).map(|v| v.as_slice()))?;
                for r in &roots {
                    set_mtime(&r.join(os(arg(2)?)), t)?;
                }
            }
            "touch-all" => {
                let t = self.tick(w.get(2).map(|v| v.as_slice()))?;
                for r in &roots {
                    for (p, n) in listing(r) {
                        if matches!(n, Node::File(_)) {
                            set_mtime(&r.join(os(&p)), t)?;
                        }
                    }
                }
            }
            "rm" => {
                for r in &roots {
                    let p = r.join(os(arg(2)?));
                    if fs::symlink_metadata(&p).map_err(err)?.is_dir() {
                        fs::remove_dir_all(&p).map_err(err)?;
                    } else {
                        fs::remove_file(&p).map_err(err)?;
                    }
                }
            }
            "mkdir" => {
                for r in &roots {
                    fs::create_dir_all(r.join(os(arg(2)?))).map_err(err)?;
                }
            }
            "mv" => {
                for r in &roots {
                    let to = r.join(os(arg(3)?));
                    if let Some(d) = to.parent() {
                        fs::create_dir_all(d).map_err(err)?;
                    }
                    fs::rename(r.join(os(arg(2)?)), to).map_err(err)?;
                }
            }
            "chmod" => {
                let word = text(arg(2)?);
                let mode =
                    u32::from_str_radix(&word, 8).map_err(|_| format!("chmod: bad mode {word}"))?;
                for r in &roots {
                    fs::set_permissions(r.join(os(arg(3)?)), fs::Permissions::from_mode(mode))
                        .map_err(err)?;
                }
            }
            "link" => {
                for r in &roots {
                    symlink(os(arg(3)?), r.join(os(arg(2)?))).map_err(err)?;
                }
            }
            _ => return Err(format!("unknown step {verb:?}")),
        }
        Ok(())
    }

    /// `sync ARGS... => STATUS [exit=N]`.
    fn sync(&mut self, w: &[Vec<u8>]) -> Result<(), String> {
        self.syncs += 1;
        let arrow = w
            .iter()
            .position(|x| x == b"=>")
            .ok_or("sync needs `=> STATUS`")?;
        let args: Vec<String> = w[1..arrow].iter().map(|x| text(x)).collect();
        let want_status = text(w.get(arrow + 1).ok_or("sync: status missing after =>")?);
        let want_exit: Option<i32> = match w.get(arrow + 2) {
            Some(x) => Some(
                text(x)
                    .strip_prefix("exit=")
                    .and_then(|n| n.parse().ok())
                    .ok_or("sync: write exit=N after the status")?,
            ),
            None => None,
        };
        let (code, status) = if self.during.is_empty() {
            self.sync_binary(&args)?
        } else {
            self.sync_meddled(&args)?
        };
        let allowed: &[i32] = match want_status.as_str() {
            "in_sync" => &[0],
            // A successful sync exits 0 (9 only with --exit-changes).
            "synced" if args.iter().any(|a| a == "--exit-changes") => &[9],
            "synced" => &[0],
            "conflicts" => &[10],
            "incomplete" => &[11],
            "refused" => &[12, 13],
            other => return Err(format!("unknown status {other:?}")),
        };
        let exit_ok = match want_exit {
            Some(n) => code == n,
            None => allowed.contains(&code),
        };
        if status != want_status || !exit_ok {
            return Err(format!(
                "sync #{} {args:?}: wanted {want_status} (exit {:?}), got {status} \
                 (exit {code})\nstdout:\n{}\nstderr:\n{}",
                self.syncs,
                want_exit.map_or(allowed.to_vec(), |n| vec![n]),
                self.last_out,
                self.last_err
            ));
        }
        Ok(())
    }

    fn sync_binary(&mut self, args: &[String]) -> Result<(i32, String), String> {
        let out = Command::new(bin("bisync"))
            .arg("--state-dir")
            .arg(&self.state)
            .arg("--json")
            .args(args)
            .arg(&self.a)
            .arg(&self.b)
            .output()
            .map_err(|e| format!("running bisync: {e}"))?;
        self.last_out = String::from_utf8_lossy(&out.stdout).into_owned();
        self.last_err = String::from_utf8_lossy(&out.stderr).into_owned();
        let code = out.status.code().ok_or("bisync died of a signal")?;
        // The JSON summary is the last record (a dry run adds nothing).
        let status = self
            .last_out
            .lines()
            .rev()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["type"] == "bisync_summary")
            .and_then(|v| v["status"].as_str().map(str::to_string))
            .unwrap_or_else(|| "none".into());
        Ok((code, status))
    }

    /// A sync in this process, with the `during` steps run on A right
    /// before bisync's first change or read there.
    fn sync_meddled(&mut self, args: &[String]) -> Result<(i32, String), String> {
        if !args.is_empty() {
            return Err("a sync with `during` steps takes no flags".into());
        }
        let steps = std::mem::take(&mut self.during);
        let (a, b) = (self.a.clone(), self.b.clone());
        let mut me = Scenario {
            name: self.name.clone(),
            a: a.clone(),
            b: b.clone(),
            state: self.state.clone(),
            clock: self.clock + 1000,
            during: Vec::new(),
            last_out: String::new(),
            last_err: String::new(),
            syncs: 0,
        };
        let failed = std::sync::Arc::new(std::sync::Mutex::new(None));
        let seen = failed.clone();
        let config = Config {
            a: Spec::Local(a.clone()),
            b: Spec::Local(b.clone()),
            checksum: false,
            prefer: Default::default(),
            max_delete: Default::default(),
            size_only: false,
            sentinel: None,
            force: false,
            backup: [None, None],
            fold: Default::default(),
            dry_run: false,
            json: true,
            exit_changes: false,
            excludes: Default::default(),
            state_dir: Some(self.state.clone()),
            ssh: Default::default(),
            remote_bisync: "bisync".into(),
            watch: None,
        };
        let store = run::store(&config).map_err(|e| format!("{e:#}"))?;
        let _lock = store.lock().map_err(|e| format!("{e:#}"))?;
        let mut ra = Meddler {
            inner: LocalReplica::new("a", &a, Default::default()),
            during: Some(Box::new(move || {
                for s in &steps {
                    if let Err(e) = me.step(s) {
                        *seen.lock().unwrap() = Some(e);
                    }
                }
            })),
        };
        let mut rb = LocalReplica::new("b", &b, Default::default());
        let old = store.load();
        let mut scans = [
            ra.scan(false).map_err(|e| format!("{e:#}"))?,
            rb.scan(false).map_err(|e| format!("{e:#}"))?,
        ];
        let settled = run::settle(
            &config,
            &store,
            [&mut ra, &mut rb],
            false,
            old,
            &mut scans,
            &Tally::new(Instant::now()),
            false,
        )
        .map_err(|e| format!("{e:#}"))?;
        if let Some(e) = failed.lock().unwrap().take() {
            return Err(format!("a `during` step failed: {e}"));
        }
        let status = match settled.summary.status {
            Some(Outcome::InSync) => "in_sync",
            Some(Outcome::Synced) => "synced",
            Some(Outcome::Conflicts) => "conflicts",
            Some(Outcome::Incomplete) => "incomplete",
            Some(Outcome::Refused) | None => "refused",
        };
        self.last_out = format!("{:?}", settled.summary);
        Ok((settled.code as i32, status.into()))
    }

    /// `expect SIDE` followed by the tree's entries, one per line, up to
    /// `end`.
    fn expect(&self, side: &[u8], lines: &[Vec<Vec<u8>>]) -> Result<(), String> {
        let mut want: Vec<(Vec<u8>, Node)> = Vec::new();
        for w in lines {
            let arg = |i: usize| -> Result<Vec<u8>, String> {
                w.get(i)
                    .cloned()
                    .ok_or_else(|| format!("expect: short line {:?}", text(&w.concat())))
            };
            let node = match w[0].as_slice() {
                b"file" => Node::File(arg(2)?),
                b"dir" => Node::Dir,
                b"link" => Node::Link(arg(2)?),
                other => return Err(format!("expect: unknown kind {:?}", text(other))),
            };
            want.push((arg(1)?, node));
        }
        for root in self.root(side)? {
            let mut have = listing(&root);
            let mut missing = Vec::new();
            for (pattern, node) in &want {
                let hit = have
                    .iter()
                    .find(|(p, n)| glob(pattern, p) && *n == node)
                    .map(|(p, _)| p.clone());
                match hit {
                    Some(p) => {
                        have.remove(&p);
                    }
                    None => missing.push(format!("{} {node:?}", text(pattern))),
                }
            }
            if !missing.is_empty() || !have.is_empty() {
                return Err(format!(
                    "tree {} after sync #{}: missing {missing:?}, unexpected {:?}",
                    root.display(),
                    self.syncs,
                    have.iter()
                        .map(|(p, n)| format!("{} {n:?}", text(p)))
                        .collect::<Vec<_>>()
                ));
            }
        }
        Ok(())
    }
}

fn set_mtime(path: &Path, secs: i64) -> Result<(), String> {
    let t = UNIX_EPOCH + Duration::from_secs(secs as u64);
    fs::File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(t))
        .map_err(|e| format!("setting the mtime of {}: {e}", path.display()))
}

/// Copies a scenario's starting tree, every file at the clock's start.
fn copy_tree(from: &Path, to: &Path) -> Result<(), String> {
    for e in fs::read_dir(from).map_err(|e| e.to_string())? {
        let e = e.map_err(|e| e.to_string())?;
        let dst = to.join(e.file_name());
        if e.file_type().map_err(|e| e.to_string())?.is_dir() {
            fs::create_dir_all(&dst).map_err(|e| e.to_string())?;
            copy_tree(&e.path(), &dst)?;
        } else {
            fs::copy(e.path(), &dst).map_err(|e| e.to_string())?;
            set_mtime(&dst, CLOCK_START)?;
        }
    }
    Ok(())
}

fn run_scenario(dir: &Path) -> Result<usize, String> {
    let script = fs::read_to_string(dir.join("script")).map_err(|e| format!("script: {e}"))?;
    let tmp = tempdir();
    let mut sc = Scenario {
        name: dir.file_name().unwrap().to_string_lossy().into_owned(),
        a: tmp.path().join("a"),
        b: tmp.path().join("b"),
        state: tmp.path().join("state"),
        clock: CLOCK_START,
        during: Vec::new(),
        last_out: String::new(),
        last_err: String::new(),
        syncs: 0,
    };
    fs::create_dir(&sc.a).unwrap();
    fs::create_dir(&sc.b).unwrap();
    for side in ["a", "b"] {
        if dir.join(side).is_dir() {
            copy_tree(&dir.join(side), &tmp.path().join(side))?;
        }
    }
    let lines: Vec<(usize, Vec<Vec<u8>>)> = script
        .lines()
        .enumerate()
        .map(|(i, l)| words(l).map(|w| (i + 1, w)))
        .collect::<Result<_, _>>()?;
    let mut i = 0;
    let mut checks = 0;
    while i < lines.len() {
        let (n, w) = &lines[i];
        i += 1;
        if w.is_empty() {
            continue;
        }
        let name = sc.name.clone();
        let at = |e: String| format!("{name}:{n}: {e}");
        match w[0].as_slice() {
            b"sync" => {
                sc.sync(w).map_err(at)?;
                checks += 1;
            }
            b"during" => sc.during.push(w[1..].to_vec()),
            b"expect" => {
                let side = w.get(1).cloned().ok_or_else(|| at("expect SIDE".into()))?;
                let mut body = Vec::new();
                loop {
                    let (_, l) = lines
                        .get(i)
                        .ok_or_else(|| at("expect without `end`".into()))?;
                    i += 1;
                    if l.first().map(|x| x.as_slice()) == Some(b"end") {
                        break;
                    }
                    if !l.is_empty() {
                        body.push(l.clone());
                    }
                }
                sc.expect(&side, &body).map_err(at)?;
                checks += 1;
            }
            b"stderr-has" | b"stdout-has" => {
                let want = text(&w[1..].join(&b' '));
                let have = if w[0] == b"stderr-has" {
                    &sc.last_err
                } else {
                    &sc.last_out
                };
                if !have.contains(&want) {
                    return Err(at(format!("{} lacks {want:?}:\n{have}", text(&w[0]))));
                }
                checks += 1;
            }
            _ => sc.step(w).map_err(at)?,
        }
    }
    if checks == 0 {
        return Err(format!("{}: the script checks nothing", sc.name));
    }
    Ok(checks)
}

/// Every scenario of tests/fixtures/bisync, each in its own directories.
#[test]
fn scenarios() {
    let mut dirs: Vec<PathBuf> = fs::read_dir(fixtures())
        .expect("tests/fixtures/bisync")
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("script").is_file())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 25, "only {} scenarios", dirs.len());
    let only = std::env::var("BISYNC_SCENARIO").ok();
    let mut failures = Vec::new();
    for dir in &dirs {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        if only.as_ref().is_some_and(|o| !name.contains(o.as_str())) {
            continue;
        }
        match run_scenario(dir) {
            Ok(checks) => eprintln!("scenario {name}: ok ({checks} checks)"),
            Err(e) => failures.push(e),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} scenarios failed:\n\n{}",
        failures.len(),
        dirs.len(),
        failures.join("\n\n")
    );
}

#[test]
fn words_and_globs() {
    assert_eq!(
        words(r#"a write "x y" "1\n\x80" # note"#).unwrap(),
        vec![
            b"a".to_vec(),
            b"write".to_vec(),
            b"x y".to_vec(),
            b"1\n\x80".to_vec()
        ]
    );
    assert!(glob(b"f.conflict-*", b"f.conflict-host-20260101T000000Z"));
    assert!(!glob(b"f.conflict-*", b"g.conflict-x"));
    assert!(glob(b"a*b*c", b"aXXbYc"));
}
