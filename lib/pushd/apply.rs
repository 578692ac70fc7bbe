//! Carrying out a [`Plan`] on one target: renames natively on a local target
//! (beneath its root, never through a symlink), then one rsync for the listed paths and one for
//! the subtrees, behind the guards that keep a bad source from wiping a
//! replica (missing/empty source, `--require-mount`, `--sentinel`,
//! `--max-delete`, the source root's identity). A refused deletion is
//! never dropped: the report names what was held, and the caller keeps it
//! pending until the guard passes or the operator releases it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::limit::MaxDelete;
use crate::location::{Location, Target};
use crate::pushd::fallback;
use crate::pushd::plan::Plan;
use crate::pushd::preview::{on_local_target, Preview};
use crate::pushd::rsync::{self, Outcome, RsyncSettings, Stats, Transfer};
use crate::wire::path::WirePath;

/// A percentage limit is only applied once this many entries would go:
/// deleting the one file of a one-file tree is 100% and perfectly normal.
pub const PERCENT_FLOOR: u64 = 10;

/// The checks made before anything is deleted because the source says so.
#[derive(Clone, Debug, PartialEq)]
pub struct Guards {
    pub max_delete: MaxDelete,
    pub allow_empty_source: bool,
    pub require_mount: bool,
    /// Relative to the source root.
    pub sentinel: Option<PathBuf>,
}

impl Default for Guards {
    fn default() -> Self {
        Guards {
            max_delete: MaxDelete::Percent(50.0),
            allow_empty_source: false,
            require_mount: false,
            sentinel: None,
        }
    }
}

/// Whether the source root can be trusted: `Err` says why not (nothing is
/// done then), `Ok(true)` that it is empty.
pub fn check_source(root: &Path, guards: &Guards) -> Result<bool, String> {
    let meta = std::fs::metadata(root)
        .map_err(|e| format!("source root {} is not there: {e}", root.display()))?;
    if !meta.is_dir() {
        return Err(format!("source root {} is not a directory", root.display()));
    }
    let mut entries = std::fs::read_dir(root)
        .map_err(|e| format!("source root {} is unreadable: {e}", root.display()))?;
    if guards.require_mount {
        let canonical = root
            .canonicalize()
            .map_err(|e| format!("cannot resolve source root {}: {e}", root.display()))?;
        let is_mount = crate::os::mounts::is_mount_point(&canonical)
            .map_err(|e| format!("cannot read the mount table: {e}"))?;
        if !is_mount {
            return Err(format!(
                "source root {} is not a mount point (--require-mount): is the disk mounted?",
                root.display()
            ));
        }
    }
    if let Some(sentinel) = &guards.sentinel {
        let path = root.join(sentinel);
        if std::fs::symlink_metadata(&path).is_err() {
            return Err(format!(
                "sentinel {} is missing (--sentinel): is the source mounted?",
                path.display()
            ));
        }
    }
    Ok(entries.next().is_none())
}

/// What a source root was when a stream started: deletions are only
/// trusted from the same root (a disk unmounted or a directory replaced
/// under a running pushd looks like a tree whose files all went).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    pub id: RootId,
    /// It was a mount point.
    pub mount: bool,
    /// It held nothing.
    pub empty: bool,
}

/// Which directory a root is: device, inode and (where the file system
/// keeps it) birth time, since a directory removed and made again can get
/// the inode number it had.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RootId {
    pub dev: u64,
    pub ino: u64,
    pub born: Option<Duration>,
}

impl RootId {
    pub fn of(meta: &std::fs::Metadata) -> RootId {
        use std::os::unix::fs::MetadataExt;
        RootId {
            dev: meta.dev(),
            ino: meta.ino(),
            born: meta
                .created()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()),
        }
    }
}

impl std::fmt::Display for RootId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "device:inode {}:{}", self.dev, self.ino)?;
        if let Some(born) = self.born {
            write!(f, " born {}.{:09}", born.as_secs(), born.subsec_nanos())?;
        }
        Ok(())
    }
}

impl Identity {
    /// Looks at `root` now.
    pub fn of(root: &Path) -> Result<Identity, String> {
        let meta = std::fs::metadata(root)
            .map_err(|e| format!("source root {} is not there: {e}", root.display()))?;
        let empty = std::fs::read_dir(root)
            .map_err(|e| format!("source root {} is unreadable: {e}", root.display()))?
            .next()
            .is_none();
        let mount = match root.canonicalize() {
            Ok(canonical) => crate::os::mounts::is_mount_point(&canonical)
                .map_err(|e| format!("cannot read the mount table: {e}"))?,
            Err(e) => return Err(format!("cannot resolve {}: {e}", root.display())),
        };
        Ok(Identity {
            id: RootId::of(&meta),
            mount,
            empty,
        })
    }

    /// Why `root` is not the root `self` was, if it is not: one stat, and
    /// the mount table only when it was a mount point (it is read on every
    /// batch that deletes).
    pub fn recheck(&self, root: &Path) -> Option<String> {
        let meta = match std::fs::metadata(root) {
            Ok(meta) => meta,
            Err(e) => return Some(format!("source root {} is not there: {e}", root.display())),
        };
        let mount = if self.mount {
            match root.canonicalize() {
                Ok(canonical) => match crate::os::mounts::is_mount_point(&canonical) {
                    Ok(mount) => mount,
                    Err(e) => return Some(format!("cannot read the mount table: {e}")),
                },
                Err(e) => return Some(format!("cannot resolve {}: {e}", root.display())),
            }
        } else {
            false
        };
        let now = Identity {
            id: RootId::of(&meta),
            mount,
            empty: false,
        };
        self.changed(&now, root)
    }

    /// Why `now` is not the root `self` was, if it is not (pure).
    /// Emptiness is not judged here: a tree whose last files were deleted
    /// is still the same tree ([`judge_deletes`] weighs it).
    pub fn changed(&self, now: &Identity, root: &Path) -> Option<String> {
        if self.mount && !now.mount {
            return Some(format!(
                "source root {} was a mount point and is not one any more (unmounted?)",
                root.display()
            ));
        }
        if self.id != now.id {
            return Some(format!(
                "source root {} is not the directory it was at start ({} then, {} now: unmounted or replaced?)",
                root.display(),
                self.id,
                now.id
            ));
        }
        None
    }
}

/// What a batch's deletions are weighed against (see [`judge_deletes`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DeleteCase {
    /// Entries the batch would delete on the target (a directory counts
    /// with everything below it).
    pub deletes: u64,
    /// Entries on the source now, after the deletions happened there.
    pub source_now: u64,
    /// The source root holds nothing now.
    pub empty_now: bool,
    /// It held nothing when the stream started (a fresh deploy).
    pub empty_at_start: bool,
}

/// The guard decision for a batch's deletions (pure): `Some(why)` holds
/// them. The percentage is of what the target holds before the batch,
/// taken as the source's current size plus the deletions, so it follows
/// the tree as it grows and shrinks (never a count from start-up).
pub fn judge_deletes(guards: &Guards, case: DeleteCase) -> Option<String> {
    let DeleteCase {
        deletes,
        source_now,
        empty_now,
        empty_at_start,
    } = case;
    if deletes == 0 {
        return None;
    }
    if empty_now && !empty_at_start && deletes > PERCENT_FLOOR && !guards.allow_empty_source {
        return Some(format!(
            "the source root is empty now (it was not at start) and {deletes} entries would go: holding them (--allow-empty-source to allow)"
        ));
    }
    let before = source_now + deletes;
    if guards
        .max_delete
        .exceeded(deletes, Some(before), PERCENT_FLOOR)
    {
        return Some(format!(
            "{deletes} of {before} entries would be deleted in one batch, more than --max-delete {}: holding them",
            guards.max_delete
        ));
    }
    None
}

/// How the guards apply to one [`Applier::apply`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Checks {
    /// The source root as the stream started; `None`: not known (the root
    /// was missing then), nothing to compare with.
    pub identity: Option<Identity>,
    /// The operator released what was held (SIGUSR2, `--release-held`):
    /// no delete guard applies to this one application.
    pub released: bool,
}

/// What applying a plan did.
#[derive(Debug, Default)]
pub struct Report {
    pub stats: Stats,
    /// rsync's exit code of the run that decided the outcome.
    pub code: Option<i32>,
    pub outcome: Option<Outcome>,
    /// rsync's (or ssh's) message when it failed.
    pub message: String,
    /// Deletions that were refused by a guard (the rest was applied).
    pub refused_deletes: u64,
    /// Why deletions were refused, for the log and the result record.
    pub refusal: Option<String>,
    /// Listed paths whose deletion was held (the rest was applied).
    pub held_paths: Vec<WirePath>,
    /// Subtrees synced without their deletions, which are held.
    pub held_subtrees: Vec<WirePath>,
    /// The source root is not the one the stream started with: nothing
    /// was applied, the whole plan is held.
    pub held_everything: bool,
    /// rsync had to create the target root (remote targets): it was
    /// removed, and what the batch sent is all it holds now.
    pub created_root: bool,
    /// Renames done on the target without resending data.
    pub renamed: u64,
    /// rsync processes run (dry runs included): each costs a spawn, a
    /// handshake and an exit, the bulk of a small batch's time.
    pub rsync_runs: u32,
    pub duration: Duration,
    /// `--dry-run`: what the target would get, path by path (nothing was
    /// changed; the counts above are what would be).
    pub would: Vec<Preview>,
}

impl Report {
    pub fn succeeded(&self) -> bool {
        self.outcome.is_none_or(|o| o == Outcome::Success)
    }

    /// Something a guard refused is held back for later.
    pub fn held(&self) -> bool {
        self.held_everything || !self.held_paths.is_empty() || !self.held_subtrees.is_empty()
    }

    /// A run that decides the outcome (a weighing dry run that failed, a
    /// transfer): its exit code, outcome and message are the report's.
    pub(crate) fn decided_by(&mut self, code: Option<i32>, outcome: Outcome, stderr: String) {
        self.code = code;
        self.outcome = Some(outcome);
        if outcome != Outcome::Success || !stderr.is_empty() {
            self.message = stderr;
        }
    }

    /// The root deletions come from is not the one the stream started
    /// with (`why`): nothing is applied, every change is held.
    pub(crate) fn hold_everything(&mut self, why: &str, target: &Target, refused: u64) {
        self.held_everything = true;
        self.refused_deletes = refused;
        self.refusal = Some(format!(
            "{why}: holding every change for {target}, nothing applied (SIGUSR2 to release once checked)"
        ));
    }

    /// The application begun at `started` ends here.
    pub(crate) fn ended(mut self, started: Instant) -> anyhow::Result<Report> {
        self.duration = started.elapsed();
        Ok(self)
    }
}

/// What differs between pushing a plan to a target ([`Applier`]) and
/// pulling it into a replica ([`crate::pushd::pull::Puller`]): how rsync
/// runs and how a subtree sync's deletions are bounded and weighed. The
/// steps both take ([`run`], [`sync_subtrees`]) are written once over it.
pub(crate) trait Side {
    /// `--dry-run`: runs itemize what they would do.
    fn previews(&self) -> bool;
    /// One rsync over `list` from `root` (the source for a push, the
    /// replica's own root for a pull); `dry_run` to weigh deletions.
    fn rsync(
        &self,
        root: &Path,
        transfer: Transfer,
        dry_run: bool,
        list: &[WirePath],
    ) -> anyhow::Result<rsync::RunResult>;
    /// True when the subtrees' deletions cannot trip a guard whatever the
    /// source holds, so the dry run that weighs them is skipped.
    fn cannot_trip(&self, root: &Path, subtrees: &[WirePath], empty: bool, checks: Checks) -> bool;
    /// The guard's verdict on syncing subtrees that would delete
    /// `deleted` entries and create `created`: `Some(why)` holds their
    /// deletions.
    fn weigh_subtrees(
        &self,
        root: &Path,
        deleted: u64,
        created: u64,
        empty: bool,
        checks: Checks,
    ) -> Option<String>;
}

/// Runs one transfer and counts it in `report`, whose outcome it decides.
pub(crate) fn run(
    side: &impl Side,
    root: &Path,
    transfer: Transfer,
    list: &[WirePath],
    report: &mut Report,
) -> anyhow::Result<()> {
    let result = side.rsync(root, transfer, false, list)?;
    report.rsync_runs += 1;
    if side.previews() {
        report
            .would
            .extend(result.items.into_iter().map(Preview::item));
    }
    report.created_root |= result.created_root;
    report.stats.add(result.stats);
    report.decided_by(result.code, result.outcome, result.stderr);
    Ok(())
}

/// A plan's last step: syncs `subtrees`, deleting (when `delete`) what the
/// source no longer has. Unless released, or they cannot trip a guard,
/// their deletions are weighed first by a dry run; refused ones are held
/// (the subtrees are synced without deleting, and named in the report).
pub(crate) fn sync_subtrees(
    side: &impl Side,
    root: &Path,
    subtrees: &[WirePath],
    mut delete: bool,
    empty: bool,
    checks: Checks,
    report: &mut Report,
) -> anyhow::Result<()> {
    if delete && !checks.released && !side.cannot_trip(root, subtrees, empty, checks) {
        let dry = side.rsync(root, Transfer::Subtrees { delete: true }, true, subtrees)?;
        report.rsync_runs += 1;
        if dry.outcome != Outcome::Success {
            report.decided_by(dry.code, dry.outcome, dry.stderr);
            return Ok(());
        }
        let (deleted, created) = (dry.stats.deleted, dry.stats.created);
        if let Some(why) = side.weigh_subtrees(root, deleted, created, empty, checks) {
            delete = false;
            report.refused_deletes += deleted;
            report.refusal = Some(why);
            report.held_subtrees = subtrees.to_vec();
            if side.previews() {
                // The weighing run itemized what the guard refuses.
                report
                    .would
                    .extend(
                        dry.items
                            .into_iter()
                            .filter(|i| i.op() == "delete")
                            .map(|i| Preview {
                                op: "hold",
                                ..Preview::item(i)
                            }),
                    );
            }
        }
    }
    run(side, root, Transfer::Subtrees { delete }, subtrees, report)
}

/// One target with everything needed to apply plans to it.
pub struct Applier<'a> {
    pub target: &'a Target,
    pub settings: &'a RsyncSettings,
    pub guards: &'a Guards,
    /// `--direct`: listed paths on a local target without rsync.
    pub direct: bool,
    /// Told how far a subtree transfer (a full sync) has got.
    pub progress: Option<&'a (dyn Fn(crate::health::target::Progress) + Sync)>,
}

impl Applier<'_> {
    /// Applies `plan` (taken by value: failed renames turn into data
    /// transfers). `delete` says whether deletions propagate at all;
    /// `checks` what the delete guards compare with. Deletions a guard
    /// refuses are named in the report as held, never just dropped. Err
    /// only when rsync or ssh cannot be started.
    pub fn apply(
        &self,
        source: &Path,
        mut plan: Plan,
        delete: bool,
        checks: Checks,
    ) -> anyhow::Result<Report> {
        let started = Instant::now();
        let mut report = Report::default();
        let empty = match check_source(source, self.guards) {
            Ok(empty) => empty,
            Err(why) => {
                report.outcome = Some(Outcome::Fail);
                report.message = format!("{why}; nothing applied, will retry");
                return report.ended(started);
            }
        };
        // Every application that may delete first makes sure the source is
        // still the root it was: an unmounted disk's empty mount point or a
        // replaced directory would otherwise delete what the batch lists.
        if let (true, false, Some(before)) = (delete, checks.released, &checks.identity) {
            if let Some(why) = before.recheck(source) {
                let refused = plan
                    .paths
                    .iter()
                    .filter(|p| matches!(source_state(source, p), Ok(false)))
                    .count() as u64;
                report.hold_everything(&why, self.target, refused);
                if self.settings.dry_run {
                    let held = plan.renames.iter().flat_map(|r| [&r.from, &r.to]);
                    let held = held.chain(&plan.paths).chain(&plan.subtrees);
                    report.would = held.map(|p| Preview::of("hold", p)).collect();
                }
                return report.ended(started);
            }
        }
        // A rename removes the old name on the target: with deletions off
        // (--delete false, or startup while running) send the new name instead.
        if !delete {
            plan.without_renames();
        }
        if !plan.renames.is_empty() {
            if self.settings.dry_run {
                self.preview_renames(source, &mut plan, &mut report);
            } else {
                self.rename(&mut plan, &mut report);
            }
        }
        // Small subtrees on a local target join the listed paths: one rsync
        // per batch instead of two or three (a subtree run, its guard's dry
        // run). Their deletions are weighed as the dry run would weigh them.
        let mut joined: Vec<WirePath> = Vec::new();
        if let Some(x) = self.expand(source, &plan, delete) {
            let hold = if checks.released {
                None
            } else {
                self.weigh_subtrees(source, x.deleted, x.created, empty, checks)
            };
            joined = x.present;
            match hold {
                Some(why) => {
                    report.refused_deletes += x.deleted;
                    report.refusal = Some(why);
                    report.held_subtrees = std::mem::take(&mut plan.subtrees);
                    if self.settings.dry_run {
                        report
                            .would
                            .extend(x.gone.iter().map(|p| Preview::of("hold", p)));
                    }
                }
                None => {
                    joined.extend(x.gone);
                    plan.subtrees.clear();
                }
            }
        }
        // Names the target got by a rename just now (the agent compares
        // them before sending their data again).
        let renamed: Vec<WirePath> = if report.renamed > 0 {
            plan.renames.iter().map(|r| r.to.clone()).collect()
        } else {
            Vec::new()
        };
        if !plan.paths.is_empty() || !joined.is_empty() {
            let mut list = lift_below_files(source, plan.paths.clone());
            if delete {
                let missing: Vec<WirePath> = list
                    .iter()
                    .filter(|p| matches!(source_state(source, p), Ok(false)))
                    .cloned()
                    .collect();
                // A deleted directory takes everything below it: count what
                // would really go, with a dry run over the missing paths.
                let n = if missing.is_empty() {
                    0
                } else if let Location::Local(root) = &self.target.location {
                    missing.iter().map(|p| count_at(root, p, u64::MAX)).sum()
                } else if self.settings.delete_missing_args_works {
                    let dry =
                        self.rsync(source, Transfer::Paths { delete: true }, true, &missing)?;
                    report.rsync_runs += 1;
                    if dry.outcome != Outcome::Success {
                        report.decided_by(dry.code, dry.outcome, dry.stderr);
                        return report.ended(started);
                    }
                    dry.stats.deleted.max(missing.len() as u64)
                } else {
                    missing.len() as u64
                };
                let case = self.weighed(source, n, empty, checks);
                let verdict = if checks.released {
                    None
                } else {
                    judge_deletes(self.guards, case)
                };
                if let Some(why) = verdict {
                    report.refused_deletes += n;
                    report.refusal = Some(format!("{why} on {}; the rest is applied", self.target));
                    let held: std::collections::HashSet<WirePath> =
                        missing.iter().cloned().collect();
                    list.retain(|p| !held.contains(p));
                    if self.settings.dry_run {
                        report
                            .would
                            .extend(missing.iter().map(|p| Preview::of("hold", p)));
                    }
                    report.held_paths = missing;
                }
            }
            list.extend(joined);
            // A dry run of --direct asks rsync: both copy what differs in
            // size or time and delete what the source lost.
            let direct = !self.settings.dry_run && (self.direct || self.in_process(&list));
            if let (true, Location::Local(root)) = (direct, &self.target.location) {
                match crate::pushd::direct::apply_paths(source, root, &list, delete) {
                    Ok(done) => {
                        if !self.direct {
                            fallback::succeeded(root);
                        }
                        report.stats.transferred += done.files;
                        report.stats.transferred_size += done.bytes;
                        report.stats.deleted += done.deleted;
                        report.outcome = Some(Outcome::Success);
                        for why in &done.skipped {
                            crate::log_warn!("{}: skipped {why}", self.target);
                        }
                        list.clear();
                    }
                    // Not asked for: rsync applies the whole batch instead,
                    // deletions included (what was done stays done, each
                    // step is atomic), and the operator is told once.
                    Err(why) if !self.direct => {
                        fallback::failed(root, &self.target.to_string(), &why);
                    }
                    Err(why) => {
                        report.outcome = Some(Outcome::Fail);
                        report.message = why.to_string();
                        return report.ended(started);
                    }
                }
            }
            // A dry run asks rsync only: the agent would really write.
            if let (Some(agent), Location::Ssh { .. }, false) = (
                &self.settings.agent,
                &self.target.location,
                self.settings.dry_run,
            ) {
                let ssh = &self.settings.ssh;
                if let Some(pushed) = crate::pushd::agent::push::paths(
                    self.target,
                    ssh,
                    agent,
                    source,
                    &list,
                    delete,
                    &renamed,
                ) {
                    report.stats.add(pushed.stats);
                    report.outcome = Some(Outcome::Success);
                    list = pushed.rest;
                }
            }
            let mut delete_listed = delete;
            if delete && !self.settings.delete_missing_args_works {
                // Only "not found" makes a path missing: an unreadable source
                // (EACCES, EIO, a stale NFS handle) must never delete a copy.
                let mut present = Vec::new();
                let mut missing = Vec::new();
                for p in list {
                    match source_state(source, &p) {
                        Ok(true) => present.push(p),
                        Ok(false) => missing.push(p),
                        Err(why) => {
                            report.outcome = Some(Outcome::Fail);
                            report.message = why;
                            return report.ended(started);
                        }
                    }
                }
                if let (true, Location::Local(root)) =
                    (self.settings.dry_run, &self.target.location)
                {
                    for p in &missing {
                        if on_local_target(root, p) {
                            report.would.push(Preview::of("delete", p));
                        }
                    }
                } else if let Err(why) = self.delete_without_rsync(&missing, &mut plan.subtrees) {
                    report.outcome = Some(Outcome::Fail);
                    report.message = why;
                    return report.ended(started);
                }
                report.stats.deleted += missing.len() as u64;
                list = present;
                delete_listed = false;
            }
            if !list.is_empty() {
                let transfer = Transfer::Paths {
                    delete: delete_listed,
                };
                run(self, source, transfer, &list, &mut report)?;
                if !report.succeeded() {
                    return report.ended(started);
                }
            }
        }
        if !plan.subtrees.is_empty() {
            sync_subtrees(
                self,
                source,
                &plan.subtrees,
                delete,
                empty,
                checks,
                &mut report,
            )?;
        }
        report.ended(started)
    }

    /// True when `list` is a batch this process applies itself, as
    /// `--direct` does, instead of starting rsync: a local target, at most
    /// `--direct-max` paths, running as root (where `--direct` keeps all
    /// that `rsync -a` keeps: owner, group, mode, times, symlinks, devices
    /// and specials), and no setting that asks rsync for more (filters,
    /// `--rsync-opt`, `--checksum`, `--inplace`, `--partial`, `--bwlimit`,
    /// `--rsync-binary`), as long as failures of a lasting cause have not
    /// turned it off for this target ([`fallback`]). An rsync start is most
    /// of a small batch's time (about 25 ms idle, 100 to 300 ms on a loaded
    /// machine: bench/churn.sh).
    fn in_process(&self, list: &[WirePath]) -> bool {
        let s = self.settings;
        let Location::Local(root) = &self.target.location else {
            return false;
        };
        list.len() <= s.in_process_max
            && s.extra.is_empty()
            && s.filters.is_empty()
            && !(s.checksum || s.inplace || s.partial)
            && s.bwlimit.is_none()
            && s.rsync_binary.is_none()
            && nix::unistd::geteuid().is_root()
            && fallback::enabled(root)
    }

    /// The guards' case for `deletes` from `source`: its size now only
    /// matters to a percentage over the floor, so it is counted only then.
    fn weighed(&self, source: &Path, deletes: u64, empty: bool, checks: Checks) -> DeleteCase {
        let source_now = match self.guards.max_delete {
            MaxDelete::Percent(_) if deletes > PERCENT_FLOOR => {
                count_at(source, &WirePath::root(), u64::MAX).saturating_sub(1)
            }
            _ => 0,
        };
        DeleteCase {
            deletes,
            source_now,
            empty_now: empty,
            empty_at_start: checks.identity.is_some_and(|i| i.empty),
        }
    }

    /// The plan's subtrees as a list of names for the paths' rsync, when
    /// the target is local and they are small: every entry at and below
    /// them on the source, and the entries only the target holds (to be
    /// deleted as missing). `None` means sync them with `--recursive` as
    /// usual: a remote target (nothing to compare with here), the root,
    /// rsync filters (what they exclude is neither sent nor deleted by a
    /// recursive sync, which a list cannot tell), or too many entries.
    fn expand(&self, source: &Path, plan: &Plan, delete: bool) -> Option<Expansion> {
        let Location::Local(root) = &self.target.location else {
            return None;
        };
        if plan.subtrees.is_empty()
            || !delete
            || !self.settings.delete_missing_args_works
            || !self.settings.filters.is_empty()
            || plan.subtrees.iter().any(WirePath::is_root)
        {
            return None;
        }
        let target = crate::os::beneath::Root::open(root).ok()?;
        let mut x = Expansion::default();
        for s in &plan.subtrees {
            x.walk(source, &target, s)?;
        }
        Some(x)
    }

    /// `--dry-run`'s [`Self::rename`]: names the renames that would work
    /// (on a local target, each old name is there beneath the root, or is
    /// an earlier rename's new name) without doing them; like a failed
    /// rename, one that would not makes them all plain transfers. The old
    /// names are not itemized again (rsync would call them deleted); the
    /// new names are, and rsync, comparing them with a target that has not
    /// renamed, lists them as sent.
    fn preview_renames(&self, source: &Path, plan: &mut Plan, report: &mut Report) {
        let Location::Local(root) = &self.target.location else {
            plan.without_renames();
            return;
        };
        let there = |p: &WirePath| on_local_target(root, p);
        let mut moved: Vec<&WirePath> = Vec::new();
        for r in &plan.renames {
            if !(moved.iter().any(|m| r.from.starts_with(m)) || there(&r.from)) {
                plan.without_renames();
                return;
            }
            moved.push(&r.to);
        }
        for r in std::mem::take(&mut plan.renames) {
            // (An old name made again on the source stays listed.)
            plan.paths
                .retain(|p| p != &r.from || matches!(source_state(source, p), Ok(true)));
            report.renamed += 1;
            report.would.push(Preview {
                to: Some(r.to),
                ..Preview::of("rename", &r.from)
            });
        }
    }

    /// Replays the plan's renames on the target. Any failure turns all of
    /// them into plain transfers (the plan re-checks both names anyway).
    fn rename(&self, plan: &mut Plan, report: &mut Report) {
        let result = match &self.target.location {
            Location::Local(root) => rename_local(root, plan),
            // A shell `mv` on the remote resolves both names through
            // whatever symlinks the target holds, so a planted link would
            // move files out of or into the target: the new name's data is
            // sent by rsync instead (rsync resolves safely on the receiver).
            // pushd's agent renames beneath the root, never through a link.
            Location::Ssh { .. } => match self.settings.agent.as_ref().and_then(|agent| {
                crate::pushd::agent::push::renames(
                    self.target,
                    &self.settings.ssh,
                    agent,
                    &plan.renames,
                )
            }) {
                Some(Ok(_)) => Ok(()),
                Some(Err(why)) => Err(why),
                None => {
                    plan.without_renames();
                    return;
                }
            },
            Location::Daemon { .. } => {
                plan.without_renames();
                return;
            }
        };
        match result {
            Ok(()) => report.renamed += plan.renames.len() as u64,
            Err(why) => {
                crate::log_info!(
                    "{}: renaming on the target failed ({why}); sending the data instead",
                    self.target
                );
                plan.without_renames();
            }
        }
    }

    /// Deletes `missing` on the target without rsync, for an rsync whose
    /// `--delete-missing-args` is broken (RsyncProject/rsync issue 910):
    /// natively here (beneath the root, never through a symlink); for ssh
    /// and daemon targets the parents are synced whole instead.
    fn delete_without_rsync(
        &self,
        missing: &[WirePath],
        plan_subtrees: &mut Vec<WirePath>,
    ) -> Result<(), String> {
        match &self.target.location {
            Location::Local(root) => {
                let beneath = crate::os::beneath::Root::open(root)
                    .map_err(|e| format!("opening {}: {e}", root.display()))?;
                for p in missing {
                    crate::pushd::direct::remove(&beneath, p)
                        .map_err(|e| format!("deleting {}: {e}", join(root, p).display()))?;
                }
                Ok(())
            }
            // `rm -rf` in a remote shell would resolve through a planted
            // symlinked directory: rsync deletes there instead, by syncing
            // the parents (like a daemon, which has no shell).
            Location::Ssh { .. } | Location::Daemon { .. } => {
                for p in missing {
                    let parent = p.parent().unwrap_or_else(WirePath::root);
                    if !plan_subtrees.contains(&parent) {
                        plan_subtrees.push(parent);
                    }
                }
                Ok(())
            }
        }
    }
}

impl Side for Applier<'_> {
    fn previews(&self) -> bool {
        self.settings.dry_run
    }

    fn rsync(
        &self,
        source: &Path,
        transfer: Transfer,
        dry_run: bool,
        list: &[WirePath],
    ) -> anyhow::Result<rsync::RunResult> {
        // rsync must neither overtake the agent's requests in flight nor
        // weigh a target that lacks them (issue 15).
        crate::pushd::agent::push::drain(self.target, self.settings);
        let dry_run = dry_run || self.settings.dry_run;
        let mut args = rsync::build_args(self.settings, transfer, dry_run, source, self.target);
        if self.settings.dry_run {
            // --dry-run: every run names what it would do.
            args.insert(0, rsync::ITEMIZE.into());
        }
        // On a remote target only rsync sees the root: with names listed it
        // says when it had to create it (a batch's names, never a full
        // sync's; rsync escapes newlines in names, so no name fakes a line).
        if !dry_run
            && matches!(transfer, Transfer::Paths { .. })
            && !matches!(self.target.location, Location::Local(_))
        {
            args.insert(0, "--info=name1".into());
        }
        let names: Vec<&[u8]> = list.iter().map(WirePath::as_bytes).collect();
        let result = match self.progress {
            Some(report) if !dry_run && matches!(transfer, Transfer::Subtrees { .. }) => {
                args.insert(0, "--info=progress2".into());
                rsync::run_watched(self.settings.program(), &args, &names, Some(report))
            }
            _ => rsync::run(self.settings.program(), &args, &names),
        }?;
        crate::log_debug!(
            "{}: rsync {transfer:?}{} of {} names took {} ms (exit {:?})",
            self.target,
            if dry_run { " dry run" } else { "" },
            list.len(),
            result.duration.as_millis(),
            result.code
        );
        Ok(result)
    }

    /// The guard's verdict on syncing subtrees that would delete `deleted`
    /// entries and create `created` (a dry run's counts, or [`expand`]'s):
    /// `Some(why)` holds their deletions. What counts is the net loss: a
    /// renamed directory (a restart after `mv big big2`) deletes and
    /// creates the same entries, nothing is lost; an emptied or shrunken
    /// source creates nothing and trips it.
    fn weigh_subtrees(
        &self,
        source: &Path,
        deleted: u64,
        created: u64,
        empty: bool,
        checks: Checks,
    ) -> Option<String> {
        if deleted == 0 {
            return None;
        }
        if empty && !self.guards.allow_empty_source {
            // An unmounted disk looks empty: never wipe a replica from it.
            // (A batch's explicit deletes still apply: the last file of a
            // tree can be deleted.)
            return Some(format!(
                "source root {} is empty but {deleted} entries would go on {}: not deleting, holding them (--allow-empty-source to allow)",
                source.display(),
                self.target
            ));
        }
        let loss = deleted.saturating_sub(created);
        // Weighed against the whole tree, as a batch's deletes are: a
        // rescanned subtree is only part of the target.
        let case = self.weighed(source, loss, empty, checks);
        judge_deletes(self.guards, case).map(|why| {
            format!(
                "refusing to delete {deleted} entries on {} ({why}; a sync losing {loss} of {} entries)",
                self.target,
                case.source_now + loss
            )
        })
    }

    /// True when the subtrees' deletions cannot trip a guard whatever the
    /// source holds, so the dry run that weighs them can be skipped (one
    /// rsync less per batch that rescans a directory): on a local target
    /// what is there bounds what can go, and the guard is monotonic (more
    /// deletions, or fewer entries left on the source, never pass where
    /// fewer, or more, are refused), so that bound against a lower bound
    /// of the source's size passing means the real figures pass. Remote
    /// targets always weigh.
    fn cannot_trip(
        &self,
        source: &Path,
        subtrees: &[WirePath],
        empty: bool,
        checks: Checks,
    ) -> bool {
        /// Past this many entries below the subtrees a dry run is cheaper
        /// than counting.
        const COUNT_CAP: u64 = 10_000;
        let Location::Local(root) = &self.target.location else {
            return false;
        };
        if empty && !self.guards.allow_empty_source {
            // Any deletion at all is held then: only none passes.
            return subtrees
                .iter()
                .all(|p| !p.is_root() && count_at(root, p, 1) == 0);
        }
        let mut bound = 0;
        for p in subtrees {
            // The root itself is never deleted.
            let skip = u64::from(p.is_root());
            bound += count_at(root, p, COUNT_CAP + skip + 1).saturating_sub(skip);
            if bound > COUNT_CAP {
                return false;
            }
        }
        let needed = match self.guards.max_delete {
            MaxDelete::Percent(_) if bound <= PERCENT_FLOOR => 0,
            // d > (s + d) p/100  <=>  d (100 - p) > s p: enough source
            // entries to pass, plus one.
            MaxDelete::Percent(p) if p > 0.0 => {
                ((bound as f64) * (100.0 - p) / p).ceil().max(0.0) as u64 + 1
            }
            MaxDelete::Percent(_) => u64::MAX,
            MaxDelete::Count(_) => 0,
        };
        if needed > COUNT_CAP {
            return false;
        }
        let source_now = if needed == 0 {
            0
        } else {
            count_at(source, &WirePath::root(), needed + 1).saturating_sub(1)
        };
        let case = DeleteCase {
            deletes: bound,
            source_now,
            empty_now: empty,
            empty_at_start: checks.identity.is_some_and(|i| i.empty),
        };
        judge_deletes(self.guards, case).is_none()
    }
}

/// Subtrees turned into names (see [`Applier::expand`]).
#[derive(Debug, Default)]
struct Expansion {
    /// Every entry at and below the subtrees on the source.
    present: Vec<WirePath>,
    /// The topmost entries only the target holds: listed while missing on
    /// the source, rsync deletes them with what is below them.
    gone: Vec<WirePath>,
    /// Entries the sync deletes on the target, counting what is below a
    /// directory, and entries it creates: what a dry run would count.
    deleted: u64,
    created: u64,
}

impl Expansion {
    /// Names listed past this are not worth it: rsync's own recursion is
    /// cheaper than a long list.
    const CAP: usize = 2000;

    /// Adds `rel`, and what is below it, to the lists. The target is read
    /// through descriptors beneath its root, never through a symlink.
    /// `None`: give up (too many entries, or the source could not be read).
    fn walk(
        &mut self,
        source: &Path,
        target: &crate::os::beneath::Root,
        rel: &WirePath,
    ) -> Option<()> {
        use crate::os::beneath;
        use nix::sys::stat::SFlag;
        if self.present.len() + self.gone.len() > Self::CAP {
            return None;
        }
        let on_source = match std::fs::symlink_metadata(join(source, rel)) {
            Ok(meta) => Some(meta.is_dir()),
            Err(e) if crate::pushd::direct::vanished(&e) => None,
            Err(_) => return None,
        };
        // The target's entry, `None` when absent or not reachable without
        // a symlink (rsync then makes the path anew).
        let parent = target.parent(rel).ok();
        let on_target = parent.as_ref().and_then(|(dir, name)| {
            beneath::stat_at(dir, name)
                .ok()
                .flatten()
                .map(|st| beneath::kind_of(&st) == SFlag::S_IFDIR)
        });
        let Some(source_dir) = on_source else {
            if let (Some(_), Some((dir, name))) = (on_target, &parent) {
                self.gone.push(rel.clone());
                self.deleted += crate::os::beneath::count_in(dir, name, u64::MAX);
            }
            return Some(());
        };
        self.present.push(rel.clone());
        match (source_dir, on_target) {
            (_, None) => self.created += 1,
            (true, Some(false)) => {
                self.deleted += 1;
                self.created += 1;
            }
            (false, Some(true)) => {
                if let Some((dir, name)) = &parent {
                    self.deleted += crate::os::beneath::count_in(dir, name, u64::MAX);
                }
                self.created += 1;
            }
            _ => {}
        }
        if !source_dir {
            return Some(());
        }
        let mut names = Vec::new();
        for entry in std::fs::read_dir(join(source, rel)).ok()? {
            names.push(std::os::unix::ffi::OsStringExt::into_vec(
                entry.ok()?.file_name(),
            ));
        }
        if on_target == Some(true) {
            let wanted: std::collections::HashSet<&[u8]> =
                names.iter().map(Vec::as_slice).collect();
            let dir = target.dir(rel).ok()?;
            for name in read_names(&dir)? {
                if !wanted.contains(name.as_slice()) {
                    self.deleted += crate::os::beneath::count_in(&dir, &name, u64::MAX);
                    self.gone.push(rel.join(&name));
                }
            }
        }
        for name in names {
            self.walk(source, target, &rel.join(&name))?;
        }
        Some(())
    }
}

/// The names in the directory `dir` (an `O_PATH` descriptor is fine).
fn read_names(dir: &std::os::fd::OwnedFd) -> Option<Vec<Vec<u8>>> {
    use nix::fcntl::OFlag;
    let fd = nix::fcntl::openat(
        dir,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .ok()?;
    let mut d = nix::dir::Dir::from_fd(fd).ok()?;
    Some(
        d.iter()
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_bytes().to_vec())
            .filter(|n| n != b"." && n != b"..")
            .collect(),
    )
}

/// Listed paths below something on the source that is not a real directory
/// now — a file, or a symlink (rsync reads by name and would follow it out
/// of the source) — are replaced by that entry: the source has no such
/// path; syncing the entry itself (a file, or the link as a link) replaces
/// whatever the target holds there. Without it rsync fails on a path below
/// a file (`link_stat … Not a directory`, exit 23, on every retry, until a
/// later batch lists the parent). One lstat per distinct directory.
fn lift_below_files(source: &Path, list: Vec<WirePath>) -> Vec<WirePath> {
    let mut real_dir: std::collections::HashMap<WirePath, bool> = Default::default();
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(list.len());
    for p in list {
        let p = nearest_non_directory(source, &p, &mut real_dir).unwrap_or(p);
        if seen.insert(p.clone()) {
            out.push(p);
        }
    }
    out
}

/// The topmost ancestor of `p` that exists on the source and is not a real
/// directory (not following symlinks); `real_dir` remembers the answers.
fn nearest_non_directory(
    source: &Path,
    p: &WirePath,
    real_dir: &mut std::collections::HashMap<WirePath, bool>,
) -> Option<WirePath> {
    let mut chain = Vec::new();
    let mut at = p.parent();
    while let Some(a) = at.filter(|a| !a.is_root()) {
        at = a.parent();
        chain.push(a);
    }
    for a in chain.into_iter().rev() {
        let is_dir = match real_dir.get(&a) {
            Some(&known) => known,
            None => {
                // Gone: nothing below it either; rsync deletes the path.
                let Ok(meta) = std::fs::symlink_metadata(join(source, &a)) else {
                    return None;
                };
                real_dir.insert(a.clone(), meta.is_dir());
                meta.is_dir()
            }
        };
        if !is_dir {
            return Some(a);
        }
    }
    None
}

/// Whether `p` exists on the source: `Ok(false)` only when it is not found;
/// any other failure to look is an error, never a reason to delete.
fn source_state(source: &Path, p: &WirePath) -> Result<bool, String> {
    let path = join(source, p);
    match std::fs::symlink_metadata(&path) {
        Ok(_) => Ok(true),
        Err(e) if crate::pushd::direct::vanished(&e) => Ok(false),
        Err(e) => Err(format!(
            "cannot read {} on the source: {e}; nothing deleted",
            path.display()
        )),
    }
}

fn join(root: &Path, p: &WirePath) -> PathBuf {
    if p.is_root() {
        root.to_path_buf()
    } else {
        root.join(p.as_path())
    }
}

/// Entries at and below `rel` beneath `root`, counting at most `limit`,
/// never through a symlink (a target directory swapped for a symlink to a
/// big tree must not pass for that tree): what deleting `rel` removes. 0
/// when the root cannot be opened.
pub(crate) fn count_at(root: &Path, rel: &WirePath, limit: u64) -> u64 {
    match crate::os::beneath::Root::open(root) {
        Ok(r) => crate::os::beneath::count(&r, rel, limit),
        Err(_) => 0,
    }
}

/// Renames on a local target through directory descriptors resolved
/// beneath the root without following symlinks: a planted symlink in either
/// path fails the rename (the data is then sent instead), it never leads it
/// outside. Missing parents of the new name are created the same way.
pub(crate) fn rename_local(root: &Path, plan: &Plan) -> Result<(), String> {
    use crate::os::beneath::{self, Root};
    let beneath = Root::open(root).map_err(|e| format!("opening {}: {e}", root.display()))?;
    for r in &plan.renames {
        let from = join(root, &r.from);
        let to = join(root, &r.to);
        let (from_dir, from_name) = beneath
            .parent(&r.from)
            .map_err(|e| format!("{} is not on the target: {e}", from.display()))?;
        let st = beneath::stat_at(&from_dir, &from_name)
            .map_err(|e| format!("reading {}: {e}", from.display()))?
            .ok_or_else(|| format!("{} is not on the target", from.display()))?;
        // Rename only what moved on the source: a target ahead of it may
        // hold a directory where a file was renamed, and carrying that
        // directory's contents to the new name would leave them there (the
        // batches after know the new name as a file).
        if (beneath::kind_of(&st) == nix::sys::stat::SFlag::S_IFDIR) != r.dir {
            return Err(format!(
                "{} is a {} on the target, not what was renamed",
                from.display(),
                if r.dir { "file" } else { "directory" }
            ));
        }
        let (to_parent, to_name) = beneath::split(&r.to).map_err(|e| e.to_string())?;
        let to_dir = beneath::make_dirs(&beneath, &to_parent)
            .map_err(|e| format!("creating the parent of {}: {e}", to.display()))?;
        nix::fcntl::renameat(
            &from_dir,
            beneath::p(&from_name),
            &to_dir,
            beneath::p(&to_name),
        )
        .map_err(std::io::Error::from)
        .with_context(|| format!("renaming {} to {}", from.display(), to.display()))
        .map_err(|e| format!("{e:#}"))?;
    }
    Ok(())
}

/// True when the installed rsync deletes a listed, missing path with
/// `--files-from --delete-missing-args` (some 2026 security builds broke
/// it: RsyncProject/rsync issue 910).
pub fn delete_missing_args_works(settings: &RsyncSettings) -> anyhow::Result<bool> {
    let dir = tempfile_dir()?;
    let src = dir.join("src");
    let dst = dir.join("dst");
    std::fs::create_dir_all(&src)?;
    std::fs::create_dir_all(dst.join("gone/sub"))?;
    std::fs::write(dst.join("gone/sub/f"), b"x")?;
    std::fs::write(dst.join("file"), b"x")?;
    let target = Target {
        name: dst.display().to_string(),
        location: Location::Local(dst.clone()),
    };
    let args = rsync::build_args(
        &RsyncSettings::default(),
        Transfer::Paths { delete: true },
        false,
        &src,
        &target,
    );
    let result = rsync::run(settings.program(), &args, &[b"gone", b"file"])?;
    let works = result.outcome == Outcome::Success
        && !dst.join("gone").exists()
        && !dst.join("file").exists();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(works)
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "syncpipe-probe-{}-{}",
        std::process::id(),
        crate::wire::event::new_stream_id()?
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(deletes: u64, source_now: u64) -> DeleteCase {
        DeleteCase {
            deletes,
            source_now,
            empty_now: source_now == 0,
            empty_at_start: false,
        }
    }

    #[test]
    fn guard_weighs_deletions_against_the_tree_as_it_is_now() {
        let half = Guards::default();
        // A tree empty at start that grew to 40: 15 of 40 is fine, 33 is not.
        assert_eq!(judge_deletes(&half, case(15, 25)), None);
        assert!(judge_deletes(&half, case(33, 7)).is_some());
        // 100% never trips on a tree that still holds what goes.
        let all = Guards {
            max_delete: MaxDelete::Percent(100.0),
            ..Guards::default()
        };
        assert_eq!(judge_deletes(&all, case(33, 7)), None);
        // The floor: a handful of deletions is never a percentage problem,
        // and deleting the last files of a tree is not an emptied source.
        assert_eq!(judge_deletes(&half, case(PERCENT_FLOOR, 0)), None);
        // An emptied source holds more than a handful, whatever the limit.
        let why = judge_deletes(&all, case(30, 0)).unwrap();
        assert!(why.contains("empty"), "{why}");
        let allowed = Guards {
            allow_empty_source: true,
            ..all.clone()
        };
        assert_eq!(judge_deletes(&allowed, case(30, 0)), None);
        // Empty at start and empty again: the percentage decides.
        let fresh = DeleteCase {
            empty_at_start: true,
            ..case(30, 0)
        };
        assert_eq!(judge_deletes(&all, fresh), None);
        assert!(judge_deletes(&half, fresh).is_some());
        // An absolute count ignores sizes.
        let count = Guards {
            max_delete: MaxDelete::Count(5),
            ..Guards::default()
        };
        assert!(judge_deletes(&count, case(6, 1000)).is_some());
        assert_eq!(judge_deletes(&count, case(5, 0)), None);
        assert_eq!(judge_deletes(&half, case(0, 0)), None);
    }

    #[test]
    fn a_path_below_what_is_a_file_now_is_synced_as_that_file() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path();
        std::fs::create_dir_all(src.join("a/b")).unwrap();
        std::fs::write(src.join("a/b/c"), b"file now").unwrap();
        std::fs::write(src.join("f"), b"x").unwrap();
        std::os::unix::fs::symlink("a", src.join("l")).unwrap();
        let list: Vec<WirePath> = ["a/b/c/d/e", "f", "a/b/c/x", "gone/y", "l/b", "a/b/z"]
            .into_iter()
            .map(WirePath::from)
            .collect();
        let lifted = lift_below_files(src, list);
        // `l/b` would be read through the link (out of the source, were it
        // pointing there): the link itself is synced.
        let want: Vec<WirePath> = ["a/b/c", "f", "gone/y", "l", "a/b/z"]
            .into_iter()
            .map(WirePath::from)
            .collect();
        assert_eq!(lifted, want);
    }

    #[test]
    fn a_rename_refuses_an_entry_of_another_type_than_what_moved() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("c d/a")).unwrap();
        std::fs::write(dir.path().join("f"), b"x").unwrap();
        let rename = |from: &str, to: &str, dir| Plan {
            renames: vec![crate::pushd::plan::Rename {
                from: from.into(),
                to: to.into(),
                dir,
            }],
            ..Plan::default()
        };
        // A file moved on the source; the target holds a directory there.
        let err = rename_local(dir.path(), &rename("c d", "b", false)).unwrap_err();
        assert!(err.contains("is a directory on the target"), "{err}");
        assert!(dir.path().join("c d/a").is_dir());
        assert!(!dir.path().join("b").exists());
        // A directory moved; the target holds a file there.
        assert!(rename_local(dir.path(), &rename("f", "g", true)).is_err());
        assert!(dir.path().join("f").is_file());
        // The same types: renamed.
        rename_local(dir.path(), &rename("c d", "b", true)).unwrap();
        assert!(dir.path().join("b/a").is_dir());
        rename_local(dir.path(), &rename("f", "g", false)).unwrap();
        assert!(dir.path().join("g").is_file());
    }

    #[test]
    fn counting_stops_at_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..5 {
            std::fs::create_dir_all(dir.path().join(format!("d{i}/e"))).unwrap();
        }
        let root = WirePath::root();
        assert_eq!(count_at(dir.path(), &root, u64::MAX), 11);
        assert_eq!(count_at(dir.path(), &root, 100), 11);
        assert_eq!(count_at(dir.path(), &root, 4), 4);
        assert_eq!(count_at(dir.path(), &WirePath::from("none"), 4), 0);
    }

    #[test]
    fn identity_changes() {
        let id = |dev, ino, born| RootId {
            dev,
            ino,
            born: Some(Duration::from_secs(born)),
        };
        let at_start = Identity {
            id: id(1, 2, 10),
            mount: true,
            empty: false,
        };
        let root = Path::new("/src");
        assert_eq!(at_start.changed(&at_start, root), None);
        // Emptied in place is the same root (the delete guard weighs that).
        let emptied = Identity {
            empty: true,
            ..at_start
        };
        assert_eq!(at_start.changed(&emptied, root), None);
        let unmounted = Identity {
            id: id(9, 2, 10),
            mount: false,
            ..at_start
        };
        assert!(at_start
            .changed(&unmounted, root)
            .unwrap()
            .contains("mount point"));
        // Removed and made again, even with the same inode number.
        let remade = Identity {
            id: id(1, 2, 11),
            ..at_start
        };
        assert!(at_start
            .changed(&remade, root)
            .unwrap()
            .contains("not the directory"));
        // A plain directory that was never a mount point may become one
        // over it (a bind mount): different device, caught too.
        let plain = Identity {
            mount: false,
            ..at_start
        };
        let mounted_over = Identity {
            id: id(3, 1, 5),
            mount: true,
            ..at_start
        };
        assert!(plain.changed(&mounted_over, root).is_some());
        // What Identity::of reads from a real directory.
        let dir = tempfile_dir().unwrap();
        let real = Identity::of(&dir).unwrap();
        assert!(real.empty && !real.mount);
        assert_eq!(real.changed(&Identity::of(&dir).unwrap(), &dir), None);
        assert_eq!(real.recheck(&dir), None);
        std::fs::remove_dir(&dir).unwrap();
        assert!(real.recheck(&dir).unwrap().contains("not there"));
        std::fs::create_dir(&dir).unwrap();
        let again = Identity::of(&dir).unwrap();
        assert!(real.changed(&again, &dir).is_some(), "{real:?} {again:?}");
        assert!(real.recheck(&dir).is_some());
        std::fs::remove_dir(&dir).unwrap();
    }

    #[test]
    fn source_checks() {
        let dir = tempfile_dir().unwrap();
        let guards = Guards::default();
        assert_eq!(check_source(&dir, &guards), Ok(true));
        std::fs::write(dir.join("f"), b"").unwrap();
        assert_eq!(check_source(&dir, &guards), Ok(false));
        assert!(check_source(&dir.join("missing"), &guards).is_err());
        let sentinel = Guards {
            sentinel: Some(".mounted".into()),
            ..Guards::default()
        };
        assert!(check_source(&dir, &sentinel)
            .unwrap_err()
            .contains("sentinel"));
        std::fs::write(dir.join(".mounted"), b"").unwrap();
        assert_eq!(check_source(&dir, &sentinel), Ok(false));
        let mount = Guards {
            require_mount: true,
            ..Guards::default()
        };
        assert!(check_source(&dir, &mount)
            .unwrap_err()
            .contains("mount point"));
        assert!(check_source(Path::new("/"), &mount).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn deletes_without_delete_missing_args() {
        let dir = tempfile_dir().unwrap();
        let (src, dst) = (dir.join("src"), dir.join("dst"));
        std::fs::create_dir_all(src.join("kept")).unwrap();
        std::fs::create_dir_all(dst.join("gone/deep")).unwrap();
        std::fs::write(dst.join("gone/deep/f"), b"x").unwrap();
        std::fs::write(dst.join("-file"), b"x").unwrap();
        std::fs::write(src.join("kept/new"), b"n").unwrap();
        let mut parts = Parts::local(&dst);
        parts.settings.delete_missing_args_works = false;
        let applier = parts.applier();
        let plan = Plan::from_changes(&[
            crate::wire::event::Change {
                op: crate::wire::event::ChangeOp::Delete,
                path: "gone".into(),
                dir: true,
                from: None,
            },
            crate::wire::event::Change {
                op: crate::wire::event::ChangeOp::Delete,
                path: "-file".into(),
                dir: false,
                from: None,
            },
            crate::wire::event::Change {
                op: crate::wire::event::ChangeOp::Update,
                path: "kept/new".into(),
                dir: false,
                from: None,
            },
        ]);
        let report = applier.apply(&src, plan, true, Checks::default()).unwrap();
        assert!(report.succeeded(), "{report:?}");
        assert!(!dst.join("gone").exists() && !dst.join("-file").exists());
        assert_eq!(std::fs::read(dst.join("kept/new")).unwrap(), b"n");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Relative path -> (is a directory, content) of everything below
    /// `root`, not following symlinks (a symlink is its target as content).
    fn snapshot(root: &Path) -> std::collections::BTreeMap<PathBuf, (bool, Vec<u8>)> {
        let mut out = std::collections::BTreeMap::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let path = e.unwrap().path();
                let meta = std::fs::symlink_metadata(&path).unwrap();
                let rel = path.strip_prefix(root).unwrap().to_path_buf();
                if meta.is_dir() {
                    stack.push(path);
                    out.insert(rel, (true, Vec::new()));
                } else if meta.file_type().is_symlink() {
                    let to = std::fs::read_link(&path).unwrap();
                    out.insert(rel, (false, to.into_os_string().into_encoded_bytes()));
                } else {
                    out.insert(rel, (false, std::fs::read(&path).unwrap()));
                }
            }
        }
        out
    }

    /// What an [`Applier`] to a local directory borrows.
    struct Parts {
        target: Target,
        settings: RsyncSettings,
        guards: Guards,
    }

    impl Parts {
        fn local(dst: &Path) -> Parts {
            let target = Target {
                name: "t".into(),
                location: Location::Local(dst.to_path_buf()),
            };
            Parts {
                target,
                settings: RsyncSettings::default(),
                guards: Guards::default(),
            }
        }

        fn applier(&self) -> Applier<'_> {
            Applier {
                target: &self.target,
                settings: &self.settings,
                guards: &self.guards,
                direct: false,
                progress: None,
            }
        }
    }

    #[test]
    fn small_subtrees_join_the_paths_in_one_rsync() {
        let dir = tempfile_dir().unwrap();
        let (src, dst, outside) = (dir.join("src"), dir.join("dst"), dir.join("outside"));
        for d in ["d/e", "d/new/deep", "link", "kept"] {
            std::fs::create_dir_all(src.join(d)).unwrap();
        }
        std::fs::write(src.join("d/a"), b"new a").unwrap();
        std::fs::write(src.join("d/e/f"), b"f").unwrap();
        std::fs::write(src.join("d/new/deep/-rf"), b"x").unwrap();
        std::fs::write(src.join("link/in"), b"in").unwrap();
        std::fs::write(src.join("x"), b"x").unwrap();
        for d in ["d/stale/deep", "kept", "outside-kept"] {
            std::fs::create_dir_all(dst.join(d)).unwrap();
        }
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("precious"), b"p").unwrap();
        std::fs::write(dst.join("d/a"), b"the old a").unwrap();
        std::fs::write(dst.join("d/e"), b"a file where the source has a directory").unwrap();
        std::fs::write(dst.join("d/stale/deep/f"), b"s").unwrap();
        std::fs::write(dst.join("d/gone"), b"g").unwrap();
        // A symlink planted where the source has a directory: replaced,
        // never read or written through.
        std::os::unix::fs::symlink(&outside, dst.join("link")).unwrap();
        for i in 0..20 {
            std::fs::write(src.join(format!("kept/{i}")), b"k").unwrap();
            std::fs::write(dst.join(format!("kept/{i}")), b"k").unwrap();
        }
        let parts = Parts::local(&dst);
        let applier = parts.applier();
        let plan = Plan {
            paths: vec!["x".into()],
            subtrees: vec!["d".into(), "link".into()],
            ..Plan::default()
        };
        let report = applier.apply(&src, plan, true, Checks::default()).unwrap();
        assert!(report.succeeded(), "{report:?}");
        assert_eq!(report.rsync_runs, 1, "{report:?}");
        assert!(!report.held(), "{report:?}");
        let mut want = snapshot(&src);
        want.insert("outside-kept".into(), (true, Vec::new()));
        assert_eq!(snapshot(&dst), want);
        assert_eq!(std::fs::read(outside.join("precious")).unwrap(), b"p");
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_small_batch_to_a_local_target_needs_no_rsync_as_root() {
        let dir = tempfile_dir().unwrap();
        let (src, dst) = (dir.join("src"), dir.join("dst"));
        std::fs::create_dir_all(src.join("d/new")).unwrap();
        std::fs::create_dir_all(dst.join("d/old")).unwrap();
        std::fs::write(src.join("d/new/-rf"), b"new").unwrap();
        std::fs::write(src.join("f"), b"changed").unwrap();
        std::fs::write(dst.join("f"), b"the old f").unwrap();
        std::fs::write(dst.join("gone"), b"g").unwrap();
        std::fs::write(dst.join("d/old/x"), b"x").unwrap();
        let plan = Plan {
            paths: vec!["f".into(), "gone".into()],
            subtrees: vec!["d".into()],
            ..Plan::default()
        };
        let root = nix::unistd::geteuid().is_root();
        for (filters, rsync_runs) in [(vec![], u32::from(!root)), (vec!["- *.tmp".into()], 2)] {
            let mut parts = Parts::local(&dst);
            parts.settings.in_process_max = 256;
            parts.settings.filters = filters;
            let report = parts
                .applier()
                .apply(&src, plan.clone(), true, Checks::default())
                .unwrap();
            assert!(report.succeeded() && !report.held(), "{report:?}");
            // Filters: the subtree is not joined, its own rsync syncs it.
            assert_eq!(report.rsync_runs, rsync_runs, "{report:?}");
            assert_eq!(snapshot(&dst), snapshot(&src));
            std::fs::write(dst.join("gone"), b"g").unwrap();
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_target_directory_swapped_for_a_symlink_does_not_count_what_it_points_to() {
        let dir = tempfile_dir().unwrap();
        let (src, dst, out) = (dir.join("src"), dir.join("dst"), dir.join("outside"));
        std::fs::create_dir_all(src.join("d")).unwrap();
        std::fs::write(src.join("d/keep"), b"k").unwrap();
        std::fs::create_dir_all(&dst).unwrap();
        std::fs::create_dir_all(out.join("x")).unwrap();
        for i in 0..100 {
            std::fs::write(out.join(format!("x/{i}")), b"big").unwrap();
        }
        // The target's `d` now points at a big tree elsewhere; the source
        // lost `d/x`. Nothing beneath the target goes: no hold, no count of
        // the tree outside, and nothing outside is touched.
        let plan = Plan {
            paths: vec!["d/x".into()],
            ..Plan::default()
        };
        for in_process_max in [0, 256] {
            let d = dst.join("d");
            if std::fs::symlink_metadata(&d).is_ok_and(|m| m.is_dir()) {
                std::fs::remove_dir_all(&d).unwrap();
            }
            std::os::unix::fs::symlink(&out, &d).unwrap();
            let mut parts = Parts::local(&dst);
            parts.settings.in_process_max = in_process_max;
            let report = parts
                .applier()
                .apply(&src, plan.clone(), true, Checks::default())
                .unwrap();
            assert!(report.succeeded(), "{report:?}");
            assert!(!report.held() && report.refused_deletes == 0, "{report:?}");
            assert_eq!(std::fs::read_dir(out.join("x")).unwrap().count(), 100);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn joined_subtrees_that_lose_too_much_are_held() {
        let dir = tempfile_dir().unwrap();
        let (src, dst) = (dir.join("src"), dir.join("dst"));
        std::fs::create_dir_all(src.join("big")).unwrap();
        std::fs::write(src.join("other"), b"o").unwrap();
        std::fs::write(src.join("big/new"), b"n").unwrap();
        std::fs::create_dir_all(dst.join("big")).unwrap();
        for i in 0..30 {
            std::fs::write(dst.join(format!("big/{i}")), b"old").unwrap();
        }
        let parts = Parts::local(&dst);
        let applier = parts.applier();
        let plan = Plan {
            subtrees: vec!["big".into()],
            ..Plan::default()
        };
        let report = applier
            .apply(&src, plan.clone(), true, Checks::default())
            .unwrap();
        assert!(report.succeeded(), "{report:?}");
        assert_eq!(report.held_subtrees, ["big".into()] as [WirePath; 1]);
        assert_eq!(report.refused_deletes, 30);
        assert!(report.refusal.as_deref().unwrap().contains("--max-delete"));
        // Nothing deleted; what the source has is sent all the same.
        assert_eq!(std::fs::read_dir(dst.join("big")).unwrap().count(), 31);
        assert_eq!(std::fs::read(dst.join("big/new")).unwrap(), b"n");
        // Released by the operator: applied.
        let released = Checks {
            released: true,
            ..Checks::default()
        };
        let report = applier.apply(&src, plan, true, released).unwrap();
        assert!(report.succeeded() && !report.held(), "{report:?}");
        assert_eq!(std::fs::read_dir(dst.join("big")).unwrap().count(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_rewrite_of_the_same_size_within_the_same_second_is_sent() {
        let dir = tempfile_dir().unwrap();
        let (src, dst) = (dir.join("src"), dir.join("dst"));
        std::fs::create_dir_all(&src).unwrap();
        std::fs::create_dir_all(&dst).unwrap();
        let at = |nanos| std::time::UNIX_EPOCH + Duration::new(1_700_000_000, nanos);
        let write = |content: &[u8], nanos| {
            std::fs::write(src.join("f"), content).unwrap();
            let f = std::fs::File::options()
                .write(true)
                .open(src.join("f"))
                .unwrap();
            f.set_modified(at(nanos)).unwrap();
        };
        let parts = Parts::local(&dst);
        let applier = parts.applier();
        let plan = Plan {
            paths: vec!["f".into()],
            ..Plan::default()
        };
        write(b"aaaa", 100);
        let report = applier
            .apply(&src, plan.clone(), true, Checks::default())
            .unwrap();
        assert!(report.succeeded(), "{report:?}");
        write(b"bbbb", 200);
        let report = applier.apply(&src, plan, true, Checks::default()).unwrap();
        assert!(report.succeeded(), "{report:?}");
        assert_eq!(std::fs::read(dst.join("f")).unwrap(), b"bbbb");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn installed_rsync_deletes_missing_args() {
        assert!(delete_missing_args_works(&RsyncSettings::default()).unwrap());
    }
}
