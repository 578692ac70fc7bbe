//! A replica on another host: `ssh HOST bisync --serve PATH`, spoken to in
//! the protocol of [`super::proto`]. File data travels inside that stream,
//! so a copy needs no second connection and no rsync on either side.

use std::ffi::OsStr;
use std::io::{self, BufReader, BufWriter, Write};
use std::os::unix::ffi::OsStrExt;
use std::process::{Child, ChildStdin, ChildStdout, Stdio};

use anyhow::Context;
use serde::de::DeserializeOwned;

use super::entry::{Entry, Hash};
use super::planner::Scan;
use super::proto::{self, Counting, Reply, Request};
use super::replica::{Applied, Change, Fill, Replica, Transport, Who};
use crate::cli::exit::{coded, Code};
use crate::exclude::Excludes;
use crate::os::child;
use crate::ssh::{quote_for_shell, SshSettings};
use crate::wire::path::WirePath;

pub struct RemoteReplica {
    who: Who,
    child: Child,
    to: BufWriter<ChildStdin>,
    from: BufReader<ChildStdout>,
    line: Vec<u8>,
}

/// The remote command line: `PROGRAM --serve 'PATH'`. PROGRAM is used as
/// written (it may be `sudo bisync`); the path is quoted for the remote shell.
pub fn remote_command(program: &OsStr, path: &[u8]) -> Vec<u8> {
    let path: &[u8] = if path.is_empty() { b"." } else { path };
    let mut cmd = program.as_bytes().to_vec();
    cmd.extend_from_slice(b" --serve ");
    cmd.extend_from_slice(&quote_for_shell(path));
    cmd
}

impl RemoteReplica {
    pub fn connect(
        name: &str,
        user: Option<&str>,
        host: &str,
        path: &[u8],
        ssh: &SshSettings,
        program: &OsStr,
        excludes: &Excludes,
    ) -> anyhow::Result<RemoteReplica> {
        let destination = match user {
            Some(u) => format!("{u}@{host}"),
            None => host.to_string(),
        };
        let mut cmd = child::command("ssh");
        cmd.args(ssh.args())
            .arg("-T")
            .arg("--")
            .arg(&destination)
            .arg(OsStr::from_bytes(&remote_command(program, path)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd
            .spawn()
            .context("starting ssh (is it installed and on PATH?)")?;
        let to = BufWriter::with_capacity(256 * 1024, child.stdin.take().expect("piped"));
        let from = BufReader::with_capacity(256 * 1024, child.stdout.take().expect("piped"));
        let mut replica = RemoteReplica {
            who: Who {
                name: name.to_string(),
                host: host.to_string(),
                root_user: false,
            },
            child,
            to,
            from,
            line: Vec::new(),
        };
        replica.send(&Request::Hello {
            v: proto::VERSION,
            excludes: excludes.patterns().to_vec(),
        })?;
        let hello: proto::HelloReply = replica.reply().map_err(|e| {
            e.context(format!(
                "starting `{}` on {destination} over ssh (is bisync installed there? \
                 see --remote-bisync)",
                String::from_utf8_lossy(&remote_command(program, path))
            ))
        })?;
        replica.who.host = hello.host;
        replica.who.root_user = hello.root_user;
        Ok(replica)
    }

    /// A broken link, with ssh's exit status when it has one.
    fn transport(&mut self, what: &str, err: io::Error) -> anyhow::Error {
        let status = match self.child.try_wait() {
            Ok(Some(status)) => format!(" (ssh exited: {status})"),
            _ => String::new(),
        };
        anyhow::Error::new(Transport(format!(
            "connection to {} lost while {what}: {err}{status}",
            self.who.name
        )))
    }

    fn send(&mut self, request: &Request) -> anyhow::Result<()> {
        let result = proto::write_line(&mut self.to, request).and_then(|_| self.to.flush());
        result.map_err(|e| self.transport("sending a request", e))
    }

    fn next_line(&mut self) -> anyhow::Result<()> {
        match proto::read_line(&mut self.from, &mut self.line) {
            Ok(Some(())) => Ok(()),
            Ok(None) => {
                let eof = io::Error::new(io::ErrorKind::UnexpectedEof, "end of stream");
                Err(self.transport("waiting for an answer", eof))
            }
            Err(e) => Err(self.transport("reading an answer", e)),
        }
    }

    fn reply<T: DeserializeOwned>(&mut self) -> anyhow::Result<T> {
        self.next_line()?;
        match proto::parse::<Reply<T>>(&self.line) {
            Ok(Reply::Ok(value)) => Ok(value),
            Ok(Reply::Error(e)) => Err(remote_error(e)),
            Err(e) => Err(self.transport("reading an answer", e)),
        }
    }
}

fn remote_error(e: proto::ErrorReply) -> anyhow::Error {
    match e.code {
        Some(3) => coded(Code::NoSource, e.error),
        _ => anyhow::anyhow!(e.error),
    }
}

impl Replica for RemoteReplica {
    fn who(&self) -> &Who {
        &self.who
    }

    fn set_owners(&mut self, owners: bool) -> anyhow::Result<()> {
        self.send(&Request::Owners { on: owners })?;
        self.reply::<proto::Intact>().map(|_| ())
    }

    fn set_backup(&mut self, backup: Option<super::backup::Backup>) -> anyhow::Result<()> {
        self.send(&Request::Backup { backup })?;
        self.reply::<proto::Intact>()
            .map(|_| ())
            .with_context(|| format!("turning on backups on {}", self.who.name))
    }

    fn scan(&mut self, checksum: bool) -> anyhow::Result<Scan> {
        self.send(&Request::Scan { checksum })?;
        self.read_scan()
    }

    fn scan_paths(&mut self, paths: &[WirePath], checksum: bool) -> anyhow::Result<Scan> {
        self.send(&Request::ScanPaths {
            paths: paths.to_vec(),
            checksum,
        })?;
        self.read_scan()
    }

    fn hash(&mut self, paths: &[WirePath]) -> anyhow::Result<Vec<Option<Hash>>> {
        self.send(&Request::Hash {
            paths: paths.to_vec(),
        })?;
        let reply: proto::HashReply = self.reply()?;
        anyhow::ensure!(
            reply.hashes.len() == paths.len(),
            "{}: {} hashes for {} paths",
            self.who.name,
            reply.hashes.len(),
            paths.len()
        );
        Ok(reply.hashes)
    }

    fn change(&mut self, change: &Change) -> anyhow::Result<Applied> {
        self.send(&Request::Change {
            change: change.clone(),
        })?;
        Ok(self.reply::<proto::ChangeReply>()?.applied)
    }

    fn read(
        &mut self,
        path: &WirePath,
        expect: &Entry,
        out: &mut dyn Write,
    ) -> anyhow::Result<bool> {
        self.send(&Request::Get {
            path: path.clone(),
            expect: expect.clone(),
        })?;
        let header: proto::DataHeader = self.reply()?;
        let copied = match proto::copy_exact(&mut self.from, out, header.size) {
            Ok(copied) => copied,
            Err(e) => return Err(self.transport("receiving a file", e)),
        };
        let intact: proto::Intact = self.reply()?;
        copied.with_context(|| format!("writing the data of {path:?}"))?;
        Ok(intact.intact && header.size == expect.size)
    }

    fn write(
        &mut self,
        path: &WirePath,
        src: &Entry,
        expect: Option<&Entry>,
        fill: &mut Fill<'_>,
    ) -> anyhow::Result<Applied> {
        self.send(&Request::Put {
            path: path.clone(),
            src: src.clone(),
            expect: expect.cloned(),
        })?;
        let mut counting = Counting {
            inner: &mut self.to,
            count: 0,
        };
        let filled = fill(&mut counting);
        let sent = counting.count;
        let finish = proto::pad(&mut self.to, src.size.saturating_sub(sent))
            .and_then(|_| {
                let intact = matches!(filled, Ok(true)) && sent == src.size;
                proto::write_line(&mut self.to, &proto::Intact { intact })
            })
            .and_then(|_| self.to.flush());
        if let Err(e) = finish {
            return Err(self.transport("sending a file", e));
        }
        let reply: proto::ChangeReply = self.reply()?;
        filled?;
        Ok(reply.applied)
    }
}

impl RemoteReplica {
    /// A scan's answer: entry lines, then the count.
    fn read_scan(&mut self) -> anyhow::Result<Scan> {
        let mut scan = Scan::new();
        loop {
            self.next_line()?;
            if self.line.starts_with(br#"{"p":"#) {
                let item: proto::ScanItem = match proto::parse(&self.line) {
                    Ok(item) => item,
                    Err(e) => return Err(self.transport("reading the scan", e)),
                };
                scan.insert(item.p, item.e);
                continue;
            }
            return match proto::parse::<Reply<proto::ScanEnd>>(&self.line) {
                Ok(Reply::Ok(end)) if end.end == scan.len() as u64 => Ok(scan),
                Ok(Reply::Ok(end)) => Err(self.transport(
                    "reading the scan",
                    io::Error::other(format!(
                        "{} entries announced, {} read",
                        end.end,
                        scan.len()
                    )),
                )),
                Ok(Reply::Error(e)) => Err(remote_error(e)),
                Err(e) => Err(self.transport("reading the scan", e)),
            };
        }
    }
}

impl Drop for RemoteReplica {
    fn drop(&mut self) {
        let _ = proto::write_line(&mut self.to, &Request::Bye).and_then(|_| self.to.flush());
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_is_quoted_for_the_remote_shell() {
        assert_eq!(
            remote_command(OsStr::new("bisync"), b"/srv/it's $(x)\n"),
            b"bisync --serve '/srv/it'\\''s $(x)\n'"
        );
        assert_eq!(
            remote_command(OsStr::new("sudo /opt/bisync"), b""),
            b"sudo /opt/bisync --serve '.'"
        );
    }
}
