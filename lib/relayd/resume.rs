//! The subscriber's pure core: given each JetStream message's position and
//! syncpipe identity, decide what to write so a resume is exact or ends in
//! a full sync (a `rescan` of the root), never a silent skip.

use crate::wire::event::{Event, EventKind, Record, Timestamp};
use crate::wire::path::WirePath;

/// What kind of syncpipe record a message carries (the `Syncpipe-Type` header).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A `header` record: a syncpipe stream starts.
    Header,
    /// A record with its own `seq` (`event`, `end`).
    Seq,
    /// Anything else (passed through; its `Syncpipe-Seq` is the last seq before it).
    Other,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Header => "header",
            Kind::Seq => "seq",
            Kind::Other => "other",
        }
    }

    pub fn parse(s: &str) -> Kind {
        match s {
            "header" => Kind::Header,
            "seq" => Kind::Seq,
            _ => Kind::Other,
        }
    }
}

/// One message as the subscriber sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Meta {
    /// The JetStream stream sequence.
    pub js_seq: u64,
    /// The syncpipe stream id (`""` before any header).
    pub stream: String,
    /// The record's `seq`, or for [`Kind::Header`]/[`Kind::Other`] the last seq before it.
    pub seq: u64,
    pub kind: Kind,
    /// The current syncpipe `header` line (without newline), if there was one.
    pub header: Option<Vec<u8>>,
}

/// Where a subscriber starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// No proof of what the consumer downstream holds (a new durable consumer,
    /// or one made for an earlier incarnation of the JetStream stream): the
    /// first message must be a syncpipe `header`, or a full sync follows.
    Fresh,
    /// The durable consumer acknowledged everything up to this JetStream seq;
    /// the next message must be the one right after it.
    After(u64),
}

/// What to write for one message, in order.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Step {
    /// Lines (without newline) to write before acknowledging the message.
    pub lines: Vec<Vec<u8>>,
    /// Why a full sync was asked for (for the log), when it was.
    pub rescan: Option<String>,
    /// Something was lost that carries no change (only pass-through records);
    /// logged, no rescan needed.
    pub warning: Option<String>,
    /// A redelivery of a message already written: acknowledge, write nothing.
    pub duplicate: bool,
}

/// The subscriber's memory within one process.
#[derive(Debug)]
pub struct Follower {
    /// The JetStream seq the next message must have, when continuity is proven.
    expect: Option<u64>,
    last_js: u64,
    /// The syncpipe stream whose header was written last, and its highest seq written.
    written_stream: Option<String>,
    written_seq: u64,
}

impl Follower {
    pub fn new(start: Start) -> Self {
        let (expect, last_js) = match start {
            Start::Fresh => (None, 0),
            Start::After(n) => (Some(n + 1), n),
        };
        Follower {
            expect,
            last_js,
            written_stream: None,
            written_seq: 0,
        }
    }

    /// After a reconnect: the consumer is still the one we followed
    /// (`Some(ack floor)`), or it is new (`None`), so continuity must be proven again.
    pub fn restart(&mut self, start: Start) {
        match start {
            Start::After(n) => {
                self.expect = Some(n.max(self.last_js) + 1);
                self.last_js = self.last_js.max(n);
            }
            Start::Fresh => {
                self.expect = None;
                self.last_js = 0;
            }
        }
    }

    /// At a process start on a consumer that had acknowledged messages:
    /// writes `meta`, the last event it acknowledged (and its header), once
    /// more. It was acknowledged when it was written, not when it was
    /// applied, so the pipeline that died with the last process may have
    /// lost it and what came before; a consumer downstream that stored its
    /// position (`pushd --state`) skips it when it applied it, and when it
    /// did not, sees its seq past its own position + 1 and does a full sync
    /// at once, not only when the next change comes.
    pub fn replayed(&mut self, meta: &Meta, line: &[u8]) -> Step {
        let mut step = Step::default();
        if let Some(header) = &meta.header {
            step.lines.push(header.clone());
        }
        step.lines.push(line.to_vec());
        self.written_stream = Some(meta.stream.clone());
        self.written_seq = meta.seq;
        step
    }

    /// At a process start, when the last event acknowledged cannot be
    /// found: a `rescan` of the root at the seq the message at the cursor
    /// carries stands in for it (a consumer downstream that lost what
    /// came before then does a full sync; see [`replayed`](Self::replayed)).
    pub fn replayed_rescan(&mut self, meta: &Meta) -> Step {
        let mut step = self.replayed(meta, &rescan_line(meta.seq));
        step.rescan = Some("the last event acknowledged is not found".into());
        step
    }

    /// The JetStream seq of the last message written.
    pub fn last_js(&self) -> u64 {
        self.last_js
    }

    /// Decides what to write for `meta` whose payload is `line`.
    pub fn accept(&mut self, meta: &Meta, line: &[u8]) -> Step {
        let mut step = Step::default();
        if meta.js_seq <= self.last_js && self.expect.is_some() {
            step.duplicate = true;
            return step;
        }
        let continuous = match self.expect {
            Some(n) => meta.js_seq == n,
            None => meta.kind == Kind::Header,
        };
        let same_stream = self.written_stream.as_deref() == Some(meta.stream.as_str());
        let gap_reason = if !continuous {
            Some(match self.expect {
                Some(n) => format!(
                    "expected JetStream message {n}, got {} (trimmed or deleted)",
                    meta.js_seq
                ),
                None => format!(
                    "new consumer starts mid-stream at JetStream message {} (syncpipe stream {} seq {})",
                    meta.js_seq, meta.stream, meta.seq
                ),
            })
        } else if self.written_stream.is_some() && !same_stream && meta.kind != Kind::Header {
            Some(format!(
                "syncpipe stream changed to {} without its header",
                meta.stream
            ))
        } else {
            None
        };

        if meta.kind != Kind::Header && !same_stream {
            if let Some(header) = &meta.header {
                step.lines.push(header.clone());
                self.written_stream = Some(meta.stream.clone());
                self.written_seq = 0;
            }
        }
        if let Some(reason) = gap_reason {
            if meta.kind == Kind::Header {
                // A header starts a stream: downstream does a full sync of a
                // new stream id anyway (protocol rule 4); nothing else to add.
                step.warning = Some(format!("{reason}; the next record is a header"));
            } else {
                // The highest seq the gap may have swallowed.
                let covered = match meta.kind {
                    Kind::Seq => meta.seq.saturating_sub(1),
                    _ => meta.seq,
                };
                let already = same_stream && self.written_seq >= covered;
                if covered >= 1 && !already {
                    step.lines.push(rescan_line(covered));
                    step.rescan = Some(reason);
                    self.written_seq = covered;
                } else {
                    step.warning = Some(format!("{reason}; no change was in the gap"));
                }
            }
        }
        step.lines.push(line.to_vec());
        if meta.kind == Kind::Header {
            self.written_stream = Some(meta.stream.clone());
            self.written_seq = 0;
        } else if meta.kind == Kind::Seq {
            self.written_seq = self.written_seq.max(meta.seq);
        }
        self.last_js = meta.js_seq;
        self.expect = Some(meta.js_seq + 1);
        step
    }
}

/// `rescan` of the root as an `event` record with `seq`.
pub fn rescan_line(seq: u64) -> Vec<u8> {
    let record = Record::Event(Event {
        seq,
        ts: Timestamp::now(),
        kind: EventKind::Rescan,
        path: WirePath::root(),
        dir: true,
        from: None,
    });
    record.to_line().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(js_seq: u64, stream: &str, seq: u64, kind: Kind) -> Meta {
        Meta {
            js_seq,
            stream: stream.into(),
            seq,
            kind,
            header: Some(format!("H{stream}").into_bytes()),
        }
    }

    fn texts(step: &Step) -> Vec<String> {
        step.lines
            .iter()
            .map(|l| {
                let s = String::from_utf8(l.clone()).unwrap();
                if s.contains("\"rescan\"") {
                    let r = Record::parse(l).unwrap();
                    let Record::Event(e) = r else { panic!() };
                    format!("rescan@{}", e.seq)
                } else {
                    s
                }
            })
            .collect()
    }

    #[test]
    fn fresh_from_the_header_is_exact() {
        let mut f = Follower::new(Start::Fresh);
        let s = f.accept(&meta(1, "a", 0, Kind::Header), b"Ha");
        assert_eq!(texts(&s), ["Ha"]);
        let s = f.accept(&meta(2, "a", 1, Kind::Seq), b"e1");
        assert_eq!(texts(&s), ["e1"]);
        assert!(s.rescan.is_none());
        // a redelivery is acknowledged, not written again
        assert!(f.accept(&meta(2, "a", 1, Kind::Seq), b"e1").duplicate);
    }

    #[test]
    fn resume_writes_the_header_then_continues() {
        let mut f = Follower::new(Start::After(5));
        let s = f.accept(&meta(6, "a", 5, Kind::Seq), b"e5");
        assert_eq!(texts(&s), ["Ha", "e5"]);
        assert!(s.rescan.is_none());
    }

    #[test]
    fn a_replayed_record_then_the_next_ones() {
        let mut f = Follower::new(Start::After(5));
        let s = f.replayed(&meta(5, "a", 4, Kind::Seq), b"e4");
        assert_eq!(texts(&s), ["Ha", "e4"]);
        // The header is not written twice; the cursor still expects 6.
        let s = f.accept(&meta(6, "a", 5, Kind::Seq), b"e5");
        assert_eq!(texts(&s), ["e5"]);
        assert!(s.rescan.is_none());
        let mut f = Follower::new(Start::After(5));
        f.replayed(&meta(5, "a", 4, Kind::Seq), b"e4");
        let s = f.accept(&meta(8, "a", 7, Kind::Seq), b"e7");
        assert_eq!(texts(&s), ["rescan@6", "e7"]);
    }

    #[test]
    fn trimmed_cursor_means_rescan() {
        let mut f = Follower::new(Start::After(5));
        let s = f.accept(&meta(9, "a", 8, Kind::Seq), b"e8");
        assert_eq!(texts(&s), ["Ha", "rescan@7", "e8"]);
        assert!(s.rescan.is_some());
    }

    #[test]
    fn new_consumer_mid_stream_means_rescan() {
        let mut f = Follower::new(Start::Fresh);
        let s = f.accept(&meta(501, "a", 500, Kind::Seq), b"e500");
        assert_eq!(texts(&s), ["Ha", "rescan@499", "e500"]);
    }

    #[test]
    fn gap_while_running_means_rescan() {
        let mut f = Follower::new(Start::Fresh);
        f.accept(&meta(1, "a", 0, Kind::Header), b"Ha");
        f.accept(&meta(2, "a", 1, Kind::Seq), b"e1");
        let s = f.accept(&meta(5, "a", 4, Kind::Seq), b"e4");
        assert_eq!(texts(&s), ["rescan@3", "e4"]);
    }

    #[test]
    fn a_gap_of_pass_through_records_only_is_a_warning() {
        let mut f = Follower::new(Start::Fresh);
        f.accept(&meta(1, "a", 0, Kind::Header), b"Ha");
        f.accept(&meta(2, "a", 1, Kind::Seq), b"e1");
        let s = f.accept(&meta(4, "a", 2, Kind::Seq), b"e2");
        assert_eq!(texts(&s), ["e2"]);
        assert!(s.warning.is_some());
    }

    #[test]
    fn new_stream_header_after_a_gap_is_written_as_is() {
        let mut f = Follower::new(Start::After(3));
        let s = f.accept(&meta(7, "b", 0, Kind::Header), b"Hb");
        assert_eq!(texts(&s), ["Hb"]);
        let s = f.accept(&meta(8, "b", 1, Kind::Seq), b"e1");
        assert_eq!(texts(&s), ["e1"]);
    }

    #[test]
    fn stream_change_without_header_means_rescan() {
        let mut f = Follower::new(Start::Fresh);
        f.accept(&meta(1, "a", 0, Kind::Header), b"Ha");
        let s = f.accept(&meta(2, "b", 7, Kind::Seq), b"e7");
        assert_eq!(texts(&s), ["Hb", "rescan@6", "e7"]);
    }
}
