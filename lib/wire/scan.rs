//! Reading `event` lines by hand when they have exactly the shape
//! [`writer`](crate::wire::writer) writes: the one record a consumer reads at
//! kernel speed.
//!
//! serde_json's event parse was the reading thread's whole cost in batchd
//! (about 1 µs a line, which capped the pipeline below 1 M events/s). A
//! watcher's line is nearly always the same fields in the same order with
//! short plain strings, so that shape is matched byte for byte; anything else
//! (another field order, whitespace, an escape, a control byte, a
//! `{"bytes": …}` path, a number serde would refuse) returns `None`, and the
//! caller takes the serde path. The property tests below check that whatever
//! this accepts, serde reads the same way.

use crate::wire::event::{Event, EventKind, Timestamp};
use crate::wire::path::WirePath;

/// The event in `line` (without its newline) when the line has the
/// writer's exact shape; `None` means "ask serde", never "malformed".
pub(crate) fn event_line(line: &[u8]) -> Option<Event> {
    let mut s = Scan { rest: line };
    s.lit(b"{\"type\":\"event\",\"seq\":")?;
    let seq = s.number()?;
    s.lit(b",\"ts\":")?;
    let ts = s.string()?;
    s.lit(b",\"kind\":")?;
    let kind = s.string()?;
    s.lit(b",\"path\":")?;
    let path = s.string()?;
    let dir = if s.lit(b",\"dir\":true").is_some() {
        true
    } else {
        s.lit(b",\"dir\":false")?;
        false
    };
    let from = if s.lit(b",\"from\":").is_some() {
        Some(s.string()?)
    } else {
        None
    };
    s.lit(b"}")?;
    if !s.rest.is_empty() {
        return None;
    }
    Some(Event {
        seq,
        ts: Timestamp(ts.to_owned()),
        kind: EventKind::parse(kind),
        path: WirePath::from_bytes(path.as_bytes()),
        dir,
        from: from.map(|f| WirePath::from_bytes(f.as_bytes())),
    })
}

struct Scan<'a> {
    rest: &'a [u8],
}

impl<'a> Scan<'a> {
    fn lit(&mut self, expected: &[u8]) -> Option<()> {
        self.rest = self.rest.strip_prefix(expected)?;
        Some(())
    }

    /// A JSON number serde reads as a u64: digits, no leading zero, no
    /// sign, fraction or exponent, no overflow.
    fn number(&mut self) -> Option<u64> {
        let len = self.rest.iter().take_while(|b| b.is_ascii_digit()).count();
        let (digits, rest) = self.rest.split_at(len);
        if digits.is_empty() || (digits.len() > 1 && digits[0] == b'0') {
            return None;
        }
        if matches!(rest.first(), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        let mut n: u64 = 0;
        for &d in digits {
            n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
        }
        self.rest = rest;
        Some(n)
    }

    /// A JSON string without escapes or control bytes, valid UTF-8 (what
    /// serde would read as the same text).
    fn string(&mut self) -> Option<&'a str> {
        let body = self.rest.strip_prefix(b"\"")?;
        let end = body
            .iter()
            .position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
        if body[end] != b'"' {
            return None;
        }
        let text = std::str::from_utf8(&body[..end]).ok()?;
        self.rest = &body[end + 1..];
        Some(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::event::Record;
    use crate::wire::writer::write_event_line;
    use proptest::prelude::*;

    fn serde_event(line: &[u8]) -> Option<Event> {
        #[derive(serde::Deserialize)]
        struct Tag {
            #[serde(rename = "type")]
            kind: String,
        }
        let tag: Tag = serde_json::from_slice(line).ok()?;
        (tag.kind == "event").then_some(())?;
        serde_json::from_slice(line).ok()
    }

    #[test]
    fn reads_the_writers_lines_and_declines_the_rest() {
        let line = br#"{"type":"event","seq":42,"ts":"2026-11-21T10:00:00.000Z","kind":"move","path":"d/a b.txt","dir":false,"from":"d/x"}"#;
        let ev = event_line(line).unwrap();
        assert_eq!(ev.seq, 42);
        assert_eq!(ev.kind, EventKind::Move);
        assert_eq!(ev.path.as_bytes(), b"d/a b.txt");
        assert_eq!(ev.from.unwrap().as_bytes(), b"d/x");
        for other in [
            &br#"{"type":"event","seq":1,"ts":"t","kind":"create","path":"a\n","dir":false}"#[..],
            br#"{"type":"event","seq":01,"ts":"t","kind":"create","path":"a","dir":false}"#,
            br#"{"type":"event","seq":1.0,"ts":"t","kind":"create","path":"a","dir":false}"#,
            br#"{"type":"event","seq":18446744073709551616,"ts":"t","kind":"create","path":"a","dir":false}"#,
            br#"{"type":"event","seq":1,"ts":"t","kind":"create","path":{"bytes":"/w=="},"dir":false}"#,
            br#"{"type":"event","seq":1,"ts":"t","kind":"create","path":"a","dir":false} "#,
            br#"{"type":"event", "seq":1,"ts":"t","kind":"create","path":"a","dir":false}"#,
            br#"{"type":"event","seq":1,"ts":"t","kind":"create","path":"a"}"#,
            br#"{"type":"event","seq":1,"ts":"t","kind":"create","path":"a","dir":false,"x":1}"#,
        ] {
            assert!(event_line(other).is_none(), "{}", String::from_utf8_lossy(other));
        }
        // A path that is not UTF-8 cannot be a plain JSON string.
        let mut raw = br#"{"type":"event","seq":1,"ts":"t","kind":"create","path":"a"#.to_vec();
        raw.extend_from_slice(b"\xff\",\"dir\":false}");
        assert!(event_line(&raw).is_none());
    }

    fn kind() -> impl Strategy<Value = EventKind> {
        prop_oneof![
            Just(EventKind::Create),
            Just(EventKind::Modify),
            Just(EventKind::Delete),
            Just(EventKind::Move),
            Just(EventKind::Attrib),
            Just(EventKind::Rescan),
            "[a-z\"\\\\]{0,8}".prop_map(EventKind::Other),
        ]
    }

    fn path() -> impl Strategy<Value = WirePath> {
        prop_oneof![
            "[ -~]{0,40}".prop_map(|s| WirePath::from(s.as_str())),
            any::<String>().prop_map(|s| WirePath::from(s.as_str())),
            prop::collection::vec(any::<u8>(), 0..24).prop_map(WirePath::from_bytes),
        ]
    }

    proptest! {
        #![proptest_config(crate::testconfig::proptest(1024))]

        /// Every line the writer writes reads back as its event, by hand or
        /// (when declined) by serde.
        #[test]
        fn the_writers_lines_read_back(
            seq in any::<u64>(),
            ts in "[ -~]{0,30}",
            kind in kind(),
            path in path(),
            dir in any::<bool>(),
            from in prop::option::of(path()),
        ) {
            let event = Event { seq, ts: Timestamp(ts), kind, path, dir, from };
            let mut line = Vec::new();
            write_event_line(&event, &mut line);
            line.pop();
            if let Some(fast) = event_line(&line) {
                prop_assert_eq!(&fast, &event);
            }
            prop_assert_eq!(Record::parse(&line).unwrap(), Record::Event(event));
        }

        /// Whatever the hand reader accepts, serde reads the same way, even
        /// for lines no writer would write (bytes changed at random).
        #[test]
        fn what_it_accepts_serde_reads_the_same(
            seq in any::<u64>(),
            path in path(),
            dir in any::<bool>(),
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
        ) {
            let event = Event {
                seq,
                ts: Timestamp("2026-11-21T10:00:00.000Z".into()),
                kind: EventKind::Create,
                path,
                dir,
                from: None,
            };
            let mut line = Vec::new();
            write_event_line(&event, &mut line);
            line.pop();
            for (at, byte) in edits {
                let i = at.index(line.len());
                line[i] = byte;
            }
            if let Some(fast) = event_line(&line) {
                prop_assert_eq!(Some(fast), serde_event(&line));
            }
        }
    }
}
