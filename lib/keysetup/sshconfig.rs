//! The kit's `Host` blocks in `~/.ssh/config`: written between
//! `# syncpipe: begin ALIAS` and `# syncpipe: end ALIAS` lines, replaced in
//! place on the next run, every other line left as it was. A new block
//! goes before the first `Host`/`Match` line (and the comments right
//! above it): ssh takes the first value it
//! finds, so a block after `Host *` would lose, and the global options at
//! the top must stay global.

use std::path::Path;

const BEGIN: &str = "# syncpipe: begin ";
const END: &str = "# syncpipe: end ";

/// Where and how to reach a host: what the block says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostBlock {
    pub alias: String,
    pub host_name: String,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub identity_file: std::path::PathBuf,
}

/// A value as ssh_config reads it: double quotes around anything with blanks.
fn value(text: &str) -> String {
    if text.contains([' ', '\t']) || text.is_empty() {
        format!("\"{text}\"")
    } else {
        text.to_string()
    }
}

/// Checks an alias: one word ssh matches literally (no patterns, no quotes).
pub fn check_alias(alias: &str) -> Result<(), String> {
    let ok = !alias.is_empty()
        && !alias.starts_with('-')
        && alias
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{alias:?} is not a usable alias: use letters, digits, '.', '_' and '-'"
        ))
    }
}

impl HostBlock {
    /// The block's lines, markers included, each ending in `\n`.
    pub fn render(&self) -> String {
        let mut s = format!("{BEGIN}{}\nHost {}\n", self.alias, self.alias);
        s.push_str(&format!("    HostName {}\n", value(&self.host_name)));
        if let Some(port) = self.port {
            s.push_str(&format!("    Port {port}\n"));
        }
        if let Some(user) = &self.user {
            s.push_str(&format!("    User {}\n", value(user)));
        }
        s.push_str(&format!(
            "    IdentityFile {}\n",
            value(&path_text(&self.identity_file))
        ));
        s.push_str("    IdentitiesOnly yes\n");
        s.push_str(&format!("{END}{}\n", self.alias));
        s
    }
}

fn path_text(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// What [`upsert`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Edit {
    Unchanged,
    Added,
    Updated,
}

/// Lines with their own ends (the last may lack one).
fn split_lines(text: &str) -> Vec<&str> {
    text.split_inclusive('\n').collect()
}

fn bare(line: &str) -> &str {
    line.trim_end_matches(['\n', '\r']).trim()
}

/// The line range `[begin, end]` of `alias`'s block, if present.
fn find_block(lines: &[&str], alias: &str) -> Result<Option<(usize, usize)>, String> {
    let begin_marker = format!("{BEGIN}{alias}");
    let end_marker = format!("{END}{alias}");
    let Some(begin) = lines.iter().position(|l| bare(l) == begin_marker) else {
        if lines.iter().any(|l| bare(l) == end_marker) {
            return Err(format!(
                "found '{end_marker}' without its begin line; fix the file by hand"
            ));
        }
        return Ok(None);
    };
    let end = lines[begin + 1..]
        .iter()
        .position(|l| bare(l) == end_marker)
        .map(|p| begin + 1 + p)
        .ok_or_else(|| {
            format!("found '{begin_marker}' without its end line; fix the file by hand")
        })?;
    if lines[begin + 1..]
        .iter()
        .skip(end - begin)
        .any(|l| bare(l) == begin_marker)
    {
        return Err(format!(
            "the block {alias:?} appears twice; remove one by hand"
        ));
    }
    Ok(Some((begin, end)))
}

/// Starts a `Host` or `Match` section (keywords are case-insensitive and
/// may be followed by `=`).
fn starts_section(line: &str) -> bool {
    let t = bare(line);
    let word: String = t
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '=')
        .collect();
    word.eq_ignore_ascii_case("host") || word.eq_ignore_ascii_case("match")
}

/// Puts `block` into `config` (the file's text): replaced in place when the
/// kit wrote it before, else inserted before the first section.
pub fn upsert(config: &str, block: &HostBlock) -> Result<(String, Edit), String> {
    check_alias(&block.alias)?;
    let lines = split_lines(config);
    let rendered = block.render();
    let (out, edit) = match find_block(&lines, &block.alias)? {
        Some((begin, end)) => {
            let old: String = lines[begin..=end].concat();
            let keep_end = old.ends_with('\n') || end + 1 < lines.len();
            let mut new = rendered.clone();
            if !keep_end {
                new.pop();
            }
            if old == new {
                return Ok((config.to_string(), Edit::Unchanged));
            }
            let mut out: String = lines[..begin].concat();
            out.push_str(&new);
            out.push_str(&lines[end + 1..].concat());
            (out, Edit::Updated)
        }
        None => match lines.iter().position(|l| starts_section(l)) {
            Some(mut at) => {
                // Comments right above a section belong to it (and the
                // kit's own begin markers are comments).
                while at > 0 && bare(lines[at - 1]).starts_with('#') {
                    at -= 1;
                }
                let mut out: String = lines[..at].concat();
                out.push_str(&rendered);
                out.push('\n');
                out.push_str(&lines[at..].concat());
                (out, Edit::Added)
            }
            None => {
                let mut out = config.to_string();
                if !out.is_empty() && !out.ends_with('\n') {
                    out.push('\n');
                }
                if !out.is_empty() {
                    out.push('\n');
                }
                out.push_str(&rendered);
                (out, Edit::Added)
            }
        },
    };
    Ok((out, edit))
}

/// Removes the kit's block for `alias` (and one blank line after it).
pub fn remove(config: &str, alias: &str) -> Result<(String, bool), String> {
    let lines = split_lines(config);
    match find_block(&lines, alias)? {
        None => Ok((config.to_string(), false)),
        Some((begin, end)) => {
            let mut after = end + 1;
            if lines.get(after).is_some_and(|l| bare(l).is_empty()) {
                after += 1;
            }
            let mut out: String = lines[..begin].concat();
            out.push_str(&lines[after..].concat());
            Ok((out, true))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(port: u16) -> HostBlock {
        HostBlock {
            alias: "backup1".into(),
            host_name: "10.0.0.5".into(),
            port: Some(port),
            user: Some("syncer".into()),
            identity_file: "/home/a b/.ssh/id_syncpipe_ed25519".into(),
        }
    }

    #[test]
    fn renders_a_marked_block() {
        assert_eq!(
            block(2222).render(),
            "# syncpipe: begin backup1\n\
             Host backup1\n    HostName 10.0.0.5\n    Port 2222\n    User syncer\n    \
             IdentityFile \"/home/a b/.ssh/id_syncpipe_ed25519\"\n    IdentitiesOnly yes\n\
             # syncpipe: end backup1\n"
        );
    }

    #[test]
    fn goes_before_the_first_section_and_updates_in_place() {
        let config =
            "# mine\nServerAliveInterval 60\n\nHost *\n    Port 2200\n\nmatch host x\n    User y";
        let (added, edit) = upsert(config, &block(2222)).unwrap();
        assert_eq!(edit, Edit::Added);
        assert_eq!(
            added,
            format!(
                "# mine\nServerAliveInterval 60\n\n{}\nHost *\n    Port 2200\n\nmatch host x\n    User y",
                block(2222).render()
            )
        );
        let (same, edit) = upsert(&added, &block(2222)).unwrap();
        assert_eq!((same.as_str(), edit), (added.as_str(), Edit::Unchanged));

        let (updated, edit) = upsert(&added, &block(2223)).unwrap();
        assert_eq!(edit, Edit::Updated);
        assert_eq!(updated, added.replace("Port 2222", "Port 2223"));

        let (removed, found) = remove(&updated, "backup1").unwrap();
        assert!(found);
        assert_eq!(removed, config);
    }

    #[test]
    fn other_blocks_and_odd_files() {
        // No section at all: appended after a blank line; a missing final newline is added.
        let (out, _) = upsert("Compression yes", &block(22)).unwrap();
        assert_eq!(out, format!("Compression yes\n\n{}", block(22).render()));
        let (out, _) = upsert("", &block(22)).unwrap();
        assert_eq!(out, block(22).render());
        // Another alias's block is left alone, and ours is found between.
        let mut other = block(1);
        other.alias = "backup2".into();
        let (two, _) = upsert(&block(5).render(), &other).unwrap();
        let (two, edit) = upsert(&two, &block(6)).unwrap();
        assert_eq!(edit, Edit::Updated);
        assert!(
            two.contains("Port 6") && two.contains("Port 1\n") && !two.contains("Port 5"),
            "{two}"
        );
        // A comment right above a section stays with it.
        let (out, _) = upsert("# work\nHost w\n", &block(22)).unwrap();
        assert_eq!(out, format!("{}\n# work\nHost w\n", block(22).render()));
        // Host= spelling counts as a section.
        assert!(starts_section("HOST=foo\n"));
        assert!(!starts_section("HostName foo\n"));
    }

    #[test]
    fn broken_markers_are_refused() {
        let half = "# syncpipe: begin backup1\nHost backup1\n";
        assert!(upsert(half, &block(1)).is_err());
        assert!(upsert("# syncpipe: end backup1\n", &block(1)).is_err());
        let twice = format!("{}{}", block(1).render(), block(1).render());
        assert!(upsert(&twice, &block(2)).is_err());
        assert!(check_alias("a b").is_err());
        assert!(check_alias("-oProxyCommand").is_err());
        assert!(check_alias("*").is_err());
        assert!(check_alias("backup-1.lan").is_ok());
    }
}
