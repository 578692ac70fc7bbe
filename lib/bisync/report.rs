//! What bisync tells: the plan and each step's result, as JSON-lines records
//! on stdout (`--json`, documented in docs/protocol.md), as lines for a
//! person (`--dry-run`), or as log lines on stderr.

use std::io::Write;

use serde::Serialize;

use super::entry::Side;
use super::exec::Status;
use super::planner::{Action, Conflict, Op};
use crate::wire::path::WirePath;

/// How a run ended; each has its own exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Nothing needed doing.
    InSync,
    /// Changes were made; both replicas agree now.
    Synced,
    /// Synced, and conflicts were kept as copies for a person to look at.
    Conflicts,
    /// Some paths were skipped (changed during the run) or failed: rerun.
    Incomplete,
    /// A guard stopped the run before anything changed.
    Refused,
}

impl Outcome {
    pub fn code(self) -> crate::cli::exit::Code {
        use crate::cli::exit::Code;
        match self {
            Outcome::InSync => Code::Ok,
            Outcome::Synced => Code::Synced,
            Outcome::Conflicts => Code::Conflicts,
            Outcome::Incomplete => Code::Incomplete,
            Outcome::Refused => Code::Refused,
        }
    }
}

#[derive(Serialize)]
struct ActionRecord<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    side: Side,
    op: &'static str,
    path: &'a WirePath,
    #[serde(skip_serializing_if = "Option::is_none")]
    to: Option<&'a WirePath>,
    /// For copies: the side the data comes from.
    #[serde(skip_serializing_if = "Option::is_none")]
    from: Option<Side>,
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
}

#[derive(Serialize)]
struct ConflictRecord<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(flatten)]
    conflict: &'a Conflict,
}

/// Totals for the closing record and line.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    pub status: Option<Outcome>,
    pub first_sync: bool,
    pub dry_run: bool,
    pub actions: u64,
    pub copied: u64,
    pub bytes: u64,
    pub deleted: u64,
    pub renamed: u64,
    pub conflicts: u64,
    pub skipped: u64,
    pub failed: u64,
    pub duration_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

pub struct Reporter<W: Write> {
    out: W,
    json: bool,
    dry_run: bool,
}

fn to_of(op: &Op) -> Option<&WirePath> {
    match op {
        Op::Rename { to, .. } | Op::ConflictRename { to, .. } => Some(to),
        _ => None,
    }
}

/// A path for a person: lossy, one line (newlines shown as `\n`).
fn shown(path: &WirePath) -> String {
    path.to_string().replace('\n', "\\n")
}

impl<W: Write> Reporter<W> {
    pub fn new(out: W, json: bool, dry_run: bool) -> Self {
        Reporter { out, json, dry_run }
    }

    fn record(&mut self, value: &impl Serialize) -> anyhow::Result<()> {
        serde_json::to_writer(&mut self.out, value)?;
        self.out.write_all(b"\n")?;
        self.out.flush()?;
        Ok(())
    }

    pub fn conflict(&mut self, c: &Conflict) -> anyhow::Result<()> {
        if self.json {
            return self.record(&ConflictRecord {
                kind: "bisync_conflict",
                conflict: c,
            });
        }
        let what = match &c.copy {
            Some(copy) => format!(
                "conflict: {}: kept {}'s version, the other one is now {}",
                shown(&c.path),
                c.winner,
                shown(copy)
            ),
            None => format!(
                "conflict: {}: {}'s version replaced the other (--prefer)",
                shown(&c.path),
                c.winner
            ),
        };
        if self.dry_run {
            writeln!(self.out, "{what}")?;
            Ok(())
        } else {
            crate::log_notice!("{what}");
            Ok(())
        }
    }

    /// One step: planned (`status` `None`) or ended.
    pub fn action(&mut self, action: &Action, status: Option<&Status>) -> anyhow::Result<()> {
        let (from, size) = match &action.op {
            Op::Copy { src, .. } => (Some(action.side.other()), Some(src.size)),
            _ => (None, None),
        };
        if self.json {
            return self.record(&ActionRecord {
                kind: "bisync_action",
                side: action.side,
                op: action.op.name(),
                path: &action.path,
                to: to_of(&action.op),
                from,
                size,
                status: status.map_or("planned", Status::word),
                reason: status.and_then(Status::reason),
            });
        }
        let line = match (&action.op, to_of(&action.op)) {
            (Op::Copy { .. }, _) => format!(
                "copy      {} -> {}  {}",
                action.side.other(),
                action.side,
                shown(&action.path)
            ),
            (_, Some(to)) => format!(
                "{:<9} on {}   {} -> {}",
                action.op.name(),
                action.side,
                shown(&action.path),
                shown(to)
            ),
            _ => format!(
                "{:<9} on {}   {}",
                action.op.name(),
                action.side,
                shown(&action.path)
            ),
        };
        match status {
            None if self.dry_run => writeln!(self.out, "{line}")?,
            None => {}
            Some(Status::Done) => crate::log_info!("{line}"),
            Some(s) => crate::log_warn!("{} {line}: {}", s.word(), s.reason().unwrap_or_default()),
        }
        Ok(())
    }

    pub fn summary(&mut self, s: &Summary) -> anyhow::Result<()> {
        if self.json {
            #[derive(Serialize)]
            struct Rec<'a> {
                #[serde(rename = "type")]
                kind: &'static str,
                #[serde(flatten)]
                s: &'a Summary,
            }
            return self.record(&Rec {
                kind: "bisync_summary",
                s,
            });
        }
        let status = match s.status {
            Some(Outcome::InSync) => "in sync",
            Some(Outcome::Synced) => "synced",
            Some(Outcome::Conflicts) => "synced with conflicts",
            Some(Outcome::Incomplete) => "incomplete",
            Some(Outcome::Refused) | None => "refused",
        };
        let line = format!(
            "{}{status}: {} copied ({} bytes), {} deleted, {} renamed, {} conflicts, {} skipped, \
             {} failed{} in {} ms",
            if s.dry_run { "dry run, would be " } else { "" },
            s.copied,
            s.bytes,
            s.deleted,
            s.renamed,
            s.conflicts,
            s.skipped,
            s.failed,
            if s.first_sync { " (first sync)" } else { "" },
            s.duration_ms
        );
        if s.dry_run {
            writeln!(self.out, "{line}")?;
        } else {
            crate::log_notice!("{line}");
        }
        Ok(())
    }
}
