//! Exclude patterns with gitignore's rules, matched against paths relative to
//! the root, so `--exclude` means the same thing in watchd, pushd and bisync.
//!
//! - `name` (no slash) matches that name at any depth: `*.tmp`, `.git`.
//! - A pattern with a slash in it, or starting with `/`, is anchored at the
//!   root: `/build`, `logs/*.gz`.
//! - A trailing `/` matches directories only: `cache/`.
//! - `*` and `?` never cross `/`; `**` does (`a/**/b`, `logs/**`).
//! - `!pattern` re-includes what an earlier pattern excluded; the last matching
//!   pattern wins. As in git, nothing below an excluded directory can be
//!   re-included, because the directory is never looked into.
//! - In a file, blank lines and lines starting with `#` are skipped.

use std::path::Path;

use anyhow::Context;
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

#[derive(Debug, Clone, Copy)]
struct Rule {
    negated: bool,
    dir_only: bool,
}

/// A compiled list of exclude patterns.
#[derive(Debug, Clone)]
pub struct Excludes {
    set: GlobSet,
    rules: Vec<Rule>,
    patterns: Vec<String>,
}

impl Default for Excludes {
    fn default() -> Self {
        Excludes {
            set: GlobSet::empty(),
            rules: Vec::new(),
            patterns: Vec::new(),
        }
    }
}

impl Excludes {
    /// Compiles `patterns` (from flags) followed by the lines of each file.
    pub fn new(patterns: &[String], files: &[impl AsRef<Path>]) -> anyhow::Result<Self> {
        let mut all: Vec<String> = patterns.to_vec();
        for file in files {
            let file = file.as_ref();
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading exclude file {}", file.display()))?;
            all.extend(
                text.lines()
                    .map(|l| l.trim_end_matches('\r'))
                    .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
                    .map(str::to_string),
            );
        }
        Self::compile(all)
    }

    fn compile(patterns: Vec<String>) -> anyhow::Result<Self> {
        let mut builder = GlobSetBuilder::new();
        let mut rules = Vec::with_capacity(patterns.len());
        for pattern in &patterns {
            let (negated, body) = match pattern.strip_prefix('!') {
                Some(rest) => (true, rest),
                None => (false, pattern.as_str()),
            };
            let (dir_only, body) = match body.strip_suffix('/') {
                Some(rest) => (true, rest),
                None => (false, body),
            };
            anyhow::ensure!(
                !body.is_empty() && body != "/",
                "exclude pattern {pattern:?} is empty"
            );
            let anchored = body.contains('/');
            let body = body.strip_prefix('/').unwrap_or(body);
            let glob = if anchored {
                body.to_string()
            } else {
                format!("**/{body}")
            };
            let compiled = GlobBuilder::new(&glob)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .with_context(|| format!("bad exclude pattern {pattern:?}"))?;
            builder.add(compiled);
            rules.push(Rule { negated, dir_only });
        }
        let set = builder.build().context("compiling exclude patterns")?;
        Ok(Excludes {
            set,
            rules,
            patterns,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The patterns as given, for passing on to rsync or a remote side.
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    /// Whether `rel` (relative to the root, no leading `./`) is excluded.
    pub fn is_excluded(&self, rel: &Path, is_dir: bool) -> bool {
        if self.rules.is_empty() {
            return false;
        }
        let mut decision = false;
        // matches() lists every matching pattern in ascending order; the last
        // applicable one decides, as in gitignore.
        for index in self.set.matches(rel) {
            let rule = self.rules[index];
            if rule.dir_only && !is_dir {
                continue;
            }
            decision = !rule.negated;
        }
        decision
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;

    fn ex(patterns: &[&str]) -> Excludes {
        let patterns: Vec<String> = patterns.iter().map(|s| s.to_string()).collect();
        Excludes::new(&patterns, &[] as &[&Path]).unwrap()
    }

    fn file(e: &Excludes, p: &str) -> bool {
        e.is_excluded(Path::new(p), false)
    }

    fn dir(e: &Excludes, p: &str) -> bool {
        e.is_excluded(Path::new(p), true)
    }

    #[test]
    fn bare_names_match_at_any_depth() {
        let e = ex(&["*.tmp", ".git"]);
        assert!(file(&e, "a.tmp"));
        assert!(file(&e, "x/y/a.tmp"));
        assert!(!file(&e, "a.tmpx"));
        assert!(dir(&e, ".git"));
        assert!(dir(&e, "sub/.git"));
        assert!(!dir(&e, "sub/.github"));
    }

    #[test]
    fn slashes_anchor() {
        let e = ex(&["/build", "logs/*.gz"]);
        assert!(dir(&e, "build"));
        assert!(!dir(&e, "src/build"));
        assert!(file(&e, "logs/a.gz"));
        assert!(!file(&e, "logs/old/a.gz"));
        assert!(!file(&e, "x/logs/a.gz"));
    }

    #[test]
    fn trailing_slash_means_directories_only() {
        let e = ex(&["cache/"]);
        assert!(dir(&e, "cache"));
        assert!(dir(&e, "a/cache"));
        assert!(!file(&e, "cache"));
    }

    #[test]
    fn double_star_and_negation() {
        let e = ex(&["logs/**", "!logs/keep.log"]);
        assert!(file(&e, "logs/a/b.log"));
        assert!(!file(&e, "logs/keep.log"));
        let e = ex(&["*.log", "!important.log", "important.log"]);
        assert!(file(&e, "important.log"));
    }

    #[test]
    fn non_utf8_names() {
        let e = ex(&["*.tmp"]);
        let name = OsStr::from_bytes(b"\xff\xfe.tmp");
        assert!(e.is_excluded(Path::new(name), false));
    }

    #[test]
    fn reads_files_skipping_comments() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("ex");
        std::fs::write(&f, "# comment\n\n*.o\r\n/out/\n").unwrap();
        let e = Excludes::new(&[], &[&f]).unwrap();
        assert!(file(&e, "a/b.o"));
        assert!(dir(&e, "out"));
        assert_eq!(e.patterns(), ["*.o", "/out/"]);
    }

    #[test]
    fn bad_patterns_are_errors() {
        assert!(Excludes::new(&["a[".into()], &[] as &[&Path]).is_err());
        assert!(Excludes::new(&["/".into()], &[] as &[&Path]).is_err());
        assert!(Excludes::new(&[], &["/nonexistent/ex"]).is_err());
    }
}
