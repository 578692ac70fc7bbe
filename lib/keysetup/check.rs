//! `keysetup check`: what blocks a login without a password, on either side,
//! one line per fault with its fix, on stdout. The exit code tells the
//! worst kind found: unreachable, host key, or anything else blocking.

use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::cli::exit::{coded, Code};
use crate::keysetup::authkeys::AuthorizedKeys;
use crate::keysetup::knownhosts::{host_pattern, judge, HostKey, Verdict};
use crate::keysetup::remote;
use crate::keysetup::safefile::{euid, inspect, Found};
use crate::keysetup::setup::{read_public_key, recorded_keys, Ctx, Remote};
use crate::keysetup::ssh::{accepted_key, keyscan, pub_path, Endpoint, Login};
use crate::os::child;

/// `keysetup check [user@]host`.
#[derive(Clone, Debug)]
pub struct Check {
    pub remote: Remote,
}

/// One thing that blocks a login.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    pub code: Code,
    pub text: String,
}

fn fault(faults: &mut Vec<Fault>, code: Code, text: String) {
    println!("FAULT: {text}");
    faults.push(Fault { code, text });
}

fn ok(text: String) {
    println!("ok: {text}");
}

/// The exit code for what was found: unreachable beats host key beats the rest.
pub fn worst(faults: &[Fault]) -> Option<Code> {
    [Code::Unreachable, Code::HostKey, Code::Auth, Code::Failure]
        .into_iter()
        .find(|c| faults.iter().any(|f| f.code == *c))
}

pub fn check(cfg: &Check) -> anyhow::Result<()> {
    let ctx = Ctx::new(&cfg.remote)?;
    let mut faults = Vec::new();
    check_local(&ctx, &mut faults);
    let endpoint = ctx.ssh.resolve(&cfg.remote.destination)?;
    if let Some(offered) = check_network(&endpoint, &mut faults) {
        let host_ok = check_host_key(&endpoint, &offered, &mut faults)?;
        if host_ok {
            check_login(&ctx, &endpoint, &mut faults);
        }
    }
    match worst(&faults) {
        None => Ok(()),
        Some(code) => Err(coded(
            code,
            format!(
                "{} fault(s) block a login to {}; fix them as said above",
                faults.len(),
                endpoint.destination
            ),
        )),
    }
}

fn check_local(ctx: &Ctx, faults: &mut Vec<Fault>) {
    let uid = euid();
    let dir = ctx.local.ssh_dir();
    match inspect(&dir, true, uid) {
        Err(problem) => fault(faults, Code::Auth, format!("local {}", problem.describe(&dir))),
        Ok(Found::Missing) => fault(
            faults,
            Code::Auth,
            format!("local {} does not exist: run keysetup HOST", dir.display()),
        ),
        Ok(Found::Present { mode }) if mode & 0o022 != 0 => fault(
            faults,
            Code::Auth,
            format!(
                "local {} has mode {mode:03o}: ssh ignores its files when others may write there; chmod 700 {}",
                dir.display(),
                dir.display()
            ),
        ),
        Ok(Found::Present { .. }) => {}
    }
    let key = &ctx.key;
    match inspect(key, false, uid) {
        Err(problem) => fault(faults, Code::Auth, format!("local key: {}", problem.describe(key))),
        Ok(Found::Missing) => fault(
            faults,
            Code::Auth,
            format!(
                "the key {} is missing: run keysetup HOST to make and install it",
                key.display()
            ),
        ),
        Ok(Found::Present { mode }) if mode & 0o077 != 0 => fault(
            faults,
            Code::Auth,
            format!(
                "the key {} has mode {mode:03o}: ssh refuses a private key others can read; chmod 600 {}",
                key.display(),
                key.display()
            ),
        ),
        Ok(Found::Present { .. }) => {
            if let Err(e) = read_public_key(&pub_path(key)) {
                fault(
                    faults,
                    Code::Auth,
                    format!("{e:#}: restore it with ssh-keygen -y -f {0} > {0}.pub", key.display()),
                );
            }
            check_agent(key, faults);
        }
    }
}

/// A key with a passphrase needs an agent holding it for a login without
/// a prompt; a dead agent socket is worth a line too.
fn check_agent(key: &Path, faults: &mut Vec<Fault>) {
    let plain = child::command("ssh-keygen")
        .args(["-y", "-P", "", "-f"])
        .arg(key)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let sock = std::env::var_os("SSH_AUTH_SOCK").filter(|s| !s.is_empty());
    if let Some(sock) = &sock {
        if std::os::unix::net::UnixStream::connect(sock).is_err() {
            fault(
                faults,
                Code::Auth,
                format!(
                    "SSH_AUTH_SOCK={} does not answer: start the agent (eval $(ssh-agent)) or unset SSH_AUTH_SOCK",
                    Path::new(sock).display()
                ),
            );
            return;
        }
    }
    if plain {
        return;
    }
    let held = sock.is_some()
        && child::command("ssh-add")
            .arg("-T")
            .arg(pub_path(key))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    if !held {
        fault(
            faults,
            Code::Auth,
            format!(
                "the key {} has a passphrase and no agent holds it: run ssh-add {}",
                key.display(),
                key.display()
            ),
        );
    }
}

/// Something listens and speaks ssh at host:port: the keys it offers.
fn check_network(endpoint: &Endpoint, faults: &mut Vec<Fault>) -> Option<Vec<HostKey>> {
    let place = format!("{} port {}", endpoint.hostname, endpoint.port);
    let addrs: Vec<_> = match (endpoint.hostname.as_str(), endpoint.port).to_socket_addrs() {
        Ok(a) => a.collect(),
        Err(e) => {
            fault(
                faults,
                Code::Unreachable,
                format!("cannot resolve {}: {e}", endpoint.hostname),
            );
            return None;
        }
    };
    let connected = addrs
        .iter()
        .any(|a| TcpStream::connect_timeout(a, Duration::from_secs(10)).is_ok());
    if !connected {
        fault(
            faults,
            Code::Unreachable,
            format!("nothing accepts connections at {place}: wrong --port, or sshd is not running"),
        );
        return None;
    }
    match keyscan(&endpoint.hostname, endpoint.port) {
        Ok(offered) => {
            ok(format!("an ssh server answers at {place}"));
            Some(offered)
        }
        Err(_) => {
            fault(
                faults,
                Code::Unreachable,
                format!("{place} answers, but not as an ssh server: wrong --port?"),
            );
            None
        }
    }
}

fn check_host_key(
    endpoint: &Endpoint,
    offered: &[HostKey],
    faults: &mut Vec<Fault>,
) -> anyhow::Result<bool> {
    let pattern = host_pattern(&endpoint.key_name, endpoint.port);
    let recorded = recorded_keys(endpoint, &pattern)?;
    let file = endpoint
        .user_known_hosts
        .first()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    match judge(&recorded, offered) {
        Verdict::Known => {
            ok(format!("the host key of {pattern} is known"));
            return Ok(true);
        }
        Verdict::Unknown => fault(
            faults,
            Code::HostKey,
            format!("the host key of {pattern} is not in {file}: run keysetup --accept-new (or --host-key SHA256:…) {}", endpoint.destination),
        ),
        Verdict::Changed { recorded } => fault(
            faults,
            Code::HostKey,
            format!("THE HOST KEY OF {pattern} HAS CHANGED ({} differs from the recorded one): check it on the host, then ssh-keygen -R '{pattern}' -f {file}", recorded.key_type),
        ),
        Verdict::Revoked { key } => fault(
            faults,
            Code::HostKey,
            format!("the host key {} of {pattern} is marked @revoked", key.key_type),
        ),
    }
    Ok(false)
}

fn check_login(ctx: &Ctx, endpoint: &Endpoint, faults: &mut Vec<Fault>) {
    if !ctx.key.exists() {
        return;
    }
    let out = ctx
        .ssh
        .command_with(
            endpoint,
            &Login::KeyOnly(ctx.key.clone()),
            &["-v"],
            "echo SYNCPIPE-SHELL",
        )
        .stdin(Stdio::null())
        .output();
    let (logged_in, key) = match &out {
        Ok(o) => accepted_key(&String::from_utf8_lossy(&o.stderr)),
        Err(_) => (false, None),
    };
    let shell = out
        .as_ref()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("SYNCPIPE-SHELL"));
    if logged_in {
        ok(format!(
            "the key {} logs in without a password",
            key.unwrap_or_else(|| ctx.key.display().to_string())
        ));
    } else {
        fault(
            faults,
            Code::Auth,
            format!(
                "a login with the key {} as {} fails",
                ctx.key.display(),
                endpoint.user
            ),
        );
    }
    // A look at the remote side: with the kit's key when it opens a
    // shell, else with --login-key or the user's usual keys, never a prompt.
    let login = if shell {
        Login::KeyOnly(ctx.key.clone())
    } else {
        Login::AnyWay {
            key: ctx.login_key.clone(),
            batch: true,
        }
    };
    match remote::inspect(&ctx.ssh, endpoint, &login, "authorized_keys") {
        Err(e) => {
            if !logged_in {
                fault(
                    faults,
                    Code::Auth,
                    format!("cannot look at the remote side ({e:#}): pass --login-key, or run keysetup {} to install the key", endpoint.destination),
                );
            }
        }
        Ok(facts) => {
            for problem in facts.problems("authorized_keys") {
                fault(faults, Code::Auth, problem);
            }
            if let Ok(public) = ctx.public_key() {
                let ak = AuthorizedKeys::parse(facts.content.as_deref().unwrap_or_default());
                let selector = ctx.selector(&public);
                let present = ak.keys().any(|(_, k)| public.same_key(&k));
                if !present {
                    fault(
                        faults,
                        Code::Auth,
                        format!(
                            "the key is not in {}@{}:~/.ssh/authorized_keys: run keysetup {}",
                            endpoint.user, endpoint.hostname, endpoint.destination
                        ),
                    );
                } else if let Some(line) = ak.find(&selector).first() {
                    ok(format!(
                        "the remote authorized_keys has the kit's line: {}",
                        String::from_utf8_lossy(&ak.line(*line)[..ak.line(*line).len().min(120)])
                    ));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worst_fault_decides_the_code() {
        let f = |code| Fault {
            code,
            text: String::new(),
        };
        assert_eq!(worst(&[]), None);
        assert_eq!(
            worst(&[f(Code::Auth), f(Code::HostKey)]),
            Some(Code::HostKey)
        );
        assert_eq!(
            worst(&[f(Code::Auth), f(Code::Unreachable)]),
            Some(Code::Unreachable)
        );
        assert_eq!(worst(&[f(Code::Auth)]), Some(Code::Auth));
    }
}
