//! A NAME.conf value as the units pass it, `$KEY` as a word of its own:
//! systemd's EnvironmentFile= takes a backslash as an escape, then the value
//! is split at whitespace with quotes respected (systemd.service(5),
//! "Command lines"). So `TARGETS=\"/srv/my copy\" nas:/srv/www` is two
//! targets; the backslashes keep the quotes from EnvironmentFile=, which
//! would take a leading `"` for its own.

/// How a word (a target) is written in a NAME.conf value, or `None` when it
/// cannot be written there simply (a quote, backslash or control character).
pub fn quote(word: &str) -> Option<String> {
    if word.is_empty()
        || word
            .chars()
            .any(|c| matches!(c, '"' | '\'' | '\\') || c.is_control())
    {
        return None;
    }
    Some(if word.contains(' ') {
        format!("\\\"{word}\\\"")
    } else {
        word.to_string()
    })
}

/// The words systemd makes of `raw` (the text after `KEY=` in the file).
pub fn split(raw: &str) -> Vec<String> {
    // EnvironmentFile=: a backslash takes the next character as it is.
    let mut value = String::new();
    let mut chars = raw.trim().chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => value.extend(chars.next()),
            c => value.push(c),
        }
    }
    // The command line: whitespace separates words outside quotes.
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut quote: Option<char> = None;
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') => word.get_or_insert_with(String::new).extend(chars.next()),
            (Some(_), c) => word.get_or_insert_with(String::new).push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                word.get_or_insert_with(String::new);
            }
            (None, '\\') => word.get_or_insert_with(String::new).extend(chars.next()),
            (None, c) if c.is_whitespace() => words.extend(word.take()),
            (None, c) => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As systemd 252 read these lines (a unit printing `$KEY` word by word,
    /// checked in a container): the escaped quotes hold a space anywhere.
    #[test]
    fn reads_what_systemd_reads() {
        assert_eq!(
            split(r#"\"/srv/my copy\" backup@nas:/srv/www"#),
            ["/srv/my copy", "backup@nas:/srv/www"]
        );
        assert_eq!(
            split(r#"/srv/x \"/srv/my copy\" c"#),
            ["/srv/x", "/srv/my copy", "c"]
        );
        assert_eq!(split(r"/srv/my\ copy e"), ["/srv/my", "copy", "e"]);
        assert_eq!(split("  a   b "), ["a", "b"]);
        assert!(split("").is_empty());
    }

    #[test]
    fn a_quoted_word_reads_back_as_itself() {
        for word in ["/srv/www", "/srv/my copy", "nas:/a b/c", "-x y", "é ü"] {
            let written = quote(word).unwrap();
            let line = format!("{written} other");
            assert_eq!(split(&line), [word, "other"], "{line}");
        }
        assert_eq!(quote("a\"b"), None);
        assert_eq!(quote("a\nb"), None);
        assert_eq!(quote("it's"), None);
    }
}
