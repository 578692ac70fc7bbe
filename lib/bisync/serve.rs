//! `bisync --serve PATH`: the far side of a remote replica. Reads requests
//! on stdin and answers on stdout (the protocol is in [`super::proto`]),
//! doing the work with a [`LocalReplica`], so a remote replica behaves
//! exactly like a local one. Log lines go to stderr, which ssh carries back.

use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::Path;

use anyhow::Context;

use super::local::LocalReplica;
use super::proto::{self, Counting, Request};
use super::replica::Replica;
use crate::exclude::Excludes;
use crate::exit::code_of;

/// Serves the replica at `root` until the client says bye or goes away.
pub fn serve(root: &Path) -> anyhow::Result<()> {
    let stdin = io::stdin().lock();
    let stdout = io::stdout().lock();
    serve_on(root, BufReader::with_capacity(256 * 1024, stdin), stdout)
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

pub fn serve_on(root: &Path, mut input: impl BufRead, out: impl Write) -> anyhow::Result<()> {
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
                let local = LocalReplica::new(&root.to_string_lossy(), root, excludes);
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
