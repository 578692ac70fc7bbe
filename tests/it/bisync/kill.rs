//! kill -9 of bisync at random moments of a large sync, then reruns: the
//! replicas converge, no version is lost, and the archive stays readable.

use std::collections::BTreeSet;
use std::fs;
use std::io::{BufRead, BufReader};
use std::process::Stdio;

use super::{write, Pair, CONFLICTS, SYNCED};
use crate::support::Running;
use crate::support::{tree, Node};

/// xorshift64*: reproducible "random" from a printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Every file content in a tree.
fn contents(p: &Pair) -> BTreeSet<Vec<u8>> {
    let mut out = BTreeSet::new();
    for side in [&p.a, &p.b] {
        for node in tree(side).into_values() {
            if let Node::File(data, _) = node {
                out.insert(data);
            }
        }
    }
    out
}

/// A file's content: unique per version, some of them large so a kill
/// lands in the middle of a copy.
fn version(tag: &str, i: u64, big: bool) -> Vec<u8> {
    let mut data = format!("{tag} {i}\n").into_bytes();
    if big {
        data.extend(std::iter::repeat_n(b'x', 2_000_000 + i as usize));
    }
    data
}

#[test]
fn killed_runs_converge_without_losing_anything() {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    let mut rng = Rng(seed);
    let p = Pair::new();
    for i in 0..400 {
        write(
            &p.a,
            format!("base/d{}/f{i}", i % 20).as_bytes(),
            &version("base", i, false),
        );
    }
    assert_eq!(p.sync(&[]).0, SYNCED, "seed {seed}");

    // Work for both sides: new trees, edits (some the same file on both
    // sides: conflicts), deletes and renames.
    for i in 0..1500 {
        let big = i % 300 == 0;
        write(
            &p.a,
            format!("new-a/d{}/f{i}", i % 30).as_bytes(),
            &version("new-a", i, big),
        );
    }
    for i in 0..500 {
        let big = i % 200 == 0;
        write(
            &p.b,
            format!("new-b/d{}/f{i}", i % 10).as_bytes(),
            &version("new-b", i, big),
        );
    }
    for i in 0..120 {
        let rel = format!("base/d{}/f{i}", i % 20);
        write(&p.a, rel.as_bytes(), &version("edit-a", i, false));
        if i % 3 == 0 {
            write(&p.b, rel.as_bytes(), &version("edit-b", i, false));
        }
    }
    for i in 120..180 {
        fs::remove_file(p.b.join(format!("base/d{}/f{i}", i % 20))).unwrap();
    }
    for i in 180..260 {
        let d = i % 20;
        fs::rename(
            p.a.join(format!("base/d{d}/f{i}")),
            p.a.join(format!("base/d{d}/renamed{i}")),
        )
        .unwrap();
    }
    // Every version that must survive: all content now on either side,
    // except the base versions edited on a (replaced on b by the edit) and
    // those deleted on b.
    let replaced: BTreeSet<Vec<u8>> = (0..180).map(|i| version("base", i, false)).collect();
    let must: BTreeSet<Vec<u8>> = contents(&p).difference(&replaced).cloned().collect();

    let mut kills = 0;
    for round in 0..6 {
        let stop_after = 1 + rng.below(if round % 2 == 0 { 40 } else { 1500 });
        let mut child = p.command(&["--json", "--max-delete", "100%"]);
        child
            .arg(&p.a)
            .arg(&p.b)
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut run = Running::spawn(&mut child);
        let stdout = run.child.stdout.take().unwrap();
        let mut done = 0;
        let mut killed = false;
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            if line.contains(r#""type":"bisync_action""#) && !line.contains(r#""planned""#) {
                done += 1;
                if done == stop_after {
                    run.signal(nix::sys::signal::Signal::SIGKILL);
                    killed = true;
                    break;
                }
            }
        }
        let code = run.wait_exit();
        if killed {
            assert_eq!(code, None, "seed {seed}: killed by the signal");
            kills += 1;
        }
    }
    assert!(kills > 0, "seed {seed}: no run was long enough to kill");

    // Reruns converge: a few runs at most, then "in sync".
    let mut codes = Vec::new();
    loop {
        let (code, _, err) = p.sync(&["--max-delete", "100%"]);
        codes.push(code);
        assert!(!err.contains("damaged"), "seed {seed}: {err}");
        assert!(
            [0, SYNCED, CONFLICTS].contains(&code),
            "seed {seed}: rerun failed with {code}: {err}"
        );
        if code == 0 {
            break;
        }
        assert!(codes.len() < 4, "seed {seed}: no convergence: {codes:?}");
    }
    let (ta, tb) = (tree(&p.a), tree(&p.b));
    assert_eq!(ta, tb, "seed {seed}: replicas differ");
    let after = contents(&p);
    let lost: Vec<String> = must
        .difference(&after)
        .map(|c| String::from_utf8_lossy(&c[..c.len().min(30)]).into_owned())
        .collect();
    assert!(lost.is_empty(), "seed {seed}: lost {lost:?}");
    for i in 120..180 {
        let gone = version("base", i, false);
        assert!(
            !after.contains(&gone),
            "seed {seed}: the delete of f{i} was undone"
        );
    }
    assert!(
        !ta.keys().any(|k| k.windows(9).any(|w| w == b".~bisync.")),
        "seed {seed}: temporary files left"
    );
}
