//! The units under a real systemd: PID 1 of a throw-away container over the
//! host's root, with this build's binaries at /usr/local/bin (where the
//! units look) and units/ as written. One boot runs the whole life of a
//! sync: start, a change, a restart of every stage, the journal, stop, and
//! socket activation of `watchd@.socket`. Another boot runs what
//! `syncpipe import-lsyncd` wrote from an lsyncd configuration.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use syncpipe::wire::event::Record;
use syncpipe::wire::transport::Hello;

use crate::support::container::{Bind, Container};
use crate::support::{bin, tempdir, wait_until};

const NAME: &str = "web";
/// Where the test's folder is bound inside; not under /tmp, which the
/// units make private.
const WORK: &str = "/srv/syncpipe-test";
const UNITS: [&str; 3] = [
    "watchd@web.service",
    "batchd@web.service",
    "syncpipe@web.service",
];

/// Relative path -> content ("/" for a directory).
fn tree(root: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<Vec<u8>, Vec<u8>>) {
        for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let rel = path.strip_prefix(base).unwrap().as_os_str().as_bytes();
            if path.is_dir() {
                out.insert(rel.to_vec(), b"/".to_vec());
                walk(base, &path, out);
            } else if let Ok(content) = fs::read(&path) {
                out.insert(rel.to_vec(), content);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

struct Sync {
    c: Container,
    src: PathBuf,
    dst: PathBuf,
}

impl Sync {
    fn converged(&self, what: &str) {
        if !wait_until(Duration::from_secs(60), || {
            tree(&self.src) == tree(&self.dst)
        }) {
            let missing: Vec<String> = tree(&self.src)
                .into_iter()
                .filter(|(path, content)| tree(&self.dst).get(path) != Some(content))
                .map(|(path, _)| String::from_utf8_lossy(&path).into_owned())
                .collect();
            panic!(
                "{what}: the target never matched the source; differing: {missing:?}\n{}",
                self.c.journal(&["-n", "60"])
            );
        }
    }

    fn state(&self, unit: &str) -> String {
        self.c.property(unit, "ActiveState")
    }

    /// `unit`'s state once the jobs that a start, stop or restart of another
    /// set off (`Requires=`, `PartOf=`) have ended: systemctl waits only for
    /// its own job.
    fn settled(&self, unit: &str) -> String {
        let mut state = String::new();
        wait_until(Duration::from_secs(60), || {
            state = self.state(unit);
            !state.ends_with("ing")
        });
        state
    }

    fn all_active(&self, when: &str) {
        for unit in UNITS {
            assert_eq!(self.settled(unit), "active", "{unit} {when}");
        }
    }

    /// Waits until `unit`'s journal, read with `args`, contains `needle`.
    fn journal_has(&self, unit: &str, args: &[&str], needle: &str) -> bool {
        let mut all = vec!["-u", unit];
        all.extend_from_slice(args);
        wait_until(Duration::from_secs(20), || {
            self.c.journal(&all).contains(needle)
        })
    }
}

fn boot(work: &Path, test: &str) -> Option<Container> {
    let bins = bin("watchd").parent().unwrap().to_path_buf();
    let binds = [
        Bind {
            host: &bins,
            inside: "/usr/local/bin",
            writable: false,
        },
        Bind {
            host: work,
            inside: WORK,
            writable: true,
        },
    ];
    match Container::boot(&binds) {
        Ok(c) => Some(c),
        Err(why) => {
            // Straight to stderr: the test harness does not capture this,
            // so a skip is seen in the output.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED systemd::{test}: the container cannot start here: {why}"
            );
            None
        }
    }
}

/// Writes units/ into the container's /etc/systemd/system, unchanged.
fn install_units(c: &Container) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("units");
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if name.contains("@.") {
            c.write(
                &format!("/etc/systemd/system/{name}"),
                &fs::read(&path).unwrap(),
            );
        }
    }
    c.ok(&["daemon-reload"]);
}

#[test]
fn syncpipe_under_a_real_systemd() {
    let work = tempdir();
    let src = work.path().join("source tree");
    let dst = work.path().join("target");
    fs::create_dir_all(&dst).unwrap();
    // Enough at start that the start-up sync takes a moment.
    for d in 0..20 {
        let dir = src.join(format!("dir {d}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..20 {
            fs::write(dir.join(format!("f{f}")), format!("{d}/{f}")).unwrap();
        }
    }
    let Some(c) = boot(work.path(), "syncpipe_under_a_real_systemd") else {
        return;
    };
    install_units(&c);
    c.write(
        &format!("/etc/syncpipe/{NAME}.conf"),
        format!("SOURCE={WORK}/source tree\nTARGETS={WORK}/target\nDELAY=100ms\n").as_bytes(),
    );
    let s = Sync { c, src, dst };
    let c = &s.c;

    // What a user types: start returns once pushd said READY=1, which it
    // says only after the start-up sync.
    c.ok(&["enable", "--now", "syncpipe@web"]);
    assert!(
        tree(&s.src) == tree(&s.dst),
        "`systemctl start` returned before the start-up sync was done"
    );
    s.all_active("after systemctl start");
    let target_status = format!("{WORK}/target: in sync");
    let status = s.c.property("syncpipe@web", "StatusText");
    assert_eq!(status, target_status, "pushd's STATUS=");
    assert!(
        s.c.property("watchd@web", "StatusText")
            .starts_with(&format!("watching {WORK}/source tree")),
        "watchd's STATUS="
    );
    let shown = c.systemctl(&["status", "syncpipe@web"]);
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.contains("Active: active (running)")
            && shown.contains(&format!("Status: \"{status}\"")),
        "systemctl status:\n{shown}"
    );

    fs::write(s.src.join("dir 3/f1"), b"changed").unwrap();
    fs::write(s.src.join("new file"), b"new").unwrap();
    s.converged("a change in the source");

    // Each stage restarted, with changes just before and just after. A
    // restart is of that stage alone (Wants=, StopPropagatedFrom=): the
    // others keep running, reconnect and resume.
    for (i, stage) in ["watchd", "batchd", "syncpipe"].into_iter().enumerate() {
        let unit = format!("{stage}@web.service");
        let pid = c.property(&unit, "MainPID");
        let others: Vec<(String, String)> = UNITS
            .iter()
            .filter(|u| **u != unit)
            .map(|u| (u.to_string(), c.property(u, "MainPID")))
            .collect();
        fs::write(s.src.join(format!("before {stage}")), stage).unwrap();
        fs::remove_file(s.src.join(format!("dir 4/f{i}"))).unwrap();
        c.ok(&["restart", &unit]);
        assert_ne!(c.property(&unit, "MainPID"), pid, "{unit} restarted");
        for (other, other_pid) in &others {
            assert_eq!(
                &c.property(other, "MainPID"),
                other_pid,
                "{other} kept running while {unit} restarted"
            );
        }
        s.all_active(&format!("after restarting {unit}"));
        fs::write(s.src.join(format!("after {stage}")), stage).unwrap();
        s.converged(&format!("changes around a restart of {unit}"));
    }

    // A stage that dies is restarted by systemd (Restart=on-failure);
    // nothing is lost.
    let batchd_pid = c.property("batchd@web", "MainPID");
    c.ok(&["kill", "--signal=SIGKILL", "batchd@web"]);
    fs::write(s.src.join("while batchd was dead"), b"k").unwrap();
    assert!(
        wait_until(Duration::from_secs(30), || {
            let pid = c.property("batchd@web", "MainPID");
            pid != batchd_pid && pid != "0" && s.state("batchd@web") == "active"
        }),
        "systemd restarts batchd after it was killed:\n{}",
        c.journal(&["-u", "batchd@web"])
    );
    s.all_active("after batchd was killed");
    s.converged("a change while batchd was dead");

    // The journal gets each line at its priority: a reload is a notice
    // (not in -p warning), losing watchd is a warning in batchd's log.
    c.ok(&["reload", "watchd@web"]);
    let sighup = "SIGHUP: rebuilding watches";
    assert!(
        s.journal_has("watchd@web", &["-p", "notice"], sighup),
        "watchd's notice in the journal:\n{}",
        c.journal(&["-u", "watchd@web"])
    );
    assert!(
        !c.journal(&["-u", "watchd@web", "-p", "warning"])
            .contains(sighup),
        "a notice logged as a warning"
    );
    c.ok(&["kill", "watchd@web"]);
    assert!(
        wait_until(Duration::from_secs(20), || s.state("watchd@web")
            == "inactive"),
        "watchd stops on SIGTERM"
    );
    assert_eq!(s.state("batchd@web"), "active", "batchd waits for watchd");
    assert!(
        s.journal_has("batchd@web", &["-p", "warning"], "lost the writer at"),
        "batchd's warning in the journal:\n{}",
        c.journal(&["-u", "batchd@web"])
    );
    let log = c.journal(&["-u", "watchd@web", "-u", "batchd@web"]);
    assert!(
        !log.lines().any(|l| l.starts_with('<')),
        "a priority prefix shown as text:\n{log}"
    );
    fs::write(s.src.join("while watchd was away"), b"x").unwrap();
    // This test restarts far faster than a person would: every restart
    // above started watchd again, past systemd's default start limit (5 in
    // 10 s). Clear the count, as a person would after a crash loop.
    c.ok(&["reset-failed", "watchd@web", "batchd@web", "syncpipe@web"]);
    c.ok(&["start", "watchd@web"]);
    s.converged("a change while watchd was away");

    // Stopped cleanly: every stage inactive, none failed.
    c.ok(&["stop", "syncpipe@web"]);
    for unit in UNITS {
        assert_eq!(s.settled(unit), "inactive", "{unit} after stop");
        assert_eq!(c.property(unit, "Result"), "success", "{unit} after stop");
    }

    // Socket activation: systemd holds the socket, the first reader starts
    // watchd, which serves it on the socket systemd passed.
    c.ok(&["reset-failed", "watchd@web", "batchd@web", "syncpipe@web"]);
    c.ok(&["enable", "--now", "watchd@web.socket"]);
    assert_eq!(s.state("watchd@web.service"), "inactive");
    let sock = c.host_path(&format!("/run/syncpipe/{NAME}/watchd.sock"));
    let mut conn = UnixStream::connect(&sock)
        .unwrap_or_else(|e| panic!("connecting to {}: {e}", sock.display()));
    conn.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut hello = Vec::new();
    Hello {
        stream: None,
        seq: 0,
    }
    .write_line(&mut hello)
    .unwrap();
    conn.write_all(&hello).unwrap();
    let mut line = Vec::new();
    BufReader::new(&conn)
        .read_until(b'\n', &mut line)
        .expect("watchd's header on the activated socket");
    match Record::parse(line.trim_ascii_end()) {
        Ok(Record::Header(h)) => {
            assert_eq!(
                PathBuf::from(h.root),
                PathBuf::from(format!("{WORK}/source tree"))
            )
        }
        other => panic!("not a header: {other:?}"),
    }
    assert_eq!(
        s.settled("watchd@web.service"),
        "active",
        "started by the socket"
    );
    drop(conn);
    // The whole sync over the socket systemd holds.
    c.ok(&["start", "syncpipe@web"]);
    fs::write(s.src.join("over the activated socket"), b"y").unwrap();
    s.converged("a change over the activated socket");
    c.ok(&["stop", "syncpipe@web", "watchd@web.socket"]);
    for unit in UNITS {
        assert_eq!(s.settled(unit), "inactive", "{unit} at the end");
        assert_eq!(c.property(unit, "Result"), "success", "{unit} at the end");
    }
}

/// The source's tree as the target should hold it: without what the
/// imported `exclude={'*.tmp', 'cache/'}` leaves out.
fn without_excluded(tree: BTreeMap<Vec<u8>, Vec<u8>>) -> BTreeMap<Vec<u8>, Vec<u8>> {
    tree.into_iter()
        .filter(|(path, _)| {
            !path.ends_with(b".tmp") && !path.split(|b| *b == b'/').any(|part| part == b"cache")
        })
        .collect()
}

#[test]
fn an_imported_lsyncd_config_runs_under_systemd() {
    let work = tempdir();
    let src = work.path().join("source");
    let dst = work.path().join("target");
    fs::create_dir_all(src.join("docs")).unwrap();
    fs::create_dir_all(src.join("cache")).unwrap();
    fs::create_dir_all(&dst).unwrap();
    for f in 0..10 {
        fs::write(src.join(format!("docs/f{f}")), format!("doc {f}")).unwrap();
    }
    fs::write(src.join("old.tmp"), b"excluded from the start").unwrap();
    fs::write(src.join("cache/blob"), b"excluded from the start").unwrap();
    // As an lsyncd user has it, with paths as the container sees them.
    let lua = work.path().join("lsyncd.conf.lua");
    fs::write(
        &lua,
        format!(
            "sync {{\n    default.rsync,\n    source = \"{WORK}/source\",\n    \
             target = \"{WORK}/target\",\n    delay = 1,\n    \
             exclude = {{ '*.tmp', 'cache/' }},\n}}\n"
        ),
    )
    .unwrap();
    let Some(c) = boot(work.path(), "an_imported_lsyncd_config_runs_under_systemd") else {
        return;
    };
    install_units(&c);

    // What a user types inside: import into /etc/syncpipe, then the command
    // the written config names.
    let out = c.run(&[
        "/usr/local/bin/syncpipe",
        "import-lsyncd",
        "--dir",
        "/etc/syncpipe",
        &format!("{WORK}/lsyncd.conf.lua"),
    ]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "everything carried over:\n{said}"
    );
    let confs: Vec<PathBuf> = fs::read_dir(c.host_path("/etc/syncpipe"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(confs.len(), 1, "one config per sync{{}}: {confs:?}\n{said}");
    let conf = fs::read_to_string(&confs[0]).unwrap();
    let start = conf
        .lines()
        .find_map(|l| l.split("`systemctl ").nth(1)?.strip_suffix("`."))
        .unwrap_or_else(|| panic!("no start command in the config:\n{conf}"));
    let args: Vec<&str> = start.split(' ').collect();
    assert_eq!(args[..2], ["enable", "--now"], "{conf}");
    let unit = args[2];
    let name = unit.strip_prefix("syncpipe@").unwrap();
    c.ok(&args);
    for stage in ["watchd", "batchd", "syncpipe"] {
        let unit = format!("{stage}@{name}.service");
        assert!(
            wait_until(Duration::from_secs(60), || c.property(&unit, "ActiveState")
                == "active"),
            "{unit} runs:\n{}",
            c.journal(&["-u", &unit])
        );
    }

    // Every kind of change, and new files the excludes leave out.
    fs::write(src.join("new file"), b"created").unwrap();
    fs::write(src.join("docs/f1"), b"modified").unwrap();
    fs::remove_file(src.join("docs/f2")).unwrap();
    fs::rename(src.join("docs/f3"), src.join("docs/f3 renamed")).unwrap();
    fs::rename(src.join("docs"), src.join("papers")).unwrap();
    fs::write(src.join("papers/scratch.tmp"), b"excluded").unwrap();
    fs::create_dir_all(src.join("papers/cache")).unwrap();
    fs::write(src.join("papers/cache/blob"), b"excluded").unwrap();
    fs::write(src.join("last"), b"after the excluded ones").unwrap();

    let want = || without_excluded(tree(&src));
    if !wait_until(Duration::from_secs(90), || tree(&dst) == want()) {
        panic!(
            "the target never matched the source minus the excludes:\n\
             want {:?}\ngot {:?}\n{}",
            want()
                .keys()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .collect::<Vec<_>>(),
            tree(&dst)
                .keys()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .collect::<Vec<_>>(),
            c.journal(&["-n", "60"])
        );
    }
    let got = tree(&dst);
    assert!(got.contains_key(b"papers/f3 renamed".as_slice()), "rename");
    assert!(
        !got.contains_key(b"docs".as_slice()),
        "the old name is gone"
    );
    for excluded in ["old.tmp", "cache", "papers/scratch.tmp", "papers/cache"] {
        assert!(
            !dst.join(excluded).exists(),
            "{excluded} is excluded but reached the target"
        );
    }
    c.ok(&["stop", unit]);
    assert_eq!(
        c.property(unit, "Result"),
        "success",
        "{unit} stopped cleanly"
    );
}

/// `syncpipe status` on a host with two syncs under systemd: `web` works,
/// `dead` pushes to a target whose parent directory is missing
/// (`--insist`: pushd starts degraded and keeps retrying). The units keep
/// the status files in /run/syncpipe/NAME/; the command finds both syncs,
/// prints one line per target with its state and error, and exits 17;
/// for `web` alone, 0.
#[test]
fn syncpipe_status_under_a_real_systemd() {
    let work = tempdir();
    for name in ["web", "dead"] {
        let src = work.path().join(format!("{name} source"));
        fs::create_dir_all(&src).unwrap();
        fs::write(src.join("file"), name).unwrap();
    }
    // A target with a space, quoted as the config example says.
    fs::create_dir_all(work.path().join("web target")).unwrap();
    let Some(c) = boot(work.path(), "syncpipe_status_under_a_real_systemd") else {
        return;
    };
    install_units(&c);
    let dead = format!("{WORK}/missing-parent/dead-target");
    c.write(
        "/etc/syncpipe/web.conf",
        format!("SOURCE={WORK}/web source\nTARGETS=\\\"{WORK}/web target\\\"\nDELAY=100ms\n")
            .as_bytes(),
    );
    c.write(
        "/etc/syncpipe/dead.conf",
        format!(
            "SOURCE={WORK}/dead source\nTARGETS={dead}\nDELAY=100ms\n\
             PUSHD_OPTS=--insist --retry-min=200ms --retry-max=1s\n"
        )
        .as_bytes(),
    );
    c.ok(&["start", "syncpipe@web", "syncpipe@dead"]);
    // Started degraded: READY=1 came, and STATUS= says what is wrong.
    let status = c.property("syncpipe@dead", "StatusText");
    assert!(
        status.starts_with(&format!("{dead}: FAILING since ")) && status.contains("never synced"),
        "{status}"
    );
    assert_eq!(
        c.property("syncpipe@web", "StatusText"),
        format!("{WORK}/web target: in sync")
    );

    let status = |args: &[&str]| {
        let mut all = vec!["/usr/local/bin/syncpipe", "status"];
        all.extend_from_slice(args);
        let out = c.run(&all);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let mut seen = (None, String::new(), String::new());
    let found = wait_until(Duration::from_secs(30), || {
        seen = status(&[]);
        // The file is rewritten within a second of a change.
        seen.1.lines().count() == 3
            && seen.1.contains("  failing  ")
            && seen.1.contains("  in-sync  ")
    });
    let (code, out, err) = seen;
    assert!(found, "two targets listed:\n{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("SYNC"), "{out}");
    let cols = |line: &str| {
        line.split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(String::from)
            .collect::<Vec<_>>()
    };
    let dead_line = cols(lines[1]);
    assert_eq!(dead_line[..3], ["dead", dead.as_str(), "failing"], "{out}");
    assert!(
        dead_line[4].starts_with("since ") && dead_line[4].contains("rsync"),
        "the error and since when:\n{out}"
    );
    let web_line = cols(lines[2]);
    assert_eq!(
        web_line[..4],
        [
            "web",
            &format!("{WORK}/web target"),
            "in-sync",
            "0 events, 0s"
        ],
        "{out}"
    );
    assert_eq!(
        code,
        Some(17),
        "a failing target fails the check:\n{out}{err}"
    );
    let (code, out, err) = status(&["web"]);
    assert_eq!(code, Some(0), "web alone is healthy:\n{out}{err}");
    assert_eq!(out.lines().count(), 2, "{out}");
    let (code, out, _) = status(&["--json"]);
    assert_eq!(code, Some(17));
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json[0]["name"], "dead", "{json:#}");
    assert_eq!(
        json[0]["status"]["targets"][0]["state"], "failing",
        "{json:#}"
    );
    // The other stages keep their files there too.
    for file in ["watchd.json", "batchd.json", "pushd.prom", "watchd.prom"] {
        assert!(
            c.host_path(&format!("/run/syncpipe/web/{file}")).exists(),
            "{file}"
        );
    }
    c.ok(&["stop", "syncpipe@web", "syncpipe@dead"]);
    if cfg!(feature = "relay") {
        a_pull_replica_converges(&c, work.path());
    }
}

/// `syncpipe-replica@rep` as a user enables it (BROKER=, UPSTREAM=,
/// TARGET=): a broker and the source's `watchd | relayd publish` run as
/// transient units in the same container (its network is private, so port
/// 4222 is free); the replica pulls from the source's directory. Started,
/// it has done its start-up pull (READY=1 comes after it); a change on the
/// source arrives through the broker; relayd's and pushd's status files are
/// in /run/syncpipe/rep/.
fn a_pull_replica_converges(c: &Container, work: &Path) {
    let (src, dst) = (work.join("replica source"), work.join("replica target"));
    fs::create_dir_all(src.join("sub dir")).unwrap();
    fs::write(src.join("sub dir/first"), b"there before").unwrap();
    fs::create_dir_all(&dst).unwrap();
    let url = "nats://127.0.0.1:4222/www";
    let run = |args: &[&str]| {
        let mut all = vec!["systemd-run", "--quiet", "--collect"];
        all.extend_from_slice(args);
        let out = c.run(&all);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "--unit=nats",
        "--property=StateDirectory=nats",
        "/usr/sbin/nats-server",
        "-a",
        "127.0.0.1",
        "-p",
        "4222",
        "-js",
        "-sd",
        "/var/lib/nats",
    ]);
    let source = format!("{WORK}/replica source");
    run(&[
        "--unit=publisher",
        // Until the broker listens.
        "--property=Restart=on-failure",
        "--property=RestartSec=200ms",
        "/bin/sh",
        "-c",
        "/usr/local/bin/watchd \"$0\" | /usr/local/bin/relayd publish \"$1\"",
        &source,
        url,
    ]);
    let made = wait_until(Duration::from_secs(30), || {
        c.host_path("/var/lib/nats/jetstream/$G/streams/www")
            .exists()
    });
    assert!(
        made,
        "the publisher made no stream\n{}",
        c.journal(&["-n", "40"])
    );
    c.write(
        "/etc/syncpipe/rep.conf",
        format!("BROKER={url}\nUPSTREAM={source}\nTARGET={WORK}/replica target\nDELAY=100ms\n")
            .as_bytes(),
    );
    c.ok(&["enable", "--now", "syncpipe-replica@rep"]);
    assert_eq!(
        tree(&src),
        tree(&dst),
        "`systemctl start` returned before the start-up pull\n{}",
        c.journal(&["-n", "40"])
    );
    fs::write(src.join("sub dir/first"), b"changed").unwrap();
    fs::write(src.join("new"), b"new").unwrap();
    let same = wait_until(Duration::from_secs(60), || tree(&src) == tree(&dst));
    assert!(
        same,
        "the change never arrived\n{}",
        c.journal(&["-n", "60"])
    );
    for file in ["relayd.json", "relayd.prom", "pushd.json", "pushd.prom"] {
        assert!(
            c.host_path(&format!("/run/syncpipe/rep/{file}")).exists(),
            "{file}"
        );
    }
    // The operator view: the feed (relayd's lag) above the target (pushd's).
    let mut shown = (None, String::new());
    let listed = wait_until(Duration::from_secs(30), || {
        let out = c.run(&["/usr/local/bin/syncpipe", "status", "rep"]);
        shown = (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        );
        let rows: Vec<Vec<&str>> = shown
            .1
            .lines()
            .map(|l| {
                l.split("  ")
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .collect()
            })
            .collect();
        rows.len() == 3
            && rows[1].len() == 5
            && rows[1][..4] == ["rep", "broker www as rep", "following", "0 messages, 0s"]
            && rows[1][4].starts_with("wrote seq ")
            && rows[2][2] == "in-sync"
    });
    assert!(
        listed && shown.0 == Some(0),
        "syncpipe status rep:\n{shown:?}"
    );
    c.ok(&["stop", "syncpipe-replica@rep", "publisher", "nats"]);
}
