//! The wire schema of the syncpipe stream, version 1: every record type, its
//! fields, and how a line becomes a record and back.
//!
//! `docs/protocol.md` is the prose twin of this module; change both together.
//! A stream is JSON lines: one object per line, each with a `"type"`. Readers
//! ignore fields they do not know and hand records of a type they do not know
//! through unchanged ([`Record::Other`] keeps the original line), so a later
//! version can add either without breaking older programs in a pipeline.

use std::borrow::Cow;
use std::fmt;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::wire::path::WirePath;

/// The protocol version written in every header. Readers accept any version:
/// additions never change the meaning of existing fields.
pub const PROTOCOL_VERSION: u32 = 1;

/// A wall-clock instant as RFC 3339 UTC with milliseconds
/// (`2026-11-21T10:24:00.123Z`). Kept as text: no consumer does arithmetic on
/// it, and keeping it opaque makes parsing cheap and re-serialising exact.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub String);

impl Timestamp {
    pub fn now() -> Self {
        Timestamp(humantime::format_rfc3339_millis(SystemTime::now()).to_string())
    }
}

/// Starts a stream. A new `stream` id means "everything before is unrelated":
/// a consumer that has not seen this id before must do a full sync of `root`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Protocol version ([`PROTOCOL_VERSION`]).
    pub v: u32,
    /// Unique per producer start (128 random bits, hex).
    pub stream: String,
    /// The absolute root every relative path in the stream hangs from.
    pub root: WirePath,
    /// The host the root lives on.
    pub host: String,
    pub ts: Timestamp,
    /// Who wrote the stream, `name/version`.
    pub producer: String,
    /// How the producer watches (`inotify`, `fanotify`); optional, for
    /// people and logs: the stream means the same either way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
}

/// What happened to a path.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    Create,
    Modify,
    Delete,
    Move,
    Attrib,
    /// Anything under `path` may have changed: re-read it.
    Rescan,
    /// A kind from a later version. Consumers treat it as a `rescan` of the
    /// path, the safe reading of "something happened here".
    Other(String),
}

impl EventKind {
    pub fn as_str(&self) -> &str {
        match self {
            EventKind::Create => "create",
            EventKind::Modify => "modify",
            EventKind::Delete => "delete",
            EventKind::Move => "move",
            EventKind::Attrib => "attrib",
            EventKind::Rescan => "rescan",
            EventKind::Other(s) => s,
        }
    }

    pub(crate) fn parse(s: &str) -> EventKind {
        match s {
            "create" => EventKind::Create,
            "modify" => EventKind::Modify,
            "delete" => EventKind::Delete,
            "move" => EventKind::Move,
            "attrib" => EventKind::Attrib,
            "rescan" => EventKind::Rescan,
            other => EventKind::Other(other.to_string()),
        }
    }
}

impl Serialize for EventKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EventKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Cow::<'de, str>::deserialize(d)?;
        Ok(EventKind::parse(&s))
    }
}

/// One change seen by a watcher.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Strictly increasing within a stream; never reused.
    pub seq: u64,
    pub ts: Timestamp,
    pub kind: EventKind,
    /// Relative to the header's root; `"."` is the root itself.
    pub path: WirePath,
    /// True when the entry is a directory.
    #[serde(default)]
    pub dir: bool,
    /// On `move`: where the entry was before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<WirePath>,
}

/// Why a stream ended on purpose.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct End {
    pub seq: u64,
    pub ts: Timestamp,
    /// `root-deleted`, `root-moved`, `root-unmounted`, or a later reason.
    /// A consumer must NOT read this as "delete everything": the source is
    /// gone, which says nothing about what the replicas should hold.
    pub reason: String,
}

/// What a batch asks a consumer to do to one path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeOp {
    /// Bring the path to its current state on the source (created, written,
    /// attributes changed: the consumer re-reads it).
    Update,
    /// The path is gone from the source.
    Delete,
    /// The entry at `from` now lives at `path` (a rename the target can do
    /// without resending data).
    Move,
    /// Anything under `path` may have changed: sync the whole subtree.
    Rescan,
}

/// One folded change inside a batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub op: ChangeOp,
    pub path: WirePath,
    #[serde(default)]
    pub dir: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<WirePath>,
}

/// Events `first_seq..=last_seq` of `stream`, folded into an ordered list of
/// changes that, applied in order, bring a replica to the source's state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    pub stream: String,
    pub first_seq: u64,
    pub last_seq: u64,
    pub root: WirePath,
    pub ts: Timestamp,
    pub changes: Vec<Change>,
}

/// What `pushd` did with changes on one target: one record per transfer
/// (a batch, several merged batches, or a full sync) and target.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// The target as given on the command line.
    pub target: String,
    pub stream: String,
    /// The range of `seq`s this transfer covers.
    pub first_seq: u64,
    pub last_seq: u64,
    /// True for a full sync of the root.
    pub full: bool,
    /// `ok`, `refused` (applied except for deletions a guard refused) or
    /// `failed` (nothing is lost: the changes are retried).
    pub status: String,
    /// Regular files whose data was sent, and their size in bytes.
    pub files: u64,
    pub bytes: u64,
    /// Bytes rsync sent on the wire, protocol included.
    pub sent: u64,
    pub deleted: u64,
    /// Renames done on the target without sending data.
    pub renamed: u64,
    #[serde(default)]
    pub refused_deletes: u64,
    pub duration_ms: u64,
    /// rsync's exit code (absent when rsync did not run or was killed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rsync_exit: Option<i32>,
    /// 1 for the first try of these changes, counting up on retries.
    pub attempt: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `pushd --dry-run`: nothing was changed; the counts are what would
    /// be, and `would` records before this one name the paths.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    pub ts: Timestamp,
}

/// `pushd --dry-run`: one thing a target would get, written before the
/// `result` record of its transfer. Readers see it as a type they do not
/// know ([`Record::Other`]) and pass it on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Would {
    pub target: String,
    pub stream: String,
    /// `send`, `create`, `attrs`, `hardlink`, `delete`, `rename` or `hold`.
    pub op: String,
    pub path: WirePath,
    /// A rename's new name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<WirePath>,
    /// rsync's itemize code (`>f+++++++++`, `*deleting`), when rsync said it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub itemize: Option<String>,
}

impl Would {
    /// The record of type `would`, as one line.
    pub fn to_record(&self) -> Result<Record, serde_json::Error> {
        #[derive(Serialize)]
        struct Tagged<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            #[serde(flatten)]
            would: &'a Would,
        }
        let line = serde_json::to_vec(&Tagged {
            kind: "would",
            would: self,
        })?;
        Ok(Record::Other {
            kind: "would".into(),
            line,
        })
    }
}

/// One line of the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    Header(Header),
    Event(Event),
    End(End),
    Batch(Batch),
    /// Written by `pushd`, type `result`.
    Applied(Applied),
    /// A record of a type this version does not know: kept byte for byte (without
    /// the newline) so it can be passed on unchanged.
    Other {
        kind: String,
        line: Vec<u8>,
    },
}

/// A line that is not a record: not JSON, not an object, no `type`, or a known
/// type with a missing or ill-typed field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Malformed {
    pub reason: String,
}

#[derive(Deserialize)]
struct TypeOnly<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
}

/// The tag and an event's fields, all optional, read in one pass.
#[derive(Deserialize)]
struct EventShape<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    seq: Option<u64>,
    ts: Option<Timestamp>,
    #[serde(rename = "kind")]
    event_kind: Option<EventKind>,
    path: Option<WirePath>,
    #[serde(default)]
    dir: bool,
    from: Option<WirePath>,
}

impl EventShape<'_> {
    fn into_event(self) -> Result<Event, Malformed> {
        let missing = |field: &str| Malformed {
            reason: format!("missing field `{field}`"),
        };
        Ok(Event {
            seq: self.seq.ok_or_else(|| missing("seq"))?,
            ts: self.ts.ok_or_else(|| missing("ts"))?,
            kind: self.event_kind.ok_or_else(|| missing("kind"))?,
            path: self.path.ok_or_else(|| missing("path"))?,
            dir: self.dir,
            from: self.from,
        })
    }
}

impl Record {
    /// Parses one line (without its newline).
    pub fn parse(line: &[u8]) -> Result<Record, Malformed> {
        // A watcher's own line shape, read by hand (wire/scan.rs).
        if let Some(event) = crate::wire::scan::event_line(line) {
            return Ok(Record::Event(event));
        }
        // Events are nearly every line of a stream: one pass reads the tag
        // and an event's fields together. Anything else (or a line that does
        // not fit that shape) takes the general path below.
        if let Ok(wide) = serde_json::from_slice::<EventShape>(line) {
            if wide.kind.as_deref() == Some("event") {
                return wide.into_event().map(Record::Event);
            }
        }
        Self::parse_by_type(line)
    }

    fn parse_by_type(line: &[u8]) -> Result<Record, Malformed> {
        let malformed = |e: serde_json::Error| Malformed {
            reason: e.to_string(),
        };
        // Two passes (the tag, then the struct): cheaper than serde's
        // internally tagged enums, which buffer every field first.
        let probe: TypeOnly = serde_json::from_slice(line).map_err(malformed)?;
        let Some(kind) = probe.kind else {
            return Err(Malformed {
                reason: "no \"type\" field".into(),
            });
        };
        Ok(match kind.as_ref() {
            "event" => Record::Event(serde_json::from_slice(line).map_err(malformed)?),
            "batch" => Record::Batch(serde_json::from_slice(line).map_err(malformed)?),
            "header" => Record::Header(serde_json::from_slice(line).map_err(malformed)?),
            "end" => Record::End(serde_json::from_slice(line).map_err(malformed)?),
            "result" => Record::Applied(serde_json::from_slice(line).map_err(malformed)?),
            other => Record::Other {
                kind: other.to_string(),
                line: line.to_vec(),
            },
        })
    }

    /// Appends the record as one line, newline included, to `out`.
    pub fn write_line(&self, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
        #[derive(Serialize)]
        #[serde(tag = "type", rename_all = "lowercase")]
        enum Tagged<'a> {
            Header(&'a Header),
            End(&'a End),
            Batch(&'a Batch),
            #[serde(rename = "result")]
            Applied(&'a Applied),
        }
        let tagged = match self {
            Record::Header(h) => Tagged::Header(h),
            Record::Event(e) => {
                crate::wire::writer::write_event_line(e, out);
                return Ok(());
            }
            Record::End(e) => Tagged::End(e),
            Record::Batch(b) => Tagged::Batch(b),
            Record::Applied(a) => Tagged::Applied(a),
            Record::Other { line, .. } => {
                out.extend_from_slice(line);
                out.push(b'\n');
                return Ok(());
            }
        };
        serde_json::to_writer(&mut *out, &tagged)?;
        out.push(b'\n');
        Ok(())
    }

    /// The record as one line, without the newline (for tests and messages).
    pub fn to_line(&self) -> String {
        let mut out = Vec::new();
        self.write_line(&mut out)
            .expect("records serialise: every field is a string, number, bool or path");
        out.pop();
        String::from_utf8(out).expect("serde_json writes UTF-8")
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A fresh stream id: 128 bits from the kernel's random source, as hex.
pub fn new_stream_id() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: EventKind, path: &str) -> Record {
        Record::Event(Event {
            seq: 7,
            ts: Timestamp("2026-11-21T10:00:00.000Z".into()),
            kind,
            path: path.into(),
            dir: false,
            from: None,
        })
    }

    #[test]
    fn event_line_shape() {
        assert_eq!(
            event(EventKind::Create, "a b").to_line(),
            r#"{"type":"event","seq":7,"ts":"2026-11-21T10:00:00.000Z","kind":"create","path":"a b","dir":false}"#
        );
    }

    #[test]
    fn unknown_fields_are_ignored_and_unknown_types_kept() {
        let line = br#"{"type":"event","seq":1,"ts":"t","kind":"modify","path":"x","dir":false,"new":[1,2]}"#;
        let Record::Event(e) = Record::parse(line).unwrap() else {
            panic!("not an event")
        };
        assert_eq!(e.kind, EventKind::Modify);
        let other = br#"{"type":"heartbeat","n":3}"#;
        let rec = Record::parse(other).unwrap();
        assert_eq!(rec.to_line().as_bytes(), other);
    }

    #[test]
    fn unknown_kind_survives() {
        let line = br#"{"type":"event","seq":1,"ts":"t","kind":"xattr","path":"x"}"#;
        let Record::Event(e) = Record::parse(line).unwrap() else {
            panic!("not an event")
        };
        assert_eq!(e.kind, EventKind::Other("xattr".into()));
        assert!(Record::Event(e).to_line().contains(r#""kind":"xattr""#));
    }

    #[test]
    fn malformed_lines_are_errors_not_panics() {
        for line in [
            &b"not json"[..],
            b"[1,2]",
            b"{}",
            b"{\"type\":3}",
            br#"{"type":"event","seq":"x"}"#,
            br#"{"type":"event","seq":1,"ts":"t","kind":"create"}"#,
            b"{\"type\":\"event\"",
            b"\xff\xfe",
        ] {
            assert!(
                Record::parse(line).is_err(),
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn stream_ids_are_fresh() {
        let a = new_stream_id().unwrap();
        let b = new_stream_id().unwrap();
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    fn path() -> impl Strategy<Value = WirePath> {
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..48).prop_map(WirePath::from_bytes),
            "[a-z ./\\n$()-]{0,24}".prop_map(|s| WirePath::from(s.as_str())),
        ]
    }

    fn ts() -> impl Strategy<Value = Timestamp> {
        any::<String>().prop_map(Timestamp)
    }

    fn kind() -> impl Strategy<Value = EventKind> {
        prop_oneof![
            Just(EventKind::Create),
            Just(EventKind::Modify),
            Just(EventKind::Delete),
            Just(EventKind::Move),
            Just(EventKind::Attrib),
            Just(EventKind::Rescan),
            "[a-z_]{1,12}"
                .prop_filter("not a known kind", |s| {
                    !matches!(
                        EventKind::parse(s),
                        EventKind::Create
                            | EventKind::Modify
                            | EventKind::Delete
                            | EventKind::Move
                            | EventKind::Attrib
                            | EventKind::Rescan
                    )
                })
                .prop_map(EventKind::Other),
        ]
    }

    fn change() -> impl Strategy<Value = Change> {
        (
            prop_oneof![
                Just(ChangeOp::Update),
                Just(ChangeOp::Delete),
                Just(ChangeOp::Move),
                Just(ChangeOp::Rescan)
            ],
            path(),
            any::<bool>(),
            prop::option::of(path()),
        )
            .prop_map(|(op, path, dir, from)| Change {
                op,
                path,
                dir,
                from,
            })
    }

    fn record() -> impl Strategy<Value = Record> {
        prop_oneof![
            (
                any::<u32>(),
                any::<String>(),
                path(),
                any::<String>(),
                ts(),
                any::<String>(),
                prop::option::of("[a-z]{1,9}"),
            )
                .prop_map(|(v, stream, root, host, ts, producer, backend)| {
                    Record::Header(Header {
                        v,
                        stream,
                        root,
                        host,
                        ts,
                        producer,
                        backend,
                    })
                }),
            (
                any::<u64>(),
                ts(),
                kind(),
                path(),
                any::<bool>(),
                prop::option::of(path())
            )
                .prop_map(|(seq, ts, kind, path, dir, from)| Record::Event(Event {
                    seq,
                    ts,
                    kind,
                    path,
                    dir,
                    from
                })),
            (any::<u64>(), ts(), any::<String>()).prop_map(|(seq, ts, reason)| Record::End(End {
                seq,
                ts,
                reason
            })),
            (
                any::<String>(),
                any::<u64>(),
                any::<u64>(),
                path(),
                ts(),
                prop::collection::vec(change(), 0..6)
            )
                .prop_map(|(stream, first_seq, last_seq, root, ts, changes)| {
                    Record::Batch(Batch {
                        stream,
                        first_seq,
                        last_seq,
                        root,
                        ts,
                        changes,
                    })
                }),
            (
                (any::<String>(), any::<String>(), any::<u64>(), any::<u64>()),
                (any::<bool>(), any::<String>(), any::<[u64; 7]>()),
                (
                    prop::option::of(any::<i32>()),
                    any::<u32>(),
                    prop::option::of(any::<String>()),
                    ts()
                ),
            )
                .prop_map(
                    |(
                        (target, stream, first_seq, last_seq),
                        (full, status, n),
                        (rsync_exit, attempt, error, ts),
                    )| {
                        Record::Applied(Applied {
                            target,
                            stream,
                            first_seq,
                            last_seq,
                            full,
                            status,
                            files: n[0],
                            bytes: n[1],
                            sent: n[2],
                            deleted: n[3],
                            renamed: n[4],
                            refused_deletes: n[5],
                            duration_ms: n[6],
                            rsync_exit,
                            attempt,
                            error,
                            dry_run: full && attempt % 2 == 0,
                            ts,
                        })
                    }
                ),
        ]
    }

    proptest! {
        #![proptest_config(crate::testconfig::proptest(256))]

        #[test]
        fn every_record_round_trips(rec in record()) {
            let mut line = Vec::new();
            rec.write_line(&mut line).unwrap();
            prop_assert_eq!(line.pop(), Some(b'\n'));
            prop_assert!(!line.contains(&b'\n'), "one record, one line");
            prop_assert_eq!(Record::parse(&line).unwrap(), rec);
        }

        #[test]
        fn unknown_types_pass_through_byte_for_byte(
            kind in "[a-z]{1,10}".prop_filter("unknown", |k| !["header", "event", "end", "batch", "result"].contains(&k.as_str())),
            fields in prop::collection::btree_map("[a-z]{1,6}", any::<i64>(), 0..5),
        ) {
            let mut obj = serde_json::Map::new();
            obj.insert("type".into(), kind.clone().into());
            for (k, v) in fields {
                if k != "type" {
                    obj.insert(k, v.into());
                }
            }
            let line = serde_json::to_string(&obj).unwrap();
            let rec = Record::parse(line.as_bytes()).unwrap();
            let is_other = matches!(&rec, Record::Other { kind: k, .. } if *k == kind);
            prop_assert!(is_other, "not passed through: {:?}", rec);
            prop_assert_eq!(rec.to_line(), line);
        }

        #[test]
        fn parsing_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = Record::parse(&bytes);
        }
    }
}
