//! `pushd --dry-run`'s report: what one transfer would do to a target, path
//! by path ([`Preview`], gathered by [`crate::pushd::apply::Applier`] from
//! rsync's itemized dry runs and its own read-only checks), and the `would`
//! records and summary line it becomes.

use std::path::Path;

use crate::pushd::apply::Report;
use crate::pushd::rsync;
use crate::wire::path::WirePath;

/// One thing a dry run found the target would get.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Preview {
    /// `send`, `create`, `attrs`, `hardlink`, `delete` (see
    /// [`rsync::Item::op`]), `rename`, or `hold`: a deletion (or, when the
    /// source root changed, any change) a guard would refuse and hold.
    pub op: &'static str,
    pub path: WirePath,
    /// A rename's new name.
    pub to: Option<WirePath>,
    /// rsync's itemize code, when rsync said it.
    pub itemize: Option<String>,
}

impl Preview {
    pub(crate) fn of(op: &'static str, path: &WirePath) -> Preview {
        Preview {
            op,
            path: path.clone(),
            to: None,
            itemize: None,
        }
    }

    pub(crate) fn item(item: rsync::Item) -> Preview {
        Preview {
            op: item.op(),
            path: item.path,
            to: None,
            itemize: Some(item.code),
        }
    }
}

/// `--dry-run`: the `would` records of one transfer (see docs/protocol.md),
/// and a line on stderr saying what it adds up to.
pub fn would_records(
    report: &Report,
    target: &str,
    stream: &str,
) -> Vec<crate::wire::event::Record> {
    if report.would.is_empty() {
        return Vec::new();
    }
    let count = |op: &str| report.would.iter().filter(|w| w.op == op).count();
    {
        crate::log_notice!(
            "{target}: dry run, nothing changed: would send {} files ({} bytes), create {}, \
             delete {}, rename {}, update metadata of {}; a guard would hold {}",
            report.stats.transferred,
            report.stats.transferred_size,
            count("create"),
            count("delete"),
            count("rename"),
            count("attrs"),
            count("hold")
        );
    }
    report
        .would
        .iter()
        .filter_map(|w| {
            crate::wire::event::Would {
                target: target.to_string(),
                stream: stream.to_string(),
                op: w.op.to_string(),
                path: w.path.clone(),
                to: w.to.clone(),
                itemize: w.itemize.clone(),
            }
            .to_record()
            .map_err(|e| crate::log_error!("{target}: writing a would record: {e}"))
            .ok()
        })
        .collect()
}

/// Whether `p` is on a local target, looked up beneath its root without
/// following a symlink (a dry run's question; nothing is changed).
pub(crate) fn on_local_target(root: &Path, p: &WirePath) -> bool {
    let Ok(beneath) = crate::os::beneath::Root::open(root) else {
        return false;
    };
    matches!(
        beneath
            .parent(p)
            .and_then(|(dir, name)| crate::os::beneath::stat_at(&dir, &name)),
        Ok(Some(_))
    )
}
