//! What a worker keeps when a delete guard refuses (held changes, rechecked
//! and released, never dropped) and the check that a local target root is
//! still the one the last transfer wrote to. The guards themselves (what is
//! refused) are in `apply.rs`.

use std::time::{Duration, Instant};

use crate::fold::Fold;
use crate::location::{Location, Target};
use crate::log_warn;
use crate::pushd::apply::{Report, RootId};
use crate::wire::event::{Change, ChangeOp};

/// Changes whose deletions a guard refused: kept here, rechecked every
/// `--retry-max` and applied once the guard passes or the operator releases
/// them.
#[derive(Debug)]
pub(crate) struct Held {
    changes: Fold,
    /// First seq whose changes are held: `--state` never records more than
    /// the seq before it, so a restart replays them.
    first: Option<u64>,
    /// Deletions held (for the result record and `STATUS=`); 0 when none.
    count: u64,
    /// When held changes are looked at again.
    recheck_at: Instant,
    /// The operator released what is held (SIGUSR2, `--release-held`):
    /// the next transfer applies it without the delete guards.
    release: bool,
}

impl Held {
    /// Nothing held; `release`: `--release-held` (the first transfer
    /// applies whatever the guards would hold).
    pub(crate) fn new(release: bool, now: Instant) -> Self {
        Held {
            changes: Fold::new(),
            first: None,
            count: 0,
            recheck_at: now,
            release,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// Deletions held; 0 when none.
    pub(crate) fn count(&self) -> u64 {
        self.count
    }

    /// First seq of the held changes, if any are kept from a seq.
    pub(crate) fn first(&self) -> Option<u64> {
        self.first
    }

    /// The operator released what is held: the next transfer applies it
    /// without the delete guards.
    pub(crate) fn released(&self) -> bool {
        self.release
    }

    /// SIGUSR2: release what is held. False when nothing is.
    pub(crate) fn release(&mut self) -> bool {
        if self.is_empty() {
            return false;
        }
        self.release = true;
        true
    }

    /// The operator's release was applied: the source as it is now is
    /// accepted, the guards apply again.
    pub(crate) fn release_done(&mut self) {
        self.release = false;
    }

    /// A new stream starts with a full sync, which weighs again whatever
    /// was held under the old one.
    pub(crate) fn clear(&mut self) {
        self.changes = Fold::new();
        self.first = None;
        self.count = 0;
    }

    /// When held changes want a transfer when nothing else is pending: at
    /// `next_try` once released, else at their recheck (not before
    /// `next_try`). `None` when nothing is held.
    pub(crate) fn due(&self, next_try: Instant) -> Option<Instant> {
        if self.is_empty() {
            None
        } else if self.release {
            Some(next_try)
        } else {
            Some(self.recheck_at.max(next_try))
        }
    }

    /// Whether a transfer at `now` weighs the held changes again. Only at
    /// their recheck or release: merged into every batch, a held subtree
    /// (the root, after a held full sync) would turn each later batch into
    /// a full sync, and the hold would weigh everything forever.
    pub(crate) fn weighs_now(&self, now: Instant) -> bool {
        !self.is_empty() && (self.release || now >= self.recheck_at)
    }

    /// Takes the held changes and their first seq, to weigh them again.
    /// The count stays until [`Held::applied`] or a new hold.
    pub(crate) fn take(&mut self) -> (Fold, Option<u64>) {
        (std::mem::take(&mut self.changes), self.first.take())
    }

    /// Looks at the held changes at the next transfer (the end of input).
    pub(crate) fn recheck_now(&mut self, now: Instant) {
        self.recheck_at = now;
    }

    /// The held changes were applied: returns how many deletions were held
    /// (for the log), none when none were.
    pub(crate) fn applied(&mut self) -> Option<u64> {
        (self.count > 0).then(|| std::mem::replace(&mut self.count, 0))
    }

    /// Keeps what a guard refused (`report.held()`) for later. `merged`:
    /// the changes included everything held before, so the count starts
    /// again; else this hold joins an earlier one. A new hold is rechecked
    /// `recheck` after `now`. True when nothing was held before, so the
    /// caller says so loudly once per hold, not once per batch.
    pub(crate) fn hold(
        &mut self,
        report: &Report,
        changes: &[Change],
        first_seq: u64,
        merged: bool,
        now: Instant,
        recheck: Duration,
    ) -> bool {
        // Nothing held before (or all of it in these changes): a new recheck.
        let fresh = self.changes.is_empty();
        if report.held_everything {
            for change in changes {
                self.changes.push(change.clone());
            }
        } else {
            // Rechecked as updates: a path still missing on the source is
            // deleted then, one that came back is copied.
            let paths = report
                .held_paths
                .iter()
                .map(|p| (ChangeOp::Update, p, false));
            let subtrees = report
                .held_subtrees
                .iter()
                .map(|p| (ChangeOp::Rescan, p, true));
            for (op, path, dir) in paths.chain(subtrees) {
                self.changes.push(Change {
                    op,
                    path: path.clone(),
                    dir,
                    from: None,
                });
            }
        }
        self.first = Some(self.first.map_or(first_seq, |f| f.min(first_seq)));
        let new = self.count == 0;
        // Two holds may overlap (a held batch, then a full sync weighing the
        // same deletions): the larger count is the one sure to be held.
        self.count = if merged {
            report.refused_deletes.max(1)
        } else {
            self.count.max(report.refused_deletes).max(1)
        };
        if fresh {
            self.recheck_at = now + recheck;
        }
        new
    }
}

/// A local target root's device and inode after the last transfer: a root
/// removed or replaced since then (`rm -rf DST`) gets a full sync, since a
/// transfer of only the pending paths would leave it holding just those.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct TargetRoot(Option<RootId>);

impl TargetRoot {
    /// True (said on stderr) when a local target root was removed or
    /// replaced since [`TargetRoot::note`]: a full sync is due.
    pub(crate) fn changed(&mut self, target: &Target) -> bool {
        let (Some(before), Location::Local(root)) = (self.0, &target.location) else {
            return false;
        };
        let now = std::fs::metadata(root).ok().map(|m| RootId::of(&m));
        if now == Some(before) {
            return false;
        }
        log_warn!(
            "{target}: the target root {} {} since the last transfer: doing a full sync",
            root.display(),
            if now.is_none() {
                "disappeared"
            } else {
                "was replaced"
            }
        );
        self.0 = None;
        true
    }

    /// Remembers a local target root as it is after a transfer.
    pub(crate) fn note(&mut self, target: &Target) {
        if let Location::Local(root) = &target.location {
            self.0 = std::fs::metadata(root).ok().map(|m| RootId::of(&m));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::path::WirePath;

    fn report(refused: u64, held_paths: &[&str]) -> Report {
        Report {
            stats: Default::default(),
            code: None,
            outcome: None,
            message: String::new(),
            refused_deletes: refused,
            refusal: Some("too many deletions".into()),
            held_paths: held_paths.iter().map(|p| WirePath::from(*p)).collect(),
            held_subtrees: Vec::new(),
            held_everything: false,
            created_root: false,
            renamed: 0,
            duration: Duration::ZERO,
            would: Vec::new(),
        }
    }

    fn local(path: &std::path::Path) -> Target {
        Target::parse(path.as_os_str(), std::path::Path::new("/")).unwrap()
    }

    #[test]
    fn a_hold_waits_for_its_recheck_or_a_release() {
        let now = Instant::now();
        let recheck = Duration::from_secs(60);
        let mut held = Held::new(false, now);
        assert_eq!(held.due(now), None);
        assert!(!held.release(), "nothing to release");
        held.hold(&report(3, &["a", "b"]), &[], 5, false, now, recheck);
        assert_eq!((held.count(), held.first()), (3, Some(5)));
        assert_eq!(held.due(now), Some(now + recheck));
        assert!(!held.weighs_now(now));
        assert!(held.weighs_now(now + recheck));
        assert!(held.release());
        assert!(held.released());
        assert_eq!(held.due(now), Some(now));
        assert!(held.weighs_now(now));
        let (fold, first) = held.take();
        assert_eq!((fold.len(), first), (2, Some(5)));
        assert!(held.is_empty());
        assert_eq!(held.applied(), Some(3));
        assert_eq!(held.applied(), None);
        held.release_done();
        assert!(!held.released());
    }

    #[test]
    fn held_paths_are_rechecked_as_updates_and_subtrees_as_rescans() {
        let now = Instant::now();
        let mut held = Held::new(false, now);
        let partial = Report {
            held_subtrees: vec![WirePath::from("d")],
            ..report(2, &["f"])
        };
        held.hold(&partial, &[], 1, false, now, Duration::ZERO);
        let (mut fold, _) = held.take();
        let got: Vec<(ChangeOp, bool)> = fold.take().iter().map(|c| (c.op, c.dir)).collect();
        assert_eq!(got, [(ChangeOp::Update, false), (ChangeOp::Rescan, true)]);
    }

    #[test]
    fn overlapping_holds_keep_the_larger_count_and_the_first_seq() {
        let now = Instant::now();
        let recheck = Duration::from_secs(60);
        let mut held = Held::new(false, now);
        assert!(held.hold(&report(4, &["a"]), &[], 9, false, now, recheck));
        // A later hold joins it: the recheck stays where it was.
        let later = now + Duration::from_secs(10);
        assert!(
            !held.hold(&report(2, &["b"]), &[], 3, false, later, recheck),
            "still held"
        );
        assert_eq!((held.count(), held.first()), (4, Some(3)));
        assert_eq!(held.due(now), Some(now + recheck));
        // Weighed again as a whole: the count starts again, at least 1.
        held.take();
        held.hold(&report(0, &["a"]), &[], 3, true, later, recheck);
        assert_eq!(held.count(), 1);
        assert_eq!(held.due(now), Some(later + recheck), "a fresh hold");
    }

    #[test]
    fn a_source_that_changed_holds_everything_and_a_new_stream_clears() {
        let now = Instant::now();
        let mut held = Held::new(true, now);
        assert!(held.released(), "--release-held");
        let changes = [Change {
            op: ChangeOp::Delete,
            path: "x".into(),
            dir: false,
            from: None,
        }];
        let everything = Report {
            held_everything: true,
            ..report(1, &[])
        };
        held.hold(&everything, &changes, 1, false, now, Duration::ZERO);
        let (mut fold, first) = held.take();
        assert_eq!((fold.take(), first), (changes.to_vec(), Some(1)));
        held.hold(&everything, &changes, 4, true, now, Duration::ZERO);
        held.clear();
        assert!(held.is_empty());
        assert_eq!((held.count(), held.first()), (0, None));
    }

    #[test]
    fn a_target_root_that_goes_away_is_noticed_once() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("dst");
        std::fs::create_dir(&root).unwrap();
        let target = local(&root);
        let mut noted = TargetRoot::default();
        assert!(!noted.changed(&target), "nothing noted yet");
        noted.note(&target);
        assert!(!noted.changed(&target));
        std::fs::remove_dir(&root).unwrap();
        std::fs::create_dir(&root).unwrap();
        // Maybe the same inode number again; removed then is certain.
        std::fs::remove_dir(&root).unwrap();
        assert!(noted.changed(&target));
        assert!(!noted.changed(&target), "a full sync is queued once");
    }
}
