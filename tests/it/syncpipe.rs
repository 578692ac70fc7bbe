//! `syncpipe import-lsyncd` on the lsyncd seed's configurations, lsyncd's own
//! shipped examples and configurations written the way people write Lua.
//! Each `tests/fixtures/lsyncd/*.lua` (and each example in
//! /usr/share/doc/lsyncd/examples) has a `.expected` file beside it (under
//! `shipped/` for lsyncd's) holding the exit code, the configs and the table;
//! `UPDATE_GOLDEN=1 cargo test --test it syncpipe::` rewrites them.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{bin, tempdir};

fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `syncpipe import-lsyncd --stdout FILE` from the repository root.
fn import_stdout(file: &Path) -> (i32, String, String) {
    import_stdout_in(&manifest(), file)
}

/// The same from `cwd` (what a relative source or target means).
fn import_stdout_in(cwd: &Path, file: &Path) -> (i32, String, String) {
    let out = Command::new(bin("syncpipe"))
        .current_dir(cwd)
        .env_remove("SYNCPIPE_TEST_HOME")
        .args(["import-lsyncd", "--stdout"])
        .arg(file)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn check_golden(cwd: &Path, lua: &Path, shown: &Path, expected: &Path) -> Option<String> {
    let (code, stdout, stderr) = import_stdout_in(cwd, shown);
    let got = format!("exit {code}\n--- configs (stdout)\n{stdout}--- table (stderr)\n{stderr}");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        fs::create_dir_all(expected.parent().unwrap()).unwrap();
        fs::write(expected, &got).unwrap();
        return None;
    }
    let want = fs::read_to_string(expected)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", expected.display()));
    (got != want).then(|| format!("{}:\n--- got\n{got}--- want\n{want}", lua.display()))
}

#[test]
fn fixtures_import_as_their_expected_files_say() {
    let dir = manifest().join("tests/fixtures/lsyncd");
    let mut seen = 0;
    let mut failures = Vec::new();
    let mut entries: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for lua in entries
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "lua"))
    {
        seen += 1;
        let shown = lua.strip_prefix(manifest()).unwrap();
        failures.extend(check_golden(
            &manifest(),
            lua,
            shown,
            &lua.with_extension("expected"),
        ));
    }
    assert!(seen >= 9, "only {seen} fixtures in {}", dir.display());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn lsyncd_shipped_examples_import_or_say_why_not() {
    let examples = Path::new("/usr/share/doc/lsyncd/examples");
    assert!(
        examples.is_dir(),
        "install lsyncd (make test-deps) for its examples"
    );
    let golden = manifest().join("tests/fixtures/lsyncd/shipped");
    let mut failures = Vec::new();
    let mut entries: Vec<_> = fs::read_dir(examples)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    let mut seen = 0;
    for lua in entries
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "lua"))
    {
        seen += 1;
        let name = lua.file_name().unwrap();
        // From /, so the relative `src` of the examples reads the same on
        // every machine.
        let expected = golden.join(name).with_extension("expected");
        failures.extend(check_golden(Path::new("/"), lua, lua, &expected));
    }
    assert!(seen >= 5, "only {seen} examples");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_seeds_mapped_options() {
    // Beyond the golden files: the facts a reader of the seed expects.
    let seed = |n: &str| import_stdout(&manifest().join(format!("tests/fixtures/lsyncd/{n}.lua")));
    let (code, conf, table) = seed("seed000-3-rsync-daemon");
    assert_eq!(
        code, 0,
        "every option carried over (statusFile: the status files)"
    );
    assert!(
        table.contains("statusFile") && table.contains("/run/syncpipe/NAME/pushd.json"),
        "statusFile's row in\n{table}"
    );
    for line in [
        "TARGETS=syncuser@172.29.88.223::module1",
        "DELAY=30s",
        "EXCLUDES=.* .tmp",
    ] {
        assert!(conf.lines().any(|l| l == line), "{line} in\n{conf}");
    }
    let pushd = conf.lines().find(|l| l.starts_with("PUSHD_OPTS=")).unwrap();
    for flag in [
        "--delete=running",
        "--no-init",
        "--bwlimit=200",
        "--compress",
        "--password-file=/etc/rsyncd.d/rsync.pwd",
    ] {
        assert!(
            pushd
                .split(' ')
                .any(|f| f.trim_start_matches("PUSHD_OPTS=") == flag),
            "{flag} in {pushd}"
        );
    }
    let (_, conf, _) = seed("seed000-5-rsyncssh-port");
    assert!(
        conf.contains("TARGETS=172.29.88.223:/remote/dir\n"),
        "{conf}"
    );
    assert!(conf.contains("--port=1234"), "{conf}");
    let (code, conf, table) = seed("loop");
    assert_eq!(code, 0, "{table}");
    assert_eq!(conf.matches("SOURCE=").count(), 4, "{conf}");
    let (code, _, table) = seed("seed000-as-written");
    assert_eq!(code, 2);
    assert!(table.contains("seed000-as-written.lua:15:"), "{table}");
}

#[test]
fn writes_into_dir_and_never_overwrites_without_force() {
    let tmp = tempdir();
    let fixture = manifest().join("tests/fixtures/lsyncd/loop.lua");
    let run = |extra: &[&str]| {
        Command::new(bin("syncpipe"))
            .args(["import-lsyncd", "--dir"])
            .arg(tmp.path())
            .args(extra)
            .arg(&fixture)
            .output()
            .unwrap()
    };
    let out = run(&[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let conf = fs::read_to_string(tmp.path().join("srv-www.conf")).unwrap();
    assert!(conf.contains("SOURCE=/srv/www\n"));
    assert!(String::from_utf8_lossy(&out.stdout).contains("LSYNCD OPTION"));
    let again = run(&[]);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    assert_eq!(run(&["--force"]).status.code(), Some(0));
    let named = Command::new(bin("syncpipe"))
        .args(["import-lsyncd", "--stdout", "--name", "web-{}"])
        .arg(&fixture)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&named.stdout).contains("/etc/syncpipe/web-srv-api.conf"));
    let single = Command::new(bin("syncpipe"))
        .args(["import-lsyncd", "--stdout", "--name", "web"])
        .arg(&fixture)
        .output()
        .unwrap();
    assert_eq!(single.status.code(), Some(2), "one name for four syncs");
}

/// Import a config, run the pipeline its keys describe (as the units do),
/// make changes: the target ends equal to the source minus what lsyncd
/// would have left out.
#[test]
fn imported_config_runs_and_the_target_equals_the_source() {
    use std::time::Duration;
    use syncpipe::syncpipe::check::{start_pipeline, tree};
    use syncpipe::syncpipe::import::Conf;

    let tmp = tempdir();
    let (src, dst, etc) = (
        tmp.path().join("src"),
        tmp.path().join("dst"),
        tmp.path().join("etc"),
    );
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("early.txt"), "before the start").unwrap();
    let lua = tmp.path().join("lsyncd.conf.lua");
    fs::write(
        &lua,
        format!(
            "local root = {src:?}\n\
             local function mirror(to) return {{ default.rsync, source = root, target = to, delay = 1 }} end\n\
             local s = mirror({dst:?})\n\
             s.exclude = {{ '*.tmp', 'logs/*', 'a/**/b', '/build' }}\n\
             sync(s)\n",
            src = src.display().to_string(),
            dst = dst.display().to_string()
        ),
    )
    .unwrap();
    let out = Command::new(bin("syncpipe"))
        .args(["import-lsyncd", "--name", "e2e", "--dir"])
        .arg(&etc)
        .arg(&lua)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let conf = Conf::parse("e2e", &fs::read_to_string(etc.join("e2e.conf")).unwrap());
    assert_eq!(conf.get("DELAY"), Some("1s"));
    let pipeline = start_pipeline(&conf, &|name| bin(name)).unwrap();
    assert!(
        crate::support::wait_until(Duration::from_secs(60), || dst.join("early.txt").exists()),
        "the start-up sync never arrived"
    );
    // Changes while running, excluded names among them.
    for (rel, body) in [
        ("keep/one.txt", "1"),
        ("x.tmp", "excluded"),
        ("deep/er/y.tmp", "excluded"),
        (
            "logs/today.log",
            "excluded: lsyncd's logs/* takes logs itself",
        ),
        ("a/b", "kept: lsyncd's a/**/b needs a directory between"),
        ("a/c/b", "excluded (the directory a/c stays, as in lsyncd)"),
        ("build/out", "excluded"),
        ("src/build/out", "kept: /build is anchored"),
        ("with space and\nnewline", "odd names travel"),
    ] {
        let path = src.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, body).unwrap();
    }
    fs::remove_file(src.join("early.txt")).unwrap();
    fs::write(src.join("zz-last.txt"), "last").unwrap();
    let want: std::collections::BTreeSet<String> = tree(&src)
        .into_iter()
        .filter(|p| {
            !(p.ends_with(".tmp")
                || p.starts_with("logs/")
                || p == "a/c/b"
                || p.starts_with("build/"))
        })
        .collect();
    assert!(want.contains("a/b") && want.contains("src/build/out") && !want.contains("logs/"));
    let converged = crate::support::wait_until(Duration::from_secs(60), || tree(&dst) == want);
    drop(pipeline);
    assert!(converged, "target {:?}\nwanted {:?}", tree(&dst), want);
}

/// `--check` runs lsyncd and the imported pipeline side by side and finds
/// them agreeing on a config without excludes.
#[test]
fn check_compares_with_a_real_lsyncd() {
    let tmp = tempdir();
    let lua = tmp.path().join("lsyncd.conf.lua");
    fs::write(
        &lua,
        "sync { default.rsync, source = '/srv/x', target = '/srv/y', delete = 'running' }\n",
    )
    .unwrap();
    let out = Command::new(bin("syncpipe"))
        .args(["import-lsyncd", "--stdout", "--check"])
        .arg(&lua)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("srv-x: same "),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0));
}
