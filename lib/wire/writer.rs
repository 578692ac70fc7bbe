//! Writing `event` records by hand, byte for byte what serde writes, without
//! allocating: the one record a watcher writes at kernel speed.
//!
//! serde_json's string escaping was a third of watchd's CPU on a burst of
//! creates. Paths are nearly always short printable ASCII, so the common case
//! is one scan and one copy; anything else (quotes, control bytes, UTF-8,
//! names that are not UTF-8) follows serde_json's rules exactly, which the
//! property test below checks against the serde path for arbitrary bytes.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;

use crate::wire::event::Event;
use crate::wire::path::WirePath;

/// Appends `event` as one line, newline included: the same bytes as
/// `Record::Event(event).write_line(out)` through serde.
pub fn write_event_line(event: &Event, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"type\":\"event\",\"seq\":");
    write_u64(event.seq, out);
    out.extend_from_slice(b",\"ts\":");
    write_str(event.ts.0.as_bytes(), out);
    out.extend_from_slice(b",\"kind\":");
    write_str(event.kind.as_str().as_bytes(), out);
    out.extend_from_slice(b",\"path\":");
    write_path(&event.path, out);
    out.extend_from_slice(if event.dir {
        b",\"dir\":true"
    } else {
        b",\"dir\":false"
    });
    if let Some(from) = &event.from {
        out.extend_from_slice(b",\"from\":");
        write_path(from, out);
    }
    out.extend_from_slice(b"}\n");
}

fn write_u64(mut n: u64, out: &mut Vec<u8>) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// A path: a JSON string when it is UTF-8, else `{"bytes":"<base64>"}`.
fn write_path(path: &WirePath, out: &mut Vec<u8>) {
    let bytes = path.as_bytes();
    if bytes.is_ascii() || std::str::from_utf8(bytes).is_ok() {
        write_str(bytes, out);
        return;
    }
    out.extend_from_slice(b"{\"bytes\":\"");
    let start = out.len();
    out.resize(start + bytes.len().div_ceil(3) * 4, 0);
    let written = BASE64
        .encode_slice(bytes, &mut out[start..])
        .expect("the buffer is sized for padded base64");
    out.truncate(start + written);
    out.extend_from_slice(b"\"}");
}

/// A JSON string from bytes already known to be UTF-8, escaped as
/// serde_json escapes: `"` `\` and control bytes only.
fn write_str(bytes: &[u8], out: &mut Vec<u8>) {
    out.push(b'"');
    let mut plain_from = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if b >= 0x20 && b != b'"' && b != b'\\' {
            continue;
        }
        out.extend_from_slice(&bytes[plain_from..i]);
        plain_from = i + 1;
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[(b >> 4) as usize]);
                out.push(HEX[(b & 0xf) as usize]);
            }
        }
    }
    out.extend_from_slice(&bytes[plain_from..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::event::{EventKind, Record, Timestamp};
    use proptest::prelude::*;

    /// The serde path, which the fast writer must match.
    fn serde_line(event: &Event) -> Vec<u8> {
        #[derive(serde::Serialize)]
        struct Tagged<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            #[serde(flatten)]
            event: &'a Event,
        }
        let mut out = serde_json::to_vec(&Tagged {
            kind: "event",
            event,
        })
        .unwrap();
        out.push(b'\n');
        out
    }

    fn kind() -> impl Strategy<Value = EventKind> {
        prop_oneof![
            Just(EventKind::Create),
            Just(EventKind::Modify),
            Just(EventKind::Delete),
            Just(EventKind::Move),
            Just(EventKind::Attrib),
            Just(EventKind::Rescan),
            any::<String>()
                .prop_filter("not a known kind", |s| !matches!(
                    s.as_str(),
                    "create" | "modify" | "delete" | "move" | "attrib" | "rescan"
                ))
                .prop_map(EventKind::Other),
        ]
    }

    fn path() -> impl Strategy<Value = WirePath> {
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..64).prop_map(WirePath::from_bytes),
            any::<String>().prop_map(|s| WirePath::from(s.as_str())),
            "[ -~]{0,40}".prop_map(|s| WirePath::from(s.as_str())),
        ]
    }

    #[test]
    fn a_plain_event_is_the_documented_line() {
        let event = Event {
            seq: 7,
            ts: Timestamp("2026-11-21T10:00:00.000Z".into()),
            kind: EventKind::Move,
            path: "a b".into(),
            dir: true,
            from: Some(WirePath::from_bytes(vec![b'x', 0xff])),
        };
        let mut out = Vec::new();
        write_event_line(&event, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"type\":\"event\",\"seq\":7,\"ts\":\"2026-11-21T10:00:00.000Z\",\"kind\":\"move\",\"path\":\"a b\",\"dir\":true,\"from\":{\"bytes\":\"eP8=\"}}\n"
        );
    }

    proptest! {
        #![proptest_config(crate::testconfig::proptest(1024))]

        #[test]
        fn fast_writer_matches_serde_and_parses_back(
            seq in any::<u64>(),
            ts in any::<String>(),
            kind in kind(),
            path in path(),
            dir in any::<bool>(),
            from in prop::option::of(path()),
        ) {
            let event = Event { seq, ts: Timestamp(ts), kind, path, dir, from };
            let mut fast = Vec::new();
            write_event_line(&event, &mut fast);
            let slow = serde_line(&event);
            prop_assert_eq!(String::from_utf8_lossy(&fast), String::from_utf8_lossy(&slow));
            prop_assert_eq!(&fast, &slow);
            prop_assert_eq!(fast.pop(), Some(b'\n'));
            let back = Record::parse(&fast).unwrap();
            prop_assert_eq!(back, Record::Event(event));
        }
    }
}
