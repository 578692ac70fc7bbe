//! Seeded random churn through the real pipeline `watchd SRC | batchd -d 0.2 |
//! pushd DST`: files and directories created, written, appended, truncated,
//! deleted, renamed (across directories, over existing entries) and chmod'ed,
//! under hostile names, in bursts and with pauses so recursive copies race
//! with changes. Once the source is quiet, every target must equal it.
//!
//! A failure prints the seed, the difference and the command to replay it:
//! `CHURN_SEED=N CHURN_ROUNDS=1 cargo test --test it churn_local`.
//! `CHURN_OPS` sets the operations per round (default 250), `CHURN_PUSHD_ARGS`
//! adds pushd flags (split on spaces, e.g. `--max-delete 1000000`),
//! `CHURN_KEEP=1` keeps the logs, and a failed round's trees, `CHURN_TEE=1` also
//! writes the event and batch streams to files beside the logs, `CHURN_SWAPS=1`
//! adds entries replaced by another type under the same name to every churn
//! (the swap test has them always).

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use syncpipe::wire::event::Record;

use super::harness::{ssh_flags, tree, NASTY};
use crate::support::sshd::Sshd;
use crate::support::{bin, tempdir, wait_until, RecordStream, Running};

/// How long a quiet source may take to reach a target. Generous: a noisy
/// machine, an ssh connection per transfer, a full sync after a restart.
const CONVERGE: Duration = Duration::from_secs(90);

/// xorshift64*: reproducible "random" from a printed seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        (!items.is_empty()).then(|| &items[self.below(items.len())])
    }
}

pub fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// The seed from `CHURN_SEED`, else one from the clock (printed).
pub fn base_seed() -> u64 {
    env_u64("CHURN_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            % 1_000_000_007
    })
}

/// The source's entries, split into files (symlinks included) and
/// directories (the root first, as the empty path).
fn entries(root: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let (mut files, mut dirs) = (Vec::new(), vec![root.to_path_buf()]);
    let mut i = 0;
    while i < dirs.len() {
        let dir = dirs[i].clone();
        i += 1;
        let Ok(list) = fs::read_dir(&dir) else {
            continue;
        };
        for e in list.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => dirs.push(e.path()),
                Ok(_) => files.push(e.path()),
                Err(_) => {}
            }
        }
    }
    (files, dirs)
}

/// Random operations on a source tree, kept between 100 and 250 entries.
pub struct Churn {
    pub rng: Rng,
    root: PathBuf,
    counter: u64,
    /// Also replace entries by another type under the same name (see
    /// [`Churn::swap`]); off by default so older seeds replay unchanged.
    pub swaps: bool,
}

impl Churn {
    pub fn new(seed: u64, root: &Path) -> Self {
        Churn {
            rng: Rng::new(seed),
            root: root.to_path_buf(),
            counter: 0,
            swaps: std::env::var_os("CHURN_SWAPS").is_some(),
        }
    }

    /// A fresh name: plain, or one of the hostile ones (sometimes bare, so
    /// creates and renames land on existing entries).
    fn name(&mut self) -> OsString {
        self.counter += 1;
        let mut n = if self.rng.chance(50) {
            format!("f{}", self.counter).into_bytes()
        } else {
            let mut n = self.rng.pick(NASTY).unwrap().to_vec();
            if self.rng.chance(70) {
                n.extend_from_slice(format!(" {}", self.counter).as_bytes());
            }
            n
        };
        if self.rng.chance(10) {
            n.extend_from_slice(b".d");
        }
        OsStr::from_bytes(&n).to_os_string()
    }

    fn content(&mut self) -> Vec<u8> {
        let len = match self.rng.below(10) {
            0 => 0,
            1 => 20_000 + self.rng.below(200_000),
            _ => self.rng.below(3000),
        };
        let byte = b'a' + self.rng.below(26) as u8;
        let mut data = format!("{} ", self.rng.next()).into_bytes();
        data.resize(data.len() + len, byte);
        data
    }

    /// One random operation; failures (a name taken by a directory, a
    /// directory not empty) are part of the game and ignored.
    pub fn step(&mut self) {
        let (files, dirs) = entries(&self.root);
        let size = files.len() + dirs.len();
        let grow = if size < 100 {
            80
        } else if size > 250 {
            15
        } else {
            45
        };
        let r = self.rng.below(100);
        if r < grow {
            self.create(&dirs);
        } else {
            self.change(&files, &dirs);
        }
    }

    fn create(&mut self, dirs: &[PathBuf]) {
        let parent = self.rng.pick(dirs).unwrap().clone();
        match self.rng.below(10) {
            0..=5 => {
                let data = self.content();
                let _ = fs::write(parent.join(self.name()), data);
            }
            6 | 7 => {
                let mut p = parent.join(self.name());
                for _ in 0..self.rng.below(3) {
                    p = p.join(self.name());
                }
                let _ = fs::create_dir_all(&p);
                for _ in 0..self.rng.below(4) {
                    let data = self.content();
                    let _ = fs::write(p.join(self.name()), data);
                }
            }
            8 => {
                let target = if self.rng.chance(50) {
                    OsStr::from_bytes(self.rng.pick(NASTY).unwrap()).to_os_string()
                } else {
                    OsString::from("../elsewhere")
                };
                let _ = std::os::unix::fs::symlink(target, parent.join(self.name()));
            }
            _ => {
                // A directory with files, made and moved in whole.
                let tmp = parent.join(self.name());
                let _ = fs::create_dir_all(tmp.join("inner"));
                for _ in 0..3 {
                    let data = self.content();
                    let _ = fs::write(tmp.join("inner").join(self.name()), data);
                }
                let to = self.rng.pick(dirs).unwrap().join(self.name());
                if !to.starts_with(&tmp) {
                    let _ = fs::rename(&tmp, to);
                }
            }
        }
    }

    fn change(&mut self, files: &[PathBuf], dirs: &[PathBuf]) {
        let subdirs = &dirs[1..];
        if self.swaps && self.rng.chance(15) {
            return self.swap(files, subdirs);
        }
        match self.rng.below(20) {
            0..=2 => {
                if let Some(f) = self.rng.pick(files) {
                    let data = self.content();
                    let _ = fs::write(f, data);
                }
            }
            3 | 4 => {
                if let Some(f) = self.rng.pick(files) {
                    let data = self.content();
                    if let Ok(mut h) = OpenOptions::new().append(true).open(f) {
                        let _ = h.write_all(&data);
                    }
                }
            }
            5 => {
                if let Some(f) = self.rng.pick(files) {
                    if let Ok(h) = OpenOptions::new().write(true).open(f) {
                        let len = h.metadata().map(|m| m.len()).unwrap_or(0);
                        let _ = h.set_len(len / 2);
                    }
                }
            }
            6..=8 => {
                if let Some(f) = self.rng.pick(files) {
                    let _ = fs::remove_file(f);
                }
            }
            9 => {
                // `rm -r` of a directory holding at most a fifth of the tree:
                // past --max-delete (50% by default) a mass delete is held by
                // design (guards.rs proves it), so churn stays below it and
                // any hold here is a bug.
                let total = files.len() + dirs.len();
                let small: Vec<&PathBuf> = subdirs
                    .iter()
                    .filter(|d| {
                        let below = files
                            .iter()
                            .chain(dirs)
                            .filter(|p| p.starts_with(d))
                            .count();
                        below * 5 <= total
                    })
                    .collect();
                if let Some(d) = self.rng.pick(&small) {
                    let _ = fs::remove_dir_all(d);
                }
            }
            10..=12 => {
                // A file renamed: to a new name anywhere, or over another file.
                if let Some(f) = self.rng.pick(files).cloned() {
                    let to = if self.rng.chance(30) {
                        self.rng.pick(files).unwrap().clone()
                    } else {
                        self.rng.pick(dirs).unwrap().join(self.name())
                    };
                    let _ = fs::rename(f, to);
                }
            }
            13 | 14 => {
                // A directory renamed: to a new name anywhere, or over an empty one.
                if let Some(d) = self.rng.pick(subdirs).cloned() {
                    let to = if self.rng.chance(25) {
                        self.rng.pick(subdirs).unwrap().clone()
                    } else {
                        self.rng.pick(dirs).unwrap().join(self.name())
                    };
                    if !to.starts_with(&d) {
                        let _ = fs::rename(d, to);
                    }
                }
            }
            15 | 16 => {
                if let Some(f) = self.rng.pick(files) {
                    let mode = [0o600, 0o644, 0o755, 0o640, 0o400][self.rng.below(5)];
                    if !f.is_symlink() {
                        let _ = fs::set_permissions(f, fs::Permissions::from_mode(mode));
                    }
                }
            }
            17 => {
                if let Some(d) = self.rng.pick(subdirs) {
                    let mode = [0o755, 0o700, 0o750, 0o711][self.rng.below(4)];
                    let _ = fs::set_permissions(d, fs::Permissions::from_mode(mode));
                }
            }
            _ => {
                // Written the way editors do: a temporary file renamed over the original.
                if let Some(f) = self.rng.pick(files).cloned() {
                    let tmp = f.with_extension("swp~");
                    let data = self.content();
                    if fs::write(&tmp, data).is_ok() {
                        let _ = fs::rename(&tmp, &f);
                    }
                }
            }
        }
    }

    /// An entry replaced by another type under the same name: a file by a
    /// directory (with files) or a symlink, a directory by a file or by a
    /// link (moved away first, as a deploy swaps `current`), a link by a
    /// directory or a file; half of them atomically (rename over it).
    fn swap(&mut self, files: &[PathBuf], subdirs: &[PathBuf]) {
        let was_dir = self.rng.chance(40) && !subdirs.is_empty();
        let Some(at) = (if was_dir {
            self.rng.pick(subdirs)
        } else {
            self.rng.pick(files)
        })
        .cloned() else {
            return;
        };
        let parent = at.parent().unwrap().to_path_buf();
        let tmp = parent.join(self.name());
        let link_target = || -> OsString {
            match at.file_name() {
                Some(n) => n.to_os_string(),
                None => "elsewhere".into(),
            }
        };
        if was_dir {
            // Moved away (kept in the tree) or removed, then the new entry.
            let away = parent.join(self.name());
            if self.rng.chance(50) {
                let _ = fs::rename(&at, &away);
            } else {
                let _ = fs::remove_dir_all(&at);
            }
            if self.rng.chance(50) {
                let _ = std::os::unix::fs::symlink(away.file_name().unwrap(), &tmp);
            } else {
                let data = self.content();
                let _ = fs::write(&tmp, data);
            }
            let _ = fs::rename(&tmp, &at);
            return;
        }
        let is_link = at.is_symlink();
        match self.rng.below(3) {
            0 => {
                // Into a directory with files.
                let _ = fs::remove_file(&at);
                if fs::create_dir(&at).is_ok() {
                    for _ in 0..self.rng.below(3) {
                        let data = self.content();
                        let _ = fs::write(at.join(self.name()), data);
                    }
                }
            }
            1 if !is_link => {
                // A file into a link, atomically when the coin says so.
                let target = link_target();
                if self.rng.chance(50) {
                    let _ = std::os::unix::fs::symlink(target, &tmp);
                    let _ = fs::rename(&tmp, &at);
                } else {
                    let _ = fs::remove_file(&at);
                    let _ = std::os::unix::fs::symlink(target, &at);
                }
            }
            _ => {
                // A link (or file) into a file, written aside and renamed over it.
                let data = self.content();
                if fs::write(&tmp, data).is_ok() {
                    let _ = fs::rename(&tmp, &at);
                }
            }
        }
    }

    /// `ops` operations in bursts of up to 40, with short pauses between
    /// some of them (so batches are cut, and copies run, mid-churn).
    /// `midway` runs once after half of them.
    pub fn run(&mut self, ops: usize, mut midway: impl FnMut(&mut Self)) {
        let mut done = 0;
        let mut called = false;
        while done < ops {
            let burst = 1 + self.rng.below(40);
            for _ in 0..burst.min(ops - done) {
                self.step();
                done += 1;
                if !called && done >= ops / 2 {
                    called = true;
                    midway(self);
                }
            }
            if self.rng.chance(60) {
                thread::sleep(Duration::from_millis(self.rng.below(350) as u64));
            }
        }
    }
}

/// The three stages connected by pipes, each one's stderr in a log file.
struct Pipeline {
    stages: Vec<(&'static str, Running)>,
    out: RecordStream,
}

impl Pipeline {
    fn start(src: &Path, pushd_args: &[OsString], logs: &Path, generation: usize) -> Pipeline {
        let log = |stage: &str| {
            File::create(logs.join(format!("{generation}-{stage}.log"))).expect("creating a log")
        };
        // CHURN_TEE=1: each stream also goes to a file, through a relay.
        let tee = std::env::var_os("CHURN_TEE").is_some();
        let link = |out: std::process::ChildStdout, name: &str| -> Stdio {
            if !tee {
                return out.into();
            }
            let (reader, writer) = std::io::pipe().expect("a pipe");
            let mut copy = File::create(logs.join(format!("{generation}-{name}.jsonl"))).unwrap();
            thread::spawn(move || {
                let (mut out, mut writer) = (out, writer);
                let mut buf = vec![0u8; 65536];
                loop {
                    match std::io::Read::read(&mut out, &mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            let _ = copy.write_all(&buf[..n]);
                            if writer.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    }
                }
            });
            reader.into()
        };
        let mut watchd = Command::new(bin("watchd"))
            .arg(src)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log("watchd"))
            .spawn()
            .expect("spawning watchd");
        let mut batchd = Command::new(bin("batchd"))
            .args(["-d", "0.2", "-v"])
            .stdin(link(watchd.stdout.take().unwrap(), "events"))
            .stdout(Stdio::piped())
            .stderr(log("batchd"))
            .spawn()
            .expect("spawning batchd");
        let mut pushd = Command::new(bin("pushd"))
            .args(["--retry-min", "100ms", "--retry-max", "1s", "-v"])
            .args(pushd_args)
            .stdin(link(batchd.stdout.take().unwrap(), "batches"))
            .stdout(Stdio::piped())
            .stderr(log("pushd"))
            .spawn()
            .expect("spawning pushd");
        let out = RecordStream::new(pushd.stdout.take().unwrap());
        Pipeline {
            stages: vec![
                ("watchd", Running { child: watchd }),
                ("batchd", Running { child: batchd }),
                ("pushd", Running { child: pushd }),
            ],
            out,
        }
    }

    /// Waits for pushd's first result (the start-up sync).
    fn started(&mut self) {
        self.out
            .wait_for("the start-up sync", |r| matches!(r, Record::Applied(_)));
    }

    /// kill -9 of one stage; the others are stopped with SIGTERM, as a
    /// pipe whose neighbour died stops at its next write anyway.
    fn kill9(mut self, stage: usize) {
        let (name, victim) = &mut self.stages[stage];
        victim.signal(Signal::SIGKILL);
        let _ = victim.child.wait();
        eprintln!("churn: killed {name} with SIGKILL");
        for (i, (_, p)) in self.stages.iter_mut().enumerate() {
            if i != stage && p.child.try_wait().unwrap().is_none() {
                let _ = nix::sys::signal::kill(p.pid(), Signal::SIGTERM);
                p.wait_exit();
            }
        }
    }

    /// Stops every stage; returns a summary of pushd's results and the
    /// errors of the failed ones.
    fn stop(mut self) -> (String, Vec<String>) {
        for (_, p) in self.stages.iter_mut() {
            let _ = nix::sys::signal::kill(p.pid(), Signal::SIGTERM);
            p.wait_exit();
        }
        self.out.drain(Duration::from_millis(200));
        let results: Vec<_> = self
            .out
            .seen
            .iter()
            .filter_map(|r| match r {
                Record::Applied(a) => Some(a),
                _ => None,
            })
            .collect();
        let mut statuses = BTreeMap::new();
        for a in &results {
            *statuses.entry(a.status.as_str()).or_insert(0) += 1;
        }
        let summary = format!(
            "{} results of the last pushd: {} full, statuses {statuses:?}, {} ms in transfers",
            results.len(),
            results.iter().filter(|a| a.full).count(),
            results.iter().map(|a| a.duration_ms).sum::<u64>()
        );
        let errors = results.iter().filter_map(|a| a.error.clone()).collect();
        (summary, errors)
    }
}

type Tree = BTreeMap<Vec<u8>, (String, Vec<u8>)>;

/// What differs, one line per path.
fn diff(src: &Tree, dst: &Tree) -> String {
    let mut out = Vec::new();
    let show = |(kind, data): &(String, Vec<u8>)| {
        if kind == "link" {
            format!("link -> {:?}", String::from_utf8_lossy(data))
        } else {
            format!("{kind} ({} bytes)", data.len())
        }
    };
    for (path, s) in src {
        match dst.get(path) {
            None => out.push(format!("  missing on target: {:?} {}", bstr(path), show(s))),
            Some(d) if d != s => out.push(format!(
                "  differs: {:?} source {} target {}",
                bstr(path),
                show(s),
                show(d)
            )),
            _ => {}
        }
    }
    for (path, d) in dst {
        if !src.contains_key(path) {
            out.push(format!("  stale on target: {:?} {}", bstr(path), show(d)));
        }
    }
    let more = out.len().saturating_sub(60);
    out.truncate(60);
    if more > 0 {
        out.push(format!("  ... and {more} more"));
    }
    out.join("\n")
}

fn bstr(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The last lines of every stage log, for a failure message.
fn log_tails(logs: &Path) -> String {
    let mut names: Vec<_> = fs::read_dir(logs)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    names.sort();
    let mut out = String::new();
    for path in names {
        let text = fs::read_to_string(&path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(15)..];
        out.push_str(&format!(
            "--- {} (last {} lines)\n{}\n",
            path.display(),
            tail.len(),
            tail.join("\n")
        ));
    }
    out
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    /// A local target: as root, small batches are applied in-process.
    Local,
    /// A local target with `--direct-max 0`: every batch through rsync,
    /// which the in-process path otherwise takes over under root.
    LocalRsync,
    Direct,
    Ssh,
    /// ssh with pushd's agent on the far side (issue 15).
    SshAgent,
}

/// What happens halfway through a round's churn.
#[derive(Clone, Copy, PartialEq)]
enum Midway {
    Nothing,
    /// kill -9 of a random stage, 20 changes while none runs, then a new
    /// pipeline (pushd with `--state`).
    Kill,
    /// The target's file system (a small tmpfs) filled to the last byte by a
    /// file beside the target root; freed once the source is quiet and a
    /// transfer was seen failing.
    FillTarget,
}

/// A tmpfs mounted on a directory for the life of a round; unmounted
/// (lazily, so a straggling process cannot keep it) before the directory
/// is removed.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path) -> Tmpfs {
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=16m", "syncpipe-churn"])
            .arg(at)
            .output()
            .expect("running mount");
        assert!(
            out.status.success(),
            "this test mounts a tmpfs (root needed): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(at.to_path_buf())
    }

    /// Fills the file system with one file at `ballast`, to ENOSPC.
    fn fill(&self, ballast: &Path) {
        let mut f = File::create(ballast).expect("creating the ballast");
        let block = vec![0u8; 1 << 16];
        let mut written = 0u64;
        loop {
            match f.write(&block) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("filling the target's file system: {e}"),
            }
        }
        eprintln!("churn: target file system filled ({written} bytes of ballast)");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// One round: a tree made, the pipeline started, churn (with something done
/// `midway`), then the target must equal the source.
fn round(kind: Kind, seed: u64, midway: Midway, swaps: bool, sshd: Option<&Sshd>, test: &str) {
    let (src, dst, scratch) = (tempdir(), tempdir(), tempdir());
    let logs = scratch.path().join("logs");
    fs::create_dir(&logs).unwrap();
    let ops = env_u64("CHURN_OPS").unwrap_or(250) as usize;
    let kill = midway == Midway::Kill;
    // Declared after the temporary directories: unmounted before they go.
    let disk = (midway == Midway::FillTarget).then(|| Tmpfs::mount(dst.path()));
    let ballast = dst.path().join("ballast");
    let dst_dir = dst.path().join("copy");
    let mut args: Vec<OsString> = Vec::new();
    match kind {
        Kind::Local => args.push(dst_dir.clone().into()),
        Kind::LocalRsync => {
            args.extend(["--direct-max".into(), "0".into()]);
            args.push(dst_dir.clone().into());
        }
        Kind::Direct => {
            args.push("--direct".into());
            args.push(dst_dir.clone().into());
        }
        Kind::Ssh => {
            args.extend(ssh_flags(sshd.unwrap(), scratch.path()));
            args.push(format!("127.0.0.1:{}", dst_dir.display()).into());
        }
        Kind::SshAgent => {
            args.extend(ssh_flags(sshd.unwrap(), scratch.path()));
            args.extend(["--agent-path".into(), crate::support::bin("pushd").into()]);
            args.push(format!("127.0.0.1:{}", dst_dir.display()).into());
        }
    }
    if let Ok(extra) = std::env::var("CHURN_PUSHD_ARGS") {
        let extra = extra.split_whitespace().map(OsString::from);
        args.splice(0..0, extra);
    }
    if kill {
        args.splice(
            0..0,
            ["--state".into(), scratch.path().join("pushd.state").into()],
        );
    }

    let mut churn = Churn::new(seed, src.path());
    churn.swaps |= swaps;
    while entries(src.path()).0.len() < 80 {
        churn.step();
    }
    let mut pipeline = Some(Pipeline::start(src.path(), &args, &logs, 0));
    pipeline.as_mut().unwrap().started();
    let mut killed = None;
    churn.run(ops, |c| match midway {
        Midway::Nothing => {}
        Midway::Kill => {
            let stage = c.rng.below(3);
            killed = Some(["watchd", "batchd", "pushd"][stage]);
            pipeline.take().unwrap().kill9(stage);
            // Changes while nothing runs, then the pipeline again.
            for _ in 0..20 {
                c.step();
            }
            pipeline = Some(Pipeline::start(src.path(), &args, &logs, 1));
        }
        Midway::FillTarget => disk.as_ref().unwrap().fill(&ballast),
    });
    if let Some(disk) = &disk {
        // One more new file, so at least one transfer meets the full disk.
        fs::write(
            src.path().join("after the disk filled"),
            vec![b'x'; 100_000],
        )
        .unwrap();
        pipeline.as_mut().unwrap().out.wait_for(
            "a transfer failing on the full target file system",
            |r| matches!(r, Record::Applied(a) if a.status == "failed"),
        );
        fs::remove_file(&ballast).unwrap();
        eprintln!("churn: the ballast on {:?} removed", disk.0);
    }
    let quiet = Instant::now();
    let ok = wait_until(CONVERGE, || tree(src.path()) == tree(&dst_dir));
    let took = quiet.elapsed();
    let (summary, errors) = pipeline.take().unwrap().stop();
    let midway_said = match midway {
        Midway::Nothing => String::new(),
        Midway::Kill => killed
            .map(|s| format!(", {s} killed -9 midway"))
            .unwrap_or_default(),
        Midway::FillTarget => ", the target's file system full from midway".into(),
    };
    let replay = format!(
        "replay: CHURN_SEED={seed} CHURN_ROUNDS=1 CHURN_OPS={ops} cargo test --test it {test}"
    );
    if !ok {
        let (a, b) = (tree(src.path()), tree(&dst_dir));
        let kept = if std::env::var_os("CHURN_KEEP").is_some() {
            let dirs = [src.keep(), dst.keep(), scratch.keep()];
            format!(
                "kept: source {:?}, target {:?}, logs {:?}\n",
                dirs[0], dirs[1], dirs[2]
            )
        } else {
            "CHURN_KEEP=1 keeps the trees and logs\n".into()
        };
        panic!(
            "churn round did not converge within {CONVERGE:?}: target {kind:?}, seed {seed}, \
             {ops} ops{midway_said}\n{}\n{summary}\n{replay}\n{}{kept}",
            diff(&a, &b),
            log_tails(&logs)
        );
    }
    // A path whose source parent became a file is gone, not a failure of
    // the applier (rsync itself still fails on it with exit 23).
    let enotdir: Vec<&String> = errors
        .iter()
        .filter(|e| e.contains("Not a directory (os error 20)"))
        .collect();
    assert!(
        enotdir.is_empty(),
        "seed {seed}: transfers failed on a path whose parent was swapped: {enotdir:?}\n{replay}"
    );
    if std::env::var_os("CHURN_KEEP").is_some() {
        eprintln!("churn: logs kept in {:?}", scratch.keep());
    }
    eprintln!(
        "churn: {kind:?} seed {seed}: converged {:.2}s after the last change{midway_said}; \
         {summary}",
        took.as_secs_f64(),
    );
}

/// `CHURN_ROUNDS` rounds (default 1), seeded `CHURN_SEED`, `CHURN_SEED + 1`, ...
fn rounds(kind: impl Fn(u64) -> Kind, midway: Midway, sshd: Option<&Sshd>, test: &str) {
    swap_rounds(kind, midway, false, sshd, test);
}

/// The same, `swaps` turning on [`Churn::swap`] whatever `CHURN_SWAPS` says.
fn swap_rounds(
    kind: impl Fn(u64) -> Kind,
    midway: Midway,
    swaps: bool,
    sshd: Option<&Sshd>,
    test: &str,
) {
    let seed = base_seed();
    let n = env_u64("CHURN_ROUNDS").unwrap_or(1);
    eprintln!("churn: {test}: CHURN_SEED={seed} CHURN_ROUNDS={n}");
    for i in 0..n {
        let s = seed.wrapping_add(i);
        round(kind(s), s, midway, swaps, sshd, test);
    }
}

#[test]
fn churn_local_target_converges() {
    rounds(
        |_| Kind::Local,
        Midway::Nothing,
        None,
        "churn_local_target_converges",
    );
}

#[test]
fn churn_local_target_through_rsync_converges() {
    rounds(
        |_| Kind::LocalRsync,
        Midway::Nothing,
        None,
        "churn_local_target_through_rsync_converges",
    );
}

#[test]
fn churn_direct_target_converges() {
    rounds(
        |_| Kind::Direct,
        Midway::Nothing,
        None,
        "churn_direct_target_converges",
    );
}

#[test]
fn churn_ssh_target_converges() {
    let sshd = Sshd::start();
    rounds(
        |_| Kind::Ssh,
        Midway::Nothing,
        Some(&sshd),
        "churn_ssh_target_converges",
    );
}

#[test]
fn churn_ssh_target_with_the_agent_converges() {
    let sshd = Sshd::start();
    rounds(
        |_| Kind::SshAgent,
        Midway::Nothing,
        Some(&sshd),
        "churn_ssh_target_with_the_agent_converges",
    );
}

#[test]
fn churn_with_a_stage_killed_converges() {
    // The target kind follows the seed, so a replay picks the same one.
    let kind = |seed: u64| [Kind::Local, Kind::Direct, Kind::LocalRsync][(seed % 3) as usize];
    rounds(
        kind,
        Midway::Kill,
        None,
        "churn_with_a_stage_killed_converges",
    );
}

#[test]
fn churn_with_entries_swapped_for_other_types_converges() {
    // Files into directories and links, directories into files and links
    // (moved away first, as a deploy swaps `current`), links into files.
    let kind = |seed: u64| [Kind::Local, Kind::Direct][(seed % 2) as usize];
    swap_rounds(
        kind,
        Midway::Nothing,
        true,
        None,
        "churn_with_entries_swapped_for_other_types_converges",
    );
}

#[test]
fn churn_onto_a_target_whose_disk_fills_converges_once_freed() {
    // The kind follows the seed: the in-process applier, --direct, and the
    // agent each write (and fail) their own way.
    let sshd = Sshd::start();
    let kind = |seed: u64| [Kind::Local, Kind::Direct, Kind::SshAgent][(seed % 3) as usize];
    rounds(
        kind,
        Midway::FillTarget,
        Some(&sshd),
        "churn_onto_a_target_whose_disk_fills_converges_once_freed",
    );
}
