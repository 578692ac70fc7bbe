//! relayd against a real nats-server with JetStream: records round-trip
//! byte-exact with hostile names, a restarted subscriber resumes exactly, a
//! trimmed cursor or a recreated stream ends in a rescan, a killed server
//! loses nothing, and a whole fleet pipeline converges.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;
use syncpipe::wire::event::{Event, EventKind, Header, Record, Timestamp, PROTOCOL_VERSION};
use syncpipe::wire::path::WirePath;

use crate::pushd::harness::{tree, write, NASTY};
use crate::support::nats::NatsServer;
use crate::support::{bin, tempdir, wait_until, NotifySocket, RecordStream, Running, TIMEOUT};

fn header(stream: &str) -> Record {
    Record::Header(Header {
        v: PROTOCOL_VERSION,
        stream: stream.into(),
        root: WirePath::from_bytes(&b"/data/with \n odd\xff root"[..]),
        host: "src".into(),
        ts: Timestamp::now(),
        producer: "test/1".into(),
        backend: None,
    })
}

/// Events `seqs`, cycling through the hostile names.
fn events(seqs: std::ops::RangeInclusive<u64>) -> Vec<Record> {
    seqs.map(|seq| {
        let name = NASTY[seq as usize % NASTY.len()];
        let mut path = b"dir/".to_vec();
        path.extend_from_slice(name);
        Record::Event(Event {
            seq,
            ts: Timestamp(format!("2026-12-01T00:00:{:02}.000Z", seq % 60)),
            kind: if seq % 3 == 0 {
                EventKind::Move
            } else {
                EventKind::Modify
            },
            path: WirePath::from_bytes(path),
            dir: false,
            from: (seq % 3 == 0).then(|| WirePath::from_bytes(name.to_vec())),
        })
    })
    .collect()
}

/// Runs `relayd publish` over `records`; returns its exit code.
fn publish(url: &str, records: &[Record]) -> Option<i32> {
    let mut child = Command::new(bin("relayd"))
        .args(["publish", url])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for r in records {
        writeln!(stdin, "{}", r.to_line()).unwrap();
    }
    drop(stdin);
    let mut run = Running { child };
    run.wait_exit()
}

/// `relayd publish` reading what the test writes to the returned stdin.
fn live_publisher(url: &str, extra: &[&str]) -> (Running, std::process::ChildStdin) {
    let mut child = Command::new(bin("relayd"))
        .args(["publish", url])
        .args(extra)
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    (Running { child }, stdin)
}

struct Sub {
    run: Running,
    out: RecordStream,
    log: tempfile::NamedTempFile,
}

fn subscribe(url: &str, durable: &str, notify: Option<&Path>) -> Sub {
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut cmd = Command::new(bin("relayd"));
    cmd.args(["subscribe", url, "--durable", durable, "-v"])
        .stdout(Stdio::piped())
        .stderr(log.reopen().unwrap());
    if let Some(n) = notify {
        cmd.env("NOTIFY_SOCKET", n);
    }
    let mut run = Running::spawn(&mut cmd);
    let out = RecordStream::new(run.child.stdout.take().unwrap());
    Sub { run, out, log }
}

impl Sub {
    /// The next `n` records (fails the test if they do not come).
    fn take(&mut self, n: usize) -> Vec<Record> {
        (0..n)
            .map(|i| {
                self.out.next(TIMEOUT).unwrap_or_else(|| {
                    panic!("record {i} of {n} did not come; log:\n{}", self.log())
                })
            })
            .collect()
    }

    fn log(&self) -> String {
        fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    fn stop(mut self) {
        self.run.signal(Signal::SIGTERM);
        assert_eq!(self.run.wait_exit(), Some(0), "{}", self.log());
    }
}

/// Waits until the stream holds event `seq` (the publisher runs on its own),
/// reading it through a throw-away consumer.
fn wait_published(url: &str, seq: u64) {
    let mut probe = subscribe(url, &format!("probe{seq}"), None);
    probe.out.wait_for(
        "the last event published",
        |r| matches!(r, Record::Event(e) if e.seq == seq),
    );
    probe.stop();
}

fn is_rescan(r: &Record) -> Option<u64> {
    match r {
        Record::Event(e) if e.kind == EventKind::Rescan && e.path.is_root() => Some(e.seq),
        _ => None,
    }
}

#[test]
fn round_trip_with_hostile_names_and_deduplicated_republish() {
    let nats = NatsServer::start();
    let url = nats.url("rt");
    let mut input = vec![header("s1")];
    input.extend(events(1..=2 * NASTY.len() as u64));
    input.push(Record::Other {
        kind: "future".into(),
        line: br#"{"type":"future","x":[1,2]}"#.to_vec(),
    });
    input.extend(events(
        2 * NASTY.len() as u64 + 1..=2 * NASTY.len() as u64 + 2,
    ));
    assert_eq!(publish(&url, &input), Some(0));
    // The same records again (a restarted publisher replaying): dropped by Nats-Msg-Id.
    assert_eq!(publish(&url, &input), Some(0));

    let mut sub = subscribe(&url, "r1", None);
    let got = sub.take(input.len());
    assert_eq!(got, input);
    assert!(
        sub.out.next(Duration::from_millis(500)).is_none(),
        "the republish was not de-duplicated"
    );
    sub.stop();
}

#[test]
fn second_live_publisher_is_refused() {
    let nats = NatsServer::start();
    let url = nats.url("two");
    let mut first = Running {
        child: Command::new(bin("relayd"))
            .args(["publish", &url])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap(),
    };
    let mut stdin = first.child.stdin.take().unwrap();
    writeln!(stdin, "{}", header("first").to_line()).unwrap();
    for e in events(1..=3) {
        writeln!(stdin, "{}", e.to_line()).unwrap();
    }
    stdin.flush().unwrap();
    // The first one's records are in once a subscriber sees them.
    let mut sub = subscribe(&url, "r", None);
    sub.take(4);
    let mut input = vec![header("second")];
    input.extend(events(1..=2));
    assert_eq!(
        publish(&url, &input),
        Some(16),
        "the second publisher must be refused"
    );
    // Nothing of the second stream got in.
    assert!(sub.out.next(Duration::from_millis(500)).is_none());
    drop(stdin);
    assert_eq!(first.wait_exit(), Some(0));
    sub.stop();
}

#[test]
fn restarted_subscriber_resumes_exactly_and_reports_its_lag() {
    let nats = NatsServer::start();
    let url = nats.url("resume");
    let mut first = vec![header("s")];
    first.extend(events(1..=10));
    assert_eq!(publish(&url, &first), Some(0));

    let notify = NotifySocket::new();
    let mut sub = subscribe(&url, "web1", Some(notify.path()));
    assert_eq!(sub.take(11), first);
    notify.wait_for("READY=1");
    notify.wait_for("wrote JetStream seq 11 (stream s seq 10); 0 pending");
    sub.run.signal(Signal::SIGUSR1);
    assert!(
        wait_until(TIMEOUT, || sub
            .log()
            .contains("web1: wrote JetStream seq 11")),
        "SIGUSR1 logs the lag: {}",
        sub.log()
    );
    sub.stop();

    // The publisher goes on (same stream id: its header is a duplicate).
    let mut more = vec![header("s")];
    more.extend(events(11..=20));
    assert_eq!(publish(&url, &more), Some(0));

    let mut sub = subscribe(&url, "web1", None);
    let got = sub.take(12);
    assert!(matches!(&got[0], Record::Header(h) if h.stream == "s"));
    assert_eq!(got[1], first[10], "the last event acknowledged, once more");
    assert_eq!(
        got[2..],
        more[1..],
        "then exactly the records after the cursor"
    );
    assert!(got.iter().all(|r| is_rescan(r).is_none()));
    assert!(sub.out.next(Duration::from_millis(500)).is_none());
    sub.stop();
}

/// `count` pass-through records (a type this version does not know).
fn others(count: usize) -> Vec<Record> {
    (0..count)
        .map(|i| Record::Other {
            kind: "future".into(),
            line: format!(r#"{{"type":"future","i":{i}}}"#).into_bytes(),
        })
        .collect()
}

/// The replay at start looks back past many pass-through records for the
/// last event acknowledged (it once gave up after 64 without a word); past
/// its reach it writes a rescan of the root at that seq and says so.
#[test]
fn the_replay_at_start_finds_the_last_event_behind_many_other_records() {
    let nats = NatsServer::start();
    let url = nats.url("far");
    let (mut publisher, mut stdin) = live_publisher(&url, &[]);
    let mut send = |records: &[Record]| {
        for r in records {
            writeln!(stdin, "{}", r.to_line()).unwrap();
        }
        stdin.flush().unwrap();
    };
    let mut input = vec![header("s")];
    input.extend(events(1..=2));
    input.extend(others(100));
    send(&input);
    let mut sub = subscribe(&url, "web1", None);
    assert_eq!(sub.take(input.len()), input);
    sub.stop();

    let mut sub = subscribe(&url, "web1", None);
    let got = sub.take(2);
    assert_eq!(got[..1], input[..1], "the header");
    assert_eq!(got[1], input[2], "the last event, 100 messages back");
    assert!(sub
        .log()
        .contains("wrote the last event acknowledged again"));
    sub.stop();

    // Further back than relayd looks: a rescan at the last seq stands in.
    let more = others(4200);
    send(&more);
    let mut sub = subscribe(&url, "web1", None);
    assert_eq!(sub.take(2 + more.len())[2..], more[..]);
    sub.stop();
    let mut sub = subscribe(&url, "web1", None);
    let got = sub.take(2);
    assert!(matches!(&got[0], Record::Header(h) if h.stream == "s"));
    assert_eq!(is_rescan(&got[1]), Some(2), "{:?}", got[1]);
    let log = sub.log();
    assert!(
        log.contains("full sync") && log.contains("not found"),
        "{log}"
    );
    sub.stop();
    drop(stdin);
    assert_eq!(publisher.wait_exit(), Some(0));
}

#[test]
fn trimmed_cursor_and_recreated_stream_mean_a_rescan() {
    let mut nats = NatsServer::start();
    let url = nats.url("trim");
    let (mut publisher, mut stdin) = live_publisher(&url, &["--max-msgs", "5"]);
    let mut send = |records: &[Record]| {
        for r in records {
            writeln!(stdin, "{}", r.to_line()).unwrap();
        }
        stdin.flush().unwrap();
    };
    send(&[header("s")]);
    send(&events(1..=3));
    let mut sub = subscribe(&url, "r", None);
    sub.take(4);
    sub.stop();

    // While the replica is away the stream keeps only the last 5 messages.
    send(&events(4..=20));
    wait_published(&url, 20);
    let mut sub = subscribe(&url, "r", None);
    let got = sub.take(7);
    assert!(matches!(&got[0], Record::Header(h) if h.stream == "s"));
    assert_eq!(is_rescan(&got[1]), Some(15), "{got:?}");
    assert_eq!(got[2..], events(16..=20)[..]);
    assert!(sub.log().contains("full sync"), "{}", sub.log());
    sub.stop();

    // The stream is lost and made again while the publisher runs on.
    nats.kill_and_restart(true);
    send(&events(21..=22));
    wait_published(&url, 22);
    let mut sub = subscribe(&url, "r", None);
    let got = sub.take(4);
    assert!(matches!(&got[0], Record::Header(h) if h.stream == "s"));
    assert_eq!(is_rescan(&got[1]), Some(20), "{got:?}");
    assert_eq!(got[2..], events(21..=22)[..]);
    sub.stop();
    drop(stdin);
    assert_eq!(publisher.wait_exit(), Some(0));
}

#[test]
fn killed_server_loses_no_change() {
    let mut nats = NatsServer::start();
    let url = nats.url("kill");
    let (mut publisher, mut stdin) = live_publisher(&url, &[]);
    let mut input = vec![header("k")];
    input.extend(events(1..=60));
    let mut sub = subscribe(&url, "r", None);
    let mut got = Vec::new();
    for (i, r) in input.iter().enumerate() {
        writeln!(stdin, "{}", r.to_line()).unwrap();
        stdin.flush().unwrap();
        if i == 20 {
            got.extend(sub.take(21));
            nats.kill_and_restart(false);
        }
    }
    got.extend(sub.take(input.len() - 21));
    assert_eq!(got, input, "every record, once, in order");
    drop(stdin);
    assert_eq!(publisher.wait_exit(), Some(0));
    sub.stop();
}

#[test]
fn sigterm_stops_a_publisher_waiting_for_a_lost_server() {
    let mut nats = NatsServer::start();
    let url = nats.url("away");
    let (mut publisher, mut stdin) = live_publisher(&url, &[]);
    writeln!(stdin, "{}", header("a").to_line()).unwrap();
    stdin.flush().unwrap();
    let mut sub = subscribe(&url, "r", None);
    sub.take(1);
    nats.kill();
    for e in events(1..=2) {
        writeln!(stdin, "{}", e.to_line()).unwrap();
    }
    stdin.flush().unwrap();
    publisher.signal(Signal::SIGTERM);
    assert_eq!(publisher.wait_exit(), Some(0));
    sub.stop();
}

/// `watchd SRC | relayd publish` and `relayd subscribe | batchd | pushd DST`.
#[test]
fn fleet_pipeline_converges() {
    let nats = NatsServer::start();
    let url = nats.url("fleet");
    let (src, dst) = (tempdir(), tempdir());
    write(src.path(), b"before", b"there at start");
    let spawn = |cmd: &mut Command| -> Child { cmd.spawn().unwrap() };
    let mut watchd = spawn(
        Command::new(bin("watchd"))
            .arg(src.path())
            .stdout(Stdio::piped()),
    );
    let publisher = spawn(
        Command::new(bin("relayd"))
            .args(["publish", &url])
            .stdin(watchd.stdout.take().unwrap()),
    );
    let mut sub = spawn(
        Command::new(bin("relayd"))
            .args(["subscribe", &url, "--durable", "dst"])
            .stdout(Stdio::piped()),
    );
    let mut batchd = spawn(
        Command::new(bin("batchd"))
            .args(["-d", "100ms"])
            .stdin(sub.stdout.take().unwrap())
            .stdout(Stdio::piped()),
    );
    let pushd = spawn(
        Command::new(bin("pushd"))
            .arg(dst.path())
            .stdin(batchd.stdout.take().unwrap())
            .stdout(Stdio::null()),
    );
    let _all: Vec<Running> = [watchd, publisher, sub, batchd, pushd]
        .into_iter()
        .map(|child| Running { child })
        .collect();
    let converged = || {
        wait_until(Duration::from_secs(30), || {
            tree(src.path()) == tree(dst.path())
        })
    };
    assert!(converged(), "initial sync");
    for (i, name) in NASTY.iter().enumerate() {
        write(src.path(), name, format!("v{i}").as_bytes());
    }
    fs::create_dir_all(src.path().join("d/e")).unwrap();
    write(src.path(), b"d/e/deep", b"deep");
    fs::rename(src.path().join("a b"), src.path().join("d/a b moved")).unwrap();
    fs::remove_file(src.path().join("before")).unwrap();
    assert!(converged(), "after changes");
    assert!(!dst.path().join("before").exists());
}

/// A private CA, a server certificate for 127.0.0.1 and a client certificate.
fn make_certs(dir: &Path) {
    let sh = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    sh(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=test CA",
    ]);
    for (name, san) in [("server", "IP:127.0.0.1"), ("client", "DNS:client")] {
        sh(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={name}"),
        ]);
        fs::write(
            dir.join(format!("{name}.ext")),
            format!("subjectAltName={san}\n"),
        )
        .unwrap();
        sh(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
        ]);
    }
}

#[test]
fn mutual_tls_with_a_private_ca() {
    let certs = tempdir();
    let c = |f: &str| certs.path().join(f).to_string_lossy().into_owned();
    make_certs(certs.path());
    let nats = NatsServer::start_with(&[
        "--tlsverify".into(),
        "--tlscert".into(),
        c("server.pem"),
        "--tlskey".into(),
        c("server.key"),
        "--tlscacert".into(),
        c("ca.pem"),
    ]);
    let url = format!("nats+tls://127.0.0.1:{}/tls", nats.port());
    let tls = [
        "--tls-ca",
        &c("ca.pem"),
        "--tls-cert",
        &c("client.pem"),
        "--tls-key",
        &c("client.key"),
    ];
    let mut input = vec![header("t")];
    input.extend(events(1..=3));

    // Without a client certificate the server refuses.
    let out = Command::new(bin("relayd"))
        .args(["publish", &url, "--tls-ca", &c("ca.pem")])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_ne!(
        out.status.code(),
        Some(0),
        "a client without a certificate got in"
    );

    let mut child = Command::new(bin("relayd"))
        .args(["publish", &url])
        .args(tls)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for r in &input {
        writeln!(stdin, "{}", r.to_line()).unwrap();
    }
    drop(stdin);
    assert_eq!(Running { child }.wait_exit(), Some(0));

    let log = tempfile::NamedTempFile::new().unwrap();
    let mut run = Running::spawn(
        Command::new(bin("relayd"))
            .args(["subscribe", &url, "--durable", "t"])
            .args(tls)
            .stdout(Stdio::piped())
            .stderr(log.reopen().unwrap()),
    );
    let mut out = RecordStream::new(run.child.stdout.take().unwrap());
    let got: Vec<Record> = (0..input.len())
        .map(|_| {
            out.next(TIMEOUT)
                .unwrap_or_else(|| panic!("{}", fs::read_to_string(log.path()).unwrap()))
        })
        .collect();
    assert_eq!(got, input);
}

/// source → tier-1 → tier-2 on one JetStream stream: tier-1 pulls from the
/// source, tier-2 from tier-1 and waits for tier-1's `--state` to cover
/// each batch. Tier-1 batches slowly (600 ms) and tier-2 fast (50 ms), so
/// without the wait tier-2 would pull files tier-1 has not updated yet and
/// keep them. Seeded churn with hostile names; the seed is printed.
#[test]
fn two_tiers_converge_under_churn() {
    let nats = NatsServer::start();
    let url = nats.url("tiers");
    let (src, t1, t2, scratch) = (tempdir(), tempdir(), tempdir(), tempdir());
    let (t1, t2) = (t1.path().join("www"), t2.path().join("www"));
    let state1 = scratch.path().join("tier1.state");
    write(src.path(), b"before", b"there at start");
    let spawn = |cmd: &mut Command| -> Child { cmd.spawn().unwrap() };
    let mut watchd = spawn(
        Command::new(bin("watchd"))
            .arg(src.path())
            .stdout(Stdio::piped()),
    );
    let publisher = spawn(
        Command::new(bin("relayd"))
            .args(["publish", &url])
            .stdin(watchd.stdout.take().unwrap()),
    );
    let mut all = vec![watchd, publisher];
    // One tier: relayd subscribe | batchd -d DELAY | pushd ARGS.
    let mut tier = |durable: &str, delay: &str, args: Vec<std::ffi::OsString>| {
        let mut sub = spawn(
            Command::new(bin("relayd"))
                .args(["subscribe", &url, "--durable", durable])
                .stdout(Stdio::piped()),
        );
        let mut batchd = spawn(
            Command::new(bin("batchd"))
                .args(["-d", delay])
                .stdin(sub.stdout.take().unwrap())
                .stdout(Stdio::piped()),
        );
        let pushd = spawn(
            Command::new(bin("pushd"))
                .args(["--retry-min", "50ms", "--retry-max", "500ms"])
                .args(args)
                .stdin(batchd.stdout.take().unwrap())
                .stdout(Stdio::null()),
        );
        all.extend([sub, batchd, pushd]);
    };
    tier(
        "tier1",
        "600ms",
        vec![
            "--state".into(),
            state1.clone().into(),
            "--from".into(),
            src.path().into(),
            t1.clone().into(),
        ],
    );
    tier(
        "tier2",
        "50ms",
        vec![
            "--from".into(),
            t1.clone().into(),
            "--upstream-state".into(),
            state1.clone().into(),
            t2.clone().into(),
        ],
    );
    let _all: Vec<Running> = all.into_iter().map(|child| Running { child }).collect();
    let converged = || {
        wait_until(Duration::from_secs(90), || {
            let want = tree(src.path());
            want == tree(&t1) && want == tree(&t2)
        })
    };
    assert!(converged(), "initial sync");
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        % 1_000_000_007;
    eprintln!("two_tiers_converge_under_churn: seed {seed}");
    let mut churn = crate::pushd::churn::Churn::new(seed, src.path());
    for round in 0..6 {
        for _ in 0..40 {
            churn.step();
        }
        // Rewrite one file in place each round: the case where pulling
        // early copies the old content.
        write(src.path(), b"hot file", format!("round {round}").as_bytes());
        std::thread::sleep(Duration::from_millis(150));
    }
    assert!(
        converged(),
        "seed {seed}: the tiers did not converge: tier-1 {} the source, tier-2 {} tier-1",
        if tree(src.path()) == tree(&t1) {
            "equals"
        } else {
            "differs from"
        },
        if tree(&t1) == tree(&t2) {
            "equals"
        } else {
            "differs from"
        },
    );
    assert_eq!(fs::read(t2.join("hot file")).unwrap(), b"round 5");
}

/// `relayd subscribe | batchd | pushd --state` as three processes, their
/// logs in one file.
struct Pipeline {
    relayd: Running,
    batchd: Running,
    pushd: Running,
    log: tempfile::NamedTempFile,
}

impl Pipeline {
    fn start(url: &str, delay: &str, state: &Path, dst: &Path, notify: Option<&Path>) -> Self {
        let log = tempfile::NamedTempFile::new().unwrap();
        let mut relayd = Command::new(bin("relayd"));
        relayd
            .args(["subscribe", url, "--durable", "replica", "-v"])
            .stdout(Stdio::piped())
            .stderr(log.reopen().unwrap());
        if let Some(n) = notify {
            relayd.env("NOTIFY_SOCKET", n);
        }
        let mut relayd = relayd.spawn().unwrap();
        // `--settle 0`: the delay alone decides, so "1h" really holds.
        let mut batchd = Command::new(bin("batchd"))
            .args(["-d", delay, "--settle", "0"])
            .stdin(relayd.stdout.take().unwrap())
            .stdout(Stdio::piped())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap();
        let pushd = Command::new(bin("pushd"))
            .args(["-v", "--state"])
            .arg(state)
            .arg(dst)
            .stdin(batchd.stdout.take().unwrap())
            .stdout(Stdio::null())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap();
        Pipeline {
            relayd: Running { child: relayd },
            batchd: Running { child: batchd },
            pushd: Running { child: pushd },
            log,
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    fn stop(mut self) {
        for run in [&self.relayd, &self.batchd, &self.pushd] {
            run.signal(Signal::SIGTERM);
        }
        for run in [&mut self.relayd, &mut self.batchd, &mut self.pushd] {
            run.wait_exit();
        }
    }
}

/// relayd acknowledges a record when it writes it, not when pushd applied
/// it: a pipeline killed in between (batchd holding the batch) must not
/// make the next one skip it. relayd writes the last event it acknowledged
/// again at start, and pushd, seeing it past its stored position + 1,
/// syncs the whole root at once; a restart that lost nothing stays exact.
#[test]
fn records_written_but_not_applied_are_not_skipped_after_a_restart() {
    use std::os::unix::ffi::OsStrExt;
    let nats = NatsServer::start();
    let url = nats.url("gap");
    let (src, dst, dir) = (tempdir(), tempdir(), tempdir());
    let state = dir.path().join("pushd.state");
    let (mut publisher, mut stdin) = live_publisher(&url, &[]);
    let Record::Header(mut h) = header("g") else {
        unreachable!()
    };
    h.root = WirePath::from_bytes(src.path().as_os_str().as_bytes().to_vec());
    writeln!(stdin, "{}", Record::Header(h).to_line()).unwrap();
    let mut create = |seq: u64, name: &str| {
        write(src.path(), name.as_bytes(), name.as_bytes());
        let record = Record::Event(Event {
            seq,
            ts: Timestamp::now(),
            kind: EventKind::Create,
            path: WirePath::from_bytes(name.as_bytes().to_vec()),
            dir: false,
            from: None,
        });
        writeln!(stdin, "{}", record.to_line()).unwrap();
        stdin.flush().unwrap();
    };
    create(1, "a");
    let applied = |seq: u64| {
        wait_until(TIMEOUT, || {
            fs::read_to_string(&state).is_ok_and(|s| s.contains(&format!("\"seq\": {seq}")))
        })
    };

    let first = Pipeline::start(&url, "100ms", &state, dst.path(), None);
    assert!(applied(1), "{}", first.log());
    first.stop();

    // b and c reach batchd, which holds them (1 h): relayd has acknowledged
    // them; then the pipeline dies before pushd sees them.
    let notify = NotifySocket::new();
    let mut second = Pipeline::start(&url, "1h", &state, dst.path(), Some(notify.path()));
    create(2, "b");
    create(3, "c");
    notify.wait_for("wrote JetStream seq 4 (stream g seq 3)");
    second.batchd.signal(Signal::SIGKILL);
    second.relayd.signal(Signal::SIGTERM);
    assert_eq!(second.relayd.wait_exit(), Some(0), "{}", second.log());
    second.pushd.wait_exit();
    assert!(
        !dst.path().join("b").exists() && applied(1),
        "setup: b and c not applied"
    );

    // The source stays quiet: the restart alone must bring b and c.
    let third = Pipeline::start(&url, "100ms", &state, dst.path(), None);
    assert!(
        wait_until(TIMEOUT, || tree(src.path()) == tree(dst.path())),
        "{}",
        third.log()
    );
    assert!(
        third
            .log()
            .contains("resumed after seq 1 but the stream goes on at seq 3"),
        "{}",
        third.log()
    );
    assert!(applied(3), "{}", third.log());
    third.stop();

    // Nothing lost this time: exact, no full sync.
    let fourth = Pipeline::start(&url, "100ms", &state, dst.path(), None);
    create(4, "d");
    assert!(
        wait_until(TIMEOUT, || tree(src.path()) == tree(dst.path())),
        "{}",
        fourth.log()
    );
    assert!(applied(4), "{}", fourth.log());
    let log = fourth.log();
    assert!(log.contains("resuming stream after seq 3"), "{log}");
    assert!(!log.contains("whole root"), "{log}");
    fourth.stop();
    drop(stdin);
    assert_eq!(publisher.wait_exit(), Some(0));
}

/// `--status-file`/`--metrics-file`: the consumer's own numbers. With a
/// backlog and nobody reading, the file shows messages pending and the age
/// of the oldest one; once read, nothing pending and the last seq written.
#[test]
fn the_status_file_shows_the_replicas_lag() {
    let nats = NatsServer::start();
    let url = nats.url("lag");
    let mut input = vec![header("s")];
    input.extend(events(1..=1000));
    assert_eq!(publish(&url, &input), Some(0));
    let dir = tempdir();
    let (status, metrics) = (
        dir.path().join("relayd.json"),
        dir.path().join("relayd.prom"),
    );
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut run = Running {
        child: Command::new(bin("relayd"))
            .args(["subscribe", &url, "--durable", "web1", "--status-file"])
            .arg(&status)
            .arg("--metrics-file")
            .arg(&metrics)
            .stdout(Stdio::piped())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap(),
    };
    let document = || -> Option<serde_json::Value> {
        let doc: serde_json::Value = serde_json::from_slice(&fs::read(&status).ok()?).ok()?;
        assert_eq!(doc["program"], "relayd");
        Some(doc)
    };
    let numbers = || document().map(|d| d["numbers"].clone());
    // Nobody reads yet: the pipe fills, the backlog waits.
    let mut seen = None;
    assert!(
        wait_until(TIMEOUT, || {
            seen = numbers();
            seen.as_ref().is_some_and(|n| {
                n["pending_messages"].as_u64() > Some(0) && n["behind_seconds"].as_f64() > Some(0.0)
            })
        }),
        "{seen:?}"
    );
    // Writing stdout waits, the status goes on (it is rewritten every 2 s:
    // 3 s blocked needs at least a rewrite after the stall began) and says so.
    assert!(
        wait_until(TIMEOUT, || {
            seen = document();
            seen.as_ref().is_some_and(|d| {
                d["numbers"]["stdout_blocked_seconds"].as_f64() >= Some(3.0)
                    && d["summary"]
                        .as_str()
                        .is_some_and(|s| s.contains("blocked on stdout"))
            })
        }),
        "{seen:?}"
    );
    let mut out = RecordStream::new(run.child.stdout.take().unwrap());
    for _ in 0..input.len() {
        assert!(out.next(TIMEOUT).is_some(), "every record comes");
    }
    assert!(
        wait_until(TIMEOUT, || {
            seen = numbers();
            seen.as_ref().is_some_and(|n| {
                n["pending_messages"] == 0
                    && n["behind_seconds"] == 0
                    && n["stdout_blocked_seconds"] == 0
                    && n["written_seq"] == 1000
                    && n["written_jetstream_seq"] == 1001
            })
        }),
        "{seen:?}"
    );
    // The metrics file is renamed into place right after the status file.
    let mut text = String::new();
    assert!(
        wait_until(TIMEOUT, || {
            text = fs::read_to_string(&metrics).unwrap();
            text.contains("syncpipe_relayd_pending_messages{durable=\"web1\",stream=\"lag\"} 0")
        }),
        "{text}"
    );
    assert!(text.contains("syncpipe_relayd_behind_seconds{"), "{text}");
    run.signal(Signal::SIGTERM);
    assert_eq!(
        run.wait_exit(),
        Some(0),
        "{}",
        fs::read_to_string(log.path()).unwrap()
    );
}
