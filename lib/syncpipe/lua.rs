//! Evaluates an lsyncd configuration with a real Lua 5.4 (mlua, vendored) in
//! a sandbox: lsyncd's names are recorders (prelude.lua), and the file gets
//! no `io`, no `os.execute`, no `require`/`dofile`; only what lsyncd's
//! configurations use to compute values (strings, tables, math,
//! `os.getenv`/`os.date`/`os.time`).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use mlua::{Lua, LuaOptions, StdLib, Table, Value};

/// A Lua value as the importer needs it.
#[derive(Debug, Clone, PartialEq)]
pub enum LuaVal {
    Bool(bool),
    Num(f64),
    Str(String),
    /// String keys, and the array part (`{ "a", "b" }`) in order.
    Table(BTreeMap<String, LuaVal>, Vec<LuaVal>),
    /// A Lua function: code lsyncd would run, which a config file cannot carry.
    Function,
    /// Anything else (a coroutine, userdata), by type name.
    Other(&'static str),
}

impl LuaVal {
    pub fn get(&self, key: &str) -> Option<&LuaVal> {
        match self {
            LuaVal::Table(map, _) => map.get(key),
            _ => None,
        }
    }

    /// Lua truthiness: everything but `false` (and nil, which is absent).
    pub fn truthy(&self) -> bool {
        !matches!(self, LuaVal::Bool(false))
    }

    /// How the value reads in lsyncd's syntax, for the report.
    pub fn show(&self) -> String {
        match self {
            LuaVal::Bool(b) => b.to_string(),
            LuaVal::Num(n) if n.fract() == 0.0 && n.abs() < 1e15 => format!("{}", *n as i64),
            LuaVal::Num(n) => n.to_string(),
            LuaVal::Str(s) => format!("{s:?}"),
            LuaVal::Table(map, list) => {
                let mut parts: Vec<String> = list.iter().map(LuaVal::show).collect();
                parts.extend(map.iter().map(|(k, v)| format!("{k} = {}", v.show())));
                format!("{{ {} }}", parts.join(", "))
            }
            LuaVal::Function => "function".into(),
            LuaVal::Other(t) => (*t).into(),
        }
    }

    /// As text (a string, or a number as lsyncd concatenates it).
    pub fn text(&self) -> Option<String> {
        match self {
            LuaVal::Str(s) => Some(s.clone()),
            LuaVal::Num(_) => Some(self.show()),
            _ => None,
        }
    }
}

/// One `sync{}` call.
#[derive(Debug, Clone)]
pub struct SyncCall {
    /// What the user's own tables set (their layers included, lsyncd's
    /// `default.*` left out): the options the report lists.
    pub user: LuaVal,
    /// Everything lsyncd would use, its defaults inherited.
    pub config: LuaVal,
    /// `rsync`, `rsyncssh` or `direct`; `None` for a custom action.
    pub mode: Option<String>,
    /// The user's own action functions (`action`, `onCreate`, …).
    pub custom: Vec<String>,
}

/// What a configuration file asked lsyncd to do.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub settings: BTreeMap<String, LuaVal>,
    pub syncs: Vec<SyncCall>,
    /// Run-time calls made while loading (`spawn`, `alarm`, …).
    pub runtime_calls: Vec<String>,
}

const PRELUDE: &str = include_str!("prelude.lua");

/// Memory a configuration may use while it is evaluated.
const MEMORY_LIMIT: usize = 256 << 20;

/// Evaluates `code` (named `name` in Lua's messages) as lsyncd would load it.
pub fn evaluate(code: &[u8], name: &str) -> anyhow::Result<Recorded> {
    let lua = sandbox()?;
    lua.load(PRELUDE)
        .set_name("=syncpipe-prelude")
        .exec()
        .context("loading the lsyncd recorders")?;
    lua.load(code)
        .set_name(format!("@{name}"))
        .exec()
        .map_err(|e| anyhow::anyhow!("{}", lua_message(&e)))
        .with_context(|| format!("evaluating {name} as lsyncd would"))?;
    let records: Table = lua.globals().get("__syncpipe_records")?;
    let settings = match convert(records.get("settings")?, 0) {
        LuaVal::Table(map, _) => map,
        _ => BTreeMap::new(),
    };
    let mut syncs = Vec::new();
    for call in records.get::<Table>("syncs")?.sequence_values::<Table>() {
        let call = call?;
        let mode: Option<String> = call.get("mode")?;
        let custom: Vec<String> = call
            .get::<Table>("custom")?
            .sequence_values::<String>()
            .collect::<mlua::Result<_>>()?;
        syncs.push(SyncCall {
            user: convert(call.get("user")?, 0),
            config: convert(call.get("config")?, 0),
            mode,
            custom,
        });
    }
    let runtime_calls = records
        .get::<Table>("notes")?
        .sequence_values::<String>()
        .collect::<mlua::Result<_>>()?;
    Ok(Recorded {
        settings,
        syncs,
        runtime_calls,
    })
}

/// Evaluates the file at `path`.
pub fn evaluate_file(path: &Path) -> anyhow::Result<Recorded> {
    let code = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    evaluate(&code, &path.display().to_string())
}

/// A Lua state with the safe standard libraries and a reduced `os`.
fn sandbox() -> anyhow::Result<Lua> {
    let libs = StdLib::STRING | StdLib::TABLE | StdLib::MATH | StdLib::UTF8 | StdLib::OS;
    let lua = Lua::new_with(libs, LuaOptions::default()).context("starting Lua")?;
    lua.set_memory_limit(MEMORY_LIMIT)?;
    let globals = lua.globals();
    let os: Table = globals.get("os")?;
    let safe = lua.create_table()?;
    for name in ["getenv", "date", "time", "clock", "difftime"] {
        safe.set(name, os.get::<Value>(name)?)?;
    }
    globals.set("os", safe)?;
    for name in ["dofile", "loadfile", "require", "collectgarbage"] {
        globals.set(name, Value::Nil)?;
    }
    Ok(lua)
}

/// Lua's own message (file:line: what), without mlua's traceback.
fn lua_message(err: &mlua::Error) -> String {
    match err {
        mlua::Error::RuntimeError(m) | mlua::Error::SyntaxError { message: m, .. } => m
            .split("\nstack traceback:")
            .next()
            .unwrap_or_default()
            .to_string(),
        mlua::Error::CallbackError { cause, .. } => lua_message(cause),
        other => other.to_string(),
    }
}

/// Tables nested deeper than this are cut (a table holding itself).
const MAX_DEPTH: usize = 16;

fn convert(value: Value, depth: usize) -> LuaVal {
    match value {
        Value::Nil => LuaVal::Other("nil"),
        Value::Boolean(b) => LuaVal::Bool(b),
        Value::Integer(i) => LuaVal::Num(i as f64),
        Value::Number(n) => LuaVal::Num(n),
        Value::String(s) => LuaVal::Str(s.to_string_lossy()),
        Value::Function(_) => LuaVal::Function,
        Value::Table(t) if depth < MAX_DEPTH => {
            let mut map = BTreeMap::new();
            let mut list = Vec::new();
            let len = t.raw_len();
            for i in 1..=len {
                if let Ok(v) = t.raw_get::<Value>(i) {
                    list.push(convert(v, depth + 1));
                }
            }
            for (k, v) in t.pairs::<Value, Value>().flatten() {
                match k {
                    Value::String(s) => {
                        map.insert(s.to_string_lossy(), convert(v, depth + 1));
                    }
                    Value::Integer(i) if i >= 1 && (i as usize) <= len => {}
                    other => {
                        map.insert(
                            format!("[{}]", other.to_string().unwrap_or_default()),
                            convert(v, depth + 1),
                        );
                    }
                }
            }
            LuaVal::Table(map, list)
        }
        Value::Table(_) => LuaVal::Other("table (nested too deep)"),
        Value::Thread(_) => LuaVal::Other("coroutine"),
        _ => LuaVal::Other("userdata"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_and_defaults_are_inherited_as_lsyncd_does() {
        let r = evaluate(
            br#"
            settings { logfile = "/var/log/l.log", "nodaemon" }
            local base = { default.rsync, delay = 5, rsync = { compress = true } }
            for _, d in ipairs { "a", "b" } do
                sync { base, source = "/srv/" .. d, target = "h:/x/" .. d }
            end
            "#,
            "t.lua",
        )
        .unwrap();
        assert_eq!(r.settings["nodaemon"], LuaVal::Bool(true));
        assert_eq!(r.syncs.len(), 2);
        let c = &r.syncs[1].config;
        assert_eq!(c.get("source"), Some(&LuaVal::Str("/srv/b".into())));
        assert_eq!(c.get("delay"), Some(&LuaVal::Num(5.0)));
        assert_eq!(c.get("delete"), Some(&LuaVal::Bool(true)));
        let rsync = c.get("rsync").unwrap();
        assert_eq!(rsync.get("compress"), Some(&LuaVal::Bool(true)));
        assert_eq!(rsync.get("times"), Some(&LuaVal::Bool(true)));
        assert_eq!(r.syncs[1].mode.as_deref(), Some("rsync"));
        // What the user set, without lsyncd's defaults.
        assert!(r.syncs[1].user.get("delete").is_none());
        assert!(r.syncs[1].user.get("rsync").unwrap().get("times").is_none());
    }

    #[test]
    fn lsyncd_errors_are_errors() {
        let typo = evaluate(b"settings { statusIntervall = 1 }", "t.lua").unwrap_err();
        assert!(format!("{typo:#}").contains("statusIntervall"), "{typo:#}");
        let gauge = evaluate(
            b"sync { default.rsync, source = '/a', target = '/b', rsync = { compres = true } }",
            "t.lua",
        )
        .unwrap_err();
        assert!(format!("{gauge:#}").contains("rsync.compres"), "{gauge:#}");
        let syntax = evaluate(
            b"sync {\n default.rsync,\n delay = 1\n maxProcesses = 1 }",
            "x.lua",
        )
        .unwrap_err();
        assert!(format!("{syntax:#}").contains("x.lua:4"), "{syntax:#}");
    }

    #[test]
    fn no_io_and_no_commands() {
        for code in [
            "io.open('/etc/passwd')",
            "os.execute('true')",
            "os.remove('/tmp/x')",
            "require('socket')",
            "dofile('/etc/x.lua')",
        ] {
            let e = evaluate(code.as_bytes(), "t.lua").unwrap_err();
            assert!(format!("{e:#}").contains("nil"), "{code}: {e:#}");
        }
        assert!(evaluate(b"local h = os.getenv('HOME')", "t.lua").is_ok());
    }
}
