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

use crate::event::{Change, ChangeOp};
use crate::wirepath::WirePath;

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
        for change in changes {
            if !is_safe(&change.path) || change.from.as_ref().is_some_and(|f| !is_safe(f)) {
                plan.rejected.push(change.path.clone());
                plan.subtrees.push(WirePath::root());
                continue;
            }
            match (change.op, &change.from) {
                (ChangeOp::Update | ChangeOp::Delete, _) => plan.paths.push(change.path.clone()),
                (ChangeOp::Rescan, _) => plan.subtrees.push(change.path.clone()),
                (ChangeOp::Move, None) if change.dir => plan.subtrees.push(change.path.clone()),
                (ChangeOp::Move, None) => plan.paths.push(change.path.clone()),
                (ChangeOp::Move, Some(from)) if from == &change.path => {
                    plan.paths.push(change.path.clone())
                }
                (ChangeOp::Move, Some(from)) => {
                    if change.path.starts_with(from) {
                        // A directory moved into itself cannot happen on the
                        // source; re-read the old place whole instead.
                        plan.subtrees.push(from.clone());
                        continue;
                    }
                    for p in plan.paths.iter_mut().chain(plan.subtrees.iter_mut()) {
                        if let Some(moved) = rebase(p, from, &change.path) {
                            *p = moved;
                        }
                    }
                    plan.renames.push(Rename {
                        from: from.clone(),
                        to: change.path.clone(),
                        dir: change.dir,
                    });
                    plan.paths.push(from.clone());
                    plan.paths.push(change.path.clone());
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
