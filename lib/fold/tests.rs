//! Tests of the fold: the rules one by one, and the regressions the model
//! check (`model.rs`) found.

use super::*;
use crate::wire::event::Timestamp;

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

pub(super) fn show(changes: &[Change]) -> Vec<String> {
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

/// The folding table, one case per file in `tests/fixtures/fold/`: events
/// (`kind path`, `move from path`; a trailing `/` marks a directory), a line
/// `--`, then the expected changes written the same way.
#[test]
fn folding_cases() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fold");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    files.sort();
    assert!(files.len() >= 10, "cases missing in {}", dir.display());
    let mut failed = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let lines = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty());
        let (mut events, mut expected, mut after) = (Vec::new(), Vec::new(), false);
        for line in lines {
            if line == "--" {
                after = true;
            } else if after {
                expected.push(line.to_string());
            } else {
                events.push(case_event(line));
            }
        }
        let mut f = Fold::new();
        for e in &events {
            f.push_event(e);
        }
        let got: Vec<String> = f.take().iter().map(case_line).collect();
        if got != expected {
            failed.push(format!(
                "{}: got {got:?}, want {expected:?}",
                file.display()
            ));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

/// `a/` is the directory `a`; `./` the root.
fn case_path(word: &str) -> (WirePath, bool) {
    match word.strip_suffix('/') {
        Some("." | "") => (WirePath::root(), true),
        Some(p) => (p.into(), true),
        None => (word.into(), false),
    }
}

fn case_event(line: &str) -> Event {
    let words: Vec<&str> = line.split(' ').collect();
    let kind = match words[0] {
        "create" => Create,
        "modify" => Modify,
        "attrib" => Attrib,
        "delete" => Delete,
        "rescan" => Rescan,
        "move" => EventKind::Move,
        other => EventKind::Other(other.into()),
    };
    let (path, dir) = case_path(words[words.len() - 1]);
    let from = (words.len() == 3).then(|| case_path(words[1]).0);
    Event {
        seq: 0,
        ts: Timestamp("t".into()),
        kind,
        path,
        dir,
        from,
    }
}

fn case_line(c: &Change) -> String {
    let op = serde_json::to_value(c.op).unwrap();
    let slash = if c.dir { "/" } else { "" };
    let path = if c.path.is_root() {
        ".".to_string()
    } else {
        c.path.to_string()
    };
    match &c.from {
        Some(from) => format!("move {from} {path}{slash}"),
        None => format!("{} {path}{slash}", op.as_str().unwrap()),
    }
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
    // `b` is a file by the end: the rename into it could not run, and the
    // target may still hold the directory.
    assert_eq!(show(&pending.take()), ["delete a/x", "rescan b"]);
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
