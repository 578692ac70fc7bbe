//! The event streams `bisync --watch` follows: one `watchd` per replica (on
//! this machine, or over ssh on the replica's host), each read on its own
//! thread and turned into [`Note`]s for the sync loop: paths that changed,
//! or "re-read everything". A watcher that stops is started again (with
//! `--wait`, so a root that is briefly gone is waited for), and its new
//! stream means a full scan.

use std::ffi::{OsStr, OsString};
use std::io::BufReader;
use std::os::unix::ffi::OsStrExt;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::config::Spec;
use super::entry::Side;
use super::scan::is_temp_name;
use crate::exclude::Excludes;
use crate::os::child;
use crate::ssh::{quote_for_shell, SshSettings};
use crate::wire::event::{EventKind, Record};
use crate::wire::path::WirePath;
use crate::wire::reader::{Item, RecordReader};

/// What a watcher (or the signal thread) tells the sync loop.
#[derive(Debug)]
pub enum Note {
    /// A stream started: its watches are in place. What was known before
    /// is void: a full scan is due.
    Started {
        side: Side,
        stream: String,
    },
    /// These paths (and what is below them) may have changed.
    Changed {
        paths: Vec<WirePath>,
    },
    /// Anything may have changed: a `rescan` event, an unknown kind or a
    /// malformed line.
    Rescan {
        why: String,
    },
    /// The watcher stopped (it is started again).
    Lost {
        side: Side,
        why: String,
    },
    /// The watcher could not start at all; it is not retried.
    Failed {
        why: String,
    },
    Signal(Signal),
}

/// How to start `watchd` for one replica.
#[derive(Clone, Debug)]
pub struct Launch {
    pub spec: Spec,
    /// The watchd program: run directly here, or as written in the remote
    /// shell command (it may be `sudo watchd`).
    pub program: OsString,
    pub excludes: Excludes,
    pub ssh: SshSettings,
}

impl Launch {
    fn command(&self, wait: bool) -> std::process::Command {
        let mut options: Vec<Vec<u8>> = Vec::new();
        if wait {
            options.push(b"--wait".to_vec());
        }
        for p in self.excludes.patterns() {
            let mut o = b"--exclude=".to_vec();
            o.extend_from_slice(p.as_bytes());
            options.push(o);
        }
        match &self.spec {
            Spec::Local(root) => {
                let mut cmd = child::command(&self.program);
                for o in &options {
                    cmd.arg(OsStr::from_bytes(o));
                }
                cmd.arg("--").arg(root);
                cmd
            }
            Spec::Ssh { user, host, path } => {
                let destination = match user {
                    Some(u) => format!("{u}@{host}"),
                    None => host.clone(),
                };
                let mut cmd = child::command("ssh");
                cmd.args(self.ssh.args())
                    .arg("-T")
                    .arg("--")
                    .arg(destination)
                    .arg(OsStr::from_bytes(&remote_command(
                        &self.program,
                        &options,
                        path,
                    )));
                cmd
            }
        }
    }
}

/// `PROGRAM 'OPTION'... -- 'PATH'` for the remote shell.
pub fn remote_command(program: &OsStr, options: &[Vec<u8>], path: &[u8]) -> Vec<u8> {
    let path: &[u8] = if path.is_empty() { b"." } else { path };
    let mut cmd = program.as_bytes().to_vec();
    for o in options {
        cmd.push(b' ');
        cmd.extend_from_slice(&quote_for_shell(o));
    }
    cmd.extend_from_slice(b" -- ");
    cmd.extend_from_slice(&quote_for_shell(path));
    cmd
}

/// A running watcher thread; stopping it ends its `watchd`.
pub struct Feed {
    over_ssh: bool,
    stop: Arc<AtomicBool>,
    child: Arc<Mutex<Option<u32>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Feed {
    pub fn start(side: Side, launch: Launch, notes: Sender<Note>) -> Feed {
        let stop = Arc::new(AtomicBool::new(false));
        let child = Arc::new(Mutex::new(None));
        let (stop2, child2) = (stop.clone(), child.clone());
        let over_ssh = matches!(launch.spec, Spec::Ssh { .. });
        let thread = std::thread::spawn(move || follow(side, &launch, &notes, &stop2, &child2));
        Feed {
            over_ssh,
            stop,
            child,
            thread: Some(thread),
        }
    }

    /// Ends the watcher and waits for its thread.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(pid) = *self.child.lock().unwrap_or_else(|e| e.into_inner()) {
            // Children inherit the signals bisync blocks (std keeps the
            // mask, observed here): watchd reads SIGTERM from its signalfd,
            // but ssh would never see it. ssh has nothing to clean up here,
            // and the far side's watchd ends when the connection does.
            let signal = if self.over_ssh {
                Signal::SIGKILL
            } else {
                Signal::SIGTERM
            };
            let _ = kill(Pid::from_raw(pid as i32), signal);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.stop();
    }
}

const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Runs `watchd` and forwards what it reports, restarting it until stopped.
fn follow(
    side: Side,
    launch: &Launch,
    notes: &Sender<Note>,
    stop: &AtomicBool,
    slot: &Mutex<Option<u32>>,
) {
    let mut ever_started = false;
    let mut backoff = BACKOFF_FIRST;
    while !stop.load(Ordering::SeqCst) {
        let mut cmd = launch.command(ever_started);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let spawned = {
            let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
            // Checked under the lock, so a stop cannot slip in between.
            if stop.load(Ordering::SeqCst) {
                return;
            }
            cmd.spawn().inspect(|child| *slot = Some(child.id()))
        };
        let mut child: Child = match spawned {
            Ok(c) => c,
            Err(e) => {
                let why = format!(
                    "starting {:?} for replica {side}: {e} (is watchd installed? see --watchd)",
                    cmd.get_program()
                );
                let _ = notes.send(Note::Failed { why });
                return;
            }
        };
        let stdout = child.stdout.take().expect("piped stdout");
        let got_header = read_stream(side, stdout, notes);
        let status = child.wait();
        *slot.lock().unwrap_or_else(|e| e.into_inner()) = None;
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let status = match status {
            Ok(s) => s.to_string(),
            Err(e) => e.to_string(),
        };
        if !ever_started && !got_header {
            let why = format!("the watcher of replica {side} ended before it started ({status})");
            let _ = notes.send(Note::Failed { why });
            return;
        }
        if got_header {
            backoff = BACKOFF_FIRST;
        }
        ever_started = true;
        let why = format!("the watcher of replica {side} stopped ({status}); restarting it");
        if notes.send(Note::Lost { side, why }).is_err() {
            return;
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Forwards one stream until it ends; returns whether it had a header.
fn read_stream(side: Side, input: impl std::io::Read, notes: &Sender<Note>) -> bool {
    let mut reader = RecordReader::new(BufReader::with_capacity(64 * 1024, input));
    let mut got_header = false;
    loop {
        let note = match reader.next_item() {
            Ok(None) => return got_header,
            Err(e) => Note::Lost {
                side,
                why: format!("reading the watcher of replica {side}: {e}"),
            },
            Ok(Some(item)) => match note_of(side, item) {
                Some(note) => note,
                None => continue,
            },
        };
        if matches!(note, Note::Started { .. }) {
            got_header = true;
        }
        let lost = matches!(note, Note::Lost { .. });
        if notes.send(note).is_err() || lost {
            return got_header;
        }
    }
}

/// What one stream item means to the sync loop; `None`: nothing.
pub fn note_of(side: Side, item: Item) -> Option<Note> {
    match item {
        Item::Record(Record::Header(h)) => Some(Note::Started {
            side,
            stream: h.stream,
        }),
        Item::Record(Record::Event(ev)) => {
            let mut paths = Vec::with_capacity(2);
            match ev.kind {
                EventKind::Rescan | EventKind::Other(_) => {
                    return Some(Note::Rescan {
                        why: format!(
                            "replica {side}: {} of {:?}",
                            ev.kind.as_str(),
                            ev.path.to_string()
                        ),
                    })
                }
                EventKind::Move => paths.extend(ev.from),
                EventKind::Create | EventKind::Modify | EventKind::Delete | EventKind::Attrib => {}
            }
            paths.push(ev.path);
            // bisync's own temporary files never matter; the rename that
            // puts one in place names the real path.
            paths.retain(|p| !is_temp_name(last_name(p)));
            (!paths.is_empty()).then_some(Note::Changed { paths })
        }
        Item::Malformed { line_no, error } => Some(Note::Rescan {
            why: format!("replica {side}: the watcher's line {line_no} is malformed: {error}"),
        }),
        Item::Gap { reason } => Some(Note::Rescan {
            why: format!("replica {side}: {reason}"),
        }),
        // `end` is followed by watchd's exit, seen as a lost stream.
        Item::Record(_) => None,
    }
}

fn last_name(p: &WirePath) -> &[u8] {
    let b = p.as_bytes();
    b.rsplit(|&c| c == b'/').next().unwrap_or(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(line: &str) -> Item {
        let mut r = RecordReader::new(line.as_bytes());
        r.next_item().unwrap().unwrap()
    }

    #[test]
    fn events_become_paths_and_anything_doubtful_a_rescan() {
        let moved = item(
            r#"{"type":"event","seq":3,"ts":"2026-01-01T00:00:00.000Z","kind":"move","path":"b","dir":false,"from":"a"}"#,
        );
        match note_of(Side::A, moved) {
            Some(Note::Changed { paths, .. }) => {
                assert_eq!(paths, [WirePath::from("a"), WirePath::from("b")])
            }
            other => panic!("{other:?}"),
        }
        let temp = item(
            r#"{"type":"event","seq":4,"ts":"2026-01-01T00:00:00.000Z","kind":"create","path":"d/.~bisync.1.2.tmp"}"#,
        );
        assert!(note_of(Side::B, temp).is_none());
        for line in [
            r#"{"type":"event","seq":5,"ts":"2026-01-01T00:00:00.000Z","kind":"rescan","path":"."}"#,
            r#"{"type":"event","seq":6,"ts":"2026-01-01T00:00:00.000Z","kind":"later","path":"x"}"#,
            r#"{"type":"event","seq":"7"}"#,
            "not json",
        ] {
            assert!(
                matches!(note_of(Side::A, item(line)), Some(Note::Rescan { .. })),
                "{line}"
            );
        }
    }

    #[test]
    fn the_remote_command_quotes_every_word() {
        assert_eq!(
            remote_command(
                OsStr::new("watchd"),
                &[b"--wait".to_vec(), b"--exclude=*.t'mp".to_vec()],
                b"/srv/a b"
            ),
            b"watchd '--wait' '--exclude=*.t'\\''mp' -- '/srv/a b'"
        );
    }
}
