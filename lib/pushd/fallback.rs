//! When pushd's in-process apply of a small batch (`--direct-max`) fails:
//! rsync applies the whole batch instead, the operator is told once per
//! cause what failed, where and what to do, and a cause that lasts turns
//! the in-process path off for that target — rather than paying a failure
//! and an rsync run on every batch, in silence.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use nix::errno::Errno;

use crate::pushd::direct::Failed;

/// Batches in a row that fail in-process with the same lasting cause
/// before the in-process path is turned off for their target.
pub(crate) const TURN_OFF_AFTER: u32 = 3;

/// A failure's cause: the step and the error number (the path varies from
/// batch to batch; the cause is what a warning is said once for).
type Cause = (&'static str, Option<i32>);

/// What one target's in-process path has met so far (pure: the caller
/// logs what it returns).
#[derive(Debug, Default)]
pub(crate) struct Memory {
    warned: HashSet<Cause>,
    /// The lasting cause of the last batches, and how many in a row.
    streak: Option<(Cause, u32)>,
    off: bool,
}

impl Memory {
    /// The in-process path is still worth trying.
    pub(crate) fn enabled(&self) -> bool {
        !self.off
    }

    /// A batch went through in-process: a streak of failures is over.
    pub(crate) fn succeeded(&mut self) {
        self.streak = None;
    }

    /// A batch failed in-process with `failed` (rsync applies it): the
    /// warnings to log, none when this cause was said already.
    pub(crate) fn failed(&mut self, target: &str, failed: &Failed) -> Vec<String> {
        let cause = (failed.doing, failed.error.raw_os_error());
        let mut say = Vec::new();
        let lasting = lasts(&failed.error);
        if self.warned.insert(cause) {
            let hint = if lasting {
                format!(
                    "if it lasts, pushd stops trying in-process after {TURN_OFF_AFTER} batches in a row \
                     (--direct-max 0 sends every batch through rsync from the start)"
                )
            } else {
                "said once per cause; a passing cause (a file changed meanwhile, a full disk) needs nothing"
                    .to_string()
            };
            say.push(format!(
                "{target}: applying a batch in-process failed ({failed}); rsync applies the whole batch \
                 instead, nothing is lost; {hint}"
            ));
        }
        self.streak = match self.streak {
            _ if !lasting => None,
            Some((c, n)) if c == cause => Some((c, n + 1)),
            _ => Some((cause, 1)),
        };
        if let Some((_, n)) = self.streak {
            if n >= TURN_OFF_AFTER && !self.off {
                self.off = true;
                say.push(format!(
                    "{target}: the in-process apply failed {n} batches in a row ({failed}): pushd stops \
                     trying it, every batch goes through rsync until pushd is restarted (fix the cause, \
                     or pass --direct-max 0 to say so from the start)"
                ));
            }
        }
        say
    }
}

/// An error that the next batch will meet again: a permission, a read-only
/// or unsupporting file system, a name too long. A file that vanished or
/// changed meanwhile, a full disk or an I/O error may pass.
fn lasts(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error().map(Errno::from_raw),
        Some(
            Errno::EPERM
                | Errno::EACCES
                | Errno::EROFS
                | Errno::EOPNOTSUPP
                | Errno::EINVAL
                | Errno::ENOSYS
                | Errno::ENAMETOOLONG
                | Errno::EXDEV
                | Errno::EMLINK
        )
    )
}

/// Every local target's [`Memory`], by its root: a worker's applier is made
/// anew for each transfer, its target's memory lasts as long as pushd.
static MEMORY: Mutex<Option<HashMap<PathBuf, Memory>>> = Mutex::new(None);

fn with<T>(root: &Path, f: impl FnOnce(&mut Memory) -> T) -> T {
    let mut all = MEMORY.lock().unwrap_or_else(PoisonError::into_inner);
    f(all
        .get_or_insert_with(HashMap::new)
        .entry(root.to_path_buf())
        .or_default())
}

/// Whether the target at `root` still gets batches in-process.
pub(crate) fn enabled(root: &Path) -> bool {
    with(root, |m| m.enabled())
}

pub(crate) fn succeeded(root: &Path) {
    with(root, Memory::succeeded)
}

/// Logs what the operator must know of an in-process failure on `target`.
pub(crate) fn failed(root: &Path, target: &str, failed: &Failed) {
    let say = with(root, |m| m.failed(target, failed));
    if say.is_empty() {
        crate::log_debug!("{target}: {failed}; applying the batch with rsync");
    }
    for line in say {
        crate::log_warn!("{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(doing: &'static str, errno: Errno) -> Failed {
        Failed {
            doing,
            path: PathBuf::from("/t/x"),
            error: errno.into(),
        }
    }

    #[test]
    fn warns_once_per_cause_and_stops_trying_a_cause_that_lasts() {
        let mut m = Memory::default();
        let eperm = failure("setting metadata of", Errno::EPERM);
        let said = m.failed("T", &eperm);
        assert_eq!(said.len(), 1, "{said:?}");
        assert!(said[0].contains("setting metadata of /t/x"), "{}", said[0]);
        assert!(said[0].contains("--direct-max 0"), "{}", said[0]);
        // The same cause again: nothing new to say, still tried.
        assert!(m.failed("T", &eperm).is_empty());
        assert!(m.enabled());
        // A passing cause is said once, breaks the streak, never turns off.
        let enospc = failure("copying to", Errno::ENOSPC);
        assert_eq!(m.failed("T", &enospc).len(), 1);
        for _ in 0..10 {
            assert!(m.failed("T", &enospc).is_empty());
        }
        assert!(m.enabled());
        // A success between failures breaks the streak too.
        m.failed("T", &eperm);
        m.failed("T", &eperm);
        m.succeeded();
        m.failed("T", &eperm);
        m.failed("T", &eperm);
        assert!(m.enabled());
        // TURN_OFF_AFTER in a row: off, and said once.
        let said = m.failed("T", &eperm);
        assert!(!m.enabled());
        assert_eq!(said.len(), 1, "{said:?}");
        assert!(said[0].contains("stops trying"), "{}", said[0]);
        assert!(m.failed("T", &eperm).is_empty());
    }

    #[test]
    fn a_different_lasting_cause_starts_its_own_streak() {
        let mut m = Memory::default();
        let a = failure("setting metadata of", Errno::EPERM);
        let b = failure("creating", Errno::EROFS);
        for _ in 0..TURN_OFF_AFTER {
            m.failed("T", &a);
            m.failed("T", &b);
        }
        assert!(m.enabled());
        for _ in 0..TURN_OFF_AFTER {
            m.failed("T", &b);
        }
        assert!(!m.enabled());
    }

    #[test]
    fn each_target_has_its_own_memory() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let eperm = failure("creating", Errno::EPERM);
        for _ in 0..TURN_OFF_AFTER {
            failed(&a, "a", &eperm);
        }
        assert!(!enabled(&a));
        assert!(enabled(&b));
    }
}
