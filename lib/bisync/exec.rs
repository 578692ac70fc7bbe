//! Carrying out a plan on two replicas, in the plan's order. A step whose
//! path changed since the scan is skipped and reported, never forced; a step
//! that fails is reported and the run goes on; a broken link to a replica
//! stops the run. What happened decides the next archive.

use std::collections::{BTreeSet, HashMap};

use super::entry::{Entry, Hash, HashingWriter, Kind, Side};
use super::planner::{Action, Op, Plan};
use super::progress::Tally;
use super::replica::{Applied, Change, Replica, Transport};
use crate::wire::path::WirePath;

/// How one step ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    Done,
    /// Not done because the path (or the copy's source) changed since the
    /// scan; the next run picks it up.
    Skipped(String),
    /// An error on this path (permissions, disk full, ...).
    Failed(String),
}

impl Status {
    pub fn word(&self) -> &'static str {
        match self {
            Status::Done => "ok",
            Status::Skipped(_) => "skipped",
            Status::Failed(_) => "failed",
        }
    }

    pub fn reason(&self) -> Option<&str> {
        match self {
            Status::Done => None,
            Status::Skipped(r) | Status::Failed(r) => Some(r),
        }
    }
}

#[derive(Debug, Default)]
pub struct Executed {
    /// The entry each written path has now.
    pub written: HashMap<(Side, WirePath), Entry>,
    /// Paths where some step did not happen: the archive keeps their old
    /// state, so the next run sees the difference again.
    pub failed: BTreeSet<WirePath>,
    pub done: u64,
    pub skipped: u64,
    pub errors: u64,
    /// The link to a replica broke: the steps after it were not tried.
    pub aborted: Option<anyhow::Error>,
}

/// The replica-level change for a planned step (`None` for a copy).
fn change_of(action: &Action) -> Option<Change> {
    let path = action.path.clone();
    Some(match &action.op {
        Op::ConflictRename { to, expect } | Op::Rename { to, expect } => Change::Rename {
            path,
            to: to.clone(),
            expect: expect.clone(),
        },
        Op::Remove { expect } => Change::Remove {
            path,
            expect: expect.clone(),
        },
        Op::Rmdir { expect } => Change::Rmdir {
            path,
            expect: expect.clone(),
        },
        Op::Mkdir { entry } => Change::Mkdir {
            path,
            entry: entry.clone(),
        },
        Op::SetMeta { src, expect } => Change::SetMeta {
            path,
            src: src.clone(),
            expect: expect.clone(),
        },
        Op::Copy { .. } => return None,
    })
}

fn pick<'r>(
    side: Side,
    a: &'r mut dyn Replica,
    b: &'r mut dyn Replica,
) -> (&'r mut dyn Replica, &'r mut dyn Replica) {
    match side {
        Side::A => (a, b),
        Side::B => (b, a),
    }
}

fn run_one(
    action: &Action,
    a: &mut dyn Replica,
    b: &mut dyn Replica,
    hash_copies: bool,
    tally: &Tally,
) -> anyhow::Result<(Applied, Option<WirePath>)> {
    let (here, there) = pick(action.side, a, b);
    match &action.op {
        Op::Copy { src, expect } => {
            let path = &action.path;
            // With --checksum the data is hashed on its way through, so the
            // archive knows the content of what was copied.
            let mut hash = None;
            let written = here.write(path, src, expect.as_ref(), &mut |out| {
                let out = &mut tally.counting(out);
                if !hash_copies {
                    return there.read(path, src, out);
                }
                let mut hashing = HashingWriter::new(out);
                let intact = there.read(path, src, &mut hashing)?;
                hash = Some(Hash::from(hashing.hasher.finalize()));
                Ok(intact)
            });
            tally.copy_ended(matches!(written, Ok(Applied::Done(_))));
            let mut applied = written?;
            if let (Applied::Done(Some(entry)), Kind::File) = (&mut applied, src.kind) {
                if entry.hash.is_none() {
                    entry.hash = hash;
                }
            }
            Ok((applied, Some(path.clone())))
        }
        _ => {
            let change = change_of(action).expect("not a copy");
            let at = match &change {
                Change::Rename { to, .. } => to.clone(),
                _ => action.path.clone(),
            };
            Ok((here.change(&change)?, Some(at)))
        }
    }
}

fn is_transport(err: &anyhow::Error) -> bool {
    err.chain().any(|c| c.downcast_ref::<Transport>().is_some())
}

/// Runs every step of `plan`; `report` hears of each as it ends, `tally`
/// counts the data copied. `hash_copies` (--checksum) records the hash of
/// each file copied.
pub fn execute(
    plan: &Plan,
    a: &mut dyn Replica,
    b: &mut dyn Replica,
    hash_copies: bool,
    tally: &Tally,
    mut report: impl FnMut(&Action, &Status),
) -> Executed {
    let mut out = Executed::default();
    let mut made_dirs: Vec<(Side, WirePath, Entry)> = Vec::new();
    let mut steps = plan.actions.iter();
    for action in steps.by_ref() {
        let status = match run_one(action, a, b, hash_copies, tally) {
            Ok((Applied::Done(entry), at)) => {
                if let (Some(entry), Some(at)) = (entry, at) {
                    if let Op::Mkdir { entry: want } = &action.op {
                        if want.mode & 0o700 != 0o700 {
                            made_dirs.push((action.side, at.clone(), want.clone()));
                        }
                    }
                    out.written.insert((action.side, at), entry);
                }
                Status::Done
            }
            Ok((Applied::Skipped(why), _)) => Status::Skipped(why),
            Err(err) if is_transport(&err) => {
                mark_failed(&mut out.failed, action);
                report(action, &Status::Failed(format!("{err:#}")));
                out.errors += 1;
                out.aborted = Some(err);
                break;
            }
            Err(err) => Status::Failed(format!("{err:#}")),
        };
        match status {
            Status::Done => out.done += 1,
            Status::Skipped(_) => out.skipped += 1,
            Status::Failed(_) => out.errors += 1,
        }
        if status != Status::Done {
            mark_failed(&mut out.failed, action);
        }
        report(action, &status);
    }
    for action in steps {
        mark_failed(&mut out.failed, action);
    }
    if out.aborted.is_none() {
        // Directories were made owner-writable for the copies into them;
        // now they get their real mode, children first.
        made_dirs.sort_by_key(|(_, p, _)| std::cmp::Reverse(p.depth()));
        for (side, path, want) in made_dirs {
            let Some(now) = out.written.get(&(side, path.clone())).cloned() else {
                continue;
            };
            let (here, _) = pick(side, a, b);
            let change = Change::SetMeta {
                path: path.clone(),
                src: want,
                expect: now,
            };
            match here.change(&change) {
                Ok(Applied::Done(Some(entry))) => {
                    out.written.insert((side, path), entry);
                }
                _ => {
                    out.failed.insert(path);
                }
            }
        }
    }
    out
}

fn mark_failed(failed: &mut BTreeSet<WirePath>, action: &Action) {
    failed.insert(action.path.clone());
    if let Op::Rename { to, .. } | Op::ConflictRename { to, .. } = &action.op {
        failed.insert(to.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bisync::local::LocalReplica;
    use crate::bisync::planner::{next_archive, plan, Policy, Prefer};
    use crate::exclude::Excludes;
    use crate::limit::MaxDelete;
    use std::fs;
    use std::time::SystemTime;

    fn policy() -> Policy {
        Policy {
            prefer: Prefer::Keep,
            max_delete: MaxDelete::Count(u64::MAX),
            owners: false,
            hosts: ["ha".into(), "hb".into()],
            now: SystemTime::now(),
            size_only: false,
            sentinel: None,
            force: false,
        }
    }

    /// A file that changes between the scan and the copy is never
    /// overwritten or copied half-way: the step is skipped and the archive
    /// keeps the old state, so the next run sees the change.
    #[test]
    fn paths_changed_after_the_scan_are_skipped() {
        let tmp = tempfile::tempdir().unwrap();
        let (ra, rb) = (tmp.path().join("a"), tmp.path().join("b"));
        fs::create_dir_all(&ra).unwrap();
        fs::create_dir_all(&rb).unwrap();
        fs::write(ra.join("edit-dst"), b"new on a").unwrap();
        fs::write(ra.join("edit-src"), b"from a").unwrap();
        fs::write(ra.join("steady"), b"ok").unwrap();
        let mut a = LocalReplica::new("a", &ra, Excludes::default());
        let mut b = LocalReplica::new("b", &rb, Excludes::default());
        let (sa, sb) = (a.scan(false).unwrap(), b.scan(false).unwrap());
        let plan = plan(None, &sa, &sb, &policy()).unwrap();
        assert_eq!(plan.actions.len(), 3);
        // After the scan: b gets its own edit-dst, a's edit-src grows.
        fs::write(rb.join("edit-dst"), b"written on b meanwhile").unwrap();
        fs::write(ra.join("edit-src"), b"from a, longer now").unwrap();
        let mut seen = Vec::new();
        let tally = Tally::new(std::time::Instant::now());
        let done = execute(&plan, &mut a, &mut b, false, &tally, |act, st| {
            seen.push((act.path.to_string(), st.clone()))
        });
        assert_eq!(done.done, 1);
        assert_eq!(done.skipped, 2, "{seen:?}");
        assert_eq!(
            fs::read(rb.join("edit-dst")).unwrap(),
            b"written on b meanwhile"
        );
        assert!(!rb.join("edit-src").exists());
        assert_eq!(fs::read(rb.join("steady")).unwrap(), b"ok");
        // No temporary file is left behind.
        assert_eq!(fs::read_dir(&rb).unwrap().count(), 2);
        let (next, _) = next_archive(None, &sa, &sb, &plan, &done.written, &done.failed);
        let keys: Vec<String> = next.keys().map(|k| k.to_string()).collect();
        assert_eq!(keys, ["steady"]);
    }
}
