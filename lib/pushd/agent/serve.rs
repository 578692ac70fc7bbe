//! `pushd --serve DIR`: reads agent requests on stdin and applies them
//! beneath DIR, one acknowledgement per request on stdout. Every path is
//! resolved beneath DIR's descriptor without following a symlink; files
//! are written to an `O_EXCL` temporary name and renamed into place. Log
//! lines go to stderr, which ssh carries back.

use std::fs;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::fd::OwnedFd;
use std::path::Path;

use anyhow::Context;
use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{mkdirat, utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchownat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};

use super::proto::{self, Ack, Meta, Request};
use super::record::{Records, Unusable};
use crate::bisync::proto::{copy_exact, parse, read_line, write_line};
use crate::os::beneath::{self, kind_of, p, remove_at, stat_at, Handle, InTheWay, Root};
use crate::pushd::direct::{remove, replace, temp_name};
use crate::wire::path::WirePath;

/// Serves `root` on stdin/stdout until the pusher says bye or goes away.
/// Owners are kept only with `allow_owners` (`--serve DIR --owners`), as
/// root, when the pusher asks: a key restricted to the agent must not let a
/// client plant setuid-root files.
pub fn serve(root: &Path, allow_owners: bool) -> anyhow::Result<()> {
    let state = super::record::state_dir();
    let (input, out) = (io::stdin().lock(), io::stdout().lock());
    serve_on(root, allow_owners, state.as_deref(), input, out)
}

/// How the agent applies what it is sent.
struct Applier {
    root: Root,
    /// Owners are set (the agent is root and the pusher asked for them);
    /// otherwise set-id bits are stripped, as `bisync --serve` does.
    owners: bool,
    /// What was last applied (protocol 2, a usable state directory).
    records: Option<Records>,
}

/// `pushd --serve DIR --restricted`: the forced command of a key limited
/// to pushing into DIR (`keysetup --only pushd:DIR`). sshd runs it whatever
/// the client asked, which is in `$SSH_ORIGINAL_COMMAND`: pushd's rsync
/// (full syncs, large files) is handed to rrsync confined to DIR, write
/// only; pushd's agent serves DIR itself when the client asked for `/`, `.`
/// or DIR; anything else is refused. Owners are never kept.
pub fn serve_restricted(dir: &Path) -> anyhow::Result<()> {
    let Some(asked) = std::env::var_os("SSH_ORIGINAL_COMMAND") else {
        return serve(dir, false);
    };
    let asked = asked.as_encoded_bytes().to_vec();
    let first = asked
        .split(|b| b.is_ascii_whitespace())
        .next()
        .unwrap_or(b"");
    if first.rsplit(|&b| b == b'/').next() == Some(b"rsync") {
        use std::os::unix::process::CommandExt;
        let err = crate::os::child::command(crate::keysetup::restrict::RRSYNC)
            .arg("-wo")
            .arg(dir)
            .exec();
        anyhow::bail!("running {}: {err}", crate::keysetup::restrict::RRSYNC);
    }
    let refuse = || {
        anyhow::anyhow!(
            "this key may only push into {} with pushd or rsync (write the target as host:/); \
             refused: {}",
            dir.display(),
            String::from_utf8_lossy(&asked)
        )
    };
    let at = asked
        .windows(b" --serve ".len())
        .position(|w| w == b" --serve ")
        .ok_or_else(refuse)?;
    let path = unquote(&asked[at + b" --serve ".len()..]).ok_or_else(refuse)?;
    let dir_bytes = dir.as_os_str().as_encoded_bytes();
    if path != b"/" && path != b"." && path != dir_bytes {
        return Err(refuse());
    }
    serve(dir, false)
}

/// The first word of `text` as [`crate::ssh::quote_for_shell`] wrote it
/// (`'…'`, a quote as `'\''`), or a plain word; `None` otherwise.
fn unquote(text: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < text.len() && !text[i].is_ascii_whitespace() {
        match text[i] {
            b'\'' => {
                let end = text[i + 1..].iter().position(|&b| b == b'\'')?;
                out.extend_from_slice(&text[i + 1..i + 1 + end]);
                i += end + 2;
            }
            b'\\' => {
                out.push(*text.get(i + 1)?);
                i += 2;
            }
            b'"' | b'$' | b'`' | b';' | b'&' | b'|' | b'<' | b'>' | b'(' | b')' => return None,
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    (!out.is_empty()).then_some(out)
}

/// [`serve`] on `input` and `out`, with its records in `state` (see
/// [`super::record`]).
pub fn serve_on(
    root: &Path,
    allow_owners: bool,
    state: Option<&Path>,
    input: impl Read,
    out: impl Write,
) -> anyhow::Result<()> {
    let mut input = BufReader::with_capacity(256 * 1024, input);
    let mut out = BufWriter::with_capacity(64 * 1024, out);
    let mut line = Vec::new();
    let mut applier: Option<Applier> = None;
    loop {
        if read_line(&mut input, &mut line)
            .context("reading a request")?
            .is_none()
        {
            return Ok(());
        }
        let request: Request = parse(&line).context("reading a request")?;
        let Some(app) = applier.as_mut() else {
            let Request::Hello { v, owners, .. } = request else {
                anyhow::bail!("the pusher sent a request before hello");
            };
            if !(proto::OLDEST..=proto::VERSION).contains(&v) {
                write_line(
                    &mut out,
                    &proto::HelloRefused {
                        error: format!(
                            "the pusher speaks agent protocol {v}, this agent ({}) {}..={}",
                            producer(),
                            proto::OLDEST,
                            proto::VERSION
                        ),
                        v: proto::VERSION,
                    },
                )?;
                out.flush()?;
                anyhow::bail!(
                    "the pusher speaks agent protocol {v}, not {}..={}",
                    proto::OLDEST,
                    proto::VERSION
                );
            }
            let root_user = nix::unistd::geteuid().is_root();
            let opened = Root::open(root)
                .with_context(|| format!("opening {}", root.display()))
                .and_then(|opened| {
                    // Records from version 2 on; none (said here) when the
                    // state directory cannot be used: every reconnect is
                    // then a full sync, as nothing is known.
                    let records = match (v >= 2).then(|| Records::open(state, root, &opened)) {
                        None => None,
                        Some(Ok(r)) => Some(r),
                        Some(Err(Unusable::NoState(why))) => {
                            eprintln!("pushd --serve: no records of what was applied: {why}");
                            None
                        }
                        Some(Err(e @ Unusable::Busy(_))) => return Err(e.into()),
                    };
                    Ok((opened, records))
                });
            let (opened, records) = match opened {
                Ok(r) => r,
                Err(e) => {
                    write_line(
                        &mut out,
                        &proto::HelloRefused {
                            error: format!("{e:#}"),
                            v: proto::VERSION,
                        },
                    )?;
                    out.flush()?;
                    return Err(e);
                }
            };
            write_line(
                &mut out,
                &proto::HelloReply {
                    v,
                    producer: producer(),
                    root_user,
                    applied: records.as_ref().and_then(Records::read),
                },
            )?;
            out.flush()?;
            applier = Some(Applier {
                root: opened,
                owners: owners && root_user && allow_owners,
                records,
            });
            continue;
        };
        let id = match request.id() {
            Some(id) => id,
            None if request == Request::Bye => return Ok(()),
            None => anyhow::bail!("a second hello"),
        };
        let mut bytes = 0;
        let mut record = None;
        let result = match request {
            Request::Put {
                path, size, meta, ..
            } => {
                let mut data = (&mut input).take(size);
                let r = app.put(&path, &mut data, size, meta);
                // Whatever happened, the stream stays in step.
                let left = data.limit();
                copy_exact(&mut input, &mut io::sink(), left)
                    .context("the pusher stopped in the middle of a file")??;
                bytes = size;
                r.map_err(|e| format!("writing {path:?}: {e}"))
            }
            Request::Symlink { path, to, meta, .. } => app
                .symlink(&path, &to, meta)
                .map_err(|e| format!("creating the symlink {path:?}: {e}")),
            Request::Mkdir { path, meta, .. } => app
                .mkdir(&path, meta)
                .map_err(|e| format!("creating the directory {path:?}: {e}")),
            Request::SetMeta { path, meta, .. } => app
                .set_meta(&path, meta)
                .map_err(|e| format!("setting the metadata of {path:?}: {e}")),
            Request::Rename { from, to, dir, .. } => app
                .rename(&from, &to, dir)
                .map_err(|e| format!("renaming {from:?} to {to:?}: {e}")),
            Request::Delete { path, .. } => remove(&app.root, &path)
                .map(|_| ())
                .map_err(|e| format!("deleting {path:?}: {e}")),
            Request::Same {
                path, size, meta, ..
            } => app.same(&path, size, meta),
            Request::Applied { stream, seq, .. } => match &mut app.records {
                // Only what came before it in this connection is known
                // applied: every earlier request was answered already.
                Some(records) => records
                    .write(stream, seq)
                    .map(|r| record = Some(r))
                    .map_err(|e| format!("recording what was applied: {e}")),
                None => Err("this agent keeps no records (see its log)".to_string()),
            },
            Request::Check { .. } => {
                if let Err(why) = app.check() {
                    write_line(
                        &mut out,
                        &Ack {
                            id,
                            error: Some(why.clone()),
                            bytes: 0,
                            record: None,
                        },
                    )?;
                    out.flush()?;
                    anyhow::bail!("{why}");
                }
                Ok(())
            }
            Request::Hello { .. } | Request::Bye => unreachable!("answered above"),
        };
        let ack = match result {
            Ok(()) => Ack {
                id,
                error: None,
                bytes,
                record,
            },
            Err(error) => Ack {
                id,
                error: Some(error),
                bytes: 0,
                record: None,
            },
        };
        write_line(&mut out, &ack)?;
        // Flushed when no more requests are waiting, so a pipelined burst
        // is answered in few writes and a lone request at once.
        if input.buffer().is_empty() {
            out.flush()?;
        }
    }
}

fn producer() -> String {
    concat!("pushd/", env!("CARGO_PKG_VERSION")).into()
}

impl Applier {
    /// DIR still names the directory open as the root.
    fn check(&self) -> Result<(), String> {
        let gone = || {
            format!(
                "the target root {} was removed or replaced",
                self.root.path().display()
            )
        };
        let now = nix::sys::stat::stat(self.root.path()).map_err(|_| gone())?;
        let open = nix::sys::stat::fstat(self.root.fd()).map_err(|e| e.to_string())?;
        if (now.st_dev, now.st_ino) != (open.st_dev, open.st_ino) {
            return Err(gone());
        }
        Ok(())
    }

    /// The directory that holds `rel`, creating missing parents (0755,
    /// refined by their own `mkdir` requests) and removing whatever is not
    /// a directory in their way — never following it.
    fn parent(&self, rel: &WirePath) -> io::Result<(OwnedFd, Vec<u8>)> {
        let (parent, name) = beneath::split(rel)?;
        let fd =
            beneath::make_dirs_with(&self.root, &parent, 0o755, InTheWay::Remove, |_, _| Ok(()))?;
        Ok((fd, name))
    }

    fn mode(&self, meta: Meta) -> u32 {
        if self.owners {
            meta.mode & 0o7777
        } else {
            meta.mode & 0o1777
        }
    }

    /// Owner first (chown clears set-id bits), then mode and times.
    fn apply_meta(&self, h: &Handle, meta: Meta) -> io::Result<()> {
        if self.owners {
            h.chown(meta.uid, meta.gid)?;
        }
        h.chmod(self.mode(meta))?;
        let mtime = TimeSpec::new(meta.mtime.0, meta.mtime.1);
        h.set_times(mtime, mtime)
    }

    fn put(&self, rel: &WirePath, data: &mut impl Read, size: u64, meta: Meta) -> io::Result<()> {
        let (dir, name) = self.parent(rel)?;
        let tmp = temp_name(&name);
        let flags =
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let mode = Mode::from_bits_truncate(0o600);
        let fd = match openat(&dir, p(&tmp), flags, mode) {
            // A leftover of a killed agent with this pid.
            Err(Errno::EEXIST) => {
                unlinkat(&dir, p(&tmp), UnlinkatFlags::NoRemoveDir)?;
                openat(&dir, p(&tmp), flags, mode)?
            }
            r => r?,
        };
        let mut file = fs::File::from(fd);
        let written = (|| -> io::Result<()> {
            let n = io::copy(data, &mut file)?;
            if n != size {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{n} of {size} bytes arrived"),
                ));
            }
            self.apply_meta(&Handle::from_file(&file)?, meta)
        })();
        match written {
            Ok(()) => replace(&dir, &tmp, &name),
            Err(e) => {
                let _ = unlinkat(&dir, p(&tmp), UnlinkatFlags::NoRemoveDir);
                Err(e)
            }
        }
    }

    fn symlink(&self, rel: &WirePath, to: &WirePath, meta: Meta) -> io::Result<()> {
        let (dir, name) = self.parent(rel)?;
        let tmp = temp_name(&name);
        let _ = unlinkat(&dir, p(&tmp), UnlinkatFlags::NoRemoveDir);
        symlinkat(p(to.as_bytes()), &dir, p(&tmp))?;
        let result = (|| -> io::Result<()> {
            if self.owners {
                fchownat(
                    &dir,
                    p(&tmp),
                    Some(Uid::from_raw(meta.uid)),
                    Some(Gid::from_raw(meta.gid)),
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                )?;
            }
            let mtime = TimeSpec::new(meta.mtime.0, meta.mtime.1);
            utimensat(
                &dir,
                p(&tmp),
                &mtime,
                &mtime,
                UtimensatFlags::NoFollowSymlink,
            )?;
            Ok(())
        })();
        match result {
            Ok(()) => replace(&dir, &tmp, &name),
            Err(e) => {
                let _ = unlinkat(&dir, p(&tmp), UnlinkatFlags::NoRemoveDir);
                Err(e)
            }
        }
    }

    fn mkdir(&self, rel: &WirePath, meta: Meta) -> io::Result<()> {
        let (dir, name) = self.parent(rel)?;
        match stat_at(&dir, &name)? {
            Some(st) if kind_of(&st) == SFlag::S_IFDIR => {}
            Some(_) => {
                remove_at(&dir, &name)?;
            }
            None => {}
        }
        match mkdirat(&dir, p(&name), Mode::from_bits_truncate(0o700)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(e.into()),
        }
        let h = Handle::open(&dir, &name)?;
        if !h.is_dir() {
            return Err(io::Error::other("not a directory any more"));
        }
        self.apply_meta(&h, meta)
    }

    fn set_meta(&self, rel: &WirePath, meta: Meta) -> io::Result<()> {
        let h = if rel.is_root() {
            Handle::open(self.root.fd(), b".")?
        } else {
            let (dir, name) = self.root.parent(rel)?;
            match Handle::open(&dir, &name) {
                // A symlink: its times only (its mode means nothing).
                Err(e) if e.raw_os_error() == Some(Errno::ELOOP as i32) => {
                    let mtime = TimeSpec::new(meta.mtime.0, meta.mtime.1);
                    utimensat(
                        &dir,
                        p(&name),
                        &mtime,
                        &mtime,
                        UtimensatFlags::NoFollowSymlink,
                    )?;
                    return Ok(());
                }
                r => r?,
            }
        };
        self.apply_meta(&h, meta)
    }

    fn same(&self, rel: &WirePath, size: u64, meta: Meta) -> Result<(), String> {
        let differs = || format!("{rel:?} differs on the target");
        let (dir, name) = self.root.parent(rel).map_err(|_| differs())?;
        let h = Handle::open(&dir, &name).map_err(|_| differs())?;
        let st = &h.stat;
        let same = kind_of(st) == SFlag::S_IFREG
            && st.st_size as u64 == size
            && (st.st_mtime, st.st_mtime_nsec) == meta.mtime;
        if !same {
            return Err(differs());
        }
        self.apply_meta(&h, meta)
            .map_err(|e| format!("setting the metadata of {rel:?}: {e}"))
    }

    fn rename(&self, from: &WirePath, to: &WirePath, dir: Option<bool>) -> io::Result<()> {
        let (from_dir, from_name) = self.root.parent(from)?;
        let Some(st) = stat_at(&from_dir, &from_name)? else {
            return Err(io::Error::new(io::ErrorKind::NotFound, "not on the target"));
        };
        if dir.is_some_and(|d| d != (kind_of(&st) == SFlag::S_IFDIR)) {
            return Err(io::Error::other(
                "another type on the target than what moved",
            ));
        }
        let (to_dir, to_name) = self.parent(to)?;
        if let Some(old) = stat_at(&to_dir, &to_name)? {
            let (a, b) = (kind_of(&st), kind_of(&old));
            if (st.st_dev, st.st_ino) == (old.st_dev, old.st_ino) {
                return Ok(());
            }
            // rename(2) replaces a file by a file and a directory by an
            // empty directory; anything else in the way goes first.
            if a == SFlag::S_IFDIR || b == SFlag::S_IFDIR {
                remove_at(&to_dir, &to_name)?;
            }
        }
        nix::fcntl::renameat(&from_dir, p(&from_name), &to_dir, p(&to_name))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    const META: Meta = Meta {
        mode: 0o640,
        mtime: (1_000_000_000, 5),
        uid: 0,
        gid: 0,
    };

    fn line(out: &mut Vec<u8>, r: &impl serde::Serialize) {
        write_line(out, r).unwrap();
    }

    fn hello(v: u32) -> Request {
        Request::Hello {
            v,
            producer: "test".into(),
            owners: false,
        }
    }

    fn run(root: &Path, input: &[u8]) -> (bool, Vec<String>) {
        let mut out = Vec::new();
        let state = tempfile::tempdir().unwrap();
        let ok = serve_on(root, false, Some(state.path()), input, &mut out).is_ok();
        let text = String::from_utf8(out).unwrap();
        (ok, text.lines().map(str::to_string).collect())
    }

    #[test]
    fn every_verb_applies_and_is_acknowledged_by_id() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("in the way/x")).unwrap();
        fs::write(root.join("old"), b"old").unwrap();
        let mut input = Vec::new();
        line(&mut input, &hello(proto::VERSION));
        let nasty = WirePath::from_bytes(b"d/new\nline \xff $(x)".to_vec());
        line(
            &mut input,
            &Request::Put {
                id: 1,
                path: nasty.clone(),
                size: 5,
                meta: META,
            },
        );
        input.extend_from_slice(b"hello");
        line(
            &mut input,
            &Request::Put {
                id: 2,
                path: "in the way".into(),
                size: 1,
                meta: META,
            },
        );
        input.extend_from_slice(b"!");
        line(
            &mut input,
            &Request::Symlink {
                id: 3,
                path: "link".into(),
                to: "/etc/passwd".into(),
                meta: META,
            },
        );
        line(
            &mut input,
            &Request::Mkdir {
                id: 4,
                path: "m/n".into(),
                meta: Meta {
                    mode: 0o750,
                    ..META
                },
            },
        );
        line(
            &mut input,
            &Request::Rename {
                id: 5,
                from: "old".into(),
                to: "m/renamed".into(),
                dir: Some(false),
            },
        );
        line(
            &mut input,
            &Request::Rename {
                id: 6,
                from: "gone".into(),
                to: "x".into(),
                dir: Some(false),
            },
        );
        line(
            &mut input,
            &Request::Delete {
                id: 7,
                path: "d".into(),
            },
        );
        line(
            &mut input,
            &Request::Delete {
                id: 8,
                path: "never".into(),
            },
        );
        line(
            &mut input,
            &Request::SetMeta {
                id: 9,
                path: "m/renamed".into(),
                meta: Meta {
                    mode: 0o600,
                    ..META
                },
            },
        );
        line(&mut input, &Request::Bye);
        let (ok, lines) = run(root, &input);
        assert!(ok, "{lines:?}");
        assert!(lines[0].contains("\"v\":2"), "{lines:?}");
        let acks: Vec<Ack> = lines[1..]
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(
            acks.iter().map(|a| a.id).collect::<Vec<_>>(),
            (1..=9).collect::<Vec<_>>()
        );
        for a in &acks {
            assert_eq!(a.error.is_some(), a.id == 6, "{a:?}");
        }
        assert_eq!(acks[0].bytes, 5);
        let f = fs::metadata(root.join("in the way")).unwrap();
        assert!(f.is_file());
        assert_eq!(
            (f.mode() & 0o7777, f.mtime(), f.mtime_nsec()),
            (0o640, 1_000_000_000, 5)
        );
        assert_eq!(
            fs::read_link(root.join("link")).unwrap(),
            Path::new("/etc/passwd")
        );
        assert_eq!(
            fs::metadata(root.join("m/n")).unwrap().mode() & 0o7777,
            0o750
        );
        assert_eq!(fs::read(root.join("m/renamed")).unwrap(), b"old");
        assert_eq!(
            fs::metadata(root.join("m/renamed")).unwrap().mode() & 0o7777,
            0o600
        );
        assert!(!root.join("old").exists() && !root.join("d").exists());
        let left: Vec<_> = fs::read_dir(root)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(
            !left
                .iter()
                .any(|n| n.to_string_lossy().contains(".syncpipe-")),
            "no temporary file left: {left:?}"
        );
    }

    #[test]
    fn a_rename_of_another_type_than_what_moved_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("c d/a")).unwrap();
        let mut input = Vec::new();
        line(&mut input, &hello(proto::VERSION));
        for (id, dir) in [(1, Some(false)), (2, Some(true))] {
            line(
                &mut input,
                &Request::Rename {
                    id,
                    from: "c d".into(),
                    to: "b".into(),
                    dir,
                },
            );
        }
        line(&mut input, &Request::Bye);
        let (ok, lines) = run(root, &input);
        assert!(ok, "{lines:?}");
        let acks: Vec<Ack> = lines[1..]
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert!(acks[0].error.is_some(), "a file's rename moved a directory");
        assert!(acks[1].error.is_none(), "{:?}", acks[1]);
        assert!(root.join("b/a").is_dir() && !root.join("c d").exists());
    }

    #[test]
    fn planted_symlinks_are_replaced_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let (root, outside) = (dir.path().join("root"), dir.path().join("outside"));
        fs::create_dir_all(&root).unwrap();
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("f"), b"victim").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("a")).unwrap();
        std::os::unix::fs::symlink(outside.join("f"), root.join("top")).unwrap();
        let mut input = Vec::new();
        line(&mut input, &hello(proto::VERSION));
        line(
            &mut input,
            &Request::Put {
                id: 1,
                path: "a/f".into(),
                size: 3,
                meta: META,
            },
        );
        input.extend_from_slice(b"new");
        line(
            &mut input,
            &Request::Delete {
                id: 2,
                path: "a/f".into(),
            },
        );
        line(
            &mut input,
            &Request::Put {
                id: 3,
                path: "top".into(),
                size: 3,
                meta: META,
            },
        );
        input.extend_from_slice(b"top");
        line(
            &mut input,
            &Request::Rename {
                id: 4,
                from: "a/f".into(),
                to: "../escaped".into(),
                dir: None,
            },
        );
        let (ok, lines) = run(&root, &input);
        assert!(ok, "{lines:?}");
        assert_eq!(fs::read(outside.join("f")).unwrap(), b"victim");
        assert!(!dir.path().join("escaped").exists());
        assert!(fs::symlink_metadata(root.join("a")).unwrap().is_dir());
        assert!(!root.join("a/f").exists(), "deleted after it was put");
        assert_eq!(fs::read(root.join("top")).unwrap(), b"top");
        assert!(lines[4].contains("error"), "`..` refused: {lines:?}");
    }

    #[test]
    fn the_asked_directory_is_read_back_as_quoted() {
        let q = |p: &[u8]| crate::ssh::quote_for_shell(p);
        for p in [&b"/"[..], b"/srv/it's $(x)\n", b"."] {
            assert_eq!(unquote(&q(p)).as_deref(), Some(p));
        }
        assert_eq!(unquote(b"/ --owners").as_deref(), Some(&b"/"[..]));
        assert_eq!(unquote(b"$(id)"), None);
    }

    #[test]
    fn another_version_is_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let mut input = Vec::new();
        line(&mut input, &hello(proto::VERSION + 1));
        let (ok, lines) = run(dir.path(), &input);
        assert!(!ok);
        let refused: proto::HelloRefused = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(refused.v, proto::VERSION);
        let asked = format!("protocol {}", proto::VERSION + 1);
        assert!(refused.error.contains(&asked), "{}", refused.error);
    }

    #[test]
    fn a_failed_put_keeps_the_stream_in_step() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("file"), b"x").unwrap();
        let mut input = Vec::new();
        line(&mut input, &hello(proto::VERSION));
        // Its parent cannot be made (`..`): refused before reading.
        line(
            &mut input,
            &Request::Put {
                id: 1,
                path: "../x".into(),
                size: 4,
                meta: META,
            },
        );
        input.extend_from_slice(b"{\"o\"");
        line(
            &mut input,
            &Request::Delete {
                id: 2,
                path: "file".into(),
            },
        );
        let (ok, lines) = run(dir.path(), &input);
        assert!(ok, "{lines:?}");
        assert!(
            lines[1].contains("error") && lines[2] == "{\"id\":2}",
            "{lines:?}"
        );
        assert!(!dir.path().join("file").exists());
    }

    #[test]
    fn what_was_applied_is_recorded_outside_the_directory_and_said_at_hello() {
        let dir = tempfile::tempdir().unwrap();
        let (root, state) = (dir.path().join("root"), dir.path().join("state"));
        fs::create_dir(&root).unwrap();
        let session = |requests: &[Request]| {
            let mut input = Vec::new();
            line(&mut input, &hello(proto::VERSION));
            for r in requests {
                line(&mut input, r);
            }
            let mut out = Vec::new();
            serve_on(&root, false, Some(&state), &input[..], &mut out).unwrap();
            let text = String::from_utf8(out).unwrap();
            let mut lines = text.lines();
            let reply: proto::HelloReply = serde_json::from_str(lines.next().unwrap()).unwrap();
            let acks: Vec<Ack> = lines.map(|l| serde_json::from_str(l).unwrap()).collect();
            (reply, acks)
        };
        let applied = |id, seq| Request::Applied {
            id,
            stream: "s1".into(),
            seq,
        };
        let (reply, acks) = session(&[applied(1, 5), applied(2, 9)]);
        assert_eq!(reply.applied, None, "nothing recorded yet");
        let record = acks[0].record.clone().unwrap();
        assert_eq!(acks[1].record.as_deref(), Some(&record[..]), "one record");
        let (reply, _) = session(&[]);
        assert_eq!(
            reply.applied,
            Some(proto::Recorded {
                record: record.clone(),
                stream: "s1".into(),
                seq: 9
            })
        );
        assert_eq!(fs::read_dir(&root).unwrap().count(), 0, "no marker inside");
        // A pusher of protocol 1 is served, without records.
        let mut input = Vec::new();
        line(&mut input, &hello(1));
        line(&mut input, &applied(1, 10));
        let (ok, lines) = run(&root, &input);
        assert!(ok && lines[0].contains("\"v\":1") && !lines[0].contains("applied"));
        assert!(lines[1].contains("error"), "{lines:?}");
        // The directory made again is another one: nothing is vouched for.
        fs::remove_dir(&root).unwrap();
        fs::create_dir(&root).unwrap();
        let (reply, acks) = session(&[applied(1, 3)]);
        assert_eq!(reply.applied, None);
        assert_ne!(acks[0].record.as_deref(), Some(&record[..]), "a new record");
        // One agent per directory: a second one waits, then refuses.
        let key = fs::read_dir(&state)
            .unwrap()
            .flatten()
            .find(|e| e.path().extension().is_some_and(|x| x == "lock"))
            .unwrap()
            .path();
        let held = nix::fcntl::Flock::lock(
            fs::File::open(&key).unwrap(),
            nix::fcntl::FlockArg::LockExclusiveNonblock,
        )
        .unwrap();
        let mut input = Vec::new();
        line(&mut input, &hello(proto::VERSION));
        let mut out = Vec::new();
        let started = std::time::Instant::now();
        assert!(serve_on(&root, false, Some(&state), &input[..], &mut out).is_err());
        assert!(started.elapsed() >= super::super::record::LOCK_WAIT);
        assert!(String::from_utf8_lossy(&out).contains("another agent"));
        drop(held);
    }
}
