//! `keysetup`: ssh keys and authorized_keys for syncpipe without hand edits.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args as ClapArgs, Parser, Subcommand};
use syncpipe::cli::exit::{coded, Code};
use syncpipe::cli::{self, Verbosity};
use syncpipe::keysetup::check::{self, Check};
use syncpipe::keysetup::knownhosts::{Fingerprint, Trust};
use syncpipe::keysetup::restrict::{parse_from, Only, Restriction};
use syncpipe::keysetup::sshconfig::check_alias;
use syncpipe::keysetup::{
    self,
    setup::{self, Mutual, Remote, Setup},
};
use syncpipe::ssh::SshArgs;

/// Set up ssh keys for syncing: make a key, install it on the remote, prove a login
///
/// Makes ~/.ssh/id_syncpipe_ed25519 if missing (never overwrites), records the
/// host key (--accept-new, or pinned with --host-key), installs the public key
/// in the remote ~/.ssh/authorized_keys with one login (password or a key that
/// works today), fixes modes, and proves a login without a password. Running it
/// again changes nothing.
///
/// $ keysetup --accept-new backup@nas --alias nas
///
/// $ keysetup --host-key SHA256:… --only rsync-wo:/srv/backup backup@nas
///
/// $ keysetup check nas
#[derive(Parser, Debug)]
#[command(
    name = "keysetup",
    version,
    args_conflicts_with_subcommands = true,
    after_help = cli::exit_codes_help("keysetup")
)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    setup: SetupArgs,
    #[command(flatten)]
    verbosity: Verbosity,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Accept a public key in this account's authorized_keys (run on the target)
    Authorize {
        /// The public key file (an id_*.pub)
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Remove exactly the kit's line from the remote authorized_keys
    Revoke {
        #[command(flatten)]
        remote: RemoteArgs,
        /// Also remove the Host block NAME from ~/.ssh/config
        #[arg(long, value_name = "NAME")]
        alias: Option<String>,
    },
    /// Say what blocks a login without a password, one line per fault, with the fix
    Check {
        #[command(flatten)]
        remote: RemoteArgs,
    },
}

#[derive(ClapArgs, Debug)]
// The shared ssh flags, with keysetup's own word on which key --identity is.
#[command(mut_arg("identity", |a| a.help("The kit's key [default: ~/.ssh/id_syncpipe_ed25519]")))]
struct RemoteArgs {
    /// Where to log in: [user@]host or a Host alias of ~/.ssh/config
    #[arg(value_name = "[USER@]HOST")]
    destination: Option<String>,
    #[command(flatten)]
    ssh: SshArgs,
    /// A private key that logs in today, to install or inspect with
    #[arg(long, value_name = "FILE", help_heading = "ssh")]
    login_key: Option<PathBuf>,
}

impl RemoteArgs {
    fn into_remote(self) -> anyhow::Result<Remote> {
        let destination = self.destination.ok_or_else(|| {
            coded(
                Code::Usage,
                "name the remote: keysetup [USER@]HOST (see --help)",
            )
        })?;
        Ok(Remote {
            destination,
            port: self.ssh.port,
            ssh_options: self.ssh.ssh_opt,
            identity: self.ssh.identity,
            login_key: self.login_key,
        })
    }
}

#[derive(ClapArgs, Debug)]
struct LimitArgs {
    /// Allow only rsync:/DIR, rsync-wo:/DIR (push only), rsync-ro:/DIR, bisync:/DIR or pushd:/DIR (pushd's agent and rsync)
    #[arg(long, value_name = "WHAT:/DIR", value_parser = Only::parse, help_heading = "Restrictions")]
    only: Option<Only>,
    /// Accept the key only from these addresses (from="…": CIDR, hosts, !negated)
    #[arg(long, value_name = "PATTERNS", value_parser = parse_from, help_heading = "Restrictions")]
    from: Option<String>,
}

impl LimitArgs {
    fn restriction(self) -> Restriction {
        Restriction {
            only: self.only,
            from: self.from,
        }
    }
}

#[derive(ClapArgs, Debug)]
struct SetupArgs {
    #[command(flatten)]
    remote: RemoteArgs,
    #[command(flatten)]
    limits: LimitArgs,

    /// Record the host key on first contact (trust on first use)
    #[arg(long, conflicts_with = "host_key", help_heading = "Host key")]
    accept_new: bool,
    /// Record the host key only if it has this fingerprint (ssh-keygen -lf on the host)
    #[arg(long, value_name = "SHA256:…", value_parser = Fingerprint::parse, help_heading = "Host key")]
    host_key: Option<Fingerprint>,

    /// Write a Host NAME block to ~/.ssh/config (host, port, user, this key)
    #[arg(long, value_name = "NAME")]
    alias: Option<String>,

    /// Also let the remote log in here with its own key (for two-way sync)
    #[arg(long, help_heading = "Both ways")]
    mutual: bool,
    /// How the remote reaches this machine [default: USER@HOSTNAME]
    #[arg(
        long,
        value_name = "USER@HOST",
        requires = "mutual",
        help_heading = "Both ways"
    )]
    back: Option<String>,
    /// ssh port of this machine, as the remote reaches it
    #[arg(
        long,
        value_name = "PORT",
        default_value_t = 22,
        requires = "mutual",
        help_heading = "Both ways"
    )]
    back_port: u16,
    /// Restrict the remote's key here (same forms as --only)
    #[arg(long, value_name = "WHAT:/DIR", value_parser = Only::parse, requires = "mutual", help_heading = "Both ways")]
    back_only: Option<Only>,
}

impl SetupArgs {
    fn into_config(self) -> anyhow::Result<Setup> {
        if let Some(alias) = &self.alias {
            check_alias(alias).map_err(|e| coded(Code::Usage, e))?;
        }
        let trust = match (self.accept_new, self.host_key) {
            (_, Some(fp)) => Trust::Pin(fp),
            (true, None) => Trust::AcceptNew,
            (false, None) => Trust::Strict,
        };
        let mutual = self.mutual.then_some(Mutual {
            back: self.back,
            back_port: self.back_port,
            restriction: Restriction {
                only: self.back_only,
                from: None,
            },
        });
        Ok(Setup {
            remote: self.remote.into_remote()?,
            restriction: self.limits.restriction(),
            trust,
            alias: self.alias,
            mutual,
        })
    }
}

fn main() -> ExitCode {
    let args: Args = cli::parse("keysetup");
    cli::run("keysetup", args.verbosity, || match args.command {
        None => keysetup::run(&args.setup.into_config()?),
        Some(Command::Authorize { key, limits }) => setup::authorize(&key, &limits.restriction()),
        Some(Command::Revoke { remote, alias }) => {
            if let Some(alias) = &alias {
                check_alias(alias).map_err(|e| coded(Code::Usage, e))?;
            }
            setup::revoke(&remote.into_remote()?, alias.as_deref())
        }
        Some(Command::Check { remote }) => check::check(&Check {
            remote: remote.into_remote()?,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn verify_cli() {
        Args::command().debug_assert();
    }

    #[test]
    fn parses_the_documented_forms() {
        let a = Args::try_parse_from([
            "keysetup",
            "--accept-new",
            "-p",
            "2222",
            "--only",
            "rsync-wo:/srv",
            "bob@nas",
        ])
        .unwrap();
        assert!(a.command.is_none());
        let cfg = a.setup.into_config().unwrap();
        assert_eq!(cfg.trust, Trust::AcceptNew);
        assert_eq!(cfg.remote.port, Some(2222));
        assert!(
            Args::try_parse_from(["keysetup", "--accept-new", "--host-key", "SHA256:x", "h"])
                .is_err()
        );
        let c = Args::try_parse_from(["keysetup", "check", "-p", "2", "nas"]).unwrap();
        assert!(matches!(c.command, Some(Command::Check { .. })));
        let r = Args::try_parse_from([
            "keysetup",
            "authorize",
            "--key",
            "k.pub",
            "--only",
            "bisync:/x",
        ])
        .unwrap();
        assert!(matches!(r.command, Some(Command::Authorize { .. })));
        assert!(Args::try_parse_from(["keysetup", "--back", "a@b", "h"]).is_err());
    }
}
