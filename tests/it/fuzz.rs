//! A bounded structured fuzz run of the two parsers that read untrusted
//! bytes: the stream reader (batchd, pushd) and `bisync --serve`'s request
//! reader. The checks are `syncpipe::fuzz`'s, shared with the libFuzzer
//! targets in `fuzz/` (`make fuzz` runs those for longer). Lines are built
//! from the real record and request shapes, then cut and corrupted, so most
//! cases reach past the JSON parser into the code behind it.
//!
//! `SYNCPIPE_FUZZ_CASES=N` runs N cases per property instead of the default.

use std::sync::mpsc;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::{json, Value};

/// No case may take longer than this: a parser waiting for bytes that never
/// come is a hang, and the machine is noisy, so the bound is generous.
const HANG: Duration = Duration::from_secs(60);

/// `cases` per property in the suite: a few seconds each in a debug build.
fn runner(name: &str, cases: u32) -> TestRunner {
    let cases = std::env::var("SYNCPIPE_FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(cases);
    let seed: u64 = std::env::var("SYNCPIPE_FUZZ_SEED")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("{name}: {cases} cases, SYNCPIPE_FUZZ_SEED={seed}");
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    TestRunner::new_with_rng(
        Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        },
        TestRng::from_seed(RngAlgorithm::ChaCha, &bytes),
    )
}

/// Runs `f` on its own thread and fails if it does not finish within [`HANG`].
fn within_bound(input: Vec<u8>, f: fn(&[u8])) {
    let (tx, rx) = mpsc::channel();
    let worker = std::thread::spawn(move || {
        f(&input);
        let _ = tx.send(());
    });
    match rx.recv_timeout(HANG) {
        Ok(()) => worker.join().unwrap(),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            // The worker panicked: hand its panic on, with its message.
            std::panic::resume_unwind(worker.join().unwrap_err())
        }
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("a case did not finish in {HANG:?}"),
    }
}

fn path() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop::sample::select(vec![
            "a",
            "d",
            "d/b",
            "d/e",
            "l",
            "l/x",
            ".",
            "..",
            "../x",
            "/etc/passwd",
            "",
            "a/",
            "x//y",
            "-rf",
            "new\nline",
            "d/../a",
        ])
        .prop_map(|s| json!(s)),
        "[a-z./]{0,12}".prop_map(|s| json!(s)),
        prop::collection::vec(any::<u8>(), 0..8).prop_map(|b| json!({"bytes": base64_encode(&b)})),
        Just(json!({"bytes": "***"})),
        Just(json!(17)),
        Just(Value::Null),
    ]
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A number that is sometimes an edge: 0, the largest values, negative,
/// or not a number at all.
fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        6 => (0u64..20).prop_map(|n| json!(n)),
        2 => Just(json!(u64::MAX)),
        1 => Just(json!(i64::MAX)),
        2 => Just(json!(1u64 << 40)),
        1 => Just(json!(-1)),
        1 => Just(json!(1.5)),
        1 => Just(json!("7")),
    ]
}

fn mode() -> impl Strategy<Value = Value> {
    prop_oneof![
        8 => prop::sample::select(vec![0o644u32, 0o755, 0o4755, 0o7777, 0]).prop_map(|m| json!(m)),
        1 => number(),
    ]
}

fn entry() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(vec!["file", "dir", "symlink", "fifo"]),
        number(),
        mode(),
        prop::option::weighted(0.2, path()),
    )
        .prop_map(|(kind, size, mode, target)| {
            let mut e = json!({"kind": kind, "size": size, "mtime": 0, "mode": mode});
            if let Some(t) = target {
                e["target"] = t;
            }
            e
        })
}

/// One `--serve` request line (and, for a put, the raw bytes after it).
fn request() -> impl Strategy<Value = Vec<u8>> {
    let line = prop_oneof![
        Just(json!({"op": "hello", "v": 1})),
        prop::collection::vec("[*!a-z/.]{0,6}", 0..3)
            .prop_map(|x| json!({"op": "hello", "v": 1, "excludes": x})),
        number().prop_map(|v| json!({"op": "hello", "v": v})),
        any::<bool>().prop_map(|on| json!({"op": "owners", "on": on})),
        any::<bool>().prop_map(|c| json!({"op": "scan", "checksum": c})),
        prop::collection::vec(path(), 0..3)
            .prop_map(|p| json!({"op": "scan_paths", "paths": p, "checksum": true})),
        prop::collection::vec(path(), 0..3).prop_map(|p| json!({"op": "hash", "paths": p})),
        (path(), path(), entry()).prop_map(|(p, to, e)| {
            json!({"op": "change", "change": {"op": "rename", "path": p, "to": to, "expect": e}})
        }),
        (
            prop::sample::select(vec!["remove", "rmdir"]),
            path(),
            entry()
        )
            .prop_map(
                |(op, p, e)| json!({"op": "change", "change": {"op": op, "path": p, "expect": e}})
            ),
        (path(), entry()).prop_map(
            |(p, e)| json!({"op": "change", "change": {"op": "mkdir", "path": p, "entry": e}})
        ),
        (path(), entry(), entry()).prop_map(|(p, s, e)| {
            json!({"op": "change", "change": {"op": "set_meta", "path": p, "src": s, "expect": e}})
        }),
        (path(), entry()).prop_map(|(p, e)| json!({"op": "get", "path": p, "expect": e})),
        Just(json!({"op": "bye"})),
        Just(json!({"op": "explode"})),
    ];
    let put = (
        path(),
        entry(),
        prop::option::of(entry()),
        prop::collection::vec(any::<u8>(), 0..40),
        any::<bool>(),
    )
        .prop_map(|(p, src, expect, data, intact)| {
            let mut out = json!({"op": "put", "path": p, "src": src, "expect": expect}).to_string();
            out.push('\n');
            let mut out = out.into_bytes();
            out.extend_from_slice(&data);
            out.extend_from_slice(json!({ "intact": intact }).to_string().as_bytes());
            out.push(b'\n');
            out
        });
    prop_oneof![
        4 => line.prop_map(|v| {
            let mut l = v.to_string().into_bytes();
            l.push(b'\n');
            l
        }),
        1 => put,
    ]
}

/// Cuts the input short at some point and flips some bytes: a peer that
/// dies mid-line or sends garbage.
fn damaged(input: impl Strategy<Value = Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    (
        input,
        prop::option::weighted(0.3, any::<prop::sample::Index>()),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
    )
        .prop_map(|(mut bytes, cut, flips)| {
            if !bytes.is_empty() {
                for (at, b) in flips {
                    let i = at.index(bytes.len());
                    bytes[i] = b;
                }
                if let Some(cut) = cut {
                    bytes.truncate(cut.index(bytes.len() + 1));
                }
            }
            bytes
        })
}

fn session() -> impl Strategy<Value = Vec<u8>> {
    let requests = prop::collection::vec(request(), 0..12).prop_map(|rs| {
        let mut out = json!({"op": "hello", "v": 1}).to_string().into_bytes();
        out.push(b'\n');
        out.extend(rs.concat());
        out
    });
    prop_oneof![
        6 => damaged(requests),
        1 => prop::collection::vec(any::<u8>(), 0..200),
    ]
}

fn serve_case(input: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    syncpipe::fuzz::serve_fixture(dir.path()).unwrap();
    syncpipe::fuzz::serve_bytes(dir.path(), input);
}

#[test]
fn serve_survives_any_request_bytes() {
    runner("serve", 100)
        .run(&session(), |input| {
            within_bound(input, serve_case);
            Ok(())
        })
        .unwrap();
}

fn record() -> impl Strategy<Value = Value> {
    let change = (
        prop::sample::select(vec!["update", "delete", "move", "rescan", "explode"]),
        path(),
        prop::option::of(path()),
        any::<bool>(),
    )
        .prop_map(|(op, p, from, dir)| {
            let mut c = json!({"op": op, "path": p, "dir": dir});
            if let Some(f) = from {
                c["from"] = f;
            }
            c
        });
    prop_oneof![
        (path(), "[0-9a-f]{0,32}").prop_map(|(root, s)| json!({"type": "header", "v": 1,
            "stream": s, "root": root, "host": "h", "ts": "t", "producer": "p/1"})),
        (
            number(),
            prop::sample::select(vec![
                "create", "modify", "delete", "move", "attrib", "rescan", "xattr"
            ]),
            path(),
            prop::option::of(path()),
            any::<bool>()
        )
            .prop_map(|(seq, kind, p, from, dir)| {
                let mut e = json!({"type": "event", "seq": seq, "ts": "t", "kind": kind,
                    "path": p, "dir": dir});
                if let Some(f) = from {
                    e["from"] = f;
                }
                e
            }),
        (number(), "[a-z-]{0,16}")
            .prop_map(|(seq, r)| json!({"type": "end", "seq": seq, "ts": "t", "reason": r})),
        (
            number(),
            number(),
            path(),
            prop::collection::vec(change, 0..4)
        )
            .prop_map(
                |(first, last, root, changes)| json!({"type": "batch", "stream": "s",
                "first_seq": first, "last_seq": last, "root": root, "ts": "t", "changes": changes})
            ),
        (prop::option::of(any::<bool>()), "[a-z]{0,4}")
            .prop_map(|(full, s)| json!({"type": "resume", "stream": s, "full": full})),
        ("[a-z\\-]{0,10}", number()).prop_map(|(t, n)| json!({"type": t, "n": n, "x": {"y": [1]}})),
        Just(json!([1, 2])),
        Just(json!({"type": 3})),
    ]
}

fn stream() -> impl Strategy<Value = Vec<u8>> {
    let lines = prop::collection::vec(
        prop_oneof![
            8 => record().prop_map(|v| v.to_string().into_bytes()),
            1 => prop::collection::vec(any::<u8>(), 0..30),
            1 => Just(b"  \t ".to_vec()),
        ],
        0..16,
    )
    .prop_map(|ls| ls.join(&b'\n'));
    prop_oneof![
        6 => damaged(lines),
        1 => prop::collection::vec(any::<u8>(), 0..200),
    ]
}

#[test]
fn the_stream_reader_survives_any_bytes() {
    runner("stream", 300)
        .run(&stream(), |input| {
            within_bound(input, syncpipe::fuzz::stream_bytes);
            Ok(())
        })
        .unwrap();
}

/// A line past the limit is one malformed item, read without holding it:
/// the reader's buffer stays within the limit and the next line still
/// parses.
#[test]
fn an_endless_line_is_refused_within_the_limit() {
    use std::io::{BufReader, Read};
    use syncpipe::wire::reader::{Item, RecordReader, MAX_LINE};
    let long = std::io::repeat(b'x').take(3 * MAX_LINE as u64);
    let rest = &b"\n{\"type\":\"end\",\"seq\":1,\"ts\":\"t\",\"reason\":\"r\"}\n"[..];
    let mut reader = RecordReader::new(BufReader::new(long.chain(rest)));
    let first = reader.next_item().unwrap().unwrap();
    assert!(
        matches!(first, Item::Malformed { line_no: 1, .. }),
        "{first:?}"
    );
    assert!(reader.buffer_capacity() <= 2 * (MAX_LINE + 1));
    let second = reader.next_item().unwrap().unwrap();
    assert!(matches!(second, Item::Record(_)), "{second:?}");
    assert!(reader.next_item().unwrap().is_none());
}

/// Found by the structured run: a `get` whose expected size was made up had
/// `--serve` write that many zeros (2^64 - 1 of them: without end). It now
/// announces nothing for a file that is not there as expected.
#[test]
fn serve_does_not_pad_a_made_up_size() {
    let dir = tempfile::tempdir().unwrap();
    syncpipe::fuzz::serve_fixture(dir.path()).unwrap();
    for expect in [
        json!({"kind": "file", "size": u64::MAX}),
        json!({"kind": "dir", "size": u64::MAX}),
        json!({"kind": "file", "size": 1u64 << 40}),
    ] {
        for path in ["a", "d", "missing"] {
            let input = format!(
                "{}\n{}\n",
                json!({"op": "hello", "v": 1}),
                json!({"op": "get", "path": path, "expect": expect})
            );
            // Before the fix this wrote without end: stop it at 1 MiB.
            let mut out = Capped(Vec::new());
            syncpipe::bisync::serve::serve_on(dir.path(), false, input.as_bytes(), &mut out)
                .unwrap();
            let text = String::from_utf8(out.0).unwrap();
            let lines: Vec<&str> = text.lines().collect();
            assert_eq!(lines.len(), 3, "{text}");
            assert_eq!(lines[1], r#"{"size":0}"#);
            assert_eq!(lines[2], r#"{"intact":false}"#);
        }
    }
}

/// A writer that refuses to grow past 1 MiB.
struct Capped(Vec<u8>);

impl std::io::Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + buf.len() > 1 << 20 {
            return Err(std::io::Error::other("more than 1 MiB of output"));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
