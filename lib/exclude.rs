//! The kit's one exclude syntax (gitignore's rules, a checked subset),
//! matched against paths relative to the root: `--exclude`,
//! `--exclude-from` and `--excludes` mean the same in watchd, pushd and
//! bisync, and pushd hands rsync the same rules translated into filter rules.
//!
//! Supported, and nothing else (anything else is an error naming the flag or
//! the file and line, never silently a different rule):
//! - `name` (no slash) matches that name at any depth: `*.tmp`, `.git`.
//! - A pattern with a slash in it, or starting with `/`, is anchored at the
//!   root: `/build`, `logs/*.gz`.
//! - A trailing `/` matches directories only: `cache/`. An excluded
//!   directory takes everything below it.
//! - `*` and `?` never cross `/`; `[abc]`, `[a-z]`, `[!a-z]` match one
//!   character other than `/`.
//! - `**` as a whole path component crosses directories: `**/x` (x at any
//!   depth), `logs/**` (everything below logs), `a/**/b` (b at any depth
//!   below a, `a/b` included).
//! - `!pattern` re-includes what an earlier pattern excluded; the last matching
//!   pattern wins. As in git, nothing below an excluded directory can be
//!   re-included, because the directory is never looked into.
//! - In a file, blank lines and lines starting with `#` are skipped.
//!
//! Refused: rsync and lsyncd rule syntax (`- *.bak`, `+ x`, `dir/***`, a lone
//! `!`), `**` inside a component (`a**`), `{a,b}`, backslash escapes, POSIX
//! classes (`[[:alpha:]]`), `[^..]`, `/` or a leading `]` in a class, control
//! characters and leading or trailing spaces.

use std::path::Path;

use anyhow::Context;
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

#[derive(Debug, Clone)]
struct Rule {
    negated: bool,
    dir_only: bool,
    /// The pattern as rsync needs it, without `!`, trailing `/` and the
    /// zero-directory variants of `**` (see [`Excludes::rsync_filters`]).
    rsync: String,
}

/// A compiled list of exclude patterns.
#[derive(Debug, Clone, Default)]
pub struct Excludes {
    set: Option<GlobSet>,
    rules: Vec<Rule>,
    patterns: Vec<String>,
}

/// Why a pattern is not in the kit's syntax; `None` when it is.
pub fn unsupported(pattern: &str) -> Option<String> {
    if pattern.chars().any(char::is_control) {
        return Some("control characters (a newline, a tab) are not allowed".into());
    }
    if pattern != pattern.trim() {
        return Some("leading or trailing spaces (write a space inside `[ ]`)".into());
    }
    let bytes = pattern.as_bytes();
    let rsync_rule = match bytes {
        [b'-' | b'+' | b'.' | b':', rest @ ..] => {
            let modifiers = rest
                .iter()
                .take_while(|b| b"/!Csrpxnew,".contains(b))
                .count();
            matches!(rest.get(modifiers), Some(b' ' | b'_'))
        }
        [b'P' | b'H' | b'S' | b'R', b' ', ..] => true,
        _ => false,
    };
    if rsync_rule {
        return Some(
            "this is an rsync/lsyncd filter rule, not an exclude pattern: write the pattern \
             alone (`*.bak`, not `- *.bak`), `!pattern` to re-include"
                .into(),
        );
    }
    let (negated, body) = match pattern.strip_prefix('!') {
        Some(rest) => (true, rest),
        None => (false, pattern),
    };
    let body = body.strip_suffix('/').unwrap_or(body);
    if body.is_empty() || body == "/" {
        return Some(if negated {
            "a lone `!` (rsync's list reset) is not supported".into()
        } else {
            "empty pattern".into()
        });
    }
    if body.contains("***") {
        return Some(
            "`***` is rsync syntax: `dir/` excludes a directory with everything in it".into(),
        );
    }
    if body.contains("//") {
        return Some("empty path component (`//`)".into());
    }
    for component in body.trim_start_matches('/').split('/') {
        if component.contains("**") && component != "**" {
            return Some("`**` must be a whole path component (`**/x`, `x/**`, `a/**/b`)".into());
        }
        if matches!(component, "." | "..") {
            return Some("`.` and `..` components never match".into());
        }
    }
    if body.contains(['{', '}']) {
        return Some("`{a,b}` is not supported: give one pattern per alternative".into());
    }
    if body.contains('\\') {
        return Some("backslash escapes are not supported: write `[*]` for a literal `*`".into());
    }
    // Character classes: `[` … `]` without `/`, `:`-classes, `^` or a leading `]`.
    let mut rest = body;
    while let Some(open) = rest.find('[') {
        let class = &rest[open + 1..];
        let class = class.strip_prefix('!').unwrap_or(class);
        if class.starts_with(']') || class.starts_with('^') {
            return Some("`[]..]` and `[^..]` are not supported (`[!..]` negates)".into());
        }
        let Some(close) = class.find(']') else {
            return Some("unclosed `[`".into());
        };
        let inside = &class[..close];
        if inside.is_empty()
            || inside.contains('/')
            || inside.contains("[:")
            || inside.contains('[')
        {
            return Some(
                "a class holds characters and ranges only (no `/`, `[`, `[:alpha:]`)".into(),
            );
        }
        rest = &class[close + 1..];
    }
    None
}

/// Where a pattern came from, for messages: a flag or a file's line.
#[derive(Debug, Clone)]
enum Origin<'a> {
    Flag,
    Line(&'a Path, usize),
}

impl std::fmt::Display for Origin<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Flag => f.write_str("--exclude"),
            Origin::Line(file, line) => write!(f, "{}, line {line}", file.display()),
        }
    }
}

/// Most `**` components in one pattern: each doubles its rsync rules.
const MAX_DOUBLE_STARS: usize = 4;

impl Excludes {
    /// Compiles `patterns` (from flags) followed by the lines of each file.
    /// Empty patterns and file names are skipped, so a unit can pass
    /// `--exclude-from=${EXCLUDE_FROM}` with the key left empty.
    pub fn new(patterns: &[String], files: &[impl AsRef<Path>]) -> anyhow::Result<Self> {
        let mut all: Vec<(String, Origin)> = patterns
            .iter()
            .filter(|p| !p.is_empty())
            .map(|p| (p.clone(), Origin::Flag))
            .collect();
        for file in files {
            let file = file.as_ref();
            if file.as_os_str().is_empty() {
                continue;
            }
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading exclude file {}", file.display()))?;
            all.extend(
                text.lines()
                    .enumerate()
                    .map(|(i, l)| (l.trim_end_matches('\r'), i + 1))
                    .filter(|(l, _)| !l.trim().is_empty() && !l.starts_with('#'))
                    .map(|(l, n)| (l.to_string(), Origin::Line(file, n))),
            );
        }
        Self::compile(all)
    }

    /// Like [`Excludes::new`], plus `lists`: patterns separated by
    /// whitespace (`--excludes "*.tmp .cache/"`, the config file's `EXCLUDES=`).
    pub fn from_args(
        patterns: &[String],
        lists: &[String],
        files: &[impl AsRef<Path>],
    ) -> anyhow::Result<Self> {
        let mut all = patterns.to_vec();
        all.extend(
            lists
                .iter()
                .flat_map(|l| l.split_whitespace())
                .map(str::to_string),
        );
        Self::new(&all, files)
    }

    fn compile(patterns: Vec<(String, Origin)>) -> anyhow::Result<Self> {
        let mut builder = GlobSetBuilder::new();
        let mut rules = Vec::with_capacity(patterns.len());
        for (pattern, origin) in &patterns {
            if let Some(why) = unsupported(pattern) {
                anyhow::bail!("{origin}: exclude pattern {pattern:?}: {why}");
            }
            let (negated, body) = match pattern.strip_prefix('!') {
                Some(rest) => (true, rest),
                None => (false, pattern.as_str()),
            };
            let (dir_only, body) = match body.strip_suffix('/') {
                Some(rest) => (true, rest),
                None => (false, body),
            };
            let anchored = body.contains('/');
            let body = body.strip_prefix('/').unwrap_or(body);
            let glob = if anchored {
                body.to_string()
            } else {
                format!("**/{body}")
            };
            if body.split('/').filter(|c| *c == "**").count() > MAX_DOUBLE_STARS {
                anyhow::bail!(
                    "{origin}: exclude pattern {pattern:?}: more than {MAX_DOUBLE_STARS} `**`"
                );
            }
            let compiled = GlobBuilder::new(&glob)
                .literal_separator(true)
                .backslash_escape(false)
                .build()
                .with_context(|| format!("{origin}: bad exclude pattern {pattern:?}"))?;
            builder.add(compiled);
            let rsync = if anchored {
                format!("/{body}")
            } else {
                body.to_string()
            };
            rules.push(Rule {
                negated,
                dir_only,
                rsync,
            });
        }
        let set = builder.build().context("compiling exclude patterns")?;
        Ok(Excludes {
            set: Some(set),
            rules,
            patterns: patterns.into_iter().map(|(p, _)| p).collect(),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The patterns as given, for passing on to a remote side.
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    /// Whether `rel` (relative to the root, no leading `./`) is excluded by
    /// its own name. Walkers that do not look into excluded directories
    /// need no more; a path from elsewhere needs [`Excludes::is_excluded_path`].
    pub fn is_excluded(&self, rel: &Path, is_dir: bool) -> bool {
        let Some(set) = self.set.as_ref().filter(|_| !self.rules.is_empty()) else {
            return false;
        };
        let mut decision = false;
        // matches() lists every matching pattern in ascending order; the last
        // applicable one decides, as in gitignore.
        for index in set.matches(rel) {
            let rule = &self.rules[index];
            if rule.dir_only && !is_dir {
                continue;
            }
            decision = !rule.negated;
        }
        decision
    }

    /// Whether `rel` or any directory above it is excluded: what a walker
    /// (watchd, rsync) leaves out.
    pub fn is_excluded_path(&self, rel: &Path, is_dir: bool) -> bool {
        if self.rules.is_empty() {
            return false;
        }
        let components: Vec<_> = rel.components().collect();
        let mut prefix = std::path::PathBuf::new();
        for (i, c) in components.iter().enumerate() {
            prefix.push(c);
            let last = i + 1 == components.len();
            if self.is_excluded(&prefix, !last || is_dir) {
                return true;
            }
        }
        false
    }

    /// The same rules as rsync filter rules (`--filter=RULE` each, in this
    /// order). rsync takes the first matching rule, gitignore the last, so
    /// the order is reversed; a pattern with a slash is anchored with a
    /// leading `/` (rsync would otherwise match it at any depth); and
    /// because rsync's `/**/` needs at least one directory where ours
    /// also matches none, each non-final `**` adds a rule without it.
    pub fn rsync_filters(&self) -> Vec<String> {
        let mut out = Vec::new();
        for rule in self.rules.iter().rev() {
            let sign = if rule.negated { '+' } else { '-' };
            let slash = if rule.dir_only { "/" } else { "" };
            for variant in zero_dir_variants(&rule.rsync) {
                out.push(format!("{sign} {variant}{slash}"));
            }
        }
        out
    }
}

/// `pattern` and every variant with some non-final `**` components left out.
fn zero_dir_variants(pattern: &str) -> Vec<String> {
    let anchored = pattern.starts_with('/');
    let components: Vec<&str> = pattern.trim_start_matches('/').split('/').collect();
    let optional: Vec<usize> = (0..components.len().saturating_sub(1))
        .filter(|&i| components[i] == "**")
        .collect();
    if !anchored || optional.is_empty() {
        return vec![pattern.to_string()];
    }
    (0..1usize << optional.len())
        .map(|mask| {
            let kept: Vec<&str> = components
                .iter()
                .enumerate()
                .filter(|(i, _)| {
                    optional
                        .iter()
                        .position(|o| o == i)
                        .is_none_or(|bit| mask & (1 << bit) == 0)
                })
                .map(|(_, c)| *c)
                .collect();
            format!("/{}", kept.join("/"))
        })
        .collect()
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
    fn unsupported_lines_name_the_file_and_line() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("ex");
        for (line, what) in [
            ("- *.bak", "rsync/lsyncd filter rule"),
            ("+ keep", "rsync/lsyncd filter rule"),
            ("dir/***", "`***`"),
            ("!", "lone `!`"),
            ("a**", "whole path component"),
            ("{a,b}", "{a,b}"),
            ("a\\*", "backslash"),
            ("[[:alpha:]]", "class"),
            ("[^a]", "[^..]"),
            ("x ", "trailing spaces"),
        ] {
            std::fs::write(&f, format!("# c\n*.o\n{line}\n")).unwrap();
            let err = format!("{:#}", Excludes::new(&[], &[&f]).unwrap_err());
            assert!(
                err.contains(&format!("{}, line 3", f.display())),
                "{line}: {err}"
            );
            assert!(err.contains(what), "{line}: {err}");
            let err = format!(
                "{:#}",
                Excludes::new(&[line.into()], &[] as &[&Path]).unwrap_err()
            );
            assert!(err.starts_with("--exclude: "), "{line}: {err}");
        }
        // Empty values (a unit passing an unset config key) are nothing.
        let e = Excludes::new(&["".into()], &[""]).unwrap();
        assert!(e.is_empty());
        let e = Excludes::from_args(&[], &[" *.tmp  cache/ ".into(), "".into()], &[] as &[&Path])
            .unwrap();
        assert_eq!(e.patterns(), ["*.tmp", "cache/"]);
    }

    #[test]
    fn rsync_filters_are_reversed_anchored_and_expand_double_stars() {
        let e = ex(&[
            "*.tmp",
            "cache/",
            "logs/*.gz",
            "/top",
            "a/**/b",
            "**/x/",
            "!keep.tmp",
            "d/**",
        ]);
        assert_eq!(
            e.rsync_filters(),
            [
                "- /d/**",
                "+ keep.tmp",
                "- /**/x/",
                "- /x/",
                "- /a/**/b",
                "- /a/b",
                "- /top",
                "- /logs/*.gz",
                "- cache/",
                "- *.tmp",
            ]
        );
    }

    #[test]
    fn a_path_below_an_excluded_directory_is_excluded() {
        let e = ex(&["cache/", "/a/b"]);
        assert!(e.is_excluded_path(Path::new("x/cache/f"), false));
        assert!(!e.is_excluded(Path::new("x/cache/f"), false));
        assert!(e.is_excluded_path(Path::new("a/b/c/d"), true));
        assert!(!e.is_excluded_path(Path::new("cache"), false));
        assert!(!e.is_excluded_path(Path::new("b/a/b"), false));
    }

    #[test]
    fn bad_patterns_are_errors() {
        assert!(Excludes::new(&["a[".into()], &[] as &[&Path]).is_err());
        assert!(Excludes::new(&["/".into()], &[] as &[&Path]).is_err());
        assert!(Excludes::new(&[], &["/nonexistent/ex"]).is_err());
    }
}
