//! The bisync plan: from the archive (the last synchronised state) and two
//! fresh scans, decide per path what happens on each replica. Pure: no I/O,
//! the clock comes in as an argument, so property tests run it by the
//! thousand against a model of two file trees.
//!
//! Per path, each side is *changed* when its entry differs from the archive's
//! (content by fastcheck or hash, or metadata). Then:
//! - neither changed: nothing; one changed: its state propagates (a delete
//!   too); both changed to the same thing: nothing but the archive;
//! - both changed differently: a conflict. A modification beats a delete; a
//!   directory beats a non-directory (the non-directory becomes the conflict
//!   copy); otherwise `--prefer` decides, and by default both are kept: the
//!   newer file stays at the path, the other is renamed
//!   `NAME.conflict-<host>-<time>` on both replicas.
//! - A path that stays present keeps its ancestors as directories: a delete
//!   of a directory on one side does not take the other side's new files.
//! - Without an archive (first sync) nothing is deleted; a file that differs
//!   is kept twice unless `--prefer` names the version that counts.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::SystemTime;

use serde::Serialize;

use super::entry::{Entry, Hash, Kind, Side};
use crate::limit::MaxDelete;
use crate::wire::path::WirePath;

/// Entries of one replica by path relative to its root (the root excluded).
pub type Scan = BTreeMap<WirePath, Entry>;

/// One path's state after the last sync, as each replica had it (the inode
/// numbers differ; content and metadata agree).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchEntry {
    pub a: Entry,
    pub b: Entry,
}

impl ArchEntry {
    pub fn on(&self, side: Side) -> &Entry {
        match side {
            Side::A => &self.a,
            Side::B => &self.b,
        }
    }
}

pub type Archive = BTreeMap<WirePath, ArchEntry>;

/// Who wins a conflict (`--prefer`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Prefer {
    /// Keep both: the newer stays, the other becomes a conflict copy.
    #[default]
    Keep,
    A,
    B,
    Newer,
    Older,
    /// The bigger file wins (equal sizes: the newer).
    Larger,
    /// The smaller file wins (equal sizes: the newer).
    Smaller,
}

#[derive(Clone, Debug)]
pub struct Policy {
    pub prefer: Prefer,
    pub max_delete: MaxDelete,
    /// Owner and group are compared and copied (both sides run as root).
    pub owners: bool,
    /// Host names of the replicas, for conflict copies' names.
    pub hosts: [String; 2],
    pub now: SystemTime,
    /// `--size-only`: a file's content is its size; mtimes and inodes are
    /// not trusted (they neither mark a change nor get compared).
    pub size_only: bool,
    /// `--sentinel`: a path that must exist on both replicas.
    pub sentinel: Option<WirePath>,
    /// `--force`: go ahead although (nearly) every tracked file on one side
    /// changed since the last sync.
    pub force: bool,
}

/// The all-changed guard trips when at least this many files are tracked on
/// a side ...
pub const MASS_CHANGE_MIN_FILES: u64 = 10;
/// ... and at least this percentage of them changed there (content or
/// mtime) since the last sync.
pub const MASS_CHANGE_PERCENT: u64 = 90;

/// One step on one replica. `path` is where it happens; a copy reads the
/// same path on the other replica.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Action {
    pub side: Side,
    pub path: WirePath,
    #[serde(flatten)]
    pub op: Op,
}

/// Every step names the state it expects to find, so the executor can refuse
/// to touch a path that changed since the scan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Move a conflict's losing version out of the way, to `to`.
    ConflictRename { to: WirePath, expect: Entry },
    /// Delete a file or symlink.
    Remove { expect: Entry },
    /// Create a directory (the path must be free).
    Mkdir { entry: Entry },
    /// Rename a file to `to` instead of copying it again.
    Rename { to: WirePath, expect: Entry },
    /// Delete an empty directory.
    Rmdir { expect: Entry },
    /// Copy the other replica's `src` here, replacing `expect`.
    Copy { src: Entry, expect: Option<Entry> },
    /// Give the entry here `src`'s mode, mtime (files) and owner.
    SetMeta { src: Entry, expect: Entry },
}

impl Op {
    fn stage(&self) -> u8 {
        match self {
            Op::ConflictRename { .. } => 0,
            Op::Remove { .. } => 1,
            Op::Mkdir { .. } => 2,
            Op::Rename { .. } => 3,
            Op::Rmdir { .. } => 4,
            Op::Copy { .. } => 5,
            Op::SetMeta { expect, .. } if expect.kind != Kind::Dir => 6,
            Op::SetMeta { .. } => 7,
        }
    }

    pub fn is_delete(&self) -> bool {
        matches!(self, Op::Remove { .. } | Op::Rmdir { .. })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Op::ConflictRename { .. } => "conflict_rename",
            Op::Remove { .. } => "remove",
            Op::Mkdir { .. } => "mkdir",
            Op::Rename { .. } => "rename",
            Op::Rmdir { .. } => "rmdir",
            Op::Copy { .. } => "copy",
            Op::SetMeta { .. } => "set_meta",
        }
    }
}

/// How a conflict was settled.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Conflict {
    pub path: WirePath,
    /// The side whose version stays at `path`.
    pub winner: Side,
    /// Where the other version was kept, or `None` when `--prefer`
    /// replaced it.
    pub copy: Option<WirePath>,
}

/// The state a path has on both replicas once the plan is carried out: the
/// version `from` has there (for a conflict copy: had at `copy_of`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Final {
    pub from: Side,
    pub copy_of: Option<WirePath>,
}

#[derive(Clone, Debug, Default)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub conflicts: Vec<Conflict>,
    /// Every path present after the plan, with the version it will hold.
    pub finals: BTreeMap<WirePath, Final>,
    pub first_sync: bool,
}

impl Plan {
    pub fn deletes(&self, side: Side) -> u64 {
        self.actions
            .iter()
            .filter(|a| a.side == side && a.op.is_delete())
            .count() as u64
    }
}

/// Why there is no plan: a guard stopped the run before anything changed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "replica {0} is empty but the archive lists {1} entries synchronised before: \
         is a disk unmounted? Nothing was changed"
    )]
    Emptied(Side, usize),
    #[error(
        "the plan deletes {deletes} of {entries} entries on replica {side}, more than \
         --max-delete allows; nothing was changed (check the replica, then rerun with a \
         higher --max-delete)"
    )]
    TooManyDeletes {
        side: Side,
        deletes: u64,
        entries: u64,
    },
    #[error(
        "the sentinel {path:?} (--sentinel) is missing on replica {side}: is it mounted, is it \
         the right directory? Nothing was changed (create the file on both replicas once they \
         are right)"
    )]
    NoSentinel { side: Side, path: WirePath },
    #[error(
        "{changed} of the {tracked} files synchronised before changed on replica {side} \
         (content or modification time): a restored backup, a `touch`, a clock that jumped? \
         Nothing was changed; if these changes are wanted, rerun with --force (or \
         --size-only/--checksum if only the times moved)"
    )]
    AllChanged {
        side: Side,
        changed: u64,
        tracked: u64,
    },
}

impl Refusal {
    /// The replica the refusal is about.
    pub fn side(&self) -> Side {
        match self {
            Refusal::Emptied(side, _)
            | Refusal::TooManyDeletes { side, .. }
            | Refusal::NoSentinel { side, .. }
            | Refusal::AllChanged { side, .. } => *side,
        }
    }
}

/// How entries are compared: owners (both sides root) and `--size-only`.
#[derive(Clone, Copy, Debug)]
struct Cmp {
    owners: bool,
    size_only: bool,
}

impl Cmp {
    fn of(policy: &Policy) -> Cmp {
        Cmp {
            owners: policy.owners,
            size_only: policy.size_only,
        }
    }

    /// `cur` still has the content `old` had on the same replica.
    fn content_before(self, cur: &Entry, old: &Entry) -> bool {
        if self.size_only && cur.kind == Kind::File && old.kind == Kind::File {
            return cur.size == old.size;
        }
        cur.same_content_as_before(old)
    }

    /// Two entries on different replicas hold the same content.
    fn content_same(self, x: &Entry, y: &Entry) -> bool {
        if self.size_only && x.kind == Kind::File && y.kind == Kind::File {
            return x.size == y.size;
        }
        x.same_content_as(y)
    }

    fn meta(self, x: &Entry, y: &Entry) -> bool {
        if self.size_only {
            return x.mode == y.mode && (!self.owners || (x.uid == y.uid && x.gid == y.gid));
        }
        x.same_meta(y, self.owners)
    }

    fn changed(self, old: Option<&Entry>, cur: Option<&Entry>) -> bool {
        match (old, cur) {
            (None, None) => false,
            (Some(o), Some(c)) => !(self.content_before(c, o) && self.meta(c, o)),
            _ => true,
        }
    }
}

fn changed(old: Option<&Entry>, cur: Option<&Entry>, owners: bool) -> bool {
    match (old, cur) {
        (None, None) => false,
        (Some(o), Some(c)) => !(c.same_content_as_before(o) && c.same_meta(o, owners)),
        _ => true,
    }
}

/// Paths where the plan can only tell "same change on both sides" from a
/// conflict with content hashes: both sides changed to files of equal size
/// and at least one hash is missing. The caller hashes them on both
/// replicas, fills `Entry::hash`, and plans.
pub fn needs_hash(archive: Option<&Archive>, a: &Scan, b: &Scan, owners: bool) -> Vec<WirePath> {
    let mut out = Vec::new();
    for (path, ea) in a {
        let Some(eb) = b.get(path) else { continue };
        if ea.kind != Kind::File
            || eb.kind != Kind::File
            || ea.size != eb.size
            || (ea.hash.is_some() && eb.hash.is_some())
        {
            continue;
        }
        let old = archive.and_then(|ar| ar.get(path));
        if changed(old.map(|o| &o.a), Some(ea), owners)
            && changed(old.map(|o| &o.b), Some(eb), owners)
        {
            out.push(path.clone());
        }
    }
    out
}

/// What the plan decided for one path before actions are derived.
#[derive(Clone, Debug)]
enum Decision {
    /// Both replicas already agree (or both lack the path).
    Same,
    /// The state on this side is the result (present or absent).
    Take(Side),
    /// Different versions on both sides; `winner` stays at the path, the
    /// loser is kept as a copy or (with `--prefer`) replaced.
    Conflict { winner: Side, keep_loser: bool },
}

fn newer(a: &Entry, b: &Entry) -> Side {
    if b.mtime > a.mtime {
        Side::B
    } else {
        Side::A
    }
}

/// Plans one sync. `archive` is `None` for a first sync.
pub fn plan(
    archive: Option<&Archive>,
    a: &Scan,
    b: &Scan,
    policy: &Policy,
) -> Result<Plan, Refusal> {
    if let Some(sentinel) = &policy.sentinel {
        for (side, scan) in [(Side::A, a), (Side::B, b)] {
            if !scan.contains_key(sentinel) {
                return Err(Refusal::NoSentinel {
                    side,
                    path: sentinel.clone(),
                });
            }
        }
    }
    let cmp = Cmp::of(policy);
    if let Some(ar) = archive {
        if !ar.is_empty() {
            for (side, scan) in [(Side::A, a), (Side::B, b)] {
                if scan.is_empty() {
                    return Err(Refusal::Emptied(side, ar.len()));
                }
            }
        }
        if !policy.force {
            mass_change(ar, a, b, cmp)?;
        }
    }
    let first_sync = archive.is_none();
    let empty = Archive::new();
    let ar = archive.unwrap_or(&empty);
    let scan = |side: Side| if side == Side::A { a } else { b };
    let owners = policy.owners;

    // Only paths where something is to be done get a decision; the rest
    // (almost all, usually) are the same on both sides.
    let mut decisions: BTreeMap<&WirePath, Decision> = BTreeMap::new();
    for (path, old, ca, cb) in Joined::new(ar, a, b) {
        let ch_a = cmp.changed(old.map(|o| &o.a), ca);
        let ch_b = cmp.changed(old.map(|o| &o.b), cb);
        let decision = match (ch_a, ch_b) {
            (false, false) => continue,
            (true, false) => Decision::Take(Side::A),
            (false, true) => Decision::Take(Side::B),
            (true, true) => match (ca, cb) {
                (None, None) => continue,
                (Some(_), None) => Decision::Take(Side::A),
                (None, Some(_)) => Decision::Take(Side::B),
                (Some(x), Some(y)) if cmp.content_same(x, y) => {
                    if cmp.meta(x, y) {
                        continue;
                    }
                    Decision::Take(match policy.prefer {
                        Prefer::A => Side::A,
                        Prefer::B => Side::B,
                        Prefer::Older => newer(x, y).other(),
                        Prefer::Keep | Prefer::Newer | Prefer::Larger | Prefer::Smaller => {
                            newer(x, y)
                        }
                    })
                }
                (Some(x), Some(y)) => conflict(x, y, policy.prefer),
            },
        };
        decisions.insert(path, decision);
    }

    // A path that stays keeps its ancestors as directories. Only a path
    // with a decision can end up absent or a non-directory where a side
    // has a directory; deepest first, so a revived directory counts as a
    // present child of its parent.
    let final_at = |decisions: &BTreeMap<&WirePath, Decision>, p: &WirePath| {
        let d = decisions.get(p).unwrap_or(&Decision::Same);
        final_of(d, a.get(p), b.get(p))
    };
    let mut suspects: Vec<&WirePath> = decisions
        .keys()
        .filter(|p| {
            let is_dir_somewhere =
                a.get(**p).is_some_and(Entry::is_dir) || b.get(**p).is_some_and(Entry::is_dir);
            is_dir_somewhere && !final_at(&decisions, p).is_some_and(|(_, e)| e.is_dir())
        })
        .copied()
        .collect();
    suspects.sort_by_key(|p| std::cmp::Reverse(p.depth()));
    for dir in suspects {
        let (lo, hi) = children_range(dir);
        let kept = a
            .range(lo.clone()..hi.clone())
            .chain(b.range(lo..hi))
            .any(|(q, _)| final_at(&decisions, q).is_some());
        if !kept {
            continue;
        }
        let (da, db) = (a.get(dir), b.get(dir));
        let fixed = match final_at(&decisions, dir) {
            // Gone: the side that has it as a directory wins.
            None => Decision::Take(dir_side(da, db)),
            // To be replaced by a non-directory: keep that as a conflict copy.
            Some(_) => Decision::Conflict {
                winner: dir_side(da, db),
                keep_loser: true,
            },
        };
        decisions.insert(dir, fixed);
    }

    let mut plan = Plan {
        first_sync,
        ..Plan::default()
    };
    let mut taken: BTreeSet<WirePath> = BTreeSet::new();
    for (&path, decision) in &decisions {
        let (ca, cb) = (a.get(path), b.get(path));
        let Some((from, version)) = final_of(decision, ca, cb) else {
            // Absent on both in the end.
            for side in [Side::A, Side::B] {
                if let Some(cur) = scan(side).get(path) {
                    plan.actions.push(removal(side, path, cur));
                }
            }
            continue;
        };
        plan.finals.insert(
            path.clone(),
            Final {
                from,
                copy_of: None,
            },
        );
        let to = from.other();
        let mut cur_to = scan(to).get(path);
        if let Decision::Conflict { winner, keep_loser } = decision {
            let loser = winner.other();
            let loser_entry = scan(loser).get(path).expect("both present in a conflict");
            let copy = if *keep_loser {
                let name = conflict_name(path, &policy.hosts[loser as usize], policy, |p| {
                    a.contains_key(p)
                        || b.contains_key(p)
                        || ar.contains_key(p)
                        || taken.contains(p)
                });
                taken.insert(name.clone());
                plan.actions.push(Action {
                    side: loser,
                    path: path.clone(),
                    op: Op::ConflictRename {
                        to: name.clone(),
                        expect: loser_entry.clone(),
                    },
                });
                plan.actions.push(Action {
                    side: *winner,
                    path: name.clone(),
                    op: Op::Copy {
                        src: loser_entry.clone(),
                        expect: None,
                    },
                });
                plan.finals.insert(
                    name.clone(),
                    Final {
                        from: loser,
                        copy_of: Some(path.clone()),
                    },
                );
                cur_to = None;
                Some(name)
            } else {
                None
            };
            plan.conflicts.push(Conflict {
                path: path.clone(),
                winner: *winner,
                copy,
            });
        }
        let meta_only = |cur: &Entry| {
            cmp.content_same(version, cur)
                || ar.get(path).is_some_and(|old| {
                    cmp.content_before(version, old.on(from)) && cmp.content_before(cur, old.on(to))
                })
        };
        match cur_to {
            Some(cur) if cur.kind == version.kind && meta_only(cur) => {
                if !cmp.meta(version, cur) {
                    plan.actions.push(Action {
                        side: to,
                        path: path.clone(),
                        op: Op::SetMeta {
                            src: version.clone(),
                            expect: cur.clone(),
                        },
                    });
                }
            }
            cur => {
                let mut expect = cur.cloned();
                if let Some(cur) = cur {
                    if cur.is_dir() || version.is_dir() {
                        plan.actions.push(removal(to, path, cur));
                        expect = None;
                    }
                }
                let op = if version.is_dir() {
                    Op::Mkdir {
                        entry: version.clone(),
                    }
                } else {
                    Op::Copy {
                        src: version.clone(),
                        expect,
                    }
                };
                plan.actions.push(Action {
                    side: to,
                    path: path.clone(),
                    op,
                });
            }
        }
    }

    if !first_sync && !policy.size_only {
        // Renames are found by inode and mtime, which --size-only does
        // not trust: those stay a delete and a copy.
        find_renames(&mut plan, ar, owners);
    }
    debug_assert!(!first_sync || plan.actions.iter().all(|x| !x.op.is_delete()));
    plan.actions.sort_by(|x, y| order_key(x).cmp(&order_key(y)));

    for side in [Side::A, Side::B] {
        let deletes = plan.deletes(side);
        let entries = scan(side).len() as u64;
        // No floor: bisync counts a percentage from the first delete.
        if policy.max_delete.exceeded(deletes, Some(entries), 0) {
            return Err(Refusal::TooManyDeletes {
                side,
                deletes,
                entries,
            });
        }
    }
    Ok(plan)
}

fn conflict(x: &Entry, y: &Entry, prefer: Prefer) -> Decision {
    // A directory never loses: the other version is kept beside it.
    if x.is_dir() != y.is_dir() {
        let winner = if x.is_dir() { Side::A } else { Side::B };
        return Decision::Conflict {
            winner,
            keep_loser: true,
        };
    }
    // A first sync honours --prefer too (rclone's --resync-mode): the
    // user said which version counts. It still deletes nothing.
    let by_size = |larger: bool| {
        if x.size == y.size {
            newer(x, y)
        } else if (x.size > y.size) == larger {
            Side::A
        } else {
            Side::B
        }
    };
    let (winner, keep_loser) = match prefer {
        Prefer::Keep => (newer(x, y), true),
        Prefer::Newer => (newer(x, y), false),
        Prefer::Older => (newer(x, y).other(), false),
        Prefer::Larger => (by_size(true), false),
        Prefer::Smaller => (by_size(false), false),
        Prefer::A => (Side::A, false),
        Prefer::B => (Side::B, false),
    };
    Decision::Conflict { winner, keep_loser }
}

/// The all-changed guard: (nearly) every file tracked on one side changed
/// since the last sync at once, content or mtime. That is what a restored
/// backup, a `touch -d` over the tree or a clock fixed after boot looks
/// like, and propagating it would overwrite the other side wholesale.
fn mass_change(ar: &Archive, a: &Scan, b: &Scan, cmp: Cmp) -> Result<(), Refusal> {
    for (side, scan) in [(Side::A, a), (Side::B, b)] {
        let (mut tracked, mut changed) = (0u64, 0u64);
        for (path, old) in ar {
            let old = old.on(side);
            if old.kind != Kind::File {
                continue;
            }
            tracked += 1;
            // Deletions have their own guards (emptied, --max-delete);
            // a mode change alone (chmod -R) is no sign of a restored tree.
            if let Some(cur) = scan.get(path) {
                if !cmp.content_before(cur, old) {
                    changed += 1;
                }
            }
        }
        if tracked >= MASS_CHANGE_MIN_FILES && changed * 100 >= tracked * MASS_CHANGE_PERCENT {
            return Err(Refusal::AllChanged {
                side,
                changed,
                tracked,
            });
        }
    }
    Ok(())
}

fn dir_side(a: Option<&Entry>, b: Option<&Entry>) -> Side {
    if a.is_some_and(Entry::is_dir) {
        Side::A
    } else {
        debug_assert!(
            b.is_some_and(Entry::is_dir),
            "a child stays, so a parent is a directory"
        );
        Side::B
    }
}

fn final_of<'e>(
    decision: &Decision,
    a: Option<&'e Entry>,
    b: Option<&'e Entry>,
) -> Option<(Side, &'e Entry)> {
    let on = |side: Side| match side {
        Side::A => a.map(|e| (Side::A, e)),
        Side::B => b.map(|e| (Side::B, e)),
    };
    match decision {
        Decision::Same => on(Side::A).or(on(Side::B)),
        Decision::Take(side) => on(*side),
        Decision::Conflict { winner, .. } => on(*winner),
    }
}

fn removal(side: Side, path: &WirePath, cur: &Entry) -> Action {
    let op = if cur.is_dir() {
        Op::Rmdir {
            expect: cur.clone(),
        }
    } else {
        Op::Remove {
            expect: cur.clone(),
        }
    };
    Action {
        side,
        path: path.clone(),
        op,
    }
}

/// `NAME.conflict-<host>-<YYYYMMDDTHHMMSSZ>`, with `-2`, `-3`, … when taken.
fn conflict_name(
    path: &WirePath,
    host: &str,
    policy: &Policy,
    taken: impl Fn(&WirePath) -> bool,
) -> WirePath {
    let stamp: String = humantime::format_rfc3339_seconds(policy.now)
        .to_string()
        .chars()
        .filter(|c| *c != '-' && *c != ':')
        .collect();
    let host: String = host
        .chars()
        .map(|c| if c == '/' || c.is_control() { '_' } else { c })
        .collect();
    let mut base = path.as_bytes().to_vec();
    base.extend_from_slice(format!(".conflict-{host}-{stamp}").as_bytes());
    let mut candidate = WirePath::from_bytes(base.clone());
    let mut n = 2;
    while taken(&candidate) {
        let mut bytes = base.clone();
        bytes.extend_from_slice(format!("-{n}").as_bytes());
        candidate = WirePath::from_bytes(bytes);
        n += 1;
    }
    candidate
}

/// Turns "remove X and copy Y" on one replica into "rename X to Y" when Y's
/// source is the file the archive knew at X (same inode, size and mtime on
/// the side where the user renamed it) and X is untouched on this replica.
fn find_renames(plan: &mut Plan, ar: &Archive, owners: bool) {
    let mut by_ino: [HashMap<u64, &WirePath>; 2] = [HashMap::new(), HashMap::new()];
    for (path, old) in ar {
        for side in [Side::A, Side::B] {
            let e = old.on(side);
            if e.kind == Kind::File && e.ino != 0 {
                by_ino[side as usize].entry(e.ino).or_insert(path);
            }
        }
    }
    // A directory removed where the copy lands goes at the rmdir stage,
    // after renames: a rename there would find the directory still in place.
    let rmdirs: BTreeSet<(Side, &WirePath)> = plan
        .actions
        .iter()
        .filter(|x| matches!(x.op, Op::Rmdir { .. }))
        .map(|x| (x.side, &x.path))
        .collect();
    let removes: HashMap<(Side, WirePath), usize> = plan
        .actions
        .iter()
        .enumerate()
        .filter(|(_, x)| matches!(x.op, Op::Remove { .. }))
        .map(|(i, x)| ((x.side, x.path.clone()), i))
        .collect();
    let mut replaced: Vec<(usize, usize)> = Vec::new();
    let mut used: BTreeSet<usize> = BTreeSet::new();
    for (ci, copy) in plan.actions.iter().enumerate() {
        let Op::Copy { src, expect: None } = &copy.op else {
            continue;
        };
        let from_side = copy.side.other();
        if src.kind != Kind::File || plan.finals.get(&copy.path).map(|f| f.from) != Some(from_side)
        {
            continue;
        }
        let Some(old_path) = by_ino[from_side as usize].get(&src.ino) else {
            continue;
        };
        let old = &ar[*old_path];
        let Some(&ri) = removes.get(&(copy.side, (*old_path).clone())) else {
            continue;
        };
        let Op::Remove { expect } = &plan.actions[ri].op else {
            unreachable!()
        };
        if used.contains(&ri)
            || rmdirs.contains(&(copy.side, &copy.path))
            || plan.finals.contains_key(*old_path)
            || !src.same_content_as_before(old.on(from_side))
            || !expect.same_content_as_before(old.on(copy.side))
        {
            continue;
        }
        used.insert(ri);
        replaced.push((ri, ci));
    }
    let mut extra = Vec::new();
    for &(ri, ci) in &replaced {
        let (side, from, expect) = match &plan.actions[ri] {
            Action {
                side,
                path,
                op: Op::Remove { expect },
            } => (*side, path.clone(), expect.clone()),
            _ => unreachable!(),
        };
        let (to, src) = match &plan.actions[ci] {
            Action {
                path,
                op: Op::Copy { src, .. },
                ..
            } => (path.clone(), src.clone()),
            _ => unreachable!(),
        };
        if !src.same_meta(&expect, owners) {
            extra.push(Action {
                side,
                path: to.clone(),
                op: Op::SetMeta {
                    src: src.clone(),
                    expect: expect.clone(),
                },
            });
        }
        plan.actions[ri] = Action {
            side,
            path: from,
            op: Op::Rename { to, expect },
        };
    }
    let drop: BTreeSet<usize> = replaced.iter().map(|&(_, ci)| ci).collect();
    let mut i = 0;
    plan.actions.retain(|_| {
        i += 1;
        !drop.contains(&(i - 1))
    });
    plan.actions.extend(extra);
}

/// Execution order: conflict renames, removals, mkdirs (parents first),
/// renames, rmdirs (children first), copies, then metadata (directories
/// last, children first, since writing into a directory touches it).
fn order_key(action: &Action) -> (u8, i64, &[u8], Side) {
    let stage = action.op.stage();
    let depth = action.path.depth() as i64;
    let depth = match action.op {
        Op::Rmdir { .. } | Op::SetMeta { .. } => -depth,
        _ => depth,
    };
    (stage, depth, action.path.as_bytes(), action.side)
}

/// Every path of the archive and both scans once, in order, with what
/// each has there: a merge of three sorted maps, no lookups.
pub struct Joined<'x> {
    ar: std::iter::Peekable<std::collections::btree_map::Iter<'x, WirePath, ArchEntry>>,
    a: std::iter::Peekable<std::collections::btree_map::Iter<'x, WirePath, Entry>>,
    b: std::iter::Peekable<std::collections::btree_map::Iter<'x, WirePath, Entry>>,
}

impl<'x> Joined<'x> {
    pub fn new(ar: &'x Archive, a: &'x Scan, b: &'x Scan) -> Self {
        Joined {
            ar: ar.iter().peekable(),
            a: a.iter().peekable(),
            b: b.iter().peekable(),
        }
    }
}

type JoinedItem<'x> = (
    &'x WirePath,
    Option<&'x ArchEntry>,
    Option<&'x Entry>,
    Option<&'x Entry>,
);

impl<'x> Iterator for Joined<'x> {
    type Item = JoinedItem<'x>;

    fn next(&mut self) -> Option<Self::Item> {
        let key = [
            self.ar.peek().map(|(k, _)| *k),
            self.a.peek().map(|(k, _)| *k),
            self.b.peek().map(|(k, _)| *k),
        ]
        .into_iter()
        .flatten()
        .min()?;
        let old = self.ar.next_if(|(k, _)| *k == key).map(|(_, v)| v);
        let ea = self.a.next_if(|(k, _)| *k == key).map(|(_, v)| v);
        let eb = self.b.next_if(|(k, _)| *k == key).map(|(_, v)| v);
        Some((key, old, ea, eb))
    }
}

/// The bounds of the paths below `dir` in byte order: `dir/` up to `dir0`
/// (`0` follows `/`), a contiguous range of any sorted map.
fn children_range(dir: &WirePath) -> (WirePath, WirePath) {
    let mut lo = dir.as_bytes().to_vec();
    lo.push(b'/');
    let mut hi = dir.as_bytes().to_vec();
    hi.push(b'0');
    (WirePath::from_bytes(lo), WirePath::from_bytes(hi))
}

/// The hash an archive entry keeps for `cur`: its own, or the old one while
/// fastcheck says the content is unchanged.
fn kept_hash(cur: &Entry, old: Option<&Entry>) -> Option<Hash> {
    match (&cur.hash, old) {
        (Some(h), _) => Some(h.clone()),
        (None, Some(o)) if cur.same_content_as_before(o) => o.hash.clone(),
        _ => None,
    }
}

/// Both sides' entries for the archive, sharing a hash known on either
/// (they hold the same content).
fn settled(ea: &Entry, eb: &Entry, extra: Option<&Hash>, old: Option<&ArchEntry>) -> ArchEntry {
    let mut ha = kept_hash(ea, old.map(|o| &o.a));
    let mut hb = kept_hash(eb, old.map(|o| &o.b));
    if ea.kind == Kind::File && ea.size == eb.size {
        let h = ha.clone().or(hb.clone()).or(extra.cloned());
        ha.clone_from(&h);
        hb = h;
    }
    ArchEntry {
        a: Entry {
            hash: ha,
            ..ea.clone()
        },
        b: Entry {
            hash: hb,
            ..eb.clone()
        },
    }
}

/// Whether `old` already is what [`settled`] would make, without building it.
fn settles_to(ea: &Entry, eb: &Entry, old: &ArchEntry) -> bool {
    let same = |cur: &Entry, o: &Entry| {
        cur.kind == o.kind
            && cur.size == o.size
            && cur.mtime == o.mtime
            && cur.mode == o.mode
            && cur.uid == o.uid
            && cur.gid == o.gid
            && cur.ino == o.ino
            && cur.target == o.target
    };
    if !same(ea, &old.a) || !same(eb, &old.b) {
        return false;
    }
    // Unchanged content keeps its hashes; new hashes must be recorded.
    let (ha, hb) = (kept_hash(ea, Some(&old.a)), kept_hash(eb, Some(&old.b)));
    if ea.kind == Kind::File && ea.size == eb.size {
        let h = ha.or(hb);
        h == old.a.hash && h == old.b.hash
    } else {
        ha == old.a.hash && hb == old.b.hash
    }
}

/// The archive after a run, updated in place: each path's final version
/// where every step on it succeeded (with the inode each replica has now),
/// the old entry where something failed, so the next run sees the
/// difference again. Also says whether anything changed.
pub fn next_archive(
    old: Option<Archive>,
    a: &Scan,
    b: &Scan,
    plan: &Plan,
    written: &HashMap<(Side, WirePath), Entry>,
    failed: &BTreeSet<WirePath>,
) -> (Archive, bool) {
    let mut changed = old.is_none();
    let mut ar = old.unwrap_or_default();
    let mut updates: Vec<(WirePath, Option<ArchEntry>)> = Vec::new();
    for (path, fin) in &plan.finals {
        if failed.contains(path) {
            continue;
        }
        let scan = |side: Side| if side == Side::A { a } else { b };
        let version = scan(fin.from).get(fin.copy_of.as_ref().unwrap_or(path));
        let on = |side: Side| -> Option<&Entry> {
            if let Some(e) = written.get(&(side, path.clone())) {
                return Some(e);
            }
            if side == fin.from {
                return version;
            }
            scan(side).get(path)
        };
        if let (Some(ea), Some(eb)) = (on(Side::A), on(Side::B)) {
            let extra = version.and_then(|v| v.hash.as_ref());
            let new = settled(ea, eb, extra, ar.get(path));
            if ar.get(path) != Some(&new) {
                ar.insert(path.clone(), new);
                changed = true;
            }
        }
    }
    for (path, old, ea, eb) in Joined::new(&ar, a, b) {
        if plan.finals.contains_key(path) || failed.contains(path) {
            continue;
        }
        match (ea, eb, old) {
            (Some(ea), Some(eb), Some(old)) if settles_to(ea, eb, old) => {}
            (Some(ea), Some(eb), old) => {
                updates.push((path.clone(), Some(settled(ea, eb, None, old))));
            }
            (_, _, Some(_)) => updates.push((path.clone(), None)),
            (_, _, None) => {}
        }
    }
    changed |= !updates.is_empty();
    for (path, entry) in updates {
        match entry {
            Some(e) => ar.insert(path, e),
            None => ar.remove(&path),
        };
    }
    (ar, changed)
}

#[cfg(test)]
#[path = "planner_tests.rs"]
mod tests;
