//! lsyncd's exclude patterns turned into the kit's one exclude syntax
//! (lib/exclude.rs), with lsyncd's meaning, not its spelling.
//!
//! lsyncd (2.2, `Excludes.toLuaPattern` and `test`) turns a pattern into a
//! Lua pattern and tests it against `/` + the relative path, with a trailing
//! `/` for directories, and never watches an excluded directory:
//! - `?` and `*` match within a component; two or more `*` match anything,
//!   `/` included (`a**` is "a, then anything").
//! - A pattern not starting with `/` matches at the start of any component:
//!   `a/b` is `a/b` at any depth (the kit anchors `a/b` at the root, so it
//!   becomes `**/a/b`).
//! - The match must end at the end of a component, so a directory that
//!   matches takes everything below it; and because a directory's path ends
//!   in `/`, a trailing `*` also matches the directory itself: `logs/*`
//!   leaves out `logs`, not only its contents.
//! - `[`, `]`, `{`, `}`, `\`, `!` and `$` are literal characters to lsyncd
//!   (its start-up rsync reads `[..]` as a class): the kit cannot say a
//!   literal `[`, so such a pattern is reported, never guessed.

/// The kit's patterns with the same meaning as lsyncd pattern `pattern`, or
/// why there are none.
pub fn convert(pattern: &str) -> Result<Vec<String>, String> {
    if pattern.is_empty() {
        return Err("an empty pattern".into());
    }
    if pattern != pattern.trim() || pattern.chars().any(char::is_control) {
        return Err("leading or trailing spaces or control characters".into());
    }
    if let Some(c) = pattern
        .chars()
        .find(|c| matches!(c, '[' | ']' | '{' | '}' | '\\'))
    {
        return Err(format!(
            "`{c}` is a literal character to lsyncd while it watches (its start-up rsync \
             reads `[..]` as a class); the kit has no literal `{c}`: write the pattern you mean \
             by hand"
        ));
    }
    if pattern.starts_with('!') || pattern.ends_with('$') {
        return Err("a leading `!` or trailing `$` is a literal character to lsyncd".into());
    }
    let anchored = pattern.starts_with('/');
    let body = pattern.trim_start_matches('/');
    let (dir_only, body) = match body.strip_suffix('/') {
        Some(b) => (true, b),
        None => (false, body),
    };
    if body.is_empty() {
        return Err("the pattern names the root itself, which lsyncd never excludes".into());
    }
    if body
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err("an empty, `.` or `..` component never matches a path".into());
    }
    // Runs of two or more `*` are lsyncd's `.*`: one marker each.
    let mut tokens = String::new();
    let mut stars = 0;
    for c in body.chars().chain(std::iter::once('\0')) {
        if c == '*' {
            stars += 1;
            continue;
        }
        match stars {
            0 => {}
            1 => tokens.push('*'),
            _ => tokens.push('\u{1}'),
        }
        stars = 0;
        if c != '\0' {
            tokens.push(c);
        }
    }
    let crossings = tokens.matches('\u{1}').count();
    if crossings > 3 {
        return Err("more than three `**` in one pattern".into());
    }
    // Each `.*` matches either within one component (`*`) or across at least
    // one `/` (`*/**/*`: the rest of this component, whole components, the
    // start of the last one).
    let mut out = Vec::new();
    for mask in 0..1u32 << crossings {
        let mut text = String::new();
        let mut i = 0;
        for c in tokens.chars() {
            if c == '\u{1}' {
                text.push_str(if mask & (1 << i) == 0 { "*" } else { "*/**/*" });
                i += 1;
            } else {
                text.push(c);
            }
        }
        // `**/*` and `*/**` around a `/` mean "one or more components":
        // simplify the spelling the kit compiles (`a*/**/*` stays).
        let mut comps: Vec<&str> = text.split('/').collect();
        // A trailing component that can match nothing also matches the
        // directory above it, whose path ends in `/`.
        let mut variants = vec![(comps.clone(), dir_only)];
        if !dir_only && comps.len() > 1 && comps.last().is_some_and(|c| c.chars().all(|c| c == '*'))
        {
            comps.pop();
            while comps.last() == Some(&"**") && comps.len() > 1 {
                comps.pop();
            }
            variants.push((comps, true));
        }
        for (comps, dir) in variants {
            let joined = comps.join("/");
            let mut p = if anchored {
                format!("/{joined}")
            } else if comps.len() > 1 {
                format!("**/{joined}")
            } else {
                joined
            };
            if dir {
                p.push('/');
            }
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    for p in &out {
        if let Err(e) = crate::exclude::Excludes::new(std::slice::from_ref(p), &[] as &[&str]) {
            return Err(format!("becomes {p:?}, which the kit refuses: {e:#}"));
        }
    }
    Ok(out)
}

/// lsyncd's own Lua pattern for `pattern` (as `Excludes.toLuaPattern`
/// builds it), for the tests that check [`convert`] against real Lua.
#[cfg(test)]
pub(crate) fn lsyncd_lua_pattern(pattern: &str) -> String {
    let mut p = String::new();
    for c in pattern.chars() {
        match c {
            '%' | '^' | '$' | '(' | ')' | '.' | '[' | ']' | '+' | '-' => {
                p.push('%');
                p.push(c);
            }
            '?' => p.push_str("[^/]"),
            '*' => p.push_str("[^/]*"),
            _ => p.push(c),
        }
    }
    let p = p.replace("[^/]*[^/]*", ".*");
    match p.strip_prefix('/') {
        Some(rest) => format!("^/{rest}"),
        None => format!("/{p}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exclude::Excludes;
    use proptest::prelude::*;
    use std::path::Path;

    fn conv(p: &str) -> Vec<String> {
        convert(p).unwrap()
    }

    #[test]
    fn common_patterns() {
        assert_eq!(conv("*.tmp"), ["*.tmp"]);
        assert_eq!(conv(".*"), [".*"]);
        assert_eq!(conv("/build"), ["/build"]);
        assert_eq!(conv("cache/"), ["cache/"]);
        assert_eq!(conv("a/b"), ["**/a/b"]);
        // lsyncd's `logs/*` also leaves out the directory `logs` itself.
        assert_eq!(conv("logs/*"), ["**/logs/*", "logs/"]);
        assert_eq!(
            conv("/logs/**"),
            ["/logs/*", "/logs/", "/logs/*/**/*", "/logs/*/"]
        );
        // lsyncd's `**` between slashes needs at least one directory.
        assert_eq!(conv("a/**/b"), ["**/a/*/b", "**/a/*/**/*/b"]);
        assert_eq!(conv("**/x"), ["**/*/x", "**/*/**/*/x"]);
        assert!(convert("[ab].txt").is_err());
        assert!(convert("x\\y").is_err());
    }

    /// lsyncd's verdict on `rel`: it or a directory above it matches (an
    /// excluded directory is never watched), tested with Lua's own matcher.
    fn lsyncd_excludes(lua: &mlua::Lua, pattern: &str, rel: &str, is_dir: bool) -> bool {
        let lp = lsyncd_lua_pattern(pattern);
        let comps: Vec<&str> = rel.split('/').collect();
        let test: mlua::Function = lua
            .load(
                "return function(path, p)
                   if p:byte(-1) == 36 then return path:match(p) ~= nil end
                   return path:match(p .. '/') ~= nil or path:match(p .. '$') ~= nil
                 end",
            )
            .eval()
            .unwrap();
        (1..=comps.len()).any(|n| {
            let dir = n < comps.len() || is_dir;
            let path = format!("/{}{}", comps[..n].join("/"), if dir { "/" } else { "" });
            test.call::<bool>((path, lp.clone())).unwrap()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]
        #[test]
        fn same_verdicts_as_lsyncd(
            pattern in proptest::string::string_regex("/?([ab?*]{1,3}/){0,2}[ab*?]{1,3}/?").unwrap(),
            paths in proptest::collection::vec(
                (proptest::string::string_regex("[ab]{1,2}(/[ab]{1,2}){0,3}").unwrap(), any::<bool>()),
                1..20),
        ) {
            let lua = mlua::Lua::new();
            let Ok(ours) = convert(&pattern) else { return Ok(()) };
            let ex = Excludes::new(&ours, &[] as &[&str]).unwrap();
            for (rel, is_dir) in paths {
                let want = lsyncd_excludes(&lua, &pattern, &rel, is_dir);
                let comps: Vec<&str> = rel.split('/').collect();
                let got = (1..=comps.len()).any(|n| {
                    ex.is_excluded(Path::new(&comps[..n].join("/")), n < comps.len() || is_dir)
                });
                prop_assert_eq!(got, want, "lsyncd {:?} as {:?} on {:?} (dir {})", pattern, ours, rel, is_dir);
            }
        }
    }
}
