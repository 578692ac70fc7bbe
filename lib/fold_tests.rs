//! Tests of the fold: the rules one by one, and the regressions the model
//! check (`fold_model.rs`) found.

use super::*;
use crate::event::Timestamp;

#[path = "fold_model.rs"]
mod model;

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
