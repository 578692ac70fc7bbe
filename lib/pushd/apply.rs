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
                report.duration = started.elapsed();
                return Ok(report);
            }
        };
        // Every application that may delete first makes sure the source is
        // still the root it was: an unmounted disk's empty mount point or a
        // replaced directory would otherwise delete what the batch lists.
        if let (true, false, Some(before)) = (delete, checks.released, &checks.identity) {
            if let Some(why) = before.recheck(source) {
                report.held_everything = true;
                report.refused_deletes = plan
                    .paths
                    .iter()
                    .filter(|p| matches!(source_state(source, p), Ok(false)))
                    .count() as u64;
                report.refusal = Some(format!(
                    "{why}: holding every change for {}, nothing applied (SIGUSR2 to release once checked)",
                    self.target
                ));
                if self.settings.dry_run {
                    let held = plan.renames.iter().flat_map(|r| [&r.from, &r.to]);
                    let held = held.chain(&plan.paths).chain(&plan.subtrees);
                    report.would = held.map(|p| Preview::of("hold", p)).collect();
                }
                report.duration = started.elapsed();
                return Ok(report);
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
        if !plan.paths.is_empty() {
            let mut list = plan.paths.clone();
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
                    missing.iter().map(|p| count_entries(&join(root, p))).sum()
                } else if self.settings.delete_missing_args_works {
                    let dry =
                        self.rsync(source, Transfer::Paths { delete: true }, true, &missing)?;
                    if dry.outcome != Outcome::Success {
                        report.code = dry.code;
                        report.outcome = Some(dry.outcome);
                        report.message = dry.stderr;
                        report.duration = started.elapsed();
                        return Ok(report);
                    }
                    dry.stats.deleted.max(missing.len() as u64)
                } else {
                    missing.len() as u64
                };
                // The source's size only matters to a percentage over the floor.
                let source_now = match self.guards.max_delete {
                    MaxDelete::Percent(_) if n > PERCENT_FLOOR => {
                        count_entries(source).saturating_sub(1)
                    }
                    _ => 0,
                };
                let case = DeleteCase {
                    deletes: n,
                    source_now,
                    empty_now: empty,
                    empty_at_start: checks.identity.is_some_and(|i| i.empty),
                };
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
            // A dry run of --direct asks rsync: both copy what differs in
            // size or time and delete what the source lost.
            let direct = self.direct && !self.settings.dry_run;
            if let (true, Location::Local(root)) = (direct, &self.target.location) {
                match crate::pushd::direct::apply_paths(source, root, &list, delete) {
                    Ok(done) => {
                        report.stats.transferred += done.files;
                        report.stats.transferred_size += done.bytes;
                        report.stats.deleted += done.deleted;
                        report.outcome = Some(Outcome::Success);
                        for why in &done.skipped {
                            crate::log_warn!("{}: skipped {why}", self.target);
                        }
                    }
                    Err(why) => {
                        report.outcome = Some(Outcome::Fail);
                        report.message = why;
                        report.duration = started.elapsed();
                        return Ok(report);
                    }
                }
                list.clear();
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
                            report.duration = started.elapsed();
                            return Ok(report);
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
                    report.duration = started.elapsed();
                    return Ok(report);
                }
                report.stats.deleted += missing.len() as u64;
                list = present;
                delete_listed = false;
            }
            if !list.is_empty() {
                self.run(
                    source,
                    Transfer::Paths {
                        delete: delete_listed,
                    },
                    &list,
                    &mut report,
                )?;
                if !report.succeeded() {
                    report.duration = started.elapsed();
                    return Ok(report);
                }
            }
        }
        if !plan.subtrees.is_empty() {
            let mut delete = delete;
            if delete && !checks.released && !self.cannot_trip(&plan.subtrees, empty) {
                let dry = self.rsync(
                    source,
                    Transfer::Subtrees { delete: true },
                    true,
                    &plan.subtrees,
                )?;
                if dry.outcome != Outcome::Success {
                    report.code = dry.code;
                    report.outcome = Some(dry.outcome);
                    report.message = dry.stderr;
                    report.duration = started.elapsed();
                    return Ok(report);
                }
                // What the sync would lose: deletions net of what it creates.
                // A renamed directory (a restart after `mv big big2`) deletes
                // and creates the same entries: nothing is lost. An emptied
                // or shrunken source creates nothing and trips it.
                let loss = dry.stats.deleted.saturating_sub(dry.stats.created);
                if checks.released || dry.stats.deleted == 0 {
                    // Released by the operator, or nothing to weigh.
                } else if empty && !self.guards.allow_empty_source {
                    // An unmounted disk looks empty: never wipe a replica
                    // from it. (A batch's explicit deletes still apply: the
                    // last file of a tree can be deleted.)
                    delete = false;
                    report.refused_deletes += dry.stats.deleted;
                    report.refusal = Some(format!(
                        "source root {} is empty but {} entries would go on {}: not deleting, holding them (--allow-empty-source to allow)",
                        source.display(),
                        dry.stats.deleted,
                        self.target
                    ));
                } else {
                    // Weighed against the whole tree, as a batch's deletes
                    // are: a rescanned subtree is only part of the target.
                    let source_now = match self.guards.max_delete {
                        MaxDelete::Percent(_) if loss > PERCENT_FLOOR => {
                            count_entries(source).saturating_sub(1)
                        }
                        _ => 0,
                    };
                    let case = DeleteCase {
                        deletes: loss,
                        source_now,
                        empty_now: empty,
                        empty_at_start: checks.identity.is_some_and(|i| i.empty),
                    };
                    if let Some(why) = judge_deletes(self.guards, case) {
                        delete = false;
                        report.refused_deletes += dry.stats.deleted;
                        report.refusal = Some(format!(
                            "refusing to delete {} entries on {} ({why}; a sync losing {loss} of {} entries)",
                            dry.stats.deleted,
                            self.target,
                            source_now + loss
                        ));
                    }
                }
                if !delete {
                    report.held_subtrees = plan.subtrees.clone();
                    if self.settings.dry_run {
                        // The weighing run itemized what the guard refuses.
                        report.would.extend(
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
            self.run(
                source,
                Transfer::Subtrees { delete },
                &plan.subtrees,
                &mut report,
            )?;
        }
        report.duration = started.elapsed();
        Ok(report)
    }

    /// True when the subtrees' deletions cannot trip a guard whatever the
    /// source holds, so the dry run that weighs them can be skipped (one
    /// rsync less per batch that rescans a directory): on a local target
    /// what is there bounds what can go. Remote targets always weigh.
    fn cannot_trip(&self, subtrees: &[WirePath], empty: bool) -> bool {
        let Location::Local(root) = &self.target.location else {
            return false;
        };
        let limit = match self.guards.max_delete {
            _ if empty && !self.guards.allow_empty_source => 0,
            MaxDelete::Percent(_) => PERCENT_FLOOR,
            MaxDelete::Count(n) => n,
        };
        let mut bound = 0;
        for p in subtrees {
            // The root itself is never deleted.
            let skip = u64::from(p.is_root());
            bound += count_entries_upto(&join(root, p), limit.saturating_add(skip + 1))
                .saturating_sub(skip);
            if bound > limit {
                return false;
            }
        }
        true
    }

    fn rsync(
        &self,
        source: &Path,
        transfer: Transfer,
        dry_run: bool,
        list: &[WirePath],
    ) -> anyhow::Result<rsync::RunResult> {
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
        let list: Vec<&[u8]> = list.iter().map(WirePath::as_bytes).collect();
        match self.progress {
            Some(report) if !dry_run && matches!(transfer, Transfer::Subtrees { .. }) => {
                args.insert(0, "--info=progress2".into());
                rsync::run_watched(self.settings.program(), &args, &list, Some(report))
            }
            _ => rsync::run(self.settings.program(), &args, &list),
        }
    }

    fn run(
        &self,
        source: &Path,
        transfer: Transfer,
        list: &[WirePath],
        report: &mut Report,
    ) -> anyhow::Result<()> {
        let result = self.rsync(source, transfer, false, list)?;
        if self.settings.dry_run {
            report
                .would
                .extend(result.items.into_iter().map(Preview::item));
        }
        report.created_root |= result.created_root;
        report.stats.add(result.stats);
        report.code = result.code;
        report.outcome = Some(result.outcome);
        if result.outcome != Outcome::Success || !result.stderr.is_empty() {
            report.message = result.stderr;
        }
        Ok(())
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
            Location::Ssh { .. } | Location::Daemon { .. } => {
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

/// Whether `p` exists on the source: `Ok(false)` only when it is not found;
/// any other failure to look is an error, never a reason to delete.
fn source_state(source: &Path, p: &WirePath) -> Result<bool, String> {
    let path = join(source, p);
    match std::fs::symlink_metadata(&path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
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

/// Entries at and below `path` (0 when it is not there), not following
/// symlinks: what deleting it removes.
fn count_entries(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return 1;
    }
    let below: u64 = std::fs::read_dir(path)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| count_entries(&entry.path()))
        .sum();
    1 + below
}

/// Like [`count_entries`], but stops once `limit` is reached.
fn count_entries_upto(path: &Path, limit: u64) -> u64 {
    fn walk(path: &Path, limit: u64, n: &mut u64) {
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            return;
        };
        *n += 1;
        if !meta.is_dir() || *n >= limit {
            return;
        }
        for entry in std::fs::read_dir(path).into_iter().flatten().flatten() {
            walk(&entry.path(), limit, n);
            if *n >= limit {
                return;
            }
        }
    }
    let mut n = 0;
    walk(path, limit, &mut n);
    n
}

/// Renames on a local target through directory descriptors resolved
/// beneath the root without following symlinks: a planted symlink in either
/// path fails the rename (the data is then sent instead), it never leads it
/// outside. Missing parents of the new name are created the same way.
fn rename_local(root: &Path, plan: &Plan) -> Result<(), String> {
    use crate::os::beneath::{self, Root};
    let beneath = Root::open(root).map_err(|e| format!("opening {}: {e}", root.display()))?;
    for r in &plan.renames {
        let from = join(root, &r.from);
        let to = join(root, &r.to);
        let (from_dir, from_name) = beneath
            .parent(&r.from)
            .map_err(|e| format!("{} is not on the target: {e}", from.display()))?;
        beneath::stat_at(&from_dir, &from_name)
            .map_err(|e| format!("reading {}: {e}", from.display()))?
            .ok_or_else(|| format!("{} is not on the target", from.display()))?;
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
    fn counting_stops_at_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..5 {
            std::fs::create_dir_all(dir.path().join(format!("d{i}/e"))).unwrap();
        }
        assert_eq!(count_entries(dir.path()), 11);
        assert_eq!(count_entries_upto(dir.path(), 100), 11);
        assert_eq!(count_entries_upto(dir.path(), 4), 4);
        assert_eq!(count_entries_upto(&dir.path().join("none"), 4), 0);
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
        let target = Target {
            name: "t".into(),
            location: Location::Local(dst.clone()),
        };
        let settings = RsyncSettings {
            delete_missing_args_works: false,
            ..RsyncSettings::default()
        };
        let guards = Guards::default();
        let applier = Applier {
            target: &target,
            settings: &settings,
            guards: &guards,
            direct: false,
            progress: None,
        };
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

    #[test]
    fn installed_rsync_deletes_missing_args() {
        assert!(delete_missing_args_works(&RsyncSettings::default()).unwrap());
    }
}
