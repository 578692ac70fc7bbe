//! What one target has still to apply, and where it stands in the stream:
//! the pending changes folded by path, the seqs received and applied, the
//! records a restart replays. Pure: the worker feeds it work and transfer
//! outcomes, and asks it for the next batch.

use crate::fold::Fold;
use crate::wire::event::{Change, Event};

/// One transfer's worth of changes, and the seqs they cover.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Batch {
    pub(crate) changes: Vec<Change>,
    pub(crate) first_seq: u64,
    pub(crate) last_seq: u64,
}

/// What [`Pending::note_seqs`] made of a range of seqs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Seqs {
    /// News: apply it.
    New,
    /// Applied before a restart (the writer replays from where `--state`
    /// says): skip it.
    Replayed,
    /// The stream went backwards after seq `after` (malformed input): a
    /// full sync is pending now, and the positions start over.
    Backwards { after: u64 },
    /// The first news after a resume skips past the resumed position
    /// `after`: the records between were lost before they were applied
    /// (written to a pipe that died, as `relayd subscribe` acknowledges on
    /// write), so a full sync is pending now.
    Gap { after: u64 },
}

/// A target's pending changes and position in the current stream.
#[derive(Debug)]
pub(crate) struct Pending {
    /// Folded by path (lib/fold/): memory grows with the distinct paths,
    /// not the events, while a target is down.
    changes: Fold,
    /// First seq among the pending changes.
    first: Option<u64>,
    /// Last seq applied on the current stream.
    applied: u64,
    /// The seq `--state` said was applied before this process started, on
    /// the stream it resumed: records up to it are replayed by the writer and
    /// skipped here. 0 when nothing was resumed.
    resumed_upto: u64,
    /// Resumed, and no news yet: the first range past `resumed_upto` must
    /// start right after it, or something between was lost.
    check_gap: bool,
    /// Highest seq received on the current stream.
    seen: u64,
    /// The last seq this process received on the current stream, to notice
    /// a stream that goes backwards.
    received: Option<u64>,
    /// `--max-pending`: past this many distinct paths, a full sync.
    max: usize,
}

impl Pending {
    pub(crate) fn new(max: usize) -> Self {
        Pending {
            changes: Fold::new(),
            first: None,
            applied: 0,
            resumed_upto: 0,
            check_gap: false,
            seen: 0,
            received: None,
            max,
        }
    }

    /// A stream starts: nothing is pending, and the position is `resumed`
    /// (the seq `--state` holds for this stream) or the start.
    pub(crate) fn start(&mut self, resumed: Option<u64>) {
        let at = resumed.unwrap_or(0);
        self.changes = Fold::new();
        self.first = None;
        self.received = None;
        self.applied = at;
        self.seen = at;
        self.resumed_upto = at;
        self.check_gap = resumed.is_some();
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// Distinct paths pending (a full sync is one).
    pub(crate) fn paths(&self) -> u64 {
        self.changes.len() as u64
    }

    /// A full sync of the root is pending.
    pub(crate) fn is_full(&self) -> bool {
        self.changes.is_full_rescan()
    }

    /// Last seq applied on the current stream.
    pub(crate) fn applied_seq(&self) -> u64 {
        self.applied
    }

    /// Highest seq received on the current stream.
    pub(crate) fn seen(&self) -> u64 {
        self.seen
    }

    /// Records that `first..=last` arrived, before its changes are pushed.
    pub(crate) fn note_seqs(&mut self, first: u64, last: u64) -> Seqs {
        let backwards = self.received.is_some_and(|r| first <= r || last < first);
        self.received = Some(last);
        if backwards {
            // Malformed input (seqs only grow within a stream): nothing is
            // trusted, the root is synced, and the positions start over from
            // this seq, so a wild jump (2^64-1, then 2) is neither stored nor
            // makes a restart skip what follows.
            let after = self.seen;
            self.changes.rescan_all();
            self.resumed_upto = 0;
            self.check_gap = false;
            self.seen = last;
            self.applied = self.applied.min(last);
            self.first = Some(first.min(last));
            return Seqs::Backwards { after };
        }
        if last <= self.resumed_upto {
            return Seqs::Replayed;
        }
        self.seen = self.seen.max(last);
        if self.first.is_none() {
            self.first = Some(first);
        }
        if std::mem::take(&mut self.check_gap) && first > self.resumed_upto + 1 {
            self.changes.rescan_all();
            return Seqs::Gap {
                after: self.resumed_upto,
            };
        }
        Seqs::New
    }

    /// Adds a change of a batch (after [`Pending::note_seqs`]).
    pub(crate) fn push(&mut self, change: Change) {
        self.changes.push(change);
    }

    /// Adds a raw watcher event (after [`Pending::note_seqs`]).
    pub(crate) fn push_event(&mut self, event: &Event) {
        self.changes.push_event(event);
    }

    /// Something may have been missed: the next transfer syncs the root.
    pub(crate) fn rescan_all(&mut self) {
        self.changes.rescan_all();
    }

    /// Past `--max-pending` distinct paths, a full sync replaces the list.
    /// True when it did (just now).
    pub(crate) fn bound(&mut self) -> bool {
        if self.changes.len() > self.max && !self.changes.is_full_rescan() {
            self.changes = Fold::new();
            self.changes.rescan_all();
            return true;
        }
        false
    }

    /// Forgets the pending changes (there is no stream to apply them from).
    pub(crate) fn discard(&mut self) {
        self.changes = Fold::new();
    }

    /// Everything pending, as one batch up to the last seq seen. `held`:
    /// changes a guard held, with their first seq, to weigh again in front
    /// of what is pending.
    pub(crate) fn take(&mut self, held: Option<(Fold, Option<u64>)>) -> Batch {
        let (changes, held_first) = match held {
            None => (self.changes.take(), None),
            Some((mut all, first)) => {
                for change in self.changes.take() {
                    all.push(change);
                }
                (all.take(), first)
            }
        };
        let first_seq = match (held_first, self.first.take()) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b).unwrap_or(self.seen),
        };
        Batch {
            changes,
            first_seq,
            last_seq: self.seen,
        }
    }

    /// A batch failed: nothing is lost, its changes go back in front of
    /// whatever arrived meanwhile.
    pub(crate) fn put_back(&mut self, batch: Batch) {
        let newer = self.changes.take();
        for change in batch.changes.into_iter().chain(newer) {
            self.changes.push(change);
        }
        // (Batches sent after it may fail and come back too.)
        self.first = Some(
            self.first
                .map_or(batch.first_seq, |f| f.min(batch.first_seq)),
        );
    }

    /// A batch up to `last_seq` was applied, except what is held from
    /// `held_first` on. Returns the position `--state` may record: never
    /// past held changes, so a restart replays them.
    pub(crate) fn applied(&mut self, last_seq: u64, held_first: Option<u64>) -> u64 {
        let upto = match held_first {
            Some(first) => first.saturating_sub(1).min(last_seq),
            None => last_seq,
        };
        self.applied = upto;
        upto
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::event::ChangeOp;

    /// Seqs received but not applied (the health table's `lag_events`).
    fn lag(p: &Pending) -> u64 {
        p.seen().saturating_sub(p.applied_seq())
    }

    fn update(path: &str) -> Change {
        Change {
            op: ChangeOp::Update,
            path: path.into(),
            dir: false,
            from: None,
        }
    }

    fn paths(batch: &Batch) -> Vec<String> {
        batch
            .changes
            .iter()
            .map(|c| format!("{:?} {}", c.op, String::from_utf8_lossy(c.path.as_bytes())))
            .collect()
    }

    fn fed(seqs: &[(u64, u64, &str)]) -> Pending {
        let mut p = Pending::new(100);
        p.start(None);
        for &(first, last, path) in seqs {
            assert_eq!(p.note_seqs(first, last), Seqs::New);
            p.push(update(path));
        }
        p
    }

    #[test]
    fn batches_that_arrive_while_busy_merge_into_one() {
        let mut p = fed(&[(1, 3, "a"), (4, 9, "b"), (10, 10, "a")]);
        assert_eq!(lag(&p), 10);
        let batch = p.take(None);
        assert_eq!((batch.first_seq, batch.last_seq), (1, 10));
        assert_eq!(paths(&batch), ["Update a", "Update b"]);
        assert!(p.is_empty());
        assert_eq!(p.applied(batch.last_seq, None), 10);
        assert_eq!(lag(&p), 0);
    }

    #[test]
    fn a_failed_batch_goes_back_in_front_of_newer_changes() {
        let mut p = fed(&[(1, 2, "a")]);
        let batch = p.take(None);
        assert_eq!(p.note_seqs(3, 3), Seqs::New);
        p.push(update("b"));
        p.put_back(batch);
        assert_eq!(lag(&p), 3);
        let again = p.take(None);
        assert_eq!((again.first_seq, again.last_seq), (1, 3));
        assert_eq!(paths(&again), ["Update a", "Update b"]);
    }

    #[test]
    fn replayed_seqs_are_skipped_after_a_resume() {
        let mut p = Pending::new(100);
        p.start(Some(5));
        assert_eq!(lag(&p), 0);
        assert_eq!(p.note_seqs(1, 5), Seqs::Replayed);
        assert_eq!(p.note_seqs(6, 7), Seqs::New);
        assert_eq!(p.seen(), 7);
        assert_eq!(lag(&p), 2);
        let batch = p.take(None);
        assert_eq!((batch.first_seq, batch.last_seq), (6, 7));
    }

    #[test]
    fn news_past_the_resumed_position_plus_one_is_a_gap() {
        // Records 6..=8 were lost between the writer and this process.
        let mut p = Pending::new(100);
        p.start(Some(5));
        assert_eq!(p.note_seqs(5, 5), Seqs::Replayed, "the writer's replay");
        assert_eq!(p.note_seqs(9, 9), Seqs::Gap { after: 5 });
        p.push(update("i"));
        let batch = p.take(None);
        assert_eq!(paths(&batch), ["Rescan ."]);
        assert_eq!((batch.first_seq, batch.last_seq), (9, 9));
        // Only the first news after the resume is checked (rule 5 allows gaps).
        assert_eq!(p.note_seqs(12, 12), Seqs::New);

        // Exactly the next seq, or a range reaching back over it: exact.
        for (first, last) in [(6, 6), (3, 9)] {
            let mut p = Pending::new(100);
            p.start(Some(5));
            assert_eq!(p.note_seqs(first, last), Seqs::New);
            assert!(!p.is_full());
        }
        // A stored position of 0 expects seq 1; no stored position, anything.
        let mut p = Pending::new(100);
        p.start(Some(0));
        assert_eq!(p.note_seqs(2, 2), Seqs::Gap { after: 0 });
        let mut p = Pending::new(100);
        p.start(None);
        assert_eq!(p.note_seqs(40, 40), Seqs::New);
    }

    #[test]
    fn a_stream_going_backwards_means_a_full_sync_from_there() {
        let mut p = Pending::new(100);
        p.start(Some(5));
        assert_eq!(p.note_seqs(u64::MAX, u64::MAX), Seqs::Gap { after: 5 });
        assert_eq!(p.note_seqs(2, 2), Seqs::Backwards { after: u64::MAX });
        // Seqs up to the old resume point are news again.
        assert_eq!(p.note_seqs(3, 3), Seqs::New);
        let batch = p.take(None);
        assert_eq!(paths(&batch), ["Rescan ."]);
        assert_eq!((batch.first_seq, batch.last_seq), (2, 3));
        assert_eq!(p.applied(batch.last_seq, None), 3);
        // A range that runs backwards within itself is malformed too.
        assert_eq!(p.note_seqs(9, 8), Seqs::Backwards { after: 3 });
    }

    #[test]
    fn past_max_pending_a_full_sync_replaces_the_list() {
        let mut p = Pending::new(2);
        p.start(None);
        for (seq, path) in [(1, "a"), (2, "b")] {
            p.note_seqs(seq, seq);
            p.push(update(path));
            assert!(!p.bound());
        }
        p.note_seqs(3, 3);
        p.push(update("c"));
        assert!(p.bound());
        assert!(!p.bound(), "said once");
        let batch = p.take(None);
        assert_eq!(paths(&batch), ["Rescan ."]);
        assert_eq!((batch.first_seq, batch.last_seq), (1, 3));
    }

    #[test]
    fn held_changes_come_first_and_keep_state_before_them() {
        let mut p = fed(&[(7, 9, "new")]);
        let mut held = Fold::new();
        held.push(Change {
            op: ChangeOp::Delete,
            ..update("old")
        });
        let batch = p.take(Some((held, Some(3))));
        assert_eq!(paths(&batch), ["Delete old", "Update new"]);
        assert_eq!((batch.first_seq, batch.last_seq), (3, 9));
        // Held again from seq 3: --state stays at 2.
        assert_eq!(p.applied(batch.last_seq, Some(3)), 2);
        assert_eq!(lag(&p), 7);
        // Held from a seq after the batch: the whole batch counts.
        assert_eq!(p.applied(9, Some(20)), 9);
    }

    #[test]
    fn an_empty_take_covers_the_last_seq_seen() {
        let mut p = fed(&[(1, 4, "a")]);
        p.take(None);
        p.rescan_all();
        let batch = p.take(None);
        assert_eq!((batch.first_seq, batch.last_seq), (4, 4));
        assert_eq!(paths(&batch), ["Rescan ."]);
    }

    #[test]
    fn a_new_stream_starts_empty() {
        let mut p = fed(&[(1, 4, "a")]);
        p.start(None);
        assert!(p.is_empty());
        assert_eq!((p.seen(), lag(&p)), (0, 0));
        assert_eq!(p.note_seqs(1, 1), Seqs::New, "seq 1 again is news");
        p.discard();
        assert!(p.is_empty());
    }
}
