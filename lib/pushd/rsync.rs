//! rsync command lines: building them from the user's settings (pure, so
//! unit tests check every flag; ssh's part comes from [`crate::ssh`]),
//! classifying rsync's exit codes, and running rsync with a NUL-separated
//! file list on its stdin.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::location::{Location, Target};
use crate::ssh::SshSettings;
use crate::wire::path::WirePath;

/// Every rsync setting pushd exposes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RsyncSettings {
    pub compress: bool,
    pub bwlimit: Option<String>,
    pub checksum: bool,
    pub inplace: bool,
    pub partial: bool,
    pub rsync_path: Option<String>,
    /// `--rsync-opt`, passed through in order.
    pub extra: Vec<OsString>,
    /// rsync filter rules (`--filter=RULE` each), from
    /// [`crate::exclude::Excludes::rsync_filters`]. Never `--exclude-from`:
    /// with `--from0` rsync would read that file NUL-separated.
    pub filters: Vec<String>,
    pub password_file: Option<PathBuf>,
    pub ssh: SshSettings,
    /// False when the installed rsync ignores `--delete-missing-args` with
    /// `--files-from` (probe it with `apply::delete_missing_args_works`);
    /// deletions then go another way.
    pub delete_missing_args_works: bool,
    /// rsync's `--timeout` (seconds without I/O before it gives up, exit 30).
    pub io_timeout: Option<u64>,
    /// `--rsync-binary`: the local rsync program to run (lsyncd's
    /// `rsync.binary`); `None` is `rsync` found on PATH. The remote side's
    /// program is `rsync_path`.
    pub rsync_binary: Option<PathBuf>,
    /// `--dry-run`: every rsync runs with `--dry-run` and itemizes what it
    /// would do, and nothing else touches the target (no renames, no
    /// `--direct` copies, no native deletions).
    pub dry_run: bool,
    /// ssh targets: small files, renames and deletions through pushd's
    /// agent on the far side (`None`: `--no-agent`, rsync alone).
    pub agent: Option<crate::pushd::agent::push::AgentSettings>,
    /// `--direct-max`: a batch of at most this many paths to a local
    /// target is applied in this process, as `--direct` does, when nothing
    /// asks rsync for more (see `Applier::in_process`); 0: always rsync.
    pub in_process_max: usize,
}

impl Default for RsyncSettings {
    fn default() -> Self {
        RsyncSettings {
            compress: false,
            bwlimit: None,
            checksum: false,
            inplace: false,
            partial: false,
            rsync_path: None,
            extra: Vec::new(),
            filters: Vec::new(),
            password_file: None,
            ssh: SshSettings::default(),
            delete_missing_args_works: true,
            io_timeout: None,
            rsync_binary: None,
            dry_run: false,
            agent: None,
            in_process_max: 0,
        }
    }
}

impl RsyncSettings {
    /// The local rsync program: `--rsync-binary`, else `rsync` on PATH.
    pub fn program(&self) -> &std::ffi::OsStr {
        self.rsync_binary
            .as_deref()
            .map_or("rsync".as_ref(), Path::as_os_str)
    }
}

/// What one rsync run does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transfer {
    /// The listed paths only, not recursing into listed directories.
    /// Listed paths missing on the source are deleted on the target when
    /// `delete` is set, skipped otherwise.
    Paths { delete: bool },
    /// The listed subtrees whole (`"."`: the root), deleting extraneous
    /// entries on the target when `delete` is set.
    Subtrees { delete: bool },
}

/// The full argument list for rsync (without the program), reading a
/// NUL-separated list of paths relative to `source` from stdin.
pub fn build_args(
    settings: &RsyncSettings,
    transfer: Transfer,
    dry_run: bool,
    source: &Path,
    target: &Target,
) -> Vec<OsString> {
    let mut src = source.as_os_str().as_bytes().to_vec();
    if src.last() != Some(&b'/') {
        src.push(b'/');
    }
    let mut a = common_args(settings, transfer, dry_run, &target.location);
    // Every listed path changed, but rsync's quick check compares mtimes in
    // whole seconds: a file rewritten with as many bytes within the second
    // of its last copy was skipped, and the target kept the old content for
    // good (bench/churn.sh, lsyncd too).
    match (transfer, &target.location) {
        (Transfer::Paths { .. }, Location::Local(_)) => {
            // Nanoseconds tell them apart; a natively renamed file keeps
            // its mtime and is still not resent.
            a.push("--modify-window=-1".into());
        }
        (Transfer::Paths { .. }, _) => {
            // A remote receiver gets a negative window as `-@-1`, which
            // rrsync refuses ("invalid rsync-command syntax or options")
            // and a receiver older than 3.1.3 does not know: the listed
            // files skip the quick check instead, which every receiver
            // takes. What changed is sent as a delta either way; a listed
            // file whose data did not change (a chmod, a touch) costs a
            // checksum pass on both ends. Whole subtrees (a full sync)
            // keep the quick check.
            a.push("--ignore-times".into());
        }
        (Transfer::Subtrees { .. }, _) => {}
    }
    a.push(OsString::from_vec(src));
    a.push(target.rsync_dest());
    a
}

/// The same for a pull (`pushd --from`): `upstream` is rsync's sender and
/// the local directory `dest` its receiver, so everything rsync writes is
/// written here, by the local receiver.
pub fn pull_args(
    settings: &RsyncSettings,
    transfer: Transfer,
    dry_run: bool,
    upstream: &Target,
    dest: &Path,
) -> Vec<OsString> {
    let mut dst = dest.as_os_str().as_bytes().to_vec();
    if dst.last() != Some(&b'/') {
        dst.push(b'/');
    }
    let mut a = common_args(settings, transfer, dry_run, &upstream.location);
    // rsync's quick check compares whole seconds: a file rewritten with the
    // same size within the second it was last pulled would be skipped for
    // good (a tier-2 replica hit it). The receiver is this machine, whose
    // file systems keep nanoseconds; -1 compares them too.
    a.insert(0, "--modify-window=-1".into());
    a.push(upstream.rsync_dest());
    a.push(OsString::from_vec(dst));
    a
}

/// Every argument but the two ends; `remote` is the end that is not this
/// machine (it decides `--rsh` or `--password-file`).
fn common_args(
    settings: &RsyncSettings,
    transfer: Transfer,
    dry_run: bool,
    remote: &Location,
) -> Vec<OsString> {
    let mut a: Vec<OsString> = vec![
        "--archive".into(),
        "--stats".into(),
        "--no-human-readable".into(),
        "--files-from=-".into(),
        "--from0".into(),
    ];
    match transfer {
        Transfer::Paths { delete: true } => {
            // --force: a listed directory gone from the source is removed even
            // when the target's copy is not empty (rsync otherwise says
            // "cannot delete non-empty directory" and exits 0).
            a.extend(["--delete-missing-args".into(), "--force".into()]);
        }
        Transfer::Paths { delete: false } => a.push("--ignore-missing-args".into()),
        Transfer::Subtrees { delete: true } => a.extend([
            "--recursive".into(),
            "--delete".into(),
            "--delete-missing-args".into(),
            "--force".into(),
        ]),
        Transfer::Subtrees { delete: false } => {
            a.extend(["--recursive".into(), "--ignore-missing-args".into()])
        }
    }
    if dry_run {
        a.push("--dry-run".into());
    }
    if let Some(secs) = settings.io_timeout {
        a.push(format!("--timeout={secs}").into());
    }
    if settings.compress {
        a.push("--compress".into());
    }
    if let Some(limit) = &settings.bwlimit {
        a.push(format!("--bwlimit={limit}").into());
    }
    if settings.checksum {
        a.push("--checksum".into());
    }
    if settings.inplace {
        a.push("--inplace".into());
    }
    if settings.partial {
        a.push("--partial".into());
    }
    for rule in &settings.filters {
        a.push(format!("--filter={rule}").into());
    }
    match remote {
        Location::Ssh { .. } => {
            let mut e = OsString::from("--rsh=");
            e.push(settings.ssh.rsync_e());
            a.push(e);
            if let Some(path) = &settings.rsync_path {
                a.push(format!("--rsync-path={path}").into());
            }
        }
        Location::Daemon { .. } => {
            if let Some(file) = &settings.password_file {
                let mut arg = OsString::from("--password-file=");
                arg.push(file);
                a.push(arg);
            }
        }
        Location::Local(_) => {}
    }
    a.extend(settings.extra.iter().cloned());
    a
}

/// rsync's several stderr lines as one clean line (`a; b; c`): a log
/// record and a result's `error` are one line each, and escaped `\n`s in
/// the journal read badly.
pub fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// What to do after rsync exits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Applied. 24 (source files vanished during the transfer) counts: the
    /// vanished files produce their own delete events.
    Success,
    /// The link or the other side failed (network, timeout, ssh): try again later.
    Retry,
    /// rsync refused or failed on its own terms: log rsync's message loudly.
    Fail,
}

/// The one place rsync's exit codes are classified.
pub fn classify(code: Option<i32>) -> Outcome {
    match code {
        Some(0 | 24) => Outcome::Success,
        // 10 socket I/O, 11 file I/O, 12 protocol stream (the link dropped),
        // 14 IPC, 20 killed by a signal, 30 timeout, 35 daemon connect
        // timeout, 255 ssh could not connect.
        Some(10 | 11 | 12 | 14 | 20 | 30 | 35 | 255) => Outcome::Retry,
        // Killed by a signal without a code: the same as 20.
        None => Outcome::Retry,
        Some(_) => Outcome::Fail,
    }
}

/// A failure that will not go away by trying again, with what to tell
/// the user: what it is and what to do about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Permanent {
    /// The exit code pushd gives when it gives up on it.
    pub code: crate::cli::exit::Code,
    /// What is wrong and what to do, one line.
    pub advice: String,
}

/// Reads a failed transfer's exit code and rsync's/ssh's message: `None`
/// for a failure that may pass (network, timeout, a server restarting),
/// `Some` for one that never will until someone fixes something. `host`
/// names the target in the advice (`keysetup check HOST`).
///
/// Only unambiguous texts are permanent: anything unknown stays what
/// [`classify`] says, so a new ssh wording is retried, never given up on.
pub fn diagnose(code: Option<i32>, stderr: &str, host: &str) -> Option<Permanent> {
    use crate::cli::exit::Code;
    let has = |needle: &str| stderr.contains(needle);
    let permanent = |code: Code, advice: String| Some(Permanent { code, advice });
    if code == Some(0) || code == Some(24) {
        return None;
    }
    if has("REMOTE HOST IDENTIFICATION HAS CHANGED") || has("Host key for") && has("has changed") {
        return permanent(
            Code::HostKey,
            format!(
                "the host key of {host} has CHANGED since it was trusted (a reinstalled server, or someone in between):                  check with the server's admin, then `keysetup check {host}` and replace the old known_hosts line"
            ),
        );
    }
    if has("Host key verification failed") || has("host key is known for") {
        return permanent(
            Code::HostKey,
            format!(
                "the host key of {host} is not trusted (not in known_hosts, and pushd never asks):                  run `keysetup check {host}` or `ssh {host}` once as this user to trust it"
            ),
        );
    }
    if has("Permission denied (publickey") || has("Too many authentication failures") {
        return permanent(
            Code::Auth,
            format!(
                "{host} refused the ssh login (no key it accepts): run `keysetup check {host}`,                  or give the key with --identity"
            ),
        );
    }
    // "Temporary failure in name resolution" is the resolver being down:
    // that one may pass.
    if has("Could not resolve hostname") && !has("Temporary failure") {
        return permanent(
            Code::Unreachable,
            format!("the host name {host} is unknown (DNS or /etc/hosts has no such name): check its spelling"),
        );
    }
    if has("rsync: command not found")
        || has("rsync: not found")
        || has("rsync: No such file or directory")
        || code == Some(127)
    {
        return permanent(
            Code::Failure,
            format!(
                "{host} has no rsync (the remote shell cannot find it): install rsync there                  (apt-get install rsync), or give its path with --rsync-path"
            ),
        );
    }
    let dir_failed = |why: &str| {
        stderr.lines().flat_map(|l| l.split("; ")).any(|l| {
            (l.contains("mkdir ") || l.contains("change_dir") || l.contains("chdir"))
                && l.contains(why)
        })
    };
    if dir_failed("No such file or directory") {
        return permanent(
            Code::Failure,
            format!(
                "the target directory's parent does not exist on {host} (rsync creates only the last                  part of the path): create it there (mkdir -p), or fix the path"
            ),
        );
    }
    if dir_failed("Permission denied") {
        return permanent(
            Code::Failure,
            format!(
                "no permission to create or enter the target directory on {host}:                  fix its owner or mode there, or push as a user who may write it"
            ),
        );
    }
    None
}

/// The parts of `--stats` a result record reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Entries in the transfer's file list (the source side).
    pub files: u64,
    pub created: u64,
    pub deleted: u64,
    /// Regular files whose data was sent.
    pub transferred: u64,
    /// Size of those files.
    pub transferred_size: u64,
    /// Bytes sent on the wire, protocol included.
    pub sent: u64,
}

impl Stats {
    pub fn add(&mut self, other: Stats) {
        self.files += other.files;
        self.created += other.created;
        self.deleted += other.deleted;
        self.transferred += other.transferred;
        self.transferred_size += other.transferred_size;
        self.sent += other.sent;
    }
}

/// Reads rsync's `--stats` block (written with `--no-human-readable`).
pub fn parse_stats(out: &[u8]) -> Stats {
    let text = String::from_utf8_lossy(out);
    let mut s = Stats::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let number = || -> u64 {
            value
                .trim()
                .split(|c: char| !c.is_ascii_digit() && c != ',')
                .next()
                .unwrap_or("")
                .replace(',', "")
                .parse()
                .unwrap_or(0)
        };
        match key.trim() {
            "Number of files" => s.files = number(),
            "Number of created files" => s.created = number(),
            "Number of deleted files" => s.deleted = number(),
            "Number of regular files transferred" => s.transferred = number(),
            "Total transferred file size" => s.transferred_size = number(),
            "Total bytes sent" => s.sent = number(),
            _ => {}
        }
    }
    s
}

/// How one rsync run ended.
#[derive(Debug)]
pub struct RunResult {
    pub code: Option<i32>,
    pub outcome: Outcome,
    pub stats: Stats,
    /// rsync's stderr, trimmed, for messages.
    pub stderr: String,
    pub duration: Duration,
    /// rsync said "created directory": the destination root was missing
    /// (printed with `--info=name1` only).
    pub created_root: bool,
    /// What rsync itemized (only when run with [`ITEMIZE`]).
    pub items: Vec<Item>,
}

/// rsync's stdout, without its progress segments; each read's last
/// progress segment goes to `progress`.
fn read_stdout(
    mut stdout: std::process::ChildStdout,
    progress: Option<&(dyn Fn(crate::health::target::Progress) + Sync)>,
) -> Vec<u8> {
    let mut buf = Vec::new();
    let Some(report) = progress else {
        let _ = stdout.read_to_end(&mut buf);
        return buf;
    };
    let mut chunk = vec![0u8; 16 << 10];
    let mut from = 0;
    loop {
        let n = match stdout.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut last = None;
        while let Some(end) = buf[from..].iter().position(|&b| b == b'\r' || b == b'\n') {
            let segment = String::from_utf8_lossy(&buf[from..from + end]);
            last = crate::pushd::progress::parse(&segment).or(last);
            from += end + 1;
        }
        if let Some(p) = last {
            report(p);
        }
    }
    crate::pushd::progress::without_progress(&buf)
}

/// Runs `program` (rsync) with `args`, writing `list` (NUL-separated
/// relative paths) on its stdin. An error means rsync could not be started
/// at all.
pub fn run(
    program: &std::ffi::OsStr,
    args: &[OsString],
    list: &[&[u8]],
) -> anyhow::Result<RunResult> {
    run_watched(program, args, list, None)
}

/// [`run`], handing `progress` what rsync's `--info=progress2` lines say
/// (the caller adds that flag) as they come.
pub fn run_watched(
    program: &std::ffi::OsStr,
    args: &[OsString],
    list: &[&[u8]],
    progress: Option<&(dyn Fn(crate::health::target::Progress) + Sync)>,
) -> anyhow::Result<RunResult> {
    let started = Instant::now();
    let mut child = crate::os::child::command(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| {
            if program == "rsync" {
                "starting rsync (is it installed and on PATH? On Debian: apt-get install rsync)"
                    .to_string()
            } else {
                format!(
                    "starting rsync as {} (--rsync-binary)",
                    Path::new(program).display()
                )
            }
        })?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    // Both outputs are read on their own threads while the list is written,
    // so a long list can never deadlock against full pipes.
    let (status, out, err) = std::thread::scope(|scope| {
        let out_thread = scope.spawn(move || read_stdout(stdout, progress));
        let err_thread = scope.spawn(move || {
            let mut buf = Vec::new();
            let _ = stderr.read_to_end(&mut buf);
            buf
        });
        let mut data = Vec::new();
        for path in list {
            data.extend_from_slice(path);
            data.push(0);
        }
        // rsync closing its stdin early (it failed to connect) is reported by
        // its exit code, not here.
        let _ = stdin.write_all(&data);
        drop(stdin);
        let status = child.wait().context("waiting for rsync");
        (
            status,
            out_thread.join().unwrap_or_default(),
            err_thread.join().unwrap_or_default(),
        )
    });
    let status = status?;
    let code = status.code();
    Ok(RunResult {
        code,
        outcome: classify(code),
        stats: parse_stats(&out),
        stderr: one_line(&String::from_utf8_lossy(&err)),
        duration: started.elapsed(),
        created_root: out
            .split(|&b| b == b'\n')
            .any(|line| line.starts_with(b"created directory ")),
        items: parse_items(&out),
    })
}

/// The `--out-format` that makes rsync name every change it makes (or,
/// with `--dry-run`, would make): the 11-letter itemize code, a space, the
/// name. Parsed by [`parse_items`].
pub const ITEMIZE: &str = "--out-format=%i %n";

/// One line of [`ITEMIZE`] output: what rsync does to one path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    /// rsync's itemize code (`>f+++++++++`, `*deleting`, `cd+++++++++`,
    /// `.d..t......`), trimmed.
    pub code: String,
    /// The path relative to the transfer's root (`.` for the root).
    pub path: WirePath,
}

impl Item {
    /// What the item means, in one word: `delete`, `send` (file data),
    /// `create` (a directory, symlink or special file made), `hardlink`,
    /// `attrs` (only metadata: times, mode, owner).
    pub fn op(&self) -> &'static str {
        match self.code.as_bytes().first() {
            Some(b'*') => "delete",
            Some(b'<' | b'>') => "send",
            Some(b'c') => "create",
            Some(b'h') => "hardlink",
            _ => "attrs",
        }
    }
}

/// Reads rsync's [`ITEMIZE`] lines out of its stdout, skipping everything
/// else (`--stats`, "created directory"). Names come back byte for byte:
/// rsync writes a byte it will not print (a newline, invalid UTF-8) as
/// `\#ooo` in octal, and a literal `\#ddd` in a name with its backslash
/// escaped the same way, so the decoding is exact.
pub fn parse_items(out: &[u8]) -> Vec<Item> {
    let mut items = Vec::new();
    for line in out.split(|&b| b == b'\n') {
        if line.len() < 13 || line[11] != b' ' {
            continue;
        }
        let (code, name) = (&line[..11], &line[12..]);
        let known = if code.starts_with(b"*deleting") {
            true
        } else {
            b"<>ch.".contains(&code[0])
                && b"fdLDS".contains(&code[1])
                && code[2..].iter().all(|c| c.is_ascii_graphic())
        };
        if !known {
            continue;
        }
        let mut bytes = unescape(name);
        // rsync marks a directory with a trailing slash; no name has one.
        if bytes.len() > 1 && bytes.last() == Some(&b'/') {
            bytes.pop();
        }
        let path = if bytes == b"./" || bytes == b"." {
            WirePath::root()
        } else {
            WirePath::from_bytes(bytes)
        };
        items.push(Item {
            code: String::from_utf8_lossy(code).trim_end().to_string(),
            path,
        });
    }
    items
}

/// Undoes rsync's `\#ooo` escapes.
fn unescape(name: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len());
    let mut i = 0;
    while i < name.len() {
        if name[i] == b'\\'
            && i + 4 < name.len()
            && name[i + 1] == b'#'
            && name[i + 2..i + 5].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let n = name[i + 2..i + 5]
                .iter()
                .fold(0u32, |n, c| n * 8 + u32::from(c - b'0'));
            out.push(n as u8);
            i += 5;
        } else {
            out.push(name[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rsync_errors_become_one_clean_line() {
        let err = "rsync: [sender] change_dir \"/x\" failed: No such file or directory (2)\n\
                   rsync error: some files could not be transferred (code 23) at main.c(1338)\n\n";
        let line = one_line(err);
        assert!(!line.contains('\n'), "{line}");
        assert_eq!(
            line,
            "rsync: [sender] change_dir \"/x\" failed: No such file or directory (2); \
             rsync error: some files could not be transferred (code 23) at main.c(1338)"
        );
    }

    fn target(s: &str) -> Target {
        Target::parse(s.as_ref(), Path::new("/")).unwrap()
    }

    fn strings(args: &[OsString]) -> Vec<String> {
        args.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn default_is_archive_with_list_on_stdin() {
        let a = strings(&build_args(
            &RsyncSettings::default(),
            Transfer::Paths { delete: true },
            false,
            Path::new("/src"),
            &target("/dst"),
        ));
        assert_eq!(
            a,
            [
                "--archive",
                "--stats",
                "--no-human-readable",
                "--files-from=-",
                "--from0",
                "--delete-missing-args",
                "--force",
                "--modify-window=-1",
                "/src/",
                "/dst/"
            ]
        );
    }

    #[test]
    fn every_setting_becomes_its_flag() {
        let settings = RsyncSettings {
            compress: true,
            bwlimit: Some("1m".into()),
            checksum: true,
            inplace: true,
            partial: true,
            rsync_path: Some("sudo rsync".into()),
            extra: vec!["--numeric-ids".into(), "--hard-links".into()],
            filters: vec!["- *.tmp".into(), "+ /keep/".into()],
            password_file: Some("/pw".into()),
            ssh: SshSettings {
                port: Some(2222),
                identity: Some("/k/id it's".into()),
                options: vec!["BatchMode=no".into()],
                connect_timeout: Some(9),
                control: None,
            },
            delete_missing_args_works: true,
            io_timeout: Some(60),
            rsync_binary: Some("/opt/rsync/bin/rsync".into()),
            dry_run: false,
            agent: None,
            in_process_max: 0,
        };
        let a = strings(&build_args(
            &settings,
            Transfer::Subtrees { delete: false },
            true,
            Path::new("/src/"),
            &target("u@h:/dst"),
        ));
        for flag in [
            "--recursive",
            "--ignore-missing-args",
            "--dry-run",
            "--compress",
            "--bwlimit=1m",
            "--checksum",
            "--inplace",
            "--partial",
            "--filter=- *.tmp",
            "--filter=+ /keep/",
            "--rsh=ssh '-p' '2222' '-i' '/k/id it''s' '-o' 'BatchMode=no' '-o' 'BatchMode=yes' \
             '-o' 'ServerAliveInterval=15' '-o' 'ServerAliveCountMax=4' '-o' 'ConnectTimeout=9'",
            "--timeout=60",
            "--rsync-path=sudo rsync",
            "--numeric-ids",
        ] {
            assert!(a.iter().any(|x| x == flag), "{flag} missing from {a:?}");
        }
        assert!(!a.iter().any(|x| x.starts_with("--delete")));
        assert!(!a.iter().any(|x| x.starts_with("--password-file")));
        assert_eq!(&a[a.len() - 2..], ["/src/", "u@h:/dst/"]);
        // rsync-opt comes after ours so it can override them.
        let pos = |f: &str| a.iter().position(|x| x == f).unwrap();
        assert!(pos("--numeric-ids") > pos("--compress"));

        let d = strings(&build_args(
            &settings,
            Transfer::Subtrees { delete: true },
            false,
            Path::new("/src"),
            &target("rsync://h/m"),
        ));
        assert!(d.iter().any(|x| x == "--password-file=/pw"));
        assert!(d.iter().any(|x| x == "--delete"));
        assert!(!d.iter().any(|x| x.starts_with("--rsh")));
    }

    #[test]
    fn listed_paths_skip_the_whole_second_quick_check_on_every_target() {
        let args = |transfer, to| {
            strings(&build_args(
                &RsyncSettings::default(),
                transfer,
                false,
                Path::new("/src"),
                &target(to),
            ))
        };
        let paths = Transfer::Paths { delete: true };
        let whole = Transfer::Subtrees { delete: true };
        assert!(args(paths, "/dst").contains(&"--modify-window=-1".into()));
        for remote in ["u@h:/dst", "rsync://h/m"] {
            let a = args(paths, remote);
            assert!(a.contains(&"--ignore-times".into()), "{a:?}");
            // rrsync refuses the `-@-1` a negative window becomes.
            assert!(!a.iter().any(|x| x.starts_with("--modify-window")), "{a:?}");
        }
        for to in ["/dst", "u@h:/dst", "rsync://h/m"] {
            let a = args(whole, to);
            assert!(
                !a.iter()
                    .any(|x| x == "--ignore-times" || x.starts_with("--modify-window")),
                "a full sync keeps the quick check: {a:?}"
            );
        }
    }

    #[test]
    fn a_pull_reads_the_upstream_and_writes_here() {
        let settings = RsyncSettings {
            ssh: SshSettings {
                port: Some(2222),
                ..SshSettings::default()
            },
            ..RsyncSettings::default()
        };
        let a = strings(&pull_args(
            &settings,
            Transfer::Paths { delete: true },
            false,
            &target("u@h:/srv/www"),
            Path::new("/srv/www"),
        ));
        assert_eq!(&a[a.len() - 2..], ["u@h:/srv/www/", "/srv/www/"]);
        assert!(a.iter().any(|x| x.starts_with("--rsh=ssh '-p' '2222'")));
        assert!(a.iter().any(|x| x == "--delete-missing-args"));
        assert!(a.iter().any(|x| x == "--modify-window=-1"));
        let local = strings(&pull_args(
            &settings,
            Transfer::Subtrees { delete: false },
            true,
            &target("/up"),
            Path::new("/here/"),
        ));
        assert_eq!(&local[local.len() - 2..], ["/up/", "/here/"]);
        assert!(!local.iter().any(|x| x.starts_with("--rsh")));
    }

    #[test]
    fn exit_codes() {
        assert_eq!(classify(Some(0)), Outcome::Success);
        assert_eq!(classify(Some(24)), Outcome::Success);
        for code in [10, 12, 30, 35, 255] {
            assert_eq!(classify(Some(code)), Outcome::Retry, "{code}");
        }
        for code in [1, 2, 3, 5, 23, 25] {
            assert_eq!(classify(Some(code)), Outcome::Fail, "{code}");
        }
        assert_eq!(classify(None), Outcome::Retry);
    }

    #[test]
    fn never_working_targets_are_told_apart_from_blips() {
        use crate::cli::exit::Code;
        let d = |code, text: &str| diagnose(Some(code), text, "backup1").map(|p| p.code);
        assert_eq!(
            d(255, "ssh: Could not resolve hostname nosuch.invalid: Name or service not known; rsync: connection unexpectedly closed (0 bytes received so far) [sender]"),
            Some(Code::Unreachable)
        );
        assert_eq!(
            d(
                255,
                "ssh: Could not resolve hostname b: Temporary failure in name resolution"
            ),
            None
        );
        assert_eq!(
            d(255, "root@127.0.0.1: Permission denied (publickey)."),
            Some(Code::Auth)
        );
        assert_eq!(
            d(255, "@@@@@@@@@@@; @    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @; Host key verification failed."),
            Some(Code::HostKey)
        );
        assert_eq!(
            d(255, "No ED25519 host key is known for [127.0.0.1]:2222 and you have requested strict checking.; Host key verification failed."),
            Some(Code::HostKey)
        );
        assert_eq!(
            d(12, "bash: line 1: rsync: command not found; rsync: connection unexpectedly closed (0 bytes received so far) [sender]"),
            Some(Code::Failure)
        );
        assert_eq!(
            d(11, "rsync: [Receiver] mkdir \"/srv/a/b\" failed: No such file or directory (2); rsync error: error in file IO (code 11)"),
            Some(Code::Failure)
        );
        assert_eq!(
            d(
                11,
                "rsync: [Receiver] mkdir \"/root/x\" failed: Permission denied (13)"
            ),
            Some(Code::Failure)
        );
        // Blips and per-file trouble stay with the exit-code rules.
        for (code, text) in [
            (
                255,
                "ssh: connect to host 127.0.0.1 port 2222: Connection refused",
            ),
            (255, "ssh: connect to host b port 22: Connection timed out"),
            (
                12,
                "rsync: connection unexpectedly closed (0 bytes received so far) [sender]",
            ),
            (
                23,
                "rsync: [sender] send_files failed to open \"/src/x\": Permission denied (13)",
            ),
            (24, "file has vanished: \"/src/y\""),
        ] {
            assert_eq!(d(code, text), None, "{text}");
        }
        let advice = diagnose(Some(255), "Permission denied (publickey).", "backup1")
            .unwrap()
            .advice;
        assert!(advice.contains("keysetup check backup1"), "{advice}");
    }

    #[test]
    fn itemized_names_come_back_byte_for_byte() {
        // As rsync 3.x writes them (checked by hand with --out-format='%i %n').
        let out = b"created directory dst\n\
cd+++++++++ ./\n\
*deleting   gone/old\n\
*deleting   gone/\n\
>f+++++++++ -lead $(x)\n\
>f+++++++++ back\\#134#012slash\n\
>f+++++++++ bad\\#377\n\
cL+++++++++ link\n\
>f.st...... new\\#012line\n\
.d..t...... sub\n\
>f+++++++++ t\tab\n\
\n\
Number of files: 9 (reg: 6, dir: 2, link: 1)\n\
Total bytes sent: 254\n";
        let items = parse_items(out);
        let got: Vec<(&str, &[u8], &str)> = items
            .iter()
            .map(|i| (i.code.as_str(), i.path.as_bytes(), i.op()))
            .collect();
        assert_eq!(
            got,
            [
                ("cd+++++++++", &b"."[..], "create"),
                ("*deleting", b"gone/old", "delete"),
                ("*deleting", b"gone", "delete"),
                (">f+++++++++", b"-lead $(x)", "send"),
                (">f+++++++++", b"back\\#012slash", "send"),
                (">f+++++++++", b"bad\xff", "send"),
                ("cL+++++++++", b"link", "create"),
                (">f.st......", b"new\nline", "send"),
                (".d..t......", b"sub", "attrs"),
                (">f+++++++++", b"t\tab", "send"),
            ]
        );
        assert!(items[0].path.is_root());
    }

    #[test]
    fn stats_are_read() {
        let out = b"\nNumber of files: 1,204 (reg: 1,000, dir: 204)\nNumber of created files: 3\n\
Number of deleted files: 2 (reg: 2)\nNumber of regular files transferred: 5\n\
Total transferred file size: 12,345 bytes\nTotal bytes sent: 999\n";
        assert_eq!(
            parse_stats(out),
            Stats {
                files: 1204,
                created: 3,
                deleted: 2,
                transferred: 5,
                transferred_size: 12345,
                sent: 999
            }
        );
    }
}
