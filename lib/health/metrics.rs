//! The Prometheus text exposition format (version 0.0.4), as
//! node_exporter's textfile collector reads it: `# HELP` and `# TYPE` once
//! per family, then one sample per label set. Hand-written: the format is
//! a few lines of escaping, and a client crate would bring a registry and
//! global state we do not need.

use std::collections::BTreeSet;
use std::fmt::Write as _;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Only ever goes up (until the program restarts); name ends `_total`.
    Counter,
    /// Goes up and down.
    Gauge,
}

/// A metrics text being built. Families must not repeat (Prometheus
/// refuses a second `# TYPE` for one name).
#[derive(Default)]
pub struct Exposition {
    text: String,
    families: BTreeSet<String>,
}

impl Exposition {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one family with its samples (each a label set and a value).
    /// A family without samples is left out entirely.
    pub fn family(
        &mut self,
        name: &str,
        kind: Kind,
        help: &str,
        samples: &[(Vec<(&str, &str)>, f64)],
    ) {
        debug_assert!(valid_name(name, true), "metric name {name:?}");
        debug_assert!(
            (kind == Kind::Counter) == name.ends_with("_total"),
            "{name}: counters and only counters end in _total"
        );
        let fresh = self.families.insert(name.to_string());
        debug_assert!(fresh, "metric family {name} written twice");
        if samples.is_empty() || !fresh {
            return;
        }
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let _ = writeln!(self.text, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            self.text.push_str(name);
            if !labels.is_empty() {
                self.text.push('{');
                for (i, (key, value)) in labels.iter().enumerate() {
                    debug_assert!(valid_name(key, false), "label name {key:?}");
                    if i > 0 {
                        self.text.push(',');
                    }
                    let _ = write!(self.text, "{key}=\"{}\"", escape_label(value));
                }
                self.text.push('}');
            }
            let _ = writeln!(self.text, " {}", number(*value));
        }
    }

    /// One sample without labels.
    pub fn single(&mut self, name: &str, kind: Kind, help: &str, value: f64) {
        self.family(name, kind, help, &[(Vec::new(), value)]);
    }

    pub fn finish(self) -> String {
        self.text
    }
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*` (labels: no colon).
fn valid_name(name: &str, colon: bool) -> bool {
    let ok = |c: char, first: bool| {
        c.is_ascii_alphabetic() || c == '_' || (colon && c == ':') || (!first && c.is_ascii_digit())
    };
    let mut chars = name.chars();
    chars.next().is_some_and(|c| ok(c, true)) && chars.all(|c| ok(c, false))
}

/// Label values: backslash, double quote and line feed are escaped.
pub fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// HELP text: backslash and line feed are escaped.
fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Integers without a fraction; the specials as Prometheus spells them.
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_with_help_type_and_escaped_labels() {
        let mut e = Exposition::new();
        e.family(
            "syncpipe_pushd_lag_seconds",
            Kind::Gauge,
            "Age of the oldest change\nnot applied",
            &[
                (vec![("target", "nas:/srv/a \"b\"\\c\nd")], 1.5),
                (vec![("target", "/copy")], 0.0),
            ],
        );
        e.single(
            "syncpipe_pushd_transfers_total",
            Kind::Counter,
            "Transfers",
            12.0,
        );
        e.family("syncpipe_pushd_empty", Kind::Gauge, "none", &[]);
        assert_eq!(
            e.finish(),
            "# HELP syncpipe_pushd_lag_seconds Age of the oldest change\\nnot applied\n\
             # TYPE syncpipe_pushd_lag_seconds gauge\n\
             syncpipe_pushd_lag_seconds{target=\"nas:/srv/a \\\"b\\\"\\\\c\\nd\"} 1.5\n\
             syncpipe_pushd_lag_seconds{target=\"/copy\"} 0\n\
             # HELP syncpipe_pushd_transfers_total Transfers\n\
             # TYPE syncpipe_pushd_transfers_total counter\n\
             syncpipe_pushd_transfers_total 12\n"
        );
    }

    #[test]
    fn numbers() {
        assert_eq!(number(3.0), "3");
        assert_eq!(number(-2.0), "-2");
        assert_eq!(number(0.25), "0.25");
        assert_eq!(number(f64::NAN), "NaN");
        assert_eq!(number(f64::INFINITY), "+Inf");
        assert_eq!(number(1.7e18), "1700000000000000000");
    }

    #[test]
    fn names() {
        assert!(valid_name("syncpipe_x:y_1", true));
        assert!(!valid_name("1x", true));
        assert!(!valid_name("a:b", false));
        assert!(!valid_name("", false));
        assert!(!valid_name("a-b", true));
    }
}
