//! Shell completions and man pages are generated from the binaries' own clap
//! definitions. The completions are committed (so packagers and `make
//! install` need no build step); this test fails when they no longer match
//! the current flags. `UPDATE_COMPLETIONS=1 cargo test generated` rewrites them.

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use crate::support::bin;

const BINARIES: [&str; 6] = [
    "watchd", "batchd", "pushd", "bisync", "keysetup", "syncpipe",
];
const SHELLS: [(&str, &str, &str); 3] = [
    ("bash", "", ".bash"),
    ("zsh", "_", ""),
    ("fish", "", ".fish"),
];

fn generate(binary: &str, args: &[&str]) -> Vec<u8> {
    let out = Command::new(bin(binary)).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{binary} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.stdout.is_empty());
    out.stdout
}

#[test]
fn committed_completions_match_the_flags() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("completions");
    let update = std::env::var_os("UPDATE_COMPLETIONS").is_some();
    let mut stale = Vec::new();
    for binary in BINARIES {
        for (shell, prefix, suffix) in SHELLS {
            let file = dir.join(format!("{prefix}{binary}{suffix}"));
            let fresh = generate(binary, &["--print-completions", shell]);
            if update {
                fs::write(&file, &fresh).unwrap();
            } else if fs::read(&file).ok().as_deref() != Some(&fresh[..]) {
                stale.push(file.display().to_string());
            }
        }
    }
    assert!(
        stale.is_empty(),
        "completions out of date (run `make completions`): {stale:?}"
    );
}

#[test]
fn man_pages_name_the_binary_and_its_flags() {
    for binary in BINARIES {
        let man = String::from_utf8(generate(binary, &["--print-man"])).unwrap();
        assert!(man.contains(&format!(".TH {binary} 1")), "{binary}: {man}");
        assert!(man.contains("\\-\\-help"), "{binary}");
        for section in [
            "SYNOPSIS",
            "\"EXIT STATUS\"",
            "\"SIGNALS\"",
            "\"FILES\"",
            "\"ENVIRONMENT\"",
            "\"SEE ALSO\"",
        ] {
            assert!(
                man.contains(&format!(".SH {section}")),
                "{binary}: no {section}"
            );
        }
        assert!(
            !man.contains("EXTRA"),
            "{binary}: the exit table is EXIT STATUS"
        );
        // Subcommands have no pages of their own: never point at one.
        for sub in ["authorize", "revoke", "check", "help"] {
            let page = format!("{binary}\\-{sub}");
            assert!(!man.contains(&page), "{binary}: points at a {page}(1) page");
        }
        let synopsis = man.split(".SH SYNOPSIS").nth(1).unwrap();
        let synopsis = synopsis.split(".SH").next().unwrap();
        assert!(
            synopsis.contains("\\fI"),
            "{binary}: option values kept: {synopsis}"
        );
    }
    let batchd = String::from_utf8(generate("batchd", &["--print-man"])).unwrap();
    assert!(batchd.contains("\\-\\-delay\\fR \\fIDURATION"), "{batchd}");
}

#[test]
fn a_bad_shell_is_a_usage_error() {
    let out = Command::new(bin("watchd"))
        .args(["--print-completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// `--version` names the binary itself (not the package), and `--help` ends
/// with only the exit codes that binary uses.
#[test]
fn version_and_exit_table_are_each_binarys_own() {
    for binary in BINARIES {
        let version = String::from_utf8(generate(binary, &["--version"])).unwrap();
        assert_eq!(
            version.trim(),
            format!("{binary} {}", env!("CARGO_PKG_VERSION"))
        );
        let help = String::from_utf8(generate(binary, &["--help"])).unwrap();
        let table = help.split("Exit codes:").nth(1).expect("an exit table");
        // 10 (conflicts kept) is bisync's alone.
        assert_eq!(
            table.contains("\n  10  "),
            binary == "bisync",
            "{binary}: {table}"
        );
        assert_eq!(
            table.contains("host key"),
            binary == "keysetup",
            "{binary}: {table}"
        );
    }
}
