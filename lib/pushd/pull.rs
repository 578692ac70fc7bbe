//! `pushd --from UPSTREAM DIR`: a pull replica. rsync runs here as the
//! receiver and reads the upstream (a directory, or `[user@]host:/path` over
//! ssh), so everything written lands beneath the local target by the local
//! receiver, and renames are replayed beneath it without following symlinks
//! (`apply::rename_local`). Before a transfer the upstream root is looked at
//! (over ssh: one command, its only arguments the quoted root, sentinel and
//! state file): still there, the same directory (device, inode, birth), still
//! a mount point, empty or not, sentinel present. Deletions are weighed by the
//! same guards as a push ([`judge_deletes`]), against this replica's own tree.
//!
//! Tiers: with `--upstream-state` the upstream is itself a replica, and
//! nothing is pulled before that replica's `--state` says it has applied the
//! batch (same stream, seq at least as far): pulling earlier would copy the
//! older file and record the batch as applied here for good.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::limit::MaxDelete;
use crate::location::{Location, Target};
use crate::pushd::apply::{
    check_source, count_at, judge_deletes, rename_local, run, sync_subtrees, Checks, DeleteCase,
    Guards, Identity, Report, RootId, Side, PERCENT_FLOOR,
};
use crate::pushd::plan::Plan;
use crate::pushd::rsync::{self, Outcome, RsyncSettings, Transfer};
use crate::pushd::shared::Slots;
use crate::pushd::state::Position;
use crate::ssh::{quote_for_shell, SshSettings};
use crate::wire::path::WirePath;

/// How long one transfer waits for the upstream replica to apply what it
/// is asked to pull before the attempt is given up and retried later (the
/// worker must get back to its queue: a new stream may be waiting there).
const UPSTREAM_WAIT: Duration = Duration::from_secs(10);

/// Where a pull replica reads from (`--from`), and the upstream replica's
/// `--state` file when the upstream is itself a replica (`--upstream-state`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upstream {
    pub location: Target,
    /// A path on the upstream's host.
    pub state: Option<Vec<u8>>,
}

impl Upstream {
    /// Parses `--from`: a directory or `[user@]host:PATH`. An rsync daemon
    /// is refused: it has no way to show the root's identity, so a
    /// replaced or unmounted upstream could not be told from a real one.
    pub fn parse(arg: &std::ffi::OsStr, cwd: &Path) -> Result<Target, String> {
        let target = Target::parse(arg, cwd).map_err(|e| e.to_string())?;
        if let Location::Daemon { .. } = target.location {
            return Err(format!(
                "--from {}: an rsync daemon cannot be pulled from (it cannot show whether its root is still the same directory); use [user@]host:PATH over ssh",
                target.name
            ));
        }
        Ok(target)
    }
}

/// What a look at the upstream found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    pub identity: Identity,
    /// The upstream replica's applied position (`--upstream-state`): the
    /// least seq of its targets, `None` when it has none or they differ.
    pub applied: Option<Position>,
}

/// Why the upstream cannot be used now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeError {
    /// ssh failed (the link, the host): try again later.
    Unreachable(String),
    /// The root is missing, not a directory, not a mount point though
    /// `--require-mount`, or lacks the `--sentinel`: nothing is applied.
    Untrusted(String),
}

impl ProbeError {
    fn into_report(self, report: &mut Report) {
        let (outcome, why) = match self {
            ProbeError::Unreachable(why) => (Outcome::Retry, why),
            ProbeError::Untrusted(why) => (Outcome::Fail, why),
        };
        report.outcome = Some(outcome);
        report.message = format!("{why}; nothing applied, will retry");
    }
}

/// Looks at the upstream root now.
pub fn probe(upstream: &Upstream, guards: &Guards, ssh: &SshSettings) -> Result<Probe, ProbeError> {
    match &upstream.location.location {
        Location::Local(root) => {
            let empty = check_source(root, guards).map_err(ProbeError::Untrusted)?;
            let mut identity = Identity::of(root).map_err(ProbeError::Untrusted)?;
            identity.empty = empty;
            let applied = match &upstream.state {
                None => None,
                Some(path) => match std::fs::read(Path::new(std::ffi::OsStr::from_bytes(path))) {
                    Ok(text) => least_applied(&text),
                    Err(_) => None,
                },
            };
            Ok(Probe { identity, applied })
        }
        Location::Ssh { user, host, path } => {
            let mut login = Vec::new();
            if let Some(user) = user {
                login.extend_from_slice(user.as_bytes());
                login.push(b'@');
            }
            login.extend_from_slice(host.as_bytes());
            let script = probe_script(path, guards, upstream.state.as_deref());
            let out = crate::os::child::command("ssh")
                .args(ssh.args())
                .arg("--")
                .arg(std::ffi::OsStr::from_bytes(&login))
                .arg(std::ffi::OsStr::from_bytes(&script))
                .stdin(std::process::Stdio::null())
                .output()
                .map_err(|e| ProbeError::Unreachable(format!("starting ssh: {e}")))?;
            let stderr = rsync::one_line(&String::from_utf8_lossy(&out.stderr));
            if out.status.code() == Some(255) || out.status.code().is_none() {
                return Err(ProbeError::Unreachable(format!(
                    "looking at the upstream {}: ssh failed: {stderr}",
                    upstream.location.name
                )));
            }
            parse_probe(&out.stdout, guards, &upstream.location.name).map_err(|e| match e {
                ProbeError::Unreachable(why) => ProbeError::Unreachable(format!(
                    "{why} (exit {:?}: {stderr})",
                    out.status.code()
                )),
                other => other,
            })
        }
        Location::Daemon { .. } => Err(ProbeError::Untrusted(
            "an rsync daemon cannot be pulled from".into(),
        )),
    }
}

/// The upstream's own check, as one POSIX shell command line: every path
/// in it is single-quoted (any bytes but NUL survive), and its reply is
/// one word a line, so no name on the upstream can fake a line.
fn probe_script(root: &[u8], guards: &Guards, state: Option<&[u8]>) -> Vec<u8> {
    let root: &[u8] = if root.is_empty() { b"." } else { root };
    let mut s = b"cd -- ".to_vec();
    s.extend(quote_for_shell(root));
    s.extend_from_slice(
        b" 2>/dev/null || { echo missing; exit 0; }; echo ok; \
          stat -c '%d %i %W' . || exit 3; \
          if [ \"$(stat -c %m .)\" = \"$(pwd -P)\" ]; then echo mount; else echo plain; fi; \
          if [ -n \"$(find . -mindepth 1 -maxdepth 1 -print -quit)\" ]; then echo full; else echo empty; fi; ",
    );
    match &guards.sentinel {
        Some(sentinel) => {
            let q = quote_for_shell(sentinel.as_os_str().as_bytes());
            s.extend_from_slice(b"if [ -e ");
            s.extend_from_slice(&q);
            s.extend_from_slice(b" ] || [ -L ");
            s.extend_from_slice(&q);
            s.extend_from_slice(b" ]; then echo sentinel; else echo nosentinel; fi; ");
        }
        None => s.extend_from_slice(b"echo -; "),
    }
    if let Some(state) = state {
        s.extend_from_slice(b"echo state; cat -- ");
        s.extend(quote_for_shell(state));
        s.extend_from_slice(b" 2>/dev/null; ");
    }
    s.extend_from_slice(b"exit 0");
    s
}

/// Reads [`probe_script`]'s reply (pure).
fn parse_probe(out: &[u8], guards: &Guards, name: &str) -> Result<Probe, ProbeError> {
    let mut lines = out.splitn(7, |&b| b == b'\n');
    let mut next = || {
        lines
            .next()
            .map(|l| String::from_utf8_lossy(l).into_owned())
    };
    let garbled =
        || ProbeError::Unreachable(format!("the upstream {name} gave an unreadable reply"));
    match next().as_deref() {
        Some("missing") => {
            return Err(ProbeError::Untrusted(format!(
                "upstream root {name} is not there (or not a directory)"
            )))
        }
        Some("ok") => {}
        _ => return Err(garbled()),
    }
    let ids = next().ok_or_else(garbled)?;
    let nums: Vec<u64> = ids
        .split(' ')
        .map(|n| n.parse().map_err(|_| garbled()))
        .collect::<Result<_, _>>()?;
    let [dev, ino, born] = nums[..] else {
        return Err(garbled());
    };
    let mount = match next().as_deref() {
        Some("mount") => true,
        Some("plain") => false,
        _ => return Err(garbled()),
    };
    let empty = match next().as_deref() {
        Some("empty") => true,
        Some("full") => false,
        _ => return Err(garbled()),
    };
    match next().as_deref() {
        Some("nosentinel") => {
            return Err(ProbeError::Untrusted(format!(
                "sentinel {} is missing on the upstream {name} (--sentinel): is it mounted?",
                guards
                    .sentinel
                    .as_deref()
                    .unwrap_or(Path::new(""))
                    .display()
            )))
        }
        Some("sentinel" | "-") => {}
        _ => return Err(garbled()),
    }
    if guards.require_mount && !mount {
        return Err(ProbeError::Untrusted(format!(
            "upstream root {name} is not a mount point (--require-mount): is the disk mounted?"
        )));
    }
    let applied = match next().as_deref() {
        Some("state") => lines.next().and_then(least_applied),
        _ => None,
    };
    Ok(Probe {
        identity: Identity {
            id: RootId {
                dev,
                ino,
                // %W is 0 where the file system keeps no birth time.
                born: (born > 0).then(|| Duration::from_secs(born)),
            },
            mount,
            empty,
        },
        applied,
    })
}

/// The position an upstream replica's `--state` file vouches for: the
/// least seq over its targets, all on one stream (`None` otherwise).
fn least_applied(text: &[u8]) -> Option<Position> {
    #[derive(serde::Deserialize)]
    struct File {
        targets: std::collections::BTreeMap<String, Position>,
    }
    let file: File = serde_json::from_slice(text).ok()?;
    let mut positions = file.targets.into_values();
    let mut least = positions.next()?;
    for p in positions {
        if p.stream != least.stream {
            return None;
        }
        least.seq = least.seq.min(p.seq);
    }
    Some(least)
}

/// Whether what the upstream applied covers `wanted` (same stream, as far).
pub fn covers(applied: Option<&Position>, wanted: &Position) -> bool {
    applied.is_some_and(|a| a.stream == wanted.stream && a.seq >= wanted.seq)
}

/// One pull replica: the upstream, the local target and the guards.
pub struct Puller<'a> {
    pub upstream: &'a Upstream,
    /// A local directory (checked when the configuration is made).
    pub target: &'a Target,
    pub settings: &'a RsyncSettings,
    pub guards: &'a Guards,
}

impl<'a> Puller<'a> {
    /// `target`'s puller from `upstream` with pushd's settings and guards.
    fn of(config: &'a crate::pushd::Config, upstream: &'a Upstream, target: &'a Target) -> Self {
        Puller {
            upstream,
            target,
            settings: &config.rsync,
            guards: &config.guards,
        }
    }

    fn root(&self) -> anyhow::Result<&Path> {
        match &self.target.location {
            Location::Local(root) => Ok(root),
            _ => anyhow::bail!("a pull replica's target must be a local directory"),
        }
    }

    /// The upstream root's identity now (when a stream starts).
    pub fn identity(&self) -> Result<Identity, String> {
        probe(self.upstream, self.guards, &self.settings.ssh)
            .map(|p| p.identity)
            .map_err(|e| match e {
                ProbeError::Unreachable(why) | ProbeError::Untrusted(why) => why,
            })
    }

    /// Looks at the upstream until it has applied `upto` (with
    /// `--upstream-state`; at once without), for at most [`UPSTREAM_WAIT`].
    fn probe_until(&self, upto: Option<&Position>) -> Result<Probe, ProbeError> {
        let started = Instant::now();
        loop {
            let probe = probe(self.upstream, self.guards, &self.settings.ssh)?;
            let Some(wanted) = upto.filter(|_| self.upstream.state.is_some()) else {
                return Ok(probe);
            };
            if covers(probe.applied.as_ref(), wanted) {
                return Ok(probe);
            }
            if started.elapsed() >= UPSTREAM_WAIT {
                let had = match &probe.applied {
                    Some(p) => format!("stream {} seq {}", p.stream, p.seq),
                    None => "nothing".into(),
                };
                return Err(ProbeError::Unreachable(format!(
                    "the upstream replica {} has applied {had}, not yet stream {} seq {}: waiting for it before pulling",
                    self.upstream.location.name, wanted.stream, wanted.seq
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Pulls what `plan` lists, deleting (when `delete`) what the upstream
    /// no longer has, behind the guards; `upto` is the stream position the
    /// plan brings this replica to (tiers wait for the upstream to reach
    /// it). Refused deletions are named in the report as held. A
    /// `--max-procs` slot is taken only once the upstream is ready: waiting
    /// for a tier above runs no transfer and must not stop other targets'.
    pub(crate) fn apply(
        &self,
        mut plan: Plan,
        delete: bool,
        checks: Checks,
        upto: Option<&Position>,
        slots: &Slots,
    ) -> anyhow::Result<Report> {
        let started = Instant::now();
        let root = self.root()?.to_path_buf();
        let mut report = Report::default();
        let probe = match self.probe_until(upto) {
            Ok(probe) => probe,
            Err(e) => {
                e.into_report(&mut report);
                return report.ended(started);
            }
        };
        let _slot = slots.take();
        let empty = probe.identity.empty;
        if let (true, false, Some(before)) = (delete, checks.released, &checks.identity) {
            if let Some(why) =
                before.changed(&probe.identity, Path::new(&self.upstream.location.name))
            {
                let refused = (plan.paths.len() + plan.subtrees.len()) as u64;
                report.hold_everything(&format!("upstream {why}"), self.target, refused);
                return report.ended(started);
            }
        }
        if !delete {
            plan.without_renames();
        }
        if !plan.renames.is_empty() {
            match rename_local(&root, &plan) {
                Ok(()) => report.renamed += plan.renames.len() as u64,
                Err(why) => {
                    crate::log_info!(
                        "{}: renaming on the target failed ({why}); pulling the data instead",
                        self.target
                    );
                    plan.without_renames();
                }
            }
        }
        // A held path is rechecked later as an update: missing upstream
        // then means delete, present means copy.
        if !plan.paths.is_empty() {
            let list = plan.paths.clone();
            let mut delete_listed = delete;
            if delete && !self.settings.delete_missing_args_works {
                // This rsync ignores --delete-missing-args (rsync issue
                // 910): the parents are synced whole, which deletes.
                for p in &list {
                    let parent = p.parent().unwrap_or_else(WirePath::root);
                    if !plan.subtrees.contains(&parent) {
                        plan.subtrees.push(parent);
                    }
                }
                delete_listed = false;
            }
            if delete_listed && !checks.released && !self.cannot_trip(&root, &list, empty, checks) {
                let dry = self.rsync(&root, Transfer::Paths { delete: true }, true, &list)?;
                report.rsync_runs += 1;
                if dry.outcome != Outcome::Success {
                    report.decided_by(dry.code, dry.outcome, dry.stderr);
                    return report.ended(started);
                }
                let n = dry.stats.deleted;
                if let Some(why) = judge_deletes(self.guards, self.weighed(&root, n, checks, empty))
                {
                    report.refused_deletes += n;
                    report.refusal = Some(format!("{why} on {}; the rest is applied", self.target));
                    report.held_paths = list.clone();
                    delete_listed = false;
                }
            }
            let transfer = Transfer::Paths {
                delete: delete_listed,
            };
            run(self, &root, transfer, &list, &mut report)?;
            if !report.succeeded() {
                return report.ended(started);
            }
        }
        if !plan.subtrees.is_empty() {
            sync_subtrees(
                self,
                &root,
                &plan.subtrees,
                delete,
                empty,
                checks,
                &mut report,
            )?;
        }
        report.ended(started)
    }

    /// The guards' case for `deletes` on this replica: what it holds
    /// after them is what the upstream holds now.
    fn weighed(&self, root: &Path, deletes: u64, checks: Checks, empty: bool) -> DeleteCase {
        DeleteCase {
            deletes,
            source_now: count_at(root, &WirePath::root(), u64::MAX)
                .saturating_sub(1)
                .saturating_sub(deletes),
            empty_now: empty,
            empty_at_start: checks.identity.is_some_and(|i| i.empty),
        }
    }
}

impl Side for Puller<'_> {
    /// A pull is never previewed (pushd refuses `--dry-run` with `--from`).
    fn previews(&self) -> bool {
        false
    }

    fn rsync(
        &self,
        root: &Path,
        transfer: Transfer,
        dry_run: bool,
        list: &[WirePath],
    ) -> anyhow::Result<rsync::RunResult> {
        let args: Vec<OsString> = rsync::pull_args(
            self.settings,
            transfer,
            dry_run,
            &self.upstream.location,
            root,
        );
        let list: Vec<&[u8]> = list.iter().map(WirePath::as_bytes).collect();
        rsync::run(self.settings.program(), &args, &list)
    }

    /// True when what `list` covers on this replica cannot exceed the
    /// most deletions a guard lets through (none from an empty upstream),
    /// so no deletion among them can trip one and the dry run that would
    /// count them is skipped (the root itself never goes).
    fn cannot_trip(&self, root: &Path, list: &[WirePath], empty: bool, _: Checks) -> bool {
        let limit = match self.guards.max_delete {
            _ if empty && !self.guards.allow_empty_source => 0,
            MaxDelete::Percent(_) => PERCENT_FLOOR,
            MaxDelete::Count(n) => n,
        };
        let mut bound = 0;
        for p in list {
            let skip = u64::from(p.is_root());
            bound += count_at(root, p, limit.saturating_add(skip + 1)).saturating_sub(skip);
            if bound > limit {
                return false;
            }
        }
        true
    }

    /// What the sync would lose: deletions net of what it creates (a
    /// renamed directory deletes and creates the same entries).
    fn weigh_subtrees(
        &self,
        root: &Path,
        deleted: u64,
        created: u64,
        empty: bool,
        checks: Checks,
    ) -> Option<String> {
        let loss = deleted.saturating_sub(created);
        if deleted == 0 {
            None
        } else if empty && !self.guards.allow_empty_source {
            Some(format!(
                "the upstream root {} is empty but {deleted} entries would go on {}: not deleting, holding them (--allow-empty-source to allow)",
                self.upstream.location.name, self.target
            ))
        } else {
            judge_deletes(self.guards, self.weighed(root, loss, checks, empty)).map(|why| {
                format!(
                    "refusing to delete {deleted} entries on {} ({why})",
                    self.target
                )
            })
        }
    }
}

/// One transfer's work: the plan, whether it may delete, the guards' checks,
/// and the position it brings the target to.
pub(crate) struct Step {
    pub plan: Plan,
    pub delete: bool,
    pub checks: Checks,
    pub upto: Position,
}

/// What the push loop calls for one transfer: a pull when `--from` was
/// given, else [`crate::pushd::apply::Applier`] from the local `source`.
pub(crate) fn apply_for(
    config: &crate::pushd::Config,
    target: &Target,
    source: &Path,
    step: Step,
    progress: Option<&(dyn Fn(crate::health::target::Progress) + Sync)>,
    slots: &Slots,
) -> anyhow::Result<Report> {
    let Step {
        plan,
        delete,
        checks,
        upto,
    } = step;
    match &config.pull {
        Some(upstream) => {
            Puller::of(config, upstream, target).apply(plan, delete, checks, Some(&upto), slots)
        }
        None => {
            let _slot = slots.take();
            crate::pushd::apply::Applier {
                target,
                settings: &config.rsync,
                guards: &config.guards,
                direct: config.direct,
                progress,
            }
            .apply(source, plan, delete, checks)
        }
    }
}

/// The identity of the root deletions come from: the upstream's for a
/// pull, else the local `source`'s.
pub(crate) fn identity_for(
    config: &crate::pushd::Config,
    target: &Target,
    source: &Path,
) -> Result<Identity, String> {
    match &config.pull {
        Some(upstream) => Puller::of(config, upstream, target).identity(),
        None => Identity::of(source),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::event::{Change, ChangeOp};

    fn guards() -> Guards {
        Guards::default()
    }

    #[test]
    fn replies_are_read_and_garbage_is_not_trusted() {
        let ok = b"ok\n64769 1234 1700000000\nplain\nfull\n-\n";
        let p = parse_probe(ok, &guards(), "u:/w").unwrap();
        assert_eq!(p.identity.id.ino, 1234);
        assert_eq!(p.identity.id.born, Some(Duration::from_secs(1_700_000_000)));
        assert!(!p.identity.mount && !p.identity.empty && p.applied.is_none());
        let no_birth = parse_probe(b"ok\n1 2 0\nmount\nempty\n-\n", &guards(), "u:/w").unwrap();
        assert_eq!(no_birth.identity.id.born, None);
        assert!(no_birth.identity.mount && no_birth.identity.empty);
        assert!(matches!(
            parse_probe(b"missing\n", &guards(), "u:/w"),
            Err(ProbeError::Untrusted(_))
        ));
        for bad in [
            &b""[..],
            b"ok\n",
            b"ok\nx y z\nplain\nfull\n-\n",
            b"Welcome!\nok\n",
        ] {
            assert!(
                matches!(
                    parse_probe(bad, &guards(), "u:/w"),
                    Err(ProbeError::Unreachable(_))
                ),
                "{bad:?}"
            );
        }
        let mount = Guards {
            require_mount: true,
            ..guards()
        };
        assert!(matches!(
            parse_probe(ok, &mount, "u:/w"),
            Err(ProbeError::Untrusted(_))
        ));
        let sentinel = b"ok\n1 2 3\nplain\nfull\nnosentinel\n";
        assert!(matches!(
            parse_probe(sentinel, &guards(), "u:/w"),
            Err(ProbeError::Untrusted(_))
        ));
        let state = b"ok\n1 2 3\nplain\nfull\n-\nstate\n{\"targets\":{\"/a\":{\"stream\":\"s\",\"seq\":9},\"/b\":{\"stream\":\"s\",\"seq\":7}}}";
        let p = parse_probe(state, &guards(), "u:/w").unwrap();
        assert_eq!(
            p.applied,
            Some(Position {
                stream: "s".into(),
                seq: 7
            })
        );
    }

    #[test]
    fn tiers_wait_for_the_same_stream_as_far() {
        let at = |stream: &str, seq| Position {
            stream: stream.into(),
            seq,
        };
        assert!(covers(Some(&at("s", 5)), &at("s", 5)));
        assert!(covers(Some(&at("s", 6)), &at("s", 5)));
        assert!(!covers(Some(&at("s", 4)), &at("s", 5)));
        assert!(!covers(Some(&at("t", 9)), &at("s", 5)));
        assert!(!covers(None, &at("s", 0)));
        assert_eq!(
            least_applied(
                br#"{"targets":{"/a":{"stream":"s","seq":9},"/b":{"stream":"t","seq":7}}}"#
            ),
            None
        );
        assert_eq!(least_applied(b"{\"targets\":{}}"), None);
        assert_eq!(least_applied(b"garbage"), None);
    }

    #[test]
    fn the_script_quotes_every_path() {
        let s = probe_script(
            b"/srv/it's $(rm -rf /)\n",
            &Guards {
                sentinel: Some(".mounted".into()),
                ..guards()
            },
            Some(b"/var/lib/s p"),
        );
        let s = String::from_utf8(s).unwrap();
        assert!(
            s.starts_with("cd -- '/srv/it'\\''s $(rm -rf /)\n' 2>/dev/null"),
            "{s}"
        );
        assert!(s.contains("cat -- '/var/lib/s p'"), "{s}");
        assert!(s.contains("[ -e '.mounted' ]"), "{s}");
        // The script really runs, and reads a local directory's reply.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), b"x").unwrap();
        let script = probe_script(dir.path().as_os_str().as_bytes(), &guards(), None);
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(std::ffi::OsStr::from_bytes(&script))
            .output()
            .unwrap();
        let p = parse_probe(&out.stdout, &guards(), "here").unwrap();
        let local = Identity::of(dir.path()).unwrap();
        assert_eq!(
            (p.identity.id.dev, p.identity.id.ino),
            (local.id.dev, local.id.ino)
        );
        assert!(!p.identity.empty && !p.identity.mount);
    }

    #[test]
    fn a_pull_from_a_vanished_or_replaced_upstream_deletes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (up, here) = (dir.path().join("up"), dir.path().join("here"));
        std::fs::create_dir_all(&up).unwrap();
        std::fs::create_dir_all(&here).unwrap();
        for i in 0..30 {
            std::fs::write(up.join(format!("f{i}")), b"x").unwrap();
            std::fs::write(here.join(format!("f{i}")), b"x").unwrap();
        }
        let upstream = Upstream {
            location: Target::parse(up.as_os_str(), dir.path()).unwrap(),
            state: None,
        };
        let target = Target::parse(here.as_os_str(), dir.path()).unwrap();
        let (settings, guards) = (RsyncSettings::default(), Guards::default());
        let puller = Puller {
            upstream: &upstream,
            target: &target,
            settings: &settings,
            guards: &guards,
        };
        let checks = Checks {
            identity: Some(puller.identity().unwrap()),
            released: false,
        };
        let slots = Slots::new(1);
        let deletes: Vec<Change> = (0..30)
            .map(|i| Change {
                op: ChangeOp::Delete,
                path: format!("f{i}").as_str().into(),
                dir: false,
                from: None,
            })
            .collect();
        // Vanished: nothing applied, a failure to retry.
        std::fs::rename(&up, dir.path().join("away")).unwrap();
        let r = puller
            .apply(Plan::from_changes(&deletes), true, checks, None, &slots)
            .unwrap();
        assert!(!r.succeeded() && r.message.contains("not there"), "{r:?}");
        // Replaced by an empty directory: everything held.
        std::fs::create_dir(&up).unwrap();
        let r = puller
            .apply(Plan::from_changes(&deletes), true, checks, None, &slots)
            .unwrap();
        assert!(r.held_everything, "{r:?}");
        // A full sync from it, as at a restart (no identity to compare):
        // the empty-source guard holds the deletions.
        let fresh = Checks::default();
        let r = puller
            .apply(Plan::full(), true, fresh, None, &slots)
            .unwrap();
        assert!(r.succeeded() && !r.held_subtrees.is_empty(), "{r:?}");
        assert_eq!(std::fs::read_dir(&here).unwrap().count(), 30);
        // The original back: the batch applies, the files go.
        std::fs::remove_dir(&up).unwrap();
        std::fs::rename(dir.path().join("away"), &up).unwrap();
        for i in 0..30 {
            std::fs::remove_file(up.join(format!("f{i}"))).unwrap();
        }
        std::fs::write(up.join("kept"), b"k").unwrap();
        let r = puller
            .apply(Plan::from_changes(&deletes), true, checks, None, &slots)
            .unwrap();
        // 30 of 31 would go: the percentage guard holds them, the rest applies.
        assert!(r.succeeded() && r.held_paths.len() == 30, "{r:?}");
        let released = Checks {
            released: true,
            ..checks
        };
        let r = puller
            .apply(Plan::from_changes(&deletes), true, released, None, &slots)
            .unwrap();
        assert!(r.succeeded() && !r.held(), "{r:?}");
        assert_eq!(std::fs::read_dir(&here).unwrap().count(), 0);
    }

    /// A tier-2 pull waiting for its upstream to apply the batch holds no
    /// `--max-procs` slot: the upstream's state file is a FIFO, so the
    /// probe is seen reading it, and the only slot is free right then.
    #[test]
    fn waiting_for_the_upstream_holds_no_slot() {
        let dir = tempfile::tempdir().unwrap();
        let (up, here) = (dir.path().join("up"), dir.path().join("here"));
        std::fs::create_dir_all(&up).unwrap();
        std::fs::create_dir_all(&here).unwrap();
        std::fs::write(up.join("f"), b"x").unwrap();
        let state = dir.path().join("state");
        nix::unistd::mkfifo(&state, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let upstream = Upstream {
            location: Target::parse(up.as_os_str(), dir.path()).unwrap(),
            state: Some(state.as_os_str().as_bytes().to_vec()),
        };
        let target = Target::parse(here.as_os_str(), dir.path()).unwrap();
        let (settings, guards) = (RsyncSettings::default(), Guards::default());
        let puller = Puller {
            upstream: &upstream,
            target: &target,
            settings: &settings,
            guards: &guards,
        };
        let slots = Slots::new(1);
        let upto = Position {
            stream: "s".into(),
            seq: 5,
        };
        let update = [Change {
            op: ChangeOp::Update,
            path: "f".into(),
            dir: false,
            from: None,
        }];
        std::thread::scope(|scope| {
            let pull = scope.spawn(|| {
                puller.apply(
                    Plan::from_changes(&update),
                    false,
                    Checks::default(),
                    Some(&upto),
                    &slots,
                )
            });
            // Opening the FIFO waits for the probe to open it.
            let mut fifo = std::fs::OpenOptions::new()
                .write(true)
                .open(&state)
                .unwrap();
            let free = slots.try_take().is_some();
            std::io::Write::write_all(&mut fifo, br#"{"targets":{"/t":{"stream":"s","seq":5}}}"#)
                .unwrap();
            drop(fifo);
            let r = pull.join().unwrap().unwrap();
            assert!(
                free,
                "the slot is held while the upstream is only being looked at"
            );
            assert!(r.succeeded(), "{r:?}");
        });
        assert_eq!(std::fs::read(here.join("f")).unwrap(), b"x");
        assert!(slots.try_take().is_some(), "the slot is given back");
    }
}
