//! The man page of each binary (`BIN --print-man`): clap_mangen's title,
//! name, description and options, with a synopsis that keeps option values
//! and the sections a man page reader looks for (EXIT STATUS, SIGNALS,
//! FILES, ENVIRONMENT, SEE ALSO) written here once.

use std::io::{self, Write};

use crate::cli::exit::Code;

/// Renders `cmd`'s page as program `bin`.
pub fn render(cmd: clap::Command, bin: &'static str, out: &mut dyn Write) -> io::Result<()> {
    // The exit table of `--help` (after_help) becomes EXIT STATUS below,
    // not clap_mangen's "EXTRA".
    let cmd = cmd.name(bin).after_help("").after_long_help("");
    let man = clap_mangen::Man::new(cmd.clone());
    man.render_title(out)?;
    man.render_name_section(out)?;
    synopsis(&cmd, bin, out)?;
    man.render_description_section(out)?;
    man.render_options_section(out)?;
    subcommands(&cmd, bin, out)?;
    let s = sections(bin);
    writeln!(out, ".SH \"EXIT STATUS\"")?;
    for code in Code::used_by(bin) {
        let what = Code::TABLE
            .iter()
            .find(|(c, _)| c == code)
            .map_or("", |(_, w)| w);
        writeln!(out, ".TP\n.B {}\n{}", *code as u8, esc(what))?;
    }
    for (title, body) in [
        ("SIGNALS", s.signals),
        ("FILES", s.files),
        ("ENVIRONMENT", s.environment),
        ("SEE ALSO", s.see_also),
    ] {
        writeln!(out, ".SH \"{title}\"")?;
        for para in body.split("\n\n") {
            match para.split_once('\t') {
                Some((tag, text)) => writeln!(out, ".TP\n.B {}\n{}", esc(tag), esc(text))?,
                None => writeln!(out, ".PP\n{}", esc(para))?,
            }
        }
    }
    man.render_version_section(out)
}

/// Escapes text for roff: backslashes, dashes, and a leading dot or quote.
fn esc(text: &str) -> String {
    let s = text.replace('\\', "\\\\").replace('-', "\\-");
    if s.starts_with('.') || s.starts_with('\'') {
        format!("\\&{s}")
    } else {
        s
    }
}

/// `bin [-d|--delay DURATION] … TARGET…`: every visible option with its
/// value name, then the positionals.
fn synopsis(cmd: &clap::Command, bin: &str, out: &mut dyn Write) -> io::Result<()> {
    let mut parts = vec![format!("\\fB{bin}\\fR")];
    for arg in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
        let values: Vec<String> = arg
            .get_value_names()
            .map(|v| v.iter().map(|n| format!(" \\fI{}\\fR", esc(n))).collect())
            .unwrap_or_default();
        let takes = arg.get_action().takes_values();
        if arg.is_positional() {
            let name = arg
                .get_value_names()
                .and_then(|v| v.first().map(|n| n.to_string()))
                .unwrap_or_else(|| arg.get_id().to_string().to_uppercase());
            let many = matches!(arg.get_num_args(), Some(r) if r.max_values() > 1);
            let dots = if many { "..." } else { "" };
            parts.push(if arg.is_required_set() {
                format!("\\fI{}\\fR{dots}", esc(&name))
            } else {
                format!("[\\fI{}\\fR]{dots}", esc(&name))
            });
            continue;
        }
        let mut flags = Vec::new();
        if let Some(s) = arg.get_short() {
            flags.push(format!("\\fB\\-{s}\\fR"));
        }
        if let Some(l) = arg.get_long() {
            flags.push(format!("\\fB\\-\\-{}\\fR", esc(l)));
        }
        let value = if takes {
            values.concat()
        } else {
            String::new()
        };
        parts.push(format!("[{}{value}]", flags.join("|")));
    }
    if cmd.has_subcommands() {
        parts.push("[\\fICOMMAND\\fR]".into());
    }
    writeln!(out, ".SH SYNOPSIS\n{}", parts.join(" "))
}

/// Subcommands as `bin NAME`, pointing at `bin NAME --help` (there are no
/// separate pages for them).
fn subcommands(cmd: &clap::Command, bin: &str, out: &mut dyn Write) -> io::Result<()> {
    let subs: Vec<_> = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
        .collect();
    if subs.is_empty() {
        return Ok(());
    }
    writeln!(out, ".SH COMMANDS")?;
    for sub in subs {
        let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
        writeln!(
            out,
            ".TP\n.B {bin} {}\n{} (see \\fB{bin} {} \\-\\-help\\fR)",
            esc(sub.get_name()),
            esc(&about),
            esc(sub.get_name())
        )?;
    }
    Ok(())
}

struct Sections {
    signals: &'static str,
    files: &'static str,
    environment: &'static str,
    see_also: &'static str,
}

const LOG_ENV: &str =
    "JOURNAL_STREAM\tWhen it names stderr, log lines carry a <N> priority prefix for the journal.";
const LOG_FILE: &str = "--log-file FILE\tThe log lines are appended there too, each after its time; a rotated FILE (moved away by logrotate) is noticed and created again, no signal needed. LOG_FILE= in the config, below /var/log/syncpipe/NAME/ for the units.";
const NOTIFY_ENV: &str =
    "NOTIFY_SOCKET\tsystemd's notification socket: READY=1 once running, STATUS= lines after.";

/// The per-binary text of the hand-written sections; paragraphs are split
/// on blank lines, and `TAG\ttext` becomes a tagged paragraph.
fn sections(bin: &str) -> Sections {
    let see = "watchd(1), batchd(1), pushd(1), bisync(1), keysetup(1), rsync(1), ssh(1), systemd.service(5); README.md and docs/protocol.md in the source.";
    let conf = "/etc/syncpipe/NAME.conf\tThe configuration of instance NAME for the systemd units (keys documented in example.conf.sample next to it).";
    match bin {
        "watchd" => Sections {
            signals: "SIGTERM, SIGINT\tWrite an end record and exit 0.\n\nSIGHUP\tRebuild the watches and write a rescan of the root (systemctl reload).\n\nSIGUSR1\tLog the status summary (with --wait while waiting: what it waits for).",
            files: leak(format!("{conf}\n\nwatchd@.service, watchd@.socket\tThe units that run watchd for an instance (in lib/systemd/system under the prefix).\n\n{LOG_FILE}")),
            environment: leak(format!("{NOTIFY_ENV}\n\nLISTEN_FDS, LISTEN_FDNAMES\tA socket handed over by systemd for --listen.\n\n{LOG_ENV}")),
            see_also: see,
        },
        "batchd" => Sections {
            signals: "SIGTERM, SIGINT, SIGHUP\tWrite the pending batch, then exit 0.\n\nSIGUSR1\tLog the status summary, write the pending batch now and go on.",
            files: leak(format!("{conf}\n\nbatchd@.service\tThe unit that runs batchd for an instance.\n\n{LOG_FILE}")),
            environment: leak(format!("{NOTIFY_ENV}\n\n{LOG_ENV}")),
            see_also: see,
        },
        "pushd" => Sections {
            signals: "SIGTERM, SIGINT\tStop once the transfers in progress end, keeping --state right; exit 0.\n\nSIGUSR2\tRelease the deletions the guards hold (the source was checked).\n\nSIGUSR1\tLog every target's status summary (the STATUS= text).\n\nSIGHUP\tIgnored (logged with -v).",
            files: leak(format!("{conf}\n\nsyncpipe@.service\tThe unit that runs pushd for an instance; its state is /var/lib/syncpipe/NAME/pushd.state. USER= in the config runs the instance's three units as that user (lib/systemd/system-generators/syncpipe-generator).\n\n--state FILE\tWhere pushd records the stream and seq it applied, to resume after a restart.\n\n/etc/bash_completion.d/syncpipe-pushd, /etc/profile.d/syncpipe-pushd.sh, share/syncpipe/pushd-function.sh\tThe shell function that makes `... | pushd TARGET` run this program at an interactive bash or zsh prompt instead of the builtin.\n\n{LOG_FILE}")),
            environment: leak(format!("{NOTIFY_ENV}\n\nSSH_AUTH_SOCK\tHanded to ssh for ssh targets.\n\nPATH\tWhere rsync and ssh are found; --rsync-binary (RSYNC_BINARY= in the config) names another local rsync.\n\n{LOG_ENV}")),
            see_also: see,
        },
        "bisync" => Sections {
            signals: "SIGTERM, SIGINT\tStop after the step in progress; the next run picks up the rest.\n\nSIGHUP\tWith --watch: rescan both replicas in full (systemctl reload).\n\nSIGUSR1\tWith --watch: log the status summary and the last run's outcome (after a run in progress ends).",
            files: leak(format!("$XDG_STATE_HOME/syncpipe/bisync/\tThe archive and lock of each replica pair (default ~/.local/state/syncpipe/bisync/; --state-dir).\n\n{conf}\n\nbisync@.service, bisync@.timer, bisync-watch@.service\tThe units that run bisync for an instance.\n\n{LOG_FILE}")),
            environment: leak(format!("BISYNC_STATE_DIR\tThe same as --state-dir.\n\nXDG_STATE_HOME, HOME\tWhere the archive lives by default.\n\n{NOTIFY_ENV}\n\n{LOG_ENV}")),
            see_also: see,
        },
        _ => Sections {
            signals: "SIGTERM, SIGINT\tThe default: keysetup stops at once; files it writes are replaced atomically, never left half-written.",
            files: "~/.ssh/id_syncpipe_ed25519, ~/.ssh/id_syncpipe_ed25519.pub\tThe key keysetup makes or uses.\n\n~/.ssh/known_hosts\tWhere the target's pinned host key goes.\n\n~/.ssh/config\tThe alias block keysetup writes and updates in place.\n\n~/.ssh/authorized_keys (on the target)\tThe kit's line, restricted with a forced command when --only is given.",
            environment: leak(format!("HOME\tWhere ~/.ssh is.\n\nSSH_AUTH_SOCK\tHanded to ssh.\n\n{LOG_ENV}")),
            see_also: "ssh(1), ssh-keygen(1), sshd(8), authorized_keys in sshd(8), rrsync(1), pushd(1), bisync(1); docs/keysetup.md in the source.",
        },
    }
}

/// Section text is built once per process that prints a page, then exits.
fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}
