//! `make demo` on a machine without rsync: it installs it as root (the
//! Makefile's one `deps` step) or says exactly which package to install.
//! Here rsync is hidden from PATH and the not-root path runs (as `nobody`
//! when the tests run as root), so the real system is never changed; the
//! whole demo on a fresh root with rsync removed is `make demo-fresh`.

use std::path::Path;
use std::process::Command;

use crate::support::tempdir;

/// A PATH directory holding only `tools` (symlinks to the real ones).
fn path_with(tools: &[&str]) -> tempfile::TempDir {
    let dir = tempdir();
    for tool in tools {
        let real = ["/usr/bin", "/bin"]
            .iter()
            .map(|d| Path::new(d).join(tool))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("{tool} is not installed"));
        std::os::unix::fs::symlink(real, dir.path().join(tool)).unwrap();
    }
    // Readable by nobody.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// `cmd` as `nobody` when we are root: the path a user without sudo takes.
fn not_root(program: &str) -> Command {
    if nix::unistd::geteuid().is_root() {
        let mut cmd = Command::new("/usr/bin/setpriv");
        cmd.args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "--",
            program,
        ]);
        cmd
    } else {
        Command::new(program)
    }
}

#[test]
fn make_demo_without_rsync_names_the_package_to_install() {
    let bin = path_with(&["id"]);
    let out = not_root("/usr/bin/make")
        .args(["-s", "-C", env!("CARGO_MANIFEST_DIR"), "demo-deps"])
        .env("PATH", bin.path())
        .env("HOME", "/nonexistent")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("make demo: needs these Debian packages: rsync")
            && said.contains("install them with: sudo apt-get install -y rsync"),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_demo_script_without_rsync_names_the_package_and_touches_nothing() {
    let empty = path_with(&[]);
    let out = not_root("/bin/bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/demo.sh"))
        .env("PATH", empty.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("demo: needs these Debian packages: rsync diffutils")
            && err.contains("sudo apt-get install -y rsync diffutils"),
        "{err}"
    );
}

#[test]
fn pushd_without_rsync_says_what_to_install() {
    let (empty, scratch) = (path_with(&[]), tempdir());
    let out = Command::new(crate::support::bin("pushd"))
        .arg("dst")
        .env("PATH", empty.path())
        .current_dir(scratch.path())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("apt-get install rsync"), "{err}");
}
