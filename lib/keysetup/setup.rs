//! What `keysetup` does, step by step: make the kit's key, settle the host
//! key, install the public key on the remote (one login, like ssh-copy-id),
//! prove a login without a password, write the `Host` alias, and set up the
//! way back for `--mutual`; `authorize` and `revoke` for one side alone.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{bail, Context};

use crate::cli::exit::{coded, Code};
use crate::keysetup::authkeys::{AuthorizedKeys, Change, PublicKey, Selector};
use crate::keysetup::knownhosts::{
    append_lines, choose_key, host_pattern, judge, known_line, Known, Offered, Trust, Verdict,
};
use crate::keysetup::remote::{self, Reply};
use crate::keysetup::restrict::{Only, Restriction};
use crate::keysetup::safefile::{ensure_ssh_dir, read_own, set_mode, write_atomic};
use crate::keysetup::ssh::{
    accepted_key, ensure_key, fingerprint, keyscan, lookup_known, pub_path, ssh_error, Endpoint,
    Local, Login, Ssh,
};
use crate::keysetup::sshconfig::{self, HostBlock};
use crate::{log_notice, log_warn};

/// How to reach the remote side, shared by every subcommand.
#[derive(Clone, Debug)]
pub struct Remote {
    /// `[user@]host` or an alias from `~/.ssh/config`.
    pub destination: String,
    pub port: Option<u16>,
    /// `-o` options for every ssh run.
    pub ssh_options: Vec<String>,
    /// The kit's key (default `~/.ssh/id_syncpipe_ed25519`).
    pub identity: Option<PathBuf>,
    /// A key that logs in today, used to install or inspect.
    pub login_key: Option<PathBuf>,
}

/// `keysetup [user@]host …`.
#[derive(Clone, Debug)]
pub struct Setup {
    pub remote: Remote,
    pub restriction: Restriction,
    pub trust: Trust,
    pub alias: Option<String>,
    pub mutual: Option<Mutual>,
}

/// The way back for `--mutual`: how the remote reaches this machine.
#[derive(Clone, Debug)]
pub struct Mutual {
    /// `user@host` as the remote should log in here.
    pub back: Option<String>,
    pub back_port: u16,
    pub restriction: Restriction,
}

/// The pieces every step needs.
pub struct Ctx {
    pub local: Local,
    pub ssh: Ssh,
    pub key: PathBuf,
    pub login_key: Option<PathBuf>,
}

impl Ctx {
    pub fn new(remote: &Remote) -> anyhow::Result<Ctx> {
        let local = Local::from_env()?;
        let key = match &remote.identity {
            Some(k) => absolute(k)?,
            None => local.default_key(),
        };
        let ssh = Ssh {
            local: local.clone(),
            port: remote.port,
            options: remote.ssh_options.clone(),
        };
        let login_key = remote.login_key.as_deref().map(absolute).transpose()?;
        Ok(Ctx {
            local,
            ssh,
            key,
            login_key,
        })
    }

    pub fn public_key(&self) -> anyhow::Result<PublicKey> {
        read_public_key(&pub_path(&self.key))
    }

    /// Lines of the kit are those with this key, or with this host's
    /// marker comment (an older key of the same user and host).
    pub fn selector<'a>(&self, key: &'a PublicKey) -> Selector<'a> {
        Selector {
            key,
            marker: key
                .comment
                .starts_with("syncpipe:")
                .then_some(key.comment.as_str()),
        }
    }

    /// A login with a shell for the remote script: the kit's key when it
    /// already opens one, else whatever works (a password, `--login-key`).
    pub fn shell_login(&self, endpoint: &Endpoint, batch: bool) -> Login {
        if self.key.exists() && self.key_opens_shell(endpoint) {
            Login::KeyOnly(self.key.clone())
        } else {
            Login::AnyWay {
                key: self.login_key.clone(),
                batch,
            }
        }
    }

    /// True when the kit's key logs in without a prompt and runs commands
    /// (a restricted key runs its forced command instead).
    pub fn key_opens_shell(&self, endpoint: &Endpoint) -> bool {
        self.ssh
            .command(
                endpoint,
                &Login::KeyOnly(self.key.clone()),
                "echo SYNCPIPE-SHELL",
            )
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("SYNCPIPE-SHELL"))
    }
}

fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    if p.is_absolute() {
        Ok(p.to_path_buf())
    } else {
        Ok(std::env::current_dir()
            .context("reading the working directory")?
            .join(p))
    }
}

pub fn read_public_key(path: &Path) -> anyhow::Result<PublicKey> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    PublicKey::parse(&text).map_err(|e| coded(Code::Usage, format!("{}: {e}", path.display())))
}

/// `keysetup [user@]host`: everything, in order, each step idempotent.
pub fn run(cfg: &Setup) -> anyhow::Result<()> {
    let ctx = Ctx::new(&cfg.remote)?;
    ensure_ssh_dir(&ctx.local.ssh_dir())?;
    if ensure_key(&ctx.key, &ctx.local.key_comment())? {
        log_notice!("made a new key {}", ctx.key.display());
    }
    let public = ctx.public_key()?;
    let endpoint = ctx.ssh.resolve(&cfg.remote.destination)?;
    settle_host_key(&ctx, &endpoint, &cfg.trust)?;
    install(&ctx, &endpoint, &public, &cfg.restriction)?;
    prove(&ctx, &endpoint, &public, &cfg.restriction)?;
    if let Some(alias) = &cfg.alias {
        write_alias(&ctx, &endpoint, alias)?;
    }
    if let Some(mutual) = &cfg.mutual {
        set_up_way_back(&ctx, &endpoint, &cfg.restriction, mutual)?;
    }
    Ok(())
}

/// Records the host key on first contact (as `trust` allows), refuses a
/// changed or revoked one, checks a pinned fingerprint.
pub fn settle_host_key(ctx: &Ctx, endpoint: &Endpoint, trust: &Trust) -> anyhow::Result<()> {
    let offered_keys = keyscan(&endpoint.hostname, endpoint.port)?;
    let offered = offered_keys
        .iter()
        .map(|k| {
            Ok(Offered {
                key: k.clone(),
                fingerprint: fingerprint(&k.to_string())?,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let pattern = host_pattern(&endpoint.key_name, endpoint.port);
    let recorded = recorded_keys(endpoint, &pattern)?;
    if let Trust::Pin(fp) = trust {
        if !offered.iter().any(|o| &o.fingerprint == fp) {
            return Err(coded(
                Code::HostKey,
                choose_key(trust, &offered).unwrap_err(),
            ));
        }
    }
    match judge(&recorded, &offered_keys) {
        Verdict::Known => Ok(()),
        Verdict::Unknown => {
            let keys = choose_key(trust, &offered).map_err(|e| coded(Code::HostKey, e))?;
            let file = endpoint
                .user_known_hosts
                .first()
                .cloned()
                .unwrap_or_else(|| ctx.local.known_hosts());
            let lines: Vec<String> = keys.iter().map(|k| known_line(&pattern, k)).collect();
            add_lines(&file, &lines)?;
            for o in offered.iter().filter(|o| keys.contains(&o.key)) {
                log_notice!(
                    "recorded the host key of {pattern} in {}: {} {}",
                    file.display(),
                    o.key.key_type,
                    o.fingerprint
                );
            }
            Ok(())
        }
        Verdict::Changed { recorded } => {
            let old = fingerprint(&recorded.to_string())?;
            let new = offered
                .iter()
                .find(|o| o.key.key_type == recorded.key_type)
                .map(|o| o.fingerprint.to_string())
                .unwrap_or_default();
            Err(coded(
                Code::HostKey,
                format!(
                    "THE HOST KEY OF {pattern} HAS CHANGED: {} {old} is recorded, the server now offers {new}. \
                     Someone may be intercepting the connection, or the host was reinstalled. Check the new \
                     fingerprint on the host itself; if it is right, run: ssh-keygen -R '{pattern}' -f {}",
                    recorded.key_type,
                    endpoint
                        .user_known_hosts
                        .first()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default()
                ),
            ))
        }
        Verdict::Revoked { key } => Err(coded(
            Code::HostKey,
            format!(
                "the host key {} {} of {pattern} is marked @revoked; refusing to connect",
                key.key_type,
                fingerprint(&key.to_string())?
            ),
        )),
    }
}

/// Keys recorded for `pattern` in every file ssh would read.
pub fn recorded_keys(endpoint: &Endpoint, pattern: &str) -> anyhow::Result<Vec<Known>> {
    let mut recorded = Vec::new();
    for file in endpoint
        .user_known_hosts
        .iter()
        .chain(&endpoint.global_known_hosts)
    {
        recorded.extend(lookup_known(file, pattern)?);
    }
    Ok(recorded)
}

/// Appends lines to a local known_hosts-like file atomically, keeping its mode.
fn add_lines(file: &Path, lines: &[String]) -> anyhow::Result<()> {
    if let Some(dir) = file.parent() {
        ensure_ssh_dir(dir)?;
    }
    let old = read_own(file)?.unwrap_or_default();
    write_atomic(file, &append_lines(&old, lines), mode_or(file, 0o644), true)?;
    Ok(())
}

/// The file's mode, or `default` for a new file.
fn mode_or(path: &Path, default: u32) -> u32 {
    fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or(default)
}

/// Puts the kit's line into the remote authorized_keys (once), fixing modes.
pub fn install(
    ctx: &Ctx,
    endpoint: &Endpoint,
    public: &PublicKey,
    restriction: &Restriction,
) -> anyhow::Result<()> {
    let line = restriction.line(&public.to_line());
    let selector = ctx.selector(public);
    let login = ctx.shell_login(endpoint, false);
    let mut change = Change::Unchanged;
    let facts = remote::edit(&ctx.ssh, endpoint, &login, "authorized_keys", |facts| {
        let blockers = facts.blockers("authorized_keys");
        if !blockers.is_empty() {
            bail!("{}", blockers.join("; "));
        }
        match &restriction.only {
            Some(Only::Rsync { .. }) if !facts.rrsync => bail!(
                "the remote has no {}: install rsync there (Debian's package ships rrsync)",
                crate::keysetup::restrict::RRSYNC
            ),
            Some(Only::Pushd { .. }) if !facts.rrsync => bail!(
                "the remote has no {}: pushd's full syncs and large files go through it; \
                 install rsync there (Debian's package ships rrsync)",
                crate::keysetup::restrict::RRSYNC
            ),
            Some(Only::Bisync { .. }) if !facts.bisync => log_warn!(
                "bisync is not on the remote's PATH for non-interactive logins; the forced command needs it"
            ),
            _ => {}
        }
        let mut ak = AuthorizedKeys::parse(facts.content.as_deref().unwrap_or_default());
        change = ak.upsert(line.as_bytes(), &selector);
        Ok(match change {
            Change::Unchanged => Reply::Keep,
            _ => Reply::Write(ak.to_bytes()),
        })
    })?;
    let place = format!(
        "{}@{}:~/.ssh/authorized_keys",
        endpoint.user, endpoint.hostname
    );
    match change {
        Change::Added => log_notice!("added the key to {place}"),
        Change::Replaced => log_notice!("replaced the kit's line in {place}"),
        _ => log_notice!("the key is already in {place}"),
    }
    for problem in facts.problems("authorized_keys") {
        if !problem.contains("(keysetup does it)") {
            log_warn!("{problem}");
        }
    }
    Ok(())
}

/// Logs in with the kit's key alone, no prompt, and says which key worked.
pub fn prove(
    ctx: &Ctx,
    endpoint: &Endpoint,
    public: &PublicKey,
    restriction: &Restriction,
) -> anyhow::Result<()> {
    let out = ctx
        .ssh
        .command_with(endpoint, &Login::KeyOnly(ctx.key.clone()), &["-v"], "true")
        .stdin(Stdio::null())
        .output()
        .context("running ssh")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let (authenticated, key) = accepted_key(&stderr);
    if !authenticated || (restriction.only.is_none() && !out.status.success()) {
        let err = ssh_error("logging in with the new key to", endpoint, &out);
        return Err(err.context(format!(
            "the key was installed but does not log in; run: keysetup check {}",
            endpoint.destination
        )));
    }
    let key = key.unwrap_or_else(|| format!("{} {}", ctx.key.display(), public.key_type));
    match &restriction.only {
        None => log_notice!(
            "ssh {}@{} port {} logs in without a password, with key {key}",
            endpoint.user,
            endpoint.hostname,
            endpoint.port
        ),
        Some(only) => log_notice!(
            "the key {key} logs in to {}@{} port {} and may only run: {}",
            endpoint.user,
            endpoint.hostname,
            endpoint.port,
            only.command()
        ),
    }
    Ok(())
}

/// Writes the kit's `Host` block for `alias` into `~/.ssh/config`.
pub fn write_alias(ctx: &Ctx, endpoint: &Endpoint, alias: &str) -> anyhow::Result<()> {
    let block = HostBlock {
        alias: alias.to_string(),
        host_name: endpoint.hostname.clone(),
        port: (endpoint.port != 22).then_some(endpoint.port),
        user: Some(endpoint.user.clone()),
        identity_file: ctx.key.clone(),
    };
    let path = ctx.local.config();
    let old = read_own(&path)?.unwrap_or_default();
    let text = String::from_utf8(old)
        .map_err(|_| anyhow::anyhow!("{} is not UTF-8 text; edit it by hand", path.display()))?;
    let (new, edit) =
        sshconfig::upsert(&text, &block).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    write_atomic(&path, new.as_bytes(), mode_or(&path, 0o600), true)?;
    match edit {
        sshconfig::Edit::Unchanged => log_notice!("{} has the Host {alias} block already", path.display()),
        _ => log_notice!(
            "wrote Host {alias} to {}: `ssh {alias}` and `pushd {alias}:/dst` use this key and port",
            path.display()
        ),
    }
    Ok(())
}

/// `--mutual`: the remote gets its own kit key, this side authorizes it,
/// the remote records this host's key, and a login back is proven.
fn set_up_way_back(
    ctx: &Ctx,
    endpoint: &Endpoint,
    forward: &Restriction,
    mutual: &Mutual,
) -> anyhow::Result<()> {
    let login = if forward.only.is_none() {
        Login::KeyOnly(ctx.key.clone())
    } else {
        Login::AnyWay {
            key: ctx.login_key.clone(),
            batch: false,
        }
    };
    let remote_pub = remote::remote_keygen(&ctx.ssh, endpoint, &login)?;
    let remote_key = PublicKey::parse(&remote_pub)
        .map_err(|e| anyhow::anyhow!("the remote's key {remote_pub:?}: {e}"))?;
    authorize_key(&ctx.local, &remote_key, &mutual.restriction)?;

    let back = mutual
        .back
        .clone()
        .unwrap_or_else(|| format!("{}@{}", ctx.local.user, ctx.local.host));
    crate::keysetup::ssh::check_destination(&back)?;
    let back_host = back.rsplit_once('@').map_or(back.as_str(), |(_, h)| h);
    let pattern = host_pattern(back_host, mutual.back_port);
    let lines: Vec<String> = keyscan(back_host, mutual.back_port)?
        .iter()
        .map(|k| known_line(&pattern, k))
        .collect();
    remote::edit(&ctx.ssh, endpoint, &login, "known_hosts", |facts| {
        let old = facts.content.clone().unwrap_or_default();
        let text = String::from_utf8_lossy(&old);
        let missing: Vec<String> = lines
            .iter()
            .filter(|l| !text.lines().any(|t| t.trim() == l.as_str()))
            .cloned()
            .collect();
        Ok(if missing.is_empty() {
            Reply::Keep
        } else {
            Reply::Write(append_lines(&old, &missing))
        })
    })?;
    remote::remote_login(&ctx.ssh, endpoint, &login, &back, mutual.back_port)?;
    log_notice!(
        "mutual: {}@{} logs in back to {back} port {} with its key ({})",
        endpoint.user,
        endpoint.hostname,
        mutual.back_port,
        remote_key.comment
    );
    Ok(())
}

/// `keysetup authorize --key FILE`: this account accepts that key.
pub fn authorize(key_file: &Path, restriction: &Restriction) -> anyhow::Result<()> {
    let local = Local::from_env()?;
    let key = read_public_key(key_file)?;
    authorize_key(&local, &key, restriction)
}

/// Puts `key` into the local authorized_keys (atomically, with a backup)
/// and fixes the modes ssh insists on.
pub fn authorize_key(
    local: &Local,
    key: &PublicKey,
    restriction: &Restriction,
) -> anyhow::Result<()> {
    ensure_ssh_dir(&local.ssh_dir())?;
    let path = local.authorized_keys();
    let old = read_own(&path)?;
    let mut ak = AuthorizedKeys::parse(old.as_deref().unwrap_or_default());
    let selector = Selector {
        key,
        marker: key
            .comment
            .starts_with("syncpipe:")
            .then_some(key.comment.as_str()),
    };
    let change = ak.upsert(restriction.line(&key.to_line()).as_bytes(), &selector);
    write_atomic(&path, &ak.to_bytes(), 0o600, true)?;
    if fs::metadata(&path)?.permissions().mode() & 0o777 != 0o600 {
        set_mode(&path, 0o600)?;
    }
    let what = match change {
        Change::Added => "added",
        Change::Replaced => "replaced",
        _ => "already present:",
    };
    log_notice!(
        "{what} {} {} in {}",
        key.key_type,
        if key.comment.is_empty() {
            "(no comment)"
        } else {
            &key.comment
        },
        path.display()
    );
    Ok(())
}

/// `keysetup revoke [user@]host`: removes exactly the kit's line there.
pub fn revoke(remote: &Remote, alias: Option<&str>) -> anyhow::Result<()> {
    let ctx = Ctx::new(remote)?;
    let public = ctx.public_key()?;
    let endpoint = ctx.ssh.resolve(&remote.destination)?;
    let selector = ctx.selector(&public);
    let login = ctx.shell_login(&endpoint, false);
    let mut removed = Change::Unchanged;
    remote::edit(&ctx.ssh, &endpoint, &login, "authorized_keys", |facts| {
        let mut ak = AuthorizedKeys::parse(facts.content.as_deref().unwrap_or_default());
        removed = ak.remove(&selector);
        Ok(match removed {
            Change::Unchanged => Reply::Keep,
            _ => Reply::Write(ak.to_bytes()),
        })
    })?;
    match removed {
        Change::Removed(n) => log_notice!(
            "removed {n} line(s) of the kit from {}@{}:~/.ssh/authorized_keys",
            endpoint.user,
            endpoint.hostname
        ),
        _ => log_notice!(
            "{}@{}:~/.ssh/authorized_keys has no line of the kit",
            endpoint.user,
            endpoint.hostname
        ),
    }
    if let Some(alias) = alias {
        let path = ctx.local.config();
        if let Some(old) = read_own(&path)? {
            let text = String::from_utf8_lossy(&old);
            let (new, found) = sshconfig::remove(&text, alias)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            if found {
                write_atomic(&path, new.as_bytes(), mode_or(&path, 0o600), true)?;
                log_notice!("removed Host {alias} from {}", path.display());
            }
        }
    }
    Ok(())
}
