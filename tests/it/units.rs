//! The systemd units under units/: every one passes `systemd-analyze verify`
//! with nothing at all on stderr (verify exits 0 on unknown keys and only
//! warns), pointing at the binaries this build made, and the services stay
//! within a hardening budget (`systemd-analyze security --offline`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{bin, tempdir};

fn units_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("units")
}

/// The unit templates, rewritten to run this build's binaries, in `dir`.
fn install_units(dir: &Path) -> Vec<String> {
    let bins = bin("watchd").parent().unwrap().to_path_buf();
    let mut names = Vec::new();
    for entry in fs::read_dir(units_dir()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !(name.ends_with(".service") || name.ends_with(".socket") || name.ends_with(".timer")) {
            continue;
        }
        let text = fs::read_to_string(&path)
            .unwrap()
            .replace("/usr/local/bin", bins.to_str().unwrap());
        fs::write(dir.join(&name), text).unwrap();
        names.push(name);
    }
    names.sort();
    assert!(names.len() >= 6, "units missing: {names:?}");
    names
}

fn systemd_analyze(args: &[&str]) -> std::process::Output {
    Command::new("systemd-analyze")
        .args(args)
        .output()
        .expect("systemd-analyze (package systemd) is needed for this test")
}

#[test]
fn every_unit_verifies_cleanly() {
    let dir = tempdir();
    for name in install_units(dir.path()) {
        let instance = name.replacen("@.", "@test.", 1);
        let path = dir.path().join(&instance);
        let out = systemd_analyze(&["verify", "--man=no", path.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.trim().is_empty(),
            "{name}: {stderr}"
        );
    }
}

#[test]
fn services_are_hardened() {
    let dir = tempdir();
    install_units(dir.path());
    // Exposure budgets: the stages that only read a tree and talk on a unix
    // socket are locked down hard; those running rsync/ssh into targets less.
    for (unit, budget) in [
        ("watchd@test.service", "2.5"),
        ("batchd@test.service", "2.5"),
        ("syncpipe@test.service", "6.5"),
        ("syncpipe-replica@test.service", "6.5"),
        ("bisync@test.service", "6.5"),
        ("bisync-watch@test.service", "6.5"),
    ] {
        let path = dir.path().join(unit);
        let out = systemd_analyze(&["security", "--offline=yes", path.to_str().unwrap()]);
        let text = String::from_utf8_lossy(&out.stdout);
        let score: f64 = text
            .lines()
            .find_map(|l| l.split("exposure level for").nth(1))
            .and_then(|rest| rest.split(':').nth(1))
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{unit}: no score in {text}"));
        assert!(
            score <= budget.parse().unwrap(),
            "{unit}: exposure {score} above {budget}"
        );
    }
}

#[test]
fn the_config_example_names_every_key_the_units_read() {
    let example = fs::read_to_string(units_dir().join("syncpipe.conf.example")).unwrap();
    for unit in ["watchd@.service", "batchd@.service", "syncpipe@.service"] {
        let text = fs::read_to_string(units_dir().join(unit)).unwrap();
        for line in text.lines().filter(|l| l.starts_with("ExecStart=")) {
            for word in line
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '$' || c == '{'))
            {
                let key = word.trim_start_matches('$').trim_start_matches('{');
                if word.starts_with('$') && !key.is_empty() {
                    assert!(
                        example.contains(&format!("\n{key}=")),
                        "{unit} reads {key}, not in the example"
                    );
                }
            }
        }
    }
}

/// The replica unit runs batchd and pushd as syncpipe@ and batchd@ do, so
/// every key those two give a default (`Environment=`) reaches its
/// pipeline too (LOG_FILE= and RSYNC_BINARY= once did not).
#[test]
fn the_replica_unit_honours_the_keys_the_push_units_honour() {
    let replica = fs::read_to_string(units_dir().join("syncpipe-replica@.service")).unwrap();
    let exec = replica
        .lines()
        .find(|l| l.starts_with("ExecStart="))
        .unwrap();
    let mut checked = 0;
    for unit in ["batchd@.service", "syncpipe@.service"] {
        let text = fs::read_to_string(units_dir().join(unit)).unwrap();
        for line in text.lines().filter_map(|l| l.strip_prefix("Environment=")) {
            for key in line
                .split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .map(|kv| kv.0)
            {
                // In the unit's `sh -c`: `$$KEY` or `$${KEY...}`.
                assert!(
                    exec.contains(&format!("$${key}")) || exec.contains(&format!("$${{{key}")),
                    "{unit} honours {key}, the replica unit does not: {exec}"
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 6, "{checked} keys");
}

/// USER= in a sync's config becomes User= for its three units (systemd
/// cannot read User= from an EnvironmentFile), and the units with that
/// drop-in still verify cleanly.
#[test]
fn the_generator_turns_user_into_a_user_drop_in_that_verifies() {
    let (conf, out, units) = (tempdir(), tempdir(), tempdir());
    fs::write(
        conf.path().join("web.conf"),
        "SOURCE=/srv/www\nTARGETS=/srv/copy\nUSER=daemon\n",
    )
    .unwrap();
    fs::write(
        conf.path().join("root.conf"),
        "SOURCE=/srv/a\n#USER=daemon\n",
    )
    .unwrap();
    fs::write(conf.path().join("bad.conf"), "USER=$(reboot)\n").unwrap();
    let run = Command::new(units_dir().join("syncpipe-generator"))
        .arg(out.path())
        .env("SYNCPIPE_CONF_DIR", conf.path())
        .output()
        .unwrap();
    assert!(run.status.success(), "{run:?}");
    assert!(
        String::from_utf8_lossy(&run.stderr)
            .contains("bad.conf: USER=$(reboot) is not a user name"),
        "{run:?}"
    );
    let mut made: Vec<String> = fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    made.sort();
    assert_eq!(
        made,
        [
            "batchd@web.service.d",
            "syncpipe@web.service.d",
            "watchd@web.service.d"
        ]
    );
    install_units(units.path());
    for unit in ["watchd", "batchd", "syncpipe"] {
        let dropin = out.path().join(format!("{unit}@web.service.d"));
        let text = fs::read_to_string(dropin.join("50-syncpipe-user.conf")).unwrap();
        assert!(text.contains("[Service]\nUser=daemon\n"), "{text}");
        // The instance with its drop-in beside it, as systemd would load it.
        let instance = units.path().join(format!("{unit}@web.service"));
        fs::copy(units.path().join(format!("{unit}@.service")), &instance).unwrap();
        let target = units.path().join(format!("{unit}@web.service.d"));
        fs::create_dir_all(&target).unwrap();
        fs::copy(
            dropin.join("50-syncpipe-user.conf"),
            target.join("50-syncpipe-user.conf"),
        )
        .unwrap();
        let verify = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&instance)
            .env("SYSTEMD_UNIT_PATH", format!("{}:", units.path().display()))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&verify.stderr);
        assert!(
            verify.status.success() && stderr.trim().is_empty(),
            "{unit}: {stderr}"
        );
    }
}
