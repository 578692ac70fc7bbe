//! Restricted keys: `--only rsync:/dst`, `--only bisync:/path` and
//! `--from CIDR` turned into authorized_keys options (a forced command
//! with `restrict`, a `from=` list), quoted for sshd and the remote shell.

use std::fmt;

use crate::ssh::quote_for_shell;

/// Debian's rsync ships rrsync here; it confines rsync to one directory.
pub const RRSYNC: &str = "/usr/bin/rrsync";

/// What an `rsync:` key may do in its directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RsyncAccess {
    /// `rsync:DIR`: push and pull.
    ReadWrite,
    /// `rsync-wo:DIR`: push only (rrsync `-wo`), what pushd needs.
    WriteOnly,
    /// `rsync-ro:DIR`: pull only (rrsync `-ro`).
    ReadOnly,
}

/// The one thing a restricted key may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Only {
    Rsync {
        dir: String,
        access: RsyncAccess,
    },
    Bisync {
        dir: String,
    },
    /// pushd's agent and pushd's rsync, both confined to DIR (issue 15).
    Pushd {
        dir: String,
    },
}

impl Only {
    /// Parses `rsync:/dst`, `rsync-wo:/dst`, `rsync-ro:/dst` or `bisync:/path`.
    pub fn parse(text: &str) -> Result<Only, String> {
        let (kind, dir) = text.split_once(':').ok_or_else(|| {
            format!(
                "{text:?}: write rsync:/DIR, rsync-wo:/DIR, rsync-ro:/DIR, bisync:/DIR or pushd:/DIR"
            )
        })?;
        if !dir.starts_with('/') {
            return Err(format!(
                "{text:?}: the directory must be an absolute path on the remote"
            ));
        }
        if dir.contains(['\n', '\r', '\0']) {
            return Err(format!("{text:?}: the directory holds a line break"));
        }
        let dir = dir.to_string();
        match kind {
            "rsync" => Ok(Only::Rsync {
                dir,
                access: RsyncAccess::ReadWrite,
            }),
            "rsync-wo" => Ok(Only::Rsync {
                dir,
                access: RsyncAccess::WriteOnly,
            }),
            "rsync-ro" => Ok(Only::Rsync {
                dir,
                access: RsyncAccess::ReadOnly,
            }),
            "bisync" => Ok(Only::Bisync { dir }),
            "pushd" => Ok(Only::Pushd { dir }),
            other => Err(format!(
                "{other:?} is not something a key can be limited to: use rsync, rsync-wo, rsync-ro, bisync or pushd"
            )),
        }
    }

    /// The forced command, as the remote shell will run it.
    pub fn command(&self) -> String {
        let quoted = |dir: &str| String::from_utf8_lossy(&quote_if_needed(dir)).into_owned();
        match self {
            Only::Rsync { dir, access } => {
                let flag = match access {
                    RsyncAccess::ReadWrite => "",
                    RsyncAccess::WriteOnly => " -wo",
                    RsyncAccess::ReadOnly => " -ro",
                };
                format!("{RRSYNC}{flag} {}", quoted(dir))
            }
            Only::Bisync { dir } => format!("bisync --serve {}", quoted(dir)),
            // `env`: bash's `pushd` builtin would win over the program.
            Only::Pushd { dir } => format!("env pushd --serve {} --restricted", quoted(dir)),
        }
    }
}

impl fmt::Display for Only {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Only::Rsync { dir, access } => {
                let kind = match access {
                    RsyncAccess::ReadWrite => "rsync",
                    RsyncAccess::WriteOnly => "rsync-wo",
                    RsyncAccess::ReadOnly => "rsync-ro",
                };
                write!(f, "{kind}:{dir}")
            }
            Only::Bisync { dir } => write!(f, "bisync:{dir}"),
            Only::Pushd { dir } => write!(f, "pushd:{dir}"),
        }
    }
}

fn quote_if_needed(word: &str) -> Vec<u8> {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._,+@%=:-".contains(&b));
    if plain {
        word.as_bytes().to_vec()
    } else {
        quote_for_shell(word.as_bytes())
    }
}

/// Checks a `from=` pattern list: comma-separated host names, addresses,
/// CIDR blocks or wildcards, each optionally negated with `!`.
pub fn parse_from(text: &str) -> Result<String, String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || ".:/*?!-_[]".contains(c);
    if text.is_empty()
        || text
            .split(',')
            .any(|p| p.is_empty() || !p.chars().all(ok_char))
    {
        return Err(format!(
            "{text:?} is not a from= list: write e.g. 192.168.1.0/24 or 10.0.0.5,backup.example.org"
        ));
    }
    Ok(text.to_string())
}

/// The restrictions a key is installed with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Restriction {
    pub only: Option<Only>,
    pub from: Option<String>,
}

impl Restriction {
    pub fn is_none(&self) -> bool {
        self.only.is_none() && self.from.is_none()
    }

    /// The options field (`command="…",restrict,from="…"`), or an empty
    /// string for a key with no limits. A forced command always comes with
    /// `restrict`: no pty, no forwarding, no ~/.ssh/rc.
    pub fn options(&self) -> String {
        let mut parts = Vec::new();
        if let Some(only) = &self.only {
            parts.push(format!("command=\"{}\"", escape_value(&only.command())));
            parts.push("restrict".to_string());
        }
        if let Some(from) = &self.from {
            parts.push(format!("from=\"{from}\""));
        }
        parts.join(",")
    }

    /// The whole authorized_keys line for `key` (`TYPE BASE64 COMMENT`).
    pub fn line(&self, key_line: &str) -> String {
        let options = self.options();
        if options.is_empty() {
            key_line.to_string()
        } else {
            format!("{options} {key_line}")
        }
    }
}

/// sshd reads `\"` inside an option value as a quote and nothing else as
/// special; the value never ends in a backslash because the shell quoting
/// around paths ends in `'`.
fn escape_value(value: &str) -> String {
    value.replace('"', "\\\"")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keysetup::authkeys::KeyLine;

    #[test]
    fn only_parses_and_prints() {
        for text in ["rsync:/dst", "rsync-wo:/d", "rsync-ro:/d", "bisync:/srv/x"] {
            assert_eq!(Only::parse(text).unwrap().to_string(), text);
        }
        assert!(Only::parse("rsync:dst").is_err());
        assert!(Only::parse("shell:/x").is_err());
        assert!(Only::parse("/x").is_err());
        assert!(Only::parse("rsync:/a\nb").is_err());
    }

    #[test]
    fn forced_commands() {
        let cmd = |t: &str| Only::parse(t).unwrap().command();
        assert_eq!(cmd("rsync:/dst"), "/usr/bin/rrsync /dst");
        assert_eq!(cmd("rsync-wo:/dst"), "/usr/bin/rrsync -wo /dst");
        assert_eq!(cmd("rsync-ro:/dst"), "/usr/bin/rrsync -ro /dst");
        assert_eq!(cmd("bisync:/srv/x"), "bisync --serve /srv/x");
        assert_eq!(
            cmd("pushd:/srv/a b"),
            "env pushd --serve '/srv/a b' --restricted"
        );
        assert_eq!(cmd("rsync:/my dir"), "/usr/bin/rrsync '/my dir'");
        assert_eq!(cmd("rsync:/it's"), r"/usr/bin/rrsync '/it'\''s'");
    }

    #[test]
    fn options_read_back_by_the_line_parser() {
        let key = "ssh-ed25519 QUJD syncpipe@h";
        for dir in ["/dst", "/a \"b\" c", "/x\\", "/$(rm -rf)", "/it's", "/-x"] {
            let r = Restriction {
                only: Some(Only::Rsync {
                    dir: dir.into(),
                    access: RsyncAccess::WriteOnly,
                }),
                from: Some("10.0.0.0/8,!10.0.0.9".into()),
            };
            let line = r.line(key);
            let parsed = KeyLine::parse(line.as_bytes()).expect(&line);
            assert_eq!(parsed.comment, b"syncpipe@h");
            let command = String::from_utf8(parsed.option("command").unwrap()).unwrap();
            assert_eq!(command, r.only.as_ref().unwrap().command());
            assert!(parsed.has_flag("restrict"));
            assert_eq!(parsed.option("from").unwrap(), b"10.0.0.0/8,!10.0.0.9");
            // The remote shell gets the directory back as one word.
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "printf %s {}",
                    command.rsplit_once(" -wo ").unwrap().1
                ))
                .output()
                .unwrap();
            assert_eq!(String::from_utf8(out.stdout).unwrap(), dir);
        }
    }

    #[test]
    fn from_lists() {
        assert!(parse_from("192.168.1.0/24").is_ok());
        assert!(parse_from("10.0.0.5,backup.example.org,!bad.example.org").is_ok());
        assert!(parse_from("::1,fe80::/10").is_ok());
        for bad in ["", "a,,b", "a b", "a\"b", "x;y"] {
            assert!(parse_from(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn unrestricted_lines_have_no_options() {
        let r = Restriction::default();
        assert!(r.is_none());
        assert_eq!(r.line("ssh-ed25519 QUJD c"), "ssh-ed25519 QUJD c");
        let from_only = Restriction {
            only: None,
            from: Some("10.1.2.3".into()),
        };
        assert_eq!(
            from_only.line("ssh-ed25519 QUJD c"),
            "from=\"10.1.2.3\" ssh-ed25519 QUJD c"
        );
    }
}
