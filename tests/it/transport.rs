//! The socket transport: a writer with a backlog, readers that come and go
//! and resume, and the full-sync answer when the backlog lost their place.

use std::fs;
use std::process::{Command, Stdio};
use std::time::Duration;

use syncpipe::wire::event::{Event, EventKind, Header, Record, Timestamp};
use syncpipe::wire::reader::Item;
use syncpipe::wire::transport::client::Connector;
use syncpipe::wire::transport::server::{BacklogSize, Server};

use crate::support::{bin, tempdir, Running};

fn header(stream: &str) -> Record {
    Record::Header(Header {
        v: 1,
        stream: stream.into(),
        root: "/data".into(),
        host: "h".into(),
        ts: Timestamp::now(),
        producer: "test".into(),
        backend: None,
    })
}

fn event(seq: u64) -> Record {
    Record::Event(Event {
        seq,
        ts: Timestamp::now(),
        kind: EventKind::Modify,
        path: format!("f{seq}").as_str().into(),
        dir: false,
        from: None,
    })
}

fn never() -> bool {
    false
}

fn next(c: &mut Connector) -> Item {
    c.next_item(&never).unwrap().expect("an item")
}

fn seq_of(item: &Item) -> u64 {
    match item {
        Item::Record(Record::Event(e)) => e.seq,
        other => panic!("expected an event, got {other:?}"),
    }
}

#[test]
fn readers_resume_where_they_left_off() {
    let dir = tempdir();
    let sock = dir.path().join("s.sock");
    let server = Server::bind(&sock, BacklogSize::default()).unwrap();
    server.publish(&header("one")).unwrap();
    for seq in 1..=5 {
        server.publish(&event(seq)).unwrap();
    }

    // A new reader: the header (a new stream to it, so it syncs fully),
    // then only what comes after it connected.
    let mut fresh = Connector::new(&sock, None);
    assert!(matches!(next(&mut fresh), Item::Record(Record::Header(h)) if h.stream == "one"));
    server.publish(&event(6)).unwrap();
    assert_eq!(seq_of(&next(&mut fresh)), 6);

    // A reader that applied up to 3 (e.g. from pushd's state): 4, 5, 6.
    let mut resumed = Connector::new(&sock, Some(("one".into(), 3)));
    assert!(matches!(
        next(&mut resumed),
        Item::Record(Record::Header(_))
    ));
    for want in 4..=6 {
        assert_eq!(seq_of(&next(&mut resumed)), want);
    }
    drop(server);
}

#[test]
fn a_place_lost_from_the_backlog_is_a_gap() {
    let dir = tempdir();
    let sock = dir.path().join("s.sock");
    let server = Server::bind(
        &sock,
        BacklogSize {
            records: 3,
            bytes: 1 << 20,
        },
    )
    .unwrap();
    server.publish(&header("one")).unwrap();
    for seq in 1..=10 {
        server.publish(&event(seq)).unwrap();
    }
    let mut late = Connector::new(&sock, Some(("one".into(), 2)));
    assert!(matches!(next(&mut late), Item::Record(Record::Header(_))));
    assert!(matches!(next(&mut late), Item::Gap { .. }));
    server.publish(&event(11)).unwrap();
    assert_eq!(seq_of(&next(&mut late)), 11);
}

#[test]
fn a_stale_socket_file_is_replaced_and_a_live_one_refused() {
    let dir = tempdir();
    let sock = dir.path().join("s.sock");
    let first = Server::bind(&sock, BacklogSize::default()).unwrap();
    let err = Server::bind(&sock, BacklogSize::default()).err().unwrap();
    assert!(format!("{err:#}").contains("in use"), "{err:#}");
    drop(first);
    // The listener thread still holds the socket open until it notices;
    // a plain file in the way is refused outright.
    let plain = dir.path().join("plain");
    fs::write(&plain, b"x").unwrap();
    let err = Server::bind(&plain, BacklogSize::default()).err().unwrap();
    assert!(format!("{err:#}").contains("not a socket"), "{err:#}");
}

#[test]
fn watchd_serves_readers_that_come_back() {
    let dir = tempdir();
    let root = dir.path().join("root");
    fs::create_dir(&root).unwrap();
    let sock = dir.path().join("watchd.sock");
    let mut watchd = Running::spawn(
        Command::new(bin("watchd"))
            .arg("--listen")
            .arg(&sock)
            .arg(&root)
            .stdout(Stdio::null()),
    );
    let mut reader = Connector::new(&sock, None);
    let Item::Record(Record::Header(h)) = next(&mut reader) else {
        panic!("no header")
    };
    fs::write(root.join("a"), b"x").unwrap();
    let mut last = 0;
    while last < 2 {
        last = seq_of(&next(&mut reader));
    }
    drop(reader); // the reader goes away...
    fs::write(root.join("b"), b"x").unwrap(); // ...changes happen...
    std::thread::sleep(Duration::from_millis(200));
    // ...and it comes back, resuming after what it had.
    let mut again = Connector::new(&sock, Some((h.stream.clone(), last)));
    assert!(matches!(next(&mut again), Item::Record(Record::Header(_))));
    match next(&mut again) {
        Item::Record(Record::Event(e)) => {
            assert_eq!(e.seq, last + 1);
            assert_eq!(e.path.as_bytes(), b"b");
        }
        other => panic!("{other:?}"),
    }
    watchd.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(watchd.wait_exit(), Some(0));
}

#[test]
fn a_reader_that_loses_its_writer_resumes_after_what_it_handed_on() {
    let dir = tempdir();
    let sock = dir.path().join("s.sock");
    let first = Server::bind(&sock, BacklogSize::default()).unwrap();
    first.publish(&header("one")).unwrap();
    let mut reader = Connector::new(&sock, None);
    assert!(matches!(next(&mut reader), Item::Record(Record::Header(_))));
    for seq in 1..=3 {
        first.publish(&event(seq)).unwrap();
        assert_eq!(seq_of(&next(&mut reader)), seq);
    }
    drop(first);
    // The same stream served again (as a writer that kept its backlog
    // would): the reader asks for what came after 3.
    fs::remove_file(&sock).unwrap();
    let second = Server::bind(&sock, BacklogSize::default()).unwrap();
    second.publish(&header("one")).unwrap();
    for seq in 1..=5 {
        second.publish(&event(seq)).unwrap();
    }
    assert_eq!(reader.seq(), 3);
    assert_eq!(seq_of(&next(&mut reader)), 4);
    assert_eq!(seq_of(&next(&mut reader)), 5);
}
