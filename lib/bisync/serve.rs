//! `bisync --serve PATH`: the far side of a remote replica. Reads requests
//! on stdin and answers on stdout (the protocol is in [`super::proto`]),
//! doing the work with a [`LocalReplica`], so a remote replica behaves
//! exactly like a local one. Log lines go to stderr, which ssh carries back.

use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::Path;

use anyhow::Context;

use super::entry::Kind;
use super::local::{differs, LocalReplica};
use super::proto::{self, Counting, Request};
use super::replica::Replica;
use crate::cli::exit::code_of;
use crate::exclude::Excludes;

/// Serves the replica at `root` until the client says bye or goes away.
/// Without `owners` (`--serve PATH --owners`), the client's owners are
/// never applied and set-id bits are stripped from what it writes: a
/// restricted key used by a root client must not plant setuid-root files.
pub fn serve(root: &Path, owners: bool) -> anyhow::Result<()> {
    let stdin = io::stdin().lock();
    let stdout = io::stdout().lock();
    serve_on(
        root,
        owners,
        BufReader::with_capacity(256 * 1024, stdin),
        stdout,
    )
}

fn error_reply(out: &mut impl Write, err: &anyhow::Error) -> io::Result<()> {
    let code = code_of(err) as u8;
    proto::write_line(
        out,
        &proto::ErrorReply {
            error: format!("{err:#}"),
            code: (code != 1).then_some(code),
        },
    )
}

pub fn serve_on(
    root: &Path,
    owners: bool,
    mut input: impl BufRead,
    out: impl Write,
) -> anyhow::Result<()> {
    let mut out = BufWriter::with_capacity(256 * 1024, out);
    let mut replica: Option<LocalReplica> = None;
    let mut line = Vec::new();
    loop {
        if proto::read_line(&mut input, &mut line)
            .context("reading a request")?
            .is_none()
        {
            return Ok(());
        }
        let request: Request = proto::parse(&line).context("reading a request")?;
        let rep = match (&request, replica.as_mut()) {
            (Request::Hello { v, excludes }, _) => {
                anyhow::ensure!(
                    *v == proto::VERSION,
                    "the client speaks protocol {v}, this bisync {}",
                    proto::VERSION
                );
                let excludes = Excludes::new(excludes, &[] as &[&Path])?;
                let mut local = LocalReplica::new(&root.to_string_lossy(), root, excludes);
                if !owners {
                    local.distrust_owners();
                }
                proto::write_line(
                    &mut out,
                    &proto::HelloReply {
                        v: proto::VERSION,
                        host: local.host().to_string(),
                        root_user: local.is_root(),
                        producer: concat!("bisync/", env!("CARGO_PKG_VERSION")).into(),
                    },
                )?;
                out.flush()?;
                replica = Some(local);
                continue;
            }
            (Request::Bye, _) => return Ok(()),
            (_, None) => anyhow::bail!("the client sent a request before hello"),
            (_, Some(rep)) => rep,
        };
        match request {
            Request::Hello { .. } | Request::Bye => unreachable!("answered above"),
            Request::Owners { on } => {
                rep.set_owners(on)?;
                proto::write_line(&mut out, &proto::Intact { intact: true })?;
            }
            Request::Backup { backup } => match rep.set_backup(backup) {
                Ok(()) => proto::write_line(&mut out, &proto::Intact { intact: true })?,
                Err(e) => error_reply(&mut out, &e)?,
            },
            Request::Scan { .. } | Request::ScanPaths { .. } => match match &request {
                Request::ScanPaths { paths, checksum } => rep.scan_paths(paths, *checksum),
                Request::Scan { checksum } => rep.scan(*checksum),
                _ => unreachable!("matched above"),
            } {
                Ok(scan) => {
                    let n = scan.len() as u64;
                    for (p, e) in scan {
                        proto::write_line(&mut out, &proto::ScanItem { p, e })?;
                    }
                    proto::write_line(&mut out, &proto::ScanEnd { end: n })?;
                }
                Err(e) => error_reply(&mut out, &e)?,
            },
            Request::Hash { paths } => match rep.hash(&paths) {
                Ok(hashes) => proto::write_line(&mut out, &proto::HashReply { hashes })?,
                Err(e) => error_reply(&mut out, &e)?,
            },
            Request::Change { change } => match rep.change(&change) {
                Ok(applied) => proto::write_line(&mut out, &proto::ChangeReply { applied })?,
                Err(e) => error_reply(&mut out, &e)?,
            },
            Request::Get { path, expect } => {
                // The size is the peer's word: announce (and pad to) it only
                // for a file that is there as expected, or a made-up size
                // would have this side write zeros without end. The client
                // reads a shorter header as "not intact".
                let there = matches!(rep.stat(&path), Ok(Some(cur))
                    if cur.kind == Kind::File && differs(Some(&cur), Some(&expect)).is_none());
                if !there && expect.size > 0 {
                    proto::write_line(&mut out, &proto::DataHeader { size: 0 })?;
                    proto::write_line(&mut out, &proto::Intact { intact: false })?;
                    out.flush()?;
                    continue;
                }
                proto::write_line(&mut out, &proto::DataHeader { size: expect.size })?;
                let mut counting = Counting {
                    inner: &mut out,
                    count: 0,
                };
                let intact = match rep.read(&path, &expect, &mut counting) {
                    Ok(intact) => intact,
                    Err(e) => {
                        crate::log_warn!("reading {path:?}: {e:#}");
                        false
                    }
                };
                let missing = expect.size.saturating_sub(counting.count);
                proto::pad(&mut out, missing)?;
                proto::write_line(&mut out, &proto::Intact { intact })?;
            }
            Request::Put { path, src, expect } => {
                let mut consumed = false;
                let result = rep.write(&path, &src, expect.as_ref(), &mut |sink| {
                    consumed = true;
                    let copied = proto::copy_exact(&mut input, sink, src.size)?;
                    let intact = read_intact(&mut input, &mut Vec::new())?;
                    copied?;
                    Ok(intact)
                });
                if !consumed {
                    // Refused before reading the data: skip over it.
                    proto::copy_exact(&mut input, &mut io::sink(), src.size)??;
                    read_intact(&mut input, &mut line)?;
                }
                match result {
                    Ok(applied) => proto::write_line(&mut out, &proto::ChangeReply { applied })?,
                    Err(e) => error_reply(&mut out, &e)?,
                }
            }
        }
        out.flush()?;
    }
}

fn read_intact(input: &mut impl BufRead, line: &mut Vec<u8>) -> io::Result<bool> {
    match proto::read_line(input, line)? {
        Some(()) => Ok(proto::parse::<proto::Intact>(line)?.intact),
        None => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the client went away in the middle of a file",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bisync::entry::{Entry, Kind};
    use crate::bisync::replica::Change;
    use crate::wire::path::WirePath;
    use std::fs;
    use std::os::unix::fs::MetadataExt;
    use std::time::Duration;

    fn line(out: &mut Vec<u8>, r: &impl serde::Serialize) {
        serde_json::to_writer(&mut *out, r).unwrap();
        out.push(b'\n');
    }

    fn hello() -> Request {
        Request::Hello {
            v: proto::VERSION,
            excludes: vec![],
        }
    }

    /// Runs the server on `input` in a thread; `None` when it hangs.
    fn serve_bytes(root: &Path, owners: bool, input: Vec<u8>) -> Option<(bool, String)> {
        let (tx, rx) = std::sync::mpsc::channel();
        let root = root.to_path_buf();
        std::thread::spawn(move || {
            let mut out = Vec::new();
            let r = serve_on(&root, owners, &input[..], &mut out);
            let _ = tx.send((r.is_ok(), String::from_utf8_lossy(&out).into_owned()));
        });
        rx.recv_timeout(Duration::from_secs(30)).ok()
    }

    fn file(size: u64, mode: u32, uid: u32) -> Entry {
        Entry {
            kind: Kind::File,
            size,
            mtime: 1_000_000_000_000_000_000,
            mode,
            uid,
            gid: uid,
            ..Entry::dir(0)
        }
    }

    #[test]
    fn a_fifo_is_refused_never_waited_on() {
        let dir = tempfile::tempdir().unwrap();
        nix::unistd::mkfifo(
            &dir.path().join("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        fs::write(dir.path().join("file"), b"abc").unwrap();
        let mut input = Vec::new();
        line(&mut input, &hello());
        line(
            &mut input,
            &Request::Hash {
                paths: vec![WirePath::from("fifo"), WirePath::from("file")],
            },
        );
        line(
            &mut input,
            &Request::Get {
                path: WirePath::from("fifo"),
                expect: file(3, 0o644, 0),
            },
        );
        line(&mut input, &Request::Bye);
        let (ok, out) = serve_bytes(dir.path(), false, input).expect("--serve hung on a FIFO");
        assert!(ok, "{out}");
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[1].starts_with(r#"{"hashes":[null,""#), "{out}");
        assert!(out.ends_with("{\"intact\":false}\n"), "{out}");
    }

    /// Puts `name` with mode 04755 and owner 1234 after asking for owners.
    fn put_setuid(root: &Path, owners: bool) {
        let mut input = Vec::new();
        line(&mut input, &hello());
        line(&mut input, &Request::Owners { on: true });
        line(
            &mut input,
            &Request::Put {
                path: WirePath::from("suid"),
                src: file(2, 0o4755, 1234),
                expect: None,
            },
        );
        input.extend_from_slice(b"#!");
        line(&mut input, &proto::Intact { intact: true });
        line(
            &mut input,
            &Request::Change {
                change: Change::Mkdir {
                    path: WirePath::from("sgid"),
                    entry: Entry {
                        uid: 1234,
                        gid: 1234,
                        ..Entry::dir(0o2775)
                    },
                },
            },
        );
        line(&mut input, &Request::Bye);
        let (ok, out) = serve_bytes(root, owners, input).expect("served");
        assert!(ok && !out.contains("error"), "{out}");
    }

    #[test]
    fn set_id_bits_and_owners_only_with_owners_on_the_serving_side() {
        let root_user = nix::unistd::geteuid().is_root();
        let me = nix::unistd::geteuid().as_raw();
        let dir = tempfile::tempdir().unwrap();
        put_setuid(dir.path(), false);
        let (f, d) = (
            fs::metadata(dir.path().join("suid")).unwrap(),
            fs::metadata(dir.path().join("sgid")).unwrap(),
        );
        assert_eq!((f.mode() & 0o7777, f.uid()), (0o755, me));
        assert_eq!((d.mode() & 0o7777, d.uid()), (0o775, me));

        let dir = tempfile::tempdir().unwrap();
        put_setuid(dir.path(), true);
        let (f, d) = (
            fs::metadata(dir.path().join("suid")).unwrap(),
            fs::metadata(dir.path().join("sgid")).unwrap(),
        );
        let owner = if root_user { 1234 } else { me };
        assert_eq!((f.mode() & 0o7777, f.uid()), (0o4755, owner));
        assert_eq!((d.mode() & 0o7777, d.uid()), (0o2775, owner));
    }
}
