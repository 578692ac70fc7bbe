//! Turning an ordered list of changes into what one target has to do: the
//! renames to replay, then the paths to re-read, then the subtrees to sync.
//!
//! rsync always reads the source as it is *now*, so every path is expressed
//! in the source's final namespace: a change made under `a/` before `a` moved
//! to `b` is a change under `b/`. The renames run first on the target, so its
//! namespace matches the source's before any data moves; afterwards the old
//! and new names of every rename are re-checked, which makes a failed or
//! skipped rename harmless (rsync then sends what the rename would have
//! saved). Pure: no I/O here.

use crate::wire::event::{Change, ChangeOp};
use crate::wire::path::WirePath;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rename {
    pub from: WirePath,
    pub to: WirePath,
    pub dir: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub renames: Vec<Rename>,
    /// Re-read each (not recursing into directories); gone on the source
    /// means delete on the target.
    pub paths: Vec<WirePath>,
    /// Sync each subtree whole; `"."` is the whole root.
    pub subtrees: Vec<WirePath>,
    /// Paths that could escape the root (`..`, absolute, NUL) and were
    /// replaced by a sync of the whole root.
    pub rejected: Vec<WirePath>,
}

impl Plan {
    /// The whole root.
    pub fn full() -> Plan {
        Plan {
            subtrees: vec![WirePath::root()],
            ..Plan::default()
        }
    }

    pub fn from_changes(changes: &[Change]) -> Plan {
        let mut plan = Plan::default();
        // Paths deleted or moved away earlier in the batch: if one comes
        // back, the target may still hold its old contents below it, so it
        // is synced whole, not just as an entry.
        // A set: looked up for every update (a batch can hold 100k paths).
        let mut vacated: std::collections::HashSet<WirePath> = Default::default();
        for change in changes {
            if !is_safe(&change.path) || change.from.as_ref().is_some_and(|f| !is_safe(f)) {
                plan.rejected.push(change.path.clone());
                plan.subtrees.push(WirePath::root());
                continue;
            }
            let path = change.path.clone();
            match (change.op, &change.from) {
                (ChangeOp::Delete, _) => {
                    vacated.insert(path.clone());
                    plan.paths.push(path);
                }
                (ChangeOp::Rescan, _) => plan.subtrees.push(path),
                (ChangeOp::Update, _) | (ChangeOp::Move, None) => {
                    if (change.op == ChangeOp::Move && change.dir) || vacated.contains(&path) {
                        plan.subtrees.push(path);
                    } else {
                        plan.paths.push(path);
                    }
                }
                (ChangeOp::Move, Some(from)) if from == &path => plan.paths.push(path),
                (ChangeOp::Move, Some(from)) => {
                    if path.starts_with(from) {
                        // A directory moved into itself cannot happen on the
                        // source; re-read the old place whole instead.
                        plan.subtrees.push(from.clone());
                        continue;
                    }
                    for p in plan.paths.iter_mut().chain(plan.subtrees.iter_mut()) {
                        if let Some(rebased) = rebase(p, from, &path) {
                            *p = rebased;
                        }
                    }
                    vacated = vacated
                        .into_iter()
                        .map(|p| rebase(&p, from, &path).unwrap_or(p))
                        .collect();
                    vacated.insert(from.clone());
                    plan.renames.push(Rename {
                        from: from.clone(),
                        to: path.clone(),
                        dir: change.dir,
                    });
                    plan.paths.push(from.clone());
                    plan.paths.push(path);
                }
            }
        }
        plan.normalize();
        plan
    }

    /// Drops the renames, syncing their new names instead (a daemon target,
    /// or a rename that failed on the target).
    pub fn without_renames(&mut self) {
        for r in std::mem::take(&mut self.renames) {
            self.paths.push(r.from);
            if r.dir {
                self.subtrees.push(r.to);
            } else {
                self.paths.push(r.to);
            }
        }
        self.normalize();
    }

    pub fn is_full(&self) -> bool {
        self.subtrees.iter().any(WirePath::is_root)
    }

    pub fn is_empty(&self) -> bool {
        self.renames.is_empty() && self.paths.is_empty() && self.subtrees.is_empty()
    }

    /// Deduplicates, drops subtrees inside other subtrees and paths inside
    /// subtrees (the subtree sync covers them). A full sync makes renames
    /// pointless: the data would be compared anyway.
    fn normalize(&mut self) {
        self.subtrees.sort();
        self.subtrees.dedup();
        let mut kept: Vec<WirePath> = Vec::new();
        for s in std::mem::take(&mut self.subtrees) {
            if !kept.iter().any(|k| s.starts_with(k)) {
                kept.push(s);
            }
        }
        self.subtrees = kept;
        let subtrees = &self.subtrees;
        let mut seen = std::collections::HashSet::new();
        self.paths
            .retain(|p| !subtrees.iter().any(|s| p.starts_with(s)) && seen.insert(p.clone()));
        if self.is_full() {
            self.paths.clear();
        }
    }
}

/// `p` with its prefix `from` replaced by `to`, if `p` lies under `from`.
fn rebase(p: &WirePath, from: &WirePath, to: &WirePath) -> Option<WirePath> {
    if from.is_root() || !p.starts_with(from) {
        return None;
    }
    let rest = &p.as_bytes()[from.as_bytes().len()..];
    let mut bytes = to.as_bytes().to_vec();
    bytes.extend_from_slice(rest);
    Some(WirePath::from_bytes(bytes))
}

/// A relative path that stays inside the root: no leading `/`, no `..` or
/// empty components, no NUL (the list to rsync is NUL-separated).
pub fn is_safe(p: &WirePath) -> bool {
    let b = p.as_bytes();
    if p.is_root() {
        return true;
    }
    !b.is_empty()
        && !b.contains(&0)
        && b[0] != b'/'
        && b.split(|&c| c == b'/')
            .all(|c| !c.is_empty() && c != b".." && c != b".")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch(op: ChangeOp, path: &str) -> Change {
        Change {
            op,
            path: path.into(),
            dir: false,
            from: None,
        }
    }

    fn mv(from: &str, to: &str, dir: bool) -> Change {
        Change {
            op: ChangeOp::Move,
            path: to.into(),
            dir,
            from: Some(from.into()),
        }
    }

    fn paths(v: &[WirePath]) -> Vec<String> {
        v.iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn updates_and_deletes_become_one_list() {
        let p = Plan::from_changes(&[
            ch(ChangeOp::Update, "a"),
            ch(ChangeOp::Delete, "b"),
            ch(ChangeOp::Update, "a"),
        ]);
        assert_eq!(paths(&p.paths), ["a", "b"]);
        assert!(p.renames.is_empty() && p.subtrees.is_empty());
    }

    #[test]
    fn changes_before_a_move_follow_it() {
        let p = Plan::from_changes(&[
            ch(ChangeOp::Update, "a/x"),
            ch(ChangeOp::Rescan, "a/sub"),
            mv("a", "b", true),
            ch(ChangeOp::Update, "b/y"),
        ]);
        assert_eq!(
            p.renames,
            [Rename {
                from: "a".into(),
                to: "b".into(),
                dir: true
            }]
        );
        assert_eq!(paths(&p.paths), ["b/x", "a", "b", "b/y"]);
        assert_eq!(paths(&p.subtrees), ["b/sub"]);
    }

    #[test]
    fn without_renames_resends_new_names() {
        let mut p = Plan::from_changes(&[mv("d", "e", true), mv("f", "g", false)]);
        p.without_renames();
        assert!(p.renames.is_empty());
        assert_eq!(paths(&p.subtrees), ["e"]);
        assert_eq!(paths(&p.paths), ["d", "f", "g"]);
    }

    #[test]
    fn subtrees_cover_paths_and_root_covers_all() {
        let p = Plan::from_changes(&[
            ch(ChangeOp::Update, "s/a"),
            ch(ChangeOp::Rescan, "s"),
            ch(ChangeOp::Rescan, "s/t"),
            ch(ChangeOp::Update, "u"),
        ]);
        assert_eq!(paths(&p.subtrees), ["s"]);
        assert_eq!(paths(&p.paths), ["u"]);
        let full = Plan::from_changes(&[ch(ChangeOp::Update, "u"), ch(ChangeOp::Rescan, ".")]);
        assert!(full.is_full());
        assert!(full.paths.is_empty());
    }

    #[test]
    fn escaping_paths_become_a_full_sync() {
        for bad in ["../x", "/etc", "a/../../b", "a//b", "a\0b", "", "./a"] {
            let p = Plan::from_changes(&[ch(ChangeOp::Delete, bad)]);
            assert!(p.is_full(), "{bad:?}");
            assert_eq!(p.rejected.len(), 1);
        }
        let p = Plan::from_changes(&[mv("../etc", "x", false)]);
        assert!(p.is_full());
        assert!(is_safe(&"-a/$(touch x)/\n".into()));
    }
}

/// A plan applied to a simulated target must leave it equal to the source,
/// whatever happened on the source, including renames the target cannot do.
#[cfg(test)]
mod model {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Entry {
        Dir,
        File(u32),
    }

    type Tree = BTreeMap<Vec<u8>, Entry>;

    fn under(p: &[u8], root: &[u8]) -> bool {
        p == root || (p.starts_with(root) && p.get(root.len()) == Some(&b'/'))
    }

    fn parent(p: &[u8]) -> Option<&[u8]> {
        p.iter().rposition(|&b| b == b'/').map(|i| &p[..i])
    }

    fn remove(t: &mut Tree, p: &[u8]) {
        t.retain(|k, _| !under(k, p));
    }

    fn make_parents(t: &mut Tree, p: &[u8]) {
        if let Some(par) = parent(p) {
            make_parents(t, par);
            if t.get(par) != Some(&Entry::Dir) {
                remove(t, par);
                t.insert(par.to_vec(), Entry::Dir);
            }
        }
    }

    /// rsync of one listed path: its current state, no recursion.
    fn sync_path(src: &Tree, dst: &mut Tree, p: &[u8]) {
        match src.get(p) {
            None => remove(dst, p),
            Some(Entry::Dir) => {
                make_parents(dst, p);
                if dst.get(p) != Some(&Entry::Dir) {
                    remove(dst, p);
                    dst.insert(p.to_vec(), Entry::Dir);
                }
            }
            Some(e) => {
                make_parents(dst, p);
                remove(dst, p);
                dst.insert(p.to_vec(), *e);
            }
        }
    }

    fn sync_subtree(src: &Tree, dst: &mut Tree, p: &[u8]) {
        if p == b"." {
            *dst = src.clone();
            return;
        }
        remove(dst, p);
        if src.contains_key(p) {
            make_parents(dst, p);
            for (k, v) in src.iter().filter(|(k, _)| under(k, p)) {
                dst.insert(k.clone(), *v);
            }
        }
    }

    /// rename(2) with `mkdir -p` of the new parent; false when it fails.
    fn rename(dst: &mut Tree, from: &[u8], to: &[u8]) -> bool {
        let Some(&moving) = dst.get(from) else {
            return false;
        };
        match dst.get(to) {
            Some(Entry::Dir) if moving != Entry::Dir => return false,
            Some(Entry::Dir) if dst.keys().any(|k| under(k, to) && k != to) => return false,
            Some(Entry::File(_)) if moving == Entry::Dir => return false,
            _ => {}
        }
        if under(to, from) {
            return false;
        }
        // `mkdir -p` fails on a file in the way.
        let mut up = parent(to);
        while let Some(dir) = up {
            if dst.get(dir).is_some_and(|e| *e != Entry::Dir) {
                return false;
            }
            up = parent(dir);
        }
        remove(dst, to);
        make_parents(dst, to);
        let moved: Vec<(Vec<u8>, Entry)> = dst
            .iter()
            .filter(|(k, _)| under(k, from))
            .map(|(k, v)| {
                let mut n = to.to_vec();
                n.extend_from_slice(&k[from.len()..]);
                (n, *v)
            })
            .collect();
        remove(dst, from);
        dst.extend(moved);
        true
    }

    fn apply(src: &Tree, dst: &mut Tree, mut plan: Plan) {
        for r in plan.renames.clone() {
            if !rename(dst, r.from.as_bytes(), r.to.as_bytes()) {
                plan.without_renames();
                break;
            }
        }
        for p in &plan.paths {
            sync_path(src, dst, p.as_bytes());
        }
        for s in &plan.subtrees {
            sync_subtree(src, dst, s.as_bytes());
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        Write(Vec<u8>, u32),
        Mkdir(Vec<u8>),
        Delete(Vec<u8>),
        Rename(Vec<u8>, Vec<u8>),
    }

    fn path() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(prop::sample::select(vec![b'a', b'b', b'c']), 1..4).prop_map(|v| {
            let mut p = Vec::new();
            for (i, c) in v.into_iter().enumerate() {
                if i > 0 {
                    p.push(b'/');
                }
                p.push(c);
            }
            p
        })
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (path(), any::<u32>()).prop_map(|(p, n)| Op::Write(p, n)),
            path().prop_map(Op::Mkdir),
            path().prop_map(Op::Delete),
            (path(), path()).prop_map(|(a, b)| Op::Rename(a, b)),
        ]
    }

    /// Runs `op` on the source if it is possible there; returns its change.
    fn run(src: &mut Tree, op: &Op) -> Option<Change> {
        let parent_ok =
            |t: &Tree, p: &[u8]| parent(p).is_none_or(|par| t.get(par) == Some(&Entry::Dir));
        let change = |op, p: &[u8], dir, from: Option<&[u8]>| Change {
            op,
            path: WirePath::from_bytes(p),
            dir,
            from: from.map(WirePath::from_bytes),
        };
        match op {
            Op::Write(p, n) if parent_ok(src, p) && src.get(&p[..]) != Some(&Entry::Dir) => {
                src.insert(p.clone(), Entry::File(*n));
                Some(change(ChangeOp::Update, p, false, None))
            }
            Op::Mkdir(p) if parent_ok(src, p) && !src.contains_key(&p[..]) => {
                src.insert(p.clone(), Entry::Dir);
                Some(change(ChangeOp::Update, p, true, None))
            }
            Op::Delete(p) if src.contains_key(&p[..]) => {
                let dir = src.get(&p[..]) == Some(&Entry::Dir);
                remove(src, p);
                Some(change(ChangeOp::Delete, p, dir, None))
            }
            Op::Rename(a, b)
                if src.contains_key(&a[..])
                    && !src.contains_key(&b[..])
                    && parent_ok(src, b)
                    && !under(b, a) =>
            {
                let dir = src.get(&a[..]) == Some(&Entry::Dir);
                assert!(rename(src, a, b));
                Some(change(ChangeOp::Move, b, dir, Some(a)))
            }
            _ => None,
        }
    }

    proptest! {
        #![proptest_config(crate::testconfig::proptest(2000))]
        #[test]
        fn target_ends_equal_to_source(
            setup in prop::collection::vec(op(), 0..12),
            ops in prop::collection::vec(op(), 1..12),
        ) {
            let mut src = Tree::new();
            for o in &setup {
                run(&mut src, o);
            }
            let mut dst = src.clone();
            let changes: Vec<Change> = ops.iter().filter_map(|o| run(&mut src, o)).collect();
            apply(&src, &mut dst, Plan::from_changes(&changes));
            prop_assert_eq!(&dst, &src, "changes: {:?}", changes);
        }
    }
}
