//! The `authorized_keys` file as sshd reads it: one key line's parts
//! (options, key type, base64 blob, comment), and an editor that adds,
//! replaces or removes exactly the kit's line while every other byte of the
//! file (comments, blank lines, CRLF, options it does not understand, a
//! missing final newline) stays as it was.

use std::fmt;

/// Key types sshd accepts at the start of a key (after the options).
const KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ssh-dss",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ecdsa-sha2-nistp256@openssh.com",
    "sk-ssh-ed25519@openssh.com",
    "ssh-ed25519-cert-v01@openssh.com",
    "ssh-rsa-cert-v01@openssh.com",
    "ssh-dss-cert-v01@openssh.com",
    "ecdsa-sha2-nistp256-cert-v01@openssh.com",
    "ecdsa-sha2-nistp384-cert-v01@openssh.com",
    "ecdsa-sha2-nistp521-cert-v01@openssh.com",
    "sk-ecdsa-sha2-nistp256-cert-v01@openssh.com",
    "sk-ssh-ed25519-cert-v01@openssh.com",
];

pub fn is_key_type(word: &[u8]) -> bool {
    KEY_TYPES.iter().any(|t| t.as_bytes() == word)
}

/// A public key: its type and base64 blob, the part that identifies it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    pub key_type: String,
    pub blob: String,
    pub comment: String,
}

impl PublicKey {
    /// Parses an `id_*.pub` file's text: `TYPE BASE64 [COMMENT]`, one line.
    pub fn parse(text: &str) -> Result<PublicKey, String> {
        let line = text.trim_end_matches(['\n', '\r']);
        if line.contains(['\n', '\r']) {
            return Err("a public key file must hold one line".into());
        }
        let parsed = KeyLine::parse(line.as_bytes())
            .ok_or_else(|| "not an ssh public key (TYPE BASE64 [COMMENT])".to_string())?;
        if parsed.options.is_some() {
            return Err("a public key file must not start with options".into());
        }
        Ok(PublicKey {
            key_type: String::from_utf8_lossy(parsed.key_type).into_owned(),
            blob: String::from_utf8_lossy(parsed.blob).into_owned(),
            comment: String::from_utf8_lossy(parsed.comment).into_owned(),
        })
    }

    /// `TYPE BASE64 COMMENT` (no options, no newline).
    pub fn to_line(&self) -> String {
        if self.comment.is_empty() {
            format!("{} {}", self.key_type, self.blob)
        } else {
            format!("{} {} {}", self.key_type, self.blob, self.comment)
        }
    }

    pub fn same_key(&self, line: &KeyLine) -> bool {
        line.key_type == self.key_type.as_bytes() && line.blob == self.blob.as_bytes()
    }
}

/// One key line split into its fields, borrowing from the file's bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyLine<'a> {
    /// The raw options field (`command="…",restrict`), if any.
    pub options: Option<&'a [u8]>,
    pub key_type: &'a [u8],
    pub blob: &'a [u8],
    /// Everything after the blob, surrounding blanks removed.
    pub comment: &'a [u8],
}

/// One option of a key line, its value unescaped (`\"` becomes `"`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyOption {
    pub name: String,
    pub value: Option<Vec<u8>>,
}

impl fmt::Display for KeyOption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if let Some(value) = &self.value {
            write!(
                f,
                "=\"{}\"",
                String::from_utf8_lossy(value).replace('"', "\\\"")
            )?;
        }
        Ok(())
    }
}

fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if is_blank(*first) || *first == b'\r' {
            s = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = s {
        if is_blank(*last) || *last == b'\r' {
            s = rest;
        } else {
            break;
        }
    }
    s
}

/// Splits off the first blank-separated word; the rest starts after the blanks.
fn word(s: &[u8]) -> (&[u8], &[u8]) {
    let end = s.iter().position(|&b| is_blank(b)).unwrap_or(s.len());
    let rest = &s[end..];
    let skip = rest.iter().take_while(|&&b| is_blank(b)).count();
    (&s[..end], &rest[skip..])
}

/// The end of an options field: the first blank outside double quotes
/// (inside them `\"` is a quote, as sshd reads it). `None` when a quote is
/// left open.
fn options_end(s: &[u8]) -> Option<usize> {
    let mut quoted = false;
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'\\' if quoted && s.get(i + 1) == Some(&b'"') => i += 1,
            b'"' => quoted = !quoted,
            b if is_blank(b) && !quoted => return Some(i),
            _ => {}
        }
        i += 1;
    }
    (!quoted).then_some(s.len())
}

impl<'a> KeyLine<'a> {
    /// Parses one line (without its line end). `None` for blank lines,
    /// comments and anything sshd would not read as a key.
    pub fn parse(line: &'a [u8]) -> Option<KeyLine<'a>> {
        let line = trim(line);
        if line.is_empty() || line[0] == b'#' {
            return None;
        }
        let (options, rest) = if is_key_type(word(line).0) {
            (None, line)
        } else {
            let end = options_end(line)?;
            let after = &line[end..];
            let skip = after.iter().take_while(|&&b| is_blank(b)).count();
            (Some(&line[..end]), &after[skip..])
        };
        let (key_type, rest) = word(rest);
        if !is_key_type(key_type) {
            return None;
        }
        let (blob, rest) = word(rest);
        if blob.is_empty()
            || !blob
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(b))
        {
            return None;
        }
        Some(KeyLine {
            options,
            key_type,
            blob,
            comment: trim(rest),
        })
    }

    /// The options, split at unquoted commas, values unescaped.
    pub fn options(&self) -> Vec<KeyOption> {
        let Some(raw) = self.options else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut i = 0;
        while i < raw.len() {
            let name_end = raw[i..]
                .iter()
                .position(|&b| b == b'=' || b == b',')
                .map_or(raw.len(), |p| i + p);
            let name = String::from_utf8_lossy(&raw[i..name_end]).into_owned();
            i = name_end;
            let mut value = None;
            if raw.get(i) == Some(&b'=') {
                i += 1;
                let mut v = Vec::new();
                if raw.get(i) == Some(&b'"') {
                    i += 1;
                    while i < raw.len() && raw[i] != b'"' {
                        if raw[i] == b'\\' && raw.get(i + 1) == Some(&b'"') {
                            i += 1;
                        }
                        v.push(raw[i]);
                        i += 1;
                    }
                    i += 1;
                } else {
                    while i < raw.len() && raw[i] != b',' {
                        v.push(raw[i]);
                        i += 1;
                    }
                }
                value = Some(v);
            }
            out.push(KeyOption { name, value });
            // Past the comma.
            i += 1;
        }
        out
    }

    /// The value of option `name` (`command`, `from`), if set.
    pub fn option(&self, name: &str) -> Option<Vec<u8>> {
        self.options()
            .into_iter()
            .find(|o| o.name.eq_ignore_ascii_case(name))
            .and_then(|o| o.value)
    }

    pub fn has_flag(&self, name: &str) -> bool {
        self.options()
            .iter()
            .any(|o| o.name.eq_ignore_ascii_case(name) && o.value.is_none())
    }
}

/// How to recognise the kit's line: by its key, or by its marker comment
/// (a key made again on the same host replaces the old one's line).
#[derive(Clone, Debug)]
pub struct Selector<'a> {
    pub key: &'a PublicKey,
    /// A comment that marks a line as the kit's, e.g. `syncpipe@laptop`.
    pub marker: Option<&'a str>,
}

impl Selector<'_> {
    pub fn matches(&self, line: &KeyLine) -> bool {
        self.key.same_key(line) || self.marker.is_some_and(|m| line.comment == m.as_bytes())
    }
}

/// What an edit did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Unchanged,
    Added,
    Replaced,
    Removed(usize),
}

/// One line of the file: its bytes and its own line end (`\n`, `\r\n`, or
/// nothing on a last line without one).
#[derive(Clone, Debug, PartialEq, Eq)]
struct RawLine {
    text: Vec<u8>,
    end: Vec<u8>,
}

/// An authorized_keys file held as lines; [`to_bytes`](Self::to_bytes)
/// gives back the input exactly unless an edit touched it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthorizedKeys {
    lines: Vec<RawLine>,
}

impl AuthorizedKeys {
    pub fn parse(bytes: &[u8]) -> AuthorizedKeys {
        let mut lines = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            let (line, end, next) = match rest.iter().position(|&b| b == b'\n') {
                Some(nl) if nl > 0 && rest[nl - 1] == b'\r' => {
                    (&rest[..nl - 1], &rest[nl - 1..=nl], &rest[nl + 1..])
                }
                Some(nl) => (&rest[..nl], &rest[nl..=nl], &rest[nl + 1..]),
                None => (rest, &rest[rest.len()..], &rest[rest.len()..]),
            };
            lines.push(RawLine {
                text: line.to_vec(),
                end: end.to_vec(),
            });
            rest = next;
        }
        AuthorizedKeys { lines }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for line in &self.lines {
            out.extend_from_slice(&line.text);
            out.extend_from_slice(&line.end);
        }
        out
    }

    /// Every key line, with its index.
    pub fn keys(&self) -> impl Iterator<Item = (usize, KeyLine<'_>)> {
        self.lines
            .iter()
            .enumerate()
            .filter_map(|(i, l)| KeyLine::parse(&l.text).map(|k| (i, k)))
    }

    /// Indexes of the lines `selector` picks.
    pub fn find(&self, selector: &Selector) -> Vec<usize> {
        self.keys()
            .filter(|(_, k)| selector.matches(k))
            .map(|(i, _)| i)
            .collect()
    }

    /// The text of line `index` (without its line end).
    pub fn line(&self, index: usize) -> &[u8] {
        &self.lines[index].text
    }

    /// Makes `line` the one line `selector` picks: unchanged when it is
    /// there already, else the first match is replaced in place (other
    /// matches, older copies of the kit's line, go) or it is appended.
    pub fn upsert(&mut self, line: &[u8], selector: &Selector) -> Change {
        let found = self.find(selector);
        match found.as_slice() {
            [only] if self.lines[*only].text == line => Change::Unchanged,
            [] => {
                let end = self.line_end();
                if let Some(last) = self.lines.last_mut() {
                    if last.end.is_empty() {
                        last.end = end.clone();
                    }
                }
                self.lines.push(RawLine {
                    text: line.to_vec(),
                    end,
                });
                Change::Added
            }
            [first, rest @ ..] => {
                self.lines[*first].text = line.to_vec();
                for &i in rest.iter().rev() {
                    self.lines.remove(i);
                }
                Change::Replaced
            }
        }
    }

    /// Removes every line `selector` picks.
    pub fn remove(&mut self, selector: &Selector) -> Change {
        let found = self.find(selector);
        for &i in found.iter().rev() {
            self.lines.remove(i);
        }
        if found.is_empty() {
            Change::Unchanged
        } else {
            Change::Removed(found.len())
        }
    }

    /// The line end new lines get: CRLF when the file already uses it
    /// throughout, else LF.
    fn line_end(&self) -> Vec<u8> {
        let ended: Vec<&RawLine> = self.lines.iter().filter(|l| !l.end.is_empty()).collect();
        if !ended.is_empty() && ended.iter().all(|l| l.end == b"\r\n") {
            b"\r\n".to_vec()
        } else {
            b"\n".to_vec()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIMa+nczdqlf8vEkX3kC4XeKPH0CgFzAu55CG/3ywHiBl";
    const OTHER: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB";

    fn key(blob: &str, comment: &str) -> PublicKey {
        PublicKey {
            key_type: "ssh-ed25519".into(),
            blob: blob.into(),
            comment: comment.into(),
        }
    }

    #[test]
    fn parses_plain_and_optioned_lines() {
        let line = format!("ssh-ed25519 {ED} alice@laptop  ");
        let k = KeyLine::parse(line.as_bytes()).unwrap();
        assert_eq!(k.options, None);
        assert_eq!(k.key_type, b"ssh-ed25519");
        assert_eq!(k.blob, ED.as_bytes());
        assert_eq!(k.comment, b"alice@laptop");

        let line = format!(
            r#"command="/usr/bin/rrsync -wo '/my dst' \"x\"",restrict,from="10.0.0.0/8,!10.0.0.1" ssh-ed25519 {ED} syncpipe@h"#
        );
        let k = KeyLine::parse(line.as_bytes()).unwrap();
        assert_eq!(k.comment, b"syncpipe@h");
        let opts = k.options();
        assert_eq!(opts.len(), 3);
        assert_eq!(
            opts[0].value.as_deref(),
            Some(&br#"/usr/bin/rrsync -wo '/my dst' "x""#[..])
        );
        assert_eq!(opts[1].name, "restrict");
        assert!(k.has_flag("restrict"));
        assert_eq!(k.option("FROM").unwrap(), b"10.0.0.0/8,!10.0.0.1");
        // Printing an option escapes its quotes again.
        assert_eq!(
            opts[0].to_string(),
            r#"command="/usr/bin/rrsync -wo '/my dst' \"x\"""#
        );
    }

    #[test]
    fn not_keys() {
        for line in [
            "",
            "   ",
            "# ssh-ed25519 AAAA",
            "no-pty",
            "ssh-ed25519",
            "ssh-foo AAAA x",
            "command=\"open quote ssh-ed25519 AAAA",
            "ssh-ed25519 not*base64",
        ] {
            assert_eq!(KeyLine::parse(line.as_bytes()), None, "{line:?}");
        }
    }

    #[test]
    fn public_key_files() {
        let k = PublicKey::parse(&format!("ssh-ed25519 {ED} syncpipe@h\n")).unwrap();
        assert_eq!(k.comment, "syncpipe@h");
        assert_eq!(k.to_line(), format!("ssh-ed25519 {ED} syncpipe@h"));
        assert!(PublicKey::parse(&format!("restrict ssh-ed25519 {ED}")).is_err());
        assert!(PublicKey::parse("garbage").is_err());
        assert!(PublicKey::parse(&format!("ssh-ed25519 {ED}\nssh-ed25519 {ED}")).is_err());
    }

    /// A file with everything a hand-kept authorized_keys has.
    fn messy() -> Vec<u8> {
        format!(
            "# keys for backups\r\n\
             \n\
             no-pty,environment=\"A=b c\" ssh-rsa AAAAB3Nza== bob\n\
             ssh-ed25519 {OTHER} old syncpipe key\n   \n\
             \tssh-ed25519 {OTHER} carol\r\n\
             weird-option ssh-ed25519 {OTHER}"
        )
        .into_bytes()
    }

    #[test]
    fn unedited_file_round_trips() {
        let bytes = messy();
        assert_eq!(AuthorizedKeys::parse(&bytes).to_bytes(), bytes);
        assert_eq!(AuthorizedKeys::parse(b"").to_bytes(), b"");
        assert_eq!(AuthorizedKeys::parse(b"\n\n").to_bytes(), b"\n\n");
        assert_eq!(AuthorizedKeys::parse(b"\r\r\n").to_bytes(), b"\r\r\n");
    }

    #[test]
    fn add_then_nothing_changes() {
        let mine = key(ED, "syncpipe@h");
        let sel = Selector {
            key: &mine,
            marker: Some("syncpipe@h"),
        };
        let before = messy();
        let mut ak = AuthorizedKeys::parse(&before);
        let line = format!("restrict {}", mine.to_line());
        assert_eq!(ak.upsert(line.as_bytes(), &sel), Change::Added);
        let after = ak.to_bytes();
        // The old last line gained the newline it lacked; nothing else moved.
        let mut expected = before.clone();
        expected.extend_from_slice(b"\n");
        expected.extend_from_slice(line.as_bytes());
        expected.extend_from_slice(b"\n");
        assert_eq!(after, expected);

        let mut again = AuthorizedKeys::parse(&after);
        assert_eq!(again.upsert(line.as_bytes(), &sel), Change::Unchanged);
        assert_eq!(again.to_bytes(), after);
    }

    #[test]
    fn replace_in_place_by_key_or_marker() {
        let mine = key(ED, "syncpipe@h");
        let sel = Selector {
            key: &mine,
            marker: Some("syncpipe@h"),
        };
        // An older key of this host (same marker) sits between other lines.
        let before = format!(
            "ssh-rsa AAAA x\r\nssh-ed25519 {OTHER} syncpipe@h\r\n# tail\r\nfrom=\"1.2.3.4\" ssh-ed25519 {ED} syncpipe@h\r\n"
        );
        let mut ak = AuthorizedKeys::parse(before.as_bytes());
        assert_eq!(ak.find(&sel), vec![1, 3]);
        let line = mine.to_line();
        assert_eq!(ak.upsert(line.as_bytes(), &sel), Change::Replaced);
        assert_eq!(
            String::from_utf8(ak.to_bytes()).unwrap(),
            format!("ssh-rsa AAAA x\r\n{line}\r\n# tail\r\n")
        );
    }

    #[test]
    fn crlf_files_get_crlf() {
        let mine = key(ED, "c");
        let sel = Selector {
            key: &mine,
            marker: None,
        };
        let mut ak = AuthorizedKeys::parse(b"# a\r\n");
        ak.upsert(b"ssh-ed25519 X", &sel);
        assert_eq!(ak.to_bytes(), b"# a\r\nssh-ed25519 X\r\n");
        let mut empty = AuthorizedKeys::parse(b"");
        empty.upsert(b"ssh-ed25519 X", &sel);
        assert_eq!(empty.to_bytes(), b"ssh-ed25519 X\n");
    }

    #[test]
    fn remove_exactly_the_kits_lines() {
        let mine = key(ED, "syncpipe@h");
        let sel = Selector {
            key: &mine,
            marker: Some("syncpipe@h"),
        };
        let others = format!("# c\n\nssh-ed25519 {OTHER} carol\ncommand=\"x\" ssh-rsa AAAA bob");
        let before = format!("{others}\nrestrict ssh-ed25519 {ED} syncpipe@h\n");
        let mut ak = AuthorizedKeys::parse(before.as_bytes());
        assert_eq!(ak.remove(&sel), Change::Removed(1));
        assert_eq!(ak.to_bytes(), format!("{others}\n").into_bytes());
        assert_eq!(ak.remove(&sel), Change::Unchanged);
        // A marker in a comment line or inside another key's comment is not a match.
        let near = format!("# syncpipe@h\nssh-ed25519 {OTHER} syncpipe@h2\n");
        let mut ak = AuthorizedKeys::parse(near.as_bytes());
        assert_eq!(ak.remove(&sel), Change::Unchanged);
        assert_eq!(ak.to_bytes(), near.into_bytes());
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(crate::testconfig::proptest(256))]

        /// Any bytes at all survive parse + print, and an edit that adds
        /// then removes the kit's line leaves every other line as it was.
        #[test]
        fn arbitrary_files_survive(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let ak = AuthorizedKeys::parse(&bytes);
            prop_assert_eq!(ak.to_bytes(), bytes.clone());
            let mine = PublicKey { key_type: "ssh-ed25519".into(), blob: "QUJD".into(), comment: "syncpipe@p".into() };
            let sel = Selector { key: &mine, marker: Some("syncpipe@p") };
            let mut edited = ak.clone();
            if edited.find(&sel).is_empty() {
                edited.upsert(mine.to_line().as_bytes(), &sel);
                edited.remove(&sel);
                let out = edited.to_bytes();
                // Only a final line end may have been added.
                prop_assert!(out.starts_with(&bytes));
                prop_assert!([&b""[..], b"\n", b"\r\n"].contains(&&out[bytes.len()..]));
            }
        }
    }
}
