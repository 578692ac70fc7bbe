//! `syncpipe import-lsyncd`: every `sync{}` of an evaluated lsyncd
//! configuration becomes one syncpipe config (units/syncpipe.conf.example),
//! and every lsyncd option found becomes a row of a table saying what it
//! became, or why nothing could carry it and what to do.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::excludes;
use super::lua::{LuaVal, Recorded, SyncCall};
use crate::location::Target;

/// What became of one lsyncd option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// The same effect, through the key or flag named.
    Carried,
    /// The same job done another way (the journal instead of a log file).
    Differs,
    /// Nothing carries it: the row says why and what to do.
    Lost,
}

/// One row of the report.
#[derive(Debug, Clone)]
pub struct Row {
    /// The config's NAME, or `settings`.
    pub scope: String,
    pub option: String,
    pub value: String,
    pub became: String,
    pub fate: Fate,
    pub note: String,
}

/// One syncpipe config: NAME.conf's keys in order, and an exclude file when
/// a pattern holds a space (EXCLUDES= splits at spaces).
#[derive(Debug, Clone, Default)]
pub struct Conf {
    pub name: String,
    pub keys: Vec<(String, String)>,
    pub exclude_file: Option<Vec<String>>,
    pub origin: String,
    /// The sync's lsyncd patterns and `delete` (Lua syntax), for `--check`.
    pub lsyncd_excludes: Vec<String>,
    pub lsyncd_delete: String,
}

impl Conf {
    /// Reads NAME.conf back (KEY=value lines, `#` comments).
    pub fn parse(name: &str, text: &str) -> Conf {
        Conf {
            name: name.to_string(),
            keys: text
                .lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Conf::default()
        }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.keys
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// NAME.conf's text.
    pub fn render(&self, dir: &Path) -> String {
        let mut s = format!(
            "# {}/{}.conf: imported from {} by `syncpipe import-lsyncd`.\n\
             # Start it with `systemctl enable --now syncpipe@{}`.\n",
            dir.display(),
            self.name,
            self.origin,
            self.name
        );
        for (k, v) in &self.keys {
            let _ = writeln!(s, "{k}={v}");
        }
        s
    }
}

/// The whole import: configs, and the report.
#[derive(Debug, Clone, Default)]
pub struct Import {
    pub confs: Vec<Conf>,
    pub rows: Vec<Row>,
}

impl Import {
    pub fn anything_lost(&self) -> bool {
        self.rows.iter().any(|r| r.fate == Fate::Lost)
    }

    /// The report as a person reads it: one block per config.
    pub fn table(&self) -> String {
        let headers = ["CONFIG", "LSYNCD OPTION", "VALUE", "SYNCPIPE"];
        let cells: Vec<[String; 4]> = self
            .rows
            .iter()
            .map(|r| {
                [
                    r.scope.clone(),
                    r.option.clone(),
                    clip(&r.value, 34),
                    match r.fate {
                        Fate::Lost => "NOT CARRIED OVER".to_string(),
                        _ => r.became.clone(),
                    },
                ]
            })
            .collect();
        let mut width = headers.map(str::len);
        for c in &cells {
            for i in 0..3 {
                width[i] = width[i].max(c[i].chars().count());
            }
        }
        let mut out = String::new();
        let line = |out: &mut String, c: [&str; 4]| {
            let _ = writeln!(
                out,
                "{:w0$}  {:w1$}  {:w2$}  {}",
                c[0],
                c[1],
                c[2],
                c[3],
                w0 = width[0],
                w1 = width[1],
                w2 = width[2]
            );
        };
        line(&mut out, headers);
        for (c, r) in cells.iter().zip(&self.rows) {
            line(&mut out, [&c[0], &c[1], &c[2], &c[3]]);
            if !r.note.is_empty() {
                let pad = width[0] + width[1] + width[2] + 6;
                let mark = if r.fate == Fate::Lost { "why: " } else { "" };
                let _ = writeln!(out, "{:pad$}{mark}{}", "", r.note);
            }
        }
        let lost = self.rows.iter().filter(|r| r.fate == Fate::Lost).count();
        let _ = writeln!(
            out,
            "\n{} config(s), {} option(s); {}",
            self.confs.len(),
            self.rows.len(),
            if lost == 0 {
                "everything carried over".to_string()
            } else {
                format!("{lost} NOT carried over (see `why:`)")
            }
        );
        out
    }
}

fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n - 1).collect::<String>())
    }
}

/// How configs are named.
#[derive(Debug, Clone, Default)]
pub struct Naming {
    /// `--name`: the name of the one sync, or a pattern where `{}` is the
    /// name derived from each source.
    pub name: Option<String>,
}

/// A systemd instance name from a source path: `/srv/www` → `srv-www`.
pub fn name_from_source(source: &str) -> String {
    let parts: Vec<String> = source
        .split('/')
        .filter(|c| !c.is_empty())
        .map(|c| {
            c.chars()
                .map(|ch| {
                    if ch.is_ascii_alphanumeric() || matches!(ch, '_' | '.') {
                        ch
                    } else {
                        '_'
                    }
                })
                .collect()
        })
        .collect();
    if parts.is_empty() {
        "root".into()
    } else {
        parts.join("-")
    }
}

/// Turns the recorded configuration into configs and the report.
/// `base` is the directory relative paths in the configuration mean (lsyncd's
/// working directory).
pub fn import(
    rec: &Recorded,
    origin: &str,
    naming: &Naming,
    base: &Path,
) -> anyhow::Result<Import> {
    let mut out = Import::default();
    if rec.syncs.is_empty() {
        anyhow::bail!("{origin} defines no sync{{}}: nothing to import");
    }
    if let Some(name) = &naming.name {
        if rec.syncs.len() > 1 && !name.contains("{}") {
            return Err(crate::cli::exit::coded(
                crate::cli::exit::Code::Usage,
                format!(
                    "{origin} has {} syncs: --name needs `{{}}` where each source's name goes",
                    rec.syncs.len()
                ),
            ));
        }
    }
    settings_rows(rec, &mut out.rows);
    for call in &rec.runtime_calls {
        out.rows.push(Row {
            scope: "settings".into(),
            option: format!("{call}()"),
            value: "called while loading".into(),
            became: String::new(),
            fate: Fate::Lost,
            note:
                "run-time Lua code (processes, alarms) has no syncpipe equivalent; run it from a \
                   systemd unit or timer"
                    .into(),
        });
    }
    let mut used: BTreeMap<String, usize> = BTreeMap::new();
    for call in &rec.syncs {
        let source = call
            .config
            .get("source")
            .and_then(LuaVal::text)
            .unwrap_or_default();
        let derived = name_from_source(&source);
        let mut name = match &naming.name {
            Some(n) => n.replace("{}", &derived),
            None => derived,
        };
        let n = used.entry(name.clone()).or_insert(0);
        *n += 1;
        if *n > 1 {
            name = format!("{name}-{n}");
        }
        if let Some(conf) = one_sync(call, &name, origin, rec, base, &mut out.rows) {
            out.confs.push(conf);
        }
    }
    Ok(out)
}

fn settings_rows(rec: &Recorded, rows: &mut Vec<Row>) {
    for (key, value) in &rec.settings {
        let (became, fate, note): (String, Fate, String) = match key.as_str() {
            "logfile" => (
                "LOG_FILE=/var/log/syncpipe/NAME/sync.log".into(),
                Fate::Differs,
                "in every config: each stage appends its log lines there (and to the journal); in \
                 the sync's log directory, the one place the hardened units may write"
                    .into(),
            ),
            "logfacility" | "logident" => (
                "the journal".into(),
                Fate::Differs,
                "each stage logs to the journal: journalctl -u 'syncpipe@NAME' -u 'batchd@NAME' -u 'watchd@NAME'".into(),
            ),
            "statusFile" => (
                "/run/syncpipe/NAME/pushd.json".into(),
                Fate::Differs,
                "every stage writes a JSON status file (and .prom metrics) there, not at lsyncd's \
                 path (the hardened units write only under /run/syncpipe/NAME/); read them with \
                 `syncpipe status NAME` (--json for a machine)"
                    .into(),
            ),
            "statusInterval" => (
                "on every change".into(),
                Fate::Differs,
                "the status files are rewritten on every change (at most once a second) and every \
                 5 s while idle, so they are never stale; nothing to set"
                    .into(),
            ),
            "inotifyMode" => match value.text().as_deref() {
                Some("CloseWrite") => ("watchd --events=close_write (its default)".into(), Fate::Carried, String::new()),
                Some("Modify") => ("WATCHD_OPTS=--events=modify".into(), Fate::Carried, "in every config".into()),
                Some("CloseWrite or Modify") => ("WATCHD_OPTS=--events=all".into(), Fate::Carried, "in every config".into()),
                _ => (String::new(), Fate::Lost, "not an inotifyMode lsyncd knows".into()),
            },
            "maxProcesses" => ("PUSHD_OPTS=--max-procs".into(), Fate::Carried, "in every config (lsyncd: every sync{} after it)".into()),
            "maxDelays" => ("BATCHD_OPTS=--max-events".into(), Fate::Carried, "in every config (lsyncd: every sync{} after it)".into()),
            "nodaemon" => (
                "systemd".into(),
                Fate::Differs,
                "the stages run in the foreground under systemd; nothing to set".into(),
            ),
            "pidfile" => ("systemd".into(), Fate::Differs, "systemd tracks the main PID".into()),
            "insist" => (
                "pushd retries".into(),
                Fate::Carried,
                "pushd retries a failed start-up sync (--retry-min/--retry-max) instead of exiting".into(),
            ),
            _ => (String::new(), Fate::Lost, "unknown setting".into()),
        };
        rows.push(Row {
            scope: "settings".into(),
            option: key.clone(),
            value: value.show(),
            became,
            fate,
            note,
        });
    }
}

/// Collects one sync's keys and rows.
struct Builder<'a> {
    name: &'a str,
    rows: &'a mut Vec<Row>,
    watchd: Vec<String>,
    batchd: Vec<String>,
    pushd: Vec<String>,
    excludes: Vec<String>,
    lsyncd_excludes: Vec<String>,
    /// Converted filter rules in lsyncd's order (first match wins).
    filters: Vec<Vec<String>>,
    /// `rsync.binary`, when not the one on PATH.
    rsync_binary: Option<String>,
}

impl Builder<'_> {
    fn row(&mut self, option: &str, value: &LuaVal, became: &str, fate: Fate, note: &str) {
        self.rows.push(Row {
            scope: self.name.to_string(),
            option: option.to_string(),
            value: value.show(),
            became: became.to_string(),
            fate,
            note: note.to_string(),
        });
    }

    /// A pushd flag; a value with a space cannot be written in PUSHD_OPTS.
    fn pushd_flag(&mut self, option: &str, value: &LuaVal, flag: String, note: &str) {
        if flag.chars().any(char::is_whitespace) {
            self.row(
                option,
                value,
                "",
                Fate::Lost,
                "the value holds a space, and PUSHD_OPTS= splits at spaces; write a drop-in \
                 with its own ExecStart= to pass it",
            );
        } else {
            self.row(
                option,
                value,
                &format!("PUSHD_OPTS={flag}"),
                Fate::Carried,
                note,
            );
            self.pushd.push(flag);
        }
    }
}

fn one_sync(
    call: &SyncCall,
    name: &str,
    origin: &str,
    rec: &Recorded,
    base: &Path,
    rows: &mut Vec<Row>,
) -> Option<Conf> {
    let c = &call.config;
    let mut b = Builder {
        name,
        rows,
        watchd: Vec::new(),
        batchd: Vec::new(),
        pushd: Vec::new(),
        excludes: Vec::new(),
        lsyncd_excludes: Vec::new(),
        filters: Vec::new(),
        rsync_binary: None,
    };
    let Some(mode) = call.mode.as_deref() else {
        b.row(
            "action",
            &LuaVal::Function,
            "",
            Fate::Lost,
            &format!(
                "custom Lua actions ({}) run commands lsyncd-style; syncpipe pushes with rsync \
                 only: no config written for this sync",
                call.custom.join(", ")
            ),
        );
        return None;
    };
    let LuaVal::Table(user, _) = &call.user else {
        return None;
    };
    let mut keys: Vec<(String, String)> = Vec::new();
    let mut targets: Vec<String> = Vec::new();
    let mode_value = LuaVal::Str(format!("default.{mode}"));
    match mode {
        "direct" => {
            b.row(
                "default.direct",
                &mode_value,
                "PUSHD_OPTS=--direct",
                Fate::Carried,
                "local target, changes applied with file system calls",
            );
            b.pushd.push("--direct".into());
        }
        "rsyncssh" => b.row(
            "default.rsyncssh",
            &mode_value,
            "TARGETS=host:targetdir",
            Fate::Carried,
            "rsync over ssh",
        ),
        _ => b.row(
            "default.rsync",
            &mode_value,
            "pushd (rsync)",
            Fate::Carried,
            "",
        ),
    }
    for (key, value) in user {
        match key.as_str() {
            "source" => {
                let text = value.text().unwrap_or_default();
                let abs = base.join(&text);
                let note = if Path::new(&text).is_absolute() {
                    ""
                } else {
                    "lsyncd reads a relative source from its working directory"
                };
                b.row("source", value, "SOURCE=", Fate::Carried, note);
                keys.push(("SOURCE".into(), abs.display().to_string()));
            }
            "target" | "host" | "targetdir" => {
                let target = if key == "target" {
                    value.text()
                } else if key == "host" {
                    match (value.text(), c.get("targetdir").and_then(LuaVal::text)) {
                        (Some(h), Some(d)) => Some(format!("{h}:{d}")),
                        _ => None,
                    }
                } else {
                    b.row(
                        "targetdir",
                        value,
                        "TARGETS= (with host)",
                        Fate::Carried,
                        "",
                    );
                    continue;
                };
                let Some(target) = target else {
                    b.row(key, value, "", Fate::Lost, "not a string");
                    continue;
                };
                // A local target is made absolute (units run in /), as the
                // source is.
                let local =
                    Target::parse(std::ffi::OsStr::new(&target), base).is_ok_and(|t| t.is_local());
                let target = if local && !target.starts_with('/') {
                    base.join(&target).display().to_string()
                } else {
                    target
                };
                match Target::parse(std::ffi::OsStr::new(&target), base) {
                    Ok(_) if super::words::quote(&target).is_some() => {
                        let note = if mode == "direct" && target.contains(':') {
                            "--direct needs a local target"
                        } else {
                            ""
                        };
                        b.row(key, value, "TARGETS=", Fate::Carried, note);
                        targets.push(target);
                    }
                    Ok(_) => b.row(key, value, "", Fate::Lost,
                        "a quote, backslash or control character cannot be written in TARGETS=; use a symlink without one"),
                    Err(e) => b.row(key, value, "", Fate::Lost, &format!("not a target pushd reads: {e}")),
                }
            }
            "delay" => match value {
                LuaVal::Num(n) if *n >= 0.0 => {
                    b.row(
                        "delay",
                        value,
                        "DELAY= BATCHD_OPTS=--settle=0",
                        Fate::Carried,
                        "batchd writes a batch this long after its first change, as lsyncd does \
                         (--settle=0: not sooner when the input goes quiet)",
                    );
                }
                _ => b.row("delay", value, "", Fate::Lost, "not a number of seconds"),
            },
            "init" => {
                if value.truthy() {
                    b.row(
                        "init",
                        value,
                        "(default: pushd syncs at start-up)",
                        Fate::Carried,
                        "",
                    );
                } else {
                    b.row("init", value, "PUSHD_OPTS=--no-init", Fate::Carried, "");
                    b.pushd.push("--no-init".into());
                }
            }
            "delete" => match value {
                LuaVal::Bool(true) => b.row(
                    "delete",
                    value,
                    "(default: pushd --delete=true)",
                    Fate::Carried,
                    "",
                ),
                LuaVal::Bool(false) => b.pushd_flag("delete", value, "--delete=false".into(), ""),
                LuaVal::Str(s) if s == "startup" || s == "running" => {
                    b.pushd_flag("delete", value, format!("--delete={s}"), "")
                }
                _ => b.row(
                    "delete",
                    value,
                    "",
                    Fate::Lost,
                    "lsyncd knows true, false, 'startup', 'running'",
                ),
            },
            "exclude" => {
                let list: Vec<String> = match value {
                    LuaVal::Table(_, l) => l.iter().filter_map(LuaVal::text).collect(),
                    v => v.text().into_iter().collect(),
                };
                exclude_rows(&mut b, "exclude", &list);
            }
            "excludeFrom" => {
                let file = value.text().unwrap_or_default();
                match std::fs::read_to_string(base.join(&file)) {
                    Ok(text) => {
                        let (patterns, includes) = lsyncd_exclude_file(&text);
                        if includes > 0 {
                            b.row(
                                "excludeFrom",
                                value,
                                "",
                                Fate::Differs,
                                &format!("{includes} `+` line(s) skipped, as lsyncd skips them"),
                            );
                        }
                        exclude_rows(&mut b, "excludeFrom", &patterns);
                    }
                    Err(e) => b.row(
                        "excludeFrom",
                        value,
                        "",
                        Fate::Lost,
                        &format!(
                        "cannot read {file}: {e}; copy it here and import again (its patterns are \
                         converted, not referenced)"),
                    ),
                }
            }
            "filter" => {
                let list: Vec<String> = match value {
                    LuaVal::Table(_, l) => l.iter().filter_map(LuaVal::text).collect(),
                    v => v.text().into_iter().collect(),
                };
                filter_rows(&mut b, "filter", &list);
            }
            "filterFrom" => {
                let file = value.text().unwrap_or_default();
                match std::fs::read_to_string(base.join(&file)) {
                    Ok(text) => {
                        let rules: Vec<String> = text
                            .lines()
                            .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
                            .map(str::to_string)
                            .collect();
                        filter_rows(&mut b, "filterFrom", &rules);
                    }
                    Err(e) => b.row(
                        "filterFrom",
                        value,
                        "",
                        Fate::Lost,
                        &format!(
                        "cannot read {file}: {e}; copy it here and import again (its rules are \
                         converted, not referenced)"),
                    ),
                }
            }
            "maxDelays" | "maxProcesses" => {
                // lsyncd lets settings{} override the sync's own value.
                let effective = c.get(key).unwrap_or(value);
                let note = if effective != value {
                    format!(
                        "settings{{}} overrides it with {}, as in lsyncd",
                        effective.show()
                    )
                } else {
                    String::new()
                };
                match (key.as_str(), effective) {
                    ("maxDelays", LuaVal::Num(n)) if *n >= 1.0 => {
                        b.row(
                            key,
                            value,
                            &format!("BATCHD_OPTS=--max-events={}", effective.show()),
                            Fate::Carried,
                            &note,
                        );
                        b.batchd.push(format!("--max-events={}", effective.show()));
                    }
                    ("maxProcesses", LuaVal::Num(n)) if *n >= 1.0 => b.pushd_flag(
                        key,
                        value,
                        format!("--max-procs={}", effective.show()),
                        &note,
                    ),
                    _ => b.row(key, value, "", Fate::Lost, "not a positive number"),
                }
            }
            "rsync" => rsync_rows(&mut b, value),
            "ssh" => ssh_rows(&mut b, value),
            "onMove" if value == &LuaVal::Bool(true) => b.row(
                "onMove",
                value,
                "(pushd applies renames)",
                Fate::Carried,
                "",
            ),
            "exitcodes" | "rsyncExitCodes" | "sshExitCodes" => b.row(
                key,
                value,
                "pushd's exit-code rules",
                Fate::Differs,
                "pushd classifies rsync's exit codes itself (24 is success, network errors retry)",
            ),
            _ => b.row(key, value, "", Fate::Lost, "not an option syncpipe knows"),
        }
    }
    // Settings lsyncd copies into every sync.
    for (key, flag) in [
        ("maxProcesses", "--max-procs"),
        ("maxDelays", "--max-events"),
    ] {
        if let (Some(LuaVal::Num(n)), None) = (rec.settings.get(key), user.get(key)) {
            // Only syncs made after settings{} got the value.
            if *n >= 1.0 && c.get(key) == rec.settings.get(key) {
                let arg = format!("{flag}={}", *n as u64);
                if key == "maxProcesses" {
                    b.pushd.push(arg)
                } else {
                    b.batchd.push(arg)
                }
            }
        }
    }
    match rec
        .settings
        .get("inotifyMode")
        .and_then(LuaVal::text)
        .as_deref()
    {
        Some("Modify") => b.watchd.push("--events=modify".into()),
        Some("CloseWrite or Modify") => b.watchd.push("--events=all".into()),
        _ => {}
    }
    // lsyncd tries its filter rules first, first match winning, then the
    // excludes; the kit's last match wins: excludes, then the rules reversed.
    let filters = std::mem::take(&mut b.filters);
    for rule in filters.into_iter().rev() {
        b.excludes.extend(rule);
    }
    if targets.is_empty() {
        return None;
    }
    let delay = match c.get("delay") {
        Some(LuaVal::Num(n)) if *n >= 0.0 => LuaVal::Num(*n).show(),
        _ => "15".into(),
    };
    let targets: Vec<String> = targets
        .iter()
        .filter_map(|t| super::words::quote(t))
        .collect();
    keys.push(("TARGETS".into(), targets.join(" ")));
    keys.push(("DELAY".into(), format!("{delay}s")));
    // lsyncd sends a change `delay` after it came, never sooner: batchd's
    // settle (a batch as soon as the input is quiet) would change that.
    b.batchd.insert(0, "--settle=0".into());
    let spaced = b.excludes.iter().any(|p| p.contains(' '));
    let mut conf = Conf {
        name: name.to_string(),
        origin: origin.to_string(),
        lsyncd_excludes: b.lsyncd_excludes.clone(),
        lsyncd_delete: c
            .get("delete")
            .map(LuaVal::show)
            .unwrap_or_else(|| "true".into()),
        ..Conf::default()
    };
    if spaced {
        keys.push(("EXCLUDES".into(), String::new()));
        keys.push(("EXCLUDE_FROM".into(), format!("{name}.exclude")));
        conf.exclude_file = Some(b.excludes.clone());
    } else {
        keys.push(("EXCLUDES".into(), b.excludes.join(" ")));
        keys.push(("EXCLUDE_FROM".into(), String::new()));
    }
    keys.push(("WATCHD_OPTS".into(), b.watchd.join(" ")));
    keys.push(("BATCHD_OPTS".into(), b.batchd.join(" ")));
    keys.push(("PUSHD_OPTS".into(), b.pushd.join(" ")));
    if let Some(binary) = b.rsync_binary.take() {
        keys.push(("RSYNC_BINARY".into(), binary));
    }
    if rec.settings.contains_key("logfile") {
        keys.push((
            "LOG_FILE".into(),
            format!("/var/log/syncpipe/{name}/sync.log"),
        ));
    }
    conf.keys = keys;
    Some(conf)
}

/// The patterns of an lsyncd `excludeFrom` file, read as lsyncd reads it:
/// `+` lines, comments and blank lines skipped, a leading `-` dropped. Also
/// the number of `+` lines skipped.
pub fn lsyncd_exclude_file(text: &str) -> (Vec<String>, usize) {
    let mut patterns = Vec::new();
    let mut includes = 0;
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with('+') {
            includes += 1;
        } else if !trimmed.starts_with('#') && !trimmed.trim().is_empty() {
            let rest = trimmed.strip_prefix('-').unwrap_or(trimmed).trim_start();
            patterns.push(rest.to_string());
        }
    }
    (patterns, includes)
}

fn exclude_rows(b: &mut Builder, option: &str, patterns: &[String]) {
    for p in patterns {
        let value = LuaVal::Str(p.clone());
        b.lsyncd_excludes.push(p.clone());
        match excludes::convert(p) {
            Ok(ours) => {
                let note = if ours.len() == 1 && &ours[0] == p {
                    String::new()
                } else {
                    "same paths as lsyncd leaves out".to_string()
                };
                b.row(
                    option,
                    &value,
                    &format!("EXCLUDES={}", ours.join(" ")),
                    Fate::Carried,
                    &note,
                );
                b.excludes.extend(ours);
            }
            Err(why) => b.row(option, &value, "", Fate::Lost, &why),
        }
    }
}

/// lsyncd filter rules (`+ pattern` includes, `- pattern` excludes).
fn filter_rows(b: &mut Builder, option: &str, rules: &[String]) {
    for rule in rules {
        let value = LuaVal::Str(rule.clone());
        let trimmed = rule.trim_start();
        let (sign, pattern) = match trimmed.chars().next() {
            Some(c @ ('+' | '-')) => (c, trimmed[1..].trim_start()),
            _ => {
                b.row(
                    option,
                    &value,
                    "",
                    Fate::Lost,
                    "lsyncd refuses a rule not starting with + or -",
                );
                continue;
            }
        };
        match excludes::convert(pattern) {
            Ok(ours) => {
                let ours: Vec<String> = if sign == '+' {
                    ours.into_iter().map(|p| format!("!{p}")).collect()
                } else {
                    ours
                };
                b.row(option, &value, &format!("EXCLUDES=… {}", ours.join(" ")), Fate::Carried,
                    "after the excludes, rules reversed: the kit's last match wins as lsyncd's first does");
                b.filters.push(ours);
            }
            Err(why) => b.row(option, &value, "", Fate::Lost, &why),
        }
    }
}

/// rsync's long option for an lsyncd `rsync = { … }` flag.
fn rsync_long(key: &str) -> Option<&'static str> {
    Some(match key {
        "acls" => "--acls",
        "append" => "--append",
        "append_verify" => "--append-verify",
        "backup" => "--backup",
        "copy_dirlinks" => "--copy-dirlinks",
        "copy_links" => "--copy-links",
        "cvs_exclude" => "--cvs-exclude",
        "executability" => "--executability",
        "existing" => "--existing",
        "hard_links" => "--hard-links",
        "ignore_times" => "--ignore-times",
        "ipv4" => "--ipv4",
        "ipv6" => "--ipv6",
        "keep_dirlinks" => "--keep-dirlinks",
        "one_file_system" => "--one-file-system",
        "omit_dir_times" => "--omit-dir-times",
        "omit_link_times" => "--omit-link-times",
        "prune_empty_dirs" => "--prune-empty-dirs",
        "sparse" => "--sparse",
        "update" => "--update",
        "whole_file" => "--whole-file",
        "xattrs" => "--xattrs",
        _ => return None,
    })
}

fn rsync_rows(b: &mut Builder, rsync: &LuaVal) {
    let LuaVal::Table(map, _) = rsync else {
        b.row("rsync", rsync, "", Fate::Lost, "not a table");
        return;
    };
    for (key, v) in map {
        let opt = format!("rsync.{key}");
        let text = v.text().unwrap_or_default();
        match key.as_str() {
            "binary" if text == "/usr/bin/rsync" || text == "rsync" => {
                b.row(&opt, v, "rsync from PATH", Fate::Carried, "")
            }
            "binary" => {
                b.row(&opt, v, "RSYNC_BINARY=", Fate::Carried, "");
                b.rsync_binary = Some(text);
            }
            "archive" if v.truthy() => b.row(&opt, v, "(pushd always runs rsync --archive)", Fate::Carried, ""),
            "archive" => b.row(&opt, v, "(pushd always runs rsync --archive)", Fate::Differs,
                "pushd keeps permissions, owner, group and devices too; add rsync.perms = false etc. to turn them off"),
            "owner" | "perms" | "group" | "times" | "links" if v.truthy() => {
                b.row(&opt, v, "(in rsync --archive)", Fate::Carried, "")
            }
            "owner" | "perms" | "group" | "times" | "links" => {
                b.pushd_flag(&opt, v, format!("--rsync-opt=--no-{key}"), "")
            }
            "compress" if v.truthy() => b.pushd_flag(&opt, v, "--compress".into(), ""),
            "checksum" if v.truthy() => b.pushd_flag(&opt, v, "--checksum".into(), ""),
            "inplace" if v.truthy() => b.pushd_flag(&opt, v, "--inplace".into(), ""),
            "verbose" | "quiet" => b.row(&opt, v, "pushd's log", Fate::Differs,
                "pushd logs every transfer to the journal; add -v to PUSHD_OPTS for more"),
            "protect_args" => b.row(&opt, v, "(rsync's default since 3.2.4)", Fate::Carried, ""),
            "bwlimit" => b.pushd_flag(&opt, v, format!("--bwlimit={text}"), "rsync's unit: KiB/s"),
            "password_file" => b.pushd_flag(&opt, v, format!("--password-file={text}"), ""),
            "rsync_path" => b.pushd_flag(&opt, v, format!("--rsync-path={text}"), ""),
            "timeout" => b.pushd_flag(&opt, v, format!("--io-timeout={text}"), ""),
            "chown" | "chmod" | "temp_dir" | "backup_dir" | "suffix" | "usermap" | "groupmap" => {
                let flag = key.replace('_', "-");
                b.pushd_flag(&opt, v, format!("--rsync-opt=--{flag}={text}"), "passed to rsync")
            }
            "rsh" => rsh_rows(b, &opt, v, &text),
            "dry_run" if v.truthy() => b.pushd_flag(&opt, v, "--dry-run".into(),
                "pushd changes nothing and prints what each transfer would do"),
            "_extra" => {
                let LuaVal::Table(_, list) = v else {
                    b.row(&opt, v, "", Fate::Lost, "not a list");
                    continue;
                };
                for arg in list.iter().filter_map(LuaVal::text) {
                    let one = LuaVal::Str(arg.clone());
                    extra_row(b, &one, &arg);
                }
            }
            k if !v.truthy() => b.row(&opt, v, "(off, as pushd runs rsync)", Fate::Carried, &format!("{k} off")),
            k => match rsync_long(k) {
                Some(flag) => b.pushd_flag(&opt, v, format!("--rsync-opt={flag}"), "passed to rsync"),
                None => b.row(&opt, v, "", Fate::Lost, "not an rsync option syncpipe knows"),
            },
        }
    }
}

/// One `rsync._extra` argument.
fn extra_row(b: &mut Builder, v: &LuaVal, arg: &str) {
    let opt = "rsync._extra";
    if let Some(rate) = arg.strip_prefix("--bwlimit=") {
        b.pushd_flag(opt, v, format!("--bwlimit={rate}"), "");
    } else if matches!(arg, "-z" | "--compress") {
        b.pushd_flag(opt, v, "--compress".into(), "");
    } else if matches!(arg, "--inplace" | "--partial" | "--checksum" | "-c") {
        let flag = if arg == "-c" { "--checksum" } else { arg };
        b.pushd_flag(opt, v, flag.into(), "");
    } else if arg.starts_with("--delete")
        || arg.starts_with("--exclude")
        || arg.starts_with("--include")
        || arg.starts_with("--filter")
        || arg.starts_with("--files-from")
        || arg == "-n"
        || arg == "--dry-run"
    {
        b.row(
            opt,
            v,
            "",
            Fate::Lost,
            "pushd decides what to send and delete: use exclude/delete options instead of rsync's",
        );
    } else {
        b.pushd_flag(opt, v, format!("--rsync-opt={arg}"), "passed to rsync");
    }
}

/// `rsync.rsh = "/usr/bin/ssh -p 22 -o X=y -i key"`: ssh's flags map to pushd's.
fn rsh_rows(b: &mut Builder, opt: &str, v: &LuaVal, rsh: &str) {
    let words: Vec<&str> = rsh.split_whitespace().collect();
    let Some((program, rest)) = words.split_first() else {
        b.row(opt, v, "", Fate::Lost, "empty");
        return;
    };
    if !program.ends_with("ssh") {
        b.row(
            opt,
            v,
            "",
            Fate::Lost,
            "pushd runs ssh; another remote shell has no equivalent",
        );
        return;
    }
    let mut flags = Vec::new();
    let mut it = rest.iter();
    while let Some(w) = it.next() {
        let next = |it: &mut std::slice::Iter<&str>| it.next().map(|s| s.to_string());
        let flag = match *w {
            "-p" => next(&mut it).map(|p| format!("--port={p}")),
            "-i" => next(&mut it).map(|f| format!("--identity={f}")),
            "-o" => next(&mut it).map(|o| format!("--ssh-opt={o}")),
            w if w.starts_with("-o") && w.len() > 2 => Some(format!("--ssh-opt={}", &w[2..])),
            w if w.starts_with("-p") && w.len() > 2 => Some(format!("--port={}", &w[2..])),
            _ => None,
        };
        match flag {
            Some(f) => flags.push(f),
            None => {
                b.row(opt, v, "", Fate::Lost, &format!(
                    "ssh argument `{w}` has no pushd flag (it knows -p, -i, -o); put it in ~/.ssh/config"));
                return;
            }
        }
    }
    b.row(
        opt,
        v,
        &format!("PUSHD_OPTS={}", flags.join(" ")),
        Fate::Carried,
        "",
    );
    b.pushd.extend(flags);
}

fn ssh_rows(b: &mut Builder, ssh: &LuaVal) {
    let LuaVal::Table(map, _) = ssh else {
        b.row("ssh", ssh, "", Fate::Lost, "not a table");
        return;
    };
    for (key, v) in map {
        let opt = format!("ssh.{key}");
        let text = v.text().unwrap_or_default();
        match key.as_str() {
            "port" => b.pushd_flag(&opt, v, format!("--port={text}"), ""),
            "identityFile" => b.pushd_flag(&opt, v, format!("--identity={text}"), ""),
            "options" => {
                let LuaVal::Table(options, _) = v else {
                    b.row(&opt, v, "", Fate::Lost, "not a table");
                    continue;
                };
                for (k, o) in options {
                    let one = LuaVal::Str(format!("{k}={}", o.text().unwrap_or_default()));
                    b.pushd_flag(
                        &opt,
                        &one,
                        format!("--ssh-opt={k}={}", o.text().unwrap_or_default()),
                        "",
                    );
                }
            }
            "binary" if text == "/usr/bin/ssh" || text == "ssh" => {
                b.row(&opt, v, "ssh from PATH", Fate::Carried, "")
            }
            _ => b.row(
                &opt,
                v,
                "",
                Fate::Lost,
                "pushd runs ssh from PATH with -p/-i/-o only; put the rest in ~/.ssh/config",
            ),
        }
    }
}

/// Writes the configs into `dir` (refusing to overwrite unless `force`),
/// returning the paths written.
pub fn write(imp: &Import, dir: &Path, force: bool) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut written = Vec::new();
    for conf in &imp.confs {
        let path = dir.join(format!("{}.conf", conf.name));
        if path.exists() && !force {
            return Err(crate::cli::exit::coded(
                crate::cli::exit::Code::Usage,
                format!(
                    "{} exists: pass --force to replace it, or --dir elsewhere",
                    path.display()
                ),
            ));
        }
        let mut conf = conf.clone();
        if let Some(lines) = &conf.exclude_file {
            let file = dir.join(format!("{}.exclude", conf.name));
            std::fs::write(&file, lines.join("\n") + "\n")
                .with_context(|| format!("writing {}", file.display()))?;
            for kv in conf.keys.iter_mut().filter(|(k, _)| k == "EXCLUDE_FROM") {
                kv.1 = file.display().to_string();
            }
            written.push(file);
        }
        std::fs::write(&path, conf.render(dir))
            .with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// What `syncpipe import-lsyncd` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    pub file: PathBuf,
    /// Where NAME.conf goes; `None` prints them on stdout.
    pub dir: Option<PathBuf>,
    pub naming: Naming,
    pub force: bool,
    /// Run lsyncd and the imported pipeline side by side and compare.
    pub check: bool,
}

/// Runs the import: configs written (or printed), the table on stdout (on
/// stderr with `--stdout`); [`Code::NotCarried`](crate::cli::exit::Code) when
/// some option could not be carried over.
pub fn run(opts: &Options) -> anyhow::Result<crate::cli::exit::Code> {
    use std::io::Write;
    let rec = super::lua::evaluate_file(&opts.file)
        .map_err(|e| crate::cli::exit::coded(crate::cli::exit::Code::Usage, format!("{e:#}")))?;
    let base = std::env::current_dir()?;
    let origin = opts.file.display().to_string();
    let imp = import(&rec, &origin, &opts.naming, &base)?;
    let table = imp.table();
    match &opts.dir {
        Some(dir) => {
            let written = write(&imp, dir, opts.force)?;
            let mut out = std::io::stdout().lock();
            for path in written {
                writeln!(out, "wrote {}", path.display())?;
            }
            writeln!(out)?;
            out.write_all(table.as_bytes())?;
        }
        None => {
            let dir = Path::new("/etc/syncpipe");
            let mut out = std::io::stdout().lock();
            for conf in &imp.confs {
                out.write_all(conf.render(dir).as_bytes())?;
                if let Some(lines) = &conf.exclude_file {
                    writeln!(out, "# {}/{}.exclude:", dir.display(), conf.name)?;
                    for l in lines {
                        writeln!(out, "#   {l}")?;
                    }
                }
                writeln!(out)?;
            }
            out.flush()?;
            eprint!("{table}");
        }
    }
    let mut differs = false;
    if opts.check {
        differs = check_all(&imp)?;
    }
    Ok(if imp.anything_lost() || differs {
        crate::cli::exit::Code::NotCarried
    } else {
        crate::cli::exit::Code::Ok
    })
}

/// `--check`: each config against lsyncd on a sample tree; true when some
/// target ended differently.
fn check_all(imp: &Import) -> anyhow::Result<bool> {
    use std::io::Write;
    let mut differs = false;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "\nCheck: lsyncd and the imported pipeline on the same sample tree"
    )?;
    for conf in &imp.confs {
        let work = std::env::temp_dir().join(format!(
            "syncpipe-check-{}-{}",
            std::process::id(),
            conf.name
        ));
        let _ = std::fs::remove_dir_all(&work);
        let outcome =
            super::check::compare(conf, &conf.lsyncd_excludes, &conf.lsyncd_delete, &work);
        let _ = std::fs::remove_dir_all(&work);
        let o = outcome.with_context(|| format!("checking {}", conf.name))?;
        if o.lsyncd_only.is_empty() && o.syncpipe_only.is_empty() {
            writeln!(out, "{}: same {} paths on both targets", o.name, o.files)?;
        } else {
            differs = true;
            writeln!(out, "{}: the targets DIFFER", o.name)?;
            for p in &o.lsyncd_only {
                writeln!(out, "  only lsyncd's:   {p}")?;
            }
            for p in &o.syncpipe_only {
                writeln!(out, "  only syncpipe's: {p}")?;
            }
        }
    }
    Ok(differs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exclude::Excludes;

    fn excluded(ex: &Excludes, rel: &str, is_dir: bool) -> bool {
        let comps: Vec<&str> = rel.split('/').collect();
        (1..=comps.len())
            .any(|n| ex.is_excluded(Path::new(&comps[..n].join("/")), n < comps.len() || is_dir))
    }

    #[test]
    fn filters_win_over_excludes_first_match_first() {
        let rec = super::super::lua::evaluate(
            br#"sync { default.rsync, source = "/s", target = "/t", exclude = { "*.bak" },
                       filter = { "- *.log", "+ /www/", "+ /www/**", "+ keep.bak", "- *" } }"#,
            "f.lua",
        )
        .unwrap();
        let imp = import(&rec, "f.lua", &Naming::default(), Path::new("/")).unwrap();
        let patterns: Vec<String> = imp.confs[0]
            .get("EXCLUDES")
            .unwrap()
            .split(' ')
            .map(str::to_string)
            .collect();
        let ex = Excludes::new(&patterns, &[] as &[&str]).unwrap();
        // As lsyncd decides: the first matching rule, else the excludes.
        for (path, dir, want) in [
            ("www/a/b.txt", false, false),
            ("www/a.log", false, true),
            ("keep.bak", false, false),
            ("other.bak", false, true),
            ("other/keep.bak", false, true),
            ("top.txt", false, true),
            ("www", true, false),
        ] {
            assert_eq!(excluded(&ex, path, dir), want, "{path} with {patterns:?}");
        }
        assert!(!imp.anything_lost());
    }

    /// A target with a space is carried, written so systemd reads it back
    /// as one word (lib/syncpipe/words.rs); one with a quote is not.
    #[test]
    fn a_target_with_a_space_is_quoted_for_the_unit() {
        let rec = super::super::lua::evaluate(
            br#"sync { default.rsync, source = "/s", target = "/mnt/usb disk/s" }
                sync { default.rsync, source = "/q", target = "/it's" }"#,
            "f.lua",
        )
        .unwrap();
        let imp = import(&rec, "f.lua", &Naming::default(), Path::new("/")).unwrap();
        let targets = imp.confs[0].get("TARGETS").unwrap();
        assert_eq!(targets, r#"\"/mnt/usb disk/s\""#);
        assert_eq!(super::super::words::split(targets), ["/mnt/usb disk/s"]);
        assert!(imp.anything_lost(), "the quoted one is not carried");
        assert_eq!(imp.confs.len(), 1);
    }

    #[test]
    fn names_from_sources() {
        assert_eq!(name_from_source("/srv/www"), "srv-www");
        assert_eq!(name_from_source("/"), "root");
        assert_eq!(name_from_source("/home/a b/x@y/"), "home-a_b-x_y");
    }
}
