//! Leaving excluded paths out of a batch before it is planned: rsync's
//! filter rules cover what rsync walks (full syncs, subtrees), but a listed
//! path is sent even below an excluded directory, and `--direct` never asks
//! rsync. Pure.

use crate::exclude::Excludes;
use crate::wire::event::{Change, ChangeOp};

/// `changes` without what `excludes` leaves out. A move out of an excluded
/// name is a path moved in; a move to an excluded name is a deletion (the
/// target must not keep a copy under the new, excluded name).
pub fn without_excluded(changes: Vec<Change>, excludes: &Excludes) -> Vec<Change> {
    if excludes.is_empty() {
        return changes;
    }
    let excluded = |path: &crate::wire::path::WirePath, dir: bool| -> bool {
        !path.is_root() && excludes.is_excluded_path(path.as_path(), dir)
    };
    changes
        .into_iter()
        .filter_map(|change| {
            let to_out = excluded(&change.path, change.dir);
            match (change.op, &change.from) {
                (ChangeOp::Move, Some(from)) if from != &change.path => {
                    let from_out = excluded(from, change.dir);
                    match (from_out, to_out) {
                        (true, true) => None,
                        (false, false) => Some(change),
                        (true, false) => Some(Change {
                            from: None,
                            ..change
                        }),
                        (false, true) => Some(Change {
                            op: ChangeOp::Delete,
                            path: from.clone(),
                            dir: change.dir,
                            from: None,
                        }),
                    }
                }
                _ if to_out => None,
                _ => Some(change),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::path::WirePath;
    use std::path::Path;

    fn wp(s: &str) -> WirePath {
        WirePath::from(s)
    }

    fn change(op: ChangeOp, path: &str, dir: bool, from: Option<&str>) -> Change {
        Change {
            op,
            path: wp(path),
            dir,
            from: from.map(wp),
        }
    }

    #[test]
    fn excluded_paths_and_moves_across_the_line() {
        let ex = Excludes::new(&["*.tmp".into(), "cache/".into()], &[] as &[&Path]).unwrap();
        let got = without_excluded(
            vec![
                change(ChangeOp::Update, "a.tmp", false, None),
                change(ChangeOp::Update, "cache/x", false, None),
                change(ChangeOp::Delete, "cache", true, None),
                change(ChangeOp::Rescan, ".", true, None),
                change(ChangeOp::Update, "keep", false, None),
                change(ChangeOp::Move, "b.txt", false, Some("b.tmp")),
                change(ChangeOp::Move, "c.tmp", false, Some("c.txt")),
                change(ChangeOp::Move, "d.tmp", false, Some("e.tmp")),
                change(ChangeOp::Move, "cache", true, Some("old")),
            ],
            &ex,
        );
        assert_eq!(
            got,
            vec![
                change(ChangeOp::Rescan, ".", true, None),
                change(ChangeOp::Update, "keep", false, None),
                change(ChangeOp::Move, "b.txt", false, None),
                change(ChangeOp::Delete, "c.txt", false, None),
                change(ChangeOp::Delete, "old", true, None),
            ]
        );
    }
}
