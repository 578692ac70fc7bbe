//! Where `pushd` sends changes: parsing a target argument into a local
//! directory, an rsync-over-ssh destination or an rsync daemon module, and
//! spelling it back the way rsync wants it.
//!
//! A relative local target is made absolute once, at parse time, against the
//! working directory of that moment: a daemon that later changes directory
//! must never find its target pointing somewhere else.

use std::ffi::OsString;
use std::fmt;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use crate::wire::path::WirePath;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// An absolute directory on this machine.
    Local(PathBuf),
    /// `[user@]host:path` through a remote shell; `path` is as given (relative
    /// paths are relative to the remote home directory).
    Ssh {
        user: Option<String>,
        host: String,
        path: Vec<u8>,
    },
    /// `host::module/path` or `rsync://[user@]host[:port]/module/path`.
    Daemon {
        user: Option<String>,
        host: String,
        port: Option<u16>,
        module: String,
        path: Vec<u8>,
    },
}

/// A parsed target: what the user wrote (for messages, results and the state
/// file) and where it points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    pub location: Location,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    #[error("target is empty")]
    Empty,
    #[error("target {0:?} has no host before the ':'")]
    NoHost(String),
    #[error("target {0:?} names no rsync daemon module (write host::module/path)")]
    NoModule(String),
    #[error("target {0:?} has a bad port: {1}")]
    BadPort(String, String),
    #[error("cannot resolve {0:?} against the working directory: {1}")]
    Cwd(String, String),
}

impl Target {
    /// Parses a target argument. `cwd` resolves relative local targets.
    pub fn parse(arg: &std::ffi::OsStr, cwd: &Path) -> Result<Target, TargetError> {
        let bytes = arg.as_bytes();
        let name = arg.to_string_lossy().into_owned();
        if bytes.is_empty() {
            return Err(TargetError::Empty);
        }
        let location = if let Some(rest) = bytes.strip_prefix(b"rsync://") {
            parse_url(rest, &name)?
        } else if let Some(colon) = remote_colon(bytes) {
            let (host_part, rest) = (&bytes[..colon], &bytes[colon + 1..]);
            let (user, host) = split_user(host_part);
            if host.is_empty() {
                return Err(TargetError::NoHost(name));
            }
            if let Some(module_path) = rest.strip_prefix(b":") {
                let (module, path) = split_module(module_path);
                if module.is_empty() {
                    return Err(TargetError::NoModule(name));
                }
                Location::Daemon {
                    user,
                    host,
                    port: None,
                    module,
                    path,
                }
            } else {
                Location::Ssh {
                    user,
                    host,
                    path: rest.to_vec(),
                }
            }
        } else {
            let path = Path::new(arg);
            let absolute = if path.is_absolute() {
                path.to_path_buf()
            } else {
                if !cwd.is_absolute() {
                    return Err(TargetError::Cwd(
                        name,
                        "working directory is not absolute".into(),
                    ));
                }
                cwd.join(path)
            };
            Location::Local(normalize(&absolute))
        };
        Ok(Target { name, location })
    }

    pub fn is_local(&self) -> bool {
        matches!(self.location, Location::Local(_))
    }

    /// The destination argument for rsync, ending in `/` so that rsync
    /// copies into it: `/dst/`, `host:/dst/`, `rsync://host:port/mod/dst/`.
    pub fn rsync_dest(&self) -> OsString {
        let mut out = Vec::new();
        match &self.location {
            Location::Local(p) => out.extend_from_slice(p.as_os_str().as_bytes()),
            Location::Ssh { user, host, path } => {
                push_user_host(&mut out, user, host);
                out.push(b':');
                out.extend_from_slice(path);
            }
            Location::Daemon {
                user,
                host,
                port,
                module,
                path,
            } => {
                out.extend_from_slice(b"rsync://");
                push_user_host(&mut out, user, host);
                if let Some(port) = port {
                    out.extend_from_slice(format!(":{port}").as_bytes());
                }
                out.push(b'/');
                out.extend_from_slice(module.as_bytes());
                if !path.is_empty() {
                    out.push(b'/');
                    out.extend_from_slice(path);
                }
            }
        }
        if out.last() != Some(&b'/') {
            out.push(b'/');
        }
        OsString::from_vec(out)
    }

    /// The target's path of `rel` (relative to the root), as the target's
    /// own side sees it: absolute locally, as given over ssh. `None` for a
    /// daemon, which has no shell.
    pub fn remote_path(&self, rel: &WirePath) -> Option<Vec<u8>> {
        let base: &[u8] = match &self.location {
            Location::Local(p) => p.as_os_str().as_bytes(),
            Location::Ssh { path, .. } => path,
            Location::Daemon { .. } => return None,
        };
        let mut out = base.to_vec();
        if rel.is_root() {
            if out.is_empty() {
                out.push(b'.');
            }
            return Some(out);
        }
        if !out.is_empty() && out.last() != Some(&b'/') {
            out.push(b'/');
        }
        out.extend_from_slice(rel.as_bytes());
        Some(out)
    }
}

impl Target {
    /// The machine the target is on, as `keysetup check` takes it
    /// (`user@host`), or "this machine" for a local directory.
    pub fn host(&self) -> String {
        match &self.location {
            Location::Local(_) => "this machine".into(),
            Location::Ssh { user, host, .. } | Location::Daemon { user, host, .. } => match user {
                Some(user) => format!("{user}@{host}"),
                None => host.clone(),
            },
        }
    }
}

/// Refuses a local target under a /tmp that systemd's `PrivateTmp=yes`
/// replaced for this process: pushd would fill a private tree nobody sees.
pub fn refuse_private_tmp(targets: &[Target]) -> anyhow::Result<()> {
    for target in targets {
        if let Location::Local(dir) = &target.location {
            if let Some(why) = crate::os::mounts::in_private_tmp(dir) {
                return Err(crate::cli::exit::coded(
                    crate::cli::exit::Code::Usage,
                    format!("the target {why}"),
                ));
            }
        }
    }
    Ok(())
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// The `:` that makes an argument remote, as rsync decides it: the first
/// colon, if no `/` comes before it (`./a:b` is local). A bracketed IPv6
/// host (`[::1]:/x`) counts its colons as part of the host.
fn remote_colon(bytes: &[u8]) -> Option<usize> {
    let start = match bytes.iter().position(|&b| b == b'[') {
        Some(open) if !bytes[..open].contains(&b'/') => {
            open + bytes[open..].iter().position(|&b| b == b']')?
        }
        _ => 0,
    };
    let colon = start + bytes[start..].iter().position(|&b| b == b':')?;
    if bytes[..colon].contains(&b'/') {
        return None;
    }
    Some(colon)
}

fn split_user(host_part: &[u8]) -> (Option<String>, String) {
    let text = String::from_utf8_lossy(host_part).into_owned();
    match text.rsplit_once('@') {
        Some((user, host)) => (Some(user.to_string()), strip_brackets(host)),
        None => (None, strip_brackets(&text)),
    }
}

fn strip_brackets(host: &str) -> String {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
        .to_string()
}

fn push_user_host(out: &mut Vec<u8>, user: &Option<String>, host: &str) {
    if let Some(user) = user {
        out.extend_from_slice(user.as_bytes());
        out.push(b'@');
    }
    if host.contains(':') {
        out.extend_from_slice(format!("[{host}]").as_bytes());
    } else {
        out.extend_from_slice(host.as_bytes());
    }
}

fn split_module(module_path: &[u8]) -> (String, Vec<u8>) {
    let module_path = module_path.strip_prefix(b"/").unwrap_or(module_path);
    match module_path.iter().position(|&b| b == b'/') {
        Some(i) => (
            String::from_utf8_lossy(&module_path[..i]).into_owned(),
            trim_slashes(&module_path[i + 1..]),
        ),
        None => (
            String::from_utf8_lossy(module_path).into_owned(),
            Vec::new(),
        ),
    }
}

fn trim_slashes(p: &[u8]) -> Vec<u8> {
    let mut p = p.to_vec();
    while p.last() == Some(&b'/') {
        p.pop();
    }
    p
}

fn parse_url(rest: &[u8], name: &str) -> Result<Location, TargetError> {
    let slash = rest.iter().position(|&b| b == b'/').unwrap_or(rest.len());
    let authority = String::from_utf8_lossy(&rest[..slash]).into_owned();
    let (user, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u.to_string()), h.to_string()),
        None => (None, authority),
    };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| TargetError::NoHost(name.into()))?;
        (h.to_string(), after.strip_prefix(':').map(str::to_string))
    } else {
        match hostport.split_once(':') {
            Some((h, p)) => (h.to_string(), Some(p.to_string())),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err(TargetError::NoHost(name.into()));
    }
    let port = port
        .map(|p| {
            p.parse::<u16>()
                .map_err(|e| TargetError::BadPort(name.into(), format!("{p:?}: {e}")))
        })
        .transpose()?;
    let (module, path) = split_module(&rest[slash..]);
    if module.is_empty() {
        return Err(TargetError::NoModule(name.into()));
    }
    Ok(Location::Daemon {
        user,
        host,
        port,
        module,
        path,
    })
}

/// Removes `.` components and trailing slashes without touching the file
/// system (`..` stays: resolving it lexically could cross a symlink wrongly).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        if c != std::path::Component::CurDir {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Location {
        Target::parse(s.as_ref(), Path::new("/home/u"))
            .unwrap()
            .location
    }

    #[test]
    fn local_targets_are_absolute() {
        assert_eq!(parse("/backup/"), Location::Local("/backup".into()));
        assert_eq!(parse("backup"), Location::Local("/home/u/backup".into()));
        assert_eq!(parse("./b/./c"), Location::Local("/home/u/b/c".into()));
        assert_eq!(parse("./a:b"), Location::Local("/home/u/a:b".into()));
        let t = Target::parse("rel".as_ref(), Path::new("/x")).unwrap();
        assert_eq!(t.rsync_dest(), OsString::from("/x/rel/"));
        assert_eq!(t.name, "rel");
    }

    #[test]
    fn ssh_targets() {
        assert_eq!(
            parse("alice@web1:/srv/data"),
            Location::Ssh {
                user: Some("alice".into()),
                host: "web1".into(),
                path: b"/srv/data".to_vec()
            }
        );
        assert_eq!(
            parse("web1:data"),
            Location::Ssh {
                user: None,
                host: "web1".into(),
                path: b"data".to_vec()
            }
        );
        let v6 = Target::parse("u@[::1]:/d".as_ref(), Path::new("/")).unwrap();
        assert_eq!(
            v6.location,
            Location::Ssh {
                user: Some("u".into()),
                host: "::1".into(),
                path: b"/d".to_vec()
            }
        );
        assert_eq!(v6.rsync_dest(), OsString::from("u@[::1]:/d/"));
        assert!(matches!(
            Target::parse(":/x".as_ref(), Path::new("/")),
            Err(TargetError::NoHost(_))
        ));
    }

    #[test]
    fn daemon_targets() {
        assert_eq!(
            parse("host::mod/sub/dir/"),
            Location::Daemon {
                user: None,
                host: "host".into(),
                port: None,
                module: "mod".into(),
                path: b"sub/dir".to_vec()
            }
        );
        let url = Target::parse("rsync://u@h:8730/mod/x".as_ref(), Path::new("/")).unwrap();
        assert_eq!(
            url.location,
            Location::Daemon {
                user: Some("u".into()),
                host: "h".into(),
                port: Some(8730),
                module: "mod".into(),
                path: b"x".to_vec()
            }
        );
        assert_eq!(url.rsync_dest(), OsString::from("rsync://u@h:8730/mod/x/"));
        assert_eq!(
            Target::parse("h::m".as_ref(), Path::new("/"))
                .unwrap()
                .rsync_dest(),
            OsString::from("rsync://h/m/")
        );
        assert!(matches!(
            Target::parse("rsync://h:99999/m".as_ref(), Path::new("/")),
            Err(TargetError::BadPort(..))
        ));
        assert!(matches!(
            Target::parse("h::".as_ref(), Path::new("/")),
            Err(TargetError::NoModule(_))
        ));
    }

    #[test]
    fn remote_paths_join_relative_names() {
        let t = Target::parse("h:/d".as_ref(), Path::new("/")).unwrap();
        assert_eq!(t.remote_path(&"a b".into()).unwrap(), b"/d/a b");
        assert_eq!(t.remote_path(&WirePath::root()).unwrap(), b"/d");
        let home = Target::parse("h:".as_ref(), Path::new("/")).unwrap();
        assert_eq!(home.remote_path(&"x".into()).unwrap(), b"x");
        let d = Target::parse("h::m".as_ref(), Path::new("/")).unwrap();
        assert_eq!(d.remote_path(&"x".into()), None);
    }
}
