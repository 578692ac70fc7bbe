//! The writer's memory of its latest records, and the resume decision: can a
//! reader that has applied up to `(stream, seq)` continue from here, or has
//! the backlog lost what it needs so that it must do a full sync first?
//! (Redis's partial versus full resync, applied to file events.) Pure.

use std::collections::VecDeque;
use std::sync::Arc;

/// One stored record line and the `seq` range it covers.
#[derive(Debug, Clone)]
struct Entry {
    /// Highest seq covered by this record or any before it.
    last: u64,
    /// The record carries a seq itself (events, batches, ends).
    has_seq: bool,
    line: Arc<[u8]>,
}

/// Where a (re)connecting reader starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start {
    /// Absolute index of the first record to send.
    pub index: u64,
    /// The reader must sync the whole root before applying what follows.
    pub full: bool,
}

/// A bounded buffer of the latest record lines, by count and by bytes.
#[derive(Debug)]
pub struct Backlog {
    entries: VecDeque<Entry>,
    /// Absolute index of `entries[0]`.
    base: u64,
    bytes: usize,
    max_records: usize,
    max_bytes: usize,
    /// Every seq up to this one is missing from the backlog: dropped to make
    /// room, or never seen by this writer (a batchd that joined its source's
    /// stream late starts mid-stream). A reader that has applied less than
    /// this cannot resume here.
    missing_upto: u64,
    /// A record with a seq has been stored since the last reset.
    started: bool,
    /// Highest seq pushed so far.
    last_seq: u64,
    /// This writer made the stream (watchd), so before its first record it
    /// knows that nothing came before. A writer that passes another's stream
    /// on (batchd) joined it somewhere it cannot name until its first record
    /// arrives: till then it vouches for nothing.
    origin: bool,
}

impl Backlog {
    pub fn new(max_records: usize, max_bytes: usize) -> Self {
        Backlog {
            entries: VecDeque::new(),
            base: 0,
            bytes: 0,
            max_records: max_records.max(1),
            max_bytes: max_bytes.max(1),
            missing_upto: 0,
            started: false,
            last_seq: 0,
            origin: false,
        }
    }

    /// Marks this writer as the maker of its streams (see `origin`).
    pub fn set_origin(&mut self) {
        self.origin = true;
    }

    /// Forgets everything: a new stream starts.
    pub fn reset(&mut self) {
        self.base += self.entries.len() as u64;
        self.entries.clear();
        self.bytes = 0;
        self.missing_upto = 0;
        self.started = false;
        self.last_seq = 0;
    }

    /// Stores one line; `seqs` is the first and last seq the record covers
    /// (an event's seq twice, a batch's first_seq and last_seq), `None` for
    /// records without one.
    pub fn push(&mut self, seqs: Option<(u64, u64)>, line: Arc<[u8]>) {
        if let Some((first, last)) = seqs {
            if !self.started {
                self.started = true;
                self.missing_upto = self.missing_upto.max(first.saturating_sub(1));
            }
            self.last_seq = self.last_seq.max(last);
        }
        let seq = seqs.map(|(_, last)| last);
        self.bytes += line.len();
        self.entries.push_back(Entry {
            last: self.last_seq,
            has_seq: seq.is_some(),
            line,
        });
        while self.entries.len() > self.max_records
            || (self.bytes > self.max_bytes && self.entries.len() > 1)
        {
            let old = self.entries.pop_front().expect("not empty");
            self.bytes -= old.line.len();
            // A record without a seq after `old.last` may not have been
            // seen by a reader at exactly that seq: it is gone too.
            let gone_upto = if old.has_seq { old.last } else { old.last + 1 };
            self.missing_upto = self.missing_upto.max(gone_upto);
            self.base += 1;
        }
    }

    /// Absolute index one past the newest record.
    pub fn end(&self) -> u64 {
        self.base + self.entries.len() as u64
    }

    /// Absolute index of the oldest record held.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// The line at absolute `index`, if still held.
    pub fn get(&self, index: u64) -> Option<Arc<[u8]>> {
        let i = index.checked_sub(self.base)?;
        self.entries
            .get(usize::try_from(i).ok()?)
            .map(|e| e.line.clone())
    }

    /// Where a reader that has applied `applied` of stream `reader_stream`
    /// starts, given that this writer's stream is `current`.
    pub fn start_for(&self, current: &str, reader_stream: Option<&str>, applied: u64) -> Start {
        let resumable = reader_stream == Some(current)
            && if self.started {
                applied >= self.missing_upto && applied <= self.last_seq
            } else {
                // Nothing stored yet: only the stream's maker knows that a
                // reader at 0 has missed nothing.
                self.origin && applied == 0
            };
        if !resumable {
            // Anything in the backlog is older than the full sync the reader
            // is about to do: start it at the newest end.
            return Start {
                index: self.end(),
                full: true,
            };
        }
        // Records without a seq right after the last applied one may or
        // may not have been seen: send them again rather than lose them.
        let skip = self
            .entries
            .iter()
            .take_while(|e| e.last < applied || (e.last == applied && e.has_seq))
            .count();
        Start {
            index: self.base + skip as u64,
            full: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(s: &str) -> Arc<[u8]> {
        Arc::from(s.as_bytes())
    }

    fn filled(n: u64, max: usize) -> Backlog {
        let mut b = Backlog::new(max, usize::MAX);
        for seq in 1..=n {
            b.push(Some((seq, seq)), line(&format!("e{seq}")));
        }
        b
    }

    #[test]
    fn resumes_right_after_what_was_applied() {
        let b = filled(10, 100);
        let start = b.start_for("s", Some("s"), 7);
        assert!(!start.full);
        assert_eq!(&*b.get(start.index).unwrap(), b"e8");
        let up_to_date = b.start_for("s", Some("s"), 10);
        assert_eq!(
            up_to_date,
            Start {
                index: b.end(),
                full: false
            }
        );
        let from_zero = b.start_for("s", Some("s"), 0);
        assert_eq!(&*b.get(from_zero.index).unwrap(), b"e1");
    }

    #[test]
    fn other_stream_or_no_stream_means_full() {
        let b = filled(10, 100);
        assert_eq!(
            b.start_for("s", Some("other"), 5),
            Start {
                index: b.end(),
                full: true
            }
        );
        assert_eq!(
            b.start_for("s", None, 0),
            Start {
                index: b.end(),
                full: true
            }
        );
    }

    #[test]
    fn evicted_history_means_full() {
        let b = filled(10, 3);
        assert_eq!(b.base(), 7);
        assert!(b.start_for("s", Some("s"), 6).full, "seq 7 was dropped");
        let ok = b.start_for("s", Some("s"), 7);
        assert!(!ok.full);
        assert_eq!(&*b.get(ok.index).unwrap(), b"e8");
    }

    #[test]
    fn a_writer_that_joined_late_cannot_vouch_for_earlier_seqs() {
        // A restarted batchd joins its source at seq 20; its first batch
        // covers 21..=25. A reader that had applied up to 12 must not be
        // "resumed" across 13..=20, which nobody here ever saw.
        let mut b = Backlog::new(100, usize::MAX);
        b.push(Some((21, 25)), line("batch"));
        assert!(b.start_for("s", Some("s"), 12).full);
        assert!(!b.start_for("s", Some("s"), 20).full);
        assert!(!b.start_for("s", Some("s"), 25).full);
    }

    #[test]
    fn a_writer_that_joined_vouches_for_nothing_before_its_first_record() {
        // A restarted batchd has the header of its source's stream but no
        // record yet; a reader that had applied 0 of that stream (a full
        // sync, then nothing) may have missed seqs 1..=5, which the old
        // batchd held when it stopped. Found by the systemd test.
        let joined = Backlog::new(100, usize::MAX);
        assert!(joined.start_for("s", Some("s"), 0).full);
        assert!(joined.start_for("s", Some("s"), 3).full);
        let mut origin = Backlog::new(100, usize::MAX);
        origin.set_origin();
        assert!(
            !origin.start_for("s", Some("s"), 0).full,
            "watchd's own stream"
        );
        assert!(
            origin.start_for("s", Some("s"), 3).full,
            "ahead of the writer"
        );
        origin.reset();
        assert!(
            !origin.start_for("t", Some("t"), 0).full,
            "origin survives a reset"
        );
    }

    #[test]
    fn a_reader_ahead_of_the_writer_is_not_trusted() {
        let b = filled(5, 100);
        assert!(b.start_for("s", Some("s"), 9).full);
    }

    #[test]
    fn byte_bound_and_records_without_seq() {
        let mut b = Backlog::new(100, 10);
        b.push(Some((1, 1)), line("aaaa"));
        b.push(None, line("pass"));
        b.push(Some((2, 2)), line("bbbb"));
        assert_eq!(b.base(), 1, "first line dropped for bytes");
        let start = b.start_for("s", Some("s"), 1);
        assert!(!start.full);
        assert_eq!(&*b.get(start.index).unwrap(), b"pass");
    }

    #[test]
    fn a_dropped_record_without_seq_is_not_skipped_silently() {
        let mut b = Backlog::new(2, usize::MAX);
        b.push(Some((1, 1)), line("e1"));
        b.push(None, line("pass"));
        b.push(Some((2, 2)), line("e2"));
        b.push(Some((3, 3)), line("e3"));
        // "pass" (after seq 1) was dropped: a reader at 1 cannot resume.
        assert!(b.start_for("s", Some("s"), 1).full);
        assert!(!b.start_for("s", Some("s"), 2).full);
    }

    #[test]
    fn reset_starts_a_new_stream() {
        let mut b = filled(5, 100);
        let end = b.end();
        b.reset();
        assert_eq!(b.end(), end);
        b.push(Some((1, 1)), line("n1"));
        assert_eq!(&*b.get(end).unwrap(), b"n1");
    }
}
