//! Running OpenSSH's own tools for keysetup: `ssh -G` to see where a
//! destination really leads, `ssh-keygen` to make and fingerprint keys and
//! to look hosts up in known_hosts (hashed names too), `ssh-keyscan` for
//! what a server offers, and `ssh` itself, with systemd's variables taken
//! out of every child's environment and failures sorted into exit codes.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{bail, Context};

use crate::cli::exit::{coded, Code};
use crate::keysetup::knownhosts::{
    parse_keygen_fingerprint, parse_known_line, Fingerprint, HostKey, Known,
};
use crate::os::child;

/// The kit's key, unless `--identity` names another.
pub const KEY_NAME: &str = "id_syncpipe_ed25519";

/// Seconds to wait for a server before giving up.
pub const CONNECT_TIMEOUT: u32 = 10;

/// The local side: whose keys, in which home, on which host.
#[derive(Clone, Debug)]
pub struct Local {
    /// `$HOME` (the passwd entry's home when unset).
    pub home: PathBuf,
    /// True when `$HOME` is the passwd home, where ssh itself looks for
    /// `~/.ssh`; otherwise every file is named to ssh explicitly.
    pub passwd_home: bool,
    pub user: String,
    pub host: String,
}

impl Local {
    pub fn from_env() -> anyhow::Result<Local> {
        let uid = nix::unistd::geteuid();
        let pw = nix::unistd::User::from_uid(uid)
            .ok()
            .flatten()
            .ok_or_else(|| anyhow::anyhow!("uid {uid} has no passwd entry"))?;
        let home = std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| pw.dir.clone());
        let passwd_home = home == pw.dir;
        let host = nix::unistd::gethostname()
            .context("reading the host name")?
            .to_string_lossy()
            .into_owned();
        Ok(Local {
            home,
            passwd_home,
            user: pw.name,
            host,
        })
    }

    pub fn ssh_dir(&self) -> PathBuf {
        self.home.join(".ssh")
    }

    pub fn authorized_keys(&self) -> PathBuf {
        self.ssh_dir().join("authorized_keys")
    }

    pub fn known_hosts(&self) -> PathBuf {
        self.ssh_dir().join("known_hosts")
    }

    pub fn config(&self) -> PathBuf {
        self.ssh_dir().join("config")
    }

    pub fn default_key(&self) -> PathBuf {
        self.ssh_dir().join(KEY_NAME)
    }

    /// The comment new keys get, which also marks the kit's lines:
    /// `syncpipe:USER@HOST`. The user is part of it so that two users of one
    /// machine syncing into the same account do not replace each other.
    pub fn key_comment(&self) -> String {
        format!("syncpipe:{}@{}", self.user, self.host)
    }
}

/// Where a destination leads, as `ssh -G` resolves it with the user's config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// What the user typed (an alias, `user@host`), handed to ssh as is.
    pub destination: String,
    pub user: String,
    pub hostname: String,
    pub port: u16,
    /// The name known_hosts uses (HostKeyAlias, else the host name).
    pub key_name: String,
    /// The files ssh reads host keys from; the first user file is where
    /// new keys are recorded.
    pub user_known_hosts: Vec<PathBuf>,
    pub global_known_hosts: Vec<PathBuf>,
}

/// Parses `ssh -G` output into an endpoint.
pub fn parse_ssh_g(destination: &str, text: &str) -> Result<Endpoint, String> {
    let mut user = None;
    let mut hostname = None;
    let mut port = None;
    let mut alias = None;
    let mut user_files = Vec::new();
    let mut global_files = Vec::new();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(' ') else {
            continue;
        };
        match key {
            "user" => user = Some(value.to_string()),
            "hostname" => hostname = Some(value.to_string()),
            "port" => port = value.parse::<u16>().ok(),
            "hostkeyalias" => alias = Some(value.to_string()),
            "userknownhostsfile" => user_files = value.split(' ').map(PathBuf::from).collect(),
            "globalknownhostsfile" => global_files = value.split(' ').map(PathBuf::from).collect(),
            _ => {}
        }
    }
    let (Some(user), Some(hostname), Some(port)) = (user, hostname, port) else {
        return Err(format!(
            "ssh -G {destination} did not name user, host and port"
        ));
    };
    Ok(Endpoint {
        destination: destination.to_string(),
        user,
        key_name: alias.unwrap_or_else(|| hostname.clone()),
        hostname,
        port,
        user_known_hosts: user_files,
        global_known_hosts: global_files,
    })
}

/// How an ssh run logs in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Login {
    /// Whatever works: the user's config, agent and default keys, a
    /// password typed at the terminal (unless `batch`); plus `key` when given.
    AnyWay { key: Option<PathBuf>, batch: bool },
    /// This key alone, never a prompt (`BatchMode`, `IdentitiesOnly`).
    KeyOnly(PathBuf),
}

/// ssh as keysetup runs it: the user's settings plus strict host keys.
#[derive(Clone, Debug)]
pub struct Ssh {
    pub local: Local,
    pub port: Option<u16>,
    /// `-o` options given by the user.
    pub options: Vec<String>,
}

impl Ssh {
    /// `ssh` with `-F`/`UserKnownHostsFile` pointing into `$HOME` when it is
    /// not the passwd home, the port and the user's options.
    fn base(&self) -> Command {
        let mut cmd = child::command("ssh");
        if !self.local.passwd_home {
            let config = self.local.config();
            cmd.arg("-F").arg(if config.exists() {
                config
            } else {
                PathBuf::from("/dev/null")
            });
            let mut known = OsString::from("UserKnownHostsFile=");
            known.push(self.local.known_hosts());
            cmd.arg("-o").arg(known);
        }
        if let Some(port) = self.port {
            cmd.arg("-p").arg(port.to_string());
        }
        for option in &self.options {
            cmd.arg("-o").arg(option);
        }
        cmd
    }

    /// Resolves `destination` with `ssh -G`.
    pub fn resolve(&self, destination: &str) -> anyhow::Result<Endpoint> {
        check_destination(destination)?;
        let out = self
            .base()
            .arg("-G")
            .arg("--")
            .arg(destination)
            .stdin(Stdio::null())
            .output()
            .context("running ssh -G (is openssh-client installed?)")?;
        if !out.status.success() {
            bail!(
                "ssh -G {destination} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        parse_ssh_g(destination, &String::from_utf8_lossy(&out.stdout)).map_err(anyhow::Error::msg)
    }

    /// `ssh … DESTINATION REMOTE_COMMAND`, host keys checked strictly (they
    /// were recorded or verified before any login).
    pub fn command(&self, endpoint: &Endpoint, login: &Login, remote_command: &str) -> Command {
        self.command_with(endpoint, login, &[], remote_command)
    }

    /// [`command`](Self::command) with more ssh arguments (`-v`).
    pub fn command_with(
        &self,
        endpoint: &Endpoint,
        login: &Login,
        extra: &[&str],
        remote_command: &str,
    ) -> Command {
        let mut cmd = self.base();
        cmd.args(extra);
        cmd.args(["-o", "StrictHostKeyChecking=yes"])
            .arg("-o")
            .arg(format!("ConnectTimeout={CONNECT_TIMEOUT}"))
            .args(["-o", "RequestTTY=no", "-o", "ClearAllForwardings=yes"]);
        match login {
            Login::AnyWay { key, batch } => {
                if let Some(key) = key {
                    cmd.arg("-i").arg(key);
                }
                if *batch {
                    cmd.args(["-o", "BatchMode=yes"]);
                }
            }
            Login::KeyOnly(key) => {
                cmd.args([
                    "-o",
                    "BatchMode=yes",
                    "-o",
                    "IdentitiesOnly=yes",
                    "-o",
                    "PreferredAuthentications=publickey",
                    "-o",
                    "IdentityAgent=none",
                ])
                .arg("-i")
                .arg(key);
            }
        }
        cmd.arg("--").arg(&endpoint.destination).arg(remote_command);
        cmd
    }
}

/// Refuses a destination ssh would read as an option, or that is empty.
pub fn check_destination(destination: &str) -> anyhow::Result<()> {
    if destination.is_empty()
        || destination.starts_with('-')
        || destination.contains(char::is_whitespace)
    {
        return Err(coded(
            Code::Usage,
            format!("{destination:?} is not a host: write [user@]host"),
        ));
    }
    Ok(())
}

/// What a failed ssh run's stderr says went wrong, as an exit code and a hint.
pub fn classify_failure(stderr: &str) -> (Code, &'static str) {
    let has = |needle: &str| stderr.contains(needle);
    if has("REMOTE HOST IDENTIFICATION HAS CHANGED")
        || has("Host key verification failed")
        || has("host key is not known")
        || has("REVOKED HOST KEY")
    {
        (
            Code::HostKey,
            "the host key is not the recorded one; run keysetup check",
        )
    } else if has("Permission denied") || has("Too many authentication failures") {
        (Code::Auth, "the login was refused")
    } else if has("Connection refused")
        || has("timed out")
        || has("Could not resolve hostname")
        || has("No route to host")
        || has("Network is unreachable")
        || has("kex_exchange_identification")
        || has("Connection closed by")
        || has("Connection reset")
    {
        (
            Code::Unreachable,
            "cannot reach the ssh server (wrong host or --port?)",
        )
    } else {
        (Code::Failure, "ssh failed")
    }
}

/// Turns a failed ssh run into a coded error naming the destination.
pub fn ssh_error(what: &str, endpoint: &Endpoint, out: &Output) -> anyhow::Error {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let (code, hint) = classify_failure(&stderr);
    let detail = stderr
        .lines()
        .filter(|l| !l.starts_with("debug") && !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    coded(
        code,
        format!(
            "{what} {}@{} port {}: {hint} ({})",
            endpoint.user,
            endpoint.hostname,
            endpoint.port,
            if detail.is_empty() {
                format!("ssh exited with {}", out.status)
            } else {
                detail
            }
        ),
    )
}

/// Makes the key pair at `key` unless it exists (never overwrites);
/// restores a missing `.pub` from the private key. Returns true when made.
pub fn ensure_key(key: &Path, comment: &str) -> anyhow::Result<bool> {
    let public = pub_path(key);
    if key.exists() {
        if !public.exists() {
            let out = child::command("ssh-keygen")
                .args(["-y", "-f"])
                .arg(key)
                .stdin(Stdio::null())
                .output()
                .context("running ssh-keygen -y")?;
            if !out.status.success() {
                bail!(
                    "{} exists but its public half cannot be derived: {}",
                    key.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            crate::keysetup::safefile::write_atomic(&public, &out.stdout, 0o644, false)?;
        }
        return Ok(false);
    }
    if public.exists() {
        bail!(
            "{} exists without its private key {}; move it away or pass --identity",
            public.display(),
            key.display()
        );
    }
    let out = child::command("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(key)
        .stdin(Stdio::null())
        .output()
        .context("running ssh-keygen (is openssh-client installed?)")?;
    if !out.status.success() {
        bail!(
            "ssh-keygen could not make {}: {}",
            key.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(true)
}

pub fn pub_path(key: &Path) -> PathBuf {
    let mut name = key.as_os_str().to_os_string();
    name.push(".pub");
    PathBuf::from(name)
}

/// The SHA256 fingerprint of a public key line, as ssh-keygen computes it.
pub fn fingerprint(key_line: &str) -> anyhow::Result<Fingerprint> {
    let mut child = child::command("ssh-keygen")
        .args(["-l", "-E", "sha256", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running ssh-keygen -l")?;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(format!("{key_line}\n").as_bytes())
        .context("writing to ssh-keygen -l")?;
    let out = child.wait_with_output().context("running ssh-keygen -l")?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(parse_keygen_fingerprint)
        .ok_or_else(|| anyhow::anyhow!("ssh-keygen could not fingerprint {key_line:?}"))
}

/// The keys the server at `hostname:port` offers (`ssh-keyscan`).
pub fn keyscan(hostname: &str, port: u16) -> anyhow::Result<Vec<HostKey>> {
    let out = child::command("ssh-keyscan")
        .args(["-T", &CONNECT_TIMEOUT.to_string(), "-p", &port.to_string()])
        .args(["-t", "ed25519,ecdsa,rsa", "--"])
        .arg(hostname)
        .stdin(Stdio::null())
        .output()
        .context("running ssh-keyscan")?;
    let keys: Vec<HostKey> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(parse_known_line)
        .map(|k| k.key)
        .collect();
    if keys.is_empty() {
        return Err(coded(
            Code::Unreachable,
            format!(
                "no ssh server answered at {hostname} port {port}: check the host name and --port"
            ),
        ));
    }
    Ok(keys)
}

/// Every key recorded for `pattern` in `file` (`ssh-keygen -F`, which also
/// finds hashed names). A missing file records nothing.
pub fn lookup_known(file: &Path, pattern: &str) -> anyhow::Result<Vec<Known>> {
    if !file.exists() {
        return Ok(Vec::new());
    }
    let out = child::command("ssh-keygen")
        .arg("-F")
        .arg(pattern)
        .arg("-f")
        .arg(file)
        .stdin(Stdio::null())
        .output()
        .context("running ssh-keygen -F")?;
    // Exit 1 means "not found"; anything printed is still what was found.
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(parse_known_line)
        .collect())
}

/// From `ssh -v` output: whether the login succeeded and which key the
/// server accepted (`Server accepts key: PATH TYPE SHA256:…`).
pub fn accepted_key(verbose_stderr: &str) -> (bool, Option<String>) {
    let authenticated = verbose_stderr
        .lines()
        .any(|l| l.contains("Authenticated to "));
    let key = verbose_stderr.lines().find_map(|l| {
        l.split_once("Server accepts key: ")
            .map(|(_, rest)| rest.trim().trim_end_matches(" explicit").to_string())
    });
    (authenticated, key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_g_output() {
        let text = "user bob\nhostname 10.0.0.5\nport 2222\nuserknownhostsfile /h/.ssh/known_hosts /h/.ssh/known_hosts2\nglobalknownhostsfile /etc/ssh/ssh_known_hosts\n";
        let e = parse_ssh_g("backup1", text).unwrap();
        assert_eq!(
            (e.user.as_str(), e.hostname.as_str(), e.port),
            ("bob", "10.0.0.5", 2222)
        );
        assert_eq!(e.key_name, "10.0.0.5");
        assert_eq!(e.user_known_hosts[0], PathBuf::from("/h/.ssh/known_hosts"));
        let aliased = parse_ssh_g("b", &format!("{text}hostkeyalias backup-key\n")).unwrap();
        assert_eq!(aliased.key_name, "backup-key");
        assert!(parse_ssh_g("b", "user x\n").is_err());
    }

    #[test]
    fn destinations() {
        assert!(check_destination("bob@host").is_ok());
        for bad in ["", "-oProxyCommand=x", "a b"] {
            assert_eq!(
                crate::cli::exit::code_of(&check_destination(bad).unwrap_err()),
                Code::Usage
            );
        }
    }

    #[test]
    fn failures_are_sorted() {
        assert_eq!(
            classify_failure("bob@h: Permission denied (publickey).").0,
            Code::Auth
        );
        assert_eq!(
            classify_failure("@@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @@@").0,
            Code::HostKey
        );
        assert_eq!(
            classify_failure("No ED25519 host key is known for [h]:2 and you have requested strict checking.\nHost key verification failed.").0,
            Code::HostKey
        );
        assert_eq!(
            classify_failure("ssh: connect to host h port 1: Connection refused").0,
            Code::Unreachable
        );
        assert_eq!(classify_failure("something else").0, Code::Failure);
    }

    #[test]
    fn which_key_was_accepted() {
        let text = "debug1: Offering public key: /h/.ssh/id_syncpipe_ed25519 ED25519 SHA256:abc explicit\n\
                    debug1: Server accepts key: /h/.ssh/id_syncpipe_ed25519 ED25519 SHA256:abc explicit\n\
                    Authenticated to 127.0.0.1 ([127.0.0.1]:2222) using \"publickey\".\n";
        let (ok, key) = accepted_key(text);
        assert!(ok);
        assert_eq!(
            key.unwrap(),
            "/h/.ssh/id_syncpipe_ed25519 ED25519 SHA256:abc"
        );
        assert_eq!(accepted_key("Permission denied"), (false, None));
    }

    #[test]
    fn comment_names_user_and_host() {
        let l = Local {
            home: "/h".into(),
            passwd_home: true,
            user: "alice".into(),
            host: "laptop".into(),
        };
        assert_eq!(l.key_comment(), "syncpipe:alice@laptop");
        assert_eq!(
            l.default_key(),
            PathBuf::from("/h/.ssh/id_syncpipe_ed25519")
        );
    }
}
