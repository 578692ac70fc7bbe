//! The kernel's inotify limits, and counting what a tree would need of them.

use std::path::Path;

use crate::exclude::Excludes;

/// A number from /proc/sys, e.g. `fs/inotify/max_user_watches`.
pub fn read_sysctl(name: &str) -> Option<u64> {
    std::fs::read_to_string(Path::new("/proc/sys").join(name))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The number of inotify watches this account may hold, and which setting
/// decides it. Inside a user namespace (a container) the namespace's own
/// `user.max_inotify_watches` may be the smaller one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchLimit {
    pub value: Option<u64>,
    pub setting: &'static str,
}

impl WatchLimit {
    pub fn read() -> Self {
        let global = read_sysctl("fs/inotify/max_user_watches");
        let namespace = read_sysctl("user/max_inotify_watches");
        match (global, namespace) {
            (Some(g), Some(n)) if n < g => WatchLimit {
                value: Some(n),
                setting: "user.max_inotify_watches",
            },
            _ => WatchLimit {
                value: global,
                setting: "fs.inotify.max_user_watches",
            },
        }
    }

    pub fn describe(&self) -> String {
        match self.value {
            Some(v) => format!("{} is {v}", self.setting),
            None => format!("{} could not be read", self.setting),
        }
    }
}

/// Directories at and below `dir` that would need a watch, honouring the
/// excludes (relative to `root`). Unreadable parts count as what was seen.
pub fn count_dirs(dir: &Path, excludes: &Excludes, root: &Path) -> usize {
    let mut count = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        count += 1;
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let path = entry.path();
            let rel = path.strip_prefix(root).unwrap_or(&path);
            if !excludes.is_excluded(rel, true) {
                stack.push(path);
            }
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_real_limit() {
        assert!(WatchLimit::read().value.is_some_and(|n| n > 0));
        assert_eq!(read_sysctl("fs/inotify/no_such_setting"), None);
    }

    #[test]
    fn counts_directories_minus_excluded() {
        let t = tempfile::tempdir().unwrap();
        for d in ["a/b/c", "a/skip/x", "d"] {
            std::fs::create_dir_all(t.path().join(d)).unwrap();
        }
        std::fs::write(t.path().join("a/file"), b"").unwrap();
        let none = Excludes::default();
        assert_eq!(count_dirs(t.path(), &none, t.path()), 7);
        let ex = Excludes::new(&["skip/".into()], &[] as &[&Path]).unwrap();
        assert_eq!(count_dirs(t.path(), &ex, t.path()), 5);
    }
}
