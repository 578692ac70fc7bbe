//! Reaching a host over ssh, shared by pushd, bisync and keysetup: the
//! `--port/--identity/--ssh-opt` flags as one clap group, the settings they
//! become, and quoting for rsync's `-e` parser and a remote POSIX shell.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

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
