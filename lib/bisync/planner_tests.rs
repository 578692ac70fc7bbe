//! Planner tests: the rules one by one, then a model of two file trees on
//! which proptest runs random operation sequences between syncs.

use super::*;
use crate::bisync::entry::Hash;
use proptest::prelude::*;
use std::time::{Duration, UNIX_EPOCH};

/// One node of a model tree. A file's `content` is a unique version id.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Node {
    File {
        content: u64,
        mode: u32,
        mtime: i64,
        ino: u64,
    },
    Dir {
        mode: u32,
        ino: u64,
    },
    Link {
        content: u64,
        ino: u64,
    },
}

/// A replica as a map from path to node, with its own inode counter.
#[derive(Clone, Debug, Default)]
struct Tree {
    nodes: BTreeMap<WirePath, Node>,
    next_ino: u64,
}

fn wp(s: &str) -> WirePath {
    WirePath::from(s)
}

impl Tree {
    fn ino(&mut self) -> u64 {
        self.next_ino += 1;
        self.next_ino
    }

    fn parent_ok(&self, p: &WirePath) -> bool {
        match p.parent() {
            Some(d) if d.is_root() => true,
            Some(d) => matches!(self.nodes.get(&d), Some(Node::Dir { .. })),
            None => false,
        }
    }

    fn entry(node: &Node) -> Entry {
        match *node {
            Node::File {
                content,
                mode,
                mtime,
                ino,
            } => Entry {
                kind: Kind::File,
                size: content % 3,
                mtime,
                mode,
                ino,
                ..Entry::dir(0)
            },
            Node::Dir { mode, ino } => Entry {
                ino,
                ..Entry::dir(mode)
            },
            Node::Link { content, ino } => Entry {
                kind: Kind::Symlink,
                target: Some(Box::new(WirePath::from(format!("t{content}").as_str()))),
                ino,
                ..Entry::dir(0)
            },
        }
    }

    fn scan(&self) -> Scan {
        self.nodes
            .iter()
            .map(|(p, n)| (p.clone(), Tree::entry(n)))
            .collect()
    }

    fn content(&self, p: &WirePath) -> Option<u64> {
        match self.nodes.get(p) {
            Some(Node::File { content, .. } | Node::Link { content, .. }) => Some(*content),
            _ => None,
        }
    }

    fn hash(&self, p: &WirePath) -> Option<Hash> {
        match self.nodes.get(p) {
            Some(Node::File { content, .. }) => Some(Hash::of(&content.to_le_bytes())),
            _ => None,
        }
    }

    fn remove_tree(&mut self, p: &WirePath) {
        self.nodes.retain(|q, _| !q.starts_with(p));
    }

    /// Asserts the node at `p` is what the plan expects to find there.
    fn check(&self, side: Side, p: &WirePath, expect: Option<&Entry>) {
        let cur = self.nodes.get(p).map(Tree::entry);
        let same = match (&cur, expect) {
            (None, None) => true,
            (Some(c), Some(e)) => {
                c.kind == e.kind
                    && c.size == e.size
                    && c.mtime == e.mtime
                    && c.mode == e.mode
                    && c.target == e.target
                    && (c.kind == Kind::Dir || c.ino == e.ino)
            }
            _ => false,
        };
        assert!(
            same,
            "side {side} path {p}: expected {expect:?}, found {cur:?}"
        );
    }
}

/// Carries out a plan on the two model trees, checking every expectation;
/// returns the entries written, as the real executor does.
fn execute(plan: &Plan, trees: &mut [Tree; 2]) -> HashMap<(Side, WirePath), Entry> {
    let mut written = HashMap::new();
    for action in &plan.actions {
        let (s, o) = (action.side as usize, action.side.other() as usize);
        let p = &action.path;
        match &action.op {
            Op::ConflictRename { to, expect } | Op::Rename { to, expect } => {
                trees[s].check(action.side, p, Some(expect));
                trees[s].check(action.side, to, None);
                assert!(trees[s].parent_ok(to), "rename target parent {to}");
                let node = trees[s].nodes.remove(p).unwrap();
                assert!(!matches!(node, Node::Dir { .. }));
                written.insert((action.side, to.clone()), Tree::entry(&node));
                trees[s].nodes.insert(to.clone(), node);
            }
            Op::Remove { expect } => {
                trees[s].check(action.side, p, Some(expect));
                trees[s].nodes.remove(p);
            }
            Op::Rmdir { expect } => {
                trees[s].check(action.side, p, Some(expect));
                let children = trees[s]
                    .nodes
                    .keys()
                    .filter(|q| q.starts_with(p) && *q != p)
                    .count();
                assert_eq!(children, 0, "rmdir of non-empty {p} on {}", action.side);
                trees[s].nodes.remove(p);
            }
            Op::Mkdir { entry } => {
                trees[s].check(action.side, p, None);
                assert!(trees[s].parent_ok(p), "mkdir parent {p}");
                let ino = trees[s].ino();
                let node = Node::Dir {
                    mode: entry.mode,
                    ino,
                };
                written.insert((action.side, p.clone()), Tree::entry(&node));
                trees[s].nodes.insert(p.clone(), node);
            }
            Op::Copy { src, expect } => {
                trees[o].check(action.side.other(), p, Some(src));
                trees[s].check(action.side, p, expect.as_ref());
                assert!(trees[s].parent_ok(p), "copy parent {p}");
                let ino = trees[s].ino();
                let node = match trees[o].nodes[p].clone() {
                    Node::File {
                        content,
                        mode,
                        mtime,
                        ..
                    } => Node::File {
                        content,
                        mode,
                        mtime,
                        ino,
                    },
                    Node::Link { content, .. } => Node::Link { content, ino },
                    Node::Dir { .. } => panic!("copy of a directory {p}"),
                };
                written.insert((action.side, p.clone()), Tree::entry(&node));
                trees[s].nodes.insert(p.clone(), node);
            }
            Op::SetMeta { src, expect } => {
                trees[s].check(action.side, p, Some(expect));
                match trees[s].nodes.get_mut(p).unwrap() {
                    Node::File { mode, mtime, .. } => {
                        *mode = src.mode;
                        *mtime = src.mtime;
                    }
                    Node::Dir { mode, .. } => *mode = src.mode,
                    Node::Link { .. } => {}
                }
                let e = Tree::entry(&trees[s].nodes[p]);
                written.insert((action.side, p.clone()), e);
            }
        }
    }
    written
}

fn policy(prefer: Prefer) -> Policy {
    Policy {
        prefer,
        max_delete: MaxDelete::Count(u64::MAX),
        owners: false,
        hosts: ["ha".into(), "hb".into()],
        now: UNIX_EPOCH + Duration::from_secs(1_795_000_000),
        size_only: false,
        sentinel: None,
        // The model touches many files per round; the guard has its own
        // tests.
        force: true,
    }
}

/// One whole sync on the model, as the driver does it: scan, hash where
/// needed, plan, execute, next archive.
fn sync(trees: &mut [Tree; 2], archive: Option<&Archive>, pol: &Policy) -> (Plan, Archive) {
    let (mut a, mut b) = (trees[0].scan(), trees[1].scan());
    for p in needs_hash(archive, &a, &b, pol.owners) {
        a.get_mut(&p).unwrap().hash = trees[0].hash(&p);
        b.get_mut(&p).unwrap().hash = trees[1].hash(&p);
    }
    let plan = plan(archive, &a, &b, pol).expect("no guard trips in the model");
    let written = execute(&plan, trees);
    let (next, changed) = next_archive(archive.cloned(), &a, &b, &plan, &written, &BTreeSet::new());
    assert_eq!(
        changed,
        archive != Some(&next),
        "next_archive says whether it changed anything"
    );
    (plan, next)
}

/// The replicas' visible state, without inode numbers.
fn visible(t: &Tree) -> BTreeMap<WirePath, (Kind, Option<u64>, u32, i64)> {
    t.nodes
        .iter()
        .map(|(p, n)| {
            let e = Tree::entry(n);
            (p.clone(), (e.kind, t.content(p), e.mode, e.mtime))
        })
        .collect()
}

// ---- the rules, one by one ----

fn file(t: &mut Tree, p: &str, content: u64, mtime: i64) {
    let ino = t.ino();
    t.nodes.insert(
        wp(p),
        Node::File {
            content,
            mode: 0o644,
            mtime,
            ino,
        },
    );
}

fn dir(t: &mut Tree, p: &str) {
    let ino = t.ino();
    t.nodes.insert(wp(p), Node::Dir { mode: 0o755, ino });
}

fn synced_pair(build: impl Fn(&mut Tree)) -> ([Tree; 2], Archive) {
    let mut trees = [Tree::default(), Tree::default()];
    build(&mut trees[0]);
    trees[1].next_ino = 1000;
    let (_, ar) = sync(&mut trees, None, &policy(Prefer::Keep));
    assert_eq!(visible(&trees[0]), visible(&trees[1]));
    (trees, ar)
}

fn first_sync_pair() -> [Tree; 2] {
    let mut trees = [Tree::default(), Tree::default()];
    file(&mut trees[0], "x", 1, 10);
    dir(&mut trees[0], "d");
    file(&mut trees[0], "d/f", 2, 10);
    file(&mut trees[1], "y", 3, 10);
    // Size 1 on a (older), size 2 on b (newer).
    file(&mut trees[0], "both", 4, 10);
    file(&mut trees[1], "both", 5, 20);
    trees
}

#[test]
fn first_sync_copies_both_ways_and_keeps_both_on_difference() {
    let mut trees = first_sync_pair();
    let (plan, ar) = sync(&mut trees, None, &policy(Prefer::Keep));
    assert!(plan.first_sync);
    assert!(plan.actions.iter().all(|a| !a.op.is_delete()));
    assert_eq!(plan.conflicts.len(), 1);
    let c = &plan.conflicts[0];
    assert_eq!(c.winner, Side::B, "newer wins the name");
    assert_eq!(
        c.copy.as_ref().unwrap(),
        &wp("both.conflict-ha-20261118T110640Z")
    );
    assert_eq!(visible(&trees[0]), visible(&trees[1]));
    assert_eq!(trees[0].content(&wp("both")), Some(5));
    assert_eq!(trees[1].content(c.copy.as_ref().unwrap()), Some(4));
    assert_eq!(ar.len(), 6);
}

/// A first sync honours --prefer (rclone's --resync-mode): the preferred
/// version replaces the other, no conflict copy; still nothing is deleted.
#[test]
fn first_sync_honours_every_preference() {
    for (prefer, winner, content) in [
        (Prefer::A, Side::A, 4),
        (Prefer::B, Side::B, 5),
        (Prefer::Newer, Side::B, 5),
        (Prefer::Older, Side::A, 4),
        (Prefer::Larger, Side::B, 5),
        (Prefer::Smaller, Side::A, 4),
    ] {
        let mut trees = first_sync_pair();
        let (plan, ar) = sync(&mut trees, None, &policy(prefer));
        assert!(plan.actions.iter().all(|a| !a.op.is_delete()), "{prefer:?}");
        assert_eq!(plan.conflicts.len(), 1);
        assert_eq!(plan.conflicts[0].winner, winner, "{prefer:?}");
        assert_eq!(plan.conflicts[0].copy, None, "{prefer:?}");
        assert_eq!(visible(&trees[0]), visible(&trees[1]));
        for t in &trees {
            assert_eq!(t.content(&wp("both")), Some(content), "{prefer:?}");
            assert_eq!(t.content(&wp("x")), Some(1));
            assert_eq!(t.content(&wp("y")), Some(3));
        }
        assert_eq!(ar.len(), 5);
    }
}

/// Every file on one side touched (new mtimes, same content) is refused
/// with its own reason; --force goes ahead; below the size or share
/// thresholds nothing trips.
#[test]
fn all_changed_guard_refuses_until_forced() {
    let n = MASS_CHANGE_MIN_FILES;
    let (mut trees, ar) = synced_pair(|t| {
        for i in 0..n {
            file(t, &format!("f{i}"), i, 10);
        }
    });
    for node in trees[1].nodes.values_mut() {
        if let Node::File { mtime, .. } = node {
            *mtime = 99;
        }
    }
    let guarded = Policy {
        force: false,
        ..policy(Prefer::Keep)
    };
    let (a, b) = (trees[0].scan(), trees[1].scan());
    assert_eq!(
        plan(Some(&ar), &a, &b, &guarded).unwrap_err(),
        Refusal::AllChanged {
            side: Side::B,
            changed: n,
            tracked: n
        }
    );
    let forced = Policy {
        force: true,
        ..guarded.clone()
    };
    assert_eq!(
        plan(Some(&ar), &a, &b, &forced).unwrap().actions.len(),
        n as usize
    );
    // --size-only does not trust times: a touch is no change at all.
    let sizes = Policy {
        size_only: true,
        ..guarded.clone()
    };
    assert!(plan(Some(&ar), &a, &b, &sizes).unwrap().actions.is_empty());
    // One file in ten left alone is still 90%; two is below, and goes
    // through.
    let mut b2 = b.clone();
    for (k, f) in ["f0", "f1"].into_iter().enumerate() {
        b2.insert(wp(f), ar[&wp(f)].b.clone());
        if k == 0 {
            assert!(plan(Some(&ar), &a, &b2, &guarded).is_err());
        }
    }
    assert!(plan(Some(&ar), &a, &b2, &guarded).is_ok());
    // A small tree (fewer than MASS_CHANGE_MIN_FILES) is never refused.
    let (mut small, ar) = synced_pair(|t| {
        file(t, "one", 1, 10);
        file(t, "two", 2, 10);
    });
    for node in small[0].nodes.values_mut() {
        if let Node::File { mtime, .. } = node {
            *mtime = 99;
        }
    }
    assert!(plan(Some(&ar), &small[0].scan(), &small[1].scan(), &guarded).is_ok());
}

#[test]
fn sentinel_must_exist_on_both_sides() {
    let (trees, ar) = synced_pair(|t| {
        file(t, ".mounted", 1, 10);
        file(t, "data", 2, 10);
    });
    let (a, mut b) = (trees[0].scan(), trees[1].scan());
    let pol = Policy {
        sentinel: Some(wp(".mounted")),
        ..policy(Prefer::Keep)
    };
    assert!(plan(Some(&ar), &a, &b, &pol).is_ok());
    b.remove(&wp(".mounted"));
    assert_eq!(
        plan(Some(&ar), &a, &b, &pol).unwrap_err(),
        Refusal::NoSentinel {
            side: Side::B,
            path: wp(".mounted")
        }
    );
    // A first sync checks it too.
    assert!(matches!(
        plan(None, &a, &b, &pol),
        Err(Refusal::NoSentinel { side: Side::B, .. })
    ));
}

/// --size-only: a new mtime with the same size is no change; a new size is
/// one, and propagates with its mtime.
#[test]
fn size_only_ignores_times() {
    let (mut trees, ar) = synced_pair(|t| {
        file(t, "same", 1, 10);
        file(t, "grown", 2, 10);
    });
    let pol = Policy {
        size_only: true,
        ..policy(Prefer::Keep)
    };
    if let Some(Node::File { mtime, ino, .. }) = trees[0].nodes.get_mut(&wp("same")) {
        *mtime = 50;
        *ino = 777;
    }
    // 2 % 3 = 2 -> 4 % 3 = 1: a new size.
    if let Some(Node::File { content, mtime, .. }) = trees[1].nodes.get_mut(&wp("grown")) {
        *content = 4;
        *mtime = 60;
    }
    let (plan, _) = sync(&mut trees, Some(&ar), &pol);
    assert_eq!(plan.actions.len(), 1, "{:#?}", plan.actions);
    assert_eq!(plan.actions[0].path, wp("grown"));
    assert_eq!(plan.actions[0].side, Side::A);
    assert_eq!(trees[0].content(&wp("grown")), Some(4));
    assert_eq!(trees[1].content(&wp("same")), Some(1));
}

#[test]
fn one_sided_changes_propagate_and_renames_stay_renames() {
    let (mut trees, ar) = synced_pair(|t| {
        dir(t, "d");
        file(t, "d/f", 1, 10);
        file(t, "g", 2, 10);
        file(t, "h", 3, 10);
    });
    let node = trees[0].nodes.remove(&wp("d/f")).unwrap();
    trees[0].nodes.insert(wp("moved"), node);
    trees[1].nodes.remove(&wp("g"));
    if let Some(Node::File { content, mtime, .. }) = trees[0].nodes.get_mut(&wp("h")) {
        *content = 9;
        *mtime = 11;
    }
    let (plan, ar2) = sync(&mut trees, Some(&ar), &policy(Prefer::Keep));
    let ops: Vec<(Side, &str, String)> = plan
        .actions
        .iter()
        .map(|a| (a.side, a.op.name(), a.path.to_string()))
        .collect();
    assert_eq!(
        ops,
        [
            (Side::A, "remove", "g".to_string()),
            (Side::B, "rename", "d/f".to_string()),
            (Side::B, "copy", "h".to_string()),
        ]
    );
    assert!(plan.conflicts.is_empty());
    assert_eq!(visible(&trees[0]), visible(&trees[1]));
    assert!(!trees[1].nodes.contains_key(&wp("g")));
    // A second run has nothing to do.
    let (again, _) = sync(&mut trees, Some(&ar2), &policy(Prefer::Keep));
    assert!(again.actions.is_empty(), "{:?}", again.actions);
}

#[test]
fn modify_beats_delete_and_a_deleted_directory_keeps_new_files() {
    let (mut trees, ar) = synced_pair(|t| {
        file(t, "f", 1, 10);
        dir(t, "d");
        file(t, "d/old", 2, 10);
        file(t, "keep", 3, 10);
    });
    trees[0].nodes.remove(&wp("f"));
    if let Some(Node::File { content, mtime, .. }) = trees[1].nodes.get_mut(&wp("f")) {
        *content = 7;
        *mtime = 30;
    }
    trees[1].remove_tree(&wp("d"));
    file(&mut trees[0], "d/new", 8, 30);
    let (plan, _) = sync(&mut trees, Some(&ar), &policy(Prefer::Keep));
    assert!(plan.conflicts.is_empty());
    assert_eq!(visible(&trees[0]), visible(&trees[1]));
    assert_eq!(trees[0].content(&wp("f")), Some(7));
    assert_eq!(trees[1].content(&wp("d/new")), Some(8));
    assert!(!trees[0].nodes.contains_key(&wp("d/old")));
}

#[test]
fn same_change_on_both_sides_is_no_conflict() {
    let (mut trees, ar) = synced_pair(|t| file(t, "f", 1, 10));
    for t in trees.iter_mut() {
        if let Some(Node::File { content, mtime, .. }) = t.nodes.get_mut(&wp("f")) {
            *content = 4;
            *mtime = 50;
        }
    }
    let (plan, _) = sync(&mut trees, Some(&ar), &policy(Prefer::Keep));
    assert!(plan.actions.is_empty() && plan.conflicts.is_empty());
}

#[test]
fn prefer_replaces_the_loser_and_a_directory_never_loses() {
    for (prefer, content) in [
        (Prefer::A, 5),
        (Prefer::B, 6),
        (Prefer::Newer, 6),
        (Prefer::Older, 5),
    ] {
        let (mut trees, ar) = synced_pair(|t| file(t, "f", 1, 10));
        trees[0].nodes.insert(
            wp("f"),
            Node::File {
                content: 5,
                mode: 0o644,
                mtime: 20,
                ino: 77,
            },
        );
        trees[1].nodes.insert(
            wp("f"),
            Node::File {
                content: 6,
                mode: 0o644,
                mtime: 30,
                ino: 78,
            },
        );
        let (plan, _) = sync(&mut trees, Some(&ar), &policy(prefer));
        assert_eq!(plan.conflicts.len(), 1);
        assert_eq!(plan.conflicts[0].copy, None);
        assert_eq!(trees[0].content(&wp("f")), Some(content), "{prefer:?}");
        assert_eq!(visible(&trees[0]), visible(&trees[1]));
    }
    let (mut trees, ar) = synced_pair(|t| file(t, "f", 1, 10));
    trees[0].nodes.remove(&wp("f"));
    dir(&mut trees[0], "f");
    file(&mut trees[0], "f/x", 3, 10);
    if let Some(Node::File { content, mtime, .. }) = trees[1].nodes.get_mut(&wp("f")) {
        *content = 4;
        *mtime = 50;
    }
    let (plan, _) = sync(&mut trees, Some(&ar), &policy(Prefer::B));
    assert_eq!(plan.conflicts[0].winner, Side::A);
    assert!(plan.conflicts[0].copy.is_some());
    assert_eq!(visible(&trees[0]), visible(&trees[1]));
}

#[test]
fn guards_stop_the_run() {
    let (trees, ar) = synced_pair(|t| {
        for i in 0..4 {
            file(t, &format!("f{i}"), i, 10);
        }
    });
    let (a, mut b) = (trees[0].scan(), trees[1].scan());
    let pol = policy(Prefer::Keep);
    assert_eq!(
        plan(Some(&ar), &a, &Scan::new(), &pol).unwrap_err(),
        Refusal::Emptied(Side::B, 4)
    );
    // No archive: an empty side is a plain first sync.
    assert!(plan(None, &a, &Scan::new(), &pol).is_ok());
    b.remove(&wp("f0"));
    b.remove(&wp("f1"));
    b.remove(&wp("f2"));
    let strict = Policy {
        max_delete: MaxDelete::default(),
        ..pol.clone()
    };
    assert_eq!(
        plan(Some(&ar), &a, &b, &strict).unwrap_err(),
        Refusal::TooManyDeletes {
            side: Side::A,
            deletes: 3,
            entries: 4
        }
    );
    let count = Policy {
        max_delete: MaxDelete::Count(3),
        ..pol
    };
    assert_eq!(plan(Some(&ar), &a, &b, &count).unwrap().deletes(Side::A), 3);
}

#[test]
fn max_delete_parses() {
    assert_eq!(MaxDelete::parse("50%"), Ok(MaxDelete::Percent(50.0)));
    assert_eq!(MaxDelete::parse("12"), Ok(MaxDelete::Count(12)));
    assert!(MaxDelete::parse("101%").is_err());
    assert!(MaxDelete::parse("-1").is_err());
    assert!(MaxDelete::parse("lots").is_err());
}

// ---- the model test ----

const NAMES: [&str; 3] = ["a", "b", "c"];

fn model_path(i: u8) -> WirePath {
    let i = i as usize % 12;
    if i < 3 {
        wp(NAMES[i])
    } else {
        let j = i - 3;
        wp(&format!("{}/{}", NAMES[j / 3], NAMES[j % 3]))
    }
}

#[derive(Clone, Debug)]
enum ModelOp {
    Write(u8),
    Mkdir(u8),
    Delete(u8),
    Rename(u8, u8),
    Chmod(u8),
    Link(u8),
    /// The same new content written at the same path on both sides.
    WriteBoth(u8),
}

fn model_op() -> impl Strategy<Value = (bool, ModelOp)> {
    let op = prop_oneof![
        3 => any::<u8>().prop_map(ModelOp::Write),
        2 => any::<u8>().prop_map(ModelOp::Mkdir),
        2 => any::<u8>().prop_map(ModelOp::Delete),
        2 => (any::<u8>(), any::<u8>()).prop_map(|(p, q)| ModelOp::Rename(p, q)),
        1 => any::<u8>().prop_map(ModelOp::Chmod),
        1 => any::<u8>().prop_map(ModelOp::Link),
        1 => any::<u8>().prop_map(ModelOp::WriteBoth),
    ];
    (any::<bool>(), op)
}

struct World {
    trees: [Tree; 2],
    clock: i64,
    next_content: u64,
}

impl World {
    fn apply(&mut self, side_b: bool, op: &ModelOp) {
        self.clock += 1;
        let t = &mut self.trees[side_b as usize];
        match *op {
            ModelOp::Write(p) | ModelOp::WriteBoth(p) => {
                let p = model_path(p);
                self.next_content += 1;
                let content = self.next_content;
                let sides: &[usize] = if matches!(op, ModelOp::WriteBoth(_)) {
                    &[0, 1]
                } else {
                    &[side_b as usize]
                };
                for &s in sides {
                    let t = &mut self.trees[s];
                    let parent_ok = t.parent_ok(&p);
                    match t.nodes.get_mut(&p) {
                        Some(Node::File {
                            content: c, mtime, ..
                        }) => {
                            *c = content;
                            *mtime = self.clock;
                        }
                        None if parent_ok => {
                            let ino = t.ino();
                            t.nodes.insert(
                                p.clone(),
                                Node::File {
                                    content,
                                    mode: 0o644,
                                    mtime: self.clock,
                                    ino,
                                },
                            );
                        }
                        _ => {}
                    }
                }
            }
            ModelOp::Mkdir(p) => {
                let p = model_path(p);
                if !t.nodes.contains_key(&p) && t.parent_ok(&p) {
                    let ino = t.ino();
                    t.nodes.insert(p, Node::Dir { mode: 0o755, ino });
                }
            }
            ModelOp::Link(p) => {
                let p = model_path(p);
                if !t.nodes.contains_key(&p) && t.parent_ok(&p) {
                    self.next_content += 1;
                    let ino = t.ino();
                    t.nodes.insert(
                        p,
                        Node::Link {
                            content: self.next_content,
                            ino,
                        },
                    );
                }
            }
            ModelOp::Delete(p) => t.remove_tree(&model_path(p)),
            ModelOp::Chmod(p) => {
                if let Some(Node::File { mode, .. } | Node::Dir { mode, .. }) =
                    t.nodes.get_mut(&model_path(p))
                {
                    *mode ^= 0o100;
                }
            }
            ModelOp::Rename(p, q) => {
                let (p, q) = (model_path(p), model_path(q));
                if t.nodes.contains_key(&p)
                    && !t.nodes.contains_key(&q)
                    && t.parent_ok(&q)
                    && !q.starts_with(&p)
                {
                    let moved: Vec<(WirePath, Node)> = t
                        .nodes
                        .iter()
                        .filter(|(k, _)| k.starts_with(&p))
                        .map(|(k, n)| (k.clone(), n.clone()))
                        .collect();
                    t.remove_tree(&p);
                    for (k, n) in moved {
                        let rest = &k.as_bytes()[p.as_bytes().len()..];
                        let mut nk = q.as_bytes().to_vec();
                        nk.extend_from_slice(rest);
                        t.nodes.insert(WirePath::from_bytes(nk), n);
                    }
                }
            }
        }
    }
}

/// The versions that must survive a sync: everything on either side except
/// a synced version the other side deliberately replaced or deleted.
fn must_survive(trees: &[Tree; 2], synced: &BTreeMap<WirePath, u64>) -> BTreeSet<u64> {
    let mut out = BTreeSet::new();
    for s in 0..2 {
        let other = &trees[1 - s];
        for p in trees[s].nodes.keys() {
            let Some(c) = trees[s].content(p) else {
                continue;
            };
            let other_changed = other.content(p) != synced.get(p).copied()
                || other.nodes.get(p).map(std::mem::discriminant)
                    != trees[s].nodes.get(p).map(std::mem::discriminant);
            if synced.get(p) == Some(&c) && other_changed {
                continue;
            }
            out.insert(c);
        }
    }
    out
}

fn run_model(rounds: &[Vec<(bool, ModelOp)>], prefer: Prefer) {
    let mut world = World {
        trees: [Tree::default(), Tree::default()],
        clock: 100,
        next_content: 1000,
    };
    world.trees[1].next_ino = 1_000_000;
    // A file no operation touches: the replicas are never emptied.
    for t in world.trees.iter_mut() {
        file(t, "k", 1, 1);
    }
    let pol = policy(prefer);
    let mut archive: Option<Archive> = None;
    let mut synced: BTreeMap<WirePath, u64> = BTreeMap::new();
    for ops in rounds {
        for (side_b, op) in ops {
            world.apply(*side_b, op);
        }
        let survivors = must_survive(&world.trees, &synced);
        let (plan, next) = sync(&mut world.trees, archive.as_ref(), &pol);
        assert_eq!(
            visible(&world.trees[0]),
            visible(&world.trees[1]),
            "replicas differ after the plan {:#?}",
            plan.actions
        );
        if prefer == Prefer::Keep {
            let after: BTreeSet<u64> = world.trees[0]
                .nodes
                .keys()
                .filter_map(|p| world.trees[0].content(p))
                .collect();
            let lost: Vec<_> = survivors.difference(&after).collect();
            assert!(
                lost.is_empty(),
                "versions lost: {lost:?}; plan {:#?}",
                plan.actions
            );
        }
        // A second sync finds nothing to do.
        let (again, next2) = sync(&mut world.trees, Some(&next), &pol);
        assert!(
            again.actions.is_empty(),
            "not converged: {:#?}",
            again.actions
        );
        assert!(again.conflicts.is_empty());
        assert_eq!(next2, next, "the archive is stable");
        synced = world.trees[0]
            .nodes
            .keys()
            .filter_map(|p| world.trees[0].content(p).map(|c| (p.clone(), c)))
            .collect();
        archive = Some(next);
    }
}

proptest! {
    #![proptest_config(crate::testconfig::proptest(600))]

    #[test]
    fn model_keeps_everything_and_converges(
        rounds in proptest::collection::vec(proptest::collection::vec(model_op(), 0..12), 1..4)
    ) {
        run_model(&rounds, Prefer::Keep);
    }

    #[test]
    fn model_converges_under_every_preference(
        rounds in proptest::collection::vec(proptest::collection::vec(model_op(), 0..12), 1..4),
        prefer in prop_oneof![
            Just(Prefer::A),
            Just(Prefer::B),
            Just(Prefer::Newer),
            Just(Prefer::Older),
            Just(Prefer::Larger),
            Just(Prefer::Smaller),
        ],
    ) {
        run_model(&rounds, prefer);
    }
}

/// Shrunk failure: the archive dropped hashes computed on a first sync, so it
/// was not stable from one no-change run to the next.
#[test]
fn regression_archive_keeps_hashes_across_runs() {
    run_model(&[vec![]], Prefer::A);
}

// ---- replicas that change while a run scans and executes ----

impl Tree {
    /// Whether the node at `p` is what a step expects (the executor's
    /// check, which skips the step instead of failing the test).
    fn matches(&self, p: &WirePath, expect: Option<&Entry>) -> bool {
        let cur = self.nodes.get(p).map(Tree::entry);
        match (&cur, expect) {
            (None, None) => true,
            (Some(c), Some(e)) => {
                c.kind == e.kind
                    && c.size == e.size
                    && c.mtime == e.mtime
                    && c.mode == e.mode
                    && c.target == e.target
                    && (c.kind == Kind::Dir || c.ino == e.ino)
            }
            _ => false,
        }
    }
}

/// Carries out a plan as the real executor does on replicas that changed
/// since the scan: a step whose path (or copy source) is not as scanned, or
/// that the file system refuses, is skipped and its paths marked failed.
fn execute_live(
    plan: &Plan,
    trees: &mut [Tree; 2],
) -> (HashMap<(Side, WirePath), Entry>, BTreeSet<WirePath>) {
    let mut written = HashMap::new();
    let mut failed = BTreeSet::new();
    for action in &plan.actions {
        let (s, o) = (action.side as usize, action.side.other() as usize);
        let p = &action.path;
        let side = action.side;
        let ok = match &action.op {
            Op::ConflictRename { to, expect } | Op::Rename { to, expect } => {
                let ok = trees[s].matches(p, Some(expect))
                    && !trees[s].nodes.contains_key(to)
                    && trees[s].parent_ok(to);
                if ok {
                    let node = trees[s].nodes.remove(p).unwrap();
                    written.insert((side, to.clone()), Tree::entry(&node));
                    trees[s].nodes.insert(to.clone(), node);
                } else {
                    failed.insert(to.clone());
                }
                ok
            }
            Op::Remove { expect } => {
                let ok = trees[s].matches(p, Some(expect));
                if ok {
                    trees[s].nodes.remove(p);
                }
                ok
            }
            Op::Rmdir { expect } => {
                let empty = !trees[s].nodes.keys().any(|q| q.starts_with(p) && q != p);
                let ok = trees[s].matches(p, Some(expect)) && empty;
                if ok {
                    trees[s].nodes.remove(p);
                }
                ok
            }
            Op::Mkdir { entry } => {
                let ok = !trees[s].nodes.contains_key(p) && trees[s].parent_ok(p);
                if ok {
                    let ino = trees[s].ino();
                    let node = Node::Dir {
                        mode: entry.mode,
                        ino,
                    };
                    written.insert((side, p.clone()), Tree::entry(&node));
                    trees[s].nodes.insert(p.clone(), node);
                }
                ok
            }
            Op::Copy { src, expect } => {
                let ok = trees[o].matches(p, Some(src))
                    && trees[s].matches(p, expect.as_ref())
                    && trees[s].parent_ok(p);
                if ok {
                    let ino = trees[s].ino();
                    let node = match trees[o].nodes[p].clone() {
                        Node::File {
                            content,
                            mode,
                            mtime,
                            ..
                        } => Node::File {
                            content,
                            mode,
                            mtime,
                            ino,
                        },
                        Node::Link { content, .. } => Node::Link { content, ino },
                        Node::Dir { .. } => panic!("copy of a directory {p}"),
                    };
                    written.insert((side, p.clone()), Tree::entry(&node));
                    trees[s].nodes.insert(p.clone(), node);
                }
                ok
            }
            Op::SetMeta { src, expect } => {
                let ok = trees[s].matches(p, Some(expect));
                if ok {
                    match trees[s].nodes.get_mut(p).unwrap() {
                        Node::File { mode, mtime, .. } => {
                            *mode = src.mode;
                            *mtime = src.mtime;
                        }
                        Node::Dir { mode, .. } => *mode = src.mode,
                        Node::Link { .. } => {}
                    }
                    let e = Tree::entry(&trees[s].nodes[p]);
                    written.insert((side, p.clone()), e);
                }
                ok
            }
        };
        if !ok {
            failed.insert(p.clone());
        }
    }
    (written, failed)
}

/// A scan that is not atomic: each path as it was before the changes made
/// during the scan (`before`) or after them (`after`), as `mask` picks; a
/// path only reachable through a directory the walk did not see is left out
/// (the walk finds entries by listing their parent).
fn torn_scan(before: &Tree, after: &Tree, mask: u64) -> Scan {
    let (b, a) = (before.scan(), after.scan());
    let mut paths: BTreeSet<&WirePath> = b.keys().collect();
    paths.extend(a.keys());
    let mut out = Scan::new();
    for (i, p) in paths.into_iter().enumerate() {
        let late = mask.rotate_left(i as u32 % 64) & 1 == 1;
        let from = if late { &a } else { &b };
        if let Some(e) = from.get(p) {
            out.insert(p.clone(), e.clone());
        }
    }
    let keep: Vec<WirePath> = out
        .keys()
        .filter(|p| {
            let mut up = p.parent();
            while let Some(d) = up {
                if d.is_root() {
                    return true;
                }
                if !out.get(&d).is_some_and(|e| e.kind == Kind::Dir) {
                    return false;
                }
                up = d.parent();
            }
            true
        })
        .cloned()
        .collect();
    out.retain(|p, _| keep.contains(p));
    out
}

/// One run during which the replicas keep changing: `during` happens while
/// the scans read (each path seen before or after it, per `masks`) and
/// before the steps run. Then quiet runs until nothing is left to do.
/// Nothing a user made may be lost, nothing deleted may come back, and the
/// replicas end equal.
fn run_live_model(before: &[(bool, ModelOp)], during: &[(bool, ModelOp)], masks: [u64; 2]) {
    let mut world = World {
        trees: [Tree::default(), Tree::default()],
        clock: 100,
        next_content: 1000,
    };
    world.trees[1].next_ino = 1_000_000;
    for t in world.trees.iter_mut() {
        file(t, "k", 1, 1);
    }
    let pol = policy(Prefer::Keep);
    // A first quiet sync, then the changes made before the live run.
    for (side_b, op) in before.iter().take(before.len() / 2) {
        world.apply(*side_b, op);
    }
    let (_, archive) = sync(&mut world.trees, None, &pol);
    let synced: BTreeMap<WirePath, u64> = world.trees[0]
        .nodes
        .keys()
        .filter_map(|p| world.trees[0].content(p).map(|c| (p.clone(), c)))
        .collect();
    for (side_b, op) in before.iter().skip(before.len() / 2) {
        world.apply(*side_b, op);
    }
    let start = world.trees.clone();
    for (side_b, op) in during {
        world.apply(*side_b, op);
    }
    // What the users left: versions made (on either side) and not
    // deliberately replaced or deleted on the other side since the sync.
    let survivors = must_survive(&world.trees, &synced);
    let deleted: BTreeSet<u64> = synced
        .values()
        .copied()
        .filter(|c| {
            !world
                .trees
                .iter()
                .any(|t| t.nodes.keys().any(|p| t.content(p) == Some(*c)))
        })
        .collect();
    let (mut a, mut b) = (
        torn_scan(&start[0], &world.trees[0], masks[0]),
        torn_scan(&start[1], &world.trees[1], masks[1]),
    );
    // Hashes are read after the scan: from the replicas as they are now.
    for p in needs_hash(Some(&archive), &a, &b, pol.owners) {
        a.get_mut(&p).unwrap().hash = world.trees[0].hash(&p);
        b.get_mut(&p).unwrap().hash = world.trees[1].hash(&p);
    }
    let plan = plan(Some(&archive), &a, &b, &pol).expect("no guard trips in the model");
    let (written, failed) = execute_live(&plan, &mut world.trees);
    let (mut archive, _) = next_archive(Some(archive), &a, &b, &plan, &written, &failed);
    let mut rounds = 0;
    loop {
        let (again, next) = sync(&mut world.trees, Some(&archive), &pol);
        archive = next;
        if again.actions.is_empty() {
            break;
        }
        rounds += 1;
        assert!(rounds < 4, "not converging: {:#?}", again.actions);
    }
    assert_eq!(
        visible(&world.trees[0]),
        visible(&world.trees[1]),
        "replicas differ; live plan {:#?}",
        plan.actions
    );
    let after: BTreeSet<u64> = world.trees[0]
        .nodes
        .keys()
        .filter_map(|p| world.trees[0].content(p))
        .collect();
    let lost: Vec<_> = survivors.difference(&after).collect();
    assert!(
        lost.is_empty(),
        "versions lost: {lost:?}; live plan {:#?}",
        plan.actions
    );
    let back: Vec<_> = deleted.intersection(&after).collect();
    assert!(
        back.is_empty(),
        "deleted versions came back: {back:?}; live plan {:#?}",
        plan.actions
    );
}

proptest! {
    #![proptest_config(crate::testconfig::proptest(std::env::var("BISYNC_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(600)))]

    #[test]
    fn model_keeps_everything_when_replicas_change_during_a_run(
        before in proptest::collection::vec(model_op(), 0..16),
        during in proptest::collection::vec(model_op(), 0..8),
        masks in any::<[u64; 2]>(),
    ) {
        run_live_model(&before, &during, masks);
    }
}

/// Shrunk failure (CI): B replaced the directory b/a by renaming file a onto
/// it. The plan for A turned "rmdir b/a, copy b/a" into a rename of a, but
/// renames run before rmdirs, so the rename found the directory in place.
#[test]
fn regression_a_rename_onto_a_removed_directory() {
    run_model(
        &[
            vec![(false, ModelOp::Mkdir(85))],
            vec![(false, ModelOp::Mkdir(18)), (false, ModelOp::WriteBoth(36))],
            vec![
                (true, ModelOp::Delete(78)),
                (true, ModelOp::Rename(180, 42)),
            ],
        ],
        Prefer::Keep,
    );
}
