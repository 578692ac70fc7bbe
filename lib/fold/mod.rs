//! The folding core shared by `batchd` and `pushd`: events (or the changes of
//! earlier batches) in, the shortest safe ordered list of changes out. Pure: no
//! clocks, no I/O.
//!
//! # What a consumer does with the output
//!
//! The changes are applied in order against the *current* source tree:
//! `update` copies the path's current state (a missing path is deleted on the
//! target; a directory is copied without its contents), `delete` removes the
//! path and everything below it, `rescan` syncs the whole subtree, and `move`
//! renames `from` to `path` on the target. Only `move` depends on what the
//! target holds; everything else is idempotent.
//!
//! # How the fold stays correct
//!
//! The fold keeps a log of records in the order they are to be applied, and an
//! index from each *current* source path to the record that speaks for it.
//!
//! The invariant: applying the log to a target that is **not behind** the
//! source at the fold's start leaves it matching the source now. Not behind
//! means: every entry the target holds is the source's entry at that path at
//! the fold's start *or at some later moment* (possibly a different moment
//! per subtree), and it holds everything the source held at the start except
//! what the source deleted or moved away since. The target is often ahead:
//! an earlier batch's `rescan` or `update` (the rescan of a directory made or
//! moved in, a full sync) reads the *current* source while the source keeps
//! changing, so it may already have copied a path created inside this
//! window, or the new name of a rename. A path with no index entry (and no
//! `rescan` above it) is untouched in the window: every moment agrees.
//!
//! So the fold never assumes the target lacks a path. A `delete` (and the
//! old half of a move that is not kept) is always emitted, even for a path
//! created inside the window: deletions are cheap and idempotent, and
//! dropping one leaves a stale copy on the target forever.
//!
//! A move is kept as a rename only when a target in step at the fold's start
//! would hold the moved entry at that point of the log and nothing is pending
//! at the destination: the source path existed when the fold started (its
//! entry, if any, is a `modify` of it), nothing above it is a kept move, a
//! rescan or deleted, and nothing below it is itself a kept move. A target
//! that is ahead may not hold the entry (the rename fails and the consumer
//! sends the data instead, re-checking the old and the new name; see
//! plan.rs), or may hold a later entry at the old path (which the rename
//! carries to the new path); either way what follows fixes it: a kept move is
//! always written as the rename followed by an `update` (file) or `rescan`
//! (directory) of the new path, which covers whatever was pending below the
//! old path and makes a late consumer right too (see docs/protocol.md), and
//! anything the source made again at the old path has a record later in the
//! log. In every other case the move degrades to `delete` of the old path
//! plus `update` (a file) or `rescan` (a directory) of the new one. When a
//! later event makes a kept move unsafe (its destination is deleted,
//! rescanned or overwritten), the move's record turns in place into a
//! `delete` of its old path, which is exactly what the source did to that
//! path.
//!
//! The model check (`model.rs`) applies the lists to targets ahead of
//! the fold's start in these ways, and to batches applied while the source
//! keeps changing.

use std::collections::{BTreeSet, HashMap, HashSet};

mod table;
use table::with_huge_pages;
pub(crate) use table::{prefetch, PathTable};

use foldhash::fast::RandomState;
use smallvec::SmallVec;

use crate::wire::event::{Change, ChangeOp, Event, EventKind};
use crate::wire::path::WirePath;

/// What a target in step at the fold's start holds at a path before that
/// path's `update` record is applied; it decides whether the path may later
/// be renamed on the target. (Never whether a delete is needed: a target
/// ahead of the fold's start may hold any path, see the module docs.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Base {
    /// Nothing when in step: the path was created after the fold started.
    Absent,
    /// The entry as it was when the fold started (it was modified since).
    Present,
    /// Cannot tell (a folded `update` change, or a path replaced after a delete).
    Unknown,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Op {
    Update(Base),
    Delete,
    Rescan,
    /// A kept rename from `from`, written as the rename and then an `update`
    /// (a file) or a `rescan` (a directory) of the new path.
    Move {
        from: Vec<u8>,
    },
}

/// A record's op without its data, to branch on without borrowing the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Update(Base),
    Delete,
    Rescan,
    Move,
}

impl Op {
    fn kind(&self) -> Kind {
        match self {
            Op::Update(base) => Kind::Update(*base),
            Op::Delete => Kind::Delete,
            Op::Rescan => Kind::Rescan,
            Op::Move { .. } => Kind::Move,
        }
    }
}

/// What the index knows of a path's record: enough to fold a repeated event
/// without touching the log (the lookup brings it in the same cache line).
#[derive(Clone, Copy, Debug)]
struct Entry {
    /// The record's place in `log`, as 32 bits so the entry and a short
    /// key fill half a cache line (see table.rs).
    at: u32,
    kind: Kind,
    dir: bool,
}

impl Entry {
    fn new(slot: usize, kind: Kind, dir: bool) -> Self {
        let at = u32::try_from(slot).expect("fewer than 4 G records: memory would run out first");
        Entry { at, kind, dir }
    }

    fn slot(&self) -> usize {
        self.at as usize
    }
}

/// A path as the fold keeps it: up to 24 bytes inline, so looking a short
/// path up compares bytes already in the hash table's cache line instead of
/// following a pointer to the heap (that miss was a fifth of the fold's time
/// at 100,000 paths), and a new path costs no allocation.
pub(crate) type Key = SmallVec<[u8; 24]>;

#[derive(Clone, Debug)]
struct Rec {
    path: Key,
    dir: bool,
    op: Op,
    /// The target may hold an old directory, with contents, at `path` when
    /// this record runs: a directory made here must then be a `rescan`, or
    /// the old contents would stay.
    stale: bool,
}

/// Pending changes, folded. See the module documentation for the rules.
#[derive(Debug, Default)]
pub struct Fold {
    /// Records in apply order; `None` is a record superseded by a later one.
    log: Vec<Option<Rec>>,
    /// Current source path -> its record's slot in `log`. A record not in the
    /// index (a degraded move) still applies but no longer speaks for a path.
    /// Looked up for nearly every event: its own table, one cache line per
    /// look-up, which batchd fetches ahead ([`Fold::prefetch`]).
    index: PathTable<Entry>,
    /// The index's paths in byte order: everything below a directory is one
    /// range. (The hash map serves the many lookups of single paths.) Built
    /// the first time a subtree with something in it is listed, and kept from
    /// then on: a stream of file changes never needs it, and keeping it
    /// sorted was a fifth of the fold's time (a B-tree insert per new path).
    keys: Option<BTreeSet<Key>>,
    /// How many indexed paths lie strictly below each directory that has
    /// any (the root not counted): "is anything pending below this path?"
    /// in one lookup in a table as small as the number of such directories.
    under: HashMap<Key, u32, RandomState>,
    live: usize,
    /// The paths of indexed records that cover their subtree (a `rescan`, a
    /// kept move of a directory), and the number of kept moves: when none,
    /// the walks that look for them are skipped.
    coverers: HashSet<Key, RandomState>,
    moves: usize,
    /// Records no longer in the index (degraded moves). A stream as a file
    /// system writes it leaves at most one per path that existed when the
    /// fold started; more means the stream is not consistent.
    sealed: usize,
}

const ROOT: &[u8] = b".";

impl Fold {
    pub fn new() -> Self {
        Fold::default()
    }

    /// Number of pending records, about one per distinct path: the memory
    /// this fold holds grows with it, not with the number of events seen.
    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// True when a full rescan of the root is pending (everything else is
    /// then folded into it).
    pub fn is_full_rescan(&self) -> bool {
        self.index.get(ROOT).is_some_and(|e| e.kind == Kind::Rescan)
    }

    /// Marks the whole root for a full sync: something may have been missed.
    pub fn rescan_all(&mut self) {
        self.rescan(ROOT, true);
    }

    /// Folds one event from a watcher's stream. `create`, `modify` and
    /// `attrib` become `update`, `delete` a `delete`, `move` a `move` where
    /// it is safe, and `rescan` or a kind this version does not know a `rescan`.
    pub fn push_event(&mut self, ev: &Event) {
        let path = normal(ev.path.as_bytes());
        match &ev.kind {
            EventKind::Create => self.create(path, ev.dir),
            EventKind::Modify | EventKind::Attrib => self.update(path, ev.dir, Base::Present),
            EventKind::Delete => self.delete(path, ev.dir),
            EventKind::Move => match &ev.from {
                Some(from) => self.rename(normal(from.as_bytes()), path, ev.dir),
                // A move that does not say where from: something happened to
                // `path` and to an unknown other path, so sync everything.
                None => self.rescan_all(),
            },
            EventKind::Rescan | EventKind::Other(_) => self.rescan(path, ev.dir),
        }
        self.bound_memory();
    }

    /// Asks for the index slots folding `ev` will look at first (a hint
    /// only): called some events ahead of [`push_event`](Self::push_event),
    /// the fetch overlaps the folding of the events before it.
    pub fn prefetch_index(&self, ev: &Event) {
        self.index.prefetch(normal(ev.path.as_bytes()));
        if let Some(from) = &ev.from {
            self.index.prefetch(normal(from.as_bytes()));
        }
    }

    /// Asks for the record of `ev`'s path, when it has one (a hint only):
    /// called a few events after [`prefetch_index`](Self::prefetch_index),
    /// when the index slot is in the cache.
    pub fn prefetch_record(&self, ev: &Event) {
        if let Some(e) = self.index.get(normal(ev.path.as_bytes())) {
            if let Some(rec) = self.log.get(e.slot()) {
                prefetch(rec);
            }
        }
    }

    /// Folds one change of an earlier batch. Folding the changes of batches
    /// one after the other has the same effect on a target as folding their
    /// events in one go (the lists may differ: an `update` of a path no
    /// longer says whether the path is new, so a later move of it degrades).
    pub fn push(&mut self, change: Change) {
        let path = normal(change.path.as_bytes());
        match change.op {
            ChangeOp::Update => self.update(path, change.dir, Base::Unknown),
            ChangeOp::Delete => self.delete(path, change.dir),
            ChangeOp::Rescan => self.rescan(path, change.dir),
            ChangeOp::Move => match &change.from {
                Some(from) => self.rename(normal(from.as_bytes()), path, change.dir),
                None => self.rescan_all(),
            },
        }
        self.bound_memory();
    }

    /// Keeps memory proportional to the paths pending even for a stream no
    /// file system could write (renames from paths that never came back):
    /// past a limit, a full rescan replaces everything.
    fn bound_memory(&mut self) {
        if self.sealed > self.index.len() + 4096 {
            self.rescan_all();
        }
    }

    /// The folded changes in the order to apply them; leaves the fold empty.
    pub fn take(&mut self) -> Vec<Change> {
        let mut out = Vec::with_capacity(self.live);
        for rec in std::mem::take(&mut self.log).into_iter().flatten() {
            let change = |op, path: &[u8], from: Option<&[u8]>| Change {
                op,
                path: WirePath::from_bytes(path),
                dir: rec.dir,
                from: from.map(WirePath::from_bytes),
            };
            match &rec.op {
                Op::Update(_) => out.push(change(ChangeOp::Update, &rec.path, None)),
                // On a delete, `dir` says the target may hold a directory
                // there, so a later fold of this change knows the old
                // contents must go if a directory is made at the path again.
                Op::Delete => out.push(Change {
                    dir: rec.dir || rec.stale,
                    ..change(ChangeOp::Delete, &rec.path, None)
                }),
                Op::Rescan => out.push(change(ChangeOp::Rescan, &rec.path, None)),
                // The rename saves sending the data; what follows re-reads
                // the new path, so a target that applies the list late (the
                // source has moved on, an earlier batch re-read a path that
                // was gone by then) still ends up right. rsync's quick check
                // finds the renamed data already in place.
                Op::Move { from } => {
                    out.push(change(ChangeOp::Move, &rec.path, Some(from)));
                    let after = if rec.dir {
                        ChangeOp::Rescan
                    } else {
                        ChangeOp::Update
                    };
                    out.push(change(after, &rec.path, None));
                }
            }
        }
        *self = Fold::new();
        out
    }

    // ---- the rules, one per kind of input ----

    fn create(&mut self, path: &[u8], dir: bool) {
        if path == ROOT {
            return self.update(path, dir, Base::Present);
        }
        let found = self.kind(path);
        if self.covered_at(path, found) {
            return;
        }
        let Some(e) = found else {
            return self.append(path, dir, Op::Update(Base::Absent));
        };
        match e.kind {
            // A repeated create (a watcher reports an entry twice) is a modify.
            Kind::Update(_) => self.retype(e, path, dir),
            Kind::Delete => self.replace(e.slot(), path, dir),
            Kind::Move => self.moved_entry_changed(e, path, dir),
            Kind::Rescan => {}
        }
    }

    fn update(&mut self, path: &[u8], dir: bool, base: Base) {
        let found = self.kind(path);
        if self.covered_at(path, found) {
            return;
        }
        if !dir && base == Base::Unknown {
            // A folded change saying "this is a file": whatever was pending
            // below a directory here is gone with it. (Only records strictly
            // below `path` go: `found` still holds.)
            self.swallow_below(path);
        }
        let Some(e) = found else {
            return self.append(path, dir, Op::Update(base));
        };
        match e.kind {
            Kind::Update(_) => self.retype(e, path, dir),
            // Only changes say this (delete, then an update of a path made
            // again later): the same as a create after a delete.
            Kind::Delete => self.replace(e.slot(), path, dir),
            Kind::Move => self.moved_entry_changed(e, path, dir),
            Kind::Rescan => {}
        }
    }

    /// `path` exists again after its `delete` record: the target still holds
    /// the old entry until that record would have run. Where that was a file,
    /// `update` replaces it. Where it may be a directory with contents, the
    /// old contents must go: a `rescan`, whatever the new entry is (an update
    /// applied late, when the source has made a directory there again, would
    /// keep them).
    fn replace(&mut self, slot: usize, path: &[u8], dir: bool) {
        let old = self.rec(slot);
        if old.stale || old.dir {
            self.requeue(path, dir, Op::Rescan, false);
        } else {
            self.requeue(path, dir, Op::Update(Base::Unknown), false);
        }
    }

    /// An `update` record's entry is (now) a directory or a file. Only folded
    /// changes change the type without a delete in between; the record then
    /// moves to the end of the log (kept moves before it may rely on the old
    /// entry), a file loses whatever was pending below it, and a directory
    /// where the target may hold an old one becomes a `rescan`.
    fn retype(&mut self, entry: Entry, path: &[u8], dir: bool) {
        if entry.dir == dir {
            return;
        }
        if !dir {
            self.swallow_below(path);
        }
        self.replace(entry.slot(), path, dir);
    }

    /// The new path of a kept move changed again: its `update` after the
    /// rename re-reads it anyway. Only folded changes turn it into another
    /// type; then the rename is no use.
    fn moved_entry_changed(&mut self, entry: Entry, path: &[u8], dir: bool) {
        if entry.dir != dir {
            self.degrade_move(path);
            self.append(path, dir, Op::Update(Base::Unknown));
        }
    }

    fn delete(&mut self, path: &[u8], dir: bool) {
        if path == ROOT {
            // Deletes never propagate from a missing root: sync it instead.
            return self.rescan_all();
        }
        let found = self.kind(path);
        if self.covered_at(path, found) {
            // A rescan of the path itself, nothing above: say what happened.
            if found.is_some_and(|e| e.kind == Kind::Rescan) && !self.covered_above(path) {
                self.requeue(path, true, Op::Delete, true);
            }
            return;
        }
        // Nothing is pending below a file. (Were a directory reported as a
        // file, records left below it would still run before its delete.)
        if dir || found.is_some_and(|e| e.dir) {
            self.swallow_below(path);
        }
        // Swallowing only drops records below `path`: `found` still holds.
        let Some(e) = found else {
            return self.append(path, dir, Op::Delete);
        };
        match e.kind {
            // Even a path created inside the window is deleted: a recursive
            // copy that ran meanwhile (an earlier batch's rescan, a full
            // sync) may have put it on the target.
            Kind::Update(_) => {
                let old = self.rec(e.slot());
                let stale = old.stale || old.dir || dir;
                self.requeue(path, dir, Op::Delete, stale);
            }
            Kind::Delete => {
                let rec = self.rec_mut(e.slot());
                rec.dir |= dir;
                rec.stale |= dir;
                self.index.get_mut(path).expect("found above").dir |= dir;
            }
            Kind::Move => {
                // The rename may have overwritten an old entry at `path` (a
                // file, or an empty directory), which the target still holds
                // once the move is gone.
                self.degrade_move(path);
                self.append(path, dir, Op::Delete);
            }
            Kind::Rescan => {}
        }
    }

    fn rescan(&mut self, path: &[u8], dir: bool) {
        if path == ROOT {
            // Everything is re-read: no other record is needed, not even a
            // kept move (the full sync fixes whatever the target holds).
            *self = Fold::new();
            self.append(ROOT, true, Op::Rescan);
            return;
        }
        if self.covered(path) {
            return;
        }
        self.swallow_below(path);
        match self.kind(path).map(|e| e.kind) {
            None => self.append(path, dir, Op::Rescan),
            Some(Kind::Move) => {
                self.degrade_move(path);
                self.append(path, dir, Op::Rescan);
            }
            Some(_) => self.requeue(path, dir, Op::Rescan, false),
        }
    }

    /// `to`'s old entry (if any) is replaced by a file with other content.
    fn overwrite_file(&mut self, to: &[u8]) {
        if self.covered(to) {
            return;
        }
        // Whatever was below an old directory at `to` is gone.
        self.swallow_below(to);
        let Some(e) = self.kind(to) else {
            return self.append(to, false, Op::Update(Base::Unknown));
        };
        match e.kind {
            // The record re-reads `to` where it stands; what the target holds
            // before it (its base) has not changed.
            Kind::Update(_) => self.retype(e, to, false),
            Kind::Delete => self.replace(e.slot(), to, false),
            Kind::Move => {
                self.degrade_move(to);
                self.append(to, false, Op::Update(Base::Unknown));
            }
            Kind::Rescan => {}
        }
    }

    fn rename(&mut self, from: &[u8], to: &[u8], dir: bool) {
        if from == to {
            return self.update(to, dir, Base::Unknown);
        }
        if from == ROOT || to == ROOT || is_below(to, from) {
            // Not something a file system does; sync everything rather than guess.
            return self.rescan_all();
        }
        if is_below(from, to) {
            // A directory moved over one of its ancestors: only `to` changed.
            return self.rescan(to, true);
        }
        let from_covered = self.covered(from);
        let to_covered = self.covered(to);
        if !from_covered && !to_covered && self.can_keep(from, to) {
            return self.keep_move(from, to, dir);
        }
        // Degrade: the old path is gone, the new one holds new content.
        if !from_covered {
            self.delete(from, dir);
        }
        if !to_covered {
            if dir {
                self.rescan(to, true);
            } else {
                self.overwrite_file(to);
            }
        }
    }

    fn can_keep(&mut self, from: &[u8], to: &[u8]) -> bool {
        match self.kind(from).map(|e| e.kind) {
            None | Some(Kind::Update(Base::Present)) => {}
            Some(_) => return false,
        }
        if self.index.contains_key(to) || self.has_below(to) {
            return false;
        }
        if self.moves > 0
            && self
                .below(from)
                .iter()
                .any(|&(_, slot)| matches!(self.rec(slot).op, Op::Move { .. }))
        {
            return false;
        }
        // Above the old path: no kept move (it could be degraded later, and
        // this rename needs its contents) and nothing deleted. Above the new
        // path: nothing deleted (the rename needs the parent). Something new
        // above the old path would have made the old path new too.
        let bad_above_from = |e: &Entry| matches!(e.kind, Kind::Move | Kind::Delete);
        let bad_above_to = |e: &Entry| e.kind == Kind::Delete;
        !self.ancestors_have(from, bad_above_from) && !self.ancestors_have(to, bad_above_to)
    }

    fn keep_move(&mut self, from: &[u8], to: &[u8], dir: bool) {
        // A file is re-read after the rename, a directory rescanned: what was
        // pending at or below the old path is covered by that.
        self.unindex(from);
        if dir {
            for (key, _) in self.below(from) {
                self.unindex(&key);
            }
        }
        self.append(
            to,
            dir,
            Op::Move {
                from: from.to_vec(),
            },
        );
    }

    // ---- helpers over the log and the index ----

    /// Drops every record below `path` (its subtree is re-read or deleted as a
    /// whole); a kept move into it turns into a delete of its old path.
    fn swallow_below(&mut self, path: &[u8]) {
        for (key, _) in self.below(path) {
            if self.entry(&key).kind == Kind::Move {
                self.degrade_move(&key);
            } else {
                self.unindex(&key);
            }
        }
    }

    /// Turns the kept move whose destination is `to` into a delete of its old
    /// path, in place (so it still runs before anything that relied on the
    /// old path being vacated).
    fn degrade_move(&mut self, to: &[u8]) {
        let entry = self.index.remove(to).expect("caller saw the record");
        let slot = entry.slot();
        self.forget_key(to);
        self.moves -= 1;
        if entry.dir {
            self.coverers.remove(to);
        }
        let rec = self.log[slot].as_mut().expect("indexed slots are live");
        let Op::Move { from, .. } = std::mem::replace(&mut rec.op, Op::Delete) else {
            unreachable!("caller saw a move")
        };
        rec.path = Key::from_vec(from);
        rec.stale = rec.dir;
        self.sealed += 1;
    }

    /// Removes the record that speaks for `path`, returning it.
    fn unindex(&mut self, path: &[u8]) -> Option<Rec> {
        let slot = self.index.remove(path)?.slot();
        self.forget_key(path);
        let rec = self.log[slot].take().expect("indexed slots are live");
        self.live -= 1;
        self.count(&rec.op, rec.dir, false, &rec.path);
        Some(rec)
    }

    /// Appends a record for `path`, assuming what the target may hold from
    /// the kind of record: nothing for a new entry, the old entry otherwise.
    /// (A target ahead may hold a new entry already, but whatever it holds
    /// below it was made inside the window too, so it has records of its
    /// own, deletes included: `stale` is only about contents nothing else
    /// in the log would remove.)
    fn append(&mut self, path: &[u8], dir: bool, op: Op) {
        let stale = match op {
            Op::Update(Base::Absent) | Op::Rescan => false,
            Op::Update(Base::Present) | Op::Delete => dir,
            Op::Update(Base::Unknown) | Op::Move { .. } => true,
        };
        self.append_stale(path, dir, op, stale)
    }

    fn append_stale(&mut self, path: &[u8], dir: bool, op: Op, stale: bool) {
        self.maybe_compact();
        let slot = self.push_rec(path, dir, op, stale);
        let kind = self.rec(slot).op.kind();
        let old = self.index.insert(path, Entry::new(slot, kind, dir));
        debug_assert!(old.is_none(), "append over a live record");
        self.note_key(path);
    }

    /// Keeps `keys` (when built) and `under` in step with a path just indexed.
    fn note_key(&mut self, path: &[u8]) {
        if let Some(keys) = &mut self.keys {
            keys.insert(Key::from_slice(path));
        }
        for dir in parents(path) {
            match self.under.get_mut(dir) {
                Some(n) => *n += 1,
                None => {
                    self.under.insert(Key::from_slice(dir), 1);
                }
            }
        }
    }

    /// Keeps `keys` (when built) and `under` in step with a path just unindexed.
    fn forget_key(&mut self, path: &[u8]) {
        if let Some(keys) = &mut self.keys {
            keys.remove(path);
        }
        for dir in parents(path) {
            let n = self.under.get_mut(dir).expect("counted when indexed");
            *n -= 1;
            if *n == 0 {
                self.under.remove(dir);
            }
        }
    }

    /// Replaces the record that speaks for `path` with a new one at the end
    /// of the log (same index entry, so no key is copied).
    fn requeue(&mut self, path: &[u8], dir: bool, op: Op, stale: bool) {
        self.maybe_compact();
        let slot = self.entry(path).slot();
        let old = self.log[slot].take().expect("indexed slots are live");
        self.live -= 1;
        self.count(&old.op, old.dir, false, path);
        let kind = op.kind();
        // The old record's path is this path: keep its bytes.
        debug_assert_eq!(&old.path[..], path);
        let new = self.push_rec_owned(old.path, dir, op, stale);
        *self.index.get_mut(path).expect("looked up above") = Entry::new(new, kind, dir);
    }

    fn push_rec(&mut self, path: &[u8], dir: bool, op: Op, stale: bool) -> usize {
        self.push_rec_owned(Key::from_slice(path), dir, op, stale)
    }

    fn push_rec_owned(&mut self, path: Key, dir: bool, op: Op, stale: bool) -> usize {
        self.count(&op, dir, true, &path);
        if self.log.len() == self.log.capacity() {
            // Grown by hand to keep huge pages (see `with_huge_pages`):
            // deletes and requeues read records all over the log.
            let mut grown = with_huge_pages(self.log.capacity().max(512) * 2);
            grown.append(&mut self.log);
            self.log = grown;
        }
        self.log.push(Some(Rec {
            path,
            dir,
            op,
            stale,
        }));
        self.live += 1;
        self.log.len() - 1
    }

    /// Drops superseded slots so the log grows with pending paths, not events.
    fn maybe_compact(&mut self) {
        if self.log.len() < 1024 || self.log.len() < 2 * self.live {
            return;
        }
        let log = std::mem::take(&mut self.log);
        let mut new_slot = vec![usize::MAX; log.len()];
        self.log = with_huge_pages(self.live * 2);
        for (old, rec) in log.into_iter().enumerate() {
            if let Some(rec) = rec {
                new_slot[old] = self.log.len();
                self.log.push(Some(rec));
            }
        }
        for entry in self.index.values_mut() {
            *entry = Entry::new(new_slot[entry.slot()], entry.kind, entry.dir);
        }
    }

    /// Keeps `coverers` and `moves` in step with a record of `path` that
    /// speaks for it from now on (`add`) or no longer does.
    fn count(&mut self, op: &Op, dir: bool, add: bool, path: &[u8]) {
        let (covers, moves) = match op {
            Op::Rescan => (true, 0),
            Op::Move { .. } => (dir, 1),
            _ => return,
        };
        if add {
            if covers {
                self.coverers.insert(Key::from_slice(path));
            }
            self.moves += moves;
        } else {
            if covers {
                self.coverers.remove(path);
            }
            self.moves -= moves;
        }
    }

    fn rec(&self, slot: usize) -> &Rec {
        self.log[slot].as_ref().expect("indexed slots are live")
    }

    fn rec_mut(&mut self, slot: usize) -> &mut Rec {
        self.log[slot].as_mut().expect("indexed slots are live")
    }

    /// What the index knows of the record that speaks for `path`.
    fn kind(&self, path: &[u8]) -> Option<Entry> {
        self.index.get(path)
    }

    /// The entry of a path known to be indexed.
    fn entry(&self, path: &[u8]) -> Entry {
        self.index.get(path).expect("the path is indexed")
    }

    /// True when `path` or a directory above it has a pending `rescan` or a
    /// kept move of a directory (also rescanned): anything that happens there
    /// is re-read anyway.
    fn covered(&self, path: &[u8]) -> bool {
        !self.coverers.is_empty() && self.covered_at(path, self.kind(path))
    }

    /// [`covered`](Self::covered) when the caller has looked `path` up already.
    fn covered_at(&self, path: &[u8], found: Option<Entry>) -> bool {
        !self.coverers.is_empty()
            && (found.as_ref().is_some_and(covers) || self.covered_above(path))
    }

    /// True when a strict ancestor of `path` (the root included) has a
    /// covering record: asked of the small set of those, not of the index
    /// (a miss in the big table per parent, for every event, once one rescan
    /// was pending).
    fn covered_above(&self, path: &[u8]) -> bool {
        path != ROOT
            && (self.coverers.contains(ROOT) || parents(path).any(|p| self.coverers.contains(p)))
    }

    /// True when a strict ancestor of `path` (the root included) has a record
    /// whose op satisfies `pred`.
    fn ancestors_have(&self, path: &[u8], pred: impl Fn(&Entry) -> bool) -> bool {
        if path == ROOT {
            return false;
        }
        let hit = |key: &[u8]| self.index.get(key).is_some_and(|e| pred(&e));
        hit(ROOT) || parents(path).any(hit)
    }

    /// True when an indexed record lies strictly below `path`.
    fn has_below(&self, path: &[u8]) -> bool {
        if path == ROOT {
            self.index.len() > usize::from(self.index.contains_key(ROOT))
        } else {
            self.under.contains_key(path)
        }
    }

    /// Indexed records strictly below `path` (in byte order).
    fn below(&mut self, path: &[u8]) -> Vec<(Key, usize)> {
        use std::ops::Bound;
        if !self.has_below(path) {
            return Vec::new();
        }
        let keys = self
            .keys
            .get_or_insert_with(|| self.index.iter().map(|(k, _)| Key::from_slice(k)).collect());
        let range = if path == ROOT {
            (Bound::Unbounded, Bound::Unbounded)
        } else {
            let mut lo = Key::from_slice(path);
            lo.push(b'/');
            let mut hi = Key::from_slice(path);
            hi.push(b'/' + 1);
            (Bound::Included(lo), Bound::Excluded(hi))
        };
        keys.range::<Key, _>(range)
            .filter(|key| key.as_slice() != ROOT)
            .map(|key| {
                let entry = self.index.get(key).expect("the path is indexed");
                (key.clone(), entry.slot())
            })
            .collect()
    }
}

/// A record that makes everything at and below its path re-read.
fn covers(e: &Entry) -> bool {
    e.kind == Kind::Rescan || (e.kind == Kind::Move && e.dir)
}

/// The directories above `path` as its prefixes, nearest last (`a`, `a/b`
/// for `a/b/c`); the root is not among them.
fn parents(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    path.iter()
        .enumerate()
        .filter(|&(_, &b)| b == b'/')
        .map(move |(i, _)| &path[..i])
}

/// True when `path` lies strictly below `dir`.
fn is_below(path: &[u8], dir: &[u8]) -> bool {
    if dir == ROOT {
        return path != ROOT;
    }
    path.len() > dir.len() && path.starts_with(dir) && path[dir.len()] == b'/'
}

/// The stream's spelling of a path: `""` and `"./"` mean the root, and a
/// trailing `/` is dropped, so one entry never has two keys.
fn normal(path: &[u8]) -> &[u8] {
    let mut p = path;
    while p.len() > 1 && p.ends_with(b"/") {
        p = &p[..p.len() - 1];
    }
    while let Some(rest) = p.strip_prefix(b"./") {
        p = rest;
    }
    if p.is_empty() || p == b"/" {
        ROOT
    } else {
        p
    }
}

#[cfg(test)]
mod model;
#[cfg(test)]
mod tests;
