//! `syncpipe import-lsyncd --check`: runs lsyncd (the Debian package) and
//! the imported pipeline (watchd | batchd | pushd) side by side on a sample
//! tree in a temporary directory, makes changes, and compares what each
//! target ends with: whether syncpipe syncs the same set of files.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::import::Conf;

/// How long either side may take to deliver the last change.
const SETTLE: Duration = Duration::from_secs(60);

/// A program of the kit: beside the running binary, else from PATH.
pub fn kit_binary(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join(name)))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}

/// Whether this pushd takes the kit's exclude syntax (`--excludes`, added
/// with the one exclude syntax); before that pushd's `--exclude` was rsync's.
fn pushd_takes_excludes(pushd: &Path) -> bool {
    Command::new(pushd)
        .arg("--help")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("--excludes"))
}

/// watchd | batchd | pushd for `conf`, as the units start them; killed on drop.
pub struct Pipeline {
    children: Vec<Child>,
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        for c in self.children.iter_mut().rev() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        for c in &mut self.children {
            let _ = c.wait();
        }
    }
}

fn split(value: Option<&str>) -> Vec<String> {
    value
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// Starts the three stages from `conf`'s keys (SOURCE, TARGETS, DELAY,
/// EXCLUDES, EXCLUDE_FROM, *_OPTS), joined by pipes; `bin` finds a program.
pub fn start_pipeline(conf: &Conf, bin: &dyn Fn(&str) -> PathBuf) -> anyhow::Result<Pipeline> {
    let (watchd, batchd, pushd) = (bin("watchd"), bin("batchd"), bin("pushd"));
    let excludes = split(conf.get("EXCLUDES"));
    let exclude_from = conf.get("EXCLUDE_FROM").unwrap_or_default();
    let mut w = Command::new(&watchd);
    let mut p = Command::new(&pushd);
    if pushd_takes_excludes(&pushd) {
        for c in [&mut w, &mut p] {
            c.arg(format!("--excludes={}", excludes.join(" ")));
            c.arg(format!("--exclude-from={exclude_from}"));
        }
    } else {
        // Older pushd: excludes are watchd's only (events never carry them).
        w.args(excludes.iter().map(|e| format!("--exclude={e}")));
        if !exclude_from.is_empty() {
            w.arg(format!("--exclude-from={exclude_from}"));
        }
    }
    w.args(split(conf.get("WATCHD_OPTS")))
        .arg(conf.get("SOURCE").context("no SOURCE=")?)
        .stdout(Stdio::piped());
    let mut children = Vec::new();
    let mut wc = w
        .spawn()
        .with_context(|| format!("starting {}", watchd.display()))?;
    let wout = wc.stdout.take().context("watchd's stdout")?;
    children.push(wc);
    let mut bc = Command::new(&batchd)
        .arg("-d")
        .arg(conf.get("DELAY").unwrap_or("15s"))
        .args(split(conf.get("BATCHD_OPTS")))
        .stdin(wout)
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", batchd.display()))?;
    let bout = bc.stdout.take().context("batchd's stdout")?;
    children.push(bc);
    if let Some(binary) = conf.get("RSYNC_BINARY").filter(|b| !b.is_empty()) {
        p.arg(format!("--rsync-binary={binary}"));
    }
    let pc = p
        .args(split(conf.get("PUSHD_OPTS")))
        .args(super::words::split(conf.get("TARGETS").unwrap_or_default()))
        .stdin(bout)
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", pushd.display()))?;
    children.push(pc);
    Ok(Pipeline { children })
}

/// Every path below `root`, directories with a trailing `/`.
pub fn tree(root: &Path) -> BTreeSet<String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.insert(format!("{rel}/"));
                walk(root, &path, out);
            } else {
                out.insert(rel);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(root, root, &mut out);
    out
}

/// Names that exercise `patterns` (lsyncd's): each pattern made concrete
/// at the top and one level down, plus names no pattern should take.
pub fn sample_names(patterns: &[String]) -> Vec<String> {
    let mut names = vec![
        "keep.txt".to_string(),
        "sub/keep.txt".into(),
        "sub/deeper/keep.txt".into(),
    ];
    for p in patterns {
        let concrete = p
            .trim_start_matches('/')
            .replace("**", "d1/d2")
            .replace('*', "x")
            .replace('?', "q");
        if concrete.is_empty() || concrete.contains(['[', ']', '\\', '{', '}']) {
            continue;
        }
        let file = if concrete.ends_with('/') {
            format!("{concrete}f.txt")
        } else {
            concrete.clone()
        };
        names.push(file.clone());
        names.push(format!("{file}.more"));
        names.push(format!("sub/{file}"));
        names.push(format!("{}/inside.txt", file.trim_end_matches('/')));
    }
    names.sort();
    names.dedup();
    // A name both a file and a directory's parent cannot exist twice: keep
    // the directory.
    let dirs: BTreeSet<String> = names
        .iter()
        .flat_map(|n| {
            let parts: Vec<&str> = n.split('/').collect();
            (1..parts.len())
                .map(move |i| parts[..i].join("/"))
                .collect::<Vec<_>>()
        })
        .collect();
    names.retain(|n| !dirs.contains(n.as_str()));
    names
}

fn make(root: &Path, names: &[String], suffix: &str) -> anyhow::Result<()> {
    for n in names {
        let path = root.join(format!("{n}{suffix}"));
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, n).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn lua_string(s: &str) -> String {
    format!("{s:?}")
}

/// One sync compared: what each side's target ended with.
pub struct Outcome {
    pub name: String,
    pub lsyncd_only: Vec<String>,
    pub syncpipe_only: Vec<String>,
    pub files: usize,
}

/// Runs lsyncd with the sync's lsyncd excludes and `delete`, and the
/// pipeline of `conf`, both to local targets under `work`.
pub fn compare(
    conf: &Conf,
    lsyncd_excludes: &[String],
    delete: &str,
    work: &Path,
) -> anyhow::Result<Outcome> {
    let src = work.join("source");
    let (lt, st) = (work.join("lsyncd-target"), work.join("syncpipe-target"));
    for d in [&src, &lt, &st] {
        std::fs::create_dir_all(d)?;
    }
    let names = sample_names(lsyncd_excludes);
    make(&src, &names, "")?;
    let config = work.join("lsyncd.conf.lua");
    let excl: Vec<String> = lsyncd_excludes.iter().map(|e| lua_string(e)).collect();
    std::fs::write(
        &config,
        format!(
            "settings {{ nodaemon = true, logfile = {log} }}\n\
             sync {{ default.rsync, source = {src}, target = {tgt}, delay = 1, delete = {delete},\n\
             exclude = {{ {excl} }} }}\n",
            log = lua_string(&work.join("lsyncd.log").display().to_string()),
            src = lua_string(&src.display().to_string()),
            tgt = lua_string(&lt.display().to_string()),
            excl = excl.join(", "),
        ),
    )?;
    let mut lsyncd = Command::new("lsyncd")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting lsyncd (apt-get install lsyncd)")?;
    let mut ours = conf.clone();
    for (k, v) in ours.keys.iter_mut() {
        match k.as_str() {
            "SOURCE" => *v = src.display().to_string(),
            "TARGETS" => {
                let st = st.display().to_string();
                *v = super::words::quote(&st).unwrap_or(st);
            }
            "DELAY" => *v = "1s".into(),
            // Only what decides which files land; the rest names remote hosts.
            "PUSHD_OPTS" => {
                *v = v
                    .split_whitespace()
                    .filter(|f| f.starts_with("--delete") || *f == "--direct" || *f == "--no-init")
                    .collect::<Vec<_>>()
                    .join(" ")
            }
            _ => {}
        }
    }
    let pipeline = start_pipeline(&ours, &kit_binary)?;
    // Both start-up syncs done: the start-up tree's keep.txt is there.
    let wait = |what: &str| -> anyhow::Result<()> {
        let start = Instant::now();
        while !(lt.join(what).exists() && st.join(what).exists()) {
            if start.elapsed() > SETTLE {
                anyhow::bail!("{what} did not reach both targets within {SETTLE:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    };
    wait("keep.txt")?;
    // Changes while running: new names, a rewrite, a delete, then a marker.
    make(&src, &names, ".new")?;
    std::fs::remove_file(src.join("sub/keep.txt")).ok();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(src.join("keep.txt"))?;
    f.write_all(b" changed")?;
    drop(f);
    std::fs::write(src.join("zz-done.txt"), "done")?;
    wait("zz-done.txt")?;
    // The marker came last; give either side one more delay to finish.
    std::thread::sleep(Duration::from_secs(3));
    drop(pipeline);
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(lsyncd.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = lsyncd.wait();
    let (a, b) = (tree(&lt), tree(&st));
    Ok(Outcome {
        name: conf.name.clone(),
        lsyncd_only: a.difference(&b).cloned().collect(),
        syncpipe_only: b.difference(&a).cloned().collect(),
        files: b.len(),
    })
}
