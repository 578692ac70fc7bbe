//! Reaching a host over ssh, shared by pushd, bisync and keysetup: the
//! `--port/--identity/--ssh-opt` flags as one clap group, the settings they
//! become, one shared connection per host (OpenSSH's ControlMaster in a
//! private socket directory), and quoting for rsync's `-e` parser and a
//! remote POSIX shell.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The ssh flags, the same in every program that logs in somewhere (as
/// [`crate::cli::Verbosity`] is for logging): `#[command(flatten)]` it.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct SshArgs {
    /// ssh port
    #[arg(short = 'p', long, help_heading = "ssh")]
    pub port: Option<u16>,
    /// ssh private key
    #[arg(short = 'i', long, value_name = "FILE", help_heading = "ssh")]
    pub identity: Option<PathBuf>,
    /// ssh option as for `ssh -o` (repeatable), e.g. StrictHostKeyChecking=yes
    #[arg(short = 'o', long, value_name = "OPTION", help_heading = "ssh")]
    pub ssh_opt: Vec<String>,
}

impl SshArgs {
    /// The settings these flags give, with ssh's default connect timeout.
    pub fn settings(self) -> SshSettings {
        SshSettings {
            port: self.port,
            identity: self.identity,
            options: self.ssh_opt,
            connect_timeout: None,
            control: None,
        }
    }
}

/// How to reach targets over ssh (`--port`, `--identity`, `--ssh-opt`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SshSettings {
    pub port: Option<u16>,
    pub identity: Option<PathBuf>,
    /// Each becomes `-o OPTION` (`BatchMode=yes`, `UserKnownHostsFile=…`).
    pub options: Vec<String>,
    /// `ConnectTimeout` in seconds (`--io-timeout`); `None`: ssh's default.
    pub connect_timeout: Option<u64>,
    /// A [`ControlDir`]'s path: every ssh started with these settings shares
    /// one connection per destination through a socket there.
    pub control: Option<PathBuf>,
}

/// Options pushd always gives ssh after the user's (ssh keeps the first value
/// it sees for an option, so `--ssh-opt` overrides these): never prompt, and
/// notice a dead link within a minute instead of hanging on it.
const SSH_DEFAULTS: &[&str] = &[
    "BatchMode=yes",
    "ServerAliveInterval=15",
    "ServerAliveCountMax=4",
];

impl SshSettings {
    /// The ssh arguments before the host, as separate strings.
    pub fn args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = Vec::new();
        if let Some(port) = self.port {
            args.push("-p".into());
            args.push(port.to_string().into());
        }
        if let Some(identity) = &self.identity {
            args.push("-i".into());
            args.push(identity.into());
        }
        for option in &self.options {
            args.push("-o".into());
            args.push(option.into());
        }
        for option in SSH_DEFAULTS {
            args.push("-o".into());
            args.push(option.into());
        }
        if let Some(secs) = self.connect_timeout {
            args.push("-o".into());
            args.push(format!("ConnectTimeout={secs}").into());
        }
        if let Some(dir) = &self.control {
            // After the user's options, so `--ssh-opt ControlMaster=no`
            // still turns sharing off. `%C` is a hash of the local host,
            // user, host and port: one master per destination.
            let mut path = OsString::from("ControlPath=");
            path.push(dir.join("%C"));
            for option in [
                "ControlMaster=auto".into(),
                path,
                format!("ControlPersist={}", CONTROL_PERSIST.as_secs()).into(),
            ] {
                args.push("-o".into());
                args.push(option);
            }
        }
        args
    }

    /// The `-e` value for rsync: `ssh` and every argument, each quoted the
    /// way rsync splits that string (not a shell: inside single quotes a
    /// doubled `''` is one quote, and nothing else is special).
    pub fn rsync_e(&self) -> OsString {
        let mut out = b"ssh".to_vec();
        for arg in self.args() {
            out.push(b' ');
            out.extend_from_slice(&quote_for_rsync_e(arg.as_bytes()));
        }
        OsString::from_vec(out)
    }
}

/// How long an idle master connection outlives its last ssh. Long enough
/// that a target changing every few minutes never pays a login; short
/// enough that the masters of a pushd killed with -9 (which cannot say
/// `ssh -O exit`) do not linger for long.
const CONTROL_PERSIST: Duration = Duration::from_secs(600);

/// The prefix of a [`ControlDir`]'s name, followed by the owner's pid.
const CONTROL_PREFIX: &str = "syncpipe-ssh.";

/// A directory of ssh control sockets private to this process (mode 0700,
/// under `$XDG_RUNTIME_DIR`, else `/run` for root, else `/tmp`). While it
/// lives, every ssh started with [`SshSettings::control`] pointing here
/// reuses the first one's connection to the same destination, so a batch
/// costs a channel on an open connection (~130 ms less than a login over
/// loopback, far more across a network) instead of a new login.
///
/// Dropping it asks each master to exit and removes the directory. A
/// process killed with -9 leaves its directory behind: the next
/// [`ControlDir::create`] sweeps those whose owner is gone.
#[derive(Debug)]
pub struct ControlDir {
    path: PathBuf,
}

impl ControlDir {
    /// Makes a fresh directory; `None` (and ssh then logs in per use, as
    /// before) when no suitable place is writable.
    pub fn create() -> Option<ControlDir> {
        for base in control_bases() {
            sweep_stale(&base);
            for attempt in 0..8u32 {
                // Short: the socket's whole path must fit in 108 bytes.
                let mut name = format!("{CONTROL_PREFIX}{}", std::process::id());
                if attempt > 0 {
                    name.push_str(&format!(".{attempt}"));
                }
                let path = base.join(name);
                // The socket path (with ssh's 17-byte temporary suffix and a
                // 40-byte %C) must fit sun_path's 108 bytes, and ssh's option
                // parser must not split it.
                if path.as_os_str().len() + 1 + 40 + 17 >= 108
                    || path
                        .as_os_str()
                        .as_bytes()
                        .iter()
                        .any(|b| b.is_ascii_whitespace() || b"'\"%".contains(b))
                {
                    break;
                }
                use std::os::unix::fs::DirBuilderExt;
                match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                    Ok(()) => return Some(ControlDir { path }),
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                    Err(_) => break,
                }
            }
        }
        None
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A ControlDir for `settings` when any of `hosts` is reached over ssh,
    /// with `settings.control` pointing at it; `None` when none is, or when
    /// the user turned sharing off (`--ssh-opt ControlMaster=no`/`ControlPath=…`).
    pub fn for_settings(settings: &mut SshSettings, any_ssh: bool) -> Option<ControlDir> {
        let user_chose = settings.options.iter().any(|o| {
            let key = o
                .split(['=', ' '])
                .next()
                .unwrap_or("")
                .to_ascii_lowercase();
            key == "controlmaster" || key == "controlpath"
        });
        if !any_ssh || user_chose || settings.control.is_some() {
            return None;
        }
        let dir = ControlDir::create()?;
        settings.control = Some(dir.path.clone());
        Some(dir)
    }
}

impl Drop for ControlDir {
    fn drop(&mut self) {
        close_masters(&self.path);
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Asks every master with a socket in `dir` to exit (`ssh -O exit`).
fn close_masters(dir: &Path) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let mut path = OsString::from("ControlPath=");
        path.push(entry.path());
        let _ = crate::os::child::command("ssh")
            .args(["-F", "/dev/null", "-o", "BatchMode=yes", "-o"])
            .arg(path)
            .args(["-O", "exit", "syncpipe-control"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// Where control directories may go, best first.
fn control_bases() -> Vec<PathBuf> {
    let mut bases = Vec::new();
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        bases.push(PathBuf::from(dir));
    }
    if nix::unistd::geteuid().is_root() {
        bases.push("/run".into());
    }
    bases.push(std::env::temp_dir());
    bases
}

/// Removes the control directories in `base` left by processes of ours
/// that died without cleaning up (their pid is gone), closing their masters.
fn sweep_stale(base: &Path) {
    use std::os::unix::fs::MetadataExt;
    let me = nix::unistd::geteuid().as_raw();
    for entry in std::fs::read_dir(base).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(CONTROL_PREFIX)) else {
            continue;
        };
        let Some(pid) = rest.split('.').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        let ours =
            std::fs::symlink_metadata(entry.path()).is_ok_and(|m| m.is_dir() && m.uid() == me);
        if ours && !Path::new(&format!("/proc/{pid}")).exists() {
            close_masters(&entry.path());
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Quotes one argument for rsync's own split of the `-e` string.
pub fn quote_for_rsync_e(arg: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(arg.len() + 2);
    out.push(b'\'');
    for &b in arg {
        if b == b'\'' {
            out.push(b'\'');
        }
        out.push(b);
    }
    out.push(b'\'');
    out
}

/// Quotes one argument for a POSIX shell (`'…'`, a quote as `'\''`).
/// Any byte string survives, newlines and invalid UTF-8 included.
pub fn quote_for_shell(arg: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(arg.len() + 2);
    out.push(b'\'');
    for &b in arg {
        if b == b'\'' {
            out.extend_from_slice(b"'\\''");
        } else {
            out.push(b);
        }
    }
    out.push(b'\'');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quoting_survives_any_bytes() {
        assert_eq!(quote_for_shell(b"a b"), b"'a b'");
        assert_eq!(quote_for_shell(b"it's"), b"'it'\\''s'");
        assert_eq!(quote_for_shell(b"$(touch x)\n-"), b"'$(touch x)\n-'");
        assert_eq!(quote_for_rsync_e(b"it's"), b"'it''s'");
    }
}
