//! The model check of the fold. The model is a tree of files and
//! directories; random operations on it produce the events a watcher would
//! write, and applying the folded changes to the starting tree (the way a
//! consumer does, re-reading the source for every `update` and `rescan`) must
//! give the final tree, as applying the raw events one by one does.
//!
//! The target is not only the starting tree: it may be *ahead* of the fold's
//! start (see [`Ahead`]): subtrees copied at later moments by a recursive
//! copy, a first batch applied while the source keeps changing, a batch that
//! failed midway and is folded again with what came since. The old fold
//! (which dropped `create … delete` and the old name of a new file's rename)
//! fails these checks.
//!
//! Shrunk failures are kept in `tests/proptest-regressions/fold/model.txt`,
//! and as unit tests at the end of this file and in `tests.rs`.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::tests::show;
use super::*;
use crate::wire::event::EventKind::{Attrib, Create, Delete, Modify, Rescan};
use crate::wire::event::{Record, Timestamp};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Node {
    /// A file and its content version.
    File(u32),
    /// A directory and its attribute version.
    Dir(u32),
}

/// Every entry of a tree by path (the root is implied).
type Tree = BTreeMap<Vec<u8>, Node>;

fn parent_of(p: &[u8]) -> &[u8] {
    match p.iter().rposition(|&b| b == b'/') {
        Some(i) => &p[..i],
        None => ROOT,
    }
}

fn has_dir(t: &Tree, p: &[u8]) -> bool {
    p == ROOT || matches!(t.get(p), Some(Node::Dir(_)))
}

fn subtree(t: &Tree, p: &[u8]) -> Vec<Vec<u8>> {
    t.keys()
        .filter(|k| k.as_slice() == p || is_below(k, p))
        .cloned()
        .collect()
}

fn remove_subtree(t: &mut Tree, p: &[u8]) {
    for k in subtree(t, p) {
        t.remove(&k);
    }
}

fn rebase(k: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut n = to.to_vec();
    n.extend_from_slice(&k[from.len()..]);
    n
}

/// Applies one change to `replica` the way a consumer does, reading `source`
/// (the source as it is when the change is applied).
fn apply(replica: &mut Tree, source: &Tree, c: &Change) -> Result<(), String> {
    let p = normal(c.path.as_bytes()).to_vec();
    let need_parent = |replica: &Tree| {
        if has_dir(replica, parent_of(&p)) {
            Ok(())
        } else {
            Err(format!("{c:?}: parent missing on the target"))
        }
    };
    match c.op {
        ChangeOp::Update => match source.get(&p) {
            None => remove_subtree(replica, &p),
            Some(&Node::File(v)) => {
                need_parent(replica)?;
                remove_subtree(replica, &p);
                replica.insert(p, Node::File(v));
            }
            Some(&Node::Dir(v)) => {
                need_parent(replica)?;
                if !matches!(replica.get(&p), Some(Node::Dir(_))) {
                    remove_subtree(replica, &p);
                }
                replica.insert(p, Node::Dir(v));
            }
        },
        ChangeOp::Delete => remove_subtree(replica, &p),
        ChangeOp::Rescan if p == ROOT => *replica = source.clone(),
        ChangeOp::Rescan => {
            if source.contains_key(&p) {
                need_parent(replica)?;
            }
            remove_subtree(replica, &p);
            for k in subtree(source, &p) {
                replica.insert(k.clone(), source[&k]);
            }
        }
        ChangeOp::Move => {
            let from = c
                .from
                .as_ref()
                .ok_or("move without from")?
                .as_bytes()
                .to_vec();
            let Some(&node) = replica.get(&from) else {
                return Err(format!("{c:?}: nothing to rename on the target"));
            };
            // A consumer renames only what the change says moved: a file's
            // rename finding a directory (a target ahead of the source)
            // would carry its contents to a path the fold knows as a file.
            if matches!(node, Node::Dir(_)) != c.dir {
                return Err(format!("{c:?}: another type on the target"));
            }
            need_parent(replica)?;
            match (node, replica.get(&p)) {
                (_, None) | (Node::File(_), Some(Node::File(_))) => {}
                (Node::Dir(_), Some(Node::Dir(_))) if subtree(replica, &p).len() == 1 => {}
                (_, Some(_)) => return Err(format!("{c:?}: rename refused on the target")),
            }
            remove_subtree(replica, &p);
            for k in subtree(replica, &from) {
                let node = replica.remove(&k).unwrap();
                replica.insert(rebase(&k, &from, &p), node);
            }
        }
    }
    Ok(())
}

fn apply_all(start: &Tree, source: &Tree, changes: &[Change]) -> Result<Tree, String> {
    let mut t = start.clone();
    for c in changes {
        apply(&mut t, source, c)?;
    }
    Ok(t)
}

/// As a consumer does when a rename fails (the list is applied late and the
/// source has moved on, or the target is ahead of the fold's start): delete
/// the old path, re-read the new one (plan.rs re-checks both names).
fn apply_all_late(start: &Tree, source: &Tree, changes: &[Change]) -> Result<Tree, String> {
    apply_late_reading(start, changes, |_| source)
}

/// [`apply_all_late`] with each change reading the source as `source(i)`
/// gives it: a list applied while the source keeps changing.
fn apply_late_reading<'a>(
    start: &Tree,
    changes: &[Change],
    source: impl Fn(usize) -> &'a Tree,
) -> Result<Tree, String> {
    let mut t = start.clone();
    for (i, c) in changes.iter().enumerate() {
        let source = source(i);
        make_parents(&mut t, source, c);
        if c.op == ChangeOp::Move && apply(&mut t, source, c).is_err() {
            let from = c.from.clone().ok_or("move without from")?;
            let delete = Change {
                op: ChangeOp::Delete,
                path: from,
                dir: c.dir,
                from: None,
            };
            let reread = Change {
                op: if c.dir {
                    ChangeOp::Rescan
                } else {
                    ChangeOp::Update
                },
                from: None,
                ..c.clone()
            };
            apply(&mut t, source, &delete)?;
            apply(&mut t, source, &reread)?;
        } else if c.op != ChangeOp::Move {
            apply(&mut t, source, c)?;
        }
    }
    Ok(t)
}

/// How the real target may differ from the source at the fold's start: it
/// is never behind (the previous batch re-read every path it named), but it
/// can be *ahead*. A recursive copy (the rescan of a directory made or moved
/// in, a full sync) that ran while the source kept changing holds a later
/// state of a subtree, a path the source only creates later included; and
/// the walk is not atomic, so sibling subtrees can come from different
/// moments. Each capture copies the subtree at a picked path as the source
/// had it after a picked number of events.
#[derive(Clone, Debug)]
struct Ahead {
    /// (path pick, moment pick): applied in order.
    captures: Vec<(usize, usize)>,
    /// How far the source moves on between the changes of the first batch
    /// while it is applied (pushd applies a batch while the next window
    /// fills): added up, one per change.
    lags: Vec<usize>,
    /// How many changes of the first batch were applied before the transfer
    /// failed (pushd then folds them again with what came since).
    applied: usize,
}

fn ahead() -> impl Strategy<Value = Ahead> {
    (
        prop::collection::vec((any::<usize>(), any::<usize>()), 0..4),
        prop::collection::vec(0..4usize, 0..8),
        any::<usize>(),
    )
        .prop_map(|(captures, lags, applied)| Ahead {
            captures,
            lags,
            applied,
        })
}

/// The source after `i` events (0: at the fold's start).
fn moment<'a>(start: &'a Tree, src: &'a Source, i: usize) -> &'a Tree {
    if i == 0 {
        start
    } else {
        &src.states[i.min(src.states.len()) - 1]
    }
}

/// The target at the fold's start: `start` with the captures of `ahead`
/// copied over it (a capture whose parent the target lacks is skipped: a
/// recursive copy needs it).
fn ahead_target(start: &Tree, src: &Source, ahead: &Ahead) -> Tree {
    let mut paths: Vec<&Vec<u8>> = start
        .keys()
        .chain(src.states.iter().flat_map(|s| s.keys()))
        .collect();
    paths.sort();
    paths.dedup();
    let mut t = start.clone();
    let n = src.states.len();
    for &(p, m) in &ahead.captures {
        let state = moment(start, src, m % (n + 1));
        let path = if paths.is_empty() || p % (paths.len() + 1) == 0 {
            ROOT.to_vec()
        } else {
            paths[p % (paths.len() + 1) - 1].clone()
        };
        let rescan = Change {
            op: ChangeOp::Rescan,
            path: WirePath::from_bytes(path),
            dir: true,
            from: None,
        };
        let _ = apply(&mut t, state, &rescan);
    }
    t
}

/// When change `i` of the first batch reads the source: never before the
/// split at `k`, later and later as the source moves on.
fn read_moment(k: usize, n: usize, lags: &[usize], i: usize) -> usize {
    (k + lags.iter().take(i + 1).sum::<usize>()).min(n)
}

/// rsync's implied directories: a listed path the source holds gets its
/// parents on the target first (a target ahead of the fold's start may lack
/// a directory the source deleted later). For a rename, the consumer makes
/// the new parent (`mkdir -p`).
fn make_parents(t: &mut Tree, source: &Tree, c: &Change) {
    let p = normal(c.path.as_bytes());
    if p == ROOT || !source.contains_key(p) {
        return;
    }
    let mut ends: Vec<usize> = p
        .iter()
        .enumerate()
        .filter(|&(_, &b)| b == b'/')
        .map(|(i, _)| i)
        .collect();
    ends.sort();
    for i in ends {
        let dir = &p[..i];
        if !matches!(t.get(dir), Some(Node::Dir(_))) {
            remove_subtree(t, dir);
            let node = source.get(dir).copied().unwrap_or(Node::Dir(0));
            t.insert(dir.to_vec(), node);
        }
    }
}

/// One thing done to the source tree. Indices pick among existing entries.
#[derive(Clone, Debug)]
enum Action {
    CreateFile(usize, u8),
    Mkdir(usize, u8),
    Write(usize),
    Attrib(usize),
    /// `rm -r`: children deleted before their directory, one event each.
    Remove(usize),
    /// Moved out of the tree: one `delete`, nothing for what was below.
    MoveOut(usize),
    Rename(usize, usize, u8),
    /// A watcher that reports a new entry twice.
    CreateTwice(usize, u8),
    /// The next actions are not seen; then a `rescan` of the root.
    Overflow(Vec<Action>),
    /// A rescan of a directory after an unseen write below it.
    RescanDir(usize),
}

const NAMES: [&[u8]; 4] = [b"a", b"b", b"c d", b"\xff"];

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        30 => leaf_action(),
        1 => prop::collection::vec(leaf_action(), 1..4).prop_map(Action::Overflow),
    ]
}

fn leaf_action() -> impl Strategy<Value = Action> {
    prop_oneof![
        4 => (any::<usize>(), 0..4u8).prop_map(|(i, n)| Action::CreateFile(i, n)),
        3 => (any::<usize>(), 0..4u8).prop_map(|(i, n)| Action::Mkdir(i, n)),
        3 => any::<usize>().prop_map(Action::Write),
        1 => any::<usize>().prop_map(Action::Attrib),
        3 => any::<usize>().prop_map(Action::Remove),
        1 => any::<usize>().prop_map(Action::MoveOut),
        12 => (any::<usize>(), any::<usize>(), 0..4u8).prop_map(|(a, b, n)| Action::Rename(a, b, n)),
        1 => (any::<usize>(), 0..4u8).prop_map(|(i, n)| Action::CreateTwice(i, n)),
        1 => any::<usize>().prop_map(Action::RescanDir),
    ]
}

/// The source as it changes, and the events a watcher writes about it,
/// with the source's state after each event.
struct Source {
    tree: Tree,
    version: u32,
    events: Vec<Event>,
    states: Vec<Tree>,
    /// Event indices that must not start a batch (the second of a pair of
    /// creates for one entry: watchd only doubles a create in one burst).
    glued: Vec<usize>,
    silent: bool,
}

impl Source {
    fn emit(&mut self, kind: EventKind, path: &[u8], dir: bool, from: Option<&[u8]>) {
        if self.silent {
            return;
        }
        self.events.push(Event {
            seq: self.events.len() as u64 + 1,
            ts: Timestamp("t".into()),
            kind,
            path: WirePath::from_bytes(path),
            dir,
            from: from.map(WirePath::from_bytes),
        });
        self.states.push(self.tree.clone());
    }

    fn pick(&self, i: usize, want: impl Fn(&Node) -> bool) -> Option<Vec<u8>> {
        let all: Vec<&Vec<u8>> = self
            .tree
            .iter()
            .filter(|(_, n)| want(n))
            .map(|(k, _)| k)
            .collect();
        (!all.is_empty()).then(|| all[i % all.len()].clone())
    }

    fn pick_dir(&self, i: usize) -> Vec<u8> {
        let mut dirs: Vec<Vec<u8>> = vec![ROOT.to_vec()];
        dirs.extend(
            self.tree
                .iter()
                .filter(|(k, n)| {
                    matches!(n, Node::Dir(_)) && k.iter().filter(|&&b| b == b'/').count() < 2
                })
                .map(|(k, _)| k.clone()),
        );
        dirs[i % dirs.len()].clone()
    }

    fn bump(&mut self) -> u32 {
        self.version += 1;
        self.version
    }

    fn new_path(&self, dir: usize, name: u8) -> Option<Vec<u8>> {
        let p = WirePath::from_bytes(self.pick_dir(dir)).join(NAMES[name as usize]);
        let p = p.into_bytes();
        (!self.tree.contains_key(&p)).then_some(p)
    }

    fn run(&mut self, a: &Action) {
        match a {
            Action::CreateFile(d, n) | Action::CreateTwice(d, n) => {
                let Some(p) = self.new_path(*d, *n) else {
                    return;
                };
                let v = self.bump();
                self.tree.insert(p.clone(), Node::File(v));
                self.emit(Create, &p, false, None);
                if matches!(a, Action::CreateTwice(..)) && !self.silent {
                    self.glued.push(self.events.len());
                    self.emit(Create, &p, false, None);
                }
            }
            Action::Mkdir(d, n) => {
                let Some(p) = self.new_path(*d, *n) else {
                    return;
                };
                let v = self.bump();
                self.tree.insert(p.clone(), Node::Dir(v));
                self.emit(Create, &p, true, None);
            }
            Action::Write(i) => {
                let Some(p) = self.pick(*i, |n| matches!(n, Node::File(_))) else {
                    return;
                };
                let v = self.bump();
                self.tree.insert(p.clone(), Node::File(v));
                self.emit(Modify, &p, false, None);
            }
            Action::Attrib(i) => {
                let Some(p) = self.pick(*i, |_| true) else {
                    return;
                };
                let v = self.bump();
                let node = match self.tree[&p] {
                    Node::File(_) => Node::File(v),
                    Node::Dir(_) => Node::Dir(v),
                };
                self.tree.insert(p.clone(), node);
                self.emit(Attrib, &p, matches!(node, Node::Dir(_)), None);
            }
            Action::Remove(i) => {
                let Some(p) = self.pick(*i, |_| true) else {
                    return;
                };
                // Post-order: deepest first, as `rm -r` unlinks.
                let mut all = subtree(&self.tree, &p);
                all.sort_by_key(|k| std::cmp::Reverse(k.iter().filter(|&&b| b == b'/').count()));
                for k in all {
                    let dir = matches!(self.tree.remove(&k), Some(Node::Dir(_)));
                    self.emit(Delete, &k, dir, None);
                }
            }
            Action::MoveOut(i) => {
                let Some(p) = self.pick(*i, |_| true) else {
                    return;
                };
                let dir = matches!(self.tree[&p], Node::Dir(_));
                remove_subtree(&mut self.tree, &p);
                self.emit(Delete, &p, dir, None);
            }
            Action::Rename(i, d, n) => {
                let Some(from) = self.pick(*i, |_| true) else {
                    return;
                };
                let to = WirePath::from_bytes(self.pick_dir(*d))
                    .join(NAMES[*n as usize])
                    .into_bytes();
                if to == from || is_below(&to, &from) {
                    return;
                }
                let node = self.tree[&from];
                let ok = match (node, self.tree.get(&to)) {
                    (_, None) | (Node::File(_), Some(Node::File(_))) => true,
                    (Node::Dir(_), Some(Node::Dir(_))) => subtree(&self.tree, &to).len() == 1,
                    _ => false,
                };
                if !ok {
                    return;
                }
                remove_subtree(&mut self.tree, &to);
                for k in subtree(&self.tree, &from) {
                    let node = self.tree.remove(&k).unwrap();
                    self.tree.insert(rebase(&k, &from, &to), node);
                }
                self.emit(
                    EventKind::Move,
                    &to,
                    matches!(node, Node::Dir(_)),
                    Some(&from),
                );
            }
            Action::Overflow(actions) => {
                let was = self.silent;
                self.silent = true;
                for a in actions {
                    self.run(a);
                }
                self.silent = was;
                self.emit(Rescan, ROOT, true, None);
            }
            Action::RescanDir(i) => {
                let Some(d) = self.pick(*i, |n| matches!(n, Node::Dir(_))) else {
                    return;
                };
                // An unseen change below `d`, then the rescan that covers it.
                let p = WirePath::from_bytes(d.clone()).join(NAMES[2]).into_bytes();
                let v = self.bump();
                let node = match self.tree.get(&p) {
                    Some(Node::Dir(_)) => Node::Dir(v),
                    _ => Node::File(v),
                };
                self.tree.insert(p, node);
                self.emit(Rescan, &d, true, None);
            }
        }
    }
}

fn scenario(setup: &[Action], actions: &[Action]) -> (Tree, Source) {
    let mut src = Source {
        tree: Tree::new(),
        version: 0,
        events: Vec::new(),
        states: Vec::new(),
        glued: Vec::new(),
        silent: true,
    };
    for a in setup {
        src.run(a);
    }
    let start = src.tree.clone();
    src.silent = false;
    for a in actions {
        src.run(a);
    }
    (start, src)
}

fn raw_change(e: &Event) -> Change {
    let op = match e.kind {
        Create | Modify | Attrib => ChangeOp::Update,
        Delete => ChangeOp::Delete,
        EventKind::Move => ChangeOp::Move,
        _ => ChangeOp::Rescan,
    };
    Change {
        op,
        path: e.path.clone(),
        dir: e.dir,
        from: e.from.clone(),
    }
}

fn fold_events(events: &[Event]) -> Vec<Change> {
    let mut f = Fold::new();
    for e in events {
        f.push_event(e);
    }
    f.take()
}

/// The whole property: raw events applied one by one, the folded batch, two
/// batches applied one after the other, and two batches folded together all
/// bring the starting tree to the final one.
fn check(setup: &[Action], actions: &[Action], split: usize, ahead: &Ahead) -> Result<(), String> {
    let (start, src) = scenario(setup, actions);
    let n = src.events.len();
    let mut k = if n == 0 { 0 } else { split % (n + 1) };
    while src.glued.contains(&k) {
        k += 1;
    }
    let folded = fold_events(&src.events);
    let first = fold_events(&src.events[..k]);
    let second = fold_events(&src.events[k..]);
    let mut pending = Fold::new();
    for c in first.iter().chain(&second) {
        pending.push(c.clone());
    }
    let merged = pending.take();
    if std::env::var_os("FOLD_STATS").is_some() {
        let moves = folded.iter().filter(|c| c.op == ChangeOp::Move).count();
        let raw_moves = src
            .events
            .iter()
            .filter(|e| e.kind == EventKind::Move)
            .count();
        eprintln!(
            "STATS events={n} changes={} raw_moves={raw_moves} kept_moves={moves}",
            folded.len()
        );
    }
    let batches = Batches {
        folded: &folded,
        first: &first,
        second: &second,
        merged: &merged,
    };
    check_trees(&start, &src, k, &batches)
        .and_then(|()| check_ahead(&start, &src, k, &batches, ahead))
        .map_err(|e| {
        let events: Vec<String> = src
            .events
            .iter()
            .map(|e| Record::Event(e.clone()).to_line())
            .collect();
        format!(
            "{e}\nstart {start:?}\nevents {events:#?}\nfolded {:?}\nsplit at {k}: {:?} + {:?}\nmerged {:?}",
            show(&folded),
            show(&first),
            show(&second),
            show(&merged)
        )
    })
}

/// The lists one scenario gives: the whole window folded, the window split
/// at `k` into two batches, and the two batches folded together again.
struct Batches<'a> {
    folded: &'a [Change],
    first: &'a [Change],
    second: &'a [Change],
    merged: &'a [Change],
}

fn same(fin: &Tree, what: &str, got: Result<Tree, String>) -> Result<(), String> {
    match got {
        Ok(t) if &t == fin => Ok(()),
        Ok(t) => Err(format!("{what} gives {t:?}\nnot {fin:?}")),
        Err(e) => Err(format!("{what}: {e}")),
    }
}

/// A target in step with the source at the fold's start: every list brings
/// it to the final tree, and every kept rename finds what it renames.
fn check_trees(start: &Tree, src: &Source, k: usize, b: &Batches) -> Result<(), String> {
    let Batches {
        folded,
        first,
        second,
        merged,
    } = *b;
    let fin = &src.tree;
    let mut raw = start.clone();
    for (e, state) in src.events.iter().zip(&src.states) {
        apply(&mut raw, state, &raw_change(e)).map_err(|e| format!("raw: {e}"))?;
    }
    if &raw != fin {
        return Err(format!("raw events do not give the final tree: {raw:?}"));
    }
    let same = |what: &str, got| same(fin, what, got);
    same("the folded batch", apply_all(start, fin, folded))?;
    let mid = if k == 0 { start } else { &src.states[k - 1] };
    same(
        "two batches",
        apply_all(start, mid, first).and_then(|t| apply_all(&t, fin, second)),
    )?;
    same("two batches folded together", apply_all(start, fin, merged))?;
    same(
        "two batches applied late",
        apply_all_late(start, fin, first).and_then(|t| apply_all_late(&t, fin, second)),
    )
}

/// A target *ahead* of the fold's start (see [`Ahead`]): renames may then
/// fail (the consumer sends the data instead), but every list still brings
/// it to the final tree. This is what catches a fold that drops a delete
/// because it believes the target never saw a path.
fn check_ahead(
    start: &Tree,
    src: &Source,
    k: usize,
    b: &Batches,
    ahead: &Ahead,
) -> Result<(), String> {
    let fin = &src.tree;
    let n = src.states.len();
    let target = ahead_target(start, src, ahead);
    let ctx = |what: &str| format!("{what} (target ahead at the start: {target:?})");
    same(
        fin,
        &ctx("the folded batch"),
        apply_all_late(&target, fin, b.folded),
    )?;
    let reads = |i| moment(start, src, read_moment(k, n, &ahead.lags, i));
    same(
        fin,
        &ctx("two batches, the first applied while the source moves on"),
        apply_late_reading(&target, b.first, reads).and_then(|t| apply_all_late(&t, fin, b.second)),
    )?;
    let done = ahead.applied % (b.first.len() + 1);
    same(
        fin,
        &ctx(&format!(
            "two batches folded together after {done} changes of the first were applied"
        )),
        apply_late_reading(&target, &b.first[..done], reads)
            .and_then(|t| apply_all_late(&t, fin, b.merged)),
    )
}

proptest! {
    #![proptest_config(crate::testconfig::proptest(std::env::var("FOLD_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000)))]

    #[test]
    fn folding_keeps_the_tree(
        setup in prop::collection::vec(leaf_action(), 0..40),
        actions in prop::collection::vec(action(), 1..25),
        split in any::<usize>(),
        ahead in ahead(),
    ) {
        if let Err(e) = check(&setup, &actions, split, &ahead) {
            return Err(TestCaseError::fail(e));
        }
    }
}

/// The fold's own bookkeeping agrees with itself: every index entry points at
/// a live record with the same path, kind and type; counters match.
fn assert_consistent(f: &Fold) {
    let live = f.log.iter().flatten().count();
    assert_eq!(live, f.len(), "live count");
    if let Some(keys) = &f.keys {
        assert_eq!(f.index.len(), keys.len(), "index and key set");
    }
    let mut under: std::collections::HashMap<Vec<u8>, u32> = Default::default();
    let (mut covers, mut moves) = (std::collections::HashSet::new(), 0);
    for (key, e) in f.index.iter() {
        if let Some(keys) = &f.keys {
            assert!(keys.contains(key), "key set misses {key:?}");
        }
        for dir in super::parents(key) {
            *under.entry(dir.to_vec()).or_default() += 1;
        }
        let rec = f.log[e.slot()]
            .as_ref()
            .expect("index points at a live record");
        assert_eq!(&rec.path[..], key);
        assert_eq!(rec.op.kind(), e.kind);
        assert_eq!(rec.dir, e.dir);
        if e.kind == Kind::Rescan || (e.kind == Kind::Move && e.dir) {
            covers.insert(key.to_vec());
        }
        moves += usize::from(e.kind == Kind::Move);
    }
    let coverers = f.coverers.iter().map(|k| k.to_vec()).collect();
    assert_eq!((covers, moves), (coverers, f.moves), "counters");
    let counted: std::collections::HashMap<Vec<u8>, u32> =
        f.under.iter().map(|(k, n)| (k.to_vec(), *n)).collect();
    assert_eq!(under, counted, "counts below directories");
}

/// Any input at all, consistent or not, events or changes: no panic, and the
/// bookkeeping holds after every step.
fn any_input() -> impl Strategy<Value = (bool, u8, u8, u8, bool)> {
    (any::<bool>(), 0..8u8, 0..12u8, 0..12u8, any::<bool>())
}

const ANY_PATHS: [&str; 12] = [
    ".", "a", "b", "a/a", "a/b", "b/a", "a/a/a", "c", "a/", "", "./a", "b/a/a",
];

proptest! {
    #![proptest_config(crate::testconfig::proptest(1000))]

    #[test]
    fn any_input_keeps_the_fold_consistent(inputs in prop::collection::vec(any_input(), 1..60)) {
        let mut f = Fold::new();
        for (as_change, kind, p, q, dir) in inputs {
            let path = WirePath::from(ANY_PATHS[p as usize]);
            let from = Some(WirePath::from(ANY_PATHS[q as usize]));
            if as_change {
                let op = [ChangeOp::Update, ChangeOp::Delete, ChangeOp::Move, ChangeOp::Rescan][kind as usize % 4];
                let from = if op == ChangeOp::Move { from } else { None };
                f.push(Change { op, path, dir, from });
            } else {
                let kind = [Create, Modify, Attrib, Delete, EventKind::Move, Rescan, EventKind::Other("x".into()), EventKind::Move][kind as usize].clone();
                let from = if kind == EventKind::Move && q < 11 { from } else { None };
                f.push_event(&Event { seq: 0, ts: Timestamp("t".into()), kind, path, dir, from });
            }
            assert_consistent(&f);
        }
        let n = f.len();
        let out = f.take();
        prop_assert!(out.len() <= 2 * n);
        prop_assert!(f.is_empty());
    }
}

// ---- regressions found by the checks of a target ahead (shrunk) ----

fn no_ahead() -> Ahead {
    Ahead {
        captures: Vec::new(),
        lags: Vec::new(),
        applied: 0,
    }
}

#[test]
fn regression_made_and_gone_is_deleted_on_a_target_that_copied_it() {
    // A full copy of the root made after the first create put `a` on the
    // target; the old fold folded the rest into nothing.
    let actions = [
        Action::CreateFile(0, 0),
        Action::Remove(0),
        Action::CreateFile(0, 0),
        Action::Remove(0),
    ];
    let ahead = Ahead {
        captures: vec![(0, 1)],
        ..no_ahead()
    };
    check(&[], &actions, 0, &ahead).unwrap();
}

#[test]
fn regression_a_new_file_renamed_away_is_deleted_on_a_target_that_copied_it() {
    // `c d` made, then renamed to `\xff`: a copy of the root taken while
    // `c d` existed holds it; the old fold sent only `update \xff`.
    let actions = [Action::CreateFile(0, 2), Action::Rename(0, 0, 3)];
    let ahead = Ahead {
        captures: vec![(0, 1)],
        ..no_ahead()
    };
    check(&[], &actions, 0, &ahead).unwrap();
}

#[test]
fn regression_issue_10_a_file_captured_by_the_previous_batchs_rescan() {
    // Batch 1: `a` made, then rescanned. While batch 1 is applied, `a/b` is
    // made: the rescan copies it. Batch 2 (its create, then a rename of it
    // out of `a`) must delete its old path, or the copy stays forever.
    let actions = [
        Action::Mkdir(0, 0),
        Action::RescanDir(0),
        Action::CreateFile(1, 1),
        Action::Rename(1, 0, 3),
    ];
    // Split after the rescan; the first batch reads the source one event
    // later, after the create.
    let ahead = Ahead {
        lags: vec![1],
        ..no_ahead()
    };
    let (_, src) = scenario(&[], &actions);
    let last = src.events.last().unwrap();
    assert_eq!(
        (last.from.as_ref().unwrap().as_bytes(), last.path.as_bytes()),
        (&b"a/b"[..], &b"\xff"[..])
    );
    check(&[], &actions, 2, &ahead).unwrap();
}

#[test]
fn regression_a_file_rename_never_carries_a_directory_the_target_holds() {
    // Found by PROPTEST_SOAK: `c d` is a file at the start and is renamed to
    // `b`, then `b` to `a`; later `c d` and `c d/a` are made as directories.
    // A target that copied those directories (ahead) and applied the first
    // batch's `move c d>b` as a plain rename carried `c d/a` to `b/a`; the
    // merged retry knew `b` only as a file and left `b/a` there forever.
    // A rename of a file must refuse a directory (the data is sent instead).
    let setup = [Action::CreateTwice(0, 0), Action::Rename(0, 0, 2)];
    let actions = [
        Action::CreateFile(0, 0),
        Action::Rename(691823803911207103, 0, 1),
        Action::Rename(2218801392519506879, 0, 0),
        Action::Mkdir(0, 2),
        Action::Mkdir(4089186473703692426, 1),
        Action::Write(0),
        Action::Mkdir(4180652829639472289, 0),
        Action::Mkdir(3114784180477110849, 1),
        Action::Rename(2397017233526462929, 11195651724464548942, 0),
    ];
    let ahead = Ahead {
        captures: vec![
            (1775700151910641983, 12449556327580102007),
            (616478510921409872, 0),
        ],
        lags: vec![3],
        applied: 1783451281090255994,
    };
    check(&setup, &actions, 2382287286227622022, &ahead).unwrap();
}
