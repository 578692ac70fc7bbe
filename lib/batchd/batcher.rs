//! When `batchd` closes a batch: the delay and size rules, stream changes and
//! the order of records passed through, as a pure state machine. It takes
//! records and `now` and says what to write; clocks, threads and stdin stay
//! with the caller (`batchd`).

use std::time::{Duration, Instant};

use crate::fold::{Fold, PathTable};
use crate::wire::event::{Batch, Event, EventKind, Record, Timestamp};
use crate::wire::path::WirePath;

/// How long and how large a batch may grow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// A batch closes this long after its first event at the latest: the
    /// longest a change waits here (lsyncd's `delay`).
    pub delay: Duration,
    /// A batch closes early once no event came for this long: a source
    /// that went quiet does not wait out the delay. `None`: never early,
    /// every batch waits the whole delay (lsyncd's way).
    pub settle: Option<Duration>,
    /// A batch closes as soon as this many changes are pending after folding
    /// (lsyncd's `maxDelays`). `None`: no limit.
    pub max_changes: Option<usize>,
}

/// Something to write, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Out {
    /// A closed batch. Its `ts` is empty: the caller stamps it when writing
    /// (this module has no wall clock).
    Batch(Batch),
    /// A record that is not an event, unchanged.
    Pass(Record),
}

/// The batch being filled, and the stream it belongs to.
#[derive(Debug)]
pub struct Batcher {
    limits: Limits,
    fold: Fold,
    stream: String,
    root: WirePath,
    /// `seq` of the last event seen in this stream (0: none yet).
    last_seq: u64,
    /// `seq` of the first event in the open batch.
    first_seq: Option<u64>,
    /// When the open batch started; `None` when no batch is open.
    opened: Option<Instant>,
    /// When the open batch last took an event (or a malformed line).
    last_input: Option<Instant>,
    header_seen: bool,
    /// Paths with a `create` in the open batch, and in the batch before it.
    /// A watcher may report a new entry twice (listed, then seen by its new
    /// watch); when the two fall on either side of a batch boundary, the
    /// second is not news: the target holds the entry from the first batch,
    /// so a rename of it can stay a rename. (A delete of it reaches the
    /// target either way: the fold never drops one.)
    /// (The fold's kind of table: one cache line per look-up, fetched ahead
    /// by [`prefetch`](Self::prefetch).)
    created: PathTable<()>,
    created_before: PathTable<()>,
}

impl Batcher {
    pub fn new(limits: Limits) -> Self {
        Batcher {
            limits,
            fold: Fold::new(),
            stream: String::new(),
            root: WirePath::root(),
            last_seq: 0,
            first_seq: None,
            opened: None,
            last_input: None,
            header_seen: false,
            created: PathTable::default(),
            created_before: PathTable::default(),
        }
    }

    /// Takes one record. Events are folded into the open batch (which closes
    /// when it reaches `max_changes`); every other record first closes the
    /// open batch, so records leave in the order they came. Returns a warning
    /// for the log when the record breaks a rule of the stream.
    pub fn record(&mut self, record: Record, now: Instant, out: &mut Vec<Out>) -> Option<String> {
        match record {
            Record::Event(ev) => return self.event(&ev, now, out),
            Record::Header(header) => {
                self.flush(out);
                if !self.header_seen || header.stream != self.stream {
                    self.stream = header.stream.clone();
                    self.root = header.root.clone();
                    self.last_seq = 0;
                    self.header_seen = true;
                    self.created_before.clear();
                }
                out.push(Out::Pass(Record::Header(header)));
            }
            other => {
                self.flush(out);
                out.push(Out::Pass(other));
            }
        }
        None
    }

    /// [`record`](Self::record) for an event, which the caller keeps.
    pub fn event(&mut self, ev: &Event, now: Instant, out: &mut Vec<Out>) -> Option<String> {
        let mut warning = None;
        if !self.header_seen && self.last_seq == 0 && self.first_seq.is_none() {
            warning = Some(
                "events before any stream header: their batches carry an empty stream id".into(),
            );
        }
        self.open(now);
        if ev.seq <= self.last_seq {
            // Rule 5: a stream never goes back. Something is wrong upstream,
            // so nothing is trusted: a full sync.
            warning = Some(format!(
                "event seq {} after seq {}: the stream went backwards; the next batch is a full rescan of the root",
                ev.seq, self.last_seq
            ));
            self.fold.rescan_all();
            // The stream goes on from here: later seqs are measured against
            // this one (else every event after a jump to 2^64-1 would be
            // "backwards"), and the batch starts here, so its range never
            // runs backwards either.
            self.first_seq = None;
        }
        self.last_seq = ev.seq;
        self.first_seq.get_or_insert(ev.seq);
        if ev.kind == EventKind::Create {
            let path = ev.path.as_bytes();
            if !self.created_before.is_empty() && self.created_before.contains_key(path) {
                // Possibly the second report of an entry the last batch made.
                let again = Event {
                    kind: EventKind::Modify,
                    ..ev.clone()
                };
                self.fold.push_event(&again);
            } else {
                self.fold.push_event(ev);
            }
            self.created.insert(path, ());
        } else {
            self.fold.push_event(ev);
        }
        if self
            .limits
            .max_changes
            .is_some_and(|max| self.fold.len() >= max)
        {
            self.flush(out);
        }
        warning
    }

    /// Asks for the memory [`event`](Self::event) will read for `ev`, so
    /// that the fetch overlaps the folding of the events before it (at
    /// 100,000 paths the fold mostly waits on memory). `near`: the second
    /// call, a few events before folding it, after the first one further
    /// ahead. A hint only: nothing changes.
    pub fn prefetch(&self, ev: &Event, near: bool) {
        if near {
            self.fold.prefetch_record(ev);
            return;
        }
        self.fold.prefetch_index(ev);
        if ev.kind == EventKind::Create {
            let path = ev.path.as_bytes();
            self.created.prefetch(path);
            self.created_before.prefetch(path);
        }
    }

    /// A line that could not be read as a record: something may have been
    /// missed, so the open batch becomes a full rescan of the root.
    pub fn malformed(&mut self, now: Instant) {
        self.open(now);
        self.fold.rescan_all();
    }

    /// When the open batch is due, if one is open: `delay` after it
    /// opened, or `settle` after its last input if that comes first.
    pub fn deadline(&self) -> Option<Instant> {
        let latest = self.opened? + self.limits.delay;
        let quiet = self
            .limits
            .settle
            .zip(self.last_input)
            .map(|(settle, last)| last + settle);
        Some(quiet.map_or(latest, |q| q.min(latest)))
    }

    /// Closes the open batch if it is due at `now`.
    pub fn tick(&mut self, now: Instant, out: &mut Vec<Out>) {
        if self.deadline().is_some_and(|d| d <= now) {
            self.flush(out);
        }
    }

    /// Closes the open batch now (end of input, a signal, another record).
    /// A batch whose events folded into nothing is still written: it tells
    /// the consumer how far the stream has been read.
    pub fn flush(&mut self, out: &mut Vec<Out>) {
        self.last_input = None;
        if self.opened.take().is_none() {
            return;
        }
        let last_seq = self.last_seq;
        // A batch opened by a malformed line alone covers no event.
        let first_seq = self.first_seq.take().unwrap_or(last_seq);
        out.push(Out::Batch(Batch {
            stream: self.stream.clone(),
            first_seq,
            last_seq,
            root: self.root.clone(),
            ts: Timestamp(String::new()),
            changes: self.fold.take(),
        }));
        self.created_before = std::mem::take(&mut self.created);
    }

    fn open(&mut self, now: Instant) {
        self.opened.get_or_insert(now);
        self.last_input = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::event::{ChangeOp, EventKind, Header};

    const SEC: Duration = Duration::from_secs(1);

    fn header(stream: &str) -> Record {
        Record::Header(Header {
            v: 1,
            stream: stream.into(),
            root: "/data".into(),
            host: "h".into(),
            ts: Timestamp("t".into()),
            producer: "test/0".into(),
            backend: None,
        })
    }

    fn modify(seq: u64, path: &str) -> Record {
        Record::Event(Event {
            seq,
            ts: Timestamp("t".into()),
            kind: EventKind::Modify,
            path: path.into(),
            dir: false,
            from: None,
        })
    }

    fn batches(out: &[Out]) -> Vec<(u64, u64, usize)> {
        out.iter()
            .filter_map(|o| match o {
                Out::Batch(b) => Some((b.first_seq, b.last_seq, b.changes.len())),
                Out::Pass(_) => None,
            })
            .collect()
    }

    fn batcher(delay: Duration, max: Option<usize>) -> Batcher {
        Batcher::new(Limits {
            delay,
            settle: None,
            max_changes: max,
        })
    }

    #[test]
    fn a_quiet_source_closes_the_batch_after_the_settle() {
        const MS: Duration = Duration::from_millis(1);
        let t0 = Instant::now();
        let mut b = Batcher::new(Limits {
            delay: 200 * MS,
            settle: Some(30 * MS),
            max_changes: None,
        });
        let mut out = Vec::new();
        b.record(header("s"), t0, &mut out);
        b.record(modify(1, "a"), t0, &mut out);
        assert_eq!(b.deadline(), Some(t0 + 30 * MS));
        // Each event pushes the quiet deadline on...
        b.record(modify(2, "b"), t0 + 20 * MS, &mut out);
        assert_eq!(b.deadline(), Some(t0 + 50 * MS));
        b.tick(t0 + 49 * MS, &mut out);
        assert!(batches(&out).is_empty());
        b.tick(t0 + 50 * MS, &mut out);
        assert_eq!(batches(&out), [(1, 2, 2)]);
        // ...but never past the delay after the batch's first event: a
        // source that never goes quiet still gets a batch per delay.
        for (i, seq) in (3..=20).enumerate() {
            let at = t0 + 100 * MS + 20 * MS * i as u32;
            b.tick(at, &mut out);
            b.record(modify(seq, "c"), at, &mut out);
        }
        assert_eq!(batches(&out), [(1, 2, 2), (3, 12, 1)], "closed at 300 ms");
        assert_eq!(b.deadline(), Some(t0 + 470 * MS));
        b.tick(t0 + 470 * MS, &mut out);
        assert_eq!(batches(&out), [(1, 2, 2), (3, 12, 1), (13, 20, 1)]);
        assert_eq!(b.deadline(), None);
    }

    #[test]
    fn a_batch_closes_delay_after_its_first_event() {
        let t0 = Instant::now();
        let mut b = batcher(15 * SEC, None);
        let mut out = Vec::new();
        b.record(header("s"), t0, &mut out);
        assert_eq!(b.deadline(), None);
        b.record(modify(1, "a"), t0, &mut out);
        b.record(modify(2, "b"), t0 + 10 * SEC, &mut out);
        assert_eq!(b.deadline(), Some(t0 + 15 * SEC));
        b.tick(t0 + 14 * SEC, &mut out);
        assert!(batches(&out).is_empty());
        b.tick(t0 + 15 * SEC, &mut out);
        assert_eq!(batches(&out), [(1, 2, 2)]);
        assert_eq!(b.deadline(), None);
        let Out::Batch(batch) = &out[1] else { panic!() };
        assert_eq!(batch.stream, "s");
        assert_eq!(batch.root, "/data".into());
    }

    #[test]
    fn a_batch_closes_early_at_max_changes_after_folding() {
        let t0 = Instant::now();
        let mut b = batcher(15 * SEC, Some(2));
        let mut out = Vec::new();
        b.record(header("s"), t0, &mut out);
        for seq in 1..=5 {
            b.record(modify(seq, "same"), t0, &mut out);
        }
        assert!(
            batches(&out).is_empty(),
            "five modifies of one path are one change"
        );
        b.record(modify(6, "other"), t0, &mut out);
        assert_eq!(batches(&out), [(1, 6, 2)]);
    }

    #[test]
    fn other_records_close_the_batch_and_keep_their_place() {
        let t0 = Instant::now();
        let mut b = batcher(15 * SEC, None);
        let mut out = Vec::new();
        b.record(header("s"), t0, &mut out);
        b.record(modify(1, "a"), t0, &mut out);
        let other = Record::parse(br#"{"type":"note","x":1}"#).unwrap();
        b.record(other.clone(), t0, &mut out);
        assert!(matches!(&out[1], Out::Batch(_)));
        assert_eq!(out[2], Out::Pass(other));
    }

    #[test]
    fn a_new_stream_closes_the_old_one_first() {
        let t0 = Instant::now();
        let mut b = batcher(15 * SEC, None);
        let mut out = Vec::new();
        b.record(header("s1"), t0, &mut out);
        b.record(modify(7, "a"), t0, &mut out);
        b.record(header("s2"), t0, &mut out);
        b.record(modify(1, "b"), t0, &mut out);
        b.flush(&mut out);
        let streams: Vec<(String, u64)> = out
            .iter()
            .filter_map(|o| match o {
                Out::Batch(b) => Some((b.stream.clone(), b.first_seq)),
                Out::Pass(_) => None,
            })
            .collect();
        assert_eq!(streams, [("s1".into(), 7), ("s2".into(), 1)]);
        assert!(matches!(&out[2], Out::Pass(Record::Header(h)) if h.stream == "s2"));
    }

    #[test]
    fn a_malformed_line_makes_the_next_batch_a_full_rescan() {
        let t0 = Instant::now();
        let mut b = batcher(SEC, None);
        let mut out = Vec::new();
        b.record(header("s"), t0, &mut out);
        b.record(modify(1, "a"), t0, &mut out);
        b.flush(&mut out);
        b.malformed(t0);
        assert_eq!(b.deadline(), Some(t0 + SEC));
        b.record(modify(2, "b"), t0, &mut out);
        b.flush(&mut out);
        let Out::Batch(batch) = out.last().unwrap() else {
            panic!()
        };
        assert_eq!((batch.first_seq, batch.last_seq), (2, 2));
        assert_eq!(batch.changes.len(), 1);
        assert_eq!(batch.changes[0].op, ChangeOp::Rescan);
        assert!(batch.changes[0].path.is_root());
        // Alone, it covers no event: the range is the last seq seen.
        b.malformed(t0);
        b.flush(&mut out);
        assert_eq!(batches(&out).last(), Some(&(2, 2, 1)));
    }

    #[test]
    fn a_stream_going_backwards_is_a_full_rescan_with_a_warning() {
        let t0 = Instant::now();
        let mut b = batcher(SEC, None);
        let mut out = Vec::new();
        b.record(header("s"), t0, &mut out);
        assert!(b.record(modify(5, "a"), t0, &mut out).is_none());
        let warning = b.record(modify(3, "b"), t0, &mut out).unwrap();
        assert!(warning.contains("seq 3 after seq 5"), "{warning}");
        // Once: the stream goes on from the new seq.
        assert!(b.record(modify(4, "c"), t0, &mut out).is_none());
        b.flush(&mut out);
        let Out::Batch(batch) = out.last().unwrap() else {
            panic!()
        };
        assert_eq!(batch.changes[0].op, ChangeOp::Rescan);
        assert_eq!((batch.first_seq, batch.last_seq), (3, 4));
    }

    #[test]
    fn nothing_is_written_when_nothing_is_open() {
        let mut b = batcher(SEC, None);
        let mut out = Vec::new();
        b.flush(&mut out);
        b.tick(Instant::now() + 100 * SEC, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn a_create_reported_again_after_a_batch_boundary_is_not_new() {
        let t0 = Instant::now();
        let mut b = batcher(SEC, None);
        let mut out = Vec::new();
        b.record(header("s"), t0, &mut out);
        let event = |seq, kind| {
            let Record::Event(mut e) = modify(seq, "d/x") else {
                unreachable!()
            };
            e.kind = kind;
            Record::Event(e)
        };
        b.record(event(1, EventKind::Create), t0, &mut out);
        b.flush(&mut out);
        // The watcher's second report, then a delete: the target has `d/x`
        // from the first batch, so the delete must reach it.
        b.record(event(2, EventKind::Create), t0, &mut out);
        b.record(event(3, EventKind::Delete), t0, &mut out);
        b.flush(&mut out);
        let Out::Batch(batch) = out.last().unwrap() else {
            panic!()
        };
        assert_eq!(batch.changes.len(), 1);
        assert_eq!(batch.changes[0].op, ChangeOp::Delete);
        // Two batches later it is new again, and made and gone is still a
        // delete (an earlier recursive copy may have put it on the target).
        b.record(event(4, EventKind::Modify), t0, &mut out);
        b.flush(&mut out);
        b.record(event(5, EventKind::Create), t0, &mut out);
        b.record(event(6, EventKind::Delete), t0, &mut out);
        b.flush(&mut out);
        assert_eq!(batches(&out).last(), Some(&(5, 6, 1)));
    }

    #[test]
    fn a_path_made_and_gone_within_a_batch_is_still_deleted() {
        let t0 = Instant::now();
        let mut b = batcher(SEC, None);
        let mut out = Vec::new();
        b.record(header("s"), t0, &mut out);
        let mut create = modify(1, "tmp");
        let mut delete = modify(2, "tmp");
        if let (Record::Event(c), Record::Event(d)) = (&mut create, &mut delete) {
            c.kind = EventKind::Create;
            d.kind = EventKind::Delete;
        }
        b.record(create, t0, &mut out);
        b.record(delete, t0, &mut out);
        b.flush(&mut out);
        assert_eq!(batches(&out), [(1, 2, 1)]);
        let Out::Batch(batch) = out.last().unwrap() else {
            panic!()
        };
        assert_eq!(batch.changes[0].op, ChangeOp::Delete);
        assert_eq!(batch.changes[0].path.as_bytes(), b"tmp");
    }
}
