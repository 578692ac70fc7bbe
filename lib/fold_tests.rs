//! Tests of the fold: the rules one by one, then a model check. The model is
//! a tree of files and directories; random operations on it produce the
//! events a watcher would write, and applying the folded changes to the
//! starting tree (the way a consumer does, re-reading the source for every
//! `update` and `rescan`) must give the final tree.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::event::{Record, Timestamp};

fn ev(kind: EventKind, path: &str, dir: bool) -> Event {
    Event {
        seq: 0,
        ts: Timestamp("t".into()),
        kind,
        path: path.into(),
        dir,
        from: None,
    }
}

fn mv(from: &str, to: &str, dir: bool) -> Event {
    Event {
        from: Some(from.into()),
        ..ev(EventKind::Move, to, dir)
    }
}

/// The folded list, one `op path` (or `move from>path`) per change.
fn fold(events: &[Event]) -> Vec<String> {
    let mut f = Fold::new();
    for e in events {
        f.push_event(e);
    }
    show(&f.take())
}

fn show(changes: &[Change]) -> Vec<String> {
    changes
        .iter()
        .map(|c| {
            let op = serde_json::to_value(c.op).unwrap();
            match &c.from {
                Some(from) => format!("{} {}>{}", op.as_str().unwrap(), from, c.path),
                None => format!("{} {}", op.as_str().unwrap(), c.path),
            }
        })
        .collect()
}

use EventKind::{Attrib, Create, Delete, Modify, Rescan};

#[test]
fn repeated_modifies_fold_into_one_update() {
    let e = ev(Modify, "a", false);
    assert_eq!(
        fold(&[e.clone(), e.clone(), ev(Attrib, "a", false), e]),
        ["update a"]
    );
}

#[test]
fn create_then_delete_is_nothing() {
    assert_eq!(
        fold(&[
            ev(Create, "a", false),
            ev(Modify, "a", false),
            ev(Delete, "a", false)
        ]),
        Vec::<String>::new()
    );
}

#[test]
fn delete_then_create_is_an_update() {
    assert_eq!(
        fold(&[ev(Delete, "a", false), ev(Create, "a", false)]),
        ["update a"]
    );
}

#[test]
fn a_directory_deleted_and_made_again_loses_its_old_contents() {
    // The old directory may still hold entries on the target.
    assert_eq!(
        fold(&[
            ev(Delete, "d", true),
            ev(Create, "d", true),
            ev(Create, "d/x", false)
        ]),
        ["rescan d"]
    );
}

#[test]
fn a_deleted_directory_swallows_changes_below_it() {
    assert_eq!(
        fold(&[
            ev(Modify, "d/x", false),
            ev(Create, "d/e", true),
            ev(Create, "d/e/f", false),
            ev(Delete, "d/e/f", false),
            ev(Delete, "d/e", true),
            ev(Delete, "d/x", false),
            ev(Delete, "d", true),
            ev(Modify, "dx", false),
        ]),
        ["delete d", "update dx"]
    );
}

#[test]
fn directories_come_before_their_children_on_create() {
    assert_eq!(
        fold(&[
            ev(Create, "a", true),
            ev(Create, "a/b", true),
            ev(Create, "a/b/f", false),
            ev(Attrib, "a", true),
            ev(Modify, "a/b/f", false),
        ]),
        ["update a", "update a/b", "update a/b/f"]
    );
}

#[test]
fn a_move_of_an_old_entry_is_kept_and_changes_below_follow_it() {
    assert_eq!(
        fold(&[
            ev(Modify, "d/x", false),
            ev(Delete, "d/y", false),
            mv("d", "e", true),
            ev(Modify, "e/z", false),
        ]),
        ["move d>e", "update e/x", "delete e/y", "update e/z"]
    );
}

#[test]
fn a_move_of_a_modified_file_is_kept_then_updated() {
    assert_eq!(
        fold(&[ev(Modify, "a", false), mv("a", "b", false)]),
        ["move a>b", "update b"]
    );
}

#[test]
fn a_move_of_a_new_entry_becomes_an_update() {
    // The editor pattern: write a temporary file, rename it over the real one.
    assert_eq!(
        fold(&[
            ev(Create, ".f.swp", false),
            ev(Modify, ".f.swp", false),
            mv(".f.swp", "f", false),
        ]),
        ["update f"]
    );
}

#[test]
fn a_move_of_a_new_directory_becomes_a_rescan() {
    assert_eq!(
        fold(&[
            ev(Create, "n", true),
            ev(Create, "n/f", false),
            mv("n", "m", true),
        ]),
        ["rescan m"]
    );
}

#[test]
fn a_move_onto_a_pending_path_degrades() {
    assert_eq!(
        fold(&[ev(Modify, "b", false), mv("a", "b", false)]),
        ["update b", "delete a"]
    );
}

#[test]
fn a_kept_move_whose_destination_is_deleted_becomes_a_delete_in_place() {
    assert_eq!(
        fold(&[
            mv("a", "b", false),
            ev(Create, "c", false),
            ev(Delete, "b", false)
        ]),
        ["delete a", "update c", "delete b"]
    );
}

#[test]
fn chained_moves_degrade_to_deletes_and_an_update() {
    assert_eq!(
        fold(&[mv("a", "b", false), mv("b", "c", false)]),
        ["delete a", "delete b", "update c"]
    );
}

#[test]
fn a_rescan_swallows_below_and_a_root_rescan_everything() {
    assert_eq!(
        fold(&[
            ev(Modify, "d/x", false),
            ev(Rescan, "d", true),
            ev(Modify, "d/y", false),
            ev(Modify, "e", false),
        ]),
        ["rescan d", "update e"]
    );
    assert_eq!(
        fold(&[
            mv("a", "b", false),
            ev(Rescan, ".", true),
            ev(Modify, "e", false)
        ]),
        ["rescan ."]
    );
}

#[test]
fn unknown_kinds_are_rescans() {
    assert_eq!(
        fold(&[ev(EventKind::Other("xattr".into()), "a", false)]),
        ["rescan a"]
    );
}

#[test]
fn rescan_all_marks_a_full_rescan() {
    let mut f = Fold::new();
    f.push_event(&ev(Modify, "a", false));
    assert!(!f.is_full_rescan());
    f.rescan_all();
    assert!(f.is_full_rescan());
    assert_eq!(f.len(), 1);
    assert_eq!(show(&f.take()), ["rescan ."]);
    assert!(f.is_empty());
}

#[test]
fn memory_follows_paths_not_events() {
    let mut f = Fold::new();
    for round in 0..50 {
        for i in 0..100 {
            let path = format!("d{}/f{i}", i % 7);
            let kind = match round % 3 {
                0 => Create,
                1 => Modify,
                _ => Delete,
            };
            f.push_event(&ev(kind, &path, false));
        }
    }
    assert!(f.len() <= 100, "{}", f.len());
    assert!(f.log.len() <= 2 * 1024, "{}", f.log.len());
}

#[test]
fn paths_that_are_not_utf8_survive() {
    let mut f = Fold::new();
    let mut e = ev(Modify, "x", false);
    e.path = WirePath::from_bytes(b"a\xffb\n".to_vec());
    f.push_event(&e);
    let out = f.take();
    assert_eq!(out[0].path.as_bytes(), b"a\xffb\n");
}

// ---- the model ----

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
fn check(setup: &[Action], actions: &[Action], split: usize) -> Result<(), String> {
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
    check_trees(&start, &src, k, &folded, &first, &second, &merged).map_err(|e| {
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

fn check_trees(
    start: &Tree,
    src: &Source,
    k: usize,
    folded: &[Change],
    first: &[Change],
    second: &[Change],
    merged: &[Change],
) -> Result<(), String> {
    let fin = &src.tree;
    let mut raw = start.clone();
    for (e, state) in src.events.iter().zip(&src.states) {
        apply(&mut raw, state, &raw_change(e)).map_err(|e| format!("raw: {e}"))?;
    }
    if &raw != fin {
        return Err(format!("raw events do not give the final tree: {raw:?}"));
    }
    let same = |what: &str, got: Result<Tree, String>| match got {
        Ok(t) if &t == fin => Ok(()),
        Ok(t) => Err(format!("{what} gives {t:?}\nnot {fin:?}")),
        Err(e) => Err(format!("{what}: {e}")),
    };
    same("the folded batch", apply_all(start, fin, folded))?;
    let mid = if k == 0 { start } else { &src.states[k - 1] };
    same(
        "two batches",
        apply_all(start, mid, first).and_then(|t| apply_all(&t, fin, second)),
    )?;
    same("two batches folded together", apply_all(start, fin, merged))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: std::env::var("FOLD_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000), ..ProptestConfig::default() })]

    #[test]
    fn folding_keeps_the_tree(
        setup in prop::collection::vec(leaf_action(), 0..40),
        actions in prop::collection::vec(action(), 1..25),
        split in any::<usize>(),
    ) {
        if let Err(e) = check(&setup, &actions, split) {
            return Err(TestCaseError::fail(e));
        }
    }
}

// ---- regressions found by the model check (shrunk by proptest) ----

#[test]
fn regression_a_directory_replaced_by_a_file_and_then_a_directory_is_rescanned() {
    // The target still holds the first directory and its contents.
    assert_eq!(
        fold(&[
            ev(Delete, "d/x", true),
            ev(Delete, "d", true),
            ev(Create, "d", false),
            ev(Delete, "d", false),
            ev(Create, "d", true),
        ]),
        ["rescan d"]
    );
}

#[test]
fn regression_a_delete_change_says_dir_when_the_target_may_hold_one() {
    let mut f = Fold::new();
    for e in [
        ev(Delete, "a", true),
        ev(Create, "a", false),
        ev(Delete, "a", false),
    ] {
        f.push_event(&e);
    }
    let first = f.take();
    assert_eq!(show(&first), ["delete a"]);
    assert!(first[0].dir, "the target may hold the old directory");
    // Folded with a later batch that makes a directory there again.
    let mut pending = Fold::new();
    for c in first {
        pending.push(c);
    }
    pending.push(Change {
        op: ChangeOp::Update,
        path: "a".into(),
        dir: true,
        from: None,
    });
    assert_eq!(show(&pending.take()), ["rescan a"]);
}

#[test]
fn regression_a_folded_type_change_drops_kept_moves_below() {
    let change = |op, path: &str, dir, from: Option<&str>| Change {
        op,
        path: path.into(),
        dir,
        from: from.map(WirePath::from),
    };
    let mut pending = Fold::new();
    pending.push(change(ChangeOp::Update, "b", true, None));
    pending.push(change(ChangeOp::Move, "b/b", false, Some("a/x")));
    pending.push(change(ChangeOp::Update, "b", false, None));
    // `b` is a file by the end: the rename into it could not run.
    assert_eq!(show(&pending.take()), ["delete a/x", "update b"]);
}

#[test]
fn an_inconsistent_stream_cannot_grow_memory_past_its_paths() {
    // Renames out of a path that is then "modified" without being created:
    // no file system writes this, but the fold must stay bounded.
    let mut f = Fold::new();
    for i in 0..20_000 {
        f.push_event(&mv("a", &format!("t{}", i % 2), false));
        f.push_event(&ev(Delete, &format!("t{}", i % 2), false));
        f.push_event(&ev(Modify, "a", false));
    }
    assert!(f.len() < 4096 + 16, "{}", f.len());
}
