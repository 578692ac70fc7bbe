//! The one exit-code table every syncpipe binary uses (README and man pages
//! repeat it). Errors carry their code as a [`Coded`] cause, so deep library
//! code decides the code and `main` only reports it.

use std::fmt;

/// Exit codes. Numbers are part of the interface: never renumber.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Code {
    /// Finished, stopped by SIGTERM/SIGINT, or the reader closed our stdout.
    Ok = 0,
    /// An unexpected failure (I/O error, a child process that could not start).
    Failure = 1,
    /// Bad flags or arguments.
    Usage = 2,
    /// The root or source is missing, not a directory, or unreadable at start.
    NoSource = 3,
    /// The watched root was deleted, moved away or unmounted while running
    /// (batchd and pushd: their input ended with watchd's `end` record).
    SourceGone = 4,
    /// A kernel limit is too small (inotify watches or instances); the message
    /// names the setting, its value and what is needed.
    Limit = 5,
    /// An ssh login was refused (keysetup; pushd on a target that never
    /// synced, without `--insist`), or `keysetup check` found what blocks one.
    Auth = 6,
    /// A host key is unknown, changed, revoked or not the pinned one
    /// (keysetup; pushd as for `Auth`).
    HostKey = 7,
    /// No ssh server answers at that host and port; pushd: the host name
    /// is unknown (as for `Auth`).
    Unreachable = 8,
    /// bisync --exit-changes: changes were made and both replicas agree
    /// now (without the flag that is 0, like "nothing needed doing").
    Synced = 9,
    /// bisync: synced, and conflicts were kept as `NAME.conflict-…` copies
    /// for a person to look at.
    Conflicts = 10,
    /// bisync: some paths were skipped (changed during the run) or failed;
    /// a rerun picks them up.
    Incomplete = 11,
    /// bisync: a guard stopped the run before anything changed (a replica
    /// emptied, or more deletions than --max-delete allows); pushd: the
    /// input ended with deletions a guard holds.
    Refused = 12,
    /// bisync: (nearly) every file on one replica changed since the last
    /// sync (a restored backup, a touched tree, a clock jump); nothing was
    /// changed. `--force` goes ahead.
    MassChange = 13,
    /// batchd, pushd: the input ended without a stream header: the stage
    /// before failed (its own message says why, e.g. a missing source).
    NoStream = 14,
    /// syncpipe import-lsyncd: the configs were written, and some lsyncd
    /// options could not be carried over (the table says which and why).
    NotCarried = 15,
    /// relayd: another publisher is live on the JetStream stream, or wrote
    /// to it since this one started; nothing of this stream was stored after.
    Owned = 16,
    /// syncpipe status: a target is failing or holds deletions, or a sync's
    /// status file is missing or stale (its pushd is not running).
    Unhealthy = 17,
}

impl Code {
    /// Every code with its one-line meaning, for `--help` and the docs.
    pub const TABLE: &'static [(Code, &'static str)] = &[
        (
            Code::Ok,
            "done, stopped by SIGTERM/SIGINT, or the reader went away",
        ),
        (
            Code::Failure,
            "unexpected failure (I/O error, child process)",
        ),
        (Code::Usage, "bad flags or arguments"),
        (
            Code::NoSource,
            "root/source missing, not a directory or unreadable at start",
        ),
        (
            Code::SourceGone,
            "watched root deleted, moved or unmounted while running (batchd, pushd: stream ended so)",
        ),
        (
            Code::Limit,
            "kernel limit too small (fs.inotify.max_user_watches, ...)",
        ),
        (
            Code::Auth,
            "ssh login refused (pushd: at start), or keysetup check found what blocks one",
        ),
        (
            Code::HostKey,
            "host key unknown, changed, revoked or not the pinned one (pushd: at start)",
        ),
        (
            Code::Unreachable,
            "no ssh server answers at that host and port (pushd: unknown host name at start)",
        ),
        (
            Code::Synced,
            "bisync --exit-changes: changes made, replicas agree",
        ),
        (Code::Conflicts, "bisync: synced, conflicts kept as copies"),
        (
            Code::Incomplete,
            "bisync: some paths skipped or failed; run again",
        ),
        (
            Code::Refused,
            "a guard held deletions (pushd: at the end of input; bisync: the run, nothing changed)",
        ),
        (
            Code::MassChange,
            "bisync: (nearly) all files changed on one side; nothing changed (--force)",
        ),
        (
            Code::NoStream,
            "batchd, pushd: input ended without a stream (an earlier stage failed)",
        ),
        (
            Code::NotCarried,
            "import-lsyncd: some options not carried over, or --check differed",
        ),
        (
            Code::Owned,
            "relayd: another publisher owns the stream; refused",
        ),
        (
            Code::Unhealthy,
            "syncpipe status: a target failing or held, a replica's broker not answering, or a sync not running",
        ),
    ];

    /// The codes program `bin` can exit with; the whole table for a name
    /// it does not know.
    pub fn used_by(bin: &str) -> &'static [Code] {
        use Code::*;
        match bin {
            "watchd" => &[Ok, Failure, Usage, NoSource, SourceGone, Limit],
            "batchd" => &[Ok, Failure, Usage, SourceGone, NoStream],
            "pushd" => &[
                Ok,
                Failure,
                Usage,
                SourceGone,
                Auth,
                HostKey,
                Unreachable,
                Refused,
                NoStream,
            ],
            "relayd" => &[Ok, Failure, Usage, Owned],
            "keysetup" => &[Ok, Failure, Usage, Auth, HostKey, Unreachable],
            "syncpipe" => &[Ok, Failure, Usage, NotCarried, Unhealthy],
            "bisync" => &[
                Ok, Failure, Usage, NoSource, SourceGone, Limit, Synced, Conflicts, Incomplete,
                Refused, MassChange,
            ],
            _ => &[
                Ok,
                Failure,
                Usage,
                NoSource,
                SourceGone,
                Limit,
                Auth,
                HostKey,
                Unreachable,
                Synced,
                Conflicts,
                Incomplete,
                Refused,
                MassChange,
                NoStream,
                NotCarried,
                Owned,
                Unhealthy,
            ],
        }
    }

    /// The lines of the table that program `bin` uses, as text for the end
    /// of its `--help` (the README has the whole table).
    pub fn help_table(bin: &str) -> String {
        let used = Self::used_by(bin);
        let mut s = String::from("Exit codes:\n");
        for (code, what) in Self::TABLE.iter().filter(|(c, _)| used.contains(c)) {
            s.push_str(&format!("  {:>2}  {what}\n", *code as u8));
        }
        s
    }
}

/// An error that decides the exit code. Wrap it in `anyhow::Error`; context
/// added above it keeps the code.
#[derive(Debug)]
pub struct Coded {
    pub code: Code,
    pub message: String,
}

impl fmt::Display for Coded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Coded {}

/// An `anyhow::Error` that exits with `code`.
pub fn coded(code: Code, message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Coded {
        code,
        message: message.into(),
    })
}

/// The code an error asks for: the first [`Coded`] in its chain, else 1.
pub fn code_of(err: &anyhow::Error) -> Code {
    err.chain()
        .find_map(|cause| cause.downcast_ref::<Coded>().map(|c| c.code))
        .unwrap_or(Code::Failure)
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn code_survives_context() {
        let err = Err::<(), _>(coded(Code::Limit, "too few watches"))
            .context("watching /data")
            .unwrap_err();
        assert_eq!(code_of(&err), Code::Limit);
        assert_eq!(format!("{err:#}"), "watching /data: too few watches");
        assert_eq!(code_of(&anyhow::anyhow!("x")), Code::Failure);
    }

    #[test]
    fn each_help_lists_only_its_own_codes() {
        let batchd = Code::help_table("batchd");
        assert!(batchd.contains("bad flags"));
        assert!(!batchd.contains("bisync"), "{batchd}");
        assert!(!Code::help_table("watchd").contains("ssh"));
        assert!(Code::help_table("keysetup").contains("host key"));
        assert!(!Code::help_table("keysetup").contains("bisync"));
        assert!(Code::help_table("bisync").contains("conflicts"));
    }

    #[test]
    fn table_lists_every_code_once() {
        let codes: Vec<u8> = Code::TABLE.iter().map(|(c, _)| *c as u8).collect();
        assert_eq!(codes, (0..codes.len() as u8).collect::<Vec<_>>());
    }
}
